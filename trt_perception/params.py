"""The node's parameter schema: ONE table the node declares, params files are checked against, replay reads.

Global parameters (camera, QoS, frame policy, diagnostics, ``heads``) and, for every head, the common model
parameters (``<head>.model``, ``.spec``, ``.backend``...) plus its task's own (``tasks/<task>.py`` declares
them: ``<head>.score_threshold`` for detection, ``<head>.max_throttle`` for steering...). Which heads exist
is itself a parameter: ``heads: [detector, lanes, pilot]``. Left empty, the node runs the two classic heads,
``detector`` (detection) and ``pilot`` (steering), switched by ``<head>.enabled``, so params files written
before heads existed keep working unchanged.

Nothing here imports the pipeline, ROS or a backend: ``ParamTable`` is built from names and tasks alone.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from trt_perception.errors import ConfigError, TrtPerceptionError

NODE_NAME = "trt_perception"

# Parameter kinds, named as ROS names parameter types. STRING_LIST params are declared with dynamic typing
# in the node, because rclpy infers BYTE_ARRAY from an empty default list and would then refuse a YAML list.
BOOL = "bool"
INT = "integer"
DOUBLE = "double"
STRING = "string"
STRING_LIST = "string_array"

BACKENDS = ("auto", "onnxruntime", "tensorrt")
CUDA_LIBRARIES = ("auto", "pycuda", "cuda-python")
USE_SPEC = -1.0  # thresholds: "take the model spec's value"

# The heads a node runs when ``heads`` is empty, with their tasks and whether they run by default.
LEGACY_HEADS: Dict[str, str] = {"detector": "detection", "pilot": "steering"}
LEGACY_ENABLED: Dict[str, bool] = {"detector": True, "pilot": False}
HEAD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

# ROS-owned parameters a params file may carry for this node; accepted and ignored by our table.
ROS_PARAMS = ("use_sim_time", "start_type_description_service")
ROS_PARAM_PREFIXES = ("qos_overrides.",)


@dataclass(frozen=True)
class ParamDef:
    """One node parameter: what the node declares and the YAML/replay validation uses.

    Task and head parameters are written with names relative to their head (``score_threshold``);
    ``for_head`` gives the declared one (``detector.score_threshold``).
    """

    name: str
    default: Any
    type: str
    description: str
    range: Optional[Tuple[float, float]] = None  # inclusive, for integer/double
    choices: Tuple[str, ...] = ()
    read_only: bool = True  # can only be set at start (params file / launch args)
    dynamic: bool = False  # changeable at run time with `ros2 param set`
    special: Optional[float] = None  # a value outside ``range`` that is still allowed (USE_SPEC)
    ints_ok: bool = False  # STRING_LIST that also takes integers (class ids), kept as text

    def for_head(self, head: str, **changes: Any) -> ParamDef:
        return replace(self, name=f"{head}.{self.name}", **changes)

    @property
    def relative_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def describe_range(self) -> str:
        if self.choices:
            return f"one of {list(self.choices)}"
        if self.range is not None:
            lo, hi = self.range
            text = f"in [{_num(lo)}, {_num(hi)}]"
            if self.special is not None:
                text = f"{_num(self.special)} (use the model spec's value) or a value " + text
            return text
        return {
            BOOL: "true or false",
            STRING: "a string",
            STRING_LIST: "a list of strings",
            INT: "an integer",
            DOUBLE: "a number",
        }[self.type]


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def live(name: str, default: Any, kind: str, description: str, **kw: Any) -> ParamDef:
    """A parameter changeable at run time (``ros2 param set``)."""
    return ParamDef(name, default, kind, description, read_only=False, dynamic=True, **kw)


GLOBAL_PARAMS: Tuple[ParamDef, ...] = (
    ParamDef(
        "image_topic",
        "/camera/image_raw",
        STRING,
        "camera topic; for compressed transport the CompressedImage topic itself (…/image_raw/compressed)",
    ),
    ParamDef(
        "image_transport",
        "raw",
        STRING,
        "raw = sensor_msgs/Image, compressed = sensor_msgs/CompressedImage (jpeg/png)",
        choices=("raw", "compressed"),
    ),
    ParamDef(
        "qos_reliability",
        "best_effort",
        STRING,
        "camera subscription reliability; best_effort (REP 2003 sensor data) connects to reliable and "
        "best-effort cameras alike, reliable connects to reliable cameras only",
        choices=("best_effort", "reliable"),
    ),
    ParamDef("qos_depth", 1, INT, "camera subscription queue depth (keep last N)", range=(1, 100)),
    ParamDef(
        "frame_policy",
        "latest",
        STRING,
        "latest = a worker thread runs the models on the newest frame, a newer frame replaces a waiting one "
        "(bounded latency, drops counted); inline = run in the subscription callback (no extra thread)",
        choices=("latest", "inline"),
    ),
    ParamDef(
        "diagnostics_period", 1.0, DOUBLE, "seconds between /diagnostics reports; 0 = off", range=(0.0, 60.0)
    ),
    ParamDef(
        "bad_frame_log_period",
        5.0,
        DOUBLE,
        "at most one log line per this many seconds about undecodable frames (all are counted)",
        range=(0.0, 3600.0),
    ),
    ParamDef(
        "gpu_decode",
        "auto",
        STRING,
        "JPEG CompressedImage frames decoded on the GPU with NVIDIA nvImageCodec; auto = when it and a GPU are "
        "usable and every head of the camera has gpu_preprocess: true; on = required (refuses to start "
        "without it); off = cv2.imdecode on the CPU",
        choices=("auto", "on", "off"),
    ),
    ParamDef(
        "max_pixels",
        40_000_000,
        INT,
        "largest frame accepted (width x height, read from the header before decoding): larger frames are "
        "bad frames, a guard against decompression bombs (a 30000x30000 PNG is under 1 MB)",
        range=(1, 1_000_000_000),
    ),
    ParamDef(
        "jpeg_reduce",
        "off",
        STRING,
        "CPU JPEG decode at 1/2, 1/4 or 1/8 resolution (libjpeg DCT scaling, faster) when every head's input is at "
        "most that fraction of the frame; results stay in full-frame pixels; pixels change slightly, so "
        "off unless measured on your data (auto = reduce when it applies)",
        choices=("off", "auto"),
    ),
    ParamDef(
        "overlap",
        True,
        BOOL,
        "with compressed cameras and frame_policy latest: decode the next frame while the models infer the "
        "current one (two threads, latest-frame policy kept; +20-25% frames/s with ONNX Runtime on 2 cores); "
        "false = one frame at a time",
    ),
    ParamDef(
        "params_file",
        "",
        STRING,
        "the params YAML this node was started with (car.launch.py sets it); relative model paths resolve "
        "against its folder",
    ),
    ParamDef(
        "heads",
        [],
        STRING_LIST,
        "names of the heads to run on each frame, e.g. [detector, lanes, pilot]; each head's params live "
        "under its name; empty = the classic two: detector (detection) and pilot (steering)",
    ),
    ParamDef(
        "cameras",
        [],
        STRING_LIST,
        "names of several cameras for one node, e.g. [front, rear], each set by camera.<name>.topic/transport "
        "with outputs under <name>/; empty = one camera, image_topic",
    ),
)


def camera_params(camera: str) -> Tuple[ParamDef, ...]:
    """The params of one named camera (``cameras: [front, rear]``)."""
    return (
        ParamDef(
            f"camera.{camera}.topic",
            f"/{camera}/image_raw",
            STRING,
            f"camera {camera}'s image topic (the CompressedImage topic itself for compressed transport)",
        ),
        ParamDef(
            f"camera.{camera}.transport",
            "raw",
            STRING,
            f"camera {camera}: raw = sensor_msgs/Image, compressed = sensor_msgs/CompressedImage",
            choices=("raw", "compressed"),
        ),
    )


# ONNX Runtime session options every head gets unless its params say otherwise (benchmark 18 chose ort_threads 2)
ORT_DEFAULTS: Dict[str, Any] = {
    "ort_threads": 2, "ort_inter_op_threads": 0, "ort_spinning": False, "ort_optimization": "all",
}  # fmt: skip


def _head_params(task_names: Sequence[str]) -> Tuple[ParamDef, ...]:
    """The parameters every head has (relative names)."""
    return (
        ParamDef("enabled", True, BOOL, "run this head"),
        ParamDef(
            "cameras",
            [],
            STRING_LIST,
            "the cameras (names from the global cameras list) this head runs on; empty = all of them",
        ),
        ParamDef(
            "task",
            "",
            STRING,
            "what the head does; empty = the model spec's task",
            choices=("", *task_names),
        ),
        ParamDef(
            "model",
            "",
            STRING,
            "model file (.onnx, .engine/.plan/.trt/.bin): absolute, relative to the params file, or "
            "pkg://trt_perception/<path> for files shipped in the Python package",
        ),
        ParamDef(
            "spec",
            "",
            STRING,
            "model spec YAML; empty = the spec beside the model (model.engine.yaml, then model.yaml)",
        ),
        ParamDef(
            "backend",
            "auto",
            STRING,
            "inference runtime; auto = by file suffix (.onnx -> onnxruntime, engines -> tensorrt)",
            choices=BACKENDS,
        ),
        ParamDef(
            "providers",
            [],
            STRING_LIST,
            "ONNX Runtime execution providers in order, e.g. [TensorrtExecutionProvider, "
            "CUDAExecutionProvider, CPUExecutionProvider]; empty = CPU. A missing provider is an error",
        ),
        ParamDef(
            "plugin_libraries",
            [],
            STRING_LIST,
            "TensorRT plugin .so files loaded before the engine (custom plugins, FlattenConcat)",
        ),
        ParamDef(
            "cuda",
            "auto",
            STRING,
            "CUDA binding the TensorRT backend uses; auto = whichever is installed",
            choices=CUDA_LIBRARIES,
        ),
        ParamDef(
            "auto_build",
            False,
            BOOL,
            "build (or rebuild) the TensorRT engine from the ONNX beside it when it is missing or was built "
            "for another TensorRT/GPU (minutes on a Nano)",
        ),
        ParamDef(
            "gpu_preprocess",
            False,
            BOOL,
            "TensorRT only: resize/normalize on the GPU straight into the engine input (CUDA kernel; needs "
            "cuda-python or pycuda)",
        ),
        ParamDef(
            "ort_threads",
            ORT_DEFAULTS["ort_threads"],
            INT,
            "ONNX Runtime intra-op threads (idle ones sleep unless ort_spinning); on 2 cores, 2 ran an "
            "SSD-MobileNet-sized model 1.1-1.9x as fast as 1 and a 0.4 ms one at 0.94-1.08x, also with a core busy "
            "elsewhere (README 'ONNX Runtime options', benchmark 18); 0 = one per core",
            range=(0, 64),
        ),
        ParamDef("ort_inter_op_threads", ORT_DEFAULTS["ort_inter_op_threads"], INT,
                 "ONNX Runtime inter-op threads; 0 = ORT's default", range=(0, 64)),
        ParamDef(
            "ort_spinning",
            ORT_DEFAULTS["ort_spinning"],
            BOOL,
            "let idle ONNX Runtime threads busy-wait for work (ORT's own default is on: it burns CPU the "
            "decoder and other nodes need)",
        ),
        ParamDef(
            "ort_optimization",
            ORT_DEFAULTS["ort_optimization"],
            STRING,
            "ONNX Runtime graph optimisation level",
            choices=("disable", "basic", "extended", "all"),
        ),
    )


def task_params(task: str) -> Tuple[ParamDef, ...]:
    """A task's own parameters (relative names), declared in its module under ``tasks/``."""
    from trt_perception.tasks import task_class

    return task_class(task).PARAMS


