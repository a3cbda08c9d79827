"""The replay report: metrics against ground truth, the printed table, and the files (JSON + PNG plots).

Kept apart from ``replay`` so the numbers can be computed and checked without a bag: replay collects series
(per-frame timings, predicted and recorded commands, detections) and this module turns them into the figures
people look at. matplotlib is an optional extra (``pip install trt_perception[report]``); without it the
numbers are still printed and ``report.json`` is still written.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from trt_perception.outputs.nms import iou_matrix

# Stages in the order a frame goes through them: the frame's own first, then each head's (in the heads'
# order), then what follows the heads; any other timing key is listed after the heads' stages.
FRAME_STAGES = ("decode", "download")
HEAD_STAGES = ("preprocess", "infer", "postprocess")
CLOSING_STAGES = ("messages", "total")
STAGE_NOTES = {
    "messages": "   (build + serialize outputs)",
    "total": "   (decode + models)",
}
IOU_THRESHOLD = 0.5
REPORT_FILES = ("report.json", "steering.png", "latency.png", "detections.png", "tracks.png")  # what replay writes
MATPLOTLIB_MISSING = (
    "matplotlib is not installed, so no plots were drawn (the numbers above are complete); "
    "fix: pip install 'trt_perception[report]' (or pip install matplotlib) and run again"
)


# ----------------------------------------------------------------------------------------- data types


@dataclass
class LatencyStats:
    """Summary of one stage's per-frame times, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> LatencyStats:
        values = np.asarray(seconds, np.float64) * 1000.0
        if values.size == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        p50, p95 = np.percentile(values, [50.0, 95.0])
        return cls(int(values.size), float(p50), float(p95), float(values.max()), float(values.mean()))


@dataclass
class DriveError:
    """Predicted commands against recorded ones, in the recorded topic's units (Twist or Ackermann)."""

    topic: str
    msgtype: str
    matched: int  # frames with a recorded command close enough in time
    steering_mae: float
    steering_rmse: float
    throttle_mae: float
    throttle_rmse: float
    steering_field: str  # e.g. "angular.z"
    throttle_field: str  # e.g. "linear.x"
    unmatched: int = 0  # processed frames with no recorded command within ``window_s`` (left out of the errors)
    window_s: float = 0.0  # a command further than this from a frame is not its reference


@dataclass
class ClassScore:
    """Detection matches of one class at IoU >= 0.5 over the frames that had ground truth."""

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else math.nan

    @property
    def recall(self) -> float:
        present = self.true_positives + self.false_negatives
        return self.true_positives / present if present else math.nan

    def add(self, other: ClassScore) -> None:
        self.true_positives += other.true_positives
        self.false_positives += other.false_positives
        self.false_negatives += other.false_negatives

    def to_dict(self) -> Dict[str, Any]:
        return {
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
            "precision": _finite(self.precision),
            "recall": _finite(self.recall),
        }


@dataclass
class DetectionEval:
    """Precision/recall against a ground-truth Detection2DArray topic, per class and overall."""

    topic: str
    frames: int  # processed frames that had a ground-truth message
    iou_threshold: float
    per_class: Dict[str, ClassScore] = field(default_factory=dict)
    map_50: Optional[float] = None  # COCO mAP@0.5 (faster-coco-eval); None = not computed
    map_50_95: Optional[float] = None  # COCO mAP@[.5:.95]

    @property
    def overall(self) -> ClassScore:
        total = ClassScore()
        for score in self.per_class.values():
            total.add(score)
        return total


@dataclass
class TrackingEval:
    """A tracking head's tracks against ground-truth track ids (``Detection2D.id`` on the truth topic):
    CLEAR-MOT and identity measures from motmetrics, with the counts behind them so runs can be pooled
    (MOTA = 1 - (misses + false positives + id switches) / truth boxes; IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN))."""

    head: str
    topic: str
    frames: int  # processed frames that had a ground-truth message
    iou_threshold: float
    mota: Optional[float] = None  # None: not computed (motmetrics missing, or no scored frame)
    motp_iou: Optional[float] = None  # mean IoU of the matched pairs (motmetrics' MOTP is 1 - this)
    idf1: Optional[float] = None
    idp: Optional[float] = None
    idr: Optional[float] = None
    id_switches: int = 0
    false_positives: int = 0
    misses: int = 0
    matches: int = 0
    fragmentations: int = 0
    truth_boxes: int = 0
    truth_tracks: int = 0
    predicted_boxes: int = 0
    predicted_tracks: int = 0
    mostly_tracked: int = 0
    partially_tracked: int = 0
    mostly_lost: int = 0
    idtp: int = 0
    idfp: int = 0
    idfn: int = 0

    @classmethod
    def from_metrics(cls, head: str, topic: str, iou_threshold: float, values: Dict[str, float],
                     predicted_tracks: int) -> TrackingEval:
        """From ``evaluation.mot_metrics``' values (motmetrics' names)."""
        def count(name: str) -> int:
            value = values.get(name, 0.0)
            return round(value) if math.isfinite(value) else 0

        motp = values.get("motp", math.nan)
        return cls(
            head=head, topic=topic, frames=count("num_frames"), iou_threshold=iou_threshold,
            mota=_finite(values.get("mota", math.nan)), motp_iou=_finite(1.0 - motp),
            idf1=_finite(values.get("idf1", math.nan)), idp=_finite(values.get("idp", math.nan)),
            idr=_finite(values.get("idr", math.nan)), id_switches=count("num_switches"),
            false_positives=count("num_false_positives"), misses=count("num_misses"), matches=count("num_matches"),
            fragmentations=count("num_fragmentations"), truth_boxes=count("num_objects"),
            truth_tracks=count("num_unique_objects"), predicted_boxes=count("num_predictions"),
            predicted_tracks=predicted_tracks, mostly_tracked=count("mostly_tracked"),
            partially_tracked=count("partially_tracked"), mostly_lost=count("mostly_lost"), idtp=count("idtp"),
            idfp=count("idfp"), idfn=count("idfn"),
        )  # fmt: skip


