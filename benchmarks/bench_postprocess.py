"""Benchmark 2: post-processing on one core: ``ssd_raw`` decode + NMS for SSD-MobileNet-sized heads (1917 anchors
x 91 classes), and the plugin formats (nms_trt, efficient_nms, batched_nms), each against a naive twin."""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

import cv2
import naive
import numpy as np
from common import COCO_LIKE_LABELS, Table, measure, scaled, ssd300_spec, ssd_raw_outputs

from trt_perception.outputs import DetectionSettings, create_parser
from trt_perception.spec import ModelSpec, parse_spec

TARGET_US = 1000.0  # ssd_raw median on one core


def plugin_spec(fmt: str) -> ModelSpec:
    tensors = {
        "nms_trt": {"detections": "NMS", "count": "NMS_1"},
        "efficient_nms": {"num_detections": "num_detections", "boxes": "detection_boxes",
                          "scores": "detection_scores", "classes": "detection_classes"},
        "batched_nms": {"num_detections": "num_detections", "boxes": "nmsed_boxes", "scores": "nmsed_scores",
                        "classes": "nmsed_classes"},
    }[fmt]  # fmt: skip
    return parse_spec({
        "task": "detection",
        "input": {"name": "Input", "height": 300, "width": 300},
        "output": {"format": fmt, "tensors": tensors},
        "detection": {"labels": COCO_LIKE_LABELS, "score_threshold": 0.5},
    })  # fmt: skip


def plugin_outputs(fmt: str, kept: int = 20, rows: int = 100, seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 0.8, (rows, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(0.05, 0.2, (rows, 2)).astype(np.float32)], 1)
    scores = np.sort(rng.uniform(0.3, 1.0, rows).astype(np.float32))[::-1].copy()
    classes = rng.integers(1, 91, rows)
    if fmt == "nms_trt":
        table = np.zeros((1, rows, 7), np.float32)
        table[0, :, 1] = -1
        table[0, :kept] = np.column_stack([np.zeros(kept), classes[:kept], scores[:kept], boxes[:kept]])
        count = np.array([kept], np.int32).view(np.float32).reshape(1, 1, 1)
        return {"NMS": table, "NMS_1": count}
    names = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
    if fmt == "batched_nms":
        names = ("num_detections", "nmsed_boxes", "nmsed_scores", "nmsed_classes")
    class_dtype = np.float32 if fmt == "batched_nms" else np.int32
    return {
        names[0]: np.array([[kept]], np.int32),
        names[1]: boxes[None],
        names[2]: scores[None],
        names[3]: classes[None].astype(class_dtype),
    }


def naive_plugin(fmt: str, outputs: Mapping[str, np.ndarray], labels: Any) -> list:
    """tensorrt_demos' _postprocess_trt style: walk every row in Python."""
    found = []
    if fmt == "nms_trt":
        flat = outputs["NMS"].reshape(-1)
        for prefix in range(0, flat.shape[0], 7):
            conf = float(flat[prefix + 2])
            if conf < 0.5:
                continue
            x1, y1, x2, y2 = (int(flat[prefix + k] * 300) for k in (3, 4, 5, 6))
            found.append((labels[int(flat[prefix + 1])], conf, x1, y1, x2, y2))
        return found
    keys = list(outputs)
    count = int(outputs[keys[0]][0][0])
    for i in range(count):
        conf = float(outputs[keys[2]][0][i])
        if conf < 0.5:
            continue
        x1, y1, x2, y2 = (float(v) * 300 for v in outputs[keys[1]][0][i])
        found.append((labels[int(outputs[keys[3]][0][i])], conf, x1, y1, x2, y2))
    return found


def run(quick: bool = False) -> Table:
    table = Table(
        "postprocess",
        "2. Post-processing, one OpenCV thread (median us per frame)",
        ["format", "case", "ours_us", "ours_iqr_us", "ours_p95_us", "ours_per_s", "naive_us", "naive/ours"],
    )
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        iterations = scaled(quick, 2000, 40)
        spec = ssd300_spec()
        parser = create_parser(spec)
        settings = DetectionSettings.from_spec(spec.detection)
        anchors = parser.anchors  # type: ignore[attr-defined]
        cases = {
            "8 objects (typical)": ssd_raw_outputs(objects=8),
            "0 objects (empty road)": ssd_raw_outputs(objects=0),
            "60 objects (busy)": ssd_raw_outputs(objects=60, seed=1),
            "noisy head (logits ~ -4)": ssd_raw_outputs(objects=8, noise_logit=-4.0, seed=2),
        }
        for case, outputs in cases.items():
            times = measure(
                {"ours": lambda o=outputs: parser.parse(o, settings),
                 "naive": lambda o=outputs: naive.postprocess_ssd(o, anchors, (300, 300), COCO_LIKE_LABELS)},
                iterations=iterations, warmup=scaled(quick, 50, 3),
            )  # fmt: skip
            ours = times["ours"]
            table.add(
                ours.us <= TARGET_US, target=f"<= {TARGET_US:g} us",
                format="ssd_raw 1917x91", case=case, ours_us=ours.us, ours_iqr_us=ours.iqr * 1e6,
                ours_p95_us=ours.p95 * 1e6, ours_per_s=ours.per_second,
                naive_us=times["naive"].us, **{"naive/ours": times["naive"].median / ours.median},
            )  # fmt: skip
        for fmt in ("nms_trt", "efficient_nms", "batched_nms"):
            plugin = create_parser(plugin_spec(fmt))
            outputs = plugin_outputs(fmt)
            contenders: Dict[str, Callable[[], Any]] = {
                "ours": lambda p=plugin, o=outputs: p.parse(o, settings),
                "naive": lambda f=fmt, o=outputs: naive_plugin(f, o, COCO_LIKE_LABELS),
            }
            times = measure(contenders, iterations=iterations, warmup=scaled(quick, 50, 3))
            table.add(
                None, format=fmt, case="100 rows, 20 kept", ours_us=times["ours"].us,
                ours_iqr_us=times["ours"].iqr * 1e6, ours_p95_us=times["ours"].p95 * 1e6,
                ours_per_s=times["ours"].per_second, naive_us=times["naive"].us,
                **{"naive/ours": times["naive"].median / times["ours"].median},
            )  # fmt: skip
    finally:
        cv2.setNumThreads(threads)
    table.notes.append(
        "ssd_raw: sigmoid scores, threshold 0.5, IoU 0.45, background column 0, grid anchors [19,10,5,3,2,1]; "
        "naive = what a user writes: sigmoid, argmax class per anchor, threshold, decode the survivors, one "
        "cv2.dnn.NMSBoxesBatched. ours_per_s = calls / total time (not 1/median). Plugin formats have no target "
        "(they are a slice and a scale)."
    )
    return table
