"""Model specs: the contract between a model file and the pipeline.

A spec is a small YAML file that travels with a model (``model.onnx`` -> ``model.yaml``; an engine's builder
writes ``model.engine.yaml``). It says everything the pipeline must know to feed the model and read its
outputs, so a new model needs a spec, not code. Parsing is strict: unknown keys and bad values are refused
with the key path, the value, what was expected and how to fix it.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import yaml

from trt_perception.errors import SpecError
from trt_perception.tasks import TASKS

SPEC_VERSION = 1
MODEL_SUFFIXES = (".onnx", ".engine", ".plan", ".trt", ".bin")
LAYOUTS = ("NCHW", "NHWC")
COLORS = ("RGB", "BGR", "GRAY")
RESIZE_MODES = ("stretch", "letterbox")
INTERPOLATIONS = ("linear", "nearest", "area")
DTYPES = ("float32", "float16", "uint8")
INPUT_SOURCES = ("memory", "imu", "behavior")
IMU_FIELDS = tuple(
    f"{group}.{axis}"
    for group, axes in (("linear_acceleration", "xyz"), ("angular_velocity", "xyz"), ("orientation", "xyzw"))
    for axis in axes
)
# DonkeyCar's IMU vector: imu/acl_x, acl_y, acl_z, gyr_x, gyr_y, gyr_z (autorope/donkeycar@cde8bbe9
# donkeycar/parts/keras.py:487, templates/complete.py:384-386), accel in m/s^2 and gyro in deg/s as its MPU6050/
# MPU9250 part reads them (parts/imu.py:73-89 via mpu6050.get_gyro_data); sensor_msgs/Imu carries rad/s.
DONKEY_IMU_FIELDS = IMU_FIELDS[:6]
DEG_PER_RAD = 180.0 / np.pi


@dataclass(frozen=True)
class OutputFormat:
    """What the spec knows of an output format: its task and the default role -> tensor names."""

    task: str
    default_tensors: Mapping[str, str]
    description: str


OUTPUT_FORMATS: Dict[str, OutputFormat] = {
    "nms_trt": OutputFormat(
        "detection",
        {"detections": "NMS", "count": "NMS_1"},
        "legacy UFF SSD engines: NMS (1,K,7) rows [image, label, conf, x1, y1, x2, y2], NMS_1 count as int32 bits",
    ),
    "efficient_nms": OutputFormat(
        "detection",
        {
            "num_detections": "num_detections",
            "boxes": "detection_boxes",
            "scores": "detection_scores",
            "classes": "detection_classes",
        },
        "EfficientNMS_TRT plugin outputs",
    ),
    "batched_nms": OutputFormat(
        "detection",
        {
            "num_detections": "num_detections",
            "boxes": "nmsed_boxes",
            "scores": "nmsed_scores",
            "classes": "nmsed_classes",
        },
        "BatchedNMS_TRT plugin outputs (float32 class ids)",
    ),
    "ssd_raw": OutputFormat(
        "detection",
        {"scores": "scores", "boxes": "boxes"},
        "undecoded SSD heads + anchors, decoded and NMS'd on the CPU",
    ),
    "yolo": OutputFormat(
        "detection",
        {"predictions": "output0"},
        "Ultralytics YOLOv5u/v8/v9/v11/v12 raw head: [B, 4+C, N] (or [B, N, 4+C]) cx, cy, w, h in input "
        "pixels + C class scores, no objectness; NMS on the CPU",
    ),
    "yolov5": OutputFormat(
        "detection",
        {"predictions": "output0"},
        "YOLOv5/v7 raw head: [B, N, 5+C] cx, cy, w, h, objectness, C class scores; score = obj * cls",
    ),
    "yolox": OutputFormat(
        "detection",
        {"predictions": "output"},
        "YOLOX head: [B, N, 5+C]; grid decode done in the graph or here (decode: true)",
    ),
    "end_to_end": OutputFormat(
        "detection",
        {"detections": "output0"},
        "NMS already in the graph (Ultralytics nms=True, YOLOv10, YOLO26): [B, K, 6] x1, y1, x2, y2, score, class",
    ),
    "boxes_scores": OutputFormat(
        "detection",
        {"boxes": "boxes", "scores": "scores"},
        "decoded boxes [B, N, 4] + class scores [B, N, C]; NMS on the CPU",
    ),
    "classification": OutputFormat(
        "classification",
        {"scores": "output0"},
        "logits or probabilities [B, C] -> top-k classes",
    ),
    "segmentation": OutputFormat(
        "segmentation",
        {"mask": "output0"},
        "per-class scores [B, C, H, W] (or [B, H, W, C]) or class ids [B, H, W] -> class-id mask",
    ),
    "steering_linear": OutputFormat(
        "steering",
        {"angle": "angle", "throttle": "throttle"},
        "DonkeyCar Linear: one scalar output per head (or one [1,2] 'combined' tensor)",
    ),
    "steering_categorical": OutputFormat(
        "steering",
        {"angle": "angle", "throttle": "throttle"},
        "DonkeyCar Categorical: softmax bins per head",
    ),
}


@dataclass(frozen=True)
class InputSpec:
    """How a decoded frame becomes the model's input tensor."""

    name: str
    height: int
    width: int
    layout: str = "NCHW"
    color: str = "RGB"
    resize: str = "stretch"
    pad_value: float = 0.0  # letterbox border, in 0..255 pixel units before scaling
    interpolation: str = "linear"
    dtype: str = "float32"
    scale: Tuple[float, ...] = (1.0, 1.0, 1.0)  # y = x * scale + offset, per channel in model color order
    offset: Tuple[float, ...] = (0.0, 0.0, 0.0)
    crop_top: int = 0  # rows removed from the frame, counted at model resolution (DonkeyCar ROI crop)
    crop_bottom: int = 0
    sequence: int = 0  # > 0: the input holds the last N frames, [1, N, ...] (DonkeyCar rnn / 3d pilots)
    # Regions kept by a DonkeyCar mask transformation, as polygons in model pixels (x, y) drawn the way DonkeyCar
    # draws them (cv2.fillConvexPoly, edges included); pixels outside any of them are set to 0 before scaling.
    mask: Tuple[Tuple[Tuple[int, int], ...], ...] = ()

    @property
    def channels(self) -> int:
        return 1 if self.color == "GRAY" else 3

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        """Batch-1 shape of ONE frame in the spec's layout (what the preprocessor writes)."""
        if self.layout == "NCHW":
            return (1, self.channels, self.height, self.width)
        return (1, self.height, self.width, self.channels)

    @property
    def tensor_shape(self) -> Tuple[int, ...]:
        """The model input's shape: one frame, or ``[1, sequence, ...frame]`` for a frame sequence."""
        if self.sequence:
            return (1, self.sequence, *self.shape[1:])
        return self.shape


