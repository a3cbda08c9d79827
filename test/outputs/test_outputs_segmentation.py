"""segmentation: per-pixel scores or class ids -> class map -> source-size mask and class fractions.

The parser alone against np.argmax; class_fractions against hand counts; then real ONNX segmenters
(test/task_factory.py: the class of a pixel comes from its brightness or colour) on ONNX Runtime and as
TensorRT-double engines: regions drawn in a SOURCE frame come back exactly in the source-size mask, through
letterbox 640x480 -> 256x256, stretch with crop top, crop bottom and stride heads.
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest
from fakes.cuda_fake import FakeGpu, install_cuda_python
from fakes.tensorrt_fake import make_tensorrt_module
from task_factory import draw_regions, segmenter, segmenter_engine

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import OutputError, SpecError
from trt_perception.images import DecodedImage
from trt_perception.outputs import RawSegmentation, create_parser
from trt_perception.outputs import segmentation as segmentation_module
from trt_perception.outputs.base import OutputParser
from trt_perception.outputs.segmentation import SegmentationParser, class_fractions
from trt_perception.pipeline import ModelPipeline
from trt_perception.results import SegmentationMask
from trt_perception.spec import parse_spec

UNSEEN = SegmentationMask.UNSEEN
F32 = np.dtype(np.float32)


def make_parser(labels: Optional[List[str]] = None, height: int = 64, width: int = 64, **output: Any) -> OutputParser:
    data: Dict[str, Any] = {
        "task": "segmentation",
        "input": {"name": "images", "height": height, "width": width},
        "output": {"format": "segmentation", **output},
    }
    if labels is not None:
        data["segmentation"] = {"labels": labels}
    return create_parser(parse_spec(data))


def parse(parser: OutputParser, array: np.ndarray) -> RawSegmentation:
    result = parser.parse({"output0": array}, None)
    assert isinstance(result, RawSegmentation)
    assert result.class_map.dtype == np.uint8 and result.class_map.ndim == 2
    return result


def random_scores(shape: Tuple[int, ...], seed: int = 0, levels: int = 6) -> np.ndarray:
    """Small integer-valued scores: many ties, so the first-maximum rule is exercised."""
    return np.random.default_rng(seed).integers(0, levels, shape).astype(np.float32)


# ------------------------------------------------------------------------------------------ the parser


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_argmax_equals_numpy(layout: str, dtype: Any) -> None:
    parser = make_parser(layout=layout, height=64, width=128)
    scores = random_scores((1, 21, 48, 96))
    array = scores if layout == "NCHW" else np.ascontiguousarray(scores.transpose(0, 2, 3, 1))
    result = parse(parser, array.astype(dtype))
    np.testing.assert_array_equal(result.class_map, np.argmax(scores[0], axis=0))
    assert result.num_classes == 21


def test_float16_without_opencv_float16_support(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV 4.x refuses float16 arithmetic: each channel goes through a float32 buffer instead."""
    monkeypatch.setattr(segmentation_module, "_cv2_compares_float16", lambda: False)
    scores = random_scores((1, 5, 16, 24), seed=1)
    for layout, array in (("NCHW", scores), ("NHWC", np.ascontiguousarray(scores.transpose(0, 2, 3, 1)))):
        result = parse(make_parser(layout=layout), array.astype(np.float16))
        np.testing.assert_array_equal(result.class_map, np.argmax(scores[0], axis=0))


def test_two_classes_batch_item_zero_and_non_contiguous_outputs() -> None:
    parser = make_parser()
    scores = random_scores((3, 2, 8, 8), seed=2)
    np.testing.assert_array_equal(parse(parser, scores).class_map, np.argmax(scores[0], axis=0))
    wide = random_scores((1, 4, 8, 16), seed=3)
    view = wide[:, :, :, ::2]  # a strided view, as a runtime could hand out
    np.testing.assert_array_equal(parse(parser, view).class_map, np.argmax(view[0], axis=0))


