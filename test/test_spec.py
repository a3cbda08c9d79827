"""Model specs: strict parsing, clear errors, discovery next to the model, overrides, checks against a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import yaml

from trt_perception.backends.base import TensorSpec
from trt_perception.errors import SpecError
from trt_perception.spec import (
    check_input,
    check_output_names,
    find_spec,
    load_spec,
    merge_overrides,
    parse_spec,
    save_spec,
)


def ssd_spec() -> Dict[str, Any]:
    return {
        "task": "detection",
        "input": {"name": "Input", "height": 300, "width": 300, "scale": 2 / 255, "offset": -1.0},
        "output": {"format": "nms_trt"},
        "detection": {"labels": ["background", "person", "car"], "score_threshold": 0.3, "classes": ["car"]},
    }


def test_defaults_and_scale_per_channel() -> None:
    spec = parse_spec(ssd_spec())
    assert spec.input.shape == (1, 3, 300, 300)
    assert spec.input.scale == pytest.approx((2 / 255,) * 3)
    assert spec.output.tensors == {"detections": "NMS", "count": "NMS_1"}
    assert spec.detection.allowed_class_ids() == frozenset({2})
    assert spec.detection.label_for(1) == "person"
    assert spec.detection.label_for(7) == "7"


def test_mean_std_becomes_scale_offset() -> None:
    data = ssd_spec()
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    data["input"] = {"name": "x", "height": 8, "width": 8, "mean": mean, "std": std}
    spec = parse_spec(data)
    x = np.array([123.675, 116.28, 103.53])
    assert np.allclose(x * np.array(spec.input.scale) + np.array(spec.input.offset), 0.0)


def test_nhwc_gray_shape() -> None:
    data = ssd_spec()
    data["input"].update(layout="nhwc", color="gray")
    assert parse_spec(data).input.shape == (1, 300, 300, 1)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"task": "tracking"}, "'task'"),
        ({"output": {"format": "yolo_v99"}}, "'output.format'"),
        ({"output": {"format": "steering_linear"}}, "steering format"),
        ({"input": {"name": "Input", "height": 0, "width": 300}}, "height/width"),
        ({"input": {"name": "Input", "height": 300, "width": 300, "colour": "RGB"}}, "input.colour"),
        ({"input": {"name": "Input", "height": 300, "width": 300, "scale": [1, 2]}}, "input.scale"),
        ({"input": {"height": 300, "width": 300}}, "'input.name' is missing"),
        ({"detection": {"score_threshold": 1.5}}, "detection.score_threshold"),
        ({"detection": {"classes": ["unicorn"]}}, "'unicorn'"),
        ({"version": 2}, "'version'"),
    ],
)
def test_bad_specs_name_the_key(change: Dict[str, Any], needle: str) -> None:
    data = ssd_spec()
    data.update(change)
    with pytest.raises(SpecError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(data)


def test_find_spec_prefers_engine_sidecar(tmp_path: Path) -> None:
    model = tmp_path / "ssd.engine"
    model.write_bytes(b"x")
    assert find_spec(model) is None
    (tmp_path / "ssd.yaml").write_text(yaml.safe_dump(ssd_spec()))
    assert find_spec(model) == tmp_path / "ssd.yaml"
    (tmp_path / "ssd.engine.yaml").write_text(yaml.safe_dump(ssd_spec()))
    assert find_spec(model) == tmp_path / "ssd.engine.yaml"


def test_missing_spec_lists_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"m\.onnx\.yaml.*m\.yaml"):
        load_spec(tmp_path / "m.onnx")


def test_labels_file_relative_to_spec_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("background\nperson\ncar\n")
    data = ssd_spec()
    data["detection"] = {"labels": "labels.txt"}
    (tmp_path / "ssd.yaml").write_text(yaml.safe_dump(data))
    spec = load_spec(tmp_path / "ssd.onnx", overrides={"detection.score_threshold": 0.9})
    assert spec.detection.labels == ("background", "person", "car")
    assert spec.detection.score_threshold == 0.9



def test_binary_or_unreadable_spec_files_are_spec_errors(tmp_path: Path) -> None:
    """`--spec model.onnx` (a common slip), a folder, a deep-nested YAML: SpecError naming the file and the fix,
    never UnicodeDecodeError / IsADirectoryError / RecursionError."""
    binary = tmp_path / "model.onnx"
    binary.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(range(256)) * 4)
    with pytest.raises(SpecError, match=r"model\.onnx is not a text file .*byte \d+.*fix: pass the \.yaml"):
        load_spec(spec_path=binary)
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(SpecError, match=r"folder\.yaml is a folder"):
        load_spec(spec_path=folder)
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 50000)
    with pytest.raises(SpecError, match=r"deep\.yaml is not valid YAML.*(nesting|nested too deeply)"):
        load_spec(spec_path=deep)


def test_binary_labels_file_is_a_spec_error(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_bytes(bytes(range(128, 256)))
    data = ssd_spec()
    data["detection"] = {"labels": "labels.txt"}
    (tmp_path / "ssd.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"detection\.labels.*labels\.txt is not a text file"):
        load_spec(tmp_path / "ssd.onnx")
    (tmp_path / "labels.txt").unlink()
    (tmp_path / "labels.txt").mkdir()
    with pytest.raises(SpecError, match=r"detection\.labels.*labels\.txt"):
        load_spec(tmp_path / "ssd.onnx")

def test_merge_overrides_is_deep_and_copies() -> None:
    data = ssd_spec()
    merged = merge_overrides(data, {"input": {"height": 10}, "detection.iou_threshold": 0.1})
    assert merged["input"]["height"] == 10 and merged["input"]["width"] == 300
    assert data["input"]["height"] == 300


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    save_spec(ssd_spec(), path)
    with pytest.raises(SpecError, match="refusing to overwrite"):
        save_spec(ssd_spec(), path)
    save_spec(ssd_spec(), path, overwrite=True)
    assert load_spec(spec_path=path).task == "detection"


def test_check_against_model_names_tensor_spec_and_model() -> None:
    spec = parse_spec(ssd_spec())
    good = [TensorSpec("Input", (1, 3, 300, 300), np.dtype(np.float32))]
    assert check_input(spec, good).name == "Input"
    # implicit-batch engines leave the batch dimension out; FP16 inputs are accepted for float specs
    assert check_input(spec, [TensorSpec("Input", (3, 300, 300), np.dtype(np.float16))]).name == "Input"
    with pytest.raises(SpecError, match=r"'Input'.*\(1, 3, 320, 320\).*\(1, 3, 300, 300\)"):
        check_input(spec, [TensorSpec("Input", (1, 3, 320, 320), np.dtype(np.float32))])
    with pytest.raises(SpecError, match="no such input.*'images'"):
        check_input(spec, [TensorSpec("images", (1, 3, 300, 300), np.dtype(np.float32))])
    with pytest.raises(SpecError, match="dtype uint8"):
        check_input(spec, [TensorSpec("Input", (1, 3, 300, 300), np.dtype(np.uint8))])
    with pytest.raises(SpecError, match="output.tensors.count is 'NMS_1'"):
        check_output_names(spec, [TensorSpec("NMS", (1, 100, 7), np.dtype(np.float32))])


# ------------------------------------------------------------------- pilot inputs, sequences, masks


def pilot_spec(**extra: Any) -> Dict[str, Any]:
    spec: Dict[str, Any] = {
        "task": "steering",
        "input": {"name": "img_in", "height": 120, "width": 160, "layout": "NHWC", "scale": 1 / 255},
        "output": {"format": "steering_linear", "tensors": {"angle": "angle", "throttle": "throttle"}},
    }
    spec.update(extra)
    return spec


def test_extra_inputs_parse_with_donkeycar_defaults() -> None:
    spec = parse_spec(pilot_spec(inputs={
        "mem_in": {"source": "memory", "length": 3},
        "imu_in": {"source": "imu"},
        "xbehavior_in": {"source": "behavior", "labels": ["Left_Lane", "Right_Lane"]},
    }))
    memory, imu, behavior = spec.inputs
    assert (memory.name, memory.size, memory.start) == ("mem_in", 6, (0.0, 0.0))
    assert imu.fields == ("linear_acceleration.x", "linear_acceleration.y", "linear_acceleration.z",
                          "angular_velocity.x", "angular_velocity.y", "angular_velocity.z")
    assert imu.scale == pytest.approx((1, 1, 1, 57.29577951308232, 57.29577951308232, 57.29577951308232))
    assert (imu.topic, imu.max_age, imu.size) == ("imu", 0.25, 6)
    assert (behavior.topic, behavior.default, behavior.size) == ("behavior", "Left_Lane", 2)
    spec = parse_spec(pilot_spec(inputs={"imu_in": {"source": "imu", "fields": ["orientation.w"], "topic": "/car/imu",
                                                    "max_age": 1}}))
    assert spec.inputs[0].scale == (1.0,) and spec.inputs[0].topic == "/car/imu"


@pytest.mark.parametrize("inputs, needle", [
    ({"mem_in": {"source": "sonar"}}, "inputs.mem_in.source"),
    ({"mem_in": {"source": "memory"}}, "'inputs.mem_in.length' is missing"),
    ({"mem_in": {"source": "memory", "length": 0}}, "inputs.mem_in.length"),
    ({"mem_in": {"source": "memory", "length": 3, "start": [0.0]}}, "a list of 2 numbers"),
    ({"mem_in": {"source": "memory", "length": 3, "topic": "x"}}, r"unknown spec key\(s\) \['inputs.mem_in.topic'\]"),
    ({"imu_in": {"source": "imu", "fields": ["accel.x"]}}, "sensor_msgs/Imu fields"),
    ({"imu_in": {"source": "imu", "scale": [1.0]}}, "a list of 6 numbers"),
    ({"imu_in": {"source": "imu", "max_age": 0}}, "seconds in \\(0, 60\\]"),
    ({"imu_in": {"source": "imu", "topic": "/"}}, "a topic name"),
    ({"b": {"source": "behavior"}}, "inputs.b.labels"),
    ({"b": {"source": "behavior", "labels": ["a", "a"]}}, "distinct names"),
    ({"b": {"source": "behavior", "labels": ["a"], "default": "z"}}, "one of the labels"),
    ({"img_in": {"source": "memory", "length": 1}}, "other than the image"),
    ({"a": {"source": "imu"}, "b": {"source": "behavior", "labels": ["x"], "topic": "imu"}}, "one topic per input"),
    ({"mem_in": 3}, "a mapping with a source"),
])
def test_bad_extra_inputs_name_the_key(inputs: Dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        parse_spec(pilot_spec(inputs=inputs))


def test_extra_inputs_only_for_steering() -> None:
    spec = ssd_spec()
    spec["inputs"] = {"mem_in": {"source": "memory", "length": 1}}
    with pytest.raises(SpecError, match="feed steering pilots only"):
        parse_spec(spec)


def test_sequence_and_mask() -> None:
    spec = parse_spec(pilot_spec(input={"name": "img_in", "height": 120, "width": 160, "layout": "NHWC",
                                        "sequence": 3, "mask": {"top": 45, "right": 5}}))
    assert spec.input.shape == (1, 120, 160, 3) and spec.input.tensor_shape == (1, 3, 120, 160, 3)
    assert spec.input.mask == (((0, 45), (155, 45), (155, 120), (0, 120)),)
    nchw = parse_spec(pilot_spec(input={"name": "img_in", "height": 8, "width": 8, "sequence": 2}))
    assert nchw.input.tensor_shape == (1, 2, 3, 8, 8)
    polygon = parse_spec(pilot_spec(input={"name": "img_in", "height": 120, "width": 160,
                                           "mask": [{"polygon": [[0, 0], [9, 0], [9, 9]]}, {"bottom": 3}]}))
    assert polygon.input.mask == (((0, 0), (9, 0), (9, 9)), ((0, 0), (160, 0), (160, 117), (0, 117)))


@pytest.mark.parametrize("change, needle", [
    ({"sequence": -1}, "input.sequence"),
    ({"mask": {"top": 120}}, "masks everything"),
    ({"mask": {"top": -1}}, "non-negative pixel counts"),
    ({"mask": {"middle": 3}}, r"unknown spec key\(s\) \['input.mask.middle'\]"),
    ({"mask": {"polygon": [[0, 0], [1, 1]]}}, "at least 3"),
    ({"mask": [{"top": 1}, 5]}, r"input.mask\[1\]"),
    ({"mask": []}, "a region like"),
])
def test_bad_sequence_and_mask_name_the_key(change: Dict[str, Any], needle: str) -> None:
    base = {"name": "img_in", "height": 120, "width": 160, "layout": "NHWC"}
    with pytest.raises(SpecError, match=needle):
        parse_spec(pilot_spec(input={**base, **change}))


def test_check_input_of_a_sequence_model() -> None:
    spec = parse_spec(pilot_spec(input={"name": "img_in", "height": 120, "width": 160, "layout": "NHWC",
                                        "sequence": 3}))
    check_input(spec, [TensorSpec("img_in", (1, 3, 120, 160, 3), np.dtype(np.float32))])
    check_input(spec, [TensorSpec("img_in", (3, 120, 160, 3), np.dtype(np.float32))])  # implicit batch
    with pytest.raises(SpecError, match="a sequence of 3 frames"):
        check_input(spec, [TensorSpec("img_in", (1, 4, 120, 160, 3), np.dtype(np.float32))])
