#!/usr/bin/env python3
"""Run every trt_perception benchmark side by side: print the tables with targets and PASS/MISS, write JSON.

    python benchmarks/run.py                 # everything (about 5 minutes on 2 cores: 290-320 s, 19 benchmarks)
    python benchmarks/run.py --quick         # a few iterations of each, to check that it runs (~50 s on 2 cores)
    python benchmarks/run.py --only overhead,postprocess --json out.json

Benchmarks: overhead (1), postprocess (2), end_to_end (3), memory (4), latency (5), messages (6), gpu (7,
only where a CUDA GPU and cuda-python or pycuda are present), segmentation (8), yolo (9, YOLOv8 decode +
NMS), replay (10), heads (11), cameras (12), evaluate (13), tracking (14), overlap (15, decode overlapped with
inference), jpeg_reduce (16), batch (17), ort_options (18) and demo (19, the whole `trt-perception demo`
command); benchmarks/README.md says what each compares. JSON goes to benchmarks/results/<time>.json unless
--json names a file. Exit status: 0, also when targets are missed (the tables say so); 1 when a benchmark
crashed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:  # a fresh checkout without `pip install -e .`
    sys.path.insert(1, str(HERE.parent))

BENCHMARKS = {  # name -> module; run in this order
    "overhead": "bench_overhead",
    "postprocess": "bench_postprocess",
    "end_to_end": "bench_end_to_end",
    "memory": "bench_memory",
    "latency": "bench_latency",
    "messages": "bench_messages",
    "gpu": "bench_gpu",
    "segmentation": "bench_segmentation",
    "yolo": "bench_yolo",
    "replay": "bench_replay",
    "heads": "bench_heads",
    "cameras": "bench_cameras",
    "evaluate": "bench_evaluate",
    "tracking": "bench_tracking",
    "overlap": "bench_overlap",
    "jpeg_reduce": "bench_jpeg_reduce",
    "batch": "bench_batch",
    "ort_options": "bench_ort_options",
    "demo": "bench_demo",
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few iterations and short runs (smoke test)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {list(BENCHMARKS)}")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    parser.add_argument("--json", type=Path, default=None, help="write results here (default benchmarks/results/)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="print the tables of an earlier run's JSON as markdown (for README) and exit")  # fmt: skip
    args = parser.parse_args(argv)
    for option in ("only", "skip"):
        names = [n.strip() for n in getattr(args, option).split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            parser.error(f"--{option}: unknown benchmark(s) {unknown}; expected names from {list(BENCHMARKS)}")
        setattr(args, option, names)
    return args


def render(path: Path) -> str:
    """Markdown of a results JSON: the machine line, then every table."""
    import json

    from common import Table

    payload = json.loads(path.read_text(encoding="utf-8"))
    info = payload["machine"]
    lines = [
        f"{info['date']}, {info['processor']}, {info['cpus']} CPUs, Python {info['python']}, numpy "
        f"{info['numpy']}, OpenCV {info['opencv']} ({info['opencv_threads']} threads), onnxruntime "
        f"{info.get('onnxruntime', 'absent')}{' (quick run)' if payload.get('quick') else ''}",
        "",
    ]
    for key, data in payload["benchmarks"].items():
        if "error" in data:
            lines += [f"## {key}: CRASHED ({data['error']})", ""]
            continue
        table = Table(key, data["title"], data["columns"], data["rows"], data["notes"], data["skipped"])
        lines += [table.render(), ""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from common import machine_info, write_json

    if args.render is not None:
        print(render(args.render))
        return 0

    names = [n for n in (args.only or list(BENCHMARKS)) if n not in args.skip]
    info = machine_info()
    print(
        f"trt_perception benchmarks ({'quick' if args.quick else 'full'}) on {info['processor']}, "
        f"{info['cpus']} CPUs, Python {info['python']}, numpy {info['numpy']}, OpenCV {info['opencv']} "
        f"({info['opencv_threads']} threads), onnxruntime {info.get('onnxruntime', 'absent')}, {info['date']}\n"
    )
    results: Dict[str, Any] = {}
    crashed = []
    for name in names:
        start = time.perf_counter()
        try:
            table = importlib.import_module(BENCHMARKS[name]).run(quick=args.quick)
        except Exception as exc:  # one crashing benchmark must not hide the others' tables
            crashed.append(name)
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"## {name}: CRASHED ({type(exc).__name__}: {exc})\n", flush=True)
            continue
        seconds = time.perf_counter() - start
        print(table.render())
        print(f"({seconds:.1f} s)\n", flush=True)
        results[name] = {**table.to_json(), "seconds": round(seconds, 2)}
    rows = [r for t in results.values() for r in t.get("rows", [])]
    passed = sum(1 for r in rows if r.get("status") == "PASS")
    missed = sum(1 for r in rows if r.get("status") == "MISS")
    print(f"Summary: {passed} PASS, {missed} MISS, {len(crashed)} crashed {crashed if crashed else ''}".rstrip())
    path = args.json
    if path is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = HERE / "results" / f"{stamp}{'-quick' if args.quick else ''}.json"
    write_json(path, {"machine": info, "quick": args.quick, "benchmarks": results})
    print(f"JSON: {path}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
