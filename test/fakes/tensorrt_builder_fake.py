"""The TensorRT *builder* API as a test double, per version: what ``trt-perception build`` calls, and no more.

``add_builder_api(module, version)`` adds the builder-side names to a fake ``tensorrt`` module (made by
``tensorrt_fake.make_tensorrt_module``; the few base names the builder needs - ``Logger``,
``init_libnvinfer_plugins``, ``DataType``, ``__version__`` - are added here only when that module lacks them).

Mirrored from the TensorRT Python bindings (NVIDIA/TensorRT, tags 8.2.1 and v10.0.0; 8.4.1 for the memory
pool API), call by call:

- ``Builder``: python/src/infer/pyCore.cpp ``py::class_<IBuilder>``: ``create_network(flags=0)``,
  ``platform_has_fast_fp16/int8``, ``platform_has_tf32``, ``num_DLA_cores``, ``max_DLA_batch_size``,
  ``create_optimization_profile``, ``create_builder_config``, ``build_serialized_network(network, config)``,
  ``is_network_supported``, ``logger``, ``reset``. 8.2 only: ``max_batch_size`` (implicit batch),
  ``build_engine`` (deprecated for build_serialized_network). 10.0 only: ``max_threads``,
  ``get_plugin_registry``.
- ``IBuilderConfig``: pyCore.cpp ``py::class_<IBuilderConfig>``: ``set_flag/clear_flag/get_flag``, ``flags``,
  ``int8_calibrator``, ``DLA_core``, ``default_device_type``, ``add_optimization_profile``,
  ``set_calibration_profile/get_calibration_profile``, ``num_optimization_profiles``,
  ``create_timing_cache(serialized_timing_cache)``, ``set_timing_cache(cache, ignore_mismatch)``,
  ``get_timing_cache``, ``avg_timing_iterations``, ``profiling_verbosity``, ``engine_capability``.
  8.2 only: ``max_workspace_size``, ``min_timing_iterations``. 8.4+: ``set_memory_pool_limit(pool, pool_size)``
  / ``get_memory_pool_limit(pool)`` (pyCore.cpp at 8.4.1; absent at 8.2.1). 10.0 only: ``progress_monitor``,
  ``builder_optimization_level``, ``hardware_compatibility_level``, ``max_aux_streams``.
- Enums (pyCore.cpp ``py::enum_``): ``BuilderFlag`` (8.2.1: FP16, INT8, DEBUG, GPU_FALLBACK, STRICT_TYPES,
  REFIT, DISABLE_TIMING_CACHE, TF32, SPARSE_WEIGHTS, SAFETY_SCOPE, OBEY_PRECISION_CONSTRAINTS,
  PREFER_PRECISION_CONSTRAINTS, DIRECT_IO, REJECT_EMPTY_ALGORITHMS; 10.0.0: no STRICT_TYPES, adds BF16,
  VERSION_COMPATIBLE, EXCLUDE_LEAN_RUNTIME, FP8, ...), ``MemoryPoolType`` (8.4+), ``DeviceType``,
  ``NetworkDefinitionCreationFlag`` (8.2: EXPLICIT_BATCH, EXPLICIT_PRECISION; 10: EXPLICIT_BATCH,
  STRONGLY_TYPED).
- ``INetworkDefinition`` / ``ITensor``: python/src/infer/pyGraph.cpp: ``num_inputs``, ``num_outputs``,
  ``num_layers``, ``get_input(index)``, ``get_output(index)``, ``has_implicit_batch_dimension``, ``name``;
  ``ITensor.name/shape/dtype/is_network_input/is_network_output``.
- ``OnnxParser``: python/src/parsers/pyOnnx.cpp: ``OnnxParser(network, logger)``, ``parse(model, path=None)``,
  ``parse_from_file(model)``, ``supports_operator``, ``num_errors``, ``get_error(index)``, ``clear_errors``;
  10.0 only: ``flags``, ``set_flag``, ``clear_flag``, ``get_flag``. ``ParserError.code/desc/node``.
  8.x only: ``UffParser()`` with ``register_input(name, shape, order)``, ``register_output(name)``,
  ``parse(file, network, weights_type)`` (python/src/parsers/pyUff.cpp at 8.2.1; gone in 9.0).
- Calibrators: python/src/infer/pyInt8.cpp: ``IInt8Calibrator``, ``IInt8EntropyCalibrator2`` (and the
  legacy/entropy/minmax ones) with ``get_batch_size``, ``get_algorithm``, ``get_batch(names)`` (returns device
  pointers or None), ``read_calibration_cache()``, ``write_calibration_cache(cache)``; ``CalibrationAlgoType``.
  At v10.0.0 the bound ``get_batch_size`` is ``utils::deprecateMember(..., "Implicit batch dimensions support
  has been removed")`` (pyInt8.cpp l.287-335; C++ ``getBatchSize`` is TRT_DEPRECATED, NvInfer.h l.7550-7552):
  calling the base method warns "Use Implicit batch dimensions support has been removed instead.", while the
  trampoline still calls a Python override of ``get_batch_size`` when TensorRT asks (pyInt8.cpp l.35-50, which
  prints the error and answers -1 when there is none). The builder double asks, as TensorRT does.
- ``IOptimizationProfile.set_shape(input, min, opt, max)`` / ``get_shape`` (pyCore.cpp lambdas
  opt_profile_set_shape), ``ITimingCache.serialize/combine/reset``, ``IHostMemory`` (pyFoundationalTypes.cpp:
  buffer protocol, ``dtype``, ``nbytes``), ``IProgressMonitor`` (10.0 only: ``phase_start(phase_name,
  parent_phase, num_steps)``, ``step_complete(phase_name, step)``, ``phase_finish(phase_name)``).

A call the real version lacks is missing from its double, so code that uses the wrong API generation fails
here as it would on the car. Behaviour is only what the builder tool depends on: the ONNX parser reads the
model's graph inputs/outputs with ``onnx`` (plugin ops must be registered by ``init_libnvinfer_plugins``),
``build_serialized_network`` returns None for dynamic inputs without a profile (as TensorRT does), runs an
attached INT8 calibrator the way TensorRT does (``get_batch_size``, cache first, then ``get_batch`` until None,
then ``write_calibration_cache``), and returns an ``IHostMemory`` whose bytes record the configuration (a
VERSION_COMPATIBLE build makes a version-compatible plan, with the lean runtime unless EXCLUDE_LEAN_RUNTIME).
Every call that configures the build is appended to ``module.builder_calls`` for the tests to assert on.
"""

