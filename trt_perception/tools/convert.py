"""`trt-perception convert`: Keras / TensorFlow / TFLite / PyTorch models -> ONNX plus the model spec beside it.

- TensorFlow family (Keras ``.h5``/``.keras``, SavedModel folders, frozen graphs ``.pb``, ``.tflite``): through
  tf2onnx's command line (``python -m tf2onnx.convert``), its stable interface across releases; tf2onnx and
  TensorFlow are an optional extra (``pip install trt_perception[convert]`` plus TensorFlow) and a clear
  message names them when missing. ``--inputs``/``--outputs`` pass through: naming inner tensors cuts the graph
  there, which is how an SSD loses its framework post-processing (raw heads out, no TF NMS).
- PyTorch: ``export_torch(model, sample_input, path)`` for models built in Python, and TorchScript files
  (``.pt``/``.ts`` saved with ``torch.jit.save``) from the command line; both use the TorchScript-based
  ``torch.onnx.export`` (``dynamo=False`` where torch has that switch): its graphs parse on TensorRT 8.2.
- DonkeyCar pilots (a graph input named ``img_in``, or any ``--donkey-*`` flag): every pilot type DonkeyCar
  trains (linear, categorical, inferred, imu, memory, behavior, localizer, rnn, 3d) is recognized from the graph
  (trt_perception/donkeycar.py), its inputs renamed to DonkeyCar's names and its outputs to their roles, and a
  complete spec written: extra inputs, frame sequence, crop or mask, categorical throttle range, inferred
  throttle. ``--donkey-config myconfig.py`` and ``--donkey-database models/database.json`` add what only the car
  knows (type string ``KerasCategorical-R:0.8``, TRANSFORMATIONS/ROI_CROP_*, BEHAVIOR_LIST).
- Other steering models: outputs renamed ``angle``/``throttle`` (by name: ``n_outputs0``/``angle_out``
  are the angle, ``n_outputs1``/``throttle_out`` the throttle; else in order), linear vs categorical detected
  from the output shapes ([N,1] vs [N,bins]), spec written with DonkeyCar's input conventions (RGB, x/255,
  NHWC, 120x160 unless the model says otherwise).
- SSD detectors: the graph is cut at the raw box/score heads (``--boxes-tensor``/``--scores-tensor``, or a
  preset's names), the outputs renamed ``boxes``/``scores``, the anchors exported to ``<name>_anchors.npy``
  (from a file, from an anchors tensor evaluated once with ONNX Runtime, or from the SSD grid generator) and an
  ``ssd_raw`` spec written; ``--nms efficient|batched`` then appends the TensorRT NMS plugin (nms_surgery).

PyTorch recipe (what ``export_torch`` does; run it where torch is installed, then `trt-perception build`)::

    import torch
    model = MyDetector(); model.load_state_dict(torch.load("weights.pth")); model.eval()
    sample = torch.zeros(1, 3, 300, 300)            # batch 1, the spec's input size and layout
    torch.onnx.export(model, (sample,), "model.onnx", input_names=["images"],
                      output_names=["boxes", "scores"], opset_version=13, do_constant_folding=True,
                      dynamo=False)                  # torch >= 2.5: keep the TorchScript exporter
    # or: from trt_perception.tools.convert import export_torch
    #     export_torch(model, sample, "model.onnx", input_names=["images"], output_names=["boxes", "scores"])
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception.errors import BuildError, ConfigError, SpecError
from trt_perception.onnx_file import load_onnx
from trt_perception.spec import parse_spec, save_spec

if TYPE_CHECKING:  # onnx is imported where it is used: `trt-perception --help` builds this parser (0.6 s saved)
    import onnx

PathLike = Union[str, Path]
DEFAULT_OPSET = 13  # TensorRT 8.2 (Jetson Nano) parses opsets 7..13
FRAMEWORKS = ("auto", "onnx", "keras", "saved-model", "tf-graph", "tflite", "torchscript")
TF_FLAGS = {"keras": "--keras", "saved-model": "--saved-model", "tf-graph": "--graphdef", "tflite": "--tflite"}
ANCHOR_LAYOUTS = ("cxcywh", "cycxhw", "xyxy", "yxyx")
ANGLE_NAMES = ("angle", "steer", "n_outputs0")
THROTTLE_NAMES = ("throttle", "n_outputs1")


@dataclass(frozen=True)
class SsdPreset:
    """Known raw-head layouts: where to cut, how to read the heads, and the anchor generator's parameters."""

    description: str
    input_tensor: str
    boxes_tensor: str
    scores_tensor: str
    input_size: Tuple[int, int]
    layout: str
    scale: float
    offset: float
    feature_maps: Tuple[int, ...]
    min_scale: float
    max_scale: float
    aspect_ratios: Tuple[float, ...]
    variances: Tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)
    box_order: str = "yx"
    score_activation: str = "sigmoid"
    background_class: int = 0


SSD_PRESETS: Dict[str, SsdPreset] = {
    # TF1 Object Detection API SSD-MobileNet v1/v2 (and SSDLite/Inception) COCO frozen graphs: the tensors
    # the UFF configs fed to NMS_TRT ('concat' = box encodings [1,A,1,4] in (ty, tx, th, tw), 'concat_1' =
    # class logits [1,A,91], background 0), the preprocessed image Preprocessor/sub (x * 2/255 - 1, NHWC),
    # and the GridAnchor_TRT parameters of those configs (jkjung-avt/tensorrt_demos ssd/build_engine.py).
    "tf1-ssd-300": SsdPreset(
        "TF1 OD API SSD (MobileNet v1/v2, SSDLite, Inception v2) COCO, 300x300 frozen graph",
        "Preprocessor/sub:0", "concat:0", "concat_1:0", (300, 300), "NHWC", 2.0 / 255.0, -1.0,
        (19, 10, 5, 3, 2, 1), 0.2, 0.95, (1.0, 2.0, 0.5, 3.0, 0.3333),
    ),
}


# ---------------------------------------------------------------------------------------------- sources


