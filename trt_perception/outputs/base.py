"""The output-parser interface: one parser class per output format, mapped by tensor name."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, FrozenSet, List, Mapping, Optional, Sequence, Union

import numpy as np

from trt_perception.backends.base import TensorSpec
from trt_perception.results import SteeringPrediction
from trt_perception.spec import ClassificationSpec, DetectionSpec, ModelSpec


@dataclass
class DetectionSettings:
    """Run-time detection settings (node params can change them between frames)."""

    score_threshold: float = 0.5
    iou_threshold: float = 0.45
    max_detections: int = 100
    allowed_class_ids: Optional[FrozenSet[int]] = None

    @classmethod
    def from_spec(cls, spec: DetectionSpec) -> DetectionSettings:
        return cls(spec.score_threshold, spec.iou_threshold, spec.max_detections, spec.allowed_class_ids())


@dataclass
class RawDetections:
    """A parser's detections: xyxy boxes in MODEL-INPUT pixels (before letterbox/crop undo)."""

    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int64

    @classmethod
    def empty(cls) -> RawDetections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))


@dataclass
class ClassificationSettings:
    """Run-time classification settings."""

    top_k: int = 5
    score_threshold: float = 0.0

    @classmethod
    def from_spec(cls, spec: ClassificationSpec) -> ClassificationSettings:
        return cls(spec.top_k, spec.score_threshold)


@dataclass
class RawClassification:
    """A parser's top-k classes, best first (probabilities after the format's activation)."""

    class_ids: np.ndarray  # (K,) int64
    scores: np.ndarray  # (K,) float32


@dataclass
class RawSegmentation:
    """A parser's class-id map at the model OUTPUT's size (at most the model input's; letterbox border, crop
    and stride not yet undone: ``ImageTransform.mask_to_source`` does all three in one gather).

    ``class_map`` may be the parser's reused buffer: valid until the next ``parse``.
    """

    class_map: np.ndarray  # (model_height, model_width) uint8
    num_classes: int


ParsedOutput = Union[RawDetections, RawClassification, RawSegmentation, SteeringPrediction]
Settings = Union[DetectionSettings, ClassificationSettings, None]


class OutputParser(abc.ABC):
    """Turns a model's named outputs into its task's raw result (``ParsedOutput``), in model-input pixels.

    Constructed once per model; validates its format parameters in ``__init__`` (``SpecError`` naming the
    key) and the model's outputs in ``check_outputs`` (``SpecError`` naming tensor, spec and model).
    ``parse`` runs per frame: vectorised numpy/OpenCV, no per-box Python loops.
    """

    format: str = ""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def tensor(self, role: str) -> str:
        """The output tensor name the spec maps to ``role``."""
        return self.spec.output.tensors[role]

    @abc.abstractmethod
    def check_outputs(self, outputs: Sequence[TensorSpec]) -> None:
        """Refuse a model whose outputs do not fit this format."""

    @abc.abstractmethod
    def parse(self, outputs: Mapping[str, np.ndarray], settings: Any) -> ParsedOutput:
        """Decode one frame's outputs (batch index 0). ``settings`` is the task's run-time settings
        (``DetectionSettings`` for detection formats, ``ClassificationSettings`` for classification, None
        for segmentation and steering)."""

    def parse_batch(self, outputs: Mapping[str, np.ndarray], count: int, settings: Any) -> Optional[List[ParsedOutput]]:
        """``parse`` of each of the first ``count`` frames of batch-first ``outputs`` (replay's batches of
        consecutive frames), equal to ``parse`` on each frame's row; thread-safe (it runs in replay's helper
        threads). None: this format parses frame by frame. A format whose cost is mostly per call (numpy calls on
        a small head) overrides it: ``ssd_raw`` does."""
        return None
