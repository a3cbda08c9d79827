"""Paths in params files: ``pkg://`` (a file in an installed Python package), ``package://`` (a ROS share
folder), ``~``, and relative paths against the params file's folder. Imports nothing heavy."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional, Union

from trt_perception.errors import ConfigError

PKG_SCHEME = "pkg://"
PACKAGE_SCHEME = "package://"


def resolve_param_path(value: str, base: Optional[Path], param: str) -> str:
    """``resolve_path`` as text; an empty value stays empty (a param left unset)."""
    if not value:
        return ""
    return str(resolve_path(value, base, param))


def resolve_path(value: str, base: Optional[Union[str, Path]] = None, param: str = "path") -> Path:
    """A model/spec/plugin path from params.

    ``pkg://<python package>/<path>`` -> a file inside an installed Python package (the shipped demo models:
    ``pkg://trt_perception/data/demo/steering.onnx``); ``package://<ros package>/<path>`` -> the package's ROS
    share folder (needs ament_index_python); ``~`` is expanded; a relative path is taken against ``base``.
    """
    text = str(value)
    for scheme in (PKG_SCHEME, PACKAGE_SCHEME):
        if text.startswith(scheme):
            package, _, rest = text[len(scheme) :].partition("/")
            if not package or not rest:
                raise ConfigError(
                    f"{param} is {text!r}; expected {scheme}<package>/<path inside it>, "
                    f"e.g. {PKG_SCHEME}trt_perception/data/demo/detector.onnx"
                )
            root = (
                _python_package_dir(package, param, text)
                if scheme == PKG_SCHEME
                else _share_dir(package, param, text)
            )
            return root / rest
    path = Path(os.path.expanduser(text))
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


def _python_package_dir(package: str, param: str, text: str) -> Path:
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    locations = list(found.submodule_search_locations or []) if found is not None else []
    if not locations:
        raise ConfigError(
            f"{param} is {text!r} but Python package {package!r} is not importable here; "
            "fix: install it or use a file path"
        )
    return Path(locations[0])


def _share_dir(package: str, param: str, text: str) -> Path:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        raise ConfigError(
            f"{param} is {text!r} but package:// needs ROS (ament_index_python); fix: source ROS, or use "
            "pkg://<python package>/<path> or a file path"
        ) from None
    try:
        return Path(get_package_share_directory(package))
    except PackageNotFoundError:
        raise ConfigError(
            f"{param} is {text!r} but ROS package {package!r} is not installed or not sourced; "
            "fix: build and source the workspace that has it"
        ) from None
