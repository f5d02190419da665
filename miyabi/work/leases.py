"""Leases: a task an agent holds belongs to the agent process its message reached.

A task an agent holds (``assigned``/``in_progress``) carries a **lease**: the identity
of the agent process its message was delivered to (``holder``, pid and start time),
and, when it has a time limit, a ``deadline``. When that process ends, or the
deadline passes, the task is handed back (:meth:`Leases.hand_back`): to the agent's
next process or to the queue, with the attempt counted, and failed for good after its
last attempt. The idea of a lease bound to the worker's identity is the visibility
timeout of work queues (Amazon SQS) and Kubernetes' ``Lease`` objects; here the
identity is the process, not a clock.
"""

from __future__ import annotations

from typing import Any

from miyabi.work.base import StoreBase
from miyabi.work.model import HELD, Handback, Task, TaskState


class Leases(StoreBase):
    """The task store's leases (part of :class:`miyabi.work.store.Store`)."""

    def set_message(self, task_id: int, message: str) -> None:
        """Record the id of the message that tells the agent about its current assignment."""
        with self.tx() as db:
            db.execute("UPDATE tasks SET message=? WHERE id=?", (message, task_id))

    def take_lease(
        self,
        task_id: int,
        agent: str,
        holder: str | None,
        timeout: float | None,
        reason: str,
        message: str | None = None,
    ) -> bool:
        """The task's message ``message`` reached ``agent``'s process ``holder``: the task
        is in progress and held by that process, until ``timeout`` seconds from now
        (None: no limit). A task of another agent, not held any more, leased already, or
        whose current message is another one (an earlier assignment's, a notice about
        it) is left alone (returns False); a job the worker started first (and so
        leased) gets its deadline."""
        now = self.clock()
        with self.tx() as db:
            row = db.execute(
                "SELECT state, agent, holder, deadline, message FROM tasks WHERE id=?", (task_id,)
            ).fetchone()
            if row is None or row["agent"] != agent or row["state"] not in HELD:
                return False
            if message is not None and row["message"] is not None and row["message"] != message:
                return False
            if row["holder"] is not None:
                if row["deadline"] is None and timeout is not None:
                    db.execute("UPDATE tasks SET deadline=? WHERE id=?", (now + timeout, task_id))
                return False
            deadline = now + timeout if timeout is not None else None
            db.execute(
                "UPDATE tasks SET state=?, holder=?, deadline=?, updated=? WHERE id=?",
                (str(TaskState.IN_PROGRESS), holder, deadline, now, task_id),
            )
            if row["state"] != TaskState.IN_PROGRESS:
                db.execute(
                    "INSERT INTO events (task, time, state, agent, reason) VALUES (?,?,?,?,?)",
                    (task_id, now, str(TaskState.IN_PROGRESS), agent, reason),
                )
        return True

    def adopt_lease(self, task_id: int, holder: str, deadline: float | None) -> bool:
        """Lease an in-progress task that has no holder to ``holder`` (True if it did)."""
        with self.tx() as db:
            cur = db.execute(
                "UPDATE tasks SET holder=?, deadline=? WHERE id=? AND state=? AND holder IS NULL",
                (holder, deadline, task_id, str(TaskState.IN_PROGRESS)),
            )
            return cur.rowcount == 1

    def set_deadline(self, task_id: int, deadline: float) -> None:
        """Give a leased task that has none a deadline (a time limit set after it started)."""
        with self.tx() as db:
            db.execute(
                "UPDATE tasks SET deadline=? WHERE id=? AND deadline IS NULL AND holder IS NOT NULL",
                (deadline, task_id),
            )

    def held(self, agent: str | None = None) -> list[Task]:
        """Tasks agents hold (``assigned`` or ``in_progress``), oldest first; only
        ``agent``'s when given."""
        q = "SELECT * FROM tasks WHERE state IN (?, ?)"
        args: list[Any] = [str(TaskState.ASSIGNED), str(TaskState.IN_PROGRESS)]
        if agent is not None:
            q += " AND agent=?"
            args.append(agent)
        return [Task.from_row(r) for r in self.rows(q + " ORDER BY id", args)]

    def held_counts(self) -> dict[str, int]:
        """Agent → how many tasks it holds (what its ``wip`` limit counts)."""
        rows = self.rows(
            "SELECT agent, COUNT(*) FROM tasks WHERE state IN (?, ?) AND agent IS NOT NULL GROUP BY agent",
            (str(TaskState.ASSIGNED), str(TaskState.IN_PROGRESS)),
        )
        return {r[0]: int(r[1]) for r in rows}

    def held_tasks(self) -> dict[str, set[str]]:
        """Agent → the ids (as text, as messages name them) of the tasks it holds."""
        rows = self.rows(
            "SELECT agent, id FROM tasks WHERE state IN (?, ?) AND agent IS NOT NULL",
            (str(TaskState.ASSIGNED), str(TaskState.IN_PROGRESS)),
        )
        out: dict[str, set[str]] = {}
        for r in rows:
            out.setdefault(str(r[0]), set()).add(str(r[1]))
        return out

    def hand_off(self, task_id: int, agent: str, to: str, pool: str | None, reason: str, note: str) -> bool:
        """Take a task from ``agent`` (parked) and queue it for ``to`` (an agent, or the
        pool ``pool``: it keeps its branch, so an instance of that pool takes over its
        worktree; a named agent's task has neither), in one transaction; ``note`` is
        what the new agent is told first. False when ``agent`` no longer holds it."""
        with self.tx() as db:
            row = db.execute("SELECT state, agent FROM tasks WHERE id=?", (task_id,)).fetchone()
            if row is None or row["state"] not in HELD or row["agent"] != agent:
                return False
            self._move(db, task_id, TaskState.QUEUED, reason)
            db.execute(
                "UPDATE tasks SET handoff=?, handoff_note=?, route=?, pool=?,"
                " branch=CASE WHEN ? IS NULL THEN NULL ELSE branch END WHERE id=?",
                (to, note, to, pool, pool, task_id),
            )
            return True

    def hand_back(self, task_id: int, holder: str | None, reason: str, resend: bool, max_attempts: int) -> Handback:
        """Take a task back from the agent process ``holder`` (None: whatever holds
        it), in one transaction: after its last attempt (``attempts`` ≥ its own or the
        given ``max_attempts``) it fails with ``reason`` (GitHub is told
        ``needs-human``); otherwise with ``resend`` it is assigned again to the same
        agent (an attempt more), else it goes back to the queue. Returns where it went."""
        with self.tx() as db:
            row = db.execute(
                "SELECT state, agent, holder, attempts, max_attempts FROM tasks WHERE id=?", (task_id,)
            ).fetchone()
            if row is None or row["state"] not in HELD or (holder is not None and row["holder"] != holder):
                return Handback.GONE
            limit = row["max_attempts"] or max_attempts
            if row["attempts"] >= limit:
                self._move(
                    db,
                    task_id,
                    TaskState.FAILED,
                    f"{reason}; that was attempt {row['attempts']} of {limit}: it needs a person",
                    notice="needs-human",
                )
                return Handback.FAILED
            if resend and row["agent"]:
                self._move(
                    db,
                    task_id,
                    TaskState.ASSIGNED,
                    f"{reason}; sent again to {row['agent']} (attempt {row['attempts'] + 1} of {limit})",
                    agent=row["agent"],
                )
                return Handback.RESENT
            self._move(
                db,
                task_id,
                TaskState.QUEUED,
                f"{reason}; back to the queue (attempt {row['attempts']} of {limit} used)",
            )
            return Handback.REQUEUED
