"""Tiny classification and segmentation models with known behaviour, built in code (nothing is downloaded).

``classifier`` and ``segmenter`` write ``<name>.onnx`` and its spec ``<name>.yaml`` into a folder and return the
model path, like onnx_factory. ``classifier_engine`` and ``segmenter_engine`` write the same model as a fake
TensorRT plan (``<name>.engine``, for the doubles in test/fakes) whose program is the numpy twin below, so
one test can run a model through ONNX Runtime and through the TensorRT backend and expect the same answer.
Import from any test (test/conftest.py puts test/ on sys.path): ``from task_factory import segmenter``.

What the models compute, on the input tensor x = pixels / 255 (NCHW, RGB):

- classifier: b = mean of the whole input; logit_k = -sharpness * |b * (C - 1) - k|. A uniform frame of grey
  level v is class round(v / 255 * (C - 1)); ``classifier_logits`` gives the exact logits.
- segmenter, mode 'brightness': per pixel b = mean over channels (averaged over stride x stride cells for a
  stride head); score_k = -|b * (C - 1) - k|, so grey 0 / 128 / 255 are classes 0 / 1 / 2 of 3.
  mode 'color' (4 classes: background, red, green, blue): score_0 = 0.5, score_1..3 = the R, G, B values;
  a saturated colour wins its class, a dark pixel is background. ``segmenter_scores`` gives the exact scores.
  ``output='ids'`` ends the graph with ArgMax (first maximum, as the parser's argmax) -> class ids.

Draw known regions in a SOURCE frame, run it through the pipeline's preprocessor and the model, and the
source-size mask must give back exactly those regions (edges on whole model/stride pixels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
COLOR_LABELS = ["background", "red", "green", "blue"]
ONNX_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "int32": TensorProto.INT32,
              "int64": TensorProto.INT64, "uint8": TensorProto.UINT8}  # fmt: skip
TRT_TYPES = {"float32": "FLOAT", "float16": "HALF", "int32": "INT32", "int64": "INT64", "uint8": "UINT8"}


# ---------------------------------------------------------------------------------------------- shared


def _save(folder: Path, name: str, graph: onnx.GraphProto, spec: Dict[str, Any]) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by older onnxruntime releases too
    onnx.checker.check_model(model)
    path = Path(folder) / f"{name}.onnx"
    onnx.save(model, str(path))
    _write_spec(path.with_suffix(".yaml"), spec)
    return path


def _write_spec(path: Path, spec: Mapping[str, Any]) -> None:
    path.write_text(yaml.safe_dump(dict(spec), sort_keys=False), encoding="utf-8")


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name + "_v"))


def _input_spec(
    input_name: str, height: int, width: int, resize: str, crop_top: int, crop_bottom: int, pad_value: float,
    interpolation: str,
) -> Dict[str, Any]:  # fmt: skip
    spec: Dict[str, Any] = {
        "name": input_name, "height": height, "width": width, "layout": "NCHW", "color": "RGB",
        "resize": resize, "pad_value": pad_value, "interpolation": interpolation, "scale": 1 / 255,
        "offset": 0.0,
    }  # fmt: skip
    if crop_top or crop_bottom:
        spec["crop"] = {"top": crop_top, "bottom": crop_bottom}
    return spec


def _write_engine(
    folder: Path, name: str, tensors: List[Dict[str, Any]], program: str, params: Dict[str, Any],
    spec: Dict[str, Any], tensorrt_version: str, compute_capability: Tuple[int, int],
) -> Path:  # fmt: skip
    from fakes.tensorrt_fake import make_plan, register_program

    register_program("task_factory.classifier")(_classifier_program)
    register_program("task_factory.segmenter")(_segmenter_program)
    plan = make_plan(tensors, tensorrt_version=tensorrt_version, compute_capability=compute_capability,
                     program=program, params=params)  # fmt: skip
    path = Path(folder) / f"{name}.engine"
    path.write_bytes(plan)
    _write_spec(path.with_suffix(".yaml"), spec)
    return path


# ------------------------------------------------------------------------------------------ classifier


def classifier_logits(tensor: np.ndarray, classes: int, sharpness: float = 8.0) -> np.ndarray:
    """The classifier's [1, C] logits for an NCHW input tensor (float64)."""
    b = float(np.asarray(tensor, np.float64).mean())
    return (-sharpness * np.abs(b * (classes - 1) - np.arange(classes)))[None, :]