from __future__ import annotations

import json
import types
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

PLUGINS = {
    # plugin/ folder at 8.2.1 and v10.0.0: both ship these creators (BatchedNMS deprecated since 9.0)
    (8, 2): ("EfficientNMS_TRT", "EfficientNMS_ONNX_TRT", "BatchedNMS_TRT", "BatchedNMSDynamic_TRT", "NMS_TRT",
             "GridAnchor_TRT", "GridAnchorRect_TRT", "FlattenConcat_TRT"),
    (10, 0): ("EfficientNMS_TRT", "EfficientNMS_ONNX_TRT", "BatchedNMS_TRT", "BatchedNMSDynamic_TRT", "NMS_TRT",
              "GridAnchor_TRT", "GridAnchorRect_TRT", "FlattenConcat_TRT"),
}
BUILDER_FLAGS_82 = (
    "FP16", "INT8", "DEBUG", "GPU_FALLBACK", "STRICT_TYPES", "REFIT", "DISABLE_TIMING_CACHE", "TF32",
    "SPARSE_WEIGHTS", "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO",
    "REJECT_EMPTY_ALGORITHMS",
)
BUILDER_FLAGS_10 = (
    "FP16", "BF16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS",
    "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO",
    "REJECT_EMPTY_ALGORITHMS", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "FP8", "ERROR_ON_TIMING_CACHE_MISS",
    "DISABLE_COMPILATION_CACHE", "WEIGHTLESS", "STRIP_PLAN", "REFIT_IDENTICAL", "WEIGHT_STREAMING",
)
# ONNX TensorProto element types -> TensorRT DataType names (INT64 inputs are cast to INT32 by the 8.x parser)
ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8"}

