"""Preprocessing: the fast path equals the plain reference on random frames for many spec combinations;
golden checks of channel order, letterbox/crop geometry and its exact undo; buffers reused, no per-frame
frame-sized allocation."""

from __future__ import annotations

import itertools
import tracemalloc
from dataclasses import replace
from typing import Tuple

import numpy as np
import pytest

from trt_perception.errors import ImageError, SpecError
from trt_perception.images import DecodedImage, decode_raw
from trt_perception.preprocess import ImageTransform, Preprocessor, preprocess_reference
from trt_perception.spec import InputSpec


def spec_of(**changes: object) -> InputSpec:
    base = InputSpec(name="input", height=24, width=32, scale=(1 / 255,) * 3, offset=(0.0,) * 3)
    return replace(base, **changes)


def random_image(color: str, height: int, width: int, seed: int = 0) -> DecodedImage:
    rng = np.random.default_rng(seed)
    if color in ("rgb", "bgr"):
        return DecodedImage(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), color)
    if color == "gray":
        return DecodedImage(rng.integers(0, 256, (height, width), dtype=np.uint8), color)
    return DecodedImage(rng.integers(0, 65536, (height, width), dtype=np.uint16), color)


def padded_image(image: DecodedImage, padding: int = 8) -> DecodedImage:
    """The same pixels as a step-padded message decodes them: a non-contiguous view."""
    encoding = {"rgb": "rgb8", "bgr": "bgr8", "gray": "mono8", "gray16": "mono16"}[image.color]
    rows = image.array.reshape(image.height, -1).view(np.uint8)
    step = rows.shape[1] + padding
    buffer = np.full((image.height, step), 0xAB, np.uint8)
    buffer[:, : rows.shape[1]] = rows
    decoded = decode_raw(image.height, image.width, encoding, step, buffer.tobytes())
    assert not decoded.array.flags.c_contiguous
    return decoded


def assert_matches_reference(tensor: np.ndarray, expected: np.ndarray) -> None:
    assert tensor.shape == expected.shape and tensor.dtype == expected.dtype
    if tensor.dtype == np.uint8:
        np.testing.assert_array_equal(tensor, expected)
    elif tensor.dtype == np.float16:
        np.testing.assert_allclose(
            tensor.astype(np.float32), expected.astype(np.float32), rtol=1e-3, atol=1e-3
        )
    else:
        np.testing.assert_allclose(tensor, expected, rtol=1e-6, atol=1e-5)


