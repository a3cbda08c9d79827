"""`trt-perception inspect`: what a model file is, what its spec says, and what the pipeline will do.

After the spec check it runs one synthetic frame (seeded noise, scaled as the spec says) through the model and
checks the output VALUES against what the spec's format expects (``check_output_ranges``): a format can match
every name and shape and still be the wrong one (decoded boxes read as SSD offsets, logits read as
probabilities). Each suspicion is one WARNING line naming the tensor, the observed range and the likely fix.
`inspect MODEL --write-spec` is `trt-perception spec MODEL` (``--spec`` names the file to write).
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from trt_perception.backends.base import open_backend
from trt_perception.errors import TrtPerceptionError
from trt_perception.outputs.base import ClassificationSettings, DetectionSettings
from trt_perception.pipeline import ModelPipeline
from trt_perception.spec import OUTPUT_FORMATS, ModelSpec, load_spec
from trt_perception.tools.infer import add_model_arguments, backend_options
from trt_perception.tools.spec_writer import CLASSIFICATION_ACTIVATION, YOLOX_DECODE


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--write-spec", action="store_true",
                        help="write a spec for the ONNX model instead (= `trt-perception spec MODEL`; --spec is "
                             "the file to write; never overwrites: use `spec --force`)")


def describe_input(spec: ModelSpec) -> List[str]:
    s = spec.input
    crop = f", rows cropped top {s.crop_top} / bottom {s.crop_bottom} (at model scale)" if (
        s.crop_top or s.crop_bottom) else ""
    if s.resize == "letterbox":
        resize = f"letterboxed into {s.width}x{s.height} (aspect kept, padded with {s.pad_value:g})"
    else:
        resize = f"stretched to {s.width}x{s.height} (aspect ignored)"
    scaling = ", ".join(f"x*{a:.6g}{b:+.6g}" for a, b in zip(s.scale, s.offset))
    return [
        f"  frame -> {resize}{crop}, {s.interpolation} interpolation",
        f"  color {s.color}, per channel {scaling}",
        f"  tensor {s.name!r} {s.layout} {s.dtype} shape {s.shape}",
    ]


def describe_spec(spec: ModelSpec) -> List[str]:
    lines = [f"spec: {spec.source}", f"  task: {spec.task}" + (f"  name: {spec.name}" if spec.name else "")]
    lines += describe_input(spec)
    fmt = spec.output.format
    lines.append(f"  output format {fmt}: {OUTPUT_FORMATS[fmt].description}")
    lines += [f"    {role} <- tensor {name!r}" for role, name in spec.output.tensors.items()]
    lines += [f"    {key}: {value}" for key, value in spec.output.params.items()]
    if spec.task == "detection":
        d = spec.detection
        labels = f"{len(d.labels)} labels (first id {d.first_label_id})" if d.labels else "no labels (ids printed)"
        lines.append(
            f"  detection: score >= {d.score_threshold}, IoU {d.iou_threshold}, at most {d.max_detections}, "
            f"{labels}" + (f", only {list(d.classes)}" if d.classes else "")
        )
        lines.append("  boxes are reported in source-image pixels (resize/letterbox/crop undone), clipped")
    if spec.build:
        lines.append("  build: " + ", ".join(f"{k}={v}" for k, v in spec.build.items()))
    return lines


def _write_spec(args: argparse.Namespace) -> int:
    from trt_perception.tools.spec_writer import write_spec

    write_spec(args.model, output=args.spec)
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    if getattr(args, "write_spec", False):
        return _write_spec(args)
    backend = open_backend(args.model, args.backend, **backend_options(args))
    try:
        print(f"model: {args.model}")
        for key, value in backend.describe().items():
            print(f"  {key}: {value}")
        print("inputs:")
        for tensor in backend.inputs:
            print(f"  {tensor}")
        print("outputs:")
        for tensor in backend.outputs:
            print(f"  {tensor}")
        try:
            spec = load_spec(args.model, args.spec)
        except TrtPerceptionError as exc:
            print(f"spec: not usable: {exc}")
            return 1
        print("\n".join(describe_spec(spec)))
        outputs, lines = range_check(backend, spec)
        print("\n".join(lines))
        try:
            pipeline = ModelPipeline(spec, backend)
        except TrtPerceptionError as exc:
            print(f"check: the spec does NOT match this model: {exc}")
            return 1
        if outputs is not None:  # what every frame would meet in infer, replay and the node
            try:
                pipeline.parse_outputs(outputs, parser_settings(spec))
            except TrtPerceptionError as exc:
                print(f"check: the model's outputs on a synthetic frame do NOT fit the spec: {exc}")
                return 1
        print("check: spec matches the model's inputs and outputs")
    finally:
        backend.close()
    return 0


# ------------------------------------------------------------------------------------- output value ranges


def synthetic_input(spec: ModelSpec, dtype: Any = None, seed: int = 0) -> np.ndarray:
    """One frame of seeded uniform noise (0..255 pixels) scaled as the spec says, in the spec's layout."""
    s = spec.input
    pixels = np.random.default_rng(seed).integers(0, 256, (s.height, s.width, s.channels)).astype(np.float32)
    values = pixels * np.asarray(s.scale, np.float32) + np.asarray(s.offset, np.float32)
    tensor = values[None] if s.layout == "NHWC" else values.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(tensor, dtype=np.dtype(dtype or s.dtype))


