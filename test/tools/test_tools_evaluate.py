"""`trt-perception evaluate` over bags the tests record, through the real pipeline and tiny ONNX models.

Checked by hand on small cases: the TOTAL mAP pools the frames of every input (not a mean of per-input mAPs),
the MAE weighs each input by its matched frames, latency percentiles agree with the pooled samples; per-input
numbers equal a plain `replay`; A/B differences and the `--fail-if` exit statuses; a crashed input (a bad
file, a worker process that dies) is reported and the rest go on; the report folder is never overwritten
without --force; memory does not grow with the number of inputs; Ray gives the local run's numbers.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bagfixtures import brightness_command, frames_with_squares, write_bag, write_params

from trt_perception.cli import main as cli_main
from trt_perception.errors import ConfigError
from trt_perception.tools.evaluate import evaluate, parse_gate, run_local
from trt_perception.tools.evaluate_inputs import EvalOptions, FrameRows, InputRef, Task, discover_inputs, run_task
from trt_perception.tools.evaluate_report import LatencyHistogram
from trt_perception.tools.evaluation import coco_map
from trt_perception.tools.replay import replay_bag

TRUTH, DRIVE = "/ground_truth/detections", "/teleop/cmd_vel"
OPTIONS = EvalOptions(truth_detections_topic=TRUTH, truth_drive_topic=DRIVE)
MISSED_BOX = (8.0, 8.0, 24.0, 24.0)  # a truth box on a dark cell: the grid detector cannot find it


def make_params(folder: Path, models: Path, **extra: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    values: Dict[str, object] = {
        "detector__model": str(models / "grid.onnx"),
        "pilot__model": str(models / "pilot.onnx"),
        "pilot__enabled": True,
        "pilot__throttle_mode": "model",
    }
    values.update(extra)
    return write_params(folder, **values)


def truth_bag(path: Path, count: int, steer_offset: float, missed: int = 0) -> Path:
    """``count`` frames, the first with a square the detector finds (frame 1), ``missed`` more frames with a
    truth box it cannot find; recorded steering = what the pilot says + ``steer_offset``."""
    frames = frames_with_squares(count, every=count)
    for frame in frames:
        if not frame.boxes and missed > 0:
            frame.boxes, frame.labels = [MISSED_BOX], ["blob"]
            missed -= 1
        steering, throttle = brightness_command(frame.image_bgr)
        frame.drive = (steering + steer_offset, throttle)
    return write_bag(path, frames, drive_topic=DRIVE, truth_topic=TRUTH)


def coco_points(recall: float) -> float:
    """COCO AP when every detection is right and ``recall`` of the truth is found: precision 1 at the
    101 recall thresholds up to ``recall``, 0 beyond."""
    return sum(1 for r in np.linspace(0, 1, 101) if r <= recall + 1e-12) / 101


@pytest.fixture(scope="module")
def two_bags(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("bags")
    one = truth_bag(folder / "one", 4, steer_offset=0.1)  # 1 truth box, found: AP 1
    eight = truth_bag(folder / "eight", 8, steer_offset=0.3, missed=7)  # 8 truth boxes, 1 found: AP 13/101
    return one, eight


# ------------------------------------------------------------------------------------------- totals


def test_totals_pool_frames_and_match_plain_replay(tmp_path: Path, models: Path, two_bags: Tuple[Path, Path]) -> None:
    params = make_params(tmp_path / "a", models)
    result = evaluate(list(two_bags), params, out=tmp_path / "eval", workers=2, options=OPTIONS, plots=False)

    assert result.exit_code == 0, result.text
    results = result.report["results"]
    one, eight = results["per_input"]
    assert (one["name"], eight["name"]) == ("one", "eight")
    assert one["A"]["map50"] == pytest.approx(1.0)
    assert eight["A"]["map50"] == pytest.approx(coco_points(1 / 8))  # 13/101
    total = results["totals"]["A"]
    # pooled: 2 of 9 truth boxes found -> 23/101, far from the mean of the per-input mAPs (0.564)
    assert total["detection"]["map50"] == pytest.approx(coco_points(2 / 9))
    assert total["detection"]["map50"] == pytest.approx(23 / 101)
    assert (total["detection"]["true_positives"], total["detection"]["false_negatives"]) == (2, 7)
    # MAE weighted by matched frames: (4 x 0.1 + 8 x 0.3) / 12, not (0.1 + 0.3) / 2
    assert total["drive"]["matched"] == 12
    assert total["drive"]["steering_mae"] == pytest.approx((4 * 0.1 + 8 * 0.3) / 12, abs=1e-4)
    assert total["frames"] == {"in": 12, "processed": 12, "bad": 0, "failed": 0, "dropped": 0}

    # per input: the numbers `trt-perception replay` gives for the same bag and params
    for entry, bag in zip(results["per_input"], two_bags):
        plain = replay_bag(bag, params, truth_detections_topic=TRUTH, truth_drive_topic=DRIVE, plots=False)
        assert entry["A"]["map50"] == pytest.approx(plain.detection_eval.map_50, abs=1e-12)
        assert entry["A"]["steering_mae"] == pytest.approx(plain.drive.steering_mae, abs=1e-12)
        assert entry["A"]["frames_processed"] == plain.frames_processed

    # the rows on disk: the same per-input mAP, truth paired with every frame, latency samples per frame
    rows = [FrameRows.load(p) for p in sorted((result.out / "inputs" / "A").glob("*.npz"))]
    assert [len(r) for r in rows] == [4, 8]
    assert coco_map(list(rows[1].scored_frames()))["map_50"] == pytest.approx(13 / 101)
    assert coco_map([f for r in rows for f in r.scored_frames()])["map_50"] == pytest.approx(23 / 101)
    pooled = np.concatenate([r.latency["total"] for r in rows]).astype(np.float64) * 1e3
    for q, key in ((50, "p50_ms"), (95, "p95_ms")):
        assert total["latency_ms"]["total"][key] == pytest.approx(np.percentile(pooled, q), rel=0.011)
    assert total["latency_ms"]["total"]["max_ms"] == pytest.approx(pooled.max(), rel=1e-6)
    assert total["latency_ms"]["total"]["count"] == 12

    for name in ("report.json", "summary.txt", "per_input.csv"):
        assert (result.out / name).is_file()
    saved = json.loads((result.out / "report.json").read_text())
    assert saved["results"]["totals"] == results["totals"]
    assert (result.out / "summary.txt").read_text().strip() == result.text.strip()
    assert "TOTAL (pooled)" in result.text


def test_latency_histogram_percentiles_within_half_a_percent() -> None:
    rng = np.random.default_rng(3)
    samples = [rng.lognormal(-6, 0.5, n) for n in (5, 300, 1000)]
    merged = LatencyHistogram()
    for part in samples:
        merged.add(part)
    pooled = np.concatenate(samples)
    for q in (50, 95, 99):
        assert merged.percentile(q) == pytest.approx(np.percentile(pooled, q), rel=0.011)
    assert merged.count == pooled.size and merged.max == pooled.max()
    assert merged.to_dict()["mean_ms"] == pytest.approx(pooled.mean() * 1e3)


# ------------------------------------------------------------------------------------------- A/B and gates


def test_ab_side_by_side_and_gates_set_the_exit_status(tmp_path: Path, models: Path, two_bags: Tuple[Path, Path],
                                                       capsys: pytest.CaptureFixture) -> None:
    a = make_params(tmp_path / "a", models)
    b = make_params(tmp_path / "b", models, pilot__steering_scale=0.5)  # the candidate steers half as much
    base = ["evaluate", *map(str, two_bags), "--params", str(a), "--params-b", str(b), "--truth-detections-topic",
            TRUTH, "--truth-drive-topic", DRIVE, "--workers", "0", "--no-plots", "--labels", "fp32,half"]

    code = cli_main([*base, "--out", str(tmp_path / "tripped"), "--fail-if", "map50_drop>0.01",
                     "--fail-if", "steering_mae_rise > 0.005"])
    text = capsys.readouterr().out
    assert code == 1, text
    report = json.loads((tmp_path / "tripped" / "report.json").read_text())
    assert [g["failed"] for g in report["gates"]] == [False, True]
    assert "FAIL  --fail-if 'steering_mae_rise > 0.005'" in text and "pass  --fail-if 'map50_drop>0.01'" in text

    # by hand: the pilot's steering s against recorded s + offset; B predicts s / 2
    def mae(scale: float) -> float:
        errors = []
        for count, offset in ((4, 0.1), (8, 0.3)):
            for frame in frames_with_squares(count, every=count):
                s = brightness_command(frame.image_bgr)[0]
                errors.append(abs(scale * s - (s + offset)))
        return float(np.mean(errors))

    diff = report["results"]["differences"]
    assert diff["map50_drop"] == pytest.approx(0.0)
    assert diff["steering_mae_rise"] == pytest.approx(mae(0.5) - mae(1.0), abs=1e-4)
    assert report["results"]["totals"]["B"]["drive"]["steering_mae"] == pytest.approx(mae(0.5), abs=1e-4)
    assert [v["label"] for v in report["variants"]] == ["fp32", "half"]
    steer = report["results"]["comparison"]["steering"]
    assert steer["frames"] == 12
    top = steer["top_frames"][0]  # the brightest frame: the largest steering, so the largest halving
    assert top["abs_difference"] == pytest.approx(max(abs(t["steering_a"] - t["steering_b"])
                                                      for t in steer["top_frames"]))
    assert report["results"]["comparison"]["detection"]["frames_that_differ"] == 0
    assert (tmp_path / "tripped" / "disagreements.csv").is_file()

    code = cli_main([*base, "--out", str(tmp_path / "holds"), "--fail-if", "steering_mae_rise>10",
                     "--fail-if", "map50<0.2"])
    assert code == 0, capsys.readouterr().out


def test_gate_grammar_errors_name_the_fix(tmp_path: Path, models: Path, two_bags: Tuple[Path, Path],
                                          capsys: pytest.CaptureFixture) -> None:
    gate = parse_gate(" map50_drop >= 1e-2 ", ab=True)
    assert (gate.metric, gate.op, gate.threshold) == ("map50_drop", ">=", 0.01)
    cases = {
        "map_drop>0.01": "did you mean map50_drop",
        "map50_drop==0.01": "operator '==' is not allowed",
        "map50_drop>lots": "'lots' is not a number",
        "map50_drop": "expected METRIC OP NUMBER",
        "steering_mae_rise>0.005": "pass --params-b",
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
            parse_gate(text, ab=text.startswith("map"))
    params = make_params(tmp_path / "a", models)
    code = cli_main(["evaluate", str(two_bags[0]), "--params", str(params), "--fail-if", "steering_mae_rise>0.005",
                     "--out", str(tmp_path / "never")])
    assert code == 2 and "--params-b" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_an_unmeasured_metric_trips_its_gate(tmp_path: Path, models: Path, two_bags: Tuple[Path, Path]) -> None:
    params = make_params(tmp_path / "a", models)
    result = evaluate([two_bags[0]], params, out=tmp_path / "eval", workers=0, plots=False,
                      options=EvalOptions(truth_drive_topic=DRIVE), fail_if=["map50<0.5"])  # no detection truth
    assert result.exit_code == 1
    assert "was not measured" in result.report["gates"][0]["message"]


# ------------------------------------------------------------------------------------------- failures


def test_a_bad_input_is_reported_and_the_rest_go_on(tmp_path: Path, models: Path, two_bags: Tuple[Path, Path]) -> None:
    broken = tmp_path / "broken.mcap"
    broken.write_bytes(b"this is not an mcap file" * 10)
    params = make_params(tmp_path / "a", models)
    result = evaluate([two_bags[0], broken, two_bags[1]], params, out=tmp_path / "eval", workers=2, options=OPTIONS,
                      plots=False)
    assert result.exit_code == 3
    results = result.report["results"]
    assert [f["name"] for f in results["failed"]] == ["broken"]
    assert "broken.mcap" in results["failed"][0]["error"]
    assert results["inputs_included"] == 2
    assert results["totals"]["A"]["detection"]["map50"] == pytest.approx(23 / 101)
    assert "FAILED" in result.text and "broken" in result.text
    # the whole first line of the error, fix included (the table cut it at 300 characters, before the fix)
    failed_line = next(line for line in result.text.splitlines() if line.strip().startswith("FAILED A"))
    assert failed_line.rstrip().endswith(results["failed"][0]["error"].splitlines()[0].rstrip())
    assert "ros2 bag reindex BAG" in failed_line  # the repair hint at its end


def test_the_progress_bar_ends_full_when_an_input_fails() -> None:
    """A failed input's frames never come: they leave the total (the bar ended at 70% before)."""
    from trt_perception.tools.evaluate import _Progress

    bar = _Progress({(0, "A"): 10, (1, "A"): 20, (2, "A"): 5}, 3, enabled=True)
    bar.frames(10)
    bar.task_done({"index": 0, "variant": "A", "ok": True}, frames_if_unseen=False)
    bar.task_done({"index": 1, "variant": "A", "ok": False}, frames_if_unseen=False)
    assert bar.bar.total == 15
    bar.frames(13)  # the last input crashes after 3 of its 5 frames
    bar.task_done({"index": 2, "variant": "A", "ok": False}, frames_if_unseen=False)
    bar.close()
    assert bar.bar.n == bar.bar.total == 13


