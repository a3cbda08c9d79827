"""The per-frame pipeline: decode once -> for each head: preprocess -> backend -> parse -> task.

``ModelPipeline`` runs one model up to its parser's raw result; a head (heads.py) adds its task;
``FrameProcessor`` decodes a frame once and runs every head on it. The node and the replay tool both call
``FrameProcessor.process`` so that what is tuned on a bag is exactly what runs on the car. Nothing here
imports ROS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception.backends.base import Backend, open_backend
from trt_perception.errors import BackendError, SpecError
from trt_perception.images import DecodedImage, ImageDecoder
from trt_perception.outputs import create_parser
from trt_perception.preprocess import ImageTransform, Preprocessor
from trt_perception.results import Detections, DriveCommand, SteeringPrediction
from trt_perception.spec import ModelSpec, check_input, check_output_names, load_spec

if TYPE_CHECKING:  # heads.py builds on this module; the pipeline never imports heads, node or tools
    from trt_perception.gpu_preprocess import GpuPreprocessor
    from trt_perception.heads import Head
    from trt_perception.tasks.base import HeadOutput

PathLike = Union[str, Path]


class ModelPipeline:
    """One model: preprocess into a buffer allocated once, infer, parse into source-image results.

    The spec is checked against the backend's real inputs and outputs at construction, so a mismatch is a
    load-time error naming the tensor, not a wrong answer on the first frame.

    ``gpu_preprocess`` (TensorRT only): a ``GpuPreprocessor`` uploads the uint8 frame and writes the input
    tensor with a CUDA kernel straight into the engine's input device buffer, on the backend's stream, so
    the CPU never touches a float frame; ``preprocessor`` is then None and ``gpu_preprocessor`` is set.
    """

    def __init__(self, spec: ModelSpec, backend: Backend, gpu_preprocess: bool = False) -> None:
        self.spec = spec
        self.backend = backend
        input_tensor = check_input(spec, backend.inputs)
        check_output_names(spec, backend.outputs)
        self.parser = create_parser(spec)
        self.parser.check_outputs(backend.outputs)
        self.preprocessor: Optional[Preprocessor] = None
        self.gpu_preprocessor: Optional[GpuPreprocessor] = None
        self._on_device: Tuple[str, ...] = ()
        self._feed: Dict[str, np.ndarray] = {}
        if gpu_preprocess:
            self.gpu_preprocessor = self._open_gpu_preprocessor(np.dtype(input_tensor.dtype))
            self._on_device = (spec.input.name,)
        else:
            out = backend.input_buffer(spec.input.name)
            if out is not None and out.shape != spec.input.shape:
                out = out.reshape(spec.input.shape)  # implicit-batch engines drop the batch dim: same bytes
            self.preprocessor = Preprocessor(spec.input, dtype=np.dtype(input_tensor.dtype), out=out)
            self._feed = {spec.input.name: self.preprocessor.tensor}

    def _open_gpu_preprocessor(self, dtype: np.dtype) -> GpuPreprocessor:
        """A GpuPreprocessor writing into the engine's input binding on the backend's own stream and CUDA."""
        device_input = getattr(self.backend, "device_input", None)
        if device_input is None:
            raise BackendError(
                f"gpu_preprocess needs the TensorRT backend; this model runs on {self.backend.name!r}; fix: "
                "run a TensorRT engine (.engine/.plan, backend tensorrt) or turn gpu_preprocess off"
            )
        from trt_perception.gpu_preprocess import GpuPreprocessor

        pointer, stream, cuda = device_input(self.spec.input.name)
        return GpuPreprocessor(self.spec.input, dtype=dtype, out=pointer, stream=stream, cuda=cuda)

    @classmethod
    def open(
        cls,
        model: PathLike,
        spec: Optional[PathLike] = None,
        backend: str = "auto",
        backend_options: Optional[Mapping[str, Any]] = None,
        spec_overrides: Optional[Mapping[str, Any]] = None,
        gpu_preprocess: bool = False,
    ) -> ModelPipeline:
        """Load a model file with its spec (found beside it unless given) on the chosen backend."""
        if not Path(model).is_file():
            raise BackendError(f"model file {model} does not exist; fix: check the model path (param or flag)")
        model_spec = load_spec(model, spec, overrides=spec_overrides)
        options = dict(backend_options or {})
        if Path(model).suffix.lower() != ".onnx" and model_spec.build and backend in ("auto", "tensorrt"):
            options.setdefault("build_metadata", dict(model_spec.build))
        runtime = open_backend(model, backend, **options)
        try:
            return cls(model_spec, runtime, gpu_preprocess=gpu_preprocess)
        except BaseException:
            runtime.close()
            raise

    @property
    def task(self) -> str:
        return self.spec.task

    def run(self, image: DecodedImage, settings: Any = None) -> RawOutput:
        """Run the model on one decoded frame; the parser's raw result comes back in MODEL-INPUT pixels with
        the transform that maps them to the source image (the head's task does that).

        With gpu_preprocess, "preprocess" times the upload and kernel being queued, and "infer" the GPU
        work of both (the kernel runs ahead of the engine on the same stream, one synchronize per frame).
        """
        t0 = perf_counter()
        gpu = self.gpu_preprocessor
        if gpu is not None:
            transform = gpu(image)
            t1 = perf_counter()
            outputs = self.backend.infer(self._feed, on_device=self._on_device)  # type: ignore[call-arg]
            gpu.stream_synchronized()  # infer waited for the shared stream: the next frame need not
        else:
            _, transform = self.preprocessor(image)  # type: ignore[misc]
            t1 = perf_counter()
            outputs = self.backend.infer(self._feed)
        t2 = perf_counter()
        parsed = self.parser.parse(outputs, settings)
        t3 = perf_counter()
        return RawOutput(parsed, transform, {"preprocess": t1 - t0, "infer": t2 - t1, "postprocess": t3 - t2})

    def describe(self) -> Dict[str, str]:
        facts = dict(self.backend.describe())
        facts.update({"task": self.spec.task, "format": self.spec.output.format, "spec": str(self.spec.source)})
        if self.gpu_preprocessor is not None:
            facts["preprocess"] = f"gpu ({getattr(self.gpu_preprocessor.launcher, 'name', 'cuda')})"
        return facts

    def close(self) -> None:
        """Free the GPU preprocessor's buffers first (they live in the backend's CUDA context), then the backend."""
        gpu, self.gpu_preprocessor = self.gpu_preprocessor, None
        try:
            if gpu is not None:
                gpu.close()
        finally:
            self.backend.close()


@dataclass
class RawOutput:
    """A model's parsed output for one frame (model-input pixels), the transform back to the source, timings."""

    parsed: Any
    transform: ImageTransform
    timings: Dict[str, float] = field(default_factory=dict)


