"""Messages between hosts: ``miyabi send NAME@HOST TEXT`` writes the message to
``NS:inbox:HOST``; that host's controller moves each entry into the agent's Maildir
inbox and only then acknowledges it, so an entry read twice (a crash between the two)
is recognised by its id and written once. From there the local guarantees hold: at
least once into the inbox, exactly once visible in the pane.

When Redis cannot be reached the sender keeps the message in the home's bus outbox
(``state/bus-outbox/``, one JSON file per message, written atomically); the controller
sends what is there once the bus answers again (:func:`flush_outbox`), and the id
still makes a second arrival harmless.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from miyabi import defaults
from miyabi.bus import presence
from miyabi.bus.client import ERRORS, INBOX_GROUP, Bus, BusDown, describe, ensure_group
from miyabi.config.settings import NAME_RE
from miyabi.events import EventKind, append_event
from miyabi.files import private_dir, write_atomic
from miyabi.messaging.mailbox import Message, MessageError, MessageState, enqueue, inbox, make, sanitize

log = logging.getLogger("miyabi.bus")

OUTBOX = ("state", "bus-outbox")
ID_RE = re.compile(r"^[0-9A-Za-z-]{1,64}$")
"""What a message id from another host must look like (miyabi's are UUIDv7 text)."""


def outbox_dir(home_root: Path) -> Path:
    return home_root.joinpath(*OUTBOX)


def send(bus: Bus, host: str, msg: Message) -> str:
    """Write ``msg`` (for ``msg.to`` on ``host``) to that host's message stream.
    Returns the entry id.

    Raises:
        BusDown: Redis cannot be reached.
    """
    return str(bus.call(bus.redis.xadd, bus.inbox_stream(host), {"host": host, "message": json.dumps(msg.to_json())}))


def post_remote(
    home_root: Path,
    bus: Bus,
    host: str,
    to: str,
    body: str,
    sender: str = "human",
    priority: str = "normal",
    ttl: float | None = None,
    reply_to: str | None = None,
    task: str | None = None,
    max_body: int = defaults.MAX_BODY,
) -> tuple[Message, bool]:
    """``miyabi send TO@HOST``: send a message to agent ``to`` of another host, from
    ``sender@THIS-HOST``. Returns the message and whether it went now (False: the bus is
    down and it waits in this home's bus outbox, which the controller sends later).

    Raises:
        MessageError: the body or a field is bad (see :func:`~miyabi.messaging.mailbox.make`).
        OSError: the outbox cannot be written.
    """
    if not sanitize(body).strip():
        raise MessageError("the message has no text (control characters are removed before delivery)")
    msg = make(
        to,
        body,
        sender=f"{sender}@{bus.host}" if "@" not in sender else sender,
        priority=priority,
        ttl=ttl,
        reply_to=reply_to,
        task=task,
        max_body=max_body,
    )
    try:
        send(bus, host, msg)
        went = True
    except BusDown:
        spool(home_root, host, msg)
        went = False
    append_event(home_root, EventKind.BUS_SENT, agent=to, host=host, id=msg.id, spooled=not went)
    return msg, went


def locate(bus: Bus, name: str) -> str:
    """The host that runs agent ``name``, when exactly one does (by presence).

    Raises:
        BusDown: Redis cannot be reached.
        MessageError: no host runs it, or several do.
    """
    try:
        found = [h["host"] for h in presence.hosts(bus) if any(a.get("name") == name for a in h.get("agents", []))]
    except ERRORS as e:
        raise BusDown(
            f"the bus at {bus.where} is unreachable ({describe(e)}); name the host, {name}@HOST, "
            "and the message waits until the bus is back"
        ) from None
    if not found:
        raise MessageError(f"no host on the bus runs an agent {name!r}; `miyabi status --all-hosts` lists them")
    if len(found) > 1:
        raise MessageError(f"agent {name!r} runs on hosts {', '.join(found)}; say which: {name}@{found[0]}")
    return str(found[0])


def spool(home_root: Path, host: str, msg: Message) -> Path:
    """Keep ``msg`` for ``host`` in the bus outbox until the bus answers."""
    d = private_dir(outbox_dir(home_root))
    path = d / f"{msg.id}.json"
    write_atomic(path, json.dumps({"host": host, "message": msg.to_json()}), fsync=True)
    return path


def spooled(home_root: Path) -> list[Path]:
    d = outbox_dir(home_root)
    return sorted(d.glob("*.json")) if d.is_dir() else []


def flush_outbox(bus: Bus, home_root: Path) -> int:
    """Send every message waiting in the bus outbox, oldest first (ids are UUIDv7).
    Returns how many went.

    Raises:
        BusDown: Redis stopped answering (what is left waits for the next try).
    """
    n = 0
    for path in spooled(home_root):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            msg = Message.from_json(data["message"])
            host = str(data["host"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("bus outbox: %s is not a message (%s); moved aside", path, e)
            os.replace(path, path.with_suffix(".bad"))
            continue
        send(bus, host, msg)
        path.unlink(missing_ok=True)
        append_event(home_root, EventKind.BUS_SENT, agent=msg.to, host=host, id=msg.id, spooled=True)
        n += 1
    return n


def present(home_root: Path, msg: Message) -> bool:
    """Whether a message with ``msg``'s id is in its agent's inbox in any state."""
    box = inbox(home_root, msg.to)
    for state in MessageState:
        for prefix in ("n-", "h-"):
            if (box.dir(state) / f"{prefix}{msg.id}.json").exists():
                return True
    return False


def receive(bus: Bus, home_root: Path, agents: list[str] | None, block_ms: int | None, start: str = ">") -> int:
    """Move entries of this host's message stream into the agents' inboxes (once per
    id, :func:`deliver`), then acknowledge them. Returns how many entries were read.

    Args:
        agents: this host's agent names (None: take every message).
        block_ms: how long to wait for a new entry (None: do not wait).
        start: ``>`` for new entries, ``0`` for this host's read but unacknowledged ones.

    Raises:
        redis.RedisError, OSError: the bus or the disk failed (the entry stays pending).
    """
    return bus.consume(
        INBOX_GROUP,
        bus.inbox_stream(bus.host),
        start,
        lambda f: deliver(home_root, f, agents, bus.host),
        block_ms=block_ms,
    )


def deliver(home_root: Path, fields: dict[str, str], agents: list[str] | None, host: str) -> None:
    """Put one stream entry's message in its agent's inbox unless it is there already."""
    try:
        msg = Message.from_json(json.loads(fields["message"]))
    except (KeyError, ValueError, TypeError) as e:
        log.warning("bus: an entry of %s's message stream is not a message (%s); dropped", host, e)
        return
    if msg.priority not in ("high", "normal") or not (
        msg.ttl is None or (isinstance(msg.ttl, (int, float)) and msg.ttl > 0)
    ):
        log.warning("bus: message %s on %s's stream has a bad priority or ttl; dropped", msg.id[:80], host)
        return
    if not ID_RE.match(msg.id) or not NAME_RE.match(msg.to):  # both become file names here
        log.warning(
            "bus: a message on %s's stream has a bad id or agent name (%r, %r); dropped", host, msg.id[:80], msg.to[:80]
        )
        return
    if agents is not None and msg.to not in agents:
        log.warning(
            "bus: message %s from %s is for agent %s, which host %s does not run; dropped",
            msg.id,
            msg.sender,
            msg.to,
            host,
        )
        append_event(
            home_root,
            EventKind.BUS_UNDELIVERABLE,
            agent=msg.to,
            id=msg.id,
            **{"from": msg.sender},
            reason=f"host {host} runs no agent {msg.to}",
        )
        return
    if present(home_root, msg):
        return
    enqueue(home_root, msg, via="bus")


def ensure_inbox(bus: Bus) -> None:
    """The consumer group on this host's message stream (made once)."""
    ensure_group(bus.redis, bus.inbox_stream(bus.host), INBOX_GROUP)
