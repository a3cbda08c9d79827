"""What a serialized TensorRT engine was built with, and whether it can run here.

TensorRT engines are not portable across TensorRT versions or GPUs ("Version tag does not match",
"expecting compute 7.2 got compute 8.7"). Two sources say what an engine was built with, in this order:

- the ``build:`` section the builder (``trt-perception build``) writes into the engine's spec sidecar:
  tensorrt_version, gpu_name, compute_capability, precision, source_onnx, onnx_sha256, flags. It is the first
  source of truth;
- the plan header, only where NVIDIA's own reader proves its layout: trtexec's ``printPlanVersion``
  (NVIDIA/TensorRT samples/common/sampleEngines.cpp, from tag v9.1.0 l.1352-1373 to v11.1) checks the
  magic ``kPLAN_FILE_TAG`` 0x74727466 ("ftrt" on disk), requires the next 32-bit word (bytes 4-7) to be 0
  ("Blob index to store the plan version may depend on the serialization version") and only then reads
  major/minor/patch/build from bytes 24-27. That reader does not exist before 9.1, and for 8.2-8.5 plans
  NVIDIA/TensorRT#3073 shows only a serialization tag near the start (205 for 8.2.1, 213 for 8.4.3, 232 for
  8.5.3), nothing at 24-26. So the header is read only when both the plan's header and the TensorRT here are
  9.1 or later; an 8.x engine without build metadata goes to ``deserialize_cuda_engine``, whose refusal the
  backend turns into the same clear message.

A mismatch becomes one ``EngineMismatchError`` message that says what the engine was built with, what is
here, and the exact command that rebuilds it. No TensorRT import happens in this module.
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from trt_perception.errors import SpecError

LOG = logging.getLogger("trt_perception.tensorrt")

# kPLAN_FILE_TAG 0x74727466, little-endian on disk (sampleEngines.cpp printPlanVersion @v9.1.0 l.1359).
PLAN_MAGIC = b"ftrt"
PLAN_VERSION_OFFSET = 24  # major, minor, patch, build at 24..27, when bytes 4-7 are 0 (same function, l.1362-1369)
PLAN_HEADER_SIZE = 28  # printPlanVersion refuses shorter plans ("Plan file is incorrect")
# The first TensorRT whose trtexec reads the version from the header (printPlanVersion is absent at v8.6.1).
HEADER_LAYOUT_PROVEN_FROM = (9, 1)
# Serialization tags that 8.x prints in "Version tag does not match. Note: Current Version: X, Serialized Engine
# Version: Y" (measured by a user in NVIDIA/TensorRT#3073: 8.2.1.8 -> 205, 8.4.3.1 -> 213, 8.5.3.1 -> 232; the
# same numbers appear in #2041/#2072 logs). Other versions' tags are not known here.
SERIALIZATION_TAGS = {205: "8.2", 213: "8.4", 232: "8.5"}
# Version-compatible engines (BuilderFlag.VERSION_COMPATIBLE, from 8.6) run on later runtimes of the same major,
# and across these majors (TensorRT docs "Version Compatibility": TensorRT 8 engines run on 9 and 10; support
# matrix 11.x: 10 -> 11). Nothing runs backwards.
VERSION_COMPATIBLE_FROM = (8, 6)
VERSION_COMPATIBLE_ACROSS = frozenset({(8, 9), (8, 10), (10, 11)})
# Always explicit: `trt-perception build` defaults to fp16, so an fp32 engine needs --fp32 to stay fp32.
PRECISION_FLAGS = {"fp32": " --fp32", "fp16": " --fp16", "int8": " --int8"}

_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_TAG_RE = re.compile(r"Current Version:\s*(\d+),\s*Serialized Engine Version:\s*(\d+)", re.I)
_LIBRARY_RE = re.compile(r"expecting library version\s+([\d.]+)\s+got\s+([\d.]+)", re.I)
_CC_RE = re.compile(r"(\d+)\D+(\d+)")


@dataclass(frozen=True)
class PlanHeader:
    """What the first bytes of a plan say. ``tensorrt_version`` is None unless the layout is proven (9.1+)."""

    magic_ok: bool
    tensorrt_version: Optional[Tuple[int, int, int]]


def read_plan_header(plan: bytes) -> PlanHeader:
    """The TensorRT version in a plan's header, read as trtexec's printPlanVersion does; never raises.

    ``tensorrt_version`` is set only when the magic matches, bytes 4-7 are 0 and the version read is 9.1 or
    later: before 9.1 NVIDIA documents no header layout, and 8.x plans hold other data there.
    """
    head = bytes(plan[:PLAN_HEADER_SIZE])
    magic_ok = head.startswith(PLAN_MAGIC)
    if len(head) < PLAN_HEADER_SIZE or not magic_ok:
        return PlanHeader(magic_ok=magic_ok, tensorrt_version=None)
    if int.from_bytes(head[4:8], "little") != 0:  # printPlanVersion: "Serialization version is not supported"
        return PlanHeader(magic_ok=True, tensorrt_version=None)
    major, minor, patch = (int(b) for b in head[PLAN_VERSION_OFFSET : PLAN_VERSION_OFFSET + 3])
    if (major, minor) < HEADER_LAYOUT_PROVEN_FROM or major > 30:  # not a layout (or a major) anyone proved
        return PlanHeader(magic_ok=True, tensorrt_version=None)
    return PlanHeader(magic_ok=True, tensorrt_version=(major, minor, patch))


def parse_version(text: Any) -> Optional[Tuple[int, int, int]]:
    """'8.2.1.8' -> (8, 2, 1); '10.3' -> (10, 3, 0); anything else -> None."""
    match = _VERSION_RE.search(str(text)) if text is not None else None
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def parse_compute_capability(value: Any) -> Optional[Tuple[int, int]]:
    """'8.7', [8, 7], (8, 7), 'sm_87', 87 or '87' -> (8, 7); anything else -> None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        try:
            return int(value[0]), int(value[1])
        except (TypeError, ValueError):
            return None
    text = str(value).strip().lower().replace("sm_", "").replace("compute_", "")
    match = _CC_RE.search(text)
    if match:
        return int(match.group(1)), int(match.group(2))
    if text.isdigit() and len(text) >= 2:
        return int(text[:-1]), int(text[-1])
    return None


