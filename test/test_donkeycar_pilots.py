"""Every DonkeyCar pilot type end to end: a graph in DonkeyCar's exact I/O layout (donkey_factory), converted by
`trt-perception convert`, opened as a head, run frame by frame, and compared with DonkeyCar's own loop (the
numpy twin of its KerasPilot.run). Memory feedback, IMU staleness, sequence warm-up, behavior switching and the
restarts on disable / stop / clock jumps are driven by a fake clock (the ``now`` of each frame)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, List

import numpy as np
import onnx
import pytest
import yaml
from donkey_factory import (
    DonkeyLoop,
    convert_pilot,
    donkey_model,
    frames,
    imu_message,
    run_head,
)

from trt_perception.errors import SpecError
from trt_perception.heads import open_model
from trt_perception.images import DecodedImage
from trt_perception.outputs.steering import LocalizedSteering
from trt_perception.pipeline import ModelPipeline
from trt_perception.safety import REASON_DISABLED, REASON_STALE_INPUT

DRIVE = {"drive_enabled": True, "throttle_mode": "model", "watchdog_timeout": 0.0}
PERIOD = 0.05
GYRO_RAD = (0.5, -0.25, 1.5)
ACCEL = (0.4, -0.2, 9.81)


def _image(rgb: np.ndarray) -> DecodedImage:
    return DecodedImage(rgb, "rgb")


def _imu_vector() -> List[float]:
    return list(ACCEL) + list(np.degrees(GYRO_RAD))  # DonkeyCar's imu_array: m/s^2 and deg/s


@pytest.mark.parametrize("kind", ["linear", "categorical", "inferred", "imu", "memory", "behavior", "localizer",
                                  "rnn", "3d"])
def test_every_pilot_type_drives_like_donkeycar(tmp_path: Path, kind: str) -> None:
    length = 20 if kind == "3d" else 3
    model = convert_pilot(tmp_path, kind, length=length)
    head = open_model(model, values=DRIVE)
    loop = DonkeyLoop(kind, length=length, throttle_range=0.8)
    other: List[Any] = []
    if kind == "imu":
        other = [_imu_vector()]
    elif kind == "behavior":
        other = [[1.0, 0.0]]  # BehaviorPart starts at state 0
    for i, rgb in enumerate(frames(8, seed=11)):
        now = 1.0 + i * PERIOD
        if kind == "imu":
            head.task.on_message("imu", imu_message(ACCEL, GYRO_RAD), now - 0.01)
        output = run_head(head, _image(rgb), now)
        expected = loop.run(rgb, *other)
        assert output.result.angle == pytest.approx(expected[0], abs=2e-5), (kind, i)
        assert output.result.throttle == pytest.approx(expected[1], abs=2e-5), (kind, i)
        assert not output.command.stop, output.command.reason
        if kind == "localizer":
            assert isinstance(output.result, LocalizedSteering) and output.result.location == expected[2]


def _memory_head(tmp_path: Path, **values: Any) -> Any:
    return open_model(convert_pilot(tmp_path, "memory", length=3), values={**DRIVE, **values})


def _outputs(head: Any, rgbs: List[np.ndarray], t0: float) -> np.ndarray:
    """(angle, throttle) the model said for each frame, frames ``PERIOD`` apart from ``t0``."""
    return np.array([(o.result.angle, o.result.throttle) for o in
                     (run_head(head, _image(rgb), t0 + i * PERIOD) for i, rgb in enumerate(rgbs))])


def _close(actual: np.ndarray, expected: Any, tol: float = 2e-5) -> None:
    np.testing.assert_allclose(actual, np.asarray(expected, np.float64)[:, :2], atol=tol, rtol=0)


def test_memory_feeds_back_raw_outputs_oldest_first(tmp_path: Path) -> None:
    head = _memory_head(tmp_path, max_steering=0.1, max_throttle=0.1, throttle_mode="capped")
    memory = head.task.inputs.memory.array
    np.testing.assert_array_equal(memory, np.zeros((1, 6), np.float32))  # [0, mem_start_speed] x 3
    said = _outputs(head, frames(4, seed=2), 1.0)
    # the last three RAW outputs (the limits clamp the commands, not the memory), oldest first
    np.testing.assert_allclose(memory[0], said[1:].reshape(-1), rtol=1e-6)
    command = run_head(head, _image(frames(1, seed=9)[0]), 2.0).command
    assert abs(command.steering) <= 0.1 and command.throttle <= 0.1


def test_memory_restarts_on_disable_stop_and_clock_jump(tmp_path: Path) -> None:
    rgbs = frames(6, seed=5)
    cold = DonkeyLoop("memory")
    fresh = [cold.run(rgb) for rgb in rgbs]  # DonkeyCar's loop from a cold start
    head = _memory_head(tmp_path)
    task = head.task
    _outputs(head, rgbs[:4], 10.0)
    # the pilot switched off: frames still run (stops not published) and the memory stays at its start
    task.set_enabled(False, 10.3)
    out = run_head(head, _image(rgbs[4]), 10.35)
    assert out.command.stop and out.command.reason == REASON_DISABLED
    np.testing.assert_array_equal(task.inputs.memory.array, np.zeros((1, 6), np.float32))
    task.set_enabled(True, 10.4)
    _close(_outputs(head, rgbs[:2], 10.45), fresh[:2])  # as after a cold start
    # a watchdog stop between frames (another thread): the next frame starts afresh
    task.safety.update_config(task.safety.config.__class__(**{**task.safety.config.__dict__, "watchdog_timeout": 0.2}))
    assert task.safety.check_watchdog(11.0) is not None
    _close(_outputs(head, rgbs[:2], 11.05), fresh[:2])
    # the clock jumps back (a looping bag on sim time): the memory of the lap before is dropped
    _outputs(head, rgbs[2:4], 11.15)
    _close(_outputs(head, rgbs[:3], 0.5), fresh[:3])


def test_imu_staleness_is_a_stop_with_its_reason(tmp_path: Path) -> None:
    head = open_model(convert_pilot(tmp_path, "imu"), values=DRIVE)
    task = head.task
    assert task.accepts_topics() == [("imu", "Imu")]
    rgb = frames(1)[0]
    out = run_head(head, _image(rgb), 1.0)
    assert out.command.stop and out.command.reason == f"{REASON_STALE_INPUT}: imu_in: no sensor_msgs/Imu on 'imu' yet"
    task.on_message("imu", imu_message(ACCEL, GYRO_RAD), 1.0)
    out = run_head(head, _image(rgb), 1.2)
    assert not out.command.stop
    assert out.result.angle == pytest.approx(DonkeyLoop("imu").run(rgb, _imu_vector())[0], abs=2e-5)
    out = run_head(head, _image(rgb), 1.3)  # 0.30 s after the last IMU message; max_age 0.25 s
    assert out.command.stop
    stale = f"{REASON_STALE_INPUT}: imu_in: no sensor_msgs/Imu on 'imu' for 0.30 s (max_age 0.25 s)"
    assert out.command.reason == stale
    task.on_message("/imu", imu_message(ACCEL, (0.0, 0.0, 0.0)), 1.35)  # the node may pass the resolved name
    assert not run_head(head, _image(rgb), 1.4).command.stop
    assert task.inputs.imu.array[0, 5] == 0.0
    task.on_message("imu", SimpleNamespace(data="not an imu"), 1.41)  # counted, the last good one kept
    assert not run_head(head, _image(rgb), 1.45).command.stop
    run_head(head, _image(rgb), 0.2)  # the clock jumped back: the last IMU's age means nothing now
    assert run_head(head, _image(rgb), 0.25).command.reason.endswith("yet")
    values = task.diagnostics(None)
    assert values["stale_input_stops"] == 4 and values["imu_messages"] == 2 and "imu_bad_messages" in values


def test_sequence_warm_up_repeats_the_first_frame_and_restarts(tmp_path: Path) -> None:
    head = open_model(convert_pilot(tmp_path, "rnn", length=3), values=DRIVE)
    pipeline = head.pipeline
    ring = pipeline.sequence.ring
    rgbs = frames(7, seed=4)
    cold = DonkeyLoop("rnn")
    fresh = [cold.run(rgb) for rgb in rgbs[:3]]
    outputs = _outputs(head, rgbs[:3], 1.0)
    assert outputs[0][0] == pytest.approx(0.0, abs=1e-6)  # the first frame x 3: DonkeyCar answers at once
    _close(outputs, fresh)
    fed = pipeline._feed["img_in"]
    assert any(fed is view for view in pipeline.sequence.views) and pipeline.sequence.ring is ring  # no new buffers
    assert fed.shape == (1, 3, 120, 160, 3) and fed.flags.c_contiguous
    _outputs(head, rgbs[3:5], 1.15)
    head.task.set_enabled(False, 1.3)
    head.task.set_enabled(True, 1.31)
    _close(_outputs(head, rgbs[:3], 1.35), fresh)  # the sequence starts afresh


def test_behavior_from_topic_and_param(tmp_path: Path) -> None:
    head = open_model(convert_pilot(tmp_path, "behavior"), values=DRIVE)
    task = head.task
    assert task.accepts_topics() == [("behavior", "String")]
    rgb = frames(1)[0]

    def angle(now: float) -> float:
        return run_head(head, _image(rgb), now).result.angle

    assert angle(1.0) == pytest.approx(3 * 2 / 14 - 1)  # behavior_0 (the default): bin 3
    task.on_message("behavior", SimpleNamespace(data="behavior_1"), 1.01)
    assert angle(1.05) == pytest.approx(11 * 2 / 14 - 1)
    task.on_message("behavior", SimpleNamespace(data="Middle_Lane"), 1.06)  # unknown: kept, counted
    assert angle(1.1) == pytest.approx(11 * 2 / 14 - 1)
    assert "Middle_Lane" in task.diagnostics(None)["behavior_rejected"]
    assert task.check_change({**task.values, "behavior": "nope"}) == (
        "steering.behavior is 'nope'; expected one of ['behavior_0', 'behavior_1'] (or '')")
    task.apply({**task.values, "behavior": "behavior_0"})
    assert angle(1.15) == pytest.approx(3 * 2 / 14 - 1)
    linear = open_model(convert_pilot(tmp_path, "linear"), values=DRIVE)
    assert "takes no behavior input" in linear.task.check_change({**linear.task.values, "behavior": "x"})


def test_behavior_labels_from_the_car_config(tmp_path: Path) -> None:
    (tmp_path / "myconfig.py").write_text("BEHAVIOR_LIST = ['Left_Lane', 'Right_Lane']\n"
                                          "MODEL_CATEGORICAL_MAX_THROTTLE_RANGE = 0.5\n")
    model = convert_pilot(tmp_path, "behavior", "--donkey-config", str(tmp_path / "myconfig.py"))
    head = open_model(model, values={**DRIVE, "behavior": "Right_Lane"})
    rgb = frames(1)[0]
    out = run_head(head, _image(rgb), 1.0)
    assert out.result.angle == pytest.approx(11 * 2 / 14 - 1)
    assert out.result.throttle == pytest.approx(DonkeyLoop("behavior", throttle_range=0.5).run(rgb, [0, 1])[1])


def test_localizer_publishes_its_segment(tmp_path: Path) -> None:
    from trt_perception.messages import MessageTypes, make_header
    from trt_perception.rosbag_types import get_typestore

    head = open_model(convert_pilot(tmp_path, "localizer", locations=8), values=DRIVE, name="pilot")
    task = head.task
    assert [(t.role, t.name, t.type) for t in task.topics("")] == [
        ("command", "cmd_vel", "Twist"), ("location", "location", "Classification")]
    assert [t.name for t in task.topics("pilot/")] == ["cmd_vel", "pilot/location"]
    store = get_typestore("humble")
    types = MessageTypes.from_typestore(store)
    rgb = frames(1, seed=3)[0]
    output = run_head(head, _image(rgb), 1.0)
    header = make_header(types, 12, 34, "camera")
    messages = dict(task.messages(types, header, output))
    location = messages["location"]
    assert location.header.stamp.sec == 12 and location.header.frame_id == "camera"
    assert location.results[0].class_id == str(DonkeyLoop("localizer").run(rgb)[2])
    assert 0.0 < location.results[0].score <= 1.0
    store.serialize_cdr(location, "vision_msgs/msg/Classification")  # a real vision_msgs message
    task.set_enabled(False, 1.1)
    off = dict(task.messages(types, header, run_head(head, _image(rgb), 1.2)))
    assert set(off) == {"location"}  # located while not driving; the disabled stop is not sent
    assert task.diagnostics(output)["location"] == output.result.location


def test_undeclared_and_unfed_inputs_are_refused(tmp_path: Path) -> None:
    source = donkey_model(tmp_path, "memory")
    spec = {"task": "steering", "input": {"name": "img_in", "height": 120, "width": 160, "layout": "NHWC",
                                          "scale": 1 / 255},
            "output": {"format": "steering_linear", "tensors": {"angle": "n_outputs0", "throttle": "n_outputs1"}}}
    (tmp_path / "memory.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match=r"model input 'mem_in' \[.*6\] is not fed.*source: memory, length: 3"):
        ModelPipeline.open(source)
    spec["inputs"] = {"mem_in": {"source": "memory", "length": 2}}
    (tmp_path / "memory.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="holds 4 values.*set inputs.mem_in.length to half"):
        ModelPipeline.open(source)
    spec["inputs"] = {"mem_in": {"source": "memory", "length": 3}, "extra": {"source": "imu"}}
    (tmp_path / "memory.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match=r"spec inputs \['extra'\] name no model input"):
        ModelPipeline.open(source)
    del spec["inputs"]["extra"]
    (tmp_path / "memory.yaml").write_text(yaml.safe_dump(spec))
    pipeline = ModelPipeline.open(source)
    with pytest.raises(SpecError, match=r"model inputs mem_in \(memory\) need values every frame"):
        pipeline.run(_image(frames(1)[0]))
    assert pipeline.describe()["inputs"] == "mem_in (memory)"


def test_sequence_size_mismatch_names_input_sequence(tmp_path: Path) -> None:
    model = convert_pilot(tmp_path, "3d", length=4)
    spec = yaml.safe_load(model.with_suffix(".yaml").read_text())
    spec["input"]["sequence"] = 5
    model.with_suffix(".yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="a sequence of 5 frames.*input.layout/height/width/color/sequence"):
        ModelPipeline.open(model)
    del spec["input"]["sequence"]
    model.with_suffix(".yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="a 5-D input holds a frame sequence: set input.sequence"):
        ModelPipeline.open(model)


def test_head_run_feeds_the_task_inputs(tmp_path: Path) -> None:
    head = open_model(convert_pilot(tmp_path, "memory"), values=DRIVE)
    rgbs = frames(3)
    loop = DonkeyLoop("memory")
    for i, rgb in enumerate(rgbs):
        assert head.run(_image(rgb), 1.0 + i * PERIOD).result.angle == pytest.approx(loop.run(rgb)[0], abs=2e-5)


def test_converted_graphs_keep_donkeycar_names(tmp_path: Path) -> None:
    model = onnx.load(str(convert_pilot(tmp_path, "imu", names="tflite")))
    assert [i.name for i in model.graph.input] == ["img_in", "imu_in"]
    assert sorted(o.name for o in model.graph.output) == ["angle", "throttle"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


# ---------------------------------------------------------------------- on the TensorRT backend (doubles)


def _register_donkey_programs() -> None:
    from donkey_factory import memory_weights
    from fakes.tensorrt_fake import PROGRAMS, register_program

    if "donkey.memory" in PROGRAMS:
        return

    @register_program("donkey.memory")
    def _memory(inputs: Any, outputs: Any, params: Any) -> Any:  # the graph of donkey_model(kind="memory")
        image, mem = inputs["img_in"].astype(np.float64), inputs["mem_in"].astype(np.float64)
        wa, wt = memory_weights(mem.shape[-1] // 2)
        m, r = image.mean(), image[..., 0].mean()
        angle = np.tanh(mem[0] @ wa + 2 * m - 1)
        throttle = 1 / (1 + np.exp(-(mem[0] @ wt + r)))
        return {"angle": np.full((1, 1), angle, np.float32), "throttle": np.full((1, 1), throttle, np.float32)}

    @register_program("donkey.rnn")
    def _rnn(inputs: Any, outputs: Any, params: Any) -> Any:  # the graph of donkey_model(kind="rnn")
        means = inputs["img_in"].astype(np.float64).reshape(inputs["img_in"].shape[1], -1).mean(axis=1)
        return {"combined": np.array([[means[-1] - means[0], means.mean()]], np.float32)}


@pytest.mark.parametrize("kind", ["memory", "rnn"])
def test_memory_and_sequence_pilots_on_the_tensorrt_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            kind: str) -> None:
    """The engine's pinned host buffers take the task's arrays and the sequence view (copied by infer)."""
    from fakes.tensorrt_fake import make_plan
    from yolo_factory import install_tensorrt

    _register_donkey_programs()
    gpu = install_tensorrt(monkeypatch)
    onnx_path = convert_pilot(tmp_path, kind)
    tensors = [{"name": i.name, "mode": "input", "shape": [d.dim_value for d in i.type.tensor_type.shape.dim]}
               for i in onnx.load(str(onnx_path)).graph.input]
    tensors += [{"name": n, "mode": "output", "shape": [1, 2 if n == "combined" else 1]}
                for n in (("combined",) if kind == "rnn" else ("angle", "throttle"))]
    engine = tmp_path / f"{kind}.engine"
    engine.write_bytes(make_plan(tensors, compute_capability=gpu.compute_capability, program=f"donkey.{kind}"))
    (tmp_path / f"{kind}.engine.yaml").write_text(onnx_path.with_suffix(".yaml").read_text())
    head = open_model(engine, values=DRIVE)
    assert head.describe()["backend"] == "tensorrt"
    rgbs = frames(5, seed=6)
    loop = DonkeyLoop(kind)
    _close(_outputs(head, rgbs, 1.0), [loop.run(rgb) for rgb in rgbs])
