"""Output messages built from ANY message-class provider: rclpy's generated classes or a rosbags typestore.

The node publishes what these functions build with rclpy classes; replay writes what they build with rosbags
classes; tests serialize the rosbags ones to CDR with the Humble and Jazzy definitions. One builder, so the
car and the bag cannot disagree. Messages are always constructed with every field as a keyword: rosbags'
dataclasses have no defaults, and rclpy's classes accept the same keywords.

Conventions (REP 103): steering +1 means "right" in our normalized commands (DonkeyCar's convention), while
ROS' angular.z and Ackermann steering_angle are positive to the LEFT; the builders flip the sign. Use
``pilot.invert_steering`` for a model trained the other way round.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import numpy as np

from trt_perception.errors import ConfigError
from trt_perception.results import Classification, Detections, DriveCommand
from trt_perception.safety import PilotConfig

# field name -> (ROS package, message name). The ROS-side names, so both providers resolve the same list.
MESSAGE_CLASSES: Dict[str, tuple] = {
    "Time": ("builtin_interfaces", "Time"),
    "Header": ("std_msgs", "Header"),
    "Image": ("sensor_msgs", "Image"),
    "CompressedImage": ("sensor_msgs", "CompressedImage"),
    "Detection2DArray": ("vision_msgs", "Detection2DArray"),
    "Detection2D": ("vision_msgs", "Detection2D"),
    "ObjectHypothesisWithPose": ("vision_msgs", "ObjectHypothesisWithPose"),
    "Classification": ("vision_msgs", "Classification"),
    "ObjectHypothesis": ("vision_msgs", "ObjectHypothesis"),
    "BoundingBox2D": ("vision_msgs", "BoundingBox2D"),
    "Pose2D": ("vision_msgs", "Pose2D"),
    "Point2D": ("vision_msgs", "Point2D"),
    "PoseWithCovariance": ("geometry_msgs", "PoseWithCovariance"),
    "Pose": ("geometry_msgs", "Pose"),
    "Point": ("geometry_msgs", "Point"),
    "Quaternion": ("geometry_msgs", "Quaternion"),
    "Twist": ("geometry_msgs", "Twist"),
    "Imu": ("sensor_msgs", "Imu"),
    "String": ("std_msgs", "String"),
    "Vector3": ("geometry_msgs", "Vector3"),
    "AckermannDriveStamped": ("ackermann_msgs", "AckermannDriveStamped"),
    "AckermannDrive": ("ackermann_msgs", "AckermannDrive"),
    "DiagnosticArray": ("diagnostic_msgs", "DiagnosticArray"),
    "DiagnosticStatus": ("diagnostic_msgs", "DiagnosticStatus"),
    "KeyValue": ("diagnostic_msgs", "KeyValue"),
}

# What to install when a ROS message package is missing (rclpy provider only).
_APT_NAMES = {
    "vision_msgs": "ros-$ROS_DISTRO-vision-msgs",
    "ackermann_msgs": "ros-$ROS_DISTRO-ackermann-msgs",
    "diagnostic_msgs": "ros-$ROS_DISTRO-diagnostic-msgs",
}


@dataclass
class MessageTypes:
    """The message classes builders use, by short name; ``kind`` is 'rclpy' or 'rosbags'.

    A class may be None when its ROS package is not installed (rclpy); ``require`` turns that into a
    ConfigError naming the parameter that needs it and the package to install.
    """

    kind: str
    classes: Dict[str, Any]
    missing: Dict[str, str]  # short name -> why it is absent

    def __getattr__(self, name: str) -> Any:
        classes = self.__dict__.get("classes")
        if classes is not None and name in classes:
            return classes[name]
        raise AttributeError(name)

    def require(self, *names: str, param: str = "") -> None:
        """Refuse to start when a message type a head needs is not installed."""
        absent = [n for n in names if self.classes.get(n) is None]
        if not absent:
            return
        packages = sorted({MESSAGE_CLASSES[n][0] for n in absent})
        install = " ".join(_APT_NAMES.get(p, f"ros-$ROS_DISTRO-{p.replace('_', '-')}") for p in packages)
        why = f" (needed by {param})" if param else ""
        raise ConfigError(
            f"ROS message package(s) {packages} are not installed{why}: {self.missing.get(absent[0], '')}; "
            f"fix: sudo apt install {install}"
        )

    @classmethod
    def from_rclpy(cls) -> MessageTypes:
        """rclpy's generated classes (imported here, lazily; a missing package leaves None)."""
        classes: Dict[str, Any] = {}
        missing: Dict[str, str] = {}
        for short, (package, name) in MESSAGE_CLASSES.items():
            try:
                module = importlib.import_module(f"{package}.msg")
                classes[short] = getattr(module, name)
            except (ImportError, AttributeError) as exc:
                classes[short] = None
                missing[short] = f"cannot import {package}.msg.{name} ({exc})"
        return cls("rclpy", classes, missing)

    @classmethod
    def from_typestore(cls, typestore: Any) -> MessageTypes:
        """rosbags classes from a typestore (e.g. ``rosbag_types.get_typestore('humble')``)."""
        classes: Dict[str, Any] = {}
        missing: Dict[str, str] = {}
        for short, (package, name) in MESSAGE_CLASSES.items():
            key = f"{package}/msg/{name}"
            classes[short] = typestore.types.get(key)
            if classes[short] is None:
                missing[short] = f"{key} is not registered in this typestore"
        return cls("rosbags", classes, missing)


