"""``nms_trt``: the NMS_TRT plugin outputs of legacy UFF SSD engines (tensorrt_demos, jetson-inference).

``NMS`` is (1, keepTopK, 7) per image, rows ``[image_id, label, conf, xmin, ymin, xmax, ymax]`` normalized,
sorted by confidence, unused rows label -1 and conf 0. ``NMS_1`` holds the kept count as int32 BITS in a
tensor that TensorRT declares float32 (TensorRT plugin/nmsPlugin): its bytes are reinterpreted with
``.view(np.int32)``, never cast (a cast of the bits of 3 gives 4.2e-45, i.e. 0 detections). Implicit-batch
engines may hand the tensors over as (1, K, 7), (K, 7) or (B, 1, K, 7): batch item 0 is read in every case.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import OutputError, SpecError
from trt_perception.outputs.base import DetectionSettings, OutputParser, RawDetections
from trt_perception.outputs.checks import (
    check_params,
    check_roles,
    check_tensor,
    find_output,
    frame_count,
    frame_error,
    frame_output,
    known,
    param_bool,
)
from trt_perception.outputs.nms import finalize
from trt_perception.spec import ModelSpec

ROW_LAYOUT = "[image_id, label, conf, xmin, ymin, xmax, ymax]"


def count_from_bits(array: np.ndarray) -> int:
    """The detection count of batch item 0 from an NMS_1-style tensor: float32 bits read as int32."""
    array = np.asarray(array)
    first = np.ascontiguousarray(array.reshape(-1)[:1])
    if first.size and first.dtype == np.float32:
        return int(first.view(np.int32)[0])
    if first.size and first.dtype.kind in "iu":
        return int(first[0])
    raise OutputError(
        f"the nms_trt count tensor gave shape {list(array.shape)} {array.dtype}; expected one float32 holding "
        "int32 bits (or int32) per image, [1, 1, 1]; fix: map output.tensors.count to the NMS_1 output"
    )


class NmsTrtParser(OutputParser):
    """Legacy UFF SSD engine outputs: ``detections`` (NMS) and ``count`` (NMS_1)."""

    format = "nms_trt"
    roles = ("detections", "count")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        check_roles(spec, self.roles)
        params = check_params(spec, {"normalized": True})
        self.normalized = param_bool(params, "normalized")
        self.scale = (float(spec.input.width), float(spec.input.height)) if self.normalized else (1.0, 1.0)

    def check_outputs(self, outputs: Sequence[TensorSpec]) -> None:
        detections = find_output(self.spec, outputs, "detections")
        count = find_output(self.spec, outputs, "count")
        check_tensor(self.spec, detections, "detections", f"[1, K, 7] rows {ROW_LAYOUT}", (2, 3, 4), 7)
        shape = check_tensor(
            self.spec,
            count,
            "count",
            "[1, 1, 1] float32 holding the int32 count bits",
            (1, 2, 3, 4),
            None,
            ("float32", "int32"),
        )
        if any(known(d) and int(d) != 1 for d in shape[1:]):
            raise SpecError(
                f"model output {count.name!r} (output.tensors.count) has shape {list(shape)}; the nms_trt "
                "format expects one count per image ([1, 1, 1]); fix: map count to the NMS_1 output"
            )

    def parse(self, outputs: Mapping[str, np.ndarray], settings: DetectionSettings) -> RawDetections:
        rows = frame_output(
            self.spec, outputs, "detections", f"[1, K, 7] rows {ROW_LAYOUT}", 2, 7, rows_may_be_empty=True
        )
        count_text = "[1, 1, 1] float32 holding the int32 count bits (or int32)"
        count_array = frame_output(self.spec, outputs, "count", count_text, 0)
        if count_array.dtype != np.float32 and count_array.dtype.kind not in "iu":
            raise frame_error(self.spec, "count", np.asarray(outputs[self.tensor("count")]), count_text)
        count = frame_count(self.spec, "count", count_from_bits(count_array), rows.shape[0], "detections",
                            outputs[self.tensor("count")])
        rows = rows[:count]
        rows = rows[rows[:, 1] >= 0]  # unused rows carry label -1 (NaN labels fail the comparison too)
        return finalize(rows[:, 3:7], rows[:, 2], rows[:, 1], settings, self.scale)
