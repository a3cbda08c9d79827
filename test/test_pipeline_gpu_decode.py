"""FrameProcessor with gpu_decode: JPEG frames decoded on the GPU reach GPU-preprocessing heads as device
frames, CPU heads get one host copy, ``result.image`` stays a host frame, the choice is logged once.

Two layers, as test_gpu_decode.py: on the doubles (TensorRT, CUDA, nvImageCodec with cv2's pixels, the numpy
kernel) and, marked gpu, with the real nvImageCodec, CUDA and kernel against the CPU path (run on the GPU
machine: ``python -m pytest test/test_pipeline_gpu_decode.py -v -s``; no TensorRT or onnx needed there).
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, List

import cv2
import numpy as np
import pytest
from fakes.cuda_fake import FakeGpu
from fakes.nvimgcodec_fake import install_nvimgcodec
from test_gpu_decode import camera_frame, jpeg
from test_pipeline_gpu import DeviceEchoBackend, _real_api, gpu_env, pilot_engine

from trt_perception import gpu_decode
from trt_perception.backends.cuda import CudaApi
from trt_perception.errors import ConfigError, ImageError
from trt_perception.gpu_preprocess import DeviceImage
from trt_perception.heads import Head, head_from_pipeline, open_model
from trt_perception.images import DecodedImage
from trt_perception.pipeline import FrameProcessor, ModelPipeline
from trt_perception.spec import parse_spec

SPEC = {"name": "img", "height": 24, "width": 32, "scale": 1 / 255}


@pytest.fixture(autouse=True)
def _fresh_log_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_decode, "_LOGGED", set())


def compressed(frame: np.ndarray, fmt: str = "bgr8; jpeg compressed bgr8") -> Any:
    return SimpleNamespace(format=fmt, data=jpeg(frame))


def logged(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trt_perception" and "gpu_decode" in r.getMessage()]


def gpu_pilot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, codec: bool = True) -> Any:
    """A fake GPU with TensorRT, CUDA and (``codec``) nvImageCodec doubles; a pilot engine's path."""
    gpu = gpu_env(monkeypatch, "cuda-python")
    if codec:
        install_nvimgcodec(monkeypatch, gpu)
    return gpu, pilot_engine(tmp_path, gpu, "10.0.1", SPEC)


def freed(gpu: FakeGpu) -> bool:
    """Every device buffer freed, once the double's own records of decoded Images are dropped (what dropping
    the real Images does)."""
    import sys

    for decoder in getattr(sys.modules.get("nvidia.nvimgcodec"), "decoders", []):
        decoder.close()
    return not gpu.memory


