"""The pipeline: from a task routed to a pool to verified work.

Each task routed to a pool gets an instance of its own (``coder-42``) in a fresh git
worktree of the pool's repository, on a branch ``miyabi/<issue>-<slug>`` made from
the base branch, after the repository's ``setup`` commands ran there. When its agent
says ``miyabi task done``, the task is ``verifying``: the repository's build, lint and
test commands run in the worktree (in a thread, never the controller's), and

- a failure goes back to the same agent (which command, its exit code, the last
  lines of its output, round k of N); after the last round the task fails and needs
  a person;
- a pass commits what the agent left uncommitted, then either pushes the branch and
  opens a pull request that closes the issue (``pipeline: github``), or merges it
  into the base branch behind the checks (``pipeline: local``): the merge is made in
  a staging worktree, checked there, and the base branch only moves once the checks
  pass on the merge result; a merge that fails them never lands.

An instance ends when its task is no longer its own (done, failed, cancelled, handed
back to the queue); its worktree stays until its work is merged.

Every step is driven by what the store records (:mod:`miyabi.pipeline.records`),
so a controller killed at any point picks the work up where it was: an instance
still preparing is prepared again, a task still verifying is verified again.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from miyabi import defaults
from miyabi.config.model import Agent, Layout, PipelineMode, Pool
from miyabi.errors import MiyabiError
from miyabi.events import EventKind, append_event
from miyabi.files import private_dir
from miyabi.messaging.mailbox import enqueue, make
from miyabi.pipeline import convention as conv
from miyabi.pipeline.followups import file_fix
from miyabi.pipeline.git import GitError, Repository
from miyabi.pipeline.records import Instance, InstanceState, Records, WorktreeState
from miyabi.pipeline.verify import Run, StepResult, clean_env, end_orphans, run_steps
from miyabi.times import how_often
from miyabi.work.dispatch import Dispatcher
from miyabi.work.github import GitHub
from miyabi.work.model import OPEN, Source, Task, TaskError, TaskState
from miyabi.work.store import Store

log = logging.getLogger("miyabi.pipeline")


INSTANCE_INDEX = 100_000
"""Instances' :attr:`Agent.index` is this plus their task's id: after every named agent, and stable."""


def slug(title: str, size: int = 40) -> str:
    """``fix-the-crash-on-start`` from a title: lowercase ASCII words joined by ``-``."""
    words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return words[:size].rstrip("-") or "task"


def branch_for(task: Task) -> str:
    """``miyabi/<issue>-<slug>`` (a local task's id stands in for the issue number)."""
    return f"{defaults.BRANCH_PREFIX}{task.number if task.number is not None else task.id}-{slug(task.title)}"


def instance_name(pool: str, task: Task, taken: set[str]) -> str:
    """``coder-42`` (issue 42, or task 42 for a local task); ``coder-42-2`` … when taken."""
    base = f"{pool}-{task.number if task.number is not None else task.id}"[:36]
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def feedback(task: Task, failed: StepResult, round_: int, rounds: int, log_path: Path, note: str = "") -> str:
    """The message an agent gets when a check fails on its work."""
    tail = "\n".join(failed.tail) or "(it printed nothing)"
    return (
        f"miyabi: the checks failed on task {task.ref} (round {round_} of {rounds}){note}.\n"
        f"{failed.describe()}. Its last lines:\n{tail}\n\n"
        f'Fix it in this worktree, then run: miyabi task done {task.id} --note "what you changed". '
        f"Full log: {log_path}"
    )


def results_text(run: Run) -> list[str]:
    """``- test `pytest -q`: passed in 1.2 s`` per command."""
    return [
        f"- {r.step.stage} `{r.step.command}`: {'passed' if r.passed else 'FAILED'} in {r.seconds:.1f} s"
        for r in run.results
    ]


@dataclass(frozen=True)
class Prepared:
    """What preparing an instance's worktree found out."""

    convention: conv.Convention
    base: str
    fresh: bool


def release_pools(store: Store, layout: Layout) -> list[int]:
    """Send the tasks verifying for a pool ``layout`` does not have back to the queue
    (a pool removed, here or while no controller ran); returns their ids. Their
    instances end at the next pass."""
    out: list[int] = []
    for t in store.query(state=TaskState.VERIFYING):
        if t.pool is not None and layout.pool(t.pool) is None:
            try:
                store.set_state(
                    t.id,
                    TaskState.QUEUED,
                    f"pool {t.pool} is not in the layout any more; back to the queue",
                    expect=(TaskState.VERIFYING,),
                )
                out.append(t.id)
            except TaskError:
                pass
    return out


def instance_agents(records: Records, layout: Layout) -> tuple[Agent, ...]:
    """An agent for each ready instance of a pool ``layout`` has, by age: the pool's
    profile and command, in the instance's worktree, with ``MIYABI_TASK`` set."""
    out: list[Agent] = []
    for inst in records.instances(InstanceState.READY):
        pool = layout.pool(inst.pool)
        if pool is None:
            continue
        try:
            ref = records.store.get(inst.task).ref
        except TaskError:
            ref = f"#{inst.task}"
        out.append(
            Agent(
                name=inst.name,
                profile=pool.profile,
                command=pool.command,
                cwd=inst.path,
                env={**pool.env, "MIYABI_TASK": str(inst.task)},
                title=f"{inst.name} {ref}"[:64],
                index=INSTANCE_INDEX + inst.task,
                watchdog=pool.watchdog,
                wip=1,
                pool=pool.name,
                window=pool.name,
                task=inst.task,
                logs=layout.logs,
                human_hold=layout.human_hold,
            )
        )
    return tuple(out)


class RepoLock:
    """One repository's lock, held while miyabi runs git on it: a thread lock inside
    this controller, and a file lock (``run/locks/``) against ``miyabi gc`` and other
    processes of the home."""

    def __init__(self, home_root: Path, repo: Path, thread_lock: threading.Lock) -> None:
        from filelock import FileLock

        name = hashlib.sha1(str(repo).encode()).hexdigest()[:16]
        self.thread_lock = thread_lock
        self.file_lock = FileLock(
            str(private_dir(home_root / "run" / "locks") / f"repo-{name}.lock"), mode=defaults.FILE_MODE
        )

    def __enter__(self) -> Self:
        self.thread_lock.acquire()
        try:
            self.file_lock.acquire()
        except BaseException:
            self.thread_lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.file_lock.release()
        finally:
            self.thread_lock.release()


class Pipeline:
    """Pool instances, worktrees and the verify gate for one controller.

    Args:
        store: the task store (shared with the controller's main thread; thread-safe).
        layout: the running layout (its ``pools:`` and ``github:``).
        home_root: the miyabi home (worktrees under ``worktrees/``, logs under
            ``logs/verify/``, events).
        dispatch: tells an instance about its task (claims the issue first).
        gh: the GitHub client, for ``pipeline: github``.
        changed: called from a worker thread when the main loop has something to do
            (an instance became ready, a verify ended).
    """

    def __init__(
        self,
        store: Store,
        layout: Layout,
        home_root: Path,
        dispatch: Dispatcher,
        gh: GitHub | None = None,
        changed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.records = Records(store)
        self.layout = layout
        self.home = home_root
        self.dispatch = dispatch
        self.gh = gh
        self.changed = changed
        self.clock = clock
        self.stop = threading.Event()
        self.track = home_root / "run" / "checks"
        """Where running checks' process groups are recorded (:func:`~miyabi.pipeline.verify.end_orphans`)."""
        ended = end_orphans(self.track)  # a controller killed while checks ran left them going
        if ended:
            log.info("ended %d check(s) an earlier controller left running: %s", len(ended), ended)
        self.executor = ThreadPoolExecutor(defaults.PIPELINE_WORKERS, thread_name_prefix="pipeline")
        self.running: dict[str, None] = {}
        """Job keys (``prepare:NAME``, ``verify:TASK``) queued or running."""
        self.not_before: dict[str, float] = {}
        """Job key → Unix time before which it is not tried again (after an error)."""
        self.again: dict[int, int] = {}
        """Task → how many times in a row its branch moved while its checks ran."""
        self.failures: dict[str, int] = {}
        """Job key → how many times in a row it failed."""
        self._repo_locks: dict[Path, threading.Lock] = {}
        self._merge_locks: dict[Path, threading.Lock] = {}
        self._lock = threading.Lock()

    def adopt(self, layout: Layout) -> None:
        """Work by a changed layout (:func:`release_pools`)."""
        self.layout = layout
        release_pools(self.store, layout)

    def close(self) -> None:
        """Stop: running checks are ended (their process groups killed), queued jobs dropped."""
        self.stop.set()
        self.executor.shutdown(wait=True, cancel_futures=True)

    def _merge_lock(self, repo: Path) -> threading.Lock:
        with self._lock:
            return self._merge_locks.setdefault(repo, threading.Lock())

    def _repo_lock(self, repo: Path) -> RepoLock:
        with self._lock:
            thread_lock = self._repo_locks.setdefault(repo, threading.Lock())
        return RepoLock(self.home, repo, thread_lock)

    # -- the instances the layout runs

    def agents(self) -> tuple[Agent, ...]:
        """An agent for each ready instance of a pool the layout has, by age."""
        return instance_agents(self.records, self.layout)

    # -- one pass of the main loop

    def tick(self, failed: Sequence[str] = ()) -> list[str]:
        """End instances whose task is no longer theirs (or that the watchdog gave up
        on: ``failed``), start instances for queued pool tasks while their pool has
        room, tell ready instances their task, and start the checks of tasks that are
        verifying. Returns the names of the instances that ended in this pass.

        Raises:
            TaskError, sqlite3.Error: the store failed.
        """
        ended = self._end_instances(set(failed))
        for pool in self.layout.pools:
            self._start_instances(pool)
        for inst in self.records.instances(InstanceState.PREPARING):
            self._submit(f"prepare:{inst.name}", self._prepare, inst)
        for inst in self.records.instances(InstanceState.READY):
            t = self.store.get(inst.task)
            if t.state == TaskState.QUEUED and self.layout.pool(inst.pool) is not None and not self.dispatch.hold(t):
                assigned = self.store.set_state(
                    t.id,
                    TaskState.ASSIGNED,
                    f"instance {inst.name} of pool {inst.pool} is ready",
                    agent=inst.name,
                    expect=(TaskState.QUEUED,),
                )
                self.dispatch(assigned, inst.name)
        for t in self.store.query(state=TaskState.VERIFYING):
            if t.pool is not None and self.layout.pool(t.pool) is not None:
                self._submit(f"verify:{t.id}", self._verify, t.id)
        if self.records.worktrees(WorktreeState.MERGED, WorktreeState.CLOSED):
            self._submit("gc", self._gc, None)
        return ended

    def _submit(self, key: str, fn: Callable[..., None], arg: object) -> None:
        if self.stop.is_set() or key in self.running or self.clock() < self.not_before.get(key, 0.0):
            return

        def job() -> None:
            try:
                fn(arg)
                self.failures.pop(key, None)
            except Exception as e:  # noqa: BLE001 - a job's failure is reported, never fatal to the controller
                tries = self.failures[key] = self.failures.get(key, 0) + 1
                why = f"{type(e).__name__}: {e}" if not isinstance(e, MiyabiError) else str(e)
                append_event(self.home, EventKind.PIPELINE_ERROR, job=key, error=why, tries=tries)
                if tries >= defaults.PIPELINE_TRIES:
                    log.warning("%s: %s; tried %d times: giving up", key, why, tries)
                    self.failures.pop(key, None)
                    self._give_up(key, arg, why, tries)
                else:
                    log.warning("%s: %s; trying again in %.0f s", key, why, defaults.CLAIM_RETRY)
                    self.not_before[key] = self.clock() + defaults.CLAIM_RETRY
            finally:
                self.running.pop(key, None)
                self.changed()

        self.running[key] = None  # before the job can end (and forget it)
        try:
            self.executor.submit(job)
        except RuntimeError:  # shut down meanwhile
            self.running.pop(key, None)

    def _give_up(self, key: str, arg: object, why: str, tries: int) -> None:
        """A step failed ``tries`` times for a reason that does not go away: its task
        fails and needs a person (GitHub is told), with the reason."""
        try:
            if isinstance(arg, Instance):
                self._fail_start(arg, self.store.get(arg.task), f"{why} (tried {how_often(tries)})")
            elif isinstance(arg, int):
                self.store.set_state(
                    arg,
                    TaskState.FAILED,
                    f"verify could not finish: {why} (tried {how_often(tries)}); it needs a person",
                    expect=(TaskState.VERIFYING,),
                    notice="needs-human",
                )
        except TaskError:
            pass

    def _end_instances(self, failed: set[str]) -> list[str]:
        ended: list[str] = []
        for inst in self.records.instances(InstanceState.PREPARING, InstanceState.READY):
            try:
                t = self.store.get(inst.task)
            except TaskError:
                t = None
            if inst.state == InstanceState.PREPARING:
                mine = t is not None and t.state == TaskState.QUEUED
            else:
                mine = t is not None and t.state in OPEN and (t.agent == inst.name or t.state == TaskState.QUEUED)
            if mine and self.layout.pool(inst.pool) is not None and inst.name not in failed:
                continue
            if f"prepare:{inst.name}" in self.running:
                continue  # ends once its preparation is over
            why = (
                f"its task {t.ref} is {t.state}" + (f" ({t.agent})" if t.agent and t.agent != inst.name else "")
                if t is not None
                else "its task is gone"
            )
            if self.layout.pool(inst.pool) is None:
                why = f"pool {inst.pool} is not in the layout any more"
            elif inst.name in failed:
                why = "the watchdog gave up on it"
            self.records.set_instance(inst.name, InstanceState.ENDED, why)
            append_event(
                self.home, EventKind.INSTANCE_ENDED, agent=inst.name, pool=inst.pool, task=inst.task, reason=why
            )
            log.info("instance %s ended: %s", inst.name, why)
            ended.append(inst.name)
        return ended

    def _start_instances(self, pool: Pool) -> None:
        live = self.records.instances(InstanceState.PREPARING, InstanceState.READY, pool=pool.name)
        count = len(live)
        if count >= pool.max:
            return
        reserved = {i.task for i in live}
        # one instance per branch (across pools): two follow-ups of one pull request take turns
        busy = {i.branch for i in self.records.instances(InstanceState.PREPARING, InstanceState.READY)}
        taken = self.records.names() | set(self.layout.names) | {p.name for p in self.layout.pools}
        for t in self.store.queued(routed_to=pool.name):
            if count >= pool.max:
                break
            basis = self._parent_or(t)
            branch = t.branch or branch_for(basis)
            if t.id in reserved or branch in busy:
                continue
            name = instance_name(pool.name, basis, taken)
            path = self.home / "worktrees" / pool.name / branch.removeprefix(defaults.BRANCH_PREFIX)
            if not self.records.add_instance(name, pool.name, t.id, branch, path):
                continue
            taken.add(name)
            reserved.add(t.id)
            busy.add(branch)
            count += 1
            append_event(
                self.home, EventKind.INSTANCE_PREPARING, agent=name, pool=pool.name, task=t.id, ref=t.ref, branch=branch
            )
            log.info("task %s: instance %s of pool %s, branch %s", t.ref, name, pool.name, branch)

    def _parent_or(self, t: Task) -> Task:
        """The task a follow-up follows (its instance is named after it), else ``t``."""
        if t.parent is None:
            return t
        try:
            return self.store.get(t.parent)
        except TaskError:
            return t

    # -- preparing a worktree (worker thread)

    def _convention(self, repo: Repository, pool: Pool) -> tuple[conv.Convention, str]:
        """The repository's conventions, read at the base branch, and that branch."""
        start = pool.base_branch or repo.current_branch() or "HEAD"
        found = conv.load(lambda rel: repo.read_at(start, rel))
        return found, pool.base_branch or found.base_branch or start

    def _prepare(self, inst: Instance) -> None:
        pool = self.layout.pool(inst.pool)
        task = self.store.get(inst.task)
        if pool is None or task.state != TaskState.QUEUED:
            return
        try:
            with self._repo_lock(pool.repo):
                repo = Repository(pool.repo, self.layout.secret_env)
                found, base = self._convention(repo, pool)
                # recorded before it is made: a controller killed in between finds the record
                self.records.add_worktree(pool.repo, inst.branch, inst.path, base, task.parent or task.id)
                record = self.records.worktree(pool.repo, inst.branch)
                assert record is not None
                fresh = repo.worktree_of(inst.branch) != inst.path
                if fresh:
                    private_dir(inst.path.parent)
                    repo.add_worktree(inst.path, inst.branch, record.base)
        except (GitError, conv.ConventionError) as e:
            self._fail_start(inst, task, str(e))
            return
        append_event(
            self.home,
            EventKind.WORKTREE_READY,
            agent=inst.name,
            task=task.id,
            branch=inst.branch,
            path=str(inst.path),
            base=record.base,
            fresh=fresh,
            convention=found.source,
            chosen=found.describe(),
        )
        if not record.set_up or fresh:
            if found.stage("setup"):
                logfile = self.home / "logs" / "verify" / f"{task.id}-setup.log"
                run = run_steps(
                    found.stage("setup"),
                    inst.path,
                    logfile,
                    clean_env(self.layout.secret_env),
                    header=[f"task {task.ref}: setting up {inst.path}", *found.describe()],
                    stop=self.stop,
                    track=self.track,
                )
                if run.stopped:
                    return  # set up again when the controller runs again
                if not run.passed:
                    failed = run.failed
                    assert failed is not None
                    self._fail_start(inst, task, f"set-up failed: {failed.describe()} (log: {logfile})")
                    return
            self.records.set_up_done(pool.repo, inst.branch)
        self.records.set_instance(inst.name, InstanceState.READY, f"worktree {inst.path} on {inst.branch}")
        append_event(
            self.home, EventKind.INSTANCE_READY, agent=inst.name, pool=inst.pool, task=task.id, branch=inst.branch
        )

    def _fail_start(self, inst: Instance, task: Task, why: str) -> None:
        """An instance could not start (bad ``.miyabi.yml``, git refused, set-up failed):
        its task fails with the reason, in one line."""
        log.warning("task %s: %s", task.ref, why)
        self.records.set_instance(inst.name, InstanceState.ENDED, why)
        try:
            self.store.set_state(task.id, TaskState.FAILED, why, expect=(TaskState.QUEUED,), notice="needs-human")
        except TaskError:
            pass
        append_event(self.home, EventKind.INSTANCE_FAILED, agent=inst.name, task=task.id, ref=task.ref, reason=why)

    # -- the verify gate (worker thread)

    def _verify(self, task_id: int) -> None:
        t = self.store.get(task_id)
        pool = self.layout.pool(t.pool or "")
        if t.state != TaskState.VERIFYING or pool is None or t.branch is None:
            return
        record = self.records.worktree(pool.repo, t.branch)
        if record is None or not record.path.is_dir():
            self.store.round_failed(t.id, f"its worktree is gone ({record.path if record else t.branch})", 1)
            return
        with self._repo_lock(pool.repo):
            repo = Repository(pool.repo, self.layout.secret_env)
            try:
                found, _ = self._convention(repo, pool)
            except conv.ConventionError as e:
                self.store.round_failed(t.id, str(e), 1)
                return
            work = Repository(record.path, self.layout.secret_env)
            changed = work.changed(record.base)
            # what is checked is a commit, and that very commit is what lands
            self._commit(t, record.path)
            sha = work.sha("HEAD")
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
                found.checks,
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
        with self._repo_lock(pool.repo):
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
        with self._merge_lock(pool.repo):
            with self._repo_lock(pool.repo):
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
                with self._repo_lock(pool.repo):
                    if not self._still(t.id, worktree, sha, found.max_rounds):
                        return  # cancelled, or the agent committed more, while the merge was checked: it never lands
                    repo.advance(base, landed, old)
                    self.records.landed(pool.repo, base, landed)
            finally:
                with self._repo_lock(pool.repo):
                    try:
                        repo.remove_worktree(staging)
                    except GitError as e:  # best effort: what matters (the merge, or none) is done
                        log.warning("could not remove the staging worktree %s: %s", staging, e)
        self.records.set_worktree_state(pool.repo, t.branch, WorktreeState.MERGED)
        self.store.set_state(
            t.id, TaskState.DONE, f"verified and merged into {base} ({landed[:12]})", expect=(TaskState.VERIFYING,)
        )
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
        checked = run_steps(
            found.checks,
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

    # -- clean-up

    def _gc(self, _: object) -> None:
        self.remove_merged()

    def remove_merged(self) -> list[str]:
        """Remove the worktrees whose work was merged (or whose pull request was
        closed) and that no live instance uses; returns their paths."""
        return remove_merged(self.records, self.home, self._repo_lock)


def remove_merged(records: Records, home_root: Path, lock: Callable[[Path], RepoLock] | None = None) -> list[str]:
    """Remove the worktrees of ``records`` whose work was merged (or whose pull request
    was closed) and that no live instance uses (``lock``: the repository's, held while
    git runs). Returns their paths; one that git will not remove is logged and left."""
    out: list[str] = []
    for w in records.worktrees(WorktreeState.MERGED, WorktreeState.CLOSED):
        with lock(w.repo) if lock is not None else RepoLock(home_root, w.repo, threading.Lock()):
            # read under the lock: an instance that started meanwhile keeps its worktree
            if w.path in {i.path for i in records.instances(InstanceState.PREPARING, InstanceState.READY)}:
                continue
            try:
                Repository(w.repo).remove_worktree(w.path)
            except GitError as e:
                log.warning("could not remove worktree %s: %s", w.path, e)
                continue
        records.set_worktree_state(w.repo, w.branch, WorktreeState.REMOVED)
        append_event(home_root, EventKind.WORKTREE_REMOVED, path=str(w.path), branch=w.branch)
        out.append(str(w.path))
    return out
