"""heads.py: opening a config's heads (models, tasks, options, auto_build) behind one decode."""

from __future__ import annotations

import numpy as np
import pytest

from trt_perception.config import PerceptionConfig
from trt_perception.errors import BackendError, ConfigError
from trt_perception.heads import create_frame_processor

# -------------------------------------------------------------------------------------------- pipelines


@pytest.fixture
def models(tmp_path):
    from onnx_factory import brightness_pilot, grid_detector

    return grid_detector(tmp_path), brightness_pilot(tmp_path)


def test_create_frame_processor_opens_both_heads(models):
    detector, pilot = models
    config = PerceptionConfig.from_params(
        {
            "detector.model": str(detector),
            "detector.score_threshold": 0.3,
            "detector.max_detections": 3,
            "pilot.enabled": True,
            "pilot.model": str(pilot),
            "pilot.drive_enabled": True,
            "pilot.max_throttle": 0.25,
        }
    )
    processor = create_frame_processor(config)
    try:
        settings = processor.head("detector").task.settings
        assert settings.score_threshold == pytest.approx(0.3)
        assert settings.max_detections == 3
        assert settings.iou_threshold == pytest.approx(0.45)  # the spec's
        image = np.full((120, 160, 3), 255, np.uint8)
        from trt_perception.images import DecodedImage

        result = processor.process_image(DecodedImage(image, "rgb"), 1.0)
        assert result.command is not None and result.command.throttle == pytest.approx(0.25)
        assert processor.drive_head.task.safety.enabled
    finally:
        processor.close()


def test_create_frame_processor_errors_name_the_param(models, tmp_path):
    detector, pilot = models
    with pytest.raises(ConfigError, match=r"detector.model is .*does not exist; fix: set detector.model"):
        create_frame_processor(PerceptionConfig.from_params({"detector.model": str(tmp_path / "none.onnx")}))
    with pytest.raises(ConfigError, match="detector.model .* is a steering model"):  # the classic head's task
        create_frame_processor(PerceptionConfig.from_params({"detector.model": str(pilot)}))
    with pytest.raises(ConfigError, match="detector.spec"):
        create_frame_processor(
            PerceptionConfig.from_params({"detector.model": str(detector), "detector.spec": "/no/spec.yaml"})
        )
    with pytest.raises(ConfigError, match="detector.classes"):
        create_frame_processor(
            PerceptionConfig.from_params({"detector.model": str(detector), "detector.classes": ["zebra"]})
        )


def test_providers_reach_onnxruntime_and_missing_ones_fail(models):
    detector, _ = models
    config = PerceptionConfig.from_params(
        {"detector.model": str(detector), "detector.providers": ["NoSuchExecutionProvider"]}
    )
    with pytest.raises(BackendError, match="NoSuchExecutionProvider"):
        create_frame_processor(config)


def test_option_the_backend_does_not_take_is_refused(models):
    detector, _ = models
    config = PerceptionConfig.from_params(
        {"detector.model": str(detector), "detector.plugin_libraries": ["/x/libplugin.so"]}
    )
    with pytest.raises(ConfigError, match="detector.plugin_libraries .* onnxruntime backend takes no"):
        create_frame_processor(config)


def test_auto_build_builds_a_missing_engine_from_the_onnx_beside_it(models, monkeypatch):
    detector, _ = models
    engine = detector.with_suffix(".engine")
    calls = []

    def fake_build(onnx_path, engine_path, precision="fp16", **kw):
        calls.append((onnx_path, engine_path, precision))
        raise RuntimeError("stop here: no TensorRT in this test")

    monkeypatch.setattr("trt_perception.tools.build.build_engine", fake_build)
    config = PerceptionConfig.from_params({"detector.model": str(engine), "detector.auto_build": True})
    with pytest.raises(RuntimeError, match="stop here"):
        create_frame_processor(config)
    assert calls == [(str(detector), str(engine), "fp16")]


def test_auto_build_without_an_onnx_names_the_fix(tmp_path):
    config = PerceptionConfig.from_params(
        {"detector.model": str(tmp_path / "x.engine"), "detector.auto_build": True}
    )
    with pytest.raises(ConfigError, match=r"detector.auto_build has nothing to build it from .*x.onnx"):
        create_frame_processor(config)


def test_auto_build_maps_to_the_tensorrt_rebuild_option(tmp_path):
    from trt_perception.config import ModelConfig
    from trt_perception.heads import backend_options

    options = backend_options("pilot", ModelConfig(model=str(tmp_path / "p.engine"), auto_build=True))
    assert options == {"auto_rebuild": True}
    onnx_options = backend_options("pilot", ModelConfig(model=str(tmp_path / "p.onnx"), auto_build=True))
    assert "auto_rebuild" not in onnx_options


def test_onnxruntime_gets_the_session_options_and_tensorrt_refuses_them(tmp_path):
    from trt_perception.config import ModelConfig
    from trt_perception.heads import backend_options

    onnx_model = str(tmp_path / "m.onnx")
    assert backend_options("front", ModelConfig(model=onnx_model)) == {
        "threads": 2, "inter_op_threads": 0, "spinning": False, "optimization": "all"}
    tuned = ModelConfig(model=onnx_model, ort_threads=4, ort_spinning=True, ort_optimization="basic")
    assert backend_options("front", tuned)["threads"] == 4
    assert backend_options("front", ModelConfig(model=str(tmp_path / "m.engine"))) == {}
    with pytest.raises(ConfigError, match=r"front.ort_threads is set to 4 but the tensorrt backend takes no"):
        backend_options("front", ModelConfig(model=str(tmp_path / "m.engine"), ort_threads=4))


