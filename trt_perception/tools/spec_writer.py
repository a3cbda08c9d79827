"""`trt-perception spec MODEL.onnx`: write a model spec from what an ONNX file says, and say what was guessed.

What the file tells: the image input (name, layout, size, dtype), the output tensors (names, shapes, symbolic
dims) and, for Ultralytics exports, ``metadata_props`` (``names``, ``imgsz``, ``stride``, ``task``, ``batch``,
``args`` with ``nms``; ultralytics/engine/exporter.py). From these the output format is recognised:

- Ultralytics detect: ``output0`` [1, 4+nc, N] -> ``yolo``; ``nms=True`` / NMS-free heads [1, K, 6] ->
  ``end_to_end``; classify [1, nc] -> ``classification`` with activation none (the Classify head returns
  ``x.softmax(1)`` in export mode, ultralytics/nn/modules/head.py); segment/pose/obb are refused;
- without metadata, from shapes: [1, 4+C, N] -> ``yolo``; [1, N, 5+C] -> ``yolov5`` (or ``yolox``, by
  ``--format``); [1, K, 6] -> ``end_to_end``; [1, N, 4] + [1, N, C] -> ``boxes_scores`` or ``ssd_raw`` (only by
  name hints, else the user picks); [1, C] -> ``classification``; [1, C, H, W] at a divisor of the input size
  -> ``segmentation``; plugin output names -> ``nms_trt`` / ``efficient_nms`` / ``batched_nms``; DonkeyCar
  ``n_outputs0``/``n_outputs1`` -> ``steering_linear`` / ``steering_categorical``.

What the file cannot tell (colour order, mean/std, resize mode of a model without metadata) comes from flags or
is written as a default with a ``# CHECK:`` comment. Every decision is printed with its evidence. The YAML text
is written here (so the comments survive) and validated with ``spec.parse_spec`` before it is written.
``onnx`` is imported inside the functions that read the model (it costs ~0.9 s).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple, Union

import yaml

from trt_perception.errors import ConfigError, SpecError
from trt_perception.onnx_file import check_model_path, load_onnx
from trt_perception.spec import COLORS, OUTPUT_FORMATS, RESIZE_MODES, parse_spec, spec_candidates

Dim = Union[int, str, None]  # a fixed size, a symbolic name, or unknown
Item = Tuple[str, Any, str]  # key, value, comment

CHECK = "CHECK:"
UNIT_SCALE = 1.0 / 255.0
ULTRALYTICS_PAD = 114
ULTRALYTICS_STRIDES = (8, 16, 32)
FLOAT_DTYPES = ("float32", "float16")
INPUT_DTYPES = ("float32", "float16", "uint8")
TASK_NAMES = tuple(sorted({f.task for f in OUTPUT_FORMATS.values()}))
# Parameter names of the new parsers (trt_perception/outputs/*.py); kept here so one edit follows a rename.
CLASSIFICATION_ACTIVATION = "activation"
YOLOX_DECODE = "decode"
# Name hints for the [1,N,4] + [1,N,C] pair, which shapes alone cannot split into decoded boxes or SSD offsets.
RAW_BOX_HINTS = ("loc", "offset", "delta", "regress", "encoding", "raw", "anchor")
DECODED_BOX_HINTS = ("decoded", "xyxy", "corner", "bbox")
ANGLE_HINTS = ("n_outputs0", "angle", "steer")
THROTTLE_HINTS = ("n_outputs1", "throttle")


# ------------------------------------------------------------------------------------------- the ONNX file


@dataclass(frozen=True)
class Tensor:
    """A graph input or output as the file declares it (symbolic dims kept by name)."""

    name: str
    shape: Tuple[Dim, ...]
    dtype: str

    @property
    def dims(self) -> Tuple[Optional[int], ...]:
        return tuple(d if isinstance(d, int) else None for d in self.shape)

    @property
    def rank(self) -> int:
        return len(self.shape)

    def shape_text(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def __str__(self) -> str:
        return f"{self.name} {self.shape_text()}"


@dataclass
class OnnxModel:
    path: Path
    inputs: List[Tensor]
    outputs: List[Tensor]
    metadata: Dict[str, str]


def _dtype_name(elem_type: int) -> str:
    from onnx import TensorProto

    name = TensorProto.DataType.Name(elem_type).lower()
    return {"float": "float32", "double": "float64"}.get(name, name)


def _tensor(value_info: Any) -> Tensor:
    tensor_type = value_info.type.tensor_type
    shape: List[Dim] = []
    if tensor_type.HasField("shape"):
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            else:
                shape.append(dim.dim_param or None)
    return Tensor(value_info.name, tuple(shape), _dtype_name(tensor_type.elem_type))


def read_onnx(path: Union[str, Path]) -> OnnxModel:
    """The graph inputs (initializers removed), outputs and metadata of an ONNX file; weights are not loaded."""
    import onnx

    path = Path(path)
    check_model_path(path, "model", SpecError)
    if path.suffix.lower() != ".onnx":
        raise SpecError(
            f"model {path} is not an .onnx file; `spec` reads ONNX graphs (an engine's spec comes from its ONNX: "
            "run `trt-perception spec model.onnx`, then `trt-perception build`)"
        )
    model = load_onnx(path, "model", SpecError, weights=False)
    graph = model.graph
    if any(not o.type.tensor_type.HasField("shape") for o in graph.output):
        # some exporters leave output shapes out; inference needs no weights (on failure they stay unknown)
        with contextlib.suppress(Exception):
            graph = onnx.shape_inference.infer_shapes(model).graph
    initializers = {i.name for i in graph.initializer}
    return OnnxModel(
        path=path,
        inputs=[_tensor(i) for i in graph.input if i.name not in initializers],
        outputs=[_tensor(o) for o in graph.output],
        metadata={p.key: p.value for p in model.metadata_props},
    )


# -------------------------------------------------------------------------------------- Ultralytics metadata


@dataclass
class Ultralytics:
    """What an Ultralytics export's ``metadata_props`` say (ultralytics/engine/exporter.py ``self.metadata``)."""

    source: str  # how it was recognised, for the report
    task: str = ""
    names: Optional[List[str]] = None
    imgsz: Optional[Tuple[int, int]] = None
    stride: Optional[int] = None
    nms: bool = False
    end2end: bool = False
    notes: List[str] = field(default_factory=list)


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _names_list(value: Any) -> Optional[List[str]]:
    if isinstance(value, dict) and value and all(isinstance(k, int) and k >= 0 for k in value):
        return [str(value.get(i, i)) for i in range(max(value) + 1)]
    if isinstance(value, (list, tuple)) and value:
        return [str(v) for v in value]
    return None


