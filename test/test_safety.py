"""PilotSafety: clamps, NaN stops, throttle modes, smoothing/slew, watchdog and enable on a fake clock."""

from __future__ import annotations

import math
import threading

import pytest

from trt_perception.results import SteeringPrediction
from trt_perception.safety import REASON_DISABLED, REASON_NONFINITE, REASON_WATCHDOG, PilotSafety, SafetyConfig


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(clock=None, enabled=True, **cfg) -> PilotSafety:
    return PilotSafety(SafetyConfig(**cfg), clock=clock or FakeClock(), enabled=enabled)


def test_steering_clamped_to_max_steering():
    safety = make(max_steering=0.6)
    cmd = safety.command_from(SteeringPrediction(0.9, 0.1), 100.0)
    assert cmd.steering == pytest.approx(0.6)
    assert not cmd.stop
    assert "clamped" in cmd.reason
    assert safety.command_from(SteeringPrediction(-5.0, 0.1), 100.1).steering == pytest.approx(-0.6)


def test_in_range_command_passes_unchanged():
    cmd = make().command_from(SteeringPrediction(0.25, 0.3), 1.0)
    assert (cmd.steering, cmd.throttle, cmd.stop, cmd.reason) == (0.25, 0.3, False, "")


@pytest.mark.parametrize("angle, throttle", [(math.nan, 0.2), (0.1, math.inf), (-math.inf, math.nan)])
def test_non_finite_output_stops_and_counts_an_error(angle, throttle):
    safety = make()
    cmd = safety.command_from(SteeringPrediction(angle, throttle), 1.0)
    assert cmd.stop and cmd.steering == 0.0 and cmd.throttle == 0.0
    assert cmd.reason.startswith(REASON_NONFINITE)
    assert safety.error_count == 1
    assert safety.last_error is not None and REASON_NONFINITE in safety.last_error


def test_throttle_modes():
    capped = make(throttle_mode="capped", max_throttle=0.4, min_throttle=0.1)
    assert capped.command_from(SteeringPrediction(0, 0.9), 1).throttle == pytest.approx(0.4)
    assert capped.command_from(SteeringPrediction(0, -0.5), 2).throttle == pytest.approx(0.1)
    assert capped.command_from(SteeringPrediction(0, 0.25), 3).throttle == pytest.approx(0.25)
    model = make(throttle_mode="model", max_throttle=0.4)
    assert model.command_from(SteeringPrediction(0, 0.9), 1).throttle == pytest.approx(0.9)
    assert model.command_from(SteeringPrediction(0, 1.7), 2).throttle == pytest.approx(1.0)
    constant = make(throttle_mode="constant", constant_throttle=0.3, max_throttle=0.5)
    assert constant.command_from(SteeringPrediction(0, 0.9), 1).throttle == pytest.approx(0.3)
    too_fast = make(throttle_mode="constant", constant_throttle=0.8, max_throttle=0.5)
    assert too_fast.command_from(SteeringPrediction(0, 0.0), 1).throttle == pytest.approx(0.5)


def test_constant_mode_still_stops_on_nan_steering():
    safety = make(throttle_mode="constant", constant_throttle=0.3)
    assert safety.command_from(SteeringPrediction(math.nan, 0.0), 1).stop


def test_invert_steering():
    assert make(invert_steering=True).command_from(SteeringPrediction(0.3, 0), 1).steering == pytest.approx(
        -0.3
    )


def test_smoothing_is_an_ema_of_outputs():
    safety = make(smoothing=0.5)
    assert safety.command_from(SteeringPrediction(1.0, 0), 1.0).steering == pytest.approx(1.0)  # first: as is
    assert safety.command_from(SteeringPrediction(0.0, 0), 1.1).steering == pytest.approx(0.5)
    assert safety.command_from(SteeringPrediction(0.0, 0), 1.2).steering == pytest.approx(0.25)


def test_slew_limit_uses_elapsed_time():
    safety = make(steering_slew_rate=2.0)  # 2.0 per second
    assert safety.command_from(SteeringPrediction(-1.0, 0), 10.0).steering == pytest.approx(-1.0)
    cmd = safety.command_from(SteeringPrediction(1.0, 0), 10.1)  # at most 0.2 in 0.1 s
    assert cmd.steering == pytest.approx(-0.8)
    assert "slew" in cmd.reason
    assert safety.command_from(SteeringPrediction(1.0, 0), 10.6).steering == pytest.approx(0.2)
    assert safety.command_from(SteeringPrediction(1.0, 0), 20.0).steering == pytest.approx(1.0)


def test_clock_jumping_back_restarts_the_filters():
    """A looping bag on sim time: the slew limit must not freeze steering until time catches up."""
    safety = make(steering_slew_rate=1.0, smoothing=0.5)
    safety.command_from(SteeringPrediction(0.0, 0), 5.0)
    assert safety.command_from(SteeringPrediction(1.0, 0), 4.0).steering == pytest.approx(1.0)
    assert safety.command_from(SteeringPrediction(1.0, 0), 4.1).steering == pytest.approx(1.0)


def test_watchdog_after_clock_jumps_back():
    safety = make(watchdog_timeout=0.5, clock=FakeClock(0.0))
    safety.command_from(SteeringPrediction(0, 0), 100.0)
    assert safety.check_watchdog(10.0) is None  # back in time: counts from 10.0
    assert safety.check_watchdog(10.4) is None
    assert safety.check_watchdog(10.6) is not None


def test_restart_watchdog_when_sim_time_starts():
    safety = make(watchdog_timeout=0.5, clock=FakeClock(0.0))  # created before /clock: time 0
    safety.restart_watchdog(1.7e9)
    assert safety.check_watchdog(1.7e9 + 0.4) is None
    assert safety.check_watchdog(1.7e9 + 0.6) is not None


