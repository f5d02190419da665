"""A person at the keyboard: miyabi types nothing into a pane a person typed in.

A person's keys are read from tmux itself (:mod:`miyabi.tmux.clients`: an attached
client's last key and the pane its keys go to), never guessed from the screen. A pane
is held while a person pressed a key in it within the layout's ``human_hold`` seconds
and, after that, while text they left sits in the agent's input box: typing a message
then would join it to theirs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from miyabi import defaults
from miyabi.tmux.clients import Client


def holds(last_key: float | None, now: float, hold: float, box: str | None) -> bool:
    """Whether a person holds a pane: they pressed a key in it less than ``hold``
    seconds before ``now`` (``last_key``: Unix seconds, whole, as tmux keeps them: the
    key may have come up to a second later), or the agent's input box still holds
    text (``box``: its text, "" when empty, None when the screen does not tell) after
    one of their keys. Pure."""
    if last_key is None:
        return False
    return now < last_key + 1 + hold or bool(box)


class Keyboard:
    """Where a person last typed, pane by pane, from looks at the attached clients.

    A client's key moves its activity time; the pane it was sent to is the client's
    active pane. A client seen for the first time counts its last activity as a key
    (tmux keeps whole seconds: a key pressed in the second it attached cannot be told
    from the attach), so attaching holds the pane it shows for ``human_hold`` too.
    Thread-safe: the deliverers and the watchdog share one.

    Args:
        clients: the clients attached to the session now (a tmux call; its
            ``TmuxError`` is left to the caller).
        clock: Unix time.
        every: seconds between two looks at tmux (a look costs one command on the
            control channel).
    """

    def __init__(
        self,
        clients: Callable[[], Sequence[Client]],
        clock: Callable[[], float] = time.time,
        every: float = defaults.KEYBOARD_LOOK,
    ) -> None:
        self.clients = clients
        self.clock = clock
        self.every = every
        self._lock = threading.Lock()
        self._looked = float("-inf")
        self._activity: dict[str, int] = {}
        self._last_key: dict[str, float] = {}

    def fold(self, clients: Sequence[Client]) -> None:
        """Take in one look at the clients (those that cannot type are left out)."""
        seen: dict[str, int] = {}
        for c in clients:
            if not c.types:
                continue
            before = self._activity.get(c.name)
            if before is None or c.activity > before:
                self._last_key[c.pane_id] = max(self._last_key.get(c.pane_id, 0.0), float(c.activity))
            seen[c.name] = c.activity
        self._activity = seen

    def look(self, force: bool = False) -> None:
        """Look at the clients now if the last look is ``every`` seconds old, or at
        once with ``force`` (right before typing: a key pressed since the last look
        must not be missed).

        Raises:
            TmuxError: tmux could not list the clients.
        """
        with self._lock:
            now = time.monotonic()
            if force or now - self._looked >= self.every:
                self.fold(self.clients())
                self._looked = now

    def last_key(self, pane_id: str) -> float | None:
        """Unix time (whole seconds) of a person's last key in ``pane_id`` (see
        :meth:`look`); None when no person typed there (or since :meth:`release`).

        Raises:
            TmuxError: tmux could not list the clients.
        """
        self.look()
        with self._lock:
            return self._last_key.get(pane_id)

    def holds(self, pane_id: str, hold: float, box: str | None) -> bool:
        """Whether a person holds ``pane_id`` now (see :func:`holds`); a pane no longer
        held is released, so text in its box later is the agent's, not theirs.

        Raises:
            TmuxError: tmux could not list the clients.
        """
        last = self.last_key(pane_id)
        if holds(last, self.clock(), hold, box):
            return True
        if last is not None:
            self.release(pane_id)
        return False

    def release(self, pane_id: str) -> None:
        """Forget the person's keys in ``pane_id`` (the hold is over)."""
        with self._lock:
            self._last_key.pop(pane_id, None)