@dataclass(frozen=True)
class ExtraInput:
    """A model input besides the camera frame, and where its values come from each frame (spec ``inputs``).

    ``memory``: the pilot's own last ``length`` raw (angle, throttle) outputs, oldest first, started as ``start``
    (DonkeyCar KerasMemory). ``imu``: ``fields`` of the latest sensor_msgs/Imu on ``topic``, each times its
    ``scale``; older than ``max_age`` seconds = a stop. ``behavior``: a one-hot vector over ``labels``, set by a
    std_msgs/String on ``topic`` (or the head's ``behavior`` param), ``default`` at start.
    """

    name: str
    source: str
    size: int  # values in the tensor ([1, size])
    length: int = 0
    start: Tuple[float, float] = (0.0, 0.0)
    topic: str = ""
    fields: Tuple[str, ...] = ()
    scale: Tuple[float, ...] = ()
    max_age: float = 0.0
    labels: Tuple[str, ...] = ()
    default: str = ""


@dataclass(frozen=True)
class OutputSpec:
    """Which output format the model speaks, its role -> tensor-name map, and format parameters."""

    format: str
    tensors: Mapping[str, str]
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return OUTPUT_FORMATS[self.format].task


@dataclass(frozen=True)
class DetectionSpec:
    """Default detection post-processing; node params and CLI flags override it at run time."""

    score_threshold: float = 0.5
    iou_threshold: float = 0.45
    max_detections: int = 100
    labels: Tuple[str, ...] = ()
    first_label_id: int = 0  # class id of the first entry of ``labels``
    classes: Tuple[Union[int, str], ...] = ()  # allow-list by id or label; empty = all

    def label_for(self, class_id: int) -> str:
        """The label of a class id, or the id as text when the label list does not cover it."""
        index = int(class_id) - self.first_label_id
        if 0 <= index < len(self.labels):
            return self.labels[index]
        return str(int(class_id))

    def allowed_class_ids(self, name: str = "detection.classes") -> Optional[frozenset]:
        """The allow-list as class ids (labels resolved), or None when every class is allowed. ``name``: what the
        user wrote the list in (the spec key, a head's param, a flag), for the error."""
        if not self.classes:
            return None
        ids = set()
        first, count = self.first_label_id, len(self.labels)
        for item in self.classes:
            if isinstance(item, int):
                if count and not first <= item < first + count:  # no label names it: a typo, or another model's ids
                    raise SpecError(
                        f"{name}: class id {item} is not one of the model's {count} labels (ids {first}-"
                        f"{first + count - 1}, e.g. {list(self.labels[:5])}); fix: use a label or an id in that range"
                    )
                ids.add(item)
            elif item in self.labels:
                ids.add(self.labels.index(item) + first)
            else:
                raise SpecError(
                    f"{name}: label {item!r} is not in the labels list "
                    f"({count} labels, e.g. {list(self.labels[:5])}); "
                    "fix: use a label from the labels file or a numeric class id"
                )
        return frozenset(ids)


@dataclass(frozen=True)
class ClassificationSpec:
    """Default classification post-processing (labels, how many classes to report)."""

    labels: Tuple[str, ...] = ()
    first_label_id: int = 0
    top_k: int = 5
    score_threshold: float = 0.0

    def label_for(self, class_id: int) -> str:
        index = int(class_id) - self.first_label_id
        if 0 <= index < len(self.labels):
            return self.labels[index]
        return str(int(class_id))


@dataclass(frozen=True)
class SegmentationSpec:
    """Class names and overlay colours of a segmentation model (class id = index)."""

    labels: Tuple[str, ...] = ()
    colors: Tuple[Tuple[int, int, int], ...] = ()  # RGB per class; empty = a fixed palette

    def label_for(self, class_id: int) -> str:
        if 0 <= int(class_id) < len(self.labels):
            return self.labels[int(class_id)]
        return str(int(class_id))


