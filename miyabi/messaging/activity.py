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
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from miyabi.agents.hooks import Activity, interpret
from miyabi.agents.usage import Usage
from miyabi.events import EventKind
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
    import psutil  # here: `miyabi status` reads states without ever starting a process clock

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, ValueError):
        return 0.0


def same_text(sent: str, received: str) -> bool:
    """Whether the prompt an agent reported is the text miyabi typed, whitespace
    aside (CLIs trim a prompt's ends and Claude Code turns a pasted tab into spaces)."""
    return sent.split() == received.split()


@dataclass(frozen=True)
class Seen:
    """An agent's state as last recorded.

    Attributes:
        state: an :class:`~miyabi.agents.hooks.Activity` value.
        via: ``hook`` or ``screen``: who told.
        since: Unix time of the change.
        pid: the agent process it is about.
        question: the permission question, while ``waiting-approval``.
        input_tokens: tokens this process sent to its model so far, where its CLI tells.
        output_tokens: tokens its model answered so far, where its CLI tells.
        cost_usd: what its CLI reported the session cost, in US dollars.
        session: the id of the agent's conversation as its hooks reported it (Claude
            Code's ``session_id``, the ``thread-id`` of Codex's main thread), kept
            across its processes; a restart resumes it.
    """

    state: str
    via: str
    since: float
    pid: int
    question: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    session: str | None = None


