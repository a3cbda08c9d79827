"""Shared validation for output parsers: format parameters, tensor roles, and model outputs.

Every parser refuses a bad spec at construction and a mismatching model at load time, never on the first
frame. Messages name the key (``output.<key>``) or the tensor, what the format expects, what was found, and
the fix, so one log line is enough to act on.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import OutputError, SpecError
from trt_perception.spec import ModelSpec

FLOAT_KINDS = ("float32", "float16")
INT_KINDS = ("int32", "int64")


# ------------------------------------------------------------------------------------------ parameters


def check_params(spec: ModelSpec, defaults: Mapping[str, Any]) -> Dict[str, Any]:
    """The format parameters with defaults filled in; an unknown key is refused with its value."""
    params = dict(spec.output.params)
    for key in sorted(set(params) - set(defaults)):
        raise SpecError(
            f"output.{key} = {params[key]!r} is not a parameter of output format {spec.output.format!r}; "
            f"allowed keys: {[*sorted(defaults), 'format', 'tensors']}; "
            "fix: remove it or correct its spelling"
        )
    merged = dict(defaults)
    merged.update(params)
    return merged


def bad_param(key: str, value: Any, expected: str, fix: str = "") -> SpecError:
    text = f"output.{key} is {value!r}; expected {expected}"
    return SpecError(f"{text}; fix: {fix}" if fix else text)


def param_bool(params: Mapping[str, Any], key: str) -> bool:
    value = params[key]
    if not isinstance(value, bool):
        raise bad_param(key, value, "true or false")
    return value


def param_choice(params: Mapping[str, Any], key: str, choices: Sequence[str]) -> str:
    value = params[key]
    if not isinstance(value, str) or value.lower() not in choices:
        raise bad_param(key, value, f"one of {list(choices)}")
    return value.lower()


def param_int(params: Mapping[str, Any], key: str, minimum: int = 1) -> int:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_param(key, value, f"an integer >= {minimum}")
    return int(value)


def param_optional_int(params: Mapping[str, Any], key: str, minimum: int = 0) -> Optional[int]:
    if params[key] is None:
        return None
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_param(key, value, f"null or an integer >= {minimum}")
    return int(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def param_numbers(
    params: Mapping[str, Any], key: str, count: int, positive: bool = False
) -> Tuple[float, ...]:
    value = params[key]
    ok = isinstance(value, (list, tuple)) and len(value) == count and all(is_number(v) for v in value)
    if ok and positive:
        ok = all(v > 0 for v in value)
    if not ok:
        kind = "positive numbers" if positive else "numbers"
        raise bad_param(key, value, f"a list of {count} {kind}")
    return tuple(float(v) for v in value)


def param_range(params: Mapping[str, Any], key: str) -> Tuple[float, float]:
    low, high = param_numbers(params, key, 2)
    if not low < high:
        raise bad_param(key, params[key], "[low, high] with low < high")
    return low, high


# ----------------------------------------------------------------------------------------------- roles


def check_roles(spec: ModelSpec, required: Iterable[str]) -> None:
    """``spec.output.tensors`` must map exactly the roles this format reads (outputs go by name)."""
    required = list(required)
    tensors = spec.output.tensors
    missing = [role for role in required if role not in tensors]
    unknown = sorted(set(tensors) - set(required))
    if missing or unknown:
        problem = []
        if missing:
            problem.append(f"missing role(s) {['output.tensors.' + r for r in missing]}")
        if unknown:
            problem.append(f"unknown role(s) {['output.tensors.' + r for r in unknown]}")
        raise SpecError(
            f"output.tensors is {dict(tensors)!r}: {' and '.join(problem)}; output format "
            f"{spec.output.format!r} needs roles {required}; fix: map each role to the model's output "
            "tensor name, e.g. " + ", ".join(f"{r}: <tensor name>" for r in required)
        )


# --------------------------------------------------------------------------------------------- tensors


def find_output(spec: ModelSpec, outputs: Sequence[TensorSpec], role: str) -> TensorSpec:
    """The model output the spec maps ``role`` to, found by name (never by index)."""
    name = spec.output.tensors[role]
    for tensor in outputs:
        if tensor.name == name:
            return tensor
    names = sorted(t.name for t in outputs)
    raise SpecError(
        f"spec output.tensors.{role} is {name!r} but the model has no output of that name; the model's "
        f"outputs are {names}; fix: map {role} to one of them in output.tensors"
    )


def _shape_text(shape: Sequence[Optional[int]]) -> str:
    return (
        "[" + ", ".join("?" if d is None or (isinstance(d, int) and d < 0) else str(d) for d in shape) + "]"
    )


def known(dim: Optional[int]) -> bool:
    return dim is not None and int(dim) >= 0


def check_tensor(
    spec: ModelSpec,
    tensor: TensorSpec,
    role: str,
    expected: str,
    ranks: Sequence[int],
    last_dim: Optional[int] = None,
    dtypes: Sequence[str] = FLOAT_KINDS,
) -> Tuple[Optional[int], ...]:
    """Check rank, last dimension and dtype of one output; returns its shape."""
    shape = tuple(tensor.shape)
    where = f"model output {tensor.name!r} (output.tensors.{role}, format {spec.output.format!r})"
    if len(shape) not in ranks or (last_dim is not None and known(shape[-1]) and int(shape[-1]) != last_dim):
        raise SpecError(
            f"{where} has shape {_shape_text(shape)}; the format expects {expected}; fix: map {role} to "
            "the right tensor in output.tensors or pick the output.format this model speaks "
            "(trt-perception inspect)"
        )
    dtype = np.dtype(tensor.dtype).name
    if dtype not in dtypes:
        raise SpecError(
            f"{where} has dtype {dtype}; the format expects {' or '.join(dtypes)}; fix: map {role} to "
            "the right tensor or pick the output.format this model speaks (trt-perception inspect)"
        )
    return shape


def same_dim(
    spec: ModelSpec,
    what: str,
    dims: Sequence[Tuple[str, Optional[int]]],
    fix: str = "map output.tensors to the tensors of one detection head",
) -> Optional[int]:
    """All known sizes of one logical dimension (e.g. the box count) must agree; returns it or None."""
    sizes = {name: int(d) for name, d in dims if known(d)}
    if len(set(sizes.values())) > 1:
        raise SpecError(
            f"the outputs of format {spec.output.format!r} disagree on {what}: "
            + ", ".join(f"{n}: {s}" for n, s in sizes.items())
            + f"; fix: {fix}"
        )
    return next(iter(sizes.values()), None)


def batch0(array: np.ndarray, core_rank: int) -> np.ndarray:
    """Batch item 0 of an output, whatever leading batch dims the runtime added (none, 1, or more)."""
    while array.ndim > core_rank:
        array = array[0]
    return array


# ------------------------------------------------------------------------------------------ per frame
#
# A model whose output shapes are dynamic (or a runtime that misbehaves) can hand over anything on one frame:
# an empty tensor, a count of NaN, rows of another width. The checks below run per frame on the arrays
# themselves, cost a few attribute reads, and turn each such frame into one OutputError naming tensor, shape
# and expectation; the node and replay count that frame as failed and go on.

FRAME_FIX = (
    "check output.format and output.tensors against the model (trt-perception inspect); a model with dynamic "
    "output shapes must still give the format's shapes on every frame"
)


def shape_text(shape: Sequence[Any]) -> str:
    """``[1, 0]`` for a frame's actual shape (``[]`` for a scalar)."""
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def frame_error(
    spec: ModelSpec, role: str, array: Optional[np.ndarray], expected: str, fix: str = FRAME_FIX
) -> OutputError:
    """The OutputError for one frame's output ``role`` (``array`` None: the output is missing)."""
    name = spec.output.tensors.get(role, role)
    where = f"model output {name!r} (output.tensors.{role}, format {spec.output.format!r})"
    if array is None:
        found = "is missing from this frame's outputs"
    else:
        found = f"gave shape {shape_text(array.shape)} {array.dtype} on this frame"
    return OutputError(f"{where} {found}; the format expects {expected}; fix: {fix}")


