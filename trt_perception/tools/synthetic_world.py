"""A small synthetic driving world with known ground truth (numpy + OpenCV only, no torch).

Why it exists: the demo must run on a fresh machine with nothing downloaded, and tests and benchmarks need
camera frames whose right answers are known. This module renders a forward-facing car camera on a flat
ground plane with a winding track (asphalt, white edge lines, a dashed centre line), sky and hills, varied
lighting and tree shadows, and traffic cones and boxes beside and on the road, through a pinhole camera, so
objects shrink with distance. Each frame carries the "human" drive command (a pure-pursuit controller that
the simulated car follows, with a disturbance in its path so the car wanders off the centre line and the
commands cover recoveries), the pixel boxes of the visible objects with a track id per object
(``"cone-12"``: the same object keeps its id in every frame it is seen, for scoring trackers); on request
also the drivable-area mask (``render_drivable_mask``: the road surface as the camera sees it, objects on it
cut out).

Conventions:
- steering in [-1, 1], negative = left, positive = right (DonkeyCar's convention, as ``SteeringPrediction``);
  throttle in [0, 1] (slower in curves);
- boxes are float32 pixel ``[x_min, y_min, x_max, y_max]`` in the rendered image, clipped to it; labels are
  ``"cone"`` or ``"box"``; objects smaller than ``MIN_BOX_PX`` on either side, or hidden by nearer objects for
  more than half of their in-image area, are left out; each box's track id is ``f"{kind}-{index}"`` with
  ``index`` the object's place in ``World.objects`` (``WorldObject.track_id``);
- world units are metres, world frame x/y on the ground, headings counter-clockwise from +x; lateral offsets
  from the centre line are positive to the LEFT.

Everything is deterministic given the seeds: same seeds and image size -> same pixels, same truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

CLASSES: Tuple[str, ...] = ("cone", "box")
MIN_BOX_PX = 6.0  # truth boxes with a side shorter than this are dropped
MIN_VISIBLE_FRACTION = 0.5  # of the whole silhouette; below it (hidden by nearer objects or cut off by the
# image border) an object is left out of the truth: a sliver of cone is not something to find
NEAR_M = 0.25  # camera-space depth below which geometry is not drawn
_SHIFT = 4  # OpenCV sub-pixel bits for polygon drawing
_ONE = float(1 << _SHIFT)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera on the car: horizontal field of view, mounting height and downward pitch."""

    hfov_deg: float = 62.0
    height_m: float = 1.0
    pitch_deg: float = 8.5

    def intrinsics(self, width: int, height: int) -> Tuple[float, float, float, float]:
        """fx, fy, cx, cy for an image size (square pixels, principal point at the centre)."""
        fx = width / (2.0 * math.tan(math.radians(self.hfov_deg) / 2.0))
        return fx, fx, width / 2.0, height / 2.0


DEFAULT_CAMERA = Camera()


@dataclass(frozen=True)
class CarPose:
    """Where the car (its camera) is: ground position, heading, and the camera's pitch/roll jitter."""

    x: float
    y: float
    heading: float
    pitch_jitter: float = 0.0  # radians, added to the camera's pitch (bumps)
    roll: float = 0.0  # radians


@dataclass
class Frame:
    """One rendered camera frame and its ground truth."""

    image_bgr: np.ndarray  # (H, W, 3) uint8
    steering: float  # [-1, 1], positive = right
    throttle: float  # [0, 1]
    boxes: np.ndarray  # (N, 4) float32 pixel xyxy
    labels: List[str]
    t: float  # seconds since the drive started
    index: int = 0
    lateral_offset: float = 0.0  # metres, positive = left of the centre line
    heading_error: float = 0.0  # radians, positive = pointing left of the track direction
    curvature: float = 0.0  # track curvature at the car, 1/m, positive = left turn
    drivable: Optional[np.ndarray] = None  # (H, W) uint8 road mask (1 = road), with Drive(drivable_masks=True)
    track_ids: List[str] = field(default_factory=list)  # one per box: the object's stable id ("cone-12")


@dataclass(frozen=True)
class WorldObject:
    """A cone or a box standing on the ground."""

    kind: str  # "cone" | "box"
    x: float
    y: float
    yaw: float
    size: Tuple[float, float, float]  # width, depth, height (cone: base diameter, base diameter, height)
    color: Tuple[int, int, int]  # BGR of the body
    track_id: str = ""  # f"{kind}-{index in World.objects}", set by World: the truth's id in every frame


@dataclass(frozen=True)
class Appearance:
    """Colours and light of one world (what varies between worlds besides geometry)."""

    sky_top: Tuple[float, float, float]
    sky_horizon: Tuple[float, float, float]
    hills: Tuple[float, float, float]
    ground: Tuple[float, float, float]
    road: Tuple[float, float, float]
    edge_line: Tuple[float, float, float]
    centre_line: Tuple[float, float, float]
    texture_amplitude: float
    shadow_strength: float
    sun_azimuth: float
    gain: float  # base brightness
    contrast: float
    cast: Tuple[float, float, float]  # per-channel (BGR) colour cast
    light_wobble: float  # amplitude of the slow brightness change over time (clouds)


# ------------------------------------------------------------------------------------------------ helpers


def smooth_noise(rng: np.random.Generator, n: int, spacing: float, count_out: int, step: float) -> np.ndarray:
    """A smooth random curve: ``n`` knots in [-1, 1] every ``spacing`` units, cosine-interpolated.

    Sampled at ``count_out`` points ``step`` apart; used for track curvature, light changes and jitter.
    """
    knots = rng.uniform(-1.0, 1.0, size=max(n, 2))
    pos = np.arange(count_out) * step / spacing
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, len(knots) - 2)
    frac = np.clip(pos - i0, 0.0, 1.0)
    w = (1.0 - np.cos(frac * math.pi)) / 2.0
    return knots[i0] * (1.0 - w) + knots[i0 + 1] * w


