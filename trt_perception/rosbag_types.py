"""rosbags typestores with the message types this package reads and writes.

rosbags ships the ROS 2 core types (sensor_msgs, geometry_msgs, std_msgs, diagnostic_msgs...) for Humble and
Jazzy, but not vision_msgs or ackermann_msgs. Their definitions are registered here (vision_msgs 4.1.1, the
release both Humble and Jazzy ship; ackermann_msgs 2.0.2), so replay can write bags that `ros2 bag play` and
Foxglove read, and tests can check our messages against real ROS definitions without ROS.
"""

from __future__ import annotations

import warnings
from typing import Dict

from trt_perception.errors import BagError

# Field lists of the .msg files (comments dropped); names and types must match the released packages.
MESSAGE_DEFINITIONS: Dict[str, str] = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
    "vision_msgs/msg/Classification": "std_msgs/Header header\nvision_msgs/ObjectHypothesis[] results\n",
    "ackermann_msgs/msg/AckermannDrive": (
        "float32 steering_angle\nfloat32 steering_angle_velocity\nfloat32 speed\nfloat32 acceleration\n"
        "float32 jerk\n"
    ),
    "ackermann_msgs/msg/AckermannDriveStamped": "std_msgs/Header header\nackermann_msgs/AckermannDrive drive\n",
}

DISTROS = ("humble", "jazzy")


def get_typestore(distro: str = "jazzy"):  # -> rosbags.typesys.store.Typestore
    """A rosbags typestore for ``distro`` with vision_msgs and ackermann_msgs registered."""
    from rosbags.typesys import Stores, get_types_from_msg
    from rosbags.typesys import get_typestore as rosbags_typestore

    if distro not in DISTROS:
        raise BagError(f"ROS distro {distro!r} is not supported; expected one of {list(DISTROS)}")
    store = getattr(Stores, f"ROS2_{distro.upper()}", None)
    if store is None:
        # rosbags 0.9.x (the last release for Python 3.8) has no Jazzy store. Every message this package
        # reads or writes (sensor_msgs, geometry_msgs, vision_msgs, ackermann_msgs) has the same definition in
        # Humble and Jazzy, so Humble's store serializes the same bytes.
        warnings.warn(
            f"the installed rosbags has no {distro} message store; using Humble's (identical definitions for "
            "the messages trt_perception uses); upgrade rosbags to silence this",
            stacklevel=2,
        )
        store = Stores.ROS2_HUMBLE
    typestore = rosbags_typestore(store)
    types = {}
    for name, text in MESSAGE_DEFINITIONS.items():
        types.update(get_types_from_msg(text, name))
    typestore.register(types)
    return typestore
