"""The task side of the controller, and of ``miyabi github sync``: scheduling passes,
task leases and time limits, GitHub polls and notices, and what delivery reports
about task messages.

One object wires the store, the layout's routes and WIP limits, the dispatcher and
the GitHub client, so the controller and the command line do the same thing the same
way.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from miyabi.config.model import Layout
from miyabi.config.settings import OnRestart
from miyabi.events import append_event
from miyabi.messaging.mailbox import Message, MessageState, inbox, make
from miyabi.stopping import Stopped
from miyabi.work.dispatch import Dispatcher
from miyabi.work.github import GitHub, GitHubError
from miyabi.work.intake import SyncReport, report, sync
from miyabi.work.scheduler import Router, schedule, task_message
from miyabi.work.tasks import Handback, Source, Store, Task, TaskError, TaskState

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

    def __init__(self, store: Store, layout: Layout, home_root: Path, gh: GitHub | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.home = home_root
        self.gh = gh
        self.clock = clock
        self.dispatch = Dispatcher(store, home_root, layout.github, gh, clock=clock)
        self.layout = layout
        self.router = Router(layout.routes, layout.names)

    def adopt(self, layout: Layout) -> None:
        """Work by a changed layout from now on (routes, WIP limits, task settings).
        Tasks held by agents it no longer has go back to the queue."""
        self.layout = layout
        self.router = Router(layout.routes, layout.names)  # its first pass routes the queue afresh
        self.dispatch.cfg = layout.github
        for t in self.store.held():
            if t.agent is not None and t.agent not in layout.wip:
                try:
                    self.store.set_state(t.id, TaskState.QUEUED, f"agent {t.agent} was removed from the layout; back to the queue",
                                         expect=(TaskState.ASSIGNED, TaskState.IN_PROGRESS))
                except TaskError:
                    pass

    def schedule(self, failed_agents: Sequence[str] = ()) -> list[tuple[int, str]]:
        """One scheduling pass (:func:`~miyabi.work.scheduler.schedule`); returns the
        (task id, agent) pairs assigned.

        Raises:
            TaskError, sqlite3.Error: the store failed.
        """
        return schedule(self.store, self.router, self.layout.wip, self.dispatch, failed_agents,
                        hold=self.dispatch.hold)

    def next_due(self) -> float | None:
        """Unix time of the next thing a pass must do though nothing changed: a task's
        deadline, or a failed claim's retry (None: nothing)."""
        times = [t.deadline for t in self.store.held() if t.deadline is not None]
        times += [v for v in self.dispatch.not_before.values() if v > self.clock()]
        return min(times) if times else None

    # -- leases

    def check_leases(self, processes: Mapping[str, str | None]) -> list[tuple[int, Handback]]:
        """Hand back the tasks whose holder ended or whose time is up.

        Args:
            processes: agent → the lease identity (``PID:START``) of its live process, or
                None while it has none (dead, respawning, no pane).

        A task whose message was delivered belongs to that process. When the agent
        runs another process now (crash, hang, ``miyabi restart``, ``miyabi up``), or
        none and the policy is ``requeue``, the task is handed back by
        ``tasks.on_agent_restart``; past its deadline the agent is told and the task
        is handed back the same way. A task in progress with no holder (delivered
        before leases, or its delivery report was lost) is adopted by the agent's
        current process. Returns (task id, where it went) for each task handed back.

        Raises:
            TaskError, sqlite3.Error: the store failed.
        """
        policy = self.layout.tasks.on_agent_restart
        resend = policy == OnRestart.RESEND
        out: list[tuple[int, Handback]] = []
        now = self.clock()
        for t in self.store.held():
            if t.agent is None or t.agent not in self.layout.wip or t.state != TaskState.IN_PROGRESS:
                continue
            current = processes.get(t.agent)
            if t.holder is None:
                if current is not None:
                    timeout = self.layout.tasks.timeout_for(t.labels, t.timeout)
                    self.store.adopt_lease(t.id, current, now + timeout if timeout is not None else None)
                continue
            if current == t.holder:
                if t.deadline is None or now < t.deadline:
                    continue
                limit = self.layout.tasks.timeout_for(t.labels, t.timeout) or 0.0
                why = f"it ran past its time limit of {_human(limit)}"
            elif current is None and resend:
                continue  # its next process gets it
            else:
                why = f"agent {t.agent}'s process {t.holder.split(':')[0]} ended while it held the task"
            went = self.store.hand_back(t.id, t.holder, why, resend, self.layout.tasks.max_attempts)
            if went == Handback.GONE:
                continue
            out.append((t.id, went))
            append_event(self.home, "task-handed-back", task=t.id, ref=t.ref, agent=t.agent, to=str(went), reason=why)
            log.info("task %s: %s; %s", t.ref, why, went)
            if current is not None and went != Handback.RESENT:
                self._tell(t, t.agent, f"Task {t.ref} ({t.title}): {why}. "
                           + ("It failed: it had no attempts left; stop working on it." if went == Handback.FAILED
                              else "It went back to the queue; stop working on it."))
            elif went == Handback.RESENT:
                self.resend(self.store.get(t.id), why)
        return out

    def resend(self, task: Task, why: str) -> None:
        """Send a task handed back to its agent again, saying why. A job is only named
        again (``/job N``): the worker runs it as its next attempt."""
        assert task.agent is not None
        limit = task.max_attempts or self.layout.tasks.max_attempts
        if task.source == Source.JOB:
            text = task_message(task)
        else:
            text = (f"miyabi: {why}, so here is task {task.ref} again (attempt {task.attempts} of {limit}). "
                    "Start it afresh; what was done before may be half done.\n\n" + task_message(task))
        self._tell(task, task.agent, text)

    def _tell(self, task: Task, agent: str, text: str) -> None:
        msg = make(agent, text, sender="miyabi", task=str(task.id))
        inbox(self.home, agent).put(msg)

    def github_pass(self, store: Store | None = None, assign: bool = False) -> GitHubPass:
        """Poll GitHub once, then (with ``assign``) schedule, then tell GitHub what agents
        reported. ``store``: a connection of the calling thread's own.

        Raises:
            GitHubError: GitHub failed (after the client's own retries).
            Stopped: the controller stopped while the client waited.
        """
        cfg, gh = self.layout.github, self.gh
        if cfg is None or gh is None:
            raise GitHubError("the layout has no github: section; add `github: {repo: owner/name}`")
        db = store or self.store
        result = GitHubPass(sync=sync(db, gh, cfg))
        if assign:
            result.assigned = self.schedule()
        result.reported = report(db, gh, cfg, self.home)
        return result

    def run_github(self, stop: threading.Event) -> None:
        """Poll every ``poll_interval`` seconds until ``stop`` (the controller's GitHub
        thread; a 304 costs no rate limit). Errors are logged, never fatal."""
        cfg = self.layout.github
        if cfg is None or self.gh is None:
            return
        store = Store.of_home(self.home)  # a connection of this thread's own
        if not os.environ.get(cfg.token_env):
            log.warning("no token in $%s: polling %s anonymously", cfg.token_env, cfg.repo)
        try:
            while not stop.is_set():
                try:
                    done = self.github_pass(store)
                    if done.sync.added or done.sync.triaged:
                        append_event(self.home, "github-sync", added=done.sync.added, triaged=done.sync.triaged)
                    for line in done.reported:
                        log.info("github: %s", line)
                except (GitHubError, TaskError, sqlite3.Error) as e:
                    log.warning("github: %s", e)
                    append_event(self.home, "github-error", error=str(e))
                stop.wait(cfg.poll_interval)
        except Stopped:
            log.info("github: stopped while waiting")
        finally:
            store.close()

    # -- what delivery reports

    def delivered(self, msg: Message, holder: str | None = None) -> None:
        """A task's message reached its agent's process ``holder`` (``PID:START``): the
        task is in progress, leased to that process, until its time limit."""
        if msg.task and msg.task.isdigit():
            try:
                t = self.store.get(int(msg.task))
                timeout = self.layout.tasks.timeout_for(t.labels, t.timeout)
                self.store.take_lease(t.id, msg.to, holder, timeout, f"message {msg.id} delivered")
            except (TaskError, sqlite3.Error):
                pass  # gone meanwhile

    def dead_letter(self, msg: Message, reason: str) -> None:
        """A task whose message could not be delivered goes back to the queue."""
        if msg.task and msg.task.isdigit():
            try:
                self.store.set_state(int(msg.task), TaskState.QUEUED, f"its message was not delivered: {reason}",
                                     expect=(TaskState.ASSIGNED,))
            except (TaskError, sqlite3.Error):
                pass

    def recover_assignments(self) -> None:
        """A controller killed between assigning a task and enqueueing its message
        leaves an assigned task no agent heard of: send it again."""
        for t in self.store.query(state=TaskState.ASSIGNED):
            if t.agent is None:
                continue
            box = inbox(self.home, t.agent)
            if any(m.task == str(t.id) for _, m in box.list((MessageState.PENDING,))):
                continue
            delivered = [m for _, m in box.list((MessageState.DELIVERED,)) if m.task == str(t.id)]
            if delivered:  # delivered, but killed before it recorded so: in progress, held by whoever runs now
                self.store.take_lease(t.id, t.agent, None, None, f"message {delivered[-1].id} was delivered")
            else:
                self.dispatch(t, t.agent)


def _human(seconds: float) -> str:
    """``2h``, ``30m``, ``90s``: a duration as a layout would write it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