def _color(rng: np.random.Generator, base: Sequence[float], spread: float) -> Tuple[float, float, float]:
    jitter = rng.uniform(-spread, spread, size=3) + rng.uniform(-spread, spread)
    b, g, r = (float(np.clip(c + j, 0.0, 255.0)) for c, j in zip(base, jitter))
    return b, g, r


def _int_color(color: Sequence[float]) -> Tuple[int, int, int]:
    b, g, r = (int(c) for c in color)
    return b, g, r


# ------------------------------------------------------------------------------------------------- track


class Track:
    """The track's centre line, sampled every ``ds`` metres: x, y, heading and curvature arrays."""

    def __init__(
        self,
        rng: np.random.Generator,
        length_m: float = 420.0,
        ds: float = 0.25,
        half_width: float = 1.6,
        max_curvature: float = 1.0 / 9.0,
    ) -> None:
        self.ds = ds
        self.half_width = half_width
        self.max_curvature = max_curvature
        n = int(length_m / ds) + 1
        self.s = np.arange(n) * ds
        for _attempt in range(100):
            spacing = float(rng.uniform(14.0, 22.0))
            raw = smooth_noise(rng, int(length_m / spacing) + 2, spacing, n, ds)
            # Straights between curves: squash small values to zero, keep the sign of the large ones.
            shaped = np.sign(raw) * np.clip((np.abs(raw) - 0.2) / 0.8, 0.0, 1.0) ** 0.8
            curvature = shaped * max_curvature
            curvature[self.s < 12.0] = 0.0  # start on a straight
            heading = np.concatenate([[0.0], np.cumsum(curvature[:-1]) * ds])
            x = np.concatenate([[0.0], np.cumsum(np.cos(heading[:-1])) * ds])
            y = np.concatenate([[0.0], np.cumsum(np.sin(heading[:-1])) * ds])
            if self._no_overlap(x, y):
                break
        self.x, self.y, self.heading, self.curvature = x, y, heading, curvature

    def _no_overlap(self, x: np.ndarray, y: np.ndarray) -> bool:
        """True when no two parts of the track more than 20 m apart along it come closer than 12 m."""
        step = max(1, int(1.0 / self.ds))
        px, py = x[::step], y[::step]
        d = np.hypot(px[:, None] - px[None, :], py[:, None] - py[None, :])
        idx = np.arange(len(px))
        far_along = np.abs(idx[:, None] - idx[None, :]) * step * self.ds > 20.0
        return not bool((d[far_along] < 12.0).any())

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def _index(self, s: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        pos = np.clip(np.asarray(s, np.float64) / self.ds, 0.0, len(self.s) - 1.000001)
        i0 = np.floor(pos).astype(np.int64)
        return i0, pos - i0

    def point(self, s: np.ndarray, lateral: Union[float, np.ndarray] = 0.0) -> Tuple[np.ndarray, np.ndarray]:
        """World x, y of the point ``lateral`` metres left of the centre line at arc length ``s``."""
        i0, frac = self._index(s)
        x = self.x[i0] * (1 - frac) + self.x[i0 + 1] * frac
        y = self.y[i0] * (1 - frac) + self.y[i0 + 1] * frac
        heading = self.heading[i0] * (1 - frac) + self.heading[i0 + 1] * frac
        return x - np.sin(heading) * lateral, y + np.cos(heading) * lateral

    def heading_at(self, s: float) -> float:
        i0, frac = self._index(np.asarray(s))
        return float(self.heading[i0] * (1 - frac) + self.heading[i0 + 1] * frac)

    def curvature_at(self, s: float) -> float:
        i0, frac = self._index(np.asarray(s))
        return float(self.curvature[i0] * (1 - frac) + self.curvature[i0 + 1] * frac)

    def locate(self, x: float, y: float, s_hint: float, window: float = 8.0) -> Tuple[float, float]:
        """Arc length and left-positive lateral offset of the ground point (x, y), searched near s_hint."""
        lo = max(0, int((s_hint - window) / self.ds))
        hi = min(len(self.s), int((s_hint + window) / self.ds) + 1)
        dx, dy = x - self.x[lo:hi], y - self.y[lo:hi]
        k = int(np.argmin(dx * dx + dy * dy))
        i = lo + k
        h = self.heading[i]
        along = dx[k] * math.cos(h) + dy[k] * math.sin(h)
        lateral = -dx[k] * math.sin(h) + dy[k] * math.cos(h)
        return float(self.s[i] + along), float(lateral)


# ------------------------------------------------------------------------------------------------- world


class World:
    """One track with its objects, tree shadows, hills and colours, all drawn from ``seed``."""

    def __init__(self, seed: int, length_m: float = 420.0, object_spacing_m: float = 6.0) -> None:
        self.seed = int(seed)
        rng = np.random.default_rng([self.seed, 1])
        self.track = Track(rng, length_m=length_m)
        self.appearance = self._appearance(rng)
        # Ids name each object by its place in the world, so a tracker's output can be scored frame to frame;
        # they are set after placement and draw nothing from the generator (same worlds as before ids existed).
        self.objects = [
            replace(obj, track_id=f"{obj.kind}-{index}")
            for index, obj in enumerate(self._objects(rng, object_spacing_m))
        ]
        self.shadows = self._shadows(rng)
        # Hill height (elevation angle, radians) over 1024 azimuth bins around the world.
        az = np.arange(1024) * (2 * math.pi / 1024)
        hills = np.zeros_like(az)
        for freq in (2, 3, 5, 8, 13, 21):
            hills += rng.uniform(0.2, 1.0) / freq**0.6 * np.sin(freq * az + rng.uniform(0, 2 * math.pi))
        elevation = np.radians(1.0) + np.radians(rng.uniform(1.5, 4.5)) * (hills - hills.min()) / max(
            1e-6, float(np.ptp(hills))
        )
        self.hills_tan = np.tan(elevation).astype(np.float32)
        tex = rng.normal(0.0, 1.0, size=(256, 256)).astype(np.float32)
        tex = cv2.GaussianBlur(np.pad(tex, 8, mode="wrap"), (0, 0), 1.6)[8:-8, 8:-8]  # tiles seamlessly
        self.texture = (tex / max(1e-6, float(np.abs(tex).max()))).astype(np.float32)
        self.light_phase = rng.uniform(0, 2 * math.pi, size=3)
        self.light_period = rng.uniform(5.0, 14.0, size=3)

    @staticmethod
    def _appearance(rng: np.random.Generator) -> Appearance:
        overcast = rng.random() < 0.3
        sky_top = _color(rng, (175, 165, 160) if overcast else (205, 140, 80), 20)
        sky_horizon = _color(rng, (215, 215, 215) if overcast else (235, 215, 195), 15)
        ground_kind = rng.random()
        if ground_kind < 0.6:
            ground = _color(rng, (55, 125, 70), 20)  # grass
        elif ground_kind < 0.85:
            ground = _color(rng, (110, 150, 170), 20)  # sand / dirt
        else:
            ground = _color(rng, (95, 110, 95), 15)  # dry grass, grey-green
        dark_road = rng.random() < 0.75
        road = _color(rng, (85, 85, 88) if dark_road else (140, 140, 135), 18)
        if float(np.linalg.norm(np.subtract(road, ground))) < 45.0:
            # A track one cannot tell from the ground is no driving scene: push its brightness away.
            shift = -40.0 if float(np.mean(road)) <= float(np.mean(ground)) else 40.0
            road = tuple(float(np.clip(c + shift, 0.0, 255.0)) for c in road)  # type: ignore[assignment]
        yellow = rng.random() < 0.6
        return Appearance(
            sky_top=sky_top,
            sky_horizon=sky_horizon,
            hills=_color(rng, (95, 115, 90), 20),
            ground=ground,
            road=road,
            edge_line=_color(rng, (232, 235, 235), 10),
            centre_line=_color(rng, (40, 195, 225) if yellow else (232, 235, 235), 10),
            texture_amplitude=float(rng.uniform(0.04, 0.12)),
            shadow_strength=float(rng.uniform(0.0, 0.15) if overcast else rng.uniform(0.25, 0.5)),
            sun_azimuth=float(rng.uniform(0, 2 * math.pi)),
            gain=float(rng.uniform(0.65, 1.25)),
            contrast=float(rng.uniform(0.75, 1.15)),
            cast=tuple(float(c) for c in rng.uniform(0.88, 1.12, size=3)),  # type: ignore[arg-type]
            light_wobble=float(rng.uniform(0.0, 0.12)),
        )

    def _objects(self, rng: np.random.Generator, spacing: float) -> List[WorldObject]:
        track, hw = self.track, self.track.half_width
        objects: List[WorldObject] = []
        s = 14.0 + rng.exponential(spacing)
        while s < track.length - 10.0:
            side = 1.0 if rng.random() < 0.5 else -1.0
            if rng.random() < 0.3:  # a row of cones along one edge
                count = int(rng.integers(2, 5))
                gap = float(rng.uniform(1.5, 3.0))
                lateral = side * float(rng.uniform(hw - 0.5, hw + 0.6))
                placements = [(s + i * gap, lateral + rng.normal(0, 0.08), "cone") for i in range(count)]
            else:
                on_road = rng.random() < 0.45
                lateral = side * float(
                    rng.uniform(0.5, hw - 0.25) if on_road else rng.uniform(hw + 0.3, hw + 4.0)
                )
                placements = [(s, lateral, "cone" if rng.random() < 0.55 else "box")]
            for s_obj, lat, kind in placements:
                x, y = track.point(np.asarray(s_obj), np.asarray(lat))
                if any((o.x - x) ** 2 + (o.y - y) ** 2 < 1.2**2 for o in objects):
                    continue
                objects.append(self._make_object(rng, kind, float(x), float(y)))
            s += 4.0 + rng.exponential(spacing)
        return objects

    @staticmethod
    def _make_object(rng: np.random.Generator, kind: str, x: float, y: float) -> WorldObject:
        yaw = float(rng.uniform(0, 2 * math.pi))
        if kind == "cone":
            height = float(rng.uniform(0.45, 0.75))
            base = height * float(rng.uniform(0.5, 0.6))
            color = _color(rng, (20, 105, 245), 12)
            return WorldObject("cone", x, y, yaw, (base, base, height), _int_color(color))
        width = float(rng.uniform(0.45, 0.95))
        size = (width, width * float(rng.uniform(0.6, 1.2)), width * float(rng.uniform(0.5, 1.0)))
        base_color = (55, 105, 155) if rng.random() < 0.6 else (165, 85, 35)  # brown cardboard / blue crate
        color = _color(rng, base_color, 15)
        return WorldObject("box", x, y, yaw, size, _int_color(color))

    def _shadows(self, rng: np.random.Generator) -> List[np.ndarray]:
        """Tree shadows: ellipses on the ground (world x, y vertices) near and across the road."""
        track, hw = self.track, self.track.half_width
        shadows: List[np.ndarray] = []
        s = 10.0
        angles = np.linspace(0, 2 * math.pi, 14, endpoint=False)
        while s < track.length - 5.0:
            s += float(rng.uniform(6.0, 20.0))
            side = 1.0 if rng.random() < 0.5 else -1.0
            cx, cy = track.point(np.asarray(s), np.asarray(side * rng.uniform(hw - 1.0, hw + 3.0)))
            a, b, rot = rng.uniform(1.0, 3.0), rng.uniform(0.6, 1.8), rng.uniform(0, math.pi)
            ex, ey = a * np.cos(angles), b * np.sin(angles) * (1 + 0.15 * np.sin(3 * angles))
            xs = cx + ex * math.cos(rot) - ey * math.sin(rot)
            ys = cy + ex * math.sin(rot) + ey * math.cos(rot)
            shadows.append(np.stack([xs, ys], axis=1))
        return shadows

    def light(self, t: float) -> Tuple[float, float, Tuple[float, float, float]]:
        """Brightness gain, contrast and colour cast at time ``t`` (slow drift: clouds passing)."""
        look = self.appearance
        wobble = float(np.mean(np.sin(2 * math.pi * t / self.light_period + self.light_phase)))
        return look.gain * (1.0 + look.light_wobble * wobble), look.contrast, look.cast


# ------------------------------------------------------------------------------------------------ camera


def _rotation(camera: Camera, pose: CarPose) -> np.ndarray:
    """Car frame (right, down, forward) -> camera frame: pitch about x, then roll about the optical axis."""
    pitch = math.radians(camera.pitch_deg) + pose.pitch_jitter
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(pose.roll), math.sin(pose.roll)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return rz @ rx


@lru_cache(maxsize=8)
def _pixel_rays(width: int, height: int, camera: Camera) -> np.ndarray:
    """Camera-frame ray directions through every pixel centre, (3, H*W) float32 (x, y, z planes)."""
    fx, fy, cx, cy = camera.intrinsics(width, height)
    u, v = np.meshgrid(np.arange(width, dtype=np.float32) + 0.5, np.arange(height, dtype=np.float32) + 0.5)
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)]).reshape(3, -1)
    return np.ascontiguousarray(rays, dtype=np.float32)