try:  # the runtime double's plan format, so engines built here load in the TensorRT backend's tests
    from fakes.tensorrt_fake import PLAN_HEADER_SIZE, PLAN_MAGIC, make_plan
except ImportError:  # the runtime double is not in this checkout
    PLAN_HEADER_SIZE, PLAN_MAGIC, make_plan = 0, b"", None


def plan_info(plan: bytes) -> Dict[str, Any]:
    """What the builder double put into a plan: version, flags, inputs, outputs, calibration, plugins."""
    plan = bytes(plan)
    if plan.startswith(b"FAKEPLAN"):
        return json.loads(plan[len(b"FAKEPLAN"):].decode())
    if PLAN_MAGIC and plan.startswith(PLAN_MAGIC):
        description = json.loads(plan[PLAN_HEADER_SIZE:].decode())
        return dict(description["params"]["builder"], plugins=description["plugins"])
    raise ValueError(f"not a plan of the builder double: {plan[:16]!r}")


class _EnumValue:
    """One value of a pybind11 enum: ``int()``-able, hashable, ``name``, printed as ``Enum.NAME``."""

    def __init__(self, enum: str, name: str, value: int) -> None:
        self.enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _EnumValue) and (other.enum, other.value) == (self.enum, self.value)

    def __hash__(self) -> int:
        return hash((self.enum, self.value))

    def __repr__(self) -> str:
        return f"<{self.enum}.{self.name}: {self.value}>"

    def __str__(self) -> str:
        return f"{self.enum}.{self.name}"


def _enum(name: str, members: Sequence[str]) -> type:
    namespace = {member: _EnumValue(name, member, index) for index, member in enumerate(members)}
    namespace["__members__"] = dict(namespace)
    return type(name, (), namespace)


def _version(version: str) -> Tuple[int, int]:
    parts = str(version).split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


