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
