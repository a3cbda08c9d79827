"""INT8 calibration data: frames from folders and rosbag2 topics, preprocessed exactly as the pipeline does."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Tuple

import cv2
import numpy as np
import pytest
from fakes.tensorrt_builder_fake import FakeDeviceMemory, make_builder_module
from onnx_factory import brightness_pilot, grid_detector

from trt_perception.errors import BagError, BuildError, ConfigError
from trt_perception.images import decode_compressed, decode_image
from trt_perception.preprocess import Preprocessor
from trt_perception.spec import load_spec
from trt_perception.tools.calibration import (
    CalibrationBatches,
    CalibrationConfig,
    CalibrationFeeder,
    make_entropy_calibrator,
)


def _frames(folder: Path, count: int, size: Tuple[int, int] = (48, 64)) -> List[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        path = folder / f"frame_{i:03d}.{'png' if i % 2 else 'jpg'}"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def _expected(spec: Any, encoded: List[Tuple[str, bytes]], dtype: Any = np.float32) -> List[np.ndarray]:
    pre = Preprocessor(spec.input, dtype=np.dtype(dtype))
    out = []
    for fmt, data in encoded:
        tensor, _ = pre(decode_compressed(fmt, np.frombuffer(data, np.uint8)))
        out.append(np.array(tensor))
    return out


@pytest.mark.parametrize("factory", [brightness_pilot, grid_detector])  # NHWC stretch / NCHW letterbox
def test_folder_batches_equal_pipeline_preprocessing(tmp_path: Path, factory: Any) -> None:
    spec = load_spec(factory(tmp_path, "m"))
    paths = _frames(tmp_path / "frames", 5)
    encoded = [("png" if p.suffix == ".png" else "jpeg", p.read_bytes()) for p in paths]
    expected = _expected(spec, encoded)
    batches = CalibrationBatches(spec, CalibrationConfig(tmp_path / "frames"), spec.input.shape)
    got = [b.copy() for b in batches]
    assert len(got) == 5 and batches.frames == 5
    for batch, want in zip(got, expected):
        assert batch.shape == spec.input.shape and batch.dtype == np.float32
        np.testing.assert_array_equal(batch, want)
    # a dynamic batch dimension: batches of 2, the last partial batch dropped
    batches = CalibrationBatches(spec, CalibrationConfig(tmp_path / "frames"), (2, *spec.input.shape[1:]))
    got = [b.copy() for b in batches]
    assert len(got) == 2
    np.testing.assert_array_equal(got[1][1], expected[3][0])


def test_frames_are_sampled_evenly_and_float16_is_honoured(tmp_path: Path) -> None:
    spec = load_spec(brightness_pilot(tmp_path, "m"))
    paths = _frames(tmp_path / "frames", 9)
    encoded = [("png" if p.suffix == ".png" else "jpeg", p.read_bytes()) for p in paths]
    expected = _expected(spec, encoded, np.float16)
    batches = CalibrationBatches(spec, CalibrationConfig(tmp_path / "frames", max_images=3), spec.input.shape,
                                 np.float16)
    got = [b.copy() for b in batches]
    assert [g.dtype for g in got] == [np.float16] * 3
    for batch, index in zip(got, (0, 4, 8)):
        np.testing.assert_array_equal(batch, expected[index])


def _write_bag(path: Path, topic_frames: dict) -> List[Any]:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    Image = typestore.types["sensor_msgs/msg/Image"]
    Compressed = typestore.types["sensor_msgs/msg/CompressedImage"]
    Header = typestore.types["std_msgs/msg/Header"]
    Time = typestore.types["builtin_interfaces/msg/Time"]
    written = []
    with Writer(path, version=8) as writer:
        for topic, frames in topic_frames.items():
            compressed = topic.endswith("compressed")
            msgtype = Compressed.__msgtype__ if compressed else Image.__msgtype__
            connection = writer.add_connection(topic, msgtype, typestore=typestore)
            for i, frame in enumerate(frames):
                header = Header(stamp=Time(sec=i, nanosec=0), frame_id="camera")
                if compressed:
                    _ok, data = cv2.imencode(".jpg", frame)
                    msg = Compressed(header=header, format="jpeg", data=data.reshape(-1))
                else:
                    h, w = frame.shape[:2]
                    msg = Image(header=header, height=h, width=w, encoding="bgr8", is_bigendian=0, step=w * 3,
                                data=frame.reshape(-1))
                writer.write(connection, (i + 1) * 10**9, typestore.serialize_cdr(msg, msgtype))
                written.append(msg)
    return written


@pytest.mark.parametrize("topic", ["/camera/image_raw", "/camera/image_raw/compressed"])
def test_bag_batches_equal_pipeline_preprocessing(tmp_path: Path, topic: str) -> None:
    spec = load_spec(grid_detector(tmp_path, "m"))
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (30, 50, 3), dtype=np.uint8) for _ in range(4)]
    messages = _write_bag(tmp_path / "bag", {topic: frames, "/other": frames[:1]})
    pre = Preprocessor(spec.input, dtype=np.dtype(np.float32))
    expected = [np.array(pre(decode_image(m))[0]) for m in messages[:4]]
    batches = CalibrationBatches(spec, CalibrationConfig(tmp_path / "bag", topic=topic), spec.input.shape)
    got = [b.copy() for b in batches]
    assert len(got) == 4
    for batch, want in zip(got, expected):
        np.testing.assert_array_equal(batch, want)


def test_bag_errors(tmp_path: Path) -> None:
    spec = load_spec(grid_detector(tmp_path, "m"))
    frame = np.zeros((8, 8, 3), np.uint8)
    _write_bag(tmp_path / "bag", {"/a": [frame], "/b": [frame]})
    with pytest.raises(ConfigError, match=r"image topics \['/a', '/b'\].*--calib-topic"):
        list(CalibrationBatches(spec, CalibrationConfig(tmp_path / "bag"), spec.input.shape))
    with pytest.raises(BagError, match="no topic '/c'"):
        list(CalibrationBatches(spec, CalibrationConfig(tmp_path / "bag", topic="/c"), spec.input.shape))
    with pytest.raises(BagError, match="does not exist"):
        list(CalibrationBatches(spec, CalibrationConfig(tmp_path / "nobag.mcap"), spec.input.shape))


def test_folder_errors(tmp_path: Path) -> None:
    spec = load_spec(brightness_pilot(tmp_path, "m"))
    with pytest.raises(ConfigError, match="does not exist"):
        list(CalibrationBatches(spec, CalibrationConfig(tmp_path / "missing"), spec.input.shape))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        list(CalibrationBatches(spec, CalibrationConfig(tmp_path / "empty"), spec.input.shape))
    with pytest.raises(BuildError, match="calibration frames would not fit"):
        CalibrationBatches(spec, CalibrationConfig(tmp_path), (1, 3, 120, 160))


@pytest.mark.parametrize("version", ["8.2.1.8", "10.0.1.6"])
def test_entropy_calibrator_protocol_and_cache(tmp_path: Path, version: str) -> None:
    trt = make_builder_module(version)
    spec = load_spec(brightness_pilot(tmp_path, "m"))
    _frames(tmp_path / "frames", 3)
    device = FakeDeviceMemory()
    cache = tmp_path / "m.calib.cache"
    calibrator = make_entropy_calibrator(
        trt, spec, CalibrationConfig(tmp_path / "frames"), input_shape=(-1, 120, 160, 3), input_dtype=np.float32,
        cache_path=cache, device=device,
    )
    assert isinstance(calibrator, trt.IInt8EntropyCalibrator2)
    assert calibrator.get_algorithm() == trt.CalibrationAlgoType.ENTROPY_CALIBRATION_2
    assert calibrator.get_batch_size() == 8  # dynamic batch: the configured calibration batch
    assert calibrator.read_calibration_cache() is None
    # 3 frames cannot fill a batch of 8: no batch at all is a calibration error, kept until the build returns
    assert calibrator.get_batch(["img_in"]) is None
    with pytest.raises(BuildError, match="no calibration frames were read"):
        calibrator.feeder.raise_error()

    calibrator = make_entropy_calibrator(
        trt, spec, CalibrationConfig(tmp_path / "frames", batch_size=1), input_shape=(-1, 120, 160, 3),
        input_dtype=np.float32, cache_path=cache, device=device,
    )
    pointers = [calibrator.get_batch(["img_in"]) for _ in range(4)]
    assert pointers[:3] == [[0x10000]] * 3 and pointers[3] is None
    assert len(device.copies) == 3 and device.copies[0].shape == (1, 120, 160, 3)
    calibrator.write_calibration_cache(memoryview(b"table"))
    assert cache.read_bytes() == b"table"
    assert calibrator.read_calibration_cache() == b"table"
    assert calibrator.get_batch(["a", "b"]) is None and "feeds one input" in str(calibrator.feeder.error)
    calibrator.feeder.close()
    assert device.freed == [0x10000]


def test_feeder_keeps_unexpected_errors_for_the_builder(tmp_path: Path) -> None:
    class Broken:
        shape = (1, 2)

        def __iter__(self) -> Any:
            raise RuntimeError("camera decoder exploded")

    feeder = CalibrationFeeder(Broken(), FakeDeviceMemory(), tmp_path / "c.cache")
    assert feeder.guarded(feeder.next_pointers, ["x"]) is None
    with pytest.raises(BuildError, match="INT8 calibration failed: RuntimeError: camera decoder exploded"):
        feeder.raise_error()


@pytest.mark.gpu
def test_cuda_device_memory_on_a_real_gpu() -> None:
    """Calibration batches reach real device memory intact (cuda-python or pycuda; skipped without a GPU)."""
    from trt_perception.backends.cuda import select_cuda_api
    from trt_perception.errors import BackendError
    from trt_perception.tools.calibration import CudaDeviceMemory

    try:
        api = select_cuda_api("auto")
        with api.activated():
            api.device_name()
    except BackendError as exc:
        pytest.skip(f"no CUDA binding: {exc}")
    except Exception as exc:  # the bindings raise their own types where no driver/GPU exists
        pytest.skip(f"no usable CUDA GPU: {type(exc).__name__}: {exc}")
    device = CudaDeviceMemory(api)
    batch = np.random.default_rng(0).random((2, 3, 300, 300)).astype(np.float32)
    pointer = device.alloc(batch.nbytes)
    try:
        for scale in (1.0, -2.0):
            device.copy_htod(pointer, batch * scale)
            with api.activated():
                back = api.pinned_empty(batch.nbytes)
                stream = api.stream_create()
                api.memcpy_dtoh_async(back, pointer, stream)
                api.stream_synchronize(stream)
                api.stream_destroy(stream)
                got = back.view(np.float32).reshape(batch.shape).copy()
                api.free_pinned(back)
            np.testing.assert_array_equal(got, batch * scale)
    finally:
        device.free(pointer)
    print(f"\n[{api.name}] calibration buffer round trip of {batch.nbytes} bytes OK")
