"""efficient_nms and batched_nms: TensorRT NMS plugin outputs read by tensor name."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import pytest

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import OutputError, SpecError
from trt_perception.outputs import DetectionSettings, create_parser
from trt_perception.outputs.base import OutputParser
from trt_perception.outputs.plugin_nms import BatchedNmsParser, EfficientNmsParser
from trt_perception.spec import OUTPUT_FORMATS, parse_spec

FORMATS = ["efficient_nms", "batched_nms"]
ALL = DetectionSettings(score_threshold=0.0, max_detections=100)


def make_parser(fmt: str, **output: Any) -> OutputParser:
    data: Dict[str, Any] = {
        "task": "detection",
        "input": {"name": "Input", "height": 300, "width": 400},
        "output": {"format": fmt, **output},
    }
    return create_parser(parse_spec(data))


def names(fmt: str) -> Dict[str, str]:
    return dict(OUTPUT_FORMATS[fmt].default_tensors)


def plugin_outputs(
    fmt: str, boxes: List[List[float]], scores: List[float], classes: List[int], n: int = 8, batch: int = 1
) -> Dict[str, np.ndarray]:
    out_boxes = np.zeros((batch, n, 4), np.float32)
    out_scores = np.zeros((batch, n), np.float32)
    out_classes = np.zeros((batch, n), np.int32 if fmt == "efficient_nms" else np.float32)
    k = len(scores)
    out_boxes[0, :k], out_scores[0, :k], out_classes[0, :k] = boxes, scores, classes
    if batch > 1:  # other images hold different detections that must not leak into image 0
        out_boxes[1:], out_scores[1:], out_classes[1:] = 0.5, 0.99, 7
    count = np.full((batch, 1), k, np.int32)
    roles = names(fmt)
    return {
        roles["num_detections"]: count,
        roles["boxes"]: out_boxes,
        roles["scores"]: out_scores,
        roles["classes"]: out_classes,
    }


BOXES = [[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.4, 0.4]]
SCORES = [0.9, 0.8, 0.3]
CLASSES = [3, 1, 2]


def test_registry_names_the_classes() -> None:
    assert isinstance(make_parser("efficient_nms"), EfficientNmsParser)
    assert isinstance(make_parser("batched_nms"), BatchedNmsParser)


@pytest.mark.parametrize("fmt", FORMATS)
def test_golden_boxes_default_normalized_xyxy(fmt: str) -> None:
    result = make_parser(fmt).parse(plugin_outputs(fmt, BOXES, SCORES, CLASSES), DetectionSettings(0.5))
    np.testing.assert_allclose(result.boxes, [[40, 60, 200, 180], [0, 0, 400, 300]], atol=1e-4)
    np.testing.assert_allclose(result.scores, [0.9, 0.8])
    assert result.class_ids.tolist() == [3, 1]
    assert result.boxes.dtype == np.float32 and result.class_ids.dtype == np.int64


@pytest.mark.parametrize("fmt", FORMATS)
def test_yxyx_and_pixel_boxes(fmt: str) -> None:
    yxyx = [[b[1], b[0], b[3], b[2]] for b in BOXES]
    result = make_parser(fmt, box_order="yxyx").parse(plugin_outputs(fmt, yxyx, SCORES, CLASSES), ALL)
    np.testing.assert_allclose(result.boxes[0], [40, 60, 200, 180], atol=1e-4)
    pixels = [[10, 20, 110, 220]]
    result = make_parser(fmt, normalized=False).parse(plugin_outputs(fmt, pixels, [0.9], [1]), ALL)
    np.testing.assert_allclose(result.boxes, [[10, 20, 110, 220]])


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_past_the_count_and_other_batch_items_are_ignored(fmt: str) -> None:
    outputs = plugin_outputs(fmt, BOXES, SCORES, CLASSES, batch=3)
    roles = names(fmt)
    outputs[roles["num_detections"]][0, 0] = 2
    result = make_parser(fmt).parse(outputs, ALL)
    assert result.class_ids.tolist() == [3, 1]
    outputs[roles["num_detections"]] = outputs[roles["num_detections"]].reshape(-1)  # [B] as BatchedNMS gives
    assert make_parser(fmt).parse(outputs, ALL).class_ids.tolist() == [3, 1]


@pytest.mark.parametrize("fmt", FORMATS)
def test_threshold_allow_list_max_and_sorting(fmt: str) -> None:
    parser = make_parser(fmt)
    outputs = plugin_outputs(fmt, BOXES[::-1], SCORES[::-1], CLASSES[::-1])
    assert parser.parse(outputs, ALL).class_ids.tolist() == [3, 1, 2]
    assert parser.parse(outputs, DetectionSettings(0.85)).class_ids.tolist() == [3]
    assert parser.parse(
        outputs, DetectionSettings(0.0, allowed_class_ids=frozenset({2}))
    ).class_ids.tolist() == [2]
    assert parser.parse(outputs, DetectionSettings(0.0, max_detections=1)).class_ids.tolist() == [3]


def test_batched_nms_float_class_ids_are_rounded() -> None:
    outputs = plugin_outputs("batched_nms", BOXES, SCORES, CLASSES)
    outputs["nmsed_classes"][0, :3] = [2.9999, 1.0001, 2.0]
    assert make_parser("batched_nms").parse(outputs, ALL).class_ids.tolist() == [3, 1, 2]


@pytest.mark.parametrize("fmt", FORMATS)
def test_count_out_of_bounds_is_an_error(fmt: str) -> None:
    outputs = plugin_outputs(fmt, BOXES, SCORES, CLASSES, n=4)
    outputs["num_detections"][0, 0] = 5
    with pytest.raises(OutputError, match=r"'num_detections'.*5 detections.*4 rows"):
        make_parser(fmt).parse(outputs, ALL)


def specs(
    fmt: str, class_dtype: Any = None, boxes_shape: tuple = (None, 100, 4), scores_shape: tuple = (None, 100)
) -> List[TensorSpec]:
    roles = names(fmt)
    if class_dtype is None:
        class_dtype = np.int32 if fmt == "efficient_nms" else np.float32
    return [
        TensorSpec(roles["num_detections"], (None, 1), np.dtype(np.int32)),
        TensorSpec(roles["boxes"], boxes_shape, np.dtype(np.float32)),
        TensorSpec(roles["scores"], scores_shape, np.dtype(np.float32)),
        TensorSpec(roles["classes"], (None, 100), np.dtype(class_dtype)),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_check_outputs_accepts_the_plugin_layout_in_any_order(fmt: str) -> None:
    make_parser(fmt).check_outputs(specs(fmt)[::-1])
    make_parser(fmt).check_outputs(specs(fmt, boxes_shape=(100, 4), scores_shape=(100,)))  # implicit batch


def test_check_outputs_refuses_mismatches() -> None:
    with pytest.raises(SpecError, match=r"'detection_classes'.*dtype float32.*int32"):
        make_parser("efficient_nms").check_outputs(specs("efficient_nms", np.float32))
    make_parser("batched_nms").check_outputs(specs("batched_nms", np.int32))  # int ids are fine there
    with pytest.raises(SpecError, match=r"'nmsed_boxes'.*\[\?, 100, 5\]"):
        make_parser("batched_nms").check_outputs(specs("batched_nms", boxes_shape=(None, 100, 5)))
    with pytest.raises(SpecError, match=r"disagree on the number of detection rows.*100.*50"):
        make_parser("efficient_nms").check_outputs(specs("efficient_nms", scores_shape=(None, 50)))
    missing = specs("efficient_nms")[1:]
    with pytest.raises(SpecError, match=r"output\.tensors\.num_detections is 'num_detections'"):
        make_parser("efficient_nms").check_outputs(missing)
    bad_count = specs("efficient_nms")
    bad_count[0] = TensorSpec("num_detections", (None, 1), np.dtype(np.float32))
    with pytest.raises(SpecError, match=r"'num_detections'.*dtype float32"):
        make_parser("efficient_nms").check_outputs(bad_count)


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_params_and_roles(fmt: str) -> None:
    with pytest.raises(SpecError, match=r"output\.box_order is 'xy'"):
        make_parser(fmt, box_order="xy")
    with pytest.raises(SpecError, match=r"output\.normalized is 1"):
        make_parser(fmt, normalized=1)
    with pytest.raises(SpecError, match=r"output\.anchors.*allowed keys"):
        make_parser(fmt, anchors={"file": "a.npy"})
    with pytest.raises(SpecError, match=r"output\.tensors\.classes"):
        make_parser(fmt, tensors={"num_detections": "a", "boxes": "b", "scores": "c"})
