"""`trt-perception convert`: framework detection, tf2onnx command lines, steering/SSD post-processing on ONNX
graphs shaped like tf2onnx output, PyTorch export (marked torch), and convert --nms + build end to end on the
TensorRT builder double. TensorFlow is not installed in CI: the tf2onnx step itself is only checked for its
command line and its missing-extra message.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from fakes.tensorrt_builder_fake import make_builder_module
from onnx import TensorProto, helper, numpy_helper

from trt_perception.errors import BuildError, ConfigError, SpecError
from trt_perception.outputs import DetectionSettings, create_parser
from trt_perception.outputs.anchors import grid_anchors
from trt_perception.spec import load_spec
from trt_perception.tools import build as build_tool
from trt_perception.tools import convert
from trt_perception.tools.build import GpuFacts
from trt_perception.tools.convert import (
    SsdOptions,
    SteeringOptions,
    anchors_to_center_size,
    detect_framework,
    finish_ssd,
    finish_steering,
    tf2onnx_command,
)


def _save(tmp_path: Path, name: str, nodes: List[Any], inputs: List[Any], outputs: List[Any],
          inits: Sequence[Any] = ()) -> Path:
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    convert.add_convert_arguments(parser)
    return parser.parse_args(argv)


def _run(path: Path, feed: dict) -> dict:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


# ------------------------------------------------------------------------------------ frameworks, tf2onnx


def test_detect_framework(tmp_path: Path) -> None:
    for suffix, expected in ((".onnx", "onnx"), (".h5", "keras"), (".keras", "keras"), (".pb", "tf-graph"),
                             (".tflite", "tflite"), (".pt", "torchscript")):
        path = tmp_path / f"m{suffix}"
        path.write_bytes(b"x")
        assert detect_framework(path) == expected
    saved = tmp_path / "saved"
    saved.mkdir()
    with pytest.raises(ConfigError, match="not a TensorFlow SavedModel"):
        detect_framework(saved)
    (saved / "saved_model.pb").write_bytes(b"x")
    assert detect_framework(saved) == "saved-model"
    (tmp_path / "w.pth").write_bytes(b"x")
    with pytest.raises(ConfigError, match="state dict.*export_torch"):
        detect_framework(tmp_path / "w.pth")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="--framework"):
        detect_framework(tmp_path / "m.bin")


def test_tf2onnx_commands() -> None:
    command = tf2onnx_command("keras", "pilot.h5", "pilot.onnx")
    assert command[1:] == ["-m", "tf2onnx.convert", "--keras", "pilot.h5", "--output", "pilot.onnx", "--opset", "13"]
    command = tf2onnx_command("tf-graph", "frozen.pb", "ssd.onnx", 11, ["Preprocessor/sub:0[1,300,300,3]"],
                              ["concat:0", "concat_1:0"])
    assert command[3:] == ["--graphdef", "frozen.pb", "--output", "ssd.onnx", "--opset", "11", "--inputs",
                           "Preprocessor/sub:0[1,300,300,3]", "--outputs", "concat:0,concat_1:0"]
    assert tf2onnx_command("saved-model", "d", "o")[3] == "--saved-model"
    assert tf2onnx_command("tflite", "m.tflite", "o")[3] == "--tflite"
    with pytest.raises(ConfigError, match="frozen graph.*--inputs and --outputs"):
        tf2onnx_command("tf-graph", "frozen.pb", "o.onnx")


def test_missing_tf2onnx_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tf2onnx", "tensorflow") else real(name, *a))
    (tmp_path / "pilot.h5").write_bytes(b"keras")
    with pytest.raises(BuildError, match=r"needs tf2onnx and tensorflow.*trt_perception\[convert\]"):
        convert.run_convert(_args(str(tmp_path / "pilot.h5"), "--steering"))


def test_onnx_too_new_for_tensorflows_ml_dtypes_names_the_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnx >= 1.17 with TensorFlow 2.15 (ml_dtypes 0.3): tf2onnx dies importing onnx; said with the fix, not as
    its 15-line traceback (seen in an outside audit with tensorflow 2.15.1 and onnx 1.19.0)."""
    import subprocess

    stderr = ("Traceback (most recent call last):\n  File \".../onnx/helper.py\", line 50, in <module>\n"
              "AttributeError: module 'ml_dtypes' has no attribute 'float4_e2m1fn'\n")
    monkeypatch.setattr(convert, "_require_tf2onnx", lambda: None)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", stderr))
    with pytest.raises(BuildError, match=r"float4_e2m1fn.*fix: pip install 'onnx<1.17'") as caught:
        convert.run_tf2onnx(["python", "-m", "tf2onnx.convert"])
    assert "Traceback" not in str(caught.value)


