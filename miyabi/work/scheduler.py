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

import re
from collections.abc import Callable, Mapping, Sequence

from miyabi.config.settings import Route
from miyabi.work.model import Source, Task, TaskState, rank_of
from miyabi.work.store import Store


def route(task: Task, routes: Sequence[Route], agents: Sequence[str]) -> str | None:
    """The agent for ``task``: the agent or pool it was handed off to, else its
    ``agent:<name>`` label if it names an agent, else the first matching route; None
    when nothing matches."""
    if task.handoff is not None and task.handoff in agents:
        return task.handoff
    for label in task.labels:
        if label.startswith("agent:") and label[6:] in agents:
            return label[6:]
    for r in routes:
        if r.matches(task.title, task.labels):
            return r.agent
    return None


def rank(task: Task) -> tuple[int, float, int]:
    """Sort key: priority (labels ``priority:high``/``priority:low`` win over the
    task's own field), then age: the order :meth:`Store.queued` reads them in."""
    return (rank_of(task.priority, task.labels), task.created, task.id)


DONE_HINT = "When it is done, run: miyabi task done {id}"
"""How a task's message tells its agent to report it done (the built-in worker reads it)."""

_DONE_RE = re.compile(r"^" + re.escape(DONE_HINT).replace(r"\{id\}", r"(\d+)") + r"\b", re.MULTILINE)


def task_named(text: str) -> int | None:
    """The id of the task a message from :func:`task_message` hands over (None: the
    text is not such a message)."""
    m = _DONE_RE.search(text)
    return int(m.group(1)) if m else None


def task_message(task: Task) -> str:
    """What an agent is told when it gets a task. A job is only named (``/job N``):
    the worker loads it from the store, so no script travels as typed text."""
    if task.source == Source.JOB:
        return f"/job {task.id}"
    parts = [f"Task {task.ref}: {task.title}"]
    if task.handoff_note:
        parts = [f"miyabi: {task.handoff_note}", "", *parts]
    if task.body.strip():
        parts += ["", task.body.strip()]
    if task.url:
        parts += ["", f"URL: {task.url}"]
    parts += [
        "",
        (
            DONE_HINT.format(id=task.id) + ' --note "what you did". '
            f'If you cannot do it, run: miyabi task fail {task.id} --reason "why".'
        ),
    ]
    return "\n".join(parts)


def why_waiting(
    task: Task,
    routes: Sequence[Route],
    wip: Mapping[str, int],
    held: Mapping[str, int],
    failed_agents: Mapping[str, str],
    waiting_for: Sequence[int] = (),
    pools: Mapping[str, tuple[int, int]] | None = None,
) -> str | None:
    """Why ``task`` has no agent yet, in one line; None when it is not waiting (or will
    be assigned on the next pass).

    Args:
        routes, wip: the layout's routes and each agent's WIP limit.
        held: agent → tasks it holds now (assigned or in progress).
        failed_agents: agents the watchdog gave up on, with why.
        waiting_for: the open tasks it depends on.
        pools: pool → (instances running or being prepared, its ``max``).
    """
    if task.state == TaskState.BLOCKED or (task.state == TaskState.QUEUED and waiting_for):
        return "blocked by " + ", ".join(f"#{d}" for d in waiting_for) if waiting_for else "blocked by its dependencies"
    if task.state != TaskState.QUEUED:
        return None
    agent = route(task, routes, [*wip, *(pools or {})])
    if pools and agent is not None and agent in pools:
        live, most = pools[agent]
        return f"pool {agent} runs {live} of its {most} instances" if live >= most else None
    if agent is None:
        labels = ", ".join(task.labels) or "none"
        return f"no route matches it (labels: {labels}); add a route, or a label agent:NAME"
    if agent in failed_agents:
        return f"agent {agent} failed ({failed_agents[agent]}); `miyabi restart {agent}` brings it back"
    if held.get(agent, 0) >= wip.get(agent, 1):
        return f"agent {agent} is at its wip limit ({wip.get(agent, 1)})"
    return None


