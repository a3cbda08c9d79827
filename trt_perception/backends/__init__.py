"""Inference backends behind one small interface (see ``base.Backend``)."""

from trt_perception.backends.base import Backend, TensorSpec, backend_for, open_backend

__all__ = ["Backend", "TensorSpec", "backend_for", "open_backend"]
