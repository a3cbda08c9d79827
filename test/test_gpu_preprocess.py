"""GPU preprocessing: the kernel's arithmetic equals the CPU path, on the CPU (everywhere) and on a real GPU.

Three layers:
  * the resize/gray tables and the kernel's integer formula reproduce ``cv2.resize`` / ``cv2.cvtColor``
    bit for bit (numpy port of the kernel, no GPU);
  * ``GpuPreprocessor``'s orchestration (staging, crop, tables upload, argument packing, layout, dtype,
    letterbox, geometry changes) on the CUDA double with a launcher that runs the kernel's arithmetic in
    numpy, against ``Preprocessor`` on random specs and frames (no GPU);
  * the real kernel (NVRTC via cuda-python, and pycuda where installed) against ``Preprocessor`` on random
    specs and frames, max abs difference printed (marked gpu; skipped without a GPU and a CUDA binding).
On the device machine: ``python -m pytest test/test_gpu_preprocess.py -v -s``.
"""

from __future__ import annotations

import ctypes
import itertools
import subprocess
import sys
import threading
from dataclasses import replace
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import cv2
import numpy as np
import pytest
from test_preprocess import padded_image as padded  # one definition of the shared frame helpers
from test_preprocess import random_image as random_frame

from trt_perception.backends.cuda import CudaApi, select_cuda_api
from trt_perception.errors import BackendError, ImageError, SpecError
from trt_perception.gpu_preprocess import (
    ARG_KINDS,
    CHUNK_BYTES,
    KERNEL_NAMES,
    DeviceImage,
    GpuPreprocessor,
    linear_tables,
    nearest_tables,
)
from trt_perception.images import DecodedImage
from trt_perception.preprocess import Preprocessor
from trt_perception.spec import InputSpec

# --------------------------------------------------------------------------------- numpy port of the kernel


def resize_u8(image: np.ndarray, xtab: np.ndarray, ytab: np.ndarray) -> np.ndarray:
    """The kernel's uint8 path (tp_sample_u8) for every pixel at once."""
    src = image.astype(np.int64)
    if src.ndim == 2:
        src = src[:, :, None]
    xs0, xs1, a0, a1 = (xtab[:, i].astype(np.int64) for i in range(4))
    ys0, ys1, b0, b1 = (ytab[:, i].astype(np.int64) for i in range(4))
    h0 = src[ys0][:, xs0] * a0[None, :, None] + src[ys0][:, xs1] * a1[None, :, None]
    h1 = src[ys1][:, xs0] * a0[None, :, None] + src[ys1][:, xs1] * a1[None, :, None]
    value = (((b0[:, None, None] * (h0 >> 4)) >> 16) + ((b1[:, None, None] * (h1 >> 4)) >> 16) + 2) >> 2
    out = np.clip(value, 0, 255)
    return out[:, :, 0] if image.ndim == 2 else out


def resize_u16_high_byte(image: np.ndarray, xtab: np.ndarray, ytab: np.ndarray) -> np.ndarray:
    """The kernel's uint16 path (tp_sample_u16): float32 weights, each product and sum rounded to float32."""
    src = image.astype(np.float32)
    xs0, xs1, ys0, ys1 = xtab[:, 0], xtab[:, 1], ytab[:, 0], ytab[:, 1]
    a0, a1 = xtab[:, 2].view(np.float32), xtab[:, 3].view(np.float32)
    b0, b1 = ytab[:, 2].view(np.float32)[:, None], ytab[:, 3].view(np.float32)[:, None]
    h0 = src[ys0][:, xs0] * a0 + src[ys0][:, xs1] * a1
    h1 = src[ys1][:, xs0] * a0 + src[ys1][:, xs1] * a1
    value = np.rint(h0 * b0 + h1 * b1).astype(np.int64)  # __float2int_rn: half to even
    return np.clip(value, 0, 65535) >> 8


