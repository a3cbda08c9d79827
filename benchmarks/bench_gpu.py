"""Benchmark 7 (GPU machine only): GPU preprocessing against the CPU path, in the same run.

For each CUDA binding (cuda-python/NVRTC, pycuda), frame size (640x480, 1920x1080 bgr8) and model input:
  * cpu_path: ``Preprocessor`` into a page-locked tensor + its host-to-device copy + sync: what the TensorRT
    backend does per frame without GPU preprocessing (cpu_only: the preprocessing alone; cpu_1t: with one
    OpenCV thread, closer to a Jetson core);
  * gpu: ``GpuPreprocessor`` with its default upload ('auto': only the rows the resize reads when that is
    at most 3/4 of them, gathered into pinned memory in chunks; else one copy from the frame's pageable
    memory) + one kernel + sync; gpu_pinned / gpu_direct: the other upload modes; kernel: the launch alone;
  * h2d: the uint8 frame's own host-to-device copy + sync, from pageable memory (where a message's frame
    lives) and from pinned memory (the bus alone).
Targets: at 1080p, gpu >= 10x faster than cpu_path; at both sizes, gpu within 3x of h2d (pageable).
"""

from __future__ import annotations

from typing import Any, Dict, List

import cv2
import numpy as np
from common import Table, camera_frame, measure, scaled

from trt_perception.images import DecodedImage
from trt_perception.preprocess import Preprocessor
from trt_perception.spec import InputSpec

TARGET_SPEEDUP_1080P = 10.0
TARGET_H2D_FACTOR = 3.0
SIZES = ((640, 480), (1920, 1080))


def model_inputs() -> Dict[str, InputSpec]:
    return {
        "ssd300 NCHW f32": InputSpec(name="Input", height=300, width=300, scale=(2 / 255,) * 3, offset=(-1.0,) * 3),
        "letterbox640 NCHW f16": InputSpec(name="images", height=640, width=640, resize="letterbox", pad_value=114.0,
                                           scale=(1 / 255,) * 3, offset=(0.0,) * 3, dtype="float16"),
        "steer160x120 NHWC f32 crop": InputSpec(name="img_in", height=120, width=160, layout="NHWC",
                                                scale=(1 / 255,) * 3, offset=(0.0,) * 3, crop_top=40),
    }  # fmt: skip


def _apis() -> List[Any]:
    from trt_perception.backends.cuda import select_cuda_api
    from trt_perception.errors import BackendError

    apis = []
    for name in ("cuda-python", "pycuda"):
        try:
            api = select_cuda_api(name)
            with api.activated():
                api.compute_capability()
            apis.append(api)
        except (BackendError, ImportError, RuntimeError, OSError) as exc:
            print(f"[gpu] {name} not usable here: {type(exc).__name__}: {exc}")
        except Exception as exc:  # pycuda's own error types when there is no driver: report and go on
            print(f"[gpu] {name} not usable here: {type(exc).__name__}: {exc}")
    return apis


def run(quick: bool = False) -> Table:
    table = Table(
        "gpu",
        "7. GPU preprocessing vs the CPU path (median us per frame, everything synchronized)",
        ["binding", "frame", "model", "cpu_path_us", "cpu_only_us", "cpu_1t_us", "gpu_us", "gpu_pinned_us",
         "gpu_direct_us", "kernel_us", "h2d_pageable_us", "h2d_pinned_us", "cpu_path/gpu", "gpu/h2d_pageable",
         "gpu/h2d_pinned"],
    )  # fmt: skip
    apis = _apis()
    if not apis:
        table.skipped = "no CUDA GPU with cuda-python or pycuda here (run on the GPU machine)"
        return table
    with apis[0].activated():
        gpu_name = apis[0].device_name()
    for api in apis:
        try:
            _run_api(table, api, quick)
        finally:
            api.close()
    table.notes.append(
        f"GPU: {gpu_name}; OpenCV threads for cpu_path: {cv2.getNumThreads()}. cpu_path = Preprocessor into a "
        "pinned tensor + tensor H2D; gpu = GpuPreprocessor (upload 'auto') + sync; h2d = the whole uint8 frame's copy."
    )
    return table


