"""End to end through ONNX Runtime: frames in, detections in source pixels / steering out, for every format."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import yaml
from onnx_factory import brightness_pilot, constant_outputs, grid_detector, nms_trt_rows

from trt_perception.errors import ImageError, SpecError
from trt_perception.heads import open_model
from trt_perception.images import DecodedImage
from trt_perception.pipeline import FrameProcessor
from trt_perception.results import Detections, SteeringPrediction


def white_square(width: int, height: int, box: tuple, color_order: str = "bgr") -> DecodedImage:
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return DecodedImage(image, color_order)


def test_grid_detector_letterbox_box_lands_where_drawn(tmp_path: Path) -> None:
    pipeline = open_model(grid_detector(tmp_path, resize="letterbox"))
    # 640x480 -> 64x64 letterbox: scale 0.1, 8 px of padding top and bottom; model cell (2, 2) = source
    # x 160..240, y 80..160.
    output = pipeline.run(white_square(640, 480, (160, 80, 240, 160)), 0.0)
    detections = output.result
    assert isinstance(detections, Detections)
    assert len(detections) == 1
    np.testing.assert_allclose(detections.boxes[0], [160, 80, 240, 160], atol=1e-3)
    assert detections.labels == ["blob"]
    assert detections.scores[0] == pytest.approx(1.0)
    assert set(output.timings) == {"preprocess", "infer", "postprocess"}


def test_grid_detector_stretch(tmp_path: Path) -> None:
    pipeline = open_model(grid_detector(tmp_path, resize="stretch"))
    # 320x160 -> 64x64 stretch: a model cell is 40 x 20 source pixels; cell (row 3, col 5)
    detections = pipeline.run(white_square(320, 160, (200, 60, 240, 80)), 0.0).result
    assert len(detections) == 1
    np.testing.assert_allclose(detections.boxes[0], [200, 60, 240, 80], atol=1e-3)


def test_grid_detector_thresholds_and_allow_list_change_at_run_time(tmp_path: Path) -> None:
    pipeline = open_model(grid_detector(tmp_path, resize="stretch"))
    image = white_square(64, 64, (0, 0, 8, 8))
    image.array[8:16, 8:16] = 100  # a dimmer cell scores 100/255 = 0.39
    assert len(pipeline.run(image, 0.0).result) == 1  # the spec's threshold is 0.5
    task = pipeline.task
    task.apply({**task.values, "score_threshold": 0.3})
    assert len(pipeline.run(image, 0.0).result) == 2
    task.apply({**task.values, "score_threshold": 0.9})
    assert len(pipeline.run(image, 0.0).result) == 1
    task.apply({**task.values, "score_threshold": 0.3, "classes": ["background"]})
    assert len(pipeline.run(image, 0.0).result) == 0
    task.apply({**task.values, "classes": ["1"]})
    assert len(pipeline.run(image, 0.0).result) == 2
    task.apply({**task.values, "score_threshold": -1.0, "classes": []})  # back to the spec's values
    assert len(pipeline.run(image, 0.0).result) == 1


def test_brightness_pilot_steering(tmp_path: Path) -> None:
    pipeline = open_model(brightness_pilot(tmp_path))
    image = np.zeros((240, 320, 3), np.uint8)
    image[..., 2] = 255  # BGR: the red channel full, the rest dark
    prediction = pipeline.run(DecodedImage(image, "bgr"), 0.0).result
    assert isinstance(prediction, SteeringPrediction)
    assert prediction.angle == pytest.approx(2 * (1 / 3) - 1, abs=1e-3)
    assert prediction.throttle == pytest.approx(1.0, abs=1e-3)


def test_nms_trt_layout_through_onnx_runtime(tmp_path: Path) -> None:
    rows = [[0, 3, 0.9, 0.1, 0.2, 0.5, 0.6], [0, 1, 0.4, 0.0, 0.0, 0.1, 0.1], [0, 2, 0.8, 0.5, 0.5, 1.0, 1.0]]
    spec = {
        "task": "detection",
        "input": {"name": "Input", "height": 300, "width": 300, "scale": 2 / 255, "offset": -1.0},
        "output": {"format": "nms_trt"},
        "detection": {"labels": ["background", "person", "bicycle", "car"], "score_threshold": 0.5},
    }
    pipeline = open_model(constant_outputs(tmp_path, "ssd", nms_trt_rows(rows), spec))
    detections = pipeline.run(DecodedImage(np.zeros((480, 640, 3), np.uint8), "bgr"), 0.0).result
    assert detections.labels == ["car", "bicycle"]
    np.testing.assert_allclose(detections.boxes, [[64, 96, 320, 288], [320, 240, 640, 480]], atol=1e-3)


@pytest.mark.parametrize("fmt", ["efficient_nms", "batched_nms"])
def test_plugin_nms_formats_through_onnx_runtime(tmp_path: Path, fmt: str) -> None:
    boxes = np.zeros((1, 10, 4), np.float32)
    boxes[0, :2] = [[0.1, 0.1, 0.3, 0.5], [0.5, 0.5, 0.9, 0.9]]
    scores = np.zeros((1, 10), np.float32)
    scores[0, :2] = [0.95, 0.7]
    classes = np.zeros((1, 10), np.int32 if fmt == "efficient_nms" else np.float32)
    classes[0, :2] = [2, 1]
    names = {"efficient_nms": ("num_detections", "detection_boxes", "detection_scores", "detection_classes"),
             "batched_nms": ("num_detections", "nmsed_boxes", "nmsed_scores", "nmsed_classes")}[fmt]
    count = np.array([[2]], np.int32) if fmt == "efficient_nms" else np.array([2], np.int32)
    outputs = dict(zip(names, (count, boxes, scores, classes)))
    spec = {
        "task": "detection",
        "input": {"name": "Input", "height": 300, "width": 300},
        "output": {"format": fmt, "normalized": True},
        "detection": {"labels": ["a", "b", "c"], "score_threshold": 0.5},
    }
    pipeline = open_model(constant_outputs(tmp_path, fmt, outputs, spec))
    detections = pipeline.run(DecodedImage(np.zeros((100, 200, 3), np.uint8), "rgb"), 0.0).result
    assert detections.labels == ["c", "b"]
    np.testing.assert_allclose(detections.boxes, [[20, 10, 60, 50], [100, 50, 180, 90]], atol=1e-3)


def test_spec_mismatch_is_refused_at_load_naming_the_tensor(tmp_path: Path) -> None:
    model = brightness_pilot(tmp_path)
    spec_path = tmp_path / "pilot.yaml"
    data = yaml.safe_load(spec_path.read_text())
    data["input"]["name"] = "image"
    spec_path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"'image'.*\['img_in'\]"):
        open_model(model)
    data["input"]["name"] = "img_in"
    data["output"]["tensors"]["throttle"] = "n_outputs1"
    spec_path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="n_outputs1"):
        open_model(model)


def test_frame_processor_decodes_once_and_runs_both_heads(tmp_path: Path) -> None:
    detector = open_model(grid_detector(tmp_path, resize="stretch"), name="detector")
    pilot = open_model(brightness_pilot(tmp_path), name="pilot")
    processor = FrameProcessor([detector, pilot])
    image = np.zeros((64, 64, 3), np.uint8)
    image[0:8, 0:8] = 255
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    msg = SimpleNamespace(format="jpeg", data=jpeg.tobytes())
    result = processor.process(msg, now=0.0)
    assert len(result.detections) == 1
    assert isinstance(result.steering, SteeringPrediction)
    assert result.command is not None and result.command.stop  # drive_enabled defaults to false: a stop
    for key in ("decode", "detector.preprocess", "detector.infer", "pilot.postprocess", "total"):
        assert key in result.timings
    with pytest.raises(ImageError):
        processor.process(SimpleNamespace(format="jpeg", data=b"not a jpeg"), now=0.0)
    processor.close()


def test_frame_processor_refuses_two_drivers_and_no_heads(tmp_path: Path) -> None:
    first = open_model(brightness_pilot(tmp_path), name="a")
    second = open_model(brightness_pilot(tmp_path), name="b")
    with pytest.raises(SpecError, match="all drive"):
        FrameProcessor([first, second])
    with pytest.raises(SpecError, match="nothing to run"):
        FrameProcessor([])
    first.close()
    second.close()


def test_missing_onnxruntime_is_a_clear_backend_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trt_perception.errors import BackendError

    model = brightness_pilot(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(BackendError, match="pip install onnxruntime"):
        open_model(model)


# ------------------------------------------------------------------------- DonkeyCar ROI crop and mask


def _donkey_normalize(rgb: np.ndarray) -> np.ndarray:
    """utils.normalize_image (autorope/donkeycar@cde8bbe9 utils.py:145-151) as the float32 TFLite feeds it."""
    return (rgb.astype(np.float64) * (1.0 / 255.0)).astype(np.float32)


def _donkey_img_crop(rgb: np.ndarray, top: int, bottom: int) -> np.ndarray:
    """utils.img_crop (utils.py:137-142), DonkeyCar 3.x's ROI crop."""
    end = rgb.shape[0] if bottom == 0 else -bottom
    return rgb[top:end, ...]