def _classifier_setup(
    name: str, size: int, classes: int, output: str, conv_head: bool, activation: Optional[str],
    classification: Optional[Mapping[str, Any]], resize: str, input_name: str, tensor: str,
) -> Tuple[List[int], Dict[str, Any]]:  # fmt: skip
    if output not in ("logits", "probabilities"):
        raise ValueError(f"output {output!r}; expected 'logits' or 'probabilities'")
    out_shape = [1, classes, 1, 1] if conv_head else [1, classes]
    out_spec: Dict[str, Any] = {"format": "classification", "tensors": {"scores": tensor}}
    out_spec["activation"] = activation or ("none" if output == "probabilities" else "softmax")
    section = dict(classification) if classification is not None else {
        "labels": [f"level_{k}" for k in range(classes)], "top_k": min(3, classes)}  # fmt: skip
    spec = {
        "task": "classification",
        "name": name,
        "input": _input_spec(input_name, size, size, resize, 0, 0, 0.0, "linear"),
        "output": out_spec,
        "classification": section,
    }
    return out_shape, spec


def classifier(
    folder: Path,
    name: str = "classifier",
    size: int = 32,
    classes: int = 5,
    sharpness: float = 8.0,
    output: str = "logits",
    conv_head: bool = False,
    activation: Optional[str] = None,
    dtype: str = "float32",
    classification: Optional[Mapping[str, Any]] = None,
    resize: str = "stretch",
    input_name: str = "images",
    tensor: str = "output0",
) -> Path:
    """A ``classification`` model: input [1, 3, size, size], output ``tensor`` [1, C] (or [1, C, 1, 1] with
    ``conv_head``) of logits (spec activation softmax unless ``activation`` says otherwise) or, with
    ``output='probabilities'``, a Softmax in the graph (activation none). See the module doc for the logits."""
    out_shape, spec = _classifier_setup(name, size, classes, output, conv_head, activation, classification,
                                        resize, input_name, tensor)  # fmt: skip
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["b"], axes=[1, 2, 3], keepdims=0),
        _const("shape11", np.array([1, 1], np.int64)),
        helper.make_node("Reshape", ["b", "shape11"], ["b11"]),
        _const("top", np.array(classes - 1, np.float32)),
        helper.make_node("Mul", ["b11", "top"], ["level"]),
        _const("ks", np.arange(classes, dtype=np.float32)[None, :]),
        helper.make_node("Sub", ["level", "ks"], ["diff"]),
        helper.make_node("Abs", ["diff"], ["dist"]),
        _const("sharp", np.array(-sharpness, np.float32)),
        helper.make_node("Mul", ["dist", "sharp"], ["logits"]),
    ]
    last = "logits"
    if output == "probabilities":
        nodes.append(helper.make_node("Softmax", [last], ["probs"], axis=1))
        last = "probs"
    if conv_head:
        nodes.append(_const("shape4", np.array(out_shape, np.int64)))
        nodes.append(helper.make_node("Reshape", [last, "shape4"], ["r4"]))
        last = "r4"
    if dtype != "float32":
        nodes.append(helper.make_node("Cast", [last], ["cast"], to=ONNX_TYPES[dtype]))
        last = "cast"
    nodes.append(helper.make_node("Identity", [last], [tensor]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(tensor, ONNX_TYPES[dtype], out_shape)],
    )
    return _save(folder, name, graph, spec)


def classifier_engine(
    folder: Path,
    tensorrt_version: str = "10.0.1",
    compute_capability: Tuple[int, int] = (8, 7),
    name: str = "classifier",
    size: int = 32,
    classes: int = 5,
    sharpness: float = 8.0,
    output: str = "logits",
    conv_head: bool = False,
    activation: Optional[str] = None,
    dtype: str = "float32",
    classification: Optional[Mapping[str, Any]] = None,
    resize: str = "stretch",
    input_name: str = "images",
    tensor: str = "output0",
) -> Path:
    """``classifier`` as a fake TensorRT plan (program ``task_factory.classifier``), spec beside it."""
    out_shape, spec = _classifier_setup(name, size, classes, output, conv_head, activation, classification,
                                        resize, input_name, tensor)  # fmt: skip
    tensors = [
        {"name": input_name, "mode": "input", "shape": [1, 3, size, size], "dtype": "FLOAT"},
        {"name": tensor, "mode": "output", "shape": out_shape, "dtype": TRT_TYPES[dtype]},
    ]
    params = {"classes": classes, "sharpness": sharpness, "probabilities": output == "probabilities"}
    return _write_engine(folder, name, tensors, "task_factory.classifier", params, spec, tensorrt_version,
                         compute_capability)  # fmt: skip


def _classifier_program(
    inputs: Dict[str, np.ndarray], outputs: Dict[str, Any], params: Mapping[str, Any]
) -> Dict[str, np.ndarray]:
    logits = classifier_logits(next(iter(inputs.values())), int(params["classes"]), float(params["sharpness"]))
    if params.get("probabilities"):
        exp = np.exp(logits - logits.max())
        logits = exp / exp.sum()
    return {name: logits.reshape(shape).astype(dtype) for name, (shape, dtype) in outputs.items()}


