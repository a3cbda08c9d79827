"""params.py: the one param table (global + per head + per task), params YAML loading, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trt_perception import config as cfg
from trt_perception.config import PerceptionConfig
from trt_perception.errors import ConfigError
from trt_perception.params import (
    USE_SPEC,
    ParamTable,
    check_value,
    format_param_table,
    load_params_file,
    validate_param_change,
)
from trt_perception.safety import SafetyConfig
from trt_perception.tasks.detection import DetectionTask
from trt_perception.tasks.steering import SteeringTask

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((REPO / "config").glob("*.yaml"))
LEGACY = ParamTable.legacy_table()
PARAMS = LEGACY.params
PARAM_BY_NAME = LEGACY.by_name


def write_params(path: Path, params: dict, node: str = "trt_perception") -> Path:
    path.write_text(yaml.safe_dump({node: {"ros__parameters": params}}), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- the table


def test_table_names_are_unique_and_defaults_valid():
    assert len(PARAM_BY_NAME) == len(PARAMS)
    for param in PARAMS:
        _, reason = check_value(param, param.default, strict_double=True)
        assert reason is None, reason
        assert param.read_only != param.dynamic, param.name  # every param is either live or start-only
        assert param.description


def test_model_paths_are_read_only():
    for head in ("detector", "pilot"):
        for key in ("model", "spec", "backend", "providers", "plugin_libraries", "cuda", "auto_build"):
            assert PARAM_BY_NAME[f"{head}.{key}"].read_only


def test_defaults_give_the_dataclass_defaults():
    config = PerceptionConfig.from_params({"detector.model": "/x.onnx"})
    assert SteeringTask.pilot_config(config.head("pilot").values).safety == SafetyConfig()
    assert config.qos_reliability == "best_effort" and config.qos_depth == 1
    assert config.head("detector").values["score_threshold"] == USE_SPEC  # -1 = the spec decides
    assert DetectionTask.overrides(config.head("detector").values) == {}


def test_param_table_markdown_lists_every_param():
    table = format_param_table(PARAMS)
    for param in PARAMS:
        assert f"`{param.name}`" in table


# ------------------------------------------------------------------------------------------- the files


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    flat = load_params_file(path)
    config = PerceptionConfig.from_params(flat)
    assert config.params_file == str(path.resolve())
    assert config.enabled_heads


def test_shipped_configs_exist():
    assert {p.name for p in CONFIG_FILES} >= {"car.yaml", "detector.yaml", "pilot.yaml", "demo.yaml"}


def test_car_yaml_documents_every_param():
    text = (REPO / "config" / "car.yaml").read_text(encoding="utf-8")
    config = PerceptionConfig.from_params(load_params_file(REPO / "config" / "car.yaml"))
    assert [h.name for h in config.enabled_heads] == ["detector", "pilot"]
    for param in PARAMS:
        if param.name in ("params_file", "heads", "cameras"):
            continue  # set by the launch file / documented in multi_head.yaml
        leaf = param.name.rsplit(".", 1)[-1]
        assert f"{leaf}:" in text, f"{param.name} missing from car.yaml"


def test_demo_yaml_points_at_the_packaged_demo_models():
    config = PerceptionConfig.from_params(load_params_file(REPO / "config" / "demo.yaml"))
    package_dir = Path(cfg.__file__).resolve().parent
    assert Path(config.head("detector").model.model) == package_dir / "data" / "demo" / "detector.onnx"
    assert Path(config.head("pilot").model.model) == package_dir / "data" / "demo" / "steering.onnx"
    assert config.image_transport == "compressed" and config.head("pilot").values["output"] == "twist"


def test_nested_and_dotted_keys_flatten(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "trt_perception:\n  ros__parameters:\n    detector:\n      score_threshold: 0.3\n"
        "    pilot.max_throttle: 0.2\n    use_sim_time: true\n",
        encoding="utf-8",
    )
    flat = load_params_file(path)
    assert flat["detector.score_threshold"] == 0.3
    assert flat["pilot.max_throttle"] == 0.2
    assert "use_sim_time" not in flat


def test_wildcard_and_namespaced_sections(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": {"qos_depth": 3, "image_topic": "/a"}},
                "/car1/trt_perception": {"ros__parameters": {"image_topic": "/b"}},
                "camera_node": {"ros__parameters": {"fps": 30}},  # other nodes' sections are ignored
            }
        ),
        encoding="utf-8",
    )
    flat = load_params_file(path)
    assert flat["qos_depth"] == 3 and flat["image_topic"] == "/b"  # node section wins over /**


def test_unknown_key_names_close_matches(tmp_path):
    path = write_params(tmp_path / "p.yaml", {"pilot": {"max_throtle": 0.3}})
    with pytest.raises(ConfigError) as info:
        load_params_file(path)
    text = str(info.value)
    assert "pilot.max_throtle" in text and "pilot.max_throttle" in text and str(path) in text


def test_integer_for_double_is_refused_like_ros(tmp_path):
    path = write_params(tmp_path / "p.yaml", {"pilot": {"max_throttle": 1}})
    with pytest.raises(ConfigError, match=r"pilot.max_throttle.*write 1.0"):
        load_params_file(path)
    assert PerceptionConfig.from_params({"pilot.max_throttle": 1, "detector.model": "m.onnx"})  # code: fine


def test_missing_node_section_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no section for node 'trt_perception'"):
        load_params_file(write_params(tmp_path / "a.yaml", {"x": 1}, node="other"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_params_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a folder; expected a params YAML"):
        load_params_file(tmp_path)
    bad = tmp_path / "b.yaml"
    bad.write_text("trt_perception: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params_file(bad)
    nop = tmp_path / "c.yaml"
    nop.write_text("trt_perception:\n  image_topic: /x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="ros__parameters"):
        load_params_file(nop)


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("detector.score_threshold", 1.5, "in [0, 1]"),
        ("detector.score_threshold", -0.5, "-1 (use the model spec's value)"),
        ("qos_depth", 0, "in [1, 100]"),
        ("qos_reliability", "fast", "one of ['best_effort', 'reliable']"),
        ("pilot.throttle_mode", "turbo", "one of ['model', 'constant', 'capped']"),
        ("pilot.max_steering", "a lot", "expected a number"),
        ("pilot.enabled", "yes", "true or false"),
        ("detector.classes", "person", "list of labels"),
        ("pilot.smoothing", float("nan"), "finite"),
    ],
)
def test_from_params_refusals_name_param_value_and_range(name, value, fragment):
    with pytest.raises(ConfigError) as info:
        PerceptionConfig.from_params({name: value, "detector.model": "m.onnx"})
    text = str(info.value)
    assert name in text and fragment in text and "fix" in text


def test_sentinels_and_overrides():
    config = PerceptionConfig.from_params(
        {
            "detector.model": "m.onnx",
            "detector.score_threshold": 0.25,
            "detector.iou_threshold": USE_SPEC,
            "detector.max_detections": 7,
            "detector.classes": ["cone", 3],
        }
    )
    assert DetectionTask.overrides(config.head("detector").values) == {
        "score_threshold": 0.25,
        "max_detections": 7,
        "classes": ["cone", "3"],
    }


def test_cross_parameter_rule():
    with pytest.raises(ConfigError, match="min_throttle .* above pilot.max_throttle"):
        PerceptionConfig.from_params({"detector.model": "m.onnx", "pilot.min_throttle": 0.6})
    current = LEGACY.defaults()
    assert validate_param_change("pilot.min_throttle", 0.6, current) is not None
    assert validate_param_change("pilot.min_throttle", 0.4, current) is None


def test_heads_need_models():
    with pytest.raises(ConfigError, match="detector.model is empty"):
        PerceptionConfig.from_params({})
    with pytest.raises(ConfigError, match="no head is enabled"):
        PerceptionConfig.from_params({"detector.enabled": False})
    with pytest.raises(ConfigError, match="pilot.model is empty"):
        PerceptionConfig.from_params({"detector.enabled": False, "pilot.enabled": True})


def test_validate_param_change():
    assert validate_param_change("detector.score_threshold", 0.4) is None
    assert validate_param_change("detector.score_threshold", -1.0) is None
    assert "in [0, 1]" in validate_param_change("detector.score_threshold", 2.0)
    assert "restart" in validate_param_change("detector.model", "/other.onnx")
    assert "restart" in validate_param_change("image_topic", "/other")
    assert "did you mean" in validate_param_change("pilot.max_throtle", 0.2)
    assert validate_param_change("pilot.drive_enabled", True) is None
    assert validate_param_change("pilot.throttle_mode", "constant") is None
    assert validate_param_change("pilot.throttle_mode", "warp") is not None




# ------------------------------------------------------------------------------------------ named heads


def test_named_heads_get_their_task_params_and_nothing_else(tmp_path):
    from head_factory import colour_classifier
    from onnx_factory import grid_detector

    detector, classifier = grid_detector(tmp_path), colour_classifier(tmp_path)
    path = write_params(tmp_path / "p.yaml", {
        "heads": ["front", "signs", "drive"],
        "front": {"model": detector.name, "score_threshold": 0.4},  # task from the spec beside the model
        "signs": {"task": "classification", "model": classifier.name, "top_k": 3},
        "drive": {"task": "steering", "model": "pilot.onnx", "max_throttle": 0.3},
    })
    flat = load_params_file(path)
    assert flat["front.score_threshold"] == 0.4 and flat["signs.top_k"] == 3 and flat["drive.max_throttle"] == 0.3
    config = PerceptionConfig.from_params(flat)
    assert [(h.name, h.task) for h in config.heads] == [
        ("front", "detection"), ("signs", "classification"), ("drive", "steering")]
    assert config.head("front").model.model == str(detector.resolve())
    assert not config.legacy and config.topic_prefix("front") == "front/"


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"heads": ["front"], "front": {"task": "detection", "model": "d.onnx", "max_throttle": 0.2}},
         "front.max_throttle"),
        ({"heads": ["front"], "front": {"task": "detection", "model": "d.onnx"}, "detector": {"model": "x.onnx"}},
         "'detector' is not a head of this node"),
        # enabled is a parameter of every head: the section names a head the node does not run, not a typo of
        # front.enabled (was "did you mean 'front.enabled'?")
        ({"heads": ["pilot"], "pilot": {"model": "p.onnx"}, "detector": {"enabled": True}},
         "fix: add 'detector' to heads to run it, or remove the 'detector' section"),
        ({"heads": ["pilot"], "pilot": {"model": "p.onnx"}, "pilto": {"enabled": True}}, "did you mean head 'pilot'?"),
        ({"heads": ["front"], "front": {"model": "nowhere.onnx"}}, "set front.task"),
        ({"heads": ["front end"]}, "not a usable name"),
        ({"heads": ["a", "a"]}, "twice"),
        ({"heads": ["a"], "a": {"task": "tracking"}}, "a.task is 'tracking'"),
    ],
)
def test_named_head_mistakes_are_named(tmp_path, params, fragment):
    with pytest.raises(ConfigError) as info:
        load_params_file(write_params(tmp_path / "p.yaml", params))
    assert fragment in str(info.value)


def test_two_steering_heads_would_fight_over_the_car():
    flat = {"heads": ["a", "b"], "a.task": "steering", "b.task": "steering", "a.model": "a.onnx",
            "b.model": "b.onnx"}
    with pytest.raises(ConfigError, match="fight over the car"):
        PerceptionConfig.from_params(flat)
    assert PerceptionConfig.from_params({**flat, "b.enabled": False}).enabled_heads[0].name == "a"


def test_live_changes_are_checked_per_head():
    table = ParamTable({"front": "detection", "drive": "steering"})
    current = table.defaults()
    assert validate_param_change("front.score_threshold", 0.3, current, table) is None
    assert "in [0, 1]" in validate_param_change("front.score_threshold", 3.0, current, table)
    assert "restart" in validate_param_change("front.model", "x.onnx", current, table)
    assert "above drive.max_throttle" in validate_param_change("drive.min_throttle", 0.9, current, table)
    assert "did you mean 'front.score_threshold'" in validate_param_change("front.score_treshold", 1, current, table)


def test_a_binary_params_file_is_a_config_error_not_a_unicode_error(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07\x12\x0bpytorch\xff\xfe\x80\x81" * 10)
    with pytest.raises(ConfigError, match=r"model.onnx is not UTF-8 text \(byte \d+.*fix: pass the params file"):
        load_params_file(path)


def test_a_deeply_nested_params_file_is_a_config_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 20000)
    with pytest.raises(ConfigError, match=r"deep\.yaml is nested too deeply"):
        load_params_file(deep)