def detect_framework(source: Path) -> str:
    """The framework of a model file or folder, from its suffix (or a SavedModel's saved_model.pb)."""
    if source.is_dir():
        if (source / "saved_model.pb").is_file() or (source / "saved_model.pbtxt").is_file():
            return "saved-model"
        raise ConfigError(
            f"folder {source} is not a TensorFlow SavedModel (no saved_model.pb); fix: pass the model file"
        )
    suffix = source.suffix.lower()
    found = {".onnx": "onnx", ".h5": "keras", ".hdf5": "keras", ".keras": "keras", ".pb": "tf-graph",
             ".tflite": "tflite", ".pt": "torchscript", ".ts": "torchscript", ".pth": "torch-weights"}.get(suffix)
    if found == "torch-weights":
        raise ConfigError(
            f"{source} looks like PyTorch weights (a state dict): they need the model's Python class to export; "
            "fix: build the model in Python and call trt_perception.tools.convert.export_torch(model, sample, "
            "'model.onnx') (README 'Building engines' has the recipe), or save it with torch.jit.save first"
        )
    if found is None:
        raise ConfigError(
            f"cannot tell the framework of {source} (suffix {suffix!r}); expected .onnx, .h5/.keras, a SavedModel "
            "folder, .pb, .tflite or a TorchScript .pt; fix: pass --framework"
        )
    return found


def tf2onnx_command(
    framework: str,
    source: PathLike,
    output: PathLike,
    opset: int = DEFAULT_OPSET,
    inputs: Sequence[str] = (),
    outputs: Sequence[str] = (),
) -> List[str]:
    """The tf2onnx command line for one conversion (inputs may carry shapes: ``name:0[1,300,300,3]``)."""
    if framework not in TF_FLAGS:
        raise ConfigError(f"framework {framework!r} is not a TensorFlow format; expected one of {sorted(TF_FLAGS)}")
    if framework == "tf-graph" and (not inputs or not outputs):
        raise ConfigError(
            "a frozen graph (.pb) has no signature: pass --inputs and --outputs with its tensor names "
            "(e.g. --inputs image:0 --outputs logits:0), or an --ssd preset that knows them"
        )
    command = [sys.executable, "-m", "tf2onnx.convert", TF_FLAGS[framework], str(source), "--output", str(output),
               "--opset", str(int(opset))]
    if inputs:
        command += ["--inputs", ",".join(inputs)]
    if outputs:
        command += ["--outputs", ",".join(outputs)]
    return command


def _require_tf2onnx() -> None:
    missing = [name for name in ("tf2onnx", "tensorflow") if importlib.util.find_spec(name) is None]
    if missing:
        raise BuildError(
            f"converting TensorFlow/Keras/TFLite models needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed; fix: pip install 'trt_perception[convert]' "
            "tensorflow (on a desktop: conversion need not run on the Jetson; copy the .onnx over), or export the "
            "ONNX in your training environment and run `trt-perception convert model.onnx ...` here"
        )


