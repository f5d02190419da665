"""``miyabi status``: one row per agent, from tmux, the process table and the
watchdog's state.

CPU and memory figures cover each pane's whole process tree (the agent and every
descendant), read from ``/proc`` in one pass. CPU % is the controller's last measure
(it records one every ``defaults.CPU_RECORD`` seconds), so ``status`` waits for no
sample of its own; without a controller it is the tree's use over the process's life,
as ps(1) shows it. "Last output" is the age of the agent's pane log,
which tmux's ``pipe-pane`` appends to as the pane prints. The command shown is the
one the layout gives the agent (what the pane runs, ``python`` or ``env`` included,
says little).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from miyabi import defaults
from miyabi.agents.screen import approval_question, is_busy, looks_ready
from miyabi.config.model import Agent
from miyabi.errors import TmuxError
from miyabi.files import write_atomic
from miyabi.home import Home
from miyabi.messaging.activity import Seen, read_seen
from miyabi.messaging.parking import read_parked
from miyabi.supervision.budgets import agent_budgets, read_budget_state
from miyabi.supervision.processes import CLOCK_TICKS, PAGE_SIZE, ProcStat, process_table, started_at
from miyabi.supervision.saved import load_records
from miyabi.times import rfc3339
from miyabi.tmux.panes import Pane, Runner, list_panes


class AgentState(StrEnum):
    """An agent's state as ``miyabi status`` shows it."""

    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    WAITING_APPROVAL = "waiting-approval"
    """Asking for permission (``miyabi approve`` / ``deny`` answer it); never hung."""
    HUMAN = "human"
    """A person is typing in its pane: miyabi holds its messages until they have been
    idle for ``human_hold`` and its input box is empty; never hung."""
    PARKED = "parked"
    """Its provider refuses it (a usage limit) or its budget is spent: miyabi holds
    its messages until it may go on (``parked_until``); never hung."""
    HUNG = "hung"
    BACKOFF = "backoff"
    """Dead, waiting out its backoff before the watchdog restarts it."""
    FAILED = "failed"
    """The watchdog gave up on it (crash loop) until ``miyabi restart``."""
    DEAD = "dead"
    MISSING = "missing"
    """It has no pane: ``miyabi up`` creates one."""
    ALIVE = "alive"
    """Running, and miyabi has no profile to read its screen by."""


@dataclass(frozen=True)
class TreeStats:
    """Resource use of one process and its descendants.

    Attributes:
        cpu_percent: CPU use, in percent of one core (can exceed 100): over the window
            :func:`tree_stats` was asked for, else over the root process's life.
        rss: resident memory, in bytes, summed over the tree.
        processes: how many processes the tree has.
        started: the root process's start time (Unix seconds).
        cpu_seconds: CPU time the tree's live processes used so far, in seconds.
    """

    cpu_percent: float
    rss: int
    processes: int
    started: float
    cpu_seconds: float = 0.0


def tree_stats(pids: Sequence[int], interval: float = 0.0, cache: dict[int, Any] | None = None) -> dict[int, TreeStats]:
    """Each root pid's process tree, read from ``/proc`` in one pass over the process
    table (twice, ``interval`` seconds apart, with ``interval``). Pids that do not exist
    (or are zombies) are left out.

    CPU % is measured over ``interval`` when one is given; else, with ``cache`` (kept
    by the caller between calls: root pid → its last figures), since the previous call
    that saw the same process; else (and for a process seen for the first time) over
    the process's life, as ps(1) shows it. The cache is pruned to this call's pids.
    """
    table = process_table()
    now = time.monotonic()
    before: dict[int, tuple[ProcStat, list[ProcStat]] | None] = {}
    if interval > 0 and pids:
        kids = _children(table)
        before = {pid: _tree(pid, table, kids) for pid in pids}
        time.sleep(interval)
        table = process_table()
        now = time.monotonic()
    kids = _children(table)
    out: dict[int, TreeStats] = {}
    seen: dict[int, Any] = {}
    for pid in pids:
        tree = _tree(pid, table, kids)
        if tree is None:
            continue
        root, members = tree
        ticks = sum(m.cpu_ticks for m in members)
        started = started_at(root)
        previous = cache.get(pid) if cache is not None else None
        if interval > 0 and (was := before.get(pid)) is not None and was[0].start_ticks == root.start_ticks:
            cpu = (ticks - sum(m.cpu_ticks for m in was[1])) / CLOCK_TICKS / interval
        elif previous is not None and previous[0] == root.start_ticks and now > previous[2]:
            cpu = (ticks - previous[1]) / CLOCK_TICKS / (now - previous[2])
        else:
            cpu = ticks / CLOCK_TICKS / max(time.time() - started, 1e-3)
        seen[pid] = (root.start_ticks, ticks, now)
        out[pid] = TreeStats(
            cpu_percent=round(max(0.0, cpu) * 100, 1),
            rss=sum(m.rss_pages for m in members) * PAGE_SIZE,
            processes=len(members),
            started=started,
            cpu_seconds=ticks / CLOCK_TICKS,
        )
    if cache is not None:
        cache.clear()
        cache.update(seen)
    return out


