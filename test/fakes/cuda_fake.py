"""CUDA test doubles: a pretend GPU, and fake ``pycuda.driver`` and ``cuda.bindings.runtime`` modules on it.

``FakeGpu`` holds device memory (bytearrays by address), streams whose work runs in order at synchronize
time (as real async copies and kernels do: an output read before the sync is stale), and an event log
(``gpu.events``: allocations, copies with byte counts, syncs, context pushes/pops, each with its thread) for
tests to assert on.

``make_pycuda_driver(gpu)`` mirrors the pycuda.driver calls the backend uses, as pycuda defines them
(inducer/pycuda src/wrapper/wrap_cudadrv.cpp and src/cpp/cuda.hpp at commit 19bed90):
``init(flags=0)``; ``Device(n)`` with ``count()`` (static), ``name()``, ``compute_capability()``,
``retain_primary_context()``; ``Context`` with ``push()``, ``pop()`` (static), ``detach()``,
``get_current()`` (static); ``pagelocked_empty(shape, dtype, order='C', mem_flags=0)`` (array ``.base`` is
the host allocation with ``free()``); ``mem_alloc(bytes)`` -> ``DeviceAllocation`` (``int()``, ``free()``);
``memcpy_htod_async(dest, src, stream=None)``; ``memcpy_dtoh_async(dest, src, stream=None)``;
``Stream(flags=0)`` with ``handle`` and ``synchronize()``. Context rules mirrored from cuda.hpp: calls that
need a context fail in a thread where none is current ("invalid device context"); a context is bound to
its creating thread (``scoped_context_activation``: "cannot activate out-of-thread context") unless it is
pushed explicitly; ``pop()`` with nothing pushed fails; ``detach()`` of a current context pops it.

``make_cudart(gpu)`` mirrors the cuda-python runtime calls (cuda.bindings.runtime, as used by TensorRT's
samples/python/common_runtime.py at v10.13.3 and the cuda-bindings 13.x signatures): every call returns a
tuple starting with a ``cudaError_t``; ``cudaGetDeviceCount()``, ``cudaSetDevice(device)`` (per thread),
``cudaGetDeviceProperties(device)`` (``name`` as bytes, ``major``, ``minor``),
``cudaDeviceGetAttribute(attr, device)``, ``cudaMalloc(size)``, ``cudaFree(ptr)``, ``cudaMallocHost(size)``,
``cudaFreeHost(ptr)``, ``cudaMemcpyAsync(dst, src, count, kind, stream)``, ``cudaStreamCreate()`` ->
``cudaStream_t`` (``int()`` gives the handle), ``cudaStreamSynchronize``, ``cudaStreamDestroy``.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import threading
import types
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np


class FakeCudaError(RuntimeError):
    """A CUDA misuse the real driver would also reject (bad address, freed memory, no context)."""


class FakeStream:
    """Work queued in order; it runs at ``synchronize`` (the fake's notion of "the GPU got to it")."""

    def __init__(self, gpu: FakeGpu, handle: int) -> None:
        self.gpu = gpu
        self.handle = handle
        self.pending: List[Callable[[], None]] = []
        self.destroyed = False

    def enqueue(self, work: Callable[[], None]) -> None:
        if self.destroyed:
            raise FakeCudaError(f"stream {self.handle:#x} was destroyed")
        self.pending.append(work)

    def synchronize(self) -> None:
        work, self.pending = self.pending, []
        for item in work:
            item()


class FakeGpu:
    """A pretend GPU shared by the CUDA and TensorRT doubles of one test."""

    def __init__(self, name: str = "Orin (fake)", compute_capability: Tuple[int, int] = (8, 7)) -> None:
        self.name = name
        self.compute_capability = compute_capability
        self.memory: Dict[int, bytearray] = {}
        self.streams: Dict[int, FakeStream] = {}
        self.events: List[Tuple[str, Dict[str, Any]]] = []
        self._next_address = 0x7F0000000000
        self._handles = itertools.count(0x5000, 0x10)
        self.lock = threading.RLock()

    # -- log
    def record(self, kind: str, **info: Any) -> None:
        info.setdefault("thread", threading.get_ident())
        with self.lock:
            self.events.append((kind, info))

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.events if k == kind)

    def kinds(self) -> List[str]:
        return [k for k, _ in self.events]

    def of(self, kind: str) -> List[Dict[str, Any]]:
        return [info for k, info in self.events if k == kind]

    def clear_events(self) -> None:
        self.events.clear()

    # -- memory
    def malloc(self, nbytes: int) -> int:
        if nbytes <= 0:
            raise FakeCudaError(f"malloc of {nbytes} bytes")
        with self.lock:
            address = self._next_address
            self._next_address += (nbytes // 0x10000 + 2) * 0x10000  # disjoint, with a gap between blocks
            self.memory[address] = bytearray(nbytes)
        self.record("malloc", pointer=address, nbytes=nbytes)
        return address

    def free(self, address: int) -> None:
        if address not in self.memory:
            raise FakeCudaError(f"free of {address:#x}, which is not an allocation (double free?)")
        del self.memory[address]
        self.record("free", pointer=address)

    def view(self, address: int, nbytes: int) -> memoryview:
        """Device bytes [address, address + nbytes), which must lie inside one live allocation."""
        for base, block in self.memory.items():
            if base <= address and address + nbytes <= base + len(block):
                return memoryview(block)[address - base : address - base + nbytes]
        raise FakeCudaError(
            f"illegal address: {nbytes} bytes at {address:#x} are not inside a live allocation"
        )

    # -- streams
    def new_stream(self) -> FakeStream:
        stream = FakeStream(self, next(self._handles))
        self.streams[stream.handle] = stream
        self.record("stream_create", stream=stream.handle)
        return stream

    def stream(self, handle: int) -> FakeStream:
        if handle not in self.streams or self.streams[handle].destroyed:
            raise FakeCudaError(f"stream handle {handle!r} is not a live stream")
        return self.streams[handle]

    def destroy_stream(self, handle: int) -> None:
        stream = self.stream(handle)
        stream.synchronize()
        stream.destroyed = True
        self.record("stream_destroy", stream=handle)

    def copy_htod(self, address: int, host: memoryview, stream: FakeStream) -> None:
        nbytes = host.nbytes
        self.view(address, nbytes)  # fail at call time on a bad address, as the driver's checks do
        self.record("htod", pointer=address, nbytes=nbytes, stream=stream.handle)

        def run() -> None:
            self.view(address, nbytes)[:] = host.cast("B")

        stream.enqueue(run)

    def copy_dtoh(self, host: memoryview, address: int, stream: FakeStream) -> None:
        nbytes = host.nbytes
        self.view(address, nbytes)
        self.record("dtoh", pointer=address, nbytes=nbytes, stream=stream.handle)

        def run() -> None:
            host.cast("B")[:] = self.view(address, nbytes)

        stream.enqueue(run)

    def synchronize(self, stream: FakeStream) -> None:
        self.record("sync", stream=stream.handle)
        stream.synchronize()


def _host_view(array: np.ndarray) -> memoryview:
    if not array.flags.c_contiguous:
        raise FakeCudaError("host buffer is not contiguous (real async copies need contiguous pinned memory)")
    return memoryview(array.reshape(-1).view(np.uint8))


# ----------------------------------------------------------------------------------------------- pycuda


def make_pycuda_driver(gpu: FakeGpu) -> types.ModuleType:
    """A fake ``pycuda.driver`` on ``gpu`` (see the module docstring for what it mirrors)."""
    driver = types.ModuleType("pycuda.driver")
    stack = threading.local()
    state = {"initialized": False}

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    def _stack() -> List[Any]:
        if not hasattr(stack, "items"):
            stack.items = []
        return stack.items

    def _current() -> Optional[Context]:
        items = [c for c in _stack() if c.valid]
        return items[-1] if items else None

    def _require_context(call: str) -> Context:
        if not state["initialized"]:
            raise LogicError(f"{call} failed: initialization error (cuda.init() was not called)")
        context = _current()
        if context is None:
            raise LogicError(f"{call} failed: invalid device context")
        return context

    def init(flags: int = 0) -> None:
        state["initialized"] = True

    class Context:
        def __init__(self) -> None:
            self.valid = True
            self.thread = threading.get_ident()

        def push(self) -> None:
            if not self.valid:
                raise LogicError("cuCtxPushCurrent failed: invalid context")
            _stack().append(self)
            gpu.record("push")

        @staticmethod
        def pop() -> None:
            items = _stack()
            if not items:
                raise LogicError("context::pop failed: cannot pop non-current context")
            items.pop()
            gpu.record("pop")

        @staticmethod
        def get_current() -> Optional[Context]:
            return _current()

        def detach(self) -> None:
            if not self.valid:
                raise LogicError("context::detach failed: cannot detach from invalid context")
            if _current() is self:
                items = _stack()
                while items and items[-1] is self:
                    items.pop()
            elif self.thread != threading.get_ident():
                self.valid = False  # pycuda: leaked out-of-thread context, silently
                gpu.record("detach", leaked=True)
                return
            self.valid = False
            gpu.record("detach", leaked=False)

    def _activate(context: Context, call: str) -> bool:
        """pycuda's scoped_context_activation: push the owner unless current; refuse other threads'."""
        if not context.valid:
            raise LogicError(f"{call}: cannot activate dead context")
        if _current() is context:
            return False
        if context.thread != threading.get_ident():
            raise LogicError(f"{call}: cannot activate out-of-thread context")
        _stack().append(context)
        return True

    class Device:
        def __init__(self, number: int) -> None:
            if not state["initialized"]:
                raise LogicError("cuDeviceGet failed: initialization error (cuda.init() was not called)")
            if number != 0:
                raise LogicError(f"cuDeviceGet failed: invalid device ordinal {number}")
            self.number = number

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return gpu.name

        def compute_capability(self) -> Tuple[int, int]:
            return gpu.compute_capability

        def retain_primary_context(self) -> Context:
            gpu.record("retain_primary_context")
            return Context()

    class HostAllocation:
        def __init__(self, nbytes: int, context: Context) -> None:
            self.buffer = bytearray(nbytes)
            self.context = context
            self.freed = False

        def free(self) -> None:
            if self.freed:
                raise LogicError("cuMemFreeHost failed: already freed")
            switched = _activate(self.context, "HostAllocation.free")
            self.freed = True
            gpu.record("host_free", nbytes=len(self.buffer))
            if switched:
                _stack().pop()

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        context = _require_context("cuMemHostAlloc")
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64)) if np.ndim(shape) else int(shape)
        allocation = HostAllocation(count * dtype.itemsize, context)
        gpu.record("host_alloc", nbytes=count * dtype.itemsize)
        array = np.frombuffer(allocation.buffer, dtype=dtype, count=count)
        return np.asarray(_HostAllocationExporter(array.reshape(shape, order=order), allocation))

    class DeviceAllocation:
        def __init__(self, nbytes: int, context: Context) -> None:
            self.pointer = gpu.malloc(nbytes)
            self.context = context
            self.freed = False

        def __int__(self) -> int:
            return self.pointer

        __index__ = __int__

        def free(self) -> None:
            if self.freed:
                return
            switched = _activate(self.context, "DeviceAllocation.free")
            gpu.free(self.pointer)
            self.freed = True
            if switched:
                _stack().pop()

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        return DeviceAllocation(int(nbytes), _require_context("cuMemAlloc"))

    class Stream:
        def __init__(self, flags: int = 0) -> None:
            _require_context("cuStreamCreate")
            self._stream = gpu.new_stream()

        @property
        def handle(self) -> int:
            return self._stream.handle

        def synchronize(self) -> None:
            _require_context("cuStreamSynchronize")
            gpu.synchronize(self._stream)

        def __del__(self) -> None:
            stream = self.__dict__.get("_stream")
            if stream is not None and not stream.destroyed:
                gpu.destroy_stream(stream.handle)

    def _stream_of(stream: Optional[Stream]) -> FakeStream:
        if stream is None:
            raise FakeCudaError("async copy on the NULL stream: the backend must use its own stream")
        return stream._stream

    def memcpy_htod_async(dest: Union[int, DeviceAllocation], src: np.ndarray, stream: Any = None) -> None:
        _require_context("cuMemcpyHtoDAsync")
        gpu.copy_htod(int(dest), _host_view(src), _stream_of(stream))

    def memcpy_dtoh_async(dest: np.ndarray, src: Union[int, DeviceAllocation], stream: Any = None) -> None:
        _require_context("cuMemcpyDtoHAsync")
        gpu.copy_dtoh(_host_view(dest), int(src), _stream_of(stream))

    exported = (
        Error,
        LogicError,
        init,
        Context,
        Device,
        pagelocked_empty,
        DeviceAllocation,
        mem_alloc,
        Stream,
        memcpy_htod_async,
        memcpy_dtoh_async,
    )
    for item in exported:
        setattr(driver, item.__name__, item)
    driver.gpu = gpu
    return driver


