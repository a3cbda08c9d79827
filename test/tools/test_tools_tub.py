"""DonkeyCar tubs (tub v2) as recordings: TubReader (the AnyReader subset replay uses), bad tubs counted and never
changed, `trt-perception tub2bag` to a rosbag2 mcap, and replay of the bag (and of the tub itself once replay's
open_bag dispatches to TubReader)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bagfixtures import read_messages, write_params
from onnx_factory import brightness_pilot
from tubfixtures import BEHAVIORS, T0_MS, drive_frames, tree_snapshot, write_tub

from trt_perception.cli import main as cli_main
from trt_perception.errors import BagError
from trt_perception.rosbag_types import get_typestore
from trt_perception.tools import tub as tub_tool
from trt_perception.tools.tub import (
    COMPRESSED,
    IMAGE_TOPIC,
    IMU_TOPIC,
    PILOT_TOPIC,
    USER_TOPIC,
    TubReader,
    is_tub,
    open_tub,
    tub2bag,
)

STORE = get_typestore("humble")


def _read(reader: TubReader) -> Dict[str, list]:
    out: Dict[str, list] = {}
    for conn, t_ns, raw in reader.messages():
        out.setdefault(conn.topic, []).append((t_ns, reader.deserialize(raw, conn.msgtype)))
    return out


def test_reader_gives_frames_and_commands_in_recorded_order(tmp_path: Path) -> None:
    frames = drive_frames(10, imu=True, pilot=True, behavior=True)
    tub = write_tub(tmp_path / "tub", frames, deleted=[3])
    assert is_tub(tub) and not is_tub(tmp_path)
    with TubReader(tub, STORE) as reader:
        assert reader.problems.total == 0 and reader.deleted == 1 and len(reader.records) == 9
        assert reader.start_time == T0_MS * 1_000_000 and reader.duration == 9 * 50_000_000 + 1
        assert reader.topics[IMAGE_TOPIC].msgtype == COMPRESSED and reader.topics[USER_TOPIC].msgcount == 9
        assert [c.topic for c in reader.connections] == [IMU_TOPIC, "/behavior", IMAGE_TOPIC, USER_TOPIC,
                                                         PILOT_TOPIC, "/user/mode"]
        order = [conn.topic for conn, _, _ in reader.messages()][:6]
        assert order[:3] == [IMU_TOPIC, "/behavior", IMAGE_TOPIC]  # the IMU before the frame it goes with
        messages = _read(reader)
    kept = [i for i in range(10) if i != 3]
    images = messages[IMAGE_TOPIC]
    assert [t for t, _ in images] == [(T0_MS + i * 50) * 1_000_000 for i in kept]
    first = images[0][1]
    assert first.format == "jpeg" and first.header.frame_id == "camera"
    assert bytes(first.data) == (tub / "images" / "0_cam_image_array_.jpg").read_bytes()  # bytes as stored
    for (_, twist), i in zip(messages[USER_TOPIC], kept):
        # REP 103: angular.z = -angle (DonkeyCar +1 steers right, ROS +z turns left); linear.x = throttle
        assert (twist.angular.z, twist.linear.x) == pytest.approx((-frames[i].angle, frames[i].throttle))
    assert messages[PILOT_TOPIC][0][1].angular.z == pytest.approx(-frames[0].pilot[0])
    imu = messages[IMU_TOPIC][2][1]
    assert imu.angular_velocity.z == pytest.approx(np.radians(10.0 * 2))  # tub gyr in deg/s -> rad/s
    assert imu.linear_acceleration.z == pytest.approx(9.81) and imu.orientation_covariance[0] == -1.0
    assert [m.data for _, m in messages["/behavior"]][:2] == BEHAVIORS
    assert messages["/user/mode"][0][1].data == "local"


def test_bad_tubs_are_counted_never_a_crash_and_never_changed(tmp_path: Path) -> None:
    tub = write_tub(tmp_path / "tub", drive_frames(9))
    (tub / "images" / "2_cam_image_array_.jpg").unlink()
    with (tub / "catalog_2.catalog").open("a") as handle:  # a recorder killed mid-line
        handle.write('{"_index": 9, "_timestamp_ms": 17145')
    manifest = (tub / "manifest.json").read_text().splitlines()
    meta = json.loads(manifest[4])
    meta["current_index"] = 12
    manifest[4] = json.dumps(meta)
    (tub / "manifest.json").write_text("\n".join(manifest) + "\n")
    (tub / "images" / "5_cam_image_array_.jpg").write_bytes(b"not a jpeg")
    before = tree_snapshot(tub)
    reader = open_tub(tub, STORE)
    counts = reader.problems.counts
    assert counts == {"missing image": 1, "bad catalog line": 1, "catalog manifest mismatch": 1,
                      "manifest mismatch": 1}, reader.problems.lines()
    assert "images/2_cam_image_array_.jpg" in reader.summary()
    messages = _read(reader)
    assert len(messages[IMAGE_TOPIC]) == 7 and len(messages[USER_TOPIC]) == 9  # the commands stay
    # a file that is no JPEG is the tub's problem, counted when read (it was written into the bag before)
    assert reader.problems.counts["damaged image"] == 1 and "images/5_cam_image_array_.jpg" in reader.summary()
    raw = TubReader(tub, STORE, image_format="raw")
    raw.open()
    assert len(_read(raw)["/camera/image_raw"]) == 7 and raw.problems.counts["undecodable image"] == 1
    assert tree_snapshot(tub) == before


def test_not_a_tub(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="no manifest.json"):
        open_tub(tmp_path, STORE)
    (tmp_path / "manifest.json").write_text("[]\n[]\n{}\n{}\n" + json.dumps({"paths": []}) + "\n")
    with pytest.raises(BagError, match="lists no catalogs"):
        open_tub(tmp_path, STORE)


def test_tub2bag_writes_mcap_and_replays(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frames = drive_frames(12)
    tub = write_tub(tmp_path / "tub", frames)
    before = tree_snapshot(tub)
    assert tub_tool.run_tub2bag(_tub2bag_args(tub, tmp_path / "bag")) == 0
    assert "12 records" in capsys.readouterr().out
    assert tree_snapshot(tub) == before
    assert (tmp_path / "bag" / "metadata.yaml").is_file() and list((tmp_path / "bag").glob("*.mcap"))
    messages = read_messages(tmp_path / "bag")
    assert len(messages[IMAGE_TOPIC]) == 12 and len(messages[USER_TOPIC]) == 12
    with pytest.raises(BagError, match="exists; refusing"):
        tub2bag(tub, tmp_path / "bag")
    with pytest.raises(BagError, match="inside the tub"):
        tub2bag(tub, tub / "bag")
    # the node's pipeline over the bag: the recorded commands are the truth
    from trt_perception.tools.replay import replay_bag

    brightness_pilot(tmp_path)
    params = write_params(tmp_path, pilot__model=str(tmp_path / "pilot.onnx"), pilot__enabled=True,
                          detector__enabled=False, pilot__throttle_mode="model", image_transport="compressed",
                          image_topic=IMAGE_TOPIC)
    report = replay_bag(tmp_path / "bag", params, truth_drive_topic=USER_TOPIC)
    assert report.frames_processed == 12 and report.drive is not None and report.drive.matched == 12
    assert report.drive.steering_mae < 0.01 and report.drive.throttle_mae < 0.01  # JPEG noise only


def _registered() -> bool:
    from trt_perception.cli import SUBCOMMANDS

    return any(name == "tub2bag" for name, *_ in SUBCOMMANDS)


def _tub2bag_args(tub: Path, out: Path, *extra: str) -> Any:
    import argparse

    parser = argparse.ArgumentParser()
    tub_tool.add_tub2bag_arguments(parser)
    return parser.parse_args([str(tub), str(out), *extra])


def _replay_reads_tubs(tub: Path) -> bool:
    from trt_perception.tools.replay import open_bag

    try:
        with open_bag(tub, STORE):
            return True
    except BagError:
        return False


def test_replay_takes_a_tub(tmp_path: Path) -> None:
    frames = drive_frames(10)
    tub = write_tub(tmp_path / "tub", frames)
    assert _replay_reads_tubs(tub)
    from trt_perception.tools.replay import replay_bag

    before = tree_snapshot(tub)
    brightness_pilot(tmp_path)
    params = write_params(tmp_path, pilot__model=str(tmp_path / "pilot.onnx"), pilot__enabled=True,
                          detector__enabled=False, pilot__throttle_mode="model", image_topic=IMAGE_TOPIC)
    report = replay_bag(tub, params, out=tmp_path / "out", truth_drive_topic=USER_TOPIC)
    assert report.frames_processed == 10 and report.drive.matched == 10 and report.drive.steering_mae < 0.01
    assert report.output_topics[IMAGE_TOPIC] == "sensor_msgs/msg/CompressedImage"
    assert len(read_messages(tmp_path / "out")["/cmd_vel"]) == 10
    assert tree_snapshot(tub) == before


def test_imu_pilot_replays_from_a_bag_with_its_imu_topic(tmp_path: Path) -> None:
    """The real-car check offline: an IMU pilot driven from a played bag with /imu in it."""
    test_dir = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(test_dir))
    from donkey_factory import convert_pilot

    from trt_perception.tools.replay import replay_bag

    tub = write_tub(tmp_path / "tub", drive_frames(10, imu=True))
    tub2bag(tub, tmp_path / "bag")
    model = convert_pilot(tmp_path, "imu")
    spec = model.with_suffix(".yaml")
    spec.write_text(spec.read_text().replace("topic: imu", f"topic: {IMU_TOPIC}"))
    params = write_params(tmp_path, pilot__model=str(model), pilot__enabled=True, detector__enabled=False,
                          pilot__drive_enabled=True, pilot__throttle_mode="model", image_transport="compressed",
                          image_topic=IMAGE_TOPIC)
    report = replay_bag(tmp_path / "bag", params, out=tmp_path / "out")
    commands = read_messages(tmp_path / "out")["/cmd_vel"]
    assert report.frames_processed == 10 and len(commands) == 10
    assert all(c.linear.x != 0.0 for _, c in commands)  # driving: the IMU arrived with every frame
    # the same pilot on a recording without /imu: a stop on every frame, and the report says why
    write_tub(tmp_path / "tub2", drive_frames(5))
    tub2bag(tmp_path / "tub2", tmp_path / "bag2")
    report = replay_bag(tmp_path / "bag2", params, out=tmp_path / "out2")
    assert any(f"reads {IMU_TOPIC}, which is not in the bag (no IMU data: the pilot stops" in note
               for note in report.notes)
    commands = read_messages(tmp_path / "out2")["/cmd_vel"]
    assert len(commands) == 5 and all((c.linear.x, c.angular.z) == (0.0, 0.0) for _, c in commands)


def test_memory_pilot_replays_from_a_bag(tmp_path: Path) -> None:
    """The memory pilot driven from a played bag feeds its own outputs back, as DonkeyCar's loop does."""
    test_dir = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(test_dir))
    from donkey_factory import DonkeyLoop, convert_pilot

    from trt_perception.tools.replay import replay_bag

    frames = drive_frames(8)
    tub = write_tub(tmp_path / "tub", frames)
    tub2bag(tub, tmp_path / "bag")
    params = write_params(tmp_path, pilot__model=str(convert_pilot(tmp_path, "memory")), pilot__enabled=True,
                          detector__enabled=False, pilot__drive_enabled=True, pilot__throttle_mode="model",
                          pilot__max_steering=1.0, image_transport="compressed", image_topic=IMAGE_TOPIC)
    replay_bag(tmp_path / "bag", params, out=tmp_path / "out")
    commands = read_messages(tmp_path / "out")["/cmd_vel"]
    loop = DonkeyLoop("memory")
    images = read_messages(tmp_path / "bag")[IMAGE_TOPIC]
    import cv2

    for (_, command), (_, image) in zip(commands, images):
        rgb = cv2.imdecode(np.asarray(image.data), cv2.IMREAD_COLOR)[:, :, ::-1]
        angle, throttle = loop.run(rgb)
        assert (-command.angular.z, command.linear.x) == pytest.approx((np.clip(angle, -1, 1), throttle), abs=1e-4)