@dataclass
class SegmentationEval:
    """mIoU of a segmentation head against a ground-truth mask topic (class ids, mono8)."""

    head: str
    topic: str
    frames: int
    miou: float
    pixel_accuracy: float
    iou_per_class: Dict[str, Optional[float]] = field(default_factory=dict)


@dataclass
class SampleFrame:
    """A small copy of one frame (BGR) with its detections and ground truth, for the detections grid."""

    index: int
    time_s: float
    image_bgr: np.ndarray
    boxes: np.ndarray  # (N, 4) xyxy in this (possibly downscaled) image's pixels
    labels: List[str]
    scores: np.ndarray
    class_ids: Optional[np.ndarray] = None
    scale: float = 1.0  # this image's size / the source frame's
    truth_boxes: Optional[np.ndarray] = None
    truth_labels: Optional[List[str]] = None
    # A segmentation head's class ids at this frame, at this image's size (``attach_mask``), with the RGB colour
    # and name of each class; the grid tints the frame with it (black = left untinted, as background usually is).
    mask: Optional[np.ndarray] = None
    mask_colors: Optional[List[Tuple[int, int, int]]] = None
    mask_labels: Optional[List[str]] = None


def attach_mask(sample: SampleFrame, head: Any, outputs: Mapping[str, Any]) -> None:
    """Give ``sample`` the mask of segmentation ``head`` (None: nothing to do) from one frame's ``outputs``
    (head name -> HeadOutput), shrunk to the sample's size (nearest: class ids stay class ids) and copied, since
    the head may reuse its mask buffer for the next frame. Colours and names come from the head's spec, then the
    overlay's fixed palette, as the node's own mask overlay colours them."""
    output = outputs.get(head.name) if head is not None else None
    if output is None:
        return
    import cv2

    from trt_perception.overlay import class_color

    mask = np.asarray(output.result.mask)
    height, width = sample.image_bgr.shape[:2]
    sample.mask = (cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
                   if mask.shape[:2] != (height, width) else mask.copy())
    spec = head.spec.segmentation
    count = max(len(spec.labels), len(spec.colors), int(sample.mask.max(initial=0)) + 1)
    sample.mask_colors = [tuple(spec.colors[i]) if i < len(spec.colors) else class_color(i, "rgb")
                          for i in range(count)]
    sample.mask_labels = [spec.labels[i] if i < len(spec.labels) else str(i) for i in range(count)]


ROWS_VERSION = 1


@dataclass
class FrameRows:
    """Per-frame results of one replay (processed frames, in order) as flat numpy columns: what the report's
    scores are computed from, and what `evaluate` saves per input (.npz). A few tens of bytes a frame, no
    Python object per frame, so a replay's memory stays flat in the bag's length."""

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
    # not saved by evaluate: the tracker's ids per detection and the truth's track ids, index into ``tracks``
    # (-1: none)
    det_tracks: Optional[np.ndarray] = None  # int32 [D]
    truth_tracks: Optional[np.ndarray] = None  # int32 [T]
    tracks: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.stamps.size)

    def to_bytes(self) -> bytes:
        import io

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
    def load(cls, path: Any) -> FrameRows:
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
        for i, det, truth in self._spans():
            yield (i, None if det is None else (self.det_boxes[det], self.det_scores[det], self._names(det)),
                   None if truth is None else (self.truth_boxes[truth], self._names(truth, truth=True)))

    def scored_frames(self) -> Iterator[Tuple[np.ndarray, List[str], np.ndarray, np.ndarray, List[str]]]:
        """The frames replay scores detections on (a detection output and a truth message), in the tuple
        form ``evaluation.coco_map`` takes."""
        for _, det, truth in self.frames():
            if det is not None and truth is not None:
                yield truth[0], truth[1], det[0], det[1], det[2]

    def track_frames(self) -> Iterator[Tuple[np.ndarray, List[str], List[str], np.ndarray, List[str], List[str]]]:
        """Frames with detections and truth, as ``evaluation.mot_metrics`` takes them (track ids '' = none)."""
        for _, det, truth in self._spans():
            if det is not None and truth is not None:
                yield (self.truth_boxes[truth], self._names(truth, truth=True), self._track_names(truth, True),
                       self.det_boxes[det], self._names(det), self._track_names(det, False))

    def _spans(self) -> Iterator[Tuple[int, Optional[slice], Optional[slice]]]:
        d_end = np.cumsum(np.maximum(self.det_count, 0)).tolist()
        t_end = np.cumsum(np.maximum(self.truth_count, 0)).tolist()
        det_count, truth_count = self.det_count.tolist(), self.truth_count.tolist()
        for i in range(len(self)):
            det = slice(d_end[i] - det_count[i], d_end[i]) if det_count[i] >= 0 else None
            truth = slice(t_end[i] - truth_count[i], t_end[i]) if truth_count[i] >= 0 else None
            yield i, det, truth

    def _names(self, span: slice, truth: bool = False) -> List[str]:
        labels = self.labels
        return [labels[j] for j in (self.truth_labels if truth else self.det_labels)[span].tolist()]

    def _track_names(self, span: slice, truth: bool) -> List[str]:
        column = self.truth_tracks if truth else self.det_tracks
        if column is None:
            return [""] * (span.stop - span.start)
        return [self.tracks[j] if j >= 0 else "" for j in column[span].tolist()]


@dataclass
class ReplaySeries:
    """Per-frame data behind the plots (not written to report.json: it can be long). Sequences are numpy
    arrays when replay fills them (lists in hand-made reports): test them with ``len``, not truthiness."""

    stage_seconds: Dict[str, Sequence[float]] = field(default_factory=dict)
    frame_times: Sequence[float] = field(default_factory=list)  # seconds since the first frame, processed frames
    predicted_steering: Sequence[float] = field(default_factory=list)
    predicted_throttle: Sequence[float] = field(default_factory=list)
    recorded_times: Sequence[float] = field(default_factory=list)  # every recorded command, seconds since start
    recorded_steering: Sequence[float] = field(default_factory=list)
    recorded_throttle: Sequence[float] = field(default_factory=list)
    steering_units: Tuple[str, str] = ("steering", "throttle")
    samples: List[SampleFrame] = field(default_factory=list)
    rows: Optional[FrameRows] = None  # the per-frame columns behind the scores (replay fills it)
    track_times: Dict[str, List[float]] = field(default_factory=dict)  # published track id -> seconds seen
    truth_track_times: Dict[str, List[float]] = field(default_factory=dict)  # ground-truth track id -> seconds


