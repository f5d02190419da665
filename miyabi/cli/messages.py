"""Commands on messages: send and broadcast (parsed by the light path in
``miyabi.cli.send``), inbox, retry and drop."""

from __future__ import annotations

from typing import Annotated

import typer

from miyabi.cli import output
from miyabi.cli.root import HomeOpt, JsonOpt, LayoutOpt, SocketOpt, app, handles_errors, home_of

_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def send(ctx: typer.Context) -> None:
    """Put a message in an agent's inbox.

    miyabi send AGENT [TEXT | -] [--from NAME] [--priority high] [--ttl S]
    [--reply-to ID] [--task ID] [--json]. The controller types it into the agent's
    pane when the agent is ready; it waits in the inbox while the controller is down.
    """
    from miyabi.cli.send import main as fast

    raise typer.Exit(fast("send", list(ctx.args)))


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def broadcast(ctx: typer.Context) -> None:
    """Send a message to every agent but the sender.

    miyabi broadcast [TEXT | -] [--except NAME ...] [--json].
    """
    from miyabi.cli.send import main as fast

    raise typer.Exit(fast("broadcast", list(ctx.args)))


@app.command()
@handles_errors
def inbox(
    agent: Annotated[str, typer.Argument(help="The agent whose inbox to show.")],
    all_: Annotated[bool, typer.Option("--all", help="Include delivered and failed messages.")] = False,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
    socket: SocketOpt = None,
) -> None:
    """List an agent's pending messages (all of them with --all)."""
    from miyabi.cli.send import known_agents
    from miyabi.controller.view import messages
    from miyabi.errors import AgentNotFound
    from miyabi.messaging.mailbox import MessageState

    h = home_of(home, socket)
    agents, _ = known_agents(h.root, layout)
    if agent not in agents:
        raise AgentNotFound(agent, agents)
    items = messages(h.root, agent, tuple(MessageState) if all_ else (MessageState.PENDING,))
    if json_out:
        output.emit_json(items)
        return
    rows = []
    for i in items:
        when = i["delivered"] or i["failed"] or i["created"]
        first = i["body"].splitlines()[0] if i["body"] else ""
        preview = first[:50] + ("…" if len(first) > 50 or "\n" in i["body"] else "")
        rows.append([i["id"], i["state"], i["from"], when, (i["reason"] or preview)])
    output.table(
        rows, ["id", "state", "from", "time", "text / reason"], title=f"inbox of {agent}: {len(items)} message(s)"
    )


@app.command()
@handles_errors
def retry(
    msg_id: Annotated[str, typer.Argument(metavar="ID", help="Id (or a unique prefix) of a dead letter.")],
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """Put a dead letter back in its inbox, with a fresh ttl."""
    from miyabi.messaging.mailbox import retry as retry_message

    box, msg = retry_message(home_of(home, socket).root, msg_id)
    ttl = f" with a fresh ttl of {msg.ttl:g} s" if msg.ttl is not None else ""
    output.say(f"{msg.id} is pending again in {box.agent}'s inbox{ttl}")


@app.command()
@handles_errors
def drop(
    msg_id: Annotated[str, typer.Argument(metavar="ID", help="Id (or a unique prefix) of a pending message.")],
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """Discard a pending message."""
    from miyabi.messaging.mailbox import drop as drop_message

    box, msg = drop_message(home_of(home, socket).root, msg_id)
    output.say(f"dropped {msg.id} from {box.agent}'s inbox")
