"""The locks miyabi holds on a repository: its lock while git runs on it (a thread lock
and a file lock under ``run/locks/``), and its merge lock (one local merge at a time)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Self

from miyabi import defaults
from miyabi.files import private_dir


class RepoLock:
    """One repository's lock, held while miyabi runs git on it: a thread lock inside
    this controller, and a file lock (``run/locks/``) against ``miyabi gc`` and other
    processes of the home."""

    def __init__(self, home_root: Path, repo: Path, thread_lock: threading.Lock) -> None:
        from filelock import FileLock

        name = hashlib.sha1(str(repo).encode()).hexdigest()[:16]
        self.thread_lock = thread_lock
        self.file_lock = FileLock(
            str(private_dir(home_root / "run" / "locks") / f"repo-{name}.lock"), mode=defaults.FILE_MODE
        )

    def __enter__(self) -> Self:
        self.thread_lock.acquire()
        try:
            self.file_lock.acquire()
        except BaseException:
            self.thread_lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.file_lock.release()
        finally:
            self.thread_lock.release()


class RepoLocks:
    """The locks of each repository one controller works on, made on first use.

    Args:
        home_root: the miyabi home (file locks under ``run/locks/``).
    """

    def __init__(self, home_root: Path) -> None:
        self.home = home_root
        self._repo: dict[Path, threading.Lock] = {}
        self._merge: dict[Path, threading.Lock] = {}
        self._lock = threading.Lock()

    def merge(self, repo: Path) -> threading.Lock:
        """``repo``'s merge lock: held while a merge into it is made and checked."""
        with self._lock:
            return self._merge.setdefault(repo, threading.Lock())

    def repo(self, repo: Path) -> RepoLock:
        """``repo``'s lock, held while git runs on it."""
        with self._lock:
            thread_lock = self._repo.setdefault(repo, threading.Lock())
        return RepoLock(self.home, repo, thread_lock)
