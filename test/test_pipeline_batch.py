"""Frames of several cameras ready together run as one batch through a model with a batch dimension > 1
(dynamic or static; ONNX Runtime, and TensorRT engines on the doubles of test/fakes), with the same results as one
frame at a time; other models run in turn."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Tuple

import numpy as np
import onnx
import pytest
import yaml
from fakes.cuda_fake import FakeGpu, install_cuda_python
from fakes.tensorrt_fake import make_plan, make_tensorrt_module, register_program
from head_factory import colour_classifier
from onnx_factory import brightness_pilot

from trt_perception.heads import Head, open_model
from trt_perception.images import DecodedImage
from trt_perception.pipeline import MAX_BATCH, FrameProcessor, PreparedFrame, finish_batch


def batched(model: Path, batch: Any) -> Path:
    """The same ONNX with its batch dimension set to ``batch`` (a name: dynamic; an int: static)."""
    proto = onnx.load(str(model))
    for value in [*proto.graph.input, *proto.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        if isinstance(batch, str):
            dim.dim_param = batch
        else:
            dim.dim_value = batch
    onnx.save(proto, str(model))
    return model


def frame(seed: int, size: Tuple[int, int] = (48, 64)) -> DecodedImage:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    array[..., seed % 3] = 250  # a dominant channel, so the top class differs between frames
    return DecodedImage(array, "bgr")


def count_calls(head: Head) -> List[int]:
    """Wrap the head's backend.infer: the batch size of each call."""
    calls: List[int] = []
    backend = head.pipeline.backend
    infer: Callable[..., Any] = backend.infer

    def counting(feed: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(int(next(iter(feed.values())).shape[0]))
        return infer(feed, *args, **kwargs)

    backend.infer = counting  # type: ignore[method-assign]
    return calls


def cameras(head: Head, count: int, extra: Any = None) -> List[FrameProcessor]:
    """One FrameProcessor per camera sharing ``head``'s model (as heads.create_camera_processors makes them)."""
    processors = []
    for index in range(count):
        heads = [head if index == 0 else head.for_camera()]
        if extra is not None and index == 0:
            heads.append(extra)
        processors.append(FrameProcessor(heads))
    return processors


def scores(result: Any, name: str = "colours") -> List[float]:
    return [round(float(v), 6) for v in result.outputs[name].result.scores]


@pytest.mark.parametrize(("batch", "capacity"), [("N", MAX_BATCH), (1, 1), (4, 4)])
def test_batch_capacity_follows_the_models_batch_dimension(tmp_path: Path, batch: Any, capacity: int) -> None:
    head = open_model(batched(colour_classifier(tmp_path), batch), name="colours")
    assert head.pipeline.batch_capacity == capacity
    assert FrameProcessor([head]).can_batch is (capacity > 1)
    assert open_model(brightness_pilot(tmp_path), name="pilot").pipeline.batch_capacity == 1
    head.close()


@pytest.mark.parametrize(("batch", "frames", "calls"), [("N", 3, [3]), ("N", MAX_BATCH + 2, [MAX_BATCH, 2]),
                                                       (1, 3, [1, 1, 1]), (4, 6, [4, 4])])
def test_frames_ready_together_run_as_one_batch_with_the_same_results(
    tmp_path: Path, batch: Any, frames: int, calls: List[int]
) -> None:
    head = open_model(batched(colour_classifier(tmp_path), batch), name="colours")
    processors = cameras(head, frames)
    images = [frame(seed) for seed in range(frames)]
    expected = [scores(p.process_image(image, 0.0)) for p, image in zip(processors, images)]
    seen = count_calls(head)
    results = finish_batch([(p, PreparedFrame(image, 0.001), 0.0) for p, image in zip(processors, images)])
    assert seen == calls
    assert [scores(r) for r in results] == expected
    assert [r.outputs["colours"].result.labels[0] for r in results] == [["blue", "green", "red"][s % 3] for s in
                                                                         range(frames)]  # fmt: skip
    assert all(r.timings["decode"] == 0.001 and "colours.infer" in r.timings for r in results)
    head.close()


def test_models_without_a_batch_dimension_run_in_turn_beside_a_batched_one(tmp_path: Path) -> None:
    classifier = open_model(batched(colour_classifier(tmp_path), "N"), name="colours")
    pilot = open_model(brightness_pilot(tmp_path), name="pilot")  # batch 1, on camera 0 only
    processors = cameras(classifier, 3, extra=pilot)
    images = [frame(seed, (60, 80)) for seed in range(3)]
    expected = [p.process_image(image, 0.0) for p, image in zip(processors, images)]
    classifier_calls, pilot_calls = count_calls(classifier), count_calls(pilot)
    results = finish_batch([(p, PreparedFrame(image, 0.0), 0.0) for p, image in zip(processors, images)])
    assert classifier_calls == [3] and pilot_calls == [1]
    assert [scores(r) for r in results] == [scores(r) for r in expected]
    assert list(results[0].outputs) == ["colours", "pilot"]  # the camera's head order
    assert results[0].steering.angle == pytest.approx(expected[0].steering.angle)  # type: ignore[union-attr]
    classifier.close()
    pilot.close()


def test_outputs_that_are_not_one_row_per_frame_run_in_turn_from_then_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A model whose dynamic first output dimension is not the batch (here: 3 frames' scores in one row) cannot
    be split per frame: the frames run one at a time with their own results, and the model is not batched
    again (said once in the log)."""
    head = open_model(batched(colour_classifier(tmp_path), "N"), name="colours")
    processors = cameras(head, 3)
    images = [frame(seed) for seed in range(3)]
    expected = [scores(p.process_image(image, 0.0)) for p, image in zip(processors, images)]
    infer = head.pipeline.backend.infer

    def one_row(feed: Any) -> Any:
        return {k: v.reshape(1, -1) for k, v in infer(feed).items()}

    head.pipeline.backend.infer = one_row  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="trt_perception"):
        results = finish_batch([(p, PreparedFrame(image, 0.0), 0.0) for p, image in zip(processors, images)])
    assert [scores(r) for r in results] == expected
    assert head.pipeline.batch_capacity == 1 and "is not the batch" in caplog.text
    head.close()


def test_different_frame_sizes_share_one_batch(tmp_path: Path) -> None:
    head = open_model(batched(colour_classifier(tmp_path), "N"), name="colours")
    processors = cameras(head, 2)
    images = [frame(0, (48, 64)), frame(1, (720, 1280))]
    expected = [scores(p.process_image(image, 0.0)) for p, image in zip(processors, images)]
    results = finish_batch([(p, PreparedFrame(image, 0.0), 0.0) for p, image in zip(processors, images)])
    assert [scores(r) for r in results] == expected
    head.close()


def test_a_static_batch_model_runs_one_frame_in_row_0(tmp_path: Path) -> None:
    """A model exported for a fixed batch of 4 runs single frames too (the frame in row 0, the rest zero): the
    same result as the batch-1 model."""
    (tmp_path / "one").mkdir()
    (tmp_path / "four").mkdir()
    single = open_model(colour_classifier(tmp_path / "one"), name="colours")
    four = open_model(batched(colour_classifier(tmp_path / "four"), 4), name="colours")
    assert four.pipeline.static_batch == 4 and not four.pipeline.runs_ahead
    seen = count_calls(four)
    for seed in range(3):
        image = frame(seed)
        assert scores(FrameProcessor([four]).process_image(image, 0.0)) == scores(
            FrameProcessor([single]).process_image(image, 0.0))
    assert seen == [4, 4, 4]
    single.close()
    four.close()


# ------------------------------------------------------------------------- TensorRT engines (the doubles)


@register_program("item_mean")
def _item_mean(inputs: Dict[str, np.ndarray], outputs: Dict[str, Any], params: Mapping[str, Any]) -> Dict[str, Any]:
    """angle = each batch item's mean weighted by a ramp (layout-sensitive), throttle = its plain mean."""
    first = next(iter(inputs.values())).astype(np.float64)
    flat = first.reshape(first.shape[0], -1)
    ramp = np.linspace(0.0, 1.0, flat.shape[1])
    values = {"angle": (flat * ramp).mean(axis=1), "throttle": flat.mean(axis=1)}
    return {name: values[name].reshape(shape).astype(dtype) for name, (shape, dtype) in outputs.items()}


def trt_pilot(monkeypatch: pytest.MonkeyPatch, folder: Path, kind: str) -> Head:
    """A steering engine on the TensorRT double (TensorRT 8.6 tensor API, or 8.2 for implicit batch) whose
    outputs are per batch item: ``kind`` dynamic (profile 1..4, opt 2), static (batch 3) or implicit (max 4)."""
    gpu = FakeGpu()
    version = "8.2.1" if kind == "implicit" else "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt_module(version, gpu))
    install_cuda_python(monkeypatch, gpu)
    dims = [3, 12, 16]
    first = {"dynamic": [-1], "static": [3], "implicit": []}[kind]
    out = [1] if kind == "implicit" else [first[0], 1]
    tensors = [{"name": "img", "mode": "input", "shape": first + dims},
               {"name": "angle", "mode": "output", "shape": out}, {"name": "throttle", "mode": "output", "shape": out}]
    plan = make_plan(tensors, tensorrt_version=version, compute_capability=gpu.compute_capability,
                     program="item_mean", implicit_batch=kind == "implicit", max_batch_size=4,
                     profiles={"img": [[1, *dims], [2, *dims], [4, *dims]]} if kind == "dynamic" else None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pilot.engine").write_bytes(plan)
    spec = {"task": "steering", "input": {"name": "img", "height": 12, "width": 16, "scale": 1 / 255},
            "output": {"format": "steering_linear", "tensors": {"angle": "angle", "throttle": "throttle"}}}
    (folder / "pilot.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return open_model(folder / "pilot.engine", name="pilot")


@pytest.mark.parametrize(("kind", "capacity", "calls"), [("dynamic", 4, [4, 1]), ("static", 3, [3, 3]),
                                                         ("implicit", 4, [4, 1])])
def test_tensorrt_engines_batch_frames_of_several_cameras(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str, capacity: int, calls: List[int]
) -> None:
    """A TensorRT engine with a batch dimension (a dynamic one up to its profile's max, a static one, an
    implicit-batch engine up to its max batch size) runs the frames of several cameras as one batch, in chunks
    of what it takes, with the results of one frame at a time; single frames still run between batches."""
    head = trt_pilot(monkeypatch, tmp_path / kind, kind)
    assert head.pipeline.batch_capacity == capacity
    processors = cameras(head, 5)
    images = [frame(seed) for seed in range(5)]
    expected = [p.process_image(image, 0.0).steering for p, image in zip(processors, images)]
    assert len({round(e.angle, 9) for e in expected}) == 5  # type: ignore[union-attr]  # frames differ
    seen = count_calls(head)
    results = finish_batch([(p, PreparedFrame(image, 0.0), 0.0) for p, image in zip(processors, images)])
    assert seen == calls
    for want, got in zip(expected, results):
        assert got.steering.angle == pytest.approx(want.angle, abs=1e-6)  # type: ignore[union-attr]
        assert got.steering.throttle == pytest.approx(want.throttle, abs=1e-6)  # type: ignore[union-attr]
    again = processors[0].process_image(images[0], 0.0).steering  # one frame after a batch: same as before
    assert again.angle == pytest.approx(expected[0].angle, abs=1e-6)  # type: ignore[union-attr]
    head.close()
