"""Where the tools write, checked before any work: an output folder that can take files, an output file path that
is not a folder, and nothing written into a recording. An hour-long replay or a conversion must not fail at the
end on its output path, and a read-only or mistyped path is the package's error naming the flag and the fix,
not an OSError traceback. Light: no numpy, onnx or OpenCV."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from trt_perception.errors import BagError, ConfigError

PathLike = Union[str, Path]


def check_writable_folder(path: Path, flag: str) -> None:
    """Before any work is done: ``path`` is a folder that exists or can be created, and files can be written
    in it (a read-only folder, or a path that is a file, would otherwise fail after an hour-long replay).
    Every problem is a ConfigError naming the flag, the path and the fix."""
    import tempfile

    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is an existing file; expected a folder (created when missing); fix: pass "
                          "a folder path, or move the file away")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{flag} {path}: {probe} is a file, so no folder can be made below it; fix: pass "
                          "another path")
    try:
        with tempfile.TemporaryFile(dir=str(probe)):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write in {probe} ({exc.strerror or exc}); fix: pass a folder "
                          "you can write to, or change its permissions") from None


def check_output_file(path: Path, flag: str) -> None:
    """Before any work: ``path`` can be written as a file: it is not a folder, and its folder exists or can be
    made and takes files (else a read-only or mistyped ``-o`` failed with a traceback after the conversion).
    Whether an existing file may be replaced (``--force``) is the caller's to say."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; expected a file path; fix: pass a file path, e.g. "
                          f"{path / 'NAME'}")
    check_writable_folder(path.parent, f"{flag} {path}: its folder")


def is_inside(folder: PathLike, path: PathLike) -> bool:
    """``path`` is ``folder`` or lies below it (both resolved: ``.``, ``..`` and links count)."""
    root = Path(folder).expanduser().resolve()
    target = Path(path).expanduser().resolve()
    return target == root or root in target.parents


def refuse_output_inside(recording: PathLike, output: PathLike, flag: str) -> None:
    """Nothing is ever written into a recording (a tub, or a rosbag2 folder): ``output`` inside one is refused,
    before any work."""
    recording = Path(recording).expanduser()
    if recording.is_dir() and is_inside(recording, output):
        from trt_perception.tools.tub import is_tub

        what = "the tub" if is_tub(recording) else "the recording"
        raise BagError(f"{flag} {output} is inside {what} {recording}; nothing is written into a recording; fix: "
                       f"pass {flag} with a path outside it")
