"""Reading an agent's screen by its profile: busy, ready, what sits in its input box.

Pure functions of a :class:`~miyabi.agents.profiles.Profile` and the lines of a pane's
screen (as ``capture-pane -p`` prints them): no tmux here, so every rule is tested on
plain text. Busy is checked before ready, since several agent CLIs keep drawing their
input box while they work.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from miyabi import defaults
from miyabi.agents.profiles import Profile


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.MULTILINE)


def tail(lines: Sequence[str], n: int = defaults.SCREEN_LINES) -> list[str]:
    """The last ``n`` non-blank lines."""
    return [ln for ln in lines if ln.strip()][-n:]


def is_busy(profile: Profile, lines: Sequence[str]) -> bool:
    """The profile's busy pattern shows in the bottom lines of the screen."""
    return bool(profile.busy_pattern and _compiled(profile.busy_pattern).search("\n".join(tail(lines))))


def composer_text(profile: Profile, lines: Sequence[str]) -> str | None:
    """What sits in the agent's input box ("" when empty), or None when the profile
    has no composer pattern or no input box is on screen."""
    if not profile.composer_pattern:
        return None
    pat = _compiled(profile.composer_pattern)
    for line in reversed(tail(lines, defaults.COMPOSER_LINES)):
        m = pat.search(line)
        if m:
            return (m.group("text") or "").strip()
    return None


def looks_ready(profile: Profile, lines: Sequence[str]) -> bool:
    """Busy pattern absent, ready pattern shown (if the profile has one), and the
    input box empty (where it can be seen)."""
    if is_busy(profile, lines):
        return False
    if profile.ready_pattern and not _compiled(profile.ready_pattern).search("\n".join(tail(lines))):
        return False
    return composer_text(profile, lines) in (None, "")


def reads_screen(profile: Profile) -> bool:
    """Whether the profile has anything to read on screen (a program without a prompt,
    such as the ``shell`` profile, is always ready)."""
    return bool(profile.ready_pattern or profile.busy_pattern or profile.composer_pattern)


def text_on_screen(text: str, lines: Sequence[str]) -> bool:
    """Whether the end of ``text`` (up to 30 characters of its last line) shows in the
    bottom lines of the screen: the evidence that typing reached the pane, for
    profiles whose input box miyabi cannot see. Wrapped lines are joined too."""
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    needle = last[-30:]
    if not needle:
        return False
    bottom = tail(lines, defaults.COMPOSER_LINES * 2)
    return needle in "\n".join(bottom) or needle in "".join(bottom)
