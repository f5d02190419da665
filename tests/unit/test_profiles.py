"""Profiles read against screens as the real CLIs draw them, with the cursor where
tmux reported it (measured: Claude Code 2.1.332, Codex CLI 0.171.0, aider 0.86.2 in
tmux 3.3a; see docs/profiles.md)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from miyabi.agents.profiles import BUILTIN
from miyabi.agents.screen import Screen, approval_question, composer_text, is_busy, looks_ready

RULE = "─" * 60

CLAUDE_IDLE = ["● Answer: hello", "", "✻ Baked for 1s", "", RULE, "❯ ", RULE, "  ⏸ manual mode on · ? for shortcuts"]
CLAUDE_BUSY = [
    "❯ hello",
    "",
    "✽ Mustering…",
    "",
    RULE,
    "❯ ",
    RULE,
    "  ⏵⏵ auto mode on (shift+tab to cycle) · esc to interrupt · ← for agents",
]
CLAUDE_ASK = [
    "● Creating miyabi-tool-1",
    RULE,
    " Bash command",
    " touch miyabi-tool-1",
    " Do you want to proceed?",
    " ❯ 1. Yes",
    "   2. Yes, and always allow access",
    "   4. No",
    " Esc to cancel · Tab to amend",
]
CODEX_IDLE = [
    "› hello codex",
    "",
    "• Answer: hello codex",
    "",
    "  Worked for 1s • 22:13",
    "",
    "› Ask Codex to do anything",
    "",
    "  fake-model default · /tmp/ex/work",
    "  ← for agents · ? for shortcuts",
]
CODEX_BUSY = [
    "› hello codex",
    "",
    "• Working (0s • esc to interrupt)",
    "",
    "› Ask Codex to do anything",
    "",
    "  fake-model default · /tmp/ex/work",
]
GEMINI_IDLE = [
    "✦ Answer: hello",
    " " * 100 + "? for shortcuts",
    RULE,
    " Shift+Tab to accept edits",
    " >   Type your message or @path/to/file",
    " workspace (/directory)        sandbox        /model",
]
GEMINI_BUSY = [
    " > hello gemini",
    " ⠸ Thinking... (esc to cancel, 0s)" + " " * 60 + "? for shortcuts",
    RULE,
    " Shift+Tab to accept edits",
    " >   Type your message or @path/to/file",
    " workspace (/directory)",
]
GEMINI_ASK = [
    " > please",
    "",
    "╭" + "─" * 50 + "╮",
    "│ ? Shell  touch miyabi-tool-1 │",
    "│ ╭───╮ │",
    "│ │ touch miyabi-tool-1 │ │",
    "│ ╰───╯ │",
    "│ Allow execution of [Shell]? │",
    "│ │",
    "│ ● 1. Allow once │",
    "│   2. Allow for this session │",
    "│   3. No, suggest changes (esc) │",
    "╰" + "─" * 50 + "╯",
    "",
]
AIDER_IDLE = ["> hello aider", "", "Answer: hello", "", "Tokens: 596 sent, 6 received.", RULE, "> "]
AIDER_BUSY = ["> hello aider", "  ░█       Waiting for openai/fake-model"]


def at(lines: list[str], y: int, x: int) -> Screen:
    return Screen.of(lines, (x, y))


@pytest.mark.parametrize(
    ("name", "idle", "busy"),
    [
        ("claude", at(CLAUDE_IDLE, 5, 2), at(CLAUDE_BUSY, 5, 2)),
        ("codex", at(CODEX_IDLE, 6, 2), at(CODEX_BUSY, 4, 2)),
        ("aider", at(AIDER_IDLE, 6, 2), at(AIDER_BUSY, 1, 0)),
        ("gemini", at(GEMINI_IDLE, 4, 3), at(GEMINI_BUSY, 4, 3)),
        ("worker", Screen.of(["ack hello", "worker> "]), Screen.of(["ack hello", "⠿ thinking… (esc to interrupt)"])),
    ],
    ids=["claude", "codex", "aider", "gemini", "worker"],
)
def test_idle_and_busy_screens(name: str, idle: Screen, busy: Screen) -> None:
    p = BUILTIN[name]
    assert looks_ready(p, idle) and not is_busy(p, idle) and composer_text(p, idle) == ""
    assert not looks_ready(p, busy)


def test_codex_placeholder_is_an_empty_box_and_a_paste_summary_is_text() -> None:
    p = BUILTIN["codex"]
    assert composer_text(p, at(CODEX_IDLE, 6, 2)) == ""
    pasted = [*CODEX_IDLE[:6], "› [Pasted Content 1024 chars]", *CODEX_IDLE[7:]]
    assert composer_text(p, at(pasted, 6, 29)) == "[Pasted Content 1024 chars]"
    assert not looks_ready(p, at(pasted, 6, 29))


def test_history_that_looks_like_a_prompt_is_not_ready() -> None:
    # Codex busy with the cursor away from the input row: old "› msg" rows above do not count.
    p = BUILTIN["codex"]
    lines = ["› msg-6 hello", "", "• Answer: msg-6", "", "thinking about it"]
    assert not looks_ready(p, at(lines, 4, 17))
    # aider: a ">" echoed from a blank line of a message, while the cursor is elsewhere
    a = BUILTIN["aider"]
    echoed = ["> first line", ">", "> third line", "", "Answer streaming"]
    assert not looks_ready(a, at(echoed, 4, 16))


@pytest.mark.parametrize("name", ["claude", "codex", "aider"])
def test_echoed_busy_phrases_never_make_an_idle_agent_busy(name: str) -> None:
    p = BUILTIN[name]
    phrase = "esc to interrupt (12s • esc to interrupt) Waiting for reviewers"
    idle = {"claude": (CLAUDE_IDLE, 5), "codex": (CODEX_IDLE, 6), "aider": (AIDER_IDLE, 6)}[name]
    lines = [f"● {phrase}", f"  {phrase}", phrase, *idle[0]]
    screen = at(lines, idle[1] + 3, 2)
    assert looks_ready(p, screen), name


def test_claude_permission_question_is_seen_and_is_not_ready() -> None:
    p = BUILTIN["claude"]
    ask = at(CLAUDE_ASK, 5, 1)
    assert approval_question(p, ask) is not None and "Do you want to proceed" in str(approval_question(p, ask))
    assert not looks_ready(p, ask)
    assert approval_question(p, at(CLAUDE_IDLE, 5, 2)) is None


def test_gemini_placeholder_typed_text_and_question() -> None:
    p = BUILTIN["gemini"]
    typed = [*GEMINI_IDLE[:4], " > hello there", *GEMINI_IDLE[5:]]
    assert composer_text(p, at(typed, 4, 14)) == "hello there" and not looks_ready(p, at(typed, 4, 14))
    ask = at(GEMINI_ASK, 13, 0)
    assert "Shell  touch miyabi-tool-1" in str(approval_question(p, ask))
    assert "Allow execution of [Shell]?" in str(approval_question(p, ask))
    assert not looks_ready(p, ask) and approval_question(p, at(GEMINI_IDLE, 4, 3)) is None


def test_gemini_text_over_a_new_row_of_its_entry_is_still_in_the_box() -> None:
    """Under load Gemini CLI can take the submit key for a new row of the entry (it was
    still taking in the paste): the cursor is under the text's row, and the text must
    be seen as still in the box, so that the key is pressed again (measured)."""
    p = BUILTIN["gemini"]
    entry = [*GEMINI_IDLE[:4], " > after the restart 7b408968", "   ", RULE, *GEMINI_IDLE[5:]]
    assert composer_text(p, at(entry, 5, 3)) == "after the restart 7b408968"
    assert composer_text(p, at(GEMINI_IDLE, 4, 3)) == ""  # the empty box, placeholder after the cursor


def test_aider_confirmation_is_seen() -> None:
    p = BUILTIN["aider"]
    ask = Screen.of(["touch miyabi-tool-1", "Run shell command? (Y)es/(N)o/(D)on't ask again [Yes]: "])
    assert approval_question(p, ask) is not None and not looks_ready(p, ask)


def test_multi_row_entry_holds_text() -> None:
    p = BUILTIN["claude"]
    lines = [RULE, "❯ first line", "  second line", RULE]
    assert composer_text(p, at(lines, 2, 13)) == "first line\nsecond line"


def test_every_builtin_is_complete() -> None:
    assert set(BUILTIN) == {"claude", "codex", "gemini", "aider", "opencode", "shell", "worker"}
    for p in BUILTIN.values():
        assert p.submit_key == "Enter"
        assert 0 <= p.submit_delay <= 2
        assert p.description
        assert not p.hooks or p.program
    assert BUILTIN["shell"].ready_pattern is None and BUILTIN["shell"].command is None
    assert "--no-daemon" in str(BUILTIN["codex"].command)
    # Codex turns an Enter within ~120 ms of a typed burst into a newline.
    assert BUILTIN["codex"].submit_delay >= 0.15


def test_a_prompt_ending_in_a_blank_matches_where_the_cursor_sits() -> None:
    """tmux drops the blanks at the end of each captured row: ``agent> `` reads
    ``agent>``, while the cursor sits after the space (tmux 3.3a, measured)."""
    profile = replace(BUILTIN["shell"], ready_pattern="agent> $")
    captured = Screen.captured(["started", "agent>"], cursor_x=7, cursor_y=1)
    assert captured.cursor_line == "agent> " and looks_ready(profile, captured)
    assert not looks_ready(profile, Screen(("started", "agent>"), 7, 1))  # as tmux prints it
    typed = Screen.captured(["agent> hello"], cursor_x=12, cursor_y=0)
    assert not looks_ready(profile, typed)  # text after the prompt: not an empty prompt
    below = Screen.captured(["agent>"], cursor_x=3, cursor_y=2)  # rows under the text came back empty
    assert below.lines == ("agent>", "", "   ") and below.cursor_line == "   "
