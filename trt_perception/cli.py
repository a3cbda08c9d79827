"""`trt-perception` command line: one subcommand per tool, each a thin call into a ``tools`` module.

Subcommand modules are imported when the parser is built; they must keep heavy imports (tensorrt, torch,
matplotlib) inside their run functions so `trt-perception --help` stays fast and works without them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

from trt_perception import __version__
from trt_perception.errors import TrtPerceptionError

# name -> (module, add-arguments function, run function, one-line help)
SUBCOMMANDS = (
    ("demo", "trt_perception.tools.demo", "add_demo_arguments", "run_demo",
     "replay the shipped demo bag with the demo models and print the report"),
    ("infer", "trt_perception.tools.infer", "add_infer_arguments", "run_infer",
     "run a model on image files: print detections / steering, optionally write annotated images"),
    ("inspect", "trt_perception.tools.inspect_model", "add_inspect_arguments", "run_inspect",
     "print a model's inputs, outputs, spec, and what the pipeline will do with them"),
    ("spec", "trt_perception.tools.spec_writer", "add_spec_arguments", "run_spec",
     "write a model spec (MODEL.yaml) from an ONNX file: recognises Ultralytics exports and common layouts"),
    ("replay", "trt_perception.tools.replay", "add_replay_arguments", "run_replay",
     "run the node's pipeline over a rosbag2 recording, offline, and write outputs + a report"),
    ("evaluate", "trt_perception.tools.evaluate", "add_evaluate_arguments", "run_evaluate",
     "replay many recordings in parallel with one or two model sets: pooled mAP/MAE/latency, A/B, CI gates"),
    ("convert", "trt_perception.tools.convert", "add_convert_arguments", "run_convert",
     "convert Keras/TF/TFLite/PyTorch models to ONNX (+ spec); insert TensorRT NMS plugins"),
    ("tub2bag", "trt_perception.tools.tub", "add_tub2bag_arguments", "run_tub2bag",
     "write a DonkeyCar tub (tub v2) as a rosbag2 bag: camera frames + recorded commands as Twist (REP 103)"),
    ("build", "trt_perception.tools.build", "add_build_arguments", "run_build",
     "build a TensorRT engine (+ spec and build metadata) from an ONNX model"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trt-perception",
        description="TensorRT / ONNX Runtime perception for small cars: detection, steering, replay, engine builds.",
    )
    parser.add_argument("--version", action="version", version=f"trt_perception {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, add_name, run_name, help_text in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if exc.name != module_name:
                raise
            continue  # a tool not present in this build of the package
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        getattr(module, add_name)(sub)
        sub.set_defaults(_run=getattr(module, run_name))
    return parser


BROKEN_PIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away


def _drop_stdout() -> None:
    """The reader of stdout went away (`trt-perception ... | head`): send what is still buffered to /dev/null,
    so neither a traceback nor Python's 'Exception ignored ... BrokenPipeError' at exit reaches the terminal;
    that is how shell tools stop when their reader has what it wanted."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a descriptor
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        status = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return status
    except BrokenPipeError:
        _drop_stdout()
        return BROKEN_PIPE_STATUS
    except TrtPerceptionError as exc:
        if args.debug:
            raise
        print(f"trt-perception {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"trt-perception {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
