"""What the dashboard's tests share: an ensemble on a private tmux server (a worker, a
`cat` shell and an agent that asks for permission) and a real `miyabi web` process
serving it on a free port of 127.0.0.1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers import wait_for, write_layout

Cli = Callable[..., "object"]

ASKER = Path(__file__).resolve().parents[1] / "asker_agent.py"


def layout(path: Path, answers: Path) -> Path:
    """The dashboard's ensemble: a worker, a shell, and an agent that asks permission
    (tests/asker_agent.py, which writes its answers to ``answers``)."""
    asker = {
        "extends": "shell",
        "command": f"{sys.executable} -u {ASKER}",
        "ready_pattern": "^>",
        "approval_pattern": r"Allow running the tool\? \(y/n\)",
        "approve_keys": ["y", "Enter"],
        "deny_keys": ["n", "Enter"],
    }
    return write_layout(
        path,
        [
            {"name": "w1", "profile": "worker", "submit_delay": 0.03, "ready_settle": 0.03},
            ("sh", "shell", "cat"),
            {"name": "ask", "profile": "asker", "env": {"ANSWERS": str(answers)}},
        ],
        session="web",
        profiles={"asker": asker},
    )


@dataclass
class Web:
    """A running dashboard: its base URL, tokens, process and the ensemble's home."""

    base: str
    token: str
    view_token: str
    proc: subprocess.Popen[str]
    home: Path
    socket: str
    answers: Path

    def client(self, token: str | None = "full", **kw: object) -> httpx.Client:
        headers = {}
        if token is not None:
            headers["Authorization"] = (
                f"Bearer {self.token if token == 'full' else self.view_token if token == 'view' else token}"
            )
        return httpx.Client(base_url=self.base, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


def start_web(home: Path, socket: str, *extra: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Run `miyabi web --port 0 …` (its output to a file: a pipe nobody reads would
    block it once full) and read the URLs it prints."""
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    out = Path(tempfile.mkstemp(prefix="miyabi-web-", suffix=".log", dir=home.parent)[1])
    with out.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "miyabi", "web", "--port", "0", "--home", str(home), "--socket", socket, *extra],
            stdout=f,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )

    def said() -> dict[str, str] | None:
        text = out.read_text()
        if "API:" not in text:
            assert proc.poll() is None, f"miyabi web exited {proc.returncode}: {text}"
            return None
        found = {"open": m.group(1)} if (m := re.search(r"open: (\S+)", text)) else {}
        if m := re.search(r"read-only \(to share\): (\S+)", text):
            found["view"] = m.group(1)
        return found

    return proc, wait_for(said, timeout=60, what="miyabi web listening")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve(cli: Cli, home: Path, socket: str, layout: Path, answers: Path) -> Web:
    """`miyabi up LAYOUT -d`, then a real `miyabi web` for it (stop its ``proc`` after)."""
    r = cli("up", str(layout), "-d")
    assert getattr(r, "exit_code", 1) == 0, getattr(r, "output", r)
    proc, said = start_web(home, socket)
    base, _, token = said["open"].partition("/?token=")
    view = said["view"].partition("/?token=")[2]
    return Web(base, token, view, proc, home, socket, answers)


@contextmanager
def browse(w: Web) -> Iterator[httpx.Client]:
    """A client as a browser without script is: it opens the printed URL (the server
    sets the token's cookie) and asks for HTML."""
    with httpx.Client(base_url=w.base, timeout=30, headers={"Accept": "text/html"}) as c:
        r = c.get(f"/?token={w.token}", follow_redirects=True)
        assert r.status_code == 200 and "miyabi_token" in c.cookies, r.text
        yield c


@pytest.fixture
def web(cli: Cli, home: Path, socket: str, tmp_path: Path) -> Iterator[Web]:
    answers = tmp_path / "answers.txt"
    lay = layout(tmp_path / "web.yaml", answers)
    w = serve(cli, home, socket, lay, answers)
    try:
        with w.client() as c:
            wait_for(
                lambda: all(a["state"] == "ready" for a in c.get("/api/v1/agents").json()["agents"]),
                timeout=60,
                what="every agent ready",
            )
        yield w
    finally:
        stop(w.proc)
