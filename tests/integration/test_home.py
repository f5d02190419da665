"""What miyabi keeps in its home is private: directories 0700, files 0600, whatever the
umask, including what an older version left with looser modes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from helpers import wait_for, write_layout
from integration.conftest import Cli
from integration.test_delivery import send, transcript

from miyabi.events import read_events
from miyabi.work.store import Store

KAEDE = {
    "name": "kaede",
    "profile": "worker",
    "command": "miyabi worker --hold-tasks",
    "submit_delay": 0.05,
    "ready_settle": 0.05,
    "intro": True,
}


def layout(path: Path) -> Path:
    return write_layout(
        path,
        [KAEDE, ("cat", "shell", "cat")],
        session="private",
        routes=[{"default": True, "agent": "kaede"}],
        watchdog={"min_uptime": 0},
    )


def loose(home: Path) -> None:
    """What an older miyabi left: a 0755 inbox, a 0644 pane log."""
    (home / "queue" / "kaede" / "new").mkdir(parents=True)
    for d in (home / "queue", home / "queue" / "kaede", home / "queue" / "kaede" / "new"):
        d.chmod(0o755)
    (home / "logs").mkdir()
    (home / "logs" / "kaede.log").write_text("old output\n")
    (home / "logs" / "kaede.log").chmod(0o644)


def test_everything_in_the_home_is_private(cli: Cli, home: Path, tmp_path: Path, panes) -> None:
    loose(home)
    lay = layout(tmp_path / "l.yaml")
    assert cli("up", str(lay), "-d").exit_code == 0
    send(home, "kaede", "hello")
    wait_for(lambda: "hello" in transcript(home, "kaede"), what="a delivery")
    assert cli("task", "add", "a task").exit_code == 0
    wait_for(lambda: Store.of_home(home).get(1).state == "in_progress", what="the task delivered")
    assert cli("task", "done", "1").exit_code == 0
    victim = wait_for(lambda: panes("private").get("cat"), what="cat's pane")
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: any(e["event"] == "restarted" for e in read_events(home)), what="the restart")
    assert cli("restart", "cat").exit_code == 0
    assert cli("down").exit_code == 0

    kept = [home / d for d in ("queue", "logs", "run", "state")]
    seen = {"dir": 0, "file": 0}
    loose_ones = []
    for top in kept:
        assert top.is_dir(), top
        for p in [top, *top.rglob("*")]:
            mode = stat.S_IMODE(p.lstat().st_mode)
            kind = "dir" if p.is_dir() else "file"
            seen[kind] += 1
            if mode != (0o700 if kind == "dir" else 0o600):
                loose_ones.append(f"{p.relative_to(home)} {oct(mode)}")
    assert loose_ones == []
    # what it checked: inboxes, logs, crash evidence, journals, the database
    names = {p.name for top in kept for p in top.rglob("*")}
    assert {"kaede.log", "events.jsonl", "controller.log", "watchdog.log", "up.json", "miyabi.db", "crashes"} <= names
    assert seen["file"] >= 15


def _miyabi(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the real `miyabi` command as a user would, from ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "miyabi", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MIYABI_HOME", "MIYABI_SOCKET", "MIYABI_AGENT")}
    return {**env, **extra}


def test_a_command_run_outside_the_home_reaches_the_ensemble_its_socket_names(
    cli: Cli, home: Path, tmp_path: Path, socket: str
) -> None:
    lay = layout(tmp_path / "l.yaml")
    assert cli("up", str(lay), "-d").exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _env(MIYABI_SOCKET=socket)
    sent = _miyabi("send", "kaede", "from elsewhere", cwd=elsewhere, env=env)
    assert sent.returncode == 0, sent.stderr
    added = _miyabi("task", "add", "a task from elsewhere", cwd=elsewhere, env=env)
    assert added.returncode == 0, added.stderr
    wait_for(lambda: "from elsewhere" in transcript(home, "kaede"), what="the message delivered")
    wait_for(
        lambda: [t.title for t in Store.of_home(home).query(None, None)] == ["a task from elsewhere"], what="the task"
    )
    listed = _miyabi("task", "ls", "--json", cwd=elsewhere, env=env)
    assert listed.returncode == 0 and "a task from elsewhere" in listed.stdout
    assert sorted(p.name for p in elsewhere.iterdir()) == [], "nothing is written where the command ran"


def test_a_command_with_no_ensemble_to_reach_fails_and_writes_nothing(tmp_path: Path, socket: str) -> None:
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    env = _env(MIYABI_SOCKET=socket)  # a socket no server answers on yet
    for args in (["send", "sakura", "hi"], ["task", "add", "x"], ["task", "ls"], ["inbox", "kaede"]):
        r = _miyabi(*args, cwd=nowhere, env=env)
        assert r.returncode == 4, (args, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and str(nowhere) in r.stderr and socket in r.stderr, r.stderr
        assert r.stdout == ""
    never_up = tmp_path / "never-up"
    never_up.mkdir()
    r = _miyabi("send", "sakura", "hi", "--home", str(never_up), cwd=nowhere, env=env)
    assert r.returncode == 4 and str(never_up) in r.stderr and "miyabi up" in r.stderr, r.stderr
    r = _miyabi("task", "add", "x", cwd=nowhere, env=_env(MIYABI_HOME=str(never_up)))
    assert r.returncode == 4 and "MIYABI_HOME" in r.stderr, r.stderr
    assert list(nowhere.iterdir()) == [] and list(never_up.iterdir()) == []
