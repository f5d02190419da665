"""Key figures of an ensemble over a time window: pure functions of the event log
(``logs/events.jsonl``, see :mod:`miyabi.events`) and the task store's history (its
``events`` table, see :mod:`miyabi.work.store`), with the window as arguments and no
clock of their own.

What each figure means (docs/reports.md says the same):

- **observed** (per agent): the seconds of the window the agent existed for miyabi:
  from its first event in the log (or the window's start, if later) to the window's
  end, less the time a pool instance was gone (``instance-ended`` until its name shows
  up again) and the time no controller ran (``controller-stop`` until the next
  ``controller-start``: after ``miyabi down`` nothing runs, and nobody watched). Time
  not observed counts neither as up nor as down nor as working.
- **availability** (per agent): the fraction of its observed time its process was up.
  An agent is *down* from ``agent-died`` (or ``hung-restart``, when the watchdog kills
  a hung process) until ``restarted``, or until a new process of it reports
  (``state``, ``intro`` or ``usage`` with another pid: respawned by ``miyabi up``), or a
  pane is recreated for it (``pane-recreated``, ``session-rebuilt``). A process
  ``miyabi restart`` replaces is not counted down (there is no death to start from).
  An agent the watchdog gave up on stays down until one of those. The ensemble's
  availability is the sum of up time over the sum of observed time.
- **MTTR**: seconds from ``agent-died`` (or ``hung-restart``) to the agent's next
  ``restarted``, for the restarts inside the window: p50 and p99.
- **restarts by reason**: ``restarted`` events in the window, by the reason's label
  (:func:`reason_label`: ``signal``, ``exit``, ``hung``, ``requested``, ``other``).
- **utilization** (per agent): the fraction of its observed time the agent was
  *working*: its last ``state`` was ``busy`` or ``waiting-approval`` (both mean it
  holds a turn and takes no message). A death ends a working stretch; a new process
  is not working until it says so.
- **delivery latency**: seconds from a message's ``enqueued`` (or its ``retry``, for
  a dead letter put back) to its ``delivered``, for the deliveries inside the window:
  p50 and p99, per agent and for all.
- **tasks done / failed per day**: the tasks the task store moved to ``done`` /
  ``failed`` inside the window, by UTC day of that change (a task failed on two days
  counts on both; the totals count each task once).
- **cycle time**: for each task done inside the window, seconds from its creation
  (``task add``, an issue taken in) to ``done``; its median is the p50.
- **GitHub issues closed**: tasks from GitHub that reached ``done`` inside the
  window (miyabi labels them ``status:done``; the pull request closes the issue).
- **pull requests opened**: ``pull-request-opened`` events inside the window.
- **stories done**: ``story-done`` events inside the window (each story once).
- **story to deployed**: for each story whose first ``story-deployed`` event is inside
  the window, seconds from the story (``miyabi story``, an issue labelled story) to that
  deploy (the event's ``seconds``); its median is the p50.

Percentiles use the nearest-rank method (the smallest sample with at least p % of
the samples at or below it; NIST's and Wikipedia's "Percentile" article's
definition): no interpolation, so every figure is a time that was measured. No
sample gives None (``-`` in tables). Times are Unix seconds inside, RFC 3339 in JSON
(:func:`miyabi.times.rfc3339`); durations are seconds. An event is inside the window
when ``since <= time < until``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from miyabi.events import EventKind
from miyabi.times import parse_rfc3339, rfc3339

REASONS = ("signal", "exit", "hung", "requested", "other")
"""Labels of restart reasons, in the order reports show them."""

WORKING = ("busy", "waiting-approval")
"""Agent states that count as working for utilization."""

SEEN = frozenset(
    {
        EventKind.STATE,
        EventKind.AGENT_DIED,
        EventKind.RESTARTED,
        EventKind.HUNG_RESTART,
        EventKind.GAVE_UP,
        EventKind.NUDGED,
        EventKind.SILENT_BUT_WORKING,
        EventKind.INTRO,
        EventKind.TYPING,
        EventKind.DELIVERED,
        EventKind.ENTER_AGAIN,
        EventKind.NO_RECEIPT,
        EventKind.USAGE,
        EventKind.APPROVAL,
        EventKind.INSTANCE_READY,
        EventKind.RESTART_DROPPED,
        EventKind.RESTART_ERROR,
    }
)
"""Events whose ``agent`` existed (had a pane) when they were written."""

SEEN_LISTS = frozenset({EventKind.CONTROLLER_READY, EventKind.SESSION_REBUILT, EventKind.PANE_RECREATED})
"""Events with an ``agents`` list of agents that existed then."""

LAST_WORDS = frozenset(
    {
        EventKind.AGENT_DIED,
        EventKind.HUNG_RESTART,
        EventKind.GAVE_UP,
        EventKind.RESTART_DROPPED,
        EventKind.RESTART_ERROR,
    }
)
"""Events about an agent's process ending or not coming back: for a pool instance
that ended already, they mean nothing."""

RECREATED = frozenset({EventKind.SESSION_REBUILT, EventKind.PANE_RECREATED})
"""Events whose listed agents got a new process (a pane made afresh)."""

NEW_PROCESS = frozenset({EventKind.STATE, EventKind.INTRO, EventKind.USAGE})
"""Events that carry the agent's process ``pid``: another pid than the dead one means
a new process runs."""


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0 < p <= 100) of ``values`` by the nearest-rank method:
    the ``ceil(p/100 * n)``-th smallest value; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def reason_label(text: object) -> str:
    """A restart's reason (``restarted``'s ``reason``) as one of :data:`REASONS`:
    ``hung`` (the watchdog found it silent), ``requested`` (``miyabi restart``),
    ``signal`` (killed by a signal), ``exit`` (it exited, with a status or not), else
    ``other``."""
    s = str(text or "").lower()
    if s.startswith("hung") or "silent" in s:
        return "hung"
    if "miyabi restart" in s or "request" in s:
        return "requested"
    if "signal" in s:
        return "signal"
    if "exit status" in s or s.startswith("exited"):
        return "exit"
    return "other"


@dataclass(frozen=True)
class Spread:
    """p50 and p99 of a sample of durations (seconds; None when ``n`` is 0).

    Attributes:
        n: how many samples.
        p50, p99: nearest-rank percentiles (:func:`percentile`).
    """

    n: int = 0
    p50: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values`` (seconds)."""
        return cls(len(values), percentile(values, 50), percentile(values, 99))

    def to_json(self) -> dict[str, Any]:
        """``{"n", "p50", "p99"}`` (seconds, or null)."""
        return {"n": self.n, "p50": self.p50, "p99": self.p99}


