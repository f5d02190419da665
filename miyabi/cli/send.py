"""``miyabi send`` and ``miyabi broadcast``: the light path.

Agents run ``miyabi send`` many times an hour, so these two commands are parsed with
argparse and import neither typer, rich nor yaml: the agent names come from
``run/up.json`` (written by ``miyabi up``), and the layout is read only when that file
is missing. Sending works with the controller down: the message waits in the inbox.
Their help, and any arguments that do not parse, go to the Typer commands in
:mod:`miyabi.cli.messages`, which take the same arguments, checked by the same
:mod:`miyabi.cli.params`: a user sees one style of help and of usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from miyabi.cli import output, params
from miyabi.cli.light import NotLight, QuietParser
from miyabi.errors import EXIT_ERROR, EXIT_INTERRUPTED, AgentNotFound, MiyabiError, UsageError


def known_agents(home_root: Path, layout: str | None) -> tuple[list[str], int | None]:
    """Agent names of the ensemble, and the body limit if the layout sets one.

    Raises:
        LayoutError: ``up.json`` is missing and the layout does not load.
    """
    if layout is None:
        try:
            state = json.loads((home_root / "run" / "up.json").read_text(encoding="utf-8"))
            agents = state.get("agents")
            if isinstance(agents, list) and agents:
                return [str(a) for a in agents], state.get("max_body")
        except (OSError, ValueError):
            pass
    from miyabi.config import load, shipped
    from miyabi.home import Home

    lay = load(shipped.for_command(layout, Home(home_root)))
    return lay.names, None


@dataclass
class Request:
    """What ``miyabi send`` or ``broadcast`` was asked, however it was parsed.

    Attributes:
        text: the message text, or ``-`` to read it from standard input.
        agent: the receiver (``send``): a name, or ``NAME@HOST`` with a ``bus:``.
        sender: ``--from`` (None: ``$MIYABI_AGENT``, else ``human``).
        exclude: agents ``broadcast`` leaves out.
    """

    text: str
    agent: str | None = None
    sender: str | None = None
    priority: str = "normal"
    ttl: float | None = None
    reply_to: str | None = None
    task: str | None = None
    exclude: list[str] = field(default_factory=list)
    json: bool = False
    home: str | None = None
    socket: str | None = None
    layout: str | None = None


def _parser(prog: str) -> argparse.ArgumentParser:
    """The same arguments as the Typer command in :mod:`miyabi.cli.messages` (which
    has their help, and whose errors are the ones a user reads), checked alike: a
    checker's ValueError makes argparse fail, and the Typer command then says why."""
    ap = QuietParser(prog)
    if prog == "send":
        ap.add_argument("agent")
    ap.add_argument("text")
    ap.add_argument("-h", "--help", action="store_true")
    ap.add_argument("--from", dest="sender", default=None)
    ap.add_argument("--priority", type=params.message_priority, default="normal")
    ap.add_argument("--ttl", type=params.seconds(), default=None)
    if prog == "send":
        ap.add_argument("--reply-to", type=params.message_id, default=None)
        ap.add_argument("--task", type=params.task_id, default=None)
    else:
        ap.add_argument("--except", dest="exclude", action="append", default=[])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--home", default=None)
    ap.add_argument("--socket", "-L", default=None)
    ap.add_argument("--layout", "-f", default=None)
    return ap


def _read_text(text: str) -> str:
    from miyabi.messaging.mailbox import MessageError, decode_body, sanitize

    if text == "-":
        body = decode_body(sys.stdin.buffer.read())
        if not sanitize(body).strip():
            raise MessageError("standard input has no text (control characters are removed before delivery)")
        return body
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 on the command line
        raise UsageError(
            "invalid value for 'TEXT': it is not valid UTF-8; send text, or pipe the data through base64 into `-`"
        ) from None
    if not sanitize(text).strip():
        raise UsageError(
            f"invalid value for 'TEXT': {text!r} has no text (control characters are removed before delivery)"
        )
    return text


def main(prog: str, argv: list[str]) -> int | None:
    """Run ``miyabi send`` (``prog == "send"``) or ``broadcast``; return the exit code.

    Returns None, having done nothing, for ``--help`` and for arguments that do not
    parse: the caller runs the Typer command then (:func:`miyabi.cli.main`), so that
    help and usage errors read as every other command's."""
    try:
        args = _parser(prog).parse_intermixed_args(argv)
    except NotLight:
        return None
    if args.help:
        return None
    fields = vars(args)
    del fields["help"]
    try:
        return run(prog, Request(**fields))
    except UsageError as e:
        output.usage_error(f"miyabi {prog}", str(e))
        return e.exit_code
    except MiyabiError as e:
        for line in e.lines():
            output.error(line)
        return e.exit_code
    except KeyboardInterrupt:
        output.error("interrupted")
        return EXIT_INTERRUPTED
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        output.error(f"{e.strerror or e}{where}")
        return EXIT_ERROR


