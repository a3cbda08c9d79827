"""`trt-perception evaluate`: replay many recordings with one or two model sets, one aggregated report, a gate.

Each input (rosbag2 bag; see ``evaluate_inputs.INPUT_KINDS`` for the kinds) is replayed exactly as
`trt-perception replay` does, in worker processes on this machine (``--workers``, default: the cores) or as
Ray tasks on a cluster (``--ray ADDRESS``, optional extra). Workers hand back per-frame rows that go to the
run folder at once; the totals (pooled COCO mAP, pooled steering/throttle MAE, latency percentiles, bad and
dropped frames) are computed from those files afterwards, so memory stays flat in the number of inputs. With
``--params-b`` every input is replayed under both model sets and the report sets them side by side, with
the frames where they disagree most; ``--fail-if`` thresholds set the exit status, for CI.

Exit status: 0 all good; 1 a ``--fail-if`` gate tripped; 2 a usage error (nothing run); 3 no gate tripped
but some input could not be replayed (it is listed; the totals leave it out).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from trt_perception.errors import ConfigError
from trt_perception.tools import evaluate_inputs
from trt_perception.tools.evaluate_inputs import EvalOptions, InputRef, Task, discover_inputs, input_kind, run_task
from trt_perception.tools.evaluate_report import (
    LATENCY_STAGE,
    TOP_FRAMES,
    RunLayout,
    aggregate,
    format_evaluation,
    total_metrics,
    write_files,
)

PathLike = Union[str, Path]
EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_INPUTS = 0, 1, 2, 3
REPORT_TOOL = "trt-perception evaluate"
DEFAULT_OUT = "evaluation"
RAY_HINT = "pip install 'ray>=2.0' (or pip install 'trt_perception[ray]')"

# ------------------------------------------------------------------------------------------- gates

ABSOLUTE_METRICS = {
    "map50": "pooled COCO mAP@0.5",
    "map50_95": "pooled COCO mAP@[.5:.95]",
    "precision": "pooled detection precision at IoU 0.5",
    "recall": "pooled detection recall at IoU 0.5",
    "steering_mae": "steering MAE over matched frames",
    "throttle_mae": "throttle MAE over matched frames",
    "mota": "pooled tracking MOTA (the detection head's tracker against ground-truth track ids)",
    "idf1": "pooled tracking IDF1",
    "id_switches": "tracking identity switches, summed",
    "latency_p50_ms": f"median per-frame latency ({LATENCY_STAGE}), ms",
    "latency_p95_ms": f"95th percentile per-frame latency ({LATENCY_STAGE}), ms",
    "bad_frames": "frames that could not be decoded",
    "dropped_frames": "frames dropped by the latest-frame policy (--realtime)",
    "failed_inputs": "inputs that could not be replayed",
}
RELATIVE_METRICS = {
    "map50_drop": "mAP@0.5 of A minus that of B",
    "map50_95_drop": "mAP@[.5:.95] of A minus that of B",
    "precision_drop": "precision of A minus that of B",
    "recall_drop": "recall of A minus that of B",
    "steering_mae_rise": "steering MAE of B minus that of A",
    "throttle_mae_rise": "throttle MAE of B minus that of A",
    "mota_drop": "MOTA of A minus that of B",
    "idf1_drop": "IDF1 of A minus that of B",
    "id_switches_rise": "id switches of B minus those of A",
    "latency_p50_rise_ms": "median latency of B minus that of A, ms",
    "latency_p95_rise_ms": "p95 latency of B minus that of A, ms",
    "bad_frames_rise": "bad frames of B minus those of A",
    "dropped_frames_rise": "dropped frames of B minus those of A",
}
_NOT_MEASURED = {
    "map": "no detection head or no --truth-detections-topic ground truth in the inputs",
    "precision": "no detection head or no --truth-detections-topic ground truth in the inputs",
    "recall": "no detection head or no --truth-detections-topic ground truth in the inputs",
    "steering": "no steering head or no --truth-drive-topic commands in the inputs",
    "throttle": "no steering head or no --truth-drive-topic commands in the inputs",
    "latency": "no frame was processed",
    "mota": "no tracker (HEAD.tracker: bytetrack) or no ground-truth track ids (Detection2D.id) in the inputs",
    "idf1": "no tracker (HEAD.tracker: bytetrack) or no ground-truth track ids (Detection2D.id) in the inputs",
    "id_switches": "no tracker (HEAD.tracker: bytetrack) or no ground-truth track ids (Detection2D.id) in the inputs",
}
_OPS: Dict[str, Callable[[float, float], bool]] = {
    ">=": lambda x, y: x >= y, "<=": lambda x, y: x <= y, ">": lambda x, y: x > y, "<": lambda x, y: x < y,
}
_GATE_RE = re.compile(r"\s*([A-Za-z0-9_]+)\s*(>=|<=|>|<|==|=|!=)?\s*(.*?)\s*")
_NUMBER_RE = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class Gate:
    """``METRIC OP NUMBER``: the run fails when the measured metric satisfies the comparison."""

    expression: str
    metric: str
    op: str
    threshold: float

    def check(self, value: Optional[float]) -> Tuple[bool, str]:
        """(tripped, message); a metric that was not measured trips the gate (a CI must not pass blind)."""
        if value is None or not math.isfinite(value):
            family = next((why for key, why in _NOT_MEASURED.items() if self.metric.startswith(key)), "")
            return True, f"{self.metric} was not measured ({family or 'no data'}), so the gate cannot pass"
        tripped = _OPS[self.op](value, self.threshold)
        return tripped, f"{self.metric} = {value + 0.0:.6g}; the run fails when it is {self.op} {self.threshold:g}"


def parse_gate(text: str, ab: bool) -> Gate:
    """One ``--fail-if`` expression; every mistake is a ConfigError naming it and the grammar."""
    grammar = ("expected METRIC OP NUMBER with OP one of >, >=, <, <=, e.g. --fail-if 'map50_drop>0.01' or "
               "--fail-if 'steering_mae>0.1'")
    match = _GATE_RE.fullmatch(text or "")
    if not match or not match.group(2):
        raise ConfigError(f"--fail-if {text!r}: {grammar}")
    metric, op, number = match.group(1).lower(), match.group(2), match.group(3)
    known = {**ABSOLUTE_METRICS, **RELATIVE_METRICS}
    if metric not in known:
        close = difflib.get_close_matches(metric, list(known), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"--fail-if {text!r}: unknown metric {metric!r}; {hint}expected one of "
                          f"{sorted(ABSOLUTE_METRICS)} (the candidate's totals) or, with --params-b, "
                          f"{sorted(RELATIVE_METRICS)} (B against A, positive = B worse)")
    if op not in _OPS:
        raise ConfigError(f"--fail-if {text!r}: operator {op!r} is not allowed (measured numbers are rarely "
                          f"exactly equal); {grammar}")
    if not _NUMBER_RE.fullmatch(number):
        raise ConfigError(f"--fail-if {text!r}: {number!r} is not a number; {grammar}")
    if metric in RELATIVE_METRICS and not ab:
        raise ConfigError(f"--fail-if {text!r}: {metric} compares two model sets; fix: pass --params-b NEW.yaml "
                          f"to compare against, or gate an absolute metric ({sorted(ABSOLUTE_METRICS)})")
    return Gate(text.strip(), metric, op, float(number))


def check_gates(gates: Sequence[Gate], results: Dict[str, Any], candidate: str) -> List[Dict[str, Any]]:
    """Each gate against the run's totals: absolute metrics are the candidate's (B, or the only set)."""
    values: Dict[str, Optional[float]] = dict(total_metrics(results["totals"][candidate], len(results["failed"])))
    values.update(results.get("differences") or {})
    out = []
    for gate in gates:
        tripped, message = gate.check(values.get(gate.metric))
        out.append({"expression": gate.expression, "metric": gate.metric, "op": gate.op,
                    "threshold": gate.threshold, "value": values.get(gate.metric), "failed": tripped,
                    "message": message})  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------- run folder


def _is_evaluation_folder(path: Path) -> bool:
    report = path / "report.json"
    if not report.is_file():
        return False
    try:
        return json.loads(report.read_text(encoding="utf-8")).get("tool") == REPORT_TOOL
    except (OSError, ValueError):
        return False


def _check_out(out: Path, force: bool) -> None:
    """Before any work: ``--out`` can be written (results are staged beside it, in ``.NAME.partial``), and holds
    no earlier evaluation unless ``force``; anything else of the user's there is never deleted."""
    from trt_perception.tools.output_paths import check_writable_folder

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is an existing file; expected a folder (created when missing); fix: pass "
                          "another --out, or move the file away")
    check_writable_folder(out.parent, "--out")
    if not out.exists():
        return
    if not any(out.iterdir()):
        check_writable_folder(out, "--out")  # an empty folder of the user's: the files go into it
        return
    if not force:
        raise ConfigError(f"--out {out} exists; refusing to overwrite it; fix: pass --force to replace an earlier "
                          "evaluation there, or another --out")
    if not _is_evaluation_folder(out):
        raise ConfigError(f"--out {out} exists and is not an earlier evaluation (no report.json written by "
                          f"{REPORT_TOOL}); refusing to delete it even with --force; fix: pass another --out")


