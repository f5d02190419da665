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
it imports only the standard library and ``uuid_utils``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from miyabi.errors import MiyabiError

MAX_BODY = 1024 * 1024
"""Largest message body accepted, in bytes of UTF-8 (layout key ``delivery.max_body``)."""

STATES = ("pending", "delivered", "failed")
_DIRS = {"pending": "new", "delivered": "cur", "failed": "failed"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NAME = re.compile(r"^[hn]-[0-9a-f-]{36}\.json$")


class MessageError(MiyabiError):
    """A message cannot be sent or found (bad body, unknown id, ...)."""


class CorruptMessage(MessageError):
    """An inbox file is not a message miyabi can read."""

    def __init__(self, path: Path, why: str) -> None:
        self.path = path
        super().__init__(f"{path} is not a readable message ({why}); move it out of the inbox")


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with milliseconds (``2026-11-22T04:05:06.789Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """RFC 3339 text → Unix seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


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
        extra: fields the controller adds: ``delivered``, ``failed``, ``reason``, ``attempts``.
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
        """True when the message has a TTL and ``now`` (Unix seconds) is past it."""
        return self.ttl is not None and now > parse_time(self.created) + float(self.ttl)


def make(to: str, body: str, sender: str = "human", priority: str = "normal", ttl: float | None = None,
         reply_to: str | None = None, task: str | None = None, max_body: int = MAX_BODY) -> Message:
    """Build a message, checking its body and fields.

    Raises:
        MessageError: body over ``max_body`` bytes, bad priority or TTL.
    """
    size = len(body.encode("utf-8", "surrogatepass"))
    if size > max_body:
        raise MessageError(f"message body is {size:,} bytes, over the limit of {max_body:,}; send a file path instead, or raise delivery.max_body in the layout")
    if priority not in ("high", "normal"):
        raise MessageError(f"priority {priority!r} is not valid; use high or normal")
    if ttl is not None and not ttl > 0:
        raise MessageError(f"ttl {ttl!r} must be a positive number of seconds")
    return Message(id=new_id(), sender=sender, to=to, created=now_rfc3339(), body=body, priority=priority,
                   ttl=ttl, reply_to=reply_to, task=task)


def decode_body(data: bytes, origin: str = "standard input") -> str:
    """Decode message bytes as UTF-8.

    Raises:
        MessageError: the bytes are not valid UTF-8 (naming the byte offset).
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MessageError(f"{origin} is not valid UTF-8 (byte {e.start}); send text, or encode binary data first (for example base64)") from None


class Inbox:
    """The Maildir of one agent.

    Args:
        root: ``queue/<agent>``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.agent = root.name

    def dir(self, state: str) -> Path:
        return self.root / _DIRS[state]

    def ensure(self) -> None:
        """Create the Maildir (0700 directories)."""
        for sub in ("tmp", "new", "cur", "failed"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    def put(self, msg: Message) -> Path:
        """Enqueue ``msg``: write it under ``tmp/``, then rename it into ``new/``.

        Returns:
            the path in ``new/``.
        """
        self.ensure()
        return self._write(msg, "pending")

    def _write(self, msg: Message, state: str) -> Path:
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
            names = os.listdir(self.dir("pending"))
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _NAME.match(n))

    def read(self, name: str, state: str = "pending") -> Message | None:
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

    def move(self, msg: Message, src: str, dest: str, **extra: Any) -> Path:
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
        dest = self.dir("failed") / name
        os.rename(self.dir("pending") / name, dest)
        return dest

    def cleanup(self) -> None:
        """Remove stale files from ``tmp/`` (writes that a crash interrupted before their
        rename; the message they held was never enqueued or was kept in place)."""
        import time as _time

        try:
            names = os.listdir(self.root / "tmp")
        except FileNotFoundError:
            return
        for n in names:
            p = self.root / "tmp" / n
            try:
                if _time.time() - p.stat().st_mtime > 3600:
                    p.unlink()
            except OSError:
                pass

    def find(self, msg_id: str) -> tuple[str, Message] | None:
        """The state and message with id ``msg_id`` (or an unambiguous prefix of it)."""
        for state in STATES:
            try:
                names = os.listdir(self.dir(state))
            except FileNotFoundError:
                continue
            for n in names:
                if _NAME.match(n) and n[2:-5].startswith(msg_id):
                    try:
                        m = self.read(n, state)
                    except CorruptMessage:
                        continue
                    if m is not None:
                        return state, m
        return None

    def list(self, states: tuple[str, ...] = ("pending",)) -> list[tuple[str, Message]]:
        """Messages in ``states``, each state in delivery order."""
        out: list[tuple[str, Message]] = []
        for state in states:
            try:
                names = sorted(n for n in os.listdir(self.dir(state)) if _NAME.match(n))
            except FileNotFoundError:
                continue
            for n in names:
                try:
                    m = self.read(n, state)
                except CorruptMessage:
                    continue
                if m is not None:
                    out.append((state, m))
        return out


def inbox(home_root: Path, agent: str) -> Inbox:
    """The inbox of ``agent`` under the home ``home_root``."""
    return Inbox(home_root / "queue" / agent)


def append_event(home_root: Path, event: str, **fields: Any) -> None:
    """Append one line to ``logs/events.jsonl``: ``{"time", "event", ...fields}``.
    One ``write`` with O_APPEND, so concurrent writers never interleave a line."""
    rec = {"time": now_rfc3339(), "event": event, **fields}
    line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
    logs = home_root / "logs"
    logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(logs / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
