"""steering_linear and steering_categorical (DonkeyCar heads)."""

from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np
import pytest

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import OutputError, SpecError
from trt_perception.outputs import DetectionSettings, create_parser
from trt_perception.outputs.base import OutputParser
from trt_perception.outputs.steering import CategoricalSteeringParser, LinearSteeringParser
from trt_perception.results import SteeringPrediction
from trt_perception.spec import parse_spec

SETTINGS = DetectionSettings()


def make_parser(fmt: str, **output: Any) -> OutputParser:
    data: Dict[str, Any] = {
        "task": "steering",
        "input": {"name": "img_in", "height": 120, "width": 160, "layout": "NHWC"},
        "output": {"format": fmt, **output},
    }
    return create_parser(parse_spec(data))


def donkey_linear_unbin(arr: np.ndarray, n: int = 15, offset: float = -1, r: float = 2.0) -> float:
    """donkeycar/utils.py linear_unbin, restated: argmax * (R / (N + offset)) + offset."""
    return float(np.argmax(arr) * (r / (n + offset)) + offset)


def one_hot(n: int, index: int, batch: int = 1) -> np.ndarray:
    array = np.full((batch, n), 0.01, np.float32)
    array[0, index] = 0.9
    return array


def test_linear_separate_heads_pass_values_through_unclamped() -> None:
    parser = make_parser("steering_linear")
    assert isinstance(parser, LinearSteeringParser)
    result = parser.parse(
        {"angle": np.array([[1.7]], np.float32), "throttle": np.array([[-0.3]], np.float32)}, SETTINGS
    )
    assert isinstance(result, SteeringPrediction)
    assert result.angle == pytest.approx(1.7) and result.throttle == pytest.approx(-0.3)
    flat = parser.parse({"angle": np.array([0.25, 9.0]), "throttle": np.array([0.5, 9.0])}, SETTINGS)  # [B]
    assert (flat.angle, flat.throttle) == (0.25, 0.5)


def test_linear_nan_is_not_hidden() -> None:
    parser = make_parser("steering_linear")
    result = parser.parse({"angle": np.array([[np.nan]]), "throttle": np.array([[0.2]])}, SETTINGS)
    assert math.isnan(result.angle) and result.throttle == pytest.approx(0.2)


def test_linear_combined_tensor_with_column_order() -> None:
    parser = make_parser("steering_linear", tensors={"combined": "out"})
    result = parser.parse({"out": np.array([[0.1, 0.6]], np.float32)}, SETTINGS)
    assert (result.angle, result.throttle) == pytest.approx((0.1, 0.6))
    swapped = make_parser("steering_linear", tensors={"combined": "out"}, order=["throttle", "angle"])
    result = swapped.parse({"out": np.array([[0.1, 0.6], [9, 9]], np.float32)}, SETTINGS)
    assert (result.angle, result.throttle) == pytest.approx((0.6, 0.1))


def test_linear_check_outputs() -> None:
    parser = make_parser("steering_linear", tensors={"angle": "n_outputs0", "throttle": "n_outputs1"})
    parser.check_outputs(
        [
            TensorSpec("n_outputs1", (None, 1), np.dtype(np.float32)),
            TensorSpec("n_outputs0", (None, 1), np.dtype(np.float32)),
        ]
    )
    with pytest.raises(SpecError, match=r"output\.tensors\.throttle is 'n_outputs1'.*\['n_outputs0', 'x'\]"):
        parser.check_outputs(
            [
                TensorSpec("n_outputs0", (1, 1), np.dtype(np.float32)),
                TensorSpec("x", (1, 1), np.dtype(np.float32)),
            ]
        )
    with pytest.raises(SpecError, match=r"'n_outputs0'.*\[1, 15\].*\[B, 1\]"):
        parser.check_outputs(
            [
                TensorSpec("n_outputs0", (1, 15), np.dtype(np.float32)),
                TensorSpec("n_outputs1", (1, 1), np.dtype(np.float32)),
            ]
        )
    combined = make_parser("steering_linear", tensors={"combined": "out"})
    combined.check_outputs([TensorSpec("out", (1, 2), np.dtype(np.float32))])
    with pytest.raises(SpecError, match=r"'out'.*\[1, 3\].*\[B, 2\]"):
        combined.check_outputs([TensorSpec("out", (1, 3), np.dtype(np.float32))])


def test_linear_bad_params_and_roles() -> None:
    with pytest.raises(SpecError, match=r"output\.order is \['angle'\]"):
        make_parser("steering_linear", tensors={"combined": "out"}, order=["angle"])
    with pytest.raises(SpecError, match=r"output\.order.*only to a single 'combined'"):
        make_parser("steering_linear", order=["throttle", "angle"])
    with pytest.raises(SpecError, match=r"output\.clamp = True is not a parameter"):
        make_parser("steering_linear", clamp=True)
    with pytest.raises(SpecError, match=r"unknown role.*output\.tensors\.angle"):
        make_parser("steering_linear", tensors={"combined": "out", "angle": "a"})
    with pytest.raises(SpecError, match=r"output\.tensors\.throttle"):
        make_parser("steering_linear", tensors={"angle": "a"})


@pytest.mark.parametrize("index", range(15))
def test_categorical_angle_matches_donkeycar(index: int) -> None:
    parser = make_parser("steering_categorical")
    result = parser.parse({"angle": one_hot(15, index), "throttle": one_hot(20, 0)}, SETTINGS)
    assert result.angle == pytest.approx(donkey_linear_unbin(one_hot(15, index)[0]))
    assert result.angle == pytest.approx(index * 2 / 14 - 1)


@pytest.mark.parametrize("index", [0, 1, 10, 19])
def test_categorical_throttle_matches_donkeycar(index: int) -> None:
    parser = make_parser("steering_categorical")
    assert isinstance(parser, CategoricalSteeringParser)
    result = parser.parse({"angle": one_hot(15, 7), "throttle": one_hot(20, index)}, SETTINGS)
    # KerasCategorical.interpreter_to_output: linear_unbin(throttle, N=20, offset=0.0, R=throttle_range)
    assert result.throttle == pytest.approx(donkey_linear_unbin(one_hot(20, index)[0], 20, 0.0, 1.0))
    assert result.angle == pytest.approx(0.0)
    tuned = make_parser("steering_categorical", throttle_range=[0, 0.8])
    result = tuned.parse({"angle": one_hot(15, 7), "throttle": one_hot(20, index)}, SETTINGS)
    assert result.throttle == pytest.approx(donkey_linear_unbin(one_hot(20, index)[0], 20, 0.0, 0.8))


def test_categorical_custom_bins_and_nan() -> None:
    parser = make_parser("steering_categorical", angle_bins=5, angle_range=[-0.5, 0.5], throttle_bins=4)
    result = parser.parse({"angle": one_hot(5, 4), "throttle": one_hot(4, 2)}, SETTINGS)
    assert (result.angle, result.throttle) == pytest.approx((0.5, 0.5))
    bad = one_hot(5, 4)
    bad[0, 1] = np.nan
    result = parser.parse({"angle": bad, "throttle": one_hot(4, 2)}, SETTINGS)
    assert math.isnan(result.angle) and result.throttle == pytest.approx(0.5)
    with pytest.raises(OutputError, match=r"'angle'.*gave shape \[1, 15\].*angle_bins is 5"):
        parser.parse({"angle": one_hot(15, 0), "throttle": one_hot(4, 2)}, SETTINGS)


def categorical_specs(angle_bins: int = 15, throttle_bins: int = 20) -> List[TensorSpec]:
    return [
        TensorSpec("angle", (None, angle_bins), np.dtype(np.float32)),
        TensorSpec("throttle", (None, throttle_bins), np.dtype(np.float32)),
    ]


def test_categorical_check_outputs_compares_bin_counts() -> None:
    parser = make_parser("steering_categorical")
    parser.check_outputs(categorical_specs())
    with pytest.raises(SpecError, match=r"'throttle'.*21 bins.*throttle_bins is 20.*throttle_bins: 21"):
        parser.check_outputs(categorical_specs(throttle_bins=21))
    with pytest.raises(SpecError, match=r"'angle'.*dtype int64"):
        parser.check_outputs([TensorSpec("angle", (1, 15), np.dtype(np.int64)), categorical_specs()[1]])


