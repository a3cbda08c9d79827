"""`trt-perception infer`: run one model on image files, exactly as the node would, and print the results."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from trt_perception.errors import ConfigError, TrtPerceptionError
from trt_perception.images import MAX_PIXELS, DecodedImage, check_max_pixels, decode_image_file
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
    parser.add_argument("images", nargs="+", type=Path,
                        help="image files (jpeg, png, webp, bmp), decoded exactly as the node decodes a frame")
    parser.add_argument("--score-threshold", type=float, help="override detection.score_threshold")
    parser.add_argument("--iou-threshold", type=float, help="override detection.iou_threshold")
    parser.add_argument("--max-detections", type=int, help="override detection.max_detections")
    parser.add_argument("--classes", nargs="+", help="only these class labels or ids")
    parser.add_argument("--output-dir", type=Path,
                        help="write annotated copies here (<name>_annotated.png; <name>_2_annotated.png for a second "
                             "input of the same name)")
    parser.add_argument("--force", action="store_true", help="replace annotated files that already exist")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                        help=f"refuse images above N pixels before decoding them, as the node's max_pixels param "
                             f"does (default {MAX_PIXELS}; a 50 Mpixel photo needs 50000000)")


def read_image(path: Path, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """An image file as the node would see it as a CompressedImage frame (``images.decode_image_file``: the
    same header checks and refusals, 16-bit gray kept as gray16 for the spec's own conversion)."""
    return decode_image_file(path, max_pixels)


def result_dict(path: Path, result: object) -> Dict[str, Any]:
    """One image's result as JSON-ready data, whatever the model's task."""
    if isinstance(result, Detections):
        return {
            "image": str(path),
            "detections": [
                {"label": label, "class_id": int(cid), "score": float(score),
                 "box_xyxy": [float(v) for v in box]}
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
        verb = "applies" if len(given) == 1 else "apply"
        raise ConfigError(
            f"{flags} {verb} to detection models; {args.model} is a {task} model, which has no score/IoU "
            f"threshold or class filter; fix: drop {flags}"
        )
    params = {p.name: p for p in task_class("detection").PARAMS}
    values: Dict[str, Any] = {}
    for key, value in given.items():
        value, reason = check_value(params[key], value)
        if reason:
            raise ConfigError(reason.replace(key, DETECTION_FLAGS[key], 1))
        values[key] = value
    return values


def annotated_targets(images: List[Path], output_dir: Path) -> List[Path]:
    """One annotated file per input: ``<stem>_annotated.png``, then ``<stem>_2_annotated.png``... for later
    inputs of the same name (a/x.jpg and b/x.jpg), so no input's output replaces another's within a run."""
    used = set()
    targets = []
    for path in images:
        name, count = f"{path.stem}_annotated.png", 1
        while name in used:
            count += 1
            name = f"{path.stem}_{count}_annotated.png"
        used.add(name)
        targets.append(output_dir / name)
    return targets


def check_output_dir(output_dir: Path, targets: List[Path], force: bool) -> None:
    """Refuse an --output-dir that cannot take the annotated files BEFORE any work: a file in its place, a
    folder we cannot create or write, or files of an earlier run (without --force)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"--output-dir {output_dir} is a file, not a folder; fix: pass a folder path")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--output-dir {output_dir} cannot be created ({exc.strerror or exc}); fix: pass a folder you can "
            "write to"
        ) from None
    try:
        with tempfile.NamedTemporaryFile(dir=str(output_dir), prefix=".infer-write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"--output-dir {output_dir} is not writable ({exc.strerror or exc}); fix: pass a folder you can write "
            "to, or fix its permissions"
        ) from None
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        shown = ", ".join(str(t) for t in existing[:5]) + more
        raise ConfigError(
            f"{shown} {'exists' if len(existing) == 1 else 'exist'}; refusing to overwrite annotated files of an "
            "earlier run; fix: pass --force, or another --output-dir"
        )


def write_annotated(head: Any, image: DecodedImage, output: Any, target: Path) -> None:
    from trt_perception.overlay import copy_to_canvas

    canvas = copy_to_canvas(image.array, np.empty((*image.array.shape[:2], 3), np.uint8))
    head.task.draw(canvas, output, image.color)
    head.task.decorate(canvas, output, image.color)
    try:
        written = cv2.imwrite(str(target), canvas)
    except cv2.error as exc:
        written, reason = False, str(exc).strip().splitlines()[-1]
    else:
        reason = "OpenCV could not write it"
    if not written:
        raise TrtPerceptionError(f"annotated image {target} was not written ({reason}); fix: check the folder")


def run_infer(args: argparse.Namespace) -> int:
    """Every image is run; a failing one is reported on stderr and the rest go on; exit 1 if any failed."""
    from trt_perception.heads import open_model

    try:
        max_pixels = check_max_pixels(args.max_pixels)
    except TrtPerceptionError as exc:
        raise ConfigError(f"--max-pixels: {exc}") from None
    output_dir: Optional[Path] = args.output_dir
    targets = annotated_targets(list(args.images), output_dir) if output_dir else []
    if output_dir:
        check_output_dir(output_dir, targets, args.force)
    head = open_model(args.model, args.spec, args.backend, backend_options(args))
    failures = 0
    try:
        head.task.apply({**head.task.values, **detection_values(args, head.task.name)})
        for index, path in enumerate(args.images):
            try:
                image = read_image(path, max_pixels)
                output = head.run(image, 0.0)
                data = result_dict(path, output.result)
                if output_dir:
                    write_annotated(head, image, output, targets[index])
                    data["annotated"] = str(targets[index])
            except TrtPerceptionError as exc:
                failures += 1
                print(f"trt-perception infer: error: {path}: {exc}", file=sys.stderr)
                continue
            if args.json:
                print(json.dumps(data))
            else:
                lines = format_result(path, output.result)
                if output_dir:
                    lines.append(f"  annotated: {targets[index]}")
                print("\n".join(lines))
    finally:
        head.close()
    if failures:
        print(f"trt-perception infer: {failures} of {len(args.images)} images failed (see above)", file=sys.stderr)
        return 1
    return 0
