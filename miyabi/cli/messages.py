"""Commands on messages: send and broadcast, inbox, retry and drop.

``miyabi send`` and ``broadcast`` usually run on the light path of
:mod:`miyabi.cli.send`, which parses the same arguments without typer; the commands
here give their help and usage errors, and run them when called through the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from miyabi.cli import output, params
from miyabi.cli.root import HomeOpt, JsonOpt, LayoutOpt, SocketOpt, app, checked, handles_errors, home_of

SenderOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        metavar="NAME",
        show_default=False,
        help="Who it is from (default: $MIYABI_AGENT, else human).",
    ),
]
PriorityOpt = Annotated[
    str,
    typer.Option(
        "--priority",
        metavar="PRIORITY",
        parser=checked(params.message_priority),
        help="high or normal; high is delivered before normal.",
    ),
]
TtlOpt = Annotated[
    float | None,
    typer.Option(
        "--ttl",
        metavar="SECONDS",
        parser=checked(params.seconds()),
        show_default=False,
        help="How long it may wait in the inbox; still undelivered then, it is a dead letter (see `miyabi retry`).",
    ),
]
TextArg = Annotated[
    str, typer.Argument(metavar="TEXT", show_default=False, help="The message, or - to read it from standard input.")
]
SendSocketOpt = Annotated[
    str | None,
    typer.Option(
        "--socket",
        "-L",
        envvar="MIYABI_SOCKET",
        metavar="NAME",
        show_default=False,
        help="tmux socket of the ensemble, which tells its home when --home is not given.",
    ),
]
SendJsonOpt = Annotated[
    bool, typer.Option("--json", help='Print JSON: {"id", "to", "from", "created", "state"} per message.')
]


@app.command()
@handles_errors
def send(
    agent: Annotated[
        str, typer.Argument(metavar="AGENT", help="Who gets it: an agent's name (NAME@HOST for another host's).")
    ],
    text: TextArg,
    sender: SenderOpt = None,
    priority: PriorityOpt = "normal",
    ttl: TtlOpt = None,
    reply_to: Annotated[
        str | None,
        typer.Option(
            "--reply-to",
            metavar="ID",
            parser=checked(params.message_id),
            show_default=False,
            help="Id of the message this one answers.",
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            metavar="ID",
            parser=checked(params.task_id),
            show_default=False,
            help="Id of the task it belongs to (its tokens count for that task).",
        ),
    ] = None,
    json_out: SendJsonOpt = False,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
    socket: SendSocketOpt = None,
) -> None:
    """Put a message in an agent's inbox and print its id.

    The controller types it into the agent's pane when the agent is ready for it;
    while the controller is down it waits in the inbox.
    """
    from miyabi.cli.send import Request, run

    req = Request(
        text,
        agent,
        sender,
        priority,
        ttl,
        reply_to,
        task,
        json=json_out,
        home=_path(home),
        socket=socket,
        layout=layout,
    )
    run("send", req)


@app.command()
@handles_errors
def broadcast(
    text: TextArg,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--except", metavar="NAME", show_default=False, help="An agent to leave out (repeat for more)."),
    ] = None,
    sender: SenderOpt = None,
    priority: PriorityOpt = "normal",
    ttl: TtlOpt = None,
    json_out: SendJsonOpt = False,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
    socket: SendSocketOpt = None,
) -> None:
    """Send a message to every agent but the sender.

    Prints AGENT ID for each message; each waits in its inbox like one `miyabi send`
    puts there.
    """
    from miyabi.cli.send import Request, run

    req = Request(
        text,
        None,
        sender,
        priority,
        ttl,
        exclude=exclude or [],
        json=json_out,
        home=_path(home),
        socket=socket,
        layout=layout,
    )
    run("broadcast", req)


def _path(home: Path | None) -> str | None:
    return str(home) if home is not None else None


@app.command()
@handles_errors
def inbox(
    agent: Annotated[str, typer.Argument(metavar="AGENT", help="The agent whose inbox to show.")],
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
    msg_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", parser=checked(params.message_id), help="Id (or a unique prefix) of a dead letter."
        ),
    ],
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
    msg_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", parser=checked(params.message_id), help="Id (or a unique prefix) of a pending message."
        ),
    ],
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """Discard a pending message."""
    from miyabi.messaging.mailbox import drop as drop_message

    box, msg = drop_message(home_of(home, socket).root, msg_id)
    output.say(f"dropped {msg.id} from {box.agent}'s inbox")


@app.command()
def hook(
    event: Annotated[
        str, typer.Argument(metavar="EVENT", help="What happened, as the agent CLI's hook names it (Stop, …).")
    ],
    payload: Annotated[
        str | None,
        typer.Argument(
            metavar="PAYLOAD",
            show_default=False,
            help="The CLI's JSON about it (default: read from standard input when it is not a terminal).",
        ),
    ] = None,
) -> None:
    """Record an agent CLI's hook event (agents' hooks run it).

    Appends one line to run/hooks/AGENT.jsonl of $MIYABI_HOME for $MIYABI_AGENT; prints
    nothing and always exits 0, so a hook can never fail or slow its agent.
    """
    from miyabi.cli.hook import main as record

    raise typer.Exit(record([event] if payload is None else [event, payload]))
