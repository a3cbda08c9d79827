"""`convert --nms efficient|batched` on small SSD-like ONNX graphs built here (conv heads, two feature maps) and
on YOLO-style heads (yolo [1, 4+C, N], yolov5 and yolox [1, N, 5+C], YOLOX with its grid decode).

Checks the plugin node (op, domain, attributes, inputs, outputs, dtypes), onnx.checker, that ONNX Runtime
still runs the graph up to the plugin inputs with the numbers the raw heads gave, and that the numpy
EfficientNMS reference on those inputs agrees with the pipeline's CPU decoder (``ssd_raw``, ``yolo``...) on the
raw model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from trt_perception.errors import BuildError, ConfigError, SpecError
from trt_perception.outputs import DetectionSettings, create_parser
from trt_perception.outputs.anchors import grid_anchors
from trt_perception.outputs.nms import efficient_nms_reference
from trt_perception.spec import load_spec
from trt_perception.tools.nms_surgery import (
    PLUGIN_DOMAIN,
    NmsSettings,
    add_nms_to_file,
    insert_nms,
    plugin_node,
    pre_nms_model,
)

SIZE = 32
MAPS = (4, 2)
RATIOS = (1.0, 2.0, 0.5)
CLASSES = 3  # background + 2


def _head(name: str, source: str, k: int, width: int, rng: np.random.Generator, scale: float) -> List[Any]:
    """conv(3 -> k*width) -> NHWC -> [1, H*W*k, width]: SSD's per-cell, per-anchor layout."""
    weight = (rng.standard_normal((k * width, 3, 1, 1)) * scale).astype(np.float32)
    bias = (rng.standard_normal(k * width) * scale).astype(np.float32)
    return [
        helper.make_node("Conv", [source, f"{name}_w", f"{name}_b"], [f"{name}_conv"]),
        helper.make_node("Transpose", [f"{name}_conv"], [f"{name}_nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", [f"{name}_nhwc", f"{name}_shape"], [f"{name}_flat"]),
    ], [
        numpy_helper.from_array(weight, f"{name}_w"),
        numpy_helper.from_array(bias, f"{name}_b"),
        numpy_helper.from_array(np.array([1, -1, width], np.int64), f"{name}_shape"),
    ]


def ssd_model(folder: Path, name: str = "ssd", box_order: str = "xy", activation: str = "sigmoid",
              boxes_4d: bool = False, seed: int = 0, variances: Tuple[float, ...] = (0.1, 0.1, 0.2, 0.2),
              opset: int = 13) -> Path:
    """A two-feature-map SSD: boxes [1,A,4] (or [1,A,1,4]) and scores [1,A,3] from 1x1 conv heads."""
    rng = np.random.default_rng(seed)
    per_layer = [3, len(RATIOS) + 1]  # reduce_boxes_in_lowest_layer: 3 anchors in the first layer
    nodes: List[Any] = []
    inits: List[Any] = []
    box_parts, score_parts = [], []
    for layer, (cells, k) in enumerate(zip(MAPS, per_layer)):
        pool = SIZE // cells
        nodes.append(helper.make_node("AveragePool", ["images"], [f"fm{layer}"], kernel_shape=[pool, pool],
                                      strides=[pool, pool]))
        for kind, width, scale in (("box", 4, 1.0), ("cls", CLASSES, 3.0)):
            n, i = _head(f"{kind}{layer}", f"fm{layer}", k, width, rng, scale)
            nodes += n
            inits += i
            (box_parts if kind == "box" else score_parts).append(f"{kind}{layer}_flat")
    nodes.append(helper.make_node("Concat", box_parts, ["boxes_3d" if boxes_4d else "boxes"], axis=1))
    nodes.append(helper.make_node("Concat", score_parts, ["scores"], axis=1))
    count = sum(c * c * k for c, k in zip(MAPS, per_layer))
    box_shape = [1, count, 4]
    if boxes_4d:
        inits.append(numpy_helper.from_array(np.array([1, count, 1, 4], np.int64), "box4_shape"))
        nodes.append(helper.make_node("Reshape", ["boxes_3d", "box4_shape"], ["boxes"]))
        box_shape = [1, count, 1, 4]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, box_shape),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, count, CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    anchors = grid_anchors(list(MAPS), aspect_ratios=list(RATIOS))
    assert anchors.shape == (count, 4)
    np.save(folder / f"{name}_anchors.npy", anchors)
    spec = {
        "task": "detection",
        "input": {"name": "images", "height": SIZE, "width": SIZE, "layout": "NCHW", "scale": 1 / 255},
        "output": {"format": "ssd_raw", "tensors": {"boxes": "boxes", "scores": "scores"},
                   "anchors": {"file": f"{name}_anchors.npy"}, "variances": list(variances),
                   "box_order": box_order, "score_activation": activation, "background_class": 0},
        "detection": {"labels": ["background", "car", "cone"], "score_threshold": 0.4, "iou_threshold": 0.5,
                      "max_detections": 20},
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _run(model: onnx.ModelProto, image: np.ndarray) -> Dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": image})))


def _image(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, SIZE, SIZE)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ EfficientNMS


@pytest.mark.parametrize(("box_order", "activation", "boxes_4d"),
                         [("xy", "sigmoid", False), ("yx", "softmax", True), ("xy", "none", False)])
def test_efficient_nms_node_and_spec(tmp_path: Path, box_order: str, activation: str, boxes_4d: bool) -> None:
    source = ssd_model(tmp_path, box_order=box_order, activation=activation, boxes_4d=boxes_4d)
    out, spec_path = add_nms_to_file(source, kind="efficient")
    assert out == tmp_path / "ssd_efficient_nms.onnx" and spec_path == tmp_path / "ssd_efficient_nms.yaml"
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    node = plugin_node(model)
    assert (node.op_type, node.domain) == ("EfficientNMS_TRT", PLUGIN_DOMAIN)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {
        "plugin_version": b"1", "background_class": 0, "max_output_boxes": 20,
        "score_threshold": pytest.approx(0.4), "iou_threshold": pytest.approx(0.5),
        "score_activation": int(activation == "sigmoid"), "box_coding": 1,
    }
    assert [o.name for o in model.graph.output] == list(node.output) == [
        "num_detections", "detection_boxes", "detection_scores", "detection_classes"]
    types = {o.name: (o.type.tensor_type.elem_type, [d.dim_value for d in o.type.tensor_type.shape.dim])
             for o in model.graph.output}
    assert types == {
        "num_detections": (TensorProto.INT32, [1, 1]),
        "detection_boxes": (TensorProto.FLOAT, [1, 20, 4]),
        "detection_scores": (TensorProto.FLOAT, [1, 20]),
        "detection_classes": (TensorProto.INT32, [1, 20]),
    }
    # third input: the anchors constant, [1, A, 4] in the regression's coordinate order
    anchors = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}[node.input[2]]
    reference = np.load(tmp_path / "ssd_anchors.npy")
    expected = reference[:, [1, 0, 3, 2]] if box_order == "yx" else reference
    np.testing.assert_array_equal(anchors, expected[None])
    spec = load_spec(out)
    assert spec.output.format == "efficient_nms"
    assert dict(spec.output.tensors) == {"num_detections": "num_detections", "boxes": "detection_boxes",
                                         "scores": "detection_scores", "classes": "detection_classes"}
    assert spec.output.params == {"normalized": True, "box_order": "yxyx" if box_order == "yx" else "xyxy"}
    assert spec.detection.labels == ("background", "car", "cone") and spec.detection.max_detections == 20
    assert spec.data["source"]["nms"]["plugin"] == "EfficientNMS_TRT"


