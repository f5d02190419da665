"""Profiles: what miyabi knows about each agent CLI, as data.

A :class:`Profile` says how to launch an agent CLI and how to read its screen: the
regex that shows it is ready for input, the one that shows it is busy, the key that
submits a message, the delay before pressing it, and whether to paste with bracketed
paste. Delivery and supervision read these fields (through :mod:`miyabi.agents.screen`);
a layout can override any of them per agent, or define profiles of its own under
``profiles:``.

Patterns are Python regular expressions searched (``re.MULTILINE``) in a few rows
of the pane's visible screen around the cursor (``*_rows``: how many rows above and
below), never in the history above it (see :mod:`miyabi.agents.screen`). Where the
agent CLI has hooks, ``hooks`` names the adapter in :mod:`miyabi.agents.hooks` that
installs them, and the agent's own reports outrank the screen. The values and where
they come from are listed in docs/profiles.md.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass

from miyabi import defaults

OVERRIDABLE = (
    "command",
    "ready_pattern",
    "busy_pattern",
    "submit_key",
    "submit_delay",
    "bracketed_paste",
    "typed_limit",
    "answer_grace",
    "intro",
    "composer_pattern",
    "composer_rows",
    "ready_settle",
    "ready_rows",
    "busy_rows",
    "approval_pattern",
    "approval_rows",
    "approve_keys",
    "deny_keys",
    "resume",
    "limit_pattern",
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
        typed_limit: longest single line (bytes) typed key by key where bracketed
            paste is on; anything longer is pasted (0: always paste, for a CLI that
            takes some typed keys as shortcuts).
        intro: True when the agent should get a first message telling it its name,
            its peers and how to use ``miyabi send``.
        composer_pattern: regex with a group ``text`` matching the line where typed
            input sits; the bottom-most match tells whether the input box is empty
            (None: miyabi cannot see the input box).
        ready_settle: seconds between the two reads that must both show the agent
            ready before a message is typed (gastown's rule: two reads ~200 ms apart).
        composer_rows: how many rows above the cursor an entry of several rows may
            start (its prompt row); 0: the prompt must be on the cursor's row.
        answer_grace: seconds after a submission during which a screen that looks
            ready counts as busy (a CLI without hooks that draws its busy sign a
            moment after it took the message, or makes it flicker).
        ready_rows: (above, below) rows around the cursor where ``ready_pattern`` is
            searched; (0, 0) is the cursor's row alone.
        busy_rows: (above, below) rows around the cursor for ``busy_pattern``.
        approval_pattern: regex whose match shows a permission question (None: the
            profile cannot see one on screen).
        approval_rows: (above, below) rows around the cursor for ``approval_pattern``.
        approve_keys: tmux key names that answer a permission question with yes.
        deny_keys: tmux key names that answer it with no.
        hooks: the hook adapter (``claude``, ``codex``, ``aider``) that tells miyabi
            the agent's state from the agent itself; None: the screen only.
        program: the executable the hook and resume options belong to (the word of
            ``command`` they go after).
        resume: the options that make ``program`` resume its own last conversation
            when miyabi starts it again (after a crash, a hang, ``miyabi restart``),
            put right after its word; ``{session}`` stands for the conversation's id
            as its hooks reported it (no id known: a fresh start). None (or
            ``never`` in a layout): always a fresh start.
        limit_pattern: regex whose match on screen shows the CLI refused by its
            provider's usage or rate limit (see :mod:`miyabi.agents.limits`); a named
            group ``reset`` takes the reset time where the CLI prints one. None: the
            profile cannot see a limit.
        description: one line for ``miyabi profiles``.
    """

    name: str
    command: str | None
    ready_pattern: str | None
    busy_pattern: str | None
    submit_key: str = defaults.SUBMIT_KEY
    submit_delay: float = defaults.SUBMIT_DELAY
    bracketed_paste: bool = True
    typed_limit: int = defaults.TYPED_TEXT
    answer_grace: float = 0.0
    intro: bool = True
    composer_pattern: str | None = None
    ready_settle: float = defaults.READY_SETTLE
    composer_rows: int = 0
    ready_rows: tuple[int, int] = (0, 0)
    busy_rows: tuple[int, int] = (0, 0)
    approval_pattern: str | None = None
    approval_rows: tuple[int, int] = (0, 0)
    approve_keys: tuple[str, ...] = ()
    deny_keys: tuple[str, ...] = ()
    hooks: str | None = None
    program: str | None = None
    resume: str | None = None
    limit_pattern: str | None = None
    description: str = ""

    def replace(self, **changes: object) -> Profile:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


