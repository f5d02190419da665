"""The command line through Typer's CliRunner: exit codes, JSON, plain output."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from helpers import FIXTURES, brought_up, write_layout
from typer.testing import CliRunner

from miyabi.cli import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("in_empty_dir")


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
    f = write_layout(tmp_path / "l.yaml", [("a", "shell", "/bin/cat")])
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


def miyabi(*args: str, stdout: int | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m miyabi ARGS`` as a user would, output piped."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MIYABI_HOME", "MIYABI_AGENT", "TMUX")}
    env["MIYABI_SOCKET"] = "miyabi_unit_never_started"
    return subprocess.run(
        [sys.executable, "-m", "miyabi", *args],
        capture_output=stdout is None,
        stdout=stdout,
        stderr=subprocess.PIPE if stdout is not None else None,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_help_is_whole_and_plain_when_piped() -> None:
    r = miyabi("up", "--help")
    assert r.returncode == 0 and "\x1b[" not in r.stdout
    flat = " ".join(r.stdout.split())
    assert "Do not attach; print the command that attaches instead." in flat
    assert "(default: the layout this home runs, else ./miyabi.yaml, else the default layout)" in flat
    assert "(default: the one miyabi last used in this home, else miyabi)" in flat
    root = miyabi("--help").stdout
    commands = root.split("Commands:\n", 1)[1].rstrip().splitlines()
    assert len(commands) >= 15
    for line in commands:  # one whole sentence each: never cut, never broken mid-sentence
        assert re.match(r"^  \S+\s+\S.*[.)]$", line) and not line.endswith("..."), line


def test_version_completion_and_bare_commands() -> None:
    from miyabi import __version__

    r = miyabi("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"miyabi {__version__}"
    r = miyabi()
    assert r.returncode == 0 and "Usage: miyabi" in r.stdout and "Commands:" in r.stdout
    r = miyabi("task")
    assert r.returncode == 0 and "Usage: miyabi task" in r.stdout
    assert "--install-completion" in miyabi("--help").stdout
    # typer finds the shell among the process's ancestors (the argument is not read):
    # run it from bash, as a user does, wherever the tests themselves run from
    import os
    import sys

    r = subprocess.run(
        ["bash", "-c", '"$0" -m miyabi --show-completion; exit $?', sys.executable],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"},
    )
    assert r.returncode == 0 and "complete" in r.stdout, r.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["task", "show"], "miyabi: task show: missing argument 'ID'; see `miyabi task show --help`"),
        (["status", "--bogus"], "miyabi: status: no such option: --bogus; see `miyabi status --help`"),
        (["nosuch"], "miyabi: no such command 'nosuch'; see `miyabi --help`"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], line: str) -> None:
    r = miyabi(*args)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [line]


def test_a_closed_pipe_is_a_quiet_exit() -> None:
    import os

    read, write = os.pipe()
    os.close(read)  # like `| head` that already quit: every write fails with EPIPE
    try:
        r = miyabi("profiles", "--json", stdout=write)
    finally:
        os.close(write)
    assert r.returncode == 141 and r.stderr == ""


def test_a_refused_socket_name_is_a_usage_error(tmp_path: Path) -> None:
    f = write_layout(tmp_path / "l.yaml", [("a", "shell", "cat")])
    r = miyabi("status", "--socket", "default", "--layout", str(f))
    assert r.returncode == 2 and "not allowed" in r.stderr and len(r.stderr.splitlines()) == 1


def test_github_sync_without_a_known_layout_says_so(tmp_path: Path) -> None:
    import json

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "up.json").write_text(json.dumps({"session": "miyabi", "socket": "x", "agents": ["a"]}))
    r = runner.invoke(app, ["github", "sync", "--once", "--home", str(tmp_path)])
    assert r.exit_code == 1
    assert "no layout is known for" in r.output and "run `miyabi up` first, or give --layout" in r.output


def test_task_commands_say_why_a_task_waits_and_give_rfc3339_times(tmp_path: Path) -> None:
    from miyabi.work.store import Store

    lay = write_layout(
        tmp_path / "l.yaml", [("kaede", "shell", "cat")], session="s", routes=[{"label": "bug", "agent": "kaede"}]
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "up.json").write_text(json.dumps({"session": "s", "layout": str(lay), "agents": ["kaede"]}))
    h = ["--home", str(tmp_path)]
    r = runner.invoke(app, ["task", "add", "no label", *h])
    assert r.exit_code == 0 and "warning: task 1 waits in the queue: no route matches it (labels: none)" in r.output
    r = runner.invoke(app, ["task", "add", "a bug", "--label", "bug", *h])
    assert r.exit_code == 0 and "warning" not in r.output
    assert runner.invoke(app, ["task", "add", "another bug", "--label", "bug", *h]).exit_code == 0
    assert runner.invoke(app, ["task", "add", "after it", "--label", "bug", "--depends-on", "3", *h]).exit_code == 0
    Store.of_home(tmp_path).set_state(2, "assigned", "routed", agent="kaede")
    rows = {t["id"]: t for t in json.loads(runner.invoke(app, ["task", "ls", "--json", *h]).output)}
    assert rows[1]["waiting"].startswith("no route matches it")
    assert rows[2]["waiting"] is None
    assert rows[3]["waiting"] == "agent kaede is at its wip limit (1)"
    assert rows[4]["waiting"] == "blocked by #3"
    rfc3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    assert all(rfc3339.match(t["created"]) and rfc3339.match(t["updated"]) for t in rows.values())
    shown = json.loads(runner.invoke(app, ["task", "show", "3", "--json", *h]).output)
    assert shown["waiting"] == "agent kaede is at its wip limit (1)" and all(
        rfc3339.match(e["time"]) for e in shown["history"]
    )
    plain = runner.invoke(app, ["task", "show", "1", *h]).output
    assert "waiting because: no route matches it" in plain
    (tmp_path / "run" / "watchdog.json").write_text(
        json.dumps({"agents": {"kaede": {"history": {"failed": "crash loop"}}}})
    )
    rows = {t["id"]: t for t in json.loads(runner.invoke(app, ["task", "ls", "--json", *h]).output)}
    assert rows[3]["waiting"] == "agent kaede failed (crash loop); `miyabi restart kaede` brings it back"


def test_task_add_in_a_home_that_never_ran_up_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    r = runner.invoke(app, ["task", "add", "x", "--json", "--home", str(tmp_path)])
    assert r.exit_code == 4 and "holds no ensemble" in r.output and "miyabi up" in r.output
    assert list(tmp_path.iterdir()) == []


def test_task_add_in_a_home_without_a_known_layout_explains_nothing_it_cannot_know(tmp_path: Path) -> None:
    brought_up(tmp_path)  # up.json without a layout: why a task waits cannot be told
    r = runner.invoke(app, ["task", "add", "x", "--json", "--home", str(tmp_path)])
    assert r.exit_code == 0 and "warning" not in r.output
    assert json.loads(r.output)["waiting"] is None
