"""``yolo``, ``yolov5`` and ``yolox``: one-tensor YOLO heads (boxes + scores per grid point), NMS on the CPU.

Formats (the exporters' own code: ultralytics engine/exporter.py + nn/modules/head.py, ultralytics/yolov5
export.py + models/yolo.py, Megvii YOLOX tools/export_onnx.py + yolox/utils/demo_utils.py):

- ``yolo`` (Ultralytics YOLOv5u/v8/v9/v11/v12 detect): ``output0`` [B, 4+C, N] (the export's channels-first
  layout) or transposed [B, N, 4+C]; per grid point cx, cy, w, h in input pixels then C class scores
  (sigmoid already applied); no objectness. Score = the best class score.
- ``yolov5`` (YOLOv5/v7 anchor heads): [B, N, 5+C]: cx, cy, w, h (pixels), objectness, C class scores;
  score = objectness * class score.
- ``yolox``: [B, N, 5+C] like yolov5. With ``decode: true`` (a model exported WITHOUT
  ``--decode_in_inference``) xy are grid offsets and wh log sizes, decoded as YOLOX's ``demo_postprocess``
  does, for the candidates only: ``xy = (xy + grid) * stride``, ``wh = exp(wh) * stride``, the grid being
  every (x, y) cell of each stride level (``strides``, default [8, 16, 32]; P6 models [8, 16, 32, 64]), level
  by level, row-major, for the spec's input height and width (``H // stride`` x ``W // stride`` cells), built
  once at construction.

N is never assumed: any input size, and outputs whose N is dynamic, are read from the frame's actual shape.
A rank-2 output ([4+C, N] or [N, 4+C], implicit batch) is accepted too; batch item 0 is read. A YOLOv8-seg
style export (a mask-prototype output beside the predictions) is refused: its mask coefficients are not classes.

Parameters (all formats): ``layout`` auto | channels_first | channels_last (yolo: auto; yolov5, yolox:
channels_last), ``num_classes`` (null: from the shape), ``class_agnostic`` (false: NMS per class; true: across
classes, as YOLOX's demo does by default), ``normalized`` (false: boxes in input pixels; true: in 0..1 of the
input width/height, scaled here). yolox adds ``decode`` (false) and ``strides``.

``layout: auto`` decides which of the last two dims holds the 4(+1)+C channels, from the model's declared
shape at load time (or, when those dims are dynamic, from the first frame's actual shape), in this order:

1. the class count is known (``num_classes``, else ``detection.labels``: ``first_label_id + len(labels)``
   columns, so that every label lines up with its column): the dim equal to 4(+1)+C is the channel dim;
2. else the dim equal to the number of grid points of the spec's input size (sum of (H/s)*(W/s) over strides
   8/16/32 or 8/16/32/64, times 3 anchors for yolov5) is N;
3. else the smaller dim is the channel dim (N = 8400 vs 4+C = 84 at 640x640: N is larger for any input of
   practical size).
Both dims equal (e.g. 84 channels and N = 84 at 64x64) is ambiguous: the parser refuses and asks for
``layout``. A channel count that disagrees with ``num_classes``/the labels is refused at load time.

Classes: one class per box, the best-scoring one (Ultralytics' and YOLOv5's ``non_max_suppression`` with
``multi_label=False``, YOLOX's class-agnostic path). The class id is the score's COLUMN INDEX (0..C-1), so
``detection.labels`` lists one label per column with ``first_label_id: 0``. The class allow-list keeps the
boxes whose best class is allowed, before NMS (Ultralytics' ``classes=``): a box whose best class is not
allowed is dropped, not reported as its second-best class.

Speed: per frame, only the score maximum touches all N points; boxes are built for the candidates above the
score threshold only. With objectness, ``obj >= threshold`` selects the candidates (class scores are <= 1,
so obj * cls >= threshold implies obj >= threshold), so only one column is read for all N. NMS is OpenCV's
batched NMS on the candidates (``prefix_nms``: exact, but tried on the best-scored few hundred first), then
``nms.finalize`` (threshold, allow-list, sort, cap). Boxes come out in model-input pixels; the pipeline undoes
the letterbox.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import OutputError, SpecError
from trt_perception.outputs.base import DetectionSettings, OutputParser, RawDetections
from trt_perception.outputs.checks import (
    bad_param,
    check_params,
    check_roles,
    check_tensor,
    find_output,
    frame_output,
    known,
    param_bool,
    param_choice,
    param_optional_int,
)
from trt_perception.outputs.nms import batched_nms, finalize
from trt_perception.spec import ModelSpec

LAYOUTS = ("auto", "channels_first", "channels_last")
GRID_STRIDES = ((8, 16, 32), (8, 16, 32, 64))  # the stride sets 'layout: auto' recognises N by


def prefix_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float, max_detections: int
) -> np.ndarray:
    """``nms.batched_nms`` for many candidates, exactly: NMS on the best-scored prefix first.

    Greedy NMS visits boxes by descending score and only a kept, higher-scored box suppresses, so NMS of the
    best M candidates keeps exactly the full result's boxes among those M. Once it keeps ``max_detections``,
    they are the answer; else M grows (x4) up to every candidate. OpenCV's NMS is quadratic in the candidates
    (8400 boxes: ~0.2 s on one core), so a low score threshold costs milliseconds instead of a frame.
    """
    count = int(scores.shape[0])
    limit = max(256, 4 * int(max_detections))
    if max_detections <= 0 or count <= limit:
        return batched_nms(boxes, scores, class_ids, iou_threshold, max_detections)
    order = np.argsort(-scores, kind="stable")
    while True:
        prefix = order[:limit]
        kept = batched_nms(boxes[prefix], scores[prefix], class_ids[prefix], iou_threshold, max_detections)
        if kept.shape[0] >= max_detections or limit >= count:
            return prefix[kept]
        limit *= 4


def grid_points(height: int, width: int, strides: Sequence[int]) -> int:
    """Grid points of a YOLO head for an input size: sum over strides of (H // s) * (W // s)."""
    return sum((height // s) * (width // s) for s in strides)


def yolox_grids(height: int, width: int, strides: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 2) grid cell (x, y) and (N, 1) stride per YOLOX output row, in the order demo_postprocess uses."""
    grids = []
    expanded = []
    for stride in strides:
        rows, cols = height // stride, width // stride
        yv, xv = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        grids.append(np.stack([xv.ravel(), yv.ravel()], axis=1))
        expanded.append(np.full((rows * cols, 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


class YoloParser(OutputParser):
    """Ultralytics YOLOv5u/v8/v9/v11/v12 detect head: [B, 4+C, N] or [B, N, 4+C], no objectness."""

    format = "yolo"
    roles = ("predictions",)
    objectness = False
    anchors_per_point = 1
    defaults: Dict[str, Any] = {"layout": "auto", "num_classes": None, "class_agnostic": False, "normalized": False}

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        check_roles(spec, self.roles)
        params = check_params(spec, self.defaults)
        self.params = params
        self.layout = param_choice(params, "layout", LAYOUTS)
        self.num_classes = param_optional_int(params, "num_classes", 1)
        self.class_agnostic = param_bool(params, "class_agnostic")
        self.normalized = param_bool(params, "normalized")
        self.box_columns = 5 if self.objectness else 4
        self.input_size = (int(spec.input.height), int(spec.input.width))
        self._scale = np.array([spec.input.width, spec.input.height] * 2, np.float32)
        self._expected_classes, self._classes_source = self._class_count_hint(spec)
        self._grid_counts = {
            grid_points(spec.input.height, spec.input.width, s) * self.anchors_per_point for s in GRID_STRIDES
        }
        self._shapes: Dict[Tuple[int, ...], Tuple[str, int]] = {}

    # ------------------------------------------------------------------------------------------ layout

    def _class_count_hint(self, spec: ModelSpec) -> Tuple[Optional[int], str]:
        if self.num_classes is not None:
            return self.num_classes, f"output.num_classes = {self.num_classes}"
        labels = spec.detection.labels
        first = spec.detection.first_label_id
        if labels and first >= 0:
            count = first + len(labels)
            origin = f" from first_label_id {first}" if first else ""
            return count, f"detection.labels ({len(labels)} labels{origin}: {count} class columns)"
        return None, ""

    @property
    def channel_text(self) -> str:
        return "4 + C (cx, cy, w, h, C class scores)" if not self.objectness else (
            "5 + C (cx, cy, w, h, objectness, C class scores)"
        )

    def _where(self, name: str) -> str:
        return f"model output {name!r} (output.tensors.predictions, format {self.format!r})"

    def resolve_layout(
        self, dims: Sequence[Optional[int]], name: str, final: bool
    ) -> Optional[Tuple[str, int]]:
        """(layout, class count) for the last two dims of the predictions; None when they are not known yet.

        ``final``: the dims are a frame's actual shape (dynamic dims resolved), so a decision must be made.
        """
        a, b = (int(d) if known(d) else None for d in dims)
        box = self.box_columns
        expected = None if self._expected_classes is None else box + self._expected_classes
        shape_text = f"[..., {'?' if a is None else a}, {'?' if b is None else b}]"
        layout = self.layout
        if layout == "auto":
            layout = self._auto_layout(a, b, expected, name, shape_text)
            if layout is None:
                if final:  # pragma: no cover - a frame's shape is always known
                    raise SpecError(f"{self._where(name)} has no shape to decide its layout from")
                return None
        channels = a if layout == "channels_first" else b
        if channels is None:
            return None
        if expected is not None and channels != expected:
            raise SpecError(
                f"{self._where(name)} has shape {shape_text}: {channels} channels in its {layout} dim, but "
                f"{self._classes_source} means {box} + {self._expected_classes} = {expected}; the format "
                f"expects {self.channel_text}; fix: set output.num_classes to the model's class count "
                f"({channels - box}) and give one label per class column, or set output.layout if the dims "
                "are the other way round"
            )
        if channels <= box:
            raise SpecError(
                f"{self._where(name)} has shape {shape_text}: {channels} channels in its {layout} dim leaves "
                f"no class scores; the format expects {self.channel_text}; fix: set output.layout "
                "(channels_first: [B, channels, N]; channels_last: [B, N, channels]) or pick the output.format "
                "this model speaks (trt-perception inspect)"
            )
        return layout, channels - box

    def _auto_layout(
        self, a: Optional[int], b: Optional[int], expected: Optional[int], name: str, shape_text: str
    ) -> Optional[str]:
        ambiguous = SpecError(
            f"{self._where(name)} has shape {shape_text}: output.layout auto cannot tell the channel dim "
            f"({self.channel_text}) from the point dim N; fix: set output.layout: channels_first "
            "(Ultralytics export, [B, 4+C, N]) or channels_last ([B, N, channels])"
        )
        if expected is not None:
            if a == expected and b == expected:
                raise ambiguous
            if a == expected:
                return "channels_first"
            if b == expected:
                return "channels_last"
            if a is not None and b is not None:
                raise SpecError(
                    f"{self._where(name)} has shape {shape_text}: neither dim is {self.box_columns} + "
                    f"{self._expected_classes} = {expected} channels ({self._classes_source}); the format expects "
                    f"{self.channel_text}; fix: set output.num_classes to the model's class count and give one "
                    "label per class column (or map predictions to the right tensor)"
                )
            # one dim unknown: the known one is not the channel dim, so it is N
            return "channels_last" if a is not None else ("channels_first" if b is not None else None)
        if a is not None and b is not None:
            in_grid = (a in self._grid_counts, b in self._grid_counts)
            if in_grid == (True, False):
                return "channels_last"
            if in_grid == (False, True):
                return "channels_first"
            if a == b:
                raise ambiguous
            return "channels_first" if a < b else "channels_last"
        if a is not None and a in self._grid_counts:
            return "channels_last"
        if b is not None and b in self._grid_counts:
            return "channels_first"
        return None

    # --------------------------------------------------------------------------------------- load time

    def check_outputs(self, outputs: Sequence[TensorSpec]) -> None:
        tensor = find_output(self.spec, outputs, "predictions")
        layout_text = "[B, channels, N] or [B, N, channels]"
        shape = check_tensor(
            self.spec, tensor, "predictions", f"{layout_text} with channels = {self.channel_text}", (2, 3)
        )
        protos = [t for t in outputs if t.name != tensor.name and len(tuple(t.shape)) == 4]
        if self.format == "yolo" and protos:
            raise SpecError(
                f"the model has a mask-prototype output {protos[0]} beside {tensor.name!r}: a YOLOv8-seg style "
                "instance-segmentation export, whose 32 mask coefficients per row would be read as classes; "
                "instance segmentation is not supported; fix: export the detect model (yolov8n.pt, not "
                "yolov8n-seg.pt)"
            )
        resolved = self.resolve_layout(shape[-2:], tensor.name, final=False)
        if resolved is not None:
            n = shape[-1] if resolved[0] == "channels_first" else shape[-2]
            self._check_points(n, tensor.name)

    def _check_points(self, n: Optional[int], name: str) -> None:
        """Formats with a fixed grid (yolox decode) check N here."""

    def _geometry(self, shape: Tuple[int, ...], name: str) -> Tuple[str, int]:
        """Layout and class count of a frame's [channels, N] / [N, channels] shape, decided once per shape.

        A shape that contradicts the spec (found on a frame because the model's dims are dynamic) refuses that
        frame with an OutputError carrying the load-time check's explanation."""
        cached = self._shapes.get(shape)
        if cached is None:
            try:
                resolved = self.resolve_layout(shape, name, final=True)
                assert resolved is not None
                self._check_points(shape[1] if resolved[0] == "channels_first" else shape[0], name)
            except SpecError as exc:
                raise OutputError(f"on this frame: {exc}") from None
            cached = self._shapes[shape] = resolved
        return cached

    # ---------------------------------------------------------------------------------------- per frame

    def parse(self, outputs: Mapping[str, np.ndarray], settings: DetectionSettings) -> RawDetections:
        with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN outputs: dropped by the NMS and finalize
            return self._parse(outputs, settings)

    def _parse(self, outputs: Mapping[str, np.ndarray], settings: DetectionSettings) -> RawDetections:
        name = self.tensor("predictions")
        expected = f"[B, channels, N] or [B, N, channels] with channels = {self.channel_text}"
        raw = frame_output(self.spec, outputs, "predictions", expected, 2)
        layout, _ = self._geometry(raw.shape, name)
        threshold = settings.score_threshold
        box = self.box_columns
        first = layout == "channels_first"
        # 1. candidates: points whose best possible score reaches the threshold (the one pass over all N)
        best_scores = None
        if self.objectness:
            points = np.flatnonzero((raw[4] if first else raw[:, 4]) >= threshold)
        else:
            best_scores = (raw[box:] if first else raw[:, box:]).max(axis=0 if first else 1)
            points = np.flatnonzero(best_scores >= threshold)
        if points.shape[0] == 0:
            return RawDetections.empty()
        # 2. the candidates' rows only: [K, box + C]
        rows = np.asarray(raw[:, points].T if first else raw[points], np.float32)
        class_scores = rows[:, box:]
        if self.objectness:
            class_scores = class_scores * rows[:, 4:5]
        class_ids = class_scores.argmax(axis=1)
        if best_scores is None:
            scores = class_scores[np.arange(class_ids.shape[0]), class_ids]
        else:
            scores = best_scores[points].astype(np.float32)
        keep = scores >= threshold
        if settings.allowed_class_ids is not None:  # on the best class, before NMS (Ultralytics' classes=)
            keep &= np.isin(class_ids, np.fromiter(settings.allowed_class_ids, np.int64))
        if not keep.all():
            points, rows, scores, class_ids = points[keep], rows[keep], scores[keep], class_ids[keep]
            if points.shape[0] == 0:
                return RawDetections.empty()
        boxes = self.boxes(rows[:, 0:4], points)
        nms_classes = np.zeros_like(class_ids) if self.class_agnostic else class_ids
        kept = prefix_nms(boxes, scores, nms_classes, settings.iou_threshold, settings.max_detections)
        return finalize(boxes[kept], scores[kept], class_ids[kept].astype(np.int64), settings)

    def boxes(self, cxcywh: np.ndarray, points: np.ndarray) -> np.ndarray:
        """xyxy boxes in model-input pixels for the candidates' (K, 4) cx, cy, w, h at grid ``points``."""
        half = cxcywh[:, 2:4] * 0.5
        boxes = np.concatenate([cxcywh[:, 0:2] - half, cxcywh[:, 0:2] + half], axis=1)
        if self.normalized:
            boxes *= self._scale
        return boxes


class Yolov5Parser(YoloParser):
    """YOLOv5/v7 anchor head: [B, N, 5+C] with objectness; score = objectness * class score."""

    format = "yolov5"
    objectness = True
    anchors_per_point = 3
    defaults: Dict[str, Any] = {**YoloParser.defaults, "layout": "channels_last"}


class YoloxParser(YoloParser):
    """YOLOX head: [B, N, 5+C] with objectness; optional grid decode (``decode: true``)."""

    format = "yolox"
    objectness = True
    defaults: Dict[str, Any] = {**Yolov5Parser.defaults, "decode": False, "strides": [8, 16, 32]}

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.decode = param_bool(self.params, "decode")
        strides = self.params["strides"]
        ok = isinstance(strides, (list, tuple)) and len(strides) > 0 and all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in strides
        )
        if not ok:
            raise bad_param(
                "strides", strides, "a list of positive integer strides, finest first",
                "use [8, 16, 32] (P6 models: [8, 16, 32, 64])",
            )
        self.strides = tuple(int(s) for s in strides)
        if self.decode and self.normalized:
            raise bad_param(
                "normalized", True, "false with decode: true (the grid decode gives input pixels)",
                "remove normalized, or set decode: false for a model that outputs normalized boxes",
            )
        height, width = self.input_size
        if self.decode and min(height, width) < max(self.strides):
            raise bad_param(
                "strides", list(self.strides),
                f"strides no larger than the input size ({width}x{height}): every level needs a grid cell",
                "check input.height/width and output.strides",
            )
        self._grid, self._stride = yolox_grids(height, width, self.strides) if self.decode else (None, None)
        self._grid_counts = {grid_points(height, width, self.strides)} | self._grid_counts

    @property
    def num_points(self) -> int:
        """Rows the decode grid has for the spec's input size (meaningful with ``decode: true``)."""
        return grid_points(self.input_size[0], self.input_size[1], self.strides)

    def _check_points(self, n: Optional[int], name: str) -> None:
        if self.decode and known(n) and int(n) != self.num_points:
            height, width = self.input_size
            raise SpecError(
                f"{self._where(name)} has {n} rows but the decode grid of a {width}x{height} input with strides "
                f"{list(self.strides)} has {self.num_points} (sum of (H/s)*(W/s)); the format expects one row per "
                "grid cell; fix: set input.height/width "
                "to the size the model was exported for and output.strides to its strides, or decode: false "
                "for a model exported with --decode_in_inference"
            )

    def boxes(self, cxcywh: np.ndarray, points: np.ndarray) -> np.ndarray:
        if self.decode:
            assert self._grid is not None and self._stride is not None
            stride = self._stride[points]
            sizes = np.exp(cxcywh[:, 2:4]) * stride  # overflow: inf boxes, which the NMS and finalize drop
            cxcywh = np.concatenate([(cxcywh[:, 0:2] + self._grid[points]) * stride, sizes], axis=1)
        return super().boxes(cxcywh, points)