def ultralytics_metadata(metadata: Mapping[str, str]) -> Optional[Ultralytics]:
    """The Ultralytics facts of a model's metadata, or None when the model is not an Ultralytics export."""
    author = metadata.get("author", "")
    description = metadata.get("description", "")
    if "ultralytics" in author.lower():
        source = f"metadata author {author}"
    elif description.lower().startswith("ultralytics"):
        source = f"metadata description {description!r}"
    elif {"names", "stride", "task"} <= set(metadata):
        source = "metadata keys names/stride/task as Ultralytics writes them"
    else:
        return None
    info = Ultralytics(source=source, task=metadata.get("task", "").strip().lower())
    if "names" in metadata:
        info.names = _names_list(_literal(metadata["names"]))
        if info.names is None:
            info.notes.append(f"WARNING: metadata 'names' is not a dict/list literal ({metadata['names'][:60]!r}); "
                              "no labels taken from it")
    imgsz = _literal(metadata.get("imgsz", ""))
    if isinstance(imgsz, int):
        info.imgsz = (imgsz, imgsz)
    elif isinstance(imgsz, (list, tuple)) and len(imgsz) == 2 and all(isinstance(v, int) for v in imgsz):
        info.imgsz = (int(imgsz[0]), int(imgsz[1]))
    stride = _literal(metadata.get("stride", ""))
    info.stride = stride if isinstance(stride, int) else None
    args = _literal(metadata.get("args", ""))
    info.nms = bool(isinstance(args, dict) and args.get("nms"))
    info.end2end = str(metadata.get("end2end", "")).strip().lower() == "true"
    return info


# --------------------------------------------------------------------------------------------- recognition


