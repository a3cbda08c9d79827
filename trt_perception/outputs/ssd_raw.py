"""``ssd_raw``: undecoded SSD heads (class scores + box regression), decoded and NMS'd on the CPU.

Per frame, cost is driven by the few (anchor, class) pairs above the score threshold, not by the anchor
matrix: threshold first (on logits for sigmoid; for softmax against a bound from one column, since
logsumexp(row) >= any entry, then exact probabilities on the candidate rows only), then the global
``pre_nms_top_k``, then decode only the survivors, then OpenCV's batched NMS. The threshold mask is
preallocated once per output shape. Softmax is fastest with a background class (its column is the bound).

Box decoding (TF OD API ``faster_rcnn_box_coder``, Caffe SSD ``CENTER_SIZE``), with (dx, dy, dw, dh) the
regression in x/y order and v the variances::

    cx = acx + dx * vx * aw        w = aw * exp(dw * vw)
    cy = acy + dy * vy * ah        h = ah * exp(dh * vh)

TF's scale factors (10, 10, 5, 5) are variances (0.1, 0.1, 0.2, 0.2).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import SpecError
from trt_perception.outputs.anchors import grid_anchors, load_anchor_file
from trt_perception.outputs.base import DetectionSettings, OutputParser, RawDetections
from trt_perception.outputs.checks import (
    check_params,
    check_roles,
    check_tensor,
    find_output,
    frame_error,
    frame_output,
    is_number,
    known,
    param_choice,
    param_int,
    param_numbers,
    param_optional_int,
    same_dim,
)
from trt_perception.outputs.columns import ScoreColumns
from trt_perception.outputs.nms import batched_nms, finalize, finalize_frames
from trt_perception.spec import ModelSpec

ACTIVATIONS = ("sigmoid", "softmax", "none")
BOX_ORDERS = ("xy", "yx")
DEFAULTS: Dict[str, Any] = {
    "anchors": None,
    "variances": [0.1, 0.1, 0.2, 0.2],
    "box_order": "xy",
    "score_activation": "sigmoid",
    "background_class": 0,
    "pre_nms_top_k": 400,
}
GRID_DEFAULTS: Dict[str, Any] = {
    "feature_maps": None,
    "min_scale": 0.2,
    "max_scale": 0.95,
    "aspect_ratios": [1.0, 2.0, 0.5, 3.0, 0.3333],
    "reduce_boxes_in_lowest_layer": True,
    "interpolated_scale_aspect_ratio": 1.0,
    "scales": None,
}
ANCHORS_EXAMPLE = (
    "{file: anchors.npy} (normalized cx, cy, w, h per anchor) or {grid: {feature_maps: [19, 10, 5, 3, 2, 1], "
    "min_scale: 0.2, max_scale: 0.95, aspect_ratios: [1.0, 2.0, 0.5, 3.0, 0.3333]}}"
)


def _grid_anchors_from_param(grid: Any, spec: ModelSpec) -> np.ndarray:
    key = "output.anchors.grid"
    if not isinstance(grid, Mapping):
        raise SpecError(f"{key} is {grid!r}; expected a mapping such as {ANCHORS_EXAMPLE}")
    for name in sorted(set(grid) - set(GRID_DEFAULTS)):
        raise SpecError(
            f"{key}.{name} = {grid[name]!r} is not a grid-anchor parameter; allowed keys: "
            f"{sorted(GRID_DEFAULTS)}"
        )
    params = dict(GRID_DEFAULTS)
    params.update(grid)
    maps = params["feature_maps"]

    def is_size(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    maps_ok = (
        isinstance(maps, (list, tuple))
        and len(maps) > 0
        and all(
            is_size(m) or (isinstance(m, (list, tuple)) and len(m) == 2 and all(is_size(d) for d in m))
            for m in maps
        )
    )
    if not maps_ok:
        raise SpecError(
            f"{key}.feature_maps is {maps!r}; expected feature map sizes finest first, e.g. "
            "[19, 10, 5, 3, 2, 1] or [[19, 19], [10, 10], ...]"
        )
    for name in ("min_scale", "max_scale"):
        if not is_number(params[name]) or params[name] <= 0:
            raise SpecError(f"{key}.{name} is {params[name]!r}; expected a positive number")
    ratios = params["aspect_ratios"]
    if not isinstance(ratios, (list, tuple)) or not ratios or not all(is_number(r) and r > 0 for r in ratios):
        raise SpecError(f"{key}.aspect_ratios is {ratios!r}; expected a list of positive numbers")
    if not isinstance(params["reduce_boxes_in_lowest_layer"], bool):
        raise SpecError(
            f"{key}.reduce_boxes_in_lowest_layer is {params['reduce_boxes_in_lowest_layer']!r}; "
            "expected true or false"
        )
    interpolated = params["interpolated_scale_aspect_ratio"]
    if not is_number(interpolated) or interpolated < 0:
        raise SpecError(
            f"{key}.interpolated_scale_aspect_ratio is {interpolated!r}; expected a number >= 0 "
            "(0 leaves the interpolated-scale anchor out)"
        )
    scales = params["scales"]
    if scales is not None and (
        not isinstance(scales, (list, tuple))
        or len(scales) != len(maps)
        or not all(is_number(s) and s > 0 for s in scales)
    ):
        raise SpecError(
            f"{key}.scales is {scales!r}; expected null or one positive scale per feature map ({len(maps)})"
        )
    return grid_anchors(
        [m if isinstance(m, int) else tuple(m) for m in maps],
        min_scale=float(params["min_scale"]),
        max_scale=float(params["max_scale"]),
        aspect_ratios=[float(r) for r in ratios],
        reduce_boxes_in_lowest_layer=params["reduce_boxes_in_lowest_layer"],
        interpolated_scale_aspect_ratio=float(interpolated),
        scales=None if scales is None else [float(s) for s in scales],
        image_size=(spec.input.height, spec.input.width),
    )


def anchors_from_param(value: Any, spec: ModelSpec) -> np.ndarray:
    """The (A, 4) normalized cx, cy, w, h anchors an ``output.anchors`` value describes."""
    if value is None:
        raise SpecError(
            f"output.anchors is missing; the ssd_raw format needs the anchors the heads predict "
            f"against; fix: add anchors: {ANCHORS_EXAMPLE}"
        )
    if not isinstance(value, Mapping) or len(value) != 1 or next(iter(value)) not in ("file", "grid"):
        raise SpecError(f"output.anchors is {value!r}; expected exactly one of {ANCHORS_EXAMPLE}")
    if "file" in value:
        if not isinstance(value["file"], str) or not value["file"]:
            raise SpecError(f"output.anchors.file is {value['file']!r}; expected the path of a .npy file")
        return load_anchor_file(spec.resolve_path(value["file"]))
    return _grid_anchors_from_param(value["grid"], spec)


class SsdRawParser(OutputParser):
    """Decodes ``scores`` [B,A,C] and ``boxes`` [B,A,4] or [B,A,1,4] against anchors; class-wise NMS."""

    format = "ssd_raw"
    roles = ("scores", "boxes")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        check_roles(spec, self.roles)
        params = check_params(spec, DEFAULTS)
        self.anchors = anchors_from_param(params["anchors"], spec)
        self.variances = param_numbers(params, "variances", 4, positive=True)
        self.box_order = param_choice(params, "box_order", BOX_ORDERS)
        self.score_activation = param_choice(params, "score_activation", ACTIVATIONS)
        self.background_class = param_optional_int(params, "background_class", 0)
        self.pre_nms_top_k = param_int(params, "pre_nms_top_k", 1)
        self.input_size = (float(spec.input.width), float(spec.input.height))
        # Regression columns to x/y order, and the decode factors precomputed per anchor.
        self._to_xy = np.array([1, 0, 3, 2] if self.box_order == "yx" else [0, 1, 2, 3], np.intp)
        variances_xy = np.asarray(self.variances, np.float32)[self._to_xy]
        self._anchor_xy = np.ascontiguousarray(self.anchors[:, 0:2])
        self._anchor_wh = np.ascontiguousarray(self.anchors[:, 2:4])
        self._center_factor = self._anchor_wh * variances_xy[0:2]
        self._size_variance = variances_xy[2:4]
        self._mask: Optional[np.ndarray] = None
        self._softmax_reference = self.background_class or 0  # any column bounds the row's logsumexp
        self.columns = ScoreColumns(self.background_class)

    @property
    def num_anchors(self) -> int:
        return int(self.anchors.shape[0])

    def efficient_nms_anchors(self) -> Tuple[np.ndarray, np.ndarray]:
        """Anchors [1, A, 4] and variances (4,) in the model's regression order, for EfficientNMS_TRT.

        The plugin's center-size decoder has no variances: multiply the box head by the returned variances
        before the plugin, give it these anchors with ``box_coding=1``, and its output boxes come out in the
        same order (xyxy for box_order xy, yxyx for yx).
        """
        anchors = self.anchors[:, [1, 0, 3, 2]] if self.box_order == "yx" else self.anchors
        return anchors[None].astype(np.float32), np.asarray(self.variances, np.float32)

    # --------------------------------------------------------------------------------------- load time

    def check_outputs(self, outputs: Sequence[TensorSpec]) -> None:
        scores = find_output(self.spec, outputs, "scores")
        boxes = find_output(self.spec, outputs, "boxes")
        s_shape = check_tensor(
            self.spec, scores, "scores", "[B, A, C] class scores (one row per anchor)", (2, 3)
        )
        b_shape = check_tensor(
            self.spec,
            boxes,
            "boxes",
            "[B, A, 4] or [B, A, 1, 4] box regression (one row per anchor)",
            (2, 3, 4),
            4,
        )
        anchors_in_scores = s_shape[-2]
        if len(b_shape) == 4:
            if known(b_shape[2]) and int(b_shape[2]) != 1:
                raise SpecError(
                    f"model output {boxes.name!r} (output.tensors.boxes) has shape {list(b_shape)}: one box "
                    "per class per anchor; ssd_raw expects one shared box per anchor "
                    "([B, A, 4] or [B, A, 1, 4])"
                )
            anchors_in_boxes = b_shape[1]
        elif len(b_shape) == 3 and known(b_shape[1]) and int(b_shape[1]) == 1 and anchors_in_scores != 1:
            anchors_in_boxes = b_shape[0]  # implicit-batch [A, 1, 4]
        else:
            anchors_in_boxes = b_shape[-2]
        same_dim(
            self.spec,
            "the anchor count",
            [
                (f"{scores.name} (scores)", anchors_in_scores),
                (f"{boxes.name} (boxes)", anchors_in_boxes),
                ("output.anchors", self.num_anchors),
            ],
            fix="make output.anchors describe the model's anchors (grid feature_maps, aspect_ratios, "
            "reduce_boxes_in_lowest_layer, or the anchors file)",
        )
        self.columns.check(scores.name, s_shape[-1])

    # ---------------------------------------------------------------------------------------- per frame

    def _raw_threshold(self, threshold: float) -> float:
        """The score threshold in the space the mask is computed in (logits for sigmoid)."""
        if self.score_activation != "sigmoid":
            return threshold
        if threshold <= 0.0:
            return -math.inf
        if threshold >= 1.0:
            return math.inf
        return math.log(threshold / (1.0 - threshold))

    def parse(self, outputs: Mapping[str, np.ndarray], settings: DetectionSettings) -> RawDetections:
        anchors = self.num_anchors
        spec = self.spec
        scores_text = f"[B, A, C] class scores for the {anchors} anchors of output.anchors"
        boxes_text = f"[B, A, 4] or [B, A, 1, 4] box regression for the {anchors} anchors of output.anchors"
        frame_output(spec, outputs, "scores", scores_text, 2)
        frame_output(spec, outputs, "boxes", boxes_text, 2, 4)
        raw_scores = np.asarray(outputs[self.tensor("scores")])
        raw_boxes = np.asarray(outputs[self.tensor("boxes")])
        classes = int(raw_scores.shape[-1])
        if raw_scores.size < anchors * classes:
            raise frame_error(spec, "scores", raw_scores, scores_text, "check output.anchors against the model")
        if raw_boxes.size < anchors * 4:
            raise frame_error(spec, "boxes", raw_boxes, boxes_text, "check output.anchors against the model")
        scores = raw_scores.reshape(-1, classes)[:anchors]  # batch item 0 (a view for contiguous outputs)
        deltas = raw_boxes.reshape(-1, 4)[:anchors]
        if self._mask is None or self._mask.shape != scores.shape:
            self._mask = np.empty(scores.shape, bool)
        rows, cols, candidate_scores = self._candidates(scores, self._mask, settings)
        if rows.shape[0] == 0:
            return RawDetections.empty()
        return self._detections(deltas, rows, rows, cols, candidate_scores, settings)

    def parse_batch(self, outputs: Mapping[str, np.ndarray], count: int,
                    settings: DetectionSettings) -> Optional[List[RawDetections]]:
        """``parse`` of ``count`` consecutive frames in one pass: threshold, softmax, decode and finalize over
        all their anchors and candidates at once, NMS per frame. Equal to ``parse`` per frame, bit for bit
        (test_outputs_ssd_raw; a frame with more than ``pre_nms_top_k`` candidates takes the per-frame path).
        Anything unusual about the tensors (not float, not ``count`` rows, too few anchors) returns None, so
        ``parse`` per frame meets it and says what is wrong."""
        anchors = self.num_anchors
        raw_scores = outputs.get(self.tensor("scores"))
        raw_boxes = outputs.get(self.tensor("boxes"))
        if not isinstance(raw_scores, np.ndarray) or not isinstance(raw_boxes, np.ndarray) or count < 1:
            return None
        if raw_scores.ndim != 3 or raw_boxes.ndim not in (3, 4) or raw_scores.dtype.kind != "f":
            return None
        if raw_boxes.dtype.kind != "f" or raw_scores.shape[0] != count or raw_boxes.shape[0] != count:
            return None
        classes = int(raw_scores.shape[-1])
        if classes < 1 or raw_scores.shape[1] < anchors or raw_boxes.shape[-1] != 4:
            return None
        if raw_boxes.size // count < anchors * 4:
            return None
        scores = raw_scores[:, :anchors].reshape(-1, classes)  # every frame's anchors, one after another
        deltas = raw_boxes.reshape(count, -1, 4)[:, :anchors].reshape(-1, 4)
        rows, cols, candidate_scores = self._candidates(scores, np.empty(scores.shape, bool), settings)
        bounds = np.searchsorted(rows, np.arange(count + 1) * anchors).tolist()  # rows ascend: a slice a frame
        frames, anchor_rows = np.divmod(rows, anchors)
        if max(b - a for a, b in zip(bounds[:-1], bounds[1:])) > self.pre_nms_top_k:  # a frame keeps its top k
            return [self._detections(deltas, rows[a:b], anchor_rows[a:b], cols[a:b], candidate_scores[a:b], settings)
                    if b > a else RawDetections.empty() for a, b in zip(bounds[:-1], bounds[1:])]
        with np.errstate(over="ignore", invalid="ignore"):  # as in _detections, for every frame's candidates
            if self.score_activation == "sigmoid":
                candidate_scores = (1.0 / (1.0 + np.exp(-candidate_scores))).astype(np.float32)
            boxes = self._decode(deltas, rows, anchor_rows)
        kept = [a + batched_nms(boxes[a:b], candidate_scores[a:b], cols[a:b], settings.iou_threshold,
                                settings.max_detections) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        kept_rows = np.concatenate(kept) if kept else np.zeros((0,), np.int64)
        return finalize_frames(boxes[kept_rows], candidate_scores[kept_rows], cols[kept_rows], frames[kept_rows],
                               count, settings)

    def _candidates(self, scores: np.ndarray, mask: np.ndarray,
                    settings: DetectionSettings) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, score) of every anchor and class above the threshold in ``scores`` (rows x classes),
        rows ascending; ``mask``: a bool buffer of ``scores``' shape."""
        classes = int(scores.shape[1])
        threshold = settings.score_threshold
        if self.score_activation == "softmax":
            # p = exp(x - logsumexp(row)) and logsumexp(row) >= any entry of the row, so
            # x >= x[:, ref] + log(threshold) keeps every candidate (and a few more) without an exp or a
            # row-wise max over the whole matrix; exact probabilities follow for the candidate rows only.
            log_threshold = math.log(threshold) if threshold > 0.0 else -math.inf
            bound = scores[:, self._softmax_reference] + log_threshold
            np.greater_equal(scores, bound[:, None], out=mask)
        else:
            np.greater_equal(scores, self._raw_threshold(threshold), out=mask)
        rows, cols = np.divmod(np.flatnonzero(mask), classes)  # far faster than a 2-D np.nonzero
        keep = self.columns(classes, settings.allowed_class_ids)[cols]
        if not keep.all():
            rows, cols = rows[keep], cols[keep]
        candidate_scores = scores[rows, cols].astype(np.float32)
        if self.score_activation == "softmax" and rows.shape[0] > 0:
            candidate_scores = self._softmax(scores, rows, candidate_scores)
            keep = candidate_scores >= threshold
            rows, cols, candidate_scores = rows[keep], cols[keep], candidate_scores[keep]
        return rows, cols, candidate_scores

    def _detections(self, deltas: np.ndarray, rows: np.ndarray, anchor_rows: np.ndarray, cols: np.ndarray,
                    candidate_scores: np.ndarray, settings: DetectionSettings) -> RawDetections:
        """One frame's candidates (``rows`` of ``deltas``, anchors ``anchor_rows``): top-k, decode, NMS."""
        if rows.shape[0] > self.pre_nms_top_k:
            top = np.argpartition(-candidate_scores, self.pre_nms_top_k - 1)[: self.pre_nms_top_k]
            rows, anchor_rows, cols, candidate_scores = rows[top], anchor_rows[top], cols[top], candidate_scores[top]
        with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN outputs: dropped by the NMS and finalize
            if self.score_activation == "sigmoid":
                candidate_scores = (1.0 / (1.0 + np.exp(-candidate_scores))).astype(np.float32)
            boxes = self._decode(deltas, rows, anchor_rows)
        kept = batched_nms(boxes, candidate_scores, cols, settings.iou_threshold, settings.max_detections)
        return finalize(boxes[kept], candidate_scores[kept], cols[kept], settings)

    @staticmethod
    def _softmax(scores: np.ndarray, rows: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Softmax probabilities of the candidates (``logits`` at ``rows``), over their whole rows."""
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        block = scores[unique_rows].astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # inf logits give NaN: dropped by the threshold
            peak = block.max(axis=1)
            log_sum = peak + np.log(np.exp(block - peak[:, None]).sum(axis=1))
            return np.exp(logits.astype(np.float64) - log_sum[inverse.reshape(-1)]).astype(np.float32)

    def decode(self, deltas: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """xyxy boxes in model-input pixels for the regression ``deltas`` (A, 4) of anchors ``rows``."""
        return self._decode(deltas, rows, rows)

    def _decode(self, deltas: np.ndarray, rows: np.ndarray, anchor_rows: np.ndarray) -> np.ndarray:
        """``decode`` of ``deltas`` rows ``rows`` against anchors ``anchor_rows`` (they differ in a batch)."""
        d = np.asarray(deltas[rows[:, None], self._to_xy[None, :]], np.float32)
        center = self._anchor_xy[anchor_rows] + d[:, 0:2] * self._center_factor[anchor_rows]
        half = self._anchor_wh[anchor_rows] * np.exp(d[:, 2:4] * self._size_variance) * 0.5
        boxes = np.concatenate([center - half, center + half], axis=1)
        boxes *= np.asarray(self.input_size * 2, np.float32)
        return boxes
