"""Merges that wait for a person (``approve: required`` on a pool).

In ``pipeline: local``, a task of such a pool goes through the verify gate as any
other: its checks pass on its branch, its merge into the base branch is made in a
staging worktree and checked there. Then, instead of moving the base branch, the gate
records an **approval** (``waiting``) for the checked commit of the task's branch and
the task stays ``verifying``, with the reason "waiting for approval" in its history and
the event ``approval-needed``. A person looks at the diff (``git diff base...branch``)
and the check results (the verify logs), and approves (``miyabi approve-merge TASK``,
the dashboard's Approvals page) or rejects it with a reason. An approval is for that
commit: the gate then checks the merge again against the base branch as it is by then
and lands it. A rejection goes back to the agent as a failed round. A commit the agent
adds meanwhile makes the approval void: the new commit is checked and waits anew.

The approvals live in the task database (domain ``approvals``), one row per task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from miyabi.database import Schema
from miyabi.errors import MiyabiError
from miyabi.pipeline.git import GitError, Repository
from miyabi.times import rfc3339
from miyabi.work.model import TaskState
from miyabi.work.store import Store

TABLES = """
CREATE TABLE IF NOT EXISTS approvals (
  task INTEGER PRIMARY KEY REFERENCES tasks(id),
  repo TEXT NOT NULL,
  branch TEXT NOT NULL,
  base TEXT NOT NULL,
  sha TEXT NOT NULL,
  merge TEXT NOT NULL,
  logs TEXT NOT NULL DEFAULT '[]',
  results TEXT NOT NULL DEFAULT '[]',
  state TEXT NOT NULL,
  asked REAL NOT NULL,
  decided REAL,
  by TEXT,
  reason TEXT NOT NULL DEFAULT ''
);
"""

SCHEMA = Schema("approvals", (TABLES,))
"""The approvals' table in the task database (:mod:`miyabi.database`)."""

WAITING_REASON = "waiting for approval"
"""The reason a waiting task's history shows (``miyabi task show``)."""


class ApprovalState(StrEnum):
    """Where a merge that needs a person is."""

    WAITING = "waiting"
    APPROVED = "approved"
    REJECTED = "rejected"


class MergeNotWaiting(MiyabiError):
    """``approve-merge`` on a task whose merge does not wait for a person."""


@dataclass(frozen=True)
class Approval:
    """One task's merge that needs a person.

    Attributes:
        task: the task's id.
        repo: the pool's repository.
        branch: the task's branch; base: the branch it merges into.
        sha: the checked commit of the branch the decision is about.
        merge: the checked merge commit (made in the staging worktree; it may be made
            anew, on a moved base branch, once approved).
        logs: the verify logs (the checks on the branch, then on the merge).
        results: one line per check (``- test `pytest -q`: passed in 1.2 s``).
        state: waiting, approved or rejected.
        asked, decided: Unix times; by: who decided; reason: a rejection's reason.
    """

    task: int
    repo: Path
    branch: str
    base: str
    sha: str
    merge: str
    logs: tuple[str, ...]
    results: tuple[str, ...]
    state: ApprovalState
    asked: float
    decided: float | None = None
    by: str | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "repo": str(self.repo),
            "branch": self.branch,
            "base": self.base,
            "commit": self.sha,
            "merge": self.merge,
            "logs": list(self.logs),
            "results": list(self.results),
            "state": str(self.state),
            "asked": rfc3339(self.asked),
            "decided": rfc3339(self.decided) if self.decided is not None else None,
            "by": self.by,
            "reason": self.reason,
        }

    def diff(self, hide: frozenset[str] | None = None) -> str:
        """``git diff base...sha``: what the merge brings (empty when the repository
        cannot say: it says why instead)."""
        try:
            repo = Repository(self.repo) if hide is None else Repository(self.repo, hide)
            return repo.diff(self.base, self.sha)
        except GitError as e:
            return f"(no diff: {e})"


def _approval(r: Any) -> Approval:
    return Approval(
        task=int(r["task"]),
        repo=Path(r["repo"]),
        branch=r["branch"],
        base=r["base"],
        sha=r["sha"],
        merge=r["merge"],
        logs=tuple(json.loads(r["logs"])),
        results=tuple(json.loads(r["results"])),
        state=ApprovalState(r["state"]),
        asked=float(r["asked"]),
        decided=r["decided"],
        by=r["by"],
        reason=r["reason"],
    )


