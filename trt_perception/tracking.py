"""Multi-object tracking for detection heads: ByteTrack's association on a constant-velocity Kalman filter,
aged by the clock (seconds), not by frame counts.

ByteTrack (Zhang et al., ECCV 2022; ifzhang/ByteTrack ``yolox/tracker/byte_tracker.py``) keeps the low-score
boxes other trackers throw away and uses them only to continue tracks that already exist, which is what keeps
an id on a cone while a wheel half hides it. One frame, as here:

1. tracks older than ``max_age`` seconds since their last match are dropped; a clock that went BACK (a looping
   bag, a restarted sim) drops every track (``reset``);
2. every track is predicted to ``now`` (constant velocity, Kalman, time step = clock difference);
3. high-score detections (score >= ``high_score``) are matched to the confirmed tracks, tracked and lost, by
   IoU with the predicted boxes (``iou`` at least);
4. the low-score detections (``low_score`` <= score < ``high_score``) are matched to the confirmed tracks still
   unmatched that were tracked in the last frame, at IoU >= 0.5 (ByteTrack's second association); tracks left
   unmatched become lost;
5. tentative tracks (born and not yet confirmed) are matched to the remaining high-score detections at
   IoU >= 0.3; a tentative track that misses a processed frame is dropped;
6. the remaining high-score detections start tentative tracks; a track is confirmed, and gets its id, when it
   has been matched in ``min_hits`` consecutive processed frames (``min_hits`` 1: at once).

Matching is per class by default (a track keeps the class it was born with), with the Jonker-Volgenant
linear assignment of ``lapx`` (``lap.lapjv(cost, extend_cost=True, cost_limit=...)``, ByteTrack's own call),
so a pair under the IoU limit is left unmatched instead of forced. Ids are positive integers, counted over the
tracker's life (a reset does not reuse them), published as text in ``Detection2D.id``.

Why not a tracker library: norfair 2.3 pins numpy < 2 and counts frames; supervision and roboflow ``trackers``
need Python >= 3.10 (and ``trackers`` opencv-python, which clashes with headless/JetPack OpenCV); the PyPI
packagings of the research code (bytetracker, ocsort) are frame-based and unmaintained; boxmot needs torch.
None ages tracks by time, so a dropped frame or a looping bag would be handled wrong.

Kalman model, per axis of (cx, cy, w, h): state (position, velocity in px/s), process and measurement noise
proportional to the box size as ByteTrack's (std 1/20 of the size for positions and measurements, 1/160 per
frame for velocities), scaled to the time step from its nominal 30 frames per second. The axes are
independent, so each is an exact 2x2 filter and every track is filtered in one vectorised numpy step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from trt_perception.errors import ConfigError
from trt_perception.results import Detections

LAPX_HINT = "pip install lapx (or: pip install 'trt_perception[tracking]')"

LOW_SCORE_IOU = 0.5  # second association: a low-score box must overlap its track well (ByteTrack: 0.5)
TENTATIVE_IOU = 0.3  # unconfirmed tracks (ByteTrack: match_thresh 0.7 as a cost, i.e. IoU >= 0.3)
NOMINAL_FPS = 30.0  # ByteTrack's noise is per frame at MOT17's 30 frames/s; here per second
STD_POSITION = 1.0 / 20.0  # of the box size: measurement and position noise
STD_VELOCITY = 1.0 / 160.0  # of the box size per frame: velocity noise
MIN_SIZE = 1.0  # px: boxes never collapse below this

# One row per track in one float64 table (cheap to filter, append and update as a whole).
POS, VEL, VAR_P, COV, VAR_V = slice(0, 4), slice(4, 8), slice(8, 12), slice(12, 16), slice(16, 20)
TRACK_ID, CLASS, HITS, STATE, SEEN = 20, 21, 22, 23, 24
COLUMNS = 25
TENTATIVE, TRACKED, LOST = 0.0, 1.0, 2.0
SIZE_AXES = [2, 3, 2, 3]  # the size each axis' noise scales with: cx -> w, cy -> h, w -> w, h -> h


@dataclass
class TrackerSettings:
    """What the tracker needs from a head's params (``<head>.track_*``); see the module docstring."""

    high_score: float = 0.5
    low_score: float = 0.1
    iou: float = 0.2
    max_age: float = 1.0  # seconds since a track's last match before it is dropped
    min_hits: int = 2  # consecutive matched frames to confirm a track
    per_class: bool = True

    def check(self) -> None:
        if not 0.0 <= self.low_score <= self.high_score <= 1.0:
            raise ConfigError(
                f"tracker scores: low {self.low_score:g}, high {self.high_score:g}; expected "
                "0 <= track_low_score <= track_high_score <= 1; fix: lower track_low_score or raise track_high_score"
            )
        if not 0.0 < self.iou <= 1.0 or self.max_age < 0.0 or self.min_hits < 1:
            raise ConfigError(
                f"tracker settings iou {self.iou:g}, max_age {self.max_age:g} s, min_hits {self.min_hits}; "
                "expected 0 < track_iou <= 1, track_max_age >= 0 and track_min_hits >= 1"
            )


