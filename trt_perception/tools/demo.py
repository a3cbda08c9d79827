"""`trt-perception demo`: the first command a new user runs - replay the shipped demo bag, print the report.

Everything it needs ships inside the Python package (``trt_perception/data/demo``: the bag, the steering,
detector and drivable-area ONNX models with their specs, and ``demo_params.yaml``, which runs them as three
heads: ``detector``, ``drivable``, ``pilot``), so it works after a plain ``pip install .`` with no GPU, no ROS
and no network. The models were trained on synthetic scenes rendered by
``trt_perception.tools.synthetic_world``; the bag carries the "human" drive commands, the true object boxes
and the true drivable area, so the report shows how well the pilot follows the driver, how many objects the
detector finds and how well the drivable-area head outlines the road (mIoU). The detector tracks what it finds
(``tracker: bytetrack``) and the bag's true boxes carry their objects' track ids, so the report scores the tracks
too (MOTA, IDF1) and draws them (tracks.png). Without lapx (the tracker's solver, an extra) the demo runs
untracked and says how to add it.

Each run writes into a fresh timestamped folder under the report directory, so no earlier run and no user
file is ever overwritten; where the run cannot write (a read-only or file ``--report``, an ``--out`` that exists
without ``--force``) it says so before any work, and a run that fails leaves no empty run folder behind.
"""

from __future__ import annotations

import argparse
import errno
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

from trt_perception.errors import ConfigError

DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"
PARAMS_NAME = "demo_params.yaml"
BAG_NAME = "drive_bag"
MODEL_NAMES = ("steering.onnx", "steering.yaml", "detector.onnx", "detector.yaml", "drivable.onnx", "drivable.yaml")
TRUTH_DRIVE_TOPIC = "/teleop/cmd_vel"
TRUTH_DETECTIONS_TOPIC = "/ground_truth/detections"
TRUTH_MASK_TOPIC = "/ground_truth/drivable"  # png class ids (0 background, 1 road) for the segmentation head
DEFAULT_REPORT_ROOT = "trt_perception_demo_report"

PathLike = Union[str, Path]


@dataclass(frozen=True)
class DemoFiles:
    """Where the shipped demo lives."""

    folder: Path
    bag: Path
    params: Path


def demo_files(folder: Optional[PathLike] = None) -> DemoFiles:
    """The shipped demo's bag and params; a missing file is a ConfigError naming it and the fix."""
    root = Path(folder) if folder is not None else DEMO_DIR
    wanted = [root / BAG_NAME / "metadata.yaml", root / PARAMS_NAME] + [root / name for name in MODEL_NAMES]
    missing = [str(p) for p in wanted if not p.is_file()]
    if missing:
        raise ConfigError(
            f"the demo files are missing from this installation: {missing}; expected them in {root}; "
            "fix: reinstall trt_perception from a full checkout (`pip install .` copies trt_perception/data/demo), "
            "or regenerate them from a checkout: pip install torch && python scripts/make_demo.py --out "
            "trt_perception/data/demo"
        )
    return DemoFiles(root, root / BAG_NAME, root / PARAMS_NAME)


