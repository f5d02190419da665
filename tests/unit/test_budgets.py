"""Budgets (issue 22): the layout's ``budget:`` keys, the pure policy (periods, 80 % and
100 %, raises, per task) on an injected clock, and the keeper that folds the event
log, parks and releases agents through their :class:`Parking`."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import write_layout

from miyabi.agents.usage import Usage
from miyabi.config.loader import load
from miyabi.config.settings import BudgetPer, BudgetSettings, ParkSettings
from miyabi.errors import LayoutError, MiyabiError
from miyabi.events import append_event, path_of, read_events
from miyabi.files import append_line
from miyabi.messaging.parking import Parking, ParkReason
from miyabi.messaging.usage import usage_fields
from miyabi.notify.rules import from_event
from miyabi.supervision.budgets import (
    BudgetKeeper,
    Ledger,
    Scope,
    Spend,
    day_end,
    day_of,
    due_warnings,
    over_budget,
    read_budget_state,
    standings,
)

NOON = datetime(2026, 12, 3, 12, 0).timestamp()
"""Local noon of a day (the period of a per-day budget is the local day)."""


def usage(agent: str, tokens: int, at: float, task: str | None = None, pool: str | None = None, cost: float = 0):
    e: dict[str, Any] = {
        "time": datetime.fromtimestamp(at).astimezone().isoformat(),
        "event": "usage",
        "agent": agent,
        "turn_input_tokens": tokens - tokens // 4,
        "turn_output_tokens": tokens // 4,
    }
    if cost:
        e["turn_cost_usd"] = cost
    if task:
        e["task"] = task
    if pool:
        e["pool"] = pool
    return e


# ---------------------------------------------------------------- the layout's keys


def test_budget_keys_load_at_the_top_per_agent_and_per_pool(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    lay = write_layout(
        tmp_path / "l.yaml",
        [{"name": "kaede", "budget": {"tokens": 1000}}, "sakura"],
        budget={"cost_usd": 5, "per": "day"},
        pools=[{"name": "coder", "repo": "repo", "budget": {"tokens": 500, "cost_usd": 0.5, "per": "task"}}],
    )
    layout = load(lay)
    assert layout.budget == BudgetSettings(cost_usd=5.0)
    assert layout.agent("kaede").budget == BudgetSettings(tokens=1000, per=BudgetPer.DAY)
    assert layout.agent("sakura").budget is None  # the top-level budget is the ensemble's, not each agent's
    assert layout.pools[0].budget == BudgetSettings(tokens=500, cost_usd=0.5, per=BudgetPer.TASK)


@pytest.mark.parametrize(
    ("budget", "key", "says"),
    [
        ({"per": "day"}, "budget", "needs tokens, cost_usd or both"),
        ({"tokens": 0}, "budget.tokens", "must be a whole number of tokens"),
        ({"tokens": 1.5}, "budget.tokens", "must be a whole number of tokens"),
        ({"cost_usd": -1}, "budget.cost_usd", "must be a number of US dollars above 0"),
        ({"cost_usd": "5"}, "budget.cost_usd", "must be a number of US dollars above 0"),
        ({"tokens": 10, "per": "week"}, "budget.per", "must be day (the local day) or task"),
        ({"tokens": 10, "every": "day"}, "budget.every", "unknown key 'every'"),
        ("lots", "budget", "must be a mapping"),
    ],
)
def test_a_bad_budget_is_one_line_naming_the_key(tmp_path: Path, budget: Any, key: str, says: str) -> None:
    for where, lay in (
        ("", write_layout(tmp_path / "top.yaml", ["kaede"], budget=budget)),
        ("agents[0].", write_layout(tmp_path / "agent.yaml", [{"name": "kaede", "budget": budget}])),
    ):
        with pytest.raises(LayoutError) as e:
            load(lay)
        (line,) = e.value.lines()
        assert f"{where}{key}" in line and says in line, line


def test_an_agent_named_layout_clashes_with_the_ensemble_s_budget(tmp_path: Path) -> None:
    with pytest.raises(LayoutError) as e:
        load(write_layout(tmp_path / "l.yaml", ["layout"], budget={"tokens": 10}))
    assert "budget: an agent or pool named layout" in e.value.lines()[0]


# ---------------------------------------------------------------- the policy


def test_the_day_turns_at_local_midnight() -> None:
    assert day_of(NOON) == "2026-12-03"
    assert day_end("2026-12-03") == datetime(2026, 12, 4, 0, 0).timestamp()
    assert day_of(day_end("2026-12-03") - 0.001) == "2026-12-03" and day_of(day_end("2026-12-03")) == "2026-12-04"


def fold(*events: dict[str, Any]) -> Ledger:
    ledger = Ledger()
    for e in events:
        ledger.add(e)
    return ledger


AGENTS = [("kaede", None), ("sakura", None), ("coder-7", "coder")]


def test_a_day_budget_warns_at_80_and_parks_every_agent_it_covers_at_100() -> None:
    scope = Scope("layout", "layout", BudgetSettings(tokens=1000))
    yesterday = NOON - 86400
    ledger = fold(usage("kaede", 5000, yesterday), usage("kaede", 500, NOON), usage("coder-7", 299, NOON, pool="coder"))
    (st,) = standings([scope], ledger, {}, AGENTS, {}, NOON)
    assert st.used.tokens == 799 and st.period == "2026-12-03" and st.until == day_end("2026-12-03")
    assert due_warnings([st], set()) == [] and over_budget([st]) == {}
    ledger.add(usage("sakura", 1, NOON))
    (st,) = standings([scope], ledger, {}, AGENTS, {}, NOON)
    assert due_warnings([st], set()) == [st] and due_warnings([st], {("layout", "2026-12-03")}) == []
    ledger.add(usage("sakura", 200, NOON))
    (st,) = standings([scope], ledger, {}, AGENTS, {}, NOON)
    assert set(over_budget([st])) == {"kaede", "sakura", "coder-7"}
    # the next day it starts again
    (st,) = standings([scope], ledger, {}, AGENTS, {}, NOON + 86400)
    assert st.used.tokens == 0 and over_budget([st]) == {}


def test_a_raise_adds_to_the_period_s_allowance_and_counts_dollars_alone() -> None:
    scope = Scope("kaede", "agent", BudgetSettings(tokens=100, cost_usd=1.0))
    ledger = fold(usage("kaede", 50, NOON, cost=1.2), usage("sakura", 500, NOON, cost=9))
    (st,) = standings([scope], ledger, {}, AGENTS, {}, NOON)
    assert st.unit == "usd" and st.share == pytest.approx(1.2) and set(over_budget([st])) == {"kaede"}
    raised = {("kaede", "2026-12-03"): Spend(0, 1.0)}
    (st,) = standings([scope], ledger, raised, AGENTS, {}, NOON)
    assert st.cost_usd == 2.0 and over_budget([st]) == {}
    assert "budget of agent kaede: $1.20 of $2.00 today" == st.describe()


def test_a_pool_budget_counts_its_instances_together() -> None:
    scope = Scope("coder", "pool", BudgetSettings(tokens=100))
    agents = [("kaede", None), ("coder-1", "coder"), ("coder-2", "coder")]
    ledger = fold(usage("coder-1", 60, NOON, pool="coder"), usage("coder-2", 40, NOON, pool="coder"))
    ledger.add(usage("kaede", 1000, NOON))
    (st,) = standings([scope], ledger, {}, agents, {}, NOON)
    assert st.used.tokens == 100 and set(over_budget([st])) == {"coder-1", "coder-2"}


def test_a_task_budget_parks_only_the_holder_of_the_task_that_spent_it() -> None:
    scope = Scope("kaede", "agent", BudgetSettings(tokens=100, per=BudgetPer.TASK))
    ledger = fold(usage("kaede", 120, NOON, task="4"), usage("kaede", 10, NOON, task="5"))
    held = {"kaede": {"4"}}
    (st,) = standings([scope], ledger, {}, AGENTS, held, NOON)
    assert st.period == "4" and st.until is None and set(over_budget([st])) == {"kaede"}
    (st,) = standings([scope], ledger, {}, AGENTS, {"kaede": {"5"}}, NOON)
    assert st.period == "5" and over_budget([st]) == {}  # it no longer holds task 4
    (st,) = standings([scope], ledger, {}, AGENTS, {}, NOON)
    assert st.period == "" and over_budget([st]) == {} and due_warnings([st], set()) == []


# ---------------------------------------------------------------- the keeper


def log(home: Path, e: dict[str, Any]) -> None:
    """Append a ``usage`` line to the home's event log, with its own time."""
    append_line(path_of(home), json.dumps(e))


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def keeper_for(home: Path, lay_path: Path, clock: Clock, held: dict[str, set[str]] | None = None):
    layout = load(lay_path)
    parks = {
        a.name: Parking(home, a.name, ParkSettings(), lambda ev, **f: append_event(home, ev, **f), clock=clock)
        for a in layout.agents
    }
    woken: list[str] = []
    keeper = BudgetKeeper(home, lambda: layout, lambda: parks, lambda: held or {}, woken.append, clock)
    return keeper, parks, woken


