"""Benchmark 4: memory. RSS stays flat over 20,000 frames, and tracemalloc sees no frame-sized allocation per
frame.

The RSS run is the node's whole per-frame path with both heads (detector SSD300 + DonkeyCar pilot) on
alternating bgr8 and yuyv 640x480 messages: decode, preprocess, canned backends (inference is the backend's
memory, not the pipeline's), parse, safety, Detection2DArray + Twist build. RSS is read from /proc after a
warm-up and then every 1,000 frames. tracemalloc then follows single frames of each encoding and records the
peak of Python/numpy allocations within each frame (``reset_peak``); anything as large as a quarter of the
frame counts as frame-sized.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any, Dict, List

from common import (
    ENCODINGS,
    Table,
    camera_frame,
    canned_detector,
    canned_pilot,
    image_message,
    rss_bytes,
    scaled,
    ssd300_spec,
    steering_spec,
)

from trt_perception.heads import head_from_pipeline
from trt_perception.messages import MessageTypes, copy_header, detection_array, twist
from trt_perception.pipeline import FrameProcessor, ModelPipeline
from trt_perception.rosbag_types import get_typestore
from trt_perception.safety import PilotConfig

TARGET_GROWTH_MB = 5.0
WIDTH, HEIGHT = 640, 480


class PerFrame:
    def __init__(self) -> None:
        self.types = MessageTypes.from_typestore(get_typestore("humble"))
        self.pilot_config = PilotConfig()
        self.processor = FrameProcessor(
            [
                head_from_pipeline("detector", ModelPipeline(ssd300_spec(), canned_detector())),
                head_from_pipeline("pilot", ModelPipeline(steering_spec(), canned_pilot()), {"drive_enabled": True}),
            ]
        )

    def __call__(self, msg: Any) -> None:
        result = self.processor.process(msg, 0.0)
        header = copy_header(self.types, msg.header)
        detection_array(self.types, header, result.detections)
        twist(self.types, result.command, self.pilot_config)


def run(quick: bool = False) -> Table:
    table = Table(
        "memory",
        "4. Memory over many frames (both heads, canned backends)",
        ["check", "frames", "value", "detail"],
    )
    frame = camera_frame(WIDTH, HEIGHT)
    messages = {encoding: image_message(frame, encoding) for encoding in ENCODINGS}
    per_frame = PerFrame()
    frames = scaled(quick, 20000, 600)
    warmup = scaled(quick, 1000, 100)
    cycle = [messages["bgr8"], messages["yuyv"]]
    for i in range(warmup):
        per_frame(cycle[i % 2])
    gc.collect()
    start = rss_bytes()
    if start is None:
        table.add(None, check="RSS growth", frames=frames, value="n/a", detail="no /proc/self/statm here")
    else:
        samples: List[int] = []
        step = max(1, frames // 20)
        for i in range(frames):
            per_frame(cycle[i % 2])
            if (i + 1) % step == 0:
                samples.append(rss_bytes() or 0)
        growth_mb = (samples[-1] - start) / 2**20
        spread_mb = (max(samples) - min(samples)) / 2**20
        table.add(
            growth_mb < TARGET_GROWTH_MB and spread_mb < TARGET_GROWTH_MB, target=f"< {TARGET_GROWTH_MB:g} MB",
            check="RSS growth after warm-up", frames=frames, value=f"{growth_mb:+.2f} MB",
            detail=f"start {start / 2**20:.1f} MB, samples spread {spread_mb:.2f} MB over {len(samples)} samples",
        )  # fmt: skip

    frame_bytes = WIDTH * HEIGHT * 3
    for encoding in ENCODINGS:
        peaks = per_frame_peaks(per_frame, messages[encoding], scaled(quick, 200, 20))
        worst = max(peaks)
        table.add(
            worst < frame_bytes // 4, target=f"< {frame_bytes // 4 // 1024} KiB (1/4 frame)",
            check=f"largest allocation peak in one frame, {encoding}", frames=len(peaks),
            value=f"{worst / 1024:.0f} KiB", detail=f"frame {frame_bytes // 1024} KiB; median peak "
            f"{sorted(peaks)[len(peaks) // 2] / 1024:.0f} KiB",
        )  # fmt: skip
    table.notes.append(
        "A jpeg frame is decoded by cv2.imdecode, which allocates its output (OpenCV's Python API has no dst "
        "for imdecode), so compressed streams allocate one decoded frame per frame by construction."
    )
    return table


def per_frame_peaks(per_frame: Any, msg: Any, frames: int) -> List[int]:
    """tracemalloc peak above the frame's starting point, for each of ``frames`` calls (after warm-up)."""
    for _ in range(5):
        per_frame(msg)
    reset_peak = getattr(tracemalloc, "reset_peak", None)  # Python >= 3.9; restart tracing on 3.8
    tracemalloc.start()
    peaks: List[int] = []
    try:
        for _ in range(frames):
            gc.collect()
            if reset_peak is not None:
                reset_peak()
            else:
                tracemalloc.stop()
                tracemalloc.start()
            before, _ = tracemalloc.get_traced_memory()
            per_frame(msg)
            _, peak = tracemalloc.get_traced_memory()
            peaks.append(peak - before)
    finally:
        tracemalloc.stop()
    return peaks


def allocation_sites(msg_encoding: str = "bgr8", top: int = 5) -> Dict[str, int]:
    """The largest allocation sites of one frame (for the README's analysis)."""
    per_frame = PerFrame()
    msg = image_message(camera_frame(WIDTH, HEIGHT), msg_encoding)
    for _ in range(5):
        per_frame(msg)
    tracemalloc.start(10)
    try:
        snapshot_before = tracemalloc.take_snapshot()
        per_frame(msg)
        snapshot_after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    stats = snapshot_after.compare_to(snapshot_before, "lineno")
    return {str(s.traceback): s.size_diff for s in stats[:top]}
