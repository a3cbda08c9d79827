"""Seeded fuzz of everything a camera or a model hands the pipeline: image messages (raw and compressed, random
and damaged) through ``ImageDecoder``, and one frame's outputs of every output format (random shapes, dtypes and
values) through its parser. The only exceptions allowed out are the package's own (``TrtPerceptionError``);
what comes out must be well formed (finite detections, a 2-D uint8 class map, ...). A failure names the case
number and seed: rerun it with ``case(seed, index)``.

Sizes are kept small so the whole file runs in a few seconds; ``FUZZ_SCALE`` (environment) multiplies the counts
for a longer run.
"""

from __future__ import annotations

import os
import struct
import zlib
from types import SimpleNamespace
from typing import Any, Callable, Dict, List

import cv2
import numpy as np
import pytest
from parser_factory import PARSER_CASES, ParserCase

from trt_perception.errors import TrtPerceptionError
from trt_perception.images import ENCODINGS, DecodedImage, ImageDecoder
from trt_perception.outputs import (
    ClassificationSettings,
    DetectionSettings,
    RawClassification,
    RawDetections,
    RawSegmentation,
)
from trt_perception.results import SteeringPrediction

SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))
IMAGE_CASES = 3000 * SCALE
PARSER_CASES_PER_FORMAT = 150 * SCALE  # x 21 parser cases
MAX_PIXELS = 1 << 20  # the fuzzed decoder's limit: junk headers may claim any size


# ---------------------------------------------------------------------------------------------- images


def _small_image(rng: np.random.Generator) -> np.ndarray:
    height, width = (int(v) for v in rng.integers(1, 48, 2))
    if rng.random() < 0.3:
        return rng.integers(0, 256, (height, width), dtype=np.uint8)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encoded(rng: np.random.Generator) -> bytes:
    ext = [".jpg", ".png", ".webp", ".bmp", ".png"][int(rng.integers(0, 5))]
    image = _small_image(rng)
    if ext == ".png" and rng.random() < 0.3:
        image = image.astype(np.uint16) * 257
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def _fix_png_crcs(data: bytearray) -> None:
    """Recompute every chunk CRC of a (mutated) PNG, so the damage gets past the CRC check to the decoder."""
    pos = 8
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        end = pos + 12 + length
        if end > len(data):
            return
        data[end - 4 : end] = struct.pack(">I", zlib.crc32(bytes(data[pos + 4 : end - 4])))
        pos = end


