"""Exception types of trt_perception.

Every message names the offending value, what was expected, and the fix, so a user on a car can act on one
log line. All types derive from ``TrtPerceptionError``; those caused by bad input also derive from
``ValueError`` so callers that only know the standard library can still catch them.
"""

from __future__ import annotations


class TrtPerceptionError(Exception):
    """Base class of every error this package raises on purpose."""


class SpecError(TrtPerceptionError, ValueError):
    """A model spec is missing, malformed, or does not match its model."""


class ImageError(TrtPerceptionError, ValueError):
    """An image message cannot be decoded (bad encoding, size, step or data)."""


class OutputError(TrtPerceptionError, ValueError):
    """A model's output on one frame does not have the shape, dtype or values its output format expects
    (dynamic shapes, NaN counts, wrong row widths): that frame is refused, the next one may be fine."""


class BackendError(TrtPerceptionError):
    """A backend cannot be created or run (missing runtime, provider, plugin or file)."""


class EngineMismatchError(BackendError):
    """A serialized engine was built for another TensorRT version or GPU than the one running."""


class ConfigError(TrtPerceptionError, ValueError):
    """A parameter (node param, params YAML, CLI flag) has a value that cannot be used."""


class BagError(TrtPerceptionError, ValueError):
    """A rosbag2 recording cannot be read or written as asked (missing topic, unknown type, bad file)."""


class BuildError(TrtPerceptionError):
    """An engine build or model conversion failed."""
