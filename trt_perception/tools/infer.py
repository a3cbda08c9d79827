"""`trt-perception infer`: run one model on image files, exactly as the node would, and print the results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

import cv2

from trt_perception.errors import ImageError, TrtPerceptionError
from trt_perception.images import DecodedImage
from trt_perception.pipeline import ModelPipeline
from trt_perception.results import Detections, SteeringPrediction


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
    raise TrtPerceptionError(f"unexpected result type {type(result).__name__}")


def format_result(path: Path, result: object) -> List[str]:
    data = result_dict(path, result)
    if "detections" not in data:
        return [f"{path}: angle={data['angle']:+.3f} throttle={data['throttle']:+.3f}"]
    lines = [f"{path}: {len(data['detections'])} detection(s)"]
    for det in data["detections"]:
        x1, y1, x2, y2 = det["box_xyxy"]
        lines.append(f"  {det['label']:<16} {det['score']:.2f}  [{x1:.0f} {y1:.0f} {x2:.0f} {y2:.0f}]")
    return lines


def run_infer(args: argparse.Namespace) -> int:
    from trt_perception.overlay import draw_detections, draw_steering

    pipeline = ModelPipeline.open(args.model, args.spec, args.backend, backend_options(args))
    try:
        pipeline.update_settings(args.score_threshold, args.iou_threshold, args.max_detections, args.classes)
        if args.output_dir:
            args.output_dir.mkdir(parents=True, exist_ok=True)
        for path in args.images:
            image = read_image(path)
            output = pipeline.run(image)
            if args.json:
                print(json.dumps(result_dict(path, output.result)))
            else:
                print("\n".join(format_result(path, output.result)))
            if args.output_dir:
                target = args.output_dir / f"{path.stem}_annotated.png"
                if target.exists() and not args.force:
                    raise TrtPerceptionError(f"{target} exists; refusing to overwrite it (pass --force)")
                if isinstance(output.result, Detections):
                    annotated = draw_detections(image.array, output.result, image.color)
                else:
                    annotated = draw_steering(image.array, output.result.angle, output.result.throttle, image.color)
                cv2.imwrite(str(target), annotated)
    finally:
        pipeline.close()
    return 0