def _donkey_mask(rgb: np.ndarray, points: list) -> np.ndarray:
    """parts/cv.py ImgCropMask / ImgTrapezoidalMask .run (cv.py:472-524, 363-410), line for line."""
    mask = np.zeros(rgb.shape, dtype=np.int32)
    cv2.fillConvexPoly(mask, np.array(points, dtype=np.int32), [255, 255, 255])
    return np.multiply(rgb, np.asarray(mask, dtype="bool"))


def _pilot_input(tmp_path: Path, height: int, **input_extra: object) -> object:
    path = brightness_pilot(tmp_path, height=height)
    spec = yaml.safe_load(path.with_suffix(".yaml").read_text())
    spec["input"].update(input_extra)
    path.with_suffix(".yaml").write_text(yaml.safe_dump(spec))
    return open_model(path).pipeline


def _noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)


def test_spec_crop_is_donkeycar_3x_img_crop(tmp_path: Path) -> None:
    """DonkeyCar 3.x: the model takes IMAGE_H - top - bottom rows of the camera image; input.crop counts rows at
    model resolution, which for a frame of the camera size (120 rows) are the same rows: pixel for pixel."""
    rgb = _noise()
    pipeline = _pilot_input(tmp_path, 70, crop={"top": 40, "bottom": 10})
    pipeline.run(DecodedImage(rgb, "rgb"))
    expected = _donkey_normalize(_donkey_img_crop(rgb, 40, 10))
    np.testing.assert_allclose(pipeline.preprocessor.tensor[0], expected, atol=1e-6)