def gray_u8(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    red, green, blue = (np.asarray(c, np.int64) for c in (red, green, blue))
    return (red * 9798 + green * 19235 + blue * 3735 + 16384) >> 15


# ------------------------------------------------------------------------------------ tables == OpenCV


def _sizes(count: int, seed: int) -> Iterator[Tuple[int, int, int, int]]:
    rng = np.random.default_rng(seed)
    yield from [(480, 640, 300, 300), (1080, 1920, 300, 300), (480, 640, 120, 160), (480, 640, 240, 320)]
    yield from [(1, 7, 3, 5), (5, 3, 11, 13), (2, 2, 1, 1)]  # tiny frames and upscales: every edge clamp
    for _ in range(count):
        yield tuple(int(v) for v in (rng.integers(1, 700), rng.integers(1, 900), rng.integers(1, 400),
                                      rng.integers(1, 400)))  # fmt: skip


@pytest.mark.parametrize("channels", [1, 3])
def test_linear_tables_reproduce_opencv_bit_for_bit(channels: int) -> None:
    rng = np.random.default_rng(channels)
    for src_h, src_w, dst_h, dst_w in _sizes(60, channels):
        shape = (src_h, src_w, channels) if channels == 3 else (src_h, src_w)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        expected = cv2.resize(image, (dst_w, dst_h), interpolation=cv2.INTER_LINEAR)
        got = resize_u8(image, linear_tables(src_w, dst_w, "x"), linear_tables(src_h, dst_h, "y"))
        np.testing.assert_array_equal(got, expected, err_msg=f"{src_w}x{src_h} -> {dst_w}x{dst_h}")


def test_nearest_tables_reproduce_opencv() -> None:
    rng = np.random.default_rng(5)
    for src_h, src_w, dst_h, dst_w in _sizes(60, 5):
        image = rng.integers(0, 256, (src_h, src_w, 3), dtype=np.uint8)
        expected = cv2.resize(image, (dst_w, dst_h), interpolation=cv2.INTER_NEAREST)
        got = resize_u8(image, nearest_tables(src_w, dst_w), nearest_tables(src_h, dst_h))
        np.testing.assert_array_equal(got, expected, err_msg=f"{src_w}x{src_h} -> {dst_w}x{dst_h}")


def test_uint16_tables_stay_within_one_level_of_opencv() -> None:
    rng = np.random.default_rng(6)
    worst = 0
    for src_h, src_w, dst_h, dst_w in itertools.islice(_sizes(30, 6), 37):
        image = rng.integers(0, 65536, (src_h, src_w), dtype=np.uint16)
        expected = cv2.resize(image, (dst_w, dst_h), interpolation=cv2.INTER_LINEAR) >> 8
        got = resize_u16_high_byte(
            image, linear_tables(src_w, dst_w, "x", wide=True), linear_tables(src_h, dst_h, "y", wide=True)
        )
        worst = max(worst, int(np.abs(got - expected).max()))
    assert worst <= 1  # float rounding of OpenCV's SIMD path can differ by one 16-bit step at a byte edge


def test_gray_weights_reproduce_opencv() -> None:
    image = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    bgr = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    rgb = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(gray_u8(image[..., 2], image[..., 1], image[..., 0]), bgr)
    np.testing.assert_array_equal(gray_u8(image[..., 0], image[..., 1], image[..., 2]), rgb)


def test_importing_the_module_imports_no_cuda_package() -> None:
    code = (
        "import sys, trt_perception.gpu_preprocess; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cuda', 'pycuda', 'cupy', 'tensorrt')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_area_interpolation_and_bad_upload_are_refused_before_any_cuda_call() -> None:
    spec = InputSpec(name="x", height=8, width=8, interpolation="area")
    with pytest.raises(SpecError, match="interpolation.*'area'.*fix"):
        GpuPreprocessor(spec, cuda="no-such-binding")
    with pytest.raises(SpecError, match="upload"):
        GpuPreprocessor(replace(spec, interpolation="linear"), upload="mapped")  # type: ignore[arg-type]


# ------------------------------------------------------------- orchestration on the CUDA double (no GPU)


def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The cuda-python double, plus pageable host sources for H2D copies as real CUDA allows them.

    ``cudaMemcpyAsync`` from pageable memory is legal CUDA: the driver stages the bytes before it returns
    (so the caller may reuse the buffer at once); the double only knows pinned memory, so pageable sources
    are snapshotted here at call time and queued like any copy.
    """
    from fakes.cuda_fake import FakeCudaError, FakeGpu, install_cuda_python

    gpu = FakeGpu()
    rt = install_cuda_python(monkeypatch, gpu)
    pinned_only = rt.cudaMemcpyAsync

    def memcpy(dst: Any, src: Any, count: int, kind: Any, stream: Any) -> Tuple[Any]:
        result = pinned_only(dst, src, count, kind, stream)
        if result[0] != rt.cudaError_t.cudaErrorIllegalAddress or kind != rt.cudaMemcpyKind.cudaMemcpyHostToDevice:
            return result
        data = memoryview(bytearray(ctypes.string_at(int(src), int(count))))
        try:
            gpu.copy_htod(int(dst), data, gpu.stream(int(stream)))
        except FakeCudaError:
            return (rt.cudaError_t.cudaErrorIllegalAddress,)
        return (rt.cudaError_t.cudaSuccess,)

    monkeypatch.setattr(rt, "cudaMemcpyAsync", memcpy)
    return gpu


class NumpyLauncher:
    """Runs the kernel's arithmetic in numpy on the fake GPU's memory, queued on the stream like a launch."""

    name = "numpy"

    def __init__(self, gpu: Any) -> None:
        self.gpu = gpu
        self.launches = 0

    def prepare(self, args: Sequence[Any]) -> List[Any]:
        assert len(args) == len(ARG_KINDS)
        return list(args)

    def launch(self, name: str, grid: Tuple[int, int], packed: List[Any], stream: Any) -> None:
        assert name in KERNEL_NAMES
        self.launches += 1
        self.gpu.stream(int(stream)).enqueue(lambda: self._run(name == KERNEL_NAMES[1], packed))

    def close(self) -> None:
        pass

    def _run(self, wide: bool, args: List[Any]) -> None:
        (src, pitch, cn, xptr, yptr, cw, ch, pad_x, pad_y, dst, dw, dh, oc, nchw, out_type,
         m0, m1, m2, to_gray, s0, s1, s2, o0, o1, o2, p0, p1, p2) = args  # fmt: skip
        view = self.gpu.view
        xtab = np.frombuffer(view(xptr, 16 * cw), np.int32).reshape(cw, 4)
        ytab = np.frombuffer(view(yptr, 16 * ch), np.int32).reshape(ch, 4)
        rows = int(ytab[:, 1].max()) + 1
        raw = np.frombuffer(view(src, pitch * rows), np.uint8).reshape(rows, pitch)
        pixel = cn * (2 if wide else 1)
        frame = np.ascontiguousarray(raw[:, : pitch // pixel * pixel])  # device frames may pad their rows
        frame = frame.view(np.uint16 if wide else np.uint8)
        if cn == 3:
            frame = frame.reshape(rows, -1, 3)
        picture = resize_u16_high_byte(frame, xtab, ytab) if wide else resize_u8(frame, xtab, ytab)
        if picture.ndim == 2:
            picture = picture[:, :, None]
        if to_gray:
            gray = gray_u8(picture[..., m0], picture[..., m1], picture[..., m2])
            planes = [gray, gray, gray]
        else:
            planes = [picture[..., m0], picture[..., m1], picture[..., m2]]
        dtype = [np.float32, np.float16, np.uint8][out_type]
        canvas = np.empty((3, dh, dw), np.float32)
        for c, (plane, s, o, p) in enumerate(zip(planes, (s0, s1, s2), (o0, o1, o2), (p0, p1, p2))):
            canvas[c] = np.float32(p)
            content = plane.astype(np.float32)
            if out_type != 2:
                content = content * np.float32(s) + np.float32(o)
            canvas[c, pad_y : pad_y + ch, pad_x : pad_x + cw] = content
        tensor = canvas[:oc].astype(dtype)
        if not nchw:
            tensor = np.ascontiguousarray(tensor.transpose(1, 2, 0))
        view(dst, tensor.nbytes)[:] = tensor.tobytes()


def random_specs(count: int, seed: int) -> Iterator[Tuple[InputSpec, str]]:
    rng = np.random.default_rng(seed)
    options = list(
        itertools.product(
            ["NCHW", "NHWC"],
            ["RGB", "BGR", "GRAY"],
            ["stretch", "letterbox"],
            ["float32", "float16", "uint8"],
            ["linear", "nearest"],
            ["rgb", "bgr", "gray", "gray16"],
        )
    )
    for index in rng.choice(len(options), size=count, replace=False):
        layout, color, resize, dtype, interpolation, source = options[index]
        channels = 1 if color == "GRAY" else 3
        if dtype == "uint8":
            scale, offset = (1.0,) * channels, (0.0,) * channels
        else:
            scale = tuple(float(v) for v in rng.uniform(-0.05, 0.05, channels))
            offset = tuple(float(v) for v in rng.uniform(-3, 3, channels))
        crop = [(0, 0), (6, 0), (3, 5)][int(rng.integers(0, 3))]
        spec = InputSpec(
            name="input", layout=layout, color=color, resize=resize, dtype=dtype, interpolation=interpolation,
            scale=scale, offset=offset, pad_value=float(rng.choice([0.0, 114.0, 127.5])),
            crop_top=crop[0], crop_bottom=crop[1],
            height=int(rng.integers(8, 60)), width=int(rng.integers(8, 60)),
        )  # fmt: skip
        yield spec, source


def frame_sizes(spec: InputSpec) -> List[Tuple[int, int]]:
    return [(45, 61), (spec.height + spec.crop_top + spec.crop_bottom, spec.width), (17, 90), (120, 160)]


def tolerance(spec: InputSpec, source: str, dtype: np.dtype) -> float:
    """0 for identical uint8 pictures up to float rounding; mono16 may differ by one level (see above)."""
    step = max(abs(s) for s in spec.scale) if dtype != np.uint8 else 1.0
    if source == "gray16":  # one level, plus float16 rounding of values up to |4|
        return step * 1.0 + (4e-3 if dtype == np.float16 else 1e-6)
    if dtype == np.float16:
        return 1e-3 * 4  # float16 spacing near |4|: identical LUT inputs give identical outputs in practice
    return 1e-5


def compare(gpu: GpuPreprocessor, cpu: Preprocessor, frame: DecodedImage) -> float:
    transform = gpu(frame)
    expected, expected_transform = cpu(frame)
    got = gpu.download()
    assert transform == expected_transform
    assert got.shape == expected.shape and got.dtype == expected.dtype
    return float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max())


@pytest.mark.parametrize(("spec", "source"), list(random_specs(60, seed=11)))
def test_orchestration_equals_cpu_path_on_the_cuda_double(
    monkeypatch: pytest.MonkeyPatch, spec: InputSpec, source: str
) -> None:
    gpu = fake_cuda(monkeypatch)
    launcher = NumpyLauncher(gpu)
    with GpuPreprocessor(spec, cuda="cuda-python", launcher=launcher) as pre:
        cpu = Preprocessor(spec)
        for seed, (height, width) in enumerate(frame_sizes(spec)):
            image = random_frame(source, height, width, seed)
            for frame in (image, padded(image)):
                diff = compare(pre, cpu, frame)
                assert diff <= tolerance(spec, source, pre.dtype), (spec, source, height, width, diff)
        assert launcher.launches == 2 * len(frame_sizes(spec))
    assert not gpu.memory  # every device buffer freed


def _uploads_per_frame(monkeypatch: pytest.MonkeyPatch, spec: InputSpec, frame: DecodedImage, upload: str) -> Any:
    gpu = fake_cuda(monkeypatch)
    with GpuPreprocessor(spec, cuda="cuda-python", launcher=NumpyLauncher(gpu), upload=upload) as pre:
        pre(frame)
        pre.synchronize()
        gpu.clear_events()
        for _ in range(4):
            pre(frame)
        pre.synchronize()
        copies = gpu.of("htod")
        assert gpu.count("malloc") == 0 and gpu.count("host_alloc") == 0  # buffers made once, on frame one
        return [c["nbytes"] for c in copies], pre


@pytest.mark.parametrize("upload", ["auto", "pinned", "direct"])
def test_uploads_send_uint8_rows_once_per_frame(monkeypatch: pytest.MonkeyPatch, upload: str) -> None:
    """DonkeyCar crop: 480 rows -> 360 after the crop -> 120 model rows read 240 of them."""
    spec = InputSpec(name="img", height=120, width=160, layout="NHWC", crop_top=40, scale=(1 / 255,) * 3)
    sizes, _ = _uploads_per_frame(monkeypatch, spec, random_frame("bgr", 480, 640), upload)
    cropped_rows = 480 - round(40 * 480 / 160)
    rows = cropped_rows if upload == "direct" else 240  # only the rows the resize reads
    assert sum(sizes) == 4 * rows * 640 * 3
    assert len(sizes) == 4  # one chunk each (460 KB < CHUNK_BYTES)


def test_large_frames_go_in_chunks_of_gathered_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = InputSpec(name="Input", height=300, width=300, scale=(2 / 255,) * 3, offset=(-1.0,) * 3)
    sizes, _ = _uploads_per_frame(monkeypatch, spec, random_frame("bgr", 1080, 1920), "auto")
    per_frame = sum(sizes) // 4
    assert per_frame == 600 * 1920 * 3  # 600 of 1080 rows: two per model row
    assert len(sizes) == 4 * 2 and max(sizes) <= CHUNK_BYTES  # chunked: the bus works while the CPU copies


@pytest.mark.parametrize("upload", ["pinned", "direct"])
@pytest.mark.parametrize(("spec", "source"), list(random_specs(12, seed=5)))
def test_every_upload_mode_gives_the_same_tensor(
    monkeypatch: pytest.MonkeyPatch, spec: InputSpec, source: str, upload: str
) -> None:
    gpu = fake_cuda(monkeypatch)
    with GpuPreprocessor(spec, cuda="cuda-python", launcher=NumpyLauncher(gpu), upload=upload) as pre:
        cpu = Preprocessor(spec)
        for seed, (height, width) in enumerate(frame_sizes(spec)):
            image = random_frame(source, height, width, seed)
            for frame in (image, padded(image)):
                assert compare(pre, cpu, frame) <= tolerance(spec, source, pre.dtype)


# ------------------------------------------------------------ frames already on the device (CUDA double)


def device_copy(gpu: Any, image: DecodedImage, pad: int = 0) -> DeviceImage:
    """``image`` put into fake device memory with ``pad`` bytes after each row, as a DeviceImage."""
    array = np.ascontiguousarray(image.array)
    row = array.shape[1] * array.itemsize * (3 if array.ndim == 3 else 1)
    pitch = row + pad
    pointer = gpu.malloc(pitch * array.shape[0])
    rows = np.zeros((array.shape[0], pitch), np.uint8)
    rows[:, :row] = array.reshape(array.shape[0], -1).view(np.uint8)
    gpu.view(pointer, rows.nbytes)[:] = rows.tobytes()
    return DeviceImage(pointer, array.shape[0], array.shape[1], pitch, image.color)


@pytest.mark.parametrize(("spec", "source"), list(random_specs(24, seed=17)))
def test_device_frames_give_the_host_frames_tensor(
    monkeypatch: pytest.MonkeyPatch, spec: InputSpec, source: str
) -> None:
    """A DeviceImage (padded rows, crop, every color) is read in place: same tensor, nothing uploaded."""
    gpu = fake_cuda(monkeypatch)
    with GpuPreprocessor(spec, cuda="cuda-python", launcher=NumpyLauncher(gpu)) as pre:
        cpu = Preprocessor(spec)
        for seed, (height, width) in enumerate(frame_sizes(spec)):
            image = random_frame(source, height, width, seed)
            for pad in (0, 64 + seed):
                frame = device_copy(gpu, image, pad)
                gpu.clear_events()
                transform = pre(frame)
                expected, expected_transform = cpu(image)
                uploads = gpu.of("htod")  # read in place: only the resize tables go up (on a new geometry)
                assert all(c["pointer"] == pre._tables_device for c in uploads) and not gpu.of("malloc")
                assert transform == expected_transform
                got = pre.download()
                diff = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max())
                assert diff <= tolerance(spec, source, pre.dtype), (spec, source, height, width, pad, diff)
                gpu.free(frame.pointer)


def test_host_and_device_frames_alternate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switching between uploaded and in-place frames reconfigures both ways; from_device is the same entry."""
    spec = InputSpec(name="Input", height=30, width=40, scale=(2 / 255,) * 3, offset=(-1.0,) * 3, crop_top=4)
    gpu = fake_cuda(monkeypatch)
    image = random_frame("bgr", 48, 64, seed=2)
    expected, _ = Preprocessor(spec)(image)
    with GpuPreprocessor(spec, cuda="cuda-python", launcher=NumpyLauncher(gpu)) as pre:
        frame = device_copy(gpu, image, pad=16)
        for call in (lambda: pre(image), lambda: pre(frame), lambda: pre(image),
                     lambda: pre.from_device(frame.pointer, 48, 64, frame.pitch, "bgr")):  # fmt: skip
            call()
            np.testing.assert_allclose(pre.download(), expected, atol=1e-6)
        gpu.free(frame.pointer)


def test_device_frame_on_a_foreign_stream_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = InputSpec(name="x", height=8, width=8)
    gpu = fake_cuda(monkeypatch)
    with GpuPreprocessor(spec, cuda="cuda-python", launcher=NumpyLauncher(gpu)) as pre:
        frame = device_copy(gpu, random_frame("rgb", 16, 16), pad=0)
        own = pre.cuda.stream_handle(pre.stream)
        for ready in (None, 0, 1, own):  # written, legacy default stream (our streams wait for it), our stream
            pre(DeviceImage(frame.pointer, 16, 16, frame.pitch, "rgb", stream=ready))
        with pytest.raises(ImageError, match="stream 0x.*fix: synchronize"):
            pre(DeviceImage(frame.pointer, 16, 16, frame.pitch, "rgb", stream=own + 0x1000))
        pre.synchronize()
        gpu.free(frame.pointer)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"color": "yuv"}, "color is 'yuv'"),
        ({"pointer": 0}, "pointer is 0; expected a positive integer; fix"),
        ({"height": -1}, "height is -1"),
        ({"width": True}, "width is True"),
        ({"pitch": 10}, "pitch is 10 bytes .* expected at least 12"),
    ],
)
def test_device_image_fields_are_checked(kwargs: Dict[str, Any], match: str) -> None:
    fields = {"pointer": 0x1000, "height": 2, "width": 4, "pitch": 12, "color": "bgr", **kwargs}
    with pytest.raises(ImageError, match=match):
        DeviceImage(**fields)


