"""The TensorRT *runtime* Python API as a test double, per version: ``make_tensorrt_module(version)``.

Each fake module has exactly the runtime calls its TensorRT version has, so code that calls the wrong API
generation fails here as it would on the car. Mirrored from NVIDIA/TensorRT (python/src/infer/pyCore.cpp,
pyFoundationalTypes.cpp, pyPlugin.cpp, python/docstrings/infer/pyCoreDoc.h and
python/packaging/tensorrt/__init__.py) at tags 8.2.1, 8.5.1 and v10.0.0 (10.13.3 and v11.1 checked for what
changed later), call by call:

- ``ILogger`` (subclassable; ``__init__`` must be called, as pybind11 requires; ``log(severity, msg)``;
  ``ILogger.Severity`` INTERNAL_ERROR/ERROR/WARNING/INFO/VERBOSE exported onto ``ILogger``) and ``Logger``
  (``Logger(min_severity=WARNING)``, ``Logger.Severity``, ``Logger.ERROR``...): pyCore.cpp ``bindCore``;
  the Severity copies on Logger come from packaging/tensorrt/__init__.py.
- ``DataType`` (8.2.1: FLOAT HALF INT8 INT32 BOOL; 8.5.1 adds UINT8; v8.6.1 adds FP8; v10.0.0 adds BF16 INT64
  INT4; v10.8.0 FP4; v10.12.0 E8M0) and the module-level ``float32``/``float16``/... aliases:
  pyFoundationalTypes.cpp ``py::enum_<DataType>``. Members carry the C++ values, not their list position:
  FLOAT 0, HALF 1, INT8 2, INT32 3, BOOL 4, UINT8 5, FP8 6, BF16 7, INT64 8, INT4 9, FP4 10, E8M0 11
  (include/NvInferRuntimeCommon.h @8.2.1 l.120-132, @8.5.1 l.119-145; include/NvInferRuntimeBase.h @v8.6.1
  l.122-153, @v10.0.0 l.131-170, @v11.1 l.151-197).
- ``nptype``, ``volume``: packaging/tensorrt/__init__.py. ``nptype`` builds its table with ``np.bool`` up to
  8.5.2 (@8.2.1 l.165, @8.4.3 l.166, @8.5.1 l.166, @8.5.2 l.166; ``np.bool_`` from @8.5.3 l.166), so on numpy
  1.24-1.26, which removed ``np.bool``, every call raises AttributeError there.
- ``init_libnvinfer_plugins(logger, namespace)`` -> bool: pyPlugin.cpp (all three tags).
- ``Runtime(logger)``, ``Runtime.deserialize_cuda_engine(serialized_engine)`` (None on failure, errors go to
  the logger), ``DLA_core``, ``num_DLA_cores``, ``logger``: pyCore.cpp ``py::class_<IRuntime>``.
  ``engine_host_code_allowed`` (default False) from v8.6.1 (pyCore.cpp @v8.6.1 l.1297, @v10.0.0 l.1524; absent
  at 8.5.3): a version-compatible plan that embeds the lean runtime deserializes only when it is True
  (include/NvInferRuntime.h @v8.6.1 l.927-936; trtexec sets it for --versionCompatible, sampleEngines.cpp
  @v8.6.1 l.121-125). The error TensorRT logs then is not quoted in any source found: the double's wording is
  its own.
- ``TensorIOMode`` NONE/INPUT/OUTPUT: pyCore.cpp at 8.5.1 and v10.0.0 (absent at 8.2.1).
- ``ICudaEngine``: pyCore.cpp ``py::class_<ICudaEngine>``.
  Binding API (8.2.1; deprecated at 8.5.1 via utils::deprecate -> DeprecationWarning "Use X instead.";
  removed at v10.0.0): ``num_bindings``, ``__len__``, ``get_binding_name(index)``,
  ``get_binding_index(name)``, ``binding_is_input(index|name)``, ``get_binding_shape(index|name)``,
  ``get_binding_dtype(index|name)``, ``max_batch_size`` (deprecated at 8.5.1), ``get_profile_shape
  (profile_index, binding)`` (deprecated at 8.5.1; at v10.0.0 still there, deprecated, l.1183-1186; gone from
  v10.0.1 on, so absent from every 10.x double but "10.0.0"), ``is_shape_binding(binding)``.
  ``has_implicit_batch_dimension``: plain at 8.2.1/8.5.1, deprecated (always False) at v10.0.0, removed at v11.1.
  Tensor API (8.5.1 and v10.0.0): ``num_io_tensors``, ``get_tensor_name(index)``, ``get_tensor_mode(name)``,
  ``get_tensor_shape(name)``, ``get_tensor_dtype(name)``, ``get_tensor_profile_shape(name, profile_index)``,
  ``is_shape_inference_io(name)``. All versions: ``create_execution_context()``,
  ``num_optimization_profiles``, ``num_layers``, ``name``, ``device_memory_size``, ``serialize()``.
- ``IExecutionContext``: pyCore.cpp ``py::class_<IExecutionContext>``.
  Binding API: ``execute(batch_size=1, bindings)`` and ``execute_async(batch_size=1, bindings,
  stream_handle, input_consumed=None)`` (implicit batch; ``bindings`` and ``stream_handle`` have NO default:
  pyCore.cpp @8.2.1 l.596-597; deprecated at 8.5.1, removed at v10.0.0),
  ``execute_async_v2(bindings, stream_handle, input_consumed=None)`` (explicit batch; removed at v10.0.0),
  ``set_binding_shape(binding, shape)``, ``get_binding_shape(binding)`` (deprecated at 8.5.1, removed at
  v10.0.0). All versions: ``execute_v2(bindings)``, ``all_binding_shapes_specified``, ``engine``, ``name``.
  Tensor API (8.5.1, v10.0.0): ``set_input_shape(name, shape)``, ``get_tensor_shape(name)``,
  ``set_tensor_address(name, memory)``, ``get_tensor_address(name)``, ``execute_async_v3(stream_handle)``,
  ``infer_shapes()``.

Behaviour, besides the signatures: engines are *fake plans* made by ``make_plan``: a 32-byte header, then a
JSON description. The header follows what is known per version:

- 9.1 and later (trtexec ``printPlanVersion``, samples/common/sampleEngines.cpp @v9.1.0 l.1352-1373, @v10.0.0
  l.1388-1424, unchanged at v11.1): magic "ftrt" (kPLAN_FILE_TAG 0x74727466), bytes 4-7 zero, TensorRT
  major/minor/patch/build at bytes 24-27;
- 8.x: magic "ftrt", then the serialization tag as a little-endian uint32 at bytes 8-11 (NVIDIA/TensorRT#3073:
  the "Serialize Version" is "in the 9th byte"; 205 for 8.2.1.8, 213 for 8.4.3.1, 232 for 8.5.3.1). Nothing
  shows what else 8.x keeps in the first 28 bytes: the double leaves bytes 4-7 at 0 (the case where NVIDIA's
  own bytes-4-7 check would not stop a reader) and the rest 0 unless a test writes ``header_bytes`` there.

The description, not the header, holds the double's truth (version, tag, compute capability, plugins,
version compatibility), so a reader that trusts the wrong bytes is caught. Deserializing checks what real
TensorRT checks and logs the errors it logs (texts from NVIDIA/TensorRT issues and user logs):

- magic: "Magic tag does not match";
- another minor (another serialization tag): 8.x "stdVersionRead == serializationVersion failed.Version tag does
  not match. Note: Current Version: 213, Serialized Engine Version: 205" then "Engine deserialization failed."
  (#2041, #2072, D2SLAM#52); 10.x "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization
  assertion stdVersionRead == kSERIALIZATION_VERSION failed.Version tag does not match. Note: Current Version:
  240, Serialized Engine Version: 239)" (user logs of 10.9/10.11). Tags not known for a version (8.0, 8.6, 9.x,
  10.x) are invented by the double as 1000 + 100 * major + minor, which no real tag is;
- same minor, another patch: "The engine plan file is not compatible with this version of TensorRT, expecting
  library version 8.2.3 got 8.2.1, please rebuild." (InsightFace-REST#84 at 8.2, AI-Aimbot#109 at 8.5);
- version-compatible plans (``version_compatible=True``, built 8.6+) load on later runtimes of the same major
  and 8 -> 9/10, 10 -> 11 (TensorRT docs, Version Compatibility), and with an embedded lean runtime only when
  ``Runtime.engine_host_code_allowed`` is True;
- GPU ("expecting compute X got compute Y"), plugins (8.0-8.4 name the plugin: "getPluginCreator could not
  find plugin: NAME version: 1"; 8.5+ do not).

Built-in plugins exist only after ``init_libnvinfer_plugins``; others only after their library was loaded
through ``PluginLibraries.cdll`` (install it as ``ctypes.CDLL``). Execution reads the input device buffers of
the shared ``FakeGpu`` (``fakes.cuda_fake``), runs a named numpy *program* and writes the outputs, queued on the
given stream like a real kernel (so results appear at stream synchronize). Implicit-batch engines refuse
``execute_async_v2`` and ``execute_async_v3``; explicit-batch engines refuse ``execute_async``, as the docs above
say.

Fake-only names live under ``module._fake`` (gpu, plugin registry, events) so they never shadow real ones.
"""

