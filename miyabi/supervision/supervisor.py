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
deliverer as a :class:`Typist` (its lock, its last delivery).
"""

from __future__ import annotations

import json
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from miyabi import defaults
from miyabi.agents.hooks import Activity
from miyabi.agents.screen import Screen, looks_ready
from miyabi.config.model import Agent
from miyabi.errors import TmuxError
from miyabi.events import EventKind, append_event
from miyabi.files import append_line, open_private, private_dir, write_atomic
from miyabi.home import Home
from miyabi.messaging.mailbox import MessageState, enqueue, inbox, make
from miyabi.stopping import Stopped
from miyabi.supervision.policy import (
    DeathAction,
    Decision,
    History,
    Silence,
    SilenceAction,
    on_death,
    on_silence,
    record_restart,
)
from miyabi.supervision.processes import alive, end_agent, proc_stat, started_at, zombie_exit
from miyabi.supervision.saved import STATE_FILE, load_records
from miyabi.times import file_tag, now_rfc3339
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import FAILED_TAG, Pane, PaneMap

log = logging.getLogger("miyabi.watchdog")


class Typist(Protocol):
    """What the watchdog needs of an agent's deliverer."""

    lock: threading.Lock
    """Held while typing; the watchdog takes it before it respawns the pane."""
    last_delivered: float | None
    """``time.monotonic()`` of the last delivery, or None."""

    def state(self, pane: Pane) -> tuple[Activity, str, str | None, Screen | None]:
        """(state, who told, permission question, screen read) of the agent in ``pane``."""
        ...


@dataclass
class Watch:
    """What the supervisor knows of one agent right now."""

    pid: int = 0
    started: float = 0.0
    start_ticks: int | None = None
    fd: int | None = None
    handled_pid: int = 0
    restart_at: float | None = None
    pending: Decision | None = None
    history: History = field(default_factory=History)
    cpu_base: tuple[float, float] | None = None
    nudged_at: float | None = None
    nudge_id: str | None = None
    hung: bool = False
    working_logged: bool = False


