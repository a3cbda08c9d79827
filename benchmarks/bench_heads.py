"""Decode once, run three heads: one node with three heads against three single-head pipelines (what three
nodes, or three separate scripts, would do: each decodes the frame itself).

The demo bag's compressed 320x240 frames, the demo's detector, drivable-area segmentation and pilot on ONNX
Runtime (the node's ort_threads / ort_spinning defaults). Both sides produce the same results (checked);
the gain is the two JPEG decodes (and colour conversions) saved per frame.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

from common import DEMO_DIR, NODE_ORT, Table, camera_frame, demo_bag_frames, image_message, measure, scaled

from trt_perception.heads import open_model
from trt_perception.pipeline import FrameProcessor

MODELS = ("detector", "drivable", "steering")
ORT = NODE_ORT


def run(quick: bool = False) -> Table:
    table = Table(
        "heads",
        "11. Three heads on one decode vs three single-head pipelines (demo bag frames, median ms per frame)",
        ["frames", "contender", "decodes_per_frame", "ms", "iqr_ms", "frames_per_s", "gain"],
    )
    missing = [m for m in MODELS if not (DEMO_DIR / f"{m}.onnx").is_file()]
    if missing:
        table.skipped = f"demo models {missing} are missing (python scripts/make_demo.py)"
        return table
    cases = {
        "demo bag 320x240 jpeg": demo_bag_frames(limit=scaled(quick, 32, 4)),
        "1280x720 jpeg": [image_message(camera_frame(1280, 720, seed), "jpeg") for seed in range(scaled(quick, 8, 2))],
    }
    for case, frames in cases.items():
        _run_case(table, case, frames, quick)
    table.notes.append(
        "3 pipelines: each head in its own FrameProcessor decoding the same CompressedImage itself. Results of "
        "each head checked equal first."
    )
    return table


def _run_case(table: Table, case: str, frames: List[Any], quick: bool) -> None:
    opened = [open_model(DEMO_DIR / f"{m}.onnx", backend_options=ORT, name=m) for m in MODELS]
    shared = FrameProcessor(opened)
    separate = [FrameProcessor([open_model(DEMO_DIR / f"{m}.onnx", backend_options=ORT, name=m)]) for m in MODELS]
    try:
        index: List[int] = [0]

        def next_frame() -> Any:
            msg = frames[index[0] % len(frames)]
            index[0] += 1
            return msg

        check = frames[0]
        one = shared.process(check, 0.0)
        for processor in separate:
            name = processor.heads[0].name
            alone = processor.process(check, 0.0).outputs[name].result
            together = one.outputs[name].result
            if type(alone) is not type(together) or repr(alone)[:200] != repr(together)[:200]:
                raise AssertionError(f"head {name}: one decode and its own decode disagree")

        contenders: Dict[str, Callable[[], Any]] = {
            "one node, 3 heads": lambda: shared.process(next_frame(), 0.0),
            "3 pipelines": lambda: [p.process(msg, 0.0) for msg in [next_frame()] for p in separate],
        }
        times = measure(contenders, iterations=scaled(quick, 600, 20), warmup=scaled(quick, 20, 2))
    finally:
        shared.close()
        for processor in separate:
            processor.close()
    base = times["3 pipelines"]
    for name, decodes in (("one node, 3 heads", 1), ("3 pipelines", 3)):
        timing = times[name]
        table.add(
            None, frames=case, contender=name, decodes_per_frame=decodes, ms=timing.median * 1e3,
            iqr_ms=timing.iqr * 1e3, frames_per_s=timing.per_second, gain=base.median / timing.median,
        )


if __name__ == "__main__":
    print(run().render())
