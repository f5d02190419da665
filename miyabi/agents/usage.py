"""Token use and cost, where an agent CLI reports them (pure functions).

- Claude Code writes a transcript (JSON lines; its path comes with every hook
  payload as ``transcript_path``) whose assistant lines carry the API's
  ``message.usage`` (``input_tokens``, ``output_tokens``, ``cache_read_input_tokens``,
  ``cache_creation_input_tokens``); a response split over several lines repeats one
  ``message.id``, counted once. It gives no cost.
- aider prints after each answer ``Tokens: 2.3k sent, 16 received. Cost: $0.01
  message, $0.02 session.`` (aider/coders/base_coder.py); the session cost is a
  running total.
- Codex CLI reports neither through ``notify``, but its session file
  (``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<thread id>.jsonl``, the thread id
  being the ``thread-id`` of ``notify``) records ``token_count`` events whose
  ``info.total_token_usage`` is the running total. It gives no cost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from miyabi.events import EventKind


@dataclass(frozen=True)
class Usage:
    """What an agent process used so far.

    Attributes:
        input_tokens: tokens sent to the model (cache reads and writes included).
        output_tokens: tokens the model answered.
        cost_usd: the cost the CLI reported, in US dollars, or None when it reports none.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None


def claude_transcript(lines: Iterable[str], seen: set[str] | None = None) -> Usage:
    """The usage summed over a Claude Code transcript's assistant messages (``seen``:
    message ids counted before, updated; lets a transcript be read in parts)."""
    seen = set() if seen is None else seen
    inp = out = 0
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        msg = rec.get("message") if isinstance(rec, dict) and rec.get("type") == "assistant" else None
        if not isinstance(msg, dict) or not isinstance(msg.get("usage"), dict):
            continue
        mid = str(msg.get("id") or rec.get("uuid") or len(seen))
        if mid in seen:
            continue
        seen.add(mid)
        u = msg["usage"]
        inp += sum(
            int(u.get(k) or 0) for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
        )
        out += int(u.get("output_tokens") or 0)
    return Usage(inp, out, None)


AIDER_TOKENS = re.compile(
    r"Tokens: (?P<sent>[\d.]+)(?P<sk>[km]?) sent(?:, [\d.]+[km]? cache \w+)*, (?P<recv>[\d.]+)(?P<rk>[km]?) received\."
    r"(?: Cost: \$(?P<msg>[\d.]+) message, \$(?P<session>[\d.]+) session\.)?"
)


def _count(number: str, suffix: str) -> int:
    return round(float(number) * {"": 1, "k": 1_000, "m": 1_000_000}[suffix])


def aider_line(rows: Sequence[str]) -> tuple[int, int, float | None] | None:
    """(sent, received, session cost) from the last ``Tokens:`` line in ``rows``."""
    for row in reversed(rows):
        m = AIDER_TOKENS.search(row)
        if m:
            cost = float(m.group("session")) if m.group("session") else None
            return _count(m.group("sent"), m.group("sk")), _count(m.group("recv"), m.group("rk")), cost
    return None


def codex_rollout(lines: Iterable[str]) -> Usage | None:
    """The running total of the last ``token_count`` event in a Codex session file."""
    last = None
    for line in lines:
        if '"token_count"' not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        payload = rec.get("payload") if isinstance(rec, dict) else None
        info = payload.get("info") if isinstance(payload, dict) else None
        total = info.get("total_token_usage") if isinstance(info, dict) else None
        if isinstance(total, dict):
            last = Usage(int(total.get("input_tokens") or 0), int(total.get("output_tokens") or 0), None)
    return last


def task_usage(events: Iterable[Mapping[str, Any]], task: str) -> Usage | None:
    """What the agents used working on ``task``: the sum of the ``turn_*`` tokens of
    the ``usage`` events that name it (each turn counts for the task of the last
    message its agent got), or None when none does."""
    inp = out = 0
    seen = False
    for e in events:
        if e.get("event") == EventKind.USAGE and str(e.get("task")) == task:
            seen = True
            inp += int(e.get("turn_input_tokens") or 0)
            out += int(e.get("turn_output_tokens") or 0)
    return Usage(inp, out, None) if seen else None
