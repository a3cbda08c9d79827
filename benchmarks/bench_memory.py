"""Benchmark 4: memory. RSS stays flat over 20,000 frames, tracemalloc sees no frame-sized allocation per
frame, and `replay` of a 30x demo bag holds within 5 MB of what it holds for the 1x bag.

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
from typing import Any, Dict, List, Tuple

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
    replay_rows(table, quick)
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


def repeated_demo_bag(folder: Any, times: int) -> Any:
    """The demo bag's messages ``times`` times over, one copy after the other on the clock (stamps shifted too,
    so ground truth still pairs by stamp)."""
    from pathlib import Path

    from common import DEMO_DIR
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Writer

    from trt_perception.tools.replay import _typestore, writer_storages

    store = _typestore("jazzy" if "mcap" in writer_storages() else "humble")
    out = Path(folder) / f"demo_x{times}"
    with AnyReader([DEMO_DIR / "drive_bag"], default_typestore=store) as reader:
        span = reader.end_time - reader.start_time + 66_666_667
        messages = [(c, t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages()]
        writer = Writer(out) if writer_storages() == ("sqlite3",) else Writer(out, version=8)
        with writer:
            conns = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=store) for c in reader.connections}
            for k in range(times):
                shift = k * span
                for conn, t_ns, msg in messages:
                    header = getattr(msg, "header", None)
                    if header is not None:
                        stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec + shift
                        header.stamp.sec, header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                    writer.write(conns[conn.topic], t_ns + shift, store.serialize_cdr(msg, conn.msgtype))
                    if header is not None:
                        stamp -= shift
                        header.stamp.sec, header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    return out


class _Held:
    """Wraps the replay's FrameProcessor: tracemalloc's current size at each frame (what the replay holds)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.heads, self.drive_head = inner, inner.heads, inner.drive_head
        self.held: List[int] = []

    def process(self, msg: Any, now: float) -> Any:
        self.held.append(tracemalloc.get_traced_memory()[0])
        return self.inner.process(msg, now)

    def close(self) -> None:
        self.inner.close()


def replay_rows(table: Table, quick: bool) -> None:
    """`replay --no-out` of the demo bag and of the same bag N times over with every truth topic: memory held
    by the replay at its last frame (tracemalloc) and the peak of the whole call including the scoring (COCO
    mAP and MOTA need every frame's boxes at the end, as compact numpy columns)."""
    import tempfile
    from pathlib import Path

    from common import DEMO_DIR

    from trt_perception.heads import create_frame_processor
    from trt_perception.tools.replay import BagClock, load_config, replay_bag, replay_config

    times = scaled(quick, 30, 3)
    config, _ = replay_config(load_config(DEMO_DIR / "demo_params.yaml"))
    truth = {"truth_drive_topic": "/teleop/cmd_vel", "truth_detections_topic": "/ground_truth/detections",
             "truth_mask_topic": "/ground_truth/drivable"}
    measured: Dict[int, Tuple[float, float, int]] = {}
    with tempfile.TemporaryDirectory() as folder:
        bags = {1: DEMO_DIR / "drive_bag", times: repeated_demo_bag(Path(folder), times)}
        for n, bag in bags.items():
            probe = _Held(create_frame_processor(config, clock=BagClock()))
            try:
                replay_bag(bag, config, processor=probe, limit=30, **truth)  # warm-up
                probe.held.clear()
                gc.collect()
                tracemalloc.start()
                try:
                    report = replay_bag(bag, config, processor=probe, **truth)
                    peak = tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
            finally:
                probe.close()
            measured[n] = (float(probe.held[-1] - probe.held[0]), float(peak), report.frames_processed)
    (held_1, peak_1, frames_1), (held_n, peak_n, frames_n) = measured[1], measured[times]
    growth = (held_n - held_1) / 2**20
    per_frame = (held_n - held_1) / max(frames_n - frames_1, 1)
    table.add(
        growth < TARGET_GROWTH_MB, target=f"< {TARGET_GROWTH_MB:g} MB over the 1x bag", check=f"replay held at the "
        f"last frame, demo bag x{times} vs x1 (3 heads, truth topics)", frames=frames_n, value=f"{growth:+.2f} MB",
        detail=f"x1 {held_1 / 2**20:.2f} MB, x{times} {held_n / 2**20:.2f} MB; {per_frame:.0f} B a frame",
    )  # fmt: skip
    table.add(
        None, check=f"replay peak incl. scoring, demo bag x{times} vs x1", frames=frames_n,
        value=f"{(peak_n - peak_1) / 2**20:+.2f} MB", detail=f"x1 {peak_1 / 2**20:.2f} MB, x{times} "
        f"{peak_n / 2**20:.2f} MB (COCO mAP, MOTA and the plots take every frame's boxes at the end)",
    )  # fmt: skip
