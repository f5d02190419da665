"""The GitHub outbox: what GitHub must be told about an issue's task, written in the
same transaction as the change that calls for it (by processes that have no token:
``miyabi task done`` in an agent's pane) and sent by the controller, once; and how far
the claim of an issue got."""

from __future__ import annotations

from miyabi.work.base import StoreBase
from miyabi.work.model import ClaimState


class GitHubOutbox(StoreBase):
    """The task store's GitHub outbox (part of :class:`miyabi.work.store.Store`)."""

    def set_claim(self, task_id: int, claim: ClaimState) -> None:
        """Record how far the claim of an issue got."""
        with self.tx() as db:
            db.execute("UPDATE tasks SET claim=? WHERE id=?", (str(claim), task_id))

    def outbox(self) -> list[tuple[int, int, str, str]]:
        """Unsent notices for GitHub: (outbox id, task id, action, text)."""
        return [
            (r[0], r[1], r[2], r[3])
            for r in self.rows("SELECT id, task, action, text FROM outbox WHERE sent IS NULL ORDER BY id")
        ]

    def outbox_tried(self, outbox_id: int) -> int:
        """Count a failed attempt at a notice; return the attempts so far."""
        with self.tx() as db:
            db.execute("UPDATE outbox SET tries = tries + 1 WHERE id=?", (outbox_id,))
            return int(db.execute("SELECT tries FROM outbox WHERE id=?", (outbox_id,)).fetchone()[0])

    def outbox_sent(self, outbox_id: int) -> None:
        """Record that a notice reached GitHub (it is never sent again)."""
        with self.tx() as db:
            db.execute("UPDATE outbox SET sent=? WHERE id=?", (self.clock(), outbox_id))
