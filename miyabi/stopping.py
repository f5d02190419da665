"""Waits that end at once when the controller stops.

Every wait in the controller's threads goes through a stop event: :func:`sleeper`
makes a ``sleep(seconds)`` that returns early and raises :class:`Stopped` the moment
the event is set, so a thread that was backing off, settling or verifying gives up its
step at once (what it had journalled is resumed by the next controller).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Stopped(Exception):
    """The controller is stopping; the current step was abandoned."""


def sleeper(stop: threading.Event) -> Callable[[float], None]:
    """A ``sleep(seconds)`` that raises :class:`Stopped` as soon as ``stop`` is set
    (before or during the wait)."""

    def sleep(seconds: float) -> None:
        if stop.wait(max(0.0, seconds)):
            raise Stopped()

    return sleep


class StopEvent(threading.Event):
    """The controller's stop event: setting it also sets every event linked to it, so
    a thread waiting on one of those (the main loop's wake-up, a deliverer's own stop)
    ends its wait at once too."""

    def __init__(self) -> None:
        super().__init__()
        self._linked: list[threading.Event] = []

    def link(self, event: threading.Event) -> None:
        """Set ``event`` whenever this is set (at once if it is already)."""
        self._linked.append(event)
        if self.is_set():
            event.set()

    def set(self) -> None:
        super().set()
        for e in list(self._linked):
            e.set()