def random_specs(count: int, seed: int = 7):
    """A seeded spread over every option; the cartesian product would be 10x larger for little gain."""
    rng = np.random.default_rng(seed)
    options = list(
        itertools.product(
            ["NCHW", "NHWC"],
            ["RGB", "BGR", "GRAY"],
            ["stretch", "letterbox"],
            ["float32", "float16", "uint8"],
            ["linear", "nearest", "area"],
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
        spec = spec_of(
            layout=layout, color=color, resize=resize, dtype=dtype, interpolation=interpolation,
            scale=scale, offset=offset, pad_value=float(rng.choice([0.0, 114.0, 127.5])),
            crop_top=crop[0], crop_bottom=crop[1],
            height=int(rng.integers(8, 40)), width=int(rng.integers(8, 40)),
        )  # fmt: skip
        yield spec, source


@pytest.mark.parametrize(("spec", "source"), list(random_specs(120)))
def test_fast_path_equals_reference_on_random_frames(spec: InputSpec, source: str) -> None:
    preprocessor = Preprocessor(spec)
    sizes = [(45, 61), (spec.height + spec.crop_top + spec.crop_bottom, spec.width), (17, 90)]
    for seed, (height, width) in enumerate(sizes):  # geometry changes between frames rebuild the buffers
        image = random_image(source, height, width, seed)
        for frame in (image, padded_image(image)):
            tensor, transform = preprocessor(frame)
            expected, expected_transform = preprocess_reference(image, spec)
            assert tensor is preprocessor.tensor
            assert transform == expected_transform
            assert_matches_reference(tensor, expected)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_float16_backend_input_with_float32_spec(layout: str) -> None:
    spec = spec_of(layout=layout, scale=(2 / 255,) * 3, offset=(-1.0,) * 3, resize="letterbox", pad_value=0.0)
    image = random_image("bgr", 50, 40)
    preprocessor = Preprocessor(spec, dtype=np.float16)
    tensor, _ = preprocessor(image)
    assert tensor.dtype == np.float16
    expected, _ = preprocess_reference(image, spec, dtype=np.float16)
    np.testing.assert_array_equal(tensor, expected)  # the LUT holds exactly the reference's float16 values
    float32, _ = preprocess_reference(image, spec)
    np.testing.assert_allclose(tensor.astype(np.float32), float32, atol=1e-3)


def test_nchw_and_nhwc_hold_the_same_values() -> None:
    image = random_image("bgr", 48, 64)
    spec = spec_of(scale=(0.01, 0.02, 0.03), offset=(-1.0, 0.5, 2.0), resize="letterbox", pad_value=50.0)
    planar, _ = Preprocessor(spec)(image)
    interleaved, _ = Preprocessor(replace(spec, layout="NHWC"))(image)
    np.testing.assert_allclose(planar[0].transpose(1, 2, 0), interleaved[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("source", "model", "expected"),
    [
        ("bgr", "RGB", (30, 20, 10)),
        ("bgr", "BGR", (10, 20, 30)),
        ("rgb", "RGB", (10, 20, 30)),
        ("rgb", "BGR", (30, 20, 10)),
    ],
)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_channel_order_golden(source: str, model: str, expected: Tuple[int, int, int], layout: str) -> None:
    pixels = np.empty((12, 16, 3), np.uint8)
    pixels[:] = (10, 20, 30)
    spec = spec_of(color=model, layout=layout, scale=(1.0,) * 3, height=6, width=8)
    tensor, _ = Preprocessor(spec)(DecodedImage(pixels, source))
    values = tensor[0, :, 3, 4] if layout == "NCHW" else tensor[0, 3, 4, :]
    np.testing.assert_array_equal(values, expected)


def test_gray_conversions_golden() -> None:
    bgr = np.empty((8, 8, 3), np.uint8)
    bgr[:] = (255, 0, 0)  # pure blue: BT.601 luma 0.114 * 255
    tensor, _ = Preprocessor(spec_of(color="GRAY", scale=(1.0,), offset=(0.0,), height=4, width=4))(
        DecodedImage(bgr, "bgr")
    )
    assert tensor.shape == (1, 1, 4, 4)
    assert abs(float(tensor[0, 0, 1, 1]) - 0.114 * 255) <= 1
    deep = np.full((8, 8), 0xABCD, np.uint16)
    tensor, _ = Preprocessor(spec_of(scale=(1.0,) * 3, height=4, width=4))(DecodedImage(deep, "gray16"))
    np.testing.assert_array_equal(tensor, 0xAB)  # gray16 keeps its high byte, replicated to RGB


def test_letterbox_geometry_and_pad() -> None:
    spec = spec_of(
        height=300, width=300, resize="letterbox", pad_value=114.0, scale=(2 / 255,) * 3, offset=(-1,) * 3
    )
    tensor, transform = Preprocessor(spec)(random_image("bgr", 375, 500))
    assert (transform.scale_x, transform.scale_y, transform.pad_x, transform.pad_y) == (0.6, 0.6, 0.0, 37.0)
    pad = np.float32(114.0) * np.float32(2 / 255) - np.float32(1)
    np.testing.assert_array_equal(tensor[0, :, :37], pad)  # top strip
    np.testing.assert_array_equal(tensor[0, :, 37 + 225 :], pad)  # bottom strip (300 - 37 - 225 = 38 rows)
    assert not np.all(tensor[0, :, 37] == pad)


@pytest.mark.parametrize("interpolation", ["linear", "nearest", "area"])
def test_letterbox_undo_is_exact(interpolation: str) -> None:
    """A rectangle drawn at known source pixels is found in the tensor and maps back to the same pixels."""
    source = np.zeros((375, 500, 3), np.uint8)
    source[50:200, 100:250] = 255  # edges x 100..250, y 50..200 (multiples of 5: whole model pixels at 0.6)
    spec = spec_of(height=300, width=300, resize="letterbox", interpolation=interpolation, scale=(1.0,) * 3)
    tensor, transform = Preprocessor(spec)(DecodedImage(source, "bgr"))
    bright = tensor[0, 0] > 127
    rows, cols = np.nonzero(bright)
    found = np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], np.float32)
    np.testing.assert_array_equal(found, [[60, 37 + 30, 150, 37 + 120]])
    np.testing.assert_allclose(transform.boxes_to_source(found), [[100, 50, 250, 200]], atol=1e-4)
    # the content rectangle maps to the whole frame, exactly
    content = np.array([[0, 37, 300, 37 + 225]], np.float64)
    np.testing.assert_array_equal(transform.boxes_to_source(content), [[0, 0, 500, 375]])


def test_transform_round_trip_and_clipping() -> None:
    transform = ImageTransform(
        src_width=640, src_height=480, scale_x=0.5, scale_y=0.25, pad_x=3.0, pad_y=7.0, crop_top=40.0
    )
    boxes = np.array([[10.5, 60.25, 300.0, 470.0], [0.0, 40.0, 640.0, 480.0]])
    np.testing.assert_allclose(transform.boxes_to_source(transform.boxes_to_model(boxes)), boxes, atol=1e-9)
    outside = np.array([[-50.0, -50.0, 1000.0, 1000.0]], np.float32)
    assert transform.boxes_to_source(outside) is outside  # in place for float input
    np.testing.assert_array_equal(outside, [[0, 0, 640, 480]])
    integers = np.array([[3, 7, 43, 17]])
    np.testing.assert_allclose(transform.boxes_to_source(integers), [[0, 40, 80, 80]])


def test_donkeycar_crop_rows_and_transform() -> None:
    """crop.top counts model rows: 40 of 160 model rows = a quarter of the frame, 120 of 480 source rows."""
    spec = spec_of(height=120, width=160, layout="NHWC", crop_top=40, scale=(1.0,) * 3)
    source = np.zeros((480, 640, 3), np.uint8)
    source[:120] = 255  # entirely in the cropped-away part
    source[240:300, 320:640] = 200  # model rows (240-120)/3 = 40 .. 60, columns 80 .. 160
    tensor, transform = Preprocessor(spec)(DecodedImage(source, "bgr"))
    assert transform.crop_top == 120.0
    assert (transform.scale_x, transform.scale_y) == (0.25, 120 / 360)
    assert tensor[0, :, :, 0].max() == 200  # the white top band is gone
    rows, cols = np.nonzero(tensor[0, :, :, 0] > 100)
    box = np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], np.float32)
    np.testing.assert_array_equal(box, [[80, 40, 160, 60]])
    np.testing.assert_allclose(transform.boxes_to_source(box), [[320, 240, 640, 300]], atol=1e-4)