def _run_api(table: Table, api: Any, quick: bool) -> None:
    with api.activated():
        stream = api.stream_create()
    for width, height in SIZES:
        frame = camera_frame(width, height, seed=width)
        with api.activated():
            frame_device = api.malloc(frame.nbytes)
            frame_pinned = api.pinned_empty(frame.nbytes)
        frame_pinned[:] = frame.reshape(-1)
        try:
            for model, spec in model_inputs().items():
                row = _measure_case(api, stream, frame, frame_device, frame_pinned, spec, quick)
                speedup = row["cpu_path/gpu"]
                within = row["gpu/h2d_pageable"] <= TARGET_H2D_FACTOR
                if height >= 1080:
                    status = speedup >= TARGET_SPEEDUP_1080P and within
                    target = f">={TARGET_SPEEDUP_1080P:g}x cpu_path, <={TARGET_H2D_FACTOR:g}x h2d"
                else:
                    status, target = within, f"<={TARGET_H2D_FACTOR:g}x h2d"
                table.add(status, target=target, binding=api.name, frame=f"{width}x{height}", model=model, **row)
        finally:
            with api.activated():
                api.free(frame_device)
                api.free_pinned(frame_pinned)
    with api.activated():
        api.stream_destroy(stream)


def _measure_case(
    api: Any, stream: Any, frame: np.ndarray, frame_device: int, frame_pinned: np.ndarray, spec: InputSpec,
    quick: bool,
) -> Dict[str, float]:  # fmt: skip
    from trt_perception.gpu_preprocess import GpuPreprocessor

    image = DecodedImage(frame, "bgr")
    nbytes = int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize
    with api.activated():
        tensor_pinned = api.pinned_empty(nbytes)
        tensor_device = api.malloc(nbytes)
    cpu = Preprocessor(spec, out=tensor_pinned.view(np.dtype(spec.dtype)).reshape(spec.shape))
    gpu = GpuPreprocessor(spec, cuda=api, stream=stream)
    gpu_pinned = GpuPreprocessor(spec, cuda=api, stream=stream, upload="pinned")
    gpu_direct = GpuPreprocessor(spec, cuda=api, stream=stream, upload="direct")
    try:

        def cpu_path() -> None:
            cpu(image)
            with api.activated():
                api.memcpy_htod_async(tensor_device, tensor_pinned, stream)
                api.stream_synchronize(stream)

        def gpu_path(g: Any = gpu) -> None:
            g(image)
            g.synchronize()

        def kernel_only() -> None:
            with api.activated():
                gpu.launcher.launch(gpu._kernel, gpu._grid, gpu._packed, stream)
                api.stream_synchronize(stream)

        def h2d(source: np.ndarray) -> Any:
            def copy() -> None:
                with api.activated():
                    api.memcpy_htod_async(frame_device, source, stream)
                    api.stream_synchronize(stream)

            return copy

        contenders = {
            "cpu_path": cpu_path, "cpu_only": lambda: cpu(image), "gpu": gpu_path,
            "gpu_pinned": lambda: gpu_path(gpu_pinned), "gpu_direct": lambda: gpu_path(gpu_direct),
            "kernel": kernel_only,
            "h2d_pageable": h2d(frame), "h2d_pinned": h2d(frame_pinned),
        }  # fmt: skip
        for each in (gpu, gpu_pinned, gpu_direct):  # configure before timing
            gpu_path(each)
        iterations = scaled(quick, 300, 10)
        times = measure(contenders, iterations=iterations, warmup=scaled(quick, 20, 2))
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            one_thread = measure({"cpu": cpu_path}, iterations=iterations, warmup=5)["cpu"]
        finally:
            cv2.setNumThreads(threads)
    finally:
        for each in (gpu, gpu_pinned, gpu_direct):
            each.close()
        with api.activated():
            api.free(tensor_device)
            api.free_pinned(tensor_pinned)
    row = {f"{name}_us": timing.us for name, timing in times.items() if name != "kernel"}
    row.update(kernel_us=times["kernel"].us, cpu_1t_us=one_thread.us)
    row["cpu_path/gpu"] = times["cpu_path"].median / times["gpu"].median
    row["gpu/h2d_pageable"] = times["gpu"].median / times["h2d_pageable"].median
    row["gpu/h2d_pinned"] = times["gpu"].median / times["h2d_pinned"].median
    return row
