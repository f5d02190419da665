"""A CLI at its provider's usage limit, read from its screen: pure functions.

A profile's ``limit_pattern`` matches what the CLI prints when its provider refuses
it (HTTP 429, a plan's usage limit), measured on the versions the tests install; a
named group ``reset`` takes the reset time where the CLI prints one ("resets 3pm
(Europe/Berlin)", "try again in 2 hours 5 minutes"). Only a match below the last
text miyabi typed counts: the limit message of a turn that miyabi has since told to
go on stays on screen, above the echo of that message, and no longer counts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from miyabi.agents.profiles import Profile
from miyabi.agents.screen import Screen, compiled

JUST_PASSED = 3600.0
"""Seconds after a reset time of day during which a sign that still shows it means a
late reset, not the same time tomorrow."""

MARK = 24
"""Characters of the start of the last typed text looked for below a limit message."""


@dataclass(frozen=True)
class LimitSign:
    """A usage limit shown on an agent's screen.

    Attributes:
        line: the screen row that matched, stripped (for the event log and status).
        reset: the reset time as the CLI printed it, or None.
    """

    line: str
    reset: str | None


def _words(text: str) -> str:
    return " ".join(text.split())


def limit_shown(profile: Profile, screen: Screen, typed: str | None) -> LimitSign | None:
    """The last match of ``profile.limit_pattern`` on ``screen``, unless a row below it
    shows the start of ``typed`` (the last text miyabi typed into the pane: the agent
    was told to go on after that limit). None: no current limit shown."""
    if not profile.limit_pattern:
        return None
    pat = compiled(profile.limit_pattern)
    text = "\n".join(screen.lines)
    last = None
    for m in pat.finditer(text):
        last = m
    if last is None:
        return None
    row = text.count("\n", 0, last.end())
    line = screen.lines[text.count("\n", 0, last.start())].strip()
    entry = _entries(profile, [line])
    if typed and _words(entry[0] if entry else line) in _words(typed):
        return None  # the echo of a message that quotes a limit (a hand-off's note)
    mark = _words(typed or "")[:MARK]
    if mark and any(mark in _words(echo) for echo in _entries(profile, screen.lines[row + 1 :])):
        return None
    reset = last.groupdict().get("reset")
    return LimitSign(line[:300], reset.strip() if reset else None)


def _entries(profile: Profile, rows: Sequence[str]) -> Sequence[str]:
    """What ``rows`` show as entered at the CLI's prompt (the composer pattern's
    ``text``; every row where the profile has none): a status line that repeats the
    last prompt (Codex's footer does) is no echo of it."""
    if not profile.composer_pattern:
        return rows
    pat = compiled(profile.composer_pattern)
    return [m.group("text") or "" for m in map(pat.search, rows) if m is not None]


_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_SPAN = re.compile(
    r"(\d+(?:\.\d+)?)\s*(days?|d|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)(?![a-z])", re.IGNORECASE
)
_CLOCK = re.compile(r"^(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)?(?:\s*\(([\w+\-/]+)\))?", re.IGNORECASE)


def reset_time(text: str, now: float, local: tzinfo | None = None) -> float | None:
    """The Unix time ``text`` names, as CLIs print a limit's reset: a span from ``now``
    ("in 2 hours 5 minutes", "4h30m", "45s"), a time of day, the next one after
    ``now`` ("3pm", "3:45 PM", "17:00", "3pm (Europe/Berlin)": in that zone, else in
    ``local``, else this machine's), an ISO 8601 time, or Unix seconds. None when it
    is none of these."""
    t = text.strip().rstrip(".")
    if t.lower().startswith("in "):
        t = t[3:]
    spans = _SPAN.findall(t)
    if spans and _SPAN.sub("", t).strip(" ,and") == "":
        return now + sum(float(n) * _UNITS[u[0].lower()] for n, u in spans)
    if re.fullmatch(r"\d{9,11}(?:\.\d+)?", t):
        return float(t)
    try:
        when = datetime.fromisoformat(t)
    except ValueError:
        pass
    else:
        return (when if when.tzinfo else when.replace(tzinfo=local or UTC)).timestamp()
    return _clock(t, now, local)


def _clock(t: str, now: float, local: tzinfo | None) -> float | None:
    m = _CLOCK.match(t)
    if m is None or (m.group(2) is None and m.group(3) is None):
        return None  # a bare number is no time of day
    hour, minute, half, zone = int(m.group(1)), int(m.group(2) or 0), (m.group(3) or "").lower(), m.group(4)
    if half:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if half == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    tz = local
    if zone:
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            tz = local
    base = datetime.fromtimestamp(now, tz) if tz else datetime.fromtimestamp(now).astimezone()
    when = base.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if when.timestamp() <= now:
        if now - when.timestamp() < JUST_PASSED:
            return None  # it says so still: the reset is late (the caller backs off), not tomorrow's
        when += timedelta(days=1)
    return when.timestamp()
