"""A detector whose detections the test writes INTO the frame, for tracking tests through the real pipeline.

``coded_detector`` is an ``end_to_end`` ONNX model (x1, y1, x2, y2, score, class rows) that reads its rows from
the first image row: slot k is pixels 6k..6k+5 of row 0 (any channel: all three carry the same value), the score
as value/255. ``encode_detections`` writes them. So a bag can hold moving objects with exact ground truth
(boxes and track ids) and a "detector" that sees them at pixel precision, misses some frames, or sees them with a
low score, exactly as the test says, while replay runs its normal path: decode, preprocess (stretch at the
model's own size: identity), ONNX Runtime, the end_to_end parser, the detection head's tracker, the messages.
Import from any test (test/conftest.py puts test/ on sys.path): ``from track_factory import coded_detector``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

WIDTH, HEIGHT, SLOTS = 256, 160, 8  # coordinates are pixel values: at most 255
LABELS = ["cone", "car"]
Row = Tuple[float, float, float, float, float, int]  # x1, y1, x2, y2, score, class


def coded_detector(folder: Path, name: str = "coded", width: int = WIDTH, height: int = HEIGHT,
                   slots: int = SLOTS, score_threshold: float = 0.5) -> Path:
    """Write ``<name>.onnx`` + ``<name>.yaml``: input ``images`` [1,3,H,W] (BGR, x1), output ``detections``
    [1, slots, 6] read from row 0 of the image."""
    nodes = [
        helper.make_node("Constant", [], ["starts"], value=numpy_helper.from_array(np.array([0, 0, 0, 0], np.int64))),
        helper.make_node("Constant", [], ["ends"],
                         value=numpy_helper.from_array(np.array([1, 1, 1, slots * 6], np.int64))),
        helper.make_node("Slice", ["images", "starts", "ends"], ["row"]),
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([1, slots, 6], np.int64))),
        helper.make_node("Reshape", ["row", "shape"], ["rows"]),
        helper.make_node("Constant", [], ["unscale"], value=numpy_helper.from_array(
            np.array([1, 1, 1, 1, 1 / 255, 1], np.float32))),
        helper.make_node("Mul", ["rows", "unscale"], ["detections"]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, [1, slots, 6])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    spec: Dict[str, Any] = {
        "task": "detection",
        "name": name,
        "input": {"name": "images", "height": height, "width": width, "layout": "NCHW", "color": "BGR",
                  "resize": "stretch", "scale": 1.0, "offset": 0.0},
        "output": {"format": "end_to_end", "tensors": {"detections": "detections"}},
        "detection": {"labels": LABELS, "first_label_id": 0, "score_threshold": score_threshold,
                      "max_detections": slots},
    }  # fmt: skip
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def encode_detections(image_bgr: np.ndarray, rows: Sequence[Row], slots: int = SLOTS) -> np.ndarray:
    """Write detection rows into row 0 of ``image_bgr`` (in place; unused slots are zeros = padding)."""
    if len(rows) > slots:
        raise ValueError(f"{len(rows)} detections; the coded detector has {slots} slots")
    code = np.zeros(slots * 6, np.float64)
    for k, (x1, y1, x2, y2, score, cls) in enumerate(rows):
        code[6 * k: 6 * k + 6] = (x1, y1, x2, y2, round(score * 255), cls)
    if code.max() > 255 or code.min() < 0:
        raise ValueError("coded detections hold pixel values: coordinates and classes in 0..255")
    image_bgr[0, : slots * 6, :] = code.round().astype(np.uint8)[:, None]
    return image_bgr


def coded_score(score: float) -> float:
    """The score the detector gives back for ``score`` (8-bit)."""
    return round(score * 255) / 255.0
