"""DonkeyCar tubs (tub v2) as recordings: read one like a rosbag2 bag (``TubReader``), or write it as one
(`trt-perception tub2bag TUB OUT`).

A tub v2 folder (autorope/donkeycar@cde8bbe9 donkeycar/parts/tub_v2.py, datastore_v2.py) holds:

- ``manifest.json``: five JSON lines - the recorded keys, their types, user metadata, manifest metadata, and
  the catalog metadata ``{paths, current_index, max_len, deleted_indexes}`` (datastore_v2.py:220-229, 374-392);
- ``catalog_N.catalog``: one JSON record per line, keys sorted (datastore_v2.py:161-166): ``_index``,
  ``_timestamp_ms``, ``_session_id``, ``cam/image_array`` (an image file name), ``user/angle``,
  ``user/throttle``, ``user/mode``, and ``pilot/*``, ``imu/*``, ``behavior/*`` where the car records them
  (templates/complete.py:486-511); each with a ``catalog_N.catalog_manifest`` holding its line lengths
  (datastore_v2.py:173-217);
- ``images/``: ``<index>_cam_image_array_.jpg``, JPEG files written by PIL from the RGB frame (tub_v2.py:63-69,
  112-116).

Records marked deleted are skipped, as DonkeyCar's ManifestIterator does (datastore_v2.py:479-481). Nothing is
ever written into the tub; every defect is counted in ``TubProblems`` and reported, never a crash: a missing
image drops that frame (its commands stay), a line that is not JSON (a recorder killed mid-write leaves a
truncated last line) drops that record, and manifest/catalog-manifest disagreements are noted.

As a recording, a tub has these topics (timestamps: ``_timestamp_ms``; every header ``frame_id`` "camera"/"imu"):

============================ ============================ =========================================================
topic                        type                         from
============================ ============================ =========================================================
/camera/image_raw/compressed sensor_msgs/CompressedImage  the record's image file, bytes as stored (format jpeg)
                             (sensor_msgs/Image: --raw)   (raw: decoded, rgb8)
/user/cmd_vel                geometry_msgs/Twist          user/angle, user/throttle: angular.z = -angle, linear.x =
                                                          throttle (REP 103: +z turns left; DonkeyCar +1 steers right)
/pilot/cmd_vel               geometry_msgs/Twist          pilot/angle, pilot/throttle (records driven by a pilot)
/user/mode                   std_msgs/String              user/mode (user, local_angle, local)
/imu                         sensor_msgs/Imu              imu/acl_* (m/s^2), imu/gyr_* (deg/s -> rad/s; DonkeyCar's
                                                          MPU6050/9250 part records deg/s)
/behavior                    std_msgs/String              behavior/label
============================ ============================ =========================================================

The Twist convention is the node's own with ``steering_scale`` = ``throttle_scale`` = 1 (messages.twist), so
replay compares a pilot's commands with the recorded ones directly (``--truth-drive-topic /user/cmd_vel``).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception.errors import BagError, ConfigError, TrtPerceptionError

PathLike = Union[str, Path]

IMAGE_TOPIC = "/camera/image_raw/compressed"
RAW_IMAGE_TOPIC = "/camera/image_raw"
USER_TOPIC = "/user/cmd_vel"
PILOT_TOPIC = "/pilot/cmd_vel"
MODE_TOPIC = "/user/mode"
IMU_TOPIC = "/imu"
BEHAVIOR_TOPIC = "/behavior"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
IMAGE = "sensor_msgs/msg/Image"
TWIST = "geometry_msgs/msg/Twist"
STRING = "std_msgs/msg/String"
IMU = "sensor_msgs/msg/Imu"
IMAGE_TYPES = ("image_array", "image")  # tub_v2.py:63 (image_array); legacy 'image'
IMU_KEYS = ("imu/acl_x", "imu/acl_y", "imu/acl_z", "imu/gyr_x", "imu/gyr_y", "imu/gyr_z")
MAX_EXAMPLES = 5


@dataclass
class TubProblems:
    """What was wrong with a tub, by kind, with a few examples each (never fatal)."""

    counts: Dict[str, int] = field(default_factory=dict)
    examples: Dict[str, List[str]] = field(default_factory=dict)

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(example)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> List[str]:
        return [f"{kind}: {count} (e.g. {'; '.join(self.examples.get(kind, []))})"
                for kind, count in sorted(self.counts.items())]


@dataclass
class TubRecord:
    """One usable catalog record: its index, time, image file and recorded values."""

    index: int
    t_ns: int
    image: Optional[Path]
    values: Dict[str, Any]


@dataclass(frozen=True)
class TubConnection:
    """A topic of the tub, shaped like rosbags' Connection for what replay reads (topic, msgtype, msgcount,
    msgdef.data, digest). No message definition travels with it: writers take the typestore's."""

    id: int
    topic: str
    msgtype: str
    msgcount: int
    msgdef: Any = None
    digest: str = ""
    ext: Any = None
    owner: Any = None


