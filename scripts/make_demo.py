#!/usr/bin/env python3
"""Make the shipped demo: three tiny models trained on a rendered world, their specs, and a recorded drive.

Why: the first command a new user runs must show real output on a machine with no GPU, no ROS and no
network, so the demo's data and models are made here, reproducibly, from the synthetic driving world in
``trt_perception/tools/synthetic_world.py``:

1. render drives through several worlds (training), two more (held-out validation) and one for the bag
   (evaluation), each frame JPEG-compressed and decoded exactly as the pipeline will see it;
2. train a DonkeyCar "Linear"-style steering CNN (input ``img_in`` NHWC Nx120x160x3 RGB /255, outputs
   ``angle`` and ``throttle``), a tiny SSD-style detector (input ``images`` NCHW Nx3x128x192 RGB
   x*2/255-1 of the frame below the sky, raw heads ``scores`` [N,A,3] and ``boxes`` [N,A,4] against
   ``detector_anchors.npy``) and a tiny drivable-area segmenter (input ``images`` NCHW Nx3x120x160 RGB /255,
   output ``logits`` [N,2,30,40]: background, road; its own worlds, rendered with the road mask) on CPU
   (N: the batch, dynamic);
3. export ONNX (opset 13, a dynamic batch dimension, float32, onnx.checker clean), write the specs, check the models
   with ONNX Runtime and through ``ModelPipeline``;
4. record the demo bag (rosbag2, mcap): camera frames, the "human" drive command, the true boxes with each
   object's track id (``Detection2D.id``, e.g. ``cone-12``, stable over the drive) and the true
   drivable-area mask (png);
5. evaluate the models on the bag through the real pipeline and write README.md with the numbers.

    pip install torch==2.13.0        # a build-time extra only; running the demo needs no torch
    python scripts/make_demo.py --out trt_perception/data/demo [--force]
    python scripts/make_demo.py --out trt_perception/data/demo --force --only drivable
    python scripts/make_demo.py --out trt_perception/data/demo --force --only bag      # no torch needed

``--only drivable`` remakes just the drivable-area model, its spec, the bag and README.md; ``--only bag``
remakes just the bag and README.md. The other files in --out stay as they are (held-out numbers of kept
models are measured again from their ONNX files), and the new bag's camera, command and mask messages must
be the same bytes as the old bag's (its truth boxes too, apart from their ids): the run stops before
installing anything if they are not.

The renderer's outputs (frames, truth, the bag) are the same bytes on every run. The models are the same
bytes for the same torch version and thread count (``--threads``, default 2); another torch version may
differ bit-wise (and so slightly in the printed numbers).
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import yaml

from trt_perception.outputs import DetectionSettings, create_parser
from trt_perception.spec import load_spec, parse_spec
from trt_perception.tools.synthetic_world import CLASSES, MIN_BOX_PX, Drive, World

# ----------------------------------------------------------------------------------------- what is made

IMAGE_WIDTH, IMAGE_HEIGHT = 320, 240
FPS = 15.0
JPEG_QUALITY = 80
# Drives as (world seed, drive seed, seconds, frames per second). Training frames are taken at half the
# camera rate over more worlds: neighbouring frames add little, other worlds add variety.
TRAIN_DRIVES: Tuple[Tuple[int, int, float, float], ...] = tuple(
    (100 + i, 100 + i, 12.0, 7.5) for i in range(40)
)
VAL_DRIVES: Tuple[Tuple[int, int, float, float], ...] = ((200, 200, 20.0, 7.5), (201, 201, 20.0, 7.5))
# The bag's drive: a world and a path that no training frame comes from.
BAG_DRIVE: Tuple[int, int, float, float] = (7, 7007, 18.0, FPS)
# 2025-01-01T00:00:00Z: a fixed clock keeps the bag's bytes stable.
BAG_START_NS = 1_735_689_600 * 1_000_000_000
# rosbag2 metadata version 8 (Iron's): Jazzy reads it (checked with `ros2 bag info` and rosbag2_py), and
# Humble should too; version 9 (Jazzy's) writes offered_qos_profiles as a list, which Humble cannot parse.
BAG_VERSION = 8
STEER_HEIGHT, STEER_WIDTH = 120, 160
DET_HEIGHT, DET_WIDTH = 128, 192
# The detector skips the sky: every object stands on the ground, below the horizon (row ~80 of 240), so the
# spec crops the top rows (input.crop.top, in model rows: 47 of 128 + 47 -> 64 of 240 source rows) and the
# model spends its pixels on the ground: source rows 64..240 stretched to 128 (x 0.73), columns x 0.6.
DET_CROP_TOP = 47
# Source rows the crop removes, computed as preprocess.py does.
DET_CROP_SOURCE_ROWS = round(DET_CROP_TOP * IMAGE_HEIGHT / (DET_HEIGHT + DET_CROP_TOP))
LABELS: Tuple[str, ...] = ("background", *CLASSES)
VARIANCES = (0.1, 0.1, 0.2, 0.2)
# Anchors per feature map (finest first, strides 8, 16, 32): map size (rows, cols) and (size, aspect) pairs,
# size = sqrt(w*h) and aspect = w/h, in normalized units of the (cropped, stretched) detector input, where
# cones measure ~0.31 wide-for-tall and boxes ~0.78 (median over the training truth).
CONE, BOX = 0.31, 0.78
ANCHOR_LAYERS: Tuple[Tuple[Tuple[int, int], Tuple[Tuple[float, float], ...]], ...] = (
    (
        (DET_HEIGHT // 8, DET_WIDTH // 8),
        ((0.035, CONE), (0.045, CONE), (0.06, CONE), (0.04, BOX), (0.055, BOX)),
    ),
    (
        (DET_HEIGHT // 16, DET_WIDTH // 16),
        ((0.075, CONE), (0.1, CONE), (0.13, CONE), (0.08, BOX), (0.11, BOX)),
    ),
    ((DET_HEIGHT // 32, DET_WIDTH // 32), ((0.16, CONE), (0.22, CONE), (0.16, BOX), (0.24, BOX))),
)
# Matching: SSD's rule (each box's best anchor, plus every anchor over a threshold) with the threshold of
# S3FD's scale-compensation matching (0.35 rather than 0.5): most objects here are smaller than a grid cell,
# so few anchors reach IoU 0.5 with them (about 0.5 per box); at 0.35 each box gets ~2.5 positives, and
# held-out recall on boxes >= 12 px rose from 0.76 to 0.86 in a 15-epoch trial. Anchors between IGNORE_IOU
# and POSITIVE_IOU are neither positives nor negatives.
POSITIVE_IOU = 0.35
IGNORE_IOU = 0.25
SCORE_THRESHOLD = 0.5
IOU_THRESHOLD = 0.45
MAX_DETECTIONS = 20
REASONABLE_HEIGHT_PX = 12.0  # truth boxes at least this tall (in 320x240) count as "reasonable size"
# The drivable-area segmenter: the whole frame stretched to 160x120, a stride-4 class map (40x30, each cell
# one 8x8 block of the 320x240 frame), trained on worlds of its own (not the bag's, not the other models').
SEG_HEIGHT, SEG_WIDTH = 120, 160
SEG_STRIDE = 4
SEG_BLOCK = IMAGE_WIDTH // (SEG_WIDTH // SEG_STRIDE)  # source pixels per class-map cell side (8)
SEG_LABELS: Tuple[str, ...] = ("background", "road")
SEG_COLORS: Tuple[Tuple[int, int, int], ...] = ((0, 0, 0), (0, 200, 0))
SEG_TRAIN_DRIVES: Tuple[Tuple[int, int, float, float], ...] = tuple(
    (300 + i, 300 + i, 12.0, 2.5) for i in range(40)
)
SEG_VAL_DRIVES: Tuple[Tuple[int, int, float, float], ...] = ((400, 400, 20.0, 5.0), (401, 401, 20.0, 5.0))
OPSET = 13
SEED = 20250101
SIZE_BUDGET_BYTES = 4 * 1024 * 1024

TOPIC_IMAGE = "/camera/image_raw/compressed"
TOPIC_COMMAND = "/teleop/cmd_vel"
TOPIC_TRUTH = "/ground_truth/detections"
# The true drivable area as png (0 = background, 1 = road at full 320x240): ~0.7 KB a frame, where a raw
# mono8 sensor_msgs/Image would add 76.8 KB a frame (~21 MB to the bag).
TOPIC_DRIVABLE = "/ground_truth/drivable"
DRIVABLE_FORMAT = "mono8; png compressed mono8"
FRAME_ID = "camera"
OUTPUTS = (
    "steering.onnx",
    "steering.yaml",
    "detector.onnx",
    "detector.yaml",
    "detector_anchors.npy",
    "labels.txt",
    "drivable.onnx",
    "drivable.yaml",
    "drive_bag",
    "README.md",
)
# What --only drivable / --only bag remake; the other outputs must exist and are left alone.
DRIVABLE_OUTPUTS = ("drivable.onnx", "drivable.yaml", "drive_bag", "README.md")
BAG_OUTPUTS = ("drive_bag", "README.md")
ONLY_OUTPUTS = {"drivable": DRIVABLE_OUTPUTS, "bag": BAG_OUTPUTS}
# Topics whose messages a partial remake must leave byte for byte as they were (the truth boxes are compared
# with their ids blanked: ids are what --only bag exists to change).
KEPT_TOPICS = (TOPIC_IMAGE, TOPIC_COMMAND, TOPIC_DRIVABLE)


def log(text: str) -> None:
    print(text, flush=True)


# ------------------------------------------------------------------------------------------------ data


@dataclass
class DriveData:
    """One rendered drive, as the models will see it after JPEG and the pipeline's resize."""

    steer_rgb: np.ndarray  # (n, 120, 160, 3) uint8
    det_rgb: np.ndarray  # (n, 128, 192, 3) uint8, sky rows cropped
    angle: np.ndarray  # (n,) float32, + = right
    throttle: np.ndarray  # (n,) float32
    boxes: List[np.ndarray]  # per frame (k, 4) float32 pixel xyxy in the 320x240 frame
    classes: List[np.ndarray]  # per frame (k,) int64 class ids (1 = cone, 2 = box; 0 is background)
    times: np.ndarray  # (n,) float64 seconds
    jpegs: List[bytes] = field(default_factory=list)
    masks: List[np.ndarray] = field(default_factory=list)  # bag only: (240, 320) uint8 drivable area, 1 = road
    track_ids: List[List[str]] = field(default_factory=list)  # per frame, one per box: the object's id ("cone-12")


