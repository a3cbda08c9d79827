"""The replay report's numbers (matching, errors, percentiles), its table and its files, without a bag."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from trt_perception.tools import report as report_module
from trt_perception.tools.report import (
    ClassScore,
    DetectionEval,
    DriveError,
    LatencyStats,
    ReplayReport,
    SampleFrame,
    TrackingEval,
    attach_mask,
    format_report,
    mae_rmse,
    nearest_within,
    plain_log_ticks,
    score_frame,
    write_report_files,
)


def test_score_frame_matches_greedily_per_class_at_iou_half() -> None:
    truth = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], float)
    truth_labels = ["cone", "cone", "box"]
    boxes = np.array([
        [0, 0, 10, 11],  # cone, matches truth 0 (IoU 0.91)
        [1, 0, 10, 10],  # cone, a duplicate of truth 0 with a lower score: false positive
        [20, 20, 26, 30],  # cone, IoU 0.6 with truth 1: match
        [50, 50, 60, 60],  # labelled cone but truth says box: FP for cone, FN for box
        [80, 80, 90, 90],  # person nowhere in the truth: FP
    ], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.5])
    labels = ["cone", "cone", "cone", "cone", "person"]
    result = score_frame(boxes, scores, labels, truth, truth_labels)
    assert (result["cone"].true_positives, result["cone"].false_positives, result["cone"].false_negatives) == (2, 2, 0)
    assert (result["box"].true_positives, result["box"].false_negatives) == (0, 1)
    assert (result["person"].false_positives, result["person"].false_negatives) == (1, 0)


def test_score_frame_below_threshold_and_empty_inputs() -> None:
    truth = np.array([[0, 0, 10, 10]], float)
    half = np.array([[5, 0, 15, 10]], float)  # IoU 1/3
    assert score_frame(half, np.array([0.9]), ["a"], truth, ["a"])["a"].true_positives == 0
    empty = score_frame(np.zeros((0, 4)), np.zeros(0), [], truth, ["a"])
    assert empty["a"].false_negatives == 1 and math.isnan(empty["a"].precision) and empty["a"].recall == 0.0
    assert score_frame(np.zeros((0, 4)), np.zeros(0), [], np.zeros((0, 4)), []) == {}


def test_nearest_within_picks_the_closest_time_inside_the_tolerance() -> None:
    reference = np.array([0.0, 10.0, 20.0])
    picked = nearest_within(np.array([-1.0, 4.0, 6.0, 14.9, 30.0, 100.0]), reference, tolerance=5.0)
    assert picked.tolist() == [0, 0, 1, 1, -1, -1]
    assert nearest_within(np.array([1.0]), np.array([]), 5.0).tolist() == [-1]


def test_mae_rmse_skips_missing_pairs() -> None:
    mae, rmse = mae_rmse([1.0, 2.0, np.nan, 4.0], [1.0, 1.0, 3.0, 2.0])
    assert mae == pytest.approx(1.0) and rmse == pytest.approx(math.sqrt(5 / 3))
    assert all(math.isnan(v) for v in mae_rmse([np.nan], [1.0]))


def test_latency_stats_in_milliseconds() -> None:
    stats = LatencyStats.from_seconds([0.001 * i for i in range(1, 101)])
    assert stats.count == 100 and stats.max_ms == pytest.approx(100.0)
    assert stats.p50_ms == pytest.approx(50.5) and stats.p95_ms == pytest.approx(95.05)
    assert math.isnan(LatencyStats.from_seconds([]).p50_ms)


def sample_report() -> ReplayReport:
    report = ReplayReport(bag="/bags/drive", image_topic="/camera/image_raw/compressed",
                          image_type="sensor_msgs/msg/CompressedImage", heads=["detector", "pilot"], realtime=True,
                          detection_head="detector", drive_head="pilot",
                          frames_in=100, frames_processed=90, bad_frames=1, dropped_frames=9,
                          bag_duration_s=3.3, wall_s=1.5, detections_total=45, detections_max_per_frame=2,
                          detections_per_class={"cone": 30, "box": 15}, drive_outputs=90)
    report.bad_frame_reasons = ["frame 7 at t=1.000: CompressedImage data is not a jpeg"]
    report.latency = {"total": LatencyStats.from_seconds([0.004, 0.005, 0.006]),
                      "decode": LatencyStats.from_seconds([0.001, 0.001, 0.002])}
    report.output_latency = LatencyStats.from_seconds([0.01, 0.02])
    report.drive = DriveError("/teleop/cmd_vel", "geometry_msgs/msg/Twist", 90, 0.05, 0.07, 0.02, 0.03,
                              "angular.z", "linear.x")
    report.detection_eval = DetectionEval("/ground_truth/detections", 90, 0.5,
                                          {"cone": ClassScore(28, 2, 4), "box": ClassScore(0, 0, 0)})
    series = report.series
    series.stage_seconds = {"total": [0.004, 0.005, 0.006], "decode": [0.001, 0.001, 0.002]}
    series.frame_times = [0.0, 0.1, 0.2]
    series.predicted_steering = [0.1, 0.2, np.nan]
    series.predicted_throttle = [0.3, 0.3, np.nan]
    series.recorded_times = [0.0, 0.1, 0.2]
    series.recorded_steering = [0.1, 0.25, 0.2]
    series.recorded_throttle = [0.3, 0.3, 0.3]
    series.samples = [SampleFrame(3, 0.3, np.zeros((24, 32, 3), np.uint8), np.array([[2, 2, 10, 10]], np.float32),
                                  ["cone"], np.array([0.9], np.float32), truth_boxes=np.array([[2, 2, 11, 11]]),
                                  truth_labels=["cone"])]
    return report


def test_table_shows_frames_latency_errors_and_precision_recall() -> None:
    text = format_report(sample_report())
    assert "frames        in 100   processed 90   bad 1   dropped 9" in text
    assert "realtime" in text and "not a jpeg" in text
    assert "decode" in text.split("total")[0]  # stages in pipeline order, total last
    assert "arrival->output" in text
    assert "45 in all, 0.50 per frame, max 2" in text and "box: 15, cone: 30" in text
    assert "steering         0.050    0.070   (angular.z)" in text
    assert "cone              28     2     4      93.3%    87.5%" in text
    assert "box                0     0     0          -        -" in text
    assert "all               28     2     4      93.3%    87.5%" in text


def test_files_are_written_with_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = sample_report()
    written = write_report_files(report, tmp_path / "r")
    assert sorted(p.name for p in written) == ["detections.png", "latency.png", "report.json", "steering.png"]
    for path in written:
        assert path.stat().st_size > 1000
    assert report.report_dir == str(tmp_path / "r") and len(report.files) == 4


@pytest.mark.parametrize(("lo", "hi", "minor_labels"), [(1e-3, 20.0, []), (0.3, 9.0, ["0.5", "2", "5"])])
def test_log_axis_ticks_are_plain_text_not_mathtext(lo: float, hi: float, minor_labels: list) -> None:
    """Mathtext labels ($10^{-1}$) cost most of the latency plot's time: the log axis writes plain numbers,
    with 2x/5x minor labels only when the axis spans under two decades."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    plain_log_ticks(ax.xaxis, lo, hi)
    fig.canvas.draw()

    def shown(which: str) -> list:
        ticks = ax.xaxis.get_major_ticks() if which == "major" else ax.xaxis.get_minor_ticks()
        return [t.label1.get_text() for t in ticks if lo <= t.get_loc() <= hi and t.label1.get_text()]

    major, minor = shown("major"), shown("minor")
    plt.close(fig)
    assert major and not any("$" in label for label in major + minor)
    assert major == (["0.001", "0.01", "0.1", "1", "10"] if lo < 0.01 else ["1"])
    assert minor == minor_labels