def test_class_map_buffer_is_reused_without_per_frame_allocation() -> None:
    parser = make_parser(height=256, width=512)
    frames = [random_scores((1, 21, 256, 512), seed=s) for s in range(2)]
    first = parse(parser, frames[0]).class_map
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for k in range(6):
            result = parse(parser, frames[k % 2])
        grown = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert result.class_map is first  # the parser's buffer: valid until the next parse
    assert grown < 4000  # small Python objects only; one map is 131 kB, one plane 512 kB
    np.testing.assert_array_equal(result.class_map, np.argmax(frames[1][0], axis=0))


def test_nan_scores_do_not_crash() -> None:
    scores = random_scores((1, 4, 8, 8), seed=4)
    scores[0, 1, :4] = np.nan
    scores[0, :, 6] = np.nan
    result = parse(make_parser(), scores)
    assert result.class_map.max() < 4
    clean = np.isfinite(scores[0]).all(axis=0)
    np.testing.assert_array_equal(result.class_map[7], np.argmax(scores[0], axis=0)[7])
    assert clean[7].all()


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.float32, np.float16])
def test_class_ids_are_taken_as_they_are(dtype: Any) -> None:
    ids = np.array([[[0, 1, 2, 254]]])  # [1, 1, 4]
    result = parse(make_parser(labels=["road", "car", "person"]), ids.astype(dtype))
    np.testing.assert_array_equal(result.class_map, [[0, 1, 2, 254]])
    assert result.num_classes == 3
    assert parse(make_parser(), ids.astype(dtype)).num_classes == 256  # no labels: any id


def test_ids_outside_0_254_become_unseen() -> None:
    parser = make_parser()
    ids = np.array([[[-1, 255, 300, 7, -300]]])
    for dtype in (np.int64, np.int32):
        np.testing.assert_array_equal(parse(parser, ids.astype(dtype)).class_map, [[255, 255, 255, 7, 255]])
    floats = np.array([[[-1.0, 255.0, 300.0, 6.6, np.nan, 2.0]]], np.float32)
    np.testing.assert_array_equal(parse(parser, floats).class_map, [[255, 255, 255, 7, 255, 2]])


@pytest.mark.parametrize(
    ("layout", "shape"), [("NCHW", (1, 1, 3, 5)), ("NHWC", (1, 3, 5, 1)), ("NCHW", (1, 3, 5))]
)
def test_one_channel_id_layouts(layout: str, shape: Tuple[int, ...]) -> None:
    ids = np.arange(15).reshape(shape).astype(np.int64)
    np.testing.assert_array_equal(parse(make_parser(layout=layout), ids).class_map, np.arange(15).reshape(3, 5))


def test_threshold_makes_a_binary_head() -> None:
    parser = make_parser(threshold=0.5, labels=["background", "drivable"])
    probabilities = np.array([[[[0.1, 0.5, 0.51, np.nan, 0.9]]]], np.float32)
    result = parse(parser, probabilities)
    np.testing.assert_array_equal(result.class_map, [[0, 0, 1, 0, 1]])
    assert result.num_classes == 2
    logits = make_parser(threshold=0.0)
    np.testing.assert_array_equal(parse(logits, np.array([[[-2.0, 3.0]]], np.float16)).class_map, [[0, 1]])


def test_check_outputs_accepts_the_shapes() -> None:
    parser = make_parser(height=256, width=512)
    for shape, dtype in (
        ((1, 21, 256, 512), F32), ((None, 21, 64, 128), np.dtype(np.float16)), ((1, -1, 32, 64), F32),
        ((1, 256, 512), np.dtype(np.int64)), ((1, 1, 256, 512), np.dtype(np.int32)),
        ((1, 256, 512), np.dtype(np.uint8)), ((-1, 256, 512), F32), ((1, 255, 8, 8), F32),
    ):  # fmt: skip
        parser.check_outputs([TensorSpec("output0", shape, dtype), TensorSpec("aux", (1, 21, 32, 64), F32)])
    nhwc = make_parser(height=256, width=512, layout="nhwc")
    assert isinstance(nhwc, SegmentationParser) and nhwc.layout == "NHWC"
    nhwc.check_outputs([TensorSpec("output0", (1, 64, 128, 21), F32)])


