"""Output parsers, one module per format; ``create_parser`` picks one from a spec (imported lazily)."""

from __future__ import annotations

import importlib
from typing import Dict

from trt_perception.errors import SpecError
from trt_perception.outputs.base import (
    ClassificationSettings,
    DetectionSettings,
    OutputParser,
    RawClassification,
    RawDetections,
    RawSegmentation,
)
from trt_perception.spec import ModelSpec

PARSERS: Dict[str, str] = {
    "nms_trt": "trt_perception.outputs.nms_trt:NmsTrtParser",
    "efficient_nms": "trt_perception.outputs.plugin_nms:EfficientNmsParser",
    "batched_nms": "trt_perception.outputs.plugin_nms:BatchedNmsParser",
    "ssd_raw": "trt_perception.outputs.ssd_raw:SsdRawParser",
    "yolo": "trt_perception.outputs.yolo:YoloParser",
    "yolov5": "trt_perception.outputs.yolo:Yolov5Parser",
    "yolox": "trt_perception.outputs.yolo:YoloxParser",
    "end_to_end": "trt_perception.outputs.end_to_end:EndToEndParser",
    "boxes_scores": "trt_perception.outputs.boxes_scores:BoxesScoresParser",
    "classification": "trt_perception.outputs.classification:ClassificationParser",
    "segmentation": "trt_perception.outputs.segmentation:SegmentationParser",
    "steering_linear": "trt_perception.outputs.steering:LinearSteeringParser",
    "steering_categorical": "trt_perception.outputs.steering:CategoricalSteeringParser",
}


def create_parser(spec: ModelSpec) -> OutputParser:
    """The parser for ``spec.output.format``, with its parameters validated."""
    target = PARSERS.get(spec.output.format)
    if target is None:
        raise SpecError(f"output.format {spec.output.format!r} has no parser; expected one of {sorted(PARSERS)}")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)(spec)


__all__ = [
    "PARSERS",
    "ClassificationSettings",
    "DetectionSettings",
    "OutputParser",
    "RawClassification",
    "RawDetections",
    "RawSegmentation",
    "create_parser",
]
