"""Tasks: what a head does with its model's outputs. One module per task, registered here by name.

A task owns its parameters (``PARAMS``), its run-time settings, how a parser's raw result becomes a result in
source-image pixels, the ROS topics and messages it publishes, its overlay drawing and its diagnostics; see
``tasks/base.py`` for the interface and README 'Adding a task' for the steps. Modules load lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Dict, Type

from trt_perception.errors import ConfigError

if TYPE_CHECKING:
    from trt_perception.tasks.base import Task

TASK_CLASSES: Dict[str, str] = {
    "detection": "trt_perception.tasks.detection:DetectionTask",
    "classification": "trt_perception.tasks.classification:ClassificationTask",
    "segmentation": "trt_perception.tasks.segmentation:SegmentationTask",
    "steering": "trt_perception.tasks.steering:SteeringTask",
}
TASKS = tuple(TASK_CLASSES)


def task_class(name: str) -> Type[Task]:
    """The class of task ``name``; an unknown task names the known ones."""
    target = TASK_CLASSES.get(name)
    if target is None:
        raise ConfigError(f"task {name!r} is unknown; expected one of {list(TASKS)}")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["TASKS", "TASK_CLASSES", "task_class"]
