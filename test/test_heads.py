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
    assert backend_options("pilot", ModelConfig(model=str(tmp_path / "p.onnx"), auto_build=True)) == {}
