"""classification: logits or probabilities -> top-k classes (parser alone, then real ONNX models on ONNX
Runtime and the same model as a TensorRT-double engine)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import pytest
from fakes.cuda_fake import FakeGpu, install_cuda_python
from fakes.tensorrt_fake import make_tensorrt_module
from task_factory import classifier, classifier_engine, classifier_logits

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import SpecError
from trt_perception.images import DecodedImage
from trt_perception.outputs import ClassificationSettings, RawClassification, create_parser
from trt_perception.outputs.base import OutputParser
from trt_perception.outputs.classification import ClassificationParser
from trt_perception.pipeline import ModelPipeline
from trt_perception.spec import parse_spec

F32 = np.dtype(np.float32)


def make_parser(**output: Any) -> OutputParser:
    data: Dict[str, Any] = {
        "task": "classification",
        "input": {"name": "images", "height": 32, "width": 32},
        "output": {"format": "classification", **output},
        "classification": {"top_k": 3},
    }
    return create_parser(parse_spec(data))


def settings(top_k: int = 5, score_threshold: float = 0.0) -> ClassificationSettings:
    return ClassificationSettings(top_k=top_k, score_threshold=score_threshold)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax as the textbook writes it, in float64 (inputs kept small enough for exp)."""
    e = np.exp(np.asarray(x, np.float64))
    return e / e.sum()


def run(parser: OutputParser, scores: Any, top_k: int = 5, threshold: float = 0.0) -> RawClassification:
    result = parser.parse({"output0": np.asarray(scores, np.float32)}, settings(top_k, threshold))
    assert isinstance(result, RawClassification)
    assert result.class_ids.dtype == np.int64 and result.scores.dtype == np.float32
    return result


# ----------------------------------------------------------------------------------------- the parser


def test_softmax_top_k_best_first() -> None:
    parser = make_parser()
    assert isinstance(parser, ClassificationParser) and parser.activation == "softmax"
    logits = np.array([[0.5, 3.0, -1.0, 2.0, 0.0]], np.float32)
    result = run(parser, logits, top_k=3)
    np.testing.assert_array_equal(result.class_ids, [1, 3, 0])
    np.testing.assert_allclose(result.scores, softmax(logits[0])[[1, 3, 0]], rtol=1e-6)
    everything = run(parser, logits, top_k=10)  # k > C: all classes, sorted
    np.testing.assert_array_equal(everything.class_ids, [1, 3, 0, 4, 2])
    assert everything.scores.sum() == pytest.approx(1.0, abs=1e-6)


def test_softmax_is_numerically_stable() -> None:
    """Logits of 1e4 overflow a naive exp; shifting by the max gives the exact answer."""
    result = run(make_parser(), [[1000.0, 10000.0, 9999.0, -10000.0]], top_k=4)
    np.testing.assert_array_equal(result.class_ids, [1, 2, 0, 3])
    e = 1 / (1 + math.exp(-1))
    np.testing.assert_allclose(result.scores, [e, 1 - e, 0.0, 0.0], atol=1e-7)
    assert np.isfinite(result.scores).all()


def test_threshold_drops_low_scores_after_top_k() -> None:
    parser = make_parser(activation="none")
    probabilities = [[0.05, 0.6, 0.1, 0.25]]
    result = run(parser, probabilities, top_k=3, threshold=0.2)
    np.testing.assert_array_equal(result.class_ids, [1, 3])
    np.testing.assert_allclose(result.scores, [0.6, 0.25])
    assert len(run(parser, probabilities, top_k=3, threshold=0.61).class_ids) == 0
    assert len(run(parser, probabilities, top_k=0).class_ids) == 0


def test_sigmoid_is_per_class_and_does_not_overflow() -> None:
    parser = make_parser(activation="sigmoid")
    with np.errstate(all="raise"):  # no overflow warning for -1000
        result = run(parser, [[2.0, -1000.0, 0.0]], top_k=3)
    np.testing.assert_array_equal(result.class_ids, [0, 2, 1])
    np.testing.assert_allclose(result.scores, [1 / (1 + math.exp(-2)), 0.5, 0.0], rtol=1e-6)


