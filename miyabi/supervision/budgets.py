"""Budgets (layout ``budget:``): what the agents may spend, in tokens and US dollars, per
local day or per task; the whole ensemble's (scope ``layout``), a pool's (all its
instances together) and an agent's own.

The spending comes from the event log's ``usage`` events (one a turn, written where an
agent CLI reports its use: :mod:`miyabi.messaging.usage`): their ``turn_input_tokens``
+ ``turn_output_tokens`` and ``turn_cost_usd``. The decisions are pure functions of
that use, the raises, the tasks the agents hold and the clock (:func:`standings`,
:func:`over_budget`, :func:`due_warnings`): at ``defaults.BUDGET_WARN`` (80 %) of a
limit a budget warns once per period (``budget-warning``); at 100 % every agent it
covers is parked (:class:`~miyabi.messaging.parking.Parking`, reason ``budget``; for
``per: task``, the agents that hold the task that spent it) until the period turns
(local midnight), the agent no longer holds that task, or ``miyabi budget raise``
adds to the period's allowance. :class:`BudgetKeeper` is the controller's part: it
folds the event log as it grows, parks and releases, and keeps ``run/budget.json``
(the raises, the warnings given, and the standings that ``miyabi status``, the
dashboard and ``/metrics`` show).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.config.model import Layout
from miyabi.config.settings import BudgetPer, BudgetSettings
from miyabi.errors import MiyabiError
from miyabi.events import EventKind, append_event, events_after, path_of
from miyabi.files import private_dir, write_atomic
from miyabi.messaging.parking import Parking, ParkReason
from miyabi.times import parse_rfc3339, rfc3339

log = logging.getLogger("miyabi.budgets")

LAYOUT = "layout"
"""The scope of the layout's top-level ``budget:`` (every agent's use together)."""


def budget_file(home_root: Path) -> Path:
    """Where the controller keeps the raises, the warnings given and the standings."""
    return home_root / "run" / "budget.json"


@dataclass(frozen=True)
class Spend:
    """Tokens (input + output) and US dollars used."""

    tokens: int = 0
    cost_usd: float = 0.0

    def plus(self, other: Spend) -> Spend:
        return Spend(self.tokens + other.tokens, round(self.cost_usd + other.cost_usd, 6))


@dataclass(frozen=True)
class Scope:
    """One budget and whom it covers.

    Attributes:
        name: ``layout``, a pool's name or an agent's.
        kind: ``layout``, ``pool`` or ``agent``.
        budget: its limits and period.
    """

    name: str
    kind: str
    budget: BudgetSettings

    def covers(self, agent: str, pool: str | None) -> bool:
        """Whether the use of ``agent`` (an instance of ``pool``, if any) counts here."""
        if self.kind == LAYOUT:
            return True
        return pool == self.name if self.kind == "pool" else agent == self.name


def scopes(layout: Layout) -> list[Scope]:
    """The layout's budgets: the ensemble's, then each pool's, then each agent's."""
    out = [Scope(LAYOUT, LAYOUT, layout.budget)] if layout.budget is not None else []
    out += [Scope(p.name, "pool", p.budget) for p in layout.pools if p.budget is not None]
    out += [Scope(a.name, "agent", a.budget) for a in layout.named if a.budget is not None]
    return out


def day_of(t: float) -> str:
    """The machine's local date at Unix time ``t`` (``2026-12-03``)."""
    return datetime.fromtimestamp(t).date().isoformat()


def day_end(day: str) -> float:
    """Unix time of the local midnight that ends ``day`` (a local date)."""
    nxt = date.fromisoformat(day) + timedelta(days=1)
    return datetime(nxt.year, nxt.month, nxt.day).timestamp()


