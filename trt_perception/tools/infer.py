"""`trt-perception infer`: run one model on image files, exactly as the node would, and print the results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np

from trt_perception.errors import ConfigError, ImageError, TrtPerceptionError
from trt_perception.images import DecodedImage
from trt_perception.results import Classification, Detections, SegmentationMask, SteeringPrediction


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every command that opens one model shares."""
    parser.add_argument("model", type=Path, help="model file (.onnx, .engine, .plan, .trt, .bin)")
    parser.add_argument("--spec", type=Path, help="model spec YAML (default: found next to the model)")
    parser.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"],
                        help="inference backend (default: by file suffix)")
    parser.add_argument("--providers", nargs="+", metavar="EP",
                        help="ONNX Runtime providers in order, e.g. CUDAExecutionProvider CPUExecutionProvider")
    parser.add_argument("--plugin-library", dest="plugin_libraries", action="append", default=[], metavar="SO",
                        help="TensorRT plugin library to load before the engine (repeatable)")


def backend_options(args: argparse.Namespace) -> Dict[str, Any]:
    options: Dict[str, Any] = {}
    if getattr(args, "providers", None):
        options["providers"] = list(args.providers)
    if getattr(args, "plugin_libraries", None):
        options["plugin_libraries"] = list(args.plugin_libraries)
    return options


def add_infer_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("images", nargs="+", type=Path, help="image files (anything OpenCV reads)")
    parser.add_argument("--score-threshold", type=float, help="override detection.score_threshold")
    parser.add_argument("--iou-threshold", type=float, help="override detection.iou_threshold")
    parser.add_argument("--max-detections", type=int, help="override detection.max_detections")
    parser.add_argument("--classes", nargs="+", help="only these class labels or ids")
    parser.add_argument("--output-dir", type=Path, help="write annotated copies here (<name>_annotated.png)")
    parser.add_argument("--force", action="store_true", help="replace annotated files that already exist")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")


def read_image(path: Path) -> DecodedImage:
    """An image file as the pipeline's decoded frame (OpenCV reads BGR)."""
    if not path.is_file():
        raise ImageError(f"image file {path} does not exist; fix: check the path")
    array = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if array is None:
        raise ImageError(f"image file {path} cannot be decoded by OpenCV; expected a jpeg/png/bmp/... image")
    return DecodedImage(array, "bgr")


def result_dict(path: Path, result: object) -> Dict[str, Any]:
    """One image's result as JSON-ready data, whatever the model's task."""
    if isinstance(result, Detections):
        return {
            "image": str(path),
            "detections": [
                {"label": label, "class_id": int(cid), "score": round(float(score), 4),
                 "box_xyxy": [round(float(v), 1) for v in box]}
                for box, score, cid, label in zip(result.boxes, result.scores, result.class_ids, result.labels)
            ],
        }
    if isinstance(result, SteeringPrediction):
        return {"image": str(path), "angle": float(result.angle), "throttle": float(result.throttle)}
    if isinstance(result, Classification):
        return {
            "image": str(path),
            "classes": [
                {"label": label, "class_id": int(cid), "score": float(score)}
                for cid, score, label in zip(result.class_ids, result.scores, result.labels)
            ],
        }
    if isinstance(result, SegmentationMask):
        names = [result.labels[i] if i < len(result.labels) else str(i) for i in range(len(result.fractions))]
        return {
            "image": str(path),
            "mask_shape": list(result.mask.shape),
            "area_fractions": {name: float(f) for name, f in zip(names, result.fractions) if f > 0},
        }
    raise TrtPerceptionError(f"unexpected result type {type(result).__name__}")


def format_result(path: Path, result: object) -> List[str]:
    data = result_dict(path, result)
    if "angle" in data:
        return [f"{path}: angle={data['angle']:+.3f} throttle={data['throttle']:+.3f}"]
    if "classes" in data:
        return [f"{path}: " + ", ".join(f"{c['label']} {c['score']:.3f}" for c in data["classes"])]
    if "area_fractions" in data:
        areas = ", ".join(f"{k} {v:.1%}" for k, v in sorted(data["area_fractions"].items(), key=lambda kv: -kv[1]))
        return [f"{path}: mask {data['mask_shape'][1]}x{data['mask_shape'][0]}: {areas}"]
    lines = [f"{path}: {len(data['detections'])} detection(s)"]
    for det in data["detections"]:
        x1, y1, x2, y2 = det["box_xyxy"]
        lines.append(f"  {det['label']:<16} {det['score']:.2f}  [{x1:.0f} {y1:.0f} {x2:.0f} {y2:.0f}]")
    return lines


DETECTION_FLAGS = {
    "score_threshold": "--score-threshold",
    "iou_threshold": "--iou-threshold",
    "max_detections": "--max-detections",
    "classes": "--classes",
}


def detection_values(args: argparse.Namespace, task: str) -> Dict[str, Any]:
    """The detection flags as the head's params, checked as the params file's are."""
    from trt_perception.params import check_value
    from trt_perception.tasks import task_class

    given = {k: getattr(args, k) for k in DETECTION_FLAGS if getattr(args, k, None) is not None}
    if given and task != "detection":
        flags = ", ".join(DETECTION_FLAGS[k] for k in given)
        raise ConfigError(f"{flags} apply to detection models; {args.model} is a {task} model; fix: drop {flags}")
    params = {p.name: p for p in task_class("detection").PARAMS}
    values: Dict[str, Any] = {}
    for key, value in given.items():
        value, reason = check_value(params[key], value)
        if reason:
            raise ConfigError(reason.replace(key, DETECTION_FLAGS[key], 1))
        values[key] = value
    return values


def run_infer(args: argparse.Namespace) -> int:
    from trt_perception.heads import open_model
    from trt_perception.overlay import copy_to_canvas

    head = open_model(args.model, args.spec, args.backend, backend_options(args))
    try:
        head.task.apply({**head.task.values, **detection_values(args, head.task.name)})
        if args.output_dir:
            args.output_dir.mkdir(parents=True, exist_ok=True)
        for path in args.images:
            image = read_image(path)
            output = head.run(image, 0.0)
            if args.json:
                print(json.dumps(result_dict(path, output.result)))
            else:
                print("\n".join(format_result(path, output.result)))
            if args.output_dir:
                target = args.output_dir / f"{path.stem}_annotated.png"
                if target.exists() and not args.force:
                    raise TrtPerceptionError(f"{target} exists; refusing to overwrite it (pass --force)")
                canvas = copy_to_canvas(image.array, np.empty((*image.array.shape[:2], 3), np.uint8))
                head.task.draw(canvas, output, image.color)
                head.task.decorate(canvas, output, image.color)
                cv2.imwrite(str(target), canvas)
    finally:
        head.close()
    return 0
