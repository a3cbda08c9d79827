"""Annotated images for people: detection boxes with "label score", and a steering/throttle gauge.

Drawing happens on a copy (or into a caller's reusable ``out`` buffer), never on the decoded frame, which may
be a read-only view of the message. Overlays are published only while someone watches, so a short loop over
at most ``max_detections`` boxes is fine here; nothing in this module runs on the inference path.
"""

from __future__ import annotations

import colorsys
import math
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from trt_perception.errors import ImageError
from trt_perception.results import Classification, Detections

Color = Tuple[int, int, int]
_GOLDEN_RATIO = 0.618033988749895
_palette_cache: Dict[int, Color] = {}


def class_color(class_id: int, color_order: str = "bgr") -> Color:
    """A stable, well-separated color per class id (golden-ratio hue steps), in the image's channel order."""
    rgb = _palette_cache.get(int(class_id))
    if rgb is None:
        hue = (int(class_id) * _GOLDEN_RATIO) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
        rgb = _palette_cache[int(class_id)] = (int(r * 255), int(g * 255), int(b * 255))
    return rgb if color_order.lower() == "rgb" else (rgb[2], rgb[1], rgb[0])


def _canvas(image: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
    """A writable HxWx3 uint8 copy of ``image`` (gray frames become 3-channel), in ``out`` when given."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ImageError(
            f"overlay image has shape {image.shape} dtype {image.dtype}; "
            "expected HxWx3 or HxW uint8 (or HxW uint16)"
        )
    shape = (*image.shape[:2], 3)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8:
        raise ImageError(
            f"overlay out buffer has shape {out.shape} dtype {out.dtype}; expected {shape} uint8"
        )
    if image.ndim == 2:
        cv2.cvtColor(image, cv2.COLOR_GRAY2BGR, dst=out)
    else:
        np.copyto(out, image)
    return out


def copy_to_canvas(image: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``image`` copied into ``out`` (HxWx3 uint8) for drawing; gray frames become 3-channel."""
    return _canvas(image, out)


def _text_scale(height: int) -> Tuple[float, int]:
    """Font scale and line thickness readable on 120-row steering frames and 1080p alike."""
    scale = max(0.35, min(1.2, height / 700.0))
    return scale, max(1, round(scale * 2))


Rect = Tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive ends)


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(
    boxes: np.ndarray, sizes: Sequence[Tuple[int, int]], image_shape: Tuple[int, ...], order: Sequence[int]
) -> List[Optional[Rect]]:
    """Where each box's label tag goes, so that no two tags overlap in a crowded frame: for the boxes in ``order``
    (best score first), the first free spot of: above the box, inside it at the top, below it, inside at the
    bottom, each shifted left to stay in the image; a label with no free spot is left out (None: its box is still
    drawn, and a better-scored neighbour's label stays readable instead of two unreadable ones)."""
    height, width = int(image_shape[0]), int(image_shape[1])
    placed: List[Rect] = []
    where: List[Optional[Rect]] = [None] * len(sizes)
    for i in order:
        x1, y1, _, y2 = (int(v) for v in boxes[i])
        tag_w, tag_h = sizes[i]
        left = max(0, min(x1, width - tag_w))
        for top in (y1 - tag_h, y1, y2 + 1, y2 - tag_h):
            rect = (left, top, left + tag_w, top + tag_h)
            if top < 0 or top + tag_h > height or any(_overlaps(rect, other) for other in placed):
                continue
            placed.append(rect)
            where[i] = rect
            break
    return where