@dataclass(frozen=True)
class _MsgDef:
    data: str = ""
    format: str = ""


@dataclass(frozen=True)
class TubTopic:
    """rosbags' TopicInfo fields replay reads."""

    msgtype: str
    msgdef: Any
    msgcount: int
    connections: List[TubConnection]


def is_tub(path: PathLike) -> bool:
    """A DonkeyCar tub v2 folder: manifest.json inside (or, its manifest lost, catalog_*.catalog files), and not
    a rosbag2 folder."""
    path = Path(path).expanduser()
    if not path.is_dir() or (path / "metadata.yaml").is_file():
        return False
    return (path / "manifest.json").is_file() or any(path.glob("catalog_*.catalog"))


# ------------------------------------------------------------------------------------------------ reading


def _json_lines(path: Path) -> List[Optional[Any]]:
    """Each line of a file parsed as JSON (None where a line is not JSON)."""
    out: List[Optional[Any]] = []
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append(None)
    return out


def _catalog_number(path: Path) -> int:
    digits = "".join(ch for ch in path.stem.split("_")[-1] if ch.isdigit())
    return int(digits) if digits else 0


class TubReader:
    """A tub read the way replay reads a rosbags ``AnyReader``: ``open``/``close`` (or ``with``), ``topics``,
    ``connections``, ``messages(connections=...)`` yielding (connection, t_ns, CDR bytes) in recorded order,
    ``deserialize(raw, msgtype)``, ``start_time``/``end_time``/``duration`` (ns), ``typestore``.

    ``image_format``: 'compressed' (the JPEG bytes as stored) or 'raw' (decoded to sensor_msgs/Image rgb8).
    ``gyro_units``: 'deg' (DonkeyCar's MPU part) or 'rad' (a RealSense D435i) for imu/gyr_*.
    """

    def __init__(self, path: PathLike, typestore: Any, image_format: str = "compressed",
                 gyro_units: str = "deg") -> None:
        if image_format not in ("compressed", "raw"):
            raise ConfigError(f"image format {image_format!r}; expected 'compressed' or 'raw'")
        if gyro_units not in ("deg", "rad"):
            raise ConfigError(f"gyro units {gyro_units!r}; expected 'deg' (DonkeyCar MPU6050/9250) or 'rad'")
        self.path = Path(path).expanduser()
        self.typestore = typestore
        self.image_format = image_format
        self.gyro_units = gyro_units
        self.problems = TubProblems()
        self.records: List[TubRecord] = []
        self.image_key = "cam/image_array"
        self.deleted = 0
        self.connections: List[TubConnection] = []
        self.topics: Dict[str, TubTopic] = {}
        self.start_time = 0
        self.end_time = 0
        self.isopen = False

    # -- opening -----------------------------------------------------------------------------------------

    def open(self) -> None:
        """Read the manifest and every catalog (records only; images are read when their message is)."""
        if not self.path.is_dir():
            raise BagError(f"tub {self.path} is not a folder; fix: pass the tub folder (with manifest.json)")
        manifest = self.path / "manifest.json"
        if not manifest.is_file() and not any(self.path.glob("catalog_*.catalog")):
            raise BagError(f"{self.path} has no manifest.json and no catalog_*.catalog file: not a DonkeyCar tub v2; "
                           "fix: pass a tub folder (data/tub_...) recorded by DonkeyCar 4.x/5.x")
        if not manifest.is_file():  # lost: the catalogs still hold every record (images under cam/image_array)
            self.problems.add("manifest", f"{manifest} is missing; read catalog_*.catalog files")
        lines = _json_lines(manifest) if manifest.is_file() else []
        inputs = lines[0] if lines and isinstance(lines[0], list) else None
        types = lines[1] if len(lines) > 1 and isinstance(lines[1], list) else None
        catalog_meta = lines[4] if len(lines) > 4 and isinstance(lines[4], dict) else None
        if inputs is not None and types is not None and len(inputs) == len(types):
            images = [k for k, t in zip(inputs, types) if t in IMAGE_TYPES]
            if images:
                self.image_key = str(images[0])
        elif lines:  # (no manifest at all: noted above)
            self.problems.add("manifest", f"{manifest}: the inputs/types lines are missing or disagree")
        deleted: set = set()
        paths: List[Path]
        if catalog_meta is not None and isinstance(catalog_meta.get("paths"), list):
            paths = [self.path / str(p) for p in catalog_meta["paths"]]
            deleted = {int(i) for i in catalog_meta.get("deleted_indexes", []) if isinstance(i, int)}
        else:
            if lines:
                self.problems.add("manifest", f"{manifest}: no catalog metadata line; read catalog_*.catalog files")
            paths = sorted(self.path.glob("catalog_*.catalog"), key=_catalog_number)
        if not paths:
            raise BagError(f"tub {self.path} lists no catalogs and has no catalog_*.catalog file: nothing recorded")
        self.deleted = 0
        position = 0
        for path in paths:
            position = self._read_catalog(path, position, deleted)
        if catalog_meta is not None:
            current = catalog_meta.get("current_index")
            if isinstance(current, int) and current != position:
                self.problems.add("manifest mismatch", f"manifest current_index {current}, catalogs hold {position} "
                                  "records")
        self._connections()
        if not any(rec.image is not None for rec in self.records):
            if self.deleted and not self.records:
                raise BagError(f"tub {self.path} has no usable frame: all {self.deleted} records are marked deleted "
                               "(deleted_indexes in its manifest.json: DonkeyCar's tub editor or `donkey tubclean` "
                               "deleted them); fix: restore them there, or pass another tub (nothing was written)")
            found = "; ".join(self.problems.lines()[:3]) or "no problem found in its catalogs"
            raise BagError(f"tub {self.path} has no usable frame: {len(self.records)} usable records, none with its "
                           f"image file ({found}); fix: check the tub's catalog_*.catalog files and images/ folder "
                           "(nothing was written)")
        self.isopen = True

    def _read_catalog(self, path: Path, position: int, deleted: set) -> int:
        if not path.is_file():
            self.problems.add("missing catalog", str(path.name))
            return position
        lines = _json_lines(path)
        self._check_catalog_manifest(path, len(lines))
        last_t: Optional[int] = self.records[-1].t_ns if self.records else None
        for line_no, record in enumerate(lines, 1):
            here = f"{path.name}:{line_no}"
            index = position
            position += 1
            if not isinstance(record, dict):
                self.problems.add("bad catalog line", f"{here} is not a JSON record (truncated?)")
                continue
            recorded_index = record.get("_index")
            if isinstance(recorded_index, int) and recorded_index != index:
                self.problems.add("index mismatch", f"{here} _index {recorded_index} at position {index}")
                index = recorded_index
            if index in deleted:
                self.deleted += 1
                continue
            stamp = record.get("_timestamp_ms")
            if not isinstance(stamp, (int, float)) or isinstance(stamp, bool) or not math.isfinite(stamp):
                self.problems.add("no timestamp", f"{here} has no _timestamp_ms")
                continue
            # milliseconds since 1970 are ~1.7e12: nanoseconds overflow float precision, so integers stay integers
            t_ns = stamp * 1_000_000 if isinstance(stamp, int) else round(float(stamp) * 1000.0) * 1000
            if last_t is not None and t_ns < last_t:
                self.problems.add("time went back", f"{here} at {stamp} ms, before the record before it")
            last_t = t_ns
            image: Optional[Path] = None
            name = record.get(self.image_key)
            if isinstance(name, str) and name:
                image = self.path / "images" / name
                if not image.is_file():
                    self.problems.add("missing image", f"{here}: images/{name}")
                    image = None
            else:
                self.problems.add("missing image", f"{here}: no {self.image_key}")
            self.records.append(TubRecord(index, t_ns, image, record))
        return position

    def _check_catalog_manifest(self, path: Path, lines: int) -> None:
        manifest = path.with_name(f"{path.stem}.catalog_manifest")  # datastore_v2.py:179
        if not manifest.is_file():
            self.problems.add("catalog manifest mismatch", f"{manifest.name} is missing")
            return
        parsed = _json_lines(manifest)
        meta = parsed[0] if parsed and isinstance(parsed[0], dict) else None
        lengths = meta.get("line_lengths") if meta is not None else None
        if not isinstance(lengths, list):
            self.problems.add("catalog manifest mismatch", f"{manifest.name} has no line_lengths")
            return
        if len(lengths) != lines:
            self.problems.add("catalog manifest mismatch", f"{manifest.name} lists {len(lengths)} lines, "
                              f"{path.name} has {lines}")
        elif all(isinstance(n, int) for n in lengths) and sum(lengths) != path.stat().st_size:
            self.problems.add("catalog manifest mismatch", f"{manifest.name} line lengths sum to {sum(lengths)} bytes, "
                              f"{path.name} has {path.stat().st_size}")

    def _connections(self) -> None:
        records = self.records
        counts: Dict[Tuple[str, str], int] = {}

        def count(topic: str, msgtype: str, present: bool) -> None:
            if present:
                counts[(topic, msgtype)] = counts.get((topic, msgtype), 0) + 1

        image_topic, image_type = (IMAGE_TOPIC, COMPRESSED) if self.image_format == "compressed" \
            else (RAW_IMAGE_TOPIC, IMAGE)
        commands = [_number(rec.values.get("user/angle")) and _number(rec.values.get("user/throttle"))
                    for rec in records]
        if any(commands):  # the tub records the driver's commands: a record without usable ones loses its reference
            for rec, ok in zip(records, commands):
                if not ok:
                    angle, throttle = rec.values.get("user/angle"), rec.values.get("user/throttle")
                    self.problems.add("bad command", f"record {rec.index}: user/angle {angle!r}, user/throttle "
                                      f"{throttle!r} (no {USER_TOPIC} message)")
        for rec in records:
            v = rec.values
            count(IMU_TOPIC, IMU, all(_number(v.get(k)) for k in IMU_KEYS))
            count(BEHAVIOR_TOPIC, STRING, isinstance(v.get("behavior/label"), str))
            count(image_topic, image_type, rec.image is not None)
            count(USER_TOPIC, TWIST, _number(v.get("user/angle")) and _number(v.get("user/throttle")))
            count(PILOT_TOPIC, TWIST, _number(v.get("pilot/angle")) and _number(v.get("pilot/throttle")))
            count(MODE_TOPIC, STRING, isinstance(v.get("user/mode"), str))
        order = [(IMU_TOPIC, IMU), (BEHAVIOR_TOPIC, STRING), (image_topic, image_type), (USER_TOPIC, TWIST),
                 (PILOT_TOPIC, TWIST), (MODE_TOPIC, STRING)]
        self.connections = [
            TubConnection(i, topic, msgtype, counts[(topic, msgtype)], _MsgDef())
            for i, (topic, msgtype) in enumerate((k for k in order if k in counts), 1)
        ]
        self.topics = {c.topic: TubTopic(c.msgtype, c.msgdef, c.msgcount, [c]) for c in self.connections}
        if records:
            self.start_time = min(r.t_ns for r in records)
            self.end_time = max(r.t_ns for r in records) + 1

    @property
    def duration(self) -> int:
        return self.end_time - self.start_time

    @property
    def message_count(self) -> int:
        return sum(c.msgcount for c in self.connections)

    def close(self) -> None:
        self.isopen = False

    def __enter__(self) -> TubReader:
        if not self.isopen:
            self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- messages ----------------------------------------------------------------------------------------

    def messages(self, connections: Sequence[Any] = ()) -> Iterator[Tuple[TubConnection, int, Any]]:
        """(connection, t_ns, CDR bytes) in recorded order; within a record: IMU, behavior, image, commands."""
        wanted = {c.topic for c in connections} if connections else {c.topic for c in self.connections}
        conns = {c.topic: c for c in self.connections if c.topic in wanted}
        serialize = self.typestore.serialize_cdr
        for rec in self.records:
            for conn in conns.values():
                msg = self._message(conn, rec)
                if msg is not None:
                    yield conn, rec.t_ns, serialize(msg, conn.msgtype)

    def deserialize(self, raw: Any, msgtype: str) -> Any:
        return self.typestore.deserialize_cdr(raw, msgtype)

    def _header(self, t_ns: int, frame_id: str) -> Any:
        types = self.typestore.types
        sec, nanosec = divmod(int(t_ns), 1_000_000_000)
        return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                            frame_id=frame_id)

    def _message(self, conn: TubConnection, rec: TubRecord) -> Any:
        types = self.typestore.types
        v = rec.values
        topic = conn.topic
        if conn.msgtype in (COMPRESSED, IMAGE):
            return self._image(rec)
        if topic in (USER_TOPIC, PILOT_TOPIC):
            prefix = "user" if topic == USER_TOPIC else "pilot"
            angle, throttle = v.get(f"{prefix}/angle"), v.get(f"{prefix}/throttle")
            if not (_number(angle) and _number(throttle)):
                return None
            vector = types["geometry_msgs/msg/Vector3"]
            return types[TWIST](linear=vector(x=float(throttle), y=0.0, z=0.0),
                                angular=vector(x=0.0, y=0.0, z=0.0 - float(angle)))  # REP 103; no -0.0
        if topic == MODE_TOPIC:
            mode = v.get("user/mode")
            return types[STRING](data=mode) if isinstance(mode, str) else None
        if topic == BEHAVIOR_TOPIC:
            label = v.get("behavior/label")
            return types[STRING](data=label) if isinstance(label, str) else None
        if topic == IMU_TOPIC:
            values = [v.get(k) for k in IMU_KEYS]
            if not all(_number(x) for x in values):
                return None
            acc = [float(x) for x in values[:3]]
            gyr = [float(x) for x in values[3:]]
            if self.gyro_units == "deg":
                gyr = [math.radians(x) for x in gyr]
            vector = types["geometry_msgs/msg/Vector3"]
            no_orientation = np.zeros(9, np.float64)
            no_orientation[0] = -1.0  # sensor_msgs/Imu: orientation not provided
            return types[IMU](
                header=self._header(rec.t_ns, "imu"),
                orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
                orientation_covariance=no_orientation,
                angular_velocity=vector(x=gyr[0], y=gyr[1], z=gyr[2]),
                angular_velocity_covariance=np.zeros(9, np.float64),
                linear_acceleration=vector(x=acc[0], y=acc[1], z=acc[2]),
                linear_acceleration_covariance=np.zeros(9, np.float64),
            )
        return None

    def _image(self, rec: TubRecord) -> Any:
        if rec.image is None:
            return None
        try:
            data = rec.image.read_bytes()
        except OSError as exc:
            self.problems.add("unreadable image", f"{rec.image.name}: {exc}")
            return None
        types = self.typestore.types
        header = self._header(rec.t_ns, "camera")
        if self.image_format == "compressed":
            from trt_perception.images import compressed_size

            try:  # a truncated or empty file: the node would count it as a bad frame; here it is the tub's problem
                compressed_size(data, data_name=f"images/{rec.image.name}")
            except TrtPerceptionError as exc:
                self.problems.add("damaged image", str(exc).split("; fix:")[0])
                return None
            fmt = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg"
            return types[COMPRESSED](header=header, format=fmt, data=np.frombuffer(data, np.uint8))
        import cv2

        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            self.problems.add("undecodable image", rec.image.name)
            return None
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        height, width = rgb.shape[:2]
        return types[IMAGE](header=header, height=height, width=width, encoding="rgb8", is_bigendian=0,
                            step=width * 3, data=rgb.reshape(-1))

    def summary(self) -> str:
        kinds = ", ".join(f"{c.topic} {c.msgcount}" for c in self.connections) or "no messages"
        text = (f"tub {self.path}: {len(self.records)} records ({self.deleted} deleted skipped), "
                f"{self.duration * 1e-9:.1f} s; {kinds}")
        if self.problems.total:
            text += f"; {self.problems.total} problem(s): " + " | ".join(self.problems.lines())
        return text


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def open_tub(path: PathLike, typestore: Any, image_format: str = "compressed", gyro_units: str = "deg") -> TubReader:
    """An open ``TubReader`` (BagError when the folder is no tub at all)."""
    reader = TubReader(path, typestore, image_format=image_format, gyro_units=gyro_units)
    reader.open()
    return reader


