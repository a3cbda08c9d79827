"""The report's plots drawn in a child process (``PlotProcess``): byte for byte the files drawn in this process,
an earlier report's files replaced first, and every failure of the child (cannot start, dies, hangs, a plot
raises there) answered by drawing here."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bagfixtures import brightness_command, frames_with_squares, write_bag, write_params
from test_tools_report import sample_report, tracking_eval

from trt_perception.cli import main as cli_main
from trt_perception.tools import plot_process as plot_process_module
from trt_perception.tools.plot_process import PlotProcess, start_plot_process
from trt_perception.tools.replay import replay_bag
from trt_perception.tools.report import ReplayReport, write_report_files

pytest.importorskip("matplotlib")
ALL_FILES = ["steering.png", "latency.png", "detections.png", "tracks.png", "report.json"]
DRAWN_HERE = "plots drawn in this process instead"


def tracked_report() -> ReplayReport:
    """Data for every plot, tracks.png included."""
    report = sample_report()
    report.tracking_eval = tracking_eval()
    report.tracks_total = 2
    report.series.track_times = {"1": [0.0, 0.1, 0.2], "2": [0.1, 0.2]}
    report.series.truth_track_times = {"cone-a": [0.0, 0.1, 0.2], "cone-b": [0.1, 0.2]}
    return report


def same_files(here: List[Path], there: List[Path]) -> bool:
    """Equal names in the same order, every PNG equal byte for byte (report.json names its own folder)."""
    return [p.name for p in here] == [p.name for p in there] and all(
        a.read_bytes() == b.read_bytes() for a, b in zip(here, there) if a.suffix == ".png")


def test_plots_drawn_in_the_child_are_the_files_drawn_here(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trt_perception")
    here = write_report_files(tracked_report(), tmp_path / "here")
    report = tracked_report()
    with PlotProcess() as plots:
        plots.submit(report, tmp_path / "child", ("steering", "latency"))  # early, as replay does
        there = write_report_files(report, tmp_path / "child", plot_process=plots)
    assert [p.name for p in there] == ALL_FILES and same_files(here, there)
    assert report.files == [str(p) for p in there] and report.report_dir == str(tmp_path / "child")
    assert DRAWN_HERE not in caplog.text  # the child drew them


def test_an_earlier_report_is_cleared_before_the_child_draws(tmp_path: Path) -> None:
    """The first submit empties the folder of an earlier report: a plot this run has no data for must not stay
    behind, and a plot the child already drew must not be removed afterwards."""
    folder = tmp_path / "r"
    folder.mkdir()
    for name in ALL_FILES:
        (folder / name).write_text("an earlier run")
    report = sample_report()  # no tracks
    with PlotProcess() as plots:
        plots.submit(report, folder, ("steering", "latency"))
        written = write_report_files(report, folder, plot_process=plots)
    assert [p.name for p in written] == ["steering.png", "latency.png", "detections.png", "report.json"]
    assert not (folder / "tracks.png").exists()
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written if p.suffix == ".png")


@pytest.mark.parametrize("child", [
    "import sys; sys.exit(3)",  # dies at once
    "import time; time.sleep(60)",  # never answers: stopped after STALL_S
    "import sys; sys.stdin.buffer.read(10); sys.stdout.buffer.write(b'garbage'); sys.stdout.flush()",
])
def test_a_child_that_dies_hangs_or_babbles_costs_only_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture, child: str) -> None:
    caplog.set_level(logging.INFO, logger="trt_perception")
    monkeypatch.setattr(plot_process_module, "CHILD", child)
    monkeypatch.setattr(plot_process_module, "STALL_S", 1.0)
    here = write_report_files(tracked_report(), tmp_path / "here")
    with PlotProcess() as plots:
        there = write_report_files(tracked_report(), tmp_path / "child", plot_process=plots)
    assert same_files(here, there)
    assert DRAWN_HERE in caplog.text


def test_no_process_can_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    here = write_report_files(tracked_report(), tmp_path / "here")
    with PlotProcess() as plots:
        there = write_report_files(tracked_report(), tmp_path / "child", plot_process=plots)
    assert same_files(here, there)


def test_a_plot_that_fails_in_the_child_raises_here_as_without_it(tmp_path: Path) -> None:
    def broken() -> ReplayReport:
        report = tracked_report()
        report.series.stage_seconds = {"total": ["not a number"]}
        return report

    with pytest.raises(ValueError, match="not a number") as here:
        write_report_files(broken(), tmp_path / "here")
    with PlotProcess() as plots, pytest.raises(ValueError, match="not a number") as there:
        write_report_files(broken(), tmp_path / "child", plot_process=plots)
    assert str(there.value) == str(here.value)


def test_a_plot_process_only_where_plots_will_be_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    assert start_plot_process(False) is None
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # matplotlib not installed
    assert start_plot_process(True) is None


def test_replay_with_a_plot_process_writes_the_same_plots(tmp_path: Path, models: Path) -> None:
    """Through replay: steering.png is drawn early (while the scoring runs), from its final numbers."""
    frames = frames_with_squares(8)
    for frame in frames:
        frame.drive = brightness_command(frame.image_bgr)
    bag = write_bag(tmp_path / "drive", frames, drive_topic="/teleop/cmd_vel", truth_topic="/gt")
    params = write_params(tmp_path, detector__model=str(models / "grid.onnx"), pilot__model=str(models / "pilot.onnx"),
                          pilot__enabled=True, pilot__throttle_mode="model")
    truth = {"truth_drive_topic": "/teleop/cmd_vel", "truth_detections_topic": "/gt"}
    alone = replay_bag(bag, params, report_dir=tmp_path / "alone", **truth)
    with PlotProcess() as plots:
        helped = replay_bag(bag, params, report_dir=tmp_path / "helped", plot_process=plots, **truth)
    assert [Path(p).name for p in helped.files] == [Path(p).name for p in alone.files] == [
        "steering.png", "latency.png", "detections.png", "report.json"]
    assert (tmp_path / "helped" / "steering.png").read_bytes() == (tmp_path / "alone" / "steering.png").read_bytes()

    assert cli_main(["replay", str(bag), "--params", str(params), "--no-out", "--report", str(tmp_path / "cli"),
                     "--no-progress", "--truth-drive-topic", "/teleop/cmd_vel"]) == 0
    assert (tmp_path / "cli" / "steering.png").read_bytes() == (tmp_path / "alone" / "steering.png").read_bytes()
