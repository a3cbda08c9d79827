"""A second demo bag, rendered on the spot: a drive through another synthetic world with its ground truth.

Why: `trt-perception evaluate` is about many recordings, and the package ships one (``data/demo/drive_bag``).
This writes more of the same kind - JPEG camera frames on ``/camera/image_raw/compressed``, the "human" Twist
on ``/teleop/cmd_vel`` and the true boxes on ``/ground_truth/detections`` (labels cone/box, ``id`` the
object's track id, e.g. ``cone-12``, as in the demo bag) - from ``synthetic_world`` with other seeds, so the
demo models meet a world they were not trained on. Deterministic: same seeds, same bytes.

    python -m trt_perception.tools.synthetic_bag second_bag --world 8 --seconds 10
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from trt_perception.errors import BagError, ConfigError

PathLike = Union[str, Path]
TOPIC_IMAGE = "/camera/image_raw/compressed"
TOPIC_COMMAND = "/teleop/cmd_vel"
TOPIC_TRUTH = "/ground_truth/detections"
FRAME_ID = "camera_optical"
WIDTH, HEIGHT = 320, 240  # the demo bag's size: the demo models' specs expect it
JPEG_QUALITY = 80
START_NS = 1_735_776_000 * 1_000_000_000  # 2025-01-02T00:00:00Z: a fixed clock keeps the bytes stable


def write_synthetic_bag(path: PathLike, world: int = 8, drive_seed: Optional[int] = None, seconds: float = 10.0,
                        fps: float = 15.0, force: bool = False) -> Path:
    """Render ``seconds`` of driving through ``World(world)`` into the rosbag2 folder ``path``."""
    import cv2
    from rosbags.rosbag2 import Writer

    from trt_perception.rosbag_types import get_typestore
    from trt_perception.tools.replay import writer_storages
    from trt_perception.tools.synthetic_world import Drive, World

    path = Path(path).expanduser()
    if seconds <= 0 or fps <= 0:
        raise ConfigError(f"--seconds {seconds} / --fps {fps}: expected positive numbers")
    if path.exists():
        if not force:
            raise BagError(f"{path} exists; refusing to overwrite it; fix: pass --force or another path")
        if not (path / "metadata.yaml").is_file():
            raise BagError(f"{path} exists and is not a rosbag2 bag; refusing to delete it; fix: another path")
        shutil.rmtree(path)
    store = get_typestore("jazzy" if "mcap" in writer_storages() else "humble")
    t = store.types
    image_type, twist_type, truth_type = ("sensor_msgs/msg/CompressedImage", "geometry_msgs/msg/Twist",
                                          "vision_msgs/msg/Detection2DArray")  # fmt: skip
    if "mcap" in writer_storages():
        from rosbags.rosbag2 import StoragePlugin

        writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
    else:  # rosbags 0.9.x (Python 3.8) writes sqlite3 only
        writer = Writer(path)
    drive = Drive(World(world), fps=fps, duration_s=seconds, width=WIDTH, height=HEIGHT,
                  seed=drive_seed if drive_seed is not None else 1000 + world)
    with writer:
        image_conn = writer.add_connection(TOPIC_IMAGE, image_type, typestore=store)
        command_conn = writer.add_connection(TOPIC_COMMAND, twist_type, typestore=store)
        truth_conn = writer.add_connection(TOPIC_TRUTH, truth_type, typestore=store)
        for frame in drive:
            stamp_ns = START_NS + round(frame.t * 1e9)
            header = t["std_msgs/msg/Header"](
                stamp=t["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
                frame_id=FRAME_ID)  # fmt: skip
            ok, jpeg = cv2.imencode(".jpg", frame.image_bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise BagError(f"OpenCV could not JPEG-encode frame {frame.index}")
            image = t[image_type](header=header, format="jpeg", data=jpeg.reshape(-1))
            writer.write(image_conn, stamp_ns, store.serialize_cdr(image, image_type))
            vector = t["geometry_msgs/msg/Vector3"]
            twist = t[twist_type](linear=vector(x=float(frame.throttle), y=0.0, z=0.0),
                                  angular=vector(x=0.0, y=0.0, z=-float(frame.steering)))  # REP 103: + = left
            writer.write(command_conn, stamp_ns, store.serialize_cdr(twist, twist_type))
            ids = list(getattr(frame, "track_ids", None) or [])
            truth = t[truth_type](header=header, detections=_detections(t, header, frame.boxes, frame.labels, ids))
            writer.write(truth_conn, stamp_ns, store.serialize_cdr(truth, truth_type))
    return path


def _detections(t: dict, header: object, boxes: np.ndarray, labels: Sequence[str],
                track_ids: Sequence[str]) -> List[object]:
    """Truth boxes as Detection2D, ``id`` the object's track id (its index in the frame where none is known)."""
    pose = t["geometry_msgs/msg/PoseWithCovariance"](
        pose=t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                         orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
        covariance=np.zeros(36, np.float64))  # fmt: skip
    out = []
    for k, (box, label) in enumerate(zip(np.asarray(boxes, np.float64).reshape(-1, 4), labels)):
        x0, y0, x1, y1 = (float(v) for v in box)
        hypothesis = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=str(label), score=1.0), pose=pose)
        bbox = t["vision_msgs/msg/BoundingBox2D"](
            center=t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=(x0 + x1) / 2, y=(y0 + y1) / 2),
                                               theta=0.0),
            size_x=x1 - x0, size_y=y1 - y0)  # fmt: skip
        track = str(track_ids[k]) if k < len(track_ids) else str(k)
        out.append(t["vision_msgs/msg/Detection2D"](header=header, results=[hypothesis], bbox=bbox, id=track))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trt_perception.tools.synthetic_bag", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="bag folder to write")
    parser.add_argument("--world", type=int, default=8, help="world seed (the demo bag is world 7)")
    parser.add_argument("--drive-seed", type=int, default=None, help="the driver's seed (default 1000 + world)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--force", action="store_true", help="replace an existing bag there")
    args = parser.parse_args(argv)
    from trt_perception.errors import TrtPerceptionError

    try:
        path = write_synthetic_bag(args.out, args.world, args.drive_seed, args.seconds, args.fps, args.force)
    except TrtPerceptionError as exc:
        print(f"synthetic_bag: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
