"""Tasks on the bus: one host publishes, any host that runs the agent claims, leases,
runs and acknowledges; the result goes back to the host that published it.

Each host keeps its own task store (SQLite). In shared mode:

- **Publishing** (:meth:`SharedTasks.publish_due`). A queued task of this host that the
  routes send to a named agent (not a pool: pools work in this host's worktrees) is
  published on ``NS:tasks:NAME`` (or ``NAME@HOST``) and waits here as ``shared``. Its
  bus id is ``HOST:TASK:N:NONCE`` (N counts its publications: a retried task is
  published anew; NONCE is this home's own), and publishing an id twice (a crash between the write and its record) adds
  nothing. An issue is claimed on GitHub first, by the publishing host.
- **Claiming** (:meth:`SharedTasks.claim_due`). For each of its agents with room under
  its ``wip``, a host reads new entries of the agent's streams for its consumer, then
  takes over entries other hosts left unrenewed past ``bus.lease`` (``XAUTOCLAIM``).
  Each becomes a local copy (source ``bus``, or ``job`` for a job, key ``bus:ID``)
  labelled ``agent:NAME``, which the local scheduler, leases and watchdog treat as any
  task. The entry's delivery count is the attempt: past the task's ``max_attempts`` it
  fails instead.
- **The lease** (:meth:`SharedTasks.renew`). Every third of ``bus.lease`` the host
  resets the idle time of the entries it holds, but only while they are still its own
  and open: a copy whose entry another host took, or whose task ended elsewhere or was
  cancelled, is cancelled here and its agent told to stop.
- **Ending** (:meth:`SharedTasks.settle`). When a copy ends, its result is written at
  once with the acknowledgement, the first result wins (a task ends once), and the
  result goes to ``NS:results:ORIGIN``; the origin applies it to its ``shared`` task
  (:meth:`SharedTasks.apply_results`), which then ends as it would locally (GitHub is
  told by the origin).

The local records are the ``bus_tasks`` table of the task store.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from miyabi.bus.client import GROUP, RESULTS_GROUP, Bus, ensure_group
from miyabi.config.settings import HOST_RE, NAME_RE, Route
from miyabi.database import Schema
from miyabi.events import EventKind, append_event
from miyabi.messaging.mailbox import post
from miyabi.times import how_often
from miyabi.work.model import FINISHED, Source, Task, TaskError, TaskState
from miyabi.work.store import Store

log = logging.getLogger("miyabi.bus")

TABLES = """
CREATE TABLE IF NOT EXISTS bus_tasks (
  bus_id TEXT NOT NULL,
  role TEXT NOT NULL,
  task INTEGER NOT NULL REFERENCES tasks(id),
  stream TEXT NOT NULL,
  entry TEXT,
  origin TEXT NOT NULL,
  agent TEXT,
  deliveries INTEGER NOT NULL DEFAULT 1,
  settled REAL,
  PRIMARY KEY (bus_id, role)
);
CREATE INDEX IF NOT EXISTS bus_tasks_open ON bus_tasks(role, settled);
CREATE INDEX IF NOT EXISTS bus_tasks_task ON bus_tasks(task);
CREATE TABLE IF NOT EXISTS bus_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
"""``role`` ``origin``: a task this host published (bus id ``HOST:TASK:N:NONCE``) (``settled`` once its result came or
its cancel was published); ``copy``: this host's copy of a task it claimed (``settled``
once its result is on the bus, or it was given up). ``entry``: the stream entry id.
``bus_meta``: this home's ``nonce``."""

SCHEMA = Schema("bus", (TABLES,))
"""The bus's tables in the task database (:mod:`miyabi.database`; the first step is
idempotent: versions before schema versions created them when missing)."""

ORIGIN, COPY = "origin", "copy"

PUBLISH = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGET', KEYS[1], 'entry') end
local e = redis.call('XADD', KEYS[2], '*', 'id', ARGV[1], 'task', ARGV[4])
redis.call('HSET', KEYS[1], 'origin', ARGV[2], 'target', ARGV[3], 'stream', KEYS[2], 'entry', e, 'state', 'open',
           'published', ARGV[5])
