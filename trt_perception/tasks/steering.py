"""Steering: an end-to-end pilot (DonkeyCar style) -> a safe drive command on ``cmd_vel`` or ``drive``.

The parser (``steering_linear``/``steering_categorical``) reports what the model said; ``PilotSafety``
(safety.py) turns it into what reaches the motors: clamps, smoothing, slew limit, a NaN stop, the watchdog and
the enable switch. A node runs at most one steering head: two would fight over the car.

Pilots with inputs besides the camera (the spec's ``inputs``: DonkeyCar memory, IMU and behavior pilots) get
them from ``PilotInputs`` (tasks/pilot_inputs.py) through ``model_inputs``; the IMU and behavior topics come in
through ``accepts_topics``/``on_message``. A stale IMU is a stop with its reason. A localizer pilot's track
segment goes out as vision_msgs/Classification on ``location``: it carries the frame's header (stamp and
frame_id, so it pairs with its image in a bag), the segment index as ``class_id`` and its softmax score -
std_msgs/Int32 would carry the index alone, with no stamp.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from trt_perception.params import BOOL, DOUBLE, STRING, ParamDef, live
from trt_perception.preprocess import ImageTransform
from trt_perception.results import Classification, DriveCommand, SteeringPrediction
from trt_perception.safety import (
    PILOT_FIELDS,
    REASON_DISABLED,
    SAFETY_FIELDS,
    PilotConfig,
    PilotSafety,
    SafetyConfig,
)
from trt_perception.tasks.base import HeadOutput, ModelInputs, Task, Topic
from trt_perception.tasks.pilot_inputs import PilotInputs


class SteeringTask(Task):
    name = "steering"
    drives = True
    PARAMS = (
        ParamDef(
            "output",
            "twist",
            STRING,
            "twist = geometry_msgs/Twist on cmd_vel; ackermann = ackermann_msgs/AckermannDriveStamped on drive",
            choices=("twist", "ackermann"),
        ),
        live(
            "drive_enabled",
            False,
            BOOL,
            "send drive commands; turning it off publishes one stop (also: service ~/set_enabled)",
        ),
        live(
            "steering_scale",
            1.0,
            DOUBLE,
            "Twist angular.z (rad/s) at full steering; steering +1 (right) gives angular.z = -scale (REP 103)",
            range=(0.0, 100.0),
        ),
        live("throttle_scale", 1.0, DOUBLE, "Twist linear.x (m/s) at full throttle", range=(0.0, 100.0)),
        live(
            "max_steering_angle",
            0.35,
            DOUBLE,
            "Ackermann steering_angle (rad) at full steering; steering +1 (right) gives -angle (REP 103)",
            range=(0.0, 1.6),
        ),
        live("max_speed", 1.0, DOUBLE, "Ackermann speed (m/s) at full throttle", range=(0.0, 100.0)),
        live("max_steering", 1.0, DOUBLE, "steering is clamped to [-max_steering, max_steering]", range=(0.0, 1.0)),
        live("max_throttle", 0.5, DOUBLE, "upper throttle limit (capped and constant modes)", range=(-1.0, 1.0)),
        live(
            "min_throttle",
            0.0,
            DOUBLE,
            "lower throttle limit (capped and constant modes); negative allows reverse",
            range=(-1.0, 1.0),
        ),
        live(
            "throttle_mode",
            "capped",
            STRING,
            "capped = model throttle clamped to [min_throttle, max_throttle]; model = model throttle as is "
            "(only clamped to [-1, 1]); constant = constant_throttle (clamped to the limits)",
            choices=("model", "constant", "capped"),
        ),
        live("constant_throttle", 0.2, DOUBLE, "throttle used in constant mode", range=(-1.0, 1.0)),
        live(
            "steering_slew_rate",
            0.0,
            DOUBLE,
            "largest steering change per second (full range is 2.0); 0 = no limit",
            range=(0.0, 1000.0),
        ),
        live(
            "smoothing",
            0.0,
            DOUBLE,
            "steering EMA weight of the previous value (0 = off, 0.9 = heavy smoothing)",
            range=(0.0, 0.99),
        ),
        live(
            "watchdog_timeout",
            0.5,
            DOUBLE,
            "no processed frame for this many seconds (ROS clock) -> publish one stop; 0 = off",
            range=(0.0, 60.0),
        ),
        live("invert_steering", False, BOOL, "flip the steering sign (a model trained mirrored)"),
        live(
            "behavior",
            "",
            STRING,
            "behavior pilots (spec inputs source behavior): the active behavior by name, e.g. Left_Lane; "
            "'' = the spec's default; a std_msgs/String on the behavior topic switches it too",
        ),
    )

    def __init__(self, head: str, spec: Any, values: Mapping[str, Any], clock: Any = None) -> None:
        super().__init__(head, spec, values, clock)
        self.pilot = self.pilot_config(self.values)
        kwargs = {"clock": clock} if clock is not None else {}
        self.safety = PilotSafety(self.pilot.safety, enabled=self.pilot.drive_enabled, **kwargs)
        inputs = PilotInputs(spec)
        self.inputs: Optional[PilotInputs] = inputs if inputs.needed else None
        self._last_now: Optional[float] = None
        self._apply_behavior(self.values.get("behavior", ""))

    @staticmethod
    def pilot_config(values: Mapping[str, Any]) -> PilotConfig:
        """PilotConfig (message scales + SafetyConfig) from this head's params; defaults where unset."""
        defaults = {p.name: p.default for p in SteeringTask.PARAMS}
        merged = {**defaults, **{k: v for k, v in values.items() if k in defaults}}
        safety = SafetyConfig(**{name: merged[name] for name in SAFETY_FIELDS})
        return PilotConfig(safety=safety, **{name: merged[name] for name in PILOT_FIELDS})

    @classmethod
    def check_values(cls, head: str, values: Mapping[str, Any]) -> Optional[str]:
        lo, hi = values.get("min_throttle"), values.get("max_throttle")
        if lo is not None and hi is not None and lo > hi:
            return (
                f"{head}.min_throttle ({lo:g}) is above {head}.max_throttle ({hi:g}); "
                "expected min_throttle <= max_throttle"
            )
        return None

    def check_change(self, values: Mapping[str, Any]) -> Optional[str]:
        behavior = values.get("behavior", "")
        if not behavior:
            return None
        part = self.inputs.behavior if self.inputs is not None else None
        if part is None:
            return (f"{self.head}.behavior is {behavior!r} but model {self.spec.name or self.spec.source} takes no "
                    "behavior input (spec inputs with source: behavior); expected ''")
        if behavior not in part.spec.labels:
            return f"{self.head}.behavior is {behavior!r}; expected one of {list(part.spec.labels)} (or '')"
        return None

    def apply(self, values: Mapping[str, Any]) -> None:
        """New limits apply at once (PilotSafety is thread-safe); the enable switch is ``set_enabled``."""
        before = self.values.get("behavior", "")
        super().apply(values)
        self.pilot = self.pilot_config(self.values)
        self.safety.update_config(self.pilot.safety)
        if self.values.get("behavior", "") != before:
            self._apply_behavior(self.values.get("behavior", ""))

    def _apply_behavior(self, name: str) -> None:
        if self.inputs is not None and self.inputs.behavior is not None:
            part = self.inputs.behavior
            part.set(name or part.spec.default)

    def set_enabled(self, flag: bool, now: float) -> Optional[DriveCommand]:
        """Switch driving on/off; switching off returns the one stop to publish."""
        return self.safety.set_enabled(flag, now)

    # ------------------------------------------------------------------------------------- per frame

    def model_inputs(self, now: float) -> Optional[ModelInputs]:
        """Memory/IMU/behavior arrays (and the sequence epoch) for the frame about to run at ``now``."""
        if self.inputs is None:
            return None
        return self.inputs.before_frame(now, self.safety.resets)

    def finish(self, parsed: SteeringPrediction, transform: ImageTransform, now: float) -> HeadOutput:
        inputs = self.inputs
        if inputs is None:
            return HeadOutput(self.head, self.name, parsed, command=self.safety.command_from(parsed, now))
        self._last_now = now
        inputs.after_frame(parsed.angle, parsed.throttle)  # raw outputs, before any limit (keras.py:408-411)
        command = self.safety.command_from(parsed, now, hold=inputs.stale(now))
        # A stop (disabled, stale input, NaN) restarts the inputs now, after this frame's outputs went in; the
        # safety layer's other reset, the clock jumping back, was already handled before the frame ran.
        inputs.follow(self.safety.resets, restart=command.stop)
        return HeadOutput(self.head, self.name, parsed, command=command)

    # ------------------------------------------------------------------------------------ subscriptions

    def accepts_topics(self) -> List[Tuple[str, str]]:
        """The IMU (sensor_msgs/Imu) and behavior (std_msgs/String) topics of the spec's inputs."""
        return self.inputs.accepts_topics() if self.inputs is not None else []

    def on_message(self, topic: str, msg: Any, now: float) -> None:
        if self.inputs is not None:
            self.inputs.on_message(topic, msg, now)

    # ------------------------------------------------------------------------------------- messages

    @property
    def localizes(self) -> bool:
        """A localizer pilot: the spec maps a ``location`` output."""
        return "location" in self.spec.output.tensors

    def topics(self, prefix: str) -> List[Topic]:
        """``cmd_vel``/``drive`` without a head prefix: the car has one command topic; a localizer adds
        ``<prefix>location`` (vision_msgs/Classification)."""
        if self.pilot.output == "ackermann":
            topics = [Topic("command", "drive", "AckermannDriveStamped")]
        else:
            topics = [Topic("command", "cmd_vel", "Twist")]
        if self.localizes:
            topics.append(Topic("location", f"{prefix}location", "Classification"))
        return topics

    def messages(self, types: Any, header: Any, output: HeadOutput) -> Iterator[Tuple[str, Any]]:
        """The frame's command; per-frame 'disabled' stops are not sent (others, e.g. teleop, may drive).
        A localizer's segment is sent every frame it is known, driving or not."""
        command = output.command
        if self.localizes:
            location = int(getattr(output.result, "location", -1))
            if location >= 0:
                yield "location", self.location_message(types, header, output.result)
        if command is None or (command.stop and command.reason == REASON_DISABLED):
            return
        yield "command", self.command_message(types, header, command)

    @staticmethod
    def location_message(types: Any, header: Any, result: Any) -> Any:
        from trt_perception.messages import classification_message

        location = int(result.location)
        found = Classification(np.array([location], np.int64), np.array([result.location_score], np.float32),
                               [str(location)])
        return classification_message(types, header, found)

    def command_message(self, types: Any, header: Any, command: DriveCommand) -> Any:
        from trt_perception.messages import drive_message

        return drive_message(types, header, command, self.pilot)

    def decorate(self, canvas: np.ndarray, output: HeadOutput, order: str) -> np.ndarray:
        from trt_perception.overlay import draw_steering

        return draw_steering(canvas, output.result.angle, output.result.throttle, order, out=canvas)

    def diagnostics(self, output: Optional[HeadOutput]) -> Dict[str, Any]:
        safety = self.safety
        values: Dict[str, Any] = {
            "drive_enabled": safety.enabled,
            "watchdog": "stopped (no frames)" if safety.watchdog_fired else "ok",
            "nonfinite_outputs": safety.error_count,
        }
        if self.inputs is not None:
            values["stale_input_stops"] = safety.input_stop_count
            if safety.last_input_stop:
                values["last_stale_input"] = safety.last_input_stop
            values.update(self.inputs.diagnostics(self._last_now))
        if self.localizes and output is not None:
            values["location"] = int(getattr(output.result, "location", -1))
        return values
