"""``boxes_scores``: decoded boxes [B, N, 4] + class scores [B, N, C], thresholded and NMS'd on the CPU.

For graphs that end after box decoding and the score activation but before NMS, e.g. the
Ultra-Light-Fast-Generic-Face-Detector ONNX models (``scores`` [1, N, 2] after Softmax, ``boxes`` [1, N, 4]
normalized corners), SSD/RetinaNet exports cut before their NMS, or a YOLO export split in two tensors.

Roles: ``boxes`` [B, N, 4] (also [N, 4] and [B, N, 1, 4]) and ``scores`` [B, N, C] (also [N, C]); batch item 0
is read. Parameters:

- ``box_format``: xyxy (default), cxcywh (center, size) or yxyx (TensorFlow's ymin, xmin, ymax, xmax);
- ``normalized``: true (default: 0..1 of the input width/height) or false (input pixels);
- ``background_class``: null (default) or the score column of the background class, which never yields a
  detection;
- ``class_agnostic``: false (default: NMS per class) or true (NMS across classes).

Scores are used as they are (probabilities: apply Softmax/Sigmoid in the graph). Every (box, class) pair whose
score reaches the threshold is a candidate, as in SSD-style post-processing (the face detector's own
``predict``, TF's multiclass NMS), so one box may yield detections of two classes. The class id is the score's
COLUMN INDEX, also with a background column (ids keep their column index: with background_class 0 the first
object class is id 1), so ``detection.labels`` lists one label per column from ``first_label_id: 0`` (or
leaves the background out with ``first_label_id: 1``).

Per frame, the threshold mask over N x C is the only full pass; boxes are converted for the candidates only,
then OpenCV's batched NMS (``yolo.prefix_nms``) and ``nms.finalize`` (threshold, allow-list, sort, cap). Boxes
come out in model-input pixels; the pipeline undoes the letterbox.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import SpecError
from trt_perception.outputs.base import DetectionSettings, OutputParser, RawDetections
from trt_perception.outputs.checks import (
    check_params,
    check_roles,
    check_tensor,
    find_output,
    frame_error,
    frame_output,
    known,
    param_bool,
    param_choice,
    param_optional_int,
    same_dim,
)
from trt_perception.outputs.columns import ScoreColumns
from trt_perception.outputs.nms import finalize
from trt_perception.outputs.yolo import prefix_nms
from trt_perception.spec import ModelSpec

BOX_FORMATS = ("xyxy", "cxcywh", "yxyx")
DEFAULTS: Dict[str, Any] = {
    "box_format": "xyxy",
    "normalized": True,
    "background_class": None,
    "class_agnostic": False,
}


class BoxesScoresParser(OutputParser):
    """Decoded ``boxes`` [B, N, 4] and ``scores`` [B, N, C]; class-wise (or agnostic) NMS on the CPU."""

    format = "boxes_scores"
    roles = ("boxes", "scores")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        check_roles(spec, self.roles)
        params = check_params(spec, DEFAULTS)
        self.box_format = param_choice(params, "box_format", BOX_FORMATS)
        self.normalized = param_bool(params, "normalized")
        self.background_class = param_optional_int(params, "background_class", 0)
        self.class_agnostic = param_bool(params, "class_agnostic")
        scale = [spec.input.width, spec.input.height] * 2 if self.normalized else [1.0] * 4
        self._scale = np.array(scale, np.float32)
        self._mask: Optional[np.ndarray] = None
        self.columns = ScoreColumns(self.background_class)

    # --------------------------------------------------------------------------------------- load time

    def check_outputs(self, outputs: Sequence[TensorSpec]) -> None:
        boxes = find_output(self.spec, outputs, "boxes")
        scores = find_output(self.spec, outputs, "scores")
        b_shape = check_tensor(
            self.spec, boxes, "boxes", f"[B, N, 4] decoded boxes ({self.box_format})", (2, 3, 4), 4
        )
        s_shape = check_tensor(self.spec, scores, "scores", "[B, N, C] class scores", (2, 3))
        if len(b_shape) == 4 and known(b_shape[2]) and int(b_shape[2]) != 1:
            raise SpecError(
                f"model output {boxes.name!r} (output.tensors.boxes) has shape {list(b_shape)}: one box per "
                "class; boxes_scores expects one shared box per row ([B, N, 4] or [B, N, 1, 4]); fix: map boxes "
                "to the shared-box tensor"
            )
        same_dim(
            self.spec,
            "the number of boxes N",
            [(f"{boxes.name} (boxes)", b_shape[1] if len(b_shape) == 4 else b_shape[-2]),
             (f"{scores.name} (scores)", s_shape[-2])],
        )  # fmt: skip
        self.columns.check(scores.name, s_shape[-1])

    # ---------------------------------------------------------------------------------------- per frame

    def parse(self, outputs: Mapping[str, np.ndarray], settings: DetectionSettings) -> RawDetections:
        with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN outputs: dropped by the NMS and finalize
            return self._parse(outputs, settings)

    def _parse(self, outputs: Mapping[str, np.ndarray], settings: DetectionSettings) -> RawDetections:
        spec = self.spec
        scores = frame_output(spec, outputs, "scores", "[B, N, C] class scores", 2, rows_may_be_empty=True)
        count, classes = int(scores.shape[0]), int(scores.shape[1])
        boxes_text = f"[B, N, 4] or [B, N, 1, 4] boxes, N = {count} as the scores give"
        frame_output(spec, outputs, "boxes", boxes_text, 2, 4, rows_may_be_empty=True)
        raw_boxes = np.asarray(outputs[self.tensor("boxes")])
        if raw_boxes.size < count * 4:
            raise frame_error(
                spec, "boxes", raw_boxes, boxes_text, "map output.tensors to the tensors of one detection head"
            )
        boxes_in = raw_boxes.reshape(-1, 4)[:count]  # batch item 0
        if self._mask is None or self._mask.shape != scores.shape:
            self._mask = np.empty(scores.shape, bool)
        np.greater_equal(scores, settings.score_threshold, out=self._mask)
        rows, cols = np.divmod(np.flatnonzero(self._mask), classes)
        keep = self.columns(classes, settings.allowed_class_ids)[cols]
        if not keep.all():
            rows, cols = rows[keep], cols[keep]
        if rows.shape[0] == 0:
            return RawDetections.empty()
        candidate_scores = scores[rows, cols].astype(np.float32)
        boxes = self.decode(boxes_in[rows])
        nms_classes = np.zeros_like(cols) if self.class_agnostic else cols
        kept = prefix_nms(boxes, candidate_scores, nms_classes, settings.iou_threshold, settings.max_detections)
        return finalize(boxes[kept], candidate_scores[kept], cols[kept], settings)

    def decode(self, boxes: np.ndarray) -> np.ndarray:
        """(K, 4) boxes in ``box_format`` -> xyxy in model-input pixels."""
        boxes = np.asarray(boxes, np.float32)
        if self.box_format == "yxyx":
            boxes = boxes[:, [1, 0, 3, 2]]
        elif self.box_format == "cxcywh":
            half = boxes[:, 2:4] * 0.5
            boxes = np.concatenate([boxes[:, 0:2] - half, boxes[:, 0:2] + half], axis=1)
        else:
            boxes = boxes.copy()
        boxes *= self._scale
        return boxes