@dataclass
class DrivableData:
    """Frames of the drivable-area worlds, as the segmenter sees them, and their road masks."""

    rgb: np.ndarray  # (n, 120, 160, 3) uint8 (after JPEG and the pipeline's resize)
    road: np.ndarray  # (n, 30, 40) float32: share of road pixels in each class-map cell's 8x8 source block
    masks: Optional[np.ndarray] = None  # (n, 240, 320) uint8 full-size truth (held-out drives only)


def to_model_rgb(bgr: np.ndarray, height: int, width: int, crop_rows: int = 0) -> np.ndarray:
    """The pipeline's preprocessing up to scaling: crop top rows, stretch-resize (bilinear), BGR->RGB."""
    resized = cv2.resize(bgr[crop_rows:], (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized[:, :, ::-1])


def source_to_unit(boxes: np.ndarray) -> np.ndarray:
    """Pixel xyxy boxes of the 320x240 frame -> normalized [0, 1] coordinates of the detector's input."""
    rows = IMAGE_HEIGHT - DET_CROP_SOURCE_ROWS
    out = np.asarray(boxes, np.float32) / np.array([IMAGE_WIDTH, rows, IMAGE_WIDTH, rows], np.float32)
    out[:, 1::2] -= DET_CROP_SOURCE_ROWS / rows
    return np.clip(out, 0.0, 1.0)


def model_to_source(boxes: np.ndarray) -> np.ndarray:
    """Detector-input pixel xyxy boxes -> pixels of the 320x240 frame (what the pipeline's transform does)."""
    sx, sy = DET_WIDTH / IMAGE_WIDTH, DET_HEIGHT / (IMAGE_HEIGHT - DET_CROP_SOURCE_ROWS)
    out = np.asarray(boxes, np.float32) / np.array([sx, sy, sx, sy], np.float32)
    out[:, 1::2] += DET_CROP_SOURCE_ROWS
    return out


def render_drive(job: Tuple[int, int, float, float], keep_jpegs: bool = False) -> DriveData:
    """Render one drive; every frame goes through JPEG (quality 80) and back, like the bag's frames."""
    world_seed, drive_seed, seconds, fps = job
    drive = Drive(
        World(world_seed),
        fps=fps,
        duration_s=seconds,
        width=IMAGE_WIDTH,
        height=IMAGE_HEIGHT,
        seed=drive_seed,
        drivable_masks=keep_jpegs,  # the same frames either way
    )
    steer, det, angle, throttle, boxes, classes, times, jpegs = [], [], [], [], [], [], [], []
    masks: List[np.ndarray] = []
    track_ids: List[List[str]] = []
    for frame in drive:
        decoded, encoded = jpeg_round_trip(frame.image_bgr, f"frame {frame.index} of drive {job}")
        steer.append(to_model_rgb(decoded, STEER_HEIGHT, STEER_WIDTH))
        det.append(to_model_rgb(decoded, DET_HEIGHT, DET_WIDTH, DET_CROP_SOURCE_ROWS))
        angle.append(frame.steering)
        throttle.append(frame.throttle)
        boxes.append(frame.boxes.astype(np.float32))
        classes.append(np.asarray([CLASSES.index(label) + 1 for label in frame.labels], np.int64))
        track_ids.append(list(frame.track_ids))
        times.append(frame.t)
        if keep_jpegs:
            jpegs.append(encoded.tobytes())
            masks.append(frame.drivable)
    return DriveData(
        np.stack(steer),
        np.stack(det),
        np.asarray(angle, np.float32),
        np.asarray(throttle, np.float32),
        boxes,
        classes,
        np.asarray(times),
        jpegs,
        masks,
        track_ids,
    )


def jpeg_round_trip(bgr: np.ndarray, what: str) -> Tuple[np.ndarray, np.ndarray]:
    """(decoded, encoded): the frame through JPEG (quality 80) and back, as decode_image returns the message."""
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode {what}")
    return cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED), encoded


def road_shares(mask: np.ndarray) -> np.ndarray:
    """(240, 320) 0/1 mask -> (30, 40) float32 share of road in each class-map cell's source block."""
    rows, cols = IMAGE_HEIGHT // SEG_BLOCK, IMAGE_WIDTH // SEG_BLOCK
    return mask.reshape(rows, SEG_BLOCK, cols, SEG_BLOCK).mean(axis=(1, 3), dtype=np.float32)


def render_drivable_drive(job: Tuple[int, int, float, float], keep_masks: bool = False) -> DrivableData:
    """One drive of a drivable-area world: segmenter inputs (after JPEG) and road shares (and full masks)."""
    world_seed, drive_seed, seconds, fps = job
    drive = Drive(
        World(world_seed),
        fps=fps,
        duration_s=seconds,
        width=IMAGE_WIDTH,
        height=IMAGE_HEIGHT,
        seed=drive_seed,
        drivable_masks=True,
    )
    rgb, road, masks = [], [], []
    for frame in drive:
        decoded, _ = jpeg_round_trip(frame.image_bgr, f"frame {frame.index} of drive {job}")
        rgb.append(to_model_rgb(decoded, SEG_HEIGHT, SEG_WIDTH))
        road.append(road_shares(frame.drivable))
        if keep_masks:
            masks.append(frame.drivable)
    return DrivableData(np.stack(rgb), np.stack(road), np.stack(masks) if keep_masks else None)


def render_drivable_val(job: Tuple[int, int, float, float]) -> DrivableData:
    return render_drivable_drive(job, keep_masks=True)


def concat_drivable(drives: Sequence[DrivableData]) -> DrivableData:
    masks = [d.masks for d in drives if d.masks is not None]
    return DrivableData(
        np.concatenate([d.rgb for d in drives]),
        np.concatenate([d.road for d in drives]),
        np.concatenate(masks) if len(masks) == len(drives) else None,
    )


def render_bag_drive(job: Tuple[int, int, float, float]) -> DriveData:
    return render_drive(job, keep_jpegs=True)


def concat(drives: Sequence[DriveData]) -> DriveData:
    return DriveData(
        np.concatenate([d.steer_rgb for d in drives]),
        np.concatenate([d.det_rgb for d in drives]),
        np.concatenate([d.angle for d in drives]),
        np.concatenate([d.throttle for d in drives]),
        [b for d in drives for b in d.boxes],
        [c for d in drives for c in d.classes],
        np.concatenate([d.times for d in drives]),
        track_ids=[t for d in drives for t in d.track_ids],
    )


def render_all(
    workers: int, with_training: bool = True, with_drivable_training: bool = True
) -> Tuple[Optional[DriveData], DriveData, DriveData, Optional[DrivableData], DrivableData]:
    """Training (unless not ``with_training``), validation and bag drives of the steering and detector
    worlds, then the drivable-area worlds' training (unless not ``with_drivable_training``) and held-out
    drives, rendered in ``workers`` processes (same bytes either way)."""
    jobs = (list(TRAIN_DRIVES) if with_training else []) + list(VAL_DRIVES)
    seg_jobs = list(SEG_TRAIN_DRIVES) if with_drivable_training else []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            bag_future = pool.submit(render_bag_drive, BAG_DRIVE)
            seg_val_futures = [pool.submit(render_drivable_val, job) for job in SEG_VAL_DRIVES]
            drives = list(pool.map(render_drive, jobs))
            seg_train = list(pool.map(render_drivable_drive, seg_jobs))
            bag = bag_future.result()
            seg_val = [future.result() for future in seg_val_futures]
    else:
        drives = [render_drive(job) for job in jobs]
        bag = render_bag_drive(BAG_DRIVE)
        seg_train = [render_drivable_drive(job) for job in seg_jobs]
        seg_val = [render_drivable_val(job) for job in SEG_VAL_DRIVES]
    trained = len(jobs) - len(VAL_DRIVES)
    train = concat(drives[:trained]) if with_training else None
    val = concat(drives[trained:])
    return train, val, bag, concat_drivable(seg_train) if seg_train else None, concat_drivable(seg_val)


# --------------------------------------------------------------------------------------------- anchors


def make_anchors() -> np.ndarray:
    """(A, 4) normalized cx, cy, w, h in head output order: maps finest first, rows, columns, anchors."""
    layers = []
    for (rows, cols), shapes in ANCHOR_LAYERS:
        cy, cx = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols, indexing="ij")
        sizes = np.array([[s * math.sqrt(a), s / math.sqrt(a)] for s, a in shapes])
        layer = np.empty((rows, cols, len(shapes), 4))
        layer[..., 0] = cx[..., None]
        layer[..., 1] = cy[..., None]
        layer[..., 2:] = sizes
        layers.append(layer.reshape(-1, 4))
    return np.concatenate(layers).astype(np.float32)


