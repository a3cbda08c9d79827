"""Node parameters: ONE table that the node declares, the params YAML is checked against, and replay reads.

Every parameter lives in ``PARAMS`` (name, default, type, description, range, read-only, dynamic). The node
turns each entry into a ROS ``ParameterDescriptor``; ``load_params_file`` reads the standard
``trt_perception: ros__parameters:`` YAML without ROS; ``PerceptionConfig.from_params`` validates a flat
``{dotted.name: value}`` mapping into dataclasses; ``validate_param_change`` is the node's on-set check.
So the car, the replay tool and the docs cannot disagree about a name, a default or a range.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from trt_perception.errors import ConfigError, TrtPerceptionError

if TYPE_CHECKING:  # the pipeline imports onnx/numpy machinery; config stays light
    from trt_perception.pipeline import FrameProcessor, ModelPipeline

NODE_NAME = "trt_perception"

# Parameter kinds, named as ROS names parameter types. STRING_LIST params are declared with dynamic typing
# in the node, because rclpy infers BYTE_ARRAY from an empty default list and would then refuse a YAML list.
BOOL = "bool"
INT = "integer"
DOUBLE = "double"
STRING = "string"
STRING_LIST = "string_array"

HEADS = ("detector", "pilot")
BACKENDS = ("auto", "onnxruntime", "tensorrt")
CUDA_LIBRARIES = ("auto", "pycuda", "cuda-python")
USE_SPEC = -1.0  # detector thresholds: "take the model spec's value"

# ROS-owned parameters a params file may carry for this node; accepted and ignored by our table.
ROS_PARAMS = ("use_sim_time", "start_type_description_service")
ROS_PARAM_PREFIXES = ("qos_overrides.",)


@dataclass(frozen=True)
class ParamDef:
    """One node parameter: what the node declares and the YAML/replay validation uses."""

    name: str
    default: Any
    type: str
    description: str
    range: Optional[Tuple[float, float]] = None  # inclusive, for integer/double
    choices: Tuple[str, ...] = ()
    read_only: bool = True  # can only be set at start (params file / launch args)
    dynamic: bool = False  # changeable at run time with `ros2 param set`
    special: Optional[float] = None  # a value outside ``range`` that is still allowed (USE_SPEC)

    def describe_range(self) -> str:
        if self.choices:
            return f"one of {list(self.choices)}"
        if self.range is not None:
            lo, hi = self.range
            text = f"in [{_num(lo)}, {_num(hi)}]"
            if self.special is not None:
                text = f"{_num(self.special)} (use the model spec's value) or a value " + text
            return text
        return {
            BOOL: "true or false",
            STRING: "a string",
            STRING_LIST: "a list of strings",
            INT: "an integer",
            DOUBLE: "a number",
        }[self.type]


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _dyn(name: str, default: Any, kind: str, description: str, **kw: Any) -> ParamDef:
    """A parameter changeable at run time."""
    return ParamDef(name, default, kind, description, read_only=False, dynamic=True, **kw)


def _model_params(head: str, what: str) -> List[ParamDef]:
    return [
        ParamDef(
            f"{head}.model",
            "",
            STRING,
            f"{what} model file (.onnx, .engine/.plan/.trt/.bin): absolute, relative to the params file, "
            "or pkg://trt_perception/<path> for files shipped in the Python package",
        ),
        ParamDef(
            f"{head}.spec",
            "",
            STRING,
            "model spec YAML; empty = the spec beside the model (model.engine.yaml, then model.yaml)",
        ),
        ParamDef(
            f"{head}.backend",
            "auto",
            STRING,
            "inference runtime; auto = by file suffix (.onnx -> onnxruntime, engines -> tensorrt)",
            choices=BACKENDS,
        ),
        ParamDef(
            f"{head}.providers",
            [],
            STRING_LIST,
            "ONNX Runtime execution providers in order, e.g. [TensorrtExecutionProvider, "
            "CUDAExecutionProvider, CPUExecutionProvider]; empty = CPU. A missing provider is an error",
        ),
        ParamDef(
            f"{head}.plugin_libraries",
            [],
            STRING_LIST,
            "TensorRT plugin .so files loaded before the engine (custom plugins, FlattenConcat)",
        ),
        ParamDef(
            f"{head}.cuda",
            "auto",
            STRING,
            "CUDA binding the TensorRT backend uses; auto = whichever is installed",
            choices=CUDA_LIBRARIES,
        ),
        ParamDef(
            f"{head}.auto_build",
            False,
            BOOL,
            "build (or rebuild) the TensorRT engine from the ONNX beside it when it is missing or was built "
            "for another TensorRT/GPU (minutes on a Nano)",
        ),
        ParamDef(
            f"{head}.gpu_preprocess",
            False,
            BOOL,
            "TensorRT only: resize/normalize on the GPU straight into the engine input (CUDA kernel; needs "
            "cuda-python or pycuda)",
        ),
    ]


PARAMS: Tuple[ParamDef, ...] = (
    # ---------------------------------------------------------------------------------------------- input
    ParamDef(
        "image_topic",
        "/camera/image_raw",
        STRING,
        "camera topic; for compressed transport the CompressedImage topic itself (…/image_raw/compressed)",
    ),
    ParamDef(
        "image_transport",
        "raw",
        STRING,
        "raw = sensor_msgs/Image, compressed = sensor_msgs/CompressedImage (jpeg/png)",
        choices=("raw", "compressed"),
    ),
    ParamDef(
        "qos_reliability",
        "best_effort",
        STRING,
        "camera subscription reliability; best_effort (REP 2003 sensor data) connects to reliable and "
        "best-effort cameras alike, reliable connects to reliable cameras only",
        choices=("best_effort", "reliable"),
    ),
    ParamDef("qos_depth", 1, INT, "camera subscription queue depth (keep last N)", range=(1, 100)),
    ParamDef(
        "frame_policy",
        "latest",
        STRING,
        "latest = a worker thread runs the models on the newest frame, a newer frame replaces a waiting one "
        "(bounded latency, drops counted); inline = run in the subscription callback (no extra thread)",
        choices=("latest", "inline"),
    ),
    ParamDef(
        "diagnostics_period", 1.0, DOUBLE, "seconds between /diagnostics reports; 0 = off", range=(0.0, 60.0)
    ),
    ParamDef(
        "bad_frame_log_period",
        5.0,
        DOUBLE,
        "at most one log line per this many seconds about undecodable frames (all are counted)",
        range=(0.0, 3600.0),
    ),
    ParamDef(
        "params_file",
        "",
        STRING,
        "the params YAML this node was started with (car.launch.py sets it); relative model paths resolve "
        "against its folder",
    ),
    # ------------------------------------------------------------------------------------------- detector
    ParamDef("detector.enabled", True, BOOL, "run the detector head and publish detections"),
    *_model_params("detector", "detector"),
    _dyn(
        "detector.score_threshold",
        USE_SPEC,
        DOUBLE,
        "minimum detection score; -1 = the model spec's value",
        range=(0.0, 1.0),
        special=USE_SPEC,
    ),
    _dyn(
        "detector.iou_threshold",
        USE_SPEC,
        DOUBLE,
        "NMS IoU threshold (formats decoded on the CPU); -1 = the model spec's value",
        range=(0.0, 1.0),
        special=USE_SPEC,
    ),
    _dyn(
        "detector.max_detections",
        0,
        INT,
        "most detections per frame; 0 = the model spec's value",
        range=(0, 1000),
    ),
    _dyn(
        "detector.classes",
        [],
        STRING_LIST,
        "class allow-list by label ('cone') or id ('3'); empty = the spec's allow-list (or all classes)",
    ),
    _dyn(
        "detector.class_id_mode",
        "label",
        STRING,
        "what results[].hypothesis.class_id carries: label = the label text, id = the numeric class id",
        choices=("label", "id"),
    ),
    _dyn(
        "detector.publish_overlay",
        True,
        BOOL,
        "publish detections/overlay (annotated image); drawn only while someone subscribes",
    ),
    # ---------------------------------------------------------------------------------------------- pilot
    ParamDef("pilot.enabled", False, BOOL, "run the steering head and publish drive commands"),
    *_model_params("pilot", "steering"),
    ParamDef(
        "pilot.output",
        "twist",
        STRING,
        "twist = geometry_msgs/Twist on cmd_vel; ackermann = ackermann_msgs/AckermannDriveStamped on drive",
        choices=("twist", "ackermann"),
    ),
    _dyn(
        "pilot.drive_enabled",
        False,
        BOOL,
        "send drive commands; turning it off publishes one stop (also: service ~/set_enabled)",
    ),
    _dyn(
        "pilot.steering_scale",
        1.0,
        DOUBLE,
        "Twist angular.z (rad/s) at full steering; steering +1 (right) gives angular.z = -scale (REP 103)",
        range=(0.0, 100.0),
    ),
    _dyn("pilot.throttle_scale", 1.0, DOUBLE, "Twist linear.x (m/s) at full throttle", range=(0.0, 100.0)),
    _dyn(
        "pilot.max_steering_angle",
        0.35,
        DOUBLE,
        "Ackermann steering_angle (rad) at full steering; steering +1 (right) gives -angle (REP 103)",
        range=(0.0, 1.6),
    ),
    _dyn("pilot.max_speed", 1.0, DOUBLE, "Ackermann speed (m/s) at full throttle", range=(0.0, 100.0)),
    _dyn(
        "pilot.max_steering",
        1.0,
        DOUBLE,
        "steering is clamped to [-max_steering, max_steering]",
        range=(0.0, 1.0),
    ),
    _dyn(
        "pilot.max_throttle",
        0.5,
        DOUBLE,
        "upper throttle limit (capped and constant modes)",
        range=(-1.0, 1.0),
    ),
    _dyn(
        "pilot.min_throttle",
        0.0,
        DOUBLE,
        "lower throttle limit (capped and constant modes); negative allows reverse",
        range=(-1.0, 1.0),
    ),
    _dyn(
        "pilot.throttle_mode",
        "capped",
        STRING,
        "capped = model throttle clamped to [min_throttle, max_throttle]; model = model throttle as is "
        "(only clamped to [-1, 1]); constant = constant_throttle (clamped to the limits)",
        choices=("model", "constant", "capped"),
    ),
    _dyn("pilot.constant_throttle", 0.2, DOUBLE, "throttle used in constant mode", range=(-1.0, 1.0)),
    _dyn(
        "pilot.steering_slew_rate",
        0.0,
        DOUBLE,
        "largest steering change per second (full range is 2.0); 0 = no limit",
        range=(0.0, 1000.0),
    ),
    _dyn(
        "pilot.smoothing",
        0.0,
        DOUBLE,
        "steering EMA weight of the previous value (0 = off, 0.9 = heavy smoothing)",
        range=(0.0, 0.99),
    ),
    _dyn(
        "pilot.watchdog_timeout",
        0.5,
        DOUBLE,
        "no processed frame for this many seconds (ROS clock) -> publish one stop; 0 = off",
        range=(0.0, 60.0),
    ),
    _dyn("pilot.invert_steering", False, BOOL, "flip the steering sign (a model trained mirrored)"),
)

PARAM_BY_NAME: Dict[str, ParamDef] = {p.name: p for p in PARAMS}


def param_defaults() -> Dict[str, Any]:
    """Every parameter's default, by dotted name (lists copied)."""
    return {p.name: list(p.default) if isinstance(p.default, list) else p.default for p in PARAMS}


