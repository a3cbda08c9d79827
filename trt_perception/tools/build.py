"""`trt-perception build`: ONNX -> serialized TensorRT engine, its spec sidecar and build metadata.

One builder for every TensorRT a Jetson ships, chosen by feature detection on the module, not by version
strings (TensorRT Python bindings, python/src/infer/pyCore.cpp at tags 8.2.1 and v10.0.0):

- workspace: ``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)`` where it exists (8.4+),
  else ``IBuilderConfig.max_workspace_size`` (8.0-8.x; removed in 10);
- build: ``Builder.build_serialized_network`` (8.0+); ``build_engine`` + ``serialize`` only where the former is
  missing (7.x);
- network: ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` where the builder still has implicit batch
  (``Builder.max_batch_size``, gone in 10 where explicit batch is the only mode);
- strict precision: ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS`` (8.2+), else ``STRICT_TYPES`` (8.0/8.1);
- progress: ``IBuilderConfig.progress_monitor`` with an ``IProgressMonitor`` where present (9/10), and always a
  heartbeat line every ~10 s while the build runs, so a many-minute Jetson Nano build never looks hung.

The engine is written to a temporary file in the target folder and renamed into place (``os.replace``), so an
interrupted build leaves no half-written engine; an existing engine is never replaced without ``force``.
The sidecar ``<engine>.yaml`` is the ONNX model's spec plus a ``build:`` section (TensorRT version, GPU name,
compute capability, precision, source ONNX and its sha256, flags) that the TensorRT backend checks before it
deserializes the engine. ``tensorrt`` and the CUDA bindings are imported lazily, inside functions.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import hashlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception import __version__
from trt_perception.errors import BuildError, ConfigError, SpecError
from trt_perception.spec import ModelSpec, check_input, check_output_names, find_spec, load_spec, save_spec

PathLike = Union[str, Path]
Progress = Callable[[str], None]
Shape = Tuple[int, ...]

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_WORKSPACE_MB = 1024
SMALL_GPU_WORKSPACE_MB = 256  # Jetson Nano: 1 GB workspace makes the build run out of memory
SMALL_GPU_BYTES = 5 * 1024**3
HEARTBEAT_S = 10.0
TIMING_CACHE_SUFFIX = ".timing.cache"
CALIBRATION_CACHE_SUFFIX = ".calib.cache"
JETSON_MODEL_FILE = Path("/proc/device-tree/model")
# numpy dtypes of TensorRT DataType names (pyFoundationalTypes.cpp: FLOAT, HALF, INT8, INT32, BOOL, UINT8, ...)
_TRT_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


# --------------------------------------------------------------------------------------------- GPU facts


@dataclass(frozen=True)
class GpuFacts:
    """What the build metadata records about the GPU, and what picks the default workspace."""

    name: str = "unknown"
    compute_capability: str = "unknown"
    total_memory: Optional[int] = None  # bytes; on a Jetson this is the shared system memory
    jetson_model: str = ""  # /proc/device-tree/model, e.g. "NVIDIA Jetson Nano Developer Kit"
    note: str = ""  # why name/compute capability are unknown, when they are

    @property
    def is_small(self) -> bool:
        """A Jetson Nano, or any GPU with < 5 GB: builds there need the small workspace."""
        if "nano" in self.jetson_model.lower() and "orin" not in self.jetson_model.lower():
            return True
        return self.total_memory is not None and self.total_memory < SMALL_GPU_BYTES


def _jetson_model(path: Path = JETSON_MODEL_FILE) -> str:
    try:
        return path.read_bytes().rstrip(b"\x00").decode("utf-8", "replace").strip()
    except OSError:
        return ""  # not a Jetson (or no device tree): nothing to report


def _facts_from_cuda_python(device: int) -> GpuFacts:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python; ImportError propagates when neither exists
    err, props = cudart.cudaGetDeviceProperties(device)
    if int(err) != 0:
        raise RuntimeError(f"cudaGetDeviceProperties({device}) returned {err}")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\x00", 1)[0].decode("utf-8", "replace")
    total = getattr(props, "totalGlobalMem", None)
    return GpuFacts(str(name), f"{props.major}.{props.minor}", None if total is None else int(total))


def _facts_from_pycuda(device: int) -> GpuFacts:
    import pycuda.driver as cuda

    cuda.init()
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return GpuFacts(str(dev.name()), f"{major}.{minor}", int(dev.total_memory()))


def gpu_facts(device: int = 0) -> GpuFacts:
    """Name, compute capability and memory of a CUDA device, through cuda-python or pycuda (whichever works).

    Never fails: a machine where neither binding works gets "unknown" values and the reason in ``note``.
    """
    jetson = _jetson_model()
    reasons = []
    for probe in (_facts_from_cuda_python, _facts_from_pycuda):
        try:
            facts = probe(device)
        except ImportError as exc:
            reasons.append(f"{probe.__name__[12:]}: not installed ({exc.name})")
            continue
        except Exception as exc:  # each binding raises its own error types; record why and try the next
            reasons.append(f"{probe.__name__[12:]}: {type(exc).__name__}: {exc}")
            continue
        return GpuFacts(facts.name, facts.compute_capability, facts.total_memory, jetson)
    return GpuFacts(jetson_model=jetson, note="; ".join(reasons))


def default_workspace_mb(gpu: GpuFacts) -> int:
    """256 MB on a Jetson Nano / GPUs under 5 GB (1 GB there runs the build out of memory), else 1 GB."""
    return SMALL_GPU_WORKSPACE_MB if gpu.is_small else DEFAULT_WORKSPACE_MB


# ----------------------------------------------------------------------------------------------- helpers


def file_sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_dims(text: str) -> Shape:
    """``1x3x300x300`` -> (1, 3, 300, 300) (trtexec's shape syntax)."""
    try:
        dims = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"shape {text!r} is not valid; expected positive dims joined by 'x', e.g. 1x3x300x300")
    return dims


