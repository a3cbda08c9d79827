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

import copy
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np

from trt_perception.backends.base import Backend, open_backend
from trt_perception.errors import BackendError, ConfigError, SpecError
from trt_perception.images import MAX_PIXELS, DecodedImage
from trt_perception.mailbox import Handover
from trt_perception.onnx_file import MODEL_FILES, check_model_path
from trt_perception.outputs import create_parser
from trt_perception.preprocess import ImageTransform, Preprocessor
from trt_perception.results import Detections, DriveCommand, SteeringPrediction
from trt_perception.spec import InputSpec, ModelSpec, check_extra_inputs, check_input, check_output_names, load_spec

if TYPE_CHECKING:  # heads.py builds on this module; the pipeline never imports heads, node or tools
    from trt_perception.gpu_decode import FrameDecoder
    from trt_perception.gpu_preprocess import DeviceImage, GpuPreprocessor
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
MAX_BATCH = 16  # frames in one batch for a model with a dynamic batch dimension
Frame = Union[DecodedImage, "DeviceImage"]  # what a decoder gives: a host frame, or a GPU-decoded one


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
        first = input_tensor.shape[0] if len(input_tensor.shape) == len(spec.input.tensor_shape) else 1
        # a static batch > 1 (a model built for N frames): one frame fills row 0; other rows' outputs are ignored
        self.static_batch = int(first) if first is not None and int(first) > 1 else 1
        self._full_input: Optional[np.ndarray] = None  # the (static_batch, ...) input fed for one frame
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
        self._scaled: Dict[Any, Tuple[ImageTransform, ImageTransform]] = {}
        self._capacity: Optional[int] = None
        self._batches: Dict[int, Tuple[np.ndarray, List[Preprocessor]]] = {}
        self._spares: List[Preprocessor] = []  # infer_ahead's input tensors, one per concurrent caller
        # infer_ahead_batch's (batch tensor, a Preprocessor per row), by rows, one per concurrent caller
        self._spare_batches: Dict[int, List[Tuple[np.ndarray, List[Preprocessor]]]] = {}
        self._spares_lock = threading.Lock()
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
            dtype = np.dtype(input_tensor.dtype)
            out = None if spec.input.sequence else backend.input_buffer(spec.input.name)
            if self.static_batch > 1 and not spec.input.sequence:
                full = out if out is not None and out.shape[0] == self.static_batch else None
                if full is None:
                    full = np.zeros((self.static_batch, *spec.input.tensor_shape[1:]), dtype)
                full[1:] = 0  # rows no frame fills (an engine's pinned buffer starts uninitialised)
                self._full_input, out = full, full[:1]
            elif out is not None and out.shape != spec.input.shape:
                if out.ndim == len(spec.input.shape) and out.shape[1:] == spec.input.shape[1:]:
                    out = out[:1]  # a dynamic batch at its profile's opt batch: row 0 (the engine keeps the bytes)
                else:
                    out = out.reshape(spec.input.shape)  # implicit-batch engines drop the batch dim: same bytes
            self.preprocessor = Preprocessor(spec.input, dtype=dtype, out=out)
            tensor = self.preprocessor.tensor
            if spec.input.mask:
                self.mask = InputMask(spec.input, tensor)
            if spec.input.sequence:
                if self.static_batch > 1:
                    raise SpecError(
                        f"model input {spec.input.name!r} has a static batch of {self.static_batch} and the spec a "
                        f"frame sequence (input.sequence: {spec.input.sequence}); one sequence fills batch 1; fix: "
                        "export or build the model with batch 1 (or a dynamic batch)"
                    )
                self.sequence = FrameSequence(spec.input.sequence, tensor)
            self._feed = {spec.input.name: self._full_input if self._full_input is not None else tensor}

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
        check_model_path(model, "model file", BackendError, MODEL_FILES)
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

    @property
    def on_gpu(self) -> bool:
        """Preprocesses on the GPU: takes a ``DeviceImage`` (GPU-decoded frame) as it is."""
        return self.gpu_preprocessor is not None

    def run(self, image: Frame, settings: Any = None, inputs: Optional[ModelInputs] = None) -> RawOutput:
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
            transform = gpu(image)  # type: ignore[arg-type]  # a DecodedImage or a DeviceImage
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
        return self._parse(outputs, transform, image, settings, {"preprocess": t1 - t0, "infer": t2 - t1})

    def _parse(
        self, outputs: Mapping[str, np.ndarray], transform: ImageTransform, image: Frame, settings: Any,
        timings: Dict[str, float], parsed: Any = None,
    ) -> RawOutput:  # fmt: skip
        """``parsed``: the frame's result parsed already (with its batch, ``infer_ahead_batch``): its share of
        that time is in ``timings["postprocess"]``."""
        t2 = perf_counter()
        if isinstance(image, DecodedImage) and image.reduced:
            transform = self._to_source(transform, image)
        if parsed is None:
            parsed = self.parse_outputs(outputs, settings)
            timings["postprocess"] = 0.0
        timings["postprocess"] += perf_counter() - t2
        return RawOutput(parsed, transform, timings)

    def parse_outputs(self, outputs: Mapping[str, np.ndarray], settings: Any = None) -> Any:
        """The parser's raw result for one frame's outputs, in model-input pixels (``inspect`` checks a synthetic
        frame's this way); an OutputError says which tensor does not fit the spec."""
        if self.static_batch > 1:  # the frame is row 0 of every batch-first output
            outputs = {k: v[:1] if v.ndim and v.shape[0] == self.static_batch else v for k, v in outputs.items()}
        return self.parser.parse(outputs, settings)

    # ------------------------------------------------------------------ ahead of the frame's turn (replay)

    @property
    def runs_ahead(self) -> bool:
        """Preprocess + infer may run in helper threads ahead of the frame's turn, several frames at once
        (``infer_ahead``): the model keeps no state between frames (no extra inputs, frame sequence or mask),
        preprocesses on the CPU, and its backend's ``infer`` is ``concurrent`` (ONNX Runtime on the CPU; not a
        TensorRT execution context)."""
        return (
            self.preprocessor is not None and self.sequence is None and self.mask is None and self.static_batch == 1
            and not self.extra_inputs and not self.spec.inputs and bool(getattr(self.backend, "concurrent", False))
        )  # fmt: skip

    def infer_ahead(self, image: DecodedImage) -> Inference:
        """Preprocess into a spare input tensor (one per thread doing this at once, made on first need) and
        infer, in the calling thread; the frame's turn parses it with the settings of that moment
        (``parse_ahead``), so results equal ``run``'s. Only where ``runs_ahead``."""
        t0 = perf_counter()
        with self._spares_lock:
            preprocessor = self._spares.pop() if self._spares else None
        if preprocessor is None:
            preprocessor = Preprocessor(self.spec.input, dtype=self.preprocessor.tensor.dtype)  # type: ignore[union-attr]
        try:
            tensor, transform = preprocessor(image)
            t1 = perf_counter()
            outputs = self.backend.infer({self.spec.input.name: tensor})
        finally:
            with self._spares_lock:
                self._spares.append(preprocessor)
        return Inference(outputs, transform, image, {"preprocess": t1 - t0, "infer": perf_counter() - t1})

    def infer_ahead_batch(self, images: Sequence[DecodedImage], settings: Any = None) -> List[Inference]:
        """``infer_ahead`` for consecutive frames through one ``infer`` (replay's look-ahead on a model with a
        dynamic batch dimension): each frame preprocessed into its row of a spare batch tensor, the outputs split
        per frame (ONNX Runtime returns new arrays every call, so the rows stay valid). A small model's cost is
        mostly per call (the demo detector: 0.4 ms alone, 0.23 ms a frame in batches of 8), so this is where
        replay's throughput comes from on few cores. Each frame's timings are its share of the batch's. Results
        equal ``infer_ahead``'s per frame (test_pipeline_overlap). Only where ``runs_ahead``; ``len(images)``
        <= ``batch_capacity``.

        ``settings``: the task's settings; where the parser parses batches (``OutputParser.parse_batch``), the
        frames are parsed here too, in one pass (the demo detector: 0.12 ms a frame alone, a fraction in a
        batch), and ``parse_ahead`` takes that result while the settings are still equal."""
        count = len(images)
        if count == 1:
            return [self.infer_ahead(images[0])]
        if count > self.batch_capacity or self.static_batch > 1:
            raise SpecError(f"{count} frames for a model that takes {self.batch_capacity} at once")
        t0 = perf_counter()
        with self._spares_lock:
            spares = self._spare_batches.setdefault(count, [])
            buffers = spares.pop() if spares else None
        if buffers is None:
            buffers = self._new_batch(count)
        try:
            tensor, rows = buffers
            transforms = [row(image)[1] for row, image in zip(rows, images)]
            t1 = perf_counter()
            outputs = self.backend.infer({self.spec.input.name: tensor})
        finally:
            with self._spares_lock:
                self._spare_batches[count].append(buffers)
        self._check_rows(outputs, count)
        t2 = perf_counter()
        snapshot = copy.copy(settings)  # what the frames were parsed with (a live param may change it later)
        parsed = None
        if settings is not None:
            try:
                parsed = self.parser.parse_batch(outputs, count, snapshot)
            except Exception:  # not the inference's fault: each frame's turn parses it and meets its own error
                parsed = None
        share = {"preprocess": (t1 - t0) / count, "infer": (t2 - t1) / count,
                 "postprocess": (perf_counter() - t2) / count}  # fmt: skip
        return [
            Inference({name: value[i : i + 1] for name, value in outputs.items()}, transforms[i], image, dict(share),
                      parsed[i] if parsed is not None else None, snapshot)
            for i, image in enumerate(images)
        ]

    def parse_ahead(self, inference: Inference, settings: Any = None) -> RawOutput:
        """The frame's turn of ``infer_ahead``: parse its outputs as ``run`` would have (or take what its batch
        parsed, when that was with settings equal to these)."""
        parsed = inference.parsed if inference.parsed is not None and inference.parsed_with == settings else None
        return self._parse(inference.outputs, inference.transform, inference.image, settings, dict(inference.timings),
                           parsed)

    @property
    def batch_capacity(self) -> int:
        """How many frames one ``infer`` can take (frames of several cameras run as one batch): the input's
        batch dimension when it is static > 1, or when it is dynamic ``MAX_BATCH`` or the engine's own limit
        (``Backend.max_batch``: a TensorRT profile's max, an implicit-batch engine's max batch size), and every
        output is batch-first; 1 for models that cannot (batch 1, extra inputs, a frame sequence, a mask, GPU
        preprocessing writing one frame into the engine's own buffer)."""
        if self._capacity is None:
            self._capacity = self._find_capacity()
        return self._capacity

    def _find_capacity(self) -> int:
        if self.gpu_preprocessor is not None or self.sequence is not None or self.mask is not None:
            return 1
        if self.extra_inputs or self.spec.inputs:
            return 1
        inputs = [t for t in self.backend.inputs if t.name == self.spec.input.name]
        if not inputs or len(inputs[0].shape) != 4:
            return 1
        first = inputs[0].shape[0]
        if first is None:  # dynamic: up to what the engine allows (its profile's or implicit max batch)
            max_batch = getattr(self.backend, "max_batch", None)  # Backend's; a bare double may lack it
            limit = max_batch(self.spec.input.name) if max_batch is not None else None
            capacity = MAX_BATCH if limit is None else min(MAX_BATCH, int(limit))
        else:
            capacity = int(first)
        if capacity <= 1:
            return 1
        for output in self.backend.outputs:
            if not output.shape or output.shape[0] not in (None, first):
                return 1  # an output that is not batch-first: cannot split it per frame
        return capacity

    def run_batch(self, images: Sequence[Frame], settings: Sequence[Any]) -> List[RawOutput]:
        """Several frames (of several cameras) through one ``infer``: each preprocessed into its row of the batch
        tensor, outputs split per frame, each parsed with its own ``settings``. ``len(images)`` <=
        ``batch_capacity``; a static batch larger than the frames given runs with the unused rows as they are
        (their outputs are ignored). Results equal ``run`` per frame (test_pipeline_batch)."""
        count = len(images)
        capacity = self.batch_capacity
        if count == 1 or capacity < count:
            if capacity < count:
                raise SpecError(f"{count} frames for a model that takes {capacity} at once")
            return [self.run(images[0], settings[0])]
        t0 = perf_counter()
        rows = capacity if self.static_batch > 1 else count
        tensor, preprocessors = self._batch_buffers(rows)
        transforms = []
        for index, image in enumerate(images):
            _, transform = preprocessors[index](image)  # type: ignore[arg-type]
            transforms.append(transform)
        t1 = perf_counter()
        outputs = self.backend.infer({self.spec.input.name: tensor})
        t2 = perf_counter()
        try:
            self._check_rows(outputs, rows)
        except SpecError as exc:  # outputs that are not one row per frame: frame by frame from now on
            self.stop_batching(exc, count)
            return [self.run(image, setting) for image, setting in zip(images, settings)]
        results = []
        for index, image in enumerate(images):
            t = perf_counter()
            transform = transforms[index]
            if isinstance(image, DecodedImage) and image.reduced:
                transform = self._to_source(transform, image)
            mine = {name: value[index : index + 1] for name, value in outputs.items()}
            parsed = self.parser.parse(mine, settings[index])
            timings = {"preprocess": (t1 - t0) / count, "infer": t2 - t1, "postprocess": perf_counter() - t}
            results.append(RawOutput(parsed, transform, timings))
        return results

    def _check_rows(self, outputs: Mapping[str, np.ndarray], rows: int) -> None:
        """A batch's outputs must hold one row per frame to be split per frame; a model whose dynamic first
        output dimension is something else (a detection count) is refused here rather than mixing frames."""
        for name, value in outputs.items():
            shape = np.shape(value)
            if not shape or shape[0] != rows:
                raise SpecError(
                    f"model output {name!r} has shape {list(shape)} for a batch of {rows} frames: its first "
                    "dimension is not the batch, so the frames' outputs cannot be told apart; fix: export the model "
                    "with batch-first outputs, or with a static batch of 1"
                )

    def stop_batching(self, error: Exception, count: int, head: Optional[str] = None) -> None:
        """The model ran one frame but not ``count`` at once (a dynamic batch dimension the backend cannot serve,
        or outputs that are not one row per frame): it runs frame by frame from now on (``prepare_many``,
        ``finish_batch``), said once in the log."""
        from trt_perception.gpu_decode import log_once

        self._capacity = 1
        what = f"head {head}: its model" if head else f"model {self.spec.name or self.spec.source or '?'}"
        log_once(f"{what} failed on a batch of {count} frames ({type(error).__name__}: {error}) and runs one "
                 "frame at a time from now on; fix: export the model with a batch dimension that holds, or a "
                 "static batch of 1", logging.WARNING)  # fmt: skip

    def _batch_buffers(self, rows: int) -> Tuple[np.ndarray, List[Preprocessor]]:
        """``run_batch``'s batch tensor of ``rows`` frames and its row writers, made once per size (a static
        batch: its (pinned, for an engine) input itself)."""
        found = self._batches.get(rows)
        if found is None:
            full = self._full_input if self._full_input is not None and len(self._full_input) == rows else None
            found = self._batches[rows] = self._new_batch(rows, full)
        return found

    def _new_batch(self, rows: int, tensor: Optional[np.ndarray] = None) -> Tuple[np.ndarray, List[Preprocessor]]:
        """A batch tensor of ``rows`` frames (``tensor``, or a new one) and one Preprocessor writing each row."""
        single = self.preprocessor.tensor  # type: ignore[union-attr]
        if tensor is None:
            tensor = np.zeros((rows, *single.shape[1:]), single.dtype)
        return tensor, [Preprocessor(self.spec.input, dtype=single.dtype, out=tensor[i : i + 1]) for i in range(rows)]

    def _to_source(self, transform: ImageTransform, image: DecodedImage) -> ImageTransform:
        """A transform to the reduced frame (``jpeg_reduce``) -> one to the frame as sent, made once per
        geometry (it caches its mask plans): x_sent = x_reduced * sent_width / reduced_width, same for y."""
        key = (id(transform), image.width, image.height, image.source_size)
        cached = self._scaled.get(key)
        if cached is not None and cached[0] is transform:
            return cached[1]
        width, height = image.source_size  # type: ignore[misc]
        fx, fy = image.width / width, image.height / height
        scaled = ImageTransform(
            src_width=width, src_height=height, scale_x=transform.scale_x * fx, scale_y=transform.scale_y * fy,
            pad_x=transform.pad_x, pad_y=transform.pad_y, crop_top=transform.crop_top / fy,
            crop_bottom=transform.crop_bottom / fy, model_width=transform.model_width,
            model_height=transform.model_height,
        )  # fmt: skip
        if len(self._scaled) > 8:
            self._scaled.clear()
        self._scaled[key] = (transform, scaled)
        return scaled

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
class Inference:
    """One model's outputs for one frame inferred ahead of the frame's turn (``ModelPipeline.infer_ahead``),
    not parsed yet: the outputs, the transform back to the frame, the frame, preprocess/infer timings."""

    outputs: Dict[str, np.ndarray]
    transform: ImageTransform
    image: DecodedImage
    timings: Dict[str, float]
    parsed: Any = None  # parsed with its batch (``OutputParser.parse_batch``), or None: parsed in its turn
    parsed_with: Any = None  # the settings it was parsed with