def run_tf2onnx(command: Sequence[str]) -> None:
    _require_tf2onnx()
    result = subprocess.run(list(command), capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        if "ml_dtypes" in output and "has no attribute" in output:  # onnx >= 1.17 with TensorFlow 2.15's ml_dtypes
            last = output.splitlines()[-1]
            raise BuildError(f"tf2onnx cannot import onnx here ({last}): this onnx needs a newer ml_dtypes than the "
                             "installed TensorFlow allows; fix: pip install 'onnx<1.17' in this environment")
        tail = "\n".join(output.splitlines()[-15:])
        raise BuildError(f"tf2onnx failed (exit {result.returncode}): {' '.join(command)}\n{tail}")


def export_torch(
    model: Any,
    sample_input: Any,
    path: PathLike,
    input_names: Sequence[str] = ("input",),
    output_names: Optional[Sequence[str]] = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    dynamo: bool = False,
) -> Path:
    """Export a PyTorch module to ONNX the way TensorRT 8.x parses best (TorchScript exporter, opset 13).

    ``sample_input``: a tensor or a tuple of tensors of the real input shape (batch 1). ``dynamic_batch``
    marks dim 0 of inputs and outputs dynamic (the builder then needs a profile; the spec gives batch 1).
    ``dynamo=True`` picks torch's newer exporter (torch >= 2.5, needs onnxscript; its opset-18 graphs need
    TensorRT >= 8.6): the TorchScript exporter (deprecated since torch 2.9, still shipped) is the default
    because TensorRT 8.2 on the Jetson Nano parses its opset-13 graphs.
    """
    import onnx

    try:
        import torch
    except ImportError as exc:
        raise BuildError(f"export_torch needs PyTorch ({exc}); fix: run it where torch is installed") from exc
    path = Path(path)
    args = sample_input if isinstance(sample_input, tuple) else (sample_input,)
    options: Dict[str, Any] = {
        "input_names": list(input_names),
        "opset_version": int(opset),
        "do_constant_folding": True,
    }
    if output_names:
        options["output_names"] = list(output_names)
    if dynamic_batch:
        names = list(input_names) + list(output_names or [])
        options["dynamic_axes"] = {name: {0: "batch"} for name in names}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = bool(dynamo)  # torch >= 2.9 defaults to the dynamo exporter
    elif dynamo:
        raise ConfigError(f"torch {torch.__version__} has no dynamo ONNX exporter; fix: drop dynamo=True")
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(model, args, str(path), **options)
    finally:
        if was_training:
            model.train()
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def export_torchscript(source: Path, output: Path, input_shape: Sequence[int], input_name: str = "input",
                       opset: int = DEFAULT_OPSET) -> Path:
    """A TorchScript file (``torch.jit.save``) -> ONNX, fed zeros of ``input_shape``."""
    try:
        import torch
    except ImportError as exc:
        raise BuildError(f"converting {source} needs PyTorch ({exc}); fix: pip install torch") from exc
    if not input_shape:
        raise ConfigError(f"converting TorchScript {source} needs --input-shape, e.g. --input-shape 1x3x300x300")
    module = torch.jit.load(str(source), map_location="cpu")
    return export_torch(module, torch.zeros(tuple(int(d) for d in input_shape)), output, [input_name], None, opset)


# -------------------------------------------------------------------------------------------- graph edits


def _gs() -> Any:
    try:
        import onnx_graphsurgeon as gs
    except ImportError as exc:
        raise BuildError(
            f"this conversion needs onnx-graphsurgeon ({exc}); fix: pip install onnx-graphsurgeon"
        ) from exc
    return gs


def _dims(value: onnx.ValueInfoProto) -> List[Optional[int]]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _rename_tensor(graph: Any, tensor: Any, name: str) -> None:
    if tensor.name == name:
        return
    taken = graph.tensors()
    if name in taken and taken[name] is not tensor:
        raise BuildError(f"cannot rename {tensor.name!r} to {name!r}: the graph already has a tensor named {name!r}")
    tensor.name = name


def _fix_batch(graph: Any) -> None:
    """A dynamic batch dim on graph inputs becomes 1: the pipeline runs batch 1, TensorRT then needs no profile."""
    for tensor in graph.inputs:
        if tensor.shape and not isinstance(tensor.shape[0], int):
            tensor.shape = [1, *tensor.shape[1:]]


def _layout_of(shape: Sequence[Optional[int]]) -> Tuple[str, int, int]:
    """(layout, height, width) of a 4-D image input; NHWC when the last dim is 1 or 3."""
    if len(shape) != 4:
        raise SpecError(f"model input has shape {list(shape)}; expected a 4-D image batch (NHWC or NCHW)")
    if shape[-1] in (1, 3) and shape[1] not in (1, 3):
        layout, height, width = "NHWC", shape[1], shape[2]
    elif shape[1] in (1, 3):
        layout, height, width = "NCHW", shape[2], shape[3]
    else:
        raise SpecError(f"model input has shape {list(shape)}; cannot tell NHWC from NCHW (no 1/3-channel dim)")
    if not isinstance(height, int) or not isinstance(width, int) or height <= 0 or width <= 0:
        raise SpecError(f"model input has shape {list(shape)}; its height and width must be static; fix: re-export "
                        "with a fixed input size (tf2onnx --inputs name:0[1,H,W,3])")
    return layout, int(height), int(width)


@dataclass
class SteeringOptions:
    """DonkeyCar conventions; change them only when the car's config does."""

    crop_top: int = 0
    crop_bottom: int = 0
    angle_range: Tuple[float, float] = (-1.0, 1.0)
    throttle_range: Tuple[float, float] = (0.0, 1.0)
    name: str = ""


def _pick_heads(outputs: Sequence[Any]) -> Tuple[Any, Any]:
    """(angle, throttle) output tensors, by DonkeyCar names where they say, else in output order."""

    def find(names: Sequence[str]) -> List[Any]:
        return [t for t in outputs if any(n in t.name.lower() for n in names)]

    angle, throttle = find(ANGLE_NAMES), find(THROTTLE_NAMES)
    if len(angle) == 1 and len(throttle) == 1 and angle[0] is not throttle[0]:
        return angle[0], throttle[0]
    return outputs[0], outputs[1]


def finish_steering(model: onnx.ModelProto, options: Optional[SteeringOptions] = None) -> Tuple[onnx.ModelProto, Dict]:
    """Rename a drive model's outputs to angle/throttle and write its spec (linear or categorical from shapes)."""
    options = options or SteeringOptions()
    gs = _gs()
    graph = gs.import_onnx(model)
    if len(graph.inputs) != 1:
        raise SpecError(f"a steering model has one image input; this one has {[t.name for t in graph.inputs]}")
    _fix_batch(graph)
    image = graph.inputs[0]
    layout, height, width = _layout_of(list(image.shape))
    outputs = list(graph.outputs)
    tensors: Dict[str, str]
    params: Dict[str, Any] = {}
    if len(outputs) == 1:
        last = (outputs[0].shape or [None])[-1]
        if last != 2:
            raise SpecError(
                f"steering model has one output {outputs[0].name!r} of shape {outputs[0].shape}; expected [N, 2] "
                "(angle, throttle) or two outputs"
            )
        _rename_tensor(graph, outputs[0], "combined")
        fmt, tensors = "steering_linear", {"combined": "combined"}
    elif len(outputs) == 2:
        angle, throttle = _pick_heads(outputs)
        bins = [(t.shape or [None])[-1] for t in (angle, throttle)]
        if not all(isinstance(b, int) for b in bins):
            raise SpecError(f"steering outputs {[t.name for t in outputs]} have dynamic last dims {bins}")
        if bins == [1, 1]:
            fmt = "steering_linear"
        elif bins[0] > 1 and bins[1] > 1:
            fmt = "steering_categorical"
            params = {"angle_bins": bins[0], "throttle_bins": bins[1], "angle_range": list(options.angle_range),
                      "throttle_range": list(options.throttle_range)}
        else:
            raise SpecError(
                f"steering outputs {angle.name!r} {angle.shape} and {throttle.name!r} {throttle.shape} mix a "
                "linear and a categorical head; expected both [N, 1] (linear) or both [N, bins] (categorical)"
            )
        _rename_tensor(graph, angle, "angle")
        _rename_tensor(graph, throttle, "throttle")
        tensors = {"angle": "angle", "throttle": "throttle"}
    else:
        raise SpecError(f"steering model has {len(outputs)} outputs {[t.name for t in outputs]}; expected 1 or 2")
    new_model = _export(gs, graph, model)
    spec: Dict[str, Any] = {
        "task": "steering",
        "input": {"name": image.name, "height": height, "width": width, "layout": layout, "color": "RGB",
                  "scale": 1.0 / 255.0, "offset": 0.0},
        "output": {"format": fmt, "tensors": tensors, **params},
    }
    if options.name:
        spec["name"] = options.name
    if options.crop_top or options.crop_bottom:
        spec["input"]["crop"] = {"top": int(options.crop_top), "bottom": int(options.crop_bottom)}
    return new_model, spec


@dataclass
class DonkeyOptions:
    """What the car says beyond the graph: its config files, its pilot database, a type, and flag overrides."""

    config: Optional[Path] = None  # myconfig.py / config.py
    database: Optional[Path] = None  # models/database.json
    pilot_type: Optional[str] = None  # 'memory', 'tflite_categorical', 'KerasMemory-L:3-D:0', ...
    model_file: str = ""  # the source model's file name (to find its database entry)
    crop_top: Optional[int] = None
    crop_bottom: Optional[int] = None
    throttle_range: Optional[Tuple[float, float]] = None
    name: str = ""


def _tensor_dims(tensor: Any) -> Tuple[Optional[int], ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in (tensor.shape or []))


def finish_donkeycar(model: onnx.ModelProto, options: Optional[DonkeyOptions] = None) \
        -> Tuple[onnx.ModelProto, Dict[str, Any], List[str]]:
    """A DonkeyCar pilot's ONNX graph -> (graph with DonkeyCar input names and role output names, its complete
    spec, notes for the user). See trt_perception/donkeycar.py for what each pilot type looks like."""
    from trt_perception import donkeycar as dk

    options = options or DonkeyOptions()
    notes: List[str] = []
    config: Optional[dk.CarConfig] = None
    hint: Optional[dk.PilotType] = None
    if options.config is not None:
        config = dk.read_car_config(options.config)
        notes.append(f"car config: {', '.join(config.sources)}")
    if options.database is not None:
        entry = dk.read_database(options.database, options.model_file or None)
        if config is not None:
            differ = sorted(k for k, v in entry.config.values.items() if k in config.values and config.values[k] != v
                            and k in dk.TEMPLATE_DEFAULTS)
            if differ:
                trained = ", ".join(f"{k}={entry.config.values[k]!r}" for k in differ)
                car = ", ".join(f"{k}={config.values[k]!r}" for k in differ)
                notes.append(f"the pilot was trained with {trained} but the car config says {car}; "
                             "the training values are used")
            config = config.merged(entry.config)  # training values over the car's, unreadable ones kept as such
        else:
            config = entry.config
        pilot = entry.pilot or entry.model_type
        if pilot:
            hint = dk.parse_pilot_type(pilot)
        notes.append(f"database entry {entry.name!r}: Pilot {entry.pilot!r}, Type {entry.model_type!r}")
    if options.pilot_type:
        given = dk.parse_pilot_type(options.pilot_type)
        if hint is not None and hint.kind != given.kind:
            raise ConfigError(f"--donkey-type {options.pilot_type!r} contradicts the database entry ({hint.text!r}); "
                              "fix: drop one of them")
        hint = given if hint is None or given.text.startswith("Keras") else hint
    gs = _gs()
    graph = gs.import_onnx(model)
    _fix_batch(graph)
    inputs = [dk.Tensor(t.name, _tensor_dims(t)) for t in graph.inputs]
    outputs = [dk.Tensor(t.name, _tensor_dims(t)) for t in graph.outputs]
    ops = sorted({node.op for node in graph.nodes})
    rec = dk.recognize(inputs, outputs, ops, hint)
    by_name = {t.name: t for t in list(graph.inputs) + list(graph.outputs)}
    _rename_tensor(graph, by_name[rec.image.name], dk.IMAGE_INPUT)
    canonical = {"memory": dk.MEMORY_INPUT, "imu": dk.IMU_INPUT, "behavior": dk.BEHAVIOR_INPUT}
    for kind, tensor in rec.extra.items():
        _rename_tensor(graph, by_name[tensor.name], canonical[kind])
    for role, tensor in rec.roles.items():
        _rename_tensor(graph, by_name[tensor.name], role)

    choices = dk.SpecChoices(config=config, name=options.name)
    if options.throttle_range is not None:
        if options.throttle_range[0] != 0.0:
            raise ConfigError(f"--throttle-range {options.throttle_range}: DonkeyCar's categorical throttle starts at "
                              "0 (linear_unbin offset 0); expected 0,R")
        choices.throttle_range = float(options.throttle_range[1])
    elif hint is not None and hint.throttle_range is not None:
        choices.throttle_range = hint.throttle_range
    elif config is not None and config.has("MODEL_CATEGORICAL_MAX_THROTTLE_RANGE"):
        choices.throttle_range = float(config.get("MODEL_CATEGORICAL_MAX_THROTTLE_RANGE"))
    height = rec.image.shape[-3]
    if options.crop_top is not None or options.crop_bottom is not None:
        choices.crop_top, choices.crop_bottom = options.crop_top or 0, options.crop_bottom or 0
    elif config is not None and "CROP" not in dk.transformations(config):
        top, bottom = int(config.get("ROI_CROP_TOP") or 0), int(config.get("ROI_CROP_BOTTOM") or 0)
        image_h = config.get("IMAGE_H")
        if (top or bottom) and isinstance(image_h, int) and height == image_h - top - bottom:
            choices.crop_top, choices.crop_bottom = top, bottom  # DonkeyCar 3.x: the model takes the cropped rows
            notes.append(f"the model takes {height} rows = IMAGE_H {image_h} - ROI_CROP_TOP {top} - ROI_CROP_BOTTOM "
                         f"{bottom}: DonkeyCar 3.x cropping, written as input.crop")
    if config is not None:
        size = (config.get("IMAGE_H"), config.get("IMAGE_W"))
        frame = tuple(rec.image.shape[-3:-1])
        if size != frame and not (choices.crop_top or choices.crop_bottom):
            notes.append(f"the car config says IMAGE_H x IMAGE_W = {size[0]}x{size[1]} but the model takes "
                         f"{frame[0]}x{frame[1]}; the spec follows the model (frames are resized to it)")
        if "CROP" in dk.transformations(config):
            notes.append("TRANSFORMATIONS has CROP: written as input.mask (DonkeyCar >= 4.5 masks the ROI_CROP_* "
                         "borders black at full size; 4.2-4.4 cropped and stretched instead, not reproduced)")
    spec = dk.build_spec(rec, choices)
    title = f"DonkeyCar {rec.kind} pilot" + (f" ({hint.text})" if hint is not None and hint.text else "")
    notes = [title, *notes, *rec.notes]
    return _export(gs, graph, model), spec, notes


def _export(gs: Any, graph: Any, original: onnx.ModelProto) -> onnx.ModelProto:
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    model.ir_version = original.ir_version
    return model


def anchors_to_center_size(anchors: np.ndarray, layout: str) -> np.ndarray:
    """(A, 4) anchors in ``layout`` (cxcywh, cycxhw, xyxy or yxyx; normalized) -> normalized [cx, cy, w, h]."""
    a = np.asarray(anchors, np.float64).reshape(-1, 4)
    if layout == "cxcywh":
        out = a
    elif layout == "cycxhw":
        out = a[:, [1, 0, 3, 2]]
    elif layout in ("xyxy", "yxyx"):
        xyxy = a if layout == "xyxy" else a[:, [1, 0, 3, 2]]
        out = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2, xyxy[:, 2] - xyxy[:, 0],
                        xyxy[:, 3] - xyxy[:, 1]], axis=1)
    else:
        raise ConfigError(f"anchors layout {layout!r} is not known; expected one of {list(ANCHOR_LAYOUTS)}")
    return out.astype(np.float32)


