"""Reading an ONNX file in the tools (convert, spec, NMS surgery): one place turns every way a path is not an
ONNX model (missing, a folder, empty, truncated, not protobuf) into the package's error naming the file and the
fix. onnx itself would load an empty file as an empty model (then "opset 1", "no inputs") and raise protobuf's
DecodeError on a truncated one. Imports onnx only when called."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Type, Union

from trt_perception.errors import ConfigError, TrtPerceptionError

MODEL_FILES = "a model file (.onnx, or a TensorRT .engine/.plan)"
RECOPY = "re-export or re-copy it (an interrupted download or copy leaves an empty or truncated file)"


def check_model_path(path: Union[str, Path], what: str = "model", error: Type[TrtPerceptionError] = ConfigError,
                     expected: str = "an ONNX model file") -> Path:
    """``path`` is an existing, non-empty file; otherwise ``error`` says which of the three it is not."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a folder; expected {expected}; fix: pass the model file itself")
    if not path.exists():
        raise error(f"{what} {path} does not exist; expected {expected}; fix: check the path (param or flag)")
    if path.stat().st_size == 0:
        raise error(f"{what} {path} is empty (0 bytes); expected {expected}; fix: {RECOPY}")
    return path


def load_onnx(path: Union[str, Path], what: str = "model", error: Type[TrtPerceptionError] = ConfigError,
              weights: bool = True) -> Any:
    """``onnx.load`` of a checked path (``weights`` False: external data stays on disk)."""
    import onnx

    path = check_model_path(path, what, error)
    try:
        model = onnx.load(str(path), load_external_data=weights)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors share no base class
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"{what} {path} is not a readable ONNX model ({type(exc).__name__}: {first}); fix: "
                    f"{RECOPY}") from None
    if model.ir_version == 0 or not model.HasField("graph"):  # bytes protobuf parsed into nothing an exporter writes
        raise error(f"{what} {path} is not an ONNX model (no ir_version or graph in its {path.stat().st_size} "
                    f"bytes); fix: {RECOPY}")
    return model
