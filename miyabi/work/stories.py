"""Stories: a user story that a manager agent plans into tasks, coders build, the
deploy stage runs and its checks accept.

A story is a row of the ``stories`` table with a **planning task** for the manager
role (its first message says to write a spec-kit ``tasks.md`` or task specs and to
import them with ``--story N``); the tasks imported are the story's **children** (their
``story`` column). A story moves ``planning`` → ``building`` (its children are worked
on) → ``deploying`` (all of them landed: ``verified``) → ``checking`` (health and
acceptance) → ``done``, or back to ``building`` with a fix task after a failed deploy or
check, and ``failed``, with the evidence, after ``max_rounds`` of fixes. What moves it is
the story keeper (:mod:`miyabi.pipeline.story`); this module is what the store keeps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from miyabi.events import EventKind, append_event
from miyabi.times import rfc3339
from miyabi.work.model import Source, Task, TaskError, TaskState
from miyabi.work.store import Store

STORY_LABEL = "story"
"""The label of a story's planning task, and of a GitHub issue that is a story."""


class StoryState(StrEnum):
    """Where a story is in its life."""

    PLANNING = "planning"
    """Its manager writes and imports the task list."""
    BUILDING = "building"
    """Its children are worked on, checked and merged."""
    DEPLOYING = "deploying"
    """Every child landed: ``.miyabi.yml``'s ``deploy:`` runs."""
    CHECKING = "checking"
    """Deployed: its health and acceptance checks run."""
    DONE = "done"
    FAILED = "failed"


FINISHED_STORIES = (StoryState.DONE, StoryState.FAILED)

LANDED_CHILD = (TaskState.VERIFIED, TaskState.DEPLOYED, TaskState.DONE)
"""States of a story's task whose work is in the base branch (checked and merged)."""


def landed(tasks: Sequence[Task]) -> int:
    """How many of a story's ``tasks`` landed (:data:`LANDED_CHILD`)."""
    return sum(1 for t in tasks if t.state in LANDED_CHILD)


class StoryError(TaskError):
    """A story cannot be found, or the change asked for is not allowed."""


@dataclass(frozen=True)
class Story:
    """One story, as stored.

    Attributes:
        id: its number.
        title, body: what the user asked for (from an issue: untrusted text).
        state: where it is.
        task: its planning task's id.
        manager, coder: the roles' agent or pool when it was made.
        source, repo, number, url: ``local``, or the GitHub issue it came from.
        rounds: fix rounds its deploy and checks took so far.
        commit: the commit last deployed, if any.
        evidence: why its last deploy or check failed (empty: none did).
        created, updated, deployed, finished: Unix times (``deployed``: first deploy
            that ran; None until then).
    """

    id: int
    title: str
    body: str
    state: StoryState
    task: int | None
    manager: str | None
    coder: str | None
    source: str
    repo: str | None
    number: int | None
    url: str | None
    rounds: int
    commit: str | None
    evidence: str
    created: float
    updated: float
    deployed: float | None
    finished: float | None

    @classmethod
    def from_row(cls, r: Any) -> Story:
        return cls(
            id=r["id"],
            title=r["title"],
            body=r["body"],
            state=StoryState(r["state"]),
            task=r["task"],
            manager=r["manager"],
            coder=r["coder"],
            source=r["source"],
            repo=r["repo"],
            number=r["number"],
            url=r["url"],
            rounds=r["rounds"],
            commit=r["deployed_commit"],
            evidence=r["evidence"],
            created=r["created"],
            updated=r["updated"],
            deployed=r["deployed"],
            finished=r["finished"],
        )

    @property
    def ref(self) -> str:
        """``story 3``, or its issue's ``acme/widgets#3``."""
        return f"{self.repo}#{self.number}" if self.repo and self.number is not None else f"story {self.id}"

    def to_json(self) -> dict[str, Any]:
        """The story as ``--json`` prints it (times in RFC 3339)."""
        return {
            "id": self.id,
            "ref": self.ref,
            "title": self.title,
            "state": str(self.state),
            "task": self.task,
            "manager": self.manager,
            "coder": self.coder,
            "source": self.source,
            "url": self.url,
            "rounds": self.rounds,
            "commit": self.commit,
            "evidence": self.evidence,
            "created": rfc3339(self.created),
            "updated": rfc3339(self.updated),
            "deployed": rfc3339(self.deployed) if self.deployed is not None else None,
            "finished": rfc3339(self.finished) if self.finished is not None else None,
            "seconds_to_deployed": round(self.deployed - self.created, 3) if self.deployed is not None else None,
        }


