"""jetson_clocks helper: the command sequence on a Jetson, and one log line (car still starts) elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from trt_perception.jetson_clocks import JetsonClocks, _parse_nvpmodel_query, main


class FakeMachine:
    """Records commands; answers from a table keyed by the command without the sudo prefix."""

    def __init__(self, tools=("jetson_clocks", "nvpmodel", "sudo", "tee"), sudo_ok=True, fail=()) -> None:
        self.tools = {t: f"/usr/bin/{t}" for t in tools}
        self.sudo_ok = sudo_ok
        self.fail = set(fail)
        self.commands: List[Tuple[str, ...]] = []
        self.stdin: Dict[Tuple[str, ...], Optional[str]] = {}

    def which(self, name: str) -> Optional[str]:
        return self.tools.get(Path(name).name) if "/" not in name or name in self.tools.values() else None

    def run(self, command: Sequence[str], stdin: Optional[str]) -> Tuple[int, str]:
        cmd = tuple(command)
        self.commands.append(cmd)
        self.stdin[cmd] = stdin
        if cmd[:3] == ("sudo", "-n", "-l"):
            return (0, cmd[3]) if self.sudo_ok else (1, "sudo: a password is required")
        bare = cmd[2:] if cmd[:2] == ("sudo", "-n") else cmd
        key = " ".join([Path(bare[0]).name, *bare[1:]])
        if any(key.startswith(f) for f in self.fail):
            return 1, "failed"
        if key == "nvpmodel -q":
            return 0, "NV Power Mode: 5W\n1\n"
        return 0, ""


def clocks(machine: FakeMachine, tmp_path: Path, logs: list, **kw) -> JetsonClocks:
    return JetsonClocks(
        store_file=tmp_path / "clocks.conf",
        run=machine.run,
        which=machine.which,
        is_root=lambda: False,
        log=logs.append,
        fan_knob=tmp_path / "target_pwm",
        **kw,
    )


def bare(commands):
    return [" ".join([Path(c[2]).name, *c[3:]]) for c in commands if c[:2] == ("sudo", "-n") and c[2] != "-l"]


def test_setup_and_restore_on_a_jetson(tmp_path):
    machine, logs = FakeMachine(), []
    jc = clocks(machine, tmp_path, logs, nvpmodel_mode=0)
    assert jc.setup() is True and jc.applied
    store = str(tmp_path / "clocks.conf")
    assert bare(machine.commands) == [
        f"jetson_clocks --store {store}",
        "nvpmodel -q",
        "nvpmodel -m 0",
        "jetson_clocks",
        "jetson_clocks --fan",
    ]
    assert len(logs) == 1 and "nvpmodel mode 0 (was 1)" in logs[0] and "fan at max" in logs[0]
    machine.commands.clear()
    assert jc.restore() is True
    assert bare(machine.commands) == ["nvpmodel -m 1", f"jetson_clocks --restore {store}"]
    assert not jc.applied and jc.restore() is False  # once


def test_no_jetson_clocks_logs_one_line_and_goes_on(tmp_path):
    machine, logs = FakeMachine(tools=("sudo",)), []
    jc = clocks(machine, tmp_path, logs)
    assert jc.setup() is False
    assert logs == [
        "performance_mode: jetson_clocks not found (not a Jetson?); the car starts with the current clocks"
    ]
    assert machine.commands == [] and jc.restore() is False


def test_no_sudo_rights_logs_the_sudoers_fix(tmp_path):
    machine, logs = FakeMachine(sudo_ok=False), []
    jc = clocks(machine, tmp_path, logs)
    assert jc.setup() is False
    assert len(logs) == 1 and "no passwordless sudo" in logs[0] and "NOPASSWD" in logs[0]
    assert all(c[:3] == ("sudo", "-n", "-l") for c in machine.commands)  # nothing was changed
    assert jc.restore() is False


def test_root_needs_no_sudo(tmp_path):
    machine, logs = FakeMachine(tools=("jetson_clocks",)), []
    jc = JetsonClocks(
        store_file=tmp_path / "c.conf",
        run=machine.run,
        which=machine.which,
        is_root=lambda: True,
        log=logs.append,
        fan=False,
    )
    assert jc.setup()
    assert [Path(c[0]).name for c in machine.commands] == ["jetson_clocks", "jetson_clocks"]


def test_nano_fan_falls_back_to_the_pwm_knob(tmp_path):
    (tmp_path / "target_pwm").write_text("0")
    machine, logs = FakeMachine(fail=("jetson_clocks --fan",)), []
    jc = clocks(machine, tmp_path, logs)
    assert jc.setup()
    tee = [c for c in machine.commands if Path(c[-2]).name == "tee"]
    assert tee and tee[0][-1] == str(tmp_path / "target_pwm") and machine.stdin[tee[0]] == "255\n"
    assert f"fan at max ({tmp_path / 'target_pwm'})" in logs[0]


def test_store_failure_changes_nothing(tmp_path):
    machine, logs = FakeMachine(fail=("jetson_clocks --store",)), []
    jc = clocks(machine, tmp_path, logs)
    assert jc.setup() is False and not jc.applied
    assert bare(machine.commands) == [f"jetson_clocks --store {tmp_path / 'clocks.conf'}"]
    assert "clocks left unchanged" in logs[0]


def test_restore_failure_names_the_manual_fix(tmp_path):
    machine, logs = FakeMachine(fail=("jetson_clocks --restore",)), []
    jc = clocks(machine, tmp_path, logs, fan=False)
    jc.setup()
    assert jc.restore() is False
    assert "sudo jetson_clocks --restore" in logs[-1]


def test_parse_nvpmodel_query():
    assert _parse_nvpmodel_query("NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n") == 0
    assert _parse_nvpmodel_query("garbage") is None


def test_cli_setup_never_fails_the_launch(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert main(["setup", "--store", str(tmp_path / "c.conf")]) == 0
    assert "jetson_clocks not found" in capsys.readouterr().out
    assert main(["restore", "--store", str(tmp_path / "c.conf")]) == 0
