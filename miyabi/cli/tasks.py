"""Commands on tasks and jobs: task add/ls/show/done/fail/cancel/retry, job submit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from miyabi.cli import output, params
from miyabi.cli.root import (
    HomeOpt,
    JsonOpt,
    LayoutOpt,
    SocketOpt,
    checked,
    group,
    handles_errors,
    home_of,
    resolve_target,
)
from miyabi.errors import MiyabiError, UsageError

task_app = group("task", "Tasks: add, list and show them; agents report done or fail.")
job_app = group("job", "Jobs: work a worker agent runs and reports on.")
TaskId = Annotated[
    str,
    typer.Argument(
        metavar="ID", parser=checked(params.task_ref), help="Task id (12 or #12) or its issue (owner/name#3)."
    ),
]

LabelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--label",
        metavar="LABEL",
        parser=checked(params.text("a label")),
        show_default=False,
        help="A label, such as bug or agent:NAME (repeat for more).",
    ),
]
BodyOpt = Annotated[
    str | None,
    typer.Option("--body", metavar="TEXT", show_default=False, help="Details, or - to read them from standard input."),
]
PriorityOpt = Annotated[
    str,
    typer.Option("--priority", metavar="PRIORITY", parser=checked(params.task_priority), help="high, normal or low."),
]


def _task_number(text: str) -> int:
    return int(params.task_id(text))


def _store(home: Any) -> Any:
    from miyabi.work.store import Store

    return Store.of_home(home.root)


def _waiting(store: Any, tasks: list[Any], home: Any) -> dict[int, str]:
    """Why each waiting task waits, by the layout this home runs ({} without one)."""
    from miyabi.controller.view import waiting

    return waiting(home, store, tasks)


@task_app.command("add")
@handles_errors
def task_add(
    title: Annotated[
        str, typer.Argument(metavar="TITLE", parser=checked(params.text("the task a title")), help="What to do.")
    ],
    body: BodyOpt = None,
    label: LabelOpt = None,
    priority: PriorityOpt = "normal",
    depends_on: Annotated[
        list[int] | None,
        typer.Option(
            "--depends-on",
            metavar="ID",
            parser=checked(_task_number),
            show_default=False,
            help="Id of a task that must be done first (repeat for more).",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="DURATION",
            parser=checked(params.duration),
            show_default=False,
            help="How long it may stay in progress (90s, 30m, 2h) before it is handed back.",
        ),
    ] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option(
            "--max-attempts",
            metavar="N",
            parser=checked(params.count(1)),
            show_default=False,
            help="Assignments it gets before it fails, 1 or more (default: the layout's tasks.max_attempts).",
        ),
    ] = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """Add a local task; the controller routes it to an agent.

    It goes to the agent the layout's routes pick (a label agent:NAME wins); a task no
    route matches waits in the queue, and you are told.
    """
    from miyabi.messaging.mailbox import decode_body
    from miyabi.work.model import TaskError

    text = decode_body(sys.stdin.buffer.read()) if body == "-" else (body or "")
    h = home_of(home, socket)
    store = _store(h)
    t = store.add(title, text, label or [], priority, depends_on or [], timeout=timeout, max_attempts=max_attempts)
    cycle = store.cycle_from(t.id)
    if cycle:
        raise TaskError(f"task {t.id} would close a dependency cycle: {' → '.join(f'#{i}' for i in cycle)}")
    why = _waiting(store, [t], h).get(t.id)
    if json_out:
        output.emit_json({**t.to_json(), "waiting": why})
    else:
        output.say(f"added task {t.id}: {t.title}")
    if why and why.startswith("no route"):
        output.warn(f"task {t.id} waits in the queue: {why}")


@task_app.command("ls")
@handles_errors
def task_ls(
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            metavar="STATE",
            parser=checked(params.task_state),
            show_default=False,
            help="Only tasks in this state: queued, blocked, assigned, in_progress, verifying, shared, verified, "
            "deployed, done, failed or "
            "cancelled.",
        ),
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", metavar="AGENT", show_default=False, help="Only tasks of this agent.")
    ] = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """List tasks, and why each waiting one waits."""
    h = home_of(home, socket)
    store = _store(h)
    tasks = store.query(state, agent)
    why = _waiting(store, tasks, h)
    if json_out:
        output.emit_json([{**t.to_json(), "waiting": why.get(t.id)} for t in tasks])
        return
    rows = [
        [str(t.id), t.source, t.ref, str(t.state), t.agent or "-", t.priority, t.title[:50], why.get(t.id, "")]
        for t in tasks
    ]
    output.table(rows, ["id", "source", "ref", "state", "agent", "priority", "title", "waiting because"])


@task_app.command("show")
@handles_errors
def task_show(task_id: TaskId, json_out: JsonOpt = False, home: HomeOpt = None, socket: SocketOpt = None) -> None:
    """Show a task, why it waits, its dependencies and its history."""
    h = home_of(home, socket)
    store = _store(h)
    t = store.get(task_id)
    why = _waiting(store, [t], h).get(t.id)
    from miyabi.agents.usage import task_usage
    from miyabi.events import read_events

    used = task_usage(read_events(h.root), str(t.id))
    data = {
        **t.to_json(),
        "waiting": why,
        "depends_on": store.depends_on(t.id),
        "history": store.history(t.id),
        "usage": {"input_tokens": used.input_tokens, "output_tokens": used.output_tokens} if used else None,
    }
    if json_out:
        output.emit_json(data)
        return
    output.say(f"task {t.id} ({t.ref}) [{t.state}] {t.title}")
    output.say(
        f"  agent: {t.agent or '-'}  priority: {t.priority}  labels: {', '.join(t.labels) or '-'}  "
        f"depends on: {', '.join(map(str, data['depends_on'])) or '-'}"
    )
    if why:
        output.say(f"  waiting because: {why}")
    if used:
        output.say(
            f"  usage: {used.input_tokens} tokens in, {used.output_tokens} out (where its agents' CLIs report it)"
        )
    if t.body:
        output.say("  " + t.body.replace("\n", "\n  "), lines=True)
    for e in data["history"]:
        output.say(f"  {e['time']}  {e['state']:<11} {e['agent'] or '':<10} {e['reason']}")


def _finish(task_id: str, state: Any, reason: str, home: Path | None, socket: str | None) -> Any:
    store = _store(home_of(home, socket))
    return store.set_state(store.get(task_id).id, state, reason)


@task_app.command("done")
@handles_errors
def task_done(
    task_id: TaskId,
    note: Annotated[str, typer.Option("--note", metavar="TEXT", help="What was done.")] = "",
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """Mark a task done (agents run this from their pane); a pool task is verified first."""
    h = home_of(home, socket)
    store = _store(h)
    t = store.done(store.get(task_id).id, note or "done")
    if t.state == "verifying":
        output.say(f"task {t.id}: the checks run now; you hear back if one fails")
    else:
        output.say(f"task {t.id} done")


@task_app.command("fail")
@handles_errors
def task_fail(
    task_id: TaskId,
    reason: Annotated[
        str,
        typer.Option(
            "--reason", metavar="TEXT", parser=checked(params.text("the reason")), help="Why it could not be done."
        ),
    ],
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """Mark a task failed, with the reason."""
    from miyabi.work.model import TaskState

    t = _finish(task_id, TaskState.FAILED, reason, home, socket)
    output.say(f"task {t.id} failed: {reason}")


@task_app.command("cancel")
@handles_errors
def task_cancel(task_id: TaskId, home: HomeOpt = None, socket: SocketOpt = None) -> None:
    """Cancel a task; its agent, if it has one, is told."""

    from miyabi.controller.view import cancel_task

    h = home_of(home, socket)
    t = cancel_task(h, _store(h), task_id, "`miyabi task cancel`")
    output.say(f"task {t.id} cancelled")


@task_app.command("retry")
@handles_errors
def task_retry(task_id: TaskId, home: HomeOpt = None, socket: SocketOpt = None) -> None:
    """Put a failed or cancelled task back in the queue."""
    from miyabi.controller.view import retry_task

    t = retry_task(_store(home_of(home, socket)), task_id, "`miyabi task retry`")
    output.say(f"task {t.id} is queued again")


@job_app.command("submit")
@handles_errors
def job_submit(
    file: Annotated[
        Path, typer.Argument(metavar="FILE.json", help="The job: id, kind, workdir, script, dod, report_path.")
    ],
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            metavar="NAME",
            show_default=False,
            help="Worker agent to run it (default: the layout's first worker).",
        ),
    ] = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Store a job as a task for a worker agent; the controller hands it over."""
    from miyabi.errors import AgentNotFound
    from miyabi.work.jobs import submit

    t = resolve_target(home, socket, layout)
    lay = t.layout() if t.layout_path else None
    workers = [a.name for a in lay.agents if a.profile.name == "worker"] if lay else []
    name = agent or (workers[0] if workers else None)
    if name is None:
        raise MiyabiError("no worker agent in the layout to run jobs; add one (profile: worker) or give --agent")
    if lay is not None and lay.bus is not None:
        from miyabi.bus.tasks import valid_target

        if not valid_target(name):  # with a bus the worker may run on another host (NAME or NAME@HOST)
            raise UsageError(f"--agent {name!r} must be an agent name, or NAME@HOST for another host's agent")
    elif lay is not None and name not in lay.names:
        raise AgentNotFound(name, lay.names)
    tid, job = submit(_store(t.home), file, name)
    if json_out:
        output.emit_json(
            {"task": tid, "agent": name, "job": job.id, "workdir": job.workdir, "report": str(job.report_file)}
        )
    else:
        output.say(f"job {job.id} stored as task {tid} for {name}; report: {job.report_file}")
