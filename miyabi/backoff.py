"""Exponential backoff: how long to wait before trying again, growing with each failure
up to a cap.

The one place miyabi computes a retry delay: the controller's reconnects to tmux and to
the bus, the dashboard's and the keep-alive's restarts, GitHub's 5xx and network
retries, the notices' retries and the watchdog's restarts all use it. Delays are in
seconds. The idea is the classic truncated binary exponential backoff (Ethernet's,
RFC 6298's retransmission timer): wait ``initial``, then twice that, and so on, never
more than ``cap``.
"""

from __future__ import annotations


def backoff(attempt: int, initial: float, cap: float, factor: float = 2.0) -> float:
    """Seconds to wait after the ``attempt``-th failure in a row (1 for the first):
    ``initial * factor ** (attempt - 1)``, at most ``cap``; ``initial`` (at most ``cap``)
    for an ``attempt`` under 1.

    >>> [backoff(n, 0.5, 3.0) for n in (1, 2, 3, 4, 5)]
    [0.5, 1.0, 2.0, 3.0, 3.0]
    """
    if attempt <= 1:
        return float(min(initial, cap))
    # past the cap, the power is never computed (a float overflow for a long outage)
    grown = float(initial)
    for _ in range(attempt - 1):
        grown *= factor
        if grown >= cap:
            return float(cap)
    return grown


class Backoff:
    """A delay that grows with each failure and starts again after a success.

    :meth:`next` gives the seconds to wait now and makes the next wait ``factor`` times
    longer (at most ``cap``); :meth:`reset` after a success starts again from
    ``initial``.

    Args:
        initial: the first delay, in seconds.
        cap: the largest delay, in seconds.
        factor: how much each failure multiplies the delay by.
        delay: the delay to resume from (one kept in a file, say); 0 starts at ``initial``.
    """

    def __init__(self, initial: float, cap: float, factor: float = 2.0, delay: float = 0.0) -> None:
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.delay = float(min(delay or initial, cap))
        """Seconds the next failure waits."""

    def next(self) -> float:
        """The seconds to wait after this failure; the next one waits longer."""
        now = self.delay
        self.delay = backoff(2, now, self.cap, self.factor)
        return now

    def reset(self) -> None:
        """A success: the next failure waits ``initial`` again."""
        self.delay = float(min(self.initial, self.cap))
