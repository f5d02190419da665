"""What the pipeline keeps in the task database: pool instances and worktrees.

An **instance** is one agent started for one task of a pool (``coder-42``): it is
``preparing`` while its worktree is made and set up, ``ready`` while its pane runs,
and ``ended`` once its task is no longer its own. A **worktree** is a branch of the
pool's repository checked out under the home for a task and its follow-ups; it
stays until its pull request is merged or closed (then it is removed), or, in local
mode, until its branch is merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from miyabi.database import AddColumn, Schema
from miyabi.times import rfc3339
from miyabi.work.store import Store

TABLES = """
CREATE TABLE IF NOT EXISTS instances (
  name TEXT PRIMARY KEY,
  pool TEXT NOT NULL,
  task INTEGER NOT NULL REFERENCES tasks(id),
  branch TEXT NOT NULL,
  path TEXT NOT NULL,
  state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  created REAL NOT NULL,
  updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_state ON instances(state, pool);
CREATE TABLE IF NOT EXISTS worktrees (
  repo TEXT NOT NULL,
  branch TEXT NOT NULL,
  path TEXT NOT NULL,
  base TEXT NOT NULL,
  task INTEGER NOT NULL REFERENCES tasks(id),
  pr_number INTEGER,
  pr_url TEXT,
  state TEXT NOT NULL,
  created REAL NOT NULL,
  PRIMARY KEY (repo, branch)
);
CREATE TABLE IF NOT EXISTS landed (
  repo TEXT NOT NULL,
  base TEXT NOT NULL,
  sha TEXT NOT NULL,
  time REAL NOT NULL,
  PRIMARY KEY (repo, base)
);
"""

SCHEMA = Schema(
    "pipeline",
    (TABLES, AddColumn("worktrees", "set_up", "INTEGER NOT NULL DEFAULT 0")),
)
"""The pipeline's tables in the task database (:mod:`miyabi.database`). Both steps are
idempotent: versions before schema versions created the tables when missing, and the
first version with pools made ``worktrees`` without ``set_up``."""


class InstanceState(StrEnum):
    """Where a pool instance is in its life."""

    PREPARING = "preparing"
    READY = "ready"
    ENDED = "ended"


class WorktreeState(StrEnum):
    """Where a task's worktree is in its life."""

    ACTIVE = "active"
    """Work goes on in it."""
    REVIEW = "review"
    """Its pull request is open."""
    MERGED = "merged"
    CLOSED = "closed"
    """Its pull request was closed unmerged."""
    REMOVED = "removed"
    """Removed from disk (after merged or closed)."""


@dataclass(frozen=True)
class Instance:
    """One pool instance (see the module's docstring)."""

    name: str
    pool: str
    task: int
    branch: str
    path: Path
    state: InstanceState
    reason: str
    created: float

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pool": self.pool,
            "task": self.task,
            "branch": self.branch,
            "worktree": str(self.path),
            "state": str(self.state),
            "reason": self.reason,
            "created": rfc3339(self.created),
        }


@dataclass(frozen=True)
class Worktree:
    """A task's worktree (see the module's docstring)."""

    repo: Path
    branch: str
    path: Path
    base: str
    task: int
    pr_number: int | None
    pr_url: str | None
    state: WorktreeState
    set_up: bool = False
    """Its ``setup`` commands ran to the end."""

    def to_json(self) -> dict[str, Any]:
        return {
            "repo": str(self.repo),
            "branch": self.branch,
            "path": str(self.path),
            "base": self.base,
            "task": self.task,
            "pr_number": self.pr_number,
            "pr_url": self.pr_url,
            "state": str(self.state),
        }


def _instance(r: Any) -> Instance:
    return Instance(
        r["name"],
        r["pool"],
        r["task"],
        r["branch"],
        Path(r["path"]),
        InstanceState(r["state"]),
        r["reason"],
        r["created"],
    )


def _worktree(r: Any) -> Worktree:
    return Worktree(
        Path(r["repo"]),
        r["branch"],
        Path(r["path"]),
        r["base"],
        r["task"],
        r["pr_number"],
        r["pr_url"],
        WorktreeState(r["state"]),
        bool(r["set_up"]),
    )


