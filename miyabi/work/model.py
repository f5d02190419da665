"""What a task is: its fields, its states and the changes allowed between them,
where it came from, its place in the queue, and the error a task change raises.

A task comes from a source (``local``, ``github``, ``job``, ``bus``), has a title,
body, labels and priority, and moves through states: ``queued`` → ``assigned`` →
``in_progress`` → ``done`` | ``failed`` | ``cancelled``; it waits in ``blocked``
while a task it depends on is not done (or cancelled, or landed: ``verified``,
``deployed``). A story's child (:mod:`miyabi.work.stories`) goes ``verifying`` →
``verified`` → ``deployed`` → ``done``. Where tasks are kept is
:mod:`miyabi.work.store`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from miyabi.errors import MiyabiError
from miyabi.times import rfc3339

if TYPE_CHECKING:
    import sqlite3


class TaskState(StrEnum):
    """Where a task is in its life."""

    QUEUED = "queued"
    BLOCKED = "blocked"
    """A task it depends on is not done (or cancelled) yet."""
    ASSIGNED = "assigned"
    """Routed to an agent; its message is on the way."""
    IN_PROGRESS = "in_progress"
    """The agent got its message."""
    VERIFYING = "verifying"
    """A pool task its agent says is done: the repository's checks run on its worktree."""
    SHARED = "shared"
    """Published on the bus (``bus:``): a host that runs its route's agent runs it, and
    its result comes back here."""
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    VERIFIED = "verified"
    """A story's child whose checks passed and whose work was merged: it waits for its
    story's deploy (tasks that depend on it may start)."""
    DEPLOYED = "deployed"
    """A story's child whose story's deploy ran with its work: it waits for the story's
    health and acceptance checks, then is done."""


class ClaimState(StrEnum):
    """How far the claim of an issue got (GitHub tasks)."""

    NONE = ""
    CLAIMING = "claiming"
    """The todo label's removal was sent; the answer may not have come."""
    CLAIMED = "claimed"


class Source(StrEnum):
    """Where a task came from."""

    LOCAL = "local"
    GITHUB = "github"
    JOB = "job"
    BUS = "bus"
    """A host's copy of a task another host (or this one) published on the bus."""


STATES = tuple(TaskState)
OPEN = (
    TaskState.QUEUED,
    TaskState.BLOCKED,
    TaskState.ASSIGNED,
    TaskState.IN_PROGRESS,
    TaskState.VERIFYING,
    TaskState.SHARED,
)
HELD = (TaskState.ASSIGNED, TaskState.IN_PROGRESS)
"""States in which a task belongs to an agent (and counts towards its ``wip``)."""
FINISHED = (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)
LANDED = (TaskState.VERIFIED, TaskState.DEPLOYED)
"""States of a story's child whose work landed and that waits for its story (neither
open nor finished: its instance ends, and tasks that depend on it may start)."""
SATISFIED = (TaskState.DONE, TaskState.CANCELLED, *LANDED)
"""States of a task that no longer holds back the tasks that depend on it."""
PRIORITIES = ("high", "normal", "low")

TRANSITIONS: dict[TaskState, tuple[TaskState, ...]] = {
    TaskState.QUEUED: (TaskState.BLOCKED, TaskState.ASSIGNED, TaskState.CANCELLED, TaskState.SHARED),
    TaskState.SHARED: (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED),
    TaskState.BLOCKED: (TaskState.QUEUED, TaskState.CANCELLED),
    TaskState.ASSIGNED: (
        TaskState.IN_PROGRESS,
        TaskState.DONE,
        TaskState.FAILED,
        TaskState.CANCELLED,
        TaskState.QUEUED,
        TaskState.ASSIGNED,
        TaskState.VERIFYING,
    ),
    TaskState.IN_PROGRESS: (
        TaskState.DONE,
        TaskState.FAILED,
        TaskState.CANCELLED,
        TaskState.QUEUED,
        TaskState.ASSIGNED,
        TaskState.VERIFYING,
    ),
    TaskState.VERIFYING: (
        TaskState.IN_PROGRESS,
        TaskState.DONE,
        TaskState.FAILED,
        TaskState.CANCELLED,
        TaskState.QUEUED,
        TaskState.VERIFIED,
    ),
    TaskState.VERIFIED: (TaskState.DEPLOYED, TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED),
    TaskState.DEPLOYED: (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED),
    TaskState.DONE: (),
    TaskState.FAILED: (TaskState.QUEUED,),
    TaskState.CANCELLED: (TaskState.QUEUED,),
}
"""Allowed state changes (``queued`` from assigned/in_progress: the agent failed;
from failed/cancelled: ``miyabi task retry``; ``assigned`` again from
assigned/in_progress: handed back to the same agent as a new attempt; ``verifying``
from assigned/in_progress: a pool task its agent calls done; back to ``in_progress``
when a check fails and the agent gets another round; ``shared`` from queued: published
on the bus, ending as its result comes back; ``verified`` from verifying: a story's
child merged behind its checks, then ``deployed`` when its story's deploy ran, and done
when the story's health and acceptance checks pass, or failed with the story)."""

PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}


def rank_of(priority: str, labels: Sequence[str]) -> int:
    """A task's place in the queue (0 first): labels ``priority:high``/``priority:low``
    win over its own ``priority``."""
    if "priority:high" in labels:
        return 0
    if "priority:low" in labels:
        return 2
    return PRIORITY_RANK.get(priority, 1)


