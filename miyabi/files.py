"""Private files and directories under the miyabi home, written so that a crash never
leaves half a file.

Everything miyabi keeps (messages, pane logs, events, journals, the task database)
may hold what agents were told or printed: directories are created 0700 and files
0600 (``defaults.DIR_MODE`` / ``FILE_MODE``), whatever the umask, and an existing one
with a looser mode is tightened when miyabi opens it.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from miyabi import defaults


def private_dir(path: Path, parents: bool = True) -> Path:
    """Create ``path`` (and, with ``parents``, each missing parent) with mode 0700;
    tighten ``path`` itself if it exists with another mode. Returns ``path``.

    Raises:
        FileNotFoundError: ``parents`` is False and the parent is missing.
        OSError: a directory cannot be created.
    """
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p or not parents:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=defaults.DIR_MODE)
        except FileExistsError:
            pass
    if stat.S_IMODE(path.stat().st_mode) != defaults.DIR_MODE:
        path.chmod(defaults.DIR_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` with ``O_CREAT`` and mode 0600; a file found with another mode is
    tightened. Returns the descriptor."""
    fd = os.open(path, flags | os.O_CREAT, defaults.FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != defaults.FILE_MODE:
            os.fchmod(fd, defaults.FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if it is missing, or tighten its mode."""
    os.close(open_private(path, os.O_WRONLY | os.O_APPEND))
    return path


def _missing_dir(path: Path) -> None:
    """Create ``path`` (one level, mode 0700) after a write found it missing. Its parent
    must exist: a home that was removed is not brought back by a late write. An
    existing directory is never touched (it may be the user's, such as the directory
    of a ``--transcript`` file)."""
    try:
        path.mkdir(mode=defaults.DIR_MODE)
    except FileExistsError:
        pass


def write_atomic(path: Path, data: str | bytes, *, fsync: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically: written to a temporary file beside it
    (mode 0600), then renamed over it, so a reader or a crash sees the old file or the
    new one, never half of either. With ``fsync`` the data reaches the disk before the
    rename. A missing directory is created (0700), but not its parents.

    Raises:
        OSError: the file cannot be written (FileNotFoundError: its directory's parent
            is gone).
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(tmp, flags, defaults.FILE_MODE)
    except FileNotFoundError:
        _missing_dir(path.parent)
        fd = os.open(tmp, flags, defaults.FILE_MODE)
    try:
        os.write(fd, raw)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def append_line(path: Path, line: str) -> None:
    """Append ``line`` (a newline is added) with one ``write`` on an ``O_APPEND``
    descriptor, so that concurrent writers never interleave within a line. The file
    is created 0600 (an existing one is tightened); a missing directory is created
    0700, but not its parents, as for :func:`write_atomic`."""
    flags = os.O_WRONLY | os.O_APPEND
    try:
        fd = open_private(path, flags)
    except FileNotFoundError:
        _missing_dir(path.parent)
        fd = open_private(path, flags)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def identity(path: Path) -> list[int] | None:
    """What tells a file from an edited or replaced one: device, inode, size, and
    modification and change times in nanoseconds; None when there is no such file."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


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

    ``flock(2)``, the call filelock makes on Unix, in a few lines: importing filelock
    cost the controller's start, and ``miyabi status``, more than everything else
    they do before they hold or ask about a lock.

    Raises:
        OSError: the file cannot be opened (its directory is gone).
    """
    import fcntl

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


def hold_waiting(path: Path, timeout: float, poll: float = 0.02) -> HeldLock | None:
    """:func:`hold`, waiting up to ``timeout`` seconds for another holder to let go;
    None when it did not.

    Raises:
        OSError: the file cannot be opened (its directory is gone).
    """
    import time

    deadline = time.monotonic() + timeout
    while (lock := hold(path)) is None and time.monotonic() < deadline:
        time.sleep(poll)
    return lock
