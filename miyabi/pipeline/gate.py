"""The verify gate: the repository's checks run on a task's work in its worktree (in a
worker thread, never the controller's); a failure goes back to the agent as its next
round (after the last round the task needs a person), a pass lands: pushed with a pull
request (``pipeline: github``) or merged into the base branch behind the checks
(``pipeline: local``), where the base branch only moves once the checks pass on the
merge result."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from miyabi import defaults
from miyabi.config.model import Layout, PipelineMode, Pool
from miyabi.errors import MiyabiError
from miyabi.events import EventKind, append_event
from miyabi.files import private_dir
from miyabi.messaging.mailbox import enqueue, make
from miyabi.pipeline import convention as conv
from miyabi.pipeline.approvals import Approval, Approvals, ApprovalState
from miyabi.pipeline.followups import file_fix
from miyabi.pipeline.git import GitError, Repository
from miyabi.pipeline.locks import RepoLocks
from miyabi.pipeline.records import InstanceState, Records, WorktreeState
from miyabi.pipeline.verify import Run, StepResult, clean_env, run_steps
from miyabi.times import how_often
from miyabi.work.github import GitHub
from miyabi.work.model import Source, Task, TaskState
from miyabi.work.speckit import tick_file
from miyabi.work.store import Store
from miyabi.work.taskspec import speckit_line, task_tests

log = logging.getLogger("miyabi.pipeline")


def convention_at_base(repo: Repository, pool: Pool) -> tuple[conv.Convention, str]:
    """The repository's conventions, read at the base branch, and that branch."""
    start = pool.base_branch or repo.current_branch() or "HEAD"
    found = conv.load(lambda rel: repo.read_at(start, rel))
    return found, pool.base_branch or found.base_branch or start


def feedback(task: Task, failed: StepResult, round_: int, rounds: int, log_path: Path, note: str = "") -> str:
    """The message an agent gets when a check fails on its work."""
    tail = "\n".join(failed.tail) or "(it printed nothing)"
    return (
        f"miyabi: the checks failed on task {task.ref} (round {round_} of {rounds}){note}.\n"
        f"{failed.describe()}. Its last lines:\n{tail}\n\n"
        f'Fix it in this worktree, then run: miyabi task done {task.id} --note "what you changed". '
        f"Full log: {log_path}"
    )


def landed_state(t: Task) -> TaskState:
    """Where a task whose work merged behind the checks goes: ``verified`` for a story's
    child (its story's deploy and checks make it done), else ``done``."""
    return TaskState.VERIFIED if t.story is not None else TaskState.DONE


def results_text(run: Run) -> list[str]:
    """``- test `pytest -q`: passed in 1.2 s`` per command."""
    return [
        f"- {r.step.stage} `{r.step.command}`: {'passed' if r.passed else 'FAILED'} in {r.seconds:.1f} s"
        for r in run.results
    ]


@dataclass(frozen=True)
class SelfMerge:
    """A merge that landed in the self pool's repository (``self: {pool: NAME}``):
    miyabi's own checkout moved from ``before`` to ``after``."""

    task: int
    repo: Path
    base: str
    before: str
    after: str


