"""The task store: SQLite (WAL) at ``state/miyabi.db`` under the miyabi home.

A task comes from a source (``local``, ``github``, ``job``), has a title, body,
labels and priority, and moves through states: ``queued`` → ``assigned`` →
``in_progress`` → ``done`` | ``failed`` | ``cancelled``; it waits in ``blocked``
while a task it depends on is not done (or cancelled). Every change is a row in the
append-only ``events`` table, with its reason. Several processes (the controller,
``miyabi task`` run by agents) share the database: WAL lets readers run beside the
one writer, and each change is one transaction (``BEGIN IMMEDIATE``). The file is
private (0600), like everything in the home.

A task an agent holds (``assigned``/``in_progress``) carries a **lease**: the identity
of the agent process its message was delivered to (``holder``, pid and start time),
and, when it has a time limit, a ``deadline``. When that process ends, or the
deadline passes, the task is handed back (:meth:`Store.hand_back`): to the agent's
next process or to the queue, with the attempt counted, and failed for good after its
last attempt. The idea of a lease bound to the worker's identity is the visibility
timeout of work queues (Amazon SQS) and Kubernetes' ``Lease`` objects; here the
identity is the process, not a clock.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from miyabi.errors import MiyabiError
from miyabi.files import private_dir, private_file
from miyabi.times import rfc3339


class TaskState(StrEnum):
    """Where a task is in its life."""

    QUEUED = "queued"
    BLOCKED = "blocked"
    """A task it depends on is not done (or cancelled) yet."""
    ASSIGNED = "assigned"
    """Routed to an agent; its message is on the way."""
    IN_PROGRESS = "in_progress"
    """The agent got its message."""
    VERIFYING = "verifying"
    """A pool task its agent says is done: the repository's checks run on its worktree."""
    SHARED = "shared"
    """Published on the bus (``bus:``): a host that runs its route's agent runs it, and
    its result comes back here."""
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ClaimState(StrEnum):
    """How far the claim of an issue got (GitHub tasks)."""

    NONE = ""
    CLAIMING = "claiming"
    """The todo label's removal was sent; the answer may not have come."""
    CLAIMED = "claimed"


class Source(StrEnum):
    """Where a task came from."""

    LOCAL = "local"
    GITHUB = "github"
    JOB = "job"
    BUS = "bus"
    """A host's copy of a task another host (or this one) published on the bus."""


STATES = tuple(TaskState)
OPEN = (
    TaskState.QUEUED,
    TaskState.BLOCKED,
    TaskState.ASSIGNED,
    TaskState.IN_PROGRESS,
    TaskState.VERIFYING,
    TaskState.SHARED,
)
HELD = (TaskState.ASSIGNED, TaskState.IN_PROGRESS)
"""States in which a task belongs to an agent (and counts towards its ``wip``)."""
FINISHED = (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)
PRIORITIES = ("high", "normal", "low")

