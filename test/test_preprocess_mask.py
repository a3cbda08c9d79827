"""ImageTransform.mask_to_source: a class map over the model input -> the source frame's mask.

Hand-derived cases for letterbox, stretch, crop top/bottom and stride heads; an independent reference built
from the box mapping (``boxes_to_source`` of every map pixel edge) for many geometries; and the round trip
through ``Preprocessor`` (draw in the source frame, segment the tensor, get the drawing back). The same
round trip through real ONNX / TensorRT-double segmenters is in test/outputs/test_outputs_segmentation.py.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import threading
import tracemalloc
from typing import Any, Tuple

import numpy as np
import pytest

from trt_perception.images import DecodedImage
from trt_perception.preprocess import ImageTransform, Preprocessor, _geometry
from trt_perception.results import SegmentationMask
from trt_perception.spec import InputSpec

UNSEEN = SegmentationMask.UNSEEN


def transform_of(src: Tuple[int, int], **spec: Any) -> ImageTransform:
    """The transform the preprocessor uses for a (height, width) frame and an input spec."""
    fields = {"name": "images", "height": 256, "width": 256}
    fields.update(spec)
    return _geometry(InputSpec(**fields), *src).transform


def reference(transform: ImageTransform, class_map: np.ndarray) -> np.ndarray:
    """The mask by way of the box mapping: every map pixel edge -> a source edge (``boxes_to_source``'s
    formula, unclipped); a source pixel takes the map pixel its centre lies in, on an edge the lower one."""
    t = transform
    height, width = class_map.shape
    fx, fy = width / (t.model_width or width), height / (t.model_height or height)
    col_edges = (np.arange(width + 1) / fx - t.pad_x) / t.scale_x
    row_edges = (np.arange(height + 1) / fy - t.pad_y) / t.scale_y + t.crop_top
    centres_x = np.arange(t.src_width) + 0.5
    centres_y = np.arange(t.src_height) + 0.5
    cols = np.clip(np.searchsorted(col_edges, centres_x - 1e-9) - 1, 0, width - 1)
    rows = np.clip(np.searchsorted(row_edges, centres_y - 1e-9) - 1, 0, height - 1)
    mask = class_map[rows[:, None], cols[None, :]]
    mask[: round(t.crop_top)] = UNSEEN
    mask[t.src_height - round(t.crop_bottom) :] = UNSEEN
    return mask


def test_letterbox_640x480_to_256_hand_derived() -> None:
    """scale 0.4, picture 256x192 at rows 32..224; map rows 32+20..32+60, cols 40..100 = source 100..250 x 50..150."""
    t = transform_of((480, 640), resize="letterbox")
    assert (t.scale_x, t.scale_y, t.pad_x, t.pad_y, t.model_width, t.model_height) == (0.4, 0.4, 0, 32, 256, 256)
    class_map = np.full((256, 256), 9, np.uint8)  # the border's class must never show up
    class_map[32:224] = 0
    class_map[52:92, 40:100] = 1
    mask = t.mask_to_source(class_map)
    expected = np.zeros((480, 640), np.uint8)
    expected[50:150, 100:250] = 1
    np.testing.assert_array_equal(mask, expected)


def test_stretch_with_donkeycar_crop_top() -> None:
    """120x160 model, crop.top 40 model rows = 120 of 480 source rows; model rows 40..60 x cols 80..160 are
    source rows 120 + 120..180 x cols 320..640; the cropped rows are UNSEEN."""
    t = transform_of((480, 640), height=120, width=160, crop_top=40)
    assert (t.crop_top, t.crop_bottom, t.scale_x, t.scale_y) == (120.0, 0.0, 0.25, 120 / 360)
    class_map = np.zeros((120, 160), np.uint8)
    class_map[40:60, 80:160] = 3
    mask = t.mask_to_source(class_map)
    expected = np.zeros((480, 640), np.uint8)
    expected[:120] = UNSEEN
    expected[240:300, 320:640] = 3
    np.testing.assert_array_equal(mask, expected)


def test_crop_top_and_bottom_are_unseen() -> None:
    """crop 20 + 30 of 150 model rows on a 300-row frame = 40 and 60 source rows; 200 rows -> 100 (x0.5)."""
    t = transform_of((300, 200), height=100, width=100, crop_top=20, crop_bottom=30)
    assert (t.crop_top, t.crop_bottom, t.scale_y, t.scale_x) == (40.0, 60.0, 0.5, 0.5)
    class_map = np.arange(100, dtype=np.uint8)[:, None].repeat(100, 1)  # class = model row
    mask = t.mask_to_source(class_map)
    assert (mask[:40] == UNSEEN).all() and (mask[240:] == UNSEEN).all()
    np.testing.assert_array_equal(mask[40:240, 7], np.arange(200) // 2)


def test_stride_8_head_on_letterbox() -> None:
    """A 32x32 map of a 256x256 input: one cell = 8 model px = 20 source px; the border is 4 map rows."""
    t = transform_of((480, 640), resize="letterbox")
    class_map = np.full((32, 32), 7, np.uint8)
    class_map[4:28] = 0
    class_map[6:9, 5:10] = 2  # content rows 16..40 model = 40..100 source; cols 40..80 model = 100..200
    mask = t.mask_to_source(class_map)
    expected = np.zeros((480, 640), np.uint8)
    expected[40:100, 100:200] = 2
    np.testing.assert_array_equal(mask, expected)


GEOMETRIES = [
    # (source height, width), spec fields, map (height, width)
    ((480, 640), {"resize": "letterbox"}, (256, 256)),
    ((480, 640), {"resize": "letterbox", "crop_top": 20, "crop_bottom": 10}, (256, 256)),
    ((480, 640), {"height": 300, "width": 300, "resize": "letterbox"}, (75, 75)),  # stride 4, pad 37 = 9.25
    ((480, 640), {"height": 300, "width": 300, "resize": "letterbox"}, (38, 38)),  # stride 8, ceil
    ((480, 640), {"height": 256, "width": 512, "crop_top": 40}, (32, 64)),
    ((480, 640), {"height": 256, "width": 512}, (256, 512)),
    ((375, 500), {"height": 224, "width": 224, "resize": "letterbox"}, (28, 28)),
    ((1080, 1920), {"height": 300, "width": 300, "resize": "letterbox"}, (300, 300)),
    ((720, 1280), {"height": 120, "width": 160, "crop_top": 40, "crop_bottom": 8}, (120, 160)),
    ((97, 131), {"height": 64, "width": 48, "resize": "letterbox", "crop_top": 3}, (64, 48)),  # odd sizes
    ((120, 160), {"height": 256, "width": 256, "resize": "letterbox"}, (256, 256)),  # upscaled picture
]


@pytest.mark.parametrize(("src", "spec", "map_size"), GEOMETRIES)
def test_matches_the_box_mapping_reference(src: Tuple[int, int], spec: Any, map_size: Tuple[int, int]) -> None:
    t = transform_of(src, **spec)
    class_map = np.random.default_rng(sum(map_size)).integers(0, 200, map_size).astype(np.uint8)
    np.testing.assert_array_equal(t.mask_to_source(class_map), reference(t, class_map))


def test_preprocess_round_trip_gives_back_the_drawing() -> None:
    """Draw in the source frame, 'segment' the model tensor by brightness, map back: the same pixels."""
    source = np.zeros((480, 640, 3), np.uint8)
    source[50:150, 100:250] = 255  # edges multiples of 5 source px = whole model px at 0.4
    source[300:480, 0:45] = 255
    spec = InputSpec(name="images", height=256, width=256, resize="letterbox", interpolation="nearest")
    tensor, t = Preprocessor(spec)(DecodedImage(source, "bgr"))
    class_map = (tensor[0, 0] > 127).astype(np.uint8)
    mask = t.mask_to_source(class_map)
    np.testing.assert_array_equal(mask, (source[:, :, 0] > 127).astype(np.uint8))


def test_out_buffer_is_reused_and_checked() -> None:
    t = transform_of((48, 64), height=32, width=32, resize="letterbox")
    out = np.full((48, 64), 77, np.uint8)
    class_map = np.ones((32, 32), np.uint8)
    assert t.mask_to_source(class_map, out=out) is out
    assert (out == 1).all()
    for bad in (np.empty((64, 48), np.uint8), np.empty((48, 64), np.int32), np.empty((48, 128), np.uint8)[:, ::2]):
        with pytest.raises(ValueError, match=r"mask buffer.*expected a C-contiguous \(48, 64\) uint8"):
            t.mask_to_source(class_map, out=bad)
    with pytest.raises(ValueError, match=r"class map has shape \(1, 32, 32\).*2-D uint8"):
        t.mask_to_source(class_map[None])
    with pytest.raises(ValueError, match=r"dtype int64"):
        t.mask_to_source(class_map.astype(np.int64))


def test_hand_built_transform_without_model_size_takes_the_map_at_model_size() -> None:
    """Transforms built by hand (seven fields, as before) still work: the map is taken to be model-sized."""
    t = ImageTransform(src_width=8, src_height=6, scale_x=0.5, scale_y=0.5, pad_x=1.0, pad_y=0.0, crop_top=2.0)
    class_map = np.array([[9, 1, 2, 3, 4, 9], [9, 5, 6, 7, 8, 9]], np.uint8)  # pad_x 1 on each side
    mask = t.mask_to_source(class_map)
    np.testing.assert_array_equal(mask[:2], UNSEEN)
    np.testing.assert_array_equal(mask[2:], np.repeat(np.repeat(class_map[:, 1:5], 2, 0), 2, 1))


def test_no_allocation_per_frame_and_plans_cached_per_map_size() -> None:
    t = transform_of((480, 640), resize="letterbox", crop_top=10)
    class_map = np.zeros((64, 64), np.uint8)
    out = np.empty((480, 640), np.uint8)
    t.mask_to_source(class_map, out=out)
    plans = dict(t._mask_plans)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            t.mask_to_source(class_map, out=out)
        grown = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert grown < 2000  # Python-level bookkeeping only: nothing frame-sized (a frame is 307 kB)
    assert t._mask_plans == plans and list(plans) == [(64, 64)]
    assert t == transform_of((480, 640), resize="letterbox", crop_top=10)  # caches do not affect equality
    assert hash(t) == hash(transform_of((480, 640), resize="letterbox", crop_top=10))


def test_one_transform_serves_several_threads() -> None:
    t = transform_of((480, 640), resize="letterbox")
    maps = [np.full((256, 256), k, np.uint8) for k in range(4)]
    failures = []

    def work(k: int) -> None:
        out = np.empty((480, 640), np.uint8)
        for _ in range(30):
            if not (t.mask_to_source(maps[k], out=out) == k).all():
                failures.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_transforms_with_cached_plans_still_copy_and_pickle() -> None:
    t = transform_of((480, 640), resize="letterbox", crop_top=10)
    class_map = np.random.default_rng(7).integers(0, 9, (64, 64)).astype(np.uint8)
    expected = t.mask_to_source(class_map)
    for other in (copy.deepcopy(t), pickle.loads(pickle.dumps(t)), dataclasses.replace(t)):
        assert other == t
        np.testing.assert_array_equal(other.mask_to_source(class_map), expected)
    assert dataclasses.asdict(t)["crop_top"] == t.crop_top