@dataclass(frozen=True)
class ModelSpec:
    """A validated model spec. ``data`` keeps the merged mapping it was parsed from (for writing back)."""

    task: str
    input: InputSpec
    output: OutputSpec
    detection: DetectionSpec = field(default_factory=DetectionSpec)
    classification: ClassificationSpec = field(default_factory=ClassificationSpec)
    segmentation: SegmentationSpec = field(default_factory=SegmentationSpec)
    inputs: Tuple[ExtraInput, ...] = ()  # model inputs other than the image, in spec order
    name: str = ""
    build: Mapping[str, Any] = field(default_factory=dict)
    source: Optional[Path] = None  # the spec file, for resolving relative paths
    data: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def resolve_path(self, value: Union[str, os.PathLike]) -> Path:
        """A path from the spec, relative to the spec file's folder."""
        path = Path(os.path.expanduser(str(value)))
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path

    def with_data(self, data: Mapping[str, Any]) -> ModelSpec:
        """A new spec parsed from ``data`` with this spec's source folder."""
        return parse_spec(data, source=self.source)

    def to_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(dict(self.data))


# ----------------------------------------------------------------------------------------------- parsing


def _fail(key: str, value: Any, expected: str, fix: str = "") -> SpecError:
    text = f"spec key {key!r} is {value!r}; expected {expected}"
    if fix:
        text += f"; fix: {fix}"
    return SpecError(text)


def _take(section: Mapping[str, Any], key: str, prefix: str, default: Any = ..., kind: Any = None) -> Any:
    if key not in section:
        if default is ...:
            raise SpecError(f"spec key {prefix + key!r} is missing; add it to the spec (see README 'Model specs')")
        return default
    value = section[key]
    kinds = (kind,) if isinstance(kind, type) else tuple(kind or ())
    numeric = int in kinds or float in kinds
    if kinds and (not isinstance(value, kinds) or (numeric and isinstance(value, bool))):
        name = " or ".join(k.__name__ for k in kinds)
        raise _fail(prefix + key, value, f"a {name}")
    return value


def _choice(section: Mapping[str, Any], key: str, prefix: str, choices: Sequence[str], default: Any = ...) -> str:
    value = _take(section, key, prefix, default)
    normalized = str(value).upper() if choices[0].isupper() else str(value).lower()
    if normalized not in choices:
        raise _fail(prefix + key, value, f"one of {list(choices)}")
    return normalized


def _check_keys(section: Mapping[str, Any], allowed: Iterable[str], prefix: str) -> None:
    allowed = set(allowed)
    unknown = sorted(str(k) for k in section if k not in allowed)  # YAML keys may be numbers: `3: x`
    if unknown:
        raise SpecError(
            f"unknown spec key(s) {[prefix + k for k in unknown]}; allowed here: {sorted(allowed)} "
            "(check the spelling against README 'Model specs')"
        )


def _mapping(data: Mapping[str, Any], key: str, prefix: str = "", required: bool = True) -> Mapping[str, Any]:
    if key not in data:
        if required:
            raise SpecError(f"spec section {prefix + key!r} is missing; add it (see README 'Model specs')")
        return {}
    value = data[key]
    if not isinstance(value, Mapping):
        raise _fail(prefix + key, value, "a mapping (YAML 'key: value' block)")
    return value


def _per_channel(value: Any, key: str, channels: int) -> Tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * channels
    if isinstance(value, (list, tuple)) and len(value) == channels and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return tuple(float(v) for v in value)
    raise _fail(key, value, f"a number or a list of {channels} numbers (one per channel)")


def _parse_input(section: Mapping[str, Any]) -> InputSpec:
    p = "input."
    _check_keys(
        section,
        (
            "name", "height", "width", "layout", "color", "resize", "pad_value", "interpolation", "dtype",
            "scale", "offset", "mean", "std", "crop", "sequence", "mask",
        ),
        p,
    )
    color = _choice(section, "color", p, COLORS, "RGB")
    channels = 1 if color == "GRAY" else 3
    height = _take(section, "height", p, kind=int)
    width = _take(section, "width", p, kind=int)
    if height <= 0 or width <= 0:
        raise _fail(p + "height/width", (height, width), "positive integers (the model's input size)")
    if ("mean" in section or "std" in section) and ("scale" in section or "offset" in section):
        raise SpecError(
            "spec 'input' gives both mean/std and scale/offset; expected one form; "
            "fix: keep mean/std ((x - mean) / std) or scale/offset (x * scale + offset)"
        )
    if "mean" in section or "std" in section:
        mean = _per_channel(section.get("mean", 0.0), p + "mean", channels)
        std = _per_channel(section.get("std", 1.0), p + "std", channels)
        if any(s == 0 for s in std):
            raise _fail(p + "std", section.get("std"), "non-zero values")
        scale = tuple(1.0 / s for s in std)
        offset = tuple(-m / s for m, s in zip(mean, std))
    else:
        scale = _per_channel(section.get("scale", 1.0), p + "scale", channels)
        offset = _per_channel(section.get("offset", 0.0), p + "offset", channels)
    crop = section.get("crop", {}) or {}
    if not isinstance(crop, Mapping):
        raise _fail(p + "crop", crop, "a mapping like {top: 40, bottom: 0}")
    _check_keys(crop, ("top", "bottom"), p + "crop.")
    crop_top = _take(crop, "top", p + "crop.", 0, int)
    crop_bottom = _take(crop, "bottom", p + "crop.", 0, int)
    if crop_top < 0 or crop_bottom < 0:
        raise _fail(p + "crop", dict(crop), "non-negative row counts")
    sequence = _take(section, "sequence", p, 0, int)
    if sequence < 0:
        raise _fail(p + "sequence", sequence, "a positive number of frames (or 0: one frame)")
    mask = _parse_mask(section.get("mask"), height, width) if "mask" in section else ()
    return InputSpec(
        name=str(_take(section, "name", p, kind=str)),
        height=height,
        width=width,
        layout=_choice(section, "layout", p, LAYOUTS, "NCHW"),
        color=color,
        resize=_choice(section, "resize", p, RESIZE_MODES, "stretch"),
        pad_value=float(_take(section, "pad_value", p, 0.0, (int, float))),
        interpolation=_choice(section, "interpolation", p, INTERPOLATIONS, "linear"),
        dtype=_choice(section, "dtype", p, DTYPES, "float32"),
        scale=scale,
        offset=offset,
        crop_top=crop_top,
        crop_bottom=crop_bottom,
        sequence=sequence,
        mask=mask,
    )


