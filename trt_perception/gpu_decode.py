"""JPEG frames decoded on the GPU with NVIDIA nvImageCodec, straight into the GPU preprocessing kernel.

On compressed camera streams ``cv2.imdecode`` is most of the CPU's per-frame work (79% at 1280x720 here).
With ``gpu_decode`` the JPEG bytes of a ``sensor_msgs/CompressedImage`` go up as they are, nvImageCodec
(nvJPEG: the GPU's hardware JPEG engine where it has one - A100/H100, Jetson Orin - else CUDA kernels, with
the Huffman stage on the CPU or GPU) decodes them into a device buffer, and ``GpuPreprocessor`` reads that
buffer in place (a ``DeviceImage``) to write the engine input: no decoded frame is made on the CPU.

Everything else stays on the CPU path (``images.decode_image``), chosen per frame: raw ``Image`` messages,
PNG, CMYK / 12-bit / arithmetic-coded JPEG, and any frame nvImageCodec refuses; a frame neither can decode
raises the package's ``ImageError``. Without nvImageCodec or a GPU, ``open_frame_decoder('auto')`` decodes
everything on the CPU and says so once in the log.

Pixels: nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's, so decoded pixels differ from
``cv2.imdecode`` by a few levels (JPEG decoders are allowed to: ITU T.81 / ISO 10918-2 accuracy); the
benchmark and the gpu tests state the measured maximum. EXIF orientation is NOT applied, as on the CPU path
(``IMREAD_UNCHANGED``).

The Python API used (nvImageCodec 0.9, docs.nvidia.com/cuda/nvimagecodec "Python API"):
``nvidia.nvimgcodec.Decoder(device_id, max_num_cpu_threads, backends, options)``,
``Backend(BackendKind.HW_GPU_ONLY | GPU_ONLY | HYBRID_CPU_GPU)``, ``CodeStream(bytes | uint8 array)`` with
``codec_name``, ``num_channels``, ``precision``, ``height``, ``width`` (RuntimeError when unparsable),
``Decoder.decode(code_stream, *, image=None, params=None, cuda_stream=0)`` -> ``Image`` or None (``image``:
an earlier result whose device buffer is reused), ``DecodeParams(apply_exif_orientation, color_spec)``,
``ColorSpec.SRGB | GRAY``; ``Image.__cuda_array_interface__`` (shape HxWxC, strides None or padded rows,
data pointer, stream), ``Image.cpu()``. The package is imported lazily, inside this module only.
"""

from __future__ import annotations

import importlib
import logging
import threading
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Union

import numpy as np

from trt_perception.backends.cuda import CudaApi, select_cuda_api
from trt_perception.errors import BackendError, ConfigError, ImageError
from trt_perception.gpu_preprocess import DeviceImage
from trt_perception.images import (
    MAX_PIXELS,
    DecodedImage,
    ImageDecoder,
    _as_uint8_buffer,
    _compressed_color,
    compressed_size,
    decode_compressed,
)

LOG = logging.getLogger("trt_perception")
GPU_DECODE_MODES = ("auto", "on", "off")
# Backend names (params) -> nvImageCodec BackendKind members, in the order nvImageCodec should try them.
BACKEND_KINDS = {"hardware": "HW_GPU_ONLY", "gpu": "GPU_ONLY", "hybrid": "HYBRID_CPU_GPU"}
DEFAULT_BACKENDS = ("hardware", "gpu", "hybrid")
INSTALL_HINT = (
    "pip install nvidia-nvimgcodec-cu13 nvidia-nvjpeg (CUDA 13; nvidia-nvimgcodec-cu12 nvidia-nvjpeg-cu12 for "
    "CUDA 12; nvidia-nvimgcodec-tegra-cu12 on a Jetson with JetPack 6)"
)
_LOGGED: Set[str] = set()
_LOGGED_LOCK = threading.Lock()


