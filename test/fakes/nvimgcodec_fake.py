"""A double of ``nvidia.nvimgcodec`` (NVIDIA nvImageCodec 0.9's Python API) decoding into a ``FakeGpu``.

Mirrored from the 0.9.0 wheel's own docstrings (``help(nvidia.nvimgcodec.Decoder)`` etc.; the same text as
docs.nvidia.com/cuda/nvimagecodec "Python API") and python/decoder.cpp, image.cpp, code_stream.cpp of
NVIDIA/nvImageCodec v0.8.0:
  * ``Decoder(device_id=-1, max_num_cpu_threads=0, backends=None, options='')``; without a usable GPU the
    real one raises ``RuntimeError("CUDA Runtime failure: '#35' ...")`` (seen with 0.9.0 on a machine
    without a driver) - here when the double is made with ``gpu=None``;
  * ``Decoder.decode(src, *, image=None, params=None, cuda_stream=0)`` -> ``Image`` or None (a stream it
    cannot decode gives None and a logged warning, not an exception); ``image``: an earlier result whose
    buffer is resized and reused; the pixels are ready in ``cuda_stream``'s order (here: the write is queued
    on that FakeGpu stream, so a reader that does not wait sees the old bytes);
  * ``CodeStream(bytes | uint8 array)`` parses the header only: ``codec_name`` ('jpeg', 'png'), ``height``,
    ``width``, ``num_channels``, ``precision``; unparsable data raises ``RuntimeError("Failed to get image
    info")`` (seen with 0.9.0 on garbage, empty and 200-byte-truncated JPEGs);
  * ``Image``: ``shape`` (H, W, C), ``strides``, ``height``, ``width``, ``buffer_kind``, ``cuda_stream``,
    ``__cuda_array_interface__`` (version 3: shape, strides None when rows are not padded, typestr '|u1',
    data (pointer, False), stream: the decode's ``cuda_stream`` or 1), ``cpu()`` -> a host Image that numpy
    reads (``np.asarray``);
  * ``Backend(backend_kind, load_hint=1.0, ...)``, ``BackendKind`` (CPU_ONLY 1, GPU_ONLY 2, HYBRID_CPU_GPU 3,
    HW_GPU_ONLY 4), ``DecodeParams(apply_exif_orientation=True, color_spec=SRGB, allow_any_depth=False)``,
    ``ColorSpec``, ``ImageBufferKind``.
The pixels are ``cv2.imdecode``'s (RGB for SRGB, Y for GRAY), optionally offset by ``pixel_offset`` to
stand in for another decoder's IDCT, with rows padded to ``pitch_align`` bytes (real: 1, no padding).
"""

from __future__ import annotations

import enum
import sys
import types
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from fakes.cuda_fake import FakeGpu


class BackendKind(enum.IntEnum):
    CPU_ONLY = 1
    GPU_ONLY = 2
    HYBRID_CPU_GPU = 3
    HW_GPU_ONLY = 4


class ColorSpec(enum.IntEnum):
    UNKNOWN = 0
    SRGB = 1
    GRAY = 2
    SYCC = 3
    CMYK = 4
    YCCK = 5
    UNSUPPORTED = -1
    UNCHANGED = 6


class ImageBufferKind(enum.IntEnum):
    STRIDED_DEVICE = 1
    STRIDED_HOST = 2


class Backend:
    def __init__(self, backend_kind: BackendKind = BackendKind.GPU_ONLY, load_hint: float = 1.0) -> None:
        if not isinstance(backend_kind, BackendKind):
            raise TypeError(f"Backend(): incompatible backend_kind {backend_kind!r}")
        self.backend_kind = backend_kind
        self.load_hint = load_hint