MASK_EXAMPLE = "{top: 45, bottom: 0, left: 0, right: 0} or {polygon: [[20, 60], [140, 60], [160, 120], [0, 120]]}"


def _parse_mask(value: Any, height: int, width: int) -> Tuple[Tuple[Tuple[int, int], ...], ...]:
    """``input.mask``: one region or a list of regions kept (the intersection), each a DonkeyCar ROI rectangle
    ``{top, bottom, left, right}`` (TRANSFORMATIONS CROP: autorope/donkeycar@cde8bbe9 parts/cv.py:472-524, the
    rectangle ``[[left, top], [W - right, top], [W - right, H - bottom], [left, H - bottom]]`` filled with
    cv2.fillConvexPoly, edges included) or a ``{polygon: [[x, y], ...]}`` (TRAPEZE: [[UL, MIN_Y], [UR, MIN_Y],
    [LR, MAX_Y], [LL, MAX_Y]], cv.py ImgTrapezoidalMask), in model-input pixels."""
    key = "input.mask"
    regions = value if isinstance(value, (list, tuple)) else [value]
    if not regions:
        raise _fail(key, value, f"a region like {MASK_EXAMPLE}, or a list of them")
    polygons = []
    for index, region in enumerate(regions):
        where = key if len(regions) == 1 and not isinstance(value, (list, tuple)) else f"{key}[{index}]"
        if not isinstance(region, Mapping):
            raise _fail(where, region, f"a mapping like {MASK_EXAMPLE}")
        if "polygon" in region:
            _check_keys(region, ("polygon",), where + ".")
            points = region["polygon"]
            ok = isinstance(points, (list, tuple)) and len(points) >= 3 and all(
                isinstance(pt, (list, tuple)) and len(pt) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in pt)
                for pt in points
            )
            if not ok:
                raise _fail(where + ".polygon", points, "a list of at least 3 [x, y] integer points (model pixels)")
            polygons.append(tuple((int(x), int(y)) for x, y in points))
            continue
        _check_keys(region, ("top", "bottom", "left", "right"), where + ".")
        sides = {k: _take(region, k, where + ".", 0, int) for k in ("top", "bottom", "left", "right")}
        if any(v < 0 for v in sides.values()):
            raise _fail(where, dict(region), "non-negative pixel counts (DonkeyCar ROI_CROP_TOP/BOTTOM/LEFT/RIGHT)")
        if sides["top"] + sides["bottom"] >= height or sides["left"] + sides["right"] >= width:
            raise _fail(where, dict(region), f"a region inside the {width}x{height} input (it masks everything)")
        left, top = sides["left"], sides["top"]
        right, bottom = width - sides["right"], height - sides["bottom"]
        polygons.append(((left, top), (right, top), (right, bottom), (left, bottom)))
    return tuple(polygons)


def _number_list(value: Any, key: str, count: Optional[int] = None) -> Tuple[float, ...]:
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value
    )
    if not ok or (count is not None and len(value) != count):
        raise _fail(key, value, f"a list of {count} numbers" if count is not None else "a list of numbers")
    return tuple(float(v) for v in value)


_SOURCE_KEYS = {
    "memory": ("source", "length", "start"),
    "imu": ("source", "topic", "fields", "scale", "max_age"),
    "behavior": ("source", "topic", "labels", "default"),
}
INPUTS_EXAMPLE = (
    "inputs: {mem_in: {source: memory, length: 3}} (DonkeyCar memory pilot), {imu_in: {source: imu}} or "
    "{xbehavior_in: {source: behavior, labels: [Left_Lane, Right_Lane]}}"
)


