"""Image messages <-> numpy arrays, without ROS.

Messages are duck-typed: anything with ``height/width/encoding/step/data/is_bigendian`` is a
``sensor_msgs/Image`` and anything with ``format/data`` is a ``sensor_msgs/CompressedImage``, so rclpy
messages, ``rosbags`` messages and test doubles all work. Layouts that numpy can describe (rgb8, bgr8, mono8,
little-endian mono16, with or without row padding) become zero-copy strided views of the message buffer;
the rest (alpha, YUV 4:2:2, NV12/21, Bayer, big-endian mono16) take exactly one OpenCV conversion, written
into a reusable ``BufferPool`` array when the caller passes one (the per-frame path does).

Every bad input raises ``ImageError`` naming the field, its value, what was expected and the fix, before
numpy or OpenCV see it. Compressed frames are checked before the codec runs (``compressed_size``): the width
and height come from the JPEG/PNG/WebP/BMP header, so a small message that would decode to gigabytes (a
30000x30000 PNG is under 1 MB) is refused by ``max_pixels`` without allocating anything; a JPEG without its
end-of-image marker and a PNG with a missing chunk or a CRC mismatch (a truncated or damaged transport) are
refused too, so libjpeg/libpng never see them and never print their own stderr lines (which bypass ROS
logging and any throttle); the node's throttled warning is the only voice. ``decode_image_file`` reads an
image file through the same path, so ``trt-perception infer`` sees a file exactly as the node sees the frame.
"""

from __future__ import annotations

import struct
import sys
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import cv2
import numpy as np

from trt_perception.errors import ImageError

COLORS = ("rgb", "bgr", "gray", "gray16")
MAX_PIXELS = 40_000_000  # default frame size limit: 4K is 8.3 Mpixel, 8K 33 Mpixel; a 40 Mpixel BGR frame is 120 MB


@dataclass(frozen=True)
class DecodedImage:
    """A decoded frame: a numpy array (possibly a read-only view of the message) and its color order."""

    array: np.ndarray  # HxWx3 uint8 ('rgb'/'bgr'), HxW uint8 ('gray'), HxW uint16 ('gray16')
    color: str
    # (width, height) of the frame as sent when it was decoded at a reduced size (``jpeg_reduce``): results are
    # mapped back to these pixels; None = the array is the frame at its own size.
    source_size: Optional[Tuple[int, int]] = None

    def __post_init__(self) -> None:
        array, color = self.array, self.color
        if color not in COLORS:
            raise ImageError(f"DecodedImage color is {color!r}; expected one of {list(COLORS)}")
        if color in ("rgb", "bgr"):
            ok = array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
            expected = "an HxWx3 uint8 array"
        elif color == "gray":
            ok = array.ndim == 2 and array.dtype == np.uint8
            expected = "an HxW uint8 array"
        else:
            ok = array.ndim == 2 and array.dtype == np.uint16
            expected = "an HxW uint16 array in native byte order"
        if not ok:
            raise ImageError(
                f"DecodedImage array has shape {array.shape} dtype {array.dtype} for color {color!r}; "
                f"expected {expected}; fix: convert the array or pass the matching color"
            )
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ImageError(f"DecodedImage array has shape {array.shape}; expected a non-empty image")

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def reduced(self) -> bool:
        """Decoded below the frame's own size (``jpeg_reduce``)."""
        return self.source_size is not None and self.source_size != (self.width, self.height)

    def full_size(self) -> DecodedImage:
        """This frame at its source size: itself, or (``jpeg_reduce``) a bilinear upscale made for overlays and
        reports, whose drawings are in full-frame pixels."""
        if not self.reduced:
            return self
        width, height = self.source_size  # type: ignore[misc]
        return DecodedImage(cv2.resize(self.array, (width, height), interpolation=cv2.INTER_LINEAR), self.color)


