"""A home's locks, the controller's and its keep-alive's under ``run/``: taking one,
and who holds one.

The lock decides whether a process runs, never a pidfile alone: a pidfile left by a
killed process may name a pid that was reused since. Each is an exclusive ``flock(2)``
on its file, held for the process's life: the kernel lets go of it when the process
ends, however it ends. These few lines stand in for filelock (which takes the same
lock) because its import costs the controller's start, and ``miyabi status``, more
than everything else they do before they hold or ask about the lock.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

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


class HeldLock:
    """An exclusive lock this process holds on a file (see :func:`hold`).

    Attributes:
        path: the lock file.
        identity: (device, inode) of the file locked: a file removed and made again
            at ``path`` is another one, which this lock does not hold.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)

    def still_ours(self) -> bool:
        """Whether ``path`` is still the file this lock holds (not removed or replaced)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.identity

    def release(self) -> None:
        """Let go of the lock (closing the file does). The file stays, so that the next
        holder locks the same one."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def hold(path: Path) -> HeldLock | None:
    """Take the exclusive lock on ``path`` at once (the file is created 0600 when
    missing); None when another process holds it.

    Raises:
        OSError: the file cannot be opened (its directory is gone).
    """
    import fcntl

    from miyabi import defaults

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, defaults.FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        raise
    return HeldLock(path, fd)


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
