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
