"""Append TensorRT's NMS plugin to an ``ssd_raw`` or raw-YOLO ONNX model (today's UFF + NMS_TRT equivalent).

Input: a model whose spec says ``ssd_raw`` (raw box regression [B,A,4] or [B,A,1,4], class scores [B,A,C],
anchors, variances, box order, score activation, background class). Output: the same graph with the plugin
node appended (onnx-graphsurgeon), its outputs named as the plugin defines them, and the spec switched to
``efficient_nms`` or ``batched_nms``, so the engine built from it needs no CPU decode or NMS.

EfficientNMS_TRT (``--nms efficient``), plugin/efficientNMSPlugin at 8.2.1 and v10.0.0:
  inputs (boxes, scores, anchors) with ``box_coding=1`` - the plugin's fused center-size decoder
  (efficientNMSInference.cuh ``BoxCenterSize::decode``: c = d * anchor_size + anchor_center,
  s = anchor_size * exp(d)). That decoder has no variances, so one ``Mul`` by the variances goes in front of
  it; the anchors become a constant [1,A,4] input in the regression's own coordinate order. Decoding in the
  plugin touches only the top candidates, where decoding in the graph first would run exp over every anchor:
  the fused decoder is the cheaper choice, and the one the plugin README recommends for SSD. Attributes:
  plugin_version "1", background_class, max_output_boxes, score_threshold, iou_threshold, score_activation
  (1 for sigmoid heads: the plugin then thresholds logits and applies sigmoid to the kept scores only, as the
  ``ssd_raw`` decoder does), box_coding 1. ``class_agnostic`` is left out: TensorRT 8.2's creator does not
  know it. Softmax heads get a ``Softmax`` node in front (score_activation 0).
  Outputs: num_detections int32 [B,1], detection_boxes float32 [B,K,4] (corners, in the regression's
  coordinate order), detection_scores float32 [B,K], detection_classes int32 [B,K].

BatchedNMSDynamic_TRT (``--nms batched``, for TensorRT < 8.4 and the Jetson Nano, where EfficientNMS is
known to return bad scores), plugin/batchedNMSPlugin at 8.2.1: it takes decoded corner boxes, so the decode
(same formula, variances folded into constants) is written as ONNX ops in front of it; boxes [B,A,1,4]
(``shareLocation``), scores after sigmoid/softmax. The ``Dynamic`` variant is the IPluginV2DynamicExt one
that explicit-batch ONNX networks need (its outputs have a batch dim: num_detections [B,1]); ``BatchedNMS_TRT``
can be chosen with ``plugin_op``. Attributes: shareLocation 1, backgroundLabelId, numClasses, topK (<= 4096,
the plugin's limit), keepTopK, scoreThreshold, iouThreshold, isNormalized 1, clipBoxes 0 (the CPU decoder
does not clip either; the pipeline clips final boxes to the image). Outputs: num_detections int32 [B,1],
nmsed_boxes float32 [B,K,4], nmsed_scores float32 [B,K], nmsed_classes float32 [B,K].

YOLO heads (spec format ``yolo``, ``yolov5``, or ``yolox``): one predictions tensor, [B, 4+C, N] (Ultralytics'
channels-first export, transposed here) or [B, N, 4(+1)+C], boxes cx, cy, w, h in input pixels (or 0..1 with
``normalized: true``). The graph is cut into boxes [B, N, 4] (a Slice) and scores [B, N, C] (a Slice; times
the objectness column for yolov5/yolox); a YOLOX head exported without ``--decode_in_inference``
(``decode: true``) gets its grid decode as ONNX ops first (xy = (xy + grid) * stride, wh = exp(wh) * stride,
grid and strides as constants for the spec's input size). EfficientNMS_TRT then runs in standard mode
(two inputs, no anchors) with ``box_coding=1``: its boxes input is read as center-size and converted to
corners (efficientNMSInference.cu ``DecodeBoxes`` without ``boxDecoder``: ``BoxCorner<T>(BoxCenterSize)``),
so no corner ops are needed in the graph; score_activation 0 (scores are already sigmoid probabilities),
background_class -1, and class_agnostic 1 only when the spec asks for agnostic NMS (left out otherwise, as
above). YOLOv7's own ``--end2end`` TensorRT export feeds the plugin the same way. BatchedNMSDynamic_TRT gets
the corners computed as ONNX ops ([B, N, 1, 4]), ``isNormalized`` 0 for pixel boxes. The written spec says
``efficient_nms``/``batched_nms`` with ``normalized: false`` (pixel boxes; true when the head was normalized).
Difference to the CPU ``yolo`` parser: the plugins consider every (box, class) pair above the threshold, so a
box with two classes above it can be reported twice, where the parser reports each box's best class only
(Ultralytics' ``multi_label=False``); both NMS per class.

Plugin nodes go into the ONNX domain ``trt.plugins``: TensorRT's ONNX parser dispatches on op_type alone and
imports any op it has no importer for through its plugin fallback (onnx-tensorrt ModelImporter.cpp /
builtin_op_importers.cpp ``FallbackPluginImporter`` at release/8.2-GA and release/10.0-GA), so the domain does
not matter to TensorRT; a custom domain keeps ``onnx.checker`` happy and is the domain ONNX Runtime's TensorRT
execution provider uses for TensorRT plugins.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import onnx

from trt_perception.errors import BuildError, ConfigError, SpecError
from trt_perception.onnx_file import load_onnx
from trt_perception.spec import OUTPUT_FORMATS, ModelSpec, load_spec, parse_spec, save_spec

PathLike = Union[str, Path]
PLUGIN_DOMAIN = "trt.plugins"
NMS_KINDS = ("efficient", "batched")
EFFICIENT_OP = "EfficientNMS_TRT"
BATCHED_OP = "BatchedNMSDynamic_TRT"
BATCHED_TOP_K_LIMIT = 4096  # batchedNMSPlugin README "Known issues": no more than 4096 boxes into NMS
FORMAT_OF = {"efficient": "efficient_nms", "batched": "batched_nms"}
YOLO_FORMATS = ("yolo", "yolov5", "yolox")


@dataclass(frozen=True)
class NmsSettings:
    """What the plugin bakes in. Thresholds set the floor: at run time the spec can only be stricter."""

    score_threshold: float
    iou_threshold: float
    max_detections: int
    top_k: Optional[int] = None  # BatchedNMS: candidates per class going into NMS (default min(A, 4096))

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec,
        score_threshold: Optional[float] = None,
        iou_threshold: Optional[float] = None,
        max_detections: Optional[int] = None,
        top_k: Optional[int] = None,
    ) -> NmsSettings:
        settings = cls(
            score_threshold=spec.detection.score_threshold if score_threshold is None else float(score_threshold),
            iou_threshold=spec.detection.iou_threshold if iou_threshold is None else float(iou_threshold),
            max_detections=spec.detection.max_detections if max_detections is None else int(max_detections),
            top_k=None if top_k is None else int(top_k),
        )
        if not 0.0 <= settings.score_threshold < 1.0:
            raise ConfigError(f"NMS score threshold {settings.score_threshold} is not valid; expected 0 <= t < 1")
        if not 0.0 < settings.iou_threshold <= 1.0:
            raise ConfigError(f"NMS IoU threshold {settings.iou_threshold} is not valid; expected 0 < t <= 1")
        if settings.max_detections <= 0:
            raise ConfigError(f"NMS max detections {settings.max_detections} is not valid; expected a positive count")
        if settings.top_k is not None and not 0 < settings.top_k <= BATCHED_TOP_K_LIMIT:
            raise ConfigError(f"NMS top-k {settings.top_k} is not valid; expected 1..{BATCHED_TOP_K_LIMIT}")
        return settings


@dataclass(frozen=True)
class _Heads:
    """What the ssd_raw spec says about the model's raw heads, resolved once."""

    anchors: np.ndarray  # [1, A, 4] normalized center-size, in the regression's coordinate order
    variances: np.ndarray  # (4,) in the regression's order
    box_order: str  # "xy" or "yx"
    score_activation: str
    background_class: int  # -1 for none
    num_classes: int