@pytest.mark.parametrize(("box_order", "activation", "boxes_4d"),
                         [("xy", "sigmoid", False), ("yx", "softmax", True), ("yx", "none", False)])
def test_efficient_plugin_inputs_keep_the_numbers_and_agree_with_ssd_raw(
    tmp_path: Path, box_order: str, activation: str, boxes_4d: bool
) -> None:
    source = ssd_model(tmp_path, box_order=box_order, activation=activation, boxes_4d=boxes_4d)
    raw_spec = load_spec(source)
    out, _ = add_nms_to_file(source, kind="efficient")
    model = onnx.load(str(out))
    node = plugin_node(model)
    image = _image()
    raw = _run(onnx.load(str(source)), image)
    inputs = _run(pre_nms_model(model), image)
    assert set(inputs) == set(node.input[:2])
    deltas = raw["boxes"].reshape(1, -1, 4)
    np.testing.assert_allclose(inputs[node.input[0]], deltas * np.float32([0.1, 0.1, 0.2, 0.2]), rtol=1e-6)
    scores = raw["scores"]
    if activation == "softmax":
        e = np.exp(scores - scores.max(-1, keepdims=True))
        scores = e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(inputs[node.input[1]], scores, rtol=1e-5, atol=1e-7)

    # The plugin's semantics (numpy reference) on the plugin inputs == the pipeline's CPU decoder on the raw heads
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    anchors = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}[node.input[2]]
    num, boxes, out_scores, classes = efficient_nms_reference(
        inputs[node.input[0]], inputs[node.input[1]], anchors, score_threshold=attrs["score_threshold"],
        iou_threshold=attrs["iou_threshold"], max_output_boxes=attrs["max_output_boxes"],
        background_class=attrs["background_class"], score_activation=bool(attrs["score_activation"]),
        box_coding=attrs["box_coding"],
    )
    settings = DetectionSettings(score_threshold=0.4, iou_threshold=0.5, max_detections=20)
    engine_like = create_parser(load_spec(out)).parse(
        {"num_detections": num, "detection_boxes": boxes, "detection_scores": out_scores,
         "detection_classes": classes}, settings)
    cpu = create_parser(raw_spec).parse(raw, settings)
    assert len(cpu.scores) >= 3, "the test model should give several detections"
    np.testing.assert_allclose(engine_like.scores, cpu.scores, rtol=1e-5)
    np.testing.assert_array_equal(engine_like.class_ids, cpu.class_ids)
    np.testing.assert_allclose(engine_like.boxes, cpu.boxes, rtol=1e-4, atol=1e-3)


