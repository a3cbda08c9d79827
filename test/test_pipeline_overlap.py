"""FrameProcessor's two stages (prepare/finish, process_stream: decode overlapped with inference), max_pixels and
jpeg_reduce (reduced-size CPU JPEG decode, results still in full-frame pixels), through ONNX Runtime."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, List, Tuple

import cv2
import numpy as np
import pytest
from onnx_factory import brightness_pilot, grid_detector

from trt_perception.config import PerceptionConfig
from trt_perception.errors import ConfigError, ImageError, SpecError
from trt_perception.heads import create_frame_processor, open_model
from trt_perception.images import BufferPool, DecodedImage
from trt_perception.pipeline import MAX_BATCH, FrameProcessor


def jpeg_msg(image: np.ndarray, quality: int = 95) -> Any:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return SimpleNamespace(format="bgr8; jpeg compressed bgr8", data=data.tobytes())


def squares(width: int, height: int, box: Tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 30, (height, width, 3), dtype=np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def raw_msg(image: np.ndarray, encoding: str = "bgr8") -> Any:
    return SimpleNamespace(height=image.shape[0], width=image.shape[1], encoding=encoding,
                           step=image.shape[1] * image.shape[2] if image.ndim == 3 else image.shape[1],
                           data=image.tobytes(), is_bigendian=0)  # fmt: skip


def summary(result: Any) -> Any:
    out = {}
    for name, output in result.outputs.items():
        value = output.result
        if hasattr(value, "boxes"):
            out[name] = (value.boxes.tolist(), value.scores.tolist(), value.class_ids.tolist())
        else:
            out[name] = (value.angle, value.throttle)
    return out


def two_heads(tmp_path: Path) -> FrameProcessor:
    detector = open_model(grid_detector(tmp_path, resize="letterbox"), name="detector")
    pilot = open_model(brightness_pilot(tmp_path), name="pilot")
    return FrameProcessor([detector, pilot])


def mixed_frames(count: int = 12) -> List[Any]:
    """JPEG, raw bgr8, YUYV (converted into the pool) and one undecodable frame, in a stream."""
    msgs: List[Any] = []
    for i in range(count):
        image = squares(320, 240, (40 * (i % 6), 40, 40 * (i % 6) + 40, 80), seed=i)
        kind = i % 3
        if kind == 0:
            msgs.append(jpeg_msg(image))
        elif kind == 1:
            msgs.append(raw_msg(image))
        else:
            yuyv = cv2.cvtColor(image, cv2.COLOR_BGR2YUV)[:, :, 0].repeat(2, axis=1).reshape(240, 320, 2)
            msgs.append(raw_msg(np.ascontiguousarray(yuyv), "yuyv"))
    msgs.insert(5, SimpleNamespace(format="jpeg", data=b"\xff\xd8\xff garbage"))
    return msgs


def test_prepare_then_finish_is_process(tmp_path: Path) -> None:
    processor = two_heads(tmp_path)
    for msg in mixed_frames(6):
        try:
            expected = summary(processor.process(msg, 1.0))
        except ImageError:
            with pytest.raises(ImageError):
                processor.prepare(msg)
            continue
        result = processor.finish(processor.prepare(msg), 1.0)
        assert summary(result) == expected
        assert set(result.timings) >= {"decode", "detector.infer", "pilot.infer", "total"}
        assert result.timings["total"] >= result.timings["decode"]
    processor.close()


@pytest.mark.parametrize("overlap", [True, False])
def test_process_stream_equals_the_sequential_path(tmp_path: Path, overlap: bool) -> None:
    processor = two_heads(tmp_path)
    msgs = mixed_frames()
    expected: List[Any] = []
    for msg in msgs:
        try:
            expected.append(summary(processor.process(msg, 2.0)))
        except ImageError as exc:
            expected.append(type(exc))
    got: List[Any] = []
    pixels: List[np.ndarray] = []
    for item in processor.process_stream(((m, 2.0, i) for i, m in enumerate(msgs)), overlap=overlap):
        assert item.item[2] == len(got)  # in order, with the caller's extra fields
        if item.error is not None:
            got.append(type(item.error))
            continue
        got.append(summary(item.result))
        pixels.append(item.result.image.array.copy())  # the frame is valid until the next one is asked for
    assert got == expected
    assert got.count(ImageError) == 1
    decoded = [processor.decode(m).array.copy() for i, m in enumerate(msgs) if i != 5]  # 5: the bad one
    assert len(decoded) == len(pixels)
    for want, have in zip(decoded, pixels):
        np.testing.assert_array_equal(want, have)
    processor.close()


def test_stream_keeps_at_most_two_decoded_frames_and_stops_when_closed(tmp_path: Path) -> None:
    processor = two_heads(tmp_path)
    taken = []
    lock = threading.Lock()

    def source() -> Iterator[Tuple[Any, float]]:
        for i, msg in enumerate(mixed_frames(30)):
            with lock:
                taken.append(i)
            yield msg, 0.0

    stream = processor.process_stream(source())
    for count, _item in enumerate(stream, 1):
        with lock:
            ahead = len(taken) - count
        assert ahead <= 1  # the helper decodes one frame ahead, never more
        if count == 4:
            break
    stream.close()  # the helper thread ends; the source is not drained
    assert len(taken) <= 5
    assert not [t for t in threading.enumerate() if t.name == "trt_perception_decode"]
    processor.close()


def test_a_failing_source_is_raised_in_the_consumer(tmp_path: Path) -> None:
    processor = two_heads(tmp_path)

    def source() -> Iterator[Tuple[Any, float]]:
        yield mixed_frames(1)[0], 0.0
        raise OSError("bag damaged")

    stream = processor.process_stream(source())
    assert next(stream).result is not None
    with pytest.raises(OSError, match="bag damaged"):
        next(stream)
    processor.close()


def test_buffer_pool_depth_hands_out_arrays_in_turn() -> None:
    pool = BufferPool(depth=2)
    first, second, third = (pool.array((4, 4, 3)) for _ in range(3))
    assert first is not second and third is first
    assert BufferPool().array((2, 2)) is not None


# ---------------------------------------------------------------------------------------------- max_pixels


def test_max_pixels_param_reaches_the_decoder(tmp_path: Path) -> None:
    model = brightness_pilot(tmp_path)
    flat = {"detector.enabled": False, "pilot.enabled": True, "pilot.model": str(model), "max_pixels": 320 * 240}
    processor = create_frame_processor(PerceptionConfig.from_params(flat))
    assert processor.process(jpeg_msg(squares(320, 240, (0, 0, 8, 8))), 0.0).steering is not None
    with pytest.raises(ImageError, match=r"321x240 .*above max_pixels 76800.*fix"):
        processor.process(jpeg_msg(squares(321, 240, (0, 0, 8, 8))), 0.0)
    with pytest.raises(ImageError, match="above max_pixels 76800"):
        processor.process(raw_msg(squares(400, 240, (0, 0, 8, 8))), 0.0)
    processor.close()
    with pytest.raises(ConfigError, match=r"max_pixels is 0; expected in \[1, 1000000000\]"):
        PerceptionConfig.from_params({**flat, "max_pixels": 0})


# --------------------------------------------------------------------------------------------- jpeg_reduce


def test_reduction_factor_follows_every_heads_input(tmp_path: Path) -> None:
    detector = open_model(grid_detector(tmp_path, size=64), name="detector")  # 64x64 input
    pilot = open_model(brightness_pilot(tmp_path, height=120, width=160), name="pilot")  # 160x120
    processor = FrameProcessor([detector, pilot], jpeg_reduce="auto")
    assert processor.reduction(640, 480) == 4  # 160 * 4 <= 640, 120 * 4 <= 480
    assert processor.reduction(1280, 960) == 8
    assert processor.reduction(639, 480) == 2
    assert processor.reduction(320, 240) == 2
    assert processor.reduction(319, 240) == 1
    processor.close()
    with pytest.raises(ConfigError, match="jpeg_reduce is 'half'; expected one of"):
        FrameProcessor([open_model(brightness_pilot(tmp_path))], jpeg_reduce="half")


@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
def test_reduced_jpeg_decode_keeps_boxes_in_full_frame_pixels(tmp_path: Path, resize: str) -> None:
    detector = open_model(grid_detector(tmp_path, resize=resize), name="detector")  # 64x64: 640x480 -> 1/4
    full = FrameProcessor([detector], jpeg_reduce="off")
    reduced = FrameProcessor([detector], jpeg_reduce="auto")
    assert reduced.reduction(640, 480) == 4
    box = (160, 120, 240, 180) if resize == "stretch" else (160, 80, 240, 160)  # one model cell
    msg = jpeg_msg(squares(640, 480, box))
    want, got = full.process(msg, 0.0), reduced.process(msg, 0.0)
    assert isinstance(got.frame, DecodedImage)
    assert (got.frame.width, got.frame.height) == (160, 120) and got.frame.source_size == (640, 480)
    assert len(got.detections) == len(want.detections) == 1
    np.testing.assert_allclose(got.detections.boxes, want.detections.boxes, atol=0.5)
    np.testing.assert_allclose(got.detections.boxes[0], box, atol=0.5)
    image = got.image  # overlays and reports get the full-size frame
    assert (image.width, image.height) == (640, 480) and not image.reduced
    assert np.abs(image.array.astype(int) - want.image.array.astype(int)).mean() < 8
    png = SimpleNamespace(format="png", data=cv2.imencode(".png", squares(640, 480, box))[1].tobytes())
    assert reduced.process(png, 0.0).frame.source_size is None  # JPEG only
    raw = reduced.process(raw_msg(squares(640, 480, box)), 0.0)
    assert raw.frame.source_size is None
    full.close()


def test_reduced_decode_maps_crops_and_steering_back(tmp_path: Path) -> None:
    pilot = open_model(brightness_pilot(tmp_path, height=60, width=80), name="pilot")
    full = FrameProcessor([pilot])
    reduced = FrameProcessor([pilot], jpeg_reduce="auto")
    msg = jpeg_msg(np.full((240, 320, 3), 128, np.uint8))
    want, got = full.process(msg, 0.0), reduced.process(msg, 0.0)
    assert got.frame.width == 80  # 1/4
    assert got.steering.angle == pytest.approx(want.steering.angle, abs=0.02)
    full.close()


# ------------------------------------------------------------- models inferred ahead (replay's helper threads)


def test_prepare_ahead_then_finish_is_process(tmp_path: Path) -> None:
    """``prepare(ahead=True)`` preprocesses and infers the ONNX Runtime models with the decode; ``finish`` only
    parses and runs the tasks: the results are ``process``'s, the stage timings all there."""
    processor = two_heads(tmp_path)
    assert processor.runs_ahead and all(h.pipeline.runs_ahead for h in processor.heads)
    for msg in mixed_frames(6):
        try:
            expected = summary(processor.process(msg, 1.0))
        except ImageError:
            continue
        prepared = processor.prepare(msg, ahead=True)
        assert set(prepared.inferred) == {"detector", "pilot"}
        result = processor.finish(prepared, 1.0)
        assert summary(result) == expected
        for stage in ("preprocess", "infer", "postprocess"):
            assert result.timings[f"detector.{stage}"] >= 0.0
        assert result.timings["total"] >= result.timings["detector.infer"] + result.timings["decode"]
    processor.close()