def planning_text(story_id: int, title: str, body: str) -> str:
    """The planning task's body: what the manager is asked to do with the story."""
    said = f"{title}\n\n{body.strip()}".strip()
    return (
        f"You manage story {story_id}:\n\n{said}\n\n"
        "Break it into tasks that coders can each finish and test on their own, and write them in the repository "
        f"as a spec-kit task list, `specs/NNN-feature/tasks.md` (`- [ ] T001 [P] What to do in path/to/file` lines "
        "under `## Phase N: …` headings; `[P]` marks tasks that may run side by side, `(depends on T001)` adds an "
        "order), or as task specs (YAML: id, title, acceptance, tests). Then import them:\n"
        f"  miyabi spec import specs/NNN-feature/tasks.md --story {story_id}\n"
        f"or, for each task spec: miyabi spec add FILE.yaml --story {story_id}\n"
        "miyabi gives each task to a coder, checks and merges its work, deploys the whole, and runs the health and "
        "acceptance checks; you do not write the code yourself."
    )


def create(
    store: Store,
    title: str,
    body: str = "",
    manager: str | None = None,
    coder: str | None = None,
    source: str = Source.LOCAL,
    repo: str | None = None,
    number: int | None = None,
    url: str | None = None,
    home_root: Path | None = None,
) -> tuple[Story, Task]:
    """Store a new story (``planning``) and its planning task (labelled ``story``, and
    ``agent:MANAGER`` when a manager is named, so that routing sends it there); with
    ``home_root``, log ``story-created`` there.

    Raises:
        StoryError: empty title, or the issue ``repo#number`` is a story already.
    """
    if not title.strip():
        raise StoryError("a story needs a title (what the user wants, in a sentence)")
    now = store.clock()
    with store.tx() as db:
        if (
            number is not None
            and db.execute("SELECT 1 FROM stories WHERE repo=? AND number=?", (repo, number)).fetchone()
        ):
            raise StoryError(f"issue {repo}#{number} is a story already")
        cur = db.execute(
            "INSERT INTO stories (title, body, state, manager, coder, source, repo, number, url, created, updated)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (title, body, str(StoryState.PLANNING), manager, coder, source, repo, number, url, now, now),
        )
        sid = int(cur.lastrowid or 0)
        db.execute(
            "INSERT INTO story_events (story, time, state, reason) VALUES (?,?,?,?)",
            (
                sid,
                now,
                str(StoryState.PLANNING),
                f"story from {source}" + (f"; planned by {manager}" if manager else ""),
            ),
        )
        # in the same transaction: a story is never seen without its planning task
        labels = [STORY_LABEL, *([f"agent:{manager}"] if manager else [])]
        task = store.add(f"Plan story {sid}: {title}"[:200], planning_text(sid, title, body), labels, "high")
        db.execute("UPDATE stories SET task=? WHERE id=?", (task.id, sid))
        db.execute("UPDATE tasks SET story=? WHERE id=?", (sid, task.id))
    if home_root is not None:
        append_event(
            home_root, EventKind.STORY_CREATED, story=sid, title=title, task=task.id, manager=manager, source=source
        )
    return get(store, sid), store.get(task.id)


def adopt_issues(store: Store, manager: str, coder: str | None, home_root: Path | None = None) -> list[Story]:
    """Make a story of each queued GitHub task labelled ``story`` that is none yet: the
    issue's task becomes its planning task (``agent:MANAGER`` added to its labels, the
    planning instructions to its body, routed afresh). Returns the stories made."""
    made: list[Story] = []
    rows = store.rows(
        "SELECT * FROM tasks WHERE story IS NULL AND source=? AND state=? AND labels LIKE ? ORDER BY id",
        (str(Source.GITHUB), str(TaskState.QUEUED), f'%"{STORY_LABEL}"%'),
    )
    for r in rows:
        t = Task.from_row(r)
        if STORY_LABEL not in t.labels:
            continue
        now = store.clock()
        with store.tx() as db:
            if db.execute("SELECT 1 FROM stories WHERE repo=? AND number=?", (t.repo, t.number)).fetchone():
                continue
            cur = db.execute(
                "INSERT INTO stories (title, body, state, task, manager, coder, source, repo, number, url, created,"
                " updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    t.title,
                    t.body,
                    str(StoryState.PLANNING),
                    t.id,
                    manager,
                    coder,
                    t.source,
                    t.repo,
                    t.number,
                    t.url,
                    now,
                    now,
                ),
            )
            sid = int(cur.lastrowid or 0)
            db.execute(
                "INSERT INTO story_events (story, time, state, reason) VALUES (?,?,?,?)",
                (sid, now, str(StoryState.PLANNING), f"story from issue {t.ref}; planned by {manager}"),
            )
            labels = [*t.labels, *([] if any(x.startswith("agent:") for x in t.labels) else [f"agent:{manager}"])]
            db.execute(
                "UPDATE tasks SET story=?, labels=?, body=?, route=NULL WHERE id=?",
                (sid, json.dumps(labels), planning_text(sid, t.title, t.body), t.id),
            )
        if home_root is not None:
            append_event(
                home_root,
                EventKind.STORY_CREATED,
                story=sid,
                title=t.title,
                task=t.id,
                manager=manager,
                source=t.source,
            )
        made.append(get(store, sid))
    return made


