"""What the store keeps of a job's runs: which assignment started it, and each of
its commands as it starts and ends (``job_runs``), every write checked in the same
transaction against the task, so that a job never runs twice for one attempt and two
attempts never run at once (:mod:`miyabi.work.jobs` runs them)."""

from __future__ import annotations

from typing import Any

from miyabi.work.base import StoreBase
from miyabi.work.model import HELD, Source, Task, TaskError, TaskState


class JobRuns(StoreBase):
    """The task store's job runs (part of :class:`miyabi.work.store.Store`)."""

    def start_job(self, task_id: int, agent: str, holder: str | None = None) -> Task:
        """Mark job task ``task_id`` started by ``agent`` (in progress), in one
        transaction with the checks: a task of source ``job``, assigned to ``agent``,
        open, and not started yet in its current assignment, so that it never runs
        twice for one assignment (a new attempt is a new assignment). ``holder``: the
        worker's own lease identity, taken when the task has no holder yet.

        Raises:
            TaskError: it is not an open job of this agent, or was started already.
        """
        now = self.clock()
        with self.tx() as db:
            row = db.execute(
                "SELECT source, agent, state, attempts, job_started, holder FROM tasks WHERE id=?", (task_id,)
            ).fetchone()
            if row is None or row["source"] != Source.JOB or row["agent"] != agent or row["state"] not in HELD:
                raise TaskError(f"task {task_id} is not an open job assigned to {agent}; nothing was run")
            if row["job_started"] == row["attempts"]:
                raise TaskError(f"job task {task_id} was already started in this assignment; nothing was run")
            db.execute(
                "UPDATE tasks SET state=?, job_started=attempts, holder=COALESCE(holder, ?), updated=? WHERE id=?",
                (str(TaskState.IN_PROGRESS), holder, now, task_id),
            )
            db.execute(
                "INSERT INTO events (task, time, state, agent, reason) VALUES (?,?,?,?,?)",
                (
                    task_id,
                    now,
                    str(TaskState.IN_PROGRESS),
                    agent,
                    f"job started by {agent} (attempt {row['attempts']})",
                ),
            )
        return self.get(task_id)

    def job_step_started(self, task_id: int, attempt: int, step: int, command: str, agent: str) -> bool:
        """Record that attempt ``attempt`` of a job starts its ``step`` (0-based), in one
        transaction with the check that this attempt still owns the job (the task is in
        progress for ``agent`` and was started in this attempt): two attempts never
        run at once. Returns False, recording nothing, when it does not own it."""
        with self.tx() as db:
            row = db.execute("SELECT state, agent, job_started, attempts FROM tasks WHERE id=?", (task_id,)).fetchone()
            if (
                row is None
                or row["state"] != TaskState.IN_PROGRESS
                or row["agent"] != agent
                or row["job_started"] != attempt
                or row["attempts"] != attempt
            ):
                return False
            db.execute(
                "INSERT OR REPLACE INTO job_runs (task, attempt, step, command, agent, started) VALUES (?,?,?,?,?,?)",
                (task_id, attempt, step, command, agent, self.clock()),
            )
            return True

    def job_step_ended(
        self, task_id: int, attempt: int, step: int, exit_code: int, seconds: float, output: str
    ) -> None:
        """Record how a job's step ended."""
        with self.tx() as db:
            db.execute(
                "UPDATE job_runs SET exit_code=?, seconds=?, output=? WHERE task=? AND attempt=? AND step=?",
                (exit_code, seconds, output, task_id, attempt, step),
            )

    def job_steps(self, task_id: int) -> list[dict[str, Any]]:
        """Every recorded step of a job, by attempt then step: ``attempt``, ``step``,
        ``command``, ``agent``, ``started`` (Unix time), ``seconds``, ``exit_code`` and
        ``output`` (None while it runs, or when its process died during it)."""
        return [dict(r) for r in self.rows("SELECT * FROM job_runs WHERE task=? ORDER BY attempt, step", (task_id,))]
