"""ONNX Runtime session options on the CPU: the node's default (``ort_threads: 2``, ``ort_spinning: false``)
against one thread, a thread per core without spinning and ONNX Runtime's own (a thread per core, idle threads
busy-waiting), on a quiet machine and with one core kept busy by another process (a car's other nodes: camera
driver, planner, bag recorder). Two models: the demo detector (0.4 ms, the size of DonkeyCar pilots and small
detectors) and a ~0.55 GMAC stand-in the size of SSD-MobileNet (benchmark 3's). Each contender is the package's own
``OnnxRuntimeBackend`` opened with those options, fed one preprocessed frame; the same outputs are checked first.

Per contender: median and IQR of per-inference times, throughput from the total time, and the CPU time the
process spent per inference (busy-waiting threads show up there). Under ``taskset -c 0-3`` (or 0-5) on a bigger
host, the explicit thread counts stay on those cores; ONNX Runtime's own per-core pool was not held to them on
the GPU host (onnxruntime 1.30: a 2-core taskset still ran the stand-in 4x faster than 2 threads), so read the
per-core rows there as the whole machine's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Tuple

import numpy as np
from common import DEMO_DIR, NODE_ORT, Table, camera_frame, image_message, scaled, ssd300_spec

from trt_perception.backends.onnxruntime import OnnxRuntimeBackend
from trt_perception.heads import Head, head_from_pipeline, open_model
from trt_perception.pipeline import FrameProcessor, ModelPipeline


def _label(text: str, options: Mapping[str, Any]) -> str:
    return f"{text} (node default)" if dict(options) == NODE_ORT else text


CONTENDERS: Tuple[Tuple[str, Mapping[str, Any]], ...] = tuple(
    (_label(text, options), options) for text, options in (
        ("1 thread, no spinning", {"threads": 1, "spinning": False}),
        ("2 threads, no spinning", {"threads": 2, "spinning": False}),
        ("a thread per core, no spinning", {"threads": 0, "spinning": False}),
        ("a thread per core, spinning (ORT default)", {"threads": 0, "spinning": None}),
    )
)  # fmt: skip
DEFAULT = next((name for name, options in CONTENDERS if dict(options) == NODE_ORT), CONTENDERS[0][0])
BUSY_LOOP = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end:\n    pass\n"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # type: ignore[attr-defined]  # Linux: honours taskset
    except AttributeError:
        return os.cpu_count() or 1


def _models(folder: Path) -> List[Tuple[str, Callable[[Mapping[str, Any]], Head]]]:
    """(name, options -> a detector head on ONNX Runtime with those options)."""
    from bench_end_to_end import ssd_sized_model

    stand_in = ssd_sized_model(folder / "ssd_sized.onnx")

    def demo(options: Mapping[str, Any]) -> Head:
        return open_model(DEMO_DIR / "detector.onnx", backend="onnxruntime", backend_options=options, name="detector")

    def ssd_sized(options: Mapping[str, Any]) -> Head:
        return head_from_pipeline("detector", ModelPipeline(ssd300_spec(), OnnxRuntimeBackend(stand_in, **options)))

    return [("demo detector", demo), ("SSD300-sized stand-in", ssd_sized)]


def _uses(head: Head, msgs: List[Any]) -> Dict[str, Callable[[], int]]:
    """What is timed: the model alone, back to back; the node's frame loop (process_stream: each frame decoded in
    a helper thread while the heads run on the one before, the worker of a node with ``overlap: true``)."""
    processor = FrameProcessor([head], gpu_decode="off")
    backend = head.pipeline.backend
    processor.process(msgs[0], 0.0)  # fills the input tensor the inference row feeds
    feed = {head.spec.input.name: head.pipeline.preprocessor.tensor.copy()}  # type: ignore[union-attr]

    def inference() -> int:
        backend.infer(feed)
        return 1

    def frames() -> int:
        count = 0
        for item in processor.process_stream((msg, 0.0) for msg in msgs):
            if item.error is not None:
                raise item.error
            count += 1
        return count

    return {"inference alone": inference, "frame loop, 640x480 jpeg": frames}


def _busy_process() -> subprocess.Popen:
    """Another process spinning on one core (it inherits this one's CPU affinity, so under taskset it takes
    one of the allowed cores); killed once the condition's rows are measured."""
    return subprocess.Popen([sys.executable, "-c", BUSY_LOOP])


