"""The aggregated report of `trt-perception evaluate`: totals over every input, A/B differences, files.

Everything here reads the run folder the workers' results were written to, one input at a time, so memory
does not grow with the number of frames (the per-input table keeps a few numbers per input). How the totals
are made:

- detection mAP: COCO mAP@0.5 and @[.5:.95] by ``evaluation.coco_map`` (faster-coco-eval) over the POOLED
  frames of all inputs (not a mean of per-input mAPs); precision/recall from the summed TP/FP/FN;
- steering/throttle MAE and RMSE: pooled over matched frames (each input weighted by its matched frames);
- latency: count, mean and max exact; percentiles from merged log-spaced histograms (bins 1% wide, so a
  percentile is within 0.5% of the pooled samples' own);
- frames in/processed/bad/failed/dropped: sums; failed inputs are listed and left out of the totals (in A/B, an input
  that failed under either model set is left out of both, so both totals cover the same frames).
"""

from __future__ import annotations

import csv
import heapq
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from trt_perception.tools.evaluate_inputs import FrameRows, finite
from trt_perception.tools.report import plain_log_ticks, save_figure

LATENCY_STAGE = "total"  # the stage gates and tables quote: decode + every model, per frame
HIST_LO_S, HIST_HI_S, HIST_RATIO = 1e-6, 1e3, 1.01
TOP_FRAMES = 10
STEERING_DIFF_BINS = np.linspace(0.0, 2.0, 801)  # 0.0025 wide; steering spans [-1, 1]


# ------------------------------------------------------------------------------------------- latency


