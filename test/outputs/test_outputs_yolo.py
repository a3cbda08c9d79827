"""yolo, yolov5, yolox: real ONNX heads through ModelPipeline (ONNX Runtime and the TensorRT doubles).

Boxes are checked in SOURCE pixels against boxes derived by hand (a square drawn on the frame comes back) or
by oracles written from the exporters' code (test/yolo_factory.py: YOLOX's demo_postprocess, Ultralytics-style
best-class + greedy NMS, the centred letterbox undo).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import pytest
import yaml
from yolo_factory import (
    GREEN,
    RED,
    YELLOW,
    canned_engine,
    grid_head_model,
    head_model,
    install_tensorrt,
    letterbox_to_source,
    reference_yolo,
    spec_dict,
    yolo_head,
    yolox_demo_postprocess,
)

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import OutputError, SpecError
from trt_perception.heads import Head, open_model
from trt_perception.images import DecodedImage
from trt_perception.outputs import DetectionSettings, create_parser
from trt_perception.outputs.nms import batched_nms
from trt_perception.outputs.yolo import YoloParser, Yolov5Parser, YoloxParser, prefix_nms, yolox_grids
from trt_perception.spec import parse_spec


def frame(width: int, height: int, *squares: Tuple[Tuple[int, int, int, int], Tuple[int, int, int]]) -> DecodedImage:
    image = np.zeros((height, width, 3), np.uint8)
    for (x1, y1, x2, y2), color in squares:
        image[y1:y2, x1:x2] = color
    return DecodedImage(image, "bgr")


def parser_for(fmt: str, height: int = 320, width: int = 320, labels: Optional[list] = None, **output: Any) -> Any:
    output = {"tensors": {"predictions": "output0"}, **output}
    data = spec_dict(fmt, height, width, output, {"labels": labels} if labels is not None else {})
    return create_parser(parse_spec(data))


def out_spec(shape: Tuple[Any, ...], dtype: Any = np.float32, name: str = "output0") -> TensorSpec:
    return TensorSpec(name, tuple(shape), np.dtype(dtype))


def change(head: Head, **values: Any) -> None:
    """Live detection settings, as the node's params set them."""
    head.task.apply({**head.task.values, **values})


ALL = DetectionSettings(score_threshold=0.25, iou_threshold=0.45, max_detections=100)


# ------------------------------------------------------------------------ image in, boxes in source pixels


@pytest.mark.parametrize(
    ("fmt", "layout", "output"),
    [
        ("yolo", "channels_first", {}),
        ("yolo", "channels_last", {}),
        ("yolov5", "channels_last", {}),
        ("yolox", "channels_last", {}),
        ("yolox", "channels_last", {"decode": True, "strides": [40]}),
    ],
)
def test_squares_drawn_on_a_letterboxed_frame_come_back(
    tmp_path: Path, fmt: str, layout: str, output: Dict[str, Any]
) -> None:
    model = grid_head_model(tmp_path, fmt=fmt, layout=layout, output=output)
    pipeline = open_model(model)
    assert pipeline.describe()["format"] == fmt
    # 640x480 -> 320x320: scale 0.5, 40 rows of 114-grey padding top and bottom. Source (160, 80)-(240, 160) is
    # model cell (row 2, col 2) = (80, 80)-(120, 120); source (400, 240)-(480, 320) is cell (4, 5).
    detections = pipeline.run(frame(640, 480, ((160, 80, 240, 160), RED), ((400, 240, 480, 320), GREEN)), 0.0).result
    assert detections.labels == ["red", "green"] or detections.labels == ["green", "red"]
    by_label = dict(zip(detections.labels, detections.boxes.tolist()))
    np.testing.assert_allclose(by_label["red"], [160, 80, 240, 160], atol=1e-3)
    np.testing.assert_allclose(by_label["green"], [400, 240, 480, 320], atol=1e-3)
    np.testing.assert_allclose(detections.scores, [1.0, 1.0], atol=1e-3)  # objectness 1 x class 1
    assert pipeline.run(frame(640, 480), 0.0).result.boxes.shape == (0, 4)  # the grey border alone scores 0.45
    pipeline.close()


