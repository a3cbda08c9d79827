"""NMS backends (OpenCV batched, offset trick, numpy), the shared finishing step, the EfficientNMS oracle."""

from __future__ import annotations

from typing import List

import cv2
import numpy as np
import pytest

from trt_perception.errors import ConfigError
from trt_perception.outputs.base import DetectionSettings
from trt_perception.outputs.nms import (
    batched_nms,
    efficient_nms_reference,
    finalize,
    finalize_frames,
    iou_matrix,
    nms_numpy,
)

# the opencv backend needs cv2.dnn.NMSBoxesBatched (OpenCV >= 4.7); Ubuntu 22.04's apt OpenCV (4.5) lacks it
OPENCV = pytest.param("opencv", marks=pytest.mark.skipif(not hasattr(cv2.dnn, "NMSBoxesBatched"),
                                                         reason="needs cv2.dnn.NMSBoxesBatched (OpenCV >= 4.7)"))


def greedy(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> List[int]:
    """Textbook greedy NMS, one box at a time (the slow, obvious oracle)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept: List[int] = []
    for i in order:
        if all(
            classes[i] != classes[k] or iou_matrix(boxes[i : i + 1], boxes[k : k + 1])[0, 0] <= iou
            for k in kept
        ):
            kept.append(i)
    return kept


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(20, 90, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 3, 0, 0], [1 / 3, 0, 0]])


@pytest.mark.parametrize("backend", ["auto", OPENCV, "offset", "numpy"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backends_match_textbook_greedy_nms(backend: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 150)
    scores = rng.permutation(np.linspace(0.05, 1.0, 150)).astype(np.float32)  # distinct: no ties
    classes = rng.integers(0, 4, 150)
    expected = greedy(boxes, scores, classes, 0.4)
    kept = batched_nms(boxes, scores, classes, 0.4, backend=backend)
    assert kept.tolist() == expected
    assert batched_nms(boxes, scores, classes, 0.4, top_k=5, backend=backend).tolist() == expected[:5]


@pytest.mark.parametrize("backend", [OPENCV, "offset", "numpy"])
def test_overlap_suppressed_within_a_class_only(backend: str) -> None:
    boxes = np.array([[0, 0, 100, 100], [5, 5, 105, 105], [5, 5, 105, 105]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert batched_nms(boxes, scores, np.array([1, 1, 2]), 0.5, backend=backend).tolist() == [0, 2]
    assert batched_nms(boxes, scores, np.array([1, 2, 3]), 0.5, backend=backend).tolist() == [0, 1, 2]
    negative = np.array([-0.5, 0.0, -2.0], np.float32)  # raw scores (activation none) still order NMS
    assert batched_nms(boxes, negative, np.array([1, 1, 2]), 0.5, backend=backend).tolist() == [1, 2]


def test_empty_input_and_unknown_backend() -> None:
    empty = batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int), 0.5)
    assert empty.shape == (0,)
    with pytest.raises(ConfigError, match="'cuda'"):
        batched_nms(
            np.ones((1, 4), np.float32), np.ones(1, np.float32), np.zeros(1, int), 0.5, backend="cuda"
        )


def test_numpy_nms_handles_long_suppression_chains() -> None:
    # Each box overlaps only its neighbours: greedy keeps 0, 2, 4, ... (1 is suppressed, so 2 survives).
    boxes = np.array([[i * 6, 0, i * 6 + 10, 10] for i in range(9)], np.float32)
    scores = np.linspace(1, 0.1, 9).astype(np.float32)
    assert nms_numpy(boxes, scores, None, 0.2).tolist() == [0, 2, 4, 6, 8]


def test_finalize_filters_sorts_caps_scales_and_orders_corners() -> None:
    boxes = np.array([[0.5, 0.5, 0.1, 0.1], [0, 0, 1, 1], [0.2, 0.2, 0.4, 0.4]], np.float32)
    scores = np.array([0.6, 0.9, np.nan], np.float32)
    result = finalize(
        boxes, scores, np.array([4, 2, 1]), DetectionSettings(0.5, max_detections=10), (100, 50)
    )
    assert result.class_ids.tolist() == [2, 4]  # NaN score dropped, sorted by score
    np.testing.assert_allclose(result.boxes, [[0, 0, 100, 50], [10, 5, 50, 25]])
    capped = finalize(boxes, scores, np.array([4, 2, 1]), DetectionSettings(0.0, max_detections=1))
    assert capped.class_ids.tolist() == [2]


def test_efficient_nms_reference_semantics() -> None:
    # Corner coding, no anchors: two overlapping class-1 boxes, one class-2 box on top, a background score.
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]]], np.float32)
    scores = np.zeros((1, 4, 3), np.float32)
    scores[0, :, 1] = [0.9, 0.8, 0.0, 0.0]
    scores[0, 2, 2] = 0.7
    scores[0, 3, 0] = 0.95  # background class 0
    num, out_boxes, out_scores, out_classes = efficient_nms_reference(
        boxes, scores, score_threshold=0.5, iou_threshold=0.5, max_output_boxes=5, background_class=0
    )
    assert num.tolist() == [[2]] and num.dtype == np.int32
    assert out_classes[0].tolist() == [1, 2, 0, 0, 0]
    np.testing.assert_allclose(out_scores[0], [0.9, 0.7, 0, 0, 0])
    np.testing.assert_allclose(out_boxes[0, 1], [0, 0, 10, 10])
    assert not out_boxes[0, 2:].any()  # padding is zeros
    agnostic = efficient_nms_reference(
        boxes,
        scores,
        score_threshold=0.5,
        iou_threshold=0.5,
        max_output_boxes=5,
        background_class=0,
        class_agnostic=True,
    )
    assert agnostic[0].tolist() == [[1]]
    no_background = efficient_nms_reference(boxes, scores, score_threshold=0.5, iou_threshold=0.5)
    assert no_background[3][0, 0] == 0 and no_background[0].tolist() == [[3]]


def test_efficient_nms_reference_decoders_and_sigmoid() -> None:
    anchors = np.array([[[0.5, 0.5, 0.2, 0.4]]], np.float32)  # center-size (c0, c1, s0, s1)
    deltas = np.array([[[0.5, -0.25, np.log(2.0), 0.0]]], np.float32)
    logits = np.array([[[0.0, 2.0]]], np.float32)
    num, boxes, scores, classes = efficient_nms_reference(
        deltas, logits, anchors, score_threshold=0.8, iou_threshold=0.5, box_coding=1, score_activation=True
    )
    # centre (0.5 + 0.5*0.2, 0.5 - 0.25*0.4) = (0.6, 0.4); size (0.4, 0.4)
    np.testing.assert_allclose(boxes[0, 0], [0.4, 0.2, 0.8, 0.6], atol=1e-6)
    np.testing.assert_allclose(scores[0, 0], 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    assert num.tolist() == [[1]] and classes[0, 0] == 1  # sigmoid(0) = 0.5 < 0.8: class 0 dropped
    corner = efficient_nms_reference(
        np.full((1, 1, 4), 0.1, np.float32),
        logits,
        np.zeros((1, 1, 4), np.float32),
        score_threshold=0.1,
        iou_threshold=0.5,
        box_coding=0,
    )
    np.testing.assert_allclose(corner[1][0, 0], [0.1, 0.1, 0.1, 0.1])


@pytest.mark.parametrize("settings", [
    DetectionSettings(0.3, 0.45, 100), DetectionSettings(0.0, 0.45, 2),
    DetectionSettings(0.5, 0.45, 5, frozenset({1, 3})),
])
def test_finalize_frames_equals_finalize_per_frame(settings: DetectionSettings) -> None:
    """Several frames' rows in one pass: per frame the same arrays as ``finalize`` (ties keep their order, NaN
    and inf rows dropped, the cap per frame, the allow-list), empty frames included."""
    rng = np.random.default_rng(3)
    frames = np.sort(rng.choice([0, 2, 3, 5], size=40))  # frames 1 and 4 have no rows
    scores = rng.choice([0.2, 0.4, 0.6, 0.6, 0.9], size=40).astype(np.float32)  # ties
    scores[[3, 17]] = [np.nan, np.inf]
    boxes = rng.uniform(0, 100, (40, 4)).astype(np.float32)
    boxes[9, 2] = np.inf
    classes = rng.integers(0, 4, 40)
    got = finalize_frames(boxes, scores, classes, frames, 6, settings)
    assert len(got) == 6
    for frame, result in enumerate(got):
        rows = frames == frame
        want = finalize(boxes[rows], scores[rows], classes[rows], settings)
        for field in ("boxes", "scores", "class_ids"):
            a, b = getattr(result, field), getattr(want, field)
            assert a.dtype == b.dtype and np.array_equal(a, b), (frame, field)