def _children(table: Mapping[int, ProcStat]) -> dict[int, list[int]]:
    """Parent pid → its children's pids."""
    kids: dict[int, list[int]] = {}
    for pid, st in table.items():
        kids.setdefault(st.ppid, []).append(pid)
    return kids


def _tree(
    pid: int, table: Mapping[int, ProcStat], kids: Mapping[int, list[int]]
) -> tuple[ProcStat, list[ProcStat]] | None:
    """(the root, every live process of its tree) of ``pid`` in ``table``; None when it
    is not there or is a zombie."""
    root = table.get(pid) if pid > 0 else None
    if root is None or root.state in ("Z", "X"):
        return None
    members = [root]
    todo = list(kids.get(pid, ()))
    while todo:
        child = todo.pop()
        member = table.get(child)
        if member is not None and member.state not in ("Z", "X"):
            members.append(member)
            todo += kids.get(child, ())
    return root, members


CPU_FILE = "cpu.json"
"""Under ``run/``: each agent's CPU use as the controller last measured it (see :func:`record_cpu`)."""


def record_cpu(
    home: Home, pids: Mapping[str, int], cache: dict[int, Any], clock: Callable[[], float] = time.time
) -> None:
    """Measure each agent's process tree (agent → its pane's pid) since the previous
    call with the same ``cache``, and record it in ``run/cpu.json`` (``time``, and per
    agent its ``pid`` and ``cpu_percent``), where ``miyabi status`` reads it instead of
    sampling for a while itself. The controller calls this every
    ``defaults.CPU_RECORD`` seconds.

    Raises:
        OSError: the file cannot be written (the home was removed).
    """
    stats = tree_stats(list(pids.values()), cache=cache)
    agents = {n: {"pid": pid, "cpu_percent": stats[pid].cpu_percent} for n, pid in pids.items() if pid in stats}
    write_atomic(home.run / CPU_FILE, json.dumps({"time": clock(), "agents": agents}))


