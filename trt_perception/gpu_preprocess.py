"""Optional CUDA preprocessing for the TensorRT backend: the uint8 frame goes up once, the tensor is made there.

The CPU path (``preprocess.Preprocessor``) writes a float tensor on the host that the backend then copies to
the device. Here the CPU only copies the uint8 frame into a page-locked staging buffer; one async copy takes
it to the device and one kernel does crop, resize, color order, scale/offset, layout (NCHW/NHWC), dtype
(float32/float16/uint8) and the letterbox border, writing straight into a device buffer (the engine's input
binding when the backend passes its address). The CPU never touches a float frame.

Frames already on the GPU (a JPEG decoded by ``gpu_decode`` with nvImageCodec, a cupy/torch array) come as
a ``DeviceImage``: the kernel reads them in place through their pitch, with no upload and no host copy; the
same tables, arguments and results as for a host frame with those pixels.

Same numbers as the CPU path: the geometry (crop rows, letterbox placement, the returned ``ImageTransform``)
comes from ``preprocess``, and the resize reproduces OpenCV's ``INTER_LINEAR`` for uint8 bit for bit: the
pixel-centre convention ``src = (dst + 0.5) * scale - 0.5``, OpenCV's 11-bit fixed-point weights (clamped
at the left/right edge, rows clamped at the top/bottom edge) and its rounding, from tables built on the host
(``linear_tables``). Gray models get OpenCV's fixed-point BGR->gray weights. So the uint8 picture the kernel
scales is the one ``cv2.resize`` makes, and float outputs match the CPU path to float rounding.

Kernel launcher, one kernel source (``KERNEL_SOURCE``) for both:
  * cuda-python (``cuda.bindings``): NVRTC compiles the string at run time, the driver API launches it. NVRTC
    ships with every CUDA >= 11.2 including JetPack 5/6 and needs no compiler on the machine. Default.
  * pycuda: ``SourceModule`` compiles the same string with nvcc (JetPack has nvcc; pycuda is what Jetson
    users install). Chosen when the CUDA adapter (``backends.cuda``) is the pycuda one, so streams and
    contexts are one library's throughout.
cupy was not used: JetPack ships no cupy, and building it on a Nano takes hours.

Imports of CUDA packages happen lazily inside this module (and ``backends.cuda``), never at import time.
"""

from __future__ import annotations

import ctypes
import importlib
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception.backends.cuda import CudaApi, PyCudaApi, select_cuda_api
from trt_perception.errors import BackendError, ImageError, SpecError
from trt_perception.images import COLORS, DecodedImage
from trt_perception.preprocess import ImageTransform, _channel_map, _geometry, _pad_values, _resolve_dtype
from trt_perception.spec import InputSpec

COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
COEF_ONE = 1 << COEF_BITS
BLOCK = (32, 8, 1)
OUT_TYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1, np.dtype(np.uint8): 2}
UPLOADS = ("auto", "pinned", "direct")
GATHER_FRACTION = 0.75  # upload only the rows the resize reads when they are at most this share of the frame
CHUNK_BYTES = 1 << 21  # staged uploads go in chunks this big, so the bus copies one while the CPU fills the next
# Stream values a device frame may carry that need no wait here: None (written), 0 and 1 (the legacy default
# stream: the streams made by ``CudaApi.stream_create`` are blocking ones, so they wait for it on their own).
READY_STREAMS = (None, 0, 1)
DEVICE_PACKS = 8  # packed kernel arguments cached per device frame address (a decoder's ring of buffers)