def test_session_options_reach_onnxruntime(tmp_path):
    from onnx_factory import brightness_pilot

    from trt_perception.heads import open_model

    model = brightness_pilot(tmp_path)
    head = open_model(model, backend_options={"threads": 1, "spinning": False, "optimization": "basic"})
    try:
        options = head.pipeline.backend.session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    finally:
        head.close()
    from trt_perception.backends.onnxruntime import OnnxRuntimeBackend
    from trt_perception.errors import BackendError as Error

    with pytest.raises(Error, match="optimisation level 'fastest'"):
        OnnxRuntimeBackend(model, optimization="fastest")


# ------------------------------------------------------------------------------------------ named heads


@pytest.fixture
def four_models(tmp_path):
    from head_factory import brightness_segmenter, colour_classifier
    from onnx_factory import brightness_pilot, grid_detector

    return {
        "front": grid_detector(tmp_path, resize="stretch"),
        "signs": colour_classifier(tmp_path),
        "blobs": brightness_segmenter(tmp_path, resize="stretch"),
        "pilot": brightness_pilot(tmp_path),
    }


def test_four_named_heads_share_one_decode_and_publish_under_their_names(four_models):
    from trt_perception.images import DecodedImage
    from trt_perception.messages import MessageTypes
    from trt_perception.results import Classification, Detections, SegmentationMask
    from trt_perception.rosbag_types import get_typestore

    flat = {"heads": list(four_models), **{f"{h}.model": str(m) for h, m in four_models.items()},
            "pilot.drive_enabled": True}
    config = PerceptionConfig.from_params(flat)  # tasks from each model's spec
    assert [(h.name, h.task) for h in config.heads] == [
        ("front", "detection"), ("signs", "classification"), ("blobs", "segmentation"), ("pilot", "steering")]
    processor = create_frame_processor(config)
    try:
        image = np.zeros((96, 128, 3), np.uint8)  # rgb
        image[0:12, 0:16] = 255  # one bright grid cell (the detector sees 8x8 cells of 16x12 pixels here)
        image[:, :, 0] = np.maximum(image[:, :, 0], 180)  # mostly red
        result = processor.process_image(DecodedImage(image, "rgb"), 1.0)
        outputs = result.outputs
        assert list(outputs) == ["front", "signs", "blobs", "pilot"]
        assert isinstance(outputs["front"].result, Detections) and len(outputs["front"].result) == 1
        top = outputs["signs"].result
        assert isinstance(top, Classification) and top.labels == ["red", "green"] and len(top) == 2
        mask = outputs["blobs"].result
        assert isinstance(mask, SegmentationMask) and mask.mask.shape == (96, 128)
        assert mask.mask[5, 5] == 1 and mask.mask[60, 100] == 0  # the bright cell, the red-only rest
        assert mask.fractions.sum() == pytest.approx(1.0)
        assert outputs["pilot"].command is not None and not outputs["pilot"].command.stop
        for head in ("front", "signs", "blobs", "pilot"):
            assert f"{head}.infer" in result.timings

        topics = {h.name: [(t.name, t.type) for t in h.task.topics(config.topic_prefix(h.name))]
                  for h in processor.heads}
        assert topics == {
            "front": [("front/detections", "Detection2DArray"), ("front/detections/overlay", "Image")],
            "signs": [("signs/classification", "Classification"), ("signs/classification/overlay", "Image")],
            "blobs": [("blobs/mask", "Image"), ("blobs/mask/overlay", "Image")],
            "pilot": [("cmd_vel", "Twist")],  # the car has one command topic
        }
        store = get_typestore("jazzy")
        types = MessageTypes.from_typestore(store)
        header = types.Header(stamp=types.Time(sec=3, nanosec=4), frame_id="cam")
        for head in processor.heads:  # every message builds and serializes with the real definitions
            canvas = image.copy()
            head.task.draw(canvas, outputs[head.name], "rgb")
            for role, message in head.task.messages(types, header, outputs[head.name]):
                assert message.header.stamp.sec == 3 if hasattr(message, "header") else True
                from trt_perception.messages import MESSAGE_CLASSES

                kind = dict((t.role, t.type) for t in head.task.topics(""))[role]
                package, name = MESSAGE_CLASSES[kind]
                assert store.serialize_cdr(message, f"{package}/msg/{name}")
        diag = processor.head("blobs").task.diagnostics(outputs["blobs"])
        assert set(diag) == {"area.background", "area.blob"}
    finally:
        processor.close()


def test_a_head_whose_model_is_of_another_task_is_refused(four_models):
    flat = {"heads": ["signs"], "signs.task": "segmentation", "signs.model": str(four_models["signs"])}
    with pytest.raises(ConfigError, match=r"signs.model .* is a classification model .* set signs.task"):
        create_frame_processor(PerceptionConfig.from_params(flat))


def test_legacy_topics_keep_their_names():
    config = PerceptionConfig.from_params({"detector.model": "/d.onnx"})
    assert config.legacy and config.topic_prefix("detector") == ""
