"""Detection: boxes with classes and scores -> ``vision_msgs/Detection2DArray`` (+ an overlay image).

Parsers (``outputs/``: ssd_raw, nms_trt, efficient_nms, batched_nms, yolo, yolov5, yolox, end_to_end,
boxes_scores) give xyxy boxes in model-input pixels; here they go back to source pixels (resize, letterbox and
crop undone) and get their labels. Thresholds, NMS IoU, the detection cap and the class allow-list come from
the spec and may be overridden per head, live.

Tracking (``<head>.tracker: bytetrack``, ``trt_perception/tracking.py``): ByteTrack needs the boxes BELOW the
head's score threshold for its second association, so while a tracker runs the parser's threshold is lowered
to ``track_low_score`` and this task filters what it publishes itself: every detection at or above
``score_threshold`` (what the head publishes without a tracker), plus the low-score detections that continue a
confirmed track; ``track_publish: tracked`` keeps only those on a confirmed track. Each published detection
carries its track id ('' while its track is not confirmed) in ``Detection2D.id``. Tracks age on the clock the
head is given (``now``: the node's ROS clock, the bag clock in replay), so frames dropped by the latest-frame
policy age them by the time that passed, and a clock that jumps back (a looping bag) starts over.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception.errors import ConfigError, TrtPerceptionError
from trt_perception.outputs.base import DetectionSettings, RawDetections
from trt_perception.params import BOOL, DOUBLE, INT, STRING, STRING_LIST, USE_SPEC, ParamDef, live
from trt_perception.preprocess import ImageTransform
from trt_perception.results import Detections
from trt_perception.spec import DetectionSpec
from trt_perception.tasks.base import HeadOutput, Task, Topic

TRACKERS = ("none", "bytetrack")


def class_item(value: Union[int, str]) -> Union[int, str]:
    """Allow-list entries from ROS string arrays: '3' means class id 3, 'cone' a label."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