# ------------------------------------------------------------------------------------------- runners


class _Progress:
    """One bar for the whole run (frames, or inputs when frame counts are unknown), on stderr."""

    def __init__(self, task_frames: Optional[Dict[Tuple[int, str], int]], tasks: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.by_frames = task_frames is not None
        self.task_frames = task_frames or {}  # (input index, model set) -> frames it will replay
        total = sum(self.task_frames.values()) if self.by_frames else tasks
        self.bar = tqdm(total=total, unit="frame" if self.by_frames else "input",
                        desc="evaluate", disable=not enabled, dynamic_ncols=True, file=sys.stderr)
        self.seen = 0
        self.done = 0
        self.failed = 0

    def frames(self, count: int) -> None:
        if self.by_frames and count > self.seen:
            self.bar.update(min(count, self.bar.total or count) - min(self.seen, self.bar.total or self.seen))
            self.seen = count

    def task_done(self, result: Dict[str, Any], frames_if_unseen: bool) -> None:
        self.done += 1
        self.failed += 0 if result.get("ok") else 1
        if self.by_frames and not result.get("ok"):  # its frames will never come: the bar ends full, not at 70%
            unseen = self.task_frames.get((result.get("index", -1), result.get("variant", "")), 0)
            self.bar.total = max(self.bar.n, (self.bar.total or 0) - unseen)
            self.bar.refresh()
        if not self.by_frames:
            self.bar.update(1)
        elif frames_if_unseen:
            frames = (result.get("report") or {}).get("frames", {}).get("in", 0)
            self.frames(self.seen + int(frames))
        self.bar.set_postfix(inputs=self.done, failed=self.failed, refresh=False)

    def close(self) -> None:
        if self.by_frames and self.failed and self.bar.n < (self.bar.total or 0):  # a failed input's partial frames
            self.bar.total = self.bar.n
            self.bar.refresh()
        self.bar.close()


class _LocalCounter:
    """The shared frame counter's interface, for work done in this process."""

    def __init__(self) -> None:
        self.value = 0

    @contextmanager
    def get_lock(self) -> Iterator[None]:
        yield


def _failure(task: Task, error: str) -> Dict[str, Any]:
    return {"index": task.index, "variant": task.variant, "input": task.input.path, "kind": task.input.kind,
            "name": task.input.name, "params": task.params, "ok": False, "error": error, "wall_s": 0.0}


def run_in_process(tasks: Sequence[Task], on_result: Callable[[Dict[str, Any]], None], progress: _Progress,
                   task_function: Callable[[Task], Dict[str, Any]] = run_task) -> None:
    """Every task here, one after the other (``--workers 0``: debugging, profiling)."""
    counter = _LocalCounter()
    previous = evaluate_inputs._PROGRESS
    evaluate_inputs._PROGRESS = counter
    try:
        for task in tasks:
            result = task_function(task)
            progress.frames(counter.value)
            on_result(result)
            progress.task_done(result, frames_if_unseen=False)
    finally:
        evaluate_inputs._PROGRESS = previous


def run_local(tasks: Sequence[Task], workers: int, on_result: Callable[[Dict[str, Any]], None],
              progress: _Progress, task_function: Callable[[Task], Dict[str, Any]] = run_task) -> None:
    """Tasks in ``workers`` spawned processes, at most one per worker in flight. A worker that dies (a crash
    in native code) breaks the pool: the tasks it could have been running are rerun one by one, each in a
    fresh process, so the one that crashes is reported and the rest go on."""
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("q", 0)
    queue: Deque[Task] = deque(tasks)
    while queue:
        suspects = _pool_pass(queue, workers, ctx, counter, on_result, progress, task_function)
        for task in suspects:
            single: Deque[Task] = deque([task])
            if _pool_pass(single, 1, ctx, counter, on_result, progress, task_function):
                result = _failure(task, "the worker process died while replaying this input (a crash in native "
                                        "code: ONNX Runtime, TensorRT, OpenCV or the bag reader); the other inputs "
                                        "went on; fix: replay it alone with `trt-perception replay` to see where")
                on_result(result)
                progress.task_done(result, frames_if_unseen=False)


def _pool_pass(queue: Deque[Task], workers: int, ctx: Any, counter: Any, on_result: Callable[[Dict[str, Any]], None],
               progress: _Progress, task_function: Callable[[Task], Dict[str, Any]]) -> List[Task]:
    """Run queued tasks until the queue is empty (returns []) or a worker dies (returns the tasks that were in
    flight then and did not finish)."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=evaluate_inputs.init_worker,
                               initargs=(counter,))
    inflight: Dict[Future, Task] = {}
    try:
        while queue or inflight:
            while queue and len(inflight) < workers:
                task = queue.popleft()
                inflight[pool.submit(task_function, task)] = task
            done, _ = wait(list(inflight), timeout=0.25, return_when=FIRST_COMPLETED)
            progress.frames(counter.value)
            broken = False
            for future in done:
                task = inflight.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    inflight[future] = task
                    broken = True
                    continue
                on_result(result)
                progress.task_done(result, frames_if_unseen=False)
            if broken:
                wait(list(inflight), timeout=5)
                suspects = []
                for future, task in inflight.items():
                    if future.done() and future.exception() is None:
                        on_result(future.result())
                        progress.task_done(future.result(), frames_if_unseen=False)
                    else:
                        suspects.append(task)
                return suspects
    except BaseException:
        for future in inflight:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True) if sys.version_info >= (3, 9) else pool.shutdown(wait=False)
        raise
    pool.shutdown(wait=True)
    return []


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address answers a TCP connect within ``timeout_s``: ray.init retries an
    unreachable GCS for minutes, printing its own errors, before it gives up."""
    import socket

    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # 'auto', 'local', or a form Ray itself explains
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"--ray {address}: nothing answers at {host}:{port} ({exc.strerror or exc}); fix: start "
                          "the cluster there (`ray start --head` prints its address), pass 'auto' for one running "
                          "on this machine, or 'local' to start one for this run") from None