@pytest.mark.parametrize("region, points", [
    ({"top": 45, "bottom": 0, "left": 0, "right": 0}, [[0, 45], [160, 45], [160, 120], [0, 120]]),
    # odd sides: DonkeyCar's rectangle includes its edges, so bottom 5 keeps row 115 and right 7 keeps column 153
    ({"top": 30, "bottom": 5, "left": 3, "right": 7}, [[3, 30], [153, 30], [153, 115], [3, 115]]),
    ({"polygon": [[20, 60], [140, 60], [160, 120], [0, 120]]}, [[20, 60], [140, 60], [160, 120], [0, 120]]),
])
def test_spec_mask_is_donkeycar_crop_and_trapeze_transformations(tmp_path: Path, region: dict, points: list) -> None:
    """DonkeyCar >= 4.5 TRANSFORMATIONS ['CROP'] / ['TRAPEZE']: the pixels outside the region are zeroed at full
    size before x / 255 - the same tensor, pixel for pixel, with ROI_CROP_* / ROI_TRAPEZE_* copied as they are."""
    rgb = _noise(1)
    pipeline = _pilot_input(tmp_path, 120, mask=region)
    prediction = pipeline.run(DecodedImage(rgb, "rgb")).parsed
    expected = _donkey_normalize(_donkey_mask(rgb, points))
    np.testing.assert_allclose(pipeline.preprocessor.tensor[0], expected, atol=1e-6)
    assert prediction.angle == pytest.approx(2 * float(expected.mean()) - 1, abs=1e-5)
    if "top" in region and region["bottom"] == 5:
        assert pipeline.preprocessor.tensor[0, 115].any() and not pipeline.preprocessor.tensor[0, 116].any()
        assert pipeline.mask.kept == (153 - 3 + 1) * (115 - 30 + 1)


def test_mask_keeps_the_offset_of_black_and_joins_regions(tmp_path: Path) -> None:
    pipeline = _pilot_input(tmp_path, 120, mask=[{"top": 10}, {"left": 20}], scale=1 / 127.5, offset=-1.0)
    pipeline.run(DecodedImage(np.full((120, 160, 3), 255, np.uint8), "rgb"))
    tensor = pipeline.preprocessor.tensor[0]
    assert (tensor[:10] == -1.0).all() and (tensor[:, :20] == -1.0).all()
    np.testing.assert_allclose(tensor[10:, 20:], 1.0, atol=1e-6)


def test_gpu_preprocess_refuses_masks_and_sequences(tmp_path: Path) -> None:
    from trt_perception.pipeline import ModelPipeline

    path = brightness_pilot(tmp_path)
    spec = yaml.safe_load(path.with_suffix(".yaml").read_text())
    spec["input"]["mask"] = {"top": 40}
    path.with_suffix(".yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="input.mask, which the CPU preprocessing applies; fix: turn gpu_preprocess"):
        ModelPipeline.open(path, gpu_preprocess=True)


def test_frame_sequence_ring_keeps_the_last_n_in_order_without_new_buffers() -> None:
    from trt_perception.pipeline import FrameSequence

    frame = np.zeros((1, 2, 2, 1), np.float32)
    sequence = FrameSequence(3, frame)
    ring_address = sequence.ring.__array_interface__["data"][0]
    seen = []
    for value in range(1, 8):
        frame[...] = value
        view = sequence.push(frame)
        assert view.flags.c_contiguous and view.shape == (1, 3, 2, 2, 1)
        assert view.__array_interface__["data"][0] >= ring_address  # a view into the ring
        seen.append(view[0, :, 0, 0, 0].tolist())
    assert seen == [[1, 1, 1], [1, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6], [5, 6, 7]]
    sequence.restart()
    frame[...] = 9
    assert sequence.push(frame)[0, :, 0, 0, 0].tolist() == [9, 9, 9]
    assert sequence.ring.__array_interface__["data"][0] == ring_address
