"""ONNX Runtime backend: the same pipeline on a laptop with no GPU, or with ORT's CUDA/TensorRT providers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from trt_perception.backends.base import Backend, TensorSpec
from trt_perception.errors import BackendError

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}
_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


QUIET = 3  # ONNX Runtime log severity: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
PLUGIN_DOMAIN = "trt.plugins"  # where `trt-perception convert --nms` puts TensorRT plugin nodes


def _plugin_nodes(path: Path, message: str) -> List[str]:
    """TensorRT plugin ops in the model (by domain or the ``_TRT`` suffix TensorRT's plugins carry)."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # no onnx package, or a file onnx cannot read either: the error text still names the op
        return sorted(set(re.findall(r"\b([A-Za-z0-9]+_TRT)\b", message)))
    return sorted({n.op_type for n in model.graph.node if n.domain == PLUGIN_DOMAIN or n.op_type.endswith("_TRT")})


def _pre_surgery_model(path: Path) -> str:
    """The model `convert --nms` started from (``x.onnx`` for ``x_efficient_nms.onnx``), when it is there."""
    for suffix in ("_efficient_nms", "_batched_nms"):
        if path.stem.endswith(suffix):
            original = path.with_name(path.stem[: -len(suffix)] + path.suffix)
            if original.is_file():
                return f"{original} (the model before `trt-perception convert --nms`)"
    return "the model before `trt-perception convert --nms` (the ssd_raw/yolo ONNX it was made from, with its spec)"


def load_error(path: Path, exc: Exception, version: str) -> BackendError:
    """A BackendError naming the file, what is wrong with it, and the fix, for an ONNX Runtime load failure."""
    text = str(exc).strip()
    reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (Load model from .* failed:)?", "", text).strip()
    size = path.stat().st_size if path.is_file() else 0
    plugins = _plugin_nodes(path, text) if "registered function/op" in text or "_TRT" in text else []
    if plugins:
        return BackendError(
            f"{path} contains TensorRT plugin node(s) {plugins}, which only TensorRT runs (ONNX Runtime has no such "
            f"op); fix: build a TensorRT engine from it (trt-perception build {path.name}) and run that, or run "
            f"{_pre_surgery_model(path)} with ONNX Runtime"
        )
    ir = re.search(r"IR version: (\d+), max supported IR version: (\d+)", text)
    if ir:
        return BackendError(
            f"ONNX Runtime {version} cannot load {path}: its IR version {ir.group(1)} is newer than this onnxruntime "
            f"reads (up to {ir.group(2)}); fix: upgrade onnxruntime (pip install -U onnxruntime), or re-export the "
            "model with an older onnx package"
        )
    opset = re.search(r"[Oo]pset (\d+) is under development|opset (\d+) .*not supported|till opset (\d+)", text)
    if opset:
        used = re.search(r"[Oo]pset (\d+)", text)
        newest = re.search(r"till opset (\d+)", text)
        return BackendError(
            f"ONNX Runtime {version} cannot load {path}: it uses opset {used.group(1) if used else '?'}, newer than "
            f"this onnxruntime supports{f' (up to {newest.group(1)})' if newest else ''}; fix: re-export with a "
            "lower opset (trt-perception convert --opset 13; TensorRT 8.2 on the Nano parses 7..13) or upgrade "
            "onnxruntime"
        )
    if "Protobuf parsing failed" in text or "No graph was found" in text:
        return BackendError(
            f"ONNX Runtime cannot load {path} ({size} bytes): it is not a complete ONNX file ({reason}); fix: "
            "re-export or re-copy it (an interrupted download or copy leaves a cut file); a TensorRT engine "
            "belongs to the tensorrt backend (.engine/.plan suffix or --backend tensorrt)"
        )
    return BackendError(
        f"ONNX Runtime {version} cannot load {path} ({size} bytes): {reason}; fix: check the model with "
        "`python -m onnx.checker` or re-export it; a model with TensorRT-only layers runs with the tensorrt backend"
    )


def _tensor_spec(arg: object) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
    return TensorSpec(arg.name, shape, np.dtype(_ORT_TYPES.get(arg.type, np.float32)))


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX file with explicit providers; a requested provider that is missing is an error."""

    name = "onnxruntime"

    def __init__(
        self,
        model_path: Union[str, Path],
        providers: Optional[Sequence[str]] = None,
        threads: int = 0,
        inter_op_threads: int = 0,
        spinning: Optional[bool] = None,
        optimization: str = "all",
    ) -> None:
        """``threads``/``inter_op_threads``: ORT's intra/inter-op pools (0 = ORT's default, one per core);
        ``spinning``: whether idle pool threads busy-wait for work (None = ORT's default, on); ``optimization``:
        graph optimisation level (disable, basic, extended, all)."""
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError(
                f"the onnxruntime package is not installed ({exc}), so {model_path} cannot run; fix: "
                "pip install onnxruntime (or onnxruntime-gpu), or run a TensorRT engine (.engine) instead"
            ) from None

        wanted = [_PROVIDER_ALIASES.get(p.lower(), p) for p in (providers or ["CPUExecutionProvider"])]
        available = ort.get_available_providers()
        missing = [p for p in wanted if p not in available]
        if missing:
            raise BackendError(
                f"ONNX Runtime provider(s) {missing} are not available in this onnxruntime {ort.__version__} "
                f"(available: {available}); fix: install the onnxruntime build that has them "
                "(onnxruntime-gpu) or set providers to e.g. [CPUExecutionProvider]"
            )
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if optimization not in levels:
            raise BackendError(
                f"ONNX Runtime graph optimisation level {optimization!r} is unknown; expected one of {list(levels)}"
            )
        from trt_perception.onnx_file import check_model_path

        path = check_model_path(model_path, "model file", BackendError, "an ONNX model")
        # Errors only: old exporters list every initializer as a graph input and ONNX Runtime warns once per
        # initializer (244 lines for a small face SSD) about an optimisation it then does anyway; what matters
        # (a failed load) is an exception, which becomes a BackendError below.
        ort.set_default_logger_severity(QUIET)
        options = ort.SessionOptions()
        options.log_severity_level = QUIET
        options.graph_optimization_level = levels[optimization]
        if threads:
            options.intra_op_num_threads = int(threads)
        if inter_op_threads:
            options.inter_op_num_threads = int(inter_op_threads)
        if spinning is not None:
            flag = "1" if spinning else "0"
            options.add_session_config_entry("session.intra_op.allow_spinning", flag)
            options.add_session_config_entry("session.inter_op.allow_spinning", flag)
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=wanted)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types; name the file, cause and fix
            raise load_error(path, exc, ort.__version__) from exc
        self.providers = list(self.session.get_providers())
        # InferenceSession::Run "is guaranteed to be thread-safe" (microsoft/onnxruntime 674afbe, #19301) and
        # returns new arrays; on the CPU only: the GPU providers' Python allocators are not (onnxruntime #20713)
        self.concurrent = self.providers == ["CPUExecutionProvider"]
        self.inputs = tuple(_tensor_spec(a) for a in self.session.get_inputs())
        self.outputs = tuple(_tensor_spec(a) for a in self.session.get_outputs())
        self._output_names = [t.name for t in self.outputs]
        self._version = ort.__version__

    def infer(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        values = self.session.run(self._output_names, dict(feed))
        return dict(zip(self._output_names, values))

    def describe(self) -> Dict[str, str]:
        return {"backend": self.name, "onnxruntime": self._version, "providers": ",".join(self.providers)}

    def close(self) -> None:
        self.session = None