@dataclass
class FrameResult:
    """Everything one frame produced: each head's output by head name, per-stage timings in seconds
    (``decode``, ``<head>.preprocess/infer/postprocess``, ``total``: the frame's own work, not time spent
    waiting for the other stage when frames overlap).

    ``frame`` is the decoded frame as the heads got it: a ``DecodedImage``, or a ``DeviceImage`` when the JPEG
    was decoded on the GPU. ``image`` is always a host ``DecodedImage`` at the frame's full size (overlays,
    reports, samples): downloaded from the GPU (or scaled up after a ``jpeg_reduce`` decode) on first use.
    It stays valid while the next frame is decoded, not longer (buffers are reused): copy it to keep it.
    """

    frame: Frame
    outputs: Dict[str, HeadOutput] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    _host: Optional[DecodedImage] = field(default=None, repr=False, compare=False)

    @property
    def image(self) -> DecodedImage:
        if self._host is None or self._host.reduced:
            host = self._host if self._host is not None else _host_image(self.frame)
            self._host = host.full_size()
        return self._host

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


def _host_image(frame: Frame) -> DecodedImage:
    """A DecodedImage as it is, a DeviceImage copied down."""
    return frame if isinstance(frame, DecodedImage) else frame.download()


@dataclass
class PreparedFrame:
    """A decoded frame waiting for its heads (``FrameProcessor.prepare`` -> ``finish``)."""

    frame: Frame
    decode_s: float
    # head name -> its model inferred ahead (``prepare(ahead=True)``), or the exception that stopped it there
    # (raised in the frame's turn, as ``finish`` would have met it)
    inferred: Dict[str, Union[Inference, Exception]] = field(default_factory=dict)


