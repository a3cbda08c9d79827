"""The per-frame pipeline: decode -> preprocess -> backend -> parse -> (pilot safety).

``ModelPipeline`` runs one model; ``FrameProcessor`` decodes a frame once and runs the detector and/or the
pilot on it. The node and the replay tool both call ``FrameProcessor.process`` so that what is tuned on a bag
is exactly what runs on the car. Nothing here imports ROS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from trt_perception.backends.base import Backend, open_backend
from trt_perception.errors import BackendError, SpecError
from trt_perception.images import DecodedImage, ImageDecoder
from trt_perception.outputs import DetectionSettings, RawDetections, create_parser
from trt_perception.preprocess import Preprocessor
from trt_perception.results import Detections, DriveCommand, ModelOutput, SteeringPrediction
from trt_perception.spec import ModelSpec, check_input, check_output_names, load_spec

if TYPE_CHECKING:  # safety imports nothing heavy, but keep the pipeline's import graph one-way
    from trt_perception.safety import PilotSafety

PathLike = Union[str, Path]


class ModelPipeline:
    """One model: preprocess into a buffer allocated once, infer, parse into source-image results.

    The spec is checked against the backend's real inputs and outputs at construction, so a mismatch is a
    load-time error naming the tensor, not a wrong answer on the first frame.
    """

    def __init__(self, spec: ModelSpec, backend: Backend) -> None:
        self.spec = spec
        self.backend = backend
        input_tensor = check_input(spec, backend.inputs)
        check_output_names(spec, backend.outputs)
        self.parser = create_parser(spec)
        self.parser.check_outputs(backend.outputs)
        out = backend.input_buffer(spec.input.name)
        if out is not None and out.shape != spec.input.shape:
            out = out.reshape(spec.input.shape)  # implicit-batch engines drop the batch dim: same bytes
        self.preprocessor = Preprocessor(spec.input, dtype=np.dtype(input_tensor.dtype), out=out)
        self._feed = {spec.input.name: self.preprocessor.tensor}
        self.settings = DetectionSettings.from_spec(spec.detection)
        self._label_cache: Dict[int, str] = {}

    @classmethod
    def open(
        cls,
        model: PathLike,
        spec: Optional[PathLike] = None,
        backend: str = "auto",
        backend_options: Optional[Mapping[str, Any]] = None,
        spec_overrides: Optional[Mapping[str, Any]] = None,
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
            return cls(model_spec, runtime)
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
        """Run the model on one decoded frame; detections come back in source-image pixels."""
        t0 = perf_counter()
        _, transform = self.preprocessor(image)
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
        return facts

    def close(self) -> None:
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
