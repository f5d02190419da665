"""GitHub issues in, agents told: intake, claims and dispatch.

:func:`sync` turns open issues that carry the todo label into tasks. Pull requests
are skipped; issues by authors who are not OWNER, MEMBER or COLLABORATOR (or listed
in ``allowed_authors``) are not routed and get ``status:needs-triage``. "depends on #N"
or "blocked by #N" in a body becomes a dependency on the task of issue N, when miyabi
knows it (linked after every new issue of the poll is stored, since GitHub lists the
newest first). An issue labelled todo again after its task failed or was cancelled is
queued afresh; one closed on GitHub cancels its open task.

:class:`Dispatcher` tells an agent about a task the scheduler assigned. For an issue
it first claims it: the claim is the removal of the todo label, which GitHub grants
to one caller only (a second ``DELETE`` of the label answers 404), so two
controllers polling one repository never both take an issue; the loser cancels its
copy of the task. Then it adds ``status:in-progress`` and ``assigned:<agent>``,
comments once, and sends the agent the task.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from miyabi.github import DEFAULT_API, GitHub, GitHubError
from miyabi.mailbox import append_event, inbox, make
from miyabi.scheduler import task_message
from miyabi.tasks import Store, Task, TaskError

TRUSTED = ("OWNER", "MEMBER", "COLLABORATOR")
TRIAGE_LABEL = "status:needs-triage"
NOTICE_TRIES = 5
"""Attempts at telling GitHub a task's outcome before giving up (with an event)."""
DEP_RE = re.compile(r"(?i)\b(?:depends on|blocked by)\s+#(\d+)")


@dataclass(frozen=True)
class GitHubConfig:
    """The layout's ``github:`` section.

    Attributes:
        repo: ``owner/name``.
        api_url: API root (GitHub Enterprise: change it).
        token_env: environment variable holding the token.
        todo_label: issues with this label are picked up.
        poll_interval: seconds between polls.
        allowed_authors: logins routed even without OWNER/MEMBER/COLLABORATOR.
    """

    repo: str
    api_url: str = DEFAULT_API
    token_env: str = "GITHUB_TOKEN"
    todo_label: str = "status:todo"
    poll_interval: float = 60.0
    allowed_authors: tuple[str, ...] = ()

    def client(self, home_root: Path | None = None) -> GitHub:
        """A client with the token from ``token_env`` (anonymous if it is unset),
        keeping its ETags under ``state/`` of the home so that polls by later
        processes are conditional too."""
        etags = home_root / "state" / "github-etags.json" if home_root else None
        return GitHub(self.repo, os.environ.get(self.token_env) or None, self.token_env, self.api_url, etag_file=etags)


@dataclass
class SyncReport:
    """What one poll did."""

    unchanged: bool = False
    added: list[str] = field(default_factory=list)
    triaged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def sync(store: Store, gh: GitHub, cfg: GitHubConfig) -> SyncReport:
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
            if known.state in ("failed", "cancelled"):  # labelled todo again: a fresh start
                store.set_state(known.id, "queued", f"{cfg.todo_label} was put back on the issue")
                store.set_claim(known.id, "")
                report.added.append(ref)
            else:
                report.skipped.append(ref)
            continue
        prio = "high" if "priority:high" in labels else "low" if "priority:low" in labels else "normal"
        store.add(issue.get("title") or f"issue {n}", issue.get("body") or "", labels, prio,
                  source="github", repo=cfg.repo, number=n, url=issue.get("html_url"))
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


