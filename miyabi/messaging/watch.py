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

    Args:
        queue: the home's ``queue/`` directory.
        wake: called with the agent's name (from the watcher's thread; keep it short).
    """

    def __init__(self, queue: Path, wake: Callable[[str], None]) -> None:
        self.queue = queue
        self.wake = wake
        self._observer: Any = None

    def start(self) -> None:
        """Start watching (a daemon thread of the ``watchdog`` library)."""
        from watchdog.events import (
            DirCreatedEvent,
            FileCreatedEvent,
            FileMovedEvent,
            FileSystemEvent,
            FileSystemEventHandler,
        )
        from watchdog.observers import Observer

        wake = self.wake

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                path = Path(str(getattr(event, "dest_path", "") or event.src_path))
                if path.parent.name == "new":
                    wake(path.parent.parent.name)

        observer = Observer()
        observer.schedule(
            Handler(), str(self.queue), recursive=True,
            event_filter=[FileCreatedEvent, FileMovedEvent, DirCreatedEvent],
        )
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer = None


def rescan(stop: threading.Event, inboxes: Callable[[], Mapping[str, tuple[Path, bool]]], wake: Callable[[str], None]) -> None:
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
