"""DonkeyCar pilots of every type as ONNX graphs with DonkeyCar's exact I/O layout, built in code (no Keras),
and a numpy twin of each that runs them the way DonkeyCar's parts do (autorope/donkeycar@cde8bbe9
donkeycar/parts/keras.py), so tests compare trt_perception's pipeline against DonkeyCar's own loop.

The graphs are what tf2onnx leaves of the Keras models (input ``img_in`` [unk,120,160,3] NHWC float x/255,
vector inputs ``mem_in``/``imu_in``/``xbehavior_in`` [unk,n], outputs named after the Keras layers); with
``names="tflite"`` the names are the TFLite converter's (``serving_default_img_in:0``,
``StatefulPartitionedCall:<Keras output index>``, listed in reverse order as a TFLite file can list them).
Their maths is simple and known (brightness features, fixed weights) so a test can predict every output:

- m = mean of the frame (x/255), r = mean of its red channel
- linear: n_outputs0 = 2m - 1, n_outputs1 = r; inferred: n_outputs0 only
- categorical: angle_out [1,15] peaked at bin round(14 m), throttle_out [1,20] at round(19 r)
- imu: out_0 = 2m - 1 + imu . WA, out_1 = r + imu . WT
- memory: n_outputs0 = tanh(mem . wa + 2m - 1), n_outputs1 = sigmoid(mem . wt + r) (weights seeded)
- behavior: angle_out peaked at bin one_hot . [3, 11], throttle_out at round(19 r)
- localizer: angle = 2m - 1, throttle = r, zloc [1,K] peaked at round((K-1) m)
- rnn / 3d: [1,2] = (m_newest - m_oldest, mean of the frame means)
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
H, W = 120, 160
WA_IMU = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.01], np.float32)  # gyro z (deg/s) steers
WT_IMU = np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32)  # accel x (m/s^2) throttles
BEHAVIOR_BINS = np.array([3.0, 11.0], np.float32)  # Left_Lane -> angle bin 3, Right_Lane -> bin 11


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name + "_v"))


def _vec(name: str, size: Any) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["unk__1", size])


class _Graph:
    """A small builder: features of img_in and named heads."""

    def __init__(self, sequence: int = 0, height: int = H, width: int = W, channels: int = 3) -> None:
        self.nodes: List[onnx.NodeProto] = []
        self.inputs: List[onnx.ValueInfoProto] = []
        self.outputs: List[onnx.ValueInfoProto] = []
        shape: List[Any] = ["unk__0", height, width, channels]
        if sequence:
            shape = ["unk__0", sequence, height, width, channels]
        self.image = "img_in"
        self.inputs.append(helper.make_tensor_value_info(self.image, TensorProto.FLOAT, shape))
        self.sequence = sequence
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def add(self, op: str, inputs: Sequence[str], **attrs: Any) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def const(self, array: Any) -> str:
        name = self.name("c")
        self.nodes.append(_const(name, np.asarray(array, np.float32) if not isinstance(array, np.ndarray) else array))
        return name

    def column(self, value: str) -> str:
        """[B] -> [B, 1]."""
        return self.add("Reshape", [value, self.const(np.array([-1, 1], np.int64))])

    def mean(self) -> str:
        axes = [1, 2, 3] if not self.sequence else [1, 2, 3, 4]
        return self.add("ReduceMean", [self.image], axes=axes, keepdims=0)

    def red(self) -> str:
        axis = 3 if not self.sequence else 4
        red = self.add("Slice", [self.image, self.const(np.array([0], np.int64)), self.const(np.array([1], np.int64)),
                                 self.const(np.array([axis], np.int64))])
        axes = [1, 2, 3] if not self.sequence else [1, 2, 3, 4]
        return self.add("ReduceMean", [red], axes=axes, keepdims=0)

    def peaked(self, center_col: str, bins: int) -> str:
        """softmax(-10 |i - center|) over ``bins``: argmax = round(center)."""
        grid = self.const(np.arange(bins, dtype=np.float32)[None])
        dist = self.add("Abs", [self.add("Sub", [grid, center_col])])
        return self.add("Softmax", [self.add("Mul", [dist, self.const(-10.0)])], axis=-1)

    def output(self, value: str, name: str, size: int) -> None:
        self.nodes.append(helper.make_node("Identity", [value], [name]))
        self.outputs.append(_vec(name, size))

    def save(self, path: Path, name: str) -> Path:
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        return path


def memory_weights(length: int) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return (rng.uniform(-0.8, 0.8, 2 * length).astype(np.float32),
            rng.uniform(-0.8, 0.8, 2 * length).astype(np.float32))


TFLITE_OUT = "StatefulPartitionedCall:{}"


def donkey_model(folder: Path, kind: str, *, length: int = 3, locations: int = 8, behaviors: int = 2,
                 names: str = "keras", height: int = H, width: int = W, channels: int = 3,
                 file_name: Optional[str] = None) -> Path:
    """``<kind>.onnx`` (or ``file_name``) in ``folder``: a DonkeyCar pilot of ``kind`` as tf2onnx writes it."""
    sequence = length if kind in ("rnn", "3d") else 0
    g = _Graph(sequence, height, width, channels)
    out_names: List[Tuple[str, str, int]] = []  # (value, keras name, size)
    m = g.column(g.mean())
    r = g.column(g.red())
    two_m_1 = g.add("Sub", [g.add("Mul", [m, g.const(2.0)]), g.const(1.0)])
    if kind in ("linear", "inferred"):
        out_names.append((two_m_1, "n_outputs0", 1))
        if kind == "linear":
            out_names.append((r, "n_outputs1", 1))
    elif kind == "categorical":
        out_names.append((g.peaked(g.add("Mul", [m, g.const(14.0)]), 15), "angle_out", 15))
        out_names.append((g.peaked(g.add("Mul", [r, g.const(19.0)]), 20), "throttle_out", 20))
    elif kind == "imu":
        g.inputs.append(_vec("imu_in", 6))
        a = g.add("Add", [two_m_1, g.add("MatMul", ["imu_in", g.const(WA_IMU[:, None])])])
        t = g.add("Add", [r, g.add("MatMul", ["imu_in", g.const(WT_IMU[:, None])])])
        out_names += [(a, "out_0", 1), (t, "out_1", 1)]
    elif kind == "memory":
        g.inputs.append(_vec("mem_in", 2 * length))
        wa, wt = memory_weights(length)
        a = g.add("Tanh", [g.add("Add", [g.add("MatMul", ["mem_in", g.const(wa[:, None])]), two_m_1])])
        t = g.add("Sigmoid", [g.add("Add", [g.add("MatMul", ["mem_in", g.const(wt[:, None])]), r])])
        out_names += [(a, "n_outputs0", 1), (t, "n_outputs1", 1)]
    elif kind == "behavior":
        g.inputs.append(_vec("xbehavior_in", behaviors))
        bins = np.arange(behaviors, dtype=np.float32) * 8.0 + 3.0
        center = g.add("MatMul", ["xbehavior_in", g.const(bins[:, None])])
        out_names.append((g.peaked(center, 15), "angle_out", 15))
        out_names.append((g.peaked(g.add("Mul", [r, g.const(19.0)]), 20), "throttle_out", 20))
    elif kind == "localizer":
        out_names += [(two_m_1, "angle", 1), (r, "throttle", 1)]
        out_names.append((g.peaked(g.add("Mul", [m, g.const(float(locations - 1))]), locations), "zloc", locations))
    elif kind in ("rnn", "3d"):
        frame_means = g.add("ReduceMean", [g.image], axes=[2, 3, 4], keepdims=0)  # [B, S]
        weights = np.zeros((length, 2), np.float32)
        weights[-1, 0], weights[0, 0] = 1.0, -1.0
        weights[:, 1] = 1.0 / length
        if length == 1:
            weights[0, 0] = 0.0
        combined = g.add("MatMul", [frame_means, g.const(weights)])
        out_names.append((combined, "model_outputs" if kind == "rnn" else "outputs", 2))
    else:
        raise ValueError(kind)
    for index, (value, keras_name, size) in enumerate(out_names):
        g.output(value, TFLITE_OUT.format(index) if names == "tflite" else keras_name, size)
    if names == "tflite":
        g.outputs.reverse()  # TFLite lists outputs in its own order; ':<i>' keeps the Keras index
    if names == "tflite":
        for value_info in g.inputs:
            old = value_info.name
            value_info.name = f"serving_default_{old}:0"
            for node in g.nodes:
                node.input[:] = [value_info.name if i == old else i for i in node.input]
        g.image = g.inputs[0].name
    path = folder / (file_name or f"{kind}.onnx")
    return g.save(path, kind)


# ------------------------------------------------------------------------------------ DonkeyCar's loop


def features(rgb: np.ndarray) -> Tuple[float, float]:
    """(m, r) of an RGB uint8 frame as DonkeyCar normalizes it (utils.normalize_image: x * 1/255)."""
    x = rgb.astype(np.float64) * (1.0 / 255.0)
    return float(x.mean()), float(x[..., 0].mean())


def donkey_throttle(angle: float) -> float:
    """utils.throttle, utils.py:387-396 (written out again here, independently of trt_perception)."""
    magnitude = (min(max(angle, -1.0), 1.0) + 1.0) / 2.0
    return (1 / math.exp(magnitude * 0.5)) - 0.05 * magnitude


def linear_unbin(arr: np.ndarray, n: int = 15, offset: float = -1.0, r: float = 2.0) -> float:
    """utils.linear_unbin, utils.py:300-308."""
    return float(np.argmax(arr) * (r / (n + offset)) + offset)


def _peak(center: float, bins: int) -> np.ndarray:
    logits = -10.0 * np.abs(np.arange(bins) - center)
    e = np.exp(logits - logits.max())
    return e / e.sum()


class DonkeyLoop:
    """A pilot of ``kind`` as DonkeyCar's KerasPilot subclasses run it, frame after frame: ``run(rgb, *other)``
    returns what DonkeyCar's part returns (angle, throttle[, loc]) for the same graph maths."""

    def __init__(self, kind: str, length: int = 3, throttle_range: float = 0.8, locations: int = 8,
                 mem_start_speed: float = 0.0) -> None:
        self.kind = kind
        self.length = length
        self.throttle_range = throttle_range
        self.locations = locations
        self.mem_seq = deque([[0.0, mem_start_speed]] * length)  # keras.py:374
        self.img_seq: deque = deque()  # keras.py:635

    def run(self, rgb: np.ndarray, *other: Any) -> Tuple[Any, ...]:
        m, r = features(rgb)
        kind = self.kind
        if kind == "linear":
            return 2 * m - 1, r
        if kind == "inferred":
            angle = 2 * m - 1
            return angle, donkey_throttle(angle)  # keras.py:463-465
        if kind == "categorical":  # keras.py:288-294
            throttle_binned = _peak(19 * r, 20)
            return linear_unbin(_peak(14 * m, 15)), linear_unbin(throttle_binned, n=len(throttle_binned), offset=0.0,
                                                                   r=self.throttle_range)
        if kind == "imu":
            imu = np.asarray(other[0], np.float64)
            return 2 * m - 1 + float(imu @ WA_IMU), r + float(imu @ WT_IMU)
        if kind == "memory":  # keras.py:395-412
            mem = np.array(self.mem_seq).reshape((2 * self.length,))
            wa, wt = memory_weights(self.length)
            angle = math.tanh(float(mem @ wa) + 2 * m - 1)
            throttle = 1.0 / (1.0 + math.exp(-(float(mem @ wt) + r)))
            self.mem_seq.popleft()
            self.mem_seq.append([angle, throttle])
            return angle, throttle
        if kind == "behavior":
            one_hot = np.asarray(other[0], np.float64)
            center = float(one_hot @ (np.arange(one_hot.size) * 8.0 + 3.0))
            throttle_binned = _peak(19 * r, 20)
            return linear_unbin(_peak(center, 15)), linear_unbin(throttle_binned, n=20, offset=0.0,
                                                                 r=self.throttle_range)
        if kind == "localizer":  # keras.py:599-603
            return 2 * m - 1, r, int(np.argmax(_peak((self.locations - 1) * m, self.locations)))
        if kind in ("rnn", "3d"):  # keras.py:671-684 / 748-761
            while len(self.img_seq) < self.length:
                self.img_seq.append(rgb)
            self.img_seq.popleft()
            self.img_seq.append(rgb)
            means = [features(img)[0] for img in self.img_seq]
            return means[-1] - means[0], float(np.mean(means))
        raise ValueError(kind)