class Gate:
    """The verify gate of one controller's pipeline.

    Args:
        store: the task store (thread-safe).
        layout: the running layout (replaced when a changed one is adopted).
        home_root: the miyabi home (logs under ``logs/verify/``, staging worktrees
            under ``worktrees/.staging/``, events).
        locks: the repositories' locks.
        stop: set when the controller stops (running checks end).
        track: where running checks' process groups are recorded.
        gh: the GitHub client, for ``pipeline: github``.
        on_self_merge: called (in the worker thread) when a merge of the self pool
            landed: the controller then upgrades itself.
    """

    def __init__(
        self,
        store: Store,
        layout: Layout,
        home_root: Path,
        locks: RepoLocks,
        stop: threading.Event,
        track: Path,
        gh: GitHub | None = None,
        on_self_merge: Callable[[SelfMerge], None] | None = None,
    ) -> None:
        self.store = store
        self.records = Records(store)
        self.approvals = Approvals(store)
        self.on_self_merge = on_self_merge
        self.layout = layout
        self.home = home_root
        self.locks = locks
        self.stop = stop
        self.track = track
        self.gh = gh
        self.again: dict[int, int] = {}
        """Task → how many times in a row its branch moved while its checks ran."""

    def verify(self, task_id: int) -> None:
        """Run the checks on the work of task ``task_id`` (verifying) and act on the
        result: a failed round goes back to its agent, a pass lands (a pull request or
        a local merge behind the checks). Runs in a worker thread."""
        t = self.store.get(task_id)
        pool = self.layout.pool(t.pool or "")
        if t.state != TaskState.VERIFYING or pool is None or t.branch is None:
            return
        record = self.records.worktree(pool.repo, t.branch)
        if record is None or not record.path.is_dir():
            self.store.round_failed(t.id, f"its worktree is gone ({record.path if record else t.branch})", 1)
            return
        with self.locks.repo(pool.repo):
            repo = Repository(pool.repo, self.layout.secret_env)
            try:
                found, _ = convention_at_base(repo, pool)
            except conv.ConventionError as e:
                self.store.round_failed(t.id, str(e), 1)
                return
            work = Repository(record.path, self.layout.secret_env)
            changed = work.changed(record.base)
            # what is checked is a commit, and that very commit is what lands
            self._commit(t, record.path)
            if pool.pipeline == PipelineMode.GITHUB:  # the pull request carries the ticked box
                tick_box(t, pool, record.path, self.layout.secret_env)
            sha = work.sha("HEAD")
        if pool.approve and not self._approval_lets_check(t, sha, found, record.path):
            return
        round_ = t.rounds + 1
        logfile = self.home / "logs" / "verify" / f"{t.id}-{round_}.log"
        header = [
            f"task {t.ref} round {round_} of {found.max_rounds}, worktree {record.path}, branch {t.branch}",
            *found.describe(),
        ]
        touched = found.violations(changed)
        if touched:
            run = Run(
                results=[
                    StepResult(
                        conv.Step("protected", "changed paths the repository protects", 0), 1, 0.0, tail=tuple(touched)
                    )
                ],
                log=logfile,
            )
            run_steps([], record.path, logfile, {}, header=[*header, "protected paths changed: " + ", ".join(touched)])
        else:
            run = run_steps(
                checks_of(found, t),
                record.path,
                logfile,
                clean_env(self.layout.secret_env),
                header=header,
                stop=self.stop,
                track=self.track,
            )
        if run.stopped:
            return
        if not run.passed:
            self._round_failed(t, run, found, round_, logfile)
            return
        if not self._still(t.id, record.path, sha, found.max_rounds):
            return
        append_event(
            self.home,
            EventKind.VERIFY_PASSED,
            task=t.id,
            ref=t.ref,
            round=round_,
            log=str(logfile),
            commit=sha,
            checks_seconds=round(sum(r.seconds for r in run.results), 3),
        )
        if pool.pipeline == PipelineMode.GITHUB:
            self._open_pull(t, pool, record.path, record.base, run, sha, found.max_rounds)
        else:
            self._merge_locally(t, pool, record.path, record.base, run, found, round_, sha)

    def _still(self, task_id: int, worktree: Path, sha: str, max_rounds: int) -> bool:
        """Whether the checked commit may land: the task is still verifying (not
        cancelled meanwhile) and the agent added no commit while the checks ran (then
        it is checked again, at the next pass)."""
        if self.store.get(task_id).state != TaskState.VERIFYING:
            return False
        if Repository(worktree, self.layout.secret_env).sha("HEAD") != sha:
            again = self.again[task_id] = self.again.get(task_id, 0) + 1
            append_event(
                self.home,
                EventKind.VERIFY_AGAIN,
                task=task_id,
                reason="the branch moved while the checks ran",
                times=again,
            )
            if again >= defaults.PIPELINE_TRIES:  # it keeps committing after saying done: a round, said so
                self.again.pop(task_id, None)
                t = self.store.get(task_id)
                why = (
                    f"you committed again while the checks ran, {how_often(again)}; "
                    "stop changing the branch after `miyabi task done`"
                )
                run = Run(
                    results=[StepResult(conv.Step("verify", "the checks on your last commit", 0), 1, 0.0, tail=(why,))]
                )
                self._round_failed(
                    t,
                    run,
                    conv.Convention(max_rounds=max_rounds),
                    t.rounds + 1,
                    self.home / "logs" / "verify" / f"{task_id}-{t.rounds + 1}.log",
                )
            return False
        self.again.pop(task_id, None)
        return True

    def _round_failed(
        self, t: Task, run: Run, found: conv.Convention, round_: int, logfile: Path, note: str = ""
    ) -> None:
        failed = run.failed
        assert failed is not None
        why = failed.describe() + note
        tail = "\n".join(failed.tail[-defaults.VERIFY_TAIL_LINES :])
        text = (
            f"verify failed {how_often(round_)} (of {found.max_rounds}); it needs a person. {why}.\n\n"
            f"```\n{tail}\n```\nLog: {logfile}"
        )
        after = self.store.round_failed(t.id, why, found.max_rounds, text=text)
        append_event(
            self.home,
            EventKind.VERIFY_FAILED,
            task=t.id,
            ref=t.ref,
            round=round_,
            of=found.max_rounds,
            command=failed.step.command,
            exit_code=failed.exit_code,
            log=str(logfile),
            state=str(after.state),
        )
        live = {i.name for i in self.records.instances(InstanceState.READY)}
        if after.state == TaskState.IN_PROGRESS and after.agent and after.agent not in live:
            # its instance ended meanwhile (the watchdog gave up on it): a new one takes it, in the same worktree
            self.store.set_state(
                t.id, TaskState.QUEUED, f"{after.agent} is gone; back to the queue", expect=(TaskState.IN_PROGRESS,)
            )
        elif after.state == TaskState.IN_PROGRESS and after.agent:
            msg = make(
                after.agent,
                feedback(after, failed, round_, found.max_rounds, logfile, note),
                sender="miyabi",
                task=str(t.id),
            )
            enqueue(self.home, msg)

    def _commit(self, t: Task, worktree: Path) -> str | None:
        message = (
            f"{t.ref}: {t.title}\n\nLeft uncommitted by {t.agent or 'the agent'}; committed by miyabi (task {t.id})."
        )
        return Repository(worktree, self.layout.secret_env).commit_all(message)

    def _open_pull(self, t: Task, pool: Pool, worktree: Path, base: str, run: Run, sha: str, max_rounds: int) -> None:
        """A pass in ``pipeline: github``: push the checked commit, open (or find) the
        pull request that closes the issue, label it; the issue hears of it through
        the outbox."""
        if self.gh is None:
            raise MiyabiError("pipeline: github needs the layout's github: section")
        assert t.branch is not None
        with self.locks.repo(pool.repo):
            if not self._still(t.id, worktree, sha, max_rounds):
                return
            Repository(worktree, self.layout.secret_env).push(pool.remote, sha, t.branch)
        closes = f"Closes #{t.number}\n\n" if t.source == Source.GITHUB and t.number is not None else ""
        body = "\n".join(
            [
                f"{closes}{t.title}",
                "",
                f"Verified by miyabi on `{t.branch}`:",
                *results_text(run),
                "",
                f"Task {t.ref}, by {t.agent or 'an agent'} of pool {pool.name}.",
            ]
        )
        existing = self.gh.find_pull(t.branch)
        pull = existing or self.gh.create_pull(t.title, t.branch, base, body)
        number, url = int(pull["number"]), str(pull.get("html_url", ""))
        self.gh.add_labels(number, [defaults.REVIEW_LABEL])
        if existing is not None:  # a follow-up: say what was pushed
            self.gh.comment(
                number,
                "\n".join(
                    [
                        f"miyabi pushed {sha[:12]} to `{t.branch}` for task {t.ref} ({t.title}).",
                        "",
                        *results_text(run),
                        "",
                        defaults.MARKER,
                    ]
                ),
            )
        self.records.set_pr(pool.repo, t.branch, number, url)
        self.store.set_state(
            t.id,
            TaskState.DONE,
            f"verified; pull request #{number} {url}",
            expect=(TaskState.VERIFYING,),
            notice="review",
            text=f"verified by miyabi; pull request: {url}",
        )
        tick_untracked(t, pool, Repository(worktree, self.layout.secret_env), sha)
        append_event(
            self.home, EventKind.PULL_REQUEST_OPENED, task=t.id, ref=t.ref, number=number, url=url, branch=t.branch
        )

    def _merge_locally(
        self, t: Task, pool: Pool, worktree: Path, base: str, run: Run, found: conv.Convention, round_: int, sha: str
    ) -> None:
        """A pass in ``pipeline: local``: merge the checked commit into the base branch
        in a staging worktree, run the checks on the merge result, and move the base
        branch to it only when they pass; otherwise the staging worktree is thrown away
        (the base branch never moved) and the agent gets the failure as its next round.
        Merges into one repository happen one at a time (its merge lock); git itself
        runs under the repository's lock, the checks outside it."""
        assert t.branch is not None
        staging = self.home / "worktrees" / ".staging" / f"{t.id}-{round_}"
        logfile = self.home / "logs" / "verify" / f"{t.id}-{round_}-merged.log"
        with self.locks.merge(pool.repo):
            with self.locks.repo(pool.repo):
                repo = Repository(pool.repo, self.layout.secret_env)
                old = repo.sha(base)
                if staging.exists():
                    repo.remove_worktree(staging)
                private_dir(staging.parent)
                repo.add_detached(staging, old)
            try:
                landed = self._stage(t, base, staging, logfile, found, round_, sha, old)
                if landed is None:
                    return
                with self.locks.repo(pool.repo):
                    if not self._still(t.id, worktree, sha, found.max_rounds):
                        return  # cancelled, or the agent committed more, while the merge was checked: it never lands
                    if pool.approve and not self._approved(t, pool, base, sha, landed, run, round_):
                        return  # waits for a person; the base branch stays where it is
                    repo.advance(base, landed, old)
                    self.records.landed(pool.repo, base, landed)
            finally:
                with self.locks.repo(pool.repo):
                    try:
                        repo.remove_worktree(staging)
                    except GitError as e:  # best effort: what matters (the merge, or none) is done
                        log.warning("could not remove the staging worktree %s: %s", staging, e)
        self.records.set_worktree_state(pool.repo, t.branch, WorktreeState.MERGED)
        self.store.set_state(
            t.id, landed_state(t), f"verified and merged into {base} ({landed[:12]})", expect=(TaskState.VERIFYING,)
        )
        tick_untracked(t, pool, Repository(pool.repo, self.layout.secret_env), landed)
        append_event(
            self.home,
            EventKind.MERGED,
            task=t.id,
            ref=t.ref,
            branch=t.branch,
            base=base,
            merge=landed,
            results=results_text(run),
        )
        if pool.name == self.layout.self_pool and self.on_self_merge is not None:
            self.on_self_merge(SelfMerge(t.id, pool.repo, base, old, landed))

    def _approval_lets_check(self, t: Task, sha: str, found: conv.Convention, worktree: Path) -> bool:
        """For a pool with ``approve: required``: whether the checks run on ``sha`` now.
        Not while its merge waits for a person; a rejection goes back to the agent as a
        failed round; an approval (of this very commit) lets it be checked and land; a
        decision about an earlier commit is void."""
        a = self.approvals.get(t.id)
        if a is None:
            return True
        if a.sha != sha:
            self.approvals.clear(t.id)
            return True
        if a.state == ApprovalState.WAITING:
            return False
        if a.state == ApprovalState.REJECTED:
            self.approvals.clear(t.id)
            why = f"{a.by or 'a person'} rejected the merge: {a.reason or 'no reason given'}"
            run = Run(
                results=[StepResult(conv.Step("approval", "a person's review of the merge", 0), 1, 0.0, tail=(why,))]
            )
            round_ = t.rounds + 1
            logfile = self.home / "logs" / "verify" / f"{t.id}-{round_}-rejected.log"  # beside its checks' log
            run_steps([], worktree, logfile, {}, header=[f"task {t.ref} round {round_}: {why} ({sha[:12]})"])
            self._round_failed(t, run, found, round_, logfile)
            return False
        return True

    def _approved(self, t: Task, pool: Pool, base: str, sha: str, merge: str, run: Run, round_: int) -> bool:
        """Whether a person approved landing ``sha``; when not, its merge now waits for
        one (recorded once per commit, with the event ``approval-needed``)."""
        a = self.approvals.get(t.id)
        if a is not None and a.sha == sha and a.state == ApprovalState.APPROVED:
            return True
        assert t.branch is not None
        logs = self.home / "logs" / "verify"
        asked = Approval(
            task=t.id,
            repo=pool.repo,
            branch=t.branch,
            base=base,
            sha=sha,
            merge=merge,
            logs=(str(logs / f"{t.id}-{round_}.log"), str(logs / f"{t.id}-{round_}-merged.log")),
            results=tuple(results_text(run)),
            state=ApprovalState.WAITING,
            asked=self.store.clock(),
        )
        if self.approvals.ask(asked):
            append_event(
                self.home,
                EventKind.APPROVAL_NEEDED,
                task=t.id,
                ref=t.ref,
                branch=t.branch,
                base=base,
                commit=sha,
                merge=merge,
            )
        return False

    def _stage(
        self, t: Task, base: str, staging: Path, logfile: Path, found: conv.Convention, round_: int, sha: str, old: str
    ) -> str | None:
        """Merge ``sha`` in the staging worktree and check the result: its commit when
        the checks pass, else None (the agent was told; the round counted)."""
        assert t.branch is not None
        try:
            merged = Repository(staging, self.layout.secret_env).merge_into_detached(
                sha, f"Merge {t.branch}: {t.ref} {t.title}"
            )
        except GitError as e:
            result = StepResult(conv.Step("merge", f"git merge {t.branch} into {base}", 0), 1, 0.0, tail=(str(e),))
            run_steps(
                [], staging, logfile, {}, header=[f"task {t.ref}: merging {t.branch} ({sha[:12]}) into {base}", str(e)]
            )
            self._round_failed(
                t, Run(results=[result]), found, round_, logfile, f" (merge {base} into your branch and resolve it)"
            )
            append_event(self.home, EventKind.MERGE_ROLLED_BACK, task=t.id, ref=t.ref, base=base, reason=str(e))
            return None
        pool = self.layout.pool(t.pool or "")
        if pool is not None:  # the box lands with the work, on the merge result (no conflict between siblings)
            merged = tick_box(t, pool, staging, self.layout.secret_env) or merged
        checked = run_steps(
            checks_of(found, t),
            staging,
            logfile,
            clean_env(self.layout.secret_env),
            stop=self.stop,
            track=self.track,
            header=[f"task {t.ref}: the checks on {t.branch} merged into {base} ({merged[:12]})"],
        )
        if checked.stopped:
            return None
        if not checked.passed:
            append_event(
                self.home,
                EventKind.MERGE_ROLLED_BACK,
                task=t.id,
                ref=t.ref,
                base=base,
                merge=merged,
                reason=(checked.failed.describe() if checked.failed else ""),
                log=str(logfile),
            )
            note = f" after merging into {base}; {base} was left as it was"
            filed = (
                self._base_fails(t, staging, base, old, found, round_)
                if self.records.last_landed(self._repo_of(t), base)
                else None
            )
            if filed is not None:
                note += f", and it fails the checks on its own at {old[:12]} ({filed})"
            self._round_failed(t, checked, found, round_, logfile, note)
            return None
        return merged

    def _repo_of(self, t: Task) -> Path:
        pool = self.layout.pool(t.pool or "")
        return pool.repo if pool is not None else Path("/")

    def _base_fails(
        self, t: Task, staging: Path, base: str, old: str, found: conv.Convention, round_: int
    ) -> str | None:
        """After a merge failed the checks, on a base branch that passed them after an
        earlier merge: do they fail on the base branch alone? Then monitoring files a fix
        task for the base branch (once per commit of it) and returns what it filed
        (``task 12``, or the same words for one filed earlier); None when the base
        branch passes (the merge is what broke). A base branch never seen passing is
        not asked: making its checks pass may be the very task."""
        Repository(staging, self.layout.secret_env).reset_detached(old)
        logfile = self.home / "logs" / "verify" / f"{t.id}-{round_}-base.log"
        alone = run_steps(
            found.checks,
            staging,
            logfile,
            clean_env(self.layout.secret_env),
            stop=self.stop,
            track=self.track,
            header=[f"the checks on {base} alone ({old[:12]}), after task {t.ref}'s merge failed them"],
        )
        if alone.stopped or alone.passed:
            return None
        failed = alone.failed
        assert failed is not None
        cause = f"the checks fail on {base} at {old}"
        body = (
            f"{failed.describe()} on {base} at {old[:12]}, without any task's change (found while merging task "
            f"{t.ref}).\n\n" + "\n".join(failed.tail[-defaults.VERIFY_TAIL_LINES :]) + f"\n\nLog: {logfile}"
        )
        what = file_fix(self.store, None, None, self.home, cause, f"The checks fail on {base} ({old[:12]})", body)
        known = self.store.rows("SELECT task FROM causes WHERE cause=?", (cause,))
        return what or (f"task {known[0][0]}, filed before" if known else "a fix was filed before")