class BufferPool:
    """Reusable output arrays for conversions, one per (shape, dtype): no frame allocated per frame.

    An array handed out is overwritten by the next decode of the same size: a caller that keeps a frame past
    the next decode (a queue of frames, a recorder) must copy it or decode without a pool.
    """

    def __init__(self, max_arrays: int = 4, depth: int = 1) -> None:
        self.max_arrays = max_arrays
        self.depth = max(1, int(depth))  # arrays per size, handed out in turn: a frame lives ``depth`` decodes
        self._arrays: Dict[Tuple[Tuple[int, ...], str], List[np.ndarray]] = {}
        self._turn: Dict[Tuple[Tuple[int, ...], str], int] = {}
        self._lock = threading.Lock()  # frames may be decoded in several threads at once (replay's look-ahead)

    def array(self, shape: Tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
        with self._lock:
            return self._take(shape, dtype)

    def _take(self, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        key = (tuple(int(d) for d in shape), np.dtype(dtype).str)
        found = self._arrays.get(key)
        if found is None:
            if len(self._arrays) >= self.max_arrays:  # the stream changed size: forget the oldest
                oldest = next(iter(self._arrays))
                self._arrays.pop(oldest)
                self._turn.pop(oldest, None)
            found = self._arrays[key] = []
        turn = self._turn.get(key, 0)
        self._turn[key] = (turn + 1) % self.depth
        if turn >= len(found):
            found.append(np.empty(key[0], dtype))
        return found[turn]


def _out(pool: Optional[BufferPool], shape: Tuple[int, ...], dtype: Any = np.uint8) -> Optional[np.ndarray]:
    return pool.array(shape, dtype) if pool is not None else None


# ---------------------------------------------------------------------------------------------- raw images


@dataclass(frozen=True)
class _Encoding:
    kind: str  # 'direct' (strided view), 'alpha', 'yuv422', 'nv', 'bayer'
    channels: int  # bytes of one pixel in a row of the message (mono16: 2)
    color: str  # color of the decoded array
    cv_code: int = -1  # cv2.cvtColor code, for the converted kinds


# sensor_msgs/image_encodings.hpp spellings. 'yuv422' (fourcc UYVY) and 'yuv422_yuy2' (fourcc YUYV) are the
# deprecated names of 'uyvy' and 'yuyv'. OpenCV names Bayer patterns by the 2x2 block starting at pixel
# (1, 1), so ROS's 'rggb' (pattern starting at (0, 0)) is OpenCV's 'BG' (test_images checks this on a
# known mosaic).
ENCODINGS: Dict[str, _Encoding] = {
    "rgb8": _Encoding("direct", 3, "rgb"),
    "bgr8": _Encoding("direct", 3, "bgr"),
    "8uc3": _Encoding("direct", 3, "bgr"),  # OpenCV convention for untyped 3-channel images
    "mono8": _Encoding("direct", 1, "gray"),
    "8uc1": _Encoding("direct", 1, "gray"),
    "mono16": _Encoding("direct", 2, "gray16"),
    "16uc1": _Encoding("direct", 2, "gray16"),
    "rgba8": _Encoding("alpha", 4, "rgb", cv2.COLOR_RGBA2RGB),
    "bgra8": _Encoding("alpha", 4, "bgr", cv2.COLOR_BGRA2BGR),
    "8uc4": _Encoding("alpha", 4, "bgr", cv2.COLOR_BGRA2BGR),
    "uyvy": _Encoding("yuv422", 2, "bgr", cv2.COLOR_YUV2BGR_UYVY),
    "yuv422": _Encoding("yuv422", 2, "bgr", cv2.COLOR_YUV2BGR_UYVY),
    "yuyv": _Encoding("yuv422", 2, "bgr", cv2.COLOR_YUV2BGR_YUYV),
    "yuv422_yuy2": _Encoding("yuv422", 2, "bgr", cv2.COLOR_YUV2BGR_YUYV),
    "nv12": _Encoding("nv", 1, "bgr", cv2.COLOR_YUV2BGR_NV12),
    "nv21": _Encoding("nv", 1, "bgr", cv2.COLOR_YUV2BGR_NV21),
    "bayer_rggb8": _Encoding("bayer", 1, "bgr", cv2.COLOR_BayerBG2BGR),
    "bayer_bggr8": _Encoding("bayer", 1, "bgr", cv2.COLOR_BayerRG2BGR),
    "bayer_gbrg8": _Encoding("bayer", 1, "bgr", cv2.COLOR_BayerGR2BGR),
    "bayer_grbg8": _Encoding("bayer", 1, "bgr", cv2.COLOR_BayerGB2BGR),
}
SUPPORTED_ENCODINGS = (*tuple(k for k in ENCODINGS if not k[0].isdigit()), "8UC1", "8UC3", "8UC4", "16UC1")


def _as_uint8_buffer(data: Any, field: str = "data") -> np.ndarray:
    """A flat uint8 array over the message's bytes, copying only when the container has no buffer (a list)."""
    if isinstance(data, np.ndarray):
        if data.dtype == np.uint8 and data.ndim == 1 and data.flags.c_contiguous:
            return data
        if data.flags.c_contiguous:
            return data.reshape(-1).view(np.uint8)
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, str):
        raise ImageError(
            f"{field} is a str ({data[:20]!r}...); expected bytes-like pixel data "
            "(bytes, bytearray, memoryview, array.array('B'), list of ints or a numpy uint8 array)"
        )
    try:
        return np.frombuffer(data, np.uint8)  # bytes, bytearray, memoryview, array.array: no copy
    except (TypeError, ValueError, BufferError):
        pass
    try:
        array = np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise ImageError(f"{field} of type {type(data).__name__} cannot be read as bytes ({exc})") from None
    if array.size == 0:
        return np.empty(0, np.uint8)
    if array.ndim != 1 or array.dtype.kind not in "iub":
        raise ImageError(
            f"{field} is {type(data).__name__} holding {array.dtype} of shape {array.shape}; "
            "expected a flat sequence of byte values 0..255"
        )
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ImageError(
            f"{field} holds values {int(array.min())}..{int(array.max())}; expected bytes 0..255; "
            "fix: fill the message data with uint8 pixel bytes"
        )
    return array.astype(np.uint8)


def _positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ImageError(f"Image.{field} is {value!r} ({type(value).__name__}); expected a positive integer")
    if value <= 0:
        raise ImageError(
            f"Image.{field} is {value}; expected a positive integer; fix: the publisher sent an empty image "
            "(check the camera driver's resolution settings)"
        )
    return int(value)


def decode_raw(
    height: int,
    width: int,
    encoding: str,
    step: int,
    data: Any,
    is_bigendian: Any = 0,
    pool: Optional[BufferPool] = None,
    max_pixels: int = MAX_PIXELS,
) -> DecodedImage:
    """Decode the fields of a ``sensor_msgs/Image``: a view of ``data`` where the layout allows."""
    height = _positive_int(height, "height")
    width = _positive_int(width, "width")
    _check_pixels(width, height, max_pixels, "Image")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ImageError(f"Image.step is {step!r}; expected a non-negative integer (bytes per row)")
    step = int(step)
    if not isinstance(encoding, str):
        raise ImageError(f"Image.encoding is {encoding!r}; expected a string such as 'bgr8'")
    info = ENCODINGS.get(encoding.strip().lower())
    if info is None:
        raise ImageError(
            f"Image.encoding is {encoding!r}; expected one of {list(SUPPORTED_ENCODINGS)}; "
            "fix: set the camera driver to publish one of these (e.g. bgr8 or yuyv) "
            "or republish with image_proc"
        )
    row_bytes = width * info.channels
    if step < row_bytes:
        raise ImageError(
            f"Image.step is {step} for width {width} and encoding {encoding!r}; expected at least "
            f"{row_bytes} (width x {info.channels} bytes per pixel); fix: the publisher must set step to "
            "the row length in bytes"
        )
    rows = height * 3 // 2 if info.kind == "nv" else height
    if info.kind in ("yuv422", "nv") and width % 2:
        raise ImageError(
            f"Image.width is {width} for encoding {encoding!r}; expected an even width (4:2:x chroma)"
        )
    if info.kind == "nv" and height % 2:
        raise ImageError(
            f"Image.height is {height} for encoding {encoding!r}; expected an even height (4:2:0)"
        )
    if info.kind == "bayer" and (height < 2 or width < 2):
        raise ImageError(
            f"Image.height/width is {height}x{width} with encoding {encoding!r}; expected at least 2x2 "
            "for a Bayer mosaic"
        )
    buf = _as_uint8_buffer(data, "Image.data")
    if buf.size < step * rows:
        raise ImageError(
            f"Image.data has {buf.size} bytes; expected at least step x rows = "
            f"{step} x {rows} = {step * rows} "
            f"for a {width}x{height} {encoding!r} image; fix: the message is truncated (check the publisher "
            "and the transport, e.g. a bag recorded with a message size limit)"
        )

    if info.kind == "direct" and info.channels == 2:
        return _decode_mono16(buf, height, width, step, bool(is_bigendian), pool)
    if info.kind == "nv":
        planes = np.ndarray((rows, width), np.uint8, buffer=buf, strides=(step, 1))
        out = _out(pool, (height, width, 3))
        return DecodedImage(cv2.cvtColor(planes, info.cv_code, dst=out), "bgr")
    pixel = info.channels
    if pixel == 1:
        view = np.ndarray((height, width), np.uint8, buffer=buf, strides=(step, 1))
    else:
        view = np.ndarray((height, width, pixel), np.uint8, buffer=buf, strides=(step, pixel, 1))
    if info.kind == "direct":
        return DecodedImage(view, info.color)
    out = _out(pool, (height, width, 3))
    return DecodedImage(cv2.cvtColor(view, info.cv_code, dst=out), info.color)


def _decode_mono16(
    buf: np.ndarray, height: int, width: int, step: int, big_endian: bool, pool: Optional[BufferPool]
) -> DecodedImage:
    """mono16: a native-order view when byte order and alignment allow, else one converting copy."""
    stored = np.dtype(">u2" if big_endian else "<u2")
    view = np.ndarray((height, width), stored, buffer=buf, strides=(step, 2))
    aligned = step % 2 == 0 and view.__array_interface__["data"][0] % 2 == 0
    if stored == np.dtype(np.uint16) and aligned:
        return DecodedImage(view, "gray16")
    out = _out(pool, (height, width), np.uint16)
    if out is None:
        out = np.empty((height, width), np.uint16)
    np.copyto(out, view)  # byte swap (or realignment) in one pass
    return DecodedImage(out, "gray16")


# ----------------------------------------------------------------------------------------- compressed images


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f"{what} is {width}x{height} ({width * height} pixels), above max_pixels {max_pixels}; a frame this "
            "large would take too much memory and time to decode; fix: lower the camera's resolution, or raise "
            "the limit if such frames are intended (param max_pixels of the node and replay; infer --max-pixels)"
        )


