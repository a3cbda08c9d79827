"""The per-frame pipeline: decode -> preprocess -> backend -> parse -> (pilot safety).

``ModelPipeline`` runs one model; ``FrameProcessor`` decodes a frame once and runs the detector and/or the
pilot on it. The node and the replay tool both call ``FrameProcessor.process`` so that what is tuned on a bag
is exactly what runs on the car. Nothing here imports ROS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from trt_perception.backends.base import Backend, open_backend
from trt_perception.errors import BackendError, SpecError
from trt_perception.images import DecodedImage, ImageDecoder
from trt_perception.outputs import DetectionSettings, RawDetections, create_parser
from trt_perception.preprocess import Preprocessor
from trt_perception.results import Detections, DriveCommand, ModelOutput, SteeringPrediction
from trt_perception.spec import ModelSpec, check_input, check_output_names, load_spec

if TYPE_CHECKING:  # safety imports nothing heavy, but keep the pipeline's import graph one-way
    from trt_perception.gpu_preprocess import GpuPreprocessor
    from trt_perception.safety import PilotSafety

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
        self.settings = DetectionSettings.from_spec(spec.detection)
        self._label_cache: Dict[int, str] = {}

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

    def update_settings(
        self,
        score_threshold: Optional[float] = None,
        iou_threshold: Optional[float] = None,
        max_detections: Optional[int] = None,
        classes: Optional[Sequence[Union[int, str]]] = None,
    ) -> None:
        """Change detection thresholds between frames (node params, CLI flags)."""
        if score_threshold is not None:
            self.settings.score_threshold = float(score_threshold)
        if iou_threshold is not None:
            self.settings.iou_threshold = float(iou_threshold)
        if max_detections is not None:
            self.settings.max_detections = int(max_detections)
        if classes is not None:
            detection = self.spec.detection
            allow = type(detection)(labels=detection.labels, first_label_id=detection.first_label_id,
                                    classes=tuple(_class_item(c) for c in classes))
            self.settings.allowed_class_ids = allow.allowed_class_ids()

    def run(self, image: DecodedImage) -> ModelOutput:
        """Run the model on one decoded frame; detections come back in source-image pixels.

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
        parsed = self.parser.parse(outputs, self.settings)
        if isinstance(parsed, RawDetections):
            boxes = transform.boxes_to_source(parsed.boxes)
            result: Any = Detections(boxes, parsed.scores, parsed.class_ids, self._labels(parsed.class_ids))
        else:
            result = parsed
        t3 = perf_counter()
        return ModelOutput(result, {"preprocess": t1 - t0, "infer": t2 - t1, "postprocess": t3 - t2})

    def _labels(self, class_ids: np.ndarray) -> List[str]:
        cache = self._label_cache
        labels = []
        for class_id in class_ids.tolist():  # at most max_detections entries
            label = cache.get(class_id)
            if label is None:
                label = cache[class_id] = self.spec.detection.label_for(class_id)
            labels.append(label)
        return labels

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


def _class_item(value: Union[int, str]) -> Union[int, str]:
    """Allow-list entries from ROS string arrays: '3' means class id 3, 'cone' a label."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


@dataclass
class FrameResult:
    """Everything one frame produced, with per-stage timings in seconds."""

    image: DecodedImage
    detections: Optional[Detections] = None
    steering: Optional[SteeringPrediction] = None
    command: Optional[DriveCommand] = None
    timings: Dict[str, float] = field(default_factory=dict)


class FrameProcessor:
    """Decode a frame once, run the detector and/or the pilot on it, turn steering into a safe command."""

    def __init__(
        self,
        detector: Optional[ModelPipeline] = None,
        pilot: Optional[ModelPipeline] = None,
        safety: Optional[PilotSafety] = None,
    ) -> None:
        if detector is None and pilot is None:
            raise SpecError("nothing to run: enable the detector, the pilot, or both (detector.enabled/pilot.enabled)")
        if detector is not None and detector.task != "detection":
            raise SpecError(f"the detector model's spec says task {detector.task!r}; expected 'detection'")
        if pilot is not None and pilot.task != "steering":
            raise SpecError(f"the pilot model's spec says task {pilot.task!r}; expected 'steering'")
        self.detector = detector
        self.pilot = pilot
        self.safety = safety
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
        """Run the models on an already decoded frame (benchmarks and tools that read image files)."""
        start = perf_counter()
        result = FrameResult(image=image)
        for prefix, pipeline in (("detector", self.detector), ("pilot", self.pilot)):
            if pipeline is None:
                continue
            output = pipeline.run(image)
            for stage, seconds in output.timings.items():
                result.timings[f"{prefix}.{stage}"] = seconds
            if prefix == "detector":
                result.detections = output.result
            else:
                result.steering = output.result
                if self.safety is not None:
                    result.command = self.safety.command_from(output.result, now)
        result.timings["total"] = perf_counter() - start
        return result

    def pipelines(self) -> Iterable[ModelPipeline]:
        return [p for p in (self.detector, self.pilot) if p is not None]

    def close(self) -> None:
        for pipeline in self.pipelines():
            pipeline.close()