def add_builder_api(module: types.ModuleType, version: Optional[str] = None) -> types.ModuleType:
    """Add the builder API of TensorRT ``version`` (default: ``module.__version__``) to ``module``."""
    version = str(version or getattr(module, "__version__", "10.0.1.6"))
    major, minor = _version(version)
    v8 = major < 10
    has_pools = (major, minor) >= (8, 4)
    module.builder_calls = []  # type: ignore[attr-defined]
    module.on_build = None  # type: ignore[attr-defined]  # test hook: called when a build starts
    module.fast_fp16 = True  # type: ignore[attr-defined]
    module.fast_int8 = True  # type: ignore[attr-defined]
    module.dla_cores = 0  # type: ignore[attr-defined]
    module.fail_build = False  # type: ignore[attr-defined]
    state: Dict[str, Any] = {"plugins": False}
    calls: List[Tuple[Any, ...]] = module.builder_calls  # type: ignore[attr-defined]
    known_plugins = PLUGINS[(8, 2) if v8 else (10, 0)]

    def record(*call: Any) -> None:
        calls.append(call)

    # ---- base names, only where the base fake does not provide them
    if not hasattr(module, "__version__"):
        module.__version__ = version
    if not hasattr(module, "DataType"):  # the runtime double's DataType (an IntEnum per version) when present
        module.DataType = _enum("DataType", ("FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "INT64"))
    if not hasattr(module, "Logger"):

        class Logger:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

            def __init__(self, min_severity: int = 2) -> None:
                self.min_severity = min_severity
                self.messages: List[Tuple[int, str]] = []

            def log(self, severity: int, msg: str) -> None:
                self.messages.append((severity, msg))

        module.Logger = Logger
    base_init_plugins: Optional[Callable[..., Any]] = getattr(module, "init_libnvinfer_plugins", None)

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        state["plugins"] = True
        record("init_libnvinfer_plugins", namespace)
        return bool(base_init_plugins(logger, namespace)) if base_init_plugins is not None else True

    module.init_libnvinfer_plugins = init_libnvinfer_plugins

    def _log(logger: Any, severity: int, text: str) -> None:
        if hasattr(logger, "log"):
            logger.log(severity, text)

    # ---- enums
    module.BuilderFlag = _enum("BuilderFlag", BUILDER_FLAGS_82 if v8 else BUILDER_FLAGS_10)
    module.DeviceType = _enum("DeviceType", ("GPU", "DLA"))
    module.NetworkDefinitionCreationFlag = _enum(
        "NetworkDefinitionCreationFlag", ("EXPLICIT_BATCH", "EXPLICIT_PRECISION") if v8 else
        ("EXPLICIT_BATCH", "STRONGLY_TYPED")
    )
    module.CalibrationAlgoType = _enum(
        "CalibrationAlgoType", ("LEGACY_CALIBRATION", "ENTROPY_CALIBRATION", "ENTROPY_CALIBRATION_2",
                                "MINMAX_CALIBRATION")
    )
    module.ProfilingVerbosity = _enum("ProfilingVerbosity", ("LAYER_NAMES_ONLY", "NONE", "DETAILED"))
    if has_pools:
        pools = ("WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM", "DLA_GLOBAL_DRAM")
        if not v8:
            pools += ("TACTIC_DRAM", "TACTIC_SHARED_MEMORY")
        module.MemoryPoolType = _enum("MemoryPoolType", pools)

    # ---- host memory, timing cache, profiles
    class _HostMemory(bytes):
        """Serialized data; the real one exposes the buffer protocol (memoryview / file.write work)."""

        @property
        def nbytes(self) -> int:
            return len(self)

    IHostMemory = getattr(module, "IHostMemory", _HostMemory)

    class ITimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = bytes(data)

        def serialize(self) -> IHostMemory:
            return IHostMemory(b"TIMING" + self.data[6:] + b"+")

        def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
            self.data += input_cache.data
            return True

        def reset(self) -> bool:
            self.data = b""
            return True

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]] = {}

        def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:
            shapes = (tuple(int(d) for d in min), tuple(int(d) for d in opt), tuple(int(d) for d in max))
            if not (len(shapes[0]) == len(shapes[1]) == len(shapes[2])) or not all(
                a <= b <= c for a, b, c in zip(*shapes)
            ):
                raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
            self.shapes[input] = shapes
            record("set_shape", input, *shapes)

        def get_shape(self, input: str) -> List[Tuple[int, ...]]:
            return list(self.shapes.get(input, ()))

    module.IHostMemory = IHostMemory
    module.ITimingCache = ITimingCache
    module.IOptimizationProfile = IOptimizationProfile

    # ---- network
    class ITensor:
        def __init__(self, name: str, shape: Tuple[int, ...], dtype: Any, is_input: bool) -> None:
            self.name, self.shape, self.dtype = name, shape, dtype
            self.is_network_input, self.is_network_output = is_input, not is_input

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = int(flags)
            self.name = "Unnamed Network 0"
            self._inputs: List[ITensor] = []
            self._outputs: List[ITensor] = []
            self.num_layers = 0
            self.plugins: List[str] = []

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        @property
        def has_implicit_batch_dimension(self) -> bool:
            explicit = 1 << int(module.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
            return v8 and not self.flags & explicit

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

    module.ITensor = ITensor
    module.INetworkDefinition = INetworkDefinition

    # ---- ONNX parser
    class ParserError:
        def __init__(self, desc: str, node: int = -1) -> None:
            self._desc, self._node = desc, node

        def code(self) -> int:
            return 8  # ErrorCode.kUNSUPPORTED_NODE

        def desc(self) -> str:
            return self._desc

        def node(self) -> int:
            return self._node

        def __str__(self) -> str:
            return f"In node {self._node} (importFallbackPluginImporter): {self._desc}"

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Any) -> None:
            self.network, self.logger = network, logger
            self._errors: List[ParserError] = []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

        def clear_errors(self) -> None:
            self._errors = []

        def supports_operator(self, op_name: str) -> bool:
            return not op_name.endswith("_TRT") or op_name in known_plugins

        def parse_from_file(self, model: str) -> bool:
            record("parse_from_file", model)
            import onnx

            return self._import(onnx.load(model, load_external_data=False))

        def parse(self, model: bytes, path: Optional[str] = None) -> bool:
            import onnx

            return self._import(onnx.load_from_string(bytes(model)))

        def _import(self, model: Any) -> bool:
            if v8 and self.network.has_implicit_batch_dimension:
                self._errors.append(ParserError("ONNX parser only supports networks with an explicit batch dimension"))
                return False
            for index, node in enumerate(model.graph.node):
                missing = not state["plugins"] or node.op_type not in known_plugins
                if node.op_type.endswith("_TRT") and missing:
                    self._errors.append(ParserError(
                        f"Assertion failed: creator && \"Plugin not found, are the plugin name, version, and "
                        f"namespace correct?\" ({node.op_type})", index))
                    return False
            initializers = {t.name for t in model.graph.initializer}
            for value, is_input in [(v, True) for v in model.graph.input if v.name not in initializers] + [
                (v, False) for v in model.graph.output
            ]:
                tensor_type = value.type.tensor_type
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
                name = ONNX_TO_TRT.get(tensor_type.elem_type, "FLOAT")
                if not hasattr(module.DataType, name):  # 8.x: INT64 I/O becomes INT32, no UINT8 before 8.5
                    name = "INT32" if name == "INT64" else "FLOAT"
                target = self.network._inputs if is_input else self.network._outputs
                shape = module.Dims(dims) if hasattr(module, "Dims") else dims  # real shapes are trt.Dims
                target.append(ITensor(value.name, shape, getattr(module.DataType, name), is_input))
            self.network.plugins = sorted({n.op_type for n in model.graph.node if n.op_type.endswith("_TRT")})
            self.network.num_layers = len(model.graph.node)
            return True

    if not v8:

        def _parser_flags(self: Any) -> int:
            return getattr(self, "_flags", 0)

        OnnxParser.flags = property(_parser_flags, lambda self, value: setattr(self, "_flags", int(value)))
        OnnxParser.set_flag = lambda self, flag: setattr(self, "_flags", _parser_flags(self) | (1 << int(flag)))
        OnnxParser.clear_flag = lambda self, flag: setattr(self, "_flags", _parser_flags(self) & ~(1 << int(flag)))
        OnnxParser.get_flag = lambda self, flag: bool(_parser_flags(self) & (1 << int(flag)))
        module.OnnxParserFlag = _enum("OnnxParserFlag", ("NATIVE_INSTANCENORM",))
    module.OnnxParser = OnnxParser
    module.ParserError = ParserError

    # ---- calibrators (the real classes are pybind11 trampolines the user subclasses)
    class IInt8Calibrator:
        def __init__(self) -> None:
            pass

        def get_batch_size(self) -> int:
            if not v8:  # pyInt8.cpp @v10.0.0 l.287: utils::deprecateMember -> issueDeprecationWarning
                warnings.warn(
                    "Use Implicit batch dimensions support has been removed instead.", DeprecationWarning, stacklevel=2
                )
            raise NotImplementedError("pure virtual get_batch_size")

        def get_algorithm(self) -> Any:
            raise NotImplementedError("pure virtual get_algorithm")

        def get_batch(self, names: Sequence[str]) -> Any:
            raise NotImplementedError("pure virtual get_batch")

        def read_calibration_cache(self) -> Any:
            raise NotImplementedError("pure virtual read_calibration_cache")

        def write_calibration_cache(self, cache: Any) -> None:
            raise NotImplementedError("pure virtual write_calibration_cache")

    def _calibrator(name: str, algorithm: str) -> type:
        return type(name, (IInt8Calibrator,), {"get_algorithm": lambda self: getattr(module.CalibrationAlgoType,
                                                                                       algorithm)})

    module.IInt8Calibrator = IInt8Calibrator
    module.IInt8LegacyCalibrator = _calibrator("IInt8LegacyCalibrator", "LEGACY_CALIBRATION")
    module.IInt8EntropyCalibrator = _calibrator("IInt8EntropyCalibrator", "ENTROPY_CALIBRATION")
    module.IInt8EntropyCalibrator2 = _calibrator("IInt8EntropyCalibrator2", "ENTROPY_CALIBRATION_2")
    module.IInt8MinMaxCalibrator = _calibrator("IInt8MinMaxCalibrator", "MINMAX_CALIBRATION")

    if not v8:

        class IProgressMonitor:
            def __init__(self) -> None:
                pass

            def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
                raise NotImplementedError("pure virtual phase_start")

            def step_complete(self, phase_name: str, step: int) -> bool:
                raise NotImplementedError("pure virtual step_complete")

            def phase_finish(self, phase_name: str) -> None:
                raise NotImplementedError("pure virtual phase_finish")

        module.IProgressMonitor = IProgressMonitor

    # ---- builder config
    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags = 0
            self._calibrator: Any = None
            self._dla_core = -1
            self._device_type = module.DeviceType.GPU
            self.profiles: List[IOptimizationProfile] = []
            self._calibration_profile: Optional[IOptimizationProfile] = None
            self._timing_cache: Optional[ITimingCache] = None
            self.avg_timing_iterations = 1
            self.profiling_verbosity = module.ProfilingVerbosity.LAYER_NAMES_ONLY
            self.engine_capability = 0
            self._pools: Dict[Any, int] = {}
            self._workspace = 0

        def set_flag(self, flag: Any) -> None:
            if getattr(module.BuilderFlag, flag.name, None) != flag:
                raise TypeError(f"set_flag(): incompatible argument {flag!r}")
            self.flags |= 1 << int(flag)
            record("set_flag", flag.name)

        def clear_flag(self, flag: Any) -> None:
            self.flags &= ~(1 << int(flag))
            record("clear_flag", flag.name)

        def get_flag(self, flag: Any) -> bool:
            return bool(self.flags & (1 << int(flag)))

        @property
        def int8_calibrator(self) -> Any:
            return self._calibrator

        @int8_calibrator.setter
        def int8_calibrator(self, calibrator: Any) -> None:
            if calibrator is not None and not isinstance(calibrator, IInt8Calibrator):
                raise TypeError("int8_calibrator: incompatible type (expected an IInt8Calibrator subclass)")
            self._calibrator = calibrator
            record("int8_calibrator", type(calibrator).__name__)

        @property
        def DLA_core(self) -> int:
            return self._dla_core

        @DLA_core.setter
        def DLA_core(self, core: int) -> None:
            self._dla_core = int(core)
            record("DLA_core", int(core))

        @property
        def default_device_type(self) -> Any:
            return self._device_type

        @default_device_type.setter
        def default_device_type(self, device_type: Any) -> None:
            self._device_type = device_type
            record("default_device_type", device_type.name)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self.profiles.append(profile)
            record("add_optimization_profile", dict(profile.shapes))
            return len(self.profiles) - 1

        @property
        def num_optimization_profiles(self) -> int:
            return len(self.profiles)

        def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
            self._calibration_profile = profile
            record("set_calibration_profile", dict(profile.shapes))
            return True

        def get_calibration_profile(self) -> Optional[IOptimizationProfile]:
            return self._calibration_profile

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
            data = bytes(serialized_timing_cache)
            record("create_timing_cache", data)
            return ITimingCache(data if data else b"TIMING")

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if not cache.data.startswith(b"TIMING"):  # another TensorRT/GPU's cache
                record("set_timing_cache", False)
                return False
            self._timing_cache = cache
            record("set_timing_cache", True)
            return True

        def get_timing_cache(self) -> Optional[ITimingCache]:
            return self._timing_cache

    if v8:

        def _get_workspace(self: Any) -> int:
            return self._workspace

        def _set_workspace(self: Any, size: int) -> None:
            self._workspace = int(size)
            record("max_workspace_size", int(size))

        IBuilderConfig.max_workspace_size = property(_get_workspace, _set_workspace)
        IBuilderConfig.min_timing_iterations = 1
    if has_pools:

        def set_memory_pool_limit(self: Any, pool: Any, pool_size: int) -> None:
            self._pools[pool] = int(pool_size)
            record("set_memory_pool_limit", pool.name, int(pool_size))

        def get_memory_pool_limit(self: Any, pool: Any) -> int:
            return self._pools.get(pool, 0)

        IBuilderConfig.set_memory_pool_limit = set_memory_pool_limit
        IBuilderConfig.get_memory_pool_limit = get_memory_pool_limit
    if not v8:

        def _get_monitor(self: Any) -> Any:
            return getattr(self, "_monitor", None)

        def _set_monitor(self: Any, monitor: Any) -> None:
            if monitor is not None and not isinstance(monitor, module.IProgressMonitor):
                raise TypeError("progress_monitor: incompatible type (expected an IProgressMonitor subclass)")
            self._monitor = monitor
            record("progress_monitor", type(monitor).__name__)

        IBuilderConfig.progress_monitor = property(_get_monitor, _set_monitor)
        IBuilderConfig.builder_optimization_level = 3
        IBuilderConfig.hardware_compatibility_level = 0
        IBuilderConfig.max_aux_streams = -1
    module.IBuilderConfig = IBuilderConfig

    # ---- builder
    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            record("Builder")

        @property
        def platform_has_fast_fp16(self) -> bool:
            return bool(module.fast_fp16)

        @property
        def platform_has_fast_int8(self) -> bool:
            return bool(module.fast_int8)

        @property
        def platform_has_tf32(self) -> bool:
            return False

        @property
        def num_DLA_cores(self) -> int:
            return int(module.dla_cores)

        @property
        def max_DLA_batch_size(self) -> int:
            return 32 if module.dla_cores else 1

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            record("create_network", int(flags))
            return INetworkDefinition(flags)

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def is_network_supported(self, network: INetworkDefinition, config: IBuilderConfig) -> bool:
            return True

        def reset(self) -> None:
            pass

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> Any:
            record("build_serialized_network")
            if module.on_build is not None:
                module.on_build(network, config)
            dynamic = [t.name for t in network._inputs if any(d < 0 for d in t.shape)]
            covered = set().union(*[set(p.shapes) for p in config.profiles]) if config.profiles else set()
            missing = [name for name in dynamic if name not in covered]
            if missing or module.fail_build:
                reason = "simulated failure" if module.fail_build else (
                    f"Network has dynamic or shape inputs, but no optimization profile has been defined ({missing})"
                )
                _log(self.logger, 1, reason)
                return None
            monitor = getattr(config, "progress_monitor", None)
            if monitor is not None:
                monitor.phase_start("Building engine", None, 1)
                monitor.phase_start("Tactic timing", "Building engine", 2)
                monitor.step_complete("Tactic timing", 0)
                monitor.phase_finish("Tactic timing")
                monitor.step_complete("Building engine", 0)
                monitor.phase_finish("Building engine")
            calibration = None
            if config.get_flag(module.BuilderFlag.INT8) and config.int8_calibrator is not None:
                calibration = self._calibrate(network, config.int8_calibrator)
                if calibration is None:
                    _log(self.logger, 1, "Calibration failure occurred with no scaling factors detected.")
                    return None
            plan = {
                "version": module.__version__,
                "flags": sorted(f for f, v in module.BuilderFlag.__members__.items() if config.get_flag(v)),
                "inputs": [t.name for t in network._inputs],
                "outputs": [t.name for t in network._outputs],
                "calibration": calibration,
            }
            if make_plan is None or not hasattr(module, "_fake"):
                return IHostMemory(b"FAKEPLAN" + json.dumps(plan, sort_keys=True).encode())
            tensors = [
                {"name": t.name, "mode": "input" if t.is_network_input else "output", "shape": list(t.shape),
                 "dtype": t.dtype.name}
                for t in network._inputs + network._outputs
            ]
            first = config.profiles[0].shapes if config.profiles else {}
            profiles = {name: [list(s) for s in shapes] for name, shapes in first.items()}
            gpu = module._fake.gpu
            flags = plan["flags"]
            return IHostMemory(make_plan(
                tensors, tensorrt_version=module.__version__, compute_capability=gpu.compute_capability,
                plugins=network.plugins, program="mean", params={"builder": plan}, profiles=profiles,
                version_compatible="VERSION_COMPATIBLE" in flags, lean_runtime="EXCLUDE_LEAN_RUNTIME" not in flags,
            ))

        def _calibrate(self, network: INetworkDefinition, calibrator: Any) -> Optional[str]:
            """What TensorRT does with a calibrator: its batch size, the cache if it gives one, else batches,
            then write. The batch size goes through the trampoline: a Python override answers; without one
            TensorRT prints the error and gets -1 (pyInt8.cpp l.35-50)."""
            overridden = type(calibrator).get_batch_size is not IInt8Calibrator.get_batch_size
            batch_size = int(calibrator.get_batch_size()) if overridden else -1
            record("calibrator_batch_size", batch_size)
            cache = calibrator.read_calibration_cache()
            if cache is not None and len(bytes(cache)) > 0:
                return "cache"
            names = [t.name for t in network._inputs]
            batches = 0
            while True:
                pointers = calibrator.get_batch(names)
                if pointers is None or len(pointers) == 0:
                    break
                if len(pointers) != len(names):
                    return None
                batches += 1
            if batches == 0:
                return None
            calibrator.write_calibration_cache(IHostMemory(b"FAKE-CALIBRATION-TABLE %d" % batches))
            return f"batches:{batches}"

    if v8:

        def _get_max_batch(self: Any) -> int:
            return getattr(self, "_max_batch", 1)

        Builder.max_batch_size = property(_get_max_batch, lambda self, v: setattr(self, "_max_batch", int(v)))

        class ICudaEngine:
            def __init__(self, plan: bytes) -> None:
                self.plan = plan

            def serialize(self) -> IHostMemory:
                return IHostMemory(self.plan)

        def build_engine(self: Any, network: INetworkDefinition, config: IBuilderConfig) -> Any:
            plan = self.build_serialized_network(network, config)
            return None if plan is None else ICudaEngine(bytes(plan))

        Builder.build_engine = build_engine

        class UffParser:
            """python/src/parsers/pyUff.cpp at 8.2.1 (deleted with UFF in 9.0): records what it is given."""

            def register_input(self, name: str, shape: Sequence[int], order: int = 0) -> bool:
                record("uff_register_input", name, tuple(shape))
                return True

            def register_output(self, name: str) -> bool:
                record("uff_register_output", name)
                return True

            def parse(self, file: str, network: INetworkDefinition, weights_type: Any = None) -> bool:
                record("uff_parse", file)
                return False  # the double cannot read UFF files

        module.UffParser = UffParser
    else:
        Builder.max_threads = 0
        Builder.get_plugin_registry = lambda self: None
    module.Builder = Builder
    return module


