"""Profile patterns against screens shaped like each CLI's (see README, "Profiles")."""

from __future__ import annotations

import re

import pytest

from miyabi.agents.profiles import BUILTIN

# (profile, screen tail when idle, screen tail when busy)
SCREENS = [
    ("claude", "╭────╮\n│ > \n╰────╯\n  ? for shortcuts", "✻ Crunching… (12s · esc to interrupt)\n╭────╮\n│ > \n╰────╯"),
    ("codex", "› Summarize recent commits\n\n  ⏎ send   ? for shortcuts   100% context left", "• Working (5s • esc to interrupt)\n› "),
    ("gemini", "╭──────╮\n│ >   Type your message or @path/to/file │\n╰──────╯", "⠏ Thinking (esc to cancel, 3s)"),
    ("aider", "──────────\narchitect> ", "Waiting for claude-3-5-sonnet"),
    ("opencode", "  ctrl+p commands", "⬝⬝⬝ esc interrupt"),
    ("worker", "ack hello\nworker> ", "ack hello\n⠿ thinking… (esc to interrupt)"),
]


@pytest.mark.parametrize(("name", "idle", "busy"), SCREENS, ids=[s[0] for s in SCREENS])
def test_ready_and_busy_patterns(name: str, idle: str, busy: str) -> None:
    p = BUILTIN[name]
    assert p.ready_pattern and p.busy_pattern
    assert re.search(p.ready_pattern, idle, re.MULTILINE), "idle screen should match ready"
    assert not re.search(p.busy_pattern, idle, re.MULTILINE), "idle screen must not look busy"
    assert re.search(p.busy_pattern, busy, re.MULTILINE), "busy screen should match busy"


def test_every_builtin_is_complete() -> None:
    assert set(BUILTIN) == {"claude", "codex", "gemini", "aider", "opencode", "shell", "worker"}
    for p in BUILTIN.values():
        assert p.submit_key == "Enter"
        assert 0 <= p.submit_delay <= 2
        assert p.description
    assert BUILTIN["shell"].ready_pattern is None and BUILTIN["shell"].command is None
    # Codex turns an Enter within ~120 ms of a typed burst into a newline.
    assert BUILTIN["codex"].submit_delay >= 0.15