def _flag_names(flags: Any) -> frozenset:
    """Build flags as a set of normalized names; accepts a list of strings or a mapping name -> value."""
    if isinstance(flags, Mapping):
        names = [str(k) for k, v in flags.items() if v not in (False, None, 0, "", "none", "None")]
    elif isinstance(flags, (list, tuple, set, frozenset)):
        names = [str(f) for f in flags]
    elif isinstance(flags, str):
        names = flags.replace(",", " ").split()
    else:
        names = []
    return frozenset(n.strip().lstrip("-").lower().replace("-", "_") for n in names if n.strip())


@dataclass(frozen=True)
class BuildInfo:
    """The builder's metadata for one engine (spec ``build:`` section); every field may be unknown."""

    tensorrt_version: Optional[str] = None
    gpu_name: Optional[str] = None
    compute_capability: Optional[Tuple[int, int]] = None
    precision: Optional[str] = None
    source_onnx: Optional[str] = None
    onnx_sha256: Optional[str] = None
    flags: frozenset = frozenset()

    @classmethod
    def from_mapping(cls, data: Optional[Mapping[str, Any]]) -> BuildInfo:
        data = data or {}
        precision = data.get("precision")
        return cls(
            tensorrt_version=None if data.get("tensorrt_version") is None else str(data["tensorrt_version"]),
            gpu_name=None if data.get("gpu_name") is None else str(data["gpu_name"]),
            compute_capability=parse_compute_capability(data.get("compute_capability")),
            precision=None if precision is None else str(precision).lower(),
            source_onnx=None if data.get("source_onnx") is None else str(data["source_onnx"]),
            onnx_sha256=None if data.get("onnx_sha256") is None else str(data["onnx_sha256"]),
            flags=_flag_names(data.get("flags")),
        )

    @property
    def known(self) -> bool:
        return any(v is not None for v in (self.tensorrt_version, self.gpu_name, self.compute_capability))

    @property
    def version_compatible(self) -> bool:
        """Built with BuilderFlag.VERSION_COMPATIBLE (``flags: [version_compatible]``, trtexec
        ``--versionCompatible``): such a plan may embed the lean runtime, which the runtime must allow."""
        return "version_compatible" in self.flags


