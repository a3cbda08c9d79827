"""rosbag2 recordings written by the tests with rosbags (nothing is downloaded), and frames with known content.

``write_bag`` records camera frames in any of the encodings replay must read (raw Image in bgr8/rgb8/mono8/
yuyv, CompressedImage jpeg/png), optional recorded drive commands and ground-truth boxes (with track ids in
``Detection2D.id`` when a frame lists them), in mcap or sqlite3,
with Jazzy definitions or as a Humble sqlite3 bag that carries no message definitions at all.
Import from a test: ``from bagfixtures import write_bag`` (test/conftest.py puts test/ on sys.path; this
folder is added by the test modules themselves).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import yaml

from trt_perception.rosbag_types import get_typestore

SEC = 1_000_000_000
Box = Tuple[float, float, float, float]  # x_min, y_min, x_max, y_max in source pixels


@dataclass
class RecordedFrame:
    """One camera frame of a test bag and what the test knows about it."""

    image_bgr: np.ndarray
    t_ns: int
    boxes: List[Box] = field(default_factory=list)  # ground truth (where squares were drawn)
    labels: List[str] = field(default_factory=list)
    track_ids: List[str] = field(default_factory=list)  # ground-truth track ids (Detection2D.id), '' = none
    drive: Optional[Tuple[float, float]] = None  # recorded (angular.z, linear.x) for this frame
    corrupt: bool = False  # write bytes the decoder must refuse

    @property
    def stamp(self) -> Tuple[int, int]:
        return divmod(self.t_ns, SEC)


def frames_with_squares(
    count: int,
    width: int = 128,
    height: int = 128,
    square: Box = (48, 32, 64, 48),
    every: int = 2,
    t0_ns: int = 5 * SEC,
    period_ns: int = SEC // 10,
    label: str = "blob",
) -> List[RecordedFrame]:
    """Dark frames with varying gray levels; every ``every``-th frame (1, 3, ...) gets a white square."""
    frames = []
    for i in range(count):
        level = 20 + (i * 7) % 60
        image = np.full((height, width, 3), level, np.uint8)
        image[:, :, 2] = np.uint8(min(255, level + 10))  # some red so throttle differs from steering
        boxes: List[Box] = []
        if i % every == 1:
            x0, y0, x1, y1 = (int(v) for v in square)
            image[y0:y1, x0:x1] = 255
            boxes = [tuple(float(v) for v in square)]
        frames.append(RecordedFrame(image, t0_ns + i * period_ns, boxes, [label] * len(boxes)))
    return frames


@dataclass
class MovingObject:
    """An object of a tracking test bag: ground truth in every frame it is in view (``first``..``last``),
    seen by the coded detector (``track_factory``) except in ``missed`` frames, with a low score in ``low``."""

    track_id: str
    label: str
    class_id: int
    start: Tuple[float, float]  # top-left corner at frame 0 (source pixels)
    velocity: Tuple[float, float]  # pixels per frame
    size: Tuple[int, int] = (24, 24)
    first: int = 0
    last: int = 1 << 30
    missed: Sequence[int] = ()
    low: Sequence[int] = ()

    def box(self, frame: int) -> Box:
        x = round(self.start[0] + self.velocity[0] * frame)
        y = round(self.start[1] + self.velocity[1] * frame)
        return (float(x), float(y), float(x + self.size[0]), float(y + self.size[1]))


def frames_with_tracks(
    objects: Sequence[MovingObject],
    count: int,
    score: float = 0.9,
    low_score: float = 0.3,
    t0_ns: int = 5 * SEC,
    period_ns: int = SEC // 10,
) -> List[RecordedFrame]:
    """Frames of the coded detector's size with the objects drawn (colour by class), their ground truth with
    track ids, and the detections the coded detector will report written into row 0."""
    from track_factory import HEIGHT, WIDTH, encode_detections

    colours = [(0, 140, 255), (255, 120, 0), (80, 200, 80)]
    frames = []
    for i in range(count):
        image = np.full((HEIGHT, WIDTH, 3), 30, np.uint8)
        frame = RecordedFrame(image, t0_ns + i * period_ns)
        rows = []
        for obj in objects:
            if not obj.first <= i <= obj.last:
                continue
            x0, y0, x1, y1 = obj.box(i)
            cv2.rectangle(image, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), colours[obj.class_id % 3], -1)
            frame.boxes.append((x0, y0, x1, y1))
            frame.labels.append(obj.label)
            frame.track_ids.append(obj.track_id)
            if i not in obj.missed:
                rows.append((x0, y0, x1, y1, low_score if i in obj.low else score, obj.class_id))
        encode_detections(image, rows)
        frames.append(frame)
    return frames


def brightness_command(image_bgr: np.ndarray) -> Tuple[float, float]:
    """What onnx_factory.brightness_pilot + messages.twist give for a frame (throttle_mode model, scales 1):
    angle = 2 * mean - 1, throttle = mean of red; Twist angular.z = -angle (REP 103), linear.x = throttle."""
    rgb = image_bgr[:, :, ::-1].astype(np.float64) / 255.0
    angle = 2.0 * rgb.mean() - 1.0
    throttle = rgb[:, :, 0].mean()
    return -float(np.clip(angle, -1.0, 1.0)), float(np.clip(throttle, -1.0, 1.0))


def _yuyv(image_bgr: np.ndarray) -> np.ndarray:
    """BGR -> packed YUYV (Y0 U Y1 V), chroma averaged over each pixel pair, as cameras send it."""
    yuv = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2YUV).astype(np.uint16)
    h, w = yuv.shape[:2]
    out = np.empty((h, w, 2), np.uint8)
    out[:, :, 0] = yuv[:, :, 0]
    u = ((yuv[:, 0::2, 1] + yuv[:, 1::2, 1] + 1) // 2).astype(np.uint8)
    v = ((yuv[:, 0::2, 2] + yuv[:, 1::2, 2] + 1) // 2).astype(np.uint8)
    out[:, 0::2, 1] = u
    out[:, 1::2, 1] = v
    return out


def image_message(types: dict, header: object, image_bgr: np.ndarray, encoding: str, corrupt: bool = False):
    """A rosbags Image/CompressedImage for ``encoding`` in bgr8, rgb8, mono8, yuyv, jpeg, png."""
    if encoding in ("jpeg", "png"):
        ok, buf = cv2.imencode(".jpg" if encoding == "jpeg" else ".png", image_bgr)
        assert ok
        data = np.frombuffer(b"not an image at all" if corrupt else buf.tobytes(), np.uint8)
        return types["sensor_msgs/msg/CompressedImage"](header=header, format=encoding, data=data)
    if encoding == "bgr8":
        pixels = image_bgr
    elif encoding == "rgb8":
        pixels = image_bgr[:, :, ::-1]
    elif encoding == "mono8":
        pixels = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    elif encoding == "yuyv":
        pixels = _yuyv(image_bgr)
    else:
        raise ValueError(f"test bags do not write encoding {encoding!r}")
    h, w = image_bgr.shape[:2]
    step = pixels.strides[0] if pixels.flags.c_contiguous else w * (pixels.size // (h * w))
    data = np.ascontiguousarray(pixels).reshape(-1)
    if corrupt:
        data = data[: data.size // 3]  # truncated: shorter than step * height
    return types["sensor_msgs/msg/Image"](header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                                          step=int(step), data=data)


def write_bag(
    path: Path,
    frames: Sequence[RecordedFrame],
    encoding: str = "bgr8",
    storage: Optional[str] = None,
    topic: str = "/camera/image_raw",
    frame_id: str = "camera_optical",
    drive_topic: Optional[str] = None,
    drive_type: str = "twist",
    truth_topic: Optional[str] = None,
    humble_without_definitions: bool = False,
) -> Path:
    """Record ``frames`` (and, per frame, its drive command and ground-truth boxes) into a rosbag2 bag.

    ``storage`` None: mcap where the installed rosbags writes it, else sqlite3.
    """
    if storage is None:
        storage = "mcap" if _writes_mcap() else "sqlite3"
    ts = get_typestore("humble" if humble_without_definitions else available_distros()[-1])
    t = ts.types
    image_type = "sensor_msgs/msg/CompressedImage" if encoding in ("jpeg", "png") else "sensor_msgs/msg/Image"
    with _writer(path, storage) as writer:
        cam = writer.add_connection(topic, image_type, typestore=ts)
        drive_conn = truth_conn = None
        drive_msgtype = {
            "twist": "geometry_msgs/msg/Twist",
            "twist_stamped": "geometry_msgs/msg/TwistStamped",
            "ackermann": "ackermann_msgs/msg/AckermannDriveStamped",
        }[drive_type]
        if drive_topic:
            drive_conn = writer.add_connection(drive_topic, drive_msgtype, typestore=ts)
        if truth_topic:
            truth_conn = writer.add_connection(truth_topic, "vision_msgs/msg/Detection2DArray", typestore=ts)
        for frame in frames:
            sec, nsec = frame.stamp
            header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                              frame_id=frame_id)
            msg = image_message(t, header, frame.image_bgr, encoding, frame.corrupt)
            writer.write(cam, frame.t_ns, ts.serialize_cdr(msg, image_type))
            if drive_conn is not None and frame.drive is not None:
                drive = _drive_message(t, header, frame.drive, drive_type)
                writer.write(drive_conn, frame.t_ns + 1_000_000, ts.serialize_cdr(drive, drive_msgtype))
            if truth_conn is not None:
                truth = _truth_message(t, header, frame.boxes, frame.labels, frame.track_ids)
                writer.write(truth_conn, frame.t_ns, ts.serialize_cdr(truth, "vision_msgs/msg/Detection2DArray"))
    if humble_without_definitions:
        _strip_definitions(path)
    return path


def available_distros() -> Tuple[str, ...]:
    """The distros the installed rosbags has typestores for (rosbags 0.9.x, on Python 3.8, has no Jazzy)."""
    from rosbags.typesys import Stores

    return ("humble", "jazzy") if hasattr(Stores, "ROS2_JAZZY") else ("humble",)


def _writes_mcap() -> bool:
    import inspect

    from rosbags.rosbag2 import Writer

    return "storage_plugin" in inspect.signature(Writer.__init__).parameters


def storage_file(bag: Path) -> Path:
    """The one .mcap or .db3 file of a bag folder."""
    (path,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    return path


def _writer(path: Path, storage: str):
    """A rosbags Writer for ``storage``; older rosbags (0.9.x, Python 3.8) write sqlite3 only."""
    import pytest
    from rosbags.rosbag2 import Writer

    if not _writes_mcap():
        if storage != "sqlite3":
            pytest.skip(f"this rosbags writes sqlite3 bags only; cannot record a {storage} test bag")
        return Writer(path)
    from rosbags.rosbag2 import StoragePlugin

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    return Writer(path, version=8, storage_plugin=plugin)


def _drive_message(t: dict, header: object, values: Tuple[float, float], kind: str):
    steer, throttle = values
    if kind == "ackermann":
        drive = t["ackermann_msgs/msg/AckermannDrive"](steering_angle=steer, steering_angle_velocity=0.0,
                                                      speed=throttle, acceleration=0.0, jerk=0.0)
        return t["ackermann_msgs/msg/AckermannDriveStamped"](header=header, drive=drive)
    vec = t["geometry_msgs/msg/Vector3"]
    twist = t["geometry_msgs/msg/Twist"](linear=vec(x=throttle, y=0.0, z=0.0), angular=vec(x=0.0, y=0.0, z=steer))
    if kind == "twist_stamped":
        return t["geometry_msgs/msg/TwistStamped"](header=header, twist=twist)
    return twist


def _truth_message(t: dict, header: object, boxes: Sequence[Box], labels: Sequence[str],
                   track_ids: Sequence[str] = ()):
    pose = t["geometry_msgs/msg/PoseWithCovariance"](
        pose=t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                         orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
        covariance=np.zeros(36),
    )
    detections = []
    ids = list(track_ids) or [""] * len(boxes)
    for (x0, y0, x1, y1), label, track_id in zip(boxes, labels, ids):
        hyp = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=label, score=1.0), pose=pose)
        bbox = t["vision_msgs/msg/BoundingBox2D"](
            center=t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=(x0 + x1) / 2,
                                                                                    y=(y0 + y1) / 2), theta=0.0),
            size_x=float(x1 - x0), size_y=float(y1 - y0))
        detections.append(t["vision_msgs/msg/Detection2D"](header=header, results=[hyp], bbox=bbox, id=track_id))
    return t["vision_msgs/msg/Detection2DArray"](header=header, detections=detections)


def _strip_definitions(path: Path) -> None:
    """Turn a sqlite3 bag into what Humble's rosbag2 writes: schema 3, metadata version 5, no definitions.

    Humble bags carry no message definitions, so a reader must bring its own (replay's typestore).
    """
    (db,) = list(path.glob("*.db3"))
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE message_definitions")
        conn.execute("UPDATE schema SET schema_version = 3")
    meta_path = path / "metadata.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    info = meta["rosbag2_bagfile_information"]
    info["version"] = 5
    info.pop("ros_distro", None)
    for topic in info["topics_with_message_count"]:
        topic["topic_metadata"].pop("type_description_hash", None)
    meta_path.write_text(yaml.safe_dump(meta))


def read_messages(path: Path, distro: str = "humble") -> dict:
    """topic -> [(log time, message)] of a bag, deserialized with OUR typestore for ``distro`` (not the
    bag's embedded definitions), so a test checks the bytes against the real Humble/Jazzy definitions."""
    from rosbags.highlevel import AnyReader

    ts = get_typestore(distro)
    out: dict = {}
    with AnyReader([Path(path)], default_typestore=ts) as reader:
        for conn, t_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t_ns, ts.deserialize_cdr(raw, conn.msgtype)))
        out["__types__"] = {c.topic: c.msgtype for c in reader.connections}
    return out


def write_params(folder: Path, **params: object) -> Path:
    """A node params YAML (``trt_perception: ros__parameters:``) with dotted names nested."""
    nested: dict = {}
    for name, value in params.items():
        parts = name.split("__")  # detector__model -> detector.model (keywords cannot hold dots)
        target = nested
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({"trt_perception": {"ros__parameters": nested}}, sort_keys=False))
    return path
