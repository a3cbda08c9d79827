"""The registered vision_msgs / ackermann_msgs types serialize like any rosbags type, on Humble and Jazzy."""

from __future__ import annotations

import pytest

from trt_perception.errors import BagError
from trt_perception.rosbag_types import get_typestore


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_detection_and_ackermann_round_trip_through_cdr(distro: str) -> None:
    ts = get_typestore(distro)
    t = ts.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=3, nanosec=7), frame_id="camera")
    pose = t["geometry_msgs/msg/PoseWithCovariance"](
        pose=t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
            orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        ),
        covariance=__import__("numpy").zeros(36),
    )
    det = t["vision_msgs/msg/Detection2D"](
        header=header,
        results=[
            t["vision_msgs/msg/ObjectHypothesisWithPose"](
                hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id="cone", score=0.9), pose=pose
            )
        ],
        bbox=t["vision_msgs/msg/BoundingBox2D"](
            center=t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=10.0, y=20.0), theta=0.0),
            size_x=4.0,
            size_y=6.0,
        ),
        id="0",
    )
    array = t["vision_msgs/msg/Detection2DArray"](header=header, detections=[det])
    back = ts.deserialize_cdr(ts.serialize_cdr(array, array.__msgtype__), array.__msgtype__)
    assert back.header.frame_id == "camera"
    assert back.detections[0].bbox.center.position.x == 10.0
    assert back.detections[0].results[0].hypothesis.class_id == "cone"

    drive = t["ackermann_msgs/msg/AckermannDriveStamped"](
        header=header,
        drive=t["ackermann_msgs/msg/AckermannDrive"](
            steering_angle=0.25, steering_angle_velocity=0.0, speed=1.5, acceleration=0.0, jerk=0.0
        ),
    )
    back = ts.deserialize_cdr(ts.serialize_cdr(drive, drive.__msgtype__), drive.__msgtype__)
    assert back.drive.speed == pytest.approx(1.5)


def test_unknown_distro_is_named() -> None:
    with pytest.raises(BagError, match="'noetic'"):
        get_typestore("noetic")
