"""``/metrics``: the ensemble in Prometheus's text format, with the official client
library (``prometheus_client``), read at each scrape.

Names follow Prometheus's conventions (``miyabi_<noun>_<unit>``, ``_total`` for
counters, seconds for durations); labels are small fixed sets (agent, state, reason: the report's labels,
:func:`miyabi.reports.kpis.reason_label`),
never message text. What happened over time (restarts, kill → running, delivery
latency, Enter presses) is folded from ``logs/events.jsonl``, read incrementally from
where the previous scrape stopped; what is true now (states, inboxes, tasks) is read
from the ensemble, the inboxes and the task store.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from miyabi.errors import MiyabiError
from miyabi.events import EventKind, events_after, path_of
from miyabi.messaging.mailbox import MessageState, inbox
from miyabi.reports.kpis import reason_label
from miyabi.supervision.budgets import read_budget_state
from miyabi.supervision.status import AgentState
from miyabi.times import parse_rfc3339
from miyabi.work.model import TaskState

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Histogram buckets (seconds) of kill → running and delivery latency."""

PENDING_CAP = 100_000
"""Messages whose delivery is awaited that the fold remembers at most (the oldest go first)."""

CYCLE_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0, 259200.0)
"""Histogram buckets (seconds) of a task's cycle time (added → done)."""


@dataclass
class Histogram:
    """Observations counted into fixed buckets (``le``, cumulative on export)."""

    buckets: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
                break
        self.total += value
        self.n += 1

    def export(self) -> list[tuple[str, float]]:
        out = []
        acc = 0
        counts = self.counts or [0] * len(self.buckets)
        for b, c in zip(self.buckets, counts, strict=True):
            acc += c
            out.append((repr(float(b)), float(acc)))
        out.append(("+Inf", float(self.n)))
        return out


@dataclass
class EventFold:
    """What the event log says so far, kept up to date by :meth:`read`.

    Attributes:
        restarts: (agent, reason) → restarts the watchdog made.
        recovery: kill → running latency per agent (``agent-died`` → ``restarted``).
        delivery: enqueued → delivered latency per agent.
        enters: agent → extra Enter presses delivery needed (``enter-again``).
        dead_letters: agent → messages that became dead letters.
    """

    restarts: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    recovery: dict[str, Histogram] = field(default_factory=dict)
    delivery: dict[str, Histogram] = field(default_factory=dict)
    enters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_letters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    offset: int = 0
    _died: dict[str, float] = field(default_factory=dict)
    _enqueued: dict[str, float] = field(default_factory=dict)

    def read(self, path: Path) -> None:
        """Fold the complete lines written to ``path`` since the last call (from the
        start again if the file was replaced by a shorter one)."""
        while True:
            records, end, replaced = events_after(path, self.offset)
            if replaced:
                self.__init__()  # type: ignore[misc]
            for _, _, e in records:
                self.fold(e)
            if end == self.offset:
                return
            self.offset = end

    def fold(self, e: dict[str, Any]) -> None:
        """Take one event into account."""
        kind, agent = e.get("event"), str(e.get("agent") or "")
        try:
            t = parse_rfc3339(str(e.get("time")))
        except (ValueError, TypeError):
            return
        if kind == EventKind.AGENT_DIED:
            self._died[agent] = t
        elif kind == EventKind.RESTARTED:
            self.restarts[(agent, reason_label(e.get("reason")))] += 1
            died = self._died.pop(agent, None)
            if died is not None and t >= died:
                self.recovery.setdefault(agent, Histogram(LATENCY_BUCKETS)).observe(t - died)
        elif kind == EventKind.ENQUEUED and e.get("id"):
            if len(self._enqueued) >= PENDING_CAP:  # messages whose end was never logged: forget the oldest
                self._enqueued.pop(next(iter(self._enqueued)))
            self._enqueued[str(e["id"])] = t
        elif kind == EventKind.DELIVERED and e.get("id"):
            sent = self._enqueued.pop(str(e["id"]), None)
            if sent is not None and t >= sent:
                self.delivery.setdefault(agent, Histogram(LATENCY_BUCKETS)).observe(t - sent)
        elif kind == EventKind.ENTER_AGAIN:
            self.enters[agent] += 1
        elif kind == EventKind.DEAD_LETTER:
            self.dead_letters[agent] += 1
            self._enqueued.pop(str(e.get("id")), None)
        elif kind in (EventKind.DROPPED,):
            self._enqueued.pop(str(e.get("id")), None)