def sample_outputs(backend: Any, spec: ModelSpec) -> Dict[str, np.ndarray]:
    """The model's outputs for one synthetic frame (copies: backends may reuse their arrays)."""
    tensor = next((t for t in backend.inputs if t.name == spec.input.name), None)
    dtype = np.dtype(tensor.dtype) if tensor is not None else None
    frame = synthetic_input(spec, dtype)
    if tensor is not None and len(tensor.shape) == 3:  # implicit-batch engine
        frame = frame[0]
    return {name: np.array(value) for name, value in backend.infer({spec.input.name: frame}).items()}


def _span(values: np.ndarray) -> str:
    """``[min, max]`` of the non-NaN values (an empty or all-NaN output says so instead of failing)."""
    values = np.asarray(values).reshape(-1)
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return "[no values]" if values.size == 0 else "[all NaN]"
    return f"[{float(finite.min()):.4g}, {float(finite.max()):.4g}]"


def _within(values: np.ndarray, low: float, high: float, tol: float = 1e-3) -> bool:
    """True when every value lies in [low, high] (NaN counts as outside)."""
    return values.size > 0 and bool(np.all((values >= low - tol) & (values <= high + tol)))


def _ordered_fraction(boxes: np.ndarray) -> float:
    """Share of rows with col2 > col0 and col3 > col1 (corners in xyxy or yxyx order)."""
    if boxes.size == 0:
        return 0.0
    return float(np.mean((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])))


def _warn(spec: ModelSpec, role: str, tensor: str, what: str, fix: str) -> str:
    return (f"WARNING: tensor {tensor!r} (output format {spec.output.format}, role {role}): {what}; "
            f"likely fix: {fix}")


def _yolo_table(array: np.ndarray, fmt: str) -> np.ndarray:
    """Rows of one image: (N, 4+C) for yolo (either layout), (N, 5+C) for yolov5/yolox."""
    table = array.reshape(-1, array.shape[-2], array.shape[-1])[0] if array.ndim >= 2 else array.reshape(1, -1)
    if fmt == "yolo" and table.shape[0] < table.shape[1]:
        table = table.T
    return table


def check_output_ranges(spec: ModelSpec, outputs: Mapping[str, np.ndarray]) -> List[str]:
    """WARNING lines where output values cannot be what the spec's format expects (empty when they fit).

    Heuristics on one frame, tuned to miss rather than cry wolf: decoded boxes given to ``ssd_raw``, normalized
    boxes or logits given to ``yolo``/``yolov5``/``yolox``, logits given to ``classification`` with activation
    none (or probabilities given to softmax), ``end_to_end`` scores outside [0, 1], plugin boxes whose units
    contradict ``normalized``.
    """
    with np.errstate(all="ignore"):  # inf/NaN outputs are reported by the lines below, not as numpy warnings
        return _range_warnings(spec, outputs)