def is_ros_param(name: str) -> bool:
    """Parameters ROS itself owns (use_sim_time, qos_overrides...), accepted in files and ignored here."""
    return name in ROS_PARAMS or name.startswith(ROS_PARAM_PREFIXES)


class ParamTable:
    """Every parameter of a node running ``heads`` (head name -> task), in declaration order.

    ``legacy`` is the classic layout (``heads`` empty): detector and pilot, the pilot off by default, no
    ``<head>.task`` (their tasks are fixed), and topics without a head prefix.
    """

    def __init__(self, heads: Mapping[str, str], legacy: bool = False, cameras: Sequence[str] = ()) -> None:
        from trt_perception.tasks import TASKS

        self.heads: Dict[str, str] = dict(heads)
        self.legacy = legacy
        self.cameras: Tuple[str, ...] = tuple(cameras)
        params: List[ParamDef] = list(GLOBAL_PARAMS)
        for camera in self.cameras:
            params.extend(camera_params(camera))
        for head, task in self.heads.items():
            for param in _head_params(tuple(TASKS)):
                if legacy and param.name == "task":
                    continue
                if param.name == "enabled":
                    enabled = LEGACY_ENABLED.get(head, True) if legacy else True
                    params.append(param.for_head(head, default=enabled, description=f"run the {head} head"))
                elif param.name == "model":
                    params.append(param.for_head(head, description=f"{head} ({task}) " + param.description))
                else:
                    params.append(param.for_head(head))
            params.extend(p.for_head(head) for p in task_params(task))
        self.params: Tuple[ParamDef, ...] = tuple(params)
        self.by_name: Dict[str, ParamDef] = {p.name: p for p in self.params}
        if len(self.by_name) != len(self.params):
            raise ConfigError(f"heads {list(heads)}: a head name repeats or shadows a parameter; fix: rename it")

    @classmethod
    def legacy_table(cls, cameras: Sequence[str] = ()) -> ParamTable:
        return cls(LEGACY_HEADS, legacy=True, cameras=cameras)

    def defaults(self) -> Dict[str, Any]:
        """Every parameter's default, by dotted name (lists copied)."""
        return {p.name: list(p.default) if isinstance(p.default, list) else p.default for p in self.params}

    def unknown(self, name: str) -> str:
        """Why ``name`` is not a parameter of this node, with close matches or the missing head."""
        close = difflib.get_close_matches(name, list(self.by_name), n=3, cutoff=0.6)
        head = name.split(".", 1)[0] if "." in name else ""
        if name.startswith("camera."):
            camera = name.split(".")[1] if name.count(".") >= 2 else ""
            listed = list(self.cameras) or "empty"
            hint = f"camera {camera!r} is not in cameras (cameras is {listed}); fix: add {camera!r} to cameras"
        elif head and head not in self.heads and not any(c.startswith(head + ".") for c in self.by_name):
            # a whole section for a head the node does not run (not a misspelt parameter of one it does)
            listed = f"heads is {list(self.heads)}" if not self.legacy else "heads is empty (detector + pilot)"
            alike = difflib.get_close_matches(head, list(self.heads), n=1, cutoff=0.75)
            typo = f"did you mean head {alike[0]!r}? or " if alike else ""
            hint = (f"{head!r} is not a head of this node ({listed}); fix: {typo}add {head!r} to heads to run it, "
                    f"or remove the {head!r} section")
        elif close:
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?"
        else:
            hint = "see config/car.yaml and README 'Parameters' for all"
        return f"parameter {name!r} is unknown to trt_perception; {hint}"

    def steering_heads(self) -> List[str]:
        return [h for h, t in self.heads.items() if t == "steering"]


