"""Plain result types shared by the pipeline, the node, replay and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np


@dataclass
class Detections:
    """Detections of one frame, in source-image pixels (xyxy), clipped to the image."""

    boxes: np.ndarray  # (N, 4) float32, x_min, y_min, x_max, y_max
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int64
    labels: List[str] = field(default_factory=list)  # (N,) label per detection ("" when unknown)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64), [])


@dataclass
class Classification:
    """Top-k classes of one frame, best first."""

    class_ids: np.ndarray  # (K,) int64
    scores: np.ndarray  # (K,) float32, probabilities after the spec's activation
    labels: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class SegmentationMask:
    """A class-id mask at the SOURCE image's size (resize, letterbox and crop undone).

    ``mask`` is uint8; ``UNSEEN`` (255) marks rows the model never saw (cropped away). ``fractions[c]`` is
    the share of seen pixels of class c. The array is the head's reused buffer: valid until the next frame.
    """

    UNSEEN = 255

    mask: np.ndarray  # (H, W) uint8
    fractions: np.ndarray  # (C,) float32
    labels: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class SteeringPrediction:
    """What a steering model said, before any safety logic: angle in [-1, 1] left..right, throttle."""

    angle: float
    throttle: float


@dataclass(frozen=True)
class DriveCommand:
    """A command after the pilot's safety logic: normalized steering [-1, 1] and throttle [-1, 1]."""

    steering: float
    throttle: float
    stop: bool = False  # True when this is a safety stop (NaN output, watchdog, disabled)
    reason: str = ""  # why a stop or a clamp happened, for logs and diagnostics


@dataclass
class ModelOutput:
    """One model's result for one frame with the time each stage took (seconds)."""

    result: object  # Detections | Classification | SegmentationMask | SteeringPrediction
    timings: Dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None