@pytest.mark.parametrize("labels", [["red", "green"], None])
def test_dynamic_n_non_square_input_and_auto_layout(tmp_path: Path, labels: Optional[list]) -> None:
    detection = {"labels": labels} if labels else {"score_threshold": 0.5}
    model = grid_head_model(tmp_path, height=256, width=320, stride=32, dynamic=True, detection=detection)
    pipeline = open_model(model)
    declared = next(t for t in pipeline.pipeline.backend.outputs if t.name == "output0")
    assert declared.shape == (1, 6, None)  # N is dynamic: the layout is decided on the first frame
    # 640x480 -> 320x256: scale 0.5, content 320x240, pad_y 8. Cell (1, 1) = model (32, 32)-(64, 64) = source
    # (64, 48)-(128, 112); cell (6, 9) = model (288, 192)-(320, 224) = source (576, 368)-(640, 432).
    image = frame(640, 480, ((64, 48, 128, 112), RED), ((576, 368, 640, 432), YELLOW))
    detections = pipeline.run(image, 0.0).result
    order = np.argsort(detections.boxes[:, 0])
    np.testing.assert_allclose(detections.boxes[order], [[64, 48, 128, 112], [576, 368, 640, 432]], atol=1e-3)
    assert detections.class_ids[order].tolist() == [0, 0]  # yellow: red and green tie, the first column wins
    pipeline.close()


def test_ultralytics_sized_head_against_reference_postprocessing(tmp_path: Path) -> None:
    """[1, 84, 2100] (320x320 input): best class, threshold, class-aware NMS as Ultralytics does it."""
    rng = np.random.default_rng(3)
    points, classes = 2100, 80
    table = np.zeros((points, 4 + classes), np.float32)
    table[:, 0:2] = rng.uniform(0, 320, (points, 2))
    table[:, 2:4] = rng.uniform(8, 120, (points, 2))
    table[:, 4:] = rng.random((points, classes)) ** 6 * 0.2
    hot = rng.choice(points, 120, replace=False)
    table[hot, 4 + rng.integers(0, 8, 120)] = rng.uniform(0.3, 0.99, 120)  # 8 classes: overlaps within a class
    model = head_model(tmp_path, "v8", "yolo", {"output0": np.ascontiguousarray(table.T[None])},
                       detection={"labels": [f"c{i}" for i in range(classes)], "score_threshold": 0.25,
                                  "iou_threshold": 0.45, "max_detections": 300})  # fmt: skip
    pipeline = open_model(model)
    got = pipeline.run(frame(640, 480), 0.0).result
    boxes, scores, class_ids = reference_yolo(table, 0.25, 0.45, objectness=False)
    assert 40 <= len(scores) < 120  # NMS removed some
    np.testing.assert_allclose(got.scores, scores, rtol=1e-6)
    assert got.class_ids.tolist() == class_ids.tolist()
    np.testing.assert_allclose(got.boxes, letterbox_to_source(boxes, 640, 480, 320, 320), atol=1e-3)