class Router:
    """:func:`route` for one set of routes and agents, recorded in the store: a
    task's title and labels never change once stored, so each queued task is routed
    once (its ``route`` column) and a pass reads only the tasks of agents with room;
    a pass over 10,000 queued tasks then costs no regex and reads no task it cannot
    assign. The first pass with a new Router forgets what an earlier one recorded.
    Make a new one when the routes or agents change."""

    def __init__(self, routes: Sequence[Route], agents: Sequence[str]) -> None:
        self.routes = tuple(routes)
        self.agents = tuple(agents)
        self._synced = False

    def __call__(self, task: Task) -> str | None:
        return route(task, self.routes, self.agents)

    def record(self, store: Store) -> None:
        """Route every queued task whose route is not recorded yet, and record it."""
        if not self._synced:
            store.clear_routes()
            self._synced = True
        fresh = store.unrouted()
        if fresh:
            store.set_routes({t.id: self(t) for t in fresh})


def schedule(
    store: Store,
    routes: Sequence[Route] | Router,
    wip: Mapping[str, int],
    send: Callable[[Task, str], None],
    failed_agents: Sequence[str] = (),
    hold: Callable[[Task], bool] | None = None,
) -> list[tuple[int, str]]:
    """One scheduling pass. Returns the (task id, agent) pairs it assigned.

    Every query is indexed: the tasks of failed agents, the tasks that have
    dependencies, what each agent holds; queued tasks are routed once (recorded by
    the :class:`Router`), and only those routed to agents with room are read, in
    priority order, until none has room.

    Args:
        store: the task store.
        routes: the layout's routes (or a :class:`Router` over them, which remembers).
        wip: agent → how many tasks it may have assigned or in progress.
        send: tells an agent about its task (enqueues a message).
        failed_agents: agents the watchdog gave up on: their tasks go back to the queue.
        hold: tasks for which it returns True wait (a claim that failed waits to retry).
    """
    router = routes if isinstance(routes, Router) else Router(routes, list(wip))
    for agent in failed_agents:
        for t in store.held(agent):
            store.set_state(t.id, TaskState.QUEUED, f"agent {t.agent} failed (watchdog gave up); back to the queue")
    # dependencies
    for t, waiting in store.waiting_on_deps():
        if waiting and t.state == TaskState.QUEUED:
            cycle = store.cycle_from(t.id)
            why = (
                ("dependency cycle " + " → ".join(f"#{i}" for i in cycle))
                if cycle
                else "waits for " + ", ".join(f"#{d}" for d in waiting)
            )
            store.set_state(t.id, TaskState.BLOCKED, why)
        elif not waiting and t.state == TaskState.BLOCKED:
            store.set_state(t.id, TaskState.QUEUED, "its dependencies are done")
    # assignment
    held = store.held_counts()
    load = {a: held.get(a, 0) for a in wip}
    room = {a for a in wip if a not in failed_agents and load[a] < wip[a]}
    assigned: list[tuple[int, str]] = []
    if not room:
        return assigned
    router.record(store)
    for agent in sorted(room):  # each task has one route: agents never compete for one
        for t in store.queued(routed_to=agent):
            if load[agent] >= wip[agent]:
                break
            if router(t) != agent:  # recorded by another set of routes: record it anew
                store.set_routes({t.id: router(t)})
                continue
            if hold is not None and hold(t):
                continue
            t2 = store.set_state(
                t.id, TaskState.ASSIGNED, f"routed to {agent}", agent=agent, expect=(TaskState.QUEUED,)
            )
            send(t2, agent)
            load[agent] += 1
            assigned.append((t.id, agent))
    return assigned


def waiting_reasons(
    store: Store,
    tasks: Sequence[Task],
    routes: Sequence[Route],
    wip: Mapping[str, int],
    failed_agents: Mapping[str, str],
    pools: Mapping[str, tuple[int, int]] | None = None,
) -> dict[int, str]:
    """Why each of ``tasks`` that waits for an agent waits (:func:`why_waiting`), by id."""
    held = store.held_counts()
    out: dict[int, str] = {}
    for t in tasks:
        if t.state not in (TaskState.QUEUED, TaskState.BLOCKED):
            continue
        why = why_waiting(t, routes, wip, held, failed_agents, store.open_deps(t.id), pools)
        if why:
            out[t.id] = why
    return out