def corners(cxcywh: np.ndarray) -> np.ndarray:
    half = cxcywh[:, 2:] / 2
    return np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def match_targets(
    boxes_norm: np.ndarray, classes: np.ndarray, anchors: np.ndarray, anchor_corners: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """SSD matching: each truth box takes its best anchor, every anchor with IoU >= POSITIVE_IOU its best box.

    Returns class targets (A,) (0 = background, -1 = ignored: IoU in [IGNORE_IOU, POSITIVE_IOU), too close
    to an object to be a clean negative) and regression targets (A, 4) encoded as the ssd_raw parser
    decodes them (x/y order, variances 0.1, 0.1, 0.2, 0.2).
    """
    count = anchors.shape[0]
    cls_t = np.zeros(count, np.int64)
    loc_t = np.zeros((count, 4), np.float32)
    if len(boxes_norm) == 0:
        return cls_t, loc_t
    iou = box_iou(boxes_norm, anchor_corners)
    best_box = iou.argmax(axis=0)
    best_iou = iou.max(axis=0)
    best_anchor = iou.argmax(axis=1)
    best_box[best_anchor] = np.arange(len(boxes_norm))
    best_iou[best_anchor] = 2.0
    positive = best_iou >= POSITIVE_IOU
    cls_t[positive] = classes[best_box[positive]]
    cls_t[(best_iou >= IGNORE_IOU) & ~positive] = -1
    g = boxes_norm[best_box]
    g_c = (g[:, :2] + g[:, 2:]) / 2
    g_wh = np.maximum(g[:, 2:] - g[:, :2], 1e-6)
    loc_t[:, 0:2] = (g_c - anchors[:, :2]) / (anchors[:, 2:] * np.asarray(VARIANCES[:2]))
    loc_t[:, 2:4] = np.log(g_wh / anchors[:, 2:]) / np.asarray(VARIANCES[2:])
    loc_t[~positive] = 0.0
    return cls_t, loc_t


def detection_targets(data: DriveData, anchors: np.ndarray, flip: bool) -> Tuple[np.ndarray, np.ndarray]:
    anchor_corners = corners(anchors)
    cls_all = np.zeros((len(data.boxes), anchors.shape[0]), np.int64)
    loc_all = np.zeros((len(data.boxes), anchors.shape[0], 4), np.float32)
    for i, (boxes, classes) in enumerate(zip(data.boxes, data.classes)):
        norm = source_to_unit(boxes)
        if flip and len(norm):
            norm = np.stack([1 - norm[:, 2], norm[:, 1], 1 - norm[:, 0], norm[:, 3]], axis=1)
        cls_all[i], loc_all[i] = match_targets(norm, classes, anchors, anchor_corners)
    return cls_all, loc_all


# -------------------------------------------------------------------------------------------- metrics


@dataclass
class DetectionScore:
    truths: int = 0
    found: int = 0
    reasonable_truths: int = 0
    reasonable_found: int = 0
    detections: int = 0
    correct: int = 0

    def add(
        self,
        det_boxes: np.ndarray,
        det_classes: np.ndarray,
        det_scores: np.ndarray,
        truth_boxes: np.ndarray,
        truth_classes: np.ndarray,
    ) -> None:
        """Greedy matching by score at IoU >= 0.5, same class, each truth box matched once."""
        self.truths += len(truth_boxes)
        self.detections += len(det_boxes)
        tall = (
            (truth_boxes[:, 3] - truth_boxes[:, 1]) >= REASONABLE_HEIGHT_PX
            if len(truth_boxes)
            else np.zeros(0, bool)
        )
        self.reasonable_truths += int(tall.sum())
        if len(det_boxes) == 0 or len(truth_boxes) == 0:
            return
        iou = box_iou(np.asarray(det_boxes, np.float64), np.asarray(truth_boxes, np.float64))
        iou[np.asarray(det_classes)[:, None] != np.asarray(truth_classes)[None, :]] = 0.0
        taken = np.zeros(len(truth_boxes), bool)
        for d in np.argsort(-np.asarray(det_scores)):  # a handful of boxes per frame
            candidates = np.where(taken, 0.0, iou[d])
            t = int(np.argmax(candidates))
            if candidates[t] >= 0.5:
                taken[t] = True
                self.correct += 1
        self.found += int(taken.sum())
        self.reasonable_found += int((taken & tall).sum())

    @property
    def recall(self) -> float:
        return self.found / max(1, self.truths)

    @property
    def reasonable_recall(self) -> float:
        return self.reasonable_found / max(1, self.reasonable_truths)

    @property
    def precision(self) -> float:
        return self.correct / max(1, self.detections)

    def text(self) -> str:
        return (
            f"recall {self.recall:.3f} ({self.found}/{self.truths}), recall on boxes >= "
            f"{REASONABLE_HEIGHT_PX:g} px tall {self.reasonable_recall:.3f} "
            f"({self.reasonable_found}/{self.reasonable_truths}), precision {self.precision:.3f} "
            f"({self.correct}/{self.detections})"
        )


@dataclass
class SegmentationScore:
    """Pixel confusion of the drivable-area masks at the source size: rows truth, columns prediction."""

    matrix: np.ndarray = field(default_factory=lambda: np.zeros((len(SEG_LABELS),) * 2, np.int64))
    frames: int = 0

    def add(self, truth: np.ndarray, predicted: np.ndarray) -> None:
        classes = len(SEG_LABELS)
        index = truth.astype(np.int64).ravel() * classes + predicted.astype(np.int64).ravel()
        self.matrix += np.bincount(index, minlength=classes * classes).reshape(classes, classes)
        self.frames += 1

    @property
    def iou(self) -> np.ndarray:
        tp = np.diag(self.matrix).astype(np.float64)
        return tp / np.maximum(self.matrix.sum(0) + self.matrix.sum(1) - tp, 1)

    @property
    def miou(self) -> float:
        return float(self.iou.mean())

    @property
    def pixel_accuracy(self) -> float:
        return float(np.trace(self.matrix) / max(1, self.matrix.sum()))

    def text(self) -> str:
        ious = ", ".join(f"{label} {iou:.3f}" for label, iou in zip(SEG_LABELS, self.iou))
        return f"mIoU {self.miou:.3f} (IoU {ious}), pixel accuracy {self.pixel_accuracy:.3f} over {self.frames} frames"


# -------------------------------------------------------------------------------------------- specs


def steering_spec() -> Dict[str, Any]:
    return {
        "name": "demo_steering",
        "task": "steering",
        "input": {
            "name": "img_in",
            "layout": "NHWC",
            "height": STEER_HEIGHT,
            "width": STEER_WIDTH,
            "color": "RGB",
            "scale": 1.0 / 255.0,
            "offset": 0.0,
        },
        "output": {"format": "steering_linear", "tensors": {"angle": "angle", "throttle": "throttle"}},
    }


def detector_spec() -> Dict[str, Any]:
    return {
        "name": "demo_detector",
        "task": "detection",
        "input": {
            "name": "images",
            "layout": "NCHW",
            "height": DET_HEIGHT,
            "width": DET_WIDTH,
            "color": "RGB",
            "resize": "stretch",
            "crop": {"top": DET_CROP_TOP, "bottom": 0},
            "scale": 2.0 / 255.0,
            "offset": -1.0,
        },
        "output": {
            "format": "ssd_raw",
            "tensors": {"scores": "scores", "boxes": "boxes"},
            "anchors": {"file": "detector_anchors.npy"},
            "variances": list(VARIANCES),
            "box_order": "xy",
            "score_activation": "softmax",
            "background_class": 0,
        },
        "detection": {
            "labels": "labels.txt",
            "first_label_id": 0,
            "score_threshold": SCORE_THRESHOLD,
            "iou_threshold": IOU_THRESHOLD,
            "max_detections": MAX_DETECTIONS,
        },
    }


def drivable_spec() -> Dict[str, Any]:
    return {
        "name": "demo_drivable",
        "task": "segmentation",
        "input": {
            "name": "images",
            "layout": "NCHW",
            "height": SEG_HEIGHT,
            "width": SEG_WIDTH,
            "color": "RGB",
            "resize": "stretch",
            "scale": 1.0 / 255.0,
            "offset": 0.0,
        },
        "output": {"format": "segmentation", "tensors": {"mask": "logits"}},
        "segmentation": {"labels": list(SEG_LABELS), "colors": [list(c) for c in SEG_COLORS]},
    }


def write_yaml(path: Path, header: str, data: Dict[str, Any]) -> None:
    parse_spec(data, source=path)  # the spec must parse before it is written
    text = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    path.write_text(text + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


# -------------------------------------------------------------------------------------------- training


def train_steering(torch: Any, train: DriveData, val: DriveData, epochs: int) -> Any:
    """A DonkeyCar-Linear-style CNN: NHWC [0, 1] RGB in, separate angle and throttle heads out."""
    nn = torch.nn

    class SteeringNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # A 4x4/4 "patch" first layer keeps CPU training to a minute or two on 120x160 inputs.
            self.features = nn.Sequential(
                nn.Conv2d(3, 24, 4, stride=4),
                nn.ReLU(),
                nn.Conv2d(24, 32, 3, stride=2),
                nn.ReLU(),
                nn.Conv2d(32, 48, 3, stride=2),
                nn.ReLU(),
                nn.Conv2d(48, 48, 3),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(48 * 4 * 7, 64),
                nn.ReLU(),
                nn.Dropout(0.1),
            )
            self.angle = nn.Linear(64, 1)
            self.throttle = nn.Linear(64, 1)

        def forward(self, img_in: Any) -> Tuple[Any, Any]:
            x = self.features(img_in.permute(0, 3, 1, 2))
            return self.angle(x), self.throttle(x)

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = SteeringNet()
    images = torch.from_numpy(train.steer_rgb)
    angles = torch.from_numpy(train.angle)
    throttles = torch.from_numpy(train.throttle)
    batch = 64
    steps = epochs * math.ceil(len(images) / batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.2)
    log(
        f"steering: {sum(p.numel() for p in model.parameters())} parameters, {len(images)} frames "
        f"(+ mirrored), {epochs} epochs"
    )
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(images)))
        flips = torch.from_numpy(rng.random(len(images)) < 0.5)
        total, seen = 0.0, 0
        for start in range(0, len(images), batch):
            idx = order[start : start + batch]
            x = photometric(torch, images[idx].float(), generator).div_(255.0)
            flip = flips[start : start + batch]
            x[flip] = x[flip].flip(2)  # mirror left-right (NHWC: W is dim 2) and negate the angle
            angle = torch.where(flip, -angles[idx], angles[idx])[:, None]
            throttle = throttles[idx][:, None]
            pred_angle, pred_throttle = model(x)
            loss = nn.functional.mse_loss(pred_angle, angle) + 0.5 * nn.functional.mse_loss(
                pred_throttle, throttle
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        angle_mae, throttle_mae = steering_mae(torch, model, val)
        log(
            f"  epoch {epoch + 1}/{epochs}: train loss {total / seen:.4f}, "
            f"held-out angle MAE {angle_mae:.4f}, throttle MAE {throttle_mae:.4f}"
        )
    model.eval()
    return model


def steering_mae(torch: Any, model: Any, data: DriveData) -> Tuple[float, float]:
    model.eval()
    with torch.no_grad():
        angle, throttle = [], []
        for start in range(0, len(data.angle), 256):
            a, t = model(torch.from_numpy(data.steer_rgb[start : start + 256]).float().div_(255.0))
            angle.append(a[:, 0].numpy())
            throttle.append(t[:, 0].numpy())
    return (
        float(np.mean(np.abs(np.concatenate(angle) - data.angle))),
        float(np.mean(np.abs(np.concatenate(throttle) - data.throttle))),
    )


def make_detector_net(torch: Any) -> Any:
    nn = torch.nn
    classes = len(LABELS)
    per_cell = [len(shapes) for _, shapes in ANCHOR_LAYERS]

    def block(cin: int, cout: int, kernel: int, stride: int) -> List[Any]:
        return [
            nn.Conv2d(
                cin, cout, kernel, stride, kernel // 2 if stride == 1 or kernel == 3 else 0, bias=False
            ),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        ]

    class DetectorNet(nn.Module):
        """Three feature maps (strides 8, 16, 32) with a 3x3 class head and box head on each.

        The 4x4/4 first layer keeps CPU training within minutes; objects down to ~6 px still register.
        """

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(*block(3, 24, 4, 4), *block(24, 32, 3, 2), *block(32, 32, 3, 1))
            self.mid = nn.Sequential(*block(32, 48, 3, 2), *block(48, 48, 3, 1))
            self.low = nn.Sequential(*block(48, 64, 3, 2))
            self.cls_heads = nn.ModuleList(
                nn.Conv2d(c, k * classes, 3, 1, 1) for c, k in zip((32, 48, 64), per_cell)
            )
            self.box_heads = nn.ModuleList(
                nn.Conv2d(c, k * 4, 3, 1, 1) for c, k in zip((32, 48, 64), per_cell)
            )

        def forward(self, images: Any) -> Tuple[Any, Any]:
            f1 = self.stem(images)
            f2 = self.mid(f1)
            f3 = self.low(f2)
            scores, boxes = [], []
            for feature, cls_head, box_head in zip((f1, f2, f3), self.cls_heads, self.box_heads):
                n = feature.shape[0]
                # (N, k*C, H, W) -> (N, H, W, k*C) -> (N, H*W*k, C): rows, columns, anchors, like the anchors.
                scores.append(cls_head(feature).permute(0, 2, 3, 1).reshape(n, -1, classes))
                boxes.append(box_head(feature).permute(0, 2, 3, 1).reshape(n, -1, 4))
            return torch.cat(scores, 1), torch.cat(boxes, 1)

    return DetectorNet()


def train_detector(
    torch: Any, train: DriveData, val: DriveData, anchors: np.ndarray, epochs: int, evaluate: Any
) -> Any:
    """SSD training: IoU matching (+ each box's best anchor; see POSITIVE_IOU), hard negatives 3:1."""
    nn = torch.nn
    torch.manual_seed(SEED + 1)
    rng = np.random.default_rng(SEED + 1)
    generator = torch.Generator().manual_seed(SEED + 1)
    model = make_detector_net(torch)
    t0 = time.perf_counter()
    targets = [detection_targets(train, anchors, flip) for flip in (False, True)]
    cls_t = [torch.from_numpy(t[0]) for t in targets]
    loc_t = [torch.from_numpy(t[1]) for t in targets]
    positives = int((targets[0][0] > 0).sum())
    log(
        f"detector: {sum(p.numel() for p in model.parameters())} parameters, {anchors.shape[0]} anchors, "
        f"{len(train.det_rgb)} frames (+ mirrored), {sum(len(b) for b in train.boxes)} boxes -> {positives} "
        f"positive anchors, matching took {time.perf_counter() - t0:.1f} s; {epochs} epochs"
    )
    images = torch.from_numpy(train.det_rgb)
    batch = 32
    steps = epochs * math.ceil(len(images) / batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3, total_steps=steps, pct_start=0.15)
    classes = len(LABELS)
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(images)))
        flips = rng.random(len(images)) < 0.5
        total, seen = 0.0, 0
        for start in range(0, len(images), batch):
            idx = order[start : start + batch]
            flip = torch.from_numpy(flips[start : start + batch])
            x = photometric(torch, images[idx].float(), generator).mul_(2.0 / 255.0).sub_(1.0)
            x[flip] = x[flip].flip(2)
            x = x.permute(0, 3, 1, 2).contiguous()
            target_cls = torch.where(flip[:, None], cls_t[1][idx], cls_t[0][idx])
            target_loc = torch.where(flip[:, None, None], loc_t[1][idx], loc_t[0][idx])
            logits, deltas = model(x)
            ce = nn.functional.cross_entropy(
                logits.reshape(-1, classes), target_cls.clamp(min=0).reshape(-1), reduction="none"
            ).reshape(target_cls.shape)
            pos = target_cls > 0
            num_pos = pos.sum(1)
            mining = ce.detach().masked_fill(target_cls != 0, -1.0)  # rank negatives only
            rank = mining.argsort(1, descending=True).argsort(1)
            num_neg = torch.clamp(3 * num_pos, min=8)
            neg = rank < num_neg[:, None]
            normalizer = torch.clamp(num_pos.sum(), min=1).float()
            cls_loss = ce[pos | (neg & (target_cls == 0))].sum() / normalizer
            loc_loss = (
                nn.functional.smooth_l1_loss(deltas[pos], target_loc[pos], reduction="sum") / normalizer
            )
            loss = cls_loss + loc_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        line = f"  epoch {epoch + 1}/{epochs}: train loss {total / seen:.4f}"
        if epoch == epochs - 1 or (epoch + 1) % 3 == 0:
            line += f"; held-out {evaluate(model).text()}"
        log(line)
    model.eval()
    return model


