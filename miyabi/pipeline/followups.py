"""Work that comes after a pull request, and work that monitoring finds.

:class:`FollowUps` watches the pull requests the pipeline opened:

- a comment on one (a review comment on its diff too) that starts with the trigger
  (``github.fix_trigger``, default ``@ai-fix``), by an author GitHub calls OWNER,
  MEMBER or COLLABORATOR or one in ``github.allowed_authors``, becomes a follow-up
  task for a new instance of the same pool, in the same worktree and on the same
  branch: its verify gate pushes to the same pull request;
- a check run on the pull request's head commit that ends ``failure`` or
  ``timed_out`` becomes the same kind of follow-up, with the check's name and summary;
- comments by others get one polite refusal; miyabi's own comments (its token's
  login, or its marker) and bots' are never acted on;
- a pull request merged or closed unmerged marks its worktree for removal.

Each comment and check run is acted on once: its id is recorded (``pr_seen``) in the
same database as the tasks it makes.

:func:`file_fix` is monitoring's way to create work: a fix task (and, with GitHub, an
issue carrying the todo label, which intake turns into the task) linked to its
cause, never twice for one cause while its fix is open (``causes``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.config.settings import GitHubSettings
from miyabi.database import Schema
from miyabi.events import EventKind, append_event
from miyabi.pipeline.records import Records, Worktree, WorktreeState
from miyabi.stopping import Stopped
from miyabi.work.github import GitHub, GitHubError
from miyabi.work.intake import TRUSTED
from miyabi.work.model import OPEN, Source, Task, TaskError
from miyabi.work.store import Store

log = logging.getLogger("miyabi.pipeline")

TABLES = """
CREATE TABLE IF NOT EXISTS pr_seen (
  kind TEXT NOT NULL,
  id INTEGER NOT NULL,
  pr INTEGER NOT NULL,
  action TEXT NOT NULL,
  time REAL NOT NULL,
  PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS causes (
  cause TEXT PRIMARY KEY,
  task INTEGER,
  issue INTEGER,
  time REAL NOT NULL
);
"""

SCHEMA = Schema("follow-ups", (TABLES,))
"""The follow-ups' tables in the task database (:mod:`miyabi.database`; the first step
is idempotent: versions before schema versions created them when missing)."""

FAILED_CHECKS = ("failure", "timed_out")


def is_bot(comment: dict[str, Any]) -> bool:
    user = comment.get("user") or {}
    return user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]")


def refusal(login: str, trigger: str) -> str:
    return (
        f"@{login} thank you. Only the repository's maintainers can ask miyabi for changes with `{trigger}`; "
        f"a maintainer can repeat the request. {defaults.MARKER}"
    )


class FollowUps:
    """Follow-ups on the pipeline's pull requests, polled by one thread.

    Args:
        store: a task store connection of the polling thread's own.
        gh: the GitHub client.
        cfg: the layout's ``github:`` section (trigger, allowed authors).
        home_root: the miyabi home (events).
    """

    def __init__(self, store: Store, gh: GitHub, cfg: GitHubSettings, home_root: Path) -> None:
        self.store = store
        self.records = Records(store)
        store.migrate(SCHEMA)
        self.gh = gh
        self.cfg = cfg
        self.home = home_root
        self._me: str | None = None
        self._me_asked = False

    def me(self) -> str | None:
        if not self._me_asked:
            self._me = self.gh.me()
            self._me_asked = True
        return self._me

    def _seen(self, kind: str, id_: int) -> bool:
        return bool(self.store.rows("SELECT 1 FROM pr_seen WHERE kind=? AND id=?", (kind, id_)))

    def _record(self, kind: str, id_: int, pr: int, action: str) -> bool:
        """Record that ``kind`` ``id_`` was acted on; False when it already was (another pass first)."""
        try:
            with self.store.tx() as db:
                db.execute(
                    "INSERT INTO pr_seen (kind, id, pr, action, time) VALUES (?,?,?,?,?)",
                    (kind, id_, pr, action, self.store.clock()),
                )
            return True
        except sqlite3.IntegrityError:
            return False

    def poll(self) -> list[str]:
        """One pass over the open pull requests; returns one line per thing done.

        Raises:
            GitHubError: GitHub failed (after the client's retries).
        """
        done: list[str] = []
        for w in self.records.worktrees(WorktreeState.REVIEW):
            if w.pr_number is None:
                continue
            try:  # one pull request's trouble never keeps the others from being served
                done += self._pull(w)
            except GitHubError as e:
                log.warning("follow-ups: #%s: %s", w.pr_number, e)
                append_event(self.home, EventKind.GITHUB_ERROR, error=str(e), part="follow-ups", number=w.pr_number)
        return done

    def _pull(self, w: Worktree) -> list[str]:
        assert w.pr_number is not None
        pull = self.gh.pull(w.pr_number)
        closed = closed_pull(self.records, w, pull, self.home)
        if closed:
            return [closed]
        done: list[str] = []
        comments = [("comment", c) for c in self.gh.issue_comments(w.pr_number)]
        comments += [("review", c) for c in self.gh.review_comments(w.pr_number)]
        for kind, c in comments:
            line = self._comment(w, kind, c)
            if line:
                done.append(line)
        sha = str((pull.get("head") or {}).get("sha") or "")
        return done + (self._checks(w, sha) if sha else [])

    def _comment(self, w: Worktree, kind: str, c: dict[str, Any]) -> str | None:
        assert w.pr_number is not None
        cid = int(c["id"])
        if self._seen(kind, cid):
            return None
        body = str(c.get("body") or "")
        login = str((c.get("user") or {}).get("login", ""))
        if (
            is_bot(c)
            or defaults.MARKER in body
            or (login and login == self.me())
            or not body.lstrip().startswith(self.cfg.fix_trigger)
        ):
            self._record(kind, cid, w.pr_number, "ignored")
            return None
        if c.get("author_association") not in TRUSTED and login not in self.cfg.allowed_authors:
            if self._record(kind, cid, w.pr_number, "refused"):
                self.gh.comment(w.pr_number, refusal(login, self.cfg.fix_trigger))
                append_event(self.home, EventKind.FOLLOW_UP_REFUSED, number=w.pr_number, comment=cid, author=login)
            return f"#{w.pr_number}: refused {kind} {cid} by {login}"
        ask = body.lstrip()[len(self.cfg.fix_trigger) :].strip()
        where = f" on {c['path']}" if c.get("path") else ""
        said = "review comment" if kind == "review" else "comment"
        t = self._follow_up(w, f"{said} by {login}{where}", ask or "(no details given)", f"{kind}:{cid}")
        if t is None or not self._record(kind, cid, w.pr_number, f"task {t.id}"):
            return None
        return f"#{w.pr_number}: {kind} {cid} by {login} became task {t.id}"

    def _checks(self, w: Worktree, sha: str) -> list[str]:
        """Failing check runs of the pull request's head commit ``sha``: a follow-up each,
        while none is open on the branch, and at most ``defaults.CHECK_FOLLOW_UPS`` per
        pull request (then one comment asks a person)."""
        assert w.pr_number is not None
        out: list[str] = []
        for run in self.gh.check_runs(sha):
            rid = int(run["id"])
            if (
                run.get("status") != "completed"
                or run.get("conclusion") not in FAILED_CHECKS
                or self._seen("check", rid)
            ):
                continue
            if self.store.rows(
                "SELECT 1 FROM tasks WHERE branch=? AND state IN ('queued','assigned','in_progress','verifying')",
                (w.branch,),
            ):
                continue  # a follow-up is at work on the branch: its push brings new check runs
            made = self.store.rows(
                "SELECT COUNT(*) FROM pr_seen WHERE kind='check' AND pr=? AND action LIKE 'task %'", (w.pr_number,)
            )
            if int(made[0][0]) >= defaults.CHECK_FOLLOW_UPS:
                if self._record("check", rid, w.pr_number, "needs-human"):
                    self.gh.comment(
                        w.pr_number,
                        f"Check {run.get('name')} still fails after {defaults.CHECK_FOLLOW_UPS} follow-ups "
                        f"by miyabi; it needs a person. {defaults.MARKER}",
                    )
                continue
            output = run.get("output") or {}
            summary = str(output.get("summary") or output.get("title") or "(no summary)")
            t = self._follow_up(w, f"check {run.get('name')} {run.get('conclusion')}", summary, f"check:{rid}")
            if t is not None and self._record("check", rid, w.pr_number, f"task {t.id}"):
                out.append(f"#{w.pr_number}: check {run.get('name')} failed; task {t.id}")
        return out

    def _follow_up(self, w: Worktree, what: str, ask: str, key: str) -> Task | None:
        """A task on ``w``'s branch, for the pool of the task that opened it."""
        try:
            parent = self.store.get(w.task)
        except TaskError:
            return None
        if parent.pool is None:
            return None
        title = f"{parent.title} (follow-up: {what})"[:200]
        body = (
            f"{ask}\n\nThis follows up task {parent.ref} on branch {w.branch}; its pull request is #{w.pr_number}. "
            "Work in this worktree, on this branch; what you leave is verified and pushed to the same pull request."
        )
        try:
            t = self.store.add(
                title,
                body,
                [f"agent:{parent.pool}", *[lb for lb in parent.labels if not lb.startswith("agent:")]],
                parent.priority,
                source=Source.LOCAL,
                key=f"pr{w.pr_number}:{key}",
                parent=parent.id,
                pool=parent.pool,
                branch=w.branch,
            )
        except TaskError:  # its key exists: made by an earlier pass
            return None
        append_event(
            self.home, EventKind.FOLLOW_UP, task=t.id, parent=parent.id, number=w.pr_number, cause=key, what=what
        )
        log.info("pull request #%s: %s; task %s", w.pr_number, what, t.id)
        return self.store.get(t.id)

    def run(self, stop: threading.Event, every: float) -> None:
        """Poll every ``every`` seconds until ``stop``; errors are logged, never fatal."""
        try:
            while not stop.is_set():
                try:
                    for line in self.poll():
                        log.info("follow-ups: %s", line)
                except Stopped:
                    raise
                except Exception as e:  # GitHubError, TaskError, sqlite3.Error, GitError, OSError: never fatal
                    log.warning("follow-ups: %s: %s", type(e).__name__, e, exc_info=True)
                    append_event(self.home, EventKind.GITHUB_ERROR, error=f"{type(e).__name__}: {e}", part="follow-ups")
                stop.wait(every)
        except Stopped:
            pass


def closed_pull(records: Records, w: Worktree, pull: dict[str, Any], home_root: Path) -> str | None:
    """Mark ``w`` merged or closed when its pull request ``pull`` is (it is removed
    next); returns a line saying so, or None while it is open."""
    if pull.get("state") != "closed":
        return None
    state = WorktreeState.MERGED if pull.get("merged") else WorktreeState.CLOSED
    records.set_worktree_state(w.repo, w.branch, state)
    kind = EventKind.PULL_REQUEST_MERGED if state == WorktreeState.MERGED else EventKind.PULL_REQUEST_CLOSED
    append_event(home_root, kind, number=w.pr_number, branch=w.branch)
    return f"#{w.pr_number} {state}: its worktree {w.path} goes"


def closed_pulls(records: Records, gh: GitHub, home_root: Path) -> list[str]:
    """Ask GitHub about each pull request under review and mark the merged or closed
    ones (:func:`closed_pull`).

    Raises:
        GitHubError: GitHub failed.
    """
    done: list[str] = []
    for w in records.worktrees(WorktreeState.REVIEW):
        if w.pr_number is not None:
            line = closed_pull(records, w, gh.pull(w.pr_number), home_root)
            if line:
                done.append(line)
    return done


def file_fix(
    store: Store,
    gh: GitHub | None,
    cfg: GitHubSettings | None,
    home_root: Path,
    cause: str,
    title: str,
    body: str,
    labels: Sequence[str] = (),
) -> str | None:
    """File the fix task for ``cause``: with GitHub, an issue labelled todo (intake makes
    it a task); without, a local task. Never twice for one cause while the first is
    open: once it is finished, the cause showing again files a new one. Returns what
    was filed (None: it is filed already).

    Raises:
        GitHubError: GitHub refused the issue (nothing is recorded: the next call tries again).
    """
    store.migrate(SCHEMA)  # once per connection
    known = store.rows("SELECT task, issue FROM causes WHERE cause=?", (cause,))
    if known:
        tid, issue_no = known[0]["task"], known[0]["issue"]
        try:
            earlier = (
                store.get(tid) if tid is not None else (store.find(cfg.repo, issue_no) if cfg is not None else None)
            )
        except TaskError:
            earlier = None
        if earlier is None or earlier.state in OPEN:  # still being fixed (or its issue not polled yet)
            append_event(home_root, EventKind.FIX_ALREADY_FILED, cause=cause, task=tid, issue=issue_no)
            return None
        with store.tx() as db:  # fixed since, and failing again: a new fix
            db.execute("DELETE FROM causes WHERE cause=?", (cause,))
    text = f"{body}\n\nFiled by miyabi for: {cause}"
    issue = task = None
    if gh is not None and cfg is not None:
        made = gh.create_issue(title, text + f"\n{defaults.MARKER}", [cfg.todo_label, *labels])
        issue = int(made["number"])
        what = f"issue #{issue}"
    else:
        try:
            t = store.add(title, text, list(labels), "high", source=Source.LOCAL)
        except TaskError:
            return None
        task = t.id
        what = f"task {t.id}"
    try:
        with store.tx() as db:
            db.execute(
                "INSERT INTO causes (cause, task, issue, time) VALUES (?,?,?,?)", (cause, task, issue, store.clock())
            )
    except sqlite3.IntegrityError:
        return None
    append_event(home_root, EventKind.FIX_FILED, cause=cause, task=task, issue=issue, title=title)
    return what