class Records:
    """The pipeline's tables, in the task store's database (its transactions).

    Args:
        store: the task store.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate(SCHEMA)

    # -- instances

    def add_instance(self, name: str, pool: str, task: int, branch: str, path: Path) -> bool:
        """Record a new ``preparing`` instance, and the task's pool and branch, in one
        transaction; False when ``name`` is taken."""
        now = self.store.clock()
        with self.store.tx() as db:
            if db.execute("SELECT 1 FROM instances WHERE name=?", (name,)).fetchone():
                return False
            db.execute(
                "INSERT INTO instances (name, pool, task, branch, path, state, created, updated) VALUES "
                "(?,?,?,?,?,?,?,?)",
                (name, pool, task, branch, str(path), str(InstanceState.PREPARING), now, now),
            )
            db.execute("UPDATE tasks SET pool=?, branch=? WHERE id=?", (pool, branch, task))
        return True

    def set_instance(self, name: str, state: InstanceState, reason: str = "") -> None:
        with self.store.tx() as db:
            db.execute(
                "UPDATE instances SET state=?, reason=?, updated=? WHERE name=?",
                (str(state), reason, self.store.clock(), name),
            )

    def instances(self, *states: InstanceState, pool: str | None = None) -> list[Instance]:
        """Instances in ``states`` (all when none given), oldest first; only ``pool``'s when given."""
        q, args = "SELECT * FROM instances WHERE 1=1", []
        if states:
            q += f" AND state IN ({','.join('?' * len(states))})"
            args += [str(s) for s in states]
        if pool is not None:
            q += " AND pool=?"
            args.append(pool)
        return [_instance(r) for r in self.store.rows(q + " ORDER BY created, name", args)]

    def predecessor(self, inst: Instance) -> str | None:
        """The instance of ``inst``'s pool that last worked on its branch before it (in
        the same worktree: a follow-up's, a task's back from failed), or None."""
        rows = self.store.rows(
            "SELECT name FROM instances WHERE pool=? AND branch=? AND path=? AND state=? AND name<>? "
            "AND created<=? ORDER BY created DESC, name DESC LIMIT 1",
            (inst.pool, inst.branch, str(inst.path), str(InstanceState.ENDED), inst.name, inst.created),
        )
        return str(rows[0][0]) if rows else None

    def names(self) -> set[str]:
        """Every instance name ever used (names are never reused: inboxes and logs are by name)."""
        return {r[0] for r in self.store.rows("SELECT name FROM instances")}

    # -- worktrees

    def add_worktree(self, repo: Path, branch: str, path: Path, base: str, task: int) -> None:
        with self.store.tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO worktrees (repo, branch, path, base, task, state, created) VALUES "
                "(?,?,?,?,?,?,?)",
                (str(repo), branch, str(path), base, task, str(WorktreeState.ACTIVE), self.store.clock()),
            )

    def worktree(self, repo: Path, branch: str) -> Worktree | None:
        rows = self.store.rows("SELECT * FROM worktrees WHERE repo=? AND branch=?", (str(repo), branch))
        return _worktree(rows[0]) if rows else None

    def worktrees(self, *states: WorktreeState) -> list[Worktree]:
        q, args = "SELECT * FROM worktrees", []
        if states:
            q += f" WHERE state IN ({','.join('?' * len(states))})"
            args = [str(s) for s in states]
        return [_worktree(r) for r in self.store.rows(q + " ORDER BY created", args)]

    def set_pr(self, repo: Path, branch: str, number: int, url: str) -> None:
        with self.store.tx() as db:
            db.execute(
                "UPDATE worktrees SET pr_number=?, pr_url=?, state=? WHERE repo=? AND branch=?",
                (number, url, str(WorktreeState.REVIEW), str(repo), branch),
            )

    def set_up_done(self, repo: Path, branch: str) -> None:
        with self.store.tx() as db:
            db.execute("UPDATE worktrees SET set_up=1 WHERE repo=? AND branch=?", (str(repo), branch))

    def landed(self, repo: Path, base: str, sha: str) -> None:
        """Record that ``base`` of ``repo`` moved to ``sha``, a merge that passed the checks."""
        with self.store.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO landed (repo, base, sha, time) VALUES (?,?,?,?)",
                (str(repo), base, sha, self.store.clock()),
            )

    def last_landed(self, repo: Path, base: str) -> str | None:
        """The last commit a local merge moved ``base`` to (it passed the checks), if any."""
        rows = self.store.rows("SELECT sha FROM landed WHERE repo=? AND base=?", (str(repo), base))
        return str(rows[0][0]) if rows else None

    def set_worktree_state(self, repo: Path, branch: str, state: WorktreeState) -> None:
        with self.store.tx() as db:
            db.execute("UPDATE worktrees SET state=? WHERE repo=? AND branch=?", (str(state), str(repo), branch))
