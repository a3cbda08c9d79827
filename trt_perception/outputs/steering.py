"""``steering_linear`` and ``steering_categorical``: DonkeyCar-style drive heads -> ``SteeringPrediction``.

Values pass through as the model gives them: no clamping, and NaN stays NaN. Limits and the NaN stop are
the pilot's job (heads.py), which must see what the model really said - and a memory pilot feeds these raw
values back (DonkeyCar keras.py:408-411).

Beyond angle and throttle: ``throttle: inferred`` (DonkeyCar KerasInferred: an angle head only, throttle from
``utils.throttle(angle)``) and an optional ``location`` role (KerasLocalizer's ``zloc`` softmax: the argmax is
the track segment, keras.py:599-603), reported as ``LocalizedSteering``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from trt_perception.backends.base import TensorSpec
from trt_perception.donkeycar import inferred_throttle
from trt_perception.errors import SpecError
from trt_perception.outputs.base import DetectionSettings, OutputParser
from trt_perception.outputs.checks import (
    bad_param,
    batch0,
    check_params,
    check_roles,
    check_tensor,
    find_output,
    frame_array,
    frame_output,
    known,
    param_choice,
    param_int,
    param_range,
)
from trt_perception.results import SteeringPrediction
from trt_perception.spec import ModelSpec

HEADS = ("angle", "throttle")
LOCATION = "location"


@dataclass(frozen=True)
class LocalizedSteering(SteeringPrediction):
    """A localizer pilot's prediction: angle, throttle and the track segment it believes the car is in
    (argmax of the location scores, -1 when they hold a NaN) with that segment's score."""

    location: int = -1
    location_score: float = float("nan")


def _value(spec: ModelSpec, outputs: Mapping[str, np.ndarray], role: str) -> float:
    """The scalar of batch item 0 from a [B, 1], [B] or [1] output (OutputError when the frame has none)."""
    return float(batch0(frame_array(spec, outputs, role, f"[B, 1] or [B] {role} value", 0), 0))


class _LocationMixin:
    """The optional ``location`` role shared by both formats (KerasLocalizer's ``zloc`` [B, K])."""

    spec: ModelSpec

    def _check_location(self, outputs: Sequence[TensorSpec]) -> None:
        if LOCATION in self.spec.output.tensors:
            tensor = find_output(self.spec, outputs, LOCATION)
            check_tensor(self.spec, tensor, LOCATION, "[B, K] location scores (DonkeyCar zloc)", (1, 2))

    def _with_location(self, prediction: SteeringPrediction, outputs: Mapping[str, np.ndarray]) -> SteeringPrediction:
        name: Optional[str] = self.spec.output.tensors.get(LOCATION)
        if name is None:
            return prediction
        scores = batch0(np.asarray(outputs[name]), 1)
        if np.isnan(scores).any() or scores.size == 0:
            return LocalizedSteering(prediction.angle, prediction.throttle)
        best = int(np.argmax(scores))
        return LocalizedSteering(prediction.angle, prediction.throttle, best, float(scores[best]))


class LinearSteeringParser(_LocationMixin, OutputParser):
    """KerasLinear heads: ``angle`` and ``throttle`` tensors ([B,1] or [B]), or one ``combined`` [B,2].

    ``order`` says which column of ``combined`` is which (default [angle, throttle]; the legacy UFF
    DonkeyCar engines packed [throttle, angle]). ``throttle: inferred`` takes an ``angle`` tensor alone and
    derives the throttle as DonkeyCar's KerasInferred does (keras.py:463-465, utils.py:387-396).
    """

    format = "steering_linear"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        tensors = spec.output.tensors
        params = check_params(spec, {"order": list(HEADS), "throttle": "model"})
        self.inferred = param_choice(params, "throttle", ("model", "inferred")) == "inferred"
        self.combined = "combined" in tensors
        extra = (LOCATION,) if LOCATION in tensors else ()
        if self.inferred:
            if self.combined:
                raise bad_param("throttle", "inferred", "throttle: model with a 'combined' tensor",
                                "an inferred pilot maps only output.tensors.angle")
            check_roles(spec, ("angle", *extra))
        else:
            check_roles(spec, (("combined",) if self.combined else HEADS) + extra)
        order = params["order"]
        if not isinstance(order, (list, tuple)) or sorted(order) != sorted(HEADS):
            raise bad_param("order", order, "[angle, throttle] or [throttle, angle]")
        if not self.combined and list(order) != list(HEADS):
            raise bad_param(
                "order",
                order,
                "no order with separate angle/throttle tensors",
                "order applies only to a single 'combined' tensor; remove it",
            )
        self.angle_column = list(order).index("angle")
        self.throttle_column = list(order).index("throttle")

    def check_outputs(self, outputs: Sequence[TensorSpec]) -> None:
        self._check_location(outputs)
        if self.combined:
            tensor = find_output(self.spec, outputs, "combined")
            check_tensor(self.spec, tensor, "combined", "[B, 2] (angle and throttle columns)", (1, 2), 2)
            return
        for role in ("angle",) if self.inferred else HEADS:
            tensor = find_output(self.spec, outputs, role)
            check_tensor(self.spec, tensor, role, f"[B, 1] or [B] {role} value", (1, 2), 1)

    def parse(self, outputs: Mapping[str, np.ndarray], settings: DetectionSettings) -> SteeringPrediction:
        if self.combined:
            row = frame_output(self.spec, outputs, "combined", "[B, 2] (angle and throttle columns)", 1, 2)
            prediction = SteeringPrediction(float(row[self.angle_column]), float(row[self.throttle_column]))
        elif self.inferred:
            angle = _value(self.spec, outputs, "angle")
            prediction = SteeringPrediction(angle, inferred_throttle(angle))
        else:
            prediction = SteeringPrediction(
                _value(self.spec, outputs, "angle"), _value(self.spec, outputs, "throttle")
            )
        return self._with_location(prediction, outputs)


