"""Naive twins: the per-frame code the way the seed scripts write it, for side-by-side comparison.

Decode as cv_bridge-era scripts do (copy the message bytes into a new array, convert to bgr8), preprocess as
tensorrt_demos' ``utils/ssd.py`` ``_preprocess_trt`` and DonkeyCar's ``normalize_image`` do (resize,
cvtColor, astype float, divide, transpose), decode SSD heads over the full score matrix with per-class and
per-box Python loops and ``cv2.dnn.NMSBoxes``, and build messages one box at a time. Each twin produces the
same result as the pipeline (benchmarks check that before timing), so the comparison is like for like.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import cv2
import numpy as np

Detection = Tuple[str, float, float, float, float, float]  # label, score, x1, y1, x2, y2 (source pixels)


def decode(msg: Any) -> np.ndarray:
    """Message -> BGR array: a copy of the bytes, then cv_bridge's conversion to 'bgr8'."""
    if hasattr(msg, "format"):
        return cv2.imdecode(np.array(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    data = np.array(msg.data, dtype=np.uint8)
    if msg.encoding == "yuyv":
        return cv2.cvtColor(data.reshape(msg.height, msg.width, 2), cv2.COLOR_YUV2BGR_YUYV)
    image = data.reshape(msg.height, msg.width, 3)
    if msg.encoding == "rgb8":
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return image


def preprocess_ssd(image: np.ndarray, size: Tuple[int, int] = (300, 300)) -> np.ndarray:
    """tensorrt_demos ``_preprocess_trt``: resize, BGR->RGB, HWC->CHW float32, x*2/255-1; then batch + contiguous."""
    image = cv2.resize(image, size)
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image = image.astype(np.float32)
    image = image / 255.0 * 2.0 - 1.0
    image = image.transpose((2, 0, 1))
    return np.ascontiguousarray(image[None])


def preprocess_steering(image: np.ndarray, size: Tuple[int, int] = (160, 120)) -> np.ndarray:
    """DonkeyCar: resize to the model, BGR->RGB, float32 / 255, batch of one (NHWC)."""
    image = cv2.resize(image, size)
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image = image.astype(np.float32) / 255.0
    return image[None]


def postprocess_ssd(
    outputs: Mapping[str, np.ndarray],
    anchors: np.ndarray,
    image_size: Tuple[int, int],
    labels: Sequence[str],
    threshold: float = 0.5,
    iou: float = 0.45,
    max_detections: int = 100,
    variances: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
) -> List[Detection]:
    """What a user writes: sigmoid, best class per anchor (argmax), threshold, decode the survivors, one
    cv2.dnn.NMSBoxesBatched call, then a list of tuples (the form a node then turns into messages)."""
    width, height = image_size
    scores = 1.0 / (1.0 + np.exp(-outputs["scores"][0][:, 1:]))  # background column 0 dropped
    classes = scores.argmax(axis=1)
    best = scores[np.arange(scores.shape[0]), classes]
    keep = np.where(best > threshold)[0]
    if len(keep) == 0:
        return []
    reg, anc = outputs["boxes"][0][keep], anchors[keep]
    cx = anc[:, 0] + reg[:, 0] * variances[0] * anc[:, 2]
    cy = anc[:, 1] + reg[:, 1] * variances[1] * anc[:, 3]
    w = anc[:, 2] * np.exp(reg[:, 2] * variances[2])
    h = anc[:, 3] * np.exp(reg[:, 3] * variances[3])
    rects = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height], axis=1)
    picked = cv2.dnn.NMSBoxesBatched(rects.tolist(), best[keep].tolist(), (classes[keep] + 1).tolist(), threshold, iou)
    detections: List[Detection] = []
    for k in np.array(picked, dtype=np.int64).flatten()[:max_detections]:
        x, y, bw, bh = rects[k]
        detections.append((labels[classes[keep][k] + 1], float(best[keep][k]), max(0.0, x), max(0.0, y),
                           min(float(width), x + bw), min(float(height), y + bh)))  # fmt: skip
    detections.sort(key=lambda d: -d[1])
    return detections


def detection_array(types: Any, header: Any, detections: Sequence[Detection]) -> Any:
    """One Detection2D at a time, every sub-message built per box."""
    out_header = types.Header(
        stamp=types.Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec), frame_id=header.frame_id
    )
    message = types.Detection2DArray(header=out_header, detections=[])
    for label, score, x1, y1, x2, y2 in detections:
        pose = types.PoseWithCovariance(
            pose=types.Pose(position=types.Point(x=0.0, y=0.0, z=0.0),
                            orientation=types.Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.zeros(36),
        )  # fmt: skip
        hypothesis = types.ObjectHypothesisWithPose(
            hypothesis=types.ObjectHypothesis(class_id=str(label), score=float(score)), pose=pose
        )
        bbox = types.BoundingBox2D(
            center=types.Pose2D(position=types.Point2D(x=float((x1 + x2) / 2), y=float((y1 + y2) / 2)), theta=0.0),
            size_x=float(x2 - x1),
            size_y=float(y2 - y1),
        )
        message.detections.append(types.Detection2D(header=out_header, results=[hypothesis], bbox=bbox, id=""))
    return message


def detections_from_arrays(boxes: np.ndarray, scores: np.ndarray, labels: Sequence[str]) -> List[Detection]:
    """Per-box loop over numpy rows (how scripts walk a detector's arrays)."""
    out: List[Detection] = []
    for i in range(len(scores)):
        x1, y1, x2, y2 = boxes[i]
        out.append((labels[i], scores[i], x1, y1, x2, y2))
    return out


def twist(types: Any, outputs: Dict[str, np.ndarray], max_steering: float = 1.0) -> Any:
    """Steering head -> Twist as scripts do it: read, clamp, build."""
    angle = float(outputs["angle"][0][0])
    throttle = float(outputs["throttle"][0][0])
    angle = max(-max_steering, min(max_steering, angle))
    throttle = max(-1.0, min(1.0, throttle))
    return types.Twist(
        linear=types.Vector3(x=throttle, y=0.0, z=0.0), angular=types.Vector3(x=0.0, y=0.0, z=-angle)
    )
