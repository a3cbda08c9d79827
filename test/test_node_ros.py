"""The node in-process on a real rclpy (skipped where ROS 2 is absent; `colcon test` runs it): what it tells a
user who sees no output. /diagnostics names why no frames arrive (nothing publishes the camera topic, or its
publishers send another message type: Cyclone DDS reports no such event, so the node asks the graph), a last
/diagnostics report goes out at shutdown (on sim time the timer stops with the bag's clock), and before the
first frame the watchdog's stop is a state said once at info, not a warning every period.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("diagnostic_msgs.msg")
pytest.importorskip("vision_msgs.msg")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from onnx_factory import brightness_pilot, grid_detector  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from trt_perception.node import NODE_NAME, PerceptionNode  # noqa: E402

CAMERA = "/node_ros_test/image_raw"


@pytest.fixture(scope="module")
def ros() -> Iterator[None]:
    rclpy.init()
    try:
        yield
    finally:
        rclpy.try_shutdown()


class RecordingLogger:
    """Stands in for the node's logger (rclpy's RcutilsLogger: debug/info/warning/error/fatal) to see levels."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.lines: List[Tuple[str, str]] = []

    def __getattr__(self, level: str) -> Callable[[str], None]:
        def log(message: str, *args: Any, **kwargs: Any) -> None:
            self.lines.append((level, message))
            getattr(self.real, level)(message, *args, **kwargs)

        return log


def start(tmp_path: Path, name: str) -> Tuple[Any, PerceptionNode]:
    values: Dict[str, Any] = {
        "image_topic": CAMERA,
        "image_transport": "raw",
        "diagnostics_period": 0.2,
        "detector.model": str(grid_detector(tmp_path, name=f"{name}_grid")),
        "pilot.enabled": True,
        "pilot.model": str(brightness_pilot(tmp_path, name=f"{name}_pilot")),
        "pilot.drive_enabled": True,
        "pilot.watchdog_timeout": 0.2,
    }
    node = rclpy.create_node(NODE_NAME, namespace=f"/{name}",
                             parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    return node, PerceptionNode(node)


def spin_until(nodes: List[Any], done: Callable[[], bool], seconds: float = 5.0) -> bool:
    executor = rclpy.executors.SingleThreadedExecutor()
    for node in nodes:
        executor.add_node(node)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end and not done():
            executor.spin_once(timeout_sec=0.05)
    finally:
        for node in nodes:
            executor.remove_node(node)
    return done()


def diagnostics_listener(name: str) -> Tuple[Any, List[str]]:
    listener = rclpy.create_node(f"{name}_listener")
    messages: List[str] = []

    def on_array(array: Any) -> None:
        messages.extend(status.message for status in array.status)

    listener.create_subscription(DiagnosticArray, "/diagnostics", on_array, 10)
    return listener, messages


def test_diagnostics_say_nothing_publishes_the_camera_then_name_a_wrong_type(ros: None, tmp_path: Path) -> None:
    node, app = start(tmp_path, "types")
    listener, messages = diagnostics_listener("types")
    try:
        assert spin_until([node, listener], lambda: any("nothing publishes it" in m for m in messages))
        wrong = listener.create_publisher(String, CAMERA, 10)  # a String on the camera topic: no frame arrives
        messages.clear()
        assert spin_until([node, listener], lambda: any("std_msgs/msg/String" in m for m in messages)), messages
        line = next(m for m in messages if "std_msgs/msg/String" in m)
        assert "expects sensor_msgs/msg/Image" in line and "fix:" in line
        listener.destroy_publisher(wrong)
    finally:
        app.shutdown()
        node.destroy_node()
        listener.destroy_node()


def test_a_last_diagnostics_report_goes_out_at_shutdown(ros: None, tmp_path: Path) -> None:
    node, app = start(tmp_path, "last")
    listener, messages = diagnostics_listener("last")
    try:
        assert spin_until([node, listener], lambda: len(messages) > 0)
        app.diagnostics_timer.cancel()  # as on sim time when the bag's clock stops: no more periodic reports
        before = len(messages)
        app.shutdown()
        assert spin_until([listener], lambda: len(messages) > before, seconds=2.0)
    finally:
        node.destroy_node()
        listener.destroy_node()


def test_before_the_first_frame_the_watchdog_stop_is_said_once_at_info(ros: None, tmp_path: Path) -> None:
    node, app = start(tmp_path, "watchdog")
    app.logger = RecordingLogger(app.logger)
    try:
        spin_until([node], lambda: False, seconds=1.0)  # 5 watchdog periods without a frame
        waiting = [(level, m) for level, m in app.logger.lines if "waiting for the first frame" in m]
        assert [level for level, _ in waiting] == ["info"]
        assert not [m for level, m in app.logger.lines if level in ("warning", "warn") and "stopping the car" in m]
    finally:
        app.shutdown()
        node.destroy_node()