def test_frames_inferred_ahead_in_threads_at_once_are_run_frame_by_frame(tmp_path: Path) -> None:
    """Several threads infer ahead at once (each with its own input tensor); parsed in order, every frame is
    what ``run`` gives it."""
    from concurrent.futures import ThreadPoolExecutor

    detector = open_model(grid_detector(tmp_path, resize="letterbox"), name="detector")
    pipeline = detector.pipeline
    images = [DecodedImage(squares(320, 240, (10 * i, 20, 10 * i + 60, 90), seed=i), "bgr") for i in range(24)]
    expected = [pipeline.run(image, detector.task.settings) for image in images]
    with ThreadPoolExecutor(4) as pool:
        ahead = list(pool.map(pipeline.infer_ahead, images))
    for want, inference in zip(expected, ahead):
        got = pipeline.parse_ahead(inference, detector.task.settings)
        np.testing.assert_array_equal(got.parsed.boxes, want.parsed.boxes)
        np.testing.assert_array_equal(got.parsed.scores, want.parsed.scores)
        assert got.transform == want.transform
    assert 1 <= len(pipeline._spares) <= 4  # one input tensor per thread that ran at once, kept for reuse
    detector.close()


def test_only_stateless_models_on_a_concurrent_backend_run_ahead(tmp_path: Path) -> None:
    detector = open_model(grid_detector(tmp_path, resize="letterbox"), name="detector")
    assert detector.pipeline.runs_ahead  # ONNX Runtime on the CPU
    detector.pipeline.backend.concurrent = False  # e.g. a TensorRT execution context
    assert not detector.pipeline.runs_ahead
    processor = FrameProcessor([detector])
    prepared = processor.prepare(jpeg_msg(squares(320, 240, (40, 40, 90, 90))), ahead=True)
    assert prepared.inferred == {}  # the model runs in the frame's turn instead
    assert summary(processor.finish(prepared, 1.0))["detector"][0]
    processor.close()


