"""The controller's side of the bus: three threads that keep one host in the shared
ensemble, whatever the network does.

- ``bus-inbox`` waits on this host's message stream and moves each message into its
  agent's inbox (:func:`miyabi.bus.messages.receive`).
- ``bus-tasks`` runs a pass every ``defaults.BUS_TICK`` seconds, or at once when the
  task store changed: presence and the intake lock (every ``defaults.BUS_HEARTBEAT``),
  the bus outbox, results, publishing, claiming and cancels
  (:class:`miyabi.bus.tasks.SharedTasks`).
- ``bus-leases`` renews this host's claims every third of ``bus.lease``, apart, so that
  nothing the task pass waits for lets a lease run out.

When Redis cannot be reached both keep trying with a doubling wait
(``defaults.BUS_RECONNECT_MIN`` to ``defaults.BUS_RECONNECT_MAX``) while the local
ensemble goes on with what it has: copies already claimed run, messages wait in the
outbox, new tasks wait queued. ``run/bus.json`` says whether the bus is up (``miyabi
status`` reads it); the events ``bus-down`` and ``bus-up`` mark the changes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from miyabi import defaults
from miyabi.bus import messages, presence
from miyabi.bus.client import ERRORS, Bus, BusDown, describe
from miyabi.bus.state import state_path
from miyabi.bus.tasks import SharedTasks
from miyabi.config.model import Layout
from miyabi.config.settings import redact
from miyabi.events import EventKind, append_event
from miyabi.files import write_atomic
from miyabi.times import rfc3339
from miyabi.work.model import Task, TaskError
from miyabi.work.store import Store

log = logging.getLogger("miyabi.bus")

INTAKE_LOCK = "intake"

FAILURES = (*ERRORS, redis.RedisError, BusDown)
"""What makes a pass give up until the bus answers again (unreachable, a refused
password, an error answer such as a consumer group lost with its stream)."""


class BusBridge:
    """One host on the bus, for the controller.

    Args:
        home_root: the miyabi home.
        layout: the running layout (read at each pass: a reload counts).
        failed: the agents the watchdog gave up on.
        agents: this host's agents as presence shows them (``name``, ``state``, ``task``).
        claim_issue: claims a GitHub task's issue before it is published (False: not now).
        hold: tasks for which it returns True wait (a claim that failed waits to retry).
        changed: called when a pass changed the task store (the scheduler looks at once).
    """

    def __init__(
        self,
        home_root: Path,
        layout: Callable[[], Layout],
        failed: Callable[[], Sequence[str]],
        agents: Callable[[], list[dict[str, Any]]],
        claim_issue: Callable[[Task, str], bool] | None = None,
        hold: Callable[[Task], bool] | None = None,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.home = home_root
        self.layout = layout
        self.failed = failed
        self.agents = agents
        self.claim_issue = claim_issue
        self.hold = hold
        self.changed = changed
        bus = layout().bus
        if bus is None:
            raise ValueError("the layout has no bus: section")
        self.settings = bus
        """The layout's ``bus:`` when the controller started (a change applies at its restart)."""
        self.wake = threading.Event()
        """Set when the task store may have changed: the next pass runs at once."""
        self.leader = False
        """Whether this host holds the intake lock (polls GitHub)."""
        self.ready = threading.Event()
        """Set once the first pass ended (this host's copies checked with the bus), or failed."""
        self._lock = threading.Lock()
        self._up: bool | None = None
        self._error = ""
        self._since = time.time()
        self._hosts = 0

    def may_intake(self) -> bool:
        return self.leader

    # -- the state others read

    def _set(self, up: bool, error: str = "") -> None:
        with self._lock:
            changed = up != self._up
            if changed:
                self._since = time.time()
                where = redact(self.settings.url)
                if up:
                    log.info("bus %s: up (host %s)", where, self.settings.host)
                    append_event(self.home, EventKind.BUS_UP, host=self.settings.host)
                else:
                    self.leader = False
                    log.warning("bus %s: down: %s", where, error)
                    append_event(self.home, EventKind.BUS_DOWN, host=self.settings.host, error=error)
            self._up, self._error = up, error
        if changed:
            self.write_state()

    def write_state(self) -> None:
        s = self.settings
        data = {
            "settings": {
                "url": s.url,
                "host": s.host,
                "password_env": s.password_env,
                "lease": s.lease,
                "namespace": s.namespace,
            },
            "url": redact(s.url),
            "host": s.host,
            "state": "up" if self._up else "down",
            "since": rfc3339(self._since),
            "error": self._error or None,
            "leader": self.leader,
            "hosts": self._hosts,
            "updated": rfc3339(time.time()),
        }
        try:
            write_atomic(state_path(self.home), json.dumps(data))
        except OSError as e:
            log.warning("bus: could not write %s: %s", state_path(self.home), e)

    # -- threads

    def start(self, stop: threading.Event, start: Callable[[Callable[[], None], str], None]) -> None:
        """Start the threads with ``start(target, name)`` (the controller's)."""
        self.write_state()
        start(lambda: self.run_tasks(stop), "bus-tasks")
        start(lambda: self.run_inbox(stop), "bus-inbox")
        start(lambda: self.run_leases(stop), "bus-leases")
        # Before any agent runs a copy again (a restart), the bus says which are still
        # this host's: those another host took over meanwhile are given up first.
        self.ready.wait(2 * defaults.BUS_TIMEOUT + 1)

    def run_inbox(self, stop: threading.Event) -> None:
        """Move messages from this host's stream into the inboxes until ``stop``."""
        bus = Bus(self.settings, timeout=defaults.BUS_TIMEOUT + defaults.BUS_BLOCK)
        wait = defaults.BUS_RECONNECT_MIN
        fresh = True
        try:
            while not stop.is_set():
                try:
                    if fresh:
                        messages.ensure_inbox(bus)
                        messages.receive(bus, self.home, self.layout().names, None, start="0")
                        fresh = False
                        if self._up is False:
                            bus.ping()
                            self._set(True)
                    messages.receive(bus, self.home, self.layout().names, int(defaults.BUS_BLOCK * 1000))
                    wait = defaults.BUS_RECONNECT_MIN
                except FAILURES as e:
                    self._set(False, describe(e))
                    fresh = True
                    stop.wait(wait)
                    wait = min(wait * 2, defaults.BUS_RECONNECT_MAX)
                except (
                    OSError,
                    sqlite3.Error,
                    ValueError,
                    TypeError,
                ) as e:  # the disk or bad data: try again, never fatal
                    log.warning("bus inbox: %s: %s", type(e).__name__, e)
                    fresh = True  # what was read and not put in an inbox is read again
                    stop.wait(wait)
        finally:
            bus.close()

    def run_tasks(self, stop: threading.Event) -> None:
        """The task side, presence and the intake lock, until ``stop``."""
        settings = self.settings
        bus = Bus(settings)
        store = Store.of_home(self.home)
        shared = SharedTasks(bus, store, self.home, settings.lease)
        wait = defaults.BUS_RECONNECT_MIN
        next_beat = 0.0
        fresh = True
        try:
            while not stop.is_set():
                try:
                    if fresh:
                        bus.ping()
                        bus.check_version()
                        shared.recover(list(self._named(self.layout())))
                        if shared.renew(self._running()):  # before anything else: copies taken over are given up
                            self.changed()
                        fresh = False
                        self._set(True)
                        self.ready.set()
                    now = time.monotonic()
                    if now >= next_beat:
                        self._beat(bus)
                        next_beat = now + defaults.BUS_HEARTBEAT
                    self.ready.set()
                    if self._pass(bus, shared):
                        self.changed()
                    wait = defaults.BUS_RECONNECT_MIN
                    self.wake.wait(defaults.BUS_TICK)
                    self.wake.clear()
                except FAILURES as e:
                    self._set(False, describe(e))
                    self.ready.set()
                    shared.forget_groups()
                    fresh = True
                    stop.wait(wait)
                    wait = min(wait * 2, defaults.BUS_RECONNECT_MAX)
                except (
                    OSError,
                    sqlite3.Error,
                    TaskError,
                    ValueError,
                    TypeError,
                    KeyError,
                ) as e:  # the disk, the store, or
                    log.warning("bus tasks: %s: %s", type(e).__name__, e)  # bad data: never fatal
                    self.ready.set()
                    stop.wait(wait)
        finally:
            try:  # a clean stop: others see this host down, and take the intake over, at once
                presence.leave(bus)
                if self.leader:
                    presence.release_lock(bus, INTAKE_LOCK)
                    self.leader = False
            except FAILURES:
                pass
            store.close()
            bus.close()

    def run_leases(self, stop: threading.Event) -> None:
        """Renew this host's claims every third of ``bus.lease`` until ``stop``, on a
        thread of their own: a pass that waits (GitHub's rate limit while an issue is
        claimed, a slow disk) never lets a lease run out."""
        settings = self.settings
        bus = Bus(settings)
        store = Store.of_home(self.home)
        shared = SharedTasks(bus, store, self.home, settings.lease)
        try:
            while not stop.wait(settings.lease / 3):
                try:
                    if shared.renew(self._running()):
                        self.changed()
                except FAILURES as e:
                    self._set(False, describe(e))
                except (OSError, sqlite3.Error, TaskError, ValueError, TypeError, KeyError) as e:
                    log.warning("bus leases: %s: %s", type(e).__name__, e)
        finally:
            store.close()
            bus.close()

    def _running(self) -> list[str]:
        """This host's named agents that can work (not given up on by the watchdog): the
        copies of others are given up, unrenewed, for another host to take."""
        failed = set(self.failed())
        return [n for n in self._named(self.layout()) if n not in failed]

    def _named(self, lay: Layout) -> dict[str, int]:
        """This host's named agents (not pool instances) → their ``wip``."""
        return {a.name: a.wip for a in lay.agents if a.pool is None}

    def _pass(self, bus: Bus, shared: SharedTasks) -> bool:
        lay = self.layout()
        did = messages.flush_outbox(bus, self.home) > 0
        did |= shared.settle() > 0  # results out first: a copy that ended here is never claimed again
        did |= bool(
            shared.publish_due(
                lay.routes, [p.name for p in lay.pools], lay.tasks.max_attempts, self.claim_issue, self.hold
            )
        )
        did |= bool(shared.claim_due(self._named(lay), self.failed()))
        did |= shared.publish_cancels() > 0
        did |= shared.apply_results() > 0
        return did

    def _beat(self, bus: Bus) -> None:
        was = self.leader
        self.leader = presence.hold_lock(bus, INTAKE_LOCK, max(3 * defaults.BUS_HEARTBEAT, defaults.BUS_PRESENCE_TTL))
        try:
            agents = self.agents()
        except Exception as e:  # noqa: BLE001 - tmux or /proc failing must not take the bus down: presence without agents
            log.warning("bus: could not read the agents for presence: %s", e)
            agents = []
        presence.heartbeat(bus, agents, {"leader": self.leader, "pid": os.getpid()})
        hosts = sum(1 for h in presence.hosts(bus) if h.get("up"))
        if hosts != self._hosts or was != self.leader:
            self._hosts = hosts
            if was != self.leader:
                append_event(self.home, EventKind.BUS_INTAKE, host=bus.host, leader=self.leader)
            self.write_state()
