"""tools/evaluation.py: COCO mAP through faster-coco-eval and the segmentation confusion matrix."""

from __future__ import annotations

import numpy as np
import pytest

from trt_perception.tools.evaluation import ConfusionMatrix, coco_map


def test_perfect_detections_score_one_and_misses_lower_it() -> None:
    pytest.importorskip("faster_coco_eval")
    truth = np.array([[10, 10, 50, 50], [60, 60, 90, 100]], np.float64)
    perfect = [(truth, ["cone", "box"], truth, np.array([0.9, 0.8]), ["cone", "box"])]
    assert coco_map(perfect) == {"map_50": pytest.approx(1.0), "map_50_95": pytest.approx(1.0)}
    shifted = truth + np.array([4, 0, 4, 0])  # IoU 0.82 for the cone, 0.76 for the box: counts at .5, not at .9
    partial = coco_map([(truth, ["cone", "box"], shifted, np.array([0.9, 0.8]), ["cone", "box"])])
    assert partial["map_50"] == pytest.approx(1.0) and 0.3 < partial["map_50_95"] < 0.9
    wrong_class = coco_map([(truth, ["cone", "box"], truth, np.array([0.9, 0.8]), ["box", "cone"])])
    assert wrong_class["map_50"] == pytest.approx(0.0)


def test_no_predictions_and_no_truth() -> None:
    pytest.importorskip("faster_coco_eval")
    truth = np.array([[10, 10, 50, 50]], np.float64)
    empty = np.zeros((0, 4))
    assert coco_map([(truth, ["cone"], empty, np.zeros(0), [])]) == {"map_50": 0.0, "map_50_95": 0.0}
    nothing = coco_map([(empty, [], empty, np.zeros(0), [])])
    assert np.isnan(nothing["map_50"])


def test_missing_faster_coco_eval_returns_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "faster_coco_eval", None)
    assert coco_map([(np.zeros((0, 4)), [], np.zeros((0, 4)), np.zeros(0), [])]) is None


def test_confusion_matrix_iou_by_hand() -> None:
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.uint8)
    predicted = np.array([[0, 1, 1, 1], [0, 0, 1, 255]], np.uint8)  # 255 = unseen: skipped
    matrix = ConfusionMatrix(2)
    matrix.add(truth, predicted)
    # class 0: tp 3, fp 0, fn 1 -> 3/4; class 1: tp 3 (one unseen pixel skipped), fp 1 -> 3/4
    assert matrix.iou().tolist() == pytest.approx([0.75, 0.75])
    assert matrix.miou() == pytest.approx(0.75)
    assert matrix.pixel_accuracy() == pytest.approx(6 / 7)


def test_confusion_matrix_resizes_truth_and_skips_absent_classes() -> None:
    matrix = ConfusionMatrix(3)
    truth = np.zeros((2, 2), np.uint8)
    truth[:, 1] = 1
    predicted = np.repeat(np.repeat(truth, 4, axis=0), 4, axis=1)  # truth at a quarter of the size
    matrix.add(truth, predicted)
    iou = matrix.iou()
    assert iou[:2].tolist() == [1.0, 1.0] and np.isnan(iou[2])
    assert matrix.miou() == 1.0 and matrix.frames == 1


@pytest.mark.parametrize("classes", [2, 3, 15, 16])
def test_confusion_matrix_opencv_path_counts_as_numpy(classes: int) -> None:
    """Up to 15 classes the pairs are counted in OpenCV; labels >= classes (255: ignore) are skipped either way,
    views with strides included; 16 classes take numpy's bincount."""
    rng = np.random.default_rng(classes)
    matrix = ConfusionMatrix(classes)
    expected = np.zeros((classes, classes), np.int64)
    for _ in range(3):
        truth = rng.integers(0, classes + 2, (60, 80)).astype(np.uint8)
        truth[truth == classes + 1] = 255
        predicted = rng.integers(0, classes + 1, (60, 80)).astype(np.uint8)
        for t, p in ((truth, predicted), (truth[:, ::2], predicted[:, ::2])):
            matrix.add(t, p)
            valid = (t < classes) & (p < classes)
            expected += np.bincount(t[valid].astype(np.int64) * classes + p[valid],
                                    minlength=classes**2).reshape(classes, classes)
    assert np.array_equal(matrix.matrix, expected)
    assert matrix.frames == 6
