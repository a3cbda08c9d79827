"""The report's matplotlib plots, drawn in a child process while this one goes on.

On the 2-core machine the demo spent about 0.9 s of its 2.6 s in matplotlib after the replay: 0.27 s importing
it and 0.6 s drawing steering.png, latency.png and tracks.png, one after another, while a core sat idle. A child
process started first thing imports matplotlib while this process still opens the bag and the models (one core
is idle then), draws steering.png and latency.png as soon as the numbers behind them exist (while this process
scores the detections and tracks), and tracks.png last. Threads could not do this: matplotlib and the scoring
are both Python, under one GIL.

The child is a plain ``python -c`` over pipes, not ``multiprocessing``: its spawn would run the caller's main
script again in the child (a script without an ``if __name__ == "__main__"`` guard would replay twice), and
fork is unsafe once ONNX Runtime's threads run. The files are the ones the same report drawn in this process
gives (test_tools_plot_process compares them). Whatever goes wrong with the child (it cannot start, dies, hangs, or a
plot raises there) costs only time: that plot is drawn here, as without the child, and raises here if the error
is the plot's own.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import threading
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Sequence, Set

LOG = logging.getLogger("trt_perception")  # the package's logger: the node routes it into the ROS log
DRAWN_HERE = "plots drawn in this process instead: the plot process %s"
STALL_S = 60.0  # a child that answers nothing for this long is stopped, and the rest is drawn here
CHILD = "import sys; sys.path[:0] = sys.argv[1:]; from trt_perception.tools.plot_process import serve; serve()"


class PlotProcess:
    """One child process drawing one report's matplotlib plots (``report.MATPLOTLIB_PLOTS``) on request: start
    it first thing, ``submit`` plots as their numbers become final, ``collect`` them, ``close`` it."""

    def __init__(self) -> None:
        self._asked: List[str] = []  # plots sent to the child, in the order it answers them
        self._answers: Dict[str, Optional[str]] = {}  # plot -> its file, or None where the child failed
        self._prepared: Set[Path] = set()
        self._child: Optional[subprocess.Popen] = None
        try:  # its own session: Ctrl-C in the terminal is this process's to handle (it stops the child)
            self._child = subprocess.Popen([sys.executable, "-c", CHILD, *sys.path], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                           start_new_session=os.name == "posix")
        except OSError as exc:  # no process may start here: the plots are drawn in this process
            LOG.info(DRAWN_HERE, f"did not start ({exc})")

    def submit(self, report: Any, directory: Path, names: Sequence[str]) -> None:
        """Start drawing the plots ``names`` of ``report`` (those of ``MATPLOTLIB_PLOTS`` it has data for) into
        ``directory``; call once what each shows is final. The first call for a folder empties it of an earlier
        report's files (``prepare_report_folder``). A plot already started is not started again."""
        from trt_perception.tools.report import MATPLOTLIB_PLOTS, plot_names, prepare_report_folder

        directory = Path(directory)
        if directory not in self._prepared:
            prepare_report_folder(directory)
            self._prepared.add(directory)
        wanted = [n for n in plot_names(report) if n in names and n in MATPLOTLIB_PLOTS and n not in self._asked]
        if self._child is None or not wanted:
            return
        light = replace(report, series=replace(report.series, samples=[], rows=None))  # what these plots read
        try:
            self._watched(lambda child: _send(child.stdin, (wanted, light, str(directory))))
        except (OSError, ValueError) as exc:  # the child is gone: ``collect`` draws these here
            self._stop(f"failed ({exc})")
            return
        self._asked.extend(wanted)

    def collect(self, report: Any, directory: Path) -> Dict[str, Path]:
        """The matplotlib plots of ``report`` the child drew into ``directory`` (started here if not yet);
        a plot it could not draw is missing from the result, for the caller to draw."""
        from trt_perception.tools.report import MATPLOTLIB_PLOTS

        self.submit(report, directory, MATPLOTLIB_PLOTS)
        while self._child is not None and len(self._answers) < len(self._asked):
            child = self._child
            try:
                name, path, error = self._watched(lambda child: pickle.load(child.stdout))
            except Exception as exc:  # EOF (it exited or was stopped) or a damaged answer
                self._stop(f"exited (code {child.poll()}; {type(exc).__name__})")
                break
            self._answers[name] = path
            if error:
                LOG.info(DRAWN_HERE, f"could not draw {name}.png ({error})")
        return {name: Path(path) for name, path in self._answers.items() if path is not None}

    def _watched(self, exchange: Callable[[subprocess.Popen], Any]) -> Any:
        """``exchange(child)``, a blocking read or write on its pipes, with the child killed if it takes longer
        than ``STALL_S`` (a hung child: its pipes close, and the read or write ends in an error)."""
        child = self._child
        watchdog = threading.Timer(STALL_S, child.kill)  # type: ignore[union-attr]
        watchdog.start()
        try:
            return exchange(child)  # type: ignore[arg-type]
        finally:
            watchdog.cancel()

    def close(self) -> None:
        """Stop the child. It is killed rather than asked to exit: every plot it drew is a closed file by the
        time it answered, and an interpreter that imported matplotlib takes ~0.2 s to shut down."""
        self._stop(None)

    def _stop(self, why: Optional[str]) -> None:
        if why is not None:
            LOG.info(DRAWN_HERE, why)
        child, self._child = self._child, None
        if child is None:
            return
        child.kill()
        for stream in (child.stdin, child.stdout):
            with suppress(OSError):  # a broken pipe while flushing: the child is gone anyway
                stream.close()  # type: ignore[union-attr]
        try:
            child.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def __enter__(self) -> PlotProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def start_plot_process(wanted: bool) -> Optional[PlotProcess]:
    """A ``PlotProcess`` where the report will have matplotlib plots (``wanted``: a report folder, plots on, and
    matplotlib installed), else None: such a report is drawn in this process (or has no plots)."""
    from importlib.util import find_spec

    if not wanted or find_spec("matplotlib") is None:
        return None
    return PlotProcess()


def _send(stream: Any, message: Any) -> None:
    pickle.dump(message, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


def serve(requests: Optional[BinaryIO] = None, answers: Optional[BinaryIO] = None) -> None:
    """The child: import matplotlib, then draw what each request names and answer ``(name, path, error)`` for
    each plot, until its input ends."""
    from trt_perception.tools.report import _pyplot, draw_plot

    requests = requests or sys.stdin.buffer
    answers = answers or sys.stdout.buffer
    plt = _pyplot()
    while True:
        try:
            names, report, directory = pickle.load(requests)
        except EOFError:  # the parent closed its end: done
            return
        for name in names:
            try:
                if plt is None:
                    raise ImportError("matplotlib is not installed")
                answer = (name, str(draw_plot(plt, name, report, Path(directory))), None)
            except Exception as exc:  # answered, and drawn in the parent (where a plot's own error raises)
                answer = (name, None, f"{type(exc).__name__}: {exc}")
            try:
                _send(answers, answer)
            except OSError:  # the parent is gone
                return