class LatencyHistogram:
    """Per-frame seconds of one stage, mergeable across inputs: exact count/mean/max; percentiles from
    log-spaced bins 1% wide, interpolated as numpy's default does (within about 0.5% of the pooled samples')."""

    BINS = math.ceil(math.log(HIST_HI_S / HIST_LO_S) / math.log(HIST_RATIO))
    EDGES = HIST_LO_S * HIST_RATIO ** np.arange(BINS + 1)

    def __init__(self) -> None:
        self.counts = np.zeros(self.BINS, np.int64)
        self.count = 0
        self.sum = 0.0
        self.max = -math.inf

    def add(self, seconds: np.ndarray) -> None:
        values = np.asarray(seconds, np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        index = np.floor(np.log(np.clip(values, HIST_LO_S, HIST_HI_S * 0.999) / HIST_LO_S) / math.log(HIST_RATIO))
        self.counts += np.bincount(index.astype(np.int64), minlength=self.BINS)[: self.BINS]
        self.count += int(values.size)
        self.sum += float(values.sum())
        self.max = max(self.max, float(values.max()))

    def percentile(self, q: float) -> float:
        """Seconds below which ``q`` percent of the frames fall (NaN without samples)."""
        if self.count == 0:
            return math.nan
        # numpy's default ('linear'): between the order statistics at floor(rank) and the next one; each
        # order statistic is read as the centre of its bin (the largest as the exact maximum)
        rank = q / 100.0 * (self.count - 1)
        low = math.floor(rank)
        cumulative = np.cumsum(self.counts)

        def value(order: int) -> float:
            if order >= self.count - 1:
                return self.max
            k = int(np.searchsorted(cumulative, order + 1))
            return min(math.sqrt(self.EDGES[k] * self.EDGES[k + 1]), self.max)

        below = value(low)
        return below + (rank - low) * (value(low + 1) - below) if rank > low else below

    def to_dict(self) -> Dict[str, Any]:
        return {
            "count": self.count,
            "p50_ms": finite(self.percentile(50) * 1e3),
            "p95_ms": finite(self.percentile(95) * 1e3),
            "p99_ms": finite(self.percentile(99) * 1e3),
            "max_ms": finite(self.max * 1e3) if self.count else None,
            "mean_ms": finite(self.sum / self.count * 1e3) if self.count else None,
        }


# ------------------------------------------------------------------------------------------- run folder


@dataclass
class RunLayout:
    """Where a run keeps its files."""

    root: Path

    def input_dir(self, variant: str) -> Path:
        return self.root / "inputs" / variant

    def stem(self, index: int, name: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
        return f"{index:04d}-{safe}"

    def summary_path(self, variant: str, index: int, name: str) -> Path:
        return self.input_dir(variant) / f"{self.stem(index, name)}.json"

    def rows_path(self, variant: str, index: int, name: str) -> Path:
        return self.input_dir(variant) / f"{self.stem(index, name)}.npz"

    def save_result(self, result: Dict[str, Any]) -> None:
        """One worker result: rows to .npz, the rest (report, error) to .json; nothing kept in memory."""
        variant, index, name = result["variant"], int(result["index"]), str(result["name"])
        folder = self.input_dir(variant)
        folder.mkdir(parents=True, exist_ok=True)
        rows = result.pop("rows", None)
        if rows is not None:
            self.rows_path(variant, index, name).write_bytes(rows)
        self.summary_path(variant, index, name).write_text(json.dumps(result, indent=1, allow_nan=False) + "\n",
                                                           encoding="utf-8")

    def load_summary(self, variant: str, index: int, name: str) -> Optional[Dict[str, Any]]:
        path = self.summary_path(variant, index, name)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def load_rows(self, variant: str, index: int, name: str) -> Optional[FrameRows]:
        path = self.rows_path(variant, index, name)
        return FrameRows.load(path) if path.is_file() else None


# ------------------------------------------------------------------------------------------- totals


class _PooledFrames:
    """Every scored frame of some inputs' rows, read from disk on each pass (coco_map makes two)."""

    def __init__(self, layout: RunLayout, variant: str, inputs: Sequence[Dict[str, Any]]) -> None:
        self.layout, self.variant, self.inputs = layout, variant, inputs

    def __iter__(self) -> Iterator[Tuple[np.ndarray, List[str], np.ndarray, np.ndarray, List[str]]]:
        for item in self.inputs:
            rows = self.layout.load_rows(self.variant, item["index"], item["name"])
            if rows is not None:
                yield from rows.scored_frames()


def _input_row(summary: Dict[str, Any]) -> Dict[str, Any]:
    """The numbers of one input under one model set that the table, CSV, plots and totals use."""
    row: Dict[str, Any] = {"ok": bool(summary.get("ok")), "error": summary.get("error"),
                           "wall_s": summary.get("wall_s"), "host": summary.get("host")}  # fmt: skip
    report = summary.get("report")
    if not row["ok"] or report is None:
        return row
    frames = report["frames"]
    row.update(frames_in=frames["in"], frames_processed=frames["processed"], bad_frames=frames["bad"],
               failed_frames=frames.get("failed", 0), dropped_frames=frames["dropped"],
               fps=report.get("frames_per_second"),
               detections=report["detections"]["total"], notes=report.get("notes", []))  # fmt: skip
    ev = report.get("detection_eval")
    if ev is not None:
        overall = ev["overall"]
        row.update(map50=ev.get("map_50"), map50_95=ev.get("map_50_95"), truth_frames=ev["frames"],
                   tp=overall["true_positives"], fp=overall["false_positives"], fn=overall["false_negatives"],
                   precision=overall["precision"], recall=overall["recall"])  # fmt: skip
    drive = report.get("drive_error")
    if drive is not None:
        row.update(matched=drive["matched"], steering_mae=drive["steering_mae"], steering_rmse=drive["steering_rmse"],
                   throttle_mae=drive["throttle_mae"], throttle_rmse=drive["throttle_rmse"],
                   steering_field=drive["steering_field"], throttle_field=drive["throttle_field"])  # fmt: skip
    tracking = report.get("tracking_eval")
    if tracking is not None and tracking.get("mota") is not None:
        row.update(mota=tracking["mota"], idf1=tracking["idf1"], id_switches=tracking["id_switches"],
                   track_misses=tracking["misses"], track_false_positives=tracking["false_positives"],
                   truth_boxes=tracking["truth_boxes"], idtp=tracking["idtp"], idfp=tracking["idfp"],
                   idfn=tracking["idfn"])  # fmt: skip
    total = report.get("latency_ms", {}).get(LATENCY_STAGE)
    if total:
        row.update(latency_p50_ms=total["p50_ms"], latency_p95_ms=total["p95_ms"])
    return row


TRACK_COUNTS = ("truth_boxes", "track_misses", "track_false_positives", "id_switches", "idtp", "idfp", "idfn")


class _Totals:
    """Running sums of one model set over the inputs included in the totals."""

    def __init__(self) -> None:
        self.inputs = 0
        self.frames_in = self.frames_processed = self.bad_frames = self.failed_frames = self.dropped_frames = 0
        self.wall_s = 0.0
        self.tp = self.fp = self.fn = self.truth_frames = 0
        self.has_detection_eval = False
        self.detections = 0
        self.matched = 0
        self.sums = {"steering_mae": 0.0, "steering_sq": 0.0, "throttle_mae": 0.0, "throttle_sq": 0.0}
        self.units: Optional[Tuple[str, str]] = None
        self.latency: Dict[str, LatencyHistogram] = {}
        self.tracking_inputs = 0  # inputs whose tracks were scored; the counts below pool MOTA and IDF1
        self.track_counts = dict.fromkeys(TRACK_COUNTS, 0)

    def add(self, row: Dict[str, Any], rows: Optional[FrameRows]) -> None:
        self.inputs += 1
        for key in ("frames_in", "frames_processed", "bad_frames", "failed_frames", "dropped_frames", "detections"):
            setattr(self, key, getattr(self, key) + int(row.get(key) or 0))
        self.wall_s += float(row.get("wall_s") or 0.0)
        if "tp" in row:
            self.has_detection_eval = True
            self.tp += row["tp"]
            self.fp += row["fp"]
            self.fn += row["fn"]
            self.truth_frames += row["truth_frames"]
        matched = int(row.get("matched") or 0)
        if matched and row.get("steering_mae") is not None:
            self.matched += matched
            self.sums["steering_mae"] += row["steering_mae"] * matched
            self.sums["steering_sq"] += (row["steering_rmse"] or 0.0) ** 2 * matched
            self.sums["throttle_mae"] += (row["throttle_mae"] or 0.0) * matched
            self.sums["throttle_sq"] += (row["throttle_rmse"] or 0.0) ** 2 * matched
            self.units = (row["steering_field"], row["throttle_field"])
        if row.get("mota") is not None:
            self.tracking_inputs += 1
            for key in TRACK_COUNTS:
                self.track_counts[key] += int(row[key])
        if rows is not None:
            for stage, seconds in rows.latency.items():
                self.latency.setdefault(stage, LatencyHistogram()).add(seconds)

    def to_dict(self, maps: Optional[Dict[str, float]]) -> Dict[str, Any]:
        found, present = self.tp + self.fp, self.tp + self.fn
        n = self.matched
        data: Dict[str, Any] = {
            "inputs": self.inputs,
            "frames": {"in": self.frames_in, "processed": self.frames_processed, "bad": self.bad_frames,
                       "failed": self.failed_frames, "dropped": self.dropped_frames},
            "replay_wall_s": finite(self.wall_s),
            "frames_per_second_per_worker": finite(self.frames_processed / self.wall_s) if self.wall_s else None,
            "detections": self.detections,
            "detection": None,
            "drive": None,
            "tracking": None,
            "latency_ms": {stage: h.to_dict() for stage, h in sorted(self.latency.items())},
        }
        if self.has_detection_eval:
            data["detection"] = {
                "truth_frames": self.truth_frames, "true_positives": self.tp, "false_positives": self.fp,
                "false_negatives": self.fn, "precision": finite(self.tp / found) if found else None,
                "recall": finite(self.tp / present) if present else None,
                "map50": finite(maps["map_50"]) if maps else None,
                "map50_95": finite(maps["map_50_95"]) if maps else None,
            }  # fmt: skip
        if self.tracking_inputs:
            c = self.track_counts
            errors = c["track_misses"] + c["track_false_positives"] + c["id_switches"]
            identity = 2 * c["idtp"] + c["idfp"] + c["idfn"]
            data["tracking"] = {
                "inputs": self.tracking_inputs, **c,
                "mota": finite(1.0 - errors / c["truth_boxes"]) if c["truth_boxes"] else None,
                "idf1": finite(2 * c["idtp"] / identity) if identity else None,
            }  # fmt: skip
        if n:
            units = self.units or ("", "")
            data["drive"] = {
                "matched": n, "steering_mae": self.sums["steering_mae"] / n,
                "steering_rmse": math.sqrt(self.sums["steering_sq"] / n), "throttle_mae": self.sums["throttle_mae"] / n,
                "throttle_rmse": math.sqrt(self.sums["throttle_sq"] / n),
                "steering_field": units[0], "throttle_field": units[1],
            }  # fmt: skip
        return data


# ------------------------------------------------------------------------------------------- A/B frames


@dataclass(order=True)
class _Disagreement:
    score: float
    input_index: int
    frame: int
    detail: Dict[str, Any] = field(compare=False, default_factory=dict)


class _TopK:
    """The K largest items seen (a bounded heap)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.heap: List[_Disagreement] = []

    def push(self, item: _Disagreement) -> None:
        if item.score <= 0 or self.k <= 0:
            return
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, item)
        elif item > self.heap[0]:
            heapq.heapreplace(self.heap, item)

    def sorted(self) -> List[_Disagreement]:
        return sorted(self.heap, key=lambda d: (-d.score, d.input_index, d.frame))


class _Comparison:
    """Per-frame A vs B over the inputs both model sets replayed: bounded state only."""

    def __init__(self, top: int) -> None:
        self.frames = 0
        self.steering_frames = 0
        self.steering_diff_sum = 0.0
        self.steering_hist = np.zeros(STEERING_DIFF_BINS.size - 1, np.int64)
        self.detection_frames = 0
        self.detection_differ = 0
        self.unmatched_hist: Dict[int, int] = {}
        self.top_steering = _TopK(top)
        self.top_detection = _TopK(top)

    def add(self, index: int, name: str, a: FrameRows, b: FrameRows) -> None:
        from trt_perception.tools.report import score_frame

        common, ia, ib = np.intersect1d(a.stamps, b.stamps, assume_unique=False, return_indices=True)
        self.frames += int(common.size)
        diff = np.abs(a.steering[ia] - b.steering[ib])
        ok = np.isfinite(diff)
        self.steering_frames += int(ok.sum())
        self.steering_diff_sum += float(diff[ok].sum())
        self.steering_hist += np.histogram(np.clip(diff[ok], 0, STEERING_DIFF_BINS[-1]), STEERING_DIFF_BINS)[0]
        for k in np.flatnonzero(ok):
            i, j = int(ia[k]), int(ib[k])
            self.top_steering.push(_Disagreement(float(diff[k]), index, i, {
                "input": name, "frame": i, "stamp_ns": int(a.stamps[i]), "time_s": finite(a.times[i]),
                "steering_a": finite(a.steering[i]), "steering_b": finite(b.steering[j]),
                "steering_truth": finite(a.steering_truth[i]), "abs_difference": float(diff[k])}))  # fmt: skip
        frames_a = {i: (det, truth) for i, det, truth in a.frames()}
        frames_b = {i: det for i, det, _ in b.frames()}
        for k in range(common.size):
            i, j = int(ia[k]), int(ib[k])
            det_a, truth = frames_a[i]
            det_b = frames_b[j]
            if det_a is None or det_b is None:
                continue
            self.detection_frames += 1
            versus = score_frame(det_a[0], det_a[1], det_a[2], det_b[0], det_b[2])
            unmatched = sum(s.false_positives + s.false_negatives for s in versus.values())
            self.unmatched_hist[unmatched] = self.unmatched_hist.get(unmatched, 0) + 1
            if unmatched == 0:
                continue
            self.detection_differ += 1
            detail = {"input": name, "frame": i, "stamp_ns": int(a.stamps[i]), "time_s": finite(a.times[i]),
                      "unmatched_boxes": unmatched, "detections_a": len(det_a[2]), "detections_b": len(det_b[2])}
            if truth is not None:
                for key, det in (("a", det_a), ("b", det_b)):
                    score = score_frame(det[0], det[1], det[2], truth[0], truth[1])
                    detail[f"tp_{key}"] = sum(s.true_positives for s in score.values())
                    detail[f"fp_{key}"] = sum(s.false_positives for s in score.values())
                    detail[f"fn_{key}"] = sum(s.false_negatives for s in score.values())
            self.top_detection.push(_Disagreement(float(unmatched), index, i, detail))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "frames_compared": self.frames,
            "steering": {
                "frames": self.steering_frames,
                "mean_abs_difference": finite(self.steering_diff_sum / self.steering_frames)
                if self.steering_frames else None,
                "histogram": {"edges": STEERING_DIFF_BINS.tolist(), "counts": self.steering_hist.tolist()},
                "top_frames": [d.detail for d in self.top_steering.sorted()],
            },
            "detection": {
                "frames": self.detection_frames,
                "frames_that_differ": self.detection_differ,
                "unmatched_boxes_histogram": {str(k): v for k, v in sorted(self.unmatched_hist.items())},
                "top_frames": [d.detail for d in self.top_detection.sorted()],
            },
        }


# ------------------------------------------------------------------------------------------- aggregate


def aggregate(layout: RunLayout, inputs: Sequence[Dict[str, Any]], variants: Sequence[str],
              top: int = TOP_FRAMES) -> Tuple[Dict[str, Any], Dict[str, LatencyHistogram]]:
    """Totals, per-input rows and (two variants) the A/B comparison, read from the run folder; also each
    variant's merged histogram of the quoted latency stage (for the plot)."""
    from trt_perception.tools.evaluation import coco_map

    per_input: List[Dict[str, Any]] = []
    failed: List[Dict[str, Any]] = []
    for item in inputs:
        entry: Dict[str, Any] = {"index": item["index"], "name": item["name"], "input": item["path"],
                                 "kind": item["kind"]}  # fmt: skip
        for variant in variants:
            summary = layout.load_summary(variant, item["index"], item["name"]) or {
                "ok": False, "error": "no result (the run was interrupted, or the worker died before reporting)"}
            row = _input_row(summary)
            entry[variant] = row
            if not row["ok"]:
                failed.append({"index": item["index"], "name": item["name"], "input": item["path"],
                               "variant": variant, "error": row["error"],
                               "traceback": summary.get("traceback")})  # fmt: skip
        entry["included"] = all(entry[v]["ok"] for v in variants)
        per_input.append(entry)
    included = [item for item, entry in zip(inputs, per_input) if entry["included"]]
    rows_of = {entry["index"]: entry for entry in per_input}
    totals: Dict[str, Any] = {}
    hists: Dict[str, LatencyHistogram] = {}
    for variant in variants:
        acc = _Totals()
        for item in included:
            acc.add(rows_of[item["index"]][variant], layout.load_rows(variant, item["index"], item["name"]))
        maps = coco_map(_PooledFrames(layout, variant, included)) if acc.has_detection_eval else None
        totals[variant] = acc.to_dict(maps)
        hists[variant] = acc.latency.get(LATENCY_STAGE, LatencyHistogram())
        if acc.has_detection_eval and maps is None:
            totals[variant]["notes"] = ["pooled mAP not computed: faster-coco-eval is not installed; fix: "
                                        "pip install faster-coco-eval"]
    result: Dict[str, Any] = {"per_input": per_input, "totals": totals, "failed": failed,
                              "inputs_total": len(inputs), "inputs_included": len(included)}  # fmt: skip
    if len(variants) == 2:
        comparison = _Comparison(top)
        a, b = variants
        for item in included:
            rows_a = layout.load_rows(a, item["index"], item["name"])
            rows_b = layout.load_rows(b, item["index"], item["name"])
            if rows_a is not None and rows_b is not None:
                comparison.add(item["index"], item["name"], rows_a, rows_b)
        result["comparison"] = comparison.to_dict()
        result["differences"] = differences(totals[a], totals[b])
        for entry in per_input:
            if entry["included"]:
                entry["differences"] = _row_differences(entry[a], entry[b])
    return result, hists


def _get(data: Optional[Dict[str, Any]], *keys: str) -> Optional[float]:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return None if data is None else float(data)


def total_metrics(total: Dict[str, Any], failed_inputs: int) -> Dict[str, Optional[float]]:
    """One model set's totals as the flat metric names of ``--fail-if`` (None: not measured)."""
    return {
        "map50": _get(total, "detection", "map50"),
        "map50_95": _get(total, "detection", "map50_95"),
        "precision": _get(total, "detection", "precision"),
        "recall": _get(total, "detection", "recall"),
        "steering_mae": _get(total, "drive", "steering_mae"),
        "throttle_mae": _get(total, "drive", "throttle_mae"),
        "mota": _get(total, "tracking", "mota"),
        "idf1": _get(total, "tracking", "idf1"),
        "id_switches": _get(total, "tracking", "id_switches"),
        "latency_p50_ms": _get(total, "latency_ms", LATENCY_STAGE, "p50_ms"),
        "latency_p95_ms": _get(total, "latency_ms", LATENCY_STAGE, "p95_ms"),
        "bad_frames": _get(total, "frames", "bad"),
        "dropped_frames": _get(total, "frames", "dropped"),
        "failed_inputs": float(failed_inputs),
    }


def differences(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """B against A, signed so that a positive number is B being worse: drops of scores, rises of errors."""
    ma, mb = total_metrics(a, 0), total_metrics(b, 0)

    def sub(x: Optional[float], y: Optional[float]) -> Optional[float]:
        return None if x is None or y is None else x - y

    return {
        "map50_drop": sub(ma["map50"], mb["map50"]),
        "map50_95_drop": sub(ma["map50_95"], mb["map50_95"]),
        "precision_drop": sub(ma["precision"], mb["precision"]),
        "recall_drop": sub(ma["recall"], mb["recall"]),
        "steering_mae_rise": sub(mb["steering_mae"], ma["steering_mae"]),
        "throttle_mae_rise": sub(mb["throttle_mae"], ma["throttle_mae"]),
        "mota_drop": sub(ma["mota"], mb["mota"]),
        "idf1_drop": sub(ma["idf1"], mb["idf1"]),
        "id_switches_rise": sub(mb["id_switches"], ma["id_switches"]),
        "latency_p50_rise_ms": sub(mb["latency_p50_ms"], ma["latency_p50_ms"]),
        "latency_p95_rise_ms": sub(mb["latency_p95_ms"], ma["latency_p95_ms"]),
        "bad_frames_rise": sub(mb["bad_frames"], ma["bad_frames"]),
        "dropped_frames_rise": sub(mb["dropped_frames"], ma["dropped_frames"]),
    }


def _row_differences(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Optional[float]]:
    def sub(key: str, sign: int) -> Optional[float]:
        x, y = a.get(key), b.get(key)
        return None if x is None or y is None else sign * (float(x) - float(y))

    return {"map50_drop": sub("map50", 1), "steering_mae_rise": sub("steering_mae", -1),
            "throttle_mae_rise": sub("throttle_mae", -1), "latency_p95_rise_ms": sub("latency_p95_ms", -1)}


# ------------------------------------------------------------------------------------------- text


def _n(value: Any, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _signed(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value) + 0.0:+.{digits}f}"  # + 0.0: no "-0.000"


def format_evaluation(report: Dict[str, Any]) -> str:
    """The printed report: aligned plain text for a terminal or a CI log."""
    variants = report["variants"]
    keys = [v["key"] for v in variants]
    agg = report["results"]
    lines = [f"Evaluation of {agg['inputs_total']} input(s) x {len(keys)} model set(s) on {report['runner']}, "
             f"{report['wall_s']:.1f} s"]  # fmt: skip
    for v in variants:
        lines.append(f"  {v['key']}  {v['label']:<16} {v['params']}")
    if agg["inputs_included"] != agg["inputs_total"]:
        lines.append(f"  totals cover {agg['inputs_included']} of {agg['inputs_total']} inputs (failed ones left out)")
    lines.append("")
    header = f"  {'input':<28}{'frames':>7}{'bad':>5}{'drop':>5}"
    for key in keys:
        header += f"{'mAP50 ' + key:>10}{'steerMAE ' + key:>12}{'p95ms ' + key:>10}"
    if len(keys) == 2:
        header += f"{'dmAP50':>9}{'dsteer':>9}"
    lines.append(header)
    for entry in agg["per_input"]:
        first = entry[keys[0]]
        name = entry["name"][:27]
        if not all(entry[k]["ok"] for k in keys):
            bad = [k for k in keys if not entry[k]["ok"]]
            lines.append(f"  {name:<28}FAILED ({', '.join(bad)}; the error is listed below)")
            continue
        line = f"  {name:<28}{first.get('frames_processed', 0):>7}{first.get('bad_frames', 0):>5}" \
               f"{first.get('dropped_frames', 0):>5}"
        for key in keys:
            row = entry[key]
            line += f"{_n(row.get('map50')):>10}{_n(row.get('steering_mae')):>12}{_n(row.get('latency_p95_ms'), 2):>10}"
        if len(keys) == 2:
            d = entry.get("differences", {})
            map_delta = -d["map50_drop"] if d.get("map50_drop") is not None else None
            line += f"{_signed(map_delta):>9}{_signed(d.get('steering_mae_rise')):>9}"
        lines.append(line)
    first_total = agg["totals"][keys[0]]
    line = f"  {'TOTAL (pooled)':<28}{first_total['frames']['processed']:>7}{first_total['frames']['bad']:>5}" \
           f"{first_total['frames']['dropped']:>5}"
    for key in keys:
        t = agg["totals"][key]
        line += f"{_n(_get(t, 'detection', 'map50')):>10}{_n(_get(t, 'drive', 'steering_mae')):>12}" \
                f"{_n(_get(t, 'latency_ms', LATENCY_STAGE, 'p95_ms'), 2):>10}"
    if len(keys) == 2:
        d = agg["differences"]
        map_delta = -d["map50_drop"] if d.get("map50_drop") is not None else None
        line += f"{_signed(map_delta):>9}{_signed(d.get('steering_mae_rise')):>9}"
    lines.append(line)
    lines.append("")
    for key in keys:
        t = agg["totals"][key]
        det, drive = t.get("detection"), t.get("drive")
        parts = [f"  {key} totals:"]
        if det:
            parts.append(f"mAP@0.5 {_n(det['map50'])}  mAP@[.5:.95] {_n(det['map50_95'])}  precision "
                         f"{_n(det['precision'])}  recall {_n(det['recall'])} "
                         f"({det['truth_frames']} frames with truth)")
        if drive:
            parts.append(f"steering MAE {_n(drive['steering_mae'])} ({drive['steering_field']}), throttle MAE "
                         f"{_n(drive['throttle_mae'])} over {drive['matched']} matched frames")
        tracking = t.get("tracking")
        if tracking:
            parts.append(f"tracking MOTA {_n(tracking['mota'])}  IDF1 {_n(tracking['idf1'])}  id switches "
                         f"{tracking['id_switches']} ({tracking['truth_boxes']} truth boxes in {tracking['inputs']} "
                         "input(s) with track ids)")
        lat = t["latency_ms"].get(LATENCY_STAGE)
        if lat:
            parts.append(f"latency ({LATENCY_STAGE}) p50 {_n(lat['p50_ms'], 2)} p95 {_n(lat['p95_ms'], 2)} "
                         f"p99 {_n(lat['p99_ms'], 2)} max {_n(lat['max_ms'], 2)} ms")
        parts.append(f"frames in {t['frames']['in']} processed {t['frames']['processed']} bad {t['frames']['bad']} "
                     f"dropped {t['frames']['dropped']}")
        lines.append("\n      ".join(parts))
    comparison = agg.get("comparison")
    if comparison:
        lines.append("")
        steer, det = comparison["steering"], comparison["detection"]
        lines.append(f"  A vs B on {comparison['frames_compared']} common frames: detections differ on "
                     f"{det['frames_that_differ']} of {det['frames']} frames; mean |steering A - B| "
                     f"{_n(steer['mean_abs_difference'], 4)}")
        for item in det["top_frames"][:5]:
            truth = ""
            if "tp_a" in item:
                truth = f"  (vs truth: A {item['tp_a']} TP {item['fp_a']} FP {item['fn_a']} FN, " \
                        f"B {item['tp_b']} TP {item['fp_b']} FP {item['fn_b']} FN)"
            lines.append(f"    boxes   {item['input']} frame {item['frame']} t={_n(item['time_s'], 2)}s: "
                         f"{item['unmatched_boxes']} unmatched (A {item['detections_a']}, B {item['detections_b']})"
                         + truth)
        for item in steer["top_frames"][:5]:
            lines.append(f"    steer   {item['input']} frame {item['frame']} t={_n(item['time_s'], 2)}s: A "
                         f"{_n(item['steering_a'])} B {_n(item['steering_b'])} recorded {_n(item['steering_truth'])}")
    damaged = [(entry["name"], note[len("tub: "):]) for entry in agg["per_input"]
               for note in entry[keys[0]].get("notes") or [] if note.startswith("tub: ")]
    if damaged:  # frames a damaged tub lost never reach the pipeline: not in "bad", so said here
        lines.append("")
        lines.append("  recording problems (skipped or noted; the recordings were not changed):")
        lines.extend(f"    {name}: {problem}" for name, problem in damaged)
    if agg["failed"]:
        lines.append("")
        for fail in agg["failed"]:
            lines.append(f"  FAILED {fail['variant']} {fail['input']}: {_first_line(fail['error'])}")
    gates = report.get("gates") or []
    if gates:
        lines.append("")
        for gate in gates:
            lines.append(f"  {'FAIL' if gate['failed'] else 'pass'}  --fail-if {gate['expression']!r}: "
                         f"{gate['message']}")
    if report.get("files"):
        lines.append("")
        lines.append(f"  report folder {report['out']}")
        lines.append("                " + ", ".join(Path(p).name for p in report["files"]))
    return "\n".join(lines)


def _first_line(text: Optional[str]) -> str:
    """The error's first line, whole: its fix comes last (a replay's errors end with "fix: ...")."""
    text = (text or "").strip() or "unknown error"
    return text.splitlines()[0]


# ------------------------------------------------------------------------------------------- files


def write_files(report: Dict[str, Any], out: Path, plots: bool = True) -> List[Path]:
    """per_input.csv, disagreements.csv (A/B), the plots (with matplotlib); the caller writes report.json."""
    written = [_write_csv(report, out / "per_input.csv")]
    comparison = report["results"].get("comparison")
    if comparison:
        written.append(_write_disagreements(comparison, out / "disagreements.csv"))
    if plots:
        from trt_perception.tools.report import MATPLOTLIB_MISSING, _pyplot

        plt = _pyplot()
        if plt is None:
            report.setdefault("notes", []).append(MATPLOTLIB_MISSING)
        else:
            written.extend(p for p in (_plot_per_input(plt, report, out / "per_input.png"),
                                       _plot_latency(plt, report, out / "latency.png"),
                                       _plot_differences(plt, report, out / "ab_differences.png")) if p)  # fmt: skip
    return written


CSV_FIELDS = ("ok", "frames_in", "frames_processed", "bad_frames", "dropped_frames", "map50", "map50_95",
              "precision", "recall", "tp", "fp", "fn", "steering_mae", "throttle_mae", "matched", "mota", "idf1",
              "id_switches", "latency_p50_ms",
              "latency_p95_ms", "fps", "wall_s", "error")  # fmt: skip


def _write_csv(report: Dict[str, Any], path: Path) -> Path:
    keys = [v["key"] for v in report["variants"]]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "input", "model_set", *CSV_FIELDS])
        for entry in report["results"]["per_input"]:
            for key in keys:
                row = entry[key]
                writer.writerow([entry["index"], entry["input"], key, *(_csv(row.get(f)) for f in CSV_FIELDS)])
    return path


def _csv(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.splitlines()[0] if value else ""
    return value


def _write_disagreements(comparison: Dict[str, Any], path: Path) -> Path:
    fields = ("kind", "input", "frame", "time_s", "stamp_ns", "unmatched_boxes", "detections_a", "detections_b",
              "tp_a", "fp_a", "fn_a", "tp_b", "fp_b", "fn_b", "steering_a", "steering_b", "steering_truth",
              "abs_difference")  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        for kind, items in (("detection", comparison["detection"]["top_frames"]),
                            ("steering", comparison["steering"]["top_frames"])):  # fmt: skip
            for item in items:
                writer.writerow([kind, *(_csv(item.get(f)) for f in fields[1:])])
    return path


COLORS = {"A": "tab:blue", "B": "tab:orange"}


def _plot_per_input(plt: Any, report: Dict[str, Any], path: Path) -> Optional[Path]:
    """Per-input bars of mAP@0.5, steering MAE and p95 latency, one bar per model set."""
    from matplotlib.ticker import MaxNLocator

    keys = [v["key"] for v in report["variants"]]
    entries = report["results"]["per_input"]
    panels = [(m, t) for m, t in (("map50", "detection mAP@0.5"), ("steering_mae", "steering MAE"),
                                  ("latency_p95_ms", "p95 latency (ms, total)"))
              if any(e[k].get(m) is not None for e in entries for k in keys)]  # fmt: skip
    if not panels or not entries:
        return None
    height = max(3.0, 0.28 * len(entries) * len(keys) + 1.5)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), min(height, 40.0)), squeeze=False)
    y = np.arange(len(entries))
    bar = 0.8 / len(keys)
    names = [e["name"][:24] for e in entries]
    for ax, (metric, title) in zip(axes[0], panels):
        for n, key in enumerate(keys):
            values = [e[key].get(metric) for e in entries]
            ax.barh(y + (n - (len(keys) - 1) / 2) * bar, [np.nan if v is None else v for v in values], bar,
                    color=COLORS.get(key), label=f"{key}")
            for i, e in enumerate(entries):
                if not e[key]["ok"]:
                    ax.text(0, y[i], f" {key} failed", va="center", fontsize=7, color="tab:red")
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=7)
        ax.set_ylim(len(entries) - 0.5, -0.5)  # first input on top, no empty rows above or below
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))  # small values (0.0025...) ran into each other
        ax.tick_params(axis="x", labelsize=8)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    inches = fig.get_figheight()
    if len(entries) <= 30:
        fig.suptitle("per input", fontsize=10)
        fig.tight_layout()
    else:  # tight_layout measures every label: seconds for a hundred inputs; margins in inches instead
        fig.suptitle("per input", fontsize=10, y=1 - 0.12 / inches, va="top")
        fig.subplots_adjust(left=0.1, right=0.98, top=1 - 0.75 / inches, bottom=0.4 / inches, wspace=0.45)
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return path


