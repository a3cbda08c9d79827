"""TensorRT backend contract tests against the TensorRT (8.2/8.6/10.x) and CUDA (pycuda/cuda-python) doubles.

The doubles live in test/fakes (importable as ``fakes``: test/ is put on sys.path below, as test/conftest.py
also does). Every test builds its engine as a fake plan in tmp_path; nothing needs a GPU or TensorRT.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pytest
import yaml

TEST_DIR = str(Path(__file__).resolve().parents[1])
if TEST_DIR not in sys.path:
    sys.path.insert(0, TEST_DIR)

from fakes.cuda_fake import FakeGpu, hide_cuda_bindings, install_cuda_python, install_pycuda  # noqa: E402
from fakes.tensorrt_fake import PluginLibraries, make_plan, make_tensorrt_module  # noqa: E402

from trt_perception.backends import base  # noqa: E402
from trt_perception.backends.cuda import CudaPythonApi, PyCudaApi, select_cuda_api  # noqa: E402
from trt_perception.backends.engine_info import (  # noqa: E402
    BuildInfo,
    PlanHeader,
    RuntimeInfo,
    find_mismatches,
    load_build_metadata,
    parse_compute_capability,
    read_plan_header,
    rebuild_command,
)
from trt_perception.backends.tensorrt import _PLUGIN_NAME_RE, TensorRTBackend  # noqa: E402
from trt_perception.errors import BackendError, EngineMismatchError  # noqa: E402

TENSOR_API_VERSIONS = ["8.6.1", "10.0.1"]
ALL_VERSIONS = ["8.2.1", "8.6.1", "10.0.1"]
CUDA_APIS = ["pycuda", "cuda-python"]


@dataclass
class Env:
    trt: types.ModuleType
    gpu: FakeGpu
    cuda: str
    tmp_path: Path

    def engine(self, plan: bytes, name: str = "model.engine", build: Optional[Dict[str, Any]] = None) -> Path:
        path = self.tmp_path / name
        path.write_bytes(plan)
        if build is not None:
            spec = {"task": "detection", "build": build}
            (self.tmp_path / (name + ".yaml")).write_text(yaml.safe_dump(spec), encoding="utf-8")
        return path

    def plan(self, tensors: Sequence[Dict[str, Any]], **kwargs: Any) -> bytes:
        kwargs.setdefault("tensorrt_version", self.trt.__version__)
        kwargs.setdefault("compute_capability", self.gpu.compute_capability)
        return make_plan(tensors, **kwargs)


def make_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str, cuda: str = "cuda-python") -> Env:
    gpu = FakeGpu()
    trt = make_tensorrt_module(version, gpu)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    if cuda == "pycuda":
        install_pycuda(monkeypatch, gpu)
    else:
        install_cuda_python(monkeypatch, gpu)
    return Env(trt, gpu, cuda, tmp_path)


def io(name: str, mode: str, shape: Sequence[int], dtype: str = "FLOAT") -> Dict[str, Any]:
    return {"name": name, "mode": mode, "shape": list(shape), "dtype": dtype}


AFFINE = [io("images", "input", (1, 3, 4, 4)), io("scores", "output", (1, 3, 4, 4))]


def frames(count: int, shape: Sequence[int] = (1, 3, 4, 4), dtype: Any = np.float32) -> List[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(count)]


def per_frame(gpu: FakeGpu, kind: str) -> int:
    return gpu.count(kind)


# --------------------------------------------------------------------------------------- execution paths


@pytest.mark.parametrize("cuda", CUDA_APIS)
@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_explicit_batch_engine_runs_with_buffers_allocated_once_and_one_sync_per_frame(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str, cuda: str
) -> None:
    env = make_env(monkeypatch, tmp_path, version, cuda)
    path = env.engine(env.plan(AFFINE, params={"scale": 2.0, "offset": 1.0}))
    backend = TensorRTBackend(path, cuda=cuda)
    assert [str(t) for t in backend.inputs] == ["images [1, 3, 4, 4] float32"]
    assert backend.describe()["api"] == ("binding" if version == "8.2.1" else "tensor")
    gpu = env.gpu
    mallocs, host_allocs = gpu.count("malloc"), gpu.count("host_alloc")
    assert (mallocs, host_allocs) == (2, 2)  # one device + one pinned buffer per tensor
    gpu.clear_events()
    for frame in frames(10):
        out = backend.infer({"images": frame})
        np.testing.assert_allclose(out["scores"], frame * 2 + 1, rtol=1e-6)
    kinds = gpu.kinds()
    assert kinds.count("sync") == 10  # exactly one synchronize per frame
    assert kinds.count("execute") == 10
    assert gpu.count("malloc") == gpu.count("host_alloc") == 0  # nothing allocated per frame
    assert gpu.count("create_execution_context") == gpu.count("stream_create") == 0
    assert {e["nbytes"] for e in gpu.of("htod")} == {4 * 3 * 4 * 4}
    assert {e["nbytes"] for e in gpu.of("dtoh")} == {4 * 3 * 4 * 4}
    assert (
        len({info["stream"] for _, info in gpu.events if "stream" in info}) == 1
    )  # one stream for everything
    frame_kinds = kinds[: kinds.index("sync") + 1]
    assert [k for k in frame_kinds if k in ("htod", "execute", "dtoh", "sync")] == [
        "htod",
        "execute",
        "dtoh",
        "sync",
    ]
    expected_call = {"8.2.1": "enqueueV2"}.get(version, "enqueueV3")
    assert {e["call"] for e in gpu.of("execute")} == {expected_call}
    backend.close()


@pytest.mark.parametrize("version", TENSOR_API_VERSIONS)
def test_tensor_api_path_uses_no_deprecated_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str
) -> None:
    env = make_env(monkeypatch, tmp_path, version)
    path = env.engine(env.plan(AFFINE))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        backend = TensorRTBackend(path)
        backend.infer({"images": frames(1)[0]})
        backend.close()


@pytest.mark.parametrize("version", ["8.2.1", "8.6.1"])
def test_implicit_batch_uff_ssd_engine_uses_execute_async_and_passes_nms_count_bits_through(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str
) -> None:
    env = make_env(monkeypatch, tmp_path, version, "pycuda")
    detections = [[1, 0.9, 0.1, 0.2, 0.3, 0.4], [3, 0.8, 0.5, 0.5, 0.9, 0.9], [44, 0.6, 0.0, 0.0, 0.2, 0.2]]
    tensors = [
        io("Input", "input", (3, 30, 30)),
        io("NMS", "output", (1, 100, 7)),
        io("NMS_1", "output", (1, 1, 1)),
    ]
    plugins = ["NMS_TRT", "GridAnchor_TRT"]
    plan = env.plan(
        tensors, implicit_batch=True, max_batch_size=1, program="nms_trt", plugins=plugins,
        params={"detections": detections},
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # 8.6: the binding API is deprecated, still needed
        backend = TensorRTBackend(env.engine(plan, "ssd_mobilenet_v2_coco.bin"), cuda="pycuda")
        assert backend.describe()["api"] == "binding (implicit batch)"
        assert backend.inputs[0].shape == (1, 3, 30, 30)  # batch dim added for the pipeline
        assert backend.outputs[0].shape == (1, 1, 100, 7)
        out = backend.infer({"Input": np.zeros((1, 3, 30, 30), np.float32)})
    assert {e["call"] for e in env.gpu.of("execute")} == {"enqueue"}
    assert {e["batch"] for e in env.gpu.of("execute")} == {1}
    assert {e["nbytes"] for e in env.gpu.of("htod")} == {3 * 30 * 30 * 4}  # volume(binding) * batch
    count = out["NMS_1"]
    assert count.dtype == np.float32  # declared float32: no cast here, the parser reinterprets
    assert count.view(np.int32).ravel().tolist() == [3]
    assert count.tobytes() == np.array([3], np.int32).tobytes()
    np.testing.assert_allclose(out["NMS"][0, 0, :3, 1:3], [[1, 0.9], [3, 0.8], [44, 0.6]], rtol=1e-6)
    assert (out["NMS"][0, 0, 3:, 1] == -1).all()
    backend.close()


def test_implicit_batch_engine_with_max_batch_4_runs_a_partial_batch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = make_env(monkeypatch, tmp_path, "8.2.1")
    tensors = [io("in", "input", (2, 3)), io("out", "output", (2, 3))]
    backend = TensorRTBackend(env.engine(env.plan(tensors, implicit_batch=True, max_batch_size=4)))
    assert backend.inputs[0].shape == (None, 2, 3)
    assert {e["nbytes"] for e in env.gpu.of("malloc")} == {4 * 2 * 3 * 4}  # volume * max_batch_size
    x = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    out = backend.infer({"in": x})
    assert out["out"].shape == (2, 2, 3)
    np.testing.assert_array_equal(out["out"], x)
    assert env.gpu.of("execute")[-1]["batch"] == 2
    assert env.gpu.of("htod")[-1]["nbytes"] == 2 * 2 * 3 * 4
    with pytest.raises(BackendError, match="batch 1..4"):
        backend.infer({"in": np.zeros((5, 2, 3), np.float32)})
    backend.close()


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_fp16_input_binding_gets_a_same_kind_cast_into_the_pinned_buffer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str
) -> None:
    env = make_env(monkeypatch, tmp_path, version)
    tensors = [io("images", "input", (1, 3, 4, 4), "HALF"), io("scores", "output", (1, 3, 4, 4), "HALF")]
    backend = TensorRTBackend(env.engine(env.plan(tensors)))
    assert backend.inputs[0].dtype == np.float16
    x = frames(1)[0]
    out = backend.infer({"images": x})
    assert out["scores"].dtype == np.float16
    np.testing.assert_array_equal(out["scores"], x.astype(np.float16))
    assert env.gpu.of("htod")[-1]["nbytes"] == x.size * 2
    with pytest.raises(BackendError, match="same-kind"):
        backend.infer({"images": np.zeros((1, 3, 4, 4), np.complex64)})
    backend.close()


def test_preprocessor_can_write_straight_into_the_pinned_input(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = make_env(monkeypatch, tmp_path, "10.0.1")
    backend = TensorRTBackend(env.engine(env.plan(AFFINE, params={"scale": 3.0})))
    buffer = backend.input_buffer("images")
    assert buffer is not None and buffer.shape == (1, 3, 4, 4) and buffer.dtype == np.float32
    buffer[...] = 2.0
    copies: List[Any] = []
    real_copyto = np.copyto
    monkeypatch.setattr(np, "copyto", lambda *a, **k: copies.append(a) or real_copyto(*a, **k))
    first = backend.infer({"images": buffer})
    assert copies == []  # the frame is already in the pinned buffer: no host copy
    np.testing.assert_allclose(first["scores"], 6.0)
    second = backend.infer({"images": buffer})
    assert second["scores"] is first["scores"]  # the pinned output buffer itself, reused every frame
    with pytest.raises(BackendError, match="no input 'nope'"):
        backend.input_buffer("nope")
    backend.close()



def _queue_device_write(env: Env, backend: TensorRTBackend, name: str, value: np.ndarray) -> None:
    """What GPU preprocessing does: work on the backend's stream writes the input's device buffer."""
    pointer, stream, cuda = backend.device_input(name)
    handle = cuda.stream_handle(stream)
    data = np.ascontiguousarray(value).reshape(-1).view(np.uint8)

    def kernel() -> None:
        env.gpu.view(pointer, data.nbytes)[:] = data

    env.gpu.stream(handle).enqueue(kernel)


@pytest.mark.parametrize("cuda", CUDA_APIS)
@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_on_device_input_skips_staging_and_h2d_and_keeps_one_sync_per_frame(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str, cuda: str
) -> None:
    env = make_env(monkeypatch, tmp_path, version, cuda)
    backend = TensorRTBackend(env.engine(env.plan(AFFINE, params={"scale": 2.0, "offset": 1.0})), cuda=cuda)
    pointer, stream, api = backend.device_input("images")
    assert pointer == backend._inputs[0].device and stream is backend._res.stream and api is backend._res.cuda
    env.gpu.clear_events()
    for frame in frames(5):
        _queue_device_write(env, backend, "images", frame)  # queued before infer, on the same stream
        out = backend.infer({}, on_device=("images",))
        np.testing.assert_allclose(out["scores"], frame * 2 + 1, rtol=1e-6)  # the kernel ran before execute
    kinds = env.gpu.kinds()
    assert kinds.count("htod") == 0  # no host staging, no H2D copy of the input
    assert kinds.count("sync") == 5 and kinds.count("execute") == 5  # still one synchronize per frame
    assert kinds.count("dtoh") == 5
    assert env.gpu.count("malloc") == env.gpu.count("host_alloc") == 0
    backend.close()


def test_on_device_input_on_an_implicit_batch_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = make_env(monkeypatch, tmp_path, "8.2.1", "pycuda")
    tensors = [io("Input", "input", (3, 4, 4)), io("out", "output", (3, 4, 4))]
    backend = TensorRTBackend(env.engine(env.plan(tensors, implicit_batch=True, max_batch_size=2)), cuda="pycuda")
    frame = frames(1, (1, 3, 4, 4))[0]
    _queue_device_write(env, backend, "Input", frame)
    env.gpu.clear_events()
    out = backend.infer({}, on_device="Input")  # a single name is taken as one name
    np.testing.assert_array_equal(out["out"], frame)
    assert env.gpu.of("execute")[-1]["batch"] == 1 and env.gpu.count("htod") == 0
    backend.close()


def test_device_input_refuses_unknown_and_dynamic_inputs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = make_env(monkeypatch, tmp_path, "10.0.1")
    backend = TensorRTBackend(env.engine(env.plan(AFFINE)))
    with pytest.raises(BackendError, match=r"no input 'image'.*\['images'\].*fix"):
        backend.device_input("image")
    with pytest.raises(BackendError, match=r"no input 'image'"):
        backend.infer({}, on_device=("image",))
    with pytest.raises(BackendError, match=r"feed has no input 'images'"):
        backend.infer({}, on_device=())
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.device_input("images")

    tensors = [io("x", "input", (-1, 3, 2, 2)), io("y", "output", (-1, 3, 2, 2))]
    profiles = {"x": [(1, 3, 2, 2), (2, 3, 2, 2), (8, 3, 2, 2)]}
    dynamic = TensorRTBackend(env.engine(env.plan(tensors, profiles=profiles), "dynamic.engine"))
    with pytest.raises(BackendError, match=r"gpu_preprocess needs a static input shape.*'x'.*\('\?', 3, 2, 2\).*fix"):
        dynamic.device_input("x")
    with pytest.raises(BackendError, match="static input shape"):
        dynamic.infer({}, on_device=("x",))
    dynamic.close()


@pytest.mark.parametrize("version", ["8.2.1", "10.0.1"])
def test_dynamic_input_never_moves_and_outputs_reallocate_only_when_they_grow(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str
) -> None:
    """A dynamic input gets room for its profile's max at once, so the pinned buffer a preprocessor writes
    into (input_buffer) stays where it is for every batch; outputs start at the opt shape and grow."""
    env = make_env(monkeypatch, tmp_path, version)
    tensors = [io("x", "input", (-1, 3, 2, 2)), io("y", "output", (-1, 3, 2, 2))]
    profiles = {"x": [(1, 3, 2, 2), (2, 3, 2, 2), (8, 3, 2, 2)]}
    backend = TensorRTBackend(env.engine(env.plan(tensors, profiles=profiles, params={"scale": -1.0})))
    assert backend.inputs[0].shape == (None, 3, 2, 2)
    assert backend.max_batch("x") == 8
    assert [e["nbytes"] for e in env.gpu.of("malloc")] == [8 * 12 * 4, 2 * 12 * 4]  # input: max, output: opt
    pinned = backend.input_buffer("x")
    assert pinned is not None and pinned.shape == (2, 3, 2, 2)
    env.gpu.clear_events()

    def run(batch: int) -> np.ndarray:
        x = np.full((batch, 3, 2, 2), batch, np.float32)
        out = backend.infer({"x": x})["y"]
        np.testing.assert_array_equal(out, -x)
        return out

    run(2)
    run(2)
    assert env.gpu.count("malloc") == 0
    run(4)  # grows: the output is reallocated once, the input has room
    assert [e["nbytes"] for e in env.gpu.of("malloc")] == [4 * 12 * 4]
    assert env.gpu.count("free") == 1
    run(4)
    assert run(1).shape == (1, 3, 2, 2)  # shrinks: fits in what is there
    run(8)
    assert backend.input_buffer("x").__array_interface__["data"][0] == pinned.__array_interface__["data"][0]
    run(3)
    assert env.gpu.count("malloc") == 2
    assert env.gpu.of("htod")[-1]["nbytes"] == 3 * 12 * 4
    with pytest.raises(BackendError, match="profile"):
        run(9)
    with pytest.raises(BackendError, match="expects"):
        backend.infer({"x": np.zeros((2, 4, 2, 2), np.float32)})
    backend.close()


def test_feed_errors_name_the_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = make_env(monkeypatch, tmp_path, "10.0.1")
    backend = TensorRTBackend(env.engine(env.plan(AFFINE)))
    with pytest.raises(BackendError, match=r"no input 'images'.*\['image'\]"):
        backend.infer({"image": frames(1)[0]})
    with pytest.raises(BackendError, match=r"'images' has shape \(1, 4, 4, 3\)"):
        backend.infer({"images": np.zeros((1, 4, 4, 3), np.float32)})
    backend.close()


def test_execution_failure_reports_tensorrt_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = make_env(monkeypatch, tmp_path, "10.0.1")
    backend = TensorRTBackend(env.engine(env.plan(AFFINE)))
    context = backend._res.context

    def failing(stream_handle: int) -> bool:
        env.trt._fake.logger.log(env.trt.ILogger.ERROR, "1: [myelin] out of memory")
        return False

    monkeypatch.setattr(context, "execute_async_v3", failing, raising=False)
    with pytest.raises(BackendError, match="out of memory"):
        backend.infer({"images": frames(1)[0]})
    backend.close()


def test_warmup_and_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = make_env(monkeypatch, tmp_path, "10.0.1")
    path = env.engine(env.plan(AFFINE), "model.plan")
    assert base.backend_class("tensorrt") is TensorRTBackend
    with base.open_backend(path, cuda="cuda-python") as backend:
        assert isinstance(backend, TensorRTBackend)
        backend.warmup(3)
        assert env.gpu.count("execute") == 3
    assert backend._res.released


# ------------------------------------------------------------------------------ threads and CUDA contexts


def test_infer_from_executor_threads_pushes_and_pops_the_pycuda_context(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = make_env(monkeypatch, tmp_path, "10.0.1", "pycuda")
    backend = TensorRTBackend(env.engine(env.plan(AFFINE, params={"scale": 2.0})), cuda="pycuda")
    driver = sys.modules["pycuda.driver"]
    errors: List[BaseException] = []
    all_done = threading.Barrier(4)  # keep every worker alive to the end, so thread ids stay distinct

    def worker() -> None:
        try:
            with pytest.raises(driver.LogicError, match="invalid device context"):
                driver.mem_alloc(16)  # the double really is thread-bound: no context here unless pushed
            for frame in frames(5):
                np.testing.assert_allclose(backend.infer({"images": frame})["scores"], frame * 2, rtol=1e-6)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)
        all_done.wait()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    pushes = [e["thread"] for e in env.gpu.of("push")]
    pops = [e["thread"] for e in env.gpu.of("pop")]
    worker_threads = {t.ident for t in threads}
    assert worker_threads <= set(pushes)
    for ident in worker_threads:
        assert pushes.count(ident) == pops.count(ident) == 5  # one push/pop around each infer
    backend.close()  # from the main thread, which did not make the buffers of the last frames
    assert env.gpu.count("free") == 2 and env.gpu.of("detach")[-1]["leaked"] is False


def test_cuda_python_binds_the_device_once_in_each_thread(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = make_env(monkeypatch, tmp_path, "10.0.1", "cuda-python")
    backend = TensorRTBackend(env.engine(env.plan(AFFINE)))
    thread = threading.Thread(target=lambda: [backend.infer({"images": f}) for f in frames(3)])
    thread.start()
    thread.join()
    threads = [e["thread"] for e in env.gpu.of("set_device")]
    assert threads.count(thread.ident) == 1
    assert threads.count(threading.get_ident()) == 1
    backend.close()


@pytest.mark.parametrize("cuda", CUDA_APIS)
def test_close_frees_in_order_and_is_idempotent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cuda: str
) -> None:
    env = make_env(monkeypatch, tmp_path, "10.0.1", cuda)
    backend = TensorRTBackend(env.engine(env.plan(AFFINE)), cuda=cuda)
    backend.infer({"images": frames(1)[0]})
    allocated = {e["pointer"] for e in env.gpu.of("malloc")}
    env.gpu.clear_events()
    backend.close()
    kinds = env.gpu.kinds()
    assert {e["pointer"] for e in env.gpu.of("free")} == allocated
    assert env.gpu.count("host_free") == 2
    assert env.gpu.memory == {}
    last_free = max(i for i, k in enumerate(kinds) if k in ("free", "host_free"))
    assert kinds.index("stream_destroy") > last_free
    if cuda == "pycuda":  # the context goes last, after everything that needed it
        assert kinds.index("detach") > kinds.index("stream_destroy")
    count = len(env.gpu.events)
    backend.close()
    assert len(env.gpu.events) == count  # second close does nothing
    with pytest.raises(BackendError, match="closed"):
        backend.infer({"images": frames(1)[0]})


def test_unclosed_backend_is_released_when_collected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = make_env(monkeypatch, tmp_path, "8.2.1", "pycuda")
    backend = TensorRTBackend(env.engine(env.plan(AFFINE)), cuda="pycuda")
    del backend
    gc.collect()
    assert env.gpu.memory == {} and env.gpu.count("detach") == 1


def test_failed_open_releases_what_it_allocated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = make_env(monkeypatch, tmp_path, "10.0.1", "pycuda")
    tensors = [io("x", "input", (-1, 4)), io("y", "output", (-1, -1))]  # output needs a second input dim
    plan = env.plan(tensors, profiles={"x": [(1, 4), (1, 4), (2, 4)]})
    monkeypatch.setattr(
        env.trt.IExecutionContext, "get_tensor_shape", lambda self, name: env.trt.Dims([1, -1])
    )
    with pytest.raises(BackendError, match="data-dependent shape"):
        TensorRTBackend(env.engine(plan), cuda="pycuda")
    assert env.gpu.memory == {} and env.gpu.count("detach") == 1


# ----------------------------------------------------------------------------------------------- plugins


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_plugins_are_registered_before_deserializing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str
) -> None:
    env = make_env(monkeypatch, tmp_path, version)
    library = tmp_path / "libyolo_layer.so"
    library.write_bytes(b"\x7fELF")
    loader = PluginLibraries(env.trt, {str(library): ["YoloLayer_TRT"]})
    monkeypatch.setattr(ctypes, "CDLL", loader.cdll)
    plan = env.plan(AFFINE, plugins=["YoloLayer_TRT", "EfficientNMS_TRT"])
    backend = TensorRTBackend(env.engine(plan), plugin_libraries=[str(library)])
    kinds = env.gpu.kinds()
    assert kinds.index("init_libnvinfer_plugins") < kinds.index("load_library") < kinds.index("deserialize")
    assert loader.loaded == [(str(library), ctypes.RTLD_GLOBAL)]
    backend.close()


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_missing_plugin_names_the_plugin_and_the_param(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str
) -> None:
    env = make_env(monkeypatch, tmp_path, version)
    path = env.engine(env.plan(AFFINE, plugins=["YoloLayer_TRT"]))
    with pytest.raises(BackendError) as info:
        TensorRTBackend(path)
    message = str(info.value)
    assert "plugin_libraries" in message and "IPluginCreator not found" in message
    if version == "8.2.1":  # TensorRT < 8.5 names the plugin in its log; later ones do not
        assert "plugin YoloLayer_TRT" in message
    else:
        assert "TensorRT did not name it" in message
    assert env.gpu.memory == {}


def test_plugin_names_are_read_from_every_tensorrt_wording() -> None:
    lines = [
        "INVALID_ARGUMENT: getPluginCreator could not find plugin CHUNK_TRT version 1.0",  # 7.x
        "ERROR: Cannot deserialize plugin FlattenConcat_TRT",  # 5.x/6.x
        "3: getPluginCreator could not find plugin: YoloLayer_TRT version: 1",  # 8.0-8.4
        "Cannot deserialize plugin since corresponding IPluginCreator not found in Plugin Registry",  # 8.5+
    ]
    found = {a or b for a, b in _PLUGIN_NAME_RE.findall("\n".join(lines))}
    assert found == {"CHUNK_TRT", "FlattenConcat_TRT", "YoloLayer_TRT"}


def test_plugin_library_that_cannot_be_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = make_env(monkeypatch, tmp_path, "8.2.1")
    loader = PluginLibraries(env.trt, {})
    monkeypatch.setattr(ctypes, "CDLL", loader.cdll)
    path = env.engine(env.plan(AFFINE))
    with pytest.raises(
        BackendError, match=r"libflattenconcat.so' \(backend option / param plugin_libraries\) does not"
    ):
        TensorRTBackend(path, plugin_libraries=[str(tmp_path / "libflattenconcat.so")])
    with pytest.raises(BackendError, match="plugin_libraries.*cannot be loaded.*No such file"):
        TensorRTBackend(path, plugin_libraries="libnot_on_the_path.so")
    assert "deserialize" not in env.gpu.kinds()


# ------------------------------------------------------------------------------------------ compatibility


def test_engine_from_another_tensorrt_is_refused_before_deserializing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = make_env(monkeypatch, tmp_path, "10.3.0")
    (tmp_path / "ssd.onnx").write_bytes(b"onnx")
    build = {
        "tensorrt_version": "8.2.1.8", "precision": "fp16", "source_onnx": "ssd.onnx", "gpu_name": "Tegra X1",
        "compute_capability": "5.3",
    }  # fmt: skip
    path = env.engine(env.plan(AFFINE, tensorrt_version="8.2.1"), "ssd.engine", build=build)
    with pytest.raises(EngineMismatchError) as info:
        TensorRTBackend(path)
    message = str(info.value)
    assert (
        "TensorRT version: engine built with 8.2.1.8 (from the build metadata), this machine has 10.3.0"
        in message
    )
    gpu_line = "GPU compute capability: engine built with 5.3 (Tegra X1) (from the build metadata), "
    assert gpu_line + "this machine has 8.7 (Orin (fake))" in message
    assert f"trt-perception build {tmp_path / 'ssd.onnx'} --output {path} --force --fp16" in message
    assert "auto_rebuild" in message
    assert "deserialize" not in env.gpu.kinds()


def test_plan_header_alone_detects_the_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # 9.1+ plans carry the version at 24-27 (trtexec printPlanVersion @v9.1.0): refused before deserializing
    env = make_env(monkeypatch, tmp_path, "10.0.1")
    path = env.engine(env.plan(AFFINE, tensorrt_version="10.3.0"))
    with pytest.raises(
        EngineMismatchError, match=r"built with 10\.3\.0 \(from the plan header\), this machine has 10\.0\.1"
    ):
        TensorRTBackend(path)
    with pytest.raises(EngineMismatchError, match=r"<model\.onnx> --output .* --force\n.*not recorded"):
        TensorRTBackend(path)
    assert "deserialize" not in env.gpu.kinds()


def test_tensorrt_own_version_and_device_errors_become_mismatch_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = make_env(monkeypatch, tmp_path, "8.2.1")
    plan = env.plan(AFFINE, tensorrt_version="8.4.3")  # an 8.x header says nothing: only TensorRT can tell
    with pytest.raises(EngineMismatchError, match="(?s)8.4.x \\(serialization tag 213\\).*Version tag does not match"):
        TensorRTBackend(env.engine(plan))
    other_gpu = env.plan(AFFINE, compute_capability=(7, 2))
    with pytest.raises(EngineMismatchError, match="(?s)another GPU.*expecting compute 7.2 got compute 8.7"):
        TensorRTBackend(env.engine(other_gpu))
    assert env.gpu.memory == {}


def test_not_an_engine_reports_the_captured_tensorrt_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = make_env(monkeypatch, tmp_path, "10.0.1")
    path = env.engine(b"\x08\x07\x12\x07pytorch" + bytes(64), "model.engine")
    with pytest.raises(BackendError, match="(?s)not a serialized TensorRT engine.*Magic tag does not match"):
        TensorRTBackend(path)
    with pytest.raises(BackendError, match="does not exist"):
        TensorRTBackend(tmp_path / "missing.engine")


def test_auto_rebuild_calls_the_builder_then_loads_the_new_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = make_env(monkeypatch, tmp_path, "10.0.1")
    (tmp_path / "pilot.onnx").write_bytes(b"onnx")
    build = {"tensorrt_version": "8.6.1", "precision": "fp16", "source_onnx": "pilot.onnx"}
    path = env.engine(env.plan(AFFINE, tensorrt_version="8.6.1"), "pilot.engine", build=build)
    calls: List[Any] = []

    def build_engine(onnx_path: str, engine_path: str, **kwargs: Any) -> None:
        calls.append((onnx_path, engine_path, kwargs))
        Path(engine_path).write_bytes(env.plan(AFFINE, params={"scale": 5.0}))

    fake_build = types.ModuleType("trt_perception.tools.build")
    fake_build.build_engine = build_engine  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "trt_perception.tools.build", fake_build)
    backend = TensorRTBackend(path, auto_rebuild=True)
    assert calls == [(str(tmp_path / "pilot.onnx"), str(path), {"precision": "fp16", "force": True})]
    np.testing.assert_allclose(backend.infer({"images": np.ones((1, 3, 4, 4), np.float32)})["scores"], 5.0)
    backend.close()

    (tmp_path / "pilot.onnx").unlink()
    path.write_bytes(env.plan(AFFINE, tensorrt_version="8.6.1"))
    with pytest.raises(
        EngineMismatchError, match=r"auto_rebuild is on, but the source ONNX \(.*pilot.onnx\) is missing"
    ):
        TensorRTBackend(path, auto_rebuild=True)


def test_build_metadata_option_overrides_the_sidecar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = make_env(monkeypatch, tmp_path, "10.0.1")
    path = env.engine(env.plan(AFFINE), build={"compute_capability": "8.7"})
    with pytest.raises(EngineMismatchError, match="5.3"):
        TensorRTBackend(path, build_metadata={"compute_capability": [5, 3], "precision": "int8"})
    backend = TensorRTBackend(path)
    assert backend.describe()["gpu"] == "Orin (fake) (compute 8.7)"
    backend.close()


# ------------------------------------------------------------------------------- API generations, import


def test_code_written_for_the_wrong_generation_fails_against_the_doubles() -> None:
    plan = make_plan(AFFINE, tensorrt_version="8.2.1")
    trt8 = make_tensorrt_module("8.2.1")
    engine8 = trt8.Runtime(trt8.Logger()).deserialize_cuda_engine(plan)
    context8 = engine8.create_execution_context()
    assert not hasattr(engine8, "num_io_tensors") and not hasattr(context8, "execute_async_v3")
    assert not hasattr(trt8, "TensorIOMode") and not hasattr(trt8.DataType, "UINT8")
    with pytest.raises(AttributeError):
        context8.set_tensor_address("images", 0)

    trt10 = make_tensorrt_module("10.0.1")
    engine10 = trt10.Runtime(trt10.Logger()).deserialize_cuda_engine(
        make_plan(AFFINE, tensorrt_version="10.0.1")
    )
    context10 = engine10.create_execution_context()
    for name in ("num_bindings", "get_binding_shape", "binding_is_input", "max_batch_size"):
        assert not hasattr(engine10, name), name
    for name in ("execute_async", "execute_async_v2", "set_binding_shape"):
        assert not hasattr(context10, name), name
    with pytest.warns(DeprecationWarning, match="Implicit batch"):
        assert engine10.has_implicit_batch_dimension is False
    assert not hasattr(make_tensorrt_module("11.1").ICudaEngine, "has_implicit_batch_dimension")

    trt86 = make_tensorrt_module("8.6.1")
    engine86 = trt86.Runtime(trt86.Logger()).deserialize_cuda_engine(
        make_plan(AFFINE, tensorrt_version="8.6.1")
    )
    with pytest.warns(DeprecationWarning, match="Use get_tensor_shape instead"):
        engine86.get_binding_shape(0)


def test_logger_must_be_a_properly_initialised_ilogger() -> None:
    trt = make_tensorrt_module("8.2.1")

    class Forgetful(trt.ILogger):
        def __init__(self) -> None:  # does not call trt.ILogger.__init__
            pass

        def log(self, severity: Any, msg: str) -> None:
            pass

    with pytest.raises(TypeError, match="__init__"):
        trt.Runtime(Forgetful())


def test_missing_tensorrt_says_where_it_comes_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    (tmp_path / "m.engine").write_bytes(b"x")
    with pytest.raises(BackendError, match="JetPack.*onnxruntime"):
        TensorRTBackend(tmp_path / "m.engine")


def test_cuda_api_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu()
    install_pycuda(monkeypatch, gpu)
    assert isinstance(select_cuda_api("auto"), PyCudaApi)
    with pytest.raises(BackendError, match="'cuda-python' is not installed.*pip install cuda-python"):
        select_cuda_api("cuda-python")
    install_cuda_python(monkeypatch, gpu, layout="legacy")  # cuda-python < 12.6: `from cuda import cudart`
    api = select_cuda_api("auto")
    assert (
        isinstance(api, CudaPythonApi)
        and api.device_name() == "Orin (fake)"
        and api.compute_capability() == (8, 7)
    )
    assert select_cuda_api(api) is api
    with pytest.raises(BackendError, match="expected one of"):
        select_cuda_api("opencl")
    hide_cuda_bindings(monkeypatch)
    with pytest.raises(
        BackendError, match="no CUDA Python binding.*pip install cuda-python.*pip install pycuda"
    ):
        select_cuda_api("auto")
    with pytest.raises(BackendError, match="'pycuda' is not installed.*pip install pycuda"):
        select_cuda_api("pycuda")


def test_shared_cuda_api_is_not_closed_by_the_backend(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = make_env(monkeypatch, tmp_path, "10.0.1", "pycuda")
    api = select_cuda_api("pycuda")
    detector = TensorRTBackend(env.engine(env.plan(AFFINE), "a.engine"), cuda=api)
    pilot = TensorRTBackend(env.engine(env.plan(AFFINE), "b.engine"), cuda=api)
    detector.close()
    assert pilot.infer({"images": frames(1)[0]})["scores"].shape == (1, 3, 4, 4)
    pilot.close()
    assert env.gpu.count("detach") == 0
    api.close()
    assert env.gpu.count("detach") == 1


# ------------------------------------------------------------------------------------------- engine_info


def test_plan_header_parsing() -> None:
    assert read_plan_header(make_plan(AFFINE, tensorrt_version="8.2.1")) == PlanHeader(True, None)  # 8.x layout
    assert read_plan_header(make_plan(AFFINE, tensorrt_version="10.13.3")) == PlanHeader(True, (10, 13, 3))
    assert read_plan_header(make_plan(AFFINE, magic=b"ptrt")) == PlanHeader(False, None)
    assert read_plan_header(b"ftrt") == PlanHeader(True, None)
    odd = bytearray(make_plan(AFFINE))
    odd[24] = 200
    assert read_plan_header(bytes(odd)) == PlanHeader(True, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8.7", (8, 7)),
        ([5, 3], (5, 3)),
        ("sm_72", (7, 2)),
        (87, (8, 7)),
        ("compute 6.2", (6, 2)),
        ("x", None),
        (None, None),
    ],
)
def test_compute_capability_forms(value: Any, expected: Any) -> None:
    assert parse_compute_capability(value) == expected


def test_mismatch_rules() -> None:
    runtime = RuntimeInfo("10.3.0.26", "Orin", (8, 7))
    header = PlanHeader(True, None)
    assert find_mismatches(header, BuildInfo.from_mapping({"tensorrt_version": "10.3.0"}), runtime) == []
    assert find_mismatches(PlanHeader(True, (10, 3, 1)), BuildInfo(), runtime) == []  # patch may differ
    assert len(find_mismatches(header, BuildInfo.from_mapping({"tensorrt_version": "10.0.1"}), runtime)) == 1
    compatible = BuildInfo.from_mapping({"tensorrt_version": "10.0.1", "flags": ["--version-compatible"]})
    assert find_mismatches(header, compatible, runtime) == []
    newer = BuildInfo.from_mapping({"tensorrt_version": "10.5.0", "flags": {"version_compatible": True}})
    assert len(find_mismatches(header, newer, runtime)) == 1  # version-compatible runs forward only
    ampere = BuildInfo.from_mapping({"compute_capability": "8.6", "flags": "hardware_compatibility_level"})
    assert find_mismatches(header, ampere, runtime) == []
    assert len(find_mismatches(header, BuildInfo.from_mapping({"compute_capability": "8.6"}), runtime)) == 1
    assert find_mismatches(header, BuildInfo(), runtime) == []  # nothing known: TensorRT decides


def test_rebuild_command_and_metadata_sidecar(tmp_path: Path) -> None:
    engine = tmp_path / "my models" / "ssd.engine"
    engine.parent.mkdir()
    build = BuildInfo.from_mapping({"source_onnx": "ssd.onnx", "precision": "INT8"})
    assert rebuild_command(engine, build) == (
        f"trt-perception build '{engine.parent / 'ssd.onnx'}' --output '{engine}' --force --int8"
    )
    assert rebuild_command(engine, BuildInfo()).endswith(
        "--force"
    )  # unknown precision: the builder's default
    assert rebuild_command(engine, BuildInfo(precision="fp32")).endswith("--force --fp32")
    assert load_build_metadata(engine) is None
    (engine.parent / "ssd.engine.yaml").write_text(
        "task: detection\nbuild: {precision: fp16}\n", encoding="utf-8"
    )
    assert load_build_metadata(engine) == {"precision": "fp16"}
    (engine.parent / "ssd.engine.yaml").write_text("task: [unclosed\n", encoding="utf-8")
    assert load_build_metadata(engine) is None  # unreadable spec: logged, the pipeline refuses it itself


FAKE_EXIT_SCRIPT = r"""
import sys
import types
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from fakes.cuda_fake import FakeGpu, make_pycuda_driver
from fakes.tensorrt_fake import make_plan, make_tensorrt_module
gpu = FakeGpu()
driver = make_pycuda_driver(gpu)
package = types.ModuleType("pycuda")
package.driver = driver
sys.modules.update({"pycuda": package, "pycuda.driver": driver})
sys.modules["tensorrt"] = make_tensorrt_module("8.2.1", gpu)
from trt_perception.backends import tensorrt as trt_backend
release = trt_backend._ResourceOwner.release

def reporting_release(self):
    release(self)
    print("released", len(gpu.memory), gpu.count("detach"), driver.Context.get_current(), flush=True)

trt_backend._ResourceOwner.release = reporting_release
tensors = [{"name": "x", "mode": "input", "shape": [1, 4]}, {"name": "y", "mode": "output", "shape": [1, 4]}]
with open(sys.argv[3], "wb") as engine:
    engine.write(make_plan(tensors, tensorrt_version="8.2.1"))
KEEP = trt_backend.TensorRTBackend(sys.argv[3], cuda="pycuda")
KEEP.infer({"x": [[1.0, 2.0, 3.0, 4.0]]})
print("ok", flush=True)
"""


def test_unclosed_backend_is_released_at_interpreter_exit(tmp_path: Path) -> None:
    import subprocess

    repo = str(Path(__file__).resolve().parents[2])
    result = subprocess.run(
        [sys.executable, "-c", FAKE_EXIT_SCRIPT, repo, TEST_DIR, str(tmp_path / "exit.engine")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # at exit: every device buffer freed, the context detached once, no context left current
    assert result.stdout.split() == ["ok", "released", "0", "1", "None"], result.stdout + result.stderr