def _parse_inputs(section: Mapping[str, Any], image_input: str) -> Tuple[ExtraInput, ...]:
    """``inputs``: model input name -> where its values come from (see ``ExtraInput``)."""
    parsed = []
    for name, entry in section.items():
        p = f"inputs.{name}."
        if not isinstance(name, str) or not name:
            raise _fail("inputs", dict(section), "model input names as keys")
        if name == image_input:
            raise _fail(f"inputs.{name}", entry, "a model input other than the image (input.name feeds the frame)")
        if not isinstance(entry, Mapping):
            raise _fail(f"inputs.{name}", entry, f"a mapping with a source, e.g. {INPUTS_EXAMPLE}")
        source = _choice(entry, "source", p, INPUT_SOURCES)
        _check_keys(entry, _SOURCE_KEYS[source], p)
        if source == "memory":
            length = _take(entry, "length", p, kind=int)
            if length < 1:
                raise _fail(p + "length", length, "the number of (angle, throttle) pairs, >= 1 (the tensor is [1, 2n])")
            start = _number_list(entry.get("start", [0.0, 0.0]), p + "start", 2)
            parsed.append(ExtraInput(name, source, 2 * length, length=length, start=(start[0], start[1])))
        elif source == "imu":
            topic = _take(entry, "topic", p, "imu", str)
            fields = entry.get("fields", list(DONKEY_IMU_FIELDS))
            if not isinstance(fields, (list, tuple)) or not fields or any(f not in IMU_FIELDS for f in fields):
                raise _fail(p + "fields", fields, f"a list of sensor_msgs/Imu fields from {list(IMU_FIELDS)}")
            default_scale = [DEG_PER_RAD if f.startswith("angular_velocity") else 1.0 for f in fields]
            scale = _number_list(entry.get("scale", default_scale), p + "scale", len(fields))
            max_age = float(_take(entry, "max_age", p, 0.25, (int, float)))
            if not 0.0 < max_age <= 60.0:
                raise _fail(p + "max_age", max_age, "seconds in (0, 60]: older IMU data stops the car")
            parsed.append(ExtraInput(name, source, len(fields), topic=topic, fields=tuple(fields), scale=scale,
                                     max_age=max_age))
        else:
            topic = _take(entry, "topic", p, "behavior", str)
            labels = entry.get("labels")
            if not isinstance(labels, (list, tuple)) or not labels or not all(isinstance(x, str) and x for x in labels):
                raise _fail(p + "labels", labels, "the behavior names in one-hot order (DonkeyCar BEHAVIOR_LIST)")
            if len(set(labels)) != len(labels):
                raise _fail(p + "labels", labels, "distinct names")
            default = _take(entry, "default", p, labels[0], str)
            if default not in labels:
                raise _fail(p + "default", default, f"one of the labels {list(labels)}")
            parsed.append(ExtraInput(name, source, len(labels), topic=topic, labels=tuple(labels), default=default))
        if source in ("imu", "behavior") and not parsed[-1].topic.strip("/"):
            raise _fail(p + "topic", parsed[-1].topic, "a topic name (relative names follow the node's namespace)")
    topics = [i.topic for i in parsed if i.topic]
    if len(set(topics)) != len(topics):
        raise _fail("inputs", dict(section), "one topic per input (two inputs read the same topic)")
    return tuple(parsed)


def _parse_output(section: Mapping[str, Any]) -> OutputSpec:
    p = "output."
    fmt = _take(section, "format", p, kind=str)
    if fmt not in OUTPUT_FORMATS:
        raise _fail(p + "format", fmt, f"one of {sorted(OUTPUT_FORMATS)}")
    tensors = section.get("tensors")
    if tensors is None:
        tensors = dict(OUTPUT_FORMATS[fmt].default_tensors)
    elif not isinstance(tensors, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tensors.items()
    ):
        raise _fail(p + "tensors", tensors, "a mapping of role -> tensor name, e.g. {boxes: detection_boxes}")
    params = {k: v for k, v in section.items() if k not in ("format", "tensors")}
    return OutputSpec(format=fmt, tensors=dict(tensors), params=params)


def _load_labels(value: Any, key: str, source: Optional[Path]) -> Tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    if isinstance(value, str):
        path = Path(os.path.expanduser(value))
        if not path.is_absolute() and source is not None:
            path = source.parent / path
        if not path.exists():
            raise _fail(key, value, f"a labels file (one label per line) or a list; {path} does not exist")
        text = read_text_file(path, f"labels file of spec key {key!r},", "UTF-8 text, one label per line")
        return tuple(line.strip() for line in text.splitlines() if line.strip())
    raise _fail(key, value, "a list of labels or the path of a labels file")


def _parse_detection(section: Mapping[str, Any], source: Optional[Path]) -> DetectionSpec:
    p = "detection."
    _check_keys(
        section, ("score_threshold", "iou_threshold", "max_detections", "labels", "first_label_id", "classes"), p
    )
    score = float(_take(section, "score_threshold", p, 0.5, (int, float)))
    iou = float(_take(section, "iou_threshold", p, 0.45, (int, float)))
    if not 0.0 <= score <= 1.0:
        raise _fail(p + "score_threshold", score, "a number in [0, 1]")
    if not 0.0 < iou <= 1.0:
        raise _fail(p + "iou_threshold", iou, "a number in (0, 1]")
    max_det = _take(section, "max_detections", p, 100, int)
    if max_det <= 0:
        raise _fail(p + "max_detections", max_det, "a positive integer")
    labels = _load_labels(section["labels"], p + "labels", source) if "labels" in section else ()
    classes = section.get("classes", []) or []
    if not isinstance(classes, (list, tuple)) or not all(
        isinstance(c, (int, str)) and not isinstance(c, bool) for c in classes
    ):
        raise _fail(p + "classes", classes, "a list of class ids or labels")
    spec = DetectionSpec(
        score_threshold=score,
        iou_threshold=iou,
        max_detections=max_det,
        labels=labels,
        first_label_id=_take(section, "first_label_id", p, 0, int),
        classes=tuple(classes),
    )
    spec.allowed_class_ids()  # refuse unknown labels now, not on the first frame
    return spec


