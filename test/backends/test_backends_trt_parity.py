"""Parity: the same tiny ONNX model and inputs through ONNX Runtime (CPU) and through a TensorRT engine built
here with the real TensorRT builder, run by ``TensorRTBackend``.

Tolerances: FP32 engine: max abs difference <= 1e-3; FP16 engine (where the GPU has fast FP16): <= 1e-2
(outputs are O(1): a conv net ending in a sigmoid). Runs wherever ``tensorrt`` and a CUDA binding import
and a GPU is present; skips cleanly elsewhere (CI, this workplace).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]

TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}


def _tiny_convnet(path: Path) -> Path:
    """images [1,3,32,32] -> Conv(8,3x3) -> Relu -> Conv(4,1x1) -> Sigmoid -> scores [1,4,30,30]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    b1 = (rng.standard_normal(8) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32)
    b2 = (rng.standard_normal(4) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["images", "w1", "b1"], ["c1"]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
            helper.make_node("Sigmoid", ["c2"], ["scores"]),
        ],
        "tiny_convnet",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4, 30, 30])],
        initializer=[
            numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _build_engine(trt: Any, onnx_path: Path, engine_path: Path, precision: str) -> None:
    """A minimal builder, independent of tools/build.py, using whichever builder API this TensorRT has."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if (
        hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
        and int(trt.__version__.split(".")[0]) < 10
    ):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        pytest.fail(f"TensorRT cannot parse the test model: {errors}")
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 28)
    else:
        config.max_workspace_size = 1 << 28
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "TensorRT could not build the test engine"
    engine_path.write_bytes(bytes(plan))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_matches_onnxruntime(tmp_path: Path, precision: str) -> None:
    trt = pytest.importorskip("tensorrt")
    ort = pytest.importorskip("onnxruntime")
    from trt_perception.backends.cuda import select_cuda_api
    from trt_perception.backends.tensorrt import TensorRTBackend
    from trt_perception.errors import BackendError

    try:
        api = select_cuda_api("auto")
        with api.activated():
            name, cc = api.device_name(), api.compute_capability()
    except (BackendError, RuntimeError) as exc:
        pytest.skip(f"no usable CUDA GPU/binding: {exc}")
    onnx_path = _tiny_convnet(tmp_path / "tiny.onnx")
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    if precision == "fp16" and not builder.platform_has_fast_fp16:
        pytest.skip(f"{name} has no fast FP16")
    engine_path = tmp_path / f"tiny_{precision}.engine"
    _build_engine(trt, onnx_path, engine_path, precision)
    build: Dict[str, Any] = {
        "tensorrt_version": trt.__version__, "gpu_name": name, "compute_capability": f"{cc[0]}.{cc[1]}",
        "precision": precision, "source_onnx": str(onnx_path),
    }  # fmt: skip
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    with TensorRTBackend(engine_path, cuda=api, build_metadata=build) as backend:
        for _ in range(5):
            x = rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
            expected = session.run(["scores"], {"images": x})[0]
            got = backend.infer({"images": x})["scores"]
            worst = float(np.abs(got.astype(np.float32) - expected).max())
            assert worst <= TOLERANCE[precision], (
                f"{precision}: max abs diff {worst} > {TOLERANCE[precision]}"
            )
    api.close()
    print(
        f"\nparity {precision} on {name} with TensorRT {trt.__version__}: max abs diff {worst:.2e}",
        file=sys.stderr,
    )