@dataclass(frozen=True)
class TaskChange:
    """One row of the task store's history, with what a report needs of its task.

    Attributes:
        task: the task's id.
        time: Unix time of the change.
        state: the state it moved to (``done``, ``failed``, ...).
        source: ``local``, ``github`` or ``job``.
        ref: ``owner/name#3`` for an issue, ``#12`` for another task.
        created: Unix time the task was created.
        agent: the agent it was with, if any.
    """

    task: int
    time: float
    state: str
    source: str
    ref: str
    created: float
    agent: str | None = None


@dataclass(frozen=True)
class AgentKPI:
    """One agent's figures over the window.

    Attributes:
        agent: its name (from the log: untrusted text).
        observed: seconds of the window it existed (see the module's docstring).
        up: seconds of those its process was up.
        working: seconds it was busy or waiting for approval.
        availability: ``up / observed`` (None when observed is 0).
        utilization: ``working / observed`` (None when observed is 0).
        restarts: ``restarted`` events inside the window.
        gave_up: times the watchdog gave up on it inside the window.
        mttr: death → restarted, for its restarts inside the window.
        delivery: enqueued → delivered, for its deliveries inside the window.
    """

    agent: str
    observed: float
    up: float
    working: float
    availability: float | None
    utilization: float | None
    restarts: int
    gave_up: int
    mttr: Spread
    delivery: Spread

    def to_json(self) -> dict[str, Any]:
        """``{"agent", "observed", "up", "working", "availability", "utilization",
        "restarts", "gave_up", "mttr", "delivery"}`` (seconds, fractions, counts)."""
        return {
            "agent": self.agent,
            "observed": self.observed,
            "up": self.up,
            "working": self.working,
            "availability": self.availability,
            "utilization": self.utilization,
            "restarts": self.restarts,
            "gave_up": self.gave_up,
            "mttr": self.mttr.to_json(),
            "delivery": self.delivery.to_json(),
        }


