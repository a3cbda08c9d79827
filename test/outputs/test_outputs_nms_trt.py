"""nms_trt: legacy UFF SSD engine outputs (NMS rows + NMS_1 count as int32 bits in a float32 tensor)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import pytest

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import OutputError, SpecError
from trt_perception.outputs import DetectionSettings, create_parser
from trt_perception.outputs.nms_trt import NmsTrtParser, count_from_bits
from trt_perception.spec import parse_spec


def make_parser(**output: Any) -> NmsTrtParser:
    data: Dict[str, Any] = {
        "task": "detection",
        "input": {"name": "Input", "height": 300, "width": 400},
        "output": {"format": "nms_trt", **output},
    }
    parser = create_parser(parse_spec(data))
    assert isinstance(parser, NmsTrtParser)
    return parser


def nms_outputs(rows: List[List[float]], count: Optional[int] = None, k: int = 10) -> Dict[str, np.ndarray]:
    table = np.zeros((1, k, 7), np.float32)
    table[0, :, 1] = -1
    if rows:
        table[0, : len(rows)] = rows
    bits = np.array([len(rows) if count is None else count], np.int32).view(np.float32).reshape(1, 1, 1)
    return {"NMS": table, "NMS_1": bits}


ROWS = [
    [0, 3, 0.9, 0.10, 0.20, 0.50, 0.60],
    [0, 1, 0.8, 0.00, 0.00, 1.00, 1.00],
    [0, 2, 0.3, 0.20, 0.20, 0.40, 0.40],
]
ALL = DetectionSettings(score_threshold=0.0, max_detections=100)


def test_golden_boxes_in_model_input_pixels() -> None:
    result = make_parser().parse(nms_outputs(ROWS), DetectionSettings(score_threshold=0.5))
    np.testing.assert_allclose(result.boxes, [[40, 60, 200, 180], [0, 0, 400, 300]], atol=1e-4)
    np.testing.assert_allclose(result.scores, [0.9, 0.8])
    assert result.class_ids.tolist() == [3, 1]
    assert result.boxes.dtype == np.float32 and result.scores.dtype == np.float32
    assert result.class_ids.dtype == np.int64


def test_count_is_reinterpreted_from_float32_bits_not_cast() -> None:
    bits = np.array([3], np.int32).view(np.float32).reshape(1, 1, 1)
    assert bits.dtype == np.float32
    assert 0 < float(bits[0, 0, 0]) < 1e-44  # a naive cast reads ~4.2e-45, i.e. zero detections
    assert int(bits[0, 0, 0]) == 0
    assert count_from_bits(bits) == 3
    assert count_from_bits(np.array([[[5]]], np.int32)) == 5  # a backend that already typed it int32


def test_count_limits_rows_and_unused_rows_are_ignored() -> None:
    outputs = nms_outputs(ROWS, count=2)
    result = make_parser().parse(outputs, ALL)
    assert result.class_ids.tolist() == [3, 1]  # third row is beyond the count
    outputs = nms_outputs(ROWS[:1], count=3)  # count covers two unused rows (label -1, conf 0)
    result = make_parser().parse(outputs, ALL)
    assert result.class_ids.tolist() == [3]
    result = make_parser().parse(nms_outputs([], count=0), ALL)
    assert result.boxes.shape == (0, 4) and result.class_ids.shape == (0,)


def test_count_out_of_bounds_is_an_error_naming_the_tensor() -> None:
    with pytest.raises(OutputError, match=r"'NMS_1'.*11 detections.*10 rows"):
        make_parser().parse(nms_outputs(ROWS, count=11), ALL)
    with pytest.raises(OutputError, match="NMS_1"):
        make_parser().parse(nms_outputs(ROWS, count=-1), ALL)
    cast_count = {"NMS": nms_outputs(ROWS)["NMS"], "NMS_1": np.full((1, 1, 1), 3.0, np.float32)}
    with pytest.raises(OutputError, match="NMS_1"):  # a float VALUE 3.0 has bits 1077936128
        make_parser().parse(cast_count, ALL)


@pytest.mark.parametrize("shape", [(10, 7), (1, 10, 7), (1, 1, 10, 7), (2, 1, 10, 7)])
def test_batch_dims_as_runtimes_give_them(shape: tuple) -> None:
    base = nms_outputs(ROWS)
    table = np.broadcast_to(base["NMS"].reshape(10, 7), shape).copy()
    count = np.broadcast_to(base["NMS_1"].reshape(-1)[:1], (shape[0] if len(shape) == 4 else 1,)).copy()
    result = make_parser().parse({"NMS": table, "NMS_1": count}, ALL)
    assert result.class_ids.tolist() == [3, 1, 2]


def test_threshold_allow_list_and_max_detections() -> None:
    parser = make_parser()
    outputs = nms_outputs(ROWS)
    assert parser.parse(outputs, DetectionSettings(score_threshold=0.85)).class_ids.tolist() == [3]
    allowed = DetectionSettings(score_threshold=0.0, allowed_class_ids=frozenset({1, 2}))
    assert parser.parse(outputs, allowed).class_ids.tolist() == [1, 2]
    capped = DetectionSettings(score_threshold=0.0, max_detections=2)
    assert parser.parse(outputs, capped).class_ids.tolist() == [3, 1]
    shuffled = nms_outputs([ROWS[2], ROWS[0], ROWS[1]])
    assert parser.parse(shuffled, ALL).class_ids.tolist() == [3, 1, 2]  # sorted by score


def test_pixel_boxes_when_not_normalized() -> None:
    rows = [[0, 1, 0.9, 10, 20, 110, 220]]
    result = make_parser(normalized=False).parse(nms_outputs(rows), ALL)
    np.testing.assert_allclose(result.boxes, [[10, 20, 110, 220]])


def test_check_outputs_accepts_engine_layouts() -> None:
    parser = make_parser()
    parser.check_outputs(
        [
            TensorSpec("NMS", (1, 100, 7), np.dtype(np.float32)),
            TensorSpec("NMS_1", (1, 1, 1), np.dtype(np.float32)),
        ]
    )
    parser.check_outputs(
        [
            TensorSpec("NMS_1", (None, 1, 1, 1), np.dtype(np.int32)),
            TensorSpec("NMS", (None, 1, 100, 7), np.dtype(np.float32)),
        ]
    )


@pytest.mark.parametrize(
    ("outputs", "pattern"),
    [
        (
            [TensorSpec("NMS", (1, 100, 7), np.dtype(np.float32))],
            r"output\.tensors\.count is 'NMS_1'.*\['NMS'\]",
        ),
        (
            [
                TensorSpec("NMS", (1, 100, 6), np.dtype(np.float32)),
                TensorSpec("NMS_1", (1, 1, 1), np.dtype(np.float32)),
            ],
            r"'NMS'.*\[1, 100, 6\].*7",
        ),
        (
            [
                TensorSpec("NMS", (1, 100, 7), np.dtype(np.int32)),
                TensorSpec("NMS_1", (1, 1, 1), np.dtype(np.float32)),
            ],
            r"'NMS'.*dtype int32.*float32",
        ),
        (
            [
                TensorSpec("NMS", (1, 100, 7), np.dtype(np.float32)),
                TensorSpec("NMS_1", (1, 1, 1), np.dtype(np.float16)),
            ],
            r"'NMS_1'.*dtype float16",
        ),
        (
            [
                TensorSpec("NMS", (1, 100, 7), np.dtype(np.float32)),
                TensorSpec("NMS_1", (1, 2, 1), np.dtype(np.float32)),
            ],
            r"'NMS_1'.*\[1, 2, 1\]",
        ),
    ],
)
def test_check_outputs_refuses_mismatches(outputs: List[TensorSpec], pattern: str) -> None:
    with pytest.raises(SpecError, match=pattern):
        make_parser().check_outputs(outputs)


def test_bad_params_and_roles_are_refused_naming_the_key() -> None:
    with pytest.raises(SpecError, match=r"output\.box_order.*'yxyx'.*allowed keys.*normalized"):
        make_parser(box_order="yxyx")
    with pytest.raises(SpecError, match=r"output\.normalized is 'yes'"):
        make_parser(normalized="yes")
    with pytest.raises(SpecError, match=r"output\.tensors\.count"):
        make_parser(tensors={"detections": "NMS"})
    with pytest.raises(SpecError, match=r"output\.tensors\.boxes"):
        make_parser(tensors={"detections": "NMS", "count": "NMS_1", "boxes": "x"})
