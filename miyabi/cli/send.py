"""``miyabi send`` and ``miyabi broadcast``: the light path.

Agents run ``miyabi send`` many times an hour, so these two commands are parsed with
argparse and import neither typer, rich nor yaml: the agent names come from
``run/up.json`` (written by ``miyabi up``), and the layout is read only when that file
is missing. Sending works with the controller down: the message waits in the inbox.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from miyabi.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, AgentNotFound, MiyabiError


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


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _parser(prog: str) -> argparse.ArgumentParser:
    ap = _Parser(prog=f"miyabi {prog}", description=(__doc__ or "").splitlines()[0])
    if prog == "send":
        ap.add_argument("agent", help="the receiving agent")
    ap.add_argument("text", nargs="?", help="message text, or - to read it from standard input")
    ap.add_argument("--from", dest="sender", default=None, help="sender name [default: $MIYABI_AGENT, else human]")
    ap.add_argument("--priority", choices=("high", "normal"), default="normal")
    ap.add_argument("--ttl", type=float, default=None, help="seconds the message may wait before it is a dead letter")
    if prog == "send":
        ap.add_argument("--reply-to", default=None, help="id of the message this answers")
        ap.add_argument("--task", default=None, help="id of the task this belongs to")
    else:
        ap.add_argument("--except", dest="exclude", nargs="*", default=[], metavar="NAME", help="agents to leave out")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument(
        "--home",
        default=None,
        help="miyabi home [default: $MIYABI_HOME, else the ensemble's on --socket, else the current directory]",
    )
    ap.add_argument(
        "--socket",
        "-L",
        default=None,
        help="tmux socket of the ensemble, which tells its home [default: $MIYABI_SOCKET]",
    )
    ap.add_argument("--layout", "-f", default=None, help="layout file [default: the one `miyabi up` last used here]")
    return ap


def _body(text: str | None) -> str:
    from miyabi.messaging.mailbox import MessageError, decode_body

    if text is None:
        raise MessageError("no message text; give TEXT, or - to read it from standard input")
    if text == "-":
        return decode_body(sys.stdin.buffer.read())
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 on the command line
        raise MessageError("TEXT is not valid UTF-8; send text, or pipe the data through base64 into `-`") from None
    return text


def main(prog: str, argv: list[str]) -> int:
    """Run ``miyabi send`` (``prog == "send"``) or ``broadcast``; return the exit code."""
    ap = _parser(prog)
    try:
        args = ap.parse_intermixed_args(argv)
    except _UsageError as e:
        sys.stderr.write(f"miyabi {prog}: {e}; see `miyabi {prog} --help`\n")
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return EXIT_USAGE if e.code else 0
    try:
        return _run(prog, args)
    except MiyabiError as e:
        for line in e.lines():
            sys.stderr.write(f"miyabi: {line}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("miyabi: interrupted\n")
        return EXIT_INTERRUPTED
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        sys.stderr.write(f"miyabi: {e.strerror or e}{where}\n")
        return EXIT_ERROR


def _run(prog: str, args: argparse.Namespace) -> int:
    from miyabi.cli.where import locate_home
    from miyabi.defaults import MAX_BODY
    from miyabi.messaging.mailbox import MessageError, post, sanitize

    home_root = locate_home(args.home, args.socket or os.environ.get("MIYABI_SOCKET") or None).root
    agents, max_body = known_agents(home_root, args.layout)
    sender = args.sender or os.environ.get("MIYABI_AGENT") or "human"
    body = _body(args.text)
    if not sanitize(body).strip():
        raise MessageError("the message has no text (control characters are removed before delivery)")
    if prog == "send":
        remote = _remote(home_root, args, agents, sender, body, int(max_body or MAX_BODY))
        if remote is not None:
            return remote
        if args.agent not in agents:
            raise AgentNotFound(args.agent, agents)
        targets = [args.agent]
    else:
        for name in args.exclude:
            if name not in agents:
                raise AgentNotFound(name, agents)
        targets = [a for a in agents if a not in args.exclude and a != sender]
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
                priority=args.priority,
                ttl=args.ttl,
                reply_to=getattr(args, "reply_to", None),
                task=getattr(args, "task", None),
                max_body=int(max_body or MAX_BODY),
            )
        )
    if args.json:
        out = [{"id": m.id, "to": m.to, "from": m.sender, "created": m.created, "state": "pending"} for m in sent]
        sys.stdout.write(json.dumps(out[0] if prog == "send" else out) + "\n")
    else:
        for m in sent:
            sys.stdout.write(f"{m.id}\n" if prog == "send" else f"{m.to} {m.id}\n")
    return 0


def _remote(
    home_root: Path, args: argparse.Namespace, agents: list[str], sender: str, body: str, max_body: int
) -> int | None:
    """``send NAME@HOST`` (or a NAME only another host runs) with a ``bus:``: through the
    bus. None when the message is for this host."""
    name, at, host = args.agent.partition("@")
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
            settings = load(shipped.for_command(args.layout, Home(home_root))).bus
        except LayoutError:
            settings = None
    if settings is None:
        if at:
            raise MiyabiError(
                f"{args.agent!r} names a host, but this home is on no bus; add `bus: {{url: redis://…}}` to the layout "
                "and run `miyabi up`"
            )
        return None  # AgentNotFound follows
    if at and host == settings.host:
        if name not in agents:
            raise AgentNotFound(name, agents)
        args.agent = name
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
            priority=args.priority,
            ttl=args.ttl,
            reply_to=args.reply_to,
            task=args.task,
            max_body=max_body,
        )
    finally:
        bus.close()
    if args.json:
        sys.stdout.write(
            json.dumps(
                {
                    "id": msg.id,
                    "to": f"{name}@{host}",
                    "from": msg.sender,
                    "created": msg.created,
                    "state": "sent" if went else "spooled",
                }
            )
            + "\n"
        )
    else:
        sys.stdout.write(f"{msg.id}\n")
        if not went:
            sys.stderr.write(
                f"miyabi: the bus is down; the message waits in {home_root}/state/bus-outbox and goes when it is back\n"
            )
    return 0