class _HostAllocationExporter:
    """Exports a pinned buffer to numpy so that the array's ``.base`` is an object with ``free()``,
    as the arrays from pycuda's ``pagelocked_empty`` have (their base is the HostAllocation)."""

    def __init__(self, array: np.ndarray, allocation: Any) -> None:
        self.__array_interface__ = dict(array.__array_interface__)
        self._keep = array
        self.allocation = allocation

    def free(self) -> None:
        self.allocation.free()


# ------------------------------------------------------------------------------------------ cuda-python


def make_cudart(gpu: FakeGpu) -> types.ModuleType:
    """A fake ``cuda.bindings.runtime`` on ``gpu`` (see the module docstring for what it mirrors)."""
    rt = types.ModuleType("cuda.bindings.runtime")
    per_thread = threading.local()
    host_blocks: Dict[int, Any] = {}

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorMemoryAllocation = 2
        cudaErrorInvalidDevice = 101
        cudaErrorInvalidResourceHandle = 400
        cudaErrorIllegalAddress = 700

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToHost = 0
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2
        cudaMemcpyDeviceToDevice = 3
        cudaMemcpyDefault = 4

    class cudaDeviceAttr(enum.IntEnum):
        cudaDevAttrComputeCapabilityMajor = 75
        cudaDevAttrComputeCapabilityMinor = 76

    class cudaStream_t:
        def __init__(self, handle: int = 0) -> None:
            self._handle = int(handle)

        def __int__(self) -> int:
            return self._handle

        def getPtr(self) -> int:
            return id(self)

    class cudaDeviceProp:
        def __init__(self) -> None:
            self.name = gpu.name.encode() + b"\0" * 8
            self.major, self.minor = gpu.compute_capability

    success = cudaError_t.cudaSuccess

    def _device() -> int:
        return getattr(per_thread, "device", 0)

    def cudaGetDeviceCount() -> Tuple[Any, int]:
        return success, 1

    def cudaSetDevice(device: int) -> Tuple[Any]:
        if device != 0:
            return (cudaError_t.cudaErrorInvalidDevice,)
        per_thread.device = device
        gpu.record("set_device", device=device)
        return (success,)

    def cudaGetDevice() -> Tuple[Any, int]:
        return success, _device()

    def cudaGetDeviceProperties(device: int) -> Tuple[Any, Any]:
        if device != 0:
            return cudaError_t.cudaErrorInvalidDevice, None
        return success, cudaDeviceProp()

    def cudaDeviceGetAttribute(attr: Any, device: int) -> Tuple[Any, int]:
        if device != 0:
            return cudaError_t.cudaErrorInvalidDevice, 0
        if attr == cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor:
            return success, gpu.compute_capability[0]
        if attr == cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor:
            return success, gpu.compute_capability[1]
        return cudaError_t.cudaErrorInvalidValue, 0

    def cudaMalloc(size: int) -> Tuple[Any, int]:
        if size <= 0:
            return cudaError_t.cudaErrorInvalidValue, 0
        return success, gpu.malloc(int(size))

    def cudaFree(pointer: int) -> Tuple[Any]:
        if int(pointer) not in gpu.memory:
            return (cudaError_t.cudaErrorInvalidValue,)
        gpu.free(int(pointer))
        return (success,)

    def cudaMallocHost(size: int) -> Tuple[Any, int]:
        block = (ctypes.c_uint8 * int(size))()
        address = ctypes.addressof(block)
        host_blocks[address] = block
        gpu.record("host_alloc", nbytes=int(size))
        return success, address

    def cudaFreeHost(pointer: int) -> Tuple[Any]:
        if host_blocks.pop(int(pointer), None) is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        gpu.record("host_free", pointer=int(pointer))
        return (success,)

    def _host(address: int, count: int) -> memoryview:
        for base, block in host_blocks.items():
            if base <= address and address + count <= base + ctypes.sizeof(block):
                return memoryview(block).cast("B")[address - base : address - base + count]
        raise FakeCudaError(f"host pointer {address:#x} is not pinned memory from cudaMallocHost")

    def _stream(stream: Any) -> FakeStream:
        return gpu.stream(int(stream))

    def cudaMemcpyAsync(dst: Any, src: Any, count: int, kind: Any, stream: Any) -> Tuple[Any]:
        try:
            if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
                gpu.copy_htod(int(dst), _host(int(src), int(count)), _stream(stream))
            elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
                gpu.copy_dtoh(_host(int(dst), int(count)), int(src), _stream(stream))
            else:
                return (cudaError_t.cudaErrorInvalidValue,)
        except FakeCudaError:
            return (cudaError_t.cudaErrorIllegalAddress,)
        return (success,)

    def cudaStreamCreate() -> Tuple[Any, Any]:
        return success, cudaStream_t(gpu.new_stream().handle)

    def cudaStreamSynchronize(stream: Any) -> Tuple[Any]:
        try:
            gpu.synchronize(_stream(stream))
        except FakeCudaError:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (success,)

    def cudaStreamDestroy(stream: Any) -> Tuple[Any]:
        try:
            gpu.destroy_stream(int(stream))
        except FakeCudaError:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (success,)

    for name, value in dict(locals()).items():
        if name.startswith("cuda"):
            setattr(rt, name, value)
    rt.gpu = gpu
    return rt