@dataclass
class Ledger:
    """Token use and cost folded from ``usage`` events, by (agent, pool, local day,
    task). Not thread-safe: its owner locks.

    Attributes:
        spend: (agent, pool, day, task) → what that agent used then on that task.
        offset: bytes of the event log folded so far.
    """

    spend: dict[tuple[str, str | None, str, str | None], Spend] = field(default_factory=dict)
    offset: int = 0

    def add(self, e: Mapping[str, Any]) -> None:
        """Count one event (anything but a ``usage`` event with a time is ignored)."""
        if e.get("event") != EventKind.USAGE:
            return
        try:
            t = parse_rfc3339(str(e.get("time")))
            turn = Spend(
                int(e.get("turn_input_tokens") or 0) + int(e.get("turn_output_tokens") or 0),
                float(e.get("turn_cost_usd") or 0.0),
            )
        except (TypeError, ValueError):
            return
        pool = str(e["pool"]) if e.get("pool") else None
        task = str(e["task"]) if e.get("task") not in (None, "") else None
        key = (str(e.get("agent") or ""), pool, day_of(t), task)
        self.spend[key] = self.spend.get(key, Spend()).plus(turn)

    def read(self, path: Path) -> None:
        """Fold what the event log ``path`` gained since the last read (all of it again
        when it was replaced)."""
        while True:
            records, end, replaced = events_after(path, self.offset)
            if replaced:
                self.spend.clear()
            for _, _, e in records:
                self.add(e)
            if end == self.offset:
                return
            self.offset = end

    def used(self, scope: Scope, period: str) -> Spend:
        """What ``scope``'s agents used in ``period`` (a local date, or a task id)."""
        total = Spend()
        by_day = scope.budget.per == BudgetPer.DAY
        for (agent, pool, day, task), s in self.spend.items():
            if (day if by_day else task) == period and scope.covers(agent, pool):
                total = total.plus(s)
        return total


@dataclass(frozen=True)
class Standing:
    """A budget's use in one period.

    Attributes:
        scope: the budget.
        period: the local date (``per: day``) or the task's id (``per: task``); ""
            for a per-task budget none of whose agents holds a task.
        until: Unix time the period ends (local midnight); None for a task.
        used: what was used in the period.
        tokens, cost_usd: the period's allowance (the limit plus raises); None: that
            unit is not counted.
        agents: the agents it parks when spent: all it covers (a day), or those that
            hold the task (a task).
    """

    scope: Scope
    period: str
    until: float | None
    used: Spend
    tokens: int | None
    cost_usd: float | None
    agents: tuple[str, ...]

    @property
    def share(self) -> float:
        """The largest share of a limit used (1.0: spent)."""
        return max(self._shares().values(), default=0.0)

    @property
    def unit(self) -> str:
        """The unit nearest its limit: ``tokens`` or ``usd``."""
        shares = self._shares()
        return max(shares, key=lambda u: shares[u]) if shares else "tokens"

    def _shares(self) -> dict[str, float]:
        out = {}
        if self.tokens is not None:
            out["tokens"] = self.used.tokens / self.tokens
        if self.cost_usd is not None:
            out["usd"] = self.used.cost_usd / self.cost_usd
        return out

    def amounts(self) -> tuple[float, float]:
        """(used, limit) in :attr:`unit`."""
        if self.unit == "usd":
            return self.used.cost_usd, self.cost_usd or 0.0
        return float(self.used.tokens), float(self.tokens or 0)

    def describe(self) -> str:
        """The use against the limit in one phrase (``12000 of 10000 tokens today``)."""
        used, limit = self.amounts()
        amount = f"${used:.2f} of ${limit:.2f}" if self.unit == "usd" else f"{used:.0f} of {limit:.0f} tokens"
        per = "today" if self.scope.budget.per == BudgetPer.DAY else f"on task {self.period}"
        who = "the layout's budget" if self.scope.kind == LAYOUT else f"budget of {self.scope.kind} {self.scope.name}"
        return f"{who}: {amount} {per}"

    def to_json(self, parked: Iterable[str] = ()) -> dict[str, Any]:
        """The standing for ``--json``, ``run/budget.json`` and the dashboard (times RFC 3339)."""
        return {
            "scope": self.scope.name,
            "kind": self.scope.kind,
            "per": str(self.scope.budget.per),
            "period": self.period or None,
            "until": rfc3339(self.until) if self.until is not None else None,
            "used_tokens": self.used.tokens,
            "used_cost_usd": self.used.cost_usd,
            "limit_tokens": self.tokens,
            "limit_cost_usd": self.cost_usd,
            "share": round(self.share, 4),
            "unit": self.unit,
            "agents": list(self.agents),
            "parked": sorted(set(parked) & set(self.agents)),
        }