def check_max_pixels(max_pixels: Any) -> int:
    """A usable ``max_pixels`` limit (a positive integer)."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels <= 0:
        raise ImageError(f"max_pixels is {max_pixels!r}; expected a positive number of pixels, e.g. {MAX_PIXELS}")
    return int(max_pixels)


_OPENCV_QUIET = False


def _quiet_opencv() -> None:
    """Lower OpenCV's own log level to FATAL, once per process: imdecode logs an ``[ERROR] ... imdecode_`` line
    for every frame it cannot read, unthrottled and outside ROS logging, while the ImageError it turns into
    already carries the reason to the node's throttled warning. (libjpeg/libpng print on their own: see
    ``compressed_size``, which keeps damaged frames away from them.)"""
    global _OPENCV_QUIET
    if _OPENCV_QUIET:
        return
    _OPENCV_QUIET = True
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None and hasattr(logging, "LOG_LEVEL_FATAL"):
        logging.setLogLevel(logging.LOG_LEVEL_FATAL)
    elif hasattr(cv2, "setLogLevel"):  # OpenCV 4.x spelling: 1 = FATAL
        cv2.setLogLevel(1)


Bytes = Union[bytes, memoryview]  # a message's bytes: read in place, never copied whole


class _Damaged(Exception):
    """Why compressed data cannot go to the codec (turned into ImageError by the caller, who knows the field)."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # by color type
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM carry no length