@dataclass
class ReplayReport:
    """What a replay did and measured. ``to_dict`` is what report.json holds."""

    bag: str
    image_topic: str
    image_type: str
    heads: List[str]
    realtime: bool
    detection_head: str = ""  # the head whose detections the detection sections describe ('' = none)
    drive_head: str = ""  # the steering head ('' = none)
    frames_in: int = 0
    frames_processed: int = 0
    bad_frames: int = 0
    bad_frame_reasons: List[str] = field(default_factory=list)  # the first few, for the log
    # frames whose processing raised anything but an ImageError (an inference or message-building failure):
    # counted and skipped, as the node does, never fatal to the run
    failed_frames: int = 0
    failed_frame_reasons: List[str] = field(default_factory=list)  # the first few: frame index, time, error
    dropped_frames: int = 0  # realtime mode: replaced in the one-slot mailbox before the model got to them
    bag_duration_s: float = 0.0
    wall_s: float = 0.0
    latency: Dict[str, LatencyStats] = field(default_factory=dict)
    output_latency: Optional[LatencyStats] = None  # realtime mode: frame arrival -> outputs, on the bag clock
    detections_total: int = 0
    detections_max_per_frame: int = 0
    detections_per_class: Dict[str, int] = field(default_factory=dict)
    drive_outputs: int = 0
    drive_stops: int = 0
    drive: Optional[DriveError] = None
    detection_eval: Optional[DetectionEval] = None
    segmentation_eval: Optional[SegmentationEval] = None
    tracking_eval: Optional[TrackingEval] = None
    tracks_total: int = 0  # distinct track ids the detection head published (0 without a tracker)
    out_bag: Optional[str] = None
    output_topics: Dict[str, str] = field(default_factory=dict)  # topic -> message type written
    report_dir: Optional[str] = None
    files: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    # other heads (classification, segmentation): task, frames, means of numeric diagnostics, text counts
    head_summaries: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    series: ReplaySeries = field(default_factory=ReplaySeries, repr=False)

    @property
    def detections_per_frame(self) -> float:
        return self.detections_total / self.frames_processed if self.frames_processed else math.nan

    @property
    def frames_per_second(self) -> float:
        return self.frames_processed / self.wall_s if self.wall_s > 0 else math.nan

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {
            "bag": self.bag,
            "image_topic": self.image_topic,
            "image_type": self.image_type,
            "heads": list(self.heads),
            "detection_head": self.detection_head,
            "drive_head": self.drive_head,
            "head_summaries": self.head_summaries,
            "realtime": self.realtime,
            "frames": {
                "in": self.frames_in,
                "processed": self.frames_processed,
                "bad": self.bad_frames,
                "failed": self.failed_frames,
                "dropped": self.dropped_frames,
                "bad_reasons": list(self.bad_frame_reasons),
                "failed_reasons": list(self.failed_frame_reasons),
            },
            "bag_duration_s": _finite(self.bag_duration_s),
            "wall_s": _finite(self.wall_s),
            "frames_per_second": _finite(self.frames_per_second),
            "latency_ms": {k: _clean(asdict(v)) for k, v in self.latency.items()},
            "output_latency_ms": _clean(asdict(self.output_latency)) if self.output_latency else None,
            "detections": {
                "total": self.detections_total,
                "per_frame": _finite(self.detections_per_frame),
                "max_per_frame": self.detections_max_per_frame,
                "per_class": dict(self.detections_per_class),
                "tracks": self.tracks_total,
            },
            "drive": {"outputs": self.drive_outputs, "safety_stops": self.drive_stops},
            "drive_error": _clean(asdict(self.drive)) if self.drive else None,
            "detection_eval": None,
            "out_bag": self.out_bag,
            "output_topics": dict(self.output_topics),
            "report_dir": self.report_dir,
            "files": list(self.files),
            "notes": list(self.notes),
        }
        if self.detection_eval is not None:
            ev = self.detection_eval
            data["detection_eval"] = {
                "topic": ev.topic,
                "frames": ev.frames,
                "iou_threshold": ev.iou_threshold,
                "overall": ev.overall.to_dict(),
                "per_class": {k: v.to_dict() for k, v in sorted(ev.per_class.items())},
                "map_50": _finite(ev.map_50) if ev.map_50 is not None else None,
                "map_50_95": _finite(ev.map_50_95) if ev.map_50_95 is not None else None,
            }
        data["tracking_eval"] = _clean(asdict(self.tracking_eval)) if self.tracking_eval is not None else None
        if self.segmentation_eval is not None:
            data["segmentation_eval"] = _clean(asdict(self.segmentation_eval))
            data["segmentation_eval"]["iou_per_class"] = {
                k: _finite(v) if v is not None else None for k, v in self.segmentation_eval.iou_per_class.items()
            }
        return data


def _finite(value: float) -> Optional[float]:
    """JSON has no NaN: missing numbers become null."""
    return None if value is None or not math.isfinite(value) else float(value)


def _clean(mapping: Dict[str, Any]) -> Dict[str, Any]:
    return {k: _finite(v) if isinstance(v, float) else v for k, v in mapping.items()}


# --------------------------------------------------------------------------------------------- metrics


def nearest_within(times: np.ndarray, reference: np.ndarray, tolerance: float) -> np.ndarray:
    """For each of ``times``, the index of the nearest ``reference`` time (sorted), or -1 beyond ``tolerance``."""
    times = np.asarray(times, np.float64)
    reference = np.asarray(reference, np.float64)
    if reference.size == 0 or times.size == 0:
        return np.full(times.shape, -1, np.int64)
    right = np.clip(np.searchsorted(reference, times), 0, reference.size - 1)
    left = np.clip(right - 1, 0, reference.size - 1)
    pick = np.where(np.abs(reference[left] - times) <= np.abs(reference[right] - times), left, right)
    return np.where(np.abs(reference[pick] - times) <= tolerance, pick, -1).astype(np.int64)