def check_value(param: ParamDef, value: Any, strict_double: bool = False) -> Tuple[Any, Optional[str]]:
    """Normalize ``value`` for ``param``; returns (value, None) or (value, reason it is refused).

    ``strict_double`` refuses integers for double params, as ROS does when it loads a params file
    (``1`` instead of ``1.0`` is the classic YAML mistake).
    """
    expected = param.describe_range()
    if param.type == BOOL:
        if not isinstance(value, bool):
            return value, f"{param.name} is {value!r}; expected true or false"
        return value, None
    if param.type == INT:
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"{param.name} is {value!r}; expected an integer {expected}; fix: write a whole number"
    elif param.type == DOUBLE:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"{param.name} is {value!r}; expected a number {expected}; fix: write a number"
        if strict_double and isinstance(value, int):
            return value, (
                f"{param.name} is {value!r} (an integer); ROS refuses integers for double parameters; "
                f"fix: write {float(value)!r}"
            )
        value = float(value)
        if not math.isfinite(value):
            return value, (f"{param.name} is {value!r}; expected a finite number {expected}; fix: give a value in "
                           "that range")
    elif param.type == STRING:
        if isinstance(value, bool) and "off" in param.choices:  # YAML 1.1 reads a bare off/on as a boolean
            value = "on" if value else "off"
        if not isinstance(value, str):
            return value, f"{param.name} is {value!r}; expected a string ({expected})"
        if param.choices and value not in param.choices:
            return value, f"{param.name} is {value!r}; expected {expected}"
        return value, None
    elif param.type == STRING_LIST:
        if not isinstance(value, (str, bytes, list, tuple)) and hasattr(value, "__iter__"):
            value = list(value)  # rclpy hands integer arrays over as array.array
        if isinstance(value, (list, tuple)) and all(
            isinstance(v, str) or (param.ints_ok and isinstance(v, int) and not isinstance(v, bool))
            for v in value
        ):
            return [v if isinstance(v, str) else str(v) for v in value], None
        what = "a list of labels or class ids" if param.ints_ok else "a list of strings"
        return value, f"{param.name} is {value!r}; expected {what}"
    if param.range is not None:
        lo, hi = param.range
        ok = lo <= value <= hi or (param.special is not None and value == param.special)
        if not ok:
            meaning = f" ({param.description})" if param.description else ""
            return value, (f"{param.name} is {_num(value)}; expected {expected}{meaning}; fix: give a value in "
                           "that range")
    return value, None