# -- a task's own checks and its spec-kit box (miyabi/work/taskspec.py holds what a task keeps of its spec)


def checks_of(found: conv.Convention, t: Task) -> list[conv.Step]:
    """The verify gate's commands for ``t``: the repository's checks, then its task
    spec's ``tests`` (stage ``task``, with the repository's test timeout)."""
    tests = task_tests(t)
    if not tests:
        return found.checks
    timeout = next((s.timeout for s in found.stage("test")), defaults.CHECK_TIMEOUT)
    return [*found.checks, *(conv.Step("task", cmd, timeout) for cmd in tests)]


def tick_box(t: Task, pool: Pool, checkout: Path, hide: Iterable[str]) -> str | None:
    """Tick a spec-kit task's box in ``checkout`` (a worktree of ``pool``'s repository)
    and commit it there, when its list was imported from inside that repository and is
    tracked in the checkout; the new commit, or None when nothing changed. A file that
    cannot be written is logged: the work lands either way."""
    box = speckit_line(t)
    if box is None or box.path is None or box.repo != pool.repo.resolve():
        return None
    try:
        if not (checkout / box.path).is_file() or not tick_file(checkout / box.path, box.id):
            return None
        return Repository(checkout, hide).commit_all(f"{t.ref}: done ({box.id} ticked in {box.path})")
    except (OSError, GitError) as e:
        log.warning("task %s: could not tick %s in %s: %s", t.ref, box.id, box.path, e)
    return None


def tick_untracked(t: Task, pool: Pool, repo: Repository, ref: str) -> None:
    """After a pool task's work landed: tick its box in place when its list is not one
    :func:`tick_box` ticked (a list outside the pool's repository, or not tracked at
    ``ref``, the commit that landed)."""
    box = speckit_line(t)
    if box is None:
        return
    try:
        if box.path is not None and box.repo == pool.repo.resolve() and repo.read_at(ref, box.path) is not None:
            return
        tick_file(box.file, box.id)
    except (OSError, GitError) as e:
        log.warning("task %s: could not tick %s in %s: %s", t.ref, box.id, box.file, e)
