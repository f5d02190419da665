"""GitHub issues in, outcomes out.

:func:`sync` polls the repository once. The first poll (and one after the intake
settings changed, or after a host that did not take issues in takes them again) lists
every open issue with the todo label, and the closed ones labelled todo or
``status:in-progress``; every later poll asks only for what changed: all issues
updated ``since`` the newest ``updated_at`` already seen (GitHub's clock, so ours never
matters), minus ``defaults.GITHUB_SINCE_OVERLAP``, newest first. That URL stays the
same while nothing changes, so its ETag gets a 304: one request, not counted against
the rate limit. When something changed, every page is read and every issue in it is
handled as if the whole list had been scanned (what was handled already is
recognised), and the poll asks once more with the new ``since``, so that the next
quiet poll is a 304 again. GitHub's ``since`` filters on ``updated_at``, which every
change to an issue moves: labels, closing, editing, comments.

Each issue listed is handled the same way: an open one with the todo label becomes a
task (oldest first, stored ``defaults.GITHUB_INTAKE_BATCH`` to a transaction); pull
requests are skipped; issues by authors who are not OWNER, MEMBER or COLLABORATOR (or
listed in ``allowed_authors``) are not routed and get ``status:needs-triage``; "depends
on #N" or "blocked by #N" in a body becomes a dependency on the task of issue N, when
miyabi knows it. An issue labelled todo again after its task failed or was cancelled
is queued afresh. A closed issue labelled todo or ``status:in-progress`` cancels its
open task and tells the agent holding it. An open issue that lost the todo label, or
was edited, changes nothing (its claim, when it comes, finds the label gone).

:func:`report` tells GitHub what agents reported (the outbox the task store fills in
the same transaction as ``task done``/``fail``). Claiming and telling agents is
:mod:`miyabi.work.dispatch`.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.config.settings import GitHubSettings
from miyabi.events import EventKind, append_event
from miyabi.messaging.mailbox import enqueue, make
from miyabi.work.github import GitHub, GitHubError, stamp
from miyabi.work.model import HELD, OPEN, ClaimState, Source, Task, TaskState
from miyabi.work.store import Store

TRUSTED = ("OWNER", "MEMBER", "COLLABORATOR")
TRIAGE_LABEL = "status:needs-triage"
IN_PROGRESS_LABEL = "status:in-progress"
DEP_RE = re.compile(r"(?i)\b(?:depends on|blocked by)\s+#(\d+)")
NEEDS_HUMAN_LABEL = "status:needs-human"
NOTICE_LABELS = {
    "done": ["status:done"],
    "failed": ["status:failed"],
    "needs-human": ["status:failed", NEEDS_HUMAN_LABEL],
    "review": [defaults.REVIEW_LABEL],
}
"""Labels each outbox action puts on the issue (``needs-human``: a task that used its
last attempt, :meth:`~miyabi.work.leases.Leases.hand_back`, or its last verify round;
``review``: verified, with a pull request open)."""

PLACE = "intake"
"""Where the poll's place is kept (:meth:`~miyabi.work.github.GitHub.remember`):
``settings`` (what the intake depends on), ``since`` (the newest ``updated_at`` seen)
and ``intake`` (whether every poll since the last full one took issues in)."""


@dataclass
class SyncReport:
    """What one poll did.

    Attributes:
        unchanged: nothing changed since the last poll (it was answered 304).
        full: it listed every open todo issue (the first poll, one after ``todo_label``
            or ``allowed_authors`` changed, or when this host takes issues in again).
        added: issues that became tasks (or were queued afresh).
        triaged: issues by untrusted authors, labelled for triage.
        skipped: open todo issues whose task exists and is open.
        cancelled: one line per task cancelled because its issue was closed.
    """

    unchanged: bool = False
    full: bool = False
    added: list[str] = field(default_factory=list)
    triaged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def sync(store: Store, gh: GitHub, cfg: GitHubSettings, home_root: Path, intake: bool = True) -> SyncReport:
    """Poll once: store new todo issues as tasks, label untrusted ones for triage, and
    cancel the tasks of closed issues.

    Args:
        intake: whether this host takes new issues in (with a ``bus:``, only the
            holder of the intake lock does; every host cancels its tasks of closed
            issues).

    Raises:
        GitHubError: the API failed (after its own retries); nothing is remembered,
            so the next poll lists the same changes again.
    """
    try:
        return _sync(store, gh, cfg, home_root, intake)
    except BaseException:
        gh.discard()
        raise


def _sync(store: Store, gh: GitHub, cfg: GitHubSettings, home_root: Path, intake: bool) -> SyncReport:
    report = SyncReport()
    settings = [cfg.repo, cfg.todo_label, sorted(cfg.allowed_authors)]
    place = gh.recall(PLACE)
    if not isinstance(place, dict) or place.get("settings") != settings or (intake and not place.get("intake")):
        report.full = True
        listings = [gh.issues(state="open", labels=cfg.todo_label)] if intake else []
        listings += [
            gh.issues(state="closed", labels=IN_PROGRESS_LABEL),
            gh.issues(state="closed", labels=cfg.todo_label),
        ]
        seen = [x for x in listings if x is not None]
        since = _newest([x.newest for x in seen]) or seen[0].date
        _handle(store, gh, cfg, home_root, [i for x in seen for i in x.issues], intake, report)
        # then the listing every later poll asks for: its ETag gets the next quiet poll a 304
    else:
        since = str(place.get("since") or "")
    for n in range(2):
        listing = gh.issues(state="all", since=_back(since), key=PLACE) if since else None
        if listing is None:
            report.unchanged = not report.full and n == 0 and bool(since)
            break
        _handle(store, gh, cfg, home_root, listing.issues, intake, report)
        newer = _newest([since, listing.newest])
        if newer == since:
            break  # the same URL next time: a 304 while nothing changes
        since = newer or since
    if since:
        gh.remember(PLACE, {"settings": settings, "since": since, "intake": intake})
    gh.commit()
    report.skipped = list(dict.fromkeys(report.skipped))  # the second listing shows them again
    return report


def _back(since: str) -> str:
    """``since`` moved back by ``defaults.GITHUB_SINCE_OVERLAP``."""
    return stamp(datetime.fromisoformat(since) - timedelta(seconds=defaults.GITHUB_SINCE_OVERLAP))


def _newest(stamps: Sequence[str | None]) -> str | None:
    """The latest of GitHub's times (``2026-11-22T09:30:00Z``, all written alike), or None."""
    given = [s for s in stamps if s]
    return max(given) if given else None