def head_values(values: Mapping[str, Any], head: str) -> Dict[str, Any]:
    """The params of one head with relative names (``pilot.max_throttle`` -> ``max_throttle``)."""
    prefix = head + "."
    return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}


def cross_check(values: Mapping[str, Any], table: ParamTable) -> Optional[str]:
    """Rules between parameters (a pair that is fine alone can be wrong together), asked of each task."""
    from trt_perception.tasks import task_class

    for head, task in table.heads.items():
        reason = task_class(task).check_values(head, head_values(values, head))
        if reason:
            return reason
    return None


def validate_param_change(
    name: str, value: Any, current: Optional[Mapping[str, Any]] = None, table: Optional[ParamTable] = None
) -> Optional[str]:
    """Why a run-time change of ``name`` to ``value`` is refused, or None when it is fine.

    ``current`` holds the node's other parameter values, for rules between parameters.
    """
    table = table or ParamTable.legacy_table()
    param = table.by_name.get(name)
    if param is None:
        return table.unknown(name)
    if not param.dynamic:
        return (
            f"{name} cannot change while the node runs; set it in the params file (or a launch argument) "
            "and restart the node"
        )
    value, reason = check_value(param, value)
    if reason:
        return reason
    if current is not None:
        merged = dict(current)
        merged[name] = value
        return cross_check(merged, table)
    return None


