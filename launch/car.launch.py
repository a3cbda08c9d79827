"""What runs on the car: the trt_perception node (detector and/or pilot) with its params file.

    ros2 launch trt_perception car.launch.py
    ros2 launch trt_perception car.launch.py params_file:=$HOME/car.yaml namespace:=car1 \
        performance_mode:=true
    ros2 launch trt_perception car.launch.py --show-args

The params file is read and checked here (unknown names with close matches, wrong types, bad ranges), before
the node starts, and handed to the node under its real name, so a namespace does not silently detach it from
its `trt_perception:` section. With performance_mode:=true, clocks.launch.py sets max clocks (and restores
them on shutdown).
"""

from __future__ import annotations

import os

from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction, Shutdown
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = "trt_perception"
HERE = os.path.dirname(os.path.abspath(__file__))


def share_dir() -> str:
    """The installed share folder, or the source tree when the package is not installed (tests)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return get_package_share_directory(PACKAGE)
    except (ImportError, LookupError):
        return os.path.dirname(HERE)


def node_parameters(context, params_file: str) -> dict:
    """The node's parameters from ``params_file`` plus the launch arguments that override them."""
    from trt_perception.params import load_params_file

    params = {k: v for k, v in load_params_file(params_file).items() if v != []}  # rcl: no empty lists
    image_topic = LaunchConfiguration("image_topic").perform(context)
    if image_topic:
        params["image_topic"] = image_topic
    params["use_sim_time"] = LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")
    return params


def launch_node(context, *args, **kwargs):
    params_file = os.path.expanduser(LaunchConfiguration("params_file").perform(context))
    return [
        Node(
            package=PACKAGE,
            executable="perception",
            name=PACKAGE,
            namespace=LaunchConfiguration("namespace").perform(context),
            parameters=[node_parameters(context, params_file)],
            arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level").perform(context)],
            output="screen",
            emulate_tty=True,
            # the car is this node: when it stops, stop the launch too (performance_mode restores the clocks);
            # a failed node (a startup error: one clear log line, exit 1) makes the launch itself exit 1
            on_exit=on_node_exit,
        )
    ]


def on_node_exit(event, context):
    """Shut the launch down with the node; a non-zero exit becomes the launch's exit status 1, so systemd units
    and scripts that wrap `ros2 launch` see the failure (launch turns an exception here into return code 1)."""
    if event.returncode:
        raise RuntimeError(
            f"trt_perception exited with code {event.returncode}; its log line above says why and how to fix it"
        )
    return [Shutdown(reason="trt_perception exited")]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(share_dir(), "config", "car.yaml"),
                description="params YAML (trt_perception: ros__parameters: ...); see config/car.yaml",
            ),
            DeclareLaunchArgument("namespace", default_value="", description="namespace for the node"),
            DeclareLaunchArgument(
                "use_sim_time", default_value="false", description="use /clock (true when playing a bag)"
            ),
            DeclareLaunchArgument(
                "image_topic", default_value="", description="camera topic; empty = the params file's"
            ),
            DeclareLaunchArgument(
                "performance_mode",
                default_value="false",
                description="Jetson: max clocks + fan while running (clocks.launch.py), restored on shutdown",
            ),
            DeclareLaunchArgument(
                "nvpmodel_mode", default_value="", description="nvpmodel mode to set; empty = keep"
            ),
            DeclareLaunchArgument("log_level", default_value="info", description="node log level"),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(os.path.join(HERE, "clocks.launch.py")),
                launch_arguments={"nvpmodel_mode": LaunchConfiguration("nvpmodel_mode")}.items(),
                condition=IfCondition(LaunchConfiguration("performance_mode")),
            ),
            OpaqueFunction(function=launch_node),
        ]
    )