# ------------------------------------------------------------------------------------------- segmenter


def segmenter_scores(tensor: np.ndarray, mode: str = "brightness", classes: int = 3, stride: int = 1) -> np.ndarray:
    """The segmenter's [1, C, H // stride, W // stride] scores for an NCHW input tensor (float32)."""
    x = np.asarray(tensor, np.float32)
    if stride > 1:
        n, c, h, w = x.shape
        h, w = h // stride, w // stride
        x = x[:, :, : h * stride, : w * stride].reshape(n, c, h, stride, w, stride).mean(axis=(3, 5))
    if mode == "color":
        background = np.full(x[:, :1].shape, 0.5, np.float32)
        return np.concatenate([background, x], axis=1).astype(np.float32)
    b = x.mean(axis=1, keepdims=True)
    ks = np.arange(classes, dtype=np.float32).reshape(1, classes, 1, 1)
    return (-np.abs(b * np.float32(classes - 1) - ks)).astype(np.float32)


def _segmenter_setup(
    name: str, height: int, width: int, classes: int, mode: str, stride: int, output: str, layout: str,
    ids_channel: bool, resize: str, crop_top: int, crop_bottom: int, pad_value: float, interpolation: str,
    segmentation: Optional[Mapping[str, Any]], input_name: str, tensor: str,
) -> Tuple[int, List[int], Dict[str, Any]]:  # fmt: skip
    if mode not in ("brightness", "color"):
        raise ValueError(f"mode {mode!r}; expected 'brightness' or 'color'")
    if output not in ("scores", "ids"):
        raise ValueError(f"output {output!r}; expected 'scores' or 'ids'")
    classes = 4 if mode == "color" else classes
    h, w = height // stride, width // stride
    if output == "scores":
        out_shape = [1, classes, h, w] if layout == "NCHW" else [1, h, w, classes]
    elif ids_channel:
        out_shape = [1, 1, h, w] if layout == "NCHW" else [1, h, w, 1]
    else:
        out_shape = [1, h, w]
    out_spec: Dict[str, Any] = {"format": "segmentation", "tensors": {"mask": tensor}}
    if layout != "NCHW":
        out_spec["layout"] = layout
    if segmentation is not None:
        section = dict(segmentation)
    elif mode == "color":
        section = {"labels": list(COLOR_LABELS)}
    else:
        section = {"labels": [f"level_{k}" for k in range(classes)]}
    spec = {
        "task": "segmentation",
        "name": name,
        "input": _input_spec(input_name, height, width, resize, crop_top, crop_bottom, pad_value, interpolation),
        "output": out_spec,
        "segmentation": section,
    }
    return classes, out_shape, spec


def segmenter(
    folder: Path,
    name: str = "segmenter",
    height: int = 64,
    width: int = 64,
    classes: int = 3,
    mode: str = "brightness",
    stride: int = 1,
    output: str = "scores",
    layout: str = "NCHW",
    dtype: Optional[str] = None,
    ids_channel: bool = False,
    resize: str = "stretch",
    crop_top: int = 0,
    crop_bottom: int = 0,
    pad_value: float = 0.0,
    interpolation: str = "nearest",
    segmentation: Optional[Mapping[str, Any]] = None,
    input_name: str = "images",
    tensor: str = "output0",
) -> Path:
    """A ``segmentation`` model: input [1, 3, height, width]; output ``tensor``: scores [1, C, h, w] (``layout``
    NHWC: [1, h, w, C]) of ``dtype`` (default float32), or with ``output='ids'`` class ids [1, h, w]
    (``ids_channel``: [1, 1, h, w] / [1, h, w, 1]) of ``dtype`` (default int64; int32, uint8 or a float);
    h, w = height, width // ``stride``. The spec carries ``resize``, ``crop_top``/``crop_bottom`` (model
    rows), ``pad_value``, ``interpolation`` and the output layout. See the module doc for the scores."""
    classes, out_shape, spec = _segmenter_setup(
        name, height, width, classes, mode, stride, output, layout, ids_channel, resize, crop_top, crop_bottom,
        pad_value, interpolation, segmentation, input_name, tensor,
    )  # fmt: skip
    dtype = dtype or ("int64" if output == "ids" else "float32")
    nodes: List[onnx.NodeProto] = []
    x = input_name
    if stride > 1:
        nodes.append(helper.make_node("AveragePool", [x], ["pooled"], kernel_shape=[stride, stride],
                                      strides=[stride, stride]))  # fmt: skip
        x = "pooled"
    if mode == "color":
        nodes += [
            _const("zero", np.array(0.0, np.float32)),
            _const("half", np.array(0.5, np.float32)),
            _const("starts", np.array([0], np.int64)),
            _const("ends", np.array([1], np.int64)),
            _const("axes", np.array([1], np.int64)),
            helper.make_node("Slice", [x, "starts", "ends", "axes"], ["red"]),
            helper.make_node("Mul", ["red", "zero"], ["zeros"]),
            helper.make_node("Add", ["zeros", "half"], ["background"]),
            helper.make_node("Concat", ["background", x], ["scores"], axis=1),
        ]
    else:
        nodes += [
            helper.make_node("ReduceMean", [x], ["b"], axes=[1], keepdims=1),
            _const("top", np.array(classes - 1, np.float32)),
            helper.make_node("Mul", ["b", "top"], ["level"]),
            _const("ks", np.arange(classes, dtype=np.float32).reshape(1, classes, 1, 1)),
            helper.make_node("Sub", ["level", "ks"], ["diff"]),
            helper.make_node("Abs", ["diff"], ["dist"]),
            helper.make_node("Neg", ["dist"], ["scores"]),
        ]
    last = "scores"
    if output == "ids":
        nodes.append(helper.make_node("ArgMax", [last], ["ids"], axis=1, keepdims=1 if ids_channel else 0))
        last = "ids"
        if ids_channel and layout == "NHWC":
            nodes.append(helper.make_node("Transpose", [last], ["ids_nhwc"], perm=[0, 2, 3, 1]))
            last = "ids_nhwc"
        if dtype != "int64":
            nodes.append(helper.make_node("Cast", [last], ["cast"], to=ONNX_TYPES[dtype]))
            last = "cast"
    else:
        if layout == "NHWC":
            nodes.append(helper.make_node("Transpose", [last], ["nhwc"], perm=[0, 2, 3, 1]))
            last = "nhwc"
        if dtype != "float32":
            nodes.append(helper.make_node("Cast", [last], ["cast"], to=ONNX_TYPES[dtype]))
            last = "cast"
    nodes.append(helper.make_node("Identity", [last], [tensor]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info(tensor, ONNX_TYPES[dtype], out_shape)],
    )
    return _save(folder, name, graph, spec)