def evaluate_tensor(model: onnx.ModelProto, name: str) -> np.ndarray:
    """Compute one tensor of the model with ONNX Runtime, feeding zeros (for constant subgraphs: anchors)."""
    import onnxruntime as ort

    gs = _gs()
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    if name not in tensors:
        raise SpecError(f"the model has no tensor {name!r} (for the anchors); fix: check --anchors-tensor")
    if isinstance(tensors[name], gs.Constant):
        return np.asarray(tensors[name].values)
    if tensors[name].dtype is None:  # an inner tensor without value_info: anchors are float
        tensors[name].dtype = np.float32
    graph.outputs = [tensors[name]]
    graph.cleanup()
    sub = gs.export_onnx(graph)
    session = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
        dtype = np.uint8 if "uint8" in arg.type else np.int64 if "int64" in arg.type else np.float32
        feed[arg.name] = np.zeros(shape, dtype)
    return np.asarray(session.run(None, feed)[0])


@dataclass
class SsdOptions:
    """Where the raw heads are and how to read them; preset values fill whatever is not given."""

    boxes_tensor: Optional[str] = None
    scores_tensor: Optional[str] = None
    anchors_file: Optional[Path] = None
    anchors_tensor: Optional[str] = None
    anchors_layout: str = "yxyx"
    feature_maps: Optional[Sequence[int]] = None
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 0.3333)
    reduce_boxes_in_lowest_layer: bool = True
    variances: Sequence[float] = (0.1, 0.1, 0.2, 0.2)
    box_order: str = "yx"
    score_activation: str = "sigmoid"
    background_class: Optional[int] = 0
    input_spec: Dict[str, Any] = field(default_factory=dict)
    labels: Optional[str] = None
    name: str = ""

    @classmethod
    def from_preset(cls, preset: SsdPreset, **overrides: Any) -> SsdOptions:
        options = cls(
            boxes_tensor=preset.boxes_tensor, scores_tensor=preset.scores_tensor,
            feature_maps=preset.feature_maps, min_scale=preset.min_scale, max_scale=preset.max_scale,
            aspect_ratios=preset.aspect_ratios, variances=preset.variances, box_order=preset.box_order,
            score_activation=preset.score_activation, background_class=preset.background_class,
            input_spec={"height": preset.input_size[0], "width": preset.input_size[1], "layout": preset.layout,
                        "color": "RGB", "scale": preset.scale, "offset": preset.offset},
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(options, key, value)
        return options


def finish_ssd(model: onnx.ModelProto, options: SsdOptions, anchors_path: Path) -> Tuple[onnx.ModelProto, Dict]:
    """Cut the graph at the raw heads, rename them boxes/scores, save the anchors and return the ssd_raw spec."""
    import onnx

    from trt_perception.outputs.anchors import grid_anchors

    if not options.boxes_tensor or not options.scores_tensor:
        raise ConfigError("--ssd needs the raw head tensors: --boxes-tensor NAME --scores-tensor NAME (or a preset)")
    gs = _gs()
    if options.anchors_file is not None:
        anchors = np.load(options.anchors_file, allow_pickle=False).reshape(-1, 4).astype(np.float32)
    elif options.anchors_tensor is not None:
        anchors = anchors_to_center_size(evaluate_tensor(model, options.anchors_tensor), options.anchors_layout)
    elif options.feature_maps:
        anchors = None  # after the input size is known
    else:
        raise ConfigError(
            "--ssd needs anchors: --anchors FILE.npy (normalized cx, cy, w, h), --anchors-tensor NAME "
            "(+ --anchors-layout), or the grid generator's --feature-maps/--min-scale/--max-scale/--aspect-ratios"
        )
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))  # head shapes say the anchor count
    tensors = graph.tensors()
    heads = []
    for role, name in (("boxes", options.boxes_tensor), ("scores", options.scores_tensor)):
        if name not in tensors:
            close = sorted(t for t in tensors if name.split(":")[0] in t)[:8]
            raise SpecError(f"--{role}-tensor {name!r} is not a tensor of the model; similar names: {close}")
        if tensors[name].dtype is None:  # inner tensors may lack value_info; SSD heads are float32
            tensors[name].dtype = np.float32
        heads.append(tensors[name])
    graph.outputs = heads
    _fix_batch(graph)
    graph.cleanup()
    if len(graph.inputs) != 1:
        raise SpecError(f"the cut SSD graph has inputs {[t.name for t in graph.inputs]}; expected one image input")
    image = graph.inputs[0]
    layout, height, width = _layout_of(list(image.shape))
    if anchors is None:
        anchors = grid_anchors(list(options.feature_maps or ()), options.min_scale, options.max_scale,
                               list(options.aspect_ratios), options.reduce_boxes_in_lowest_layer,
                               image_size=(height, width))
    boxes, scores = heads
    count = (scores.shape or [None, None])[-2] if scores.shape and len(scores.shape) >= 2 else None
    if isinstance(count, int) and count != anchors.shape[0]:
        raise SpecError(f"the scores head {scores.name!r} has {count} anchors but the anchors have "
                        f"{anchors.shape[0]}; fix the anchor parameters (feature maps, aspect ratios)")
    _rename_tensor(graph, boxes, "boxes")
    _rename_tensor(graph, scores, "scores")
    new_model = _export(gs, graph, model)
    np.save(anchors_path, anchors)
    input_spec = {"name": image.name, "height": height, "width": width, "layout": layout, "color": "RGB"}
    input_spec.update(options.input_spec)
    if (input_spec["height"], input_spec["width"], input_spec["layout"]) != (height, width, layout):
        raise SpecError(f"the model input {image.name!r} is {layout} {height}x{width} but the options say "
                        f"{input_spec['layout']} {input_spec['height']}x{input_spec['width']}")
    spec: Dict[str, Any] = {
        "task": "detection",
        "input": input_spec,
        "output": {
            "format": "ssd_raw",
            "tensors": {"boxes": "boxes", "scores": "scores"},
            "anchors": {"file": anchors_path.name},
            "variances": [float(v) for v in options.variances],
            "box_order": options.box_order,
            "score_activation": options.score_activation,
            "background_class": options.background_class,
        },
    }
    if options.name:
        spec["name"] = options.name
    if options.labels:
        spec["detection"] = {"labels": options.labels}
    return new_model, spec


