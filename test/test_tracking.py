"""The ByteTrack tracker (trt_perception/tracking.py) and its detection-head glue, on synthetic scenes with a
fake clock: stable ids on moving boxes, crossing objects, occlusion within and beyond max_age, the low-score
pass, birth after min_hits, frame drops aging tracks by time, a clock jumping back, per-class association,
and what a detection head with a tracker publishes (ids, thresholds, params).
"""

from __future__ import annotations

import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

from trt_perception.errors import ConfigError
from trt_perception.outputs.base import RawDetections
from trt_perception.params import ParamTable, check_value, cross_check
from trt_perception.preprocess import ImageTransform
from trt_perception.results import Detections
from trt_perception.spec import parse_spec
from trt_perception.tasks.detection import DetectionTask
from trt_perception.tracking import ByteTracker, TrackedDetections, TrackerSettings

FPS = 30.0


class FakeClock:
    """Seconds on a clock the test moves: what the node's ROS clock or replay's bag clock gives a head."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0 / FPS) -> float:
        self.now += seconds
        return self.now


def box(cx: float, cy: float, w: float = 40.0, h: float = 40.0) -> List[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


Det = Tuple[List[float], float, int]  # box, score, class


def update(tracker: ByteTracker, dets: Sequence[Det], now: float) -> np.ndarray:
    boxes = np.asarray([d[0] for d in dets], np.float32).reshape(-1, 4)
    scores = np.asarray([d[1] for d in dets], np.float32)
    classes = np.asarray([d[2] for d in dets], np.int64)
    return tracker.update(boxes, scores, classes, now)


def tracker(**settings: object) -> ByteTracker:
    pytest.importorskip("lap", reason="ByteTrack's assignment needs lapx (pip install lapx; the test extra has it)")
    return ByteTracker(TrackerSettings(**settings))  # type: ignore[arg-type]


def one_id(ids: Sequence[int]) -> int:
    """The single id an object had over a stretch of frames (fails on a switch or a gap)."""
    distinct = set(int(i) for i in ids)
    assert len(distinct) == 1 and 0 not in distinct, distinct
    return distinct.pop()


# -------------------------------------------------------------------------------------------- tracker


def test_moving_boxes_keep_stable_ids_whatever_the_detection_order() -> None:
    rng = np.random.default_rng(3)
    start = np.array([[100, 100], [300, 120], [500, 300], [150, 400], [600, 80]], float)
    velocity = np.array([[120, 0], [0, 90], [-80, 40], [60, -60], [-150, 20]], float)  # px/s
    track, clock = tracker(min_hits=2), FakeClock()
    history = []
    for frame in range(90):
        centres = start + velocity * frame / FPS
        order = rng.permutation(len(start))
        dets = [(box(*(centres[i] + rng.normal(0, 1.0, 2))), 0.9, 0) for i in order]
        ids = update(track, dets, clock.tick())
        by_object = np.zeros(len(start), np.int64)
        by_object[order] = ids
        history.append(by_object)
    history_arr = np.array(history)
    assert (history_arr[0] == 0).all()  # min_hits 2: no id on the first frame
    ids = [one_id(history_arr[1:, i]) for i in range(len(start))]
    assert sorted(ids) == [1, 2, 3, 4, 5]
    assert track.confirmed == 5 and track.next_id == 6


def test_crossing_objects_keep_their_ids() -> None:
    """Two same-class boxes cross head-on (overlapping for several frames): the motion model keeps each id."""
    track, clock = tracker(), FakeClock()
    left, right = [], []
    for frame in range(60):
        x = 100 + 200 * frame / FPS  # 100 -> ~500 px and back the other way
        ids = update(track, [(box(x, 200), 0.9, 0), (box(600 - x, 206), 0.9, 0)], clock.tick())
        left.append(ids[0])
        right.append(ids[1])
    assert one_id(left[1:]) != one_id(right[1:])


def test_occlusion_shorter_than_max_age_keeps_the_id_longer_drops_it() -> None:
    for hidden_s, same in ((0.5, True), (1.5, False)):
        track, clock = tracker(max_age=1.0), FakeClock()
        before, after = [], []
        frame = 0
        for frame in range(30):
            before.append(update(track, [(box(100 + 100 * frame / FPS, 200), 0.9, 0)], clock.tick())[0])
        for _ in range(int(hidden_s * FPS)):  # frames are processed, the object is simply not seen
            frame += 1
            assert update(track, [], clock.tick()).size == 0
        for _ in range(10):
            frame += 1
            after.append(update(track, [(box(100 + 100 * frame / FPS, 200), 0.9, 0)], clock.tick())[0])
        first = one_id(before[1:])
        if same:
            assert one_id(after) == first  # predicted 50 px along: IoU with the last box alone would be 0
        else:
            assert after[0] == 0 and one_id(after[1:]) == first + 1


def test_low_score_detections_continue_tracks_but_never_start_one() -> None:
    track, clock = tracker(high_score=0.5, low_score=0.1), FakeClock()
    ids = []
    for frame in range(40):
        score = 0.25 if 10 <= frame < 20 else 0.9  # half hidden: the detector is less sure
        ids.append(update(track, [(box(100 + 60 * frame / FPS, 100), score, 0)], clock.tick())[0])
    assert one_id(ids[1:]) == 1  # including the ten low-score frames

    lonely, clock = tracker(high_score=0.5, low_score=0.1), FakeClock()
    for _ in range(10):
        assert update(lonely, [(box(50, 50), 0.3, 0)], clock.tick())[0] == 0
    assert lonely.table.shape[0] == 0 and lonely.next_id == 1

    strict, clock = tracker(high_score=0.5, low_score=0.3), FakeClock()  # 0.25 is below the low pass now
    ids = [update(strict, [(box(100, 100), 0.25 if 10 <= f < 20 else 0.9, 0)], clock.tick())[0] for f in range(30)]
    assert all(i == 0 for i in ids[10:20])  # lost, not published as tracked
    assert one_id(ids[1:10]) == one_id(ids[20:])  # and found again within max_age


def test_birth_needs_min_hits_consecutive_frames() -> None:
    track, clock = tracker(min_hits=3), FakeClock()
    ids = [update(track, [(box(100, 100), 0.9, 0)], clock.tick())[0] for _ in range(5)]
    assert ids == [0, 0, 1, 1, 1]

    flicker, clock = tracker(min_hits=2), FakeClock()  # a false positive every other frame never gets an id
    for frame in range(12):
        dets = [(box(300, 300), 0.9, 0)] if frame % 2 == 0 else []
        assert not update(flicker, dets, clock.tick()).any()
    assert flicker.next_id == 1

    at_once, clock = tracker(min_hits=1), FakeClock()
    assert update(at_once, [(box(10, 10), 0.9, 0), (box(90, 90), 0.9, 1)], clock.tick()).tolist() == [1, 2]


def test_frame_drops_age_tracks_by_time_not_by_frame_count() -> None:
    """The latest-frame policy drops frames: the next processed frame comes later. A gap under max_age is
    bridged by the motion model; ONE missed call whose gap exceeds max_age ends the track."""
    track, clock = tracker(max_age=1.0), FakeClock()
    ids = [update(track, [(box(100 + 150 * f / FPS, 100), 0.9, 0)], clock.tick())[0] for f in range(20)]
    clock.tick(0.4)  # 12 frames dropped while the model was busy: the object moved 60 px
    frame = 20 + 12
    ids.append(update(track, [(box(100 + 150 * frame / FPS, 100), 0.9, 0)], clock.tick())[0])
    assert one_id(ids[1:]) == 1

    clock.tick(1.5)  # one long stall
    late = update(track, [(box(100 + 150 * (frame + 46) / FPS, 100), 0.9, 0)], clock.tick())[0]
    assert late == 0 and track.table.shape[0] == 1  # a new tentative track, the old one aged out
    assert update(track, [(box(100 + 150 * (frame + 47) / FPS, 100), 0.9, 0)], clock.tick())[0] == 2


def test_clock_jumping_back_resets_the_tracker() -> None:
    """A looping bag (or a restarted simulation) takes the clock back: old tracks must not match new frames."""
    track, clock = tracker(), FakeClock(start=50.0)
    for _ in range(10):
        assert update(track, [(box(100, 100), 0.9, 0)], clock.tick())[0] in (0, 1)
    clock.now = 50.0  # back to the start of the recording
    ids = [update(track, [(box(100, 100), 0.9, 0)], clock.tick())[0] for _ in range(3)]
    assert ids == [0, 2, 2]  # a new track, confirmed after min_hits, with an id never used before
    assert track.resets == 1
    clock.tick(0.0)  # the same time again is not a jump
    update(track, [(box(100, 100), 0.9, 0)], clock.now)
    assert track.resets == 1


def test_per_class_association() -> None:
    """A class-1 detection where a class-0 track is predicted starts its own track (per class); with
    per_class off it continues the class-0 track."""
    for per_class, expect_same in ((True, False), (False, True)):
        track, clock = tracker(per_class=per_class), FakeClock()
        first = [update(track, [(box(200, 200), 0.9, 0)], clock.tick())[0] for _ in range(10)]
        second = [update(track, [(box(200, 200), 0.9, 1)], clock.tick())[0] for _ in range(10)]
        if expect_same:
            assert one_id(first[1:]) == one_id(second)
        else:
            assert one_id(first[1:]) != one_id(second[1:])

    track, clock = tracker(), FakeClock()  # a rider and a bike overlapping: each id stays on its class
    rider, bike = [], []
    for frame in range(30):
        x = 100 + 90 * frame / FPS
        dets = [(box(x, 200, 40, 80), 0.8, 0), (box(x + 2, 215, 44, 60), 0.85, 1)]
        order = [1, 0] if frame % 2 else [0, 1]
        ids = update(track, [dets[i] for i in order], clock.tick())
        by = dict(zip(order, ids.tolist()))
        rider.append(by[0])
        bike.append(by[1])
    assert one_id(rider[1:]) != one_id(bike[1:])


def test_fifty_objects_and_empty_frames() -> None:
    rng = np.random.default_rng(0)
    centres = np.stack([np.arange(50) % 10 * 120.0 + 60, np.arange(50) // 10 * 120.0 + 60], 1)
    velocity = rng.uniform(-30, 30, (50, 2))
    track, clock = tracker(), FakeClock()
    history = []
    for frame in range(40):
        now = clock.tick()
        if frame == 20:
            assert update(track, [], now).size == 0  # nothing seen for one frame
            history.append(history[-1])
            continue
        c = centres + velocity * frame / FPS
        history.append(update(track, [(box(x, y, 50, 50), 0.9, 0) for x, y in c], now))
    history_arr = np.array(history)
    assert all(len(set(history_arr[1:, i].tolist())) == 1 for i in range(50))
    assert sorted(history_arr[-1].tolist()) == list(range(1, 51))


def test_settings_and_missing_lapx_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="track_low_score"):
        ByteTracker(TrackerSettings(high_score=0.4, low_score=0.6))
    with pytest.raises(ConfigError, match="track_min_hits"):
        ByteTracker(TrackerSettings(min_hits=0))
    monkeypatch.setitem(sys.modules, "lap", None)  # import lap -> ImportError
    with pytest.raises(ConfigError, match=r"needs lapx.*pip install lapx"):
        ByteTracker()


# -------------------------------------------------------------------------------------- detection head


def detection_spec(threshold: float = 0.5) -> object:
    return parse_spec({
        "task": "detection",
        "input": {"name": "images", "height": 64, "width": 64, "resize": "stretch"},
        "output": {"format": "end_to_end", "tensors": {"detections": "out"}},
        "detection": {"labels": ["cone", "car"], "first_label_id": 0, "score_threshold": threshold,
                      "max_detections": 50},
    })  # fmt: skip


IDENTITY = ImageTransform(src_width=640, src_height=480, scale_x=1.0, scale_y=1.0, pad_x=0.0, pad_y=0.0,
                          crop_top=0.0)


def head_task(values: Optional[Dict[str, object]] = None, clock: Optional[FakeClock] = None) -> DetectionTask:
    defaults = {p.name: list(p.default) if isinstance(p.default, list) else p.default for p in DetectionTask.PARAMS}
    defaults.update(values or {})
    return DetectionTask("detector", detection_spec(), defaults, clock=clock)


def finish(task: DetectionTask, dets: Sequence[Det], now: float) -> Detections:
    raw = RawDetections(np.asarray([d[0] for d in dets], np.float32).reshape(-1, 4),
                        np.asarray([d[1] for d in dets], np.float32), np.asarray([d[2] for d in dets], np.int64))
    return task.finish(raw, IDENTITY, now).result


def test_head_without_tracker_is_unchanged() -> None:
    task = head_task()
    assert task.tracker is None and task.settings.score_threshold == 0.5
    result = finish(task, [(box(100, 100), 0.9, 0)], 1.0)
    assert type(result) is Detections and len(result) == 1


def test_head_with_tracker_lowers_the_parser_threshold_and_publishes_ids() -> None:
    clock = FakeClock()
    task = head_task({"tracker": "bytetrack", "track_low_score": 0.2}, clock)
    assert task.settings.score_threshold == pytest.approx(0.2)  # the parser must hand over low-score boxes
    assert task.publish_threshold == 0.5 and task.tracker.settings.high_score == 0.5
    frames = []
    for frame in range(6):
        score = 0.3 if frame == 3 else 0.9  # one low-score frame: continues the track, published with its id
        dets = [(box(100 + 3 * frame, 100), score, 0), (box(400, 300), 0.25, 1)]  # + a lone low-score car
        frames.append(finish(task, dets, clock.tick()))
    assert isinstance(frames[0], TrackedDetections)
    assert [r.ids for r in frames] == [[""], ["1"], ["1"], ["1"], ["1"], ["1"]]
    assert frames[3].scores.tolist() == [pytest.approx(0.3)] and frames[3].labels == ["cone"]
    assert task.diagnostics(task.finish(RawDetections.empty(), IDENTITY, clock.tick())) == {
        "detections": 0, "tracks": 0, "tracker_resets": 0}

    tracked_only = head_task({"tracker": "bytetrack", "track_publish": "tracked"}, clock)
    first = finish(tracked_only, [(box(10, 10), 0.9, 0)], clock.tick())
    second = finish(tracked_only, [(box(10, 10), 0.9, 0)], clock.tick())
    assert len(first) == 0 and second.ids == ["1"]


def test_live_changes_reach_the_tracker_and_the_parser() -> None:
    task = head_task({"tracker": "bytetrack"})
    values = dict(task.values, score_threshold=0.6, track_low_score=0.05, track_max_age=2.5, track_min_hits=4)
    task.apply(values)
    settings = task.tracker.settings
    assert (settings.high_score, settings.low_score, settings.max_age, settings.min_hits) == (0.6, 0.05, 2.5, 4)
    assert task.settings.score_threshold == pytest.approx(0.05) and task.publish_threshold == 0.6
    task.apply(dict(values, track_high_score=0.8))
    assert task.tracker.settings.high_score == 0.8 and task.publish_threshold == 0.6


def test_tracker_params_are_checked() -> None:
    table = ParamTable({"front": "detection"})
    assert check_value(table.by_name["front.tracker"], "sort")[1] == (
        "front.tracker is 'sort'; expected one of ['none', 'bytetrack']")
    assert not table.by_name["front.tracker"].dynamic and table.by_name["front.track_max_age"].dynamic
    values = {**table.defaults(), "front.track_high_score": 0.3, "front.track_low_score": 0.4}
    reason = cross_check(values, table)
    assert reason is not None and "front.track_low_score (0.4) is above front.track_high_score (0.3)" in reason


def test_overlay_shows_the_track_id(monkeypatch: pytest.MonkeyPatch) -> None:
    import trt_perception.overlay as overlay

    seen: List[List[str]] = []
    monkeypatch.setattr(overlay, "draw_detections", lambda canvas, dets, order, out=None: seen.append(dets.labels))
    task, clock = head_task({"tracker": "bytetrack", "track_min_hits": 1}), FakeClock()
    output = task.finish(RawDetections(np.asarray([box(50, 50)], np.float32), np.asarray([0.9], np.float32),
                                       np.asarray([1])), IDENTITY, clock.tick())
    task.draw(np.zeros((480, 640, 3), np.uint8), output, "bgr")
    assert seen == [["car #1"]]