def test_nan_scores_are_dropped_not_raised() -> None:
    logits = [[1.0, np.nan, 3.0, 2.0]]
    for activation in ("softmax", "sigmoid", "none"):
        result = run(make_parser(activation=activation), logits, top_k=4)
        np.testing.assert_array_equal(result.class_ids, [2, 3, 0])  # class 1 is gone, the rest in order
        assert np.isfinite(result.scores).all()
    soft = run(make_parser(), logits, top_k=4)
    np.testing.assert_allclose(soft.scores, softmax([3.0, 2.0, 1.0]), rtol=1e-6)  # NaN counted as -inf
    for activation in ("softmax", "sigmoid", "none"):
        empty = run(make_parser(activation=activation), [[np.nan, np.nan]], top_k=2)
        assert len(empty.class_ids) == 0 and len(empty.scores) == 0


def test_infinite_logits() -> None:
    result = run(make_parser(), [[np.inf, 0.0, np.inf, -np.inf]], top_k=4)
    np.testing.assert_array_equal(result.class_ids, [0, 2, 1, 3])
    np.testing.assert_allclose(result.scores, [0.5, 0.5, 0.0, 0.0])
    assert len(run(make_parser(), [[-np.inf, -np.inf]], top_k=2).class_ids) == 0


def test_ties_and_large_class_counts() -> None:
    parser = make_parser()
    result = run(parser, [[1.0, 2.0, 2.0, 2.0, 0.0]], top_k=4)
    np.testing.assert_array_equal(result.class_ids, [1, 2, 3, 0])  # equal scores: lower id first
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (1, 1000)).astype(np.float32)
    result = run(parser, logits, top_k=5)
    expected = np.argsort(-logits[0].astype(np.float64), kind="stable")[:5]
    np.testing.assert_array_equal(result.class_ids, expected)
    np.testing.assert_allclose(result.scores, softmax(logits[0])[expected], rtol=1e-5)


@pytest.mark.parametrize(
    "shape", [(1, 4), (1, 4, 1, 1), (4,), (4, 1, 1), (3, 4)], ids=["BC", "BC11", "C", "C11", "batch3"]
)
def test_layouts_read_batch_item_zero(shape: Tuple[int, ...]) -> None:
    scores = np.zeros(shape, np.float32)
    flat = scores.reshape(-1)
    flat[:4] = [0.1, 0.7, 0.05, 0.15]  # batch item 0 comes first in every layout
    flat[4:] = 9.0  # other batch items must not leak in
    result = run(make_parser(activation="none"), scores, top_k=2)
    np.testing.assert_array_equal(result.class_ids, [1, 3])


def test_float16_outputs_and_default_settings() -> None:
    parser = make_parser(activation="none")
    scores = np.array([[0.2, 0.5, 0.3]], np.float16)
    result = parser.parse({"output0": scores}, None)  # None: the spec's classification section (top_k 3)
    np.testing.assert_array_equal(result.class_ids, [1, 2, 0])
    np.testing.assert_allclose(result.scores, [0.5, 0.3, 0.2], atol=1e-3)


def test_check_outputs_accepts_the_shapes() -> None:
    parser = make_parser(tensors={"scores": "logits"})
    for shape in ((1, 1000), (None, 10), (1, 10, 1, 1), (-1, 10, 1, 1), (10,), (10, 1, 1)):
        parser.check_outputs([TensorSpec("logits", shape, F32), TensorSpec("features", (1, 1280), F32)])
    parser.check_outputs([TensorSpec("logits", (1, 8), np.dtype(np.float16))])
    assert parser.num_classes == 8  # type: ignore[attr-defined]


def test_check_outputs_refusals() -> None:
    parser = make_parser(tensors={"scores": "logits"})
    with pytest.raises(SpecError, match=r"output\.tensors\.scores is 'logits'.*\['features', 'prob'\]"):
        parser.check_outputs([TensorSpec("prob", (1, 10), F32), TensorSpec("features", (1, 1280), F32)])
    with pytest.raises(SpecError, match=r"'logits'.*shape \[1, 10, 7, 7\]: a 7x7 map per class.*task: segmentation"):
        parser.check_outputs([TensorSpec("logits", (1, 10, 7, 7), F32)])
    with pytest.raises(SpecError, match=r"'logits'.*shape \[1, 2, 3, 4, 5\].*expects \[B, C\]"):
        parser.check_outputs([TensorSpec("logits", (1, 2, 3, 4, 5), F32)])
    with pytest.raises(SpecError, match=r"'logits'.*dtype int64.*float32 or float16"):
        parser.check_outputs([TensorSpec("logits", (1, 10), np.dtype(np.int64))])
    with pytest.raises(SpecError, match=r"one class column.*'softmax'.*activation: sigmoid"):
        parser.check_outputs([TensorSpec("logits", (1, 1), F32)])
    make_parser(tensors={"scores": "logits"}, activation="sigmoid").check_outputs([TensorSpec("logits", (1, 1), F32)])


