"""Shared test set-up: make test/ importable (``from onnx_factory import ...``, ``from fakes import ...``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Iterator

import pytest

TEST_DIR = Path(__file__).resolve().parent
if str(TEST_DIR) not in sys.path:
    sys.path.insert(0, str(TEST_DIR))

# Graph surgery (NMS plugin insertion, SSD export finishing) needs onnx-graphsurgeon, which CI installs with the
# test extra but a ROS workspace (`colcon test`) may lack: there those modules skip with the reason, not fail.
NEEDS_GRAPHSURGEON = ("test_tools_nms_surgery.py", "test_tools_convert.py")


def pytest_collection_modifyitems(config: object, items: list) -> None:
    import importlib.util

    if importlib.util.find_spec("onnx_graphsurgeon") is not None:
        return

    skip = pytest.mark.skip(reason="needs onnx-graphsurgeon (pip install onnx-graphsurgeon; CI has it)")
    for item in items:
        if Path(str(item.fspath)).name in NEEDS_GRAPHSURGEON:
            item.add_marker(skip)



@pytest.fixture(autouse=True)
def package_log_propagates() -> Iterator[None]:
    """ROS 2 ``launch`` (imported by launch_testing's pytest plugin under ``colcon test``) installs a logger
    class whose loggers do not propagate, so caplog (listening at the root) would miss the package's lines."""
    logger = logging.getLogger("trt_perception")
    propagate, logger.propagate = logger.propagate, True
    yield
    logger.propagate = propagate
