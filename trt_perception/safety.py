"""The pilot's safety logic between a steering model and the wheels. Pure Python, clock injected.

A model's output is a suggestion; what reaches the motors is clamped to configured limits, filtered (EMA
smoothing, slew limit), and replaced by a stop when the model says NaN/inf, when frames stop arriving
(watchdog), when an input the pilot needs besides the camera is stale (an IMU that went quiet), or when a
person switches the pilot off. Every such event also restarts the pilot's state: the filters here, and the
task's pilot inputs (DonkeyCar memory, frame sequences) through ``resets``. The node and the replay tool share
this object through ``FrameProcessor``; it is thread-safe because the node's worker, its watchdog timer and its
service callback all touch it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from trt_perception.results import DriveCommand, SteeringPrediction

# Stop reasons (DriveCommand.reason of a stop), stable strings so logs and diagnostics can be grepped.
REASON_NONFINITE = "non-finite model output"
REASON_WATCHDOG = "watchdog"
REASON_DISABLED = "disabled"
REASON_SHUTDOWN = "shutdown"
REASON_STALE_INPUT = "stale pilot input"  # prefix: "stale pilot input: imu_in: no sensor_msgs/Imu ..."


@dataclass(frozen=True)
class SafetyConfig:
    """Limits and filters between the steering model and the wheels (see PilotSafety)."""

    max_steering: float = 1.0
    max_throttle: float = 0.5
    min_throttle: float = 0.0
    throttle_mode: str = "capped"
    constant_throttle: float = 0.2
    steering_slew_rate: float = 0.0
    smoothing: float = 0.0
    watchdog_timeout: float = 0.5
    invert_steering: bool = False


@dataclass(frozen=True)
class PilotConfig:
    """How a drive command becomes a message: Twist or Ackermann, and the scales from [-1, 1] to units."""

    output: str = "twist"
    steering_scale: float = 1.0
    throttle_scale: float = 1.0
    max_steering_angle: float = 0.35
    max_speed: float = 1.0
    drive_enabled: bool = False
    safety: SafetyConfig = SafetyConfig()


SAFETY_FIELDS = tuple(SafetyConfig.__dataclass_fields__)
PILOT_FIELDS = tuple(f for f in PilotConfig.__dataclass_fields__ if f != "safety")


def _clamp(value: float, lo: float, hi: float) -> float:
    return lo if value < lo else hi if value > hi else value


class PilotSafety:
    """Turns ``SteeringPrediction`` into a safe ``DriveCommand``.

    Steering path: invert -> EMA smoothing -> slew limit (per second of ``now``) -> clamp to
    ``max_steering``. Throttle modes: ``capped`` (model throttle clamped to [min_throttle, max_throttle]),
    ``model`` (model throttle, clamped only to [-1, 1]), ``constant`` (``constant_throttle`` clamped to the
    limits). Times are seconds on the caller's clock (the node passes ROS time, so sim time works).
    """

    def __init__(
        self,
        config: SafetyConfig,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._config = config
        self._enabled = bool(enabled)
        self._last_frame = clock()  # the watchdog counts from start until the first frame
        self._watchdog_fired = False
        self._prev_steering: Optional[float] = None
        self._prev_time: Optional[float] = None
        self.error_count = 0  # non-finite model outputs seen
        self.last_error: Optional[str] = None
        self.stop_count = 0  # stop commands produced (all reasons)
        self.input_stop_count = 0  # stops because a pilot input was stale (``hold``)
        self.last_input_stop: Optional[str] = None
        # Bumped whenever the pilot starts afresh (enable, disable, any stop, the clock jumping back): the task
        # compares it to restart its own state (memory, frame sequence), from any thread, without a callback.
        self.resets = 0

    # ------------------------------------------------------------------------------------------ state

    @property
    def config(self) -> SafetyConfig:
        return self._config

    @property
    def enabled(self) -> bool:
        return self._enabled

    def update_config(self, config: SafetyConfig) -> None:
        """New limits/filters from a live parameter change; applies from the next frame on."""
        with self._lock:
            self._config = config

    def stop_command(self, reason: str) -> DriveCommand:
        """A stop (zero steering, zero throttle) carrying why it was issued."""
        self.stop_count += 1
        return DriveCommand(0.0, 0.0, stop=True, reason=reason)

    def set_enabled(self, flag: bool, now: Optional[float] = None) -> Optional[DriveCommand]:
        """Switch the pilot on or off. Turning it off returns the stop to publish; on returns None."""
        now = self._clock() if now is None else now
        with self._lock:
            was = self._enabled
            self._enabled = bool(flag)
            if flag and not was:
                self._reset_filters()
                self._last_frame = now  # give frames a full timeout to arrive
                self._watchdog_fired = False
                return None
            if was and not flag:
                self._reset_filters()
                return self.stop_command(REASON_DISABLED)
            return None

    def _reset_filters(self) -> None:
        self._prev_steering = None
        self._prev_time = None
        self.resets += 1

    # ------------------------------------------------------------------------------------- per frame

    def command_from(
        self, prediction: SteeringPrediction, now: Optional[float] = None, hold: Optional[str] = None
    ) -> DriveCommand:
        """The command for one model prediction at time ``now`` (seconds); feeds the watchdog.

        ``hold``: why this frame must not drive although the model answered (a stale pilot input, stated
        with ``REASON_STALE_INPUT``); it gives a stop carrying that reason, after the enable switch.
        """
        now = self._clock() if now is None else now
        with self._lock:
            self._last_frame = now
            self._watchdog_fired = False
            if not self._enabled:
                self._reset_filters()
                return self.stop_command(REASON_DISABLED)
            if self._prev_time is not None and now < self._prev_time:
                self._reset_filters()  # the clock jumped back (a looping bag on sim time): start afresh
            if hold:
                self._reset_filters()
                self.input_stop_count += 1
                self.last_input_stop = hold
                return self.stop_command(hold)
            angle = float(prediction.angle)
            throttle = float(prediction.throttle)
            if not (math.isfinite(angle) and math.isfinite(throttle)):
                self._reset_filters()
                self.error_count += 1
                self.last_error = f"{REASON_NONFINITE}: angle={angle!r}, throttle={throttle!r}"
                return self.stop_command(self.last_error)
            cfg = self._config
            notes = []
            steering = -angle if cfg.invert_steering else angle
            steering = _clamp(steering, -1.0, 1.0)
            prev = self._prev_steering
            if prev is not None and cfg.smoothing > 0.0:
                steering = cfg.smoothing * prev + (1.0 - cfg.smoothing) * steering
            if prev is not None and cfg.steering_slew_rate > 0.0 and self._prev_time is not None:
                max_step = cfg.steering_slew_rate * max(0.0, now - self._prev_time)
                step = _clamp(steering - prev, -max_step, max_step)
                if step != steering - prev:
                    notes.append("steering slew-limited")
                steering = prev + step
            limit = cfg.max_steering
            if abs(steering) > limit:
                notes.append(f"steering clamped to ±{limit:g}")
                steering = _clamp(steering, -limit, limit)
            self._prev_steering = steering
            self._prev_time = now
            out_throttle = self._throttle(throttle, cfg, notes)
            return DriveCommand(steering, out_throttle, stop=False, reason="; ".join(notes))

    @staticmethod
    def _throttle(model_throttle: float, cfg: SafetyConfig, notes: list) -> float:
        if cfg.throttle_mode == "model":
            value = _clamp(model_throttle, -1.0, 1.0)
            if value != model_throttle:
                notes.append("throttle clamped to [-1, 1]")
            return value
        wanted = cfg.constant_throttle if cfg.throttle_mode == "constant" else model_throttle
        value = _clamp(wanted, cfg.min_throttle, cfg.max_throttle)
        if value != wanted:
            notes.append(f"throttle clamped to [{cfg.min_throttle:g}, {cfg.max_throttle:g}]")
        return value

    # -------------------------------------------------------------------------------------- watchdog

    def check_watchdog(self, now: Optional[float] = None) -> Optional[DriveCommand]:
        """A stop when no frame was processed within ``watchdog_timeout`` - once, then None until frames
        return. None while disabled (a stop was sent when it was switched off) or when the timeout is 0.
        """
        now = self._clock() if now is None else now
        with self._lock:
            timeout = self._config.watchdog_timeout
            if timeout <= 0.0 or not self._enabled or self._watchdog_fired:
                return None
            if now < self._last_frame:  # the clock jumped back (looping bag): count from now
                self._last_frame = now
            if now - self._last_frame <= timeout:
                return None
            self._watchdog_fired = True
            self._reset_filters()
            age = now - self._last_frame
            return self.stop_command(f"{REASON_WATCHDOG}: no frame for {age:.2f} s (timeout {timeout:g} s)")

    def restart_watchdog(self, now: Optional[float] = None) -> None:
        """Count the watchdog window from ``now`` (the node calls this once sim time has started, so the
        jump from 0 to the bag's time is not taken for a long silence)."""
        with self._lock:
            self._last_frame = self._clock() if now is None else now
            self._watchdog_fired = False

    @property
    def watchdog_fired(self) -> bool:
        """True while the watchdog has stopped the car and no frame has come back yet."""
        return self._watchdog_fired
