"""DonkeyCar knowledge in one place: pilot types and their model I/O, type strings, config files, and the
arithmetic DonkeyCar applies around its models.

Every rule here reproduces a line of DonkeyCar; the citations are to autorope/donkeycar at commit cde8bbe9
(main, 2026-02; release 5.1 has the same code at slightly different lines). No TensorFlow and no donkeycar
import: the car config is read with ``ast`` (literals and simple arithmetic on names set earlier), never
executed, and model graphs are described by plain (name, shape) pairs so ``trt-perception convert`` and the
tests share one recognizer.

Pilot types (``utils.get_model_by_type``, utils.py:484-552) and what their Keras graphs look like
(parts/keras.py; batch dim first, H x W x C the camera image, ``IMAGE_H x IMAGE_W x IMAGE_DEPTH``):

============ ====================== ======================================== ===================================
type         class (type string)    inputs                                   outputs
============ ====================== ======================================== ===================================
linear       KerasLinear            img_in [1,H,W,C]                         n_outputs0, n_outputs1 [1,1]
categorical  KerasCategorical-R:r   img_in                                   angle_out [1,15], throttle_out [1,20]
inferred     KerasInferred          img_in                                   n_outputs0 [1,1] (angle only)
imu          KerasIMU               img_in, imu_in [1,6]                     out_0, out_1 [1,1]
memory       KerasMemory-L:n-D:d    img_in, mem_in [1,2n]                    n_outputs0, n_outputs1 [1,1]
behavior     KerasBehavioral-R:r    img_in, xbehavior_in [1,len(BEHAVIORS)]  angle_out [1,15], throttle_out [1,20]
localizer    KerasLocalizer         img_in                                   angle, throttle [1,1], zloc [1,K]
rnn          KerasLSTM-L:n          img_in [1,n,H,W,C]                       model_outputs [1,2] (angle, throttle)
3d           Keras3D_CNN            img_in [1,n,H,W,C]                       outputs [1,2] (angle, throttle)
============ ====================== ======================================== ===================================

Sources: default_n_linear keras.py:846-861, default_categorical 891-906, default_memory 864-888, default_imu
909-934, default_bhv 937-966, default_loc 969-992, rnn_lstm 995-1026, build_3d_cnn 1029-1085; the type
strings are the classes' ``__str__`` (keras.py:313-315, 445-448, 700-702), stored as ``Pilot`` in
``models/database.json`` by ``pipeline/training.py:187-198``.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from trt_perception.errors import ConfigError, SpecError

PathLike = Union[str, Path]

PILOT_TYPES = ("linear", "categorical", "inferred", "imu", "memory", "behavior", "localizer", "rnn", "3d")
PILOT_CLASSES: Dict[str, str] = {  # utils.get_model_by_type, utils.py:516-546
    "KerasLinear": "linear",
    "KerasCategorical": "categorical",
    "KerasInferred": "inferred",
    "KerasIMU": "imu",
    "KerasMemory": "memory",
    "KerasBehavioral": "behavior",
    "KerasLocalizer": "localizer",
    "KerasLSTM": "rnn",
    "Keras3D_CNN": "3d",
}
RUNTIME_PREFIXES = ("tflite_", "tensorrt_")  # utils.py:499-504: the runtime, not the pilot type

# Input names DonkeyCar gives its Keras inputs (tflite keeps them inside 'serving_default_<name>:0').
IMAGE_INPUT, MEMORY_INPUT, IMU_INPUT, BEHAVIOR_INPUT = "img_in", "mem_in", "imu_in", "xbehavior_in"

# Defaults of DonkeyCar's config template (templates/cfg_complete.py) where a car config is silent.
TEMPLATE_DEFAULTS: Dict[str, Any] = {
    "IMAGE_W": 160,  # cfg_complete.py:41
    "IMAGE_H": 120,  # :42
    "IMAGE_DEPTH": 3,  # :45
    "MODEL_CATEGORICAL_MAX_THROTTLE_RANGE": 0.8,  # :512 (0.5 in 3.x/4.x templates and the class default)
    "SEQUENCE_LENGTH": 3,  # :515
    "TRANSFORMATIONS": [],  # :629
    "POST_TRANSFORMATIONS": [],  # :630
    "ROI_CROP_TOP": 45,  # :646 (applied only with 'CROP' in TRANSFORMATIONS)
    "ROI_CROP_BOTTOM": 0,
    "ROI_CROP_RIGHT": 0,
    "ROI_CROP_LEFT": 0,
    "BEHAVIOR_LIST": ["Left_Lane", "Right_Lane"],  # :717
    "NUM_LOCATIONS": 10,  # :725
}

# --------------------------------------------------------------------------------------------- arithmetic

# utils.py:380-384
STEERING_MIN = -1.0
STEERING_MAX = 1.0
EXP_SCALING_FACTOR = 0.5
DAMPENING = 0.05


def clamp(value: float, low: float, high: float) -> float:
    """utils.clamp (utils.py:275-283): NaN passes through (both comparisons are false)."""
    if low > high:
        return clamp(value, high, low)
    if value < low:
        return low
    if value > high:
        return high
    return value


def inferred_throttle(angle: float) -> float:
    """The throttle a KerasInferred pilot drives with, as ``utils.throttle`` computes it (utils.py:387-396):
    ``m = (clamp(angle, -1, 1) + 1) / 2``, ``exp(-0.5 m) - 0.05 m``.

    Note DonkeyCar's own asymmetry, kept on purpose: full LEFT (-1) gives 1.0, straight ahead 0.754, full RIGHT
    (+1) 0.557. A NaN angle gives NaN (the pilot's NaN stop then acts).
    """
    magnitude = (clamp(angle, STEERING_MIN, STEERING_MAX) - STEERING_MIN) / (STEERING_MAX - STEERING_MIN)
    return 1.0 / math.exp(magnitude * EXP_SCALING_FACTOR) - DAMPENING * magnitude


def linear_unbin(scores: Sequence[float], n: int = 15, offset: float = -1.0, r: float = 2.0) -> float:
    """utils.linear_unbin (utils.py:300-308): ``argmax * R / (N + offset) + offset``. The categorical parser
    (outputs/steering.py) implements the same values as ranges; this is the reference the tests compare with."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return best * (r / (n + offset)) + offset


# --------------------------------------------------------------------------------------------- type strings


@dataclass(frozen=True)
class PilotType:
    """A pilot type and the parameters its type string carries (R: categorical throttle range, L: memory or
    sequence length, D: memory depth)."""

    kind: str
    throttle_range: Optional[float] = None
    length: Optional[int] = None
    depth: Optional[int] = None
    text: str = ""


_PARAM = re.compile(r"-([A-Z]):(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")


def parse_pilot_type(text: str) -> PilotType:
    """A DonkeyCar type: a model type (``categorical``, ``tflite_memory``...; utils.py:499-546) or a pilot
    string as stored in database.json (``KerasCategorical-R:0.8``, ``KerasMemory-L:3-D:0``, ``KerasLSTM-L:3``)."""
    value = str(text).strip()
    head = value.split("-", 1)[0]
    if head in PILOT_CLASSES:
        params = dict(_PARAM.findall(value[len(head):]))
        rest = _PARAM.sub("", value[len(head):])
        if rest.strip():
            raise ConfigError(
                f"DonkeyCar pilot string {value!r} has an unknown part {rest!r}; expected e.g. "
                "KerasCategorical-R:0.8, KerasMemory-L:3-D:0 or KerasLSTM-L:3 (the 'Pilot' of models/database.json)"
            )
        try:
            return PilotType(
                PILOT_CLASSES[head],
                throttle_range=float(params["R"]) if "R" in params else None,
                length=int(params["L"]) if "L" in params else None,
                depth=int(params["D"]) if "D" in params else None,
                text=value,
            )
        except ValueError:
            raise ConfigError(f"DonkeyCar pilot string {value!r} has a malformed number in {params}") from None
    kind = value
    for prefix in RUNTIME_PREFIXES:
        if kind.startswith(prefix):
            kind = kind[len(prefix):]
    if kind.startswith("fastai_"):
        raise ConfigError(f"DonkeyCar model type {value!r} is a PyTorch/fastai pilot; this converter reads the "
                          "Keras/TFLite pilots; fix: export it to ONNX with torch and write the spec by hand")
    if kind not in PILOT_TYPES:
        raise ConfigError(
            f"DonkeyCar model type {value!r} is unknown; expected one of {list(PILOT_TYPES)} (optionally with "
            f"tflite_/tensorrt_), or a pilot string such as KerasCategorical-R:0.8 or KerasMemory-L:3-D:0"
        )
    return PilotType(kind, text=value)


# --------------------------------------------------------------------------------------------- car config


@dataclass(frozen=True)
class Unread:
    """A setting of a config file whose value cannot be worked out without running the file: where it is set, the
    statement, and why."""

    name: str
    path: str
    line: int
    statement: str
    reason: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def error(self) -> ConfigError:
        example = TEMPLATE_DEFAULTS.get(self.name)
        value = repr(example) if example not in (None, []) else "<value>"
        return ConfigError(
            f"DonkeyCar config {self.where}: {self.name} is set by `{self.statement}`, which cannot be worked out "
            f"without running the file ({self.reason}); the converter needs {self.name} and does not guess it; "
            f"fix: write the value itself in {Path(self.path).name}, e.g. {self.name} = {value}, or pass "
            "--donkey-database (the pilot's database.json entry holds the values DonkeyCar computed when training)"
        )


@dataclass
class CarConfig:
    """The UPPERCASE settings of a car's config.py (+ myconfig.py over it), or of a database.json entry.

    A setting the file gives by an expression this reader does not evaluate is in ``unread``, never in
    ``values``: ``get`` raises for it (naming file:line and the statement) instead of falling back to DonkeyCar's
    template default, so only the settings the converter uses can stop it."""

    values: Dict[str, Any] = field(default_factory=dict)
    sources: List[str] = field(default_factory=list)
    unread: Dict[str, Unread] = field(default_factory=dict)

    @property
    def skipped(self) -> List[str]:
        """Names whose values could not be read."""
        return sorted(self.unread)

    def get(self, key: str) -> Any:
        """The car's value, else DonkeyCar's template default; ConfigError for a value that could not be read."""
        if key in self.unread and key not in self.values:
            raise self.unread[key].error()
        return self.values.get(key, TEMPLATE_DEFAULTS.get(key))

    def has(self, key: str) -> bool:
        """Whether the car sets ``key`` to a known value (an unreadable one raises in ``get``)."""
        return key in self.values

    def merged(self, over: CarConfig) -> CarConfig:
        """This config with ``over``'s settings over it (myconfig.py over config.py, database.json over both): a
        value ``over`` sets, readable or not, replaces this one's."""
        values = {k: v for k, v in self.values.items() if k not in over.unread}
        values.update(over.values)
        unread = {k: v for k, v in self.unread.items() if k not in over.values}
        unread.update(over.unread)
        return CarConfig(values, self.sources + over.sources, unread)


class _Unknown(Exception):
    """An expression the config reader does not evaluate; the message says why."""


_BINARY: Dict[type, Any] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: Dict[type, Any] = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE: Dict[type, Any] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_FUNCTIONS: Dict[str, Any] = {"int": int, "float": float, "round": round, "abs": abs, "min": min, "max": max,
                              "len": len, "bool": bool}
_MAX_ITEMS = 100000  # longest string/list an expression may build
_MAX_BITS = 4096  # largest integer an expression may build
_MUTATORS = {"append", "extend", "insert", "remove", "pop", "clear", "update", "setdefault", "popitem", "sort",
             "reverse", "add", "discard", "__setitem__", "__delitem__", "__iadd__"}  # methods that change a value
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_OWN_SCOPE = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _base_name(node: ast.AST) -> Optional[str]:
    """``X`` of ``X[0]``, ``X.a.b``, ``X.append``."""
    while isinstance(node, (ast.Subscript, ast.Attribute)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _bindings(node: ast.AST, stmt: Optional[ast.stmt] = None) -> List[Tuple[str, ast.AST]]:
    """Every (name, statement) by which the statements under ``node`` bind or change a module-level name:
    assignments, deletions, imports, def/class, loop and with targets, in-place changes (``X[0] = 1``,
    ``X.append(1)``). Function, class, lambda and comprehension bodies are their own scopes and are skipped."""
    found: List[Tuple[str, ast.AST]] = []
    for child in ast.iter_child_nodes(node):
        here = child if isinstance(child, ast.stmt) else (stmt or child)
        if isinstance(child, _SCOPES):
            found.append((child.name, child))
            continue
        if isinstance(child, _OWN_SCOPE):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.extend(((a.asname or a.name).split(".")[0], child) for a in child.names if a.name != "*")
            continue
        stored = isinstance(getattr(child, "ctx", None), (ast.Store, ast.Del))
        if isinstance(child, ast.Name) and stored:
            found.append((child.id, here))
        changed = None  # X of X[0] = 1, del X.a, X.append(1)
        if isinstance(child, (ast.Subscript, ast.Attribute)) and stored:
            changed = _base_name(child)
        elif isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.func.attr in _MUTATORS:
            changed = _base_name(child.func)
        if changed is not None:
            found.append((changed, here))
        found.extend(_bindings(child, here))
    return found


class _ConfigReader:
    """The module-level settings of a DonkeyCar config file, worked out WITHOUT running it: constants, names set
    earlier in the same file, arithmetic (+ - * / // % **, unary - + not), comparisons, ``a if c else b``,
    and/or, lists/tuples/sets/dicts, indexing, int/float/round/abs/min/max/len/bool, and ``if`` blocks whose
    condition is one of those. Anything else (calls, attributes, loops, imports...) leaves the names it sets
    unread, with the file:line, the statement and the reason.

    Each file is read on its own, as DonkeyCar runs it (config.py:16-26, 80-85: ``exec`` in a fresh module):
    myconfig.py cannot use a name that only config.py sets."""

    def __init__(self, path: Path, source: str, tree: ast.Module) -> None:
        self.path, self.source = path, source
        self.env: Dict[str, Any] = {}  # every module-level name with a known value, lowercase too
        self.unread: Dict[str, Unread] = {}
        self.rebound = {name for name, _ in _bindings(tree)}  # a builtin the file rebinds is not the builtin

    def text(self, node: ast.AST) -> str:
        segment = ast.get_source_segment(self.source, node) or ""
        segment = " ".join(segment.split())
        return segment if len(segment) <= 100 else segment[:97] + "..."

    def forget(self, name: str, stmt: ast.AST, reason: str) -> None:
        self.env.pop(name, None)
        self.unread[name] = Unread(name, str(self.path), getattr(stmt, "lineno", 0), self.text(stmt), reason)

    def run(self, body: Sequence[ast.stmt]) -> None:
        for stmt in body:
            self.statement(stmt)

    def statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            if stmt.value is None:
                return  # `X: int` binds nothing
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            try:
                if isinstance(stmt, ast.AugAssign):
                    if not isinstance(stmt.target, ast.Name):
                        raise _Unknown("an in-place change of a part of a value")
                    old = self.eval(stmt.target)
                    value = self.binary(stmt.op, old, self.eval(stmt.value), stmt)
                    if isinstance(old, list):  # `X += [...]` changes the list in place: every name for it sees it
                        targets = [ast.Name(id=n, ctx=ast.Store()) for n, v in self.env.items() if v is old]
                else:
                    value = self.eval(stmt.value)
            except _Unknown as exc:
                for target in targets:
                    for name, _ in _bindings(ast.Expr(value=target)) or [(_base_name(target), stmt)]:
                        if name is not None:
                            self.forget(name, stmt, str(exc))
                return
            for target in targets:
                self.bind(target, value, stmt)
        elif isinstance(stmt, ast.Delete):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    self.env.pop(target.id, None)
                    self.unread.pop(target.id, None)  # gone: DonkeyCar does not see it either
                else:
                    for name, _ in _bindings(ast.Expr(value=target)):
                        self.forget(name, stmt, "it is deleted in part")
        elif isinstance(stmt, ast.If):
            try:
                chosen = self.eval(stmt.test)
            except _Unknown as exc:
                reason = f"it is set inside `if {self.text(stmt.test)}` (line {stmt.lineno}), whose condition " \
                         f"cannot be worked out: {exc}"
                for name, where in _bindings(ast.Module(body=stmt.body + stmt.orelse, type_ignores=[])):
                    self.forget(name, where, reason)
                return
            self.run(stmt.body if chosen else stmt.orelse)
        elif isinstance(stmt, ast.Expr):
            for name, where in _bindings(stmt):  # X.append(...), X.update(...): changed in place
                if name in self.env:
                    changed = self.env[name]
                    aliases = [n for n, v in self.env.items() if v is changed and isinstance(v, (list, dict, set))]
                    for alias in [*aliases, name]:
                        self.forget(alias, where, f"it is changed in place by a method call on {name}")
        else:  # loops, with, try, imports, def, class...: names they bind are not read
            kind = type(stmt).__name__.lower()
            for name, where in _bindings(ast.Module(body=[stmt], type_ignores=[])):
                self.forget(name, where, f"it is set by a `{kind}` statement (line {stmt.lineno}), which this "
                                         "reader does not run")

    def bind(self, target: ast.expr, value: Any, stmt: ast.stmt) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
            self.unread.pop(target.id, None)
        elif isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (list, tuple)) \
                and len(value) == len(target.elts) and not any(isinstance(e, ast.Starred) for e in target.elts):
            for element, item in zip(target.elts, value):
                self.bind(element, item, stmt)
        else:
            for name, _ in _bindings(ast.Expr(value=target)) or [(_base_name(target), stmt)]:
                if name is not None:
                    self.forget(name, stmt, "an unpacking or in-place assignment this reader does not follow")

    def apply(self, function: Any, args: Sequence[Any], node: ast.AST) -> Any:
        try:
            return function(*args)
        except (ArithmeticError, TypeError, ValueError, LookupError, MemoryError, RecursionError) as exc:
            raise _Unknown(f"`{self.text(node)}` fails: {type(exc).__name__}: {exc}") from None

    def binary(self, op: ast.operator, left: Any, right: Any, node: ast.AST) -> Any:
        if type(op) not in _BINARY:
            raise _Unknown(f"`{self.text(node)}` uses an operator other than + - * / // % **")
        large = False
        if isinstance(op, ast.Pow) and isinstance(left, int) and isinstance(right, int) and right > 0:
            large = abs(left).bit_length() * right > _MAX_BITS
        elif isinstance(op, ast.Mult) and isinstance(left, int) and isinstance(right, int):
            large = left.bit_length() + right.bit_length() > _MAX_BITS
        elif isinstance(op, ast.Mult):
            for items, count in ((left, right), (right, left)):
                if isinstance(items, (str, bytes, list, tuple)) and isinstance(count, int):
                    large = large or len(items) * count > _MAX_ITEMS
        elif isinstance(op, ast.Add) and isinstance(left, (str, bytes, list, tuple)) and hasattr(right, "__len__"):
            large = len(left) + len(right) > _MAX_ITEMS
        elif isinstance(op, ast.Mod) and isinstance(left, (str, bytes)):
            raise _Unknown(f"`{self.text(node)}` is string formatting")
        if large:
            raise _Unknown(f"`{self.text(node)}` is too large to work out")
        return self.apply(_BINARY[type(op)], (left, right), node)

    def items(self, nodes: Sequence[ast.expr]) -> List[Any]:
        if any(isinstance(n, ast.Starred) for n in nodes):
            raise _Unknown("it unpacks with *")
        return [self.eval(n) for n in nodes]

    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            if node.id in self.unread:
                raise _Unknown(f"it uses {node.id}, which is not read either ({self.unread[node.id].where})")
            raise _Unknown(f"{node.id} is not set earlier in {self.path.name}; DonkeyCar runs config.py and "
                           "myconfig.py each on its own, so a name set in one is not defined in the other")
        if isinstance(node, ast.BinOp):
            return self.binary(node.op, self.eval(node.left), self.eval(node.right), node)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return self.apply(_UNARY[type(node.op)], (self.eval(node.operand),), node)
        if isinstance(node, ast.BoolOp):
            value = None
            for operand in node.values:
                value = self.eval(operand)
                if bool(value) != isinstance(node.op, ast.And):
                    break
            return value
        if isinstance(node, ast.Compare):
            left = self.eval(node.left)
            for op, comparator in zip(node.ops, node.comparators):
                right = self.eval(comparator)
                if not self.apply(_COMPARE[type(op)], (left, right), node):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)
        if isinstance(node, ast.List):
            return self.items(node.elts)
        if isinstance(node, ast.Tuple):
            return tuple(self.items(node.elts))
        if isinstance(node, ast.Set):
            return self.apply(set, (self.items(node.elts),), node)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise _Unknown("it unpacks with **")
            pairs = list(zip(self.items([k for k in node.keys if k is not None]), self.items(node.values)))
            return self.apply(dict, (pairs,), node)
        if isinstance(node, ast.Subscript):
            index = node.slice
            if isinstance(index, getattr(ast, "Index", ())):  # Python 3.8 wraps the index
                index = index.value  # type: ignore[attr-defined]
            if isinstance(index, ast.Slice):
                parts = [None if p is None else self.eval(p) for p in (index.lower, index.upper, index.step)]
                key: Any = slice(*parts)
            else:
                key = self.eval(index)
            return self.apply(operator.getitem, (self.eval(node.value), key), node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
                and node.func.id not in self.rebound and not node.keywords:
            return self.apply(_FUNCTIONS[node.func.id], self.items(node.args), node)
        what = {ast.Call: "a call", ast.Attribute: "an attribute", ast.JoinedStr: "an f-string",
                ast.Lambda: "a function"}.get(type(node), type(node).__name__)
        raise _Unknown(f"`{self.text(node)}` is {what}, not a constant, a name set earlier or arithmetic on them")


def _read_config_file(path: Path) -> CarConfig:
    """The UPPERCASE module-level settings of one DonkeyCar config file, without running it (_ConfigReader)."""
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read DonkeyCar config {path}: {exc}") from None
    except SyntaxError as exc:
        raise ConfigError(f"DonkeyCar config {path} is not valid Python (line {exc.lineno}: {exc.msg}); "
                          "fix: the file DonkeyCar itself loads (mycar/config.py, myconfig.py)") from None
    reader = _ConfigReader(path, source, tree)
    try:
        reader.run(tree.body)
    except RecursionError:
        raise ConfigError(f"DonkeyCar config {path} nests expressions too deeply to read; fix: write its values "
                          "as plain numbers, strings and lists") from None
    values = {k: v for k, v in reader.env.items() if k.isupper()}  # DonkeyCar keeps the UPPERCASE names only
    unread = {k: v for k, v in reader.unread.items() if k.isupper()}
    return CarConfig(values, [str(path)], unread)


def read_car_config(path: PathLike) -> CarConfig:
    """A car's settings as DonkeyCar loads them (config.py:66-90): ``config.py``, then ``myconfig.py`` beside it
    over it. Given either file, the other one in the same folder is read too."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"--donkey-config {path} does not exist; fix: pass your car's myconfig.py or config.py "
                          "(e.g. ~/mycar/myconfig.py)")
    folder = path.parent
    base = folder / "config.py" if path.name != "config.py" else path
    over = folder / "myconfig.py" if path.name == "config.py" else path
    config = CarConfig()
    for part in (base, over):
        if part.is_file():
            config = config.merged(_read_config_file(part))
    return config


@dataclass
class DatabaseEntry:
    """One trained pilot of models/database.json (pipeline/training.py:187-198)."""

    name: str
    pilot: str
    model_type: str
    config: CarConfig


def read_database(path: PathLike, model: Optional[PathLike] = None) -> DatabaseEntry:
    """The database.json entry of ``model`` (matched by file name without extension: pilot_24-05-01_3.h5,
    .tflite and .savedmodel share ``Name`` pilot_24-05-01_3), or the only entry when ``model`` is None."""
    path = Path(path).expanduser()
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--donkey-database {path} does not exist; fix: pass ~/mycar/models/database.json") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--donkey-database {path} is not readable JSON ({exc}); fix: pass the database.json "
                          "DonkeyCar wrote beside the models") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"--donkey-database {path} holds {type(entries).__name__}; expected DonkeyCar's list of "
                          "pilot entries (Name, Pilot, Type, Config)")
    names = [str(e.get("Name", "")) for e in entries]
    if model is not None:
        wanted = Path(str(model)).name
        stem = wanted.split(".")[0] if wanted else wanted
        matches = [e for e in entries if str(e.get("Name", "")) in (wanted, stem, Path(wanted).stem)]
    else:
        matches = list(entries)
    if len(matches) != 1:
        which = f"for model {Path(str(model)).name!r} " if model is not None else ""
        raise ConfigError(f"--donkey-database {path} has {len(matches)} entries {which}(pilots: {names}); "
                          "fix: name the model file as DonkeyCar wrote it (its Name), or pass --donkey-type")
    entry = matches[0]
    config = entry.get("Config")
    values = {k: v for k, v in config.items() if isinstance(k, str) and k.isupper() and v != "<not serializable>"} \
        if isinstance(config, dict) else {}
    return DatabaseEntry(
        name=str(entry.get("Name", "")),
        pilot=str(entry.get("Pilot", "") or ""),
        model_type=str(entry.get("Type", "") or ""),
        config=CarConfig(values, [f"{path} ({entry.get('Name')})"]),
    )


# ------------------------------------------------------------------------------------- graph recognition

Shape = Tuple[Optional[int], ...]


@dataclass(frozen=True)
class Tensor:
    """A graph input or output by name and shape (None for a dynamic dim)."""

    name: str
    shape: Shape


@dataclass
class Recognized:
    """What a DonkeyCar graph is: its pilot type, which tensor plays which part, and sizes read off the graph."""

    kind: str
    image: Tensor
    extra: Dict[str, Tensor] = field(default_factory=dict)  # 'memory'/'imu'/'behavior' -> input
    roles: Dict[str, Tensor] = field(default_factory=dict)  # angle/throttle/location/combined -> output
    sequence: int = 0
    notes: List[str] = field(default_factory=list)

    @property
    def categorical(self) -> bool:
        last = self.roles["angle"].shape[-1] if "angle" in self.roles else 1
        return isinstance(last, int) and last > 1


_CALL_OUTPUT = re.compile(r"^(.*):(\d+)$")


def keras_order(outputs: Sequence[Tensor]) -> List[Tensor]:
    """Outputs in the Keras model's order. A TFLite file lists its outputs in any order (a localizer's came out
    zloc, throttle, angle) but names them after the output index of the call they come from
    (``StatefulPartitionedCall:<i>``, i = the Keras output index, as its signature maps them); DonkeyCar reads
    them through that signature (interpreter.py:312-317)."""
    found = [_CALL_OUTPUT.match(t.name) for t in outputs]
    if outputs and all(found) and len({m.group(1) for m in found if m}) == 1:
        return [t for _, t in sorted(zip((int(m.group(2)) for m in found if m), outputs), key=lambda p: p[0])]
    return list(outputs)


def _last(tensor: Tensor) -> Optional[int]:
    return tensor.shape[-1] if tensor.shape else None


def _named(tensors: Sequence[Tensor], *keys: str) -> List[Tensor]:
    return [t for t in tensors if any(k in t.name.lower() for k in keys)]


def recognize(inputs: Sequence[Tensor], outputs: Sequence[Tensor], ops: Sequence[str] = (),
              hint: Optional[PilotType] = None) -> Recognized:
    """The pilot type of a graph from its input names (img_in, mem_in, imu_in, xbehavior_in: keras.py:848, 871,
    912, 942), its image rank (5-D = a frame sequence: rnn/3d) and its output shapes; ``hint`` (a type from
    the car's database/config or --donkey-type) settles what the graph cannot say and must agree with it."""
    images = [t for t in inputs if len(t.shape) in (4, 5)]
    named = _named(images, IMAGE_INPUT)
    if len(named) == 1:
        image = named[0]
    elif len(images) == 1:
        image = images[0]
    else:
        raise SpecError(f"cannot tell the image input among {[(t.name, list(t.shape)) for t in inputs]}; "
                        f"expected one 4-D (or 5-D sequence) input named {IMAGE_INPUT!r} as DonkeyCar builds it")
    others = [t for t in inputs if t is not image]
    extra: Dict[str, Tensor] = {}
    for tensor in others:
        if len(tensor.shape) != 2:
            raise SpecError(f"model input {tensor.name!r} {list(tensor.shape)} is neither the image nor a DonkeyCar "
                            "vector input ([1, n]: mem_in, imu_in, xbehavior_in)")
        low = tensor.name.lower()
        kind = ("memory" if MEMORY_INPUT in low else "imu" if IMU_INPUT in low
                else "behavior" if "behavior" in low else None)
        if kind is None and hint is not None and hint.kind in ("memory", "imu", "behavior") and len(others) == 1:
            kind = hint.kind
        if kind is None:
            raise SpecError(f"model input {tensor.name!r} {list(tensor.shape)} is not one DonkeyCar names (mem_in, "
                            "imu_in, xbehavior_in); fix: pass --donkey-type memory|imu|behavior")
        if kind in extra:
            raise SpecError(f"two {kind} inputs: {extra[kind].name!r} and {tensor.name!r}")
        extra[kind] = tensor
    if len(extra) > 1:
        raise SpecError(f"inputs {[t.name for t in extra.values()]}: no DonkeyCar pilot takes more than one vector "
                        "input besides the image")
    sequence = 0
    if len(image.shape) == 5:
        sequence = image.shape[1] if isinstance(image.shape[1], int) else 0
        if sequence <= 0:
            raise SpecError(f"sequence input {image.name!r} {list(image.shape)} has no fixed frame count; "
                            "fix: export it with SEQUENCE_LENGTH frames fixed")
    outputs = keras_order(outputs)
    kind = _kind(image, extra, outputs, ops, sequence, hint)
    rec = Recognized(kind, image, extra, sequence=sequence)
    rec.roles = _roles(kind, outputs, rec.notes)
    if hint is not None and hint.kind != kind:
        raise SpecError(f"the graph is a DonkeyCar {kind!r} pilot but the type given is {hint.text or hint.kind!r}; "
                        "fix: pass the database entry / config / --donkey-type of THIS model")
    if hint is not None:
        _check_type_string(rec, hint)
    return rec


def _check_type_string(rec: Recognized, hint: PilotType) -> None:
    """Refuse a type string whose parameters contradict the graph: KerasMemory's L (mem_in holds L (angle,
    throttle) pairs, keras.py:369-374, 864-888) and KerasLSTM's L (the frames of img_in, keras.py:995-1026). The
    other parameters (R, D) do not show in the graph's inputs."""
    if hint.length is None:
        return
    text = hint.text or hint.kind
    fix = "fix: pass the database entry / --donkey-type of THIS model"
    if rec.kind == "memory" and "memory" in rec.extra:
        tensor = rec.extra["memory"]
        size = _last(tensor)
        if isinstance(size, int) and size != 2 * hint.length:
            graph = f"a memory of {size // 2} pairs (L={size // 2})" if size % 2 == 0 else \
                "no whole number of (angle, throttle) pairs"
            depth = hint.depth if hint.depth is not None else 0
            example = f" (for this graph: KerasMemory-L:{size // 2}-D:{depth})" if size % 2 == 0 else ""
            raise ConfigError(
                f"the type string {text!r} says a memory of L={hint.length} (angle, throttle) pairs, i.e. mem_in "
                f"[1, {2 * hint.length}], but the graph's input {tensor.name!r} is {list(tensor.shape)}: {graph}; "
                f"{fix}{example}")
    elif rec.kind in ("rnn", "3d") and rec.sequence and rec.sequence != hint.length:
        raise ConfigError(
            f"the type string {text!r} says a sequence of L={hint.length} frames, i.e. img_in [1, {hint.length}, H, "
            f"W, C], but the graph's input {rec.image.name!r} is {list(rec.image.shape)}: {rec.sequence} frames; "
            f"{fix} (for this graph: {text.split('-', 1)[0]}-L:{rec.sequence})")


def _kind(image: Tensor, extra: Mapping[str, Tensor], outputs: Sequence[Tensor], ops: Sequence[str],
          sequence: int, hint: Optional[PilotType]) -> str:
    if extra:
        return next(iter(extra))
    lasts = [_last(t) for t in outputs]
    if sequence:
        if len(outputs) != 1 or lasts[0] != 2:
            raise SpecError(f"sequence pilot outputs {[(t.name, list(t.shape)) for t in outputs]}; expected one "
                            "[1, 2] (angle, throttle) output (keras.py:1024, 1083)")
        if hint is not None and hint.kind in ("rnn", "3d"):
            return hint.kind
        names = " ".join(t.name.lower() for t in outputs)
        if "model_outputs" in names or any(op in ("LSTM", "GRU", "RNN", "Loop", "Scan") for op in ops):
            return "rnn"  # KerasLSTM: output 'model_outputs' (keras.py:1024), LSTM layers (keras.py:1016-1018)
        return "3d"  # Keras3D_CNN: output 'outputs' (keras.py:1083); both feed the same way
    if len(outputs) == 1 and lasts == [1]:
        return "inferred"
    if len(outputs) == 2 and lasts == [1, 1]:
        return "linear"
    if len(outputs) == 2 and all(isinstance(x, int) and x > 1 for x in lasts):
        return "categorical"
    if len(outputs) == 3 and all(isinstance(x, int) for x in lasts) and sorted(lasts)[:2] == [1, 1] \
            and max(lasts) > 1:
        return "localizer"
    if len(outputs) == 1 and lasts == [2]:
        return "linear"  # one [1, 2] head: angle and throttle columns
    raise SpecError(f"outputs {[(t.name, list(t.shape)) for t in outputs]} match no DonkeyCar pilot; expected "
                    "two [1,1] (linear), [1,15]+[1,20] (categorical), one [1,1] (inferred), [1,1]x2+[1,K] "
                    "(localizer) or one [1,2]")


def _pick(outputs: Sequence[Tensor], names: Sequence[str], fallback: int, notes: List[str], role: str) -> Tensor:
    found = _named(outputs, *names)
    if len(found) == 1:
        return found[0]
    notes.append(f"{role}: output {outputs[fallback].name!r} by position (names {[t.name for t in outputs]} do not "
                 "say; DonkeyCar's Keras and TFLite keep its output order)")
    return outputs[fallback]


def _roles(kind: str, outputs: Sequence[Tensor], notes: List[str]) -> Dict[str, Tensor]:
    if kind in ("rnn", "3d") or (kind == "linear" and len(outputs) == 1):
        return {"combined": outputs[0]}
    if kind == "inferred":
        return {"angle": outputs[0]}
    if kind in ("categorical", "behavior"):
        by_bins = {_last(t): t for t in outputs}
        if len(outputs) == 2 and 15 in by_bins and 20 in by_bins and by_bins[15] is not by_bins[20]:
            return {"angle": by_bins[15], "throttle": by_bins[20]}  # keras.py:900-902, 959-962
        angle = _pick(outputs, ("angle",), 0, notes, "angle")
        throttle = next(t for t in outputs if t is not angle)
        return {"angle": angle, "throttle": throttle}
    if kind == "localizer":
        location = max(outputs, key=lambda t: _last(t) or 0)  # zloc [1, K]; angle, throttle [1, 1]
        rest = [t for t in outputs if t is not location]
        angle = _pick(rest, ("angle",), 0, notes, "angle")
        return {"angle": angle, "throttle": next(t for t in rest if t is not angle), "location": location}
    # linear, imu, memory: two [1, 1] heads (n_outputs0/1 keras.py:858, 885; out_0/1 keras.py:931)
    angle = _pick(outputs, ("n_outputs0", "out_0", "angle", "steer"), 0, notes, "angle")
    throttle = next(t for t in outputs if t is not angle)
    return {"angle": angle, "throttle": throttle}


# ------------------------------------------------------------------------------------------------ the spec


@dataclass
class SpecChoices:
    """What the car's config (or flags) says beyond the graph; None = not known (template defaults apply)."""

    throttle_range: Optional[float] = None  # categorical/behavior: MODEL_CATEGORICAL_MAX_THROTTLE_RANGE or -R:
    crop_top: Optional[int] = None  # 3.x style crop (rows removed, the model input is the cropped size)
    crop_bottom: Optional[int] = None
    config: Optional[CarConfig] = None
    name: str = ""


def transformations(config: CarConfig) -> List[str]:
    """TRANSFORMATIONS + POST_TRANSFORMATIONS, applied before the model at inference
    (parts/image_transformations.py:17-21, templates/complete.py:404-413)."""
    names: List[str] = []
    for key in ("TRANSFORMATIONS", "POST_TRANSFORMATIONS"):
        value = config.get(key) or []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} is {value!r} in the car config; expected a list such as ['CROP']")
        names.extend(str(v) for v in value)
    return names