_BIG_U16 = struct.Struct(">H")


def _u16(data: Bytes, at: int, order: str = "big") -> int:
    return int.from_bytes(data[at : at + 2], order)


def _u32(data: Bytes, at: int, order: str = "big") -> int:
    return int.from_bytes(data[at : at + 4], order)


def _png_size(data: Bytes, max_pixels: int, what: str) -> Tuple[int, int]:
    """Width and height from IHDR; then every chunk must be complete with a matching CRC, up to IEND."""
    view = memoryview(data)  # zero-copy slices for the CRCs
    size = len(data)
    pos = len(_PNG_SIGNATURE)
    width = height = 0
    seen_data = False
    while True:
        if pos + 12 > size:
            raise _Damaged(f"truncated: the PNG ends after {size} bytes without its IEND chunk")
        length = _u32(data, pos)
        kind = bytes(view[pos + 4 : pos + 8])
        end = pos + 12 + length
        if end > size:
            raise _Damaged(f"truncated: PNG chunk {kind!r} at byte {pos} needs {length} bytes, {size - pos - 12} left")
        if zlib.crc32(view[pos + 4 : end - 4]) != _u32(data, end - 4):
            raise _Damaged(f"damaged: PNG chunk {kind!r} at byte {pos} fails its CRC check")
        if pos == len(_PNG_SIGNATURE):
            if kind != b"IHDR" or length != 13:
                raise _Damaged(f"damaged: the PNG starts with chunk {kind!r} instead of IHDR")
            width, height = _u32(data, pos + 8), _u32(data, pos + 12)
            depth, color, compression, filtering, interlace = (data[pos + i] for i in range(16, 21))
            if (
                width == 0
                or height == 0
                or depth not in _PNG_DEPTHS.get(color, ())
                or (compression, filtering) != (0, 0)
                or interlace > 1
            ):
                raise _Damaged(
                    f"damaged: the PNG header says {width}x{height}, bit depth {depth}, color type {color}, "
                    f"compression {compression}, filter {filtering}, interlace {interlace}"
                )
            _check_pixels(width, height, max_pixels, what)  # before the CRC pass over the pixel data
        seen_data = seen_data or kind == b"IDAT"
        if kind == b"IEND":
            break
        pos = end
    if not seen_data:
        raise _Damaged("damaged: the PNG has no IDAT (pixel data) chunk")
    return width, height


