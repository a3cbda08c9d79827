"""SSD anchors: the TF Object Detection API / GridAnchor_TRT grid generator, and anchor files.

Anchors are (A, 4) float32 arrays of normalized [cx, cy, w, h] in model-input space, in the order the
model's heads emit their predictions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception.errors import SpecError

FeatureMap = Union[int, Sequence[int]]


def layer_box_specs(
    num_layers: int,
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0),
    reduce_boxes_in_lowest_layer: bool = True,
    interpolated_scale_aspect_ratio: float = 1.0,
    scales: Optional[Sequence[float]] = None,
) -> List[List[Tuple[float, float]]]:
    """Per layer, the (scale, aspect ratio) pairs placed at every grid cell, in output order.

    Same rule as TF OD API ``create_ssd_anchors``: layer scales interpolate linearly from ``min_scale``
    to ``max_scale``; the lowest layer (if reduced) gets (0.1, 1.0), (s, 2.0), (s, 0.5); every other layer
    gets each aspect ratio at its scale, then (sqrt(s * s_next), interpolated_scale_aspect_ratio) with
    s_next = 1.0 after the last layer (omitted when that ratio is 0).
    """
    if scales:
        layer_scales = [float(s) for s in scales] + [1.0]
    elif num_layers == 1:
        layer_scales = [float(min_scale), 1.0]
    else:
        layer_scales = [min_scale + (max_scale - min_scale) * i / (num_layers - 1) for i in range(num_layers)]
        layer_scales.append(1.0)
    specs = []
    for layer in range(num_layers):
        scale, scale_next = layer_scales[layer], layer_scales[layer + 1]
        if layer == 0 and reduce_boxes_in_lowest_layer:
            specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
            continue
        boxes = [(scale, float(ratio)) for ratio in aspect_ratios]
        if interpolated_scale_aspect_ratio > 0.0:
            boxes.append((math.sqrt(scale * scale_next), float(interpolated_scale_aspect_ratio)))
        specs.append(boxes)
    return specs


def grid_anchors(
    feature_maps: Sequence[FeatureMap],
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0),
    reduce_boxes_in_lowest_layer: bool = True,
    interpolated_scale_aspect_ratio: float = 1.0,
    scales: Optional[Sequence[float]] = None,
    image_size: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """SSD grid anchors as (A, 4) float32 normalized [cx, cy, w, h].

    Algorithm of TF Object Detection API ``anchor_generators/multiple_grid_anchor_generator.py``
    (``create_ssd_anchors`` + ``MultipleGridAnchorGenerator._generate`` +
    ``grid_anchor_generator.tile_anchors``),
    which TensorRT's GridAnchor_TRT plugin reproduces for the UFF SSD engines
    (``plugin/gridAnchorPlugin/gridAnchorPlugin.cpp`` and ``plugin/common/kernels/gridAnchorLayer.cu``):

    - layer l of an H x W feature map has stride (1/H, 1/W) and offset half a stride, so cell (i, j) is
      centred at ((j + 0.5) / W, (i + 0.5) / H);
    - a (scale, aspect ratio) pair gives h = scale / sqrt(ar), w = scale * sqrt(ar); for a non-square
      ``image_size`` (height, width) TF shrinks the longer side so the anchor stays square in pixels
      (h *= min(H, W) / H, w *= min(H, W) / W); GridAnchor_TRT assumes a square input, where both agree;
    - order: layers in ``feature_maps`` order (finest first), then rows (y), then columns (x), then the
      layer's box specs (fastest), as TF documents ("box_spec index varying the fastest, followed by width
      index, then height index, then grid index") and the TensorRT kernel writes (tid = cell * nPriors + ar).
    - no clipping (neither implementation clips by default).

    The standard SSD-MobileNet v1/v2 COCO 300x300 config (maps 19, 10, 5, 3, 2, 1; scales 0.2..0.95; ratios
    1, 2, 0.5, 3, 1/3) gives 19*19*3 + (10*10 + 5*5 + 3*3 + 2*2 + 1) * 6 = 1917 anchors.
    ``feature_maps`` entries are an int (square map) or [height, width].
    """
    shapes = []
    for item in feature_maps:
        if isinstance(item, (int, np.integer)):
            shapes.append((int(item), int(item)))
        else:
            height, width = item
            shapes.append((int(height), int(width)))
    specs = layer_box_specs(
        len(shapes),
        min_scale,
        max_scale,
        aspect_ratios,
        reduce_boxes_in_lowest_layer,
        interpolated_scale_aspect_ratio,
        scales,
    )
    scale_h = scale_w = 1.0
    if image_size is not None:
        short_side = float(min(image_size))
        scale_h, scale_w = short_side / float(image_size[0]), short_side / float(image_size[1])
    layers = []
    for (height, width), layer_specs in zip(shapes, specs):
        box_scales = np.array([s for s, _ in layer_specs], np.float64)
        ratios = np.sqrt(np.array([r for _, r in layer_specs], np.float64))
        box_h = box_scales / ratios * scale_h
        box_w = box_scales * ratios * scale_w
        cy, cx = np.meshgrid(
            (np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width, indexing="ij"
        )
        k = len(layer_specs)
        layer = np.empty((height, width, k, 4), np.float64)
        layer[..., 0] = cx[..., None]
        layer[..., 1] = cy[..., None]
        layer[..., 2] = box_w
        layer[..., 3] = box_h
        layers.append(layer.reshape(-1, 4))
    return np.concatenate(layers, axis=0).astype(np.float32)


def load_anchor_file(path: Path, key: str = "output.anchors.file") -> np.ndarray:
    """A ``.npy`` of normalized [cx, cy, w, h] anchors, (A, 4) or (1, A, 4), checked for shape and values."""
    if not path.is_file():
        raise SpecError(
            f"{key} is {str(path)!r}, which does not exist; fix: give the .npy anchors file "
            "(relative paths are resolved from the spec file's folder)"
        )
    try:
        anchors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SpecError(
            f"{key}: {path} is not a readable .npy file ({exc}); fix: save it with numpy.save"
        ) from None
    if anchors.ndim == 3 and anchors.shape[0] == 1:
        anchors = anchors[0]
    if anchors.ndim != 2 or anchors.shape[1] != 4 or anchors.shape[0] == 0 or anchors.dtype.kind not in "fiu":
        raise SpecError(
            f"{key}: {path} holds a {anchors.dtype} array of shape {anchors.shape}; expected "
            "(A, 4) numbers: normalized [cx, cy, w, h] per anchor"
        )
    anchors = anchors.astype(np.float32)
    if not np.isfinite(anchors).all() or (anchors[:, 2:] <= 0).any():
        raise SpecError(
            f"{key}: {path} has non-finite values or non-positive widths/heights; expected "
            "normalized [cx, cy, w, h] rows with w, h > 0 (corner boxes need converting first)"
        )
    return anchors
