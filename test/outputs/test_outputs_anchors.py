"""SSD grid anchors (TF OD API multiple_grid_anchor_generator / GridAnchor_TRT) and anchor files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from trt_perception.errors import SpecError
from trt_perception.outputs.anchors import grid_anchors, layer_box_specs, load_anchor_file

SSD_MOBILENET_MAPS = [19, 10, 5, 3, 2, 1]


def test_ssd_mobilenet_coco_has_1917_anchors() -> None:
    anchors = grid_anchors(SSD_MOBILENET_MAPS)
    assert anchors.shape == (1917, 4) and anchors.dtype == np.float32
    assert 19 * 19 * 3 + (100 + 25 + 9 + 4 + 1) * 6 == 1917


def test_spot_values_derived_by_hand() -> None:
    a = grid_anchors(SSD_MOBILENET_MAPS, aspect_ratios=[1.0, 2.0, 0.5, 3.0, 1.0 / 3.0]).astype(np.float64)
    # layer scales: 0.2 + 0.75 * i / 5 -> 0.2, 0.35, 0.5, 0.65, 0.8, 0.95
    c = 0.5 / 19
    np.testing.assert_allclose(a[0], [c, c, 0.1, 0.1], rtol=1e-6)  # lowest layer: (0.1, 1.0)
    np.testing.assert_allclose(a[1], [c, c, 0.2 * math.sqrt(2), 0.2 / math.sqrt(2)], rtol=1e-6)  # (0.2, 2.0)
    np.testing.assert_allclose(a[2], [c, c, 0.2 / math.sqrt(2), 0.2 * math.sqrt(2)], rtol=1e-6)  # (0.2, 0.5)
    np.testing.assert_allclose(a[3, :2], [1.5 / 19, c], rtol=1e-6)  # next cell along x: x varies before y
    np.testing.assert_allclose(a[3 * 19, :2], [c, 1.5 / 19], rtol=1e-6)  # first cell of the second row
    first = 19 * 19 * 3  # layer 1: 10x10 map, scale 0.35, next 0.5, 6 boxes per cell
    np.testing.assert_allclose(a[first], [0.05, 0.05, 0.35, 0.35], rtol=1e-6)
    np.testing.assert_allclose(
        a[first + 3], [0.05, 0.05, 0.35 * math.sqrt(3), 0.35 / math.sqrt(3)], rtol=1e-6
    )
    np.testing.assert_allclose(a[first + 5, 2:], [math.sqrt(0.35 * 0.5)] * 2, rtol=1e-6)  # interpolated scale
    np.testing.assert_allclose(a[first + 6, :2], [0.15, 0.05], rtol=1e-6)
    np.testing.assert_allclose(a[first + 60, :2], [0.05, 0.15], rtol=1e-6)
    np.testing.assert_allclose(a[-1], [0.5, 0.5, math.sqrt(0.95), math.sqrt(0.95)], rtol=1e-6)  # s_next = 1.0
    np.testing.assert_allclose(a[-6], [0.5, 0.5, 0.95, 0.95], rtol=1e-6)


def test_box_specs_follow_create_ssd_anchors() -> None:
    specs = layer_box_specs(3, 0.2, 0.8, [1.0, 2.0], interpolated_scale_aspect_ratio=0.0)
    assert specs[0] == [(0.1, 1.0), (0.2, 2.0), (0.2, 0.5)]
    assert specs[1] == [(0.5, 1.0), (0.5, 2.0)]
    specs = layer_box_specs(2, 0.2, 0.8, [1.0], reduce_boxes_in_lowest_layer=False)
    assert specs[0] == [(0.2, 1.0), (math.sqrt(0.2 * 0.8), 1.0)]
    assert layer_box_specs(2, scales=[0.3, 0.6], aspect_ratios=[1.0])[1] == [
        (0.6, 1.0),
        (math.sqrt(0.6), 1.0),
    ]
    assert layer_box_specs(1, 0.4, 0.9, [1.0], reduce_boxes_in_lowest_layer=False)[0][0] == (0.4, 1.0)


def test_rectangular_maps_and_non_square_inputs() -> None:
    a = grid_anchors(
        [[2, 3]], aspect_ratios=[1.0], reduce_boxes_in_lowest_layer=False, interpolated_scale_aspect_ratio=0.0
    )
    np.testing.assert_allclose(a[:, 0], [1 / 6, 3 / 6, 5 / 6] * 2, rtol=1e-6)
    np.testing.assert_allclose(a[:, 1], [0.25] * 3 + [0.75] * 3, rtol=1e-6)
    wide = grid_anchors(
        [1],
        min_scale=0.5,
        aspect_ratios=[1.0],
        reduce_boxes_in_lowest_layer=False,
        interpolated_scale_aspect_ratio=0.0,
        image_size=(300, 600),
    )
    np.testing.assert_allclose(wide[0], [0.5, 0.5, 0.25, 0.5], rtol=1e-6)  # square in pixels: 150 x 150


def test_anchor_file(tmp_path: Path) -> None:
    anchors = grid_anchors([2])
    np.save(tmp_path / "a.npy", anchors[None])
    np.testing.assert_array_equal(load_anchor_file(tmp_path / "a.npy"), anchors)
    with pytest.raises(SpecError, match=r"output\.anchors\.file.*missing\.npy.*does not exist"):
        load_anchor_file(tmp_path / "missing.npy")
    np.save(tmp_path / "bad.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(SpecError, match=r"bad\.npy.*shape \(5, 3\)"):
        load_anchor_file(tmp_path / "bad.npy")
    corners = np.array([[0.1, 0.1, 0.0, 0.0]], np.float32)
    np.save(tmp_path / "corners.npy", corners)
    with pytest.raises(SpecError, match="non-positive widths"):
        load_anchor_file(tmp_path / "corners.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(SpecError, match=r"text\.npy is not a readable \.npy"):
        load_anchor_file(tmp_path / "text.npy")
