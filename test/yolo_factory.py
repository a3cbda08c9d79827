"""Builders and oracles for the yolo / yolov5 / yolox / end_to_end / boxes_scores tests (nothing downloaded).

- ``grid_head_model``: a REAL YOLO-style head computed from the image: one grid point per ``stride`` x
  ``stride`` cell, box = the cell, class 0 = the cell's mean red, class 1 = its mean green (objectness = the
  brighter of the two for yolov5/yolox; yolox ``decode`` gets raw offsets 0.5 and log-size 0 so the decode
  gives the cell back). Drawing a red square on a cell (in source pixels, through the letterbox) must give
  that square back. Laid out as the exporters lay it out, optionally with a dynamic N dim.
- ``head_model``: constant outputs + spec (NMS, threshold and layout cases), input ``images``.
- ``yolo_head`` / ``e2e_rows``: tensors with chosen detections, in a format's layout.
- ``canned_engine`` + ``install_tensorrt``: the same outputs as a fake TensorRT engine (test/fakes doubles).
- Oracles written from the exporters' own code, independent of trt_perception: ``yolox_demo_postprocess``
  (YOLOX yolox/utils/demo_utils.py), ``greedy_nms``, ``letterbox_to_source``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import onnx
import yaml
from fakes.cuda_fake import FakeGpu, install_cuda_python
from fakes.tensorrt_fake import make_plan, make_tensorrt_module, register_program
from onnx import TensorProto, helper, numpy_helper
from onnx_factory import constant_outputs

OPSET = 13
RED, GREEN, YELLOW = (0, 0, 255), (0, 255, 0), (0, 255, 255)  # BGR
DEFAULT_DETECTION = {"labels": ["red", "green"], "score_threshold": 0.5, "iou_threshold": 0.45, "max_detections": 100}


def spec_dict(
    fmt: str,
    height: int,
    width: int,
    output: Optional[Mapping[str, Any]] = None,
    detection: Optional[Mapping[str, Any]] = None,
    resize: str = "letterbox",
) -> Dict[str, Any]:
    """An Ultralytics-style spec: RGB, x/255, centred letterbox padded with 114."""
    return {
        "task": "detection",
        "name": f"{fmt} test model",
        "input": {"name": "images", "height": height, "width": width, "layout": "NCHW", "color": "RGB",
                  "resize": resize, "pad_value": 114, "scale": 1 / 255, "offset": 0.0},
        "output": {"format": fmt, **(output or {})},
        "detection": dict(DEFAULT_DETECTION if detection is None else detection),
    }  # fmt: skip


def _save(folder: Path, name: str, graph: onnx.GraphProto, spec: Mapping[str, Any]) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(dict(spec), sort_keys=False), encoding="utf-8")
    return path


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name + "_value"))


def grid_cells(height: int, width: int, stride: int) -> np.ndarray:
    """(M, 4) cx, cy, w, h of every stride x stride cell, row-major (the order the head's points come in)."""
    rows, cols = height // stride, width // stride
    yv, xv = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    centers = (np.stack([xv.ravel(), yv.ravel()], 1) + 0.5) * stride
    return np.concatenate([centers, np.full((rows * cols, 2), stride)], 1).astype(np.float32)


def grid_head_model(
    folder: Path,
    name: str = "grid",
    fmt: str = "yolo",
    height: int = 320,
    width: int = 320,
    stride: int = 40,
    layout: Optional[str] = None,
    dynamic: bool = False,
    output: Optional[Mapping[str, Any]] = None,
    detection: Optional[Mapping[str, Any]] = None,
) -> Path:
    """A detector whose head is computed from the image (see the module doc); writes ``name.onnx`` + spec."""
    layout = layout or ("channels_first" if fmt == "yolo" else "channels_last")
    rows, cols = height // stride, width // stride
    points = rows * cols
    cells = grid_cells(height, width, stride)
    if fmt == "yolox" and (output or {}).get("decode"):
        raw_boxes = np.zeros((points, 4), np.float32)
        raw_boxes[:, 0:2] = 0.5  # (0.5 + grid) * stride = the cell centre; exp(0) * stride = the cell size
    else:
        raw_boxes = cells
    nodes = [
        helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[stride] * 2, strides=[stride] * 2),
        _const("cls_starts", np.array([0], np.int64)),
        _const("cls_ends", np.array([2], np.int64)),
        _const("cls_axes", np.array([1], np.int64)),
        helper.make_node("Slice", ["pooled", "cls_starts", "cls_ends", "cls_axes"], ["cls_map"]),
        _const("cls_shape", np.array([1, 2, -1 if dynamic else points], np.int64)),
        helper.make_node("Reshape", ["cls_map", "cls_shape"], ["cls"]),
        _const("boxes", np.ascontiguousarray(raw_boxes.T[None])),  # [1, 4, M]
    ]
    parts = ["boxes"]
    if dynamic:  # the boxes follow the class rows' N, so no dim of the graph is static past the input
        nodes += [
            helper.make_node("Shape", ["cls"], ["cls_dims"]),
            _const("n_start", np.array([2], np.int64)),
            _const("n_end", np.array([3], np.int64)),
            helper.make_node("Slice", ["cls_dims", "n_start", "n_end"], ["n_points"]),
            _const("zero", np.array([0], np.int64)),
            _const("axis2", np.array([2], np.int64)),
            helper.make_node("Slice", ["boxes", "zero", "n_points", "axis2"], ["boxes_n"]),
        ]
        parts = ["boxes_n"]
    if fmt in ("yolov5", "yolox"):
        nodes += [
            helper.make_node("ReduceMax", ["cls_map"], ["obj_map"], axes=[1], keepdims=1),
            _const("obj_shape", np.array([1, 1, -1 if dynamic else points], np.int64)),
            helper.make_node("Reshape", ["obj_map", "obj_shape"], ["obj"]),
        ]
        parts.append("obj")
    parts.append("cls")
    channels = 4 + (1 if "obj" in parts else 0) + 2  # boxes, objectness, 2 classes
    out = "output0"
    if layout == "channels_first":
        nodes.append(helper.make_node("Concat", parts, [out], axis=1))
        out_shape: List[Any] = [1, channels, "N" if dynamic else points]
    else:
        nodes.append(helper.make_node("Concat", parts, ["head_cf"], axis=1))
        nodes.append(helper.make_node("Transpose", ["head_cf"], [out], perm=[0, 2, 1]))
        out_shape = [1, "N" if dynamic else points, channels]
    in_shape: List[Any] = [1, 3, "height", "width"] if dynamic else [1, 3, height, width]  # as export dynamic=True
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("images", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
    )  # fmt: skip
    spec = spec_dict(fmt, height, width, output, detection)
    spec["output"].setdefault("tensors", {"predictions": out})
    return _save(folder, name, graph, spec)


