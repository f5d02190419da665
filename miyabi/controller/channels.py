"""Each sandboxed agent's own channel: a unix socket the controller serves, bound
read-only into that agent's sandbox only (see :mod:`miyabi.config.sandbox`), through
which the agent's ``miyabi`` commands reach the ensemble.

Whoever connects to an agent's socket is that agent: no other sandbox has it, and the
miyabi home that holds it is hidden from every sandbox. The peer's pid
(``SO_PEERCRED``) must moreover be in the agent's pane's process tree when the pane is
known. Each connection carries one request, a JSON line, and gets one JSON line back:

- ``{"op": "send", "to": NAME, "text": ..., "priority", "ttl", "reply_to", "task"}``:
  a message from the agent (never from anyone else) → ``{"ok": true, "id": ...}``;
- ``{"op": "broadcast", "text": ..., "exclude": [...]}``: to every other agent;
- ``{"op": "done", "task": REF, "note": ...}`` and ``{"op": "fail", "task": REF,
  "reason": ...}``: only a task the agent holds (assigned or in progress);
- ``{"op": "hook", "record": {...}}``: a hook event, appended to its hook log;
- ``{"op": "inbox", "all": bool}``: its own messages.

Anything else, and any refusal, is ``{"ok": false, "error": "one line"}``.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.config.model import Agent
from miyabi.config.sandbox import CHANNEL_SOCKET, channel_dir
from miyabi.controller.view import messages
from miyabi.errors import MiyabiError
from miyabi.files import private_dir
from miyabi.messaging.mailbox import MessageState, post
from miyabi.supervision.processes import proc_stat
from miyabi.work.model import HELD, TaskState
from miyabi.work.store import Store

log = logging.getLogger(__name__)

MAX_REQUEST = 2 << 20
"""Longest request line, in bytes (a message body is at most ``delivery.max_body``)."""


class Refused(MiyabiError):
    """A channel request that the agent may not make, or that is malformed."""


class Channels:
    """The channel sockets of the layout's sandboxed agents, and the thread that serves them.

    Args:
        home_root: the miyabi home.
        store: the task store.
        names: the agent names of the ensemble now (who may be sent to).
        max_body: the largest message body now, in bytes.
        pane_pid: an agent's pane's pid, when known (None: not known now).
    """

    def __init__(
        self,
        home_root: Path,
        store: Store,
        names: Callable[[], Sequence[str]],
        max_body: Callable[[], int],
        pane_pid: Callable[[str], int | None],
    ) -> None:
        self.home_root = home_root
        self.store = store
        self.names = names
        self.max_body = max_body
        self.pane_pid = pane_pid
        self._selector = selectors.DefaultSelector()
        self._sockets: dict[str, socket.socket] = {}
        self._lock = threading.Lock()

    # -- the sockets

    def sync(self, agents: Sequence[Agent]) -> None:
        """Have a listening socket for each sandboxed agent of ``agents``, and none for
        any other."""
        wanted = {a.name for a in agents if a.sandbox is not None}
        with self._lock:
            for name in sorted(set(self._sockets) - wanted):
                self._close(name)
            for name in sorted(wanted - set(self._sockets)):
                try:
                    self._open(name)
                except OSError as e:
                    log.warning("cannot open the channel of %s: %s", name, e)

    def _open(self, name: str) -> None:
        d = private_dir(channel_dir(self.home_root, name))
        # a path of any length: bound through the directory's descriptor (sun_path holds 108 bytes)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            path = f"/proc/self/fd/{fd}/{CHANNEL_SOCKET}"
            try:
                os.unlink(d / CHANNEL_SOCKET)
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
        finally:
            os.close(fd)
        sock.listen(16)
        sock.setblocking(False)
        self._sockets[name] = sock
        self._selector.register(sock, selectors.EVENT_READ, name)

    def _close(self, name: str) -> None:
        sock = self._sockets.pop(name)
        self._selector.unregister(sock)
        sock.close()
        try:
            os.unlink(channel_dir(self.home_root, name) / CHANNEL_SOCKET)
        except OSError:
            pass

    def close(self) -> None:
        """Close every socket (and remove its file)."""
        with self._lock:
            for name in list(self._sockets):
                self._close(name)
        self._selector.close()

    # -- serving

    def serve(self, stop: threading.Event) -> None:
        """Accept connections until ``stop`` is set; each is answered on a thread of its own."""
        while not stop.is_set():
            if not self._sockets:
                stop.wait(defaults.CHANNEL_POLL)
                continue
            try:
                ready = self._selector.select(timeout=defaults.CHANNEL_POLL)
            except (OSError, ValueError):  # closed meanwhile
                stop.wait(defaults.CHANNEL_POLL)
                continue
            for key, _ in ready:
                try:
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:  # taken by nobody, or closed meanwhile
                    continue
                threading.Thread(target=self._answer, args=(conn, str(key.data)), daemon=True).start()

    def _answer(self, conn: socket.socket, agent: str) -> None:
        with conn:
            conn.settimeout(defaults.CHANNEL_TIMEOUT)
            try:
                # the request is read before the peer is judged: a client refused before
                # it wrote would get a broken pipe, not the refusal (seen under load)
                try:
                    request = _read_request(conn)
                except (MiyabiError, OSError, ValueError):
                    self._check_peer(conn, agent)
                    raise
                self._check_peer(conn, agent)
                reply: dict[str, Any] = {"ok": True, **self.handle(agent, request)}
            except (MiyabiError, OSError, ValueError) as e:
                reply = {"ok": False, "error": str(e).splitlines()[0] if str(e) else type(e).__name__}
            try:
                conn.sendall(json.dumps(reply, ensure_ascii=False).encode() + b"\n")
            except OSError:
                pass

    def _check_peer(self, conn: socket.socket, agent: str) -> None:
        """The connecting process is in ``agent``'s pane's process tree (when the pane is known).

        Raises:
            Refused: it is not.
        """
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
        root = self.pane_pid(agent)
        if root is None or not pid:
            return
        for _ in range(64):
            if pid == root:
                return
            st = proc_stat(pid)
            if st is None or st.ppid <= 1:
                break
            pid = st.ppid
        raise Refused(f"the process on {agent}'s channel is not {agent}'s")

    # -- requests

    def handle(self, agent: str, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out ``request`` for ``agent``; what the reply adds to ``ok``.

        Raises:
            Refused: the request is malformed or not the agent's to make.
            MiyabiError: the core refused it (no such task, a bad message).
            OSError: the home cannot be written.
        """
        op = request.get("op")
        if op in ("send", "broadcast"):
            if op == "send":
                targets = [str(request.get("to"))]
            else:
                exclude = {str(n) for n in request.get("exclude") or ()}
                targets = [n for n in self.names() if n != agent and n not in exclude]
                if not targets:
                    raise Refused("nobody to send to: every agent is excluded")
            sent = [self._post(agent, to, request) for to in targets]
            return {"sent": [{"id": m.id, "to": m.to, "from": m.sender, "created": m.created} for m in sent]}
        if op == "done":
            t = self.store.done(self.store.get(str(request.get("task"))).id, str(request.get("note") or "done"), agent)
            return {"task": t.id, "state": str(t.state)}
        if op == "fail":
            reason = str(request.get("reason") or "").strip()
            if not reason:
                raise Refused("a task fails with a reason: give --reason")
            t = self._held(agent, str(request.get("task")))
            t = self.store.set_state(t.id, TaskState.FAILED, reason, expect=HELD)
            return {"task": t.id, "state": str(t.state)}
        if op == "hook":
            self._hook(agent, request.get("record"))
            return {}
        if op == "inbox":
            states = tuple(MessageState) if request.get("all") else (MessageState.PENDING,)
            return {"messages": messages(self.home_root, agent, states)}
        raise Refused(f"{op!r} is not a request the channel takes (send, broadcast, done, fail, hook, inbox)")

    def _post(self, agent: str, to: str, request: dict[str, Any]) -> Any:
        names = self.names()
        if to not in names:
            raise Refused(f"no agent {to!r} in this ensemble (agents: {', '.join(names)})")
        ttl = request.get("ttl")
        return post(
            self.home_root,
            to,
            str(request.get("text") or ""),
            sender=agent,
            priority=str(request.get("priority") or "normal"),
            ttl=float(ttl) if isinstance(ttl, (int, float)) else None,
            reply_to=request.get("reply_to") or None,
            task=str(request["task"]) if request.get("task") else None,
            max_body=self.max_body(),
        )

    def _held(self, agent: str, ref: str) -> Any:
        t = self.store.get(ref)
        if t.agent != agent or t.state not in HELD:
            raise Refused(f"task {t.id} is not held by {agent} (it is {t.state}, agent {t.agent or '-'})")
        return t

    def _hook(self, agent: str, record: Any) -> None:
        if not isinstance(record, dict) or not isinstance(record.get("event"), str):
            raise Refused("a hook record is a JSON object with an event")
        line = json.dumps(record, ensure_ascii=False) + "\n"
        d = private_dir(self.home_root / "run" / "hooks")
        fd = os.open(d / f"{agent}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _read_request(conn: socket.socket) -> dict[str, Any]:
    """One JSON object on one line, at most :data:`MAX_REQUEST` bytes.

    Raises:
        Refused: too long, not JSON, not an object.
        OSError: the connection failed or timed out.
    """
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise Refused(f"the request is over {MAX_REQUEST} bytes")
    try:
        request = json.loads(data.partition(b"\n")[0] or b"null")
    except ValueError:
        raise Refused("the request is not JSON") from None
    if not isinstance(request, dict):
        raise Refused("the request is not a JSON object")
    return request
