"""The inputs of `trt-perception evaluate`: finding them, and turning one into per-frame rows on disk.

One input is one recording (a rosbag2 bag today; a DonkeyCar tub is one more ``InputKind``). A worker process
(or a Ray task) replays it with ``replay.replay_bag`` through a ``RecordingProcessor`` - the node's
``FrameProcessor`` with a tap that keeps each processed frame's stamp and detections - and returns a small
summary plus the frame rows as compressed ``.npz`` bytes, which the parent writes into the run folder. The
parent never holds more than one input's rows, so memory stays flat in the number of inputs; the totals are
computed afterwards from the files (``evaluate_report``).

Adding an input kind (e.g. DonkeyCar tubs): write ``claims(path) -> bool`` (a tub folder holds
``manifest.json``), ``count_frames(path, topic) -> Optional[int]`` and ``run(path, config, options,
make_processor) -> (ReplayReport, truth)`` where ``run`` builds its processor with ``make_processor(config,
clock)`` and replays through it; then add one ``InputKind`` line to ``INPUT_KINDS``.
"""

from __future__ import annotations

import gc
import glob
import io
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception.errors import ConfigError, TrtPerceptionError

PathLike = Union[str, Path]
# stamp (ns) -> (truth boxes xyxy float64 [N,4], class ids or labels as recorded)
RawTruth = Dict[int, Tuple[np.ndarray, List[str]]]
ROWS_VERSION = 1


# ------------------------------------------------------------------------------------------- options, tasks


@dataclass(frozen=True)
class EvalOptions:
    """What every replay of a run shares (picklable: it travels to worker processes and Ray tasks)."""

    image_topic: Optional[str] = None
    heads: Optional[Tuple[str, ...]] = None
    truth_detections_topic: Optional[str] = None
    truth_drive_topic: Optional[str] = None
    realtime: bool = False
    limit: Optional[int] = None
    distro: Optional[str] = None


@dataclass(frozen=True)
class InputRef:
    """One recording to evaluate: its path and kind ('bag', later 'tub')."""

    path: str
    kind: str

    @property
    def name(self) -> str:
        path = Path(self.path)
        return path.stem if path.suffix in (".mcap", ".db3") else path.name


@dataclass(frozen=True)
class Task:
    """One replay: an input under one model set (variant 'A' or 'B')."""

    index: int
    variant: str
    params: str
    input: InputRef
    options: EvalOptions


# ------------------------------------------------------------------------------------------- input kinds


@dataclass(frozen=True)
class InputKind:
    """How to recognise, count and replay one kind of recording."""

    name: str
    claims: Callable[[Path], bool]
    count_frames: Callable[[Path, str], Optional[int]]
    run: Callable[..., Tuple[Any, RawTruth]]