class _CudaArray:
    def __init__(self, **interface: Any) -> None:
        self.__cuda_array_interface__ = {"data": (0x7000, False), "version": 3, "strides": None, **interface}


def test_device_image_from_cuda_array_interface() -> None:
    frame = DeviceImage.from_cuda_array(_CudaArray(shape=(4, 5, 3), typestr="|u1"), "rgb")
    assert (frame.pointer, frame.height, frame.width, frame.pitch, frame.stream) == (0x7000, 4, 5, 15, None)
    padded = DeviceImage.from_cuda_array(_CudaArray(shape=(4, 5, 1), typestr="|u1", strides=(64, 1, 1),
                                                    stream=0x5010), "gray")  # fmt: skip
    assert (padded.pitch, padded.stream) == (64, 0x5010)
    wide = DeviceImage.from_cuda_array(_CudaArray(shape=(4, 5), typestr="<u2", strides=(16, 2)), "gray16")
    assert wide.pitch == 16
    with pytest.raises(ImageError, match=r"shape \(4, 5, 3\) typestr '\|u1' for color 'gray'"):
        DeviceImage.from_cuda_array(_CudaArray(shape=(4, 5, 3), typestr="|u1"), "gray")
    with pytest.raises(ImageError, match="strides .* fix: make the array contiguous"):
        DeviceImage.from_cuda_array(_CudaArray(shape=(4, 5, 3), typestr="|u1", strides=(15, 1, 5)), "rgb")
    with pytest.raises(ImageError, match="no usable __cuda_array_interface__"):
        DeviceImage.from_cuda_array(np.zeros((4, 5, 3), np.uint8), "rgb")
    with pytest.raises(ImageError, match="no host copy"):
        frame.download()


