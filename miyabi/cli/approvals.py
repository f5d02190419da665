"""``miyabi approve`` and ``miyabi deny``: answering an agent's permission question;
``miyabi approve-merge``: letting a merge that waits for a person land."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from miyabi.cli import output
from miyabi.cli.root import HomeOpt, JsonOpt, LayoutOpt, SocketOpt, app, handles_errors, home_of, running
from miyabi.times import rfc3339


def _answer(
    agent: str,
    approve: bool,
    reason: str | None,
    json_out: bool,
    socket: str | None,
    home: Path | None,
    layout: str | None,
) -> None:
    from miyabi.supervision.approvals import answer

    t, tmux = running(home, socket, layout)
    a = answer(t.home, tmux, t.session, t.layout().agent(agent), approve, reason)
    if json_out:
        output.emit_json(
            {
                "agent": a.agent,
                "answer": a.answer,
                "question": a.question,
                "keys": list(a.keys),
                "reason": a.reason,
                "message": a.message,
            }
        )
        return
    said = f"{'approved' if approve else 'denied'} {a.agent}: {a.question}"
    output.say(said + (f" (reason sent as message {a.message})" if a.message else ""), "green" if approve else "yellow")


@app.command()
@handles_errors
def approve(
    agent: Annotated[str, typer.Argument(help="The agent waiting for approval.")],
    json_out: JsonOpt = False,
    socket: SocketOpt = None,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Answer an agent's permission question with yes.

    The agent must be waiting-approval (see `miyabi status`); the profile's approve keys
    are pressed while the question is on screen. The answer is recorded as an event.
    """
    _answer(agent, True, None, json_out, socket, home, layout)


@app.command()
@handles_errors
def deny(
    agent: Annotated[str, typer.Argument(help="The agent waiting for approval.")],
    reason: Annotated[
        str | None, typer.Option("--reason", metavar="TEXT", help="Why: sent to the agent as its next message.")
    ] = None,
    json_out: JsonOpt = False,
    socket: SocketOpt = None,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Answer an agent's permission question with no.

    The profile's deny keys are pressed while the question is on screen; a --reason
    is delivered to the agent as a message once it is ready. Recorded as an event.
    """
    _answer(agent, False, reason, json_out, socket, home, layout)


@app.command("approve-merge")
@handles_errors
def approve_merge(
    task: Annotated[int | None, typer.Argument(help="The task whose merge waits for approval.")] = None,
    reject: Annotated[
        bool, typer.Option("--reject", help="Send it back to its agent as a failed round instead.")
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", metavar="TEXT", help="Why it is rejected: the agent is told.")
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the merges waiting for approval.")] = False,
    json_out: JsonOpt = False,
    socket: SocketOpt = None,
    home: HomeOpt = None,
) -> None:
    """Let a merge that waits for a person land, or reject it.

    A merge of a pool with `approve: required` waits once its checks passed on the
    branch and on the merge result;
    `--list` shows those waiting, with their check results; the dashboard's Approvals
    page shows the diff too. An approval is for the commit that was checked: the merge
    is checked again against the base branch as it is then, and lands. Exit 1 when the
    task's merge does not wait for approval.
    """
    import getpass
    import os

    from miyabi.errors import MiyabiError, UsageError
    from miyabi.pipeline.approvals import decide, waiting

    h = home_of(home, socket)
    if list_:
        rows = waiting(h.root)
        if json_out:
            output.emit_json([a.to_json() for a in rows])
            return
        for a in rows:
            output.say(f"task {a.task}: {a.branch} into {a.base} ({a.sha[:12]}), waiting since {rfc3339(a.asked)}")
            for line in a.results:
                output.say(f"  {line}")
        if not rows:
            output.say("no merge waits for approval")
        return
    if task is None:
        raise UsageError("name the task: `miyabi approve-merge TASK` (or --list)")
    if reason is not None and not reject:
        raise UsageError("--reason goes with --reject")
    agent = os.environ.get("MIYABI_AGENT")
    if agent:
        raise MiyabiError(f"a merge waits for a person; agent {agent} (MIYABI_AGENT) may not approve or reject it")
    a = decide(h.root, task, not reject, getpass.getuser(), reason or "")
    if json_out:
        output.emit_json(a.to_json())
        return
    if reject:
        output.say(f"rejected the merge of task {task}; it goes back to its agent as a failed round", "yellow")
    else:
        output.say(f"approved the merge of task {task} ({a.sha[:12]}); it lands once checked on {a.base}", "green")
