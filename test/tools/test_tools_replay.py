"""`trt-perception replay` on bags the tests record with rosbags, through the real pipeline and tiny ONNX models.

Checked: one output per input frame with the input's stamp and frame_id, detections where squares were drawn,
commands equal to what the brightness pilot must say, the output bag readable with the Humble and Jazzy
definitions, every input encoding and both storages, Humble bags without definitions, the latest-frame
drops of --realtime, bad frames counted and skipped, every bad-bag error naming what is wrong, and a tracking
head's ids in the output bag with MOTA/IDF1 against ground-truth track ids.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bagfixtures import (
    SEC,
    MovingObject,
    available_distros,
    brightness_command,
    frames_with_squares,
    frames_with_tracks,
    read_messages,
    storage_file,
    write_bag,
    write_params,
)
from track_factory import coded_detector

from trt_perception.cli import main as cli_main
from trt_perception.errors import BagError, ConfigError
from trt_perception.tools import report as report_module
from trt_perception.tools.replay import replay_bag

SQUARE = (48.0, 32.0, 64.0, 48.0)  # one 16x16 cell of the 128x128 frame (8x8 cells of the 64x64 model)


def make_params(folder: Path, models: Path, **extra: object) -> Path:
    values: Dict[str, object] = {
        "detector__model": str(models / "grid.onnx"),
        "pilot__model": str(models / "pilot.onnx"),
        "pilot__throttle_mode": "model",
    }
    values.update(extra)
    return write_params(folder, **values)


def detections_by_stamp(messages: List) -> Dict[int, np.ndarray]:
    out = {}
    for _, msg in messages:
        boxes = [
            (d.bbox.center.position.x - d.bbox.size_x / 2, d.bbox.center.position.y - d.bbox.size_y / 2,
             d.bbox.center.position.x + d.bbox.size_x / 2, d.bbox.center.position.y + d.bbox.size_y / 2)
            for d in msg.detections
        ]
        out[msg.header.stamp.sec * SEC + msg.header.stamp.nanosec] = np.asarray(boxes).reshape(-1, 4)
    return out


# --------------------------------------------------------------------------------------------- happy path


@pytest.mark.usefixtures("without_matplotlib")
def test_both_heads_one_output_per_frame_with_stamps_and_ground_truth(tmp_path: Path, models: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    frames = frames_with_squares(8)
    for frame in frames:
        frame.drive = brightness_command(frame.image_bgr)
    bag = write_bag(tmp_path / "drive", frames, encoding="bgr8", drive_topic="/teleop/cmd_vel",
                    truth_topic="/ground_truth/detections")
    params = make_params(tmp_path, models, pilot__enabled=True)

    report = replay_bag(bag, params, out=tmp_path / "out", report_dir=tmp_path / "report",
                        truth_drive_topic="/teleop/cmd_vel", truth_detections_topic="/ground_truth/detections")

    assert (report.frames_in, report.frames_processed, report.bad_frames, report.dropped_frames) == (8, 8, 0, 0)
    assert report.heads == ["detector", "pilot"]
    assert report.detections_total == 4 and report.detections_per_class == {"blob": 4}
    assert report.drive is not None and report.drive.matched == 8
    assert report.drive.steering_mae < 0.01 and report.drive.throttle_mae < 0.01
    assert report.detection_eval is not None and report.detection_eval.frames == 8
    overall = report.detection_eval.overall
    assert (overall.true_positives, overall.false_positives, overall.false_negatives) == (4, 0, 0)
    for stage in ("decode", "detector.infer", "pilot.infer", "total", "messages"):
        assert report.latency[stage].count == 8

    for distro in available_distros():  # the bytes decode with the real definitions of Humble and Jazzy
        bag_out = read_messages(tmp_path / "out", distro)
        assert bag_out["__types__"] == {
            "/camera/image_raw": "sensor_msgs/msg/Image",
            "/detections": "vision_msgs/msg/Detection2DArray",
            "/cmd_vel": "geometry_msgs/msg/Twist",
        }
        for topic in ("/camera/image_raw", "/detections", "/cmd_vel"):
            assert len(bag_out[topic]) == 8
        images = bag_out["/camera/image_raw"]
        assert [t for t, _ in images] == [f.t_ns for f in frames]
        assert np.array_equal(np.asarray(images[3][1].data).reshape(128, 128, 3), frames[3].image_bgr)
        for (t_img, image), (t_det, det) in zip(images, bag_out["/detections"]):
            assert t_det == t_img
            assert det.header.stamp == image.header.stamp and det.header.frame_id == "camera_optical"
            assert all(d.header.frame_id == "camera_optical" for d in det.detections)
        boxes = detections_by_stamp(bag_out["/detections"])
        for frame in frames:
            found = boxes[frame.t_ns]
            if frame.boxes:
                assert found.shape == (1, 4)
                np.testing.assert_allclose(found[0], SQUARE, atol=0.5)
                label = next(m for t, m in bag_out["/detections"] if t == frame.t_ns).detections[0]
                assert label.results[0].hypothesis.class_id == "blob"
            else:
                assert found.shape == (0, 4)
        for frame, (_, twist) in zip(frames, bag_out["/cmd_vel"]):
            steer, throttle = brightness_command(frame.image_bgr)
            assert twist.angular.z == pytest.approx(steer, abs=0.01)
            assert twist.linear.x == pytest.approx(throttle, abs=0.01)

    assert [Path(p).name for p in report.files] == ["report.json"]
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["frames"] == {"in": 8, "processed": 8, "bad": 0, "failed": 0, "dropped": 0, "bad_reasons": [],
                              "failed_reasons": []}
    assert data["detection_eval"]["overall"]["recall"] == 1.0
    assert data["output_topics"]["/cmd_vel"] == "geometry_msgs/msg/Twist"


@pytest.mark.parametrize(
    ("encoding", "storage"),
    [("rgb8", "mcap"), ("mono8", "sqlite3"), ("yuyv", "mcap"), ("jpeg", "sqlite3"), ("png", "mcap")],
)
def test_every_encoding_and_storage_finds_the_squares(tmp_path: Path, models: Path, encoding: str,
                                                      storage: str) -> None:
    frames = frames_with_squares(4)
    topic = "/camera/image_raw/compressed" if encoding in ("jpeg", "png") else "/camera/image_raw"
    bag = write_bag(tmp_path / "bag", frames, encoding=encoding, storage=storage, topic=topic)
    params = make_params(tmp_path, models, image_topic=topic)

    report = replay_bag(bag, params, out=tmp_path / "out", storage=storage, heads=["detector"])

    assert report.frames_processed == 4 and report.bad_frames == 0
    out = read_messages(tmp_path / "out")
    assert out["__types__"][topic] == report.image_type
    boxes = detections_by_stamp(out["/detections"])
    for frame in frames:
        if frame.boxes:
            assert boxes[frame.t_ns].shape == (1, 4)
            np.testing.assert_allclose(boxes[frame.t_ns][0], SQUARE, atol=0.5)
        else:
            assert boxes[frame.t_ns].shape == (0, 4)
    assert storage_file(tmp_path / "out").name == ("out.mcap" if storage == "mcap" else "out.db3")


def test_humble_sqlite3_bag_without_message_definitions(tmp_path: Path, models: Path) -> None:
    frames = frames_with_squares(4)
    bag = write_bag(tmp_path / "humble", frames, storage="sqlite3", truth_topic="/truth",
                    humble_without_definitions=True)
    report = replay_bag(bag, make_params(tmp_path, models), out=tmp_path / "out", distro="humble",
                        truth_detections_topic="/truth")
    assert report.frames_processed == 4
    assert report.detection_eval is not None and report.detection_eval.overall.recall == 1.0
    assert len(read_messages(tmp_path / "out", "humble")["/detections"]) == 4


def test_ackermann_output_watchdog_stop_and_recorded_ackermann(tmp_path: Path, models: Path) -> None:
    frames = frames_with_squares(6)
    for frame in frames[3:]:
        frame.t_ns += 2 * SEC  # the camera stalls for 2 s: longer than pilot.watchdog_timeout (0.5 s)
    for frame in frames:
        steer, throttle = brightness_command(frame.image_bgr)
        frame.drive = (steer * 0.35, throttle * 2.0)  # what Ackermann with the params below must say
    bag = write_bag(tmp_path / "bag", frames, drive_topic="/teleop/drive", drive_type="ackermann")
    params = make_params(tmp_path, models, detector__enabled=False, pilot__enabled=True,
                         pilot__output="ackermann", pilot__max_speed=2.0)

    report = replay_bag(bag, params, out=tmp_path / "out", truth_drive_topic="/teleop/drive")

    assert report.heads == ["pilot"]
    assert report.drive_outputs == 7 and report.drive_stops == 1  # 6 frames + 1 watchdog stop
    assert report.drive is not None and report.drive.steering_field == "steering_angle"
    assert report.drive.steering_mae < 0.01 and report.drive.throttle_mae < 0.01
    out = read_messages(tmp_path / "out")
    assert "/detections" not in out
    drive = out["/drive"]
    assert len(drive) == 7
    frame_msgs = [m for _, m in drive if m.drive.speed != 0.0]
    assert [m.header.stamp.sec * SEC + m.header.stamp.nanosec for m in frame_msgs] == [f.t_ns for f in frames]
    stop_time, stop = next((t, m) for t, m in drive if m.drive.speed == 0.0)
    assert stop_time == frames[3].t_ns and stop.drive.steering_angle == 0.0
    assert stop.header.frame_id == "camera_optical"


# ---------------------------------------------------------------------------------------------- realtime


def test_realtime_counts_the_frames_a_live_node_would_drop(tmp_path: Path, models: Path) -> None:
    burst = frames_with_squares(10, period_ns=1)  # 10 frames within 10 ns: the model is always busy
    bag = write_bag(tmp_path / "burst", burst)
    params = make_params(tmp_path, models, pilot__enabled=True)
    report = replay_bag(bag, params, out=tmp_path / "out", realtime=True)
    # The first frame runs at once; each later one replaces the waiting one; the last one runs at the end.
    assert (report.frames_in, report.frames_processed, report.dropped_frames) == (10, 2, 8)
    assert report.output_latency is not None and report.output_latency.count == 2
    out = read_messages(tmp_path / "out")
    assert len(out["/camera/image_raw"]) == 10  # the camera topic is copied whole
    assert len(out["/detections"]) == len(out["/cmd_vel"]) == 2
    stamps = [m.header.stamp.sec * SEC + m.header.stamp.nanosec for _, m in out["/detections"]]
    assert stamps == [burst[0].t_ns, burst[-1].t_ns]
    assert all(t > s for (t, _), s in zip(out["/detections"], stamps))  # published after processing

    inline = make_params(tmp_path, models, frame_policy="inline", qos_depth=3)
    report = replay_bag(bag, inline, realtime=True)  # inline: the subscription keeps the 3 newest waiting
    assert (report.frames_processed, report.dropped_frames) == (4, 6)

    slow = frames_with_squares(5, period_ns=SEC)  # 1 Hz camera: the model always keeps up
    report = replay_bag(write_bag(tmp_path / "slow", slow), params, realtime=True)
    assert (report.frames_processed, report.dropped_frames) == (5, 0)


# -------------------------------------------------------------------------------------------- bad frames


@pytest.mark.parametrize("encoding", ["bgr8", "jpeg"])
def test_bad_frames_are_counted_and_skipped(tmp_path: Path, models: Path, encoding: str) -> None:
    frames = frames_with_squares(6)
    frames[2].corrupt = frames[4].corrupt = True
    topic = "/camera/image_raw/compressed" if encoding == "jpeg" else "/camera/image_raw"
    bag = write_bag(tmp_path / "bag", frames, encoding=encoding, topic=topic)
    report = replay_bag(bag, make_params(tmp_path, models, image_topic=topic), out=tmp_path / "out")
    assert (report.frames_in, report.frames_processed, report.bad_frames) == (6, 4, 2)
    assert len(report.bad_frame_reasons) == 2 and "frame 2" in report.bad_frame_reasons[0]
    out = read_messages(tmp_path / "out")
    assert len(out[topic]) == 6 and len(out["/detections"]) == 4


@pytest.mark.parametrize(("encoding", "threads", "batch"),
                         [("jpeg", 1, 1), ("jpeg", 3, 1), ("yuyv", 2, 1), ("jpeg", 2, 4), ("yuyv", 2, 3)])
def test_frames_prepared_ahead_give_the_sequential_replay(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, encoding: str, threads: int,
    batch: int,
) -> None:  # fmt: skip
    """Replay prepares the next frames in helper threads (decode, and preprocess + inference of the ONNX Runtime
    models) while this thread finishes the last (``overlap``, default true; ``threads``): every output message,
    the counts and the drive results are those of the sequential replay (overlap: false), bad frames included;
    YUYV frames are converted into reused buffers, which must outlive the frames in flight. Models with a
    dynamic batch dimension take ``batch`` consecutive frames in one inference, with the same results."""
    from trt_perception.backends.onnxruntime import OnnxRuntimeBackend

    models = request.getfixturevalue("batch_models" if batch > 1 else "models")
    sizes: List[int] = []
    real = OnnxRuntimeBackend.infer

    def counting(self: OnnxRuntimeBackend, feed: Any) -> Any:
        sizes.append(int(next(iter(feed.values())).shape[0]))
        return real(self, feed)

    monkeypatch.setattr(OnnxRuntimeBackend, "infer", counting)
    frames = frames_with_squares(13)
    for frame in frames:
        frame.drive = brightness_command(frame.image_bgr)
    frames[3].corrupt = frames[10].corrupt = True
    topic = "/camera/image_raw/compressed" if encoding == "jpeg" else "/camera/image_raw"
    bag = write_bag(tmp_path / "bag", frames, encoding=encoding, topic=topic, drive_topic="/teleop/cmd_vel")
    runs = {}
    for overlap in (True, False):
        (tmp_path / str(overlap)).mkdir()
        params = make_params(tmp_path / str(overlap), models, image_topic=topic, pilot__enabled=True,
                             pilot__drive_enabled=True, overlap=overlap)
        sizes.clear()
        report = replay_bag(bag, params, out=tmp_path / f"out_{overlap}", truth_drive_topic="/teleop/cmd_vel",
                            threads=threads, batch=batch)
        messages = read_messages(tmp_path / f"out_{overlap}")
        runs[overlap] = (report, messages)
        assert max(sizes) == (batch if overlap else 1)  # (bad frames leave a batch short, never all of them)
    (fast, fast_out), (slow, slow_out) = runs[True], runs[False]
    assert any(f"{batch} frames at a time" in note for note in fast.notes) is (batch > 1)
    one_thread = "detector, pilot ran with ort_threads 1"  # helpers inferring side by side: one thread each
    assert any(one_thread in note for note in fast.notes) is (threads >= 2)
    assert not any(one_thread in note for note in slow.notes)
    assert (fast.frames_processed, fast.bad_frames) == (slow.frames_processed, slow.bad_frames) == (11, 2)
    assert fast.bad_frame_reasons == slow.bad_frame_reasons
    assert fast.drive.steering_mae == slow.drive.steering_mae and fast.drive.matched == slow.drive.matched
    assert sorted(fast_out) == sorted(slow_out)
    for name in fast_out:
        assert [repr(item) for item in fast_out[name]] == [repr(item) for item in slow_out[name]], name


def test_a_frame_failing_in_a_helper_is_a_failed_frame_in_its_turn(
    tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inference that fails in a helper thread is counted as that frame's failure, in order, and replay
    goes on: the node's policy, as on the sequential path."""
    from trt_perception.backends.onnxruntime import OnnxRuntimeBackend

    frames = frames_with_squares(6)
    frames[2].image_bgr[:] = 77  # the frame that fails: a uniform grey, recognisable in any thread, in any order
    bag = write_bag(tmp_path / "bag", frames, encoding="jpeg", topic="/camera/image_raw/compressed")
    real = OnnxRuntimeBackend.infer

    def flaky(self: OnnxRuntimeBackend, feed: Any) -> Any:
        tensor = next(iter(feed.values()))
        if np.ptp(tensor) == 0 and tensor.flat[0] != 0:  # (warm-up feeds zeros)
            raise RuntimeError("device lost")
        return real(self, feed)

    monkeypatch.setattr(OnnxRuntimeBackend, "infer", flaky)
    report = replay_bag(bag, make_params(tmp_path, models, image_topic="/camera/image_raw/compressed"), out=None,
                        threads=2)
    assert (report.frames_processed, report.failed_frames, report.bad_frames) == (5, 1, 0)
    assert "device lost" in report.failed_frame_reasons[0] and "frame 2" in report.failed_frame_reasons[0]