def parse_shape_flags(values: Optional[Sequence[str]], flag: str) -> Dict[str, Shape]:
    """``["input:1x3x300x300", "a:1x2,b:1x4"]`` -> {name: dims}; names may contain ':' (TF names)."""
    shapes: Dict[str, Shape] = {}
    for value in values or ():
        for item in value.split(","):
            name, sep, dims = item.strip().rpartition(":")
            if not sep or not name:
                raise ConfigError(f"{flag} {item!r} is not NAME:DIMS; expected e.g. {flag} input:1x3x300x300")
            shapes[name] = parse_dims(dims)
    return shapes


@dataclass(frozen=True)
class ShapeRange:
    """One input's optimization-profile shapes."""

    min: Shape
    opt: Shape
    max: Shape

    def as_dict(self) -> Dict[str, List[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def shape_ranges(
    min_shapes: Optional[Mapping[str, Shape]] = None,
    opt_shapes: Optional[Mapping[str, Shape]] = None,
    max_shapes: Optional[Mapping[str, Shape]] = None,
) -> Dict[str, ShapeRange]:
    """Combine --min/--opt/--max shape flags; a missing one takes the opt (or the one given)."""
    ranges: Dict[str, ShapeRange] = {}
    mins, opts, maxs = dict(min_shapes or {}), dict(opt_shapes or {}), dict(max_shapes or {})
    for name in list(dict.fromkeys([*mins, *opts, *maxs])):
        opt = opts.get(name) or mins.get(name) or maxs[name]
        ranges[name] = ShapeRange(mins.get(name, opt), opt, maxs.get(name, opt))
    return ranges


class BuildClock:
    """Stage messages with the elapsed time since the build started."""

    def __init__(self, report: Progress) -> None:
        self.report = report
        self.started = time.monotonic()
        self.stage = "starting"

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        seconds = int(self.elapsed())
        self.report(f"[build {seconds // 60:d}:{seconds % 60:02d}] {text}")

    def enter(self, stage: str) -> None:
        self.stage = stage
        self.say(stage)


class Heartbeat:
    """Prints a line every ``interval`` s while a long call (the TensorRT build) runs in this thread.

    The TensorRT bindings release the GIL inside ``build_serialized_network``, so this thread keeps running.
    """

    def __init__(self, clock: BuildClock, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trt-build-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.clock.say(f"... still {self.clock.stage} (this can take many minutes on a Jetson; it is not hung)")

    def __enter__(self) -> Heartbeat:
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _print_progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _version_tuple(version: str) -> Tuple[int, ...]:
    parts = []
    for part in str(version).split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a BuildError saying why not (the backend's explanation: JetPack 4's Python
    3.6-only bindings, a venv hiding the system site-packages, bindings that do not match the libraries)."""
    try:
        import tensorrt
    except ImportError as exc:
        from trt_perception.backends.tensorrt import explain_tensorrt_import_error

        raise BuildError(
            f"cannot build engines: {explain_tensorrt_import_error(exc)}; on a desktop also `pip install tensorrt` "
            "(or the trt_perception[tensorrt] extra)"
        ) from exc
    return tensorrt


def _dtype_name(dtype: Any) -> str:
    return str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1].upper()


def _numpy_dtype(dtype: Any) -> np.dtype:
    name = _dtype_name(dtype)
    if name not in _TRT_DTYPES:
        raise BuildError(
            f"TensorRT data type {name} has no numpy equivalent here; expected one of {sorted(_TRT_DTYPES)}"
        )
    return np.dtype(_TRT_DTYPES[name])


def _tensor_specs(tensors: Sequence[Any]) -> List[Any]:
    from trt_perception.backends.base import TensorSpec

    specs = []
    for tensor in tensors:
        shape = tuple(None if int(d) < 0 else int(d) for d in tensor.shape)
        specs.append(TensorSpec(str(tensor.name), shape, _numpy_dtype(tensor.dtype)))
    return specs


def _tensor_metadata(tensor: Any) -> Dict[str, Any]:
    shape = [-1 if d is None else int(d) for d in tensor.shape]
    return {"name": tensor.name, "shape": shape, "dtype": np.dtype(tensor.dtype).name}


def _network_io(network: Any) -> Tuple[List[Any], List[Any]]:
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    return inputs, outputs


def _load_plugin_libraries(paths: Sequence[PathLike]) -> None:
    for path in paths:
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise BuildError(
                f"plugin library {path} cannot be loaded ({exc}); fix: give the path of a .so built for this "
                "TensorRT and CPU architecture (--plugin-library)"
            ) from exc


def atomic_write(path: Path, data: Any) -> None:
    """Write bytes to ``path`` through a temporary file in the same folder and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as handle:
            handle.write(memoryview(data).cast("B") if not isinstance(data, bytes) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def rebase_spec_paths(data: Dict[str, Any], old_dir: Path, new_dir: Path) -> Dict[str, Any]:
    """Spec values that name files next to the old spec (labels, anchors) keep pointing at them."""

    def rebase(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rebase(v) for k, v in value.items()}
        if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
            candidate = old_dir / value
            if candidate.is_file():
                try:
                    return os.path.relpath(candidate.resolve(), new_dir.resolve())
                except ValueError:  # another drive on Windows: an absolute path still works
                    return str(candidate.resolve())
        return value

    if old_dir.resolve() == new_dir.resolve():
        return data
    for section in ("output", "detection"):
        if isinstance(data.get(section), dict):
            data[section] = rebase(data[section])
    return data


# ----------------------------------------------------------------------------------------------- build


@dataclass
class BuildReport:
    """What one build did (returned by ``build_engine_report``; ``build_engine`` returns the path only)."""

    engine: Path
    spec: Optional[Path]
    metadata: Dict[str, Any] = field(default_factory=dict)


def _source_spec(onnx_path: Path, spec_path: Optional[PathLike]) -> Optional[ModelSpec]:
    if spec_path is not None:
        return load_spec(spec_path=spec_path)
    found = find_spec(onnx_path)
    return load_spec(spec_path=found) if found is not None else None


def _profile_ranges(
    inputs: Sequence[Any], spec: Optional[ModelSpec], shapes: Mapping[str, ShapeRange]
) -> Dict[str, ShapeRange]:
    """Profile shapes per dynamic input: from the flags, else the spec's batch-1 input shape."""
    names = [str(t.name) for t in inputs]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise ConfigError(f"shape flags name input(s) {unknown} but the model's inputs are {names}; fix the names")
    ranges: Dict[str, ShapeRange] = {}
    for tensor in inputs:
        name = str(tensor.name)
        dims = tuple(int(d) for d in tensor.shape)
        if name in shapes:
            chosen = shapes[name]
        elif any(d < 0 for d in dims):
            if spec is None or spec.input.name != name:
                flag = f"{name}:" + "x".join("N" if d < 0 else str(d) for d in dims)
                raise BuildError(
                    f"model input {name!r} has dynamic shape {list(dims)} and no spec gives its size; fix: pass "
                    f"--opt-shape {flag} (and --min-shape/--max-shape for a range), or write the model spec"
                )
            chosen = ShapeRange(spec.input.shape, spec.input.shape, spec.input.shape)
        else:
            continue
        for label, shape in (("min", chosen.min), ("opt", chosen.opt), ("max", chosen.max)):
            fits = len(shape) == len(dims) and all(d < 0 or d == s for d, s in zip(dims, shape))
            if not fits:
                raise ConfigError(
                    f"{label} shape {list(shape)} for input {name!r} does not fit its shape {list(dims)} "
                    "(-1 marks the dynamic dims); fix the shape flag"
                )
        if not all(a <= b <= c for a, b, c in zip(chosen.min, chosen.opt, chosen.max)):
            raise ConfigError(f"input {name!r}: expected min <= opt <= max per dim, got {chosen.as_dict()}")
        ranges[name] = chosen
    return ranges


def build_engine(
    onnx_path: PathLike,
    engine_path: PathLike,
    precision: str = "fp16",
    workspace_mb: Optional[int] = None,
    force: bool = False,
    calibration: Any = None,
    timing_cache: Union[bool, PathLike, None] = None,
    dla_core: Optional[int] = None,
    spec_path: Optional[PathLike] = None,
    progress: Optional[Progress] = None,
    **options: Any,
) -> Path:
    """Build ``engine_path`` from ``onnx_path`` and write its spec sidecar; returns the engine path.

    ``calibration``: a ``tools.calibration.CalibrationConfig`` (images folder or rosbag2 topic; needed for
    INT8 unless its cache file exists). ``timing_cache``: None = ``<engine>.timing.cache`` reused and
    updated, False = none, or a path. More keywords: see ``build_engine_report``.
    """
    return build_engine_report(
        onnx_path, engine_path, precision, workspace_mb, force, calibration, timing_cache, dla_core, spec_path,
        progress, **options,
    ).engine


def build_engine_report(
    onnx_path: PathLike,
    engine_path: PathLike,
    precision: str = "fp16",
    workspace_mb: Optional[int] = None,
    force: bool = False,
    calibration: Any = None,
    timing_cache: Union[bool, PathLike, None] = None,
    dla_core: Optional[int] = None,
    spec_path: Optional[PathLike] = None,
    progress: Optional[Progress] = None,
    *,
    strict_types: bool = False,
    shapes: Optional[Mapping[str, ShapeRange]] = None,
    plugin_libraries: Sequence[PathLike] = (),
    verbose: bool = False,
    heartbeat_s: float = HEARTBEAT_S,
    gpu: Optional[GpuFacts] = None,
    trt_module: Any = None,
    device_memory: Any = None,
) -> BuildReport:
    """``build_engine`` with every option; returns the engine path, the sidecar path and the metadata.

    ``strict_types``: obey the network's layer precisions. ``shapes``: optimization-profile shapes per
    dynamic input (default: the spec's batch-1 input size). ``plugin_libraries``: .so files loaded before
    parsing (custom plugins). ``gpu``, ``trt_module``, ``device_memory``: injected by tests and callers that
    already hold them.
    """
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path)
    precision = str(precision).lower()
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not supported; expected one of {list(PRECISIONS)}")
    if not onnx_path.is_file():
        raise BuildError(f"ONNX model {onnx_path} does not exist; fix: pass the path of the .onnx to build")
    if engine_path.resolve() == onnx_path.resolve():
        raise BuildError(f"engine path {engine_path} is the ONNX model itself; fix: pass -o model.engine")
    if engine_path.exists() and not force:
        raise BuildError(
            f"engine {engine_path} already exists; refusing to overwrite it; fix: pass --force (force=True) to "
            "rebuild it, or -o another path"
        )
    if not engine_path.parent.is_dir():
        raise BuildError(f"output folder {engine_path.parent} does not exist; fix: create it or pass another -o")
    if workspace_mb is not None and int(workspace_mb) <= 0:
        raise ConfigError(f"workspace {workspace_mb!r} MB is not valid; expected a positive number of MB")
    if dla_core is not None and int(dla_core) < 0:
        raise ConfigError(f"DLA core {dla_core!r} is not valid; expected 0 or 1 (Xavier/Orin have two)")
    clock = BuildClock(progress or _print_progress)
    spec = _source_spec(onnx_path, spec_path)
    if spec is None:
        clock.say(
            f"warning: no model spec found for {onnx_path} (looked for {onnx_path.with_suffix('.yaml').name}); "
            "the engine gets no sidecar, so the node will need --spec; write one next to the ONNX to fix this"
        )
    default_calibration_cache = engine_path.with_name(engine_path.name + CALIBRATION_CACHE_SUFFIX)
    if precision == "int8" and calibration is None and default_calibration_cache.is_file():
        from trt_perception.tools.calibration import CalibrationConfig

        calibration = CalibrationConfig(cache_path=default_calibration_cache)  # a rebuild reuses the old table
    if precision == "int8" and calibration is None:
        raise BuildError(
            "INT8 needs calibration data; fix: pass --calib-images DIR or --calib-bag BAG --calib-topic TOPIC "
            "(a few hundred frames like the ones the car sees), or build with --fp16"
        )

    trt = trt_module if trt_module is not None else import_tensorrt()
    trt_version = str(trt.__version__)
    gpu = gpu if gpu is not None else gpu_facts()
    workspace = int(workspace_mb) if workspace_mb is not None else default_workspace_mb(gpu)
    clock.enter(
        f"TensorRT {trt_version} on {gpu.name} (compute {gpu.compute_capability}"
        + (f", {gpu.jetson_model}" if gpu.jetson_model else "")
        + f"); {precision}, workspace {workspace} MB"
        + (f" ({gpu.note})" if gpu.note else "")
    )

    logger = trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)
    _load_plugin_libraries(plugin_libraries)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(builder, "max_batch_size"):  # implicit batch still exists (< 10): ask for explicit batch
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)

    clock.enter(f"parsing {onnx_path}")
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        hint = ""
        if any("plugin" in e.lower() or "_TRT" in e for e in errors):
            hint = (
                " A plugin op was not found: EfficientNMS_TRT needs TensorRT >= 8.0 with libnvinfer_plugin; "
                "for custom plugins pass --plugin-library; on TensorRT < 8.4 prefer `convert --nms batched`."
            )
        raise BuildError(
            f"TensorRT {trt_version} cannot parse {onnx_path}: " + " | ".join(errors or ["(no parser errors)"])
            + f".{hint} Fix: re-export with an opset this TensorRT supports (--opset 11..13 for 8.x), or "
            "simplify the graph (onnxsim)"
        )
    inputs, outputs = _network_io(network)
    input_specs, output_specs = _tensor_specs(inputs), _tensor_specs(outputs)
    clock.say(
        "inputs: " + ", ".join(str(t) for t in input_specs) + "; outputs: " + ", ".join(str(t) for t in output_specs)
    )
    if spec is not None:
        try:
            check_input(spec, input_specs)
            check_output_names(spec, output_specs)
        except SpecError as exc:
            raise SpecError(f"{exc} (spec {spec.source}, model {onnx_path}); the engine was not built") from None

    config = builder.create_builder_config()
    flag_names: List[str] = []

    def set_flag(name: str) -> None:
        config.set_flag(getattr(trt.BuilderFlag, name))
        flag_names.append(name)

    workspace_bytes = workspace * 1024 * 1024
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    else:
        config.max_workspace_size = workspace_bytes
    if precision in ("fp16", "int8"):
        if builder.platform_has_fast_fp16:
            set_flag("FP16")
        elif precision == "fp16":
            clock.say(f"warning: {gpu.name} has no fast FP16; building FP16 anyway (it may run no faster than FP32)")
            set_flag("FP16")
    if precision == "int8":
        if not builder.platform_has_fast_int8:
            clock.say(
                f"warning: {gpu.name} has no fast INT8 (Jetson Nano/TX1 have none); INT8 layers may fall back "
                "to FP16/FP32 and gain nothing; --fp16 is the better choice there"
            )
        set_flag("INT8")
    if strict_types:
        obey = hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS")  # 8.2+; STRICT_TYPES is gone in 10
        set_flag("OBEY_PRECISION_CONSTRAINTS" if obey else "STRICT_TYPES")
    if dla_core is not None:
        available = int(builder.num_DLA_cores)
        if int(dla_core) >= available:
            raise BuildError(
                f"DLA core {dla_core} was asked for but this device has {available} DLA core(s) (Jetson Nano and "
                "TX2 have none; Xavier/Orin have 0 and 1); fix: drop --dla-core or pick a core below "
                f"{available}"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        set_flag("GPU_FALLBACK")

    ranges = _profile_ranges(inputs, spec, dict(shapes or {}))
    if ranges:
        profile = builder.create_optimization_profile()
        for name, shape_range in ranges.items():
            profile.set_shape(name, shape_range.min, shape_range.opt, shape_range.max)
            clock.say(f"profile {name}: {shape_range.as_dict()}")
        config.add_optimization_profile(profile)

    calibrator = None
    if precision == "int8":
        from trt_perception.tools.calibration import CalibrationConfig, CudaDeviceMemory, make_entropy_calibrator

        if not isinstance(calibration, CalibrationConfig):
            calibrator = calibration  # an IInt8Calibrator the caller made
        else:
            if spec is None:
                raise BuildError(
                    "INT8 calibration feeds frames through the model spec's preprocessing, and no spec was found; "
                    f"fix: write {onnx_path.with_suffix('.yaml')} or pass --spec"
                )
            if len(inputs) != 1:
                raise BuildError(
                    f"INT8 calibration feeds one input, and {onnx_path} has {len(inputs)}: "
                    f"{[str(t.name) for t in inputs]}; fix: build with --fp16"
                )
            input_tensor = inputs[0]
            if spec.input.name in ranges:
                shape = ranges[spec.input.name].opt
            else:
                shape = tuple(int(d) for d in input_tensor.shape)
            cache = calibration.cache_path or engine_path.with_name(engine_path.name + CALIBRATION_CACHE_SUFFIX)
            calibrator = make_entropy_calibrator(
                trt, spec, calibration, input_shape=shape, input_dtype=_numpy_dtype(input_tensor.dtype),
                cache_path=cache, device=device_memory if device_memory is not None else CudaDeviceMemory(),
                progress=clock.say,
            )
            if spec.input.name in ranges:
                calib_profile = builder.create_optimization_profile()
                calib_profile.set_shape(spec.input.name, shape, shape, shape)
                config.set_calibration_profile(calib_profile)
        config.int8_calibrator = calibrator

    cache_file: Optional[Path] = None
    if timing_cache is not False and hasattr(config, "create_timing_cache"):
        cache_file = (
            engine_path.with_name(engine_path.name + TIMING_CACHE_SUFFIX)
            if timing_cache in (None, True) else Path(timing_cache)
        )
        blob = cache_file.read_bytes() if cache_file.is_file() else b""
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, False):
            clock.say(f"timing cache {cache_file} was made by another TensorRT/GPU; starting a fresh one")
            config.set_timing_cache(config.create_timing_cache(b""), False)
        elif blob:
            clock.say(f"reusing timing cache {cache_file} ({len(blob)} bytes)")

    monitor = None
    if hasattr(trt, "IProgressMonitor") and hasattr(config, "progress_monitor"):
        monitor = _progress_monitor(trt, clock)
        config.progress_monitor = monitor

    build_stage = "building the engine (TensorRT times kernels for this GPU)"
    if precision == "int8":
        build_stage = "calibrating INT8 and building the engine"
    clock.enter(build_stage)
    with Heartbeat(clock, heartbeat_s):
        if hasattr(builder, "build_serialized_network"):
            serialized = builder.build_serialized_network(network, config)
        else:  # TensorRT 7.x
            engine = builder.build_engine(network, config)
            serialized = engine.serialize() if engine is not None else None
    feeder = getattr(calibrator, "feeder", None)
    if feeder is not None:
        feeder.close()
        feeder.raise_error()  # an error inside a calibrator callback, kept until TensorRT returned
    if serialized is None:
        raise BuildError(
            f"TensorRT {trt_version} failed to build {engine_path.name} (its errors are printed above); on a Jetson "
            f"Nano the usual cause is memory: use --workspace {max(64, workspace // 2)} (now {workspace} MB), close "
            "other programs, add swap; for unsupported layers re-export the ONNX with another opset"
        )
    build_seconds = round(clock.elapsed(), 1)

    clock.enter(f"writing {engine_path}")
    if engine_path.exists() and not force:  # appeared while we built: still never overwrite it
        raise BuildError(f"engine {engine_path} appeared during the build; refusing to overwrite it (pass --force)")
    atomic_write(engine_path, serialized)
    if cache_file is not None:
        atomic_write(cache_file, config.get_timing_cache().serialize())

    metadata: Dict[str, Any] = {
        "tensorrt_version": trt_version,
        "gpu_name": gpu.name,
        "compute_capability": gpu.compute_capability,
        "jetson_model": gpu.jetson_model,
        "precision": precision,
        "source_onnx": str(onnx_path.resolve()),
        "onnx_sha256": file_sha256(onnx_path),
        "flags": flag_names,
        "workspace_mb": workspace,
        "dla_core": None if dla_core is None else int(dla_core),
        "profiles": {name: r.as_dict() for name, r in ranges.items()},
        "inputs": [_tensor_metadata(t) for t in input_specs],
        "outputs": [_tensor_metadata(t) for t in output_specs],
        "built_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "build_seconds": build_seconds,
        "builder": f"trt_perception {__version__}",
    }
    sidecar: Optional[Path] = None
    if spec is not None:
        data = spec.to_dict()
        if spec.source is not None:
            data = rebase_spec_paths(data, spec.source.parent, engine_path.parent)
        data["build"] = metadata
        sidecar = save_spec(data, engine_path.with_name(engine_path.name + ".yaml"), overwrite=True)
    size_mb = engine_path.stat().st_size / 1e6
    spec_text = f", spec {sidecar}" if sidecar else ""
    clock.say(f"done: {engine_path} ({size_mb:.1f} MB) in {build_seconds:.0f} s{spec_text}")
    return BuildReport(engine_path, sidecar, metadata)


def _progress_monitor(trt: Any, clock: BuildClock) -> Any:
    """An ``IProgressMonitor`` (TensorRT 9/10) that reports phase starts and ends as build stages."""

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.depth: Dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            depth = self.depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self.depth[phase_name] = depth
            if depth <= 1:  # deeper phases are per-layer tactic timing: too many lines for a terminal
                clock.stage = phase_name
                clock.say("  " * depth + f"{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            if self.depth.pop(phase_name, 2) == 0:
                clock.say(f"{phase_name} finished")

    return _Monitor()


# ------------------------------------------------------------------------------------------------- CLI


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="the .onnx model to build (its spec .yaml beside it is copied); "
                        "a TF frozen graph .pb goes through the legacy UFF path where TensorRT < 9 has it")
    parser.add_argument("-o", "--output", type=Path, help="engine path (default: the model path with .engine)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--precision", choices=PRECISIONS, default="fp16", help="engine precision (default fp16)")
    group.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="same as --precision fp32")
    group.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="same as --precision fp16")
    group.add_argument("--int8", dest="precision", action="store_const", const="int8",
                       help="INT8 with FP16 fallback; needs --calib-images or --calib-bag")
    parser.add_argument("--workspace", type=int, metavar="MB",
                        help="builder workspace in MB (default 256 on a Jetson Nano / GPUs under 5 GB, else 1024)")
    parser.add_argument("--force", action="store_true", help="replace an existing engine")
    parser.add_argument("--spec", type=Path, help="model spec to copy (default: the one found next to the model)")
    parser.add_argument("--timing-cache", type=Path, help="timing cache file (default: <engine>.timing.cache)")
    parser.add_argument("--no-timing-cache", action="store_true", help="neither read nor write a timing cache")
    parser.add_argument("--dla-core", type=int, help="build for this DLA core with GPU fallback (Xavier/Orin)")
    parser.add_argument("--strict-types", action="store_true",
                        help="obey layer precisions (OBEY_PRECISION_CONSTRAINTS; STRICT_TYPES on TensorRT < 8.2)")
    for which in ("min", "opt", "max"):
        parser.add_argument(f"--{which}-shape", action="append", metavar="NAME:DIMS",
                            help=f"{which} shape of a dynamic input, e.g. input:1x3x300x300 (repeatable)")
    calib = parser.add_argument_group("INT8 calibration (frames go through the spec's preprocessing)")
    calib.add_argument("--calib-images", type=Path, metavar="DIR", help="folder of .jpg/.png frames")
    calib.add_argument("--calib-bag", type=Path, metavar="BAG", help="rosbag2 folder or file with camera images")
    calib.add_argument("--calib-topic", help="image topic in --calib-bag (Image or CompressedImage)")
    calib.add_argument("--calib-count", type=int, default=500, help="frames to use (default 500)")
    calib.add_argument("--calib-batch", type=int, default=8, help="batch size where the input batch is dynamic")
    calib.add_argument("--calib-cache", type=Path, help="calibration cache (default: <engine>.calib.cache); "
                       "an existing cache is reused and no frames are read")
    parser.add_argument("--plugin-library", action="append", type=Path, default=[], metavar="SO",
                        help="plugin library to load before parsing (repeatable)")
    parser.add_argument("--verbose", action="store_true", help="TensorRT INFO log")
    uff = parser.add_argument_group("legacy UFF (TF1 OD API SSD frozen graphs; TensorRT < 9 only)")
    uff.add_argument("--uff-num-classes", type=int, default=91, help="classes incl. background (default 91)")
    uff.add_argument("--uff-input-size", type=int, default=300, help="square input size (default 300)")
    uff.add_argument("--uff-min-scale", type=float, default=0.2, help="anchor min scale (pipeline.config)")
    uff.add_argument("--uff-max-scale", type=float, default=0.95, help="anchor max scale (pipeline.config)")
    uff.add_argument("--uff-feature-maps", default="19,10,5,3,2,1", help="feature map sizes (default 300x300)")
    uff.add_argument("--uff-input-order", default="0,2,1",
                     help="NMS_TRT inputOrder (loc, conf, priors): 0,2,1 for most; 1,0,2 for ssd_mobilenet_v2_coco")


