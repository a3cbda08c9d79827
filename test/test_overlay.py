"""Overlays: boxes land where the detections are, in the class's color and the image's channel order; the
input frame (often a read-only message view) is never touched; the steering gauge points the right way."""

from __future__ import annotations

import numpy as np
import pytest

from trt_perception.errors import ImageError
from trt_perception.overlay import class_color, draw_detections, draw_steering
from trt_perception.results import Detections


def detections(*rows: tuple) -> Detections:
    boxes = np.array([r[:4] for r in rows], np.float32).reshape(-1, 4)
    return Detections(
        boxes=boxes,
        scores=np.array([r[4] for r in rows], np.float32),
        class_ids=np.array([r[5] for r in rows], np.int64),
        labels=[r[6] for r in rows],
    )


def test_palette_is_deterministic_distinct_and_ordered() -> None:
    colors = [class_color(i) for i in range(20)]
    assert colors == [class_color(i) for i in range(20)]
    assert len(set(colors)) == 20
    for i in range(20):
        assert class_color(i, "rgb") == class_color(i, "bgr")[::-1]


@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_boxes_are_drawn_in_class_color_on_a_copy(order: str) -> None:
    frame = np.zeros((240, 320, 3), np.uint8)
    frame.setflags(write=False)  # decoded frames are often read-only views of the message
    dets = detections((40, 60, 200, 180, 0.87, 3, "cone"), (250, 20, 300, 100, 0.5, 7, ""))
    drawn = draw_detections(frame, dets, order)
    assert drawn.shape == frame.shape and drawn is not frame and not frame.any()
    assert tuple(drawn[120, 40]) == class_color(3, order)  # left edge of the first box, mid-height
    assert tuple(drawn[180, 120]) == class_color(3, order)  # bottom edge
    assert tuple(drawn[60, 250]) == class_color(7, order)
    assert not drawn[100:170, 60:180].any()  # inside stays untouched
    assert drawn[40:60, 40:200].any()  # the "cone 0.87" tag above the box


def test_gray_frames_reusable_out_buffer_and_empty_detections() -> None:
    gray = np.full((100, 120), 90, np.uint8)
    out = np.empty((100, 120, 3), np.uint8)
    drawn = draw_detections(gray, detections((10, 30, 60, 90, 0.9, 1, "car")), "bgr", out=out)
    assert drawn is out
    assert tuple(out[60, 10]) == class_color(1, "bgr")
    assert tuple(out[95, 110]) == (90, 90, 90)
    untouched = draw_detections(np.full((10, 10, 3), 5, np.uint8), Detections.empty(), "rgb")
    assert (untouched == 5).all()
    with pytest.raises(ImageError, match="out buffer"):
        draw_detections(gray, Detections.empty(), "bgr", out=np.empty((10, 10, 3), np.uint8))
    with pytest.raises(ImageError, match="overlay image"):
        draw_detections(np.zeros((10, 10, 4), np.uint8), Detections.empty(), "bgr")


def changed_columns(before: np.ndarray, after: np.ndarray, rows: slice) -> np.ndarray:
    return np.nonzero((before[rows] != after[rows]).any(axis=(0, 2)))[0]


@pytest.mark.parametrize(("angle", "side"), [(-0.8, "left"), (0.8, "right"), (0.0, "centre")])
def test_steering_arrow_points_the_right_way(angle: float, side: str) -> None:
    frame = np.zeros((120, 160, 3), np.uint8)
    drawn = draw_steering(frame, angle, 0.6)
    assert not frame.any()
    cols = changed_columns(frame, drawn, slice(40, 110))  # below the text line, left of the throttle bar
    cols = cols[cols < 150]
    centre = float(np.mean(cols))
    if side == "left":
        assert centre < 70
    elif side == "right":
        assert centre > 90
    else:
        assert 70 <= centre <= 90


def test_throttle_bar_and_non_finite_values() -> None:
    frame = np.zeros((120, 160, 3), np.uint8)
    forward = draw_steering(frame, 0.0, 1.0)
    reverse = draw_steering(frame, 0.0, -1.0)
    inner = 156  # a column inside the bar along the right edge
    assert forward[10:55, inner, 1].min() > 150 and not forward[70:110, inner].any()  # green, upwards
    assert reverse[70:110, inner, 2].min() > 150 and not reverse[10:55, inner].any()  # red, downwards
    stop = draw_steering(frame, float("nan"), 0.3, "bgr")
    assert stop.any() and (stop[..., 2] >= stop[..., 0]).all()  # red text, no arrow
    gray = draw_steering(np.zeros((60, 80), np.uint8), 0.2, 0.2)
    assert gray.shape == (60, 80, 3)


def test_crowded_labels_never_overlap_and_the_best_scores_keep_theirs() -> None:
    """A queue of cones 12 px apart: every tag used to sit above its own box, each covering its neighbours'."""
    from trt_perception.overlay import place_labels

    rows = [(20 + 12 * i, 100, 60 + 12 * i, 160, 0.9 - 0.05 * i, 1 + i, f"cone{i}") for i in range(10)]
    dets = detections(*rows)
    boxes = np.asarray(dets.boxes, np.int64)
    sizes = [(70, 16)] * len(rows)
    ranking = list(range(len(rows)))
    rects = place_labels(boxes, sizes, (240, 320, 3), ranking)
    shown = [r for r in rects if r is not None]
    assert len(shown) >= 4 and rects[0] is not None and rects[0][3] <= 100  # the best: above its box
    for a in range(len(shown)):
        for b in range(a + 1, len(shown)):
            ra, rb = shown[a], shown[b]
            assert not (ra[0] < rb[2] and rb[0] < ra[2] and ra[1] < rb[3] and rb[1] < ra[3]), (ra, rb)
    assert all(r[0] >= 0 and r[2] <= 320 and r[1] >= 0 and r[3] <= 240 for r in shown)

    # drawn: each tag is one solid block of its class colour (no later tag painted over part of it)
    frame = np.zeros((240, 320, 3), np.uint8)
    drawn = draw_detections(frame, dets, "bgr")
    font_rects = place_labels(boxes, _sizes(dets, 240), (240, 320, 3), ranking)
    for i, rect in enumerate(font_rects):
        if rect is None:
            continue
        corner = drawn[rect[1], rect[0]]  # the tag's fill: its class colour, not a neighbour's
        assert tuple(corner) == class_color(int(dets.class_ids[i]), "bgr"), i


def _sizes(dets: Detections, height: int) -> list:
    import cv2

    from trt_perception.overlay import _text_scale

    scale, thickness = _text_scale(height)
    out = []
    for label, score in zip(dets.labels, dets.scores):
        (tw, th), base = cv2.getTextSize(f"{label} {float(score):.2f}", cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        out.append((tw + 4, th + base + 2))
    return out


def test_truth_boxes_stay_visible_on_white_and_on_black() -> None:
    from trt_perception.overlay import draw_truth_boxes

    for background in (255, 0):
        canvas = np.full((100, 100, 3), background, np.uint8)
        draw_truth_boxes(canvas, np.array([[20, 20, 80, 80]], np.float32))
        edge = canvas[50, 18:23]  # across the left edge: outline, line, outline
        assert (edge.min(axis=1) == 0).any() and (edge.max(axis=1) == 255).any()
        assert (canvas[40:60, 40:60] == background).all()