def mae_rmse(predicted: Sequence[float], recorded: Sequence[float]) -> Tuple[float, float]:
    """Mean absolute and root-mean-square error over the finite pairs (NaN when there are none)."""
    p = np.asarray(predicted, np.float64)
    r = np.asarray(recorded, np.float64)
    ok = np.isfinite(p) & np.isfinite(r)
    if not ok.any():
        return math.nan, math.nan
    diff = p[ok] - r[ok]
    return float(np.mean(np.abs(diff))), float(np.sqrt(np.mean(diff * diff)))


def score_frame(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: Sequence[str],
    truth_boxes: np.ndarray,
    truth_labels: Sequence[str],
    iou_threshold: float = IOU_THRESHOLD,
) -> Dict[str, ClassScore]:
    """Greedy matching per class (highest score first, each truth box used once), as VOC/COCO evaluate.

    Evaluation code, not the hot path: a loop over the few detections of one frame.
    """
    result: Dict[str, ClassScore] = {}
    labels_arr = np.asarray(list(labels), dtype=object)
    truth_arr = np.asarray(list(truth_labels), dtype=object)
    for name in sorted(set(labels_arr.tolist()) | set(truth_arr.tolist())):
        mine = np.flatnonzero(labels_arr == name) if labels_arr.size else np.zeros(0, np.int64)
        theirs = np.flatnonzero(truth_arr == name) if truth_arr.size else np.zeros(0, np.int64)
        score = result.setdefault(str(name), ClassScore())
        if mine.size == 0 or theirs.size == 0:
            score.false_positives += int(mine.size)
            score.false_negatives += int(theirs.size)
            continue
        order = mine[np.argsort(-np.asarray(scores, np.float64)[mine], kind="stable")]
        ious = iou_matrix(np.asarray(boxes)[order], np.asarray(truth_boxes)[theirs])
        used = np.zeros(theirs.size, bool)
        for row in ious:
            candidates = np.where(used, -1.0, row)
            best = int(np.argmax(candidates))
            if candidates[best] >= iou_threshold:
                used[best] = True
                score.true_positives += 1
            else:
                score.false_positives += 1
        score.false_negatives += int((~used).sum())
    return result


# ----------------------------------------------------------------------------------------------- table


def _ms(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:8.2f}"


def _num(value: float, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100.0 * value:5.1f}%"


def ordered_stages(names: Sequence[str], heads: Sequence[str] = ()) -> List[str]:
    """Timing keys as a frame meets them: decode, each head's preprocess/infer/postprocess in ``heads`` order
    (heads not named there after them, by name), other keys, then messages and total."""
    rest = [n for n in names if n not in FRAME_STAGES and n not in CLOSING_STAGES]
    prefixes = list(heads) + sorted({n.split(".", 1)[0] for n in rest if "." in n} - set(heads))
    ordered = [s for s in FRAME_STAGES if s in names]
    for head in prefixes:
        own = [n for n in rest if n.startswith(head + ".")]
        known = [f"{head}.{stage}" for stage in HEAD_STAGES if f"{head}.{stage}" in own]
        ordered += known + sorted(set(own) - set(known))
    ordered += sorted(set(rest) - set(ordered))
    return ordered + [s for s in CLOSING_STAGES if s in names]


