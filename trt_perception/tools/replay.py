"""`trt-perception replay`: run the node's exact per-frame pipeline over a rosbag2 recording, offline.

Same params YAML as the node, same ``FrameProcessor``, same message builders, so what is tuned on a bag is
what runs on the car. Reads sqlite3 and mcap bags (Humble and Jazzy) with rosbags, no ROS needed; writes an
output bag with the camera topic copied and the messages the node would publish (header stamp and frame_id
of the input frame), and a report: latency per stage, detections, and errors against recorded ground truth.

``--realtime`` replays on the bag's clock without sleeping: frames arrive at their recorded times, each
processed frame keeps the model busy for the wall time it really took, and a frame arriving while the model is
busy waits in a one-slot mailbox, replacing (dropping) the one waiting there - the node's latest-frame policy
(``frame_policy: latest``). With ``frame_policy: inline`` the node works in the subscription callback and the
waiting frames sit in the subscription's keep-last queue of ``qos_depth`` instead, the oldest dropped first.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import sys
import time
from array import array
from collections import deque
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception.errors import BagError, ConfigError, ImageError, TrtPerceptionError
from trt_perception.results import Detections, DriveCommand
from trt_perception.tools.report import (
    IOU_THRESHOLD,
    ClassScore,
    DetectionEval,
    DriveError,
    FrameRows,
    LatencyStats,
    ReplayReport,
    SampleFrame,
    SegmentationEval,
    TrackingEval,
    attach_mask,
    check_report_folder,
    mae_rmse,
    nearest_within,
    score_frame,
    write_report_files,
)

PathLike = Union[str, Path]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED)
DETECTIONS = "vision_msgs/msg/Detection2DArray"
TWIST = "geometry_msgs/msg/Twist"
TWIST_STAMPED = "geometry_msgs/msg/TwistStamped"
ACKERMANN = "ackermann_msgs/msg/AckermannDrive"
ACKERMANN_STAMPED = "ackermann_msgs/msg/AckermannDriveStamped"
DRIVE_TYPES = (TWIST, TWIST_STAMPED, ACKERMANN, ACKERMANN_STAMPED)
STORAGES = ("mcap", "sqlite3")
BAG_VERSION = 8  # rosbag2 metadata version: what Jazzy writes; Humble's rosbag2 reads it too

DRIVE_MATCH_TOLERANCE_S = 0.25  # a recorded command further than this from a frame is not its ground truth
DETECTION_MATCH_TOLERANCE_S = 0.005  # ground-truth boxes carry the image's stamp; allow rounding only
SAMPLE_FRAMES = 6  # frames in detections.png, picked among SAMPLE_CANDIDATES spread over the bag
SAMPLE_CANDIDATES = 18
SAMPLE_WIDTH = 320
MAX_BAD_REASONS = 5
MASK_PAIR_WINDOW = 32  # frames / truth masks waiting for their partner (same stamp) at most


# ------------------------------------------------------------------------------------------- reading


def _format_topics(topics: Mapping[str, Any]) -> str:
    if not topics:
        return "(the bag has no topics)"
    return ", ".join(f"{name} [{info.msgtype}]" for name, info in sorted(topics.items()))


_DAMAGED = (
    "the file is truncated, corrupt or not a rosbag2 recording (expected a folder with metadata.yaml and its "
    ".mcap/.db3 files, or one .mcap/.db3 file); a recording whose recorder was killed can usually be repaired: "
    "`mcap recover FILE.mcap -o fixed.mcap` (mcap CLI) or `ros2 bag reindex BAG` (sqlite3)"
)


@contextmanager
def open_bag(bag: PathLike, typestore: Any) -> Iterator[Any]:
    """An open ``rosbags.highlevel.AnyReader`` on ``bag``; every way a bag can be unreadable is a BagError.

    Types the bag does not define (Humble sqlite3 bags carry no definitions, and none carry vision_msgs or
    ackermann_msgs for rosbags) are filled in from ``typestore``.
    """
    from rosbags.highlevel import AnyReader, AnyReaderError

    path = Path(bag).expanduser()
    if not path.exists():
        raise BagError(f"bag {path} does not exist; fix: pass the rosbag2 folder (with metadata.yaml) or its "
                       ".mcap/.db3 file")
    if path.suffix == ".bag":
        raise BagError(f"{path} is a ROS 1 bag; replay reads rosbag2 (ROS 2) recordings; fix: convert it with "
                       f"`rosbags-convert --src {path} --dst {path.with_suffix('')}_ros2` (installed with rosbags)")
    from trt_perception.tools.tub import is_tub, open_tub

    if is_tub(path):  # a DonkeyCar tub v2 folder: TubReader answers what replay asks of an AnyReader
        with open_tub(path, typestore) as tub:
            yield tub
        return
    try:
        reader = AnyReader([path], default_typestore=typestore)
        reader.open()
    except (AnyReaderError, FileNotFoundError) as exc:
        raise BagError(f"cannot open bag {path}: {exc}; {_DAMAGED}") from None
    except Exception as exc:  # storage libraries raise their own types: sqlite3/apsw errors, mcap records...
        raise BagError(f"cannot read bag {path}: {type(exc).__name__}: {exc}; {_DAMAGED}") from None
    try:
        _complete_typestore(reader, typestore)
        yield reader
    finally:
        reader.close()


def _complete_typestore(reader: Any, typestore: Any) -> None:
    """Register the types the bag lacks definitions for, from ``typestore`` (only those its topics need,
    with their nested types: generating all ~200 classes would cost more than a short replay)."""
    have = _fielddefs(reader.typestore)
    ours = _fielddefs(typestore)
    wanted = [c.msgtype for c in reader.connections if c.msgtype not in have]
    missing: Dict[str, Any] = {}
    while wanted:
        name = wanted.pop()
        if name in missing or name in have or name not in ours:
            continue
        missing[name] = ours[name]
        wanted.extend(_type_names(missing[name]))
    if missing:
        reader.typestore.register(missing)


def _fielddefs(typestore: Any) -> Mapping[str, Any]:
    """A typestore's type definitions: ``fielddefs`` in rosbags 0.10+, ``FIELDDEFS`` in 0.9.x (Python 3.8)."""
    defs = getattr(typestore, "fielddefs", None)
    return defs if defs is not None else typestore.FIELDDEFS


def _type_names(definition: Any) -> Iterator[str]:
    """Message type names nested in a rosbags field definition (tuples of node types and names)."""
    if isinstance(definition, str):
        if "/msg/" in definition:
            yield definition
    elif isinstance(definition, (tuple, list)):
        for item in definition:
            yield from _type_names(item)


def bag_topics(bag: PathLike, distro: str = "humble") -> Dict[str, str]:
    """topic -> message type of a bag (BagError when it cannot be read)."""
    with open_bag(bag, _typestore(distro)) as reader:
        return {name: str(info.msgtype) for name, info in reader.topics.items()}


def _resolve_image_topic(topics: Mapping[str, Any], wanted: str, transport: str) -> Tuple[str, str]:
    """The topic (and type) holding the camera frames: ``wanted``, or ``wanted/compressed`` for that transport."""
    candidates = [wanted]
    if transport == "compressed" and not wanted.endswith("/compressed"):
        candidates.insert(0, wanted.rstrip("/") + "/compressed")
    for topic in candidates:
        if topic in topics:
            msgtype = topics[topic].msgtype
            if msgtype not in IMAGE_TYPES:
                raise BagError(f"topic {topic} has type {msgtype}; expected {IMAGE} or {COMPRESSED}; "
                               f"image topics in this bag: {_image_topics(topics)}; fix: pass --image-topic")
            return topic, msgtype
    raise BagError(f"image topic {wanted} is not in the bag; image topics in this bag: {_image_topics(topics)}; "
                   f"all topics: {_format_topics(topics)}; fix: pass --image-topic TOPIC (or set image_topic "
                   "in the params file)")


def _image_topics(topics: Mapping[str, Any], counts: bool = False) -> str:
    found = [f"{t} [{i.msgtype}" + (f", {getattr(i, 'msgcount', '?')} messages]" if counts else "]")
             for t, i in sorted(topics.items()) if i.msgtype in IMAGE_TYPES]
    return ", ".join(found) if found else "none"


def _check_topic(topics: Mapping[str, Any], topic: str, allowed: Sequence[str], flag: str) -> str:
    if topic not in topics:
        raise BagError(f"topic {topic} ({flag}) is not in the bag; topics: {_format_topics(topics)}")
    msgtype = topics[topic].msgtype
    if msgtype not in allowed:
        raise BagError(f"topic {topic} ({flag}) has type {msgtype}; expected one of {list(allowed)}")
    return msgtype


def _stamp_ns(msg: Any) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# ------------------------------------------------------------------------------------------- writing


REPLAY_OUT_FIX = "pass --force to replace it, --out to write elsewhere, or --no-out to write no bag"


class _OutputBag:
    """The output bag, written in a hidden staging folder beside it and moved into place when complete, so an
    interrupted replay leaves no half-written bag. rosbags names the storage file after the bag folder, so the
    bag is written under its final name inside the staging folder."""

    def __init__(self, path: Path, storage: str, typestore: Any, force: bool, fix: str = REPLAY_OUT_FIX,
                 elsewhere: str = "pass another --out") -> None:
        from rosbags.rosbag2 import Writer

        self.path = path
        self.typestore = typestore
        _check_output(path, force, fix, elsewhere)
        self.partial = path.with_name(f".{path.name}.partial")
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        staged = self.partial / path.name
        if writer_storages() == ("sqlite3",):  # older rosbags (0.9.x is the last for Python 3.8): sqlite3 only
            self.writer = Writer(staged)
        else:
            from rosbags.rosbag2 import StoragePlugin

            plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
            self.writer = Writer(staged, version=BAG_VERSION, storage_plugin=plugin)
        self.writer.open()
        self.connections: Dict[str, Any] = {}
        self.types: Dict[str, str] = {}

    def add(self, topic: str, msgtype: str, msgdef: Optional[str] = None, digest: Optional[str] = None) -> Any:
        if msgdef and digest:
            conn = self.writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=digest)
        else:
            conn = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
        self.connections[topic] = conn
        self.types[topic] = msgtype
        return conn

    def write(self, topic: str, timestamp: int, data: Any) -> None:
        self.writer.write(self.connections[topic], int(timestamp), data)

    def commit(self, force: bool) -> None:
        self.writer.close()
        if self.path.exists():
            _check_output(self.path, force)
            _remove_bag(self.path)
        (self.partial / self.path.name).rename(self.path)
        self.partial.rmdir()

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            shutil.rmtree(self.partial, ignore_errors=True)