def test_crop_bottom_and_too_small_frames() -> None:
    spec = spec_of(height=10, width=10, crop_top=5, crop_bottom=5, scale=(1.0,) * 3)
    source = np.zeros((200, 10, 3), np.uint8)
    source[150:] = 255  # the bottom quarter is cropped away: 5 of 20 model rows
    tensor, transform = Preprocessor(spec)(DecodedImage(source, "bgr"))
    assert transform.crop_top == 50.0 and transform.scale_y == 10 / 100
    assert tensor.max() == 0
    with pytest.raises(ImageError, match="crop"):
        Preprocessor(spec_of(height=10, width=10, crop_top=30, crop_bottom=30))(random_image("bgr", 2, 10))


def test_out_buffer_is_filled_in_place_and_checked() -> None:
    spec = spec_of(dtype="float32")
    out = np.zeros(spec.shape, np.float16)
    preprocessor = Preprocessor(spec, out=out)  # dtype taken from the buffer (a float16 engine input)
    tensor, _ = preprocessor(random_image("bgr", 30, 40))
    assert tensor is out and preprocessor.tensor is out and out.any()
    with pytest.raises(SpecError, match="input buffer"):
        Preprocessor(spec, out=np.zeros((1, 3, 24, 33), np.float32))
    with pytest.raises(SpecError, match="input buffer"):
        Preprocessor(spec, out=np.zeros((1, 24, 32, 3), np.float32).transpose(0, 3, 1, 2))
    with pytest.raises(SpecError, match="dtype"):
        Preprocessor(spec, dtype=np.uint8)
    with pytest.raises(SpecError, match="dtype"):
        Preprocessor(spec_of(dtype="uint8", scale=(1.0,) * 3), dtype=np.float32)
    with pytest.raises(SpecError, match="scale"):
        Preprocessor(spec_of(dtype="uint8", scale=(1 / 255,) * 3))


@pytest.mark.parametrize(
    ("layout", "dtype", "resize", "source"),
    [
        ("NCHW", "float32", "stretch", "bgr8"),
        ("NHWC", "float32", "letterbox", "bgr8"),
        ("NCHW", "float16", "letterbox", "rgb8"),
        ("NHWC", "uint8", "stretch", "mono8"),
    ],
)
def test_no_frame_sized_allocation_per_frame(layout: str, dtype: str, resize: str, source: str) -> None:
    scale = (1.0,) * 3 if dtype == "uint8" else (1 / 255,) * 3
    spec = spec_of(height=120, width=160, layout=layout, dtype=dtype, resize=resize, scale=scale, crop_top=10)
    channels = 1 if source == "mono8" else 3
    data = np.random.default_rng(0).integers(0, 256, 480 * 640 * channels, dtype=np.uint8).tobytes()
    preprocessor = Preprocessor(spec)

    def frame() -> None:
        preprocessor(decode_raw(480, 640, source, 640 * channels, data))

    for _ in range(3):
        frame()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        for _ in range(30):
            frame()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - start < 16 * 1024  # a frame is 900 KB, the model tensor 57-230 KB
    assert current - start < 4 * 1024
