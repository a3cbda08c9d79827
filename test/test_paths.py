"""paths.py: pkg:// and package:// URLs, ~, and relative paths against the params file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trt_perception import config as cfg
from trt_perception.config import PerceptionConfig
from trt_perception.errors import ConfigError
from trt_perception.params import load_params_file
from trt_perception.paths import resolve_path


def write_params(path: Path, params: dict, node: str = "trt_perception") -> Path:
    path.write_text(yaml.safe_dump({node: {"ros__parameters": params}}), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ paths


def test_paths_resolve_against_the_params_file(tmp_path):
    path = write_params(tmp_path / "p.yaml", {"detector": {"model": "models/d.onnx", "spec": "/abs/d.yaml"}})
    config = PerceptionConfig.from_params(load_params_file(path))
    assert config.head("detector").model.model == str(tmp_path.resolve() / "models" / "d.onnx")
    assert config.head("detector").model.spec == "/abs/d.yaml"
    explicit = PerceptionConfig.from_params({"detector.model": "d.onnx"}, base_dir=tmp_path)
    assert explicit.head("detector").model.model == str(tmp_path / "d.onnx")


def test_pkg_urls():
    package_dir = Path(cfg.__file__).resolve().parent
    assert resolve_path("pkg://trt_perception/data/demo/x.onnx") == package_dir / "data" / "demo" / "x.onnx"
    with pytest.raises(ConfigError, match="not importable"):
        resolve_path("pkg://no_such_package_xyz/a.onnx", param="detector.model")
    with pytest.raises(ConfigError, match="expected pkg://<package>/<path"):
        resolve_path("pkg://trt_perception", param="detector.model")


def test_home_is_expanded():
    assert resolve_path("~/m.onnx") == Path.home() / "m.onnx"


