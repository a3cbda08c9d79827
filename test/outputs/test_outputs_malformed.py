"""Malformed outputs on one frame (dynamic shapes, NaN counts, wrong row widths, empty tensors): every parser
raises the package's OutputError naming the tensor, the shape it gave and what the format expects, never
numpy's IndexError/ValueError/OverflowError; NaN or inf boxes and scores never reach the detections."""

from __future__ import annotations

from typing import Dict

import numpy as np
import pytest
from parser_factory import DETECT, PARSER_CASES

from trt_perception.errors import OutputError
from trt_perception.outputs import DetectionSettings, RawDetections
from trt_perception.outputs.nms import finalize


def parse(case: str, outputs: Dict[str, np.ndarray]) -> object:
    parser = PARSER_CASES[case]
    return parser.make().parse(outputs, parser.settings)


def valid(case: str, **replace: np.ndarray) -> Dict[str, np.ndarray]:
    outputs = PARSER_CASES[case].outputs(np.random.default_rng(0))
    outputs.update(replace)
    return outputs


def refused(case: str, outputs: Dict[str, np.ndarray], *needles: str) -> str:
    with pytest.raises(OutputError) as info:
        parse(case, outputs)
    text = str(info.value)
    for needle in needles:
        assert needle in text, text
    assert "expect" in text and "fix:" in text, text
    return text


COUNT_CASES = [
    ("efficient_nms", np.zeros((1, 0), np.int32), "[1, 0]"),
    ("efficient_nms", np.zeros((0,), np.int32), "[0]"),
    ("batched_nms", np.array([[np.nan]], np.float32), "nan"),
    ("batched_nms", np.array([[np.inf]], np.float32), "inf"),
    ("batched_nms", np.array([[-np.inf]], np.float32), "-inf"),
    ("batched_nms", np.array([[2.5]], np.float32), "2.5"),
    ("efficient_nms", np.array([[2**40]], np.int64), str(2**40)),
    ("efficient_nms", np.array([[-1]], np.int32), "-1"),
]


@pytest.mark.parametrize("case,count,needle", COUNT_CASES)
def test_bad_detection_counts(case: str, count: np.ndarray, needle: str) -> None:
    refused(case, valid(case, num_detections=count), "'num_detections'", needle)


def test_a_bad_count_is_shown_in_the_shape_the_model_gave() -> None:
    """Not the batch item's 0-d value ("shape []"): the [1, 1] tensor the user can find with inspect."""
    refused("batched_nms", valid("batched_nms", num_detections=np.array([[np.nan]], np.float32)), "[1, 1]")


def test_nms_trt_count_and_rows() -> None:
    refused("nms_trt", valid("nms_trt", NMS_1=np.zeros((1, 0, 1), np.float32)), "'NMS_1'", "[1, 0, 1]")
    refused("nms_trt", valid("nms_trt", NMS=np.zeros((1, 10, 6), np.float32)), "'NMS'", "[1, 10, 6]", "7")
    refused("nms_trt", valid("nms_trt", NMS=np.zeros((7,), np.float32)), "'NMS'", "[7]")
    refused("nms_trt", valid("nms_trt", NMS_1=np.array([[[1.5]]], np.float64)), "'NMS_1'", "float64")


def test_nms_trt_inf_labels_are_dropped_not_cast() -> None:
    rows = np.zeros((1, 3, 7), np.float32)
    rows[0, :, 2] = 0.9
    rows[0, :, 3:7] = [0.1, 0.1, 0.5, 0.5]
    rows[0, :, 1] = [np.inf, np.nan, 2.0]
    count = np.array([[[3]]], np.int32).view(np.float32)
    result = parse("nms_trt", {"NMS": rows, "NMS_1": count})
    assert isinstance(result, RawDetections)
    assert result.class_ids.tolist() == [2]


@pytest.mark.parametrize("case", ["efficient_nms", "batched_nms"])
def test_plugin_rows_of_the_wrong_width_or_length(case: str) -> None:
    names = {"efficient_nms": ("detection_boxes", "detection_scores"), "batched_nms": ("nmsed_boxes", "nmsed_scores")}
    boxes, scores = names[case]
    refused(case, valid(case, **{boxes: np.zeros((1, 8, 5), np.float32)}), repr(boxes), "[1, 8, 5]")
    refused(case, valid(case, **{boxes: np.zeros((1, 8), np.float32)}), repr(boxes), "[1, 8]")
    short = valid(case, **{scores: np.zeros((1, 2), np.float32)})
    short["num_detections"] = np.array([[5]], np.int32)
    refused(case, short, repr(scores), "[1, 2]")


def test_ssd_raw_empty_and_rankless() -> None:
    refused("ssd_raw_sigmoid", valid("ssd_raw_sigmoid", scores=np.zeros((1, 18, 0), np.float32)), "'scores'",
            "[1, 18, 0]")  # fmt: skip
    refused("ssd_raw_sigmoid", valid("ssd_raw_sigmoid", scores=np.float32(1.0)), "'scores'", "[]")
    refused("ssd_raw_softmax", valid("ssd_raw_softmax", boxes=np.zeros((1, 18, 3), np.float32)), "'boxes'",
            "[1, 18, 3]")  # fmt: skip


@pytest.mark.parametrize("case", ["yolo", "yolo_auto", "yolov5", "yolox", "yolox_decode"])
def test_yolo_bad_frames(case: str) -> None:
    name = "output0" if case in ("yolo", "yolo_auto") else "output"
    refused(case, {name: np.zeros((84,), np.float32)}, repr(name), "[84]")
    refused(case, {name: np.zeros((1, 0, 0), np.float32)}, repr(name), "[1, 0, 0]")