class DetectionTask(Task):
    name = "detection"
    PARAMS = (
        live(
            "score_threshold",
            USE_SPEC,
            DOUBLE,
            "minimum detection score; -1 = the model spec's value",
            range=(0.0, 1.0),
            special=USE_SPEC,
        ),
        live(
            "iou_threshold",
            USE_SPEC,
            DOUBLE,
            "NMS IoU threshold (formats decoded on the CPU); -1 = the model spec's value",
            range=(0.0, 1.0),
            special=USE_SPEC,
        ),
        live("max_detections", 0, INT, "most detections per frame; 0 = the model spec's value", range=(0, 1000)),
        live(
            "classes",
            [],
            STRING_LIST,
            "class allow-list by label ('cone') or id ('3'); empty = the spec's allow-list (or all classes)",
            ints_ok=True,
        ),
        live(
            "class_id_mode",
            "label",
            STRING,
            "what results[].hypothesis.class_id carries: label = the label text, id = the numeric class id",
            choices=("label", "id"),
        ),
        live(
            "publish_overlay",
            True,
            BOOL,
            "publish <detections>/overlay (annotated image); drawn only while someone subscribes",
        ),
        ParamDef(
            "tracker",
            "none",
            STRING,
            "multi-object tracker giving each detection a stable id in Detection2D.id: none or bytetrack "
            "(ByteTrack, needs lapx)",
            choices=TRACKERS,
        ),
        live(
            "track_high_score",
            USE_SPEC,
            DOUBLE,
            "tracker: detections at or above this score are matched first and may start tracks; "
            "-1 = the head's score threshold",
            range=(0.0, 1.0),
            special=USE_SPEC,
        ),
        live(
            "track_low_score",
            0.1,
            DOUBLE,
            "tracker: detections between this and track_high_score only continue existing tracks (the parser's "
            "threshold is lowered to it while a tracker runs)",
            range=(0.0, 1.0),
        ),
        live("track_iou", 0.2, DOUBLE, "tracker: least IoU between a track's predicted box and its detection",
             range=(0.01, 1.0)),
        live(
            "track_max_age",
            1.0,
            DOUBLE,
            "tracker: seconds (node or bag clock) a track survives without a detection before it is dropped",
            range=(0.0, 3600.0),
        ),
        live("track_min_hits", 2, INT, "tracker: consecutive processed frames with a match before a track gets "
             "its id (1 = at once)", range=(1, 100)),
        live("track_per_class", True, BOOL, "tracker: match detections only to tracks of their own class"),
        live(
            "track_publish",
            "all",
            STRING,
            "tracker: all = every detection the head would publish (id '' until its track is confirmed) plus "
            "low-score ones continuing a track; tracked = only detections on a confirmed track",
            choices=("all", "tracked"),
        ),
    )

    def __init__(self, head: str, spec: Any, values: Mapping[str, Any], clock: Any = None) -> None:
        super().__init__(head, spec, values, clock)
        self._settings = DetectionSettings.from_spec(spec.detection)
        self._label_cache: Dict[int, str] = {}
        self.publish_threshold = self._settings.score_threshold
        self.tracker: Any = None
        if self.values.get("tracker", "none") == "bytetrack":
            from trt_perception.tracking import ByteTracker

            try:
                self.tracker = ByteTracker(self._tracker_settings(self.values, self.publish_threshold))
            except ConfigError as exc:
                raise ConfigError(f"{head}.tracker: {exc}") from None
        self.apply(self.values)

    # ---------------------------------------------------------------------------------------- params

    @staticmethod
    def overrides(values: Mapping[str, Any]) -> Dict[str, Any]:
        """Param values that override the spec (sentinels -1, 0 and [] mean 'the spec decides')."""
        update: Dict[str, Any] = {}
        if values.get("score_threshold", USE_SPEC) != USE_SPEC:
            update["score_threshold"] = float(values["score_threshold"])
        if values.get("iou_threshold", USE_SPEC) != USE_SPEC:
            update["iou_threshold"] = float(values["iou_threshold"])
        if values.get("max_detections", 0):
            update["max_detections"] = int(values["max_detections"])
        if values.get("classes"):
            update["classes"] = list(values["classes"])
        return update

    def _allowed(self, classes: Sequence[Union[int, str]]) -> Optional[frozenset]:
        spec = self.spec.detection
        return DetectionSpec(
            labels=spec.labels, first_label_id=spec.first_label_id, classes=tuple(class_item(c) for c in classes)
        ).allowed_class_ids(f"{self.head}.classes")

    @classmethod
    def check_values(cls, head: str, values: Mapping[str, Any]) -> Optional[str]:
        high = values.get("track_high_score", USE_SPEC)
        low = values.get("track_low_score", 0.1)
        if high != USE_SPEC and low > high:
            return (
                f"{head}.track_low_score ({low:g}) is above {head}.track_high_score ({high:g}); expected low <= high; "
                f"fix: lower {head}.track_low_score or set {head}.track_high_score to -1 (the score threshold)"
            )
        return None

    @staticmethod
    def _tracker_settings(values: Mapping[str, Any], publish_threshold: float) -> Any:
        """The tracker's settings from the head's params; the high score defaults to the publish threshold."""
        from trt_perception.tracking import TrackerSettings

        high = values.get("track_high_score", USE_SPEC)
        high = publish_threshold if high == USE_SPEC else float(high)
        return TrackerSettings(
            high_score=high,
            low_score=min(float(values.get("track_low_score", 0.1)), high),
            iou=float(values.get("track_iou", 0.2)),
            max_age=float(values.get("track_max_age", 1.0)),
            min_hits=int(values.get("track_min_hits", 2)),
            per_class=bool(values.get("track_per_class", True)),
        )

    def check_change(self, values: Mapping[str, Any]) -> Optional[str]:
        try:
            self._allowed(values.get("classes") or [])
        except TrtPerceptionError as exc:
            return str(exc)
        return None

    def apply(self, values: Mapping[str, Any]) -> None:
        """Overrides win; a param put back to its sentinel restores the spec's value."""
        super().apply(values)
        spec = self.spec.detection
        update = self.overrides(values)
        settings = self._settings
        self.publish_threshold = settings.score_threshold = update.get("score_threshold", spec.score_threshold)
        if getattr(self, "tracker", None) is not None:
            track = self._tracker_settings(values, self.publish_threshold)
            self.tracker.settings = track
            settings.score_threshold = min(self.publish_threshold, track.low_score)  # the low-score pass
        settings.iou_threshold = update.get("iou_threshold", spec.iou_threshold)
        settings.max_detections = update.get("max_detections", spec.max_detections)
        try:
            settings.allowed_class_ids = self._allowed(update.get("classes", list(spec.classes)))
        except TrtPerceptionError as exc:
            raise ConfigError(str(exc)) from exc

    @property
    def settings(self) -> DetectionSettings:
        return self._settings

    # ------------------------------------------------------------------------------------- per frame

    def finish(self, parsed: RawDetections, transform: ImageTransform, now: float) -> HeadOutput:
        boxes = transform.boxes_to_source(parsed.boxes)
        if self.tracker is not None:
            return HeadOutput(self.head, self.name, self._track(boxes, parsed.scores, parsed.class_ids, now))
        result = Detections(boxes, parsed.scores, parsed.class_ids, self._labels(parsed.class_ids))
        return HeadOutput(self.head, self.name, result)

    def _track(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, now: float) -> Detections:
        """Track every detection the parser gave (down to track_low_score); publish as track_publish says."""
        from trt_perception.tracking import TrackedDetections

        ids = self.tracker.update(boxes, scores, class_ids, now)
        keep = ids > 0
        if self.values.get("track_publish", "all") == "all":
            keep |= np.asarray(scores) >= self.publish_threshold
        index = np.flatnonzero(keep)
        class_ids = np.asarray(class_ids)[index]
        return TrackedDetections(np.asarray(boxes)[index], np.asarray(scores)[index], class_ids,
                                 self._labels(class_ids), ids=[str(i) if i else "" for i in ids[index].tolist()])

    def _labels(self, class_ids: np.ndarray) -> List[str]:
        cache = self._label_cache
        labels = []
        for class_id in class_ids.tolist():  # at most max_detections entries
            label = cache.get(class_id)
            if label is None:
                label = cache[class_id] = self.spec.detection.label_for(class_id)
            labels.append(label)
        return labels

    # ------------------------------------------------------------------------------------- messages

    def topics(self, prefix: str) -> List[Topic]:
        return [
            Topic("detections", f"{prefix}detections", "Detection2DArray"),
            Topic("overlay", f"{prefix}detections/overlay", "Image", overlay=True),
        ]

    def messages(self, types: Any, header: Any, output: HeadOutput) -> Iterator[Tuple[str, Any]]:
        from trt_perception.messages import detection_array

        yield "detections", detection_array(types, header, output.result, self.values.get("class_id_mode", "label"))

    def draw(self, canvas: np.ndarray, output: HeadOutput, order: str) -> np.ndarray:
        from trt_perception.overlay import draw_detections

        result = output.result
        ids = getattr(result, "ids", None)
        if ids:  # the track id beside the label: "cone #3 0.87"
            labels = [f"{label or c} #{i}" if i else label for label, c, i in
                      zip(result.labels, result.class_ids.tolist(), ids)]
            result = Detections(result.boxes, result.scores, result.class_ids, labels)
        return draw_detections(canvas, result, order, out=canvas)

    def diagnostics(self, output: Optional[HeadOutput]) -> Dict[str, Any]:
        if output is None:
            return {}
        values: Dict[str, Any] = {"detections": len(output.result)}
        if self.tracker is not None:
            values["tracks"] = self.tracker.confirmed
            values["tracker_resets"] = self.tracker.resets
        return values