def _handle(
    store: Store,
    gh: GitHub,
    cfg: GitHubSettings,
    home_root: Path,
    issues: list[dict[str, Any]],
    intake: bool,
    report: SyncReport,
) -> None:
    """Handle every issue of a listing as the full scan would (see the module's doc);
    what was handled already changes nothing."""
    latest: dict[int, dict[str, Any]] = {}
    for issue in issues:  # one issue may be listed twice (it moved between pages): its latest state
        n = int(issue["number"])
        if n not in latest or str(issue.get("updated_at") or "") >= str(latest[n].get("updated_at") or ""):
            latest[n] = issue
    known = store.find_many(cfg.repo, list(latest))
    new: list[dict[str, Any]] = []
    for n in sorted(latest):  # oldest issue first: the queue keeps their order
        issue = latest[n]
        ref = f"{cfg.repo}#{n}"
        labels = [lb["name"] for lb in issue.get("labels", [])]
        task = known.get(n)
        if issue.get("state") == "closed":
            if task is not None and task.state in OPEN and (cfg.todo_label in labels or IN_PROGRESS_LABEL in labels):
                report.cancelled.append(_cancel(store, home_root, task))
            continue
        if not intake or issue.get("state") != "open" or cfg.todo_label not in labels:
            continue
        login = (issue.get("user") or {}).get("login", "")
        if issue.get("author_association") not in TRUSTED and login not in cfg.allowed_authors:
            if TRIAGE_LABEL not in labels:
                gh.add_labels(n, [TRIAGE_LABEL])
                report.triaged.append(ref)
            continue
        if task is None:
            new.append(issue)
        elif task.state in (TaskState.FAILED, TaskState.CANCELLED):  # labelled todo again: a fresh start
            with store.tx():
                store.set_state(task.id, TaskState.QUEUED, f"{cfg.todo_label} was put back on the issue")
                store.set_claim(task.id, ClaimState.NONE)
            report.added.append(ref)
        else:
            report.skipped.append(ref)
    _store(store, cfg, new, report)