def report(store: Store, gh: GitHub, cfg: GitHubConfig, home_root: Path) -> list[str]:
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
        try:
            gh.remove_label(t.number, "status:in-progress")
            gh.add_labels(t.number, [f"status:{action}"])
            gh.comment(t.number, f"{'done' if action == 'done' else 'failed'} ({t.agent or 'miyabi'}): {text}")
        except GitHubError as e:  # one refused notice never blocks the others
            tries = store.outbox_tried(oid)
            append_event(home_root, "github-notice-error", task=tid, ref=t.ref, error=str(e), tries=tries)
            if tries >= NOTICE_TRIES:
                store.outbox_sent(oid)
                done.append(f"{t.ref}: gave up telling GitHub status:{action} after {tries} tries: {e}")
            continue
        store.outbox_sent(oid)
        done.append(f"{t.ref}: labelled status:{action}")
    closed = [*(gh.issues(state="closed", labels="status:in-progress") or []), *(gh.issues(state="closed", labels=cfg.todo_label) or [])]
    for issue in closed:
        c = store.find(cfg.repo, int(issue["number"]))
        if c is None or c.state not in ("queued", "blocked", "assigned", "in_progress"):
            continue
        store.set_state(c.id, "cancelled", "its issue was closed on GitHub")
        if c.agent and c.state in ("assigned", "in_progress"):
            msg = make(c.agent, f"Task {c.ref} ({c.title}) was closed on GitHub; stop working on it.", sender="miyabi", task=str(c.id))
            inbox(home_root, c.agent).put(msg)
        append_event(home_root, "task-cancelled", task=c.id, ref=c.ref, reason="issue closed")
        done.append(f"{c.ref}: closed on GitHub, task cancelled")
    gh.commit()
    return done


CLAIM_RETRY = 60.0
"""Seconds a task whose claim failed (GitHub error) waits before it is tried again."""


class Dispatcher:
    """Tells agents about their tasks (claiming issues first).

    Args:
        store: the task store.
        home_root: the miyabi home (inboxes, events); its path also names this
            controller in claim comments.
        cfg, gh: the GitHub settings and client, or None without a ``github:`` section.
    """

    def __init__(self, store: Store, home_root: Path, cfg: GitHubConfig | None = None, gh: GitHub | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.home = home_root
        self.cfg = cfg
        self.gh = gh
        self.clock = clock
        self.ident = hashlib.sha1(str(home_root).encode()).hexdigest()[:10]
        self.not_before: dict[int, float] = {}

    def hold(self, task: Task) -> bool:
        """True while a task whose claim failed waits out CLAIM_RETRY."""
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
        if task.claim == "claimed":
            return True
        resumed = task.claim == "claiming"
        self.store.set_claim(task.id, "claiming")
        won = self.gh.remove_label(task.number, self.cfg.todo_label)
        if not won and resumed:
            comments = [c for c in self.gh.comments(task.number) if "by miyabi" in c]
            won = not comments or any(f"[{self.ident}]" in c for c in comments)
        self.store.set_claim(task.id, "claimed" if won else "")
        return won

    def __call__(self, task: Task, agent: str) -> None:
        if task.source == "github":
            if self.gh is None or self.cfg is None or task.number is None:
                self.store.set_state(task.id, "queued", "no github: section to claim the issue with", expect=("assigned",))
                self.not_before[task.id] = self.clock() + CLAIM_RETRY
                return
            try:
                first = task.claim != "claimed"
                if not self.claim(task, agent):
                    self.store.set_state(task.id, "cancelled", f"claimed elsewhere ({self.cfg.todo_label} was gone)", expect=("assigned",))
                    append_event(self.home, "claim-lost", task=task.id, ref=task.ref)
                    return
                if first:
                    self.gh.add_labels(task.number, ["status:in-progress", f"assigned:{agent}"])
                    self.gh.comment(task.number, f"assigned to {agent} by miyabi [{self.ident}]")
                else:  # ours already: back from a failed agent
                    self.gh.add_labels(task.number, [f"assigned:{agent}"])
            except GitHubError as e:
                try:
                    self.store.set_state(task.id, "queued", f"claim failed: {e}", expect=("assigned",))
                except TaskError:
                    pass
                self.not_before[task.id] = self.clock() + CLAIM_RETRY
                append_event(self.home, "claim-error", task=task.id, ref=task.ref, error=str(e))
                return
        msg = make(agent, task_message(task), sender="miyabi", task=str(task.id))
        inbox(self.home, agent).put(msg)
        append_event(self.home, "task-assigned", agent=agent, task=task.id, ref=task.ref, id=msg.id)
