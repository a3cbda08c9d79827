"""``evaluation.mot_metrics``: CLEAR-MOT and identity measures through motmetrics on hand-made sequences whose
numbers are counted by hand (MOTA = 1 - (FN + FP + IDSW) / GT; IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN))."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest

from trt_perception.tools.evaluation import mot_metrics


def _motmetrics_imports() -> bool:
    try:  # a real import: a motmetrics installed without pandas is found but does not import
        import motmetrics  # noqa: F401
    except Exception:
        return False
    return True


# a mark, not a module-level importorskip: under pytest 7 (ROS' colcon test) that one skipped the whole session
pytestmark = pytest.mark.skipif(not _motmetrics_imports(),
                                reason="needs motmetrics (pip install 'trt_perception[eval]')")

A = [0.0, 0.0, 10.0, 10.0]
B = [50.0, 0.0, 60.0, 10.0]


def frame(truth: List[List[float]], truth_ids: List[str], boxes: List[List[float]], ids: List[str],
          labels: List[str] = (), truth_labels: List[str] = ()) -> tuple:
    return (np.asarray(truth, float).reshape(-1, 4), list(truth_labels) or ["cone"] * len(truth), truth_ids,
            np.asarray(boxes, float).reshape(-1, 4), list(labels) or ["cone"] * len(boxes), ids)


def test_perfect_tracks() -> None:
    frames = [frame([A, B], ["a", "b"], [A, B], ["1", "2"]) for _ in range(5)]
    m = mot_metrics(frames)
    assert m["mota"] == 1.0 and m["idf1"] == 1.0 and m["num_switches"] == 0 and m["motp"] == 0.0
    assert (m["num_objects"], m["num_unique_objects"], m["num_frames"]) == (10, 2, 5)


def test_an_id_swap_a_miss_and_a_false_positive() -> None:
    frames = [
        frame([A, B], ["a", "b"], [A, B], ["1", "2"]),
        frame([A, B], ["a", "b"], [A, B], ["1", "2"]),
        frame([A, B], ["a", "b"], [A, B], ["2", "1"]),  # the tracker swapped them: two id switches
        frame([A, B], ["a", "b"], [A, B], ["2", "1"]),
        frame([A, B], ["a", "b"], [A], ["2"]),  # b missed
        frame([A], ["a"], [A, [100, 100, 110, 110]], ["2", "7"]),  # a false positive
    ]
    m = mot_metrics(frames)
    assert (m["num_switches"], m["num_misses"], m["num_false_positives"], m["num_objects"]) == (2, 1, 1, 11)
    assert m["mota"] == pytest.approx(1 - (1 + 1 + 2) / 11)
    # best identity mapping a<->2 (matched in 4 frames), b<->1 (2 frames): IDTP 6 of 11 truth and 11 track boxes
    assert m["idtp"] == 6 and m["idfn"] == 11 - 6 and m["idfp"] == 11 - 6
    assert m["idf1"] == pytest.approx(2 * 6 / (2 * 6 + 5 + 5))


def test_boxes_without_an_id_are_not_tracker_output_and_classes_must_agree() -> None:
    shifted = [6.0, 0.0, 16.0, 10.0]  # IoU 0.25 with A: below 0.5, no match
    frames = [
        frame([A], ["a"], [A], [""]),  # an unconfirmed detection: not a hypothesis -> a miss, not a FP
        frame([A], ["a"], [A], ["1"], labels=["car"]),  # wrong class: a miss and a false positive
        frame([A], ["a"], [shifted], ["1"]),
    ]
    m = mot_metrics(frames)
    assert (m["num_misses"], m["num_false_positives"], m["num_predictions"]) == (3, 2, 2)
    assert m["mota"] == pytest.approx(1 - 5 / 3)
