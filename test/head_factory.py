"""Tiny classification and segmentation ONNX models with known answers, for multi-head tests.

``colour_classifier``: input ``images`` [1,3,S,S] RGB x/255 -> ``scores`` [1,3] = 10 * mean of each channel
(logits; labels red, green, blue): a frame's dominant colour wins. ``brightness_segmenter``: input ``images``
[1,3,S,S] x/255 -> ``logits`` [1,2,S,S] = (0.5 - gray, gray - 0.5): bright pixels are class 1 ('blob').
Each writes ``<name>.onnx`` and its spec ``<name>.yaml`` (the style of onnx_factory.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper
from onnx_factory import _const, _save


def _input(size: int):
    return helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])


def colour_classifier(folder: Path, name: str = "colours", size: int = 32) -> Path:
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["means"], axes=[2, 3], keepdims=0),
        _const("ten", np.array(10.0, np.float32)),
        helper.make_node("Mul", ["means", "ten"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes, name, [_input(size)], [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])]
    )
    spec = {
        "task": "classification",
        "input": {"name": "images", "height": size, "width": size, "color": "RGB", "scale": 1 / 255},
        "output": {"format": "classification", "tensors": {"scores": "scores"}, "activation": "softmax"},
        "classification": {"labels": ["red", "green", "blue"], "top_k": 2},
    }
    return _save(folder, name, graph, spec)


def brightness_segmenter(folder: Path, name: str = "blobs", size: int = 32, resize: str = "letterbox") -> Path:
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["gray"], axes=[1], keepdims=1),
        _const("half", np.array(0.5, np.float32)),
        helper.make_node("Sub", ["half", "gray"], ["bg"]),
        helper.make_node("Sub", ["gray", "half"], ["fg"]),
        helper.make_node("Concat", ["bg", "fg"], ["logits"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, name, [_input(size)], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, size, size])]
    )
    spec = {
        "task": "segmentation",
        "input": {"name": "images", "height": size, "width": size, "resize": resize, "scale": 1 / 255},
        "output": {"format": "segmentation", "tensors": {"mask": "logits"}},
        "segmentation": {"labels": ["background", "blob"], "colors": [[0, 0, 0], [0, 200, 0]]},
    }
    return _save(folder, name, graph, spec)
