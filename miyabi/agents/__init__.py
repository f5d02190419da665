"""What miyabi knows about each agent CLI: profiles (data) and how to read its screen.

The bottom of miyabi's own layers (above the base modules): a layout names profiles,
so ``config`` imports this package, never the other way round.
"""

from __future__ import annotations

from miyabi.agents.profiles import BUILTIN, OVERRIDABLE, Profile
from miyabi.agents.screen import composer_text, is_busy, looks_ready, reads_screen, text_on_screen

__all__ = [
    "BUILTIN",
    "OVERRIDABLE",
    "Profile",
    "composer_text",
    "is_busy",
    "looks_ready",
    "reads_screen",
    "text_on_screen",
]