def recorded_cpu(home: Home, now: float) -> dict[str, tuple[int, float]]:
    """Agent → (pid, CPU %) as :func:`record_cpu` last recorded them, when that was at
    most ``defaults.CPU_RECORD_STALE`` seconds before ``now``; else {}."""
    try:
        data = json.loads((home.run / CPU_FILE).read_text(encoding="utf-8"))
        if not 0 <= now - float(data["time"]) <= defaults.CPU_RECORD_STALE:
            return {}
        return {str(n): (int(v["pid"]), float(v["cpu_percent"])) for n, v in data["agents"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


@dataclass(frozen=True)
class AgentStatus:
    """One row of ``miyabi status``.

    Attributes:
        name: agent name.
        window: ``index:name`` of its window ("" when it has no pane).
        pane_id: tmux pane id (``%3``), "" when it has no pane.
        pid: pid of the agent's program (0 when none).
        command: the agent's command as the layout gives it (else the pane's
            foreground program, when no layout names the agent).
        alive: True while the program runs.
        state: see :class:`AgentState`.
        exit: how a dead agent ended (``exit status 1``, ``killed by signal 9``), else None.
        exit_status: its exit status, if it exited.
        exit_signal: the signal that ended it, if one did.
        uptime: seconds since the program started (None if not running).
        cpu_percent: CPU use of its process tree, percent of one core.
        rss: resident memory of its process tree, bytes.
        last_output: seconds since the pane last printed (None if it never did).
        restarts_last_hour: restarts the watchdog made in the last hour.
        last_reason: why it last died or was restarted, if it was.
        question: the permission question, while ``waiting-approval``.
        via: who told the state: ``hook`` (the agent itself) or ``screen``.
        input_tokens: tokens its process sent to the model, where its CLI tells (else None).
        output_tokens: tokens the model answered it, where its CLI tells.
        cost_usd: the session cost its CLI reported, in US dollars (else None).
        pool: for a pool's instance, its pool (None: a named agent).
        task: for a pool's instance, the task it was started for.
        parked_reason: while ``parked``: ``limit`` or ``budget``.
        parked_since: while ``parked``: when the park began (RFC 3339).
        parked_until: while ``parked``: when it may go on (the limit's reset, else
            when miyabi tells it to go on; RFC 3339), None when its budget must be raised.
        budget: the budget that covers it nearest its limit, as the controller last
            saw it (``scope``, ``per``, ``period``, ``share``, ``unit``, ``used_tokens``,
            ``limit_tokens``, ``used_cost_usd``, ``limit_cost_usd``); None: none covers it.
    """

    name: str
    window: str
    pane_id: str
    pid: int
    command: str
    alive: bool
    state: AgentState
    exit: str | None
    exit_status: int | None
    exit_signal: int | None
    uptime: float | None
    cpu_percent: float | None
    rss: int | None
    last_output: float | None
    restarts_last_hour: int = 0
    last_reason: str | None = None
    question: str | None = None
    via: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    pool: str | None = None
    task: int | None = None
    parked_reason: str | None = None
    parked_since: str | None = None
    parked_until: str | None = None
    budget: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


BUDGET_FIELDS = (
    "scope",
    "per",
    "period",
    "share",
    "unit",
    "used_tokens",
    "limit_tokens",
    "used_cost_usd",
    "limit_cost_usd",
)
"""What a status row tells of the budget that covers its agent."""


def _budget(standing: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return {k: standing.get(k) for k in BUDGET_FIELDS} if standing is not None else None


def collect(
    tmux: Runner,
    session: str,
    home: Home,
    agents: Sequence[Agent] = (),
    clock: Callable[[], float] = time.time,
    interval: float = 0.0,
    recorded: bool = True,
    cpu_cache: dict[int, Any] | None = None,
    panes: Sequence[Pane] | None = None,
) -> list[AgentStatus]:
    """Status of every agent pane in ``session``, plus a ``missing`` row for each of
    ``agents`` (the layout's) that has no pane. Rows come in layout order, then the
    rest. With ``recorded`` (the controller runs), an agent's state is the one the
    controller recorded for its process, and its CPU % the controller's last
    measure (``run/cpu.json``) unless ``interval`` or ``cpu_cache`` ask for another
    (see :func:`tree_stats`); else its state is read off the screen now. ``panes``:
    the session's panes, when the caller listed them already.

    Raises:
        TmuxError: the session cannot be listed.
    """
    by_name: Mapping[str, Agent] = {a.name: a for a in agents}
    expected = [a.name for a in agents]
    panes = [p for p in (list_panes(tmux, session) if panes is None else panes) if p.agent]
    stats = tree_stats([p.pid for p in panes if not p.dead], interval, cpu_cache)
    now = clock()
    measured = recorded_cpu(home, now) if recorded and cpu_cache is None and interval <= 0 else {}
    rows: dict[str, AgentStatus] = {}
    for p in panes:
        if p.agent in rows:
            continue
        row = _row(p, stats.get(p.pid), home, now, by_name.get(p.agent))
        if row.alive and row.cpu_percent is not None and measured.get(p.agent, (0, 0.0))[0] == p.pid:
            row = replace(row, cpu_percent=measured[p.agent][1])
        rows[p.agent] = row
    order = [n for n in expected if n in rows] + [n for n in rows if n not in expected]
    watch = load_records(home)
    budgets = agent_budgets(read_budget_state(home.root).get("standings") or ()) if recorded else {}
    out = []
    for n in order:
        row = rows[n]
        rec = watch.get(n, {})
        hist = rec.get("history", {})
        seen = read_seen(home.root, n) if recorded and by_name.get(n) is not None else None
        seen = seen if seen is not None and seen.pid == row.pid and row.alive else None
        state, via, question = _state(row, rec, now, by_name.get(n), tmux, seen)
        parked = read_parked(home.root, n) if state is AgentState.PARKED else None
        until = (parked.until or parked.probe_at) if parked is not None else None
        out.append(
            replace(
                row,
                parked_reason=parked.reason if parked else None,
                parked_since=rfc3339(parked.since) if parked else None,
                parked_until=rfc3339(until) if until else None,
                state=state,
                via=via,
                question=question,
                input_tokens=seen.input_tokens if seen else None,
                output_tokens=seen.output_tokens if seen else None,
                cost_usd=seen.cost_usd if seen else None,
                pool=_pool(by_name.get(n)),
                task=_task(by_name.get(n)),
                restarts_last_hour=sum(1 for t in hist.get("restarts", []) if now - t <= 3600),
                last_reason=hist.get("last_reason"),
                budget=_budget(budgets.get(n)),
            )
        )
    for n in expected:
        if n not in rows:
            out.append(
                AgentStatus(
                    name=n,
                    window="",
                    pane_id="",
                    pid=0,
                    command=by_name[n].command,
                    alive=False,
                    state=AgentState.MISSING,
                    exit=None,
                    exit_status=None,
                    exit_signal=None,
                    uptime=None,
                    cpu_percent=None,
                    rss=None,
                    last_output=_age(home, n, now),
                    pool=by_name[n].pool,
                    task=by_name[n].task,
                )
            )
    return out


def _pool(agent: Agent | None) -> str | None:
    return agent.pool if agent is not None else None


def _task(agent: Agent | None) -> int | None:
    return agent.task if agent is not None else None


def _state(
    row: AgentStatus, rec: dict[str, Any], now: float, agent: Agent | None, tmux: Runner, seen: Seen | None
) -> tuple[AgentState, str | None, str | None]:
    """(state, who told, permission question) of one row."""
    if rec.get("history", {}).get("failed"):
        return AgentState.FAILED, None, None
    if rec.get("restart_at") and float(rec["restart_at"]) > now - 1:
        return AgentState.BACKOFF, None, None
    if rec.get("hung"):
        return AgentState.HUNG, None, None
    if not row.alive:
        return AgentState.DEAD, None, None
    if seen is not None and seen.state in AgentState.__members__.values():
        return AgentState(seen.state), seen.via, seen.question
    if row.uptime is not None and row.uptime < defaults.STATUS_STARTING:
        return AgentState.STARTING, None, None
    if agent is None:
        return AgentState.ALIVE, None, None
    from miyabi.tmux.driver import PaneDriver  # only without the controller's record: its import is not free

    try:
        screen = PaneDriver(tmux).screen(row.pane_id)
    except TmuxError:  # a pane gone between the listing and now
        return AgentState.ALIVE, None, None
    question = approval_question(agent.profile, screen)
    if question is not None:
        return AgentState.WAITING_APPROVAL, "screen", question
    if is_busy(agent.profile, screen):
        return AgentState.BUSY, "screen", None
    return (AgentState.READY if looks_ready(agent.profile, screen) else AgentState.BUSY), "screen", None


def _row(p: Pane, st: TreeStats | None, home: Home, now: float, agent: Agent | None) -> AgentStatus:
    alive = not p.dead
    return AgentStatus(
        name=p.agent,
        window=f"{p.window_index}:{p.window_name}",
        pane_id=p.pane_id,
        pid=p.pid,
        command=agent.command if agent is not None else p.current_command,
        alive=alive,
        state=AgentState.ALIVE if alive else AgentState.DEAD,
        exit=None if alive else p.exit_description(),
        exit_status=None if alive else p.dead_status,
        exit_signal=None if alive else p.dead_signal,
        uptime=round(now - st.started, 1) if (alive and st) else None,
        cpu_percent=st.cpu_percent if (alive and st) else None,
        rss=st.rss if (alive and st) else None,
        last_output=_age(home, p.agent, now),
    )


def _age(home: Home, agent: str, now: float) -> float | None:
    try:
        st = home.pane_log(agent).stat()
    except OSError:
        return None
    if st.st_size == 0:
        return None
    return round(max(0.0, now - st.st_mtime), 1)
