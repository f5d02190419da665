"""The controller: the one long-running process of a home, and the place that wires
miyabi's parts together. It holds no logic of its own beyond starting, pacing and
stopping them.

It holds a lock so that only one controller runs per home, and builds:

- a control-mode channel to the session (:class:`~miyabi.tmux.control.SessionChannel`),
  the agent → pane map (:class:`~miyabi.tmux.panes.PaneMap`) and verbs on panes;
- one :class:`~miyabi.messaging.delivery.Deliverer` thread per agent, woken by inotify
  on the inboxes, by pane output, and by a fallback rescan;
- the watchdog (:class:`~miyabi.supervision.supervisor.Supervisor`) and the session
  keeper;
- the task side (:class:`~miyabi.work.engine.WorkEngine`), with a GitHub thread when
  the layout has a ``github:`` section.

Its main loop refreshes the pane map every ``defaults.PANE_REFRESH`` seconds, serves
requests (``miyabi restart``) and runs a scheduling pass. Every wait in its threads
ends at once when it stops (SIGTERM, SIGINT, ``miyabi down``).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

from miyabi import defaults
from miyabi.config.model import Agent, Layout
from miyabi.controller import requests
from miyabi.controller.process import LOCKFILE, PIDFILE, ControllerRunning, read_pid
from miyabi.errors import TmuxError
from miyabi.events import append_event
from miyabi.files import write_atomic
from miyabi.home import Home
from miyabi.messaging.delivery import Deliverer
from miyabi.messaging.intro import Intros
from miyabi.messaging.mailbox import MessageState, inbox
from miyabi.messaging.watch import InboxWatcher, rescan
from miyabi.stopping import Stopped, sleeper
from miyabi.supervision.keeper import SessionKeeper
from miyabi.supervision.supervisor import Supervisor
from miyabi.tmux.builder import protect_secret, respawn_agent
from miyabi.tmux.control import SessionChannel
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import PaneMap
from miyabi.tmux.runner import Tmux
from miyabi.work.engine import WorkEngine
from miyabi.work.github import GitHub, client_for
from miyabi.work.tasks import Store, TaskError

log = logging.getLogger("miyabi.controller")


class Controller:
    """Delivers, supervises and schedules for one home until stopped.

    Args:
        home: the miyabi home.
        socket: tmux socket name.
        layout: the ensemble (agents and their profiles).
    """

    def __init__(self, home: Home, socket: str, layout: Layout) -> None:
        self.home = home
        self.layout = layout
        self.stop = threading.Event()
        self.sleep = sleeper(self.stop)
        self.tmux = Tmux(socket)
        self.channel = SessionChannel(self.tmux, layout.session, on_output=self._on_output)
        self.panes = PaneMap(self.channel, layout.session)
        self.driver = PaneDriver(self.channel)
        cwd = home.load_state().get("cwd")
        self.cwd = Path(cwd) if isinstance(cwd, str) and Path(cwd).is_dir() else home.root
        """Directory for agents whose layout entry sets no ``cwd`` (where ``miyabi up`` ran)."""
        self.deliverers: dict[str, Deliverer] = {}
        self.intros = Intros(home, layout)
        self.keeper = SessionKeeper(layout, self.tmux, home, self.cwd, home_intact=self._home_intact)
        self.supervisor: Supervisor | None = None
        self.engine: WorkEngine | None = None
        if layout.github is not None:
            protect_secret(layout.github.token_env)

    # -- wiring callbacks

    def _wake(self, agent: str) -> None:
        d = self.deliverers.get(agent)
        if d is not None:
            d.wake.set()

    def _on_output(self, pane_id: str) -> None:
        name = self.panes.agent_of(pane_id)
        if name is not None:
            self._wake(name)

    def _home_intact(self) -> bool:
        return (self.home.run / LOCKFILE).exists()

    def _respawn(self, agent: Agent, pane_id: str) -> int:
        return respawn_agent(self.channel, agent, pane_id, self.home, self.tmux.socket, self.cwd)

    def _restart_request(self, agent: str) -> bool:
        if self.supervisor is None or agent not in self.supervisor.agents:
            return False
        return self.supervisor.clear_and_restart(agent)

    # -- running

    def run(self) -> None:
        """Run until :attr:`stop` is set (or SIGTERM/SIGINT in the main thread).

        Raises:
            ControllerRunning: another controller holds this home's lock.
        """
        from filelock import FileLock, Timeout

        self.home.ensure()
        lock = FileLock(str(self.home.run / LOCKFILE), timeout=0, mode=defaults.FILE_MODE)
        try:
            lock.acquire()
        except Timeout:
            pid = read_pid(self.home)
            raise ControllerRunning(
                f"a controller already runs for {self.home.root}" + (f" (pid {pid})" if pid else "") + "; stop it with `miyabi down`, or use it"
            ) from None
        try:
            write_atomic(self.home.run / PIDFILE, f"{os.getpid()}\n")
            self._run_locked()
        except OSError:
            if self._home_intact():
                raise
            log.warning("home %s was removed while the controller started; stopping", self.home.root)
        finally:
            if read_pid(self.home) == os.getpid():
                (self.home.run / PIDFILE).unlink(missing_ok=True)
            lock.release()

    def _start(self, target: object, name: str, threads: list[threading.Thread]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        t.start()
        threads.append(t)

    def _run_locked(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop.set())
        append_event(self.home.root, "controller-start", pid=os.getpid(), session=self.layout.session)
        log.info("controller %d started for home %s", os.getpid(), self.home.root)
        store = Store.of_home(self.home.root)
        gh = client_for(self.layout.github, self.home.root, sleep=self.sleep) if self.layout.github else None
        engine = self.engine = WorkEngine(store, self.layout, self.home.root, gh)
        for agent in self.layout.agents:
            box = inbox(self.home.root, agent.name)
            box.ensure()
            box.cleanup()
            self.deliverers[agent.name] = Deliverer(
                agent, box, self.driver, self.home.root, pane=functools.partial(self.panes.get, agent.name),
                sleep=self.sleep, on_delivered=engine.delivered, on_dead_letter=engine.dead_letter,
            )
        watcher = InboxWatcher(self.home.queue, self._wake)
        watcher.start()
        supervisor = self.supervisor = Supervisor(
            self.home, self.layout.agents, self.tmux.socket, self.driver, self.panes, respawn=self._respawn,
            last_output=self.channel.last_output, typists=self.deliverers, sleep=self.sleep,
        )
        threads: list[threading.Thread] = []
        try:
            self._serve(engine, supervisor, gh, threads)
        except Stopped:  # a GitHub wait on this thread (a claim) ended by the stop
            log.info("stopped while waiting")
        finally:
            self.stop.set()
            stopping = time.monotonic()
            for d in self.deliverers.values():
                d.wake.set()
            supervisor.wake()
            for t in threads:
                t.join(timeout=defaults.THREAD_JOIN)
            left = [t.name for t in threads if t.is_alive()]
            supervisor.close()
            watcher.stop()
            self.channel.close()
            store.close()
            log.info("threads ended in %.3f s", time.monotonic() - stopping)
            try:
                append_event(self.home.root, "controller-stop", pid=os.getpid(), threads_left=left)
            except OSError:  # the home was removed: nowhere to tell
                pass
            log.info("controller %d stopped%s", os.getpid(), f"; threads still running: {', '.join(left)}" if left else "")

    def _serve(self, engine: WorkEngine, supervisor: Supervisor, gh: GitHub | None, threads: list[threading.Thread]) -> None:
        """The main loop, until stopped: refresh the pane map (rebuilding what is gone),
        start the threads once tmux answers, serve requests, schedule."""
        engine.recover_assignments()
        if gh is not None:
            self._start(functools.partial(engine.run_github, self.stop), "github", threads)
        backoff = 0.1
        started = False
        while not self.stop.is_set():
            if not self._home_intact():
                # The home was removed under us: nothing here to serve, and rebuilding
                # the session for it would leave an orphan running forever.
                log.warning("home %s is gone; stopping", self.home.root)
                self.stop.set()
                break
            try:
                panes = self.panes.refresh()
                if self.keeper.recreate_missing(panes):
                    panes = self.panes.refresh()
                self.intros.send_due(panes)
                backoff = 0.1
            except TmuxError as e:
                if self.keeper.rebuild_if_gone():
                    continue
                log.warning("tmux not reachable: %s; retrying in %.1f s", e, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, defaults.RECONNECT_MAX)
                continue
            if not started:
                for name, d in self.deliverers.items():
                    self._start(functools.partial(d.run, self.stop), f"deliver-{name}", threads)
                inboxes = functools.partial(self._inboxes)
                self._start(functools.partial(rescan, self.stop, inboxes, self._wake), "rescan", threads)
                self._start(functools.partial(supervisor.run, self.stop), "watchdog", threads)
                started = True
                append_event(self.home.root, "controller-ready", pid=os.getpid(), agents=list(self.deliverers))
            requests.serve(self.home, self._restart_request)
            try:
                engine.schedule(supervisor.failed())
            except (TaskError, sqlite3.Error) as e:
                log.warning("scheduling: %s", e)
            self.stop.wait(defaults.PANE_REFRESH / 5 if requests.pending(self.home) else defaults.PANE_REFRESH)

    def _inboxes(self) -> dict[str, tuple[Path, bool]]:
        return {n: (d.inbox.dir(MessageState.PENDING), d.waiting) for n, d in self.deliverers.items()}
