"""ModelPipeline with gpu_preprocess: the GPU path gives the CPU path's results through a TensorRT engine.

Runs on the TensorRT and CUDA doubles (test/fakes) with a launcher that does the kernel's arithmetic in
numpy (``NumpyLauncher`` from test_gpu_preprocess), so it needs no GPU. The fake engine's outputs are a
position-sensitive function of its whole input, so a wrong layout, channel order or scale changes them.
On a machine with a GPU the real kernel is checked by test_gpu_preprocess.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np
import pytest
import yaml
from fakes.cuda_fake import FakeGpu, install_pycuda
from fakes.nvimgcodec_fake import hide_nvimgcodec
from fakes.tensorrt_fake import make_plan, make_tensorrt_module, register_program
from test_gpu_preprocess import NumpyLauncher, _real_api, fake_cuda, padded, random_frame

from trt_perception import gpu_preprocess
from trt_perception.backends.base import Backend, TensorSpec
from trt_perception.backends.cuda import CudaApi
from trt_perception.config import PerceptionConfig
from trt_perception.errors import BackendError, ConfigError
from trt_perception.heads import create_frame_processor, open_model
from trt_perception.images import DecodedImage
from trt_perception.params import ParamTable
from trt_perception.pipeline import FrameProcessor, ModelPipeline
from trt_perception.results import SteeringPrediction
from trt_perception.spec import parse_spec


@register_program("probe")
def _probe(
    inputs: Dict[str, np.ndarray], outputs: Dict[str, Any], params: Mapping[str, Any]
) -> Dict[str, np.ndarray]:
    """angle = mean(x * ramp) over the flat tensor (order-sensitive), throttle = mean(x)."""
    first = next(iter(inputs.values())).astype(np.float64).reshape(-1)
    ramp = np.linspace(0.0, 1.0, first.size)
    values = {"angle": float((first * ramp).mean()), "throttle": float(first.mean())}
    return {name: np.full(shape, values[name], dtype) for name, (shape, dtype) in outputs.items()}


class StreamLauncher(NumpyLauncher):
    """NumpyLauncher for any CUDA adapter: takes the adapter's stream object, queues on its raw handle."""

    def __init__(self, gpu: FakeGpu, cuda: CudaApi) -> None:
        super().__init__(gpu)
        self.cuda = cuda

    def launch(self, name: str, grid: Tuple[int, int], packed: List[Any], stream: Any) -> None:
        super().launch(name, grid, packed, self.cuda.stream_handle(stream))


def gpu_env(monkeypatch: pytest.MonkeyPatch, cuda: str, version: str = "10.0.1") -> FakeGpu:
    """One fake GPU shared by the TensorRT double, the CUDA double and the numpy kernel."""
    if cuda == "cuda-python":
        gpu = fake_cuda(monkeypatch)  # the cuda-python double, with pageable H2D sources as real CUDA
    else:
        gpu = FakeGpu()
        install_pycuda(monkeypatch, gpu)
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt_module(version, gpu))
    hide_nvimgcodec(monkeypatch)  # gpu_decode: auto must not reach a real nvImageCodec with these doubles

    def launcher(api: CudaApi) -> StreamLauncher:
        return StreamLauncher(gpu, api)

    monkeypatch.setattr(gpu_preprocess, "_NvrtcLauncher", launcher)
    monkeypatch.setattr(gpu_preprocess, "_PyCudaLauncher", launcher)
    return gpu


