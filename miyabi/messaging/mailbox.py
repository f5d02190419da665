"""Inboxes: one Maildir per agent under ``queue/<agent>/``.

A message is a JSON file. Senders write it into ``tmp/`` and rename it into ``new/``
(so a reader never sees half a file); the controller moves a delivered message to
``cur/`` (with its delivery time) and a dead letter to ``failed/`` (with the reason).
Directories are 0700 and files 0600. File names sort in delivery order: ``h-`` (high
priority) before ``n-`` (normal), then by id, a UUIDv7 whose text sorts by creation
time (and, within one process, by call order), so a sender's messages keep their
order. The layout is Maildir's (D. J. Bernstein, "Using maildir format"); measured in
../shared/TMUX.md, it lost none of 20,000 messages under concurrent writers where
read-then-truncate lost a third.

This module is on the path of ``miyabi send``, which agents run many times an hour:
it imports only the standard library, ``uuid_utils`` and miyabi's base modules.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.errors import MiyabiError
from miyabi.events import EventKind, append_event
from miyabi.files import private_dir
from miyabi.times import now_rfc3339, parse_rfc3339


class MessageState(StrEnum):
    """Where a message sits in its inbox: ``pending`` (``new/``), ``delivered``
    (``cur/``) or ``failed``, a dead letter (``failed/``)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


PRIORITIES = ("high", "normal")
"""A message's priorities: ``high`` is delivered before ``normal``."""