def is_ros_param(name: str) -> bool:
    """Parameters ROS itself owns (use_sim_time, qos_overrides...), accepted in files and ignored here."""
    return name in ROS_PARAMS or name.startswith(ROS_PARAM_PREFIXES)


# ------------------------------------------------------------------------------------------ value checks


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, list(PARAM_BY_NAME), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "see config/car.yaml for all"
    return f"parameter {name!r} is unknown to trt_perception; {hint}"


def check_value(param: ParamDef, value: Any, strict_double: bool = False) -> Tuple[Any, Optional[str]]:
    """Normalize ``value`` for ``param``; returns (value, None) or (value, reason it is refused).

    ``strict_double`` refuses integers for double params, as ROS does when it loads a params file
    (``1`` instead of ``1.0`` is the classic YAML mistake).
    """
    expected = param.describe_range()
    if param.type == BOOL:
        if not isinstance(value, bool):
            return value, f"{param.name} is {value!r}; expected true or false"
        return value, None
    if param.type == INT:
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"{param.name} is {value!r}; expected an integer {expected}"
    elif param.type == DOUBLE:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"{param.name} is {value!r}; expected a number {expected}"
        if strict_double and isinstance(value, int):
            return value, (
                f"{param.name} is {value!r} (an integer); ROS refuses integers for double parameters; "
                f"fix: write {float(value)!r}"
            )
        value = float(value)
        if not math.isfinite(value):
            return value, f"{param.name} is {value!r}; expected a finite number {expected}"
    elif param.type == STRING:
        if not isinstance(value, str):
            return value, f"{param.name} is {value!r}; expected a string ({expected})"
        if param.choices and value not in param.choices:
            return value, f"{param.name} is {value!r}; expected {expected}"
        return value, None
    elif param.type == STRING_LIST:
        allow_ints = param.name == "detector.classes"
        if not isinstance(value, (str, bytes, list, tuple)) and hasattr(value, "__iter__"):
            value = list(value)  # rclpy hands integer arrays over as array.array
        if isinstance(value, (list, tuple)) and all(
            isinstance(v, str) or (allow_ints and isinstance(v, int) and not isinstance(v, bool))
            for v in value
        ):
            return [v if isinstance(v, str) else str(v) for v in value], None
        what = "a list of labels or class ids" if allow_ints else "a list of strings"
        return value, f"{param.name} is {value!r}; expected {what}"
    if param.range is not None:
        lo, hi = param.range
        ok = lo <= value <= hi or (param.special is not None and value == param.special)
        if not ok:
            return value, f"{param.name} is {_num(value)}; expected {expected}"
    return value, None


