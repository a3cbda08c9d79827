"""trt_perception/donkeycar.py: DonkeyCar's type strings, arithmetic, config/database files, graph recognition and
the spec of every pilot type, against values worked out from DonkeyCar's code (autorope/donkeycar@cde8bbe9)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from donkey_factory import database_entry, donkey_throttle, linear_unbin

from trt_perception import donkeycar as dk
from trt_perception.errors import ConfigError, SpecError
from trt_perception.spec import parse_spec

# ------------------------------------------------------------------------------------------ arithmetic


def test_inferred_throttle_is_donkeycars_utils_throttle() -> None:
    # utils.py:387-396 by hand: m = (a + 1) / 2, exp(-0.5 m) - 0.05 m; DonkeyCar's asymmetry kept
    assert dk.inferred_throttle(-1.0) == 1.0
    assert dk.inferred_throttle(0.0) == pytest.approx(math.exp(-0.25) - 0.025, abs=1e-15)  # 0.7538
    assert dk.inferred_throttle(1.0) == pytest.approx(math.exp(-0.5) - 0.05, abs=1e-15)  # 0.5565
    assert dk.inferred_throttle(3.0) == dk.inferred_throttle(1.0)  # clamped
    assert math.isnan(dk.inferred_throttle(float("nan")))  # utils.clamp lets NaN through
    for angle in np.linspace(-1.5, 1.5, 31):
        assert dk.inferred_throttle(float(angle)) == pytest.approx(donkey_throttle(float(angle)), abs=1e-15)


def test_linear_unbin_matches_the_categorical_parser_values() -> None:
    scores = np.zeros(15)
    for b in range(15):
        scores[:] = 0
        scores[b] = 1
        assert dk.linear_unbin(scores) == pytest.approx(linear_unbin(scores)) == pytest.approx(b * 2 / 14 - 1)
    throttle = np.zeros(20)
    throttle[19] = 1
    assert dk.linear_unbin(throttle, n=20, offset=0.0, r=0.8) == pytest.approx(0.76)  # top bin = R * 19/20


# ---------------------------------------------------------------------------------------- type strings


@pytest.mark.parametrize("text, kind, r, length, depth", [
    ("KerasCategorical-R:0.8", "categorical", 0.8, None, None),
    ("KerasMemory-L:3-D:0", "memory", None, 3, 0),
    ("KerasLSTM-L:5", "rnn", None, 5, None),
    ("KerasBehavioral-R:0.5", "behavior", 0.5, None, None),
    ("Keras3D_CNN", "3d", None, None, None),
    ("KerasLinear", "linear", None, None, None),
    ("KerasInferred", "inferred", None, None, None),
    ("KerasIMU", "imu", None, None, None),
    ("KerasLocalizer", "localizer", None, None, None),
    ("tflite_categorical", "categorical", None, None, None),
    ("tensorrt_linear", "linear", None, None, None),
    ("memory", "memory", None, None, None),
])
def test_type_strings(text: str, kind: str, r, length, depth) -> None:
    pilot = dk.parse_pilot_type(text)
    assert (pilot.kind, pilot.throttle_range, pilot.length, pilot.depth) == (kind, r, length, depth)


@pytest.mark.parametrize("text, fragment", [
    ("KerasCategorical-X", "unknown part"),
    ("KerasMemory-L:x", "unknown part"),
    ("resnet18", "unknown"),
    ("fastai_linear", "PyTorch/fastai"),
])
def test_bad_type_strings(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        dk.parse_pilot_type(text)


# ----------------------------------------------------------------------------------------- car config


def test_car_config_reads_literals_only_config_then_myconfig(tmp_path: Path) -> None:
    marker = tmp_path / "was_executed"
    (tmp_path / "config.py").write_text(
        "import os\n"
        f"CAR_PATH = PACKAGE_PATH = os.path.dirname(os.path.realpath(__file__))\n"
        f"open({str(marker)!r}, 'w')\n"  # would create the marker if the file were run
        "IMAGE_W = 160\nIMAGE_H = 120\nIMAGE_DEPTH = 3\n"
        "MODEL_CATEGORICAL_MAX_THROTTLE_RANGE = 0.8\n"
        "TRANSFORMATIONS = []\nROI_CROP_TOP = 45\n"
        "BEHAVIOR_LIST = ['Left_Lane', \"Right_Lane\"]\n"
        "lowercase = 1\n",
        encoding="utf-8",
    )
    (tmp_path / "myconfig.py").write_text(
        "# MODEL_CATEGORICAL_MAX_THROTTLE_RANGE = 0.9\n"
        "MODEL_CATEGORICAL_MAX_THROTTLE_RANGE = 0.6\n"
        "TRANSFORMATIONS = ['CROP']\n"
        "ROI_CROP_TOP: int = 30\n",
        encoding="utf-8",
    )
    for given in ("myconfig.py", "config.py"):
        config = dk.read_car_config(tmp_path / given)
        assert config.get("MODEL_CATEGORICAL_MAX_THROTTLE_RANGE") == 0.6
        assert config.get("TRANSFORMATIONS") == ["CROP"] and config.get("ROI_CROP_TOP") == 30
        assert config.get("IMAGE_H") == 120 and config.get("BEHAVIOR_LIST") == ["Left_Lane", "Right_Lane"]
        assert "CAR_PATH" in config.skipped and "lowercase" not in config.values
        assert config.get("ROI_CROP_LEFT") == 0  # the template's value where the car is silent
        assert [Path(p).name for p in config.sources] == ["config.py", "myconfig.py"]
    assert not marker.exists()
    (tmp_path / "broken.py").write_text("IMAGE_W = (\n")
    with pytest.raises(ConfigError, match="not valid Python"):
        dk.read_car_config(tmp_path / "broken.py")
    with pytest.raises(ConfigError, match="does not exist"):
        dk.read_car_config(tmp_path / "nope.py")


def test_database_entry_by_model_name(tmp_path: Path) -> None:
    entries = [
        database_entry("pilot_24-05-01_0", "KerasLinear", "linear", {"IMAGE_W": 160, "ROI_CROP_TOP": 0}),
        database_entry("pilot_24-05-01_1", "KerasCategorical-R:0.6", "tflite_categorical",
                       {"IMAGE_W": 160, "MODEL_CATEGORICAL_MAX_THROTTLE_RANGE": 0.6, "SOME_FN": "<not serializable>"}),
    ]
    path = tmp_path / "database.json"
    path.write_text(json.dumps(entries, indent=4))
    for model in ("pilot_24-05-01_1.tflite", "pilot_24-05-01_1.h5", "pilot_24-05-01_1.savedmodel",
                  "pilot_24-05-01_1"):
        entry = dk.read_database(path, model)
        assert (entry.name, entry.pilot, entry.model_type) == ("pilot_24-05-01_1", "KerasCategorical-R:0.6",
                                                               "tflite_categorical")
        assert entry.config.get("MODEL_CATEGORICAL_MAX_THROTTLE_RANGE") == 0.6 and not entry.config.has("SOME_FN")
    with pytest.raises(ConfigError, match="0 entries for model 'other.h5'.*pilot_24-05-01_0"):
        dk.read_database(path, "other.h5")
    with pytest.raises(ConfigError, match="2 entries"):
        dk.read_database(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        dk.read_database(path)


# ------------------------------------------------------------------------------------- recognition


IMG = dk.Tensor("img_in", (1, 120, 160, 3))
LINEAR_ROLES = {"angle": "n_outputs0", "throttle": "n_outputs1"}


def _out(name: str, size: int) -> dk.Tensor:
    return dk.Tensor(name, (1, size))


@pytest.mark.parametrize("kind, inputs, outputs, roles", [
    ("linear", [IMG], [_out("n_outputs0", 1), _out("n_outputs1", 1)], LINEAR_ROLES),
    ("linear", [IMG], [_out("n_outputs1", 1), _out("n_outputs0", 1)], LINEAR_ROLES),
    ("categorical", [IMG], [_out("throttle_out", 20), _out("angle_out", 15)],
     {"angle": "angle_out", "throttle": "throttle_out"}),
    ("inferred", [IMG], [_out("n_outputs0", 1)], {"angle": "n_outputs0"}),
    ("imu", [IMG, dk.Tensor("imu_in", (1, 6))], [_out("out_0", 1), _out("out_1", 1)],
     {"angle": "out_0", "throttle": "out_1"}),
    ("memory", [IMG, dk.Tensor("mem_in", (1, 6))], [_out("n_outputs0", 1), _out("n_outputs1", 1)],
     {"angle": "n_outputs0", "throttle": "n_outputs1"}),
    ("behavior", [IMG, dk.Tensor("xbehavior_in", (1, 3))], [_out("angle_out", 15), _out("throttle_out", 20)],
     {"angle": "angle_out", "throttle": "throttle_out"}),
    ("localizer", [IMG], [_out("angle", 1), _out("throttle", 1), _out("zloc", 8)],
     {"angle": "angle", "throttle": "throttle", "location": "zloc"}),
    ("rnn", [dk.Tensor("img_in", (1, 3, 120, 160, 3))], [_out("model_outputs", 2)], {"combined": "model_outputs"}),
    ("3d", [dk.Tensor("img_in", (1, 20, 120, 160, 3))], [_out("outputs", 2)], {"combined": "outputs"}),
    # TFLite names: serving_default_<input>:0, StatefulPartitionedCall:<n> in DonkeyCar's (alphabetical) order
    ("memory", [dk.Tensor("serving_default_img_in:0", (1, 120, 160, 3)), dk.Tensor("serving_default_mem_in:0", (1, 4))],
     [_out("StatefulPartitionedCall:0", 1), _out("StatefulPartitionedCall:1", 1)],
     {"angle": "StatefulPartitionedCall:0", "throttle": "StatefulPartitionedCall:1"}),
    ("categorical", [dk.Tensor("serving_default_img_in:0", (1, 120, 160, 3))],
     [_out("StatefulPartitionedCall:0", 15), _out("StatefulPartitionedCall:1", 20)],
     {"angle": "StatefulPartitionedCall:0", "throttle": "StatefulPartitionedCall:1"}),
])
def test_recognize_every_pilot_type(kind, inputs, outputs, roles) -> None:
    rec = dk.recognize(inputs, outputs)
    assert rec.kind == kind
    assert {role: t.name for role, t in rec.roles.items()} == roles


def test_recognition_uses_hints_and_refuses_what_it_cannot_tell() -> None:
    seq = [dk.Tensor("img_in", (1, 4, 120, 160, 3))]
    assert dk.recognize(seq, [_out("dense_9", 2)], ops=["LSTM", "Conv"]).kind == "rnn"
    assert dk.recognize(seq, [_out("dense_9", 2)], hint=dk.parse_pilot_type("KerasLSTM-L:4")).kind == "rnn"
    assert dk.recognize(seq, [_out("dense_9", 2)]).kind == "3d"
    odd = [IMG, dk.Tensor("input_2", (1, 6))]
    outs = [_out("a", 1), _out("b", 1)]
    with pytest.raises(SpecError, match="--donkey-type memory"):
        dk.recognize(odd, outs)
    assert dk.recognize(odd, outs, hint=dk.parse_pilot_type("memory")).kind == "memory"
    with pytest.raises(SpecError, match="graph is a DonkeyCar 'linear' pilot but the type given is 'KerasMemory"):
        dk.recognize([IMG], outs, hint=dk.parse_pilot_type("KerasMemory-L:3-D:0"))
    with pytest.raises(SpecError, match="match no DonkeyCar pilot"):
        dk.recognize([IMG], [_out("a", 4)])
    with pytest.raises(SpecError, match="cannot tell the image input"):
        dk.recognize([dk.Tensor("a", (1, 3, 8, 8)), dk.Tensor("b", (1, 3, 8, 8))], outs)
    # a TFLite file may list outputs in any order; 'StatefulPartitionedCall:<i>' carries the Keras index
    tflite = [_out("StatefulPartitionedCall:2", 8), _out("StatefulPartitionedCall:1", 1),
              _out("StatefulPartitionedCall:0", 1)]
    roles = dk.recognize([IMG], tflite).roles
    assert [roles[r].name[-1] for r in ("angle", "throttle", "location")] == ["0", "1", "2"]
    rec = dk.recognize([IMG], [_out("Identity", 1), _out("Identity_1", 1)])
    assert rec.roles["angle"].name == "Identity" and any("by position" in n for n in rec.notes)


# --------------------------------------------------------------------------------------------- specs


def _spec(kind: str, inputs, outputs, **choices) -> dict:
    rec = dk.recognize(inputs, outputs)
    spec = dk.build_spec(rec, dk.SpecChoices(**choices))
    parse_spec(spec)  # every spec written is a valid spec
    return spec


def test_specs_of_every_type() -> None:
    base = {"name": "img_in", "height": 120, "width": 160, "layout": "NHWC", "color": "RGB", "scale": 1 / 255,
            "offset": 0.0}
    spec = _spec("categorical", [IMG], [_out("angle_out", 15), _out("throttle_out", 20)], throttle_range=0.6)
    assert spec == {"task": "steering", "input": base, "output": {
        "format": "steering_categorical", "tensors": {"angle": "angle", "throttle": "throttle"}, "angle_bins": 15,
        "throttle_bins": 20, "angle_range": [-1.0, 1.0], "throttle_range": [0.0, 0.6]}}
    spec = _spec("inferred", [IMG], [_out("n_outputs0", 1)])
    assert spec["output"] == {"format": "steering_linear", "tensors": {"angle": "angle"}, "throttle": "inferred"}
    spec = _spec("memory", [IMG, dk.Tensor("mem_in", (1, 8))], [_out("n_outputs0", 1), _out("n_outputs1", 1)])
    assert spec["inputs"] == {"mem_in": {"source": "memory", "length": 4, "start": [0.0, 0.0]}}
    spec = _spec("imu", [IMG, dk.Tensor("imu_in", (1, 6))], [_out("out_0", 1), _out("out_1", 1)])
    imu = spec["inputs"]["imu_in"]
    assert imu["fields"][3:] == ["angular_velocity.x", "angular_velocity.y", "angular_velocity.z"]
    assert imu["scale"] == [1.0, 1.0, 1.0, 180 / math.pi, 180 / math.pi, 180 / math.pi]
    config = dk.CarConfig({"BEHAVIOR_LIST": ["Left", "Right", "Middle"]})
    spec = _spec("behavior", [IMG, dk.Tensor("xbehavior_in", (1, 3))],
                 [_out("angle_out", 15), _out("throttle_out", 20)], config=config)
    assert spec["inputs"]["xbehavior_in"] == {"source": "behavior", "topic": "behavior",
                                              "labels": ["Left", "Right", "Middle"], "default": "Left"}
    spec = _spec("localizer", [IMG], [_out("angle", 1), _out("throttle", 1), _out("zloc", 10)])
    assert spec["output"]["tensors"] == {"angle": "angle", "location": "location", "throttle": "throttle"}
    spec = _spec("rnn", [dk.Tensor("img_in", (1, 3, 120, 160, 1))], [_out("model_outputs", 2)])
    assert spec["input"]["sequence"] == 3 and spec["input"]["color"] == "GRAY"
    assert spec["output"] == {"format": "steering_linear", "tensors": {"combined": "combined"}}
    spec = _spec("linear", [dk.Tensor("img_in", (1, 80, 160, 3))], [_out("n_outputs0", 1), _out("n_outputs1", 1)],
                 crop_top=40, crop_bottom=0)
    assert spec["input"]["crop"] == {"top": 40, "bottom": 0} and spec["input"]["height"] == 80


def test_masks_from_the_car_transformations() -> None:
    crop = dk.CarConfig({"TRANSFORMATIONS": ["CROP"], "ROI_CROP_TOP": 45, "ROI_CROP_BOTTOM": 5, "ROI_CROP_LEFT": 2,
                         "ROI_CROP_RIGHT": 3})
    assert dk.mask_regions(crop, 120, 160) == [{"top": 45, "bottom": 5, "left": 2, "right": 3}]
    trapeze = dk.CarConfig({"POST_TRANSFORMATIONS": ["TRAPEZE"], "ROI_TRAPEZE_UL": 20, "ROI_TRAPEZE_UR": 140,
                            "ROI_TRAPEZE_LL": 0, "ROI_TRAPEZE_LR": 160, "ROI_TRAPEZE_MIN_Y": 60,
                            "ROI_TRAPEZE_MAX_Y": 120})
    assert dk.mask_regions(trapeze, 120, 160) == [{"polygon": [[20, 60], [140, 60], [160, 120], [0, 120]]}]
    spec = _spec("linear", [IMG], [_out("n_outputs0", 1), _out("n_outputs1", 1)], config=crop)
    assert spec["input"]["mask"] == {"top": 45, "bottom": 5, "left": 2, "right": 3}
    with pytest.raises(ConfigError, match="'CANNY'.*CROP and TRAPEZE only"):
        dk.mask_regions(dk.CarConfig({"TRANSFORMATIONS": ["CROP", "CANNY"]}), 120, 160)


# ------------------------------------------------- car config: expressions (read, never run) and what they refuse


REPRO_MYCONFIG = ("IMAGE_H = 120\n"
                  "TRANSFORMATIONS = ['CROP']\n"
                  "ROI_CROP_TOP = IMAGE_H // 3\n"
                  "MODEL_CATEGORICAL_MAX_THROTTLE_RANGE = 0.5 * 1\n")


def test_car_config_works_out_arithmetic_on_earlier_names(tmp_path: Path) -> None:
    marker = tmp_path / "was_executed"
    (tmp_path / "config.py").write_text(
        "import os\nCAR_PATH = os.path.dirname(os.path.realpath(__file__))\n"
        "DATA_PATH = os.path.join(CAR_PATH, 'data')\n"
        f"open({str(marker)!r}, 'w')\n"
        "IMAGE_W = 160\nIMAGE_H = 120\nROI_CROP_TOP = 45\nSEQUENCE_LENGTH = 3\n",
        encoding="utf-8",
    )
    (tmp_path / "myconfig.py").write_text(
        REPRO_MYCONFIG
        + "ROI_CROP_BOTTOM = -(-10) % 7 + 2 ** 2\n"  # 3 + 4
        "margin = 4\n"  # lowercase names are not settings, but later settings may use them
        "ROI_CROP_LEFT = int(margin * 1.5) - (1 if IMAGE_H > 100 else 0)\n"  # 5
        "ROI_CROP_RIGHT: int = max(margin, 2) / 2\n"  # 2.0
        "BEHAVIOR_LIST = ['Left_Lane'] + ['Right_Lane', 'Center']\n"
        "NUM_LOCATIONS = len(BEHAVIOR_LIST) * 2\n"  # 6
        "SEQUENCE_LENGTH, MEM_DEPTH = 5, 0\n"
        "SIZES = {'h': IMAGE_H, 'w': 160}\nIMAGE_W = SIZES['w'] // 2 * 2\n"
        "if IMAGE_H >= 120:\n    ROI_TRAPEZE_MIN_Y = IMAGE_H // 2\nelse:\n    ROI_TRAPEZE_MIN_Y = 0\n"
        "ROI_TRAPEZE_MAX_Y = IMAGE_H\nROI_TRAPEZE_MAX_Y -= 1\n"
        "DRIVE_LOOP_HZ = None or 20\nAUTO_CREATE_NEW_TUB = not True\n",
        encoding="utf-8",
    )
    config = dk.read_car_config(tmp_path / "myconfig.py")
    assert config.get("ROI_CROP_TOP") == 40 and config.get("MODEL_CATEGORICAL_MAX_THROTTLE_RANGE") == 0.5
    assert [config.get(f"ROI_CROP_{k}") for k in ("BOTTOM", "LEFT", "RIGHT")] == [7, 5, 2.0]
    assert config.get("BEHAVIOR_LIST") == ["Left_Lane", "Right_Lane", "Center"] and config.get("NUM_LOCATIONS") == 6
    assert (config.get("SEQUENCE_LENGTH"), config.get("MEM_DEPTH"), config.get("IMAGE_W")) == (5, 0, 160)
    assert (config.get("ROI_TRAPEZE_MIN_Y"), config.get("ROI_TRAPEZE_MAX_Y")) == (60, 119)
    assert (config.get("DRIVE_LOOP_HZ"), config.get("AUTO_CREATE_NEW_TUB")) == (20, False)
    assert "margin" not in config.values and config.skipped == ["CAR_PATH", "DATA_PATH"]
    assert not marker.exists()
    spec = _spec("categorical", [IMG], [_out("angle_out", 15), _out("throttle_out", 20)], config=config,
                 throttle_range=None)
    assert spec["input"]["mask"] == {"top": 40, "bottom": 7, "left": 5, "right": 2}
    assert spec["output"]["throttle_range"] == [0.0, 0.5]


@pytest.mark.parametrize("line, fragment", [
    ("ROI_CROP_TOP = compute_top()", "`compute_top\\(\\)` is a call"),
    ("ROI_CROP_TOP = IMAGE_H // 3", "IMAGE_H is not set earlier in myconfig.py; DonkeyCar runs config.py and "
                                    "myconfig.py each on its own"),
    ("ROI_CROP_TOP = 40\nfor _ in range(2):\n    ROI_CROP_TOP += 1", "set by a `for` statement \\(line 3\\)"),
    ("ROI_CROP_TOP = os.environ.get('TOP')", "is a call"),
    ("TOP = f()\nROI_CROP_TOP = TOP", "it uses TOP, which is not read either \\(.*myconfig.py:2\\)"),
])
def test_unreadable_value_the_converter_uses_is_refused_with_file_line_and_statement(
        tmp_path: Path, line: str, fragment: str) -> None:
    (tmp_path / "config.py").write_text("IMAGE_H = 120\nROI_CROP_TOP = 45\n", encoding="utf-8")
    (tmp_path / "myconfig.py").write_text(f"TRANSFORMATIONS = ['CROP']\n{line}\n", encoding="utf-8")
    config = dk.read_car_config(tmp_path / "myconfig.py")
    with pytest.raises(ConfigError) as info:
        dk.mask_regions(config, 120, 160)  # not the template's (or config.py's) 45
    message = str(info.value)
    number = line.count("\n") + 2
    assert f"myconfig.py:{number}: ROI_CROP_TOP is set by `" in message
    assert "cannot be worked out without running the file" in message and re.search(fragment, message)
    assert "fix: write the value itself in myconfig.py, e.g. ROI_CROP_TOP = " in message
    assert "--donkey-database" in message


def test_unreadable_values_refuse_only_where_used(tmp_path: Path) -> None:
    (tmp_path / "myconfig.py").write_text(
        "import os\nCAR_PATH = os.getcwd()\nWEB_CONTROL_PORT = int(os.getenv('PORT', 8887))\n"
        "MODEL_CATEGORICAL_MAX_THROTTLE_RANGE = speed_limit()\nBEHAVIOR_LIST = load_behaviors()\n",
        encoding="utf-8")
    config = dk.read_car_config(tmp_path / "myconfig.py")
    assert not config.has("MODEL_CATEGORICAL_MAX_THROTTLE_RANGE")
    linear = _spec("linear", [IMG], [_out("n_outputs0", 1), _out("n_outputs1", 1)], config=config)
    assert "mask" not in linear["input"]  # CAR_PATH, the port, the range, the behaviors: not used, not refused
    categorical = dk.recognize([IMG], [_out("angle_out", 15), _out("throttle_out", 20)])
    with pytest.raises(ConfigError, match=r"myconfig.py:4: MODEL_CATEGORICAL_MAX_THROTTLE_RANGE is set by "
                                          r"`MODEL_CATEGORICAL_MAX_THROTTLE_RANGE = speed_limit\(\)`"):
        dk.build_spec(categorical, dk.SpecChoices(config=config))
    spec = dk.build_spec(categorical, dk.SpecChoices(config=config, throttle_range=0.6))  # a flag settles it
    assert spec["output"]["throttle_range"] == [0.0, 0.6]
    behavior = dk.recognize([IMG, dk.Tensor("xbehavior_in", (1, 2))], [_out("angle_out", 15), _out("throttle_out", 20)])
    with pytest.raises(ConfigError, match="myconfig.py:5: BEHAVIOR_LIST"):
        dk.build_spec(behavior, dk.SpecChoices(config=config, throttle_range=0.6))
    # the training values of database.json (DonkeyCar's computed ones) settle what the file does not say
    trained = dk.CarConfig({"MODEL_CATEGORICAL_MAX_THROTTLE_RANGE": 0.7, "BEHAVIOR_LIST": ["a", "b"]})
    merged = config.merged(trained)
    assert merged.get("MODEL_CATEGORICAL_MAX_THROTTLE_RANGE") == 0.7 and merged.get("BEHAVIOR_LIST") == ["a", "b"]
    assert merged.skipped == ["CAR_PATH", "WEB_CONTROL_PORT"]
    # a later readable value replaces an unreadable one, a later unreadable one hides a readable one
    (tmp_path / "config.py").write_text("ROI_CROP_TOP = top()\nROI_CROP_BOTTOM = 5\n", encoding="utf-8")
    (tmp_path / "myconfig.py").write_text("TRANSFORMATIONS = ['CROP']\nROI_CROP_TOP = 30\nROI_CROP_BOTTOM = b()\n",
                                          encoding="utf-8")
    with pytest.raises(ConfigError, match="myconfig.py:3: ROI_CROP_BOTTOM"):
        dk.mask_regions(dk.read_car_config(tmp_path / "config.py"), 120, 160)
    (tmp_path / "myconfig.py").write_text("TRANSFORMATIONS = ['CROP']\nROI_CROP_TOP = 30\n", encoding="utf-8")
    assert dk.mask_regions(dk.read_car_config(tmp_path / "config.py"), 120, 160) == [
        {"top": 30, "bottom": 5, "left": 0, "right": 0}]


def test_config_reader_refuses_to_build_huge_values(tmp_path: Path) -> None:
    (tmp_path / "myconfig.py").write_text("A = 'x' * 10 ** 12\nB = 10 ** 10 ** 10\nC = [0] * 3\nD = 2 ** 10\n",
                                          encoding="utf-8")
    config = dk.read_car_config(tmp_path / "myconfig.py")
    assert config.skipped == ["A", "B"] and config.get("C") == [0, 0, 0] and config.get("D") == 1024
    assert "too large" in config.unread["A"].reason


def _convert(folder: Path, kind: str, *argv: str, **model) -> tuple:
    from donkey_factory import convert_pilot

    out = convert_pilot(folder, kind, *argv, **model)
    return out, yaml.safe_load(out.with_suffix(".yaml").read_text())


def test_convert_reads_myconfig_expressions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "myconfig.py").write_text(REPRO_MYCONFIG, encoding="utf-8")
    _, spec = _convert(tmp_path, "categorical", "--donkey-config", str(tmp_path / "myconfig.py"))
    assert spec["input"]["mask"] == {"top": 40, "bottom": 0, "left": 0, "right": 0}  # not the template's 45
    assert spec["output"]["throttle_range"] == [0.0, 0.5]  # not the template's 0.8
    assert "throttle range not given" not in capsys.readouterr().out
    # what cannot be worked out is refused, not defaulted...
    (tmp_path / "myconfig.py").write_text("TRANSFORMATIONS = ['CROP']\nROI_CROP_TOP = crop_rows()\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"myconfig.py:2: ROI_CROP_TOP is set by `ROI_CROP_TOP = crop_rows\(\)`"):
        _convert(tmp_path, "linear", "--donkey-config", str(tmp_path / "myconfig.py"))
    # ...unless the pilot's database.json entry holds the value DonkeyCar computed
    models = tmp_path / "models"
    models.mkdir()
    (models / "database.json").write_text(json.dumps([database_entry(
        "linear_keras", "KerasLinear", "linear", {"TRANSFORMATIONS": ["CROP"], "ROI_CROP_TOP": 35})]))
    _, spec = _convert(tmp_path, "linear", "--donkey-config", str(tmp_path / "myconfig.py"),
                       "--donkey-database", str(models / "database.json"))
    assert spec["input"]["mask"]["top"] == 35
    (models / "database.json").write_text(json.dumps([database_entry(  # an entry silent on it settles nothing
        "linear_keras", "KerasLinear", "linear", {"IMAGE_H": 120, "IMAGE_W": 160})]))
    (tmp_path / "again").mkdir()
    with pytest.raises(ConfigError, match="myconfig.py:2: ROI_CROP_TOP"):
        _convert(tmp_path / "again", "linear", "--donkey-config", str(tmp_path / "myconfig.py"),
                 "--donkey-database", str(models / "database.json"))


# -------------------------------------------------------------- type strings against the graph they come with


MEM6 = [IMG, dk.Tensor("mem_in", (1, 6))]  # L = 3
LINEAR_OUTS = [_out("n_outputs0", 1), _out("n_outputs1", 1)]


def test_type_string_contradicting_the_graph_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        dk.recognize(MEM6, LINEAR_OUTS, hint=dk.parse_pilot_type("KerasMemory-L:5-D:0"))
    message = str(info.value)
    for part in ("'KerasMemory-L:5-D:0'", "L=5", "mem_in [1, 10]", "input 'mem_in' is [1, 6]", "3 pairs (L=3)",
                 "fix:", "KerasMemory-L:3-D:0"):
        assert part in message, part
    assert dk.recognize(MEM6, LINEAR_OUTS, hint=dk.parse_pilot_type("KerasMemory-L:3-D:1")).kind == "memory"
    assert dk.recognize(MEM6, LINEAR_OUTS, hint=dk.parse_pilot_type("memory")).kind == "memory"  # says no L
    odd = [IMG, dk.Tensor("input_2", (1, 6))]  # a vector input the type string names
    with pytest.raises(ConfigError, match="L=2"):
        dk.recognize(odd, LINEAR_OUTS, hint=dk.parse_pilot_type("KerasMemory-L:2-D:0"))
    seq = [dk.Tensor("img_in", (1, 3, 120, 160, 3))]
    with pytest.raises(ConfigError, match=r"'KerasLSTM-L:5' says a sequence of L=5 frames.*\[1, 3, 120, 160, 3\]: "
                                          r"3 frames.*KerasLSTM-L:3"):
        dk.recognize(seq, [_out("model_outputs", 2)], hint=dk.parse_pilot_type("KerasLSTM-L:5"))
    assert dk.recognize(seq, [_out("model_outputs", 2)], hint=dk.parse_pilot_type("KerasLSTM-L:3")).sequence == 3


@pytest.mark.parametrize("argv", [("--donkey-type", "KerasMemory-L:5-D:0"), ("--donkey-database", "DB")])
def test_convert_refuses_a_type_string_that_contradicts_the_graph(tmp_path: Path, argv) -> None:
    (tmp_path / "database.json").write_text(json.dumps([database_entry(
        "memory_keras", "KerasMemory-L:5-D:0", "memory", {"SEQUENCE_LENGTH": 5})]))
    argv = tuple(str(tmp_path / "database.json") if a == "DB" else a for a in argv)
    with pytest.raises(ConfigError, match=r"'KerasMemory-L:5-D:0'.*'mem_in' is \[1, 6\]"):
        _convert(tmp_path, "memory", *argv, length=3)
    _, spec = _convert(tmp_path, "memory", "--donkey-type", "KerasMemory-L:3-D:0", length=3)
    assert spec["inputs"]["mem_in"]["length"] == 3