@dataclass(frozen=True)
class RuntimeInfo:
    """What is running here: the imported TensorRT and the GPU the CUDA adapter sees."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: Tuple[int, int]


@dataclass(frozen=True)
class Mismatch:
    """One incompatibility: ``what`` differs, ``built`` vs ``here``, and where ``built`` came from."""

    what: str
    built: str
    here: str
    source: str


def _cc_text(cc: Tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


def version_runs_here(
    built: Tuple[int, ...], here: Tuple[int, ...], version_compatible: bool
) -> bool:
    """Whether an engine built with TensorRT ``built`` can load on TensorRT ``here`` (major.minor compared).

    Plain engines need the same major.minor (a patch difference is left to TensorRT, which decides it:
    "expecting library version 8.2.3 got 8.2.1"). Version-compatible ones (8.6+) also run forward within a
    major and across the majors in ``VERSION_COMPATIBLE_ACROSS``.
    """
    if tuple(built[:2]) == tuple(here[:2]):
        return True
    if not version_compatible or tuple(built[:2]) < VERSION_COMPATIBLE_FROM or tuple(built[:2]) > tuple(here[:2]):
        return False
    return built[0] == here[0] or (built[0], here[0]) in VERSION_COMPATIBLE_ACROSS


def find_mismatches(header: PlanHeader, build: BuildInfo, runtime: RuntimeInfo) -> List[Mismatch]:
    """Compare what the engine was built with against what runs here (TensorRT version, GPU CC).

    The build metadata decides when it records a version; the plan header only when it does not, and only
    where both the header's layout and the TensorRT here are 9.1+ (see the module docstring).
    """
    problems: List[Mismatch] = []
    here = parse_version(runtime.tensorrt_version)
    built_metadata = parse_version(build.tensorrt_version)
    built: Optional[Tuple[int, int, int]] = None
    text = source = ""
    if built_metadata is not None:
        built, text, source = built_metadata, str(build.tensorrt_version), "build metadata"
    elif header.tensorrt_version is not None and here is not None and here[:2] >= HEADER_LAYOUT_PROVEN_FROM:
        built, source = header.tensorrt_version, "plan header"
        text = ".".join(str(v) for v in built)
    if built is not None and here is not None and not version_runs_here(built, here, build.version_compatible):
        problems.append(Mismatch("TensorRT version", text, runtime.tensorrt_version, source))
    if build.compute_capability is not None:
        built_cc, here_cc = build.compute_capability, runtime.compute_capability
        hardware_compatible = (
            bool({"hardware_compatibility", "hardware_compatibility_level", "ampere_plus"} & build.flags)
            and built_cc >= (8, 0)
            and here_cc >= (8, 0)
        )
        if built_cc != here_cc and not hardware_compatible:
            gpu = f" ({build.gpu_name})" if build.gpu_name else ""
            problems.append(
                Mismatch(
                    "GPU compute capability",
                    _cc_text(built_cc) + gpu,
                    f"{_cc_text(here_cc)} ({runtime.gpu_name})",
                    "build metadata",
                )
            )
    elif build.gpu_name and runtime.gpu_name and build.gpu_name != runtime.gpu_name:
        LOG.warning(
            "engine was built on GPU %r and runs on %r; no compute capability was recorded to check; "
            "if loading fails, rebuild the engine on this machine",
            build.gpu_name,
            runtime.gpu_name,
        )
    return problems


def explain_version_error(text: str, runtime_version: str) -> Optional[str]:
    """What TensorRT's own version refusal means, in TensorRT versions where it prints tags or versions.

    8.x and 10.x print "Version tag does not match. Note: Current Version: 213, Serialized Engine Version: 205"
    (serialization tags, see ``SERIALIZATION_TAGS``); a patch-level mismatch prints "expecting library version
    8.2.3 got 8.2.1" (this library, then the engine's). None when ``text`` has neither.
    """
    match = _TAG_RE.search(text)
    if match:
        current, serialized = int(match.group(1)), int(match.group(2))
        built = SERIALIZATION_TAGS.get(serialized)
        ours = SERIALIZATION_TAGS.get(current)
        built_text = f"TensorRT {built}.x" if built else "another TensorRT version"
        ours_text = f"TensorRT {runtime_version}" + ("" if ours is None else f" ({ours}.x)")
        return (
            f"the engine was built with {built_text} (serialization tag {serialized}); "
            f"{ours_text} reads tag {current} only"
            + ("" if built and ours else " (tags known here: 205 = 8.2, 213 = 8.4, 232 = 8.5; NVIDIA/TensorRT#3073)")
        )
    match = _LIBRARY_RE.search(text)
    if match:
        return (
            f"the engine was built with TensorRT {match.group(2)}; this TensorRT library is {match.group(1)} "
            "and loads only engines of its exact version"
        )
    return None


def resolve_source_onnx(engine_path: Union[str, Path], build: BuildInfo) -> Optional[Path]:
    """The engine's source ONNX as a path (relative paths are relative to the engine's folder)."""
    if not build.source_onnx:
        return None
    path = Path(build.source_onnx).expanduser()
    if not path.is_absolute():
        path = Path(engine_path).parent / path
    return path


def rebuild_command(engine_path: Union[str, Path], build: BuildInfo) -> str:
    """The exact ``trt-perception build`` command that rebuilds this engine here."""
    source = resolve_source_onnx(engine_path, build)
    onnx = shlex.quote(str(source)) if source is not None else "<model.onnx>"
    flag = (
        ""
        if build.precision is None
        else PRECISION_FLAGS.get(build.precision, f" --precision {build.precision}")
    )
    return f"trt-perception build {onnx} --output {shlex.quote(str(engine_path))} --force{flag}"


def mismatch_message(
    engine_path: Union[str, Path], mismatches: Iterable[Mismatch], build: BuildInfo, runtime: RuntimeInfo
) -> str:
    """One message: what was expected (built with), what is here, and the rebuild command."""
    lines = [f"TensorRT engine {engine_path} cannot run here:"]
    for m in mismatches:
        lines.append(
            f"  - {m.what}: engine built with {m.built} (from the {m.source}), this machine has {m.here}"
        )
    lines.append(
        f"  (this machine: TensorRT {runtime.tensorrt_version}, GPU {runtime.gpu_name}, "
        f"compute capability {_cc_text(runtime.compute_capability)})"
    )
    lines.append("Engines are tied to the TensorRT version and GPU they were built with; rebuild it here:")
    lines.append(f"  {rebuild_command(engine_path, build)}")
    if resolve_source_onnx(engine_path, build) is None:
        lines.append(
            "  (the engine's source ONNX is not recorded in its build metadata: replace <model.onnx> with it)"
        )
    else:
        lines.append("  or set auto_rebuild: true to rebuild automatically when this happens")
    return "\n".join(lines)


def load_build_metadata(engine_path: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """The ``build:`` section of the spec next to the engine (``model.engine.yaml`` / ``model.yaml``), if any.

    Only that section is read (the pipeline validates the whole spec); a spec that cannot be read is
    reported in the log and treated as "no metadata", since the pipeline will refuse it with its own message.
    """
    from trt_perception.spec import find_spec, read_spec_file

    spec_path = find_spec(engine_path)
    if spec_path is None:
        return None
    try:
        data = read_spec_file(spec_path)
    except SpecError as exc:
        LOG.warning(
            "cannot read build metadata from %s (%s); engine compatibility is checked by TensorRT only",
            spec_path,
            exc,
        )
        return None
    build = data.get("build")
    return dict(build) if isinstance(build, Mapping) else None
