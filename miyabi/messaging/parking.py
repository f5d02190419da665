"""Parked agents: an agent its provider refuses (a usage or rate limit) or whose budget
is spent waits, without messages typed into it and without the watchdog calling it
hung, until it may go on.

A park (:class:`Parked`) starts when the agent's screen shows a current limit sign
(:func:`miyabi.agents.limits.limit_shown`) or its budget runs out. A limit park ends
with a probe: at the reset time the CLI printed, else after a back-off (``park.
probe_after``, doubling per park in a row, at most ``park.probe_max``), miyabi queues a
message telling the agent to go on, at the head of its inbox; once typed, a new limit
sign parks it again (the next back-off), and none for ``defaults.PARK_CLEAR`` seconds
ends the park. A turn its provider answered (new token usage: the CLI's own retry got
through) ends it at once; a sign that merely leaves the screen does not (a CLI that
retries on its own scrolls it away). A budget park ends when the budget allows again
(:meth:`Parking.release`). Each park is kept in ``run/parked/<agent>.json`` (so that a
restarted controller keeps it, and ``miyabi status`` reads it) and told in the event
log (``agent-parked``, ``agent-unparked``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.agents.limits import LimitSign, reset_time
from miyabi.backoff import backoff
from miyabi.config.settings import ParkSettings
from miyabi.events import EventKind
from miyabi.files import private_dir, write_atomic


class ParkReason(StrEnum):
    """Why an agent is parked."""

    LIMIT = "limit"
    """Its provider refuses it: a usage or rate limit its screen shows."""
    BUDGET = "budget"
    """It spent its budget of tokens or dollars (layout key ``budget``)."""


@dataclass(frozen=True)
class Parked:
    """One park of an agent.

    Attributes:
        reason: a :class:`ParkReason` value.
        since: Unix time the park began (kept across the probes of one park).
        until: Unix time the limit resets, as the CLI printed it (or the budget's
            period ends); None when unknown.
        probe_at: Unix time miyabi tells the agent to go on; None: not by itself
            (a budget park waits for its budget).
        strikes: parks in a row without a turn that got through between them.
        detail: the screen row that showed the limit, or the budget spent.
        probing: the message telling it to go on is queued, not yet typed.
        probed: Unix time that message was typed; None before.
        scope: a budget park: the budget's scope (``layout``, a pool's or the
            agent's name); None for a limit park.
    """

    reason: str
    since: float
    until: float | None
    probe_at: float | None
    strikes: int
    detail: str
    probing: bool = False
    probed: float | None = None
    scope: str | None = None


def parked_file(home_root: Path, agent: str) -> Path:
    """Where an agent's park is kept."""
    return home_root / "run" / "parked" / f"{agent}.json"