def _parse_classification(section: Mapping[str, Any], source: Optional[Path]) -> ClassificationSpec:
    p = "classification."
    _check_keys(section, ("labels", "first_label_id", "top_k", "score_threshold"), p)
    top_k = _take(section, "top_k", p, 5, int)
    if top_k <= 0:
        raise _fail(p + "top_k", top_k, "a positive integer (how many classes to report)")
    score = float(_take(section, "score_threshold", p, 0.0, (int, float)))
    if not 0.0 <= score <= 1.0:
        raise _fail(p + "score_threshold", score, "a number in [0, 1]")
    labels = _load_labels(section["labels"], p + "labels", source) if "labels" in section else ()
    return ClassificationSpec(labels, _take(section, "first_label_id", p, 0, int), top_k, score)


def _parse_segmentation(section: Mapping[str, Any], source: Optional[Path]) -> SegmentationSpec:
    p = "segmentation."
    _check_keys(section, ("labels", "colors"), p)
    labels = _load_labels(section["labels"], p + "labels", source) if "labels" in section else ()
    colors = section.get("colors", []) or []
    ok = isinstance(colors, (list, tuple)) and all(
        isinstance(c, (list, tuple)) and len(c) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
        for c in colors
    )
    if not ok:
        raise _fail(p + "colors", colors, "a list of [r, g, b] triples in 0..255, one per class")
    if colors and labels and len(colors) < len(labels):
        raise _fail(p + "colors", colors, f"one colour per label ({len(labels)} labels)")
    return SegmentationSpec(labels, tuple(tuple(int(v) for v in c) for c in colors))


def parse_spec(data: Mapping[str, Any], source: Optional[Union[str, Path]] = None) -> ModelSpec:
    """Validate a spec mapping (as loaded from YAML) and return a ``ModelSpec``."""
    source_path = Path(source) if source is not None else None
    where = f" in {source_path}" if source_path else ""
    if not isinstance(data, Mapping):
        raise SpecError(f"model spec{where} is {type(data).__name__}; expected a YAML mapping with task/input/output")
    try:
        _check_keys(
            data,
            ("version", "name", "task", "input", "output", "detection", "classification", "segmentation",
             "build", "source", "inputs"),
            "",
        )
        version = _take(data, "version", "", SPEC_VERSION, int)
        if version != SPEC_VERSION:
            raise _fail("version", version, f"{SPEC_VERSION} (this trt_perception reads spec version {SPEC_VERSION})")
        task = _choice(data, "task", "", TASKS)
        model_input = _parse_input(_mapping(data, "input"))
        output = _parse_output(_mapping(data, "output"))
        if output.task != task:
            raise _fail(
                "output.format", output.format,
                f"a {task} format ({[k for k, v in OUTPUT_FORMATS.items() if v.task == task]})",
                f"'{output.format}' is a {output.task} format: set task: {output.task} or change the format",
            )
        detection = _parse_detection(_mapping(data, "detection", required=False), source_path)
        classification = _parse_classification(_mapping(data, "classification", required=False), source_path)
        segmentation = _parse_segmentation(_mapping(data, "segmentation", required=False), source_path)
        build = dict(_mapping(data, "build", required=False))
        extra = _parse_inputs(_mapping(data, "inputs", required=False), model_input.name)
        if extra and task != "steering":
            raise _fail("inputs", data["inputs"], "no extra inputs for a " + task + " model",
                        "inputs (memory, imu, behavior) feed steering pilots only")
    except SpecError as exc:
        raise SpecError(f"{exc}{where}") from None
    return ModelSpec(
        task=task,
        input=model_input,
        output=output,
        detection=detection,
        classification=classification,
        segmentation=segmentation,
        inputs=extra,
        name=str(data.get("name", "")),
        build=build,
        source=source_path,
        data=copy.deepcopy(dict(data)),
    )


# --------------------------------------------------------------------------------------- files and merging


def spec_candidates(model_path: Union[str, Path]) -> List[Path]:
    """Where a model's spec may live: ``model.engine.yaml`` first (builder output), then ``model.yaml``."""
    model = Path(model_path)
    return [model.with_name(model.name + ".yaml"), model.with_suffix(".yaml")]


def find_spec(model_path: Union[str, Path]) -> Optional[Path]:
    for candidate in spec_candidates(model_path):
        if candidate.is_file():
            return candidate
    return None


