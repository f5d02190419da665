"""The values command-line options and arguments take, checked as they are parsed.

Each checker takes the text a user typed and returns the value, or raises
:class:`ValueError` with what is wrong, naming the value and what is valid
(``'urgent' is not a priority; use high, normal or low``). The Typer commands use them
as parsers (:func:`miyabi.cli.root.checked`), so that a bad value is a usage error
(exit 2) in the house style, before anything runs; ``miyabi send`` and ``broadcast``
use them on their light path too. This module imports nothing heavy: the light path
loads it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

_MESSAGE_ID = re.compile(r"^[0-9a-f][0-9a-f-]{0,35}$")
_TASK_ID = re.compile(r"^#?([0-9]+)$")


def count(least: int = 1) -> Callable[[str], int]:
    """A whole number of at least ``least`` (``--lines``, ``--max-attempts``)."""

    def parse(text: str) -> int:
        try:
            n = int(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number; give {least} or more") from None
        if n < least:
            raise ValueError(f"{text!r} is too small; give {least} or more")
        return n

    return parse


def seconds(zero: bool = False) -> Callable[[str], float]:
    """A positive number of seconds (``--ttl``); 0 too with ``zero`` (``--think``)."""
    what = "a number of seconds, 0 or more" if zero else "a positive number of seconds"

    def parse(text: str) -> float:
        try:
            s = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {what}") from None
        if not math.isfinite(s) or s < 0 or (s == 0 and not zero):
            raise ValueError(f"{text!r} is not {what}")
        return s

    return parse


def duration(text: str) -> float:
    """A positive duration in seconds: ``90s``, ``30m``, ``2h``, ``7d`` or a number of seconds."""
    from miyabi.config.settings import parse_duration

    s = parse_duration(text)
    if s is None or s <= 0 or not math.isfinite(s):
        raise ValueError(f"{text!r} is not a duration; give one such as 90s, 30m, 2h, 7d or a number of seconds")
    return s


def choice(what: str, options: Sequence[str]) -> Callable[[str], str]:
    """One of ``options`` (``what`` names the kind: ``priority``, ``state``)."""
    listed = f"{', '.join(options[:-1])} or {options[-1]}" if len(options) > 1 else options[0]

    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"{text!r} is not a {what}; use {listed}")
        return text

    return parse


def task_state(text: str) -> str:
    """A task's state (``queued``, ``done`` …)."""
    from miyabi.work.model import STATES

    return choice("task state", STATES)(text)


def task_priority(text: str) -> str:
    """A task's priority: ``high``, ``normal`` or ``low``."""
    from miyabi.work.model import PRIORITIES

    return choice("priority", PRIORITIES)(text)


def message_priority(text: str) -> str:
    """A message's priority: ``high`` or ``normal``."""
    from miyabi.messaging.mailbox import PRIORITIES

    return choice("priority", PRIORITIES)(text)


_SPEC_REF = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*#T\d+|spec:[A-Za-z0-9][A-Za-z0-9._-]*)$")
"""A spec's reference: a spec-kit line (``001-blog#T012``) or a task spec (``spec:ID``)."""


def task_ref(text: str) -> str:
    """A task: its id (``12``, ``#12``), its issue's reference (``owner/name#3``) or its
    spec's (``001-blog#T012``, ``spec:ID``)."""
    from miyabi.work.model import REF_RE

    t = text.strip()
    if not (_TASK_ID.match(t) or REF_RE.match(t) or _SPEC_REF.match(t)):
        raise ValueError(
            f"{text!r} is not a task id; give its number (12 or #12), its issue (owner/name#3) or its spec "
            "(001-feature#T012, spec:ID)"
        )
    return t


def task_id(text: str) -> str:
    """A task's number (``12`` or ``#12``), as ``12``."""
    m = _TASK_ID.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a task id; give its number (12 or #12)")
    return str(int(m.group(1)))


def message_id(text: str) -> str:
    """A message id, or the start of one: the hex digits and dashes of a UUID."""
    t = text.strip().lower()
    if not _MESSAGE_ID.match(t):
        raise ValueError(f"{text!r} is not a message id; give one (or its first characters) as `miyabi inbox` shows it")
    return t


def text(what: str) -> Callable[[str], str]:
    """Text that is not blank (a task's title, a reason)."""

    def parse(value: str) -> str:
        if not value.strip():
            raise ValueError(f"{value!r} is blank; give {what}")
        return value

    return parse


def regex(text: str) -> str:
    """A regular expression (Python syntax), checked to compile."""
    try:
        re.compile(text)
    except re.error as e:
        raise ValueError(
            f"{text!r} is not a regular expression ({e}); a literal ( [ * + ? needs a backslash before it"
        ) from None
    return text


def port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise ValueError(f"{text!r} is not a TCP port; give 0 (any free one) to 65535")
    return n