def _gs() -> Any:
    try:
        import onnx_graphsurgeon as gs
    except ImportError as exc:
        raise BuildError(
            f"NMS plugin insertion needs onnx-graphsurgeon ({exc}); fix: pip install onnx-graphsurgeon "
            "(or the trt_perception[surgery] extra)"
        ) from exc
    return gs


def _heads(spec: ModelSpec, scores_shape: Tuple[Any, ...]) -> _Heads:
    from trt_perception.outputs.ssd_raw import SsdRawParser

    if spec.output.format != "ssd_raw":
        raise SpecError(
            f"--nms needs a model with raw SSD heads (output.format ssd_raw) or a raw YOLO head "
            f"({', '.join(YOLO_FORMATS)}); this spec says "
            f"{spec.output.format!r}{f' ({spec.source})' if spec.source else ''}; fix: convert the detector with "
            "raw heads first (trt-perception convert --ssd ...), or use the model as it is"
        )
    parser = SsdRawParser(spec)
    anchors, variances = parser.efficient_nms_anchors()
    classes = scores_shape[-1] if scores_shape else None
    if not isinstance(classes, int) or classes <= 0:
        raise BuildError(f"the scores head has shape {list(scores_shape)}; its class count must be static")
    background = -1 if parser.background_class is None else int(parser.background_class)
    return _Heads(anchors, variances, parser.box_order, parser.score_activation, background, int(classes))