def format_report(report: ReplayReport) -> str:
    """The printed report: plain text, aligned, readable in a terminal or a CI log."""
    lines: List[str] = []
    mode = "realtime (recorded timing, latest-frame policy)" if report.realtime else "every frame"
    lines.append(f"Replay of {report.bag}")
    lines.append(f"  image topic   {report.image_topic} ({report.image_type})")
    lines.append(f"  heads         {', '.join(report.heads)}    mode: {mode}")
    lines.append(
        f"  frames        in {report.frames_in}   processed {report.frames_processed}   "
        f"bad {report.bad_frames}   " + (f"failed {report.failed_frames}   " if report.failed_frames else "")
        + f"dropped {report.dropped_frames}"
    )
    lines.append(
        f"  time          bag {report.bag_duration_s:.1f} s   replay {report.wall_s:.1f} s   "
        f"{_num(report.frames_per_second, 1)} frames/s"
    )
    for reason in report.bad_frame_reasons:
        lines.append(f"  bad frame     {reason}")
    for reason in report.failed_frame_reasons:
        lines.append(f"  failed frame  {reason}")
    if report.failed_frames > len(report.failed_frame_reasons):
        lines.append(f"  failed frame  ... {report.failed_frames - len(report.failed_frame_reasons)} more")
    if report.latency:
        lines.append("")
        lines.append(f"  {'latency (ms)':<24}{'p50':>8}{'p95':>9}{'max':>9}")
        for stage in ordered_stages(list(report.latency), report.heads):
            stats = report.latency[stage]
            note = STAGE_NOTES.get(stage, "")
            lines.append(f"  {stage:<24}{_ms(stats.p50_ms)} {_ms(stats.p95_ms)} {_ms(stats.max_ms)}{note}")
        if report.output_latency is not None:
            stats = report.output_latency
            lines.append(
                f"  {'arrival->output':<24}{_ms(stats.p50_ms)} {_ms(stats.p95_ms)} {_ms(stats.max_ms)}"
                "   (bag clock, with waiting)"
            )
    if report.detection_head:
        lines.append("")
        lines.append(
            f"  detections    {report.detections_total} in all, {_num(report.detections_per_frame, 2)} per frame, "
            f"max {report.detections_max_per_frame} in one frame"
        )
        if report.detections_per_class:
            per_class = ", ".join(f"{k}: {v}" for k, v in sorted(report.detections_per_class.items()))
            lines.append(f"  per class     {per_class}")
        if report.tracks_total:
            lines.append(f"  tracks        {report.tracks_total} track ids published")
    if report.drive_head:
        lines.append("")
        lines.append(f"  drive         {report.drive_outputs} commands, {report.drive_stops} safety stops")
    if report.drive is not None:
        d = report.drive
        unmatched = f", {d.unmatched} without a command that close" if d.unmatched else ""
        lines.append(f"  vs {d.topic} ({d.msgtype}, {d.matched} frames matched within {d.window_s * 1000:.0f} ms"
                     f"{unmatched})")
        lines.append(f"  {'':<14}{'MAE':>8}{'RMSE':>9}")
        lines.append(f"  {'steering':<14}{_num(d.steering_mae):>8}{_num(d.steering_rmse):>9}   ({d.steering_field})")
        lines.append(f"  {'throttle':<14}{_num(d.throttle_mae):>8}{_num(d.throttle_rmse):>9}   ({d.throttle_field})")
    if report.detection_eval is not None:
        ev = report.detection_eval
        lines.append("")
        lines.append(
            f"  vs {ev.topic} ({ev.frames} frames with ground truth, IoU >= {ev.iou_threshold:g})"
        )
        lines.append(f"  {'class':<14}{'TP':>6}{'FP':>6}{'FN':>6}{'precision':>11}{'recall':>9}")
        rows = [*sorted(ev.per_class.items()), ("all", ev.overall)]
        for name, score in rows:
            lines.append(
                f"  {name:<14}{score.true_positives:>6}{score.false_positives:>6}{score.false_negatives:>6}"
                f"{_pct(score.precision):>11}{_pct(score.recall):>9}"
            )
        if ev.map_50 is not None:
            lines.append(f"  COCO mAP@0.5 {_num(ev.map_50)}   mAP@[.5:.95] {_num(ev.map_50_95)}   (faster-coco-eval)")
    if report.tracking_eval is not None:
        lines.extend(format_tracking(report.tracking_eval))
    if report.segmentation_eval is not None:
        sv = report.segmentation_eval
        lines.append("")
        lines.append(f"  {sv.head} vs {sv.topic} ({sv.frames} frames with a ground-truth mask)")
        lines.append(f"  mIoU {_num(sv.miou)}   pixel accuracy {_pct(sv.pixel_accuracy)}")
        for name, iou in sv.iou_per_class.items():
            lines.append(f"  {'':<14}{name:<16}IoU {_num(iou) if iou is not None else '-'}")
    for name, summary in report.head_summaries.items():
        lines.append("")
        lines.append(f"  {name:<14}{summary['task']}, {summary['frames']} frames")
        for key, value in sorted(summary["mean"].items()):
            lines.append(f"  {'':<14}{key:<24}mean {value:.3f}")
        for key, bucket in sorted(summary["counts"].items()):
            top = sorted(bucket.items(), key=lambda kv: -kv[1])[:8]
            lines.append(f"  {'':<14}{key:<24}" + ", ".join(f"{k}: {v}" for k, v in top))
    if report.out_bag:
        lines.append("")
        topics = ", ".join(f"{t} ({m.rsplit('/', 1)[-1]})" for t, m in report.output_topics.items())
        lines.append(f"  output bag    {report.out_bag}")
        if topics:
            lines.append(f"                {topics}")
    if report.files:
        lines.append(f"  report files  {report.report_dir}")
        for path in report.files:
            lines.append(f"                {Path(path).name}")
    for note in report.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def format_tracking(te: TrackingEval) -> List[str]:
    """The tracking section of the printed report."""
    return [
        "",
        f"  tracks of {te.head} vs {te.topic} ({te.frames} frames with ground truth, IoU >= {te.iou_threshold:g}, "
        "motmetrics)",
        f"  MOTA {_num(te.mota)}   IDF1 {_num(te.idf1)}   MOTP (mean IoU) {_num(te.motp_iou)}   "
        f"IDP {_num(te.idp)}   IDR {_num(te.idr)}",
        f"  id switches {te.id_switches}   false positives {te.false_positives}   misses {te.misses}   "
        f"fragmentations {te.fragmentations}",
        f"  truth: {te.truth_tracks} tracks, {te.truth_boxes} boxes   predicted: {te.predicted_tracks} tracks, "
        f"{te.predicted_boxes} boxes   mostly tracked {te.mostly_tracked}, partly {te.partially_tracked}, "
        f"mostly lost {te.mostly_lost}",
    ]


# ----------------------------------------------------------------------------------------------- files


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display needed), or None when not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def nothing_processed(report: ReplayReport) -> Optional[str]:
    """The complaint for a replay that read frames but processed none (every one bad, failed or dropped), or
    None. Such a run is not a success: its report and output bag hold no model output."""
    if report.frames_in == 0 or report.frames_processed > 0:
        return None
    first = (report.bad_frame_reasons + report.failed_frame_reasons + ["-"])[0]
    return (f"none of the {report.frames_in} frames of {report.image_topic} was processed ({report.bad_frames} bad, "
            f"{report.failed_frames} failed, {report.dropped_frames} dropped; first: {first}); fix: a bad frame is "
            "the camera's data (encoding, size above max_pixels), a failed one the model or its spec: "
            "`trt-perception infer MODEL FRAME.png` on one frame shows the error in full")


def check_report_folder(path: Path, force: bool) -> None:
    """``--report DIR`` before the replay: writable, and holding no earlier report unless ``force``."""
    from trt_perception.errors import ConfigError
    from trt_perception.tools.output_paths import check_writable_folder

    check_writable_folder(path, "--report")
    path = Path(path).expanduser()
    earlier = [name for name in REPORT_FILES if (path / name).exists()] if path.is_dir() else []
    if earlier and not force:
        raise ConfigError(f"--report {path} holds an earlier report ({', '.join(earlier)}); refusing to overwrite "
                          "it; fix: pass --force to replace it, or another --report folder")


def write_report_files(report: ReplayReport, directory: Path, plots: bool = True,
                       plot_process: Any = None) -> List[Path]:
    """Write report.json and, with matplotlib, steering.png / latency.png / detections.png / tracks.png into
    ``directory``, replacing an earlier report's files there (the caller checked ``--force``: see
    ``check_report_folder``); a plot this run does not draw is removed rather than left stale.
    ``plot_process``: a ``PlotProcess`` that draws the matplotlib plots (some perhaps started already)."""
    from trt_perception.errors import ConfigError

    directory = Path(directory)
    try:
        return _write_report_files(report, directory, plots, plot_process)
    except OSError as exc:
        raise ConfigError(f"--report {directory}: cannot write the report there ({exc.strerror or exc}: "
                          f"{exc.filename or directory}); fix: free disk space, or pass a folder you can write "
                          "to") from None


