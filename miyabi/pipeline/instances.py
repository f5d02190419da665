"""Pool instances: their names (``coder-42``), their branches (``miyabi/42-fix-the-crash``),
the agents they run as, and their tasks sent back to the queue when their pool leaves
the layout."""

from __future__ import annotations

import re

from miyabi import defaults
from miyabi.config.model import Agent, Layout
from miyabi.pipeline.records import InstanceState, Records
from miyabi.work.model import Task, TaskError, TaskState
from miyabi.work.store import Store

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
    profile and command, in the instance's worktree, with ``MIYABI_TASK`` set; one
    that takes up the work an earlier instance did on its branch (a follow-up of its
    task, the task again after it failed) continues that instance (``continues``:
    its process resumes that one's conversation). A new task's branch is its own, so
    its instance starts fresh."""
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
                park=pool.park,
                sandbox=pool.sandbox,
                continues=records.predecessor(inst),
            )
        )
    return tuple(out)