def _find_output(graph: Any, name: str, role: str) -> Any:
    for tensor in graph.outputs:
        if tensor.name == name:
            return tensor
    raise SpecError(
        f"spec output.tensors.{role} is {name!r} but the ONNX graph has no such output; its outputs are "
        f"{[t.name for t in graph.outputs]}; fix the spec's output.tensors"
    )


def _batch_dim(tensor: Any) -> Any:
    shape = tensor.shape or []
    return shape[0] if shape else "batch"


def _ops(gs: Any, graph: Any) -> Tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """``const(name, value)``, ``op(op_type, inputs, name, dtype, shape, **attrs)`` and
    ``slice_last(source, start, end, name, shape)`` (columns start:end of axis 2) adding to ``graph``, built
    for the graph's opset: Slice takes its bounds as attributes before opset 10 and as inputs from 10 on."""
    opset = int(graph.opset)

    def const(name: str, value: np.ndarray) -> Any:
        return gs.Constant(f"nms/{name}", np.ascontiguousarray(value))

    def op(op_type: str, inputs: List[Any], name: str, dtype: Any = np.float32, shape: Any = None, **attrs: Any) -> Any:
        out = gs.Variable(f"nms/{name}", dtype=dtype, shape=shape)
        graph.nodes.append(gs.Node(op_type, f"nms/{name}_node", attrs, inputs, [out]))
        return out

    def slice_last(source: Any, start: int, end: int, name: str, shape: Any) -> Any:
        if opset < 10:
            return op("Slice", [source], name, shape=shape, starts=[start], ends=[end], axes=[2])
        bounds = [const(f"{name}_{key}", np.array([value], np.int64))
                  for key, value in (("start", start), ("end", end), ("axis", 2))]  # fmt: skip
        return op("Slice", [source, *bounds], name, shape=shape)

    return const, op, slice_last


MIN_OPSET = 7  # Reshape with a shape input (5) and TensorRT's ONNX parser (7)