@pytest.mark.parametrize("batched", [False, True])
def test_an_inference_failing_ahead_is_raised_in_the_frames_turn(tmp_path: Path, batched: bool) -> None:
    """Alone (``prepare``) or in a batch (``prepare_many``, where the frames run again one by one and fail
    too): each frame carries its error to its turn, and nothing says the batch was the cause."""
    processor = batch_heads(tmp_path) if batched else two_heads(tmp_path)
    pilot = processor.head("pilot").pipeline

    def lost(feed: Any) -> Any:
        raise RuntimeError("device lost")

    pilot.backend.infer = lost
    msgs = [jpeg_msg(squares(320, 240, (40, 40, 90, 90), seed=i)) for i in range(3)]
    prepared = processor.prepare_many(msgs) if batched else [processor.prepare(msgs[0], ahead=True)]  # no raise
    for item in prepared:
        assert isinstance(item.inferred["pilot"], RuntimeError)
        with pytest.raises(RuntimeError, match="device lost"):
            processor.finish(item, 1.0)
    assert pilot.batch_capacity == (MAX_BATCH if batched else 1)
    processor.close()


def test_keep_frames_deepens_the_conversion_buffers(tmp_path: Path) -> None:
    """Frames in flight at once need as many reused conversion buffers (a YUYV frame stays intact while the
    next ``count - 1`` are decoded)."""
    processor = two_heads(tmp_path)
    assert processor.keep_frames(5) == 5
    yuyv = [m for m in mixed_frames(9) if getattr(m, "encoding", "") == "yuyv"]
    frames = [processor.decode(m) for m in yuyv]
    copies = [f.array.copy() for f in frames]
    assert len(frames) == 3
    for frame, copy in zip(frames, copies):  # none overwritten by the later ones
        np.testing.assert_array_equal(frame.array, copy)
    assert len({id(f.array) for f in frames}) == 3
    processor.close()