# ----------------------------------------------------------------------------------------------- driver


def _write(model: onnx.ModelProto, spec: Optional[Mapping[str, Any]], output: Path, force: bool) -> None:
    import onnx

    spec_path = output.with_suffix(".yaml")
    if spec is not None:
        parse_spec(dict(spec), source=spec_path)  # refuse a bad spec before writing anything
    onnx.checker.check_model(model)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.partial")
    onnx.save(model, str(tmp))
    tmp.replace(output)
    if spec is not None:
        save_spec(dict(spec), spec_path, overwrite=force or not spec_path.exists())


def _check_free(paths: Sequence[Path], force: bool) -> None:
    from trt_perception.tools.output_paths import check_output_file

    for path in paths:
        check_output_file(path, "-o")
        if path.exists() and not force:
            raise BuildError(f"{path} exists; refusing to overwrite it; fix: pass --force or -o another path")


def _floats(text: Optional[str], count: Optional[int] = None, flag: str = "") -> Optional[Tuple[float, ...]]:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or (count is not None and len(values) != count):
        raise ConfigError(f"{flag} {text!r} is not valid; expected {count or 'some'} comma-separated numbers")
    return values


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="model: .onnx, .h5/.keras, SavedModel folder, .pb, .tflite, "
                        "TorchScript .pt")
    parser.add_argument("-o", "--output", type=Path, help="output .onnx (default: next to the source)")
    parser.add_argument("--framework", choices=FRAMEWORKS, default="auto", help="source format (default: from suffix)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ai.onnx opset to write. TensorFlow/TorchScript sources: default 13 (TensorRT 8.2 on the "
                             "Nano parses 7..13); ONNX sources (with --steering, --ssd or --nms): default their own, "
                             "another is converted to with "
                             "onnx.version_converter (the NMS nodes are built for the opset either way)")
    parser.add_argument("--inputs", help="tf2onnx input tensors, comma-separated (frozen graphs; may cut the graph)")
    parser.add_argument("--outputs", help="tf2onnx output tensors, comma-separated (frozen graphs; may cut the graph)")
    parser.add_argument("--input-shape", help="TorchScript sample input shape, e.g. 1x3x300x300")
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    parser.add_argument("--name", default="", help="model name for the spec")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--steering", action="store_true", help="DonkeyCar-style drive model: angle/throttle + spec")
    kind.add_argument("--ssd", nargs="?", const="custom", metavar="PRESET",
                      help="SSD detector: keep raw heads, write anchors + ssd_raw spec; presets: "
                      + ", ".join(sorted(SSD_PRESETS)))
    steer = parser.add_argument_group("steering")
    steer.add_argument("--crop-top", type=int, default=0, help="rows cropped from the top (model resolution)")
    steer.add_argument("--crop-bottom", type=int, default=0, help="rows cropped from the bottom")
    steer.add_argument("--throttle-range", help="categorical throttle range (default: the DonkeyCar car's "
                       "MODEL_CATEGORICAL_MAX_THROTTLE_RANGE, else 0,1; DonkeyCar 5 templates: 0,0.8)")
    steer.add_argument("--angle-range", default="-1,1", help="categorical angle range (default -1,1)")
    donkey = parser.add_argument_group("DonkeyCar pilots (recognized from the graph; these add what the car knows)")
    donkey.add_argument("--donkey-config", type=Path, metavar="MYCONFIG",
                        help="the car's myconfig.py or config.py (image size, TRANSFORMATIONS/ROI_CROP_*, "
                        "MODEL_CATEGORICAL_MAX_THROTTLE_RANGE, BEHAVIOR_LIST); read as literals, never run")
    donkey.add_argument("--donkey-database", type=Path, metavar="DATABASE_JSON",
                        help="the car's models/database.json: the pilot's type string (e.g. KerasCategorical-R:0.8) "
                        "and training config, found by the model's file name")
    donkey.add_argument("--donkey-type", metavar="TYPE",
                        help="pilot type when the graph cannot say: linear, categorical, inferred, imu, memory, "
                        "behavior, localizer, rnn, 3d, or a type string such as KerasMemory-L:3-D:0")
    ssd = parser.add_argument_group("SSD raw heads")
    ssd.add_argument("--boxes-tensor", help="box regression tensor to cut at")
    ssd.add_argument("--scores-tensor", help="class score tensor to cut at")
    ssd.add_argument("--anchors", type=Path, help=".npy of normalized cx, cy, w, h anchors")
    ssd.add_argument("--anchors-tensor", help="tensor holding the anchors (evaluated once with ONNX Runtime)")
    ssd.add_argument("--anchors-layout", choices=ANCHOR_LAYOUTS, default="yxyx", help="layout of --anchors-tensor")
    ssd.add_argument("--feature-maps", help="grid anchors: feature map sizes, e.g. 19,10,5,3,2,1")
    ssd.add_argument("--min-scale", type=float, help="grid anchors: min scale (pipeline.config)")
    ssd.add_argument("--max-scale", type=float, help="grid anchors: max scale (pipeline.config)")
    ssd.add_argument("--aspect-ratios", help="grid anchors: aspect ratios, e.g. 1,2,0.5,3,0.3333")
    ssd.add_argument("--variances", help="box coder variances (TF scales 10,10,5,5 = 0.1,0.1,0.2,0.2)")
    ssd.add_argument("--box-order", choices=("yx", "xy"), help="regression order (TF: yx)")
    ssd.add_argument("--score-activation", choices=("sigmoid", "softmax", "none"), help="score head activation")
    ssd.add_argument("--background-class", help="background score column, or 'none'")
    ssd.add_argument("--labels", help="labels file for the spec (path relative to the output)")
    ssd.add_argument("--input-size", help="HxW the model takes (default: from the model input)")
    ssd.add_argument("--scale", type=float, help="input scale (y = x * scale + offset)")
    ssd.add_argument("--offset", type=float, help="input offset")
    ssd.add_argument("--color", choices=("RGB", "BGR"), help="input color order (default RGB)")
    nms = parser.add_argument_group("TensorRT NMS plugin (for ssd_raw and raw YOLO models: yolo, yolov5, yolox)")
    nms.add_argument("--nms", choices=("efficient", "batched"),
                     help="append EfficientNMS_TRT, or BatchedNMS (TensorRT < 8.4, Jetson Nano)")
    nms.add_argument("--score-threshold", type=float, help="plugin score threshold (default: the spec's)")
    nms.add_argument("--iou-threshold", type=float, help="plugin IoU threshold (default: the spec's)")
    nms.add_argument("--max-detections", type=int, help="plugin output rows (default: the spec's max_detections)")
    nms.add_argument("--top-k", type=int, help="BatchedNMS candidates per class (default min(anchors or points, 4096))")


