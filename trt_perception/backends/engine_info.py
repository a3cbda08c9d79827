"""What a serialized TensorRT engine was built with, and whether it can run here.

TensorRT engines are not portable across TensorRT versions or GPUs ("Version tag does not match",
"expecting compute 7.2 got compute 8.7"). Two sources say what an engine was built with:

- the plan header: Autoware's ``autoware_tensorrt_common`` reads TensorRT major/minor/patch from bytes
  24/25/26 of the plan (TRT_MAJOR_IDX..TRT_PATCH_IDX, citing NVIDIA/TensorRT#3073). That layout is not
  documented by NVIDIA, so it is read best-effort and only when the plan starts with the magic tag below;
- the ``build:`` section the builder (``trt-perception build``) writes into the engine's spec sidecar:
  tensorrt_version, gpu_name, compute_capability, precision, source_onnx, onnx_sha256, flags.

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

# Magic tag at the start of TensorRT 8+ plan files ("ftrt"; unverified against NVIDIA documentation, which
# does not describe the plan layout). Header bytes are only trusted when it matches.
PLAN_MAGIC = b"ftrt"
PLAN_VERSION_OFFSET = 24  # major, minor, patch at 24, 25, 26 (autoware_tensorrt_common, NVIDIA/TensorRT#3073)
# Always explicit: `trt-perception build` defaults to fp16, so an fp32 engine needs --fp32 to stay fp32.
PRECISION_FLAGS = {"fp32": " --fp32", "fp16": " --fp16", "int8": " --int8"}

_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_CC_RE = re.compile(r"(\d+)\D+(\d+)")


@dataclass(frozen=True)
class PlanHeader:
    """What the first bytes of a plan say. ``tensorrt_version`` is None when the header is not understood."""

    magic_ok: bool
    tensorrt_version: Optional[Tuple[int, int, int]]


def read_plan_header(plan: bytes) -> PlanHeader:
    """Best-effort TensorRT version from a plan's header (see module docstring); never raises."""
    head = bytes(plan[: PLAN_VERSION_OFFSET + 3])
    if len(head) < PLAN_VERSION_OFFSET + 3 or not head.startswith(PLAN_MAGIC):
        return PlanHeader(magic_ok=head.startswith(PLAN_MAGIC), tensorrt_version=None)
    major, minor, patch = (
        head[PLAN_VERSION_OFFSET],
        head[PLAN_VERSION_OFFSET + 1],
        head[PLAN_VERSION_OFFSET + 2],
    )
    if not 5 <= major <= 30:  # not a TensorRT major we know of: the layout changed, trust nothing
        return PlanHeader(magic_ok=True, tensorrt_version=None)
    return PlanHeader(magic_ok=True, tensorrt_version=(int(major), int(minor), int(patch)))


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


def find_mismatches(header: PlanHeader, build: BuildInfo, runtime: RuntimeInfo) -> List[Mismatch]:
    """Compare what the engine was built with against what runs here (TensorRT major.minor, GPU CC)."""
    problems: List[Mismatch] = []
    here = parse_version(runtime.tensorrt_version)
    version_compatible = "version_compatible" in build.flags
    built_versions = []
    if build.tensorrt_version and parse_version(build.tensorrt_version):
        built_versions.append(
            (parse_version(build.tensorrt_version), build.tensorrt_version, "build metadata")
        )
    if header.tensorrt_version is not None:
        text = ".".join(str(v) for v in header.tensorrt_version)
        built_versions.append((header.tensorrt_version, text, "plan header"))
    for built, text, source in built_versions if here is not None else []:
        same = built[:2] == here[:2]
        # Version-compatible engines (TensorRT >= 8.6, VERSION_COMPATIBLE flag) run on later TensorRT of the
        # same major; anything else needs the exact major.minor.
        if not same and not (version_compatible and built[0] == here[0] and built[:2] < here[:2]):
            problems.append(Mismatch("TensorRT version", text, runtime.tensorrt_version, source))
            break
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