def _jpeg_size(data: Bytes) -> Tuple[int, int]:
    """Width and height from the first SOF segment; the scan that follows must end with an EOI marker. Read
    through a memoryview with ``struct`` (a frame's header walk: 21 us with numpy indexing, a few us so)."""
    try:
        view = memoryview(data).cast("B")  # bytes, bytearray, array('B'), numpy uint8: ints when indexed
    except TypeError:  # a non-contiguous buffer: a copy, still read as ints
        view = memoryview(bytes(data))
    size = len(view)
    pos = 2
    width = height = 0
    while True:
        if pos >= size:
            raise _Damaged(f"truncated: the JPEG ends after {size} bytes, before its image data")
        if view[pos] != 0xFF:
            raise _Damaged(f"damaged: the JPEG has byte 0x{view[pos]:02x} at {pos} where a marker should be")
        while pos < size and view[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= size:
            raise _Damaged(f"truncated: the JPEG ends after {size} bytes, before its image data")
        marker = view[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker == 0xD9 or (marker == 0xDA and not width):
            raise _Damaged(f"damaged: JPEG marker 0x{marker:02x} at byte {pos - 1} comes before the frame header")
        length = _BIG_U16.unpack_from(view, pos)[0] if pos + 2 <= size else 0
        if pos + 2 > size or pos + length > size or length < 2:
            raise _Damaged(f"truncated: JPEG segment 0x{marker:02x} at byte {pos - 1} runs past the {size} bytes")
        if marker in _JPEG_SOF and not width:
            if length < 8:
                raise _Damaged(f"damaged: the JPEG frame header at byte {pos - 1} is too short")
            height, width = _BIG_U16.unpack_from(view, pos + 3)[0], _BIG_U16.unpack_from(view, pos + 5)[0]
            if width == 0 or height == 0:
                raise _Damaged(f"damaged: the JPEG frame header says {width}x{height}")
        if marker == 0xDA:  # start of scan: entropy-coded data follows, where 0xFF is always escaped
            if not _has_eoi(data, pos + length):
                raise _Damaged(f"truncated: the JPEG has no end-of-image marker in its {size} bytes")
            return width, height
        pos += length


def _has_eoi(data: Bytes, scan: int) -> bool:
    """Whether an EOI marker follows ``scan``: entropy-coded data escapes 0xFF, so any FF D9 after the first
    scan starts is the end of the image. It sits at the end unless junk trails it: the tail is searched first."""
    tail = max(scan, len(data) - 4096)
    if bytes(data[tail:]).find(b"\xff\xd9") >= 0:
        return True
    return tail > scan and bytes(data[scan:]).find(b"\xff\xd9") >= 0


def _webp_size(data: Bytes) -> Tuple[int, int]:
    kind = data[12:16]
    if len(data) < 30 or data[8:12] != b"WEBP":
        raise _Damaged(f"truncated: the WebP header ends after {len(data)} bytes")
    if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return _u16(data, 26, "little") & 0x3FFF, _u16(data, 28, "little") & 0x3FFF
    if kind == b"VP8L" and data[20] == 0x2F:
        bits = _u32(data, 21, "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise _Damaged(f"damaged: WebP chunk {bytes(kind)!r} is not VP8, VP8L or VP8X")


def _bmp_size(data: Bytes) -> Tuple[int, int]:
    if len(data) < 26:
        raise _Damaged(f"truncated: the BMP header ends after {len(data)} bytes")
    if _u32(data, 2, "little") > len(data):  # the file size it declares (0 is allowed: unknown)
        raise _Damaged(f"truncated: the BMP says {_u32(data, 2, 'little')} bytes, {len(data)} are there")
    if _u32(data, 14, "little") == 12:  # OS/2 BITMAPCOREHEADER
        return _u16(data, 18, "little"), _u16(data, 20, "little")
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)
    return abs(width), abs(height)  # negative height: rows stored top-down


def compressed_size(
    data: Bytes, max_pixels: int = MAX_PIXELS, data_name: str = "CompressedImage.data"
) -> Tuple[int, int]:
    """(width, height) of JPEG/PNG/WebP/BMP ``data`` read from its header, refusing a frame above
    ``max_pixels`` and a JPEG/PNG that is truncated or damaged, before any codec runs (``ImageError``)."""
    try:
        if data[:2] == b"\xff\xd8":
            width, height = _jpeg_size(data)
        elif data[:8] == _PNG_SIGNATURE:
            width, height = _png_size(data, max_pixels, data_name)
        elif data[:4] == b"RIFF":
            width, height = _webp_size(data)
        elif data[:2] == b"BM":
            width, height = _bmp_size(data)
        else:
            raise ImageError(
                f"{data_name} ({len(data)} bytes, starting {bytes(data[:4])!r}) is not JPEG, PNG, WebP or BMP data; "
                "expected a jpeg or png image; fix: check the publisher's compression format (or convert the "
                "file to PNG)"
            )
    except _Damaged as exc:
        raise ImageError(
            f"{data_name} ({len(data)} bytes) is {exc}; fix: the frame was cut or corrupted on its way (check the "
            "camera driver, the network/transport, or the bag it was recorded into)"
        ) from None
    if width <= 0 or height <= 0:
        raise ImageError(f"{data_name} ({len(data)} bytes) has a header saying {width}x{height}; expected an image")
    _check_pixels(width, height, max_pixels, data_name)
    return width, height



def _compressed_color(fmt: str) -> str:
    """'bgr' unless the format says the compressed pixels are RGB ('rgb8; jpeg compressed rgb8')."""
    _, _, target = fmt.partition("compressed")
    return "rgb" if target.strip().lower().startswith("rgb") else "bgr"


def decode_compressed(
    fmt: str,
    data: Any,
    pool: Optional[BufferPool] = None,
    max_pixels: int = MAX_PIXELS,
    data_name: str = "CompressedImage.data",
    reduce: Optional[Callable[[int, int], int]] = None,
) -> DecodedImage:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg/png, also webp/bmp; the format string only refines the
    color order). The header is checked first (``compressed_size``); ``data_name`` names the bytes in errors.

    ``reduce(width, height)`` -> 1, 2, 4 or 8: a JPEG is then decoded at that fraction of its size by libjpeg's
    DCT scaling (``IMREAD_REDUCED_COLOR_<n>``: faster, always 3 channels), with ``source_size`` set."""
    if not isinstance(fmt, str):
        raise ImageError(f"CompressedImage.format is {fmt!r}; expected a string such as 'jpeg'")
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise ImageError(
            f"CompressedImage.format is {fmt!r}: a compressedDepth depth image; expected a camera image "
            "(jpeg or png); fix: subscribe to the color image topic"
        )
    buf = _as_uint8_buffer(data, data_name)
    if buf.size == 0:
        raise ImageError(f"{data_name} is empty (0 bytes); expected jpeg or png bytes; fix: check the publisher")
    width, height = compressed_size(memoryview(buf), max_pixels, data_name)
    factor = reduce(width, height) if reduce is not None and buf[0] == 0xFF and buf[1] == 0xD8 else 1
    _quiet_opencv()
    try:
        if factor in REDUCED_FLAGS:
            array = cv2.imdecode(buf, REDUCED_FLAGS[factor])
            if array is not None:
                return DecodedImage(array, _compressed_color(fmt), source_size=(width, height))
        array = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        array = None
        reason = str(exc).strip().splitlines()[-1]
    else:
        reason = "OpenCV could not decode it"
    if array is None:
        raise ImageError(
            f"{data_name} ({buf.size} bytes, format {fmt!r}, starting {bytes(buf[:4])!r}) is not a "
            f"decodable jpeg/png image ({reason}); fix: check the publisher's compression format"
        )
    if array.ndim == 2:
        return DecodedImage(array, "gray16" if array.dtype == np.uint16 else "gray")
    if array.dtype == np.uint16:  # 16-bit color png: keep the high byte, as for mono16 frames
        array = (array >> 8).astype(np.uint8)
    color = _compressed_color(fmt)
    if array.shape[2] == 4:
        out = _out(pool, (*array.shape[:2], 3))
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2BGR, dst=out)
    elif array.shape[2] != 3:
        raise ImageError(f"{data_name} decodes to {array.shape[2]} channels; expected 1, 3 or 4")
    return DecodedImage(array, color)


REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_image_file(path: Union[str, Path], max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """An image file decoded exactly as a CompressedImage frame of the same bytes (one decoder for the node
    and ``infer``): same header checks, same refusals, 16-bit gray kept as ``gray16``; EXIF orientation is
    not applied (cameras do not set it)."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"image file {path} is a directory; expected an image file (jpeg/png/webp/bmp); fix: pass "
                         f"its images, e.g. {path}/*.png")
    if not path.exists():
        raise ImageError(f"image file {path} does not exist; fix: check the path")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(
            f"image file {path} cannot be read ({exc.strerror or exc}); fix: check its permissions"
        ) from None
    if not data:
        raise ImageError(
            f"image file {path} is empty (0 bytes); expected a jpeg/png image; fix: re-save or re-copy it"
        )
    suffix = path.suffix.lower().lstrip(".")
    return decode_compressed(suffix or "image", np.frombuffer(data, np.uint8), None, max_pixels, f"image file {path}")


