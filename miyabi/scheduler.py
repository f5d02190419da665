"""Routing and scheduling: which agent gets which task, and when.

:func:`route` is a pure function of a task and the layout's ``routes:`` (first match
wins; a label ``agent:<name>`` comes before any route). :func:`schedule` makes one
pass over the store: it holds tasks whose dependencies are not done in ``blocked``
(reporting a cycle instead of following it), sends tasks of failed agents back to the
queue, and assigns queued tasks, highest priority and oldest first, to agents below
their WIP limit, telling each agent through its inbox.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from miyabi.tasks import OPEN, Store, Task

PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}


@dataclass(frozen=True)
class Route:
    """One rule of ``routes:``: match by ``label``, by ``title`` regex, or ``default``."""

    agent: str
    label: str | None = None
    title: str | None = None
    default: bool = False

    def matches(self, task: Task) -> bool:
        if self.label is not None:
            return self.label in task.labels
        if self.title is not None:
            return re.search(self.title, task.title) is not None
        return self.default


def route(task: Task, routes: Sequence[Route], agents: Sequence[str]) -> str | None:
    """The agent for ``task``: its ``agent:<name>`` label if it names an agent, else the
    first matching route; None when nothing matches."""
    for label in task.labels:
        if label.startswith("agent:") and label[6:] in agents:
            return label[6:]
    for r in routes:
        if r.matches(task):
            return r.agent
    return None


def rank(task: Task) -> tuple[int, float, int]:
    """Sort key: priority (labels ``priority:high``/``priority:low`` win over the
    task's own field), then age."""
    prio = task.priority
    if "priority:high" in task.labels:
        prio = "high"
    elif "priority:low" in task.labels:
        prio = "low"
    return (PRIORITY_RANK.get(prio, 1), task.created, task.id)


def task_message(task: Task) -> str:
    """What an agent is told when it gets a task. A job is only named (``/job N``):
    the worker loads it from the store, so no script travels as typed text."""
    if task.source == "job":
        return f"/job {task.id}"
    parts = [f"Task {task.ref}: {task.title}"]
    if task.body.strip():
        parts += ["", task.body.strip()]
    if task.url:
        parts += ["", f"URL: {task.url}"]
    parts += [
        "",
        f"When it is done, run: miyabi task done {task.id} --note \"what you did\". "
        f"If you cannot do it, run: miyabi task fail {task.id} --reason \"why\".",
    ]
    return "\n".join(parts)


def schedule(
    store: Store,
    routes: Sequence[Route],
    wip: Mapping[str, int],
    send: Callable[[Task, str], None],
    failed_agents: Sequence[str] = (),
    hold: Callable[[Task], bool] | None = None,
) -> list[tuple[int, str]]:
    """One scheduling pass. Returns the (task id, agent) pairs it assigned.

    Args:
        store: the task store.
        routes: the layout's routes.
        wip: agent → how many tasks it may have assigned or in progress.
        send: tells an agent about its task (enqueues a message).
        failed_agents: agents the watchdog gave up on: their tasks go back to the queue.
        hold: tasks for which it returns True wait (a claim that failed waits to retry).
    """
    tasks = [t for t in store.query() if t.state in OPEN]
    by_id = {t.id: t for t in store.query()}
    for t in tasks:
        if t.state in ("assigned", "in_progress") and t.agent in failed_agents:
            store.set_state(t.id, "queued", f"agent {t.agent} failed (watchdog gave up); back to the queue")
    # dependencies
    for t in [x for x in store.query() if x.state in ("queued", "blocked")]:
        deps = store.depends_on(t.id)
        waiting = [d for d in deps if by_id.get(d) is None or by_id[d].state not in ("done", "cancelled")]
        cycle = store.cycle_from(t.id) if waiting else None
        if waiting and t.state == "queued":
            why = ("dependency cycle " + " → ".join(f"#{i}" for i in cycle)) if cycle else "waits for " + ", ".join(f"#{d}" for d in waiting)
            store.set_state(t.id, "blocked", why)
        elif not waiting and t.state == "blocked":
            store.set_state(t.id, "queued", "its dependencies are done")
    # assignment
    load = {a: 0 for a in wip}
    for t in store.query():
        if t.state in ("assigned", "in_progress") and t.agent in load:
            load[t.agent] += 1
    assigned: list[tuple[int, str]] = []
    for t in sorted((x for x in store.query() if x.state == "queued"), key=rank):
        agent = route(t, routes, list(wip))
        if agent is None or agent in failed_agents or agent not in wip or load[agent] >= wip[agent]:
            continue
        if hold is not None and hold(t):
            continue
        t2 = store.set_state(t.id, "assigned", f"routed to {agent}", agent=agent, expect=("queued",))
        send(t2, agent)
        load[agent] += 1
        assigned.append((t.id, agent))
    return assigned
