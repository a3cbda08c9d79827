"""The backend interface every inference runtime implements, and the registry that picks one.

Kept small on purpose (as Polygraphy's runners are): I/O descriptions, ``infer``, ``warmup``, ``close``.
Backends are imported lazily by name, so importing this module never pulls in onnxruntime or TensorRT.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Type, Union

import numpy as np

from trt_perception.errors import BackendError


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (None for a dynamic dimension) and numpy dtype."""

    name: str
    shape: Tuple[Optional[int], ...]
    dtype: np.dtype

    def __str__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} [{dims}] {np.dtype(self.dtype).name}"


class Backend(abc.ABC):
    """Runs one model. ``infer`` may return arrays it reuses: they are valid until the next ``infer``."""

    name: str = "backend"
    # ``infer`` may be called from several threads at once, each with its own feed, and returns arrays of its
    # own (not reused): replay's look-ahead threads infer the next frames while this one finishes the last
    concurrent: bool = False

    def __init__(self) -> None:
        self.inputs: Tuple[TensorSpec, ...] = ()
        self.outputs: Tuple[TensorSpec, ...] = ()

    @abc.abstractmethod
    def infer(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run the model on ``feed`` (input name -> array) and return output name -> array."""

    def input_buffer(self, name: str) -> Optional[np.ndarray]:
        """A host array the preprocessor may fill in place (e.g. pinned memory), or None."""
        return None

    def max_batch(self, name: str) -> Optional[int]:
        """The most frames input ``name`` takes in one ``infer`` when its batch dimension is dynamic; None when
        the runtime sets no limit (ONNX Runtime)."""
        return None

    def warmup(self, iterations: int = 1) -> None:
        """Run the model on zeros so the first real frame does not pay for lazy initialisation."""
        feed = {}
        for spec in self.inputs:
            shape = tuple(1 if d is None else int(d) for d in spec.shape)
            feed[spec.name] = np.zeros(shape, dtype=spec.dtype)
        for _ in range(max(0, iterations)):
            self.infer(feed)

    def describe(self) -> Dict[str, str]:
        """Facts for `inspect` and diagnostics (runtime version, device, providers...)."""
        return {"backend": self.name}

    def close(self) -> None:
        """Release runtime resources; safe to call twice."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# Lazy registry: name -> "module:Class". Suffixes pick the default backend for a model file.
BACKENDS: Dict[str, str] = {
    "onnxruntime": "trt_perception.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "trt_perception.backends.tensorrt:TensorRTBackend",
}
SUFFIX_BACKENDS: Dict[str, str] = {
    ".onnx": "onnxruntime",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".trt": "tensorrt",
    ".bin": "tensorrt",
}


def backend_class(name: str) -> Type[Backend]:
    if name not in BACKENDS:
        raise BackendError(f"backend {name!r} is unknown; expected one of {sorted(BACKENDS)}")
    module_name, _, class_name = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def backend_for(model_path: Union[str, Path], backend: str = "auto") -> str:
    """The backend name for a model file: the one asked for, or the file suffix's default."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise BackendError(f"backend {backend!r} is unknown; expected 'auto' or one of {sorted(BACKENDS)}")
        return backend
    suffix = Path(model_path).suffix.lower()
    if suffix not in SUFFIX_BACKENDS:
        raise BackendError(
            f"cannot tell which backend runs {model_path} (suffix {suffix!r}); expected one of "
            f"{sorted(SUFFIX_BACKENDS)}; fix: rename the file or pass backend explicitly"
        )
    return SUFFIX_BACKENDS[suffix]


def open_backend(model_path: Union[str, Path], backend: str = "auto", **options: Any) -> Backend:
    """Create the backend for ``model_path``; ``options`` go to that backend's constructor."""
    from trt_perception.onnx_file import MODEL_FILES, check_model_path

    path = check_model_path(model_path, "model file", BackendError, MODEL_FILES)
    return backend_class(backend_for(path, backend))(path, **options)
