"""`miyabi status` without tmux: its table on a terminal and piped, its words, the light
command line, and the figures it reads from the controller instead of measuring."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from miyabi.cli import output
from miyabi.cli.light import parse
from miyabi.cli.status import controller_line, draw
from miyabi.home import Home
from miyabi.supervision.status import AgentState, AgentStatus, record_cpu, recorded_cpu, tree_stats
from miyabi.times import how_often

LONG = "killed by signal 9 after it printed a very long traceback about an unreachable model endpoint " * 2


def row(name: str, **extra: object) -> AgentStatus:
    fields: dict[str, object] = {
        "name": name,
        "window": "0:agents-1",
        "pane_id": "%3",
        "pid": 123456,
        "command": "claude --model opus --dangerously-skip-permissions --add-dir /home/me/src/project",
        "alive": True,
        "state": AgentState.READY,
        "exit": None,
        "exit_status": None,
        "exit_signal": None,
        "uptime": 3723.0,
        "cpu_percent": 12.5,
        "rss": 345_000_000,
        "last_output": 75.0,
        "restarts_last_hour": 2,
        "last_reason": LONG,
    }
    fields.update(extra)
    return AgentStatus(**fields)  # type: ignore[arg-type]


ROWS = [
    row("kaede"),
    row("sakura-with-a-long-name", state=AgentState.WAITING_APPROVAL, question="Allow Bash(rm -rf build/)? " * 3),
    row("tsubaki", input_tokens=1_234_567, output_tokens=89_000, cost_usd=1.5, last_reason=None),
    row("botan", alive=False, state=AgentState.DEAD, exit="exit status 1", pid=0, cpu_percent=None, rss=None),
]


def test_on_a_120_column_terminal_each_agent_is_one_line_and_long_cells_end_in_an_ellipsis(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(output, "is_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", "120")
    from miyabi.cli.status import columns

    draw(ROWS, columns(ROWS, terminal=True), terminal=True, title="session s (socket x)")
    lines = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out).splitlines()
    assert all(len(line) <= 120 for line in lines), lines
    for r in ROWS:
        mine = [line for line in lines if line.startswith(r.name[:8])]
        assert len(mine) == 1, (r.name, lines)  # one line, never wrapped
    kaede = next(line for line in lines if line.startswith("kaede"))
    assert kaede.rstrip().endswith("…") and "killed by" in kaede  # the reason, cut where it had to be
    assert "1.2M/89.0k $1.50" in next(line for line in lines if line.startswith("tsubaki"))


def test_piped_every_cell_is_printed_whole_one_line_per_agent(capsys: pytest.CaptureFixture[str]) -> None:
    from miyabi.cli.status import columns

    draw(ROWS, columns(ROWS, terminal=False), terminal=False, title="session s (socket x)")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 2 + len(ROWS)  # title, header, one line each
    assert "…" not in out
    assert LONG.strip() in out and ("Allow Bash(rm -rf build/)? " * 3).strip() in out
    assert ROWS[0].command in out  # the command too, whole


def test_fit_cuts_the_widest_of_the_named_columns_down_to_a_floor() -> None:
    headers = ["agent", "state", "last reason"]
    assert output.fit([5, 5, 11], 100, [2, 1], headers) == [5, 5, 11]  # it fits: nothing cut
    assert output.fit([10, 30, 80], 80, [2, 1], headers) == [10, 30, 36]  # 10 + 30 + 36 + 2 gaps of 2
    assert output.fit([10, 30, 80], 60, [2, 1], headers) == [10, 23, 23]  # then both, evenly
    assert output.fit([10, 30, 80], 5, [2, 1], headers) == [10, 10, 11]  # never below the floors


@pytest.mark.parametrize(("n", "said"), [(0, "0 times"), (1, "once"), (2, "2 times"), (21, "21 times")])
def test_how_often_says_once_and_never_1_times(n: int, said: str) -> None:
    assert how_often(n) == said


def test_the_controller_line_says_once() -> None:
    ctl = {
        "running": True,
        "pid": 42,
        "uptime": 61.0,
        "kept_alive": True,
        "restarts": 1,
        "last_restart": "2026-12-06T01:02:03.000Z",
        "last_reason": "controller 41 killed by signal 9 after 3.0 s",
    }
    line, colour = controller_line(ctl)
    assert "restarted once, last 2026-12-06T01:02:03.000Z" in line and "1 times" not in line and colour == "green"
    assert "restarted 3 times" in controller_line({**ctl, "restarts": 3})[0]


@pytest.mark.parametrize(
    ("command", "argv", "want"),
    [
        ("status", [], {"json": False, "all_hosts": False, "socket": None, "home": None, "layout": None}),
        (
            "status",
            ["--json", "-L", "s1", "--home=/h", "-fl.yaml", "--all-hosts"],
            {"json": True, "all_hosts": True, "socket": "s1", "home": "/h", "layout": "l.yaml"},
        ),
        (
            "up",
            ["my.yaml", "-d", "--no-controller", "--socket", "s"],
            {"detach": True, "controller": False, "socket": "s", "home": None, "layout": "my.yaml"},
        ),
        (
            "up",
            ["--", "-odd.yaml"],
            {"detach": False, "controller": True, "socket": None, "home": None, "layout": "-odd.yaml"},
        ),
        ("controller", ["--home", "/h", "--socket", "s"], {"socket": "s", "home": "/h", "layout": None}),
    ],
)
def test_the_light_path_reads_the_usual_command_lines(command: str, argv: list[str], want: dict[str, object]) -> None:
    assert parse(command, argv) == want


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("status", ["--bogus"]),  # Typer says what is wrong
        ("status", ["--socket"]),  # no value
        ("status", ["--socket", "--json"]),  # a value that looks like an option
        ("status", ["--socket="]),
        ("status", ["extra"]),
        ("status", ["--json=yes"]),
        ("up", ["a.yaml", "b.yaml"]),
        ("controller", ["-d"]),
    ],
)
def test_the_light_path_leaves_anything_else_to_typer(command: str, argv: list[str]) -> None:
    assert parse(command, argv) is None


def test_status_and_up_take_the_light_path_and_typer_still_gives_help_and_usage_errors(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MIYABI_HOME", "MIYABI_AGENT", "TMUX")}
    env["MIYABI_SOCKET"] = "miyabi_unit_never_started"
    probe = "import sys, runpy; sys.argv = ['miyabi', *sys.argv[1:]]; runpy.run_module('miyabi', run_name='__main__')"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-X", "importtime", "-c", probe, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )

    r = run("status", "--home", str(tmp_path))
    assert r.returncode == 4 and "holds no ensemble" in r.stderr  # answered, and without Typer
    assert "| typer" not in r.stderr and "| pydantic" not in r.stderr
    r = run("status", "--help")
    assert r.returncode == 0 and "Usage: miyabi status" in r.stdout
    r = run("up", "--bogus")
    assert r.returncode == 2
    assert [x for x in r.stderr.splitlines() if not x.startswith("import time")] == [
        "miyabi: up: no such option: --bogus; see `miyabi up --help`"
    ]


def test_cpu_is_measured_since_the_last_look_else_over_the_process_life(tmp_path: Path) -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 30
        while (stats := tree_stats([busy.pid])).get(busy.pid) is None or stats[busy.pid].cpu_seconds < 0.2:
            assert time.monotonic() < deadline, "the busy process used no CPU"
            time.sleep(0.05)
        assert stats[busy.pid].cpu_percent > 0  # over its life: no sample to wait for
        cache: dict[int, object] = {}
        tree_stats([busy.pid], cache=cache)
        assert set(cache) == {busy.pid}
        deadline = time.monotonic() + 30
        while (since := tree_stats([busy.pid], cache=cache)[busy.pid]).cpu_percent <= 0:
            assert time.monotonic() < deadline, "no CPU used since the last look"
            time.sleep(0.05)
        assert since.rss > 0 and since.processes == 1
        assert tree_stats([busy.pid, 0, 999_999_999]).keys() == {busy.pid}  # no such process: left out
    finally:
        busy.kill()
        busy.wait()


def test_the_controllers_cpu_figures_are_read_while_fresh(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.ensure()
    record_cpu(home, {"a": os.getpid(), "gone": 999_999_999}, {}, clock=lambda: 1000.0)
    data = json.loads((home.run / "cpu.json").read_text())
    assert data["time"] == 1000.0 and set(data["agents"]) == {"a"}
    assert recorded_cpu(home, 1005.0) == {"a": (os.getpid(), data["agents"]["a"]["cpu_percent"])}
    assert recorded_cpu(home, 1000.0 + 3600) == {}  # the controller stopped measuring: too old to show
    (home.run / "cpu.json").write_text("{not json")
    assert recorded_cpu(home, 1005.0) == {}


def test_a_held_lock_is_seen_by_others_and_a_replaced_file_is_not_held(tmp_path: Path) -> None:
    from miyabi.controller.locks import hold, lock_holder

    path = tmp_path / "x.lock"
    assert lock_holder(path, lambda: 1) is None  # no file: nobody holds it (and it is not made)
    assert not path.exists()
    lock = hold(path)
    assert lock is not None and lock.still_ours()
    head = "import sys; from pathlib import Path; from miyabi.controller.locks import hold, lock_holder; "
    probe = head + "sys.exit(hold(Path(sys.argv[1])) is None)"
    other = subprocess.run([sys.executable, "-c", probe, str(path)], check=False)
    assert other.returncode == 1  # another process cannot take it
    asks = head + "sys.exit(lock_holder(Path(sys.argv[1]), lambda: 7) or 0)"
    holder = subprocess.run([sys.executable, "-c", asks, str(path)], check=False)
    assert holder.returncode == 7  # and sees that someone holds it
    path.unlink()
    path.touch()  # the home removed and made again: another file at the same path
    assert not lock.still_ours()
    lock.release()
    assert subprocess.run([sys.executable, "-c", probe, str(path)], check=False).returncode == 0


def test_the_running_layout_is_read_back_as_the_controller_recorded_it(tmp_path: Path) -> None:
    from miyabi.config import load
    from miyabi.controller.view import record_running, recorded_running

    f = tmp_path / "l.yaml"
    f.write_text(
        "session: s\nagents:\n  - {name: a, profile: claude, command: claude --model opus, ready_settle: 0.5}\n"
        "  - {name: b, profile: shell, command: cat}\n"
    )
    lay = load(f)
    home = Home(tmp_path / "home")
    home.ensure()
    record_running(home, lay, 4242)
    assert "env" not in (home.run / "running.json").read_text()  # what status shows, nothing more
    got = recorded_running(home, f, 4242)
    assert got is not None
    agents, pools = got
    assert [(a.name, a.command, a.profile) for a in agents] == [(a.name, a.command, a.profile) for a in lay.agents]
    assert pools == {}
    assert recorded_running(home, f, 4243) is None  # another controller's record
    assert recorded_running(home, tmp_path / "other.yaml", 4242) is None  # another layout
    f.write_text(f.read_text() + "  - {name: c, profile: shell, command: cat}\n")
    assert recorded_running(home, f, 4242) is None  # edited since: status loads it anew


def test_cells_are_counted_and_cut_as_the_terminal_shows_them() -> None:
    assert output.cells("kaede") == 5 and output.cells("日本語") == 6 and output.cells("e\u0301") == 1
    assert output.fitted("ab", 4) == "ab  "
    assert output.fitted("日本語のテキスト", 7) == "日本語…"  # six columns of text and the ellipsis
    assert output.fitted("日本語のテキスト", 8) == "日本語… "  # a wide character never split: padded instead
    assert output.fitted("abcdef", 4) == "abc…"


def test_colours_only_on_a_terminal_that_takes_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(output, "is_terminal", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    output.say("up", "green")
    assert capsys.readouterr().out == "\x1b[32mup\x1b[0m\n"
    monkeypatch.setenv("NO_COLOR", "1")  # no-color.org
    output.say("up", "green")
    assert capsys.readouterr().out == "up\n"