def writer_storages() -> Tuple[str, ...]:
    """The storages the installed rosbags can write (older releases, e.g. 0.9.x on Python 3.8: sqlite3 only)."""
    import inspect

    from rosbags.rosbag2 import Writer

    return STORAGES if "storage_plugin" in inspect.signature(Writer.__init__).parameters else ("sqlite3",)


def _rosbags_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rosbags")
    except PackageNotFoundError:
        return "(version unknown)"


def _pick_storage(storage: Optional[str]) -> str:
    can = writer_storages()
    if storage is None:
        return can[0]
    if storage not in STORAGES:
        raise ConfigError(f"--storage {storage!r}: expected one of {list(STORAGES)}")
    if storage not in can:
        raise ConfigError(f"--storage {storage}: the installed rosbags {_rosbags_version()} writes only "
                          f"{list(can)} bags (newer releases, on Python 3.10+, write mcap too); fix: pass "
                          "--storage sqlite3")
    return storage


def _looks_like_bag(path: Path) -> bool:
    if path.is_file():
        return path.suffix in (".mcap", ".db3")
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    return (path / "metadata.yaml").is_file() and all(
        e.is_file() and (e.name == "metadata.yaml" or e.suffix in (".mcap", ".db3", ".zstd")) for e in entries
    )


def _check_output(path: Path, force: bool, fix: str = REPLAY_OUT_FIX, elsewhere: str = "pass another --out") -> None:
    """An output bag path: free, or an earlier bag and ``force``. ``fix``/``elsewhere``: the calling command's
    own flags (tub2bag has no --out or --no-out)."""
    if not path.exists():
        return
    if not force:
        raise BagError(f"output {path} exists; refusing to overwrite it; fix: {fix}")
    if not _looks_like_bag(path):
        raise BagError(f"output {path} exists and is not a rosbag2 bag (metadata.yaml + .mcap/.db3 files only); "
                       f"refusing to delete it even with --force; fix: {elsewhere}")


