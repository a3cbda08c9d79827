"""The CUDA adapter on a real GPU: pinned/device round trips, stream ordering, use from a second thread, and
the TensorRT backend's buffer path end to end with real CUDA (TensorRT itself faked: its "engine" is a
device-to-device copy queued on the backend's stream).

Skipped where there is no GPU or the binding (cuda-python / pycuda) is missing. On the device machine:
``python -m pytest test/backends/test_backends_cuda_gpu.py -v -s`` (``-s`` shows the timing lines).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import numpy as np
import pytest

TEST_DIR = str(Path(__file__).resolve().parents[1])
if TEST_DIR not in sys.path:
    sys.path.insert(0, TEST_DIR)

from trt_perception.backends.cuda import CudaApi, select_cuda_api  # noqa: E402
from trt_perception.errors import BackendError  # noqa: E402

pytestmark = pytest.mark.gpu


def _gpu_api(name: str) -> CudaApi:
    try:
        api = select_cuda_api(name)
    except BackendError as exc:
        pytest.skip(f"{name} unusable here: {exc}")
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError when there is no driver/GPU
        pytest.skip(f"{name}: no usable CUDA GPU ({type(exc).__name__}: {exc})")
    return api


@pytest.fixture(params=["cuda-python", "pycuda"])
def api(request: pytest.FixtureRequest) -> Iterator[CudaApi]:
    api = _gpu_api(request.param)
    yield api
    api.close()


def test_device_is_described(api: CudaApi) -> None:
    with api.activated():
        name, cc = api.device_name(), api.compute_capability()
    print(f"\n[{api.name}] device {name!r}, compute capability {cc}")
    assert name and cc[0] >= 3


@pytest.mark.parametrize("nbytes", [1, 4096, 640 * 480 * 3 * 4])
def test_pinned_device_round_trip(api: CudaApi, nbytes: int) -> None:
    rng = np.random.default_rng(nbytes)
    with api.activated():
        source, target = api.pinned_empty(nbytes), api.pinned_empty(nbytes)
        device = api.malloc(nbytes)
        stream = api.stream_create()
        source[:] = rng.integers(0, 256, nbytes, dtype=np.uint8)
        target[:] = 0
        api.memcpy_htod_async(device, source, stream)
        api.memcpy_dtoh_async(target, device, stream)
        api.stream_synchronize(stream)
        np.testing.assert_array_equal(target, source)
        half = source[: nbytes - nbytes % 2].view(np.float16)  # typed views of pinned storage copy too
        api.memcpy_htod_async(device, half, stream)
        back = target[: half.nbytes].view(np.float16)
        back[:] = 0
        api.memcpy_dtoh_async(back, device, stream)
        api.stream_synchronize(stream)
        np.testing.assert_array_equal(back.view(np.uint16), half.view(np.uint16))
        api.free(device)
        api.free_pinned(source)
        api.free_pinned(target)
        api.stream_destroy(stream)
        del stream  # pycuda destroys a Stream when it is dropped: do it while the context is current


def test_async_copies_run_in_order_on_one_stream(api: CudaApi) -> None:
    nbytes = 64 << 20  # big enough that a misordered copy would be caught mid-flight
    with api.activated():
        first, second = api.pinned_empty(nbytes), api.pinned_empty(nbytes)
        out_first, out_second = api.pinned_empty(nbytes), api.pinned_empty(nbytes)
        device = api.malloc(nbytes)
        stream = api.stream_create()
        first[:] = 1
        second[:] = 2
        out_first[:] = 0
        out_second[:] = 0
        started = time.perf_counter()
        api.memcpy_htod_async(device, first, stream)  # device <- 1
        api.memcpy_dtoh_async(out_first, device, stream)  # must see 1
        api.memcpy_htod_async(device, second, stream)  # device <- 2, only after the read above
        api.memcpy_dtoh_async(out_second, device, stream)  # must see 2
        queued = time.perf_counter() - started
        api.stream_synchronize(stream)
        total = time.perf_counter() - started
        assert (out_first == 1).all() and (out_second == 2).all()
        print(
            f"\n[{api.name}] 4 x 64 MiB async copies: queued in {queued * 1e3:.2f} ms, "
            f"done in {total * 1e3:.2f} ms "
            f"({4 * nbytes / total / 1e9:.1f} GB/s)"
        )
        for array in (first, second, out_first, out_second):
            api.free_pinned(array)
        api.free(device)
        api.stream_destroy(stream)
        del stream  # pycuda destroys a Stream when it is dropped: do it while the context is current


def test_buffers_are_usable_from_a_second_thread(api: CudaApi) -> None:
    nbytes = 1 << 20
    with api.activated():
        shared_device = api.malloc(nbytes)  # made in the main thread
        host = api.pinned_empty(nbytes)
        host[:] = 7
    results: Dict[str, Any] = {}

    def worker() -> None:
        try:
            with api.activated():
                stream = api.stream_create()
                own_device = api.malloc(nbytes)  # made in the worker
                back = api.pinned_empty(nbytes)
                api.memcpy_htod_async(shared_device, host, stream)
                api.memcpy_dtoh_async(back, shared_device, stream)
                api.stream_synchronize(stream)
                results["value"] = int(back[0]), int(back[-1])
                api.free(own_device)  # freed where it was made: pycuda warns otherwise at thread exit
                api.free_pinned(back)
                api.stream_destroy(stream)
                del stream  # pycuda destroys a Stream when it is dropped: do it while the context is current
        except BaseException as exc:  # re-raised in the main thread
            results["error"] = exc

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    if "error" in results:
        raise results["error"]
    assert results["value"] == (7, 7)
    with api.activated():
        api.free(shared_device)
        api.free_pinned(host)


# ---------------------------------------------------------------------- backend buffer path on real CUDA


def _runtime() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        cudart = pytest.importorskip("cuda.cudart")
    return cudart


@pytest.fixture
def copy_engine_tensorrt(monkeypatch: pytest.MonkeyPatch, api: CudaApi) -> Any:
    """A fake ``tensorrt`` 10.x whose engine copies input -> output with a real cudaMemcpyAsync(D2D)."""
    from fakes.cuda_fake import FakeGpu
    from fakes.tensorrt_fake import make_tensorrt_module

    cudart = _runtime()
    with api.activated():
        cc = api.compute_capability()
    trt = make_tensorrt_module("10.0.1", FakeGpu(compute_capability=cc))
    calls: List[int] = []

    def execute_async_v3(self: Any, stream_handle: int) -> bool:
        assert isinstance(stream_handle, int) and stream_handle != 0
        source, target = self._addresses["frame"], self._addresses["copy"]
        nbytes = int(np.prod(self._resolved_shape(self.engine._by_name["frame"]))) * 4
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        (error,) = cudart.cudaMemcpyAsync(target, source, nbytes, kind, cudart.cudaStream_t(stream_handle))
        calls.append(threading.get_ident())
        return int(error) == 0

    monkeypatch.setattr(trt.IExecutionContext, "execute_async_v3", execute_async_v3)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    trt.calls = calls
    return trt


def test_backend_runs_frames_on_real_cuda_from_two_threads(
    copy_engine_tensorrt: Any, api: CudaApi, tmp_path: Path
) -> None:
    from fakes.tensorrt_fake import make_plan

    from trt_perception.backends.tensorrt import TensorRTBackend

    shape = (1, 3, 480, 640)
    tensors = [
        {"name": "frame", "mode": "input", "shape": shape},
        {"name": "copy", "mode": "output", "shape": shape},
    ]
    plan = make_plan(
        tensors,
        tensorrt_version="10.0.1",
        compute_capability=copy_engine_tensorrt._fake.gpu.compute_capability,
    )
    (tmp_path / "copy.engine").write_bytes(plan)
    backend = TensorRTBackend(tmp_path / "copy.engine", cuda=api)
    rng = np.random.default_rng(1)
    timings: List[float] = []

    def run(count: int) -> None:
        for _ in range(count):
            frame = rng.standard_normal(shape).astype(np.float32)
            started = time.perf_counter()
            out = backend.infer({"frame": frame})["copy"]
            timings.append(time.perf_counter() - started)
            np.testing.assert_array_equal(out, frame)

    run(20)
    errors: List[BaseException] = []

    def worker() -> None:
        try:
            run(20)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert errors == []
    assert len(set(copy_engine_tensorrt.calls)) == 2  # both threads ran inference
    pinned = backend.input_buffer("frame")
    pinned[...] = 3.5
    np.testing.assert_array_equal(backend.infer({"frame": pinned})["copy"], 3.5)  # zero-copy input path
    print(
        f"\n[{api.name}] infer 1x3x480x640 float32 (copy in, H2D, D2D, D2H, sync): median "
        f"{statistics.median(timings) * 1e3:.3f} ms over {len(timings)} frames"
    )
    backend.close()
    backend.close()


EXIT_SCRIPT = r"""
import sys
sys.path[:0] = [sys.argv[2], sys.argv[3]]
from fakes.cuda_fake import FakeGpu
from fakes.tensorrt_fake import make_plan, make_tensorrt_module
from trt_perception.backends import tensorrt as trt_backend
from trt_perception.backends.cuda import select_cuda_api

