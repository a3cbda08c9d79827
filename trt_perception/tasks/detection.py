"""Detection: boxes with classes and scores -> ``vision_msgs/Detection2DArray`` (+ an overlay image).

Parsers (``outputs/``: ssd_raw, nms_trt, efficient_nms, batched_nms, yolo, yolov5, yolox, end_to_end,
boxes_scores) give xyxy boxes in model-input pixels; here they go back to source pixels (resize, letterbox and
crop undone) and get their labels. Thresholds, NMS IoU, the detection cap and the class allow-list come from
the spec and may be overridden per head, live.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception.errors import TrtPerceptionError
from trt_perception.outputs.base import DetectionSettings, RawDetections
from trt_perception.params import BOOL, DOUBLE, INT, STRING, STRING_LIST, USE_SPEC, live
from trt_perception.preprocess import ImageTransform
from trt_perception.results import Detections
from trt_perception.spec import DetectionSpec
from trt_perception.tasks.base import HeadOutput, Task, Topic


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
    )

    def __init__(self, head: str, spec: Any, values: Mapping[str, Any], clock: Any = None) -> None:
        super().__init__(head, spec, values, clock)
        self._settings = DetectionSettings.from_spec(spec.detection)
        self._label_cache: Dict[int, str] = {}
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
        ).allowed_class_ids()

    def check_change(self, values: Mapping[str, Any]) -> Optional[str]:
        try:
            self._allowed(values.get("classes") or [])
        except TrtPerceptionError as exc:
            return f"{self.head}.classes: {exc}"
        return None

    def apply(self, values: Mapping[str, Any]) -> None:
        """Overrides win; a param put back to its sentinel restores the spec's value."""
        super().apply(values)
        spec = self.spec.detection
        update = self.overrides(values)
        settings = self._settings
        settings.score_threshold = update.get("score_threshold", spec.score_threshold)
        settings.iou_threshold = update.get("iou_threshold", spec.iou_threshold)
        settings.max_detections = update.get("max_detections", spec.max_detections)
        try:
            settings.allowed_class_ids = self._allowed(update.get("classes", list(spec.classes)))
        except TrtPerceptionError as exc:
            from trt_perception.errors import ConfigError

            raise ConfigError(f"{self.head}.classes: {exc}") from exc

    @property
    def settings(self) -> DetectionSettings:
        return self._settings

    # ------------------------------------------------------------------------------------- per frame

    def finish(self, parsed: RawDetections, transform: ImageTransform, now: float) -> HeadOutput:
        boxes = transform.boxes_to_source(parsed.boxes)
        result = Detections(boxes, parsed.scores, parsed.class_ids, self._labels(parsed.class_ids))
        return HeadOutput(self.head, self.name, result)

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

        return draw_detections(canvas, output.result, order, out=canvas)

    def diagnostics(self, output: Optional[HeadOutput]) -> Dict[str, Any]:
        return {"detections": len(output.result)} if output is not None else {}