def _cross_check(values: Mapping[str, Any]) -> Optional[str]:
    """Rules between parameters (a pair that is fine alone can be wrong together)."""
    lo, hi = values.get("pilot.min_throttle"), values.get("pilot.max_throttle")
    if lo is not None and hi is not None and lo > hi:
        return (
            f"pilot.min_throttle ({_num(lo)}) is above pilot.max_throttle ({_num(hi)}); "
            "expected min_throttle <= max_throttle"
        )
    return None


def validate_param_change(
    name: str, value: Any, current: Optional[Mapping[str, Any]] = None
) -> Optional[str]:
    """Why a run-time change of ``name`` to ``value`` is refused, or None when it is fine.

    ``current`` holds the node's other parameter values, for rules between parameters.
    """
    param = PARAM_BY_NAME.get(name)
    if param is None:
        return _unknown(name)
    if not param.dynamic:
        return (
            f"{name} cannot change while the node runs; set it in the params file (or a launch argument) "
            "and restart the node"
        )
    value, reason = check_value(param, value)
    if reason:
        return reason
    if current is not None:
        merged = dict(current)
        merged[name] = value
        return _cross_check(merged)
    return None


# ---------------------------------------------------------------------------------------------- the file


def _flatten(mapping: Mapping[str, Any], prefix: str, out: Dict[str, Any]) -> None:
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(value, name + ".", out)
        else:
            out[name] = value