def frame_output(
    spec: ModelSpec,
    outputs: Mapping[str, Any],
    role: str,
    expected: str,
    core_rank: int,
    last_dim: Optional[int] = None,
    rows_may_be_empty: bool = False,
    kinds: str = "fiu",
) -> np.ndarray:
    """Batch item 0 (``core_rank`` dims) of output ``role``, checked by ``frame_array``."""
    array = frame_array(spec, outputs, role, expected, core_rank, last_dim, rows_may_be_empty, kinds)
    return batch0(array, core_rank)


def frame_array(
    spec: ModelSpec,
    outputs: Mapping[str, Any],
    role: str,
    expected: str,
    core_rank: int,
    last_dim: Optional[int] = None,
    rows_may_be_empty: bool = False,
    kinds: str = "fiu",
) -> np.ndarray:
    """Output ``role`` of one frame as an array, checked: numeric (``kinds``: numpy dtype kinds), at least
    ``core_rank`` dims, no empty batch dim, every core dim non-empty (the first one may be 0 with
    ``rows_may_be_empty``: a dynamic detection count of 0), and the last dim ``last_dim`` when given."""
    name = spec.output.tensors[role]
    value = outputs.get(name)
    if value is None:
        raise frame_error(spec, role, None, expected)
    array = np.asarray(value)
    if array.dtype.kind not in kinds or array.ndim < core_rank:
        raise frame_error(spec, role, array, expected)
    shape = array.shape
    leading, core = shape[: array.ndim - core_rank], shape[array.ndim - core_rank :]
    if 0 in leading or 0 in core[1 if rows_may_be_empty else 0 :]:
        raise frame_error(spec, role, array, expected)
    if last_dim is not None and core_rank and core[-1] != last_dim:
        raise frame_error(spec, role, array, expected)
    return array


def frame_count(spec: ModelSpec, role: str, array: Any, limit: int, rows_role: str,
                as_given: Any = None) -> int:
    """A detection count read from the model (batch item 0): a whole number in [0, ``limit``].

    ``array`` is the count tensor, or a 0-d array of the count already decoded (nms_trt's bits); errors show
    ``as_given`` (the tensor as the model gave it, batch and all) when passed."""
    array = np.asarray(array)
    shown = array if as_given is None else np.asarray(as_given)
    expected = f"a whole detection count in [0, {limit}] (the rows of output.tensors.{rows_role})"
    if array.size == 0 or array.dtype.kind not in "fiu":
        raise frame_error(spec, role, shown, expected)
    value = array.reshape(-1)[0]
    if array.dtype.kind == "f":
        number = float(value)
        if not math.isfinite(number) or number != math.floor(number):
            raise frame_error(spec, role, shown, expected, f"the count is {number!r}; " + FRAME_FIX)
    return checked_count(int(value), limit, spec.output.tensors[role], role)


def checked_count(value: int, limit: int, tensor: str, role: str) -> int:
    """A detection count read from the model must lie in [0, limit]: anything else means a layout mismatch."""
    if not 0 <= value <= limit:
        raise OutputError(
            f"model output {tensor!r} (output.tensors.{role}) says {value} detections but the detection "
            f"tensors hold {limit} rows; the count tensor is not in the layout the output format expects; "
            "fix: check output.format and output.tensors against the model (trt-perception inspect)"
        )
    return value
