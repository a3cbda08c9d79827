"""TensorRT backend: runs serialized engines on every TensorRT a Jetson ships (8.0 ... 10.x).

The API generation is chosen by feature detection on the deserialized engine, never by version strings:

- tensor API (TensorRT >= 8.5): ``num_io_tensors``, ``get_tensor_name/mode/shape/dtype``,
  ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3(stream_handle)``;
- binding API (TensorRT < 10): ``num_bindings``, ``binding_is_input``, ``get_binding_shape/dtype/name``,
  ``execute_async_v2(bindings, stream_handle)`` for explicit-batch engines and
  ``execute_async(batch_size, bindings, stream_handle)`` for implicit-batch engines (every UFF engine),
  whose binding shapes leave the batch dimension out. Implicit-batch engines always use this path, also on
  8.5/8.6 where both APIs exist, because only ``execute_async`` takes a batch size.

Per engine: one execution context, one CUDA stream, and one ``IOBuffer`` per tensor (page-locked host array +
device buffer) allocated once and grown only when a dynamic input shape needs more room. Per frame: copy the
inputs into the pinned buffers (or let the preprocessor write there through ``input_buffer``), async H2D,
execute, async D2H, one stream synchronize. ``infer`` returns the pinned output arrays themselves: they are
valid until the next ``infer`` (or ``close``); copy them if you need them longer.

GPU preprocessing (``gpu_preprocess``): ``device_input`` hands out an input's device buffer, this backend's
stream and its CUDA adapter; a kernel queued there writes the tensor, and ``infer(..., on_device=(name,))``
then skips that input's host staging and H2D copy. Being on the same stream, the kernel runs before
``execute`` and the frame's single synchronize covers it.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import re
import sys
import threading
import warnings
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception.backends.base import Backend, TensorSpec
from trt_perception.backends.cuda import CudaApi, select_cuda_api
from trt_perception.backends.engine_info import (
    BuildInfo,
    RuntimeInfo,
    explain_version_error,
    find_mismatches,
    load_build_metadata,
    mismatch_message,
    read_plan_header,
    rebuild_command,
    resolve_source_onnx,
)
from trt_perception.errors import BackendError, BuildError, EngineMismatchError

LOG = logging.getLogger("trt_perception.tensorrt")

# TensorRT DataType member name -> numpy dtype (looked up on the imported module, so members a version lacks,
# such as UINT8 before 8.5 or INT64 before 10, are simply absent; never by numeric value). Not trt.nptype: up
# to 8.5.2 it builds its table with np.bool (python/packaging/tensorrt/__init__.py @8.2.1 l.165, @8.5.2
# l.166; np.bool_ from 8.5.3), which numpy 1.24-1.26 removed, so every call fails there.
_NUMPY_TYPES = (
    ("FLOAT", np.float32),
    ("HALF", np.float16),
    ("INT8", np.int8),
    ("INT32", np.int32),
    ("BOOL", np.bool_),
    ("UINT8", np.uint8),
    ("INT64", np.int64),
)
_PLUGIN_NAME_RE = re.compile(
    r"could not find plugin:?\s*([\w.\-]+)|cannot deserialize plugin:?\s*(?!since\b)([\w.\-]+)", re.I
)
_VERSION_ERROR_RE = re.compile(
    r"version tag does not match|expecting library version|not compatible with this version|stdVersionRead",
    re.I,
)
_DEVICE_ERROR_RE = re.compile(r"incompatible device|expecting compute", re.I)
_MAGIC_ERROR_RE = re.compile(r"magic ?tag", re.I)


# Where JetPack's python3-libnvinfer puts the bindings: /usr/lib/python3.6/dist-packages/tensorrt on JetPack 4
# (NVIDIA/TensorRT#1811), /usr/lib/python3.8/dist-packages/tensorrt on JetPack 5 (jetson-containers#699).
_SYSTEM_BINDINGS_GLOB = "usr/lib/python3*/dist-packages/tensorrt"
# First line of /etc/nv_tegra_release: "# R32 (release), REVISION: 7.1, GCID: ..." (jetson-containers
# jetson_containers/l4t_version.py get_l4t_version); R32 is JetPack 4, R34/R35 JetPack 5, R36 JetPack 6.
_L4T_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")
_JETPACK_OF_L4T = {32: "4", 34: "5", 35: "5", 36: "6"}
SYSTEM_ROOT = Path("/")  # where /etc/nv_tegra_release and /usr/lib/python3*/dist-packages are looked for
NANO_ROUTE = (
    "build TensorRT's Python bindings for this Python from NVIDIA's sources with "
    "scripts/build_tensorrt_python.sh in the trt_perception source tree (docs_tensorrt.md, \"The Jetson Nano's "
    "Python\")"
)


def _l4t_release(root: Path) -> Optional[Tuple[int, str]]:
    """(32, '7.1') from /etc/nv_tegra_release, or None off a Jetson."""
    try:
        first = (root / "etc/nv_tegra_release").read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    match = _L4T_RE.search(first)
    return (int(match.group(1)), match.group(2)) if match else None


def explain_tensorrt_import_error(
    exc: ImportError, python: Optional[Tuple[int, int]] = None, executable: Optional[str] = None,
    root: Optional[Path] = None,
) -> str:  # fmt: skip
    """Why ``import tensorrt`` failed here and what to do, in one message (``root`` is for tests).

    The common Jetson causes: JetPack 4 ships the bindings for Python 3.6 only (trt_perception needs 3.8+);
    the bindings exist for this Python but a venv hides the system site-packages; or the module is found
    but its library does not load (bindings built for another TensorRT than the installed one).
    """
    python = python or (sys.version_info[0], sys.version_info[1])
    executable = executable or sys.executable
    root = SYSTEM_ROOT if root is None else root
    here = f"{python[0]}.{python[1]}"
    l4t = _l4t_release(root)
    jetpack = f"JetPack {_JETPACK_OF_L4T[l4t[0]]} (L4T R{l4t[0]}.{l4t[1]})" if l4t and l4t[0] in _JETPACK_OF_L4T else ""
    bindings = {p.parent.parent.name[len("python"):]: p for p in sorted(root.glob(_SYSTEM_BINDINGS_GLOB))}
    onnx = "; or run the .onnx model with backend onnxruntime meanwhile"
    if not isinstance(exc, ModuleNotFoundError) or (exc.name not in (None, "tensorrt")):
        return (
            f"the 'tensorrt' Python module was found but does not load ({exc}); its compiled bindings must "
            "match this Python and the TensorRT libraries installed here (e.g. bindings built for TensorRT "
            "8.2.1 need JetPack 4.6.1+'s libnvinfer 8.2.1); fix: reinstall the bindings that match "
            f"(on JetPack: python3-libnvinfer for the system Python; for another Python, {NANO_ROUTE})" + onnx
        )
    if here in bindings:
        return (
            f"the 'tensorrt' module is not importable from {executable} ({exc}), but TensorRT's bindings for "
            f"Python {here} are installed at {bindings[here]}: this Python (a virtual environment?) does not "
            "see the system site-packages; fix: create the venv with --system-site-packages "
            f"(python3 -m venv --system-site-packages <dir>), or use the system python3" + onnx
        )
    if bindings:
        others = ", ".join(  # /usr/lib/python3/dist-packages is the system python3's, whatever its minor
            f"{'the system python3' if v == '3' else 'Python ' + v} ({p})" for v, p in bindings.items()
        )
        nano = (
            f" {jetpack} ships TensorRT's Python bindings for its system Python 3.6 only, and trt_perception "
            "needs Python 3.8+."
            if l4t is not None and l4t[0] == 32
            else ""
        )
        return (
            f"the 'tensorrt' module is not importable from Python {here} ({executable}): TensorRT's Python "
            f"bindings on this machine are for {others}, and compiled bindings load only in the Python they "
            f"were built for.{nano} Fix: {NANO_ROUTE}, then pip install the wheel it makes into this Python" + onnx
        )
    where = f" on {jetpack}" if jetpack else ""
    return (
        f"the TensorRT backend needs the 'tensorrt' Python module ({exc}); fix: on a Jetson it comes "
        f"with JetPack{where} (sudo apt install python3-libnvinfer; use the system python3 or a venv with "
        "--system-site-packages; on JetPack 4 that is Python 3.6 only: " + NANO_ROUTE + "), on a "
        "desktop pip install tensorrt" + onnx
    )


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or a BackendError that says plainly why not and how to get it."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise BackendError(explain_tensorrt_import_error(exc)) from exc


def _make_logger(trt: ModuleType) -> Any:
    """A ``trt.ILogger`` forwarding to Python logging; keeps recent warnings/errors for error messages."""

    class RecordingLogger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: Deque[Tuple[int, str]] = deque(maxlen=256)
            self.count = 0

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)  # INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3, VERBOSE 4
            if level <= 2:
                self.messages.append((level, str(msg)))
                self.count += 1
                LOG.log(logging.ERROR if level <= 1 else logging.WARNING, "[TRT] %s", msg)
            elif LOG.isEnabledFor(logging.DEBUG):
                LOG.debug("[TRT] %s", msg)

        def errors_since(self, mark: int) -> List[str]:
            fresh = list(self.messages)[-(self.count - mark) :] if self.count > mark else []
            return [text for level, text in fresh if level <= 1]

    return RecordingLogger()


@dataclass
class IOBuffer:
    """One engine tensor: its name, binding index, dtype, current shape, pinned host view and device buffer.

    ``host`` is a view of ``storage`` (flat pinned bytes of ``capacity``) in the current shape; ``device`` is
    the device address of as many bytes. Growing a dynamic input past ``capacity`` reallocates both.
    """

    name: str
    index: int
    is_input: bool
    dtype: np.dtype
    engine_shape: Tuple[int, ...]
    shape: Tuple[int, ...] = ()
    storage: Optional[np.ndarray] = None
    host: Optional[np.ndarray] = None
    device: int = 0
    capacity: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize if self.shape else 0

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.engine_shape)


class _ResourceOwner:
    """Everything that must be released in order: TensorRT objects, buffers, stream, CUDA context.

    Held by the backend and by a ``weakref.finalize``, which never references the backend itself, so an
    unclosed backend is still released (at garbage collection or interpreter exit) while CUDA is alive.
    """

    def __init__(self, cuda: CudaApi, owns_cuda: bool) -> None:
        self.cuda = cuda
        self.owns_cuda = owns_cuda
        self.runtime: Any = None
        self.engine: Any = None
        self.context: Any = None
        self.stream: Any = None
        self.buffers: List[IOBuffer] = []
        self.released = False

    def free_buffer(self, buffer: IOBuffer) -> None:
        if buffer.device:
            self.cuda.free(buffer.device)
        if buffer.storage is not None:
            self.cuda.free_pinned(buffer.storage)
        buffer.device, buffer.storage, buffer.host, buffer.capacity = 0, None, None, 0

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            with self.cuda.activated():
                if self.stream is not None:
                    self.cuda.stream_synchronize(self.stream)  # nothing may still use the buffers
                # TensorRT objects free device memory when destroyed: do it while the context is current.
                self.context = self.engine = self.runtime = None
                for buffer in self.buffers:
                    self.free_buffer(buffer)
                if self.stream is not None:
                    self.cuda.stream_destroy(self.stream)
                    self.stream = None
        except Exception:  # shutdown must go on to release the context; report what failed
            LOG.exception("error while releasing TensorRT buffers/stream; continuing shutdown")
        finally:
            if self.owns_cuda:
                self.cuda.close()


class _ApiBase:
    """What both API generations share: the engine and context live in the resource owner."""

    res: _ResourceOwner

    @property
    def engine(self) -> Any:
        return self.res.engine

    @property
    def context(self) -> Any:
        return self.res.context


class _TensorApi(_ApiBase):
    """Tensor-name API (TensorRT >= 8.5): addresses set by name, ``execute_async_v3``."""

    kind = "tensor"

    def __init__(self, trt: ModuleType, res: _ResourceOwner) -> None:
        self.trt = trt
        self.res = res  # engine and context live in the resource owner, so close() really destroys them


    def tensors(self) -> List[Tuple[str, int, bool, Tuple[int, ...], Any]]:
        result = []
        for index in range(int(self.engine.num_io_tensors)):
            name = self.engine.get_tensor_name(index)
            is_input = self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
            result.append((name, index, is_input, shape, self.engine.get_tensor_dtype(name)))
        return result

    def profile_shapes(self, buffer: IOBuffer) -> Optional[Tuple[Tuple[int, ...], ...]]:
        """(min, opt, max) of profile 0 for a dynamic input, or None."""
        if not hasattr(self.engine, "get_tensor_profile_shape"):
            return None
        shapes = self.engine.get_tensor_profile_shape(buffer.name, 0)
        return tuple(tuple(int(d) for d in s) for s in shapes) if len(shapes) == 3 else None

    def set_input_shape(self, buffer: IOBuffer, shape: Tuple[int, ...]) -> bool:
        return bool(self.context.set_input_shape(buffer.name, shape))

    def output_shape(self, buffer: IOBuffer) -> Tuple[int, ...]:
        return tuple(int(d) for d in self.context.get_tensor_shape(buffer.name))

    def bind(self, buffers: Sequence[IOBuffer]) -> None:
        for buffer in buffers:
            if not self.context.set_tensor_address(buffer.name, buffer.device):
                raise BackendError(f"TensorRT refused the device address of tensor {buffer.name!r}")

    def execute(self, stream_handle: int, batch_size: int) -> bool:
        return bool(self.context.execute_async_v3(stream_handle))


class _BindingApi(_ApiBase):
    """Binding-index API (TensorRT < 10): a bindings list; ``execute_async_v2`` or implicit-batch
    ``execute_async``."""

    def __init__(self, trt: ModuleType, res: _ResourceOwner, implicit_batch: bool) -> None:
        self.trt = trt
        self.res = res
        self.implicit_batch = implicit_batch
        self.kind = "binding (implicit batch)" if implicit_batch else "binding"
        engine = res.engine
        self.bindings: List[int] = [0] * int(engine.num_bindings)
        # With several optimization profiles each profile has its own copy of the bindings; use profile 0's.
        profiles = max(1, int(getattr(engine, "num_optimization_profiles", 1)))
        self.per_profile = len(self.bindings) // profiles


    def tensors(self) -> List[Tuple[str, int, bool, Tuple[int, ...], Any]]:
        result = []
        for index in range(self.per_profile):
            shape = tuple(int(d) for d in self.engine.get_binding_shape(index))
            result.append(
                (
                    self.engine.get_binding_name(index),
                    index,
                    bool(self.engine.binding_is_input(index)),
                    shape,
                    self.engine.get_binding_dtype(index),
                )
            )
        return result

    def profile_shapes(self, buffer: IOBuffer) -> Optional[Tuple[Tuple[int, ...], ...]]:
        """(min, opt, max) of profile 0 for a dynamic input, or None."""
        if self.implicit_batch or not hasattr(self.engine, "get_profile_shape"):
            return None
        shapes = self.engine.get_profile_shape(0, buffer.index)
        return tuple(tuple(int(d) for d in s) for s in shapes) if len(shapes) == 3 else None

    def set_input_shape(self, buffer: IOBuffer, shape: Tuple[int, ...]) -> bool:
        return bool(self.context.set_binding_shape(buffer.index, shape))

    def output_shape(self, buffer: IOBuffer) -> Tuple[int, ...]:
        return tuple(int(d) for d in self.context.get_binding_shape(buffer.index))

    def bind(self, buffers: Sequence[IOBuffer]) -> None:
        for buffer in buffers:
            self.bindings[buffer.index] = int(buffer.device)

    def execute(self, stream_handle: int, batch_size: int) -> bool:
        if self.implicit_batch:
            return bool(self.context.execute_async(batch_size, self.bindings, stream_handle))
        return bool(self.context.execute_async_v2(self.bindings, stream_handle))


# utils::deprecate (python/include/utils.h, src/utils.cpp issueDeprecationWarning @8.5.1..v10.0.0) warns
# "Use X instead." on EVERY call through PyErr_WarnEx(DeprecationWarning, msg, 1), attributed to the calling
# Python frame, i.e. this module. Its return value is ignored, so under `-W error` each call leaves an exception
# set: the call fails. 8.5/8.6 deprecate execute_async, max_batch_size and get_binding_* (pyCore.cpp @8.5.1
# l.786-925), the only way to run an implicit-batch engine there.
_BINDING_DEPRECATION = r"Use .+ instead\."
_silenced: List[str] = []


def _silence_binding_deprecations(trt: ModuleType) -> None:
    """Ignore the binding API's DeprecationWarnings raised from this module (logged once instead).

    The implicit-batch path calls ``execute_async`` every frame; one warning (or, with ``-W error``, one
    exception) per frame is noise where there is no other API to call. Only this module's calls matching
    TensorRT's "Use X instead." text are filtered. The filter goes in front each time an engine opens
    (``filterwarnings`` drops its older copy), so a reset of the filters in between does not lose it.
    """
    warnings.filterwarnings(
        "ignore", message=_BINDING_DEPRECATION, category=DeprecationWarning, module=re.escape(__name__) + r"\Z"
    )
    if not _silenced:
        _silenced.append(str(getattr(trt, "__version__", "?")))
        LOG.info(
            "TensorRT %s deprecates the binding API that implicit-batch engines need (execute_async, "
            "get_binding_*): its per-call DeprecationWarnings from %s are ignored",
            _silenced[0],
            __name__,
        )


def _select_api(trt: ModuleType, res: _ResourceOwner) -> Union[_TensorApi, _BindingApi]:
    """Pick the API generation from what the engine object offers (feature detection)."""
    engine = res.engine
    has_tensor_api = hasattr(engine, "num_io_tensors")
    has_binding_api = hasattr(engine, "num_bindings")
    if has_tensor_api and not has_binding_api:
        return _TensorApi(trt, res)  # TensorRT 10+: implicit batch no longer exists
    if has_binding_api:
        implicit = bool(getattr(engine, "has_implicit_batch_dimension", False))
        if has_tensor_api and not implicit:
            return _TensorApi(trt, res)  # 8.5/8.6: the tensor API, binding calls are deprecated there
        if has_tensor_api:
            _silence_binding_deprecations(trt)
        return _BindingApi(trt, res, implicit)
    raise BackendError(
        f"this tensorrt module ({getattr(trt, '__version__', '?')}) has an engine object with neither "
        "num_io_tensors nor num_bindings; expected TensorRT 8.0 or later; fix: install a supported TensorRT"
    )


def _load_plugin_libraries(trt: ModuleType, logger: Any, libraries: Sequence[str]) -> List[Any]:
    """Register TensorRT's own plugins, then load each user plugin library (RTLD_GLOBAL) so it registers."""
    if not trt.init_libnvinfer_plugins(logger, ""):
        LOG.warning("trt.init_libnvinfer_plugins returned False: TensorRT's built-in plugins may be missing")
    handles = []
    for library in libraries:
        text = os.path.expanduser(str(library))
        if os.sep in text and not os.path.isfile(text):
            raise BackendError(
                f"plugin library {library!r} (backend option / param plugin_libraries) does not exist; "
                "fix: give the path of the .so that provides the plugin (e.g. libflattenconcat.so built from "
                "TensorRT's samples), or remove it from plugin_libraries"
            )
        try:
            handles.append(ctypes.CDLL(text, mode=ctypes.RTLD_GLOBAL))
        except OSError as exc:
            raise BackendError(
                f"plugin library {library!r} (param plugin_libraries) cannot be loaded: {exc}; "
                "fix: check the "
                "path, that it was built for this TensorRT/CUDA, and LD_LIBRARY_PATH for its dependencies"
            ) from exc
        LOG.info("loaded TensorRT plugin library %s", text)
    return handles