def test_check_outputs_refusals() -> None:
    parser = make_parser(height=256, width=512)

    def check(shape: Tuple[Any, ...], dtype: Any = F32, on: OutputParser = parser) -> None:
        on.check_outputs([TensorSpec("output0", shape, np.dtype(dtype))])

    with pytest.raises(SpecError, match=r"output\.tensors\.mask is 'output0'.*outputs are \['logits'\]"):
        parser.check_outputs([TensorSpec("logits", (1, 21, 256, 512), F32)])
    with pytest.raises(SpecError, match=r"'output0'.*shape \[1, 21\]; the format expects per-class scores"):
        check((1, 21))
    with pytest.raises(SpecError, match=r"dtype float64; the format expects float32 or float16 or int32"):
        check((1, 21, 256, 512), np.float64)
    with pytest.raises(SpecError, match=r"has 256 classes along the NCHW class axis.*set output\.layout: NHWC"):
        check((1, 256, 512, 21))
    with pytest.raises(SpecError, match=r"int64 with 21 channels; class-id outputs have one channel"):
        check((1, 21, 256, 512), np.int64)
    with pytest.raises(SpecError, match=r"a 512x21 map with layout NCHW, larger than the model input \(256x512\)"):
        check((1, 64, 512, 21))
    with pytest.raises(SpecError, match=r"shape \[21, 256, 512\]: read as class ids.*batch of 21"):
        check((21, 256, 512))
    with pytest.raises(SpecError, match=r"output\.threshold is 0\.5; expected null for a 21-class score output"):
        check((1, 21, 64, 128), on=make_parser(height=256, width=512, threshold=0.5))
    with pytest.raises(OutputError, match=r"gave shape \[300, 2, 2\].*at most 255 classes.*this frame has 300"):
        parse(make_parser(), np.zeros((1, 300, 2, 2), np.float32))  # a dynamic class axis, seen per frame


def test_bad_params_labels_and_roles() -> None:
    with pytest.raises(SpecError, match=r"output\.layout is 'CHW'; expected one of \['NCHW', 'NHWC'\]"):
        make_parser(layout="CHW")
    with pytest.raises(SpecError, match=r"output\.threshold is 'high'; expected null or a number"):
        make_parser(threshold="high")
    with pytest.raises(SpecError, match=r"output\.activation = 'softmax' is not a parameter.*\['layout', 'threshold'"):
        make_parser(activation="softmax")
    with pytest.raises(SpecError, match=r"segmentation\.labels has 300 labels.*at most 255"):
        make_parser(labels=[f"c{i}" for i in range(300)])
    with pytest.raises(SpecError, match=r"missing role.*output\.tensors\.mask"):
        make_parser(tensors={"scores": "output0"})


# ------------------------------------------------------------------------------------------- fractions


def test_class_fractions_count_seen_pixels_only() -> None:
    mask = np.full((10, 10), UNSEEN, np.uint8)
    mask[2:] = 0  # 80 seen pixels
    mask[2:4, :5] = 2  # 10
    mask[9, :] = 1  # 10
    np.testing.assert_allclose(class_fractions(mask, 3), [60 / 80, 10 / 80, 10 / 80])
    np.testing.assert_allclose(class_fractions(mask, 2), [60 / 80, 10 / 80])  # classes beyond are left out
    wide = class_fractions(mask, 256)
    assert wide.shape == (256,) and wide[255] == 0.0 and wide.sum() == pytest.approx(1.0)
    out = np.full(4, 9.0, np.float32)
    assert class_fractions(mask, 4, out=out) is out
    np.testing.assert_allclose(out, [0.75, 0.125, 0.125, 0.0])
    np.testing.assert_array_equal(class_fractions(np.full((3, 3), UNSEEN, np.uint8), 2, out=out[:2].copy()), 0)