def test_yolox_decode_more_rows_than_its_grid() -> None:
    refused("yolox_decode", {"output": np.zeros((1, 90, 8), np.float32)}, "'output'", "90")


def test_yolo_layout_found_wrong_on_a_frame_is_an_output_error() -> None:
    # channels_first with 3 channels: no class scores (4 + C expected)
    refused("yolo", {"output0": np.zeros((1, 3, 84), np.float32)}, "'output0'")


@pytest.mark.parametrize("case", ["end_to_end_6", "end_to_end_7"])
def test_end_to_end_bad_frames(case: str) -> None:
    refused(case, {"output0": np.zeros((6,), np.float32)}, "'output0'", "[6]")
    refused(case, {"output0": np.zeros((1, 12, 5), np.float32)}, "'output0'", "[1, 12, 5]")
    refused(case, {"output0": np.float32(0)}, "'output0'", "[]")


def test_end_to_end_inf_class_is_dropped() -> None:
    rows = np.array([[[1, 1, 9, 9, 0.9, np.inf], [2, 2, 8, 8, 0.8, 1e30], [3, 3, 7, 7, 0.7, 2]]], np.float32)
    result = parse("end_to_end_6", {"output0": rows})
    assert isinstance(result, RawDetections)
    assert result.class_ids.tolist() == [2]


def test_boxes_scores_bad_frames() -> None:
    refused("boxes_scores", valid("boxes_scores", scores=np.zeros((30,), np.float32)), "'scores'", "[30]")
    refused("boxes_scores", valid("boxes_scores", boxes=np.zeros((1, 30, 3), np.float32)), "'boxes'", "[1, 30, 3]")
    refused("boxes_scores", valid("boxes_scores", boxes=np.zeros((1, 10, 4), np.float32)), "'boxes'", "[1, 10, 4]")


def test_classification_empty() -> None:
    refused("classification", {"output0": np.zeros((1, 0), np.float32)}, "'output0'", "[1, 0]")
    refused("classification", {"output0": np.zeros((0,), np.float32)}, "'output0'", "[0]")


@pytest.mark.parametrize("case", ["segmentation_scores", "segmentation_ids", "segmentation_binary"])
def test_segmentation_bad_frames(case: str) -> None:
    refused(case, {"output0": np.zeros((16,), np.float32)}, "'output0'", "[16]")
    refused(case, {"output0": np.zeros((1, 0, 16, 16), np.float32)}, "'output0'", "[1, 0, 16, 16]")
    refused(case, {"output0": np.zeros((1, 16, 0), np.float32)}, "'output0'", "[1, 16, 0]")
    refused(case, {"output0": np.zeros((1, 16, 16), bool)}, "'output0'", "bool")
    refused(case, {"output0": np.zeros((1, 3, 16, 16), np.float64)}, "'output0'", "float64")


def test_steering_empty_outputs() -> None:
    refused("steering_linear", valid("steering_linear", angle=np.zeros((0,), np.float32)), "'angle'", "[0]")
    refused("steering_linear", valid("steering_linear", throttle=np.zeros((1, 0), np.float32)), "'throttle'",
            "[1, 0]")  # fmt: skip
    refused("steering_combined", {"out": np.zeros((1, 1), np.float32)}, "'out'", "[1, 1]")
    refused("steering_combined", {"out": np.float32(0.5)}, "'out'", "[]")
    refused("steering_categorical", valid("steering_categorical", angle=np.float32(0)), "'angle'", "[]")
    refused("steering_categorical", valid("steering_categorical", throttle=np.zeros((1, 0), np.float32)),
            "'throttle'", "[1, 0]")  # fmt: skip


def test_missing_or_non_numeric_output() -> None:
    refused("steering_linear", {"angle": np.zeros((1, 1), np.float32)}, "'throttle'", "missing")
    refused("classification", {"output0": np.array([["a", "b"]])}, "'output0'", "<U1")
    refused("yolo", {"output0": np.zeros((1, 7, 84), np.complex64)}, "'output0'", "complex64")


# ------------------------------------------------------------------------------ non-finite detections


def test_finalize_drops_non_finite_boxes_and_scores() -> None:
    boxes = np.array([[0, 0, 1, 1], [np.nan, 0, 1, 1], [0, 0, np.inf, 1], [0, 0, 2, 2], [1, 1, 3, 3]], np.float32)
    scores = np.array([0.9, 0.9, 0.9, np.inf, 0.8], np.float32)
    result = finalize(boxes, scores, np.arange(5), DetectionSettings(0.1, 0.5, 10))
    assert result.class_ids.tolist() == [0, 4]
    assert np.isfinite(result.boxes).all() and np.isfinite(result.scores).all()
    # a finite box that overflows when scaled to pixels is dropped too
    huge = finalize(np.full((1, 4), 3e38, np.float32), [0.9], [1], DetectionSettings(0.1, 0.5, 10), (640, 480))
    assert huge.boxes.shape == (0, 4)


@pytest.mark.parametrize("case", [c for c, p in PARSER_CASES.items() if p.task == "detection"])
def test_nan_and_inf_never_reach_the_detections(case: str) -> None:
    parser = PARSER_CASES[case]
    rng = np.random.default_rng(1)
    for _ in range(20):
        outputs = parser.outputs(rng)
        for array in outputs.values():
            if array.dtype.kind == "f" and array.size:
                flat = array.reshape(-1)
                picks = rng.integers(0, flat.size, max(1, flat.size // 4))
                flat[picks] = rng.choice([np.nan, np.inf, -np.inf], picks.size)
        try:
            result = parser.make().parse(outputs, DETECT)
        except OutputError:
            continue  # a NaN count, say
        assert isinstance(result, RawDetections)
        assert np.isfinite(result.boxes).all() and np.isfinite(result.scores).all(), case
