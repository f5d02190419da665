"""``miyabi`` inside a sandbox: the commands an agent has there go over its own channel
(``$MIYABI_CHANNEL``, a unix socket the controller serves; see
:mod:`miyabi.controller.channels`), since the miyabi home is hidden from it.

An agent in a sandbox has ``send``, ``broadcast``, ``task done``, ``task fail``,
``inbox`` (its own) and ``hook`` (see :mod:`miyabi.cli.hook`); any other command says
in one line that it is not available there. The controller decides: the agent sends
as itself only and ends only the tasks it holds. Help (``--help``) is the Typer
app's, as outside.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from typing import Any

from miyabi.cli import output, params
from miyabi.cli.light import NotLight, QuietParser
from miyabi.errors import EXIT_ERROR, EXIT_USAGE, MiyabiError

COMMANDS = ("send", "broadcast", "task done", "task fail", "inbox", "hook")
"""What an agent in a sandbox may run."""

TIMEOUT = 10.0
"""Seconds to wait for the controller's answer (``defaults.CHANNEL_TIMEOUT``, which
this light path does not import)."""


class ChannelError(MiyabiError):
    """The channel refused a request, or could not be reached."""


def request(path: str, req: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one request to the channel at ``path``; its answer.

    Raises:
        ChannelError: the channel is not there (no controller runs), did not answer,
            or refused the request (its reason).
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            _connect(s, path)
            s.sendall(json.dumps(req, ensure_ascii=False).encode() + b"\n")
            data = b""
            while b"\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        raise ChannelError(
            f"no controller answers on {path}; nothing was sent or recorded: try again once the controller runs"
        ) from None
    except OSError as e:
        raise ChannelError(f"the channel {path} failed: {e.strerror or e}") from None
    try:
        reply = json.loads(data.partition(b"\n")[0])
    except ValueError:
        raise ChannelError(f"the channel {path} gave no answer") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise ChannelError(str(reply.get("error") if isinstance(reply, dict) else reply))
    return reply


def _connect(s: socket.socket, path: str) -> None:
    """Connect ``s`` to ``path``, one longer than a socket address holds (108 bytes)
    through its directory's descriptor.

    Raises:
        OSError: as connect(2).
    """
    if len(path.encode()) < 100:
        s.connect(path)
        return
    head, _, name = path.rpartition("/")
    fd = os.open(head or "/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        s.connect(f"/proc/self/fd/{fd}/{name}")
    finally:
        os.close(fd)


def _task_parser(what: str) -> argparse.ArgumentParser:
    ap = QuietParser(f"task {what}")
    ap.add_argument("task")
    ap.add_argument("--note" if what == "done" else "--reason", dest="text", default="", required=what == "fail")
    for opt in ("--home", "--socket"):
        ap.add_argument(opt, default=None)
    return ap


def _inbox_parser() -> argparse.ArgumentParser:
    ap = QuietParser("inbox")
    ap.add_argument("agent", nargs="?", default=None)
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--json", action="store_true")
    for opt in ("--home", "--socket", "--layout"):
        ap.add_argument(opt, default=None)
    return ap


def main(argv: list[str], path: str) -> int | None:
    """Run ``miyabi ARGV`` over the channel at ``path``; the exit code, or None for
    ``--help`` (the Typer app shows it)."""
    if "-h" in argv or "--help" in argv or not argv:
        return None
    me = os.environ.get("MIYABI_AGENT") or "?"
    command = " ".join(argv[:2]) if argv[0] == "task" else argv[0]
    try:
        if command in ("send", "broadcast"):
            return _send(command, argv[1:], path, me)
        if command in ("task done", "task fail"):
            args = _task_parser(argv[1]).parse_args(argv[2:])
            ref = params.task_ref(args.task)
            field = "note" if argv[1] == "done" else "reason"
            reply = request(path, {"op": argv[1], "task": ref, field: args.text})
            state = reply.get("state")
            if state == "verifying":
                output.line(f"task {reply['task']}: the checks run now; you hear back if one fails")
            else:
                output.line(f"task {reply['task']} {state}")
            return 0
        if command == "inbox":
            args = _inbox_parser().parse_args(argv[1:])
            if args.agent not in (None, me):
                raise ChannelError(f"an agent in a sandbox reads its own inbox only ({me}), not {args.agent}'s")
            items = request(path, {"op": "inbox", "all": args.all})["messages"]
            if args.json:
                output.json_line(items)
            else:
                for i in items:
                    output.line(
                        f"{i['id']}  {i['state']}  {i['from']}  {i['body'].splitlines()[0] if i['body'] else ''}"
                    )
            return 0
    except (NotLight, ValueError) as e:
        output.usage_error(f"miyabi {command}", str(e))
        return EXIT_USAGE
    except MiyabiError as e:
        output.error(str(e))
        return EXIT_ERROR
    output.error(f"`miyabi {command}` is not available inside a sandbox; an agent there has: {', '.join(COMMANDS)}")
    return EXIT_ERROR


def _send(prog: str, argv: list[str], path: str, me: str) -> int:
    """``miyabi send`` / ``broadcast`` over the channel.

    Raises:
        NotLight: the arguments do not parse.
        ChannelError: refused (another sender, an unknown agent, a bad body).
    """
    from miyabi.cli.send import _parser, _read_text

    args = _parser(prog).parse_intermixed_args(argv)  # the same arguments as outside
    if args.sender not in (None, me):
        raise ChannelError(f"an agent in a sandbox sends as itself ({me}) only, not as {args.sender}")
    req: dict[str, Any] = {"op": prog, "text": _read_text(args.text), "priority": args.priority, "ttl": args.ttl}
    if prog == "send":
        req.update(to=args.agent, reply_to=args.reply_to, task=args.task)
    else:
        req["exclude"] = args.exclude
    sent = [{**m, "state": "pending"} for m in request(path, req)["sent"]]
    if args.json:  # as outside a sandbox
        output.json_line(sent[0] if prog == "send" else sent)
    else:
        for m in sent:
            output.line(m["id"] if prog == "send" else f"{m['to']} {m['id']}")
    return 0