@dataclass
class StreamResult:
    """One frame of ``FrameProcessor.process_stream``: the item it came from (``(msg, now, ...)``), and its
    ``result``, or the ``error`` that stopped it (ImageError: a bad frame; anything else: a failed frame)."""

    item: Tuple[Any, ...]
    result: Optional[FrameResult] = None
    error: Optional[BaseException] = None


JPEG_REDUCE_MODES = ("off", "auto")
_STREAM_END = object()


class FrameProcessor:
    """Decode a frame once and run every head on it, in order.

    Heads are ``heads.Head`` objects (a name, a task, a ModelPipeline); the node and the replay tool both
    call ``process`` (or ``prepare`` then ``finish``, or ``process_stream``) so that what is tuned on a bag is
    exactly what runs on the car.

    ``gpu_decode`` (auto|on|off): JPEG frames decoded on the GPU with nvImageCodec (``gpu_decode.py``), on the
    CUDA of the first head that preprocesses on the GPU; 'auto' only when every head does, 'on' always (or a
    ConfigError naming the fix). GPU-decoded frames go to GPU-preprocessing heads as they are; other heads get
    one host copy. ``max_pixels``: larger frames are bad frames (read from the header before decoding).
    ``jpeg_reduce`` (off|auto): JPEGs decoded on the CPU at 1/2, 1/4 or 1/8 size when every head's input is at
    most that fraction of the frame (``reduction``); results stay in full-frame pixels.
    """

    def __init__(
        self,
        heads: Sequence[Head],
        gpu_decode: str = "auto",
        max_pixels: int = MAX_PIXELS,
        jpeg_reduce: str = "off",
    ) -> None:
        if not heads:
            raise SpecError("nothing to run: no head is enabled; fix: enable a head (e.g. detector.enabled: true)")
        drivers = [h.name for h in heads if h.task.drives]
        if len(drivers) > 1:
            raise SpecError(f"heads {drivers} all drive; at most one steering head per node")
        if jpeg_reduce not in JPEG_REDUCE_MODES:
            raise ConfigError(f"jpeg_reduce is {jpeg_reduce!r}; expected one of {list(JPEG_REDUCE_MODES)}")
        self.heads: List[Head] = list(heads)
        self.drive_head: Optional[Head] = next((h for h in self.heads if h.task.drives), None)
        self._on_gpu = [_head_on_gpu(h) for h in self.heads]
        self.jpeg_reduce = jpeg_reduce
        reduce = self.reduction if jpeg_reduce == "auto" else None
        # Frames that need a conversion (YUV, Bayer, alpha) decode into reused buffers (2 per size, as the GPU
        # decoder's ring): FrameResult.image is valid while the next frame is decoded, not after.
        self.decode: FrameDecoder = _open_decoder(self.heads, self._on_gpu, gpu_decode, max_pixels, reduce)

    def reduction(self, width: int, height: int) -> int:
        """``jpeg_reduce: auto``: the largest of 8, 4, 2 such that every head's model input is at most
        1/n of a ``width`` x ``height`` frame in both directions; 1 when none is."""
        for factor in (8, 4, 2):
            if all(h.spec.input.width * factor <= width and h.spec.input.height * factor <= height
                   for h in self.heads):  # fmt: skip
                return factor
        return 1

    # ---------------------------------------------------------------------------------------- one frame

    def process(self, msg: Any, now: float) -> FrameResult:
        """One Image/CompressedImage message (rclpy or rosbags) -> results. Bad frames raise ImageError."""
        return self.finish(self.prepare(msg), now)

    def prepare(self, msg: Any, ahead: bool = False) -> PreparedFrame:
        """The first stage: decode (on the GPU or the CPU). Thread-safe against ``finish`` of the previous
        frame (the overlap of ``process_stream`` and the node); bad frames raise ImageError.

        ``ahead``: also preprocess + infer every head whose model ``runs_ahead`` (replay's look-ahead threads,
        several frames at once); ``finish`` then only parses those (unless their batch parsed them) and runs
        their tasks, in frame order."""
        t0 = perf_counter()
        frame = self.decode(msg)
        prepared = PreparedFrame(frame, perf_counter() - t0)
        if ahead:
            self._infer_ahead([prepared])
        return prepared

    @property
    def runs_ahead(self) -> bool:
        """Some head's model can be inferred ahead of its frame's turn (``prepare(ahead=True)``)."""
        return any(getattr(h.pipeline, "runs_ahead", False) for h in self.heads)

    @property
    def ahead_batch(self) -> int:
        """The most consecutive frames one of the models that run ahead takes in one ``infer``
        (``prepare_many``); 1 when none has a batch dimension."""
        return max([getattr(h.pipeline, "batch_capacity", 1) for h in self.heads
                    if getattr(h.pipeline, "runs_ahead", False)] or [1])  # fmt: skip

    def prepare_many(self, msgs: Sequence[Any]) -> List[Union[PreparedFrame, Exception]]:
        """``prepare(msg, ahead=True)`` for consecutive frames in one call (replay's look-ahead): each frame
        decoded (a bad frame is its exception in the list), then the models that run ahead inferred over the
        decoded frames in batches (``_infer_ahead``). Converted frames (YUV, Bayer, alpha) decode into reused
        buffers: ``keep_frames`` at least as many as are alive."""
        prepared: List[Union[PreparedFrame, Exception]] = []
        for msg in msgs:
            try:
                prepared.append(self.prepare(msg))
            except Exception as exc:  # a bad frame (ImageError): the frame's turn counts it
                prepared.append(exc)
        self._infer_ahead([p for p in prepared if isinstance(p, PreparedFrame)])
        return prepared

    def _infer_ahead(self, prepared: Sequence[PreparedFrame]) -> None:
        """Each head whose model ``runs_ahead`` infers the host frames among ``prepared``, in batches of its
        ``batch_capacity`` (``infer_ahead_batch``); what stopped a frame is kept as its result, raised in its turn
        as ``finish`` would have. A batch that fails runs again frame by frame, so each frame meets its own
        error; when that works, the model is not batched again (``stop_batching``)."""
        frames = [p for p in prepared if isinstance(p.frame, DecodedImage)]
        for head in self.heads:
            pipeline = head.pipeline
            if not getattr(pipeline, "runs_ahead", False):
                continue
            first = 0
            while first < len(frames):
                chunk = frames[first : first + max(1, int(getattr(pipeline, "batch_capacity", 1)))]
                first += len(chunk)
                inferred: List[Union[Inference, Exception]] = []
                batch_error: Optional[Exception] = None
                if len(chunk) > 1:
                    try:
                        inferred = list(pipeline.infer_ahead_batch([p.frame for p in chunk], head.task.settings))
                    except Exception as exc:  # each frame meets its own error below
                        batch_error = exc
                if not inferred:
                    for p in chunk:
                        try:
                            inferred.append(pipeline.infer_ahead(p.frame))
                        except Exception as exc:  # the frame's turn raises it, as finish would have
                            inferred.append(exc)
                if batch_error is not None and not all(isinstance(done, Exception) for done in inferred):
                    pipeline.stop_batching(batch_error, len(chunk), head.name)
                for p, done in zip(chunk, inferred):
                    p.inferred[head.name] = done

    def keep_frames(self, count: int) -> int:
        """Let up to ``count`` decoded frames live at once (frames prepared ahead in several threads): converted
        frames (YUV, Bayer, alpha) get that many reused buffers per size. Returns how many may: the GPU decoder's
        ring holds 2, so with it the caller keeps to 2."""
        return self.decode.keep_frames(count)

    def finish(self, prepared: PreparedFrame, now: float) -> FrameResult:
        """The second stage: every head on a prepared frame, in order."""
        result = self.process_image(prepared.frame, now, prepared.inferred)
        result.timings["decode"] = prepared.decode_s
        result.timings["total"] += prepared.decode_s
        return result

    def process_image(
        self, image: Frame, now: float, inferred: Optional[Mapping[str, Union[Inference, Exception]]] = None
    ) -> FrameResult:
        """Run the heads on an already decoded frame (benchmarks and tools that read image files); heads in
        ``inferred`` (``prepare(ahead=True)``) were preprocessed and inferred already: parse + task here."""
        start = perf_counter()
        result = FrameResult(frame=image)
        timings = result.timings
        ahead_s = 0.0
        for head, on_gpu in zip(self.heads, self._on_gpu):
            done = inferred.get(head.name) if inferred else None
            if done is None:
                output = head.run(_frame_for(result, on_gpu), now)
            elif isinstance(done, Exception):
                raise done
            else:
                output = head.finish(head.pipeline.parse_ahead(done, head.task.settings), now)
                ahead_s += done.timings["preprocess"] + done.timings["infer"]
            result.outputs[head.name] = output
            for stage, seconds in output.timings.items():
                timings[f"{head.name}.{stage}"] = seconds
        timings["total"] = perf_counter() - start + ahead_s
        return result

    @property
    def can_batch(self) -> bool:
        """Some head's model takes several frames at once (``batch_capacity`` > 1): frames of the cameras
        sharing it that are ready together may run as one batch (``finish_batch``)."""
        return any(getattr(h.pipeline, "batch_capacity", 1) > 1 for h in self.heads)

    def process_stream(self, items: Iterable[Tuple[Any, ...]], overlap: bool = True) -> Iterator[StreamResult]:
        """Frames ``(msg, now, ...)`` -> one ``StreamResult`` each, in order, with the next frame decoded in a
        helper thread while the heads run on this one (``overlap``; ONNX Runtime and OpenCV release the GIL).

        Results are exactly ``process``'s. At most two frames are decoded and not yet given back (the one
        yielded, the next), so a result's frame stays valid until the loop asks for the one after it. A
        failing frame is yielded with its ``error`` and the stream goes on; an error of ``items`` itself (a
        damaged bag) is raised here. Closing the generator early stops the helper.
        """
        if not overlap:
            for item in items:
                yield self._run_item(item, None)
            return
        handover: Handover = Handover()
        worker = threading.Thread(target=self._prepare_items, args=(iter(items), handover),
                                  name="trt_perception_decode", daemon=True)  # fmt: skip
        worker.start()
        try:
            while True:
                got = handover.get()
                if got is None or got is _STREAM_END:
                    return
                item, prepared, error = got
                if isinstance(error, _SourceError):
                    raise error.error
                yield self._run_item(item, (prepared, error))
        finally:
            handover.close()
            worker.join()

    def _prepare_items(self, items: Iterator[Tuple[Any, ...]], handover: Handover) -> None:
        """The helper thread of ``process_stream``: decode the next frame once the previous one was taken."""
        while handover.wait_empty():
            try:
                item = next(items)
            except StopIteration:
                handover.put(_STREAM_END)
                return
            except BaseException as exc:  # the source failed: raised in the consumer's thread
                handover.put((None, None, _SourceError(exc)))
                return
            try:
                prepared, error = self.prepare(item[0]), None
            except Exception as exc:  # handed over: the consumer decides (bad frame)
                prepared, error = None, exc
            if not handover.put((item, prepared, error)):
                return

    def _run_item(self, item: Tuple[Any, ...], prepared: Optional[Tuple[Any, Any]]) -> StreamResult:
        try:
            if prepared is None:
                return StreamResult(item, self.process(item[0], item[1]))
            frame, error = prepared
            if error is not None:
                return StreamResult(item, error=error)
            return StreamResult(item, self.finish(frame, item[1]))
        except Exception as exc:
            return StreamResult(item, error=exc)

    def head(self, name: str) -> Head:
        for head in self.heads:
            if head.name == name:
                return head
        raise KeyError(name)

    def close(self) -> None:
        try:
            for head in self.heads:
                head.close()
        finally:
            self.decode.close()