def test_class_fractions_match_bincount_and_check_arguments() -> None:
    mask = np.random.default_rng(5).integers(0, 256, (480, 640)).astype(np.uint8)
    counts = np.bincount(mask.ravel(), minlength=256)
    np.testing.assert_allclose(class_fractions(mask, 200), counts[:200] / (mask.size - counts[255]), rtol=1e-5)
    with pytest.raises(ValueError, match=r"fractions buffer has shape \(3,\) dtype float64; expected \(4,\)"):
        class_fractions(mask, 4, out=np.zeros(3))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 2\) dtype int64"):
        class_fractions(np.zeros((2, 2), np.int64), 4)


# --------------------------------------------------------------------------------------- through models


def segment(pipeline: ModelPipeline, image: DecodedImage) -> Tuple[RawSegmentation, np.ndarray, np.ndarray]:
    """Preprocessor -> backend -> parser -> mask_to_source -> class_fractions, as the segmentation task does."""
    assert pipeline.preprocessor is not None
    tensor, transform = pipeline.preprocessor(image)
    outputs = pipeline.backend.infer({pipeline.spec.input.name: tensor})
    raw = pipeline.parser.parse(outputs, None)
    assert isinstance(raw, RawSegmentation)
    mask = transform.mask_to_source(raw.class_map, out=np.empty((image.height, image.width), np.uint8))
    return raw, mask, class_fractions(mask, raw.num_classes)


def frame_with(regions: List[Tuple[int, int, int, int, Any]], height: int = 480, width: int = 640) -> DecodedImage:
    return DecodedImage(draw_regions(np.zeros((height, width, 3), np.uint8), regions), "bgr")


def expected_mask(regions: List[Tuple[int, int, int, int, int]], height: int = 480, width: int = 640) -> np.ndarray:
    return draw_regions(np.zeros((height, width), np.uint8), regions)


# grey 255 = class 2 ('level_2'), 128 = class 1, black = 0; edges on multiples of 10 source px: whole model
# pixels at 0.4 (letterbox 640x480 -> 256x192 at rows 32..224), and whole 4x4 cells of a stride-4 head
REGIONS = [(100, 50, 250, 150, 255), (400, 300, 640, 480, 128), (0, 200, 60, 260, 255)]
CLASSES = [(x0, y0, x1, y1, {255: 2, 128: 1}[v]) for x0, y0, x1, y1, v in REGIONS]