# ------------------------------------------------------------------------------------- on a real GPU


def _real_api(name: str) -> CudaApi:
    try:
        api = select_cuda_api(name)
        with api.activated():
            api.compute_capability()
    except BackendError as exc:
        pytest.skip(f"{name} unusable here: {exc}")
    except Exception as exc:  # pycuda raises its own errors when there is no driver/GPU
        pytest.skip(f"{name}: no usable CUDA GPU ({type(exc).__name__}: {exc})")
    return api


@pytest.fixture(scope="module", params=["cuda-python", "pycuda"])
def real_api(request: pytest.FixtureRequest) -> Iterator[CudaApi]:
    api = _real_api(request.param)
    yield api
    api.close()


MAX_DIFFS: Dict[str, float] = {}


@pytest.mark.gpu
@pytest.mark.parametrize(("spec", "source"), list(random_specs(80, seed=23)))
def test_gpu_kernel_equals_cpu_path(real_api: CudaApi, spec: InputSpec, source: str) -> None:
    with GpuPreprocessor(spec, cuda=real_api) as pre:
        cpu = Preprocessor(spec)
        for seed, (height, width) in enumerate(frame_sizes(spec)):
            image = random_frame(source, height, width, seed)
            for frame in (image, padded(image)):
                diff = compare(pre, cpu, frame)
                key = f"{real_api.name} {pre.dtype.name}{' mono16' if source == 'gray16' else ''}"
                MAX_DIFFS[key] = max(MAX_DIFFS.get(key, 0.0), diff)
                assert diff <= tolerance(spec, source, pre.dtype), (spec, source, height, width, diff)


