"""ONNX Runtime backend on the files users actually bring: an empty or cut file, a TensorRT-plugin model after
`convert --nms`, an opset or IR version this onnxruntime does not know (each: the file, the cause and the fix, no
raw ORT text alone), and an old export with initializers listed as graph inputs (no warning per initializer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trt_perception.backends.onnxruntime import OnnxRuntimeBackend
from trt_perception.cli import main
from trt_perception.errors import BackendError


def adder(folder: Path, name: str = "adder", initializers_as_inputs: int = 0, opset: int = 13, ir: int = 8) -> Path:
    """y = x + w0 + ... + w(n-1); old exporters (IR < 4) also listed every initializer as a graph input."""
    count = max(1, initializers_as_inputs)
    weights = [numpy_helper.from_array(np.full((1, 4), i, np.float32), f"w{i}") for i in range(count)]
    nodes = [helper.make_node("Add", ["x" if i == 0 else f"y{i - 1}", f"w{i}"], [f"y{i}"]) for i in range(count)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])]
    if initializers_as_inputs:
        inputs += [helper.make_tensor_value_info(w.name, TensorProto.FLOAT, [1, 4]) for w in weights]
    output = helper.make_tensor_value_info(f"y{count - 1}", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(nodes, name, inputs, [output], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def plugin_model(folder: Path, op: str = "EfficientNMS_TRT", name: str = "ssd_efficient_nms") -> Path:
    """What `convert --nms` writes: the detector's heads feeding a TensorRT plugin node."""
    outputs = ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]
    node = helper.make_node(op, ["boxes", "scores"], outputs, domain="trt.plugins", plugin_version="1")
    graph = helper.make_graph(
        [node], name,
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 10, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 10, 2])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
         for n in ("num_detections", "detection_boxes", "detection_scores", "detection_classes")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("trt.plugins", 1)])
    model.ir_version = 8
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def refused(path: Path, *needles: str) -> str:
    with pytest.raises(BackendError) as info:
        OnnxRuntimeBackend(path)
    text = str(info.value)
    assert str(path) in text and "fix:" in text, text
    for needle in needles:
        assert needle in text, text
    return text


def test_empty_file_says_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    refused(path, "0 bytes", "re-export")


def test_cut_file_is_named_with_its_size_and_the_fix(tmp_path: Path) -> None:
    good = adder(tmp_path)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[:40])
    refused(cut, "40 bytes", "not a complete ONNX file", "re-export or re-copy")


def test_tensorrt_plugin_model_points_to_tensorrt_and_the_pre_surgery_model(tmp_path: Path) -> None:
    original = adder(tmp_path, "ssd")  # the model convert --nms started from, next to its output
    text = refused(plugin_model(tmp_path), "EfficientNMS_TRT", "only TensorRT", str(original))
    assert "[ONNXRuntimeError]" not in text
    text = refused(plugin_model(tmp_path, "BatchedNMSDynamic_TRT", "custom_batched_nms"), "BatchedNMSDynamic_TRT",
                   "the model before `trt-perception convert --nms`")  # fmt: skip
    assert "tensorrt" in text.lower()


def test_opset_and_ir_version_too_new(tmp_path: Path) -> None:
    refused(adder(tmp_path, "future_opset", opset=99), "opset 99", "--opset", "upgrade onnxruntime")
    refused(adder(tmp_path, "future_ir", ir=99), "IR version 99", "upgrade onnxruntime")


def test_initializers_listed_as_inputs_print_nothing(tmp_path: Path, capfd: Any) -> None:
    path = adder(tmp_path, initializers_as_inputs=40)
    capfd.readouterr()
    backend = OnnxRuntimeBackend(path)
    try:
        out = backend.infer({"x": np.zeros((1, 4), np.float32)})
    finally:
        backend.close()
    np.testing.assert_allclose(out["y39"], np.full((1, 4), sum(range(40)), np.float32))
    err: List[str] = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert err == []  # ONNX Runtime warns once per initializer otherwise (40 lines here, 244 for a face SSD)


def test_inspect_and_infer_explain_a_plugin_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = plugin_model(tmp_path)
    assert main(["inspect", str(model)]) == 2
    err = capsys.readouterr().err
    assert "EfficientNMS_TRT" in err and "only TensorRT" in err and "Traceback" not in err