# ------------------------------------------------------------------------------------------ bad bags


@pytest.fixture
def small_bag(tmp_path: Path) -> Path:
    return write_bag(tmp_path / "small", frames_with_squares(3), drive_topic="/teleop/cmd_vel")


def test_the_progress_bar_only_when_asked(tmp_path: Path, models: Path, small_bag: Path,
                                         capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """progress=True draws tqdm's bar on stderr; without it nothing is drawn (and tqdm is not even imported)."""
    params = make_params(tmp_path, models)
    quiet = replay_bag(small_bag, params)
    assert "replay" not in capsys.readouterr().err
    shown = replay_bag(small_bag, params, progress=True)
    err = capsys.readouterr().err
    assert "replay" in err and f"{shown.frames_in}/{shown.frames_in}" in err
    assert shown.frames_processed == quiet.frames_processed


def test_nonexistent_bag(tmp_path: Path, models: Path) -> None:
    with pytest.raises(BagError, match=r"does not exist"):
        replay_bag(tmp_path / "nope", make_params(tmp_path, models))


def test_missing_image_topic_lists_what_is_there(tmp_path: Path, models: Path, small_bag: Path) -> None:
    params = make_params(tmp_path, models, image_topic="/front/image")
    with pytest.raises(BagError) as err:
        replay_bag(small_bag, params)
    text = str(err.value)
    assert "/front/image" in text and "/camera/image_raw [sensor_msgs/msg/Image]" in text
    assert "/teleop/cmd_vel [geometry_msgs/msg/Twist]" in text and "--image-topic" in text


def test_wrong_types_are_named(tmp_path: Path, models: Path, small_bag: Path) -> None:
    params = make_params(tmp_path, models)
    with pytest.raises(BagError, match=r"/teleop/cmd_vel has type geometry_msgs/msg/Twist; expected"):
        replay_bag(small_bag, params, image_topic="/teleop/cmd_vel")
    with pytest.raises(BagError, match=r"/camera/image_raw \(--truth-drive-topic\) has type sensor_msgs/msg/Image"):
        replay_bag(small_bag, params, truth_drive_topic="/camera/image_raw")
    with pytest.raises(BagError, match=r"/gt \(--truth-detections-topic\) is not in the bag"):
        replay_bag(small_bag, params, truth_detections_topic="/gt")


def test_truncated_and_corrupt_files(tmp_path: Path, models: Path) -> None:
    params = make_params(tmp_path, models)
    bag = write_bag(tmp_path / "cut", frames_with_squares(20))
    stored = storage_file(bag)
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])  # the recorder died mid-file
    with pytest.raises(BagError, match=r"cut") as err:
        replay_bag(bag, params)
    assert "truncated" in str(err.value) or "corrupt" in str(err.value) or "cannot" in str(err.value)

    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 64)
    with pytest.raises(BagError, match=r"garbage\.mcap"):
        replay_bag(garbage, params)

    broken = write_bag(tmp_path / "meta", frames_with_squares(2))
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, mapping")
    with pytest.raises(BagError, match=r"meta"):
        replay_bag(broken, params)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_damage_anywhere_is_a_bag_error_or_bad_frames_never_a_crash(tmp_path: Path, models: Path,
                                                                     storage: str) -> None:
    params = make_params(tmp_path, models)
    for fraction in (0.05, 0.4, 0.95):
        bag = write_bag(tmp_path / f"{storage}{fraction}", frames_with_squares(20), storage=storage)
        path = storage_file(bag)
        data = bytearray(path.read_bytes())
        at = int(len(data) * fraction)
        data[at:at + 2000] = b"\xa5" * min(2000, len(data) - at)
        path.write_bytes(bytes(data))
        try:
            report = replay_bag(bag, params, heads=["detector"])
        except BagError as exc:
            assert str(bag) in str(exc)
        else:
            assert report.frames_processed + report.bad_frames == report.frames_in


