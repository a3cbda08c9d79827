"""The synthetic world renders deterministic frames whose truth (boxes, steering) matches the pixels."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import List

import cv2
import numpy as np
import pytest

from trt_perception.tools.synthetic_world import (
    CLASSES,
    MIN_BOX_PX,
    CarPose,
    Drive,
    Frame,
    World,
    WorldObject,
    render_drivable_mask,
    render_frame,
    render_frame_tracked,
)


@pytest.fixture(scope="module")
def frames() -> List[Frame]:
    """Six seconds through a world with curves both ways and several objects in view."""
    return list(Drive(World(3), fps=10.0, duration_s=6.0))


def _orange_fraction(image_bgr: np.ndarray, box: np.ndarray) -> float:
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    hsv = cv2.cvtColor(image_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    orange = (hue <= 22) & (sat >= 120) & (val >= 90)
    return float(orange.mean()) if orange.size else 0.0


def test_same_seed_same_frames_and_truth() -> None:
    first = list(Drive(World(11), fps=10.0, duration_s=1.5))
    second = list(Drive(World(11), fps=10.0, duration_s=1.5))
    assert len(first) == len(second) == 15
    for a, b in zip(first, second):
        assert a.image_bgr.tobytes() == b.image_bgr.tobytes()
        assert (a.steering, a.throttle, a.t, a.labels) == (b.steering, b.throttle, b.t, b.labels)
        np.testing.assert_array_equal(a.boxes, b.boxes)


def test_other_seeds_give_other_worlds_and_paths() -> None:
    a = next(iter(Drive(World(11), duration_s=0.2)))
    b = next(iter(Drive(World(12), duration_s=0.2)))
    c = list(Drive(World(11), duration_s=1.0, seed=99))[-1]
    d = list(Drive(World(11), duration_s=1.0))[-1]
    assert a.image_bgr.tobytes() != b.image_bgr.tobytes()
    assert c.lateral_offset != d.lateral_offset  # same world, another drive seed: another path


def test_frame_types_and_ranges(frames: List[Frame]) -> None:
    for frame in frames:
        assert frame.image_bgr.shape == (240, 320, 3) and frame.image_bgr.dtype == np.uint8
        assert -1.0 <= frame.steering <= 1.0
        assert 0.0 <= frame.throttle <= 1.0
        assert frame.boxes.dtype == np.float32 and frame.boxes.shape == (len(frame.labels), 4)
        assert set(frame.labels) <= set(CLASSES)
    assert np.diff([f.t for f in frames]) == pytest.approx(0.1)
    assert max(abs(f.lateral_offset) for f in frames) < World(3).track.half_width  # the car stays on the road


def test_truth_boxes_lie_inside_the_image_and_are_big_enough(frames: List[Frame]) -> None:
    boxes = np.concatenate([f.boxes for f in frames])
    assert len(boxes) > 20  # the world has objects in view
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 320).all() and (boxes[:, 3] <= 240).all()
    assert (boxes[:, 2] - boxes[:, 0] >= MIN_BOX_PX).all() and (boxes[:, 3] - boxes[:, 1] >= MIN_BOX_PX).all()


def test_cones_are_drawn_inside_their_boxes(frames: List[Frame]) -> None:
    checked = 0
    for frame in frames:
        for i, (box, label) in enumerate(zip(frame.boxes, frame.labels)):
            others = np.delete(frame.boxes, i, axis=0)
            overlaps = (
                (others[:, 0] < box[2])
                & (others[:, 2] > box[0])
                & (others[:, 1] < box[3])
                & (others[:, 3] > box[1])
            )
            if overlaps.any() or box[3] - box[1] < 10:
                continue
            fraction = _orange_fraction(frame.image_bgr, box)
            if label == "cone":
                assert fraction > 0.2, (frame.index, box, fraction)
                checked += 1
            else:
                assert fraction < 0.1, (frame.index, box, fraction)  # boxes are brown/blue, not cone orange
    assert checked >= 5


def test_boxes_follow_the_resolution() -> None:
    """The same pose at 640x480 gives the same boxes at twice the size (a pinhole camera)."""
    world = World(3)
    track = world.track
    s, lateral = track.locate(*track.point(np.asarray(20.0)), s_hint=20.0)
    assert s == pytest.approx(20.0, abs=0.3) and abs(lateral) < 0.05
    x, y = track.point(np.asarray(20.0))
    pose = CarPose(float(x), float(y), track.heading_at(20.0))
    _, small, small_labels = render_frame(world, pose, 320, 240)
    image, large, large_labels = render_frame(world, pose, 640, 480)
    assert image.shape == (480, 640, 3)
    assert len(small_labels) > 0 and len(large_labels) >= len(small_labels)  # more objects pass the size cut
    for box, label in zip(small, small_labels):
        error = np.abs(large - box * 2).max(axis=1)
        match = int(np.argmin(error))
        assert error[match] < 2.5 and large_labels[match] == label


def test_steering_turns_into_the_curve() -> None:
    """Track curvature > 0 is a left turn; the human steers left (negative) there, right in right curves."""
    lefts, rights = [], []
    for seed in (3, 4):  # world 3 starts with a left curve, world 4 with a right one
        world = World(seed)
        limit = 0.5 * world.track.max_curvature
        for frame in Drive(world, fps=5.0, duration_s=12.0):
            if frame.curvature > limit:
                lefts.append(frame.steering)
            elif frame.curvature < -limit:
                rights.append(frame.steering)
    assert len(lefts) >= 5 and len(rights) >= 5
    assert np.mean(lefts) < -0.2 and np.mean(rights) > 0.2
    assert np.mean(np.asarray(lefts) < 0) > 0.9 and np.mean(np.asarray(rights) > 0) > 0.9


def test_car_off_the_line_steers_back() -> None:
    """Left of the centre line on a straight, heading along it: steer right (positive), and vice versa."""
    world = World(3)
    track = world.track
    heading = track.heading_at(5.0)  # the first 12 m are straight
    for lateral, sign in ((0.6, 1.0), (-0.6, -1.0)):
        x, y = track.point(np.asarray(5.0), np.asarray(lateral))
        drive = Drive(world)
        state = type("State", (), {})()
        state.x, state.y, state.heading, state.speed, state.s = float(x), float(y), heading, 5.0, 5.0
        steering, throttle, offset, heading_error = drive.command(state)  # type: ignore[arg-type]
        assert math.copysign(1.0, steering) == sign and abs(steering) > 0.1
        assert offset == pytest.approx(lateral, abs=0.01) and abs(heading_error) < 1e-6
        assert drive.driver.curve_throttle <= throttle <= drive.driver.straight_throttle


# ------------------------------------------------------------------------------------------ drivable area


def _pose_on_centre_line(world: World, s: float) -> CarPose:
    x, y = world.track.point(np.asarray(s))
    return CarPose(float(x), float(y), world.track.heading_at(s))


def _plain_world(seed: int) -> World:
    """A world with one flat road colour (lines too), no texture, shadows, objects or light changes."""
    world = World(seed)
    world.objects, world.shadows = [], []
    world.appearance = dataclasses.replace(
        world.appearance,
        road=(255.0, 0.0, 255.0),
        edge_line=(255.0, 0.0, 255.0),
        centre_line=(255.0, 0.0, 255.0),
        ground=(0.0, 255.0, 0.0),
        texture_amplitude=0.0,
        shadow_strength=0.0,
        gain=1.0,
        contrast=1.0,
        cast=(1.0, 1.0, 1.0),
        light_wobble=0.0,
    )
    return world


def test_drivable_masks_leave_the_frames_as_they_were() -> None:
    plain = list(Drive(World(11), fps=10.0, duration_s=1.0))
    masked = list(Drive(World(11), fps=10.0, duration_s=1.0, drivable_masks=True))
    assert len(plain) == len(masked) == 10
    for a, b in zip(plain, masked):
        assert a.drivable is None and b.drivable is not None
        assert a.image_bgr.tobytes() == b.image_bgr.tobytes()
        assert (a.steering, a.throttle, a.labels) == (b.steering, b.throttle, b.labels)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert b.drivable.shape == (240, 320) and b.drivable.dtype == np.uint8
        assert set(np.unique(b.drivable).tolist()) == {0, 1}


def test_car_on_the_road_sees_road_below_and_sky_above() -> None:
    world = World(3)
    world.objects = []
    pose = _pose_on_centre_line(world, 20.0)
    for width, height in ((320, 240), (160, 120)):
        mask = render_drivable_mask(world, pose, width, height)
        assert mask.shape == (height, width)
        assert mask[height - 1, width // 2] == 1  # the road right in front of the car
        assert not mask[: height // 3].any()  # sky and hills
        row = mask[height // 2]  # below the horizon: road in the middle, grass either side of a 3.2 m road
        assert row[width // 2] == 1 and row[0] == 0 and row[-1] == 0


def test_drivable_mask_is_the_road_colour_region_of_a_plain_frame() -> None:
    for seed, s in ((3, 20.0), (4, 40.0), (11, 60.0)):
        world = _plain_world(seed)
        pose = _pose_on_centre_line(world, s)
        image, _, _ = render_frame(world, pose)
        mask = render_drivable_mask(world, pose, s_hint=s)
        road = np.all(image == (255, 0, 255), axis=2)
        kernel = np.ones((3, 3), np.uint8)
        edge = cv2.dilate(mask, kernel).astype(bool) & ~cv2.erode(mask, kernel).astype(bool)
        differ = road != mask.astype(bool)
        assert road.sum() > 0.2 * road.size
        assert not (differ & ~edge).any(), f"world {seed}: mask and road colour differ off the road's edge"
        assert differ.sum() < 0.02 * mask.sum()  # only anti-aliased edge pixels


def test_objects_in_front_of_the_road_are_not_drivable() -> None:
    world = _plain_world(3)
    pose = _pose_on_centre_line(world, 20.0)
    x, y = world.track.point(np.asarray(28.0), np.asarray(0.5))
    bx, by = world.track.point(np.asarray(31.0), np.asarray(-0.7))
    world.objects = [
        WorldObject("cone", float(x), float(y), 0.3, (0.35, 0.35, 0.6), (20, 105, 245)),
        WorldObject("box", float(bx), float(by), 0.5, (0.7, 0.6, 0.5), (55, 105, 155)),
    ]
    image, boxes, labels = render_frame(world, pose)
    mask = render_drivable_mask(world, pose)
    assert sorted(labels) == ["box", "cone"]
    bare = render_drivable_mask(_plain_world(3), pose)
    # Object pixels over the bare road: green > 40 (the magenta road, darkened by contact shadows, has none),
    # less a pixel all round (anti-aliased edges).
    body = ((image[..., 1] > 40) & bare.astype(bool)).astype(np.uint8)
    core = cv2.erode(body, np.ones((3, 3), np.uint8)).astype(bool)
    for box in boxes:
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        inside = mask[y0:y1, x0:x1].astype(bool)
        assert core[y0:y1, x0:x1].sum() > 20  # the object covers road in the bare mask...
        assert not (core[y0:y1, x0:x1] & inside).any()  # ...and that road is cut out
        assert inside.any()  # road still shows around it


def test_track_ids_name_each_box_by_its_world_object(frames: List[Frame]) -> None:
    """One id per box, "<kind>-<index in World.objects>", unique within a frame, and the id's object is really
    the one in the box: its ground contact point projects inside the box's bottom half."""
    world = World(3)
    seen = set()
    for frame in frames:
        assert len(frame.track_ids) == len(frame.labels)
        assert len(set(frame.track_ids)) == len(frame.track_ids)
        for track_id, label in zip(frame.track_ids, frame.labels):
            kind, index = track_id.rsplit("-", 1)
            assert kind == label and world.objects[int(index)].kind == label
            assert world.objects[int(index)].track_id == track_id
            seen.add(track_id)
    assert len(seen) >= 3