def test_inputs_of_the_same_name_are_told_apart() -> None:
    from trt_perception.tools.evaluate import display_names

    assert display_names(["/r/data/tub_1", "/r/bags/tub_1", "/r/x/one.mcap", "/r/two"]) == [
        "data/tub_1", "bags/tub_1", "one", "two"]
    assert display_names(["/a/b/x", "/c/b/x"]) == ["a/b/x", "c/b/x"]


def crashing_task(task: Task) -> Dict[str, Any]:
    """Runs in a spawned worker: dies like a segfault in native code on the input named 'eight'."""
    if task.input.name == "eight":
        os._exit(11)
    return run_task(task)


def test_a_worker_that_dies_is_reported_and_the_rest_go_on(tmp_path: Path, models: Path,
                                                           two_bags: Tuple[Path, Path]) -> None:
    params = make_params(tmp_path / "a", models)
    result = evaluate([two_bags[0], two_bags[1]], params, out=tmp_path / "eval", workers=2, options=OPTIONS,
                      plots=False, task_function=crashing_task)
    assert result.exit_code == 3
    failed = result.report["results"]["failed"]
    assert [f["name"] for f in failed] == ["eight"] and "worker process died" in failed[0]["error"]
    assert result.report["results"]["per_input"][0]["A"]["map50"] == pytest.approx(1.0)

    results: List[Dict[str, Any]] = []
    tasks = [Task(i, "A", str(params), InputRef(str(b), "bag"), OPTIONS) for i, b in enumerate([*two_bags, *two_bags])]

    class Quiet:
        def frames(self, count: int) -> None: ...

        def task_done(self, result: Dict[str, Any], frames_if_unseen: bool) -> None: ...

    run_local(tasks, 2, results.append, Quiet(), crashing_task)  # type: ignore[arg-type]
    assert sorted((r["index"], r["ok"]) for r in results) == [(0, True), (1, False), (2, True), (3, False)]


