"""Pane logs against a real tmux server: ``pipe-pane`` runs the rotator, the log rotates
at the layout's ``logs.max_bytes``, and ``miyabi logs`` finds lines in the rotated and
the current file, escape sequences removed, also while following."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

from helpers import wait_for, write_layout
from integration.conftest import Cli
from typer.testing import CliRunner, Result

from miyabi.cli import app
from miyabi.supervision.logs import log_files
from miyabi.tmux.panes import list_panes
from miyabi.tmux.runner import Tmux

SCRIPT = r"""
i=0
while [ $i -lt 300 ]; do printf '\033[31mmark %d\033[0m filler \033]0;title\007filler filler\n' $i; i=$((i+1)); done
echo DONE
while read x; do
  j=0
  while [ $j -lt 400 ]; do printf '\033[1m%s\033[0m %d\r\n' "$x" $j; j=$((j+1)); done
done
"""
"""Prints 300 coloured lines (with a window title), then for each line typed 400 more."""


def test_logs_rotate_and_are_searched_across_the_rotated_files(socket: str, tmp_path: Path) -> None:
    home = tmp_path / "it's a #1 home"  # the pipe-pane command quotes the log's path
    script = tmp_path / "printer.sh"
    script.write_text(SCRIPT)
    lay = write_layout(
        tmp_path / "l.yaml", [("sh", "shell", f"sh {script}")], session="logs", logs={"max_bytes": "4K", "keep": 20}
    )

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, [*args, "--socket", socket, "--home", str(home)], catch_exceptions=False)

    r = run("up", str(lay), "-d", "--no-controller")
    assert r.exit_code == 0, r.output
    logs = home / "logs"
    wait_for(lambda: "DONE" in run("logs", "sh", "--grep", "^DONE$").output, what="the agent's output in its log")
    files = log_files(logs, "sh")
    assert len(files) >= 3 and files[-1] == logs / "sh.log"
    assert all(p.stat().st_size <= 4096 and stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700

    r = run("logs", "sh", "--grep", r"^mark \d+ ")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [f"mark {i} filler filler filler" for i in range(300)]
    assert "\x1b" not in r.output and "title" not in r.output

    r = run("logs", "sh", "--grep", r"^(mark \d+|DONE)", "--json")
    assert r.exit_code == 0, r.output
    found = json.loads(r.output)
    assert [x["text"] for x in found][-1] == "DONE"
    assert set(found[0]) == {"agent", "file", "line", "text"} and {x["agent"] for x in found} == {"sh"}
    assert (
        "sh.log" in {x["file"] for x in found} and len({x["file"] for x in found}) >= 3
    )  # rotated files and the current one
    assert all(x["line"] >= 1 for x in found)

    r = run("logs", "sh", "--grep", "(mark")
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "is not a regular expression" in r.output


def test_logs_follow_prints_new_lines_through_rotations(cli: Cli, socket: str, home: Path, tmp_path: Path) -> None:
    script = tmp_path / "printer.sh"
    script.write_text(SCRIPT)
    lay = write_layout(
        tmp_path / "l.yaml", [("sh", "shell", f"sh {script}")], session="follow", logs={"max_bytes": "2K", "keep": 50}
    )
    assert cli("up", str(lay), "-d", "--no-controller").exit_code == 0
    wait_for(lambda: "DONE" in cli("logs", "sh", "--grep", "^DONE$").output, what="the first output")
    env = {k: v for k, v in os.environ.items() if k not in ("MIYABI_HOME", "MIYABI_AGENT", "TMUX")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "miyabi", "logs", "sh", "--follow", "--grep", r"^burst \d+$", "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    got: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        got.extend(proc.stdout)  # a line at a time, as the follower prints it

    threading.Thread(target=read, daemon=True).start()
    try:
        before = len(log_files(home / "logs", "sh"))
        pane = next(p.pane_id for p in list_panes(Tmux(socket), "follow") if p.agent == "sh")
        Tmux(socket).run_chain([["send-keys", "-t", pane, "-l", "burst"], ["send-keys", "-t", pane, "Enter"]])
        wait_for(lambda: len(got) >= 400, timeout=30, what="400 lines followed")
        assert [line.rstrip("\n") for line in got] == [f"burst {j}" for j in range(400)]
        assert len(log_files(home / "logs", "sh")) > before  # the burst rotated the log while it was followed
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 130


RESTARTER = r"""
n=$(cat "$1" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$1"
if [ "$n" = 1 ]; then printf 'first> '; exit 3; fi
printf 'second process ready\n'
exec sleep 600
"""
"""Its first run leaves an unfinished prompt and dies; the next one prints a line."""


def test_a_restarted_process_starts_on_a_line_of_its_own(cli: Cli, socket: str, home: Path, tmp_path: Path) -> None:
    script = tmp_path / "restarter.sh"
    script.write_text(RESTARTER)
    lay = write_layout(tmp_path / "l.yaml", [("sh", "shell", f"sh {script} {tmp_path / 'runs'}")], session="restart")
    assert cli("up", str(lay), "-d", "--no-controller").exit_code == 0
    tmux = Tmux(socket)
    wait_for(lambda: all(p.dead for p in list_panes(tmux, "restart") if p.agent == "sh"), what="the first run to die")
    wait_for(lambda: b"first> " in home.joinpath("logs", "sh.log").read_bytes(), what="its prompt in the log")
    r = cli("up", str(lay), "-d", "--no-controller")  # respawns the dead agent in its pane
    assert r.exit_code == 0 and "respawned sh" in r.output, r.output
    wait_for(lambda: "second process ready" in cli("logs", "sh").output, what="the new process's line")
    assert cli("logs", "sh").output == "first>\nsecond process ready\n"
    assert [x["text"] for x in json.loads(cli("logs", "sh", "--json").output)] == ["first>", "second process ready"]
    # the log holds what both processes printed, each byte once, after a mark where each began
    from miyabi.tmux.logpipe import START

    assert b"".join(p.read_bytes() for p in log_files(home / "logs", "sh")) == (
        START + b"first> " + START + b"second process ready\r\n"
    )


def test_a_process_the_watchdog_restarts_starts_on_a_line_of_its_own(cli: Cli, home: Path, tmp_path: Path) -> None:
    """The controller respawns the dead agent and opens its log's new pipe in one go (a
    chain on its control channel), so the new process's first line, printed at once,
    comes after a restart mark, not joined to the dead process's unfinished prompt."""
    from miyabi.tmux.logpipe import START

    script = tmp_path / "restarter.sh"
    script.write_text(RESTARTER)
    lay = write_layout(
        tmp_path / "l.yaml",
        [("sh", "shell", f"sh {script} {tmp_path / 'runs'}")],
        session="watched",
        watchdog={"min_uptime": 0, "max_restarts": 1000, "restart_window": 60},
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    wait_for(lambda: "second process ready" in cli("logs", "sh").output, what="the restarted process's line")
    assert cli("logs", "sh").output == "first>\nsecond process ready\n"
    assert b"".join(p.read_bytes() for p in log_files(home / "logs", "sh")) == (
        START + b"first> " + START + b"second process ready\r\n"
    )
