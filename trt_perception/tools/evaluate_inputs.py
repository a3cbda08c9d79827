"""The inputs of `trt-perception evaluate`: finding them, and turning one into per-frame rows on disk.

One input is one recording: a rosbag2 bag, or a DonkeyCar tub (tub v2 folder; replay reads it through
``tools.tub.TubReader``, with its recorded ``user/angle``/``user/throttle`` as the reference commands). A worker
process (or a Ray task) replays it with ``replay.replay_bag`` - whose per-frame results are already flat numpy
columns (``report.FrameRows``) - and returns a small summary plus those rows as ``.npz`` bytes, which the
parent writes into the run folder. The parent never holds more than one input's rows, so memory stays flat in
the number of inputs; the totals are computed afterwards from the files (``evaluate_report``).

Adding an input kind: write ``claims(path) -> bool``, ``count_frames(path, topic) -> Optional[int]`` and
``run(path, config, options, make_processor) -> ReplayReport`` where ``run`` builds its processor with
``make_processor(config, clock)`` and replays through it; then add one ``InputKind`` line to ``INPUT_KINDS``.
"""

from __future__ import annotations

import gc
import glob
import math
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception.errors import ConfigError, TrtPerceptionError
from trt_perception.tools.report import ROWS_VERSION, FrameRows

__all__ = ["ROWS_VERSION", "EvalOptions", "FrameRows", "InputRef", "Task", "discover_inputs", "run_task"]

PathLike = Union[str, Path]


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
    """One recording to evaluate: its path and kind ('bag' or 'tub')."""

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
    run: Callable[..., Any]


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


def run_bag(path: Path, config: Any, options: EvalOptions, make_processor: Callable[[Any, Any], Any]) -> Any:
    """Replay one bag through ``make_processor(config, clock)`` as `trt-perception replay` would."""
    return _replay(path, config, options, make_processor, options.image_topic, options.truth_drive_topic,
                   options.truth_detections_topic)


def count_tub_frames(path: Path, topic: str) -> Optional[int]:
    """Records of a tub from its catalog manifests less its deleted records (no catalog or image read), for
    the progress bar; None when it cannot tell."""
    import json

    try:
        lines = (path / "manifest.json").read_text(encoding="utf-8").splitlines()
        deleted = len(json.loads(lines[4]).get("deleted_indexes", []))
        total = sum(len(json.loads(m.read_text(encoding="utf-8"))["line_lengths"])
                    for m in path.glob("*.catalog_manifest"))
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return max(total - deleted, 0)


def run_tub(path: Path, config: Any, options: EvalOptions, make_processor: Callable[[Any, Any], Any]) -> Any:
    """Replay one DonkeyCar tub: its camera frames (``tools.tub``'s image topic unless --image-topic names
    one), scored against the commands it recorded (``user/angle``, ``user/throttle`` as /user/cmd_vel, unless
    --truth-drive-topic names another of its topics). A tub has no ground-truth boxes: no detection scores."""
    from trt_perception.tools import tub

    return _replay(path, config, options, make_processor, options.image_topic or tub.IMAGE_TOPIC,
                   options.truth_drive_topic or tub.USER_TOPIC, None)


def _replay(path: Path, config: Any, options: EvalOptions, make_processor: Callable[[Any, Any], Any],
            image_topic: Optional[str], truth_drive_topic: Optional[str],
            truth_detections_topic: Optional[str]) -> Any:
    from trt_perception.tools.replay import BagClock, open_bag, replay_bag

    with open_bag(path, _typestore(options.distro or "humble")) as reader:
        start_ns = int(reader.start_time)  # the clock replay would start its own processor with
    clock = BagClock(start_ns * 1e-9)
    processor = make_processor(config, clock)
    try:
        return replay_bag(
            path, config, out=None, report_dir=None, image_topic=image_topic, truth_drive_topic=truth_drive_topic,
            truth_detections_topic=truth_detections_topic, realtime=options.realtime, distro=options.distro,
            limit=options.limit, progress=False, plots=False, processor=processor, threads=_REPLAY_THREADS,
        )  # fmt: skip
    finally:
        processor.close()
        # rosbags' AnyReader builds a typestore for every bag it opens (generated dataclass types: cyclic
        # garbage); only a full collection frees them, which Python defers while its heap is large: collect
        # once per input so a run over hundreds of bags stays flat (test_memory_is_flat_in_the_number_of_inputs)
        gc.collect()


