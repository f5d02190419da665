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
import threading
import time
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.bus.service import BusBridge
from miyabi.config.model import Agent, Layout, PipelineMode
from miyabi.config.settings import BusSettings, auto_answer
from miyabi.controller import requests
from miyabi.controller.process import LOCKFILE, PIDFILE, ControllerRunning, read_pid
from miyabi.controller.webproc import WebProcess
from miyabi.errors import LayoutError, MiyabiError, TmuxError
from miyabi.events import append_event
from miyabi.files import private_dir, write_atomic
from miyabi.home import Home
from miyabi.messaging.delivery import Deliverer
from miyabi.messaging.intro import Intros
from miyabi.messaging.mailbox import Message, MessageState, inbox
from miyabi.messaging.watch import InboxWatcher, rescan
from miyabi.notify.service import Notifier
from miyabi.pipeline.followups import FollowUps, file_fix
from miyabi.pipeline.service import Pipeline, release_pools
from miyabi.reports.schedule import run_schedule
from miyabi.stopping import StopEvent, Stopped, sleeper
from miyabi.supervision.approvals import answer
from miyabi.supervision.keeper import SessionKeeper
from miyabi.supervision.processes import lease_identity
from miyabi.supervision.status import collect
from miyabi.supervision.supervisor import Supervisor, load_records
from miyabi.times import rfc3339
from miyabi.tmux.builder import respawn_agent
from miyabi.tmux.control import SessionChannel
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import PaneMap
from miyabi.tmux.runner import Tmux
from miyabi.work.engine import WorkEngine
from miyabi.work.github import GitHub, client_for
from miyabi.work.model import TaskState
from miyabi.work.store import Store

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
        self.stop = StopEvent()
        self.sleep = sleeper(self.stop)
        self.tmux = Tmux(socket)
        self.channel = SessionChannel(
            self.tmux, layout.session, on_output=self._on_output, on_close=self._on_channel_closed
        )
        self.panes = PaneMap(self.channel, layout.session)
        self.driver = PaneDriver(self.channel)
        cwd = home.load_state().get("cwd")
        self.cwd = Path(cwd) if isinstance(cwd, str) and Path(cwd).is_dir() else home.root
        """Directory for agents whose layout entry sets no ``cwd`` (where ``miyabi up`` ran)."""
        self.deliverers: dict[str, Deliverer] = {}
        """Agent → its deliverer; replaced, never changed in place (other threads read it)."""
        self._deliverer_stops: dict[str, threading.Event] = {}
        """Agent → what ends its deliverer's thread (set on stop, or when it leaves the layout)."""
        self.intros = Intros(home, layout)
        self.keeper = SessionKeeper(layout, self.tmux, home, self.cwd, home_intact=self._home_intact)
        self.supervisor: Supervisor | None = None
        self.engine: WorkEngine | None = None
        self.pipeline: Pipeline | None = None
        self.web: WebProcess | None = None
        self.bus: BusBridge | None = None
        self._cpu_cache: dict[int, Any] = {}
        self._gh: GitHub | None = None
        self._follow_ups = False
        self._filed: set[str] = set()
        """Agents whose failure has its fix task (cleared when they run again)."""
        self.watcher: InboxWatcher | None = None
        self.kick = threading.Event()
        """Set when the task store may have changed (any process wrote it), and on
        stop: the main loop then acts at once instead of at its next tick."""
        self.stop.link(self.kick)
        self._threads: list[threading.Thread] = []
        self._started = False
        self._look_now = False
        self._signal_fd: int | None = None

    # -- wiring callbacks

    def _wake(self, agent: str) -> None:
        d = self.deliverers.get(agent)
        if d is not None:
            d.wake.set()

    def _on_output(self, pane_id: str) -> None:
        name = self.panes.agent_of(pane_id)
        if name is not None:
            self._wake(name)

    def _on_channel_closed(self) -> None:
        """The control client closed (the session or the tmux server may be gone): look
        at once instead of at the next refresh."""
        self._look_now = True
        self.kick.set()

    def _home_intact(self) -> bool:
        return (self.home.run / LOCKFILE).exists()

    def _respawn(self, agent: Agent, pane_id: str) -> int:
        return respawn_agent(
            self.channel, agent, pane_id, self.home, self.tmux.socket, self.cwd, self.layout.secret_env
        )

    def _restart_request(self, agent: str) -> bool:
        if self.supervisor is None or agent not in self.supervisor.agents:
            return False
        return self.supervisor.clear_and_restart(agent)

    def _delivered(self, msg: Message, pid: int) -> None:
        if self.engine is not None:
            # a process that ended since it was typed into holds it under a name no
            # process has, so the task is handed back
            self.engine.delivered(msg, lease_identity(pid) or f"{pid}:ended")

    def _on_question(self, name: str, question: str) -> None:
        """A permission question: answer it when a rule of ``approvals: {auto: …}`` does."""
        rules = self.layout.auto_answers
        rule = auto_answer(rules, name, question) if rules else None
        if rule is None:
            return
        d = self.deliverers.get(name)
        try:
            agent = self.layout.agent(name)
            if d is None:
                return
            with d.lock:  # the watchdog respawns only under this lock: no key reaches a new process
                answer(
                    self.home,
                    self.channel,
                    self.layout.session,
                    agent,
                    rule.answer == "approve",
                    by=f"miyabi (approvals.auto[{rules.index(rule)}])",
                )
        except MiyabiError as e:
            append_event(self.home.root, "approval-error", agent=name, question=question, error=str(e))

    def _ensure_pipeline(self, engine: WorkEngine) -> Pipeline:
        """The pipeline, made the first time the layout has pools (at start, or a reload)."""
        if self.pipeline is None:
            self.pipeline = Pipeline(
                engine.store, self.layout, self.home.root, engine.dispatch, self._gh, changed=self.kick.set
            )
        return self.pipeline

    def _ensure_web(self) -> None:
        """The dashboard, as the layout's ``web:`` says: started the first time the
        layout has the section (at start, or a reload), told of a changed one."""
        web = self.layout.web
        if self.web is not None:
            if web is not None:
                self.web.adopt(web)
            else:
                self.web.retire()
                self.web = None
            return
        if web is not None:
            self.web = WebProcess(self.home, self.tmux.socket, web)
            self._start(functools.partial(self.web.run, self.stop), "web")

    def _ensure_follow_ups(self) -> None:
        """The follow-ups thread, started once a pool sends its work to GitHub."""
        gh, cfg = self._gh, self.layout.github
        if (
            self._follow_ups
            or gh is None
            or cfg is None
            or not any(p.pipeline == PipelineMode.GITHUB for p in self.layout.pools)
        ):
            return
        self._follow_ups = True
        follow = FollowUps(Store.of_home(self.home.root), gh, cfg, self.home.root)
        self._start(functools.partial(follow.run, self.stop, cfg.poll_interval), "follow-ups")

    def _file_fixes(self, failed: list[str], engine: WorkEngine, gh: GitHub | None) -> None:
        """Monitoring creates work: an agent the watchdog gave up on gets a fix task (a
        GitHub issue labelled todo when GitHub is set up), once per failure."""
        self._filed &= set(failed)  # running again: a later failure is a new cause
        if not failed or set(failed) <= self._filed:
            return
        records = load_records(self.home)
        for name in failed:
            if name in self._filed:
                continue
            hist = records.get(name, {}).get("history", {})
            reason = str(hist.get("failed") or "it kept failing")
            restarts = hist.get("restarts") or [time.time()]
            cause = f"the watchdog gave up on agent {name}"
            title = f"Agent {name} keeps failing: {reason}"[:200]
            body = (
                f"miyabi's watchdog gave up on agent {name} at {rfc3339(float(restarts[-1]))}: {reason}.\nIts crash "
                "evidence is under "
                f"{self.home.logs / 'crashes'}; `miyabi status {name}` shows it, and `miyabi restart {name}` brings "
                "it back "
                "once the cause is fixed."
            )
            self._filed.add(name)
            # on a thread: GitHub may make it wait (a rate limit), never the main loop
            self._start(functools.partial(self._file_fix, name, engine, gh, cause, title, body), f"file-fix-{name}")

    def _file_fix(self, name: str, engine: WorkEngine, gh: GitHub | None, cause: str, title: str, body: str) -> None:
        try:
            file_fix(engine.store, gh, self.layout.github, self.home.root, cause, title, body)
        except Exception as e:  # noqa: BLE001 - MiyabiError, OSError, Stopped, sqlite3.Error: tried again, never fatal
            log.warning(
                "could not file the fix task for %s: %s: %s; trying again at the next pass", name, type(e).__name__, e
            )
            self._filed.discard(name)

    def _processes(self) -> dict[str, str | None]:
        """Agent → the lease identity of its live process (None: dead or no pane)."""
        panes = self.panes.all()
        out: dict[str, str | None] = {}
        for a in self.layout.agents:
            p = panes.get(a.name)
            out[a.name] = lease_identity(p.pid) if p is not None and not p.dead and p.pid else None
        return out

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
                f"a controller already runs for {self.home.root}"
                + (f" (pid {pid})" if pid else "")
                + "; stop it with `miyabi down`, or use it"
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

    def _stop_on_signals(self) -> None:
        """Stop on SIGTERM and SIGINT. The handler only writes to a pipe; a thread sets
        :attr:`stop`. Setting an event in the handler itself could deadlock: the
        interrupted main thread may hold that very event's lock."""
        r, w = os.pipe2(os.O_CLOEXEC)

        def relay() -> None:
            try:
                os.read(r, 1)
            finally:
                self.stop.set()
                os.close(r)

        def on_signal(signum: int, frame: object) -> None:
            try:
                os.write(w, b"x")
            except OSError:
                pass

        threading.Thread(target=relay, name="signals", daemon=True).start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        self._signal_fd = w

    def _start(self, target: object, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _add_deliverer(self, agent: Agent, engine: WorkEngine) -> Deliverer:
        box = inbox(self.home.root, agent.name)
        box.ensure()
        box.cleanup()
        d = Deliverer(
            agent,
            box,
            self.driver,
            self.home.root,
            pane=functools.partial(self.panes.get, agent.name),
            sleep=self.sleep,
            on_delivered=self._delivered,
            on_dead_letter=engine.dead_letter,
            on_question=functools.partial(self._on_question, agent.name),
        )
        self.deliverers = {**self.deliverers, agent.name: d}
        if self.watcher is not None:
            self.watcher.watch(agent.name, box.root)
        if self._started:
            self._start_deliverer(agent.name, d)
        return d

    def _start_deliverer(self, name: str, d: Deliverer) -> None:
        own = threading.Event()
        self.stop.link(own)
        self._deliverer_stops[name] = own
        self._start(functools.partial(d.run, own), f"deliver-{name}")

    def _remove_deliverer(self, name: str) -> None:
        gone = self.deliverers.get(name)
        self.deliverers = {k: v for k, v in self.deliverers.items() if k != name}
        stop = self._deliverer_stops.pop(name, None)
        if stop is not None:
            stop.set()
        if gone is not None:
            gone.wake.set()
        if self.watcher is not None:
            self.watcher.unwatch(name)

    def _run_locked(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._stop_on_signals()
        append_event(self.home.root, "controller-start", pid=os.getpid(), session=self.layout.session)
        log.info("controller %d started for home %s", os.getpid(), self.home.root)
        store = Store.of_home(self.home.root)
        gh = (
            client_for(self.layout.github, self.home.root, sleep=self.sleep, stats=True) if self.layout.github else None
        )
        engine = self.engine = WorkEngine(store, self.layout, self.home.root, gh)
        self._gh = gh
        release_pools(store, self.layout)  # verifying for a pool removed while no controller ran
        if self.layout.pools:
            # the pool instances that were running (before a restart) are agents from the start
            self._set_layout(self.layout.with_instances(self._ensure_pipeline(engine).agents()))
            engine.adopt(self.layout)
        watcher = self.watcher = InboxWatcher(self.home.queue, self._wake)
        watcher.start()
        for agent in self.layout.agents:
            self._add_deliverer(agent, engine)
        watcher.watch_dir("tasks", store.path.parent, self._store_changed, modified=True)
        watcher.watch_dir("requests", private_dir(requests.requests_dir(self.home)), self.kick.set)
        # an agent's hook reporting (miyabi hook appends to run/hooks/<agent>.jsonl)
        watcher.watch_dir(
            "hooks",
            private_dir(self.home.run / "hooks"),
            self.kick.set,
            modified=True,
            on_file=lambda path: self._wake(path.stem),
        )
        supervisor = self.supervisor = Supervisor(
            self.home,
            self.layout.agents,
            self.tmux.socket,
            self.driver,
            self.panes,
            respawn=self._respawn,
            last_output=self.channel.last_output,
            typists=self.deliverers,
            sleep=self.sleep,
        )
        try:
            self._serve(engine, supervisor, gh)
        except Stopped:  # a GitHub wait on this thread (a claim) ended by the stop
            log.info("stopped while waiting")
        finally:
            self.stop.set()
            stopping = time.monotonic()
            for d in self.deliverers.values():
                d.wake.set()
            supervisor.wake()
            for t in self._threads:
                t.join(timeout=defaults.THREAD_JOIN)
            left = [t.name for t in self._threads if t.is_alive()]
            if self.pipeline is not None:
                self.pipeline.close()
            supervisor.close()
            watcher.stop()
            self.channel.close()
            if gh is not None:
                gh.close()  # saves the last GitHub counts for /metrics
            store.close()
            log.info("threads ended in %.3f s", time.monotonic() - stopping)
            try:
                append_event(self.home.root, "controller-stop", pid=os.getpid(), threads_left=left)
            except OSError:  # the home was removed: nowhere to tell
                pass
            log.info(
                "controller %d stopped%s", os.getpid(), f"; threads still running: {', '.join(left)}" if left else ""
            )
            if self._signal_fd is not None:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                os.write(self._signal_fd, b"x")  # ends the relay's read (a stop without a signal)
                os.close(self._signal_fd)
                self._signal_fd = None

    def _serve(self, engine: WorkEngine, supervisor: Supervisor, gh: GitHub | None) -> None:
        """The main loop, until stopped: refresh the pane map every
        ``defaults.PANE_REFRESH`` seconds (rebuilding what is gone), start the threads
        once tmux answers, serve requests, and run a scheduling pass whenever something
        it depends on changed: a commit to the task store (by any process), an agent's
        process, the failed agents, a deadline or claim retry come due; and at least
        every ``defaults.SCHEDULE_IDLE`` seconds."""
        if (
            self.layout.bus is not None
        ):  # before GitHub (only the intake lock's holder polls) and before any task is sent again
            bridge = self.bus = BusBridge(
                self.home.root,
                lambda: self.layout,
                supervisor.failed,
                self._presence,
                claim_issue=functools.partial(engine.dispatch.claim_issue, state=TaskState.QUEUED),
                hold=engine.dispatch.hold,
                changed=self.kick.set,
            )
            self.stop.link(bridge.wake)
            engine.intake = bridge.may_intake
            bridge.start(self.stop, lambda target, name: self._start(target, name))
        engine.recover_assignments()
        if gh is not None:
            self._start(functools.partial(engine.run_github, self.stop), "github")
        self._ensure_web()
        # posts `miyabi report` when the layout's `report:` says (read at each check: a reload counts)
        self._start(functools.partial(run_schedule, self.stop, self.home.root, lambda: self.layout), "reports")
        if self.layout.notify:
            Notifier(self.home.root, engine.store, self.layout.notify, self.layout.session).start(
                self.stop, lambda target, name: self._start(target, name)
            )
        self._ensure_follow_ups()
        backoff = 0.1
        seen: tuple[object, ...] | None = None
        next_refresh = 0.0
        next_pass = 0.0
        paused_until = 0.0  # after a failed pass
        while not self.stop.is_set():
            if not self._home_intact():
                # The home was removed under us: nothing here to serve, and rebuilding
                # the session for it would leave an orphan running forever.
                log.warning("home %s is gone; stopping", self.home.root)
                self.stop.set()
                break
            if time.monotonic() >= next_refresh or self._look_now:
                self._look_now = False
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
                next_refresh = time.monotonic() + defaults.PANE_REFRESH
                if not self._started:
                    self._started = True
                    for name, d in self.deliverers.items():
                        self._start_deliverer(name, d)
                    self._start(functools.partial(rescan, self.stop, self._inboxes, self._wake), "rescan")
                    self._start(functools.partial(supervisor.run, self.stop), "watchdog")
                    append_event(self.home.root, "controller-ready", pid=os.getpid(), agents=list(self.deliverers))
            requests.serve(self.home, self._restart_request, self._reload)
            if time.time() >= paused_until:
                try:
                    failed = supervisor.failed()
                    # cheap: what tmux last said of the panes (no /proc read until a pass runs)
                    panes_now = tuple(sorted((n, p.pid, p.dead) for n, p in self.panes.all().items()))
                    token = (engine.store.version(), tuple(failed), panes_now)
                    if token != seen or time.time() >= next_pass:
                        seen = token
                        engine.check_leases(self._processes(), _holder_alive)
                        engine.schedule(failed)
                        if self.pipeline is not None:
                            self._follow_instances(self.pipeline.tick(failed))
                        self._file_fixes(failed, engine, gh)
                        due = engine.next_due()
                        next_pass = min(time.time() + defaults.SCHEDULE_IDLE, due if due is not None else float("inf"))
                except Exception as e:  # noqa: BLE001 - the main loop must live on (TaskError, sqlite3.Error, OSError, …)
                    log.warning(
                        "scheduling: %s: %s; trying again in %.0f s", type(e).__name__, e, defaults.SCHEDULE_ERROR_PAUSE
                    )
                    seen, paused_until = None, time.time() + defaults.SCHEDULE_ERROR_PAUSE
                    next_pass = paused_until
            wait = max(0.0, min(next_refresh - time.monotonic(), next_pass - time.time()))
            if requests.pending(self.home):
                wait = min(wait, defaults.PANE_REFRESH / 5)
            if self.kick.wait(wait) and not self.stop.is_set():
                self.kick.clear()
                self.stop.wait(defaults.SCHEDULE_KICK_DEBOUNCE)

    def _store_changed(self) -> None:
        self.kick.set()
        if self.bus is not None:
            self.bus.wake.set()

    def _presence(self) -> list[dict[str, object]]:
        """This host's agents as the bus's presence shows them."""
        rows = collect(
            self.tmux, self.layout.session, self.home, self.layout.agents, interval=0, cpu_cache=self._cpu_cache
        )
        return [
            {
                "name": r.name,
                "state": str(r.state),
                "pid": r.pid or None,
                "uptime": r.uptime,
                "restarts_last_hour": r.restarts_last_hour,
                "pool": r.pool,
            }
            for r in rows
        ]

    def _inboxes(self) -> dict[str, tuple[Path, bool]]:
        return {n: (d.inbox.dir(MessageState.PENDING), d.waiting) for n, d in self.deliverers.items()}

    # -- following the layout

    def _set_layout(self, new: Layout) -> None:
        self.layout = new
        self.intros.layout = new
        self.keeper.layout = new

    def _follow_instances(self, ended: list[str]) -> None:
        """Make the running layout's pool instances the pipeline's ready ones: new
        instances get a pane (at the next refresh), delivery and supervision; those
        that ended lose them, and their pane is closed."""
        assert self.pipeline is not None
        now = self.pipeline.agents()
        current = tuple(a for a in self.layout.agents if a.pool is not None)
        if now == current:
            return
        gone = {a.name for a in current} - {a.name for a in now}
        self.adopt(self.layout.with_instances(now), reason="instances")
        for name in gone:
            pane = self.panes.get(name)
            if pane is not None:
                self.driver.kill(pane.pane_id)
        if any(a.name not in {c.name for c in current} for a in now):
            self._look_now = True  # a pane for each new instance now, not at the next refresh

    def _reload(self) -> str:
        """``miyabi reload`` (and ``miyabi up`` on a changed layout): load the layout this
        home runs again and adopt it without restarting.

        Returns:
            one line saying what changed.

        Raises:
            MiyabiError: it does not load (the running layout stays in place).
        """
        from miyabi.config import load

        recorded = self.home.load_state().get("layout")
        path = Path(recorded) if isinstance(recorded, str) else self.layout.path
        try:
            new = load(path)
        except LayoutError as e:
            raise MiyabiError(
                f"{e.lines()[0]}"
                + (f" (and {len(e.lines()) - 1} more)" if len(e.lines()) > 1 else "")
                + "; the running layout stays in place"
            ) from None
        if new.session != self.layout.session:
            raise MiyabiError(
                f"{path}: session {new.session!r} is not the running {self.layout.session!r}; "
                "run `miyabi down`, then `miyabi up`, to change it"
            )
        if new.pools and self.engine is not None:
            self._ensure_pipeline(self.engine)
        if self.pipeline is not None:
            self.pipeline.adopt(new)
            new = new.with_instances(self.pipeline.agents())
        elif self.engine is not None:
            release_pools(self.engine.store, new)
        result = self.adopt(new)
        if self._started:
            self._ensure_follow_ups()
            self._ensure_web()
        return result

    def adopt(self, new: Layout, reason: str = "reload") -> str:
        """Take ``new`` as the running layout: added agents get delivery and supervision
        (and a pane at the next refresh), removed ones lose both and their tasks go back
        to the queue, changed ones (profile, watchdog, command) use their new settings,
        and routes, WIP limits and task settings apply to the next pass. Returns what
        changed, in one line."""
        old = {a.name: a for a in self.layout.agents}
        github_changed = new.github != self.layout.github
        old_bus = self.layout.bus
        fresh = {a.name: a for a in new.agents}
        added = [n for n in fresh if n not in old]
        removed = [n for n in old if n not in fresh]
        changed = [n for n in fresh if n in old and fresh[n] != old[n]]
        engine = self.engine
        for name in removed:
            self._remove_deliverer(name)
        for name in changed:
            d = self.deliverers.get(name)
            if d is not None:
                d.agent, d.profile = fresh[name], fresh[name].profile
        self._set_layout(new)
        if engine is not None:
            for name in added:
                self._add_deliverer(fresh[name], engine)
            engine.adopt(new)
        if self.supervisor is not None:
            self.supervisor.adopt(new.agents, self.deliverers)
        self.kick.set()
        parts = [
            f"added {', '.join(added)}" if added else "",
            f"removed {', '.join(removed)}" if removed else "",
            f"changed {', '.join(changed)}" if changed else "",
        ]
        if github_changed:
            parts.append("github: changes apply when the controller restarts (`miyabi down`, then `miyabi up`)")
        if _bus_identity(new.bus) != _bus_identity(old_bus):
            parts.append(
                "bus: url, host and namespace apply when the controller restarts (`miyabi down`, then `miyabi up`)"
            )
        what = "; ".join(p for p in parts if p) or "agents unchanged"
        append_event(
            self.home.root,
            "layout-reloaded" if reason == "reload" else "instances-changed",
            path=str(new.path),
            added=added,
            removed=removed,
            changed=changed,
        )
        log.info("layout %s adopted: %s", new.path, what)
        return f"{what}; routes, limits and settings of {new.path.name} apply"


def _bus_identity(bus: BusSettings | None) -> tuple[str, str, str] | None:
    """What of a ``bus:`` section takes a controller restart to change."""
    return None if bus is None else (bus.url, bus.host, bus.namespace)


def _holder_alive(holder: str) -> bool:
    """Whether the process a lease names (``PID:START``) still runs."""
    pid, _, _ = holder.partition(":")
    return pid.isdigit() and int(pid) > 0 and lease_identity(int(pid)) == holder
