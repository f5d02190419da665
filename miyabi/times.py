"""Times as miyabi writes them: RFC 3339, UTC, with milliseconds (``2026-11-22T04:05:06.789Z``).

Every time in JSON that miyabi prints or stores in files (messages, events, ``--json``
output, reports) uses this form; durations stay numbers of seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(unix: float) -> str:
    """Unix seconds → RFC 3339 text in UTC with milliseconds."""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_rfc3339() -> str:
    """The current time as RFC 3339 text (see :func:`rfc3339`)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> float:
    """RFC 3339 text → Unix seconds.

    Raises:
        ValueError: ``text`` is not an RFC 3339 time.
    """
    return datetime.fromisoformat(text).timestamp()


def file_tag() -> str:
    """The current UTC time for a file name, sortable (``20261122T040506.789000Z``)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def how_often(n: int) -> str:
    """How often, in words: ``once``, else ``N times`` (``0 times``, ``2 times``)."""
    return "once" if n == 1 else f"{n} times"
