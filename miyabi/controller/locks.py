"""A home's locks, the controller's and its keep-alive's under ``run/``: taking one,
and who holds one.

The lock decides whether a process runs, never a pidfile alone: a pidfile left by a
killed process may name a pid that was reused since. Each is an exclusive ``flock(2)``
on its file (:func:`miyabi.files.hold`), held for the process's life: the kernel lets
go of it when the process ends, however it ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from miyabi.files import HeldLock, hold

__all__ = ["LOCKFILE", "PIDFILE", "HeldLock", "controller_pid", "hold", "lock_holder", "read_pidfile"]

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
    """``pid()`` while someone holds ``lockfile``, else None (also when it does not exist).

    The file is opened read-only, never created, and a lock taken to probe is let go
    at once."""
    import fcntl

    try:
        fd = os.open(lockfile, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return pid()
    except OSError:
        return None
    finally:
        os.close(fd)  # closing lets go of a lock this probe took
    return None


def controller_pid(run: Path) -> int | None:
    """The pid of the controller of the home whose ``run/`` this is, or None."""
    return lock_holder(run / LOCKFILE, lambda: read_pidfile(run / PIDFILE))