class Approvals:
    """The approvals in a task store.

    Args:
        store: the task store (its database holds them).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate(SCHEMA)

    def get(self, task: int) -> Approval | None:
        rows = self.store.rows("SELECT * FROM approvals WHERE task=?", (task,))
        return _approval(rows[0]) if rows else None

    def waiting(self) -> list[Approval]:
        """The merges waiting for a person, oldest first (of tasks still verifying: one
        cancelled meanwhile waits for nobody)."""
        rows = self.store.rows(
            "SELECT a.* FROM approvals a JOIN tasks t ON t.id = a.task WHERE a.state=? AND t.state=? ORDER BY a.asked",
            (str(ApprovalState.WAITING), str(TaskState.VERIFYING)),
        )
        return [_approval(r) for r in rows]

    def ask(self, a: Approval) -> bool:
        """Record that ``a.task``'s merge of ``a.sha`` waits for a person; False when it
        waits for that very commit already (nothing changes). The task's history gets
        the reason :data:`WAITING_REASON`."""
        with self.store.tx() as db:
            row = db.execute("SELECT sha, state FROM approvals WHERE task=?", (a.task,)).fetchone()
            if row is not None and row["sha"] == a.sha and row["state"] == str(ApprovalState.WAITING):
                return False
            db.execute(
                "INSERT OR REPLACE INTO approvals (task, repo, branch, base, sha, merge, logs, results, state, asked) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    a.task,
                    str(a.repo),
                    a.branch,
                    a.base,
                    a.sha,
                    a.merge,
                    json.dumps(list(a.logs)),
                    json.dumps(list(a.results)),
                    str(ApprovalState.WAITING),
                    a.asked,
                ),
            )
            db.execute(
                "INSERT INTO events (task, time, state, agent, reason) "
                "SELECT id, ?, state, agent, ? FROM tasks WHERE id=?",
                (a.asked, f"{WAITING_REASON} (miyabi approve-merge {a.task}; checked {a.sha[:12]})", a.task),
            )
        return True

    def decide(self, task: int, approve: bool, by: str, reason: str = "") -> Approval:
        """Approve (or reject, with ``reason``) the merge task ``task`` waits for.

        Raises:
            MergeNotWaiting: its merge does not wait for a person (no approval asked, or it
                was decided already, or the task is no longer verifying).
        """
        state = ApprovalState.APPROVED if approve else ApprovalState.REJECTED
        now = self.store.clock()
        with self.store.tx() as db:
            row = db.execute(
                "SELECT a.state AS astate, t.state AS tstate FROM approvals a JOIN tasks t ON t.id = a.task "
                "WHERE a.task=?",
                (task,),
            ).fetchone()
            if row is None or row["astate"] != ApprovalState.WAITING or row["tstate"] != TaskState.VERIFYING:
                what = "" if row is None else f" (its merge was {row['astate']}; the task is {row['tstate']})"
                raise MergeNotWaiting(
                    f"task {task} is not waiting for approval{what}; see `miyabi approve-merge --list`"
                )
            db.execute(
                "UPDATE approvals SET state=?, decided=?, by=?, reason=? WHERE task=?",
                (str(state), now, by, reason, task),
            )
            what = f"merge {state} by {by}" + (f": {reason}" if reason else "")
            db.execute(
                "INSERT INTO events (task, time, state, agent, reason) "
                "SELECT id, ?, state, agent, ? FROM tasks WHERE id=?",
                (now, what, task),
            )
        found = self.get(task)
        assert found is not None
        return found

    def clear(self, task: int) -> None:
        """Forget ``task``'s approval (its merge landed, or its commit changed)."""
        with self.store.tx() as db:
            db.execute("DELETE FROM approvals WHERE task=?", (task,))


def decide(home_root: Path, task: int, approve: bool, by: str, reason: str = "") -> Approval:
    """A person's decision on task ``task``'s waiting merge, recorded (with the event
    ``merge-approved`` or ``merge-rejected``); the controller acts on it at its next
    pass (the write to the task database wakes it).

    Raises:
        MergeNotWaiting: the task's merge does not wait for a person.
        TaskError: no such task.
    """
    from miyabi.events import EventKind, append_event

    store = Store.of_home(home_root)
    try:
        store.get(task)  # TaskError for no such task
        a = Approvals(store).decide(task, approve, by, reason)
    finally:
        store.close()
    if approve:
        append_event(home_root, EventKind.MERGE_APPROVED, task=task, commit=a.sha, by=by)
    else:
        append_event(home_root, EventKind.MERGE_REJECTED, task=task, commit=a.sha, by=by, reason=reason)
    return a


def waiting(home_root: Path) -> list[Approval]:
    """The merges waiting for a person in this home, oldest first."""
    store = Store.of_home(home_root)
    try:
        return Approvals(store).waiting()
    finally:
        store.close()
