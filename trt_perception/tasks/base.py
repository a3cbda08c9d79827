"""The task interface: everything a head does after its parser, in one object per head.

A parser (``outputs/``) turns a model's tensors into a raw result in MODEL-INPUT pixels; the head's task
turns that into the result users see (source-image pixels, labels, a safe drive command), and says which
ROS messages carry it, how it looks on an overlay image, and what it adds to /diagnostics. The node, replay
and infer call these methods for every head and never name a task.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from trt_perception.params import ParamDef
from trt_perception.preprocess import ImageTransform
from trt_perception.spec import ModelSpec

Clock = Callable[[], float]


@dataclass
class HeadOutput:
    """One head's result for one frame. ``command`` is set by a head that drives (steering)."""

    head: str
    task: str
    result: Any  # Detections | Classification | SegmentationMask | SteeringPrediction
    command: Any = None  # DriveCommand
    timings: Dict[str, float] = field(default_factory=dict)


@dataclass
class ModelInputs:
    """What a task feeds its model besides the camera frame, for one frame (``Task.model_inputs``).

    ``arrays``: model input name -> array, the task's own buffers allocated once and filled in place (memory,
    IMU, behavior one-hot). ``epoch``: the task bumps it when it starts afresh (stop, disable, the clock
    jumping back); a model fed a frame sequence (``input.sequence``) restarts its sequence when it changes.
    """

    arrays: Dict[str, np.ndarray] = field(default_factory=dict)
    epoch: int = 0


@dataclass(frozen=True)
class Topic:
    """An output topic of a head: ``role`` (what the task calls it), relative ``name`` (so the node's
    namespace and remapping apply), message type by ``messages.MESSAGE_CLASSES`` short name, and whether it
    is an overlay image (drawn only while someone subscribes; never written to bags)."""

    role: str
    name: str
    type: str
    overlay: bool = False


class Task(abc.ABC):
    """One head's task logic. Constructed once per head with its spec and its params (relative names).

    ``apply`` takes changed live params between frames (the node's worker calls it, so a frame never sees
    half a change). Subclasses set ``name``, ``PARAMS`` and implement ``finish``, ``topics``, ``messages``.
    """

    name: ClassVar[str] = ""
    PARAMS: ClassVar[Tuple[ParamDef, ...]] = ()
    drives: ClassVar[bool] = False  # publishes drive commands (at most one such head per node)

    def __init__(
        self, head: str, spec: ModelSpec, values: Mapping[str, Any], clock: Optional[Clock] = None
    ) -> None:
        self.head = head
        self.spec = spec
        self.values: Dict[str, Any] = dict(values)
        self.clock = clock

    # ---------------------------------------------------------------------------------------- params

    @classmethod
    def check_values(cls, head: str, values: Mapping[str, Any]) -> Optional[str]:
        """Why a set of this task's params (relative names) does not fit together, or None."""
        return None

    def check_change(self, values: Mapping[str, Any]) -> Optional[str]:
        """Why new live values cannot apply to THIS model (e.g. a class label it lacks), or None."""
        return None

    def apply(self, values: Mapping[str, Any]) -> None:
        """Take new param values (relative names; the whole set, not only the changed ones)."""
        self.values = dict(values)

    @property
    def settings(self) -> Any:
        """The parser's run-time settings (``DetectionSettings``...), or None."""
        return None

    # ------------------------------------------------------------------------------------- per frame

    def model_inputs(self, now: float) -> Optional[ModelInputs]:
        """The model's inputs besides the frame for the frame about to run at ``now`` (None: the image only).
        Called by ``Head.run`` before the model runs, on the worker thread."""
        return None

    @abc.abstractmethod
    def finish(self, parsed: Any, transform: ImageTransform, now: float) -> HeadOutput:
        """A parser's raw result -> this head's output in source-image terms."""

    # ------------------------------------------------------------------------------------ subscriptions

    def accepts_topics(self) -> List[Tuple[str, str]]:
        """Topics this task reads besides the camera: (topic name, ``messages.MESSAGE_CLASSES`` short type).
        Relative names follow the node's namespace. The node subscribes to them and replay reads them from the
        bag; both hand every message to ``on_message``."""
        return []

    def on_message(self, topic: str, msg: Any, now: float) -> None:
        """One message of an ``accepts_topics`` topic (rclpy or rosbags object), received at ``now`` (seconds on
        the node's clock, the bag time in replay). Any thread; must be quick."""
        return None

    # ------------------------------------------------------------------------------------- messages

    @abc.abstractmethod
    def topics(self, prefix: str) -> List[Topic]:
        """Output topics; ``prefix`` is '' for the classic heads, '<head>/' otherwise."""

    @abc.abstractmethod
    def messages(self, types: Any, header: Any, output: HeadOutput) -> Iterator[Tuple[str, Any]]:
        """(role, message) pairs to publish for one frame (overlay roles excluded)."""

    def draw(self, canvas: np.ndarray, output: HeadOutput, order: str) -> np.ndarray:
        """Draw this head's result on ``canvas`` (HxWx3 uint8 in ``order``), in place; returns it."""
        return canvas

    def decorate(self, canvas: np.ndarray, output: HeadOutput, order: str) -> np.ndarray:
        """What this head adds to OTHER heads' overlays (the steering gauge); default nothing."""
        return canvas

    @property
    def overlay_enabled(self) -> bool:
        return bool(self.values.get("publish_overlay", False))

    def diagnostics(self, output: Optional[HeadOutput]) -> Dict[str, Any]:
        """Extra /diagnostics values for this head (the last output, or None before the first frame)."""
        return {}

    def close(self) -> None:
        """Release what the task holds (nothing by default)."""
        return None
