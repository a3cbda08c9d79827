"""ONNX Runtime backend: the same pipeline on a laptop with no GPU, or with ORT's CUDA/TensorRT providers."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

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
        options = ort.SessionOptions()
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
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types; name the file either way
            raise BackendError(f"ONNX Runtime cannot load {model_path}: {exc}") from exc
        self.providers = list(self.session.get_providers())
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