def is_bag(path: Path) -> bool:
    """A rosbag2 recording: a folder with metadata.yaml, or one .mcap/.db3 file."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.is_file() and path.suffix in (".mcap", ".db3")


def count_bag_frames(path: Path, topic: str) -> Optional[int]:
    """Camera messages in a bag from its metadata.yaml (no reader opened); None when it cannot tell."""
    import yaml

    meta = path / "metadata.yaml" if path.is_dir() else None
    if meta is None or not meta.is_file():
        return None
    try:
        info = yaml.safe_load(meta.read_text(encoding="utf-8"))["rosbag2_bagfile_information"]
        counts = {t["topic_metadata"]["name"]: int(t["message_count"]) for t in info["topics_with_message_count"]}
    except Exception:  # an unusual metadata file: the replay itself will say what is wrong
        return None
    for name in (topic.rstrip("/") + "/compressed", topic):
        if name in counts:
            return counts[name]
    return None


def run_bag(path: Path, config: Any, options: EvalOptions,
            make_processor: Callable[[Any, Any], Any]) -> Tuple[Any, RawTruth]:
    """Replay one bag through ``make_processor(config, clock)``; also read its ground-truth boxes by stamp.

    The truth is read in a first pass over that topic only (replay keeps it to itself); replay then reads
    the bag again for the frames, with the same clock start it would use on its own.
    """
    from trt_perception.tools.replay import BagClock, open_bag, replay_bag

    truth: RawTruth = {}
    with open_bag(path, _typestore(options.distro or "humble")) as reader:
        start_ns = int(reader.start_time)
        topic = options.truth_detections_topic
        connections = [c for c in reader.connections if c.topic == topic] if topic else []
        if connections:
            for conn, _, raw in reader.messages(connections=connections):
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception:  # replay notes a damaged truth message; it is skipped alike here
                    continue
                truth[_stamp_ns(msg)] = _truth_boxes(msg)
    clock = BagClock(start_ns * 1e-9)
    processor = make_processor(config, clock)
    try:
        report = replay_bag(
            path, config, out=None, report_dir=None, image_topic=options.image_topic,
            truth_drive_topic=options.truth_drive_topic, truth_detections_topic=options.truth_detections_topic,
            realtime=options.realtime, distro=options.distro, limit=options.limit, progress=False, plots=False,
            processor=processor,
        )  # fmt: skip
    finally:
        processor.close()
    return report, truth


INPUT_KINDS: List[InputKind] = [
    InputKind("bag", is_bag, count_bag_frames, run_bag),
]


def input_kind(name: str) -> InputKind:
    for kind in INPUT_KINDS:
        if kind.name == name:
            return kind
    raise ConfigError(f"input kind {name!r} is not known; expected one of {[k.name for k in INPUT_KINDS]}")


def _typestore(distro: str) -> Any:
    from trt_perception.tools.replay import _typestore as replay_typestore

    return replay_typestore(distro)


def _stamp_ns(msg: Any) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _truth_boxes(msg: Any) -> Tuple[np.ndarray, List[str]]:
    """A Detection2DArray's boxes (xyxy) and class ids, as replay reads them."""
    boxes = np.zeros((len(msg.detections), 4), np.float64)
    ids: List[str] = []
    for i, det in enumerate(msg.detections):
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        w, h = det.bbox.size_x, det.bbox.size_y
        boxes[i] = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        ids.append(str(det.results[0].hypothesis.class_id) if det.results else "")
    return boxes, ids


# ------------------------------------------------------------------------------------------- discovery


_GLOB_CHARS = set("*?[")


def discover_inputs(items: Sequence[PathLike], list_files: Sequence[PathLike] = ()) -> List[InputRef]:
    """Inputs from paths, globs, folders (searched for recordings) and text files of paths (one a line,
    '#' comments). Order: as given, folders and globs sorted; duplicates dropped. Nothing found is an error."""
    wanted: List[str] = [str(i) for i in items]
    for list_file in list_files:
        path = Path(list_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"--inputs-from {path}: no such file; expected a text file with one bag path a line")
        base = path.resolve().parent
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                wanted.append(line if Path(line).expanduser().is_absolute() else str(base / line))
    if not wanted:
        raise ConfigError("no inputs: pass bag folders, .mcap/.db3 files, folders holding them or globs, e.g. "
                          "`trt-perception evaluate recordings/ --params car.yaml`")
    found: List[InputRef] = []
    seen = set()
    for item in wanted:
        for ref in _expand(item):
            key = os.path.realpath(ref.path)
            if key not in seen:
                seen.add(key)
                found.append(ref)
    return found


def _expand(item: str) -> List[InputRef]:
    path = Path(item).expanduser()
    if not path.exists() and _GLOB_CHARS & set(item):
        matches = sorted(glob.glob(str(path), recursive=True))
        refs = [r for m in matches for r in _expand_path(Path(m), quiet=True)]
        if not refs:
            raise ConfigError(f"{item!r} matches no recording ({len(matches)} path(s) matched, none a bag); "
                              f"expected {_kinds_text()}")
        return refs
    if not path.exists():
        raise ConfigError(f"input {path} does not exist; expected {_kinds_text()}, a folder holding them or a glob")
    return _expand_path(path, quiet=False)


def _expand_path(path: Path, quiet: bool) -> List[InputRef]:
    kind = _kind_of(path)
    if kind is not None:
        return [InputRef(str(path), kind)]
    if path.is_dir():
        refs = list(_walk(path))
        if refs or quiet:
            return refs
        raise ConfigError(f"folder {path} holds no recording; expected {_kinds_text()} in it or below it")
    if quiet:
        return []
    raise ConfigError(f"input {path} is not a recording; expected {_kinds_text()}")


def _walk(folder: Path) -> Iterator[InputRef]:
    """Recordings under ``folder``, sorted; a recording's own folder is not searched further."""
    for entry in sorted(folder.iterdir()):
        kind = _kind_of(entry)
        if kind is not None:
            yield InputRef(str(entry), kind)
        elif entry.is_dir() and not entry.name.startswith("."):
            yield from _walk(entry)


