"""The watchdog: recreate crashed agents in their own pane, with backoff.

Deaths are seen from events, not a slow poll: the supervisor holds a pidfd
(``pidfd_open(2)``, Linux 5.3+) for each agent's process, which becomes readable the
instant that process exits, though it is not our child. tmux 3.3a's ``pane-died``
hook is unreliable (../shared/TMUX.md: the child is sometimes not reaped), so it is
not used; the controller's pane listing every ``PANE_REFRESH`` seconds (``pane_dead``,
a pane that vanished) is the backstop.

A restart ends everything of the old agent first: its process group, and every
process that still carries its ``MIYABI_AGENT``/``MIYABI_HOME``/``MIYABI_SOCKET``
environment (which also finds a child that moved to its own session and ignores
SIGHUP). Then ``respawn-pane -k`` runs the agent's own command in the same pane,
which keeps its id, position and tag. Before that, the evidence (how it ended, how
long it ran, the last 2,000 lines of its pane) goes to ``logs/crashes/``. What to do
and when is :func:`miyabi.policy.on_death`; restart history is persisted in
``run/watchdog.json`` so a restarted controller keeps its counters and backoff.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miyabi.errors import TmuxError
from miyabi.layout.model import Agent
from miyabi.mailbox import append_event
from miyabi.policy import Decision, History, on_death, record_restart
from miyabi.tmux.builder import pane_setup, spawn_args
from miyabi.tmux.panes import Pane
from miyabi.tmux.runner import Command

if TYPE_CHECKING:
    from miyabi.controller import Controller

SCROLLBACK_LINES = 2000
"""Lines of the pane saved with a crash."""

HANG_CHECK = 1.0
"""Seconds between hang checks."""

ECHO_GRACE = 1.0
"""Seconds after a delivery during which the pane's output counts as the echo of the
message itself, not as an answer."""

CPU_BUSY = 0.02
"""CPU seconds per second of wall time above which a silent agent counts as working
(sampled between two hang checks)."""

KILL_GRACE = 2.0
"""Seconds a hung agent gets between SIGTERM and SIGKILL."""

STATE_FILE = "watchdog.json"

log = logging.getLogger("miyabi.watchdog")


@dataclass
class Watch:
    """What the supervisor knows of one agent right now."""

    pid: int = 0
    started: float = 0.0
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


def _now_tag() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


class Supervisor:
    """Watches every agent's process and restarts it by its policy.

    Args:
        ctl: the controller (its tmux channel, panes, layout and home).
        clock: Unix time (injectable).
    """

    def __init__(self, ctl: Controller, clock: Any = time.time) -> None:
        self.ctl = ctl
        self.clock = clock
        self.home = ctl.home
        self.agents: dict[str, Agent] = {a.name: a for a in ctl.layout.agents}
        self.watches: dict[str, Watch] = {n: Watch() for n in self.agents}
        self.lock = threading.RLock()
        self.state_file = self.home.run / STATE_FILE
        self._load()

    # -- persistence

    def _load(self) -> None:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        for name, rec in data.get("agents", {}).items():
            w = self.watches.get(name)
            if w is None:
                continue
            w.history = History(**rec.get("history", {}))
            w.handled_pid = int(rec.get("handled_pid", 0))
            if rec.get("restart_at"):
                w.restart_at = float(rec["restart_at"])
                w.pending = Decision(**rec["pending"]) if rec.get("pending") else None

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
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.state_file)

    def event(self, kind: str, agent: str, **fields: Any) -> None:
        append_event(self.home.root, kind, agent=agent, **fields)
        line = f"{datetime.now(UTC).isoformat(timespec='milliseconds')} {kind} {agent} " + " ".join(
            f"{k}={v}" for k, v in fields.items()
        )
        with open(self.home.logs / "watchdog.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")
        log.info("%s %s %s", kind, agent, fields)

    # -- the loop

    def run(self, stop: threading.Event, tick: float = 0.2) -> None:
        """Watch until ``stop`` is set."""
        next_hang_check = 0.0
        while not stop.is_set():
            self.sync()
            if time.monotonic() >= next_hang_check:
                next_hang_check = time.monotonic() + HANG_CHECK
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
                ready, _, _ = select.select(list(fds), [], [], timeout)
            except (OSError, ValueError):
                ready = []
            for fd in ready:
                name = fds[fd]
                self.on_exit(name, self.watches[name].pid, "pidfd")
            for name, w in self.watches.items():  # gone before its pidfd could be opened
                if w.fd is None and w.pid and w.pid != w.handled_pid and not _alive(w.pid):
                    self.on_exit(name, w.pid, "pid gone")
            self.run_due()
        for w in self.watches.values():
            self._close_fd(w)

    def sync(self) -> None:
        """Follow the controller's view of the panes: watch new pids, treat dead or
        vanished panes as deaths (the backstop)."""
        panes = self.ctl.panes
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
                    self.event("restart-dropped", name, reason=f"a new process {pane.pid} runs in {pane.pane_id} already")
                self.track(name, pane.pid)

    def track(self, name: str, pid: int) -> None:
        """Start watching ``pid`` as agent ``name``'s process."""
        import psutil

        w = self.watches[name]
        self._close_fd(w)
        w.pid = pid
        try:
            w.started = psutil.Process(pid).create_time()
        except psutil.Error:
            w.started = self.clock()
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
        """Nudge, then restart, agents that are silent, not ready and not using CPU."""
        with self.lock:
            self._check_hangs()

    def _check_hangs(self) -> None:
        import psutil

        from miyabi.delivery import is_busy, looks_ready
        from miyabi.policy import Silence, on_silence

        chan = self.ctl.chan
        mono = time.monotonic()
        for name, w in self.watches.items():
            pane = self.ctl.panes.get(name)
            agent = self.agents[name]
            if pane is None or pane.dead or w.history.failed or w.restart_at is not None or not w.pid:
                continue
            started_mono = mono - max(0.0, self.clock() - w.started)
            last_out = max(chan.last_output.get(pane.pane_id, 0.0) if chan else 0.0, started_mono)
            d = self.ctl.deliverers.get(name)
            delivered = d.last_delivered if d else None
            # Output within ECHO_GRACE of a delivery is the terminal echoing our own text.
            answered = delivered is None or last_out > delivered + ECHO_GRACE
            since_delivery = None if answered or delivered is None else mono - delivered
            # Cheap first: silence comes from %output. Only a silent agent costs a screen
            # read, and only a silent agent that is not ready a CPU sample.
            silent = mono - last_out if agent.profile.ready_pattern else since_delivery
            if silent is None or silent < agent.watchdog.silence_timeout:
                w.cpu_base = None
                if w.hung or w.nudged_at is not None:
                    w.hung, w.nudged_at = False, None
                    self.save()
                continue
            ready: bool | None = None
            if agent.profile.ready_pattern:
                lines = self.ctl.run_tmux("capture-pane", "-p", "-t", pane.pane_id)
                ready = looks_ready(agent.profile, lines) and not is_busy(agent.profile, lines)
            cpu_busy = False
            if not ready:
                try:
                    proc = psutil.Process(w.pid)
                    cpu = sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])
                except psutil.Error:
                    continue
                if w.cpu_base is None:  # first sample: decide at the next check
                    w.cpu_base = (cpu, mono)
                    continue
                base_cpu, base_t = w.cpu_base
                cpu_busy = (cpu - base_cpu) / max(mono - base_t, 1e-3) > CPU_BUSY
                w.cpu_base = (cpu, mono)
            s = Silence(
                silent_for=mono - last_out,
                ready=ready,
                since_delivery=since_delivery,
                cpu_busy=cpu_busy,
                nudged_for=(mono - w.nudged_at) if w.nudged_at is not None and last_out <= w.nudged_at else None,
            )
            if w.nudged_at is not None and last_out > w.nudged_at:  # it spoke: forgive
                w.nudged_at, w.hung = None, False
            action, why = on_silence(agent.watchdog, s)
            if action == "ok":
                w.working_logged = False
                if w.hung:
                    w.hung = False
                    self.save()
            elif action == "working":
                if not w.working_logged:
                    self.event("silent-but-working", name, signal="cpu", detail=why)
                    w.working_logged = True
            elif action == "nudge":
                from miyabi.mailbox import inbox, make

                msg = make(name, agent.watchdog.nudge, sender="miyabi-watchdog", priority="high")
                inbox(self.home.root, name).put(msg)
                w.nudged_at, w.nudge_id, w.hung = mono, msg.id, True
                self.event("nudged", name, signal="silence", detail=why, id=msg.id)
                self.save()
            elif action == "restart":
                self._drop_nudge(name, w)
                cause = "hung"
                evidence = self.save_evidence(name, pane, cause, self.clock() - w.started)
                decision = Decision("restart", 0.0, w.history.backoff, f"hung: {why}")
                self.event("hung-restart", name, signal="silence", detail=why, evidence=str(evidence))
                w.nudged_at, w.hung = None, False
                w.handled_pid = w.pid
                self.restart(name, decision, self.clock(), graceful=True)

    def _drop_nudge(self, name: str, w: Watch) -> None:
        """A nudge still waiting in the inbox is pointless once the agent restarts."""
        from miyabi.mailbox import inbox

        if w.nudge_id is None:
            return
        box = inbox(self.home.root, name)
        hit = box.find(w.nudge_id)
        if hit and hit[0] == "pending":
            (box.dir("pending") / hit[1].filename).unlink(missing_ok=True)
        w.nudge_id = None

    # -- deaths

    def on_exit(self, name: str, pid: int, seen_by: str) -> None:
        """Agent ``name``'s process ``pid`` ended: save evidence and decide."""
        with self.lock:
            w = self.watches[name]
            if pid == w.handled_pid or w.history.failed:
                if pid == w.pid:
                    self._close_fd(w)
                return
            w.handled_pid = pid
            self._close_fd(w)
            now = self.clock()
            uptime = max(0.0, now - w.started) if w.started else 0.0
            pane = self.ctl.panes.get(name)
            cause = self._cause(pane, pid)
            evidence = self.save_evidence(name, pane, cause, uptime)
            decision = on_death(self.agents[name].watchdog, w.history, uptime, now, cause)
            self.event("agent-died", name, pid=pid, cause=cause, uptime=round(uptime, 3), seen_by=seen_by,
                       decision=decision.action, delay=decision.delay, evidence=str(evidence) if evidence else None)
            if decision.action == "fail":
                w.history = History(w.history.restarts, w.history.backoff, decision.reason, decision.reason)
                w.restart_at = None
                w.pending = None
                self.mark_failed(name, decision.reason)
                self.event("gave-up", name, reason=decision.reason)
            else:
                w.pending = decision
                w.restart_at = now + decision.delay
                w.history.last_reason = decision.reason
            self.save()
        if decision.action == "restart" and decision.delay == 0:
            self.run_due()

    def _cause(self, pane: Pane | None, pid: int) -> str:
        try:
            out = self.ctl.run_tmux("display-message", "-p", "-t", pane.pane_id, "#{pane_dead_status} #{pane_dead_signal}") if pane else []
        except TmuxError:
            out = []
        status, _, sig = (out[0] if out else " ").partition(" ")
        if sig.strip():
            return f"killed by signal {sig.strip()}"
        if status.strip():
            return f"exit status {status.strip()}"
        return "exited"

    def save_evidence(self, name: str, pane: Pane | None, cause: str, uptime: float) -> Path | None:
        """Write ``logs/crashes/<agent>-<time>.log``: how it ended, how long it ran, and the
        last lines of its pane."""
        crashes = self.home.logs / "crashes"
        crashes.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = crashes / f"{name}-{_now_tag()}.log"
        lines: list[str] = []
        if pane is not None:
            try:
                lines = self.ctl.run_tmux("capture-pane", "-p", "-J", "-S", f"-{SCROLLBACK_LINES}", "-t", pane.pane_id)
            except TmuxError:
                lines = []
        head = [f"agent: {name}", f"ended: {cause}", f"ran: {uptime:.3f} s", f"pane: {pane.pane_id if pane else '-'}", "", "--- last lines of the pane ---"]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(head + lines[-SCROLLBACK_LINES:]) + "\n")
        return path

    def mark_failed(self, name: str, reason: str) -> None:
        pane = self.ctl.panes.get(name)
        if pane is not None:
            try:
                self.ctl.run_tmux("set-option", "-p", "-t", pane.pane_id, "@miyabi_failed", reason)
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
        d = self.ctl.deliverers.get(name)
        agent_lock = d.lock if d is not None else threading.Lock()
        with self.lock, agent_lock:
            w = self.watches[name]
            pane = self.ctl.panes.get(name)
            state = None
            if pane is not None:
                try:
                    out = self.ctl.run_tmux("display-message", "-p", "-t", pane.pane_id, "#{pane_dead} #{pane_pid}")
                    state = out[0].split() if out else None
                except TmuxError:
                    state = None
            expected = str(w.pid or (pane.pid if pane else 0))
            if pane is None or not state or len(state) < 2 or (state[1] != expected and not (state[0] == "1")):
                self.event("restart-dropped", name, reason="the pane is gone or runs another process")
                w.restart_at = None
                w.pending = None
                self.save()
                return False
            agent = self.agents[name]
            end_agent(agent.name, self.home.root, self.ctl.tmux.socket, int(state[1]), graceful and state[0] != "1")
            respawn = ["respawn-pane", "-k", "-t", pane.pane_id, *spawn_args(agent, self.home, self.ctl.tmux.socket, self.ctl.cwd)]
            try:
                self.ctl.run_tmux(*respawn)
            except TmuxError as e:
                self.event("restart-error", name, error=str(e))
                w.restart_at = now + 1.0  # try again shortly
                return False
            # The restart happened: it counts, whatever follows. The tag and the log pipe
            # survive a respawn; setting them again is best effort (a program that exits
            # at once leaves a dead pane, where pipe-pane fails).
            w.history = record_restart(w.history, decision, now)
            setup: list[Command] = [*pane_setup(agent, self.home, ("-t", pane.pane_id)), ["set-option", "-p", "-u", "-t", pane.pane_id, "@miyabi_failed"]]
            for c in setup:
                self.ctl.run_tmux(*c, check=False)
            try:
                new_pid = int(self.ctl.run_tmux("display-message", "-p", "-t", pane.pane_id, "#{pane_pid}")[0])
            except (TmuxError, ValueError, IndexError):
                new_pid = 0
            w.restart_at = None
            w.pending = None
            self.track(name, new_pid)
            self.ctl.panes[name] = Pane(**{**asdict(pane), "pid": new_pid, "dead": False})
            self.save()
        self.event("restarted", name, pid=new_pid, pane=pane.pane_id, reason=decision.reason)
        return True

    def clear_and_restart(self, name: str) -> bool:
        """``miyabi restart``: forget the breaker and backoff, restart now."""
        with self.lock:
            w = self.watches[name]
            w.history = History(restarts=[], backoff=0.0, failed=None, last_reason="restarted by request")
            w.handled_pid = w.pid
        return self.restart(name, Decision("restart", 0.0, 0.0, "restarted by `miyabi restart`"), self.clock(), graceful=True)


