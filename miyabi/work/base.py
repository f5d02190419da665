"""What every part of the task store shares: its connection to ``state/miyabi.db``
(with the work domain's tables, :mod:`miyabi.work.schema`), the clock, reading one
task, and moving a task from one state to another with its event (and, for an issue
that ends, the notice GitHub gets). The parts, one module each, are put together in
:class:`miyabi.work.store.Store`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from miyabi.database import Database
from miyabi.work.model import FINISHED, REF_RE, TRANSITIONS, Source, Task, TaskError, TaskState
from miyabi.work.schema import SCHEMA

SPECKIT_KEY = "speckit:"
"""The key of a task imported from a spec-kit list: ``speckit:001-blog#T012``."""
TASK_SPEC_KEY = "spec:"
"""The key of a task added from a task spec: ``spec:ID`` (its ref too)."""


class StoreBase(Database):
    """A connection to a task database (see :class:`miyabi.database.Database`: one
    connection, shared by a process's threads, a write transaction at a time).

    Args:
        path: the SQLite file (created 0600, in a 0700 directory, when missing).
        clock: Unix time (injectable).

    Raises:
        sqlite3.Error: the file cannot be opened or migrated.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        super().__init__(path, SCHEMA)
        self.clock = clock

    def get(self, ref: str | int) -> Task:
        """A task by id (``12``, ``#12``) or by reference (``acme/widgets#3``, a spec-kit
        line's ``001-blog#T012``, a task spec's ``spec:ID``).

        Raises:
            TaskError: no such task.
        """
        text = str(ref).strip()
        m = REF_RE.match(text)
        if m:
            rows = self.rows("SELECT * FROM tasks WHERE repo=? AND number=?", (m["repo"], int(m["number"])))
        elif text.lstrip("#").isdigit():
            rows = self.rows("SELECT * FROM tasks WHERE id=?", (int(text.lstrip("#")),))
        else:  # a spec's ref: a spec-kit line (001-blog#T012) or a task spec (spec:ID, its key too)
            key = text if text.startswith(TASK_SPEC_KEY) else SPECKIT_KEY + text
            rows = self.rows("SELECT * FROM tasks WHERE source=? AND key=?", (str(Source.LOCAL), key))
            if not rows and "#" not in text and not text.startswith(TASK_SPEC_KEY):
                raise TaskError(
                    f"{text!r} is not a task id (12) or reference (owner/name#3, 001-feature#T012, spec:ID)"
                )
        row = rows[0] if rows else None
        if row is None:
            raise TaskError(f"no task {text}; list them with `miyabi task ls`")
        return Task.from_row(row)

    def _move(
        self,
        db: sqlite3.Connection,
        task_id: int,
        state: TaskState,
        reason: str,
        agent: str | None = None,
        expect: Sequence[TaskState] | None = None,
        notice: str | None = None,
        text: str | None = None,
    ) -> None:
        """:meth:`~miyabi.work.store.Store.set_state` inside a transaction. A task leaving ``assigned``/``in_progress``
        (or assigned afresh) loses its lease. ``notice``: the GitHub outbox action
        (default: the state, for done and failed); ``text``: what it is told (default: ``reason``)."""
        now = self.clock()
        row = db.execute("SELECT state, agent, source FROM tasks WHERE id=?", (task_id,)).fetchone()
        if row is None:
            raise TaskError(f"no task {task_id}")
        current = row["state"]
        allowed = expect if expect is not None else [s for s, to in TRANSITIONS.items() if state in to]
        if current not in allowed:
            raise TaskError(f"task {task_id} is {current}; it cannot become {state}")
        who = agent if agent is not None else (None if state in (TaskState.QUEUED, TaskState.BLOCKED) else row["agent"])
        extra = ""
        if state == TaskState.ASSIGNED:
            extra += ", attempts = attempts + 1, message = NULL"
        elif state == TaskState.QUEUED and current == TaskState.ASSIGNED:
            extra += ", attempts = MAX(attempts - 1, 0)"  # it never reached the agent: no attempt
        elif state == TaskState.QUEUED and current in FINISHED:
            # a retry (`task retry`, the todo label put back): a fresh start
            extra += ", attempts = 0, job_started = 0, rounds = 0"
            db.execute("DELETE FROM job_runs WHERE task=?", (task_id,))
        if state in (TaskState.QUEUED, TaskState.BLOCKED):
            extra += ", route = NULL, message = NULL"  # routed afresh: the routes may have changed meanwhile
        if state != TaskState.IN_PROGRESS:
            extra += ", holder = NULL, deadline = NULL"
        db.execute(f"UPDATE tasks SET state=?, agent=?, updated=?{extra} WHERE id=?", (str(state), who, now, task_id))
        db.execute(
            "INSERT INTO events (task, time, state, agent, reason) VALUES (?,?,?,?,?)",
            (task_id, now, str(state), who, reason),
        )
        if row["source"] == Source.GITHUB and state in (TaskState.DONE, TaskState.FAILED):
            # GitHub is told by the controller (it holds the token), exactly once.
            db.execute(
                "INSERT INTO outbox (task, action, text) VALUES (?,?,?)",
                (task_id, notice or str(state), text or reason),
            )