def _missing_parents(path: Path) -> List[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first (what a run creates)."""
    missing = []
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


def _cannot_write(flag: str, path: Path, exc: OSError) -> ConfigError:
    """The ConfigError for a --report/--out the demo cannot write, with the fix for that flag."""
    reason = exc.strerror or str(exc)
    if flag == "--out":
        fix = "pass an --out path in a folder you can write to, or --no-out to write no bag"
    else:
        fix = f"pass a folder you can write to (e.g. --report ~/{DEFAULT_REPORT_ROOT}), or fix its permissions"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        inside = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        return ConfigError(f"{flag} {path} cannot be written: {inside} is a file, not a folder; fix: {fix}")
    return ConfigError(f"{flag} {path} is not writable ({reason}); fix: {fix}")


def fresh_run_dir(root: PathLike) -> Path:
    """A new ``root/run-YYYYmmdd-HHMMSS[-n]`` folder: every demo run gets its own, nothing is overwritten. A root
    that is a file, or cannot be created or written, is a ConfigError naming it and the fix."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--report {root} is a file, not a folder; fix: pass a folder path (each run gets a new "
                          "run-<time> folder inside)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        candidate = root / (f"run-{stamp}" if attempt == 0 else f"run-{stamp}-{attempt}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            if not root.is_dir():
                raise _cannot_write("--report", root, FileExistsError(errno.ENOTDIR, "a file is in the way")) from None
            continue
        except OSError as exc:
            raise _cannot_write("--report", root, exc) from None
        return candidate
    raise ConfigError(f"cannot create a new run folder under {root} (1000 runs this second?); "
                      "fix: pass another --report DIR")


def check_out(out: Path, force: bool) -> None:
    """Refuse an --out the demo cannot write BEFORE any work: one that exists (without --force), or whose folder
    cannot be created or written; the fix names the demo's own flags."""
    if out.exists() and not force:
        raise ConfigError(f"--out {out} exists; refusing to overwrite it; fix: pass --force to replace it (an earlier "
                          "demo's bag), another --out, or --no-out to write no bag")
    parent = out.parent
    missing = _missing_parents(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=str(parent), prefix=".demo-write-test-"):
            pass
    except OSError as exc:
        raise _cannot_write("--out", out, exc) from None
    finally:
        _remove_empty(missing)


def _remove_empty(folders: List[Path]) -> None:
    """Remove the folders (deepest first) this run created, where they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def _lapx_installed() -> bool:
    try:
        import lap  # noqa: F401  (lapx: the tracker's linear assignment)
    except ImportError:
        return False
    return True


def demo_config(params: Path) -> Tuple[Any, Optional[str]]:
    """The demo's params as replay takes them, and a note when they had to change: without lapx the heads run
    untracked (a plain ``pip install .`` has no lapx; the demo must still run), rather than refusing to start."""
    if _lapx_installed():
        return params, None
    from trt_perception.tools.replay import load_config
    from trt_perception.tracking import LAPX_HINT

    config = load_config(params)
    tracked = [h.name for h in config.heads if h.values.get("tracker", "none") != "none"]
    if not tracked:
        return config, None
    heads = tuple(replace(h, values={**h.values, "tracker": "none"}) if h.name in tracked else h for h in config.heads)
    note = (f"{', '.join(tracked)} ran without its tracker: lapx (the tracker's linear assignment) is not installed, "
            f"so there are no track ids, MOTA/IDF1 or tracks.png; fix: {LAPX_HINT}")
    return replace(config, heads=heads), note


def run_demo_replay(
    report_root: PathLike = DEFAULT_REPORT_ROOT,
    out: Optional[PathLike] = None,
    progress: bool = False,
    plots: bool = True,
    folder: Optional[PathLike] = None,
    force: bool = False,
    no_out: bool = False,
):  # -> ReplayReport
    """Replay the shipped demo with its params; report files (and the output bag, unless ``no_out``) go to a fresh
    run folder. ``force`` replaces an existing ``out`` bag. Where it cannot write is refused before any work; a
    run that fails removes the run folder it made (and report folders it created), so nothing is left behind."""
    from trt_perception.tools.plot_process import start_plot_process

    with start_plot_process(plots) or nullcontext() as plot_process:
        return _demo_replay(report_root, out, progress, plots, folder, force, no_out, plot_process)


def _demo_replay(report_root: PathLike, out: Optional[PathLike], progress: bool, plots: bool,
                 folder: Optional[PathLike], force: bool, no_out: bool, plot_process: Any):  # -> ReplayReport
    from trt_perception.tools.replay import bag_topics, replay_bag

    if no_out and out is not None:
        raise ConfigError(f"--no-out and --out {out} contradict each other; fix: drop one")
    out_path = Path(out).expanduser() if out is not None and not no_out else None
    if out_path is not None:
        check_out(out_path, force)
    files = demo_files(folder)
    config, note = demo_config(files.params)
    if note:
        print(f"trt_perception demo: note: {note}", file=sys.stderr)
    topics = bag_topics(files.bag)
    root = Path(report_root).expanduser()
    created = _missing_parents(root)
    run_dir = fresh_run_dir(root)
    try:
        report = replay_bag(
            files.bag,
            config,
            out=None if no_out else (out_path or run_dir / "replay_bag"),
            report_dir=run_dir,
            truth_drive_topic=TRUTH_DRIVE_TOPIC if TRUTH_DRIVE_TOPIC in topics else None,
            truth_detections_topic=TRUTH_DETECTIONS_TOPIC if TRUTH_DETECTIONS_TOPIC in topics else None,
            truth_mask_topic=TRUTH_MASK_TOPIC if TRUTH_MASK_TOPIC in topics else None,
            force=force,
            progress=progress,
            plots=plots,
            extra_notes=[note] if note else [],
            plot_process=plot_process,
        )
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # made by this run a moment ago: nothing of the user's in it
        _remove_empty(created)
        raise
    return report


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", metavar="DIR", default=DEFAULT_REPORT_ROOT,
                        help=f"where report folders go; each run gets a new run-<time> folder inside "
                             f"(default: ./{DEFAULT_REPORT_ROOT})")
    parser.add_argument("--out", default=None,
                        help="output bag with the detections and drive commands (default: inside the run folder)")
    parser.add_argument("--no-out", action="store_true", help="write no output bag (the report only)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out bag (an earlier demo's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-plots", action="store_true",
                        help="report.json without the PNG plots (saves matplotlib's import and drawing)")


def run_demo(args: argparse.Namespace) -> int:
    from trt_perception.tools.report import format_report

    demo_files()  # a broken installation fails here, before the banner
    print("trt_perception demo: replaying the shipped drive (synthetic scenes) through the detector, "
          "drivable-area and steering models on ONNX Runtime, exactly as the node would run them", file=sys.stderr)
    report = run_demo_replay(args.report, out=args.out, progress=not args.no_progress and sys.stderr.isatty(),
                             plots=not args.no_plots, force=args.force, no_out=args.no_out)
    print(format_report(report))
    print()
    print("Next:")
    plots = [Path(f).name for f in report.files if f.endswith(".png")]
    what = ", ".join([*plots, "report.json"])
    print(f"  the report files:    {report.report_dir}  ({what})")
    if report.out_bag:
        print(f"  the output bag:      {report.out_bag}  (Foxglove, or `ros2 bag play` next to the camera)")
    print("  your own recording:  trt-perception replay YOUR_BAG --params YOUR_PARAMS.yaml --report my_report "
          "[--truth-drive-topic /your/cmd_vel] [--realtime]   (start from config/car.yaml)")
    return 0