def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    buf = bytearray(data)
    kind = int(rng.integers(0, 9))
    if kind == 0 and buf:  # truncate
        del buf[int(rng.integers(0, len(buf))) :]
    elif kind == 1 and buf:  # flip bits
        for at in rng.integers(0, len(buf), int(rng.integers(1, 6))):
            buf[int(at)] ^= int(rng.integers(1, 256))
    elif kind == 2:  # splice junk in
        at = int(rng.integers(0, len(buf) + 1))
        buf[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif kind == 3 and len(buf) > 30:  # overwrite header bytes (dimensions, chunk lengths, markers)
        for at in rng.integers(0, min(len(buf), 40), int(rng.integers(1, 4))):
            buf[int(at)] = int(rng.integers(0, 256))
        if buf[:8] == b"\x89PNG\r\n\x1a\n" and rng.random() < 0.7:
            _fix_png_crcs(buf)
    elif kind == 4 and buf[:8] == b"\x89PNG\r\n\x1a\n" and len(buf) > 24:  # claim another size, valid CRC
        buf[16:24] = struct.pack(">II", *(int(v) for v in rng.integers(0, 1 << 16, 2)))
        _fix_png_crcs(buf)
    elif kind == 5 and buf[:2] == b"\xff\xd8":  # claim another size in the JPEG frame header
        at = bytes(buf).find(b"\xff\xc0")
        if at > 0 and at + 9 < len(buf):
            buf[at + 5 : at + 9] = struct.pack(">HH", *(int(v) for v in rng.integers(0, 1 << 16, 2)))
    elif kind == 6:  # pure junk, sometimes behind a real signature
        junk = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        buf = bytearray(bytes(buf[: int(rng.integers(0, 9))]) + junk)
    elif kind == 7 and rng.random() < 0.2:
        buf = bytearray()
    return bytes(buf)


def _container(rng: np.random.Generator, data: bytes) -> Any:
    """The data as one of the containers rclpy, rosbags or a careless publisher may use."""
    pick = int(rng.integers(0, 8))
    if pick == 0:
        return list(data)
    if pick == 1:
        return memoryview(data)
    if pick == 2:
        return np.frombuffer(data, np.uint8)
    if pick == 3:
        return np.frombuffer(data[: len(data) // 2 * 2], np.int16)
    if pick == 4:
        return bytearray(data)
    if pick == 5:
        return [int(v) for v in rng.integers(-300, 300, 20)]
    if pick == 6:
        return [None, "x", 1.5][int(rng.integers(0, 3))]
    return data


def _compressed_message(rng: np.random.Generator) -> Any:
    data = _encoded(rng)
    if rng.random() < 0.85:
        data = _mutate(rng, data)
    formats = ["jpeg", "png", "rgb8; jpeg compressed bgr8", "mono16; png compressed mono16", "", "bgr8; compressed"]
    wrong = ["16UC1; compressedDepth", 7, None]
    fmt = formats[int(rng.integers(0, 6))] if rng.random() < 0.95 else wrong[int(rng.integers(0, 3))]
    return SimpleNamespace(format=fmt, data=_container(rng, data) if rng.random() < 0.3 else data)


def _raw_message(rng: np.random.Generator) -> Any:
    encodings = [*ENCODINGS, "bgr9", "32FC1", "", None, 5]
    encoding = encodings[int(rng.integers(0, len(encodings)))]
    height, width = (int(v) for v in rng.integers(-2, 40, 2))
    if rng.random() < 0.05:
        height, width = 1 << int(rng.integers(10, 40)), 1 << int(rng.integers(10, 40))
    channels = int(rng.integers(1, 5))
    step = max(0, width) * channels + int(rng.integers(-3, 4)) * int(rng.random() < 0.4)
    size = max(0, height) * max(0, step) + int(rng.integers(-8, 8))
    size = int(min(max(size, 0), 1 << 16))
    data: Any = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    if rng.random() < 0.3:
        data = _container(rng, data)
    odd: List[Any] = [height, width, step]
    if rng.random() < 0.05:
        odd[int(rng.integers(0, 3))] = [2.5, "3", None, True][int(rng.integers(0, 4))]
    return SimpleNamespace(height=odd[0], width=odd[1], encoding=encoding, step=odd[2], data=data,
                           is_bigendian=int(rng.integers(0, 2)))  # fmt: skip


def image_case(seed: int, index: int) -> Any:
    rng = np.random.default_rng([seed, index])
    return _compressed_message(rng) if rng.random() < 0.6 else _raw_message(rng)


def check_decoded(image: DecodedImage) -> None:
    assert isinstance(image, DecodedImage)
    assert image.array.size > 0 and image.height * image.width <= MAX_PIXELS


def test_image_decoding_fuzz() -> None:
    decoder = ImageDecoder(max_pixels=MAX_PIXELS)
    outcomes: Dict[str, int] = {"decoded": 0, "refused": 0}
    for index in range(IMAGE_CASES):
        msg = image_case(0, index)
        try:
            check_decoded(decoder(msg))
            outcomes["decoded"] += 1
        except TrtPerceptionError:
            outcomes["refused"] += 1
        except Exception as exc:  # pragma: no cover - the failure this test exists for
            pytest.fail(f"image case (seed 0, index {index}) raised {type(exc).__name__}: {exc}")
    assert outcomes["decoded"] > IMAGE_CASES // 10 and outcomes["refused"] > IMAGE_CASES // 10, outcomes


# --------------------------------------------------------------------------------------------- parsers

DTYPES = [np.float32, np.float16, np.float64, np.int32, np.int64, np.uint8, np.bool_, np.complex64, object, "U2"]


def _mutate_shape(rng: np.random.Generator, array: np.ndarray) -> np.ndarray:
    shape = list(array.shape)
    kind = int(rng.integers(0, 6))
    if kind == 0 and shape:
        del shape[int(rng.integers(0, len(shape)))]
    elif kind == 1:
        shape.insert(int(rng.integers(0, len(shape) + 1)), int(rng.integers(0, 3)))
    elif kind == 2 and shape:
        shape[int(rng.integers(0, len(shape)))] = 0
    elif kind == 3 and shape:
        shape[int(rng.integers(0, len(shape)))] = int(rng.integers(1, 40))
    elif kind == 4:
        shape = []
    else:
        shape = shape[::-1]
    size = int(np.prod(shape)) if shape else 1
    if size > 200_000:
        shape = [min(d, 8) for d in shape]
    return rng.normal(0, 2, shape).astype(np.float32)


def _mutate_values(rng: np.random.Generator, array: np.ndarray) -> np.ndarray:
    array = np.array(array, dtype=np.float64 if array.dtype.kind == "f" else array.dtype)
    if array.size == 0 or array.dtype.kind != "f":
        return array
    flat = array.reshape(-1)
    picks = rng.integers(0, flat.size, int(rng.integers(1, max(2, flat.size // 3))))
    flat[picks] = rng.choice([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e38, -1.0, 0.0, 1e-45], picks.size)
    return array


def _mutate_dtype(rng: np.random.Generator, array: np.ndarray) -> np.ndarray:
    dtype = DTYPES[int(rng.integers(0, len(DTYPES)))]
    with np.errstate(all="ignore"):
        return np.asarray(array).astype(dtype)


def parser_outputs(rng: np.random.Generator, case: ParserCase) -> Dict[str, Any]:
    outputs: Dict[str, Any] = dict(case.outputs(rng))
    for name in list(outputs):
        roll = rng.random()
        if roll < 0.25:
            outputs[name] = _mutate_values(rng, outputs[name])
        elif roll < 0.45:
            outputs[name] = _mutate_shape(rng, outputs[name])
        elif roll < 0.55:
            outputs[name] = _mutate_dtype(rng, outputs[name])
        elif roll < 0.58:
            del outputs[name]
    if rng.random() < 0.1:
        outputs["unrelated"] = rng.random((3, 3))
    return outputs


def parser_settings(rng: np.random.Generator, case: ParserCase) -> Any:
    if case.task == "detection":
        allowed = None if rng.random() < 0.7 else frozenset(int(v) for v in rng.integers(0, 6, 3))
        return DetectionSettings(float(rng.random()), float(rng.random()), int(rng.integers(0, 60)), allowed)
    if case.task == "classification":
        return ClassificationSettings(int(rng.integers(0, 12)), float(rng.random()))
    return None


CHECKS: Dict[str, Callable[[Any], None]] = {}


def _check_detections(result: Any) -> None:
    assert isinstance(result, RawDetections)
    count = result.scores.shape[0]
    assert result.boxes.shape == (count, 4) and result.class_ids.shape == (count,)
    assert np.isfinite(result.boxes).all() and np.isfinite(result.scores).all()
    assert (result.boxes[:, 0] <= result.boxes[:, 2]).all() and (result.boxes[:, 1] <= result.boxes[:, 3]).all()


def _check_classification(result: Any) -> None:
    assert isinstance(result, RawClassification)
    assert result.class_ids.shape == result.scores.shape and not np.isnan(result.scores).any()


def _check_segmentation(result: Any) -> None:
    assert isinstance(result, RawSegmentation)
    assert result.class_map.ndim == 2 and result.class_map.dtype == np.uint8 and result.class_map.size > 0


def _check_steering(result: Any) -> None:
    assert isinstance(result, SteeringPrediction)
    assert isinstance(result.angle, float) and isinstance(result.throttle, float)


CHECKS.update(detection=_check_detections, classification=_check_classification, segmentation=_check_segmentation,
              steering=_check_steering)  # fmt: skip


@pytest.mark.parametrize("name", sorted(PARSER_CASES))
def test_output_parser_fuzz(name: str) -> None:
    case = PARSER_CASES[name]
    parser = case.make()  # one parser for all frames, as in the node: its buffers must survive bad frames
    outcomes = {"parsed": 0, "refused": 0}
    for index in range(PARSER_CASES_PER_FORMAT):
        rng = np.random.default_rng([1, index, len(name)])
        outputs = parser_outputs(rng, case)
        try:
            result = parser.parse(outputs, parser_settings(rng, case))
        except TrtPerceptionError:
            outcomes["refused"] += 1
            continue
        except Exception as exc:  # pragma: no cover - the failure this test exists for
            shapes = {k: (getattr(v, "shape", None), getattr(v, "dtype", type(v).__name__)) for k, v in outputs.items()}
            pytest.fail(f"{name} case {index} {shapes} raised {type(exc).__name__}: {exc}")
        CHECKS[case.task](result)
        outcomes["parsed"] += 1
    assert outcomes["parsed"] > 0 and outcomes["refused"] > 0, outcomes
    # the parser still works on a good frame after all that
    good = case.outputs(np.random.default_rng(5))
    CHECKS[case.task](parser.parse(good, case.settings))


# --------------------------------------------------------------------------------- inspect's range check

NUMERIC = [np.float32, np.float16, np.float64, np.int32, np.int64, np.uint8]


@pytest.mark.parametrize("name", sorted(PARSER_CASES))
def test_inspect_range_check_fuzz(name: str) -> None:
    """`trt-perception inspect` looks at one synthetic frame's outputs: whatever a model gives (empty dynamic
    outputs, NaN, a batch of several), the check answers with lines, never a traceback."""
    from trt_perception.tools.inspect_model import check_output_ranges

    case = PARSER_CASES[name]
    spec = case.make().spec
    for index in range(PARSER_CASES_PER_FORMAT // 3):
        rng = np.random.default_rng([2, index, len(name)])
        outputs = parser_outputs(rng, case)
        for key, value in outputs.items():  # a runtime hands over real numbers only
            array = np.asarray(value)
            if array.dtype.kind not in "fiu":
                dtype = NUMERIC[int(rng.integers(0, len(NUMERIC)))]
                with np.errstate(all="ignore"):
                    outputs[key] = np.real(array).astype(dtype) if array.dtype.kind == "c" else np.zeros(
                        array.shape, dtype)
            if rng.random() < 0.2:  # a float output of any role (a count too) holding NaN, inf, huge values
                outputs[key] = _mutate_values(rng, np.asarray(outputs[key], np.float32))
        try:
            lines = check_output_ranges(spec, outputs)
        except Exception as exc:  # pragma: no cover - the failure this test exists for
            shapes = {k: (getattr(v, "shape", None), getattr(v, "dtype", None)) for k, v in outputs.items()}
            pytest.fail(f"{name} case {index} {shapes} raised {type(exc).__name__}: {exc}")
        assert all(isinstance(line, str) and line.startswith("WARNING") for line in lines)


# ------------------------------------------------------------------------------------------- spec files

SPEC_CASES = 1200 * SCALE
ODD_VALUES: List[Any] = [None, -1, 0, 1e308, float("nan"), float("-inf"), True, "", "x" * 300, [], [1, "a", None],
                         {}, {"a": {"b": [1]}}, 2**70, "labels.txt", "binary.bin", "missing.txt", "../", "\u00e9"]


def _mutate_mapping(rng: np.random.Generator, data: Any, depth: int = 0) -> Any:
    """A copy of a spec mapping with a few keys dropped, replaced by odd values, or added."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            roll = rng.random()
            if roll < 0.08:
                continue
            if roll < 0.2:
                out[key] = ODD_VALUES[int(rng.integers(0, len(ODD_VALUES)))]
            else:
                out[key] = _mutate_mapping(rng, value, depth + 1)
        if rng.random() < 0.1:
            out[["labels", "scale", "tensors", "format", "unknown_key", 3][int(rng.integers(0, 6))]] = \
                ODD_VALUES[int(rng.integers(0, len(ODD_VALUES)))]
        return out
    if isinstance(data, list) and data and rng.random() < 0.3:
        return [ODD_VALUES[int(rng.integers(0, len(ODD_VALUES)))] for _ in data]
    return data


def spec_case(rng: np.random.Generator, bases: List[Dict[str, Any]]) -> bytes:
    """The bytes of one spec file: a mutated good spec as YAML, then sometimes damaged as bytes."""
    import yaml

    base = bases[int(rng.integers(0, len(bases)))]
    text = yaml.safe_dump(_mutate_mapping(rng, base), sort_keys=False, allow_unicode=True).encode()
    kind = int(rng.integers(0, 8))
    if kind == 0:  # cut
        text = text[: int(rng.integers(0, len(text) + 1))]
    elif kind == 1:  # flipped bytes
        raw = bytearray(text)
        for _ in range(int(rng.integers(1, 8))):
            raw[int(rng.integers(0, len(raw)))] = int(rng.integers(0, 256))
        text = bytes(raw)
    elif kind == 2:  # a binary file given as --spec (a model, an engine)
        text = rng.integers(0, 256, int(rng.integers(0, 2000)), dtype=np.uint8).tobytes()
    elif kind == 3:  # YAML oddities: tags, anchors, deep nesting, documents
        text += [b"\nx: !!python/object:os.system ls\n", b"\n---\na: 1\n", b"\nq: &a [*a]\n",
                 b"\nz: " + b"[" * 3000, b"\x00", b"\n\t- tab"][int(rng.integers(0, 6))]
    return text


def test_spec_file_fuzz(tmp_path: Any) -> None:
    """Spec files as users hand them over (damaged YAML, odd values, binary files, labels files that are binary or
    folders): load_spec answers with a spec or a SpecError, never UnicodeDecodeError/RecursionError/TypeError."""
    from trt_perception.errors import SpecError
    from trt_perception.spec import load_spec

    bases = [PARSER_CASES[name].make().spec.to_dict() for name in sorted(PARSER_CASES)]
    (tmp_path / "labels.txt").write_text("background\ncar\n")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)))
    path = tmp_path / "spec.yaml"
    outcomes = {"loaded": 0, "refused": 0}
    for index in range(SPEC_CASES):
        rng = np.random.default_rng([3, index])
        path.write_bytes(spec_case(rng, bases))
        try:
            load_spec(spec_path=path)
            outcomes["loaded"] += 1
        except SpecError:
            outcomes["refused"] += 1
        except Exception as exc:  # pragma: no cover - the failure this test exists for
            pytest.fail(f"spec case (seed 3, index {index}) raised {type(exc).__name__}: {exc}")
    assert outcomes["loaded"] > SPEC_CASES // 20 and outcomes["refused"] > SPEC_CASES // 10, outcomes
