"""Profiles: what miyabi knows about each agent CLI, as data.

A :class:`Profile` says how to launch an agent CLI and how to read its screen: the
regex that shows it is ready for input, the one that shows it is busy, the key that
submits a message, the delay before pressing it, and whether to paste with bracketed
paste. Delivery and supervision read these fields (through :mod:`miyabi.agents.screen`);
a layout can override any of them per agent, or define profiles of its own under
``profiles:``.

Patterns are Python regular expressions searched (``re.MULTILINE``) in the last
``defaults.SCREEN_LINES`` non-blank lines of the pane's visible screen, as
``tmux capture-pane -p`` prints them. The values and where they come from are listed
in README.md ("Profiles").
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from miyabi import defaults

OVERRIDABLE = (
    "command",
    "ready_pattern",
    "busy_pattern",
    "submit_key",
    "submit_delay",
    "bracketed_paste",
    "intro",
    "composer_pattern",
    "ready_settle",
)
"""Profile fields a layout may set per agent or in a profile of its own."""


@dataclass(frozen=True)
class Profile:
    """How to run and read one kind of agent CLI.

    Attributes:
        name: profile name as layouts refer to it (``claude``).
        command: launch command (a shell command line); None means the user's
            login shell (``$SHELL``, else ``/bin/sh``).
        ready_pattern: regex whose match shows the agent waits for input; None when
            the program shows no prompt (then it counts as always ready).
        busy_pattern: regex whose match shows the agent is working; None if unknown.
        submit_key: tmux key name that submits typed text (``Enter``).
        submit_delay: seconds to wait between typing and pressing ``submit_key``.
        bracketed_paste: True when the program turns on bracketed paste (DECSET
            2004), so that multi-line text is pasted with ``paste-buffer -p``.
        intro: True when the agent should get a first message telling it its name,
            its peers and how to use ``miyabi send``.
        composer_pattern: regex with a group ``text`` matching the line where typed
            input sits; the bottom-most match tells whether the input box is empty
            (None: miyabi cannot see the input box).
        ready_settle: seconds between the two reads that must both show the agent
            ready before a message is typed (gastown's rule: two reads ~200 ms apart).
        description: one line for ``miyabi profiles``.
    """

    name: str
    command: str | None
    ready_pattern: str | None
    busy_pattern: str | None
    submit_key: str = defaults.SUBMIT_KEY
    submit_delay: float = defaults.SUBMIT_DELAY
    bracketed_paste: bool = True
    intro: bool = True
    composer_pattern: str | None = None
    ready_settle: float = defaults.READY_SETTLE
    description: str = ""

    def replace(self, **changes: object) -> Profile:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


BUILTIN: dict[str, Profile] = {
    p.name: p
    for p in (
        # Sources: awslabs/cli-agent-orchestrator providers/claude_code.py; agent-deck
        # internal/tmux/patterns.go. Claude commits a paste after 100 ms of quiet.
        Profile(
            name="claude",
            command="claude",
            ready_pattern=r"^\s*[❯>][ \xa0]|\? for shortcuts|shift\+tab to cycle|bypass permissions on",
            busy_pattern=r"esc to interrupt|ctrl\+c to interrupt|^\s*[✢✳✶✻✽·*]\s+\w+ing\b.*…",
            submit_delay=0.5,
            description="Anthropic Claude Code",
        ),
        # Sources: openai/codex codex-rs/tui footer.rs, status_indicator_widget.rs,
        # paste_burst.rs (Enter within 120 ms of a typed burst becomes a newline).
        Profile(
            name="codex",
            command="codex",
            ready_pattern=r"^\s*›\s|\? for shortcuts|\d+% (context )?left",
            busy_pattern=r"\(\d+[hms][^)]*•\s*esc to interrupt\)|esc to interrupt",
            submit_delay=0.3,
            description="OpenAI Codex CLI",
        ),
        # Sources: google-gemini/gemini-cli packages/cli/src/ui/components
        # (Composer.tsx, InputPrompt.tsx, LoadingIndicator.tsx).
        Profile(
            name="gemini",
            command="gemini",
            ready_pattern=r"^\W*[>*!]\s+Type your message",
            busy_pattern=r"\(esc to cancel",
            submit_delay=0.3,
            description="Google Gemini CLI",
        ),
        # Sources: Aider-AI/aider aider/io.py (get_input prompt), aider/waiting.py.
        Profile(
            name="aider",
            command="aider --no-auto-commits --no-check-update --no-show-release-notes",
            ready_pattern=r"^[\w-]*(?: multi)?> ?$",
            busy_pattern=r"Waiting for \S+",
            submit_delay=0.2,
            description="Aider",
        ),
        # Sources: anomalyco/opencode packages/opencode/src/cli/cmd/tui/component/prompt.
        Profile(
            name="opencode",
            command="opencode",
            ready_pattern=r"ctrl\+p\s+commands",
            busy_pattern=r"\besc (?:again to )?interrupt\b",
            submit_delay=0.3,
            description="opencode",
        ),
        Profile(
            name="shell",
            command=None,
            ready_pattern=None,
            busy_pattern=None,
            submit_delay=0.0,
            bracketed_paste=False,
            intro=False,
            ready_settle=0.0,
            description="any terminal program; always ready for input",
        ),
        Profile(
            name="worker",
            command="miyabi worker",
            ready_pattern=r"^" + re.escape(defaults.WORKER_PROMPT.rstrip()),
            busy_pattern=re.escape("thinking…"),
            submit_delay=defaults.SUBMIT_DELAY,
            composer_pattern=r"^" + re.escape(defaults.WORKER_PROMPT.rstrip()) + r"(?: (?P<text>.*))?$",
            intro=False,
            description="miyabi's built-in test agent: acks each message",
        ),
    )
}
"""The built-in profiles, by name."""