Raises = Mapping[tuple[str, str], Spend]
"""(scope, period) → what ``miyabi budget raise`` added to that period's allowance."""


def standing(
    scope: Scope, period: str, until: float | None, ledger: Ledger, raises: Raises, agents: Sequence[str]
) -> Standing:
    """``scope``'s use in ``period`` against its limit plus its raises there."""
    b, more = scope.budget, raises.get((scope.name, period), Spend())
    return Standing(
        scope,
        period,
        until,
        ledger.used(scope, period) if period else Spend(),
        b.tokens + more.tokens if b.tokens is not None else None,
        round(b.cost_usd + more.cost_usd, 6) if b.cost_usd is not None else None,
        tuple(agents),
    )


def standings(
    all_scopes: Sequence[Scope],
    ledger: Ledger,
    raises: Raises,
    agents: Sequence[tuple[str, str | None]],
    held: Mapping[str, Iterable[str]],
    now: float,
) -> list[Standing]:
    """Each budget's standing now (pure): a per-day budget's today, a per-task budget's
    on each task one of its agents holds (one empty standing when none holds one).

    Args:
        all_scopes: the budgets (:func:`scopes`).
        ledger: the use so far.
        raises: the raises given.
        agents: (name, pool) of each agent running now.
        held: agent → ids of the tasks it holds now.
        now: Unix time.
    """
    out = []
    for s in all_scopes:
        covered = [a for a, pool in agents if s.covers(a, pool)]
        if s.budget.per == BudgetPer.DAY:
            today = day_of(now)
            out.append(standing(s, today, day_end(today), ledger, raises, covered))
            continue
        tasks: dict[str, list[str]] = {}
        for a in covered:
            for t in sorted(held.get(a, ())):
                tasks.setdefault(str(t), []).append(a)
        if not tasks:
            out.append(standing(s, "", None, ledger, raises, ()))
        for t, holders in sorted(tasks.items()):
            out.append(standing(s, t, None, ledger, raises, holders))
    return out


def over_budget(all_standings: Iterable[Standing]) -> dict[str, Standing]:
    """Agent → the first spent budget that parks it (pure)."""
    out: dict[str, Standing] = {}
    for st in all_standings:
        if st.period and st.share >= 1.0:
            for a in st.agents:
                out.setdefault(a, st)
    return out


def due_warnings(all_standings: Iterable[Standing], warned: set[tuple[str, str]]) -> list[Standing]:
    """The standings at ``defaults.BUDGET_WARN`` or more not yet warned of in their
    period (``warned``: (scope, period) pairs already warned of)."""
    return [
        st
        for st in all_standings
        if st.period and st.share >= defaults.BUDGET_WARN and (st.scope.name, st.period) not in warned
    ]


def release_why(scope: str | None, until: float | None, raised: set[str], now: float) -> str:
    """Why a budget park ends (for ``agent-unparked``): its budget was raised, its
    day turned, its task ended, or the layout changed its budget."""
    if scope in raised:
        return "raised"
    if until is not None:
        return "new period" if now >= until else "budget changed"
    return "task ended or budget changed"


