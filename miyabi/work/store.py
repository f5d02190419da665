"""The task store: SQLite (WAL) at ``state/miyabi.db`` under the miyabi home.

A task (:mod:`miyabi.work.model`) is stored with an append-only history: every change
is a row in the ``events`` table, with its reason. Several processes (the controller,
``miyabi task`` run by agents) share the database: WAL lets readers run beside the
one writer, and each change is one transaction (``BEGIN IMMEDIATE``). The file is
private (0600), like everything in the home (:mod:`miyabi.database` owns the
connection; :mod:`miyabi.work.schema` the tables).

:class:`Store` is the whole store. This module holds its core: reading tasks, adding
them, moving them between states, their dependencies. Its other parts have a module
each: :mod:`~miyabi.work.leases` (a task held by an agent process),
:mod:`~miyabi.work.queue` (what the scheduler reads), :mod:`~miyabi.work.job_runs`
(a job's commands) and :mod:`~miyabi.work.outbox` (what GitHub must be told); what
they share is :mod:`~miyabi.work.base`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from miyabi.times import rfc3339
from miyabi.work.base import StoreBase
from miyabi.work.job_runs import JobRuns
from miyabi.work.leases import Leases
from miyabi.work.model import HELD, PRIORITIES, STATES, Source, Task, TaskError, TaskState, rank_of
from miyabi.work.outbox import GitHubOutbox
from miyabi.work.queue import Queue
from miyabi.work.speckit import tick_file
from miyabi.work.taskspec import speckit_line

log = logging.getLogger("miyabi.work")


class Store(Leases, Queue, JobRuns, GitHubOutbox, StoreBase):
    """The task database of one miyabi home.

    Args:
        path: the SQLite file (created 0600, with its directory 0700, when missing).
        clock: Unix time (injectable).

    Raises:
        sqlite3.Error: the file cannot be opened or migrated.
    """

    @classmethod
    def of_home(cls, home_root: Path) -> Store:
        """``state/miyabi.db`` under the home."""
        return cls(home_root / "state" / "miyabi.db")

    # -- reading (one task by id or reference: :meth:`~miyabi.work.base.StoreBase.get`)

    def find(self, repo: str, number: int) -> Task | None:
        """The task of issue ``repo#number``, if there is one."""
        rows = self.rows("SELECT * FROM tasks WHERE repo=? AND number=?", (repo, number))
        return Task.from_row(rows[0]) if rows else None

    def find_many(self, repo: str, numbers: Sequence[int]) -> dict[int, Task]:
        """The tasks of issues ``numbers`` of ``repo`` that have one, by number (one
        indexed query per 500 numbers)."""
        out: dict[int, Task] = {}
        wanted = sorted(set(numbers))
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.rows(f"SELECT * FROM tasks WHERE repo=? AND number IN ({marks})", (repo, *chunk)):
                out[int(r["number"])] = Task.from_row(r)
        return out

    def query(self, state: str | None = None, agent: str | None = None) -> list[Task]:
        """Tasks, oldest first, filtered by state and agent.

        Raises:
            TaskError: ``state`` is not a task state.
        """
        q, args = "SELECT * FROM tasks WHERE 1=1", []
        if state:
            if state not in STATES:
                raise TaskError(f"unknown state {state!r}; use one of {', '.join(STATES)}")
            q += " AND state=?"
            args.append(str(state))
        if agent:
            q += " AND agent=?"
            args.append(agent)
        return [Task.from_row(r) for r in self.rows(q + " ORDER BY id", args)]

    def depends_on(self, task_id: int) -> list[int]:
        return [r[0] for r in self.rows("SELECT depends_on FROM deps WHERE task=? ORDER BY depends_on", (task_id,))]

    def history(self, task_id: int) -> list[dict[str, Any]]:
        """The task's changes, oldest first: ``time`` (RFC 3339), ``state``, ``agent``, ``reason``."""
        rows = self.rows("SELECT time, state, agent, reason FROM events WHERE task=? ORDER BY id", (task_id,))
        return [{**dict(r), "time": rfc3339(r["time"])} for r in rows]

    # -- writing

    def add(
        self,
        title: str,
        body: str = "",
        labels: Sequence[str] = (),
        priority: str = "normal",
        depends_on: Sequence[int] = (),
        **fields: Any,
    ) -> Task:
        """Store a new task (``queued``), in a transaction of its own.

        Args:
            fields: :meth:`insert`'s keywords: ``source``, ``repo``, ``number``, ``url``,
                ``key``; ``timeout`` (its own in-progress limit in seconds; None: the
                layout's), ``max_attempts`` (its own number of attempts; None: the
                layout's); ``parent``, ``pool``, ``branch`` (for a follow-up, the task it
                follows, and its pool and branch); ``spec``.

        Raises:
            TaskError: empty title, bad priority, unknown dependency, or ``key`` taken
                by another task of the same source.
        """
        with self.tx() as db:
            tid = self.insert(db, title, body, labels, priority, depends_on, **fields)
        return self.get(tid)

    def insert(
        self,
        db: sqlite3.Connection,
        title: str,
        body: str = "",
        labels: Sequence[str] = (),
        priority: str = "normal",
        depends_on: Sequence[int] = (),
        *,
        source: str = Source.LOCAL,
        repo: str | None = None,
        number: int | None = None,
        url: str | None = None,
        key: str | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        parent: int | None = None,
        pool: str | None = None,
        branch: str | None = None,
        spec: str | None = None,
        state: TaskState = TaskState.QUEUED,
        reason: str | None = None,
    ) -> int:
        """:meth:`add` inside the caller's transaction ``db`` (several tasks and their
        dependencies stored at once); the new task's id. ``spec``: its ``spec`` column;
        ``state``: ``queued``, or ``blocked``/``done`` for a task stored that way
        (``reason``: its first event's, default "added from SOURCE").

        Raises:
            TaskError: as :meth:`add`.
        """
        if not title.strip():
            raise TaskError("a task needs a title")
        if priority not in PRIORITIES:
            raise TaskError(f"priority {priority!r} is not valid; use high, normal or low")
        if timeout is not None and timeout <= 0:
            raise TaskError(f"timeout {timeout!r} must be more than 0 seconds")
        if max_attempts is not None and max_attempts < 1:
            raise TaskError(f"max_attempts {max_attempts!r} must be 1 or more")
        now = self.clock()
        for dep in depends_on:
            if db.execute("SELECT 1 FROM tasks WHERE id=?", (dep,)).fetchone() is None:
                raise TaskError(f"--depends-on {dep}: no such task")
        if key is not None:
            taken = db.execute("SELECT id, state FROM tasks WHERE source=? AND key=?", (source, key)).fetchone()
            if taken is not None:
                raise TaskError(
                    f"{source} id {key!r} was submitted already, as task {taken['id']} ({taken['state']}); give "
                    "it a new id"
                )
        cur = db.execute(
            "INSERT INTO tasks (source, repo, number, url, title, body, labels, priority, state, created, "
            "updated, key, timeout, max_attempts, rank, parent, pool, branch, spec) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                source,
                repo,
                number,
                url,
                title,
                body,
                json.dumps(list(labels)),
                priority,
                str(state),
                now,
                now,
                key,
                timeout,
                max_attempts,
                rank_of(priority, labels),
                parent,
                pool,
                branch,
                spec,
            ),
        )
        tid = int(cur.lastrowid or 0)
        for dep in depends_on:
            db.execute("INSERT OR IGNORE INTO deps (task, depends_on) VALUES (?,?)", (tid, dep))
        db.execute(
            "INSERT INTO events (task, time, state, reason) VALUES (?,?,?,?)",
            (tid, now, str(state), reason or f"added from {source}"),
        )
        return tid

    def set_state(
        self,
        task_id: int,
        state: TaskState,
        reason: str,
        agent: str | None = None,
        expect: Sequence[TaskState] | None = None,
        notice: str | None = None,
        text: str | None = None,
        also: Sequence[tuple[str, Sequence[Any]]] = (),
    ) -> Task:
        """Move a task to ``state`` and record why.

        Args:
            expect: states the task must be in now (default: any state that may move
                to ``state``); the check and the change are one transaction.
            notice: for a GitHub task that ends, the outbox action (default: the state).
            text: what GitHub is told (default: ``reason``).
            also: (SQL, arguments) statements run in the same transaction, after the
                change (the records other services keep beside a task).

        Raises:
            TaskError: no such task, or the change is not allowed from its state.
        """
        with self.tx() as db:
            self._move(db, task_id, state, reason, agent, expect, notice, text)
            for sql, args in also:
                db.execute(sql, args)
        return self.get(task_id)

    def done(self, task_id: int, note: str, by: str | None = None) -> Task:
        """An agent says the task is done (``miyabi task done``). A pool task is not
        believed: it goes to ``verifying``, and the repository's checks decide;
        any other task is done. ``by``: only if that agent holds it (assigned or in
        progress), checked in the same transaction.

        Raises:
            TaskError: no such task, it is not open, or ``by`` does not hold it.
        """
        with self.tx() as db:
            row = db.execute("SELECT state, agent, branch FROM tasks WHERE id=?", (task_id,)).fetchone()
            if row is None:
                raise TaskError(f"no task {task_id}")
            if by is not None and (row["agent"] != by or row["state"] not in HELD):
                raise TaskError(
                    f"task {task_id} is not held by {by} (it is {row['state']}, agent {row['agent'] or '-'})"
                )
            if row["branch"] is not None and row["state"] in HELD:
                self._move(
                    db, task_id, TaskState.VERIFYING, f"{row['agent']} says it is done ({note}); running the checks"
                )
            elif row["branch"] is not None and row["state"] == TaskState.VERIFYING:
                pass  # said twice: the checks already run
            else:
                self._move(db, task_id, TaskState.DONE, note)
        t = self.get(task_id)
        tick_in_place(t)
        return t

    def round_failed(
        self, task_id: int, reason: str, max_rounds: int, notice: str = "needs-human", text: str | None = None
    ) -> Task:
        """A verify round of a ``verifying`` task failed: back to ``in_progress`` (the
        agent gets another round), or, after ``max_rounds``, failed (GitHub is told
        ``notice``). One transaction.

        Raises:
            TaskError: the task is not verifying.
        """
        with self.tx() as db:
            row = db.execute("SELECT state, rounds FROM tasks WHERE id=?", (task_id,)).fetchone()
            if row is None or row["state"] != TaskState.VERIFYING:
                raise TaskError(f"task {task_id} is not verifying")
            rounds = int(row["rounds"]) + 1
            db.execute("UPDATE tasks SET rounds=? WHERE id=?", (rounds, task_id))
            if rounds >= max_rounds:
                self._move(
                    db,
                    task_id,
                    TaskState.FAILED,
                    f"verify round {rounds} of {max_rounds} failed: {reason}",
                    expect=(TaskState.VERIFYING,),
                    notice=notice,
                    text=text,
                )
            else:
                self._move(
                    db,
                    task_id,
                    TaskState.IN_PROGRESS,
                    f"verify round {rounds} of {max_rounds} failed: {reason}",
                    expect=(TaskState.VERIFYING,),
                )
        return self.get(task_id)

    # -- dependencies

    def add_dependency(self, task_id: int, depends_on: int) -> None:
        """Hold ``task_id`` until ``depends_on`` is done (or cancelled)."""
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO deps (task, depends_on) VALUES (?,?)", (task_id, depends_on))

    def cycle_from(self, task_id: int) -> list[int] | None:
        """A dependency cycle through ``task_id`` (as a path of ids), or None."""
        path: list[int] = []

        def walk(t: int, seen: set[int]) -> list[int] | None:
            for dep in self.depends_on(t):
                if dep == task_id:
                    return [*path, dep]
                if dep in seen:
                    continue
                seen.add(dep)
                path.append(dep)
                found = walk(dep, seen)
                if found:
                    return found
                path.pop()
            return None

        found = walk(task_id, {task_id})
        return [task_id, *found] if found else None


LANDED = ("done", "verified")
"""The states in which a task's work has landed (``verified``: a story's child, checked
and merged, before its story's deploy)."""


def tick_in_place(task: Task) -> bool:
    """For a spec-kit task that is not a pool task (no branch) whose work landed: tick
    its box in the file, in place; whether the file changed. A file that cannot be
    written is logged, never an error of the task's: its work is done either way.
    (A pool task's box is ticked by the verify gate, in the commit that lands.)"""
    box = speckit_line(task)
    if box is None or task.branch is not None or str(task.state) not in LANDED:
        return False
    try:
        return tick_file(box.file, box.id)
    except OSError as e:
        log.warning("task %s: could not tick %s in %s: %s", task.ref, box.id, box.file, e)
        return False