@dataclass
class FrameResult:
    """Everything one frame produced: each head's output by head name, per-stage timings in seconds
    (``decode``, ``<head>.preprocess/infer/postprocess``, ``total``)."""

    image: DecodedImage
    outputs: Dict[str, HeadOutput] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)

    def first(self, task: str) -> Optional[HeadOutput]:
        """The output of the first head of ``task`` (for single-head callers: tests, benchmarks)."""
        for output in self.outputs.values():
            if output.task == task:
                return output
        return None

    @property
    def detections(self) -> Optional[Detections]:
        output = self.first("detection")
        return output.result if output is not None else None

    @property
    def steering(self) -> Optional[SteeringPrediction]:
        output = self.first("steering")
        return output.result if output is not None else None

    @property
    def command(self) -> Optional[DriveCommand]:
        output = self.first("steering")
        return output.command if output is not None else None


class FrameProcessor:
    """Decode a frame once and run every head on it, in order.

    Heads are ``heads.Head`` objects (a name, a task, a ModelPipeline); the node and the replay tool both
    call ``process`` so that what is tuned on a bag is exactly what runs on the car.
    """

    def __init__(self, heads: Sequence[Head]) -> None:
        if not heads:
            raise SpecError("nothing to run: no head is enabled; fix: enable a head (e.g. detector.enabled: true)")
        drivers = [h.name for h in heads if h.task.drives]
        if len(drivers) > 1:
            raise SpecError(f"heads {drivers} all drive; at most one steering head per node")
        self.heads: List[Head] = list(heads)
        self.drive_head: Optional[Head] = next((h for h in self.heads if h.task.drives), None)
        # Frames that need a conversion (YUV, Bayer, alpha) decode into a reused buffer: FrameResult.image
        # is valid until the next frame is processed.
        self.decode = ImageDecoder()

    def process(self, msg: Any, now: float) -> FrameResult:
        """One Image/CompressedImage message (rclpy or rosbags) -> results. Bad frames raise ImageError."""
        t0 = perf_counter()
        image = self.decode(msg)
        t1 = perf_counter()
        result = self.process_image(image, now)
        result.timings["decode"] = t1 - t0
        result.timings["total"] = perf_counter() - t0
        return result

    def process_image(self, image: DecodedImage, now: float) -> FrameResult:
        """Run the heads on an already decoded frame (benchmarks and tools that read image files)."""
        start = perf_counter()
        result = FrameResult(image=image)
        timings = result.timings
        for head in self.heads:
            output = head.run(image, now)
            result.outputs[head.name] = output
            for stage, seconds in output.timings.items():
                timings[f"{head.name}.{stage}"] = seconds
        timings["total"] = perf_counter() - start
        return result

    def head(self, name: str) -> Head:
        for head in self.heads:
            if head.name == name:
                return head
        raise KeyError(name)

    def close(self) -> None:
        for head in self.heads:
            head.close()