# ------------------------------------------------------------------------------------------------ writing


@dataclass
class Tub2BagReport:
    """What tub2bag wrote and what it found wrong."""

    tub: str
    out: str
    records: int
    messages: Dict[str, int]
    problems: TubProblems


def tub2bag(tub: PathLike, out: PathLike, image_format: str = "compressed", storage: Optional[str] = None,
            distro: str = "humble", force: bool = False, gyro_units: str = "deg") -> Tub2BagReport:
    """Write ``tub`` as a rosbag2 bag at ``out`` (mcap where the installed rosbags writes it), for
    ``ros2 bag play`` into the real node; the tub is only read. See the module docstring for the topics."""
    from trt_perception.tools.replay import _OutputBag, _pick_storage, _typestore

    tub_path = Path(tub).expanduser()
    out_path = Path(out).expanduser()
    if not is_tub(tub_path):
        raise BagError(f"{tub_path} is not a DonkeyCar tub (a folder with manifest.json); fix: pass the tub folder, "
                       "e.g. ~/mycar/data/tub_12_24-05-01")
    from trt_perception.tools.output_paths import refuse_output_inside

    refuse_output_inside(tub_path, out_path, "output")
    storage_name = _pick_storage(storage)
    typestore = _typestore(distro)
    reader = open_tub(tub_path, typestore, image_format=image_format, gyro_units=gyro_units)
    output = _OutputBag(out_path, storage_name, typestore, force, fix="pass --force to replace it, or another OUT "
                        "path", elsewhere="pass another OUT path")
    written: Dict[str, int] = {}
    try:
        for conn in reader.connections:
            output.add(conn.topic, conn.msgtype)
        for conn, t_ns, raw in reader.messages():
            output.write(conn.topic, t_ns, raw)
            written[conn.topic] = written.get(conn.topic, 0) + 1
    except BaseException:
        output.abort()
        raise
    output.commit(force)
    return Tub2BagReport(str(tub_path), str(out_path), len(reader.records), written, reader.problems)