# ----------------------------------------------------------------------------------------- installation


def install_pycuda(monkeypatch: Any, gpu: FakeGpu) -> types.ModuleType:
    """Make ``import pycuda.driver`` give the fake (and hide cuda-python, so 'auto' picks pycuda)."""
    driver = make_pycuda_driver(gpu)
    package = types.ModuleType("pycuda")
    package.driver = driver  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "pycuda", package)
    monkeypatch.setitem(__import__("sys").modules, "pycuda.driver", driver)
    for hidden in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(__import__("sys").modules, hidden, None)
    return driver


def install_cuda_python(monkeypatch: Any, gpu: FakeGpu, layout: str = "bindings") -> types.ModuleType:
    """Make cuda-python's runtime importable as the fake: 'bindings' (>= 12.6) or 'legacy' (cuda.cudart)."""
    import sys

    rt = make_cudart(gpu)
    cuda = types.ModuleType("cuda")
    if layout == "bindings":
        bindings = types.ModuleType("cuda.bindings")
        bindings.runtime = rt  # type: ignore[attr-defined]
        cuda.bindings = bindings  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
        monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    else:
        cuda.cudart = rt  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "cuda.cudart", rt)
        monkeypatch.setitem(sys.modules, "cuda.bindings", None)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    for hidden in ("pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, hidden, None)
    return rt


def hide_cuda_bindings(monkeypatch: Any, names: Sequence[str] = ("pycuda", "cuda")) -> None:
    """Make the named bindings un-importable (``sys.modules[name] = None`` makes import raise ImportError)."""
    import sys

    for name in names:
        for module in (
            name,
            f"{name}.driver",
            f"{name}.bindings",
            f"{name}.bindings.runtime",
            f"{name}.cudart",
        ):
            monkeypatch.setitem(sys.modules, module, None)