def _range_warnings(spec: ModelSpec, outputs: Mapping[str, np.ndarray]) -> List[str]:
    fmt = spec.output.format
    params = spec.output.params
    warnings: List[str] = []

    def get(role: str) -> Optional[np.ndarray]:
        name = spec.output.tensors.get(role)
        value = outputs.get(name) if name is not None else None
        if value is None:
            return None
        return np.asarray(value, np.float64)

    def name(role: str) -> str:
        return spec.output.tensors.get(role, role)

    size = max(spec.input.height, spec.input.width)
    if fmt == "ssd_raw":
        boxes = get("boxes")
        if boxes is not None and boxes.size and boxes.size % 4 == 0:
            rows = boxes.reshape(-1, 4)
            ordered = _ordered_fraction(rows)
            if ordered >= 0.9 and _within(rows, 0.0, 1.0, 0.01):
                warnings.append(_warn(
                    spec, "boxes", name("boxes"),
                    f"values {_span(rows)} with x2 > x1 and y2 > y1 in {ordered:.0%} of rows look like already-decoded "
                    "normalized corner boxes, not SSD box offsets",
                    "output.format: boxes_scores (decoded boxes + scores; no anchors), or map the head's raw "
                    "box-regression tensor instead",
                ))
            elif ordered >= 0.9 and float(np.min(rows)) >= -1.0 and 2.0 < float(np.max(rows)) <= 1.5 * size:
                warnings.append(_warn(
                    spec, "boxes", name("boxes"),
                    f"values {_span(rows)} with x2 > x1 and y2 > y1 in {ordered:.0%} of rows look like already-decoded "
                    "boxes in input pixels, not SSD box offsets",
                    "output.format: boxes_scores, or map the head's raw box-regression tensor instead",
                ))
        scores = get("scores")
        if scores is not None and params.get("score_activation") == "none" and not _within(scores, 0.0, 1.0):
            warnings.append(_warn(spec, "scores", name("scores"), f"score_activation none but values {_span(scores)}"
                                  " are not probabilities", "output.score_activation: sigmoid or softmax"))
    elif fmt in ("yolo", "yolov5", "yolox"):
        array = get("predictions")
        if array is not None and array.size and array.ndim >= 2 and min(array.shape[-2:]) >= 5:
            table = _yolo_table(array, fmt)
            boxes, classes = table[:, :4], table[:, 4:]
            normalized = bool(params.get("normalized", False))
            if fmt == "yolox" and params.get(YOLOX_DECODE, False):
                pass  # raw grid offsets / log sizes: no range to expect
            elif not normalized and _within(boxes, 0.0, 1.0, 0.01) and float(np.max(boxes)) > 0:
                warnings.append(_warn(
                    spec, "predictions", name("predictions"),
                    f"box values cx, cy, w, h all within {_span(boxes)}: the boxes are NORMALIZED, the spec reads "
                    "them as input pixels (every box would be under 1 pixel)",
                    "output.normalized: true (Ultralytics' TF/TFLite exports normalize; its ONNX export does not)",
                ))
            elif normalized and float(np.max(boxes)) > 1.5:
                warnings.append(_warn(
                    spec, "predictions", name("predictions"),
                    f"normalized: true but the box values span {_span(boxes)}: input pixels",
                    "output.normalized: false",
                ))
            kind = "objectness + class columns" if fmt != "yolo" else "class columns"
            if classes.size and not _within(classes, 0.0, 1.0):
                warnings.append(_warn(
                    spec, "predictions", name("predictions"),
                    f"{kind} {_span(classes)} fall outside [0, 1]: these are logits, the format expects sigmoid "
                    "scores",
                    "export with the head's sigmoid in the graph (Ultralytics/YOLOv5 exports include it), or the "
                    "table's layout is not this format's (check --format)",
                ))
    elif fmt == "classification":
        scores = get("scores")
        activation = str(params.get(CLASSIFICATION_ACTIVATION, "softmax")).lower()  # the parser's default
        if scores is not None and scores.size:
            row = scores.reshape(scores.shape[0], -1)[0] if scores.ndim >= 2 else scores.reshape(-1)
            total = float(np.sum(row))
            probabilities = _within(row, 0.0, 1.0) and abs(total - 1.0) <= 0.01
            if activation == "none" and not probabilities:
                warnings.append(_warn(
                    spec, "scores", name("scores"),
                    f"activation none but the row sums to {total:.4g} with values {_span(row)}: not probabilities "
                    "(logits?)",
                    "output.activation: softmax",
                ))
            elif activation == "softmax" and probabilities and row.size > 1:
                warnings.append(_warn(
                    spec, "scores", name("scores"),
                    f"the row already sums to {total:.4g} with values {_span(row)}: the model ends in a softmax, "
                    "a second one flattens the scores",
                    "output.activation: none",
                ))
    elif fmt == "end_to_end":
        dets = get("detections")
        if dets is not None and dets.size and dets.ndim >= 2 and dets.shape[-1] in (6, 7):
            rows = dets.reshape(-1, dets.shape[-1])
            score, cls = (4, 5) if rows.shape[1] == 6 else (6, 5)
            order = ("x1, y1, x2, y2, score, class" if rows.shape[1] == 6 else
                     "batch, x1, y1, x2, y2, class, score")
            if not _within(rows[:, score], 0.0, 1.0):
                warnings.append(_warn(
                    spec, "detections", name("detections"),
                    f"column {score} (score) spans {_span(rows[:, score])}, outside [0, 1]",
                    f"check the column order ({order} expected) or the exporter's score activation",
                ))
            elif not np.allclose(rows[:, cls], np.round(rows[:, cls])):
                warnings.append(_warn(
                    spec, "detections", name("detections"),
                    f"column {cls} (class) holds non-integer values {_span(rows[:, cls])}",
                    f"check the column order ({order} expected)",
                ))
    elif fmt in ("efficient_nms", "batched_nms"):
        count, boxes, scores = get("num_detections"), get("boxes"), get("scores")
        first = count.reshape(-1)[0] if count is not None and count.size else math.nan
        if np.isfinite(first) and boxes is not None and boxes.size % 4 == 0:  # a NaN count: the parser refuses it
            n = int(min(first, boxes.size // 4))
            kept = boxes.reshape(-1, 4)[: max(n, 0)]
            normalized = params.get("normalized", True)
            if kept.size and normalized and float(np.max(kept)) > 1.5:
                warnings.append(_warn(spec, "boxes", name("boxes"), f"normalized: true but the kept boxes span "
                                      f"{_span(kept)} (input pixels)", "output.normalized: false"))
            elif kept.size and not normalized and _within(kept, 0.0, 1.0, 0.01):
                warnings.append(_warn(spec, "boxes", name("boxes"), f"normalized: false but the kept boxes span "
                                      f"{_span(kept)} (normalized)", "output.normalized: true"))
            kept_scores = scores.reshape(-1)[: max(n, 0)] if scores is not None else np.zeros(0)
            if kept_scores.size and float(np.nanmin(kept_scores)) < 0:
                warnings.append(_warn(
                    spec, "scores", name("scores"), f"negative scores {_span(kept_scores)}",
                    "on TensorRT 8.2 (Jetson Nano) EfficientNMS returns bad scores: use --nms batched",
                ))
    elif fmt == "boxes_scores":
        scores, boxes = get("scores"), get("boxes")
        if scores is not None and scores.size and not _within(scores, 0.0, 1.0):
            warnings.append(_warn(spec, "scores", name("scores"), f"values {_span(scores)} fall outside [0, 1]: "
                                  "logits, not scores", "put the sigmoid/softmax in the graph"))
        normalized = bool(params.get("normalized", True))
        corners = str(params.get("box_format", "xyxy")).lower() in ("xyxy", "yxyx")
        rows = boxes.reshape(-1, 4) if boxes is not None and boxes.size and boxes.size % 4 == 0 else None
        if rows is not None and corners and _ordered_fraction(rows) < 0.5 and float(np.mean(rows < 0)) > 0.2:
            warnings.append(_warn(
                spec, "boxes", name("boxes"),
                f"values {_span(rows)}, {float(np.mean(rows < 0)):.0%} negative, with x2 > x1 and y2 > y1 in only "
                f"{_ordered_fraction(rows):.0%} of rows: these look like SSD box offsets, not decoded corner boxes",
                "output.format: ssd_raw with the model's anchors (or box_format: cxcywh if they are centre/size)",
            ))
        elif boxes is not None and boxes.size:
            if normalized and float(np.nanmax(np.abs(boxes))) > 1.5:
                warnings.append(_warn(spec, "boxes", name("boxes"), f"normalized: true but the boxes span "
                                      f"{_span(boxes)} (input pixels)", "output.normalized: false"))
            elif not normalized and _within(boxes, 0.0, 1.0, 0.01):
                warnings.append(_warn(spec, "boxes", name("boxes"), f"normalized: false but the boxes span "
                                      f"{_span(boxes)} (normalized)", "output.normalized: true"))
    return warnings


def range_check(backend: Any, spec: ModelSpec) -> Tuple[Optional[Dict[str, np.ndarray]], List[str]]:
    """One synthetic frame's outputs (None: the model did not run) and what the value check says of them."""
    try:
        outputs = sample_outputs(backend, spec)
    except Exception as exc:  # any backend failure: the check is skipped, and says so
        return None, [f"range check: skipped, the model did not run on a synthetic frame: {exc}"]
    warnings = check_output_ranges(spec, outputs)
    if warnings:
        return outputs, warnings
    return outputs, [f"range check: output values on a synthetic frame fit format {spec.output.format}"]


def parser_settings(spec: ModelSpec) -> Any:
    """The parser's settings at the spec's values (thresholds, top-k), as a head starts with them."""
    if spec.task == "detection":
        return DetectionSettings.from_spec(spec.detection)
    if spec.task == "classification":
        return ClassificationSettings.from_spec(spec.classification)
    return None
