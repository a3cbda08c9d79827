"""Benchmark 6: ROS message paths against their naive twins.

* Image message -> numpy: ``images.decode_image`` (a view of ``msg.data``) vs copying the bytes into a new
  array. Messages carry ``array('B')`` data as rclpy's do (see ``common.RclpyImage``).
* Overlay -> Image message: ``messages.overlay_image`` (rclpy flavour: ``msg.data.frombytes(memoryview)``, one
  memcpy) vs cv_bridge's ``msg.data.frombytes(img.tobytes())`` (two copies) and vs assigning
  ``img.tobytes()`` to the field (rclpy's per-element check, what old cv_bridge did).
* Detection2DArray for 100 boxes: ``messages.detection_array`` vs a per-box loop building every sub-message
  (rosbags message classes, which take the same keywords as rclpy's).
"""

from __future__ import annotations

from typing import Any, Dict

import naive
import numpy as np
from common import Header, RclpyImage, Table, Time, camera_frame, image_message, measure, scaled

from trt_perception.images import decode_image
from trt_perception.messages import MessageTypes, copy_header, detection_array, overlay_image
from trt_perception.results import Detections
from trt_perception.rosbag_types import get_typestore

TARGET_VIEW = 3.0
TARGET_OVERLAY = 1.5
TARGET_DETECTIONS = 1.5


def rclpy_like_types() -> MessageTypes:
    """Only Image is needed by overlay_image; kind 'rclpy' selects its frombytes path."""
    return MessageTypes("rclpy", {"Image": RclpyImage, "Header": Header, "Time": Time}, {})


def hundred_detections(width: int = 640, height: int = 480) -> Detections:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [width - 60, height - 60], (100, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 60, (100, 2))], 1).astype(np.float32)
    scores = rng.uniform(0.5, 1.0, 100).astype(np.float32)
    ids = rng.integers(1, 91, 100).astype(np.int64)
    return Detections(boxes, scores, ids, [f"class_{i}" for i in ids])


def run(quick: bool = False) -> Table:
    table = Table(
        "messages",
        "6. ROS message paths vs naive twins (median us)",
        ["path", "size", "ours_us", "twin", "twin_us", "twin/ours"],
    )
    iterations = scaled(quick, 1500, 10)
    for width, height in ((640, 480), (1280, 720)):
        msg = image_message(camera_frame(width, height), "bgr8")
        view = decode_image(msg).array
        zero_copy = np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
        contenders: Dict[str, Any] = {
            "ours": lambda m=msg: decode_image(m),
            "copy": lambda m=msg: np.array(m.data, dtype=np.uint8).reshape(m.height, m.width, 3),
        }
        times = measure(contenders, iterations=iterations)
        ratio = times["copy"].median / times["ours"].median
        table.add(
            zero_copy and ratio >= TARGET_VIEW, target=f"zero-copy view, >={TARGET_VIEW:g}x",
            path=f"Image -> numpy ({'view' if zero_copy else 'COPY'})", size=f"{width}x{height}",
            ours_us=times["ours"].us, twin="np.array(msg.data) copy", twin_us=times["copy"].us,
            **{"twin/ours": ratio},
        )  # fmt: skip

    types = rclpy_like_types()
    header = Header(Time(1, 2), "camera")
    for width, height in ((640, 480), (1280, 720)):
        canvas = camera_frame(width, height)

        def cv_bridge_way(c: np.ndarray = canvas) -> Any:
            out = RclpyImage(header=header, height=c.shape[0], width=c.shape[1], encoding="bgr8",
                             step=c.shape[1] * 3)  # fmt: skip
            out.data.frombytes(c.tobytes())
            return out

        contenders = {"ours": lambda c=canvas: overlay_image(types, header, c, "bgr8"), "tobytes": cv_bridge_way}
        times = measure(contenders, iterations=iterations)
        built = overlay_image(types, header, canvas, "bgr8")
        assert bytes(built.data) == canvas.tobytes()
        ratio = times["tobytes"].median / times["ours"].median
        table.add(
            ratio >= TARGET_OVERLAY, target=f">={TARGET_OVERLAY:g}x",
            path="overlay -> Image.data", size=f"{width}x{height}", ours_us=times["ours"].us,
            twin="data.frombytes(img.tobytes())", twin_us=times["tobytes"].us, **{"twin/ours": ratio},
        )  # fmt: skip
    canvas = camera_frame(640, 480)

    def setter_way() -> Any:
        out = RclpyImage(header=header, height=480, width=640, encoding="bgr8", step=1920)
        out.data = canvas.tobytes()  # rclpy checks every element of a non-array value
        return out

    once = measure({"ours": lambda: overlay_image(types, header, canvas, "bgr8"), "setter": setter_way},
                   iterations=scaled(quick, 6, 2), warmup=1, rounds=2)  # fmt: skip
    table.add(
        once["setter"].median / once["ours"].median >= TARGET_OVERLAY, target=f">={TARGET_OVERLAY:g}x",
        path="overlay -> Image.data", size="640x480", ours_us=once["ours"].us,
        twin="msg.data = img.tobytes() (rclpy check)", twin_us=once["setter"].us,
        **{"twin/ours": once["setter"].median / once["ours"].median},
    )  # fmt: skip

    store_types = MessageTypes.from_typestore(get_typestore("humble"))
    detections = hundred_detections()
    in_header = Header(Time(5, 6), "camera")

    def ours_build() -> Any:
        return detection_array(store_types, copy_header(store_types, in_header), detections)

    def naive_build() -> Any:
        rows = naive.detections_from_arrays(detections.boxes, detections.scores, detections.labels)
        return naive.detection_array(store_types, in_header, rows)

    a, b = ours_build(), naive_build()
    assert len(a.detections) == len(b.detections) == 100
    assert abs(a.detections[7].bbox.size_x - b.detections[7].bbox.size_x) < 1e-3
    times = measure({"ours": ours_build, "naive": naive_build}, iterations=scaled(quick, 300, 6))
    ratio = times["naive"].median / times["ours"].median
    table.add(
        ratio >= TARGET_DETECTIONS, target=f">={TARGET_DETECTIONS:g}x",
        path="Detection2DArray, 100 boxes", size="-", ours_us=times["ours"].us,
        twin="per-box loop, per-box sub-messages", twin_us=times["naive"].us, **{"twin/ours": ratio},
    )  # fmt: skip
    table.notes.append(
        "Image messages carry array('B') data with rclpy's uint8[] setter semantics (benchmarks/common.py); "
        "Detection2DArray uses the rosbags Humble classes (same fields and keywords as rclpy's)."
    )
    return table