def run_ray(tasks: Sequence[Task], address: str, on_result: Callable[[Dict[str, Any]], None], progress: _Progress,
            task_function: Callable[[Task], Dict[str, Any]] = run_task, cpus_per_task: float = 1.0) -> None:
    """One Ray task per (input, model set) on the cluster at ``address`` ('auto', 'local', 'HOST:PORT',
    'ray://HOST:10001'); Ray schedules them. A task that fails (also a dead worker) is reported, not retried."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray {address}: Ray is not installed; fix: {RAY_HINT}") from None
    started_here = not ray.is_initialized()
    if started_here:
        _check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except Exception as exc:  # ConnectionError, ValueError for a malformed address, ...
            raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster there: {type(exc).__name__}: "
                              f"{exc}; fix: start one (`ray start --head` prints its address) and pass that "
                              "address, 'auto' for the one running on this machine, or 'local' to start one "
                              "for this run") from None
    try:
        # a task is given cpus_per_task cores: replay's helper threads and OpenCV's pool follow that, not the
        # node's core count (Ray pins no affinity, so replay's default would take every core of the node)
        threads = max(1, int(cpus_per_task))
        remote = ray.remote(evaluate_inputs.run_in_worker).options(num_cpus=cpus_per_task, max_retries=0)
        refs = {remote.remote(task_function, threads, task): task for task in tasks}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            for ref in ready:
                task = refs.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    result = _failure(task, f"the Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                on_result(result)
                progress.task_done(result, frames_if_unseen=True)
    finally:
        if started_here:
            ray.shutdown()


# ------------------------------------------------------------------------------------------- evaluate


@dataclass
class Evaluation:
    """What ``evaluate`` returns: the report (as written to report.json), its text and the exit status."""

    report: Dict[str, Any]
    text: str
    exit_code: int
    out: Path
    files: List[Path] = field(default_factory=list)


def evaluate(
    inputs: Sequence[PathLike],
    params: PathLike,
    params_b: Optional[PathLike] = None,
    out: PathLike = DEFAULT_OUT,
    workers: Optional[int] = None,
    ray_address: Optional[str] = None,
    options: Optional[EvalOptions] = None,
    labels: Optional[Sequence[str]] = None,
    fail_if: Sequence[str] = (),
    inputs_from: Sequence[PathLike] = (),
    force: bool = False,
    progress: bool = False,
    plots: bool = True,
    top: int = TOP_FRAMES,
    task_function: Callable[[Task], Dict[str, Any]] = run_task,
) -> Evaluation:
    """Replay every input under ``params`` (and ``params_b``), write the report folder ``out``, check gates.

    ``workers``: local processes (None: the cores; 0: in this process). ``ray_address``: run on Ray instead.
    ``task_function``: what runs one task (tests inject crashes through it).
    """
    from trt_perception.tools.replay import load_config

    started = time.perf_counter()
    options = options or EvalOptions()
    ab = params_b is not None
    gates = [parse_gate(text, ab) for text in fail_if]
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers {workers}: expected 0 (in this process) or more worker processes")
    if top < 0:
        raise ConfigError(f"--top {top}: expected 0 or more frames")
    refs = discover_inputs(inputs, inputs_from)
    variants = _variants(params, params_b, labels)
    for variant in variants:  # a broken params file is one error now, not one per input later
        load_config(variant["params"], list(options.heads) if options.heads else None)
    out_path = Path(out).expanduser()
    from trt_perception.tools.output_paths import refuse_output_inside

    for ref in refs:  # (the staging folder sits beside --out: inside a recording only if --out is)
        refuse_output_inside(ref.path, out_path, "--out")
    _check_out(out_path, force)
    staging = out_path.with_name(f".{out_path.name}.partial")
    if staging.exists():
        if not force:  # an interrupted run's finished inputs: the user's, until they say otherwise
            done = len(list(staging.glob("inputs/*/*.json")))
            raise ConfigError(f"{staging} holds an interrupted evaluation ({done} finished input runs); refusing to "
                              "delete it; fix: pass --force to start over, or move it away to keep its results")
        shutil.rmtree(staging)
    layout = RunLayout(staging)
    staging.mkdir(parents=True)
    tasks = [Task(i, v["key"], v["params"], ref, options) for i, ref in enumerate(refs) for v in variants]
    runner, workers_used = _runner_text(len(tasks), workers, ray_address)
    bar = _Progress(_task_frames(refs, variants, options), len(tasks), progress)
    try:
        if ray_address:
            run_ray(tasks, ray_address, layout.save_result, bar, task_function)
        elif workers_used == 0:
            run_in_process(tasks, layout.save_result, bar, task_function)
        else:
            run_local(tasks, workers_used, layout.save_result, bar, task_function)
    except KeyboardInterrupt:
        bar.close()
        print(f"evaluate: interrupted; the inputs finished so far are in {staging}", file=sys.stderr)
        raise
    bar.close()
    names = display_names([r.path for r in refs])
    items = [{"index": i, "name": names[i], "path": r.path, "kind": r.kind} for i, r in enumerate(refs)]
    results, histograms = aggregate(layout, items, [v["key"] for v in variants], top)
    candidate = variants[-1]["key"]
    report: Dict[str, Any] = {
        "tool": REPORT_TOOL,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runner": runner,
        "wall_s": 0.0,
        "options": _options_dict(options),
        "variants": variants,
        "candidate": candidate,
        "results": results,
        "gates": check_gates(gates, results, candidate),
        "notes": [],
        "out": str(out_path),
        "files": [],
    }
    report["_histograms"] = histograms
    files = write_files(report, staging, plots=plots)
    report.pop("_histograms")
    exit_code = _exit_code(report)
    report["exit_code"] = exit_code
    report["wall_s"] = time.perf_counter() - started
    names = [*files, staging / "report.json", staging / "summary.txt"]
    report["files"] = [str(out_path / p.name) for p in names]
    text = format_evaluation(report)
    (staging / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    (staging / "summary.txt").write_text(text + "\n", encoding="utf-8")
    if out_path.is_dir() and not any(out_path.iterdir()):
        for item in staging.iterdir():  # the user's empty folder (its permissions, maybe a mount point) stays
            os.replace(item, out_path / item.name)
        staging.rmdir()
    else:
        if out_path.exists():  # an earlier evaluation, and --force (checked before the run)
            shutil.rmtree(out_path)
        staging.rename(out_path)
    return Evaluation(report, text, exit_code, out_path, [out_path / p.name for p in names])


def display_names(paths: Sequence[str]) -> List[str]:
    """Each input's name in the tables: its file or folder name (no .mcap/.db3), with as many parent folders as
    it takes to tell inputs of the same name apart (``data/tub_1`` and ``bags/tub_1``)."""
    parts = [Path(p).expanduser().resolve().parts for p in paths]
    stems = [Path(p).stem if Path(p).suffix in (".mcap", ".db3") else Path(p).name for p in paths]
    depth = [1] * len(paths)
    while True:
        names = ["/".join([*part[-d:-1], stem]) if d > 1 else stem for part, stem, d in zip(parts, stems, depth)]
        seen: Dict[str, List[int]] = {}
        for i, name in enumerate(names):
            seen.setdefault(name, []).append(i)
        clashes = [i for group in seen.values() if len(group) > 1 for i in group if depth[i] < len(parts[i])]
        if not clashes:
            return names
        for i in clashes:
            depth[i] += 1


def _variants(params: PathLike, params_b: Optional[PathLike], labels: Optional[Sequence[str]]) -> List[Dict[str, str]]:
    paths = [Path(params).expanduser()] + ([Path(params_b).expanduser()] if params_b is not None else [])
    for path in paths:
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise ConfigError(f"params file {path} {what}; expected the node params YAML of a model set "
                              "(e.g. config/car.yaml)")
    keys = ["A", "B"][: len(paths)]
    if labels is not None:
        labels = [str(label).strip() for label in labels]
        if len(labels) != len(paths) or not all(labels):
            example = "fp16,int8" if len(paths) == 2 else "fp16"
            raise ConfigError(f"--labels {','.join(labels)!r}: expected {len(paths)} non-empty name(s), comma-"
                              f"separated, one per params file, e.g. --labels {example}")
    else:
        labels = [p.stem for p in paths]
        if len(set(labels)) < len(labels):
            labels = [f"{k}:{p.parent.name}/{p.stem}" for k, p in zip(keys, paths)]
    return [{"key": k, "label": label, "params": str(p.resolve())} for k, label, p in zip(keys, labels, paths)]


def _runner_text(tasks: int, workers: Optional[int], ray_address: Optional[str]) -> Tuple[str, int]:
    if ray_address:
        return f"Ray at {ray_address}", -1
    if workers is None:
        workers = os.cpu_count() or 1
    workers = min(workers, tasks)
    if workers == 0:
        return "this process", 0
    return f"{workers} local worker process{'es' if workers != 1 else ''}", workers


def _task_frames(refs: Sequence[InputRef], variants: Sequence[Dict[str, str]], options: EvalOptions
                 ) -> Optional[Dict[Tuple[int, str], int]]:
    """Frames each (input, model set) will replay, from the inputs' metadata (None: some input cannot tell)."""
    from trt_perception.tools.replay import load_config

    topics = {v["key"]: options.image_topic or load_config(v["params"]).image_topic for v in variants}
    frames: Dict[Tuple[int, str], int] = {}
    for index, ref in enumerate(refs):
        for variant in variants:
            count = input_kind(ref.kind).count_frames(Path(ref.path), topics[variant["key"]])
            if count is None:
                return None
            frames[(index, variant["key"])] = min(count, options.limit) if options.limit else count
    return frames


