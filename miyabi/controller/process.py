"""The controller as a process: one per home (a lock under ``run/``), started in the
background by ``miyabi up`` and stopped by ``miyabi down``.

The lock decides whether a controller runs, never the pidfile alone: a pidfile left
by a killed controller may name a pid that was reused since.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from miyabi import defaults
from miyabi.errors import MiyabiError
from miyabi.files import open_private
from miyabi.home import Home

PIDFILE = "controller.pid"
"""File under ``run/`` holding the running controller's pid."""

LOCKFILE = "controller.lock"
"""File under ``run/`` the running controller holds a lock on."""

LOGFILE = "controller.log"
"""The controller's own log, under ``logs/``."""


class ControllerRunning(MiyabiError):
    """Another controller already runs for this home."""


def read_pid(home: Home) -> int | None:
    """The pid in ``run/controller.pid``, if the file holds one."""
    try:
        return int((home.run / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(home: Home) -> int | None:
    """The pid of this home's running controller, or None."""
    from filelock import FileLock, Timeout

    lockfile = home.run / LOCKFILE
    if not lockfile.exists():
        return None
    probe = FileLock(str(lockfile), timeout=0, mode=defaults.FILE_MODE)
    try:
        probe.acquire()
    except Timeout:
        return read_pid(home)
    probe.release()
    return None


def start_background(home: Home, socket: str, layout_path: Path, wait: float = defaults.CONTROLLER_START_WAIT) -> tuple[int, bool]:
    """Start a controller in the background unless one runs; return (pid, started).

    Raises:
        MiyabiError: it did not come up within ``wait`` seconds (see logs/controller.log).
    """
    pid = running_pid(home)
    if pid is not None:
        return pid, False
    home.ensure()
    logfd = open_private(home.logs / LOGFILE, os.O_WRONLY | os.O_APPEND)
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("MIYABI_AGENT", "TMUX", "TMUX_PANE")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "miyabi", "controller", "--home", str(home.root), "--socket", socket, "--layout", str(layout_path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logfd,
            stderr=logfd,
            start_new_session=True,
            cwd=str(home.root),
        )
    finally:
        os.close(logfd)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if read_pid(home) == proc.pid:
            return proc.pid, True
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise MiyabiError(f"the controller did not start (exit {proc.poll()}); see {home.logs / LOGFILE}")


def stop_background(home: Home, wait: float = defaults.CONTROLLER_STOP_WAIT) -> int | None:
    """Stop this home's controller (SIGTERM, then SIGKILL after ``wait`` s); return its pid.

    It counts as stopped once it exited, zombie or not: an exited process holds no lock,
    and reaping an orphan is its new parent's business (some init processes take
    seconds to)."""
    import signal

    from miyabi.supervision.processes import alive

    pid = running_pid(home)
    if pid is None:
        return None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return pid
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:  # reap it if it is our own child (started by this process)
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return pid
            except ChildProcessError:
                pass
            if not alive(pid):
                return pid
            time.sleep(0.01)
    return pid