def get(store: Store, story_id: int | str) -> Story:
    """A story by id (``3``, ``#3``).

    Raises:
        StoryError: no such story.
    """
    text = str(story_id).strip().lstrip("#")
    if not text.isdigit():
        raise StoryError(f"{story_id!r} is not a story id (a number, as `miyabi story ls` shows)")
    rows = store.rows("SELECT * FROM stories WHERE id=?", (int(text),))
    if not rows:
        raise StoryError(f"no story {text}; list them with `miyabi story ls`")
    return Story.from_row(rows[0])


def stories(store: Store, states: Sequence[StoryState] = ()) -> list[Story]:
    """Stories, oldest first (only those in ``states`` when given)."""
    q, args = "SELECT * FROM stories", [str(s) for s in states]
    if states:
        q += f" WHERE state IN ({','.join('?' * len(states))})"
    return [Story.from_row(r) for r in store.rows(q + " ORDER BY id", args)]


def children(store: Store, story_id: int) -> list[Task]:
    """The story's tasks (its planning task excluded), oldest first."""
    rows = store.rows(
        "SELECT * FROM tasks WHERE story=? AND id IS NOT (SELECT task FROM stories WHERE id=?) ORDER BY id",
        (story_id, story_id),
    )
    return [Task.from_row(r) for r in rows]


def history(store: Store, story_id: int) -> list[dict[str, Any]]:
    """The story's changes, oldest first: ``time`` (RFC 3339), ``state``, ``reason``."""
    rows = store.rows("SELECT time, state, reason FROM story_events WHERE story=? ORDER BY id", (story_id,))
    return [{**dict(r), "time": rfc3339(r["time"])} for r in rows]


def attach(store: Store, story_id: int, task_ids: Sequence[int]) -> None:
    """Make tasks ``task_ids`` children of story ``story_id`` (one transaction). A
    child without an ``agent:`` label gets ``agent:CODER`` (the story's coder role)
    and is routed afresh. The story, while ``planning``, stays so until its planning
    task is done; a ``done`` story (its service failed since: a monitor's fix task)
    goes back to ``building``, and deploys again once the new tasks land.

    Raises:
        StoryError: no such story, it failed, or a task does not exist.
    """
    story = get(store, story_id)
    if story.state == StoryState.FAILED:
        raise StoryError(f"story {story_id} failed; tasks cannot join it (make a new story)")
    with store.tx() as db:
        for tid in task_ids:
            row = db.execute("SELECT labels FROM tasks WHERE id=?", (tid,)).fetchone()
            if row is None:
                raise StoryError(f"no task {tid} to put in story {story_id}")
            labels = list(json.loads(row["labels"]))
            if story.coder and not any(label.startswith("agent:") for label in labels):
                labels.append(f"agent:{story.coder}")
            db.execute("UPDATE tasks SET story=?, labels=?, route=NULL WHERE id=?", (story_id, json.dumps(labels), tid))
    if story.state == StoryState.DONE and task_ids:
        move(
            store,
            story_id,
            StoryState.BUILDING,
            f"task(s) {', '.join(map(str, task_ids))} joined it after it was done (its service needs a fix)",
            expect=(StoryState.DONE,),
        )


def story_of_agent(store: Store, agent: str) -> int | None:
    """The story whose planning task ``agent`` holds (assigned or in progress), when
    there is exactly one; else None."""
    rows = store.rows(
        "SELECT s.id FROM stories s JOIN tasks t ON t.id = s.task WHERE t.agent=? AND t.state IN (?,?)",
        (agent, str(TaskState.ASSIGNED), str(TaskState.IN_PROGRESS)),
    )
    return int(rows[0][0]) if len(rows) == 1 else None


def move(
    store: Store,
    story_id: int,
    state: StoryState,
    reason: str,
    expect: Sequence[StoryState] | None = None,
    *,
    rounds: int | None = None,
    commit: str | None = None,
    evidence: str | None = None,
) -> Story:
    """Move a story to ``state`` and record why (one transaction); ``rounds``,
    ``commit`` and ``evidence`` are stored when given. The first move to ``checking``
    records when it was deployed; ``done``/``failed`` when it finished.

    Raises:
        StoryError: no such story, or it is not in ``expect``.
    """
    now = store.clock()
    with store.tx() as db:
        row = db.execute("SELECT state FROM stories WHERE id=?", (story_id,)).fetchone()
        if row is None:
            raise StoryError(f"no story {story_id}")
        if expect is not None and row["state"] not in expect:
            raise StoryError(f"story {story_id} is {row['state']}; it cannot become {state}")
        sets, args = ["state=?", "updated=?"], [str(state), now]
        for column, value in (("rounds", rounds), ("deployed_commit", commit), ("evidence", evidence)):
            if value is not None:
                sets.append(f"{column}=?")
                args.append(value)
        if state == StoryState.CHECKING:
            sets.append("deployed=COALESCE(deployed, ?)")
            args.append(now)
        if state in FINISHED_STORIES:
            sets.append("finished=?")
            args.append(now)
        db.execute(f"UPDATE stories SET {', '.join(sets)} WHERE id=?", (*args, story_id))
        db.execute(
            "INSERT INTO story_events (story, time, state, reason) VALUES (?,?,?,?)",
            (story_id, now, str(state), reason),
        )
    return get(store, story_id)