def _kind_of(path: Path) -> Optional[str]:
    for kind in INPUT_KINDS:
        if kind.claims(path):
            return kind.name
    return None


def _kinds_text() -> str:
    names = {"bag": "rosbag2 bags (a folder with metadata.yaml, or one .mcap/.db3 file)",
             "tub": "DonkeyCar tubs (a folder with manifest.json)"}  # fmt: skip
    return " or ".join(names.get(k.name, k.name) for k in INPUT_KINDS)


# ------------------------------------------------------------------------------------------- the tap


class RecordingProcessor:
    """A ``FrameProcessor`` that also keeps, per processed frame, its stamp and the detection head's boxes.

    Replay calls ``process(msg, now)`` once per frame it processes, in order; everything else is passed
    through. The clock the heads were built with is set to ``now`` first, exactly as replay sets its own.
    """

    def __init__(self, inner: Any, clock: Any, on_frame: Optional[Callable[[], None]] = None) -> None:
        self._inner = inner
        self._clock = clock
        self._on_frame = on_frame
        self.heads = inner.heads
        self.drive_head = inner.drive_head
        self.detection_head = next((h for h in inner.heads if h.task.name == "detection"), None)
        self.stamps: List[int] = []
        self.det_count: List[int] = []
        self.det_boxes: List[np.ndarray] = []
        self.det_scores: List[np.ndarray] = []
        self.det_labels: List[str] = []

    def process(self, msg: Any, now: float) -> Any:
        self._clock.now = now
        result = self._inner.process(msg, now)
        self.stamps.append(_stamp_ns(msg))
        output = result.outputs.get(self.detection_head.name) if self.detection_head is not None else None
        det = output.result if output is not None else None
        if det is None:
            self.det_count.append(-1)
        else:
            self.det_count.append(len(det))
            self.det_boxes.append(np.array(det.boxes, np.float32).reshape(-1, 4))
            self.det_scores.append(np.array(det.scores, np.float32).reshape(-1))
            self.det_labels.extend(str(label) for label in det.labels)
        if self._on_frame is not None:
            self._on_frame()
        return result

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def label_for(self, class_id: str) -> str:
        """Ground truth may name classes by label or by numeric id: compare by label, as replay does."""
        if self.detection_head is not None and class_id.strip().lstrip("-").isdigit():
            return str(self.detection_head.spec.detection.label_for(int(class_id)))
        return class_id


# ------------------------------------------------------------------------------------------- rows


