"""ssd_raw: anchors + box regression decoded on the CPU, class-wise NMS, and agreement with EfficientNMS."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import SpecError
from trt_perception.outputs import DetectionSettings, create_parser
from trt_perception.outputs.anchors import grid_anchors
from trt_perception.outputs.nms import efficient_nms_reference
from trt_perception.outputs.ssd_raw import SsdRawParser
from trt_perception.spec import parse_spec

GRID = {"grid": {"feature_maps": [19, 10, 5, 3, 2, 1]}}
ALL = DetectionSettings(score_threshold=0.01, iou_threshold=0.45, max_detections=1000)


def make_parser(
    source: Optional[Path] = None, width: int = 300, height: int = 300, **output: Any
) -> SsdRawParser:
    out: Dict[str, Any] = {"format": "ssd_raw", "anchors": GRID}
    out.update(output)
    data = {"task": "detection", "input": {"name": "x", "height": height, "width": width}, "output": out}
    parser = create_parser(parse_spec(data, source=source))
    assert isinstance(parser, SsdRawParser)
    return parser


def encode(
    boxes_cxcywh: np.ndarray, anchors: np.ndarray, variances: List[float], box_order: str
) -> np.ndarray:
    """The inverse of the SSD decode: what a head must output to land exactly on ``boxes``.

    ``variances`` are in the head's order (for yx: vy, vx, vh, vw), as the spec gives them.
    """
    vx, vy, vw, vh = variances if box_order == "xy" else [variances[i] for i in (1, 0, 3, 2)]
    d = np.empty_like(boxes_cxcywh, dtype=np.float64)
    d[:, 0] = (boxes_cxcywh[:, 0] - anchors[:, 0]) / (anchors[:, 2] * vx)
    d[:, 1] = (boxes_cxcywh[:, 1] - anchors[:, 1]) / (anchors[:, 3] * vy)
    d[:, 2] = np.log(boxes_cxcywh[:, 2] / anchors[:, 2]) / vw
    d[:, 3] = np.log(boxes_cxcywh[:, 3] / anchors[:, 3]) / vh
    if box_order == "yx":  # the head emits ty, tx, th, tw
        d = d[:, [1, 0, 3, 2]]
    return d.astype(np.float32)


def heads(num_anchors: int, classes: int, fill: float = -12.0) -> Dict[str, np.ndarray]:
    return {
        "scores": np.full((1, num_anchors, classes), fill, np.float32),
        "boxes": np.zeros((1, num_anchors, 4), np.float32),
    }


@pytest.mark.parametrize("box_order", ["xy", "yx"])
def test_encoded_boxes_decode_back_exactly(box_order: str) -> None:
    variances = [0.1, 0.1, 0.2, 0.2] if box_order == "xy" else [0.1, 0.12, 0.2, 0.25]
    parser = make_parser(width=400, height=300, box_order=box_order, variances=variances)
    anchors = parser.anchors.astype(np.float64)
    picks = np.array([5, 700, 1500, 1916])
    truth = np.array(
        [[0.2, 0.3, 0.1, 0.2], [0.5, 0.5, 0.3, 0.4], [0.7, 0.2, 0.25, 0.1], [0.5, 0.6, 0.9, 0.7]]
    )
    out = heads(parser.num_anchors, 4)
    out["boxes"][0, picks] = encode(truth, anchors[picks], variances, box_order)
    out["scores"][0, picks, [1, 2, 3, 1]] = [3.0, 2.0, 1.0, 0.5]  # logits, sigmoid by default
    result = parser.parse(out, ALL)
    scale = np.array([400, 300, 400, 300])
    expected = np.concatenate([truth[:, :2] - truth[:, 2:] / 2, truth[:, :2] + truth[:, 2:] / 2], 1) * scale
    np.testing.assert_allclose(result.boxes, expected, atol=1e-3)
    np.testing.assert_allclose(result.scores, 1 / (1 + np.exp(-np.array([3.0, 2.0, 1.0, 0.5]))), rtol=1e-6)
    assert result.class_ids.tolist() == [1, 2, 3, 1]  # the model's column index, background column 0 kept
    assert result.boxes.dtype == np.float32 and result.class_ids.dtype == np.int64


def test_boxes_with_a_singleton_class_axis_and_implicit_batch() -> None:
    parser = make_parser()
    out = heads(parser.num_anchors, 3)
    out["scores"][0, 10, 2] = 5.0
    expected = parser.parse(out, ALL)
    assert len(expected.scores) == 1
    result = parser.parse({"scores": out["scores"][0], "boxes": out["boxes"][:, :, None, :]}, ALL)
    np.testing.assert_array_equal(result.boxes, expected.boxes)


def test_nms_suppresses_same_class_overlaps_but_keeps_other_classes() -> None:
    parser = make_parser(score_activation="none")
    out = heads(parser.num_anchors, 4, fill=0.0)
    # anchors 0 and 1 share a cell centre: with zero regression the 0.1 x 0.1 box lies inside the
    # 0.283 x 0.141 one, IoU = 0.01 / 0.04 = 0.25
    a0, a1 = parser.anchors[0], parser.anchors[1]
    assert np.allclose(a0[:2], a1[:2])
    out["scores"][0, 0, 1] = 0.9
    out["scores"][0, 1, 1] = 0.8  # same class, overlapping: suppressed
    out["scores"][0, 1, 2] = 0.7  # other class on the same box: kept
    result = parser.parse(out, DetectionSettings(0.5, 0.2, 100))
    assert result.class_ids.tolist() == [1, 2]
    np.testing.assert_allclose(result.scores, [0.9, 0.7])
    loose = parser.parse(out, DetectionSettings(0.5, 0.3, 100))
    assert loose.class_ids.tolist() == [1, 1, 2]


def test_background_allow_list_max_and_pre_nms_top_k() -> None:
    parser = make_parser(score_activation="none")
    out = heads(parser.num_anchors, 4, fill=0.0)
    rows = np.arange(0, 1917, 97)[:12]  # spread out: no overlaps
    out["scores"][0, rows, 0] = 0.99  # background column: never reported
    out["scores"][0, rows, 1 + np.arange(12) % 3] = np.linspace(0.9, 0.6, 12)
    base = DetectionSettings(0.5, 0.45, 100)
    assert len(parser.parse(out, base).scores) == 12
    assert 0 not in parser.parse(out, base).class_ids
    allowed = parser.parse(out, DetectionSettings(0.5, 0.45, 100, frozenset({2, 3})))
    assert set(allowed.class_ids.tolist()) == {2, 3} and len(allowed.scores) == 8
    capped = parser.parse(out, DetectionSettings(0.5, 0.45, 5))
    np.testing.assert_allclose(capped.scores, np.linspace(0.9, 0.6, 12)[:5], rtol=1e-6)
    top = make_parser(score_activation="none", pre_nms_top_k=3).parse(out, base)
    np.testing.assert_allclose(top.scores, np.linspace(0.9, 0.6, 12)[:3], rtol=1e-6)
    no_background = make_parser(score_activation="none", background_class=None).parse(out, base)
    assert no_background.class_ids.tolist().count(0) == 12


def test_softmax_scores() -> None:
    parser = make_parser(score_activation="softmax")
    out = heads(parser.num_anchors, 3, fill=0.0)
    out["scores"][0, 7] = [0.0, 3.0, 1.0]
    result = parser.parse(out, DetectionSettings(0.5, 0.45, 100))
    p = np.exp([0.0, 3.0, 1.0]) / np.exp([0.0, 3.0, 1.0]).sum()
    assert result.class_ids.tolist() == [1]
    np.testing.assert_allclose(result.scores, [p[1]], rtol=1e-6)


def test_nothing_above_threshold_gives_empty_detections() -> None:
    parser = make_parser()
    result = parser.parse(heads(parser.num_anchors, 91), DetectionSettings(0.5, 0.45, 100))
    assert result.boxes.shape == (0, 4) and result.scores.shape == (0,) and result.class_ids.shape == (0,)


def test_anchor_file_resolved_next_to_the_spec(tmp_path: Path) -> None:
    anchors = grid_anchors([4, 2])
    np.save(tmp_path / "anchors.npy", anchors)
    parser = make_parser(source=tmp_path / "model.yaml", anchors={"file": "anchors.npy"})
    np.testing.assert_array_equal(parser.anchors, anchors)
    with pytest.raises(SpecError, match=r"output\.anchors\.file.*nope\.npy"):
        make_parser(source=tmp_path / "model.yaml", anchors={"file": "nope.npy"})


def tensors(anchors: int = 1917, classes: int = 91, boxes_shape: Optional[tuple] = None) -> List[TensorSpec]:
    return [
        TensorSpec("scores", (1, anchors, classes), np.dtype(np.float32)),
        TensorSpec("boxes", boxes_shape or (1, anchors, 4), np.dtype(np.float32)),
    ]


def test_check_outputs() -> None:
    parser = make_parser()
    parser.check_outputs(tensors())
    parser.check_outputs(tensors(boxes_shape=(None, 1917, 1, 4)))
    parser.check_outputs(tensors(boxes_shape=(1917, 1, 4)))
    with pytest.raises(SpecError, match=r"anchor count.*scores \(scores\): 1900.*output\.anchors: 1917"):
        parser.check_outputs(tensors(anchors=1900))
    with pytest.raises(SpecError, match=r"'boxes'.*\[1, 1917, 5\].*\[B, A, 4\]"):
        parser.check_outputs(tensors(boxes_shape=(1, 1917, 5)))
    with pytest.raises(SpecError, match=r"'boxes'.*one box per class"):
        parser.check_outputs(tensors(boxes_shape=(1, 1917, 91, 4)))
    with pytest.raises(SpecError, match=r"output\.background_class is 0.*'scores' has 0"):
        parser.check_outputs(tensors(classes=0))
    with pytest.raises(SpecError, match=r"output\.tensors\.boxes is 'boxes'.*\['scores'\]"):
        parser.check_outputs(tensors()[:1])
    bad = [TensorSpec("scores", (1, 1917, 91), np.dtype(np.int32)), tensors()[1]]
    with pytest.raises(SpecError, match=r"'scores'.*dtype int32"):
        parser.check_outputs(bad)


@pytest.mark.parametrize(
    ("output", "pattern"),
    [
        ({"anchors": None}, r"output\.anchors is missing"),
        ({"anchors": "anchors.npy"}, r"output\.anchors is 'anchors\.npy'; expected exactly one of"),
        ({"anchors": {"file": "a.npy", "grid": {}}}, r"output\.anchors.*exactly one"),
        ({"anchors": {"grid": {"feature_maps": [19], "min_size": 0.2}}}, r"output\.anchors\.grid\.min_size"),
        ({"anchors": {"grid": {"min_scale": 0.2}}}, r"output\.anchors\.grid\.feature_maps is None"),
        ({"anchors": {"grid": {"feature_maps": [19, [10]]}}}, r"feature_maps is \[19, \[10\]\]"),
        (
            {"anchors": {"grid": {"feature_maps": [19], "aspect_ratios": [1, -2]}}},
            r"aspect_ratios is \[1, -2\]",
        ),
        ({"anchors": {"grid": {"feature_maps": [19, 10], "scales": [0.2]}}}, r"scales is \[0\.2\]"),
        (
            {"variances": [0.1, 0.1, 0.2]},
            r"output\.variances is \[0\.1, 0\.1, 0\.2\]; expected a list of 4 positive",
        ),
        ({"box_order": "xyxy"}, r"output\.box_order is 'xyxy'; expected one of \['xy', 'yx'\]"),
        ({"score_activation": "relu"}, r"output\.score_activation is 'relu'"),
        ({"background_class": -1}, r"output\.background_class is -1"),
        ({"pre_nms_top_k": 0}, r"output\.pre_nms_top_k is 0"),
        ({"normalized": True}, r"output\.normalized = True is not a parameter.*allowed keys.*anchors"),
        ({"tensors": {"scores": "s"}}, r"output\.tensors\.boxes"),
    ],
)
def test_bad_params_are_refused_naming_the_key(output: Dict[str, Any], pattern: str) -> None:
    with pytest.raises(SpecError, match=pattern):
        make_parser(**output)


@pytest.mark.parametrize(("box_order", "seed"), [("xy", 0), ("yx", 1), ("xy", 2)])
def test_agrees_with_the_efficient_nms_reference(box_order: str, seed: int) -> None:
    """What EfficientNMS_TRT (box_coding=1, anchors, sigmoid) computes equals our decoder + NMS."""
    rng = np.random.default_rng(seed)
    parser = make_parser(box_order=box_order, variances=[0.1, 0.1, 0.2, 0.2], pre_nms_top_k=4096)
    classes = 7
    logits = rng.normal(-5.0, 2.0, (1, parser.num_anchors, classes)).astype(np.float32)
    deltas = rng.normal(0.0, 0.7, (1, parser.num_anchors, 4)).astype(np.float32)
    settings = DetectionSettings(score_threshold=0.4, iou_threshold=0.5, max_detections=50)
    ours = parser.parse({"scores": logits, "boxes": deltas}, settings)

    anchors, variances = parser.efficient_nms_anchors()
    num, boxes, scores, labels = efficient_nms_reference(
        deltas * variances,
        logits,
        anchors,
        score_threshold=0.4,
        iou_threshold=0.5,
        max_output_boxes=50,
        background_class=0,
        score_activation=True,
        box_coding=1,
    )
    n = int(num[0, 0])
    assert n == len(ours.scores) > 10
    ref_boxes = boxes[0, :n]
    if box_order == "yx":
        ref_boxes = ref_boxes[:, [1, 0, 3, 2]]
    np.testing.assert_allclose(ours.boxes, ref_boxes * 300, atol=2e-3)
    np.testing.assert_allclose(ours.scores, scores[0, :n], rtol=1e-5)
    assert ours.class_ids.tolist() == labels[0, :n].tolist()


@pytest.mark.parametrize("background", [0, None])
def test_softmax_candidates_match_a_full_softmax(background: Optional[int]) -> None:
    """The pruned softmax (bound by one column, exact on candidate rows) equals softmax over everything."""
    rng = np.random.default_rng(5)
    parser = make_parser(score_activation="softmax", background_class=background, pre_nms_top_k=4096)
    logits = rng.normal(0.0, 2.0, (1, parser.num_anchors, 6)).astype(np.float32)
    if background is not None:
        logits[0, :, 0] += 3.0
    deltas = rng.normal(0.0, 0.5, (1, parser.num_anchors, 4)).astype(np.float32)
    ours = parser.parse({"scores": logits, "boxes": deltas}, DetectionSettings(0.3, 0.5, 200))
    exp = np.exp(logits.astype(np.float64) - logits.max(axis=2, keepdims=True))
    probabilities = exp / exp.sum(axis=2, keepdims=True)
    anchors, variances = parser.efficient_nms_anchors()
    num, boxes, scores, labels = efficient_nms_reference(
        deltas * variances, probabilities, anchors, score_threshold=0.3, iou_threshold=0.5,
        max_output_boxes=200, background_class=-1 if background is None else background, box_coding=1,
    )
    n = int(num[0, 0])
    assert n == len(ours.scores) > 20
    np.testing.assert_allclose(ours.scores, scores[0, :n], rtol=1e-5)
    np.testing.assert_allclose(ours.boxes, boxes[0, :n] * 300, atol=2e-3)
    assert ours.class_ids.tolist() == labels[0, :n].tolist()


def test_float16_heads_from_fp16_engines() -> None:
    parser = make_parser()
    anchors = parser.anchors.astype(np.float64)
    out = heads(parser.num_anchors, 3)
    truth = np.array([[0.5, 0.5, 0.3, 0.4]])
    out["boxes"][0, 700] = encode(truth, anchors[700:701], [0.1, 0.1, 0.2, 0.2], "xy")
    out["scores"][0, 700, 2] = 4.0
    half = {name: array.astype(np.float16) for name, array in out.items()}
    result = parser.parse(half, ALL)
    assert result.class_ids.tolist() == [2] and result.boxes.dtype == np.float32
    np.testing.assert_allclose(result.boxes, [[105, 90, 195, 210]], atol=0.5)


def batch_of_heads(parser: SsdRawParser, frames: int, classes: int, seed: int, dtype: Any = np.float32,
                   boxes_shape: str = "flat") -> Dict[str, np.ndarray]:
    """Random heads for ``frames`` frames: a few strong anchors per frame, overlapping neighbours, empty frames,
    and (frame 3) a NaN and an inf logit, as a broken engine gives."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(-6.0, 2.0, (frames, parser.num_anchors, classes))
    for frame in range(frames):
        if frame % 4 == 1:
            continue  # nothing above any threshold
        hot = rng.choice(parser.num_anchors - 1, size=12, replace=False)
        scores[frame, hot, rng.integers(0, classes, 12)] = rng.uniform(0.0, 6.0, 12)
        scores[frame, hot + 1, rng.integers(0, classes, 12)] = rng.uniform(0.0, 6.0, 12)  # neighbours overlap
    if frames > 3:
        scores[3, 5, 1], scores[3, 9, 2] = np.nan, np.inf
    deltas = rng.normal(0.0, 0.6, (frames, parser.num_anchors, 4))
    if boxes_shape == "singleton":
        deltas = deltas[:, :, None, :]
    return {"scores": scores.astype(dtype), "boxes": deltas.astype(dtype)}


