"""Shared test helpers: polling with a deadline (never a fixed sleep before an assert)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def brought_up(home: Path, agents: list[str] | None = None, **state: Any) -> Path:
    """Make ``home`` look like a home ``miyabi up`` ran in (its ``run/up.json``), for
    tests of commands that need one but no running ensemble; returns ``home``."""
    from miyabi.home import Home

    Home(home).ensure()
    Home(home).save_state(agents=agents or ["kaede"], **state)
    return home


def wait_for(fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> T:
    """Call ``fn`` until it returns a truthy value; return that value.

    Raises:
        AssertionError: ``fn`` stayed falsy for ``timeout`` seconds (the message names ``what``
        and the last value).
    """
    deadline = time.monotonic() + timeout
    last: T = fn()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)
        last = fn()
    return last


def on_terminal(argv: list[str], columns: int = 120, env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run ``argv`` with its output on a pseudo-terminal ``columns`` wide, as a user
    runs a command in a terminal; (seconds from start to exit, exit status, output).
    ``COLUMNS`` and ``LINES`` are left out of the environment: the terminal's size
    tells."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    base = os.environ if env is None else env
    env = {k: v for k, v in base.items() if k not in ("COLUMNS", "LINES")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    code = proc.wait()
    seconds = time.perf_counter() - t0
    os.close(master)
    return seconds, code, b"".join(chunks).decode(errors="replace")