@dataclass
class FrameRows:
    """Per-frame results of one replay (processed frames, in order), as saved in the run folder's .npz."""

    stamps: np.ndarray  # int64 [F], the frames' header stamps (ns)
    times: np.ndarray  # float64 [F], seconds since the input's first frame (log time)
    det_count: np.ndarray  # int32 [F]; -1: no detection head output for the frame
    det_boxes: np.ndarray  # float32 [D, 4] xyxy source pixels, frames' boxes one after another
    det_scores: np.ndarray  # float32 [D]
    det_labels: np.ndarray  # int32 [D], index into ``labels``
    truth_count: np.ndarray  # int32 [F]; -1: no ground-truth message carries the frame's stamp
    truth_boxes: np.ndarray  # float64 [T, 4]
    truth_labels: np.ndarray  # int32 [T]
    labels: List[str]
    steering: np.ndarray  # float64 [F], predicted, in the recorded topic's units (NaN: no drive head)
    throttle: np.ndarray
    steering_truth: np.ndarray  # float64 [F], recorded command nearest in time (NaN: none close enough)
    throttle_truth: np.ndarray
    latency: Dict[str, np.ndarray] = field(default_factory=dict)  # stage -> float32 seconds per frame

    def __len__(self) -> int:
        return int(self.stamps.size)

    def to_bytes(self) -> bytes:
        stages = sorted(self.latency)
        arrays = {name: getattr(self, name) for name in (
            "stamps", "times", "det_count", "det_boxes", "det_scores", "det_labels", "truth_count",
            "truth_boxes", "truth_labels", "steering", "throttle", "steering_truth", "throttle_truth")}  # fmt: skip
        arrays["labels"] = np.asarray(self.labels, dtype=np.str_).reshape(-1)
        arrays["latency_stages"] = np.asarray(stages, dtype=np.str_).reshape(-1)
        for i, stage in enumerate(stages):
            arrays[f"latency_{i}"] = np.asarray(self.latency[stage], np.float32)
        arrays["version"] = np.asarray(ROWS_VERSION)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # uncompressed: the report reads each file up to three times
        return buffer.getvalue()

    @classmethod
    def load(cls, path: PathLike) -> FrameRows:
        with np.load(str(path), allow_pickle=False) as data:
            stages = [str(s) for s in data["latency_stages"]]
            return cls(
                stamps=data["stamps"], times=data["times"], det_count=data["det_count"],
                det_boxes=data["det_boxes"], det_scores=data["det_scores"], det_labels=data["det_labels"],
                truth_count=data["truth_count"], truth_boxes=data["truth_boxes"], truth_labels=data["truth_labels"],
                labels=[str(s) for s in data["labels"]], steering=data["steering"], throttle=data["throttle"],
                steering_truth=data["steering_truth"], throttle_truth=data["throttle_truth"],
                latency={stage: data[f"latency_{i}"] for i, stage in enumerate(stages)},
            )  # fmt: skip

    def frames(self) -> Iterator[Tuple[int, Optional[Tuple[np.ndarray, np.ndarray, List[str]]],
                                       Optional[Tuple[np.ndarray, List[str]]]]]:
        """(frame index, detections (boxes, scores, labels) or None, truth (boxes, labels) or None) per frame."""
        d_end = np.cumsum(np.maximum(self.det_count, 0))
        t_end = np.cumsum(np.maximum(self.truth_count, 0))
        labels = self.labels
        for i in range(len(self)):
            det = truth = None
            if self.det_count[i] >= 0:
                a, b = int(d_end[i] - self.det_count[i]), int(d_end[i])
                det = (self.det_boxes[a:b], self.det_scores[a:b], [labels[j] for j in self.det_labels[a:b]])
            if self.truth_count[i] >= 0:
                a, b = int(t_end[i] - self.truth_count[i]), int(t_end[i])
                truth = (self.truth_boxes[a:b], [labels[j] for j in self.truth_labels[a:b]])
            yield i, det, truth

    def scored_frames(self) -> Iterator[Tuple[np.ndarray, List[str], np.ndarray, np.ndarray, List[str]]]:
        """The frames replay scores detections on (a detection output and a truth message), in the tuple
        form ``evaluation.coco_map`` takes."""
        for _, det, truth in self.frames():
            if det is not None and truth is not None:
                yield truth[0], truth[1], det[0], det[1], det[2]


def build_rows(recorder: RecordingProcessor, report: Any, raw_truth: RawTruth) -> Tuple[FrameRows, List[str]]:
    """The rows of one replay: the tap's detections, truth paired by stamp as replay pairs it, the
    predicted and recorded commands from the report's series. Returns the rows and notes."""
    from trt_perception.tools.replay import DETECTION_MATCH_TOLERANCE_S, DRIVE_MATCH_TOLERANCE_S
    from trt_perception.tools.report import nearest_within

    notes: List[str] = []
    count = len(recorder.stamps)
    stamps = np.asarray(recorder.stamps, np.int64)
    vocabulary: Dict[str, int] = {}

    def index_of(label: str) -> int:
        return vocabulary.setdefault(label, len(vocabulary))

    det_labels = np.asarray([index_of(label) for label in recorder.det_labels], np.int32)
    truth_stamps = np.asarray(sorted(raw_truth), np.int64)
    pick = nearest_within(stamps.astype(np.float64), truth_stamps.astype(np.float64),
                          DETECTION_MATCH_TOLERANCE_S * 1e9)
    truth_count = np.full(count, -1, np.int32)
    truth_boxes: List[np.ndarray] = []
    truth_labels: List[int] = []
    for i, j in enumerate(pick.tolist()):
        if j < 0:
            continue
        boxes, ids = raw_truth[int(truth_stamps[j])]
        truth_count[i] = len(ids)
        truth_boxes.append(boxes)
        truth_labels.extend(index_of(recorder.label_for(c)) for c in ids)

    series = report.series
    steering = np.full(count, np.nan)
    throttle = np.full(count, np.nan)
    steering_truth = np.full(count, np.nan)
    throttle_truth = np.full(count, np.nan)
    times = np.asarray(series.frame_times, np.float64) if len(series.frame_times) == count else np.full(count, np.nan)
    if series.predicted_steering:
        if len(series.predicted_steering) == count:
            steering = np.asarray(series.predicted_steering, np.float64)
            throttle = np.asarray(series.predicted_throttle, np.float64)
            if series.recorded_times:
                at = nearest_within(times, np.asarray(series.recorded_times, np.float64), DRIVE_MATCH_TOLERANCE_S)
                ok = at >= 0
                steering_truth[ok] = np.asarray(series.recorded_steering, np.float64)[at[ok]]
                throttle_truth[ok] = np.asarray(series.recorded_throttle, np.float64)[at[ok]]
        else:
            notes.append(f"per-frame commands not kept: replay reported {len(series.predicted_steering)} for "
                         f"{count} frames")
    latency = {stage: np.asarray(values, np.float32) for stage, values in series.stage_seconds.items()}
    rows = FrameRows(
        stamps=stamps, times=times, det_count=np.asarray(recorder.det_count, np.int32),
        det_boxes=np.concatenate(recorder.det_boxes) if recorder.det_boxes else np.zeros((0, 4), np.float32),
        det_scores=np.concatenate(recorder.det_scores) if recorder.det_scores else np.zeros(0, np.float32),
        det_labels=det_labels, truth_count=truth_count,
        truth_boxes=np.concatenate(truth_boxes).reshape(-1, 4) if truth_boxes else np.zeros((0, 4), np.float64),
        truth_labels=np.asarray(truth_labels, np.int32), labels=list(vocabulary), steering=steering,
        throttle=throttle, steering_truth=steering_truth, throttle_truth=throttle_truth, latency=latency,
    )  # fmt: skip
    return rows, notes


