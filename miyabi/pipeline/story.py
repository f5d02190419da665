"""The story keeper: carries each story from its plan to a deployed, checked service.

At each scheduling pass (:meth:`StoryKeeper.tick`, the controller's main thread; a few
queries) every open story (:mod:`miyabi.work.stories`) moves on when it can:

- ``planning`` → ``building`` once its planning task is done with tasks imported
  (``failed`` when it ends without any: nothing to build);
- ``building`` → ``deploying`` once every child (cancelled ones aside) has landed:
  ``verified`` (checked and merged), or ``done`` for a child that had no pool;
- ``deploying``: a job on the keeper's own worker thread deploys the base branch's
  head of the coder pool's repository (``.miyabi.yml``'s ``deploy:``, ``serve:`` and
  ``health:``, through the deployer of :mod:`miyabi.pipeline.deploy`), marks the
  children ``deployed``, then (``checking``) runs the children's ``acceptance`` checks;
  when they pass the children and the story are ``done``;
- a failed deploy, health or acceptance check counts a round: below ``max_rounds``
  (the repository's ``.miyabi.yml``) a fix task, a child of the story routed to the
  coder role with the evidence, is filed and the story goes back to ``building``; at
  ``max_rounds`` the story (and its landed children) fail with the evidence.

miyabi runs the deploy itself; a ``deployer`` agent named in ``roles:`` is told each
failure's evidence (a message), so that it can look at the service, not run it. A
controller killed mid-deploy deploys again when it next runs (a deploy is idempotent:
it checks the same commit out again and restarts ``serve:``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.config.model import Layout
from miyabi.errors import MiyabiError
from miyabi.events import EventKind, append_event
from miyabi.messaging.mailbox import enqueue, make
from miyabi.pipeline import convention as conv
from miyabi.pipeline.deploy import CheckResult, DeployResult
from miyabi.pipeline.gate import convention_at_base
from miyabi.pipeline.git import GitError, Repository
from miyabi.pipeline.locks import RepoLocks
from miyabi.work import stories as st
from miyabi.work.model import TaskError, TaskState
from miyabi.work.store import Store
from miyabi.work.stories import Story, StoryState

log = logging.getLogger("miyabi.pipeline.story")


Deploy = Callable[[Path, str, int], DeployResult]
"""Deploys ``commit`` of ``repo`` for story ``N`` and waits for its health checks
(:meth:`miyabi.pipeline.deploy.Deployer.deploy`)."""
Check = Callable[[dict[str, Any], Path], CheckResult]
"""Runs one acceptance check (``{url, status}`` or ``{run}``) in a working directory
(:func:`miyabi.pipeline.deploy.run_check`)."""
Acceptance = Callable[[Any], list[dict[str, Any]]]
"""A task's acceptance checks (from its task spec), ``[]`` when it has none."""