def end_agent(name: str, home_root: Path, socket: str, pid: int, graceful: bool = False) -> list[int]:
    """Kill everything left of agent ``name``: every process whose environment marks it
    as this agent of this ensemble, and, when ``pid`` is alive and carries those
    marks itself, its process group (what dropped the marks with it). A dead ``pid`` is
    never used as a group id: it may belong to another process by now. With
    ``graceful``, SIGTERM first and SIGKILL after :data:`KILL_GRACE` seconds.

    Returns:
        the pids signalled.
    """
    marks = (f"MIYABI_AGENT={name}\0".encode(), f"MIYABI_HOME={home_root}\0".encode(), f"MIYABI_SOCKET={socket}\0".encode())
    victims: set[int] = set()
    spared = {os.getpid(), os.getppid()}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in spared:
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as f:
                if f.read().startswith(b"tmux"):  # never the server or a client
                    continue
        except OSError:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read() + b"\0"
        except OSError:
            continue
        if all(m in env for m in marks):
            victims.add(int(entry))
    victims = {p for p in victims if p > 1}
    pgid: int | None = None
    if pid > 1 and pid in victims and _alive(pid):
        try:
            pgid = os.getpgid(pid) if os.getpgid(pid) == pid else None
        except OSError:
            pgid = None
    sigs = (signal.SIGTERM, signal.SIGKILL) if graceful else (signal.SIGKILL,)
    for i, sig in enumerate(sigs):
        if i:
            deadline = time.monotonic() + KILL_GRACE
            while time.monotonic() < deadline and any(_alive(p) for p in victims):
                time.sleep(0.05)
        if pgid is not None:
            try:
                os.killpg(pgid, sig)
            except OSError:
                pass
        for p in victims:
            try:
                os.kill(p, sig)
            except OSError:
                pass
    return sorted(victims)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