# ---------------------------------------------------------------------------------------------- heads


def check_head_names(heads: Sequence[str], what: str = "heads") -> None:
    """Head and camera names become parameter prefixes and topic namespaces: ROS name rules, unique, no clash."""
    globals_ = {p.name for p in GLOBAL_PARAMS} | {"camera"}
    seen = set()
    for head in heads:
        if not HEAD_NAME.match(head) or head in globals_:
            raise ConfigError(
                f"{what} entry {head!r} is not a usable name; expected letters, digits and '_', starting "
                f"with a letter, and not a global parameter name; fix: rename it, e.g. 'front_detector'"
            )
        if head in seen:
            raise ConfigError(f"{what} lists {head!r} twice; fix: give each its own name")
        seen.add(head)


def spec_task(head: str, model: str, spec: str, base: Optional[Path]) -> Optional[str]:
    """The ``task:`` of a head's model spec (read without loading the model), or None when there is none."""
    from trt_perception.paths import resolve_param_path
    from trt_perception.spec import find_spec, read_spec_file

    spec_path = resolve_param_path(spec, base, f"{head}.spec")
    if not spec_path and model:
        found = find_spec(resolve_param_path(model, base, f"{head}.model"))
        spec_path = str(found) if found is not None else ""
    if not spec_path or not Path(spec_path).is_file():
        return None
    try:
        task = read_spec_file(spec_path).get("task")
    except TrtPerceptionError:
        return None
    return task if isinstance(task, str) else None