def test_output_is_never_overwritten_without_force(tmp_path: Path, models: Path, small_bag: Path) -> None:
    params = make_params(tmp_path, models)
    out = tmp_path / "out"
    replay_bag(small_bag, params, out=out)
    with pytest.raises(BagError, match=r"exists; refusing to overwrite it.*--force"):
        replay_bag(small_bag, params, out=out)
    report = replay_bag(small_bag, params, out=out, force=True, storage="sqlite3")
    assert report.out_bag == str(out) and list(out.glob("*.db3")) and not list(out.glob("*.mcap"))
    assert not list(tmp_path.glob(".*partial"))

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(BagError, match=r"not a rosbag2 bag"):
        replay_bag(small_bag, params, out=precious, force=True)
    assert (precious / "thesis.tex").exists()


def test_failed_replay_leaves_no_partial_output(tmp_path: Path, models: Path) -> None:
    bag = write_bag(tmp_path / "cut", frames_with_squares(40))
    stored = storage_file(bag)
    data = stored.read_bytes()
    stored.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(BagError):
        replay_bag(bag, make_params(tmp_path, models), out=tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial"))


def test_bad_arguments(tmp_path: Path, models: Path, small_bag: Path) -> None:
    params = make_params(tmp_path, models)
    with pytest.raises(ConfigError, match=r"--storage 'rosbag1'"):
        replay_bag(small_bag, params, storage="rosbag1")
    with pytest.raises(ConfigError, match=r"--limit 0"):
        replay_bag(small_bag, params, limit=0)
    with pytest.raises(ConfigError, match=r"pilot.model is empty"):
        replay_bag(small_bag, write_params(tmp_path, detector__model=str(models / "grid.onnx")), heads=["pilot"])


# ------------------------------------------------------------------------------------------------- CLI


@pytest.mark.usefixtures("without_matplotlib")
def test_cli_prints_the_report(tmp_path: Path, models: Path, capsys: pytest.CaptureFixture,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    frames = frames_with_squares(6)
    for frame in frames:
        frame.drive = brightness_command(frame.image_bgr)
    bag = write_bag(tmp_path / "bag", frames, drive_topic="/teleop/cmd_vel", truth_topic="/gt")
    params = make_params(tmp_path, models, pilot__enabled=True)
    rc = cli_main(["replay", str(bag), "--params", str(params), "--out", str(tmp_path / "out"),
                   "--report", str(tmp_path / "rep"), "--truth-drive-topic", "/teleop/cmd_vel",
                   "--truth-detections-topic", "/gt", "--limit", "4", "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "frames        in 4   processed 4   bad 0   dropped 0" in printed
    assert "steering" in printed and "angular.z" in printed and "blob" in printed
    assert "report.json" in printed and (tmp_path / "rep" / "report.json").is_file()
    assert "matplotlib is not installed" in printed and not list((tmp_path / "rep").glob("*.png"))

    rc = cli_main(["replay", str(bag), "--params", str(params), "--no-out", "--heads", "pilot,wheels"])
    assert rc == 2 and "--heads 'pilot,wheels'" in capsys.readouterr().err

    rc = cli_main(["replay", str(bag), "--params", str(params), "--no-out", "--image-topic", "/nope"])
    assert rc == 2 and "image topic /nope is not in the bag" in capsys.readouterr().err


def test_cli_default_output_goes_to_the_working_directory(tmp_path: Path, models: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    bag = write_bag(tmp_path / "run1", frames_with_squares(2))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    params = make_params(tmp_path, models)
    assert cli_main(["replay", str(bag), "--params", str(params), "--no-progress"]) == 0
    assert (work / "run1_replay" / "metadata.yaml").is_file()
    assert cli_main(["replay", str(bag), "--params", str(params), "--no-progress"]) == 2
    assert "--force" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ tracking


def tracking_scene() -> List[MovingObject]:
    """A cone and a car crossing (overlapping boxes, different classes), and a cone the detector misses for
    5 frames (0.5 s, under track_max_age 1 s) and sees with a low score (0.3) for 4 more."""
    return [
        MovingObject("cone-a", "cone", 0, start=(10, 20), velocity=(4, 0)),
        MovingObject("car-b", "car", 1, start=(200, 28), velocity=(-4, 0)),
        MovingObject("cone-c", "cone", 0, start=(40, 100), velocity=(3, -1), missed=range(10, 15), low=range(20, 24)),
    ]


def test_tracking_ids_in_the_output_bag_and_mota_idf1_in_the_report(tmp_path: Path) -> None:
    pytest.importorskip("lap", reason="ByteTrack needs lapx (the test extra has it)")
    pytest.importorskip("motmetrics", reason="MOTA/IDF1 need motmetrics (the test extra has it)")
    coded_detector(tmp_path)
    frames = frames_with_tracks(tracking_scene(), 30)
    bag = write_bag(tmp_path / "tracks", frames, truth_topic="/gt")
    params = write_params(tmp_path, heads=["detector"], detector__model=str(tmp_path / "coded.onnx"),
                          detector__tracker="bytetrack")

    report = replay_bag(bag, params, out=tmp_path / "out", report_dir=tmp_path / "rep", truth_detections_topic="/gt")

    track = report.tracking_eval
    assert track is not None and track.head == "detector" and track.frames == 30
    # misses: the three objects' first frame (track_min_hits 2: no id yet) and cone-c's five unseen frames
    assert (track.truth_boxes, track.truth_tracks, track.misses, track.false_positives, track.id_switches) == (
        90, 3, 8, 0, 0)
    assert track.predicted_tracks == 3 and report.tracks_total == 3
    assert track.mota == pytest.approx(1 - 8 / 90)
    assert track.idf1 == pytest.approx(2 * 82 / (2 * 82 + 8))
    assert track.motp_iou == pytest.approx(1.0)
    assert report.detection_eval is not None and report.detection_eval.overall.false_positives == 0

    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["tracking_eval"]["mota"] == pytest.approx(1 - 8 / 90)
    assert (data["tracking_eval"]["idtp"], data["tracking_eval"]["idfn"], data["tracking_eval"]["idfp"]) == (82, 8, 0)
    assert data["detections"]["tracks"] == 3
    series = report.series
    assert {k: len(v) for k, v in series.truth_track_times.items()} == {"cone-a": 30, "car-b": 30, "cone-c": 30}
    assert sorted(len(v) for v in series.track_times.values()) == [29 - 5, 29, 29]  # cone-c unseen for 5 frames
    if report_module._pyplot() is not None:
        assert "tracks.png" in [Path(p).name for p in report.files]

    # the output bag: every object keeps one id, its own, from its second frame on (low-score frames included)
    published: Dict[str, set] = {}
    assert report.output_topics["/detector/detections"] == "vision_msgs/msg/Detection2DArray"
    for (_, msg), frame in zip(read_messages(tmp_path / "out")["/detector/detections"], frames):
        truth = dict(zip(frame.boxes, frame.track_ids))
        for d in msg.detections:
            x, y = d.bbox.center.position.x, d.bbox.center.position.y
            key = (x - d.bbox.size_x / 2, y - d.bbox.size_y / 2, x + d.bbox.size_x / 2, y + d.bbox.size_y / 2)
            published.setdefault(truth[key], set()).add(d.id)
    assert all(len(ids - {""}) == 1 for ids in published.values()), published
    assert len(set.union(*published.values()) - {""}) == 3


@pytest.mark.usefixtures("without_matplotlib")
def test_tracking_notes_when_it_cannot_be_scored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    coded_detector(tmp_path)
    frames = frames_with_tracks(tracking_scene(), 6)
    bag = write_bag(tmp_path / "tracks", frames, truth_topic="/gt")
    plain = write_params(tmp_path, heads=["detector"], detector__model=str(tmp_path / "coded.onnx"))
    report = replay_bag(bag, plain, truth_detections_topic="/gt")
    assert report.tracking_eval is None and report.tracks_total == 0
    assert any("scored when detector runs a tracker (detector.tracker: bytetrack" in n for n in report.notes)

    for frame in frames:
        frame.track_ids = []
    bag = write_bag(tmp_path / "no_ids", frames, truth_topic="/gt")
    tracked = write_params(tmp_path, heads=["detector"], detector__model=str(tmp_path / "coded.onnx"),
                           detector__tracker="bytetrack")
    report = replay_bag(bag, tracked, truth_detections_topic="/gt")
    assert report.tracking_eval is None and report.tracks_total == 3
    assert any("carries no track ids" in n for n in report.notes)

    frames[2].track_ids = ["cone-a", "", "cone-c"]
    bag = write_bag(tmp_path / "some_ids", frames, truth_topic="/gt")
    report = replay_bag(bag, tracked, truth_detections_topic="/gt")
    assert report.tracking_eval is None
    assert any("16 of 18 ground-truth boxes" in n and "have no track id" in n for n in report.notes)


@pytest.mark.usefixtures("without_matplotlib")
def test_tracking_report_says_when_motmetrics_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "motmetrics", None)
    coded_detector(tmp_path)
    bag = write_bag(tmp_path / "tracks", frames_with_tracks(tracking_scene(), 4), truth_topic="/gt")
    params = write_params(tmp_path, heads=["detector"], detector__model=str(tmp_path / "coded.onnx"),
                          detector__tracker="bytetrack")
    report = replay_bag(bag, params, truth_detections_topic="/gt")
    assert report.tracking_eval is None
    assert any("motmetrics is not installed; fix: pip install motmetrics" in n for n in report.notes)
