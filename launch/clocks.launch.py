"""Jetson performance mode: store the clocks, max clocks + fan (+ nvpmodel), restore all on shutdown.

    ros2 launch trt_perception clocks.launch.py nvpmodel_mode:=0
    (car.launch.py performance_mode:=true includes this file)

Needs passwordless sudo for jetson_clocks (and nvpmodel, tee for a Nano's fan); without jetson_clocks or
sudo rights it logs one line and everything else starts as usual. The work is done by
trt_perception.jetson_clocks (unit-tested with fake commands).
"""

from __future__ import annotations

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnShutdown
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

DEFAULT_STORE = "~/.ros/trt_perception_jetson_clocks.conf"


def _logger():
    import launch.logging

    return launch.logging.get_logger("performance_mode")


def generate_launch_description() -> LaunchDescription:
    state = {}  # the JetsonClocks that set things up, for the shutdown handler

    def setup(context, *args, **kwargs):
        from trt_perception.jetson_clocks import JetsonClocks

        mode = LaunchConfiguration("nvpmodel_mode").perform(context).strip()
        clocks = JetsonClocks(
            store_file=_path(LaunchConfiguration("store_file").perform(context)),
            fan=LaunchConfiguration("fan").perform(context).lower() in ("true", "1"),
            nvpmodel_mode=int(mode) if mode else None,
            log=_logger().info,
        )
        clocks.setup()
        state["clocks"] = clocks
        return []

    def restore(event, context):
        clocks = state.pop("clocks", None)
        if clocks is not None:
            clocks.restore()
        return []

    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "store_file", default_value=DEFAULT_STORE, description="where the current clocks are stored"
            ),
            DeclareLaunchArgument("fan", default_value="true", description="fan at max while running"),
            DeclareLaunchArgument(
                "nvpmodel_mode", default_value="", description="nvpmodel power mode to set; empty = leave it"
            ),
            OpaqueFunction(function=setup),
            RegisterEventHandler(OnShutdown(on_shutdown=restore)),
        ]
    )


def _path(text: str):
    from pathlib import Path

    return Path(os.path.expanduser(text))
