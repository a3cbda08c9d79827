"""end_to_end: NMS-in-graph detections ([B, K, 6] Ultralytics nms=True / YOLOv10 / YOLO26, YOLOv7's [K, 7]),
through open_model on ONNX Runtime and the TensorRT doubles; boxes checked in SOURCE pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
from yolo_factory import canned_engine, e2e_rows, head_model, install_tensorrt, spec_dict

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import SpecError
from trt_perception.heads import Head, open_model
from trt_perception.images import DecodedImage
from trt_perception.outputs import DetectionSettings, create_parser
from trt_perception.outputs.end_to_end import EndToEndParser
from trt_perception.spec import parse_spec

LABELS = ["person", "bicycle", "car"]
DETECTION = {"labels": LABELS, "score_threshold": 0.5}
# x1, y1, x2, y2, score, class in 320x320 input pixels
ROWS = [
    [60, 60, 140, 140, 0.9, 0],
    [200, 100, 260, 180, 0.6, 2],
    [65, 60, 145, 140, 0.55, 0],  # overlaps row 0 (same class): the graph's NMS kept it, so must we
    [10, 50, 30, 70, 0.3, 1],
]
ALL = DetectionSettings(score_threshold=0.0, iou_threshold=0.45, max_detections=300)


def black(width: int = 640, height: int = 480) -> DecodedImage:
    return DecodedImage(np.zeros((height, width, 3), np.uint8), "bgr")


def change(head: Head, **values: Any) -> None:
    head.task.apply({**head.task.values, **values})


def parser(**output: Any) -> Any:
    data = spec_dict("end_to_end", 320, 320, {"tensors": {"detections": "output0"}, **output}, {"labels": LABELS})
    return create_parser(parse_spec(data))


def test_ultralytics_rows_through_a_letterbox(tmp_path: Path) -> None:
    head = open_model(head_model(tmp_path, "v10", "end_to_end", {"output0": e2e_rows(ROWS)}, detection=DETECTION))
    assert isinstance(head.pipeline.parser, EndToEndParser)
    detections = head.run(black(), 0.0).result
    # 640x480 -> 320x320: scale 0.5, 40 padded rows on top: x_src = x / 0.5, y_src = (y - 40) / 0.5
    assert detections.labels == ["person", "car", "person"]
    np.testing.assert_allclose(detections.boxes, [[120, 40, 280, 200], [400, 120, 520, 280], [130, 40, 290, 200]],
                               atol=1e-3)  # fmt: skip
    np.testing.assert_allclose(detections.scores, [0.9, 0.6, 0.55], rtol=1e-6)
    change(head, score_threshold=0.2)
    assert head.run(black(), 0.0).result.labels == ["person", "car", "person", "bicycle"]
    change(head, max_detections=2)
    assert head.run(black(), 0.0).result.labels == ["person", "car"]
    change(head, max_detections=0, classes=["car", "bicycle"])
    assert head.run(black(), 0.0).result.labels == ["car", "bicycle"]
    change(head, iou_threshold=0.1, classes=[])  # no NMS here: the IoU setting changes nothing
    assert len(head.run(black(), 0.0).result) == 4


def test_padding_rows_are_dropped_even_at_threshold_zero() -> None:
    table = e2e_rows(ROWS[:1], k=5)
    table[0, 3] = [5, 5, 9, 9, 0.0, 0]  # a zero-score row
    table[0, 4] = [5, 5, 9, 9, 0.7, -1]  # a negative class (padding in some exporters)
    result = parser().parse({"output0": table}, ALL)
    assert result.class_ids.tolist() == [0]
    assert result.boxes.dtype == np.float32 and result.class_ids.dtype == np.int64


def test_batch_item_0_and_rank_2() -> None:
    batch = np.concatenate([e2e_rows(ROWS[:1], k=4), e2e_rows([[1, 1, 2, 2, 0.99, 1]], k=4)])  # [2, 4, 6]
    result = parser().parse({"output0": batch}, ALL)
    assert result.class_ids.tolist() == [0]
    rank2 = parser().parse({"output0": e2e_rows(ROWS[:2], k=4)[0]}, ALL)  # [K, 6], implicit batch
    assert rank2.class_ids.tolist() == [0, 2]


def test_normalized_and_cxcywh() -> None:
    rows = e2e_rows([[0.25, 0.5, 0.5, 0.75, 0.8, 1]], k=2)
    result = parser(normalized=True).parse({"output0": rows}, ALL)
    np.testing.assert_allclose(result.boxes, [[80, 160, 160, 240]], atol=1e-4)
    centre = e2e_rows([[100, 100, 40, 20, 0.8, 1]], k=2)
    result = parser(box_format="cxcywh").parse({"output0": centre}, ALL)
    np.testing.assert_allclose(result.boxes, [[80, 90, 120, 110]], atol=1e-4)


def test_yolov7_end2end_rows_with_batch_index(tmp_path: Path) -> None:
    # YOLOv7 export.py --end2end (ONNX Runtime): [K, 7] = batch, x1, y1, x2, y2, class, score
    rows = [[0, 60, 60, 140, 140, 2, 0.8], [1, 0, 0, 50, 50, 0, 0.99], [0, 200, 200, 240, 260, 0, 0.7]]
    model = head_model(tmp_path, "v7", "end_to_end", {"output0": e2e_rows(rows, width=7)}, detection=DETECTION)
    detections = open_model(model).run(black(), 0.0).result
    assert detections.labels == ["car", "person"]  # the batch-1 row is another image's
    np.testing.assert_allclose(detections.scores, [0.8, 0.7], rtol=1e-6)
    np.testing.assert_allclose(detections.boxes, [[120, 40, 280, 200], [400, 320, 480, 440]], atol=1e-3)


def test_engine_through_the_tensorrt_doubles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = {"output0": e2e_rows(ROWS)}
    expected = open_model(head_model(tmp_path, "onnx", "end_to_end", outputs, detection=DETECTION)).run(black(), 0.0)
    gpu = install_tensorrt(monkeypatch, "8.6.1")
    spec = spec_dict("end_to_end", 320, 320, None, DETECTION)
    engine = open_model(canned_engine(tmp_path, "model", outputs, spec, gpu, "8.6.1"), backend="tensorrt")
    got = engine.run(black(), 0.0).result
    assert got.labels == expected.result.labels == ["person", "car", "person"]
    np.testing.assert_allclose(got.boxes, expected.result.boxes, atol=1e-4)
    np.testing.assert_allclose(got.boxes[0], [120, 40, 280, 200], atol=1e-3)
    engine.close()


@pytest.mark.parametrize(
    ("shape", "dtype", "needle"),
    [
        ((1, 300, 5), np.float32, "has 5 values per row; the format expects 6 .* or 7"),
        ((1, 1, 300, 6), np.float32, r"shape \[1, 1, 300, 6\]; the format expects \[B, K, 6\]"),
        ((1, 300, 6), np.int32, "dtype int32"),
        ((300,), np.float32, r"shape \[300\]"),
    ],
)
def test_check_outputs_refuses_mismatches(shape: Any, dtype: Any, needle: str) -> None:
    with pytest.raises(SpecError, match=needle) as info:
        parser().check_outputs([TensorSpec("output0", shape, np.dtype(dtype))])
    assert "'output0'" in str(info.value) and "fix:" in str(info.value)
    parser().check_outputs([TensorSpec("output0", (None, None, 6), np.dtype(np.float16))])
    parser().check_outputs([TensorSpec("output0", (None, 7), np.dtype(np.float32))])


@pytest.mark.parametrize(
    ("output", "needle"),
    [
        ({"box_format": "xywh"}, r"output.box_format is 'xywh'; expected one of \['xyxy', 'cxcywh'\]"),
        ({"normalized": "no"}, "output.normalized is 'no'; expected true or false"),
        ({"iou_threshold": 0.5}, "output.iou_threshold = 0.5 is not a parameter of output format 'end_to_end'"),
        ({"tensors": {"output0": "output0"}}, r"missing role\(s\) \['output.tensors.detections'\]"),
    ],
)
def test_bad_params_are_named(output: Dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        parser(**output)