def _node_sections(data: Mapping[str, Any], node_name: str) -> List[Tuple[str, Mapping[str, Any]]]:
    """The ``ros__parameters`` blocks that apply to ``node_name``: ``/**`` first, then the node's own."""
    sections = []
    wildcard_keys = ("/**", "**")
    for key, block in data.items():
        key_text = str(key)
        stripped = key_text.strip("/")
        is_wildcard = key_text in wildcard_keys
        is_own = stripped == node_name or stripped.endswith("/" + node_name) or stripped == "**/" + node_name
        if not (is_wildcard or is_own):
            continue
        if not isinstance(block, Mapping) or "ros__parameters" not in block:
            raise ConfigError(
                f"params file section {key_text!r} has no 'ros__parameters:' block; expected "
                f"'{node_name}:\\n  ros__parameters:\\n    <name>: <value>'"
            )
        params = block["ros__parameters"]
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise ConfigError(
                f"params file section {key_text}.ros__parameters is {params!r}; expected a mapping"
            )
        sections.append((key_text, params))
    sections.sort(key=lambda item: 0 if item[0] in wildcard_keys else 1)
    return sections


def load_params_file(
    path: Union[str, Path], node_name: str = NODE_NAME, strict: bool = True
) -> Dict[str, Any]:
    """Read a ROS 2 params YAML and return this node's parameters as ``{dotted.name: value}``.

    Accepts ``<node_name>: ros__parameters:`` (with or without a leading slash or namespace) and ``/**:``;
    nested mappings become dotted names (``detector: {score_threshold: 0.4}`` ->
    ``detector.score_threshold``).
    Unknown names are refused with close matches (a typo in ``pilot.max_throttle`` must not pass silently),
    and values are checked as the node checks them. ``params_file`` is set to the file's absolute path, so
    relative model paths resolve against its folder. ROS-owned parameters (use_sim_time...) are dropped.
    """
    file_path = Path(os.path.expanduser(str(path)))
    if not file_path.is_file():
        raise ConfigError(f"params file {file_path} does not exist; fix: pass the path of a params YAML")
    try:
        data = yaml.safe_load(file_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file {file_path} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"params file {file_path} holds {type(data).__name__}; "
            f"expected '{node_name}: ros__parameters: ...'"
        )
    sections = _node_sections(data, node_name)
    if not sections:
        raise ConfigError(
            f"params file {file_path} has no section for node {node_name!r} "
            f"(sections: {sorted(map(str, data))}); fix: put the parameters under "
            f"'{node_name}:\\n  ros__parameters:' or '/**:\\n  ros__parameters:'"
        )
    flat: Dict[str, Any] = {}
    for _, params in sections:
        _flatten(params, "", flat)
    result: Dict[str, Any] = {}
    for name, value in flat.items():
        if is_ros_param(name):
            continue
        param = PARAM_BY_NAME.get(name)
        if param is None:
            if strict:
                raise ConfigError(f"{_unknown(name)} (in {file_path})")
            continue
        value, reason = check_value(param, value, strict_double=True)
        if reason:
            raise ConfigError(f"{reason} (in {file_path})")
        result[name] = value
    result["params_file"] = str(file_path.resolve())
    return result


