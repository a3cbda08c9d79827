"""GPU JPEG decoding (gpu_decode): fallback choice, the one log line, shapes, errors - and the real thing.

Two layers:
  * on the CUDA double with the nvImageCodec double (test/fakes/nvimgcodec_fake.py, cv2's pixels in fake
    device memory) and the numpy port of the preprocessing kernel: mode selection and the log line, the
    DeviceImage each JPEG becomes (shape, pitch, channel order label, stream), the ring of reused buffers,
    per-frame CPU fallback (PNG, raw, CMYK, refused), ImageError for frames nobody can decode, and the
    engine input equal to the CPU path's (no GPU);
  * marked gpu: the real nvImageCodec on a real GPU against ``cv2.imdecode`` (decoded pixels) and against
    ``Preprocessor`` (engine input), max abs differences printed (-s); skipped without nvImageCodec + GPU.
On the device machine: ``python -m pytest test/test_gpu_decode.py -v -s``.
"""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import pytest
from fakes.cuda_fake import FakeGpu, hide_cuda_bindings
from fakes.nvimgcodec_fake import hide_nvimgcodec, install_nvimgcodec
from test_gpu_preprocess import NumpyLauncher, fake_cuda, random_specs

from trt_perception import gpu_decode
from trt_perception.errors import BackendError, ConfigError, ImageError
from trt_perception.gpu_decode import FrameDecoder, GpuJpegDecoder, host_image, open_frame_decoder
from trt_perception.gpu_preprocess import DeviceImage, GpuPreprocessor
from trt_perception.images import DecodedImage, decode_compressed, encode_compressed
from trt_perception.preprocess import Preprocessor
from trt_perception.spec import InputSpec

# ---------------------------------------------------------------------------------------------- frames


