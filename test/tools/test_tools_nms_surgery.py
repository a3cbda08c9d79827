"""`convert --nms efficient|batched` on small SSD-like ONNX graphs built here (conv heads, two feature maps).

Checks the plugin node (op, domain, attributes, inputs, outputs, dtypes), onnx.checker, that ONNX Runtime
still runs the graph up to the plugin inputs with the numbers the raw heads gave, and that the numpy
EfficientNMS reference on those inputs agrees with the pipeline's ``ssd_raw`` decoder on the raw model.
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
              boxes_4d: bool = False, seed: int = 0, variances: Tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)) -> Path:
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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
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