def test_the_keeper_warns_once_parks_and_releases_on_a_raise_or_a_new_day(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    lay = write_layout(tmp_path / "l.yaml", ["kaede", "sakura"], budget={"tokens": 1000})
    clock = Clock(NOON)
    keeper, parks, woken = keeper_for(home, lay, clock)
    log(home, usage("kaede", 850, NOON))
    keeper.tick()
    keeper.tick()
    warnings = [e for e in read_events(home) if e["event"] == "budget-warning"]
    assert len(warnings) == 1 and warnings[0]["scope"] == "layout" and warnings[0]["used"] == 850
    notice = from_event("k", warnings[0])
    assert notice is not None and notice.kind == "budget-warning" and "850 of 1000 tokens today" in notice.text
    assert parks["kaede"].current is None
    log(home, usage("sakura", 150, NOON))
    keeper.tick()
    for name in ("kaede", "sakura"):
        p = parks[name].current
        assert p is not None and p.reason == ParkReason.BUDGET and p.scope == "layout"
        assert p.until == day_end("2026-12-03")
    assert sorted(woken) == ["kaede", "sakura"]
    state = read_budget_state(home)
    (row,) = state["standings"]
    assert row["used_tokens"] == 1000 and row["share"] == 1.0 and row["parked"] == ["kaede", "sakura"]
    # a restarted controller keeps the warning given
    again, _, _ = keeper_for(home, lay, clock)
    again.tick()
    assert len([e for e in read_events(home) if e["event"] == "budget-warning"]) == 1

    with pytest.raises(MiyabiError, match="counts no dollars"):
        keeper.raise_budget("layout", None, 1.0)
    with pytest.raises(MiyabiError, match="no budget 'kaede'"):
        keeper.raise_budget("kaede", 10, None)
    said = keeper.raise_budget("layout", 500, None)
    assert "1000 of 1500 tokens today" in said
    assert parks["kaede"].current is None and parks["sakura"].current is None
    unparked = [e for e in read_events(home) if e["event"] == "agent-unparked"]
    assert [e["why"] for e in unparked] == ["raised", "raised"]
    # spent again, then midnight passes
    log(home, usage("kaede", 600, NOON))
    keeper.tick()
    assert parks["kaede"].current is not None
    clock.t = day_end("2026-12-03") + 1
    keeper.tick()
    assert parks["kaede"].current is None
    assert [e["why"] for e in read_events(home) if e["event"] == "agent-unparked"][-1] == "new period"


def test_a_task_park_ends_when_the_agent_no_longer_holds_the_task(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    lay = write_layout(tmp_path / "l.yaml", [{"name": "kaede", "budget": {"tokens": 100, "per": "task"}}])
    held = {"kaede": {"3"}}
    keeper, parks, _ = keeper_for(home, lay, Clock(NOON), held)
    with pytest.raises(MiyabiError, match="none of the agents of kaede holds a task"):
        BudgetKeeper(home, keeper.layout, keeper.parking, dict, clock=Clock(NOON)).raise_budget("kaede", 10, None)
    log(home, usage("kaede", 100, NOON, task="3"))
    keeper.tick()
    p = parks["kaede"].current
    assert p is not None and p.until is None and "on task 3" in p.detail
    held["kaede"] = {"4"}
    keeper.tick()
    assert parks["kaede"].current is None


def test_a_turn_s_cost_is_the_growth_of_the_process_total() -> None:
    f = usage_fields(Usage(10, 5, 0.25), Usage(30, 9, 0.75), 42, "7", "coder")
    assert f is not None and f["turn_cost_usd"] == 0.5 and f["pool"] == "coder" and f["task"] == "7"
    f = usage_fields(None, Usage(30, 9, 0.75), 42, None)
    assert f is not None and f["turn_cost_usd"] == 0.75 and "pool" not in f
    assert "turn_cost_usd" not in (usage_fields(None, Usage(3, 1, None), 42, None) or {})


def test_the_budget_file_is_json_with_rfc3339_times(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    lay = write_layout(tmp_path / "l.yaml", ["kaede"], budget={"tokens": 10})
    keeper, _, _ = keeper_for(home, lay, Clock(NOON))
    keeper.tick()
    data = json.loads((home / "run" / "budget.json").read_text())
    assert data["standings"][0]["until"].endswith("Z") and data["updated"].endswith("Z")


def test_metrics_and_status_show_use_against_the_budget(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from miyabi.cli.status import cells
    from miyabi.home import Home
    from miyabi.supervision.status import AgentState, AgentStatus
    from miyabi.web.metrics import MiyabiCollector

    home = tmp_path / "home"
    home.mkdir()
    lay = write_layout(tmp_path / "l.yaml", [{"name": "kaede", "budget": {"tokens": 1000, "cost_usd": 2}}])
    keeper, _, _ = keeper_for(home, lay, Clock(NOON))
    log(home, usage("kaede", 900, NOON, cost=0.5))
    keeper.tick()
    collector = MiyabiCollector(SimpleNamespace(home=Home(home)))
    got = {(m.name, tuple(sorted(s.labels.items()))): s.value for m in collector._budgets() for s in m.samples}
    assert got[("miyabi_budget_used", (("scope", "kaede"), ("unit", "tokens")))] == 900
    assert got[("miyabi_budget_limit", (("scope", "kaede"), ("unit", "usd")))] == 2.0
    (row,) = read_budget_state(home)["standings"]
    r = AgentStatus("kaede", "w", "%1", 1, "c", True, AgentState.READY, None, None, None, 1.0, None, None, None)
    assert cells(r)["tokens in/out"] == "-"
    shown = cells(AgentStatus(**{**r.to_json(), "budget": {"scope": "kaede", "share": row["share"]}}))
    assert shown["tokens in/out"] == "-, budget 90% of kaede's"
