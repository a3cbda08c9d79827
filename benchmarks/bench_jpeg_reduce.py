"""Benchmark 16: ``jpeg_reduce`` - CPU JPEG decode at reduced size (libjpeg DCT scaling) beside the full decode.

A CompressedImage JPEG (camera-like picture, quality 90) -> the model's input tensor, the CPU path: ``full`` =
``cv2.imdecode`` at full size + ``Preprocessor`` (resize to the model); ``reduced`` = what ``jpeg_reduce: auto``
does, ``IMREAD_REDUCED_COLOR_<n>`` with the largest n (2, 4, 8) such that the model input is at most 1/n of
the frame, then the same ``Preprocessor``. Both through ``gpu_decode.FrameDecoder`` as FrameProcessor runs
them. Two model inputs: DonkeyCar's 160x120 and the SSD 300x300. ``input diff``: max and mean |reduced -
full| of the model input in 0..255 levels (the pixels DO change: DCT-domain scaling is not a bilinear resize).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import numpy as np
from common import Table, camera_frame, image_message, measure, scaled, ssd300_spec, steering_spec

from trt_perception.gpu_decode import FrameDecoder
from trt_perception.preprocess import Preprocessor

SIZES = [(640, 480), (1280, 720)]


def _factor(spec: Any, width: int, height: int) -> int:
    for factor in (8, 4, 2):
        if spec.input.width * factor <= width and spec.input.height * factor <= height:
            return factor
    return 1


def _path(decoder: FrameDecoder, preprocess: Preprocessor, msg: Any) -> Callable[[], np.ndarray]:
    """message -> model input through ``decoder`` and ``preprocess``."""
    def call() -> np.ndarray:
        return preprocess(decoder(msg))[0]  # type: ignore[arg-type]
    return call


def run(quick: bool = False) -> Table:
    table = Table(
        "jpeg_reduce",
        "16. jpeg_reduce: JPEG -> model input on the CPU, reduced-size decode vs full decode",
        ["frame", "model input", "reduce", "full_us [IQR]", "reduced_us [IQR]", "speedup", "saved_ms",
         "input diff max/mean"],
    )
    iterations = scaled(quick, 200, 4)
    models = [("160x120 (DonkeyCar)", steering_spec()), ("300x300 (SSD)", ssd300_spec())]
    for width, height in SIZES:
        msg = image_message(camera_frame(width, height, seed=3), "jpeg")
        for label, spec in models:
            factor = _factor(spec, width, height)
            full_decoder = FrameDecoder(None)
            reduced_decoder = FrameDecoder(None, reduce=lambda w, h, s=spec: _factor(s, w, h))
            full_pre, reduced_pre = Preprocessor(spec.input), Preprocessor(spec.input)

            full = _path(full_decoder, full_pre, msg)
            reduced = _path(reduced_decoder, reduced_pre, msg)

            diff = np.abs(full().astype(np.float64) - reduced().astype(np.float64))
            levels = diff / (abs(spec.input.scale[0]) or 1.0)  # back to 0..255 pixel levels
            timings = measure({"full": full, "reduced": reduced}, iterations, warmup=3, rounds=min(10, iterations))
            f, r = timings["full"], timings["reduced"]
            row: Dict[str, Any] = {
                "frame": f"{width}x{height}", "model input": label,
                "reduce": f"1/{factor}" if factor > 1 else "none",
                "full_us [IQR]": f"{f.us:.0f} [{f.iqr * 1e6:.0f}]",
                "reduced_us [IQR]": f"{r.us:.0f} [{r.iqr * 1e6:.0f}]",
                "speedup": f"{r.per_second / f.per_second:.2f}x",
                "saved_ms": (f.median - r.median) * 1e3,
                "input diff max/mean": f"{levels.max():.0f} / {levels.mean():.2f}",
            }  # fmt: skip
            table.add(None, **row)
    notes: List[str] = [
        "speedup from total time over all calls (interleaved rounds); us: median per frame and its IQR. 'none': "
        "the model input is more than half the frame, jpeg_reduce leaves the frame at full size. Results stay "
        "in full-frame pixels (FrameProcessor maps the transform back), but the model sees other pixels: keep "
        "jpeg_reduce off unless an A/B on your recordings (trt-perception evaluate) shows no loss."
    ]
    table.notes.extend(notes)
    return table


if __name__ == "__main__":
    print(run().render())