def decode_image(
    msg: Any,
    pool: Optional[BufferPool] = None,
    max_pixels: int = MAX_PIXELS,
    reduce: Optional[Callable[[int, int], int]] = None,
) -> DecodedImage:
    """Decode an Image (it has ``encoding``) or a CompressedImage (it has ``format``) message; ``reduce`` as for
    ``decode_compressed`` (JPEG only)."""
    if hasattr(msg, "encoding"):
        return decode_raw(
            msg.height, msg.width, msg.encoding, msg.step, msg.data, getattr(msg, "is_bigendian", 0), pool,
            max_pixels,
        )  # fmt: skip
    if hasattr(msg, "format"):
        return decode_compressed(msg.format, msg.data, pool, max_pixels, reduce=reduce)
    raise ImageError(
        f"message of type {type(msg).__name__} has neither 'encoding' (sensor_msgs/Image) nor 'format' "
        "(sensor_msgs/CompressedImage); fix: subscribe to an image topic"
    )


class ImageDecoder:
    """``decode_image`` with a private ``BufferPool``: the per-frame decoder of one image stream.

    A converted frame (YUV, Bayer, alpha) lives in the pool until the next frame of the same size.
    ``max_pixels`` refuses larger frames (raw, or compressed from the header, before decoding) as ImageError.
    """

    def __init__(
        self, max_pixels: int = MAX_PIXELS, depth: int = 1, reduce: Optional[Callable[[int, int], int]] = None
    ) -> None:
        self.pool = BufferPool(depth=depth)  # depth 2: a frame stays valid while the next one is decoded
        self.max_pixels = check_max_pixels(max_pixels)
        self.reduce = reduce

    def __call__(self, msg: Any) -> DecodedImage:
        return decode_image(msg, self.pool, self.max_pixels, self.reduce)