def log_once(message: str, level: int = logging.INFO) -> bool:
    """Log ``message`` the first time this process sees it (the fallback is said once, not per frame/camera)."""
    with _LOGGED_LOCK:
        if message in _LOGGED:
            return False
        _LOGGED.add(message)
    LOG.log(level, message)
    return True


def import_nvimgcodec() -> ModuleType:
    """``nvidia.nvimgcodec``, or a BackendError naming the wheel to install."""
    try:
        return importlib.import_module("nvidia.nvimgcodec")
    except ImportError as exc:
        raise BackendError(f"GPU JPEG decoding needs NVIDIA nvImageCodec ({exc}); fix: {INSTALL_HINT}") from exc


def is_jpeg(buffer: np.ndarray) -> bool:
    """SOI marker + the next marker's 0xFF: what every JPEG (JFIF, EXIF, raw) starts with."""
    return buffer.size >= 4 and buffer[0] == 0xFF and buffer[1] == 0xD8 and buffer[2] == 0xFF


class GpuJpegDecoder:
    """JPEG bytes -> ``DeviceImage`` in GPU memory, decoded by nvImageCodec.

    ``cuda``: a ``CudaApi`` to share (the TensorRT backend's) or a name for ``select_cuda_api``; the decoder
    runs in the device's primary context, the one TensorRT and the preprocessing kernel use. It decodes on a
    stream of its own and waits for it after each decode, so any stream may read the frame (several heads on
    several engines); the wait costs ~0.1 ms a 1080p frame against decoding on the kernel's stream, but
    nvImageCodec allocates and frees its buffers stream-ordered (cudaMallocAsync/cudaFreeAsync on the decode
    stream), so that stream must outlive every decoded Image: a consumer's stream (destroyed with its
    engine) cannot promise that, ours lives until the decoder and its last frame are gone (``_StreamLease``).
    ``backends``: nvImageCodec backends to allow, from ``BACKEND_KINDS``, tried in that order (the hardware
    engine first). ``buffers``: decoded frames kept in a ring of reused device buffers: a ``DeviceImage``
    stays valid until ``buffers`` more frames were decoded (the next frame decodes while this one is being
    read). ``module``: the nvimgcodec module (tests pass a double).
    """

    def __init__(
        self,
        cuda: Union[str, CudaApi] = "auto",
        device: int = 0,
        backends: Sequence[str] = DEFAULT_BACKENDS,
        buffers: int = 2,
        module: Optional[ModuleType] = None,
    ) -> None:
        unknown = [b for b in backends if b not in BACKEND_KINDS]
        if unknown or not backends:
            raise ConfigError(
                f"gpu_decode backends are {list(backends)}; expected a non-empty list from {list(BACKEND_KINDS)}"
            )
        if buffers < 1:
            raise ConfigError(f"gpu_decode buffers is {buffers}; expected at least 1")
        self.nvimgcodec = module if module is not None else import_nvimgcodec()
        self.backends = tuple(backends)
        self.device = int(device)
        self.cuda: Optional[CudaApi] = None
        self._lease: Optional[_StreamLease] = None
        self._decoder: Any = None
        self.stream: Any = None
        self._lock = threading.Lock()
        self._ring: List[Any] = [None] * int(buffers)
        self._next = 0
        self._reuse = True
        self.decoded = 0
        self.refused: Dict[str, int] = {}
        self.last_refusal = ""
        owns_cuda = not isinstance(cuda, CudaApi)
        try:
            self.cuda = select_cuda_api(cuda, device)
            with self.cuda.activated():
                self.device_name = self.cuda.device_name()
                self.stream = self.cuda.stream_create()
            self._lease = _StreamLease(self.cuda, self.stream, owns_cuda)
            owns_cuda = False  # the lease closes it now
            with self.cuda.activated():
                self._handle = int(self.cuda.stream_handle(self.stream))
                nv = self.nvimgcodec
                try:
                    kinds = [nv.Backend(getattr(nv.BackendKind, BACKEND_KINDS[b])) for b in self.backends]
                    self._decoder = nv.Decoder(device_id=self.device, backends=kinds)
                    self._params = {
                        3: nv.DecodeParams(apply_exif_orientation=False, color_spec=nv.ColorSpec.SRGB),
                        1: nv.DecodeParams(apply_exif_orientation=False, color_spec=nv.ColorSpec.GRAY),
                    }
                except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
                    raise BackendError(
                        f"nvImageCodec could not open a JPEG decoder on GPU {self.device} ({exc}); fix: check the "
                        f"GPU and driver (nvidia-smi), the nvImageCodec wheel's CUDA major, and nvJPEG ({INSTALL_HINT})"
                    ) from exc
        except BaseException:
            self.close()
            if owns_cuda and self.cuda is not None:
                self.cuda.close()
            raise

    @property
    def version(self) -> str:
        return str(getattr(self.nvimgcodec, "__version__", "?"))

    def describe(self) -> str:
        return f"nvImageCodec {self.version} on {self.device_name} ({', '.join(self.backends)})"

    def decode(self, data: Any, color: str = "bgr") -> Optional[DeviceImage]:
        """One JPEG -> a ``DeviceImage``; None when the GPU does not take this frame (not a JPEG, CMYK,
        12-bit, a stream nvImageCodec cannot parse or decode): decode it on the CPU instead.

        ``color``: what the CPU path would call the frame's channel order (``images._compressed_color`` of the
        message's format): the same pixels come out labelled for the preprocessing kernel.
        """
        buffer = _as_uint8_buffer(data, "CompressedImage.data")
        if not is_jpeg(buffer):
            return self._refuse("not a JPEG (no SOI marker)")
        if self._decoder is None:
            raise BackendError("GpuJpegDecoder.decode after close(); fix: decode with an open decoder")
        nv = self.nvimgcodec
        try:
            code_stream = nv.CodeStream(buffer)
            codec, channels = str(code_stream.codec_name), int(code_stream.num_channels)
            precision = int(code_stream.precision)
        except (RuntimeError, ValueError, TypeError) as exc:
            return self._refuse(f"nvImageCodec could not parse it ({exc})")
        if codec != "jpeg" or channels not in (1, 3) or precision not in (0, 8):
            return self._refuse(f"{codec} with {channels} channels of {precision} bits (GPU: 8-bit gray or color)")
        with self._lock, self.cuda.activated():  # type: ignore[union-attr]
            slot = self._next
            try:
                image = self._decode(code_stream, self._ring[slot], self._params[channels])
            except RuntimeError as exc:
                return self._refuse(f"nvImageCodec failed to decode it ({exc})")
            if image is None:
                return self._refuse("nvImageCodec could not decode it")
            self.cuda.stream_synchronize(self.stream)  # type: ignore[union-attr]  # readable from any stream
            self._ring[slot] = image
            self._next = (slot + 1) % len(self._ring)
            self.decoded += 1
        if channels == 1:
            label = "gray"
        else:  # nvImageCodec gives R, G, B; the CPU path's array is B, G, R under the label ``color``
            label = "rgb" if color == "bgr" else "bgr"
        owner = _Decoded(image, code_stream, self._lease)
        try:
            frame = DeviceImage.from_cuda_array(image, label, downloader=lambda: _download(owner.image, label))
        except ImageError as exc:  # not a device buffer of the expected layout: leave this frame to the CPU
            return self._refuse(f"nvImageCodec returned an unexpected image ({exc})")
        return DeviceImage(frame.pointer, frame.height, frame.width, frame.pitch, label, None, owner=owner,
                           downloader=frame.downloader)  # fmt: skip

    def _decode(self, code_stream: Any, reuse: Any, params: Any) -> Any:
        if self._reuse and reuse is not None:
            try:
                return self._decoder.decode(code_stream, image=reuse, params=params, cuda_stream=self._handle)
            except TypeError:  # an nvImageCodec without Image reuse (< 0.7): a new buffer per frame
                self._reuse = False
        return self._decoder.decode(code_stream, params=params, cuda_stream=self._handle)

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self.last_refusal = reason
        return None

    def close(self) -> None:
        """Drop the decoded buffers and the decoder; the stream (and an owned CUDA adapter) goes with the last
        DeviceImage still held (at once when none is)."""
        with self._lock:
            self._ring = [None] * len(self._ring)
            self._decoder = None
            self.cuda = None
            self.stream = None
            self._lease = None

    def __del__(self) -> None:  # the ring's buffers before the stream lease, also when never closed
        if getattr(self, "_lock", None) is not None:
            self.close()

    def __enter__(self) -> GpuJpegDecoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _StreamLease:
    """The decode stream's lifetime: destroyed (and an owned CUDA adapter closed) when the decoder and every
    decoded frame referencing it are gone, never before an nvImageCodec buffer freed on it."""

    def __init__(self, cuda: CudaApi, stream: Any, owns_cuda: bool) -> None:
        self.cuda, self.stream, self.owns_cuda = cuda, stream, owns_cuda

    def __del__(self) -> None:
        try:
            with self.cuda.activated():
                self.cuda.stream_synchronize(self.stream)
                self.cuda.stream_destroy(self.stream)
        except Exception:  # at interpreter exit CUDA may be gone already: nothing to release then
            pass
        finally:
            if self.owns_cuda:
                self.cuda.close()