class TensorRTBackend(Backend):
    """Runs one serialized TensorRT engine (``.engine``/``.plan``/``.trt``/``.bin``).

    Options: ``plugin_libraries`` (.so files loaded before deserializing), ``cuda`` ('auto' | 'pycuda' |
    'cuda-python', or a ``CudaApi`` to share), ``auto_rebuild`` (rebuild from the recorded source ONNX when
    the engine was built for another TensorRT/GPU), ``build_metadata`` (the spec's ``build:`` section; read
    from the spec next to the engine when not given), ``device`` (CUDA device index).
    """

    name = "tensorrt"

    def __init__(
        self,
        model_path: Union[str, Path],
        plugin_libraries: Sequence[str] = (),
        cuda: Union[str, CudaApi] = "auto",
        auto_rebuild: bool = False,
        build_metadata: Optional[Mapping[str, Any]] = None,
        device: int = 0,
    ) -> None:
        super().__init__()
        self.model_path = Path(model_path)
        if isinstance(plugin_libraries, (str, bytes)):
            plugin_libraries = [plugin_libraries]  # a single path given as a string, not a list of letters
        self.plugin_libraries = [str(p) for p in plugin_libraries]
        self._lock = threading.Lock()
        trt = import_tensorrt()
        self._trt = trt
        api = select_cuda_api(cuda, device)
        self._res = _ResourceOwner(api, owns_cuda=not isinstance(cuda, CudaApi))
        self._finalizer = weakref.finalize(self, self._res.release)
        try:
            with api.activated():
                self._open(trt, api, auto_rebuild, build_metadata)
        except BaseException:
            self._finalizer()
            raise

    # ------------------------------------------------------------------------------------------- loading

    def _open(
        self, trt: ModuleType, api: CudaApi, auto_rebuild: bool, build_metadata: Optional[Mapping[str, Any]]
    ) -> None:
        if not self.model_path.is_file():
            raise BackendError(
                f"engine file {self.model_path} does not exist; fix: check the model path param"
            )
        self._runtime_info = RuntimeInfo(str(trt.__version__), api.device_name(), api.compute_capability())
        metadata = build_metadata if build_metadata is not None else load_build_metadata(self.model_path)
        self._build = BuildInfo.from_mapping(metadata)
        plan = self.model_path.read_bytes()
        self._header = read_plan_header(plan)
        mismatches = find_mismatches(self._header, self._build, self._runtime_info)
        if mismatches:
            message = mismatch_message(self.model_path, mismatches, self._build, self._runtime_info)
            if not auto_rebuild:
                raise EngineMismatchError(message)
            plan = self._rebuild(message)
            self._header = read_plan_header(plan)
            if build_metadata is None:  # the builder rewrote the sidecar: describe() reports the new build
                self._build = BuildInfo.from_mapping(load_build_metadata(self.model_path))

        self._logger = _make_logger(trt)
        self._plugin_handles = _load_plugin_libraries(trt, self._logger, self.plugin_libraries)
        res = self._res
        res.runtime = trt.Runtime(self._logger)
        self._allow_lean_runtime(res.runtime)
        mark = self._logger.count
        res.engine = res.runtime.deserialize_cuda_engine(plan)
        if res.engine is None:
            error = self._deserialize_error(self._logger.errors_since(mark))
            if not (auto_rebuild and isinstance(error, EngineMismatchError)) or mismatches:
                raise error
            # The header could not tell (8.x) and TensorRT refused the version or GPU: rebuild once.
            plan = self._rebuild(str(error))
            if build_metadata is None:
                self._build = BuildInfo.from_mapping(load_build_metadata(self.model_path))
            self._allow_lean_runtime(res.runtime)
            mark = self._logger.count
            res.engine = res.runtime.deserialize_cuda_engine(plan)
            if res.engine is None:
                raise self._deserialize_error(self._logger.errors_since(mark))
        self._api = _select_api(trt, res)
        self._dtypes = {
            getattr(trt.DataType, n): np.dtype(t) for n, t in _NUMPY_TYPES if hasattr(trt.DataType, n)
        }
        self._implicit_batch = isinstance(self._api, _BindingApi) and self._api.implicit_batch
        self._max_batch = int(res.engine.max_batch_size) if self._implicit_batch else 1
        self._make_buffers()
        mark = self._logger.count
        res.context = res.engine.create_execution_context()
        if res.context is None:
            errors = "; ".join(self._logger.errors_since(mark)) or "no TensorRT error was logged"
            raise BackendError(
                f"TensorRT could not create an execution context for {self.model_path} ({errors}); "
                "fix: free GPU memory (other processes, a smaller workspace) and retry"
            )
        res.stream = api.stream_create()
        self._stream_handle = api.stream_handle(res.stream)
        self._allocate_initial()
        LOG.info(
            "TensorRT %s engine %s: %s API, inputs %s, outputs %s, CUDA via %s on %s",
            trt.__version__,
            self.model_path.name,
            self._api.kind,
            [str(t) for t in self.inputs],
            [str(t) for t in self.outputs],
            api.name,
            self._runtime_info.gpu_name,
        )

    def _allow_lean_runtime(self, runtime: Any) -> None:
        """Let a version-compatible engine's embedded lean runtime load, where its build metadata says so.

        ``Runtime.engine_host_code_allowed`` (pyCore.cpp @v8.6.1 l.1297, @v10.0.0 l.1524; default False)
        must be True to deserialize a plan that carries host code, as trtexec does for --versionCompatible
        (sampleEngines.cpp @v8.6.1 l.121-125) and Polygraphy's loader. Only then: a plain engine never needs it.
        """
        if not self._build.version_compatible:
            return
        if hasattr(runtime, "engine_host_code_allowed"):
            runtime.engine_host_code_allowed = True
            LOG.info("engine %s is version-compatible: allowing its embedded lean runtime", self.model_path.name)
        else:
            LOG.warning(
                "engine %s is marked version_compatible, but TensorRT %s has no Runtime.engine_host_code_allowed "
                "(added in 8.6); version-compatible engines need TensorRT 8.6 or later to load",
                self.model_path.name,
                self._runtime_info.tensorrt_version,
            )

    def _rebuild(self, message: str) -> bytes:
        """auto_rebuild: build the engine again from its recorded source ONNX, then read the new plan."""
        source = resolve_source_onnx(self.model_path, self._build)
        if source is None or not source.is_file():
            where = (
                "is not recorded in the engine's build metadata"
                if source is None
                else f"({source}) is missing"
            )
            raise EngineMismatchError(
                f"{message}\nauto_rebuild is on, but the source ONNX {where}; "
                "fix: run the command above by hand"
            )
        try:
            from trt_perception.tools.build import build_engine
        except ImportError as exc:
            raise BackendError(
                f"auto_rebuild needs trt_perception.tools.build ({exc}); run: "
                f"{rebuild_command(self.model_path, self._build)}"
            ) from exc
        LOG.warning(
            "%s\nauto_rebuild is on: rebuilding %s from %s (this can take minutes on a Jetson)",
            message,
            self.model_path,
            source,
        )
        try:
            build_engine(
                str(source), str(self.model_path), precision=self._build.precision or "fp16", force=True
            )
        except BuildError as exc:
            raise EngineMismatchError(f"{message}\nauto_rebuild failed: {exc}") from exc
        return self.model_path.read_bytes()

    def _deserialize_error(self, errors: List[str]) -> BackendError:
        text = "\n".join(errors)
        logged = ("\nTensorRT said:\n  " + "\n  ".join(errors)) if errors else " (TensorRT logged no error)"
        command = rebuild_command(self.model_path, self._build)
        if _VERSION_ERROR_RE.search(text) or _DEVICE_ERROR_RE.search(text):
            what = "another TensorRT version" if _VERSION_ERROR_RE.search(text) else "another GPU"
            major, minor = self._runtime_info.compute_capability
            meaning = explain_version_error(text, self._runtime_info.tensorrt_version)
            return EngineMismatchError(
                f"TensorRT {self._runtime_info.tensorrt_version} cannot load engine {self.model_path}: "
                "it was built "
                f"with {what} (this GPU: {self._runtime_info.gpu_name}, compute capability "
                f"{major}.{minor})." + (f"\nThat is: {meaning}." if meaning else "") + f"{logged}\n"
                f"Engines are tied to the TensorRT version and GPU they were built with; rebuild it here:\n"
                f"  {command}"
                + ("" if self._build.source_onnx else "\n  (replace <model.onnx> with the engine's source ONNX)")
            )
        if "plugin" in text.lower():
            names = sorted({a or b for a, b in _PLUGIN_NAME_RE.findall(text)})
            plugin = f"plugin {', '.join(names)}" if names else "a plugin (TensorRT did not name it)"
            return BackendError(
                f"engine {self.model_path} needs TensorRT {plugin} that is not registered.{logged}\n"
                f"fix: add the .so that provides it to the plugin_libraries param (loaded now: "
                f"{self.plugin_libraries or 'none'}); TensorRT's own plugins (NMS_TRT, BatchedNMS_TRT, "
                "EfficientNMS_TRT...) come from libnvinfer_plugin, which this backend initializes itself"
            )
        if _MAGIC_ERROR_RE.search(text) or not self._header.magic_ok:
            return BackendError(
                f"{self.model_path} is not a serialized TensorRT engine this TensorRT can read (bad magic "
                f"tag: an ONNX file, a truncated copy, or another format?).{logged}\n"
                "fix: point the model param at "
                f"the .engine built by trt-perception build, or rebuild it: {command}"
            )
        lean = ""
        if not self._build.version_compatible and hasattr(self._res.runtime, "engine_host_code_allowed"):
            lean = (
                "\nIf it was built version-compatible (trtexec --versionCompatible, BuilderFlag.VERSION_COMPATIBLE),"
                " say so in its spec's build section (flags: [version_compatible]): its embedded lean runtime "
                "loads only when allowed."
            )
        return BackendError(
            f"TensorRT could not deserialize engine {self.model_path}.{logged}\n"
            f"If the engine is stale, rebuild it here: {command}{lean}"
        )

    # ------------------------------------------------------------------------------------------- buffers

    def _make_buffers(self) -> None:
        buffers = []
        for name, index, is_input, shape, trt_dtype in self._api.tensors():
            dtype = self._dtypes.get(trt_dtype)
            if dtype is None:
                raise BackendError(
                    f"engine tensor {name!r} has TensorRT dtype {getattr(trt_dtype, 'name', trt_dtype)}, which has "
                    "no numpy equivalent here; fix: rebuild the engine with FP32/FP16/INT32/INT8/UINT8/BOOL/INT64 "
                    "inputs and outputs (FP8, BF16, INT4 and FP4 tensors must stay inside the network)"
                )
            buffers.append(IOBuffer(name, index, is_input, dtype, shape))
        self._res.buffers = buffers
        self._inputs = [b for b in buffers if b.is_input]
        self._outputs = [b for b in buffers if not b.is_input]
        batch_dim: Tuple[Optional[int], ...] = (
            ((1 if self._max_batch == 1 else None),) if self._implicit_batch else ()
        )
        self.inputs = tuple(self._spec(b, batch_dim) for b in self._inputs)
        self.outputs = tuple(self._spec(b, batch_dim) for b in self._outputs)

    @staticmethod
    def _spec(buffer: IOBuffer, batch_dim: Tuple[Optional[int], ...]) -> TensorSpec:
        dims = tuple(None if d < 0 else d for d in buffer.engine_shape)
        return TensorSpec(buffer.name, (*batch_dim, *dims), buffer.dtype)

    def _reserve(self, buffer: IOBuffer, shape: Tuple[int, ...], room: Optional[Tuple[int, ...]] = None) -> None:
        """Give ``buffer`` the shape ``shape``; reallocate only when it needs more bytes than it has. ``room``:
        allocate for this (larger) shape now, so later shapes up to it keep the same memory."""
        buffer.shape = shape
        nbytes = buffer.nbytes
        if nbytes > buffer.capacity or buffer.storage is None:
            size = max(nbytes, int(np.prod(room, dtype=np.int64)) * buffer.dtype.itemsize if room else 0)
            self._res.free_buffer(buffer)
            buffer.storage = self._res.cuda.pinned_empty(size)
            buffer.device = self._res.cuda.malloc(size)
            buffer.capacity = max(1, size)
            self._addresses_changed = True
        buffer.host = buffer.storage[:nbytes].view(buffer.dtype).reshape(shape)

    def _allocate_initial(self) -> None:
        """Allocate every buffer whose shape is known now (dynamic inputs: the profile's opt shape)."""
        self._addresses_changed = False
        for buffer in self._inputs:
            if self._implicit_batch:
                self._reserve(buffer, (self._max_batch, *buffer.engine_shape))
                continue
            profile = self._api.profile_shapes(buffer) if buffer.dynamic else None
            shape = buffer.engine_shape if not buffer.dynamic else (profile[1] if profile else None)
            if shape is not None:
                if buffer.dynamic and not self._api.set_input_shape(buffer, shape):
                    raise BackendError(f"TensorRT refused the profile shape {shape} of input {buffer.name!r}")
                # room for the profile's max: the pinned buffer a preprocessor writes into never moves
                self._reserve(buffer, shape, room=profile[2] if profile else None)
        if all(b.storage is not None for b in self._inputs):
            self._refresh_outputs()
        self._bind_if_changed()

    def _refresh_outputs(self) -> None:
        for buffer in self._outputs:
            if self._implicit_batch:
                shape = (self._max_batch, *buffer.engine_shape)
            else:
                shape = self._api.output_shape(buffer)
            if any(d < 0 for d in shape):
                raise BackendError(
                    f"engine output {buffer.name!r} has a data-dependent shape {shape} (known only after "
                    "inference); this backend needs output shapes fixed by the input shapes; fix: export the "
                    "model with a fixed-size output (e.g. padded detections, as the NMS plugins produce)"
                )
            if shape != buffer.shape or buffer.storage is None:
                self._reserve(buffer, shape)

    def _bind_if_changed(self) -> None:
        if self._addresses_changed and all(b.storage is not None for b in self._res.buffers):
            self._api.bind(self._res.buffers)
            self._addresses_changed = False

    # --------------------------------------------------------------------------------------------- infer

    def input_buffer(self, name: str) -> Optional[np.ndarray]:
        """The pinned host array of input ``name``: write the frame here and ``infer`` skips its own copy."""
        for buffer in self._inputs:
            if buffer.name == name:
                if buffer.host is None:
                    return None
                return buffer.host[:1] if self._implicit_batch else buffer.host
        raise BackendError(f"engine has no input {name!r}; its inputs are {[b.name for b in self._inputs]}")

    def max_batch(self, name: str) -> Optional[int]:
        """An implicit-batch engine's max batch size; a dynamic batch dimension's max in profile 0."""
        if self._implicit_batch:
            return self._max_batch
        buffer = next((b for b in self._inputs if b.name == name), None)
        if buffer is None or not buffer.engine_shape or buffer.engine_shape[0] >= 0:
            return None
        profile = self._api.profile_shapes(buffer)
        return int(profile[2][0]) if profile else None

    def _static_input(self, name: str) -> IOBuffer:
        """The input ``name`` if it has a fixed shape and a device buffer, else a BackendError saying why."""
        buffer = next((b for b in self._inputs if b.name == name), None)
        if buffer is None:
            raise BackendError(
                f"gpu_preprocess: engine {self.model_path.name} has no input {name!r}; its inputs are "
                f"{[b.name for b in self._inputs]}; fix: set the spec's input.name to one of them"
            )
        if buffer.dynamic or not buffer.device:
            shape = tuple("?" if d < 0 else d for d in buffer.engine_shape)
            raise BackendError(
                f"gpu_preprocess needs a static input shape; input {name!r} of engine {self.model_path.name} "
                f"has shape {shape}; fix: rebuild the engine with a fixed input shape (trt-perception build "
                "with min = opt = max shapes), or turn gpu_preprocess off"
            )
        return buffer

    def device_input(self, name: str) -> Tuple[int, Any, CudaApi]:
        """(device address of input ``name``, this backend's stream, its ``CudaApi``) for GPU preprocessing.

        A kernel queued on that stream before ``infer(feed, on_device=(name,))`` writes the input in place;
        the address stays valid until ``close`` (static shapes only: dynamic inputs may be reallocated).
        """
        if self._res.released:
            raise BackendError(f"TensorRT backend for {self.model_path} is closed; create a new one")
        buffer = self._static_input(name)
        return buffer.device, self._res.stream, self._res.cuda

    def _stage_input(self, buffer: IOBuffer, array: np.ndarray) -> Tuple[np.ndarray, int]:
        """Check ``array`` against ``buffer`` (setting a new dynamic shape if needed).

        Returns the host array to copy into and the batch size (implicit-batch engines)."""
        if self._implicit_batch:
            if array.ndim == len(buffer.engine_shape):
                array = array[None]
            batch = array.shape[0] if array.ndim == len(buffer.engine_shape) + 1 else -1
            if array.shape[1:] != buffer.engine_shape or not 1 <= batch <= self._max_batch:
                raise BackendError(
                    f"input {buffer.name!r} has shape {array.shape}; the implicit-batch engine expects "
                    f"(batch, {', '.join(map(str, buffer.engine_shape))}) with batch 1..{self._max_batch}"
                )
            return buffer.host[:batch], batch
        if array.shape != buffer.shape:
            fits = len(array.shape) == len(buffer.engine_shape) and all(
                e < 0 or e == a for e, a in zip(buffer.engine_shape, array.shape)
            )
            if not buffer.dynamic or not fits:
                raise BackendError(
                    f"input {buffer.name!r} has shape {array.shape}; the engine expects "
                    f"{tuple('?' if d < 0 else d for d in buffer.engine_shape)}; fix: check the spec's input "
                    "size/layout against `trt-perception inspect` of this engine"
                )
            if not self._api.set_input_shape(buffer, array.shape):
                errors = "; ".join(self._logger.errors_since(0)[-3:])
                raise BackendError(
                    f"TensorRT refused shape {array.shape} for dynamic input {buffer.name!r} (outside the "
                    f"engine's optimization profile?): {errors or 'no error logged'}; "
                    "fix: feed a shape within "
                    "the profile the engine was built with, or rebuild it with a wider profile"
                )
            self._reserve(buffer, array.shape)
            self._shapes_changed = True
        return buffer.host, 1

    def infer(self, feed: Mapping[str, np.ndarray], on_device: Sequence[str] = ()) -> Dict[str, np.ndarray]:
        """Run one inference. Returned arrays are this backend's pinned buffers, valid until the next call.

        ``on_device``: inputs already written in device memory by work queued on this backend's stream
        (``device_input``); they are neither read from ``feed`` nor copied host-to-device.
        """
        res = self._res
        if res.released:
            raise BackendError(f"TensorRT backend for {self.model_path} is closed; create a new one")
        cuda = res.cuda
        if isinstance(on_device, str):
            on_device = (on_device,)  # one name, not a sequence of letters
        device_side = frozenset(self._static_input(name).name for name in on_device)
        with self._lock, cuda.activated():
            batch = 1
            self._shapes_changed = False
            for buffer in self._inputs:
                if buffer.name in device_side:
                    continue
                if buffer.name not in feed:
                    raise BackendError(
                        f"feed has no input {buffer.name!r} (got {sorted(feed)}); the engine's inputs are "
                        f"{[b.name for b in self._inputs]}"
                    )
                array = np.asarray(feed[buffer.name])
                destination, batch = self._stage_input(buffer, array)
                if array.__array_interface__["data"][0] != destination.__array_interface__["data"][0]:
                    try:
                        np.copyto(destination, array.reshape(destination.shape), casting="same_kind")
                    except TypeError as exc:
                        raise BackendError(
                            f"input {buffer.name!r} has dtype {array.dtype}; the engine binding is "
                            f"{buffer.dtype} and {array.dtype} -> {buffer.dtype} is not a same-kind cast; "
                            f"fix: feed {buffer.dtype} (or float32 for float16 bindings)"
                        ) from exc
            if self._shapes_changed:
                if any(b.storage is None for b in self._inputs):
                    raise BackendError("every dynamic input needs a shape before the first inference")
                self._refresh_outputs()
            if device_side and batch != 1:
                raise BackendError(
                    f"inputs {sorted(device_side)} are on the device with one batch item, but the feed has a "
                    f"batch of {batch}; fix: feed one batch item when a preprocessor writes on the device"
                )
            self._bind_if_changed()
            for buffer in self._inputs:
                if buffer.name in device_side:
                    continue  # written in place by work queued earlier on this stream
                cuda.memcpy_htod_async(
                    buffer.device, buffer.host[:batch] if self._implicit_batch else buffer.host, res.stream
                )
            mark = self._logger.count
            if not self._api.execute(self._stream_handle, batch):
                cuda.stream_synchronize(res.stream)
                errors = "; ".join(self._logger.errors_since(mark)) or "no TensorRT error was logged"
                raise BackendError(f"TensorRT execution of {self.model_path.name} failed: {errors}")
            results = {}
            for buffer in self._outputs:
                host = buffer.host[:batch] if self._implicit_batch else buffer.host
                cuda.memcpy_dtoh_async(host, buffer.device, res.stream)
                results[buffer.name] = host
            cuda.stream_synchronize(res.stream)
        return results

    # ------------------------------------------------------------------------------------------ lifecycle

    def describe(self) -> Dict[str, str]:
        info = self._runtime_info
        built = self._build.tensorrt_version or (
            ".".join(map(str, self._header.tensorrt_version)) if self._header.tensorrt_version else "unknown"
        )
        return {
            "backend": self.name,
            "tensorrt": info.tensorrt_version,
            "api": self._api.kind,
            "cuda": self._res.cuda.name,
            "gpu": f"{info.gpu_name} (compute {info.compute_capability[0]}.{info.compute_capability[1]})",
            "engine_built_with": f"TensorRT {built}",
            "precision": self._build.precision or "unknown",
            "max_batch_size": str(self._max_batch),
        }

    def close(self) -> None:
        """Free TensorRT objects, buffers, the stream and the CUDA context, in that order; idempotent."""
        with self._lock:
            self._finalizer()
