"""``end_to_end``: detectors with NMS (or no need for it) inside the graph, one tensor of final detections.

Layouts of role ``detections`` (batch item 0 is read; a rank-2 output has no batch dim):

- [B, K, 6] rows ``x1, y1, x2, y2, score, class``: Ultralytics exports with ``nms=True``, YOLOv10 and YOLO26
  (NMS-free heads) (ultralytics engine/exporter.py, nn/modules/head.py ``v10Detect``/``postprocess``): K is the
  export's ``max_det`` (300), boxes in input pixels, rows past the real detections padded with score 0.
- [K, 7] (or [B, K, 7]) rows ``batch_index, x1, y1, x2, y2, class, score``: YOLOv7 ``export.py --end2end``
  for ONNX Runtime (its ``ONNX_ORT`` module: ``cat([X, boxes, category, score], 1)``; note class BEFORE score).
  Rows of other images (batch index != 0) are dropped.

Parameters: ``normalized`` (false: boxes in input pixels; true: in 0..1 of the input width/height) and
``box_format`` (xyxy, default, or cxcywh for graphs that end before the corner conversion).

Per frame: rows with score <= 0 or a negative class are padding and dropped; then ``nms.finalize`` applies the
run-time score threshold (score >= threshold kept, as every format), the class allow-list, the sort and
``max_detections``. No NMS is run here: the graph did it (its IoU threshold is baked in; ``iou_threshold`` in the
spec and node params has no effect on this format). The class id is the model's class number (0-based for
Ultralytics and YOLOv7: ``detection.labels`` lists one label per class with ``first_label_id: 0``). Boxes come
out in model-input pixels; the pipeline undoes the letterbox.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

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
)
from trt_perception.outputs.nms import finalize
from trt_perception.spec import ModelSpec

BOX_FORMATS = ("xyxy", "cxcywh")
DEFAULTS: Dict[str, Any] = {"normalized": False, "box_format": "xyxy"}
# columns of (x1/cx, y1/cy, x2/w, y2/h), score, class per row width
COLUMNS = {6: (slice(0, 4), 4, 5), 7: (slice(1, 5), 6, 5)}


class EndToEndParser(OutputParser):
    """[B, K, 6] x1, y1, x2, y2, score, class (or YOLOv7's [K, 7] with a batch-index column); no NMS."""

    format = "end_to_end"
    roles = ("detections",)

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        check_roles(spec, self.roles)
        params = check_params(spec, DEFAULTS)
        self.normalized = param_bool(params, "normalized")
        self.box_format = param_choice(params, "box_format", BOX_FORMATS)
        self.scale = (float(spec.input.width), float(spec.input.height)) if self.normalized else (1.0, 1.0)

    def check_outputs(self, outputs: Sequence[TensorSpec]) -> None:
        tensor = find_output(self.spec, outputs, "detections")
        shape = check_tensor(
            self.spec, tensor, "detections",
            "[B, K, 6] rows x1, y1, x2, y2, score, class (or [K, 7] rows batch, x1, y1, x2, y2, class, score)",
            (2, 3), None, ("float32", "float16"),
        )  # fmt: skip
        width = shape[-1]
        if known(width) and int(width) not in COLUMNS:
            raise SpecError(
                f"model output {tensor.name!r} (output.tensors.detections, format 'end_to_end') has {width} "
                "values per row; the format expects 6 (x1, y1, x2, y2, score, class: Ultralytics nms=True, "
                "YOLOv10, YOLO26) or 7 (batch, x1, y1, x2, y2, class, score: YOLOv7 --end2end for ONNX Runtime); "
                "fix: map detections to the right tensor or pick the output.format this model speaks "
                "(raw heads: yolo, yolov5, yolox; trt-perception inspect)"
            )

    def parse(self, outputs: Mapping[str, np.ndarray], settings: DetectionSettings) -> RawDetections:
        name = self.tensor("detections")
        expected = "[B, K, 6] rows x1, y1, x2, y2, score, class or [K, 7] rows batch, x1, y1, x2, y2, class, score"
        raw = frame_output(self.spec, outputs, "detections", expected, 2, rows_may_be_empty=True)
        width = int(raw.shape[-1])
        if width not in COLUMNS:
            raise frame_error(self.spec, "detections", np.asarray(outputs[name]), expected)
        # 6: batch item 0; 7: every image's rows, the batch column says which are image 0's
        table = raw if width == 6 else np.asarray(outputs[name]).reshape(-1, width)
        box_columns, score_column, class_column = COLUMNS[width]
        scores = table[:, score_column]
        classes = table[:, class_column]
        keep = (scores > 0) & (classes >= 0)
        if width == 7:
            keep &= table[:, 0] == 0
        rows = table[keep]
        boxes = np.asarray(rows[:, box_columns], np.float32)
        if self.box_format == "cxcywh":
            with np.errstate(over="ignore", invalid="ignore"):  # inf sizes: dropped by finalize
                half = boxes[:, 2:4] * 0.5
                boxes = np.concatenate([boxes[:, 0:2] - half, boxes[:, 0:2] + half], axis=1)
        return finalize(boxes, rows[:, score_column], rows[:, class_column], settings, self.scale)
