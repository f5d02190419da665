"""Integration fixtures: a real tmux server on a private socket per test (libtmux's
``server`` fixture), a fresh miyabi home, and the CLI driven through Typer's runner."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from helpers import wait_for
from libtmux.server import Server
from redisserver import RedisServer
from typer.testing import CliRunner, Result

from miyabi.cli import app
from miyabi.controller import stop_background
from miyabi.home import Home
from miyabi.tmux.panes import Pane, list_panes
from miyabi.tmux.runner import Tmux


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration/ ``integration`` (a ``pytestmark`` in a
    conftest marks nothing: pytest reads it from test modules only)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A forgotten --socket must never reach the user's server or miyabi's default one.
    monkeypatch.setenv("MIYABI_SOCKET", f"miyabi_guard_{uuid.uuid4().hex[:8]}")
    monkeypatch.delenv("MIYABI_HOME", raising=False)
    monkeypatch.delenv("MIYABI_AGENT", raising=False)
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _no_agent_left(tmp_path: Path) -> Iterator[None]:
    """After each test, end the agents' processes its ensembles left running: a killed
    tmux server closes the panes, but not what ignores SIGHUP or sits in a session of
    its own (Gemini CLI's relaunched node process, ~200 MB each, measured)."""
    yield
    root = f"\0MIYABI_HOME={tmp_path}/".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = b"\0" + f.read()
        except OSError:
            continue
        if root in env and b"\0MIYABI_AGENT=" in env:
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)


@pytest.fixture
def socket(server: Server) -> str:
    assert server.socket_name and server.socket_name.startswith("libtmux_test")
    return server.socket_name


@pytest.fixture
def home(tmp_path: Path, socket: str) -> Iterator[Path]:
    """A fresh miyabi home. Made after the test's tmux server and ended before it: any
    controller started for it is stopped first (one still running when the server is
    killed builds the session again, on a new server that outlives the test), then every
    process left of it (:func:`kill_all`: agents that ignore the server's SIGHUP, as
    Gemini CLI does, and children that left their session)."""
    h = tmp_path / "home"
    h.mkdir()
    yield h
    stop_background(Home(h))
    kill_all(h, socket)


def kill_all(home: Path, socket: str) -> None:
    """SIGKILL every process of a home and its tmux server: those naming the home or the
    socket on their command line, or with the home as MIYABI_HOME (agents), until none
    is left (as when the machine dies)."""

    def mine() -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter(["cmdline", "environ"]):
            line = " ".join(p.info["cmdline"] or [])
            env = p.info["environ"] or {}
            if p.pid != os.getpid() and (
                f"-L {socket}" in line
                or f"--socket {socket}" in line
                or str(home) in line
                or env.get("MIYABI_HOME") == str(home)
            ):
                out.append(p)
        return out

    def gone() -> bool:
        procs = mine()
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        return not procs

    wait_for(gone, timeout=30, what=f"every process of {home} gone")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on 127.0.0.1 at a free port (the bus tests), killed afterwards."""
    r = RedisServer(tmp_path / "redis")
    r.start()
    yield r
    r.stop()


@pytest.fixture
def tmux(socket: str) -> Tmux:
    return Tmux(socket)


Cli = Callable[..., Result]


@pytest.fixture
def cli(socket: str, home: Path) -> Cli:
    """Run ``miyabi ARGS --socket S --home H`` in-process; returns the click Result."""

    def run(*args: str, with_target: bool = True) -> Result:
        extra = ["--socket", socket, "--home", str(home)] if with_target else []
        return CliRunner().invoke(app, [*args, *extra], catch_exceptions=False)

    return run


@pytest.fixture
def panes(tmux: Tmux) -> Callable[[str], dict[str, Pane]]:
    def get(session: str) -> dict[str, Pane]:
        return {p.agent: p for p in list_panes(tmux, session) if p.agent}

    return get


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def capture(tmux: Tmux, pane_id: str) -> str:
    return "\n".join(tmux.run("capture-pane", "-p", "-t", pane_id, check=False))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


from integration.webkit import web  # noqa: F401 - the dashboard's fixture, for test_web*.py