def read_parked(home_root: Path, agent: str) -> Parked | None:
    """The agent's park in force, or None (no file, or one that cannot be read)."""
    try:
        data = json.loads(parked_file(home_root, agent).read_text(encoding="utf-8"))
        return Parked(**{k: data[k] for k in Parked.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError):
        return None


def probe_time(now: float, until: float | None, strikes: int, settings: ParkSettings) -> float:
    """When a limit park of ``strikes`` parks in a row, begun at ``now``, is probed:
    the reset time when known and still ahead, else ``probe_after`` doubled per strike,
    at most ``probe_max``. Pure."""
    if until is not None and until > now:
        return until
    return now + backoff(strikes, settings.probe_after, settings.probe_max)


class Parking:
    """One agent's park. Thread-safe: the deliverer and the watchdog both ask it.

    Args:
        home_root: the miyabi home (``run/parked/``).
        agent: the agent's name.
        settings: its ``park`` settings.
        event: ``event(kind, **fields)`` appends an event for the agent.
        on_probe: called with the park when the agent is to be told to go on (it
            queues that message).
        clock: Unix time.
    """

    def __init__(
        self,
        home_root: Path,
        agent: str,
        settings: ParkSettings,
        event: Callable[..., None],
        on_probe: Callable[[Parked], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = parked_file(home_root, agent)
        self.settings = settings
        self.event = event
        self.on_probe = on_probe
        self.clock = clock
        self.lock = threading.Lock()
        self.current = read_parked(home_root, agent)
        """The park in force, or None."""
        self.answered_sign: str | None = None
        """The sign on screen when the provider answered a turn: old news until the
        next text is typed."""

    def _save(self, parked: Parked | None) -> None:
        self.current = parked
        if parked is None:
            self.path.unlink(missing_ok=True)
        else:
            private_dir(self.path.parent)
            write_atomic(self.path, json.dumps(asdict(parked)))

    def _end(self, why: str) -> None:
        p = self.current
        if p is not None:
            self._save(None)
            self.event(EventKind.AGENT_UNPARKED, reason=p.reason, why=why, parked_s=round(self.clock() - p.since, 3))

    def _park(
        self, reason: str, detail: str, until: float | None, strikes: int, since: float, scope: str | None = None
    ) -> Parked:
        now = self.clock()
        probe = probe_time(now, until, strikes, self.settings) if reason == ParkReason.LIMIT else None
        parked = Parked(reason, since, until, probe, strikes, detail, scope=scope)
        self._save(parked)
        fields: dict[str, Any] = {"reason": reason, "detail": detail, "strikes": strikes, "until": until}
        if scope is not None:
            fields["scope"] = scope
        self.event(EventKind.AGENT_PARKED, **fields, probe_at=probe)
        return parked

    def check(self, sign: LimitSign | None) -> Parked | None:
        """The park in force after a read of the agent (``sign``: the current limit it
        shows, if any). None: not parked (a probe may just have been queued)."""
        with self.lock:
            now, p = self.clock(), self.current
            if p is not None and p.reason == ParkReason.BUDGET:
                return p
            if sign is not None and sign.line == self.answered_sign:
                sign = None  # the model answered since it showed
            if sign is not None:
                until = reset_time(sign.reset, now) if sign.reset else None
                if p is None:
                    return self._park(ParkReason.LIMIT, sign.line, until, 1, now)
                if p.probed is not None:  # told to go on, it met the limit again
                    return self._park(ParkReason.LIMIT, sign.line, until, p.strikes + 1, p.since)
                if p.probing:
                    return None
                if until is not None and until > now and sign.line != p.detail:  # a new sign: "in 2h" counts from now
                    p = replace(p, until=until, probe_at=until, detail=sign.line)
                    self._save(p)
                return self._probe(p, now)
            if p is None:
                return None
            if p.probed is not None:
                if now - p.probed >= defaults.PARK_CLEAR:
                    self._end("went on")
                return None
            if p.probing:
                return None
            return self._probe(p, now)

    def answered(self, sign: str | None = None) -> None:
        """The agent's provider answered a turn (new token usage): a limit park ends, and
        ``sign`` (the limit line still on screen) counts for nothing until the next
        text is typed."""
        with self.lock:
            if self.current is not None and self.current.reason == ParkReason.LIMIT:
                self.answered_sign = sign
                self._end("answered")

    def _probe(self, p: Parked, now: float) -> Parked | None:
        if p.probe_at is None or now < p.probe_at:
            return p
        self._save(replace(p, probing=True))
        if self.on_probe is not None:
            self.on_probe(p)
        return None

    def typed(self, text: str) -> None:
        """A message was typed into the agent: while a probe is queued, that is the probe
        (its message goes first; a controller started since knows no more of it)."""
        with self.lock:
            self.answered_sign = None
            p = self.current
            if p is not None and p.probing:
                self._save(replace(p, probing=False, probed=self.clock()))

    def park_budget(self, detail: str, until: float | None, scope: str | None = None) -> None:
        """Park the agent for its budget (``until``: when its period ends, if it does;
        ``scope``: the budget's, for ``miyabi budget raise``)."""
        with self.lock:
            p = self.current
            if p is None or p.reason != ParkReason.BUDGET:
                self._park(ParkReason.BUDGET, detail, until, 1, self.clock(), scope)

    def release(self, reason: ParkReason, why: str) -> None:
        """End a park of ``reason`` (a budget raised, its period turned)."""
        with self.lock:
            if self.current is not None and self.current.reason == reason:
                self._end(why)