def pilot_engine(
    folder: Path,
    gpu: FakeGpu,
    version: str,
    input_spec: Mapping[str, Any],
    engine_dtype: str = "FLOAT",
    implicit_batch: bool = False,
    dynamic: bool = False,
) -> Path:
    """A steering engine running the 'probe' program, with its spec beside it."""
    height, width = input_spec["height"], input_spec["width"]
    channels = 1 if input_spec.get("color") == "GRAY" else 3
    dims = [channels, height, width] if input_spec.get("layout", "NCHW") == "NCHW" else [height, width, channels]
    shape = dims if implicit_batch else ([-1] if dynamic else [1]) + dims
    out_shape = [1] if implicit_batch else [1, 1]
    tensors = [
        {"name": input_spec["name"], "mode": "input", "shape": shape, "dtype": engine_dtype},
        {"name": "angle", "mode": "output", "shape": out_shape},
        {"name": "throttle", "mode": "output", "shape": out_shape},
    ]
    profiles = {input_spec["name"]: [[1, *dims], [1, *dims], [2, *dims]]} if dynamic else None
    plan = make_plan(
        tensors, tensorrt_version=version, compute_capability=gpu.compute_capability, program="probe",
        implicit_batch=implicit_batch, profiles=profiles,
    )  # fmt: skip
    path = folder / "pilot.engine"
    path.write_bytes(plan)
    spec = {
        "task": "steering",
        "input": dict(input_spec),
        "output": {"format": "steering_linear", "tensors": {"angle": "angle", "throttle": "throttle"}},
    }
    (folder / "pilot.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


CASES = [
    # (engine version, cuda binding, spec input, engine input dtype, implicit batch)
    ("10.0.1", "cuda-python",
     {"name": "img", "height": 24, "width": 32, "scale": 1 / 255, "color": "RGB"}, "FLOAT", False),
    ("8.6.1", "pycuda",
     {"name": "img_in", "height": 30, "width": 40, "layout": "NHWC", "scale": 1 / 255, "crop": {"top": 10}},
     "HALF", False),
    ("10.0.1", "pycuda",
     {"name": "images", "height": 32, "width": 32, "resize": "letterbox", "pad_value": 114.0,
      "scale": 2 / 255, "offset": -1.0}, "FLOAT", False),
    ("8.2.1", "cuda-python",
     {"name": "Input", "height": 30, "width": 30, "scale": 2 / 255, "offset": -1.0}, "FLOAT", True),
]  # fmt: skip
FRAMES = [(48, 64), (120, 160), (37, 91)]  # downscales (rows gathered) and an odd upscale (direct upload)


def engine_input(gpu: FakeGpu, pipeline: ModelPipeline) -> np.ndarray:
    """The bytes the GPU preprocessor wrote into the engine's input binding, as the spec's tensor."""
    pre = pipeline.gpu_preprocessor
    assert pre is not None
    raw = bytes(gpu.view(pre.output_pointer, pre.nbytes))
    return np.frombuffer(raw, pre.dtype).reshape(pipeline.spec.input.shape)


@pytest.mark.parametrize(("version", "cuda", "input_spec", "engine_dtype", "implicit"), CASES)
def test_gpu_pipeline_equals_the_cpu_pipeline(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    version: str,
    cuda: str,
    input_spec: Dict[str, Any],
    engine_dtype: str,
    implicit: bool,
) -> None:
    gpu = gpu_env(monkeypatch, cuda, version)
    model = pilot_engine(tmp_path, gpu, version, input_spec, engine_dtype, implicit)
    options = {"cuda": cuda}
    cpu = ModelPipeline.open(model, backend="tensorrt", backend_options=options)
    fast = ModelPipeline.open(model, backend="tensorrt", backend_options=options, gpu_preprocess=True)
    assert fast.preprocessor is None and fast.gpu_preprocessor is not None
    assert fast.gpu_preprocessor.output_pointer == fast.backend.device_input(input_spec["name"])[0]
    assert fast.describe()["preprocess"] == "gpu (numpy)"
    worst = 0.0
    for seed, (height, width) in enumerate(FRAMES):
        image = random_frame("bgr", height, width, seed)
        for frame in (image, padded(image)):
            expected = cpu.run(frame)
            got = fast.run(frame)
            assert set(got.timings) == {"preprocess", "infer", "postprocess"}
            assert isinstance(got.parsed, SteeringPrediction)
            assert got.parsed.angle == pytest.approx(expected.parsed.angle, abs=1e-3)
            assert got.parsed.throttle == pytest.approx(expected.parsed.throttle, abs=1e-3)
            tensor = cpu.preprocessor.tensor  # type: ignore[union-attr]
            diff = np.abs(engine_input(gpu, fast).astype(np.float64) - tensor.astype(np.float64)).max()
            worst = max(worst, float(diff))
    assert worst <= 1e-3, worst
    fast.close()
    cpu.close()
    assert not gpu.memory  # every device buffer of both pipelines freed


@pytest.mark.parametrize("cuda", ["cuda-python", "pycuda"])
def test_gpu_pipeline_uploads_uint8_only_and_syncs_once_per_frame(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cuda: str
) -> None:
    gpu = gpu_env(monkeypatch, cuda)
    spec = {"name": "img", "height": 24, "width": 32, "scale": 1 / 255}
    pipeline = ModelPipeline.open(
        pilot_engine(tmp_path, gpu, "10.0.1", spec), backend_options={"cuda": cuda}, gpu_preprocess=True
    )
    frame = random_frame("bgr", 96, 128, seed=1)
    pipeline.run(frame)  # first frame of this geometry: tables uploaded once (their own sync)
    gpu.clear_events()
    for _ in range(5):
        pipeline.run(frame)
    kinds = gpu.kinds()
    assert kinds.count("sync") == 5  # one synchronize per frame covers kernel and engine
    assert kinds.count("execute") == 5
    float_tensor = 3 * 24 * 32 * 4
    uploads = [e["nbytes"] for e in gpu.of("htod")]
    assert uploads and float_tensor not in uploads  # only uint8 rows go up, never a float frame
    assert sum(uploads) == 5 * 48 * 128 * 3  # 48 of 96 rows: the ones the resize reads
    assert gpu.count("malloc") == gpu.count("host_alloc") == 0  # nothing allocated per frame
    assert len({e["stream"] for e in gpu.of("htod")} | {e["stream"] for e in gpu.of("execute")}) == 1
    pipeline.close()


def test_close_frees_the_gpu_preprocessor_before_the_backend(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gpu = gpu_env(monkeypatch, "cuda-python")
    spec = {"name": "img", "height": 24, "width": 32, "scale": 1 / 255}
    pipeline = ModelPipeline.open(pilot_engine(tmp_path, gpu, "10.0.1", spec), gpu_preprocess=True)
    pipeline.run(random_frame("bgr", 48, 64))
    engine_input_pointer = pipeline.gpu_preprocessor.output_pointer  # type: ignore[union-attr]
    gpu.clear_events()
    pipeline.close()
    pipeline.close()  # idempotent
    kinds = gpu.kinds()
    freed = [e["pointer"] for e in gpu.of("free")]
    assert kinds.count("stream_destroy") == 1  # the backend's stream, destroyed once, by the backend
    assert freed.count(engine_input_pointer) == 1  # the engine's binding is freed by the backend alone
    assert freed.index(engine_input_pointer) > 0  # after the preprocessor's own buffers
    assert kinds.index("stream_destroy") > kinds.index("free")
    assert not gpu.memory


def test_frame_processor_runs_a_gpu_preprocessed_pilot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gpu = gpu_env(monkeypatch, "cuda-python")
    spec = {"name": "img", "height": 24, "width": 32, "scale": 1 / 255}
    pilot = open_model(pilot_engine(tmp_path, gpu, "10.0.1", spec), gpu_preprocess=True, name="pilot")
    processor = FrameProcessor([pilot])
    result = processor.process_image(random_frame("rgb", 48, 64), now=0.0)
    assert result.steering is not None and "pilot.preprocess" in result.timings
    processor.close()
    assert not gpu.memory


def test_gpu_preprocess_needs_the_tensorrt_backend(tmp_path: Path) -> None:
    from onnx_factory import brightness_pilot  # here: the GPU machine's tests run without onnx

    with pytest.raises(BackendError, match=r"gpu_preprocess needs the TensorRT backend.*onnxruntime.*fix"):
        ModelPipeline.open(brightness_pilot(tmp_path), gpu_preprocess=True)


def test_gpu_preprocess_needs_a_static_input_shape(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gpu = gpu_env(monkeypatch, "cuda-python")
    spec = {"name": "img", "height": 24, "width": 32, "scale": 1 / 255}
    model = pilot_engine(tmp_path, gpu, "10.0.1", spec, dynamic=True)
    with pytest.raises(BackendError, match=r"static input shape.*'img'.*fix"):
        ModelPipeline.open(model, gpu_preprocess=True)
    assert not gpu.memory  # the backend opened for it was closed again
    cpu = ModelPipeline.open(model)  # the CPU path still runs it
    assert isinstance(cpu.run(DecodedImage(np.zeros((48, 64, 3), np.uint8), "bgr")).parsed, SteeringPrediction)
    cpu.close()



# ------------------------------------------------------------------------------------ node/replay params


def test_gpu_preprocess_params_reach_the_pipelines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for head in ("detector", "pilot"):
        param = ParamTable.legacy_table().by_name[f"{head}.gpu_preprocess"]
        assert param.default is False and param.read_only and not param.dynamic
    gpu = gpu_env(monkeypatch, "cuda-python")
    model = pilot_engine(tmp_path, gpu, "10.0.1", {"name": "img", "height": 24, "width": 32, "scale": 1 / 255})
    flat = {"detector.enabled": False, "pilot.enabled": True, "pilot.model": str(model)}
    assert PerceptionConfig.from_params(flat).head("pilot").model.gpu_preprocess is False  # off by default
    config = PerceptionConfig.from_params({**flat, "pilot.gpu_preprocess": True})
    assert config.head("pilot").model.gpu_preprocess is True
    processor = create_frame_processor(config)  # what the node and the replay tool call
    assert processor.head("pilot").pipeline.gpu_preprocessor is not None
    assert processor.process_image(random_frame("bgr", 48, 64), now=0.0).steering is not None
    processor.close()
    assert not gpu.memory


def test_gpu_preprocess_param_on_an_onnx_model_names_the_param(tmp_path: Path) -> None:
    from onnx_factory import brightness_pilot

    model = brightness_pilot(tmp_path)
    config = PerceptionConfig.from_params(
        {"detector.enabled": False, "pilot.enabled": True, "pilot.model": str(model), "pilot.gpu_preprocess": True}
    )
    with pytest.raises(ConfigError, match=r"pilot.gpu_preprocess is true.*onnxruntime.*TensorRT backend.*fix"):
        create_frame_processor(config)


# ------------------------------------------------------------------------------------- on a real GPU


class DeviceEchoBackend(Backend):
    """A stand-in engine on real CUDA (no TensorRT needed): its input lives in device memory, ``infer``
    copies it back on the stream and computes the probe outputs from it on the host.

    It has ``device_input`` like the TensorRT backend, so the pipeline's GPU path (real NVRTC/pycuda kernel
    writing into this buffer on this stream, then one synchronize in ``infer``) runs exactly as with an
    engine; the CPU path feeds the host tensor, copied up and back the same way.
    """

    name = "device-echo"

    def __init__(self, cuda: CudaApi, shape: Tuple[int, ...], dtype: Any) -> None:
        super().__init__()
        self.cuda = cuda
        self.dtype = np.dtype(dtype)
        self.inputs = (TensorSpec("img", shape, self.dtype),)
        self.outputs = (TensorSpec("angle", (1, 1), np.float32), TensorSpec("throttle", (1, 1), np.float32))
        nbytes = int(np.prod(shape)) * self.dtype.itemsize
        with cuda.activated():
            self.stream = cuda.stream_create()
            self.device = cuda.malloc(nbytes)
            self.staging = cuda.pinned_empty(nbytes)
            self.echo = cuda.pinned_empty(nbytes)
        self.shape = shape
        self.syncs = 0

    def device_input(self, name: str) -> Tuple[int, Any, CudaApi]:
        assert name == "img"
        return self.device, self.stream, self.cuda

    def infer(self, feed: Mapping[str, np.ndarray], on_device: Sequence[str] = ()) -> Dict[str, np.ndarray]:
        with self.cuda.activated():
            if "img" not in on_device:
                self.staging.view(self.dtype)[:] = np.asarray(feed["img"], self.dtype).reshape(-1)
                self.cuda.memcpy_htod_async(self.device, self.staging, self.stream)
            self.cuda.memcpy_dtoh_async(self.echo, self.device, self.stream)
            self.cuda.stream_synchronize(self.stream)
            self.syncs += 1
        tensor = self.echo.view(self.dtype).reshape(self.shape)
        shapes = {"angle": ((1, 1), np.float32), "throttle": ((1, 1), np.float32)}
        return _probe({"img": tensor}, shapes, {})

    def close(self) -> None:
        cuda, self.cuda = self.cuda, None
        if cuda is None:
            return
        with cuda.activated():
            cuda.stream_synchronize(self.stream)
            cuda.free(self.device)
            cuda.free_pinned(self.staging)
            cuda.free_pinned(self.echo)
            cuda.stream_destroy(self.stream)


@pytest.fixture(scope="module", params=["cuda-python", "pycuda"])
def real_cuda(request: pytest.FixtureRequest) -> Iterator[CudaApi]:
    api = _real_api(request.param)
    yield api
    api.close()


REAL_SPECS = [
    {"name": "img", "height": 300, "width": 300, "scale": 2 / 255, "offset": -1.0},
    {"name": "img", "height": 120, "width": 160, "layout": "NHWC", "scale": 1 / 255, "crop": {"top": 40}},
    {"name": "img", "height": 640, "width": 640, "resize": "letterbox", "pad_value": 114.0, "scale": 1 / 255,
     "dtype": "float16"},
]  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("input_spec", REAL_SPECS, ids=["ssd300", "donkey-nhwc-crop", "letterbox-fp16"])
def test_real_gpu_pipeline_equals_the_cpu_pipeline(real_cuda: CudaApi, input_spec: Dict[str, Any]) -> None:
    spec_data = {
        "task": "steering",
        "input": input_spec,
        "output": {"format": "steering_linear", "tensors": {"angle": "angle", "throttle": "throttle"}},
    }
    spec = parse_spec(spec_data)
    dtype = np.dtype(spec.input.dtype)
    cpu = ModelPipeline(spec, DeviceEchoBackend(real_cuda, spec.input.shape, dtype))
    fast = ModelPipeline(spec, DeviceEchoBackend(real_cuda, spec.input.shape, dtype), gpu_preprocess=True)
    assert fast.gpu_preprocessor is not None
    assert fast.describe()["preprocess"] == f"gpu ({fast.gpu_preprocessor.launcher.name})"
    worst = 0.0
    try:
        for seed, size in enumerate([(480, 640), (1080, 1920), (480, 640)]):
            frame = random_frame("bgr", *size, seed=seed)
            expected, got = cpu.run(frame), fast.run(frame)
            assert got.parsed.angle == pytest.approx(expected.parsed.angle, abs=1e-3)
            assert got.parsed.throttle == pytest.approx(expected.parsed.throttle, abs=1e-3)
            echo = fast.backend.echo.view(dtype).reshape(spec.input.shape).astype(np.float64)  # type: ignore[attr-defined]
            worst = max(worst, float(np.abs(echo - cpu.preprocessor.tensor.astype(np.float64)).max()))  # type: ignore[union-attr]
        assert fast.backend.syncs == 3  # type: ignore[attr-defined]
        print(f"\nreal GPU pipeline ({real_cuda.name}, {input_spec}): max |gpu - cpu| input tensor {worst:.3g}")
        assert worst <= 1e-3
    finally:
        fast.close()
        cpu.close()