class StoryKeeper:
    """Moves stories on (see the module's docstring).

    Args:
        store: the task store (thread-safe).
        layout: the running layout (read at each use: a reload counts).
        home_root: the miyabi home (events, inboxes).
        deploy: the deploy stage (:meth:`miyabi.pipeline.deploy.Deployer.deploy`).
        check: one acceptance check (:func:`miyabi.pipeline.deploy.run_check`).
        acceptance: a task's acceptance checks (``{run}`` ones run in the deploy checkout).
        locks: the repositories' locks (the base branch is read under its lock).
        changed: called when a job ended (the main loop looks again).
    """

    def __init__(
        self,
        store: Store,
        layout: Callable[[], Layout],
        home_root: Path,
        deploy: Deploy,
        check: Check,
        acceptance: Acceptance = lambda task: [],
        locks: RepoLocks | None = None,
        changed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.layout = layout
        self.home = home_root
        self.deploy = deploy
        self.check = check
        self.acceptance = acceptance
        self.locks = locks or RepoLocks(home_root)
        self.changed = changed
        self.clock = clock
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="story")
        self.running: set[int] = set()
        """Stories whose deploy job is queued or running."""
        self._lock = threading.Lock()
        self.closed = False

    def close(self) -> None:
        """Stop taking jobs; wait for the one running (a deploy waits for its health
        checks within their own timeout)."""
        self.closed = True
        self.executor.shutdown(wait=True, cancel_futures=True)

    # -- one pass (main thread)

    def tick(self) -> None:
        """Move each open story on as far as it can go now.

        Raises:
            sqlite3.Error: the store failed.
        """
        roles = self.layout().roles
        if roles is None:
            return  # no roles, no stories: a layout without them leaves its stories as they are
        for story in st.stories(self.store, (StoryState.PLANNING, StoryState.BUILDING)):
            if story.state == StoryState.PLANNING:
                self._planned(story)
            else:
                self._built(story)
        for story in st.stories(self.store, (StoryState.DEPLOYING, StoryState.CHECKING)):
            self._submit(story.id)  # again after a restart; once while running

    def _planned(self, story: Story) -> None:
        try:
            plan = self.store.get(story.task) if story.task is not None else None
        except TaskError:
            plan = None
        if plan is not None and plan.state not in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED):
            return
        kids = st.children(self.store, story.id)
        if plan is not None and plan.state == TaskState.DONE and kids:
            st.move(
                self.store,
                story.id,
                StoryState.BUILDING,
                f"planned into {len(kids)} task(s)",
                expect=(StoryState.PLANNING,),
            )
            append_event(self.home, EventKind.STORY_PLANNED, story=story.id, tasks=[k.id for k in kids])
            return
        why = f"its planning task {plan.ref if plan else story.task} is {plan.state if plan else 'gone'}" + (
            "" if kids else " and no task was imported (`miyabi spec import … --story N`)"
        )
        self._fail(story, why, final_round=story.rounds)

    def _built(self, story: Story) -> None:
        kids = [k for k in st.children(self.store, story.id) if k.state != TaskState.CANCELLED]
        if kids and st.landed(kids) == len(kids):
            st.move(
                self.store,
                story.id,
                StoryState.DEPLOYING,
                f"all {len(kids)} task(s) landed; deploying",
                expect=(StoryState.BUILDING,),
            )
            self._submit(story.id)

    def _submit(self, story_id: int) -> None:
        with self._lock:
            if self.closed or story_id in self.running:
                return
            self.running.add(story_id)
        try:
            self.executor.submit(self._job, story_id)
        except RuntimeError:  # shut down meanwhile
            with self._lock:
                self.running.discard(story_id)

    # -- the deploy job (worker thread)

    def _job(self, story_id: int) -> None:
        try:
            self._deploy_and_check(story_id)
        except Exception as e:  # a job's failure is a failed round, never fatal to the controller
            log.warning("story %d: %s: %s", story_id, type(e).__name__, e, exc_info=True)
            try:
                story = st.get(self.store, story_id)
                if story.state in (StoryState.DEPLOYING, StoryState.CHECKING):
                    self._round_failed(story, f"the deploy stage failed: {type(e).__name__}: {e}", None)
            except Exception:
                log.warning("story %d: could not record the failure", story_id, exc_info=True)
        finally:
            with self._lock:
                self.running.discard(story_id)
            self.changed()

    def _target(self, layout: Layout) -> tuple[Path, str, int]:
        """The repository the story's work lands in, the commit to deploy (its base
        branch's head) and its ``max_rounds``.

        Raises:
            MiyabiError: the coder role is not a pool (no repository), or git failed.
        """
        roles = layout.roles
        pool = layout.pool(roles.coder) if roles is not None and roles.coder else None
        if pool is None:
            pool = layout.pools[0] if len(layout.pools) == 1 else None
        if pool is None:
            raise conv.ConventionError(
                f"{layout.path}: roles.coder must name a pool: its repository is what a story deploys"
            )
        with self.locks.repo(pool.repo):
            repo = Repository(pool.repo, layout.secret_env)
            found, base = convention_at_base(repo, pool)
            return pool.repo, repo.sha(base), found.max_rounds

    def _deploy_and_check(self, story_id: int) -> None:
        story = st.get(self.store, story_id)
        if story.state not in (StoryState.DEPLOYING, StoryState.CHECKING):
            return
        layout = self.layout()
        try:
            repo, commit, max_rounds = self._target(layout)
        except (conv.ConventionError, GitError) as e:
            self._round_failed(story, str(e), None)
            return
        result = self.deploy(repo, commit, story.id)
        if not result.ok:
            self._round_failed(story, f"deploy of {commit[:12]} failed: {result.evidence}", max_rounds)
            return
        kids = [k for k in st.children(self.store, story.id) if k.state != TaskState.CANCELLED]
        with self.store.tx():  # one commit for all of them
            for k in kids:
                if k.state == TaskState.VERIFIED:
                    self._set(k.id, TaskState.DEPLOYED, f"deployed with story {story.id} ({commit[:12]})")
        story = st.move(
            self.store,
            story.id,
            StoryState.CHECKING,
            f"deployed {commit[:12]}; running the acceptance checks",
            expect=(StoryState.DEPLOYING, StoryState.CHECKING),
            commit=commit,
        )
        append_event(
            self.home,
            EventKind.STORY_DEPLOYED,
            story=story.id,
            commit=commit,
            round=story.rounds + 1,
            seconds=round(self.clock() - story.created, 3),
        )
        cwd = result.checkout or repo
        for k in kids:
            for check in self.acceptance(k):
                res = self.check(check, cwd)
                if not res.ok:
                    self._round_failed(story, f"acceptance of task {k.ref} failed: {res.evidence}", max_rounds)
                    return
        with self.store.tx():
            for k in st.children(self.store, story.id):
                if k.state in (TaskState.VERIFIED, TaskState.DEPLOYED):
                    self._set(k.id, TaskState.DONE, f"story {story.id} deployed {commit[:12]} and passed its checks")
        st.move(
            self.store,
            story.id,
            StoryState.DONE,
            f"deployed {commit[:12]}; health and acceptance checks passed",
            expect=(StoryState.CHECKING,),
            evidence="",
        )
        append_event(
            self.home,
            EventKind.STORY_DONE,
            story=story.id,
            commit=commit,
            seconds=round(self.clock() - story.created, 3),
        )

    def _set(self, task_id: int, state: TaskState, reason: str) -> None:
        try:
            self.store.set_state(task_id, state, reason)
        except TaskError as e:  # moved meanwhile (cancelled by a person): left as it is
            log.info("task %d: %s", task_id, e)

    # -- failures

    def _round_failed(self, story: Story, evidence: str, max_rounds: int | None) -> None:
        """A deploy or check failed: a fix task and back to building, or, after
        ``max_rounds`` (None: no fix can help, such as a layout without a pool), failed."""
        evidence = evidence[: defaults.STORY_EVIDENCE_CHARS]
        rounds = story.rounds + 1
        if max_rounds is None or rounds >= max_rounds:
            self._fail(story, evidence, rounds, max_rounds)
            return
        with self.store.tx():  # the fix and the story's move: one commit
            fix = self.store.add(
                f"Fix story {story.id}: {evidence.splitlines()[0] if evidence else 'its deploy failed'}"[:200],
                f"Story {story.id} ({story.title}) failed its deploy stage, round {rounds} of {max_rounds}:\n\n"
                f"{evidence}\n\nFix it; miyabi deploys again once your fix is checked and merged.",
                [],
                "high",
            )
            st.attach(self.store, story.id, [fix.id])
            st.move(
                self.store,
                story.id,
                StoryState.BUILDING,
                f"round {rounds} of {max_rounds} failed; fix task {fix.id} for {story.coder or 'the routes'}",
                rounds=rounds,
                evidence=evidence,
            )
        self._failed(story, rounds, max_rounds, evidence, fix.id)

    def _fail(self, story: Story, evidence: str, final_round: int, max_rounds: int | None = None) -> None:
        evidence = evidence[: defaults.STORY_EVIDENCE_CHARS]
        with self.store.tx():
            st.move(self.store, story.id, StoryState.FAILED, evidence, rounds=final_round, evidence=evidence)
            for k in st.children(self.store, story.id):
                if k.state in (TaskState.VERIFIED, TaskState.DEPLOYED):
                    first = evidence.splitlines()[0] if evidence else ""
                    self._set(k.id, TaskState.FAILED, f"its story {story.id} failed: {first}")
        self._failed(story, final_round, max_rounds, evidence, None)

    def _failed(self, story: Story, rounds: int, max_rounds: int | None, evidence: str, fix: int | None) -> None:
        """Say so: ``story-failed`` (``final`` without a fix), and the deployer agent is told."""
        append_event(
            self.home,
            EventKind.STORY_FAILED,
            story=story.id,
            round=rounds,
            of=max_rounds,
            evidence=evidence,
            fix=fix,
            final=fix is None,
        )
        what = f"round {rounds} of {max_rounds} failed; fix task {fix} filed" if fix is not None else "failed"
        self._tell_deployer(story, f"story {story.id}: {what}.\n{evidence}")

    def _tell_deployer(self, story: Story, text: str) -> None:
        roles = self.layout().roles
        if roles is None or roles.deployer is None:
            return
        try:
            enqueue(self.home, make(roles.deployer, "miyabi: " + text, sender="miyabi"))
        except (OSError, MiyabiError) as e:  # a message that cannot be queued never stops the story
            log.warning("story %d: could not tell %s: %s", story.id, roles.deployer, e)