def make_drivable_net(torch: Any) -> Any:
    nn = torch.nn

    def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> List[Any]:
        return [
            nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        ]

    class DrivableNet(nn.Module):
        """A 4x4/4 "patch" convolution (one class-map cell per 4x4 input patch = 8x8 source block; it keeps
        CPU training to minutes), then 3x3s dilated 1, 2, 4, 8 (each cell sees ~31 cells, enough to tell a
        road from a similar-coloured verge by its shape), and a 1x1 head: logits [N, 2, H/4, W/4]."""

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 24, SEG_STRIDE, SEG_STRIDE, bias=False),
                nn.BatchNorm2d(24),
                nn.ReLU(),
                *block(24, 24),
                *block(24, 24, 1, 2),
                *block(24, 24, 1, 4),
                *block(24, 24, 1, 8),
            )
            self.head = nn.Conv2d(24, len(SEG_LABELS), 1)

        def forward(self, images: Any) -> Any:
            return self.head(self.body(images))

    return DrivableNet()


def drivable_class_maps(torch: Any, model: Any, rgb: np.ndarray) -> np.ndarray:
    """(n, 30, 40) uint8 class maps (argmax of the logits) for NHWC uint8 segmenter inputs."""
    model.eval()
    maps = []
    with torch.no_grad():
        for start in range(0, len(rgb), 128):
            x = torch.from_numpy(rgb[start : start + 128]).float().div_(255.0).permute(0, 3, 1, 2).contiguous()
            maps.append(model(x).argmax(1).numpy().astype(np.uint8))
    return np.concatenate(maps)


def to_source_size(class_map: np.ndarray) -> np.ndarray:
    """A (30, 40) class map -> (240, 320): each cell fills its 8x8 source block (what mask_to_source does for
    this stretch-resized input)."""
    return np.repeat(np.repeat(class_map, SEG_BLOCK, axis=-2), SEG_BLOCK, axis=-1)


def drivable_score(torch: Any, model: Any, data: DrivableData) -> SegmentationScore:
    """Held-out score against the full-size masks."""
    assert data.masks is not None
    score = SegmentationScore()
    for class_map, mask in zip(drivable_class_maps(torch, model, data.rgb), data.masks):
        score.add(mask, to_source_size(class_map))
    model.train()
    return score