def head_model(
    folder: Path,
    name: str,
    fmt: str,
    outputs: Dict[str, np.ndarray],
    height: int = 320,
    width: int = 320,
    output: Optional[Mapping[str, Any]] = None,
    detection: Optional[Mapping[str, Any]] = None,
) -> Path:
    """A model with constant ``outputs`` (input ``images`` [1,3,H,W] unused) and its spec."""
    spec = spec_dict(fmt, height, width, output, detection)
    return constant_outputs(folder, name, outputs, spec, input_name="images", input_shape=(1, 3, height, width))


def yolo_head(
    detections: Sequence[Tuple[float, float, float, float, int, float]],
    points: int = 100,
    classes: int = 3,
    layout: str = "channels_first",
    objectness: Optional[Sequence[float]] = None,
    background: float = 0.01,
) -> np.ndarray:
    """A [1, 4(+1)+C, N] (channels_first) or [1, N, 4(+1)+C] head: row i = detections[i] as (cx, cy, w, h,
    class, class score); the other rows hold small boxes with ``background`` scores. ``objectness`` (one per
    detection) adds the objectness column (others get 0.02)."""
    box = 5 if objectness is not None else 4
    table = np.zeros((points, box + classes), np.float32)
    rng = np.random.default_rng(7)
    table[:, 0:2] = rng.uniform(20, 300, (points, 2))
    table[:, 2:4] = 8.0
    table[:, box:] = background
    if objectness is not None:
        table[:, 4] = 0.02
    for i, (cx, cy, w, h, cls, score) in enumerate(detections):
        table[i, 0:4] = (cx, cy, w, h)
        table[i, box + cls] = score
        if objectness is not None:
            table[i, 4] = objectness[i]
    head = table[None]
    return np.ascontiguousarray(head.transpose(0, 2, 1)) if layout == "channels_first" else head


