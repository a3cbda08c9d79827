"""The launch files parse and declare the arguments the README documents.

A static check (ast) runs everywhere; where ROS 2's `launch`/`launch_ros` are installed the files are also
imported, their LaunchDescription built, and car.launch.py's node parameters checked.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
EXPECTED = {
    "car.launch.py": {
        "params_file",
        "namespace",
        "use_sim_time",
        "image_topic",
        "performance_mode",
        "nvpmodel_mode",
        "log_level",
    },
    "clocks.launch.py": {"store_file", "fan", "nvpmodel_mode"},
    "replay.launch.py": {"bag", "params_file", "rate", "loop", "start_delay", "namespace", "image_topic"},
}


def declared_arguments(path: Path) -> set:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            first = node.args[0]
            assert isinstance(first, ast.Constant), f"{path.name}: argument names must be literals"
            names.add(first.value)
    return names


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launch_file_arguments_static(name):
    path = LAUNCH / name
    compile(path.read_text(encoding="utf-8"), str(path), "exec")
    assert declared_arguments(path) == EXPECTED[name]
    assert "def generate_launch_description" in path.read_text(encoding="utf-8")


def test_every_launch_file_is_checked():
    assert {p.name for p in LAUNCH.glob("*.launch.py")} == set(EXPECTED)


def load(name: str):
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ros_launch():
    pytest.importorskip("launch.actions", reason="ROS 2 launch is not installed")
    pytest.importorskip("launch_ros.actions", reason="ROS 2 launch_ros is not installed")


@pytest.mark.ros
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launch_descriptions_build(ros_launch, name):
    description = load(name).generate_launch_description()
    names = {arg.name for arg in description.get_launch_arguments()}
    assert EXPECTED[name] <= names


@pytest.mark.ros
def test_car_launch_node_parameters(ros_launch, tmp_path):
    from launch import LaunchContext

    params = tmp_path / "p.yaml"
    params.write_text(
        "trt_perception:\n  ros__parameters:\n    detector:\n"
        "      model: m.onnx\n      score_threshold: 0.3\n",
        encoding="utf-8",
    )
    car = load("car.launch.py")
    context = LaunchContext()
    context.launch_configurations.update(
        {
            "params_file": str(params),
            "namespace": "car1",
            "use_sim_time": "true",
            "image_topic": "/cam",
            "log_level": "info",
        }
    )
    values = car.node_parameters(context, str(params))
    assert values["detector.model"] == "m.onnx" and values["detector.score_threshold"] == 0.3
    assert values["image_topic"] == "/cam" and values["use_sim_time"] is True
    assert values["params_file"] == str(params.resolve())
    nodes = car.launch_node(context)
    assert len(nodes) == 1


@pytest.mark.ros
def test_car_launch_refuses_a_bad_params_file(ros_launch, tmp_path):
    from launch import LaunchContext
    from trt_perception.errors import ConfigError

    params = tmp_path / "p.yaml"
    params.write_text("trt_perception:\n  ros__parameters:\n    detector:\n      scor_threshold: 0.3\n")
    context = LaunchContext()
    context.launch_configurations.update({"image_topic": "", "use_sim_time": "false"})
    with pytest.raises(ConfigError, match="detector.score_threshold"):
        load("car.launch.py").node_parameters(context, str(params))


def test_car_launch_exit_status_carries_a_failed_node(ros_launch):
    """A node that fails to start (exit 1) makes `ros2 launch` exit 1: launch turns the raised error into its
    return code (checked on a real Jazzy: exit 1 for a missing model, 0 after Ctrl-C)."""
    from types import SimpleNamespace

    from launch.actions import Shutdown

    module = load("car.launch.py")
    with pytest.raises(RuntimeError, match="exited with code 1"):
        module.on_node_exit(SimpleNamespace(returncode=1), None)
    actions = module.on_node_exit(SimpleNamespace(returncode=0), None)
    assert len(actions) == 1 and isinstance(actions[0], Shutdown)