def train_drivable(torch: Any, train: DrivableData, val: DrivableData, epochs: int) -> Any:
    """Per-cell cross-entropy against the share of road in the cell's 8x8 source block (a soft target: the
    argmax then takes the block's majority, the best a stride-4 map can do); mirrored half the time."""
    nn = torch.nn
    torch.manual_seed(SEED + 2)
    rng = np.random.default_rng(SEED + 2)
    generator = torch.Generator().manual_seed(SEED + 2)
    model = make_drivable_net(torch)
    images = torch.from_numpy(train.rgb)
    road = torch.from_numpy(train.road)
    batch = 32
    steps = epochs * math.ceil(len(images) / batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3, total_steps=steps, pct_start=0.15)
    log(
        f"drivable: {sum(p.numel() for p in model.parameters())} parameters, {len(images)} frames "
        f"(+ mirrored), road {float(train.road.mean()):.2f} of the pixels, {epochs} epochs"
    )
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(images)))
        flips = torch.from_numpy(rng.random(len(images)) < 0.5)
        total, seen = 0.0, 0
        for start in range(0, len(images), batch):
            idx = order[start : start + batch]
            flip = flips[start : start + batch]
            x = photometric(torch, images[idx].float(), generator).div_(255.0)
            x[flip] = x[flip].flip(2)  # NHWC: W is dim 2
            target = road[idx].clone()
            target[flip] = target[flip].flip(2)  # (n, rows, cols)
            logits = model(x.permute(0, 3, 1, 2).contiguous())
            log_p = nn.functional.log_softmax(logits, dim=1)
            loss = -((1.0 - target) * log_p[:, 0] + target * log_p[:, 1]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        line = f"  epoch {epoch + 1}/{epochs}: train loss {total / seen:.4f}"
        if epoch == epochs - 1 or (epoch + 1) % 3 == 0:
            line += f"; held-out {drivable_score(torch, model, val).text()}"
        log(line)
    model.eval()
    return model


def photometric(torch: Any, x: Any, generator: Any) -> Any:
    """Random light per sample on NHWC pixels in [0, 255]: brightness, contrast, colour cast, saturation.

    The worlds already vary their light; this widens it so a new world's light is never out of range.
    """
    n = x.shape[0]

    def uniform(low: float, high: float, *shape: int) -> Any:
        return torch.rand((n, *shape), generator=generator) * (high - low) + low

    gray = x.mean(dim=3, keepdim=True)
    x = gray + (x - gray) * uniform(0.6, 1.4, 1, 1, 1)  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * uniform(0.7, 1.3, 1, 1, 1)  # contrast
    x = x * uniform(0.65, 1.35, 1, 1, 1) * uniform(0.88, 1.12, 1, 1, 3)  # brightness, colour cast
    return x.clamp_(0.0, 255.0)


# ------------------------------------------------------------------------------------------------ export


def export_onnx(
    torch: Any, model: Any, example: Any, path: Path, input_name: str, output_names: Sequence[str], doc: str
) -> None:
    import onnx

    model.eval()
    options: Dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False  # the TorchScript exporter: no onnxscript needed, plain static graphs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=list(output_names),
            opset_version=OPSET,
            do_constant_folding=True,
            # batch first and dynamic everywhere: replay and the node's cameras run several frames as one batch
            dynamic_axes={name: {0: "batch"} for name in (input_name, *output_names)},
            **options,
        )
    proto = onnx.load(str(path))
    proto.doc_string = doc
    proto.producer_name = "trt_perception scripts/make_demo.py"
    proto.producer_version = f"torch {torch.__version__}"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def check_onnx(torch: Any, model: Any, path: Path, feed: np.ndarray) -> float:
    """Max abs difference between ONNX Runtime and torch on ``feed``, frame by frame and as one batch (which
    must give each frame's outputs exactly); also checks that only the batch dimension is dynamic."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for tensor in list(session.get_inputs()) + list(session.get_outputs()):
        if isinstance(tensor.shape[0], int) or not all(isinstance(d, int) for d in tensor.shape[1:]):
            raise RuntimeError(f"{path.name}: tensor {tensor.name} has shape {tensor.shape}; expected a dynamic "
                               "batch dimension and static others")
    names = [o.name for o in session.get_outputs()]
    batched = session.run(names, {session.get_inputs()[0].name: feed})
    worst = 0.0
    for item in feed:
        got = session.run(names, {session.get_inputs()[0].name: item[None]})
        with torch.no_grad():
            want = model(torch.from_numpy(item[None]))
        if not isinstance(want, (tuple, list)):
            want = (want,)
        for g, w in zip(got, want):
            worst = max(worst, float(np.max(np.abs(g - w.numpy()))))
    for index, item in enumerate(feed):
        for single, rows in zip(session.run(names, {session.get_inputs()[0].name: item[None]}), batched):
            if not np.array_equal(single, rows[index : index + 1]):
                raise RuntimeError(f"{path.name}: frame {index} of a batch of {len(feed)} differs from the frame "
                                   "alone")
    return worst


# --------------------------------------------------------------------------------------------------- bag


def write_bag(path: Path, data: DriveData) -> None:
    """rosbag2 (mcap): camera jpegs, the human Twist, the true boxes with their objects' track ids in
    Detection2D.id and (when ``data.masks``) the true drivable-area masks as png, all at the frame's record time.

    The Twist follows REP 103 as the node's messages do: angular.z = -steering (positive = left),
    linear.x = throttle.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    from trt_perception.rosbag_types import get_typestore

    store = get_typestore("jazzy")
    t = store.types
    image_type, twist_type = "sensor_msgs/msg/CompressedImage", "geometry_msgs/msg/Twist"
    truth_type = "vision_msgs/msg/Detection2DArray"
    with Writer(path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP) as writer:
        image_conn = writer.add_connection(TOPIC_IMAGE, image_type, typestore=store)
        command_conn = writer.add_connection(TOPIC_COMMAND, twist_type, typestore=store)
        truth_conn = writer.add_connection(TOPIC_TRUTH, truth_type, typestore=store)
        mask_conn = writer.add_connection(TOPIC_DRIVABLE, image_type, typestore=store) if data.masks else None
        for i, jpeg in enumerate(data.jpegs):
            stamp_ns = BAG_START_NS + round(float(data.times[i]) * 1e9)
            stamp = t["builtin_interfaces/msg/Time"](
                sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
            )
            header = t["std_msgs/msg/Header"](stamp=stamp, frame_id=FRAME_ID)
            image = t[image_type](header=header, format="jpeg", data=np.frombuffer(jpeg, np.uint8))
            writer.write(image_conn, stamp_ns, store.serialize_cdr(image, image_type))
            vector = t["geometry_msgs/msg/Vector3"]
            twist = t[twist_type](
                linear=vector(x=float(data.throttle[i]), y=0.0, z=0.0),
                angular=vector(x=0.0, y=0.0, z=-float(data.angle[i])),
            )
            writer.write(command_conn, stamp_ns, store.serialize_cdr(twist, twist_type))
            detections = []
            ids = data.track_ids[i]
            if len(ids) != len(data.boxes[i]):
                raise RuntimeError(f"frame {i}: {len(data.boxes[i])} truth boxes but {len(ids)} track ids")
            for box, class_id, track_id in zip(data.boxes[i], data.classes[i], ids):
                x0, y0, x1, y1 = (float(v) for v in box)
                hypothesis = t["vision_msgs/msg/ObjectHypothesisWithPose"](
                    hypothesis=t["vision_msgs/msg/ObjectHypothesis"](
                        class_id=LABELS[int(class_id)], score=1.0
                    ),
                    pose=t["geometry_msgs/msg/PoseWithCovariance"](
                        pose=t["geometry_msgs/msg/Pose"](
                            position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                            orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
                        ),
                        covariance=np.zeros(36, np.float64),
                    ),
                )
                bbox = t["vision_msgs/msg/BoundingBox2D"](
                    center=t["vision_msgs/msg/Pose2D"](
                        position=t["vision_msgs/msg/Point2D"](x=(x0 + x1) / 2, y=(y0 + y1) / 2), theta=0.0
                    ),
                    size_x=x1 - x0,
                    size_y=y1 - y0,
                )
                detections.append(
                    t["vision_msgs/msg/Detection2D"](
                        header=header, results=[hypothesis], bbox=bbox, id=track_id
                    )
                )
            truth = t[truth_type](header=header, detections=detections)
            writer.write(truth_conn, stamp_ns, store.serialize_cdr(truth, truth_type))
            if mask_conn is not None:
                ok, png = cv2.imencode(".png", data.masks[i], [cv2.IMWRITE_PNG_COMPRESSION, 9])
                if not ok:
                    raise RuntimeError(f"OpenCV could not png-encode the drivable mask of frame {i}")
                mask = t[image_type](header=header, format=DRIVABLE_FORMAT, data=png.reshape(-1))
                writer.write(mask_conn, stamp_ns, store.serialize_cdr(mask, image_type))


def read_bag(path: Path) -> List[Tuple[Any, Any, Any, Any]]:
    """(image, twist, detections, drivable mask or None) per frame, read back with rosbags to prove the bag
    is readable."""
    from rosbags.rosbag2 import Reader

    from trt_perception.rosbag_types import get_typestore

    store = get_typestore("jazzy")
    by_stamp: Dict[int, Dict[str, Any]] = {}
    with Reader(path) as reader:
        for conn, t_ns, raw in reader.messages():
            by_stamp.setdefault(t_ns, {})[conn.topic] = store.deserialize_cdr(raw, conn.msgtype)
    return [
        (v[TOPIC_IMAGE], v[TOPIC_COMMAND], v[TOPIC_TRUTH], v.get(TOPIC_DRIVABLE))
        for _, v in sorted(by_stamp.items())
    ]