# ------------------------------------------------------------------------------------------- the worker


_PROGRESS: Any = None  # a shared frame counter (multiprocessing.Value) in local worker processes


def init_worker(counter: Any = None) -> None:
    """Worker process start: the shared progress counter, and one OpenCV thread (the cores are the workers)."""
    global _PROGRESS
    _PROGRESS = counter
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - OpenCV is a dependency
        pass


def _count_frame() -> None:
    counter = _PROGRESS
    if counter is not None:
        with counter.get_lock():
            counter.value += 1


def run_task(task: Task) -> Dict[str, Any]:
    """Replay one input under one model set. Returns a summary (small, JSON-able) with the rows as npz bytes
    under 'rows'; an input that cannot be replayed returns ok False and the error, never raises."""
    from trt_perception.heads import create_frame_processor
    from trt_perception.tools.replay import load_config, replay_config

    started = time.perf_counter()
    summary: Dict[str, Any] = {"index": task.index, "variant": task.variant, "input": task.input.path,
                               "kind": task.input.kind, "name": task.input.name, "params": task.params,
                               "ok": False, "error": None, "host": _host()}  # fmt: skip
    recorders: List[RecordingProcessor] = []

    def make_processor(config: Any, clock: Any) -> RecordingProcessor:
        recorder = RecordingProcessor(create_frame_processor(config, clock=clock), clock, _count_frame)
        recorders.append(recorder)
        return recorder

    try:
        heads = list(task.options.heads) if task.options.heads else None
        config, notes = replay_config(load_config(task.params, heads), None)
        report, raw_truth = input_kind(task.input.kind).run(Path(task.input.path), config, task.options,
                                                            make_processor)
        rows, row_notes = build_rows(recorders[-1], report, raw_truth)
        report.notes.extend(n for n in notes + row_notes if n not in report.notes)
        summary.update(ok=True, report=report.to_dict(), rows=rows.to_bytes())
    except TrtPerceptionError as exc:
        summary["error"] = str(exc)
    except Exception as exc:  # a bug or a library failure: reported with its traceback, the run goes on
        summary["error"] = f"{type(exc).__name__}: {exc}"
        summary["traceback"] = traceback.format_exc(limit=8)
    summary["wall_s"] = time.perf_counter() - started
    recorders.clear()
    # A replay leaves reference cycles behind (rosbags builds message classes per reader, ONNX Runtime
    # sessions): collect them now, or a worker's memory climbs with every input until the collector's rare
    # full pass.
    gc.collect()
    return summary


def _host() -> str:
    import socket

    return socket.gethostname()


def finite(value: Any) -> Optional[float]:
    """JSON has no NaN: a missing number is null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
