"""Every way a path is not an ONNX model gets the package's error naming the file and the fix, in every command
that reads models (an empty file used to load as an empty model: "opset 1"; a truncated one raised protobuf's
DecodeError as a traceback from `convert`; a folder was "does not exist")."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from trt_perception.cli import main as cli_main
from trt_perception.errors import BackendError, ConfigError, SpecError
from trt_perception.onnx_file import check_model_path, load_onnx

DEMO = Path(__file__).resolve().parents[1] / "trt_perception" / "data" / "demo"


def _bad_models(folder: Path) -> dict:
    folder.mkdir(exist_ok=True)
    empty, truncated, noise, directory = (folder / n for n in ("empty.onnx", "trunc.onnx", "noise.onnx", "dir.onnx"))
    empty.write_bytes(b"")
    truncated.write_bytes((DEMO / "steering.onnx").read_bytes()[:40])
    noise.write_bytes(bytes(range(256)) * 8)
    directory.mkdir(exist_ok=True)
    return {"empty (0 bytes)": empty, "not a readable ONNX model": truncated, "ONNX model": noise,
            "is a folder": directory, "does not exist": folder / "missing.onnx"}


def test_load_onnx_names_each_problem(tmp_path: Path) -> None:
    for words, path in _bad_models(tmp_path).items():
        with pytest.raises(ConfigError, match="fix: ") as caught:
            load_onnx(path)
        assert words in str(caught.value) and str(path) in str(caught.value)
    with pytest.raises(SpecError, match="is a folder"):
        check_model_path(tmp_path / "dir.onnx", "model", SpecError)
    assert load_onnx(DEMO / "steering.onnx").graph.node


@pytest.mark.parametrize("command", [
    ["convert", "{model}", "--nms", "efficient", "-o", "{out}"],
    ["convert", "{model}", "--steering", "-o", "{out}"],
    ["convert", "{model}", "--ssd", "-o", "{out}"],
    ["spec", "{model}", "-o", "{spec}"],
    ["infer", "{model}", "{image}"],
    ["inspect", "{model}"],
])  # fmt: skip
def test_every_model_command_gives_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  command: List[str]) -> None:
    import cv2
    import numpy as np

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    for words, path in _bad_models(tmp_path / "models").items():
        if command[0] == "convert" and words == "is a folder":
            words = "not a TensorFlow SavedModel"  # convert reads a folder as a SavedModel: said so
        if command[0] in ("infer", "inspect") and words in ("not a readable ONNX model", "ONNX model"):
            # the backend's load error with ONNX Runtime's reason (infer first looks for the spec beside it)
            words = "ONNX Runtime cannot load" if command[0] == "inspect" else "no model spec found"
        argv = [a.format(model=path, out=tmp_path / "o.onnx", spec=tmp_path / "o.yaml", image=image) for a in command]
        assert cli_main(argv) == 2, (argv, capsys.readouterr())
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and "fix" in err, (argv, err)
        assert not (tmp_path / "o.onnx").exists()


def test_backend_error_for_the_node_and_replay(tmp_path: Path) -> None:
    from trt_perception.backends.base import open_backend

    bad = _bad_models(tmp_path)
    with pytest.raises(BackendError, match="is a folder"):
        open_backend(bad["is a folder"])
    with pytest.raises(BackendError, match=r"empty \(0 bytes\)"):
        open_backend(bad["empty (0 bytes)"])