@pytest.mark.parametrize(
    ("output", "pattern"),
    [
        ({"angle_bins": 1}, r"output\.angle_bins is 1; expected an integer >= 2"),
        ({"throttle_bins": 2.5}, r"output\.throttle_bins is 2\.5"),
        ({"angle_range": [1, -1]}, r"output\.angle_range is \[1, -1\]; expected \[low, high\]"),
        ({"throttle_range": [0]}, r"output\.throttle_range is \[0\]"),
        ({"order": ["angle", "throttle"]}, r"output\.order = .*allowed keys"),
        ({"tensors": {"combined": "out"}}, r"output\.tensors\.angle"),
    ],
)
def test_categorical_bad_params(output: Dict[str, Any], pattern: str) -> None:
    with pytest.raises(SpecError, match=pattern):
        make_parser("steering_categorical", **output)


# ---------------------------------------------------------------- inferred throttle and the localizer


def donkey_throttle(angle: float) -> float:
    """donkeycar/utils.py throttle(), restated: m = (clamp(a) + 1) / 2; 1 / exp(0.5 m) - 0.05 m."""
    m = (min(max(angle, -1.0), 1.0) + 1.0) / 2.0
    return 1.0 / math.exp(m * 0.5) - 0.05 * m


@pytest.mark.parametrize("angle", [-1.3, -1.0, -0.4, 0.0, 0.25, 1.0, 2.0])
def test_inferred_throttle_is_donkeycars(angle: float) -> None:
    parser = make_parser("steering_linear", tensors={"angle": "n_outputs0"}, throttle="inferred")
    parser.check_outputs([TensorSpec("n_outputs0", (None, 1), np.dtype(np.float32))])
    result = parser.parse({"n_outputs0": np.array([[angle]], np.float32)}, SETTINGS)
    assert result.angle == pytest.approx(angle)  # the angle itself is not clamped here
    assert result.throttle == pytest.approx(donkey_throttle(float(np.float32(angle))), abs=1e-12)


def test_inferred_throttle_refusals_and_nan() -> None:
    parser = make_parser("steering_linear", tensors={"angle": "a"}, throttle="inferred")
    result = parser.parse({"a": np.array([[np.nan]], np.float32)}, SETTINGS)
    assert math.isnan(result.angle) and math.isnan(result.throttle)
    with pytest.raises(SpecError, match=r"output\.throttle is 'sometimes'"):
        make_parser("steering_linear", throttle="sometimes")
    with pytest.raises(SpecError, match=r"unknown role.*output\.tensors\.throttle"):
        make_parser("steering_linear", throttle="inferred")  # both angle and throttle mapped
    with pytest.raises(SpecError, match=r"an inferred pilot maps only output\.tensors\.angle"):
        make_parser("steering_linear", tensors={"combined": "c"}, throttle="inferred")


def test_location_role_linear_and_categorical() -> None:
    from trt_perception.outputs.steering import LocalizedSteering

    parser = make_parser("steering_linear", tensors={"angle": "angle", "throttle": "throttle", "location": "zloc"})
    outputs = [TensorSpec(n, (1, 1), np.dtype(np.float32)) for n in ("angle", "throttle")]
    parser.check_outputs([*outputs, TensorSpec("zloc", (1, 8), np.dtype(np.float32))])
    with pytest.raises(SpecError, match=r"'zloc'.*location scores"):
        parser.check_outputs([*outputs, TensorSpec("zloc", (1, 8, 2), np.dtype(np.float32))])
    scores = np.full((1, 8), 0.01, np.float32)
    scores[0, 5] = 0.93
    result = parser.parse({"angle": np.array([[0.1]]), "throttle": np.array([[0.2]]), "zloc": scores}, SETTINGS)
    assert isinstance(result, LocalizedSteering) and isinstance(result, SteeringPrediction)
    assert (result.angle, result.throttle, result.location) == pytest.approx((0.1, 0.2, 5))
    assert result.location_score == pytest.approx(0.93)
    scores[0, 2] = np.nan
    result = parser.parse({"angle": np.array([[0.1]]), "throttle": np.array([[0.2]]), "zloc": scores}, SETTINGS)
    assert result.location == -1 and math.isnan(result.location_score)
    categorical = make_parser("steering_categorical", tensors={"angle": "a", "throttle": "t", "location": "zloc"})
    result = categorical.parse({"a": one_hot(15, 7), "t": one_hot(20, 0), "zloc": one_hot(4, 3)}, SETTINGS)
    assert (result.angle, result.throttle, result.location) == pytest.approx((0.0, 0.0, 3))