@dataclass(frozen=True)
class DayCount:
    """Tasks that reached ``done`` / ``failed`` on one UTC day (``2026-11-22``)."""

    day: str
    done: int
    failed: int

    def to_json(self) -> dict[str, Any]:
        """``{"day", "done", "failed"}``."""
        return {"day": self.day, "done": self.done, "failed": self.failed}


@dataclass(frozen=True)
class Report:
    """Every figure of one window (see the module's docstring for their meaning).

    Attributes:
        since, until: the window, Unix seconds (``since`` included, ``until`` not).
        agents: per agent, by name.
        availability, utilization: of the whole ensemble (None: no agent observed).
        restarts: ``(label, count)`` for every label of :data:`REASONS`, in that order.
        mttr, delivery: of all agents.
        days: every UTC day the window touches, oldest first.
        done, failed: tasks that reached done / failed in the window (each once).
        cycle_time: creation → done of the tasks done in the window.
        issues_closed: references (``owner/name#3``) of GitHub tasks done in the window.
        pull_requests_opened: pull requests the pipeline opened in the window.
        stories_done: stories done in the window.
        story_to_deployed: story → first deploy, of the stories first deployed in the window.
    """

    since: float
    until: float
    agents: tuple[AgentKPI, ...] = ()
    availability: float | None = None
    utilization: float | None = None
    restarts: tuple[tuple[str, int], ...] = tuple((r, 0) for r in REASONS)
    mttr: Spread = Spread()
    delivery: Spread = Spread()
    days: tuple[DayCount, ...] = ()
    done: int = 0
    failed: int = 0
    cycle_time: Spread = Spread()
    issues_closed: tuple[str, ...] = ()
    pull_requests_opened: int = 0
    stories_done: int = 0
    story_to_deployed: Spread = Spread()

    @property
    def seconds(self) -> float:
        """The window's length."""
        return self.until - self.since

    @property
    def restart_total(self) -> int:
        """Restarts in the window, whatever their reason."""
        return sum(n for _, n in self.restarts)

    def to_json(self) -> dict[str, Any]:
        """The report as ``miyabi report --json`` prints it: times RFC 3339, durations
        seconds, fractions from 0 to 1, null where there was nothing to measure::

            {"since", "until", "seconds", "availability", "utilization",
             "agents": [{"agent", "observed", "up", "working", "availability", "utilization",
                         "restarts", "gave_up", "mttr": {"n", "p50", "p99"}, "delivery": {…}}],
             "restarts": {"signal": n, "exit": n, "hung": n, "requested": n, "other": n},
             "mttr": {…}, "delivery": {…},
             "tasks": {"done", "failed", "cycle_time": {…}, "per_day": [{"day", "done", "failed"}]},
             "github": {"issues_closed": ["owner/name#3"], "pull_requests_opened"},
             "stories": {"done", "to_deployed": {…}}}
        """
        return {
            "since": rfc3339(self.since),
            "until": rfc3339(self.until),
            "seconds": self.seconds,
            "availability": self.availability,
            "utilization": self.utilization,
            "agents": [a.to_json() for a in self.agents],
            "restarts": dict(self.restarts),
            "mttr": self.mttr.to_json(),
            "delivery": self.delivery.to_json(),
            "tasks": {
                "done": self.done,
                "failed": self.failed,
                "cycle_time": self.cycle_time.to_json(),
                "per_day": [d.to_json() for d in self.days],
            },
            "github": {"issues_closed": list(self.issues_closed), "pull_requests_opened": self.pull_requests_opened},
            "stories": {"done": self.stories_done, "to_deployed": self.story_to_deployed.to_json()},
        }


# ---------------------------------------------------------------- folding the event log