# ------------------------------------------------------------------------------------------- dataclasses


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


@dataclass(frozen=True)
class DetectorConfig:
    enabled: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    score_threshold: Optional[float] = None  # None = the spec's value
    iou_threshold: Optional[float] = None
    max_detections: Optional[int] = None
    classes: Optional[Tuple[str, ...]] = None  # None = the spec's allow-list
    class_id_mode: str = "label"
    publish_overlay: bool = True

    def settings_update(self) -> Dict[str, Any]:
        """Keyword arguments for ``ModelPipeline.update_settings`` (only what overrides the spec)."""
        update: Dict[str, Any] = {}
        if self.score_threshold is not None:
            update["score_threshold"] = self.score_threshold
        if self.iou_threshold is not None:
            update["iou_threshold"] = self.iou_threshold
        if self.max_detections is not None:
            update["max_detections"] = self.max_detections
        if self.classes is not None:
            update["classes"] = list(self.classes)
        return update


@dataclass(frozen=True)
class SafetyConfig:
    """Limits and filters between the steering model and the wheels (see safety.PilotSafety)."""

    max_steering: float = 1.0
    max_throttle: float = 0.5
    min_throttle: float = 0.0
    throttle_mode: str = "capped"
    constant_throttle: float = 0.2
    steering_slew_rate: float = 0.0
    smoothing: float = 0.0
    watchdog_timeout: float = 0.5
    invert_steering: bool = False


@dataclass(frozen=True)
class PilotConfig:
    enabled: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    output: str = "twist"
    steering_scale: float = 1.0
    throttle_scale: float = 1.0
    max_steering_angle: float = 0.35
    max_speed: float = 1.0
    drive_enabled: bool = False
    safety: SafetyConfig = field(default_factory=SafetyConfig)