def prepare_report_folder(directory: Path) -> None:
    """The report folder exists and holds no earlier report's files (a plot this run does not draw must not stay
    behind, stale): before any plot is drawn into it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        stale = directory / name
        if stale.is_file():
            stale.unlink()


def _write_report_files(report: ReplayReport, directory: Path, plots: bool, plot_process: Any) -> List[Path]:
    child = plot_process if plots else None
    if child is not None:
        child.submit(report, directory, MATPLOTLIB_PLOTS)  # its first call prepared the folder
    else:
        prepare_report_folder(directory)
    report.report_dir = str(directory)
    names = plot_names(report) if plots else []
    drawn: Dict[str, Path] = {}
    if child is not None:
        if "detections" in names:  # OpenCV: here, while the plot process draws the others
            drawn["detections"] = draw_plot(None, "detections", report, directory)
        drawn.update(child.collect(report, directory))
    missing = [name for name in names if name not in drawn]
    if missing:
        plt = _pyplot()
        if plt is None:
            report.notes.append(MATPLOTLIB_MISSING)
        else:
            drawn.update({name: draw_plot(plt, name, report, directory) for name in missing})
    written = [drawn[name] for name in names if name in drawn]
    json_path = directory / "report.json"
    report.files = [str(p) for p in [*written, json_path]]
    json_path.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return [*written, json_path]


MATPLOTLIB_PLOTS = ("steering", "latency", "tracks")  # detections.png is drawn with OpenCV


def plot_names(report: ReplayReport) -> List[str]:
    """The plots (``<name>.png``) ``report`` has data for, in the order its files list them."""
    series = report.series
    names = []
    if len(series.predicted_steering) or len(series.recorded_steering):
        names.append("steering")
    if any(len(v) for v in series.stage_seconds.values()):
        names.append("latency")
    if series.samples:
        names.append("detections")
    if series.track_times:
        names.append("tracks")
    return names


def draw_plot(plt: Any, name: str, report: ReplayReport, directory: Path) -> Path:
    """Draw ``<name>.png`` of ``plot_names`` into ``directory`` (``plt``: pyplot; None will do for detections)."""
    path = directory / f"{name}.png"
    if name == "detections":
        return _plot_samples(plt, report.series.samples, path)
    plot = {"steering": _plot_steering, "latency": _plot_latency, "tracks": _plot_tracks}[name]
    return plot(plt, report, path)


def save_figure(fig: Any, path: Path, dpi: int) -> None:
    """A figure as PNG at zlib level 1 (as detections.png): PIL's default level 6 took ~7 ms more of a ~40 ms
    save (the steering plot, measured) for a file only 1.1x smaller."""
    fig.savefig(path, dpi=dpi, pil_kwargs={"compress_level": 1})


def _fixed_margins(fig: Any, left: float, right: float, top: float, bottom: float, **space: float) -> None:
    """Margins in inches around the axes, set once: ``tight_layout`` draws the whole figure an extra time to
    measure its labels, a third of each figure's cost (the demo's ~0.2 s), for labels whose size is known."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1.0 - right / width, top=1.0 - top / height,
                        bottom=bottom / height, **space)


def _plot_steering(plt: Any, report: ReplayReport, path: Path) -> Path:
    series = report.series
    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    names = series.steering_units
    for ax, title, predicted, recorded in (
        (axes[0], f"steering ({names[0]})", series.predicted_steering, series.recorded_steering),
        (axes[1], f"throttle ({names[1]})", series.predicted_throttle, series.recorded_throttle),
    ):
        if len(recorded):
            ax.plot(series.recorded_times, recorded, color="0.35", linewidth=1.2, label="recorded")
        if len(predicted):
            ax.plot(series.frame_times, predicted, color="tab:red", linewidth=1.0, label="predicted")
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[1].set_xlabel("time since first frame (s)")
    title = "predicted vs recorded commands"
    if report.drive is not None:
        title += f"  (steering MAE {report.drive.steering_mae:.3f}, throttle MAE {report.drive.throttle_mae:.3f})"
    fig.suptitle(title, fontsize=10)
    _fixed_margins(fig, left=0.8, right=0.15, top=0.45, bottom=0.5, hspace=0.08)
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def _plot_latency(plt: Any, report: ReplayReport, path: Path) -> Path:
    """Per-stage histograms on one log-time axis (stages differ by 100x), and the whole frame on its own."""
    series = report.series.stage_seconds
    stages = [s for s in ordered_stages(list(series), report.heads) if len(series[s]) and s != "total"]
    fig, (ax_stages, ax_total) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 2]})
    all_ms = np.concatenate([np.asarray(series[s], np.float64) for s in series if len(series[s])]) * 1000.0
    positive = all_ms[all_ms > 0]
    lo = max(float(positive.min()) if positive.size else 1e-3, 1e-3)
    hi = max(float(all_ms.max()) if all_ms.size else 1.0, lo * 10)
    bins = np.geomspace(lo, hi, 50)
    for stage in stages:
        values = np.clip(np.asarray(series[stage], np.float64) * 1000.0, lo, hi)
        stats = report.latency.get(stage)
        label = f"{stage} (p50 {stats.p50_ms:.2f}, p95 {stats.p95_ms:.2f})" if stats else stage
        counts, edges = np.histogram(values, bins=bins)
        ax_stages.stairs(counts, edges, linewidth=1.4, label=label)  # one artist: hist() adds one per bin
    ax_stages.set_xscale("log")
    plain_log_ticks(ax_stages.xaxis, lo, hi)
    ax_stages.set_xlabel("ms per frame (log scale)")
    ax_stages.set_ylabel("frames")
    ax_stages.set_title("per stage", fontsize=10)
    if stages:
        ax_stages.legend(fontsize=7)
    total = series.get("total", [])
    if len(total):
        values = np.asarray(total, np.float64) * 1000.0
        counts, edges = np.histogram(values, bins=40)
        ax_total.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.8)
        stats = report.latency.get("total")
        if stats is not None:
            ax_total.axvline(stats.p50_ms, color="k", linewidth=1, label=f"p50 {stats.p50_ms:.2f} ms")
            ax_total.axvline(stats.p95_ms, color="tab:red", linewidth=1, label=f"p95 {stats.p95_ms:.2f} ms")
            ax_total.legend(fontsize=8)
    ax_total.set_xlabel("ms per frame")
    ax_total.set_title("total (decode + models)", fontsize=10)
    fig.suptitle(f"latency per frame, {report.frames_processed} frames", fontsize=10)
    _fixed_margins(fig, left=0.7, right=0.15, top=0.6, bottom=0.55, wspace=0.12)
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return path