@pytest.mark.parametrize(
    "options",
    [
        {"interpolation": "linear"},
        {"stride": 4},
        {"output": "ids"},
        {"output": "ids", "ids_channel": True, "dtype": "uint8"},
        {"layout": "NHWC", "dtype": "float16"},
    ],
    ids=["scores", "stride4", "ids-int64", "ids-uint8", "nhwc-fp16"],
)
def test_letterbox_regions_come_back_exactly(tmp_path: Path, options: Dict[str, Any]) -> None:
    model = segmenter(tmp_path, height=256, width=256, resize="letterbox", **options)
    pipeline = ModelPipeline.open(model, backend="onnxruntime")
    try:
        raw, mask, fractions = segment(pipeline, frame_with(REGIONS))
        stride = options.get("stride", 1)
        assert raw.class_map.shape == (256 // stride, 256 // stride)
        assert raw.num_classes == 3
        expected = expected_mask(CLASSES)
        np.testing.assert_array_equal(mask, expected)
        counts = np.bincount(expected.ravel(), minlength=3)
        np.testing.assert_allclose(fractions, counts / expected.size, rtol=1e-6)
        assert fractions[1] == pytest.approx(240 * 180 / (640 * 480))
    finally:
        pipeline.close()


def test_stretch_with_crop_top_marks_the_cropped_rows_unseen(tmp_path: Path) -> None:
    """DonkeyCar geometry: 120x160 model, crop.top 40 model rows = 120 source rows; x0.25, y x1/3 (edges on
    multiples of 4 columns and 120 + multiples of 3 rows)."""
    model = segmenter(tmp_path, height=120, width=160, crop_top=40, interpolation="area")
    pipeline = ModelPipeline.open(model, backend="onnxruntime")
    try:
        regions = [(0, 0, 640, 120, 255), (320, 240, 640, 300, 255), (40, 360, 200, 480, 128)]
        raw, mask, fractions = segment(pipeline, frame_with(regions))
        assert raw.class_map.shape == (120, 160)
        expected = expected_mask([(320, 240, 640, 300, 2), (40, 360, 200, 480, 1)])
        expected[:120] = UNSEEN  # the white band was cropped away: never seen, not class 2
        np.testing.assert_array_equal(mask, expected)
        seen = 360 * 640
        np.testing.assert_allclose(fractions, [1 - (320 * 60 + 160 * 120) / seen, 160 * 120 / seen, 320 * 60 / seen])
    finally:
        pipeline.close()


def test_colour_segmenter_with_crop_bottom_and_stride_8(tmp_path: Path) -> None:
    """Colour classes through a stretch 256x512 input with crop 16 + 48 of 320 model rows (24 + 72 source rows;
    384 rows -> 256: y x2/3, x x0.8); a stride-8 head: cells of 10 x 12 source px."""
    model = segmenter(tmp_path, height=256, width=512, mode="color", stride=8, crop_top=16, crop_bottom=48,
                      output="ids", dtype="int32")  # fmt: skip
    pipeline = ModelPipeline.open(model, backend="onnxruntime")
    try:
        bgr = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}
        regions = [(100, 24 + 36, 200, 24 + 120, bgr["red"]), (500, 300, 640, 408, bgr["blue"]),
                   (0, 0, 640, 24, bgr["green"]), (0, 408, 640, 480, bgr["green"])]  # fmt: skip
        raw, mask, fractions = segment(pipeline, frame_with(regions))
        assert raw.class_map.shape == (32, 64) and raw.num_classes == 4
        expected = expected_mask([(100, 60, 200, 144, 1), (500, 300, 640, 408, 3)])
        expected[:24] = UNSEEN
        expected[408:] = UNSEEN
        np.testing.assert_array_equal(mask, expected)
        assert fractions[2] == 0.0  # the green bands were cropped away
        labels = pipeline.spec.segmentation.labels
        assert [labels[c] for c in np.unique(mask[mask != UNSEEN])] == ["background", "red", "blue"]
    finally:
        pipeline.close()


@pytest.mark.parametrize("options", [{}, {"output": "ids", "ids_channel": True}], ids=["scores", "ids-int32"])
def test_tensorrt_double_engine_gives_the_onnx_mask(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, options: Dict[str, Any]
) -> None:
    gpu = FakeGpu()
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt_module("10.0.1", gpu))
    install_cuda_python(monkeypatch, gpu)
    (tmp_path / "trt").mkdir()
    (tmp_path / "onnx").mkdir()
    geometry: Dict[str, Any] = {"height": 256, "width": 256, "resize": "letterbox", "stride": 4, "crop_top": 8}
    engine = segmenter_engine(tmp_path / "trt", "10.0.1", gpu.compute_capability, **geometry, **options)
    onnx_options = dict(options, dtype="int32") if options else options
    trt = ModelPipeline.open(engine, backend="tensorrt", backend_options={"cuda": "cuda-python"})
    onnx = ModelPipeline.open(segmenter(tmp_path / "onnx", **geometry, **onnx_options), backend="onnxruntime")
    try:
        assert trt.backend.name == "tensorrt"
        image = frame_with(REGIONS)
        _, got, got_fractions = segment(trt, image)
        _, want, want_fractions = segment(onnx, image)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_fractions, want_fractions)
        top = round(8 * 480 / (256 + 8))  # crop.top 8 of 264 model rows
        assert (got[:top] == UNSEEN).all() and (got[top:] != UNSEEN).all()
        assert set(np.unique(got[top:])) == {0, 1, 2}
    finally:
        trt.close()
        onnx.close()
