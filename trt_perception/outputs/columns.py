"""Which class-score columns may yield detections, for the CPU-decoded formats with a ``[.., C]`` score tensor
(``ssd_raw``, ``boxes_scores``): the background column never, the allow-list (``classes``) when one is set.

One place for both formats so the background check at load time and the per-frame column mask cannot drift."""

from __future__ import annotations

from typing import FrozenSet, Optional, Tuple

import numpy as np

from trt_perception.errors import SpecError
from trt_perception.outputs.checks import known


class ScoreColumns:
    """The column mask for ``(column count, allow-list)``, cached: both change rarely (a live ``classes``
    param, a dynamic class count), while the mask is read every frame. Key and mask are one tuple, replaced
    whole, so threads parsing at once (replay's helpers) never see one without the other."""

    def __init__(self, background_class: Optional[int]) -> None:
        self.background_class = background_class
        self._cached: Tuple[Optional[Tuple[int, Optional[FrozenSet[int]]]], np.ndarray] = (None, np.zeros((0,), bool))

    def check(self, scores_name: str, classes: Optional[int]) -> None:
        """Load time: the background column must exist in the model's score tensor (when its size is known)."""
        background = self.background_class
        if background is not None and known(classes) and background >= int(classes):  # type: ignore[arg-type]
            raise SpecError(
                f"output.background_class is {background} but model output {scores_name!r} has "
                f"{classes} score columns; fix: set background_class to a column index or null"
            )

    def __call__(self, classes: int, allowed: Optional[FrozenSet[int]]) -> np.ndarray:
        """A bool per column: True where a detection of that class may come out."""
        key = (classes, allowed)
        cached_key, ok = self._cached
        if key != cached_key:
            ok = np.ones(classes, bool)
            if self.background_class is not None and self.background_class < classes:
                ok[self.background_class] = False
            if allowed is not None:
                ok &= np.isin(np.arange(classes), np.fromiter(allowed, np.int64))
            self._cached = (key, ok)
        return ok