_TRANSITIONS: dict[TaskState, tuple[TaskState, ...]] = {
    TaskState.QUEUED: (TaskState.BLOCKED, TaskState.ASSIGNED, TaskState.CANCELLED, TaskState.SHARED),
    TaskState.SHARED: (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED),
    TaskState.BLOCKED: (TaskState.QUEUED, TaskState.CANCELLED),
    TaskState.ASSIGNED: (
        TaskState.IN_PROGRESS,
        TaskState.DONE,
        TaskState.FAILED,
        TaskState.CANCELLED,
        TaskState.QUEUED,
        TaskState.ASSIGNED,
        TaskState.VERIFYING,
    ),
    TaskState.IN_PROGRESS: (
        TaskState.DONE,
        TaskState.FAILED,
        TaskState.CANCELLED,
        TaskState.QUEUED,
        TaskState.ASSIGNED,
        TaskState.VERIFYING,
    ),
    TaskState.VERIFYING: (
        TaskState.IN_PROGRESS,
        TaskState.DONE,
        TaskState.FAILED,
        TaskState.CANCELLED,
        TaskState.QUEUED,
    ),
    TaskState.DONE: (),
    TaskState.FAILED: (TaskState.QUEUED,),
    TaskState.CANCELLED: (TaskState.QUEUED,),
}
"""Allowed state changes (``queued`` from assigned/in_progress: the agent failed;
from failed/cancelled: ``miyabi task retry``; ``assigned`` again from
assigned/in_progress: handed back to the same agent as a new attempt; ``verifying``
from assigned/in_progress: a pool task its agent calls done; back to ``in_progress``
when a check fails and the agent gets another round; ``shared`` from queued: published
on the bus, ending as its result comes back)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
  id INTEGER PRIMARY KEY,
  source TEXT NOT NULL,
  repo TEXT,
  number INTEGER,
  url TEXT,
  title TEXT NOT NULL,
  body TEXT NOT NULL DEFAULT '',
  labels TEXT NOT NULL DEFAULT '[]',
  priority TEXT NOT NULL DEFAULT 'normal',
  state TEXT NOT NULL DEFAULT 'queued',
  agent TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  created REAL NOT NULL,
  updated REAL NOT NULL,
  claim TEXT NOT NULL DEFAULT '',
  job_started INTEGER NOT NULL DEFAULT 0,
  key TEXT,
  holder TEXT,
  deadline REAL,
  timeout REAL,
  max_attempts INTEGER,
  rank INTEGER NOT NULL DEFAULT 1,
  route TEXT,
  message TEXT,
  pool TEXT,
  branch TEXT,
  rounds INTEGER NOT NULL DEFAULT 0,
  parent INTEGER,
  UNIQUE (source, repo, number)
);
CREATE TABLE IF NOT EXISTS deps (
  task INTEGER NOT NULL REFERENCES tasks(id),
  depends_on INTEGER NOT NULL REFERENCES tasks(id),
  PRIMARY KEY (task, depends_on)
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  task INTEGER NOT NULL REFERENCES tasks(id),
  time REAL NOT NULL,
  state TEXT NOT NULL,
  agent TEXT,
  reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE TABLE IF NOT EXISTS job_runs (
  task INTEGER NOT NULL REFERENCES tasks(id),
  attempt INTEGER NOT NULL,
  step INTEGER NOT NULL,
  command TEXT NOT NULL,
  agent TEXT NOT NULL,
  started REAL NOT NULL,
  seconds REAL,
  exit_code INTEGER,
  output TEXT,
  PRIMARY KEY (task, attempt, step)
);
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY,
  task INTEGER NOT NULL REFERENCES tasks(id),
  action TEXT NOT NULL,
  text TEXT NOT NULL DEFAULT '',
  tries INTEGER NOT NULL DEFAULT 0,
  sent REAL
);
"""

COLUMNS_ADDED = {
    "job_started": "INTEGER NOT NULL DEFAULT 0",
    "key": "TEXT",
    "holder": "TEXT",
    "deadline": "REAL",
    "timeout": "REAL",
    "max_attempts": "INTEGER",
    "rank": "INTEGER NOT NULL DEFAULT 1",
    "route": "TEXT",
    "message": "TEXT",
    "pool": "TEXT",
    "branch": "TEXT",
    "rounds": "INTEGER NOT NULL DEFAULT 0",
    "parent": "INTEGER",
}
"""Columns later versions added to ``tasks``: added to a database made before them."""

BACKFILL = {
    "job_started": """
UPDATE tasks SET job_started = attempts WHERE source = 'job' AND EXISTS (
  SELECT 1 FROM events e WHERE e.task = tasks.id AND e.reason LIKE 'job started%'
  AND e.id > COALESCE((SELECT MAX(a.id) FROM events a WHERE a.task = tasks.id AND a.state = 'assigned'), 0))
""",
    "rank": """
UPDATE tasks SET rank = CASE
  WHEN labels LIKE '%"priority:high"%' THEN 0 WHEN labels LIKE '%"priority:low"%' THEN 2
  WHEN priority = 'high' THEN 0 WHEN priority = 'low' THEN 2 ELSE 1 END
""",
}
"""Run once when a column is added: versions before it recorded a job's start as an
event ("job started by …" after the last assignment), not in a column."""

INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS tasks_key ON tasks(source, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_order ON tasks(state, rank, created, id);
CREATE INDEX IF NOT EXISTS tasks_route ON tasks(state, route, rank, created, id);
CREATE INDEX IF NOT EXISTS tasks_agent ON tasks(agent, state);
CREATE INDEX IF NOT EXISTS deps_depends_on ON deps(depends_on);
CREATE INDEX IF NOT EXISTS tasks_issue ON tasks(repo, number);
"""
"""Indexes the scheduler's queries use: queued tasks in priority order (all, or those
routed to some agents), the tasks an agent holds, and the tasks waiting for one; and
the task of an issue (``repo``, ``number``: the UNIQUE constraint starts with
``source``, so it does not serve a lookup by issue)."""

PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}


def rank_of(priority: str, labels: Sequence[str]) -> int:
    """A task's place in the queue (0 first): labels ``priority:high``/``priority:low``
    win over its own ``priority``."""
    if "priority:high" in labels:
        return 0
    if "priority:low" in labels:
        return 2
    return PRIORITY_RANK.get(priority, 1)


class Handback(StrEnum):
    """Where :meth:`Store.hand_back` put a task."""

    RESENT = "resent"
    """Assigned again to the same agent (its next process gets it)."""
    REQUEUED = "requeued"
    FAILED = "failed"
    """It had used its last attempt."""
    GONE = "gone"
    """It was no longer held by that process (finished or handed back meanwhile)."""


REF_RE = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)#(?P<number>\d+)$")


class TaskError(MiyabiError):
    """A task cannot be found, or the change asked for is not allowed."""


@dataclass(frozen=True)
class Task:
    """One task, as stored.

    Attributes:
        id: its number in the store.
        source: ``local``, ``github`` or ``job``.
        repo, number, url: the external reference (``acme/widgets``, 3, its URL).
        title, body: text (from an issue: untrusted; it reaches agents as message text only).
        labels: label names.
        priority: ``high``, ``normal`` or ``low``.
        state: where it is.
        agent: the agent it is assigned to, if any.
        attempts: how many times it was assigned.
        created, updated: Unix times.
        claim: how far the claim of its issue got.
        job_started: for a job, the assignment (its ``attempts`` count then) in which
            the worker started it; 0 when never.
        key: for a job, the submitter's id of it (unique among jobs).
        holder: the lease: ``PID:START`` of the agent process the task's message was
            delivered to (None while not delivered).
        deadline: Unix time by which the holder must finish (None: no limit).
        timeout: the task's own in-progress limit in seconds (None: the layout's).
        max_attempts: the task's own number of attempts (None: the layout's).
        message: the id of the message of its current assignment (only that one's
            delivery leases it).
        pool: the pool it was routed to (None: a named agent's task).
        branch: for a pool task, its git branch (its worktree is the pipeline's record).
        rounds: verify rounds it failed so far.
        parent: the task it follows up (a review comment, a failing check), if any.
    """

    id: int
    source: str
    repo: str | None
    number: int | None
    url: str | None
    title: str
    body: str
    labels: tuple[str, ...]
    priority: str
    state: TaskState
    agent: str | None
    attempts: int
    created: float
    updated: float
    claim: ClaimState = ClaimState.NONE
    job_started: int = 0
    key: str | None = None
    holder: str | None = None
    deadline: float | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    message: str | None = None
    pool: str | None = None
    branch: str | None = None
    rounds: int = 0
    parent: int | None = None

    @property
    def from_bus(self) -> bool:
        """Whether this is this host's copy of a task claimed from the bus (``bus:``)."""
        return self.source == Source.BUS or (self.key is not None and self.key.startswith("bus:"))

    @property
    def ref(self) -> str:
        """``acme/widgets#3`` for an issue, ``#12`` for a local task."""
        return f"{self.repo}#{self.number}" if self.repo and self.number is not None else f"#{self.id}"

    def to_json(self) -> dict[str, Any]:
        """The task as ``--json`` prints it (times in RFC 3339)."""
        return {
            "id": self.id,
            "source": self.source,
            "ref": self.ref,
            "title": self.title,
            "state": str(self.state),
            "agent": self.agent,
            "priority": self.priority,
            "labels": list(self.labels),
            "url": self.url,
            "attempts": self.attempts,
            "created": rfc3339(self.created),
            "updated": rfc3339(self.updated),
            "deadline": rfc3339(self.deadline) if self.deadline is not None else None,
            "timeout": self.timeout,
            "max_attempts": self.max_attempts,
            "body": self.body,
            "pool": self.pool,
            "branch": self.branch,
            "rounds": self.rounds,
            "parent": self.parent,
        }

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> Task:
        return cls(
            id=r["id"],
            source=r["source"],
            repo=r["repo"],
            number=r["number"],
            url=r["url"],
            title=r["title"],
            body=r["body"],
            labels=tuple(json.loads(r["labels"])),
            priority=r["priority"],
            state=TaskState(r["state"]),
            agent=r["agent"],
            attempts=r["attempts"],
            created=r["created"],
            updated=r["updated"],
            claim=ClaimState(r["claim"]),
            job_started=r["job_started"],
            key=r["key"],
            holder=r["holder"],
            deadline=r["deadline"],
            timeout=r["timeout"],
            max_attempts=r["max_attempts"],
            message=r["message"],
            pool=r["pool"],
            branch=r["branch"],
            rounds=r["rounds"],
            parent=r["parent"],
        )


class Store:
    """The task database of one miyabi home.

    Args:
        path: the SQLite file (created with its directory, mode 0700).
        clock: Unix time (injectable).
    """

    def __init__(self, path: Path, clock: Any = time.time) -> None:
        private_dir(path.parent)
        # SQLite gives its -wal and -shm files the database's mode. An existing file is
        # only chmod-ed, never opened: closing any descriptor of a database file drops
        # every POSIX lock this process holds on it (other connections of this process
        # included), and another process closing its connection then believes it is the
        # last, checkpoints and deletes the WAL under our feet (sqlite.org/howtocorrupt.html, 2.2).
        if path.exists():
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
        else:
            private_file(path)
        self.path = path
        self.clock = clock
        self.lock = threading.RLock()
        """Serialises this connection's use: the controller's threads share it."""
        self.db = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self._migrate()
        self._commits = 0
        """Commits made through this connection (``PRAGMA data_version`` counts the others')."""
        self._depth = 0
        """How many :meth:`tx` blocks are open on this connection (the outer one and its savepoints)."""

    def _migrate(self) -> None:
        """Add the columns and indexes later versions need to an older database."""
        with self.lock:
            have = {r[1] for r in self.db.execute("PRAGMA table_info(tasks)")}
            for name, decl in COLUMNS_ADDED.items():
                if name in have:
                    continue
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    if name not in {
                        r[1] for r in self.db.execute("PRAGMA table_info(tasks)")
                    }:  # not another process first
                        self.db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {decl}")
                        if name in BACKFILL:
                            self.db.execute(BACKFILL[name])
                    self.db.execute("COMMIT")
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise
            self.db.executescript(INDEXES)

    @classmethod
    def of_home(cls, home_root: Path) -> Store:
        """``state/miyabi.db`` under the home."""
        return cls(home_root / "state" / "miyabi.db")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: one writer at a time, across
        processes by SQLite's lock and across this process's threads by ours). Inside
        another ``tx()`` of the same thread it is a savepoint of that one: its changes
        commit with it, and an error undoes only its own (so a batch of changes is one
        commit, and one that fails does not undo the rest)."""
        with self.lock:
            if self._depth:
                name = f"s{self._depth}"
                self.db.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield self.db
                    self.db.execute(f"RELEASE {name}")
                except BaseException:
                    self.db.execute(f"ROLLBACK TO {name}")
                    self.db.execute(f"RELEASE {name}")
                    raise
                finally:
                    self._depth -= 1
                return
            self.db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.db
                self.db.execute("COMMIT")
                self._commits += 1
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0

    def version(self) -> tuple[int, int]:
        """A token that changes whenever any connection (any process) committed to the
        database: compare two to know whether anything changed between them (cheap: no
        table is read)."""
        with self.lock:
            return (int(self.db.execute("PRAGMA data_version").fetchone()[0]), self._commits)

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.lock:
            return list(self.db.execute(sql, args))

    rows = _rows
    """Read rows with one query (for the records other services keep in this database)."""

    # -- reading

    def get(self, ref: str | int) -> Task:
        """A task by id (``12``, ``#12``) or by reference (``acme/widgets#3``).

        Raises:
            TaskError: no such task.
        """
        text = str(ref).strip()
        m = REF_RE.match(text)
        if m:
            rows = self._rows("SELECT * FROM tasks WHERE repo=? AND number=?", (m["repo"], int(m["number"])))
        elif text.lstrip("#").isdigit():
            rows = self._rows("SELECT * FROM tasks WHERE id=?", (int(text.lstrip("#")),))
        else:
            raise TaskError(f"{text!r} is not a task id (12) or reference (owner/name#3)")
        row = rows[0] if rows else None
        if row is None:
            raise TaskError(f"no task {text}; list them with `miyabi task ls`")
        return Task.from_row(row)

    def find(self, repo: str, number: int) -> Task | None:
        """The task of issue ``repo#number``, if there is one."""
        rows = self._rows("SELECT * FROM tasks WHERE repo=? AND number=?", (repo, number))
        return Task.from_row(rows[0]) if rows else None

    def find_many(self, repo: str, numbers: Sequence[int]) -> dict[int, Task]:
        """The tasks of issues ``numbers`` of ``repo`` that have one, by number (one
        indexed query per 500 numbers)."""
        out: dict[int, Task] = {}
        wanted = sorted(set(numbers))
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._rows(f"SELECT * FROM tasks WHERE repo=? AND number IN ({marks})", (repo, *chunk)):
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
        return [Task.from_row(r) for r in self._rows(q + " ORDER BY id", args)]

    def depends_on(self, task_id: int) -> list[int]:
        return [r[0] for r in self._rows("SELECT depends_on FROM deps WHERE task=? ORDER BY depends_on", (task_id,))]

    def history(self, task_id: int) -> list[dict[str, Any]]:
        """The task's changes, oldest first: ``time`` (RFC 3339), ``state``, ``agent``, ``reason``."""
        rows = self._rows("SELECT time, state, agent, reason FROM events WHERE task=? ORDER BY id", (task_id,))
        return [{**dict(r), "time": rfc3339(r["time"])} for r in rows]

    def find_key(self, source: str, key: str) -> Task | None:
        """The task of ``source`` with the submitter's id ``key`` (a job's id), if any."""
        rows = self._rows("SELECT * FROM tasks WHERE source=? AND key=?", (source, key))
        return Task.from_row(rows[0]) if rows else None

    # -- writing

    def add(
        self,
        title: str,
        body: str = "",
        labels: Sequence[str] = (),
        priority: str = "normal",
        depends_on: Sequence[int] = (),
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
    ) -> Task:
        """Store a new task (``queued``).

        Args:
            timeout: its own in-progress limit in seconds (None: the layout's).
            max_attempts: its own number of attempts (None: the layout's).
            parent, pool, branch: for a follow-up, the task it follows, and its pool and
                branch (stored in the same transaction).

        Raises:
            TaskError: empty title, bad priority, unknown dependency, or ``key`` taken
                by another task of the same source.
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
        with self.tx() as db:
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
                "updated, key,"
                " timeout, max_attempts, rank, parent, pool, branch) VALUES (?,?,?,?,?,?,?,?, 'queued', ?, ?, ?, ?, "
                "?, ?, ?, ?, ?)",
                (
                    source,
                    repo,
                    number,
                    url,
                    title,
                    body,
                    json.dumps(list(labels)),
                    priority,
                    now,
                    now,
                    key,
                    timeout,
                    max_attempts,
                    rank_of(priority, labels),
                    parent,
                    pool,
                    branch,
                ),
            )
            tid = int(cur.lastrowid or 0)
            for dep in depends_on:
                db.execute("INSERT OR IGNORE INTO deps (task, depends_on) VALUES (?,?)", (tid, dep))
            db.execute(
                "INSERT INTO events (task, time, state, reason) VALUES (?,?,?,?)",
                (tid, now, str(TaskState.QUEUED), f"added from {source}"),
            )
        return self.get(tid)

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
        return self.get(task_id)

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
        """:meth:`set_state` inside a transaction. A task leaving ``assigned``/``in_progress``
        (or assigned afresh) loses its lease. ``notice``: the GitHub outbox action
        (default: the state, for done and failed); ``text``: what it is told (default: ``reason``)."""
        now = self.clock()
        row = db.execute("SELECT state, agent, source FROM tasks WHERE id=?", (task_id,)).fetchone()
        if row is None:
            raise TaskError(f"no task {task_id}")
        current = row["state"]
        allowed = expect if expect is not None else [s for s, to in _TRANSITIONS.items() if state in to]
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

    # -- leases

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
        return [Task.from_row(r) for r in self._rows(q + " ORDER BY id", args)]

    def held_counts(self) -> dict[str, int]:
        """Agent → how many tasks it holds (what its ``wip`` limit counts)."""
        rows = self._rows(
            "SELECT agent, COUNT(*) FROM tasks WHERE state IN (?, ?) AND agent IS NOT NULL GROUP BY agent",
            (str(TaskState.ASSIGNED), str(TaskState.IN_PROGRESS)),
        )
        return {r[0]: int(r[1]) for r in rows}

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

    def queued(self, routed_to: str | None = None) -> Iterator[Task]:
        """Queued tasks in the order they are assigned: priority, then age (an index
        walk, read lazily in pages: a pass stops reading once it has what it needs).
        With ``routed_to``, only those whose recorded route (:meth:`set_routes`) is
        that agent, through the index on routes."""
        table, where, args = "tasks INDEXED BY tasks_order", "state=?", [str(TaskState.QUEUED)]
        if routed_to is not None:
            table, where = "tasks INDEXED BY tasks_route", "state=? AND route=?"
            args.append(routed_to)
        page = 64
        rows = self._rows(f"SELECT * FROM {table} WHERE {where} ORDER BY rank, created, id LIMIT {page}", args)
        while rows:
            yield from (Task.from_row(r) for r in rows)
            if len(rows) < page:
                return
            last = rows[-1]
            rows = self._rows(
                f"SELECT * FROM {table} WHERE {where} AND (rank, created, id) > (?, ?, ?) ORDER BY rank, created, id "
                f"LIMIT {page}",
                [*args, last["rank"], last["created"], last["id"]],
            )

    def unrouted(self) -> list[Task]:
        """Queued tasks whose route is not recorded yet (new ones, or all after
        :meth:`clear_routes`)."""
        return [
            Task.from_row(r)
            for r in self._rows(
                "SELECT * FROM tasks WHERE state=? AND route IS NULL ORDER BY id", (str(TaskState.QUEUED),)
            )
        ]

    def set_routes(self, routes: Mapping[int, str | None]) -> None:
        """Record which agent the routes pick for each task (``""``: none), so a pass
        reads only the queued tasks of agents that have room."""
        with self.tx() as db:
            db.executemany("UPDATE tasks SET route=? WHERE id=?", [(a or "", tid) for tid, a in routes.items()])

    def clear_routes(self) -> None:
        """Forget the recorded routes of queued tasks (the routes or agents changed)."""
        with self.tx() as db:
            db.execute("UPDATE tasks SET route=NULL WHERE state=? AND route IS NOT NULL", (str(TaskState.QUEUED),))

    def waiting_on_deps(self) -> list[tuple[Task, list[int]]]:
        """Queued or blocked tasks that have dependencies, each with the ids of those
        not done (nor cancelled) yet."""
        rows = self._rows(
            "SELECT t.*, (SELECT group_concat(d.depends_on) FROM deps d JOIN tasks x ON x.id = d.depends_on"
            "  WHERE d.task = t.id AND x.state NOT IN ('done', 'cancelled')) AS open_deps"
            " FROM tasks t WHERE t.id IN (SELECT task FROM deps) AND t.state IN ('queued', 'blocked')"
            " ORDER BY t.id"
        )
        return [
            (Task.from_row(r), sorted(int(x) for x in r["open_deps"].split(",")) if r["open_deps"] else [])
            for r in rows
        ]

    def open_deps(self, task_id: int) -> list[int]:
        """Ids of the tasks ``task_id`` depends on that are not done (nor cancelled)."""
        rows = self._rows(
            "SELECT d.depends_on FROM deps d JOIN tasks x ON x.id = d.depends_on"
            " WHERE d.task=? AND x.state NOT IN ('done', 'cancelled') ORDER BY d.depends_on",
            (task_id,),
        )
        return [int(r[0]) for r in rows]

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
        return [dict(r) for r in self._rows("SELECT * FROM job_runs WHERE task=? ORDER BY attempt, step", (task_id,))]

    def set_claim(self, task_id: int, claim: ClaimState) -> None:
        """Record how far the claim of an issue got."""
        with self.tx() as db:
            db.execute("UPDATE tasks SET claim=? WHERE id=?", (str(claim), task_id))

    def outbox(self) -> list[tuple[int, int, str, str]]:
        """Unsent notices for GitHub: (outbox id, task id, action, text)."""
        return [
            (r[0], r[1], r[2], r[3])
            for r in self._rows("SELECT id, task, action, text FROM outbox WHERE sent IS NULL ORDER BY id")
        ]

    def outbox_tried(self, outbox_id: int) -> int:
        """Count a failed attempt at a notice; return the attempts so far."""
        with self.tx() as db:
            db.execute("UPDATE outbox SET tries = tries + 1 WHERE id=?", (outbox_id,))
            return int(db.execute("SELECT tries FROM outbox WHERE id=?", (outbox_id,)).fetchone()[0])

    def add_dependency(self, task_id: int, depends_on: int) -> None:
        """Hold ``task_id`` until ``depends_on`` is done (or cancelled)."""
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO deps (task, depends_on) VALUES (?,?)", (task_id, depends_on))

    def outbox_sent(self, outbox_id: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE outbox SET sent=? WHERE id=?", (self.clock(), outbox_id))

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