from __future__ import annotations

import enum
import json
import threading
import types
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from fakes.cuda_fake import FakeGpu

PLAN_MAGIC = b"ftrt"
# Error texts as TensorRT logs them (quoted in NVIDIA/TensorRT issues #1384, #2915, #3073, #2675; 10.x wording
# from the "expecting library version" reports)
DESERIALIZE_FAILED = (
    "4: [runtime.cpp::deserializeCudaEngine::50] Error Code 4: Internal Error "
    "(Engine deserialization failed.)"
)
MAGIC_MISMATCH = (
    "1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: Serialization (Serialization assertion "
    "magicTagRead == kMAGIC_TAG failed.Magic tag does not match)"
)
VERSION_MISMATCH_8 = (
    "1: [stdArchiveReader.cpp::StdArchiveReader::40] Error Code 1: Serialization (Serialization assertion "
    "stdVersionRead == serializationVersion failed.Version tag does not match. Note: Current Version: "
    "{current}, Serialized Engine Version: {serialized})"
)
VERSION_MISMATCH_10 = (
    "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization assertion stdVersionRead == "
    "kSERIALIZATION_VERSION failed.Version tag does not match. Note: Current Version: {current}, Serialized "
    "Engine Version: {serialized})"
)
LIBRARY_MISMATCH = (
    "6: The engine plan file is not compatible with this version of TensorRT, expecting library version "
    "{here} got {built}, please rebuild."
)
HOST_CODE_NOT_ALLOWED = (  # the double's own wording (see the module docstring)
    "1: [runtime.cpp::deserializeCudaEngine] Error Code 1: Serialization (the plan embeds host code (a lean "
    "runtime) and IRuntime::setEngineHostCodeAllowed(true) was not called)"
)
# NVIDIA/TensorRT#3073 (8.2.1.8: 205, 8.4.3.1: 213, 8.5.3.1: 232); others are invented (see module docstring).
SERIALIZATION_TAGS = {(8, 2): 205, (8, 4): 213, (8, 5): 232}
HEADER_LAYOUT_FROM = (9, 1)  # the first version whose trtexec reads the version at bytes 24-27
DEVICE_MISMATCH = (
    "6: The engine plan file is generated on an incompatible device, expecting compute {built} got compute "
    "{here}, please rebuild."
)
PLUGIN_NOT_FOUND = (
    "1: [pluginV2Runner.cpp::load::300] Error Code 1: Serialization (Serialization assertion creator "
    "failed.Cannot deserialize plugin since corresponding IPluginCreator not found in Plugin Registry)"
)
PLAN_HEADER_SIZE = 32
BUILTIN_PLUGINS = (
    "NMS_TRT", "GridAnchor_TRT", "GridAnchorRect_TRT", "FlattenConcat_TRT", "BatchedNMS_TRT",
    "BatchedNMSDynamic_TRT", "EfficientNMS_TRT", "EfficientNMS_ONNX_TRT",
)  # fmt: skip
NUMPY_OF = {
    "FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_,
    "UINT8": np.uint8, "INT64": np.int64,
}  # fmt: skip
# C++ values of nvinfer1::DataType (see the module docstring), whatever the order Python registers them in.
DATATYPE_VALUES = {
    "FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5, "FP8": 6, "BF16": 7, "INT64": 8,
    "INT4": 9, "FP4": 10, "E8M0": 11,
}  # fmt: skip

