"""`trt-perception spec` (spec_writer) and `inspect`'s output value-range check, on test-built ONNX models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import yaml
from onnx import TensorProto
from spec_writer_factory import (
    ULTRALYTICS_META,
    model_with_outputs,
    ssd_heads,
    ultralytics_classify,
    ultralytics_detect,
    ultralytics_end_to_end,
    ultralytics_segment,
    yolo_predictions,
)

from trt_perception.cli import main
from trt_perception.spec import load_spec, parse_spec
from trt_perception.tools.inspect_model import check_output_ranges, synthetic_input
from trt_perception.tools.spec_writer import read_onnx

SCALE = 1 / 255


def spec_cli(capsys, *argv: str) -> Dict[str, Any]:
    """Run `trt-perception spec ...`; return rc, stdout, stderr."""
    rc = main(["spec", *argv])
    captured = capsys.readouterr()
    return {"rc": rc, "out": captured.out, "err": captured.err}


# ------------------------------------------------------------------------------------------ Ultralytics


def test_ultralytics_detect_gives_yolo_with_labels_letterbox_and_scale(tmp_path: Path, capsys) -> None:
    model = ultralytics_detect(tmp_path)
    result = spec_cli(capsys, str(model))
    assert result["rc"] == 0, result["err"]
    spec = load_spec(model)  # found beside the model as yolov8n.yaml
    assert spec.source == tmp_path / "yolov8n.yaml"
    assert spec.task == "detection"
    assert spec.output.format == "yolo"
    assert dict(spec.output.tensors) == {"predictions": "output0"}
    assert spec.detection.labels == ("person", "car")
    assert spec.detection.first_label_id == 0
    s = spec.input
    assert (s.name, s.height, s.width, s.layout, s.color) == ("images", 320, 320, "NCHW", "RGB")
    assert (s.resize, s.pad_value, s.dtype) == ("letterbox", 114.0, "float32")
    assert s.scale == pytest.approx((SCALE,) * 3) and s.offset == (0.0, 0.0, 0.0)
    out = result["out"]
    assert "format yolo: output0 [1, 6, 2100] = 4 box rows" in out
    assert "2 classes" in out and "Ultralytics metadata task=detect" in out
    assert "color RGB: Ultralytics export (metadata author Ultralytics)" in out
    assert "labels: 2 from Ultralytics metadata 'names' (person, car)" in out
    assert "CHECK" not in (tmp_path / "yolov8n.yaml").read_text()  # nothing guessed


def test_yaml_keeps_comments_and_validates(tmp_path: Path, capsys) -> None:
    model = ultralytics_detect(tmp_path)
    assert spec_cli(capsys, str(model))["rc"] == 0
    text = (tmp_path / "yolov8n.yaml").read_text()
    assert text.startswith("# Model spec written by `trt-perception spec` from yolov8n.onnx")
    assert "color: RGB  # Ultralytics export" in text
    assert "labels:  # 2, from Ultralytics metadata 'names'" in text
    parse_spec(yaml.safe_load(text))


def test_ultralytics_nms_export_is_end_to_end(tmp_path: Path, capsys) -> None:
    model = ultralytics_end_to_end(tmp_path)
    result = spec_cli(capsys, str(model))
    assert result["rc"] == 0, result["err"]
    spec = load_spec(model)
    assert spec.output.format == "end_to_end"
    assert dict(spec.output.tensors) == {"detections": "output0"}
    assert spec.detection.max_detections == 300
    assert "nms=True" in result["out"]


def test_ultralytics_classify_is_classification_without_activation(tmp_path: Path, capsys) -> None:
    model = ultralytics_classify(tmp_path)
    assert spec_cli(capsys, str(model))["rc"] == 0
    spec = load_spec(model)
    assert spec.task == "classification"
    assert spec.output.format == "classification"
    assert spec.output.params["activation"] == "none"  # Classify head exports x.softmax(1)
    assert spec.classification.labels == ("person", "car")
    assert (spec.input.height, spec.input.width, spec.input.color) == (224, 224, "RGB")


def test_ultralytics_segment_is_refused_naming_what_is_supported(tmp_path: Path, capsys) -> None:
    model = ultralytics_segment(tmp_path)
    result = spec_cli(capsys, str(model))
    assert result["rc"] == 2
    assert "instance segmentation" in result["err"] and "not supported yet" in result["err"]
    assert "detect" in result["err"] and "classify" in result["err"]
    assert not (tmp_path / "yolov8n-seg.yaml").exists()


def test_ultralytics_dynamic_input_takes_imgsz(tmp_path: Path, capsys) -> None:
    model = model_with_outputs(
        tmp_path, "dyn", {"output0": yolo_predictions()}, dict(ULTRALYTICS_META),
        input_shape=("batch", 3, "height", "width"), declared={"output0": ("batch", 6, "anchors")},
    )
    result = spec_cli(capsys, str(model), "--print")
    assert result["rc"] == 0, result["err"]
    data = yaml.safe_load(result["out"])
    assert (data["input"]["height"], data["input"]["width"]) == (320, 320)
    assert data["output"]["format"] == "yolo"
    assert "imgsz [320, 320]" in result["err"]


def test_names_with_yaml_special_words_round_trip(tmp_path: Path, capsys) -> None:
    names = "{0: 'no', 1: 'traffic light', 2: \"it's\", 3: 'null'}"
    meta = dict(ULTRALYTICS_META, names=names)
    model = model_with_outputs(tmp_path, "odd", {"output0": yolo_predictions(nc=4)}, meta)
    result = spec_cli(capsys, str(model), "--print")
    assert result["rc"] == 0, result["err"]
    assert yaml.safe_load(result["out"])["detection"]["labels"] == ["no", "traffic light", "it's", "null"]


@pytest.mark.parametrize(
    ("builder", "parser_module"),
    [
        (ultralytics_detect, "trt_perception.outputs.yolo"),
        (ultralytics_end_to_end, "trt_perception.outputs.end_to_end"),
        (ultralytics_classify, "trt_perception.outputs.classification"),
    ],
)
def test_written_spec_passes_inspect(tmp_path: Path, capsys, builder, parser_module: str) -> None:
    pytest.importorskip(parser_module)
    model = builder(tmp_path)
    assert spec_cli(capsys, str(model))["rc"] == 0
    assert main(["inspect", str(model)]) == 0
    out = capsys.readouterr().out
    assert "check: spec matches the model's inputs and outputs" in out
    assert "WARNING" not in out


# -------------------------------------------------------------------------------- writing and refusing


def test_refuses_to_overwrite_without_force(tmp_path: Path, capsys) -> None:
    model = ultralytics_detect(tmp_path)
    target = tmp_path / "yolov8n.yaml"
    target.write_text("my: hand-written spec\n")
    result = spec_cli(capsys, str(model))
    assert result["rc"] == 2
    assert "refusing to overwrite" in result["err"] and "--force" in result["err"]
    assert target.read_text() == "my: hand-written spec\n"
    assert spec_cli(capsys, str(model), "--force")["rc"] == 0
    assert load_spec(model).output.format == "yolo"


def test_print_writes_yaml_to_stdout_and_no_file(tmp_path: Path, capsys) -> None:
    model = ultralytics_detect(tmp_path)
    result = spec_cli(capsys, str(model), "--print")
    assert result["rc"] == 0
    assert parse_spec(yaml.safe_load(result["out"])).output.format == "yolo"
    assert "format yolo" in result["err"]  # the report stays off stdout
    assert not (tmp_path / "yolov8n.yaml").exists()


def test_output_path(tmp_path: Path, capsys) -> None:
    model = ultralytics_detect(tmp_path)
    target = tmp_path / "specs" / "v8.yaml"
    target.parent.mkdir()
    assert spec_cli(capsys, str(model), "--output", str(target))["rc"] == 0
    assert load_spec(model, target).output.format == "yolo"


def test_inspect_write_spec_alias(tmp_path: Path, capsys) -> None:
    model = ultralytics_detect(tmp_path)
    assert main(["inspect", str(model), "--write-spec"]) == 0
    assert "format yolo" in capsys.readouterr().out
    assert load_spec(model).output.format == "yolo"
    assert main(["inspect", str(model), "--write-spec"]) == 2  # never overwrites
    assert "refusing to overwrite" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ without metadata


def test_plain_yolo_layout_marks_guesses(tmp_path: Path, capsys) -> None:
    model = model_with_outputs(tmp_path, "plain", {"output0": yolo_predictions(nc=80)})
    result = spec_cli(capsys, str(model))
    assert result["rc"] == 0, result["err"]
    spec = load_spec(model)
    assert spec.output.format == "yolo"
    assert (spec.input.resize, spec.input.pad_value) == ("letterbox", 114.0)  # YOLO exporters letterbox
    assert spec.input.scale == pytest.approx((SCALE,) * 3)
    text = (tmp_path / "plain.yaml").read_text()
    assert "color: RGB  # CHECK:" in text and "scale: 0.00392156862745098  # CHECK:" in text
    assert "resize: letterbox  # CHECK:" in text
    out = result["out"]
    assert "80 classes" in out
    assert "mean/std: NOT in the file; default x/255 written, check it" in out
    assert "marked CHECK:" in out


def test_yolov5_layout_says_it_could_be_yolox(tmp_path: Path, capsys) -> None:
    preds = np.zeros((1, 3 * 2100, 5 + 3), np.float32)
    model = model_with_outputs(tmp_path, "v5", {"output0": preds})
    result = spec_cli(capsys, str(model), "--print")
    assert result["rc"] == 0, result["err"]
    assert yaml.safe_load(result["out"])["output"]["format"] == "yolov5"
    assert "yolox" in result["err"] and "--format" in result["err"]


def test_format_yolox_takes_yolox_conventions(tmp_path: Path, capsys) -> None:
    preds = np.zeros((1, 2100, 5 + 3), np.float32)
    model = model_with_outputs(tmp_path, "yx", {"output": preds})
    assert spec_cli(capsys, str(model), "--format", "yolox")["rc"] == 0
    spec = load_spec(model)
    assert spec.output.format == "yolox" and dict(spec.output.tensors) == {"predictions": "output"}
    assert spec.output.params["decode"] is True
    assert (spec.input.color, spec.input.resize, spec.input.pad_value) == ("BGR", "letterbox", 114.0)
    assert spec.input.scale == (1.0, 1.0, 1.0)


def test_end_to_end_by_shape(tmp_path: Path, capsys) -> None:
    model = model_with_outputs(tmp_path, "e2e", {"dets": np.zeros((1, 100, 6), np.float32)})
    assert spec_cli(capsys, str(model))["rc"] == 0
    spec = load_spec(model)
    assert spec.output.format == "end_to_end" and dict(spec.output.tensors) == {"detections": "dets"}


def test_yolov7_end2end_rows_by_shape(tmp_path: Path, capsys) -> None:
    model = model_with_outputs(tmp_path, "v7", {"output": np.zeros((100, 7), np.float32)},
                               declared={"output": ("num_dets", 7)})
    result = spec_cli(capsys, str(model), "--print")
    assert result["rc"] == 0, result["err"]
    assert yaml.safe_load(result["out"])["output"]["format"] == "end_to_end"
    assert "YOLOv7" in result["err"] and "--format classification" in result["err"]


def test_boxes_and_scores_pair_asks_for_format(tmp_path: Path, capsys) -> None:
    model = ssd_heads(tmp_path)
    result = spec_cli(capsys, str(model))
    assert result["rc"] == 2
    assert "--format boxes_scores" in result["err"] and "--format ssd_raw" in result["err"]
    assert not (tmp_path / "ssd.yaml").exists()
    assert spec_cli(capsys, str(model), "--format", "boxes_scores")["rc"] == 0
    spec = load_spec(model)
    assert spec.output.format == "boxes_scores"
    assert dict(spec.output.tensors) == {"boxes": "boxes", "scores": "scores"}
    assert (spec.output.params["box_format"], spec.output.params["normalized"]) == ("xyxy", True)
    assert "normalized: true  # CHECK:" in (tmp_path / "ssd.yaml").read_text()


def test_format_ssd_raw_writes_anchor_placeholder_marked_check(tmp_path: Path, capsys) -> None:
    model = ssd_heads(tmp_path)
    result = spec_cli(capsys, str(model), "--format", "ssd_raw", "--print")
    assert result["rc"] == 0, result["err"]
    assert "anchors: {file: anchors.npy}  # CHECK:" in result["out"]
    data = yaml.safe_load(result["out"])
    assert data["output"]["tensors"] == {"scores": "scores", "boxes": "boxes"}


def test_raw_box_names_suggest_ssd_raw(tmp_path: Path, capsys) -> None:
    model = ssd_heads(tmp_path, boxes_name="box_encodings")
    result = spec_cli(capsys, str(model), "--print")
    assert result["rc"] == 0, result["err"]
    assert yaml.safe_load(result["out"])["output"]["format"] == "ssd_raw"
    assert "box_encodings" in result["err"]


def test_classification_without_metadata_with_labels_file(tmp_path: Path, capsys) -> None:
    model = model_with_outputs(tmp_path, "cls", {"logits": np.zeros((1, 3), np.float32)},
                               input_shape=(1, 3, 224, 224))
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    result = spec_cli(capsys, str(model), "--labels", str(labels), "--mean", "123.675", "116.28", "103.53",
                      "--std", "58.395", "57.12", "57.375", "--color", "rgb")
    assert result["rc"] == 0, result["err"]
    spec = load_spec(model)
    assert spec.output.format == "classification" and dict(spec.output.tensors) == {"scores": "logits"}
    assert spec.output.params["activation"] == "softmax"
    assert spec.classification.labels == ("cat", "dog", "bird")
    assert spec.input.scale[0] == pytest.approx(1 / 58.395)
    assert spec.input.offset[0] == pytest.approx(-123.675 / 58.395)
    assert "color RGB: from --color" in result["out"]


def test_segmentation_at_a_divisor_of_the_input(tmp_path: Path, capsys) -> None:
    model = model_with_outputs(tmp_path, "seg", {"out": np.zeros((1, 21, 80, 80), np.float32)})
    assert spec_cli(capsys, str(model))["rc"] == 0
    spec = load_spec(model)
    assert spec.task == "segmentation" and dict(spec.output.tensors) == {"mask": "out"}
    assert spec.input.resize == "stretch"
    assert "resize: stretch  # CHECK:" in (tmp_path / "seg.yaml").read_text()


def test_efficient_nms_by_plugin_names(tmp_path: Path, capsys) -> None:
    outputs = {
        "num_detections": np.zeros((1, 1), np.int32),
        "detection_boxes": np.zeros((1, 100, 4), np.float32),
        "detection_scores": np.zeros((1, 100), np.float32),
        "detection_classes": np.zeros((1, 100), np.int32),
    }
    model = model_with_outputs(tmp_path, "enms", outputs)
    assert spec_cli(capsys, str(model))["rc"] == 0
    spec = load_spec(model)
    assert spec.output.format == "efficient_nms" and spec.output.params["normalized"] is True


def test_donkeycar_linear_and_categorical(tmp_path: Path, capsys) -> None:
    nhwc = {"input_name": "img_in", "input_shape": (1, 120, 160, 3)}
    linear = model_with_outputs(tmp_path, "linear", {"n_outputs0": np.zeros((1, 1), np.float32),
                                                     "n_outputs1": np.zeros((1, 1), np.float32)}, **nhwc)
    assert spec_cli(capsys, str(linear))["rc"] == 0
    spec = load_spec(linear)
    assert spec.output.format == "steering_linear"
    assert dict(spec.output.tensors) == {"angle": "n_outputs0", "throttle": "n_outputs1"}
    assert (spec.input.layout, spec.input.height, spec.input.width, spec.input.color) == ("NHWC", 120, 160, "RGB")
    categorical = model_with_outputs(tmp_path, "cat", {"n_outputs0": np.zeros((1, 15), np.float32),
                                                       "n_outputs1": np.zeros((1, 20), np.float32)}, **nhwc)
    assert spec_cli(capsys, str(categorical))["rc"] == 0
    spec = load_spec(categorical)
    assert spec.output.format == "steering_categorical"
    assert (spec.output.params["angle_bins"], spec.output.params["throttle_bins"]) == (15, 20)


def test_donkeycar_pilot_with_extra_inputs_points_to_convert(tmp_path: Path, capsys) -> None:
    """A memory pilot has mem_in besides img_in: `spec` reads image-only models and names `convert`, which
    recognizes the pilot and writes its `inputs:` (before: "not supported by specs", a dead end)."""
    from donkey_factory import donkey_model

    model = donkey_model(tmp_path, "memory", file_name="memory.onnx")
    result = spec_cli(capsys, str(model))
    assert result["rc"] == 2 and "mem_in" in result["err"] and "trt-perception convert memory.onnx" in result["err"]
    assert "Traceback" not in result["err"] and not model.with_suffix(".yaml").exists()


def test_uint8_input_is_fed_raw(tmp_path: Path, capsys) -> None:
    model = model_with_outputs(tmp_path, "u8", {"output0": yolo_predictions()}, input_dtype=TensorProto.UINT8,
                               input_shape=(1, 320, 320, 3))
    assert spec_cli(capsys, str(model))["rc"] == 0
    spec = load_spec(model)
    assert (spec.input.dtype, spec.input.layout, spec.input.scale) == ("uint8", "NHWC", (1.0, 1.0, 1.0))


def test_unknown_layout_names_the_outputs(tmp_path: Path, capsys) -> None:
    model = model_with_outputs(tmp_path, "odd", {"a": np.zeros((1, 7, 7, 7, 7), np.float32)})
    result = spec_cli(capsys, str(model))
    assert result["rc"] == 2
    assert "a [1, 7, 7, 7, 7]" in result["err"] and "--format" in result["err"]


def test_forced_format_that_does_not_fit(tmp_path: Path, capsys) -> None:
    model = ultralytics_detect(tmp_path)
    result = spec_cli(capsys, str(model), "--format", "end_to_end")
    assert result["rc"] == 2
    assert "--format end_to_end expects one output [1, K, 6]" in result["err"]


def test_task_contradicting_the_outputs(tmp_path: Path, capsys) -> None:
    model = model_with_outputs(tmp_path, "plain", {"output0": yolo_predictions()})
    result = spec_cli(capsys, str(model), "--task", "classification")
    assert result["rc"] == 2
    assert "--task is classification" in result["err"]


def test_dynamic_size_without_metadata_asks_for_height_and_width(tmp_path: Path, capsys) -> None:
    model = model_with_outputs(tmp_path, "dyn", {"output0": yolo_predictions()},
                               input_shape=("batch", 3, "h", "w"))
    result = spec_cli(capsys, str(model))
    assert result["rc"] == 2 and "--height H --width W" in result["err"]
    assert spec_cli(capsys, str(model), "--height", "320", "--width", "320")["rc"] == 0
    assert load_spec(model).input.height == 320


def test_extra_inputs_are_refused(tmp_path: Path, capsys) -> None:
    model = model_with_outputs(tmp_path, "mem", {"n_outputs0": np.zeros((1, 1), np.float32),
                                                 "n_outputs1": np.zeros((1, 1), np.float32)},
                               input_name="img_in", input_shape=(1, 120, 160, 3), extra_inputs={"mem_in": (1, 6)})
    result = spec_cli(capsys, str(model))
    assert result["rc"] == 2 and "mem_in" in result["err"]


def test_read_onnx_keeps_symbolic_dims(tmp_path: Path) -> None:
    model = model_with_outputs(tmp_path, "sym", {"output0": yolo_predictions()},
                               declared={"output0": ("batch", 6, "anchors")})
    info = read_onnx(model)
    assert info.outputs[0].shape == ("batch", 6, "anchors")
    assert info.outputs[0].dims == (None, 6, None)
    assert [t.name for t in info.inputs] == ["images"]


# ---------------------------------------------------------------------------------- inspect range check


def _spec(fmt: str, tensors: Dict[str, str], task: str = "detection", **params: Any):
    data = {
        "task": task,
        "input": {"name": "images", "height": 320, "width": 320, "scale": SCALE},
        "output": {"format": fmt, "tensors": tensors, **params},
    }
    return parse_spec(data)


def _warnings(fmt: str, tensors: Dict[str, str], outputs: Dict[str, np.ndarray], task: str = "detection",
              **params: Any) -> List[str]:
    return check_output_ranges(_spec(fmt, tensors, task, **params), outputs)


def test_ranges_ssd_raw_with_decoded_boxes_warns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x1y1 = rng.uniform(0, 0.5, (50, 2))
    decoded = np.concatenate([x1y1, x1y1 + 0.2], 1)[None]
    scores = rng.uniform(0, 1, (1, 50, 3))
    lines = _warnings("ssd_raw", {"scores": "scores", "boxes": "boxes"}, {"boxes": decoded, "scores": scores})
    assert len(lines) == 1
    assert lines[0].startswith("WARNING: tensor 'boxes'") and "already-decoded" in lines[0]
    assert "boxes_scores" in lines[0]
    pixels = _warnings("ssd_raw", {"scores": "scores", "boxes": "boxes"}, {"boxes": decoded * 300, "scores": scores})
    assert len(pixels) == 1 and "input pixels" in pixels[0]
    offsets = rng.normal(0, 1, (1, 50, 4))
    assert _warnings("ssd_raw", {"scores": "scores", "boxes": "boxes"}, {"boxes": offsets, "scores": scores}) == []
    zeros = np.zeros((1, 50, 4))  # the test factory's grid detector: zero offsets are fine
    assert _warnings("ssd_raw", {"scores": "scores", "boxes": "boxes"}, {"boxes": zeros, "scores": scores}) == []


def test_ranges_yolo(tmp_path: Path) -> None:
    tensors = {"predictions": "output0"}
    assert _warnings("yolo", tensors, {"output0": yolo_predictions()}) == []
    lines = _warnings("yolo", tensors, {"output0": yolo_predictions(normalized=True)})
    assert len(lines) == 1 and "NORMALIZED" in lines[0] and "output.normalized: true" in lines[0]
    assert _warnings("yolo", tensors, {"output0": yolo_predictions(normalized=True)}, normalized=True) == []
    lines = _warnings("yolo", tensors, {"output0": yolo_predictions(logits=True)})
    assert len(lines) == 1 and "logits" in lines[0] and "outside [0, 1]" in lines[0]
    transposed = yolo_predictions(logits=True).transpose(0, 2, 1)
    assert len(_warnings("yolo", tensors, {"output0": transposed})) == 1


def test_ranges_classification_activation(tmp_path: Path) -> None:
    tensors = {"scores": "output0"}
    logits = np.array([[2.0, -1.0, 0.5]])
    probs = np.array([[0.7, 0.2, 0.1]])
    lines = _warnings("classification", tensors, {"output0": logits}, "classification", activation="none")
    assert len(lines) == 1 and "activation: softmax" in lines[0] and "sums to" in lines[0]
    assert _warnings("classification", tensors, {"output0": probs}, "classification", activation="none") == []
    lines = _warnings("classification", tensors, {"output0": probs}, "classification", activation="softmax")
    assert len(lines) == 1 and "activation: none" in lines[0]


def test_ranges_end_to_end_scores(tmp_path: Path) -> None:
    tensors = {"detections": "output0"}
    good = np.array([[[10, 10, 50, 50, 0.9, 1], [0, 0, 0, 0, 0, 0]]], np.float32)
    assert _warnings("end_to_end", tensors, {"output0": good}) == []
    swapped = good[..., [0, 1, 2, 3, 5, 4]] * [1, 1, 1, 1, 5, 1]
    lines = _warnings("end_to_end", tensors, {"output0": swapped})
    assert len(lines) == 1 and "column 4 (score)" in lines[0]


def test_ranges_end_to_end_yolov7_rows(tmp_path: Path) -> None:
    tensors = {"detections": "output"}
    rows = np.array([[0, 10, 10, 50, 50, 2, 0.8]], np.float32)
    assert _warnings("end_to_end", tensors, {"output": rows}) == []
    lines = _warnings("end_to_end", tensors, {"output": rows[:, [0, 1, 2, 3, 4, 6, 5]]})
    assert len(lines) == 1 and "column 6 (score)" in lines[0]


def test_ranges_boxes_scores_units_and_logits(tmp_path: Path) -> None:
    tensors = {"boxes": "b", "scores": "s"}
    pixels = np.array([[[10, 20, 200, 220]]], np.float32)
    outputs = {"b": pixels, "s": np.array([[[0.1, 0.9]]])}
    lines = _warnings("boxes_scores", tensors, outputs, normalized=True)
    assert len(lines) == 1 and "output.normalized: false" in lines[0]
    assert _warnings("boxes_scores", tensors, outputs, normalized=False) == []
    offsets = {"b": np.random.default_rng(0).normal(0, 1, (1, 50, 4)), "s": np.full((1, 50, 2), 0.5)}
    lines = _warnings("boxes_scores", tensors, offsets)
    assert len(lines) == 1 and "SSD box offsets" in lines[0] and "ssd_raw" in lines[0]
    logits = {"b": pixels / 300, "s": np.array([[[-3.0, 4.0]]])}
    lines = _warnings("boxes_scores", tensors, logits)
    assert len(lines) == 1 and "logits" in lines[0]


def test_ranges_nms_plugin_units(tmp_path: Path) -> None:
    tensors = {"num_detections": "n", "boxes": "b", "scores": "s", "classes": "c"}
    outputs = {"n": np.array([[1]]), "b": np.array([[[10, 20, 200, 220]]], np.float32), "s": np.array([[0.9]]),
               "c": np.array([[0]])}
    lines = _warnings("efficient_nms", tensors, outputs, normalized=True)
    assert len(lines) == 1 and "normalized: false" in lines[0]
    assert _warnings("efficient_nms", tensors, outputs, normalized=False) == []


def test_synthetic_input_follows_layout_and_scale() -> None:
    spec = parse_spec({"task": "steering", "input": {"name": "img_in", "height": 12, "width": 16, "layout": "NHWC",
                                                      "scale": SCALE},
                       "output": {"format": "steering_linear"}})
    frame = synthetic_input(spec)
    assert frame.shape == (1, 12, 16, 3) and frame.dtype == np.float32
    assert frame.min() >= 0.0 and frame.max() <= 1.0


def test_inspect_warns_about_decoded_boxes_given_an_ssd_raw_spec(tmp_path: Path, capsys) -> None:
    model = ssd_heads(tmp_path, decoded=True)
    np.save(tmp_path / "anchors.npy", np.tile([0.5, 0.5, 0.2, 0.2], (64, 1)).astype(np.float32))
    spec = {
        "task": "detection",
        "input": {"name": "input", "height": 300, "width": 300, "scale": SCALE},
        "output": {"format": "ssd_raw", "tensors": {"scores": "scores", "boxes": "boxes"},
                   "anchors": {"file": "anchors.npy"}},
    }
    (tmp_path / "ssd.yaml").write_text(yaml.safe_dump(spec))
    main(["inspect", str(model)])
    out = capsys.readouterr().out
    assert "WARNING: tensor 'boxes' (output format ssd_raw, role boxes)" in out
    assert "already-decoded normalized corner boxes" in out and "likely fix: output.format: boxes_scores" in out


def test_inspect_range_check_passes_quietly_on_a_fitting_model(tmp_path: Path, capsys) -> None:
    model = ssd_heads(tmp_path, decoded=False)
    np.save(tmp_path / "anchors.npy", np.tile([0.5, 0.5, 0.2, 0.2], (64, 1)).astype(np.float32))
    spec = {
        "task": "detection",
        "input": {"name": "input", "height": 300, "width": 300, "scale": SCALE},
        "output": {"format": "ssd_raw", "tensors": {"scores": "scores", "boxes": "boxes"},
                   "anchors": {"file": "anchors.npy"}},
    }
    (tmp_path / "ssd.yaml").write_text(yaml.safe_dump(spec))
    main(["inspect", str(model)])
    out = capsys.readouterr().out
    assert "WARNING" not in out
    assert "range check: output values on a synthetic frame fit format ssd_raw" in out


# ----------------------------------------------------------------------------------------- output paths


@pytest.mark.parametrize("output", ["afile/pilot.yaml", "adir"])
def test_output_path_that_cannot_be_a_file_is_refused_before_the_work(tmp_path: Path, capsys, output: str) -> None:
    """-o below a file, or -o an existing folder (even with --force): the package's error, not an OSError
    traceback, and nothing left behind."""
    from onnx_factory import brightness_pilot

    model = brightness_pilot(tmp_path, "st")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    result = spec_cli(capsys, str(model), "-o", str(tmp_path / output), "--force")
    assert result["rc"] == 2 and "Traceback" not in result["err"]
    assert ("is an existing file; expected a folder" in result["err"]
            or "is a folder; expected a file path" in result["err"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not list((tmp_path / "adir").iterdir())


def test_output_in_a_new_folder_is_written(tmp_path: Path, capsys) -> None:
    from onnx_factory import brightness_pilot

    model = brightness_pilot(tmp_path, "st")
    assert spec_cli(capsys, str(model), "-o", str(tmp_path / "new" / "st.yaml"))["rc"] == 0
    assert load_spec(model, tmp_path / "new" / "st.yaml").output.format == "steering_linear"
