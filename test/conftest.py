"""Shared test set-up: make test/ importable (``from onnx_factory import ...``, ``from fakes import ...``)."""

from __future__ import annotations

import sys
from pathlib import Path

TEST_DIR = Path(__file__).resolve().parent
if str(TEST_DIR) not in sys.path:
    sys.path.insert(0, str(TEST_DIR))