@dataclass
class _Track:
    """What the log says of one agent so far (mutable, private to :func:`compute`)."""

    first: float
    absent_since: float | None = None
    down_since: float | None = None
    dead_pid: int | None = None
    last_pid: int | None = None
    working_since: float | None = None
    absent: list[tuple[float, float]] = field(default_factory=list)
    down: list[tuple[float, float]] = field(default_factory=list)
    working: list[tuple[float, float]] = field(default_factory=list)
    recoveries: list[float] = field(default_factory=list)
    deliveries: list[float] = field(default_factory=list)
    restarts: int = 0
    gave_up: int = 0
    active: bool = False
    """It has an event inside the window."""

    def stop_working(self, t: float) -> None:
        if self.working_since is not None:
            self.working.append((self.working_since, t))
            self.working_since = None

    def come_up(self, t: float) -> float | None:
        """A process runs again at ``t``: close the down stretch; its length, if any."""
        if self.down_since is None:
            return None
        began = self.down_since
        self.down.append((began, t))
        self.down_since, self.dead_pid = None, None
        return t - began

    def present(self, t: float) -> None:
        if self.absent_since is not None:
            self.absent.append((self.absent_since, t))
            self.absent_since = None


def _overlap(spans: Iterable[tuple[float, float]], lo: float, hi: float) -> float:
    """Seconds of ``spans`` (disjoint) inside ``[lo, hi]``."""
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in spans)


