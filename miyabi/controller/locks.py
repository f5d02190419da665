"""Who holds a home's locks: the controller's and its keep-alive's, under ``run/``.

The lock decides whether a process runs, never a pidfile alone: a pidfile left by a
killed process may name a pid that was reused since.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from miyabi import defaults

PIDFILE = "controller.pid"
"""File under ``run/`` holding the running controller's pid."""

LOCKFILE = "controller.lock"
"""File under ``run/`` the running controller holds a lock on."""


def read_pidfile(path: Path) -> int | None:
    """The pid in ``path``, if the file holds one."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def lock_holder(lockfile: Path, pid: Callable[[], int | None]) -> int | None:
    """``pid()`` while someone holds ``lockfile``, else None (also when it does not exist)."""
    from filelock import FileLock, Timeout

    if not lockfile.exists():
        return None
    probe = FileLock(str(lockfile), timeout=0, mode=defaults.FILE_MODE)
    try:
        probe.acquire()
    except Timeout:
        return pid()
    probe.release()
    return None


def controller_pid(run: Path) -> int | None:
    """The pid of the controller of the home whose ``run/`` this is, or None."""
    return lock_holder(run / LOCKFILE, lambda: read_pidfile(run / PIDFILE))
