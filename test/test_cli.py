"""`trt-perception infer` and `inspect` on test-built models and images, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from onnx_factory import brightness_pilot, constant_outputs, grid_detector

from trt_perception.cli import main


@pytest.fixture
def square_png(tmp_path: Path) -> Path:
    image = np.zeros((480, 640, 3), np.uint8)
    image[80:160, 160:240] = 255
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), image)
    return path


def test_infer_prints_detections_in_source_pixels(tmp_path: Path, square_png: Path, capsys) -> None:
    model = grid_detector(tmp_path)
    assert main(["infer", str(model), str(square_png), "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip())
    assert [d["label"] for d in data["detections"]] == ["blob"]
    assert data["detections"][0]["box_xyxy"] == [160.0, 80.0, 240.0, 160.0]


def test_infer_text_and_annotated_output_never_overwrites(tmp_path: Path, square_png: Path, capsys) -> None:
    model = grid_detector(tmp_path)
    out = tmp_path / "annotated"
    assert main(["infer", str(model), str(square_png), "--output-dir", str(out)]) == 0
    assert "blob" in capsys.readouterr().out
    assert (out / "frame_annotated.png").is_file()
    assert main(["infer", str(model), str(square_png), "--output-dir", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["infer", str(model), str(square_png), "--output-dir", str(out), "--force"]) == 0


def test_infer_steering(tmp_path: Path, square_png: Path, capsys) -> None:
    assert main(["infer", str(brightness_pilot(tmp_path)), str(square_png)]) == 0
    assert "angle=" in capsys.readouterr().out


def test_inspect_explains_model_and_spec(tmp_path: Path, capsys) -> None:
    model = grid_detector(tmp_path)
    assert main(["inspect", str(model)]) == 0
    out = capsys.readouterr().out
    assert "images [1, 3, 64, 64] float32" in out
    assert "letterboxed into 64x64" in out
    assert "ssd_raw" in out
    assert "spec matches" in out


def test_inspect_reports_a_mismatched_spec(tmp_path: Path, capsys) -> None:
    model = brightness_pilot(tmp_path)
    spec = tmp_path / "pilot.yaml"
    data = yaml.safe_load(spec.read_text())
    data["input"]["height"] = 66
    spec.write_text(yaml.safe_dump(data))
    assert main(["inspect", str(model)]) == 1
    assert "does NOT match" in capsys.readouterr().out


def _efficient_nms_model(folder: Path, count: np.ndarray) -> Path:
    boxes = np.zeros((1, 10, 4), np.float32)
    boxes[0, 0] = [0.1, 0.1, 0.3, 0.5]
    outputs = {"num_detections": count, "detection_boxes": boxes, "detection_scores": np.full((1, 10), 0.9, np.float32),
               "detection_classes": np.zeros((1, 10), np.int32)}
    spec = {"task": "detection", "input": {"name": "Input", "height": 300, "width": 300},
            "output": {"format": "efficient_nms", "normalized": True}, "detection": {"labels": ["a"]}}
    return constant_outputs(folder, "nms", outputs, spec)


@pytest.mark.parametrize(("count", "complaint"), [
    (np.array([[np.nan]], np.float32), "the spec does NOT match this model"),  # the range check crashed on NaN
    (np.array([[1 << 30]], np.int32), "outputs on a synthetic frame do NOT fit the spec"),  # inspect said "fit"
])  # fmt: skip
def test_inspect_runs_the_parser_on_its_synthetic_frame(tmp_path: Path, capsys, count: np.ndarray,
                                                        complaint: str) -> None:
    """inspect says what infer, replay and the node would meet on every frame, as a line, never a traceback."""
    assert main(["inspect", str(_efficient_nms_model(tmp_path, count))]) == 1
    out = capsys.readouterr().out
    assert complaint in out and "num_detections" in out and "Traceback" not in out
    assert "spec matches" not in out


def test_inspect_passes_a_plugin_model_whose_outputs_fit(tmp_path: Path, capsys) -> None:
    assert main(["inspect", str(_efficient_nms_model(tmp_path, np.array([[1]], np.int32)))]) == 0
    assert "spec matches" in capsys.readouterr().out


def test_errors_are_one_line_not_tracebacks(tmp_path: Path, capsys) -> None:
    assert main(["infer", str(tmp_path / "missing.onnx"), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "missing.onnx does not exist" in err
    assert "Traceback" not in err


def test_a_closed_pipe_is_not_a_traceback(tmp_path: Path, square_png: Path) -> None:
    """`trt-perception infer ... | head -1`: the reader goes away after one line; before, BrokenPipeError's
    traceback (and 'Exception ignored ... BrokenPipeError' at exit) landed on the terminal."""
    import subprocess
    import sys

    model = grid_detector(tmp_path)
    images = [str(square_png)] * 200
    script = "import sys; from trt_perception.cli import main; sys.exit(main(sys.argv[1:]))"
    reader = subprocess.Popen([sys.executable, "-c", script, "infer", str(model), *images],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None and reader.stderr is not None
    assert reader.stdout.readline()  # one line, as `head -1` reads
    reader.stdout.close()
    err = reader.stderr.read().decode()
    assert reader.wait(timeout=120) == 141, err  # 128 + SIGPIPE, what a shell reports for a killed writer
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


def test_help_imports_no_heavy_package() -> None:
    """cli.py builds every subcommand's parser for --help: their modules must keep onnx, onnxruntime, torch,
    matplotlib, rosbags and tensorrt inside the run functions (onnx alone cost 0.6 s of `trt-perception --help`)."""
    import subprocess
    import sys

    heavy = ("onnx", "onnxruntime", "torch", "matplotlib", "rosbags", "tensorrt", "tensorflow", "motmetrics", "pandas")
    script = ("import sys; from trt_perception.cli import build_parser; build_parser().format_help(); "
              f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
