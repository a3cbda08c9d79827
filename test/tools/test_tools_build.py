"""`trt-perception build` against the TensorRT builder doubles of 8.2, 8.4 and 10.0 (no TensorRT here)."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import onnx
import pytest
import yaml
from fakes.tensorrt_builder_fake import FakeDeviceMemory, make_builder_module, plan_info
from onnx import TensorProto, helper
from onnx_factory import brightness_pilot, grid_detector

from trt_perception.errors import BuildError, ConfigError, SpecError
from trt_perception.spec import load_spec
from trt_perception.tools import build as build_tool
from trt_perception.tools.build import (
    GpuFacts,
    ShapeRange,
    build_engine,
    build_engine_report,
    default_workspace_mb,
    parse_shape_flags,
    shape_ranges,
)
from trt_perception.tools.calibration import CalibrationConfig

VERSIONS = ["8.2.1.8", "10.0.1.6"]
NANO = GpuFacts("NVIDIA Tegra X1", "5.3", 4 * 1024**3, "NVIDIA Jetson Nano Developer Kit")
DESKTOP = GpuFacts("NVIDIA GeForce RTX 3060", "8.6", 12 * 1024**3)


def calls(trt: Any, name: str) -> List[tuple]:
    return [c for c in trt.builder_calls if c[0] == name]


def build(trt: Any, onnx_path: Path, engine: Path, messages: Optional[List[str]] = None, **kwargs: Any) -> Any:
    kwargs.setdefault("gpu", DESKTOP)
    sink = messages if messages is not None else []
    return build_engine_report(onnx_path, engine, trt_module=trt, progress=sink.append, **kwargs)


@pytest.fixture
def pilot(tmp_path: Path) -> Path:
    return brightness_pilot(tmp_path, "pilot")


# ------------------------------------------------------------------------------------------- API generations


@pytest.mark.parametrize("version", VERSIONS)
def test_fp16_build_writes_engine_and_spec_with_metadata(tmp_path: Path, pilot: Path, version: str) -> None:
    trt = make_builder_module(version)
    engine = tmp_path / "pilot.engine"
    report = build(trt, pilot, engine, precision="fp16", gpu=NANO)
    assert report.engine == engine
    info = plan_info(engine.read_bytes())
    info.pop("plugins", None)
    assert info == {"version": version, "flags": ["FP16"], "inputs": ["img_in"], "outputs": ["angle", "throttle"],
                    "calibration": None}
    sidecar = tmp_path / "pilot.engine.yaml"
    assert report.spec == sidecar
    spec = load_spec(engine)  # the sidecar is found next to the engine and is a valid spec
    assert spec.source == sidecar
    meta = spec.build
    assert meta["tensorrt_version"] == version
    assert meta["gpu_name"] == "NVIDIA Tegra X1" and meta["compute_capability"] == "5.3"
    assert meta["precision"] == "fp16" and meta["flags"] == ["FP16"]
    assert meta["source_onnx"] == str(pilot.resolve())
    assert meta["onnx_sha256"] == build_tool.file_sha256(pilot)
    assert meta["workspace_mb"] == 256  # Jetson Nano default
    assert [i["name"] for i in meta["inputs"]] == ["img_in"] and meta["inputs"][0]["shape"] == [1, 120, 160, 3]
    assert {o["name"] for o in meta["outputs"]} == {"angle", "throttle"}
    source = yaml.safe_load(pilot.with_suffix(".yaml").read_text())
    written = yaml.safe_load(sidecar.read_text())
    assert {k: v for k, v in written.items() if k != "build"} == source


def test_v8_uses_explicit_batch_and_max_workspace_size(tmp_path: Path, pilot: Path) -> None:
    trt = make_builder_module("8.2.1.8")
    assert not hasattr(trt, "MemoryPoolType") and not hasattr(trt.IBuilderConfig, "set_memory_pool_limit")
    build(trt, pilot, tmp_path / "e.engine", workspace_mb=300)
    explicit_batch = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    assert calls(trt, "create_network") == [("create_network", explicit_batch)]
    assert calls(trt, "max_workspace_size") == [("max_workspace_size", 300 * 1024 * 1024)]
    names = [c[0] for c in trt.builder_calls]
    order = [names.index(n) for n in ("init_libnvinfer_plugins", "parse_from_file", "build_serialized_network")]
    assert order == sorted(order)


def test_v84_has_memory_pools(tmp_path: Path, pilot: Path) -> None:
    trt = make_builder_module("8.4.3.1")
    build(trt, pilot, tmp_path / "e.engine", workspace_mb=128)
    assert calls(trt, "set_memory_pool_limit") == [("set_memory_pool_limit", "WORKSPACE", 128 * 1024 * 1024)]
    assert calls(trt, "max_workspace_size") == []


def test_v10_uses_memory_pool_default_network_and_progress_monitor(tmp_path: Path, pilot: Path) -> None:
    trt = make_builder_module("10.0.1.6")
    assert not hasattr(trt.Builder, "build_engine") and not hasattr(trt.IBuilderConfig, "max_workspace_size")
    assert not hasattr(trt.BuilderFlag, "STRICT_TYPES")
    messages: List[str] = []
    build(trt, pilot, tmp_path / "e.engine", messages)
    assert calls(trt, "create_network") == [("create_network", 0)]
    assert calls(trt, "set_memory_pool_limit") == [("set_memory_pool_limit", "WORKSPACE", 1024 * 1024 * 1024)]
    assert calls(trt, "progress_monitor") == [("progress_monitor", "_Monitor")]
    assert any("Building engine (1 steps)" in m for m in messages)
    assert any("Building engine finished" in m for m in messages)


@pytest.mark.parametrize("version", VERSIONS)
def test_precision_flags(tmp_path: Path, pilot: Path, version: str) -> None:
    trt = make_builder_module(version)
    build(trt, pilot, tmp_path / "fp32.engine", precision="fp32")
    assert calls(trt, "set_flag") == []
    trt = make_builder_module(version)
    trt.fast_fp16 = False
    messages: List[str] = []
    build(trt, pilot, tmp_path / "fp16.engine", messages, precision="fp16")
    assert calls(trt, "set_flag") == [("set_flag", "FP16")]
    assert any("no fast FP16" in m for m in messages)


@pytest.mark.parametrize(("version", "flag"), [("8.2.1.8", "OBEY_PRECISION_CONSTRAINTS"),
                                               ("10.0.1.6", "OBEY_PRECISION_CONSTRAINTS")])
def test_strict_types(tmp_path: Path, pilot: Path, version: str, flag: str) -> None:
    trt = make_builder_module(version)
    build(trt, pilot, tmp_path / "e.engine", strict_types=True)
    assert ("set_flag", flag) in trt.builder_calls


def test_strict_types_falls_back_to_strict_types_flag_where_obey_is_missing(tmp_path: Path, pilot: Path) -> None:
    trt = make_builder_module("8.2.1.8")
    members = {k: v for k, v in trt.BuilderFlag.__members__.items() if k not in ("OBEY_PRECISION_CONSTRAINTS",
                                                                                 "PREFER_PRECISION_CONSTRAINTS")}
    trt.BuilderFlag = type("BuilderFlag", (), dict(members, __members__=members))  # as TensorRT 8.0/8.1
    build(trt, pilot, tmp_path / "e.engine", strict_types=True)
    assert ("set_flag", "STRICT_TYPES") in trt.builder_calls


@pytest.mark.parametrize("version", VERSIONS)
def test_dla_core(tmp_path: Path, pilot: Path, version: str) -> None:
    trt = make_builder_module(version)
    with pytest.raises(BuildError, match="0 DLA core"):
        build(trt, pilot, tmp_path / "nano.engine", dla_core=0)
    assert calls(trt, "build_serialized_network") == []
    trt = make_builder_module(version)
    trt.dla_cores = 2
    report = build(trt, pilot, tmp_path / "xavier.engine", dla_core=1)
    assert ("default_device_type", "DLA") in trt.builder_calls and ("DLA_core", 1) in trt.builder_calls
    assert ("set_flag", "GPU_FALLBACK") in trt.builder_calls
    assert report.metadata["dla_core"] == 1


def test_v7_style_builder_without_build_serialized_network(tmp_path: Path, pilot: Path) -> None:
    trt = make_builder_module("8.2.1.8")
    original = trt.Builder.build_serialized_network
    trt.Builder.build_engine = lambda self, n, c: type("E", (), {"serialize": lambda s: original(self, n, c)})()
    delattr(trt.Builder, "build_serialized_network")
    build(trt, pilot, tmp_path / "e.engine")
    assert plan_info((tmp_path / "e.engine").read_bytes())["inputs"] == ["img_in"]


# ------------------------------------------------------------------------------------- files: atomic, force


def test_refuses_to_overwrite_without_force(tmp_path: Path, pilot: Path) -> None:
    engine = tmp_path / "pilot.engine"
    engine.write_bytes(b"old engine")
    trt = make_builder_module("10.0.1.6")
    with pytest.raises(BuildError, match="already exists; refusing to overwrite"):
        build(trt, pilot, engine)
    assert engine.read_bytes() == b"old engine" and trt.builder_calls == []
    build(trt, pilot, engine, force=True)
    assert plan_info(engine.read_bytes())["version"] == "10.0.1.6"


@pytest.mark.parametrize("failure", ["builder returns None", "interrupted"])
def test_failed_or_interrupted_build_leaves_no_engine(tmp_path: Path, pilot: Path, failure: str) -> None:
    engine = tmp_path / "out" / "pilot.engine"
    engine.parent.mkdir()
    engine.write_bytes(b"old engine")
    trt = make_builder_module("8.2.1.8")
    if failure == "interrupted":
        def interrupt(network: Any, config: Any) -> None:
            raise KeyboardInterrupt
        trt.on_build = interrupt
        with pytest.raises(KeyboardInterrupt):
            build(trt, pilot, engine, force=True, workspace_mb=512)
    else:
        trt.fail_build = True
        with pytest.raises(BuildError, match=r"--workspace 256 \(now 512 MB\)"):
            build(trt, pilot, engine, force=True, workspace_mb=512)
    assert sorted(p.name for p in engine.parent.iterdir()) == ["pilot.engine"]  # no partial files, no sidecar
    assert engine.read_bytes() == b"old engine"


def test_atomic_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.engine"

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(build_tool.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        build_tool.atomic_write(target, b"data")
    assert list(tmp_path.iterdir()) == []


def test_spec_paths_are_rebased_when_the_engine_lives_elsewhere(tmp_path: Path) -> None:
    model = grid_detector(tmp_path, "grid")  # spec with anchors: {file: grid_anchors.npy}
    out = tmp_path / "engines" / "jetson"
    out.mkdir(parents=True)
    trt = make_builder_module("10.0.1.6")
    build(trt, model, out / "grid.engine")
    spec = load_spec(out / "grid.engine")
    assert spec.output.params["anchors"]["file"] == "../../grid_anchors.npy"
    assert spec.resolve_path(spec.output.params["anchors"]["file"]).resolve() == (tmp_path / "grid_anchors.npy")


def test_no_spec_builds_without_sidecar_and_warns(tmp_path: Path, pilot: Path) -> None:
    pilot.with_suffix(".yaml").unlink()
    messages: List[str] = []
    report = build(make_builder_module("10.0.1.6"), pilot, tmp_path / "pilot.engine", messages)
    assert report.spec is None and not (tmp_path / "pilot.engine.yaml").exists()
    assert any("no model spec found" in m for m in messages)


def test_spec_that_does_not_match_the_model_is_refused_before_building(tmp_path: Path, pilot: Path) -> None:
    data = yaml.safe_load(pilot.with_suffix(".yaml").read_text())
    data["input"]["name"] = "image"
    pilot.with_suffix(".yaml").write_text(yaml.safe_dump(data))
    trt = make_builder_module("10.0.1.6")
    with pytest.raises(SpecError, match="'image'.*the model's inputs are \\['img_in'\\].*engine was not built"):
        build(trt, pilot, tmp_path / "pilot.engine")
    assert calls(trt, "build_serialized_network") == []


def test_missing_tensorrt_is_a_clear_error(tmp_path: Path, pilot: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BuildError, match="cannot build engines: .*'tensorrt' Python module.*JetPack"):
        build_engine(pilot, tmp_path / "p.engine", progress=lambda m: None)


def test_parser_errors_name_the_plugin(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("MyNMS_TRT", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "plugin.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(BuildError, match="cannot parse.*Plugin not found.*plugin op was not found"):
        build(make_builder_module("8.2.1.8"), path, tmp_path / "p.engine")


# ----------------------------------------------------------------------------------------- shapes, profiles


def _dynamic_pilot(tmp_path: Path) -> Path:
    path = brightness_pilot(tmp_path, "dyn")
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("version", VERSIONS)
def test_dynamic_batch_gets_a_profile_from_the_spec(tmp_path: Path, version: str) -> None:
    model = _dynamic_pilot(tmp_path)
    trt = make_builder_module(version)
    report = build(trt, model, tmp_path / "dyn.engine")
    expected = ((1, 120, 160, 3),) * 3
    assert calls(trt, "set_shape") == [("set_shape", "img_in", *expected)]
    assert report.metadata["profiles"] == {"img_in": {"min": [1, 120, 160, 3], "opt": [1, 120, 160, 3],
                                                      "max": [1, 120, 160, 3]}}


def test_profile_from_flags_and_bad_flags(tmp_path: Path) -> None:
    model = _dynamic_pilot(tmp_path)
    ranges = shape_ranges(
        parse_shape_flags(["img_in:1x120x160x3"], "--min-shape"),
        parse_shape_flags(["img_in:2x120x160x3"], "--opt-shape"),
        parse_shape_flags(["img_in:4x120x160x3"], "--max-shape"),
    )
    assert ranges == {"img_in": ShapeRange((1, 120, 160, 3), (2, 120, 160, 3), (4, 120, 160, 3))}
    trt = make_builder_module("10.0.1.6")
    build(trt, model, tmp_path / "dyn.engine", shapes=ranges)
    assert calls(trt, "set_shape") == [("set_shape", "img_in", (1, 120, 160, 3), (2, 120, 160, 3), (4, 120, 160, 3))]
    with pytest.raises(ConfigError, match="does not fit its shape"):
        build(trt, model, tmp_path / "x.engine", shapes=shape_ranges(opt_shapes={"img_in": (1, 3, 120, 160)}))
    with pytest.raises(ConfigError, match="name input.*'images'"):
        build(trt, model, tmp_path / "x.engine", shapes=shape_ranges(opt_shapes={"images": (1, 120, 160, 3)}))
    with pytest.raises(ConfigError, match="NAME:DIMS"):
        parse_shape_flags(["1x3x4"], "--opt-shape")
    with pytest.raises(ConfigError, match="positive dims"):
        parse_shape_flags(["in:1x-3"], "--opt-shape")


def test_dynamic_input_without_spec_or_flags_is_refused(tmp_path: Path) -> None:
    model = _dynamic_pilot(tmp_path)
    model.with_suffix(".yaml").unlink()
    with pytest.raises(BuildError, match="dynamic shape.*--opt-shape img_in:Nx120x160x3"):
        build(make_builder_module("8.2.1.8"), model, tmp_path / "dyn.engine")


# -------------------------------------------------------------------------------------------- timing cache


@pytest.mark.parametrize("version", VERSIONS)
def test_timing_cache_is_written_and_reused(tmp_path: Path, pilot: Path, version: str) -> None:
    engine = tmp_path / "pilot.engine"
    cache = tmp_path / "pilot.engine.timing.cache"
    trt = make_builder_module(version)
    build(trt, pilot, engine)
    assert calls(trt, "create_timing_cache") == [("create_timing_cache", b"")]
    first = cache.read_bytes()
    assert first.startswith(b"TIMING")
    trt = make_builder_module(version)
    messages: List[str] = []
    build(trt, pilot, engine, messages, force=True)
    assert calls(trt, "create_timing_cache") == [("create_timing_cache", first)]
    assert any("reusing timing cache" in m for m in messages)
    cache.write_bytes(b"a cache from another GPU")
    trt = make_builder_module(version)
    messages = []
    build(trt, pilot, engine, messages, force=True)
    assert calls(trt, "set_timing_cache") == [("set_timing_cache", False), ("set_timing_cache", True)]
    assert any("starting a fresh one" in m for m in messages)
    trt = make_builder_module(version)
    build(trt, pilot, tmp_path / "none.engine", timing_cache=False)
    assert calls(trt, "create_timing_cache") == [] and not (tmp_path / "none.engine.timing.cache").exists()


# ------------------------------------------------------------------------------------------------ progress


def test_heartbeat_reports_while_the_build_runs(tmp_path: Path, pilot: Path) -> None:
    trt = make_builder_module("8.2.1.8")  # no IProgressMonitor: the heartbeat is all the user sees
    beat = threading.Event()
    messages: List[str] = []

    def sink(text: str) -> None:
        messages.append(text)
        if "still building" in text:
            beat.set()

    def slow_build(network: Any, config: Any) -> None:
        assert beat.wait(10.0), "no heartbeat while the build ran"

    trt.on_build = slow_build
    build_engine_report(pilot, tmp_path / "p.engine", trt_module=trt, progress=sink, gpu=DESKTOP, heartbeat_s=0.01)
    assert any("it is not hung" in m for m in messages)
    stages = [m for m in messages if m.startswith("[build ")]
    assert any("parsing" in m for m in stages) and any("done:" in m for m in stages)


# ------------------------------------------------------------------------------------------------- GPU facts


def test_default_workspace_is_nano_safe(tmp_path: Path) -> None:
    assert default_workspace_mb(NANO) == 256
    assert default_workspace_mb(GpuFacts(total_memory=4 * 1024**3)) == 256
    assert default_workspace_mb(DESKTOP) == 1024
    assert default_workspace_mb(GpuFacts(jetson_model="NVIDIA Jetson Orin Nano Developer Kit",
                                         total_memory=8 * 1024**3)) == 1024
    assert default_workspace_mb(GpuFacts()) == 1024
    model_file = tmp_path / "model"
    model_file.write_bytes(b"NVIDIA Jetson Nano Developer Kit\x00")
    assert build_tool._jetson_model(model_file) == "NVIDIA Jetson Nano Developer Kit"
    assert build_tool._jetson_model(tmp_path / "absent") == ""


def test_gpu_facts_never_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)
    facts = build_tool.gpu_facts()
    assert facts.name == "unknown" and "not installed" in facts.note


# ------------------------------------------------------------------------------------------------------ CLI


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    build_tool.add_build_arguments(parser)
    return parser.parse_args(argv)


def test_cli_build(tmp_path: Path, pilot: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trt = make_builder_module("10.0.1.6")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(build_tool, "gpu_facts", lambda device=0: NANO)
    assert build_tool.run_build(_args(str(pilot), "--fp16", "--workspace", "200", "--strict-types")) == 0
    engine = pilot.with_suffix(".engine")
    assert engine.is_file() and load_spec(engine).build["workspace_mb"] == 200
    with pytest.raises(BuildError, match="already exists"):
        build_tool.run_build(_args(str(pilot)))
    other = str(tmp_path / "x.engine")
    assert build_tool.run_build(_args(str(pilot), "--force", "-o", other, "--no-timing-cache")) == 0
    with pytest.raises(ConfigError, match="--int8 needs calibration frames"):
        build_tool.run_build(_args(str(pilot), "--int8", "--force"))
    with pytest.raises(ConfigError, match="expected an .onnx model"):
        build_tool.run_build(_args(str(tmp_path / "model.h5")))


def test_cli_int8_with_images(tmp_path: Path, pilot: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), np.full((60, 80, 3), 40 * i, np.uint8))
    trt = make_builder_module("8.2.1.8")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(build_tool, "gpu_facts", lambda device=0: DESKTOP)
    device = FakeDeviceMemory()
    monkeypatch.setattr("trt_perception.tools.calibration.CudaDeviceMemory", lambda: device)
    assert build_tool.run_build(_args(str(pilot), "--int8", "--calib-images", str(frames))) == 0
    assert len(device.copies) == 3 and device.allocations == {}
    assert (tmp_path / "pilot.engine.calib.cache").read_bytes() == b"FAKE-CALIBRATION-TABLE 3"
    meta = load_spec(tmp_path / "pilot.engine").build
    assert meta["precision"] == "int8" and meta["flags"] == ["FP16", "INT8"]
    # the cache next to the engine is enough for a rebuild (the backend's rebuild command has no frames)
    assert build_tool.run_build(_args(str(pilot), "--int8", "--force")) == 0
    assert len(device.copies) == 3


def test_int8_without_calibration_is_refused(tmp_path: Path, pilot: Path) -> None:
    with pytest.raises(BuildError, match="INT8 needs calibration data"):
        build(make_builder_module("10.0.1.6"), pilot, tmp_path / "p.engine", precision="int8")
    with pytest.raises(ConfigError, match="precision 'int4'"):
        build(make_builder_module("10.0.1.6"), pilot, tmp_path / "p.engine", precision="int4")
    with pytest.raises(ConfigError, match="neither frames nor a cache"):
        build(make_builder_module("10.0.1.6"), pilot, tmp_path / "p.engine", precision="int8",
              calibration=CalibrationConfig(), device_memory=FakeDeviceMemory())


# ------------------------------------------------------------------------------------------------ legacy UFF


def test_uff_on_tensorrt_10_gives_the_onnx_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = tmp_path / "frozen_inference_graph.pb"
    frozen.write_bytes(b"graph")
    monkeypatch.setitem(sys.modules, "tensorrt", make_builder_module("10.0.1.6"))
    with pytest.raises(BuildError) as caught:
        build_tool.run_build(_args(str(frozen)))
    text = str(caught.value)
    assert "TensorRT 10.0.1.6 has no UffParser (UFF was removed in TensorRT 9.0)" in text
    assert f"trt-perception convert {frozen} --ssd tf1-ssd-300 --nms batched" in text
    assert f"trt-perception build {tmp_path / 'frozen_inference_graph_batched_nms.onnx'} --fp16" in text
    assert not (tmp_path / "frozen_inference_graph.engine").exists()


def test_uff_on_tensorrt_8_without_the_uff_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trt_perception.tools.uff import build_uff_engine, uff_unavailable_reason

    trt = make_builder_module("8.2.1.8")
    assert hasattr(trt, "UffParser") and not hasattr(make_builder_module("10.0.1.6"), "UffParser")
    monkeypatch.setitem(sys.modules, "uff", None)
    assert "'uff' Python package does not import" in uff_unavailable_reason(trt)
    frozen = tmp_path / "ssd.pb"
    frozen.write_bytes(b"graph")
    with pytest.raises(BuildError, match="(?s)python3-uff.*--nms batched"):
        build_uff_engine(frozen, tmp_path / "ssd.engine", trt_module=trt)
    with pytest.raises(ConfigError, match="FP32/FP16 engines only"):
        build_tool.run_build(_args(str(frozen), "--int8"))
    with pytest.raises(ConfigError, match="not a permutation"):
        build_tool.run_build(_args(str(frozen), "--uff-input-order", "0,1,1"))


# -------------------------------------------------------------- with the runtime and CUDA doubles of the backend


@pytest.mark.parametrize("version", ["8.2.1", "10.0.1"])
def test_built_engine_loads_and_runs_in_the_tensorrt_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    cuda_fake = pytest.importorskip("fakes.cuda_fake")
    from trt_perception.images import DecodedImage
    from trt_perception.pipeline import ModelPipeline

    trt = make_builder_module(version)
    if not hasattr(trt, "_fake"):
        pytest.skip("the TensorRT runtime double (fakes/tensorrt_fake.py) is not in this checkout")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cuda_fake.install_cuda_python(monkeypatch, trt._fake.gpu)
    model = brightness_pilot(tmp_path, "pilot")
    engine = tmp_path / "pilot.engine"
    build_engine(model, engine, progress=lambda m: None)  # GPU facts read through (fake) cuda-python
    meta = load_spec(engine).build
    assert (meta["gpu_name"], meta["compute_capability"]) == ("Orin (fake)", "8.7")
    pipeline = ModelPipeline.open(engine, backend_options={"cuda": "cuda-python"})
    try:
        assert pipeline.describe()["backend"] == "tensorrt"
        frame = DecodedImage(np.full((120, 160, 3), 51, np.uint8), "rgb")
        result = pipeline.run(frame)
        assert result.parsed.angle == pytest.approx(0.2, abs=1e-3)  # the double's engine outputs the input mean
    finally:
        pipeline.close()


def test_int8_calibration_through_the_cuda_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    cuda_fake = pytest.importorskip("fakes.cuda_fake")
    trt = make_builder_module("8.2.1")
    if not hasattr(trt, "_fake"):
        pytest.skip("the TensorRT runtime double (fakes/tensorrt_fake.py) is not in this checkout")
    gpu = trt._fake.gpu
    cuda_fake.install_cuda_python(monkeypatch, gpu)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        cv2.imwrite(str(frames / f"{i}.png"), np.full((60, 80, 3), 60 * i, np.uint8))
    model = brightness_pilot(tmp_path, "pilot")
    engine = tmp_path / "pilot.engine"
    copies: List[bytes] = []
    real_copy = gpu.copy_htod

    def spy(address: int, host: Any, stream: Any) -> Any:
        copies.append(bytes(host))
        return real_copy(address, host, stream)

    monkeypatch.setattr(gpu, "copy_htod", spy)
    build(trt, model, engine, precision="int8", calibration=CalibrationConfig(frames))
    nbytes = 120 * 160 * 3 * 4
    assert [len(c) for c in copies] == [nbytes] * 4
    np.testing.assert_allclose(np.frombuffer(copies[3], np.float32), 180 / 255, rtol=1e-6)  # x/255 of the frame
    assert gpu.count("malloc") == gpu.count("free") == 1 and gpu.memory == {}
    assert (tmp_path / "pilot.engine.calib.cache").is_file()
    # a rebuild without frames (what auto_rebuild does) reuses the calibration cache next to the engine
    copies.clear()
    build(trt, model, engine, precision="int8", force=True)
    assert copies == [] and plan_info(engine.read_bytes())["calibration"] == "cache"


@pytest.mark.gpu
def test_gpu_facts_on_a_real_gpu() -> None:
    """What the build metadata records, read from a real GPU (skipped where cuda-python/pycuda see none)."""
    facts = build_tool.gpu_facts()
    if facts.name == "unknown":
        pytest.skip(f"no CUDA GPU visible: {facts.note}")
    major, minor = (int(v) for v in facts.compute_capability.split("."))
    assert major >= 5 and minor >= 0 and facts.total_memory and facts.total_memory > 1 << 30
    print(f"\n{facts}; default workspace {default_workspace_mb(facts)} MB")
