"""A node's validated configuration: global settings plus one ``HeadConfig`` per head.

``PerceptionConfig.from_params`` turns ``{dotted.name: value}`` (a params file, the node's declared params,
replay's flags) into this, checked against the one parameter table (params.py) with model paths resolved.
Opening the models is heads.py's job; this module imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from trt_perception.errors import ConfigError
from trt_perception.params import (
    ORT_DEFAULTS,
    ParamTable,
    check_values,
    cross_check,
    head_values,
    resolve_heads,
    task_params,
)
from trt_perception.paths import resolve_param_path


@dataclass(frozen=True)
class ModelConfig:
    """Which model a head runs and on which runtime (fixed at start)."""

    model: str = ""
    spec: str = ""
    backend: str = "auto"
    providers: Tuple[str, ...] = ()
    plugin_libraries: Tuple[str, ...] = ()
    cuda: str = "auto"
    auto_build: bool = False
    gpu_preprocess: bool = False
    ort_threads: int = ORT_DEFAULTS["ort_threads"]
    ort_inter_op_threads: int = ORT_DEFAULTS["ort_inter_op_threads"]
    ort_spinning: bool = ORT_DEFAULTS["ort_spinning"]
    ort_optimization: str = ORT_DEFAULTS["ort_optimization"]


# Global params that shape how a FrameProcessor decodes and schedules frames (``frame_options``).
FRAME_GLOBALS = ("gpu_decode", "max_pixels", "jpeg_reduce", "overlap")


@dataclass(frozen=True)
class HeadConfig:
    """One head: its name, task, model, and its task's params (relative names, e.g. ``score_threshold``)."""

    name: str
    task: str
    enabled: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    values: Mapping[str, Any] = field(default_factory=dict)
    cameras: Tuple[str, ...] = ()  # the cameras it runs on; empty = all


@dataclass(frozen=True)
class CameraConfig:
    """One camera input. ``name`` is '' for the single camera of ``image_topic`` (outputs without a prefix)."""

    name: str
    topic: str
    transport: str = "raw"