class MiyabiCollector(Collector):
    """Collects the metrics of one dashboard's site at each scrape.

    Args:
        site: the dashboard's :class:`~miyabi.web.site.Site`.
    """

    def __init__(self, site: Any) -> None:
        self.site = site
        self.fold = EventFold()
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        site = self.site
        with self._lock:
            self.fold.read(path_of(site.home.root))
            yield from self._agents()
            yield from self._events()
            yield from self._inboxes()
            yield from self._tasks()
            yield from self._budgets()

    def _agents(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("miyabi_agent_up", "1 while the agent's program runs.", labels=["agent"])
        state = GaugeMetricFamily("miyabi_agent_state", "1 for the state the agent is in.", labels=["agent", "state"])
        ctl = GaugeMetricFamily("miyabi_controller_up", "1 while the controller runs.")
        try:
            view = self.site.view()
        except MiyabiError:
            ctl.add_metric([], 0.0)
            return [ctl]
        ctl.add_metric([], 1.0 if view.controller.get("running") else 0.0)
        for r in view.agents:
            up.add_metric([r.name], 1.0 if r.alive else 0.0)
            for s in AgentState:
                state.add_metric([r.name, s.value], 1.0 if r.state == s else 0.0)
        return [ctl, up, state]

    def _events(self) -> Iterable[Metric]:
        f = self.fold
        restarts = CounterMetricFamily(
            "miyabi_agent_restarts", "Restarts the watchdog made, by reason.", labels=["agent", "reason"]
        )
        for (agent, reason), n in sorted(f.restarts.items()):
            restarts.add_metric([agent, reason], float(n))
        recovery = HistogramMetricFamily(
            "miyabi_recovery_seconds",
            "Seconds from an agent's death seen to its new process running.",
            labels=["agent"],
        )
        for agent, h in sorted(f.recovery.items()):
            recovery.add_metric([agent], h.export(), h.total)
        delivery = HistogramMetricFamily(
            "miyabi_delivery_latency_seconds", "Seconds from a message enqueued to delivered.", labels=["agent"]
        )
        for agent, h in sorted(f.delivery.items()):
            delivery.add_metric([agent], h.export(), h.total)
        enters = CounterMetricFamily(
            "miyabi_delivery_enter_retries", "Extra Enter presses delivery needed.", labels=["agent"]
        )
        for agent, n in sorted(f.enters.items()):
            enters.add_metric([agent], float(n))
        dead = CounterMetricFamily("miyabi_dead_letters", "Messages that became dead letters.", labels=["agent"])
        for agent, n in sorted(f.dead_letters.items()):
            dead.add_metric([agent], float(n))
        return [restarts, recovery, delivery, enters, dead]

    def _inboxes(self) -> Iterable[Metric]:
        g = GaugeMetricFamily(
            "miyabi_messages", "Messages in the inboxes, by state (failed: dead letters).", labels=["agent", "state"]
        )
        root = self.site.home.root
        for a in self.site.agents():
            box = inbox(root, a.name)
            for s in (MessageState.PENDING, MessageState.FAILED):
                try:
                    n = sum(1 for _ in box.dir(s).iterdir())
                except FileNotFoundError:
                    n = 0
                g.add_metric([a.name, s.value], float(n))
        return [g]

    def _tasks(self) -> Iterable[Metric]:
        store = self.site.store
        by_state = GaugeMetricFamily("miyabi_tasks", "Tasks, by state.", labels=["state"])
        rows = store.rows("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state")
        counts = {r["state"]: r["n"] for r in rows}
        for s in TaskState:
            by_state.add_metric([s.value], float(counts.get(s.value, 0)))
        cycle = Histogram(CYCLE_BUCKETS)
        for r in store.rows("SELECT created, updated FROM tasks WHERE state = ?", (TaskState.DONE.value,)):
            cycle.observe(max(0.0, float(r["updated"]) - float(r["created"])))
        h = HistogramMetricFamily("miyabi_task_cycle_seconds", "Seconds from a task added to done.")
        h.add_metric([], cycle.export(), cycle.total)
        out: list[Metric] = [by_state, h]
        out += self._github()
        return out

    def _budgets(self) -> list[Metric]:
        """Each budget's use and limit in its current period, as the controller last saw
        them (``run/budget.json``; a per-task budget: the task nearest its limit)."""
        used = GaugeMetricFamily(
            "miyabi_budget_used", "Use in the budget's current period (tokens, or usd).", labels=["scope", "unit"]
        )
        limit = GaugeMetricFamily(
            "miyabi_budget_limit",
            "The budget's allowance in its current period, raises included (tokens, or usd).",
            labels=["scope", "unit"],
        )
        nearest: dict[str, dict[str, Any]] = {}
        for r in read_budget_state(self.site.home.root).get("standings") or ():
            scope = str(r.get("scope"))
            if scope not in nearest or float(r.get("share") or 0) > float(nearest[scope].get("share") or 0):
                nearest[scope] = r
        for scope, r in sorted(nearest.items()):
            for unit, u, lim in (("tokens", "used_tokens", "limit_tokens"), ("usd", "used_cost_usd", "limit_cost_usd")):
                if r.get(lim) is not None:
                    used.add_metric([scope, unit], float(r.get(u) or 0))
                    limit.add_metric([scope, unit], float(r[lim]))
        return [used, limit]

    def _github(self) -> list[Metric]:
        """GitHub requests and the rate limit left, as the controller last saved them."""
        path = self.site.home.run / "github-stats.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        reqs = CounterMetricFamily(
            "miyabi_github_requests", "Requests made to GitHub's API, by status.", labels=["status"]
        )
        for status, n in sorted((data.get("statuses") or {}).items()):
            reqs.add_metric([str(status)], float(n))
        out: list[Metric] = [reqs]
        if isinstance(data.get("rate_remaining"), (int, float)):
            left = GaugeMetricFamily(
                "miyabi_github_rate_limit_remaining", "Requests GitHub said are left in the rate-limit window."
            )
            left.add_metric([], float(data["rate_remaining"]))
            out.append(left)
        return out