def _measure(
    calls: Mapping[str, Callable[[], int]], rounds: int, seconds: float
) -> Dict[str, Tuple[List[float], float]]:
    """Interleaved rounds of about ``seconds`` per contender: per-item seconds and process CPU seconds."""
    per_round = {}
    for name, call in calls.items():  # warm-up, and how many calls make ``seconds``
        start = time.perf_counter()
        call()
        per_round[name] = max(1, min(400, int(seconds / max(time.perf_counter() - start, 1e-6))))
    results: Dict[str, Tuple[List[float], float]] = {name: ([], 0.0) for name in calls}
    clock = time.perf_counter
    for _ in range(rounds):
        for name, call in calls.items():
            samples, cpu = results[name]
            cpu0 = time.process_time()
            for _ in range(per_round[name]):
                start = clock()
                items = call()
                samples.extend([(clock() - start) / items] * items)
            results[name] = (samples, cpu + time.process_time() - cpu0)
    return results


def run(quick: bool = False) -> Table:
    cores = _cores()
    table = Table(
        "ort_options",
        f"18. ONNX Runtime options on the CPU ({cores} cores): the model alone and the node's frame loop",
        ["model", "use", "condition", "options", "ms", "iqr_ms", "per_s", "cpu_ms", "vs_default"],
    )
    rounds = scaled(quick, 6, 1)
    seconds = 0.25 if not quick else 0.01
    msgs = [image_message(camera_frame(640, 480, seed), "jpeg") for seed in range(scaled(quick, 10, 2))]
    with tempfile.TemporaryDirectory() as folder:
        for model, opener in _models(Path(folder)):
            heads = {name: opener(options) for name, options in CONTENDERS}
            try:
                _check_same(model, heads, msgs[0])
                for use in ("inference alone", "frame loop, 640x480 jpeg"):
                    calls = {name: _uses(head, msgs)[use] for name, head in heads.items()}
                    for condition in ("quiet", "one core busy"):
                        busy = _busy_process() if condition != "quiet" else None
                        try:
                            if busy is not None:
                                time.sleep(0.2)  # let it start spinning
                            results = _measure(calls, rounds, seconds)
                        finally:
                            if busy is not None:
                                busy.kill()
                                busy.wait()
                        _add_rows(table, model, use, condition, results)
            finally:
                for head in heads.values():
                    head.close()
    table.notes.append(
        "ms: median per inference or frame; per_s from the total time; cpu_ms: the process's CPU time (all its "
        "threads) per inference or frame, where busy-waiting pool threads show; vs_default: throughput against "
        f"the node's default ({DEFAULT.replace(' (node default)', '')}). 'frame loop': "
        "FrameProcessor.process_stream over camera-like "
        "640x480 JPEG frames (decode in a helper thread beside the heads, as the node's worker with overlap on). "
        "'one core busy': another process spins on one of the cores this one may use (under taskset it inherits "
        "the affinity). Each contender is the package's OnnxRuntimeBackend with those options (params "
        "ort_threads / ort_spinning); same outputs checked first."
    )
    return table


def _check_same(model: str, heads: Mapping[str, Head], msg: Any) -> None:
    """Every option gives the default's detections on a frame (options change speed, not results)."""
    expected = None
    for name, head in heads.items():
        detections = FrameProcessor([head], gpu_decode="off").process(msg, 0.0).outputs["detector"].result
        got = (detections.boxes, detections.scores)
        if expected is None:
            expected = got
        elif not (np.allclose(got[0], expected[0], atol=1e-2) and np.allclose(got[1], expected[1], atol=1e-4)):
            raise AssertionError(f"{model}: {name} gives other detections than {DEFAULT}")


def _add_rows(table: Table, model: str, use: str, condition: str,
              results: Mapping[str, Tuple[List[float], float]]) -> None:  # fmt: skip
    base = len(results[DEFAULT][0]) / sum(results[DEFAULT][0])
    for name, (samples, cpu) in results.items():
        q1, q3 = np.percentile(samples, [25, 75])
        rate = len(samples) / sum(samples)
        table.add(
            model=model, use=use, condition=condition, options=name, ms=float(np.median(samples)) * 1e3,
            iqr_ms=float(q3 - q1) * 1e3, per_s=rate, cpu_ms=cpu / len(samples) * 1e3, vs_default=rate / base,
        )  # fmt: skip


def _main() -> Any:  # python benchmarks/bench_ort_options.py
    print(run(quick="--quick" in sys.argv).render())


if __name__ == "__main__":
    _main()
