"""``miyabi approve`` and ``miyabi deny``: answering an agent's permission question."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from miyabi.cli import output
from miyabi.cli.root import HomeOpt, JsonOpt, LayoutOpt, SocketOpt, app, handles_errors, running


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
