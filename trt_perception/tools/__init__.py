"""Command-line tools: each module owns one `trt-perception` subcommand and the library call behind it.

Tools may import heavy optional packages (tensorrt, tf2onnx, torch, onnx-graphsurgeon) but only inside the
functions that need them, so `trt-perception --help` works on a machine that has none of them.
"""