# -------------------------------------------------------------------------------------- arrays -> messages


@dataclass(frozen=True)
class ImageFields:
    """The fields of a ``sensor_msgs/Image`` for an array; ``data`` is a flat memoryview (no ``tobytes``).

    rclpy: ``a = array.array('B'); a.frombytes(fields.data); msg.data = a`` (one memcpy; assigning a
    memoryview directly makes rclpy check every byte in Python).
    rosbags: ``np.frombuffer(fields.data, np.uint8)``.
    The memoryview keeps the array alive and reflects later writes into it.
    """

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


_FIELD_LAYOUTS = {  # encoding: (ndim, channels, dtype)
    "rgb8": (3, 3, np.uint8),
    "bgr8": (3, 3, np.uint8),
    "rgba8": (3, 4, np.uint8),
    "bgra8": (3, 4, np.uint8),
    "mono8": (2, 1, np.uint8),
    "mono16": (2, 1, np.uint16),
}


def image_fields(array: np.ndarray, encoding: str) -> ImageFields:
    """Describe ``array`` as Image fields for publishing (an overlay); copies only a non-contiguous array."""
    layout = _FIELD_LAYOUTS.get(encoding)
    if layout is None:
        raise ImageError(f"image_fields encoding is {encoding!r}; expected one of {list(_FIELD_LAYOUTS)}")
    ndim, channels, dtype = layout
    shape_ok = array.ndim == ndim and (ndim == 2 or array.shape[2] == channels)
    if (
        not shape_ok
        or array.dtype.kind != np.dtype(dtype).kind
        or array.dtype.itemsize != np.dtype(dtype).itemsize
    ):
        want = "HxW" if ndim == 2 else f"HxWx{channels}"
        raise ImageError(
            f"image_fields got an array of shape {array.shape} dtype {array.dtype} "
            f"for encoding {encoding!r}; "
            f"expected {want} {np.dtype(dtype).name}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(
            f"image_fields got an empty array of shape {array.shape}; expected a non-empty image"
        )
    array = np.ascontiguousarray(array)
    order = array.dtype.byteorder
    big = order == ">" or (order == "=" and sys.byteorder == "big")
    height, width = array.shape[:2]
    return ImageFields(
        height=int(height),
        width=int(width),
        encoding=encoding,
        is_bigendian=int(big and array.dtype.itemsize > 1),
        step=int(array.strides[0]),
        data=memoryview(array).cast("B"),
    )