def test_tub2bag_cli(tmp_path: Path) -> None:
    assert _registered()
    tub = write_tub(tmp_path / "tub", drive_frames(3))
    assert cli_main(["tub2bag", str(tub), str(tmp_path / "bag"), "--raw"]) == 0
    messages = read_messages(tmp_path / "bag")
    assert messages["/camera/image_raw"][0][1].encoding == "rgb8"
    assert cli_main(["tub2bag", str(tub), str(tmp_path / "bag")]) == 2  # exists: refused, no traceback
    with pytest.raises(BagError, match="fix: pass --force to replace it, or another OUT path$"):
        tub2bag(tub, tmp_path / "bag")  # tub2bag's own flags (it has no --out or --no-out)


# ------------------------------------------------------------------------- tubs as replay / evaluate inputs


def _pilot_params(tmp_path: Path, **extra: Any) -> Path:
    brightness_pilot(tmp_path)
    return write_params(tmp_path, pilot__model=str(tmp_path / "pilot.onnx"), pilot__enabled=True,
                        detector__enabled=False, pilot__throttle_mode="model", **extra)


def test_replay_of_a_tub_takes_its_camera_and_the_drivers_commands(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """The params' image_topic (/camera/image_raw in config/pilot.yaml) does not name a tub's camera: a tub has
    one, and its recorded user/* commands are the reference, as in evaluate."""
    tub = write_tub(tmp_path / "tub", drive_frames(6))
    params = _pilot_params(tmp_path, image_topic="/camera/image_raw")
    assert cli_main(["replay", str(tub), "--params", str(params), "--no-out", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "processed 6" in out and "steering" in out
    from trt_perception.tools.replay import replay_bag

    report = replay_bag(tub, params)
    assert report.image_topic == IMAGE_TOPIC and report.drive is not None and report.drive.matched == 6
    assert any("DonkeyCar tub" in note for note in report.notes)


def test_nothing_is_written_into_a_tub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trt_perception.tools.evaluate import evaluate
    from trt_perception.tools.replay import default_out, replay_bag

    tub = write_tub(tmp_path / "tub", drive_frames(3))
    before = tree_snapshot(tub)
    params = _pilot_params(tmp_path)
    for kwargs, flag in (({"out": tub / "out"}, "--out"), ({"report_dir": tub / "images"}, "--report"),
                         ({"out": tub}, "--out")):
        with pytest.raises(BagError, match=f"{flag} .* inside|is the input bag"):
            replay_bag(tub, params, **kwargs)
    with pytest.raises(BagError, match="--out .* is inside the tub"):
        evaluate([tub], params, out=tub / "eval", workers=0, plots=False)
    monkeypatch.chdir(tub / "images")  # `cd tub/images && trt-perception replay ..`: the bag goes beside the tub
    assert default_out(tub) == tmp_path / "tub_replay"
    assert tree_snapshot(tub) == before


def test_a_tub_without_frames_or_manifest_says_what_is_wrong(tmp_path: Path) -> None:
    from trt_perception.tools.replay import replay_bag

    params = _pilot_params(tmp_path)
    lost = write_tub(tmp_path / "lost", drive_frames(4))
    (lost / "manifest.json").unlink()  # the catalogs still hold every record
    report = replay_bag(lost, params)
    assert report.frames_processed == 4 and any("manifest.json is missing" in n for n in report.notes)
    blind = write_tub(tmp_path / "blind", drive_frames(4))
    for image in (blind / "images").iterdir():
        image.unlink()
    with pytest.raises(BagError, match=r"has no usable frame: 4 usable records, none with its image file "
                                        r"\(missing image: 4"):
        replay_bag(blind, params)
    with pytest.raises(BagError, match="has no usable frame"):
        tub2bag(blind, tmp_path / "bag")
    assert not (tmp_path / "bag").exists()


def test_truncated_and_empty_images_and_unusable_commands_are_counted(tmp_path: Path) -> None:
    """Seen by an outside audit with a tub DonkeyCar's TubWriter wrote: a truncated and an empty JPEG went into the
    bag uncounted, and records whose user/angle was missing, null or "NaN" lost their command silently."""
    tub = write_tub(tmp_path / "tub", drive_frames(8), max_len=100)
    jpeg = (tub / "images" / "1_cam_image_array_.jpg").read_bytes()
    (tub / "images" / "1_cam_image_array_.jpg").write_bytes(jpeg[:300])
    (tub / "images" / "2_cam_image_array_.jpg").write_bytes(b"")
    catalog = tub / "catalog_0.catalog"
    records = [json.loads(line) for line in catalog.read_text().splitlines()]
    del records[3]["user/angle"]
    records[4]["user/angle"] = None
    records[5]["user/throttle"] = "NaN"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in records))
    (tub / "catalog_0.catalog_manifest").unlink()  # its line lengths no longer match: not what is tested here
    reader = open_tub(tub, STORE)
    messages = _read(reader)
    assert len(messages[IMAGE_TOPIC]) == 6 and len(messages[USER_TOPIC]) == 5
    counts = reader.problems.counts
    assert counts["damaged image"] == 2 and counts["bad command"] == 3, reader.problems.lines()
    assert "record 4: user/angle None" in reader.summary()
    from trt_perception.tools.replay import replay_bag

    report = replay_bag(tub, _pilot_params(tmp_path))  # found while frames are read: in the report's notes too
    assert report.frames_in == 6 and report.bad_frames == 0
    assert any(n.startswith("tub: damaged image: 2") for n in report.notes), report.notes


def test_a_tub_whose_records_are_all_deleted_says_so(tmp_path: Path) -> None:
    tub = write_tub(tmp_path / "tub", drive_frames(5), deleted=range(5))
    with pytest.raises(BagError, match=r"all 5 records are marked deleted \(deleted_indexes in its manifest.json"):
        open_tub(tub, STORE)


def test_a_behavior_pilot_without_its_topic_keeps_driving_and_the_note_says_so(tmp_path: Path) -> None:
    """A missing /behavior topic is not a stop (the note said "an IMU pilot then stops" for every input)."""
    test_dir = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(test_dir))
    from donkey_factory import convert_pilot

    from trt_perception.tools.replay import replay_bag

    tub = write_tub(tmp_path / "tub", drive_frames(4))
    model = convert_pilot(tmp_path, "behavior")
    params = write_params(tmp_path, pilot__model=str(model), pilot__enabled=True, detector__enabled=False,
                          pilot__drive_enabled=True, pilot__throttle_mode="model")
    report = replay_bag(tub, params)
    (note,) = [n for n in report.notes if "which is not in the bag" in n]
    assert "behavior stays" in note and "IMU" not in note and report.frames_processed == 4