def _plot_latency(plt: Any, report: Dict[str, Any], path: Path) -> Optional[Path]:
    """The pooled per-frame total latency of each model set (merged histograms, log time axis)."""
    hists = report.get("_histograms") or {}
    if not hists:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.8))
    edges_ms = LatencyHistogram.EDGES * 1e3
    for key, hist in hists.items():
        if hist.count == 0:
            continue
        nonzero = np.flatnonzero(hist.counts)
        lo, hi = max(nonzero[0] - 2, 0), min(nonzero[-1] + 3, hist.BINS)
        # regroup the 1% bins by 8 so the curve is readable
        counts = np.add.reduceat(hist.counts[lo:hi], np.arange(0, hi - lo, 8))
        edges = edges_ms[lo:hi + 1][::8]
        if edges.size < counts.size + 1:
            edges = np.append(edges, edges_ms[hi])
        ax.stairs(counts, edges, label=f"{key} (p50 {hist.percentile(50) * 1e3:.2f}, p95 "
                                       f"{hist.percentile(95) * 1e3:.2f} ms)", color=COLORS.get(key))
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    plain_log_ticks(ax.xaxis, low, high)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(f"ms per frame ({LATENCY_STAGE}: decode + models), log scale")
    ax.set_ylabel("frames")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("latency per frame, every input pooled", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return path


def _plot_differences(plt: Any, report: Dict[str, Any], path: Path) -> Optional[Path]:
    """A/B: per-input differences (positive = B worse) and the per-frame disagreement distributions."""
    results = report["results"]
    comparison = results.get("comparison")
    if not comparison:
        return None
    entries = [e for e in results["per_input"] if e.get("differences")]
    fig, axes = plt.subplots(2, 2, figsize=(11, max(6.0, min(0.22 * len(entries) + 4, 30.0))))
    names = [e["name"][:24] for e in entries]
    y = np.arange(len(entries))
    panels = ((axes[0][0], "map50_drop", "mAP@0.5 drop (A - B; > 0: B worse)"),
              (axes[0][1], "steering_mae_rise", "steering MAE rise (B - A; > 0: B worse)"))
    for ax, metric, title in panels:
        values = np.array([np.nan if e["differences"].get(metric) is None else e["differences"][metric]
                           for e in entries], np.float64)  # fmt: skip
        ax.barh(y, values, color=["tab:red" if v > 0 else "tab:green" for v in np.nan_to_num(values)])
        ax.axvline(0, color="k", linewidth=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    steer = comparison["steering"]
    counts = np.asarray(steer["histogram"]["counts"])
    edges = np.asarray(steer["histogram"]["edges"])
    if counts.sum():
        last = int(np.flatnonzero(counts)[-1]) + 1
        group = max(1, -(-last // 40))  # about 40 bars up to the largest difference
        starts = np.arange(0, last, group)
        axes[1][0].stairs(np.add.reduceat(counts[:last], starts), np.append(edges[starts], edges[min(starts[-1] + group,
                          edges.size - 1)]), fill=True, color="tab:purple")
    axes[1][0].set_title(f"|steering A - B| per frame ({steer['frames']} frames)", fontsize=9)
    axes[1][0].set_xlabel("absolute difference")
    axes[1][0].set_ylabel("frames")
    det = comparison["detection"]
    hist = {int(k): v for k, v in det["unmatched_boxes_histogram"].items()}
    if hist:
        axes[1][1].bar(list(hist), list(hist.values()), color="tab:purple")
    axes[1][1].set_title(f"boxes without a partner in the other set, per frame ({det['frames']} frames)", fontsize=9)
    axes[1][1].set_xlabel("unmatched boxes (IoU < 0.5 or other label)")
    axes[1][1].set_ylabel("frames")
    fig.suptitle("A vs B", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return path