def assert_same_detections(got: Any, expected: Any) -> None:
    for field in ("boxes", "scores", "class_ids"):
        a, b = getattr(got, field), getattr(expected, field)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True), field


@pytest.mark.parametrize(("activation", "dtype", "boxes_shape"), [
    ("sigmoid", np.float32, "flat"), ("softmax", np.float32, "flat"), ("none", np.float32, "singleton"),
    ("sigmoid", np.float16, "singleton"), ("softmax", np.float16, "flat"),
])
@pytest.mark.parametrize("settings", [
    DetectionSettings(0.5, 0.45, 100), DetectionSettings(0.3, 0.3, 3, frozenset({2})), ALL,
])
@pytest.mark.parametrize("top_k", [16, 4096])  # frames above pre_nms_top_k take the per-frame path
def test_a_batch_parses_to_exactly_each_frame_parsed_alone(activation: str, dtype: Any, boxes_shape: str,
                                                           settings: DetectionSettings, top_k: int) -> None:
    """replay parses its batches of consecutive frames in one pass (``parse_batch``): bit for bit what
    ``parse`` gives each frame's row, NaN/inf logits, empty frames, caps and allow-lists included."""
    parser = make_parser(score_activation=activation, pre_nms_top_k=top_k)
    for seed in range(4):
        out = batch_of_heads(parser, 8, 4, seed, dtype, boxes_shape)
        batch = parser.parse_batch(out, 8, settings)
        assert batch is not None and len(batch) == 8
        for i, got in enumerate(batch):
            assert_same_detections(got, parser.parse({k: v[i : i + 1] for k, v in out.items()}, settings))


def test_a_batch_it_cannot_take_is_left_to_parse_per_frame() -> None:
    """Anything unusual returns None: the frames are then parsed one by one, where the errors are worded."""
    parser = make_parser()
    out = batch_of_heads(parser, 4, 3, 0)
    assert parser.parse_batch(out, 3, ALL) is None  # not 3 rows
    assert parser.parse_batch({"scores": out["scores"][:, :100], "boxes": out["boxes"]}, 4, ALL) is None  # anchors
    integers = np.zeros(out["scores"].shape, np.int32)
    assert parser.parse_batch({"scores": integers, "boxes": out["boxes"]}, 4, ALL) is None
    assert parser.parse_batch({"boxes": out["boxes"]}, 4, ALL) is None  # a tensor missing