def test_a_track_id_follows_its_object_from_frame_to_frame(frames: List[Frame]) -> None:
    """Between neighbouring frames (0.1 s) an id's box moves a little, and objects grow as the car nears them:
    a mix-up of ids between objects would show as a jump."""
    pairs = 0
    for before, after in zip(frames, frames[1:]):
        old = dict(zip(before.track_ids, before.boxes))
        for track_id, box in zip(after.track_ids, after.boxes):
            if track_id in old:
                centre_shift = np.abs((box[:2] + box[2:]) / 2 - (old[track_id][:2] + old[track_id][2:]) / 2).max()
                assert centre_shift < 40.0, (after.index, track_id, centre_shift)
                pairs += 1
    assert pairs > 20


def test_render_frame_tracked_is_render_frame_plus_ids() -> None:
    world = World(3)
    pose = _pose_on_centre_line(world, 30.0)
    image, boxes, labels = render_frame(world, pose)
    image2, boxes2, labels2, ids = render_frame_tracked(world, pose)
    assert image.tobytes() == image2.tobytes() and labels == labels2 and len(ids) == len(labels)
    np.testing.assert_array_equal(boxes, boxes2)


def test_frames_and_truth_are_the_bytes_they_were_before_track_ids() -> None:
    """Ids draw nothing from the world's random generator: the frames, masks, boxes and commands of a drive are
    the bytes recorded before ids existed (so the demo bag's camera and mask messages did not change;
    ``make_demo.py --only bag`` checks the same against the shipped bag). Pixels and float truth may
    legitimately differ on another OpenCV/numpy build, so the digests are checked on the one they were
    recorded with."""
    recorded = ("5.1.0", "2.4.6")
    if (cv2.__version__, np.__version__) != recorded:
        pytest.skip(f"digests recorded with OpenCV {recorded[0]}, numpy {recorded[1]}; "
                    f"this is OpenCV {cv2.__version__}, numpy {np.__version__}")
    pixels, truth = hashlib.sha256(), hashlib.sha256()
    frames = list(Drive(World(3), fps=10.0, duration_s=3.0, drivable_masks=True))
    assert len(frames) == 30
    for f in frames:
        assert f.drivable is not None
        pixels.update(f.image_bgr.tobytes())
        pixels.update(f.drivable.tobytes())
        truth.update(f.boxes.tobytes())
        truth.update(",".join(f.labels).encode())
        truth.update(np.array([f.steering, f.throttle, f.t, f.lateral_offset, f.heading_error, f.curvature]).tobytes())
    assert truth.hexdigest() == "082290c199b05c05eb32890d2994754ce5951d481118c09fd34263387c124ea2"
    assert pixels.hexdigest() == "9b2630860ae1643b8177e79989d9dcbb8899415ffd67a1305e067bf79902d994"
