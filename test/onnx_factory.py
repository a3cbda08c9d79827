"""Tiny ONNX models with known behaviour, built in code for the tests (nothing is downloaded).

Each builder writes ``<name>.onnx`` and its spec ``<name>.yaml`` into a folder and returns the model path.
Import from any test (test/conftest.py puts test/ on sys.path): ``from onnx_factory import grid_detector``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def _save(folder: Path, name: str, graph: onnx.GraphProto, spec: Dict[str, Any]) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by older onnxruntime releases too
    onnx.checker.check_model(model)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name + "_value"))


def grid_detector(
    folder: Path,
    name: str = "grid",
    size: int = 64,
    cells: int = 8,
    resize: str = "letterbox",
    detection: Optional[Dict[str, Any]] = None,
    batch: Union[int, str] = 1,
) -> Path:
    """An ``ssd_raw`` detector that 'sees' bright grid cells.

    Input ``images`` [batch,3,size,size] scaled x/255 (``batch`` a name: dynamic). Each anchor is one grid
    cell; its score for class 1 ('blob') is the cell's mean brightness, class 0 is background. Box offsets are
    zero, so a detection is exactly its cell: drawing a white square on a cell (in source pixels, through
    resize/letterbox) must give back that square.
    """
    cell = size // cells
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["gray"], axes=[1], keepdims=1),
        helper.make_node("AveragePool", ["gray"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]),
        _const("shape_a1", np.array([0, cells * cells, 1], np.int64)),  # 0: the batch as it comes
        helper.make_node("Reshape", ["pooled", "shape_a1"], ["fg"]),
        _const("one", np.array(1.0, np.float32)),
        helper.make_node("Sub", ["one", "fg"], ["bg"]),
        helper.make_node("Concat", ["bg", "fg"], ["scores"], axis=2),
        _const("zero", np.array(0.0, np.float32)),
        helper.make_node("Concat", ["fg", "fg", "fg", "fg"], ["fg4"], axis=2),
        helper.make_node("Mul", ["fg4", "zero"], ["boxes"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, cells * cells, 2]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, cells * cells, 4]),
        ],
    )
    centers = (np.arange(cells, dtype=np.float32) + 0.5) / cells
    cy, cx = np.meshgrid(centers, centers, indexing="ij")
    anchors = np.stack([cx.ravel(), cy.ravel(), np.full(cx.size, 1 / cells), np.full(cx.size, 1 / cells)], 1)
    np.save(folder / f"{name}_anchors.npy", anchors.astype(np.float32))
    spec = {
        "task": "detection",
        "name": name,
        "input": {"name": "images", "height": size, "width": size, "layout": "NCHW", "color": "RGB",
                  "resize": resize, "pad_value": 0, "scale": 1 / 255, "offset": 0.0},
        "output": {
            "format": "ssd_raw",
            "tensors": {"scores": "scores", "boxes": "boxes"},
            "anchors": {"file": f"{name}_anchors.npy"},
            "variances": [0.1, 0.1, 0.2, 0.2],
            "score_activation": "none",
            "background_class": 0,
        },
        "detection": detection or {"labels": ["background", "blob"], "score_threshold": 0.5,
                                   "iou_threshold": 0.45, "max_detections": 10},
    }
    return _save(folder, name, graph, spec)


def brightness_pilot(
    folder: Path, name: str = "pilot", height: int = 120, width: int = 160, batch: Union[int, str] = 1
) -> Path:
    """A ``steering_linear`` model (DonkeyCar layout): angle = 2*mean(x)-1, throttle = mean of the red channel.

    Input ``img_in`` [batch,H,W,3] NHWC RGB scaled x/255, outputs ``angle`` and ``throttle`` [batch,1]
    (``batch`` a name: dynamic).
    """
    nodes = [
        helper.make_node("ReduceMean", ["img_in"], ["mean_all"], axes=[1, 2, 3], keepdims=0),
        _const("two", np.array(2.0, np.float32)),
        _const("one", np.array(1.0, np.float32)),
        helper.make_node("Mul", ["mean_all", "two"], ["twice"]),
        helper.make_node("Sub", ["twice", "one"], ["angle_flat"]),
        _const("shape11", np.array([-1, 1], np.int64)),
        helper.make_node("Reshape", ["angle_flat", "shape11"], ["angle"]),
        _const("starts", np.array([0], np.int64)),
        _const("ends", np.array([1], np.int64)),
        _const("axes", np.array([3], np.int64)),
        helper.make_node("Slice", ["img_in", "starts", "ends", "axes"], ["red"]),
        helper.make_node("ReduceMean", ["red"], ["throttle_flat"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Reshape", ["throttle_flat", "shape11"], ["throttle"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("img_in", TensorProto.FLOAT, [batch, height, width, 3])],
        [
            helper.make_tensor_value_info("angle", TensorProto.FLOAT, [batch, 1]),
            helper.make_tensor_value_info("throttle", TensorProto.FLOAT, [batch, 1]),
        ],
    )
    spec = {
        "task": "steering",
        "input": {"name": "img_in", "height": height, "width": width, "layout": "NHWC", "color": "RGB",
                  "scale": 1 / 255, "offset": 0.0},
        "output": {"format": "steering_linear", "tensors": {"angle": "angle", "throttle": "throttle"}},
    }
    return _save(folder, name, graph, spec)


def constant_outputs(
    folder: Path,
    name: str,
    outputs: Dict[str, np.ndarray],
    spec: Dict[str, Any],
    input_name: str = "Input",
    input_shape: Sequence[int] = (1, 3, 300, 300),
) -> Path:
    """A model whose outputs are constants (plugin-style formats: nms_trt, efficient_nms, batched_nms).

    The input is unused on purpose: only the parser and the pipeline's mapping are under test.
    """
    nodes: List[onnx.NodeProto] = []
    values = []
    for out_name, array in outputs.items():
        nodes.append(_const(out_name + "_c", array))
        nodes.append(helper.make_node("Identity", [out_name + "_c"], [out_name]))
        elem = helper.np_dtype_to_tensor_dtype(array.dtype)
        values.append(helper.make_tensor_value_info(out_name, elem, list(array.shape)))
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))], values
    )
    return _save(folder, name, graph, spec)


def nms_trt_rows(rows: Sequence[Sequence[float]], keep_top_k: int = 100) -> Dict[str, np.ndarray]:
    """NMS_TRT outputs: ``NMS`` (1,K,7) padded with label -1 rows, ``NMS_1`` the count as int32 bits in float32."""
    table = np.zeros((1, keep_top_k, 7), np.float32)
    table[0, :, 1] = -1
    table[0, : len(rows)] = np.asarray(rows, np.float32)
    count = np.array([len(rows)], np.int32).view(np.float32).reshape(1, 1, 1)
    return {"NMS": table, "NMS_1": count}
