"""`trt-perception inspect`: what a model file is, what its spec says, and what the pipeline will do."""

from __future__ import annotations

import argparse
from typing import List

from trt_perception.backends.base import open_backend
from trt_perception.errors import TrtPerceptionError
from trt_perception.pipeline import ModelPipeline
from trt_perception.spec import OUTPUT_FORMATS, ModelSpec, load_spec
from trt_perception.tools.infer import add_model_arguments, backend_options


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)


def describe_input(spec: ModelSpec) -> List[str]:
    s = spec.input
    crop = f", rows cropped top {s.crop_top} / bottom {s.crop_bottom} (at model scale)" if (
        s.crop_top or s.crop_bottom) else ""
    if s.resize == "letterbox":
        resize = f"letterboxed into {s.width}x{s.height} (aspect kept, padded with {s.pad_value:g})"
    else:
        resize = f"stretched to {s.width}x{s.height} (aspect ignored)"
    scaling = ", ".join(f"x*{a:.6g}{b:+.6g}" for a, b in zip(s.scale, s.offset))
    return [
        f"  frame -> {resize}{crop}, {s.interpolation} interpolation",
        f"  color {s.color}, per channel {scaling}",
        f"  tensor {s.name!r} {s.layout} {s.dtype} shape {s.shape}",
    ]


def describe_spec(spec: ModelSpec) -> List[str]:
    lines = [f"spec: {spec.source}", f"  task: {spec.task}" + (f"  name: {spec.name}" if spec.name else "")]
    lines += describe_input(spec)
    fmt = spec.output.format
    lines.append(f"  output format {fmt}: {OUTPUT_FORMATS[fmt].description}")
    lines += [f"    {role} <- tensor {name!r}" for role, name in spec.output.tensors.items()]
    lines += [f"    {key}: {value}" for key, value in spec.output.params.items()]
    if spec.task == "detection":
        d = spec.detection
        labels = f"{len(d.labels)} labels (first id {d.first_label_id})" if d.labels else "no labels (ids printed)"
        lines.append(
            f"  detection: score >= {d.score_threshold}, IoU {d.iou_threshold}, at most {d.max_detections}, "
            f"{labels}" + (f", only {list(d.classes)}" if d.classes else "")
        )
        lines.append("  boxes are reported in source-image pixels (resize/letterbox/crop undone), clipped")
    if spec.build:
        lines.append("  build: " + ", ".join(f"{k}={v}" for k, v in spec.build.items()))
    return lines


def run_inspect(args: argparse.Namespace) -> int:
    backend = open_backend(args.model, args.backend, **backend_options(args))
    try:
        print(f"model: {args.model}")
        for key, value in backend.describe().items():
            print(f"  {key}: {value}")
        print("inputs:")
        for tensor in backend.inputs:
            print(f"  {tensor}")
        print("outputs:")
        for tensor in backend.outputs:
            print(f"  {tensor}")
        try:
            spec = load_spec(args.model, args.spec)
        except TrtPerceptionError as exc:
            print(f"spec: not usable: {exc}")
            return 1
        print("\n".join(describe_spec(spec)))
        try:
            ModelPipeline(spec, backend)
        except TrtPerceptionError as exc:
            print(f"check: the spec does NOT match this model: {exc}")
            return 1
        print("check: spec matches the model's inputs and outputs")
    finally:
        backend.close()
    return 0