def test_yolox_grid_decode_against_demo_postprocess(tmp_path: Path) -> None:
    """A raw YOLOX head (no --decode_in_inference) at 256x320 with strides 8/16/32, through a letterbox."""
    height, width, strides = 256, 320, (8, 16, 32)
    points = sum((height // s) * (width // s) for s in strides)
    rng = np.random.default_rng(11)
    raw = np.zeros((1, points, 5 + 3), np.float32)
    raw[0, :, 0:2] = rng.uniform(-0.5, 1.5, (points, 2))
    raw[0, :, 2:4] = rng.uniform(-1.0, 2.5, (points, 2))
    raw[0, :, 4] = rng.uniform(0, 0.2, points)
    raw[0, :, 5:] = rng.uniform(0, 1, (points, 3))
    hot = rng.choice(points, 60, replace=False)  # candidates on every level
    raw[0, hot, 4] = rng.uniform(0.5, 1.0, 60)
    model = head_model(tmp_path, "yolox", "yolox", {"output": raw}, height, width,
                       output={"decode": True, "tensors": {"predictions": "output"}},
                       detection={"score_threshold": 0.3, "iou_threshold": 0.5})  # fmt: skip
    pipeline = open_model(model)
    got = pipeline.run(frame(800, 500), 0.0).result
    decoded = yolox_demo_postprocess(raw, (height, width), strides)[0]
    boxes, scores, class_ids = reference_yolo(decoded, 0.3, 0.5, objectness=True)
    assert len(scores) >= 20
    np.testing.assert_allclose(got.scores, scores, rtol=1e-5)
    assert got.class_ids.tolist() == class_ids.tolist()
    np.testing.assert_allclose(got.boxes, letterbox_to_source(boxes, 800, 500, width, height), atol=2e-3)


def test_yolox_grids_match_demo_postprocess_order() -> None:
    grid, stride = yolox_grids(64, 96, (8, 16, 32))
    zeros = np.zeros((1, grid.shape[0], 4))
    expected = yolox_demo_postprocess(zeros, (64, 96), (8, 16, 32))[0]
    np.testing.assert_allclose(grid * stride, expected[:, 0:2])
    np.testing.assert_allclose(np.broadcast_to(stride, (grid.shape[0], 2)), expected[:, 2:4])


# -------------------------------------------------------------------------- NMS, thresholds, layouts


def overlapping_head(layout: str = "channels_first", objectness: Optional[list] = None) -> np.ndarray:
    """A: class 0 0.9 at (60..140, 60..140); B: class 1 0.8, IoU 0.78 with A; C: class 0 0.7, IoU 0.88 with A;
    D: class 2 0.6 elsewhere; E: class 2 0.3."""
    return yolo_head(
        [(100, 100, 80, 80, 0, 0.9), (110, 100, 80, 80, 1, 0.8), (105, 100, 80, 80, 0, 0.7),
         (250, 250, 40, 40, 2, 0.6), (40, 260, 30, 30, 2, 0.3)],
        layout=layout, objectness=objectness,
    )  # fmt: skip


LABELS = ["a", "b", "c"]


def test_class_aware_vs_agnostic_nms_thresholds_and_max_detections(tmp_path: Path) -> None:
    head = overlapping_head()
    detection = {"labels": LABELS, "score_threshold": 0.25, "iou_threshold": 0.45}
    aware = open_model(head_model(tmp_path, "aware", "yolo", {"output0": head}, detection=detection))
    agnostic = open_model(head_model(tmp_path, "agnostic", "yolo", {"output0": head},
                                             output={"class_agnostic": True}, detection=detection))  # fmt: skip
    image = frame(320, 320)  # identity geometry: source pixels = model pixels
    result = aware.run(image, 0.0).result
    assert result.labels == ["a", "b", "c", "c"]
    np.testing.assert_allclose(result.scores, [0.9, 0.8, 0.6, 0.3], rtol=1e-6)
    np.testing.assert_allclose(result.boxes[:2], [[60, 60, 140, 140], [70, 60, 150, 140]], atol=1e-4)
    assert agnostic.run(image, 0.0).result.labels == ["a", "c", "c"]  # B goes: it overlaps A across classes
    change(aware, score_threshold=0.5)
    assert aware.run(image, 0.0).result.labels == ["a", "b", "c"]
    change(aware, max_detections=2)
    assert aware.run(image, 0.0).result.labels == ["a", "b"]
    change(aware, max_detections=100, iou_threshold=0.9)  # C survives NMS now (IoU 0.88)
    np.testing.assert_allclose(aware.run(image, 0.0).result.scores, [0.9, 0.8, 0.7, 0.6], rtol=1e-6)
    change(aware, score_threshold=0.25, classes=["c"])  # allow-list on the best class
    assert aware.run(image, 0.0).result.labels == ["c", "c"]
    change(aware, classes=["b"], iou_threshold=0.45)
    assert aware.run(image, 0.0).result.labels == ["b"]


def test_transposed_layout_and_letterbox(tmp_path: Path) -> None:
    detection = {"labels": LABELS, "score_threshold": 0.25}
    first = open_model(head_model(tmp_path, "first", "yolo", {"output0": overlapping_head()},
                                          detection=detection))  # fmt: skip
    last = open_model(head_model(tmp_path, "last", "yolo", {"output0": overlapping_head("channels_last")},
                                         detection=detection))  # fmt: skip
    explicit = open_model(head_model(tmp_path, "explicit", "yolo", {"output0": overlapping_head("channels_last")},
                                             output={"layout": "channels_last"}, detection=detection))  # fmt: skip
    image = frame(640, 480)
    expected = first.run(image, 0.0).result
    # A (60, 60)-(140, 140) in model pixels -> letterbox 0.5 scale, 40 px pad rows -> (120, 40)-(280, 200)
    np.testing.assert_allclose(expected.boxes[0], [120, 40, 280, 200], atol=1e-3)
    for pipeline in (last, explicit):
        got = pipeline.run(image, 0.0).result
        np.testing.assert_allclose(got.boxes, expected.boxes, atol=1e-4)
        assert got.labels == expected.labels


def test_yolov5_objectness_product(tmp_path: Path) -> None:
    head = yolo_head(
        [(100, 100, 40, 40, 0, 0.9), (200, 200, 40, 40, 1, 0.8), (50, 250, 40, 40, 2, 0.99)],
        layout="channels_last", objectness=[0.5, 0.9, 0.3],
    )  # fmt: skip
    pipeline = open_model(head_model(tmp_path, "v5", "yolov5", {"output0": head},
                                             detection={"labels": LABELS, "score_threshold": 0.4}))  # fmt: skip
    result = pipeline.run(frame(320, 320), 0.0).result
    assert result.labels == ["b", "a"]  # 0.9 * 0.8 = 0.72, 0.5 * 0.9 = 0.45; 0.3 * 0.99 < 0.4
    np.testing.assert_allclose(result.scores, [0.72, 0.45], rtol=1e-6)
    np.testing.assert_allclose(result.boxes[0], [180, 180, 220, 220], atol=1e-4)


def test_normalized_boxes_are_scaled_by_the_input_size() -> None:
    head = yolo_head([(0.5, 0.25, 0.1, 0.2, 1, 0.9)])
    result = parser_for("yolo", 200, 400, normalized=True).parse({"output0": head}, ALL)
    np.testing.assert_allclose(result.boxes, [[180, 30, 220, 70]], atol=1e-4)  # width 400, height 200


def test_empty_frames_and_zero_max_detections() -> None:
    parser = parser_for("yolo")
    empty = parser.parse({"output0": yolo_head([])}, ALL)
    assert empty.boxes.shape == (0, 4) and empty.class_ids.dtype == np.int64
    none = parser.parse({"output0": overlapping_head()}, DetectionSettings(0.25, 0.45, 0))
    assert none.boxes.shape == (0, 4)
    v5 = parser_for("yolov5").parse({"output0": yolo_head([], layout="channels_last", objectness=[])}, ALL)
    assert v5.scores.shape == (0,)


def test_implicit_batch_rank_2_and_float16() -> None:
    head = overlapping_head()[0].astype(np.float16)  # [4 + C, N] without batch dim, as an FP16 engine gives it
    parser = parser_for("yolo", labels=LABELS)
    parser.check_outputs([out_spec(head.shape, np.float16)])
    result = parser.parse({"output0": head}, ALL)
    assert result.class_ids.tolist() == [0, 1, 2, 2]
    assert result.boxes.dtype == np.float32 and result.scores.dtype == np.float32


def test_prefix_nms_equals_full_nms_on_thousands_of_candidates() -> None:
    rng = np.random.default_rng(5)
    for agnostic in (False, True):
        n = 3000
        xy = rng.uniform(0, 600, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(10, 150, (n, 2)).astype(np.float32)], 1)
        scores = rng.uniform(0.01, 1, n).astype(np.float32)
        classes = np.zeros(n, np.int64) if agnostic else rng.integers(0, 5, n)
        for top in (1, 100, 2000):
            full = batched_nms(boxes, scores, classes, 0.5, top)
            np.testing.assert_array_equal(prefix_nms(boxes, scores, classes, 0.5, top), full)


# ------------------------------------------------------------------------------------ TensorRT doubles


@pytest.mark.parametrize("fmt", ["yolo", "yolov5", "yolox"])
def test_engine_through_the_tensorrt_doubles_gives_the_onnx_boxes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    objectness = None if fmt == "yolo" else [0.95, 0.9, 0.9, 0.8, 0.9]
    head = overlapping_head("channels_first" if fmt == "yolo" else "channels_last", objectness)
    detection = {"labels": LABELS, "score_threshold": 0.25}
    spec = spec_dict(fmt, 320, 320, {"tensors": {"predictions": "output0"}}, detection)
    onnx_model = head_model(tmp_path, "onnx", fmt, {"output0": head}, output=spec["output"], detection=detection)
    onnx_result = open_model(onnx_model)
    gpu = install_tensorrt(monkeypatch)
    engine = open_model(canned_engine(tmp_path, "model", {"output0": head}, spec, gpu), backend="tensorrt")
    image = frame(640, 480)
    expected = onnx_result.run(image, 0.0).result
    got = engine.run(image, 0.0).result
    assert len(got) == 4 and got.labels == expected.labels
    np.testing.assert_allclose(got.boxes, expected.boxes, atol=1e-4)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-6)
    np.testing.assert_allclose(got.boxes[0], [120, 40, 280, 200], atol=1e-3)
    engine.close()


