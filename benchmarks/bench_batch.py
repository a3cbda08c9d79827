"""Benchmark 17: frames of several cameras ready together, one batch vs one inference per camera.

What the node's worker does when cameras share a model with a batch dimension (``pipeline.finish_batch``)
against what it does otherwise (each camera's ``FrameProcessor.finish`` in turn), on the same decoded frames:
the demo pilot (``steering.onnx``, exported with a dynamic batch dimension; ONNX Runtime on the CPU with the
node's ort_threads / ort_spinning defaults), and 2 or 4 cameras of 640x480 frames. Throughput is frames over the total
time of interleaved rounds; the results of both ways are checked to agree first. The models here are tiny (0.1
ms an inference), so this measures what batching saves in per-call overhead on a CPU; on a GPU with TensorRT a
batch also fills the device, which this machine cannot show.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Dict, List

import numpy as np
from common import DEMO_DIR, NODE_ORT, Table, camera_frame, scaled

from trt_perception.heads import open_model
from trt_perception.images import DecodedImage
from trt_perception.pipeline import FrameProcessor, PreparedFrame, finish_batch


def run(quick: bool = False) -> Table:
    table = Table(
        "batch",
        "17. Frames of several cameras ready together: one batch vs in turn (demo pilot, dynamic batch, ONNX "
        "Runtime CPU)",
        ["cameras", "batch_fps", "in_turn_fps", "gain", "batch_ms [IQR]", "in_turn_ms [IQR]", "identical"],
    )
    rounds = scaled(quick, 400, 10)
    head = open_model(DEMO_DIR / "steering.onnx", name="pilot", backend_options=NODE_ORT)
    try:
        for count in (2, 4):
            processors = [FrameProcessor([head if i == 0 else head.for_camera()]) for i in range(count)]
            frames = [DecodedImage(camera_frame(640, 480, seed), "bgr") for seed in range(count)]
            assert head.pipeline.batch_capacity >= count
            table.add(**_compare(processors, frames, rounds))
    finally:
        head.close()
    table.notes.append(
        "ms: median per round of all cameras' frames [IQR]; fps: frames over the rounds' total time. identical: "
        "every camera's steering and throttle equal (1e-6) between the two ways. The node batches only what is "
        "ready together (its latest-frame slots), so under light load it runs frames in turn anyway."
    )
    return table


def _compare(processors: List[FrameProcessor], frames: List[DecodedImage], rounds: int) -> Dict[str, Any]:
    def batched() -> List[Any]:
        return finish_batch([(p, PreparedFrame(f, 0.0), 0.0) for p, f in zip(processors, frames)])

    def in_turn() -> List[Any]:
        return [p.finish(PreparedFrame(f, 0.0), 0.0) for p, f in zip(processors, frames)]

    got, want = batched(), in_turn()
    identical = all(
        abs(a.steering.angle - b.steering.angle) <= 1e-6 and abs(a.steering.throttle - b.steering.throttle) <= 1e-6
        for a, b in zip(got, want)
    )
    seconds: Dict[str, List[float]] = {"batch": [], "in_turn": []}
    for _ in range(20):  # warm-up
        batched(), in_turn()
    for _ in range(rounds):  # interleaved
        for name, call in (("batch", batched), ("in_turn", in_turn)):
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    count = len(frames)
    fps = {name: count * len(values) / sum(values) for name, values in seconds.items()}

    def cell(values: List[float]) -> str:
        q1, q3 = np.percentile(values, [25, 75])
        return f"{statistics.median(values) * 1e3:.3f} [{(q3 - q1) * 1e3:.3f}]"

    return {
        "cameras": count, "batch_fps": fps["batch"], "in_turn_fps": fps["in_turn"],
        "gain": f"{fps['batch'] / fps['in_turn']:.2f}x", "batch_ms [IQR]": cell(seconds["batch"]),
        "in_turn_ms [IQR]": cell(seconds["in_turn"]), "identical": identical,
    }  # fmt: skip


if __name__ == "__main__":
    print(run().render())
