"""`trt-perception infer` on bad input, as a new user meets it: override flags checked like the params file's,
every image processed (each failure reported, exit 1 at the end), no annotated output overwritten within a run
or from an earlier one, the output folder checked before any work, full-precision JSON, and image files decoded
by the node's own decoder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest
from onnx_factory import brightness_pilot, grid_detector

from trt_perception.cli import main
from trt_perception.images import decode_image_file


@pytest.fixture
def square(tmp_path: Path) -> Path:
    image = np.zeros((480, 640, 3), np.uint8)
    image[80:160, 160:240] = 255
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def detector(tmp_path: Path) -> Path:
    return grid_detector(tmp_path)


def infer(*args: object) -> int:
    return main(["infer", *(str(a) for a in args)])


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--iou-threshold", "nan"], "--iou-threshold is nan"),
        (["--iou-threshold", "-0.5"], "--iou-threshold is -0.5"),
        (["--iou-threshold", "1.5"], "--iou-threshold is 1.5"),
        (["--score-threshold", "5"], "--score-threshold is 5"),
        (["--score-threshold", "inf"], "--score-threshold is inf"),
        (["--max-detections", "-1"], "--max-detections is -1"),
        (["--max-detections", "5000"], "--max-detections is 5000"),
    ],
)
def test_override_flags_are_checked_like_the_params_file(
    detector: Path, square: Path, capsys: pytest.CaptureFixture, flags: List[str], needle: str
) -> None:
    assert infer(detector, square, *flags) == 2
    err = capsys.readouterr().err
    assert needle in err and "expected" in err and "fix:" in err and "Traceback" not in err


@pytest.mark.parametrize(("classes", "needle"), [
    ("nosuch", "label 'nosuch' is not in the labels list"),
    ("99", "class id 99 is not one of the model's 2 labels (ids 0-1"),  # accepted before: every box filtered
])  # fmt: skip
def test_classes_name_what_the_model_has(detector: Path, square: Path, capsys: pytest.CaptureFixture, classes: str,
                                         needle: str) -> None:
    assert infer(detector, square, "--classes", classes) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("classes:") == 1 and "fix:" in err  # said once, not "classes: classes:"
    assert infer(detector, square, "--classes", "1", "--json") == 0


def test_minus_one_means_the_specs_value_not_an_opencv_error(
    detector: Path, square: Path, capsys: pytest.CaptureFixture
) -> None:
    assert infer(detector, square, "--iou-threshold", "-1", "--score-threshold", "-1", "--json") == 0
    assert [d["label"] for d in json.loads(capsys.readouterr().out)["detections"]] == ["blob"]


def test_detection_flags_on_a_steering_model_are_refused(
    tmp_path: Path, square: Path, capsys: pytest.CaptureFixture
) -> None:
    assert infer(brightness_pilot(tmp_path), square, "--score-threshold", "0.3") == 2
    err = capsys.readouterr().err
    assert "--score-threshold applies to detection models" in err and "steering model" in err
    assert "fix: drop --score-threshold" in err
    assert infer(brightness_pilot(tmp_path), square, "--classes", "car", "--max-detections", "3") == 2
    assert "--max-detections, --classes apply to detection models" in capsys.readouterr().err


def test_every_image_is_processed_and_each_failure_reported(
    tmp_path: Path, detector: Path, square: Path, capsys: pytest.CaptureFixture
) -> None:
    truncated = tmp_path / "truncated.jpg"
    _, data = cv2.imencode(".jpg", cv2.imread(str(square)))
    truncated.write_bytes(data.tobytes()[:-100])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    code = infer(detector, truncated, square, empty, missing, square, "--output-dir", out, "--json")
    captured = capsys.readouterr()
    assert code == 1
    results = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["image"] for r in results] == [str(square), str(square)]  # both good images, after the bad ones
    for name, needle in (("truncated.jpg", "truncated"), ("empty.png", "0 bytes"), ("missing.png", "does not exist")):
        assert any(name in line and needle in line for line in captured.err.splitlines()), (name, captured.err)
    assert "3 of 5 images failed" in captured.err and "Traceback" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["frame_2_annotated.png", "frame_annotated.png"]


def test_max_pixels_flag_lets_a_large_photo_through(
    detector: Path, square: Path, capsys: pytest.CaptureFixture
) -> None:
    """A 640x480 image above a 100000-pixel limit is refused with the flag that raises it; the flag is checked."""
    assert infer(detector, square, "--max-pixels", 100_000) == 1
    err = capsys.readouterr().err
    assert "above max_pixels 100000" in err and "infer --max-pixels" in err
    assert infer(detector, square, "--max-pixels", 640 * 480) == 0
    capsys.readouterr()
    assert infer(detector, square, "--max-pixels", 0) == 2
    assert "--max-pixels: max_pixels is 0; expected a positive number" in capsys.readouterr().err


def test_same_stem_inputs_get_their_own_annotated_files(
    tmp_path: Path, detector: Path, square: Path, capsys: pytest.CaptureFixture
) -> None:
    inputs = []
    for folder, value in (("a", 255), ("b", 128)):
        (tmp_path / folder).mkdir()
        image = np.zeros((480, 640, 3), np.uint8)
        image[80:160, 160:240] = value
        inputs.append(tmp_path / folder / "x.png")
        cv2.imwrite(str(inputs[-1]), image)
    out = tmp_path / "out"
    assert infer(detector, *inputs, "--output-dir", out, "--score-threshold", "0.1", "--json") == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    written = [Path(r["annotated"]) for r in results]
    assert len(set(written)) == 2 and all(p.is_file() for p in written)
    first, second = (cv2.imread(str(p)) for p in written)
    assert not np.array_equal(first, second)  # the second did not overwrite the first
    # a second run refuses before any work, naming every file it would overwrite
    assert infer(detector, *inputs, "--output-dir", out, "--json") == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "refusing to overwrite" in captured.err
    assert all(p.name in captured.err for p in written) and "--force" in captured.err
    assert infer(detector, *inputs, "--output-dir", out, "--force") == 0


def test_output_dir_that_is_a_file_is_refused_before_the_work(
    tmp_path: Path, detector: Path, square: Path, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "taken"
    target.write_text("mine")
    assert infer(detector, square, "--output-dir", target) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing was inferred
    assert "--output-dir" in captured.err and "is a file" in captured.err and "Traceback" not in captured.err
    assert target.read_text() == "mine"
    assert infer(detector, square, "--output-dir", target / "sub") == 2
    assert "--output-dir" in capsys.readouterr().err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_dir_is_refused_before_the_work(
    tmp_path: Path, detector: Path, square: Path, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "readonly"
    target.mkdir()
    target.chmod(0o555)
    try:
        assert infer(detector, square, "--output-dir", target) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "not writable" in captured.err
    finally:
        target.chmod(0o755)


def test_json_has_full_precision(tmp_path: Path, detector: Path, capsys: pytest.CaptureFixture) -> None:
    image = np.zeros((480, 641, 3), np.uint8)  # 641 px wide: box edges land between pixels
    image[80:160, 160:240] = 200  # score 200/255
    path = tmp_path / "odd.png"
    cv2.imwrite(str(path), image)
    assert infer(detector, path, "--json") == 0
    detection = json.loads(capsys.readouterr().out)["detections"][0]
    assert detection["score"] == pytest.approx(200 / 255, abs=1e-6) and detection["score"] != round(200 / 255, 4)
    assert any(abs(v * 10 - round(v * 10)) > 1e-6 for v in detection["box_xyxy"]), detection["box_xyxy"]


def test_infer_reads_files_with_the_nodes_decoder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pilot = brightness_pilot(tmp_path)
    deep = np.random.default_rng(0).integers(0, 65536, (250, 333)).astype(np.uint16)  # resized to 160x120
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), deep)
    assert infer(pilot, path, "--json", "--output-dir", tmp_path / "out") == 0
    angle = json.loads(capsys.readouterr().out)["angle"]
    from types import SimpleNamespace

    from trt_perception.errors import ImageError
    from trt_perception.heads import open_model
    from trt_perception.images import ImageDecoder

    node_decoder = ImageDecoder()  # what the node runs on each CompressedImage message
    head = open_model(pilot)
    try:
        frame = node_decoder(SimpleNamespace(format="png", data=path.read_bytes()))
        assert frame.color == decode_image_file(path).color == "gray16"
        expected = head.run(frame, 0.0).result.angle
    finally:
        head.close()
    assert angle == expected
    cut = tmp_path / "cut.jpg"  # a truncated JPEG: refused by both, not decoded half grey by one of them
    _, data = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    cut.write_bytes(data.tobytes()[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        node_decoder(SimpleNamespace(format="jpeg", data=cut.read_bytes()))
    assert infer(pilot, cut) == 1 and "truncated" in capsys.readouterr().err


def test_unwritable_output_dir_is_refused_before_the_work_even_as_root(
    tmp_path: Path, detector: Path, square: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trt_perception.tools.infer as infer_module

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(infer_module.tempfile, "NamedTemporaryFile", denied)  # a read-only folder or filesystem
    assert infer(detector, square, "--output-dir", tmp_path / "out") == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "not writable (Permission denied)" in captured.err