def bag_differences(old: Path, new: Path) -> List[str]:
    """Where the ``new`` bag differs from the ``old`` one outside the truth boxes' ids: the KEPT_TOPICS'
    messages must be the same bytes at the same times, and the truth messages the same bytes once every
    Detection2D.id is blanked in both. Empty when only the ids changed."""
    from rosbags.rosbag2 import Reader

    from trt_perception.rosbag_types import get_typestore

    store = get_typestore("jazzy")

    def messages(path: Path) -> Dict[str, List[Tuple[int, bytes]]]:
        found: Dict[str, List[Tuple[int, bytes]]] = {}
        with Reader(path) as reader:
            for conn, t_ns, raw in reader.messages():
                if conn.topic == TOPIC_TRUTH:
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                    for detection in msg.detections:
                        detection.id = ""
                    raw = store.serialize_cdr(msg, conn.msgtype)
                found.setdefault(conn.topic, []).append((t_ns, bytes(raw)))
        return found

    before, after = messages(old), messages(new)
    problems = []
    for topic in (*KEPT_TOPICS, TOPIC_TRUTH):
        a, b = before.get(topic, []), after.get(topic, [])
        if len(a) != len(b):
            problems.append(f"{topic}: {len(a)} messages before, {len(b)} now")
            continue
        changed = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        if changed:
            problems.append(f"{topic}: {len(changed)} of {len(a)} messages differ (first: message {changed[0]})")
    return problems


# ------------------------------------------------------------------------------------------- evaluation


@dataclass
class BagResult:
    frames: int
    steering_mae: float
    steering_rmse: float
    throttle_mae: float
    detection: DetectionScore
    truth_per_class: Dict[str, int]
    seconds: float
    drivable: SegmentationScore = field(default_factory=SegmentationScore)
    mask_bytes: int = 0  # png bytes of the drivable-area truth, all frames
    truth_tracks: int = 0  # distinct track ids (Detection2D.id) among the truth boxes


def evaluate_bag(models: Path, drivable_folder: Path, bag: Path) -> BagResult:
    """The models as heads (ModelPipeline + their task) on the bag's messages, as replay and the node run
    them: steering and detector from ``models``, the drivable area from ``drivable_folder``."""
    from trt_perception.heads import open_model
    from trt_perception.images import decode_compressed, decode_image

    pilot = open_model(models / "steering.onnx", backend="onnxruntime")
    detector = open_model(models / "detector.onnx", backend="onnxruntime")
    drivable = open_model(drivable_folder / "drivable.onnx", backend="onnxruntime")
    segmentation = SegmentationScore()
    mask_bytes = 0
    errors_angle, errors_throttle = [], []
    score = DetectionScore()
    per_class: Dict[str, int] = {}
    track_ids = set()
    label_ids = {label: i for i, label in enumerate(LABELS)}
    messages = read_bag(bag)
    for image_msg, twist, truth, mask_msg in messages:
        image = decode_image(image_msg)
        if mask_msg is None:
            raise RuntimeError(f"{bag}: a frame has no {TOPIC_DRIVABLE} message")
        mask_bytes += len(mask_msg.data)
        true_mask = decode_compressed(mask_msg.format, mask_msg.data).array
        segmentation.add(true_mask, drivable.run(image, 0.0).result.mask)
        steering = pilot.run(image, 0.0).result
        errors_angle.append(steering.angle - (-twist.angular.z))
        errors_throttle.append(steering.throttle - twist.linear.x)
        found = detector.run(image, 0.0).result
        truth_boxes = np.array(
            [
                [
                    d.bbox.center.position.x - d.bbox.size_x / 2,
                    d.bbox.center.position.y - d.bbox.size_y / 2,
                    d.bbox.center.position.x + d.bbox.size_x / 2,
                    d.bbox.center.position.y + d.bbox.size_y / 2,
                ]
                for d in truth.detections
            ],
            np.float64,
        ).reshape(-1, 4)
        truth_labels = [d.results[0].hypothesis.class_id for d in truth.detections]
        track_ids.update(d.id for d in truth.detections)
        for label in truth_labels:
            per_class[label] = per_class.get(label, 0) + 1
        score.add(
            found.boxes,
            np.asarray([label_ids.get(x, -1) for x in found.labels]),
            found.scores,
            truth_boxes,
            np.asarray([label_ids[x] for x in truth_labels]),
        )
    pilot.close()
    detector.close()
    drivable.close()
    angle = np.asarray(errors_angle)
    return BagResult(
        len(messages),
        float(np.mean(np.abs(angle))),
        float(np.sqrt(np.mean(angle**2))),
        float(np.mean(np.abs(errors_throttle))),
        score,
        per_class,
        len(messages) / FPS,
        segmentation,
        mask_bytes,
        len(track_ids - {""}),
    )


# ------------------------------------------------------------------------------------------------ README


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def readme_text(
    result: BagResult,
    val_steering: Tuple[float, float],
    val_detection: DetectionScore,
    val_drivable: SegmentationScore,
    sizes: Dict[str, int],
    torch_versions: Dict[str, str],
) -> str:
    det, seg = result.detection, result.drivable
    truth_counts = ", ".join(f"{n} {label}" for label, n in sorted(result.truth_per_class.items()))
    anchors = sum(rows * cols * len(shapes) for (rows, cols), shapes in ANCHOR_LAYERS)
    files = _table(("file", "bytes"), [(f"`{name}`", f"{size:,}") for name, size in sizes.items()])
    topics = _table(
        ("topic", "type", "content"),
        [
            (
                f"`{TOPIC_IMAGE}`",
                "sensor_msgs/msg/CompressedImage",
                f"format `jpeg` (quality {JPEG_QUALITY}), 320x240, header.frame_id `{FRAME_ID}`",
            ),
            (
                f"`{TOPIC_COMMAND}`",
                "geometry_msgs/msg/Twist",
                "the human command: `linear.x` = throttle [0, 1], `angular.z` = -steering (REP 103, "
                "positive = left; steering +1 = full right), as the node publishes it with "
                "`steering_scale: 1.0`",
            ),
            (
                f"`{TOPIC_TRUTH}`",
                "vision_msgs/msg/Detection2DArray",
                "true boxes in pixels (`bbox.center.position.x/y`, `bbox.size_x/size_y`), "
                "`results[0].hypothesis.class_id` = `cone` or `box`, score 1.0, `id` = the object's track id "
                "(`cone-12`: the same object keeps it in every frame it is seen), header copied from the image",
            ),
            (
                f"`{TOPIC_DRIVABLE}`",
                "sensor_msgs/msg/CompressedImage",
                f"the true drivable area: format `{DRIVABLE_FORMAT}`, 320x240 class ids (0 = background, "
                "1 = road: the road surface with its painted lines, cones and boxes in front of it cut out), "
                "header copied from the image",
            ),
        ],
    )
    metrics = _table(
        ("metric", "value"),
        [
            ("steering MAE (normalized, full lock = 1)", f"{result.steering_mae:.3f}"),
            ("steering RMSE", f"{result.steering_rmse:.3f}"),
            ("throttle MAE", f"{result.throttle_mae:.3f}"),
            (f"detector recall at IoU 0.5, all {det.truths} true boxes", f"{det.recall:.3f}"),
            (
                f"detector recall, the {det.reasonable_truths} boxes >= {REASONABLE_HEIGHT_PX:g} px tall",
                f"{det.reasonable_recall:.3f}",
            ),
            (
                f"detector precision ({det.detections} detections, score >= {SCORE_THRESHOLD:g})",
                f"{det.precision:.3f}",
            ),
            ("drivable area mIoU (background, road), at 320x240", f"{seg.miou:.3f}"),
            ("drivable area IoU of road", f"{seg.iou[1]:.3f}"),
            ("drivable area pixel accuracy", f"{seg.pixel_accuracy:.3f}"),
        ],
    )
    made_with = " and ".join(
        f"torch {version} ({', '.join(names)})" for version, names in _group_by_value(torch_versions).items()
    )
    seg_shape = f"[1, {len(SEG_LABELS)}, {SEG_HEIGHT // SEG_STRIDE}, {SEG_WIDTH // SEG_STRIDE}]"
    return f"""# The demo: a recorded drive and three tiny models, all made from a synthetic world

**The demo models are trained on synthetic scenes** (a rendered track with traffic cones and boxes, see
`trt_perception/tools/synthetic_world.py`). They show the pipeline working end to end; they are not models
for a real car. Run it with `trt-perception demo`, or with replay directly:

    trt-perception replay trt_perception/data/demo/drive_bag --params config/demo.yaml \\
        --truth-drive-topic {TOPIC_COMMAND} --truth-detections-topic {TOPIC_TRUTH} \\
        --truth-mask-topic {TOPIC_DRIVABLE} --report demo_report

Everything here except `demo_params.yaml` (the params of `trt-perception demo`, kept by hand) is made by
`python scripts/make_demo.py --out trt_perception/data/demo --force` (torch is needed only for that:
`pip install torch==2.13.0`); nothing is downloaded. `--only drivable` remakes just `drivable.onnx`,
`drivable.yaml`, the bag and this file, leaving the steering and detector files as they are; `--only bag`
remakes just the bag and this file (no torch needed). Either way the new bag's camera, command and mask
messages must be the same bytes as the old bag's, and its truth boxes the same apart from their ids.

{files}

## The bag: `drive_bag/` (rosbag2, mcap storage, metadata version {BAG_VERSION}, Jazzy message definitions)

{result.frames} frames, {result.seconds:.0f} s at {FPS:g} Hz, from a world and a path that no training frame
comes from (world seed {BAG_DRIVE[0]}, drive seed {BAG_DRIVE[1]}). The four topics carry one message per
frame each, all with the frame's time as record time and header.stamp (from 2025-01-01T00:00:00Z):

{topics}

The human is a pure-pursuit controller following the centre line, with a random disturbance on the car's
path so that it wanders off the line and the commands include recoveries; throttle drops before curves.
The truth holds the cones and boxes at least {MIN_BOX_PX:g} px on each side and not more than half hidden
(by nearer objects or the image border): {truth_counts}. Each box carries its object's track id in
`Detection2D.id` (`cone-12`, `box-31`: the object's place in the world), {result.truth_tracks} ids in all, so
replay scores a tracking detection head (`tracker: bytetrack`) with MOTA and IDF1. An object that leaves the
view (a curve, or hidden by a nearer one) keeps its id when it comes back.

The drivable-area truth is drawn by `render_drivable_mask` from the same geometry as the frame. It is a
png-compressed mono8 image (about {result.mask_bytes / max(1, result.frames) / 1024:.1f} KiB a frame) rather
than a raw `sensor_msgs/Image` (76.8 KiB a frame, some 20 MB for the bag) at the full 320x240; replay
decodes either. Its pixels are class ids 0 and 1, so a plain image viewer shows it nearly black.

## The models

- `steering.onnx` + `steering.yaml`: DonkeyCar "Linear"-style CNN; input `img_in` NHWC 1x120x160x3 RGB
  scaled by 1/255 (the whole frame, stretched); outputs `angle` and `throttle`, [1, 1] each; format
  `steering_linear`.
- `detector.onnx` + `detector.yaml` + `detector_anchors.npy` + `labels.txt`: tiny SSD-style detector;
  input `images` NCHW 1x3x{DET_HEIGHT}x{DET_WIDTH} RGB scaled x*2/255-1, the frame below the sky (spec crop
  `top: {DET_CROP_TOP}` model rows = the top {DET_CROP_SOURCE_ROWS} of 240 source rows) stretched to the
  input; raw heads `scores` [1, {anchors}, 3] (logits, softmax; class 0 background, 1 cone, 2 box) and `boxes`
  [1, {anchors}, 4] (dx, dy, dw, dh against the anchors, variances 0.1, 0.1, 0.2, 0.2); format `ssd_raw`.
- `drivable.onnx` + `drivable.yaml`: tiny drivable-area segmenter (a {SEG_STRIDE}x{SEG_STRIDE}/{SEG_STRIDE}
  patch convolution, four 3x3 convolutions dilated 1, 2, 4, 8, a 1x1 head); input `images` NCHW
  1x3x{SEG_HEIGHT}x{SEG_WIDTH} RGB scaled by 1/255 (the whole frame, stretched); output `logits`
  {seg_shape} (stride {SEG_STRIDE}; class 0 `background`, 1 `road`); format `segmentation`. Trained on
  {len(SEG_TRAIN_DRIVES)} worlds of its own (seeds {SEG_TRAIN_DRIVES[0][0]}-{SEG_TRAIN_DRIVES[-1][0]}, none
  the bag's or the other models'), against the share of road in each class-map cell's {SEG_BLOCK}x{SEG_BLOCK}
  source block.
- ONNX opset {OPSET}, a dynamic batch dimension (replay runs consecutive frames as one batch; the node one frame,
  or its cameras' frames together), float32, `onnx.checker` clean.

## How well they do

Measured by `make_demo.py` through `ModelPipeline` and each model's task (ONNX Runtime, CPU) on the demo
bag's {result.frames} frames; the drivable area is the segmentation head's 320x240 mask, scored against
`{TOPIC_DRIVABLE}` pixel by pixel:

{metrics}

On the held-out validation drives (two other worlds): steering MAE {val_steering[0]:.3f}, throttle MAE
{val_steering[1]:.3f}; detector {val_detection.text()}. Drivable area on its two held-out worlds (seeds
{SEG_VAL_DRIVES[0][0]} and {SEG_VAL_DRIVES[1][0]}): {val_drivable.text()}. The stride-{SEG_STRIDE} class map
gives each {SEG_BLOCK}x{SEG_BLOCK} block of the frame one class, which caps the road's edges (and cones far
away) a little below a per-pixel model.

Made with {made_with}. The renderer's outputs (frames, truth, this bag) are
the same bytes on every run; the models are the same bytes for the same torch version and thread count,
and may differ bit-wise (and so slightly in these numbers) with another torch version.
"""