def _calibration_from_args(args: argparse.Namespace) -> Any:
    if args.precision != "int8":
        return None
    from trt_perception.tools.calibration import CalibrationConfig

    output = args.output or args.model.with_suffix(".engine")
    cache = args.calib_cache or output.with_name(output.name + CALIBRATION_CACHE_SUFFIX)
    if args.calib_images is None and args.calib_bag is None and not cache.is_file():
        raise ConfigError(
            "--int8 needs calibration frames: pass --calib-images DIR or --calib-bag BAG --calib-topic TOPIC "
            "(or an existing --calib-cache)"
        )
    if args.calib_images is not None and args.calib_bag is not None:
        raise ConfigError("pass either --calib-images or --calib-bag, not both")
    source = args.calib_images if args.calib_images is not None else args.calib_bag
    return CalibrationConfig(
        source=source, topic=args.calib_topic, max_images=args.calib_count, batch_size=args.calib_batch,
        cache_path=args.calib_cache,
    )


def run_build(args: argparse.Namespace) -> int:
    model: Path = args.model
    if model.suffix.lower() in (".pb", ".uff"):
        from trt_perception.tools.uff import build_uff_engine, uff_options_from_args

        if args.precision == "int8":
            raise ConfigError("the legacy UFF path builds FP32/FP16 engines only; fix: --fp16 (or the ONNX path)")
        output = args.output or model.with_suffix(".engine")
        build_uff_engine(model, output, uff_options_from_args(args), force=args.force, spec_path=args.spec,
                         precision=args.precision, workspace_mb=args.workspace)
        return 0
    if model.suffix.lower() != ".onnx":
        raise ConfigError(
            f"cannot build from {model} (suffix {model.suffix!r}); expected an .onnx model; fix: convert it first "
            f"with `trt-perception convert {model}`"
        )
    ranges = shape_ranges(
        parse_shape_flags(args.min_shape, "--min-shape"),
        parse_shape_flags(args.opt_shape, "--opt-shape"),
        parse_shape_flags(args.max_shape, "--max-shape"),
    )
    timing_cache: Union[bool, Path, None] = False if args.no_timing_cache else args.timing_cache
    build_engine_report(
        model,
        args.output or model.with_suffix(".engine"),
        precision=args.precision,
        workspace_mb=args.workspace,
        force=args.force,
        calibration=_calibration_from_args(args),
        timing_cache=timing_cache,
        dla_core=args.dla_core,
        spec_path=args.spec,
        strict_types=args.strict_types,
        shapes=ranges,
        plugin_libraries=args.plugin_library,
        verbose=args.verbose,
    )
    return 0