def mask_regions(config: CarConfig, height: int, width: int) -> List[Dict[str, Any]]:
    """input.mask regions for the car's CROP / TRAPEZE transformations; anything else DonkeyCar does to the
    image before the model is refused (it would be a different picture than the one the model was trained on)."""
    regions: List[Dict[str, Any]] = []
    for name in transformations(config):
        if name == "CROP":  # image_transformations.py:62-68 -> cv.ImgCropMask(LEFT, TOP, RIGHT, BOTTOM)
            region = {k.lower(): int(config.get(f"ROI_CROP_{k}") or 0) for k in ("TOP", "BOTTOM", "LEFT", "RIGHT")}
            regions.append(region)
        elif name == "TRAPEZE":  # image_transformations.py:44-52 -> cv.ImgTrapezoidalMask
            ul, ur, ll, lr = (int(config.get(f"ROI_TRAPEZE_{k}")) for k in ("UL", "UR", "LL", "LR"))
            top, bottom = int(config.get("ROI_TRAPEZE_MIN_Y")), int(config.get("ROI_TRAPEZE_MAX_Y"))
            regions.append({"polygon": [[ul, top], [ur, top], [lr, bottom], [ll, bottom]]})
        else:
            raise ConfigError(
                f"the car config applies the image transformation {name!r} before the model "
                f"(TRANSFORMATIONS/POST_TRANSFORMATIONS = {transformations(config)}); trt_perception reproduces "
                "CROP and TRAPEZE only; fix: retrain without it, or convert without --donkey-config/--donkey-database "
                "and check the spec by hand (the picture the model sees would differ)"
            )
    return regions