SAFETY_FIELDS = tuple(SafetyConfig.__dataclass_fields__)
PILOT_FIELDS = (
    "output",
    "steering_scale",
    "throttle_scale",
    "max_steering_angle",
    "max_speed",
    "drive_enabled",
)
MODEL_FIELDS = tuple(ModelConfig.__dataclass_fields__)


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
    params_file: str = ""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    pilot: PilotConfig = field(default_factory=PilotConfig)

    @classmethod
    def from_params(
        cls, flat: Mapping[str, Any], base_dir: Optional[Union[str, Path]] = None
    ) -> PerceptionConfig:
        """Validate ``{dotted.name: value}`` (missing names take defaults) into a config.

        Each refusal is a ConfigError naming the parameter, the value, the allowed range and the fix.
        Model paths are resolved: ``pkg://`` URLs, then relative paths against ``base_dir`` or, when not
        given, the folder of ``params_file``.
        """
        values = param_defaults()
        for name, raw in flat.items():
            if is_ros_param(name):
                continue
            param = PARAM_BY_NAME.get(name)
            if param is None:
                raise ConfigError(_unknown(name))
            value, reason = check_value(param, raw)
            if reason:
                raise ConfigError(f"{reason}; fix: correct it in the params file or with `ros2 param set`")
            values[name] = value
        reason = _cross_check(values)
        if reason:
            raise ConfigError(reason)
        if base_dir is None and values["params_file"]:
            base_dir = Path(values["params_file"]).parent
        base = Path(base_dir) if base_dir is not None else None

        def model_config(head: str) -> ModelConfig:
            return ModelConfig(
                model=_resolve(values[f"{head}.model"], base, f"{head}.model"),
                spec=_resolve(values[f"{head}.spec"], base, f"{head}.spec"),
                backend=values[f"{head}.backend"],
                providers=tuple(values[f"{head}.providers"]),
                plugin_libraries=tuple(
                    _resolve(p, base, f"{head}.plugin_libraries") for p in values[f"{head}.plugin_libraries"]
                ),
                cuda=values[f"{head}.cuda"],
                auto_build=values[f"{head}.auto_build"],
                gpu_preprocess=values[f"{head}.gpu_preprocess"],
            )

        detector = DetectorConfig(
            enabled=values["detector.enabled"],
            model=model_config("detector"),
            **detector_overrides(values),
            class_id_mode=values["detector.class_id_mode"],
            publish_overlay=values["detector.publish_overlay"],
        )
        pilot = PilotConfig(
            enabled=values["pilot.enabled"],
            model=model_config("pilot"),
            safety=safety_config(values),
            **{name: values[f"pilot.{name}"] for name in PILOT_FIELDS},
        )
        config = cls(
            image_topic=values["image_topic"],
            image_transport=values["image_transport"],
            qos_reliability=values["qos_reliability"],
            qos_depth=values["qos_depth"],
            frame_policy=values["frame_policy"],
            diagnostics_period=values["diagnostics_period"],
            bad_frame_log_period=values["bad_frame_log_period"],
            params_file=values["params_file"],
            detector=detector,
            pilot=pilot,
        )
        config.check_heads()
        return config

    def check_heads(self) -> None:
        """At least one head on, and each enabled head names a model."""
        if not self.detector.enabled and not self.pilot.enabled:
            raise ConfigError(
                "detector.enabled and pilot.enabled are both false; nothing to run; "
                "fix: enable the detector, the pilot, or both"
            )
        for head, enabled, model in (
            ("detector", self.detector.enabled, self.detector.model),
            ("pilot", self.pilot.enabled, self.pilot.model),
        ):
            if enabled and not model.model:
                raise ConfigError(
                    f"{head}.enabled is true but {head}.model is empty; fix: set {head}.model to a model "
                    f"file (.onnx or a TensorRT engine) or set {head}.enabled: false"
                )

    @property
    def topics(self) -> Dict[str, str]:
        """Output topic names (relative, so the node's namespace and remapping apply)."""
        topics = {}
        if self.detector.enabled:
            topics["detections"] = "detections"
            topics["overlay"] = "detections/overlay"
        if self.pilot.enabled:
            topics["command"] = "cmd_vel" if self.pilot.output == "twist" else "drive"
        return topics


def detector_overrides(values: Mapping[str, Any]) -> Dict[str, Any]:
    """Detector threshold params -> DetectorConfig fields; sentinels (-1, 0, []) mean 'the spec decides'."""
    score = values["detector.score_threshold"]
    iou = values["detector.iou_threshold"]
    max_det = values["detector.max_detections"]
    classes = values["detector.classes"]
    return {
        "score_threshold": None if score == USE_SPEC else float(score),
        "iou_threshold": None if iou == USE_SPEC else float(iou),
        "max_detections": None if max_det == 0 else int(max_det),
        "classes": tuple(classes) if classes else None,
    }


def safety_config(values: Mapping[str, Any]) -> SafetyConfig:
    """The SafetyConfig in ``values`` (full dotted-name mapping)."""
    return SafetyConfig(**{name: values[f"pilot.{name}"] for name in SAFETY_FIELDS})


# ------------------------------------------------------------------------------------------------- paths

PKG_SCHEME = "pkg://"
PACKAGE_SCHEME = "package://"


def _resolve(value: str, base: Optional[Path], param: str) -> str:
    if not value:
        return ""
    return str(resolve_path(value, base, param))


def resolve_path(value: str, base: Optional[Union[str, Path]] = None, param: str = "path") -> Path:
    """A model/spec/plugin path from params.

    ``pkg://<python package>/<path>`` -> a file inside an installed Python package (the shipped demo models:
    ``pkg://trt_perception/data/demo/steering.onnx``); ``package://<ros package>/<path>`` -> the package's ROS
    share folder (needs ament_index_python); ``~`` is expanded; a relative path is taken against ``base``.
    """
    text = str(value)
    for scheme in (PKG_SCHEME, PACKAGE_SCHEME):
        if text.startswith(scheme):
            package, _, rest = text[len(scheme) :].partition("/")
            if not package or not rest:
                raise ConfigError(
                    f"{param} is {text!r}; expected {scheme}<package>/<path inside it>, "
                    f"e.g. {PKG_SCHEME}trt_perception/data/demo/detector.onnx"
                )
            root = (
                _python_package_dir(package, param, text)
                if scheme == PKG_SCHEME
                else _share_dir(package, param, text)
            )
            return root / rest
    path = Path(os.path.expanduser(text))
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