def _ssd_options(args: argparse.Namespace) -> SsdOptions:
    preset_name = args.ssd
    overrides: Dict[str, Any] = {
        "boxes_tensor": args.boxes_tensor, "scores_tensor": args.scores_tensor, "anchors_file": args.anchors,
        "anchors_tensor": args.anchors_tensor, "box_order": args.box_order, "score_activation": args.score_activation,
        "labels": args.labels, "name": args.name or None,
        "feature_maps": None if args.feature_maps is None else tuple(int(v) for v in _floats(args.feature_maps)),
        "min_scale": args.min_scale, "max_scale": args.max_scale,
        "aspect_ratios": _floats(args.aspect_ratios, None, "--aspect-ratios"),
        "variances": _floats(args.variances, 4, "--variances"),
    }
    if args.background_class is not None:
        overrides["background_class"] = None if args.background_class.lower() == "none" else int(args.background_class)
    if preset_name == "custom":
        options = SsdOptions()
        for key, value in overrides.items():
            if value is not None:
                setattr(options, key, value)
    elif preset_name in SSD_PRESETS:
        options = SsdOptions.from_preset(SSD_PRESETS[preset_name], **overrides)
    else:
        raise ConfigError(f"--ssd preset {preset_name!r} is not known; expected one of {sorted(SSD_PRESETS)} "
                          "or --ssd alone with --boxes-tensor/--scores-tensor")
    options.anchors_layout = args.anchors_layout
    if args.anchors_tensor is not None:
        options.anchors_file = None
    if args.anchors is not None or args.anchors_tensor is not None:
        options.feature_maps = None if args.feature_maps is None else options.feature_maps
    if args.input_size:
        height, _, width = args.input_size.lower().partition("x")
        options.input_spec.update({"height": int(height), "width": int(width)})
    for key in ("scale", "offset", "color"):
        if getattr(args, key) is not None:
            options.input_spec[key] = getattr(args, key)
    return options