def build_spec(rec: Recognized, choices: SpecChoices) -> Dict[str, Any]:
    """The complete spec of a recognized DonkeyCar pilot. Tensor names are the converter's canonical ones:
    the image and vector inputs keep DonkeyCar's names, outputs are renamed to their roles."""
    config = choices.config or CarConfig()
    shape = list(rec.image.shape)
    frame = shape[2:] if rec.sequence else shape[1:]
    height, width, channels = frame
    if not all(isinstance(v, int) and v > 0 for v in (height, width, channels)) or channels not in (1, 3):
        raise SpecError(f"image input {rec.image.name!r} {shape}: expected NHWC with a fixed size and 1 or 3 "
                        "channels, as DonkeyCar's Input(shape=(IMAGE_H, IMAGE_W, IMAGE_DEPTH)) builds it")
    spec_input: Dict[str, Any] = {
        "name": IMAGE_INPUT, "height": height, "width": width, "layout": "NHWC",
        "color": "GRAY" if channels == 1 else "RGB",  # the camera part gives RGB; IMAGE_DEPTH 1 gives grey
        "scale": 1.0 / 255.0, "offset": 0.0,  # utils.normalize_image, utils.py:145-151
    }
    if rec.sequence:
        spec_input["sequence"] = rec.sequence
    top = choices.crop_top or 0
    bottom = choices.crop_bottom or 0
    if top or bottom:  # 3.x: img_crop(top, bottom) rows of the camera image, model input the rest (utils.py:137)
        spec_input["crop"] = {"top": int(top), "bottom": int(bottom)}
    if choices.config is not None:
        regions = mask_regions(config, height, width)
        if regions:
            spec_input["mask"] = regions[0] if len(regions) == 1 else regions
    spec: Dict[str, Any] = {"task": "steering"}
    if choices.name:
        spec["name"] = choices.name
    spec["input"] = spec_input
    inputs: Dict[str, Any] = {}
    for kind, tensor in rec.extra.items():
        size = _last(tensor)
        if not isinstance(size, int) or size <= 0:
            raise SpecError(f"input {tensor.name!r} {list(tensor.shape)} has no fixed size")
        if kind == "memory":
            if size % 2:
                raise SpecError(f"mem_in has {size} values; DonkeyCar's memory holds (angle, throttle) pairs [1, 2n]")
            # keras.py:369-374: [0.0, mem_start_speed] x n; get_model_by_type never sets mem_start_speed (0.0)
            inputs[MEMORY_INPUT] = {"source": "memory", "length": size // 2, "start": [0.0, 0.0]}
        elif kind == "imu":
            if size != 6:
                raise SpecError(f"imu_in has {size} values; DonkeyCar's KerasIMU takes 6 (acl_x..z, gyr_x..z: "
                                "keras.py:487); fix: write inputs.imu_in.fields for this model by hand")
            inputs[IMU_INPUT] = {"source": "imu", "topic": "imu",
                                 "fields": ["linear_acceleration.x", "linear_acceleration.y", "linear_acceleration.z",
                                            "angular_velocity.x", "angular_velocity.y", "angular_velocity.z"],
                                 "scale": [1.0, 1.0, 1.0, 180.0 / math.pi, 180.0 / math.pi,
                                           180.0 / math.pi],
                                 "max_age": 0.25}
        else:
            labels = config.get("BEHAVIOR_LIST") if choices.config is not None else None
            if not isinstance(labels, (list, tuple)) or len(labels) != size:
                if labels is not None:
                    rec.notes.append(f"BEHAVIOR_LIST {labels} has {len(labels)} names but the model takes {size}; "
                                     "named them by index")
                labels = [f"behavior_{i}" for i in range(size)]
            inputs[BEHAVIOR_INPUT] = {"source": "behavior", "topic": "behavior",
                                      "labels": [str(v) for v in labels], "default": str(labels[0])}
    if inputs:
        spec["inputs"] = inputs
    spec["output"] = _output_spec(rec, choices)
    return spec


def _output_spec(rec: Recognized, choices: SpecChoices) -> Dict[str, Any]:
    roles = sorted(rec.roles)
    tensors = {role: role for role in roles}
    if rec.kind in ("categorical", "behavior"):
        bins = {role: _last(rec.roles[role]) for role in ("angle", "throttle")}
        r = choices.throttle_range
        key = "MODEL_CATEGORICAL_MAX_THROTTLE_RANGE"
        if r is None and choices.config is not None and (choices.config.has(key) or key in choices.config.unread):
            r = float(choices.config.get(key))  # a value the config reader could not work out raises, not defaults
        if r is None:
            r = float(TEMPLATE_DEFAULTS[key])
            given = f"the car config does not set {key}" if choices.config is not None else "throttle range not given"
            fix = "pass --throttle-range 0,R" if choices.config is not None else \
                "pass --donkey-config or --donkey-database to take the car's value"
            rec.notes.append(f"{given}: assumed [0, {r:g}] (DonkeyCar 5's config template; 4.x templates said 0.5); "
                             f"{fix}")
        return {"format": "steering_categorical", "tensors": tensors, "angle_bins": bins["angle"],
                "throttle_bins": bins["throttle"], "angle_range": [-1.0, 1.0], "throttle_range": [0.0, float(r)]}
    out: Dict[str, Any] = {"format": "steering_linear", "tensors": tensors}
    if rec.kind == "inferred":
        out["throttle"] = "inferred"  # keras.py:463-465 -> utils.throttle(angle)
    return out


__all__ = [
    "PILOT_TYPES",
    "CarConfig",
    "DatabaseEntry",
    "PilotType",
    "Recognized",
    "SpecChoices",
    "Tensor",
    "build_spec",
    "inferred_throttle",
    "linear_unbin",
    "mask_regions",
    "parse_pilot_type",
    "read_car_config",
    "read_database",
    "recognize",
]
