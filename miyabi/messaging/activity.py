"""What an agent is doing, from its hook log first and its screen second.

The :class:`ActivityTracker` of an agent follows the agent's hook log
(``run/hooks/<agent>.jsonl``, appended by ``miyabi hook``), folding each event through
:func:`miyabi.agents.hooks.interpret`; events written before the agent's current
process started are ignored. The deliverer asks it whether the agent is ready, and
whether a prompt it typed was received (the receipt); it records every change of
state as a ``state`` event and in ``run/activity/<agent>.json`` (read by ``miyabi
status`` and ``approve``).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from miyabi.agents.hooks import Activity, interpret
from miyabi.files import private_dir, write_atomic

STALE_BUSY = 30.0
"""Seconds after which a hook's "busy" no longer outranks a screen that shows the
agent ready (a CLI that never reported the end of a turn, such as one interrupted)."""


def hook_log(home_root: Path, agent: str) -> Path:
    """The agent's hook log."""
    return home_root / "run" / "hooks" / f"{agent}.jsonl"


def activity_file(home_root: Path, agent: str) -> Path:
    """Where the controller records the agent's current state."""
    return home_root / "run" / "activity" / f"{agent}.json"


def process_started(pid: int) -> float:
    """The Unix time process ``pid`` started (0.0 when it is gone)."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, ValueError):
        return 0.0


def same_text(sent: str, received: str) -> bool:
    """Whether the prompt an agent reported is the text miyabi typed (whitespace at
    the ends and line endings aside)."""
    def norm(s: str) -> str:
        return s.replace("\r\n", "\n").replace("\r", "\n").strip()
    return norm(sent) == norm(received)


@dataclass(frozen=True)
class Seen:
    """An agent's state as last recorded.

    Attributes:
        state: an :class:`~miyabi.agents.hooks.Activity` value.
        via: ``hook`` or ``screen``: who told.
        since: Unix time of the change.
        pid: the agent process it is about.
        question: the permission question, while ``waiting-approval``.
    """

    state: str
    via: str
    since: float
    pid: int
    question: str | None = None


def read_seen(home_root: Path, agent: str) -> Seen | None:
    """The state the controller last recorded for ``agent``, or None."""
    try:
        data = json.loads(activity_file(home_root, agent).read_text(encoding="utf-8"))
        return Seen(**{k: data[k] for k in ("state", "via", "since", "pid")}, question=data.get("question"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class ActivityTracker:
    """One agent's state from its hooks.

    Args:
        path: the agent's hook log.
        clock: Unix time.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self.offset = 0
        self.partial = b""
        self.pid = 0
        self.started = 0.0
        self.state: Activity | None = None
        self.since = 0.0
        self.question: str | None = None
        self.receipts: deque[tuple[float, str]] = deque(maxlen=64)
        self.turn_ends: deque[tuple[float, str | None]] = deque(maxlen=64)
        self.expect: str | None = None
        """The text of the last message typed (a Codex turn end counts for it only)."""

    def follow(self, pid: int) -> None:
        """Track process ``pid`` (a new process forgets what the old one said)."""
        if pid == self.pid:
            return
        self.pid = pid
        self.started = process_started(pid) - 0.05 if pid else 0.0
        self.state, self.since, self.question, self.expect = None, 0.0, None, None
        self.receipts.clear()
        self.turn_ends.clear()
        self.refresh()

    def refresh(self) -> bool:
        """Read what the hook log gained; True when it had something new."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return False
        if size < self.offset:  # replaced
            self.offset, self.partial = 0, b""
        if size == self.offset:
            return False
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict):
                self.feed(rec)
        return True

    def feed(self, rec: dict[str, Any]) -> None:
        """Fold one hook-log record in."""
        try:
            t = float(rec.get("t", 0))
        except (TypeError, ValueError):
            return
        if t < self.started:
            return
        report = interpret(rec)
        if report.prompt is not None and rec.get("event") != "notify":
            self.receipts.append((t, report.prompt))
        if report.activity is Activity.READY:
            prompt = rec.get("prompt") if rec.get("event") == "notify" else None
            if prompt is not None and self.expect is not None and not same_text(self.expect, str(prompt)):
                return  # a Codex side thread (its title writer) ended, not the agent's turn
            self.turn_ends.append((t, prompt))
        if rec.get("event") == "answered" and report.activity is None:
            self.state, self.since, self.question = None, t, None  # denied: the screen tells what follows
            return
        if report.activity is not None:
            self.state, self.since = report.activity, t
            self.question = report.question if report.activity is Activity.WAITING_APPROVAL else None

    def submitted(self, text: str, at: float) -> None:
        """A message was typed and its submit key first pressed at ``at``: the agent
        works on it until its hooks say otherwise (what they said since stands)."""
        self.expect = text
        self.refresh()
        if self.since < at:
            self.state, self.since, self.question = Activity.BUSY, at, None

    def receipt(self, text: str, after: float) -> bool:
        """Whether the agent reported receiving ``text`` since ``after``."""
        return any(t >= after and same_text(text, p) for t, p in self.receipts)

    def turn_ended(self, after: float) -> bool:
        """Whether the agent reported a turn's end since ``after``."""
        return any(t >= after for t, _ in self.turn_ends)

    def hook_state(self) -> Activity | None:
        """The state the hooks give, or None when they say nothing that holds (no
        event from this process yet, or a "busy" older than ``STALE_BUSY``)."""
        if self.state is Activity.BUSY and self.clock() - self.since > STALE_BUSY:
            return None
        return self.state


class StateRecorder:
    """Records an agent's changes of state (event ``state`` and its activity file)."""

    def __init__(self, home_root: Path, agent: str, event: Callable[..., None]) -> None:
        self.path = activity_file(home_root, agent)
        private_dir(self.path.parent)
        self.event = event
        self.last: tuple[str, str, int, str | None] | None = None

    def record(self, state: str, via: str, pid: int, question: str | None = None) -> None:
        key = (state, via, pid, question)
        if key == self.last:
            return
        changed = self.last is None or self.last[0] != state or self.last[3] != question
        self.last = key
        seen = Seen(state, via, time.time(), pid, question)
        write_atomic(self.path, json.dumps(asdict(seen)))
        if changed:
            fields: dict[str, Any] = {"state": state, "via": via, "pid": pid}
            if question:
                fields["question"] = question
            self.event("state", **fields)

    def forget(self) -> None:
        self.last = None
        try:
            os.unlink(self.path)
        except OSError:
            pass