def _frame_for(result: FrameResult, on_gpu: bool) -> Frame:
    """The frame as a head takes it: a GPU head the decoded frame as it is; a CPU head a host frame (a GPU-decoded
    frame is copied down once per frame and shared with ``result.image``)."""
    frame = result.frame
    if on_gpu or isinstance(frame, DecodedImage):
        return frame
    if result._host is None:
        t0 = perf_counter()
        result._host = _host_image(frame)
        result.timings["download"] = perf_counter() - t0
    return result._host


def finish_batch(frames: Sequence[Tuple[FrameProcessor, PreparedFrame, float]]) -> List[FrameResult]:
    """Frames of several cameras that are ready together (each with its camera's FrameProcessor, its prepared
    frame and its ``now``) -> their results, as ``finish`` would give each: a model shared by several of them
    whose ``batch_capacity`` is > 1 runs them as one batch (chunks of its capacity), every other head runs
    frame by frame in the order given. Each camera's own task (tracks, settings) finishes its output."""
    results = [FrameResult(frame=prepared.frame) for _, prepared, _ in frames]
    outputs: List[Dict[str, HeadOutput]] = [{} for _ in frames]
    groups: Dict[int, List[Tuple[int, Head, bool]]] = {}
    start = perf_counter()
    for index, (processor, _, _) in enumerate(frames):
        for head, on_gpu in zip(processor.heads, processor._on_gpu):
            groups.setdefault(id(head.pipeline), []).append((index, head, on_gpu))
    for members in groups.values():
        pipeline = members[0][1].pipeline
        capacity = getattr(pipeline, "batch_capacity", 1) if len(members) > 1 else 1
        if capacity <= 1:
            for index, head, on_gpu in members:
                outputs[index][head.name] = head.run(_frame_for(results[index], on_gpu), frames[index][2])
            continue
        for first in range(0, len(members), capacity):
            chunk = members[first : first + capacity]
            images = [_frame_for(results[index], on_gpu) for index, _, on_gpu in chunk]
            raws = pipeline.run_batch(images, [head.task.settings for _, head, _ in chunk])
            for (index, head, _), raw in zip(chunk, raws):
                outputs[index][head.name] = head.finish(raw, frames[index][2])
    shared = (perf_counter() - start) / len(frames)
    for (processor, prepared, _), result, found in zip(frames, results, outputs):
        for head in processor.heads:  # in the camera's head order, as finish gives them
            output = found[head.name]
            result.outputs[head.name] = output
            for stage, seconds in output.timings.items():
                result.timings[f"{head.name}.{stage}"] = seconds
        result.timings["decode"] = prepared.decode_s
        result.timings["total"] = prepared.decode_s + shared
    return results


