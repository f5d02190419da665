"""The notices' queue, in a database of its own (``state/notify.db``, beside the task
database, private like it: its writes must not look like task changes, which wake the
scheduler; :mod:`miyabi.database` owns the connection): one
row per (receiver, happening), so a notice is queued once however often the event log
is read again, and survives a controller that dies.

A notice is ``queued``, then ``sending`` while a POST is in flight, then ``sent``; or
``failed`` after its receiver's ``max_attempts`` (a dead letter, logged as
``notice-failed``). One that was ``sending`` when its controller died is never sent
again (it may have arrived): it becomes ``uncertain``. So a notice is sent at most once
per receiver, and every one is either sent, failed or uncertain, never silently lost.
The cursors (how far the event log and the task history were read) move in the same
transaction as the notices they produced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from miyabi.database import Database, Schema
from miyabi.notify.rules import Notice

TABLES = """
CREATE TABLE IF NOT EXISTS notices (
  id INTEGER PRIMARY KEY,
  receiver TEXT NOT NULL,
  key TEXT NOT NULL,
  kind TEXT NOT NULL,
  title TEXT NOT NULL,
  text TEXT NOT NULL,
  url TEXT,
  fields TEXT NOT NULL,
  created REAL NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at REAL NOT NULL,
  reason TEXT,
  UNIQUE (receiver, key)
);
CREATE INDEX IF NOT EXISTS notices_due ON notices(receiver, state, next_at);
CREATE TABLE IF NOT EXISTS notify_cursors (
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
"""

SCHEMA = Schema("notify", (TABLES,))
"""The queue's tables (:mod:`miyabi.database`; the first step is idempotent: versions
before schema versions created them when missing)."""


class NoticeState(StrEnum):
    """Where a notice is."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    """It was in flight when its controller died: it may have arrived; never resent."""


@dataclass(frozen=True)
class Queued:
    """A notice waiting for its receiver.

    Attributes:
        id: its row.
        notice: what to tell.
        attempts: tries so far.
        created: Unix time it was queued.
    """

    id: int
    notice: Notice
    attempts: int
    created: float


FILE = "notify.db"
"""The queue's database, under ``state/``."""


class Outbox:
    """The notices of one home (``state/notify.db``).

    Args:
        home_root: the home.
    """

    def __init__(self, home_root: Path) -> None:
        self.db = Database(home_root / "state" / FILE, SCHEMA)

    def close(self) -> None:
        self.db.close()

    def cursor(self, name: str) -> int | None:
        """How far the source ``name`` was read (None: never)."""
        rows = self.db.rows("SELECT value FROM notify_cursors WHERE name=?", (name,))
        return int(rows[0]["value"]) if rows else None

    def enqueue(self, cursors: dict[str, int], notices: list[tuple[str, Notice]], now: float) -> int:
        """Queue ``(receiver key, notice)`` pairs (a pair queued before is skipped) and
        move the cursors, in one transaction (none when there is nothing to write);
        returns how many were new."""
        if not notices and all(self.cursor(k) == v for k, v in cursors.items()):
            return 0
        new = 0
        with self.db.tx() as db:
            for receiver, n in notices:
                cur = db.execute(
                    "INSERT OR IGNORE INTO notices (receiver, key, kind, title, text, url, fields, created, state, "
                    "next_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        receiver,
                        n.key,
                        str(n.kind),
                        n.title,
                        n.text,
                        n.url,
                        json.dumps(n.fields, default=str),
                        now,
                        NoticeState.QUEUED.value,
                        now,
                    ),
                )
                new += cur.rowcount
            for name, value in cursors.items():
                db.execute(
                    "INSERT INTO notify_cursors (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                    "value=excluded.value",
                    (name, value),
                )
        return new

    def uncertain(self) -> int:
        """Mark the notices a dead controller left in flight ``uncertain`` (at start);
        returns how many."""
        with self.db.tx() as db:
            cur = db.execute(
                "UPDATE notices SET state=?, reason=? WHERE state=?",
                (
                    NoticeState.UNCERTAIN.value,
                    "in flight when the controller stopped; not sent again",
                    NoticeState.SENDING.value,
                ),
            )
            return cur.rowcount

    def next_due(self, receiver: str, now: float) -> Queued | None:
        """The oldest queued notice of ``receiver`` whose time has come (None: none)."""
        rows = self.db.rows(
            "SELECT * FROM notices WHERE receiver=? AND state=? ORDER BY id LIMIT 1",
            (receiver, NoticeState.QUEUED.value),
        )
        if not rows or float(rows[0]["next_at"]) > now:
            return None
        return _queued(rows[0])

    def wait_of(self, receiver: str, now: float) -> float | None:
        """Seconds until the receiver's oldest queued notice is due (None: none queued)."""
        rows = self.db.rows(
            "SELECT next_at FROM notices WHERE receiver=? AND state=? ORDER BY id LIMIT 1",
            (receiver, NoticeState.QUEUED.value),
        )
        return max(0.0, float(rows[0]["next_at"]) - now) if rows else None

    def sending(self, notice_id: int) -> bool:
        """Mark a notice in flight (committed before the POST); False if it is no longer queued."""
        with self.db.tx() as db:
            cur = db.execute(
                "UPDATE notices SET state=?, attempts=attempts+1 WHERE id=? AND state=?",
                (NoticeState.SENDING.value, notice_id, NoticeState.QUEUED.value),
            )
            return cur.rowcount == 1

    def finished(self, notice_id: int, state: NoticeState, reason: str | None = None) -> None:
        """Record the end of a notice: sent, or failed for good."""
        with self.db.tx() as db:
            db.execute("UPDATE notices SET state=?, reason=? WHERE id=?", (state.value, reason, notice_id))

    def again(self, notice_id: int, at: float, reason: str) -> None:
        """Queue a notice that failed this time for another try at ``at`` (Unix time)."""
        with self.db.tx() as db:
            db.execute(
                "UPDATE notices SET state=?, next_at=?, reason=? WHERE id=?",
                (NoticeState.QUEUED.value, at, reason, notice_id),
            )

    def orphans(self, receivers: Sequence[str]) -> int:
        """Give up the queued notices of receivers the layout no longer has (removed,
        or their URL changed); returns how many."""
        marks = ",".join("?" * len(receivers))
        with self.db.tx() as db:
            cur = db.execute(
                f"UPDATE notices SET state=?, reason=? WHERE state=? AND receiver NOT IN ({marks})",
                (
                    NoticeState.FAILED.value,
                    "its receiver left the layout's notify:",
                    NoticeState.QUEUED.value,
                    *receivers,
                ),
            )
            return cur.rowcount

    def counts(self) -> dict[tuple[str, str], int]:
        """(receiver, state) → notices."""
        return {
            (r["receiver"], r["state"]): int(r["n"])
            for r in self.db.rows("SELECT receiver, state, COUNT(*) AS n FROM notices GROUP BY receiver, state")
        }

    def all(self) -> list[dict[str, Any]]:
        """Every notice, oldest first (for tests and ``/api/v1/notices``)."""
        return [dict(r) for r in self.db.rows("SELECT * FROM notices ORDER BY id")]


def _queued(r: Any) -> Queued:
    from miyabi.events import NoticeKind

    n = Notice(str(r["key"]), NoticeKind(r["kind"]), str(r["title"]), str(r["text"]), r["url"], json.loads(r["fields"]))
    return Queued(int(r["id"]), n, int(r["attempts"]), float(r["created"]))
