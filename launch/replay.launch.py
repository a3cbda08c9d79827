"""Play a rosbag2 recording into the node on sim time: tune on recorded drives with the real ROS wiring.

    ros2 launch trt_perception replay.launch.py                      (the shipped demo bag and demo.yaml)
    ros2 launch trt_perception replay.launch.py bag:=~/bags/drive1 params_file:=$HOME/car.yaml \
        rate:=0.5 loop:=true

`ros2 bag play --clock` publishes /clock and the node runs with use_sim_time, so its watchdog and latency use
the bag's time. Without ROS, `trt-perception replay` runs the same pipeline over a bag offline.
"""

from __future__ import annotations

import os

from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    OpaqueFunction,
    TimerAction,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO_BAG = "pkg://trt_perception/data/demo/drive_bag"


def _share_dir() -> str:
    try:
        from ament_index_python.packages import get_package_share_directory

        return get_package_share_directory("trt_perception")
    except (ImportError, LookupError):
        return os.path.dirname(HERE)


def bag_player(context, *args, **kwargs):
    from trt_perception.paths import resolve_path

    bag = str(resolve_path(LaunchConfiguration("bag").perform(context), param="bag"))
    # /clock at 100 Hz: sim time (and so the node's latency and watchdog) is only as fine as this rate
    rate = LaunchConfiguration("rate").perform(context)
    command = ["ros2", "bag", "play", bag, "--clock", "100", "--rate", rate]
    if LaunchConfiguration("loop").perform(context).lower() in ("true", "1"):
        command.append("--loop")
    delay = float(LaunchConfiguration("start_delay").perform(context))
    return [TimerAction(period=delay, actions=[ExecuteProcess(cmd=command, output="screen")])]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", default_value=DEMO_BAG, description="rosbag2 folder (or pkg://...)"),
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(_share_dir(), "config", "demo.yaml"),
                description="params YAML for the node",
            ),
            DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
            DeclareLaunchArgument("loop", default_value="false", description="play the bag in a loop"),
            DeclareLaunchArgument(
                "start_delay", default_value="2.0", description="seconds to let the node load models"
            ),
            DeclareLaunchArgument("namespace", default_value="", description="namespace for the node"),
            DeclareLaunchArgument("image_topic", default_value="", description="camera topic override"),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(os.path.join(HERE, "car.launch.py")),
                launch_arguments={
                    "params_file": LaunchConfiguration("params_file"),
                    "namespace": LaunchConfiguration("namespace"),
                    "image_topic": LaunchConfiguration("image_topic"),
                    "use_sim_time": "true",
                    "performance_mode": "false",
                }.items(),
            ),
            OpaqueFunction(function=bag_player),
        ]
    )
