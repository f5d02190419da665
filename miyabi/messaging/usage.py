"""Token use and cost of an agent: the :class:`UsageMeter` of its process, read from
what its CLI reports (see :mod:`miyabi.agents.usage`) when a turn ends, and the fields
of the ``usage`` event that records it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from miyabi.agents.screen import Screen
from miyabi.agents.usage import Usage, aider_line, claude_transcript, codex_rollout
from miyabi.config.model import Agent
from miyabi.messaging.activity import ActivityTracker


class UsageMeter:
    """Token use and cost of one agent process, from what its CLI reports (see
    :mod:`miyabi.agents.usage`); read when a turn ends."""

    def __init__(self) -> None:
        self.pid = 0
        self.usage: Usage | None = None
        self._offset = 0
        self._path: str | None = None
        self._seen: set[str] = set()

    def follow(self, pid: int) -> None:
        if pid != self.pid:
            self.pid, self.usage, self._offset, self._path, self._seen = pid, None, 0, None, set()

    def _new_lines(self, path: str) -> list[str] | None:
        """The complete lines ``path`` gained since the last read (None: unreadable)."""
        try:
            with open(path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return None
        end = data.rfind(b"\n") + 1
        self._offset += end
        return data[:end].decode("utf-8", "replace").splitlines()

    def from_transcript(self, path: str) -> Usage | None:
        """Claude Code: the transcript's usage, reading on from where it was left."""
        if path != self._path:
            self._path, self._offset, self._seen = path, 0, set()
        lines = self._new_lines(path)
        if lines is None:
            return self.usage
        got = claude_transcript(lines, self._seen)
        before = self.usage or Usage()
        self.usage = Usage(before.input_tokens + got.input_tokens, before.output_tokens + got.output_tokens, None)
        return self.usage

    def from_codex(self, codex_home: Path, thread: str) -> Usage | None:
        """Codex: the running total in the thread's session file."""
        if self._path is None or thread not in self._path:
            found = sorted(codex_home.glob(f"sessions/*/*/*/rollout-*-{thread}.jsonl"))
            if not found:
                return self.usage
            self._path, self._offset = str(found[-1]), 0
        lines = self._new_lines(self._path)
        if lines is None:
            return self.usage
        got = codex_rollout(lines)
        self.usage = got or self.usage
        return self.usage

    def from_screen(self, rows: list[str]) -> Usage | None:
        """aider: add the ``Tokens:`` line it printed for the turn that just ended."""
        got = aider_line(rows)
        if got is None:
            return self.usage
        before = self.usage or Usage()
        cost = got[2] if got[2] is not None else before.cost_usd
        self.usage = Usage(before.input_tokens + got[0], before.output_tokens + got[1], cost)
        return self.usage


def codex_home(env: Mapping[str, str]) -> Path:
    """Where an agent's Codex keeps its sessions: its ``CODEX_HOME`` (from the agent's
    ``env``), else ``~/.codex``."""
    if env.get("CODEX_HOME"):
        return Path(env["CODEX_HOME"])
    return Path(env.get("HOME") or os.environ.get("HOME") or "~").expanduser() / ".codex"


def read_turn(meter: UsageMeter, activity: ActivityTracker, agent: Agent, screen: Screen | None) -> bool:
    """Read the usage of the turn that just ended into ``meter``, if ``activity`` says
    one is due: Claude Code's transcript, Codex's session file, aider's ``Tokens:``
    line over its prompt (from ``screen``). Returns whether it read."""
    if not activity.usage_due:
        return False
    if activity.transcript:
        activity.usage_due = False
        meter.from_transcript(activity.transcript)
    elif agent.profile.hooks == "codex" and activity.thread:
        activity.usage_due = False
        meter.from_codex(codex_home(agent.env), activity.thread)
    elif agent.profile.hooks == "aider" and screen is not None:
        activity.usage_due = False
        meter.from_screen(screen.rows(12, 0))
    else:
        return False
    return True


def usage_fields(
    before: Usage | None, after: Usage | None, pid: int, task: str | None, pool: str | None = None
) -> dict[str, Any] | None:
    """The fields of a ``usage`` event for a turn that took the totals from ``before``
    to ``after`` (tokens, and the cost in US dollars where known: the total and the
    turn's) in process ``pid``, counted towards ``task`` and, for a pool instance, its
    ``pool``; None when nothing changed."""
    if after is None or after == before:
        return None
    fields: dict[str, Any] = {
        "pid": pid,
        "input_tokens": after.input_tokens,
        "output_tokens": after.output_tokens,
        "turn_input_tokens": after.input_tokens - (before.input_tokens if before else 0),
        "turn_output_tokens": after.output_tokens - (before.output_tokens if before else 0),
    }
    if after.cost_usd is not None:
        fields["cost_usd"] = after.cost_usd
        earlier = before.cost_usd if before is not None and before.cost_usd is not None else 0.0
        fields["turn_cost_usd"] = round(max(0.0, after.cost_usd - earlier), 6)
    if task:
        fields["task"] = task
    if pool:
        fields["pool"] = pool
    return fields