def e2e_rows(rows: Sequence[Sequence[float]], k: int = 300, width: int = 6) -> np.ndarray:
    """[1, K, 6] (width 6) or [K', 7] (width 7: rows given as-is, no padding) end-to-end detections."""
    if width == 7:
        return np.asarray(rows, np.float32).reshape(-1, 7)
    table = np.zeros((1, k, 6), np.float32)
    table[0, : len(rows)] = np.asarray(rows, np.float32).reshape(-1, 6)
    return table


# ----------------------------------------------------------------------------------------------- oracles


def letterbox_to_source(
    boxes: np.ndarray, src_w: int, src_h: int, in_w: int, in_h: int, resize: str = "letterbox"
) -> np.ndarray:
    """Model-input xyxy -> source pixels for a centred letterbox (or stretch), clipped to the image."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    if resize == "letterbox":
        gain = min(in_w / src_w, in_h / src_h)
        content_w, content_h = round(src_w * gain), round(src_h * gain)
        pad_x, pad_y = (in_w - content_w) // 2, (in_h - content_h) // 2
        sx, sy = content_w / src_w, content_h / src_h
    else:
        pad_x = pad_y = 0
        sx, sy = in_w / src_w, in_h / src_h
    boxes[:, 0::2] = np.clip((boxes[:, 0::2] - pad_x) / sx, 0, src_w)
    boxes[:, 1::2] = np.clip((boxes[:, 1::2] - pad_y) / sy, 0, src_h)
    return boxes


def yolox_demo_postprocess(outputs: np.ndarray, img_size: Tuple[int, int], strides: Sequence[int]) -> np.ndarray:
    """YOLOX's demo_postprocess (yolox/utils/demo_utils.py), rewritten: img_size is (H, W)."""
    grids = []
    expanded_strides = []
    hsizes = [img_size[0] // stride for stride in strides]
    wsizes = [img_size[1] // stride for stride in strides]
    for hsize, wsize, stride in zip(hsizes, wsizes, strides):
        xv, yv = np.meshgrid(np.arange(wsize), np.arange(hsize))
        grid = np.stack((xv, yv), 2).reshape(1, -1, 2)
        grids.append(grid)
        shape = grid.shape[:2]
        expanded_strides.append(np.full((*shape, 1), stride))
    grid_all = np.concatenate(grids, 1)
    stride_all = np.concatenate(expanded_strides, 1)
    outputs = outputs.astype(np.float64).copy()
    outputs[..., :2] = (outputs[..., :2] + grid_all) * stride_all
    outputs[..., 2:4] = np.exp(outputs[..., 2:4]) * stride_all
    return outputs


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, classes: Optional[np.ndarray], iou: float) -> List[int]:
    """Plain greedy NMS (a box goes when its IoU with a kept, higher-scored box of its class is > iou)."""
    order = list(np.argsort(-scores, kind="stable"))
    kept: List[int] = []
    for i in order:
        ok = True
        for j in kept:
            if classes is not None and classes[i] != classes[j]:
                continue
            x1, y1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            x2, y2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
            union = area(boxes[i]) + area(boxes[j]) - inter
            if union > 0 and inter / union > iou:
                ok = False
                break
        if ok:
            kept.append(int(i))
    return kept


def reference_yolo(
    table: np.ndarray, threshold: float, iou: float, objectness: bool, agnostic: bool = False
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ultralytics-style post-processing of an [N, 4(+1)+C] table (cx, cy, w, h in pixels): best class per
    row, score threshold (>=), greedy NMS; returns xyxy boxes, scores, classes by descending score."""
    table = np.asarray(table, np.float64)
    box = 5 if objectness else 4
    scores_all = table[:, box:] * (table[:, 4:5] if objectness else 1.0)
    classes = scores_all.argmax(1)
    scores = scores_all.max(1)
    keep = scores >= threshold
    xywh, scores, classes = table[keep, :4], scores[keep], classes[keep]
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    kept = greedy_nms(boxes, scores, None if agnostic else classes, iou)
    return boxes[kept], scores[kept], classes[kept]


# ------------------------------------------------------------------------------------------- TensorRT


@register_program("yolo_factory.canned")
def _canned(
    inputs: Dict[str, np.ndarray], outputs: Dict[str, Any], params: Mapping[str, Any]
) -> Dict[str, np.ndarray]:
    """Every output = the array stored under its name in params['values'] (what a constant ONNX model gives)."""
    values = params["values"]
    return {name: np.asarray(values[name], dtype).reshape(shape) for name, (shape, dtype) in outputs.items()}


DTYPE_NAMES = {np.dtype(np.float32): "FLOAT", np.dtype(np.int32): "INT32", np.dtype(np.float16): "HALF"}


def install_tensorrt(monkeypatch: Any, version: str = "10.0.1") -> FakeGpu:
    """The TensorRT runtime double and the cuda-python double on one fake GPU."""
    gpu = FakeGpu()
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt_module(version, gpu))
    install_cuda_python(monkeypatch, gpu)
    return gpu


def canned_engine(
    folder: Path, name: str, outputs: Dict[str, np.ndarray], spec: Mapping[str, Any], gpu: FakeGpu,
    version: str = "10.0.1",
) -> Path:
    """A fake engine ``name.engine`` returning ``outputs`` for any input, with ``spec`` beside it."""
    height, width = spec["input"]["height"], spec["input"]["width"]
    tensors = [{"name": "images", "mode": "input", "shape": [1, 3, height, width]}]
    for out_name, array in outputs.items():
        tensors.append({"name": out_name, "mode": "output", "shape": list(array.shape),
                        "dtype": DTYPE_NAMES[array.dtype]})  # fmt: skip
    plan = make_plan(
        tensors, tensorrt_version=version, compute_capability=gpu.compute_capability, program="yolo_factory.canned",
        params={"values": {k: v.tolist() for k, v in outputs.items()}},
    )  # fmt: skip
    path = folder / f"{name}.engine"
    path.write_bytes(plan)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(dict(spec), sort_keys=False), encoding="utf-8")
    return path


def face_ssd_model(
    folder: Path,
    name: str = "face",
    height: int = 240,
    width: int = 320,
    stride: int = 40,
    box_format: str = "xyxy",
    output: Optional[Mapping[str, Any]] = None,
    detection: Optional[Mapping[str, Any]] = None,
) -> Path:
    """A ``boxes_scores`` face detector ending in Softmax + decoded boxes, like the Ultra-Light-Fast-Generic
    face detector's ONNX: input ``input`` [1,3,H,W] RGB (x - 127) / 128, stretched; one box per grid cell
    (normalized, in ``box_format``), ``scores`` [1, M, 2] = softmax([0, 10 * mean brightness of the cell])."""
    cells = grid_cells(height, width, stride)
    scale = np.array([width, height, width, height], np.float32)
    corners = np.concatenate([cells[:, 0:2] - cells[:, 2:4] / 2, cells[:, 0:2] + cells[:, 2:4] / 2], 1) / scale
    boxes = {"xyxy": corners, "yxyx": corners[:, [1, 0, 3, 2]], "cxcywh": cells / scale}[box_format]
    points = cells.shape[0]
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["gray"], axes=[1], keepdims=1),
        helper.make_node("AveragePool", ["gray"], ["pooled"], kernel_shape=[stride] * 2, strides=[stride] * 2),
        _const("flat_shape", np.array([1, points, 1], np.int64)),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["brightness"]),
        _const("gain", np.array(10.0, np.float32)),
        helper.make_node("Mul", ["brightness", "gain"], ["face_logit"]),
        _const("background_logit", np.zeros((1, points, 1), np.float32)),
        helper.make_node("Concat", ["background_logit", "face_logit"], ["logits"], axis=2),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=2),
        _const("boxes", boxes[None].astype(np.float32)),
    ]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, points, 2]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, points, 4])],
    )  # fmt: skip
    spec = {
        "task": "detection",
        "name": "face detector (Ultra-Light-Fast-Generic-Face-Detector layout)",
        "input": {"name": "input", "height": height, "width": width, "layout": "NCHW", "color": "RGB",
                  "resize": "stretch", "mean": 127.0, "std": 128.0},
        "output": {"format": "boxes_scores", "tensors": {"boxes": "boxes", "scores": "scores"},
                   "box_format": box_format, "normalized": True, "background_class": 0, **(output or {})},
        "detection": dict({"labels": ["background", "face"], "score_threshold": 0.7, "iou_threshold": 0.3}
                          if detection is None else detection),
    }  # fmt: skip
    return _save(folder, name, graph, spec)