# PyYAML's pure-Python safe loader: libyaml's CSafeLoader crashes the process (segfault, C stack) on deep
# nesting with Debian/Ubuntu's python3-yaml 6.0 - what a Jetson's apt installs - so deep nesting is refused by
# `check_nesting` before any loader sees it; specs are a few KB, the C loader's speed buys nothing here.
YAML_LOADER: Any = yaml.SafeLoader
MAX_NESTING = 64  # a spec nests 3-4 levels; flow brackets or leading indent/dashes beyond this are not a spec
MAX_TEXT_BYTES = 16 << 20  # specs and labels files are a few KB; a bigger file is the wrong file


def read_text_file(path: Path, what: str, expected: str) -> str:
    """A spec or labels file's text; a folder, an unreadable, huge or binary file (``--spec model.onnx``) is a
    SpecError naming it, instead of IsADirectoryError/PermissionError/UnicodeDecodeError from deep inside."""
    fix = "fix: pass the .yaml spec written next to the model (not the model or engine itself)" \
        if what == "model spec" else "fix: pass a text file with one label per line, or list the labels in the spec"
    if path.is_dir():
        raise SpecError(f"{what} {path} is a folder; expected {expected}; {fix}")
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise SpecError(f"{what} {path} is {size} bytes; expected {expected} (at most {MAX_TEXT_BYTES} bytes); "
                            f"{fix}")
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{what} {path} cannot be read ({exc.strerror or exc}); {fix}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{what} {path} is not a text file (binary data at byte {exc.start} of {len(data)}); "
                        f"expected {expected}; {fix}") from None
    if "\x00" in text:
        raise SpecError(f"{what} {path} is not a text file (a NUL byte at {text.index(chr(0))} of {len(data)}); "
                        f"expected {expected}; {fix}")
    return text.lstrip("\ufeff")  # a BOM some editors write


def nesting_depth(text: str) -> int:
    """A cheap upper bound of a YAML text's nesting: unclosed ``[``/``{`` (quotes not parsed: brackets inside
    strings only raise it) and the deepest leading indent or ``- `` run of a line, in levels of two columns."""
    depth = deepest = 0
    for char in re.sub(r"[^\[\]{}]", "", text):
        depth = depth + 1 if char in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    indent = max((len(line) - len(line.lstrip(" -")) for line in text.splitlines()), default=0)
    return max(deepest, indent // 2)


def read_spec_file(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise SpecError(f"model spec file {path} does not exist; fix: pass the right path or write one (README)")
    text = read_text_file(path, "model spec", "a YAML text file")
    if nesting_depth(text) > MAX_NESTING:
        raise SpecError(f"model spec {path} is not valid YAML for a spec: it is nested too deeply (over "
                        f"{MAX_NESTING} levels); fix: pass the spec YAML written next to the model")
    try:
        data = yaml.load(text, Loader=YAML_LOADER)  # a safe loader
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).replace('"<unicode string>"', "the file").split())  # one line for a log
        raise SpecError(f"model spec {path} is not valid YAML: {reason}") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise SpecError(f"model spec {path} is not valid YAML for a spec: it is nested too deeply; fix: pass the "
                        "spec YAML written next to the model") from None
    if not isinstance(data, dict):
        raise SpecError(f"model spec {path} holds {type(data).__name__}; expected a mapping with task/input/output")
    return data


