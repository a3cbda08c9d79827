"""Legacy UFF path: TF1 Object Detection API SSD frozen graphs -> implicit-batch engines with NMS_TRT.

This is how the original Jetson pipelines built SSD engines (TensorRT samples/python/uff_ssd at 8.2.1,
jkjung-avt/tensorrt_demos ssd/build_engine.py): graphsurgeon collapses the graph's namespaces into plugin
nodes - ``Preprocessor`` -> an ``Input`` placeholder (1, 3, H, W), ``MultipleGridAnchorGenerator`` ->
GridAnchor_TRT (min/max scale, aspect ratios, variances, feature maps from the model's pipeline.config),
``concat``/``concat_1`` -> FlattenConcat_TRT (box encodings / class scores), ``Postprocessor`` -> NMS_TRT
(inputOrder: the order in which loc, conf and priorbox data arrive, which differs between exported models:
[0, 2, 1] for most, [1, 0, 2] for ssd_mobilenet_v2_coco_2018_03_29) - then ``uff.from_tensorflow`` writes the
UFF and ``UffParser`` builds an implicit-batch engine whose outputs are ``NMS`` and ``NMS_1`` (the ``nms_trt``
output format).

It only works where TensorRT still has ``UffParser`` (deleted in TensorRT 9.0) and the ``uff`` and
``graphsurgeon`` Python packages import (JetPack 4 ships them with TensorRT). Everywhere else
``build_uff_engine`` raises a ``BuildError`` that says so and gives the two commands of the ONNX path that
replaces it (``convert --ssd tf1-ssd-300 --nms ...`` then ``build``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

from trt_perception.errors import BuildError, ConfigError
from trt_perception.spec import save_spec

PathLike = Union[str, Path]


@dataclass(frozen=True)
class UffSsdOptions:
    """The GridAnchor_TRT / NMS_TRT parameters of a TF1 OD API SSD (its pipeline.config)."""

    num_classes: int = 91  # with the background class
    input_size: int = 300
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: Tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.33)
    variances: Tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)
    feature_maps: Tuple[int, ...] = (19, 10, 5, 3, 2, 1)
    input_order: Tuple[int, ...] = (0, 2, 1)
    score_threshold: float = 0.3
    iou_threshold: float = 0.6
    top_k: int = 100
    keep_top_k: int = 100


def uff_options_from_args(args: argparse.Namespace) -> UffSsdOptions:
    def integers(flag: str, text: str, example: str) -> Tuple[int, ...]:
        try:
            return tuple(int(v) for v in str(text).split(","))
        except ValueError:
            raise ConfigError(f"{flag} {text!r} is not valid; expected e.g. {example}") from None

    feature_maps = integers("--uff-feature-maps", args.uff_feature_maps, "19,10,5,3,2,1")
    input_order = integers("--uff-input-order", args.uff_input_order, "0,2,1")
    if sorted(input_order) != [0, 1, 2]:
        raise ConfigError(f"--uff-input-order {args.uff_input_order!r} is not a permutation of 0,1,2")
    return UffSsdOptions(
        num_classes=int(args.uff_num_classes),
        input_size=int(args.uff_input_size),
        min_scale=float(args.uff_min_scale),
        max_scale=float(args.uff_max_scale),
        feature_maps=feature_maps,
        input_order=input_order,
    )


def uff_unavailable_reason(trt: Any) -> Optional[str]:
    """Why the UFF path cannot run here, or None when it can."""
    version = str(getattr(trt, "__version__", "0"))
    if int(version.split(".")[0] or 0) >= 9 or not hasattr(trt, "UffParser"):
        return f"TensorRT {version} has no UffParser (UFF was removed in TensorRT 9.0)"
    for module in ("uff", "graphsurgeon"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return (f"the '{module}' Python package does not import ({exc}); JetPack 4 installs it with TensorRT "
                    "(python3-uff, python3-graphsurgeon)")
    return None


def onnx_commands(frozen_graph: PathLike, nms: str = "batched", precision: str = "fp16") -> Tuple[str, str]:
    """The two commands of the ONNX path that replace the UFF build (file names as convert writes them)."""
    source = Path(frozen_graph)
    onnx_path = source.with_suffix(".onnx")
    nms_path = onnx_path.with_name(f"{onnx_path.stem}_{nms}_nms.onnx")
    return (
        f"trt-perception convert {source} --ssd tf1-ssd-300 --nms {nms}",
        f"trt-perception build {nms_path} --{precision}",
    )


def unavailable_message(frozen_graph: PathLike, reason: str) -> str:
    convert_cmd, build_cmd = onnx_commands(frozen_graph, "batched")
    efficient_convert, efficient_build = onnx_commands(frozen_graph, "efficient")
    return (
        f"cannot build {frozen_graph} through UFF: {reason}. UFF is deprecated in TensorRT 8 and gone from 9+; "
        "build the same SSD through ONNX instead (needs tf2onnx + TensorFlow where you convert):\n"
        f"  {convert_cmd}\n  {build_cmd}\n"
        f"(--nms batched works on every TensorRT 8.x/10.x, including the Jetson Nano's 8.2; on TensorRT >= 8.4 "
        f"EfficientNMS is faster: `{efficient_convert}` then `{efficient_build}`. For models other than the "
        "300x300 COCO SSDs add --feature-maps/--min-scale/--max-scale/--aspect-ratios from pipeline.config.)"
    )


def _ssd_graph(gs: Any, frozen_graph: Path, options: UffSsdOptions) -> Any:
    """The frozen graph with its TF pre/post-processing collapsed into TensorRT plugin nodes."""
    graph = gs.DynamicGraph(str(frozen_graph))
    graph.remove(graph.find_nodes_by_op("Assert"), remove_exclusive_dependencies=True)
    graph.forward_inputs(graph.find_nodes_by_op("Identity"))
    size = int(options.input_size)
    image = gs.create_plugin_node(name="Input", op="Placeholder", shape=(1, 3, size, size))
    priors = gs.create_plugin_node(
        name="MultipleGridAnchorGenerator", op="GridAnchor_TRT", minSize=options.min_scale,
        maxSize=options.max_scale, aspectRatios=list(options.aspect_ratios), variance=list(options.variances),
        featureMapShapes=list(options.feature_maps), numLayers=len(options.feature_maps),
    )
    nms = gs.create_plugin_node(
        name="NMS", op="NMS_TRT", shareLocation=1, varianceEncodedInTarget=0, backgroundLabelId=0,
        confidenceThreshold=options.score_threshold, nmsThreshold=options.iou_threshold, topK=options.top_k,
        keepTopK=options.keep_top_k, numClasses=options.num_classes, inputOrder=list(options.input_order),
        confSigmoid=1, isNormalized=1,
    )
    priors_concat = gs.create_node("concat_priorbox", op="ConcatV2", axis=2)
    box_loc = gs.create_plugin_node("concat_box_loc", op="FlattenConcat_TRT", axis=1, ignoreBatch=0)
    box_conf = gs.create_plugin_node("concat_box_conf", op="FlattenConcat_TRT", axis=1, ignoreBatch=0)
    graph.collapse_namespaces({
        "MultipleGridAnchorGenerator": priors, "Postprocessor": nms, "Preprocessor": image, "ToFloat": image,
        "Cast": image, "image_tensor": image, "MultipleGridAnchorGenerator/Concatenate": priors_concat,
        "Concatenate": priors_concat, "concat": box_loc, "concat_1": box_conf,
    })
    for old, new in (("AddV2", "Add"), ("FusedBatchNormV3", "FusedBatchNorm")):  # ops the UFF parser lacks
        for node in graph.find_nodes_by_op(old):
            gs.update_node(node, op=new)
    image_node = graph.find_nodes_by_name("Input")[0]
    if "image_tensor:0" in image_node.input:
        image_node.input.remove("image_tensor:0")
    nms_node = graph.find_nodes_by_name("NMS")[0]
    if "Input" in nms_node.input:
        nms_node.input.remove("Input")
    grid = graph.find_nodes_by_op("GridAnchor_TRT")[0]
    if not grid.input:  # newer exports lose the anchor generator's input: give it a constant one
        import numpy as np

        graph.append(gs.create_node("AnchorInput", "Const", value=np.array([1, 1], np.float32)))
        grid.input.insert(0, "AnchorInput")
    graph.remove([n for n in graph.graph_outputs if n.name != "NMS"], remove_exclusive_dependencies=False)
    if "NMS" not in [n.name for n in graph.graph_outputs]:
        raise BuildError(f"{frozen_graph}: after graph surgery the NMS node is not an output; is this a TF1 OD API "
                         "SSD frozen graph (frozen_inference_graph.pb)?")
    return graph


def build_uff_engine(
    frozen_graph: PathLike,
    engine_path: PathLike,
    options: Optional[UffSsdOptions] = None,
    force: bool = False,
    spec_path: Optional[PathLike] = None,
    precision: str = "fp16",
    workspace_mb: Optional[int] = None,
    trt_module: Any = None,
    labels: Optional[Sequence[str]] = None,
) -> Path:
    """Build an NMS_TRT engine from a TF1 OD API SSD frozen graph (TensorRT < 9 with uff/graphsurgeon)."""
    from trt_perception.tools import build as builder_tools

    frozen_graph, engine_path = Path(frozen_graph), Path(engine_path)
    options = options or UffSsdOptions()
    if not frozen_graph.is_file():
        raise BuildError(f"frozen graph {frozen_graph} does not exist; fix: pass frozen_inference_graph.pb")
    if engine_path.exists() and not force:
        raise BuildError(f"engine {engine_path} already exists; refusing to overwrite it; fix: pass --force")
    trt = trt_module if trt_module is not None else builder_tools.import_tensorrt()
    reason = uff_unavailable_reason(trt)
    if reason is not None:
        raise BuildError(unavailable_message(frozen_graph, reason))
    gs = importlib.import_module("graphsurgeon")
    uff = importlib.import_module("uff")
    clock = builder_tools.BuildClock(builder_tools._print_progress)
    clock.enter(f"converting {frozen_graph} to UFF (graphsurgeon: GridAnchor_TRT, FlattenConcat_TRT, NMS_TRT)")
    graph = _ssd_graph(gs, frozen_graph, options)
    with tempfile.TemporaryDirectory(dir=str(engine_path.parent)) as folder:
        uff_path = os.path.join(folder, "model.uff")
        uff.from_tensorflow(graph.as_graph_def(), output_nodes=["NMS"], output_filename=uff_path, text=False)
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # implicit batch: what UffParser builds
        parser = trt.UffParser()
        parser.register_input("Input", (3, options.input_size, options.input_size))
        parser.register_output("MarkOutput_0")
        if not parser.parse(uff_path, network):
            raise BuildError(f"UffParser could not parse the converted {frozen_graph}; see the TensorRT log above")
        builder.max_batch_size = 1
        config = builder.create_builder_config()
        gpu = builder_tools.gpu_facts()
        workspace = int(workspace_mb or builder_tools.default_workspace_mb(gpu))
        if hasattr(config, "set_memory_pool_limit"):
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace << 20)
        else:
            config.max_workspace_size = workspace << 20
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        clock.enter(f"building the UFF engine ({precision}, workspace {workspace} MB)")
        with builder_tools.Heartbeat(clock, builder_tools.HEARTBEAT_S):
            if hasattr(builder, "build_serialized_network"):
                serialized = builder.build_serialized_network(network, config)
            else:
                engine = builder.build_engine(network, config)
                serialized = engine.serialize() if engine is not None else None
    if serialized is None:
        raise BuildError(f"TensorRT could not build {engine_path.name}; see its errors above (memory: --workspace)")
    builder_tools.atomic_write(engine_path, serialized)
    size = options.input_size
    spec = {
        "task": "detection",
        "name": frozen_graph.stem,
        "input": {"name": "Input", "height": size, "width": size, "layout": "NCHW", "color": "RGB",
                  "scale": 2.0 / 255.0, "offset": -1.0},
        "output": {"format": "nms_trt"},
        "detection": {"score_threshold": max(0.3, options.score_threshold), "max_detections": options.keep_top_k},
        "build": {
            "tensorrt_version": str(trt.__version__), "gpu_name": gpu.name,
            "compute_capability": gpu.compute_capability, "precision": precision,
            "source_frozen_graph": str(frozen_graph.resolve()),
            "onnx_sha256": None, "flags": ["FP16"] if precision == "fp16" else [], "workspace_mb": workspace,
            "implicit_batch": True,
        },
    }
    if labels:
        spec["detection"]["labels"] = list(labels)
    if spec_path is not None:
        from trt_perception.spec import read_spec_file

        user = read_spec_file(spec_path)
        user["build"] = spec["build"]
        spec = user
    save_spec(spec, engine_path.with_name(engine_path.name + ".yaml"), overwrite=True)
    clock.say(f"done: {engine_path}")
    return engine_path