class CategoricalSteeringParser(_LocationMixin, OutputParser):
    """KerasCategorical heads: softmax bins for ``angle`` and ``throttle``, unbinned at the argmax.

    As DonkeyCar's ``utils.linear_unbin`` does it (``b * R / (N + offset) + offset``):
    angle = lo + b * (hi - lo) / (N - 1) (both range ends are bin centres: offset -1, R 2 gives b * 2/14 - 1
    for 15 bins over [-1, 1]); throttle = lo + b * (hi - lo) / N (offset 0, R = hi: the top bin is
    hi * (N - 1) / N, e.g. 0.95 for 20 bins over [0, 1]). DonkeyCar trains throttle over
    [0, MODEL_CATEGORICAL_MAX_THROTTLE_RANGE] (0.8 in its config templates, 0.5 in the class default): set
    ``throttle_range`` to match. Any NaN in a head gives NaN (argmax would hide it).
    """

    format = "steering_categorical"
    defaults: Dict[str, Any] = {
        "angle_bins": 15,
        "angle_range": [-1.0, 1.0],
        "throttle_bins": 20,
        "throttle_range": [0.0, 1.0],
    }

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        check_roles(spec, HEADS + ((LOCATION,) if LOCATION in spec.output.tensors else ()))
        params = check_params(spec, self.defaults)
        self.angle_bins = param_int(params, "angle_bins", 2)
        self.throttle_bins = param_int(params, "throttle_bins", 1)
        self.angle_range = param_range(params, "angle_range")
        self.throttle_range = param_range(params, "throttle_range")
        low, high = self.angle_range
        self.angle_values = low + np.arange(self.angle_bins) * ((high - low) / (self.angle_bins - 1))
        low, high = self.throttle_range
        self.throttle_values = low + np.arange(self.throttle_bins) * ((high - low) / self.throttle_bins)

    def _bins(self, role: str) -> Tuple[int, np.ndarray]:
        if role == "angle":
            return self.angle_bins, self.angle_values
        return self.throttle_bins, self.throttle_values

    def check_outputs(self, outputs: Sequence[TensorSpec]) -> None:
        self._check_location(outputs)
        for role in HEADS:
            bins, _ = self._bins(role)
            tensor = find_output(self.spec, outputs, role)
            shape = check_tensor(self.spec, tensor, role, f"[B, N] {role} bin scores", (1, 2))
            if known(shape[-1]) and int(shape[-1]) != bins:
                raise SpecError(
                    f"model output {tensor.name!r} (output.tensors.{role}) has {shape[-1]} bins but "
                    f"output.{role}_bins is {bins}; fix: set {role}_bins: {shape[-1]} in the spec"
                )

    def _unbin(self, role: str, outputs: Mapping[str, np.ndarray]) -> float:
        bins, values = self._bins(role)
        expected = f"[B, {bins}] {role} bin scores (output.{role}_bins is {bins})"
        scores = frame_output(self.spec, outputs, role, expected, 1, bins)
        if np.isnan(scores).any():
            return float("nan")
        return float(values[int(np.argmax(scores))])

    def parse(self, outputs: Mapping[str, np.ndarray], settings: DetectionSettings) -> SteeringPrediction:
        prediction = SteeringPrediction(
            self._unbin("angle", outputs),
            self._unbin("throttle", outputs),
        )
        return self._with_location(prediction, outputs)
