"""A tiny CUDA adapter for the TensorRT backend: pinned host buffers, device buffers, one stream, copies.

Two implementations of the same small interface, because Jetson users have pycuda (JetPack's pip wheel) and
TensorRT 10 samples use cuda-python (``cuda.bindings.runtime``). The backend never imports either package;
it asks ``select_cuda_api`` for whichever is installed (or the one named in params).

Threading: the ROS node calls ``infer`` from executor threads, and CUDA contexts are per thread. Both
implementations use the device's *primary* context (the one the CUDA runtime and TensorRT use) and make it
current around every call with ``activated()``: pycuda pushes/pops it (pycuda contexts are thread-bound;
see pycuda's ``scoped_context_activation``), cuda-python sets the device once per thread (the runtime API
then binds the primary context to that thread).
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import importlib
import threading
from types import ModuleType
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception.errors import BackendError

CUDA_APIS = ("pycuda", "cuda-python")
_INSTALL_HINTS = {
    "pycuda": "pip install pycuda (on a Jetson: with JetPack's CUDA on PATH, e.g. "
    "export PATH=/usr/local/cuda/bin:$PATH; pip3 install pycuda)",
    "cuda-python": "pip install cuda-python (matching the driver's CUDA major, e.g. 'cuda-python>=12,<13')",
}


class CudaApi(abc.ABC):
    """What the TensorRT backend needs from CUDA. Pointers and stream handles are plain ints."""

    name: str = "cuda"

    def __init__(self, device: int = 0) -> None:
        self.device = int(device)

    @abc.abstractmethod
    def activated(self) -> contextlib.AbstractContextManager:
        """Make this API's CUDA context current on the calling thread for the ``with`` block."""

    @abc.abstractmethod
    def device_name(self) -> str:
        """The GPU's marketing name (e.g. 'NVIDIA Tegra X1', 'Orin')."""

    @abc.abstractmethod
    def compute_capability(self) -> Tuple[int, int]:
        """The GPU's (major, minor) compute capability; engines are built for one."""

    @abc.abstractmethod
    def pinned_empty(self, nbytes: int) -> np.ndarray:
        """A flat uint8 array of ``nbytes`` in page-locked host memory (what async copies need)."""

    @abc.abstractmethod
    def free_pinned(self, array: np.ndarray) -> None:
        """Release an array made by ``pinned_empty``; the array must not be used afterwards."""

    @abc.abstractmethod
    def malloc(self, nbytes: int) -> int:
        """Allocate ``nbytes`` of device memory and return its address."""

    @abc.abstractmethod
    def free(self, pointer: int) -> None:
        """Free device memory from ``malloc``."""

    @abc.abstractmethod
    def stream_create(self) -> Any:
        """Create a CUDA stream; the returned object goes back into the copy/sync calls."""

    @abc.abstractmethod
    def stream_handle(self, stream: Any) -> int:
        """The raw ``cudaStream_t`` value TensorRT's ``execute_async*`` calls take."""

    @abc.abstractmethod
    def stream_synchronize(self, stream: Any) -> None:
        """Block until everything queued on ``stream`` is done."""

    @abc.abstractmethod
    def stream_destroy(self, stream: Any) -> None:
        """Destroy a stream from ``stream_create``."""

    @abc.abstractmethod
    def memcpy_htod_async(self, pointer: int, host: np.ndarray, stream: Any) -> None:
        """Queue a copy of the contiguous ``host`` array (all of its bytes) to device address ``pointer``."""

    @abc.abstractmethod
    def memcpy_dtoh_async(self, host: np.ndarray, pointer: int, stream: Any) -> None:
        """Queue a copy of ``host.nbytes`` bytes from device address ``pointer`` into ``host``."""

    def close(self) -> None:  # noqa: B027 - optional hook, most adapters hold nothing to release
        """Release the context reference this API holds; safe to call twice."""


def _import(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"CUDA binding {package!r} is not installed (import {module} failed: {exc}); "
            f"fix: {_INSTALL_HINTS[package]}, or set the backend option cuda to "
            f"'{next(p for p in CUDA_APIS if p != package)}'"
        ) from exc


# --------------------------------------------------------------------------------------------- pycuda


