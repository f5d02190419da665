"""Reading an agent's screen by its profile, anchored where input happens.

Pure functions of a :class:`~miyabi.agents.profiles.Profile` and a :class:`Screen`
(the visible lines as ``capture-pane -p`` prints them, and the cursor position tmux
reports): no tmux here, so every rule is tested on plain text.

Every pattern is read in a few rows around the cursor, never in the history above:
the prompt must be on the cursor's own row, the busy and approval signs in the rows
the profile names next to it (the footer under a Claude Code input box, the
"Working" line over Codex's). Whatever an agent prints lands above its input area,
so text it echoed (a message that says "esc to interrupt", a ``>`` from a blank line
of a pasted message) cannot change what miyabi reads. Busy is checked before ready,
since several agent CLIs keep drawing their input box while they work.

Whether the input box holds text is read from the cursor too: in an empty box the
cursor sits where the text would start (a placeholder such as Codex's "Ask Codex to
do anything" is drawn after it); typed text, a wrapped or multi-line entry and a
``[Pasted Content …]`` summary all move it on.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from miyabi import defaults
from miyabi.agents.profiles import Profile


@dataclass(frozen=True)
class Screen:
    """A pane's visible screen and its cursor.

    Attributes:
        lines: the visible rows, top to bottom (``capture-pane -p``; trailing blank
            rows may be missing).
        cursor_x: the cursor's column, in cells from 0.
        cursor_y: the cursor's row, from 0 at the top of the visible screen.
    """

    lines: tuple[str, ...]
    cursor_x: int
    cursor_y: int

    @classmethod
    def of(cls, lines: Sequence[str], cursor: tuple[int, int] | None = None) -> Screen:
        """A screen of ``lines`` with the cursor at ``(x, y)``; without one, at the
        end of the last non-blank line (how a shell or a simple prompt leaves it)."""
        if cursor is None:
            y = max((i for i, ln in enumerate(lines) if ln.strip()), default=0)
            cursor = (cells(lines[y].rstrip("\n")) if lines else 0, y)
        return cls(tuple(lines), cursor[0], cursor[1])

    @classmethod
    def captured(cls, lines: Sequence[str], cursor_x: int, cursor_y: int) -> Screen:
        """A screen as ``capture-pane -p`` prints it, with the blanks tmux dropped
        between the end of the cursor's row and the cursor put back: tmux trims the
        blanks at the end of every captured row, so a prompt ``agent> `` with the
        cursor after its space reads ``agent>``, and a ready pattern ``agent> $`` would
        never match (measured on tmux 3.3a)."""
        rows = list(lines)
        if cursor_y >= 0:
            rows += [""] * (cursor_y + 1 - len(rows))
            short = cursor_x - cells(rows[cursor_y])
            if short > 0:
                rows[cursor_y] += " " * short
        return cls(tuple(rows), cursor_x, cursor_y)

    def row(self, y: int) -> str:
        """Row ``y`` ("" outside the screen or for a trailing blank row)."""
        return self.lines[y] if 0 <= y < len(self.lines) else ""

    def rows(self, above: int, below: int) -> list[str]:
        """The cursor's row with ``above`` rows over it and ``below`` under it."""
        return [self.row(y) for y in range(self.cursor_y - above, self.cursor_y + below + 1)]

    @property
    def cursor_line(self) -> str:
        return self.row(self.cursor_y)


@lru_cache(maxsize=256)
def compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.MULTILINE)


def cells(text: str) -> int:
    """Terminal cells ``text`` takes (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1 for c in text)


def _search(pattern: str | None, rows: Sequence[str]) -> re.Match[str] | None:
    return compiled(pattern).search("\n".join(rows)) if pattern else None


def is_busy(profile: Profile, screen: Screen) -> bool:
    """The profile's busy pattern shows in its rows around the cursor."""
    return _search(profile.busy_pattern, screen.rows(*profile.busy_rows)) is not None


def approval_question(profile: Profile, screen: Screen) -> str | None:
    """The permission question on screen (the rows the pattern matched, joined), or None when
    the profile's approval pattern does not show in its rows around the cursor."""
    m = _search(profile.approval_pattern, screen.rows(*profile.approval_rows))
    if m is None:
        return None
    return " ".join(r.strip() for r in m.group(0).splitlines() if r.strip())[:500]


def composer_text(profile: Profile, screen: Screen) -> str | None:
    """What sits in the agent's input box ("" when empty), or None when the profile
    has no composer pattern or the cursor is not in an input box.

    The composer pattern (a regex with a group ``text``) is matched on the cursor's
    row or, for an entry of several rows, on the nearest of the profile's
    ``composer_rows`` rows above it. The box is empty only when the cursor is on the
    prompt's row where the text starts."""
    if not profile.composer_pattern:
        return None
    pat = compiled(profile.composer_pattern)
    for up in range(profile.composer_rows + 1):
        y = screen.cursor_y - up
        if y < 0:
            break
        line = screen.row(y)
        m = pat.search(line)
        if m is None:
            continue
        text = m.group("text")
        if up == 0 and (not (text or "").strip() or screen.cursor_x <= cells(line[: m.start("text")])):
            return ""
        typed = [line[m.start("text") :].strip() if text is not None else ""]
        typed += [screen.row(y + i).strip() for i in range(1, up + 1)]
        return "\n".join(t for t in typed if t) or "…"
    return None


def at_prompt(profile: Profile, screen: Screen) -> bool:
    """The profile's ready pattern shows in its rows around the cursor (always true
    for a profile without one)."""
    if not profile.ready_pattern:
        return True
    return _search(profile.ready_pattern, screen.rows(*profile.ready_rows)) is not None


def looks_ready(profile: Profile, screen: Screen) -> bool:
    """Not busy, no permission question, the prompt at the cursor and the input box
    empty (where the profile can see it)."""
    if is_busy(profile, screen) or approval_question(profile, screen) is not None:
        return False
    if not at_prompt(profile, screen):
        return False
    return composer_text(profile, screen) in (None, "")


def reads_screen(profile: Profile) -> bool:
    """Whether the profile has anything to read on screen (a program without a prompt,
    such as the ``shell`` profile, is always ready)."""
    return bool(profile.ready_pattern or profile.busy_pattern or profile.composer_pattern)


def text_at_cursor(text: str, screen: Screen) -> bool:
    """Whether the cursor's row ends with the end of ``text``'s last line: typed text
    still sitting where it was typed (for a box miyabi cannot otherwise see)."""
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    row = screen.cursor_line.rstrip()
    return bool(last) and row.endswith(last[-30:])


def text_on_screen(text: str, screen: Screen) -> bool:
    """Whether the end of ``text`` (up to 30 characters of its last line) shows in the
    rows at and just above the cursor: the evidence that typing reached the pane, for
    profiles whose input box miyabi cannot see. Wrapped lines are joined too."""
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    needle = last[-30:]
    if not needle:
        return False
    near = screen.rows(defaults.COMPOSER_LINES * 2, 1)
    return needle in "\n".join(near) or needle in "".join(near)