def merge_overrides(data: Mapping[str, Any], overrides: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``data``; dotted keys (``detection.score_threshold``) nest."""
    merged: Dict[str, Any] = copy.deepcopy(dict(data))
    for key, value in (overrides or {}).items():
        parts = str(key).split(".")
        target = merged
        for part in parts[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = {}
                target[part] = child
            target = child
        if isinstance(value, Mapping) and isinstance(target.get(parts[-1]), dict):
            target[parts[-1]] = merge_overrides(target[parts[-1]], value)
        else:
            target[parts[-1]] = copy.deepcopy(value)
    return merged


def load_spec(
    model_path: Optional[Union[str, Path]] = None,
    spec_path: Optional[Union[str, Path]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> ModelSpec:
    """Load the spec given by path, or the one found next to the model, with overrides merged in."""
    if spec_path is None:
        if model_path is None:
            raise SpecError("no model spec given; pass a spec path or a model path with a spec beside it")
        spec_path = find_spec(model_path)
        if spec_path is None:
            names = ", ".join(str(c) for c in spec_candidates(model_path))
            raise SpecError(
                f"no model spec found for {model_path} (looked for {names}); fix: write one next to the model "
                "(README 'Model specs' has one example per output format) or pass its path"
            )
    data = merge_overrides(read_spec_file(spec_path), overrides)
    return parse_spec(data, source=Path(spec_path))


def save_spec(data: Union[ModelSpec, Mapping[str, Any]], path: Union[str, Path], overwrite: bool = False) -> Path:
    """Write a spec YAML (validated first). Refuses to replace an existing file unless ``overwrite``."""
    path = Path(path)
    mapping = data.to_dict() if isinstance(data, ModelSpec) else dict(data)
    parse_spec(mapping, source=path)
    if path.exists() and not overwrite:
        raise SpecError(f"{path} exists; refusing to overwrite it (pass --force / overwrite=True to replace it)")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(mapping, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------- checking against a model


def _dims_match(expected: Sequence[int], actual: Sequence[Optional[int]]) -> bool:
    if len(expected) != len(actual):
        return False
    return all(a is None or a < 0 or int(a) == int(e) for e, a in zip(expected, actual))


def check_input(spec: ModelSpec, inputs: Sequence[Any]) -> Any:
    """Find the spec's input among a backend's inputs and check shape and dtype; returns that TensorSpec.

    ``inputs`` are ``backends.base.TensorSpec``-like objects (``name``, ``shape``, ``dtype``). A float16
    model input with a float32 spec is accepted (the preprocessor writes float16 directly).
    """
    by_name = {t.name: t for t in inputs}
    if spec.input.name not in by_name:
        raise SpecError(
            f"spec input.name is {spec.input.name!r} but the model has no such input; "
            f"the model's inputs are {sorted(by_name)}; fix: set input.name to one of them"
        )
    tensor = by_name[spec.input.name]
    expected = spec.input.tensor_shape
    shape = tuple(tensor.shape)
    if len(shape) == len(expected) - 1:  # implicit-batch TensorRT engines leave the batch dimension out
        shape = (1, *shape)
    if len(shape) == len(expected) and shape[0] is not None and int(shape[0]) > 1:
        shape = (None, *shape[1:])  # a static batch > 1: frames fill its rows (ModelPipeline.static_batch)
    if not _dims_match(expected, shape):
        sequence = (
            f", a sequence of {spec.input.sequence} frames" if spec.input.sequence
            else "; a 5-D input holds a frame sequence: set input.sequence to its second dimension"
            if len(shape) == 5 else ""
        )
        raise SpecError(
            f"model input {tensor.name!r} has shape {tuple(tensor.shape)} but the spec says {expected} "
            f"(layout {spec.input.layout}, {spec.input.height}x{spec.input.width}, color {spec.input.color}"
            f"{sequence}); fix: correct input.layout/height/width/color/sequence in the spec"
        )
    dtype = np.dtype(tensor.dtype)
    float_ok = spec.input.dtype in ("float32", "float16") and dtype in (np.float32, np.float16)
    if dtype != np.dtype(spec.input.dtype) and not float_ok:
        raise SpecError(
            f"model input {tensor.name!r} has dtype {dtype} but the spec says {spec.input.dtype}; "
            f"fix: set input.dtype: {dtype} in the spec"
        )
    return tensor


_SIZE_FIX = {
    "memory": "set inputs.{name}.length to half its last dimension",
    "imu": "list as many inputs.{name}.fields as its last dimension",
    "behavior": "list as many inputs.{name}.labels as its last dimension",
}


def check_extra_inputs(spec: ModelSpec, inputs: Sequence[Any]) -> Dict[str, Any]:
    """Every model input besides the image must be declared in the spec's ``inputs`` with a matching size, and
    every declared one must exist: a pilot fed nothing for ``mem_in`` would drive on garbage. Returns
    name -> TensorSpec of the extra inputs."""
    by_name = {t.name: t for t in inputs}
    declared = {extra.name: extra for extra in spec.inputs}
    found: Dict[str, Any] = {}
    for tensor in inputs:
        if tensor.name == spec.input.name:
            continue
        extra = declared.get(tensor.name)
        if extra is None:
            raise SpecError(
                f"model input {tensor.name!r} {list(tensor.shape)} is not fed: the spec's inputs section does not "
                f"name it (the image goes to {spec.input.name!r}); fix: add it under inputs, e.g. "
                f"{INPUTS_EXAMPLE}; `trt-perception convert` writes it for DonkeyCar pilots"
            )
        shape = [d for d in tuple(tensor.shape)]
        if len(shape) == 1:  # implicit batch
            shape = [1, *shape]
        if len(shape) != 2 or not _dims_match((1, extra.size), shape):
            raise SpecError(
                f"model input {tensor.name!r} has shape {list(tensor.shape)} but inputs.{extra.name} "
                f"({extra.source}) holds {extra.size} values ([1, {extra.size}]); fix: "
                f"{_SIZE_FIX[extra.source].format(name=extra.name)}"
            )
        if np.dtype(tensor.dtype) not in (np.float32, np.float16):
            raise SpecError(
                f"model input {tensor.name!r} has dtype {np.dtype(tensor.dtype)}; inputs.{extra.name} "
                f"({extra.source}) feeds float32 values; fix: export the model with a float input"
            )
        found[tensor.name] = tensor
    missing = sorted(set(declared) - set(by_name))
    if missing:
        raise SpecError(
            f"spec inputs {missing} name no model input; the model's inputs are {sorted(by_name)}; fix: use "
            "those names under inputs, or remove the entries"
        )
    return found


def check_output_names(spec: ModelSpec, outputs: Sequence[Any]) -> None:
    """Every tensor the spec maps must exist among the model's outputs (mapped by name, never by index)."""
    names = {t.name for t in outputs}
    for role, tensor in spec.output.tensors.items():
        if tensor not in names:
            raise SpecError(
                f"spec output.tensors.{role} is {tensor!r} but the model has no output of that name; "
                f"the model's outputs are {sorted(names)}; fix: map {role} to one of them in output.tensors"
            )


def replace_input(spec: ModelSpec, **changes: Any) -> ModelSpec:
    """A copy of ``spec`` with some input fields changed (used by tools that rewrite a model's input)."""
    return replace(spec, input=replace(spec.input, **changes))