def draw_detections(
    image: np.ndarray, detections: Detections, color_order: str = "bgr", out: Optional[np.ndarray] = None
) -> np.ndarray:
    """Boxes and "label score" tags on a copy of ``image`` (HxWx3 in ``color_order`` or gray); returns it. All
    boxes are drawn first, then the tags where ``place_labels`` finds room, best score first, never on top of
    each other."""
    canvas = _canvas(image, out)
    order = "bgr" if image.ndim == 2 else color_order
    font_scale, thickness = _text_scale(canvas.shape[0])
    line = max(1, round(canvas.shape[0] / 240))
    count = len(detections)
    boxes = np.round(np.nan_to_num(np.asarray(detections.boxes, np.float64).reshape(-1, 4))).astype(np.int64)
    texts: List[str] = []
    sizes: List[Tuple[int, int]] = []
    colors: List[Color] = []
    text_heights: List[int] = []
    for i in range(count):
        x1, y1, x2, y2 = (int(v) for v in boxes[i])
        class_id = int(detections.class_ids[i])
        colors.append(class_color(class_id, order))
        label = detections.labels[i] if i < len(detections.labels) and detections.labels[i] else str(class_id)
        texts.append(f"{label} {float(detections.scores[i]):.2f}")
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colors[i], line)  # crisp: axis-aligned
        (tw, th), base = cv2.getTextSize(texts[i], cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        sizes.append((tw + 4, th + base + 2))
        text_heights.append(th)
    scores = np.asarray(detections.scores, np.float64).reshape(-1)[:count]
    ranking = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable").tolist()
    for i, rect in enumerate(place_labels(boxes, sizes, canvas.shape, ranking)):
        if rect is None:
            continue
        x, y = rect[0], rect[1]
        cv2.rectangle(canvas, (x, y), (rect[2] - 1, rect[3] - 1), colors[i], cv2.FILLED)
        cv2.putText(canvas, texts[i], (x + 2, y + text_heights[i] + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), thickness, cv2.LINE_AA)
    return canvas


TRUTH_COLOR: Color = (255, 255, 255)
TRUTH_OUTLINE: Color = (0, 0, 0)


def draw_truth_boxes(canvas: np.ndarray, boxes: np.ndarray, color: Color = TRUTH_COLOR,
                     outline: Color = TRUTH_OUTLINE) -> np.ndarray:
    """Ground-truth boxes (xyxy) drawn in place on ``canvas``: a 1-px ``color`` line between two dark ones, so a
    white truth box stays visible on white track edges and a dark one on asphalt; returns ``canvas``."""
    rows = np.round(np.nan_to_num(np.asarray(boxes, np.float64).reshape(-1, 4))).astype(np.int64)
    for x1, y1, x2, y2 in rows.tolist():
        cv2.rectangle(canvas, (x1, y1), (x2, y2), outline, 3)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, 1)
    return canvas


def draw_classification(
    image: np.ndarray, classification: Classification, color_order: str = "bgr", out: Optional[np.ndarray] = None
) -> np.ndarray:
    """The top classes as "label score" lines at the top left of a copy of ``image``; returns it."""
    canvas = _canvas(image, out)
    font_scale, thickness = _text_scale(canvas.shape[0])
    step = int(24 * font_scale) + 4
    for rank in range(len(classification)):
        class_id = int(classification.class_ids[rank])
        label = classification.labels[rank] if rank < len(classification.labels) else str(class_id)
        text = f"{label} {float(classification.scores[rank]):.2f}"
        origin = (4, 4 + step * (rank + 1))
        color = class_color(class_id, "bgr" if image.ndim == 2 else color_order)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, color, thickness, cv2.LINE_AA)
    return canvas


def draw_steering(
    image: np.ndarray,
    angle: float,
    throttle: float,
    color_order: str = "bgr",
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """A pilot overlay on a copy of ``image``: an arrow from the bottom centre turned by ``angle`` (-1 full
    left .. +1 full right, drawn as +-60 degrees) and as long as ``throttle``, a throttle bar on the right,
    and the numbers. Non-finite values (a model gone wrong) are shown as a red "STOP" instead of an arrow.
    """
    canvas = _canvas(image, out)
    order = "bgr" if image.ndim == 2 else color_order
    height, width = canvas.shape[:2]
    font_scale, thickness = _text_scale(height)
    red = (255, 40, 40) if order.lower() == "rgb" else (40, 40, 255)
    green = (40, 220, 40)
    white = (255, 255, 255)
    if not (math.isfinite(angle) and math.isfinite(throttle)):
        cv2.putText(
            canvas,
            f"STOP (angle {angle}, throttle {throttle})",
            (4, height // 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            red,
            thickness,
            cv2.LINE_AA,
        )
        return canvas
    steer = max(-1.0, min(1.0, float(angle)))
    speed = max(-1.0, min(1.0, float(throttle)))
    base = (width // 2, height - 1 - max(2, height // 40))
    length = max(abs(speed), 0.15) * height * 0.6
    heading = math.radians(60.0 * steer)
    direction = 1.0 if speed >= 0 else -1.0
    tip = (
        round(base[0] + length * math.sin(heading)),
        round(base[1] - direction * length * math.cos(heading)),
    )
    cv2.arrowedLine(
        canvas, base, tip, green if speed >= 0 else red, thickness + 1, cv2.LINE_AA, tipLength=0.2
    )
    # throttle bar along the right edge, filled from the middle up (forward) or down (reverse)
    bar_w = max(4, width // 40)
    x0, x1 = width - bar_w - 2, width - 2
    middle = height // 2
    cv2.rectangle(canvas, (x0, 2), (x1, height - 3), white, 1)
    end = round(middle - speed * (middle - 3))
    cv2.rectangle(
        canvas, (x0, min(middle, end)), (x1, max(middle, end)), green if speed >= 0 else red, cv2.FILLED
    )
    text = f"steer {float(angle):+.2f} thr {float(throttle):+.2f}"
    origin = (4, 4 + int(20 * font_scale))
    for color, width_ in (((0, 0, 0), thickness + 2), (white, thickness)):  # dark outline, readable anywhere
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, color, width_, cv2.LINE_AA)
    return canvas