def test_without_matplotlib_the_numbers_still_land_in_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_module, "_pyplot", lambda: None)
    report = sample_report()
    written = write_report_files(report, tmp_path)
    assert [p.name for p in written] == ["report.json"]
    assert any("pip install" in note and "matplotlib" in note for note in report.notes)
    text = (tmp_path / "report.json").read_text()
    assert "NaN" not in text  # strict JSON: missing numbers are null
    data = json.loads(text)
    assert data["frames"]["dropped"] == 9 and data["drive_error"]["steering_mae"] == 0.05
    assert data["detection_eval"]["per_class"]["box"]["precision"] is None
    assert data["detection_eval"]["overall"]["true_positives"] == 28
    assert data["latency_ms"]["total"]["count"] == 3
    assert "matplotlib" in format_report(report)


def tracking_eval() -> TrackingEval:
    values = {"num_frames": 30.0, "mota": 0.9, "motp": 0.2, "idf1": 0.95, "idp": 1.0, "idr": 0.9,
              "num_switches": 1.0, "num_false_positives": 2.0, "num_misses": 6.0, "num_objects": 90.0,
              "num_unique_objects": 3.0, "num_predictions": 86.0, "num_matches": 82.0, "mostly_tracked": 3.0,
              "partially_tracked": 0.0, "mostly_lost": 0.0, "num_fragmentations": 1.0, "idtp": 80.0, "idfp": 6.0,
              "idfn": 10.0}
    return TrackingEval.from_metrics("detector", "/gt", 0.5, values, predicted_tracks=4)