def default_opset(model: onnx.ModelProto) -> int:
    """The model's ai.onnx opset."""
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def with_opset(model: onnx.ModelProto, opset: Optional[int]) -> onnx.ModelProto:
    """``model`` converted to ai.onnx ``opset`` (onnx.version_converter) when one is asked for; else as it is.

    The NMS nodes are then built for that opset, so the output passes onnx.checker at any opset from 7 on."""
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not MIN_OPSET <= int(opset) <= newest:
        raise ConfigError(
            f"--opset {opset} is not one trt-perception convert writes; expected {MIN_OPSET}..{newest} (this onnx "
            "package's newest); fix: pass e.g. --opset 13 (TensorRT 8.2 on the Nano parses 7..13)"
        )
    current = default_opset(model)
    if opset is None or int(opset) == current:
        if current < MIN_OPSET:
            raise BuildError(
                f"the model is at opset {current}; the NMS surgery needs opset {MIN_OPSET} or later; fix: pass "
                "--opset 13 to convert it first"
            )
        return model
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, int(opset))
    except Exception as exc:  # the converter raises RuntimeError/ValidationError/C++ errors by op
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildError(
            f"onnx.version_converter cannot convert the model from opset {current} to {opset} ({reason}); fix: "
            f"re-export it at opset {opset} from its framework, or leave --opset out to keep opset {current}"
        ) from None
    converted.ir_version = max(int(model.ir_version), int(converted.ir_version))
    return converted


def insert_nms(
    model: onnx.ModelProto,
    spec: ModelSpec,
    kind: str = "efficient",
    settings: Optional[NmsSettings] = None,
    plugin_op: Optional[str] = None,
    opset: Optional[int] = None,
) -> Tuple[onnx.ModelProto, Dict[str, Any]]:
    """The model with the NMS plugin appended, and the new spec mapping (not yet validated or written).

    ``opset``: convert the model to this ai.onnx opset first (None: keep the model's); the inserted nodes are
    built for the resulting opset either way."""
    if kind not in NMS_KINDS:
        raise ConfigError(f"--nms {kind!r} is not known; expected one of {list(NMS_KINDS)}")
    gs = _gs()
    settings = settings or NmsSettings.from_spec(spec)
    model = with_opset(model, opset)
    graph = gs.import_onnx(model)
    if spec.output.format in YOLO_FORMATS:
        return _insert_yolo_nms(gs, graph, model, spec, kind, settings, plugin_op)
    boxes = _find_output(graph, spec.output.tensors["boxes"], "boxes")
    scores = _find_output(graph, spec.output.tensors["scores"], "scores")
    heads = _heads(spec, tuple(scores.shape or ()))
    count = int(heads.anchors.shape[1])
    batch = _batch_dim(scores)

    const, op, slice_last = _ops(gs, graph)

    # Box regression as [B, A, 4] (a [B, A, 1, 4] head is reshaped; 0 keeps the batch dim).
    deltas = op("Reshape", [boxes, const("deltas_shape", np.array([0, -1, 4], np.int64))], "deltas",
                shape=[batch, count, 4])
    # Scores as the plugin wants them.
    if heads.score_activation == "softmax":
        scores_in = op("Softmax", [scores], "scores_softmax", shape=scores.shape, axis=-1)
    elif heads.score_activation == "sigmoid" and kind == "batched":
        scores_in = op("Sigmoid", [scores], "scores_sigmoid", shape=scores.shape)
    else:
        scores_in = scores
    scores_in = op("Reshape", [scores_in, const("scores_shape", np.array([0, -1, heads.num_classes], np.int64))],
                   "scores", shape=[batch, count, heads.num_classes])
    k = settings.max_detections
    box_order = "yxyx" if heads.box_order == "yx" else "xyxy"

    if kind == "efficient":
        scaled = deltas
        if not np.allclose(heads.variances, 1.0):
            scaled = op("Mul", [deltas, const("variances", heads.variances.reshape(1, 1, 4))], "deltas_scaled",
                        shape=[batch, count, 4])
        attrs = {
            "plugin_version": "1",
            "background_class": heads.background_class,
            "max_output_boxes": k,
            "score_threshold": float(settings.score_threshold),
            "iou_threshold": float(settings.iou_threshold),
            "score_activation": 1 if heads.score_activation == "sigmoid" else 0,
            "box_coding": 1,
        }
        outputs = _plugin_outputs(gs, kind, batch, k)
        inputs = [scaled, scores_in, const("anchors", heads.anchors.astype(np.float32))]
        op_type = plugin_op or EFFICIENT_OP
    else:
        corners = _decode_corners(op, const, slice_last, deltas, heads, batch, count)
        top_k = settings.top_k or min(count, BATCHED_TOP_K_LIMIT)
        if k > top_k and settings.top_k is None:
            k = top_k  # fewer anchors than detections asked for: every anchor fits
        elif k > top_k:
            raise ConfigError(f"BatchedNMS keepTopK ({k} detections) must not exceed topK ({top_k}); lower "
                              "--max-detections or raise --top-k")
        attrs = {
            "plugin_version": "1",
            "shareLocation": 1,
            "backgroundLabelId": heads.background_class,
            "numClasses": heads.num_classes,
            "topK": top_k,
            "keepTopK": k,
            "scoreThreshold": float(settings.score_threshold),
            "iouThreshold": float(settings.iou_threshold),
            "isNormalized": 1,
            "clipBoxes": 0,
        }
        outputs = _plugin_outputs(gs, kind, batch, k)
        inputs = [corners, scores_in]
        op_type = plugin_op or BATCHED_OP

    return _finish(gs, graph, model, spec, kind, settings, op_type, attrs, inputs, outputs,
                   consumed=(boxes.name, scores.name), normalized=True, box_order=box_order, k=k)