def test_bad_params_and_roles() -> None:
    with pytest.raises(SpecError, match=r"output\.activation is 'relu'; expected one of \['softmax', 'sigmoid'"):
        make_parser(activation="relu")
    with pytest.raises(SpecError, match=r"output\.top_k = 3 is not a parameter.*allowed keys: \['activation'"):
        make_parser(top_k=3)
    with pytest.raises(SpecError, match=r"missing role.*tensors\.scores.*unknown role.*output\.tensors\.logits"):
        make_parser(tensors={"logits": "output0"})
    assert make_parser(activation="SIGMOID").activation == "sigmoid"  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------- through models


def grey(level: int, height: int = 48, width: int = 64) -> DecodedImage:
    return DecodedImage(np.full((height, width, 3), level, np.uint8), "bgr")


def classify(pipeline: ModelPipeline, image: DecodedImage, top_k: int = 5) -> Tuple[RawClassification, np.ndarray]:
    """The parser's raw result for one frame (preprocessor -> backend -> parser), and the model input."""
    assert pipeline.preprocessor is not None
    tensor, _ = pipeline.preprocessor(image)
    outputs = pipeline.backend.infer({pipeline.spec.input.name: tensor})
    result = pipeline.parser.parse(outputs, settings(top_k))
    assert isinstance(result, RawClassification)
    return result, tensor.copy()


@pytest.mark.parametrize(
    "options",
    [{}, {"output": "probabilities"}, {"conv_head": True}, {"dtype": "float16", "conv_head": True}],
    ids=["logits", "probabilities", "conv-head", "float16"],
)
def test_onnx_classifier_on_onnxruntime(tmp_path: Path, options: Dict[str, Any]) -> None:
    """A uniform grey frame of level v is class round(v / 255 * 4) of 5, with the softmax of the known logits."""
    pipeline = ModelPipeline.open(classifier(tmp_path, classes=5, **options), backend="onnxruntime")
    try:
        assert isinstance(pipeline.parser, ClassificationParser)
        tolerance = 2e-3 if options.get("dtype") == "float16" else 1e-5
        for level, best in ((0, 0), (64, 1), (128, 2), (191, 3), (255, 4)):
            result, tensor = classify(pipeline, grey(level), top_k=3)
            assert result.class_ids[0] == best
            expected = softmax(classifier_logits(tensor, 5)[0])
            order = np.argsort(-expected, kind="stable")[:3]
            np.testing.assert_array_equal(result.class_ids, order)
            np.testing.assert_allclose(result.scores, expected[order], atol=tolerance)
            labels = [pipeline.spec.classification.label_for(c) for c in result.class_ids.tolist()]
            assert labels[0] == f"level_{best}"
    finally:
        pipeline.close()


def test_onnx_sigmoid_head(tmp_path: Path) -> None:
    model = classifier(tmp_path, classes=3, sharpness=2.0, activation="sigmoid")
    pipeline = ModelPipeline.open(model, backend="onnxruntime")
    try:
        result, tensor = classify(pipeline, grey(255), top_k=3)
        logits = classifier_logits(tensor, 3, 2.0)[0]  # [-4, -2, 0]
        np.testing.assert_array_equal(result.class_ids, [2, 1, 0])
        np.testing.assert_allclose(result.scores, 1 / (1 + np.exp(-logits[[2, 1, 0]])), rtol=1e-5)
    finally:
        pipeline.close()


def test_tensorrt_double_engine_gives_the_onnx_answer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gpu = FakeGpu()
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt_module("10.0.1", gpu))
    install_cuda_python(monkeypatch, gpu)
    (tmp_path / "trt").mkdir()
    (tmp_path / "onnx").mkdir()
    engine = classifier_engine(tmp_path / "trt", "10.0.1", gpu.compute_capability, classes=5, conv_head=True)
    trt = ModelPipeline.open(engine, backend="tensorrt", backend_options={"cuda": "cuda-python"})
    onnx = ModelPipeline.open(classifier(tmp_path / "onnx", classes=5, conv_head=True), backend="onnxruntime")
    try:
        assert trt.backend.name == "tensorrt"
        for level in (30, 100, 200):
            got, _ = classify(trt, grey(level))
            want, _ = classify(onnx, grey(level))
            np.testing.assert_array_equal(got.class_ids, want.class_ids)
            np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    finally:
        trt.close()
        onnx.close()
