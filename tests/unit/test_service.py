"""The systemd unit `miyabi service install` writes."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from helpers import write_layout
from typer.testing import CliRunner

from miyabi.cli import app
from miyabi.controller.systemd import render


def test_unit_restarts_the_controller_and_never_kills_tmux(tmp_path: Path) -> None:
    text = render(tmp_path / "home", "sock", tmp_path / "l.yaml", "orchestra", user=True, python="/opt/py")
    lines = text.splitlines()
    assert "Restart=always" in lines and "KillMode=process" in lines
    exec_line = next(line for line in lines if line.startswith("ExecStart="))
    assert shlex.split(exec_line[len("ExecStart=") :]) == [
        "/opt/py",
        "-m",
        "miyabi",
        "controller",
        "--home",
        str(tmp_path / "home"),
        "--socket",
        "sock",
        "--layout",
        str(tmp_path / "l.yaml"),
    ]
    assert "WantedBy=default.target" in lines


def test_install_and_uninstall_a_user_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.chdir(tmp_path)
    layout = write_layout(tmp_path / "l.yaml", ["kaede"], session="orchestra")
    r = CliRunner().invoke(
        app, ["service", "install", "--user", "--layout", str(layout), "--socket", "s1", "--home", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    unit = tmp_path / "cfg" / "systemd" / "user" / "miyabi-orchestra.service"
    assert unit.exists() and "--socket s1" in unit.read_text()
    assert "systemctl --user daemon-reload" in r.output
    r = CliRunner().invoke(app, ["service", "uninstall", "--user", "--layout", str(layout), "--home", str(tmp_path)])
    assert r.exit_code == 0 and not unit.exists()
    r = CliRunner().invoke(app, ["service", "uninstall", "--user", "--layout", str(layout), "--home", str(tmp_path)])
    assert r.exit_code == 1 and "nothing to remove" in r.output