# ------------------------------------------------------------------ consecutive frames as one batch (replay)


def batch_heads(tmp_path: Path) -> FrameProcessor:
    """The two heads of ``two_heads`` on models with a dynamic batch dimension."""
    detector = open_model(grid_detector(tmp_path, resize="letterbox", batch="N"), name="detector")
    pilot = open_model(brightness_pilot(tmp_path, batch="N"), name="pilot")
    return FrameProcessor([detector, pilot])


def batch_sizes(processor: FrameProcessor) -> List[int]:
    """Wrap every head's backend.infer: the batch size of each call, in order."""
    sizes: List[int] = []
    for head in processor.heads:
        infer = head.pipeline.backend.infer

        def counting(feed: Any, infer: Any = infer) -> Any:
            sizes.append(int(next(iter(feed.values())).shape[0]))
            return infer(feed)

        head.pipeline.backend.infer = counting  # type: ignore[method-assign]
    return sizes


def test_consecutive_frames_inferred_as_one_batch_finish_as_process(tmp_path: Path) -> None:
    """``prepare_many``: every frame decoded (an undecodable one is its ImageError in the list), each model run
    once over the decodable frames, and each frame's turn gives exactly ``process``'s results."""
    (tmp_path / "static").mkdir()
    static = two_heads(tmp_path / "static")
    assert static.ahead_batch == 1
    static.close()
    processor = batch_heads(tmp_path)
    assert processor.ahead_batch == MAX_BATCH
    msgs = mixed_frames(12)
    expected = []
    for msg in msgs:
        try:
            expected.append(summary(processor.process(msg, 1.0)))
        except ImageError as exc:
            expected.append(type(exc))
    processor.keep_frames(len(msgs))  # the YUYV frames' converted buffers outlive the whole batch
    sizes = batch_sizes(processor)
    prepared = processor.prepare_many(msgs)
    assert sizes == [12, 12]  # 13 frames, one undecodable: one inference per model
    got = [type(p) if isinstance(p, Exception) else summary(processor.finish(p, 1.0)) for p in prepared]
    assert got == expected and expected.count(ImageError) == 1
    processor.close()


