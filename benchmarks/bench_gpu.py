"""Benchmark 7 (GPU machine only): GPU preprocessing against the CPU path, in the same run.

For each CUDA binding (cuda-python/NVRTC, pycuda), frame size (640x480, 1920x1080 bgr8) and model input:
  * cpu_path: ``Preprocessor`` into a page-locked tensor + its host-to-device copy + sync: what the TensorRT
    backend does per frame without GPU preprocessing (cpu_only: the preprocessing alone; cpu_1t: with one
    OpenCV thread, closer to a Jetson core);
  * gpu: ``GpuPreprocessor`` with its default upload ('auto': only the rows the resize reads when that is
    at most 3/4 of them, gathered into pinned memory in chunks; else one copy from the frame's pageable
    memory) + one kernel + sync; gpu_pinned / gpu_direct: the other upload modes; kernel_sync: one launch of
    the kernel on data already on the GPU + the stream's sync (no upload; launch and sync are most of it);
  * h2d: the uint8 frame's own host-to-device copy + sync, from pageable memory (where a message's frame
    lives) and from pinned memory (the bus alone).
Per contender the median; for cpu_path and gpu also the IQR (p75 - p25).
Targets: at 1080p, gpu >= 10x faster than cpu_path; at both sizes, gpu within 3x of the frame's pinned H2D copy
(the bus alone: what a copy can cost at best; the pageable copy's ratio is shown beside it).

``run_jpeg`` (benchmark 7b, ``python benchmarks/bench_gpu.py --jpeg``): compressed JPEG frame -> engine input
in device memory, 640x480 / 1280x720 / 1920x1080, one JPEG (q90, 4:2:0, camera-like content) per size:
  * cpu: ``decode_compressed`` (cv2.imdecode) + ``Preprocessor`` into a pinned tensor + H2D + sync: the
    path without GPU decoding; cpu_gpupre: cv2.imdecode + ``GpuPreprocessor`` (uploads the frame) + sync;
  * gpu: ``FrameDecoder`` with ``GpuJpegDecoder`` (nvImageCodec decode into a device buffer on its own
    stream + sync) + ``GpuPreprocessor`` reading that buffer in place + sync; nvdec: the decode + sync alone,
    per nvImageCodec backend
    (hardware JPEG engine, CUDA, hybrid CPU Huffman); imdecode: cv2.imdecode alone; kernel: the kernel on
    the decoded device frame, launch + sync included;
  * max_px_diff: max |GPU-decoded pixel - cv2.imdecode pixel| (levels); max_in_diff: the same for the engine
    input tensor, in pixel levels (|diff| / scale).
Per contender: median and IQR (p75 - p25) of per-call times, and frames/s from total time over frames.
Target: at 1920x1080, gpu >= 5x the cpu path's frames/s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

if __name__ == "__main__":  # run directly: benchmarks/ and the repo importable as run.py makes them
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from common import Table, Timing, camera_frame, measure, scaled

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
        ["binding", "frame", "model", "cpu_path_us", "cpu_path_iqr", "cpu_only_us", "cpu_1t_us", "gpu_us",
         "gpu_iqr", "gpu_pinned_us", "gpu_direct_us", "kernel_sync_us", "h2d_pageable_us", "h2d_pinned_us",
         "cpu_path/gpu", "gpu/h2d_pinned", "gpu/h2d_pageable"],
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
        "pinned tensor + tensor H2D; gpu = GpuPreprocessor (upload 'auto') + sync; kernel_sync = one launch + sync, no "
        "upload; h2d = the whole uint8 frame's copy; graded against the pinned copy (the bus alone)."
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
                within = row["gpu/h2d_pinned"] <= TARGET_H2D_FACTOR
                if height >= 1080:
                    status = speedup >= TARGET_SPEEDUP_1080P and within
                    target = f">={TARGET_SPEEDUP_1080P:g}x cpu_path, <={TARGET_H2D_FACTOR:g}x h2d_pinned"
                else:
                    status, target = within, f"<={TARGET_H2D_FACTOR:g}x h2d_pinned"
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

        def kernel_sync() -> None:
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
            "kernel_sync": kernel_sync,
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
    row = {f"{name}_us": timing.us for name, timing in times.items()}
    row.update(cpu_1t_us=one_thread.us, cpu_path_iqr=times["cpu_path"].iqr * 1e6, gpu_iqr=times["gpu"].iqr * 1e6)
    row["cpu_path/gpu"] = times["cpu_path"].median / times["gpu"].median
    row["gpu/h2d_pageable"] = times["gpu"].median / times["h2d_pageable"].median
    row["gpu/h2d_pinned"] = times["gpu"].median / times["h2d_pinned"].median
    return row


# ------------------------------------------------------------------------------------------- 7b: JPEG


TARGET_JPEG_SPEEDUP_1080P = 5.0
JPEG_SIZES = ((640, 480), (1280, 720), (1920, 1080))
JPEG_MODELS = ("letterbox640 NCHW f16", "ssd300 NCHW f32")


def _stats(timing: Timing) -> Dict[str, float]:
    """Median and IQR in microseconds, and frames/s from the total time over all timed frames."""
    samples = np.asarray(timing.samples)
    p25, p75 = np.percentile(samples, [25, 75])
    return {"us": float(np.median(samples)) * 1e6, "iqr": float(p75 - p25) * 1e6,
            "fps": len(samples) / float(samples.sum())}  # fmt: skip


def run_jpeg(quick: bool = False) -> Table:
    table = Table(
        "gpu_jpeg",
        "7b. Compressed JPEG -> engine input on the GPU: nvImageCodec + kernel vs cv2.imdecode + preprocessing "
        "(median us [IQR], frames/s from total time; every contender synchronized)",
        ["frame", "model", "jpeg_kb", "cpu_us", "cpu_iqr", "cpu_fps", "cpu_gpupre_us", "cpu_gpupre_fps", "gpu_us",
         "gpu_iqr", "gpu_fps", "imdecode_us", "nvdec_us", "nvdec_hw_us", "nvdec_cuda_us",
         "nvdec_hybrid_us", "kernel_us", "speedup_fps", "speedup_vs_gpupre", "max_px_diff", "max_in_diff"],
    )  # fmt: skip
    from trt_perception.errors import BackendError
    from trt_perception.gpu_decode import FrameDecoder, GpuJpegDecoder

    apis = _apis()
    if not apis:
        table.skipped = "no CUDA GPU with cuda-python or pycuda here (run on the GPU machine)"
        return table
    api = apis[0]
    for other in apis[1:]:
        other.close()
    try:
        decoders = {"all": GpuJpegDecoder(cuda=api)}
    except BackendError as exc:
        api.close()
        table.skipped = f"no GPU JPEG decoding here: {exc}"
        return table
    for name, kinds in (("hw", ("hardware",)), ("cuda", ("gpu",)), ("hybrid", ("hybrid",))):
        try:
            decoders[name] = GpuJpegDecoder(cuda=api, backends=kinds)
        except BackendError as exc:
            print(f"[gpu_jpeg] nvImageCodec backend {kinds[0]} not usable: {exc}")
    try:
        with api.activated():
            gpu_name = api.device_name()
        for width, height in JPEG_SIZES:
            for model in JPEG_MODELS:
                _jpeg_case(table, api, decoders, FrameDecoder, width, height, model, quick)
    finally:
        for decoder in decoders.values():
            decoder.close()
        api.close()
    table.notes.append(
        f"GPU: {gpu_name}, nvImageCodec {decoders['all'].version}; CPU: {cv2.getNumThreads()} OpenCV threads "
        "(cv2.imdecode itself is single-threaded). Times include launch + sync (kernel_us too). speedup_fps = "
        "gpu_fps / cpu_fps; nvdec_hw/cuda/hybrid: decode + sync with that nvImageCodec backend alone (n/a: "
        "refused). max_px_diff: decoded pixels vs cv2.imdecode (levels); max_in_diff: engine input, in levels."
    )
    return table


def _jpeg_case(table: Table, api: Any, decoders: Dict[str, Any], frame_decoder: Any, width: int, height: int,
               model: str, quick: bool) -> None:  # fmt: skip
    from types import SimpleNamespace

    from trt_perception.gpu_preprocess import GpuPreprocessor
    from trt_perception.images import decode_compressed

    spec = model_inputs()[model]
    frame = camera_frame(width, height, seed=width)
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    data = encoded.reshape(-1)  # rosbags hands CompressedImage.data over as a uint8 array
    msg = SimpleNamespace(format="bgr8; jpeg compressed bgr8", data=data)
    nbytes = int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize
    with api.activated():
        tensor_pinned = api.pinned_empty(nbytes)
        tensor_device = api.malloc(nbytes)
        stream = api.stream_create()
    cpu = Preprocessor(spec, out=tensor_pinned.view(np.dtype(spec.dtype)).reshape(spec.shape))
    pre = GpuPreprocessor(spec, cuda=api, stream=stream)
    pre_upload = GpuPreprocessor(spec, cuda=api, stream=stream)
    frames = frame_decoder(decoders["all"])
    try:
        def cpu_path() -> None:
            cpu(decode_compressed(msg.format, msg.data))
            with api.activated():
                api.memcpy_htod_async(tensor_device, tensor_pinned, stream)
                api.stream_synchronize(stream)

        def cpu_gpupre() -> None:
            pre_upload(decode_compressed(msg.format, msg.data))
            pre_upload.synchronize()

        def gpu_path() -> None:
            pre(frames(msg))
            pre.synchronize()

        device_frame = frames(msg)

        def kernel() -> None:
            pre(device_frame)
            pre.synchronize()

        contenders = {"cpu": cpu_path, "cpu_gpupre": cpu_gpupre, "gpu": gpu_path,
                      "imdecode": lambda: cv2.imdecode(data, cv2.IMREAD_UNCHANGED), "kernel": kernel}  # fmt: skip
        for name, decoder in decoders.items():
            if decoder.decode(data) is not None:
                contenders[f"nvdec_{name}"] = lambda d=decoder: d.decode(data)  # syncs its own stream
        big = width * height >= 1920 * 1080
        iterations = scaled(quick, 100 if big else 200, 5)
        times = measure(contenders, iterations=iterations, warmup=scaled(quick, 10, 2))
        stats = {name: _stats(t) for name, t in times.items()}

        # correctness, from fresh decodes (the timed buffers were reused)
        reference = decode_compressed(msg.format, msg.data)
        decoded = frames(msg)
        host = decoded.download()
        px_diff = int(np.abs(host.array[:, :, ::-1].astype(np.int16) - reference.array.astype(np.int16)).max())
        pre(decoded)
        got = pre.download()
        expected, _ = Preprocessor(spec)(reference)
        in_diff = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max()) / max(spec.scale)
        device_frame = decoded = None  # freed on the decoder's stream while it is open
    finally:
        frames.gpu = None  # shared decoder: closed by the caller
        for each in (pre, pre_upload):
            each.close()
        with api.activated():
            api.free(tensor_device)
            api.free_pinned(tensor_pinned)
            api.stream_destroy(stream)

    def us(name: str) -> Any:
        return stats[name]["us"] if name in stats else "n/a"

    speedup = stats["gpu"]["fps"] / stats["cpu"]["fps"]
    row = {
        "frame": f"{width}x{height}", "model": model, "jpeg_kb": data.size / 1024,
        "cpu_us": stats["cpu"]["us"], "cpu_iqr": stats["cpu"]["iqr"], "cpu_fps": stats["cpu"]["fps"],
        "cpu_gpupre_us": stats["cpu_gpupre"]["us"], "cpu_gpupre_fps": stats["cpu_gpupre"]["fps"],
        "gpu_us": stats["gpu"]["us"], "gpu_iqr": stats["gpu"]["iqr"], "gpu_fps": stats["gpu"]["fps"],
        "imdecode_us": stats["imdecode"]["us"], "nvdec_us": us("nvdec_all"), "nvdec_hw_us": us("nvdec_hw"),
        "nvdec_cuda_us": us("nvdec_cuda"), "nvdec_hybrid_us": us("nvdec_hybrid"), "kernel_us": stats["kernel"]["us"],
        "speedup_fps": speedup, "speedup_vs_gpupre": stats["gpu"]["fps"] / stats["cpu_gpupre"]["fps"],
        "max_px_diff": px_diff, "max_in_diff": in_diff,
    }  # fmt: skip
    if height >= 1080:
        table.add(speedup >= TARGET_JPEG_SPEEDUP_1080P, target=f">={TARGET_JPEG_SPEEDUP_1080P:g}x cpu fps", **row)
    else:
        table.add(None, **row)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="GPU benchmarks 7 (preprocessing) and 7b (JPEG decode)")
    parser.add_argument("--jpeg", action="store_true", help="only 7b: compressed JPEG -> engine input")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from common import machine_info, write_json

    tables = [run_jpeg(args.quick)] if args.jpeg else [run(args.quick), run_jpeg(args.quick)]
    for table in tables:
        print(table.render(), flush=True)
    if args.json is not None:
        write_json(args.json, {"machine": machine_info(), "quick": args.quick,
                               "benchmarks": {t.key: t.to_json() for t in tables}})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
