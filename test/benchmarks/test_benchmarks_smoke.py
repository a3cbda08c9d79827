"""benchmarks/run.py runs end to end in its quick mode and writes its JSON; no timing is asserted (speed is the
benchmarks' business, and CI machines are noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "benchmarks" / "run.py"


@pytest.mark.slow
def test_quick_run_prints_every_table_and_writes_json(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "NMSBoxesBatched"):  # the user-script twins are written as users write them
        pytest.skip("the benchmarks' user-script twins call cv2.dnn.NMSBoxesBatched (OpenCV >= 4.7)")
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload = json.loads(out.read_text(encoding="utf-8"))
    benchmarks = payload["benchmarks"]
    assert set(benchmarks) == {
        "overhead", "postprocess", "end_to_end", "memory", "latency", "messages", "gpu", "segmentation", "yolo",
        "replay", "heads", "tracking", "cameras", "evaluate", "overlap", "jpeg_reduce", "batch", "ort_options",
        "demo",
    }
    for name, table in benchmarks.items():
        assert "error" not in table, (name, table.get("error"))
        if table["skipped"]:  # the GPU benchmark off the GPU machine
            assert name == "gpu"
            continue
        assert table["rows"], name
        for row in table["rows"]:
            assert row["status"] in ("PASS", "MISS", "")
        assert f"## {table['title']}" in proc.stdout
    assert payload["machine"]["cpus"] >= 1
    assert "Summary:" in proc.stdout


def test_unknown_benchmark_names_are_refused() -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN), "--only", "overhead,nonsense"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "nonsense" in proc.stderr
