"""Replay's edges (issue 11): one per-frame policy with the node, outputs checked before the work, zero-frame
bags, contradictory flags, drive commands matched within one period, the mask tint in the sample frames, a
report's memory in typed columns, and DonkeyCar tubs as `evaluate` inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bagfixtures import SEC, brightness_command, frames_with_squares, read_messages, write_bag, write_params

from trt_perception.cli import main as cli_main
from trt_perception.errors import BagError, ConfigError
from trt_perception.tools import report as report_module
from trt_perception.tools.replay import replay_bag


def make_params(folder: Path, models: Path, **extra: object) -> Path:
    values: Dict[str, object] = {"detector__model": str(models / "grid.onnx"),
                                 "pilot__model": str(models / "pilot.onnx"), "pilot__throttle_mode": "model",
                                 "pilot__enabled": True}
    values.update(extra)
    return write_params(folder, **values)


@pytest.fixture(autouse=True)
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_module, "_pyplot", lambda: None)  # the plots: test_tools_report.py


class FailingProcessor:
    """The real FrameProcessor, raising a non-image error on the frames listed (an inference failure)."""

    def __init__(self, inner: Any, fail_on: List[int]) -> None:
        self.inner = inner
        self.heads = inner.heads
        self.drive_head = inner.drive_head
        self.calls = 0
        self.fail_on = set(fail_on)

    def process(self, msg: Any, now: float) -> Any:
        index = self.calls
        self.calls += 1
        if index in self.fail_on:
            raise RuntimeError(f"CUDA error: an illegal memory access on call {index}")
        return self.inner.process(msg, now)

    def close(self) -> None:
        self.inner.close()


def test_a_failed_frame_is_counted_listed_and_the_run_goes_on(tmp_path: Path, models: Path) -> None:
    """As the node does: any exception but an ImageError is a failed frame, never a traceback that loses the
    run's output."""
    from trt_perception.heads import create_frame_processor
    from trt_perception.tools.replay import BagClock, load_config, replay_config

    bag = write_bag(tmp_path / "bag", frames_with_squares(8))
    config, _ = replay_config(load_config(make_params(tmp_path, models)))
    processor = FailingProcessor(create_frame_processor(config, clock=BagClock()), fail_on=[2, 5])
    try:
        report = replay_bag(bag, config, out=tmp_path / "out", report_dir=tmp_path / "rep", processor=processor)
    finally:
        processor.close()
    assert (report.frames_in, report.frames_processed, report.failed_frames, report.bad_frames) == (8, 6, 2, 0)
    assert len(report.failed_frame_reasons) == 2
    assert report.failed_frame_reasons[0].startswith("frame 2 at t=5.200, stamp 5.200: RuntimeError: CUDA error")
    out = read_messages(tmp_path / "out")
    assert len(out["/camera/image_raw"]) == 8 and len(out["/detections"]) == 6
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["frames"]["failed"] == 2 and "frame 5" in data["frames"]["failed_reasons"][1]
    text = report_module.format_report(report)
    assert "failed 2" in text and "failed frame  frame 2" in text


# ------------------------------------------------------------------------------------------ outputs


def test_an_earlier_report_is_not_replaced_without_force(tmp_path: Path, models: Path) -> None:
    bag = write_bag(tmp_path / "bag", frames_with_squares(3))
    params = make_params(tmp_path, models)
    rep = tmp_path / "rep"
    replay_bag(bag, params, report_dir=rep)
    (rep / "tracks.png").write_bytes(b"an earlier run's plot")  # a file of ours this run would not write
    (rep / "notes.txt").write_text("the user's")
    before = (rep / "report.json").read_text()
    with pytest.raises(ConfigError, match=r"--report .*rep holds an earlier report \(report.json.*--force"):
        replay_bag(bag, params, report_dir=rep)
    assert (rep / "report.json").read_text() == before
    replay_bag(bag, params, report_dir=rep, force=True)
    assert not (rep / "tracks.png").exists() and (rep / "notes.txt").read_text() == "the user's"
    assert json.loads((rep / "report.json").read_text())["frames"]["in"] == 3


class Spy:
    """Counts the frames a processor is asked for: a refused output must be refused before the first one."""

    def __init__(self, models: Path, tmp_path: Path) -> None:
        from trt_perception.heads import create_frame_processor
        from trt_perception.tools.replay import BagClock, load_config, replay_config

        self.config, _ = replay_config(load_config(make_params(tmp_path, models)))
        self.processor = FailingProcessor(create_frame_processor(self.config, clock=BagClock()), fail_on=[])