_IMENCODE_EXT = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}
_ENCODING_OF_COLOR = {"rgb": "rgb8", "bgr": "bgr8", "gray": "mono8", "gray16": "mono16"}


def encode_compressed(
    array: np.ndarray, color: str, fmt: str = "jpeg", quality: int = 90
) -> Tuple[str, np.ndarray]:
    """Compress an image as image_transport's compressed plugin does; returns (format string, uint8 bytes).

    Color images are compressed as BGR (format ``"<encoding>; jpeg compressed bgr8"``); mono16 goes to 8 bits
    for jpeg (high byte) and stays 16-bit in png.
    """
    ext = _IMENCODE_EXT.get(str(fmt).lower())
    if ext is None:
        raise ImageError(f"encode_compressed fmt is {fmt!r}; expected 'jpeg' or 'png'")
    image = DecodedImage(array, color)  # validates shape/dtype against color
    name = "jpeg" if ext == ".jpg" else "png"
    pixels = image.array
    if color == "rgb":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
        target = "bgr8"
    elif color == "bgr":
        target = "bgr8"
    elif color == "gray16" and name == "jpeg":
        pixels = (pixels >> 8).astype(np.uint8)
        target = "mono8"
    else:
        target = _ENCODING_OF_COLOR[color]
    if name == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, encoded = cv2.imencode(ext, pixels, params)
    if not ok:
        raise ImageError(f"OpenCV could not encode a {pixels.shape} {pixels.dtype} image as {name}")
    return f"{_ENCODING_OF_COLOR[color]}; {name} compressed {target}", encoded.reshape(-1)
