"""launch_testing: car.launch.py on synthetic camera frames; detections and commands carry the input stamps.

Two nodes are started through car.launch.py (namespaces `ack` and `tw`): both heads on tiny ONNX models built
here, one publishing AckermannDriveStamped (stamped, so its header can be checked) and one Twist. The test
publishes Image frames with known stamps and frame_id, then checks the outputs, live parameter changes
(refusal with a reason, acceptance), the set_enabled service (one stop, then silence), /diagnostics, and that
both nodes exit cleanly on shutdown.

    launch_test test/launch/test_car_launch.py      (or `colcon test --packages-select trt_perception`)

Skipped by plain pytest where ROS 2 is absent.
"""

from __future__ import annotations

import pytest

pytest.importorskip("launch_testing.actions")
pytest.importorskip("launch_ros.actions")
rclpy = pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs.msg")
pytest.importorskip("ackermann_msgs.msg")

import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
from pathlib import Path  # noqa: E402

import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

import launch  # noqa: E402

TEST_DIR = Path(__file__).resolve().parents[1]
REPO = TEST_DIR.parent
sys.path.insert(0, str(TEST_DIR))
from onnx_factory import brightness_pilot, grid_detector  # noqa: E402

FRAME_ID = "test_camera"
IMAGE_TOPIC = "/test/image_raw"


def write_params(folder: Path, name: str, output: str) -> Path:
    detector = grid_detector(folder, name=f"{name}_grid")
    pilot = brightness_pilot(folder, name=f"{name}_pilot")
    params = {
        "image_topic": IMAGE_TOPIC,
        "image_transport": "raw",
        "diagnostics_period": 0.5,
        "detector": {"enabled": True, "model": detector.name, "score_threshold": 0.5},
        "pilot": {
            "enabled": True,
            "model": pilot.name,
            "output": output,
            "drive_enabled": True,
            "max_throttle": 1.0,
            "watchdog_timeout": 5.0,
        },
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"trt_perception": {"ros__parameters": params}}), encoding="utf-8")
    return path


def include_car(params: Path, namespace: str) -> launch.actions.IncludeLaunchDescription:
    return launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(REPO / "launch" / "car.launch.py")),
        launch_arguments={"params_file": str(params), "namespace": namespace}.items(),
    )


@pytest.mark.launch_test
def generate_test_description():
    folder = Path(tempfile.mkdtemp(prefix="trt_perception_launch_"))
    return launch.LaunchDescription(
        [
            include_car(write_params(folder, "ack", "ackermann"), "ack"),
            include_car(write_params(folder, "tw", "twist"), "tw"),
            launch_testing.actions.ReadyToTest(),
        ]
    )


