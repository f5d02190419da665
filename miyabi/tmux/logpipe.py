"""What tmux's ``pipe-pane`` runs for each agent's pane: append the pane's output to the
agent's pane log and rotate the log at a size limit.

    python -I -S logpipe.py [--max-bytes N] [--keep K] LOG

It reads its standard input (the pane's output, which tmux writes into a pipe) and
appends each read at once with one ``write(2)`` per piece, unbuffered, so that the log's
size and modification time follow the pane within a read (``miyabi status`` shows the
log's age as the agent's last output). The first piece is preceded by :data:`START`,
which marks where the output of the process it logs begins. When appending would take LOG past ``N`` bytes,
it writes what fits up to the last newline that fits (a whole line, unless a single
line is longer than ``N``), then renames ``LOG.K-1`` → ``LOG.K`` … ``LOG`` → ``LOG.1``
(the oldest beyond ``K`` is deleted; ``K`` 0 keeps none) and goes on in a fresh LOG.
``N`` 0 never rotates. No byte it read is lost or written twice: every piece goes to
exactly one file, and a rename never moves bytes; the only bytes it adds are one
:data:`START`. It exits 0 when its input closes (the
pane died, or ``pipe-pane`` was run again), and on SIGTERM, SIGHUP or SIGINT after
writing what was already waiting in the pipe; 1 when LOG cannot be written; 2 on bad
arguments.

Several writers may share a LOG for a moment (a respawned pane gets a new pipe while
the old one drains): each write goes to whatever file is LOG at that moment (a writer
whose file was renamed under it opens LOG again), and a rotation holds an ``flock`` on
the file it renames and first checks that nobody renamed it already, so that two
writers never rotate the same file twice.

Like ``miyabi hook`` (``miyabi/cli/hook.py``) it imports only the standard library and
none of miyabi, so tmux starts it with a bare, isolated interpreter (``-I -S``); for
that reason it creates LOG and its directory itself, with the modes of
:mod:`miyabi.files` (0600 and 0700; a test holds them equal to ``miyabi.defaults``).
"""

from __future__ import annotations

import fcntl
import os
import select
import stat
import sys

try:  # the C module the signal module wraps: importing that wrapper (its enums) doubled this start-up's cost
    import _signal as signal  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - an interpreter without it
    import signal

START = b"\x1b^miyabi: a new process\x1b\\"
"""Written right before the first bytes each run of this program appends: ``pipe-pane``
starts one for each process a pane runs (a new pane, a respawn), so it marks where a
process's output begins. It is a privacy message (ECMA-48 PM: ``ESC ^`` … ``ESC \\``),
which terminals and tmux ignore, so a log read with ``cat`` looks as the pane did;
``miyabi logs`` reads it as the end of an unfinished line (the dead process's prompt),
so the new process's first line starts on a line of its own."""

CHUNK = 65536
"""Most bytes read from the pipe at a time (a pipe holds 64 KiB on Linux)."""

FILE_MODE = 0o600
"""Mode of LOG and its rotated files (``miyabi.defaults.FILE_MODE``)."""

DIR_MODE = 0o700
"""Mode of LOG's directory when this program has to create it (``miyabi.defaults.DIR_MODE``)."""

MAX_BYTES = 10 * 1024 * 1024
"""``N`` when ``--max-bytes`` is not given: the layout's default (``miyabi.defaults.LOG_MAX_BYTES``)."""

KEEP = 5
"""``K`` when ``--keep`` is not given: the layout's default (``miyabi.defaults.LOG_KEEP``)."""

USAGE = "usage: logpipe.py [--max-bytes N] [--keep K] LOG"