Frame = Callable[[int], np.ndarray]


def frames(count: int, seed: int = 0, height: int = H, width: int = W) -> List[np.ndarray]:
    """RGB uint8 frames whose brightness and redness vary frame to frame."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        base = rng.integers(0, 256, 3)
        image = np.empty((height, width, 3), np.uint8)
        image[...] = base
        noise = rng.integers(-20, 21, (height, width, 1))
        out.append(np.clip(image.astype(np.int32) + noise, 0, 255).astype(np.uint8))
    return out


def database_entry(name: str, pilot: str, model_type: str, config: Dict[str, Any]) -> Dict[str, Any]:
    """One models/database.json entry as DonkeyCar's training writes it (pipeline/training.py:187-198)."""
    return {"Number": 0, "Name": name, "Pilot": pilot, "Type": model_type, "Tubs": "data/tub_1",
            "Time": 1714557600.0, "History": {"loss": [0.1]}, "Transfer": None, "Comment": None, "Config": config}


# ------------------------------------------------------------------------------------------ running heads


def run_head(head: Any, image: Any, now: float) -> Any:
    """``head.run(image, now)``: the task's extra inputs go with the frame."""
    return head.run(image, now)


def imu_message(accel: Sequence[float], gyro_rad: Sequence[float]) -> Any:
    """A sensor_msgs/Imu look-alike (rclpy and rosbags messages have these attributes)."""
    from types import SimpleNamespace

    def vec(v: Sequence[float]) -> Any:
        return SimpleNamespace(x=float(v[0]), y=float(v[1]), z=float(v[2]))

    return SimpleNamespace(linear_acceleration=vec(accel), angular_velocity=vec(gyro_rad),
                           orientation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0))


def convert_pilot(folder: Path, kind: str, *extra_args: str, **model_kwargs: Any) -> Path:
    """``trt-perception convert`` (the CLI path) on a DonkeyCar graph of ``kind``: returns the converted ONNX."""
    import argparse

    pytest.importorskip("onnx_graphsurgeon", reason="convert finishes DonkeyCar graphs with onnx-graphsurgeon "
                        "(the test extra has it; a ROS workspace may not)")
    from trt_perception.tools import convert

    source = donkey_model(folder, kind, file_name=f"{kind}_keras.onnx", **model_kwargs)
    parser = argparse.ArgumentParser()
    convert.add_convert_arguments(parser)
    out = folder / f"{kind}.onnx"
    assert convert.run_convert(parser.parse_args([str(source), "-o", str(out), *extra_args])) == 0
    return out