def plain_log_ticks(axis: Any, lo: float, hi: float) -> None:
    """Plain tick labels ("0.1", "2", "10") on a log axis spanning ``lo``..``hi``: matplotlib's default writes
    each as mathtext ($10^{-1}$), whose parser was most of latency.png's first draw (the report's files: 0.77-0.85 s
    instead of 0.85-0.96 s in a fresh process). Minor ticks get labels (2x and 5x) only when fewer than two
    decades leave too few major ones."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    if hi < lo * 100:
        def minor(x: float, _pos: Any) -> str:
            leading = x / 10.0 ** math.floor(math.log10(x)) if x > 0 else 0.0
            return f"{x:g}" if round(leading, 6) in (2.0, 5.0) else ""

        axis.set_minor_formatter(FuncFormatter(minor))
    else:
        axis.set_minor_formatter(NullFormatter())


def _plot_tracks(plt: Any, report: ReplayReport, path: Path) -> Path:
    """One lane per track id over time: ground truth (grey, when the bag has track ids) above the head's
    tracks (coloured). A track broken in two shows as two lanes; an id switch as lanes that hand over."""
    series = report.series
    panels = [("tracker", series.track_times)]
    if series.truth_track_times:
        panels.insert(0, ("ground truth", series.truth_track_times))
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.6 + 2.2 * len(panels)), sharex=True, squeeze=False)
    for ax, (title, tracks) in zip(axes[:, 0], panels):
        lanes = sorted(tracks, key=lambda k: (min(tracks[k]) if tracks[k] else 0.0, k))
        for lane, key in enumerate(lanes):
            times = tracks[key]
            color = "0.45" if title == "ground truth" else plt.get_cmap("tab20")(lane % 20)
            ax.plot(times, [lane] * len(times), "|", color=color, markersize=4)
        if len(lanes) <= 30:
            ax.set_yticks(range(len(lanes)))
            ax.set_yticklabels(lanes, fontsize=6)
        ax.set_ylabel(f"{title}\n({len(lanes)} ids)", fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("time since first frame (s)")
    title = f"tracks of {report.detection_head} over time"
    if report.tracking_eval is not None and report.tracking_eval.mota is not None:
        te = report.tracking_eval
        title += f"  (MOTA {te.mota:.3f}, IDF1 {_num(te.idf1)}, {te.id_switches} id switches)"
    fig.suptitle(title, fontsize=10)
    longest = max((len(str(k)) for _, tracks in panels if len(tracks) <= 30 for k in tracks), default=0)
    _fixed_margins(fig, left=0.5 + 0.05 * max(longest, 3), right=0.15, top=0.45, bottom=0.55, hspace=0.12)
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return path


GRID_COLUMNS = 3
GRID_TILE_WIDTH = 480  # px: replay's 320-px samples are enlarged before the overlay is drawn, so labels stay legible
GRID_CAPTION_HEIGHT = 30  # px of each tile's title band
GRID_CAPTION_BASELINE = 19  # the title's baseline: 5+ px of band below its lowest descender
GRID_ROW_GAP = 12  # px between rows of tiles (columns: 6)
GRID_MASK_ALPHA = 0.3  # tint strength of the segmentation mask: the frame must still read under it
_GRID_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX (cv2 is imported lazily)
_GRID_BACKGROUND = (32, 32, 32)
_GRID_TEXT = (235, 235, 235)


def _plot_samples(plt: Any, samples: Sequence[SampleFrame], path: Path) -> Path:
    """detections.png: the sample frames in a grid, drawn with OpenCV pixel for pixel (no figure layout or font
    engine: a few tens of ms where matplotlib took ~0.3 s). Each frame carries the node's detection overlay
    (colour per class, label, score, #track id), the ground truth as thin white boxes and, when the replay ran a
    segmentation head, its mask as a tint with the class outlines. ``plt`` is unused; every plot takes it."""
    import cv2

    tiles = [_sample_tile(sample) for sample in samples]
    tile_h = max(t.shape[0] for t in tiles)
    tile_w = max(t.shape[1] for t in tiles)
    cols = min(GRID_COLUMNS, len(tiles))
    rows = -(-len(tiles) // cols)
    gap = 6
    legend = _grid_legend(samples, cols * tile_w + (cols + 1) * gap)
    row_gap = GRID_ROW_GAP
    grid = np.full((legend.shape[0] + rows * (tile_h + row_gap), legend.shape[1], 3), _GRID_BACKGROUND, np.uint8)
    grid[: legend.shape[0]] = legend
    for i, tile in enumerate(tiles):
        y = legend.shape[0] + (i // cols) * (tile_h + row_gap)
        x = gap + (i % cols) * (tile_w + gap)
        grid[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    if not cv2.imwrite(str(path), grid, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"cannot write {path}")
    return path


def _put_text(canvas: np.ndarray, text: str, origin: Tuple[int, int], scale: float = 0.5,
              color: Tuple[int, int, int] = _GRID_TEXT) -> int:
    """Anti-aliased text at ``origin`` (baseline left); returns the x just after it."""
    import cv2

    cv2.putText(canvas, text, origin, _GRID_FONT, scale, color, 1, cv2.LINE_AA)
    return origin[0] + cv2.getTextSize(text, _GRID_FONT, scale, 1)[0][0]


def _sample_tile(sample: SampleFrame) -> np.ndarray:
    """One frame, enlarged to GRID_TILE_WIDTH: mask tint and outlines, detections, truth; a caption above."""
    import cv2

    from trt_perception.overlay import draw_detections
    from trt_perception.results import Detections

    image = sample.image_bgr
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    height, width = image.shape[:2]
    zoom = GRID_TILE_WIDTH / float(width)
    size = (GRID_TILE_WIDTH, max(1, round(height * zoom)))
    canvas = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR if zoom > 1 else cv2.INTER_AREA)
    if sample.mask is not None:
        _tint_mask(canvas, cv2.resize(np.asarray(sample.mask, np.uint8), size, interpolation=cv2.INTER_NEAREST),
                   sample.mask_colors)
    class_ids = sample.class_ids if sample.class_ids is not None else np.zeros(len(sample.labels), np.int64)
    detections = Detections(np.asarray(sample.boxes, np.float32).reshape(-1, 4) * zoom,
                            np.asarray(sample.scores, np.float32), np.asarray(class_ids, np.int64),
                            list(sample.labels))
    if sample.truth_boxes is not None:  # under the detections: a found object shows its coloured box on top
        for box in np.round(np.asarray(sample.truth_boxes, np.float64).reshape(-1, 4) * zoom).astype(int):
            # white on a dark outline: visible on white track edges and on dark asphalt alike
            cv2.rectangle(canvas, (box[0], box[1]), (box[2], box[3]), (0, 0, 0), 3)
            cv2.rectangle(canvas, (box[0], box[1]), (box[2], box[3]), (255, 255, 255), 1)
    canvas = draw_detections(canvas, detections, "bgr")  # the node's overlay
    caption = np.full((GRID_CAPTION_HEIGHT, canvas.shape[1], 3), _GRID_BACKGROUND, np.uint8)
    found = len(sample.labels)
    truth = f", {len(sample.truth_labels)} true" if sample.truth_labels is not None else ""
    plural = "" if found == 1 else "s"
    # the title sits on its own band, clear of the image below it (descenders included)
    _put_text(caption, f"frame {sample.index}   t = {sample.time_s:.1f} s   {found} detection{plural}{truth}",
              (4, GRID_CAPTION_BASELINE))
    return np.vstack([caption, canvas])


def _mask_palette(colors: Optional[Sequence[Sequence[int]]], count: int) -> np.ndarray:
    """(256, 3) BGR colour per class id; classes without a colour, or coloured black, are not tinted (all -1)."""
    from trt_perception.overlay import class_color

    palette = np.full((256, 3), -1, np.int16)
    for class_id in range(min(count, 255)):
        rgb = tuple(colors[class_id]) if colors is not None and class_id < len(colors) else (
            (0, 0, 0) if class_id == 0 else class_color(class_id, "rgb"))
        if any(rgb):
            palette[class_id] = rgb[::-1]
    return palette


def _tint_mask(canvas: np.ndarray, mask: np.ndarray, colors: Optional[Sequence[Sequence[int]]]) -> None:
    """Blend each tinted class's colour into ``canvas`` (in place) and outline its regions, 1 px, in that colour."""
    import cv2

    palette = _mask_palette(colors, int(mask.max(initial=0)) + 1)
    present = [c for c in np.flatnonzero(np.bincount(mask.ravel(), minlength=256)).tolist() if palette[c, 0] >= 0]
    if not present:
        return
    tint = np.clip(palette, 0, 255).astype(np.uint8)[mask]
    blend = cv2.addWeighted(canvas, 1.0 - GRID_MASK_ALPHA, tint, GRID_MASK_ALPHA, 0.0)
    np.copyto(canvas, blend, where=(palette[mask, :1] >= 0))
    for class_id in present:
        region = (mask == class_id).astype(np.uint8)
        contours, _ = cv2.findContours(region, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        color = tuple(int(c) for c in palette[class_id])
        cv2.drawContours(canvas, contours, -1, color, 1, cv2.LINE_AA)


def _grid_legend(samples: Sequence[SampleFrame], width: int) -> np.ndarray:
    """The grid's title band: what each mark means, with swatches for the mask classes that appear; the items
    wrap onto more lines when the grid is narrow."""
    import cv2

    items: List[Tuple[str, Optional[Tuple[int, ...]], float]] = [  # (text, swatch colour or None, tint)
        ("detections: coloured box, label score #track id", None, 0.0),
        ("ground truth", (255, 255, 255), 0.0),
    ]
    shown: Dict[int, Tuple[Tuple[int, ...], str]] = {}
    for sample in samples:
        if sample.mask is None:
            continue
        palette = _mask_palette(sample.mask_colors, int(np.max(sample.mask, initial=0)) + 1)
        names = sample.mask_labels or []
        for class_id in np.unique(sample.mask).tolist():
            if palette[class_id][0] >= 0 and class_id not in shown:
                name = names[class_id] if class_id < len(names) else str(class_id)
                shown[class_id] = (tuple(int(c) for c in palette[class_id]), name)
    if shown:
        items.append(("segmentation:", None, 0.0))
        items.extend((name, color, GRID_MASK_ALPHA) for _, (color, name) in sorted(shown.items()))
    lines: List[List[Tuple[int, str, Optional[Tuple[int, ...]], float]]] = [[]]
    x = 8
    for text, color, tint in items:
        step = (24 if color is not None else 0) + cv2.getTextSize(text, _GRID_FONT, 0.5, 1)[0][0] + 20
        if lines[-1] and x + step > width:
            lines.append([])
            x = 8
        lines[-1].append((x, text, color, tint))
        x += step
    band = np.full((30 + 22 * len(lines), width, 3), _GRID_BACKGROUND, np.uint8)
    _put_text(band, f"sample frames ({len(samples)})", (8, 20), 0.6)
    for row, line in enumerate(lines):
        base = 43 + 22 * row
        for x, text, color, tint in line:
            if color is not None:
                swatch = band[base - 11 : base + 2, x : x + 18]
                swatch[:] = np.clip(swatch * (1.0 - tint) + np.asarray(color) * tint, 0, 255)
                cv2.rectangle(band, (x, base - 11), (x + 18, base + 1), color, 1)
                x += 24
            _put_text(band, text, (x, base))
    return band
