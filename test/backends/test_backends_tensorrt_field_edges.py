"""TensorRT edges the first doubles could not see (issue 15), each against a double corrected from NVIDIA's sources.

1. 8.x plan headers: only 9.1+ plans carry the version at bytes 24-27 (trtexec printPlanVersion, from v9.1.0);
   a valid 8.x engine must not be refused by what its header bytes happen to hold, and TensorRT's own 8.x
   refusal (serialization tags 205/213/232) becomes the clear mismatch message.
2. Version-compatible engines load only with ``Runtime.engine_host_code_allowed = True`` (8.6+).
3. Doubles that hid real behaviour: DataType's C++ values, ``nptype``'s np.bool up to 8.5.2, ``get_profile_shape``
   gone from 10.0.1, the calibrator's deprecated ``get_batch_size``, ``execute_async`` without a default stream,
   and the per-call DeprecationWarnings of the 8.5/8.6 binding API (an exception per frame under ``-W error``).
4. What ``import tensorrt`` failing means on a Jetson (JetPack 4's Python 3.6-only bindings), and the script
   that builds them for Python 3.8 (dry run; shellcheck where installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pytest
import yaml

TEST_DIR = str(Path(__file__).resolve().parents[1])
if TEST_DIR not in sys.path:
    sys.path.insert(0, TEST_DIR)

from fakes.cuda_fake import FakeGpu, install_cuda_python  # noqa: E402
from fakes.tensorrt_builder_fake import add_builder_api  # noqa: E402
from fakes.tensorrt_fake import DATATYPE_VALUES, make_plan, make_tensorrt_module  # noqa: E402

from trt_perception.backends import tensorrt as tensorrt_backend  # noqa: E402
from trt_perception.backends.engine_info import (  # noqa: E402
    BuildInfo,
    PlanHeader,
    RuntimeInfo,
    find_mismatches,
    read_plan_header,
    version_runs_here,
)
from trt_perception.backends.tensorrt import TensorRTBackend, explain_tensorrt_import_error  # noqa: E402
from trt_perception.errors import BackendError, BuildError, EngineMismatchError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build_tensorrt_python.sh"
AFFINE = [
    {"name": "images", "mode": "input", "shape": [1, 3, 4, 4]},
    {"name": "scores", "mode": "output", "shape": [1, 3, 4, 4]},
]


# not `setup`: pytest 7 (ROS Humble/Jazzy's colcon test) would call a module-level setup() as a nose hook

def install_trt(monkeypatch: pytest.MonkeyPatch, version: str) -> Any:
    gpu = FakeGpu()
    trt = make_tensorrt_module(version, gpu)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    install_cuda_python(monkeypatch, gpu)
    return trt


def write_engine(folder: Path, plan: bytes, build: Optional[Dict[str, Any]] = None, name: str = "model.engine") -> Path:
    path = folder / name
    path.write_bytes(plan)
    if build is not None:
        (folder / (name + ".yaml")).write_text(yaml.safe_dump({"task": "detection", "build": build}), "utf-8")
    return path


def plan(version: str, **kwargs: Any) -> bytes:
    kwargs.setdefault("compute_capability", (8, 7))
    return make_plan(AFFINE, tensorrt_version=version, **kwargs)


def run_once(backend: TensorRTBackend) -> np.ndarray:
    out = backend.infer({"images": np.ones((1, 3, 4, 4), np.float32)})["scores"].copy()  # valid until close
    backend.close()
    return out


# ------------------------------------------------------------------------------------ 1. 8.x plan headers


def test_header_layout_per_version_and_what_is_read_from_it() -> None:
    new = plan("10.3.0.26")
    assert new[:4] == b"ftrt" and new[4:8] == bytes(4) and tuple(new[24:28]) == (10, 3, 0, 26)
    assert read_plan_header(new) == PlanHeader(True, (10, 3, 0))
    old = plan("8.2.1")  # #3073: the serialization tag near the start, nothing at 24-26
    assert int.from_bytes(old[8:12], "little") == 205 and old[24:28] == bytes(4)
    assert read_plan_header(old) == PlanHeader(True, None)
    # whatever an 8.x plan holds at 24-26 is not a version, even when it looks like one
    assert read_plan_header(plan("8.2.1", header_bytes={24: 8, 25: 5, 26: 0})) == PlanHeader(True, None)
    # printPlanVersion's own check: bytes 4-7 must be 0 before 24-27 mean anything
    assert read_plan_header(plan("10.3.0", header_bytes={4: 1})) == PlanHeader(True, None)
    assert read_plan_header(plan("10.3.0")[:27]) == PlanHeader(True, None)  # shorter than trtexec accepts


@pytest.mark.parametrize("with_metadata", [False, True])
@pytest.mark.parametrize("header_bytes", [{24: 8, 25: 5, 26: 0}, {24: 10, 25: 0, 26: 1}])
def test_valid_8x_engine_is_not_refused_by_its_header_bytes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, header_bytes: Dict[int, int], with_metadata: bool
) -> None:
    install_trt(monkeypatch, "8.2.1")
    build = {"tensorrt_version": "8.2.1.8", "compute_capability": "8.7"} if with_metadata else None
    path = write_engine(tmp_path, plan("8.2.1", params={"scale": 3.0}, header_bytes=header_bytes), build)
    np.testing.assert_allclose(run_once(TensorRTBackend(path)), 3.0)


def test_header_is_read_only_where_both_sides_are_9_1_or_later() -> None:
    header = PlanHeader(True, (10, 3, 0))
    assert find_mismatches(header, BuildInfo(), RuntimeInfo("8.2.1.8", "Xavier", (8, 7))) == []  # TensorRT decides
    assert len(find_mismatches(header, BuildInfo(), RuntimeInfo("10.0.1", "Orin", (8, 7)))) == 1
    # the sidecar is the first source of truth: a header that disagrees with it is not consulted
    metadata = BuildInfo.from_mapping({"tensorrt_version": "10.0.1.6"})
    assert find_mismatches(header, metadata, RuntimeInfo("10.0.1", "Orin", (8, 7))) == []


@pytest.mark.parametrize(
    ("runtime", "built", "tags"), [("8.2.1", "8.5.1", ("205", "232")), ("8.4.3", "8.2.1", ("213", "205"))]
)
def test_tensorrt_8_refusal_with_serialization_tags_becomes_the_mismatch_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, runtime: str, built: str, tags: Sequence[str]
) -> None:
    install_trt(monkeypatch, runtime)
    (tmp_path / "ssd.onnx").write_bytes(b"onnx")
    path = write_engine(tmp_path, plan(built), {"source_onnx": "ssd.onnx", "precision": "fp16"}, "ssd.engine")
    with pytest.raises(EngineMismatchError) as info:
        TensorRTBackend(path)
    message = str(info.value)
    current, serialized = tags
    assert f"Current Version: {current}, Serialized Engine Version: {serialized}" in message  # TensorRT's own
    assert f"built with TensorRT {built[:3]}.x (serialization tag {serialized})" in message
    assert f"trt-perception build {tmp_path / 'ssd.onnx'} --output {path} --force --fp16" in message
    assert "802" not in message and "805" not in message


def test_patch_level_refusal_names_both_versions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_trt(monkeypatch, "8.2.1")
    with pytest.raises(EngineMismatchError, match=r"(?s)built with TensorRT 8\.2\.0; this TensorRT library is 8\.2\.1"):
        TensorRTBackend(write_engine(tmp_path, plan("8.2.0")))


def test_auto_rebuild_also_follows_tensorrt_8_own_refusal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    trt = install_trt(monkeypatch, "8.2.1")
    (tmp_path / "pilot.onnx").write_bytes(b"onnx")
    path = write_engine(tmp_path, plan("8.4.3"), {"source_onnx": "pilot.onnx", "precision": "fp16"}, "pilot.engine")
    calls: List[str] = []

    def build_engine(onnx_path: str, engine_path: str, **kwargs: Any) -> None:
        calls.append(onnx_path)
        Path(engine_path).write_bytes(plan(trt.__version__, params={"scale": 7.0}))

    import types

    fake_build = types.ModuleType("trt_perception.tools.build")
    fake_build.build_engine = build_engine  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "trt_perception.tools.build", fake_build)
    np.testing.assert_allclose(run_once(TensorRTBackend(path, auto_rebuild=True)), 7.0)
    assert calls == [str(tmp_path / "pilot.onnx")]


# ------------------------------------------------------------------------- 2. version-compatible engines


def test_version_compatible_engine_gets_the_runtime_permission(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_trt(monkeypatch, "10.3.0")
    build = {"tensorrt_version": "10.0.1", "flags": ["VERSION_COMPATIBLE"], "compute_capability": "8.7"}
    path = write_engine(tmp_path, plan("10.0.1", version_compatible=True, params={"scale": 2.0}), build)
    backend = TensorRTBackend(path)
    assert backend._res.runtime.engine_host_code_allowed is True
    np.testing.assert_allclose(run_once(backend), 2.0)


def test_tensorrt_8_6_version_compatible_engine_runs_on_10(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_trt(monkeypatch, "10.3.0")
    build = {"tensorrt_version": "8.6.1", "flags": {"version_compatible": True}}
    path = write_engine(tmp_path, plan("8.6.1", version_compatible=True), build)
    np.testing.assert_allclose(run_once(TensorRTBackend(path)), 1.0)


def test_plain_engines_do_not_get_the_permission(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_trt(monkeypatch, "10.3.0")
    backend = TensorRTBackend(write_engine(tmp_path, plan("10.3.0"), {"tensorrt_version": "10.3.0"}))
    assert backend._res.runtime.engine_host_code_allowed is False
    backend.close()
    # a version-compatible plan whose metadata does not say so: the message says what to write
    unmarked = write_engine(
        tmp_path, plan("10.3.0", version_compatible=True), {"tensorrt_version": "10.3.0"}, "vc.engine"
    )
    with pytest.raises(BackendError, match=r"flags: \[version_compatible\]"):
        TensorRTBackend(unmarked)


def test_runtime_double_models_engine_host_code_allowed() -> None:
    assert not hasattr(make_tensorrt_module("8.5.3").Runtime, "engine_host_code_allowed")  # pyCore.cpp @8.5.3
    trt = make_tensorrt_module("8.6.1")
    runtime = trt.Runtime(trt.Logger())
    assert runtime.engine_host_code_allowed is False  # default False (pyCoreDoc.h @v8.6.1 l.1694)
    assert runtime.deserialize_cuda_engine(plan("8.6.1", version_compatible=True)) is None
    runtime.engine_host_code_allowed = True
    assert runtime.deserialize_cuda_engine(plan("8.6.1", version_compatible=True)) is not None
    # EXCLUDE_LEAN_RUNTIME plans carry no host code (they need load_runtime instead, not modelled)
    assert trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan("8.6.1", version_compatible=True, lean_runtime=False))


@pytest.mark.parametrize(
    ("built", "here", "ok"),
    [
        ((8, 6, 1), (8, 6, 1), True),
        ((8, 6, 1), (10, 3, 0), True),  # TensorRT 8 engines run on 9 and 10
        ((10, 0, 1), (10, 3, 0), True),
        ((10, 0, 1), (11, 1, 0), True),
        ((8, 6, 1), (11, 1, 0), False),
        ((8, 5, 2), (8, 6, 1), False),  # version compatibility starts at 8.6
        ((10, 5, 0), (10, 3, 0), False),  # never backwards
    ],
)
def test_version_compatible_rules(built: Any, here: Any, ok: bool) -> None:
    assert version_runs_here(built, here, True) is ok
    assert version_runs_here(built, here, False) is (built[:2] == here[:2])


# --------------------------------------------------------------------------------------- 3. the doubles


def test_datatype_members_carry_the_cpp_values() -> None:
    trt10 = make_tensorrt_module("10.0.1")
    assert {m.name: int(m) for m in trt10.DataType} == {
        n: DATATYPE_VALUES[n]
        for n in ("FLOAT", "HALF", "BF16", "INT8", "INT32", "INT64", "BOOL", "UINT8", "FP8", "INT4")
    }
    assert (int(trt10.DataType.BOOL), int(trt10.DataType.BF16), int(trt10.DataType.INT4)) == (4, 7, 9)
    assert int(make_tensorrt_module("8.6.1").DataType.FP8) == 6  # 8.6 adds FP8
    assert not hasattr(make_tensorrt_module("8.5.3").DataType, "FP8")
    assert int(make_tensorrt_module("10.13.3").DataType.E8M0) == 11


def test_engine_with_fp8_output_on_8_6_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_trt(monkeypatch, "8.6.1")
    tensors = [AFFINE[0], {"name": "scores", "mode": "output", "shape": [1, 3, 4, 4], "dtype": "FP8"}]
    path = write_engine(tmp_path, make_plan(tensors, tensorrt_version="8.6.1", compute_capability=(8, 7)))
    with pytest.raises(BackendError, match="'scores' has TensorRT dtype FP8, which has no numpy"):
        TensorRTBackend(path)


def test_engine_tensors_map_by_member_not_by_number(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_trt(monkeypatch, "10.3.0")
    tensors = [AFFINE[0]] + [
        {"name": n, "mode": "output", "shape": [1, 48], "dtype": n.upper()} for n in ("bool", "uint8", "int64")
    ]
    path = write_engine(tmp_path, make_plan(tensors, tensorrt_version="10.3.0", compute_capability=(8, 7)))
    backend = TensorRTBackend(path)
    assert {t.name: t.dtype for t in backend.outputs} == {
        "bool": np.dtype(np.bool_),
        "uint8": np.dtype(np.uint8),
        "int64": np.dtype(np.int64),
    }
    backend.close()


@pytest.mark.parametrize(
    ("version", "fails"),
    [("8.2.1", True), ("8.4.3", True), ("8.5.1", True), ("8.5.2", True), ("8.5.3", False), ("8.6.1", False)],
)
def test_nptype_needs_np_bool_up_to_8_5_2(monkeypatch: pytest.MonkeyPatch, version: str, fails: bool) -> None:
    trt = make_tensorrt_module(version)
    monkeypatch.delattr(np, "bool", raising=False)  # numpy 1.24-1.26
    if fails:
        with pytest.raises(AttributeError, match="bool"):
            trt.nptype(trt.float32)
    else:
        assert trt.nptype(trt.float32) is np.float32


def test_backend_does_not_need_nptype(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    trt = install_trt(monkeypatch, "8.5.1")

    def nptype_on_numpy_1_24(trt_type: Any) -> Any:  # what the 8.5.1 double's nptype does there
        raise AttributeError("module 'numpy' has no attribute 'bool'")

    monkeypatch.setattr(trt, "nptype", nptype_on_numpy_1_24)  # (numpy 2 itself needs np.bool: not deleted here)
    tensors = [AFFINE[0], {"name": "mask", "mode": "output", "shape": [1, 48], "dtype": "BOOL"}]
    path = write_engine(tmp_path, make_plan(tensors, tensorrt_version="8.5.1", compute_capability=(8, 7)))
    backend = TensorRTBackend(path)
    assert backend.outputs[0].dtype == np.dtype(np.bool_)
    backend.close()


def test_get_profile_shape_is_gone_after_10_0_0(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for version in ("10.0.1", "10.3.0"):
        assert not hasattr(make_tensorrt_module(version).ICudaEngine, "get_profile_shape"), version
    with pytest.warns(DeprecationWarning, match="get_tensor_profile_shape"):
        trt = make_tensorrt_module("10.0.0")
        engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan("10.0.0"))
        engine.get_profile_shape(0, "images")
    install_trt(monkeypatch, "10.3.0")  # a dynamic engine gets its opt shape from get_tensor_profile_shape
    tensors = [
        {"name": "images", "mode": "input", "shape": [-1, 3, 4, 4]},
        {"name": "scores", "mode": "output", "shape": [-1, 3, 4, 4]},
    ]
    path = write_engine(
        tmp_path,
        make_plan(
            tensors,
            tensorrt_version="10.3.0",
            compute_capability=(8, 7),
            profiles={"images": [[1, 3, 4, 4], [2, 3, 4, 4], [4, 3, 4, 4]]},
        ),
    )
    backend = TensorRTBackend(path)
    assert backend._inputs[0].shape == (2, 3, 4, 4)
    backend.close()


def test_execute_async_has_no_default_stream_in_8_2() -> None:
    trt = make_tensorrt_module("8.2.1")
    tensors = [
        {"name": "Input", "mode": "input", "shape": [3, 4, 4]},
        {"name": "out", "mode": "output", "shape": [3, 4, 4]},
    ]
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(
        make_plan(tensors, tensorrt_version="8.2.1", implicit_batch=True)
    )
    context = engine.create_execution_context()
    with pytest.raises(TypeError, match="stream_handle"):
        context.execute_async(1, [0, 0])
    with pytest.raises(TypeError, match="bindings"):
        context.execute(1)


def test_calibrator_get_batch_size_is_deprecated_in_10_and_still_asked_for() -> None:
    trt10 = add_builder_api(make_tensorrt_module("10.0.1"))
    deprecated = pytest.warns(DeprecationWarning, match="Implicit batch dimensions support has been removed")
    with deprecated, pytest.raises(NotImplementedError):
        trt10.IInt8EntropyCalibrator2().get_batch_size()
    trt8 = add_builder_api(make_tensorrt_module("8.2.1"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with pytest.raises(NotImplementedError):
            trt8.IInt8EntropyCalibrator2().get_batch_size()

    class Calibrator(trt10.IInt8EntropyCalibrator2):  # an override answers without a warning
        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: Sequence[str]) -> Optional[List[int]]:
            return None

        def read_calibration_cache(self) -> bytes:
            return b"table"

    builder = trt10.Builder(trt10.Logger())
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert builder._calibrate(builder.create_network(0), Calibrator()) == "cache"
    assert ("calibrator_batch_size", 1) in trt10.builder_calls


@pytest.mark.parametrize("version", ["8.5.3", "8.6.1"])
def test_implicit_batch_engine_runs_under_w_error_on_8_5_and_8_6(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str
) -> None:
    install_trt(monkeypatch, version)
    tensors = [
        {"name": "Input", "mode": "input", "shape": [3, 4, 4]},
        {"name": "out", "mode": "output", "shape": [3, 4, 4]},
    ]
    path = write_engine(
        tmp_path,
        make_plan(
            tensors, tensorrt_version=version, implicit_batch=True, compute_capability=(8, 7), params={"scale": 2.0}
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # python -W error
        backend = TensorRTBackend(path)
        for _ in range(3):
            out = backend.infer({"Input": np.ones((3, 4, 4), np.float32)})["out"]
        np.testing.assert_allclose(out, 2.0)
        backend.close()
        with pytest.raises(DeprecationWarning):  # only TensorRT's binding calls from the backend are silenced
            warnings.warn("Use something else instead.", DeprecationWarning, stacklevel=1)


# ------------------------------------------------------------------------ 4. which Python a Jetson has


def jetson_root(tmp_path: Path, release: str, bindings: Sequence[str]) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text(
        f"# {release} (release), REVISION: {'7.1' if release == 'R32' else '4.3'}, GCID: 29818004, BOARD: t210ref, "
        "EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022\n"
    )
    for version in bindings:
        package = root / f"usr/lib/python{version}/dist-packages/tensorrt"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
    return root


def test_jetpack_4_python_3_6_bindings_are_named_plainly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tensorrt_backend, "SYSTEM_ROOT", jetson_root(tmp_path, "R32", ["3.6"]))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    (tmp_path / "m.engine").write_bytes(b"x")
    with pytest.raises(BackendError) as info:
        TensorRTBackend(tmp_path / "m.engine")
    message = str(info.value)
    assert "bindings on this machine are for Python 3.6" in message
    assert "JetPack 4 (L4T R32.7.1) ships TensorRT's Python bindings for its system Python 3.6 only" in message
    assert "scripts/build_tensorrt_python.sh" in message and "onnxruntime" in message


def test_venv_that_hides_the_system_bindings(tmp_path: Path) -> None:
    root = jetson_root(tmp_path, "R35", ["3.8"])
    message = explain_tensorrt_import_error(
        ModuleNotFoundError("No module named 'tensorrt'", name="tensorrt"),
        python=(3, 8),
        executable="/home/car/venv/bin/python",
        root=root,
    )
    assert "bindings for Python 3.8 are installed at" in message and "--system-site-packages" in message


def test_bindings_that_do_not_load(tmp_path: Path) -> None:
    error = ImportError("libnvinfer.so.8: cannot open shared object file: No such file or directory")
    message = explain_tensorrt_import_error(error, python=(3, 8), root=jetson_root(tmp_path, "R32", []))
    assert "was found but does not load" in message and "libnvinfer.so.8" in message
    inner = ModuleNotFoundError("No module named 'tensorrt.tensorrt'", name="tensorrt.tensorrt")  # #2288
    assert "does not load" in explain_tensorrt_import_error(inner, python=(3, 8), root=tmp_path)


def test_builder_says_the_same(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from trt_perception.tools.build import import_tensorrt

    monkeypatch.setattr(tensorrt_backend, "SYSTEM_ROOT", jetson_root(tmp_path, "R32", ["3.6"]))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BuildError, match="cannot build engines: .*for Python 3.6.*build_tensorrt_python.sh"):
        import_tensorrt()


def fake_jetpack_tree(tmp_path: Path, version: Sequence[int] = (8, 2, 1)) -> Dict[str, str]:
    include = tmp_path / "usr/include/aarch64-linux-gnu"
    include.mkdir(parents=True)
    (include / "NvInferVersion.h").write_text(
        "".join(
            f"#define NV_TENSORRT_{k} {v} //!< TensorRT {k.lower()} version.\n"
            for k, v in zip(("MAJOR", "MINOR", "PATCH", "BUILD"), (*version, 8))
        )
    )
    lib = tmp_path / "usr/lib/aarch64-linux-gnu"
    lib.mkdir(parents=True)
    (lib / "libnvinfer.so").write_bytes(b"")
    return {"TRT_INCLUDE_DIR": str(include), "TRT_LIB_DIR": str(lib), "CUDA_ROOT": str(tmp_path / "cuda")}


def run_script(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_build_script_dry_run_prints_the_route(tmp_path: Path) -> None:
    env = fake_jetpack_tree(tmp_path)
    work, venv = tmp_path / "work", tmp_path / "venv38"
    done = run_script("--dry-run", "--python", sys.executable, "--workdir", str(work), "--venv", str(venv), env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "git clone --depth 1 --branch 8.2.1 https://github.com/NVIDIA/TensorRT" in out
    assert "submodule update --init parsers/onnx" in out
    assert "--branch v2.9.2 https://github.com/pybind/pybind11" in out
    assert f"-DTENSORRT_BUILD={env['TRT_LIB_DIR']}" in out and "-DTARGET=aarch64" in out
    minor = sys.version_info[1]
    assert f"-DPYTHON_MAJOR_VERSION=3 -DPYTHON_MINOR_VERSION={minor}" in out
    assert f"bdist_wheel --python-tag=cp3{minor} --plat-name=linux_aarch64" in out
    assert f"{venv}/bin/python -m pip install" in out and "import tensorrt" in out
    assert not work.exists() and not venv.exists()  # a dry run touches nothing


def test_build_script_refuses_what_it_cannot_build(tmp_path: Path) -> None:
    env = fake_jetpack_tree(tmp_path, (8, 3, 9))  # no NVIDIA/TensorRT tag for it
    done = run_script("--dry-run", "--python", sys.executable, "--workdir", str(tmp_path / "w"), env=env)
    assert done.returncode != 0 and "8.3.9" in done.stderr and "--tensorrt-tag" in done.stderr
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "mine.txt").write_text("keep")
    done = run_script("--python", sys.executable, "--workdir", str(tmp_path / "w"), "--tensorrt-tag", "8.2.1", env=env)
    assert done.returncode != 0 and "--force" in done.stderr
    assert (tmp_path / "w" / "mine.txt").read_text() == "keep"
    assert run_script("--help").returncode == 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_build_script_passes_shellcheck() -> None:
    done = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout
