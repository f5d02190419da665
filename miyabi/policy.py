"""The restart policy: a pure function of an agent's history and a clock.

An agent that dies after running at least ``min_uptime`` seconds is restarted at
once. One that dies sooner is restarted after a backoff that starts at
``backoff_initial`` and doubles up to ``backoff_max``; the backoff resets once an
agent has run ``stable_after`` seconds. A crash-loop breaker marks the agent failed
when it died again after ``max_restarts`` restarts within ``restart_window`` seconds
(the shape of supervisord's ``startsecs``/``startretries`` and systemd's
``StartLimitBurst``/``StartLimitIntervalSec``, with Erlang/OTP's restart intensity).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

WATCHDOG_KEYS = ("silence_timeout", "silence_grace", "min_uptime", "stable_after", "max_restarts", "restart_window")
"""Keys of ``watchdog:`` in a layout, ensemble-wide and per agent."""


@dataclass(frozen=True)
class Policy:
    """Watchdog settings for one agent. Times in seconds.

    Attributes:
        silence_timeout: not ready and silent this long → hung (nudged).
        silence_grace: still silent this long after the nudge → restarted.
        min_uptime: a death after at least this long restarts at once.
        stable_after: running this long resets the backoff.
        max_restarts: restarts allowed within ``restart_window`` before the breaker trips.
        restart_window: the window the breaker counts restarts in.
        backoff_initial, backoff_max: first and largest backoff delay.
    """

    silence_timeout: float = 600.0
    silence_grace: float = 120.0
    min_uptime: float = 10.0
    stable_after: float = 600.0
    max_restarts: int = 5
    restart_window: float = 900.0
    backoff_initial: float = 1.0
    backoff_max: float = 300.0

    def merged(self, overrides: dict[str, Any]) -> Policy:
        """A copy with the layout's values for some keys."""
        return replace(self, **overrides)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class History:
    """What the policy remembers of one agent (persisted under ``run/``).

    Attributes:
        restarts: Unix times of the restarts the watchdog made.
        backoff: the delay the next quick death will wait (0: none yet).
        failed: why the breaker tripped, or None.
        last_reason: why the agent last died or was restarted.
    """

    restarts: list[float] = field(default_factory=list)
    backoff: float = 0.0
    failed: str | None = None
    last_reason: str | None = None

    def recent(self, now: float, window: float) -> list[float]:
        return [t for t in self.restarts if now - t <= window]


@dataclass(frozen=True)
class Decision:
    """What to do about a death.

    Attributes:
        action: ``restart`` or ``fail``.
        delay: seconds to wait before restarting (0: at once).
        backoff: the history's backoff after this decision.
        reason: one line for events and ``miyabi status``.
    """

    action: str
    delay: float
    backoff: float
    reason: str


def on_death(policy: Policy, history: History, uptime: float, now: float, cause: str = "exited") -> Decision:
    """Decide what follows the death of an agent that ran ``uptime`` seconds.

    Args:
        policy: the agent's settings.
        history: its restarts so far (not changed).
        uptime: seconds the process ran.
        now: the current Unix time.
        cause: how it died, for the reason text.
    """
    recent = history.recent(now, policy.restart_window)
    if len(recent) >= policy.max_restarts:
        return Decision(
            "fail",
            0.0,
            history.backoff,
            f"{cause}; {len(recent)} restarts within {policy.restart_window:g} s (max_restarts {policy.max_restarts}): "
            "not restarting; `miyabi restart` clears this",
        )
    backoff = 0.0 if uptime >= policy.stable_after else history.backoff
    if uptime >= policy.min_uptime:
        return Decision("restart", 0.0, backoff, f"{cause} after {uptime:.1f} s; restarting at once")
    delay = backoff or policy.backoff_initial
    return Decision(
        "restart",
        delay,
        min(delay * 2, policy.backoff_max),
        f"{cause} after {uptime:.1f} s (under min_uptime {policy.min_uptime:g} s); restarting in {delay:g} s",
    )


def record_restart(history: History, decision: Decision, now: float) -> History:
    """The history after carrying out a ``restart`` decision at ``now``."""
    return History(
        restarts=[*history.recent(now, 86400.0), now],
        backoff=decision.backoff,
        failed=None,
        last_reason=decision.reason,
    )