class PyCudaApi(CudaApi):
    """pycuda.driver on the device's primary context, pushed/popped around every call.

    The primary context is retained (never ``pycuda.autoinit``, which makes a thread-bound context in the
    importing thread). pycuda refuses to *switch to* a context from a thread other than its creator
    ("cannot activate out-of-thread context") but an explicitly pushed context is current, so frees done
    inside ``activated()`` work from any thread.
    """

    name = "pycuda"

    def __init__(self, device: int = 0) -> None:
        super().__init__(device)
        self._driver = _import("pycuda.driver", "pycuda")
        self._driver.init()
        count = self._driver.Device.count()
        if not 0 <= self.device < count:
            raise BackendError(
                f"CUDA device {self.device} does not exist (pycuda sees {count}); fix: set device"
            )
        self._cu_device = self._driver.Device(self.device)
        self._context: Any = self._cu_device.retain_primary_context()
        self._allocations: Dict[int, Any] = {}

    @contextlib.contextmanager
    def activated(self) -> Iterator[None]:
        if self._context is None:
            raise BackendError(
                "the pycuda context was already released (backend closed); create a new backend"
            )
        self._context.push()
        try:
            yield
        finally:
            self._driver.Context.pop()

    def device_name(self) -> str:
        return str(self._cu_device.name())

    def compute_capability(self) -> Tuple[int, int]:
        major, minor = self._cu_device.compute_capability()
        return int(major), int(minor)

    def pinned_empty(self, nbytes: int) -> np.ndarray:
        return self._driver.pagelocked_empty(max(1, int(nbytes)), np.uint8)

    def free_pinned(self, array: np.ndarray) -> None:
        allocation = array.base  # pycuda's HostAllocation owns the page-locked memory
        if allocation is not None and hasattr(allocation, "free"):
            allocation.free()

    def malloc(self, nbytes: int) -> int:
        allocation = self._driver.mem_alloc(max(1, int(nbytes)))
        pointer = int(allocation)
        self._allocations[pointer] = allocation  # keep it alive: pycuda frees on garbage collection
        return pointer

    def free(self, pointer: int) -> None:
        allocation = self._allocations.pop(int(pointer), None)
        if allocation is None:
            raise BackendError(
                f"device pointer {pointer:#x} was not allocated by this PyCudaApi (double free?)"
            )
        allocation.free()

    def stream_create(self) -> Any:
        return self._driver.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def stream_destroy(self, stream: Any) -> None:
        # pycuda destroys a Stream when its last reference goes; the caller drops its reference inside
        # activated(), so cuStreamDestroy runs with the context current.
        stream.synchronize()

    def memcpy_htod_async(self, pointer: int, host: np.ndarray, stream: Any) -> None:
        self._driver.memcpy_htod_async(int(pointer), host, stream)

    def memcpy_dtoh_async(self, host: np.ndarray, pointer: int, stream: Any) -> None:
        self._driver.memcpy_dtoh_async(host, int(pointer), stream)

    def close(self) -> None:
        if self._context is None:
            return
        context, self._context = self._context, None
        # detach() on a pushed context releases the primary-context reference and pops it (pycuda
        # context::detach); pushing first makes this work from any thread.
        context.push()
        context.detach()


# ---------------------------------------------------------------------------------------- cuda-python


def _import_cudart() -> ModuleType:
    try:
        return importlib.import_module("cuda.bindings.runtime")  # cuda-python >= 12.6 (cuda-bindings)
    except ImportError:
        pass
    try:
        return importlib.import_module("cuda.cudart")  # older cuda-python 11.x/12.x layout
    except ImportError as exc:
        raise BackendError(
            f"CUDA binding 'cuda-python' is not installed (neither cuda.bindings.runtime nor cuda.cudart "
            f"imports: {exc}); fix: {_INSTALL_HINTS['cuda-python']}, "
            "or set the backend option cuda to 'pycuda'"
        ) from exc