def _python_package_dir(package: str, param: str, text: str) -> Path:
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    locations = list(found.submodule_search_locations or []) if found is not None else []
    if not locations:
        raise ConfigError(
            f"{param} is {text!r} but Python package {package!r} is not importable here; "
            "fix: install it or use a file path"
        )
    return Path(locations[0])


def _share_dir(package: str, param: str, text: str) -> Path:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        raise ConfigError(
            f"{param} is {text!r} but package:// needs ROS (ament_index_python); fix: source ROS, or use "
            "pkg://<python package>/<path> or a file path"
        ) from None
    try:
        return Path(get_package_share_directory(package))
    except PackageNotFoundError:
        raise ConfigError(
            f"{param} is {text!r} but ROS package {package!r} is not installed or not sourced; "
            "fix: build and source the workspace that has it"
        ) from None


# -------------------------------------------------------------------------------------------- pipelines


def backend_options(head: str, model: ModelConfig) -> Dict[str, Any]:
    """Constructor options for the head's backend: only those set away from their defaults.

    A set option the chosen backend does not take (providers on a TensorRT engine) is refused, naming the
    parameter, rather than silently ignored.
    """
    from trt_perception.backends.base import backend_class, backend_for

    name = backend_for(model.model, model.backend)
    wanted: Dict[str, Tuple[str, Any]] = {}
    if model.providers:
        wanted["providers"] = (f"{head}.providers", list(model.providers))
    if model.plugin_libraries:
        wanted["plugin_libraries"] = (f"{head}.plugin_libraries", list(model.plugin_libraries))
    if model.cuda != "auto":
        wanted["cuda"] = (f"{head}.cuda", model.cuda)
    if model.auto_build and name == "tensorrt":
        wanted["auto_rebuild"] = (f"{head}.auto_build", True)
    if not wanted:
        return {}
    accepted = _constructor_params(backend_class(name))
    options = {}
    for key, (param, value) in wanted.items():
        if accepted is not None and key not in accepted:
            raise ConfigError(
                f"{param} is set to {value!r} but the {name} backend takes no {key!r} option; "
                f"fix: remove {param} or choose a backend that uses it ({head}.backend)"
            )
        options[key] = value
    return options


def _constructor_params(cls: type) -> Optional[frozenset]:
    import inspect

    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return None
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    return frozenset(signature.parameters)


def open_head(head: str, model: ModelConfig) -> ModelPipeline:
    """Open one head's pipeline; a failure names the head's parameters and the fix."""
    from trt_perception.pipeline import ModelPipeline

    path = Path(model.model)
    if not path.is_file() and model.auto_build:
        build_missing_engine(head, path)
    if not path.is_file():
        raise ConfigError(
            f"{head}.model is {model.model!r} but that file does not exist; fix: set {head}.model to an "
            "existing .onnx/.engine file (absolute, relative to the params file, or pkg://trt_perception/...)"
        )
    if model.spec and not Path(model.spec).is_file():
        raise ConfigError(
            f"{head}.spec is {model.spec!r} but that file does not exist; fix: set {head}.spec to the "
            "model's spec YAML, or leave it empty to use the spec beside the model"
        )
    options = backend_options(head, model)
    if model.gpu_preprocess:
        from trt_perception.backends.base import backend_for

        runtime = backend_for(model.model, model.backend)
        if runtime != "tensorrt":
            raise ConfigError(
                f"{head}.gpu_preprocess is true but {head}.model {model.model} runs on {runtime}; "
                f"gpu_preprocess needs the TensorRT backend; fix: point {head}.model at a TensorRT engine "
                f"(trt-perception build) or set {head}.gpu_preprocess: false"
            )
    try:
        return ModelPipeline.open(
            model.model,
            spec=model.spec or None,
            backend=model.backend,
            backend_options=options,
            gpu_preprocess=model.gpu_preprocess,
        )
    except TrtPerceptionError as exc:
        raise type(exc)(f"{head}.model {model.model}: {exc}") from exc


ENGINE_SUFFIXES = (".engine", ".plan", ".trt", ".bin")