def _plugin_outputs(gs: Any, kind: str, batch: Any, k: int) -> List[Any]:
    """The plugin's output tensors, named as the plugin defines them."""
    if kind == "efficient":
        return [
            gs.Variable("num_detections", dtype=np.int32, shape=[batch, 1]),
            gs.Variable("detection_boxes", dtype=np.float32, shape=[batch, k, 4]),
            gs.Variable("detection_scores", dtype=np.float32, shape=[batch, k]),
            gs.Variable("detection_classes", dtype=np.int32, shape=[batch, k]),
        ]
    return [
        gs.Variable("num_detections", dtype=np.int32, shape=[batch, 1]),
        gs.Variable("nmsed_boxes", dtype=np.float32, shape=[batch, k, 4]),
        gs.Variable("nmsed_scores", dtype=np.float32, shape=[batch, k]),
        gs.Variable("nmsed_classes", dtype=np.float32, shape=[batch, k]),
    ]


def _finish(
    gs: Any,
    graph: Any,
    model: onnx.ModelProto,
    spec: ModelSpec,
    kind: str,
    settings: NmsSettings,
    op_type: str,
    attrs: Dict[str, Any],
    inputs: List[Any],
    outputs: List[Any],
    consumed: Tuple[str, ...],
    normalized: bool,
    box_order: str,
    k: int,
) -> Tuple[onnx.ModelProto, Dict[str, Any]]:
    """Append the plugin node, export the graph, and write the plugin format's spec mapping."""
    taken = {t.name for t in graph.tensors().values()} - set(consumed)
    clash = sorted(t.name for t in outputs if t.name in taken)
    if clash:
        raise BuildError(f"the graph already has tensors named {clash}, the names the {op_type} outputs must have")
    graph.nodes.append(gs.Node(op_type, f"nms/{op_type}", attrs, inputs, outputs, domain=PLUGIN_DOMAIN))
    graph.outputs = outputs
    graph.cleanup().toposort()
    out_model = gs.export_onnx(graph)
    out_model.ir_version = model.ir_version
    out_model.producer_name = model.producer_name or "trt_perception"

    data = spec.to_dict()
    fmt = FORMAT_OF[kind]
    data["output"] = {
        "format": fmt,
        "tensors": dict(OUTPUT_FORMATS[fmt].default_tensors),
        "normalized": normalized,
        "box_order": box_order,
    }
    detection = dict(data.get("detection") or {})
    detection["max_detections"] = min(int(detection.get("max_detections", k)), k)
    detection.setdefault("score_threshold", float(settings.score_threshold))
    detection["score_threshold"] = max(float(detection["score_threshold"]), float(settings.score_threshold))
    data["detection"] = detection
    provenance = dict(data["source"]) if isinstance(data.get("source"), dict) else {}
    data["source"] = {
        **provenance,
        "nms": {
            "plugin": op_type,
            "from_format": spec.output.format,
            "score_threshold": float(settings.score_threshold),
            "iou_threshold": float(settings.iou_threshold),
            "max_detections": k,
        }
    }
    return out_model, data


