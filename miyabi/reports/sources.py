"""Where a report's figures come from: the home's event log and task store, read
into the plain inputs :func:`miyabi.reports.kpis.compute` takes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from miyabi.events import read_events
from miyabi.reports.kpis import Report, TaskChange, compute
from miyabi.work.model import TaskState
from miyabi.work.store import Store

ENDS = (TaskState.DONE, TaskState.FAILED)
"""The task changes a report counts."""


def task_changes(store: Store, since: float, until: float) -> list[TaskChange]:
    """The store's changes to ``done`` or ``failed`` with ``since <= time < until``
    (Unix seconds), oldest first, each with its task's source, reference and creation time.

    Raises:
        sqlite3.Error: the database cannot be read.
    """
    rows = store.rows(
        "SELECT e.task, e.time, e.state, e.agent, t.source, t.repo, t.number, t.created FROM events e"
        " JOIN tasks t ON t.id = e.task WHERE e.time >= ? AND e.time < ? AND e.state IN (?, ?) ORDER BY e.id",
        (since, until, *(str(s) for s in ENDS)),
    )
    return [
        TaskChange(
            task=int(r["task"]),
            time=float(r["time"]),
            state=str(r["state"]),
            source=str(r["source"]),
            ref=f"{r['repo']}#{r['number']}" if r["repo"] and r["number"] is not None else f"#{r['task']}",
            created=float(r["created"]),
            agent=r["agent"],
        )
        for r in rows
    ]


def build(home_root: Path, since: float, until: float, agents: Sequence[str] = ()) -> Report:
    """The report of ``[since, until)`` (Unix seconds) for the home at ``home_root``:
    its whole ``logs/events.jsonl`` and, if it has one, its task store
    (``state/miyabi.db``; a home without one has no task figures, and none is created).

    Args:
        agents: agents to report even when they did nothing in the window (the layout's).

    Raises:
        ValueError: ``until`` is not after ``since``.
        sqlite3.Error: the task store cannot be read.
        OSError: the event log cannot be read.
    """
    db = home_root / "state" / "miyabi.db"
    changes: list[TaskChange] = []
    if db.exists():
        store = Store(db)
        try:
            changes = task_changes(store, since, until)
        finally:
            store.close()
    return compute(read_events(home_root), changes, since, until, agents)