@dataclass(frozen=True)
class PerceptionConfig:
    """Everything the node (and replay) needs, validated."""

    image_topic: str = "/camera/image_raw"
    image_transport: str = "raw"
    qos_reliability: str = "best_effort"
    qos_depth: int = 1
    frame_policy: str = "latest"
    diagnostics_period: float = 1.0
    bad_frame_log_period: float = 5.0
    gpu_decode: str = "auto"
    max_pixels: int = 40_000_000
    jpeg_reduce: str = "off"
    overlap: bool = True
    params_file: str = ""
    heads: Tuple[HeadConfig, ...] = ()
    cameras: Tuple[CameraConfig, ...] = ()  # empty: one camera from image_topic/image_transport
    legacy: bool = True  # heads param empty: detector + pilot, topics without a head prefix
    table: ParamTable = field(default_factory=ParamTable.legacy_table, compare=False, repr=False)

    @classmethod
    def from_params(
        cls, flat: Mapping[str, Any], base_dir: Optional[Union[str, Path]] = None
    ) -> PerceptionConfig:
        """Validate ``{dotted.name: value}`` (missing names take defaults) into a config.

        Each refusal is a ConfigError naming the parameter, the value, the allowed range and the fix.
        Model paths are resolved: ``pkg://`` URLs, then relative paths against ``base_dir`` or, when not
        given, the folder of ``params_file``.
        """
        if base_dir is None and flat.get("params_file"):
            base_dir = Path(str(flat["params_file"])).parent
        base = Path(base_dir) if base_dir is not None else None
        table = resolve_heads(flat, base)
        values = table.defaults()
        try:
            values.update(check_values(flat, table))
        except ConfigError as exc:
            raise ConfigError(f"{exc}; fix: correct it in the params file or with `ros2 param set`") from None
        reason = cross_check(values, table)
        if reason:
            raise ConfigError(reason)
        heads = tuple(
            HeadConfig(
                name=head,
                task=task,
                enabled=values[f"{head}.enabled"],
                model=model_config(head, values, base),
                values={p.name: values[f"{head}.{p.name}"] for p in task_params(task)},
                cameras=tuple(values[f"{head}.cameras"]),
            )
            for head, task in table.heads.items()
        )
        cameras = tuple(
            CameraConfig(name, values[f"camera.{name}.topic"], values[f"camera.{name}.transport"])
            for name in table.cameras
        )
        globals_ = {
            name: values[name]
            for name in (
                "image_topic", "image_transport", "qos_reliability", "qos_depth", "frame_policy",
                "diagnostics_period", "bad_frame_log_period", "params_file", *FRAME_GLOBALS,
            )
        }
        config = cls(**globals_, heads=heads, cameras=cameras, legacy=table.legacy, table=table)
        config.check_heads()
        return config

    def frame_options(self) -> Dict[str, Any]:
        """The FrameProcessor keywords these globals set (``FrameProcessor(heads, **config.frame_options())``)."""
        return {"gpu_decode": self.gpu_decode, "max_pixels": self.max_pixels, "jpeg_reduce": self.jpeg_reduce}

    @property
    def enabled_heads(self) -> Tuple[HeadConfig, ...]:
        return tuple(h for h in self.heads if h.enabled)

    def head(self, name: str) -> HeadConfig:
        for head in self.heads:
            if head.name == name:
                return head
        raise ConfigError(f"head {name!r} is not configured; the heads are {[h.name for h in self.heads]}")

    def topic_prefix(self, head: str, camera: str = "") -> str:
        """'<camera>/' with several cameras, then '' for the classic heads (topics as before heads existed)
        or '<head>/'."""
        return (f"{camera}/" if camera else "") + ("" if self.legacy else f"{head}/")

    @property
    def camera_inputs(self) -> Tuple[CameraConfig, ...]:
        """The cameras to subscribe: the named ones, or the one of image_topic (name '')."""
        return self.cameras or (CameraConfig("", self.image_topic, self.image_transport),)

    def heads_for(self, camera: str) -> Tuple[HeadConfig, ...]:
        """The enabled heads that run on ``camera``."""
        return tuple(h for h in self.enabled_heads if not camera or not h.cameras or camera in h.cameras)

    def check_heads(self) -> None:
        """At least one head on, each enabled head names a model, and at most one head drives."""
        enabled = self.enabled_heads
        if not enabled:
            names = [f"{h.name}.enabled" for h in self.heads]
            raise ConfigError(
                f"{' and '.join(names) or 'heads'}: no head is enabled; nothing to run; fix: enable a head "
                "(e.g. detector.enabled: true) or list heads with their models"
            )
        for head in enabled:
            if not head.model.model:
                raise ConfigError(
                    f"{head.name}.enabled is true but {head.name}.model is empty; fix: set {head.name}.model to "
                    f"a model file (.onnx or a TensorRT engine) or set {head.name}.enabled: false"
                )
        names = [c.name for c in self.cameras]
        for head in self.heads:
            unknown = [c for c in head.cameras if c not in names]
            if unknown:
                raise ConfigError(
                    f"{head.name}.cameras names {unknown}, which are not in cameras ({names or 'empty'}); fix: "
                    f"list cameras in cameras and camera.<name>.topic, or empty {head.name}.cameras"
                )
            if head.enabled and head.task == "steering" and len(self.cameras) > 1 and len(head.cameras) != 1:
                raise ConfigError(
                    f"{head.name} steers the car but would run on {list(head.cameras) or names}; commands from "
                    f"several cameras would fight; fix: set {head.name}.cameras to the one camera it drives from"
                )
        for camera in self.camera_inputs:
            if not self.heads_for(camera.name):
                raise ConfigError(f"no enabled head runs on camera {camera.name!r}; fix: list it in a head's "
                                  "cameras or remove it from cameras")
        drivers = [h.name for h in enabled if h.task == "steering"]
        if len(drivers) > 1:
            raise ConfigError(
                f"heads {drivers} are all steering heads; two pilots would fight over the car; fix: keep one "
                f"steering head enabled (set the others' <head>.enabled: false)"
            )

    def values(self) -> Dict[str, Any]:
        """This config as ``{dotted.name: value}`` (what the node would declare)."""
        out: Dict[str, Any] = self.table.defaults()
        for name in ("image_topic", "image_transport", "qos_reliability", "qos_depth", "frame_policy",
                     "diagnostics_period", "bad_frame_log_period", "params_file", *FRAME_GLOBALS):
            out[name] = getattr(self, name)
        for head in self.heads:
            out[f"{head.name}.enabled"] = head.enabled
            for key, value in head.values.items():
                out[f"{head.name}.{key}"] = value
        return out


def model_config(head: str, values: Mapping[str, Any], base: Optional[Path]) -> ModelConfig:
    """A head's ModelConfig from the full value mapping, paths resolved against ``base``."""
    return ModelConfig(
        model=resolve_param_path(values[f"{head}.model"], base, f"{head}.model"),
        spec=resolve_param_path(values[f"{head}.spec"], base, f"{head}.spec"),
        backend=values[f"{head}.backend"],
        providers=tuple(values[f"{head}.providers"]),
        plugin_libraries=tuple(
            resolve_param_path(p, base, f"{head}.plugin_libraries") for p in values[f"{head}.plugin_libraries"]
        ),
        cuda=values[f"{head}.cuda"],
        auto_build=values[f"{head}.auto_build"],
        gpu_preprocess=values[f"{head}.gpu_preprocess"],
        **{key: values[f"{head}.{key}"] for key in ORT_DEFAULTS},
    )


__all__ = ["CameraConfig", "HeadConfig", "ModelConfig", "PerceptionConfig", "head_values", "model_config"]
