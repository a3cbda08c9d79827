"""Image decoding: every encoding against OpenCV's own conversions or hand-built golden frames, zero-copy
views, row padding, byte order, rclpy/rosbags data containers, compressed frames, and every bad input."""

from __future__ import annotations

import array
import struct
import time
import zlib
from types import SimpleNamespace
from typing import Any, List

import cv2
import numpy as np
import pytest

from trt_perception.errors import ImageError
from trt_perception.images import (
    MAX_PIXELS,
    BufferPool,
    DecodedImage,
    ImageDecoder,
    decode_compressed,
    decode_image,
    decode_image_file,
    decode_raw,
    encode_compressed,
    image_fields,
)

H, W = 24, 32


def smooth_bgr(height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    """A smooth color image (demosaicing and chroma subsampling are exact enough on it)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = rng.uniform(40, 200, 3)
    image = np.stack([base[c] + 30 * np.sin(xx / 9.0 + c) + 20 * np.cos(yy / 7.0 - c) for c in range(3)], -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def image_msg(array_: np.ndarray, encoding: str, step: int = 0, data: Any = None, bigendian: int = 0) -> Any:
    height, width = array_.shape[:2]
    row = np.ascontiguousarray(array_).reshape(height, -1).view(np.uint8)
    if step and step > row.shape[1]:
        padded = np.full((height, step), 0xEE, np.uint8)
        padded[:, : row.shape[1]] = row
        row = padded
    raw = row.tobytes() if data is None else data
    return SimpleNamespace(
        height=height, width=width, encoding=encoding, is_bigendian=bigendian, step=row.strides[0], data=raw
    )


# ---------------------------------------------------------------------------------------- direct layouts


@pytest.mark.parametrize(
    ("encoding", "color", "channels"),
    [("rgb8", "rgb", 3), ("bgr8", "bgr", 3), ("mono8", "gray", 1), ("8UC3", "bgr", 3), ("8UC1", "gray", 1)],
)
def test_direct_encodings_round_trip(encoding: str, color: str, channels: int) -> None:
    pixels = smooth_bgr() if channels == 3 else smooth_bgr()[:, :, 0].copy()
    decoded = decode_image(image_msg(pixels, encoding))
    assert decoded.color == color
    assert (decoded.height, decoded.width) == (H, W)
    np.testing.assert_array_equal(decoded.array, pixels)


def test_direct_decode_is_a_view_of_the_message_buffer() -> None:
    pixels = smooth_bgr()
    buffer = bytearray(pixels.tobytes())
    decoded = decode_raw(H, W, "bgr8", W * 3, buffer)
    buffer[0] = (int(pixels[0, 0, 0]) + 1) % 256  # a write to the message shows through: no copy was made
    assert decoded.array[0, 0, 0] == buffer[0]
    data = np.frombuffer(pixels.tobytes(), np.uint8)  # rosbags gives numpy arrays
    assert np.shares_memory(decode_raw(H, W, "bgr8", W * 3, data).array, data)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "mono16"])
def test_row_padding_gives_a_strided_view(encoding: str) -> None:
    pixels = smooth_bgr()
    if encoding == "mono8":
        pixels = pixels[:, :, 1].copy()
    elif encoding == "mono16":
        pixels = pixels[:, :, 1].astype(np.uint16) * 257
    row_bytes = pixels.strides[0]
    msg = image_msg(pixels, encoding, step=row_bytes + 16)
    assert msg.step == row_bytes + 16
    decoded = decode_image(msg)
    np.testing.assert_array_equal(decoded.array, pixels)
    assert decoded.array.strides[0] == row_bytes + 16  # no copy to drop the padding
    assert not decoded.array.flags.c_contiguous


@pytest.mark.parametrize("padding", [0, 6])
def test_mono16_little_and_big_endian(padding: int) -> None:
    values = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 97 % 65536).astype(np.uint16)
    little = image_msg(values.astype("<u2"), "mono16", step=W * 2 + padding)
    big = image_msg(values.astype(">u2"), "mono16", step=W * 2 + padding, bigendian=1)
    for msg in (little, big):
        decoded = decode_image(msg)
        assert decoded.color == "gray16"
        assert decoded.array.dtype == np.uint16  # native order, usable by OpenCV
        np.testing.assert_array_equal(decoded.array, values)
    assert decode_image(big).array.dtype.isnative


def test_mono16_odd_step_is_realigned() -> None:
    values = np.arange(H * W, dtype=np.uint16).reshape(H, W)
    decoded = decode_image(image_msg(values, "mono16", step=W * 2 + 1))
    np.testing.assert_array_equal(decoded.array, values)


@pytest.mark.parametrize(
    "container",
    ["bytes", "bytearray", "memoryview", "array", "list", "numpy", "numpy_2d"],
)
def test_rclpy_and_rosbags_data_containers(container: str) -> None:
    pixels = smooth_bgr()
    raw = pixels.tobytes()
    data: Any = {
        "bytes": raw,
        "bytearray": bytearray(raw),
        "memoryview": memoryview(raw),
        "array": array.array("B", raw),  # what rclpy gives for uint8[]
        "list": list(raw),
        "numpy": np.frombuffer(raw, np.uint8).copy(),
        "numpy_2d": pixels.reshape(H, -1),
    }[container]
    decoded = decode_image(image_msg(pixels, "bgr8", data=data))
    np.testing.assert_array_equal(decoded.array, pixels)


def test_rosbags_message_classes() -> None:
    typesys = pytest.importorskip("rosbags.typesys")
    store = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="cam"
    )
    pixels = smooth_bgr()
    image = store.types["sensor_msgs/msg/Image"](
        header=header, height=H, width=W, encoding="rgb8", is_bigendian=0, step=W * 3,
        data=np.frombuffer(pixels.tobytes(), np.uint8),
    )  # fmt: skip
    np.testing.assert_array_equal(decode_image(image).array, pixels)
    _, jpeg = cv2.imencode(".png", pixels)
    compressed = store.types["sensor_msgs/msg/CompressedImage"](
        header=header, format="png", data=jpeg.reshape(-1)
    )
    np.testing.assert_array_equal(decode_image(compressed).array, pixels)


# ------------------------------------------------------------------------------------ converted layouts


@pytest.mark.parametrize(("encoding", "code"), [("rgba8", cv2.COLOR_BGR2RGBA), ("bgra8", cv2.COLOR_BGR2BGRA)])
def test_alpha_is_dropped(encoding: str, code: int) -> None:
    bgr = smooth_bgr()
    four = cv2.cvtColor(bgr, code)
    four[:, :, 3] = 7
    decoded = decode_image(image_msg(four, encoding, step=W * 4 + 8))
    expected = bgr if encoding == "bgra8" else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    assert decoded.color == ("bgr" if encoding == "bgra8" else "rgb")
    np.testing.assert_array_equal(decoded.array, expected)


def bt601_limited(bgr: np.ndarray) -> np.ndarray:
    """Y, U, V planes (video range) of a BGR picture, computed by hand from the BT.601 definition."""
    b, g, r = (bgr[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return np.clip(np.round(np.stack([y, u, v], -1)), 0, 255).astype(np.uint8)


def pack_422(bgr: np.ndarray, order: str) -> np.ndarray:
    """Pack a BGR picture as YUYV or UYVY bytes (chroma of each pixel pair averaged)."""
    yuv = bt601_limited(bgr).astype(np.float64)
    y = yuv[..., 0]
    u = (yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) / 2
    v = (yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) / 2
    packed = np.empty((bgr.shape[0], bgr.shape[1] // 2, 4))
    if order == "yuyv":
        packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = y[:, 0::2], u, y[:, 1::2], v
    else:
        packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = u, y[:, 0::2], v, y[:, 1::2]
    return np.round(packed).astype(np.uint8).reshape(bgr.shape[0], bgr.shape[1], 2)


@pytest.mark.parametrize(
    ("encoding", "order"), [("yuyv", "yuyv"), ("yuv422_yuy2", "yuyv"), ("uyvy", "uyvy"), ("yuv422", "uyvy")]
)
def test_yuv422_against_hand_built_bt601_frames(encoding: str, order: str) -> None:
    bgr = np.zeros((4, 8, 3), np.uint8)
    bgr[:, 0:2] = (0, 0, 255)  # red
    bgr[:, 2:4] = (0, 255, 0)  # green
    bgr[:, 4:6] = (255, 0, 0)  # blue
    bgr[:, 6:8] = (40, 160, 220)
    decoded = decode_image(image_msg(pack_422(bgr, order), encoding, step=8 * 2 + 4))
    assert decoded.color == "bgr"
    assert np.abs(decoded.array.astype(int) - bgr.astype(int)).max() <= 4


@pytest.mark.parametrize(
    ("encoding", "forward"),
    [("yuyv", "COLOR_BGR2YUV_YUYV"), ("uyvy", "COLOR_BGR2YUV_UYVY")],
)
def test_yuv422_round_trip_with_opencv(encoding: str, forward: str) -> None:
    if not hasattr(cv2, forward):
        pytest.skip(f"this OpenCV ({cv2.__version__}) has no {forward}")
    bgr = smooth_bgr()
    packed = cv2.cvtColor(bgr, getattr(cv2, forward))
    decoded = decode_image(image_msg(packed, encoding))
    assert np.abs(decoded.array.astype(int) - bgr.astype(int)).max() <= 8


def bayer_mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The mosaic a ROS bayer_<pattern>8 camera sends: ``pattern`` names the 2x2 block at (0, 0) row-major."""
    index = {"r": 0, "g": 1, "b": 2}
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    for k, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, index[pattern[k]]]
    return mosaic


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_patterns_match_ros_naming(pattern: str) -> None:
    """ROS bayer_rggb8 is OpenCV's BayerBG: a flat orange frame must come out orange, not blue."""
    rgb = np.empty((16, 20, 3), np.uint8)
    rgb[:] = (220, 120, 30)
    decoded = decode_image(image_msg(bayer_mosaic(rgb, pattern), f"bayer_{pattern}8", step=24))
    assert decoded.color == "bgr"
    np.testing.assert_array_equal(decoded.array[4:-4, 4:-4].reshape(-1, 3).min(0), (30, 120, 220))
    np.testing.assert_array_equal(decoded.array[4:-4, 4:-4].reshape(-1, 3).max(0), (30, 120, 220))
    smooth = cv2.cvtColor(smooth_bgr(32, 40), cv2.COLOR_BGR2RGB)
    demosaiced = decode_image(image_msg(bayer_mosaic(smooth, pattern), f"bayer_{pattern}8")).array
    error = np.abs(demosaiced[2:-2, 2:-2].astype(int) - smooth[2:-2, 2:-2, ::-1].astype(int))
    assert error.mean() < 3


