"""Heads: a head is a name + a task + a model (spec, backend, parser). Assembling them from a config.

``open_heads(config)`` opens every enabled head of a ``PerceptionConfig`` (building a missing engine when
``<head>.auto_build`` says so), checks each model's task against the head's, and ``create_frame_processor``
puts them behind one decode. ``open_model`` opens a single model file as a head for tools and tests.
"""

from __future__ import annotations

from pathlib import Path
from time import perf_counter
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from trt_perception.config import HeadConfig, ModelConfig, PerceptionConfig
from trt_perception.errors import ConfigError, TrtPerceptionError
from trt_perception.images import DecodedImage
from trt_perception.params import ORT_DEFAULTS
from trt_perception.pipeline import FrameProcessor, ModelPipeline, RawOutput
from trt_perception.tasks import task_class
from trt_perception.tasks.base import HeadOutput, Task

PathLike = Union[str, Path]
Clock = Callable[[], float]


class Head:
    """One named head: its model pipeline and its task, run on a decoded frame."""

    def __init__(self, name: str, task: Task, pipeline: ModelPipeline, owns_pipeline: bool = True) -> None:
        self.name = name
        self.task = task
        self.pipeline = pipeline
        self.owns_pipeline = owns_pipeline  # False for a camera's copy sharing another head's model

    @property
    def spec(self) -> Any:
        return self.pipeline.spec

    def run(self, image: DecodedImage, now: float) -> HeadOutput:
        """Preprocess, infer, parse (ModelPipeline), then the task's finish; timings per stage."""
        return self.finish(self.pipeline.run(image, self.task.settings, self.task.model_inputs(now)), now)

    def finish(self, raw: RawOutput, now: float) -> HeadOutput:
        """The task's finish on the model's raw output (also for a frame of a batch: pipeline.run_batch)."""
        t0 = perf_counter()
        output = self.task.finish(raw.parsed, raw.transform, now)
        raw.timings["postprocess"] += perf_counter() - t0
        output.timings = raw.timings
        return output

    def describe(self) -> Dict[str, str]:
        return self.pipeline.describe()

    def for_camera(self, clock: Optional[Clock] = None) -> Head:
        """The same model with its own task state (tracks, memory) for another camera."""
        task = type(self.task)(self.name, self.pipeline.spec, self.task.values, clock=clock or self.task.clock)
        return Head(self.name, task, self.pipeline, owns_pipeline=False)

    def close(self) -> None:
        try:
            self.task.close()
        finally:
            if self.owns_pipeline:
                self.pipeline.close()


def open_model(
    model: PathLike,
    spec: Optional[PathLike] = None,
    backend: str = "auto",
    backend_options: Optional[Mapping[str, Any]] = None,
    spec_overrides: Optional[Mapping[str, Any]] = None,
    gpu_preprocess: bool = False,
    name: str = "",
    values: Optional[Mapping[str, Any]] = None,
    clock: Optional[Clock] = None,
) -> Head:
    """A model file as a head of the task its spec names (``infer``, ``inspect``, tests, benchmarks)."""
    pipeline = ModelPipeline.open(
        model,
        spec=spec,
        backend=backend,
        backend_options=backend_options,
        spec_overrides=spec_overrides,
        gpu_preprocess=gpu_preprocess,
    )
    try:
        return head_from_pipeline(name or pipeline.task, pipeline, values, clock)
    except BaseException:
        pipeline.close()
        raise


def head_from_pipeline(
    name: str, pipeline: ModelPipeline, values: Optional[Mapping[str, Any]] = None, clock: Optional[Clock] = None
) -> Head:
    """An open ModelPipeline as a head of the task its spec names, with ``values`` over the task's defaults."""
    cls = task_class(pipeline.task)
    return Head(name, cls(name, pipeline.spec, _task_values(cls, values or {}), clock=clock), pipeline)


def _task_values(cls: Any, values: Mapping[str, Any]) -> Dict[str, Any]:
    """A task's param defaults with ``values`` on top (unknown names refused)."""
    defaults = {p.name: list(p.default) if isinstance(p.default, list) else p.default for p in cls.PARAMS}
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ConfigError(f"{unknown} are not {cls.name} settings; expected some of {sorted(defaults)}")
    defaults.update(values)
    return defaults


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
    ort_options = {"ort_threads": "threads", "ort_inter_op_threads": "inter_op_threads",
                   "ort_spinning": "spinning", "ort_optimization": "optimization"}
    for param, option in ort_options.items():
        value = getattr(model, param)
        if name == "onnxruntime" or value != ORT_DEFAULTS[param]:  # ORT always gets the node's defaults
            wanted[option] = (f"{head}.{param}", value)
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


def open_heads(config: PerceptionConfig, clock: Optional[Clock] = None) -> List[Head]:
    """Open every enabled head; a model whose spec names another task than the head's is refused."""
    config.check_heads()
    opened: List[Head] = []
    try:
        for head_config in config.enabled_heads:
            opened.append(open_configured_head(head_config, clock))
        return opened
    except BaseException:
        for head in opened:
            head.close()
        raise


def open_configured_head(head: HeadConfig, clock: Optional[Clock] = None) -> Head:
    """One head of a config: its model (open_head), then its task with its params."""
    pipeline = open_head(head.name, head.model)
    try:
        if pipeline.task != head.task:
            raise ConfigError(
                f"{head.name}.model {head.model.model} is a {pipeline.task} model (its spec says task: "
                f"{pipeline.task}) but head {head.name!r} is a {head.task} head; fix: point {head.name}.model at "
                f"a {head.task} model" + ("" if head.name in ("detector", "pilot") else f" or set {head.name}.task")
            )
        task = task_class(head.task)(head.name, pipeline.spec, head.values, clock=clock)
        return Head(head.name, task, pipeline)
    except BaseException:
        pipeline.close()
        raise


def create_frame_processor(config: PerceptionConfig, clock: Optional[Clock] = None) -> FrameProcessor:
    """Open the enabled heads and put them behind one decode (gpu_decode, max_pixels, jpeg_reduce from the
    config's globals)."""
    heads = open_heads(config, clock)
    try:
        return FrameProcessor(heads, **config.frame_options())
    except BaseException:
        for head in heads:
            head.close()
        raise


def create_camera_processors(config: PerceptionConfig, clock: Optional[Clock] = None) -> Dict[str, FrameProcessor]:
    """One FrameProcessor per camera (key: camera name, '' for image_topic's). Each model is opened once and
    shared by the cameras its head runs on; each camera gets its own task state and its own decoder."""
    heads = {head.name: head for head in open_heads(config, clock)}
    used: Dict[str, bool] = {}
    processors: Dict[str, FrameProcessor] = {}
    try:
        for camera in config.camera_inputs:
            chosen = []
            for head_config in config.heads_for(camera.name):
                head = heads[head_config.name]
                chosen.append(head.for_camera(clock) if used.get(head.name) else head)
                used[head.name] = True
            processors[camera.name] = FrameProcessor(chosen, **config.frame_options())
        return processors
    except BaseException:
        for processor in processors.values():
            processor.close()
        for name, head in heads.items():
            if not used.get(name):
                head.close()
        raise


__all__ = [
    "Head",
    "backend_options",
    "build_missing_engine",
    "create_camera_processors",
    "create_frame_processor",
    "head_from_pipeline",
    "open_configured_head",
    "open_head",
    "open_heads",
    "open_model",
]