def _remove_bag(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


# ------------------------------------------------------------------------------------------- config


def load_config(params: PathLike, heads: Optional[Sequence[str]] = None, node_name: str = "trt_perception") -> Any:
    """A ``PerceptionConfig`` from a node params YAML, with the heads switched as asked (None: as the file says)."""
    from trt_perception.config import PerceptionConfig
    from trt_perception.params import load_params_file

    config = PerceptionConfig.from_params(load_params_file(params, node_name=node_name))
    return select_heads(config, heads)


def select_heads(config: Any, heads: Optional[Sequence[str]]) -> Any:
    """``config`` with exactly ``heads`` enabled (None: unchanged); an unknown name lists the configured ones."""
    if heads is None:
        return config
    names = [h.name for h in config.heads]
    unknown = [h for h in heads if h not in names]
    if unknown:
        raise ConfigError(f"--heads {','.join(heads)!r} names {unknown}, which the params do not configure; "
                          f"expected a comma-separated subset of {names}, e.g. --heads {names[0]}")
    chosen = tuple(dataclasses.replace(h, enabled=h.name in heads) for h in config.heads)
    if chosen != config.heads:
        config = dataclasses.replace(config, heads=chosen)
        config.check_heads()
    return config


def replay_config(config: Any, heads: Optional[Sequence[str]] = None) -> Tuple[Any, List[str]]:
    """The config replay runs: heads as asked, and the driving head's switch on (offline there are no motors,
    and with it off every command would be a stop). Returns the config and notes for the report."""
    notes: List[str] = []
    config = select_heads(config, heads)
    changed = []
    for head in config.heads:
        if head.enabled and head.task == "steering" and not head.values.get("drive_enabled", False):
            changed.append(dataclasses.replace(head, values={**head.values, "drive_enabled": True}))
            notes.append(f"{head.name}.drive_enabled is false in the params; replay turns it on to show the "
                         f"commands the pilot would send")
        else:
            changed.append(head)
    if notes:
        config = dataclasses.replace(config, heads=tuple(changed))
    return config, notes


def one_thread_per_inference(config: Any) -> Tuple[Any, List[str]]:
    """The config with every ONNX Runtime head on one intra-op thread (``ort_threads: 1``), for a replay whose
    helper threads infer frames side by side: they already keep every core busy, and a session's thread pool
    shared by two helpers' inferences costs CPU to wake for little work. Benchmark 10, demo models: 1.37x ->
    1.46x the user script on the 2-core VM, 1.76x -> 1.82x on 2 cores of the GPU host, 2.10x -> 2.36x on 8
    (2026-12-06). The results are the same: ONNX Runtime's CPU kernels split a layer's outputs between threads,
    not the sums behind each output (test_frames_prepared_ahead_give_the_sequential_replay). Returns the config
    and a note for the report naming the heads."""
    from trt_perception.backends.base import backend_for

    changed, names = [], []
    for head in config.heads:
        # A disabled head may have no model at all (model: ''): ask its backend only when it runs.
        if head.enabled and head.model.ort_threads != 1 and (
                backend_for(head.model.model, head.model.backend) == "onnxruntime"):
            head = dataclasses.replace(head, model=dataclasses.replace(head.model, ort_threads=1))
            names.append(head.name)
        changed.append(head)
    if not names:
        return config, []
    note = (f"{', '.join(names)} ran with ort_threads 1 (the params say otherwise): replay's helper threads "
            "infer frames side by side, one thread each; --threads 0 or 1 keeps the params' ort_threads")
    return dataclasses.replace(config, heads=tuple(changed)), [note]


def parse_heads(text: Optional[str]) -> Optional[List[str]]:
    """`--heads detector,pilot` -> ['detector', 'pilot']; None keeps the params file's choice."""
    if text is None:
        return None
    heads = [h.strip() for h in text.split(",") if h.strip()]
    if not heads:
        raise ConfigError(f"--heads {text!r}: expected a comma-separated list of head names, "
                          "e.g. --heads detector or --heads detector,pilot")
    return heads


class BagClock:
    """The bag's clock for the pilot's safety logic (watchdog, slew limit): seconds of recorded time."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------- replay


@dataclass
class _Frame:
    """A camera message as read from the bag, before deserializing (helpers do that)."""

    index: int
    t_ns: int  # log (receive) time in the bag
    raw: Any


class _Undeserializable:
    """A frame whose bytes are no message of the topic's type (deserialized in a helper thread)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class _Collector:
    """Accumulates what the report needs in typed growing columns (``array.array``: 4-8 bytes a value, no
    Python object per frame), so a replay's memory stays flat in the bag's length."""

    def __init__(self, report: ReplayReport, t0_ns: int, sample_indices: Sequence[int]) -> None:
        self.report = report
        self.t0_ns = t0_ns
        self.stage_seconds: Dict[str, array] = {}
        self.frame_t = array("q")
        self.frame_stamp = array("q")
        self.steering = array("d")  # predicted, in the recorded topic's units; NaN: no command
        self.throttle = array("d")
        self.det_count = array("i")  # -1: the detection head gave no output for the frame
        self.det_boxes = array("f")  # 4 a detection
        self.det_scores = array("f")
        self.det_class = array("i")
        self.det_labels = array("i")  # index into labels
        self.det_tracks = array("i")  # index into tracks; -1 untracked
        self.labels: Dict[str, int] = {}
        self.tracks: Dict[str, int] = {}
        self.output_latency = array("d")
        self.drive_outputs = 0
        self.drive_stops = 0
        self.sample_indices = set(int(i) for i in sample_indices)
        self.samples: List[Tuple[SampleFrame, int]] = []
        # head -> (task, frames, sums of numeric diagnostics, counts of text diagnostics): constant memory
        self._summaries: Dict[str, Tuple[str, List[int], Dict[str, float], Dict[str, Dict[str, int]]]] = {}

    def label_index(self, label: str) -> int:
        return self.labels.setdefault(label, len(self.labels))

    def track_index(self, track: str) -> int:
        return self.tracks.setdefault(track, len(self.tracks)) if track else -1

    def frame(self, t_ns: int, stamp: int, values: Tuple[float, float], detections: Optional[Detections],
              timings: Mapping[str, float]) -> None:
        """One processed frame, appended to every column at once (nothing partial when a frame fails)."""
        self.frame_t.append(t_ns)
        self.frame_stamp.append(stamp)
        self.steering.append(values[0])
        self.throttle.append(values[1])
        for stage, seconds in timings.items():
            column = self.stage_seconds.get(stage)
            if column is None:
                column = self.stage_seconds[stage] = array("f")  # float32: 0.1 us resolution at 1 s
            column.append(seconds)
        if detections is None:
            self.det_count.append(-1)
            return
        count = len(detections)
        self.det_count.append(count)
        if not count:
            return
        self.det_boxes.extend(np.asarray(detections.boxes, np.float32).reshape(-1).tolist())
        self.det_scores.extend(np.asarray(detections.scores, np.float32).reshape(-1).tolist())
        self.det_class.extend(np.asarray(detections.class_ids, np.int64).reshape(-1).tolist())
        self.det_labels.extend([self.label_index(str(label)) for label in detections.labels])
        ids = getattr(detections, "ids", None) or ()
        self.det_tracks.extend([self.track_index(str(t)) for t in ids] if ids else [-1] * count)

    def head_summary(self, head: Any, output: Any) -> None:
        """Fold one frame of a head the report has no dedicated section for (classification, segmentation)
        into running means of its numeric diagnostics and counts of its text ones."""
        _, frames, sums, counts = self._summaries.setdefault(head.name, (head.task.name, [0], {}, {}))
        frames[0] += 1
        for key, value in head.task.diagnostics(output).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                sums[key] = sums.get(key, 0.0) + float(value)
            else:
                text = str(value).rsplit(" ", 1)[0] if key == "top" else str(value)
                bucket = counts.setdefault(key, {})
                bucket[text] = bucket.get(text, 0) + 1

    def finish_summaries(self) -> Dict[str, Dict[str, Any]]:
        out: Dict[str, Dict[str, Any]] = {}
        for name, (task, frames, sums, counts) in self._summaries.items():
            n = max(frames[0], 1)
            out[name] = {"task": task, "frames": frames[0], "mean": {k: v / n for k, v in sums.items()},
                         "counts": counts}
        return out

    def bad(self, frame: _Frame, reason: str) -> None:
        self.report.bad_frames += 1
        if len(self.report.bad_frame_reasons) < MAX_BAD_REASONS:
            self.report.bad_frame_reasons.append(f"frame {frame.index} at t={frame.t_ns * 1e-9:.3f}: {reason}")

    def failed(self, frame: _Frame, stamp: Optional[int], exc: BaseException) -> None:
        """A frame whose processing raised something other than an ImageError: counted, listed, skipped."""
        self.report.failed_frames += 1
        if len(self.report.failed_frame_reasons) < MAX_BAD_REASONS:
            at = f", stamp {stamp * 1e-9:.3f}" if stamp is not None else ""
            self.report.failed_frame_reasons.append(
                f"frame {frame.index} at t={frame.t_ns * 1e-9:.3f}{at}: {type(exc).__name__}: {exc}")


class _Truth:
    """Ground-truth boxes by stamp, in typed columns (a message's boxes, labels and track ids), the last
    message winning for a stamp recorded twice."""

    def __init__(self, collect: _Collector) -> None:
        self.collect = collect
        self.stamps = array("q")
        self.count = array("i")
        self.boxes = array("f")  # float32: pixel coordinates to 1/1000 px at 8K
        self.labels = array("i")
        self.tracks = array("i")
        self._index: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None

    def __len__(self) -> int:
        return len(self.stamps)

    def add(self, stamp: int, boxes: np.ndarray, labels: Sequence[str], ids: Sequence[str]) -> None:
        self.stamps.append(stamp)
        self.count.append(len(labels))
        self.boxes.extend(np.asarray(boxes, np.float64).reshape(-1).tolist())
        self.labels.extend([self.collect.label_index(label) for label in labels])
        self.tracks.extend([self.collect.track_index(t) for t in ids])
        self._index = None

    def index(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sorted unique stamps, each one's message row, the rows' first box) for lookups by stamp."""
        if self._index is None:
            stamps = np.frombuffer(self.stamps, np.int64) if len(self.stamps) else np.zeros(0, np.int64)
            rows = np.arange(stamps.size)[::-1]  # the last message of a stamp first, so np.unique keeps it
            unique, first = np.unique(stamps[::-1], return_index=True)
            counts = np.frombuffer(self.count, np.int32) if len(self.count) else np.zeros(0, np.int32)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts.size else counts
            self._index = (unique, rows[first], starts)
        return self._index

    def row(self, row: int) -> Tuple[np.ndarray, List[str], List[str]]:
        """Boxes (xyxy float64), labels and track ids ('' none) of message ``row``."""
        _, _, starts = self.index()
        a = int(starts[row])
        b = a + self.count[row]
        labels, tracks = _names(self.collect.labels), _names(self.collect.tracks)
        boxes = np.asarray(self.boxes[4 * a : 4 * b], np.float64).reshape(-1, 4)
        return (boxes, [labels[j] for j in self.labels[a:b]],
                [tracks[j] if j >= 0 else "" for j in self.tracks[a:b]])

    def get(self, stamp: int) -> Optional[Tuple[np.ndarray, List[str], List[str]]]:
        unique, rows, _ = self.index()
        at = int(np.searchsorted(unique, stamp))
        return self.row(int(rows[at])) if at < unique.size and unique[at] == stamp else None


def _names(vocabulary: Mapping[str, int]) -> List[str]:
    """A vocabulary (name -> index, filled in order) as the list of names by index."""
    return list(vocabulary)


def _column(values: array, dtype: Any) -> np.ndarray:
    """A typed column as a numpy array (a copy: the column may still grow)."""
    return np.array(values, dtype) if len(values) else np.zeros(0, dtype)


def replay_bag(
    bag: PathLike,
    config: Any,
    out: Optional[PathLike] = None,
    report_dir: Optional[PathLike] = None,
    image_topic: Optional[str] = None,
    heads: Optional[Sequence[str]] = None,
    truth_drive_topic: Optional[str] = None,
    truth_detections_topic: Optional[str] = None,
    truth_mask_topic: Optional[str] = None,
    realtime: bool = False,
    force: bool = False,
    storage: Optional[str] = None,
    distro: Optional[str] = None,
    limit: Optional[int] = None,
    progress: bool = False,
    plots: bool = True,
    processor: Any = None,
    threads: Optional[int] = None,
    extra_notes: Sequence[str] = (),
    batch: Optional[int] = None,
    plot_process: Any = None,
) -> ReplayReport:
    """Replay ``bag`` through the pipeline ``config`` describes (a ``PerceptionConfig`` or a params YAML path).

    ``out``: output bag path (None: write none). ``report_dir``: report.json + plots (None: none).
    ``heads``: names of configured heads to run, None keeps the config's. ``storage``: 'mcap' or 'sqlite3'
    (None: mcap where the installed rosbags can write it, else sqlite3). ``distro``: the ROS distro whose
    message definitions read a bag that carries none (Humble sqlite3) and go into the output bag (None: the
    bag's own where it records one, else humble; the messages replay uses are the same in both).
    ``processor``: an already built ``FrameProcessor`` (tests, benchmarks); it is not closed here.
    ``threads``: helper threads preparing the next frames while this one finishes the last (deserialize,
    decode and, for models that ``runs_ahead``: preprocess + infer); None: ``default_threads()``; 0: none.
    Results are the same for any number (frames finish in order; tasks and outputs run here).
    ``batch``: consecutive frames each helper takes at once, run as one batch through the models that run ahead
    and have a dynamic batch dimension (None: ``DEFAULT_BATCH``; 1: frame by frame). Results are the same.
    ``extra_notes``: the caller's own notes for the report (how it changed the config, e.g. the demo without lapx).
    ``plot_process``: a ``PlotProcess`` (``start_plot_process``) that draws the report's matplotlib plots while
    this process scores the run; start it as early as you can (the CLI's replay and demo do, first thing).
    """
    from trt_perception.rosbag_types import DISTROS

    storage = _pick_storage(storage)
    if limit is not None and limit <= 0:
        raise ConfigError(f"--limit {limit}: expected a positive number of frames")
    if isinstance(config, (str, Path)):
        config = load_config(config, heads)
    config, config_notes = replay_config(config, heads)
    notes = [*extra_notes, *config_notes]
    bag_path = Path(bag).expanduser()
    out_path = Path(out).expanduser() if out is not None else None
    # before any work: an hour-long replay must not fail at the end on its outputs
    from trt_perception.tools.output_paths import check_writable_folder, is_inside, refuse_output_inside

    if out_path is not None and report_dir is not None and is_inside(out_path, report_dir):
        raise ConfigError(f"--out {out_path} and --report {report_dir} overlap: the report's files would go into "
                          "the output bag's folder, which then is no bag a later --force may replace; fix: pass "
                          "two separate paths, e.g. --report REPORT and --out REPORT/bag (a bag inside the report "
                          "folder is fine)")
    if out_path is not None:
        if out_path.resolve() == bag_path.resolve():
            raise BagError(f"--out {out_path} is the input bag; fix: pass another --out")
        refuse_output_inside(bag_path, out_path, "--out")
        _check_output(out_path, force)
        check_writable_folder(out_path.parent, "--out")
    if report_dir is not None:
        refuse_output_inside(bag_path, report_dir, "--report")
        check_report_folder(Path(report_dir), force)

    read_distro = distro or "humble"
    read_store = _typestore(read_distro)
    with open_bag(bag_path, read_store) as reader:
        bag_distro = _bag_distro(reader)
        write_distro = distro or (bag_distro if bag_distro in DISTROS else "humble")
        write_store = read_store if write_distro == read_distro else _typestore(write_distro)
        topics = reader.topics
        problems = getattr(reader, "problems", None)  # a DonkeyCar tub: what was wrong with it (skipped, noted)
        if problems is not None:  # a tub: its camera, and the driver's recorded commands as the reference
            from trt_perception.tools import tub

            if not image_topic:
                image_topic = tub.IMAGE_TOPIC if tub.IMAGE_TOPIC in topics else tub.RAW_IMAGE_TOPIC
            if truth_drive_topic and truth_drive_topic not in topics and tub.USER_TOPIC in topics:
                # a bag's topic (evaluate over bags and tubs takes one --truth-drive-topic): a tub has its own
                notes.append(f"a DonkeyCar tub has no {truth_drive_topic} (--truth-drive-topic): its recorded "
                             f"user/angle and user/throttle ({tub.USER_TOPIC}) are the reference instead")
                truth_drive_topic = None
            if truth_drive_topic is None and tub.USER_TOPIC in topics:
                truth_drive_topic = tub.USER_TOPIC
                notes.append(f"a DonkeyCar tub: frames from its camera ({image_topic}), the recorded user/angle and "
                             f"user/throttle as the reference commands ({tub.USER_TOPIC}; --truth-drive-topic "
                             f"{tub.PILOT_TOPIC} for the recorded pilot's)")
        topic, image_type = _resolve_image_topic(
            topics, image_topic or config.image_topic, "raw" if image_topic else config.image_transport
        )
        if truth_drive_topic:
            _check_topic(topics, truth_drive_topic, DRIVE_TYPES, "--truth-drive-topic")
        if truth_detections_topic:
            _check_topic(topics, truth_detections_topic, (DETECTIONS,), "--truth-detections-topic")
        if truth_mask_topic:
            _check_topic(topics, truth_mask_topic, IMAGE_TYPES, "--truth-mask-topic")

        clock = BagClock(reader.start_time * 1e-9)
        owns_processor = processor is None
        if processor is None:
            from trt_perception.heads import create_frame_processor

            if helper_count(threads) >= 2 and not realtime and getattr(config, "overlap", True):
                config, one_thread = one_thread_per_inference(config)
                notes.extend(one_thread)
            processor = create_frame_processor(config, clock=clock)
        active = [h.name for h in processor.heads]
        detection = next((h.name for h in processor.heads if h.task.name == "detection"), "")
        drive = processor.drive_head.name if processor.drive_head is not None else ""
        report = ReplayReport(bag=str(bag_path), image_topic=topic, image_type=image_type, heads=active,
                              realtime=realtime, notes=notes, detection_head=detection, drive_head=drive)
        try:
            run = _Run(reader, processor, config, report, topic, write_store, clock, truth_drive_topic,
                       truth_detections_topic, realtime, limit, progress, truth_mask_topic, threads, batch)
            if plot_process is not None and report_dir is not None and plots:
                report_path = Path(report_dir).expanduser()
                run.plots_ready = lambda names: plot_process.submit(report, report_path, names)
            output = None
            if out_path is not None:
                output = _OutputBag(out_path, storage, write_store, force)
            try:
                run.execute(output)
                if problems is not None and problems.total:  # after the pass: damaged images are found as read
                    report.notes.extend(f"tub: {line}" for line in problems.lines())
                if report.frames_in == 0:
                    raise BagError(f"image topic {topic} of {bag_path} holds no messages, so nothing was replayed "
                                   f"(no output bag or report written); image topics in this bag: "
                                   f"{_image_topics(topics, counts=True)}; fix: pass --image-topic with a topic "
                                   "that has frames, or record the camera")
            except BaseException:
                if output is not None:
                    output.abort()
                raise
            if output is not None:
                output.commit(force)
                report.out_bag = str(out_path)
                report.output_topics = dict(output.types)
        finally:
            if owns_processor:
                processor.close()
    if report_dir is not None:
        write_report_files(report, Path(report_dir).expanduser(), plots=plots, plot_process=plot_process)
    return report


_TYPESTORES: Dict[str, Any] = {}
# At most 4 helpers: they bound the decoded frames in flight ((helpers + 1) x batch), which matters for 1080p
# bags on small Jetsons; 6 did better on 6 cores of the GPU host (2.66x vs 2.44x the script on 2026-12-06).
MAX_THREADS = 4
# Frames a helper takes at once, one inference for a model with a dynamic batch dimension: a small model's cost
# is mostly per call (benchmark 10: 16 gained nothing over 8); 8 keeps the frames in flight ((threads + 1) x 8)
# few.
DEFAULT_BATCH = 8


class _NoProgress:
    """The progress bar's calls when no bar is shown (--no-progress, not a terminal)."""

    def update(self, count: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, shown: bool) -> Any:
    """tqdm's bar on stderr, or ``_NoProgress``: tqdm's import (about 30 ms at start) is paid only where a bar
    is shown."""
    if not shown:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="replay", dynamic_ncols=True, file=sys.stderr)


def helper_count(threads: Optional[int]) -> int:
    """Replay's helper threads for ``--threads`` (None: ``default_threads()``)."""
    return default_threads() if threads is None else max(0, int(threads))


def default_threads() -> int:
    """Replay's helper threads: one per core this process may use, at most ``MAX_THREADS``; three on two cores.

    On two cores the two helpers spend part of each frame waiting for the GIL (Python glue, parsing) while
    this thread runs the tasks, and a third fills that time (benchmark 10, 2026-12-06, interleaved rounds: 1.29-1.45x
    -> 1.47-1.58x the user script on the 2-core VM; 1.65-1.86x -> 1.69-1.92x on 2 cores of the GPU host). On one
    core and on 3, 4 and 6 cores of the GPU host, a helper per core did best (one more: 3-6% slower)."""
    try:
        cores = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]  # Linux: honours taskset/cgroups
    except AttributeError:
        cores = os.cpu_count() or 1
    if cores == 2:
        return 3
    return max(1, min(MAX_THREADS, cores))


def _typestore(distro: str) -> Any:
    """One typestore per distro per process: rosbags compiles a serializer per type and store, once."""
    if distro not in _TYPESTORES:
        from trt_perception.rosbag_types import get_typestore

        _TYPESTORES[distro] = get_typestore(distro)
    return _TYPESTORES[distro]


def _bag_distro(reader: Any) -> Optional[str]:
    for sub in getattr(reader, "readers", []):
        distro = getattr(sub, "ros_distro", None)
        if distro:
            return str(distro)
    return None


class _Run:
    """One pass over the bag: frames in, pipeline, outputs written, ground truth collected."""

    def __init__(self, reader: Any, processor: Any, config: Any, report: ReplayReport, topic: str,
                 typestore: Any, clock: BagClock, truth_drive_topic: Optional[str],
                 truth_detections_topic: Optional[str], realtime: bool, limit: Optional[int],
                 progress: bool, truth_mask_topic: Optional[str] = None, threads: Optional[int] = None,
                 batch: Optional[int] = None) -> None:
        from trt_perception.messages import MessageTypes

        self.reader = reader
        self.processor = processor
        self.config = config
        self.report = report
        self.topic = topic
        self.typestore = typestore
        self.clock = clock
        self.types = MessageTypes.from_typestore(typestore)
        self.truth_drive_topic = truth_drive_topic
        self.truth_detections_topic = truth_detections_topic
        self.truth_mask_topic = truth_mask_topic
        self.mask_head = next((h for h in processor.heads if h.task.name == "segmentation"), None)
        self.confusion: Any = None
        if self.mask_head is not None and truth_mask_topic:
            from trt_perception.tools.evaluation import ConfusionMatrix

            classes = max(len(self.mask_head.spec.segmentation.labels), 2)
            self.confusion = ConfusionMatrix(classes)
        # frames and truth masks wait here (by stamp) for their partner; bounded, so memory stays flat
        self.pending_masks: Dict[int, np.ndarray] = {}
        self.pending_truth_masks: Dict[int, np.ndarray] = {}
        self.realtime = realtime
        self.limit = limit
        self.progress = progress
        # Each head's topics as the node publishes them; relative there (namespace and remapping apply), at the
        # root in the bag. Overlays are images for people watching live: not written.
        from trt_perception.messages import MESSAGE_CLASSES

        self.topics: Dict[Tuple[str, str], Tuple[str, str]] = {}  # (head, role) -> (topic, msgtype)
        for head in processor.heads:
            for topic in head.task.topics(config.topic_prefix(head.name)):
                if not topic.overlay:
                    package, name = MESSAGE_CLASSES[topic.type]
                    self.topics[(head.name, topic.role)] = ("/" + topic.name.lstrip("/"), f"{package}/msg/{name}")
        # topics heads read besides the camera (IMU, behavior): bag topic -> [(head, the topic as it names it)]
        self.input_topics: Dict[str, List[Tuple[Any, str]]] = {}
        self.input_types: Dict[str, str] = {}  # bag topic -> the message type the heads read there
        for head in processor.heads:
            for name, msgtype in head.task.accepts_topics():
                self.input_topics.setdefault("/" + name.lstrip("/"), []).append((head, name))
                self.input_types["/" + name.lstrip("/")] = msgtype
        self.detection_head = next((h for h in processor.heads if h.task.name == "detection"), None)
        self.drive_head = processor.drive_head
        self.safety = self.drive_head.task.safety if self.drive_head is not None else None
        # Frames that may wait while the model is busy: the latest-frame mailbox holds one; inline processing
        # leaves them in the subscription's keep-last queue.
        self.queue_size = 1 if config.frame_policy == "latest" else max(1, int(config.qos_depth))
        self.processed_any = False
        self.watchdog_stops = 0
        self.last_frame_id = ""
        self.drive_truth_t = array("q")  # recorded commands: log time, steering, throttle (own units)
        self.drive_truth_steering = array("d")
        self.drive_truth_throttle = array("d")
        self.drive_truth_type: Optional[str] = None
        if truth_drive_topic and truth_drive_topic in reader.topics:
            self.drive_truth_type = str(reader.topics[truth_drive_topic].msgtype)
        # the units predicted commands are kept in: the recorded topic's, else the pilot's own message
        self.drive_kind = "twist"
        if self.drive_truth_type is not None:
            self.drive_kind = "ackermann" if self.drive_truth_type in (ACKERMANN, ACKERMANN_STAMPED) else "twist"
        elif self.drive_head is not None:
            self.drive_kind = self.drive_head.task.pilot.output
        self.collect = _Collector(report, 0, ())
        self.detection_truth = _Truth(self.collect)
        self.output: Optional[_OutputBag] = None
        self.busy_until = -math.inf
        self.threads = helper_count(threads)
        self.batch = DEFAULT_BATCH if batch is None else max(1, int(batch))
        self._pending = deque()
        self._chunk = []
        # the plots whose data is final go to the plot process (replay_bag sets it when there is one)
        self.plots_ready: Callable[[Sequence[str]], None] = lambda names: None

    # ---------------------------------------------------------------- driving the pass

    def execute(self, output: Optional[_OutputBag]) -> None:
        reader = self.reader
        self.output = output
        image_conns = [c for c in reader.connections if c.topic == self.topic]
        truth_conns = [c for c in reader.connections
                       if c.topic in (self.truth_drive_topic, self.truth_detections_topic, self.truth_mask_topic)]
        input_conns = [c for c in reader.connections if c.topic in self.input_topics]
        for topic in sorted(set(self.input_topics) - {c.topic for c in input_conns}):
            heads = ", ".join(h.name for h, _ in self.input_topics[topic])
            effect = ("no IMU data: the pilot stops on every frame, as on the car" if "Imu" in
                      self.input_types.get(topic, "") else "the behavior stays the head's behavior param, or the "
                      "spec's default")
            self.report.notes.append(f"{heads} reads {topic}, which is not in the bag ({effect})")
        total = sum(c.msgcount for c in image_conns)
        if self.limit is not None:
            total = min(total, self.limit)
        if output is not None:
            conn = image_conns[0]
            msgdef = conn.msgdef.data if getattr(conn.msgdef, "data", "") else None
            output.add(self.topic, conn.msgtype, msgdef=msgdef, digest=conn.digest or None)
            for topic, msgtype in self.topics.values():
                output.add(topic, msgtype)
        self._warm_up()
        t0 = reader.start_time
        samples = np.unique(np.linspace(0, max(total - 1, 0), SAMPLE_CANDIDATES).round().astype(int)) if total else []
        collect = self.collect
        collect.t0_ns = t0
        collect.sample_indices = set(int(i) for i in samples)
        waiting: Deque[_Frame] = deque()
        index = 0
        first_t = last_t = None
        started = time.perf_counter()
        bar = _progress_bar(total, self.progress)
        try:
            for conn, t_ns, raw in self._messages(image_conns + truth_conns + input_conns):
                if self.limit is not None and index >= self.limit:
                    if t_ns > last_t + DRIVE_MATCH_TOLERANCE_S * 1e9:
                        break  # --limit: past the last frame's neighbourhood, no truth left to match
                    if conn.topic == self.topic:
                        continue
                if conn.topic in self.input_topics:
                    self._flush_pending()  # the frame before this input sees the task state it saw before
                    self._input(conn, t_ns, raw)
                    continue
                if conn.topic != self.topic:
                    self._truth(conn, t_ns, raw)
                    continue
                frame = _Frame(index, t_ns, raw)
                index += 1
                first_t = t_ns if first_t is None else first_t
                last_t = t_ns
                self.report.frames_in += 1
                if output is not None:
                    output.write(self.topic, t_ns, raw)
                if not self.realtime:  # to the helper threads; older frames take their turn here
                    self._overlapped(frame, t_ns)
                else:
                    self._watchdog(t_ns)
                    self._arrive(frame, waiting)
                bar.update(1)
                if index % 50 == 0:
                    bar.set_postfix(bad=self.report.bad_frames, dropped=self.report.dropped_frames, refresh=False)
            self._flush_pending()
            while waiting:
                ready = waiting.popleft()
                self._process(ready, max(self.busy_until, ready.t_ns))
        finally:
            self._pending.clear()
            self._chunk = []
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            bar.close()
        self.report.wall_s = time.perf_counter() - started
        self.report.bag_duration_s = (last_t - first_t) * 1e-9 if first_t is not None else 0.0
        self._finish(first_t if first_t is not None else t0)

    def _input(self, conn: Any, t_ns: int, raw: Any) -> None:
        """A message of a topic a head reads (IMU, behavior): to its task at its bag time, as the node's
        subscription hands it over on arrival."""
        try:
            msg = self.reader.deserialize(raw, conn.msgtype)
        except Exception as exc:  # a damaged input message is noted, not fatal
            self.report.notes.append(f"skipped a {conn.topic} message: {type(exc).__name__}: {exc}")
            return
        for head, name in self.input_topics[conn.topic]:
            head.task.on_message(name, msg, t_ns * 1e-9)

    def _warm_up(self) -> None:
        """First calls are slow (ONNX Runtime allocations, rosbags compiling its serializers): pay them before
        the first frame so the latency table shows steady-state numbers, as a warmed-up node would."""
        for head in self.processor.heads:
            head.pipeline.backend.warmup(1)
        from trt_perception.messages import detection_array, make_header

        header = make_header(self.types, 0, 0, "")
        if self.detection_head is not None:
            self.typestore.serialize_cdr(detection_array(self.types, header, Detections.empty()), DETECTIONS)
        if self.drive_head is not None:
            self._drive_payload(DriveCommand(0.0, 0.0), header)

    def _messages(self, connections: Sequence[Any]) -> Iterator[Tuple[Any, int, Any]]:
        """The bag's messages in time order; a storage error mid-file is a BagError naming where it stopped."""
        iterator = self.reader.messages(connections=connections)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except TrtPerceptionError:
                raise
            except Exception as exc:  # rosbags/mcap/sqlite3 raise their own types for a damaged file
                raise BagError(f"bag {self.report.bag} is damaged after {self.report.frames_in} frames: "
                               f"{type(exc).__name__}: {exc}; {_DAMAGED}; or pass --limit "
                               f"{max(1, self.report.frames_in)} to replay the part before the damage") from None
            yield item

    def _watchdog(self, t_ns: int) -> None:
        """The node's watchdog timer, checked at each frame arrival: a gap in the recording longer than
        pilot.watchdog_timeout publishes one stop, as on the car."""
        if self.safety is None or not self.processed_any:
            return
        self.clock.now = t_ns * 1e-9
        stop = self.safety.check_watchdog(self.clock.now)
        if stop is not None:
            self.watchdog_stops += 1
            self._write_stop(stop, t_ns)

    def _arrive(self, frame: _Frame, waiting: Deque[_Frame]) -> None:
        """A frame arrives on the bag clock: the worker first takes what waited and is due, then the frame runs
        at once if the worker is free, else it waits; a full queue drops its oldest frame (counted)."""
        while waiting and self.busy_until <= frame.t_ns:
            ready = waiting.popleft()
            self._process(ready, max(self.busy_until, ready.t_ns))
        if not waiting and self.busy_until <= frame.t_ns:
            self._process(frame, frame.t_ns)
            return
        if len(waiting) >= self.queue_size:
            waiting.popleft()
            self.report.dropped_frames += 1
        waiting.append(frame)

    # ---------------------------------------------------------------- one frame

    # ------------------------------------------------ frames prepared ahead in helper threads (not --realtime)

    _pending: Deque[Tuple[List[_Frame], Any]]  # consecutive frames prepared in a helper, and their future
    _chunk: List[_Frame]  # the next frames for the helpers, until ``batch`` of them are there
    _pool: Any = None

    def _prepare(self, frames: List[_Frame]) -> List[Any]:
        """A helper thread's part of consecutive frames: deserialize, decode and, where the models allow,
        preprocess + infer (and parse, where the format parses batches), in batches for models with a batch
        dimension (``FrameProcessor.prepare_many``); each frame's turn in this thread runs the tasks. Per
        frame: ``(msg, PreparedFrame or the exception that stopped it)``, or ``_Undeserializable``."""
        msgs: List[Any] = []
        for frame in frames:
            try:
                msgs.append(self.reader.deserialize(frame.raw, self._image_type()))
            except Exception as exc:  # not a message of the type: counted in the frame's turn
                msgs.append(_Undeserializable(exc))
        prepared = iter(self.processor.prepare_many([msg for msg in msgs if not isinstance(msg, _Undeserializable)]))
        return [msg if isinstance(msg, _Undeserializable) else (msg, next(prepared)) for msg in msgs]

    def _overlapped(self, frame: _Frame, t_ns: int) -> None:
        """Frame N arrives: it joins the next chunk for the helpers (``batch`` frames, one batch through models
        with a batch dimension); chunks older than the last ``threads`` then take their turn here in order, each
        frame after the watchdog at its own time, as in the sequential order. At most (``threads`` + 1) x
        ``batch`` frames are decoded and not yet finished (``FrameProcessor.keep_frames``)."""
        if not hasattr(self.processor, "prepare_many") or not getattr(self.config, "overlap", True) or self.threads < 1:
            self._watchdog(t_ns)  # overlap: false, threads 0, or a test double
            self._process(frame, t_ns)
            return
        if self._pool is None:
            self._start_helpers()
        self._chunk.append(frame)
        if len(self._chunk) >= self.batch:
            self._submit()
        while len(self._pending) > self.threads:
            self._turn(*self._pending.popleft())

    def _start_helpers(self) -> None:
        """The helper threads, and how many frames each takes at once: ``batch`` where a model that runs ahead
        has a batch dimension (else 1), fewer where the decoder cannot keep that many frames alive."""
        from concurrent.futures import ThreadPoolExecutor

        processor = self.processor
        self.batch = max(1, min(self.batch, int(processor.ahead_batch)))
        keep = processor.keep_frames  # frames in flight: ``threads`` chunks in the helpers, 1 in its turn
        if self.batch > 1 and keep((self.threads + 1) * self.batch) < (self.threads + 1) * self.batch:
            self.batch = 1
        if self.batch == 1:
            self.threads = max(1, min(self.threads, keep(self.threads + 2) - 1))
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="trt_perception_prepare")
        what = "decoded and inferred" if processor.runs_ahead else "decoded"
        batched = [h.name for h in processor.heads if getattr(h.pipeline, "runs_ahead", False)
                   and getattr(h.pipeline, "batch_capacity", 1) > 1]  # fmt: skip
        how = (f", {self.batch} frames at a time through one inference of {', '.join(batched)} (--batch)"
               if self.batch > 1 else "")
        self.report.notes.append(
            f"frames were {what} ahead in {self.threads} helper thread(s) (--threads){how}: per-stage times "
            "include waiting for the cores the threads share; --threads 0 times one frame at a time, as the node "
            "runs"
        )

    def _submit(self) -> None:
        chunk, self._chunk = self._chunk, []
        self._pending.append((chunk, self._pool.submit(self._prepare, chunk)))

    def _turn(self, frames: List[_Frame], future: Any) -> None:
        for frame, prepared in zip(frames, future.result()):
            self._watchdog(frame.t_ns)
            self._process(frame, frame.t_ns, prepared)

    def _flush_pending(self) -> None:
        if self._chunk:
            self._submit()
        while self._pending:
            self._turn(*self._pending.popleft())

    def _process(self, frame: _Frame, start_ns: float, prepared: Any = None) -> None:
        """One frame, with the node's policy: an ImageError is a bad frame, any other exception a failed frame;
        both are counted (the first few listed in the report) and skipped, and the replay goes on."""
        collect = self.collect
        began = time.perf_counter()
        stamp: Optional[int] = None
        decoded = None
        try:
            if isinstance(prepared, _Undeserializable):
                raise prepared.error
            if prepared is not None:
                msg, decoded = prepared  # decoded: a PreparedFrame, or the exception that stopped it
            else:
                msg = self.reader.deserialize(frame.raw, self._image_type())
            stamp = _stamp_ns(msg)
        except Exception as exc:  # a message the type's CDR layout cannot hold: counted, skipped
            collect.bad(frame, f"cannot deserialize {self._image_type()}: {exc}")
            self.busy_until = start_ns + (time.perf_counter() - began) * 1e9
            return
        self.clock.now = start_ns * 1e-9
        try:
            if isinstance(decoded, Exception):
                raise decoded
            if decoded is not None:
                result = self.processor.finish(decoded, self.clock.now)
            else:
                result = self.processor.process(msg, self.clock.now)
            # What the node does next: build the output messages and serialize them (rclpy's publish does);
            # timed as the "messages" stage. Writing them into the output bag is replay's own cost, not timed.
            t_msgs = time.perf_counter()
            payloads, values, detections = self._outputs(msg, result)
        except ImageError as exc:
            collect.bad(frame, str(exc))
            self.busy_until = start_ns + (time.perf_counter() - began) * 1e9
            return
        except Exception as exc:  # an inference or message-building failure: the node counts it and goes on
            collect.failed(frame, stamp, exc)
            self.busy_until = start_ns + (time.perf_counter() - began) * 1e9
            return
        end = time.perf_counter()
        log_ns = round(start_ns + (end - began) * 1e9) if self.realtime else frame.t_ns
        if self.output is not None:
            for topic, data in payloads:
                self.output.write(topic, log_ns, data)
        timings = dict(result.timings)
        timings["messages"] = end - t_msgs
        self.busy_until = start_ns + (end - began) * 1e9
        if self.realtime:
            collect.output_latency.append((self.busy_until - frame.t_ns) * 1e-9)
        self.report.frames_processed += 1
        self.processed_any = True
        collect.frame(frame.t_ns, stamp, values, detections, timings)
        for head in self.processor.heads:
            output = result.outputs.get(head.name)
            if output is not None and head is not self.detection_head and head is not self.drive_head:
                collect.head_summary(head, output)
        if self.confusion is not None and self.mask_head.name in result.outputs:
            self._pair_mask(stamp, result.outputs[self.mask_head.name].result.mask, predicted=True)
        if frame.index in collect.sample_indices and detections is not None:
            sample = _sample(frame, result.image, detections, collect.t0_ns)
            attach_mask(sample, self.mask_head, result.outputs)
            collect.samples.append((sample, stamp))

    def _outputs(self, msg: Any, result: Any) -> Tuple[List[Tuple[str, Any]], Tuple[float, float],
                                                        Optional[Detections]]:
        """The frame's serialized output messages (none without an output bag: built, never serialized), the
        drive command in the recorded topic's units (NaN: none) and the detection head's detections."""
        header = self._header(msg)
        drive_head, detection_head = self.drive_head, self.detection_head
        values = (math.nan, math.nan)
        payloads = []
        for head in self.processor.heads:
            output = result.outputs.get(head.name)
            if output is None:
                continue
            for role, out_msg in head.task.messages(self.types, header, output):
                topic, msgtype = self.topics[(head.name, role)]
                if self.output is not None:  # built either way (the node's messages), bytes only for a bag
                    payloads.append((topic, self.typestore.serialize_cdr(out_msg, msgtype)))
                if head is drive_head and role == "command" and self.drive_kind == drive_head.task.pilot.output:
                    values = _drive_values(out_msg, msgtype)  # the message the node sends, read back
        command = result.outputs[drive_head.name].command if drive_head is not None and \
            drive_head.name in result.outputs else None
        if command is not None:
            self.collect.drive_outputs += 1
            self.collect.drive_stops += int(bool(command.stop))
            if math.isnan(values[0]):  # not sent, or the recorded commands are in the other message's units
                values = self._command_values(command, self.drive_kind)
        detection = result.outputs.get(detection_head.name) if detection_head is not None else None
        return payloads, values, detection.result if detection is not None else None

    def _drive_payload(self, command: DriveCommand, header: Any) -> Any:
        """The pilot's output message (Twist or AckermannDriveStamped), serialized."""
        msg = self.drive_head.task.command_message(self.types, header, command)
        return self.typestore.serialize_cdr(msg, self.topics[(self.drive_head.name, "command")][1])

    def _write_stop(self, command: DriveCommand, log_ns: int) -> None:
        """A watchdog stop: no frame behind it, so it is stamped with the bag clock."""
        if self.output is None:
            return
        sec, nsec = divmod(int(log_ns), 1_000_000_000)
        header = self._make_header(sec, nsec, self.last_frame_id)
        topic = self.topics[(self.drive_head.name, "command")][0]
        self.output.write(topic, log_ns, self._drive_payload(command, header))

    def _image_type(self) -> str:
        return self.report.image_type

    def _header(self, msg: Any) -> Any:
        """The input frame's stamp AND frame_id, in the output typestore's classes."""
        stamp = msg.header.stamp
        self.last_frame_id = str(msg.header.frame_id)
        return self._make_header(stamp.sec, stamp.nanosec, self.last_frame_id)

    def _make_header(self, sec: int, nanosec: int, frame_id: str) -> Any:
        from trt_perception.messages import make_header

        return make_header(self.types, sec, nanosec, frame_id)

    # ---------------------------------------------------------------- ground truth

    def _truth(self, conn: Any, t_ns: int, raw: Any) -> None:
        try:
            msg = self.reader.deserialize(raw, conn.msgtype)
        except Exception as exc:  # a damaged ground-truth message is noted, not fatal
            if len(self.report.notes) < MAX_BAD_REASONS:
                self.report.notes.append(f"skipped a {conn.topic} message at t={t_ns * 1e-9:.3f}: {exc}")
            return
        if conn.topic == self.truth_mask_topic:
            self._truth_mask(msg)
            return
        if conn.topic == self.truth_drive_topic:
            self.drive_truth_type = conn.msgtype
            steering, throttle = _drive_values(msg, conn.msgtype)
            self.drive_truth_t.append(t_ns)
            self.drive_truth_steering.append(steering)
            self.drive_truth_throttle.append(throttle)
        else:
            self.detection_truth.add(_stamp_ns(msg), *self._truth_boxes(msg))

    def _truth_mask(self, msg: Any) -> None:
        """A ground-truth class-id mask (mono8 Image or png CompressedImage), paired with its frame by stamp."""
        if self.confusion is None:
            return
        from trt_perception.images import ImageDecoder

        try:
            array = ImageDecoder()(msg).array
        except ImageError as exc:
            if len(self.report.notes) < MAX_BAD_REASONS:
                self.report.notes.append(f"skipped a {self.truth_mask_topic} mask: {exc}")
            return
        mask = array if array.ndim == 2 else array[:, :, 0]
        self._pair_mask(_stamp_ns(msg), mask.astype(np.uint8, copy=True), predicted=False)

    def _pair_mask(self, stamp: int, mask: np.ndarray, predicted: bool) -> None:
        mine, other = self.pending_masks, self.pending_truth_masks
        if not predicted:
            mine, other = other, mine
        partner = other.pop(stamp, None)
        if partner is None:
            mine[stamp] = mask.copy() if predicted else mask
            while len(mine) > MASK_PAIR_WINDOW:
                mine.pop(next(iter(mine)))
            return
        truth, prediction = (partner, mask) if predicted else (mask, partner)
        self.confusion.add(truth, prediction)

    def _truth_boxes(self, msg: Any) -> Tuple[np.ndarray, List[str], List[str]]:
        """Boxes (xyxy), labels and track ids ('' where Detection2D.id is empty) of a ground-truth message."""
        count = len(msg.detections)
        boxes = np.zeros((count, 4), np.float64)
        labels: List[str] = []
        ids = [str(det.id) for det in msg.detections]
        for i, det in enumerate(msg.detections):  # ground truth: a few boxes per frame
            cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
            w, h = det.bbox.size_x, det.bbox.size_y
            boxes[i] = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            class_id = det.results[0].hypothesis.class_id if det.results else ""
            labels.append(self._truth_label(str(class_id)))
        return boxes, labels, ids

    def _truth_label(self, class_id: str) -> str:
        """Ground truth may name classes by label or by numeric id; compare by label where we know it."""
        detector = self.detection_head
        if detector is not None and class_id.strip().lstrip("-").isdigit():
            return detector.spec.detection.label_for(int(class_id))
        return class_id

    # ---------------------------------------------------------------- report

    def _finish(self, t0_ns: int) -> None:
        report, collect = self.report, self.collect
        series = report.series
        rows = self._rows(t0_ns)
        series.rows = rows
        report.latency = {k: LatencyStats.from_seconds(v) for k, v in rows.latency.items()}
        series.stage_seconds = rows.latency
        if self.realtime:
            report.output_latency = LatencyStats.from_seconds(_column(collect.output_latency, np.float64))
        detected = rows.det_count[rows.det_count >= 0]
        report.detections_total = int(detected.sum())
        report.detections_max_per_frame = int(detected.max(initial=0))
        per_class = np.bincount(rows.det_labels, minlength=len(rows.labels)) if rows.det_labels.size else []
        report.detections_per_class = {rows.labels[i]: int(n) for i, n in enumerate(per_class) if n}
        self._track_series(rows)
        if self.drive_head is not None:
            self._drive_report(rows)
        self.plots_ready(("steering", "latency"))  # what they show is final: drawn while the scoring runs
        report.head_summaries = collect.finish_summaries()
        if self.confusion is not None:
            self._segmentation_report()
        if self.truth_detections_topic is not None and self.detection_head is not None:
            self._detection_report(rows)
            self._tracking_report(rows)
        for sample, stamp in collect.samples:
            truth = self.detection_truth.get(stamp)
            if truth is not None:
                sample.truth_boxes = truth[0] * sample.scale
                sample.truth_labels = list(truth[1])
        series.samples = _pick_samples([s for s, _ in collect.samples], SAMPLE_FRAMES)

    def _rows(self, t0_ns: int) -> FrameRows:
        """The collected columns as numpy arrays, ground truth paired with the frames (by stamp for boxes, by
        log time within the match window for drive commands)."""
        collect = self.collect
        stamps = _column(collect.frame_stamp, np.int64)
        frame_t = _column(collect.frame_t, np.int64)
        count = stamps.size
        truth_count = np.full(count, -1, np.int32)
        truth_rows: List[int] = []
        if len(self.detection_truth):
            unique, rows, _ = self.detection_truth.index()
            pick = nearest_within(stamps.astype(np.float64), unique.astype(np.float64),
                                  DETECTION_MATCH_TOLERANCE_S * 1e9)
            counts = _column(self.detection_truth.count, np.int32)
            matched = pick >= 0
            truth_rows = rows[pick[matched]].tolist()
            truth_count[matched] = counts[truth_rows]
        truth_boxes, truth_labels, truth_tracks = [], [], []
        for row in truth_rows:  # one slice per matched frame
            boxes, labels, tracks = self._truth_slices(row)
            truth_boxes.append(boxes)
            truth_labels.append(labels)
            truth_tracks.append(tracks)
        steering_truth, throttle_truth = self._matched_commands(frame_t)
        return FrameRows(
            stamps=stamps, times=(frame_t - t0_ns) * 1e-9, det_count=_column(collect.det_count, np.int32),
            det_boxes=_column(collect.det_boxes, np.float32).reshape(-1, 4),
            det_scores=_column(collect.det_scores, np.float32), det_labels=_column(collect.det_labels, np.int32),
            truth_count=truth_count,
            truth_boxes=np.concatenate(truth_boxes).reshape(-1, 4) if truth_boxes else np.zeros((0, 4)),
            truth_labels=np.concatenate(truth_labels) if truth_labels else np.zeros(0, np.int32),
            labels=_names(collect.labels), steering=_column(collect.steering, np.float64),
            throttle=_column(collect.throttle, np.float64), steering_truth=steering_truth,
            throttle_truth=throttle_truth,
            latency={k: _column(v, np.float64) for k, v in collect.stage_seconds.items()},
            det_tracks=_column(collect.det_tracks, np.int32),
            truth_tracks=np.concatenate(truth_tracks) if truth_tracks else np.zeros(0, np.int32),
            tracks=_names(collect.tracks),
        )  # fmt: skip

    def _truth_slices(self, row: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        truth = self.detection_truth
        _, _, starts = truth.index()
        a = int(starts[row])
        b = a + truth.count[row]
        return (np.asarray(truth.boxes[4 * a : 4 * b], np.float64).reshape(-1, 4),
                np.asarray(truth.labels[a:b], np.int32), np.asarray(truth.tracks[a:b], np.int32))

    def match_window_s(self) -> float:
        """How far a recorded command may be from a frame and still be its reference: one period of the
        slower of the two streams (camera frames, recorded commands), at most DRIVE_MATCH_TOLERANCE_S. Frames
        past the last command (or in a gap of the recording) then get none, rather than a stale one."""
        periods = []
        for t in (_column(self.collect.frame_t, np.int64), _column(self.drive_truth_t, np.int64)):
            gaps = np.diff(np.sort(t)) if t.size > 1 else np.zeros(0)
            gaps = gaps[gaps > 0]
            if gaps.size:
                periods.append(float(np.median(gaps)) * 1e-9)
        window = max(periods) if periods else DRIVE_MATCH_TOLERANCE_S
        return min(window * (1.0 + 1e-6), DRIVE_MATCH_TOLERANCE_S)

    def _matched_commands(self, frame_t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The recorded (steering, throttle) that is each frame's reference; NaN where none is in the window."""
        steering = np.full(frame_t.size, np.nan)
        throttle = np.full(frame_t.size, np.nan)
        if not len(self.drive_truth_t) or not frame_t.size:
            return steering, throttle
        t = _column(self.drive_truth_t, np.int64)
        order = np.argsort(t, kind="stable")
        pick = nearest_within(frame_t.astype(np.float64), t[order].astype(np.float64), self.match_window_s() * 1e9)
        ok = pick >= 0
        steering[ok] = _column(self.drive_truth_steering, np.float64)[order][pick[ok]]
        throttle[ok] = _column(self.drive_truth_throttle, np.float64)[order][pick[ok]]
        return steering, throttle

    def _track_series(self, rows: FrameRows) -> None:
        """When the head tracks: the times each published id was seen, and each ground-truth id (on the
        processed frames its box's stamp matched), for tracks.png; and how many ids were published."""
        series = self.report.series
        det_tracks = rows.det_tracks if rows.det_tracks is not None else np.zeros(0, np.int32)
        tracked = det_tracks >= 0
        self.report.tracks_total = int(np.unique(det_tracks[tracked]).size)
        if not tracked.any():
            return
        series.track_times = _times_by_track(rows.det_count, det_tracks, rows.times, rows.tracks)
        if rows.truth_tracks is not None and rows.truth_tracks.size:
            series.truth_track_times = _times_by_track(rows.truth_count, rows.truth_tracks, rows.times, rows.tracks)

    def _drive_report(self, rows: FrameRows) -> None:
        report, collect, series = self.report, self.collect, self.report.series
        report.drive_outputs = collect.drive_outputs + self.watchdog_stops
        report.drive_stops = collect.drive_stops + self.watchdog_stops
        if self.watchdog_stops:
            report.notes.append(f"{self.watchdog_stops} watchdog stop(s): gaps in the recording longer than "
                                f"{self.drive_head.name}.watchdog_timeout "
                                f"({self.drive_head.task.pilot.safety.watchdog_timeout:g} s)")
        steer_field, throttle_field = _FIELDS[self.drive_kind]
        series.steering_units = (steer_field, throttle_field)
        series.frame_times = rows.times
        series.predicted_steering = rows.steering
        series.predicted_throttle = rows.throttle
        if not len(self.drive_truth_t):
            return
        t = _column(self.drive_truth_t, np.int64)
        order = np.argsort(t, kind="stable")
        series.recorded_times = (t[order] - self.collect.t0_ns) * 1e-9
        series.recorded_steering = _column(self.drive_truth_steering, np.float64)[order]
        series.recorded_throttle = _column(self.drive_truth_throttle, np.float64)[order]
        ok = np.isfinite(rows.steering_truth) & np.isfinite(rows.steering)
        steer_mae, steer_rmse = mae_rmse(rows.steering[ok], rows.steering_truth[ok])
        thr_mae, thr_rmse = mae_rmse(rows.throttle[ok], rows.throttle_truth[ok])
        unmatched = int(np.isnan(rows.steering_truth).sum())
        window = self.match_window_s()
        report.drive = DriveError(
            topic=str(self.truth_drive_topic), msgtype=str(self.drive_truth_type), matched=int(ok.sum()),
            steering_mae=steer_mae, steering_rmse=steer_rmse, throttle_mae=thr_mae, throttle_rmse=thr_rmse,
            steering_field=steer_field, throttle_field=throttle_field, unmatched=unmatched, window_s=window,
        )
        if unmatched:
            report.notes.append(f"{unmatched} of {len(rows)} frames have no command on {self.truth_drive_topic} "
                                f"within {window * 1000:.0f} ms (one period of the frames or the commands, "
                                f"whichever is longer, at most {DRIVE_MATCH_TOLERANCE_S:g} s): left out of "
                                "the steering/throttle errors")

    def _command_values(self, command: DriveCommand, kind: str) -> Tuple[float, float]:
        """A command in the units of a recorded topic: built into that message exactly as the node would."""
        from trt_perception import messages

        if kind == "ackermann":
            header = self.typestore.types["std_msgs/msg/Header"](
                stamp=self.typestore.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="")
            msg = messages.ackermann(self.types, header, command, self.drive_head.task.pilot)
            return float(msg.drive.steering_angle), float(msg.drive.speed)
        msg = messages.twist(self.types, command, self.drive_head.task.pilot)
        return float(msg.angular.z), float(msg.linear.x)

    def _segmentation_report(self) -> None:
        confusion, head = self.confusion, self.mask_head
        labels = list(head.spec.segmentation.labels)
        names = [labels[i] if i < len(labels) else str(i) for i in range(confusion.num_classes)]
        iou = confusion.iou().tolist()
        self.report.segmentation_eval = SegmentationEval(
            head=head.name, topic=str(self.truth_mask_topic), frames=confusion.frames, miou=confusion.miou(),
            pixel_accuracy=confusion.pixel_accuracy(),
            iou_per_class={n: (v if math.isfinite(v) else None) for n, v in zip(names, iou)},
        )
        if confusion.frames == 0:
            self.report.notes.append(f"no mask on {self.truth_mask_topic} carries the stamp of a processed frame; "
                                     "mIoU needs masks stamped like the images they describe")

    def _detection_report(self, rows: FrameRows) -> None:
        evaluation = DetectionEval(topic=str(self.truth_detections_topic), frames=0, iou_threshold=IOU_THRESHOLD)
        for truth_boxes, truth_labels, boxes, scores, labels in rows.scored_frames():
            evaluation.frames += 1
            for name, score in score_frame(boxes, scores, labels, truth_boxes, truth_labels).items():
                evaluation.per_class.setdefault(name, ClassScore()).add(score)
        from trt_perception.tools.evaluation import COCO_EVAL_HINT, coco_map

        maps = coco_map(list(rows.scored_frames())) if evaluation.frames else None
        if maps is not None:
            evaluation.map_50, evaluation.map_50_95 = maps["map_50"], maps["map_50_95"]
        elif evaluation.frames:
            self.report.notes.append(f"COCO mAP not computed: faster-coco-eval is not installed; fix: {COCO_EVAL_HINT}")
        self.report.detection_eval = evaluation
        if evaluation.frames == 0:
            self.report.notes.append(
                f"no ground-truth message on {self.truth_detections_topic} carries the stamp of a processed "
                "frame; precision/recall need boxes stamped like the images they describe")

    def _tracking_report(self, rows: FrameRows) -> None:
        """MOTA/IDF1 of the detection head's tracks when the ground truth carries track ids (Detection2D.id)."""
        head = self.detection_head
        tracker = getattr(head.task, "tracker", None)
        paired = (rows.det_count >= 0) & (rows.truth_count >= 0)
        truth_tracks = rows.truth_tracks if rows.truth_tracks is not None else np.zeros(0, np.int32)
        # the truth boxes of the paired frames (truth of frames without a detection output is not scored)
        scored = np.repeat(paired[rows.truth_count >= 0], rows.truth_count[rows.truth_count >= 0])
        with_id = int((truth_tracks[scored] >= 0).sum())
        without_id = int((truth_tracks[scored] < 0).sum())
        if not with_id:
            if tracker is not None and paired.any():
                self.report.notes.append(f"tracking not scored: the ground truth on {self.truth_detections_topic} "
                                         "carries no track ids (Detection2D.id)")
            return
        if tracker is None:
            self.report.notes.append(f"the ground truth on {self.truth_detections_topic} carries track ids; "
                                     f"tracking (MOTA, IDF1) is scored when {head.name} runs a tracker "
                                     f"({head.name}.tracker: bytetrack, with lapx installed)")
            return
        if without_id:
            self.report.notes.append(f"tracking not scored: {without_id} of {with_id + without_id} ground-truth "
                                     f"boxes on {self.truth_detections_topic} have no track id (Detection2D.id); "
                                     "MOTA/IDF1 need an id on every box")
            return
        from trt_perception.tools.evaluation import MOT_EVAL_HINT, TRACK_IOU, mot_metrics

        values = mot_metrics(list(rows.track_frames()))
        if values is None:
            self.report.notes.append(f"tracking (MOTA, IDF1) not scored: motmetrics is not installed; fix: "
                                     f"{MOT_EVAL_HINT}")
            return
        det_paired = np.repeat(paired[rows.det_count >= 0], rows.det_count[rows.det_count >= 0])
        det_tracks = rows.det_tracks if rows.det_tracks is not None else np.zeros(0, np.int32)
        predicted = int(np.unique(det_tracks[det_paired & (det_tracks >= 0)]).size)
        self.report.tracking_eval = TrackingEval.from_metrics(head.name, str(self.truth_detections_topic),
                                                              TRACK_IOU, values, predicted)


def _times_by_track(counts: np.ndarray, tracks: np.ndarray, times: np.ndarray, names: Sequence[str]
                    ) -> Dict[str, List[float]]:
    """Track name -> the times (s) of the frames it appears in, from per-frame counts of a flat id column."""
    frame_of = np.repeat(np.arange(counts.size), np.maximum(counts, 0))
    out: Dict[str, List[float]] = {}
    for track, frame in zip(tracks.tolist(), frame_of.tolist()):
        if track >= 0:
            out.setdefault(names[track], []).append(float(times[frame]))
    return out


_FIELDS = {"twist": ("angular.z", "linear.x"), "ackermann": ("steering_angle", "speed")}


def _drive_values(msg: Any, msgtype: str) -> Tuple[float, float]:
    """(steering, throttle) of a recorded drive command, in its own units."""
    if msgtype == TWIST_STAMPED:
        msg = msg.twist
    if msgtype in (TWIST, TWIST_STAMPED):
        return float(msg.angular.z), float(msg.linear.x)
    if msgtype == ACKERMANN_STAMPED:
        msg = msg.drive
    return float(msg.steering_angle), float(msg.speed)


def _to_bgr(image: Any) -> np.ndarray:
    """A BGR uint8 copy-or-view of a DecodedImage (rgb, bgr, gray, gray16), for drawing."""
    import cv2

    if image.color == "bgr":
        return image.array
    if image.color == "rgb":
        return cv2.cvtColor(image.array, cv2.COLOR_RGB2BGR)
    gray = image.array if image.color == "gray" else (image.array >> 8).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def _pick_samples(candidates: Sequence[SampleFrame], count: int) -> List[SampleFrame]:
    """``count`` frames spread over the bag, preferring those with something to see (detections or truth)."""
    busy = [s for s in candidates if len(s.labels) or (s.truth_labels and len(s.truth_labels))]
    pool = busy if len(busy) >= count else list(candidates)
    if len(pool) <= count:
        return list(pool)
    keep = np.unique(np.linspace(0, len(pool) - 1, count).round().astype(int))
    return [pool[i] for i in keep]


def _sample(frame: _Frame, decoded: Any, det: Detections, t0_ns: int) -> SampleFrame:
    """A downscaled BGR copy of a frame with its detections, for the report's grid."""
    import cv2

    image = _to_bgr(decoded)
    height, width = image.shape[:2]
    scale = min(1.0, SAMPLE_WIDTH / float(width))
    small = cv2.resize(image, (max(1, int(width * scale)), max(1, int(height * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1.0 else image.copy()
    ids = getattr(det, "ids", None) or [""] * len(det)
    labels = [f"{label} #{track}" if track else label for label, track in zip(det.labels, ids)]
    sample = SampleFrame(index=frame.index, time_s=(frame.t_ns - t0_ns) * 1e-9, image_bgr=small,
                         boxes=np.asarray(det.boxes, np.float32) * scale, labels=labels,
                         scores=np.asarray(det.scores, np.float32), class_ids=np.asarray(det.class_ids, np.int64),
                         scale=scale)
    return sample


# ------------------------------------------------------------------------------------------- CLI


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="rosbag2 recording: its folder (metadata.yaml + .mcap/.db3) or one .mcap/.db3")
    parser.add_argument("--params", required=True,
                        help="node params YAML (the file the node uses on the car, e.g. config/car.yaml)")
    parser.add_argument("--out", default=None,
                        help="output bag (default: ./<BAG name>_replay); holds the image topic and the node's "
                             "outputs, for Foxglove or `ros2 bag play`")
    parser.add_argument("--no-out", action="store_true", help="write no output bag (report only)")
    parser.add_argument("--report", metavar="DIR", default=None,
                        help="write report.json and plots (steering.png, latency.png, detections.png) into DIR")
    parser.add_argument("--image-topic", default=None, help="camera topic in the bag (default: the params' one)")
    parser.add_argument("--heads", default=None, help="which of the configured heads run, comma-separated, e.g. "
                                                       "detector,pilot (default: those enabled in the params)")
    parser.add_argument("--truth-drive-topic", default=None,
                        help="recorded drive commands (Twist, TwistStamped, AckermannDrive[Stamped]) to compare "
                             "steering/throttle against, e.g. /teleop/cmd_vel")
    parser.add_argument("--truth-detections-topic", default=None,
                        help="ground-truth Detection2DArray topic for precision/recall at IoU 0.5, and for "
                             "MOTA/IDF1 when its Detection2D.id carry track ids and the head runs a tracker")
    parser.add_argument("--truth-mask-topic", default=None,
                        help="ground-truth class-id masks (mono8 Image or png CompressedImage, stamped like the "
                             "frames) for the segmentation head's mIoU")
    parser.add_argument("--realtime", action="store_true",
                        help="honour the recorded timing with the node's latest-frame policy: count the frames "
                             "a live node at this model speed would drop (default: process every frame)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing output bag and an earlier report in --report DIR")
    parser.add_argument("--storage", choices=STORAGES, default=None,
                        help="output bag storage (default: mcap; sqlite3 where the installed rosbags cannot "
                             "write mcap)")
    parser.add_argument("--distro", choices=("humble", "jazzy"), default=None,
                        help="message definitions for bags that carry none and for the output bag (default: "
                             "the input bag's distro, else humble; replay's messages are the same in both)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="replay only the first N frames")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="helper threads preparing the next frames (decode; preprocess + inference for ONNX "
                             "Runtime CPU models) while this one finishes the last; default: the cores (3 on 2 "
                             f"cores), at most {MAX_THREADS}; 0: one frame at a time. With 2 or more, each ONNX "
                             "Runtime inference runs on one thread (ort_threads 1). Results are the same for any N")
    parser.add_argument("--batch", type=int, default=None, metavar="N",
                        help="consecutive frames run as one batch through models with a dynamic batch dimension "
                             f"(ONNX Runtime CPU), by the helper threads; default {DEFAULT_BATCH}; 1: frame by "
                             "frame. Results are the same for any N")


def default_out(bag: PathLike) -> Path:
    """./<bag name>_replay: next to where the user is, or beside the recording when the user is inside its
    folder (``cd tub && trt-perception replay .``): never inside the recording."""
    from trt_perception.tools.output_paths import is_inside

    recording = Path(bag).expanduser().resolve()
    name = recording.name
    for suffix in (".mcap", ".db3"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    here = Path.cwd()
    if recording.is_dir() and is_inside(recording, here):
        return recording.parent / f"{name}_replay"
    return here / f"{name}_replay"


def run_replay(args: argparse.Namespace) -> int:
    if args.no_out and args.out:
        raise ConfigError(f"--no-out and --out {args.out} contradict each other; fix: pass --out to write the "
                          "output bag there, or --no-out to write none")
    out = None if args.no_out else (Path(args.out) if args.out else default_out(args.bag))
    if args.threads is not None and args.threads < 0:
        raise ConfigError(f"--threads {args.threads}: expected 0 (one frame at a time) or more helper threads")
    if args.batch is not None and args.batch < 1:
        raise ConfigError(f"--batch {args.batch}: expected 1 (frame by frame) or more frames per inference")
    from trt_perception.tools.plot_process import start_plot_process

    with start_plot_process(args.report is not None) or nullcontext() as plot_process:
        report = _replay_from_args(args, out, plot_process)
    from trt_perception.tools.report import format_report, nothing_processed

    print(format_report(report))
    complaint = nothing_processed(report)
    if complaint is not None:
        print(f"trt-perception replay: error: {complaint}", file=sys.stderr)
        return 1
    return 0


def _replay_from_args(args: argparse.Namespace, out: Optional[Path], plot_process: Any) -> ReplayReport:
    return replay_bag(
        args.bag,
        args.params,
        out=out,
        report_dir=args.report,
        image_topic=args.image_topic,
        heads=parse_heads(args.heads),
        truth_drive_topic=args.truth_drive_topic,
        truth_detections_topic=args.truth_detections_topic,
        truth_mask_topic=args.truth_mask_topic,
        realtime=args.realtime,
        force=args.force,
        storage=args.storage,
        distro=args.distro,
        limit=args.limit,
        progress=not args.no_progress and sys.stderr.isatty(),
        threads=args.threads,
        batch=args.batch,
        plot_process=plot_process,
    )