# ------------------------------------------------------------------------------------- torch export


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_exported_ultralytics_style_head(tmp_path: Path) -> None:
    """A torch module computing a channels-first grid head (as Ultralytics' Detect does), exported with
    torch.onnx.export, decoded by the pipeline."""
    torch = pytest.importorskip("torch")

    class GridHead(torch.nn.Module):
        def __init__(self, size: int, stride: int) -> None:
            super().__init__()
            self.pool = torch.nn.AvgPool2d(stride)
            cells = size // stride
            ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
            centers = (torch.stack([xs.flatten(), ys.flatten()]).float() + 0.5) * stride
            self.register_buffer("boxes", torch.cat([centers, torch.full((2, cells * cells), float(stride))])[None])

        def forward(self, images: Any) -> Any:
            pooled = self.pool(images)[:, 0:2].flatten(2)  # red, green per cell
            return torch.cat([self.boxes.expand(images.shape[0], -1, -1), pooled], 1)

    path = tmp_path / "torch_head.onnx"
    # the TorchScript exporter (Ultralytics' choice); torch >= 2.9 defaults to the dynamo one, needing onnxscript
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(GridHead(320, 40), torch.zeros(1, 3, 320, 320), str(path), input_names=["images"],
                      output_names=["output0"], opset_version=13, **legacy)  # fmt: skip
    (tmp_path / "torch_head.yaml").write_text(yaml.safe_dump(spec_dict("yolo", 320, 320)), encoding="utf-8")
    pipeline = open_model(path)
    detections = pipeline.run(frame(640, 480, ((160, 80, 240, 160), RED)), 0.0).result
    assert detections.labels == ["red"]
    np.testing.assert_allclose(detections.boxes, [[160, 80, 240, 160]], atol=1e-3)


