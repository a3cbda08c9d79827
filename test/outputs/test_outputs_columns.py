"""ScoreColumns: the one column mask ssd_raw and boxes_scores share (background never, allow-list when set)."""

from __future__ import annotations

import numpy as np
import pytest

from trt_perception.errors import SpecError
from trt_perception.outputs.columns import ScoreColumns


def test_background_and_allow_list_and_cache() -> None:
    columns = ScoreColumns(0)
    assert columns(4, None).tolist() == [False, True, True, True]
    assert columns(4, frozenset({0, 2})).tolist() == [False, False, True, False]
    mask = columns(4, frozenset({0, 2}))
    assert columns(4, frozenset({0, 2})) is mask  # same key: the cached array, no per-frame allocation
    assert ScoreColumns(None)(3, None).tolist() == [True, True, True]
    assert ScoreColumns(5)(3, None).dtype == np.bool_  # a background past a dynamic class count: ignored


def test_background_outside_the_score_tensor_is_a_spec_error() -> None:
    ScoreColumns(0).check("scores", None)  # dynamic class count: checked per frame instead
    with pytest.raises(SpecError, match=r"background_class is 3 but model output 'scores' has 3 score columns"):
        ScoreColumns(3).check("scores", 3)