@pytest.mark.tensorflow
def test_keras_steering_model_converts(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    inputs = tf.keras.Input((120, 160, 3), name="img_in")
    x = tf.keras.layers.Flatten()(tf.keras.layers.AveragePooling2D(8)(inputs))
    angle = tf.keras.layers.Dense(1, name="n_outputs0")(x)
    throttle = tf.keras.layers.Dense(1, name="n_outputs1")(x)
    tf.keras.Model(inputs, [angle, throttle]).save(str(tmp_path / "pilot.h5"))
    assert convert.run_convert(_args(str(tmp_path / "pilot.h5"), "--steering")) == 0
    spec = load_spec(tmp_path / "pilot.onnx")
    assert spec.output.format == "steering_linear" and spec.input.layout == "NHWC"


# ---------------------------------------------------------------------------------------------- steering


def _donkey(tmp_path: Path, name: str, heads: Sequence[tuple]) -> Path:
    """A tf2onnx-like DonkeyCar model: input img_in [unk,120,160,3], dense heads with TF-style names."""
    nodes = [helper.make_node("ReduceMean", ["img_in"], ["pooled"], axes=[1, 2], keepdims=0)]  # [N, 3]
    inits, outputs = [], []
    rng = np.random.default_rng(0)
    for head, width in heads:
        inits.append(numpy_helper.from_array(rng.standard_normal((3, width)).astype(np.float32), f"{head}_w"))
        nodes.append(helper.make_node("MatMul", ["pooled", f"{head}_w"], [head]))
        outputs.append(helper.make_tensor_value_info(head, TensorProto.FLOAT, ["unk__1", width]))
    image = helper.make_tensor_value_info("img_in", TensorProto.FLOAT, ["unk__0", 120, 160, 3])
    return _save(tmp_path, name, nodes, [image], outputs, inits)


def test_linear_steering(tmp_path: Path) -> None:
    source = _donkey(tmp_path, "linear", [("n_outputs1/BiasAdd:0", 1), ("n_outputs0/BiasAdd:0", 1)])
    original = onnx.load(str(source))
    model, spec = finish_steering(original, SteeringOptions(crop_top=40, name="pilot"))
    assert [o.name for o in model.graph.output] == ["throttle", "angle"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # batch fixed to 1
    assert spec == {
        "task": "steering", "name": "pilot",
        "input": {"name": "img_in", "height": 120, "width": 160, "layout": "NHWC", "color": "RGB",
                  "scale": 1 / 255, "offset": 0.0, "crop": {"top": 40, "bottom": 0}},
        "output": {"format": "steering_linear", "tensors": {"angle": "angle", "throttle": "throttle"}},
    }
    image = np.random.default_rng(1).random((1, 120, 160, 3)).astype(np.float32)
    before = _run(source, {"img_in": image})
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    after = _run(tmp_path / "renamed.onnx", {"img_in": image})
    np.testing.assert_array_equal(after["angle"], before["n_outputs0/BiasAdd:0"])
    np.testing.assert_array_equal(after["throttle"], before["n_outputs1/BiasAdd:0"])


def test_categorical_and_combined_steering(tmp_path: Path) -> None:
    source = _donkey(tmp_path, "cat", [("throttle_out", 20), ("angle_out", 15)])
    _, spec = finish_steering(onnx.load(str(source)), SteeringOptions(throttle_range=(0.0, 0.8)))
    assert spec["output"] == {"format": "steering_categorical", "tensors": {"angle": "angle", "throttle": "throttle"},
                              "angle_bins": 15, "throttle_bins": 20, "angle_range": [-1.0, 1.0],
                              "throttle_range": [0.0, 0.8]}
    source = _donkey(tmp_path, "comb", [("dense_2", 2)])
    model, spec = finish_steering(onnx.load(str(source)))
    assert spec["output"]["tensors"] == {"combined": "combined"} and model.graph.output[0].name == "combined"
    source = _donkey(tmp_path, "mixed", [("a", 1), ("b", 15)])
    with pytest.raises(SpecError, match="mix a linear and a categorical head"):
        finish_steering(onnx.load(str(source)))


def test_cli_steering_from_onnx_is_autodetected_and_runs_in_the_pipeline(tmp_path: Path) -> None:
    from trt_perception.pipeline import ModelPipeline

    source = _donkey(tmp_path, "donkey", [("n_outputs0", 1), ("n_outputs1", 1)])
    assert convert.run_convert(_args(str(source))) == 0  # no --steering: two [N,1] heads say it
    out = tmp_path / "donkey_steering.onnx"
    spec = load_spec(out)
    assert spec.output.format == "steering_linear"
    pipeline = ModelPipeline.open(out)
    assert pipeline.task == "steering"
    with pytest.raises(BuildError, match="exists; refusing"):
        convert.run_convert(_args(str(source)))
    with pytest.raises(ConfigError, match="already ONNX; pass --steering, --ssd or --nms"):
        convert.run_convert(_args(str(_tf_like_ssd(tmp_path))))  # not steering-shaped, no flag: nothing to do


# --------------------------------------------------------------------------------------------------- SSD


def _tf_like_ssd(tmp_path: Path, classes: int = 3) -> Path:
    """An SSD as tf2onnx leaves a TF OD API graph: heads 'concat:0' [1,A,1,4] and 'concat_1:0' [1,A,C], an
    anchors subgraph 'anchors:0' (yxyx corners), and TF-style post-processing (sigmoid + top-k) after them."""
    maps, ratios = [4, 2], [1.0, 2.0, 0.5]
    anchors = grid_anchors(maps, aspect_ratios=ratios)
    count = anchors.shape[0]
    cx, cy, w, h = anchors.T
    corners = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], 1).astype(np.float32)
    rng = np.random.default_rng(2)
    inits = [
        numpy_helper.from_array(rng.standard_normal((count * 4, 3)).astype(np.float32), "box_w"),
        numpy_helper.from_array(rng.standard_normal((count * classes, 3)).astype(np.float32) * 3, "cls_w"),
        numpy_helper.from_array(np.array([1, count, 1, 4], np.int64), "box_shape"),
        numpy_helper.from_array(np.array([1, count, classes], np.int64), "cls_shape"),
        numpy_helper.from_array(corners[: count // 2], "anchor_part0"),
        numpy_helper.from_array(corners[count // 2:], "anchor_part1"),
        numpy_helper.from_array(np.array([10], np.int64), "k"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["Preprocessor/sub:0"], ["pooled"], axes=[1, 2], keepdims=0),  # [1, 3]
        helper.make_node("Gemm", ["pooled", "box_w"], ["box_flat"], transB=1),
        helper.make_node("Reshape", ["box_flat", "box_shape"], ["concat:0"]),
        helper.make_node("Gemm", ["pooled", "cls_w"], ["cls_flat"], transB=1),
        helper.make_node("Reshape", ["cls_flat", "cls_shape"], ["concat_1:0"]),
        helper.make_node("Concat", ["anchor_part0", "anchor_part1"], ["anchors:0"], axis=0),
        # "Postprocessor": what --ssd cuts away
        helper.make_node("Sigmoid", ["concat_1:0"], ["Postprocessor/scores"]),
        helper.make_node("ReduceMax", ["Postprocessor/scores"], ["Postprocessor/best"], axes=[2], keepdims=0),
        helper.make_node("TopK", ["Postprocessor/best", "k"], ["detection_scores:0", "detection_index:0"]),
    ]
    image = helper.make_tensor_value_info("Preprocessor/sub:0", TensorProto.FLOAT, ["unk__5", 32, 32, 3])
    outputs = [helper.make_tensor_value_info("detection_scores:0", TensorProto.FLOAT, [1, 10]),
               helper.make_tensor_value_info("detection_index:0", TensorProto.INT64, [1, 10])]
    path = _save(tmp_path, "tf_ssd", nodes, [image], outputs, inits)
    np.save(tmp_path / "expected_anchors.npy", anchors)
    return path


def test_finish_ssd_cuts_renames_and_exports_anchors(tmp_path: Path) -> None:
    source = _tf_like_ssd(tmp_path)
    options = SsdOptions(boxes_tensor="concat:0", scores_tensor="concat_1:0", anchors_tensor="anchors:0",
                         anchors_layout="yxyx", input_spec={"scale": 2 / 255, "offset": -1.0}, labels="labels.txt")
    model, spec = finish_ssd(onnx.load(str(source)), options, tmp_path / "out_anchors.npy")
    assert [o.name for o in model.graph.output] == ["boxes", "scores"]
    assert not [n for n in model.graph.node if n.op_type in ("TopK", "Sigmoid", "Concat")]  # post-processing gone
    np.testing.assert_allclose(np.load(tmp_path / "out_anchors.npy"), np.load(tmp_path / "expected_anchors.npy"),
                               atol=1e-6)
    assert spec["output"] == {"format": "ssd_raw", "tensors": {"boxes": "boxes", "scores": "scores"},
                              "anchors": {"file": "out_anchors.npy"}, "variances": [0.1, 0.1, 0.2, 0.2],
                              "box_order": "yx", "score_activation": "sigmoid", "background_class": 0}
    assert spec["input"] == {"name": "Preprocessor/sub:0", "height": 32, "width": 32, "layout": "NHWC",
                             "color": "RGB", "scale": 2 / 255, "offset": -1.0}
    assert spec["detection"] == {"labels": "labels.txt"}
    onnx.save(model, str(tmp_path / "cut.onnx"))
    image = np.random.default_rng(4).random((1, 32, 32, 3)).astype(np.float32)
    cut = _run(tmp_path / "cut.onnx", {"Preprocessor/sub:0": image})
    original = onnx.load(str(source))
    original.graph.output.extend([helper.make_tensor_value_info("concat:0", TensorProto.FLOAT, None),
                                  helper.make_tensor_value_info("concat_1:0", TensorProto.FLOAT, None)])
    onnx.save(original, str(tmp_path / "full.onnx"))
    full = _run(tmp_path / "full.onnx", {"Preprocessor/sub:0": image})
    np.testing.assert_array_equal(cut["boxes"], full["concat:0"])
    np.testing.assert_array_equal(cut["scores"], full["concat_1:0"])


def test_finish_ssd_grid_anchors_and_errors(tmp_path: Path) -> None:
    source = _tf_like_ssd(tmp_path)
    options = SsdOptions(boxes_tensor="concat:0", scores_tensor="concat_1:0", feature_maps=(4, 2),
                         aspect_ratios=(1.0, 2.0, 0.5))
    _, spec = finish_ssd(onnx.load(str(source)), options, tmp_path / "grid_anchors.npy")
    np.testing.assert_allclose(np.load(tmp_path / "grid_anchors.npy"), np.load(tmp_path / "expected_anchors.npy"))
    assert spec["output"]["anchors"] == {"file": "grid_anchors.npy"}
    options.feature_maps = (4, 2, 1)
    with pytest.raises(SpecError, match="has 64 anchors but the anchors have 68"):
        finish_ssd(onnx.load(str(source)), options, tmp_path / "bad.npy")
    with pytest.raises(SpecError, match="'concat_9:0' is not a tensor.*similar names"):
        finish_ssd(onnx.load(str(source)), SsdOptions(boxes_tensor="concat:0", scores_tensor="concat_9:0",
                                                      feature_maps=(4, 2)), tmp_path / "x.npy")
    with pytest.raises(ConfigError, match="needs anchors"):
        finish_ssd(onnx.load(str(source)), SsdOptions(boxes_tensor="concat:0", scores_tensor="concat_1:0"),
                   tmp_path / "x.npy")


def test_anchor_layouts() -> None:
    corners = np.array([[0.1, 0.2, 0.5, 0.4]], np.float32)  # y1 x1 y2 x2
    np.testing.assert_allclose(anchors_to_center_size(corners, "yxyx"), [[0.3, 0.3, 0.2, 0.4]], atol=1e-7)
    np.testing.assert_allclose(anchors_to_center_size(corners, "xyxy"), [[0.3, 0.3, 0.4, 0.2]], atol=1e-7)
    np.testing.assert_allclose(anchors_to_center_size(corners, "cycxhw"), [[0.2, 0.1, 0.4, 0.5]])
    with pytest.raises(ConfigError, match="layout 'whxy'"):
        anchors_to_center_size(corners, "whxy")


def test_cli_ssd_preset_then_nms_then_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's 'done when': raw-head ONNX SSD -> convert --nms efficient -> build --fp16 -> engine + spec."""
    source = _tf_like_ssd(tmp_path)
    (tmp_path / "labels.txt").write_text("background\ncar\ncone\n")
    argv = [str(source), "--ssd", "tf1-ssd-300", "--input-size", "32x32", "--feature-maps", "4,2",
            "--aspect-ratios", "1,2,0.5", "--labels", str(tmp_path / "labels.txt"), "--nms", "efficient",
            "--score-threshold", "0.3"]
    assert convert.run_convert(_args(*argv)) == 0
    raw = tmp_path / "tf_ssd_ssd.onnx"
    nms = tmp_path / "tf_ssd_ssd_efficient_nms.onnx"
    assert raw.is_file() and nms.is_file() and (tmp_path / "tf_ssd_ssd_anchors.npy").is_file()
    raw_spec = load_spec(raw)
    assert raw_spec.output.format == "ssd_raw" and raw_spec.detection.labels == ("background", "car", "cone")
    assert raw_spec.input.scale == pytest.approx((2 / 255,) * 3) and raw_spec.input.offset == (-1.0, -1.0, -1.0)
    # the ssd_raw model runs in the pipeline on ONNX Runtime as it is
    from trt_perception.pipeline import ModelPipeline

    assert ModelPipeline.open(raw).task == "detection"
    nms_spec = load_spec(nms)
    assert nms_spec.output.format == "efficient_nms" and nms_spec.output.params["box_order"] == "yxyx"

    trt = make_builder_module("8.2.1.8")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(build_tool, "gpu_facts", lambda device=0: GpuFacts("Orin", "8.7", 8 * 1024**3))
    parser = argparse.ArgumentParser()
    build_tool.add_build_arguments(parser)
    assert build_tool.run_build(parser.parse_args([str(nms), "--fp16"])) == 0
    engine = nms.with_suffix(".engine")
    spec = load_spec(engine)
    assert spec.output.format == "efficient_nms" and spec.detection.labels == ("background", "car", "cone")
    k = spec.detection.max_detections
    assert spec.build["outputs"] == [
        {"name": "num_detections", "shape": [1, 1], "dtype": "int32"},
        {"name": "detection_boxes", "shape": [1, k, 4], "dtype": "float32"},
        {"name": "detection_scores", "shape": [1, k], "dtype": "float32"},
        {"name": "detection_classes", "shape": [1, k], "dtype": "int32"},
    ]
    assert ("init_libnvinfer_plugins", "") in trt.builder_calls
    # the engine's spec gives the node its parser, checked against the engine's outputs as the backend sees them
    from trt_perception.backends.base import TensorSpec

    engine_outputs = [TensorSpec(o["name"], tuple(o["shape"]), np.dtype(o["dtype"])) for o in spec.build["outputs"]]
    create_parser(spec).check_outputs(engine_outputs)
    assert DetectionSettings.from_spec(spec.detection).score_threshold >= 0.3


def test_cli_nms_on_an_onnx_with_raw_spec(tmp_path: Path) -> None:
    source = _tf_like_ssd(tmp_path)
    model, spec = finish_ssd(onnx.load(str(source)), SsdOptions(boxes_tensor="concat:0", scores_tensor="concat_1:0",
                                                                feature_maps=(4, 2), aspect_ratios=(1, 2, 0.5)),
                             tmp_path / "raw_anchors.npy")
    onnx.save(model, str(tmp_path / "raw.onnx"))
    (tmp_path / "raw.yaml").write_text(yaml.safe_dump(spec))
    assert convert.run_convert(_args(str(tmp_path / "raw.onnx"), "--nms", "batched", "-o",
                                     str(tmp_path / "b.onnx"))) == 0
    assert load_spec(tmp_path / "b.onnx").output.format == "batched_nms"



def _opset(path: Path) -> int:
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def test_cli_opset_is_honoured_for_onnx_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--opset used to be ignored for ONNX sources (and its default 13 said otherwise): now an ONNX keeps its
    opset unless --opset asks for another, and an opset-9 model with --nms batched passes onnx.checker."""
    from test_tools_nms_surgery import ssd_model

    from trt_perception.cli import main

    source = ssd_model(tmp_path, name="ssd9", opset=9)
    assert main(["convert", str(source), "--nms", "batched", "-o", str(tmp_path / "kept.onnx")]) == 0
    onnx.checker.check_model(onnx.load(str(tmp_path / "kept.onnx")))
    assert _opset(tmp_path / "kept.onnx") == 9
    assert main(["convert", str(source), "--nms", "efficient", "--opset", "13", "-o", str(tmp_path / "up.onnx")]) == 0
    onnx.checker.check_model(onnx.load(str(tmp_path / "up.onnx")))
    assert _opset(tmp_path / "up.onnx") == 13
    assert main(["convert", str(source), "--nms", "batched", "--opset", "5", "-o", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()

    pilot = _donkey(tmp_path, "pilot", [("n_outputs0", 1), ("n_outputs1", 1)])
    assert convert.run_convert(_args(str(pilot), "--opset", "15", "-o", str(tmp_path / "pilot15.onnx"))) == 0
    assert _opset(tmp_path / "pilot15.onnx") == 15
    assert convert.run_convert(_args(str(pilot), "-o", str(tmp_path / "pilot13.onnx"))) == 0
    assert _opset(tmp_path / "pilot13.onnx") == 13

    ssd = _tf_like_ssd(tmp_path)  # --ssd, then --nms on the cut model, at the asked opset
    assert convert.run_convert(_args(str(ssd), "--ssd", "--boxes-tensor", "concat:0", "--scores-tensor", "concat_1:0",
                                     "--feature-maps", "4,2", "--aspect-ratios", "1,2,0.5", "--nms", "batched",
                                     "--opset", "15", "-o", str(tmp_path / "cut.onnx"))) == 0
    assert _opset(tmp_path / "cut.onnx") == 15 and _opset(tmp_path / "cut_batched_nms.onnx") == 15

    commands: List[List[str]] = []  # TensorFlow sources: tf2onnx gets 13 (TensorRT 8.2) unless --opset says
    monkeypatch.setattr(convert, "run_tf2onnx", lambda command: commands.append(list(command)) or 1 / 0)
    (tmp_path / "pilot.h5").write_bytes(b"")
    for argv, want in ((["--steering"], "13"), (["--steering", "--opset", "11"], "11")):
        with pytest.raises(ZeroDivisionError):
            convert.run_convert(_args(str(tmp_path / "pilot.h5"), *argv, "--force"))
        assert commands[-1][commands[-1].index("--opset") + 1] == want

# ------------------------------------------------------------------------------------------------- PyTorch


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_export_torch_and_torchscript(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Pilot(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
            self.angle = torch.nn.Linear(4, 1)
            self.throttle = torch.nn.Linear(4, 1)

        def forward(self, x: Any) -> Any:
            features = self.conv(x.permute(0, 3, 1, 2)).mean(dim=(2, 3))
            return torch.tanh(self.angle(features)), torch.sigmoid(self.throttle(features))

    torch.manual_seed(0)
    model = Pilot().train()
    sample = torch.rand(1, 120, 160, 3)
    path = convert.export_torch(model, sample, tmp_path / "pilot.onnx", ["img_in"], ["n_outputs0", "n_outputs1"])
    assert model.training  # restored
    with torch.no_grad():
        expected = [t.numpy() for t in model.eval()(sample)]
    got = _run(path, {"img_in": sample.numpy()})
    np.testing.assert_allclose(got["n_outputs0"], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["n_outputs1"], expected[1], rtol=1e-5, atol=1e-6)
    assert max(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")) == 13
    assert convert.run_convert(_args(str(path), "--steering", "-o", str(tmp_path / "pilot_spec.onnx"))) == 0
    assert load_spec(tmp_path / "pilot_spec.onnx").output.format == "steering_linear"

    scripted = torch.jit.trace(model.eval(), sample)
    torch.jit.save(scripted, str(tmp_path / "pilot.pt"))
    scripted_onnx = tmp_path / "scripted.onnx"
    argv = [str(tmp_path / "pilot.pt"), "--input-shape", "1x120x160x3", "--steering", "-o", str(scripted_onnx)]
    assert convert.run_convert(_args(*argv)) == 0
    spec = load_spec(scripted_onnx)
    assert spec.input.name == "input" and spec.output.format == "steering_linear"


# ------------------------------------------------------------------------------------------ DonkeyCar


def _donkey_cli(tmp_path: Path, kind: str, *argv: str, **model: Any) -> Tuple[Path, Dict[str, Any]]:
    from donkey_factory import donkey_model

    source = donkey_model(tmp_path, kind, file_name=model.pop("file_name", f"{kind}_src.onnx"), **model)
    out = tmp_path / f"{kind}.onnx"
    assert convert.run_convert(_args(str(source), "-o", str(out), "--force", *argv)) == 0
    return out, yaml.safe_load(out.with_suffix(".yaml").read_text())


def test_donkeycar_models_are_recognized_without_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for kind, fmt in (("memory", "steering_linear"), ("behavior", "steering_categorical"), ("rnn", "steering_linear")):
        out, spec = _donkey_cli(tmp_path, kind)
        assert spec["output"]["format"] == fmt
        assert load_spec(out).task == "steering"
    assert "DonkeyCar rnn pilot" in capsys.readouterr().out


def test_donkeycar_config_gives_range_mask_and_behaviors(tmp_path: Path) -> None:
    car = tmp_path / "mycar"
    car.mkdir()
    (car / "config.py").write_text("IMAGE_W = 160\nIMAGE_H = 120\nMODEL_CATEGORICAL_MAX_THROTTLE_RANGE = 0.8\n"
                                   "TRANSFORMATIONS = []\nROI_CROP_TOP = 45\n"
                                   "BEHAVIOR_LIST = ['Left_Lane', 'Right_Lane']\n")
    (car / "myconfig.py").write_text("MODEL_CATEGORICAL_MAX_THROTTLE_RANGE = 0.6\nTRANSFORMATIONS = ['CROP']\n"
                                     "ROI_CROP_TOP = 40\nROI_CROP_BOTTOM = 5\n")
    _, spec = _donkey_cli(tmp_path, "behavior", "--donkey-config", str(car / "myconfig.py"))
    assert spec["output"]["throttle_range"] == [0.0, 0.6]
    assert spec["input"]["mask"] == {"top": 40, "bottom": 5, "left": 0, "right": 0}
    assert spec["inputs"]["xbehavior_in"]["labels"] == ["Left_Lane", "Right_Lane"]
    # an explicit flag beats the car
    _, spec = _donkey_cli(tmp_path, "categorical", "--donkey-config", str(car / "config.py"), "--throttle-range",
                          "0,0.5")
    assert spec["output"]["throttle_range"] == [0.0, 0.5]
    (car / "myconfig.py").write_text("TRANSFORMATIONS = ['BLUR']\n")
    with pytest.raises(ConfigError, match="'BLUR'.*CROP and TRAPEZE only"):
        _donkey_cli(tmp_path, "linear", "--donkey-config", str(car / "config.py"))


def test_donkeycar_3x_crop_is_read_from_the_model_height(tmp_path: Path) -> None:
    (tmp_path / "config.py").write_text("IMAGE_H = 120\nIMAGE_W = 160\nROI_CROP_TOP = 40\nROI_CROP_BOTTOM = 10\n")
    _, spec = _donkey_cli(tmp_path, "linear", "--donkey-config", str(tmp_path / "config.py"), height=70)
    assert spec["input"]["crop"] == {"top": 40, "bottom": 10} and spec["input"]["height"] == 70
    _, spec = _donkey_cli(tmp_path, "linear", "--crop-top", "20", height=100)
    assert spec["input"]["crop"] == {"top": 20, "bottom": 0}


def test_donkeycar_database_entry_types_the_pilot(tmp_path: Path) -> None:
    from donkey_factory import database_entry

    models = tmp_path / "models"
    models.mkdir()
    entries = [database_entry("pilot_24-05-01_4", "KerasCategorical-R:0.7", "tflite_categorical",
                              {"IMAGE_H": 120, "IMAGE_W": 160, "TRANSFORMATIONS": [],
                               "MODEL_CATEGORICAL_MAX_THROTTLE_RANGE": 0.7}),
               database_entry("pilot_24-05-01_5", "KerasMemory-L:3-D:0", "memory", {"IMAGE_H": 120})]
    (models / "database.json").write_text(json.dumps(entries))
    _, spec = _donkey_cli(models, "categorical", "--donkey-database", str(models / "database.json"),
                          file_name="pilot_24-05-01_4.onnx", names="tflite")
    assert spec["output"]["throttle_range"] == [0.0, 0.7]
    _, spec = _donkey_cli(models, "memory", "--donkey-database", str(models / "database.json"),
                          file_name="pilot_24-05-01_5.onnx")
    assert spec["inputs"]["mem_in"]["length"] == 3
    with pytest.raises(SpecError, match="'linear' pilot but the type given is 'KerasMemory-L:3-D:0'"):
        _donkey_cli(models, "linear", "--donkey-database", str(models / "database.json"),
                    file_name="pilot_24-05-01_5.onnx")
    with pytest.raises(ConfigError, match="contradicts the database entry"):
        _donkey_cli(models, "memory", "--donkey-database", str(models / "database.json"), "--donkey-type", "imu",
                    file_name="pilot_24-05-01_5.onnx")
    with pytest.raises(ConfigError, match="--ssd/--nms for detectors"):
        convert.run_convert(_args(str(models / "pilot_24-05-01_5.onnx"), "--donkey-type", "memory", "--ssd"))


def test_donkeycar_vector_input_without_a_donkeycar_name_needs_the_type(tmp_path: Path) -> None:
    from donkey_factory import donkey_model

    source = donkey_model(tmp_path, "memory")
    model = onnx.load(str(source))
    for node in model.graph.node:
        node.input[:] = ["input_2" if name == "mem_in" else name for name in node.input]
    model.graph.input[1].name = "input_2"
    onnx.save(model, str(source))
    with pytest.raises(SpecError, match="fix: pass --donkey-type memory"):
        convert.run_convert(_args(str(source), "-o", str(tmp_path / "a.onnx")))
    assert convert.run_convert(_args(str(source), "-o", str(tmp_path / "a.onnx"), "--donkey-type", "memory")) == 0
    assert [i.name for i in onnx.load(str(tmp_path / "a.onnx")).graph.input] == ["img_in", "mem_in"]


# Keras / TFLite -> ONNX parity: DonkeyCar's own graphs (test/donkey_keras.py), every pilot type and source format,
# the converted ONNX on ONNX Runtime against the source model's own runtime, same inputs, within 1e-4.

KERAS_OUTPUTS = {"angle": ("n_outputs0", "angle_out", "out_0", "angle"),
                 "throttle": ("n_outputs1", "throttle_out", "out_1", "throttle"),
                 "location": ("zloc",), "combined": ("model_outputs", "outputs")}


def _source_outputs(fmt: str, path: Path, keras_model: Any, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Outputs by Keras layer name, from Keras itself or the TFLite interpreter (DonkeyCar's TfLite part)."""
    import tensorflow as tf

    if fmt == "tflite":
        interpreter = tf.lite.Interpreter(model_path=str(path))
        runner = interpreter.get_signature_runner()
        return {k: np.asarray(v) for k, v in runner(**feed).items()}
    model = keras_model if fmt == "h5" else tf.keras.models.load_model(str(path), compile=False)
    outputs = model(feed, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {name: np.asarray(value) for name, value in zip(model.output_names, outputs)}


@pytest.mark.tensorflow
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["h5", "savedmodel", "tflite"])
@pytest.mark.parametrize("kind", ["linear", "categorical", "inferred", "imu", "memory", "behavior", "localizer",
                                  "rnn", "3d"])
def test_donkeycar_keras_and_tflite_parity(tmp_path: Path, kind: str, fmt: str) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    from donkey_factory import frames
    from donkey_keras import build, to_tflite

    length = 5 if kind == "3d" else 3
    keras_model = build(kind, length=length)
    source = tmp_path / f"pilot.{fmt}"
    if fmt == "tflite":
        to_tflite(keras_model, str(source))
    else:
        keras_model.save(str(source))
    out = tmp_path / "pilot.onnx"
    if (kind, fmt) == ("rnn", "tflite"):  # Keras LSTM -> TFLite Flex TensorList ops: tf2onnx cannot express them
        with pytest.raises(BuildError, match=r"Flex TensorList ops.*convert the pilot's .savedmodel or .h5"):
            convert.run_convert(_args(str(source), "-o", str(out)))
        return
    assert convert.run_convert(_args(str(source), "-o", str(out))) == 0
    spec = load_spec(out)
    rng = np.random.default_rng(3)
    images = np.stack([f.astype(np.float32) / 255.0 for f in frames(length, seed=8)])
    feed: Dict[str, np.ndarray] = {"img_in": images[None] if spec.input.sequence else images[:1]}
    for extra in spec.inputs:
        if extra.source == "behavior":
            feed[extra.name] = np.eye(extra.size, dtype=np.float32)[1:2]
        else:
            feed[extra.name] = rng.uniform(-1, 1, (1, extra.size)).astype(np.float32)
    expected = _source_outputs(fmt, source, keras_model, feed)
    got = _run(out, feed)
    for role, tensor in spec.output.tensors.items():
        name = next(n for n in KERAS_OUTPUTS[role] if n in expected) if len(expected) > 1 else next(iter(expected))
        np.testing.assert_allclose(got[tensor].reshape(-1), expected[name].reshape(-1), atol=1e-4, rtol=0,
                                   err_msg=f"{kind} {fmt}: {role} ({name})")


@pytest.mark.parametrize("flags", [["--steering"], ["--nms", "efficient"]])
@pytest.mark.parametrize("output", ["afile/out.onnx", "adir"])
def test_cli_output_that_cannot_be_a_file_is_refused_before_the_work(tmp_path: Path, capsys, flags: List[str],
                                                                     output: str) -> None:
    """-o below a file or -o a folder (with --force): the package's error before any conversion, not an OSError
    traceback after it, and no .partial file left behind; a missing folder is made."""
    from test_tools_nms_surgery import ssd_model

    from trt_perception.cli import main

    source = (_donkey(tmp_path, "pilot", [("n_outputs0", 1), ("n_outputs1", 1)]) if flags == ["--steering"]
              else ssd_model(tmp_path, name="ssd"))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["convert", str(source), *flags, "-o", str(tmp_path / output), "--force"]) == 2
    err = capsys.readouterr().err
    assert "is an existing file; expected a folder" in err or "is a folder; expected a file path" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not list((tmp_path / "adir").iterdir())
    assert main(["convert", str(source), *flags, "-o", str(tmp_path / "new" / "out.onnx")]) == 0
    assert load_spec(tmp_path / "new" / "out.onnx").task in ("steering", "detection")
