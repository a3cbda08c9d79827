"""Shared pieces of the benchmarks: interleaved timing, result tables, and the frames/messages/models they use.

Timing: every benchmark compares implementations side by side in one process. ``measure`` warms each one
up, then runs them in interleaved rounds (A, B, C, A, B, C, ...) and reports the median of per-call times,
its interquartile range, and throughput from the TOTAL time over all calls (not 1/median: the tail is fat),
so a noisy neighbour or a frequency change hits every contender alike; ratios of medians are what the
targets are about.
"""

from __future__ import annotations

import array
import datetime
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import cv2
import numpy as np

from trt_perception.backends.base import Backend, TensorSpec
from trt_perception.images import encode_compressed
from trt_perception.params import ORT_DEFAULTS
from trt_perception.spec import ModelSpec, parse_spec

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "trt_perception" / "data" / "demo"
# ONNX Runtime options as the node and replay open a model (the ort_threads / ort_spinning params' defaults)
NODE_ORT = {"threads": ORT_DEFAULTS["ort_threads"], "spinning": ORT_DEFAULTS["ort_spinning"]}

# ----------------------------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Per-call seconds of one contender."""

    samples: List[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        return float(np.percentile(self.samples, 95))

    @property
    def us(self) -> float:
        return self.median * 1e6

    @property
    def iqr(self) -> float:
        """Interquartile range of per-call seconds: the spread, robust to the fat tail."""
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float(q3 - q1)

    @property
    def per_second(self) -> float:
        """Throughput from the total time over all calls (not 1/median: the tail is fat)."""
        total = float(sum(self.samples))
        return len(self.samples) / total if total > 0 else float("nan")


def measure(
    contenders: Mapping[str, Callable[[], Any]], iterations: int, warmup: int = 20, rounds: int = 10
) -> Dict[str, Timing]:
    """Median per-call time of each contender, measured in interleaved rounds after ``warmup`` calls each."""
    for function in contenders.values():
        for _ in range(warmup):
            function()
    samples: Dict[str, List[float]] = {name: [] for name in contenders}
    per_round = max(1, iterations // rounds)
    clock = time.perf_counter
    for _ in range(rounds):
        for name, function in contenders.items():
            bucket = samples[name]
            for _ in range(per_round):
                start = clock()
                function()
                bucket.append(clock() - start)
    return {name: Timing(values) for name, values in samples.items()}


# ----------------------------------------------------------------------------------------------- tables


@dataclass
class Table:
    """One benchmark's result: rows of named values, each row optionally with a target and PASS/MISS."""

    key: str
    title: str
    columns: List[str]
    rows: List[Dict[str, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    skipped: str = ""

    def add(self, status: Optional[bool] = None, target: str = "", **values: Any) -> Dict[str, Any]:
        row = dict(values)
        row["target"] = target
        row["status"] = "" if status is None else ("PASS" if status else "MISS")
        self.rows.append(row)
        return row

    @property
    def misses(self) -> int:
        return sum(1 for r in self.rows if r["status"] == "MISS")

    def render(self) -> str:
        lines = [f"## {self.title}"]
        if self.skipped:
            return "\n".join([*lines, f"SKIPPED: {self.skipped}"])
        columns = [*self.columns, "target", "status"]
        cells = [[_fmt(row.get(c, "")) for c in columns] for row in self.rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for row in cells:
            lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")
        lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines)

    def to_json(self) -> Dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "notes": self.notes,
                "skipped": self.skipped}  # fmt: skip


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3g}"
    return str(value)


def machine_info() -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")


def rss_bytes() -> Optional[int]:
    """Resident set size of this process (Linux /proc), or None where unavailable."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


# ------------------------------------------------------------------------------- rclpy-like messages


class Time:
    def __init__(self, sec: int = 0, nanosec: int = 0) -> None:
        self.sec, self.nanosec = sec, nanosec


class Header:
    def __init__(self, stamp: Optional[Time] = None, frame_id: str = "") -> None:
        self.stamp = stamp or Time()
        self.frame_id = frame_id


class _ByteSequenceField:
    """A ``uint8[]`` field as rosidl_generator_py generates it for rclpy (``_msg.py.em``, Humble/Jazzy).

    The stored value is an ``array.array('B')``; assigning one is a reference, anything else is checked
    element by element (``all(isinstance(v, int) ...)`` and the 0..255 range, under ``__debug__``) and then
    copied into a new array. That check is what makes ``msg.data = img.tobytes()`` slow in rclpy.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Any:
        return getattr(obj, self.slot)

    def __set__(self, obj: Any, value: Any) -> None:
        if isinstance(value, array.array):
            assert value.typecode == "B"
            setattr(obj, self.slot, value)
            return
        assert all(isinstance(v, int) for v in value) and all(0 <= v < 256 for v in value)
        setattr(obj, self.slot, array.array("B", value))


class RclpyImage:
    """sensor_msgs/Image with rclpy's data semantics (see ``_ByteSequenceField``)."""

    data = _ByteSequenceField()

    def __init__(self, header: Optional[Header] = None, height: int = 0, width: int = 0, encoding: str = "",
                 is_bigendian: int = 0, step: int = 0, data: Any = None) -> None:  # fmt: skip
        self.header = header or Header()
        self.height, self.width, self.encoding = height, width, encoding
        self.is_bigendian, self.step = is_bigendian, step
        self.data = array.array("B") if data is None else data


class RclpyCompressedImage:
    data = _ByteSequenceField()

    def __init__(self, header: Optional[Header] = None, format: str = "", data: Any = None) -> None:
        self.header = header or Header()
        self.format = format
        self.data = array.array("B") if data is None else data


# -------------------------------------------------------------------------------------- frames/messages

ENCODINGS = ("bgr8", "rgb8", "yuyv", "jpeg")


def camera_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A BGR frame that compresses like a camera picture (smooth gradients, shapes, mild noise), not noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.empty((height, width, 3), np.float32)
    frame[..., 0] = 90 + 60 * np.sin(x / 97.0 + seed)
    frame[..., 1] = 110 + 50 * np.cos(y / 61.0)
    frame[..., 2] = 60 + 0.1 * x + 0.05 * y
    frame += rng.normal(0, 4, frame.shape).astype(np.float32)
    out = np.clip(frame, 0, 255).astype(np.uint8)
    for i in range(8):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(height // 20, height // 6))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(out, (cx, cy), (cx + size, cy + size), color, -1) if i % 2 else cv2.circle(
            out, (cx, cy), size // 2, color, -1
        )
    return out


def bgr_to_yuyv(bgr: np.ndarray) -> np.ndarray:
    """HxWx2 YUYV (4:2:2) bytes of a BGR frame, BT.601 as OpenCV's YUV2BGR_YUYV reads them."""
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV).astype(np.float32)
    height, width = bgr.shape[:2]
    out = np.empty((height, width, 2), np.uint8)
    out[:, :, 0] = yuv[:, :, 0].astype(np.uint8)
    u = (yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) / 2
    v = (yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) / 2
    out[:, 0::2, 1] = np.round(u).astype(np.uint8)
    out[:, 1::2, 1] = np.round(v).astype(np.uint8)
    return out


def image_message(frame_bgr: np.ndarray, encoding: str, stamp: float = 1.0, frame_id: str = "camera") -> Any:
    """An rclpy-like Image/CompressedImage of ``frame_bgr`` in ``encoding`` (data an ``array('B')``)."""
    header = Header(Time(int(stamp), int((stamp % 1) * 1e9)), frame_id)
    height, width = frame_bgr.shape[:2]
    if encoding == "jpeg":
        fmt, data = encode_compressed(frame_bgr, "bgr", "jpeg", quality=90)
        payload = array.array("B")
        payload.frombytes(data.tobytes())
        return RclpyCompressedImage(header=header, format=fmt, data=payload)
    if encoding == "bgr8":
        pixels = frame_bgr
    elif encoding == "rgb8":
        pixels = np.ascontiguousarray(frame_bgr[:, :, ::-1])
    elif encoding == "yuyv":
        pixels = bgr_to_yuyv(frame_bgr)
    else:
        raise ValueError(f"encoding {encoding!r}; expected one of {ENCODINGS}")
    payload = array.array("B")
    payload.frombytes(pixels.tobytes())
    step = width * pixels.shape[2]
    return RclpyImage(header=header, height=height, width=width, encoding=encoding, step=step, data=payload)


# ---------------------------------------------------------------------------------------------- models

COCO_LIKE_LABELS = ["background"] + [f"class_{i}" for i in range(1, 91)]


def ssd300_spec() -> ModelSpec:
    """SSD-MobileNet v2 COCO as tensorrt_demos runs it: 300x300 NCHW RGB, x*2/255-1; 1917 anchors x 91 classes."""
    return parse_spec({
        "task": "detection",
        "name": "ssd_mobilenet_v2_coco (shape only)",
        "input": {"name": "Input", "height": 300, "width": 300, "layout": "NCHW", "color": "RGB",
                  "scale": 2 / 255, "offset": -1.0},
        "output": {"format": "ssd_raw", "tensors": {"scores": "scores", "boxes": "boxes"},
                   "anchors": {"grid": {"feature_maps": [19, 10, 5, 3, 2, 1]}},
                   "score_activation": "sigmoid", "background_class": 0},
        "detection": {"labels": COCO_LIKE_LABELS, "score_threshold": 0.5, "iou_threshold": 0.45,
                      "max_detections": 100},
    })  # fmt: skip


def steering_spec() -> ModelSpec:
    """DonkeyCar KerasLinear: 160x120 NHWC RGB, x/255, outputs angle and throttle."""
    return parse_spec({
        "task": "steering",
        "input": {"name": "img_in", "height": 120, "width": 160, "layout": "NHWC", "color": "RGB",
                  "scale": 1 / 255, "offset": 0.0},
        "output": {"format": "steering_linear", "tensors": {"angle": "angle", "throttle": "throttle"}},
    })  # fmt: skip


def ssd_raw_outputs(num_anchors: int = 1917, classes: int = 91, objects: int = 8, seed: int = 0,
                    noise_logit: float = -8.0) -> Dict[str, np.ndarray]:  # fmt: skip
    """Head outputs of a frame with ``objects`` objects: a few anchors per object above 0.5, the rest low."""
    rng = np.random.default_rng(seed)
    scores = (noise_logit + rng.normal(0, 1.0, (1, num_anchors, classes))).astype(np.float32)
    boxes = rng.normal(0, 0.5, (1, num_anchors, 4)).astype(np.float32)
    for _ in range(objects):
        anchor = int(rng.integers(0, num_anchors - 6))
        cls = int(rng.integers(1, classes))
        scores[0, anchor : anchor + int(rng.integers(2, 6)), cls] = rng.uniform(0.5, 4.0)
    return {"scores": scores, "boxes": boxes}


class CannedBackend(Backend):
    """A backend that returns fixed outputs (optionally after sleeping): the pipeline without inference."""

    name = "canned"

    def __init__(self, input_spec: TensorSpec, outputs: Mapping[str, np.ndarray], delay: float = 0.0) -> None:
        super().__init__()
        self.inputs = (input_spec,)
        self.outputs = tuple(TensorSpec(n, tuple(a.shape), a.dtype) for n, a in outputs.items())
        self._outputs = dict(outputs)
        self.delay = delay
        self.calls = 0

    def infer(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return self._outputs


def canned_detector(delay: float = 0.0, objects: int = 8) -> Backend:
    spec = ssd300_spec()
    return CannedBackend(TensorSpec("Input", spec.input.shape, np.dtype(np.float32)),
                         ssd_raw_outputs(objects=objects), delay)  # fmt: skip


def canned_pilot(delay: float = 0.0) -> Backend:
    spec = steering_spec()
    outputs = {"angle": np.array([[0.25]], np.float32), "throttle": np.array([[0.4]], np.float32)}
    return CannedBackend(TensorSpec("img_in", spec.input.shape, np.dtype(np.float32)), outputs, delay)


def demo_models() -> Dict[str, Path]:
    """The demo's ONNX models that exist (with their spec beside them): 'detector' and/or 'steering'."""
    found = {}
    for role, names in (("detector", ("detector.onnx",)), ("steering", ("steering.onnx", "pilot.onnx"))):
        for name in names:
            path = DEMO_DIR / name
            if path.is_file() and path.with_suffix(".yaml").is_file():
                found[role] = path
                break
    return found


def demo_bag_frames(limit: int = 8) -> List[Any]:
    """Up to ``limit`` image messages from the demo bag (rosbags objects), or [] when there is no demo bag."""
    bags = [p for p in DEMO_DIR.glob("*") if p.is_dir() and (p / "metadata.yaml").is_file()]
    if not bags:
        return []
    try:
        from rosbags.rosbag2 import Reader

        from trt_perception.rosbag_types import get_typestore
    except ImportError:
        return []
    store = get_typestore("humble")
    frames: List[Any] = []
    with Reader(bags[0]) as reader:
        connections = [c for c in reader.connections if c.msgtype.endswith(("/Image", "/CompressedImage"))]
        for connection, _, raw in reader.messages(connections=connections):
            frames.append(store.deserialize_cdr(raw, connection.msgtype))
            if len(frames) >= limit:
                break
    return frames


def scaled(quick: bool, full: int, small: int) -> int:
    return small if quick else full
