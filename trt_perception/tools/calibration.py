"""INT8 calibration data: frames from an image folder or a rosbag2 image topic, preprocessed as the pipeline does.

Calibration must see what inference sees, so frames go through the pipeline's own decoding
(``images.decode_compressed`` for files, ``images.decode_image`` for bag messages) and the spec's
``Preprocessor`` (resize/letterbox, crop, color order, scale, layout) - no second implementation here.
Frames are sampled evenly over the whole folder or bag (500 consecutive frames of a 30 fps bag are 17 s of
one stretch of road; 500 spread over the drive are not).

The calibrator itself (a ``tensorrt.IInt8EntropyCalibrator2`` subclass) is made by
``make_entropy_calibrator(trt, ...)`` from the ``tensorrt`` module the builder passes in, so this module
never imports tensorrt or CUDA; device buffers come from a small ``DeviceMemory`` object (``alloc``,
``copy_htod``, ``free``) that ``tools.build`` provides. The calibration cache is written next to the engine
and reused: with a cache present no frame is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from trt_perception.errors import BagError, BuildError, ConfigError
from trt_perception.images import DecodedImage, decode_compressed, decode_image
from trt_perception.spec import ModelSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class CalibrationConfig:
    """Where calibration frames come from and where the cache goes.

    ``source``: a folder of images, or a rosbag2 recording (folder, .db3 or .mcap) with ``topic``; may be
    None when ``cache_path`` already holds a cache. ``batch_size`` applies only when the model's batch
    dimension is dynamic (a static batch dimension fixes it).
    """

    source: Optional[Path] = None
    topic: Optional[str] = None
    max_images: int = 500
    batch_size: int = 8
    cache_path: Optional[Path] = None


def _evenly(count: int, limit: int) -> List[int]:
    """``limit`` indices spread evenly over ``range(count)`` (all of them when count <= limit)."""
    if count <= limit:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, limit)})


def image_files(folder: Path) -> List[Path]:
    if not folder.is_dir():
        raise ConfigError(f"calibration image folder {folder} does not exist; fix: pass a folder of .jpg/.png frames")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(
            f"calibration image folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} files; fix: put camera frames "
            "there, or use --calib-bag with a recorded image topic"
        )
    return files


def folder_images(folder: Path, limit: int) -> Iterator[DecodedImage]:
    """Decoded frames of an image folder, as a ``CompressedImage`` of the same bytes would decode."""
    files = image_files(folder)
    for index in _evenly(len(files), limit):
        path = files[index]
        fmt = "png" if path.suffix.lower() == ".png" else "jpeg"
        yield decode_compressed(fmt, np.fromfile(str(path), np.uint8))


def bag_images(bag: Path, topic: Optional[str], limit: int) -> Iterator[DecodedImage]:
    """Decoded frames of one Image/CompressedImage topic of a rosbag2 recording (read with rosbags)."""
    from rosbags.highlevel import AnyReader

    from trt_perception.rosbag_types import get_typestore

    if not bag.exists():
        raise BagError(f"calibration bag {bag} does not exist; fix: pass the rosbag2 folder (or .db3/.mcap file)")
    with AnyReader([bag], default_typestore=get_typestore("humble")) as reader:
        image_topics = sorted({c.topic for c in reader.connections if c.msgtype in IMAGE_TYPES})
        if topic is None:
            if len(image_topics) != 1:
                raise ConfigError(
                    f"calibration bag {bag} has image topics {image_topics}; fix: pick one with --calib-topic"
                )
            topic = image_topics[0]
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            raise BagError(f"calibration bag {bag} has no topic {topic!r}; its image topics are {image_topics}")
        if connections[0].msgtype not in IMAGE_TYPES:
            raise BagError(
                f"topic {topic!r} in {bag} carries {connections[0].msgtype}; expected one of {list(IMAGE_TYPES)}"
            )
        total = sum(int(c.msgcount) for c in connections)
        wanted = set(_evenly(total, limit))
        for index, (connection, _, raw) in enumerate(reader.messages(connections=connections)):
            if index in wanted:
                yield decode_image(reader.deserialize(raw, connection.msgtype))


def calibration_images(config: CalibrationConfig) -> Iterator[DecodedImage]:
    if config.source is None:
        raise ConfigError("no calibration source: pass --calib-images DIR or --calib-bag BAG (--calib-topic TOPIC)")
    if config.max_images <= 0:
        raise ConfigError(f"calibration frame count {config.max_images} is not valid; expected a positive number")
    source = Path(config.source)
    is_bag = source.suffix in (".db3", ".mcap") or (source / "metadata.yaml").is_file()
    if is_bag or config.topic is not None:
        return bag_images(source, config.topic, config.max_images)
    return folder_images(source, config.max_images)


class CalibrationBatches:
    """Batches of preprocessed frames, shaped like the model input: exactly what the pipeline would feed.

    A last partial batch is dropped (TensorRT calibrates on full batches only).
    """

    def __init__(
        self,
        spec: ModelSpec,
        config: CalibrationConfig,
        input_shape: Sequence[int],
        dtype: Any = np.float32,
    ) -> None:
        from trt_perception.preprocess import Preprocessor

        self.spec = spec
        self.config = config
        self.shape = tuple(int(d) for d in input_shape)
        if self.shape[1:] != tuple(spec.input.shape[1:]):
            raise BuildError(
                f"model input {spec.input.name!r} has shape {list(self.shape)} but the spec describes "
                f"{list(spec.input.shape)} ({spec.input.layout}); calibration frames would not fit; fix the spec"
            )
        self.dtype = np.dtype(dtype)
        self.preprocessor = Preprocessor(spec.input, dtype=self.dtype)
        self.frames = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        batch = np.empty(self.shape, self.dtype)
        filled = 0
        for image in calibration_images(self.config):
            tensor, _ = self.preprocessor(image)
            batch[filled] = np.asarray(tensor).reshape(self.shape[1:])
            filled += 1
            self.frames += 1
            if filled == self.shape[0]:
                yield batch
                batch = np.empty(self.shape, self.dtype)
                filled = 0


class CalibrationFeeder:
    """The calibrator's logic, free of TensorRT: batches -> one device buffer, and the cache file."""

    def __init__(
        self,
        batches: Any,
        device: Any,
        cache_path: Path,
        progress: Optional[Progress] = None,
    ) -> None:
        self.batches = batches
        self.device = device
        self.cache_path = Path(cache_path)
        self.progress = progress or (lambda text: None)
        self._iterator: Optional[Iterator[np.ndarray]] = None
        self._pointer: Optional[int] = None
        self._nbytes = 0
        self.batches_fed = 0
        self.error: Optional[BaseException] = None

    @property
    def batch_size(self) -> int:
        return int(self.batches.shape[0])

    def next_pointers(self, names: Sequence[str]) -> Optional[List[int]]:
        """Device pointers of the next batch (one per input name), or None when the frames are used up."""
        if len(names) != 1:
            raise BuildError(f"INT8 calibration feeds one input; this network asks for {list(names)}")
        if self._iterator is None:
            self._iterator = iter(self.batches)
        batch = next(self._iterator, None)
        if batch is None:
            frames = getattr(self.batches, "frames", self.batches_fed * self.batch_size)
            self.progress(f"calibration used {self.batches_fed} batch(es), {frames} frame(s)")
            if self.batches_fed == 0:
                raise BuildError("no calibration frames were read; fix: check --calib-images / --calib-bag")
            return None
        batch = np.ascontiguousarray(batch)
        if self._pointer is None:
            self._nbytes = batch.nbytes
            self._pointer = int(self.device.alloc(self._nbytes))
        self.device.copy_htod(self._pointer, batch)
        self.batches_fed += 1
        if self.batches_fed % 10 == 1:
            self.progress(f"calibration batch {self.batches_fed} ({self.batches_fed * self.batch_size} frames)")
        return [self._pointer]

    def read_cache(self) -> Optional[bytes]:
        if self.cache_path.is_file():
            data = self.cache_path.read_bytes()
            self.progress(f"reusing calibration cache {self.cache_path} ({len(data)} bytes); no frames read")
            return data
        return None

    def write_cache(self, cache: Any) -> None:
        data = bytes(cache)
        tmp = self.cache_path.with_name(f".{self.cache_path.name}.{os.getpid()}.partial")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.cache_path)
        finally:
            if tmp.exists():
                tmp.unlink()
        self.progress(f"wrote calibration cache {self.cache_path} ({len(data)} bytes)")

    def guarded(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run ``method``; on error keep it in ``self.error`` (the first one) and return None."""
        try:
            return method(*args)
        except Exception as exc:  # raised again by the builder after TensorRT returns (see raise_error)
            if self.error is None:
                self.error = exc
            return None

    def raise_error(self) -> None:
        if self.error is not None:
            error = self.error
            if isinstance(error, (BuildError, ConfigError, BagError)):
                raise error
            raise BuildError(f"INT8 calibration failed: {type(error).__name__}: {error}") from error

    def close(self) -> None:
        if self._pointer is not None:
            self.device.free(self._pointer)
            self._pointer = None


class CudaDeviceMemory:
    """The calibrator's device buffer through the TensorRT backend's CUDA adapter (pycuda or cuda-python).

    Batches go through a page-locked staging buffer (what async copies need), one synchronous copy each.
    """

    def __init__(self, api: Any = "auto") -> None:
        from trt_perception.backends.cuda import select_cuda_api

        self.api = select_cuda_api(api)
        self._stream: Any = None
        self._staging: Optional[np.ndarray] = None

    def alloc(self, nbytes: int) -> int:
        with self.api.activated():
            if self._stream is None:
                self._stream = self.api.stream_create()
            self._staging = self.api.pinned_empty(nbytes)
            return self.api.malloc(nbytes)

    def copy_htod(self, pointer: int, array: np.ndarray) -> None:
        staging = self._staging
        if staging is None or staging.nbytes != array.nbytes:
            raise BuildError(f"calibration batch of {array.nbytes} bytes does not fit the {pointer:#x} buffer")
        np.copyto(staging, np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        with self.api.activated():
            self.api.memcpy_htod_async(pointer, staging, self._stream)
            self.api.stream_synchronize(self._stream)  # the batch must be on the GPU before get_batch returns

    def free(self, pointer: int) -> None:
        with self.api.activated():
            self.api.free(pointer)
            if self._staging is not None:
                self.api.free_pinned(self._staging)
                self._staging = None
            if self._stream is not None:
                self.api.stream_destroy(self._stream)
                self._stream = None


def make_entropy_calibrator(
    trt: Any,
    spec: ModelSpec,
    config: CalibrationConfig,
    *,
    input_shape: Sequence[int],
    input_dtype: Any,
    cache_path: Path,
    device: Any,
    progress: Optional[Progress] = None,
) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` fed from ``config`` through the spec's preprocessing.

    ``input_shape`` is the network input's shape (a dynamic batch dim replaced by ``config.batch_size``).
    """
    shape: Tuple[int, ...] = tuple(int(d) for d in input_shape)
    if shape and shape[0] < 0:
        shape = (int(config.batch_size), *shape[1:])
    if config.source is None and not Path(cache_path).is_file():
        raise ConfigError(
            f"INT8 calibration has neither frames nor a cache ({cache_path} does not exist); fix: pass "
            "--calib-images DIR or --calib-bag BAG"
        )
    batches = CalibrationBatches(spec, config, shape, input_dtype)
    feeder = CalibrationFeeder(batches, device, Path(cache_path), progress)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Entropy calibration (the kind TensorRT recommends for CNNs) over the pipeline's own frames."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.feeder = feeder

        def get_batch_size(self) -> int:
            return feeder.batch_size

        # TensorRT calls these from C++ (noexcept in 8.x: an escaping exception aborts the process), so
        # errors are kept on the feeder and raised by the builder once the build returns.
        def get_batch(self, names: Sequence[str], *unused: Any) -> Optional[List[int]]:
            return feeder.guarded(feeder.next_pointers, names)

        def read_calibration_cache(self) -> Optional[bytes]:
            return feeder.guarded(feeder.read_cache)

        def write_calibration_cache(self, cache: Any) -> None:
            feeder.guarded(feeder.write_cache, cache)

    return EntropyCalibrator()
