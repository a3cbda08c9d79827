"""ONNX models shaped like the exports users bring (Ultralytics, YOLOv5, SSD heads, DonkeyCar...), for the spec
writer and the inspect range check. Outputs are constants (the input is unused): only names, shapes, metadata
and output values matter here. Nothing is downloaded; no spec is written beside the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
ULTRALYTICS_META = {
    "description": "Ultralytics YOLOv8n model trained on coco.yaml",
    "author": "Ultralytics",
    "version": "8.3.0",
    "stride": "32",
    "task": "detect",
    "batch": "1",
    "imgsz": "[320, 320]",
    "names": "{0: 'person', 1: 'car'}",
    "args": "{'batch': 1, 'half': False, 'dynamic': False, 'simplify': True, 'opset': None, 'nms': False}",
    "channels": "3",
}
Shape = Sequence[Union[int, str]]


def model_with_outputs(
    folder: Path,
    name: str,
    outputs: Mapping[str, np.ndarray],
    metadata: Optional[Mapping[str, str]] = None,
    input_name: str = "images",
    input_shape: Shape = (1, 3, 320, 320),
    input_dtype: int = TensorProto.FLOAT,
    declared: Optional[Mapping[str, Shape]] = None,
    extra_inputs: Optional[Dict[str, Shape]] = None,
) -> Path:
    """``<name>.onnx`` whose outputs are the given constants; ``declared`` overrides an output's declared shape
    (symbolic dims as strings)."""
    nodes, values = [], []
    for out_name, array in outputs.items():
        const = out_name + "_const"
        nodes.append(helper.make_node("Constant", [], [const], value=numpy_helper.from_array(array, const + "_v")))
        nodes.append(helper.make_node("Identity", [const], [out_name]))
        shape = list((declared or {}).get(out_name, array.shape))
        values.append(helper.make_tensor_value_info(out_name, helper.np_dtype_to_tensor_dtype(array.dtype), shape))
    inputs = [helper.make_tensor_value_info(input_name, input_dtype, list(input_shape))]
    for extra, shape in (extra_inputs or {}).items():
        inputs.append(helper.make_tensor_value_info(extra, TensorProto.FLOAT, list(shape)))
    graph = helper.make_graph(nodes, name, inputs, values)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(model)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def yolo_predictions(nc: int = 2, size: int = 320, normalized: bool = False, logits: bool = False) -> np.ndarray:
    """[1, 4+nc, N] like an Ultralytics detect head: boxes in input pixels, sigmoid class scores."""
    n = sum((size // s) ** 2 for s in (8, 16, 32))
    rng = np.random.default_rng(0)
    pred = np.zeros((1, 4 + nc, n), np.float32)
    pred[0, 0:2] = rng.uniform(0, size, (2, n))
    pred[0, 2:4] = rng.uniform(4, size / 2, (2, n))
    if normalized:
        pred[0, :4] /= size
    pred[0, 4:] = rng.normal(0, 3, (nc, n)) if logits else rng.uniform(0, 1, (nc, n))
    return pred


def ultralytics_detect(folder: Path, name: str = "yolov8n", nc: int = 2, **meta: str) -> Path:
    metadata = dict(ULTRALYTICS_META, **meta)
    return model_with_outputs(folder, name, {"output0": yolo_predictions(nc)}, metadata)


def ultralytics_end_to_end(folder: Path, name: str = "yolov8n_nms") -> Path:
    dets = np.zeros((1, 300, 6), np.float32)
    dets[0, :3] = [[10, 10, 50, 60, 0.9, 0], [100, 100, 200, 220, 0.8, 1], [5, 5, 20, 20, 0.3, 1]]
    meta = dict(ULTRALYTICS_META, args="{'batch': 1, 'nms': True}")
    return model_with_outputs(folder, name, {"output0": dets}, meta)


def ultralytics_classify(folder: Path, name: str = "yolov8n-cls") -> Path:
    probs = np.array([[0.7, 0.3]], np.float32)
    meta = dict(ULTRALYTICS_META, task="classify", imgsz="[224, 224]")
    return model_with_outputs(folder, name, {"output0": probs}, meta, input_shape=(1, 3, 224, 224))


def ultralytics_segment(folder: Path, name: str = "yolov8n-seg") -> Path:
    n = 2100
    meta = dict(ULTRALYTICS_META, task="segment")
    outputs = {"output0": np.zeros((1, 4 + 2 + 32, n), np.float32), "output1": np.zeros((1, 32, 80, 80), np.float32)}
    return model_with_outputs(folder, name, outputs, meta)


def ssd_heads(folder: Path, name: str = "ssd", decoded: bool = False, boxes_name: str = "boxes",
              anchors: int = 64, classes: int = 3) -> Path:
    """scores [1,A,C] + boxes [1,A,4]: SSD offsets (about N(0, 1)), or already-decoded normalized corners."""
    rng = np.random.default_rng(1)
    if decoded:
        x1y1 = rng.uniform(0.0, 0.6, (anchors, 2))
        boxes = np.concatenate([x1y1, x1y1 + rng.uniform(0.05, 0.39, (anchors, 2))], 1)
    else:
        boxes = rng.normal(0, 1, (anchors, 4))
    scores = rng.uniform(0, 1, (anchors, classes))
    outputs = {"scores": scores[None].astype(np.float32), boxes_name: boxes[None].astype(np.float32)}
    return model_with_outputs(folder, name, outputs, input_name="input", input_shape=(1, 3, 300, 300))