return e
"""
"""KEYS: task hash, stream. ARGV: bus id, origin host, target, task JSON, time. Returns the entry id."""

RENEW = """
local st = redis.call('HGET', KEYS[2], 'state')
if st ~= 'open' then redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]); return st or 'gone' end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 'lost' end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 'ok'
"""
"""KEYS: stream, task hash. ARGV: group, this host, entry. ``ok`` (its idle time starts
again), ``lost`` (another host holds it), or the task's state when it is not open."""

FINISH = """
local st = redis.call('HGET', KEYS[2], 'state')
if st ~= 'open' then redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]); return st or 'gone' end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], 'state', ARGV[4], 'by', ARGV[2], 'agent', ARGV[6], 'reason', ARGV[5], 'ended', ARGV[8])
redis.call('EXPIRE', KEYS[2], 2592000)
redis.call('XADD', KEYS[3], '*', 'id', ARGV[7], 'state', ARGV[4], 'agent', ARGV[6], 'host', ARGV[2], 'reason', ARGV[5])
return 'ok'
"""
"""KEYS: stream, task hash, the origin's result stream. ARGV: group, this host, entry,
state, reason, agent, bus id, time. ``ok`` when this result is the task's, else the
state it had already (the first result wins). An ended task's hash expires after 30 days."""

CANCEL = """
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'open' then return st or 'gone' end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'reason', ARGV[1], 'ended', ARGV[2])
redis.call('EXPIRE', KEYS[1], 2592000)
redis.call('XDEL', KEYS[2], ARGV[3])
return 'ok'
"""
"""KEYS: task hash, stream. ARGV: reason, time, entry."""

RESULT_STATES = {"done": TaskState.DONE, "failed": TaskState.FAILED, "cancelled": TaskState.CANCELLED}


def route_shared(task: Task, routes: Sequence[Route]) -> str | None:
    """Where a task goes on the bus: its label ``agent:NAME`` or ``agent:NAME@HOST``
    (any well-formed name: the agent may run on another host), else the first
    matching route; None when nothing matches."""
    for label in task.labels:
        if label.startswith("agent:") and valid_target(label[6:]):
            return label[6:]
    for r in routes:
        if r.matches(task.title, task.labels):
            return r.agent
    return None


def valid_target(target: str) -> bool:
    """Whether ``target`` is ``NAME`` or ``NAME@HOST``."""
    name, at, host = target.partition("@")
    return bool(NAME_RE.match(name)) and (not at or bool(HOST_RE.match(host)))


@dataclass(frozen=True)
class Claimed:
    """A task this host claimed: its local copy's id, the bus id, and the attempt."""

    task: int
    bus_id: str
    agent: str
    deliveries: int