def _insert_yolo_nms(
    gs: Any,
    graph: Any,
    model: onnx.ModelProto,
    spec: ModelSpec,
    kind: str,
    settings: NmsSettings,
    plugin_op: Optional[str],
) -> Tuple[onnx.ModelProto, Dict[str, Any]]:
    """The NMS plugin after a raw YOLO head (yolo, yolov5, yolox): see the module doc."""
    from trt_perception.outputs import create_parser
    from trt_perception.outputs.yolo import YoloParser, YoloxParser, yolox_grids

    parser = create_parser(spec)  # validates the format's parameters as the pipeline would
    assert isinstance(parser, YoloParser)
    name = spec.output.tensors["predictions"]
    predictions = _find_output(graph, name, "predictions")
    shape = list(predictions.shape or [])
    if len(shape) != 3:
        raise BuildError(
            f"the predictions output {name!r} has shape {shape}; --nms needs a rank-3 YOLO head ([B, 4+C, N] or "
            "[B, N, channels])"
        )
    dims = [d if isinstance(d, int) and d >= 0 else None for d in shape]
    resolved = parser.resolve_layout(dims[1:], name, final=False)
    if resolved is None:
        raise BuildError(
            f"the predictions output {name!r} has shape {shape}: its channel dim (4(+1)+C) is not static, and "
            "the plugin needs the class count; fix: export with a static class dim, and set output.layout"
        )
    layout, classes = resolved
    box = parser.box_columns
    channels = box + classes
    batch = _batch_dim(predictions)
    count = shape[2] if layout == "channels_first" else shape[1]
    const, op, slice_last = _ops(gs, graph)

    table = predictions
    if layout == "channels_first":
        table = op("Transpose", [predictions], "rows", shape=[batch, count, channels], perm=[0, 2, 1])

    def columns(source: Any, label: str, start: int, end: int) -> Any:
        return slice_last(source, start, end, label, [batch, count, end - start])

    xywh = columns(table, "boxes_cxcywh", 0, 4)
    scores = columns(table, "class_scores", box, channels)
    if parser.objectness:
        objectness = columns(table, "objectness", 4, 5)
        scores = op("Mul", [scores, objectness], "scores", shape=[batch, count, classes])
    if isinstance(parser, YoloxParser) and parser.decode:
        if isinstance(count, int) and count >= 0 and count != parser.num_points:
            raise BuildError(
                f"the predictions output {name!r} has {count} rows but the YOLOX grid of the spec's input size and "
                f"strides {list(parser.strides)} has {parser.num_points}; fix: check input.height/width and "
                "output.strides"
            )
        height, width = parser.input_size
        grid, stride = yolox_grids(height, width, parser.strides)
        points = parser.num_points
        offsets = columns(table, "raw_xy", 0, 2)
        log_sizes = columns(table, "raw_wh", 2, 4)
        cells = op("Add", [offsets, const("yolox_grid", grid[None])], "cells", shape=[batch, points, 2])
        centres = op("Mul", [cells, const("yolox_strides", stride[None])], "centres", shape=[batch, points, 2])
        sizes = op("Mul", [op("Exp", [log_sizes], "sizes_exp", shape=[batch, points, 2]),
                           const("yolox_size_strides", stride[None])], "sizes", shape=[batch, points, 2])  # fmt: skip
        xywh = op("Concat", [centres, sizes], "boxes_decoded", shape=[batch, points, 4], axis=2)

    k = settings.max_detections
    if kind == "efficient":
        attrs: Dict[str, Any] = {
            "plugin_version": "1",
            "background_class": -1,
            "max_output_boxes": k,
            "score_threshold": float(settings.score_threshold),
            "iou_threshold": float(settings.iou_threshold),
            "score_activation": 0,
            "box_coding": 1,
        }
        if parser.class_agnostic:
            attrs["class_agnostic"] = 1
        inputs = [xywh, scores]
        op_type = plugin_op or EFFICIENT_OP
    else:
        if parser.class_agnostic:
            raise ConfigError(
                "BatchedNMS has no class-agnostic mode and the spec says class_agnostic: true; fix: use --nms "
                "efficient, or set output.class_agnostic: false"
            )
        centre = columns(xywh, "box_centres", 0, 2)
        half = op("Mul", [columns(xywh, "box_sizes", 2, 4), const("half", np.array(0.5, np.float32))],
                  "box_half_sizes", shape=[batch, count, 2])  # fmt: skip
        low = op("Sub", [centre, half], "corner_low", shape=[batch, count, 2])
        high = op("Add", [centre, half], "corner_high", shape=[batch, count, 2])
        corners = op("Concat", [low, high], "corners", shape=[batch, count, 4], axis=2)
        corners = op("Reshape", [corners, const("corners_shape", np.array([0, -1, 1, 4], np.int64))], "boxes",
                     shape=[batch, count, 1, 4])  # fmt: skip
        known_count = count if isinstance(count, int) and count > 0 else BATCHED_TOP_K_LIMIT
        top_k = settings.top_k or min(known_count, BATCHED_TOP_K_LIMIT)
        if k > top_k and settings.top_k is None:
            k = top_k
        elif k > top_k:
            raise ConfigError(f"BatchedNMS keepTopK ({k} detections) must not exceed topK ({top_k}); lower "
                              "--max-detections or raise --top-k")
        attrs = {
            "plugin_version": "1",
            "shareLocation": 1,
            "backgroundLabelId": -1,
            "numClasses": classes,
            "topK": top_k,
            "keepTopK": k,
            "scoreThreshold": float(settings.score_threshold),
            "iouThreshold": float(settings.iou_threshold),
            "isNormalized": 1 if parser.normalized else 0,
            "clipBoxes": 0,
        }
        inputs = [corners, scores]
        op_type = plugin_op or BATCHED_OP
    outputs = _plugin_outputs(gs, kind, batch, k)
    return _finish(gs, graph, model, spec, kind, settings, op_type, attrs, inputs, outputs,
                   consumed=(predictions.name,), normalized=parser.normalized, box_order="xyxy", k=k)