def test_auto_decodes_on_the_gpu_when_every_head_preprocesses_there(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trt_perception")
    gpu, model = gpu_pilot(monkeypatch, tmp_path)
    fast = FrameProcessor([open_model(model, gpu_preprocess=True, name="pilot")])  # gpu_decode: auto
    slow = FrameProcessor([open_model(model, name="pilot")], gpu_decode="off")
    assert fast.decode.on_gpu and not slow.decode.on_gpu
    assert logged(caplog) == [
        "gpu_decode: JPEG frames are decoded on the GPU with nvImageCodec 0.9.0-fake on Orin (fake) (hardware, gpu, "
        "hybrid)"
    ]
    for seed in range(3):
        frame = camera_frame(96, 72, seed)
        msg = compressed(frame)
        got, expected = fast.process(msg, 0.0), slow.process(msg, 0.0)
        assert isinstance(got.frame, DeviceImage) and isinstance(expected.frame, DecodedImage)
        assert got.steering.angle == pytest.approx(expected.steering.angle, abs=1e-4)  # type: ignore[union-attr]
        assert got.steering.throttle == pytest.approx(expected.steering.throttle, abs=1e-4)  # type: ignore[union-attr]
        assert set(got.timings) >= {"decode", "pilot.preprocess", "pilot.infer", "total"}
        assert "download" not in got.timings  # no head needed the frame on the host
        host = got.image  # what overlays and reports read: a host frame, downloaded on first use
        assert isinstance(host, DecodedImage) and host.color == "rgb"  # nvImageCodec's order, labelled
        np.testing.assert_array_equal(host.array[:, :, ::-1], expected.image.array)
        assert got.image is host  # downloaded once
    fast.close()
    slow.close()
    assert freed(gpu)


def test_auto_stays_on_the_cpu_when_a_head_preprocesses_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trt_perception")
    _, model = gpu_pilot(monkeypatch, tmp_path)
    for _ in range(2):  # e.g. two cameras: said once
        processor = FrameProcessor([open_model(model, name="pilot")])
        assert not processor.decode.on_gpu
        assert isinstance(processor.process(compressed(camera_frame(64, 48)), 0.0).frame, DecodedImage)
        processor.close()
    lines = logged(caplog)
    assert len(lines) == 1 and "decoded on the CPU" in lines[0] and "pilot" in lines[0]
    assert "gpu_preprocess: true" in lines[0]


def test_on_decodes_on_the_gpu_and_gives_cpu_heads_one_host_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    from head_factory import colour_classifier

    gpu, model = gpu_pilot(monkeypatch, tmp_path)
    classifier = colour_classifier(tmp_path)

    def heads(gpu_pre: bool) -> List[Head]:
        return [open_model(model, gpu_preprocess=gpu_pre, name="pilot"), open_model(classifier, name="colours")]

    fast = FrameProcessor(heads(True), gpu_decode="on")
    slow = FrameProcessor(heads(False), gpu_decode="off")
    assert fast.decode.on_gpu
    downloads = []
    for seed in range(2):
        msg = compressed(camera_frame(80, 60, seed))
        got, expected = fast.process(msg, 0.0), slow.process(msg, 0.0)
        assert isinstance(got.frame, DeviceImage)
        assert got.steering.angle == pytest.approx(expected.steering.angle, abs=1e-4)  # type: ignore[union-attr]
        scores = got.outputs["colours"].result.scores
        np.testing.assert_allclose(scores, expected.outputs["colours"].result.scores, atol=1e-5)
        assert "download" in got.timings
        downloads.append(got.image)
    assert downloads[0] is not downloads[1]
    fast.close()
    slow.close()
    assert freed(gpu)


def test_on_without_nvimgcodec_is_a_config_error_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, model = gpu_pilot(monkeypatch, tmp_path, codec=False)
    head = open_model(model, gpu_preprocess=True, name="pilot")
    with pytest.raises(ConfigError, match=r"gpu_decode is 'on'.*fix: pip install nvidia-nvimgcodec-cu13"):
        FrameProcessor([head], gpu_decode="on")
    with pytest.raises(ConfigError, match=r"gpu_decode is 'gpu'; expected one of \['auto', 'on', 'off'\]"):
        FrameProcessor([head], gpu_decode="gpu")
    processor = FrameProcessor([head])  # auto: the CPU, said once
    assert not processor.decode.on_gpu
    processor.close()


def test_gpu_decode_keeps_max_pixels_and_bad_frames(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _, model = gpu_pilot(monkeypatch, tmp_path)
    processor = FrameProcessor([open_model(model, gpu_preprocess=True, name="pilot")], max_pixels=64 * 48)
    assert processor.decode.on_gpu
    assert processor.process(compressed(camera_frame(64, 48)), 0.0).steering is not None
    with pytest.raises(ImageError, match=r"65x48 .*above max_pixels 3072"):
        processor.process(compressed(camera_frame(65, 48)), 0.0)
    with pytest.raises(ImageError, match="truncated"):
        processor.process(SimpleNamespace(format="jpeg", data=jpeg(camera_frame(64, 48))[:100]), 0.0)
    png = SimpleNamespace(format="png", data=cv2.imencode(".png", camera_frame(64, 48))[1].tobytes())
    assert isinstance(processor.process(png, 0.0).frame, DecodedImage)  # the GPU takes JPEG only
    processor.close()


def test_a_gpu_decoded_stream_equals_the_sequential_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _, model = gpu_pilot(monkeypatch, tmp_path)
    processor = FrameProcessor([open_model(model, gpu_preprocess=True, name="pilot")])
    msgs = [compressed(camera_frame(96, 72, seed)) for seed in range(6)]
    sequential = [processor.process(m, 0.0).steering for m in msgs]
    streamed = [(r.result.steering, r.result.image) for r in processor.process_stream((m, 0.0) for m in msgs)]
    assert [s for s, _ in streamed] == sequential
    processor.close()


# ------------------------------------------------------------------------------------- on a real GPU


@pytest.fixture(scope="module")
def real_cuda() -> Iterator[CudaApi]:
    try:
        import nvidia.nvimgcodec  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"no nvImageCodec here: {exc}")
    api = _real_api("cuda-python")
    yield api
    gc.collect()
    api.close()


REAL_SPECS = {
    "ssd300": {"name": "img", "height": 300, "width": 300, "scale": 2 / 255, "offset": -1.0},
    "letterbox-fp16": {"name": "img", "height": 640, "width": 640, "resize": "letterbox", "pad_value": 114.0,
                       "scale": 1 / 255, "dtype": "float16"},
}  # fmt: skip


def echo_head(cuda: CudaApi, input_spec: Any, gpu: bool) -> Head:
    spec = parse_spec({
        "task": "steering", "input": input_spec,
        "output": {"format": "steering_linear", "tensors": {"angle": "angle", "throttle": "throttle"}},
    })  # fmt: skip
    backend = DeviceEchoBackend(cuda, spec.input.shape, np.dtype(spec.input.dtype))
    return head_from_pipeline("pilot", ModelPipeline(spec, backend, gpu_preprocess=gpu))


@pytest.mark.gpu
@pytest.mark.parametrize("model", list(REAL_SPECS))
def test_real_gpu_decode_through_the_frame_processor(real_cuda: CudaApi, model: str) -> None:
    fast = FrameProcessor([echo_head(real_cuda, REAL_SPECS[model], True)], gpu_decode="on")
    slow = FrameProcessor([echo_head(real_cuda, REAL_SPECS[model], False)], gpu_decode="off")
    worst_pixel = worst_input = 0.0
    try:
        assert fast.decode.on_gpu and "nvImageCodec" in fast.decode.gpu.describe()  # type: ignore[union-attr]
        msgs = [compressed(camera_frame(w, h, seed)) for seed, (w, h) in enumerate([(640, 480), (1920, 1080),
                                                                                     (1280, 720), (641, 479)])]
        expected = []
        for msg in msgs:
            got, want = fast.process(msg, 0.0), slow.process(msg, 0.0)
            assert isinstance(got.frame, DeviceImage)
            assert got.steering.angle == pytest.approx(want.steering.angle, abs=2e-3)  # type: ignore[union-attr]
            assert got.steering.throttle == pytest.approx(want.steering.throttle, abs=2e-3)  # type: ignore[union-attr]
            dtype = np.dtype(got_dtype(model))  # the engine input both wrote, read back from the device
            fast_in = fast.heads[0].pipeline.backend.echo.view(dtype).astype(np.float64)  # type: ignore[attr-defined]
            slow_in = slow.heads[0].pipeline.backend.echo.view(dtype).astype(np.float64)  # type: ignore[attr-defined]
            worst_input = max(worst_input, float(np.abs(fast_in - slow_in).max()))
            host = got.image
            assert isinstance(host, DecodedImage) and host.color == "rgb"
            worst_pixel = max(worst_pixel, float(np.abs(host.array[:, :, ::-1].astype(int)
                                                        - want.image.array.astype(int)).max()))
            expected.append(got.steering)
        streamed = [r.result.steering for r in fast.process_stream((m, 0.0) for m in msgs)]  # decode overlapped
        assert [(s.angle, s.throttle) for s in streamed] == [(s.angle, s.throttle) for s in expected]
        print(f"\nreal FrameProcessor gpu_decode ({model}): max |gpu - cpu| decoded pixel {worst_pixel:.0f}, "
              f"engine input {worst_input:.4g}")
        assert worst_pixel <= 4
        assert worst_input <= 5 * 2 / 255  # a few decoded levels, through scale 2/255 at most (and float16)
    finally:
        fast.close()
        slow.close()
        gc.collect()


def got_dtype(model: str) -> str:
    return str(REAL_SPECS[model].get("dtype", "float32"))