class RotatingLog:
    """An append-only file that rotates at a size limit (see the module's docstring).

    Args:
        path: the log (``logs/<agent>.log``); its rotated files are ``path.1`` (newest)
            to ``path.<keep>`` (oldest).
        max_bytes: size in bytes a file is kept under (0: no limit).
        keep: rotated files kept (0: none).

    Raises:
        OSError: LOG cannot be opened (from the constructor, and from :meth:`write`).
    """

    def __init__(self, path: str, max_bytes: int, keep: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.fd = self._open()

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, FILE_MODE)
        except FileNotFoundError:  # the logs directory went away: make it again (one level only)
            try:
                os.mkdir(os.path.dirname(self.path) or ".", DIR_MODE)
            except FileExistsError:
                pass
            fd = os.open(self.path, flags, FILE_MODE)
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
        return fd

    def _is_current(self) -> bool:
        """Whether the open file is still the one at ``path`` (not renamed or removed)."""
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self.fd)
        return (at_path.st_dev, at_path.st_ino) == (mine.st_dev, mine.st_ino)

    def _reopen(self) -> None:
        os.close(self.fd)
        self.fd = -1
        self.fd = self._open()

    def write(self, data: bytes) -> None:
        """Append ``data`` whole, rotating as often as the limit requires.

        Raises:
            OSError: a write, a rename or an open failed (a full disk, a removed home).
        """
        view = memoryview(data)
        while view:
            if not self._is_current():  # another writer rotated it, or someone removed it
                self._reopen()
            size = os.fstat(self.fd).st_size
            if self.max_bytes <= 0 or size + len(view) <= self.max_bytes:
                self._write_all(view)
                return
            room = max(0, self.max_bytes - size)
            cut = bytes(view[:room]).rfind(b"\n") + 1
            if cut == 0 and size == 0:
                cut = room  # one line longer than the limit: cut it at the limit
            if cut:
                self._write_all(view[:cut])
                view = view[cut:]
            self.rotate()

    def _write_all(self, view: memoryview) -> None:
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def rotate(self) -> None:
        """Shift the rotated files up by one (dropping the oldest), rename LOG to
        ``LOG.1`` and open a fresh LOG. Does only the last step when another writer
        rotated the file first.

        Raises:
            OSError: a rename or the new LOG's open failed.
        """
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            if self._is_current():
                if self.keep <= 0:
                    os.unlink(self.path)
                else:
                    for n in range(self.keep - 1, 0, -1):
                        try:
                            os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
                        except FileNotFoundError:
                            pass
                    os.replace(self.path, f"{self.path}.1")
                n = self.keep + 1  # files a larger `keep` left behind
                while os.path.lexists(f"{self.path}.{n}"):
                    os.unlink(f"{self.path}.{n}")
                    n += 1
        finally:
            self._reopen()  # closing the descriptor releases the lock

    def close(self) -> None:
        """Close the log (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def pump(src: int, log: RotatingLog, wake: int, stopped: list[int], first: bytes = b"") -> None:
    """Copy ``src`` into ``log`` until ``src`` ends, or until a signal is noted in
    ``stopped`` (``wake`` becomes readable then; see ``signal.set_wakeup_fd``), after
    which what ``src`` already holds is copied too. ``first`` goes in with the first
    bytes, in the same write (nothing, if ``src`` brings none).

    Raises:
        OSError: the log cannot be written.
    """
    while True:
        ready, _, _ = select.select([src, wake], [], [])
        if src in ready:
            data = os.read(src, CHUNK)
            if not data:
                return
            log.write(first + data)
            first = b""
        if stopped:
            os.set_blocking(src, False)
            while True:
                try:
                    data = os.read(src, CHUNK)
                except BlockingIOError:
                    return
                if not data:
                    return
                log.write(first + data)
                first = b""


def parse(argv: list[str]) -> tuple[int, int, str]:
    """``(max_bytes, keep, path)`` from the command line.

    Raises:
        ValueError: the arguments are not ``[--max-bytes N] [--keep K] LOG``.
    """
    max_bytes, keep, path = MAX_BYTES, KEEP, None
    args = list(argv)
    while args:
        word = args.pop(0)
        if word in ("--max-bytes", "--keep"):
            if not args or not args[0].isdigit():
                raise ValueError(f"{word} needs a whole number")
            if word == "--max-bytes":
                max_bytes = int(args.pop(0))
            else:
                keep = int(args.pop(0))
        elif path is None and not word.startswith("--"):
            path = word
        else:
            raise ValueError(f"unexpected argument {word!r}")
    if path is None:
        raise ValueError("the log file is missing")
    return max_bytes, keep, path


def main(argv: list[str]) -> int:
    """Run the pipe (see the module's docstring); returns the exit status."""
    try:
        max_bytes, keep, path = parse(argv)
    except ValueError as e:
        sys.stderr.write(f"miyabi logpipe: {e}; {USAGE}\n")
        return 2
    stopped: list[int] = []
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stopped.append(signum))
    try:
        log = RotatingLog(path, max_bytes, keep)
        try:
            pump(0, log, wake_r, stopped, first=START)
        finally:
            log.close()
    except OSError as e:
        sys.stderr.write(f"miyabi logpipe: cannot write {path}: {e.strerror or e}; the pane is no longer logged\n")
        return 1
    return 0


if __name__ in ("__main__", "logpipe"):  # a script, or imported as tmux starts it (miyabi.tmux.builder.LOGPIPE_START)
    sys.exit(main(sys.argv[1:]))