@dataclass
class TrackedDetections(Detections):
    """Detections with their track ids as text ('' = not (yet) on a confirmed track), one per detection."""

    ids: List[str] = field(default_factory=list)


def load_lap() -> object:
    """The ``lap`` module of lapx (the assignment solver), or a ConfigError saying how to install it."""
    try:
        import lap
    except ImportError:
        raise ConfigError(f"tracker 'bytetrack' needs lapx (linear assignment), which is not installed; "
                          f"fix: {LAPX_HINT}") from None
    return lap


class ByteTracker:
    """ByteTrack over one detection stream. ``update`` per processed frame; not thread-safe (one per head)."""

    def __init__(self, settings: Optional[TrackerSettings] = None) -> None:
        self.settings = settings or TrackerSettings()
        self.settings.check()
        self._lap = load_lap()
        self.table = np.zeros((0, COLUMNS), np.float64)
        self.time: Optional[float] = None
        self.next_id = 1
        self.resets = 0  # clock jumps back seen

    # ------------------------------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every track (ids keep counting up, so an old id never comes back for a new object)."""
        self.table = np.zeros((0, COLUMNS), np.float64)
        self.time = None

    @property
    def confirmed(self) -> int:
        """Tracks matched in the last processed frame and confirmed."""
        return int(np.count_nonzero(self.table[:, STATE] == TRACKED))

    def track_boxes(self) -> Tuple[np.ndarray, np.ndarray]:
        """(ids, xyxy boxes) of the tracks where the filter has them now (0 = not yet confirmed)."""
        return self.table[:, TRACK_ID].astype(np.int64), _corners(self.table[:, POS])

    # ------------------------------------------------------------------------------------------ frame

    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, now: float) -> np.ndarray:
        """One frame's detections (xyxy, any order) at clock time ``now`` (seconds) -> the confirmed track id
        of each detection (int64, 0 = none: unmatched, low score without a track, or a track not confirmed)."""
        s = self.settings
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        classes = np.asarray(class_ids).reshape(-1).astype(np.float64)
        out = np.zeros(scores.shape[0], np.int64)
        if self.time is not None and now < self.time:
            self.resets += 1
            self.reset()
        if self.table.shape[0]:
            alive = now - self.table[:, SEEN] <= s.max_age
            if not alive.all():
                self.table = self.table[alive]
            if now > self.time:
                _predict(self.table, now - self.time)
        self.time = now
        table = self.table
        state = table[:, STATE]
        track_xyxy = _corners(table[:, POS])
        high = np.flatnonzero(scores >= s.high_score)
        low = np.flatnonzero((scores >= s.low_score) & (scores < s.high_score))

        iou = iou_pairs(track_xyxy, boxes)
        if s.per_class:
            iou[table[:, CLASS][:, None] != classes[None, :]] = 0.0
        pool = np.flatnonzero(state != TENTATIVE)
        t1, d1, pool_left, high_left = self._match(iou, pool, high, s.iou)
        recent = pool_left[state[pool_left] == TRACKED]
        t2, d2, recent_left, _ = self._match(iou, recent, low, LOW_SCORE_IOU)
        tentative = np.flatnonzero(state == TENTATIVE)
        t3, d3, tentative_left, born = self._match(iou, tentative, high_left, TENTATIVE_IOU)
        table[recent_left, STATE] = LOST
        rows = np.concatenate([t1, t2, t3])
        dets = np.concatenate([d1, d2, d3])
        if rows.size:
            _correct(table, rows, _centres(boxes[dets]))
            table[rows, SEEN] = now
            table[rows, HITS] += 1.0
            if not s.per_class:
                table[rows, CLASS] = classes[dets]
            promote = rows[(table[rows, STATE] == TENTATIVE) & (table[rows, HITS] >= s.min_hits)]
            self._confirm(promote)
            table[rows[table[rows, STATE] == LOST], STATE] = TRACKED
            confirmed = table[rows, STATE] == TRACKED
            out[dets[confirmed]] = table[rows[confirmed], TRACK_ID].astype(np.int64)
        if tentative_left.size:
            keep = np.ones(table.shape[0], bool)
            keep[tentative_left] = False
            table = table[keep]
        if born.size:
            fresh = _new_rows(_centres(boxes[born]), classes[born], now)
            if s.min_hits <= 1:
                first = table.shape[0]
                table = np.concatenate([table, fresh])
                self.table = table
                self._confirm(np.arange(first, table.shape[0]))
                out[born] = table[first:, TRACK_ID].astype(np.int64)
            else:
                table = np.concatenate([table, fresh])
        self.table = table
        return out

    def _confirm(self, rows: np.ndarray) -> None:
        if rows.size:
            self.table[rows, STATE] = TRACKED
            self.table[rows, TRACK_ID] = np.arange(self.next_id, self.next_id + rows.size, dtype=np.float64)
            self.next_id += int(rows.size)

    def _match(
        self, iou: np.ndarray, rows: np.ndarray, dets: np.ndarray, min_iou: float
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Optimal one-to-one matching of track ``rows`` to detections ``dets`` at IoU >= ``min_iou`` (``iou``:
        every track against every detection): (matched rows, their detections, unmatched rows and dets).

        Only the tracks and detections that have a candidate at all go to the solver, and none when no track
        or detection has two candidates (the usual case: the answer is then every candidate pair). Both give
        the solver's optimum, since leaving a track or detection unmatched costs the same whatever it is."""
        empty = np.zeros(0, np.int64)
        if rows.size == 0 or dets.size == 0:
            return empty, empty, rows, dets
        sub = iou[np.ix_(rows, dets)]
        candidate = sub >= min_iou
        per_row = candidate.sum(axis=1)
        per_det = candidate.sum(axis=0)
        if per_row.max() <= 1 and per_det.max() <= 1:
            r, c = np.nonzero(candidate)
        else:
            busy_rows = np.flatnonzero(per_row)
            busy_dets = np.flatnonzero(per_det)
            cost = 1.0 - sub[np.ix_(busy_rows, busy_dets)]
            _, x, _ = self._lap.lapjv(cost, extend_cost=True, cost_limit=1.0 - min_iou + 1e-9)  # type: ignore
            x = np.asarray(x, np.int64)
            picked = np.flatnonzero(x >= 0)
            r, c = busy_rows[picked], busy_dets[x[picked]]
            ok = sub[r, c] >= min_iou
            r, c = r[ok], c[ok]
        row_left = np.ones(rows.size, bool)
        row_left[r] = False
        det_left = np.ones(dets.size, bool)
        det_left[c] = False
        return rows[r], dets[c], rows[row_left], dets[det_left]


def iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box in ``a`` with every box in ``b``; ``a``'s boxes must have an area (tracks do)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    wh = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh -= lt
    np.maximum(wh, 0.0, out=wh)
    inter = wh[:, :, 0] * wh[:, :, 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    union = area_a[:, None] + area_b[None, :]
    union -= inter
    inter /= union
    return inter


# ---------------------------------------------------------------------------------------------- Kalman


def _centres(xyxy: np.ndarray) -> np.ndarray:
    """xyxy -> (cx, cy, w, h)."""
    out = np.empty_like(xyxy)
    out[:, 0:2] = (xyxy[:, 0:2] + xyxy[:, 2:4]) * 0.5
    out[:, 2:4] = np.maximum(xyxy[:, 2:4] - xyxy[:, 0:2], MIN_SIZE)
    return out


def _corners(cxcywh: np.ndarray) -> np.ndarray:
    half = np.maximum(cxcywh[:, 2:4], MIN_SIZE) * 0.5
    return np.concatenate([cxcywh[:, 0:2] - half, cxcywh[:, 0:2] + half], axis=1)


def _sizes(table: np.ndarray) -> np.ndarray:
    return np.maximum(table[:, SIZE_AXES], MIN_SIZE)


def _new_rows(z: np.ndarray, classes: np.ndarray, now: float) -> np.ndarray:
    """Tentative tracks at measurements ``z`` (cx, cy, w, h): at rest, uncertain (ByteTrack's initiate)."""
    rows = np.zeros((z.shape[0], COLUMNS), np.float64)
    rows[:, POS] = z
    size = np.maximum(z[:, SIZE_AXES], MIN_SIZE)
    rows[:, VAR_P] = (2.0 * STD_POSITION * size) ** 2
    rows[:, VAR_V] = (10.0 * STD_VELOCITY * NOMINAL_FPS * size) ** 2
    rows[:, CLASS] = classes
    rows[:, HITS] = 1.0
    rows[:, STATE] = TENTATIVE
    rows[:, SEEN] = now
    return rows


def _predict(table: np.ndarray, dt: float) -> None:
    """Every track ``dt`` seconds ahead, in place. Tracks not matched last frame stop changing size
    (ByteTrack zeroes the height velocity of lost tracks)."""
    table[table[:, STATE] != TRACKED, 6:8] = 0.0
    size = _sizes(table)
    frames = dt * NOMINAL_FPS
    var_p, cov, var_v = table[:, VAR_P], table[:, COV], table[:, VAR_V]
    table[:, POS] += dt * table[:, VEL]
    table[:, VAR_P] = var_p + 2.0 * dt * cov + dt * dt * var_v + (STD_POSITION * size) ** 2 * frames
    table[:, COV] = cov + dt * var_v
    table[:, VAR_V] = var_v + (STD_VELOCITY * NOMINAL_FPS * size) ** 2 * frames


def _correct(table: np.ndarray, rows: np.ndarray, z: np.ndarray) -> None:
    """Kalman update of ``rows`` with measurements ``z`` (cx, cy, w, h), in place."""
    part = table[rows]
    measured = (STD_POSITION * np.maximum(part[:, SIZE_AXES], MIN_SIZE)) ** 2
    var_p, cov, var_v = part[:, VAR_P], part[:, COV], part[:, VAR_V]
    gain_p = var_p / (var_p + measured)
    gain_v = cov / (var_p + measured)
    residual = z - part[:, POS]
    part[:, POS] += gain_p * residual
    part[:, VEL] += gain_v * residual
    part[:, VAR_V] = var_v - gain_v * cov
    part[:, VAR_P] = var_p * (1.0 - gain_p)
    part[:, COV] = cov * (1.0 - gain_p)
    table[rows] = part
