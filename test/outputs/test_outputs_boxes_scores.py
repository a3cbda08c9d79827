"""boxes_scores: decoded boxes + class scores (e.g. a face SSD whose ONNX ends in Softmax + decoded boxes),
through open_model on ONNX Runtime and the TensorRT doubles; boxes checked in SOURCE pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from yolo_factory import canned_engine, face_ssd_model, head_model, install_tensorrt, spec_dict

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import SpecError
from trt_perception.heads import Head, open_model
from trt_perception.images import DecodedImage
from trt_perception.outputs import DetectionSettings, create_parser
from trt_perception.outputs.boxes_scores import BoxesScoresParser
from trt_perception.spec import parse_spec

ALL = DetectionSettings(score_threshold=0.25, iou_threshold=0.45, max_detections=100)
LABELS = ["background", "cat", "dog"]


def image(width: int, height: int, *white: tuple) -> DecodedImage:
    array = np.zeros((height, width, 3), np.uint8)
    for x1, y1, x2, y2 in white:
        array[y1:y2, x1:x2] = 255
    return DecodedImage(array, "bgr")


def change(head: Head, **values: Any) -> None:
    head.task.apply({**head.task.values, **values})


def parser(height: int = 300, width: int = 400, labels: List[str] = LABELS, **output: Any) -> Any:
    data = spec_dict("boxes_scores", height, width, {"background_class": 0, **output}, {"labels": labels})
    return create_parser(parse_spec(data))


def outputs(boxes: List[List[float]], scores: List[List[float]], n: int = 10, classes: int = 3) -> Dict[str, Any]:
    """[1, n, 4] boxes and [1, n, C] scores; rows past the given ones are background (score 1 in column 0)."""
    out_boxes = np.zeros((1, n, 4), np.float32)
    out_scores = np.zeros((1, n, classes), np.float32)
    out_scores[0, :, 0] = 1.0
    if boxes:
        out_boxes[0, : len(boxes)] = boxes
    if scores:
        out_scores[0, : len(scores)] = scores
    return {"boxes": out_boxes, "scores": out_scores}


# --------------------------------------------------------------------------- the face detector, end to end


@pytest.mark.parametrize("box_format", ["xyxy", "yxyx", "cxcywh"])
def test_face_detector_finds_the_white_square(tmp_path: Path, box_format: str) -> None:
    head = open_model(face_ssd_model(tmp_path, box_format=box_format))
    assert isinstance(head.pipeline.parser, BoxesScoresParser)
    # 640x480 stretched to 320x240 (x0.5): source (160, 80)-(240, 160) is model cell (row 1, col 2) =
    # (80, 40)-(120, 80); (480, 320)-(560, 400) is cell (4, 6).
    detections = head.run(image(640, 480, (160, 80, 240, 160), (480, 320, 560, 400)), 0.0).result
    assert detections.labels == ["face", "face"]
    assert detections.class_ids.tolist() == [1, 1]  # the column index: background_class 0 keeps ids in place
    order = np.argsort(detections.boxes[:, 0])
    np.testing.assert_allclose(detections.boxes[order], [[160, 80, 240, 160], [480, 320, 560, 400]], atol=1e-3)
    assert detections.scores.min() > 0.999
    assert len(head.run(image(640, 480), 0.0).result) == 0


def test_without_background_class_the_background_column_is_a_class(tmp_path: Path) -> None:
    head = open_model(face_ssd_model(tmp_path, output={"background_class": None},
                                     detection={"labels": ["background", "face"], "max_detections": 500}))
    detections = head.run(image(640, 480, (160, 80, 240, 160)), 0.0).result
    assert detections.labels.count("face") == 1 and detections.labels.count("background") == 47  # 48 cells


def test_letterboxed_constant_head_pixels_and_normalized(tmp_path: Path) -> None:
    # 320 (w) x 240 (h) input, 640x640 frame: scale 0.375, content 240x240, 40 columns of padding on the left
    data = outputs([[0.25, 0.5, 0.5, 1.0]], [[0.1, 0.9, 0.0]])
    detection = {"labels": LABELS, "score_threshold": 0.5}
    normalized = open_model(head_model(tmp_path, "norm", "boxes_scores", data, 240, 320,
                                       output={"background_class": 0}, detection=detection))  # fmt: skip
    pixels = dict(data, boxes=data["boxes"] * np.float32([320, 240, 320, 240]))
    in_pixels = open_model(head_model(tmp_path, "px", "boxes_scores", pixels, 240, 320,
                                      output={"background_class": 0, "normalized": False},
                                      detection=detection))  # fmt: skip
    frame = image(640, 640)
    for head in (normalized, in_pixels):
        result = head.run(frame, 0.0).result
        assert result.labels == ["cat"]
        # model (80, 120)-(160, 240) -> ((80 - 40) / 0.375, 120 / 0.375)-((160 - 40) / 0.375, 240 / 0.375)
        np.testing.assert_allclose(result.boxes, [[106.6667, 320, 320, 640]], atol=1e-3)


# ----------------------------------------------------------------------- candidates, NMS, settings


OVERLAP = outputs(
    [[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9], [0.11, 0.1, 0.51, 0.5]],
    [[0.0, 0.9, 0.7], [0.1, 0.0, 0.8], [0.4, 0.6, 0.0], [0.3, 0.65, 0.0]],
)  # box 0: cat 0.9 and dog 0.7; box 1 (IoU 0.9 with box 0): dog 0.8; box 2: cat 0.6; box 3 (IoU 0.95): cat 0.65


def test_every_pair_above_threshold_class_wise_nms() -> None:
    result = parser().parse(OVERLAP, ALL)
    # cat: box 0 (0.9) suppresses box 3 (0.65); dog: box 1 (0.8) suppresses box 0's dog (0.7); box 2 stays
    assert result.class_ids.tolist() == [1, 2, 1]
    np.testing.assert_allclose(result.scores, [0.9, 0.8, 0.6], rtol=1e-6)
    np.testing.assert_allclose(result.boxes[0], [40, 30, 200, 150], atol=1e-4)  # 400 x 300 input


def test_class_agnostic_thresholds_allow_list_and_max_detections() -> None:
    agnostic = parser(class_agnostic=True).parse(OVERLAP, ALL)
    assert agnostic.class_ids.tolist() == [1, 1]  # box 0 suppresses every overlapping pair across classes
    np.testing.assert_allclose(agnostic.scores, [0.9, 0.6], rtol=1e-6)
    p = parser()
    assert p.parse(OVERLAP, DetectionSettings(0.75, 0.45, 100)).class_ids.tolist() == [1, 2]
    assert p.parse(OVERLAP, DetectionSettings(0.25, 0.45, 1)).class_ids.tolist() == [1]
    dogs = p.parse(OVERLAP, DetectionSettings(0.25, 0.45, 100, frozenset({2})))
    np.testing.assert_allclose(dogs.scores, [0.8], rtol=1e-6)  # box 0's dog pair is still suppressed by box 1
    loose = p.parse(OVERLAP, DetectionSettings(0.25, 0.99, 100))
    np.testing.assert_allclose(np.sort(loose.scores), [0.6, 0.65, 0.7, 0.8, 0.9], rtol=1e-6)


def test_background_rows_and_empty_frames() -> None:
    empty = parser().parse(outputs([], []), ALL)
    assert empty.boxes.shape == (0, 4) and empty.class_ids.dtype == np.int64
    apart = [[i * 0.1, 0.0, i * 0.1 + 0.05, 0.05] for i in range(10)]
    with_bg = parser(background_class=None).parse(outputs(apart, []), DetectionSettings(0.5, 0.45, 3))
    assert with_bg.class_ids.tolist() == [0, 0, 0]


def test_boxes_with_a_class_dim_of_one_and_rank_2() -> None:
    data = OVERLAP
    four_d = {"boxes": data["boxes"][:, :, None, :], "scores": data["scores"]}
    p = parser()
    p.check_outputs([TensorSpec("boxes", (1, 10, 1, 4), np.dtype(np.float32)),
                     TensorSpec("scores", (1, 10, 3), np.dtype(np.float32))])  # fmt: skip
    expected = p.parse(data, ALL)
    for variant in (four_d, {"boxes": data["boxes"][0], "scores": data["scores"][0].astype(np.float16)}):
        got = p.parse(variant, ALL)
        assert got.class_ids.tolist() == expected.class_ids.tolist()
        np.testing.assert_allclose(got.boxes, expected.boxes, atol=0.05)


def test_engine_through_the_tensorrt_doubles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_dict("boxes_scores", 300, 400, {"background_class": 0}, {"labels": LABELS, "score_threshold": 0.25})
    onnx_head = open_model(head_model(tmp_path, "onnx", "boxes_scores", OVERLAP, 300, 400,
                                      output={"background_class": 0}, detection=spec["detection"]))  # fmt: skip
    gpu = install_tensorrt(monkeypatch, "10.0.1")
    engine = open_model(canned_engine(tmp_path, "model", OVERLAP, spec, gpu), backend="tensorrt")
    frame = image(800, 600)  # x2 of the input
    expected = onnx_head.run(frame, 0.0).result
    got = engine.run(frame, 0.0).result
    assert got.labels == expected.labels == ["cat", "dog", "cat"]
    np.testing.assert_allclose(got.boxes, expected.boxes, atol=1e-4)
    np.testing.assert_allclose(got.boxes[0], [80, 60, 400, 300], atol=1e-3)
    engine.close()


# ------------------------------------------------------------------------------------ load-time refusals


def spec_tensors(boxes: Any, scores: Any, dtype: Any = np.float32) -> List[TensorSpec]:
    return [TensorSpec("boxes", boxes, np.dtype(dtype)), TensorSpec("scores", scores, np.dtype(np.float32))]


@pytest.mark.parametrize(
    ("tensors", "needle"),
    [
        (spec_tensors((1, 10, 5), (1, 10, 3)), r"'boxes' \(output.tensors.boxes.*shape \[1, 10, 5\]"),
        (spec_tensors((1, 10, 3, 4), (1, 10, 3)), "one box per class"),
        (spec_tensors((1, 10, 4), (1, 12, 3)), "disagree on the number of boxes N: boxes .boxes.: 10, scores"),
        (spec_tensors((1, 10, 4), (1, 10, 3), np.int32), "dtype int32"),
        (spec_tensors((1, 10, 4), (1, 10, 3, 1)), r"'scores' .*shape \[1, 10, 3, 1\]"),
    ],
)
def test_check_outputs_refuses_mismatches(tensors: List[TensorSpec], needle: str) -> None:
    with pytest.raises(SpecError, match=needle) as info:
        parser().check_outputs(tensors)
    assert "fix:" in str(info.value)


def test_background_class_must_be_a_column() -> None:
    with pytest.raises(SpecError, match="output.background_class is 5 but model output 'scores' has 3 score columns"):
        parser(background_class=5).check_outputs(spec_tensors((1, 10, 4), (1, 10, 3)))
    parser(background_class=5).check_outputs(spec_tensors((1, None, 4), (1, None, None)))  # unknown: fine


@pytest.mark.parametrize(
    ("output", "needle"),
    [
        ({"box_format": "ltrb"}, r"output.box_format is 'ltrb'; expected one of \['xyxy', 'cxcywh', 'yxyx'\]"),
        ({"background_class": -1}, "output.background_class is -1; expected null or an integer >= 0"),
        ({"class_agnostic": "x"}, "output.class_agnostic is 'x'; expected true or false"),
        ({"normalized": None}, "output.normalized is None; expected true or false"),
        ({"anchors": {"file": "a.npy"}}, "output.anchors .* is not a parameter of output format 'boxes_scores'"),
        ({"tensors": {"boxes": "boxes"}}, r"missing role\(s\) \['output.tensors.scores'\]"),
    ],
)
def test_bad_params_are_named(output: Dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        parser(**output)
