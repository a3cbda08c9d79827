"""Fixtures shared by the replay/evaluate tests (a module may still define its own of the same name)."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx_factory import brightness_pilot, grid_detector


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid detector (grid.onnx, stretch) and the brightness pilot (pilot.onnx), built once per module."""
    folder = tmp_path_factory.mktemp("models")
    grid_detector(folder, resize="stretch")
    brightness_pilot(folder)
    return folder