def segmenter_engine(
    folder: Path,
    tensorrt_version: str = "10.0.1",
    compute_capability: Tuple[int, int] = (8, 7),
    name: str = "segmenter",
    height: int = 64,
    width: int = 64,
    classes: int = 3,
    mode: str = "brightness",
    stride: int = 1,
    output: str = "scores",
    layout: str = "NCHW",
    dtype: Optional[str] = None,
    ids_channel: bool = False,
    resize: str = "stretch",
    crop_top: int = 0,
    crop_bottom: int = 0,
    pad_value: float = 0.0,
    interpolation: str = "nearest",
    segmentation: Optional[Mapping[str, Any]] = None,
    input_name: str = "images",
    tensor: str = "output0",
) -> Path:
    """``segmenter`` as a fake TensorRT plan (program ``task_factory.segmenter``), spec beside it. Engine
    output dtypes: float32 (scores default), float16, int32 (ids default), uint8 (8.5+), int64 (10.x)."""
    classes, out_shape, spec = _segmenter_setup(
        name, height, width, classes, mode, stride, output, layout, ids_channel, resize, crop_top, crop_bottom,
        pad_value, interpolation, segmentation, input_name, tensor,
    )  # fmt: skip
    dtype = dtype or ("int32" if output == "ids" else "float32")
    tensors = [
        {"name": input_name, "mode": "input", "shape": [1, 3, height, width], "dtype": "FLOAT"},
        {"name": tensor, "mode": "output", "shape": out_shape, "dtype": TRT_TYPES[dtype]},
    ]
    params = {"mode": mode, "classes": classes, "stride": stride, "output": output, "layout": layout}
    return _write_engine(folder, name, tensors, "task_factory.segmenter", params, spec, tensorrt_version,
                         compute_capability)  # fmt: skip


def _segmenter_program(
    inputs: Dict[str, np.ndarray], outputs: Dict[str, Any], params: Mapping[str, Any]
) -> Dict[str, np.ndarray]:
    scores = segmenter_scores(next(iter(inputs.values())), params["mode"], int(params["classes"]),
                              int(params["stride"]))  # fmt: skip
    result = np.argmax(scores, axis=1)[:, None] if params["output"] == "ids" else scores
    if params["layout"] == "NHWC":
        result = result.transpose(0, 2, 3, 1)
    return {name: result.reshape(shape).astype(dtype) for name, (shape, dtype) in outputs.items()}


def draw_regions(frame: np.ndarray, regions: Sequence[Tuple[int, int, int, int, Any]]) -> np.ndarray:
    """Fill (x0, y0, x1, y1, value) rectangles of a frame in place (value: a grey level or a BGR triple)."""
    for x0, y0, x1, y1, value in regions:
        frame[y0:y1, x0:x1] = value
    return frame