def camera_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A BGR frame that compresses like a picture (gradients, shapes, mild noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.stack([90 + 60 * np.sin(x / 37.0 + seed), 110 + 50 * np.cos(y / 23.0), 60 + 0.2 * x + 0.1 * y], -1)
    frame += rng.normal(0, 4, frame.shape)
    out = np.clip(frame, 0, 255).astype(np.uint8)
    for _ in range(4):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(out, (cx, cy), (cx + max(2, width // 8), cy + max(2, height // 8)), color, -1)
    return out


def jpeg(frame: np.ndarray, quality: int = 90, **flags: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    for name, value in flags.items():
        params += [getattr(cv2, name), value]
    ok, data = cv2.imencode(".jpg", frame, params)
    assert ok
    return data.tobytes()


def compressed(data: bytes, fmt: str = "bgr8; jpeg compressed bgr8") -> Any:
    return SimpleNamespace(format=fmt, data=data)


def raw(frame: np.ndarray) -> Any:
    return SimpleNamespace(height=frame.shape[0], width=frame.shape[1], encoding="bgr8", step=frame.shape[1] * 3,
                           data=frame.tobytes(), is_bigendian=0)  # fmt: skip


# --------------------------------------------------------------------------------------- on the doubles


@pytest.fixture(autouse=True)
def _fresh_log_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_decode, "_LOGGED", set())


def fake_env(monkeypatch: pytest.MonkeyPatch, gpu_for_codec: bool = True, **codec: Any) -> Tuple[FakeGpu, Any]:
    """The CUDA double (cuda-python) and the nvImageCodec double on one FakeGpu."""
    gpu = fake_cuda(monkeypatch)
    module = install_nvimgcodec(monkeypatch, gpu if gpu_for_codec else None, **codec)
    return gpu, module


def messages(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trt_perception"]


def test_auto_without_nvimgcodec_decodes_on_the_cpu_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_cuda(monkeypatch)
    hide_nvimgcodec(monkeypatch)
    caplog.set_level(logging.INFO, "trt_perception")
    decoders = [open_frame_decoder("auto", cuda="cuda-python") for _ in range(3)]  # e.g. three cameras
    assert all(not d.on_gpu for d in decoders)
    logged = messages(caplog)
    assert len(logged) == 1
    assert "decoded on the CPU" in logged[0] and "nvidia-nvimgcodec-cu13" in logged[0]
    assert "tegra-cu12" in logged[0]  # the Jetson wheel is named too
    frame = camera_frame(64, 48)
    image = decoders[0](compressed(jpeg(frame)))
    assert isinstance(image, DecodedImage) and image.color == "bgr"


def test_auto_without_a_gpu_decodes_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trt_perception")
    fake_env(monkeypatch, gpu_for_codec=False)  # nvImageCodec installed, its Decoder finds no usable GPU
    decoder = open_frame_decoder("auto", cuda="cuda-python")
    assert not decoder.on_gpu
    assert any("decoded on the CPU" in m and "'#35'" in m for m in messages(caplog))


def test_auto_without_any_cuda_binding_decodes_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_cuda_bindings(monkeypatch)
    install_nvimgcodec(monkeypatch, FakeGpu())
    assert not open_frame_decoder("auto").on_gpu


def test_on_without_nvimgcodec_is_a_config_error_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cuda(monkeypatch)
    hide_nvimgcodec(monkeypatch)
    with pytest.raises(ConfigError, match="gpu_decode is 'on'.*fix: pip install nvidia-nvimgcodec.*gpu_decode: auto"):
        open_frame_decoder("on", cuda="cuda-python")


def test_off_and_bad_modes(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    fake_env(monkeypatch)
    caplog.set_level(logging.INFO, "trt_perception")
    assert not open_frame_decoder("off").on_gpu
    assert messages(caplog) == []
    with pytest.raises(ConfigError, match="gpu_decode is 'gpu'; expected one of"):
        open_frame_decoder("gpu")
    with pytest.raises(ConfigError, match="backends are \\['nvdec'\\]"):
        GpuJpegDecoder(cuda="cuda-python", backends=["nvdec"])


def test_auto_with_nvimgcodec_and_a_gpu_decodes_on_the_gpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _, module = fake_env(monkeypatch)
    caplog.set_level(logging.INFO, "trt_perception")
    decoder = open_frame_decoder("auto", cuda="cuda-python")
    try:
        assert decoder.on_gpu
        assert messages(caplog) == ["gpu_decode: JPEG frames are decoded on the GPU with nvImageCodec 0.9.0-fake "
                                    "on Orin (fake) (hardware, gpu, hybrid)"]  # fmt: skip
        made = module.decoders[0]
        assert [b.backend_kind.name for b in made.backends] == ["HW_GPU_ONLY", "GPU_ONLY", "HYBRID_CPU_GPU"]
    finally:
        decoder.close()


@pytest.mark.parametrize(("fmt", "label"), [("bgr8; jpeg compressed bgr8", "rgb"), ("jpeg", "rgb"),
                                            ("rgb8; jpeg compressed rgb8", "bgr")])  # fmt: skip
@pytest.mark.parametrize("pitch_align", [1, 256])
def test_a_jpeg_becomes_a_device_image_with_the_cpu_paths_pixels(
    monkeypatch: pytest.MonkeyPatch, fmt: str, label: str, pitch_align: int
) -> None:
    """nvImageCodec gives R, G, B; the label says so in the CPU path's terms, so the kernel reorders right."""
    _, module = fake_env(monkeypatch, pitch_align=pitch_align)
    frame = camera_frame(61, 37, seed=3)
    data = jpeg(frame)
    with GpuJpegDecoder(cuda="cuda-python") as decoder:
        image = FrameDecoder(decoder)(compressed(data, fmt))
        assert isinstance(image, DeviceImage)
        assert (image.height, image.width, image.color, image.stream) == (37, 61, label, None)
        assert image.pitch == -(-61 * 3 // pitch_align) * pitch_align
        call = module.decoders[0].calls[0]
        assert call["params"].apply_exif_orientation is False  # as cv2.IMREAD_UNCHANGED: no EXIF rotation
        assert call["cuda_stream"] == decoder.cuda.stream_handle(decoder.stream)
        cpu = decode_compressed(fmt, data)
        host = host_image(image)
        assert host.color == label and host_image(cpu) is cpu
        np.testing.assert_array_equal(host.array[:, :, ::-1], cpu.array)  # same pixels, channels reversed


def test_gray_jpeg_decodes_to_one_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    _, module = fake_env(monkeypatch)
    gray = camera_frame(40, 30)[:, :, 1].copy()
    fmt, data = encode_compressed(gray, "gray", "jpeg")
    with GpuJpegDecoder(cuda="cuda-python") as decoder:
        image = FrameDecoder(decoder)(compressed(data.tobytes(), fmt))
        assert isinstance(image, DeviceImage) and image.color == "gray" and image.pitch == 40
        assert module.decoders[0].calls[0]["params"].color_spec.name == "GRAY"
        np.testing.assert_array_equal(image.download().array, decode_compressed(fmt, data).array)


def test_decoded_buffers_are_reused_in_a_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    _, module = fake_env(monkeypatch)
    frames = [jpeg(camera_frame(64, 48, seed=s)) for s in range(5)]
    with GpuJpegDecoder(cuda="cuda-python", buffers=2) as decoder:
        pointers = [decoder.decode(f).pointer for f in frames]  # type: ignore[union-attr]
        calls = module.decoders[0].calls
        assert [c["image"] is None for c in calls] == [True, True, False, False, False]
        assert pointers[0] == pointers[2] == pointers[4] and pointers[1] == pointers[3] != pointers[0]
        assert len(module.decoders[0].images) == 2  # two device buffers for five frames
        assert decoder.decoded == 5


def test_the_decode_stream_outlives_every_frame_still_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """nvImageCodec frees a decoded buffer on its decode stream: that stream may only go after the last frame."""
    gpu, _ = fake_env(monkeypatch)
    spec = InputSpec(name="x", height=24, width=32, scale=(1 / 255,) * 3)
    data = jpeg(camera_frame(64, 48, seed=1))
    expected, _ = Preprocessor(spec)(decode_compressed("jpeg", data))
    with GpuPreprocessor(spec, cuda="cuda-python", launcher=NumpyLauncher(gpu)) as pre:
        decoder = GpuJpegDecoder(cuda=pre.cuda)
        image = decoder.decode(data)
        assert image is not None and image.stream is None  # synchronized: any stream may read it
        decoder.close()
        assert gpu.count("stream_destroy") == 0  # the frame still holds the stream
        pre(image)  # still readable after the decoder closed
        np.testing.assert_allclose(pre.download(), expected, atol=1e-6)
        del image
        assert gpu.count("stream_destroy") == 1  # gone with the last frame
        with pytest.raises(BackendError, match="after close"):
            decoder.decode(data)
        frames = GpuJpegDecoder(cuda=pre.cuda)
        frames.close()
        assert gpu.count("stream_destroy") == 2  # no frame held: at once


@pytest.mark.parametrize(("spec", "source"), list(random_specs(16, seed=29)))
def test_gpu_decode_then_kernel_equals_cpu_decode_then_preprocess(
    monkeypatch: pytest.MonkeyPatch, spec: InputSpec, source: str
) -> None:
    """The orchestration end to end on the doubles (pixels identical by construction): every layout, dtype,
    color order, crop and letterbox of random specs, from padded device rows."""
    gpu, _ = fake_env(monkeypatch, pitch_align=64)
    fmt = "rgb8; jpeg compressed rgb8" if source == "rgb" else "bgr8; jpeg compressed bgr8"
    frames = FrameDecoder(GpuJpegDecoder(cuda="cuda-python"))
    try:
        with GpuPreprocessor(spec, cuda="cuda-python", launcher=NumpyLauncher(gpu)) as pre:
            cpu = Preprocessor(spec)
            for seed, (height, width) in enumerate([(45, 61), (120, 160), (spec.height + 9, spec.width + 3)]):
                data = jpeg(camera_frame(width, height, seed))
                image = frames(compressed(data, fmt))
                assert isinstance(image, DeviceImage)
                transform = pre(image)
                expected, expected_transform = cpu(decode_compressed(fmt, data))
                assert transform == expected_transform
                got = pre.download()
                tol = 4e-3 if pre.dtype == np.float16 else 1e-5
                assert np.abs(got.astype(np.float64) - expected.astype(np.float64)).max() <= tol
    finally:
        frames.close()


def test_frames_the_gpu_does_not_take_go_to_the_cpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_env(monkeypatch)
    caplog.set_level(logging.INFO, "trt_perception")
    frame = camera_frame(32, 24)
    _, png = cv2.imencode(".png", frame)
    frames = FrameDecoder(GpuJpegDecoder(cuda="cuda-python"))
    try:
        for _ in range(3):
            image = frames(compressed(png.tobytes(), "bgr8; png compressed bgr8"))
            assert isinstance(image, DecodedImage)
            np.testing.assert_array_equal(image.array, frame)
        assert sum("decoded on the CPU: not a JPEG" in m for m in messages(caplog)) == 1  # once, not per frame
        image = frames(raw(frame))
        assert isinstance(image, DecodedImage)
        assert (frames.gpu_frames, frames.cpu_frames) == (0, 4)
        # an arithmetic-coded or CMYK JPEG: the header says 4 components -> CPU
        cmyk = bytearray(jpeg(frame))
        sof = cmyk.index(b"\xff\xc0")
        cmyk[sof + 9] = 4
        frames.gpu.decode(bytes(cmyk))  # type: ignore[union-attr]
        assert "jpeg with 4 channels" in frames.gpu.last_refusal  # type: ignore[union-attr]
    finally:
        frames.close()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "CompressedImage.data is empty"),
        # refused from the header, before either decoder runs (as on the CPU path)
        (b"hello world" * 20, "^CompressedImage.data .*is not JPEG, PNG.*fix: "),
        ("jpeg-head", "^CompressedImage.data .*is truncated.*fix: "),
        ("jpeg-body", "^CompressedImage.data .*is damaged.*fix: "),
        ("huge", "^CompressedImage.data is 9000x9000 .*above max_pixels 1000000"),
    ],
)
def test_frames_nobody_can_decode_raise_image_error(monkeypatch: pytest.MonkeyPatch, data: Any, match: str) -> None:
    fake_env(monkeypatch)
    good = jpeg(camera_frame(64, 48))
    if data == "jpeg-head":
        data = good[:20]  # SOI and part of APP0: no frame header
    elif data == "jpeg-body":
        sos = good.index(b"\xff\xda")
        data = good[:sos] + b"\xff\xd9"  # headers, no scan
    elif data == "huge":  # a decompression bomb's header: the GPU never sees it
        data = jpeg(np.zeros((9000, 9000, 3), np.uint8), quality=10)
    frames = FrameDecoder(GpuJpegDecoder(cuda="cuda-python"), max_pixels=1_000_000)
    try:
        with pytest.raises(ImageError, match=match):
            frames(compressed(data))
        with pytest.raises(ImageError, match="compressedDepth"):
            frames(compressed(good, "16UC1; compressedDepth"))
    finally:
        frames.close()


def test_closing_frees_the_device_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu, module = fake_env(monkeypatch)
    decoder = GpuJpegDecoder(cuda="cuda-python")
    decoder.decode(jpeg(camera_frame(64, 48)))
    decoder.close()
    decoder.close()  # idempotent
    module.decoders[0].close()  # what dropping the real Images does
    assert not gpu.memory


def test_importing_gpu_decode_imports_no_cuda_or_nvidia_package() -> None:
    code = (
        "import sys, trt_perception.gpu_decode; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cuda', 'pycuda', 'cupy', 'nvidia', 'tensorrt')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------ on a real GPU


@pytest.fixture(scope="module")
def real_decoder() -> Iterator[GpuJpegDecoder]:
    try:
        decoder = GpuJpegDecoder(cuda="cuda-python")
    except BackendError as exc:
        pytest.skip(f"no GPU JPEG decoding here: {exc}")
    yield decoder
    decoder.close()


MAX_DIFFS: Dict[str, Tuple[float, float]] = {}  # case -> (max abs, mean abs)
PIXEL_TOLERANCE = 4  # levels, libjpeg-turbo vs nvJPEG; measured on an H100: 1 (3 for 4:1:1 and progressive)
MEAN_TOLERANCE = 0.1  # measured: at most 0.027


def jpeg_cases() -> Iterator[Tuple[str, np.ndarray, bytes]]:
    for width, height in ((640, 480), (1280, 720), (1920, 1080), (641, 479), (33, 17)):
        frame = camera_frame(width, height, seed=width)
        yield f"{width}x{height} q90 4:2:0", frame, jpeg(frame)
    frame = camera_frame(640, 480, seed=7)
    for quality in (50, 100):
        yield f"640x480 q{quality} 4:2:0", frame, jpeg(frame, quality)
    for name in ("444", "422", "411"):
        factor = getattr(cv2, f"IMWRITE_JPEG_SAMPLING_FACTOR_{name}", None)
        if factor is not None:
            yield f"640x480 q90 {name}", frame, jpeg(frame, 90, IMWRITE_JPEG_SAMPLING_FACTOR=factor)
    yield "640x480 q90 restart", frame, jpeg(frame, 90, IMWRITE_JPEG_RST_INTERVAL=4)
    yield "640x480 q90 progressive", frame, jpeg(frame, 90, IMWRITE_JPEG_PROGRESSIVE=1)
    yield "640x480 q90 optimized", frame, jpeg(frame, 90, IMWRITE_JPEG_OPTIMIZE=1)
    yield "640x480 q90 gray", frame[:, :, 1].copy(), jpeg(frame[:, :, 1].copy())


@pytest.mark.gpu
@pytest.mark.parametrize("case", [c[0] for c in jpeg_cases()])
def test_real_gpu_decode_equals_cv2_within_jpeg_tolerance(real_decoder: GpuJpegDecoder, case: str) -> None:
    _, _, data = next(c for c in jpeg_cases() if c[0] == case)
    frames = FrameDecoder(None)
    cpu = frames(compressed(data))
    image = real_decoder.decode(data)
    if image is None:
        pytest.skip(f"{case}: the GPU refused it ({real_decoder.last_refusal}); the CPU decodes it")
    host = image.download()
    assert (host.height, host.width) == (cpu.height, cpu.width)
    got = host.array[:, :, ::-1] if host.array.ndim == 3 else host.array  # R,G,B -> the CPU array's order
    diff = np.abs(got.astype(np.int16) - cpu.array.astype(np.int16))
    MAX_DIFFS[case] = (float(diff.max()), float(diff.mean()))
    assert diff.max() <= PIXEL_TOLERANCE and diff.mean() <= MEAN_TOLERANCE, (case, diff.max(), diff.mean())


ENGINE_SPECS = {
    "ssd300 NCHW f32": InputSpec(name="Input", height=300, width=300, scale=(2 / 255,) * 3, offset=(-1.0,) * 3),
    "letterbox640 NCHW f16": InputSpec(name="images", height=640, width=640, resize="letterbox", pad_value=114.0,
                                       scale=(1 / 255,) * 3, offset=(0.0,) * 3, dtype="float16"),
    "steer160x120 NHWC f32 crop": InputSpec(name="img_in", height=120, width=160, layout="NHWC",
                                            scale=(1 / 255,) * 3, offset=(0.0,) * 3, crop_top=40),
}  # fmt: skip
ENGINE_DIFFS: Dict[str, Tuple[float, float]] = {}  # case -> (max abs in input units, same in pixel levels)


@pytest.mark.gpu
@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (1920, 1080)])
@pytest.mark.parametrize("model", list(ENGINE_SPECS))
def test_real_engine_input_from_gpu_decode_equals_cpu_path(
    real_decoder: GpuJpegDecoder, model: str, size: Tuple[int, int]
) -> None:
    """Compressed bytes -> GPU decode -> kernel vs cv2.imdecode -> Preprocessor: the engine input tensor."""
    spec = ENGINE_SPECS[model]
    data = jpeg(camera_frame(*size, seed=size[0]))
    expected, expected_transform = Preprocessor(spec)(decode_compressed("jpeg", data))
    with GpuPreprocessor(spec, cuda=real_decoder.cuda) as pre:
        image = real_decoder.decode(data)
        assert image is not None, real_decoder.last_refusal
        assert pre(image) == expected_transform
        got = pre.download()
    diff = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max())
    levels = diff / max(abs(s) for s in spec.scale)
    ENGINE_DIFFS[f"{model} {size[0]}x{size[1]}"] = (diff, levels)
    assert levels <= PIXEL_TOLERANCE + 1, (model, size, diff, levels)  # +1: float16 rounding of the tensor


@pytest.mark.gpu
def test_real_frames_outlive_their_decoder_and_preprocessor() -> None:
    """A DeviceImage held past the decoder's close (and its preprocessor's) stays readable and is freed later
    without harm: nvImageCodec frees it stream-ordered on the decode stream, which must still exist."""
    spec = ENGINE_SPECS["ssd300 NCHW f32"]
    data = [jpeg(camera_frame(1280, 720, seed=s)) for s in range(3)]
    try:
        decoder = GpuJpegDecoder(cuda="cuda-python")
    except BackendError as exc:
        pytest.skip(f"no GPU JPEG decoding here: {exc}")
    held = [decoder.decode(frame) for frame in data]  # ring of 2: the third reused the first one's buffer
    decoder.close()
    expected, _ = Preprocessor(spec)(decode_compressed("jpeg", data[2]))
    with GpuPreprocessor(spec, cuda="cuda-python") as pre:
        pre(held[2])  # type: ignore[arg-type]
        got = pre.download()
    assert np.abs(got - expected).max() / (2 / 255) <= PIXEL_TOLERANCE + 1
    del held  # the buffers are freed on the decode stream now, which is destroyed after them
    gc.collect()


@pytest.mark.gpu
def test_real_fallbacks_and_errors(real_decoder: GpuJpegDecoder) -> None:
    frames = FrameDecoder(real_decoder)
    frame = camera_frame(320, 240)
    _, png = cv2.imencode(".png", frame)
    image = frames(compressed(png.tobytes(), "bgr8; png compressed bgr8"))
    assert isinstance(image, DecodedImage)
    np.testing.assert_array_equal(image.array, frame)
    for bad in (b"hello world" * 30, jpeg(frame)[:200]):  # refused from the header, as on the CPU path
        with pytest.raises(ImageError, match="^CompressedImage.data .*(is not JPEG|truncated|damaged)"):
            frames(compressed(bad))
    truncated = jpeg(frame)
    truncated = truncated[: len(truncated) * 2 // 3]  # headers intact, scan cut: libjpeg pads it with gray
    try:
        result: Optional[Any] = frames(compressed(truncated))
    except ImageError:
        result = None
    assert result is None or (result.height, result.width) == (240, 320)
    frames.gpu = None  # the module fixture closes the decoder
    gc.collect()  # free the decoded frames while the decoder is open


@pytest.mark.gpu
def test_zz_print_decode_differences() -> None:
    """Not a check: the max / mean |GPU - cv2| per JPEG kind and per engine input (run with -s)."""
    if not MAX_DIFFS and not ENGINE_DIFFS:
        pytest.skip("no GPU decode test ran")
    for case, (worst, mean) in MAX_DIFFS.items():
        print(f"\ndecoded pixels {case}: max |gpu - cv2| {worst:.0f} levels, mean {mean:.3f}")
    for case, (worst, levels) in ENGINE_DIFFS.items():
        print(f"\nengine input {case}: max |gpu - cpu| {worst:.4g} ({levels:.2f} pixel levels)")
