"""The per-frame pipeline: decode once -> for each head: preprocess -> backend -> parse -> task.

``ModelPipeline`` runs one model up to its parser's raw result; a head (heads.py) adds its task;
``FrameProcessor`` decodes a frame once and runs every head on it. The node and the replay tool both call
``FrameProcessor.process`` so that what is tuned on a bag is exactly what runs on the car. Nothing here
imports ROS.

Besides the frame, a model may take (DonkeyCar pilots): a mask over the input (``input.mask``: pixels outside
the trained region set to 0, as its CROP/TRAPEZE transformations do), a sequence of the last N frames
(``input.sequence``: rnn and 3d pilots, kept in a ring allocated once) and inputs that are not images (spec
``inputs``: memory, IMU, behavior), whose arrays the head's task supplies each frame (``Task.model_inputs``).
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
from trt_perception.spec import InputSpec, ModelSpec, check_extra_inputs, check_input, check_output_names, load_spec

if TYPE_CHECKING:  # heads.py builds on this module; the pipeline never imports heads, node or tools
    from trt_perception.gpu_preprocess import GpuPreprocessor
    from trt_perception.heads import Head
    from trt_perception.tasks.base import HeadOutput, ModelInputs


class InputMask:
    """``input.mask``: set the input pixels outside the kept regions to the value a black (0) pixel gets, in the
    preprocessed tensor, as DonkeyCar's CROP/TRAPEZE transformations zero them in the uint8 image before
    ``x / 255`` (autorope/donkeycar@cde8bbe9 parts/cv.py:472-524 and 363-410: ``cv2.fillConvexPoly`` of the region,
    edges included, then ``np.multiply(image, mask)``). The mask is drawn once at model size, the same way."""

    def __init__(self, spec: InputSpec, tensor: np.ndarray) -> None:
        import cv2

        keep = np.ones((spec.height, spec.width), np.uint8)
        for polygon in spec.mask:
            region = np.zeros_like(keep)
            cv2.fillConvexPoly(region, np.array(polygon, dtype=np.int32), 1)
            keep &= region
        outside = keep == 0
        if spec.layout == "NCHW":
            self.where = outside[None, None, :, :]
            shape = (1, spec.channels, 1, 1)
        else:
            self.where = outside[None, :, :, None]
            shape = (1, 1, 1, spec.channels)
        offset = np.asarray(spec.offset, np.float64)[: spec.channels]
        values = np.zeros(spec.channels) if tensor.dtype == np.uint8 else offset  # 0 * scale + offset
        self.fill = values.astype(tensor.dtype).reshape(shape)
        self.tensor = tensor
        self.kept = int(keep.sum())

    def __call__(self) -> None:
        np.copyto(self.tensor, self.fill, where=self.where)


class FrameSequence:
    """The last N preprocessed frames as one ``[1, N, ...]`` tensor, oldest first, without moving N frames per
    frame: a ring of 2N slots where frame k goes to slots k mod N and k mod N + N, so slots
    ``k mod N + 1 .. k mod N + N`` always hold the last N in order and are a contiguous view (computed once).

    After a restart the first frame fills every slot: DonkeyCar's KerasLSTM / Keras3D_CNN append the first
    image until the sequence is full (autorope/donkeycar@cde8bbe9 parts/keras.py:675-679, 752-756), so the
    first frame already gives a command, from N copies of itself.
    """

    def __init__(self, length: int, frame: np.ndarray) -> None:
        self.length = length
        self.ring = np.empty((2 * length, *frame.shape[1:]), frame.dtype)
        self.views = [self.ring[s + 1 : s + 1 + length][None] for s in range(length)]
        self.slot = length - 1
        self.fresh = True

    def restart(self) -> None:
        self.fresh = True

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Add the newest frame (shape [1, ...]); returns the sequence view to feed."""
        if self.fresh:
            np.copyto(self.ring, frame)  # broadcast: every slot holds this frame
            self.slot = self.length - 1
            self.fresh = False
            return self.views[self.slot]
        slot = self.slot + 1
        if slot == self.length:
            slot = 0
        np.copyto(self.ring[slot], frame[0])
        np.copyto(self.ring[slot + self.length], frame[0])
        self.slot = slot
        return self.views[slot]

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
        self.extra_inputs = check_extra_inputs(spec, backend.inputs)  # name -> TensorSpec
        self._extra_shapes = {extra.name: (1, extra.size) for extra in spec.inputs}
        check_output_names(spec, backend.outputs)
        self.parser = create_parser(spec)
        self.parser.check_outputs(backend.outputs)
        self.preprocessor: Optional[Preprocessor] = None
        self.gpu_preprocessor: Optional[GpuPreprocessor] = None
        self.mask: Optional[InputMask] = None
        self.sequence: Optional[FrameSequence] = None
        self._epoch: Optional[int] = None
        self._on_device: Tuple[str, ...] = ()
        self._feed: Dict[str, np.ndarray] = {}
        if gpu_preprocess:
            if spec.input.sequence or spec.input.mask:
                what = "input.sequence (a frame sequence)" if spec.input.sequence else "input.mask"
                raise SpecError(
                    f"gpu_preprocess writes one frame straight into the engine input; this spec has {what}, which "
                    "the CPU preprocessing applies; fix: turn gpu_preprocess off for this head"
                )
            self.gpu_preprocessor = self._open_gpu_preprocessor(np.dtype(input_tensor.dtype))
            self._on_device = (spec.input.name,)
        else:
            out = None if spec.input.sequence else backend.input_buffer(spec.input.name)
            if out is not None and out.shape != spec.input.shape:
                out = out.reshape(spec.input.shape)  # implicit-batch engines drop the batch dim: same bytes
            self.preprocessor = Preprocessor(spec.input, dtype=np.dtype(input_tensor.dtype), out=out)
            tensor = self.preprocessor.tensor
            if spec.input.mask:
                self.mask = InputMask(spec.input, tensor)
            if spec.input.sequence:
                self.sequence = FrameSequence(spec.input.sequence, tensor)
            self._feed = {spec.input.name: tensor}

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

    def run(self, image: DecodedImage, settings: Any = None, inputs: Optional[ModelInputs] = None) -> RawOutput:
        """Run the model on one decoded frame; the parser's raw result comes back in MODEL-INPUT pixels with
        the transform that maps them to the source image (the head's task does that).

        ``inputs``: the head's task's ``ModelInputs`` (its arrays for the spec's ``inputs``; a new ``epoch``
        restarts a frame sequence). A model with such inputs refuses to run without them.

        With gpu_preprocess, "preprocess" times the upload and kernel being queued, and "infer" the GPU
        work of both (the kernel runs ahead of the engine on the same stream, one synchronize per frame).
        """
        t0 = perf_counter()
        if self.extra_inputs or inputs is not None:
            self._take_inputs(inputs)
        gpu = self.gpu_preprocessor
        if gpu is not None:
            transform = gpu(image)
            t1 = perf_counter()
            outputs = self.backend.infer(self._feed, on_device=self._on_device)  # type: ignore[call-arg]
            gpu.stream_synchronized()  # infer waited for the shared stream: the next frame need not
        else:
            tensor, transform = self.preprocessor(image)  # type: ignore[misc]
            if self.mask is not None:
                self.mask()
            if self.sequence is not None:
                self._feed[self.spec.input.name] = self.sequence.push(tensor)
            t1 = perf_counter()
            outputs = self.backend.infer(self._feed)
        t2 = perf_counter()
        parsed = self.parser.parse(outputs, settings)
        t3 = perf_counter()
        return RawOutput(parsed, transform, {"preprocess": t1 - t0, "infer": t2 - t1, "postprocess": t3 - t2})

    def _take_inputs(self, inputs: Optional[ModelInputs]) -> None:
        """Put the task's input arrays in the feed (same objects every frame: no copy) and follow its epoch."""
        if inputs is None:
            names = ", ".join(f"{e.name} ({e.source})" for e in self.spec.inputs)
            raise SpecError(
                f"model inputs {names} need values every frame and nothing supplied them; run the model as a "
                "head (heads.open_model / the node / replay), whose task feeds them from the spec's inputs"
            )
        arrays = inputs.arrays
        for name, shape in self._extra_shapes.items():
            array = arrays.get(name)
            if array is None or array.shape != shape:
                got = "nothing" if array is None else f"shape {array.shape}"
                raise SpecError(f"model input {name!r} needs a {shape} array each frame; the task supplied {got}")
            self._feed[name] = array
        if inputs.epoch != self._epoch:
            if self.sequence is not None and self._epoch is not None:
                self.sequence.restart()
            self._epoch = inputs.epoch

    def restart(self) -> None:
        """Start a frame sequence afresh (the next frame fills it)."""
        if self.sequence is not None:
            self.sequence.restart()

    def describe(self) -> Dict[str, str]:
        facts = dict(self.backend.describe())
        facts.update({"task": self.spec.task, "format": self.spec.output.format, "spec": str(self.spec.source)})
        if self.spec.inputs:
            facts["inputs"] = ", ".join(f"{e.name} ({e.source})" for e in self.spec.inputs)
        if self.sequence is not None:
            facts["sequence"] = f"{self.sequence.length} frames"
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