def resolve_heads(values: Mapping[str, Any], base: Optional[Path] = None) -> ParamTable:
    """The table for the heads ``values`` asks for: each head's task from ``<head>.task``, the classic
    names (detector, pilot), or the ``task:`` of the head's model spec, in that order."""
    from trt_perception.tasks import TASKS

    heads = values.get("heads") or []
    if isinstance(heads, str) or not all(isinstance(h, str) for h in heads):
        raise ConfigError(f"heads is {heads!r}; expected a list of head names, e.g. [detector, lanes, pilot]")
    cameras = values.get("cameras") or []
    if isinstance(cameras, str) or not all(isinstance(c, str) for c in cameras):
        raise ConfigError(f"cameras is {cameras!r}; expected a list of camera names, e.g. [front, rear]")
    check_head_names(cameras, what="cameras")
    if not heads:
        return ParamTable.legacy_table(cameras)
    check_head_names(heads)
    tasks: Dict[str, str] = {}
    for head in heads:
        task = values.get(f"{head}.task") or LEGACY_HEADS.get(head)
        how = f"{head}.task"
        if not task:
            task = spec_task(head, str(values.get(f"{head}.model", "")), str(values.get(f"{head}.spec", "")), base)
            how = f"the task: of {head}'s model spec"
        if not task:
            raise ConfigError(
                f"head {head!r} has no task: {head}.task is not set and no spec beside {head}.model says one; "
                f"fix: set {head}.task to one of {list(TASKS)} (and {head}.model to its model file)"
            )
        if task not in TASKS:
            raise ConfigError(f"{how} is {task!r}; expected one of {list(TASKS)}")
        tasks[head] = task
    return ParamTable(tasks, cameras=cameras)


# ---------------------------------------------------------------------------------------------- the file


def _flatten(mapping: Mapping[str, Any], prefix: str, out: Dict[str, Any]) -> None:
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(value, name + ".", out)
        else:
            out[name] = value


def _node_sections(data: Mapping[str, Any], node_name: str) -> List[Tuple[str, Mapping[str, Any]]]:
    """The ``ros__parameters`` blocks that apply to ``node_name``: ``/**`` first, then the node's own."""
    sections = []
    wildcard_keys = ("/**", "**")
    for key, block in data.items():
        key_text = str(key)
        stripped = key_text.strip("/")
        is_wildcard = key_text in wildcard_keys
        is_own = stripped == node_name or stripped.endswith("/" + node_name) or stripped == "**/" + node_name
        if not (is_wildcard or is_own):
            continue
        if not isinstance(block, Mapping) or "ros__parameters" not in block:
            raise ConfigError(
                f"params file section {key_text!r} has no 'ros__parameters:' block; expected "
                f"'{node_name}:\\n  ros__parameters:\\n    <name>: <value>'"
            )
        params = block["ros__parameters"]
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise ConfigError(
                f"params file section {key_text}.ros__parameters is {params!r}; expected a mapping"
            )
        sections.append((key_text, params))
    sections.sort(key=lambda item: 0 if item[0] in wildcard_keys else 1)
    return sections


def check_values(
    flat: Mapping[str, Any], table: ParamTable, strict: bool = True, strict_double: bool = False, where: str = ""
) -> Dict[str, Any]:
    """Check every ``{dotted.name: value}`` against ``table``; ROS' own params are dropped."""
    result: Dict[str, Any] = {}
    for name, value in flat.items():
        if is_ros_param(name):
            continue
        param = table.by_name.get(name)
        if param is None:
            if strict:
                raise ConfigError(f"{table.unknown(name)}{where}")
            continue
        value, reason = check_value(param, value, strict_double=strict_double)
        if reason:
            raise ConfigError(f"{reason}{where}")
        result[name] = value
    return result