@pytest.mark.gpu
@pytest.mark.parametrize("size", [(480, 640), (1080, 1920)])
@pytest.mark.parametrize("upload", ["pinned", "direct"])
def test_gpu_ssd_and_letterbox_models_on_camera_frames(
    real_api: CudaApi, size: Tuple[int, int], upload: str
) -> None:
    """The benchmark's shapes: 300x300 SSD (x*2/255-1, NCHW RGB), 640x640 letterbox float16, 160x120 NHWC."""
    specs = [
        InputSpec(name="Input", height=300, width=300, scale=(2 / 255,) * 3, offset=(-1.0,) * 3),
        InputSpec(name="images", height=640, width=640, resize="letterbox", pad_value=114.0,
                  scale=(1 / 255,) * 3, offset=(0.0,) * 3, dtype="float16"),
        InputSpec(name="img_in", height=120, width=160, layout="NHWC", scale=(1 / 255,) * 3, offset=(0.0,) * 3,
                  crop_top=40),
    ]  # fmt: skip
    for spec in specs:
        with GpuPreprocessor(spec, cuda=real_api, upload=upload) as pre:
            cpu = Preprocessor(spec)
            for seed in range(3):
                diff = compare(pre, cpu, random_frame("bgr", *size, seed=seed))
                key = f"{real_api.name} camera {spec.dtype}"
                MAX_DIFFS[key] = max(MAX_DIFFS.get(key, 0.0), diff)
                assert diff <= 1e-3


