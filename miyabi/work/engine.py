"""The task side of the controller, and of ``miyabi github sync``: scheduling passes,
task leases and time limits, GitHub polls and notices, and what delivery reports
about task messages.

One object wires the store, the layout's routes and WIP limits, the dispatcher and
the GitHub client, so the controller and the command line do the same thing the same
way.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from miyabi import defaults
from miyabi.config.model import Layout
from miyabi.config.settings import OnRestart
from miyabi.events import EventKind, append_event
from miyabi.messaging.mailbox import Message, MessageError, MessageState, drop, enqueue, inbox, make
from miyabi.messaging.parking import Parked
from miyabi.stopping import Stopped
from miyabi.work.dispatch import Dispatcher
from miyabi.work.github import GitHub, GitHubError
from miyabi.work.intake import SyncReport, report, sync
from miyabi.work.model import Handback, Source, Task, TaskError, TaskState
from miyabi.work.scheduler import Router, schedule, task_message
from miyabi.work.store import Store
from miyabi.work.stories import adopt_issues

log = logging.getLogger("miyabi.work")


@dataclass
class GitHubPass:
    """What one pass over GitHub did.

    Attributes:
        sync: the poll (new tasks, issues sent to triage, unchanged lists).
        assigned: (task id, agent) pairs assigned in the pass, when it scheduled.
        reported: one line per outcome told to GitHub or issue closed there.
    """

    sync: SyncReport
    assigned: list[tuple[int, str]] = field(default_factory=list)
    reported: list[str] = field(default_factory=list)


class WorkEngine:
    """Schedules tasks and talks to GitHub for one layout.

    Args:
        store: the task store (the controller's main-thread connection).
        layout: routes, WIP limits, the ``github:`` section.
        home_root: the miyabi home.
        gh: the GitHub client, when the layout has a ``github:`` section.
    """

    def __init__(
        self,
        store: Store,
        layout: Layout,
        home_root: Path,
        gh: GitHub | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.home = home_root
        self.gh = gh
        self.clock = clock
        self.dispatch = Dispatcher(store, home_root, layout.github, gh, clock=clock)
        self.layout = layout
        self.router = Router(layout.routes, [*layout.names, *(p.name for p in layout.pools)])
        self.intake: Callable[[], bool] = lambda: True
        """Whether this host polls GitHub for new issues now (with a ``bus:``, only the
        host holding the intake lock does; outcomes are reported by every host)."""

    def adopt(self, layout: Layout) -> None:
        """Work by a changed layout from now on (routes, WIP limits, task settings).
        Tasks held by agents it no longer has go back to the queue."""
        self.layout = layout
        self.router = Router(layout.routes, [*layout.names, *(p.name for p in layout.pools)])  # routes the queue afresh
        self.dispatch.cfg = layout.github
        self.release_unknown()

    def release_unknown(self) -> list[int]:
        """Send the tasks held by agents the layout does not have (removed from it, here
        or while no controller ran) back to the queue; returns their ids."""
        out: list[int] = []
        for t in self.store.held():
            if t.agent is not None and t.agent not in self.layout.wip:
                try:
                    self.store.set_state(
                        t.id,
                        TaskState.QUEUED,
                        f"agent {t.agent} is not in the layout any more; back to the queue",
                        expect=(TaskState.ASSIGNED, TaskState.IN_PROGRESS),
                    )
                    out.append(t.id)
                except TaskError:
                    pass
        return out

    def schedule(self, failed_agents: Sequence[str] = ()) -> list[tuple[int, str]]:
        """One scheduling pass (:func:`~miyabi.work.scheduler.schedule`); returns the
        (task id, agent) pairs assigned.

        A GitHub task labelled ``story`` becomes a story first (its manager gets it,
        whatever the routes say: :func:`~miyabi.work.stories.adopt_issues`), when the
        layout names ``roles.manager``.

        Raises:
            TaskError, sqlite3.Error: the store failed.
        """
        roles = self.layout.roles
        if roles is not None and roles.manager is not None and self.layout.github is not None:
            adopt_issues(self.store, roles.manager, roles.coder, self.home)
        return schedule(self.store, self.router, self.layout.wip, self.dispatch, failed_agents, hold=self._hold)

    def _hold(self, task: Task) -> bool:
        """Tasks a pass leaves queued: a failed claim waiting to retry; with a ``bus:``,
        every task for a named agent that is not a copy claimed from the bus (the bus
        publishes it, and whichever host claims it runs it)."""
        return self.dispatch.hold(task) or (self.layout.bus is not None and not task.from_bus)

    def next_due(self) -> float | None:
        """Unix time of the next thing a pass must do though nothing changed: a task's
        deadline, or a failed claim's retry (None: nothing)."""
        now = self.clock()
        times = [t.deadline for t in self.store.held() if t.deadline is not None and t.deadline > now]
        times += [v for v in self.dispatch.not_before.values() if v > now]
        return min(times) if times else None

    # -- hand-offs

    def handoff_due(self, parked: Mapping[str, Parked]) -> float | None:
        """Unix time the next hand-off of a parked agent's tasks is due (None: none)."""
        now = self.clock()
        times = [t for name, p in parked.items() if (t := self._handoff_time(name, p)) is not None and t > now]
        return min(times) if times else None

    def _handoff_time(self, name: str, parked: Parked) -> float | None:
        agent = next((a for a in self.layout.agents if a.name == name), None)
        if agent is None or agent.park.handoff_after is None or not agent.park.to:
            return None
        return parked.since + agent.park.handoff_after

    def hand_off(self, parked: Mapping[str, Parked], can_take: Callable[[str], bool]) -> list[tuple[int, str]]:
        """Hand the tasks of each agent parked longer than its ``park.handoff_after`` to
        the first of its ``park.to`` that can take them: a pool of the layout always
        can (its task keeps its branch, so an instance of that pool takes over the
        worktree); a named agent can when ``can_take`` says so (it runs and is not
        parked) and its ``wip`` has room. The parked agent is told, for when it comes
        back. Returns (task id, where it went) for each task handed off.

        Raises:
            TaskError, sqlite3.Error: the store failed.
        """
        now, out = self.clock(), []
        held = self.store.held_counts()
        for name, p in parked.items():
            due = self._handoff_time(name, p)
            if due is None or now < due:
                continue
            agent = self.layout.agent(name)
            for t in self.store.held(name):
                to = next((x for x in agent.park.to if self._takes(x, t, agent.pool, held, can_take)), None)
                if to is None:
                    break  # none can take it now: the next pass tries again
                pool = to if self.layout.pool(to) is not None else None
                why, note = _handoff_words(name, agent.profile.name, p, t, agent.cwd)
                if t.state == TaskState.ASSIGNED and t.message:
                    try:
                        drop(self.home, t.message)  # never typed: it would reach the parked agent later
                    except MessageError:
                        pass
                if not self.store.hand_off(
                    t.id, name, to, pool if t.branch or pool else None, f"{why}; handed off to {to}", note
                ):
                    continue
                if pool is None:
                    held[to] = held.get(to, 0) + 1
                append_event(self.home, EventKind.TASK_HANDED_OFF, task=t.id, ref=t.ref, agent=name, to=to, reason=why)
                log.info("task %s: %s; handed off to %s", t.ref, why, to)
                self._tell(
                    t,
                    name,
                    f"Task {t.ref} ({t.title}) went to {to} while you were parked; stop working on it.",
                    notice=True,
                )
                out.append((t.id, to))
        return out

    def _takes(
        self, target: str, t: Task, own_pool: str | None, held: Mapping[str, int], can_take: Callable[[str], bool]
    ) -> bool:
        """Whether ``target`` can take ``t`` from an agent of ``own_pool`` now: never that
        pool itself (its instance is the parked one), a job only an agent that runs jobs
        (the built-in worker), a named agent only with room and ``can_take``."""
        pool = self.layout.pool(target)
        profile = (
            pool.profile
            if pool is not None
            else next((a.profile for a in self.layout.agents if a.name == target), None)
        )
        if target == own_pool or profile is None or (t.source == Source.JOB and profile.name != "worker"):
            return False
        if pool is not None:
            return True
        room = self.layout.wip.get(target)
        return room is not None and held.get(target, 0) < room and can_take(target)

    # -- leases

    def check_leases(
        self, processes: Mapping[str, str | None], alive: Callable[[str], bool]
    ) -> list[tuple[int, Handback]]:
        """Hand back the tasks whose holder ended or whose time is up.

        Args:
            processes: agent → the lease identity (``PID:START``) of its live process, or
                None while it has none (dead, respawning, no pane).
            alive: whether the process a lease identity names still runs (the same
                pid and start).

        A task whose message was delivered belongs to that process. When that process
        no longer runs (crash, hang, ``miyabi restart``, ``miyabi up``), the task is
        handed back by ``tasks.on_agent_restart`` (with ``resend``, once the agent has
        a live process again); past its deadline the agent is told and the task is
        handed back the same way, whatever its process. A task in progress with no
        holder (delivered before leases) is adopted by the agent's current process. An
        assigned task whose message was delivered or dead-lettered without the report
        reaching the store (``defaults.LEASE_RECONCILE`` seconds ago) is settled as if
        it had. Returns (task id, where it went) for each task handed back.

        Raises:
            TaskError, sqlite3.Error: the store failed.
        """
        resend = self.layout.tasks.on_agent_restart == OnRestart.RESEND
        out: list[tuple[int, Handback]] = []
        now = self.clock()
        for t in self.store.held():
            if t.agent is None or t.agent not in self.layout.wip:
                continue
            current = processes.get(t.agent)
            if t.state == TaskState.ASSIGNED:
                if now - t.updated > defaults.LEASE_RECONCILE:
                    self._reconcile(t)
                continue
            limit = self.layout.tasks.timeout_for(t.labels, t.timeout)
            if t.holder is None:
                if current is not None:
                    self.store.adopt_lease(t.id, current, now + limit if limit is not None else None)
                continue
            if t.deadline is None and limit is not None:
                self.store.set_deadline(t.id, now + limit)
            if t.deadline is not None and now >= t.deadline:
                why = f"it ran past its time limit of {_human(limit or 0.0)}"
            elif alive(t.holder):
                continue
            elif current is None and resend:
                continue  # its next process gets it
            else:
                why = f"agent {t.agent}'s process {t.holder.split(':')[0]} ended while it held the task"
            went = self._hand_back(t, t.agent, t.holder, why, resend, told=current is not None)
            if went != Handback.GONE:
                out.append((t.id, went))
        return out

    def _hand_back(self, t: Task, agent: str, holder: str, why: str, resend: bool, told: bool) -> Handback:
        """Hand ``t`` back from ``holder`` (resent, queued or failed; GONE when it had
        moved on already), say so in the events and the log, and resend it, or tell
        ``agent`` (when ``told``: it has a live process) to stop working on it."""
        went = self.store.hand_back(t.id, holder, why, resend, self.layout.tasks.max_attempts)
        if went == Handback.GONE:
            return went
        append_event(self.home, EventKind.TASK_HANDED_BACK, task=t.id, ref=t.ref, agent=agent, to=str(went), reason=why)
        log.info("task %s: %s; %s", t.ref, why, went)
        if went == Handback.RESENT:
            self.resend(self.store.get(t.id), why)
        elif told:
            self._tell(
                t,
                agent,
                f"Task {t.ref} ({t.title}): {why}. "
                + (
                    "It failed: it had no attempts left; stop working on it."
                    if went == Handback.FAILED
                    else "It went back to the queue; stop working on it."
                ),
                notice=True,
            )
        return went

    def _reconcile(self, t: Task) -> None:
        """An assigned task that has waited long: settle it by where its message is."""
        if t.message is None or t.agent is None:
            return
        found = inbox(self.home, t.agent).find(t.message)
        if found is None:  # dropped from the inbox (`miyabi drop`), or lost: tell the agent again
            self.store.set_state(
                t.id,
                TaskState.QUEUED,
                f"its message {t.message} is gone from {t.agent}'s inbox",
                expect=(TaskState.ASSIGNED,),
            )
        elif found[0] == MessageState.DELIVERED:  # its report was lost: held by a process we cannot name
            self.store.take_lease(
                t.id, t.agent, LOST_HOLDER, None, f"message {t.message} was delivered", message=t.message
            )
        elif found[0] == MessageState.FAILED:
            self.dead_letter(found[1], str(found[1].extra.get("reason", "dead letter")))

    def resend(self, task: Task, why: str) -> None:
        """Send a task handed back to its agent again, saying why. A job is only named
        again (``/job N``): the worker runs it as its next attempt."""
        assert task.agent is not None
        limit = task.max_attempts or self.layout.tasks.max_attempts
        if task.source == Source.JOB:
            text = task_message(task)
        else:
            text = (
                f"miyabi: {why}, so here is task {task.ref} again (attempt {task.attempts} of {limit}). "
                "Start it afresh; what was done before may be half done.\n\n" + task_message(task)
            )
        self._tell(task, task.agent, text)

    def _tell(self, task: Task, agent: str, text: str, notice: bool = False) -> None:
        """Send ``agent`` a message about ``task``: its assignment (recorded on the task,
        so only its delivery leases the task) or, with ``notice``, a word about it."""
        msg = make(agent, text, sender="miyabi", task=str(task.id))
        if not notice:
            self.store.set_message(task.id, msg.id)
        enqueue(self.home, msg)

    def github_pass(self, store: Store | None = None, assign: bool = False) -> GitHubPass:
        """Poll GitHub once, then (with ``assign``) schedule, then tell GitHub what agents
        reported. ``store``: a connection of the calling thread's own.

        Raises:
            GitHubError: no token in ``github.token_env`` (one line naming it), or GitHub
                failed (after the client's own retries).
            Stopped: the controller stopped while the client waited.
        """
        cfg, gh = self.layout.github, self.gh
        if cfg is None or gh is None:
            raise GitHubError("the layout has no github: section; add `github: {repo: owner/name}`")
        gh.require_token(str(self.layout.path))
        db = store or self.store
        result = GitHubPass(sync=sync(db, gh, cfg, self.home, intake=self.intake()))
        if assign:
            result.assigned = self.schedule()
        result.reported = [*result.sync.cancelled, *report(db, gh, cfg, self.home)]
        return result

    def run_github(self, stop: threading.Event) -> None:
        """Poll every ``poll_interval`` seconds until ``stop`` (the controller's GitHub
        thread; a poll with nothing changed is one request answered 304, which costs no
        rate limit). Errors are logged, never fatal. Without a token it polls nothing:
        it says why once (log and ``github-error`` event), since the controller's
        environment cannot change until it restarts."""
        cfg = self.layout.github
        if cfg is None or self.gh is None:
            return
        try:
            self.gh.require_token(str(self.layout.path))
        except GitHubError as e:
            log.error("github: %s", e)
            append_event(self.home, EventKind.GITHUB_ERROR, error=str(e))
            return
        store = Store.of_home(self.home)  # a connection of this thread's own
        try:
            while not stop.is_set():
                try:
                    done = self.github_pass(store)
                    if done.sync.added or done.sync.triaged:
                        append_event(self.home, EventKind.GITHUB_SYNC, added=done.sync.added, triaged=done.sync.triaged)
                    for line in done.reported:
                        log.info("github: %s", line)
                except (GitHubError, TaskError, sqlite3.Error) as e:
                    log.warning("github: %s", e)
                    append_event(self.home, EventKind.GITHUB_ERROR, error=str(e))
                stop.wait(cfg.poll_interval)
        except Stopped:
            log.info("github: stopped while waiting")
        finally:
            store.close()

    # -- what delivery reports

    def delivered(self, msg: Message, holder: str | None = None) -> None:
        """A task's message reached its agent's process ``holder`` (``PID:START``): the
        task is in progress, leased to that process, until its time limit. Only the
        message of its current assignment counts (not a notice about it)."""
        if msg.task and msg.task.isdigit():
            try:
                t = self.store.get(int(msg.task))
                timeout = self.layout.tasks.timeout_for(t.labels, t.timeout)
                self.store.take_lease(t.id, msg.to, holder, timeout, f"message {msg.id} delivered", message=msg.id)
            except (TaskError, sqlite3.Error) as e:
                log.warning("task %s: could not record its delivery (%s); the next passes settle it", msg.task, e)

    def dead_letter(self, msg: Message, reason: str) -> None:
        """A task whose message could not be delivered goes back to the queue (only for
        the message of its current assignment)."""
        if msg.task and msg.task.isdigit():
            try:
                t = self.store.get(int(msg.task))
                if t.message is not None and t.message != msg.id:
                    return
                self.store.set_state(
                    t.id, TaskState.QUEUED, f"its message was not delivered: {reason}", expect=(TaskState.ASSIGNED,)
                )
            except (TaskError, sqlite3.Error):
                pass

    def recover_assignments(self) -> None:
        """A controller killed between assigning a task and enqueueing its message
        leaves an assigned task no agent heard of: send it again. Tasks held by agents
        the layout does not have go back to the queue first."""
        self.release_unknown()
        for t in self.store.query(state=TaskState.ASSIGNED):
            if t.agent is None:
                continue
            found = inbox(self.home, t.agent).find(t.message) if t.message else None
            if found is None and t.message is None:  # before message ids were recorded
                box = inbox(self.home, t.agent)
                if any(m.task == str(t.id) for _, m in box.list((MessageState.PENDING,))):
                    continue
            elif found is not None:
                if found[0] == MessageState.PENDING:
                    continue
                if found[0] == MessageState.DELIVERED:
                    # delivered, but killed before it recorded so: held by a process we
                    # cannot name, so handed back by the next pass
                    self.store.take_lease(
                        t.id, t.agent, LOST_HOLDER, None, f"message {t.message} was delivered", message=t.message
                    )
                    continue
            self.dispatch(t, t.agent)


LOST_HOLDER = "0:0"
"""The holder of a task whose message was delivered to a process nobody recorded
(the report was lost): no process has this identity, so the task is handed back."""


def _handoff_words(name: str, profile: str, p: Parked, t: Task, cwd: Path | None) -> tuple[str, str]:
    """(why a task is handed off, what its next agent is told first)."""
    since = time.strftime("%H:%M", time.localtime(p.since))
    why = f"{name} has been parked ({p.reason}: {p.detail[:120]}) since {since}"
    cause = "its provider's usage limit" if p.reason == "limit" else "its budget, spent"
    where = f"the worktree {cwd} on branch {t.branch}" if t.branch else str(cwd or f"{name}'s working directory")
    note = (
        f"this task comes to you from {name} ({profile}), stopped by {cause} since {since}. "
        f"What it did so far is in {where}: look there first (git status, git log) and carry on from it."
    )
    return why, note


def _human(seconds: float) -> str:
    """``2h``, ``30m``, ``90s``: a duration as a layout would write it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