def _union(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """``spans`` merged into disjoint spans, in order."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        elif b > a:
            out.append((a, b))
    return out


def _seen_part(
    spans: Sequence[tuple[float, float]], gaps: Sequence[tuple[float, float]], lo: float, hi: float
) -> float:
    """Seconds of ``spans`` (disjoint) inside ``[lo, hi]`` and outside ``gaps`` (disjoint)."""
    hidden = sum(max(0.0, min(b, d, hi) - max(a, c, lo)) for a, b in spans for c, d in gaps)
    return max(0.0, _overlap(spans, lo, hi) - hidden)


def _time(e: dict[str, Any]) -> float | None:
    try:
        return parse_rfc3339(str(e["time"]))
    except (KeyError, ValueError, TypeError):
        return None


def _pid(e: dict[str, Any]) -> int | None:
    p = e.get("pid")
    return p if isinstance(p, int) and not isinstance(p, bool) else None


def _utc_day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def _days(since: float, until: float) -> list[str]:
    """Every UTC day from the one holding ``since`` to the one holding the window's last instant."""
    if until <= since:
        return []
    first = datetime.fromtimestamp(since, UTC).date()
    last = datetime.fromtimestamp(math.nextafter(until, -math.inf), UTC).date()
    out, d = [], first
    while d <= last:
        out.append(d.isoformat())
        d += timedelta(days=1)
    return out


class _Replay:
    """The event log read in time order, for :func:`compute`: each agent's track, the
    spans no controller watched, the messages in flight, the restarts' reasons."""

    def __init__(self, since: float, until: float) -> None:
        self.since, self.until = since, until
        self.tracks: dict[str, _Track] = {}
        self.unwatched: list[tuple[float, float]] = []
        self.stopped_at: float | None = None
        self.enqueued: dict[str, float] = {}
        self.reasons: dict[str, int] = defaultdict(int)
        self.prs = 0

    def inside(self, t: float) -> bool:
        return self.since <= t < self.until

    def track(self, name: str, t: float) -> _Track:
        tr = self.tracks.get(name)
        if tr is None:
            tr = self.tracks[name] = _Track(first=t)
        tr.present(t)
        if self.inside(t):
            tr.active = True
        return tr

    def feed(self, t: float, e: dict[str, Any]) -> None:
        """Take one event at ``t`` (events come oldest first)."""
        kind = e.get("event")
        self._ensemble_wide(t, kind, e)
        if kind in SEEN_LISTS and isinstance(e.get("agents"), list):
            self._seen_list(t, kind, e["agents"])
            return
        name = e.get("agent")
        if not (isinstance(name, str) and name):
            return
        if kind == EventKind.INSTANCE_ENDED:
            self._instance_ended(name, t)
            return
        if kind not in SEEN:
            return
        known = self.tracks.get(name)
        if known is not None and known.absent_since is not None and kind in LAST_WORDS:
            return  # an ended instance's process ending is no downtime
        self._agent_event(self.track(name, t), t, kind, e)

    def _ensemble_wide(self, t: float, kind: object, e: dict[str, Any]) -> None:
        """Messages in flight, pull requests and the controller's stops and starts."""
        if kind in (EventKind.ENQUEUED, EventKind.RETRY) and e.get("id"):
            self.enqueued[str(e["id"])] = t
        elif kind in (EventKind.DEAD_LETTER, EventKind.DROPPED) and e.get("id"):
            self.enqueued.pop(str(e["id"]), None)
        elif kind == EventKind.PULL_REQUEST_OPENED and self.inside(t):
            self.prs += 1
        elif kind == EventKind.CONTROLLER_STOP and self.stopped_at is None:
            self.stopped_at = t
        elif kind == EventKind.CONTROLLER_START and self.stopped_at is not None:
            self.unwatched.append((self.stopped_at, t))
            self.stopped_at = None

    def _seen_list(self, t: float, kind: object, names: list[Any]) -> None:
        for n in names:
            if isinstance(n, str) and n:
                tr = self.track(n, t)
                if kind in RECREATED:
                    tr.come_up(t)
                    tr.stop_working(t)

    def _instance_ended(self, name: str, t: float) -> None:
        gone = self.tracks.get(name)
        if gone is not None and gone.absent_since is None:
            gone.come_up(t)
            gone.stop_working(t)
            gone.absent_since = t

    def _agent_event(self, tr: _Track, t: float, kind: object, e: dict[str, Any]) -> None:
        pid = _pid(e)
        self._life(tr, t, kind, e, pid)
        if kind in NEW_PROCESS and tr.down_since is not None:
            if pid is None or pid == tr.dead_pid:
                return  # the dead process's last word, written late
            tr.come_up(t)
        if pid is not None and kind in (*NEW_PROCESS, EventKind.RESTARTED):
            tr.last_pid = pid
        if kind == EventKind.STATE and tr.down_since is None:
            if e.get("state") in WORKING:
                if tr.working_since is None:
                    tr.working_since = t
            else:
                tr.stop_working(t)

    def _life(self, tr: _Track, t: float, kind: object, e: dict[str, Any], pid: int | None) -> None:
        """Deaths, restarts, give-ups and deliveries."""
        if kind in (EventKind.AGENT_DIED, EventKind.HUNG_RESTART):
            if tr.down_since is None:  # hung-restart names no pid: the one last seen is killed
                tr.down_since, tr.dead_pid = t, pid if pid is not None else tr.last_pid
            tr.stop_working(t)
        elif kind == EventKind.RESTARTED:
            took = tr.come_up(t)
            tr.stop_working(t)
            if self.inside(t):
                tr.restarts += 1
                self.reasons[reason_label(e.get("reason"))] += 1
                if took is not None:
                    tr.recoveries.append(took)
        elif kind == EventKind.GAVE_UP:
            if self.inside(t):
                tr.gave_up += 1
        elif kind == EventKind.DELIVERED and e.get("id"):
            sent = self.enqueued.pop(str(e["id"]), None)
            if sent is not None and self.inside(t):
                tr.deliveries.append(max(0.0, t - sent))

    def rows(self, agents: Sequence[str]) -> list[AgentKPI]:
        """Each agent's figures (those active in the window, and ``agents``), by name."""
        if self.stopped_at is not None:
            self.unwatched.append((self.stopped_at, self.until))
            self.stopped_at = None
        wanted = set(agents)
        rows = [self._row(name) for name in sorted(self.tracks) if self.tracks[name].active or name in wanted]
        return [r for r in rows if r is not None]

    def _row(self, name: str) -> AgentKPI | None:
        tr, since, until = self.tracks[name], self.since, self.until
        if tr.absent_since is not None:
            tr.absent.append((tr.absent_since, until))
        if tr.down_since is not None:
            tr.down.append((tr.down_since, until))
        if tr.working_since is not None:
            tr.working.append((tr.working_since, until))
        lo = max(since, tr.first)
        gaps = _union([*tr.absent, *self.unwatched])
        observed = max(0.0, until - lo - _overlap(gaps, lo, until))
        if observed <= 0:
            return None
        down = min(observed, _seen_part(tr.down, gaps, lo, until))
        working = min(observed, _seen_part(tr.working, gaps, lo, until))
        return AgentKPI(
            agent=name,
            observed=observed,
            up=observed - down,
            working=working,
            availability=(observed - down) / observed,
            utilization=working / observed,
            restarts=tr.restarts,
            gave_up=tr.gave_up,
            mttr=Spread.of(tr.recoveries),
            delivery=Spread.of(tr.deliveries),
        )


@dataclass
class _Outcomes:
    """The tasks that ended in the window, for :func:`compute`."""

    done_days: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    failed_days: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    done: dict[int, TaskChange] = field(default_factory=dict)
    """Task → its first change to ``done`` in the window."""
    failed: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, changes: Iterable[TaskChange], since: float, until: float) -> _Outcomes:
        out = cls()
        for c in changes:
            if not since <= c.time < until:
                continue
            if c.state == "done":
                out.done_days[_utc_day(c.time)].add(c.task)
                out.done.setdefault(c.task, c)
            elif c.state == "failed":
                out.failed_days[_utc_day(c.time)].add(c.task)
                out.failed.add(c.task)
        return out

    def days(self, since: float, until: float) -> tuple[DayCount, ...]:
        return tuple(
            DayCount(d, len(self.done_days.get(d, ())), len(self.failed_days.get(d, ()))) for d in _days(since, until)
        )