@pytest.mark.gpu
def test_gpu_writes_into_a_given_device_buffer_from_another_thread(real_api: CudaApi) -> None:
    spec = InputSpec(name="Input", height=300, width=300, scale=(2 / 255,) * 3, offset=(-1.0,) * 3)
    nbytes = 300 * 300 * 3 * 4
    with real_api.activated():
        stream = real_api.stream_create()
        target = real_api.malloc(nbytes)
        host = real_api.pinned_empty(nbytes)
    frame = random_frame("bgr", 480, 640, seed=3)
    expected, _ = Preprocessor(spec)(frame)
    errors: List[BaseException] = []
    pre = GpuPreprocessor(spec, out=target, stream=stream, cuda=real_api)
    try:

        def worker() -> None:
            try:
                for _ in range(3):
                    pre(frame)
                with real_api.activated():
                    real_api.memcpy_dtoh_async(host, target, stream)
                    real_api.stream_synchronize(stream)
            except BaseException as exc:  # surfaced in the main thread below
                errors.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert not errors, errors
        assert pre.output_pointer == target
        np.testing.assert_allclose(host.view(np.float32).reshape(spec.shape), expected, atol=1e-5)
    finally:
        pre.close()
        with real_api.activated():
            real_api.free(target)
            real_api.free_pinned(host)
            real_api.stream_destroy(stream)


