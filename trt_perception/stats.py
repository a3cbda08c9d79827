"""Rolling counters for /diagnostics and replay reports: rates, latency percentiles per stage, drops.

Samples go into fixed-size ring buffers (allocated once), so a node running for days uses constant memory
and a snapshot summarises the recent window, not the whole run. Times are seconds on whatever clock the
caller uses (the node passes ROS time, so sim time works).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Deque, Dict, Iterable, Mapping, Optional

import numpy as np


class _Ring:
    """A fixed-size float ring of the last ``size`` samples."""

    def __init__(self, size: int) -> None:
        self.values = np.zeros(size, np.float64)
        self.count = 0
        self.total = 0  # samples ever added

    def add(self, value: float) -> None:
        self.values[self.total % self.values.shape[0]] = value
        self.total += 1
        self.count = min(self.count + 1, self.values.shape[0])

    def window(self) -> np.ndarray:
        return self.values[: self.count]


class RollingStats:
    """Frames in/out over a time window, per-stage latency percentiles over the last ``samples`` frames.

    ``frame_in`` on arrival, ``frame_out`` with the end-to-end latency and the pipeline's stage timings when
    a frame was processed, ``dropped`` and ``bad_frame`` as they happen; ``snapshot`` reads it all.
    """

    def __init__(self, window: float = 5.0, samples: int = 300) -> None:
        if window <= 0 or samples <= 0:
            raise ValueError(f"window ({window}) and samples ({samples}) must be positive")
        self.window = float(window)
        self.samples = int(samples)
        self._lock = threading.Lock()
        self._in_times: Deque[float] = deque()
        self._out_times: Deque[float] = deque()
        self._stages: Dict[str, _Ring] = {}
        self.frames_in = 0
        self.frames_out = 0
        self.dropped_frames = 0
        self.bad_frames = 0
        self.errors = 0

    def _ring(self, name: str) -> _Ring:
        ring = self._stages.get(name)
        if ring is None:
            ring = self._stages[name] = _Ring(self.samples)
        return ring

    def _trim(self, times: Deque[float], now: float) -> None:
        horizon = now - self.window
        while times and times[0] < horizon:
            times.popleft()

    # -------------------------------------------------------------------------------------- recording

    def frame_in(self, now: float) -> None:
        with self._lock:
            self.frames_in += 1
            self._in_times.append(now)
            self._trim(self._in_times, now)

    def frame_out(
        self, now: float, latency: Optional[float] = None, timings: Optional[Mapping[str, float]] = None
    ) -> None:
        """A processed frame: ``latency`` = now - image stamp (seconds), ``timings`` = stage -> seconds."""
        with self._lock:
            self.frames_out += 1
            self._out_times.append(now)
            self._trim(self._out_times, now)
            if latency is not None:
                self._ring("latency").add(latency)
            for stage, seconds in (timings or {}).items():
                self._ring(stage).add(seconds)

    def record(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._ring(stage).add(seconds)

    def dropped(self, count: int = 1) -> None:
        with self._lock:
            self.dropped_frames += count

    def bad_frame(self) -> None:
        with self._lock:
            self.bad_frames += 1

    def error(self) -> None:
        with self._lock:
            self.errors += 1

    # --------------------------------------------------------------------------------------- reading

    def rate(self, times: Iterable[float], now: float) -> float:
        """Events per second over the window ending at ``now``."""
        stamps = [t for t in times if t >= now - self.window]
        if len(stamps) < 2:
            return 0.0
        span = max(now - stamps[0], stamps[-1] - stamps[0])
        return (len(stamps) - 1) / span if span > 0 else 0.0

    def stage_names(self) -> list:
        with self._lock:
            return list(self._stages)

    def snapshot(self, now: float) -> Dict[str, float]:
        """Counters, rates and, per stage, p50/p95/max in seconds (``<stage>.p50``...)."""
        with self._lock:
            self._trim(self._in_times, now)
            self._trim(self._out_times, now)
            result: Dict[str, float] = {
                "fps_in": self.rate(self._in_times, now),
                "fps_out": self.rate(self._out_times, now),
                "frames_in": float(self.frames_in),
                "frames_out": float(self.frames_out),
                "dropped": float(self.dropped_frames),
                "bad_frames": float(self.bad_frames),
                "errors": float(self.errors),
            }
            for stage, ring in self._stages.items():
                values = ring.window()
                if values.size == 0:
                    continue
                p50, p95 = np.percentile(values, (50.0, 95.0))
                result[f"{stage}.p50"] = float(p50)
                result[f"{stage}.p95"] = float(p95)
                result[f"{stage}.max"] = float(values.max())
            return result