def _decode_corners(op: Any, const: Any, slice_last: Any, deltas: Any, heads: _Heads, batch: Any, count: int) -> Any:
    """ONNX ops turning the regression into [B, A, 1, 4] corner boxes (the ssd_raw decoder's formula).

    center = anchor_center + d_center * variance_center * anchor_size
    half   = anchor_size * exp(d_size * variance_size) / 2;   corners = (center - half, center + half)
    Coordinates stay in the regression's order (x, y or y, x).
    """
    anchors = heads.anchors.astype(np.float64)[0]
    variances = heads.variances.astype(np.float64)

    def piece(name: str, start: int) -> Any:
        return slice_last(deltas, start, start + 2, f"deltas_{name}", [batch, count, 2])

    center_delta, size_delta = piece("center", 0), piece("size", 2)
    center_factor = (anchors[:, 2:4] * variances[0:2])[None].astype(np.float32)
    center = op("Add", [op("Mul", [center_delta, const("center_factor", center_factor)], "center_offset",
                           shape=[batch, count, 2]),
                        const("anchor_centers", anchors[None, :, 0:2].astype(np.float32))],
                "centers", shape=[batch, count, 2])
    size_scaled = op("Mul", [size_delta, const("size_variances", variances[2:4].reshape(1, 1, 2).astype(np.float32))],
                     "size_scaled", shape=[batch, count, 2])
    half = op("Mul", [op("Exp", [size_scaled], "size_exp", shape=[batch, count, 2]),
                      const("anchor_half_sizes", (anchors[None, :, 2:4] * 0.5).astype(np.float32))],
              "half_sizes", shape=[batch, count, 2])
    low = op("Sub", [center, half], "corner_low", shape=[batch, count, 2])
    high = op("Add", [center, half], "corner_high", shape=[batch, count, 2])
    corners = op("Concat", [low, high], "corners", shape=[batch, count, 4], axis=2)
    return op("Reshape", [corners, const("corners_shape", np.array([0, -1, 1, 4], np.int64))], "boxes",
              shape=[batch, count, 1, 4])