# One source for every launcher. Tables are int4 per output column / row: (index0, index1, weight0, weight1);
# uint8 frames use OpenCV's 11-bit fixed-point weights, uint16 frames float weights stored as their bits.
KERNEL_SOURCE = r"""
typedef unsigned char tp_u8;
typedef unsigned short tp_u16;

__device__ __forceinline__ void tp_store(void* dst, long long index, float value, int out_type)
{
    if (out_type == 0) {
        ((float*)dst)[index] = value;
    } else if (out_type == 1) {
        tp_u16 half_bits;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(half_bits) : "f"(value));
        ((tp_u16*)dst)[index] = half_bits;
    } else {
        ((tp_u8*)dst)[index] = (tp_u8)value;
    }
}

// uint8 frames: OpenCV's fixed-point INTER_LINEAR (HResizeLinear + VResizeLinear<uchar>), bit-exact.
__device__ __forceinline__ int tp_sample_u8(const tp_u8* row0, const tp_u8* row1, int4 xt, int4 yt, int cn, int k)
{
    int h0 = row0[xt.x * cn + k] * xt.z + row0[xt.y * cn + k] * xt.w;
    int h1 = row1[xt.x * cn + k] * xt.z + row1[xt.y * cn + k] * xt.w;
    int v = (((yt.z * (h0 >> 4)) >> 16) + ((yt.w * (h1 >> 4)) >> 16) + 2) >> 2;
    return min(max(v, 0), 255);
}

// uint16 frames (mono16): OpenCV's float INTER_LINEAR, rounded to 16 bits, then the high byte.
__device__ __forceinline__ int tp_sample_u16(const tp_u8* row0, const tp_u8* row1, int4 xt, int4 yt, int cn, int k)
{
    const tp_u16* r0 = (const tp_u16*)row0;
    const tp_u16* r1 = (const tp_u16*)row1;
    float a0 = __int_as_float(xt.z), a1 = __int_as_float(xt.w);
    float b0 = __int_as_float(yt.z), b1 = __int_as_float(yt.w);
    float h0 = __fadd_rn(__fmul_rn((float)r0[xt.x * cn + k], a0), __fmul_rn((float)r0[xt.y * cn + k], a1));
    float h1 = __fadd_rn(__fmul_rn((float)r1[xt.x * cn + k], a0), __fmul_rn((float)r1[xt.y * cn + k], a1));
    int v = __float2int_rn(__fadd_rn(__fmul_rn(h0, b0), __fmul_rn(h1, b1)));
    return min(max(v, 0), 65535) >> 8;
}

template <bool WIDE>
__device__ __forceinline__ void tp_preprocess(
    const tp_u8* __restrict__ src, int src_pitch, int src_channels,
    const int4* __restrict__ xtab, const int4* __restrict__ ytab,
    int content_w, int content_h, int pad_x, int pad_y,
    void* __restrict__ dst, int dst_w, int dst_h, int out_channels, int nchw, int out_type,
    int m0, int m1, int m2, int to_gray,
    float s0, float s1, float s2, float o0, float o1, float o2, float p0, float p1, float p2)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) return;
    float v0 = p0, v1 = p1, v2 = p2;
    int cx = x - pad_x, cy = y - pad_y;
    if (cx >= 0 && cy >= 0 && cx < content_w && cy < content_h) {
        int4 xt = xtab[cx];
        int4 yt = ytab[cy];
        const tp_u8* row0 = src + (long long)yt.x * src_pitch;
        const tp_u8* row1 = src + (long long)yt.y * src_pitch;
        int px[3];
        for (int k = 0; k < src_channels; ++k) {
            px[k] = WIDE ? tp_sample_u16(row0, row1, xt, yt, src_channels, k)
                         : tp_sample_u8(row0, row1, xt, yt, src_channels, k);
        }
        int q0, q1, q2;
        if (to_gray) {  // OpenCV RGB2Gray<uchar>: 15-bit weights, (R*9798 + G*19235 + B*3735 + 2^14) >> 15
            q0 = (px[m0] * 9798 + px[m1] * 19235 + px[m2] * 3735 + 16384) >> 15;
            q1 = q0;
            q2 = q0;
        } else {
            q0 = px[m0];
            q1 = px[m1];
            q2 = px[m2];
        }
        if (out_type == 2) {
            v0 = (float)q0; v1 = (float)q1; v2 = (float)q2;
        } else {  // y = x * scale + offset, rounded like numpy's float32 (no fused multiply-add)
            v0 = __fadd_rn(__fmul_rn((float)q0, s0), o0);
            v1 = __fadd_rn(__fmul_rn((float)q1, s1), o1);
            v2 = __fadd_rn(__fmul_rn((float)q2, s2), o2);
        }
    }
    long long plane = (long long)dst_w * dst_h;
    long long pixel = (long long)y * dst_w + x;
    if (nchw) {
        tp_store(dst, pixel, v0, out_type);
        if (out_channels > 1) {
            tp_store(dst, plane + pixel, v1, out_type);
            tp_store(dst, 2 * plane + pixel, v2, out_type);
        }
    } else {
        long long base = pixel * out_channels;
        tp_store(dst, base, v0, out_type);
        if (out_channels > 1) {
            tp_store(dst, base + 1, v1, out_type);
            tp_store(dst, base + 2, v2, out_type);
        }
    }
}

#define TP_ARGS \
    const tp_u8* __restrict__ src, int src_pitch, int src_channels, \
    const int4* __restrict__ xtab, const int4* __restrict__ ytab, \
    int content_w, int content_h, int pad_x, int pad_y, \
    void* __restrict__ dst, int dst_w, int dst_h, int out_channels, int nchw, int out_type, \
    int m0, int m1, int m2, int to_gray, \
    float s0, float s1, float s2, float o0, float o1, float o2, float p0, float p1, float p2
#define TP_PASS \
    src, src_pitch, src_channels, xtab, ytab, content_w, content_h, pad_x, pad_y, dst, dst_w, dst_h, \
    out_channels, nchw, out_type, m0, m1, m2, to_gray, s0, s1, s2, o0, o1, o2, p0, p1, p2

extern "C" __global__ void tp_preprocess_u8(TP_ARGS) { tp_preprocess<false>(TP_PASS); }
extern "C" __global__ void tp_preprocess_u16(TP_ARGS) { tp_preprocess<true>(TP_PASS); }
"""
KERNEL_NAMES = ("tp_preprocess_u8", "tp_preprocess_u16")
# Argument kinds in kernel order: 'p' device pointer, 'i' int, 'f' float.
ARG_KINDS = "pii" + "pp" + "iiii" + "piiiii" + "iiii" + "fffffffff"
_COMPILED: Dict[Tuple[int, int], bytes] = {}  # (compute capability) -> cubin/PTX from NVRTC
_COMPILED_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------------------ tables


def _scale(src: int, dst: int) -> float:
    """OpenCV's source pixels per destination pixel: 1 / (dst / src), in double, as cv::resize computes it."""
    return 1.0 / (dst / src)