def run_convert(args: argparse.Namespace) -> int:

    from trt_perception.tools.nms_surgery import add_nms_to_file

    source: Path = args.source
    if not source.exists():
        raise ConfigError(f"model {source} does not exist; fix: pass the path of the model to convert")
    framework = detect_framework(source) if args.framework == "auto" else args.framework
    default = source.with_suffix(".onnx") if source.is_file() or source.suffix == ".savedmodel" \
        else source.parent / (source.name + ".onnx")
    output: Path = args.output or default
    donkey = bool(args.donkey_config or args.donkey_database or args.donkey_type)
    if donkey and (args.ssd is not None or args.nms):
        raise ConfigError("--donkey-config/--donkey-database/--donkey-type are for DonkeyCar pilots; --ssd/--nms for "
                          "detectors; fix: drop one")
    post = args.steering or args.ssd is not None or donkey
    if framework == "onnx" and not post and not args.nms:
        source_model = load_onnx(source, weights=False)
        if not (_looks_like_steering(source_model) or _looks_like_donkeycar(source_model)):
            opset = " (--opset alone does not convert: it applies to what those write)" if args.opset else ""
            raise ConfigError(f"{source} is already ONNX; pass --steering, --ssd or --nms to do something with "
                              f"it{opset}")
        post = True  # a DonkeyCar-shaped drive model: name its heads and write its spec
    if framework == "onnx" and not post:
        out, spec_path = add_nms_to_file(
            source, args.output, args.nms, force=args.force, score_threshold=args.score_threshold,
            iou_threshold=args.iou_threshold, max_detections=args.max_detections, top_k=args.top_k,
            opset=args.opset,
        )
        print(f"wrote {out} and {spec_path} (output format {args.nms}_nms{_opset_note(out, args.opset)})")
        return 0

    if framework == "onnx" and output.resolve() == source.resolve():
        output = source.with_name(f"{source.stem}_{'ssd' if args.ssd is not None else 'steering'}.onnx")
    _check_free([output, output.with_suffix(".yaml")], args.force)
    output.parent.mkdir(parents=True, exist_ok=True)  # tf2onnx and torch.onnx write there first
    preset = SSD_PRESETS.get(args.ssd) if args.ssd else None
    converted = output
    if framework in TF_FLAGS:
        inputs = [v for v in (args.inputs or "").split(",") if v]
        outputs = [v for v in (args.outputs or "").split(",") if v]
        if preset is not None:
            inputs = inputs or [f"{preset.input_tensor}[1,{preset.input_size[0]},{preset.input_size[1]},3]"]
            outputs = outputs or [preset.boxes_tensor, preset.scores_tensor]
        run_tf2onnx(tf2onnx_command(framework, source, output, args.opset or DEFAULT_OPSET, inputs, outputs))
    elif framework == "torchscript":
        shape = [int(d) for d in args.input_shape.lower().split("x")] if args.input_shape else []
        export_torchscript(source, output, shape, opset=args.opset or DEFAULT_OPSET)
    elif framework == "onnx":
        converted = source
    else:
        raise ConfigError(f"framework {framework!r} is not supported here; expected one of {list(FRAMEWORKS)}")

    model = load_onnx(converted, "model" if converted == source else "converted model")
    if framework in TF_FLAGS:
        _check_converted(model, source)
    elif framework == "onnx" and args.opset is not None:
        from trt_perception.tools.nms_surgery import with_opset

        model = with_opset(model, args.opset)
    spec: Optional[Dict[str, Any]] = None
    if args.ssd is not None:
        options = _ssd_options(args)
        if options.labels:  # the spec resolves it from its own folder
            options.labels = os.path.relpath(Path(options.labels).resolve(), output.parent.resolve())
        model, spec = finish_ssd(model, options, output.with_name(f"{output.stem}_anchors.npy"))
    elif donkey or _looks_like_donkeycar(model):
        throttle = _floats(args.throttle_range, 2, "--throttle-range")
        options = DonkeyOptions(
            config=args.donkey_config, database=args.donkey_database, pilot_type=args.donkey_type,
            model_file=source.name, crop_top=args.crop_top or None, crop_bottom=args.crop_bottom or None,
            throttle_range=(throttle[0], throttle[1]) if throttle else None, name=args.name,
        )
        model, spec, notes = finish_donkeycar(model, options)
        for note in notes:
            print(f"convert: {note}")
    elif args.steering or _looks_like_steering(model):
        ranges = (_floats(args.angle_range, 2, "--angle-range"),
                  _floats(args.throttle_range or "0,1", 2, "--throttle-range"))
        model, spec = finish_steering(model, SteeringOptions(args.crop_top, args.crop_bottom, ranges[0], ranges[1],
                                                             args.name))
    _write(model, spec, output, force=True)
    if spec is None:
        print(f"wrote {output}; no spec written (pass --steering or --ssd, or write {output.with_suffix('.yaml')})")
        return 0
    print(f"wrote {output} and {output.with_suffix('.yaml')} (output format {spec['output']['format']})")
    if args.nms:
        if spec["output"]["format"] != "ssd_raw":
            raise ConfigError("--nms applies to SSD detectors (--ssd); this model is a steering model")
        out, spec_path = add_nms_to_file(
            output, None, args.nms, force=args.force, score_threshold=args.score_threshold,
            iou_threshold=args.iou_threshold, max_detections=args.max_detections, top_k=args.top_k,
            opset=args.opset if framework == "onnx" else None,
        )
        print(f"wrote {out} and {spec_path} (output format {args.nms}_nms)")
    return 0