Program = Callable[[Dict[str, np.ndarray], Dict[str, Tuple[Tuple[int, ...], np.dtype]], Mapping[str, Any]],
                   Dict[str, np.ndarray]]  # fmt: skip
PROGRAMS: Dict[str, Program] = {}


def register_program(name: str) -> Callable[[Program], Program]:
    """Register a numpy function a fake plan can name as what its engine computes."""

    def wrap(function: Program) -> Program:
        PROGRAMS[name] = function
        return function

    return wrap


@register_program("affine")
def _affine(
    inputs: Dict[str, np.ndarray], outputs: Dict[str, Any], params: Mapping[str, Any]
) -> Dict[str, Any]:
    """Every output = first input * scale + offset, reshaped to the output shape (sizes must agree)."""
    first = next(iter(inputs.values())).astype(np.float64)
    value = first * float(params.get("scale", 1.0)) + float(params.get("offset", 0.0))
    return {name: value.reshape(shape).astype(dtype) for name, (shape, dtype) in outputs.items()}


@register_program("mean")
def _mean(
    inputs: Dict[str, np.ndarray], outputs: Dict[str, Any], params: Mapping[str, Any]
) -> Dict[str, Any]:
    """Every output is filled with the per-batch-item mean of the first input."""
    first = next(iter(inputs.values())).astype(np.float64)
    means = first.reshape(first.shape[0], -1).mean(axis=1)
    result = {}
    for name, (shape, dtype) in outputs.items():
        result[name] = np.broadcast_to(means.reshape((-1,) + (1,) * (len(shape) - 1)), shape).astype(dtype)
    return result


@register_program("nms_trt")
def _nms_trt(
    inputs: Dict[str, np.ndarray], outputs: Dict[str, Any], params: Mapping[str, Any]
) -> Dict[str, Any]:
    """NMS_TRT plugin outputs: NMS (B, K, 7) rows [image, label, conf, x1, y1, x2, y2], unused rows label -1;
    NMS_1 (B, 1, 1) = kept count as int32 bits in a float32 tensor (TensorRT plugin/nmsPlugin at 8.6.1)."""
    rows = np.asarray(params.get("detections", []), dtype=np.float32).reshape(-1, 6)
    shape = outputs["NMS"][0]
    batch, keep = shape[0], shape[-2]
    nms = np.zeros(shape, np.float32).reshape(batch, keep, 7)
    nms[:, :, 1] = -1.0
    for b in range(batch):
        nms[b, : len(rows), 0] = b
        nms[b, : len(rows), 1:] = rows[:keep]
    count = np.full((batch, 1, 1), len(rows), np.int32).view(np.float32)
    return {"NMS": nms.reshape(shape), "NMS_1": count.reshape(outputs["NMS_1"][0])}


def make_plan(
    tensors: Sequence[Mapping[str, Any]],
    *,
    tensorrt_version: str = "10.0.1",
    compute_capability: Tuple[int, int] = (8, 7),
    implicit_batch: bool = False,
    max_batch_size: int = 1,
    plugins: Sequence[str] = (),
    program: str = "affine",
    params: Optional[Mapping[str, Any]] = None,
    profiles: Optional[Mapping[str, Sequence[Sequence[int]]]] = None,
    magic: bytes = PLAN_MAGIC,
    version_compatible: bool = False,
    lean_runtime: Optional[bool] = None,
    header_bytes: Optional[Mapping[int, int]] = None,
) -> bytes:
    """A fake serialized engine. ``tensors``: dicts with name, mode ('input'/'output'), shape (-1 = dynamic;
    implicit-batch shapes exclude the batch dimension), dtype (DataType member name, default FLOAT).
    Dynamic output dims take the value of the same dim of the first input. ``profiles``: input name ->
    [min, opt, max] shapes of optimization profile 0. The header has the layout of ``tensorrt_version`` (see
    the module docstring); ``header_bytes`` (offset -> byte) then overwrites header bytes a test wants to
    control, such as whatever an 8.x plan holds at 24-27. ``version_compatible``: built with
    VERSION_COMPATIBLE; ``lean_runtime`` (default: the same): the lean runtime is embedded (not excluded with
    EXCLUDE_LEAN_RUNTIME)."""
    version = _version(tensorrt_version)
    header = bytearray(PLAN_HEADER_SIZE)
    header[: len(magic)] = magic
    if version[:2] >= HEADER_LAYOUT_FROM:
        header[24:28] = bytes([version[0], version[1], version[2], _build_number(tensorrt_version)])
    else:
        header[8:12] = serialization_tag(version).to_bytes(4, "little")
    for offset, value in (header_bytes or {}).items():
        header[int(offset)] = int(value)
    description = {
        "tensors": [
            {
                "name": t["name"],
                "mode": t["mode"],
                "shape": list(t["shape"]),
                "dtype": t.get("dtype", "FLOAT"),
            }
            for t in tensors
        ],
        "tensorrt_version": list(version),
        "compute_capability": list(compute_capability),
        "implicit_batch": implicit_batch,
        "max_batch_size": max_batch_size,
        "plugins": list(plugins),
        "program": program,
        "params": dict(params or {}),
        "profiles": {k: [list(s) for s in v] for k, v in (profiles or {}).items()},
        "version_compatible": bool(version_compatible),
        "lean_runtime": bool(version_compatible if lean_runtime is None else lean_runtime),
    }
    return bytes(header) + json.dumps(description).encode()


