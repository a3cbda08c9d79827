"""One parser per output format (and the variants that change the per-frame code path), with the settings and a
well-formed output of each, for the malformed-output tests and the fuzz test.

``PARSER_CASES`` maps a case name to a ``ParserCase``: ``make()`` builds the parser from a spec written here
(nothing is read from disk), ``settings`` is what its task passes per frame, and ``outputs(rng)`` gives one
frame's outputs in the shapes the format documents, with random but plausible values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping

import numpy as np

from trt_perception.outputs import ClassificationSettings, DetectionSettings, create_parser
from trt_perception.outputs.base import OutputParser
from trt_perception.spec import parse_spec

SIZE = 64  # model input height and width of every case
DETECT = DetectionSettings(score_threshold=0.3, iou_threshold=0.5, max_detections=20)


@dataclass(frozen=True)
class ParserCase:
    task: str
    output: Mapping[str, Any]  # the spec's output section
    outputs: Callable[[np.random.Generator], Dict[str, np.ndarray]]
    extra: Mapping[str, Any] = None  # type: ignore[assignment]

    def make(self) -> OutputParser:
        data: Dict[str, Any] = {
            "task": self.task,
            "input": {"name": "images", "height": SIZE, "width": SIZE},
            "output": dict(self.output),
        }
        data.update(dict(self.extra or {}))
        return create_parser(parse_spec(data))

    @property
    def settings(self) -> Any:
        if self.task == "detection":
            return DETECT
        if self.task == "classification":
            return ClassificationSettings(top_k=3, score_threshold=0.0)
        return None


def _uniform(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.random(shape, dtype=np.float32)


def _nms_trt(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    rows = _uniform(rng, 1, 10, 7)
    rows[..., 1] = rng.integers(0, 5, (1, 10))
    count = np.array([[[rng.integers(0, 11)]]], np.int32).view(np.float32)
    return {"NMS": rows, "NMS_1": count}


def _plugin(names: Mapping[str, str], class_dtype: Any) -> Callable[[np.random.Generator], Dict[str, np.ndarray]]:
    def outputs(rng: np.random.Generator) -> Dict[str, np.ndarray]:
        return {
            names["num_detections"]: np.array([[rng.integers(0, 9)]], np.int32),
            names["boxes"]: _uniform(rng, 1, 8, 4),
            names["scores"]: _uniform(rng, 1, 8),
            names["classes"]: rng.integers(0, 5, (1, 8)).astype(class_dtype),
        }

    return outputs


def _ssd_raw(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    anchors = 2 * 2 * 3 + 1 * 6  # grid feature_maps [2, 1]: 3 boxes per cell in the lowest layer, then 6
    return {"scores": rng.normal(0, 2, (1, anchors, 4)).astype(np.float32),
            "boxes": rng.normal(0, 1, (1, anchors, 4)).astype(np.float32)}  # fmt: skip


def _yolo(channels_first: bool, box: int) -> Callable[[np.random.Generator], Dict[str, np.ndarray]]:
    def outputs(rng: np.random.Generator) -> Dict[str, np.ndarray]:
        points = 84  # 64x64 at strides 8/16/32: 64 + 16 + 4
        table = _uniform(rng, points, box + 3)
        table[:, 0:2] *= SIZE
        table[:, 2:4] *= SIZE / 2
        array = table.T if channels_first else table
        return {"output0" if box == 4 else "output": np.ascontiguousarray(array[None])}

    return outputs


def _yolox_raw(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    table = rng.normal(0, 1, (84, 8)).astype(np.float32)
    table[:, 4:] = _uniform(rng, 84, 4)
    return {"output": table[None]}


def _end_to_end(width: int) -> Callable[[np.random.Generator], Dict[str, np.ndarray]]:
    def outputs(rng: np.random.Generator) -> Dict[str, np.ndarray]:
        rows = _uniform(rng, 12, width) * SIZE
        if width == 6:
            rows[:, 4] /= SIZE
            rows[:, 5] = rng.integers(0, 3, 12)
            return {"output0": rows[None]}
        rows[:, 0] = rng.integers(0, 2, 12)
        rows[:, 5] = rng.integers(0, 3, 12)
        rows[:, 6] /= SIZE
        return {"output0": rows}

    return outputs


def _boxes_scores(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return {"boxes": _uniform(rng, 1, 30, 4), "scores": _uniform(rng, 1, 30, 3)}


def _classification(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return {"output0": rng.normal(0, 3, (1, 10)).astype(np.float32)}


def _segmentation_scores(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return {"output0": rng.normal(0, 1, (1, 4, 16, 16)).astype(np.float32)}


def _segmentation_nhwc(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return {"output0": rng.normal(0, 1, (1, 16, 16, 4)).astype(np.float16)}


def _segmentation_ids(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return {"output0": rng.integers(0, 4, (1, 32, 32)).astype(np.int64)}


def _segmentation_binary(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return {"output0": _uniform(rng, 1, 1, 32, 32)}


def _steering_linear(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return {"angle": rng.normal(0, 0.5, (1, 1)).astype(np.float32),
            "throttle": rng.normal(0, 0.5, (1, 1)).astype(np.float32)}  # fmt: skip


def _steering_combined(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return {"out": rng.normal(0, 0.5, (1, 2)).astype(np.float32)}


def _steering_categorical(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return {"angle": _uniform(rng, 1, 15), "throttle": _uniform(rng, 1, 20)}


EFFICIENT = {"num_detections": "num_detections", "boxes": "detection_boxes", "scores": "detection_scores",
             "classes": "detection_classes"}  # fmt: skip
BATCHED = {"num_detections": "num_detections", "boxes": "nmsed_boxes", "scores": "nmsed_scores",
           "classes": "nmsed_classes"}  # fmt: skip
GRID = {"grid": {"feature_maps": [2, 1]}}

PARSER_CASES: Dict[str, ParserCase] = {
    "nms_trt": ParserCase("detection", {"format": "nms_trt"}, _nms_trt),
    "efficient_nms": ParserCase("detection", {"format": "efficient_nms"}, _plugin(EFFICIENT, np.int32)),
    "batched_nms": ParserCase("detection", {"format": "batched_nms"}, _plugin(BATCHED, np.float32)),
    "ssd_raw_sigmoid": ParserCase("detection", {"format": "ssd_raw", "anchors": GRID}, _ssd_raw),
    "ssd_raw_softmax": ParserCase(
        "detection", {"format": "ssd_raw", "anchors": GRID, "score_activation": "softmax"}, _ssd_raw
    ),
    "yolo": ParserCase("detection", {"format": "yolo", "layout": "channels_first"}, _yolo(True, 4)),
    "yolo_auto": ParserCase("detection", {"format": "yolo"}, _yolo(False, 4)),
    "yolov5": ParserCase("detection", {"format": "yolov5", "tensors": {"predictions": "output"}}, _yolo(False, 5)),
    "yolox": ParserCase("detection", {"format": "yolox"}, _yolo(False, 5)),
    "yolox_decode": ParserCase("detection", {"format": "yolox", "decode": True}, _yolox_raw),
    "end_to_end_6": ParserCase("detection", {"format": "end_to_end"}, _end_to_end(6)),
    "end_to_end_7": ParserCase("detection", {"format": "end_to_end", "box_format": "cxcywh"}, _end_to_end(7)),
    "boxes_scores": ParserCase("detection", {"format": "boxes_scores"}, _boxes_scores),
    "classification": ParserCase("classification", {"format": "classification"}, _classification),
    "segmentation_scores": ParserCase("segmentation", {"format": "segmentation"}, _segmentation_scores),
    "segmentation_nhwc": ParserCase("segmentation", {"format": "segmentation", "layout": "NHWC"},
                                    _segmentation_nhwc),
    "segmentation_ids": ParserCase("segmentation", {"format": "segmentation"}, _segmentation_ids),
    "segmentation_binary": ParserCase("segmentation", {"format": "segmentation", "threshold": 0.5},
                                      _segmentation_binary),
    "steering_linear": ParserCase("steering", {"format": "steering_linear"}, _steering_linear),
    "steering_combined": ParserCase("steering", {"format": "steering_linear", "tensors": {"combined": "out"}},
                                    _steering_combined),
    "steering_categorical": ParserCase("steering", {"format": "steering_categorical"}, _steering_categorical),
}