def test_filters_reset_after_a_stop():
    safety = make(steering_slew_rate=1.0)
    safety.command_from(SteeringPrediction(-1.0, 0), 1.0)
    safety.command_from(SteeringPrediction(math.nan, 0), 1.1)
    assert safety.command_from(SteeringPrediction(1.0, 0), 1.2).steering == pytest.approx(1.0)


def test_watchdog_fires_once_then_holds_until_frames_return():
    clock = FakeClock(0.0)
    safety = make(clock=clock, watchdog_timeout=0.5)
    assert safety.check_watchdog(0.4) is None  # counts from construction
    stop = safety.check_watchdog(0.6)
    assert stop is not None and stop.stop and stop.reason.startswith(REASON_WATCHDOG)
    assert safety.watchdog_fired
    assert safety.check_watchdog(0.7) is None
    assert safety.check_watchdog(5.0) is None
    safety.command_from(SteeringPrediction(0.1, 0.2), 5.1)  # frames return
    assert not safety.watchdog_fired
    assert safety.check_watchdog(5.5) is None
    again = safety.check_watchdog(5.7)
    assert again is not None and again.stop


def test_watchdog_uses_injected_clock_when_now_is_omitted():
    clock = FakeClock(10.0)
    safety = make(clock=clock, watchdog_timeout=1.0)
    safety.command_from(SteeringPrediction(0, 0))
    clock.t = 10.9
    assert safety.check_watchdog() is None
    clock.t = 11.2
    assert safety.check_watchdog() is not None


def test_watchdog_off_with_zero_timeout_and_while_disabled():
    assert make(watchdog_timeout=0.0).check_watchdog(1e9) is None
    disabled = make(enabled=False, watchdog_timeout=0.1)
    assert disabled.check_watchdog(1e9) is None


def test_disable_publishes_stop_and_commands_stay_stops():
    safety = make()
    assert safety.set_enabled(True, 1.0) is None  # already on: nothing to publish
    stop = safety.set_enabled(False, 1.0)
    assert stop is not None and stop.stop and stop.reason == REASON_DISABLED
    assert safety.set_enabled(False, 1.1) is None  # once
    cmd = safety.command_from(SteeringPrediction(0.5, 0.5), 1.2)
    assert cmd.stop and cmd.reason == REASON_DISABLED and cmd.throttle == 0.0
    assert safety.set_enabled(True, 2.0) is None
    assert not safety.command_from(SteeringPrediction(0.5, 0.3), 2.1).stop


def test_enable_restarts_the_watchdog_window():
    safety = make(enabled=False, watchdog_timeout=0.5, clock=FakeClock(0.0))
    safety.set_enabled(True, 100.0)
    assert safety.check_watchdog(100.4) is None
    assert safety.check_watchdog(100.6) is not None


def test_update_config_applies_to_next_frame():
    safety = make(max_steering=1.0)
    safety.update_config(SafetyConfig(max_steering=0.2))
    assert safety.command_from(SteeringPrediction(0.9, 0), 1).steering == pytest.approx(0.2)


def test_stop_command_counts():
    safety = make()
    cmd = safety.stop_command("shutdown")
    assert cmd.stop and cmd.reason == "shutdown" and safety.stop_count == 1


def test_threads_share_one_safety_object():
    safety = make(watchdog_timeout=0.01)
    errors = []

    def frames():
        try:
            for i in range(2000):
                safety.command_from(SteeringPrediction(0.1, 0.1), float(i))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def watchdog():
        for i in range(2000):
            safety.check_watchdog(float(i) + 0.5)

    threads = [threading.Thread(target=frames), threading.Thread(target=watchdog)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_stale_input_hold_is_a_stop_after_the_enable_switch():
    from trt_perception.safety import REASON_STALE_INPUT

    safety = make(smoothing=0.5)
    safety.command_from(SteeringPrediction(0.8, 0.3), 1.0)
    reason = f"{REASON_STALE_INPUT}: imu_in: no sensor_msgs/Imu on 'imu' for 0.40 s (max_age 0.25 s)"
    cmd = safety.command_from(SteeringPrediction(0.8, 0.3), 1.1, hold=reason)
    assert (cmd.steering, cmd.throttle, cmd.stop, cmd.reason) == (0.0, 0.0, True, reason)
    assert safety.input_stop_count == 1 and safety.last_input_stop == reason
    # the filters restarted: no smoothing towards the value before the stop
    assert safety.command_from(SteeringPrediction(-0.4, 0.3), 1.2).steering == pytest.approx(-0.4)
    safety.set_enabled(False, 1.3)
    assert safety.command_from(SteeringPrediction(0.1, 0.1), 1.4, hold=reason).reason == REASON_DISABLED


def test_resets_count_every_fresh_start():
    clock = FakeClock(0.0)
    safety = make(clock=clock, watchdog_timeout=0.5)
    before = safety.resets
    safety.command_from(SteeringPrediction(0.1, 0.1), 1.0)
    safety.command_from(SteeringPrediction(0.1, 0.1), 1.1)
    assert safety.resets == before  # plain frames: no restart
    safety.command_from(SteeringPrediction(0.1, 0.1), 0.5)  # the clock jumped back
    assert safety.resets == before + 1
    safety.command_from(SteeringPrediction(math.nan, 0.1), 0.6)
    assert safety.resets == before + 2
    assert safety.check_watchdog(5.0) is not None and safety.resets == before + 3
    safety.set_enabled(False, 5.1)
    safety.set_enabled(True, 5.2)
    assert safety.resets == before + 5
