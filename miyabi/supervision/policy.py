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

from dataclasses import dataclass, field
from enum import StrEnum

from miyabi import defaults
from miyabi.backoff import Backoff
from miyabi.config.settings import WatchdogSettings


class DeathAction(StrEnum):
    """What follows an agent's death."""

    RESTART = "restart"
    FAIL = "fail"
    """The breaker tripped: the agent stays down until ``miyabi restart``."""


class SilenceAction(StrEnum):
    """What follows a look at a live agent."""

    OK = "ok"
    WORKING = "working"
    """Silent, but its processes use CPU."""
    NUDGE = "nudge"
    WAIT = "wait"
    """Nudged, and its grace has not run out."""
    RESTART = "restart"


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
        action: restart or fail.
        delay: seconds to wait before restarting (0: at once).
        backoff: the history's backoff after this decision.
        reason: one line for events and ``miyabi status``.
        died_young: the process ran less than ``min_uptime`` (False for a restart of
            a live agent: hung, or ``miyabi restart``).
    """

    action: DeathAction
    delay: float
    backoff: float
    reason: str
    died_young: bool = False


@dataclass(frozen=True)
class Silence:
    """What the watchdog sees of a live agent (times in seconds).

    Attributes:
        silent_for: since the pane last printed (or the agent started).
        ready: the agent looks ready for input by its profile (None: the profile
            has no ready pattern).
        since_delivery: since the last message was delivered with no output after
            it, or None when output followed (or nothing was delivered).
        cpu_busy: its process tree used CPU since the last check.
        nudged_for: since the nudge, or None when not nudged.
    """

    silent_for: float
    ready: bool | None
    since_delivery: float | None
    cpu_busy: bool
    nudged_for: float | None


def on_silence(policy: WatchdogSettings, s: Silence) -> tuple[SilenceAction, str]:
    """Decide about a live agent: ok, working (silent but using CPU), nudge, wait
    (nudged, in its grace) or restart; with the signal that decided, for the event."""
    if s.ready:
        return SilenceAction.OK, "ready: idle at its prompt"
    if s.ready is None:
        if s.since_delivery is None or s.since_delivery < policy.silence_timeout:
            return SilenceAction.OK, "no ready pattern, and no unanswered message"
        silent = s.since_delivery
    else:
        silent = s.silent_for
    if silent < policy.silence_timeout:
        return SilenceAction.OK, "printed recently"
    if s.cpu_busy:
        return SilenceAction.WORKING, f"silent {silent:.0f} s but using CPU"
    if s.nudged_for is None:
        return SilenceAction.NUDGE, f"silent {silent:.0f} s, not ready, no CPU use"
    if s.nudged_for >= policy.silence_grace:
        return SilenceAction.RESTART, f"silent {silent:.0f} s and {s.nudged_for:.0f} s after the nudge, no CPU use"
    return SilenceAction.WAIT, f"nudged {s.nudged_for:.0f} s ago"


def on_death(policy: WatchdogSettings, history: History, uptime: float, now: float, cause: str = "exited") -> Decision:
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
            DeathAction.FAIL,
            0.0,
            history.backoff,
            f"{cause}; {len(recent)} restarts within {policy.restart_window:g} s (max_restarts {policy.max_restarts}): "
            "not restarting; `miyabi restart` clears this",
        )
    backoff = 0.0 if uptime >= policy.stable_after else history.backoff
    if uptime >= policy.min_uptime:
        return Decision(DeathAction.RESTART, 0.0, backoff, f"{cause} after {uptime:.1f} s; restarting at once")
    pace = Backoff(policy.backoff_initial, policy.backoff_max, delay=backoff)
    delay = pace.next()
    return Decision(
        DeathAction.RESTART,
        delay,
        pace.delay,
        f"{cause} after {uptime:.1f} s (under min_uptime {policy.min_uptime:g} s); restarting in {delay:g} s",
        died_young=True,
    )


def resumes(resumed_last: bool, died_young: bool, young_resumes: int) -> tuple[bool, int]:
    """Whether an agent's next process resumes its conversation, and the count of
    resumed processes in a row that died young after this start. A conversation can
    be what kills the CLI: after two resumed processes in a row that died within
    ``min_uptime``, one starts fresh. Pure.

    Args:
        resumed_last: the process that ended had resumed a conversation.
        died_young: it ran less than ``min_uptime``.
        young_resumes: resumed processes in a row that died young before it.
    """
    count = young_resumes + 1 if resumed_last and died_young else 0
    if count >= 2:
        return False, 0
    return True, count


def record_restart(history: History, decision: Decision, now: float) -> History:
    """The history after carrying out a ``restart`` decision at ``now``."""
    return History(
        restarts=[*history.recent(now, defaults.RESTART_HISTORY), now],
        backoff=decision.backoff,
        failed=None,
        last_reason=decision.reason,
    )
