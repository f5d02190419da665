"""The pipeline's runner: from a task routed to a pool to verified work.

Each pass of the controller's main loop (:meth:`Pipeline.tick`) ends instances whose
task is no longer theirs, starts one for each queued task routed to a pool while the
pool has room (:mod:`miyabi.pipeline.instances`), prepares each new instance's git
worktree on its branch (the repository's ``setup`` commands run there), tells ready
instances their task, and hands tasks that are verifying to the verify gate
(:mod:`miyabi.pipeline.gate`). Preparing and verifying are jobs in a pool of worker
threads, never the controller's; a job that fails is tried again after a pause, and
after ``defaults.PIPELINE_TRIES`` tries its task fails and needs a person.

An instance ends when its task is no longer its own (done, failed, cancelled, handed
back to the queue); its worktree stays until its work is merged
(:mod:`miyabi.pipeline.cleanup`).

Every step is driven by what the store records (:mod:`miyabi.pipeline.records`),
so a controller killed at any point picks the work up where it was: an instance
still preparing is prepared again, a task still verifying is verified again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from miyabi import defaults
from miyabi.config.model import Agent, Layout, Pool
from miyabi.errors import MiyabiError
from miyabi.events import EventKind, append_event
from miyabi.files import private_dir
from miyabi.pipeline import convention as conv
from miyabi.pipeline.cleanup import remove_merged
from miyabi.pipeline.gate import Gate, SelfMerge, convention_at_base
from miyabi.pipeline.git import GitError, Repository
from miyabi.pipeline.instances import branch_for, instance_agents, instance_name, release_pools
from miyabi.pipeline.locks import RepoLocks
from miyabi.pipeline.records import Instance, InstanceState, Records, WorktreeState
from miyabi.pipeline.verify import clean_env, end_orphans, run_steps
from miyabi.stopping import Stopped
from miyabi.times import how_often
from miyabi.work.dispatch import Dispatcher
from miyabi.work.github import GitHub
from miyabi.work.model import OPEN, Task, TaskError, TaskState
from miyabi.work.store import Store

log = logging.getLogger("miyabi.pipeline")


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
        on_self_merge: called when a merge of the self pool (``self:``) landed.
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
        on_self_merge: Callable[[SelfMerge], None] | None = None,
    ) -> None:
        self.store = store
        self.records = Records(store)
        self.layout = layout
        self.home = home_root
        self.dispatch = dispatch
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
        self.failures: dict[str, int] = {}
        """Job key → how many times in a row it failed."""
        self.locks = RepoLocks(home_root)
        self.gate = Gate(store, layout, home_root, self.locks, self.stop, self.track, gh, on_self_merge)

    def adopt(self, layout: Layout) -> None:
        """Work by a changed layout (:func:`release_pools`)."""
        self.layout = layout
        self.gate.layout = layout
        release_pools(self.store, layout)

    def close(self) -> None:
        """Stop: running checks are ended (their process groups killed), queued jobs dropped."""
        self.stop.set()
        self.executor.shutdown(wait=True, cancel_futures=True)

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
            if (
                t.state == TaskState.QUEUED
                and t.pool in (None, inst.pool)
                and t.handoff in (None, inst.pool)
                and self.layout.pool(inst.pool) is not None
                and not self.dispatch.hold(t)
            ):
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
                self._submit(f"verify:{t.id}", self.gate.verify, t.id)
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
            except Stopped:  # a GitHub wait ended by the controller's stop: no failed try
                pass
            except Exception as e:  # a job's failure is reported, never fatal to the controller
                tries = self.failures[key] = self.failures.get(key, 0) + 1
                why = f"{type(e).__name__}: {e}" if not isinstance(e, MiyabiError) else str(e)
                append_event(self.home, EventKind.PIPELINE_ERROR, job=key, error=why, tries=tries)
                if tries >= defaults.PIPELINE_TRIES:
                    log.warning("%s: %s; tried %d times: giving up", key, why, tries, exc_info=True)
                    self.failures.pop(key, None)
                    self._give_up(key, arg, why, tries)
                else:
                    log.warning("%s: %s; trying again in %.0f s", key, why, defaults.CLAIM_RETRY, exc_info=True)
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
            if t is not None and (t.pool not in (None, inst.pool) or t.handoff not in (None, inst.pool)):
                mine = False  # handed off to another pool or agent
            elif inst.state == InstanceState.PREPARING:
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
            elif t is not None and (t.pool not in (None, inst.pool) or t.handoff not in (None, inst.pool)):
                why = f"its task {t.ref} was handed off to {t.handoff or t.pool}"
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
            kept = self.records.worktree(pool.repo, branch)
            if kept is not None and kept.state in (WorktreeState.ACTIVE, WorktreeState.REVIEW):
                path = kept.path  # a task handed off from another pool: its worktree, its work so far
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

    def _prepare(self, inst: Instance) -> None:
        pool = self.layout.pool(inst.pool)
        task = self.store.get(inst.task)
        if pool is None or task.state != TaskState.QUEUED:
            return
        try:
            with self.locks.repo(pool.repo):
                repo = Repository(pool.repo, self.layout.secret_env)
                found, base = convention_at_base(repo, pool)
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

    # -- clean-up

    def _gc(self, _: object) -> None:
        self.remove_merged()

    def remove_merged(self) -> list[str]:
        """Remove the worktrees whose work was merged (or whose pull request was
        closed) and that no live instance uses; returns their paths."""
        return remove_merged(self.records, self.home, self.locks.repo)