class DecodeParams:
    def __init__(
        self, apply_exif_orientation: bool = True, color_spec: ColorSpec = ColorSpec.SRGB, allow_any_depth: bool = False
    ) -> None:
        self.apply_exif_orientation = apply_exif_orientation
        self.color_spec = color_spec
        self.allow_any_depth = allow_any_depth


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_header(data: bytes) -> Tuple[int, int, int, int]:
    """(height, width, components, precision) from the first SOFn segment; ValueError when there is none."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF:
            if pos + 10 > len(data):
                raise ValueError("short SOF")
            precision = data[pos + 4]
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return height, width, data[pos + 9], precision
        if marker == 0xDA:
            break
        pos += 2 + length
    raise ValueError("no SOF")


class CodeStream:
    def __init__(self, source: Any) -> None:
        if isinstance(source, np.ndarray):
            if source.dtype != np.uint8:
                raise TypeError("CodeStream(): incompatible function arguments (array of uint8 expected)")
            data = source.tobytes()
        elif isinstance(source, bytes):
            data = source
        else:
            raise TypeError(f"CodeStream(): incompatible function arguments ({type(source).__name__})")
        self._data = data
        try:
            if data[:3] == b"\xff\xd8\xff":
                self.codec_name = "jpeg"
                self.height, self.width, self.num_channels, self.precision = _jpeg_header(data)
            elif data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 26:
                self.codec_name = "png"
                self.width = int.from_bytes(data[16:20], "big")
                self.height = int.from_bytes(data[20:24], "big")
                self.precision = data[24]
                self.num_channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(data[25], 3)
            else:
                raise ValueError("unknown codec")
        except (ValueError, IndexError):
            raise RuntimeError("Failed to get image info") from None
        self.dtype = np.dtype(np.uint16 if self.precision > 8 else np.uint8)


class Image:
    """A decoded image in the fake GPU's memory (``STRIDED_DEVICE``) or on the host (``cpu()``)."""

    def __init__(self, gpu: FakeGpu, shape: Tuple[int, int, int], pitch: int, pointer: int, capacity: int,
                 stream: int) -> None:  # fmt: skip
        self._gpu = gpu
        self.shape = shape
        self.pitch = pitch
        self.pointer = pointer
        self.capacity = capacity
        self.cuda_stream = stream
        self.buffer_kind = ImageBufferKind.STRIDED_DEVICE
        self.dtype = np.dtype(np.uint8)

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def num_channels(self) -> int:
        return self.shape[2]

    @property
    def strides(self) -> Tuple[int, int, int]:
        return (self.pitch, self.shape[2], 1)

    @property
    def __cuda_array_interface__(self) -> Dict[str, Any]:
        if self.pointer == 0:
            raise RuntimeError("Image buffer is not on device")
        padded = self.pitch != self.shape[1] * self.shape[2]
        return {
            "shape": self.shape, "strides": self.strides if padded else None, "typestr": "|u1",
            "data": (self.pointer, False), "version": 3, "stream": self.cuda_stream or 1,
        }  # fmt: skip

    def cpu(self) -> _HostImage:
        if self.cuda_stream:
            self._gpu.stream(self.cuda_stream).synchronize()
        rows = np.frombuffer(self._gpu.view(self.pointer, self.pitch * self.shape[0]), np.uint8)
        pixels = rows.reshape(self.shape[0], self.pitch)[:, : self.shape[1] * self.shape[2]]
        return _HostImage(pixels.reshape(self.shape).copy())

    def _free(self) -> None:
        if self.pointer:
            self._gpu.free(self.pointer)
            self.pointer = 0


class _HostImage:
    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.shape = array.shape
        self.buffer_kind = ImageBufferKind.STRIDED_HOST

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._array if dtype is None else self._array.astype(dtype)


