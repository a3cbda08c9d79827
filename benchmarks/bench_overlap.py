"""Benchmark 15: decode overlapped with inference (``FrameProcessor.process_stream``, the node's ``overlap``).

The demo detector on ONNX Runtime with the node's ort_threads / ort_spinning defaults over bursts of
camera frames: ``sequential`` runs ``process`` frame after frame (decode, then the heads); ``overlap`` runs
``process_stream``, which decodes frame N+1 in a helper thread while the heads run on frame N (cv2.imdecode
and ONNX Runtime both release the GIL), exactly what the node's worker does with ``overlap: true``. Results
are checked identical. Throughput is frames over the total time of all bursts (interleaved rounds); CPU% is
process CPU time over wall time (100% = one core busy).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

from common import DEMO_DIR, NODE_ORT, Table, camera_frame, image_message, measure, scaled

from trt_perception.heads import open_model
from trt_perception.pipeline import FrameProcessor

BURST = 20  # frames per timed call
KINDS = [("jpeg", 640, 480), ("jpeg", 1280, 720), ("bgr8", 640, 480)]


def _processor() -> FrameProcessor:
    head = open_model(DEMO_DIR / "detector.onnx", backend_options=NODE_ORT,
                      name="detector")  # fmt: skip
    return FrameProcessor([head], gpu_decode="off")


def _contenders(processor: FrameProcessor, msgs: List[Any], cpu: Dict[str, float]) -> Dict[str, Callable[[], Any]]:
    def timed(name: str, body: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            start = time.process_time()
            body()
            cpu[name] += time.process_time() - start
        return call

    def sequential() -> None:
        for msg in msgs:
            processor.process(msg, 0.0)

    def overlap() -> None:
        for item in processor.process_stream((msg, 0.0) for msg in msgs):
            if item.error is not None:
                raise item.error

    return {"sequential": timed("sequential", sequential), "overlap": timed("overlap", overlap)}


def _same_results(processor: FrameProcessor, msgs: List[Any]) -> bool:
    def boxes(result: Any) -> Any:
        d = result.detections
        return (d.boxes.tolist(), d.scores.tolist(), d.class_ids.tolist())

    expected = [boxes(processor.process(m, 0.0)) for m in msgs]
    got = [boxes(r.result) for r in processor.process_stream((m, 0.0) for m in msgs)]
    return got == expected


def run(quick: bool = False) -> Table:
    table = Table(
        "overlap",
        "15. decode overlapped with inference: demo detector, ONNX Runtime (node defaults), bursts of frames",
        ["frames", "sequential_fps", "overlap_fps", "gain", "seq_ms [IQR]", "overlap_ms [IQR]", "seq_cpu_pct",
         "overlap_cpu_pct", "identical"],
    )
    if not (DEMO_DIR / "detector.onnx").is_file():
        table.skipped = "no demo detector"
        return table
    processor = _processor()
    iterations = scaled(quick, 30, 2)
    try:
        for encoding, width, height in KINDS:
            msgs = [image_message(camera_frame(width, height, seed), encoding) for seed in range(BURST)]
            cpu = {"sequential": 0.0, "overlap": 0.0}
            timings = measure(_contenders(processor, msgs, cpu), iterations, warmup=1, rounds=min(10, iterations))
            seq, ovl = timings["sequential"], timings["overlap"]
            gain = ovl.per_second / seq.per_second
            table.add(
                None,
                frames=f"{encoding} {width}x{height}",
                sequential_fps=BURST * seq.per_second,
                overlap_fps=BURST * ovl.per_second,
                gain=f"{gain:.2f}x",
                **{"seq_ms [IQR]": f"{seq.median / BURST * 1e3:.2f} [{seq.iqr / BURST * 1e3:.2f}]",
                   "overlap_ms [IQR]": f"{ovl.median / BURST * 1e3:.2f} [{ovl.iqr / BURST * 1e3:.2f}]"},
                seq_cpu_pct=100.0 * cpu["sequential"] / sum(seq.samples),
                overlap_cpu_pct=100.0 * cpu["overlap"] / sum(ovl.samples),
                identical=_same_results(processor, msgs[:5]),
            )  # fmt: skip
    finally:
        processor.close()
    table.notes.append(
        "ms columns: median per frame of a burst and its IQR; fps from the total time. The gain is what a "
        "second core buys: decode (cv2.imdecode, GIL released) runs beside ONNX Runtime's inference. Raw bgr8 "
        "frames decode to a view (nothing to overlap): that row shows the helper thread's cost."
    )
    return table


if __name__ == "__main__":
    print(run().render())
