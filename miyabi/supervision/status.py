"""``miyabi status``: one row per agent, from tmux, the process table and the
watchdog's state.

CPU and memory figures cover each pane's whole process tree (the agent and every
descendant), read with psutil; "last output" is the age of the agent's pane log,
which tmux's ``pipe-pane`` appends to as the pane prints. The command shown is the
one the layout gives the agent (what the pane runs, ``python`` or ``env`` included,
says little).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

import psutil

from miyabi import defaults
from miyabi.agents.screen import approval_question, is_busy, looks_ready
from miyabi.config.model import Agent
from miyabi.errors import TmuxError
from miyabi.home import Home
from miyabi.messaging.activity import Seen, read_seen
from miyabi.supervision.supervisor import load_records
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import Pane, Runner, list_panes


class AgentState(StrEnum):
    """An agent's state as ``miyabi status`` shows it."""

    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    WAITING_APPROVAL = "waiting-approval"
    """Asking for permission (``miyabi approve`` / ``deny`` answer it); never hung."""
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
        cpu_percent: CPU use over the sample, in percent of one core (can exceed 100).
        rss: resident memory, in bytes, summed over the tree.
        processes: how many processes the tree has.
        started: the root process's start time (Unix seconds).
    """

    cpu_percent: float
    rss: int
    processes: int
    started: float


def tree_stats(
    pids: Sequence[int], interval: float = defaults.STATUS_CPU_SAMPLE, cache: dict[int, psutil.Process] | None = None
) -> dict[int, TreeStats]:
    """Sample each root pid's process tree once over ``interval`` seconds (one sleep for
    all trees). Pids that do not exist are left out of the result.

    With ``cache`` (pid → process, kept by the caller between calls), a process seen
    before reports its CPU use since the previous call, so ``interval`` may be 0 (a
    process seen for the first time then reports 0.0); the cache is pruned to the
    processes of this call."""
    trees: dict[int, list[psutil.Process]] = {}
    seen: dict[int, psutil.Process] = {}
    kids = _children_map() if pids else {}
    for pid in pids:
        if pid <= 0:
            continue
        try:
            root = _process(pid, cache)
            procs = [root]
            todo = list(kids.get(pid, ()))
            while todo:
                child = todo.pop()
                try:
                    procs.append(_process(child, cache))
                except psutil.Error:
                    continue
                todo += kids.get(child, ())
        except psutil.Error:
            continue
        for p in procs:
            seen[p.pid] = p
            if cache is not None and p.pid in cache:
                continue
            try:
                p.cpu_percent(None)
            except psutil.Error:
                pass
        trees[pid] = procs
    if cache is not None:
        cache.clear()
        cache.update(seen)
    if trees and interval > 0:
        time.sleep(interval)
    out: dict[int, TreeStats] = {}
    for pid, procs in trees.items():
        cpu = 0.0
        rss = 0
        alive = 0
        for p in procs:
            try:
                with p.oneshot():
                    cpu += p.cpu_percent(None)
                    rss += p.memory_info().rss
                alive += 1
            except psutil.Error:
                continue
        try:
            started = procs[0].create_time()
        except psutil.Error:
            continue
        out[pid] = TreeStats(cpu_percent=round(cpu, 1), rss=rss, processes=alive, started=started)
    return out


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _children_map() -> dict[int, list[int]]:
    """Parent pid → its children's pids, from one pass over the process table (psutil's
    ``children()`` makes a pass per call: 64 agents made 64 passes)."""
    out: dict[int, list[int]] = {}
    for p in psutil.process_iter(["ppid"]):
        ppid = p.info.get("ppid")
        if isinstance(ppid, int):
            out.setdefault(ppid, []).append(p.pid)
    return out


def _process(pid: int, cache: dict[int, psutil.Process] | None) -> psutil.Process:
    """The cached process of ``pid`` while it is the same process (``is_running``
    compares start times), else a new one."""
    known = cache.get(pid) if cache is not None else None
    if known is not None and known.is_running():
        return known
    return psutil.Process(pid)


def collect(
    tmux: Runner,
    session: str,
    home: Home,
    agents: Sequence[Agent] = (),
    clock: Callable[[], float] = time.time,
    interval: float = defaults.STATUS_CPU_SAMPLE,
    recorded: bool = True,
    cpu_cache: dict[int, psutil.Process] | None = None,
) -> list[AgentStatus]:
    """Status of every agent pane in ``session``, plus a ``missing`` row for each of
    ``agents`` (the layout's) that has no pane. Rows come in layout order, then the
    rest. With ``recorded`` (the controller runs), an agent's state is the one the
    controller recorded for its process; else it is read off the screen now.

    Raises:
        TmuxError: the session cannot be listed.
    """
    by_name: Mapping[str, Agent] = {a.name: a for a in agents}
    expected = [a.name for a in agents]
    panes = [p for p in list_panes(tmux, session) if p.agent]
    stats = tree_stats([p.pid for p in panes if not p.dead], interval, cpu_cache)
    now = clock()
    rows: dict[str, AgentStatus] = {}
    for p in panes:
        if p.agent in rows:
            continue
        rows[p.agent] = _row(p, stats.get(p.pid), home, now, by_name.get(p.agent))
    order = [n for n in expected if n in rows] + [n for n in rows if n not in expected]
    watch = load_records(home)
    driver = PaneDriver(tmux)
    out = []
    for n in order:
        row = rows[n]
        rec = watch.get(n, {})
        hist = rec.get("history", {})
        seen = read_seen(home.root, n) if recorded and by_name.get(n) is not None else None
        seen = seen if seen is not None and seen.pid == row.pid and row.alive else None
        state, via, question = _state(row, rec, now, by_name.get(n), driver, seen)
        out.append(
            replace(
                row,
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
    row: AgentStatus, rec: dict[str, Any], now: float, agent: Agent | None, driver: PaneDriver, seen: Seen | None
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
    try:
        screen = driver.screen(row.pane_id)
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