# ------------------------------------------------------------------------------------------------ header


def stamp_seconds(header: Any) -> float:
    """A header's stamp as float seconds (for latency = now - stamp)."""
    return float(header.stamp.sec) + float(header.stamp.nanosec) * 1e-9


def make_header(types: MessageTypes, sec: int, nanosec: int, frame_id: str) -> Any:
    return types.Header(stamp=types.Time(sec=int(sec), nanosec=int(nanosec)), frame_id=str(frame_id))


def copy_header(types: MessageTypes, header: Any) -> Any:
    """A new header with the input's stamp AND frame_id (outputs must match their image in a bag)."""
    return make_header(types, header.stamp.sec, header.stamp.nanosec, header.frame_id)


# ------------------------------------------------------------------------------------------- detections


def detection_array(
    types: MessageTypes, header: Any, detections: Detections, class_id_mode: str = "label"
) -> Any:
    """vision_msgs 4.x Detection2DArray: boxes in source pixels (center + size), one hypothesis per box.

    ``class_id_mode`` 'label' puts the label text in ``hypothesis.class_id`` (the id as text when a class
    has no label), 'id' the numeric class id as text. ``header`` is used as is: pass ``copy_header(...)``.
    ``Detection2D.id`` carries the track id when the detections have ``ids`` (a head with a tracker:
    ``tracking.TrackedDetections``), else it is left empty (vision_msgs allows that).
    """
    if class_id_mode not in ("label", "id"):
        raise ConfigError(f"detector.class_id_mode is {class_id_mode!r}; expected 'label' or 'id'")
    boxes = np.asarray(detections.boxes, dtype=np.float64).reshape(-1, 4)
    centers = ((boxes[:, :2] + boxes[:, 2:]) * 0.5).tolist()
    sizes = (boxes[:, 2:] - boxes[:, :2]).tolist()
    scores = np.asarray(detections.scores, dtype=np.float64).tolist()
    ids = np.asarray(detections.class_ids).tolist()
    if class_id_mode == "label" and len(detections.labels) == len(ids):
        class_ids = [label if label else str(i) for label, i in zip(detections.labels, ids)]
    else:
        class_ids = [str(i) for i in ids]
    track_ids = getattr(detections, "ids", None)
    if not track_ids or len(track_ids) != len(class_ids):
        track_ids = [""] * len(class_ids)
    pose = _identity_pose(types)  # shared by this message's hypotheses: we never set a 3D pose
    Detection2D, Hyp, HypWithPose = types.Detection2D, types.ObjectHypothesis, types.ObjectHypothesisWithPose
    BoundingBox2D, Pose2D, Point2D = types.BoundingBox2D, types.Pose2D, types.Point2D
    items = [
        Detection2D(
            header=header,
            results=[HypWithPose(hypothesis=Hyp(class_id=cid, score=score), pose=pose)],
            bbox=BoundingBox2D(
                center=Pose2D(position=Point2D(x=c[0], y=c[1]), theta=0.0), size_x=s[0], size_y=s[1]
            ),
            id=str(track_id),
        )
        for c, s, score, cid, track_id in zip(centers, sizes, scores, class_ids, track_ids)
    ]
    return types.Detection2DArray(header=header, detections=items)


