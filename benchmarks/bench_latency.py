"""Benchmark 5: latency under overload, through the node's latest-frame policy.

A camera thread publishes at 60 Hz (frames stamped at capture); the node's ``_on_image`` path puts each frame
into a ``LatestFrameMailbox`` and counts a replaced one as dropped; a worker thread takes frames and runs
``FrameProcessor.process`` with a synthetic backend that takes 66 ms, then builds the Detection2DArray, as
``node.py`` does. Latency = output time - capture stamp. Real time (no clock compression), so what is
measured includes thread wake-ups and the GIL. The twin is a plain FIFO queue (every frame processed in
order), whose latency grows without bound when the camera outruns the model.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Dict, List, Tuple

import numpy as np
from common import (
    Header,
    RclpyImage,
    Table,
    Time,
    camera_frame,
    canned_detector,
    image_message,
    scaled,
    ssd300_spec,
)

from trt_perception.heads import head_from_pipeline
from trt_perception.mailbox import LatestFrameMailbox
from trt_perception.messages import MessageTypes, copy_header, detection_array
from trt_perception.pipeline import FrameProcessor, ModelPipeline
from trt_perception.rosbag_types import get_typestore

CAMERA_HZ = 60.0
INFERENCE_S = 0.066
TARGET_FACTOR = 2.0  # p95 latency <= 2x inference time
FLAT_TOLERANCE = 1.25  # median latency of the last third <= 1.25x that of the first third


class Camera(threading.Thread):
    """Calls ``deliver(msg)`` at ``hz`` on an absolute schedule (no drift); each frame stamped at capture."""

    def __init__(self, deliver: Any, hz: float, duration: float, frames: List[Any]) -> None:
        super().__init__(name="camera", daemon=True)
        self.deliver, self.period, self.duration, self.frames = deliver, 1.0 / hz, duration, frames
        self.sent = 0

    def run(self) -> None:
        start = time.perf_counter()
        while True:
            due = start + self.sent * self.period
            if due - start >= self.duration:
                return
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pixels = self.frames[self.sent % len(self.frames)]
            stamp = time.perf_counter()
            header = Header(Time(int(stamp), int((stamp % 1) * 1e9)), "camera")
            msg = RclpyImage(header=header, height=pixels.height, width=pixels.width, encoding=pixels.encoding,
                             step=pixels.step, data=pixels.data)  # a new message sharing the pixel buffer
            self.deliver(_Stamped(msg, stamp))
            self.sent += 1


class _Stamped:
    """A frame and its capture time (the header stamp holds the same time, in ROS form)."""

    def __init__(self, msg: Any, stamp: float) -> None:
        self.msg, self.stamp = msg, stamp


def _processor() -> Tuple[FrameProcessor, MessageTypes]:
    pipeline = ModelPipeline(ssd300_spec(), canned_detector(delay=INFERENCE_S))
    processor = FrameProcessor([head_from_pipeline("detector", pipeline)])
    return processor, MessageTypes.from_typestore(get_typestore("humble"))


def run_latest(duration: float) -> Dict[str, Any]:
    processor, types = _processor()
    mailbox: LatestFrameMailbox = LatestFrameMailbox()
    results: List[Tuple[float, float]] = []  # (capture time, latency)
    dropped = [0]

    def on_image(item: _Stamped) -> None:  # node.PerceptionNode._on_image
        if mailbox.put(item):
            dropped[0] += 1

    def worker() -> None:  # node.PerceptionNode._worker_loop + _process
        while True:
            item = mailbox.get(timeout=0.1)
            if item is None:
                if mailbox.closed:
                    return
                continue
            result = processor.process(item.msg, 0.0)
            detection_array(types, copy_header(types, item.msg.header), result.detections)
            done = time.perf_counter()
            results.append((item.stamp, done - item.stamp))

    frames = [image_message(camera_frame(640, 480, seed=i), "bgr8") for i in range(4)]
    thread = threading.Thread(target=worker, name="worker", daemon=True)
    thread.start()
    camera = Camera(on_image, CAMERA_HZ, duration, frames)
    camera.start()
    camera.join()
    time.sleep(2 * INFERENCE_S)
    mailbox.close()
    thread.join(timeout=5)
    return {"sent": camera.sent, "processed": len(results), "dropped": dropped[0], "results": results}


def run_fifo(duration: float) -> Dict[str, Any]:
    processor, types = _processor()
    fifo: Any = queue.Queue()
    results: List[Tuple[float, float]] = []
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                item = fifo.get(timeout=0.1)
            except queue.Empty:
                continue
            result = processor.process(item.msg, 0.0)
            detection_array(types, copy_header(types, item.msg.header), result.detections)
            results.append((item.stamp, time.perf_counter() - item.stamp))

    frames = [image_message(camera_frame(640, 480, seed=i), "bgr8") for i in range(4)]
    thread = threading.Thread(target=worker, name="fifo-worker", daemon=True)
    thread.start()
    camera = Camera(fifo.put, CAMERA_HZ, duration, frames)
    camera.start()
    camera.join()
    stop.set()
    thread.join(timeout=5)
    return {"sent": camera.sent, "processed": len(results), "dropped": 0, "results": results,
            "backlog": fifo.qsize()}  # fmt: skip

def _thirds(latencies: np.ndarray) -> List[np.ndarray]:
    third = max(1, len(latencies) // 3)
    middle = latencies[third:-third] if len(latencies) > 2 * third else latencies
    return [latencies[:third], middle, latencies[-third:]]


def run(quick: bool = False) -> Table:
    bound = TARGET_FACTOR * INFERENCE_S * 1000
    table = Table(
        "latency",
        f"5. Latency under overload: {CAMERA_HZ:g} Hz camera, {INFERENCE_S * 1000:g} ms backend (real time)",
        ["policy", "seconds", "frames_in", "processed", "dropped", "p50_ms", "p95_ms", "max_ms",
         "p95_by_third_ms", "p50_first/last_third_ms"],
    )  # fmt: skip
    duration = scaled(quick, 10, 2)
    for policy, runner, seconds in (("latest-frame mailbox", run_latest, duration),
                                    ("FIFO queue (twin)", run_fifo, max(2, duration // 2))):  # fmt: skip
        outcome = runner(float(seconds))
        latencies = np.array([lat for _, lat in outcome["results"]]) * 1000
        thirds = _thirds(latencies)
        p95_thirds = [float(np.percentile(t, 95)) for t in thirds]
        first, last = float(np.median(thirds[0])), float(np.median(thirds[-1]))
        p95 = float(np.percentile(latencies, 95))
        row: Dict[str, Any] = {
            "policy": policy, "seconds": seconds, "frames_in": outcome["sent"], "processed": outcome["processed"],
            "dropped": outcome["dropped"], "p50_ms": float(np.median(latencies)), "p95_ms": p95,
            "max_ms": float(latencies.max()), "p95_by_third_ms": " / ".join(f"{v:.0f}" for v in p95_thirds),
            "p50_first/last_third_ms": f"{first:.0f} / {last:.0f}",
        }  # fmt: skip
        if policy.startswith("latest"):
            accounted = outcome["processed"] + outcome["dropped"] == outcome["sent"]
            flat = all(v <= bound for v in p95_thirds) and last <= FLAT_TOLERANCE * first
            table.add(p95 <= bound and flat and accounted, target=f"p95 <= {bound:g} ms, flat, drops counted", **row)
        else:
            table.add(None, target="(grows without bound)", **row)
    table.notes.append(
        "flat = the p95 of every third of the run within the bound and the median of the last third within "
        f"{FLAT_TOLERANCE:g}x of the first third's; drops counted = frames in == processed + dropped. The FIFO "
        "twin processes every frame in order; its backlog keeps growing."
    )
    return table