def test_tracking_section_in_the_table_and_the_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_module, "_pyplot", lambda: None)
    report = sample_report()
    report.tracking_eval = tracking_eval()
    report.tracks_total = 4
    text = format_report(report)
    assert "tracks of detector vs /gt (30 frames with ground truth, IoU >= 0.5, motmetrics)" in text
    assert "MOTA 0.900   IDF1 0.950   MOTP (mean IoU) 0.800" in text
    assert "id switches 1   false positives 2   misses 6   fragmentations 1" in text
    assert "truth: 3 tracks, 90 boxes   predicted: 4 tracks, 86 boxes" in text
    assert "tracks        4 track ids published" in text
    write_report_files(report, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["tracking_eval"]["mota"] == 0.9 and data["tracking_eval"]["motp_iou"] == pytest.approx(0.8)
    assert (data["tracking_eval"]["idtp"], data["tracking_eval"]["idfp"], data["tracking_eval"]["idfn"]) == (80, 6, 10)
    assert data["detections"]["tracks"] == 4


def test_tracking_eval_without_scored_boxes_is_null_not_nan() -> None:
    empty = TrackingEval.from_metrics("detector", "/gt", 0.5, {"mota": math.nan, "idf1": math.nan}, 0)
    assert empty.mota is None and empty.idf1 is None and empty.motp_iou is None and empty.truth_boxes == 0


def test_tracks_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = sample_report()
    report.tracking_eval = tracking_eval()
    report.series.track_times = {"1": [0.0, 0.1, 0.2], "2": [0.1, 0.2], "3": [0.3]}
    report.series.truth_track_times = {"cone-a": [0.0, 0.1, 0.2, 0.3], "cone-b": [0.1, 0.2]}
    written = write_report_files(report, tmp_path)
    assert "tracks.png" in [p.name for p in written] and (tmp_path / "tracks.png").stat().st_size > 1000


def _segmentation_head(colors: tuple = ((0, 0, 0), (0, 200, 0))) -> SimpleNamespace:
    """What attach_mask reads of a segmentation head: its name and its spec's labels and colours."""
    return SimpleNamespace(name="drivable", spec=SimpleNamespace(
        segmentation=SimpleNamespace(labels=("background", "road"), colors=colors)))


def _grey_sample() -> SampleFrame:
    return SampleFrame(4, 0.4, np.full((60, 80, 3), 100, np.uint8), np.array([[10, 5, 30, 25]], np.float32),
                       ["cone #3"], np.array([0.9], np.float32), class_ids=np.array([1]),
                       truth_boxes=np.array([[10, 5, 31, 26]], np.float32), truth_labels=["cone"])


def test_attach_mask_shrinks_and_copies_the_heads_mask() -> None:
    sample = _grey_sample()
    mask = np.zeros((120, 160), np.uint8)  # the source frame: twice the sample's size
    mask[60:] = 1
    attach_mask(sample, _segmentation_head(), {"drivable": SimpleNamespace(result=SimpleNamespace(mask=mask))})
    assert sample.mask is not None and sample.mask.shape == (60, 80)
    assert not sample.mask[:30].any() and sample.mask[30:].all()
    assert sample.mask_colors == [(0, 0, 0), (0, 200, 0)] and sample.mask_labels == ["background", "road"]
    mask[:] = 0  # the head reuses its buffer for the next frame: the sample keeps its own copy
    assert sample.mask[30:].all()

    untouched = _grey_sample()
    attach_mask(untouched, None, {})  # no segmentation head
    attach_mask(untouched, _segmentation_head(), {})  # the head gave nothing this frame
    assert untouched.mask is None


def test_detections_grid_tints_the_mask_and_draws_truth_and_detections(tmp_path: Path) -> None:
    """Road pixels take the road colour at GRID_MASK_ALPHA, background (black in the spec) stays as it was; the
    frame is enlarged to GRID_TILE_WIDTH under a caption; the grid is a PNG without matplotlib."""
    sample = _grey_sample()
    mask = np.zeros((60, 80), np.uint8)
    mask[30:] = 1
    attach_mask(sample, _segmentation_head(), {"drivable": SimpleNamespace(result=SimpleNamespace(mask=mask))})
    tile = report_module._sample_tile(sample)
    zoom = report_module.GRID_TILE_WIDTH / 80
    caption = tile.shape[0] - round(60 * zoom)
    assert tile.shape[1] == report_module.GRID_TILE_WIDTH and caption > 10
    alpha = report_module.GRID_MASK_ALPHA
    road = tile[caption + round(50 * zoom), round(60 * zoom)].astype(int)  # BGR, away from edges and boxes
    expected = np.round(np.array([100, 100, 100]) * (1 - alpha) + np.array([0, 200, 0]) * alpha)
    assert np.abs(road - expected).max() <= 1
    assert (tile[caption + round(10 * zoom), round(60 * zoom)] == 100).all()  # background: untinted
    box_edge = tile[caption + round(15 * zoom), round(10 * zoom)]  # the detection's left edge, class colour
    assert not (box_edge == 100).all()

    path = report_module._plot_samples(None, [sample, _grey_sample()], tmp_path / "detections.png")
    grid = cv2.imread(str(path))
    assert grid is not None and grid.shape[1] == 2 * report_module.GRID_TILE_WIDTH + 3 * 6


def test_tile_titles_stand_clear_of_the_images(tmp_path: Path) -> None:
    """Each tile's title (with a comma's descender) keeps >= 5 px of plain band above its image, and rows of
    tiles keep a gap: titles must not touch the frame they describe (issue 11)."""
    sample = _grey_sample()
    sample.truth_boxes, sample.truth_labels = np.array([[2, 2, 10, 10]], np.float64), ["cone"]  # ", 1 true"
    tile = report_module._sample_tile(sample)
    caption = tile.shape[0] - round(60 * report_module.GRID_TILE_WIDTH / 80)
    band = tile[:caption]
    text_rows = np.flatnonzero((band != report_module._GRID_BACKGROUND).any(axis=(1, 2)))
    assert text_rows.size and caption - 1 - text_rows.max() >= 5

    grid = cv2.imread(str(report_module._plot_samples(None, [_grey_sample()] * 6, tmp_path / "d.png")))
    assert caption == report_module.GRID_CAPTION_HEIGHT
    tile_h = tile.shape[0]
    legend_h = grid.shape[0] - 2 * (tile_h + report_module.GRID_ROW_GAP)
    first_row_end = legend_h + tile_h
    assert (grid[first_row_end : first_row_end + report_module.GRID_ROW_GAP] == report_module._GRID_BACKGROUND).all()


def test_mask_classes_without_a_spec_colour_take_the_overlay_palette() -> None:
    from trt_perception.overlay import class_color

    palette = report_module._mask_palette(None, 3)
    assert (palette[0] == -1).all()  # class 0 (background by convention) is not tinted
    assert tuple(palette[2]) == class_color(2, "bgr")
    assert (report_module._mask_palette([(0, 0, 0), (10, 20, 30)], 2)[1] == (30, 20, 10)).all()


def test_latency_rows_follow_the_frame_head_by_head() -> None:
    """decode, then each head's stages in the heads' order (named heads too, not only detector/pilot), then the
    closing stages: a three-head report no longer lists a head's rows after `total`."""
    from trt_perception.tools.report import ordered_stages

    names = ["total", "drivable.infer", "decode", "messages", "pilot.infer", "detector.infer", "drivable.preprocess",
             "detector.preprocess", "pilot.preprocess", "detector.postprocess", "detector.track", "other"]
    assert ordered_stages(names, ["detector", "drivable", "pilot"]) == [
        "decode", "detector.preprocess", "detector.infer", "detector.postprocess", "detector.track",
        "drivable.preprocess", "drivable.infer", "pilot.preprocess", "pilot.infer", "other", "messages", "total"]
    assert ordered_stages(["total", "b.infer", "a.infer"])[:2] == ["a.infer", "b.infer"]  # heads unknown: by name