probe = select_cuda_api(sys.argv[1])
with probe.activated():
    cc = probe.compute_capability()
probe.close()
sys.modules["tensorrt"] = make_tensorrt_module("10.0.1", FakeGpu(compute_capability=cc))
release = trt_backend._ResourceOwner.release

def reporting_release(self):
    release(self)
    print("released", flush=True)

trt_backend._ResourceOwner.release = reporting_release
shape = [1, 3, 480, 640]
tensors = [{"name": "x", "mode": "input", "shape": shape}, {"name": "y", "mode": "output", "shape": shape}]
with open(sys.argv[4], "wb") as engine:
    engine.write(make_plan(tensors, tensorrt_version="10.0.1", compute_capability=cc))
KEEP = trt_backend.TensorRTBackend(sys.argv[4], cuda=sys.argv[1])  # never closed: released at exit
KEEP.input_buffer("x")[...] = 1.0
print("ok", flush=True)
"""


@pytest.mark.parametrize("name", ["cuda-python", "pycuda"])
def test_unclosed_backend_exits_without_cuda_errors(name: str, tmp_path: Path) -> None:
    import subprocess

    _gpu_api(name).close()  # skips where this binding or a GPU is missing
    repo = str(Path(__file__).resolve().parents[2])
    result = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, name, repo, TEST_DIR, str(tmp_path / "exit.engine")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(
        f"\n[{name}] exit code {result.returncode}, stdout {result.stdout.split()}, stderr {result.stderr!r}"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "released"]  # the weakref finalizer ran at interpreter exit
    assert "error" not in result.stderr.lower() and "warning" not in result.stderr.lower()