def _options_dict(options: EvalOptions) -> Dict[str, Any]:
    data = dataclasses.asdict(options)
    data["heads"] = list(options.heads) if options.heads else None
    return data


def _exit_code(report: Dict[str, Any]) -> int:
    if any(g["failed"] for g in report["gates"]):
        return EXIT_GATE
    if report["results"]["failed"]:
        return EXIT_INPUTS
    return EXIT_OK


# ------------------------------------------------------------------------------------------- CLI


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="bag folders, .mcap/.db3 files, folders holding them (searched below), or globs "
                             "(quote them: 'runs/*/bag')")
    parser.add_argument("--inputs-from", action="append", default=[], metavar="FILE",
                        help="a text file of input paths, one a line ('#' comments; relative to the file)")
    parser.add_argument("--params", required=True, metavar="A.yaml",
                        help="node params YAML of the model set to evaluate (A: the baseline in an A/B run)")
    parser.add_argument("--params-b", default=None, metavar="B.yaml",
                        help="a second model set (the candidate, e.g. a rebuilt or INT8 engine): every input is "
                             "replayed under both, side by side")
    parser.add_argument("--labels", default=None, help="names of the model sets in the report, comma-separated "
                                                       "(default: the params files' names)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"report folder (default ./{DEFAULT_OUT}): report.json, summary.txt, per_input.csv, "
                             "plots, and per-input results under inputs/")
    parser.add_argument("--force", action="store_true", help="replace an earlier evaluation in --out")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes on this machine (default: the cores; 0: in this process)")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="run the replays as Ray tasks on a cluster: 'auto', HOST:PORT, ray://HOST:10001, or "
                             f"'local' (needs Ray: {RAY_HINT}; inputs and models must be at the same paths on "
                             "every node)")
    parser.add_argument("--fail-if", action="append", default=[], metavar="EXPR",
                        help="exit 1 when EXPR holds, e.g. 'map50_drop>0.01', 'steering_mae_rise>0.005', "
                             "'map50<0.5' (repeatable; see docs for the metrics)")
    parser.add_argument("--truth-detections-topic", default=None,
                        help="ground-truth Detection2DArray topic (boxes stamped like the frames) for mAP")
    parser.add_argument("--truth-drive-topic", default=None,
                        help="recorded drive commands (Twist, TwistStamped, AckermannDrive[Stamped]) for MAE")
    parser.add_argument("--image-topic", default=None, help="camera topic (default: the params' one)")
    parser.add_argument("--heads", default=None, help="which configured heads run, comma-separated")
    parser.add_argument("--realtime", action="store_true",
                        help="recorded timing with the latest-frame policy, to count dropped frames (timing "
                             "depends on how busy the workers' cores are)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="replay only the first N frames of "
                                                                             "each input")
    parser.add_argument("--distro", choices=("humble", "jazzy"), default=None,
                        help="message definitions for bags that carry none (default humble)")
    parser.add_argument("--top", type=int, default=TOP_FRAMES, metavar="N",
                        help=f"A/B: list the N frames where the model sets disagree most (default {TOP_FRAMES})")
    parser.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print report.json instead of the table")


def run_evaluate(args: argparse.Namespace) -> int:
    from trt_perception.tools.replay import parse_heads

    if args.limit is not None and args.limit <= 0:
        raise ConfigError(f"--limit {args.limit}: expected a positive number of frames")
    heads = parse_heads(args.heads)
    options = EvalOptions(
        image_topic=args.image_topic, heads=tuple(heads) if heads else None,
        truth_detections_topic=args.truth_detections_topic, truth_drive_topic=args.truth_drive_topic,
        realtime=args.realtime, limit=args.limit, distro=args.distro,
    )  # fmt: skip
    labels = [s for s in args.labels.split(",")] if args.labels is not None else None
    result = evaluate(
        args.inputs, args.params, params_b=args.params_b, out=args.out, workers=args.workers,
        ray_address=args.ray, options=options, labels=labels, fail_if=args.fail_if, inputs_from=args.inputs_from,
        force=args.force, progress=not args.no_progress and sys.stderr.isatty(), plots=not args.no_plots,
        top=args.top,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result.report, indent=1))
    else:
        print(result.text)
    return result.exit_code