def serialization_tag(version: Sequence[int]) -> int:
    """The serialization tag of a TensorRT version: known ones from #3073, else an invented 1000+ number."""
    return SERIALIZATION_TAGS.get((version[0], version[1]), 1000 + 100 * version[0] + version[1])


def _build_number(version: str) -> int:
    parts = str(version).split(".")
    return int(parts[3]) % 256 if len(parts) > 3 and parts[3].isdigit() else 0


def _runs_version_compatible(built: Sequence[int], here: Sequence[int]) -> bool:
    """TensorRT docs, Version Compatibility: built 8.6+, forward within a major, 8 -> 9/10 and 10 -> 11."""
    built2, here2 = tuple(built[:2]), tuple(here[:2])
    if built2 < (8, 6) or built2 > here2:
        return False
    return built2[0] == here2[0] or (built2[0], here2[0]) in {(8, 9), (8, 10), (10, 11)}


# ---------------------------------------------------------------------------------------------- helpers


def _version(version: str) -> Tuple[int, int, int]:
    parts = [int(p) for p in str(version).split(".")[:3]]
    parts += [0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def _deprecated(function: Callable[..., Any], use_instead: str) -> Callable[..., Any]:
    """python/include/utils.h deprecate(): a DeprecationWarning "Use X instead." on every call."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(f"Use {use_instead} instead.", DeprecationWarning, stacklevel=2)
        return function(*args, **kwargs)

    wrapper.__name__ = getattr(function, "__name__", "deprecated")
    return wrapper


def _deprecated_property(function: Callable[[Any], Any], use_instead: str) -> property:
    return property(_deprecated(function, use_instead))


class _PybindEnum(enum.IntEnum):
    """An IntEnum that prints as pybind11 enums do ("DataType.FLOAT"), whatever Python's IntEnum does (3.11
    prints IntEnum members as their number)."""

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


_REQUIRED = object()  # a pybind11 argument declared without a default ("bindings"_a, "stream_handle"_a)


def _require(call: str, **arguments: Any) -> None:
    """pybind11's refusal of a call that leaves out an argument that has no default."""
    missing = [name for name, value in arguments.items() if value is _REQUIRED]
    if missing:
        raise TypeError(f"{call}(): incompatible function arguments: {', '.join(missing)} not given (no default)")


class Dims:
    """trt.Dims: iterable, indexable, ``len()``; not a tuple (code must convert it)."""

    def __init__(self, values: Sequence[int]) -> None:
        self._values = tuple(int(v) for v in values)

    def __iter__(self) -> Any:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index: int) -> int:
        return self._values[index]

    def __repr__(self) -> str:
        return f"Dims({list(self._values)})"


class FakeState:
    """Fake-only state of one module: the GPU, registered plugins, how to log."""

    def __init__(self, version: str, gpu: FakeGpu) -> None:
        self.version = version
        self.version_tuple = _version(version)
        self.gpu = gpu
        self.plugins: Dict[str, str] = {}  # plugin name -> where it came from
        self.logger: Any = None  # the logger of the last Runtime: execution errors go there
        self.lock = threading.Lock()


def _log(logger: Any, severity: Any, message: str) -> None:
    logger.log(severity, message)


# ----------------------------------------------------------------------------------------------- module