def _store(store: Store, cfg: GitHubSettings, new: list[dict[str, Any]], report: SyncReport) -> None:
    """Store new issues as tasks, ``defaults.GITHUB_INTAKE_BATCH`` to a transaction, then
    their dependencies (a body may name an issue stored later in the same poll)."""
    deps: dict[int, list[int]] = {}
    for i in range(0, len(new), defaults.GITHUB_INTAKE_BATCH):
        with store.tx():
            for issue in new[i : i + defaults.GITHUB_INTAKE_BATCH]:
                n = int(issue["number"])
                labels = [lb["name"] for lb in issue.get("labels", [])]
                prio = "high" if "priority:high" in labels else "low" if "priority:low" in labels else "normal"
                body = issue.get("body") or ""
                try:
                    store.add(
                        issue.get("title") or f"issue {n}",
                        body,
                        labels,
                        prio,
                        source=Source.GITHUB,
                        repo=cfg.repo,
                        number=n,
                        url=issue.get("html_url"),
                    )
                except sqlite3.IntegrityError:  # stored meanwhile by another process of this home
                    report.skipped.append(f"{cfg.repo}#{n}")
                    continue
                report.added.append(f"{cfg.repo}#{n}")
                wanted = [int(m.group(1)) for m in DEP_RE.finditer(body)]
                if wanted:
                    deps[n] = wanted
    if not deps:
        return
    tasks = store.find_many(cfg.repo, [*deps, *(d for ds in deps.values() for d in ds)])
    with store.tx():
        for n, wanted in deps.items():
            for d in wanted:
                task, dep = tasks.get(n), tasks.get(d)
                if task is not None and dep is not None and dep.id != task.id:
                    store.add_dependency(task.id, dep.id)


def _cancel(store: Store, home_root: Path, task: Task) -> str:
    """Cancel the task of an issue closed on GitHub, and tell its agent; one line saying so."""
    store.set_state(task.id, TaskState.CANCELLED, "its issue was closed on GitHub")
    if task.agent and task.state in HELD:
        msg = make(
            task.agent,
            f"Task {task.ref} ({task.title}) was closed on GitHub; stop working on it.",
            sender="miyabi",
            task=str(task.id),
        )
        enqueue(home_root, msg)
    append_event(home_root, EventKind.TASK_CANCELLED, task=task.id, ref=task.ref, reason="issue closed")
    return f"{task.ref}: closed on GitHub, task cancelled"


def report(store: Store, gh: GitHub, cfg: GitHubSettings, home_root: Path) -> list[str]:
    """Tell GitHub what agents reported (tasks whose issue was closed are cancelled by
    :func:`sync`).

    Returns:
        one line per notice told (or given up on).
    """
    done: list[str] = []
    for oid, tid, action, text in store.outbox():
        t = store.get(tid)
        if t.number is None:
            store.outbox_sent(oid)
            continue
        labels = NOTICE_LABELS.get(action, [f"status:{action}"])
        try:
            gh.remove_label(t.number, IN_PROGRESS_LABEL)
            gh.add_labels(t.number, labels)
            said = {"done": "done", "review": "in review"}.get(action, "failed")
            gh.comment(t.number, f"{said} ({t.agent or 'miyabi'}): {text}")
        except GitHubError as e:  # one refused notice never blocks the others
            tries = store.outbox_tried(oid)
            append_event(home_root, EventKind.GITHUB_NOTICE_ERROR, task=tid, ref=t.ref, error=str(e), tries=tries)
            if tries >= defaults.NOTICE_TRIES:
                store.outbox_sent(oid)
                done.append(f"{t.ref}: gave up telling GitHub status:{action} after {tries} tries: {e}")
            continue
        store.outbox_sent(oid)
        done.append(f"{t.ref}: labelled status:{action}")
    return done