# -------------------------------------------------------------------------------------------------- BatchedNMS


@pytest.mark.parametrize(("box_order", "activation"), [("xy", "sigmoid"), ("yx", "softmax")])
def test_batched_nms_node_decode_and_agreement(tmp_path: Path, box_order: str, activation: str) -> None:
    source = ssd_model(tmp_path, box_order=box_order, activation=activation)
    raw_spec = load_spec(source)
    out, spec_path = add_nms_to_file(source, tmp_path / "batched.onnx", kind="batched", top_k=50)
    assert spec_path == tmp_path / "batched.yaml"
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    node = plugin_node(model)
    assert (node.op_type, node.domain) == ("BatchedNMSDynamic_TRT", PLUGIN_DOMAIN)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {
        "plugin_version": b"1", "shareLocation": 1, "backgroundLabelId": 0, "numClasses": CLASSES, "topK": 50,
        "keepTopK": 20, "scoreThreshold": pytest.approx(0.4), "iouThreshold": pytest.approx(0.5),
        "isNormalized": 1, "clipBoxes": 0,
    }
    assert len(node.input) == 2
    types = {o.name: (o.type.tensor_type.elem_type, [d.dim_value for d in o.type.tensor_type.shape.dim])
             for o in model.graph.output}
    assert types == {
        "num_detections": (TensorProto.INT32, [1, 1]),
        "nmsed_boxes": (TensorProto.FLOAT, [1, 20, 4]),
        "nmsed_scores": (TensorProto.FLOAT, [1, 20]),
        "nmsed_classes": (TensorProto.FLOAT, [1, 20]),
    }
    spec = load_spec(out)
    assert spec.output.format == "batched_nms" and spec.output.params["box_order"] == (
        "yxyx" if box_order == "yx" else "xyxy")

    image = _image(5)
    raw = _run(onnx.load(str(source)), image)
    inputs = _run(pre_nms_model(model), image)
    corners = inputs[node.input[0]]
    assert corners.shape == (1, raw["scores"].shape[1], 1, 4)
    # the in-graph decode equals the CPU decoder's, anchor for anchor (CPU gives xyxy pixels)
    parser = create_parser(raw_spec)
    decoded = parser.decode(raw["boxes"].reshape(-1, 4), np.arange(parser.num_anchors)) / SIZE
    graph_xyxy = corners[0, :, 0][:, [1, 0, 3, 2]] if box_order == "yx" else corners[0, :, 0]
    np.testing.assert_allclose(graph_xyxy, decoded, rtol=1e-5, atol=1e-6)
    probabilities = inputs[node.input[1]]
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    # plain NMS over the decoded boxes (the plugin's job) gives the CPU decoder's detections
    num, boxes, scores, classes = efficient_nms_reference(
        corners, probabilities, score_threshold=0.4, iou_threshold=0.5, max_output_boxes=20, background_class=0)
    settings = DetectionSettings(score_threshold=0.4, iou_threshold=0.5, max_detections=20)
    engine_like = create_parser(spec).parse(
        {"num_detections": num, "nmsed_boxes": boxes, "nmsed_scores": scores,
         "nmsed_classes": classes.astype(np.float32)}, settings)
    cpu = parser.parse(raw, settings)
    assert len(cpu.scores) >= 3
    np.testing.assert_allclose(engine_like.scores, cpu.scores, rtol=1e-5)
    np.testing.assert_array_equal(engine_like.class_ids, cpu.class_ids)
    np.testing.assert_allclose(engine_like.boxes, cpu.boxes, rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------------------------------------------ errors


def test_refusals(tmp_path: Path) -> None:
    source = ssd_model(tmp_path)
    out, _ = add_nms_to_file(source, kind="efficient")
    with pytest.raises(BuildError, match="exists; refusing to overwrite"):
        add_nms_to_file(source, kind="efficient")
    add_nms_to_file(source, kind="efficient", force=True)
    with pytest.raises(SpecError, match="needs a model with raw SSD heads.*'efficient_nms'"):
        add_nms_to_file(out, tmp_path / "twice.onnx", kind="batched")
    with pytest.raises(ConfigError, match="expected one of"):
        add_nms_to_file(source, tmp_path / "x.onnx", kind="fast")
    with pytest.raises(ConfigError, match="overwrite its input"):
        add_nms_to_file(source, source, kind="efficient")
    with pytest.raises(ConfigError, match="keepTopK"):
        add_nms_to_file(source, tmp_path / "k.onnx", kind="batched", top_k=10)
    with pytest.raises(ConfigError, match="top-k 5000"):
        NmsSettings.from_spec(load_spec(source), top_k=5000)
    data = yaml.safe_load(source.with_suffix(".yaml").read_text())
    data["output"]["tensors"]["boxes"] = "loc"
    source.with_suffix(".yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="'loc' but the ONNX graph has no such output"):
        add_nms_to_file(source, tmp_path / "y.onnx", kind="efficient")


def test_insert_nms_in_memory_and_output_elsewhere(tmp_path: Path) -> None:
    source = ssd_model(tmp_path)
    model, data = insert_nms(onnx.load(str(source)), load_spec(source), "efficient",
                             NmsSettings(score_threshold=0.3, iou_threshold=0.6, max_detections=10))
    assert data["output"]["format"] == "efficient_nms" and data["detection"]["max_detections"] == 10
    attrs = {a.name: helper.get_attribute_value(a) for a in plugin_node(model).attribute}
    assert attrs["score_threshold"] == pytest.approx(0.3) and attrs["iou_threshold"] == pytest.approx(0.6)
    assert data["detection"]["score_threshold"] == 0.4  # the spec's run-time threshold is above the plugin's
    (tmp_path / "out").mkdir()
    out, spec_path = add_nms_to_file(source, tmp_path / "out" / "ssd.onnx", kind="batched")
    spec = load_spec(out)
    assert spec.data["source"]["model"] == str(source.resolve())
    assert spec_path.parent == tmp_path / "out"


# ------------------------------------------------------------------------------------------------ YOLO heads

YOLO_SIZE, YOLO_STRIDE, YOLO_CLASSES = 64, 8, 3
YOLO_POINTS = (YOLO_SIZE // YOLO_STRIDE) ** 2


def yolo_model(folder: Path, fmt: str = "yolo", seed: int = 1, normalized: bool = False, agnostic: bool = False,
               name: str = "yolo", opset: int = 13) -> Path:
    """A YOLO-style head from 1x1 convs on an 8x8 pooled map (64 points), laid out as its exporter does:
    boxes sigmoid(conv) * [S, S, S/2, S/2] (yolox: raw offsets / log sizes for the grid decode), classes
    softmax(6 * conv) so at most one class per point passes 0.5, objectness sigmoid(conv) for yolov5/yolox."""
    rng = np.random.default_rng(seed)
    nodes: List[Any] = [helper.make_node("AveragePool", ["images"], ["fm"], kernel_shape=[YOLO_STRIDE] * 2,
                                         strides=[YOLO_STRIDE] * 2)]
    inits: List[Any] = []

    def conv(label: str, width: int, scale: float) -> str:
        inits.extend([
            numpy_helper.from_array((rng.standard_normal((width, 3, 1, 1)) * scale).astype(np.float32), f"{label}_w"),
            numpy_helper.from_array((rng.standard_normal(width) * scale).astype(np.float32), f"{label}_b"),
            numpy_helper.from_array(np.array([1, width, YOLO_POINTS], np.int64), f"{label}_shape"),
        ])
        nodes.append(helper.make_node("Conv", ["fm", f"{label}_w", f"{label}_b"], [f"{label}_map"]))
        nodes.append(helper.make_node("Reshape", [f"{label}_map", f"{label}_shape"], [f"{label}_raw"]))
        return f"{label}_raw"

    box_raw = conv("box", 4, 2.0)
    if fmt == "yolox":
        inits.append(numpy_helper.from_array(np.array(0.5, np.float32), "box_gain"))
        nodes.append(helper.make_node("Mul", [box_raw, "box_gain"], ["boxes"]))  # offsets and log sizes
    else:
        span = np.array([1, 1, 0.5, 0.5] if normalized else [YOLO_SIZE, YOLO_SIZE, YOLO_SIZE / 2, YOLO_SIZE / 2])
        inits.append(numpy_helper.from_array(span.reshape(1, 4, 1).astype(np.float32), "box_span"))
        nodes.append(helper.make_node("Sigmoid", [box_raw], ["box_unit"]))
        nodes.append(helper.make_node("Mul", ["box_unit", "box_span"], ["boxes"]))
    inits.append(numpy_helper.from_array(np.array(6.0, np.float32), "cls_gain"))
    nodes.append(helper.make_node("Mul", [conv("cls", YOLO_CLASSES, 1.0), "cls_gain"], ["cls_logits"]))
    nodes.append(helper.make_node("Softmax", ["cls_logits"], ["cls"], axis=1))
    parts = ["boxes", "cls"]
    if fmt != "yolo":
        nodes.append(helper.make_node("Sigmoid", [conv("obj", 1, 3.0)], ["obj"]))
        parts = ["boxes", "obj", "cls"]
    channels = 4 + YOLO_CLASSES + (fmt != "yolo")
    if fmt == "yolo":  # Ultralytics: [1, 4+C, N]
        nodes.append(helper.make_node("Concat", parts, ["output0"], axis=1))
        out_shape = [1, channels, YOLO_POINTS]
    else:  # YOLOv5 / YOLOX: [1, N, 5+C]
        nodes.append(helper.make_node("Concat", parts, ["head"], axis=1))
        nodes.append(helper.make_node("Transpose", ["head"], ["output0"], perm=[0, 2, 1]))
        out_shape = [1, YOLO_POINTS, channels]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, YOLO_SIZE, YOLO_SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    output: Dict[str, Any] = {"format": fmt, "tensors": {"predictions": "output0"}, "class_agnostic": agnostic}
    if fmt == "yolox":
        output.update(decode=True, strides=[YOLO_STRIDE])
    else:
        output["normalized"] = normalized
    spec = {
        "task": "detection",
        "input": {"name": "images", "height": YOLO_SIZE, "width": YOLO_SIZE, "resize": "letterbox", "pad_value": 114,
                  "scale": 1 / 255},
        "output": output,
        "detection": {"labels": ["car", "cone", "person"], "score_threshold": 0.5, "iou_threshold": 0.45,
                      "max_detections": 20},
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _yolo_image(seed: int) -> np.ndarray:
    """A frame of random flat 8x8 cells: every grid point sees its own colour."""
    cells = np.random.default_rng(seed).random((1, 3, YOLO_SIZE // YOLO_STRIDE, YOLO_SIZE // YOLO_STRIDE))
    return np.kron(cells, np.ones((1, 1, YOLO_STRIDE, YOLO_STRIDE))).astype(np.float32)


def _yolo_table(fmt: str, raw: np.ndarray) -> np.ndarray:
    """[N, 4(+1)+C] rows, boxes decoded to cx, cy, w, h pixels (YOLOX decode written out here)."""
    table = raw[0].T if fmt == "yolo" else raw[0]
    table = table.astype(np.float64).copy()
    if fmt == "yolox":
        cells = YOLO_SIZE // YOLO_STRIDE
        gy, gx = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([gx.ravel(), gy.ravel()], 1)
        table[:, 0:2] = (table[:, 0:2] + grid) * YOLO_STRIDE
        table[:, 2:4] = np.exp(table[:, 2:4]) * YOLO_STRIDE
    return table


YOLO_CASES = [("yolo", False, False), ("yolov5", False, False), ("yolox", False, False), ("yolo", True, True)]


@pytest.mark.parametrize(("fmt", "normalized", "agnostic"), YOLO_CASES)
def test_yolo_efficient_nms_node_spec_and_agreement(tmp_path: Path, fmt: str, normalized: bool, agnostic: bool) -> None:
    source = yolo_model(tmp_path, fmt, normalized=normalized, agnostic=agnostic)
    out, spec_path = add_nms_to_file(source, kind="efficient")
    assert spec_path == tmp_path / "yolo_efficient_nms.yaml"
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    node = plugin_node(model)
    assert (node.op_type, node.domain) == ("EfficientNMS_TRT", PLUGIN_DOMAIN) and len(node.input) == 2
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    expected_attrs = {
        "plugin_version": b"1", "background_class": -1, "max_output_boxes": 20,
        "score_threshold": pytest.approx(0.5), "iou_threshold": pytest.approx(0.45),
        "score_activation": 0, "box_coding": 1,
    }
    if agnostic:
        expected_attrs["class_agnostic"] = 1
    assert attrs == expected_attrs
    types = {o.name: (o.type.tensor_type.elem_type, [d.dim_value for d in o.type.tensor_type.shape.dim])
             for o in model.graph.output}
    assert types == {
        "num_detections": (TensorProto.INT32, [1, 1]),
        "detection_boxes": (TensorProto.FLOAT, [1, 20, 4]),
        "detection_scores": (TensorProto.FLOAT, [1, 20]),
        "detection_classes": (TensorProto.INT32, [1, 20]),
    }
    spec = load_spec(out)
    assert spec.output.format == "efficient_nms"
    assert spec.output.params == {"normalized": normalized, "box_order": "xyxy"}
    assert spec.detection.labels == ("car", "cone", "person")
    assert spec.data["source"]["nms"]["from_format"] == fmt

    # ONNX Runtime up to the plugin: boxes [1, N, 4] center-size, scores [1, N, C] (obj * cls)
    raw_spec = load_spec(source)
    image = _yolo_image(3)
    raw = _run(onnx.load(str(source)), image)["output0"]
    inputs = _run(pre_nms_model(model), image)
    boxes_in, scores_in = inputs[node.input[0]], inputs[node.input[1]]
    table = _yolo_table(fmt, raw)
    scale = np.array([YOLO_SIZE, YOLO_SIZE] * 2) if normalized else 1.0
    np.testing.assert_allclose(boxes_in[0] * scale, table[:, 0:4] * scale, rtol=1e-5, atol=1e-4)
    class_scores = table[:, 5:] * table[:, 4:5] if fmt != "yolo" else table[:, 4:]
    np.testing.assert_allclose(scores_in[0], class_scores, rtol=1e-5, atol=1e-7)

    # the plugin's semantics (numpy reference) on those inputs == the CPU yolo parser on the raw head
    num, boxes, scores, classes = efficient_nms_reference(
        boxes_in, scores_in, score_threshold=attrs["score_threshold"], iou_threshold=attrs["iou_threshold"],
        max_output_boxes=attrs["max_output_boxes"], background_class=attrs["background_class"],
        score_activation=False, class_agnostic=agnostic, box_coding=attrs["box_coding"],
    )
    settings = DetectionSettings(score_threshold=0.5, iou_threshold=0.45, max_detections=20)
    engine_like = create_parser(spec).parse(
        {"num_detections": num, "detection_boxes": boxes, "detection_scores": scores, "detection_classes": classes},
        settings,
    )
    cpu = create_parser(raw_spec).parse({"output0": raw}, settings)
    assert len(cpu.scores) >= 3, "the test model should give several detections"
    np.testing.assert_allclose(engine_like.scores, cpu.scores, rtol=1e-5)
    np.testing.assert_array_equal(engine_like.class_ids, cpu.class_ids)
    np.testing.assert_allclose(engine_like.boxes, cpu.boxes, atol=1e-3)


@pytest.mark.parametrize("fmt", ["yolo", "yolov5"])
def test_yolo_batched_nms_corners_and_agreement(tmp_path: Path, fmt: str) -> None:
    source = yolo_model(tmp_path, fmt)
    out, _ = add_nms_to_file(source, tmp_path / "batched.onnx", kind="batched")
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    node = plugin_node(model)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {
        "plugin_version": b"1", "shareLocation": 1, "backgroundLabelId": -1, "numClasses": YOLO_CLASSES,
        "topK": YOLO_POINTS, "keepTopK": 20, "scoreThreshold": pytest.approx(0.5),
        "iouThreshold": pytest.approx(0.45), "isNormalized": 0, "clipBoxes": 0,
    }
    spec = load_spec(out)
    assert spec.output.format == "batched_nms" and spec.output.params["normalized"] is False
    image = _yolo_image(8)
    raw = _run(onnx.load(str(source)), image)["output0"]
    inputs = _run(pre_nms_model(model), image)
    corners = inputs[node.input[0]]
    assert corners.shape == (1, YOLO_POINTS, 1, 4)
    table = _yolo_table(fmt, raw)
    xyxy = np.concatenate([table[:, 0:2] - table[:, 2:4] / 2, table[:, 0:2] + table[:, 2:4] / 2], 1)
    np.testing.assert_allclose(corners[0, :, 0], xyxy, rtol=1e-5, atol=1e-4)
    num, boxes, scores, classes = efficient_nms_reference(
        corners, inputs[node.input[1]], score_threshold=0.5, iou_threshold=0.45, max_output_boxes=20)
    settings = DetectionSettings(score_threshold=0.5, iou_threshold=0.45, max_detections=20)
    engine_like = create_parser(spec).parse(
        {"num_detections": num, "nmsed_boxes": boxes, "nmsed_scores": scores,
         "nmsed_classes": classes.astype(np.float32)}, settings)
    cpu = create_parser(load_spec(source)).parse({"output0": raw}, settings)
    assert len(cpu.scores) >= 3
    np.testing.assert_allclose(engine_like.scores, cpu.scores, rtol=1e-5)
    np.testing.assert_array_equal(engine_like.class_ids, cpu.class_ids)
    np.testing.assert_allclose(engine_like.boxes, cpu.boxes, atol=1e-3)


def test_yolo_cli_and_refusals(tmp_path: Path) -> None:
    from trt_perception.cli import main

    source = yolo_model(tmp_path, "yolo")
    assert main(["convert", str(source), "--nms", "efficient", "--max-detections", "10"]) == 0
    spec = load_spec(tmp_path / "yolo_efficient_nms.onnx")
    assert spec.output.format == "efficient_nms" and spec.detection.max_detections == 10
    agnostic = yolo_model(tmp_path, "yolo", agnostic=True, name="agnostic")
    with pytest.raises(ConfigError, match="BatchedNMS has no class-agnostic mode"):
        add_nms_to_file(agnostic, kind="batched")
    data = yaml.safe_load(source.with_suffix(".yaml").read_text())
    data["output"]["tensors"]["predictions"] = "preds"
    source.with_suffix(".yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="'preds' but the ONNX graph has no such output"):
        add_nms_to_file(source, tmp_path / "x.onnx", kind="efficient")
    data["output"]["tensors"]["predictions"] = "output0"
    data["output"]["num_classes"] = 5
    source.with_suffix(".yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"neither dim is 4 \+ 5 = 9"):
        add_nms_to_file(source, tmp_path / "y.onnx", kind="efficient")
    data["output"] = {"format": "yolox", "tensors": {"predictions": "output0"}, "decode": True, "strides": [16]}
    yolox = yolo_model(tmp_path, "yolox", name="yx")
    yolox.with_suffix(".yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(BuildError, match="64 rows but the YOLOX grid .* has 16"):
        add_nms_to_file(yolox, tmp_path / "z.onnx", kind="efficient")


# ------------------------------------------------------------------------------------------------------ opsets


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("kind", ["efficient", "batched"])
def test_opset_9_models_keep_their_opset_and_pass_the_checker(tmp_path: Path, kind: str) -> None:
    """Opset 9 has Slice with attributes, not inputs: the nodes inserted must be built for the model's opset
    (before: "Node nms/deltas_center_node ... Slice:1 has input size 4" from onnx.checker)."""
    image = _image(3)
    twin_out, _ = add_nms_to_file(ssd_model(tmp_path, name="ssd13", seed=4), tmp_path / "twin.onnx", kind=kind)
    source = ssd_model(tmp_path, name="ssd9", seed=4, opset=9)
    out, _ = add_nms_to_file(source, tmp_path / f"ssd9_{kind}.onnx", kind=kind)
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert _opset(model) == 9
    got, want = _run(pre_nms_model(model), image), _run(pre_nms_model(onnx.load(str(twin_out))), image)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)
    for fmt in ("yolo", "yolov5"):  # the YOLO cut (Slice per column group), also the corners for batched
        yolo = yolo_model(tmp_path, fmt, name=f"{fmt}9", opset=9)
        out, _ = add_nms_to_file(yolo, tmp_path / f"{fmt}9_{kind}.onnx", kind=kind)
        model = onnx.load(str(out))
        onnx.checker.check_model(model)
        assert _opset(model) == 9
        _run(pre_nms_model(model), np.random.default_rng(0).random((1, 3, YOLO_SIZE, YOLO_SIZE)).astype(np.float32))


def test_opset_argument_converts_the_model_first(tmp_path: Path) -> None:
    source = ssd_model(tmp_path, name="ssd9", seed=2, opset=9)
    kept, _ = add_nms_to_file(source, tmp_path / "kept.onnx", kind="batched")
    converted, _ = add_nms_to_file(source, tmp_path / "converted.onnx", kind="batched", opset=13)
    model = onnx.load(str(converted))
    onnx.checker.check_model(model)
    assert _opset(model) == 13 and _opset(onnx.load(str(kept))) == 9
    image = _image(7)
    got, want = _run(pre_nms_model(model), image), _run(pre_nms_model(onnx.load(str(kept))), image)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)
    model, _ = insert_nms(onnx.load(str(source)), load_spec(source), "efficient", opset=11)
    assert _opset(model) == 11
    with pytest.raises(ConfigError, match=r"--opset 5.*7\.\.\d+"):
        add_nms_to_file(source, tmp_path / "old.onnx", kind="batched", opset=5)
    with pytest.raises(ConfigError, match=r"--opset 99"):
        add_nms_to_file(source, tmp_path / "new.onnx", kind="batched", opset=99)
    assert not (tmp_path / "old.onnx").exists() and not (tmp_path / "new.onnx").exists()