# ------------------------------------------------------------------------------- load-time refusals


def test_registry_names_the_classes() -> None:
    assert type(parser_for("yolo")) is YoloParser
    assert type(parser_for("yolov5")) is Yolov5Parser
    assert type(parser_for("yolox")) is YoloxParser


@pytest.mark.parametrize(
    ("fmt", "labels", "output", "shape", "dtype", "needle"),
    [
        ("yolo", None, {}, (8400,), np.float32, r"shape \[8400\].*expects"),
        ("yolo", None, {}, (1, 1, 84, 8400), np.float32, r"shape \[1, 1, 84, 8400\].*expects"),
        ("yolo", ["a"] * 80, {}, (1, 85, 8400), np.float32, r"neither dim is 4 \+ 80 = 84.*detection.labels"),
        ("yolo", None, {"num_classes": 3}, (1, 8, 100), np.float32, r"neither dim is 4 \+ 3 = 7.*num_classes = 3"),
        ("yolo", ["a"] * 80, {"layout": "channels_last"}, (1, 84, 8400), np.float32, "8400 channels.*84"),
        ("yolo", None, {}, (1, 84, 8400), np.int32, "dtype int32"),
        ("yolov5", ["a"] * 80, {}, (1, 25200, 84), np.float32, r"84 channels in its channels_last dim.*5 \+ 80 = 85"),
        ("yolo", None, {"layout": "channels_first"}, (1, 4, 8400), np.float32, "leaves no class scores"),
    ],
)
def test_check_outputs_refuses_mismatches(
    fmt: str, labels: Optional[list], output: Dict[str, Any], shape: Tuple[int, ...], dtype: Any, needle: str
) -> None:
    parser = parser_for(fmt, 640, 640, labels, **output)
    with pytest.raises(SpecError, match=needle) as info:
        parser.check_outputs([out_spec(shape, dtype)])
    assert "fix:" in str(info.value) and "'output0'" in str(info.value)


