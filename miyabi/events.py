"""The event log: ``logs/events.jsonl`` under the miyabi home, one JSON object a line.

Every module that does something a user may later ask about (a message typed, an
agent restarted, a task assigned) appends one line here: ``{"time", "event", ...}``
with the time in RFC 3339. Writers in several processes share the file; each line is
one ``O_APPEND`` write, so lines never interleave.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from miyabi.files import append_line
from miyabi.times import now_rfc3339

FILE = "events.jsonl"
"""The event log's name under ``logs/``."""

READ_CHUNK = 4 << 20
"""Bytes :func:`events_after` reads at most in one call (a long log is read a chunk at a time)."""


def path_of(home_root: Path) -> Path:
    """``logs/events.jsonl`` under the home."""
    return home_root / "logs" / FILE


def append_event(home_root: Path, event: str, **fields: Any) -> None:
    """Append ``{"time", "event", **fields}`` to the home's event log.

    Raises:
        OSError: the log cannot be written.
    """
    rec = {"time": now_rfc3339(), "event": event, **fields}
    append_line(path_of(home_root), json.dumps(rec, ensure_ascii=False, default=str))


def read_events(home_root: Path) -> Iterator[dict[str, Any]]:
    """The events logged so far, oldest first (lines that are not JSON are skipped)."""
    try:
        f = path_of(home_root).open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec


def events_after(
    path: Path, offset: int, limit: int = READ_CHUNK
) -> tuple[list[tuple[int, int, dict[str, Any]]], int, bool]:
    """The events written to the log ``path`` past byte ``offset``, for readers that follow
    it (the dashboard's feed and metrics, notifications): whole lines only, from at most
    ``limit`` bytes.

    Returns:
        ``(start, end, event)`` for each line that is a JSON object (``start`` and ``end``:
        its byte offsets, the newline included in it), the offset after the last whole
        line read, and whether the log was replaced (shorter than ``offset``: it is read
        from its start). A missing log has no events, and offset 0.
    """
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return [], 0, offset > 0
    with f:
        size = f.seek(0, 2)
        replaced = size < offset
        if replaced:
            offset = 0
        f.seek(offset)
        data = f.read(min(size - offset, limit))
    out = []
    at = offset
    for raw in data.split(b"\n")[:-1]:
        start, at = at, at + len(raw) + 1
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append((start, at, rec))
    return out, at, replaced