def classification_message(types: MessageTypes, header: Any, classification: Classification) -> Any:
    """vision_msgs 4.x Classification: one ObjectHypothesis (label text as class_id, score) per class, best first."""
    Hyp = types.ObjectHypothesis
    ids = np.asarray(classification.class_ids).tolist()
    scores = np.asarray(classification.scores, dtype=np.float64).tolist()
    labels = classification.labels if len(classification.labels) == len(ids) else [str(i) for i in ids]
    results = [Hyp(class_id=label or str(i), score=score) for label, i, score in zip(labels, ids, scores)]
    return types.Classification(header=header, results=results)


def _identity_pose(types: MessageTypes) -> Any:
    pose = types.Pose(
        position=types.Point(x=0.0, y=0.0, z=0.0),
        orientation=types.Quaternion(x=0.0, y=0.0, z=0.0, w=1.0),
    )
    return types.PoseWithCovariance(pose=pose, covariance=np.zeros(36, np.float64))


# ------------------------------------------------------------------------------------------ drive output


def twist(types: MessageTypes, command: DriveCommand, pilot: PilotConfig) -> Any:
    """geometry_msgs/Twist: linear.x = throttle * throttle_scale (m/s), angular.z = -steering * scale."""
    linear = types.Vector3(x=float(command.throttle) * pilot.throttle_scale, y=0.0, z=0.0)
    angular = types.Vector3(x=0.0, y=0.0, z=0.0 - float(command.steering) * pilot.steering_scale)  # no -0.0
    return types.Twist(linear=linear, angular=angular)


def ackermann(types: MessageTypes, header: Any, command: DriveCommand, pilot: PilotConfig) -> Any:
    """AckermannDriveStamped: steering_angle = -steering * max_steering_angle (rad),
    speed = throttle * max_speed (m/s)."""
    drive = types.AckermannDrive(
        steering_angle=0.0 - float(command.steering) * pilot.max_steering_angle,
        steering_angle_velocity=0.0,
        speed=float(command.throttle) * pilot.max_speed,
        acceleration=0.0,
        jerk=0.0,
    )
    return types.AckermannDriveStamped(header=header, drive=drive)


def drive_message(types: MessageTypes, header: Any, command: DriveCommand, pilot: PilotConfig) -> Any:
    """The pilot's output message for ``pilot.output`` (twist or ackermann)."""
    if pilot.output == "ackermann":
        return ackermann(types, header, command, pilot)
    return twist(types, command, pilot)


# ----------------------------------------------------------------------------------------------- images


def overlay_image(types: MessageTypes, header: Any, array: np.ndarray, encoding: str) -> Any:
    """sensor_msgs/Image from an HxW(xC) uint8 array, its data filled from a memoryview (no tobytes copy).

    rclpy: ``Image.data`` is an ``array.array('B')``; ``frombytes(memoryview)`` is one memcpy, while passing a
    memoryview to the constructor would iterate it byte by byte. rosbags: a zero-copy numpy view.
    """
    from trt_perception.images import image_fields

    fields = image_fields(array, encoding)
    common = {
        "header": header,
        "height": int(fields.height),
        "width": int(fields.width),
        "encoding": str(fields.encoding),
        "is_bigendian": int(fields.is_bigendian),
        "step": int(fields.step),
    }
    if types.kind == "rosbags":
        return types.Image(data=np.frombuffer(fields.data, np.uint8), **common)
    msg = types.Image(**common)
    msg.data.frombytes(fields.data)
    return msg


# ------------------------------------------------------------------------------------------ diagnostics

LEVELS = ("OK", "WARN", "ERROR", "STALE")


def diagnostic_array(
    types: MessageTypes,
    header: Any,
    name: str,
    level: str,
    message: str,
    hardware_id: str,
    values: Mapping[str, Any],
) -> Any:
    """diagnostic_msgs/DiagnosticArray with one status; ``level`` is 'OK'/'WARN'/'ERROR'/'STALE'.

    The level constant comes from the class (bytes in rclpy, int in rosbags), so both providers work.
    """
    if level not in LEVELS:
        raise ValueError(f"diagnostic level {level!r}; expected one of {LEVELS}")
    key_values = [types.KeyValue(key=str(k), value=_format_value(v)) for k, v in values.items()]
    status = types.DiagnosticStatus(
        level=getattr(types.DiagnosticStatus, level),
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=key_values,
    )
    return types.DiagnosticArray(header=header, status=[status])


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def level_rank(level: Optional[str]) -> int:
    return LEVELS.index(level) if level in LEVELS else 0