def test_auto_layout_rules() -> None:
    # 1. class count known: the dim equal to 4 + C
    assert parser_for("yolo", 640, 640, ["x"] * 80).resolve_layout((84, 8400), "o", True) == ("channels_first", 80)
    assert parser_for("yolo", 640, 640, ["x"] * 80).resolve_layout((8400, 84), "o", True) == ("channels_last", 80)
    assert parser_for("yolo", num_classes=2).resolve_layout((None, 6), "o", False) == ("channels_last", 2)
    # 2. N = the grid points of the input size: 32x32 -> 16 + 4 + 1 = 21 points, fewer than the 84 channels
    assert parser_for("yolo", 32, 32).resolve_layout((84, 21), "o", True) == ("channels_first", 80)
    assert parser_for("yolov5", 32, 32, layout="auto").resolve_layout((63, 85), "o", True) == ("channels_last", 80)
    assert parser_for("yolov5", 32, 32, layout="auto").resolve_layout((85, 63), "o", True) == ("channels_first", 80)
    # 3. otherwise the smaller dim is the channel dim
    assert parser_for("yolo", 300, 300).resolve_layout((84, 5000), "o", True) == ("channels_first", 80)
    assert parser_for("yolo").resolve_layout((None, None), "o", False) is None
    # ambiguous: 64x64 has 64 + 16 + 4 = 84 points, as many as 4 + 80 channels
    with pytest.raises(SpecError, match="cannot tell the channel dim.*fix: set output.layout"):
        parser_for("yolo", 64, 64).check_outputs([out_spec((1, 84, 84))])
    with pytest.raises(SpecError, match="cannot tell"):
        parser_for("yolo", 64, 64, ["x"] * 80).resolve_layout((84, 84), "o", True)
    assert parser_for("yolo", 64, 64, layout="channels_first").resolve_layout((84, 84), "o", True) == (
        "channels_first", 80)


def test_yolox_decode_grid_must_match_the_model() -> None:
    parser = parser_for("yolox", 640, 640, decode=True)
    parser.check_outputs([out_spec((1, 8400, 85))])
    parser.check_outputs([out_spec((1, None, 85))])  # dynamic: checked on the first frame
    with pytest.raises(SpecError, match=r"6300 rows but the decode grid of a 640x640 input with strides "
                                        r"\[8, 16, 32\] has 8400.*fix: set input.height/width"):  # fmt: skip
        parser.check_outputs([out_spec((1, 6300, 85))])
    with pytest.raises(OutputError, match="on this frame: .*6300 rows"):  # a frame is refused, not the spec
        parser.parse({"output0": np.zeros((1, 6300, 85), np.float32)}, ALL)
    p6 = parser_for("yolox", 640, 640, decode=True, strides=[8, 16, 32, 64])
    p6.check_outputs([out_spec((1, 8500, 85))])


@pytest.mark.parametrize(
    ("fmt", "output", "needle"),
    [
        ("yolo", {"layout": "nchw"}, r"output.layout is 'nchw'; expected one of \['auto', 'channels_first'"),
        ("yolo", {"num_classes": 0}, "output.num_classes is 0; expected null or an integer >= 1"),
        ("yolo", {"class_agnostic": "yes"}, "output.class_agnostic is 'yes'; expected true or false"),
        ("yolo", {"normalized": 1}, "output.normalized is 1; expected true or false"),
        ("yolo", {"decode": True}, "output.decode = True is not a parameter of output format 'yolo'"),
        ("yolov5", {"strides": [8]}, "output.strides.*not a parameter of output format 'yolov5'"),
        ("yolox", {"strides": [8, "16"]}, r"output.strides is \[8, '16'\]; expected a list of positive integer"),
        ("yolox", {"strides": []}, r"output.strides is \[\]"),
        ("yolox", {"decode": "true"}, "output.decode is 'true'; expected true or false"),
        ("yolox", {"decode": True, "normalized": True}, "output.normalized is True; expected false with decode"),
        ("yolox", {"decode": True, "strides": [8, 16, 32, 640]}, "no larger than the input size"),
        ("yolo", {"tensors": {"boxes": "output0"}}, r"missing role\(s\) \['output.tensors.predictions'\]"),
    ],
)
def test_bad_params_are_named(fmt: str, output: Dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        parser_for(fmt, **output)


def test_segmentation_export_is_refused() -> None:
    outputs = [out_spec((1, 116, 8400)), out_spec((1, 32, 160, 160), name="output1")]
    with pytest.raises(SpecError, match="mask-prototype output output1 .*not supported.*fix: export the detect"):
        parser_for("yolo", 640, 640).check_outputs(outputs)


def test_wrong_tensor_name_is_named() -> None:
    with pytest.raises(SpecError, match=r"output.tensors.predictions is 'output0'.*\['logits'\]"):
        parser_for("yolo").check_outputs([out_spec((1, 84, 8400), name="logits")])