def linear_tables(src: int, dst: int, axis: str, wide: bool = False) -> np.ndarray:
    """(dst, 4) int32 rows (index0, index1, weight0, weight1) reproducing OpenCV's INTER_LINEAR.

    ``axis`` 'x' clamps index AND weight at the edges (OpenCV's column tables); 'y' clamps only the row index
    (OpenCV fetches clipped rows but keeps the weights). ``wide`` (uint16 frames): float32 weights stored as
    their int32 bit patterns; else 11-bit fixed point, each weight rounded on its own as OpenCV does.
    """
    if src < 1 or dst < 1:
        raise ImageError(f"resize from {src} to {dst} pixels; expected both sizes >= 1")
    if axis not in ("x", "y"):
        raise ValueError(f"axis is {axis!r}; expected 'x' or 'y'")
    position = ((np.arange(dst, dtype=np.float64) + 0.5) * _scale(src, dst) - 0.5).astype(np.float32)
    index = np.floor(position).astype(np.int64)
    frac = (position - index.astype(np.float32)).astype(np.float32)
    if axis == "x":
        low = index < 0
        frac[low], index[low] = 0.0, 0
        high = index >= src - 1
        frac[high], index[high] = 0.0, src - 1
    table = np.empty((dst, 4), np.int32)
    table[:, 0] = np.clip(index, 0, src - 1)
    table[:, 1] = np.clip(index + 1, 0, src - 1)
    w0 = (np.float32(1.0) - frac).astype(np.float32)
    if wide:
        table[:, 2] = w0.view(np.int32)
        table[:, 3] = frac.view(np.int32)
    else:
        table[:, 2] = np.rint(w0 * np.float32(COEF_ONE)).astype(np.int32)
        table[:, 3] = np.rint(frac * np.float32(COEF_ONE)).astype(np.int32)
    return table


def nearest_tables(src: int, dst: int, wide: bool = False) -> np.ndarray:
    """(dst, 4) int32 tables for OpenCV's INTER_NEAREST (``floor(dst * scale)``), as one-tap linear rows."""
    if src < 1 or dst < 1:
        raise ImageError(f"resize from {src} to {dst} pixels; expected both sizes >= 1")
    index = np.minimum(np.floor(np.arange(dst, dtype=np.float64) * _scale(src, dst)).astype(np.int64), src - 1)
    table = np.empty((dst, 4), np.int32)
    table[:, 0] = index
    table[:, 1] = index
    if wide:
        table[:, 2] = np.float32(1.0).view(np.int32)
        table[:, 3] = np.float32(0.0).view(np.int32)
    else:
        table[:, 2] = COEF_ONE
        table[:, 3] = 0
    return table


def resize_tables(
    interpolation: str, src_w: int, src_h: int, dst_w: int, dst_h: int, wide: bool = False
) -> Tuple[np.ndarray, np.ndarray]:
    """(column table, row table) for the spec's interpolation; 'area' has no GPU form."""
    if interpolation == "linear":
        return linear_tables(src_w, dst_w, "x", wide), linear_tables(src_h, dst_h, "y", wide)
    if interpolation == "nearest":
        return nearest_tables(src_w, dst_w, wide), nearest_tables(src_h, dst_h, wide)
    raise SpecError(
        f"input.interpolation is {interpolation!r}; the GPU preprocessor supports 'linear' and 'nearest'; "
        "fix: set input.interpolation: linear in the spec, or use the CPU preprocessor (gpu_preprocess off)"
    )


# ------------------------------------------------------------------------------------------ device frames


