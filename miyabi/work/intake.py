"""GitHub issues in, outcomes out.

:func:`sync` turns open issues that carry the todo label into tasks. Pull requests
are skipped; issues by authors who are not OWNER, MEMBER or COLLABORATOR (or listed
in ``allowed_authors``) are not routed and get ``status:needs-triage``. "depends on #N"
or "blocked by #N" in a body becomes a dependency on the task of issue N, when miyabi
knows it (linked after every new issue of the poll is stored, since GitHub lists the
newest first). An issue labelled todo again after its task failed or was cancelled is
queued afresh.

:func:`report` tells GitHub what agents reported (the outbox the task store fills in
the same transaction as ``task done``/``fail``), and cancels tasks whose issue was
closed. Claiming and telling agents is :mod:`miyabi.work.dispatch`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from miyabi import defaults
from miyabi.config.settings import GitHubSettings
from miyabi.events import append_event
from miyabi.messaging.mailbox import enqueue, make
from miyabi.work.github import GitHub, GitHubError
from miyabi.work.tasks import HELD, OPEN, ClaimState, Source, Store, TaskState

TRUSTED = ("OWNER", "MEMBER", "COLLABORATOR")
TRIAGE_LABEL = "status:needs-triage"
DEP_RE = re.compile(r"(?i)\b(?:depends on|blocked by)\s+#(\d+)")
NEEDS_HUMAN_LABEL = "status:needs-human"
NOTICE_LABELS = {
    "done": ["status:done"],
    "failed": ["status:failed"],
    "needs-human": ["status:failed", NEEDS_HUMAN_LABEL],
    "review": [defaults.REVIEW_LABEL],
}
"""Labels each outbox action puts on the issue (``needs-human``: a task that used its
last attempt, :meth:`~miyabi.work.tasks.Store.hand_back`, or its last verify round;
``review``: verified, with a pull request open)."""


@dataclass
class SyncReport:
    """What one poll did."""

    unchanged: bool = False
    added: list[str] = field(default_factory=list)
    triaged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def sync(store: Store, gh: GitHub, cfg: GitHubSettings) -> SyncReport:
    """Poll once: store new todo issues as tasks, label untrusted ones for triage.

    Raises:
        GitHubError: the API failed (after its own retries).
    """
    report = SyncReport()
    issues = gh.issues(labels=cfg.todo_label)
    if issues is None:
        report.unchanged = True
        return report
    bodies: dict[int, str] = {}
    for issue in issues:
        n = int(issue["number"])
        ref = f"{cfg.repo}#{n}"
        labels = [lb["name"] for lb in issue.get("labels", [])]
        login = (issue.get("user") or {}).get("login", "")
        if issue.get("author_association") not in TRUSTED and login not in cfg.allowed_authors:
            if TRIAGE_LABEL not in labels:
                gh.add_labels(n, [TRIAGE_LABEL])
                report.triaged.append(ref)
            continue
        known = store.find(cfg.repo, n)
        if known is not None:
            if known.state in (TaskState.FAILED, TaskState.CANCELLED):  # labelled todo again: a fresh start
                store.set_state(known.id, TaskState.QUEUED, f"{cfg.todo_label} was put back on the issue")
                store.set_claim(known.id, ClaimState.NONE)
                report.added.append(ref)
            else:
                report.skipped.append(ref)
            continue
        prio = "high" if "priority:high" in labels else "low" if "priority:low" in labels else "normal"
        store.add(
            issue.get("title") or f"issue {n}",
            issue.get("body") or "",
            labels,
            prio,
            source=Source.GITHUB,
            repo=cfg.repo,
            number=n,
            url=issue.get("html_url"),
        )
        bodies[n] = issue.get("body") or ""
        report.added.append(ref)
    # Dependencies once every new issue is a task: GitHub lists the newest first, and
    # "depends on #2" may name an issue further down the list.
    for n, body in bodies.items():
        task = store.find(cfg.repo, n)
        for m in DEP_RE.finditer(body):
            dep = store.find(cfg.repo, int(m.group(1)))
            if task is not None and dep is not None and dep.id != task.id:
                store.add_dependency(task.id, dep.id)
    gh.commit()
    return report


def report(store: Store, gh: GitHub, cfg: GitHubSettings, home_root: Path) -> list[str]:
    """Tell GitHub what agents reported, and cancel tasks whose issue was closed.

    Returns:
        one line per thing done.
    """
    done: list[str] = []
    for oid, tid, action, text in store.outbox():
        t = store.get(tid)
        if t.number is None:
            store.outbox_sent(oid)
            continue
        labels = NOTICE_LABELS.get(action, [f"status:{action}"])
        try:
            gh.remove_label(t.number, "status:in-progress")
            gh.add_labels(t.number, labels)
            said = {"done": "done", "review": "in review"}.get(action, "failed")
            gh.comment(t.number, f"{said} ({t.agent or 'miyabi'}): {text}")
        except GitHubError as e:  # one refused notice never blocks the others
            tries = store.outbox_tried(oid)
            append_event(home_root, "github-notice-error", task=tid, ref=t.ref, error=str(e), tries=tries)
            if tries >= defaults.NOTICE_TRIES:
                store.outbox_sent(oid)
                done.append(f"{t.ref}: gave up telling GitHub status:{action} after {tries} tries: {e}")
            continue
        store.outbox_sent(oid)
        done.append(f"{t.ref}: labelled status:{action}")
    closed = [
        *(gh.issues(state="closed", labels="status:in-progress") or []),
        *(gh.issues(state="closed", labels=cfg.todo_label) or []),
    ]
    for issue in closed:
        c = store.find(cfg.repo, int(issue["number"]))
        if c is None or c.state not in OPEN:
            continue
        store.set_state(c.id, TaskState.CANCELLED, "its issue was closed on GitHub")
        if c.agent and c.state in HELD:
            msg = make(
                c.agent,
                f"Task {c.ref} ({c.title}) was closed on GitHub; stop working on it.",
                sender="miyabi",
                task=str(c.id),
            )
            enqueue(home_root, msg)
        append_event(home_root, "task-cancelled", task=c.id, ref=c.ref, reason="issue closed")
        done.append(f"{c.ref}: closed on GitHub, task cancelled")
    gh.commit()
    return done