def test_outputs_that_cannot_be_written_are_refused_before_the_replay(tmp_path: Path, models: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    bag = write_bag(tmp_path / "bag", frames_with_squares(3))
    spy = Spy(models, tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"--report .*a_file is an existing file; expected a folder"):
        replay_bag(bag, spy.config, report_dir=a_file, processor=spy.processor)
    with pytest.raises(ConfigError, match=r"--report .*a_file is a file, so no folder can be made below it"):
        replay_bag(bag, spy.config, report_dir=a_file / "rep", processor=spy.processor)
    with pytest.raises(BagError, match=r"output .*a_file exists"):
        replay_bag(bag, spy.config, out=a_file, processor=spy.processor)
    with pytest.raises(ConfigError, match=r"--out .*a_file is an existing file"):
        replay_bag(bag, spy.config, out=a_file / "out", processor=spy.processor)

    import tempfile

    def read_only(*args: Any, **kwargs: Any) -> Any:  # what a read-only folder answers (root writes anyway)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(ConfigError, match=r"--report .*ro/rep: cannot write in .*Permission denied.*fix"):
        replay_bag(bag, spy.config, report_dir=tmp_path / "ro" / "rep", processor=spy.processor)
    with pytest.raises(ConfigError, match=r"--out .*: cannot write in .*Permission denied"):
        replay_bag(bag, spy.config, out=tmp_path / "out", processor=spy.processor)
    assert spy.processor.calls == 0  # refused before any frame was processed
    assert not (tmp_path / "ro").exists() and not (tmp_path / "out").exists()
    spy.processor.close()


def test_cli_read_only_report_folder_is_one_line_before_the_work(tmp_path: Path, models: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the monkeypatched test above covers this")
    bag = write_bag(tmp_path / "bag", frames_with_squares(3))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc = cli_main(["replay", str(bag), "--params", str(make_params(tmp_path, models)), "--no-out",
                       "--report", str(ro / "rep"), "--no-progress"])
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err
    assert rc == 2 and "cannot write in" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ flags and empty bags


def test_a_bag_whose_image_topic_has_no_messages_is_an_error(tmp_path: Path, models: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    bag = write_bag(tmp_path / "empty", [], drive_topic="/teleop/cmd_vel")
    params = make_params(tmp_path, models)
    with pytest.raises(BagError, match=r"image topic /camera/image_raw of .* holds no messages.*0 messages"):
        replay_bag(bag, params, out=tmp_path / "out", report_dir=tmp_path / "rep")
    assert not (tmp_path / "out").exists() and not (tmp_path / "rep" / "report.json").exists()
    rc = cli_main(["replay", str(bag), "--params", str(params), "--no-out", "--no-progress"])
    assert rc == 2 and "holds no messages" in capsys.readouterr().err


def test_a_replay_that_processed_no_frame_exits_non_zero(tmp_path: Path, models: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """Every frame bad (here: above max_pixels): the report is written (it lists why), and the exit says so."""
    bag = write_bag(tmp_path / "bag", frames_with_squares(3))
    params = make_params(tmp_path, models, max_pixels=10)
    rc = cli_main(["replay", str(bag), "--params", str(params), "--no-out", "--no-progress", "--report",
                   str(tmp_path / "rep")])
    captured = capsys.readouterr()
    assert rc == 1 and "none of the 3 frames of /camera/image_raw was processed (3 bad, 0 failed" in captured.err
    assert "above max_pixels 10" in captured.err and "Traceback" not in captured.err
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["frames"]["bad"] == 3
    ok = cli_main(["replay", str(bag), "--params", str(make_params(tmp_path, models)), "--no-out", "--no-progress"])
    assert ok == 0 and "error" not in capsys.readouterr().err


def test_no_out_with_out_is_refused(tmp_path: Path, models: Path, capsys: pytest.CaptureFixture) -> None:
    bag = write_bag(tmp_path / "bag", frames_with_squares(2))
    rc = cli_main(["replay", str(bag), "--params", str(make_params(tmp_path, models)), "--no-out", "--out",
                   str(tmp_path / "x"), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 2 and "--no-out and --out" in captured.err and "contradict" in captured.err
    assert not (tmp_path / "x").exists() and "Replay of" not in captured.out


@pytest.mark.parametrize(("flags", "said"), [(["--threads", "-1"], "--threads -1: expected 0 (one frame at a time)"),
                                            (["--batch", "0"], "--batch 0: expected 1 (frame by frame)")])
def test_helper_counts_out_of_range_are_refused(tmp_path: Path, models: Path, capsys: pytest.CaptureFixture,
                                                flags: List[str], said: str) -> None:  # fmt: skip
    bag = write_bag(tmp_path / "bag", frames_with_squares(2))
    rc = cli_main(["replay", str(bag), "--params", str(make_params(tmp_path, models)), "--no-out", "--no-progress",
                   *flags])
    captured = capsys.readouterr()
    assert rc == 2 and said in captured.err and "Traceback" not in captured.err and "Replay of" not in captured.out


@pytest.mark.parametrize(("out", "report"), [("same", "same"), ("bag", "bag/rep")])
def test_out_and_report_that_overlap_are_refused(tmp_path: Path, models: Path, capsys: pytest.CaptureFixture,
                                                 out: str, report: str) -> None:
    """--out X --report X mixed the report into the bag folder, which a later --force then refused to delete."""
    bag = write_bag(tmp_path / "in_bag", frames_with_squares(2))
    rc = cli_main(["replay", str(bag), "--params", str(make_params(tmp_path, models)), "--out", str(tmp_path / out),
                   "--report", str(tmp_path / report), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 2 and "overlap" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / out).exists() and not (tmp_path / report).exists()
    rc = cli_main(["replay", str(bag), "--params", str(make_params(tmp_path, models)), "--out",
                   str(tmp_path / "rep" / "bag"), "--report", str(tmp_path / "rep"), "--no-progress"])
    assert rc == 0 and (tmp_path / "rep" / "report.json").is_file()  # the bag inside the report: as the demo does


# ------------------------------------------------------------------------------------------- drive matching


def test_frames_after_the_last_command_get_no_stale_reference(tmp_path: Path, models: Path) -> None:
    """Commands for the first 10 of 20 frames (10 Hz): frame 10 still has the one 99 ms before it (within one
    period); frames 11-19 have none and are counted, not scored against the stale last command."""
    frames = frames_with_squares(20)
    for frame in frames[:10]:
        frame.drive = brightness_command(frame.image_bgr)
    bag = write_bag(tmp_path / "bag", frames, drive_topic="/teleop/cmd_vel")
    report = replay_bag(bag, make_params(tmp_path, models), truth_drive_topic="/teleop/cmd_vel")
    drive = report.drive
    assert (drive.matched, drive.unmatched) == (11, 9)
    assert drive.window_s == pytest.approx(0.1, rel=1e-3)
    assert any("9 of 20 frames have no command on /teleop/cmd_vel within 100 ms" in n for n in report.notes)
    rows = report.series.rows
    assert np.isfinite(rows.steering_truth[:11]).all() and np.isnan(rows.steering_truth[11:]).all()
    assert "20 frames matched" not in report_module.format_report(report)
    assert "11 frames matched within 100 ms, 9 without a command that close" in report_module.format_report(report)


def test_a_slower_command_stream_still_matches_every_frame(tmp_path: Path, models: Path) -> None:
    """Teleop at 5 Hz under a 10 Hz camera: the window is the commands' period, so no frame goes unmatched."""
    frames = frames_with_squares(10)
    for frame in frames[::2]:
        frame.drive = (0.1, 0.2)
    bag = write_bag(tmp_path / "bag", frames, drive_topic="/teleop/cmd_vel")
    report = replay_bag(bag, make_params(tmp_path, models), truth_drive_topic="/teleop/cmd_vel")
    assert (report.drive.matched, report.drive.unmatched) == (10, 0)
    assert report.drive.window_s == pytest.approx(0.2, rel=1e-3)


# ------------------------------------------------------------------------------------------ sample frames


def test_sample_frames_carry_the_segmentation_heads_mask(tmp_path: Path) -> None:
    """detections.png tints each sample frame with the segmentation head's mask of that frame."""
    from trt_perception.tools.demo import demo_files

    demo = demo_files()
    report = replay_bag(demo.bag, demo.params, limit=12, heads=["detector", "drivable"])
    samples = report.series.samples
    assert samples and all(s.mask is not None for s in samples)
    first = samples[0]
    assert first.mask.shape == first.image_bgr.shape[:2] and set(np.unique(first.mask)) <= {0, 1}
    assert first.mask.any() and first.mask_labels[:2] == ["background", "road"]


# -------------------------------------------------------------------------------------------- memory


class MemoryProbe(FailingProcessor):
    """Reads tracemalloc's current size at each frame: what the replay holds while its loop runs."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner, fail_on=[])
        self.held: List[int] = []

    def process(self, msg: Any, now: float) -> Any:
        import tracemalloc

        self.held.append(tracemalloc.get_traced_memory()[0])
        return super().process(msg, now)


def test_per_frame_results_live_in_typed_columns(tmp_path: Path, models: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No Python object per frame: what the replay holds grows by a few tens of bytes a frame (the per-frame
    lists it kept before held ~1.7 KB a frame on this bag)."""
    import gc
    import tracemalloc

    from trt_perception.tools import replay as replay_module

    monkeypatch.setattr(replay_module, "SAMPLE_CANDIDATES", 1)  # the sample frames: bounded, but frame-sized
    from trt_perception.heads import create_frame_processor
    from trt_perception.tools.replay import BagClock, load_config, replay_config

    frames = [f for k in range(30) for f in frames_with_squares(10, t0_ns=5 * SEC + k * SEC)]
    for frame in frames:
        frame.drive = brightness_command(frame.image_bgr)
    config, _ = replay_config(load_config(make_params(tmp_path, models)))
    bag = write_bag(tmp_path / "bag", frames, drive_topic="/teleop/cmd_vel", truth_topic="/gt")
    probe = MemoryProbe(create_frame_processor(config, clock=BagClock()))
    try:
        replay_bag(bag, config, processor=probe, limit=20)  # warm-up: imports, compiled serializers, caches
        probe.held.clear()
        gc.collect()
        gc.disable()  # a collector pass mid-run would free the warm-up's garbage and hide the growth
        tracemalloc.start()
        try:
            report = replay_bag(bag, config, processor=probe, truth_drive_topic="/teleop/cmd_vel",
                                truth_detections_topic="/gt")
        finally:
            tracemalloc.stop()
            gc.enable()
    finally:
        probe.close()
    assert report.frames_processed == 300 and report.drive.matched == 300
    # medians of 20 frames at each end, short of the last chunk (the bag reader frees its buffers there)
    per_frame = (np.median(probe.held[260:280]) - np.median(probe.held[80:100])) / 180.0
    print(f"held per frame: {per_frame:.0f} bytes")
    assert per_frame < 400, f"{per_frame:.0f} bytes a frame held by the replay"


def test_helpers_inferring_side_by_side_run_onnx_runtime_on_one_thread_each() -> None:
    """Only enabled ONNX Runtime heads not on one thread already change (a TensorRT engine takes no ort_threads:
    setting it there would be refused), and the note names them. A disabled head without a model (``model: ''``,
    as a params file that turns the detector off has) is left alone, not asked for its backend."""
    from trt_perception.config import HeadConfig, ModelConfig, PerceptionConfig
    from trt_perception.tools.replay import one_thread_per_inference

    config = PerceptionConfig(heads=(
        HeadConfig("detector", "detection", model=ModelConfig(model="/m/det.onnx")),
        HeadConfig("seg", "segmentation", model=ModelConfig(model="/m/seg.engine")),
        HeadConfig("pilot", "steering", model=ModelConfig(model="/m/pilot.onnx", ort_threads=1)),
        HeadConfig("spare", "detection", enabled=False, model=ModelConfig(model="/m/spare.onnx", ort_threads=4)),
        HeadConfig("unset", "detection", enabled=False, model=ModelConfig(model="")),
    ))
    changed, notes = one_thread_per_inference(config)
    assert [h.model.ort_threads for h in changed.heads] == [1, 2, 1, 4, 2]
    assert len(notes) == 1 and notes[0].startswith("detector ran with ort_threads 1")
    unchanged, none = one_thread_per_inference(changed)
    assert unchanged is changed and none == []


@pytest.mark.parametrize(("cores", "helpers"), [(1, 1), (2, 3), (3, 3), (4, 4), (16, 4)])
def test_replay_starts_a_helper_per_core_and_three_on_two_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, helpers: int
) -> None:
    """Benchmark 10's measurements (default_threads' docstring): on two cores a third helper fills the time the
    two wait for the GIL; elsewhere a helper per core, at most MAX_THREADS (frames in flight stay few)."""
    from trt_perception.tools import replay

    monkeypatch.setattr(replay.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert replay.default_threads() == helpers
    assert replay.helper_count(None) == helpers and replay.helper_count(0) == 0