BUILTIN: dict[str, Profile] = {
    p.name: p
    for p in (
        # Measured on Claude Code 2.1.332 in tmux: the input row starts "❯ " at column
        # 0, the footer under the box says "esc to interrupt" while a turn runs, and a
        # permission dialog asks "Do you want to proceed?" over " ❯ 1. Yes". Hooks:
        # code.claude.com/docs/en/hooks (see miyabi.agents.hooks).
        Profile(
            name="claude",
            command="claude",
            ready_pattern=r"^❯[ \xa0]",
            busy_pattern=r"esc to interrupt",
            busy_rows=(0, 4),
            composer_pattern=r"^❯[ \xa0](?P<text>.*)$",
            composer_rows=3,
            approval_pattern=r"^\s*Do you want to (?:proceed|make this edit|create|allow)",
            approval_rows=(3, 0),
            approve_keys=("1",),
            deny_keys=("Escape",),
            submit_delay=0.5,
            hooks="claude",
            program="claude",
            resume="--resume {session}",
            # a 429 shows "✻ 429 <the API's message> · retrying in 15s · attempt 7/10"
            # over the box for minutes (10 attempts), then "API Error: Request rejected
            # (429) · …" (and its StopFailure hook: error rate_limit); a plan's
            # limit: "Claude usage limit reached. Your limit will reset at 3pm (Zone)."
            limit_pattern=(
                r"\b429\b[^\n]*(?:rate.limit|retrying|Too Many Requests)|API Error: [^\n]*\b429\b"
                r"|(?:(?:usage|session|weekly|5-hour|Opus) limit reached|You've hit your (?:usage )?limit)"
                r"(?:[^\n]*?resets?(?: at)? (?P<reset>\d{1,2}(?::\d{2})?\s*(?:[ap]m)?(?:\s*\([\w/+-]+\))?))?"
            ),
            description="Anthropic Claude Code",
        ),
        # Measured on Codex CLI 0.171.0: the input row starts "› " (an empty one shows
        # a placeholder after the cursor), "• Working (3s • esc to interrupt)" sits
        # over it during a turn; an approval hides the cursor under a question that
        # ends "Press enter to confirm or esc to cancel" (y: yes, esc: no). --no-daemon: no
        # shared app-server outside the pane.
        # Sources: openai/codex codex-rs/tui footer.rs, status_indicator_widget.rs,
        # paste_burst.rs (Enter within 120 ms of a typed burst becomes a newline).
        Profile(
            name="codex",
            command="codex --no-daemon",
            ready_pattern=r"^›[ \xa0]",
            busy_pattern=r"^\s*\S\s+\w.*\(\d+[hms][^)]*esc to interrupt\)",
            busy_rows=(4, 0),
            composer_pattern=r"^›[ \xa0](?P<text>.*)$",
            composer_rows=3,
            approval_pattern=(
                r"^\s*(?:Would you like to|Do you want to|Allow) [^\n]*\?$(?:\n.*){1,16}?"
                r"\n\s*Press enter to confirm or esc to cancel"
            ),
            approval_rows=(40, 0),
            approve_keys=("y",),
            deny_keys=("Escape",),
            submit_delay=0.3,
            hooks="codex",
            program="codex",
            resume="resume {session}",  # `codex resume ID` takes the options after it
            # a 429: "Server is busy, reconnecting 2/5" while it retries (seconds), then
            # "■ exceeded retry limit, last status: 429 Too Many Requests"; a plan's
            # limit: "You've hit your usage limit. … try again in 2 hours 5 minutes."
            limit_pattern=(
                r"last status: 429|(?:hit your usage limit|Quota exceeded)"
                r"(?:[^\n]*?[Tt]ry again (?P<reset>(?:in |at )?[\w: ]+?(?:[AaPp][Mm])?)\.?\s*$)?"
            ),
            description="OpenAI Codex CLI",
        ),
        # Measured on Gemini CLI 0.61.0 against the tests' model stand-in: the input
        # row " > " (an empty one shows a placeholder after the cursor), "⠙ Thinking...
        # (esc to cancel, 3s)" over the box during a turn; a tool asks "Allow
        # execution of [Shell]?" over "● 1. Allow once" (Enter: yes, Esc: no) with the
        # cursor parked under the dialog. Sources: google-gemini/gemini-cli
        # packages/cli/src/ui/components (InputPrompt.tsx, LoadingIndicator.tsx).
        Profile(
            name="gemini",
            command="gemini",
            ready_pattern=r"^ > ",
            composer_pattern=r"^ > (?P<text>.*)$",
            # an Enter that lands while a busy Gemini CLI still takes in the paste (or
            # redraws at start-up) becomes a new row of the entry: the cursor then sits
            # under the " > " row, and the text is still there (measured under load)
            composer_rows=3,
            busy_pattern=r"\(esc to cancel, \d+[hms]",
            busy_rows=(4, 0),
            approval_pattern=(
                r"(?:^│ \? [^\n]*\n(?:.*\n){0,6}?)?.*(?:Allow execution of [^\n]*|Apply this change"
                r"|Do you want to [^\n]*)\?.*(?:\n.*){0,4}?\n.*1\. Allow"
            ),
            approval_rows=(16, 0),
            approve_keys=("Enter",),
            deny_keys=("Escape",),
            submit_delay=0.3,
            typed_limit=0,  # a typed "?" opens its shortcuts help, even mid-line (measured)
            answer_grace=1.5,  # "Thinking..." shows ~0.2 s after Enter (measured)
            # no resume: `--resume ID` needs an id miyabi is never told (no hooks), and
            # `--resume latest` takes the directory's last conversation, maybe another
            # agent's (a layout can set it for an agent alone in its directory)
            program="gemini",
            description="Google Gemini CLI",
        ),
        # Measured on aider 0.86.2: the prompt "> " (or "ask> ", "multi> ") is the
        # cursor's row; while it answers the cursor is elsewhere, the spinner
        # ("Waiting for <model>") on its row; confirmations end "(Y)es/(N)o ... [Yes]: ".
        # Sources: Aider-AI/aider aider/io.py (get_input, confirm_ask), aider/waiting.py.
        Profile(
            name="aider",
            command="aider --no-auto-commits --no-check-update --no-show-release-notes",
            ready_pattern=r"^[\w./-]*(?: multi)?> ?",
            busy_pattern=r"Waiting for \S+",
            composer_pattern=r"^[\w./-]*(?: multi)?>(?: (?P<text>.*))?$",
            approval_pattern=r"(?:^.*\n)?.*\(Y\)es/\(N\)o.*\]: ?$",
            approval_rows=(1, 0),
            approve_keys=("y", "Enter"),
            deny_keys=("n", "Enter"),
            submit_delay=0.2,
            hooks="aider",
            program="aider",
            resume="--restore-chat-history",  # its chat history file, in its working directory
            # litellm's error, then "Retrying in 8.0 seconds..." (doubling, for about a minute)
            limit_pattern=r"litellm\.RateLimitError|The API provider has rate limited you",
            description="Aider",
        ),
        # Measured on opencode 1.18.33 against the tests' model stand-in: the input row
        # is a "┃  " row of its prompt box (the cursor after "┃  "; an empty box shows a
        # placeholder after the cursor), "⬝⬝⬝⬝  esc interrupt" under the box during a
        # turn; a tool asks "△ Permission required" over "Allow once   Allow always
        # Reject" (Enter: the first, Esc: reject) with the cursor parked.
        # Sources: anomalyco/opencode packages/opencode/src/cli/cmd/tui/component/prompt.
        Profile(
            name="opencode",
            command="opencode",
            ready_pattern=r"^\s*┃",
            composer_pattern=r"^\s*┃(?: {1,2}(?P<text>.*))?$",
            busy_pattern=r"\besc (?:again to )?interrupt\b",
            busy_rows=(0, 6),
            approval_pattern=r"△ Permission required(?:\n.*){1,12}?\n.*Allow once\s+Allow always\s+Reject",
            approval_rows=(60, 60),  # the whole screen: it may leave the cursor above its dialog (measured under load)
            approve_keys=("Enter",),
            deny_keys=("Escape",),
            answer_grace=1.5,
            submit_delay=0.3,
            # no resume, as for gemini: `--session ID` needs an id miyabi is never told,
            # `--continue` takes the directory's last conversation
            program="opencode",
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
            busy_pattern=re.escape("thinking…") + "|" + re.escape("running job…"),
            busy_rows=(1, 0),
            submit_delay=defaults.SUBMIT_DELAY,
            composer_pattern=r"^" + re.escape(defaults.WORKER_PROMPT.rstrip()) + r"(?: (?P<text>.*))?$",
            limit_pattern=r"usage limit reached · resets (?P<reset>in \d+s)",  # with --quota
            intro=False,
            description="miyabi's built-in test agent: acks each message",
        ),
    )
}
"""The built-in profiles, by name."""


def resume_words(profile: Profile, session: str | None) -> list[str]:
    """The words that make ``profile``'s program resume its last conversation
    (``session``: its id as the hooks reported it), or [] when it cannot: no
    ``resume`` in the profile, or it needs an id none was reported for. Pure."""
    if not profile.resume or not profile.program:
        return []
    if "{session}" in profile.resume and not session:
        return []
    return [w.replace("{session}", session or "") for w in shlex.split(profile.resume)]