class _Projector:
    """World ground points -> camera coordinates and pixels for one pose."""

    def __init__(self, camera: Camera, pose: CarPose, width: int, height: int) -> None:
        self.fx, self.fy, self.cx, self.cy = camera.intrinsics(width, height)
        self.rotation = _rotation(camera, pose)
        self.pose = pose
        self.camera_height = camera.height_m
        self.cos_h, self.sin_h = math.cos(pose.heading), math.sin(pose.heading)

    def to_camera(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """World points (x, y on the ground, z up) -> camera-frame (N, 3)."""
        dx, dy = np.asarray(x, np.float64) - self.pose.x, np.asarray(y, np.float64) - self.pose.y
        forward = dx * self.cos_h + dy * self.sin_h
        right = dx * self.sin_h - dy * self.cos_h
        down = self.camera_height - np.asarray(z, np.float64) * np.ones_like(forward)
        car = np.stack([right, down, forward], axis=-1)
        return car @ self.rotation.T

    def to_pixels(self, cam: np.ndarray) -> np.ndarray:
        """Camera-frame points with positive depth -> (N, 2) pixel coordinates."""
        z = cam[..., 2]
        return np.stack([self.cx + self.fx * cam[..., 0] / z, self.cy + self.fy * cam[..., 1] / z], axis=-1)


def _fixed(points: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> OpenCV fixed-point int32 vertices for drawing with ``shift=_SHIFT``."""
    return np.round(np.clip(points, -1e5, 1e5) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _fill(image: np.ndarray, polygons: Sequence[np.ndarray], color: Sequence[float]) -> None:
    if polygons:
        cv2.fillPoly(
            image, [_fixed(p) for p in polygons], tuple(float(c) for c in color), cv2.LINE_AA, _SHIFT
        )


# --------------------------------------------------------------------------------------------- rendering


def _background(
    world: World,
    projector: _Projector,
    rays_cam: np.ndarray,
    width: int,
    height: int,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sky, hills and ground with haze; returns the image, the ground mask and the per-pixel texture factor.

    Works on flat per-pixel float32 planes (one per channel): that is several times faster than (N, 3)
    broadcasting and avoids BLAS for the tiny 3x3 rotation.
    """
    look = world.appearance
    rot = projector.rotation.astype(np.float32)  # camera -> car frame: rays_cam @ rot (orthonormal)
    cam_x, cam_y, cam_z = rays_cam
    right = cam_x * rot[0, 0] + cam_y * rot[1, 0] + cam_z * rot[2, 0]
    down = cam_x * rot[0, 1] + cam_y * rot[1, 1] + cam_z * rot[2, 1]
    forward = cam_x * rot[0, 2] + cam_y * rot[1, 2] + cam_z * rot[2, 2]
    ground = down > 1e-4
    # Sky: a gradient from the horizon colour up to the top colour, by the tangent of the elevation.
    tan_elevation = -down / np.sqrt(right * right + forward * forward)
    mix = np.clip(tan_elevation * np.float32(1.0 / math.tan(math.radians(25.0))), 0.0, 1.0)
    azimuth = np.arctan2(right, forward) * np.float32(-1.0) + np.float32(projector.pose.heading)
    bins = (azimuth * np.float32(1024 / (2 * math.pi))).astype(np.int64) & 1023
    hills = (~ground) & (tan_elevation < world.hills_tan[bins])
    hill_shade = 0.85 + 0.15 * mix
    # Ground: a texture fixed to the world, fading out with distance to limit aliasing near the horizon.
    t = np.where(ground, projector.camera_height / np.maximum(down, np.float32(1e-4)), np.float32(0.0))
    gx = projector.pose.x + t * (forward * projector.cos_h + right * projector.sin_h)
    gy = projector.pose.y + t * (forward * projector.sin_h - right * projector.cos_h)
    tex = world.texture[
        (np.floor(gy * 12.5).astype(np.int64) & 255), (np.floor(gx * 12.5).astype(np.int64) & 255)
    ]
    fade = np.clip(1.0 - t * np.float32(1.0 / 30.0), 0.0, 1.0)
    factor = np.float32(1.0) + np.float32(look.texture_amplitude) * tex * fade
    # Distance haze blends the ground towards the horizon colour.
    haze = np.clip(t * np.float32(1.0 / 120.0), 0.0, 0.6)
    planes = []
    for c in range(3):
        horizon, top = np.float32(look.sky_horizon[c]), np.float32(look.sky_top[c])
        sky = horizon + (top - horizon) * mix
        sky = np.where(hills, np.float32(look.hills[c]) * hill_shade, sky)
        land = np.float32(look.ground[c]) + (horizon - np.float32(look.ground[c])) * haze
        planes.append(np.where(ground, land, sky).reshape(height, width))
    image = cv2.merge(planes)
    shape = (height, width)
    return image, ground.reshape(shape), factor.reshape(shape)


def _strip(
    projector: _Projector, track: Track, s: np.ndarray, left: float, right: float
) -> Optional[np.ndarray]:
    """One polygon for the ground strip between two lateral offsets over the arc lengths ``s``.

    Stops at the first sample too close to (or behind) the camera, so the polygon stays simple.
    """
    lx, ly = track.point(s, np.full_like(s, left))
    rx, ry = track.point(s, np.full_like(s, right))
    cam_l = projector.to_camera(lx, ly, 0.0)
    cam_r = projector.to_camera(rx, ry, 0.0)
    ok = (cam_l[:, 2] > NEAR_M) & (cam_r[:, 2] > NEAR_M)
    if not ok.any():
        return None
    first = int(np.argmax(ok))
    bad_after = np.nonzero(~ok[first:])[0]
    last = first + (int(bad_after[0]) if len(bad_after) else int(ok.size - first))
    if last - first < 2:
        return None
    pl = projector.to_pixels(cam_l[first:last])
    pr = projector.to_pixels(cam_r[first:last])
    return np.concatenate([pl, pr[::-1]], axis=0)


def _road_samples(track: Track, s_car: float) -> np.ndarray:
    """Arc lengths the road is drawn over: 3 m behind to 70 m ahead of the car, finer near it."""
    s = np.concatenate(
        [np.arange(s_car - 3.0, s_car + 20.0, 0.25), np.arange(s_car + 20.0, s_car + 70.0, 1.0)]
    )
    return s[(s >= 0) & (s <= track.length)]


def _road(image: np.ndarray, world: World, projector: _Projector, s_car: float) -> None:
    """Asphalt, edge lines and the dashed centre line, drawn as polygons (anti-aliased)."""
    track, look, hw = world.track, world.appearance, world.track.half_width
    s = _road_samples(track, s_car)
    if s.size < 2:
        return
    road = _strip(projector, track, s, hw, -hw)
    if road is not None:
        _fill(image, [road], look.road)
    lines = [_strip(projector, track, s, side * (hw - 0.06), side * (hw - 0.18)) for side in (1.0, -1.0)]
    _fill(image, [p for p in lines if p is not None], look.edge_line)
    dash_start = np.arange(math.floor((s[0]) / 6.0) * 6.0, s[-1], 6.0)
    dashes = []
    for start in dash_start:
        seg = np.linspace(start, start + 3.0, 7)
        seg = seg[(seg >= s[0]) & (seg <= s[-1])]
        if seg.size >= 2:
            poly = _strip(projector, track, seg, 0.06, -0.06)
            if poly is not None:
                dashes.append(poly)
    _fill(image, dashes, look.centre_line)


def _object_parts(
    obj: WorldObject, projector: _Projector, sun: Tuple[float, float]
) -> Optional[Tuple[float, np.ndarray, List[Tuple[np.ndarray, Tuple[float, float, float]]]]]:
    """Depth, silhouette points (pixels) and coloured polygons of one object, or None when not drawable."""
    width, depth, height = obj.size
    cy, sy = math.cos(obj.yaw), math.sin(obj.yaw)
    hx, hy = width / 2.0, depth / 2.0
    corners = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
    wx = obj.x + corners[:, 0] * cy - corners[:, 1] * sy
    wy = obj.y + corners[:, 0] * sy + corners[:, 1] * cy
    color = np.asarray(obj.color, np.float64)
    parts: List[Tuple[np.ndarray, Tuple[float, float, float]]] = []
    if obj.kind == "cone":
        # The square base, about as wide as the cone's foot whatever its yaw (corners reach 0.8 * sqrt(2)).
        plate = projector.to_camera(obj.x + (wx - obj.x) * 0.8, obj.y + (wy - obj.y) * 0.8, 0.0)
        axis = projector.to_camera(
            np.array([obj.x, obj.x]), np.array([obj.y, obj.y]), np.array([0.02, height])
        )
        cam = np.concatenate([plate, axis])
        if (cam[:, 2] <= NEAR_M).any():
            return None
        radius, top_radius = width / 2.0, width * 0.08
        base_c, top_c = axis[0], axis[1]

        def ring(frac: float) -> np.ndarray:
            centre = base_c + (top_c - base_c) * frac
            r = radius + (top_radius - radius) * frac
            offset = np.array([r, 0.0, 0.0])
            return np.stack([centre - offset, centre + offset])

        bottom, stripe_lo, stripe_hi, top = ring(0.0), ring(0.38), ring(0.62), ring(1.0)
        px = projector.to_pixels
        body = np.concatenate([px(bottom), px(top)[::-1]])
        shade = color * 0.78
        half = np.concatenate(
            [
                px((bottom[0] + bottom[1])[None] / 2),
                px(bottom[1:]),
                px(top[1:]),
                px((top[0] + top[1])[None] / 2),
            ]
        )
        stripe = np.concatenate([px(stripe_lo), px(stripe_hi)[::-1]])
        stripe_half = np.concatenate(
            [
                px((stripe_lo[0] + stripe_lo[1])[None] / 2),
                px(stripe_lo[1:]),
                px(stripe_hi[1:]),
                px((stripe_hi[0] + stripe_hi[1])[None] / 2),
            ]
        )
        parts = [
            (px(plate), tuple(color * 0.45)),
            (body, tuple(color)),
            (half, tuple(shade)),
            (stripe, (235.0, 235.0, 235.0)),
            (stripe_half, (190.0, 190.0, 195.0)),
        ]
        silhouette = np.concatenate([px(plate), body])
        return float(np.mean(cam[:, 2])), silhouette, parts  # type: ignore[return-value]
    # Box: eight corners, faces whose outward normal faces the camera, shaded by the sun direction.
    bottom = projector.to_camera(wx, wy, 0.0)
    top = projector.to_camera(wx, wy, np.full(4, height))
    cam = np.concatenate([bottom, top])
    if (cam[:, 2] <= NEAR_M).any():
        return None
    pix = projector.to_pixels(cam)
    centre = cam.mean(axis=0)
    faces = [[4, 5, 6, 7]] + [[i, (i + 1) % 4, (i + 1) % 4 + 4, i + 4] for i in range(4)]
    sun_x, sun_y = sun
    for face in faces:
        face_centre = cam[face].mean(axis=0)
        if np.dot(face_centre - centre, -face_centre) <= 0:  # normal points away from the camera
            continue
        if face[0] == 4:
            light = 1.12
        else:
            i = face[0]
            nx, ny = (wx[i] + wx[(i + 1) % 4]) / 2 - obj.x, (wy[i] + wy[(i + 1) % 4]) / 2 - obj.y
            norm = math.hypot(nx, ny) or 1.0
            light = 0.6 + 0.4 * max(0.0, (nx * sun_x + ny * sun_y) / norm)
        parts.append((pix[face], tuple(np.clip(color * light, 0, 255))))
    return float(np.mean(cam[:, 2])), pix, parts  # type: ignore[return-value]


def render_frame(
    world: World,
    pose: CarPose,
    width: int = 320,
    height: int = 240,
    t: float = 0.0,
    camera: Camera = DEFAULT_CAMERA,
    s_hint: Optional[float] = None,
) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Render the camera view at ``pose``; returns (BGR uint8 image, (N, 4) float32 boxes, labels).

    ``s_hint`` (the car's arc length along the track) speeds up finding the visible track part; without
    it the nearest centre-line sample is searched over the whole track. ``render_frame_tracked`` also
    returns each box's track id.
    """
    image, boxes, labels, _ = render_frame_tracked(world, pose, width, height, t, camera, s_hint)
    return image, boxes, labels


def render_frame_tracked(
    world: World,
    pose: CarPose,
    width: int = 320,
    height: int = 240,
    t: float = 0.0,
    camera: Camera = DEFAULT_CAMERA,
    s_hint: Optional[float] = None,
) -> Tuple[np.ndarray, np.ndarray, List[str], List[str]]:
    """``render_frame`` plus the track id of each box (``WorldObject.track_id``, e.g. ``"cone-12"``)."""
    projector = _Projector(camera, pose, width, height)
    rays_cam = _pixel_rays(int(width), int(height), camera)
    image, ground, factor = _background(world, projector, rays_cam, width, height)
    canvas = np.clip(image, 0, 255).astype(np.uint8)
    s_car = _car_arc_length(world, pose, s_hint)
    _road(canvas, world, projector, s_car)
    # Tree shadows (soft) and object contact shadows darken the ground; then the ground texture.
    look = world.appearance
    shade = np.zeros((height, width), np.uint8)
    visible_shadows = []
    for poly in world.shadows:
        if abs(poly[0, 0] - pose.x) + abs(poly[0, 1] - pose.y) > 90.0:
            continue
        cam = projector.to_camera(poly[:, 0], poly[:, 1], 0.0)
        if (cam[:, 2] > NEAR_M).all():
            visible_shadows.append(projector.to_pixels(cam))
    _fill(shade, visible_shadows, (255,))
    near = _near_objects(world, pose)
    contact = []
    for obj in near:
        r = max(obj.size[0], obj.size[1]) * 0.75
        ang = np.linspace(0, 2 * math.pi, 10, endpoint=False)
        cam = projector.to_camera(obj.x + r * np.cos(ang), obj.y + r * np.sin(ang), 0.0)
        if (cam[:, 2] > NEAR_M).all():
            contact.append(projector.to_pixels(cam))
    shade_f = cv2.GaussianBlur(shade, (0, 0), max(0.8, width / 320.0)).astype(np.float32) * (
        look.shadow_strength / 255.0
    )
    if contact:
        contact_mask = np.zeros((height, width), np.uint8)
        _fill(contact_mask, contact, (255,))
        shade_f = np.maximum(
            shade_f, cv2.GaussianBlur(contact_mask, (0, 0), 1.0).astype(np.float32) * (0.35 / 255)
        )
    scale = np.where(ground, factor * (1.0 - shade_f), 1.0).astype(np.float32)
    canvas = np.clip(canvas.astype(np.float32) * scale[..., None], 0, 255).astype(np.uint8)
    boxes, labels, track_ids = _draw_objects(canvas, world, projector, near, width, height)
    # Global light: contrast about mid-grey, brightness, colour cast.
    gain, contrast, cast = world.light(t)
    lut_scale = np.asarray(cast, np.float32) * gain
    out = (canvas.astype(np.float32) - 128.0) * contrast + 128.0
    out = np.clip(out * lut_scale, 0, 255)
    return out.astype(np.uint8), boxes, labels, track_ids


def _car_arc_length(world: World, pose: CarPose, s_hint: Optional[float]) -> float:
    """The car's arc length along the track, searched near ``s_hint`` (or, without it, the whole track)."""
    if s_hint is None:
        d = (world.track.x - pose.x) ** 2 + (world.track.y - pose.y) ** 2
        s_hint = float(world.track.s[int(np.argmin(d))])
    s_car, _ = world.track.locate(pose.x, pose.y, s_hint)
    return s_car


def _near_objects(world: World, pose: CarPose) -> List[WorldObject]:
    """The objects close enough to be drawn (80 m, Manhattan distance)."""
    return [o for o in world.objects if abs(o.x - pose.x) + abs(o.y - pose.y) < 80.0]


def render_drivable_mask(
    world: World,
    pose: CarPose,
    width: int = 320,
    height: int = 240,
    camera: Camera = DEFAULT_CAMERA,
    s_hint: Optional[float] = None,
) -> np.ndarray:
    """The ground-truth drivable area of ``render_frame``'s view at ``pose``: (H, W) uint8, 1 = road.

    The road surface (asphalt with its painted lines, edge to edge) is the very polygon ``render_frame``
    fills, through the same projection and over the same stretch of track (3 m behind to 70 m ahead), filled
    without anti-aliasing (a pixel is road when its centre is); every cone and box (base plate included)
    is cut out where it stands in front of the road, whether it stands on it or beside it. Sky, hills, the
    ground beside the road and the road beyond 70 m are 0. Shadows and light do not change the mask.
    """
    projector = _Projector(camera, pose, width, height)
    mask = np.zeros((int(height), int(width)), np.uint8)
    track = world.track
    s = _road_samples(track, _car_arc_length(world, pose, s_hint))
    road = _strip(projector, track, s, track.half_width, -track.half_width) if s.size >= 2 else None
    if road is None:
        return mask
    cv2.fillPoly(mask, [_fixed(road)], 1, cv2.LINE_8, _SHIFT)
    sun = (math.cos(world.appearance.sun_azimuth), math.sin(world.appearance.sun_azimuth))
    for obj in _near_objects(world, pose):
        parts = _object_parts(obj, projector, sun)
        for poly, _ in parts[2] if parts is not None else ():
            cv2.fillPoly(mask, [_fixed(poly)], 0, cv2.LINE_8, _SHIFT)  # one by one: overlaps stay filled
    return mask


def _draw_objects(
    canvas: np.ndarray,
    world: World,
    projector: _Projector,
    objects: Sequence[WorldObject],
    width: int,
    height: int,
) -> Tuple[np.ndarray, List[str], List[str]]:
    """Draw objects far to near; return the truth boxes, labels and track ids of those visible enough."""
    sun = (math.cos(world.appearance.sun_azimuth), math.sin(world.appearance.sun_azimuth))
    drawn = []
    for obj in objects:
        parts = _object_parts(obj, projector, sun)
        if parts is None:
            continue
        _, silhouette, _ = parts
        if (
            silhouette[:, 0].max() < 0
            or silhouette[:, 0].min() > width
            or silhouette[:, 1].max() < 0
            or silhouette[:, 1].min() > height
        ):
            continue
        drawn.append((obj, parts))
    drawn.sort(key=lambda item: -item[1][0])
    ids = np.zeros((height, width), np.int32)
    hulls = []
    for number, (_obj, (_, silhouette, polygons)) in enumerate(drawn, start=1):
        for poly, color in polygons:
            cv2.fillPoly(canvas, [_fixed(poly)], tuple(float(c) for c in color), cv2.LINE_AA, _SHIFT)
        hull = cv2.convexHull(silhouette.astype(np.float32))
        hulls.append(hull)
        cv2.fillPoly(ids, [_fixed(hull)], number, cv2.LINE_8, _SHIFT)
    counts = np.bincount(ids.ravel(), minlength=len(drawn) + 1)
    boxes, labels, track_ids = [], [], []
    for number, ((obj, (_, silhouette, _)), hull) in enumerate(zip(drawn, hulls), start=1):
        x0, y0 = np.clip(silhouette.min(axis=0), 0, [width, height])
        x1, y1 = np.clip(silhouette.max(axis=0), 0, [width, height])
        if x1 - x0 < MIN_BOX_PX or y1 - y0 < MIN_BOX_PX:
            continue
        area = cv2.contourArea(hull)
        if area <= 0 or counts[number] < MIN_VISIBLE_FRACTION * area:
            continue
        boxes.append([x0, y0, x1, y1])
        labels.append(obj.kind)
        track_ids.append(obj.track_id)
    return np.asarray(boxes, np.float32).reshape(-1, 4), labels, track_ids


# --------------------------------------------------------------------------------------------------- drive


@dataclass
class DriverSettings:
    """The simulated human: pure pursuit to the centre line, speed from the curvature ahead."""

    lookahead_m: float = 4.0  # plus lookahead_per_speed * speed
    lookahead_per_speed: float = 0.35
    full_lock_curvature: float = 1.0 / 5.0  # path curvature at steering = +-1
    max_speed: float = 8.0  # m/s at throttle 1
    straight_throttle: float = 0.8
    curve_throttle: float = 0.4  # at the track's maximum curvature
    preview_m: float = 12.0  # how far ahead the driver looks for curves when choosing throttle
    path_noise: float = 1.0  # scales the disturbance that pushes the car off the line
    disturbance_sigma: float = 0.03  # 1/m, steady-state std of the curvature disturbance
    disturbance_tau_s: float = 0.8
    substeps: int = 4  # simulation steps per frame


@dataclass
class _CarState:
    x: float
    y: float
    heading: float
    speed: float
    s: float
    disturbance: float = 0.0


class Drive:
    """The car driving along a world's track; iterating yields one ``Frame`` per camera period.

    ``seed`` picks the path disturbance and camera jitter (defaults to the world's seed), so one world can
    be driven several different ways. ``drivable_masks`` adds each frame's ``render_drivable_mask`` as
    ``Frame.drivable`` (the images, truth and path are the same either way).
    """

    def __init__(
        self,
        world: World,
        fps: float = 15.0,
        duration_s: float = 20.0,
        width: int = 320,
        height: int = 240,
        seed: Optional[int] = None,
        start_s: float = 4.0,
        camera: Camera = DEFAULT_CAMERA,
        driver: Optional[DriverSettings] = None,
        drivable_masks: bool = False,
    ) -> None:
        self.world = world
        self.fps = float(fps)
        self.duration_s = float(duration_s)
        self.width, self.height = int(width), int(height)
        self.seed = world.seed if seed is None else int(seed)
        self.start_s = float(start_s)
        self.camera = camera
        self.driver = driver or DriverSettings()
        self.drivable_masks = bool(drivable_masks)

    def __len__(self) -> int:
        return round(self.duration_s * self.fps)

    def command(self, state: _CarState) -> Tuple[float, float, float, float]:
        """The human command at ``state``: (steering, throttle, lateral offset, heading error)."""
        track, drv = self.world.track, self.driver
        s, lateral = track.locate(state.x, state.y, state.s)
        state.s = s
        lookahead = drv.lookahead_m + drv.lookahead_per_speed * state.speed
        tx, ty = track.point(np.asarray(s + lookahead))
        dx, dy = float(tx) - state.x, float(ty) - state.y
        left = -dx * math.sin(state.heading) + dy * math.cos(state.heading)
        dist2 = max(1e-6, dx * dx + dy * dy)
        curvature = 2.0 * left / dist2  # pure pursuit
        steering = float(np.clip(-curvature / drv.full_lock_curvature, -1.0, 1.0))
        ahead = track.curvature[int(s / track.ds) : int((s + drv.preview_m) / track.ds) + 1]
        sharp = float(np.max(np.abs(ahead))) / track.max_curvature if ahead.size else 0.0
        throttle = drv.straight_throttle - (drv.straight_throttle - drv.curve_throttle) * min(1.0, sharp)
        heading_error = math.atan2(
            math.sin(state.heading - track.heading_at(s)), math.cos(state.heading - track.heading_at(s))
        )
        return steering, float(np.clip(throttle, 0.0, 1.0)), lateral, heading_error

    def __iter__(self) -> Iterator[Frame]:
        track, drv = self.world.track, self.driver
        rng = np.random.default_rng([self.world.seed, self.seed, 2])
        n = len(self)
        steps = n * drv.substeps + 1
        dt = 1.0 / (self.fps * drv.substeps)
        pitch = smooth_noise(rng, int(steps * dt / 0.7) + 2, 0.7, steps, dt) * math.radians(0.8)
        roll = smooth_noise(rng, int(steps * dt / 1.1) + 2, 1.1, steps, dt) * math.radians(1.2)
        lateral0 = float(rng.uniform(-0.4, 0.4))
        x0, y0 = track.point(np.asarray(self.start_s), np.asarray(lateral0))
        state = _CarState(
            float(x0),
            float(y0),
            track.heading_at(self.start_s) + float(rng.uniform(-0.08, 0.08)),
            drv.max_speed * drv.straight_throttle,
            self.start_s,
        )
        step = 0
        for index in range(n):
            steering, throttle, lateral, heading_error = self.command(state)
            pose = CarPose(state.x, state.y, state.heading, float(pitch[step]), float(roll[step]))
            image, boxes, labels, track_ids = render_frame_tracked(
                self.world, pose, self.width, self.height, index / self.fps, self.camera, s_hint=state.s
            )
            drivable = (
                render_drivable_mask(self.world, pose, self.width, self.height, self.camera, s_hint=state.s)
                if self.drivable_masks
                else None
            )
            yield Frame(
                image,
                steering,
                throttle,
                boxes,
                labels,
                index / self.fps,
                index,
                lateral,
                heading_error,
                track.curvature_at(state.s),
                drivable,
                track_ids,
            )
            for _ in range(drv.substeps):
                steering, throttle, _, _ = self.command(state)
                a = math.exp(-dt / drv.disturbance_tau_s)
                state.disturbance = a * state.disturbance + math.sqrt(
                    1 - a * a
                ) * drv.disturbance_sigma * drv.path_noise * float(rng.normal())
                path_curvature = -steering * drv.full_lock_curvature + state.disturbance
                state.speed += (drv.max_speed * throttle - state.speed) * min(1.0, dt / 0.5)
                state.heading += state.speed * path_curvature * dt
                state.x += state.speed * math.cos(state.heading) * dt
                state.y += state.speed * math.sin(state.heading) * dt
                step += 1
            if state.s > track.length - 30.0:
                break


def drive_frames(
    seed: int,
    duration_s: float = 20.0,
    fps: float = 15.0,
    width: int = 320,
    height: int = 240,
    drive_seed: Optional[int] = None,
) -> List[Frame]:
    """Convenience: every frame of one drive through ``World(seed)``."""
    return list(
        Drive(World(seed), fps=fps, duration_s=duration_s, width=width, height=height, seed=drive_seed)
    )


__all__ = [
    "CLASSES",
    "DEFAULT_CAMERA",
    "MIN_BOX_PX",
    "Appearance",
    "Camera",
    "CarPose",
    "Drive",
    "DriverSettings",
    "Frame",
    "Track",
    "World",
    "WorldObject",
    "drive_frames",
    "render_drivable_mask",
    "render_frame",
    "render_frame_tracked",
    "smooth_noise",
]