class TestCarLaunch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()

    @classmethod
    def tearDownClass(cls):
        rclpy.shutdown()

    def setUp(self):
        from ackermann_msgs.msg import AckermannDriveStamped
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Twist
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection2DArray

        self.node = rclpy.create_node("car_launch_tester")
        self.image_pub = self.node.create_publisher(Image, IMAGE_TOPIC, 10)
        self.received = {"detections": [], "drive": [], "cmd_vel": [], "diagnostics": []}
        for msg_type, topic, key in (
            (Detection2DArray, "/ack/detections", "detections"),
            (AckermannDriveStamped, "/ack/drive", "drive"),
            (Twist, "/tw/cmd_vel", "cmd_vel"),
            (DiagnosticArray, "/diagnostics", "diagnostics"),
        ):
            self.node.create_subscription(msg_type, topic, self.received[key].append, 10)
        self.Image = Image
        self.sent = set()

    def tearDown(self):
        self.node.destroy_node()

    def frame(self, index: int):
        """An rgb8 160x120 frame with a white square (the grid detector's 'blob') and a unique stamp."""
        pixels = np.zeros((120, 160, 3), np.uint8)
        pixels[40:80, 60:100] = 255
        msg = self.Image()
        msg.header.stamp.sec = 1000 + index
        msg.header.stamp.nanosec = 5000 * index
        msg.header.frame_id = FRAME_ID
        msg.height, msg.width, msg.encoding, msg.step = 120, 160, "rgb8", 160 * 3
        msg.data.frombytes(memoryview(pixels).cast("B"))
        self.sent.add((msg.header.stamp.sec, msg.header.stamp.nanosec))
        return msg

    def spin_until(self, condition, timeout=30.0, publish=True):
        deadline = time.monotonic() + timeout
        index = len(self.sent)
        while time.monotonic() < deadline:
            if publish:
                self.image_pub.publish(self.frame(index))
                index += 1
            rclpy.spin_once(self.node, timeout_sec=0.05)
            if condition():
                return True
        return False

    def set_param(self, node_name: str, name: str, value):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters, f"{node_name}/set_parameters")
        self.assertTrue(client.wait_for_service(timeout_sec=10.0))
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=10.0)
        return future.result().results[0]

    def test_outputs_carry_the_input_stamps(self):
        received = self.received
        self.assertTrue(self.spin_until(lambda: len(received["detections"]) >= 5 and received["drive"]))
        for msg in self.received["detections"]:
            stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            self.assertIn(stamp, self.sent)
            self.assertEqual(msg.header.frame_id, FRAME_ID)
        labels = {d.results[0].hypothesis.class_id for m in self.received["detections"] for d in m.detections}
        self.assertIn("blob", labels)
        box = self.received["detections"][-1].detections[0].bbox
        self.assertTrue(40 <= box.center.position.x <= 120 and 20 <= box.center.position.y <= 100)
        for msg in self.received["drive"]:
            self.assertIn((msg.header.stamp.sec, msg.header.stamp.nanosec), self.sent)
            self.assertEqual(msg.header.frame_id, FRAME_ID)
        self.assertTrue(self.spin_until(lambda: len(self.received["cmd_vel"]) >= 3))

    def test_live_parameters_are_validated(self):
        self.assertFalse(self.set_param("/ack/trt_perception", "detector.score_threshold", 2.0).successful)
        refused = self.set_param("/ack/trt_perception", "detector.score_threshold", -0.5)  # in ROS' range
        self.assertFalse(refused.successful)
        self.assertIn("[0, 1]", refused.reason)  # our on-set check names the allowed values
        self.assertFalse(self.set_param("/ack/trt_perception", "pilot.max_throttle", -0.5).successful)
        fixed = self.set_param("/ack/trt_perception", "detector.model", "/other.onnx")
        self.assertFalse(fixed.successful)
        accepted = self.set_param("/ack/trt_perception", "detector.score_threshold", 0.99)
        self.assertTrue(accepted.successful, accepted.reason)
        self.received["detections"].clear()
        # the square's cells score 1.0, so they pass even 0.99; a dark frame would not (checked in unit tests)
        self.assertTrue(self.spin_until(lambda: len(self.received["detections"]) >= 3))
        self.assertTrue(self.set_param("/ack/trt_perception", "detector.score_threshold", -1.0).successful)

    def test_set_enabled_publishes_one_stop_then_silence(self):
        from std_srvs.srv import SetBool

        self.assertTrue(self.spin_until(lambda: len(self.received["cmd_vel"]) >= 2))
        client = self.node.create_client(SetBool, "/tw/trt_perception/set_enabled")
        self.assertTrue(client.wait_for_service(timeout_sec=10.0))
        future = client.call_async(SetBool.Request(data=False))
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=10.0)
        self.assertTrue(future.result().success, future.result().message)
        self.spin_until(lambda: False, timeout=1.0)  # frames keep coming: no commands while disabled
        last = self.received["cmd_vel"][-1]
        self.assertEqual((last.linear.x, last.angular.z), (0.0, 0.0))  # the stop
        self.received["cmd_vel"].clear()
        self.spin_until(lambda: False, timeout=1.5)
        self.assertEqual(self.received["cmd_vel"], [])
        future = client.call_async(SetBool.Request(data=True))
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=10.0)
        self.assertTrue(self.spin_until(lambda: len(self.received["cmd_vel"]) >= 2))

    def test_diagnostics_report_rates_and_backend(self):
        def ours():
            return [
                s for m in self.received["diagnostics"] for s in m.status
                if "trt_perception" in s.name and any(kv.key == "fps_in" for kv in s.values)
            ]

        self.assertTrue(self.spin_until(lambda: len(ours()) >= 2))
        keys = {kv.key for kv in ours()[-1].values}
        self.assertTrue({"fps_in", "fps_out", "dropped", "bad_frames", "latency.p95 (ms)"} <= keys, keys)
        self.assertIn("onnxruntime", ours()[-1].hardware_id)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_nodes_exit_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
