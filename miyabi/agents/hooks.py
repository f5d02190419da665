"""Hooks: the agent CLI tells miyabi what it is doing, instead of miyabi reading it
off the screen.

Each adapter installs ``miyabi hook EVENT`` into one CLI for one process, through
that CLI's own command-line options, so the user's settings files are never touched:

- ``claude`` (Claude Code): ``--settings FILE``, a settings file of miyabi's whose
  ``hooks`` run on SessionStart, UserPromptSubmit, PreToolUse, PermissionRequest,
  PostToolUse, Notification, Stop and SessionEnd; Claude Code merges it with the
  user's own settings (code.claude.com/docs/en/hooks, /en/settings). Each hook gets a
  JSON payload on stdin (``hook_event_name``, ``session_id``, ``prompt``,
  ``tool_name``, ``tool_input``, ``message``, ``notification_type``).
- ``codex`` (Codex CLI): ``-c notify=[...]``, the program Codex runs with a JSON
  argument ``{"type": "agent-turn-complete", ...}`` when a turn ends
  (developers.openai.com/codex/config-advanced#notify); its title-writing side thread
  notifies too, and is told apart by its prompt. Codex's own hooks (``-c hooks.…``)
  run only when trusted, and trusting them from the command line
  (``--dangerously-bypass-hook-trust``) would run the user's untrusted hooks as well,
  so miyabi does not use them; ``-c disable_paste_burst=true`` keeps fast typing
  from being taken for a paste.
- ``aider``: ``--notifications --notifications-command CMD``, which aider runs when
  it waits for input again after answering (aider.chat/docs/usage/notifications.html).

The options go right after the program's own word in the agent's command line, so
they stay in force when a layout writes ``command: claude --model opus``.

:func:`interpret` turns one recorded event into what it says about the agent: its
state (ready, busy, waiting for approval), the prompt it received (the delivery
receipt) and the permission question.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from miyabi.agents.profiles import Profile
from miyabi.files import private_dir, write_atomic

CLAUDE_EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PermissionRequest",
    "PostToolUse",
    "Notification",
    "Stop",
    "StopFailure",
    "SessionEnd",
)
"""The Claude Code hook events miyabi listens to."""

LIMIT_ERRORS = frozenset({"rate_limit"})
"""Claude Code's ``StopFailure`` errors that mean its provider's usage or rate limit
(its hook reference lists the values: rate_limit, overloaded, billing_error, …)."""

HOOK_TIMEOUT = 10
"""Seconds Claude Code gives ``miyabi hook`` before it moves on (it takes milliseconds)."""


class Activity(StrEnum):
    """What an agent is doing, as the agent or its screen tells."""

    READY = "ready"
    """Waiting for input: a message may be typed."""
    BUSY = "busy"
    """Working on a turn."""
    WAITING_APPROVAL = "waiting-approval"
    """Asking the user for permission; answered by ``miyabi approve`` / ``deny``."""
    ENDED = "ended"
    """The session ended (the process is about to exit)."""
    HUMAN = "human"
    """A person is typing in its pane (see :mod:`miyabi.messaging.keyboard`): miyabi
    types nothing into it; never hung. Told by tmux, never by a hook."""
    PARKED = "parked"
    """Its provider refuses it (a usage limit) or its budget is spent (see
    :mod:`miyabi.messaging.parking`): miyabi types nothing into it until it may go
    on; never hung."""


@dataclass(frozen=True)
class Report:
    """What one hook event says.

    Attributes:
        activity: the agent's state from now on, or None when the event leaves it.
        prompt: the text the agent received as a new turn (the delivery receipt).
        question: the permission question, for ``waiting-approval``.
        limit: what the CLI said, when its provider's usage or rate limit ended the
            turn (Claude Code's ``StopFailure`` with ``error: rate_limit``).
    """

    activity: Activity | None
    prompt: str | None = None
    question: str | None = None
    limit: str | None = None
    """What the CLI said of its provider's usage or rate limit, when that ended the turn."""


PASTED = re.compile(r'\A\s*<pasted_content id="(\w+)">\n(?P<text>.*)\n</pasted_content id="\1">\s*\Z', re.DOTALL)
"""How Claude Code 2.1 hands a pasted prompt to its hooks and its model (measured)."""


def unwrap_paste(prompt: str) -> str:
    """The text of a prompt without the marks a CLI wrapped a paste in."""
    m = PASTED.match(prompt)
    return m.group("text") if m else prompt


def _question(rec: Mapping[str, Any]) -> str:
    tool = str(rec.get("tool") or "")
    what = str(rec.get("input") or rec.get("message") or "")
    return f"{tool}: {what}" if tool and what else (tool or what or "permission requested")


def interpret(rec: Mapping[str, Any]) -> Report:
    """What a recorded hook event (a line of the agent's hook log, as ``miyabi hook``
    writes it) says about the agent."""
    event = str(rec.get("event", ""))
    if event in ("SessionStart", "Stop", "ready", "idle"):
        return Report(Activity.READY)
    if event == "notify":
        # Codex: agent-turn-complete (also sent by its own side threads, which end
        # while the main turn is over too).
        return Report(Activity.READY if rec.get("kind") in ("agent-turn-complete", None) else None)
    if event == "UserPromptSubmit":
        return Report(Activity.BUSY, prompt=unwrap_paste(str(rec.get("prompt") or "")))
    if event in ("PreToolUse", "PostToolUse"):
        return Report(Activity.BUSY)
    if event == "PermissionRequest":
        return Report(Activity.WAITING_APPROVAL, question=_question(rec))
    if event == "Notification":
        kind = rec.get("kind")
        if kind == "permission_prompt":
            return Report(Activity.WAITING_APPROVAL, question=_question(rec))
        if kind == "idle_prompt":
            return Report(Activity.READY)
        return Report(None)
    if event == "StopFailure":  # Claude Code: an API error ended the turn
        limited = rec.get("error") in LIMIT_ERRORS
        return Report(Activity.READY, limit=str(rec.get("message") or rec.get("error")) if limited else None)
    if event == "SessionEnd":
        return Report(Activity.ENDED)
    if event == "answered":  # miyabi approve / deny: what follows shows on screen first
        return Report(None)
    return Report(None)


def has_receipts(profile: Profile) -> bool:
    """Whether the profile's hooks report each prompt as it is submitted."""
    return profile.hooks == "claude"


def reports_ready(profile: Profile) -> bool:
    """Whether the profile's hooks say when a turn is over."""
    return profile.hooks in ("claude", "codex", "aider")


def _claude_settings(hook: Sequence[str]) -> dict[str, Any]:
    cmd = shlex.join(hook)
    # async: Claude Code does not wait for the hook (it decides nothing), so a
    # prompt goes to the model without waiting for miyabi's record of it
    entry = {"type": "command", "timeout": HOOK_TIMEOUT, "async": True}
    return {"hooks": {ev: [{"hooks": [dict(entry, command=f"{cmd} {ev}")]}] for ev in CLAUDE_EVENTS}}


def hook_options(profile: Profile, agent: str, run_dir: Path, hook: Sequence[str]) -> list[str]:
    """The command-line words that install miyabi's hooks in the agent's CLI, writing
    any file they name under ``run_dir/hooks/<agent>/`` first; [] for a profile
    without hooks.

    Args:
        profile: the agent's profile (``hooks`` names the adapter).
        agent: the agent's name.
        run_dir: the home's ``run/`` directory.
        hook: the words that run ``miyabi hook`` (the event name is appended).
    """
    if profile.hooks == "claude":
        d = private_dir(run_dir / "hooks" / agent)
        path = d / "claude-settings.json"
        write_atomic(path, json.dumps(_claude_settings(hook), indent=1))
        return ["--settings", str(path)]
    if profile.hooks == "codex":
        # disable_paste_burst: typed text is never taken for a paste whose Enter
        # becomes a newline
        return ["-c", "notify=" + json.dumps([*hook, "notify"]), "-c", "disable_paste_burst=true"]
    if profile.hooks == "aider":
        return ["--notifications", "--notifications-command", shlex.join([*hook, "ready"])]
    return []


def with_options(command: str, program: str, options: Sequence[str]) -> str | None:
    """``command`` with ``options`` inserted right after the first word that runs
    ``program`` (``claude``, ``/usr/bin/claude``, ``~/bin/claude``); None when no word
    runs it (a wrapper script, ``npx …``), and the rest of the line is kept as written."""
    if not options:
        return command
    m = re.search(r"(?:^|(?<=[\s;&|(]))(?:[^\s;&|()'\"]*/)?" + re.escape(program) + r"(?=$|[\s;&|)])", command)
    if m is None:
        return None
    return command[: m.end()] + " " + shlex.join(options) + command[m.end() :]
