"""``classification``: one score per class -> the top-k classes, best first.

The ``scores`` output is [B, C] (or [B, C, 1, 1] from a convolutional head; [C] and [C, 1, 1] from
implicit-batch engines). ``activation`` says what it holds: ``softmax`` (default) = logits, turned into
probabilities with a numerically stable softmax (max subtracted first); ``sigmoid`` = independent logits per
class (multi-label heads); ``none`` = already probabilities (a Softmax in the graph). Class ids are the column
indices (``classification.first_label_id`` says which column the first label names).

Per frame: the activation over C values, then ``np.argpartition`` for the k best and a sort of those k only,
then the score threshold. NaN scores never reach the result: a NaN logit counts as -inf in the softmax
(the other classes keep their probabilities) and is dropped; if every score is NaN the result is empty.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import SpecError
from trt_perception.outputs.base import ClassificationSettings, OutputParser, RawClassification
from trt_perception.outputs.checks import (
    check_params,
    check_roles,
    check_tensor,
    find_output,
    frame_array,
    known,
    param_choice,
)
from trt_perception.spec import ModelSpec

ACTIVATIONS = ("softmax", "sigmoid", "none")
DEFAULTS: Dict[str, Any] = {"activation": "softmax"}
SHAPES = "[B, C] class scores (or [B, C, 1, 1] from a convolutional head)"


def _classes_of(shape: Sequence[Optional[int]]) -> Optional[int]:
    """C of a [B, C] / [B, C, 1, 1] / [C] / [C, 1, 1] shape (the axis after the batch, if there is one)."""
    dim = shape[1] if len(shape) in (2, 4) else shape[0]
    return int(dim) if known(dim) else None


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities of float64 ``logits`` (1-D), max subtracted first; NaN counts as -inf; +inf entries
    share all the probability. All NaN/-inf: all NaN."""
    values = np.where(np.isnan(logits), -np.inf, logits)
    peak = values.max()
    if not np.isfinite(peak):
        if peak > 0:  # +inf logits: the limit of softmax
            winners = values == np.inf
            return winners / float(winners.sum())
        return np.full(values.shape, np.nan)
    exp = np.exp(values - peak)
    return exp / exp.sum()


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow warnings (exp(-x) -> inf gives 0); NaN stays NaN."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-logits))


class ClassificationParser(OutputParser):
    """Top-k of ``scores`` after ``activation``; ``ClassificationSettings`` give k and the threshold."""

    format = "classification"
    roles = ("scores",)

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        check_roles(spec, self.roles)
        params = check_params(spec, DEFAULTS)
        self.activation = param_choice(params, "activation", ACTIVATIONS)
        self.num_classes: Optional[int] = None  # known after check_outputs when the model's C is static

    # --------------------------------------------------------------------------------------- load time

    def check_outputs(self, outputs: Sequence[TensorSpec]) -> None:
        tensor = find_output(self.spec, outputs, "scores")
        shape = check_tensor(self.spec, tensor, "scores", SHAPES, (1, 2, 3, 4))
        if len(shape) in (3, 4) and any(known(d) and int(d) != 1 for d in shape[-2:]):
            raise SpecError(
                f"model output {tensor.name!r} (output.tensors.scores, format 'classification') has shape "
                f"{list(shape)}: a {shape[-2]}x{shape[-1]} map per class; the format expects {SHAPES}; fix: "
                "add global pooling to the model's head, or for per-pixel classes use task: segmentation "
                "with output.format: segmentation"
            )
        classes = _classes_of(shape)
        if classes == 1 and self.activation == "softmax":
            raise SpecError(
                f"model output {tensor.name!r} (output.tensors.scores) has one class column and "
                "output.activation is 'softmax', which makes every score 1.0; fix: set activation: sigmoid "
                "(a single-logit binary head) or none (a probability)"
            )
        self.num_classes = classes

    # ---------------------------------------------------------------------------------------- per frame

    def parse(
        self, outputs: Mapping[str, np.ndarray], settings: Optional[ClassificationSettings]
    ) -> RawClassification:
        if settings is None:
            settings = ClassificationSettings.from_spec(self.spec.classification)
        raw = frame_array(self.spec, outputs, "scores", SHAPES, 0)
        classes = _classes_of(raw.shape) if raw.ndim else 1
        row = raw.reshape(-1)[:classes].astype(np.float64)  # batch item 0 comes first in every layout
        if self.activation == "softmax":
            scores = softmax(row)
        elif self.activation == "sigmoid":
            scores = sigmoid(row)
        else:
            scores = row
        invalid = np.isnan(row)
        if invalid.any():
            scores[invalid] = np.nan  # dropped below, whatever the activation made of them
        k = min(max(int(settings.top_k), 0), scores.shape[0])
        if k == 0:
            return RawClassification(np.zeros((0,), np.int64), np.zeros((0,), np.float32))
        key = np.where(np.isnan(scores), np.inf, -scores)  # ascending = best first, NaN last
        best = np.argpartition(key, k - 1)[:k] if k < key.shape[0] else np.arange(key.shape[0])
        best = best[np.lexsort((best, key[best]))]  # the k only; equal scores: lower class id first
        top = scores[best]
        keep = top >= settings.score_threshold  # False for NaN
        return RawClassification(best[keep].astype(np.int64), top[keep].astype(np.float32))
