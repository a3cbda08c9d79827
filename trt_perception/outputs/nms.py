"""Vectorised NMS and the shared last step of every detection parser, plus a numpy EfficientNMS reference.

- ``batched_nms``: class-wise NMS through OpenCV's ``cv2.dnn.NMSBoxesBatched`` (C++, the fastest here), with a
  fallback to ``cv2.dnn.NMSBoxes`` and the class-offset trick, and a pure-numpy fallback (``nms_numpy``) for
  OpenCV builds without the dnn module. All three suppress a box whose IoU with a kept, higher-scored box of
  the same class is strictly greater than the threshold (OpenCV's rule).
- ``finalize``: score threshold, class allow-list, sort by score, cap, scale to model-input pixels.
- ``efficient_nms_reference``: what the EfficientNMS_TRT plugin computes (TensorRT plugin/efficientNMSPlugin
  at v8.6: fused center-size box decoder, per-class greedy NMS, IoU >= threshold suppresses, sigmoid applied
  to the kept scores, top 4096 candidates, outputs padded with zeros). It is a test oracle, written for
  clarity rather than speed, so the graph-surgery tests can check that an inserted plugin and the
  ``ssd_raw`` decoder agree on the same heads.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np

from trt_perception.errors import ConfigError, OutputError
from trt_perception.outputs.base import DetectionSettings, RawDetections

try:  # OpenCV is a hard dependency, but its dnn module is optional in some builds.
    import cv2

    _NMS_BATCHED = getattr(getattr(cv2, "dnn", None), "NMSBoxesBatched", None)
    _NMS_BOXES = getattr(getattr(cv2, "dnn", None), "NMSBoxes", None)
except ImportError:  # pragma: no cover - exercised only on builds without OpenCV
    _NMS_BATCHED = None
    _NMS_BOXES = None


# -------------------------------------------------------------------------------------------------- IoU


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box in ``a`` (N,4) with every box in ``b`` (M,4): (N, M); empty overlap gives 0."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where((inter > 0) & (union > 0), inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


# -------------------------------------------------------------------------------------------------- NMS


def nms_numpy(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: Optional[np.ndarray],
    iou_threshold: float,
    top_k: int = 0,
) -> np.ndarray:
    """Greedy class-wise NMS without a per-box Python loop; returns kept indices by descending score.

    Greedy NMS keeps box j iff no KEPT higher-scored box of its class overlaps it by more than the threshold.
    That rule has one solution, found as the fixed point of ``keep = ~any(overlap & keep[:, None], axis=0)``
    over the upper-triangular overlap matrix: each pass fixes at least one more box in score order, and in
    practice two or three passes settle (one per link of the longest suppression chain).
    """
    n = int(scores.shape[0])
    if n == 0:
        return np.zeros((0,), np.int64)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    sorted_boxes = np.asarray(boxes)[order]
    overlap = iou_matrix(sorted_boxes, sorted_boxes) > iou_threshold
    if class_ids is not None:
        sorted_classes = np.asarray(class_ids)[order]
        overlap &= sorted_classes[:, None] == sorted_classes[None, :]
    overlap = np.triu(overlap, 1)
    keep = np.ones(n, bool)
    for _ in range(n):
        new_keep = ~(overlap & keep[:, None]).any(axis=0)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    kept = order[keep]
    return kept[:top_k] if top_k > 0 else kept


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    top_k: int = 0,
    backend: str = "auto",
) -> np.ndarray:
    """Class-wise NMS of xyxy ``boxes``; returns kept indices sorted by descending score (at most ``top_k``).

    ``backend``: "auto" (OpenCV batched if present, else the offset trick, else numpy), "opencv", "offset" or
    "numpy" (the last three for tests and benchmarks).
    """
    n = int(scores.shape[0])
    if n == 0:
        return np.zeros((0,), np.int64)
    finite = np.isfinite(scores) & np.isfinite(boxes).all(axis=1)
    if not finite.all():  # NaN/inf would corrupt the overlap order (and OpenCV's offset span): leave them out
        index = np.flatnonzero(finite)
        kept = batched_nms(boxes[index], scores[index], np.asarray(class_ids)[index], iou_threshold, top_k, backend)
        return index[kept]
    if backend == "auto":
        backend = "opencv" if _NMS_BATCHED is not None else "offset" if _NMS_BOXES is not None else "numpy"
    if backend == "numpy":
        return nms_numpy(boxes, scores, class_ids, iou_threshold, top_k)
    xywh = np.array(boxes, np.float64)  # OpenCV takes Rect2d (x, y, w, h); a copy, so boxes stay untouched
    xywh[:, 2:] -= xywh[:, :2]
    scores32 = np.ascontiguousarray(scores, np.float32)
    # OpenCV keeps scores > score_threshold and asserts a threshold >= 0 (NMSBoxes); NMS itself only uses the
    # score order, so non-positive scores (score_activation none) are shifted into (0, inf) first.
    lowest = float(scores32.min())
    nms_scores = scores32 if lowest > 0 else (scores32.astype(np.float64) - lowest + 1.0).astype(np.float32)
    # top_k is NOT passed: OpenCV applies it to the candidates before NMS, not to the boxes it keeps.
    if backend == "opencv":
        if _NMS_BATCHED is None:
            raise ConfigError("NMS backend 'opencv' needs cv2.dnn.NMSBoxesBatched (OpenCV >= 4.7 with dnn)")
        kept = _NMS_BATCHED(
            xywh, nms_scores, np.ascontiguousarray(class_ids, np.int32), 0.0, float(iou_threshold)
        )
    elif backend == "offset":
        if _NMS_BOXES is None:
            raise ConfigError("NMS backend 'offset' needs cv2.dnn.NMSBoxes (an OpenCV build with dnn)")
        # Shift each class into its own region so boxes of different classes can never overlap.
        span = float(np.abs(np.asarray(boxes, np.float64)).max()) * 2.0 + 1.0
        xywh[:, :2] += np.asarray(class_ids, np.float64)[:, None] * span
        kept = _NMS_BOXES(xywh, nms_scores, 0.0, float(iou_threshold))
    else:
        raise ConfigError(f"NMS backend {backend!r} is unknown; expected auto, opencv, offset or numpy")
    kept = np.asarray(kept, np.int64).reshape(-1)
    kept = kept[np.argsort(-scores32[kept], kind="stable")]
    return kept[:top_k] if top_k > 0 else kept


# ------------------------------------------------------------------------------------------- finishing


def finalize(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    settings: DetectionSettings,
    scale: Tuple[float, float] = (1.0, 1.0),
) -> RawDetections:
    """Threshold, allow-list, sort by score (descending), cap, scale boxes by (sx, sy) to model pixels.

    Inputs are the few rows an NMS kept (not the anchor matrix), so the copies made here are small. Corner
    pairs are put in order (x1 <= x2, y1 <= y2): plugins pass through whatever order the model gave. A row
    whose score or box (after scaling) is not finite, or whose class id is not a finite number within int32,
    is dropped here, so NaN/inf never reach a Detection2DArray. Float class ids are rounded to the nearest.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32's range becomes inf: dropped
        scores = np.asarray(scores, np.float32).reshape(-1)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    count = scores.shape[0]
    classes = np.asarray(class_ids).reshape(-1)
    if boxes.shape[0] != count or classes.shape[0] != count or classes.dtype.kind not in "fiub":
        raise OutputError(
            f"detections of {boxes.shape[0]} boxes, {count} scores and {classes.shape[0]} {classes.dtype} class "
            "ids do not line up; expected one box, score and numeric class id per row; fix: check output.tensors"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = boxes * np.asarray([scale[0], scale[1], scale[0], scale[1]], np.float32)
        keep = scores >= settings.score_threshold  # NaN scores fail this comparison
        keep &= np.isfinite(scores)
        keep &= np.isfinite(scaled).all(axis=1)
        if classes.dtype.kind == "f":
            valid = np.isfinite(classes) & (np.abs(classes) < 2.0**31)
            keep &= valid
            ids = np.rint(np.where(valid, classes, -1.0)).astype(np.int64)
        else:
            ids = classes.astype(np.int64)
    if settings.allowed_class_ids is not None:
        keep &= np.isin(ids, np.fromiter(settings.allowed_class_ids, np.int64))
    index = np.flatnonzero(keep)
    order = index[np.argsort(-scores[index], kind="stable")][: max(0, int(settings.max_detections))]
    picked = scaled[order]
    out = np.empty((order.shape[0], 4), np.float32)
    np.minimum(picked[:, 0:2], picked[:, 2:4], out=out[:, 0:2])
    np.maximum(picked[:, 0:2], picked[:, 2:4], out=out[:, 2:4])
    return RawDetections(out, scores[order].copy(), ids[order])


def finalize_frames(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, frames: np.ndarray, count: int,
                    settings: DetectionSettings) -> List[RawDetections]:
    """``finalize`` (scale 1) of the rows of ``count`` frames in one pass, for integer class ids: ``frames`` is
    each row's frame, ascending. Per frame the same arrays as ``finalize`` gives its rows (replay's batches of
    consecutive frames: numpy's per-call cost, paid once instead of once per frame)."""
    with np.errstate(over="ignore", invalid="ignore"):
        scores = np.asarray(scores, np.float32).reshape(-1)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        ids = np.asarray(class_ids).reshape(-1).astype(np.int64)
        keep = scores >= settings.score_threshold  # NaN scores fail this comparison
        keep &= np.isfinite(scores)
        keep &= np.isfinite(boxes).all(axis=1)
    if settings.allowed_class_ids is not None:
        keep &= np.isin(ids, np.fromiter(settings.allowed_class_ids, np.int64))
    index = np.flatnonzero(keep)
    order = index[np.lexsort((-scores[index], frames[index]))]  # by frame, then by score (stable, as finalize)
    frame_of = frames[order]
    first = np.searchsorted(frame_of, np.arange(count + 1))
    capped = (np.arange(order.shape[0]) - first[frame_of]) < max(0, int(settings.max_detections))
    order, frame_of = order[capped], frame_of[capped]
    picked = boxes[order]
    out = np.empty((order.shape[0], 4), np.float32)
    np.minimum(picked[:, 0:2], picked[:, 2:4], out=out[:, 0:2])
    np.maximum(picked[:, 0:2], picked[:, 2:4], out=out[:, 2:4])
    kept_scores, kept_ids = scores[order], ids[order]
    bounds = np.searchsorted(frame_of, np.arange(count + 1))
    return [RawDetections(out[a:b].copy(), kept_scores[a:b].copy(), kept_ids[a:b].copy())
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]


# ------------------------------------------------------------------------------ EfficientNMS reference


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def efficient_nms_reference(
    boxes: np.ndarray,
    scores: np.ndarray,
    anchors: Optional[np.ndarray] = None,
    *,
    score_threshold: float,
    iou_threshold: float,
    max_output_boxes: int = 100,
    background_class: int = -1,
    score_activation: bool = False,
    class_agnostic: bool = False,
    box_coding: int = 0,
    max_selected_boxes: int = 4096,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The outputs EfficientNMS_TRT gives for these inputs (a readable oracle, not a hot path).

    Inputs as the plugin takes them: ``boxes`` [B,N,4] or [B,N,1,4] (raw regression when ``anchors`` is
    given), ``scores`` [B,N,C], ``anchors`` [1,N,4] or [B,N,4] in the same coding. ``box_coding`` 0 = corners
    (decode: box + anchor), 1 = center-size (decode: c = d * anchor_size + anchor_center, s = anchor_size *
    exp(d); no variances: the graph must scale the regression first). Coordinates keep the order they came
    in ((x, y) or (y, x)). Returns ``num_detections`` [B,1] int32, ``detection_boxes`` [B,M,4] corners,
    ``detection_scores`` [B,M], ``detection_classes`` [B,M] int32, padded with zeros.

    Semantics (efficientNMSInference.cu): a candidate is every (box, class) pair with score >= threshold
    (with ``score_activation`` the raw score is compared with logit(threshold), and sigmoid is applied to
    the kept scores only) outside the background class; the top ``max_selected_boxes`` by score are decoded
    and go through greedy NMS (a box is dropped when its IoU with a kept box of the same class, or any class
    when ``class_agnostic``, is >= ``iou_threshold``) until ``max_output_boxes`` are kept.
    """
    boxes = np.asarray(boxes, np.float64)
    scores = np.asarray(scores, np.float64)
    if boxes.ndim == 4:
        if boxes.shape[2] != 1:
            raise ValueError(f"per-class boxes {boxes.shape} are not modelled; expected [B,N,4] or [B,N,1,4]")
        boxes = boxes[:, :, 0, :]
    batch, count, classes = scores.shape
    if boxes.shape != (batch, count, 4):
        raise ValueError(f"boxes {boxes.shape} do not fit scores {scores.shape}; expected [B,N,4]")
    if anchors is not None:
        anchors = np.broadcast_to(np.asarray(anchors, np.float64), (batch, count, 4))
    threshold = score_threshold
    if score_activation:
        threshold = (
            -float(1 << 15) if score_threshold <= 0 else math.log(score_threshold / (1 - score_threshold))
        )

    out_num = np.zeros((batch, 1), np.int32)
    out_boxes = np.zeros((batch, max_output_boxes, 4), np.float32)
    out_scores = np.zeros((batch, max_output_boxes), np.float32)
    out_classes = np.zeros((batch, max_output_boxes), np.int32)
    for image in range(batch):
        flat = scores[image].reshape(-1)
        candidates = np.flatnonzero(flat >= threshold)
        candidates = candidates[candidates % classes != background_class]
        candidates = candidates[np.argsort(-flat[candidates], kind="stable")][:max_selected_boxes]
        anchor_index = candidates // classes
        class_index = candidates % classes
        decoded = boxes[image, anchor_index]
        if anchors is not None:
            anchor = anchors[image, anchor_index]
            if box_coding == 1:
                center = decoded[:, 0:2] * anchor[:, 2:4] + anchor[:, 0:2]
                size = anchor[:, 2:4] * np.exp(decoded[:, 2:4])
                decoded = np.concatenate([center, size], axis=1)
            else:
                decoded = decoded + anchor
        if box_coding == 1:
            half = decoded[:, 2:4] * 0.5
            decoded = np.concatenate([decoded[:, 0:2] - half, decoded[:, 0:2] + half], axis=1)
        ordered = np.concatenate(  # corner order for IoU only; the output keeps the decoded order
            [np.minimum(decoded[:, 0:2], decoded[:, 2:4]), np.maximum(decoded[:, 0:2], decoded[:, 2:4])],
            axis=1,
        )
        kept = []
        dropped = np.zeros(candidates.shape[0], bool)
        for i in range(candidates.shape[0]):
            if dropped[i]:
                continue
            kept.append(i)
            if len(kept) == max_output_boxes:
                break
            later = np.arange(i + 1, candidates.shape[0])
            if not class_agnostic:
                later = later[class_index[later] == class_index[i]]
            iou = iou_matrix(ordered[i : i + 1], ordered[later])[0]
            dropped[later[iou >= iou_threshold]] = True
        kept_index = np.asarray(kept, np.int64)
        n = kept_index.shape[0]
        out_num[image, 0] = n
        out_boxes[image, :n] = decoded[kept_index]
        kept_scores = flat[candidates[kept_index]]
        out_scores[image, :n] = _sigmoid(kept_scores) if score_activation else kept_scores
        out_classes[image, :n] = class_index[kept_index]
    return out_num, out_boxes, out_scores, out_classes
