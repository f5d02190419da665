"""Telling an agent about a task the scheduler assigned, claiming its issue first.

For an issue the claim is the removal of the todo label, which GitHub grants to one
caller only (a second ``DELETE`` of the label answers 404), so two controllers polling
one repository never both take an issue; the loser cancels its copy of the task.
Then it adds ``status:in-progress`` and ``assigned:<agent>``, comments once, and the
agent gets the task as a message. Local tasks and jobs only get the message.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from miyabi import defaults
from miyabi.config.settings import GitHubSettings
from miyabi.events import EventKind, append_event
from miyabi.messaging.mailbox import enqueue, make
from miyabi.work.github import GitHub, GitHubError
from miyabi.work.model import ClaimState, Source, Task, TaskError, TaskState
from miyabi.work.scheduler import task_message
from miyabi.work.store import Store


class Dispatcher:
    """Tells agents about their tasks (claiming issues first).

    Args:
        store: the task store.
        home_root: the miyabi home (inboxes, events); its path also names this
            controller in claim comments.
        cfg, gh: the GitHub settings and client, or None without a ``github:`` section.
    """

    def __init__(
        self,
        store: Store,
        home_root: Path,
        cfg: GitHubSettings | None = None,
        gh: GitHub | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.home = home_root
        self.cfg = cfg
        self.gh = gh
        self.clock = clock
        self.ident = hashlib.sha1(str(home_root).encode()).hexdigest()[:10]
        self.not_before: dict[int, float] = {}

    def hold(self, task: Task) -> bool:
        """True while a task whose claim failed waits out ``defaults.CLAIM_RETRY``."""
        return self.clock() < self.not_before.get(task.id, 0.0)

    def claim(self, task: Task, agent: str) -> bool:
        """Take the issue for this controller. The todo label's removal is the claim
        (GitHub lets one caller remove it). ``claiming`` is recorded before it is
        sent: if a 404 then follows our own earlier attempt (a crash, or a reply that
        never came), the comments decide: ours, another miyabi's, or none (ours: a
        loser never comments).

        Raises:
            GitHubError: GitHub failed.
        """
        assert self.gh is not None and self.cfg is not None and task.number is not None
        if task.claim == ClaimState.CLAIMED:
            return True
        resumed = task.claim == ClaimState.CLAIMING
        self.store.set_claim(task.id, ClaimState.CLAIMING)
        won = self.gh.remove_label(task.number, self.cfg.todo_label)
        if not won and resumed:
            comments = [c for c in self.gh.comments(task.number) if "by miyabi" in c]
            won = not comments or any(f"[{self.ident}]" in c for c in comments)
        self.store.set_claim(task.id, ClaimState.CLAIMED if won else ClaimState.NONE)
        return won

    def claim_issue(self, task: Task, agent: str, state: TaskState = TaskState.ASSIGNED) -> bool:
        """Claim a GitHub task's issue for ``agent`` (labels and a comment the first
        time). A task whose issue another miyabi took is cancelled (it was in
        ``state``); one whose claim failed goes (or stays) queued and waits out
        ``defaults.CLAIM_RETRY``. Returns True when the issue is ours."""
        if self.gh is None or self.cfg is None or task.number is None:
            if state != TaskState.QUEUED:
                self.store.set_state(
                    task.id, TaskState.QUEUED, "no github: section to claim the issue with", expect=(state,)
                )
            self.not_before[task.id] = self.clock() + defaults.CLAIM_RETRY
            return False
        try:
            first = task.claim != ClaimState.CLAIMED
            if not self.claim(task, agent):
                self.store.set_state(
                    task.id, TaskState.CANCELLED, f"claimed elsewhere ({self.cfg.todo_label} was gone)", expect=(state,)
                )
                append_event(self.home, EventKind.CLAIM_LOST, task=task.id, ref=task.ref)
                return False
            if first:
                self.gh.add_labels(task.number, ["status:in-progress", f"assigned:{agent}"])
                self.gh.comment(task.number, f"assigned to {agent} by miyabi [{self.ident}]")
            else:  # ours already: back from a failed agent
                self.gh.add_labels(task.number, [f"assigned:{agent}"])
        except GitHubError as e:
            if state != TaskState.QUEUED:
                try:
                    self.store.set_state(task.id, TaskState.QUEUED, f"claim failed: {e}", expect=(state,))
                except TaskError:
                    pass
            self.not_before[task.id] = self.clock() + defaults.CLAIM_RETRY
            append_event(self.home, EventKind.CLAIM_ERROR, task=task.id, ref=task.ref, error=str(e))
            return False
        return True

    def __call__(self, task: Task, agent: str) -> None:
        if task.source == Source.GITHUB and not self.claim_issue(task, agent):
            return
        msg = make(agent, task_message(task), sender="miyabi", task=str(task.id))
        self.store.set_message(task.id, msg.id)  # only this message's delivery leases the task
        enqueue(self.home, msg)
        append_event(self.home, EventKind.TASK_ASSIGNED, agent=agent, task=task.id, ref=task.ref, id=msg.id)