class CudaPythonApi(CudaApi):
    """cuda-python's runtime API (``cuda.bindings.runtime``); calls return (error, value...) tuples."""

    name = "cuda-python"

    def __init__(self, device: int = 0) -> None:
        super().__init__(device)
        self._rt = _import_cudart()
        self._thread_state = threading.local()
        count = self._call("cudaGetDeviceCount")
        if not 0 <= self.device < int(count):
            raise BackendError(
                f"CUDA device {self.device} does not exist (CUDA sees {count}); fix: set device"
            )
        self._closed = False

    def _call(self, function: str, *args: Any) -> Any:
        result = getattr(self._rt, function)(*args)
        error, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if int(error) != 0:
            name = getattr(error, "name", str(error))
            raise BackendError(f"CUDA call {function}{args!r} failed with {name} (cuda-python runtime API)")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    @contextlib.contextmanager
    def activated(self) -> Iterator[None]:
        if self._closed:
            raise BackendError("this cuda-python API was closed (backend closed); create a new backend")
        # The runtime API binds the device's primary context to each thread on first use of the device;
        # cudaSetDevice is per thread, so do it once in every thread that runs inference.
        if getattr(self._thread_state, "device", None) != self.device:
            self._call("cudaSetDevice", self.device)
            self._thread_state.device = self.device
        yield

    def device_name(self) -> str:
        props = self._call("cudaGetDeviceProperties", self.device)
        name = props.name
        if isinstance(name, (bytes, bytearray)):
            name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
        return str(name)

    def compute_capability(self) -> Tuple[int, int]:
        attrs = self._rt.cudaDeviceAttr
        major = self._call("cudaDeviceGetAttribute", attrs.cudaDevAttrComputeCapabilityMajor, self.device)
        minor = self._call("cudaDeviceGetAttribute", attrs.cudaDevAttrComputeCapabilityMinor, self.device)
        return int(major), int(minor)

    def pinned_empty(self, nbytes: int) -> np.ndarray:
        size = max(1, int(nbytes))
        pointer = int(self._call("cudaMallocHost", size))
        storage = (ctypes.c_uint8 * size).from_address(pointer)
        return np.frombuffer(storage, dtype=np.uint8, count=size)

    def free_pinned(self, array: np.ndarray) -> None:
        self._call("cudaFreeHost", int(array.ctypes.data))

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", max(1, int(nbytes))))

    def free(self, pointer: int) -> None:
        self._call("cudaFree", int(pointer))

    def stream_create(self) -> Any:
        return self._call("cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_synchronize(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", stream)

    def stream_destroy(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", stream)

    def memcpy_htod_async(self, pointer: int, host: np.ndarray, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", int(pointer), int(host.ctypes.data), int(host.nbytes), kind, stream)

    def memcpy_dtoh_async(self, host: np.ndarray, pointer: int, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", int(host.ctypes.data), int(pointer), int(host.nbytes), kind, stream)

    def close(self) -> None:
        # The runtime's primary context lives for the process (TensorRT and other libraries share it),
        # so there is nothing to release here beyond refusing further use.
        self._closed = True


# ---------------------------------------------------------------------------------------------- choice


def _installed(package: str) -> bool:
    module = "pycuda.driver" if package == "pycuda" else None
    try:
        if module is not None:
            importlib.import_module(module)
        else:
            _import_cudart()
    except (ImportError, BackendError):
        return False
    return True


def select_cuda_api(name: Union[str, CudaApi] = "auto", device: int = 0) -> CudaApi:
    """The CUDA adapter to use: ``name`` 'pycuda' | 'cuda-python' | 'auto' (cuda-python, else pycuda).

    An already built ``CudaApi`` is returned unchanged (tests and callers that share one adapter).
    """
    if isinstance(name, CudaApi):
        return name
    wanted = str(name).lower().replace("_", "-")
    if wanted in ("cuda", "cudapython", "cuda-bindings"):
        wanted = "cuda-python"
    if wanted == "pycuda":
        return PyCudaApi(device)
    if wanted == "cuda-python":
        return CudaPythonApi(device)
    if wanted != "auto":
        raise BackendError(
            f"backend option cuda is {name!r}; expected one of {['auto', *CUDA_APIS]}; "
            "fix: set cuda to 'auto', 'pycuda' or 'cuda-python'"
        )
    order: Sequence[str] = ("cuda-python", "pycuda")
    for package in order:
        if _installed(package):
            return CudaPythonApi(device) if package == "cuda-python" else PyCudaApi(device)
    raise BackendError(
        "no CUDA Python binding is installed, and the TensorRT backend needs one for its buffers and stream; "
        f"fix: install one of them: {_INSTALL_HINTS['cuda-python']}; or {_INSTALL_HINTS['pycuda']}"
    )


def describe_api(api: Optional[CudaApi]) -> str:
    """A one-word name for logs and diagnostics."""
    return "none" if api is None else api.name