def read_seen(home_root: Path, agent: str) -> Seen | None:
    """The state the controller last recorded for ``agent``, or None."""
    try:
        data = json.loads(activity_file(home_root, agent).read_text(encoding="utf-8"))
        return Seen(
            **{k: data[k] for k in ("state", "via", "since", "pid")},
            **{k: data.get(k) for k in ("question", "input_tokens", "output_tokens", "cost_usd", "session")},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


REREAD = 1 << 20
"""Bytes of the hook log read again when a new process is followed (its first events
may have been read while the old one was still followed)."""


class ActivityTracker:
    """One agent's state from its hooks. Thread-safe: the deliverer and the watchdog
    both ask it.

    Args:
        path: the agent's hook log.
        clock: Unix time.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
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
        self.transcript: str | None = None
        """Claude Code's transcript of this process (from its hooks' payloads)."""
        self.usage_due = False
        """A turn ended since usage was last read."""
        self.thread: str | None = None
        """The Codex thread whose turn ended last (its session file holds the usage)."""
        self.session: str | None = None
        """The agent's conversation id as its hooks reported it (kept when a new
        process is followed: a resumed one goes on with it)."""
        self.limit: str | None = None
        """What the CLI's hook said of its provider's usage limit when that ended its
        last turn (None: its last turn did not end so)."""

    def follow(self, pid: int) -> None:
        """Track process ``pid`` (a new process forgets what the old one said, and its
        own first events are read again)."""
        with self.lock:
            if pid == self.pid:
                return
            self.pid = pid
            self.started = process_started(pid) - 0.05 if pid else 0.0
            self.state, self.since, self.question, self.expect = None, 0.0, None, None
            self.receipts.clear()
            self.turn_ends.clear()
            self.transcript, self.usage_due, self.limit = None, False, None
            try:
                self.offset, self.partial = max(0, self.path.stat().st_size - REREAD), b""
            except OSError:
                self.offset, self.partial = 0, b""
            self.refresh()

    def refresh(self) -> bool:
        """Read what the hook log gained; True when it had something new."""
        with self.lock:
            return self._refresh()

    def _refresh(self) -> bool:
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
        if t < self.started or t < self.since:  # an old process's, or out of order (hooks race)
            return
        report = interpret(rec)
        self._ids(rec)
        if report.prompt is not None and rec.get("event") != "notify":
            self.receipts.append((t, report.prompt))
        if report.activity is not None:
            self.limit = report.limit  # a new turn, or one that ended otherwise, clears it
        if report.activity is Activity.READY:
            prompt = rec.get("prompt") if rec.get("event") == "notify" else None
            if prompt is not None and self.expect is not None and not same_text(self.expect, str(prompt)):
                return  # a Codex side thread (its title writer) ended, not the agent's turn
            self.turn_ends.append((t, prompt))
            self.usage_due = True
            if rec.get("event") == "notify" and isinstance(rec.get("session"), str):
                self.thread = self.session = rec["session"]
        if rec.get("event") == "answered":
            # The question is gone; the screen tells what follows until a hook does
            # (aider reports once per answer, and it may have done so at the question).
            self.state, self.since, self.question = None, t, None
            return
        if report.activity is Activity.WAITING_APPROVAL and self.state is Activity.WAITING_APPROVAL and self.question:
            return  # a reminder of the same question ("Claude needs your permission"): the first one says more
        if report.activity is not None:
            self.state, self.since = report.activity, t
            self.question = report.question if report.activity is Activity.WAITING_APPROVAL else None

    def _ids(self, rec: dict[str, Any]) -> None:
        """The conversation id and transcript a hook record names."""
        if rec.get("event") != "notify" and isinstance(rec.get("session"), str) and rec["session"]:
            # Claude Code's hooks all carry it (a Codex side thread's notify may not be ours)
            self.session = rec["session"]
        if isinstance(rec.get("transcript"), str):
            self.transcript = rec["transcript"]

    def submitted(self, text: str, at: float) -> None:
        """A message was typed and its submit key first pressed at ``at``: the agent
        works on it until its hooks say otherwise (what they said since stands)."""
        with self.lock:
            self.expect = text
            self._refresh()
            if self.since < at:
                self.state, self.since, self.question = Activity.BUSY, at, None

    def receipt(self, text: str, after: float) -> bool:
        """Whether the agent reported receiving ``text`` since ``after``."""
        with self.lock:
            return any(t >= after and same_text(text, p) for t, p in self.receipts)

    def turn_ended(self, after: float) -> bool:
        """Whether the agent reported a turn's end since ``after``."""
        with self.lock:
            return any(t >= after for t, _ in self.turn_ends)

    def hook_state(self) -> Activity | None:
        """The state the hooks give, or None when they say nothing that holds (no
        event from this process yet, or a "busy" older than ``STALE_BUSY``)."""
        with self.lock:
            if self.state is Activity.BUSY and self.clock() - self.since > STALE_BUSY:
                return None
            return self.state

    def expecting(self, text: str) -> None:
        """The submit key is about to be pressed for ``text``: a Codex turn end counts
        for it from now on (its side thread's do not)."""
        with self.lock:
            self.expect = text

    def question_gone(self) -> None:
        """The screen shows no question any more: the hook's waiting-approval is over
        (answered in the pane by hand, or interrupted: Claude Code reports neither)."""
        with self.lock:
            if self.state is Activity.WAITING_APPROVAL:
                self.state, self.question = None, None


class StateRecorder:
    """Records an agent's changes of state (event ``state`` and its activity file)."""

    def __init__(self, home_root: Path, agent: str, event: Callable[..., None]) -> None:
        self.path = activity_file(home_root, agent)
        private_dir(self.path.parent)
        self.event = event
        self.last: tuple[str, str, int, str | None, Usage | None, str | None] | None = None

    def record(
        self,
        state: str,
        via: str,
        pid: int,
        question: str | None = None,
        usage: Usage | None = None,
        session: str | None = None,
    ) -> bool:
        """Record the state (and the conversation id, ``session``); True when the state
        (or its question) changed."""
        key = (state, via, pid, question, usage, session)
        if key == self.last:
            return False
        changed = self.last is None or self.last[0] != state or self.last[3] != question
        self.last = key
        seen = Seen(
            state,
            via,
            time.time(),
            pid,
            question,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            cost_usd=usage.cost_usd if usage else None,
            session=session,
        )
        write_atomic(self.path, json.dumps(asdict(seen)))
        if changed:
            fields: dict[str, Any] = {"state": state, "via": via, "pid": pid}
            if question:
                fields["question"] = question
            self.event(EventKind.STATE, **fields)
        return changed