def compute(
    events: Iterable[dict[str, Any]],
    changes: Iterable[TaskChange],
    since: float,
    until: float,
    agents: Sequence[str] = (),
) -> Report:
    """The report of the window ``[since, until)``.

    Args:
        events: the event log's records (``{"time": RFC 3339, "event", ...}``), all of
            them from the start (the state of each agent at ``since`` comes from what
            happened before); records after ``until`` and those without a readable
            time are ignored. They need not be in order (writers in several processes).
        changes: the task store's history rows (any time; those outside the window
            are ignored).
        since, until: Unix seconds.
        agents: agents to report even when they did nothing in the window (the
            layout's); others are reported when an event inside the window names them.

    Raises:
        ValueError: ``until`` is not after ``since``.
    """
    if not until > since:
        raise ValueError(f"the window must end after it starts (since {since}, until {until})")
    timed = sorted(
        ((t, e) for e in events if isinstance(e, dict) and (t := _time(e)) is not None and t < until),
        key=lambda te: te[0],
    )
    replay = _Replay(since, until)
    for t, e in timed:
        replay.feed(t, e)
    rows = replay.rows(agents)
    tracks = replay.tracks
    total = sum(a.observed for a in rows)
    tasks = _Outcomes.of(changes, since, until)
    stories_done, to_deployed = _stories(timed, since)
    return Report(
        since=since,
        until=until,
        agents=tuple(rows),
        availability=sum(a.up for a in rows) / total if total > 0 else None,
        utilization=sum(a.working for a in rows) / total if total > 0 else None,
        restarts=tuple((r, replay.reasons.get(r, 0)) for r in REASONS),
        mttr=Spread.of([s for name in sorted(tracks) for s in tracks[name].recoveries]),
        delivery=Spread.of([s for name in sorted(tracks) for s in tracks[name].deliveries]),
        days=tasks.days(since, until),
        done=len(tasks.done),
        failed=len(tasks.failed),
        cycle_time=Spread.of([max(0.0, c.time - c.created) for c in tasks.done.values()]),
        issues_closed=tuple(sorted({c.ref for c in tasks.done.values() if c.source == "github"})),
        pull_requests_opened=replay.prs,
        stories_done=stories_done,
        story_to_deployed=Spread.of(to_deployed),
    )


def _stories(timed: Sequence[tuple[float, dict[str, Any]]], since: float) -> tuple[int, list[float]]:
    """Stories done in the window, and story → first deploy of those first deployed in
    it (``timed``: the events before ``until``, oldest first)."""
    done: set[Any] = set()
    first: dict[Any, tuple[float, float]] = {}
    for t, e in timed:
        kind, story = e.get("event"), e.get("story")
        if kind == EventKind.STORY_DONE and t >= since:
            done.add(story)
        elif kind == EventKind.STORY_DEPLOYED and story not in first and isinstance(e.get("seconds"), (int, float)):
            first[story] = (t, float(e["seconds"]))
    return len(done), [seconds for t, seconds in first.values() if t >= since]