# ------------------------------------------------------------------------------------------- run folder, inputs


def test_report_folder_is_never_overwritten_without_force(tmp_path: Path, models: Path,
                                                          two_bags: Tuple[Path, Path]) -> None:
    params = make_params(tmp_path / "a", models)
    out = tmp_path / "eval"
    evaluate([two_bags[0]], params, out=out, workers=0, plots=False)
    with pytest.raises(ConfigError, match="--force"):
        evaluate([two_bags[0]], params, out=out, workers=0, plots=False)
    evaluate([two_bags[0]], params, out=out, workers=0, plots=False, force=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not an earlier evaluation"):
        evaluate([two_bags[0]], params, out=mine, workers=0, plots=False, force=True)
    assert (mine / "thesis.tex").read_text() == "precious"


def test_out_is_checked_before_the_work_and_an_empty_folder_is_kept(tmp_path: Path, models: Path,
                                                                     two_bags: Tuple[Path, Path]) -> None:
    """A file as --out, or a path below a file, is one ConfigError before any input runs (staging beside it
    raised PermissionError/NotADirectoryError); the user's empty folder receives the files and keeps its mode."""
    params = make_params(tmp_path / "a", models)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for out, message in ((a_file, "is an existing file"), (a_file / "eval", "notes.txt is an existing file")):
        with pytest.raises(ConfigError, match=message):
            evaluate([two_bags[0]], params, out=out, workers=0, plots=False)
    assert a_file.read_text() == "mine" and not list(tmp_path.glob(".*partial"))
    empty = tmp_path / "empty"
    empty.mkdir()
    empty.chmod(0o770)
    result = evaluate([two_bags[0]], params, out=empty, workers=0, plots=False)
    assert (empty / "report.json").is_file() and result.out == empty
    assert (empty.stat().st_mode & 0o777) == 0o770 and not list(tmp_path.glob(".*partial"))


def test_inputs_from_folders_globs_and_lists(tmp_path: Path, two_bags: Tuple[Path, Path]) -> None:
    root = two_bags[0].parent
    nested = root / "more" / "deeper"
    nested.mkdir(parents=True, exist_ok=True)
    loose = nested / "loose.mcap"
    loose.write_bytes(b"")
    names = [Path(r.path).name for r in discover_inputs([root])]
    assert names == ["eight", "loose.mcap", "one"]  # sorted; a bag folder is not searched inside
    assert [Path(r.path).name for r in discover_inputs([str(root / "o*")])] == ["one"]
    listing = tmp_path / "bags.txt"
    listing.write_text(f"# my recordings\n{two_bags[1]}\n{two_bags[0]}  # the short one\n{two_bags[1]}\n")
    assert [r.name for r in discover_inputs([], [listing])] == ["eight", "one"]
    for bad, message in (([tmp_path / "nope"], "does not exist"), ([str(tmp_path / "x*")], "matches no recording"),
                         ([tmp_path], "holds no recording"), ([], "no inputs")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            discover_inputs(bad)
    loose.unlink()


def test_plots_are_drawn(tmp_path: Path, models: Path, two_bags: Tuple[Path, Path]) -> None:
    pytest.importorskip("matplotlib")
    a = make_params(tmp_path / "a", models)
    b = make_params(tmp_path / "b", models, pilot__steering_scale=0.5, detector__score_threshold=0.99)
    result = evaluate(list(two_bags), a, params_b=b, out=tmp_path / "eval", workers=0, options=OPTIONS)
    for name in ("per_input.png", "latency.png", "ab_differences.png"):
        assert (result.out / name).stat().st_size > 1000, name


# ------------------------------------------------------------------------------------------- memory, Ray


def test_memory_is_flat_in_the_number_of_inputs(tmp_path: Path, models: Path) -> None:
    """Everything in this process (workers 0), so tracemalloc sees replay too: 20 inputs peak like 2."""
    params = make_params(tmp_path / "a", models)
    bags = [truth_bag(tmp_path / "bags" / f"b{i:02d}", 6, steer_offset=0.05 * (i % 3), missed=2) for i in range(20)]
    # imports and one-time work (rosbags compiles (de)serializers on first use: one 3.7 MB code string was seen
    # landing inside the measured run under the full colcon suite) happen before anything is measured
    evaluate(bags, params, out=tmp_path / "warm", workers=0, options=OPTIONS, plots=False)

    def peak(count: int) -> int:
        gc.collect()  # start both from the same collector state (the whole suite leaves garbage of its own)
        tracemalloc.start()
        try:
            evaluate(bags[:count], params, out=tmp_path / f"eval{count}", workers=0, options=OPTIONS, plots=False)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(2), peak(20)
    assert large - small < 1_000_000, (small, large)  # 18 more inputs: < 1 MB more at the peak


def test_an_unreachable_ray_address_is_one_error_not_minutes_of_retries() -> None:
    import socket

    from trt_perception.tools.evaluate import _check_reachable

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ConfigError, match=f"nothing answers at 127.0.0.1:{port}.*fix: start the cluster"):
            _check_reachable(address, timeout_s=2.0)
    _check_reachable("auto")
    _check_reachable("local")


def test_an_interrupted_run_is_kept_until_force(tmp_path: Path, models: Path, two_bags: Tuple[Path, Path]) -> None:
    params = make_params(tmp_path / "a", models)
    staging = tmp_path / ".eval.partial"
    (staging / "inputs" / "A").mkdir(parents=True)
    (staging / "inputs" / "A" / "0000-one.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"interrupted evaluation \(1 finished input runs\).*--force"):
        evaluate([two_bags[0]], params, out=tmp_path / "eval", workers=0, plots=False)
    assert (staging / "inputs" / "A" / "0000-one.json").is_file()
    evaluate([two_bags[0]], params, out=tmp_path / "eval", workers=0, plots=False, force=True)
    assert (tmp_path / "eval" / "report.json").is_file() and not staging.exists()


def test_a_ray_task_uses_its_share_of_cores_not_the_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray pins no affinity: without this, every task's replay would start a helper thread per core of the node."""
    import cv2

    from trt_perception.tools import evaluate_inputs

    monkeypatch.setattr(evaluate_inputs, "_REPLAY_THREADS", None)
    before = cv2.getNumThreads()
    seen: List[Any] = []
    try:
        result = evaluate_inputs.run_in_worker(lambda task: seen.append((task, evaluate_inputs._REPLAY_THREADS,
                                                                         cv2.getNumThreads())) or "done", 2, "t")
    finally:
        cv2.setNumThreads(before)
    assert result == "done" and seen == [("t", 2, 2)]


@pytest.mark.slow
def test_ray_gives_the_local_numbers(tmp_path: Path, models: Path, two_bags: Tuple[Path, Path]) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed here (optional extra 'ray')")
    a = make_params(tmp_path / "a", models)
    b = make_params(tmp_path / "b", models, pilot__steering_scale=0.5)
    local = evaluate(list(two_bags), a, params_b=b, out=tmp_path / "local", workers=2, options=OPTIONS, plots=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        proc = subprocess.run(
            [sys.executable, "-m", "trt_perception.cli", "evaluate", *map(str, two_bags), "--params", str(a),
             "--params-b", str(b), "--truth-detections-topic", TRUTH, "--truth-drive-topic", DRIVE, "--ray", address,
             "--out", str(tmp_path / "ray"), "--no-plots", "--no-progress"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        ray.shutdown()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    remote = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert remote["runner"] == f"Ray at {address}"

    def accuracy(results: Dict[str, Any]) -> Dict[str, Any]:
        """Everything but timing (latency, wall time, frames/s) and where it ran."""
        def strip(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items() if "latency" not in k and k not in
                        ("wall_s", "replay_wall_s", "fps", "frames_per_second_per_worker", "host",
                         "notes")}  # fmt: skip
            if isinstance(value, list):
                return [strip(v) for v in value]
            return value

        return strip(results)

    assert accuracy(remote["results"]) == accuracy(local.report["results"])  # A/B differences included
    assert remote["results"]["differences"]["steering_mae_rise"] == local.report["results"]["differences"][
        "steering_mae_rise"] != 0


def test_tracking_is_pooled_over_inputs_and_gated(tmp_path: Path) -> None:
    """MOTA/IDF1 pooled from the per-input counts (not a mean of per-input scores), in the text, CSV and gates:
    mota/idf1/id_switches absolute, mota_drop/idf1_drop/id_switches_rise for A/B."""
    pytest.importorskip("lap", reason="ByteTrack needs lapx (the test extra has it)")
    pytest.importorskip("motmetrics", reason="MOTA/IDF1 need motmetrics (the test extra has it)")
    from bagfixtures import MovingObject, frames_with_tracks
    from track_factory import coded_detector

    coded_detector(tmp_path)
    seen = [MovingObject("cone-a", "cone", 0, start=(10, 20), velocity=(4, 0))]
    missed = [MovingObject("cone-c", "cone", 0, start=(40, 100), velocity=(3, -1), missed=range(5, 10))]
    bags = [write_bag(tmp_path / "seen", frames_with_tracks(seen, 30), truth_topic=TRUTH),
            write_bag(tmp_path / "missed", frames_with_tracks(missed, 12), truth_topic=TRUTH)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    params = write_params(tmp_path / "a", heads=["detector"], detector__model=str(tmp_path / "coded.onnx"),
                          detector__tracker="bytetrack")
    late = write_params(tmp_path / "b", heads=["detector"], detector__model=str(tmp_path / "coded.onnx"),
                        detector__tracker="bytetrack", detector__track_min_hits=5)
    result = evaluate(bags, params, params_b=late, out=tmp_path / "eval", workers=1, plots=False,
                      options=EvalOptions(truth_detections_topic=TRUTH), fail_if=["mota<0.99", "id_switches_rise>0"])
    results = result.report["results"]
    rows = [entry["A"] for entry in results["per_input"]]
    tracking = results["totals"]["A"]["tracking"]
    assert tracking["inputs"] == 2 and tracking["truth_boxes"] == 42
    errors = sum(r["track_misses"] + r["track_false_positives"] + r["id_switches"] for r in rows)
    assert tracking["mota"] == pytest.approx(1 - errors / 42)
    assert tracking["mota"] != pytest.approx((rows[0]["mota"] + rows[1]["mota"]) / 2)  # pooled, not a mean
    identity = sum(2 * r["idtp"] + r["idfp"] + r["idfn"] for r in rows)
    assert tracking["idf1"] == pytest.approx(2 * sum(r["idtp"] for r in rows) / identity)
    b = results["totals"]["B"]["tracking"]
    assert results["differences"]["mota_drop"] == pytest.approx(tracking["mota"] - b["mota"]) and b["mota"] < tracking[
        "mota"]  # ids start 3 frames later under B: more misses
    gates = {g["expression"]: g["failed"] for g in result.report["gates"]}
    assert gates == {"mota<0.99": True, "id_switches_rise>0": False} and result.exit_code == 1
    assert "tracking MOTA" in result.text
    assert "mota" in (result.out / "per_input.csv").read_text().splitlines()[0]


def test_synthetic_bag_has_the_demo_topics_and_truth_and_is_deterministic(tmp_path: Path) -> None:
    from bagfixtures import read_messages

    from trt_perception.errors import BagError
    from trt_perception.tools.synthetic_bag import main as synthetic_main
    from trt_perception.tools.synthetic_bag import write_synthetic_bag

    first = write_synthetic_bag(tmp_path / "a", world=8, seconds=0.4, fps=10)
    messages = read_messages(first)
    assert messages["__types__"] == {"/camera/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
                                     "/teleop/cmd_vel": "geometry_msgs/msg/Twist",
                                     "/ground_truth/detections": "vision_msgs/msg/Detection2DArray"}  # fmt: skip
    assert len(messages["/camera/image_raw/compressed"]) == 4
    for (_, image), (_, truth) in zip(messages["/camera/image_raw/compressed"], messages["/ground_truth/detections"]):
        assert truth.header.stamp == image.header.stamp
        assert all(d.results[0].hypothesis.class_id in ("cone", "box") for d in truth.detections)
        assert all(d.id.startswith(d.results[0].hypothesis.class_id + "-") for d in truth.detections)
    second = write_synthetic_bag(tmp_path / "b", world=8, seconds=0.4, fps=10)
    assert [bytes(m.data) for _, m in read_messages(second)["/camera/image_raw/compressed"]] == \
        [bytes(m.data) for _, m in messages["/camera/image_raw/compressed"]]
    with pytest.raises(BagError, match="--force"):
        write_synthetic_bag(first, seconds=0.2)
    assert synthetic_main([str(first), "--seconds", "0.2", "--force"]) == 0
    assert len(read_messages(first)["/camera/image_raw/compressed"]) == 3  # 0.2 s at 15 fps


# ------------------------------------------------------------------------------------------- tubs


def test_a_donkeycar_tub_is_an_input_scored_against_its_recorded_commands(tmp_path: Path, models: Path,
                                                                           two_bags: Tuple[Path, Path]) -> None:
    """A tub folder among bags (found in a folder, a glob and a list alike), replayed through tools/tub.py
    with user/angle & user/throttle (as /user/cmd_vel) as the reference commands."""
    from tubfixtures import drive_frames, write_tub

    from trt_perception.tools.tub import IMAGE_TOPIC

    root = tmp_path / "recordings"
    tub = write_tub(root / "tub_1", drive_frames(10))
    assert [(Path(r.path).name, r.kind) for r in discover_inputs([root])] == [("tub_1", "tub")]
    assert [r.kind for r in discover_inputs([str(root / "tub_*"), two_bags[0]])] == ["tub", "bag"]
    params = make_params(tmp_path / "p", models, detector__enabled=False, image_topic=IMAGE_TOPIC)
    result = evaluate([tub], params, out=tmp_path / "eval", workers=0, plots=False)
    assert result.exit_code == 0, result.text
    (entry,) = result.report["results"]["per_input"]
    row = entry["A"]
    assert row["ok"] and row["frames_processed"] == 10 and row["matched"] == 10
    assert row["steering_mae"] < 0.01 and row["throttle_mae"] < 0.01  # JPEG noise only
    direct = replay_bag(tub, params, truth_drive_topic="/user/cmd_vel")
    assert row["steering_mae"] == pytest.approx(direct.drive.steering_mae, abs=1e-12)
    # with the bags' --truth-drive-topic (one flag for the whole run) the tub keeps its own commands
    camera = make_params(tmp_path / "q", models, detector__enabled=False)  # the bags' camera; a tub uses its own
    mixed = evaluate([tub, two_bags[0]], camera, out=tmp_path / "mixed", workers=0, plots=False,
                     options=EvalOptions(truth_drive_topic=DRIVE))
    tub_row, bag_row = (entry["A"] for entry in mixed.report["results"]["per_input"])
    assert tub_row["ok"] and tub_row["steering_mae"] == pytest.approx(row["steering_mae"], abs=1e-12)
    assert bag_row["ok"] and bag_row["matched"] == 4 and mixed.exit_code == 0, mixed.text
    assert any(f"has no {DRIVE}" in note for note in tub_row["notes"])
    # a damaged tub's lost frames never reach the pipeline ("bad 0"): the text lists them
    (tub / "images" / "3_cam_image_array_.jpg").unlink()
    damaged = evaluate([tub], params, out=tmp_path / "eval2", workers=0, plots=False)
    assert "recording problems" in damaged.text and "tub_1: missing image: 1" in damaged.text