def is_tub(path: Path) -> bool:
    """A DonkeyCar tub v2 folder (manifest.json + catalogs)."""
    from trt_perception.tools.tub import is_tub as tub_check

    return tub_check(path)


INPUT_KINDS: List[InputKind] = [
    InputKind("bag", is_bag, count_bag_frames, run_bag),
    InputKind("tub", is_tub, count_tub_frames, run_tub),
]


def input_kind(name: str) -> InputKind:
    for kind in INPUT_KINDS:
        if kind.name == name:
            return kind
    raise ConfigError(f"input kind {name!r} is not known; expected one of {[k.name for k in INPUT_KINDS]}")


def _typestore(distro: str) -> Any:
    from trt_perception.tools.replay import _typestore as replay_typestore

    return replay_typestore(distro)


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
    """A ``FrameProcessor`` that sets the clock the heads were built with to ``now`` (exactly as replay sets
    its own) and ticks the run's progress counter once per frame; everything else is passed through. What a
    frame produced is kept by replay itself (``report.series.rows``)."""

    def __init__(self, inner: Any, clock: Any, on_frame: Optional[Callable[[], None]] = None) -> None:
        self._inner = inner
        self._clock = clock
        self._on_frame = on_frame
        self.heads = inner.heads
        self.drive_head = inner.drive_head

    def process(self, msg: Any, now: float) -> Any:
        self._clock.now = now
        try:
            return self._inner.process(msg, now)
        finally:
            if self._on_frame is not None:
                self._on_frame()

    def prepare(self, msg: Any, ahead: bool = False) -> Any:
        """The decode half, with the models that run ahead when ``ahead`` (replay's helper threads)."""
        return self._inner.prepare(msg, ahead=ahead)

    def finish(self, prepared: Any, now: float) -> Any:
        """The heads half of ``process``: the clock and the progress tick exactly as ``process`` sets them."""
        self._clock.now = now
        try:
            return self._inner.finish(prepared, now)
        finally:
            if self._on_frame is not None:
                self._on_frame()

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# ------------------------------------------------------------------------------------------- rows


def build_rows(report: Any) -> Tuple[FrameRows, List[str]]:
    """The rows of one replay (replay's own per-frame columns) and notes; an empty table when it kept none."""
    rows = getattr(report.series, "rows", None)
    if rows is not None:
        return rows, []
    empty_i, empty_f = np.zeros(0, np.int32), np.zeros(0)
    return FrameRows(
        stamps=np.zeros(0, np.int64), times=empty_f, det_count=empty_i, det_boxes=np.zeros((0, 4), np.float32),
        det_scores=np.zeros(0, np.float32), det_labels=empty_i, truth_count=empty_i, truth_boxes=np.zeros((0, 4)),
        truth_labels=empty_i, labels=[], steering=empty_f, throttle=empty_f, steering_truth=empty_f,
        throttle_truth=empty_f,
    ), ["replay kept no per-frame rows"]  # fmt: skip


# ------------------------------------------------------------------------------------------- the worker


_PROGRESS: Any = None  # a shared frame counter (multiprocessing.Value) in local worker processes
_REPLAY_THREADS: Optional[int] = None  # replay's helper threads: its default, or 1 in a worker process


def init_worker(counter: Any = None, threads: int = 1) -> None:
    """Worker process start: the shared progress counter, ``threads`` OpenCV threads and replay helper threads
    (1 in a local pool: the cores are the workers; a Ray task's share of cores)."""
    global _PROGRESS, _REPLAY_THREADS
    _PROGRESS = counter
    _REPLAY_THREADS = threads
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover - OpenCV is a dependency
        pass


def run_in_worker(task_function: Any, threads: int, task: Any) -> Any:
    """A Ray task: set up the worker as ``init_worker`` does (Ray reuses worker processes; this is idempotent),
    then run ``task_function(task)``."""
    init_worker(None, threads)
    return task_function(task)


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
        report = input_kind(task.input.kind).run(Path(task.input.path), config, task.options, make_processor)
        rows, row_notes = build_rows(report)
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
