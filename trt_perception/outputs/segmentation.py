"""``segmentation``: per-pixel class scores or class ids -> a uint8 class map; ``class_fractions`` of a mask.

What the ``mask`` output may be:

- scores [B, C, H, W] (``layout: NHWC``: [B, H, W, C]), float32, float16 or uint8: the class is the argmax
  over C (the first maximum on ties, as ``np.argmax``). At most 255 classes: id 255 is
  ``SegmentationMask.UNSEEN``.
- class ids [B, H, W], [B, 1, H, W] or [B, H, W, 1] (int32, int64, uint8, float32 or float16), e.g. a graph
  that ends in ArgMax: taken as they are; an id outside 0..254 (and a NaN) becomes 255 (no class).
- with ``threshold: <number>``, a one-channel float map ([B, 1, H, W] / [B, H, W]) is a binary head (e.g.
  drivable area): class 1 where the value is above the threshold, else 0.

The map stays at the OUTPUT's resolution: a stride-8 head gives a map 1/8 of the model input's size, still
covering the whole model input (letterbox border included). ``ImageTransform.mask_to_source`` scales it by
its size relative to the model input while it undoes letterbox and crop, in one nearest-neighbour pass,
which samples once instead of twice and skips a model-size pass per frame. ``num_classes`` is C for scores;
for ids the length of ``segmentation.labels``, else 256.

Per frame the argmax is a running maximum over the channels with OpenCV into buffers allocated once per
output shape (per channel: compare, max, and two uint8 ops on the class map), measured on one core for 21 x
256 x 512 float32 at 0.8 ms against 8.5 ms for ``np.argmax(axis=0)`` (and 5.7 ms for the same loop in
numpy). NHWC scores are first transposed into a reused CHW buffer (``cv2.transpose``, 1.2 ms at that size);
float16 scores are compared as float16 where OpenCV can (5.x), else each channel is converted into a
float32 buffer first. A NaN score never wins a comparison, so NaN gives some valid class id, never a crash.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import SpecError
from trt_perception.outputs.base import OutputParser, RawSegmentation
from trt_perception.outputs.checks import (
    FLOAT_KINDS,
    INT_KINDS,
    bad_param,
    check_params,
    check_roles,
    check_tensor,
    find_output,
    frame_error,
    frame_output,
    is_number,
    known,
)
from trt_perception.spec import ModelSpec

UNSEEN = 255  # SegmentationMask.UNSEEN: no class (cropped away, or an id the map cannot hold)
MAX_CLASSES = 255
LAYOUTS = ("NCHW", "NHWC")
DEFAULTS: Dict[str, Any] = {"layout": "NCHW", "threshold": None}
SHAPES = (
    "per-class scores [B, C, H, W] ([B, H, W, C] with layout NHWC) or class ids [B, H, W] / [B, 1, H, W] "
    "/ [B, H, W, 1]"
)


@functools.lru_cache(maxsize=None)
def _cv2_compares_float16() -> bool:
    """Whether this OpenCV does compare/max on float16 arrays (5.x does; 4.x refuses them)."""
    try:
        a = np.zeros((2, 2), np.float16)
        cv2.compare(a, a, cv2.CMP_GT)
        cv2.max(a, a)
    except (cv2.error, TypeError, ValueError):
        return False
    return True


def _float16_to_float32(plane: np.ndarray, out: np.ndarray) -> None:
    """A float16 plane into a float32 buffer (OpenCV 4.x's SIMD conversion where present, else numpy)."""
    convert = getattr(cv2, "convertFp16", None)
    if convert is not None and plane.flags.c_contiguous:
        convert(plane.view(np.int16), dst=out)
    else:
        np.copyto(out, plane)


class SegmentationParser(OutputParser):
    """Argmax of per-class scores, or class ids as they are, into a reused uint8 map at the output's size."""

    format = "segmentation"
    roles = ("mask",)

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        check_roles(spec, self.roles)
        params = check_params(spec, DEFAULTS)
        layout = params["layout"]
        if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
            raise bad_param("layout", layout, f"one of {list(LAYOUTS)} (where the class axis of scores is)")
        self.layout = layout.upper()
        threshold = params["threshold"]
        if threshold is not None and not is_number(threshold):
            raise bad_param(
                "threshold", threshold, "null or a number (one-channel maps: class 1 above it, else 0)"
            )
        self.threshold: Optional[float] = None if threshold is None else float(threshold)
        labels = len(spec.segmentation.labels)
        if labels > MAX_CLASSES:
            raise SpecError(
                f"segmentation.labels has {labels} labels; a segmentation mask holds at most {MAX_CLASSES} "
                f"classes (id {UNSEEN} marks unseen pixels); fix: shorten the labels list"
            )
        self._key: Optional[Tuple[Any, ...]] = None  # what the buffers below were made for
        self._map = np.zeros((0, 0), np.uint8)
        self._above = np.zeros((0, 0), np.uint8)  # 255 where a channel beats the best so far
        self._best: Optional[np.ndarray] = None
        self._plane32: Optional[np.ndarray] = None
        self._chw: Optional[np.ndarray] = None
        self._float_ids: Optional[np.ndarray] = None

    # --------------------------------------------------------------------------------------- load time

    def check_outputs(self, outputs: Sequence[TensorSpec]) -> None:
        tensor = find_output(self.spec, outputs, "mask")
        dtypes = (*FLOAT_KINDS, *INT_KINDS, "uint8")
        shape = check_tensor(self.spec, tensor, "mask", SHAPES, (3, 4), dtypes=dtypes)
        dtype = np.dtype(tensor.dtype).name
        where = f"model output {tensor.name!r} (output.tensors.mask, format 'segmentation')"
        if len(shape) == 4:
            channels = shape[1] if self.layout == "NCHW" else shape[3]
            spatial = shape[2:4] if self.layout == "NCHW" else shape[1:3]
        else:
            channels, spatial = 1, shape[1:3]
            if known(shape[0]) and int(shape[0]) > 1 and dtype in FLOAT_KINDS:
                raise SpecError(
                    f"{where} has shape {list(shape)}: read as class ids [B, H, W] that is a batch of "
                    f"{shape[0]}; per-class scores need a batch axis: [B, C, H, W]; fix: export the model with "
                    "a batch dimension (TensorRT: explicit batch)"
                )
        if known(channels) and int(channels) > MAX_CLASSES:
            raise SpecError(
                f"{where} has {channels} classes along the {self.layout} class axis (shape {list(shape)}); a "
                f"mask holds at most {MAX_CLASSES} (id {UNSEEN} marks unseen pixels); fix: if the class axis "
                f"is elsewhere set output.layout: {'NHWC' if self.layout == 'NCHW' else 'NCHW'}"
            )
        if known(channels) and int(channels) > 1 and dtype in INT_KINDS:
            raise SpecError(
                f"{where} is {dtype} with {channels} channels; class-id outputs have one channel and scores "
                "are float; fix: map the right tensor or check output.layout"
            )
        if known(channels) and int(channels) > 1 and self.threshold is not None:
            raise bad_param(
                "threshold", self.threshold, f"null for a {channels}-class score output (it is for "
                "one-channel maps)", "remove output.threshold",
            )  # fmt: skip
        model = (self.spec.input.height, self.spec.input.width)
        if any(known(d) and int(d) > m for d, m in zip(spatial, model)):
            raise SpecError(
                f"{where} has shape {list(shape)}: a {spatial[0]}x{spatial[1]} map with layout {self.layout}, "
                f"larger than the model input ({model[0]}x{model[1]}); fix: check output.layout (NCHW: [B, C, "
                "H, W], NHWC: [B, H, W, C]) and output.tensors.mask"
            )

    # ---------------------------------------------------------------------------------------- per frame

    def _buffers(self, key: Tuple[Any, ...], height: int, width: int) -> None:
        """(Re)allocate the class map and scratch buffers when the output's shape or dtype changes."""
        if key == self._key:
            return
        self._key = key
        self._map = np.zeros((height, width), np.uint8)
        self._above = np.empty((height, width), np.uint8)
        self._best = self._plane32 = self._chw = self._float_ids = None  # made on first use

    def parse(self, outputs: Mapping[str, np.ndarray], settings: Any = None) -> RawSegmentation:
        raw = np.asarray(outputs.get(self.tensor("mask"), np.zeros((0,), np.float32)))
        item = frame_output(self.spec, outputs, "mask", SHAPES, 3 if raw.ndim >= 4 else 2)
        with np.errstate(over="ignore", invalid="ignore"):  # float ids beyond float32: inf, i.e. no class
            return self._parse(raw, item)

    def _parse(self, raw: np.ndarray, item: np.ndarray) -> RawSegmentation:
        if raw.ndim >= 4:
            channels = item.shape[0] if self.layout == "NCHW" else item.shape[2]
            if channels > 1:
                return self._argmax(item, channels)
            ids = item[0] if self.layout == "NCHW" else item[:, :, 0]
        else:
            ids = item
        return self._ids(ids)

    def _argmax(self, item: np.ndarray, channels: int) -> RawSegmentation:
        if channels > MAX_CLASSES:
            raise frame_error(
                self.spec, "mask", item, f"at most {MAX_CLASSES} classes along the {self.layout} class axis "
                f"(a mask holds ids 0..{MAX_CLASSES - 1}); this frame has {channels}", "check output.layout",
            )  # fmt: skip
        nchw = self.layout == "NCHW"
        height, width = (item.shape[1], item.shape[2]) if nchw else (item.shape[0], item.shape[1])
        dtype = item.dtype
        if dtype not in (np.float32, np.float16, np.uint8):
            raise frame_error(
                self.spec, "mask", item, "per-class scores as float32, float16 or uint8",
                "map the right tensor (trt-perception inspect)",
            )  # fmt: skip
        self._buffers(("scores", channels, height, width, dtype.str, self.layout), height, width)
        if not item.flags.c_contiguous:
            item = np.ascontiguousarray(item)
        if not nchw:  # [H, W, C] -> [C, H, W] into a reused buffer (uint16/float32 views: a memory move)
            if self._chw is None:
                self._chw = np.empty((channels, height, width), dtype)
            bits = np.uint16 if dtype == np.float16 else dtype
            flat = item.reshape(height * width, channels).view(bits)
            cv2.transpose(flat, dst=self._chw.reshape(channels, height * width).view(bits))
            item = self._chw
        convert = dtype == np.float16 and not _cv2_compares_float16()
        if self._best is None:
            self._best = np.empty((height, width), np.float32 if convert else dtype)
            self._plane32 = np.empty((height, width), np.float32) if convert else None
        best, above, class_map = self._best, self._above, self._map
        if convert:
            _float16_to_float32(item[0], best)
        else:
            np.copyto(best, item[0])
        class_map.fill(0)
        for k in range(1, channels):
            plane = item[k]
            if convert:
                _float16_to_float32(plane, self._plane32)  # type: ignore[arg-type]
                plane = self._plane32
            cv2.compare(plane, best, cv2.CMP_GT, dst=above)  # strictly greater: ties keep the first class
            cv2.max(best, plane, dst=best)
            cv2.min(above, k, dst=above)  # k where this channel won, else 0
            cv2.max(class_map, above, dst=class_map)  # k exceeds every id so far
        return RawSegmentation(class_map, channels)

    def _ids(self, ids: np.ndarray) -> RawSegmentation:
        height, width = ids.shape
        dtype = ids.dtype
        self._buffers(("ids", height, width, dtype.str), height, width)
        class_map = self._map
        if self.threshold is not None and dtype.kind == "f":
            np.greater(ids, self.threshold, out=class_map.view(np.bool_))  # NaN: class 0
            return RawSegmentation(class_map, max(2, len(self.spec.segmentation.labels)))
        if dtype == np.uint8:
            np.copyto(class_map, ids)
        elif dtype.kind in "iu":  # negative ids become huge unsigned ones: 255 like any id >= 255
            unsigned = ids.view(np.dtype(f"u{dtype.itemsize}"))
            np.minimum(unsigned, UNSEEN, out=class_map, casting="unsafe")
        elif dtype.kind == "f":
            if self._float_ids is None:
                self._float_ids = np.empty((height, width), np.float32)
            values = self._float_ids
            np.rint(ids, out=values, casting="same_kind")
            np.minimum(values, UNSEEN, out=values)  # NaN stays NaN
            np.copyto(values, UNSEEN, where=values < 0)
            np.nan_to_num(values, copy=False, nan=UNSEEN)
            np.copyto(class_map, values, casting="unsafe")
        else:  # pragma: no cover - frame_output lets only numeric kinds through
            raise frame_error(self.spec, "mask", ids, "class ids as integers or floats")
        labels = len(self.spec.segmentation.labels)
        return RawSegmentation(class_map, labels if labels else 256)


def class_fractions(mask: np.ndarray, num_classes: int, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The share of each class 0..num_classes-1 among the mask's seen pixels (255 = unseen is left out).

    ``mask``: a uint8 class-id mask; ``out``: a reused float32 array of ``num_classes`` (allocated when None);
    returns it. All zeros when no pixel is seen. One ``cv2.calcHist`` pass (0.17 ms at 640x480 on one core,
    half of ``np.bincount``'s time, and no int64 copy of the mask).
    """
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"mask has shape {mask.shape} dtype {mask.dtype}; expected a 2-D uint8 class-id mask")
    if out is None:
        out = np.zeros(num_classes, np.float32)
    elif out.shape != (num_classes,) or out.dtype != np.float32:
        raise ValueError(
            f"fractions buffer has shape {out.shape} dtype {out.dtype}; expected ({num_classes},) float32"
        )
    hist = cv2.calcHist([mask], [0], None, [256], [0, 256]).reshape(-1)  # (256, 1) in OpenCV 4, (256,) in 5
    seen = float(mask.size) - float(hist[UNSEEN])
    counted = min(num_classes, UNSEEN)
    if seen > 0:
        np.multiply(hist[:counted], np.float32(1.0 / seen), out=out[:counted])
    else:
        out[:counted] = 0.0
    out[counted:] = 0.0
    return out
