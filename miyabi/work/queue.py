"""The queue as the scheduler reads it: queued tasks in the order they are assigned,
the route recorded for each, and the tasks waiting for their dependencies."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from miyabi.work.base import StoreBase
from miyabi.work.model import SATISFIED, Task, TaskState

_SATISFIED = ", ".join(f"'{s}'" for s in SATISFIED)
"""The states that hold back no dependent task, as SQL literals."""


class Queue(StoreBase):
    """The task store's queue (part of :class:`miyabi.work.store.Store`)."""

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
        rows = self.rows(f"SELECT * FROM {table} WHERE {where} ORDER BY rank, created, id LIMIT {page}", args)
        while rows:
            yield from (Task.from_row(r) for r in rows)
            if len(rows) < page:
                return
            last = rows[-1]
            rows = self.rows(
                f"SELECT * FROM {table} WHERE {where} AND (rank, created, id) > (?, ?, ?) ORDER BY rank, created, id "
                f"LIMIT {page}",
                [*args, last["rank"], last["created"], last["id"]],
            )

    def unrouted(self) -> list[Task]:
        """Queued tasks whose route is not recorded yet (new ones, or all after
        :meth:`clear_routes`)."""
        return [
            Task.from_row(r)
            for r in self.rows(
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
        not done (nor cancelled, nor landed: verified, deployed) yet."""
        rows = self.rows(
            "SELECT t.*, (SELECT group_concat(d.depends_on) FROM deps d JOIN tasks x ON x.id = d.depends_on"
            f"  WHERE d.task = t.id AND x.state NOT IN ({_SATISFIED})) AS open_deps"
            " FROM tasks t WHERE t.id IN (SELECT task FROM deps) AND t.state IN ('queued', 'blocked')"
            " ORDER BY t.id"
        )
        return [
            (Task.from_row(r), sorted(int(x) for x in r["open_deps"].split(",")) if r["open_deps"] else [])
            for r in rows
        ]

    def open_deps(self, task_id: int) -> list[int]:
        """Ids of the tasks ``task_id`` depends on that still hold it back (not done, cancelled or landed)."""
        rows = self.rows(
            "SELECT d.depends_on FROM deps d JOIN tasks x ON x.id = d.depends_on"
            f" WHERE d.task=? AND x.state NOT IN ({_SATISFIED}) ORDER BY d.depends_on",
            (task_id,),
        )
        return [int(r[0]) for r in rows]