def pre_nms_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph up to the NMS plugin's inputs (plugin removed), runnable by ONNX Runtime on any machine."""
    gs = _gs()
    graph = gs.import_onnx(model)
    plugins = [n for n in graph.nodes if n.domain == PLUGIN_DOMAIN]
    if len(plugins) != 1:
        raise BuildError(f"expected one TensorRT plugin node (domain {PLUGIN_DOMAIN}); found {len(plugins)}")
    graph.outputs = [t for t in plugins[0].inputs if not isinstance(t, gs.Constant)]
    graph.nodes.remove(plugins[0])
    graph.cleanup().toposort()
    result = gs.export_onnx(graph)
    result.ir_version = model.ir_version
    return result


def plugin_node(model: onnx.ModelProto) -> onnx.NodeProto:
    """The plugin node of a model made by ``insert_nms``."""
    nodes = [n for n in model.graph.node if n.domain == PLUGIN_DOMAIN]
    if len(nodes) != 1:
        raise BuildError(f"expected one TensorRT plugin node (domain {PLUGIN_DOMAIN}); found {len(nodes)}")
    return nodes[0]


def default_output_path(onnx_path: PathLike, kind: str) -> Path:
    path = Path(onnx_path)
    return path.with_name(f"{path.stem}_{FORMAT_OF[kind]}.onnx")


def add_nms_to_file(
    onnx_path: PathLike,
    output_path: Optional[PathLike] = None,
    kind: str = "efficient",
    spec_path: Optional[PathLike] = None,
    force: bool = False,
    score_threshold: Optional[float] = None,
    iou_threshold: Optional[float] = None,
    max_detections: Optional[int] = None,
    top_k: Optional[int] = None,
    plugin_op: Optional[str] = None,
    opset: Optional[int] = None,
) -> Tuple[Path, Path]:
    """``convert --nms``: read the model and its ssd_raw/YOLO spec, write ``<out>.onnx`` and ``<out>.yaml``.

    Thresholds and counts default to the spec's ``detection`` section (see ``NmsSettings``). ``opset``: the
    ai.onnx opset to write (the model is converted first); None keeps the model's own.
    """
    onnx_path = Path(onnx_path)
    output = Path(output_path) if output_path is not None else default_output_path(onnx_path, kind)
    if output.resolve() == onnx_path.resolve():
        raise ConfigError(f"--nms would overwrite its input {onnx_path}; fix: pass -o another.onnx")
    spec_out = output.with_suffix(".yaml")
    from trt_perception.tools.output_paths import check_output_file

    for target in (output, spec_out):
        check_output_file(target, "-o")
        if target.exists() and not force:
            raise BuildError(f"{target} exists; refusing to overwrite it; fix: pass --force or -o another path")
    model = load_onnx(onnx_path)
    spec = load_spec(onnx_path, spec_path)
    settings = NmsSettings.from_spec(spec, score_threshold, iou_threshold, max_detections, top_k)
    new_model, data = insert_nms(model, spec, kind, settings, plugin_op, opset)
    if spec.source is not None and spec.source.parent.resolve() != output.parent.resolve():
        from trt_perception.tools.build import rebase_spec_paths

        data = rebase_spec_paths(data, spec.source.parent, output.parent)
    data["source"]["model"] = str(onnx_path.name if onnx_path.parent == output.parent else onnx_path.resolve())
    parse_spec(copy.deepcopy(data), source=spec_out)  # validate before writing anything
    try:
        onnx.checker.check_model(new_model)
    except onnx.checker.ValidationError as exc:
        raise BuildError(f"the model with the {kind} NMS plugin does not pass onnx.checker: {exc}") from exc
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.partial")
    onnx.save(new_model, str(tmp))
    tmp.replace(output)
    save_spec(data, spec_out, overwrite=True)
    return output, spec_out