@pytest.mark.gpu
def test_gpu_kernel_reads_a_padded_device_frame_in_place(real_api: CudaApi) -> None:
    """A cupy frame with padded rows (DeviceImage.from_cuda_array) gives the CPU path's tensor."""
    cupy = pytest.importorskip("cupy")
    specs = [
        InputSpec(name="Input", height=300, width=300, scale=(2 / 255,) * 3, offset=(-1.0,) * 3),
        InputSpec(name="images", height=640, width=640, resize="letterbox", pad_value=114.0,
                  scale=(1 / 255,) * 3, offset=(0.0,) * 3, dtype="float16"),
        InputSpec(name="img_in", height=120, width=160, layout="NHWC", scale=(1 / 255,), offset=(0.0,),
                  crop_top=40, color="GRAY"),
    ]  # fmt: skip
    for spec in specs:
        with GpuPreprocessor(spec, cuda=real_api) as pre:
            for seed, (height, width) in enumerate([(480, 640), (1080, 1920), (37, 53)]):
                image = random_frame("bgr", height, width, seed=seed)
                with real_api.activated():
                    storage = cupy.zeros((height, width * 3 + 128), cupy.uint8)
                    storage[:, : width * 3] = cupy.asarray(image.array.reshape(height, -1))
                    view = storage[:, : width * 3].reshape(height, width, 3)
                    cupy.cuda.runtime.deviceSynchronize()
                    frame = DeviceImage.from_cuda_array(view, "bgr")
                    assert frame.pitch == width * 3 + 128
                    pre(DeviceImage(frame.pointer, height, width, frame.pitch, "bgr", owner=storage))
                    got = pre.download()
                expected, _ = Preprocessor(spec)(image)
                diff = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max())
                key = f"{real_api.name} device frame {spec.dtype}"
                MAX_DIFFS[key] = max(MAX_DIFFS.get(key, 0.0), diff)
                assert diff <= (1e-3 if spec.dtype == "float16" else 1e-5), (spec.name, height, width, diff)


@pytest.mark.gpu
def test_zz_print_max_differences() -> None:
    """Not a check: prints the largest |GPU - CPU| seen per binding and dtype (run with -s)."""
    if not MAX_DIFFS:
        pytest.skip("no GPU test ran")
    for key, value in sorted(MAX_DIFFS.items()):
        print(f"\nmax |gpu - cpu| {key}: {value:.3g}")