@dataclass
class Match:
    """A recognised output format: role -> tensor, parameters, and the evidence printed for it."""

    format: str
    tensors: Dict[str, str]
    reason: str
    params: List[Item] = field(default_factory=list)
    num_classes: Optional[int] = None
    notes: List[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return OUTPUT_FORMATS[self.format].task


@dataclass(frozen=True)
class ImageInput:
    tensor: Tensor
    layout: str
    channels: int
    height: int
    width: int
    dtype: str


def _anchor_count(height: int, width: int, strides: Sequence[int] = ULTRALYTICS_STRIDES) -> Optional[int]:
    if any(height % s or width % s for s in strides):
        return None
    return sum((height // s) * (width // s) for s in strides)


def _grid_note(n: Optional[int], image: ImageInput, per_cell: int = 1) -> str:
    expected = _anchor_count(image.height, image.width)
    if n is not None and expected is not None and n == per_cell * expected:
        cells = f"{per_cell} x " if per_cell > 1 else ""
        return f"; N={n} = {cells}grid cells of strides 8/16/32 at {image.width}x{image.height}"
    return ""


def _outputs_text(outputs: Sequence[Tensor]) -> str:
    return ", ".join(str(t) for t in outputs) or "(none)"


def _no_fit(fmt: str, outputs: Sequence[Tensor], expected: str) -> SpecError:
    return SpecError(
        f"--format {fmt} expects {expected}, but the model's outputs are {_outputs_text(outputs)}; "
        "fix: pick the format that fits (see README 'Output formats')"
    )


def _single_3d(fmt: str, outputs: Sequence[Tensor], expected: str) -> Tensor:
    if len(outputs) != 1 or outputs[0].rank != 3:
        raise _no_fit(fmt, outputs, expected)
    return outputs[0]


def _match_yolo(outputs: Sequence[Tensor], image: ImageInput, why: str) -> Match:
    expected = "one output [1, 4+C, N] (or [1, N, 4+C])"
    out = _single_3d("yolo", outputs, expected)
    a, b = out.dims[1], out.dims[2]
    if a is not None and (b is None or a < b):
        rows, n, layout = a, b, f"{a - 4} classes in rows 4..{a - 1}"
    elif b is not None:
        rows, n, layout = b, a, f"{b - 4} classes in columns 4..{b - 1} ([1, N, 4+C] layout)"
    else:
        raise _no_fit("yolo", outputs, expected + " with a known 4+C")
    if rows < 5:
        raise _no_fit("yolo", outputs, expected + " with at least one class")
    reason = f"{out} = 4 box rows (cx, cy, w, h in input pixels) + {layout}{_grid_note(n, image)} ({why})"
    return Match("yolo", {"predictions": out.name}, reason, num_classes=rows - 4)


def _match_yolov5(fmt: str, outputs: Sequence[Tensor], image: ImageInput, why: str) -> Match:
    out = _single_3d(fmt, outputs, "one output [1, N, 5+C]")
    n, cols = out.dims[1], out.dims[2]
    if cols is None or cols < 6:
        raise _no_fit(fmt, outputs, "one output [1, N, 5+C] with C >= 1")
    reason = (
        f"{out} = rows of cx, cy, w, h, objectness + {cols - 5} classes"
        f"{_grid_note(n, image, 3 if fmt == 'yolov5' else 1)} ({why})"
    )
    match = Match(fmt, {"predictions": out.name}, reason, num_classes=cols - 5)
    if fmt == "yolox":
        match.params.append((
            YOLOX_DECODE, True,
            f"{CHECK} true = xy grid offsets / log wh decoded here (Megvii export_onnx.py without "
            "--decode_in_inference, its default); false when the export decoded them in the graph",
        ))
    return match


def _match_end_to_end(outputs: Sequence[Tensor], why: str) -> Match:
    expected = "one output [1, K, 6] (x1, y1, x2, y2, score, class) or [K, 7] (YOLOv7 --end2end)"
    if len(outputs) != 1 or outputs[0].rank not in (2, 3) or outputs[0].dims[-1] not in (6, 7):
        raise _no_fit("end_to_end", outputs, expected)
    out = outputs[0]
    k = "K" if out.dims[-2] is None else str(out.dims[-2])
    if out.dims[-1] == 7:
        reason = f"{out} = up to {k} rows batch, x1, y1, x2, y2, class, score (YOLOv7 --end2end, ONNX Runtime; {why})"
    else:
        reason = f"{out} = up to {k} detections x1, y1, x2, y2, score, class in input pixels, NMS in the graph ({why})"
    return Match("end_to_end", {"detections": out.name}, reason)


def _box_score_pair(outputs: Sequence[Tensor]) -> Optional[Tuple[Tensor, Tensor]]:
    """(boxes [1,N,4] or [1,N,1,4], scores [1,N,C]) when two outputs fit; a name with 'box'/'loc' breaks a tie."""
    if len(outputs) != 2:
        return None
    fits = []
    for boxes, scores in (tuple(outputs), tuple(reversed(outputs))):
        box_ok = (boxes.rank == 3 and boxes.dims[2] == 4) or (
            boxes.rank == 4 and boxes.dims[2] == 1 and boxes.dims[3] == 4)
        scores_ok = scores.rank == 3 and scores.dims[2] is not None and scores.dims[2] >= 1
        same_n = boxes.dims[1] is None or scores.dims[1] is None or boxes.dims[1] == scores.dims[1]
        if box_ok and scores_ok and same_n:
            fits.append((boxes, scores))
    if len(fits) == 2 and _hinted(fits[1][0].name, ("box", "loc")) and not _hinted(fits[0][0].name, ("box", "loc")):
        return fits[1]
    return fits[0] if fits else None


def _match_boxes_scores(fmt: str, outputs: Sequence[Tensor], why: str) -> Match:
    pair = _box_score_pair(outputs)
    if pair is None:
        raise _no_fit(fmt, outputs, "two outputs: boxes [1, N, 4] and class scores [1, N, C]")
    boxes, scores = pair
    c = scores.dims[2]
    if fmt == "boxes_scores":
        reason = f"{boxes} decoded boxes + {scores} class scores, {c} classes ({why})"
        match = Match(fmt, {"boxes": boxes.name, "scores": scores.name}, reason, num_classes=c)
        match.params += [
            ("box_format", "xyxy", f"{CHECK} xyxy | cxcywh | yxyx: the file does not say"),
            ("normalized", True, f"{CHECK} true = 0..1 of the input size, false = input pixels (inspect warns)"),
        ]
        match.notes.append("boxes_scores: box format and units are not in the file; defaults written, marked CHECK")
        return match
    reason = f"{boxes} box offsets + {scores} class scores, {c} classes, decoded with anchors ({why})"
    match = Match(fmt, {"scores": scores.name, "boxes": boxes.name}, reason, num_classes=c)
    match.params += [
        ("anchors", {"file": "anchors.npy"},
         f"{CHECK} NOT in the model: the (A,4) normalized cx,cy,w,h anchors file, or {{grid: {{...}}}}"),
        ("variances", [0.1, 0.1, 0.2, 0.2], f"{CHECK} the head's box-coder scale factors (TF 10,10,5,5)"),
        ("box_order", "yx" if boxes.rank == 4 else "xy", f"{CHECK} TF OD API heads are yx"),
        ("score_activation", "sigmoid", f"{CHECK} sigmoid | softmax | none: how the head was trained"),
        ("background_class", 0, f"{CHECK} index of the background column, or null"),
    ]
    return match


def _match_classification(outputs: Sequence[Tensor], why: str, activation: Optional[Item] = None) -> Match:
    if len(outputs) != 1 or outputs[0].rank < 2 or any(d != 1 for d in outputs[0].dims[2:]):
        raise _no_fit("classification", outputs, "one output [1, C]")
    out = outputs[0]
    c = out.dims[1]
    reason = f"{out} = scores of {'C' if c is None else c} classes ({why})"
    if activation is None:
        activation = (
            CLASSIFICATION_ACTIVATION, "softmax",
            f"{CHECK} logits assumed; set none if the model already ends in a softmax (inspect warns)",
        )
    return Match("classification", {"scores": out.name}, reason, params=[activation], num_classes=c)


def _divides(size: int, dim: Optional[int]) -> bool:
    return dim is not None and 0 < dim <= size and size % dim == 0


def _match_segmentation(outputs: Sequence[Tensor], image: ImageInput, why: str) -> Match:
    expected = "one output [1, C, H, W], [1, H, W, C] or [1, H, W] at the input size or a divisor of it"
    if len(outputs) != 1:
        raise _no_fit("segmentation", outputs, expected)
    out = outputs[0]
    d = out.dims
    if out.rank == 4 and _divides(image.height, d[2]) and _divides(image.width, d[3]) and (d[1] or 0) >= 2:
        reason = f"{out} = scores of {d[1]} classes per pixel at {d[3]}x{d[2]} ({why})"
        return Match("segmentation", {"mask": out.name}, reason, num_classes=d[1])
    if out.rank == 4 and _divides(image.height, d[1]) and _divides(image.width, d[2]) and (d[3] or 0) >= 2:
        reason = f"{out} = scores of {d[3]} classes per pixel at {d[2]}x{d[1]}, channels last ({why})"
        return Match("segmentation", {"mask": out.name}, reason, num_classes=d[3])
    if out.rank == 3 and _divides(image.height, d[1]) and _divides(image.width, d[2]):
        reason = f"{out} {out.dtype} = a class id per pixel at {d[2]}x{d[1]} ({why})"
        return Match("segmentation", {"mask": out.name}, reason)
    raise _no_fit("segmentation", outputs, expected)


PLUGIN_NAMES = {
    "efficient_nms": ("num_detections", "detection_boxes", "detection_scores", "detection_classes"),
    "batched_nms": ("num_detections", "nmsed_boxes", "nmsed_scores", "nmsed_classes"),
    "nms_trt": ("NMS", "NMS_1"),
}


def _match_plugin(fmt: str, outputs: Sequence[Tensor], why: str) -> Match:
    names = {t.name for t in outputs}
    wanted = PLUGIN_NAMES[fmt]
    if not set(wanted) <= names:
        raise _no_fit(fmt, outputs, f"outputs named {list(wanted)}")
    tensors = dict(OUTPUT_FORMATS[fmt].default_tensors)
    reason = f"outputs {', '.join(wanted)} = the {fmt} plugin's outputs, mapped by name ({why})"
    match = Match(fmt, tensors, reason)
    if fmt != "nms_trt":
        match.params += [
            ("normalized", True, f"{CHECK} true for `convert --nms` SSDs; false when boxes are input pixels "
                                 "(YOLO + NMS plugin exports; inspect warns)"),
            ("box_order", "xyxy", f"{CHECK} xyxy | yxyx (TF OD API models are yxyx)"),
        ]
    return match


def _hinted(name: str, hints: Sequence[str]) -> bool:
    low = name.lower()
    return any(h in low for h in hints)


def _match_steering(fmt: str, outputs: Sequence[Tensor], image: ImageInput, why: str) -> Match:
    if len(outputs) != 2 or any(t.rank != 2 for t in outputs):
        raise _no_fit(fmt, outputs, "two outputs [1, 1] (linear) or [1, bins] (categorical): angle and throttle")
    first, second = outputs
    notes: List[str] = []
    if _hinted(first.name, ANGLE_HINTS) or _hinted(second.name, THROTTLE_HINTS):
        angle, throttle, how = first, second, "by name"
    elif _hinted(second.name, ANGLE_HINTS) or _hinted(first.name, THROTTLE_HINTS):
        angle, throttle, how = second, first, "by name"
    elif fmt == "steering_categorical" and {first.dims[1], second.dims[1]} == {15, 20}:
        angle, throttle = (first, second) if first.dims[1] == 15 else (second, first)
        how = "by bin count (DonkeyCar: 15 angle bins, 20 throttle bins)"
    else:
        angle, throttle, how = first, second, "by output ORDER (names say nothing)"
        notes.append(f"WARNING: angle <- {first.name}, throttle <- {second.name} by output order; check it "
                     "(TFLite renames DonkeyCar heads Identity/Identity_1)")
    tensors = {"angle": angle.name, "throttle": throttle.name}
    reason = f"angle {angle}, throttle {throttle} (mapped {how}; {why})"
    match = Match(fmt, tensors, reason, notes=notes)
    if fmt == "steering_categorical":
        match.params += [
            ("angle_bins", angle.dims[1] or 15, "from the output shape"),
            ("angle_range", [-1, 1], "DonkeyCar linear_bin range"),
            ("throttle_bins", throttle.dims[1] or 20, "from the output shape"),
            ("throttle_range", [0, 1],
             f"{CHECK} DonkeyCar templates train [0, 0.8] (MODEL_CATEGORICAL_MAX_THROTTLE_RANGE / -R:0.8)"),
        ]
    return match


def match_format(fmt: str, outputs: Sequence[Tensor], image: ImageInput, why: str = "--format") -> Match:
    """Map the outputs onto format ``fmt``; a SpecError says what the format expects and what the model has."""
    if fmt == "yolo":
        return _match_yolo(outputs, image, why)
    if fmt in ("yolov5", "yolox"):
        return _match_yolov5(fmt, outputs, image, why)
    if fmt == "end_to_end":
        return _match_end_to_end(outputs, why)
    if fmt in ("boxes_scores", "ssd_raw"):
        return _match_boxes_scores(fmt, outputs, why)
    if fmt == "classification":
        return _match_classification(outputs, why)
    if fmt == "segmentation":
        return _match_segmentation(outputs, image, why)
    if fmt in PLUGIN_NAMES:
        return _match_plugin(fmt, outputs, why)
    if fmt in ("steering_linear", "steering_categorical"):
        return _match_steering(fmt, outputs, image, why)
    raise SpecError(f"--format {fmt!r} is unknown; expected one of {sorted(OUTPUT_FORMATS)}")


def _unsupported(outputs: Sequence[Tensor], what: str) -> SpecError:
    supported = ("yolo [1,4+C,N], yolov5/yolox [1,N,5+C], end_to_end [1,K,6], boxes_scores/ssd_raw [1,N,4]+[1,N,C], "
                 "classification [1,C], segmentation [1,C,H,W], efficient_nms/batched_nms/nms_trt plugin outputs, "
                 "DonkeyCar steering_linear/steering_categorical")
    return SpecError(f"{what}; the model's outputs are {_outputs_text(outputs)}; supported: {supported}; fix: pass "
                     "--format NAME if one of them fits, or write the spec by hand (README 'Model specs')")


def _is_yolo_seg(outputs: Sequence[Tensor]) -> bool:
    protos = [t for t in outputs if t.rank == 4 and t.dims[1] == 32]
    return len(outputs) == 2 and len(protos) == 1


SEG_REFUSAL = (
    "instance segmentation (YOLOv8-seg: output0 [1, 4+nc+32, N] mask coefficients + output1 [1, 32, H/4, W/4] "
    "protos) is not supported yet"
)


def recognise_by_shape(outputs: Sequence[Tensor], image: ImageInput) -> Match:
    """The format of a model without metadata, from output names and shapes; ambiguous layouts ask for --format."""
    names = {t.name for t in outputs}
    for fmt, wanted in PLUGIN_NAMES.items():
        if set(wanted) <= names:
            return _match_plugin(fmt, outputs, "plugin output names")
    if len(outputs) == 2 and all(t.rank == 2 for t in outputs):
        donkey = any(_hinted(t.name, ANGLE_HINTS + THROTTLE_HINTS) for t in outputs) or image.tensor.name == "img_in"
        if donkey:
            fmt = "steering_linear" if all(t.dims[1] == 1 for t in outputs) else "steering_categorical"
            why = "DonkeyCar pilot: output names n_outputs0/n_outputs1" if any(
                _hinted(t.name, ("n_outputs",)) for t in outputs) else f"steering outputs, input {image.tensor.name}"
            return _match_steering(fmt, outputs, image, why)
    if _is_yolo_seg(outputs):
        raise _unsupported(outputs, SEG_REFUSAL)
    pair = _box_score_pair(outputs)
    if pair is not None:
        boxes, scores = pair
        if boxes.rank == 4 or _hinted(boxes.name, RAW_BOX_HINTS):
            return _match_boxes_scores("ssd_raw", outputs, f"box tensor name/shape {boxes} suggests SSD offsets")
        if _hinted(boxes.name, DECODED_BOX_HINTS):
            why = f"box tensor name {boxes.name!r} suggests decoded boxes"
            return _match_boxes_scores("boxes_scores", outputs, why)
        raise SpecError(
            f"outputs {boxes} + {scores} fit both boxes_scores (decoded boxes + class scores, NMS here) and ssd_raw "
            "(box offsets to decode with anchors): shapes cannot tell them apart; fix: pass --format boxes_scores "
            "or --format ssd_raw (then give its anchors in the spec)"
        )
    if len(outputs) != 1:
        raise _unsupported(outputs, f"no known layout for {len(outputs)} outputs")
    out = outputs[0]
    d = out.dims
    if out.rank == 3 and not out.dtype.startswith("float") and _divides(image.height, d[1]) and _divides(
            image.width, d[2]):
        return _match_segmentation(outputs, image, "integer class map at a divisor of the input size")
    if out.rank == 3:
        a, b = d[1], d[2]
        if b == 6 and (a is None or a > 6):
            return _match_end_to_end(outputs, "shape [1, K, 6]")
        if a is not None and a >= 5 and (b is None or b > a):
            return _match_yolo(outputs, image, "shape [1, 4+C, N] with N > 4+C")
        if b is not None and b >= 6 and (a is None or a > b):
            match = _match_yolov5("yolov5", outputs, image, "shape [1, N, 5+C]")
            match.notes.append(
                f"format yolov5 chosen for [1, N, 5+C]: it could also be YOLOX (--format yolox: BGR 0-255, grid "
                f"decode) or a [1, N, 4+C] YOLOv8 head without objectness (--format yolo, {b - 4} classes); "
                "shapes cannot tell them apart"
            )
            return match
    if out.rank == 2 and d[1] == 7 and d[0] != 1:
        match = _match_end_to_end(outputs, "shape [K, 7]")
        match.notes.append("format end_to_end chosen for [K, 7]; a classifier of 7 classes with a dynamic batch "
                           "looks the same: --format classification")
        return match
    if (out.rank == 2 or (out.rank == 4 and d[2] == 1 and d[3] == 1)) and (d[1] is None or d[1] >= 2):
        return _match_classification(outputs, "shape [1, C]")
    if out.rank == 4:
        try:
            return _match_segmentation(outputs, image, "shape [1, C, H, W] at a divisor of the input size")
        except SpecError:
            pass
    raise _unsupported(outputs, "the output layout is not one this tool recognises")


def recognise_ultralytics(outputs: Sequence[Tensor], image: ImageInput, ultra: Ultralytics) -> Match:
    task = ultra.task
    why = f"Ultralytics metadata task={task}"
    if task == "segment" or _is_yolo_seg(outputs):
        raise SpecError(
            f"{SEG_REFUSAL}; this model is an Ultralytics task={task} export ({_outputs_text(outputs)}); "
            "supported Ultralytics tasks: detect (-> yolo, or end_to_end with nms=True), classify "
            "(-> classification); fix: export a detect or classify model"
        )
    if task in ("pose", "obb"):
        raise SpecError(
            f"Ultralytics task={task} exports are not supported yet (keypoints / rotated boxes); supported: "
            "detect (-> yolo, end_to_end) and classify (-> classification)"
        )
    if task == "classify":
        activation = (CLASSIFICATION_ACTIVATION, "none",
                      "softmax is in the graph (Ultralytics Classify head returns x.softmax(1) when exported)")
        return _match_classification(outputs, why, activation)
    if task not in ("detect", ""):
        raise SpecError(f"Ultralytics task={task!r} is not supported; supported: detect, classify")
    out = outputs[0] if len(outputs) == 1 else None
    if out is not None and out.rank == 3 and out.dims[2] == 6 and (
            ultra.nms or ultra.end2end or out.dims[1] is None or out.dims[1] > 6):
        flag = "nms=True export" if ultra.nms else "NMS-free head (YOLOv10/YOLO26)"
        return _match_end_to_end(outputs, f"{why}, {flag}")
    match = _match_yolo(outputs, image, why)
    if ultra.names is not None and match.num_classes != len(ultra.names):
        match.notes.append(f"WARNING: metadata names has {len(ultra.names)} classes but the output has "
                           f"{match.num_classes}; check the export")
    return match


# ---------------------------------------------------------------------------------------------- the input


def pick_input(model: OnnxModel, ultra: Optional[Ultralytics], height: Optional[int], width: Optional[int]) -> Tuple[
        ImageInput, str]:
    """The image input, its layout and size, and how they were found."""
    images = [t for t in model.inputs if t.rank == 4]
    if not images:
        raise SpecError(
            f"{model.path.name} has no 4-D image input (inputs: {_outputs_text(model.inputs)}); "
            "a spec feeds one image tensor [1, C, H, W] or [1, H, W, C]"
        )
    others = [t for t in model.inputs if t is not images[0]]
    if others:
        raise SpecError(
            f"{model.path.name} has more inputs than the image {images[0]}: {_outputs_text(others)}; `spec` reads "
            "image-only models; fix: for a DonkeyCar pilot (mem_in, imu_in, xbehavior_in) run `trt-perception "
            f"convert {model.path.name} -o OUT.onnx` (it recognizes the pilot and writes the spec with its `inputs:`), "
            "otherwise write the spec's `inputs:` section by hand (README 'DonkeyCar pilots')"
        )
    tensor = images[0]
    d = tensor.dims
    if d[1] in (1, 3) and d[3] not in (1, 3):
        layout, channels, h, w = "NCHW", d[1], d[2], d[3]
    elif d[3] in (1, 3):
        layout, channels, h, w = "NHWC", d[3], d[1], d[2]
    else:
        raise SpecError(
            f"input {tensor} has no channel dimension of 1 or 3 in position 1 (NCHW) or 3 (NHWC); "
            "a spec feeds GRAY, RGB or BGR images"
        )
    how = "from the input shape"
    if h is None or w is None:
        if height and width:
            h, w, how = height, width, "from --height/--width (the input's size is dynamic)"
        elif ultra is not None and ultra.imgsz is not None:
            h, w = ultra.imgsz
            how = f"from Ultralytics metadata imgsz {list(ultra.imgsz)} (the input's size is dynamic)"
        else:
            raise SpecError(
                f"input {tensor} has a dynamic height/width and the file does not say the size; "
                "fix: pass --height H --width W (the size the model was trained at)"
            )
    elif (height and height != h) or (width and width != w):
        raise ConfigError(f"--height/--width {height}x{width} contradict the input shape {tensor.shape_text()}")
    if tensor.dtype not in INPUT_DTYPES:
        raise SpecError(f"input {tensor} is {tensor.dtype}; a spec feeds {list(INPUT_DTYPES)}")
    image = ImageInput(tensor, layout, int(channels), int(h), int(w), tensor.dtype)
    return image, f"input {tensor} {tensor.dtype}: {layout}, {w}x{h} {how}"


# ----------------------------------------------------------------------------------------------- options


@dataclass
class SpecOptions:
    """What the user told the tool (CLI flags); None = recognise or default."""

    format: Optional[str] = None
    task: Optional[str] = None
    color: Optional[str] = None
    resize: Optional[str] = None
    pad_value: Optional[float] = None
    scale: Optional[List[float]] = None
    offset: Optional[List[float]] = None
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    labels: Optional[Path] = None
    height: Optional[int] = None
    width: Optional[int] = None
    name: Optional[str] = None


@dataclass
class SpecDraft:
    """The spec to write, every value with its comment, and the report lines that explain it."""

    name: str
    task: str
    input: List[Item]
    match: Match
    section: List[Item]
    labels: Optional[List[str]]
    labels_comment: str
    report: List[str]
    source: str

    @property
    def checks(self) -> int:
        items = self.input + self.match.params + self.section
        return sum(1 for _, _, comment in items if comment.startswith(CHECK)) + (
            1 if self.labels_comment.startswith(CHECK) else 0)


def _one_or_list(values: Sequence[float]) -> Union[float, List[float]]:
    return float(values[0]) if len(values) == 1 else [float(v) for v in values]


def _scale_text(scale: Any, offset: Any) -> str:
    if scale == UNIT_SCALE and offset == 0.0:
        return "x/255"
    if scale == 1.0 and offset == 0.0:
        return "raw 0-255 pixels"
    return f"x*{scale}{offset:+}" if isinstance(scale, float) and isinstance(offset, float) else f"x*{scale}+{offset}"


def _input_items(image: ImageInput, match: Match, ultra: Optional[Ultralytics], opts: SpecOptions,
                 report: List[str]) -> List[Item]:
    fmt = match.format
    donkey = fmt.startswith("steering")
    yolox = fmt == "yolox"
    items: List[Item] = [
        ("name", image.tensor.name, ""),
        ("height", image.height, ""),
        ("width", image.width, ""),
        ("layout", image.layout, ""),
    ]
    # colour order
    if image.channels == 1:
        color, note = "GRAY", "one input channel"
    elif opts.color:
        color, note = opts.color, "from --color"
    elif ultra is not None:
        color, note = "RGB", f"Ultralytics export ({ultra.source})"
    elif donkey:
        color, note = "RGB", "DonkeyCar pilots train on RGB"
    elif yolox:
        color, note = "BGR", "YOLOX convention (Megvii demo feeds OpenCV BGR)"
    else:
        color, note = "RGB", f"{CHECK} NOT in the file; RGB written, check it (or pass --color)"
    if opts.color and (image.channels == 1) != (opts.color == "GRAY"):
        raise ConfigError(f"--color {opts.color} does not fit input {image.tensor} ({image.channels} channel(s))")
    items.append(("color", color, note))
    report.append(f"color {color}: {note.replace(CHECK + ' ', '')}")
    # resize
    letterbox_default = ultra is not None or yolox
    if opts.resize:
        resize, note = opts.resize, "from --resize"
    elif ultra is not None:
        resize, note = "letterbox", f"Ultralytics export ({ultra.source})"
        if match.task == "classification":
            note += "; Ultralytics predict centre-crops classifier inputs, letterbox is the closest the spec has"
    elif yolox:
        resize, note = "letterbox", "YOLOX convention (its demo pads top-left; the spec centres: boxes are undone)"
    elif donkey:
        resize, note = "stretch", "DonkeyCar pilots see the camera frame resized, no padding"
    elif fmt in ("yolo", "yolov5", "end_to_end"):
        resize, note = "letterbox", f"{CHECK} NOT in the file; letterbox written, as YOLO exporters train and predict"
    else:
        resize, note = "stretch", f"{CHECK} NOT in the file; stretch written (letterbox keeps the aspect)"
    items.append(("resize", resize, note))
    report.append(f"resize {resize}: {note.replace(CHECK + ' ', '')}")
    if resize == "letterbox":
        if opts.pad_value is not None:
            pad, note = opts.pad_value, "from --pad-value"
        elif letterbox_default:
            pad, note = ULTRALYTICS_PAD, "grey border (114) as Ultralytics/YOLOX letterbox"
        elif fmt in ("yolo", "yolov5", "end_to_end"):
            pad, note = ULTRALYTICS_PAD, f"{CHECK} grey border (114) as YOLO exporters pad; not in the file"
        else:
            pad, note = 0, f"{CHECK} letterbox border value not in the file"
        items.append(("pad_value", pad, note))
        report.append(f"pad_value {pad}: {note.replace(CHECK + ' ', '')}")
    items.append(("dtype", image.dtype, "from the input tensor"))
    # scaling
    if (opts.mean or opts.std) and (opts.scale or opts.offset):
        raise ConfigError("pass --mean/--std or --scale/--offset, not both (they describe the same scaling)")
    if opts.mean or opts.std:
        items.append(("mean", _one_or_list(opts.mean or [0.0]), "from --mean (0..255 units)"))
        items.append(("std", _one_or_list(opts.std or [1.0]), "from --std (0..255 units)"))
        report.append("mean/std: from --mean/--std")
        return items
    if opts.scale or opts.offset:
        scale, offset, note = _one_or_list(opts.scale or [1.0]), _one_or_list(opts.offset or [0.0]), "from flags"
    elif ultra is not None:
        scale, offset, note = UNIT_SCALE, 0.0, f"Ultralytics export ({ultra.source})"
    elif donkey:
        scale, offset, note = UNIT_SCALE, 0.0, "DonkeyCar pilot convention"
    elif yolox:
        scale, offset, note = 1.0, 0.0, "YOLOX convention"
    elif image.dtype == "uint8":
        scale, offset, note = 1.0, 0.0, "uint8 input: normalization (if any) is inside the graph"
    else:
        scale, offset = UNIT_SCALE, 0.0
        note = f"{CHECK} mean/std NOT in the file; default x/255 written (pass --scale/--offset or --mean/--std)"
    items.append(("scale", scale, note if note.startswith(CHECK) else f"{_scale_text(scale, offset)}: {note}"))
    items.append(("offset", offset, ""))
    if note.startswith(CHECK):
        report.append("mean/std: NOT in the file; default x/255 written, check it")
    else:
        report.append(f"scale {_scale_text(scale, offset)}: {note}")
    return items


def _read_labels(path: Path) -> List[str]:
    if not path.is_file():
        raise ConfigError(f"--labels {path} does not exist; fix: pass a text file with one label per line")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _section_items(match: Match, ultra: Optional[Ultralytics]) -> List[Item]:
    if match.task != "detection" or ultra is None:
        return []
    items: List[Item] = [
        ("score_threshold", 0.25, "Ultralytics predict default conf"),
        ("iou_threshold", 0.7, "Ultralytics predict default iou"),
    ]
    if match.format == "yolo":
        items.append(("max_detections", 300, "Ultralytics predict default max_det"))
    return items


def _end_to_end_items(match: Match, outputs: Sequence[Tensor]) -> List[Item]:
    k = next((t.dims[1] for t in outputs if t.name == match.tensors.get("detections")), None)
    return [("max_detections", k, "every row the graph keeps")] if match.format == "end_to_end" and k else []


def draft_spec(model: OnnxModel, opts: Optional[SpecOptions] = None) -> SpecDraft:
    """Recognise ``model`` and build the spec draft (nothing is written)."""
    opts = opts or SpecOptions()
    ultra = ultralytics_metadata(model.metadata)
    report: List[str] = []
    if ultra is not None:
        report.append(f"Ultralytics export: {ultra.source}, task={ultra.task or '?'}"
                      + (f", imgsz={list(ultra.imgsz)}" if ultra.imgsz else ""))
        report += ultra.notes
    image, input_note = pick_input(model, ultra, opts.height, opts.width)
    report.append(input_note)
    outputs = model.outputs
    if opts.format:
        match = match_format(opts.format, outputs, image, "--format")
        if opts.task and match.task != opts.task:
            raise ConfigError(f"--format {opts.format} is a {match.task} format but --task is {opts.task}")
    else:
        match = recognise_ultralytics(outputs, image, ultra) if ultra is not None else recognise_by_shape(
            outputs, image)
        if opts.task and match.task != opts.task:
            formats = sorted(k for k, v in OUTPUT_FORMATS.items() if v.task == opts.task)
            raise SpecError(
                f"the outputs look like format {match.format} ({match.task}: {match.reason}) but --task is "
                f"{opts.task}; fix: pass --format with one of {formats} if the model really is a {opts.task} model"
            )
    report.append(f"format {match.format}: {match.reason}")
    report += [f"  {role} <- {name}" for role, name in match.tensors.items()]
    report += match.notes
    items = _input_items(image, match, ultra, opts, report)
    labels: Optional[List[str]] = None
    labels_comment = ""
    if opts.labels is not None:
        labels = _read_labels(opts.labels)
        labels_comment = f"from {opts.labels}"
    elif ultra is not None and ultra.names and match.task != "steering":
        labels = list(ultra.names)
        labels_comment = "from Ultralytics metadata 'names'"
    if labels is not None and match.task == "steering":
        report.append("labels: ignored, a steering model has no classes")
        labels = None
    if labels is not None:
        shown = ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "")
        report.append(f"labels: {len(labels)} {labels_comment} ({shown})")
        if match.num_classes is not None and len(labels) != match.num_classes:
            report.append(f"WARNING: {len(labels)} labels but the output has {match.num_classes} classes; "
                          "check first_label_id / the labels file")
    elif match.task in ("detection", "classification", "segmentation"):
        report.append("labels: none in the file; class ids will be shown (pass --labels FILE)")
    return SpecDraft(
        name=opts.name or model.path.stem,
        task=match.task,
        input=items,
        match=match,
        section=_section_items(match, ultra) + _end_to_end_items(match, outputs),
        labels=labels,
        labels_comment=labels_comment,
        report=report,
        source=model.path.name,
    )


# ------------------------------------------------------------------------------------------------ rendering


def _scalar(value: Any) -> str:
    """One YAML flow value (JSON is YAML; plain words stay unquoted where YAML reads them back unchanged)."""
    if isinstance(value, str):
        if re.fullmatch(r"[A-Za-z_][\w.\-]*", value) and yaml.safe_load(value) == value:
            return value
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_scalar(str(k))}: {_scalar(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _line(indent: int, key: str, value: Any = ..., comment: str = "") -> str:
    text = " " * indent + key + ":" + ("" if value is ... else " " + _scalar(value))
    return text + (f"  # {comment}" if comment else "")


def render_spec(draft: SpecDraft) -> str:
    """The spec as YAML text with comments."""
    match = draft.match
    lines = [
        f"# Model spec written by `trt-perception spec` from {draft.source} (README 'Model specs').",
    ]
    if draft.checks:
        lines.append(f"# {draft.checks} value(s) below are marked '{CHECK}': not recognised from the file, verify.")
    lines += [
        "version: 1",
        _line(0, "name", draft.name),
        _line(0, "task", draft.task),
        "input:",
    ]
    lines += [_line(2, k, v, c) for k, v, c in draft.input]
    lines += ["output:", _line(2, "format", match.format, match.reason),
              "  tensors:"]
    lines += [_line(4, role, name) for role, name in match.tensors.items()]
    lines += [_line(2, k, v, c) for k, v, c in match.params]
    if draft.section or draft.labels is not None:
        lines.append(f"{draft.task}:")
        lines += [_line(2, k, v, c) for k, v, c in draft.section]
        if draft.labels is not None:
            lines.append(_line(2, "labels", ..., f"{len(draft.labels)}, {draft.labels_comment}"))
            lines += [f"    - {_scalar(label)}" for label in draft.labels]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- writing


def write_spec(
    model_path: Union[str, Path],
    opts: Optional[SpecOptions] = None,
    output: Optional[Union[str, Path]] = None,
    overwrite: bool = False,
    to_stdout: bool = False,
    stream: Optional[TextIO] = None,
) -> Tuple[str, Optional[Path]]:
    """Recognise ``model_path``, print what was found (to ``stream``) and write the spec.

    Returns the YAML text and the path written (None with ``to_stdout``). The text is validated with
    ``parse_spec`` first; an existing file is never replaced without ``overwrite``.
    """
    stream = stream or (sys.stderr if to_stdout else sys.stdout)
    model_path = Path(model_path)
    model = read_onnx(model_path)
    draft = draft_spec(model, opts)
    text = render_spec(draft)
    path = Path(output) if output is not None else model_path.with_suffix(".yaml")
    try:
        parse_spec(yaml.safe_load(text), source=path)
    except SpecError as exc:  # a bug here, not the user's: say so with the text
        raise SpecError(f"the generated spec does not validate ({exc}); please report it with:\n{text}") from None
    if not to_stdout:
        from trt_perception.tools.output_paths import check_output_file

        check_output_file(path, "--output")
    if not to_stdout and path.exists() and not overwrite:
        raise SpecError(f"{path} exists; refusing to overwrite it (pass --force to replace it, or --print)")
    print(f"spec for {model_path}:", file=stream)
    for line in draft.report:
        print(f"  {line}", file=stream)
    if to_stdout:
        sys.stdout.write(text)
        return text, None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    checks = f"; {draft.checks} value(s) marked {CHECK} in it: verify them" if draft.checks else ""
    print(f"wrote {path}{checks}", file=stream)
    shadow = spec_candidates(model_path)[0]
    if output is None and shadow.exists():
        print(f"note: {shadow} exists and is found before {path}; the pipeline will read that one", file=stream)
    return text, path


# ---------------------------------------------------------------------------------------------------- CLI


def _floats(values: Optional[Sequence[float]]) -> Optional[List[float]]:
    return [float(v) for v in values] if values else None


def add_spec_writer_options(parser: argparse.ArgumentParser) -> None:
    """The flags that say what the file cannot (shared with `inspect --write-spec`)."""
    parser.add_argument("--format", choices=sorted(OUTPUT_FORMATS), help="force an output format (else recognised)")
    parser.add_argument("--task", choices=TASK_NAMES, help="the model's task (refuses a format of another task)")
    parser.add_argument("--color", type=str.upper, choices=COLORS, help="colour order the model was trained on")
    parser.add_argument("--resize", type=str.lower, choices=RESIZE_MODES, help="stretch or letterbox")
    parser.add_argument("--pad-value", type=float, help="letterbox border in 0..255 units")
    parser.add_argument("--scale", type=float, nargs="+", metavar="S", help="y = x*scale + offset (1 or 3 values)")
    parser.add_argument("--offset", type=float, nargs="+", metavar="O", help="see --scale")
    parser.add_argument("--mean", type=float, nargs="+", metavar="M", help="y = (x - mean)/std, 0..255 units")
    parser.add_argument("--std", type=float, nargs="+", metavar="S", help="see --mean")
    parser.add_argument("--labels", type=Path, metavar="FILE", help="labels file, one per line (written as a list)")
    parser.add_argument("--height", type=int, help="input height when the model's input size is dynamic")
    parser.add_argument("--width", type=int, help="input width when the model's input size is dynamic")
    parser.add_argument("--name", help="spec name (default: the model file's stem)")


def options_from_args(args: argparse.Namespace) -> SpecOptions:
    return SpecOptions(
        format=args.format, task=args.task, color=args.color, resize=args.resize, pad_value=args.pad_value,
        scale=_floats(args.scale), offset=_floats(args.offset), mean=_floats(args.mean), std=_floats(args.std),
        labels=args.labels, height=args.height, width=args.width, name=args.name,
    )


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="ONNX model (.onnx)")
    parser.add_argument("--output", "-o", type=Path, help="spec path (default: MODEL.yaml beside the model)")
    parser.add_argument("--print", dest="to_stdout", action="store_true",
                        help="write the YAML to stdout (the report goes to stderr), no file")
    parser.add_argument("--force", action="store_true", help="replace an existing spec file")
    add_spec_writer_options(parser)


def run_spec(args: argparse.Namespace) -> int:
    write_spec(args.model, options_from_args(args), output=args.output, overwrite=args.force,
               to_stdout=args.to_stdout)
    return 0