def load_params_file(
    path: Union[str, Path], node_name: str = NODE_NAME, strict: bool = True
) -> Dict[str, Any]:
    """Read a ROS 2 params YAML and return this node's parameters as ``{dotted.name: value}``.

    Accepts ``<node_name>: ros__parameters:`` (with or without a leading slash or namespace) and ``/**:``;
    nested mappings become dotted names (``detector: {score_threshold: 0.4}`` ->
    ``detector.score_threshold``).
    Unknown names are refused with close matches (a typo in ``pilot.max_throttle`` must not pass silently),
    and values are checked as the node checks them. ``params_file`` is set to the file's absolute path, so
    relative model paths resolve against its folder. ROS-owned parameters (use_sim_time...) are dropped.
    """
    file_path = Path(os.path.expanduser(str(path)))
    if file_path.is_dir():
        raise ConfigError(f"params file {file_path} is a folder; expected a params YAML; fix: pass the file's "
                          "path (config/car.yaml is one)")
    if not file_path.is_file():
        raise ConfigError(f"params file {file_path} does not exist; fix: pass the path of a params YAML")
    try:
        data = yaml.safe_load(file_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"params file {file_path} is not UTF-8 text (byte {exc.start}: {exc.reason}); expected a params "
            "YAML; fix: pass the params file, not a model, bag or other binary file"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file {file_path} is not valid YAML: {exc}") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level (`[[[[...`)
        raise ConfigError(f"params file {file_path} is nested too deeply to be a params YAML; fix: pass the "
                          "params file (config/car.yaml is one)") from None
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"params file {file_path} holds {type(data).__name__}; "
            f"expected '{node_name}: ros__parameters: ...'"
        )
    sections = _node_sections(data, node_name)
    if not sections:
        raise ConfigError(
            f"params file {file_path} has no section for node {node_name!r} "
            f"(sections: {sorted(map(str, data))}); fix: put the parameters under "
            f"'{node_name}:\\n  ros__parameters:' or '/**:\\n  ros__parameters:'"
        )
    flat: Dict[str, Any] = {}
    for _, params in sections:
        _flatten(params, "", flat)
    where = f" (in {file_path})"
    for list_param in GLOBAL_PARAMS:
        if list_param.name in ("heads", "cameras") and list_param.name in flat:
            _, reason = check_value(list_param, flat[list_param.name], strict_double=True)
            if reason:
                raise ConfigError(reason + where)
    try:
        table = resolve_heads(flat, file_path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{exc}{where}") from None
    result = check_values(flat, table, strict=strict, strict_double=True, where=where)
    result["params_file"] = str(file_path.resolve())
    return result


# ------------------------------------------------------------------------------------------------ docs


def describe_params(params: Sequence[ParamDef]) -> List[Dict[str, str]]:
    """Rows for docs (README's param table): name, default, type, range, changeable, meaning."""
    rows = []
    for p in params:
        default = p.default if not isinstance(p.default, str) else repr(p.default)
        rows.append(
            {
                "name": p.name,
                "default": str(default).replace("True", "true").replace("False", "false"),
                "type": p.type,
                "range": p.describe_range() if (p.range or p.choices) else "",
                "changeable": "live" if p.dynamic else "at start",
                "description": p.description,
            }
        )
    return rows


def format_param_table(params: Sequence[ParamDef]) -> str:
    """A param table as Markdown (README 'Running on the car')."""
    lines = ["| parameter | default | type | allowed | set | meaning |", "|---|---|---|---|---|---|"]
    for row in describe_params(params):
        lines.append(
            f"| `{row['name']}` | `{row['default']}` | {row['type']} | {row['range']} | {row['changeable']} "
            f"| {row['description']} |"
        )
    return "\n".join(lines)