class _Decoded:
    """Owner of one decoded frame: drops the nvImageCodec Image (a stream-ordered free) BEFORE the stream lease."""

    __slots__ = ("code_stream", "image", "lease")

    def __init__(self, image: Any, code_stream: Any, lease: Optional[_StreamLease]) -> None:
        self.image, self.code_stream, self.lease = image, code_stream, lease

    def __del__(self) -> None:
        self.image = None
        self.code_stream = None
        self.lease = None


def _download(image: Any, color: str) -> DecodedImage:
    """A host copy of a decoded nvImageCodec Image (``Image.cpu()``), as a DecodedImage."""
    array = np.asarray(image.cpu())
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return DecodedImage(np.ascontiguousarray(array), color)


class FrameDecoder:
    """Image message -> ``DecodedImage`` (CPU) or ``DeviceImage`` (JPEG decoded on the GPU).

    What ``FrameProcessor`` decodes with when ``gpu_decode`` is on: CompressedImage JPEGs go to ``gpu``
    (a ``GpuJpegDecoder``); raw images, PNG and any JPEG the GPU refuses go to the CPU decoder (the first
    refusal of each kind is logged once). ``gpu`` None: CPU only, exactly ``images.ImageDecoder``.
    """

    def __init__(
        self,
        gpu: Optional[GpuJpegDecoder] = None,
        max_pixels: int = MAX_PIXELS,
        reduce: Optional[Callable[[int, int], int]] = None,
    ) -> None:
        self.gpu = gpu
        # depth 2: a converted frame stays valid while the next one is decoded (FrameProcessor's overlap), as
        # the GPU decoder's ring of 2 device buffers does
        self.cpu = ImageDecoder(max_pixels, depth=2, reduce=reduce)
        self.gpu_frames = 0
        self.cpu_frames = 0

    @property
    def on_gpu(self) -> bool:
        return self.gpu is not None

    def describe(self) -> str:
        """Where JPEG frames are decoded, for the node's start-up line."""
        if self.gpu is not None:
            return f"the GPU ({self.gpu.describe()})"
        return "the CPU (OpenCV" + (", reduced size when it applies)" if self.cpu.reduce is not None else ")")

    def __call__(self, msg: Any) -> Union[DecodedImage, DeviceImage]:
        gpu = self.gpu
        if gpu is not None and not hasattr(msg, "encoding") and hasattr(msg, "format"):
            fmt = msg.format
            if isinstance(fmt, str) and "compresseddepth" not in fmt.lower().replace(" ", ""):
                buffer = _as_uint8_buffer(msg.data, "CompressedImage.data")
                if buffer.size == 0:
                    raise ImageError("CompressedImage.data is empty (0 bytes); expected jpeg or png bytes; fix: "
                                     "check the publisher")
                # max_pixels and truncation, from the header, before any decoder allocates (as on the CPU path)
                compressed_size(memoryview(buffer), self.cpu.max_pixels)
                frame = gpu.decode(buffer, _compressed_color(fmt))
                if frame is not None:
                    self.gpu_frames += 1
                    return frame
                self.cpu_frames += 1
                return self._cpu_fallback(msg, gpu.last_refusal)
        self.cpu_frames += 1
        return self.cpu(msg)

    def _cpu_fallback(self, msg: Any, reason: str) -> DecodedImage:
        try:
            image = decode_compressed(msg.format, msg.data, self.cpu.pool, self.cpu.max_pixels, reduce=self.cpu.reduce)
        except ImageError as exc:
            raise ImageError(f"{exc} (the GPU decoder refused it too: {reason})") from None
        log_once(f"gpu_decode: a CompressedImage ({msg.format!r}) was decoded on the CPU: {reason}")
        return image

    def keep_frames(self, count: int) -> int:
        """Let up to ``count`` decoded frames live at once (a converted CPU frame keeps its buffer that long);
        returns how many may: the GPU decoder's ring holds 2."""
        if self.gpu is not None:
            return 2
        self.cpu.pool.depth = max(self.cpu.pool.depth, int(count))
        return int(count)

    def close(self) -> None:
        gpu, self.gpu = self.gpu, None
        if gpu is not None:
            gpu.close()


