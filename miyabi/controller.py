"""The controller: the one long-running process that delivers messages.

It holds a lock so that only one controller runs per home, keeps one control-mode
channel to tmux, finds each agent's pane by its ``@miyabi_agent`` tag, watches the
inboxes with inotify (the ``watchdog`` library; each deliverer also rescans every
:data:`POLL` seconds in case an event is missed), and runs one :class:`Deliverer`
thread per agent. ``miyabi controller`` runs it in the foreground; ``miyabi up``
starts it in the background (pidfile ``run/controller.pid``, log
``logs/controller.log``) and ``miyabi down`` stops it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from miyabi.delivery import Deliverer
from miyabi.errors import MiyabiError, TmuxError
from miyabi.home import Home
from miyabi.layout.model import Agent, Layout
from miyabi.mailbox import Inbox, Message, append_event, inbox, make
from miyabi.github import GitHub, GitHubError
from miyabi.intake import Dispatcher, sync
from miyabi.intake import report as report_to_github
from miyabi.scheduler import schedule
from miyabi.tasks import Store, TaskError
from miyabi.supervise import Supervisor
from miyabi.tmux.control import ControlClient
from miyabi.tmux.panes import Pane, list_panes, session_exists
from miyabi.tmux.runner import Tmux

POLL = 0.2
"""Seconds between rescans of the inboxes in case a file event is missed (fallback
poll); one thread scans them all and wakes the deliverers with mail waiting."""

IDLE_WAKE = 5.0
"""Longest a deliverer sleeps without any wake-up."""

PANE_REFRESH = 0.5
"""Seconds between refreshes of the agent → pane map."""

RECONNECT_MAX = 2.0
"""Longest wait, in seconds, between attempts to reopen the control channel."""

PIDFILE = "controller.pid"
STOPPED = "stopped"
"""File under ``run/`` that ``miyabi down`` leaves and ``miyabi up`` removes."""
LOCKFILE = "controller.lock"

log = logging.getLogger("miyabi.controller")


class ControllerRunning(MiyabiError):
    """Another controller already runs for this home."""


def intro_text(agent: Agent, layout: Layout) -> str:
    """The first message an agent gets after it starts (profiles with ``intro``)."""
    peers = [a.name for a in layout.agents if a.name != agent.name]
    return (
        f"You are {agent.name}, one of the agents of the miyabi ensemble {layout.session!r}. "
        f"The other agents are: {', '.join(peers) or 'none'}. "
        f"To message one, run: miyabi send NAME \"TEXT\" (or pipe text into: miyabi send NAME -). "
        f"To see messages waiting for you: miyabi inbox {agent.name}. "
        "Messages from others are typed into this pane when you are idle."
    )


class Controller:
    """Delivers every agent's inbox into its pane until stopped.

    Args:
        home: the miyabi home.
        socket: tmux socket name.
        layout: the ensemble (agents and their profiles).
    """

    def __init__(self, home: Home, socket: str, layout: Layout) -> None:
        self.home = home
        self.tmux = Tmux(socket)
        self.layout = layout
        self.stop = threading.Event()
        self.chan: ControlClient | None = None
        self._chan_lock = threading.Lock()
        self.panes: dict[str, Pane] = {}
        self.deliverers: dict[str, Deliverer] = {}
        self._pane_to_agent: dict[str, str] = {}
        self._intro_file = home.run / "intro.json"
        self._intros: dict[str, int] | None = None
        cwd = home.load_state().get("cwd")
        self.cwd = Path(cwd) if isinstance(cwd, str) and Path(cwd).is_dir() else home.root
        """Directory for agents whose layout entry sets no ``cwd`` (where ``miyabi up`` ran)."""
        self.supervisor: Supervisor | None = None
        self.store: Store
        if layout.github is not None:
            from miyabi.tmux.builder import protect_secret

            protect_secret(layout.github.token_env)

    # -- the tmux channel

    def run_tmux(self, *args: str, check: bool = True) -> list[str]:
        """Run a tmux command through the control channel, reopening it if needed."""
        chan = self._channel()
        return chan.run(*args, check=check)

    def _channel(self) -> ControlClient:
        with self._chan_lock:
            if self.chan is not None and self.chan.alive:
                return self.chan
            if not session_exists(self.tmux, self.layout.session):
                raise TmuxError("attach-session", f"session {self.layout.session!r} is not running", socket=self.tmux.socket)
            self.chan = ControlClient(self.tmux, self.layout.session, on_output=self._on_output).start()
            log.info("control channel open to session %s on socket %s", self.layout.session, self.tmux.socket)
            return self.chan

    def _on_output(self, pane_id: str, data: str) -> None:
        name = self._pane_to_agent.get(pane_id)
        if name and name in self.deliverers:
            self.deliverers[name].wake.set()

    def panes_get(self, name: str) -> Pane | None:
        """The agent's pane as last seen (refreshed every PANE_REFRESH seconds)."""
        return self.panes.get(name)

    def refresh_panes(self) -> None:
        panes = {p.agent: p for p in list_panes(_Chan(self), self.layout.session) if p.agent}
        self.panes = panes
        self._pane_to_agent = {p.pane_id: name for name, p in panes.items()}
        self._send_intros()

    # -- first messages

    def _send_intros(self) -> None:
        if self._intros is None:
            try:
                self._intros = {str(k): int(v) for k, v in json.loads(self._intro_file.read_text()).items()}
            except (OSError, ValueError, AttributeError):
                self._intros = {}
        sent = self._intros
        changed = False
        for agent in self.layout.agents:
            pane = self.panes.get(agent.name)
            if not agent.profile.intro or pane is None or pane.dead or sent.get(agent.name) == pane.pid:
                continue
            msg = make(agent.name, intro_text(agent, self.layout), sender="miyabi", priority="high")
            inbox(self.home.root, agent.name).put(msg)
            append_event(self.home.root, "intro", agent=agent.name, id=msg.id, pid=pane.pid)
            sent[agent.name] = pane.pid
            changed = True
        if changed:
            tmp = self._intro_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(sent))
            os.replace(tmp, self._intro_file)

    # -- running

    def run(self) -> None:
        """Run until :attr:`stop` is set (or SIGTERM/SIGINT in the main thread).

        Raises:
            ControllerRunning: another controller holds this home's lock.
        """
        from filelock import FileLock, Timeout

        self.home.ensure()
        lock = FileLock(str(self.home.run / LOCKFILE), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            pid = read_pid(self.home)
            raise ControllerRunning(
                f"a controller already runs for {self.home.root}" + (f" (pid {pid})" if pid else "") + "; stop it with `miyabi down`, or use it"
            ) from None
        try:
            (self.home.run / PIDFILE).write_text(f"{os.getpid()}\n")
            self._run_locked()
        finally:
            pidfile = self.home.run / PIDFILE
            if read_pid(self.home) == os.getpid():
                pidfile.unlink(missing_ok=True)
            lock.release()

    def _run_locked(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop.set())
        append_event(self.home.root, "controller-start", pid=os.getpid(), session=self.layout.session)
        log.info("controller %d started for home %s", os.getpid(), self.home.root)
        threads: list[threading.Thread] = []
        for agent in self.layout.agents:
            box: Inbox = inbox(self.home.root, agent.name)
            box.ensure()
            box.cleanup()
            d = Deliverer(agent, box, _Chan(self), self.home.root, pane=functools.partial(self.panes_get, agent.name),
                          on_delivered=self._task_delivered, on_dead_letter=self._task_dead_letter)
            self.deliverers[agent.name] = d
        observer = self._watch()
        self.supervisor = Supervisor(self)
        self.store = Store.of_home(self.home.root)
        gh = self.layout.github.client(self.home.root) if self.layout.github else None
        self.dispatch = Dispatcher(self.store, self.home.root, self.layout.github, gh)
        self._recover_assignments()
        if self.layout.github is not None and gh is not None:
            t = threading.Thread(target=self._poll_github, args=(gh,), name="github", daemon=True)
            t.start()
            threads.append(t)
        backoff = 0.1
        started = False
        while not self.stop.is_set():
            if not (self.home.run / LOCKFILE).exists():
                # The home was removed under us: nothing here to serve, and rebuilding
                # the session for it would leave an orphan running forever.
                log.warning("home %s is gone; stopping", self.home.root)
                self.stop.set()
                break
            try:
                self.refresh_panes()
                self._recreate_missing()
                backoff = 0.1
            except TmuxError as e:
                if self._rebuild_if_gone():
                    continue
                log.warning("tmux not reachable: %s; retrying in %.1f s", e, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX)
                continue
            if not started:
                for name, d in self.deliverers.items():
                    t = threading.Thread(target=d.run, args=(self.stop, IDLE_WAKE), name=f"deliver-{name}", daemon=True)
                    t.start()
                    threads.append(t)
                sup = self.supervisor
                for target, tname in ((self._rescan, "rescan"), (lambda: sup.run(self.stop, PANE_REFRESH), "watchdog")):
                    t = threading.Thread(target=target, name=tname, daemon=True)
                    t.start()
                    threads.append(t)
                started = True
            self._serve_requests()
            self._schedule()
            self.stop.wait(PANE_REFRESH / 5 if self._requests_dir.exists() and any(self._requests_dir.iterdir()) else PANE_REFRESH)
        for d in self.deliverers.values():
            d.wake.set()
        for t in threads:
            t.join(timeout=5)
        if observer is not None:
            observer.stop()
        if self.chan is not None:
            self.chan.close()
        append_event(self.home.root, "controller-stop", pid=os.getpid())
        log.info("controller %d stopped", os.getpid())

    # -- tasks

    def _schedule(self) -> None:
        failed = [n for n, w in self.supervisor.watches.items() if w.history.failed] if self.supervisor else []
        try:
            schedule(self.store, self.layout.routes, {a.name: a.wip for a in self.layout.agents}, self.dispatch, failed,
                     hold=self.dispatch.hold)
        except (TaskError, sqlite3.Error) as e:
            log.warning("scheduling: %s", e)

    def _poll_github(self, gh: GitHub) -> None:
        """Poll the repository every ``poll_interval`` seconds (a 304 costs nothing)."""
        cfg = self.layout.github
        assert cfg is not None
        store = Store.of_home(self.home.root)  # a connection of this thread's own
        if not os.environ.get(cfg.token_env):
            log.warning("no token in $%s: polling %s anonymously", cfg.token_env, cfg.repo)
        while not self.stop.is_set():
            try:
                report = sync(store, gh, cfg)
                if report.added or report.triaged:
                    append_event(self.home.root, "github-sync", added=report.added, triaged=report.triaged)
                for line in report_to_github(store, gh, cfg, self.home.root):
                    log.info("github: %s", line)
            except (GitHubError, TaskError, sqlite3.Error) as e:
                log.warning("github: %s", e)
                append_event(self.home.root, "github-error", error=str(e))
            self.stop.wait(cfg.poll_interval)

    def _task_delivered(self, msg: Message) -> None:
        if msg.task and msg.task.isdigit():
            try:
                self.store.set_state(int(msg.task), "in_progress", f"message {msg.id} delivered", expect=("assigned",))
            except (TaskError, sqlite3.Error):
                pass  # cancelled or finished meanwhile

    def _task_dead_letter(self, msg: Message, reason: str) -> None:
        """A task whose message could not be delivered goes back to the queue."""
        if msg.task and msg.task.isdigit():
            try:
                self.store.set_state(int(msg.task), "queued", f"its message was not delivered: {reason}", expect=("assigned",))
            except (TaskError, sqlite3.Error):
                pass

    def _recover_assignments(self) -> None:
        """A controller killed between assigning a task and enqueueing its message
        leaves an assigned task no agent heard of: send it again."""
        for t in self.store.query(state="assigned"):
            if t.agent is None:
                continue
            known = any(m.task == str(t.id) for _, m in inbox(self.home.root, t.agent).list(("pending", "delivered")))
            if not known:
                self.dispatch(t, t.agent)

    def _rebuild_if_gone(self) -> bool:
        """If the session (or the whole tmux server) is gone, build it again from the
        layout; pending messages are delivered once the agents are up. Not after
        ``miyabi down`` (``run/stopped``), which a service manager restarting the
        controller must not undo."""
        from miyabi.tmux.builder import up as build_up

        if (self.home.run / STOPPED).exists():
            return False
        try:
            if session_exists(self.tmux, self.layout.session):
                return False
            report = build_up(self.layout, self.tmux, self.home, self.cwd)
        except MiyabiError as e:
            log.warning("could not rebuild session %s: %s", self.layout.session, e)
            return False
        append_event(self.home.root, "session-rebuilt", session=self.layout.session, agents=report.created)
        log.info("session %s was gone; rebuilt it with %s", self.layout.session, ", ".join(report.created))
        return True

    def _recreate_missing(self) -> None:
        """An agent whose pane was closed gets a new one (dead panes are the watchdog's)."""
        missing = [a.name for a in self.layout.agents if a.name not in self.panes]
        if not missing:
            return
        from miyabi.tmux.builder import up as build_up

        report = build_up(self.layout, self.tmux, self.home, self.cwd, respawn_dead=False)
        if report.created:
            append_event(self.home.root, "pane-recreated", agents=report.created)
            log.info("recreated panes for %s", ", ".join(report.created))
            self.refresh_panes()

    def _rescan(self) -> None:
        """The fallback poll: every POLL seconds, wake each deliverer whose inbox
        directory changed (a missed inotify event) or that still has mail waiting for
        its agent to be ready. It only stat()s: opening the directories would itself
        raise inotify events."""
        seen: dict[str, int] = {}
        while not self.stop.wait(POLL):
            for name, d in self.deliverers.items():
                try:
                    mtime = os.stat(d.inbox.dir("pending")).st_mtime_ns
                except OSError:
                    continue
                if d.waiting or seen.get(name) != mtime:
                    seen[name] = mtime
                    d.wake.set()

    @property
    def _requests_dir(self) -> Path:
        return self.home.run / "requests"

    def _serve_requests(self) -> None:
        """Carry out ``miyabi restart`` requests (files ``run/requests/restart-<agent>``)."""
        d = self._requests_dir
        if not d.is_dir() or self.supervisor is None:
            return
        for req in sorted(d.iterdir()):
            if req.name.startswith("restart-") and req.name[8:] in self.supervisor.agents:
                ok = self.supervisor.clear_and_restart(req.name[8:])
                done = req.with_name(f"done-{req.name[8:]}")
                done.write_text("ok\n" if ok else "failed\n")
            if not req.name.startswith("done-"):
                req.unlink(missing_ok=True)

    def _watch(self) -> Any:
        """Wake an agent's deliverer when a file lands in its ``new/`` (inotify)."""
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - a declared dependency
            return None
        ctl = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                path = Path(str(getattr(event, "dest_path", "") or event.src_path))
                if path.parent.name == "new":
                    d = ctl.deliverers.get(path.parent.parent.name)
                    if d is not None:
                        d.wake.set()

        from watchdog.events import DirCreatedEvent, FileCreatedEvent, FileMovedEvent

        observer = Observer()
        observer.schedule(
            Handler(), str(self.home.queue), recursive=True,
            event_filter=[FileCreatedEvent, FileMovedEvent, DirCreatedEvent],
        )
        observer.daemon = True
        observer.start()
        return observer


class _Chan:
    """The controller's channel as the small interface deliverers and queries use."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    def run(self, *args: str, check: bool = True) -> list[str]:
        return self.ctl.run_tmux(*args, check=check)


# ------------------------------------------------------------------ process management


def read_pid(home: Home) -> int | None:
    """The pid in ``run/controller.pid``, if the file holds one."""
    try:
        return int((home.run / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(home: Home) -> int | None:
    """The pid of this home's running controller, or None. The lock decides, not the
    pidfile: a pidfile left by a killed controller may name a reused pid."""
    from filelock import FileLock, Timeout

    lockfile = home.run / LOCKFILE
    if not lockfile.exists():
        return None
    probe = FileLock(str(lockfile), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return read_pid(home)
    probe.release()
    return None


def start_background(home: Home, socket: str, layout_path: Path, wait: float = 5.0) -> tuple[int, bool]:
    """Start a controller in the background unless one runs; return (pid, started).

    Raises:
        MiyabiError: it did not come up within ``wait`` seconds (see logs/controller.log).
    """
    pid = running_pid(home)
    if pid is not None:
        return pid, False
    home.ensure()
    logf = open(home.logs / "controller.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("MIYABI_AGENT", "TMUX", "TMUX_PANE")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "miyabi", "controller", "--home", str(home.root), "--socket", socket, "--layout", str(layout_path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
            cwd=str(home.root),
        )
    finally:
        logf.close()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if read_pid(home) == proc.pid:
            return proc.pid, True
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise MiyabiError(f"the controller did not start (exit {proc.poll()}); see {home.logs / 'controller.log'}")


def stop_background(home: Home, wait: float = 5.0) -> int | None:
    """Stop this home's controller (SIGTERM, then SIGKILL after ``wait`` s); return its pid."""
    import psutil

    pid = running_pid(home)
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(wait)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(wait)
    except psutil.NoSuchProcess:
        pass
    return pid