class Decoder:
    """nvImageCodec's Decoder on a FakeGpu; ``decoders`` lists every one made (tests check the options)."""

    def __init__(self, gpu: Optional[FakeGpu], device_id: int = -1, max_num_cpu_threads: int = 0,
                 backends: Optional[Sequence[Backend]] = None, options: str = "", pitch_align: int = 1,
                 pixel_offset: int = 0) -> None:  # fmt: skip
        if gpu is None:
            raise RuntimeError("CUDA Runtime failure: '#35' at nvimgcodec/python/device_utils.h:32")
        if backends is not None and not all(isinstance(b, Backend) for b in backends):
            raise TypeError("Decoder(): incompatible function arguments (backends must be a list of Backend)")
        self.gpu = gpu
        self.device_id = device_id
        self.backends = list(backends or [])
        self.options = options
        self.pitch_align = pitch_align
        self.pixel_offset = pixel_offset
        self.images: List[Image] = []
        self.calls: List[Dict[str, Any]] = []

    def decode(self, src: CodeStream, *, image: Optional[Image] = None, params: Optional[DecodeParams] = None,
               cuda_stream: int = 0) -> Optional[Image]:  # fmt: skip
        if not isinstance(src, CodeStream):
            raise TypeError("decode(): incompatible function arguments (CodeStream expected)")
        params = params or DecodeParams()
        self.calls.append({"image": image, "params": params, "cuda_stream": int(cuda_stream)})
        flag = cv2.IMREAD_GRAYSCALE if params.color_spec == ColorSpec.GRAY else cv2.IMREAD_COLOR
        if not params.apply_exif_orientation:
            flag |= cv2.IMREAD_IGNORE_ORIENTATION
        pixels = cv2.imdecode(np.frombuffer(src._data, np.uint8), flag)
        if pixels is None:
            print("[WARNING] Something went wrong during decoding image #0 it will not be included in output")
            return None
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        else:
            pixels = pixels[:, :, ::-1]  # SRGB: R, G, B
        if self.pixel_offset:
            pixels = np.clip(pixels.astype(np.int16) + self.pixel_offset, 0, 255).astype(np.uint8)
        height, width, channels = pixels.shape
        row = width * channels
        pitch = -(-row // self.pitch_align) * self.pitch_align
        nbytes = pitch * height
        if image is not None and image.pointer and image.capacity >= nbytes:
            target = image
            target.shape, target.pitch, target.cuda_stream = (height, width, channels), pitch, int(cuda_stream)
        else:
            if image is not None:
                image._free()
            pointer = self.gpu.malloc(nbytes)
            target = Image(self.gpu, (height, width, channels), pitch, pointer, nbytes, int(cuda_stream))
            self.images.append(target)
        padded = np.zeros((height, pitch), np.uint8)
        padded[:, :row] = pixels.reshape(height, row)
        data = padded.tobytes()
        pointer = target.pointer

        def write() -> None:
            self.gpu.view(pointer, nbytes)[:] = data

        if cuda_stream:
            self.gpu.stream(int(cuda_stream)).enqueue(write)
        else:
            write()
        return target

    def close(self) -> None:
        for image in self.images:
            image._free()


def make_nvimgcodec(gpu: Optional[FakeGpu], pitch_align: int = 1, pixel_offset: int = 0) -> types.ModuleType:
    """A fake ``nvidia.nvimgcodec`` module decoding into ``gpu`` (None: no usable GPU, Decoder() raises)."""
    module = types.ModuleType("nvidia.nvimgcodec")
    module.__version__ = "0.9.0-fake"  # type: ignore[attr-defined]
    module.decoders = []  # type: ignore[attr-defined]

    def decoder(*args: Any, **kwargs: Any) -> Decoder:
        made = Decoder(gpu, *args, pitch_align=pitch_align, pixel_offset=pixel_offset, **kwargs)
        module.decoders.append(made)  # type: ignore[attr-defined]
        return made

    for name, value in {
        "Decoder": decoder, "CodeStream": CodeStream, "DecodeParams": DecodeParams, "Backend": Backend,
        "BackendKind": BackendKind, "ColorSpec": ColorSpec, "ImageBufferKind": ImageBufferKind, "Image": Image,
    }.items():  # fmt: skip
        setattr(module, name, value)
    return module


def install_nvimgcodec(monkeypatch: Any, gpu: Optional[FakeGpu], **options: Any) -> types.ModuleType:
    """Make ``import nvidia.nvimgcodec`` give the double."""
    module = make_nvimgcodec(gpu, **options)
    package = types.ModuleType("nvidia")
    package.nvimgcodec = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nvidia", package)
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", module)
    return module


def hide_nvimgcodec(monkeypatch: Any) -> None:
    """Make ``import nvidia.nvimgcodec`` fail as it does where the wheel is not installed."""
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)
