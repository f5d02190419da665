"""The task side of the controller, and of ``miyabi github sync``: scheduling passes,
GitHub polls and notices, and what delivery reports about task messages.

One object wires the store, the layout's routes and WIP limits, the dispatcher and
the GitHub client, so the controller and the command line do the same thing the same
way.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from miyabi.config.model import Layout
from miyabi.events import append_event
from miyabi.messaging.mailbox import Message, MessageState, inbox
from miyabi.stopping import Stopped
from miyabi.work.dispatch import Dispatcher
from miyabi.work.github import GitHub, GitHubError
from miyabi.work.intake import SyncReport, report, sync
from miyabi.work.scheduler import schedule
from miyabi.work.tasks import Store, TaskError, TaskState

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

    def __init__(self, store: Store, layout: Layout, home_root: Path, gh: GitHub | None = None) -> None:
        self.store = store
        self.layout = layout
        self.home = home_root
        self.gh = gh
        self.dispatch = Dispatcher(store, home_root, layout.github, gh)

    def schedule(self, failed_agents: Sequence[str] = ()) -> list[tuple[int, str]]:
        """One scheduling pass (:func:`~miyabi.work.scheduler.schedule`); returns the
        (task id, agent) pairs assigned.

        Raises:
            TaskError, sqlite3.Error: the store failed.
        """
        return schedule(self.store, self.layout.routes, self.layout.wip, self.dispatch, failed_agents,
                        hold=self.dispatch.hold)

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

    def delivered(self, msg: Message) -> None:
        """A task's message reached its agent: the task is in progress."""
        if msg.task and msg.task.isdigit():
            try:
                self.store.set_state(int(msg.task), TaskState.IN_PROGRESS, f"message {msg.id} delivered",
                                     expect=(TaskState.ASSIGNED,))
            except (TaskError, sqlite3.Error):
                pass  # cancelled or finished meanwhile

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
            pending = inbox(self.home, t.agent).list((MessageState.PENDING, MessageState.DELIVERED))
            if not any(m.task == str(t.id) for _, m in pending):
                self.dispatch(t, t.agent)