@dataclass(frozen=True)
class DeviceImage:
    """A decoded frame in device memory, read in place by ``GpuPreprocessor`` (no upload, no host copy).

    ``pointer``: the device address of row 0; ``pitch``: bytes from one row to the next (>= width x channels
    x itemsize: decoders pad rows); ``color`` as for ``DecodedImage`` ('rgb'/'bgr' HxWx3 uint8, 'gray' uint8,
    'gray16' native uint16). ``stream``: the raw ``cudaStream_t`` the pixels are still being written on, or
    None when they are written already; a preprocessor accepts None, 0/1 (legacy default stream) or its own
    stream (the work is ordered on it). ``owner`` keeps the memory alive (an nvImageCodec Image, a cupy
    array); ``download`` is how a host copy is made for the heads and overlays that need one.
    """

    pointer: int
    height: int
    width: int
    pitch: int
    color: str
    stream: Optional[int] = None
    owner: Any = field(default=None, compare=False, repr=False)
    downloader: Optional[Callable[[], DecodedImage]] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ImageError(f"DeviceImage color is {self.color!r}; expected one of {list(COLORS)}")
        for name in ("pointer", "height", "width", "pitch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ImageError(
                    f"DeviceImage.{name} is {value!r}; expected a positive integer"
                    + ("; fix: pass the frame's device address" if name == "pointer" else "")
                )
        if self.pitch < self.row_bytes:
            raise ImageError(
                f"DeviceImage.pitch is {self.pitch} bytes for a {self.width} pixel wide {self.color!r} frame; "
                f"expected at least {self.row_bytes} (width x {self.channels} channels x {self.itemsize} bytes)"
            )

    @property
    def channels(self) -> int:
        return 3 if self.color in ("rgb", "bgr") else 1

    @property
    def itemsize(self) -> int:
        return 2 if self.color == "gray16" else 1

    @property
    def row_bytes(self) -> int:
        return self.width * self.channels * self.itemsize

    def download(self) -> DecodedImage:
        """A host copy of the frame (CPU heads, overlays, reports); a device-to-host copy each call."""
        if self.downloader is None:
            raise ImageError(
                "this DeviceImage has no host copy (made without a downloader); fix: pass downloader= "
                "or preprocess it on the GPU only"
            )
        return self.downloader()

    @classmethod
    def from_cuda_array(cls, array: Any, color: str, downloader: Optional[Callable[[], DecodedImage]] = None
                        ) -> DeviceImage:  # fmt: skip
        """Describe anything with ``__cuda_array_interface__`` (cupy, torch, numba, nvImageCodec) as a frame.

        Shapes HxW or HxWxC (C 1 or 3) of uint8 (uint16 for 'gray16'); rows may be padded, pixels may not. The
        interface's ``stream`` (version 3) is kept, so a frame still being written on a foreign stream is
        refused by the preprocessor instead of read early.
        """
        try:
            interface = dict(array.__cuda_array_interface__)
        except (AttributeError, RuntimeError, TypeError) as exc:
            raise ImageError(
                f"{type(array).__name__} has no usable __cuda_array_interface__ ({exc}); expected a device "
                "array (cupy, torch.cuda, numba, nvImageCodec Image)"
            ) from None
        shape = tuple(int(d) for d in interface.get("shape", ()))
        typestr = str(interface.get("typestr", ""))
        itemsize = 2 if color == "gray16" else 1
        channels = shape[2] if len(shape) == 3 else 1
        expected_type = ("<u2", "=u2") if itemsize == 2 else ("|u1", "<u1", "=u1")
        want_channels = 3 if color in ("rgb", "bgr") else 1
        if len(shape) not in (2, 3) or channels != want_channels or typestr not in expected_type:
            raise ImageError(
                f"device array of shape {shape} typestr {typestr!r} for color {color!r}; expected HxW"
                f"{'x3' if want_channels == 3 else ' or HxWx1'} {'uint16' if itemsize == 2 else 'uint8'}"
            )
        strides = interface.get("strides")
        pitch = shape[1] * channels * itemsize
        if strides is not None:
            strides = tuple(int(v) for v in strides)
            inner = (channels * itemsize, itemsize)[: len(shape) - 1]
            if strides[1:] != inner:
                raise ImageError(
                    f"device array strides {strides} for shape {shape}; expected padded rows at most (pixel "
                    f"strides {inner}); fix: make the array contiguous along each row (cupy.ascontiguousarray)"
                )
            pitch = strides[0]
        stream = interface.get("stream")
        return cls(
            pointer=int(interface["data"][0]), height=shape[0], width=shape[1], pitch=pitch, color=color,
            stream=None if stream is None else int(stream), owner=array, downloader=downloader,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------- launchers


class _NvrtcLauncher:
    """Compiles ``KERNEL_SOURCE`` with NVRTC (cuda-python) and launches it through the driver API."""

    name = "nvrtc"

    def __init__(self, cuda: CudaApi) -> None:
        self._driver, self._nvrtc = _import_cuda_python()
        self._thread = threading.local()
        self._device = cuda.device
        self._ensure_context()
        major, minor = cuda.compute_capability()
        with _COMPILED_LOCK:  # NVRTC has no disk cache: compile once per process and architecture
            image = _COMPILED.get((major, minor))
            if image is None:
                image = _COMPILED[(major, minor)] = self._compile(major, minor)
        module = self._check(self._driver.cuModuleLoadData(image), "cuModuleLoadData")
        self._module = module
        self._functions = {
            name: self._check(self._driver.cuModuleGetFunction(module, name.encode()), "cuModuleGetFunction")
            for name in KERNEL_NAMES
        }
        self._streams: Dict[int, Any] = {}

    def _check(self, result: Any, what: str) -> Any:
        error, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if int(error) != 0:
            name = getattr(error, "name", str(error))
            raise BackendError(f"CUDA driver call {what} failed with {name} (GPU preprocessing, cuda-python)")
        return values[0] if len(values) == 1 else (values or None)

    def _ensure_context(self) -> None:
        """Make the device's primary context (the one the runtime and TensorRT use) current on this thread."""
        if getattr(self._thread, "ready", False):
            return
        driver = self._driver
        self._check(driver.cuInit(0), "cuInit")
        current = self._check(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
        if current is None or int(current) == 0:
            device = self._check(driver.cuDeviceGet(self._device), "cuDeviceGet")
            context = self._check(driver.cuDevicePrimaryCtxRetain(device), "cuDevicePrimaryCtxRetain")
            self._check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        self._thread.ready = True

    def _compile(self, major: int, minor: int) -> bytes:
        nvrtc = self._nvrtc
        program = self._nvrtc_check(
            nvrtc.nvrtcCreateProgram(KERNEL_SOURCE.encode(), b"trt_perception_preprocess.cu", 0, [], []),
            "nvrtcCreateProgram",
        )
        try:
            arch = f"sm_{major}{minor}"
            error = self._try_compile(program, arch)
            if error is not None:  # an NVRTC older than the GPU: PTX for the newest arch it knows, JIT'd
                arch = self._fallback_arch(major * 10 + minor)
                error = self._try_compile(program, arch)
                if error is not None:
                    raise BackendError(
                        f"NVRTC could not compile the GPU preprocessing kernel for {arch}: {error}; fix: install "
                        "a cuda-python/NVRTC matching this GPU's CUDA version, or turn gpu preprocessing off"
                    )
            if arch.startswith("sm_"):
                size = self._nvrtc_check(nvrtc.nvrtcGetCUBINSize(program), "nvrtcGetCUBINSize")
                image = b" " * size
                self._nvrtc_check(nvrtc.nvrtcGetCUBIN(program, image), "nvrtcGetCUBIN")
            else:
                size = self._nvrtc_check(nvrtc.nvrtcGetPTXSize(program), "nvrtcGetPTXSize")
                image = b" " * size
                self._nvrtc_check(nvrtc.nvrtcGetPTX(program, image), "nvrtcGetPTX")
            return image
        finally:
            nvrtc.nvrtcDestroyProgram(program)

    def _try_compile(self, program: Any, arch: str) -> Optional[str]:
        nvrtc = self._nvrtc
        options = [f"--gpu-architecture={arch}".encode()]
        result = nvrtc.nvrtcCompileProgram(program, len(options), options)
        error = result[0] if isinstance(result, tuple) else result
        if int(error) == 0:
            return None
        size = self._nvrtc_check(nvrtc.nvrtcGetProgramLogSize(program), "nvrtcGetProgramLogSize")
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(program, log)
        return f"{getattr(error, 'name', error)}: {log.decode('utf-8', 'replace').strip()}"

    def _fallback_arch(self, wanted: int) -> str:
        nvrtc = self._nvrtc
        try:
            count = self._nvrtc_check(nvrtc.nvrtcGetNumSupportedArchs(), "nvrtcGetNumSupportedArchs")
            archs = self._nvrtc_check(nvrtc.nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs")
            supported = [int(a) for a in list(archs)[: int(count)]]
        except (AttributeError, BackendError):
            supported = [53]
        usable = [a for a in supported if a <= wanted] or [min(supported)]  # none older: fails at load, named
        return f"compute_{max(usable)}"

    def _nvrtc_check(self, result: Any, what: str) -> Any:
        error, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if int(error) != 0:
            raise BackendError(f"NVRTC call {what} failed with {getattr(error, 'name', error)}")
        return values[0] if len(values) == 1 else (values or None)

    def prepare(self, args: Sequence[Union[int, float]]) -> Any:
        """Kernel arguments packed once (ctypes values + the void* array cuLaunchKernel reads)."""
        holders: List[Any] = []
        for kind, value in zip(ARG_KINDS, args):
            if kind == "p":
                holders.append(ctypes.c_void_p(int(value)))
            elif kind == "i":
                holders.append(ctypes.c_int(int(value)))
            else:
                holders.append(ctypes.c_float(float(value)))
        pointers = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
        return (holders, pointers, ctypes.addressof(pointers))

    def launch(self, name: str, grid: Tuple[int, int], packed: Any, stream: Any) -> None:
        self._ensure_context()
        key = int(stream)
        handle = self._streams.get(key)
        if handle is None:
            handle = self._streams[key] = self._driver.CUstream(key)
        result = self._driver.cuLaunchKernel(
            self._functions[name], grid[0], grid[1], 1, BLOCK[0], BLOCK[1], BLOCK[2], 0, handle, packed[2], 0
        )
        self._check(result, f"cuLaunchKernel({name})")

    def close(self) -> None:
        if self._module is not None:
            self._ensure_context()
            self._driver.cuModuleUnload(self._module)
            self._module = None


class _PyCudaLauncher:
    """Compiles ``KERNEL_SOURCE`` with pycuda's SourceModule (nvcc) and launches prepared calls."""

    name = "pycuda"

    def __init__(self, cuda: CudaApi) -> None:
        try:
            compiler = importlib.import_module("pycuda.compiler")
        except ImportError as exc:
            raise BackendError(
                f"GPU preprocessing with pycuda needs pycuda.compiler ({exc}); fix: pip install pycuda"
            ) from exc
        try:
            self._module = compiler.SourceModule(KERNEL_SOURCE, no_extern_c=True)
        except Exception as exc:  # pycuda.driver.CompileError, or nvcc missing (OSError)
            raise BackendError(
                f"pycuda could not compile the GPU preprocessing kernel with nvcc ({type(exc).__name__}: {exc}); "
                "fix: put CUDA's nvcc on PATH (export PATH=/usr/local/cuda/bin:$PATH) or use cuda-python"
            ) from exc
        types = ARG_KINDS.replace("p", "P")
        self._functions = {}
        for name in KERNEL_NAMES:
            function = self._module.get_function(name)
            function.prepare(types)
            self._functions[name] = function

    def prepare(self, args: Sequence[Union[int, float]]) -> Any:
        values: List[Any] = []
        for kind, value in zip(ARG_KINDS, args):
            if kind == "p":
                values.append(np.uintp(int(value)))
            elif kind == "i":
                values.append(np.int32(int(value)))
            else:
                values.append(np.float32(float(value)))
        return tuple(values)

    def launch(self, name: str, grid: Tuple[int, int], packed: Any, stream: Any) -> None:
        self._functions[name].prepared_async_call((grid[0], grid[1], 1), BLOCK, stream, *packed)

    def close(self) -> None:  # called with the context current: the module unloads now, not at exit
        self._functions = {}
        self._module = None


def _import_cuda_python() -> Tuple[ModuleType, ModuleType]:
    try:
        return importlib.import_module("cuda.bindings.driver"), importlib.import_module("cuda.bindings.nvrtc")
    except ImportError:
        pass
    try:  # cuda-python 11.x / early 12.x layout
        return importlib.import_module("cuda.cuda"), importlib.import_module("cuda.nvrtc")
    except ImportError as exc:
        raise BackendError(
            f"GPU preprocessing needs cuda-python's driver and NVRTC bindings ({exc}); "
            "fix: pip install cuda-python (matching the driver's CUDA major), or use pycuda"
        ) from exc


# ---------------------------------------------------------------------------------------------- the class


class GpuPreprocessor:
    """Decoded frame -> the model's input tensor in device memory, made by one kernel.

    ``spec`` and ``dtype`` mean what they mean for ``Preprocessor`` (``dtype``: the engine binding's real
    dtype). ``out``: the device address to write (the engine's input binding); None allocates one
    (``output_pointer``). ``stream``: a stream of ``cuda``'s kind to queue on (the backend's), else one is
    made. ``cuda``: a ``CudaApi`` to share (the backend's) or a name for ``select_cuda_api``. ``upload``
    says how the uint8 frame reaches the device:
      * 'pinned': copied into page-locked staging memory in chunks, each chunk's async copy queued as soon as
        it is filled (the bus works while the CPU fills the next); when the resize reads at most 3/4 of the
        frame's rows (downscaling), only those rows are gathered and sent;
      * 'direct': one copy from the frame's own pageable memory (the driver stages and pipelines it; a frame
        with row padding is staged as in 'pinned');
      * 'auto' (default): row gathering when it applies, else 'direct' - what measured fastest on the
        benchmark machine (benchmarks/README.md).
    ``launcher``: an object with ``prepare(args)``, ``launch(name, grid, packed, stream)`` and ``close()``
    (tests run the kernel's arithmetic in numpy through one); None compiles ``KERNEL_SOURCE`` with the
    adapter's library.

    ``__call__`` takes a ``DecodedImage`` (host frame, uploaded as above) or a ``DeviceImage`` (a frame already
    on the GPU, e.g. decoded by nvImageCodec: read in place, nothing uploaded), queues the work and returns the
    ``ImageTransform`` (identical to the CPU path's); the tensor is ready once the stream is synchronized (the
    backend's per-frame sync, or ``synchronize()``). ``from_device`` is the same for a bare device pointer.
    """

    def __init__(
        self,
        spec: InputSpec,
        dtype: Optional[Any] = None,
        out: Optional[int] = None,
        stream: Any = None,
        cuda: Union[str, CudaApi] = "auto",
        upload: str = "auto",
        device: int = 0,
        launcher: Any = None,
    ) -> None:
        if upload not in UPLOADS:
            raise SpecError(f"GPU preprocessing upload is {upload!r}; expected one of {list(UPLOADS)}")
        self.spec = spec
        self.dtype = _resolve_dtype(spec, dtype)
        if self.dtype == np.uint8 and (any(s != 1.0 for s in spec.scale) or any(o != 0.0 for o in spec.offset)):
            raise SpecError(
                f"spec input {spec.name!r} has dtype uint8 with scale {spec.scale} / offset {spec.offset}; "
                "expected none (uint8 models take raw pixels); fix: remove scale/offset/mean/std or use a float dtype"
            )
        resize_tables(spec.interpolation, 2, 2, 2, 2)  # refuse 'area' now, not on the first frame
        self.upload = upload
        self.nbytes = int(np.prod(spec.shape)) * self.dtype.itemsize
        self.cuda = select_cuda_api(cuda, device)
        self._owns_cuda = not isinstance(cuda, CudaApi)
        self._lock = threading.Lock()
        self._owned_stream = stream is None
        self._device_buffers: List[int] = []
        self._pinned: List[np.ndarray] = []
        self._staging: Optional[np.ndarray] = None
        self._staging_view: Optional[np.ndarray] = None
        self._in_flight = False
        self._key: Optional[Tuple[int, int, str, Optional[int]]] = None
        self._args: List[Union[int, float]] = []
        self._device_packs: Dict[int, Any] = {}
        self.transform: Optional[ImageTransform] = None
        self.launcher: Any = None
        self.stream = stream
        try:
            with self.cuda.activated():
                if launcher is not None:
                    self.launcher = launcher
                elif isinstance(self.cuda, PyCudaApi):
                    self.launcher = _PyCudaLauncher(self.cuda)
                else:
                    self.launcher = _NvrtcLauncher(self.cuda)
                if self.stream is None:
                    self.stream = self.cuda.stream_create()
                self.output_pointer = int(out) if out is not None else self._malloc(self.nbytes)
                self._frame_device = 0
                self._frame_capacity = 0
                self._tables_device = self._malloc(16 * (spec.width + spec.height))
                self._tables_host = self._pinned_empty(16 * (spec.width + spec.height))
                self._download_host: Optional[np.ndarray] = None
        except BaseException:
            self.close()
            raise

    # -- buffers --------------------------------------------------------------------------------------

    def _malloc(self, nbytes: int) -> int:
        pointer = self.cuda.malloc(nbytes)
        self._device_buffers.append(pointer)
        return pointer

    def _free(self, pointer: int) -> None:
        self._device_buffers.remove(pointer)
        self.cuda.free(pointer)

    def _pinned_empty(self, nbytes: int) -> np.ndarray:
        array = self.cuda.pinned_empty(nbytes)
        self._pinned.append(array)
        return array

    def _free_pinned(self, array: np.ndarray) -> None:
        self._pinned = [a for a in self._pinned if a is not array]
        self.cuda.free_pinned(array)

    # -- set-up, once per frame geometry --------------------------------------------------------------

    def _configure(self, height: int, width: int, color: str, device_pitch: Optional[int] = None) -> None:
        """Tables, buffers and kernel arguments for one frame geometry; ``device_pitch``: the frame is on the
        device already (read in place with that pitch: no upload buffers, no row gathering)."""
        spec = self.spec
        geo = _geometry(spec, height, width)
        rows = height - geo.crop_top - geo.crop_bottom
        wide = color == "gray16"
        channels = 3 if color in ("rgb", "bgr") else 1
        itemsize = 2 if wide else 1
        row_bytes = width * channels * itemsize
        xtab, ytab = resize_tables(
            spec.interpolation, width, rows, geo.content_width, geo.content_height, wide
        )
        if device_pitch is not None:
            self._row_index = None
            self._tail_configure(geo, color, wide, channels, xtab, ytab, 0, device_pitch)
            self._key = (height, width, color, device_pitch)
            return
        needed = np.unique(ytab[:, :2])  # source rows the resize reads
        if self.upload != "direct" and len(needed) <= GATHER_FRACTION * rows:
            self._row_index: Optional[np.ndarray] = needed.astype(np.intp)
            ytab[:, 0] = np.searchsorted(needed, ytab[:, 0])  # rows of the gathered buffer
            ytab[:, 1] = np.searchsorted(needed, ytab[:, 1])
            upload_rows = len(needed)
        else:
            self._row_index = None
            upload_rows = rows
        nbytes = upload_rows * row_bytes
        if nbytes > self._frame_capacity:
            if self._frame_device:
                self._free(self._frame_device)
                self._frame_device = 0
            if self._staging is not None:
                self._free_pinned(self._staging)
                self._staging = None
            self._frame_device = self._malloc(nbytes)
            self._staging = self._pinned_empty(nbytes)
            self._frame_capacity = nbytes
        frame_shape: Tuple[int, ...] = (upload_rows, width, channels) if channels == 3 else (upload_rows, width)
        frame_dtype = np.uint16 if wide else np.uint8
        self._staging_view = self._staging[:nbytes].view(frame_dtype).reshape(frame_shape)  # type: ignore[index]
        step = max(1, CHUNK_BYTES // row_bytes)
        self._chunks = [(a, min(a + step, upload_rows), a * row_bytes) for a in range(0, upload_rows, step)]
        self._tail_configure(geo, color, wide, channels, xtab, ytab, self._frame_device, row_bytes)
        self._packed = self.launcher.prepare(self._args)
        self._key = (height, width, color, None)

    def _tail_configure(
        self, geo: Any, color: str, wide: bool, channels: int, xtab: np.ndarray, ytab: np.ndarray, source: int,
        pitch: int,
    ) -> None:  # fmt: skip
        """Upload the tables and build the kernel arguments (``self._args``) for a source at ``source``."""
        spec = self.spec
        tables = self._tables_host[: 16 * (len(xtab) + len(ytab))].view(np.int32).reshape(-1, 4)
        tables[: len(xtab)] = xtab
        tables[len(xtab) :] = ytab
        self.cuda.memcpy_htod_async(self._tables_device, tables, self.stream)
        self.cuda.stream_synchronize(self.stream)  # the pinned tables may be rewritten by the next configure

        to_gray, perm = _channel_map(color, spec.color)
        if to_gray is not None:  # model GRAY from a color frame: R, G, B source channels for the luma weights
            order = (0, 1, 2) if color == "rgb" else (2, 1, 0)
            mapping, gray_flag = order, 1
        else:
            mapping, gray_flag = tuple(perm) + (perm[0],) * (3 - len(perm)), 0
        scale = list(spec.scale) + [spec.scale[0]] * (3 - len(spec.scale))
        offset = list(spec.offset) + [spec.offset[0]] * (3 - len(spec.offset))
        pads = [float(p) for p in _pad_values(spec, self.dtype).astype(np.float32)]
        pads += [pads[0]] * (3 - len(pads))
        self._args = [
            source, pitch, channels,
            self._tables_device, self._tables_device + 16 * len(xtab),
            geo.content_width, geo.content_height, geo.pad_x, geo.pad_y,
            self.output_pointer, spec.width, spec.height, spec.channels, int(spec.layout == "NCHW"),
            OUT_TYPES[self.dtype],
            mapping[0], mapping[1], mapping[2], gray_flag,
            *[float(np.float32(s)) for s in scale[:3]], *[float(np.float32(o)) for o in offset[:3]], *pads[:3],
        ]  # fmt: skip
        self._device_packs = {}
        self._kernel = KERNEL_NAMES[1] if wide else KERNEL_NAMES[0]
        self._grid = (-(-spec.width // BLOCK[0]), -(-spec.height // BLOCK[1]))
        self._geo = geo
        self.transform = geo.transform

    # -- per frame ------------------------------------------------------------------------------------

    def __call__(self, image: Union[DecodedImage, DeviceImage]) -> ImageTransform:
        """Queue upload (host frames) + kernel for one frame on ``self.stream``; returns the box transform at once."""
        if isinstance(image, DeviceImage):
            return self._run_device(image)
        array = image.array
        key = (int(array.shape[0]), int(array.shape[1]), image.color, None)
        with self._lock, self.cuda.activated():
            if self._in_flight:  # staging memory may still be read by the last frame's copies
                self.cuda.stream_synchronize(self.stream)
            if key != self._key:
                self._configure(*key[:3])
            geo = self._geo
            if geo.crop_top or geo.crop_bottom:
                array = array[geo.crop_top : key[0] - geo.crop_bottom]
            self._upload(array)
            self.launcher.launch(self._kernel, self._grid, self._packed, self.stream)
            self._in_flight = True
        return self.transform  # type: ignore[return-value]

    def from_device(
        self, pointer: int, height: int, width: int, pitch: int, color: str, stream: Optional[int] = None
    ) -> ImageTransform:
        """The kernel on a frame already in device memory at ``pointer`` (see ``DeviceImage``)."""
        return self._run_device(DeviceImage(pointer, height, width, pitch, color, stream))

    def _run_device(self, image: DeviceImage) -> ImageTransform:
        """Queue the kernel reading ``image`` in place; its pixels must be written or ordered on our stream."""
        key = (int(image.height), int(image.width), image.color, int(image.pitch))
        with self._lock, self.cuda.activated():
            if image.stream not in READY_STREAMS and image.stream != self.cuda.stream_handle(self.stream):
                raise ImageError(
                    f"device frame is still being written on CUDA stream {image.stream:#x}, not on this "
                    f"preprocessor's stream; fix: synchronize that stream first (or decode on this one)"
                )
            if key != self._key:
                self._configure(*key)
            pointer = int(image.pointer) + self._geo.crop_top * key[3]
            packed = self._device_packs.get(pointer)
            if packed is None:  # a decoder cycles through a few buffers: pack each address once
                if len(self._device_packs) >= DEVICE_PACKS:
                    self._device_packs.clear()
                args = list(self._args)
                args[0] = pointer
                packed = self._device_packs[pointer] = self.launcher.prepare(args)
            self.launcher.launch(self._kernel, self._grid, packed, self.stream)
            self._in_flight = True
        return self.transform  # type: ignore[return-value]

    def _upload(self, array: np.ndarray) -> None:
        """Queue the frame's rows (all, or the ones the resize reads) to the device buffer."""
        cuda, stream, device = self.cuda, self.stream, self._frame_device
        if self._row_index is None and self.upload != "pinned" and array.flags.c_contiguous:
            cuda.memcpy_htod_async(device, array, stream)  # pageable: the driver stages and pipelines it
            return
        staging, rows = self._staging_view, self._row_index
        for start, end, offset in self._chunks:  # fill a chunk, queue its copy, fill the next meanwhile
            target = staging[start:end]
            if rows is None:
                np.copyto(target, array[start:end])
            else:  # mode='clip': no hidden frame-sized buffer (numpy buffers `out` for mode='raise')
                np.take(array, rows[start:end], axis=0, out=target, mode="clip")
            cuda.memcpy_htod_async(device + offset, target, stream)

    def synchronize(self) -> None:
        """Wait until the tensor of the last call is written."""
        with self._lock, self.cuda.activated():
            self.cuda.stream_synchronize(self.stream)
            self._in_flight = False

    def stream_synchronized(self) -> None:
        """The stream's owner (the backend's per-frame sync) waited for it: the next frame skips its own wait."""
        with self._lock:
            self._in_flight = False

    def download(self) -> np.ndarray:
        """A host copy of the device tensor (tests, debugging): shape ``spec.shape``, dtype ``self.dtype``."""
        with self._lock, self.cuda.activated():
            if self._download_host is None:
                self._download_host = self._pinned_empty(self.nbytes)
            self.cuda.memcpy_dtoh_async(self._download_host, self.output_pointer, self.stream)
            self.cuda.stream_synchronize(self.stream)
            self._in_flight = False
            return self._download_host.view(self.dtype).reshape(self.spec.shape).copy()

    def close(self) -> None:
        """Free device and page-locked buffers, the owned stream and (if owned) the CUDA adapter; idempotent."""
        cuda = getattr(self, "cuda", None)
        if cuda is None:
            return
        try:
            with cuda.activated():
                if self.stream is not None:
                    cuda.stream_synchronize(self.stream)
                for pointer in list(self._device_buffers):
                    self._free(pointer)
                for array in list(self._pinned):
                    self._free_pinned(array)
                if self.launcher is not None:
                    self.launcher.close()
                    self.launcher = None
                if self._owned_stream and self.stream is not None:
                    cuda.stream_destroy(self.stream)
                self.stream = None
        finally:
            if self._owns_cuda:
                cuda.close()
            self.cuda = None

    def __enter__(self) -> GpuPreprocessor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