class SharedTasks:
    """The task side of one host on the bus.

    Args:
        bus: the connection (its host name is this host's).
        store: the host's task store (a connection of the calling thread's own).
        home_root: the miyabi home (events; agents are told through their inboxes).
        lease: ``bus.lease`` in seconds.
        clock: Unix time (injectable).
    """

    def __init__(
        self, bus: Bus, store: Store, home_root: Path, lease: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.bus = bus
        self.store = store
        self.home = home_root
        self.lease = lease
        self.clock = clock
        self.me = bus.host
        store.migrate(SCHEMA)
        with store.tx() as db:
            db.execute("INSERT OR IGNORE INTO bus_meta (key, value) VALUES ('nonce', ?)", (secrets.token_hex(4),))
        self.nonce = str(store.rows("SELECT value FROM bus_meta WHERE key='nonce'")[0][0])
        """This home's own mark in its bus ids: a home made anew never reuses an old id."""
        self._groups: set[tuple[str, str]] = set()

    # -- helpers

    def _group(self, stream: str, group: str = GROUP) -> None:
        if (stream, group) not in self._groups:
            ensure_group(self.bus.redis, stream, group)
            self._groups.add((stream, group))

    def forget_groups(self) -> None:
        """Make the consumer groups again before their next use (Redis may have lost them)."""
        self._groups.clear()

    def _records(self, role: str, open_only: bool = True) -> list[dict[str, Any]]:
        q = "SELECT b.*, t.state AS state FROM bus_tasks b JOIN tasks t ON t.id = b.task WHERE b.role=?" + (
            " AND b.settled IS NULL" if open_only else ""
        )
        return [dict(r) for r in self.store.rows(q, (role,))]

    def _settle(self, bus_id: str, role: str) -> None:
        with self.store.tx() as db:
            db.execute("UPDATE bus_tasks SET settled=? WHERE bus_id=? AND role=?", (self.clock(), bus_id, role))

    # -- publishing (the origin)

    def publish_due(
        self,
        routes: Sequence[Route],
        pools: Sequence[str],
        max_attempts: int,
        claim_issue: Callable[[Task, str], bool] | None = None,
        hold: Callable[[Task], bool] | None = None,
    ) -> list[tuple[int, str]]:
        """Publish every queued task of this host that goes to a named agent. Returns
        (task id, target) for each.

        Args:
            routes: the layout's routes.
            pools: the layout's pool names (their tasks stay on this host).
            max_attempts: the layout's ``tasks.max_attempts`` (a task's own wins).
            claim_issue: claims a GitHub task's issue (False: not ours, or not now).
            hold: tasks for which it returns True wait (a claim that failed waits to retry).

        Raises:
            redis.RedisError, OSError: the bus failed (what was published stays published).
        """
        out: list[tuple[int, str]] = []
        for t in list(self.store.queued()):
            if t.from_bus or (hold is not None and hold(t)):
                continue
            target = route_shared(t, routes)
            if target is None or target in pools or self.store.open_deps(t.id):
                continue
            if t.source == Source.GITHUB:
                if claim_issue is None or not claim_issue(t, target):
                    continue
                t = self.store.get(t.id)
                if t.state != TaskState.QUEUED:
                    continue
            try:
                self.publish(t, target, max_attempts)
            except TaskError:
                continue
            out.append((t.id, target))
        return out

    def publish(self, t: Task, target: str, max_attempts: int) -> str:
        """Publish queued task ``t`` for ``target``; it waits here as ``shared``. Returns its bus id."""
        n = int(self.store.rows("SELECT COUNT(*) FROM bus_tasks WHERE task=? AND role=?", (t.id, ORIGIN))[0][0]) + 1
        bus_id = f"{self.me}:{t.id}:{n}:{self.nonce}"
        stream = self.bus.task_stream(target)
        payload = {
            "title": t.title,
            "body": t.body,
            "labels": list(t.labels),
            "priority": t.priority,
            "source": str(t.source),
            "ref": t.ref,
            "url": t.url,
            "timeout": t.timeout,
            "max_attempts": t.max_attempts or max_attempts,
            "origin": self.me,
            "created": t.created,
            "target": target,
        }
        self._group(stream)
        self._group(self.bus.results_stream(self.me), RESULTS_GROUP)
        entry = self.bus.script("publish", PUBLISH)(
            keys=[self.bus.task_key(bus_id), stream], args=[bus_id, self.me, target, json.dumps(payload), self.clock()]
        )
        where = target if "@" in target else f"{target} (any host)"
        try:
            self.store.set_state(
                t.id,
                TaskState.SHARED,
                f"published on the bus for {where} as {bus_id}",
                expect=(TaskState.QUEUED,),
                also=[
                    (
                        (
                            "INSERT OR REPLACE INTO bus_tasks (bus_id, role, task, stream, entry, origin, agent)"
                            " VALUES (?,?,?,?,?,?,?)"
                        ),
                        (bus_id, ORIGIN, t.id, stream, entry, self.me, target),
                    )
                ],
            )
        except TaskError:  # it changed meanwhile (cancelled, blocked): withdrawn from the bus
            self.bus.script("cancel", CANCEL)(
                keys=[self.bus.task_key(bus_id), stream],
                args=["it changed while it was being published", self.clock(), entry],
            )
            raise
        append_event(self.home, EventKind.BUS_PUBLISHED, task=t.id, ref=t.ref, id=bus_id, target=target)
        return bus_id

    def apply_results(self, block_ms: int | None = None) -> int:
        """Apply the results other hosts (or this one) wrote for tasks this host
        published: each ``shared`` task ends as its result says. Returns how many were read.

        Raises:
            redis.RedisError, OSError: the bus failed (unapplied results stay pending).
        """
        stream = self.bus.results_stream(self.me)
        self._group(stream, RESULTS_GROUP)
        # this host's pending results first (a crash before it applied them)
        return sum(
            self.bus.consume(RESULTS_GROUP, stream, start, self._apply, block_ms=block_ms) for start in ("0", ">")
        )

    def _apply(self, fields: Mapping[str, str]) -> None:
        bus_id = fields.get("id", "")
        state = RESULT_STATES.get(fields.get("state", ""))
        parts = bus_id.split(":")
        if state is None or len(parts) != 4 or parts[0] != self.me or not parts[1].isdigit():
            return
        tid = int(parts[1])
        latest = self.store.rows(
            "SELECT bus_id FROM bus_tasks WHERE task=? AND role=? ORDER BY rowid DESC LIMIT 1", (tid, ORIGIN)
        )
        if latest and latest[0][0] != bus_id:
            return  # a result of an earlier publication (the task was retried since)
        agent, host = fields.get("agent", ""), fields.get("host", "")
        why = fields.get("reason", "") or str(state)
        try:
            self.store.set_state(
                tid,
                state,
                f"{state} on host {host} by {agent}: {why}",
                agent=f"{agent}@{host}",
                expect=(TaskState.SHARED,),
                notice="needs-human" if state == TaskState.FAILED else None,
                text=why,
                also=[("UPDATE bus_tasks SET settled=? WHERE bus_id=? AND role=?", (self.clock(), bus_id, ORIGIN))],
            )
        except TaskError:
            return  # ended here already (cancelled)
        append_event(self.home, EventKind.BUS_RESULT, task=tid, id=bus_id, state=str(state), host=host, agent=agent)

    def publish_cancels(self) -> int:
        """Tell the bus about tasks this host published and then cancelled (or changed
        otherwise, or published again): no host claims that publication any more, and one
        working on it is told to stop. Returns how many were withdrawn."""
        n = 0
        for r in self._records(ORIGIN):
            latest = self.store.rows(
                "SELECT bus_id FROM bus_tasks WHERE task=? AND role=? ORDER BY rowid DESC LIMIT 1", (r["task"], ORIGIN)
            )
            if r["state"] == TaskState.SHARED and latest and latest[0][0] == r["bus_id"]:
                continue
            # cancelled, or any other change that is not its result: withdrawn (a no-op once it ended)
            got = self.bus.script("cancel", CANCEL)(
                keys=[self.bus.task_key(r["bus_id"]), r["stream"]],
                args=[f"{r['state']} where it was published", self.clock(), r["entry"] or "0-0"],
            )
            n += got == "ok"
            self._settle(r["bus_id"], ORIGIN)
        return n

    # -- claiming (any host with the agent)

    def claim_due(self, wip: Mapping[str, int], failed: Sequence[str] = ()) -> list[Claimed]:
        """Claim tasks for this host's agents that have room (``wip`` minus the open
        copies they have): first those only this host may take, then new ones, then
        those another host left past its lease. Returns what was claimed.

        Raises:
            redis.RedisError, OSError: the bus failed (what was claimed is recorded).
        """
        room = self.room(wip, failed)
        out: list[Claimed] = []
        for name, free in sorted(room.items()):
            for stream in (self.bus.task_stream(f"{name}@{self.me}"), self.bus.task_stream(name)):
                if free <= 0:
                    break
                self._group(stream)
                for _, entry, fields in self.bus.read(GROUP, {stream: ">"}, free):
                    c = self._copy(name, stream, entry, fields, 1)
                    if c is not None:
                        out.append(c)
                        free -= 1
            if free > 0:
                stream = self.bus.task_stream(name)
                for _, entry, fields in self.bus.autoclaim(stream, GROUP, int(self.lease * 1000), free):
                    c = self._copy(name, stream, entry, fields, self._deliveries(stream, entry))
                    if c is not None:
                        out.append(c)
                        free -= 1
        return out

    def room(self, wip: Mapping[str, int], failed: Sequence[str] = ()) -> dict[str, int]:
        """Agent → how many more tasks it may claim from the bus."""
        rows = self.store.rows(
            "SELECT b.agent, COUNT(*) FROM bus_tasks b JOIN tasks t ON t.id = b.task WHERE b.role=? AND"
            " t.state NOT IN ('done', 'failed', 'cancelled') GROUP BY b.agent",
            (COPY,),
        )
        have = {r[0]: int(r[1]) for r in rows}
        held = self.store.held_counts()
        return {
            n: limit - max(have.get(n, 0), held.get(n, 0))
            for n, limit in wip.items()
            if n not in failed and limit - max(have.get(n, 0), held.get(n, 0)) > 0
        }

    def recover(self, names: Sequence[str]) -> int:
        """After a start or a reconnection: make sure every entry this host holds has its
        local copy (a crash between the claim and its record). Returns how many it made.
        The held entries are listed (``XPENDING``) and read (``XRANGE``), never read
        again through the group, which would count a delivery (an attempt) each time."""
        n = 0
        for name in names:
            for stream in (self.bus.task_stream(f"{name}@{self.me}"), self.bus.task_stream(name)):
                self._group(stream)
                held = cast(
                    Any,
                    self.bus.redis.xpending_range(stream, GROUP, min="-", max="+", count=1000, consumername=self.me),
                )
                for p in held:
                    entry, times = str(p["message_id"]), int(p["times_delivered"])
                    if self.store.rows(
                        "SELECT 1 FROM bus_tasks WHERE stream=? AND entry=? AND role=?", (stream, entry, COPY)
                    ):
                        continue
                    found = cast(Any, self.bus.redis.xrange(stream, entry, entry, count=1))
                    if not found:  # deleted (withdrawn) while we held it
                        self.bus.redis.xack(stream, GROUP, entry)
                        continue
                    if self._copy(name, stream, entry, dict(found[0][1]), times, recovering=True):
                        n += 1
        return n

    def _deliveries(self, stream: str, entry: str) -> int:
        p = cast(Any, self.bus.redis.xpending_range(stream, GROUP, min=entry, max=entry, count=1))
        return int(p[0]["times_delivered"]) if p else 1

    def _copy(
        self, name: str, stream: str, entry: str, fields: Mapping[str, str], deliveries: int, recovering: bool = False
    ) -> Claimed | None:
        bus_id = fields.get("id", "")
        try:
            payload = json.loads(fields.get("task", ""))
        except ValueError:
            payload = None
        if not bus_id or not isinstance(payload, dict):
            log.warning("bus: entry %s of %s is not a task; acknowledged and left", entry, stream)
            self.bus.redis.xack(stream, GROUP, entry)
            return None
        if self.bus.redis.hget(self.bus.task_key(bus_id), "state") != "open":
            self.bus.redis.xack(stream, GROUP, entry)
            return None
        given = payload.get("max_attempts")
        limit = given if isinstance(given, int) and given > 0 else 1
        origin = str(payload.get("origin", bus_id.split(":")[0]))
        key = f"bus:{bus_id}"
        found = self.store.rows("SELECT id, state FROM tasks WHERE key=?", (key,))
        if deliveries > limit:
            self._finish(
                stream,
                entry,
                bus_id,
                origin,
                "failed",
                name,
                f"claimed {how_often(deliveries)} and never finished (the hosts holding it stopped); it needs a person",
            )
            if found:
                self._record(bus_id, found[0]["id"], stream, entry, origin, name, deliveries, settled=True)
            return None
        if found:
            tid = int(found[0]["id"])
            unsettled = self.store.rows(
                "SELECT 1 FROM bus_tasks WHERE bus_id=? AND role=? AND settled IS NULL", (bus_id, COPY)
            )
            if found[0]["state"] in FINISHED and unsettled:
                return None  # it ended here and its result is on its way (settle): not run again
            if found[0]["state"] in FINISHED and not recovering:
                self.store.set_state(
                    tid, TaskState.QUEUED, f"claimed again from the bus (attempt {deliveries} of {limit})"
                )
        else:
            labels = [lab for lab in payload.get("labels", []) if isinstance(lab, str) and not lab.startswith("agent:")]
            source = Source.JOB if payload.get("source") == Source.JOB else Source.BUS
            timeout = payload.get("timeout")
            try:
                t = self.store.add(
                    str(payload.get("title") or bus_id),
                    str(payload.get("body") or ""),
                    [*labels, f"agent:{name}"],
                    priority=str(payload.get("priority") or "normal"),
                    source=source,
                    key=key,
                    url=str(payload["url"]) if payload.get("url") else None,
                    timeout=float(timeout) if isinstance(timeout, (int, float)) else None,
                    max_attempts=max(1, limit - deliveries + 1),
                )
            except TaskError as e:  # a task this host cannot take: it fails once, not on every host in turn
                self._finish(stream, entry, bus_id, origin, "failed", name, f"host {self.me} could not take it: {e}")
                return None
            tid = t.id
        self._record(bus_id, tid, stream, entry, origin, name, deliveries)
        self.bus.redis.hset(self.bus.task_key(bus_id), mapping={"holder": self.me, "deliveries": deliveries})
        append_event(
            self.home, EventKind.BUS_CLAIMED, task=tid, id=bus_id, agent=name, origin=origin, attempt=deliveries
        )
        return Claimed(tid, bus_id, name, deliveries)

    def _record(
        self,
        bus_id: str,
        tid: int,
        stream: str,
        entry: str,
        origin: str,
        agent: str,
        deliveries: int,
        settled: bool = False,
    ) -> None:
        with self.store.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO bus_tasks (bus_id, role, task, stream, entry, origin, agent, deliveries, "
                "settled)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (bus_id, COPY, tid, stream, entry, origin, agent, deliveries, self.clock() if settled else None),
            )

    def _finish(self, stream: str, entry: str, bus_id: str, origin: str, state: str, agent: str, reason: str) -> str:
        got = self.bus.script("finish", FINISH)(
            keys=[stream, self.bus.task_key(bus_id), self.bus.results_stream(origin)],
            args=[GROUP, self.me, entry, state, reason[:2000], agent, bus_id, self.clock()],
        )
        return str(got)

    # -- the lease and the end (the claiming host)

    def renew(self, names: Sequence[str] | None = None) -> list[tuple[int, str]]:
        """Renew the lease on every entry this host holds for an open copy; a copy whose
        entry is no longer ours, or whose task ended elsewhere, is cancelled here and
        its agent told. A copy of an agent no longer in ``names`` (this host's agents)
        is given up unrenewed: another host takes it after the lease. Returns (task id,
        why) for each copy given up."""
        out: list[tuple[int, str]] = []
        for r in self._records(COPY):
            if r["state"] in FINISHED:
                continue
            if names is not None and r["agent"] not in names:
                why = f"agent {r['agent']} left this host's layout; another host takes it over after the lease"
                self._give_up(int(r["task"]), r["bus_id"], None, why)
                out.append((int(r["task"]), why))
                continue
            got = str(
                self.bus.script("renew", RENEW)(
                    keys=[r["stream"], self.bus.task_key(r["bus_id"])], args=[GROUP, self.me, r["entry"]]
                )
            )
            if got == "ok":
                continue
            why = {
                "lost": "another host took it over (this host did not renew its lease on the bus in time)",
                "done": "another host finished it",
                "failed": "it failed on another host",
                "cancelled": "it was cancelled where it was published",
            }.get(got, "it is gone from the bus")
            self._give_up(int(r["task"]), r["bus_id"], r["agent"], why)
            out.append((int(r["task"]), why))
        return out

    def _give_up(self, tid: int, bus_id: str, agent: str | None, why: str) -> None:
        try:
            t = self.store.set_state(
                tid,
                TaskState.CANCELLED,
                f"{why}; stopped here",
                also=[("UPDATE bus_tasks SET settled=? WHERE bus_id=? AND role=?", (self.clock(), bus_id, COPY))],
            )
        except TaskError:
            self._settle(bus_id, COPY)
            return
        append_event(self.home, EventKind.BUS_LEASE_LOST, task=tid, id=bus_id, reason=why)
        if agent and t.attempts:
            try:
                post(
                    self.home,
                    agent,
                    f"Task {t.ref} ({t.title}): {why}. Stop working on it.",
                    sender="miyabi",
                    task=str(tid),
                )
            except OSError as e:
                log.warning("bus: could not tell %s about task %s: %s", agent, tid, e)

    def settle(self) -> int:
        """Write the result of every copy that ended here (acknowledging its entry).
        Returns how many were settled."""
        n = 0
        for r in self._records(COPY):
            if r["state"] not in FINISHED:
                continue
            reason = self.store.rows("SELECT reason FROM events WHERE task=? ORDER BY id DESC LIMIT 1", (r["task"],))
            got = self._finish(
                r["stream"],
                r["entry"],
                r["bus_id"],
                r["origin"],
                str(r["state"]),
                str(r["agent"]),
                str(reason[0][0]) if reason else str(r["state"]),
            )
            if got != "ok":
                log.info("bus: task %s had ended already (%s); this host's result is not its", r["bus_id"], got)
            self._settle(r["bus_id"], COPY)
            n += 1
        return n

    def held_copies(self) -> list[dict[str, Any]]:
        """The open copies this host holds (bus id, task, agent, attempt)."""
        return [r for r in self._records(COPY) if r["state"] not in FINISHED]