def make_builder_module(version: str) -> types.ModuleType:
    """A fake ``tensorrt`` module of ``version`` with the builder API (base from tensorrt_fake when present)."""
    try:
        from fakes.tensorrt_fake import make_tensorrt_module
    except ImportError:  # the runtime double is not in this checkout: the builder double stands alone
        module = types.ModuleType("tensorrt")
        module.__version__ = version
    else:
        module = make_tensorrt_module(version)
    return add_builder_api(module, version)


class FakeDeviceMemory:
    """The calibrator's device-memory interface (alloc, copy_htod, free), recording every batch copied."""

    def __init__(self) -> None:
        self.allocations: Dict[int, int] = {}
        self.copies: List[Any] = []
        self.freed: List[int] = []

    def alloc(self, nbytes: int) -> int:
        pointer = 0x10000 * (len(self.allocations) + 1)
        self.allocations[pointer] = int(nbytes)
        return pointer

    def copy_htod(self, pointer: int, array: Any) -> None:
        if array.nbytes != self.allocations[pointer]:
            raise ValueError(f"copy of {array.nbytes} bytes into a {self.allocations[pointer]}-byte buffer")
        self.copies.append(array.copy())

    def free(self, pointer: int) -> None:
        self.allocations.pop(pointer)
        self.freed.append(pointer)
