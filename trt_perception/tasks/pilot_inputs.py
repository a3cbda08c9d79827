"""A steering pilot's inputs besides the camera frame, as the spec's ``inputs`` section describes them.

One object per steering head holds every extra input's array (allocated once, filled in place, handed to the
model through ``Task.model_inputs``) and the state behind it, each source reproducing DonkeyCar (citations to
autorope/donkeycar at commit cde8bbe9):

- ``memory`` (KerasMemory, parts/keras.py:358-448): the pilot's own last n raw (angle, throttle) outputs, oldest
  first, ``[a0, t0, ..., a(n-1), t(n-1)]``, started as ``[0.0, mem_start_speed]`` x n (keras.py:369-374; the
  drive loop never sets mem_start_speed, so 0.0), and after every inference the oldest pair dropped and the
  model's raw outputs appended (keras.py:408-411). Here it also restarts when the pilot does (a stop, the
  enable switch, the clock jumping back): DonkeyCar keeps it while the pilot does not run, and a memory of
  a drive before a stop describes a car that is no longer moving.
- ``imu`` (KerasIMU, keras.py:481-537): the latest sensor_msgs/Imu, its ``fields`` times ``scale`` (default:
  DonkeyCar's acl_x, acl_y, acl_z, gyr_x, gyr_y, gyr_z - keras.py:487 - in m/s^2 and deg/s, the units its
  MPU6050/MPU9250 part reads, parts/imu.py:70-89). Older than ``max_age`` (or none yet) = a stop.
- ``behavior`` (KerasBehavioral, keras.py:540-576 with parts/behavior.py): a one-hot vector over the labels,
  starting at the default (BehaviorPart starts at state 0, behavior.py:12-16), set by a std_msgs/String
  naming a label (the names DonkeyCar's BEHAVIOR_LIST uses, so an index mix-up cannot pick the wrong lane) or
  by the head's ``behavior`` param.

Threads: ``on_message`` runs in subscription callbacks; it writes a staging copy under a lock and the worker
copies it into the model's array before each frame, so a frame never sees half of two IMU messages.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from trt_perception.safety import REASON_STALE_INPUT
from trt_perception.spec import ExtraInput, ModelSpec
from trt_perception.tasks.base import ModelInputs

IMU_TYPE = "Imu"  # messages.MESSAGE_CLASSES short names
BEHAVIOR_TYPE = "String"


class MemoryInput:
    """DonkeyCar KerasMemory's ``mem_in``: the last n raw outputs, oldest first."""

    def __init__(self, spec: ExtraInput) -> None:
        self.spec = spec
        self.array = np.empty((1, spec.size), np.float32)
        self.reset()

    def reset(self) -> None:
        self.array[0, 0::2] = self.spec.start[0]
        self.array[0, 1::2] = self.spec.start[1]

    def push(self, angle: float, throttle: float) -> None:
        row = self.array[0]
        row[:-2] = row[2:]  # numpy copies overlapping slices correctly; popleft + append of keras.py:410-411
        row[-2] = angle
        row[-1] = throttle


class ImuInput:
    """KerasIMU's ``imu_in``: the latest sensor_msgs/Imu fields, scaled, with its age."""

    def __init__(self, spec: ExtraInput) -> None:
        self.spec = spec
        self.array = np.zeros((1, spec.size), np.float32)
        self._staging = np.zeros(spec.size, np.float64)
        self._paths = [tuple(field.split(".")) for field in spec.fields]
        self._scale = np.asarray(spec.scale, np.float64)
        self._lock = threading.Lock()
        self.received_at: Optional[float] = None
        self.messages = 0
        self.bad_messages = 0
        self.last_problem = ""

    def on_message(self, msg: Any, now: float) -> None:
        try:
            values = [float(getattr(getattr(msg, group), axis)) for group, axis in self._paths]
        except (AttributeError, TypeError, ValueError) as exc:
            self.bad_messages += 1
            self.last_problem = f"{type(msg).__name__} on {self.spec.topic!r} is not a sensor_msgs/Imu ({exc})"
            return
        with self._lock:
            self._staging[:] = values
            self._staging *= self._scale
            self.received_at = now
            self.messages += 1

    def fill(self) -> None:
        with self._lock:
            self.array[0] = self._staging

    def invalidate(self) -> None:
        """Forget the last message (the clock jumped back: its age no longer means anything)."""
        with self._lock:
            self.received_at = None

    def stale(self, now: float) -> Optional[str]:
        """Why the IMU input is too old to drive on at ``now``, or None."""
        received = self.received_at
        where = f"{self.spec.name}: no sensor_msgs/Imu on {self.spec.topic!r}"
        if received is None:
            return f"{REASON_STALE_INPUT}: {where} yet"
        age = now - received
        if age > self.spec.max_age:
            return f"{REASON_STALE_INPUT}: {where} for {age:.2f} s (max_age {self.spec.max_age:g} s)"
        return None


