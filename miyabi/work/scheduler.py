"""Routing and scheduling: which agent gets which task, and when.

:func:`route` is a pure function of a task and the layout's ``routes:`` (first match
wins; a label ``agent:<name>`` comes before any route). :func:`schedule` makes one
pass over the store: it holds tasks whose dependencies are not done in ``blocked``
(reporting a cycle instead of following it), sends tasks of failed agents back to the
queue, and assigns queued tasks, highest priority and oldest first, to agents below
their WIP limit, telling each agent through ``send``. :func:`why_waiting` says, in
one line, why a queued task has no agent yet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from miyabi.config.settings import Route
from miyabi.work.tasks import HELD, OPEN, Source, Store, Task, TaskState

PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}


def route(task: Task, routes: Sequence[Route], agents: Sequence[str]) -> str | None:
    """The agent for ``task``: its ``agent:<name>`` label if it names an agent, else the
    first matching route; None when nothing matches."""
    for label in task.labels:
        if label.startswith("agent:") and label[6:] in agents:
            return label[6:]
    for r in routes:
        if r.matches(task.title, task.labels):
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
    if task.source == Source.JOB:
        return f"/job {task.id}"
    parts = [f"Task {task.ref}: {task.title}"]
    if task.body.strip():
        parts += ["", task.body.strip()]
    if task.url:
        parts += ["", f"URL: {task.url}"]
    parts += [
        "",
        (f"When it is done, run: miyabi task done {task.id} --note \"what you did\". "
        f"If you cannot do it, run: miyabi task fail {task.id} --reason \"why\"."),
    ]
    return "\n".join(parts)


def why_waiting(
    task: Task,
    routes: Sequence[Route],
    wip: Mapping[str, int],
    held: Mapping[str, int],
    failed_agents: Mapping[str, str],
    waiting_for: Sequence[int] = (),
) -> str | None:
    """Why ``task`` has no agent yet, in one line; None when it is not waiting (or will
    be assigned on the next pass).

    Args:
        routes, wip: the layout's routes and each agent's WIP limit.
        held: agent → tasks it holds now (assigned or in progress).
        failed_agents: agents the watchdog gave up on, with why.
        waiting_for: the open tasks it depends on.
    """
    if task.state == TaskState.BLOCKED or (task.state == TaskState.QUEUED and waiting_for):
        return "blocked by " + ", ".join(f"#{d}" for d in waiting_for) if waiting_for else "blocked by its dependencies"
    if task.state != TaskState.QUEUED:
        return None
    agent = route(task, routes, list(wip))
    if agent is None:
        labels = ", ".join(task.labels) or "none"
        return f"no route matches it (labels: {labels}); add a route, or a label agent:NAME"
    if agent in failed_agents:
        return f"agent {agent} failed ({failed_agents[agent]}); `miyabi restart {agent}` brings it back"
    if held.get(agent, 0) >= wip.get(agent, 1):
        return f"agent {agent} is at its wip limit ({wip.get(agent, 1)})"
    return None


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
        if t.state in HELD and t.agent in failed_agents:
            store.set_state(t.id, TaskState.QUEUED, f"agent {t.agent} failed (watchdog gave up); back to the queue")
    # dependencies
    for t in [x for x in store.query() if x.state in (TaskState.QUEUED, TaskState.BLOCKED)]:
        deps = store.depends_on(t.id)
        waiting = [d for d in deps if by_id.get(d) is None or by_id[d].state not in (TaskState.DONE, TaskState.CANCELLED)]
        cycle = store.cycle_from(t.id) if waiting else None
        if waiting and t.state == TaskState.QUEUED:
            why = ("dependency cycle " + " → ".join(f"#{i}" for i in cycle)) if cycle else "waits for " + ", ".join(f"#{d}" for d in waiting)
            store.set_state(t.id, TaskState.BLOCKED, why)
        elif not waiting and t.state == TaskState.BLOCKED:
            store.set_state(t.id, TaskState.QUEUED, "its dependencies are done")
    # assignment
    load = {a: 0 for a in wip}
    for t in store.query():
        if t.state in HELD and t.agent in load:
            load[t.agent] += 1
    assigned: list[tuple[int, str]] = []
    for t in sorted((x for x in store.query() if x.state == TaskState.QUEUED), key=rank):
        agent = route(t, routes, list(wip))
        if agent is None or agent in failed_agents or agent not in wip or load[agent] >= wip[agent]:
            continue
        if hold is not None and hold(t):
            continue
        t2 = store.set_state(t.id, TaskState.ASSIGNED, f"routed to {agent}", agent=agent, expect=(TaskState.QUEUED,))
        send(t2, agent)
        load[agent] += 1
        assigned.append((t.id, agent))
    return assigned


def waiting_reasons(store: Store, tasks: Sequence[Task], routes: Sequence[Route], wip: Mapping[str, int],
                    failed_agents: Mapping[str, str]) -> dict[int, str]:
    """Why each of ``tasks`` that waits for an agent waits (:func:`why_waiting`), by id."""
    held: dict[str, int] = {}
    for t in store.query():
        if t.state in HELD and t.agent:
            held[t.agent] = held.get(t.agent, 0) + 1
    out: dict[int, str] = {}
    for t in tasks:
        if t.state not in (TaskState.QUEUED, TaskState.BLOCKED):
            continue
        open_deps = [d for d in store.depends_on(t.id) if store.get(d).state not in (TaskState.DONE, TaskState.CANCELLED)]
        why = why_waiting(t, routes, wip, held, failed_agents, open_deps)
        if why:
            out[t.id] = why
    return out
