"""``miyabi status``: one row per agent, from tmux and the process table.

CPU and memory figures cover each pane's whole process tree (the agent and every
descendant), read with psutil; "last output" is the age of the agent's pane log,
which tmux's ``pipe-pane`` appends to as the pane prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import psutil

from miyabi import defaults
from miyabi.home import Home
from miyabi.profiles import Profile
from miyabi.tmux.panes import Pane, list_panes


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


def tree_stats(pids: Sequence[int], interval: float = defaults.STATUS_CPU_SAMPLE) -> dict[int, TreeStats]:
    """Sample each root pid's process tree once over ``interval`` seconds (one sleep for
    all trees). Pids that do not exist are left out of the result."""
    trees: dict[int, list[psutil.Process]] = {}
    for pid in pids:
        if pid <= 0:
            continue
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            try:
                p.cpu_percent(None)
            except psutil.Error:
                pass
        trees[pid] = procs
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
        command: the pane's foreground program.
        alive: True while the program runs.
        state: ``alive``, ``dead`` or ``missing`` (no pane: run ``miyabi up``).
        exit: how a dead agent ended (``exit status 1``, ``killed by signal 9``), else None.
        exit_status: its exit status, if it exited.
        exit_signal: the signal that ended it, if one did.
        uptime: seconds since the program started (None if not running).
        cpu_percent: CPU use of its process tree, percent of one core.
        rss: resident memory of its process tree, bytes.
        last_output: seconds since the pane last printed (None if it never did).
        restarts_last_hour: restarts the watchdog made in the last hour.
        last_reason: why it last died or was restarted, if it was.
    """

    name: str
    window: str
    pane_id: str
    pid: int
    command: str
    alive: bool
    state: str
    exit: str | None
    exit_status: int | None
    exit_signal: int | None
    uptime: float | None
    cpu_percent: float | None
    rss: int | None
    last_output: float | None
    restarts_last_hour: int = 0
    last_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def collect(
    tmux: Any,
    session: str,
    home: Home,
    expected: Sequence[str] = (),
    clock: Callable[[], float] = time.time,
    interval: float = defaults.STATUS_CPU_SAMPLE,
    profiles: dict[str, Profile] | None = None,
) -> list[AgentStatus]:
    """Status of every agent pane in ``session``, plus a ``missing`` row for each name in
    ``expected`` that has no pane. Rows come in ``expected`` order, then the rest.

    Raises:
        TmuxError: the session cannot be listed.
    """
    panes = [p for p in list_panes(tmux, session) if p.agent]
    stats = tree_stats([p.pid for p in panes if not p.dead], interval)
    now = clock()
    rows: dict[str, AgentStatus] = {}
    for p in panes:
        if p.agent in rows:
            continue
        rows[p.agent] = _row(p, stats.get(p.pid), home, now)
    order = [n for n in expected if n in rows] + [n for n in rows if n not in expected]
    watch = _watchdog_state(home)
    out = []
    for n in order:
        row = rows[n]
        rec = watch.get(n, {})
        hist = rec.get("history", {})
        state = _state(row, rec, now, (profiles or {}).get(n), tmux)
        out.append(replace(row, state=state, restarts_last_hour=sum(1 for t in hist.get("restarts", []) if now - t <= 3600),
                           last_reason=hist.get("last_reason")))
    for n in expected:
        if n not in rows:
            out.append(
                AgentStatus(n, "", "", 0, "", False, "missing", None, None, None, None, None, None, _age(home, n, now))
            )
    return out


def _watchdog_state(home: Home) -> dict[str, Any]:
    import json

    try:
        data = json.loads((home.run / "watchdog.json").read_text())
    except (OSError, ValueError):
        return {}
    agents = data.get("agents", {})
    return agents if isinstance(agents, dict) else {}


STARTING = 2.0
"""Seconds after start an agent shows as ``starting``."""


def _state(row: AgentStatus, rec: dict[str, Any], now: float, profile: Profile | None, tmux: Any) -> str:
    """``failed``, ``backoff``, ``hung``, ``dead``, ``starting``, ``busy`` or ``ready``."""
    if rec.get("history", {}).get("failed"):
        return "failed"
    if rec.get("restart_at") and float(rec["restart_at"]) > now - 1:
        return "backoff"
    if rec.get("hung"):
        return "hung"
    if not row.alive:
        return "dead"
    if row.uptime is not None and row.uptime < STARTING:
        return "starting"
    if profile is None:
        return "alive"
    from miyabi.delivery import is_busy, looks_ready

    try:
        lines = tmux.run("capture-pane", "-p", "-t", row.pane_id)
    except Exception:  # noqa: BLE001 - a pane gone between the listing and now
        return "alive"
    if is_busy(profile, lines):
        return "busy"
    return "ready" if looks_ready(profile, lines) else "busy"


def _row(p: Pane, st: TreeStats | None, home: Home, now: float) -> AgentStatus:
    alive = not p.dead
    return AgentStatus(
        name=p.agent,
        window=f"{p.window_index}:{p.window_name}",
        pane_id=p.pane_id,
        pid=p.pid,
        command=p.current_command,
        alive=alive,
        state="alive" if alive else "dead",
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