def _group_by_value(mapping: Dict[str, str]) -> Dict[str, List[str]]:
    groups: Dict[str, List[str]] = {}
    for key, value in mapping.items():
        groups.setdefault(value, []).append(key)
    return groups


# -------------------------------------------------------------------------------------------------- main


def sizes_of(*folders: Path, readme: bool = True) -> Dict[str, int]:
    """Bytes of every output (README.md only with ``readme``), each from the first of ``folders`` holding it."""
    sizes = {}
    for name in OUTPUTS if readme else [n for n in OUTPUTS if n != "README.md"]:
        path = next((folder / name for folder in folders if (folder / name).exists()), None)
        if path is None:
            continue
        if path.is_dir():
            for child in sorted(path.iterdir()):
                sizes[f"{name}/{child.name}"] = child.stat().st_size
        else:
            sizes[name] = path.stat().st_size
    return sizes


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", default="trt_perception/data/demo", help="output folder (default %(default)s)"
    )
    parser.add_argument("--force", action="store_true", help="replace existing demo files in --out")
    parser.add_argument(
        "--only",
        choices=tuple(ONLY_OUTPUTS),
        default=None,
        help="drivable: remake only the drivable-area model, its spec, the bag and README.md; bag: remake only "
        "the bag and README.md (no torch needed). The other files in --out must exist and are kept as they "
        "are; the new bag's camera, command and mask messages must equal the old bag's byte for byte",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads (default 2; the models are bit-reproducible for a fixed count)",
    )
    parser.add_argument("--workers", type=int, default=2, help="processes rendering frames (default 2)")
    parser.add_argument("--steering-epochs", type=int, default=16)
    parser.add_argument("--detector-epochs", type=int, default=24)
    parser.add_argument("--drivable-epochs", type=int, default=8)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    out = Path(args.out)
    only_drivable, only_bag = args.only == "drivable", args.only == "bag"
    made = ONLY_OUTPUTS[args.only] if args.only else OUTPUTS
    existing = [name for name in made if (out / name).exists()]
    if existing and not args.force:
        log(
            f"error: {out} already holds {existing}; refusing to overwrite them; "
            "fix: pass --force to replace them, or choose another --out"
        )
        return 2
    kept = [name for name in OUTPUTS if name not in made]
    missing = [name for name in kept if not (out / name).exists()]
    if args.only and missing:
        log(
            f"error: --only {args.only} keeps {kept}, but {out} lacks {missing}; "
            "fix: run without --only to make everything"
        )
        return 2
    torch: Any = None
    if not only_bag:
        try:
            import torch
        except ImportError:
            log("error: torch is not installed; it is needed only to build the demo: pip install torch==2.13.0")
            return 2
        torch.set_num_threads(max(1, args.threads))
        torch.use_deterministic_algorithms(True)

    with_training = not (only_drivable or only_bag)
    log(
        f"rendering {len(TRAIN_DRIVES) if with_training else 0} training drives, {len(VAL_DRIVES)} held-out "
        f"drives, the bag drive, {0 if only_bag else len(SEG_TRAIN_DRIVES)} + {len(SEG_VAL_DRIVES)} "
        "drivable-area drives..."
    )
    t0 = time.perf_counter()
    train, val, bag, seg_train, seg_val = render_all(
        max(1, args.workers), with_training=with_training, with_drivable_training=not only_bag
    )
    log(
        f"  {0 if train is None else len(train.angle)} training, {len(val.angle)} held-out, {len(bag.angle)} "
        f"bag, {0 if seg_train is None else len(seg_train.rgb)} + {len(seg_val.rgb)} drivable-area frames in "
        f"{time.perf_counter() - t0:.0f} s"
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=str(out.parent)))
    models = out if args.only else stage  # where the steering and detector files are read from
    try:
        note = (
            "Demo model trained on SYNTHETIC scenes by scripts/make_demo.py (trt_perception).\n"
            "Regenerate: python scripts/make_demo.py --out trt_perception/data/demo --force"
        )
        if args.only:
            val_steering, val_detection = heldout_from_onnx(out, val)
            torch_versions = {name: onnx_torch_version(out / f"{name}.onnx") for name in ("steering", "detector")}
            log(
                f"kept steering and detector from {out}; held-out steering MAE {val_steering[0]:.3f}, throttle "
                f"MAE {val_steering[1]:.3f}; detector {val_detection.text()}"
            )
        else:
            assert train is not None
            val_steering, val_detection = train_steering_and_detector(torch, args, stage, note, train, val)
            torch_versions = {"steering": torch.__version__, "detector": torch.__version__}
        if only_bag:
            drivable_folder = out
            val_drivable = drivable_heldout_from_onnx(out, seg_val)
            torch_versions["drivable"] = onnx_torch_version(out / "drivable.onnx")
            check_preprocessing(bag, models, drivable_folder)
            log(f"kept drivable from {out}; held-out {val_drivable.text()}")
        else:
            assert seg_train is not None
            drivable_folder = stage
            write_yaml(stage / "drivable.yaml", note, drivable_spec())
            check_preprocessing(bag, models, stage)
            t0 = time.perf_counter()
            drivable = train_drivable(torch, seg_train, seg_val, args.drivable_epochs)
            val_drivable = drivable_score(torch, drivable, seg_val)
            drivable.eval()
            log(f"  drivable trained in {time.perf_counter() - t0:.0f} s; held-out {val_drivable.text()}")
            export_onnx(
                torch, drivable, torch.zeros(1, 3, SEG_HEIGHT, SEG_WIDTH), stage / "drivable.onnx", "images",
                ("logits",), note,
            )
            feed = (seg_val.rgb[:8].astype(np.float32) / 255.0).transpose(0, 3, 1, 2).copy()
            worst = check_onnx(torch, drivable, stage / "drivable.onnx", feed)
            log(f"  drivable.onnx: ONNX Runtime vs torch max abs diff {worst:.2e}")
            torch_versions["drivable"] = torch.__version__

        log("recording the bag and evaluating the models on it...")
        write_bag(stage / "drive_bag", bag)
        if (out / "drive_bag").exists():
            problems = bag_differences(out / "drive_bag", stage / "drive_bag")
            if problems and args.only:
                log(
                    f"error: --only {args.only} must leave the bag's {', '.join(KEPT_TOPICS)} and truth boxes as "
                    f"they were, but: {'; '.join(problems)}; nothing was installed; fix: find what changed the "
                    "renderer's output, or run without --only"
                )
                return 2
            log(
                f"  the new bag against {out / 'drive_bag'}: "
                + ("; ".join(problems) if problems else f"{', '.join(KEPT_TOPICS)} the same bytes, truth boxes the "
                   "same apart from their ids")
            )
        result = evaluate_bag(models, drivable_folder, stage / "drive_bag")
        sizes = sizes_of(stage, out, readme=False) if args.only else sizes_of(stage, readme=False)
        (stage / "README.md").write_text(
            readme_text(result, val_steering, val_detection, val_drivable, sizes, torch_versions),
            encoding="utf-8",
        )
        install(stage, out, args.force, made)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    sizes = sizes_of(out)

    total = sum(sizes.values())
    log("")
    log(f"demo written to {out} ({total / 1024:.0f} KiB in all; budget {SIZE_BUDGET_BYTES / 1024:.0f} KiB):")
    for name, size in sizes.items():
        log(f"  {name:40s} {size / 1024:8.1f} KiB{'' if name.split('/')[0] in made else '  (kept)'}")
    log(
        f"bag: {result.frames} frames; steering MAE {result.steering_mae:.3f} "
        f"(RMSE {result.steering_rmse:.3f}), throttle MAE {result.throttle_mae:.3f}"
    )
    log(f"bag: detector {result.detection.text()}")
    log(f"bag: drivable area {result.drivable.text()}")
    log(f"bag: {result.truth_tracks} truth track ids over {sum(result.truth_per_class.values())} boxes")
    log(f"total time {(time.perf_counter() - started) / 60:.1f} min")
    if total > SIZE_BUDGET_BYTES:
        log(
            f"warning: the demo is {total / 1024:.0f} KiB, over the {SIZE_BUDGET_BYTES / 1024:.0f} KiB budget"
        )
    return 0


