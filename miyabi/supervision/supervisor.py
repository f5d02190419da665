"""The watchdog: recreate crashed agents in their own pane, with backoff.

Deaths are seen from events, not a slow poll: the supervisor holds a pidfd
(``pidfd_open(2)``, Linux 5.3+) for each agent's process, which becomes readable the
instant that process exits, though it is not our child. tmux 3.3a's ``pane-died``
hook is unreliable (../shared/TMUX.md: the child is sometimes not reaped), so it is
not used; the controller's pane listing every ``defaults.PANE_REFRESH`` seconds
(``pane_dead``, a pane that vanished) is the backstop.

A restart ends everything of the old agent first (:func:`~miyabi.supervision.processes.end_agent`),
then runs the agent's own command in the same pane (``respawn-pane -k``), which keeps
its id, position and tag. Before that, the evidence (how it ended, how long it ran,
the last lines of its pane) goes to ``logs/crashes/``. What to do and when is
:mod:`miyabi.supervision.policy`; restart history is kept in ``run/watchdog.json`` so
a restarted controller keeps its counters and backoff.

The supervisor sees the rest of miyabi through a narrow interface: the pane map, verbs
on panes, a ``respawn`` callable, each pane's last output time, and each agent's
deliverer as a :class:`~miyabi.supervision.watches.Typist` (its lock, its last delivery).
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from miyabi import defaults
from miyabi.config.model import Agent
from miyabi.errors import TmuxError
from miyabi.events import EventKind, append_event
from miyabi.files import append_line
from miyabi.home import Home
from miyabi.messaging.mailbox import MessageState, enqueue, inbox, make
from miyabi.stopping import Stopped
from miyabi.supervision.crashes import exit_cause, save_evidence
from miyabi.supervision.hangs import sample
from miyabi.supervision.policy import (
    DeathAction,
    Decision,
    History,
    SilenceAction,
    on_death,
    on_silence,
    record_restart,
)
from miyabi.supervision.processes import alive, end_agent, proc_stat, started_at
from miyabi.supervision.saved import STATE_FILE
from miyabi.supervision.watches import Typist, Watch, load_watches, save_watches
from miyabi.times import now_rfc3339
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import FAILED_TAG, Pane, PaneMap

log = logging.getLogger("miyabi.watchdog")


class Supervisor:
    """Watches every agent's process and restarts it by its policy.

    Args:
        home: the miyabi home (state, evidence, events).
        agents: the agents to watch.
        socket: the tmux socket (part of the environment marks of an agent's processes).
        driver: verbs on panes.
        panes: the agent → pane map the controller refreshes.
        respawn: ``respawn(agent, pane_id, died_young)`` runs the agent again in its
            pane (``died_young``: its last process ran less than ``min_uptime``) and
            returns the new pid (raises TmuxError when tmux refused).
        last_output: pane id → ``time.monotonic()`` of its last output (0.0: none seen).
        typists: agent → its deliverer.
        clock: Unix time (injectable).
        sleep: waits (the controller's raises Stopped when it stops).
    """

    def __init__(
        self,
        home: Home,
        agents: Sequence[Agent],
        socket: str,
        driver: PaneDriver,
        panes: PaneMap,
        respawn: Callable[[Agent, str, bool], int],
        last_output: Callable[[str], float],
        typists: Mapping[str, Typist],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.home = home
        self.socket = socket
        self.driver = driver
        self.panes = panes
        self.respawn = respawn
        self.last_output = last_output
        self.typists = typists
        self.clock = clock
        self.sleep = sleep
        self.agents: dict[str, Agent] = {a.name: a for a in agents}
        self.watches: dict[str, Watch] = {n: Watch() for n in self.agents}
        self.lock = threading.RLock()
        self.state_file = home.run / STATE_FILE
        self._closing: list[int] = []
        """pidfds of agents no longer watched, closed by the watch loop between waits."""
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        """A self-pipe in the watch loop's select: :meth:`wake` ends its wait at once."""
        load_watches(home, self.watches)

    # -- persistence

    def save(self) -> None:
        with self.lock:
            save_watches(self.state_file, self.watches)

    def event(self, kind: EventKind, agent: str, **fields: Any) -> None:
        append_event(self.home.root, kind, agent=agent, **fields)
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        append_line(self.home.logs / "watchdog.log", f"{now_rfc3339()} {kind} {agent} {detail}")
        log.info("%s %s %s", kind, agent, fields)

    def wake(self) -> None:
        """End the watch loop's current wait at once (the controller stops)."""
        if self._wake_w < 0:
            return
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # full: already woken
            pass

    def adopt(self, agents: Sequence[Agent], typists: Mapping[str, Typist]) -> None:
        """Watch ``agents`` from now on (a reloaded layout): new ones are watched from
        their next pane listing, removed ones are forgotten (their process is left
        running), changed ones keep their history under their new settings. The maps
        are replaced, never changed in place, so the watch loop's iterations stay valid."""
        with self.lock:
            new = {a.name: a for a in agents}
            watches = dict(self.watches)
            for name in list(watches):
                if name not in new:
                    gone = watches.pop(name)
                    if gone.fd is not None:  # closed by the watch loop: it may be in its select now
                        self._closing.append(gone.fd)
                        gone.fd = None
            for name in new:
                watches.setdefault(name, Watch())
            self.agents, self.watches, self.typists = new, watches, typists
            self.save()

    def failed(self) -> list[str]:
        """Agents the breaker marked failed."""
        return [n for n, w in self.watches.items() if w.history.failed]

    # -- the loop

    def run(self, stop: threading.Event, tick: float = defaults.PANE_REFRESH) -> None:
        """Watch until ``stop`` is set."""
        next_hang_check = 0.0
        try:
            while not stop.is_set():
                self._close_dropped()
                self.sync()
                if time.monotonic() >= next_hang_check:
                    next_hang_check = time.monotonic() + defaults.HANG_CHECK
                    try:
                        self.check_hangs()
                    except TmuxError as e:
                        log.warning("hang check: %s", e)
                self._wait(tick)
                for name, w in self.watches.items():  # gone before its pidfd could be opened
                    if w.fd is None and w.pid and w.pid != w.handled_pid and not alive(w.pid):
                        self.on_exit(name, w.pid, "pid gone")
                self.run_due()
        except Stopped:
            pass
        finally:
            for w in self.watches.values():
                self._close_fd(w)

    def _wait(self, tick: float) -> None:
        """Wait at most ``tick`` seconds (less when a restart is due sooner) for an
        agent's pidfd to become readable or for :meth:`wake`; handle each death seen."""
        fds = {w.fd: n for n, w in self.watches.items() if w.fd is not None}
        timeout = tick
        due = [w.restart_at for w in self.watches.values() if w.restart_at is not None]
        if due:
            timeout = max(0.0, min(tick, min(due) - self.clock()))
        try:
            ready, _, _ = select.select([*fds, self._wake_r], [], [], timeout)
        except (OSError, ValueError):
            ready = []
        for fd in ready:
            if fd == self._wake_r:
                self._drain_wakeups()
                continue
            name = fds[fd]
            w = self.watches.get(name)
            if w is not None:
                self.on_exit(name, w.pid, "pidfd")

    def _close_dropped(self) -> None:
        with self.lock:
            fds, self._closing = self._closing, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        """Release the wake-up pipe; call after the watch loop's thread ended (or never
        started). Until then :meth:`wake` may write to it."""
        self._close_dropped()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def sync(self) -> None:
        """Follow the controller's view of the panes: watch new pids, treat dead or
        vanished panes as deaths (the backstop)."""
        panes = self.panes.all()
        for name, w in self.watches.items():
            pane = panes.get(name)
            if pane is None:
                continue
            if pane.dead:
                self.on_exit(name, pane.pid, "pane_dead")
                continue
            if pane.pid != w.pid and pane.pid != w.handled_pid:
                if w.restart_at is not None:  # brought back by someone else (`up`, a new pane)
                    with self.lock:
                        w.restart_at, w.pending = None, None
                        self.save()
                    self.event(
                        EventKind.RESTART_DROPPED,
                        name,
                        reason=f"a new process {pane.pid} runs in {pane.pane_id} already",
                    )
                self.track(name, pane.pid)

    def track(self, name: str, pid: int) -> None:
        """Start watching ``pid`` as agent ``name``'s process."""
        w = self.watches.get(name)
        if w is None:
            return
        self._close_fd(w)
        w.pid = pid
        st = proc_stat(pid)
        w.start_ticks = st.start_ticks if st else None
        w.started = started_at(st) if st is not None else self.clock()
        try:
            w.fd = os.pidfd_open(pid)
        except OSError:  # already gone, or no pidfd on this kernel: the backstop sees it
            w.fd = None

    def _close_fd(self, w: Watch) -> None:
        if w.fd is not None:
            try:
                os.close(w.fd)
            except OSError:
                pass
            w.fd = None

    # -- hangs

    def check_hangs(self) -> None:
        """Nudge, then restart, agents that are silent, not ready and not using CPU:
        sample what each live agent shows (:func:`~miyabi.supervision.hangs.sample`), let the pure
        :func:`~miyabi.supervision.policy.on_silence` decide, and act on it."""
        with self.lock:
            mono = time.monotonic()
            for name, w in self.watches.items():
                pane = self.panes.get(name)
                if pane is None or pane.dead or w.history.failed or w.restart_at is not None or not w.pid:
                    continue
                agent = self.agents[name]
                silence = sample(
                    agent,
                    w,
                    pane,
                    mono,
                    self.clock(),
                    self.last_output(pane.pane_id),
                    self.typists.get(name),
                    self.driver,
                    self.save,
                )
                if silence is None:
                    continue
                action, why = on_silence(agent.watchdog, silence)
                self._act(agent, w, pane, action, why, mono)

    def _act(self, agent: Agent, w: Watch, pane: Pane, action: SilenceAction, why: str, mono: float) -> None:
        name = agent.name
        if action == SilenceAction.OK:
            w.working_logged = False
            if w.hung:
                w.hung = False
                self.save()
        elif action == SilenceAction.WORKING:
            if not w.working_logged:
                self.event(EventKind.SILENT_BUT_WORKING, name, signal="cpu", detail=why)
                w.working_logged = True
        elif action == SilenceAction.NUDGE:
            msg = make(name, agent.watchdog.nudge, sender="miyabi-watchdog", priority="high")
            enqueue(self.home.root, msg)
            w.nudged_at, w.nudge_id, w.hung = mono, msg.id, True
            self.event(EventKind.NUDGED, name, signal="silence", detail=why, id=msg.id)
            self.save()
        elif action == SilenceAction.RESTART:
            self._drop_nudge(name, w)
            evidence = save_evidence(self.home, self.driver, name, pane, "hung", self.clock() - w.started)
            decision = Decision(DeathAction.RESTART, 0.0, w.history.backoff, f"hung: {why}")
            self.event(EventKind.HUNG_RESTART, name, signal="silence", detail=why, evidence=str(evidence))
            w.nudged_at, w.hung = None, False
            w.handled_pid = w.pid
            self.restart(name, decision, self.clock(), graceful=True)

    def _drop_nudge(self, name: str, w: Watch) -> None:
        """A nudge still waiting in the inbox is pointless once the agent restarts."""
        if w.nudge_id is None:
            return
        box = inbox(self.home.root, name)
        hit = box.find(w.nudge_id)
        if hit and hit[0] == MessageState.PENDING:
            (box.dir(MessageState.PENDING) / hit[1].filename).unlink(missing_ok=True)
        w.nudge_id = None

    # -- deaths

    def on_exit(self, name: str, pid: int, seen_by: str) -> None:
        """Agent ``name``'s process ``pid`` ended: save evidence and decide."""
        with self.lock:
            w = self.watches.get(name)
            if w is None:  # removed from the layout meanwhile
                return
            if pid == w.handled_pid or w.history.failed:
                if pid == w.pid:
                    self._close_fd(w)
                return
            w.handled_pid = pid
            self._close_fd(w)
            now = self.clock()
            uptime = max(0.0, now - w.started) if w.started else 0.0
            pane = self.panes.get(name)
            cause = exit_cause(self.driver, pane, pid, w.start_ticks if pid == w.pid else None, self.sleep)
            evidence = save_evidence(self.home, self.driver, name, pane, cause, uptime)
            decision = on_death(self.agents[name].watchdog, w.history, uptime, now, cause)
            self.event(
                EventKind.AGENT_DIED,
                name,
                pid=pid,
                cause=cause,
                uptime=round(uptime, 3),
                seen_by=seen_by,
                decision=decision.action,
                delay=decision.delay,
                evidence=str(evidence),
            )
            if decision.action == DeathAction.FAIL:
                w.history = History(w.history.restarts, w.history.backoff, decision.reason, decision.reason)
                w.restart_at = None
                w.pending = None
                self.mark_failed(name, decision.reason)
                self.event(EventKind.GAVE_UP, name, reason=decision.reason)
            else:
                w.pending = decision
                w.restart_at = now + decision.delay
                w.history.last_reason = decision.reason
            self.save()
        if decision.action == DeathAction.RESTART and decision.delay == 0:
            self.run_due()

    def mark_failed(self, name: str, reason: str) -> None:
        pane = self.panes.get(name)
        if pane is not None:
            try:
                self.driver.set_option(pane.pane_id, FAILED_TAG, reason)
            except TmuxError:
                pass

    # -- restarts

    def run_due(self) -> None:
        now = self.clock()
        if any(w.restart_at is not None and w.restart_at <= now for w in self.watches.values()):
            self.sync()  # a restart may have become stale while we slept: look first
        for name, w in self.watches.items():
            if w.restart_at is not None and w.restart_at <= now and w.pending is not None:
                self.restart(name, w.pending, now)

    def restart(self, name: str, decision: Decision, now: float, graceful: bool = False) -> bool:
        """End what is left of the agent and respawn it in its pane.

        The pane must still exist and hold the process this restart is about (dead
        for a crash, alive for ``graceful``); if it is gone or runs another process
        (recreated by the controller meanwhile), the restart is dropped."""
        typist = self.typists.get(name)
        agent_lock = typist.lock if typist is not None else threading.Lock()
        with self.lock, agent_lock:
            w = self.watches.get(name)
            if w is None:
                return False
            pane = self.panes.get(name)
            state = None
            if pane is not None:
                try:
                    state = self.driver.live(pane.pane_id)
                except TmuxError:
                    state = None
            expected = w.pid or (pane.pid if pane else 0)
            if pane is None or state is None or (state.pid != expected and not state.dead):
                self.event(EventKind.RESTART_DROPPED, name, reason="the pane is gone or runs another process")
                w.restart_at = None
                w.pending = None
                self.save()
                return False
            agent = self.agents[name]
            end_agent(agent.name, self.home.root, self.socket, state.pid, graceful and not state.dead, sleep=self.sleep)
            try:
                new_pid = self.respawn(agent, pane.pane_id, decision.died_young)
            except TmuxError as e:
                self.event(EventKind.RESTART_ERROR, name, error=str(e))
                w.restart_at = now + 1.0  # try again shortly
                return False
            # The restart happened: it counts, whatever follows.
            w.history = record_restart(w.history, decision, now)
            w.restart_at = None
            w.pending = None
            self.track(name, new_pid)
            self.panes.respawned(name, new_pid)
            self.save()
        self.event(EventKind.RESTARTED, name, pid=new_pid, pane=pane.pane_id, reason=decision.reason)
        return True

    def clear_and_restart(self, name: str) -> bool:
        """``miyabi restart``: forget the breaker and backoff, restart now."""
        with self.lock:
            w = self.watches.get(name)
            if w is None:
                return False
            w.history = History(restarts=[], backoff=0.0, failed=None, last_reason="restarted by request")
            w.handled_pid = w.pid
        return self.restart(
            name, Decision(DeathAction.RESTART, 0.0, 0.0, "restarted by `miyabi restart`"), self.clock(), graceful=True
        )