class _SourceError(Exception):
    """An exception of ``process_stream``'s item iterator, carried to the consumer's thread."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _head_on_gpu(head: Any) -> bool:
    return bool(getattr(getattr(head, "pipeline", None), "on_gpu", False))


def _open_decoder(
    heads: Sequence[Head],
    on_gpu: Sequence[bool],
    mode: str,
    max_pixels: int,
    reduce: Optional[Callable[[int, int], int]],
) -> FrameDecoder:
    """The frame decoder for ``gpu_decode`` = ``mode`` (see FrameProcessor), the choice logged once."""
    from trt_perception.gpu_decode import GPU_DECODE_MODES, FrameDecoder, log_once, open_frame_decoder

    if mode not in GPU_DECODE_MODES:
        raise ConfigError(f"gpu_decode is {mode!r}; expected one of {list(GPU_DECODE_MODES)}")
    if mode == "off":
        return FrameDecoder(None, max_pixels, reduce)
    gpu_heads = [h for h, g in zip(heads, on_gpu) if g]
    if mode == "auto" and len(gpu_heads) < len(heads):
        cpu_heads = [h.name for h, g in zip(heads, on_gpu) if not g]
        log_once(
            f"gpu_decode: JPEG frames are decoded on the CPU (OpenCV): head(s) {', '.join(cpu_heads)} preprocess "
            "on the CPU (gpu_decode: auto decodes on the GPU only when every head has gpu_preprocess: true on a "
            "TensorRT engine; gpu_decode: on decodes there anyway)"
        )
        return FrameDecoder(None, max_pixels, reduce)
    cuda: Any = "auto"
    if gpu_heads:  # the first GPU head's CUDA (its primary context): one context for engine, kernel and decoder
        cuda = gpu_heads[0].pipeline.gpu_preprocessor.cuda  # type: ignore[union-attr]
    return open_frame_decoder(mode, cuda=cuda, max_pixels=max_pixels, reduce=reduce)
