"""The command line through Typer's CliRunner: exit codes, JSON, plain output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES
from typer.testing import CliRunner

from miyabi.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIYABI_SOCKET", "miyabi_unit_never_started")
    monkeypatch.delenv("MIYABI_HOME", raising=False)


def test_layouts_json_lists_the_shipped_layouts() -> None:
    r = runner.invoke(app, ["layouts", "--json"])
    assert r.exit_code == 0, r.output
    items = {i["name"]: i for i in json.loads(r.output)}
    assert items["default"]["agents"] == ["kaede", "sakura", "tsubaki", "botan"]
    assert items["claude"]["profiles"] == ["claude"]
    assert "error" not in json.dumps(items)


def test_layouts_plain_table() -> None:
    r = runner.invoke(app, ["layouts"])
    assert r.exit_code == 0
    assert r.output.splitlines()[0].split()[:2] == ["layout", "agents"]
    assert "\x1b[" not in r.output


def test_profiles_json() -> None:
    r = runner.invoke(app, ["profiles", "--json"])
    assert r.exit_code == 0
    by_name = {p["name"]: p for p in json.loads(r.output)}
    assert set(by_name) == {"claude", "codex", "gemini", "aider", "opencode", "shell", "worker"}
    assert by_name["codex"]["submit_key"] == "Enter"
    assert isinstance(by_name["claude"]["submit_delay"], float)


def test_init_writes_a_layout_that_up_would_load(tmp_path: Path) -> None:
    r = runner.invoke(app, ["init"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "miyabi.yaml").is_file()
    r = runner.invoke(app, ["init"])
    assert r.exit_code == 1
    assert "already exists" in r.output and "--force" in r.output


def test_invalid_layout_exits_3_with_one_line_per_problem() -> None:
    r = runner.invoke(app, ["up", str(FIXTURES / "duplicate_agent_name.yaml"), "-d"])
    assert r.exit_code == 3
    lines = [line for line in r.output.splitlines() if line]
    assert lines == [line for line in lines if line.startswith("miyabi: ")]
    assert "duplicate_agent_name.yaml:4: agents[1].name: duplicate agent name 'kaede'" in r.output


def test_missing_layout_file_exits_3() -> None:
    r = runner.invoke(app, ["up", "no/such/layout.yaml", "-d"])
    assert r.exit_code == 3
    assert "no such layout file" in r.output


def test_tmux_missing_exits_4(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # PATH holds only a `miyabi` stand-in (so preflight passes), no tmux.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    f = tmp_path / "l.yaml"
    f.write_text("agents:\n  - name: a\n    profile: shell\n    command: /bin/cat\n")
    r = runner.invoke(app, ["up", str(f), "-d"])
    assert r.exit_code == 4, r.output
    assert "tmux is not installed" in r.output
    r = runner.invoke(app, ["status", "--layout", str(f)])
    assert r.exit_code == 4


def test_usage_error_exits_2() -> None:
    r = runner.invoke(app, ["status", "--bogus"])
    assert r.exit_code == 2


def test_worker_runs_on_a_pipe(tmp_path: Path) -> None:
    t = tmp_path / "t.jsonl"
    r = runner.invoke(app, ["worker", "--name", "w", "--transcript", str(t)], input="one\ntwo\n/quit\n")
    assert r.exit_code == 0, r.output
    assert "ack one" in r.output and "ack two" in r.output
    assert [json.loads(x)["text"] for x in t.read_text().splitlines()] == ["one", "two"]