def read_budget_state(home_root: Path) -> dict[str, Any]:
    """``run/budget.json`` as the controller last wrote it (empty when there is none or
    it cannot be read): ``updated``, ``standings`` (each :meth:`Standing.to_json`),
    ``raises`` and ``warned``."""
    try:
        data = json.loads(budget_file(home_root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def agent_budgets(rows: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Agent → the standing (as :meth:`Standing.to_json`) nearest its limit among those
    that cover it, from ``rows`` (``run/budget.json``'s ``standings``)."""
    out: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        for a in r.get("agents") or ():
            if a not in out or float(r.get("share") or 0) > float(out[a].get("share") or 0):
                out[a] = r
    return out


def _raises_of(data: Mapping[str, Any]) -> dict[tuple[str, str], Spend]:
    out: dict[tuple[str, str], Spend] = {}
    for r in data.get("raises") or ():
        try:
            out[(str(r["scope"]), str(r["period"]))] = Spend(int(r.get("tokens") or 0), float(r.get("cost_usd") or 0))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def survey(
    home_root: Path, layout: Layout, held: Mapping[str, Iterable[str]], now: float | None = None
) -> list[Standing]:
    """The budgets' standings now, read afresh from the whole event log and the raises
    in ``run/budget.json`` (for ``miyabi budget``; the controller keeps its own fold)."""
    ledger = Ledger()
    ledger.read(path_of(home_root))
    raises = _raises_of(read_budget_state(home_root))
    agents = [(a.name, a.pool) for a in layout.agents]
    return standings(scopes(layout), ledger, raises, agents, held, time.time() if now is None else now)


class BudgetKeeper:
    """The controller's budget keeper: folds the event log's usage as it grows, warns,
    parks and releases agents (see the module's docstring), and keeps ``run/budget.json``.
    Thread-safe: its thread ticks, the main loop serves raises.

    Args:
        home_root: the miyabi home.
        layout: the running layout (called at each tick: a reload counts).
        parking: agent → its :class:`~miyabi.messaging.parking.Parking` (its deliverer's).
        held: agent → the ids of the tasks it holds now (the task store).
        wake: called with an agent's name after its park began or ended (its
            deliverer looks at once).
        clock: Unix time.
    """

    def __init__(
        self,
        home_root: Path,
        layout: Callable[[], Layout],
        parking: Callable[[], Mapping[str, Parking]],
        held: Callable[[], Mapping[str, Iterable[str]]],
        wake: Callable[[str], None] = lambda name: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.home_root = home_root
        self.layout = layout
        self.parking = parking
        self.held = held
        self.wake = wake
        self.clock = clock
        self.lock = threading.Lock()
        self.ledger = Ledger()
        state = read_budget_state(home_root)
        self.raises = _raises_of(state)
        self.warned: set[tuple[str, str]] = {
            (str(w[0]), str(w[1])) for w in state.get("warned") or () if isinstance(w, list) and len(w) == 2
        }
        self._raised: set[str] = set()
        """Scopes raised since the last tick (their parks end as ``raised``)."""
        self._saved: str | None = None

    def _standings(self, now: float) -> list[Standing]:
        layout = self.layout()
        self.ledger.read(path_of(self.home_root))
        agents = [(a.name, a.pool) for a in layout.agents]
        held = self.held() if any(s.budget.per == BudgetPer.TASK for s in scopes(layout)) else {}
        return standings(scopes(layout), self.ledger, self.raises, agents, held, now)

    def tick(self) -> list[Standing]:
        """Fold the new usage, warn of budgets at 80 %, park the agents of spent ones,
        release those whose budget allows again, and save ``run/budget.json``.
        Returns the standings.

        Raises:
            OSError: the event log or ``run/`` cannot be read or written.
        """
        with self.lock:
            now = self.clock()
            current = self._standings(now)
            for st in due_warnings(current, self.warned):
                self.warned.add((st.scope.name, st.period))
                used, limit = st.amounts()
                whole = st.unit == "tokens"
                append_event(
                    self.home_root,
                    EventKind.BUDGET_WARNING,
                    scope=st.scope.name,
                    used=int(used) if whole else round(used, 6),
                    limit=int(limit) if whole else round(limit, 6),
                    unit=st.unit,
                    per=str(st.scope.budget.per),
                    period=st.period,
                )
            over = over_budget(current)
            parked = []
            for name, p in self.parking().items():
                spent = over.get(name)
                park = p.current
                if spent is not None:
                    if park is None or park.reason != ParkReason.BUDGET:
                        p.park_budget(spent.describe(), spent.until, spent.scope.name)
                        self.wake(name)
                    parked.append(name)
                elif park is not None and park.reason == ParkReason.BUDGET:
                    p.release(ParkReason.BUDGET, release_why(park.scope, park.until, self._raised, now))
                    self.wake(name)
            self._raised.clear()
            self._save(current, parked, now)
            return current

    def _save(self, current: list[Standing], parked: list[str], now: float) -> None:
        today = day_of(now)

        def live(period: str) -> bool:  # drop the raises and warnings of past days
            return not (len(period) == 10 and period[4] == "-" and period < today)

        data = {
            "standings": [st.to_json(parked) for st in current],
            "raises": [
                {"scope": s, "period": p, "tokens": r.tokens, "cost_usd": r.cost_usd}
                for (s, p), r in sorted(self.raises.items())
                if live(p)
            ],
            "warned": [[s, p] for s, p in sorted(self.warned) if live(p)],
        }
        text = json.dumps(data, sort_keys=True)
        if text != self._saved:  # the same standings: no write (and no new `updated`)
            private_dir(budget_file(self.home_root).parent)
            write_atomic(budget_file(self.home_root), json.dumps({**data, "updated": rfc3339(now)}))
            self._saved = text

    def raise_budget(self, scope: str, tokens: int | None, cost_usd: float | None) -> str:
        """Add ``tokens`` and/or ``cost_usd`` to ``scope``'s allowance in its current
        period (today; for ``per: task``, each task its agents hold now); the next tick
        releases the agents it parked if it now allows. Returns what it did, in one line.

        Raises:
            MiyabiError: no budget has that scope, it counts no such unit, nothing to
                add, or (per task) none of its agents holds a task.
        """
        with self.lock:
            known = {s.name: s for s in scopes(self.layout())}
            s = known.get(scope)
            if s is None:
                names = ", ".join(sorted(known)) or "none: the layout has no budget"
                raise MiyabiError(f"no budget {scope!r} (budgets: {names}); name an agent, a pool or layout")
            check_raise(s.budget, scope, tokens, cost_usd)
            now = self.clock()
            periods = [st.period for st in self._standings(now) if st.scope.name == scope and st.period]
            if not periods:
                raise MiyabiError(f"none of the agents of {scope} holds a task: a per-task budget is raised for one")
            more = Spend(tokens or 0, cost_usd or 0.0)
            for period in periods:
                self.raises = {**self.raises, (scope, period): self.raises.get((scope, period), Spend()).plus(more)}
            self._raised.add(scope)
            after = [st for st in self._standings(now) if st.scope.name == scope and st.period]
        self.tick()
        return "; ".join(f"raised {st.describe()}" for st in after)

    def run(self, stop: threading.Event, every: float = defaults.BUDGET_TICK) -> None:
        """Tick every ``every`` seconds until ``stop`` is set; an error is logged and
        the next tick tries again."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception as e:
                log.warning("budgets: %s: %s", type(e).__name__, e, exc_info=True)
            stop.wait(every)


def check_raise(budget: BudgetSettings, scope: str, tokens: int | None, cost_usd: float | None) -> None:
    """That a raise of ``scope``'s ``budget`` adds something it counts.

    Raises:
        MiyabiError: it adds nothing, or a unit the budget does not count.
    """
    if not tokens and not cost_usd:
        raise MiyabiError("give --tokens N, --cost-usd X or both: how much to add to the budget")
    if tokens and budget.tokens is None:
        raise MiyabiError(f"the budget of {scope} counts no tokens (only cost_usd); raise it with --cost-usd")
    if cost_usd and budget.cost_usd is None:
        raise MiyabiError(f"the budget of {scope} counts no dollars (only tokens); raise it with --tokens")
