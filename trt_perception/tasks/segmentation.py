"""Semantic segmentation: per-pixel classes -> a class-id mask at the SOURCE image's size.

Drivable area and lanes are the car's use. The parser (``outputs/segmentation.py``) gives a class map at the
model output's size; here it goes back to the source frame (letterbox, resize and crop undone, nearest
neighbour; rows the model never saw are 255) into a buffer reused from frame to frame, with the share of each
class. Published as
``sensor_msgs/Image`` ``mono8`` with the image's header, plus a coloured overlay while someone subscribes.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import cv2
import numpy as np

from trt_perception.outputs.base import RawSegmentation
from trt_perception.params import BOOL, DOUBLE, live
from trt_perception.preprocess import ImageTransform
from trt_perception.results import SegmentationMask
from trt_perception.tasks.base import HeadOutput, Task, Topic


class SegmentationTask(Task):
    name = "segmentation"
    PARAMS = (
        live("publish_overlay", True, BOOL, "publish <mask>/overlay (the frame tinted by class)"),
        live("overlay_alpha", 0.5, DOUBLE, "overlay tint strength (0 = frame only, 1 = classes only)",
             range=(0.0, 1.0)),
    )

    def __init__(self, head: str, spec: Any, values: Mapping[str, Any], clock: Any = None) -> None:
        super().__init__(head, spec, values, clock)
        self._mask: Optional[np.ndarray] = None
        self._fractions: Optional[np.ndarray] = None
        self._palette: Optional[np.ndarray] = None  # (256, 1, 3) LUT, in the overlay's channel order
        self._palette_order = ""
        self._tint: Optional[np.ndarray] = None
        self.labels = list(spec.segmentation.labels)

    def finish(self, parsed: RawSegmentation, transform: ImageTransform, now: float) -> HeadOutput:
        from trt_perception.outputs.segmentation import class_fractions

        shape = (transform.src_height, transform.src_width)
        if self._mask is None or self._mask.shape != shape:
            self._mask = np.empty(shape, np.uint8)  # once per stream size
        mask = transform.mask_to_source(parsed.class_map, out=self._mask)
        classes = max(parsed.num_classes, len(self.labels))
        if self._fractions is None or self._fractions.shape[0] != classes:
            self._fractions = np.zeros(classes, np.float32)
        fractions = class_fractions(mask, classes, out=self._fractions)
        return HeadOutput(self.head, self.name, SegmentationMask(mask, fractions, self.labels))

    def topics(self, prefix: str) -> List[Topic]:
        return [
            Topic("mask", f"{prefix}mask", "Image"),
            Topic("overlay", f"{prefix}mask/overlay", "Image", overlay=True),
        ]

    def messages(self, types: Any, header: Any, output: HeadOutput) -> Iterator[Tuple[str, Any]]:
        from trt_perception.messages import overlay_image

        yield "mask", overlay_image(types, header, output.result.mask, "mono8")

    def palette(self, order: str) -> np.ndarray:
        """A 256-entry colour LUT: the spec's colours, then overlay.class_color; 255 (unseen) black."""
        if self._palette is None or self._palette_order != order:
            from trt_perception.overlay import class_color

            colors = self.spec.segmentation.colors
            lut = np.zeros((256, 1, 3), np.uint8)
            for class_id in range(255):
                rgb = colors[class_id] if class_id < len(colors) else class_color(class_id, "rgb")
                lut[class_id, 0] = rgb if order == "rgb" else rgb[::-1]
            self._palette, self._palette_order = lut, order
        return self._palette

    def draw(self, canvas: np.ndarray, output: HeadOutput, order: str) -> np.ndarray:
        """Tint each pixel by its class: canvas = (1 - alpha) * canvas + alpha * colour (OpenCV, no temporaries
        beyond one reused colour image)."""
        mask = output.result.mask
        if self._tint is None or self._tint.shape[:2] != mask.shape:
            self._tint = np.empty((*mask.shape, 3), np.uint8)
        cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR, dst=self._tint)
        cv2.LUT(self._tint, self.palette(order).reshape(256, 1, 3), dst=self._tint)
        alpha = float(self.values.get("overlay_alpha", 0.5))
        cv2.addWeighted(canvas, 1.0 - alpha, self._tint, alpha, 0.0, dst=canvas)
        return canvas

    def diagnostics(self, output: Optional[HeadOutput]) -> Dict[str, Any]:
        """Per-class area fractions of the last frame (the car's 'how much road do I see')."""
        if output is None:
            return {}
        result = output.result
        values: Dict[str, Any] = {}
        for class_id, fraction in enumerate(result.fractions.tolist()):
            name = result.labels[class_id] if class_id < len(result.labels) else str(class_id)
            values[f"area.{name}"] = round(float(fraction), 4)
        return values