class Supervisor:
    """Watches every agent's process and restarts it by its policy.

    Args:
        home: the miyabi home (state, evidence, events).
        agents: the agents to watch.
        socket: the tmux socket (part of the environment marks of an agent's processes).
        driver: verbs on panes.
        panes: the agent → pane map the controller refreshes.
        respawn: ``respawn(agent, pane_id)`` runs the agent again in its pane and
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
        respawn: Callable[[Agent, str], int],
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
        self._load()

    # -- persistence

    def _load(self) -> None:
        for name, rec in load_records(self.home).items():
            w = self.watches.get(name)
            if w is None:
                continue
            try:
                w.history = History(**rec.get("history", {}))
                w.handled_pid = int(rec.get("handled_pid", 0))
                if rec.get("restart_at"):
                    w.restart_at = float(rec["restart_at"])
                    p = rec.get("pending")
                    w.pending = Decision(**{**p, "action": DeathAction(p["action"])}) if p else None
            except (TypeError, ValueError, KeyError):
                log.warning("ignoring unreadable watchdog state for %s", name)

    def save(self) -> None:
        with self.lock:
            data = {
                "agents": {
                    n: {
                        "history": asdict(w.history),
                        "handled_pid": w.handled_pid,
                        "restart_at": w.restart_at,
                        "pending": asdict(w.pending) if w.pending else None,
                        "pid": w.pid,
                        "hung": w.hung,
                    }
                    for n, w in self.watches.items()
                }
            }
            write_atomic(self.state_file, json.dumps(data, indent=1))

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
                for name, w in self.watches.items():  # gone before its pidfd could be opened
                    if w.fd is None and w.pid and w.pid != w.handled_pid and not alive(w.pid):
                        self.on_exit(name, w.pid, "pid gone")
                self.run_due()
        except Stopped:
            pass
        finally:
            for w in self.watches.values():
                self._close_fd(w)

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
        sample what each live agent shows (:meth:`sample`), let the pure
        :func:`~miyabi.supervision.policy.on_silence` decide, and act on it."""
        with self.lock:
            mono = time.monotonic()
            for name, w in self.watches.items():
                pane = self.panes.get(name)
                if pane is None or pane.dead or w.history.failed or w.restart_at is not None or not w.pid:
                    continue
                agent = self.agents[name]
                silence = self.sample(agent, w, pane, mono)
                if silence is None:
                    continue
                action, why = on_silence(agent.watchdog, silence)
                self._act(agent, w, pane, action, why, mono)

    def sample(self, agent: Agent, w: Watch, pane: Pane, mono: float) -> Silence | None:
        """What the watchdog sees of a live agent now, or None when there is nothing
        to decide (it printed recently, or a first CPU sample was just taken).

        Cheap first: silence comes from ``%output``. Only a silent agent costs a
        screen read, and only a silent agent that is not ready a CPU sample."""
        started_mono = mono - max(0.0, self.clock() - w.started)
        last_out = max(self.last_output(pane.pane_id), started_mono)
        typist = self.typists.get(agent.name)
        delivered = typist.last_delivered if typist is not None else None
        # Output within ECHO_GRACE of a delivery is the terminal echoing our own text.
        answered = delivered is None or last_out > delivered + defaults.ECHO_GRACE
        since_delivery = None if answered or delivered is None else mono - delivered
        silent = mono - last_out if agent.profile.ready_pattern else since_delivery
        if silent is None or silent < agent.watchdog.silence_timeout:
            w.cpu_base = None
            if w.hung or w.nudged_at is not None:
                w.hung, w.nudged_at = False, None
                self.save()
            return None
        ready: bool | None = None
        if typist is not None:
            state = typist.state(pane)[0]
            if state in (Activity.WAITING_APPROVAL, Activity.HUMAN):  # waiting for, or on, a person: never a hang
                return None
            if agent.profile.ready_pattern or agent.profile.hooks:
                ready = state is Activity.READY
        elif agent.profile.ready_pattern:
            ready = looks_ready(agent.profile, self.driver.screen(pane.pane_id))
        cpu_busy = False
        if not ready:
            import psutil  # here: `miyabi status` reads the watchdog's records without it

            try:
                proc = psutil.Process(w.pid)
                cpu = sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])
            except psutil.Error:
                return None
            if w.cpu_base is None:  # first sample: decide at the next check
                w.cpu_base = (cpu, mono)
                return None
            base_cpu, base_t = w.cpu_base
            cpu_busy = (cpu - base_cpu) / max(mono - base_t, 1e-3) > defaults.CPU_BUSY
            w.cpu_base = (cpu, mono)
        nudged_for = (mono - w.nudged_at) if w.nudged_at is not None and last_out <= w.nudged_at else None
        if w.nudged_at is not None and last_out > w.nudged_at:  # it spoke: forgive
            w.nudged_at, w.hung = None, False
        return Silence(
            silent_for=mono - last_out,
            ready=ready,
            since_delivery=since_delivery,
            cpu_busy=cpu_busy,
            nudged_for=nudged_for,
        )

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
            evidence = self.save_evidence(name, pane, "hung", self.clock() - w.started)
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
            cause = self.cause(pane, pid, w.start_ticks if pid == w.pid else None)
            evidence = self.save_evidence(name, pane, cause, uptime)
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
                evidence=str(evidence) if evidence else None,
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

    def cause(self, pane: Pane | None, pid: int, start_ticks: int | None) -> str:
        """How process ``pid`` ended: from the kernel while it is an unreaped zombie,
        else from tmux once it reaped it (waiting up to ``defaults.EXIT_STATUS_WAIT``
        for tmux to record it)."""
        seen = zombie_exit(pid, start_ticks)
        if seen:
            return seen
        if pane is None:
            return "exited"
        deadline = time.monotonic() + defaults.EXIT_STATUS_WAIT
        while True:
            try:
                st = self.driver.exit_state(pane.pane_id)
            except TmuxError:
                return "exited"
            if st.signal is not None:
                return f"killed by signal {st.signal}"
            if st.dead and st.status is not None:
                return f"exit status {st.status}"
            seen = zombie_exit(pid, start_ticks)
            if seen:
                return seen
            if st.dead or time.monotonic() > deadline:
                return "exited"
            self.sleep(0.02)

    def save_evidence(self, name: str, pane: Pane | None, cause: str, uptime: float) -> Path | None:
        """Write ``logs/crashes/<agent>-<time>.log``: how it ended, how long it ran, and the
        last lines of its pane."""
        crashes = private_dir(self.home.logs / "crashes", parents=False)
        path = crashes / f"{name}-{file_tag()}.log"
        lines: list[str] = []
        if pane is not None:
            try:
                lines = self.driver.capture(pane.pane_id, history=defaults.SCROLLBACK_LINES)
            except TmuxError:
                lines = []
        head = [
            f"agent: {name}",
            f"ended: {cause}",
            f"ran: {uptime:.3f} s",
            f"pane: {pane.pane_id if pane else '-'}",
            "",
            "--- last lines of the pane ---",
        ]
        fd = open_private(path, os.O_WRONLY | os.O_EXCL)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(head + lines[-defaults.SCROLLBACK_LINES :]) + "\n")
        return path

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
                new_pid = self.respawn(agent, pane.pane_id)
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