def train_steering_and_detector(
    torch: Any, args: argparse.Namespace, stage: Path, note: str, train: DriveData, val: DriveData
) -> Tuple[Tuple[float, float], DetectionScore]:
    """Train, export and check the steering and detector models into ``stage``; their held-out numbers."""
    (stage / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS), encoding="utf-8")
    anchors = make_anchors()
    np.save(stage / "detector_anchors.npy", anchors)
    write_yaml(stage / "steering.yaml", note, steering_spec())
    write_yaml(stage / "detector.yaml", note, detector_spec())

    t0 = time.perf_counter()
    steering = train_steering(torch, train, val, args.steering_epochs)
    val_steering = steering_mae(torch, steering, val)
    log(f"  steering trained in {time.perf_counter() - t0:.0f} s")
    export_onnx(
        torch,
        steering,
        torch.zeros(1, STEER_HEIGHT, STEER_WIDTH, 3),
        stage / "steering.onnx",
        "img_in",
        ("angle", "throttle"),
        note,
    )
    feed = val.steer_rgb[:8].astype(np.float32) / 255.0
    worst = check_onnx(torch, steering, stage / "steering.onnx", feed)
    log(f"  steering.onnx: ONNX Runtime vs torch max abs diff {worst:.2e}")

    parser = create_parser(load_spec(spec_path=stage / "detector.yaml"))
    settings = DetectionSettings(SCORE_THRESHOLD, IOU_THRESHOLD, MAX_DETECTIONS, None)

    def evaluate(model: Any) -> DetectionScore:
        """Held-out score with the package's own ssd_raw parser (the decode the pipeline runs)."""
        model.eval()
        score = DetectionScore()
        with torch.no_grad():
            for start in range(0, len(val.det_rgb), 128):
                x = torch.from_numpy(val.det_rgb[start : start + 128]).float().mul_(2.0 / 255.0).sub_(1.0)
                logits, deltas = model(x.permute(0, 3, 1, 2).contiguous())
                for j in range(logits.shape[0]):
                    raw = parser.parse(
                        {"scores": logits[j : j + 1].numpy(), "boxes": deltas[j : j + 1].numpy()},
                        settings,
                    )
                    boxes = model_to_source(raw.boxes)
                    score.add(boxes, raw.class_ids, raw.scores, val.boxes[start + j], val.classes[start + j])
        model.train()
        return score

    t0 = time.perf_counter()
    detector = train_detector(torch, train, val, anchors, args.detector_epochs, evaluate)
    val_detection = evaluate(detector)
    detector.eval()
    log(f"  detector trained in {time.perf_counter() - t0:.0f} s")
    export_onnx(
        torch,
        detector,
        torch.zeros(1, 3, DET_HEIGHT, DET_WIDTH),
        stage / "detector.onnx",
        "images",
        ("scores", "boxes"),
        note,
    )
    feed = (val.det_rgb[:8].astype(np.float32) * (2.0 / 255.0) - 1.0).transpose(0, 3, 1, 2).copy()
    worst = check_onnx(torch, detector, stage / "detector.onnx", feed)
    log(f"  detector.onnx: ONNX Runtime vs torch max abs diff {worst:.2e}")
    return val_steering, val_detection


def heldout_from_onnx(folder: Path, val: DriveData) -> Tuple[Tuple[float, float], DetectionScore]:
    """The held-out numbers of the steering and detector ONNX files in ``folder`` (``--only drivable`` keeps
    those models, so their numbers are measured again rather than copied; ONNX Runtime matches torch to
    ~1e-5, which leaves them as training reported them)."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    steering = ort.InferenceSession(str(folder / "steering.onnx"), providers=providers)
    angle, throttle = [], []
    for item in val.steer_rgb:
        a, t = steering.run(["angle", "throttle"], {"img_in": item[None].astype(np.float32) / 255.0})
        angle.append(float(a.ravel()[0]))
        throttle.append(float(t.ravel()[0]))
    val_steering = (
        float(np.mean(np.abs(np.asarray(angle, np.float32) - val.angle))),
        float(np.mean(np.abs(np.asarray(throttle, np.float32) - val.throttle))),
    )
    detector = ort.InferenceSession(str(folder / "detector.onnx"), providers=providers)
    parser = create_parser(load_spec(spec_path=folder / "detector.yaml"))
    settings = DetectionSettings(SCORE_THRESHOLD, IOU_THRESHOLD, MAX_DETECTIONS, None)
    score = DetectionScore()
    for i, item in enumerate(val.det_rgb):
        x = (item.astype(np.float32) * (2.0 / 255.0) - 1.0).transpose(2, 0, 1)[None].copy()
        scores, boxes = detector.run(["scores", "boxes"], {"images": x})
        raw = parser.parse({"scores": scores, "boxes": boxes}, settings)
        score.add(model_to_source(raw.boxes), raw.class_ids, raw.scores, val.boxes[i], val.classes[i])
    return val_steering, score


def drivable_heldout_from_onnx(folder: Path, val: DrivableData) -> SegmentationScore:
    """The held-out score of the drivable-area ONNX file in ``folder`` (``--only bag`` keeps the model; the
    same argmax and 8x8 upscale as ``drivable_score``, on ONNX Runtime instead of torch)."""
    import onnxruntime as ort

    assert val.masks is not None
    session = ort.InferenceSession(str(folder / "drivable.onnx"), providers=["CPUExecutionProvider"])
    score = SegmentationScore()
    for rgb, mask in zip(val.rgb, val.masks):
        x = (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
        (logits,) = session.run(["logits"], {"images": x})
        score.add(mask, to_source_size(logits[0].argmax(0).astype(np.uint8)))
    return score


def onnx_torch_version(path: Path) -> str:
    """The torch version an exported model records (producer_version 'torch X'), or 'unknown'."""
    import onnx

    version = onnx.load(str(path), load_external_data=False).producer_version
    return version[len("torch ") :] if version.startswith("torch ") else "unknown"


def check_preprocessing(bag: DriveData, models: Path, drivable: Path) -> None:
    """The training tensors must be what the pipeline feeds the models (same decode, resize, channels)."""
    from trt_perception.images import decode_compressed
    from trt_perception.preprocess import preprocess_reference

    image = decode_compressed("jpeg", np.frombuffer(bag.jpegs[0], np.uint8))
    decoded = cv2.imdecode(np.frombuffer(bag.jpegs[0], np.uint8), cv2.IMREAD_UNCHANGED)
    for name, folder, ours in (
        ("steering", models, bag.steer_rgb[0].astype(np.float32) / 255.0),
        ("detector", models, bag.det_rgb[0].astype(np.float32) * (2.0 / 255.0) - 1.0),
        ("drivable", drivable, to_model_rgb(decoded, SEG_HEIGHT, SEG_WIDTH).astype(np.float32) / 255.0),
    ):
        spec = load_spec(spec_path=folder / f"{name}.yaml")
        tensor, _ = preprocess_reference(image, spec.input)
        theirs = tensor[0] if spec.input.layout == "NHWC" else tensor[0].transpose(1, 2, 0)
        worst = float(np.max(np.abs(theirs - ours)))
        if worst > 1e-5:
            raise RuntimeError(f"training preprocessing for {name} differs from the pipeline's by {worst}")


def install(stage: Path, out: Path, force: bool, names: Sequence[str] = OUTPUTS) -> None:
    """Move the staged ``names`` into ``out`` (replacing old ones only with --force)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        source, target = stage / name, out / name
        if target.exists():
            if not force:
                raise FileExistsError(f"{target} exists; pass --force to replace it")
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        os.replace(source, target)


if __name__ == "__main__":
    sys.exit(main())
