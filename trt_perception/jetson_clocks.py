"""Jetson performance mode for the car: max clocks and fan while driving, the previous state restored after.

Users are told to run ``sudo jetson_clocks`` by hand and forget to undo it; clocks.launch.py calls this module
instead: store the current clocks (``jetson_clocks --store FILE``), optionally switch the power model
(``nvpmodel -m N``, the previous mode remembered), run ``jetson_clocks``, set the fan
(``jetson_clocks --fan``, or the pwm-fan sysfs knob on a Nano), and on shutdown restore all of it. Every
command goes through non-interactive sudo (``sudo -n``): a launch must never hang on a password prompt. On a
machine without ``jetson_clocks`` or without sudo rights it logs one line and the car starts anyway.

    python -m trt_perception.jetson_clocks setup --store ~/.ros/trt_perception_clocks.conf --nvpmodel 0
    python -m trt_perception.jetson_clocks restore --store ~/.ros/trt_perception_clocks.conf
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

# (command, stdin text) -> (exit code, output). Injected in tests.
Runner = Callable[[Sequence[str], Optional[str]], Tuple[int, str]]

DEFAULT_STORE = "~/.ros/trt_perception_jetson_clocks.conf"
PWM_FAN = Path("/sys/devices/pwm-fan/target_pwm")  # Jetson Nano (JetPack 4) fan knob, 0..255
TOOL_DIRS = ("/usr/bin", "/usr/sbin")  # where JetPack installs jetson_clocks and nvpmodel
SUDOERS_HINT = (
    "fix: allow them without a password, e.g. `sudo visudo -f /etc/sudoers.d/trt_perception` with the line "
    "`{user} ALL=(root) NOPASSWD: /usr/bin/jetson_clocks, /usr/sbin/nvpmodel, /usr/bin/tee {fan}`"
)


def run_command(
    command: Sequence[str], stdin: Optional[str] = None, timeout: float = 60.0
) -> Tuple[int, str]:
    """Run a command, never prompting; returns (exit code, stdout+stderr)."""
    try:
        done = subprocess.run(
            list(command),
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        return 127, str(exc)
    except subprocess.TimeoutExpired:
        return 124, f"{command[0]} did not finish within {timeout:g} s"
    return done.returncode, done.stdout or ""


def _find(tool: str, which: Callable[[str], Optional[str]]) -> Optional[str]:
    found = which(tool)
    if found:
        return found
    for folder in TOOL_DIRS:  # sbin is often not on a normal user's PATH
        candidate = os.path.join(folder, tool)
        if which(candidate):
            return candidate
    return None


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class JetsonClocks:
    """Performance setup and restore; ``applied`` says whether restore has anything to undo."""

    store_file: Path = field(default_factory=lambda: Path(os.path.expanduser(DEFAULT_STORE)))
    fan: bool = True
    nvpmodel_mode: Optional[int] = None
    run: Runner = run_command
    which: Callable[[str], Optional[str]] = lambda name: shutil.which(name)  # patchable
    is_root: Callable[[], bool] = _is_root
    log: Callable[[str], None] = print
    fan_knob: Path = PWM_FAN
    applied: bool = False
    previous_nvpmodel: Optional[int] = None
    _prefix: List[str] = field(default_factory=list)
    _tool: str = ""

    # ---------------------------------------------------------------------------------------------- checks

    def _sudo_prefix(self, tool: str) -> Optional[List[str]]:
        """[] as root, ['sudo', '-n'] when sudo allows ``tool`` without a password, else None."""
        if self.is_root():
            return []
        if not self.which("sudo"):
            return None
        code, _ = self.run(["sudo", "-n", "-l", tool], None)
        return ["sudo", "-n"] if code == 0 else None

    def _hint(self) -> str:
        user = os.environ.get("USER") or "<user>"
        return SUDOERS_HINT.format(user=user, fan=self.fan_knob)

    # ----------------------------------------------------------------------------------------------- setup

    def setup(self) -> bool:
        """Max performance; returns False (after one log line) when this machine cannot or may not do it."""
        tool = _find("jetson_clocks", self.which)
        if tool is None:
            self.log(
                "performance_mode: jetson_clocks not found (not a Jetson?); "
                "the car starts with the current clocks"
            )
            return False
        prefix = self._sudo_prefix(tool)
        if prefix is None:
            self.log(
                "performance_mode: no passwordless sudo for jetson_clocks; "
                "the car starts with the current clocks; "
                + self._hint()
            )
            return False
        self._prefix, self._tool = prefix, tool
        self.store_file.parent.mkdir(parents=True, exist_ok=True)
        code, out = self.run([*prefix, tool, "--store", str(self.store_file)], None)
        if code != 0:
            self.log(
                f"performance_mode: `jetson_clocks --store {self.store_file}` failed "
                f"({code}: {out.strip()}); clocks left unchanged"
            )
            return False
        self.applied = True  # from here on, restore has something to undo
        steps = [f"clocks stored in {self.store_file}"]
        if self.nvpmodel_mode is not None:
            steps.append(self._set_nvpmodel(self.nvpmodel_mode))
        code, out = self.run([*prefix, tool], None)
        steps.append(
            "jetson_clocks: max clocks" if code == 0 else f"jetson_clocks failed ({code}: {out.strip()})"
        )
        if self.fan:
            steps.append(self._fan_max())
        self.log("performance_mode: " + "; ".join(steps))
        return code == 0

    def _set_nvpmodel(self, mode: int) -> str:
        nvpmodel = _find("nvpmodel", self.which)
        if nvpmodel is None:
            return "nvpmodel not found: power mode unchanged"
        code, out = self.run([*self._prefix, nvpmodel, "-q"], None)
        current = _parse_nvpmodel_query(out) if code == 0 else None
        code, out = self.run([*self._prefix, nvpmodel, "-m", str(int(mode))], None)
        if code != 0:
            return f"nvpmodel -m {mode} failed ({code}: {out.strip()})"
        self.previous_nvpmodel = current
        return f"nvpmodel mode {mode} (was {current if current is not None else 'unknown'})"

    def _fan_max(self) -> str:
        code, _ = self.run([*self._prefix, self._tool, "--fan"], None)
        if code == 0:
            return "fan at max (jetson_clocks --fan)"
        if self.fan_knob.exists():  # Nano: jetson_clocks has no --fan on some releases; pwm-fan knob instead
            tee = _find("tee", self.which) or "tee"
            code, out = self.run([*self._prefix, tee, str(self.fan_knob)], "255\n")
            return (
                f"fan at max ({self.fan_knob})"
                if code == 0
                else f"fan unchanged ({self.fan_knob}: {out.strip()})"
            )
        return "fan unchanged (no `jetson_clocks --fan`, no pwm-fan knob)"

    # --------------------------------------------------------------------------------------------- restore

    def restore(self) -> bool:
        """Undo ``setup``: power mode back first (it resets clocks), then the stored clocks and fan."""
        if not self.applied:
            return False
        steps = []
        ok = True
        if self.previous_nvpmodel is not None:
            nvpmodel = _find("nvpmodel", self.which) or "nvpmodel"
            code, out = self.run([*self._prefix, nvpmodel, "-m", str(self.previous_nvpmodel)], None)
            ok &= code == 0
            steps.append(
                f"nvpmodel mode {self.previous_nvpmodel}" if code == 0 else f"nvpmodel failed ({out.strip()})"
            )
        code, out = self.run([*self._prefix, self._tool, "--restore", str(self.store_file)], None)
        ok &= code == 0
        steps.append(
            f"clocks restored from {self.store_file}"
            if code == 0
            else f"`jetson_clocks --restore` failed ({code}: {out.strip()}); "
            f"fix: sudo jetson_clocks --restore {self.store_file}"
        )
        self.applied = False
        self.log("performance_mode: " + "; ".join(steps))
        return ok

    @classmethod
    def for_restore(
        cls, store_file: Path, previous_nvpmodel: Optional[int] = None, **kw: object
    ) -> JetsonClocks:
        """A restore in another process (the CLI): re-check tool and sudo, then undo from the store file."""
        clocks = cls(store_file=store_file, **kw)  # type: ignore[arg-type]
        tool = _find("jetson_clocks", clocks.which)
        prefix = clocks._sudo_prefix(tool) if tool else None
        if tool is None or prefix is None or not Path(store_file).exists():
            return clocks
        clocks._tool, clocks._prefix, clocks.applied = tool, prefix, True
        clocks.previous_nvpmodel = previous_nvpmodel
        return clocks


def _parse_nvpmodel_query(text: str) -> Optional[int]:
    """`nvpmodel -q` prints 'NV Power Mode: MAXN' and then the mode id on its own line."""
    numbers = [line.strip() for line in text.splitlines() if re.fullmatch(r"\s*\d+\s*", line)]
    return int(numbers[-1]) if numbers else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trt_perception.jetson_clocks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("action", choices=("setup", "restore"))
    parser.add_argument(
        "--store", default=DEFAULT_STORE, help="file for the stored clocks (default %(default)s)"
    )
    parser.add_argument("--no-fan", action="store_true", help="leave the fan alone")
    parser.add_argument("--nvpmodel", type=int, default=None, help="power mode to set (setup) or restore")
    args = parser.parse_args(argv)
    store = Path(os.path.expanduser(args.store))
    if args.action == "setup":
        JetsonClocks(store_file=store, fan=not args.no_fan, nvpmodel_mode=args.nvpmodel).setup()
        return 0  # the car starts either way
    clocks = JetsonClocks.for_restore(store, previous_nvpmodel=args.nvpmodel)
    if not clocks.applied:
        print(f"performance_mode: nothing to restore ({store} missing, or no jetson_clocks/sudo)")
        return 0
    return 0 if clocks.restore() else 1


if __name__ == "__main__":
    sys.exit(main())