def run(prog: str, req: Request) -> int:
    """Send ``req`` (``prog``: ``send`` or ``broadcast``), print the ids, return 0.

    Raises:
        UsageError: TEXT is not text (exit 2).
        AgentNotFound: the receiver, or an agent --except names, is not in the ensemble.
        MessageError: nobody to send to, a body over the limit, standard input not text.
        LayoutError: ``run/up.json`` is missing and the layout does not load.
        NoEnsemble: no ensemble's home can be told (see :func:`miyabi.cli.where.locate_home`).
    """
    from miyabi.cli.where import locate_home
    from miyabi.defaults import MAX_BODY
    from miyabi.messaging.mailbox import MessageError, post

    body = _read_text(req.text)
    home_root = locate_home(req.home, req.socket or os.environ.get("MIYABI_SOCKET") or None).root
    agents, max_body = known_agents(home_root, req.layout)
    sender = req.sender or os.environ.get("MIYABI_AGENT") or "human"
    if prog == "send":
        assert req.agent is not None
        remote = _remote(home_root, req, agents, sender, body, int(max_body or MAX_BODY))
        if remote is not None:
            return remote
        if req.agent not in agents:
            raise AgentNotFound(req.agent, agents)
        targets = [req.agent]
    else:
        for name in req.exclude:
            if name not in agents:
                raise AgentNotFound(name, agents)
        targets = [a for a in agents if a not in req.exclude and a != sender]
        if not targets:
            raise MessageError("nobody to send to: every agent is excluded")
    sent = []
    for to in targets:
        sent.append(
            post(
                home_root,
                to,
                body,
                sender=sender,
                priority=req.priority,
                ttl=req.ttl,
                reply_to=req.reply_to,
                task=req.task,
                max_body=int(max_body or MAX_BODY),
            )
        )
    if req.json:
        out = [{"id": m.id, "to": m.to, "from": m.sender, "created": m.created, "state": "pending"} for m in sent]
        output.json_line(out[0] if prog == "send" else out)
    else:
        for m in sent:
            output.line(m.id if prog == "send" else f"{m.to} {m.id}")
    return 0


def _remote(home_root: Path, req: Request, agents: list[str], sender: str, body: str, max_body: int) -> int | None:
    """``send NAME@HOST`` (or a NAME only another host runs) with a ``bus:``: through the
    bus. None when the message is for this host."""
    assert req.agent is not None
    name, at, host = req.agent.partition("@")
    if not at and name in agents:
        return None
    from miyabi.bus.state import read_state, settings_of

    state = read_state(home_root)
    settings = settings_of(state) if state else None
    if settings is None:  # no controller wrote it yet: the layout says
        from miyabi.config import load, shipped
        from miyabi.errors import LayoutError
        from miyabi.home import Home

        try:
            settings = load(shipped.for_command(req.layout, Home(home_root))).bus
        except LayoutError:
            settings = None
    if settings is None:
        if at:
            raise MiyabiError(
                f"{req.agent!r} names a host, but this home is on no bus; add `bus: {{url: redis://…}}` to the layout "
                "and run `miyabi up`"
            )
        return None  # AgentNotFound follows
    if at and host == settings.host:
        if name not in agents:
            raise AgentNotFound(name, agents)
        req.agent = name
        return None
    from miyabi.bus.client import Bus
    from miyabi.bus.messages import locate, post_remote

    bus = Bus(settings)
    try:
        if not at:
            host = locate(bus, name)
        msg, went = post_remote(
            home_root,
            bus,
            host,
            name,
            body,
            sender=sender,
            priority=req.priority,
            ttl=req.ttl,
            reply_to=req.reply_to,
            task=req.task,
            max_body=max_body,
        )
    finally:
        bus.close()
    if req.json:
        output.json_line(
            {
                "id": msg.id,
                "to": f"{name}@{host}",
                "from": msg.sender,
                "created": msg.created,
                "state": "sent" if went else "spooled",
            }
        )
    else:
        output.line(msg.id)
        if not went:
            output.warn(f"the bus is down; the message waits in {home_root}/state/bus-outbox and goes when it is back")
    return 0
