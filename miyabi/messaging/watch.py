"""Waking deliverers when mail arrives: inotify on the inboxes (the ``watchdog``
library), and a rescan every ``defaults.INBOX_RESCAN`` seconds in case an event is
missed.

The rescan only ``stat()``s each ``new/`` directory: opening them would itself raise
inotify events. It also wakes a deliverer whose mail still waits for its agent to be
ready, so it looks at the screen again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from miyabi import defaults


class InboxWatcher:
    """Calls ``wake(agent)`` when a file lands in ``queue/<agent>/new/``.

    One watch per inbox (``queue/<agent>/``, its directories made first), added and
    removed as agents come and go (:meth:`watch`, :meth:`unwatch`): a recursive watch
    on ``queue/`` raced the creation of a new agent's directories (watchdog warned
    "Callback with id … already exists" and missed events). The inbox's own
    directories are watched with it, so a move from ``new/`` to ``cur/`` is one event:
    a watch of ``new/`` alone saw only its half, which watchdog holds back for 0.5 s
    waiting for the other, delaying every event behind it. :meth:`watch_dir` watches
    any other directory (the controller's task-store wake-up).

    Args:
        queue: the home's ``queue/`` directory.
        wake: called with the agent's name (from the watcher's thread; keep it short).
    """

    def __init__(self, queue: Path, wake: Callable[[str], None]) -> None:
        self.queue = queue
        self.wake = wake
        self._observer: Any = None
        self._watches: dict[str, Any] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start watching (a daemon thread of the ``watchdog`` library)."""
        from watchdog.observers import Observer

        observer = Observer()
        observer.daemon = True
        observer.start()
        self._observer = observer

    def watch(self, agent: str, inbox_root: Path) -> None:
        """Wake ``agent`` when a file is created in or moved into ``inbox_root/new``."""
        wake = self.wake
        self.watch_dir(f"inbox:{agent}", inbox_root, lambda: wake(agent), recursive=True, only_in="new")

    def unwatch(self, agent: str) -> None:
        self.unwatch_dir(f"inbox:{agent}")

    def watch_dir(
        self,
        key: str,
        directory: Path,
        callback: Callable[[], None],
        modified: bool = False,
        recursive: bool = False,
        only_in: str | None = None,
        on_file: Callable[[Path], None] | None = None,
    ) -> None:
        """Call ``callback`` when a file is created in, or moved into, ``directory``
        (and with ``modified``, when one is written; with ``recursive``, also in its
        subdirectories, and with ``only_in``, only for files landing in a directory of
        that name; with ``on_file``, that is called with the file's path instead). A
        second call with ``key`` replaces the first.

        Raises:
            OSError: the directory cannot be watched.
        """
        from watchdog.events import (
            FileCreatedEvent,
            FileModifiedEvent,
            FileMovedEvent,
            FileSystemEvent,
            FileSystemEventHandler,
        )

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if only_in is not None:
                    landed = Path(str(getattr(event, "dest_path", "") or event.src_path))
                    if landed.parent.name != only_in:
                        return
                if on_file is not None:
                    on_file(Path(str(getattr(event, "dest_path", "") or event.src_path)))
                    return
                callback()

        kinds: list[type[FileSystemEvent]] = [FileCreatedEvent, FileMovedEvent]
        if modified:
            kinds.append(FileModifiedEvent)
        with self._lock:
            self._unwatch_locked(key)
            if self._observer is not None:
                self._watches[key] = self._observer.schedule(
                    Handler(), str(directory), recursive=recursive, event_filter=kinds
                )

    def unwatch_dir(self, key: str) -> None:
        with self._lock:
            self._unwatch_locked(key)

    def _unwatch_locked(self, key: str) -> None:
        w = self._watches.pop(key, None)
        if w is not None and self._observer is not None:
            try:
                self._observer.unschedule(w)
            except (KeyError, OSError):
                pass

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer = None


def rescan(
    stop: threading.Event, inboxes: Callable[[], Mapping[str, tuple[Path, bool]]], wake: Callable[[str], None]
) -> None:
    """The fallback poll, until ``stop``: every ``defaults.INBOX_RESCAN`` seconds, wake
    each agent whose ``new/`` directory changed or whose mail is waiting.

    Args:
        inboxes: agent → (its ``new/`` directory, whether mail waits for it to be ready).
        wake: called with the agent's name.
    """
    seen: dict[str, int] = {}
    while not stop.wait(defaults.INBOX_RESCAN):
        for name, (new_dir, waiting) in inboxes().items():
            try:
                mtime = os.stat(new_dir).st_mtime_ns
            except OSError:
                continue
            if waiting or seen.get(name) != mtime:
                seen[name] = mtime
                wake(name)
