"""``efficient_nms`` and ``batched_nms``: outputs of TensorRT's EfficientNMS_TRT and BatchedNMS_TRT plugins.

Both give a per-image count and fixed-size box/score/class tensors whose first ``count`` rows are valid
(TensorRT plugin READMEs at v8.6.1). Outputs are read by tensor name, batch item 0; leading batch dims of
any size are accepted (implicit-batch engines drop them, explicit ones keep them).

- EfficientNMS_TRT: ``num_detections`` [B,1] int32, ``detection_boxes`` [B,N,4] corners,
  ``detection_scores`` [B,N], ``detection_classes`` [B,N] int32. Its boxes are in the coordinate space and
  order of its box input (corners out even for center-size input). ``trt-perception convert --nms efficient``
  feeds it normalized anchors, so its boxes are normalized: hence ``normalized: true`` by default; a graph
  that feeds pixel boxes needs ``normalized: false``; a TF-ordered graph (y first) needs ``box_order: yxyx``.
- BatchedNMS_TRT: ``num_detections`` [B] or [B,1] int32, ``nmsed_boxes`` [B,K,4], ``nmsed_scores`` [B,K],
  ``nmsed_classes`` [B,K] float32 (rounded to int here). Boxes normalized unless the plugin ran with
  ``isNormalized=false``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

from trt_perception.backends.base import TensorSpec
from trt_perception.outputs.base import DetectionSettings, OutputParser, RawDetections
from trt_perception.outputs.checks import (
    FLOAT_KINDS,
    INT_KINDS,
    check_params,
    check_roles,
    check_tensor,
    find_output,
    frame_count,
    frame_error,
    frame_output,
    param_bool,
    param_choice,
    same_dim,
)
from trt_perception.outputs.nms import finalize
from trt_perception.spec import ModelSpec

BOX_ORDERS = ("xyxy", "yxyx")
_YXYX_TO_XYXY = np.array([1, 0, 3, 2], np.intp)


class _PluginNmsParser(OutputParser):
    """Shared reading of count + boxes + scores + classes outputs; subclasses say how classes are typed."""

    roles = ("num_detections", "boxes", "scores", "classes")
    defaults: Dict[str, Any] = {"normalized": True, "box_order": "xyxy"}
    class_dtypes: Tuple[str, ...] = INT_KINDS
    class_text = "int32 class ids"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        check_roles(spec, self.roles)
        params = check_params(spec, self.defaults)
        self.normalized = param_bool(params, "normalized")
        self.box_order = param_choice(params, "box_order", BOX_ORDERS)
        self.scale = (float(spec.input.width), float(spec.input.height)) if self.normalized else (1.0, 1.0)

    def check_outputs(self, outputs: Sequence[TensorSpec]) -> None:
        count = find_output(self.spec, outputs, "num_detections")
        boxes = find_output(self.spec, outputs, "boxes")
        scores = find_output(self.spec, outputs, "scores")
        classes = find_output(self.spec, outputs, "classes")
        check_tensor(
            self.spec, count, "num_detections", "[B, 1] or [B] int32 detection counts", (1, 2), 1, INT_KINDS
        )
        b_shape = check_tensor(self.spec, boxes, "boxes", "[B, N, 4] boxes", (2, 3), 4)
        s_shape = check_tensor(self.spec, scores, "scores", "[B, N] scores", (1, 2))
        c_shape = check_tensor(
            self.spec, classes, "classes", f"[B, N] {self.class_text}", (1, 2), None, self.class_dtypes
        )
        same_dim(
            self.spec,
            "the number of detection rows N",
            [
                (f"{boxes.name} (boxes)", b_shape[-2]),
                (f"{scores.name} (scores)", s_shape[-1]),
                (f"{classes.name} (classes)", c_shape[-1]),
            ],
        )

    def parse(self, outputs: Mapping[str, np.ndarray], settings: DetectionSettings) -> RawDetections:
        spec = self.spec
        boxes = frame_output(spec, outputs, "boxes", "[B, N, 4] boxes", 2, 4, rows_may_be_empty=True)
        rows = f"[B, N] with N >= the detection count (boxes give {boxes.shape[0]} rows)"
        scores = frame_output(spec, outputs, "scores", f"{rows} scores", 1, rows_may_be_empty=True)
        classes = frame_output(spec, outputs, "classes", f"{rows} {self.class_text}", 1, rows_may_be_empty=True)
        count_array = frame_output(spec, outputs, "num_detections", "[B, 1] or [B] detection counts", 0)
        count = frame_count(spec, "num_detections", count_array, boxes.shape[0], "boxes",
                            outputs[self.tensor("num_detections")])
        for role, array in (("scores", scores), ("classes", classes)):
            if array.shape[0] < count:
                raise frame_error(spec, role, np.asarray(outputs[self.tensor(role)]), rows)
        boxes = boxes[:count]
        if self.box_order == "yxyx":
            boxes = boxes[:, _YXYX_TO_XYXY]
        return finalize(boxes, scores[:count], classes[:count], settings, self.scale)


class EfficientNmsParser(_PluginNmsParser):
    """EfficientNMS_TRT outputs (int32 classes)."""

    format = "efficient_nms"


class BatchedNmsParser(_PluginNmsParser):
    """BatchedNMS_TRT outputs (float32 class ids, rounded to the nearest integer by ``finalize``)."""

    format = "batched_nms"
    class_dtypes = FLOAT_KINDS + INT_KINDS
    class_text = "float32 class ids"