def build_missing_engine(head: str, engine: Path) -> None:
    """``<head>.auto_build``: build a missing engine from the ONNX beside it (same name, .onnx) in FP16."""
    source = engine.with_suffix(".onnx")
    if engine.suffix.lower() not in ENGINE_SUFFIXES or not source.is_file():
        raise ConfigError(
            f"{head}.model {engine} does not exist and {head}.auto_build has nothing to build it from "
            f"(expected {source}); fix: put the ONNX there or build the engine: "
            f"trt-perception build {source} (README 'Building engines')"
        )
    import logging

    from trt_perception.tools.build import build_engine

    logging.getLogger("trt_perception").warning(
        "%s.auto_build: %s is missing; building it from %s (minutes on a Jetson)", head, engine, source
    )
    build_engine(str(source), str(engine), precision="fp16")


def create_frame_processor(config: PerceptionConfig, clock: Optional[Any] = None) -> FrameProcessor:
    """Open the enabled heads, apply the detector overrides, and attach the pilot's safety logic."""
    from trt_perception.pipeline import FrameProcessor
    from trt_perception.safety import PilotSafety

    config.check_heads()
    opened: List[ModelPipeline] = []
    try:
        detector = pilot = None
        if config.detector.enabled:
            detector = open_head("detector", config.detector.model)
            opened.append(detector)
            if detector.task != "detection":
                raise ConfigError(
                    f"detector.model {config.detector.model.model} is a {detector.task} model (its spec says "
                    f"task: {detector.task}); fix: point detector.model at a detection model"
                )
            apply_detector_settings(detector, config.detector)
        safety = None
        if config.pilot.enabled:
            pilot = open_head("pilot", config.pilot.model)
            opened.append(pilot)
            if pilot.task != "steering":
                raise ConfigError(
                    f"pilot.model {config.pilot.model.model} is a {pilot.task} model (its spec says "
                    f"task: {pilot.task}); fix: point pilot.model at a steering model"
                )
            kwargs = {"clock": clock} if clock is not None else {}
            safety = PilotSafety(config.pilot.safety, enabled=config.pilot.drive_enabled, **kwargs)
        return FrameProcessor(detector, pilot, safety)
    except BaseException:
        for pipeline in opened:
            pipeline.close()
        raise


def apply_detector_settings(pipeline: ModelPipeline, detector: DetectorConfig, reset: bool = False) -> None:
    """Push threshold overrides into a detector pipeline; a bad class label names the param.

    ``reset`` also puts back the spec's value for every threshold left to the spec (a live change from
    0.3 back to -1 must restore the spec's threshold, not keep 0.3).
    """
    update = detector.settings_update()
    if reset:
        spec = pipeline.spec.detection
        update.setdefault("score_threshold", spec.score_threshold)
        update.setdefault("iou_threshold", spec.iou_threshold)
        update.setdefault("max_detections", spec.max_detections)
        update.setdefault("classes", list(spec.classes))
    try:
        pipeline.update_settings(**update)
    except TrtPerceptionError as exc:
        raise ConfigError(f"detector.classes: {exc}") from exc


def check_classes(pipeline: ModelPipeline, classes: Sequence[str]) -> Optional[str]:
    """Why an allow-list does not fit the detector's labels (for the live on-set check), or None."""
    from trt_perception.spec import DetectionSpec

    spec = pipeline.spec.detection
    items = tuple(int(c) if str(c).strip().lstrip("-").isdigit() else c for c in classes)
    try:
        DetectionSpec(
            labels=spec.labels, first_label_id=spec.first_label_id, classes=items
        ).allowed_class_ids()
    except TrtPerceptionError as exc:
        return f"detector.classes: {exc}"
    return None


def describe_params(params: Iterable[ParamDef] = PARAMS) -> List[Dict[str, str]]:
    """Rows for docs (README's param table): name, default, type, range, changeable, meaning."""
    rows = []
    for p in params:
        default = p.default if not isinstance(p.default, str) else repr(p.default)
        rows.append(
            {
                "name": p.name,
                "default": str(default).replace("True", "true").replace("False", "false"),
                "type": p.type,
                "range": p.describe_range() if (p.range or p.choices) else "",
                "changeable": "live" if p.dynamic else "at start",
                "description": p.description,
            }
        )
    return rows


def format_param_table(params: Sequence[ParamDef] = PARAMS) -> str:
    """The param table as Markdown (README 'Running on the car')."""
    lines = ["| parameter | default | type | allowed | set | meaning |", "|---|---|---|---|---|---|"]
    for row in describe_params(params):
        lines.append(
            f"| `{row['name']}` | `{row['default']}` | {row['type']} | {row['range']} | {row['changeable']} "
            f"| {row['description']} |"
        )
    return "\n".join(lines)