class BehaviorInput:
    """KerasBehavioral's ``xbehavior_in``: one-hot over the labels."""

    def __init__(self, spec: ExtraInput) -> None:
        self.spec = spec
        self.array = np.zeros((1, spec.size), np.float32)
        self._lock = threading.Lock()
        self._staging = np.zeros(spec.size, np.float32)
        self.active = spec.default
        self.unknown = 0
        self.last_problem = ""
        self.set(spec.default)

    def set(self, label: str) -> Optional[str]:
        """Switch to ``label``; returns why not (unknown label) or None."""
        if label not in self.spec.labels:
            self.unknown += 1
            self.last_problem = (
                f"behavior {label!r} on {self.spec.topic!r} is not one of {list(self.spec.labels)} "
                f"(inputs.{self.spec.name}.labels); kept {self.active!r}"
            )
            return self.last_problem
        with self._lock:
            self._staging[:] = 0.0
            self._staging[self.spec.labels.index(label)] = 1.0
            self.active = label
        return None

    def on_message(self, msg: Any, now: float) -> None:
        data = getattr(msg, "data", None)
        if not isinstance(data, str):
            self.unknown += 1
            self.last_problem = f"{type(msg).__name__} on {self.spec.topic!r} is not a std_msgs/String"
            return
        self.set(data.strip())

    def fill(self) -> None:
        with self._lock:
            self.array[0] = self._staging


class PilotInputs:
    """Every extra input of one steering head (see the module docstring)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.memory: Optional[MemoryInput] = None
        self.imu: Optional[ImuInput] = None
        self.behavior: Optional[BehaviorInput] = None
        for extra in spec.inputs:
            if extra.source == "memory":
                self.memory = MemoryInput(extra)
            elif extra.source == "imu":
                self.imu = ImuInput(extra)
            else:
                self.behavior = BehaviorInput(extra)
        parts = [p for p in (self.memory, self.imu, self.behavior) if p is not None]
        self.model_inputs = ModelInputs({p.spec.name: p.array for p in parts})
        self._topics: Dict[str, Any] = {p.spec.topic: p for p in (self.imu, self.behavior) if p is not None}
        self.sequence = spec.input.sequence > 0
        self._seen_resets = 0
        self._last_now: Optional[float] = None
        self.restarts = 0

    @property
    def needed(self) -> bool:
        """Whether the head needs this object at all (extra inputs or a frame sequence to restart)."""
        return bool(self.model_inputs.arrays) or self.sequence

    def accepts_topics(self) -> List[Tuple[str, str]]:
        topics = []
        if self.imu is not None:
            topics.append((self.imu.spec.topic, IMU_TYPE))
        if self.behavior is not None:
            topics.append((self.behavior.spec.topic, BEHAVIOR_TYPE))
        return topics

    def on_message(self, topic: str, msg: Any, now: float) -> None:
        part = self._topics.get(topic)
        if part is None and topic.startswith("/"):
            part = self._topics.get(topic.lstrip("/"))  # the node may report the resolved (absolute) name
        if part is not None:
            part.on_message(msg, now)

    # ------------------------------------------------------------------------------------- per frame

    def restart(self) -> None:
        """The pilot starts afresh: memory back to its start values, the frame sequence refilled."""
        if self.memory is not None:
            self.memory.reset()
        self.model_inputs.epoch += 1
        self.restarts += 1

    def follow(self, resets: int, restart: bool = True) -> None:
        """Restart when the safety layer did (any thread bumps ``PilotSafety.resets``; read here, the worker).
        ``restart=False`` takes note without restarting (a reset this frame already accounted for)."""
        if resets != self._seen_resets:
            self._seen_resets = resets
            if restart:
                self.restart()

    def before_frame(self, now: float, resets: int) -> ModelInputs:
        """The arrays for the frame about to run: restarts first, then the latest IMU and behavior copied in."""
        self.follow(resets)
        if self._last_now is not None and now < self._last_now:  # a looping bag on sim time
            self.restart()
            if self.imu is not None:
                self.imu.invalidate()
        self._last_now = now
        if self.imu is not None:
            self.imu.fill()
        if self.behavior is not None:
            self.behavior.fill()
        return self.model_inputs

    def after_frame(self, angle: float, throttle: float) -> None:
        """Feed the model's raw outputs back into the memory (DonkeyCar does after every inference)."""
        if self.memory is not None:
            self.memory.push(angle, throttle)

    def stale(self, now: float) -> Optional[str]:
        if self.imu is not None:
            return self.imu.stale(now)
        return None

    def diagnostics(self, now: Optional[float]) -> Dict[str, Any]:
        values: Dict[str, Any] = {"pilot_input_restarts": self.restarts}
        if self.memory is not None:
            values["memory"] = " ".join(f"{v:.3f}" for v in self.memory.array[0])
        if self.imu is not None:
            imu = self.imu
            received = imu.received_at
            values["imu_messages"] = imu.messages
            values["imu_age_s"] = "none yet" if received is None or now is None else f"{now - received:.3f}"
            if imu.bad_messages:
                values["imu_bad_messages"] = f"{imu.bad_messages} ({imu.last_problem})"
        if self.behavior is not None:
            values["behavior"] = self.behavior.active
            if self.behavior.unknown:
                values["behavior_rejected"] = f"{self.behavior.unknown} ({self.behavior.last_problem})"
        return values