def batch_breaker(backend: Any, kind: str) -> None:
    """Make ``backend`` serve one frame but not a batch: raise (a dynamic batch its engine cannot serve), or
    give outputs that are not one row per frame (a first dimension that is not the batch)."""
    infer = backend.infer

    def single_frames(feed: Any) -> Any:
        rows = next(iter(feed.values())).shape[0]
        if rows > 1 and kind == "raises":
            raise RuntimeError("profile max batch 1")
        outputs = infer(feed)
        return {k: v.reshape(1, -1) for k, v in outputs.items()} if rows > 1 else outputs

    backend.infer = single_frames


@pytest.mark.parametrize(("kind", "said"), [("raises", "profile max batch 1"), ("not batch-first", "is not the batch")])
def test_a_model_failing_on_a_batch_runs_frame_by_frame_from_then_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, said: str
) -> None:
    """A model that runs one frame but not several (an engine that cannot serve the batch, or outputs that are
    not one row per frame): the batch's frames run one at a time with their own results, the model is not
    batched again, and the log says so once."""
    processor = batch_heads(tmp_path)
    pilot = processor.head("pilot").pipeline
    msgs = [jpeg_msg(squares(320, 240, (20 * i, 40, 20 * i + 60, 100), seed=i)) for i in range(5)]
    expected = [summary(processor.process(msg, 1.0)) for msg in msgs]
    batch_breaker(pilot.backend, kind)
    with caplog.at_level("WARNING", logger="trt_perception"):
        got = [summary(processor.finish(p, 1.0)) for p in processor.prepare_many(msgs)]
    assert got == expected
    assert pilot.batch_capacity == 1 and processor.head("detector").pipeline.batch_capacity == MAX_BATCH
    assert "head pilot: its model failed on a batch of 5 frames" in caplog.text and said in caplog.text
    processor.close()


def test_a_batch_inferred_ahead_equals_its_frames_inferred_alone(tmp_path: Path) -> None:
    """``infer_ahead_batch`` from several threads at once (each with its own batch tensor), the ssd_raw frames
    parsed with their batch: every frame's turn gives what ``run`` gives it, each frame's timings its share of
    the batch's; a setting changed after the batch (a live param) parses the frame again with the new one."""
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    detector = open_model(grid_detector(tmp_path, resize="letterbox", batch="N"), name="detector")
    pipeline = detector.pipeline
    settings = detector.task.settings
    images = [DecodedImage(squares(320, 240, (10 * i, 20, 10 * i + 60, 90), seed=i), "bgr") for i in range(24)]
    expected = [pipeline.run(image, settings) for image in images]
    with ThreadPoolExecutor(3) as pool:
        chunks = [images[i : i + 6] for i in range(0, 24, 6)]
        batches = list(pool.map(lambda chunk: pipeline.infer_ahead_batch(chunk, settings), chunks))
    ahead = [inference for batch in batches for inference in batch]
    assert all(inference.parsed is not None and inference.timings["postprocess"] > 0 for inference in ahead)
    for want, inference in zip(expected, ahead):
        got = pipeline.parse_ahead(inference, settings)
        assert got.parsed is inference.parsed  # taken from the batch, not parsed again
        np.testing.assert_array_equal(got.parsed.boxes, want.parsed.boxes)
        np.testing.assert_array_equal(got.parsed.scores, want.parsed.scores)
        assert got.transform == want.transform
    stricter = dataclasses.replace(settings, max_detections=0)
    again = pipeline.parse_ahead(ahead[3], stricter)
    assert again.parsed is not ahead[3].parsed and len(again.parsed.scores) == 0 < len(ahead[3].parsed.scores)
    assert pipeline.infer_ahead_batch(images[:2])[0].parsed is None  # no settings given: parsed in its turn
    assert 1 <= len(pipeline._spare_batches[6]) <= 3
    with pytest.raises(SpecError, match="17 frames for a model that takes 16 at once"):
        pipeline.infer_ahead_batch(images[:1] * 17)
    detector.close()