def make_tensorrt_module(version: str, gpu: Optional[FakeGpu] = None) -> types.ModuleType:
    """A fake ``tensorrt`` module of ``version`` ('8.2.1', '8.5.3', '8.6.1', '10.0.1', '11.1' ...)."""
    major, minor, _patch = _version(version)
    binding_api = (major, minor) < (10, 0)
    tensor_api = (major, minor) >= (8, 5)
    binding_deprecated = binding_api and tensor_api  # 8.5, 8.6 (and 9.x)
    implicit_property = major < 11
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    fake = FakeState(version, gpu or FakeGpu())
    module._fake = fake  # type: ignore[attr-defined]

    # ---- logging (pyCore.cpp bindCore)
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            self._trt_initialized = True

        def log(self, severity: Any, msg: str) -> None:
            raise RuntimeError('Tried to call pure virtual function "ILogger::log"')

    ILogger.Severity = Severity  # type: ignore[attr-defined]
    for member in Severity:  # .export_values(): trt.ILogger.ERROR ...
        setattr(ILogger, member.name, member)

    class Logger(ILogger):
        def __init__(self, min_severity: Any = Severity.WARNING) -> None:
            super().__init__()
            self.min_severity = min_severity

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(self.min_severity):
                print(f"[TRT] {Severity(int(severity)).name[0]} {msg}")

    def _check_logger(logger: Any, what: str) -> None:
        if not isinstance(logger, ILogger):
            raise TypeError(f"{what}(): incompatible function arguments: logger must be a tensorrt.ILogger")
        if not getattr(logger, "_trt_initialized", False):
            raise TypeError(f"{type(logger).__name__}.__init__() must be called when overriding __init__")

    module.ILogger = ILogger
    module.Logger = Logger

    # ---- data types (pyFoundationalTypes.cpp; registration order, C++ values from DATATYPE_VALUES)
    names = ["FLOAT", "HALF", "INT8", "INT32", "BOOL"]
    if (major, minor) >= (8, 5):
        names.append("UINT8")
    if (major, minor) >= (8, 6):
        names.append("FP8")
    if major >= 10:
        names = ["FLOAT", "HALF", "BF16", "INT8", "INT32", "INT64", "BOOL", "UINT8", "FP8", "INT4"]
        names += (["FP4"] if (major, minor) >= (10, 8) else []) + (["E8M0"] if (major, minor) >= (10, 12) else [])
    DataType = _PybindEnum("DataType", [(n, DATATYPE_VALUES[n]) for n in names])
    module.DataType = DataType
    aliases = {
        "FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "BOOL": "bool",
        "UINT8": "uint8", "BF16": "bfloat16", "INT64": "int64", "FP8": "fp8", "INT4": "int4", "FP4": "fp4",
        "E8M0": "e8m0",
    }  # fmt: skip
    for name in names:
        setattr(module, aliases[name], DataType[name])
    nptype_uses_np_bool = _version(version) < (8, 5, 3)  # packaging/tensorrt/__init__.py up to 8.5.2

    def nptype(trt_type: Any) -> Any:
        if nptype_uses_np_bool and not hasattr(np, "bool"):  # the table is built on every call, np.bool first
            raise AttributeError("module 'numpy' has no attribute 'bool'")
        mapping = {DataType[n]: NUMPY_OF[n] for n in names if n in NUMPY_OF}
        if trt_type in mapping:
            return mapping[trt_type]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    def volume(iterable: Any) -> int:
        vol = 1
        for elem in iterable:
            vol *= elem
        return vol

    module.nptype = nptype
    module.volume = volume
    module.Dims = Dims
    if tensor_api:
        module.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})

    # ---- plugins (pyPlugin.cpp)
    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        _check_logger(logger, "init_libnvinfer_plugins")
        for plugin in BUILTIN_PLUGINS:
            fake.plugins.setdefault(plugin, "libnvinfer_plugin")
            _log(logger, Severity.VERBOSE, f"Registered plugin creator - ::{plugin} version 1")
        fake.gpu.record("init_libnvinfer_plugins", namespace=namespace)
        return True

    module.init_libnvinfer_plugins = init_libnvinfer_plugins

    class _PluginRegistry:
        @property
        def plugin_creator_list(self) -> List[str]:
            return sorted(fake.plugins)

    registry = _PluginRegistry()
    module.get_plugin_registry = lambda: registry

    class IHostMemory(bytes):
        """Serialized data with the buffer protocol (pyFoundationalTypes.cpp), ``nbytes``."""

        @property
        def nbytes(self) -> int:
            return len(self)

    module.IHostMemory = IHostMemory

    # ---- engine and context
    class _Tensor:
        def __init__(self, index: int, spec: Mapping[str, Any]) -> None:
            self.index = index
            self.name = str(spec["name"])
            self.is_input = spec["mode"] == "input"
            self.shape = tuple(int(d) for d in spec["shape"])
            self.dtype_name = str(spec.get("dtype", "FLOAT"))
            if self.dtype_name not in names:
                raise ValueError(
                    f"fake plan tensor {self.name}: DataType {self.dtype_name} is not in TensorRT {version}"
                )

    class ICudaEngine:
        def __init__(self, plan: bytes, description: Mapping[str, Any]) -> None:
            self._plan = plan
            self._desc = description
            self._tensors = [_Tensor(i, t) for i, t in enumerate(description["tensors"])]
            self._by_name = {t.name: t for t in self._tensors}
            self._implicit = bool(description["implicit_batch"])
            self._max_batch = int(description["max_batch_size"])
            self._profiles = {k: [tuple(s) for s in v] for k, v in description.get("profiles", {}).items()}

        def _tensor(self, key: Any) -> _Tensor:
            if isinstance(key, str):
                if key not in self._by_name:
                    raise KeyError(key)
                return self._by_name[key]
            return self._tensors[int(key)]

        # all versions
        num_layers = property(lambda self: 1)
        name = property(lambda self: "fake_engine")
        device_memory_size = property(lambda self: 0)
        num_optimization_profiles = property(lambda self: 1)

        def serialize(self) -> IHostMemory:
            return IHostMemory(self._plan)

        def create_execution_context(self) -> IExecutionContext:
            fake.gpu.record("create_execution_context")
            return IExecutionContext(self)

        # binding API (8.x)
        def _num_bindings(self) -> int:
            return len(self._tensors)

        def _get_binding_name(self, index: int) -> str:
            return self._tensors[index].name

        def _get_binding_index(self, name: str) -> int:
            return self._by_name[name].index if name in self._by_name else -1

        def _binding_is_input(self, key: Any) -> bool:
            return self._tensor(key).is_input

        def _get_binding_shape(self, key: Any) -> Dims:
            return Dims(self._tensor(key).shape)

        def _get_binding_dtype(self, key: Any) -> Any:
            return DataType[self._tensor(key).dtype_name]

        def _max_batch_size(self) -> int:
            return self._max_batch if self._implicit else 1

        def _has_implicit_batch(self) -> bool:
            return self._implicit

        def _get_profile_shape(self, profile_index: int, binding: Any) -> List[Dims]:
            tensor = self._tensor(binding)
            shapes = self._profiles.get(tensor.name)
            if profile_index != 0 or not tensor.is_input:
                raise RuntimeError("get_profile_shape: invalid profile or binding")
            return [Dims(s) for s in shapes] if shapes else [Dims(tensor.shape)] * 3

        def _is_shape_binding(self, binding: Any) -> bool:
            return False

        # tensor API (8.5+)
        def _num_io_tensors(self) -> int:
            return len(self._tensors)

        def _get_tensor_name(self, index: int) -> str:
            return self._tensors[index].name

        def _get_tensor_mode(self, name: str) -> Any:
            if name not in self._by_name:
                return module.TensorIOMode.NONE
            return module.TensorIOMode.INPUT if self._by_name[name].is_input else module.TensorIOMode.OUTPUT

        def _get_tensor_shape(self, name: str) -> Dims:
            return Dims(self._by_name[name].shape) if name in self._by_name else Dims([])

        def _get_tensor_dtype(self, name: str) -> Any:
            return DataType[self._by_name[name].dtype_name]

        def _get_tensor_profile_shape(self, name: str, profile_index: int) -> List[Dims]:
            return self._get_profile_shape(profile_index, name)

        def _is_shape_inference_io(self, name: str) -> bool:
            return False

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self.name = ""
            self._shapes: Dict[str, Tuple[int, ...]] = {
                t.name: t.shape for t in engine._tensors if t.is_input and all(d >= 0 for d in t.shape)
            }
            self._addresses: Dict[str, int] = {}

        # shapes
        def _input_shape_error(self, tensor: _Tensor, shape: Tuple[int, ...]) -> Optional[str]:
            if len(shape) != len(tensor.shape) or any(e >= 0 and e != s for e, s in zip(tensor.shape, shape)):
                return "Static dimension mismatch while setting input shape."
            profile = self.engine._profiles.get(tensor.name)
            if profile is not None and any(
                not lo <= s <= hi for lo, s, hi in zip(profile[0], shape, profile[2])
            ):
                return f"Supplied dimensions {list(shape)} are out of the optimization profile range"
            return None

        def _set_shape(self, tensor: _Tensor, shape: Any, call: str) -> bool:
            shape = tuple(int(d) for d in shape)
            if not tensor.is_input:
                self._error(3, call, f"Tensor {tensor.name} is not an input")
                return False
            problem = self._input_shape_error(tensor, shape)
            if problem is not None:
                self._error(3, call, problem)
                return False
            self._shapes[tensor.name] = shape
            return True

        def _resolved_shape(self, tensor: _Tensor) -> Tuple[int, ...]:
            if tensor.is_input:
                return self._shapes.get(tensor.name, tensor.shape)
            inputs = [t for t in self.engine._tensors if t.is_input]
            first = self._shapes.get(inputs[0].name) if inputs else None
            if any(t.name not in self._shapes for t in inputs):
                return tensor.shape
            return tuple(
                (first[i] if first is not None and i < len(first) else -1) if d < 0 else d
                for i, d in enumerate(tensor.shape)
            )

        def _all_specified(self) -> bool:
            return all(t.name in self._shapes for t in self.engine._tensors if t.is_input)

        all_binding_shapes_specified = property(_all_specified)

        def _error(self, code: int, call: str, text: str) -> None:
            logger = fake.logger
            if logger is not None:
                _log(
                    logger,
                    Severity.ERROR,
                    f"{code}: [executionContext.cpp::{call}] Error Code {code}: "
                    f"API Usage Error (Parameter check failed at: executionContext.cpp::{call}: {text})",
                )

        # execution
        def _run(self, pointers: Dict[str, int], batch: Optional[int], stream_handle: Any, call: str) -> bool:
            if not isinstance(stream_handle, int):
                raise TypeError(f"{call}(): incompatible function arguments: stream_handle must be an int")
            engine = self.engine
            shapes: Dict[str, Tuple[int, ...]] = {}
            for tensor in engine._tensors:
                shape = self._resolved_shape(tensor)
                if engine._implicit:
                    shape = (int(batch or 1), *shape)
                if any(d < 0 for d in shape):
                    self._error(3, call, f"input shape of {tensor.name} is not specified (set it first)")
                    return False
                pointer = pointers.get(tensor.name, 0)
                if not pointer:
                    self._error(
                        3, call, f"Address is not set for tensor {tensor.name}. Call setTensorAddress"
                    )
                    return False
                shapes[tensor.name] = shape
            stream = fake.gpu.stream(stream_handle)
            fake.gpu.record("execute", call=call, batch=batch, stream=stream_handle)
            program = PROGRAMS[engine._desc["program"]]
            params = engine._desc["params"]

            def run() -> None:
                inputs = {}
                outputs = {}
                for tensor in engine._tensors:
                    dtype = np.dtype(NUMPY_OF[tensor.dtype_name])
                    shape = shapes[tensor.name]
                    if tensor.is_input:
                        nbytes = int(np.prod(shape)) * dtype.itemsize
                        raw = bytes(fake.gpu.view(pointers[tensor.name], nbytes))
                        inputs[tensor.name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
                    else:
                        outputs[tensor.name] = (shape, dtype)
                results = program(inputs, outputs, params)
                for name, (shape, dtype) in outputs.items():
                    data = np.ascontiguousarray(results[name], dtype=dtype).reshape(shape)
                    fake.gpu.view(pointers[name], data.nbytes)[:] = data.reshape(-1).view(np.uint8)

            stream.enqueue(run)
            return True

        def _bindings_map(self, bindings: Sequence[int]) -> Dict[str, int]:
            return {t.name: int(bindings[t.index]) for t in self.engine._tensors if t.index < len(bindings)}

        def execute_v2(self, bindings: Sequence[int]) -> bool:
            handle = fake.gpu.new_stream().handle
            ok = self._run(self._bindings_map(bindings), None, handle, "executeV2")
            fake.gpu.destroy_stream(handle)
            return ok

        def _execute_async(self, batch_size: int = 1, bindings: Any = _REQUIRED, stream_handle: Any = _REQUIRED,
                           input_consumed: Any = None) -> bool:  # fmt: skip
            _require("execute_async", bindings=bindings, stream_handle=stream_handle)
            if not self.engine._implicit:
                self._error(3, "enqueue", "condition: mEngine.hasImplicitBatchDimension() "
                            "(use execute_async_v2 / enqueueV2 for explicit-batch engines)")  # fmt: skip
                return False
            if not 1 <= int(batch_size) <= self.engine._max_batch:
                self._error(3, "enqueue", f"batchSize {batch_size} outside [1, {self.engine._max_batch}]")
                return False
            return self._run(self._bindings_map(bindings), int(batch_size), stream_handle, "enqueue")

        def _execute(self, batch_size: int = 1, bindings: Any = _REQUIRED) -> bool:
            _require("execute", bindings=bindings)
            handle = fake.gpu.new_stream().handle
            ok = self._execute_async(batch_size, bindings, handle)
            fake.gpu.destroy_stream(handle)
            return ok

        def _execute_async_v2(
            self, bindings: Sequence[int], stream_handle: Any, input_consumed: Any = None
        ) -> bool:
            if self.engine._implicit:
                self._error(3, "enqueueV2", "condition: !mEngine.hasImplicitBatchDimension()")
                return False
            return self._run(self._bindings_map(bindings), None, stream_handle, "enqueueV2")

        def _set_binding_shape(self, binding: int, shape: Any) -> bool:
            if self.engine._implicit:
                self._error(3, "setBindingDimensions", "requires an engine built without implicit batch")
                return False
            return self._set_shape(self.engine._tensor(binding), shape, "setBindingDimensions")

        def _get_binding_shape(self, binding: int) -> Dims:
            return Dims(self._resolved_shape(self.engine._tensor(binding)))

        def _set_input_shape(self, name: str, shape: Any) -> bool:
            if name not in self.engine._by_name:
                self._error(3, "setInputShape", f"no tensor named {name}")
                return False
            return self._set_shape(self.engine._by_name[name], shape, "setInputShape")

        def _get_tensor_shape(self, name: str) -> Dims:
            return Dims(self._resolved_shape(self.engine._by_name[name]))

        def _set_tensor_address(self, name: str, memory: int) -> bool:
            if name not in self.engine._by_name:
                self._error(3, "setTensorAddress", f"no tensor named {name}")
                return False
            self._addresses[name] = int(memory)
            return True

        def _get_tensor_address(self, name: str) -> int:
            return self._addresses.get(name, 0)

        def _infer_shapes(self) -> List[str]:
            return [t.name for t in self.engine._tensors if t.is_input and t.name not in self._shapes]

        def _execute_async_v3(self, stream_handle: Any) -> bool:
            if self.engine._implicit:
                self._error(3, "enqueueV3", "implicit-batch engines are not supported by enqueueV3")
                return False
            return self._run(dict(self._addresses), None, stream_handle, "enqueueV3")

    # attach exactly the calls this version has
    engine_binding = {
        "num_bindings": property(ICudaEngine._num_bindings),
        "__len__": ICudaEngine._num_bindings,
        "get_binding_name": (ICudaEngine._get_binding_name, "get_tensor_name"),
        "get_binding_index": (ICudaEngine._get_binding_index, "get_tensor_name"),
        "binding_is_input": (ICudaEngine._binding_is_input, "get_tensor_mode"),
        "get_binding_shape": (ICudaEngine._get_binding_shape, "get_tensor_shape"),
        "get_binding_dtype": (ICudaEngine._get_binding_dtype, "get_tensor_dtype"),
        "get_profile_shape": (ICudaEngine._get_profile_shape, "get_tensor_profile_shape"),
        "is_shape_binding": (ICudaEngine._is_shape_binding, "get_tensor_location"),
    }
    context_binding = {
        "execute": (IExecutionContext._execute, "execute_v2"),
        "execute_async": (IExecutionContext._execute_async, "execute_async_v2"),
        "execute_async_v2": IExecutionContext._execute_async_v2,
        "set_binding_shape": (IExecutionContext._set_binding_shape, "set_input_shape"),
        "get_binding_shape": (IExecutionContext._get_binding_shape, "get_tensor_shape"),
    }
    if binding_api:
        for table, cls in ((engine_binding, ICudaEngine), (context_binding, IExecutionContext)):
            for attribute, value in table.items():
                if isinstance(value, tuple):
                    function, instead = value
                    value = _deprecated(function, instead) if binding_deprecated else function
                setattr(cls, attribute, value)
        max_batch = ICudaEngine._max_batch_size
        ICudaEngine.max_batch_size = (
            _deprecated_property(
                max_batch, "network created with NetworkDefinitionCreationFlag::EXPLICIT_BATCH flag"
            )
            if binding_deprecated
            else property(max_batch)
        )
    if implicit_property:
        ICudaEngine.has_implicit_batch_dimension = (
            property(ICudaEngine._has_implicit_batch)
            if binding_api
            else _deprecated_property(
                ICudaEngine._has_implicit_batch, "Implicit batch dimensions support has been removed"
            )
        )
    if _version(version) == (10, 0, 0):  # v10.0.0 keeps a deprecated get_profile_shape; v10.0.1 drops it
        ICudaEngine.get_profile_shape = _deprecated(
            ICudaEngine._get_profile_shape, "get_tensor_profile_shape"
        )
    if tensor_api:
        ICudaEngine.num_io_tensors = property(ICudaEngine._num_io_tensors)
        for attribute in ("get_tensor_name", "get_tensor_mode", "get_tensor_shape", "get_tensor_dtype",
                          "get_tensor_profile_shape", "is_shape_inference_io"):  # fmt: skip
            setattr(ICudaEngine, attribute, getattr(ICudaEngine, "_" + attribute))
        for attribute in ("set_input_shape", "get_tensor_shape", "set_tensor_address", "get_tensor_address",
                          "execute_async_v3", "infer_shapes"):  # fmt: skip
            setattr(IExecutionContext, attribute, getattr(IExecutionContext, "_" + attribute))
    module.ICudaEngine = ICudaEngine
    module.IExecutionContext = IExecutionContext

    # ---- runtime
    class Runtime:
        def __init__(self, logger: Any) -> None:
            _check_logger(logger, "Runtime")
            self.logger = logger
            self.DLA_core = -1
            self.num_DLA_cores = 0
            self._host_code_allowed = False
            fake.logger = logger

        def deserialize_cuda_engine(self, serialized_engine: Any) -> Optional[ICudaEngine]:
            plan = bytes(serialized_engine)
            fake.gpu.record("deserialize", nbytes=len(plan))
            error = self._check(plan)
            if error is not None:
                for line in error:
                    _log(self.logger, Severity.ERROR, line)
                return None
            return ICudaEngine(plan, json.loads(plan[PLAN_HEADER_SIZE:].decode()))

        def _check(self, plan: bytes) -> Optional[List[str]]:
            failed = DESERIALIZE_FAILED
            if not plan.startswith(PLAN_MAGIC) or len(plan) < PLAN_HEADER_SIZE:
                return [MAGIC_MISMATCH, failed]
            description = json.loads(plan[PLAN_HEADER_SIZE:].decode())
            built = tuple(description["tensorrt_version"])
            here = _version(version)
            compatible = bool(description.get("version_compatible")) and _runs_version_compatible(built, here)
            if built[:2] != here[:2] and not compatible:
                current, serialized = serialization_tag(here), serialization_tag(built)
                if major >= 10:
                    return [VERSION_MISMATCH_10.format(current=current, serialized=serialized)]
                return [VERSION_MISMATCH_8.format(current=current, serialized=serialized), failed]
            if built != here and not compatible:
                built_text = ".".join(map(str, built))
                return [LIBRARY_MISMATCH.format(here=".".join(map(str, here)), built=built_text), failed]
            lean = bool(description.get("version_compatible") and description.get("lean_runtime"))
            if lean and not self._host_code_allowed:
                return [HOST_CODE_NOT_ALLOWED, failed]
            cc = tuple(description["compute_capability"])
            if cc != tuple(fake.gpu.compute_capability):
                here_cc = ".".join(map(str, fake.gpu.compute_capability))
                return [DEVICE_MISMATCH.format(built=f"{cc[0]}.{cc[1]}", here=here_cc), failed]
            for plugin in description["plugins"]:
                if plugin not in fake.plugins:
                    lines = []
                    if (major, minor) < (8, 5):
                        lines.append(f"3: getPluginCreator could not find plugin: {plugin} version: 1")
                    lines.append(PLUGIN_NOT_FOUND)
                    return [*lines, failed]
            return None

    if (major, minor) >= (8, 6):  # pyCore.cpp @v8.6.1 l.1296-1297, @v10.0.0 l.1523-1524

        def _get_host_code(self: Runtime) -> bool:
            return self._host_code_allowed

        def _set_host_code(self: Runtime, allowed: bool) -> None:
            if not isinstance(allowed, bool):
                raise TypeError("engine_host_code_allowed: incompatible function arguments (expected bool)")
            self._host_code_allowed = allowed

        Runtime.engine_host_code_allowed = property(_get_host_code, _set_host_code)  # type: ignore[attr-defined]
    module.Runtime = Runtime
    return module


class PluginLibraries:
    """Stands in for ``ctypes.CDLL``: loading a known library registers its plugins; others raise OSError.

    Install with ``monkeypatch.setattr(ctypes, "CDLL", libraries.cdll)``. Loads are recorded on the GPU's
    event log as ``load_library`` (with the mode, which must include RTLD_GLOBAL for plugins to register
    for the whole process).
    """

    def __init__(self, module: types.ModuleType, libraries: Mapping[str, Sequence[str]]) -> None:
        self.module = module
        self.libraries = {str(k): list(v) for k, v in libraries.items()}
        self.loaded: List[Tuple[str, int]] = []

    def cdll(self, name: str, mode: int = 0, *args: Any, **kwargs: Any) -> Any:
        import ctypes

        fake: FakeState = self.module._fake  # type: ignore[attr-defined]
        fake.gpu.record("load_library", name=str(name), mode=mode)
        if str(name) not in self.libraries:
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        self.loaded.append((str(name), mode))
        if mode & ctypes.RTLD_GLOBAL:
            for plugin in self.libraries[str(name)]:
                fake.plugins[plugin] = str(name)
        return types.SimpleNamespace(_name=str(name))