@pytest.mark.parametrize("encoding", ["nv12", "nv21"])
def test_nv12_nv21(encoding: str) -> None:
    bgr = smooth_bgr()
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)  # Y plane, U plane, V plane
    y = i420[:H]
    u = i420[H : H + H // 4].reshape(H // 2, W // 2)
    v = i420[H + H // 4 :].reshape(H // 2, W // 2)
    first, second = (u, v) if encoding == "nv12" else (v, u)
    uv = np.stack([first, second], -1).reshape(H // 2, W)
    planes = np.concatenate([y, uv])
    msg = SimpleNamespace(height=H, width=W, encoding=encoding, is_bigendian=0, step=W, data=planes.tobytes())
    decoded = decode_image(msg)
    assert np.abs(decoded.array.astype(int) - bgr.astype(int)).max() <= 10


def test_buffer_pool_reuses_conversion_outputs() -> None:
    packed = cv2.cvtColor(smooth_bgr(), cv2.COLOR_BGR2BGRA)
    decoder = ImageDecoder()
    first = decoder(image_msg(packed, "bgra8")).array
    second = decoder(image_msg(packed, "bgra8")).array
    assert first is second
    other = decoder(image_msg(cv2.cvtColor(smooth_bgr(8, 10), cv2.COLOR_BGR2BGRA), "bgra8")).array
    assert other.shape == (8, 10, 3)
    pool = BufferPool(max_arrays=1)
    pool.array((2, 2))
    pool.array((3, 3))
    assert len(pool._arrays) == 1
    assert decode_image(image_msg(packed, "bgra8")).array is not first  # no pool: a fresh array


# ------------------------------------------------------------------------------------------- compressed


@pytest.mark.parametrize(
    ("fmt", "ext"),
    [
        ("jpeg", ".jpg"),
        ("png", ".png"),
        ("rgb8; jpeg compressed bgr8", ".jpg"),
        ("bgr8; compressed bgr8", ".png"),
    ],
)
def test_compressed_formats_in_the_wild(fmt: str, ext: str) -> None:
    bgr = smooth_bgr()
    _, encoded = cv2.imencode(ext, bgr)
    decoded = decode_image(SimpleNamespace(format=fmt, data=encoded.tobytes()))
    assert decoded.color == "bgr"
    tolerance = 0 if ext == ".png" else 12
    assert np.abs(decoded.array.astype(int) - bgr.astype(int)).max() <= tolerance


def test_compressed_rgb_target_and_gray_and_16bit_and_alpha() -> None:
    bgr = smooth_bgr()
    rgb = bgr[:, :, ::-1].copy()
    _, encoded = cv2.imencode(".png", rgb)  # a publisher that compressed RGB bytes as they were
    decoded = decode_compressed("rgb8; png compressed rgb8", encoded)
    assert decoded.color == "rgb"
    np.testing.assert_array_equal(decoded.array, rgb)
    gray = bgr[:, :, 0].copy()
    _, encoded = cv2.imencode(".png", gray)
    decoded = decode_compressed("mono8; png compressed mono8", encoded)
    assert decoded.color == "gray"
    np.testing.assert_array_equal(decoded.array, gray)
    deep = gray.astype(np.uint16) * 257
    _, encoded = cv2.imencode(".png", deep)
    decoded = decode_compressed("mono16; png compressed mono16", encoded)
    assert decoded.color == "gray16"
    np.testing.assert_array_equal(decoded.array, deep)
    _, encoded = cv2.imencode(".png", cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    np.testing.assert_array_equal(decode_compressed("png", encoded).array, bgr)
    _, encoded = cv2.imencode(".png", bgr.astype(np.uint16) * 257)
    np.testing.assert_array_equal(decode_compressed("png", encoded).array, bgr)


@pytest.mark.parametrize("color", ["bgr", "rgb", "gray", "gray16"])
@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_encode_compressed_round_trip(color: str, fmt: str) -> None:
    bgr = smooth_bgr()
    pixels = {
        "bgr": bgr,
        "rgb": bgr[:, :, ::-1].copy(),
        "gray": bgr[:, :, 1].copy(),
        "gray16": bgr[:, :, 1].astype(np.uint16) * 257,
    }[color]
    format_string, data = encode_compressed(pixels, color, fmt)
    assert data.dtype == np.uint8 and data.ndim == 1
    assert f"{fmt} compressed" in format_string
    decoded = decode_compressed(format_string, data)
    if color in ("rgb", "bgr"):
        assert decoded.color == "bgr"
        expected = bgr.astype(int)
    elif color == "gray16" and fmt == "png":
        assert decoded.color == "gray16"
        expected = pixels.astype(int)
    else:
        assert decoded.color == "gray"
        expected = bgr[:, :, 1].astype(int)
    tolerance = 0 if fmt == "png" else 12
    assert np.abs(decoded.array.astype(int) - expected).max() <= tolerance


# --------------------------------------------------------------------------------------- image_fields


@pytest.mark.parametrize(
    ("encoding", "pixels"),
    [
        ("bgr8", smooth_bgr()),
        ("rgb8", smooth_bgr()),
        ("mono8", smooth_bgr()[:, :, 0].copy()),
        ("mono16", smooth_bgr()[:, :, 0].astype(np.uint16) * 257),
        ("bgra8", cv2.cvtColor(smooth_bgr(), cv2.COLOR_BGR2BGRA)),
    ],
)
def test_image_fields_round_trip_without_copy(encoding: str, pixels: np.ndarray) -> None:
    fields = image_fields(pixels, encoding)
    assert isinstance(fields.data, memoryview)
    assert (fields.height, fields.width, fields.encoding, fields.is_bigendian) == (H, W, encoding, 0)
    assert len(fields.data) == fields.step * fields.height
    assert np.shares_memory(np.frombuffer(fields.data, np.uint8), pixels)
    decoded = decode_raw(
        fields.height, fields.width, fields.encoding, fields.step, fields.data, fields.is_bigendian
    )
    expected = pixels[:, :, :3] if encoding == "bgra8" else pixels
    np.testing.assert_array_equal(decoded.array, expected)


def test_image_fields_copies_only_non_contiguous_arrays() -> None:
    pixels = smooth_bgr()
    view = pixels[:, ::2]
    fields = image_fields(view, "bgr8")
    assert fields.step == view.shape[1] * 3
    np.testing.assert_array_equal(np.frombuffer(fields.data, np.uint8).reshape(view.shape), view)
    big = (np.arange(12, dtype=np.uint16).reshape(3, 4)).astype(">u2")
    fields = image_fields(big, "mono16")
    assert fields.is_bigendian == 1
    np.testing.assert_array_equal(
        decode_raw(3, 4, "mono16", fields.step, fields.data, fields.is_bigendian).array, big.astype(np.uint16)
    )


# ---------------------------------------------------------------------------------------------- errors


def good(**changes: Any) -> Any:
    msg = image_msg(smooth_bgr(), "bgr8")
    for key, value in changes.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(
    ("msg", "needle"),
    [
        (good(encoding="bgr9"), "Image.encoding"),
        (good(encoding="32FC1"), "Image.encoding"),
        (good(encoding=None), "Image.encoding"),
        (good(data=b"\x00" * (H * W * 3 - 1)), "Image.data"),
        (good(data=b""), "Image.data"),
        (good(data=[]), "Image.data"),
        (good(step=W * 3 - 1), "Image.step"),
        (good(step=-1), "Image.step"),
        (good(height=0), "Image.height"),
        (good(width=0), "Image.width"),
        (good(height=-3), "Image.height"),
        (good(width=2.5), "Image.width"),
        (good(data="not bytes"), "Image.data"),
        (good(data=[0, 1, 300] * (H * W)), "Image.data"),
        (good(encoding="yuyv", width=W - 1, step=W * 2), "Image.width"),
        (good(encoding="nv12", height=H - 1, step=W), "Image.height"),
        (good(encoding="bayer_rggb8", height=1, width=1, step=1), "Image.height/width"),
        (good(encoding="mono16", step=W * 2, data=b"\x00" * (W * 2 * H - 2)), "Image.data"),
        (SimpleNamespace(format="jpeg", data=b"not a jpeg at all"), "CompressedImage.data"),
        (SimpleNamespace(format="jpeg", data=b""), "CompressedImage.data"),
        (SimpleNamespace(format="16UC1; compressedDepth png", data=b"\x00" * 64), "CompressedImage.format"),
        (SimpleNamespace(format=3, data=b"\x00"), "CompressedImage.format"),
        (SimpleNamespace(header=None, payload=b""), "neither"),
    ],
)
def test_bad_inputs_raise_image_error_naming_the_field(msg: Any, needle: str) -> None:
    with pytest.raises(ImageError, match=needle) as info:
        decode_image(msg)
    assert isinstance(info.value, ValueError)
    text = str(info.value)
    assert "expected" in text or "fix" in text


def test_truncated_message_message_says_sizes_and_fix() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(good(data=b"\x00" * 100))
    text = str(info.value)
    assert "100 bytes" in text and str(W * 3 * H) in text and "fix" in text


@pytest.mark.parametrize(
    ("array_", "color"),
    [
        (np.zeros((4, 4), np.uint8), "bgr"),
        (np.zeros((4, 4, 3), np.uint8), "gray"),
        (np.zeros((4, 4), np.uint16), "gray"),
        (np.zeros((4, 4), ">u2"), "gray16"),
        (np.zeros((4, 4, 3), np.float32), "rgb"),
        (np.zeros((0, 4, 3), np.uint8), "rgb"),
        (np.zeros((4, 4, 3), np.uint8), "RGB"),
    ],
)
def test_decoded_image_refuses_mismatched_arrays(array_: np.ndarray, color: str) -> None:
    with pytest.raises(ImageError, match="DecodedImage"):
        DecodedImage(array_, color)


def test_image_fields_and_encode_refuse_bad_arrays() -> None:
    with pytest.raises(ImageError, match="encoding"):
        image_fields(np.zeros((4, 4, 3), np.uint8), "yuyv")
    with pytest.raises(ImageError, match="expected HxW uint16"):
        image_fields(np.zeros((4, 4), np.uint8), "mono16")
    with pytest.raises(ImageError, match="expected HxWx3"):
        image_fields(np.zeros((4, 4), np.uint8), "bgr8")
    with pytest.raises(ImageError, match="fmt"):
        encode_compressed(np.zeros((4, 4, 3), np.uint8), "bgr", "webp")


# ---------------------------------------------------------------------- resource guards, quiet codecs, files


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int) -> bytes:
    """A small PNG whose header claims a huge 8-bit gray image (its pixel data is a short, valid zlib stream)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
            + png_chunk(b"IEND", b""))  # fmt: skip


def encoded(ext: str, image: np.ndarray) -> np.ndarray:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.reshape(-1)


def test_default_pixel_limit_refuses_a_png_bomb_from_its_header() -> None:
    assert MAX_PIXELS >= 3840 * 2160 * 4  # generous for 4K (and 8K) cameras
    started = time.perf_counter()
    with pytest.raises(ImageError, match=r"30000x30000.*900000000 pixels.*max_pixels") as info:
        decode_compressed("png", np.frombuffer(png_bomb(30000, 30000), np.uint8))
    assert time.perf_counter() - started < 0.5  # refused from the header, nothing decoded
    assert "fix" in str(info.value)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".bmp"])
def test_max_pixels_of_a_decoder_is_read_from_the_header(ext: str) -> None:
    data = encoded(ext, smooth_bgr(40, 50))
    small, large = ImageDecoder(max_pixels=40 * 50 - 1), ImageDecoder(max_pixels=40 * 50)
    with pytest.raises(ImageError, match=r"50x40 .*2000 pixels.*max_pixels 1999"):
        small(SimpleNamespace(format="jpeg", data=data))
    assert large(SimpleNamespace(format="jpeg", data=data)).array.shape[:2] == (40, 50)


def test_max_pixels_applies_to_raw_images_too() -> None:
    msg = image_msg(smooth_bgr(), "bgr8")
    with pytest.raises(ImageError, match=rf"{W}x{H} .*max_pixels 100"):
        ImageDecoder(max_pixels=100)(msg)
    assert ImageDecoder()(msg).array.shape == (H, W, 3)
    with pytest.raises(ImageError, match="max_pixels"):
        ImageDecoder(max_pixels=0)


def bad_frames(count: int, seed: int = 0) -> List[np.ndarray]:
    """Truncated JPEG/PNG frames and PNG frames with flipped bits (a damaged transport)."""
    rng = np.random.default_rng(seed)
    jpg, png = encoded(".jpg", smooth_bgr(96, 128)), encoded(".png", smooth_bgr(96, 128))
    frames = []
    for i in range(count):
        if i % 3 == 0:
            frames.append(jpg[: int(rng.integers(2, jpg.size - 2))].copy())
        elif i % 3 == 1:
            frames.append(png[: int(rng.integers(8, png.size - 1))].copy())
        else:
            flipped = png.copy()
            flipped[int(rng.integers(40, png.size - 20))] ^= 0x10
            frames.append(flipped)
    return frames


def test_damaged_frames_are_refused_before_the_codecs_print_anything(capfd: Any) -> None:
    bmp = encoded(".bmp", smooth_bgr())
    bad_header = png_bomb(16, 16).replace(struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0),
                                          struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 7))  # fmt: skip
    bad_header = bad_header[:29] + struct.pack(">I", zlib.crc32(bad_header[12:29])) + bad_header[33:]  # valid CRC
    capfd.readouterr()
    for frame in [*bad_frames(300), bmp[: bmp.size // 2], np.frombuffer(bad_header, np.uint8)]:
        with pytest.raises(ImageError, match=r"CompressedImage\.data .*(truncated|damaged|CRC)"):
            decode_compressed("jpeg", frame)
    assert capfd.readouterr().err == ""  # libjpeg/libpng/OpenCV would have printed a line per frame


def test_other_formats_and_incomplete_headers() -> None:
    tiff = encoded(".tiff", smooth_bgr())
    with pytest.raises(ImageError, match=r"is not JPEG, PNG, WebP or BMP data") as info:
        decode_compressed("tiff", tiff)
    assert "starting b'II*" in str(info.value)
    for data in (b"\xff\xd8", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP",
                 b"BM\x00\x00"):  # fmt: skip
        with pytest.raises(ImageError, match="CompressedImage.data"):
            decode_compressed("jpeg", np.frombuffer(data, np.uint8))


def test_gray_alpha_png_decodes_as_its_gray() -> None:
    gray = smooth_bgr()[:, :, 0].copy()
    gray_alpha = np.stack([gray, np.full_like(gray, 200)], -1)  # OpenCV cannot write it: PNG color type 4
    rows = b"".join(b"\x00" + row.tobytes() for row in gray_alpha)
    header = struct.pack(">IIBBBBB", W, H, 8, 4, 0, 0, 0)
    data = np.frombuffer(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(rows))
                         + png_chunk(b"IEND", b""), np.uint8)  # fmt: skip
    decoded = decode_compressed("png", data)  # OpenCV gives BGRA; the alpha goes
    assert decoded.color == "bgr"
    for channel in range(3):
        np.testing.assert_array_equal(decoded.array[:, :, channel], gray)


def test_image_files_decode_exactly_as_compressed_messages(tmp_path: Any) -> None:
    bgr = smooth_bgr()
    deep = (bgr[:, :, 1].astype(np.uint16) * 257 + 3).astype(np.uint16)
    for name, image in (("color.jpg", bgr), ("color.png", bgr), ("deep.png", deep)):
        path = tmp_path / name
        assert cv2.imwrite(str(path), image)
        from_file = decode_image_file(path)
        from_message = decode_compressed("png" if name.endswith("png") else "jpeg", np.fromfile(str(path), np.uint8))
        assert from_file.color == from_message.color
        np.testing.assert_array_equal(from_file.array, from_message.array)
    assert decode_image_file(tmp_path / "deep.png").color == "gray16"  # as the node sees a mono16 png frame
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((tmp_path / "color.jpg").read_bytes()[:-40])
    assert cv2.imread(str(truncated)) is not None  # OpenCV's file reader accepts it ...
    with pytest.raises(ImageError, match=r"truncated\.jpg.*truncated"):  # ... the node's decoder does not
        decode_image_file(truncated)
    with pytest.raises(ImageError, match="missing.png does not exist"):
        decode_image_file(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a directory"):
        decode_image_file(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="0 bytes"):
        decode_image_file(tmp_path / "empty.png")
    with pytest.raises(ImageError, match=rf"color\.png.*{W}x{H} .*max_pixels 10"):
        decode_image_file(tmp_path / "color.png", max_pixels=10)