def host_image(image: Union[DecodedImage, DeviceImage]) -> DecodedImage:
    """The frame on the host: a DecodedImage as it is, a DeviceImage copied down (CPU heads, overlays, reports)."""
    return image.download() if isinstance(image, DeviceImage) else image


def open_frame_decoder(
    mode: str = "auto",
    cuda: Union[str, CudaApi] = "auto",
    device: int = 0,
    backends: Sequence[str] = DEFAULT_BACKENDS,
    module: Optional[ModuleType] = None,
    max_pixels: int = MAX_PIXELS,
    reduce: Optional[Callable[[int, int], int]] = None,
) -> FrameDecoder:
    """The frame decoder for ``gpu_decode`` = ``mode``: 'off' CPU; 'on' the GPU or an error naming the fix;
    'auto' the GPU when nvImageCodec and a GPU are there, else the CPU. The choice is logged once.
    ``max_pixels`` and ``reduce`` are the CPU decoder's (``images.ImageDecoder``); max_pixels guards both."""
    if mode not in GPU_DECODE_MODES:
        raise ConfigError(f"gpu_decode is {mode!r}; expected one of {list(GPU_DECODE_MODES)}")
    if mode == "off":
        return FrameDecoder(None, max_pixels, reduce)
    try:
        gpu = GpuJpegDecoder(cuda=cuda, device=device, backends=backends, module=module)
    except BackendError as exc:
        if mode == "on":
            raise ConfigError(
                f"gpu_decode is 'on' but JPEG frames cannot be decoded on the GPU: {exc}; "
                "or set gpu_decode: auto (CPU decoding when the GPU cannot)"
            ) from None
        log_once(f"gpu_decode: JPEG frames are decoded on the CPU (OpenCV): {exc}")
        return FrameDecoder(None, max_pixels, reduce)
    log_once(f"gpu_decode: JPEG frames are decoded on the GPU with {gpu.describe()}")
    return FrameDecoder(gpu, max_pixels, reduce)


__all__ = [
    "BACKEND_KINDS",
    "DEFAULT_BACKENDS",
    "GPU_DECODE_MODES",
    "DeviceImage",
    "FrameDecoder",
    "GpuJpegDecoder",
    "host_image",
    "import_nvimgcodec",
    "is_jpeg",
    "log_once",
    "open_frame_decoder",
]
