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


@pytest.fixture(scope="module")
def batch_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models`` with a dynamic batch dimension: replay runs consecutive frames through them as one batch."""
    folder = tmp_path_factory.mktemp("batch_models")
    grid_detector(folder, resize="stretch", batch="N")
    brightness_pilot(folder, batch="N")
    return folder


@pytest.fixture
def without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """As without matplotlib (and faster): no plot drawn, in this process or in a plot process (which a fresh
    interpreter would draw whatever this one's patches say)."""
    from trt_perception.tools import plot_process, report

    monkeypatch.setattr(report, "_pyplot", lambda: None)
    monkeypatch.setattr(plot_process, "start_plot_process", lambda wanted: None)
