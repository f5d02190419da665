"""``miyabi hook EVENT [PAYLOAD]``: what an agent CLI runs from its hooks.

It appends one JSON line to ``$MIYABI_HOME/run/hooks/$MIYABI_AGENT.jsonl`` (the
agent's hook log, which the controller follows; in a sandbox, where the home is
hidden, it hands the line to the controller over ``$MIYABI_CHANNEL``) and exits 0 at once, printing
nothing: a hook must never block, slow or fail the agent, and whatever a Claude Code
hook prints on stdout would become part of the agent's context. It imports nothing
beyond the standard library (and no more of that than it needs), so the hooks miyabi
installs run this file directly, ``python -I -S hook.py EVENT``: a bare interpreter
start-up, ``json`` and one ``write(2)`` (see benchmarks/bench_agents.py).

The payload is the JSON a CLI hands over: on stdin (Claude Code; read only when stdin
is not a terminal, for at most 1 MiB and 0.5 s), or as the last argument (Codex's
``notify``). The line keeps what miyabi reads of it (the event, the prompt, the tool
and its input, the notification), not the whole payload.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing costs 3 ms at start-up; annotations are strings here
    from typing import Any

MAX_PAYLOAD = 1 << 20
MAX_FIELD = 16_000


def _stdin_payload() -> str:
    try:
        if os.isatty(0):
            return ""
    except OSError:
        return ""
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + 0.5
    while size < MAX_PAYLOAD:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            ready, _, _ = select.select([0], [], [], left)
        except (OSError, ValueError):
            break
        if not ready:
            break
        try:
            chunk = os.read(0, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _summary(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("command", "file_path", "path", "url", "description"):
            if isinstance(value.get(key), str):
                return str(value[key])[:500]
        return json.dumps(value, ensure_ascii=False)[:500]
    return str(value)[:500]


def record(event: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The hook-log line for ``event`` and a CLI's payload."""
    rec: dict[str, Any] = {"t": round(time.time(), 6), "event": event, "pid": os.getppid()}
    if "session_id" in payload:
        rec["session"] = str(payload["session_id"])
    if isinstance(payload.get("prompt"), str):
        rec["prompt"] = payload["prompt"][:MAX_FIELD]
    if "tool_name" in payload:
        rec["tool"] = str(payload["tool_name"])
        rec["input"] = _summary(payload.get("tool_input"))
    if isinstance(payload.get("message"), str):
        rec["message"] = payload["message"][:500]
    if isinstance(payload.get("error"), str):  # Claude Code's StopFailure
        rec["error"] = payload["error"][:100]
        if isinstance(payload.get("last_assistant_message"), str):
            rec["message"] = payload["last_assistant_message"][:500]
    if "notification_type" in payload:
        rec["kind"] = str(payload["notification_type"])
    if isinstance(payload.get("transcript_path"), str):
        rec["transcript"] = payload["transcript_path"]
    if "type" in payload:  # Codex notify
        rec["kind"] = str(payload["type"])
        inputs = payload.get("input-messages")
        if isinstance(inputs, list) and inputs:
            rec["prompt"] = str(inputs[-1])[:MAX_FIELD]
        if "thread-id" in payload:
            rec["session"] = str(payload["thread-id"])
    return rec


def _through(path: str, rec: dict[str, Any]) -> None:
    """Hand ``rec`` to the controller over the agent's channel (see
    :mod:`miyabi.controller.channels`), waiting at most 2 s for its answer."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        s.connect(path)
        s.sendall(json.dumps({"op": "hook", "record": rec}, ensure_ascii=False).encode() + b"\n")
        s.recv(4096)


def main(argv: list[str]) -> int:
    """Record one hook event; always returns 0."""
    try:
        home, agent = os.environ.get("MIYABI_HOME"), os.environ.get("MIYABI_AGENT")
        if not argv or not home or not agent or "/" in agent:
            return 0
        event = argv[0]
        raw = argv[-1] if len(argv) > 1 else _stdin_payload()
        try:
            payload = json.loads(raw) if raw.strip() else {}
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        channel = os.environ.get("MIYABI_CHANNEL")
        if channel:  # in a sandbox: the home is hidden; the agent's own channel takes it
            _through(channel, record(event, payload))
            return 0
        line = json.dumps(record(event, payload), ensure_ascii=False) + "\n"
        d = os.path.join(home, "run", "hooks")
        os.makedirs(d, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(d, f"{agent}.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except Exception as e:  # noqa: BLE001 - a hook must never fail the agent
        try:
            sys.stderr.write(f"miyabi hook: {e}\n")
        except (OSError, ValueError):
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