def _opset_note(path: Path, asked: Optional[int]) -> str:
    """", opset N" for the summary line: which opset the written model has (kept or converted to)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return f", opset {opset}" + ("" if asked is not None else " as the source")


def _check_converted(model: onnx.ModelProto, source: Path) -> None:
    """tf2onnx leaves TensorFlow ops it cannot express as nodes ONNX does not know (a Keras LSTM saved to TFLite
    becomes Flex TensorList ops): name them and the way around, instead of a checker traceback."""
    import onnx

    try:
        onnx.checker.check_model(model)
        return
    except onnx.checker.ValidationError as exc:
        problem = str(exc).splitlines()[0]
    from onnx import defs

    unknown = sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")
                      and not defs.has(n.op_type)})
    hint = ""
    if source.suffix.lower() == ".tflite" and any(op.startswith("TensorList") for op in unknown):
        hint = (" (a Keras LSTM stored in TFLite as Flex TensorList ops; DonkeyCar rnn pilots); fix: convert the "
                "pilot's .savedmodel or .h5 instead - DonkeyCar writes it beside the .tflite")
    raise BuildError(
        f"tf2onnx converted {source} into a graph ONNX cannot run: {problem}"
        + (f"; TensorFlow ops left in it: {unknown}" if unknown else "")
        + (hint or "; fix: convert the Keras .h5 / SavedModel form of the model, or a newer tf2onnx/opset (--opset)")
    )


def _looks_like_donkeycar(model: onnx.ModelProto) -> bool:
    """A graph input named like DonkeyCar's image input (``img_in``; tflite: ``serving_default_img_in:0``)."""
    initializers = {t.name for t in model.graph.initializer}
    return any("img_in" in v.name.lower() for v in model.graph.input if v.name not in initializers)


def _looks_like_steering(model: onnx.ModelProto) -> bool:
    """One 4-D image input and DonkeyCar-shaped float heads: two [N,1], one [N,2], or two bin heads whose names
    say angle/throttle (detector outputs such as detection_scores [1,100] must not pass for drive heads)."""
    import onnx

    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(_dims(inputs[0])) != 4:
        return False
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    heads = list(model.graph.output)
    shapes = [_dims(v) for v in heads]
    if not heads or len(heads) > 2 or any(len(d) != 2 or not isinstance(d[-1], int) for d in shapes):
        return False
    if any(v.type.tensor_type.elem_type not in floats for v in heads):
        return False
    lasts = [d[-1] for d in shapes]
    if lasts in ([2], [1, 1]):
        return True
    names = [v.name.lower() for v in heads]
    return len(heads) == 2 and any(n in names[0] or n in names[1] for n in ANGLE_NAMES) and any(
        n in names[0] or n in names[1] for n in THROTTLE_NAMES
    )
