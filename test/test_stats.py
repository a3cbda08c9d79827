"""RollingStats: rates over a time window, per-stage percentiles over a sample window, counters."""

from __future__ import annotations

import numpy as np
import pytest

from trt_perception.stats import RollingStats


def test_rates_over_the_window():
    stats = RollingStats(window=2.0)
    for i in range(41):  # 20 Hz for 2 s
        stats.frame_in(10.0 + i * 0.05)
    for i in range(21):  # 10 Hz
        stats.frame_out(10.0 + i * 0.1, latency=0.05)
    snap = stats.snapshot(12.0)
    assert snap["fps_in"] == pytest.approx(20.0, rel=0.05)
    assert snap["fps_out"] == pytest.approx(10.0, rel=0.05)
    assert snap["frames_in"] == 41 and snap["frames_out"] == 21


def test_rate_decays_when_frames_stop():
    stats = RollingStats(window=1.0)
    for i in range(10):
        stats.frame_in(i * 0.1)
    assert stats.snapshot(0.9)["fps_in"] > 5
    assert stats.snapshot(5.0)["fps_in"] == 0.0
    assert stats.snapshot(5.0)["frames_in"] == 10  # totals stay


def test_latency_and_stage_percentiles():
    stats = RollingStats(samples=100)
    for i in range(1, 101):
        stats.frame_out(
            float(i), latency=i / 1000.0, timings={"decode": 0.001, "detector.infer": i / 10000.0}
        )
    snap = stats.snapshot(100.0)
    assert snap["latency.p50"] == pytest.approx(np.percentile(np.arange(1, 101) / 1000.0, 50))
    assert snap["latency.p95"] == pytest.approx(np.percentile(np.arange(1, 101) / 1000.0, 95))
    assert snap["latency.max"] == pytest.approx(0.1)
    assert snap["decode.p50"] == pytest.approx(0.001)
    assert snap["detector.infer.max"] == pytest.approx(0.01)


def test_sample_window_keeps_only_recent_samples():
    stats = RollingStats(samples=10)
    for i in range(100):
        stats.record("infer", float(i))
    snap = stats.snapshot(0.0)
    assert snap["infer.max"] == 99.0
    assert snap["infer.p50"] == pytest.approx(np.percentile(np.arange(90, 100), 50))


def test_counters():
    stats = RollingStats()
    stats.dropped(3)
    stats.dropped()
    stats.bad_frame()
    stats.error()
    snap = stats.snapshot(0.0)
    assert (snap["dropped"], snap["bad_frames"], snap["errors"]) == (4, 1, 1)
    assert "latency.p50" not in snap


def test_rejects_bad_windows():
    with pytest.raises(ValueError):
        RollingStats(window=0)
