"""`trt-perception demo`, the whole command as a user runs it: a fresh process each (imports, the replay of the
shipped bag through three heads, scoring, report files, exit).

Three ways, in interleaved rounds: as shipped (the report's matplotlib plots drawn by a child process that
imports matplotlib while the bag and models open and draws while the tracks are scored), the same plots drawn
in the command's own process one after another (how the demo drew them before the plot process), and
``--no-plots``. The second is run through a two-line wrapper that turns the plot process off; everything else
is the installed command. As installed: Python's bytecode cache on (see bench_replay.process_rows), one
untimed run of each first.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from common import Table, scaled

TARGET_S = 2.0  # README "How long it takes"

IN_PROCESS = """import sys
from trt_perception.cli import main
from trt_perception.tools import plot_process
plot_process.start_plot_process = lambda wanted: None  # the plots drawn in this process, as before
sys.exit(main(sys.argv[1:]))
"""


def run(quick: bool = False) -> Table:
    table = Table(
        "demo",
        "19. trt-perception demo, whole command (fresh process each: imports, replay, scoring, report files)",
        ["contender", "runs", "median_s", "iqr_s", "min_s", "max_s"],
    )
    rounds = scaled(quick, 5, 1)
    exe = Path(sys.executable).with_name("trt-perception")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "trt_perception.cli"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as folder:
        wrapper = Path(folder) / "demo_in_process.py"
        wrapper.write_text(IN_PROCESS, encoding="utf-8")
        common_args = ["demo", "--report", str(Path(folder) / "reports"), "--no-progress"]
        contenders = {
            "demo (plots in a child process)": [*command, *common_args],
            "demo, plots drawn in its own process": [sys.executable, str(wrapper), *common_args],
            "demo --no-plots": [*command, *common_args, "--no-plots"],
        }
        for argv in contenders.values() if not quick else ():  # warm caches (bytecode, page cache) alike
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        seconds: Dict[str, List[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, argv in contenders.items():
                seconds[name].append(_wall(argv, env))
    for name, values in seconds.items():
        q1, q3 = np.percentile(values, [25, 75])
        graded = name.startswith("demo (")
        table.add(
            (statistics.median(values) <= TARGET_S) if graded else None, target=f"<= {TARGET_S:g} s" if graded else "",
            contender=name, runs=len(values), median_s=statistics.median(values), iqr_s=float(q3 - q1),
            min_s=min(values), max_s=max(values),
        )  # fmt: skip
    table.notes.append(
        "Wall time of the whole command, from the process start to its exit, on this machine's cores; the demo "
        "replays 270 frames through the detector (with its tracker), the drivable-area net and the pilot, scores "
        "them (mAP, MOTA/IDF1, mIoU, steering MAE) and writes report.json, four plots and the output bag."
    )
    return table


def _wall(argv: List[str], env: Dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def _main() -> Any:  # python benchmarks/bench_demo.py
    print(run(quick=False).render())


if __name__ == "__main__":
    _main()
