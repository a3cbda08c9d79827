"""Message building against real ROS 2 definitions (rosbags typestores, Humble and Jazzy), no ROS needed.

Every builder's output is serialized to CDR with the distro's definitions and read back, so a wrong field
name, type or nesting fails here exactly as it would fail in rclpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from trt_perception.messages import (
    MessageTypes,
    ackermann,
    copy_header,
    detection_array,
    diagnostic_array,
    drive_message,
    make_header,
    overlay_image,
    stamp_seconds,
    twist,
)
from trt_perception.results import Detections, DriveCommand
from trt_perception.rosbag_types import get_typestore
from trt_perception.safety import PilotConfig

DISTROS = ("humble", "jazzy")


@pytest.fixture(params=DISTROS)
def store(request):
    typestore = get_typestore(request.param)
    return typestore, MessageTypes.from_typestore(typestore)


def roundtrip(typestore, msg):
    data = typestore.serialize_cdr(msg, msg.__msgtype__)
    return typestore.deserialize_cdr(data, msg.__msgtype__)


def input_header(types):
    return make_header(types, 1700000000, 123456789, "camera_optical")


def sample_detections():
    boxes = np.array([[10.0, 20.0, 110.0, 220.0], [0.5, 1.5, 3.5, 9.5]], np.float32)
    return Detections(boxes, np.array([0.9, 0.25], np.float32), np.array([3, 7], np.int64), ["cone", ""])


def test_from_typestore_resolves_every_class(store):
    _, types = store
    assert types.kind == "rosbags" and not types.missing
    types.require("Detection2DArray", "AckermannDriveStamped", "Twist", param="pilot.output")


def test_header_copy_keeps_stamp_and_frame_id(store):
    typestore, types = store
    header = input_header(types)
    copied = copy_header(types, header)
    assert copied is not header
    back = roundtrip(typestore, copied)
    assert (back.stamp.sec, back.stamp.nanosec, back.frame_id) == (1700000000, 123456789, "camera_optical")
    assert stamp_seconds(back) == pytest.approx(1700000000.123456789)


@pytest.mark.parametrize("mode, expected", [("label", ["cone", "7"]), ("id", ["3", "7"])])
def test_detection_array_vision_msgs_4(store, mode, expected):
    typestore, types = store
    header = copy_header(types, input_header(types))
    msg = detection_array(types, header, sample_detections(), class_id_mode=mode)
    back = roundtrip(typestore, msg)
    assert back.header.stamp.sec == 1700000000 and back.header.frame_id == "camera_optical"
    assert len(back.detections) == 2
    first, second = back.detections
    assert first.header.stamp.nanosec == 123456789 and first.header.frame_id == "camera_optical"
    assert first.bbox.center.position.x == pytest.approx(60.0)
    assert first.bbox.center.position.y == pytest.approx(120.0)
    assert first.bbox.center.theta == 0.0
    assert (first.bbox.size_x, first.bbox.size_y) == (pytest.approx(100.0), pytest.approx(200.0))
    assert second.bbox.center.position.x == pytest.approx(2.0)
    assert second.bbox.size_y == pytest.approx(8.0)
    assert [d.results[0].hypothesis.class_id for d in back.detections] == expected
    assert first.results[0].hypothesis.score == pytest.approx(0.9)
    assert second.results[0].hypothesis.score == pytest.approx(0.25)
    assert first.results[0].pose.pose.orientation.w == 1.0
    assert first.id == ""


def test_track_ids_go_into_detection2d_id(store):
    from trt_perception.tracking import TrackedDetections

    typestore, types = store
    plain = sample_detections()
    tracked = TrackedDetections(plain.boxes, plain.scores, plain.class_ids, plain.labels, ids=["17", ""])
    back = roundtrip(typestore, detection_array(types, copy_header(types, input_header(types)), tracked))
    assert [d.id for d in back.detections] == ["17", ""]
    assert [d.results[0].hypothesis.class_id for d in back.detections] == ["cone", "7"]


def test_empty_detections_still_make_a_message(store):
    typestore, types = store
    back = roundtrip(typestore, detection_array(types, input_header(types), Detections.empty()))
    assert back.detections == [] and back.header.frame_id == "camera_optical"


def test_bad_class_id_mode(store):
    _, types = store
    with pytest.raises(ValueError, match="class_id_mode"):
        detection_array(types, input_header(types), Detections.empty(), class_id_mode="name")


def test_twist_scales_and_rep103_sign(store):
    typestore, types = store
    pilot = PilotConfig(steering_scale=2.0, throttle_scale=3.0)
    back = roundtrip(typestore, twist(types, DriveCommand(0.5, 0.25), pilot))
    assert back.linear.x == pytest.approx(0.75)
    assert back.angular.z == pytest.approx(-1.0)  # +steering = right = negative yaw rate
    assert (back.linear.y, back.linear.z, back.angular.x, back.angular.y) == (0.0, 0.0, 0.0, 0.0)


def test_ackermann_radians_and_speed(store):
    typestore, types = store
    pilot = PilotConfig(output="ackermann", max_steering_angle=0.4, max_speed=2.0)
    header = copy_header(types, input_header(types))
    msg = ackermann(types, header, DriveCommand(-0.5, 0.5), pilot)
    back = roundtrip(typestore, msg)
    assert back.header.stamp.sec == 1700000000 and back.header.frame_id == "camera_optical"
    assert back.drive.steering_angle == pytest.approx(0.2)  # left = positive
    assert back.drive.speed == pytest.approx(1.0)
    assert drive_message(types, header, DriveCommand(0, 0), pilot).__msgtype__.endswith(
        "AckermannDriveStamped"
    )
    assert drive_message(types, header, DriveCommand(0, 0), PilotConfig()).__msgtype__.endswith("/Twist")


@pytest.mark.parametrize(
    "encoding, shape, dtype",
    [("rgb8", (4, 5, 3), np.uint8), ("mono8", (3, 7), np.uint8), ("mono16", (2, 3), np.uint16)],
)
def test_overlay_image_roundtrip(store, encoding, shape, dtype):
    typestore, types = store
    array = np.arange(np.prod(shape), dtype=dtype).reshape(shape)
    msg = overlay_image(types, input_header(types), array, encoding)
    back = roundtrip(typestore, msg)
    assert (back.height, back.width, back.encoding) == (shape[0], shape[1], encoding)
    assert back.step == shape[1] * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    restored = np.frombuffer(back.data.tobytes(), dtype).reshape(shape)
    np.testing.assert_array_equal(restored, array)


def test_overlay_image_data_is_a_view_not_a_copy():
    types = MessageTypes.from_typestore(get_typestore("jazzy"))
    array = np.zeros((2, 2, 3), np.uint8)
    msg = overlay_image(types, input_header(types), array, "bgr8")
    array[0, 0, 0] = 42
    assert msg.data[0] == 42


def test_diagnostics(store):
    typestore, types = store
    msg = diagnostic_array(
        types,
        input_header(types),
        "trt_perception: perception",
        "WARN",
        "no frames",
        "onnxruntime",
        {"fps_in": 29.97, "dropped": 3, "backend": "onnxruntime"},
    )
    back = roundtrip(typestore, msg)
    status = back.status[0]
    assert (
        status.level == 1
        and status.name == "trt_perception: perception"
        and status.hardware_id == "onnxruntime"
    )
    assert {kv.key: kv.value for kv in status.values} == {
        "fps_in": "29.97",
        "dropped": "3",
        "backend": "onnxruntime",
    }
    with pytest.raises(ValueError):
        diagnostic_array(types, input_header(types), "n", "BAD", "", "", {})


def test_require_names_the_package_and_the_fix():
    types = MessageTypes("rclpy", {"AckermannDriveStamped": None}, {"AckermannDriveStamped": "no module"})
    with pytest.raises(ValueError, match=r"ackermann_msgs.*pilot.output.*ros-\$ROS_DISTRO-ackermann-msgs"):
        types.require("AckermannDriveStamped", param="pilot.output")


def test_from_rclpy_without_ros_reports_missing_packages():
    try:
        import rclpy  # noqa: F401
    except ImportError:
        types = MessageTypes.from_rclpy()
        assert types.kind == "rclpy"
        assert (
            types.classes["Detection2DArray"] is None and "vision_msgs" in types.missing["Detection2DArray"]
        )
    else:  # with ROS sourced the classes resolve (vision_msgs/ackermann_msgs may still be absent)
        types = MessageTypes.from_rclpy()
        assert types.classes["Header"] is not None


def test_rclpy_classes_build_and_serialize_the_same_messages():
    """Where ROS is sourced: the same builders with rclpy's generated classes, through rclpy's serializer."""
    pytest.importorskip("rclpy")
    serialization = pytest.importorskip("rclpy.serialization")
    types = MessageTypes.from_rclpy()
    if types.classes["Detection2DArray"] is None or types.classes["AckermannDriveStamped"] is None:
        pytest.skip("vision_msgs / ackermann_msgs not installed")
    header = copy_header(types, input_header(types))
    for msg in (
        detection_array(types, header, sample_detections()),
        twist(types, DriveCommand(0.5, 0.25), PilotConfig()),
        ackermann(types, header, DriveCommand(-0.5, 0.5), PilotConfig()),
        overlay_image(types, header, np.arange(60, dtype=np.uint8).reshape(4, 5, 3), "rgb8"),
        diagnostic_array(types, header, "n", "ERROR", "m", "h", {"a": 1.5}),
    ):
        data = serialization.serialize_message(msg)
        back = serialization.deserialize_message(data, type(msg))
        assert serialization.serialize_message(back) == data  # float32 fields round, so compare bytes
    image = overlay_image(types, header, np.arange(60, dtype=np.uint8).reshape(4, 5, 3), "rgb8")
    assert bytes(image.data) == bytes(range(60)) and image.step == 15
    detections = serialization.deserialize_message(
        serialization.serialize_message(detection_array(types, header, sample_detections())),
        types.Detection2DArray,
    )
    assert detections.detections[0].bbox.center.position.x == pytest.approx(60.0)
    assert detections.detections[1].results[0].hypothesis.class_id == "7"
    assert detections.header.frame_id == "camera_optical"
