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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.backoff import Backoff
from miyabi.bus.bridge import BusBridge
from miyabi.config.model import Agent, Layout, PipelineMode, layout_change
from miyabi.controller import requests, upgrade
from miyabi.controller.channels import Channels
from miyabi.controller.locks import HeldLock
from miyabi.controller.process import LOCKFILE, release_lock, take_lock
from miyabi.controller.view import record_running
from miyabi.controller.webproc import WebProcess
from miyabi.errors import LayoutError, MiyabiError, TmuxError
from miyabi.events import EventKind, append_event
from miyabi.files import private_dir
from miyabi.home import Home
from miyabi.messaging.delivery import Deliverer
from miyabi.messaging.intro import Intros
from miyabi.messaging.keyboard import Keyboard
from miyabi.messaging.mailbox import Message, MessageState, inbox
from miyabi.messaging.parking import Parked
from miyabi.messaging.watch import InboxWatcher, rescan
from miyabi.notify.notifier import Notifier
from miyabi.pipeline.deploy import Deployer, run_check
from miyabi.pipeline.followups import FollowUps
from miyabi.pipeline.gate import SelfMerge
from miyabi.pipeline.instances import release_pools
from miyabi.pipeline.monitoring import FixFiler, Monitor
from miyabi.pipeline.runner import Pipeline
from miyabi.pipeline.story import StoryKeeper
from miyabi.reports.schedule import run_schedule
from miyabi.stopping import StopEvent, Stopped, sleeper
from miyabi.supervision.approvals import AutoApprover
from miyabi.supervision.budgets import BudgetKeeper
from miyabi.supervision.keeper import SessionKeeper
from miyabi.supervision.processes import holder_alive, holders, lease_identity
from miyabi.supervision.resume import Resumption
from miyabi.supervision.status import collect, record_cpu
from miyabi.supervision.supervisor import Supervisor
from miyabi.tmux.builder import respawn_agent
from miyabi.tmux.clients import attached_clients
from miyabi.tmux.control import SessionChannel
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import PaneMap
from miyabi.tmux.runner import Tmux
from miyabi.work import stories
from miyabi.work.engine import WorkEngine
from miyabi.work.github import GitHub, client_for
from miyabi.work.model import TaskState
from miyabi.work.store import Store
from miyabi.work.taskspec import task_acceptance

log = logging.getLogger("miyabi.controller")