_DIRS = {MessageState.PENDING: "new", MessageState.DELIVERED: "cur", MessageState.FAILED: "failed"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NAME = re.compile(r"^[hn]-[0-9a-f-]{36}\.json$")


class MessageError(MiyabiError):
    """A message cannot be sent or found (bad body, unknown id, ...)."""


class CorruptMessage(MessageError):
    """An inbox file is not a message miyabi can read."""

    def __init__(self, path: Path, why: str) -> None:
        self.path = path
        super().__init__(f"{path} is not a readable message ({why}); move it out of the inbox")


def new_id() -> str:
    """A new UUIDv7 as text: unique, and sortable by creation time."""
    import uuid_utils

    return str(uuid_utils.uuid7())


def sanitize(body: str) -> str:
    """The body as it may be typed into a pane: every C0 control character except
    newline and tab, DEL, every ESC and every C1 control (U+0080-U+009F, such as the
    8-bit CSI U+009B) removed, so that no message can act as keystrokes (``C-c`` as
    ``\\x03``, a fake end of bracketed paste ``\\x1b[201~``)."""
    return _CONTROL.sub("", body)


@dataclass(frozen=True)
class Message:
    """One message.

    Attributes:
        id: UUIDv7 text.
        sender: the ``from`` field: an agent name or ``human``.
        to: the receiving agent.
        created: RFC 3339 UTC time of sending.
        body: UTF-8 text, as sent (control characters are stripped at delivery).
        priority: ``high`` or ``normal``.
        reply_to: id of the message this answers, if any.
        ttl: seconds after ``created`` the message may still be delivered, if limited.
        task: id of the task it belongs to, if any.
        extra: fields the controller adds: ``delivered``, ``failed``, ``reason``,
            ``attempts``, ``enters``, and ``retried`` (the time of the last ``miyabi
            retry``, from which a ``ttl`` counts again).
    """

    id: str
    sender: str
    to: str
    created: str
    body: str
    priority: str = "normal"
    reply_to: str | None = None
    ttl: float | None = None
    task: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return f"{'h' if self.priority == 'high' else 'n'}-{self.id}.json"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["from"] = d.pop("sender")
        extra = d.pop("extra")
        d = {k: v for k, v in d.items() if v is not None}
        d.update(extra)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Message:
        known = {"id", "from", "to", "created", "body", "priority", "reply_to", "ttl", "task"}
        return cls(
            id=str(d["id"]),
            sender=str(d.get("from", "human")),
            to=str(d["to"]),
            created=str(d["created"]),
            body=str(d["body"]),
            priority=str(d.get("priority", "normal")),
            reply_to=d.get("reply_to"),
            ttl=d.get("ttl"),
            task=d.get("task"),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def expired(self, now: float) -> bool:
        """True when the message has a TTL and ``now`` (Unix seconds) is past it. The
        TTL counts from ``created``, or from the last retry of a dead letter."""
        if self.ttl is None:
            return False
        start = str(self.extra.get("retried") or self.created)
        return now > parse_rfc3339(start) + float(self.ttl)


def make(
    to: str,
    body: str,
    sender: str = "human",
    priority: str = "normal",
    ttl: float | None = None,
    reply_to: str | None = None,
    task: str | None = None,
    max_body: int = defaults.MAX_BODY,
) -> Message:
    """Build a message, checking its body and fields.

    Raises:
        MessageError: body over ``max_body`` bytes, bad priority or TTL.
    """
    size = len(body.encode("utf-8", "surrogatepass"))
    if size > max_body:
        raise MessageError(
            f"message body is {size:,} bytes, over the limit of {max_body:,}; send a file path instead, or raise "
            "delivery.max_body in the layout"
        )
    if priority not in PRIORITIES:
        raise MessageError(f"priority {priority!r} is not valid; use high or normal")
    if ttl is not None and not ttl > 0:
        raise MessageError(f"ttl {ttl!r} must be a positive number of seconds")
    return Message(
        id=new_id(),
        sender=sender,
        to=to,
        created=now_rfc3339(),
        body=body,
        priority=priority,
        ttl=ttl,
        reply_to=reply_to,
        task=task,
    )


def post(
    home_root: Path,
    to: str,
    body: str,
    sender: str = "human",
    priority: str = "normal",
    ttl: float | None = None,
    reply_to: str | None = None,
    task: str | None = None,
    max_body: int = defaults.MAX_BODY,
) -> Message:
    """Put a message in ``to``'s inbox and log it (the ``enqueued`` event): what
    ``miyabi send`` and the dashboard's send do.

    Raises:
        MessageError: the body has no text once control characters are removed, is over
            ``max_body`` bytes, or a field is bad (see :func:`make`).
        OSError: the inbox cannot be written.
    """
    if not sanitize(body).strip():
        raise MessageError("the message has no text (control characters are removed before delivery)")
    msg = make(to, body, sender=sender, priority=priority, ttl=ttl, reply_to=reply_to, task=task, max_body=max_body)
    enqueue(home_root, msg)
    return msg


def enqueue(home_root: Path, msg: Message, **fields: Any) -> Path:
    """Put ``msg`` in its agent's inbox and log it (the ``enqueued`` event, with
    ``fields``): every message miyabi or anyone sends goes through here, so the event
    log (and the delivery latency the report and ``/metrics`` read from it) counts
    every message delivered. Returns the file in ``new/``.

    Raises:
        OSError: the inbox cannot be written.
    """
    path = inbox(home_root, msg.to).put(msg)
    append_event(
        home_root,
        EventKind.ENQUEUED,
        agent=msg.to,
        id=msg.id,
        **{"from": msg.sender},
        bytes=len(msg.body.encode("utf-8", "surrogatepass")),
        priority=msg.priority,
        **({"task": msg.task} if msg.task else {}),
        **fields,
    )
    return path


def decode_body(data: bytes, origin: str = "standard input") -> str:
    """Decode message bytes as UTF-8.

    Raises:
        MessageError: the bytes are not valid UTF-8 (naming the byte offset).
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MessageError(
            f"{origin} is not valid UTF-8 (byte {e.start}); send text, or encode binary data first (for example base64)"
        ) from None


class Inbox:
    """The Maildir of one agent.

    Args:
        root: ``queue/<agent>``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.agent = root.name

    def dir(self, state: MessageState) -> Path:
        return self.root / _DIRS[state]

    def ensure(self) -> None:
        """Create the Maildir: ``queue/``, the inbox and its four directories, each 0700.
        The home itself must exist: a removed home is not brought back.

        Raises:
            FileNotFoundError: the home does not exist.
        """
        private_dir(self.root.parent, parents=False)
        private_dir(self.root, parents=False)
        for sub in ("tmp", "new", "cur", "failed"):
            private_dir(self.root / sub, parents=False)

    def put(self, msg: Message) -> Path:
        """Enqueue ``msg``: write it under ``tmp/``, then rename it into ``new/``.

        Returns:
            the path in ``new/``.
        """
        self.ensure()
        return self._write(msg, MessageState.PENDING)

    def _write(self, msg: Message, state: MessageState) -> Path:
        """Write ``msg`` into ``tmp/`` (fsynced), then rename it into ``state``."""
        data = json.dumps(msg.to_json(), ensure_ascii=False).encode("utf-8")
        tmp = self.root / "tmp" / f"{msg.filename}.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        dest = self.dir(state) / msg.filename
        os.rename(tmp, dest)
        return dest

    def pending(self) -> list[str]:
        """File names waiting in ``new/``, in delivery order."""
        try:
            names = os.listdir(self.dir(MessageState.PENDING))
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _NAME.match(n))

    def read(self, name: str, state: MessageState = MessageState.PENDING) -> Message | None:
        """The message ``name`` in ``state``, or None if it is not there (any more).

        Raises:
            CorruptMessage: the file is not a message miyabi can read.
        """
        path = self.dir(state) / name
        try:
            return Message.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptMessage(path, str(e)) from None

    def move(self, msg: Message, src: MessageState, dest: MessageState, **extra: Any) -> Path:
        """Move ``msg`` from state ``src`` to ``dest``, recording ``extra`` fields in it.

        The file is rewritten in place (tmp → rename over it), then renamed into
        ``dest``: each step is atomic, so at every instant the message is in exactly
        one state. If the file is gone (dropped meanwhile), nothing is written.
        """
        updated = Message(**{**asdict(msg), "extra": {**msg.extra, **extra}})
        where = self.dir(src) / msg.filename
        if not where.exists():
            return where
        path = self._write(updated, src)
        if src == dest:  # an update in place
            return path
        dest_path = self.dir(dest) / msg.filename
        os.rename(path, dest_path)
        return dest_path

    def quarantine(self, name: str, reason: str) -> Path:
        """Move an unreadable file from ``new/`` to ``failed/`` as it is."""
        dest = self.dir(MessageState.FAILED) / name
        os.rename(self.dir(MessageState.PENDING) / name, dest)
        return dest

    def cleanup(self) -> None:
        """Remove stale files from ``tmp/`` (writes that a crash interrupted before their
        rename; the message they held was never enqueued or was kept in place)."""
        try:
            names = os.listdir(self.root / "tmp")
        except FileNotFoundError:
            return
        for n in names:
            p = self.root / "tmp" / n
            try:
                if time.time() - p.stat().st_mtime > defaults.TMP_MAX_AGE:
                    p.unlink()
            except OSError:
                pass

    def find(self, msg_id: str) -> tuple[MessageState, Message] | None:
        """The state and message with id ``msg_id`` (or the first whose id starts with it)."""
        found = self.matches(msg_id, limit=1)
        return found[0] if found else None

    def matches(self, prefix: str, limit: int | None = None) -> list[tuple[MessageState, Message]]:
        """Every message whose id starts with ``prefix`` (at most ``limit``), with its state."""
        return list(itertools.islice(self._scan(tuple(MessageState), prefix), limit))

    def list(self, states: tuple[MessageState, ...] = (MessageState.PENDING,)) -> list[tuple[MessageState, Message]]:
        """Messages in ``states``, each state in delivery order."""
        return list(self._scan(states))

    def _scan(self, states: tuple[MessageState, ...], prefix: str = "") -> Iterator[tuple[MessageState, Message]]:
        """Readable messages in ``states`` whose id starts with ``prefix``, each state in
        delivery order (unreadable files are skipped: delivery quarantines them)."""
        for state in states:
            try:
                names = sorted(n for n in os.listdir(self.dir(state)) if _NAME.match(n) and n[2:-5].startswith(prefix))
            except FileNotFoundError:
                continue
            for n in names:
                try:
                    m = self.read(n, state)
                except CorruptMessage:
                    continue
                if m is not None:
                    yield state, m


def inbox(home_root: Path, agent: str) -> Inbox:
    """The inbox of ``agent`` under the home ``home_root``."""
    return Inbox(home_root / "queue" / agent)


def find_message(home_root: Path, msg_id: str) -> tuple[Inbox, MessageState, Message]:
    """The inbox, state and message with id ``msg_id`` (or a unique prefix of it), in
    any agent's inbox under the home.

    Raises:
        MessageError: no message has that id, or the prefix matches several.
    """
    queue = home_root / "queue"
    found: list[tuple[Inbox, MessageState, Message]] = []
    if queue.is_dir():
        for d in sorted(queue.iterdir()):
            if d.is_dir():
                box = Inbox(d)
                found += [(box, state, m) for state, m in box.matches(msg_id, limit=2)]
    if not found:
        raise MessageError(f"no message with id {msg_id!r} in {queue}; list them with `miyabi inbox AGENT --all`")
    exact = [f for f in found if f[2].id == msg_id]
    if len(exact) == 1:
        return exact[0]
    if len(found) > 1:
        raise MessageError(f"id {msg_id!r} matches more than one message; give more of it (or all of it)")
    return found[0]


def retry(home_root: Path, msg_id: str) -> tuple[Inbox, Message]:
    """Put a dead letter back in its inbox, to be delivered again: its failure, attempts
    and Enter count are forgotten, and its ``ttl`` (if it has one) counts again from
    now, so a message that died of old age gets its whole ttl once more.

    Returns:
        the inbox and the message as it is now pending.

    Raises:
        MessageError: no such message, or it is not a dead letter.
    """
    box, state, msg = find_message(home_root, msg_id)
    if state != MessageState.FAILED:
        raise MessageError(f"message {msg.id} is {state}; it is not a dead letter: only failed messages can be retried")
    extra = {k: v for k, v in msg.extra.items() if k not in ("failed", "reason", "attempts", "enters")}
    extra["retried"] = now_rfc3339()
    again = replace(msg, extra=extra)
    box.move(again, MessageState.FAILED, MessageState.PENDING)
    append_event(home_root, EventKind.RETRY, agent=box.agent, id=msg.id, ttl=msg.ttl)
    return box, again


def drop(home_root: Path, msg_id: str) -> tuple[Inbox, Message]:
    """Discard a pending message.

    Raises:
        MessageError: no such message, or it is not pending.
    """
    box, state, msg = find_message(home_root, msg_id)
    if state != MessageState.PENDING:
        raise MessageError(f"message {msg.id} is {state}; only pending messages can be dropped")
    (box.dir(MessageState.PENDING) / msg.filename).unlink(missing_ok=True)
    append_event(home_root, EventKind.DROPPED, agent=box.agent, id=msg.id)
    return box, msg
