"""DonkeyCar tubs (tub v2) written by the tests the way DonkeyCar's TubWriter writes them (nothing downloaded).

Byte layout as in autorope/donkeycar@cde8bbe9 donkeycar/parts/datastore_v2.py and tub_v2.py: ``manifest.json``
holds five JSON lines (inputs, types, metadata, manifest metadata, catalog metadata), each catalog one
``json.dumps(record, sort_keys=True)`` line per record, each ``.catalog_manifest`` one JSON line with the
catalog's line lengths, and images ``images/<index>_cam_image_array_.jpg``. Import from a test:
``from tubfixtures import write_tub`` (the test modules of this folder put it on sys.path).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np

T0_MS = 1_714_557_600_000  # 2024-05-01 10:00:00 UTC


@dataclass
class TubFrame:
    """One record: an RGB frame and what the car recorded with it."""

    rgb: np.ndarray
    angle: float
    throttle: float
    mode: str = "user"
    pilot: Optional[Sequence[float]] = None  # (pilot/angle, pilot/throttle)
    imu: Optional[Sequence[float]] = None  # acl_x..z (m/s^2), gyr_x..z (deg/s)
    behavior: Optional[int] = None  # index into BEHAVIORS
    extra: Dict[str, Any] = field(default_factory=dict)


BEHAVIORS = ["Left_Lane", "Right_Lane"]


def write_tub(folder: Path, frames: Sequence[TubFrame], period_ms: int = 50, max_len: int = 4,
              deleted: Sequence[int] = (), t0_ms: int = T0_MS) -> Path:
    """A tub at ``folder`` with ``frames`` (catalogs of ``max_len`` records, as DonkeyCar splits them)."""
    folder.mkdir(parents=True)
    (folder / "images").mkdir()
    inputs = ["cam/image_array", "user/angle", "user/throttle", "user/mode"]
    types = ["image_array", "float", "float", "str"]
    if any(f.pilot is not None for f in frames):
        inputs += ["pilot/angle", "pilot/throttle"]
        types += ["float", "float"]
    if any(f.behavior is not None for f in frames):
        inputs += ["behavior/state", "behavior/label", "behavior/one_hot_state_array"]
        types += ["int", "str", "vector"]
    if any(f.imu is not None for f in frames):
        inputs += ["imu/acl_x", "imu/acl_y", "imu/acl_z", "imu/gyr_x", "imu/gyr_y", "imu/gyr_z"]
        types += ["float"] * 6
    catalogs: List[List[str]] = []
    for index, frame in enumerate(frames):
        name = f"{index}_cam_image_array_.jpg"  # tub_v2.py:112-116
        ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(frame.rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        (folder / "images" / name).write_bytes(jpeg.tobytes())
        record: Dict[str, Any] = {"cam/image_array": name, "user/angle": float(frame.angle),
                                  "user/throttle": float(frame.throttle), "user/mode": frame.mode,
                                  "_timestamp_ms": t0_ms + index * period_ms, "_index": index,
                                  "_session_id": "24-05-01_0"}
        if frame.pilot is not None:
            record["pilot/angle"], record["pilot/throttle"] = (float(v) for v in frame.pilot)
        if frame.behavior is not None:
            one_hot = [0.0] * len(BEHAVIORS)
            one_hot[frame.behavior] = 1.0
            record.update({"behavior/state": frame.behavior, "behavior/label": BEHAVIORS[frame.behavior],
                           "behavior/one_hot_state_array": one_hot})
        if frame.imu is not None:
            for key, value in zip(("acl_x", "acl_y", "acl_z", "gyr_x", "gyr_y", "gyr_z"), frame.imu):
                record[f"imu/{key}"] = float(value)
        record.update(frame.extra)
        if index % max_len == 0:
            catalogs.append([])
        catalogs[-1].append(json.dumps(record, allow_nan=False, sort_keys=True) + "\n")  # datastore_v2.py:163
    paths = []
    for number, lines in enumerate(catalogs):
        catalog = folder / f"catalog_{number}.catalog"
        catalog.write_text("".join(lines), encoding="utf-8")
        meta = {"path": f"catalog_{number}.catalog_manifest", "created_at": t0_ms / 1000.0,
                "start_index": number * max_len, "line_lengths": [len(line) for line in lines]}
        (folder / f"catalog_{number}.catalog_manifest").write_text(json.dumps(meta, sort_keys=True) + "\n")
        paths.append(catalog.name)
    catalog_meta = {"paths": paths, "current_index": len(frames), "max_len": max_len,
                    "deleted_indexes": sorted(deleted)}
    lines = [json.dumps(inputs), json.dumps(types), json.dumps({}),
             json.dumps({"created_at": t0_ms / 1000.0, "sessions": {"all_full_ids": ["24-05-01_0"], "last_id": 0,
                                                                     "last_full_id": "24-05-01_0"}}),
             json.dumps(catalog_meta)]
    (folder / "manifest.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def drive_frames(count: int, seed: int = 3, height: int = 120, width: int = 160, imu: bool = False,
                 pilot: bool = False, behavior: bool = False) -> List[TubFrame]:
    """Flat-colour frames (JPEG keeps them nearly exact) whose recorded commands are what
    onnx_factory.brightness_pilot answers for them: angle = 2 * mean - 1, throttle = red mean."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        colour = rng.integers(30, 226, 3).astype(np.uint8)
        rgb = np.empty((height, width, 3), np.uint8)
        rgb[...] = colour
        x = rgb.astype(np.float64) / 255.0
        frame = TubFrame(rgb, float(2 * x.mean() - 1), float(x[..., 0].mean()))
        if pilot:
            frame.pilot = (frame.angle * 0.5, frame.throttle * 0.5)
            frame.mode = "local"
        if imu:
            frame.imu = (0.1 * i, 0.0, 9.81, 0.0, 0.0, 10.0 * i)
        if behavior:
            frame.behavior = i % 2
        out.append(frame)
    return out


def tree_snapshot(folder: Path) -> Dict[str, bytes]:
    """Every file under ``folder`` with its bytes (a tub must come out of any read unchanged)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