@dataclass
class _Pacing:
    """When the main loop does what next (monotonic or Unix seconds, as named)."""

    seen: tuple[object, ...] | None = None
    """What the last pass saw (store version, failed agents, panes): no change, no pass."""
    next_refresh: float = 0.0
    next_pass: float = 0.0
    next_cpu: float = 0.0
    paused_until: float = 0.0
    """Unix time before which no pass runs (after a failed one)."""
    reconnect: Backoff = field(default_factory=lambda: Backoff(defaults.RECONNECT_MIN, defaults.RECONNECT_MAX))
    """How long to wait before asking an unreachable tmux again."""


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
        self.resumption = Resumption(home.root)
        self.keeper = SessionKeeper(
            layout, self.tmux, home, self.cwd, home_intact=self._home_intact, starts=self.resumption.on_start
        )
        self.supervisor: Supervisor | None = None
        self.engine: WorkEngine | None = None
        self.pipeline: Pipeline | None = None
        self.web: WebProcess | None = None
        self.bus: BusBridge | None = None
        self._cpu_cache: dict[int, Any] = {}
        """The bus presence's CPU figures (see :func:`~miyabi.supervision.status.tree_stats`)."""
        self._cpu_recorded: dict[int, Any] = {}
        """The CPU figures recorded for ``miyabi status`` (``run/cpu.json``), measured apart."""
        self._gh: GitHub | None = None
        self._follow_ups = False
        self.keyboard = Keyboard(lambda: attached_clients(self.channel, self.layout.session))
        self.approver = AutoApprover(home, self.channel, lambda: self.layout, self._lock_of)
        """Answers the questions the layout's ``approvals: {auto: …}`` rules match."""
        self.budgets: BudgetKeeper | None = None
        """Keeps the layout's budgets: parks the agents of a spent one (made with the store)."""
        self.fixes: FixFiler | None = None
        """Files a fix task for each agent the watchdog gives up on (made with the store)."""
        self.deployer = Deployer(home.root, self.tmux, layout.session, layout.secret_env, self.stop)
        """Deploys a story's landed work and serves it (``.miyabi.yml``'s ``deploy:``,
        ``serve:``, ``health:``); call :meth:`Deployer.deploy` from a worker thread, never
        the main loop."""
        self.monitor: Monitor | None = None
        """Keeps the deployed services running and healthy (made with the store; its own thread)."""
        self.stories: StoryKeeper | None = None
        """Carries each story from its plan to a deployed, checked service (made with the store)."""
        self.watcher: InboxWatcher | None = None
        self.channels: Channels | None = None
        """Serves the sandboxed agents' own channels (made with the store)."""
        self.kick = threading.Event()
        """Set when the task store may have changed (any process wrote it), and on
        stop: the main loop then acts at once instead of at its next tick."""
        self.stop.link(self.kick)
        self._threads: list[threading.Thread] = []
        self._started = False
        self._look_now = False
        self._signal_fd: int | None = None
        self._lock: HeldLock | None = None
        """The home's controller lock, once this controller holds it."""
        self.code: dict[str, Any] = {}
        """Where this controller's code comes from (:func:`~miyabi.controller.upgrade.code_origin`)."""
        self.upgrading = False
        """Set when it stops to run miyabi's merged code (``self:``): it then exits with
        :data:`~miyabi.controller.keepalive.UPGRADE_EXIT`."""

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
        """Whether the home is still the one this controller serves: its lock file is
        the very file it locked (a home removed, or removed and made anew, is not)."""
        if self._lock is None:
            return (self.home.run / LOCKFILE).exists()
        return self._lock.still_ours()

    def _respawn(self, agent: Agent, pane_id: str, died_young: bool) -> int:
        resume = self.resumption.next_start(agent, died_young)
        return respawn_agent(
            self.channel, agent, pane_id, self.home, self.tmux.socket, self.cwd, self.layout.secret_env, resume
        )

    def _pane_pid(self, agent: str) -> int | None:
        """The pid of ``agent``'s pane's program, when its pane is known and live."""
        pane = self.panes.get(agent)
        return pane.pid if pane is not None and pane.pid and not pane.dead else None

    def _restart_request(self, agent: str) -> bool:
        if self.supervisor is None or agent not in self.supervisor.agents:
            return False
        return self.supervisor.clear_and_restart(agent)

    def _delivered(self, msg: Message, pid: int) -> None:
        if self.engine is not None:
            # a process that ended since it was typed into holds it under a name no
            # process has, so the task is handed back
            self.engine.delivered(msg, lease_identity(pid) or f"{pid}:ended")

    def _lock_of(self, agent: str) -> threading.Lock | None:
        """The agent's delivery lock (None: it has no deliverer)."""
        d = self.deliverers.get(agent)
        return d.lock if d is not None else None

    def _parked(self) -> dict[str, Parked]:
        """Agent → its park, for the agents parked now (not those told to go on: they
        may be back at work)."""
        return {
            n: p
            for n, d in self.deliverers.items()
            if (p := d.readiness.parking.current) is not None and not p.probing and p.probed is None
        }

    def _can_take(self, name: str, failed: list[str]) -> bool:
        """Whether agent ``name`` can take a parked agent's task: it runs, is not
        parked, and the watchdog has not given up on it."""
        d, pane = self.deliverers.get(name), self.panes.get(name)
        return (
            d is not None
            and d.readiness.parking.current is None
            and name not in failed
            and pane is not None
            and not pane.dead
        )

    def _processes(self) -> dict[str, str | None]:
        """Agent → the lease identity of its live process (None: dead or no pane)."""
        live = {n: p.pid for n, p in self.panes.all().items() if not p.dead and p.pid}
        return holders(self.layout.names, live)

    def _monitor_interval(self) -> float:
        """Seconds between the monitor's health checks (``roles.monitor.interval``)."""
        roles = self.layout.roles
        return roles.monitor_interval if roles is not None else defaults.MONITOR_INTERVAL

    def _ensure_pipeline(self, engine: WorkEngine) -> Pipeline:
        """The pipeline, made the first time the layout has pools (at start, or a reload)."""
        if self.pipeline is None:
            self.pipeline = Pipeline(
                engine.store,
                self.layout,
                self.home.root,
                engine.dispatch,
                self._gh,
                changed=self.kick.set,
                on_self_merge=self._self_merged,
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

    # -- running

    def run(self, lock: HeldLock | None = None) -> None:
        """Run until :attr:`stop` is set (or SIGTERM/SIGINT in the main thread), holding
        ``lock`` (the home's controller lock, when the caller took it: see
        :func:`~miyabi.controller.process.take_lock`), else taking it first.

        Raises:
            ControllerRunning: another controller holds this home's lock.
            HomeGone: the home does not exist (it is never created here).
        """
        lock = lock if lock is not None else take_lock(self.home)
        self._lock = lock
        try:
            self._run_locked()
        except OSError:
            if self._home_intact():
                raise
            log.warning("home %s was removed while the controller started; stopping", self.home.root)
        finally:
            release_lock(self.home, lock)

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

    def _start(self, target: Callable[[], object], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
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
            on_question=functools.partial(self.approver, agent.name),
            keyboard=self.keyboard,
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
        append_event(self.home.root, EventKind.CONTROLLER_START, pid=os.getpid(), session=self.layout.session)
        log.info("controller %d started for home %s", os.getpid(), self.home.root)
        self.code = upgrade.record_code(self.home.run, os.getpid())
        store = Store.of_home(self.home.root)
        gh = (
            client_for(self.layout.github, self.home.root, sleep=self.sleep, stats=True) if self.layout.github else None
        )
        engine = self.engine = WorkEngine(store, self.layout, self.home.root, gh)
        self._gh = gh
        self.fixes = FixFiler(self.home, store, gh, lambda: self.layout.github, self._start)
        self.monitor = Monitor(
            self.deployer,
            store,
            gh,
            lambda: self.layout.github,
            interval=self._monitor_interval,
            attach=stories.attach,
        )
        self.stories = StoryKeeper(
            store,
            lambda: self.layout,
            self.home.root,
            self.deployer.deploy,
            functools.partial(run_check, hide=self.layout.secret_env),
            acceptance=task_acceptance,
            changed=self.kick.set,
        )
        self.budgets = BudgetKeeper(
            self.home.root,
            lambda: self.layout,
            lambda: {n: d.readiness.parking for n, d in self.deliverers.items()},
            store.held_tasks,
            self._wake,
        )
        release_pools(store, self.layout)  # verifying for a pool removed while no controller ran
        self._record_running()
        if self.layout.pools:
            # the pool instances that were running (before a restart) are agents from the start
            self._set_layout(self.layout.with_instances(self._ensure_pipeline(engine).agents()))
            engine.adopt(self.layout)
        channels = self.channels = Channels(
            self.home.root, store, lambda: self.layout.names, lambda: self.layout.max_body, self._pane_pid
        )
        channels.sync(self.layout.agents)
        self._start(functools.partial(channels.serve, self.stop), "channels")
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
            self._close_workers()
            supervisor.close()
            watcher.stop()
            channels.close()
            self.channel.close()
            if gh is not None:
                gh.close()  # saves the last GitHub counts for /metrics
            store.close()
            log.info("threads ended in %.3f s", time.monotonic() - stopping)
            try:
                append_event(self.home.root, EventKind.CONTROLLER_STOP, pid=os.getpid(), threads_left=left)
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

    def _close_workers(self) -> None:
        """End the pipeline's and the story keeper's worker threads (running checks and
        deploys end with the stop)."""
        if self.pipeline is not None:
            self.pipeline.close()
        if self.stories is not None:
            self.stories.close()

    def _serve(self, engine: WorkEngine, supervisor: Supervisor, gh: GitHub | None) -> None:
        """The main loop, until stopped: refresh the pane map every
        ``defaults.PANE_REFRESH`` seconds (rebuilding what is gone), start the threads
        once tmux answers, serve requests, and run a scheduling pass whenever something
        it depends on changed: a commit to the task store (by any process), an agent's
        process, the failed agents, a deadline or claim retry come due; and at least
        every ``defaults.SCHEDULE_IDLE`` seconds."""
        self._start_services(engine, supervisor, gh)
        pace = _Pacing()
        while not self.stop.is_set():
            if not self._home_intact():
                # The home was removed under us: nothing here to serve, and rebuilding
                # the session for it would leave an orphan running forever.
                log.warning("home %s is gone; stopping", self.home.root)
                self.stop.set()
                break
            if (time.monotonic() >= pace.next_refresh or self._look_now) and not self._refresh(supervisor, pace):
                continue
            if time.monotonic() >= pace.next_cpu:
                pace.next_cpu = time.monotonic() + defaults.CPU_RECORD
                self._record_cpu()
            requests.serve(
                self.home,
                self._restart_request,
                self._reload,
                self.budgets.raise_budget if self.budgets is not None else None,
                self._probe_answer,
            )
            if time.time() >= pace.paused_until:
                self._pass(engine, supervisor, pace)
            wait = max(0.0, min(pace.next_refresh - time.monotonic(), pace.next_pass - time.time()))
            if requests.pending(self.home):
                wait = min(wait, defaults.PANE_REFRESH / 5)
            if self.kick.wait(wait) and not self.stop.is_set():
                self.kick.clear()
                self.stop.wait(defaults.SCHEDULE_KICK_DEBOUNCE)

    def _start_services(self, engine: WorkEngine, supervisor: Supervisor, gh: GitHub | None) -> None:
        """The threads that need no tmux: the bus (first: only the intake lock's holder
        polls GitHub, and a task is sent again only once the bus has its copies), the
        GitHub poller, the dashboard, the report schedule, notices, follow-ups."""
        if self.layout.bus is not None:
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
            bridge.start(self.stop, self._start)
        engine.recover_assignments()
        if gh is not None:
            self._start(functools.partial(engine.run_github, self.stop), "github")
        self._ensure_web()
        # posts `miyabi report` when the layout's `report:` says (read at each check: a reload counts)
        self._start(functools.partial(run_schedule, self.stop, self.home.root, lambda: self.layout), "reports")
        if self.layout.notify:
            Notifier(self.home.root, engine.store, self.layout.notify, self.layout.session).start(
                self.stop, self._start
            )
        self._ensure_follow_ups()

    def _refresh(self, supervisor: Supervisor, pace: _Pacing) -> bool:
        """Read the panes again, give missing agents a pane and new ones their first
        message; the first time tmux answers, start delivery and the watchdog. Returns
        False when tmux did not answer (the session was rebuilt, or after a backoff):
        the loop then looks again."""
        self._look_now = False
        try:
            panes = self.panes.refresh()
            if self.keeper.recreate_missing(panes):
                panes = self.panes.refresh()
            self.intros.send_due(panes)
            pace.reconnect.reset()
        except TmuxError as e:
            if self.keeper.rebuild_if_gone():
                return False
            wait = pace.reconnect.next()
            log.warning("tmux not reachable: %s; retrying in %.1f s", e, wait)
            self.stop.wait(wait)
            return False
        pace.next_refresh = time.monotonic() + defaults.PANE_REFRESH
        if not self._started:
            self._started = True
            for name, d in self.deliverers.items():
                self._start_deliverer(name, d)
            self._start(functools.partial(rescan, self.stop, self._inboxes, self._wake), "rescan")
            self._start(functools.partial(supervisor.run, self.stop), "watchdog")
            if self.monitor is not None:
                self._start(functools.partial(self.monitor.run, self.stop), "monitor")
            if self.budgets is not None:
                self._start(functools.partial(self.budgets.run, self.stop), "budgets")
            append_event(self.home.root, EventKind.CONTROLLER_READY, pid=os.getpid(), agents=list(self.deliverers))
        return True

    def _pass(self, engine: WorkEngine, supervisor: Supervisor, pace: _Pacing) -> None:
        """A scheduling pass when something it depends on changed (or one is due):
        hand back what dead processes held, assign, start and end pool instances, file
        fixes for failed agents. A failing pass pauses the passes a while."""
        try:
            failed = supervisor.failed()
            # cheap: what tmux last said of the panes (no /proc read until a pass runs)
            panes_now = tuple(sorted((n, p.pid, p.dead) for n, p in self.panes.all().items()))
            token = (engine.store.version(), tuple(failed), panes_now)
            if token == pace.seen and time.time() < pace.next_pass:
                return
            pace.seen = token
            engine.check_leases(self._processes(), holder_alive)
            parked = self._parked()
            engine.hand_off(parked, lambda name: self._can_take(name, failed))
            engine.schedule(failed)  # an issue labelled story becomes one first (its manager gets it)
            if self.stories is not None:
                self.stories.tick()
            if self.pipeline is not None:
                self._follow_instances(self.pipeline.tick(failed))
            if self.fixes is not None:
                self.fixes.tick(failed)
            due = min((t for t in (engine.next_due(), engine.handoff_due(parked)) if t is not None), default=None)
            pace.next_pass = min(time.time() + defaults.SCHEDULE_IDLE, due if due is not None else float("inf"))
        except Stopped:  # a wait in the pass (a GitHub claim told to retry later) ended by the stop
            raise
        except Exception as e:
            log.warning(
                "scheduling: %s: %s; trying again in %.0f s",
                type(e).__name__,
                e,
                defaults.SCHEDULE_ERROR_PAUSE,
                exc_info=True,
            )
            pace.seen, pace.paused_until = None, time.time() + defaults.SCHEDULE_ERROR_PAUSE
            pace.next_pass = pace.paused_until

    # -- upgrading itself (self: {pool})

    def _self_merged(self, merge: SelfMerge) -> None:
        """A merge into miyabi's own checkout landed (a pipeline thread): record the
        upgrade and stop, to be started again on the new code by the keep-alive (see
        :mod:`miyabi.controller.upgrade`). Without a keep-alive (systemd, or by hand),
        the new code runs at the next start."""
        from miyabi.controller import keepalive

        up = {
            "task": merge.task,
            "repo": str(merge.repo),
            "base": merge.base,
            "before": merge.before,
            "after": merge.after,
            "time": time.time(),
            "state": "pending",
        }
        kept = keepalive.running_pid(self.home.run) is not None
        upgrade.write_upgrade(self.home.run, up if kept else {**up, "state": "at-next-start"})
        append_event(
            self.home.root,
            EventKind.SELF_UPGRADE,
            **{k: v for k, v in up.items() if k not in ("state", "time")},
            restart=kept,
        )
        if not kept:
            log.warning(
                "miyabi's checkout moved to %s; no keep-alive runs: restart the controller to run it", merge.after
            )
            return
        log.info("miyabi's checkout moved to %s (task %d); restarting on it", merge.after, merge.task)
        self.upgrading = True
        self.stop.set()

    def _probe_answer(self) -> str | None:
        """The answer to the upgrade's health probe (None: not yet, tmux has not
        answered): the commit of its code and, per agent, whether the watchdog
        supervises it and its deliverer's thread runs."""
        if not self._started or self.supervisor is None:
            return None
        alive = {t.name for t in self._threads if t.is_alive()}
        watching = "watchdog" in alive
        agents = {
            a.name: {
                "supervised": watching and a.name in self.supervisor.agents,
                "delivering": f"deliver-{a.name}" in alive,
            }
            for a in self.layout.agents
        }
        return upgrade.probe_answer(self.code.get("commit"), agents)

    def _record_cpu(self) -> None:
        """Each live agent's CPU use since the last record, for ``miyabi status``."""
        live = {n: p.pid for n, p in self.panes.all().items() if not p.dead and p.pid}
        try:
            record_cpu(self.home, live, self._cpu_recorded)
        except OSError as e:  # the home went away (the loop stops), or a full disk: status falls back
            log.debug("could not record the agents' CPU use: %s", e)

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
        if self.channels is not None:
            self.channels.sync(new.agents)
        self.intros.layout = new
        self.keeper.layout = new
        self._record_running()

    def _record_running(self) -> None:
        """Tell ``miyabi status`` which layout runs (``run/running.json``)."""
        try:
            record_running(self.home, self.layout, os.getpid())
        except (OSError, TypeError, ValueError) as e:  # status loads the layout itself: never fatal here
            log.debug("could not record the running layout: %s", e)

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
        changed, in one line (see :func:`~miyabi.config.model.layout_change`)."""
        change = layout_change(self.layout, new)
        fresh = {a.name: a for a in new.agents}
        for name in change.removed:
            self._remove_deliverer(name)
        for name in change.changed:
            d = self.deliverers.get(name)
            if d is not None:
                d.agent, d.profile = fresh[name], fresh[name].profile
                d.readiness.adopt(fresh[name])
        self._set_layout(new)
        if self.engine is not None:
            for name in change.added:
                self._add_deliverer(fresh[name], self.engine)
            self.engine.adopt(new)
        if self.supervisor is not None:
            self.supervisor.adopt(new.agents, self.deliverers)
        self.kick.set()
        what = change.describe()
        append_event(
            self.home.root,
            EventKind.LAYOUT_RELOADED if reason == "reload" else EventKind.INSTANCES_CHANGED,
            path=str(new.path),
            added=list(change.added),
            removed=list(change.removed),
            changed=list(change.changed),
        )
        log.info("layout %s adopted: %s", new.path, what)
        return f"{what}; routes, limits and settings of {new.path.name} apply"