def add_tub2bag_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tub", type=Path, help="DonkeyCar tub folder (tub v2: manifest.json, catalogs, images/)")
    parser.add_argument("out", type=Path, help="output rosbag2 bag folder")
    parser.add_argument("--raw", action="store_true",
                        help=f"write decoded sensor_msgs/Image rgb8 on {RAW_IMAGE_TOPIC} instead of the JPEG bytes as "
                        f"sensor_msgs/CompressedImage on {IMAGE_TOPIC}")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), help="bag storage (default: mcap where the "
                        "installed rosbags writes it)")
    parser.add_argument("--distro", choices=("humble", "jazzy"), default="humble",
                        help="ROS distro whose message definitions go into the bag (the same for these messages)")
    parser.add_argument("--gyro-units", choices=("deg", "rad"), default="deg",
                        help="units of the tub's imu/gyr_* (deg: DonkeyCar's MPU6050/MPU9250 part; rad: RealSense)")
    parser.add_argument("--force", action="store_true", help="replace an existing output bag")


def run_tub2bag(args: argparse.Namespace) -> int:
    report = tub2bag(args.tub, args.out, image_format="raw" if args.raw else "compressed", storage=args.storage,
                     distro=args.distro, force=args.force, gyro_units=args.gyro_units)
    topics = ", ".join(f"{topic} {count}" for topic, count in report.messages.items()) or "no messages"
    print(f"wrote {report.out}: {report.records} records -> {topics}")
    if report.problems.total:
        print(f"tub problems ({report.problems.total}, skipped or noted; the tub was not changed):")
        for line in report.problems.lines():
            print(f"  {line}")
    return 0


__all__ = [
    "TubConnection",
    "TubProblems",
    "TubReader",
    "add_tub2bag_arguments",
    "is_tub",
    "open_tub",
    "run_tub2bag",
    "tub2bag",
]
