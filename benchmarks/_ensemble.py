"""Ending the ensembles the benchmarks start: ``miyabi down``, then a check that nothing
of the home is left running (keep-alive, controller, tmux server, agents, log pipes).

A benchmark that ends with ``tmux kill-server`` alone leaves the controller, whose
keep-alive starts it again, to build the session again: each one calls :func:`down`
in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil

MIYABI = str(Path(sys.executable).parent / "miyabi")
"""The ``miyabi`` command of this interpreter's environment."""

LEFT_WAIT = 15.0
"""Seconds :func:`down` waits for the home's processes to end before it kills them."""


def processes_of(home: Path, socket: str) -> list[psutil.Process]:
    """The running processes that belong to ``home`` or to the tmux server on ``socket``:
    a command line naming the home or the socket (keep-alive, controller, tmux server and
    clients, log pipes), or ``MIYABI_HOME`` set to the home (agents). Zombies and this
    process are left out."""
    root = str(home)
    out = []
    for p in psutil.process_iter(["cmdline", "environ", "status"]):
        if p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        words = p.info["cmdline"] or []
        line = " ".join(words)
        if (
            any(w == root or w.startswith(root + "/") for w in words)
            or f"-L {socket} " in line + " "
            or f"--socket {socket} " in line + " "
            or (p.info["environ"] or {}).get("MIYABI_HOME") == root
        ):
            out.append(p)
    return out


def describe(procs: list[psutil.Process]) -> str:
    """``pid name, pid name, …`` of ``procs`` (for a one-line report)."""
    names = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            names.append(f"{p.pid} {p.name()}")
    return ", ".join(names)


def kill_all(home: Path, socket: str, wait: float = 30.0) -> None:
    """Every process of the home and its tmux server killed at once (SIGKILL), until none
    is left (a machine dying).

    Raises:
        RuntimeError: some were still running after ``wait`` seconds.
    """
    deadline = time.monotonic() + wait
    while procs := processes_of(home, socket):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of {home} did not all end: {describe(procs)}")
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        time.sleep(0.05)


def down(home: Path, socket: str, env: Mapping[str, str] | None = None) -> None:
    """``miyabi down`` for the home, then wait until nothing of it runs. What is still
    running after :data:`LEFT_WAIT` seconds is killed, and the benchmark fails naming it.

    Raises:
        SystemExit: ``miyabi down`` left processes running.
    """
    done = subprocess.run(
        [MIYABI, "down", "--home", str(home), "--socket", socket],
        capture_output=True,
        text=True,
        check=False,
        env=dict(env) if env is not None else None,
    )
    deadline = time.monotonic() + LEFT_WAIT
    while (left := processes_of(home, socket)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        said = describe(left)
        kill_all(home, socket)
        raise SystemExit(
            f"{Path(sys.argv[0]).name}: `miyabi down` (exit {done.returncode}: {done.stderr.strip() or 'no message'}) "
            f"left these processes of {home} running: {said}; they were killed"
        )


def up(layout: Path, socket: str, home: Path, env: Mapping[str, str]) -> None:
    """``miyabi up LAYOUT -d`` for ``home`` on tmux socket ``socket``, its controller
    started, in the environment ``env``.

    Raises:
        subprocess.CalledProcessError: it failed.
    """
    subprocess.run(
        [sys.executable, "-m", "miyabi", "up", str(layout), "-d", "--socket", socket, "--home", str(home)],
        check=True,
        capture_output=True,
        env=dict(env),
    )


@contextlib.contextmanager
def brought_down(home: Path, socket: str, env: Mapping[str, str] | None = None) -> Iterator[None]:
    """Run the body, then :func:`down` the home's ensemble, whatever happened."""
    try:
        yield
    finally:
        down(home, socket, env)