class Handback(StrEnum):
    """Where :meth:`~miyabi.work.leases.Leases.hand_back` put a task."""

    RESENT = "resent"
    """Assigned again to the same agent (its next process gets it)."""
    REQUEUED = "requeued"
    FAILED = "failed"
    """It had used its last attempt."""
    GONE = "gone"
    """It was no longer held by that process (finished or handed back meanwhile)."""


REF_RE = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)#(?P<number>\d+)$")
"""A task's reference to its issue: ``acme/widgets#3``."""


class TaskError(MiyabiError):
    """A task cannot be found, or the change asked for is not allowed."""


@dataclass(frozen=True)
class Task:
    """One task, as stored.

    Attributes:
        id: its number in the store.
        source: ``local``, ``github`` or ``job``.
        repo, number, url: the external reference (``acme/widgets``, 3, its URL).
        title, body: text (from an issue: untrusted; it reaches agents as message text only).
        labels: label names.
        priority: ``high``, ``normal`` or ``low``.
        state: where it is.
        agent: the agent it is assigned to, if any.
        attempts: how many times it was assigned.
        created, updated: Unix times.
        claim: how far the claim of its issue got.
        job_started: for a job, the assignment (its ``attempts`` count then) in which
            the worker started it; 0 when never.
        key: for a job, the submitter's id of it (unique among jobs).
        holder: the lease: ``PID:START`` of the agent process the task's message was
            delivered to (None while not delivered).
        deadline: Unix time by which the holder must finish (None: no limit).
        timeout: the task's own in-progress limit in seconds (None: the layout's).
        max_attempts: the task's own number of attempts (None: the layout's).
        message: the id of the message of its current assignment (only that one's
            delivery leases it).
        pool: the pool it was routed to (None: a named agent's task).
        branch: for a pool task, its git branch (its worktree is the pipeline's record).
        rounds: verify rounds it failed so far.
        parent: the task it follows up (a review comment, a failing check), if any.
        handoff: the agent or pool it was handed off to (its previous agent was
            parked); it goes there whatever the routes say.
        handoff_note: what its new agent is told first: who worked on it, and where.
        spec: where it came from, as JSON: a spec-kit line or a task spec
            (:mod:`miyabi.work.taskspec`); None for any other task.
        story: the story it belongs to (:mod:`miyabi.work.stories`), if any.
    """

    id: int
    source: str
    repo: str | None
    number: int | None
    url: str | None
    title: str
    body: str
    labels: tuple[str, ...]
    priority: str
    state: TaskState
    agent: str | None
    attempts: int
    created: float
    updated: float
    claim: ClaimState = ClaimState.NONE
    job_started: int = 0
    key: str | None = None
    holder: str | None = None
    deadline: float | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    message: str | None = None
    pool: str | None = None
    branch: str | None = None
    rounds: int = 0
    parent: int | None = None
    handoff: str | None = None
    handoff_note: str | None = None
    spec: str | None = None
    story: int | None = None

    @property
    def from_bus(self) -> bool:
        """Whether this is this host's copy of a task claimed from the bus (``bus:``)."""
        return self.source == Source.BUS or (self.key is not None and self.key.startswith("bus:"))

    @property
    def ref(self) -> str:
        """``acme/widgets#3`` for an issue, ``001-blog#T012`` for a spec-kit line,
        ``spec:ID`` for a task spec, ``#12`` for another local task."""
        if self.repo and self.number is not None:
            return f"{self.repo}#{self.number}"
        return self.spec_ref or f"#{self.id}"

    @property
    def spec_ref(self) -> str | None:
        """The reference its spec gives it (``001-blog#T012``, ``spec:ID``), if any."""
        if not self.spec:
            return None
        try:
            ref = json.loads(self.spec).get("ref")
        except (ValueError, AttributeError):
            return None
        return str(ref) if ref else None

    def to_json(self) -> dict[str, Any]:
        """The task as ``--json`` prints it (times in RFC 3339)."""
        return {
            "id": self.id,
            "source": self.source,
            "ref": self.ref,
            "title": self.title,
            "state": str(self.state),
            "agent": self.agent,
            "priority": self.priority,
            "labels": list(self.labels),
            "url": self.url,
            "attempts": self.attempts,
            "created": rfc3339(self.created),
            "updated": rfc3339(self.updated),
            "deadline": rfc3339(self.deadline) if self.deadline is not None else None,
            "timeout": self.timeout,
            "max_attempts": self.max_attempts,
            "body": self.body,
            "pool": self.pool,
            "branch": self.branch,
            "rounds": self.rounds,
            "parent": self.parent,
            "handoff": self.handoff,
            "spec": json.loads(self.spec) if self.spec else None,
            "story": self.story,
        }

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> Task:
        return cls(
            id=r["id"],
            source=r["source"],
            repo=r["repo"],
            number=r["number"],
            url=r["url"],
            title=r["title"],
            body=r["body"],
            labels=tuple(json.loads(r["labels"])),
            priority=r["priority"],
            state=TaskState(r["state"]),
            agent=r["agent"],
            attempts=r["attempts"],
            created=r["created"],
            updated=r["updated"],
            claim=ClaimState(r["claim"]),
            job_started=r["job_started"],
            key=r["key"],
            holder=r["holder"],
            deadline=r["deadline"],
            timeout=r["timeout"],
            max_attempts=r["max_attempts"],
            message=r["message"],
            pool=r["pool"],
            branch=r["branch"],
            rounds=r["rounds"],
            parent=r["parent"],
            handoff=r["handoff"],
            handoff_note=r["handoff_note"],
            spec=r["spec"],
            story=r["story"],
        )
