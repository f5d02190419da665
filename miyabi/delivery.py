"""Delivery: typing one message at a time into an agent's pane, at least once and
never twice.

For each agent a :class:`Deliverer` takes the head of its inbox and, when the agent is
ready by its profile (busy pattern absent and ready pattern shown, on two reads
``ready_settle`` apart, and its input box empty where miyabi can see it), types it:

1. it records the message in the agent's journal (``run/delivery/<agent>.json``,
   stage ``typing``, with the size of the pane log) before anything reaches tmux;
2. leaves copy mode; types the body with control characters stripped (a short single
   line with ``send-keys -l``, anything else through a tmux buffer pasted with
   ``paste-buffer -p -r -d``); stage ``typed``;
3. waits the profile's submit delay, records stage ``entering`` and presses the submit
   key; then verifies: the agent turned busy or its input box emptied. If the text
   still sits in the input box it presses the key again, at most three times in all.
   It never types the text a second time;
4. moves the file to ``cur/`` with the delivery time and clears the journal.

A controller killed at any instant resumes from the journal: ``typing`` → looks
whether the text reached the input box (or, where the box cannot be seen, whether the
pane printed since) and types it only if not; ``typed`` → presses the key;
``entering`` → verifies (pressing again only if the text still sits there);
``submitted`` → finishes. A message whose agent restarted mid-delivery is typed again
in the new process (at-least-once); ids let the receiver discard repeats.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from miyabi.errors import TmuxError
from miyabi.layout.model import Agent
from miyabi.mailbox import CorruptMessage, Inbox, Message, append_event, now_rfc3339, sanitize
from miyabi.profiles import SCREEN_LINES, Profile
from miyabi.tmux.panes import Pane, Runner

SHORT_TEXT = 2048
"""Longest single line, in bytes, typed with ``send-keys -l``; longer text is pasted."""

MAX_ENTERS = 3
"""Most times the submit key is pressed for one message."""

ENTER_RETRY = 0.5
"""Seconds after a submit key press before pressing it again if the text still sits in
the input box."""

VERIFY_TIMEOUT = 3.0
"""Seconds to wait for evidence that a message was submitted."""

MAX_ATTEMPTS = 3
"""Times a message may be typed (each in a new agent process) before it is a dead letter."""

log = logging.getLogger("miyabi.delivery")

COMPOSER_LINES = 5
"""Lines from the bottom of the screen searched for the input box."""


Channel = Runner


@dataclass
class Marker:
    """The journal entry of the message being delivered to one agent."""

    id: str
    name: str
    stage: str
    pane: str
    pid: int
    log_offset: int
    attempts: int
    enters: int = 0


# ------------------------------------------------------------------ reading screens


def tail(lines: list[str], n: int = SCREEN_LINES) -> list[str]:
    """The last ``n`` non-blank lines."""
    return [ln for ln in lines if ln.strip()][-n:]


def is_busy(profile: Profile, lines: list[str]) -> bool:
    return bool(profile.busy_pattern and re.search(profile.busy_pattern, "\n".join(tail(lines)), re.MULTILINE))


def composer_text(profile: Profile, lines: list[str]) -> str | None:
    """What sits in the agent's input box ("" when empty), or None when the profile
    has no composer pattern or no input box is on screen."""
    if not profile.composer_pattern:
        return None
    pat = re.compile(profile.composer_pattern)
    for line in reversed(tail(lines, COMPOSER_LINES)):
        m = pat.search(line)
        if m:
            return (m.group("text") or "").strip()
    return None


def looks_ready(profile: Profile, lines: list[str]) -> bool:
    """Busy pattern absent, ready pattern shown (if the profile has one), and the
    input box empty (where it can be seen)."""
    if is_busy(profile, lines):
        return False
    if profile.ready_pattern and not re.search(profile.ready_pattern, "\n".join(tail(lines)), re.MULTILINE):
        return False
    return composer_text(profile, lines) in (None, "")


def text_on_screen(text: str, lines: list[str]) -> bool:
    """Whether the end of ``text`` (up to 30 characters of its last line) shows in the
    bottom lines of the screen: the evidence that typing reached the pane, for
    profiles whose input box miyabi cannot see. Wrapped lines are joined too."""
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    needle = last[-30:]
    if not needle:
        return False
    bottom = tail(lines, COMPOSER_LINES * 2)
    return needle in "\n".join(bottom) or needle in "".join(bottom)


def prepare(body: str) -> str:
    """The text typed for ``body``: control characters stripped, trailing newlines
    removed (inside a bracketed paste a final newline would stay as text)."""
    return sanitize(body).rstrip("\n")


# ------------------------------------------------------------------ the deliverer


class Deliverer:
    """Delivers one agent's inbox into its pane.

    Args:
        agent: the agent (its profile says how to read and type into it).
        inbox: its inbox.
        chan: a tmux channel (control client) with ``run(*args)``.
        home_root: the miyabi home (journal under ``run/delivery``, events, pane log).
        pane: returns the agent's current pane, or None when it has none.
        sleep, clock: injectable for tests.
    """

    def __init__(
        self,
        agent: Agent,
        inbox: Inbox,
        chan: Channel,
        home_root: Path,
        pane: Callable[[], Pane | None],
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        lock: threading.Lock | None = None,
        on_delivered: Callable[[Message], None] | None = None,
        on_dead_letter: Callable[[Message, str], None] | None = None,
    ) -> None:
        self.agent = agent
        self.profile = agent.profile
        self.inbox = inbox
        self.chan = chan
        self.home = home_root
        self.pane = pane
        self.sleep = sleep
        self.clock = clock
        self.journal = home_root / "run" / "delivery" / f"{agent.name}.json"
        self.log = home_root / "logs" / f"{agent.name}.log"
        self.wake = threading.Event()
        self.on_delivered = on_delivered
        self.on_dead_letter = on_dead_letter
        self.lock = lock or threading.Lock()
        """Held from the live-pane check through typing and verification; the watchdog
        takes it before respawning the pane, so no keystroke reaches a new process."""
        self._has_marker: bool | None = None  # None: not read from disk yet
        self.last_delivered: float | None = None
        """time.monotonic() of the last delivery (for the watchdog's silence rule)."""
        self.waiting = False
        """True while mail waits for the agent to be ready (the controller's rescan
        then wakes this deliverer every POLL seconds to look again)."""

    # -- journal

    def load_marker(self) -> Marker | None:
        if self._has_marker is False:  # we clear it ourselves; no need to look
            return None
        try:
            m = Marker(**json.loads(self.journal.read_text(encoding="utf-8")))
            self._has_marker = True
            return m
        except FileNotFoundError:
            self._has_marker = False
            return None
        except (ValueError, TypeError):
            self.journal.unlink(missing_ok=True)
            return None

    def save_marker(self, m: Marker) -> None:
        self.journal.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.journal.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(m)), encoding="utf-8")
        os.replace(tmp, self.journal)
        self._has_marker = True

    def clear_marker(self) -> None:
        self.journal.unlink(missing_ok=True)
        self._has_marker = False

    def event(self, event: str, msg: Message | None = None, **fields: Any) -> None:
        extra = {"id": msg.id, "from": msg.sender} if msg else {}
        append_event(self.home, event, agent=self.agent.name, **extra, **fields)

    # -- one step

    def step(self) -> bool:
        """Deliver (or resume delivering) the head of the inbox if the agent is ready.

        Returns:
            True when it did something (call again at once), False when there is
            nothing to do now (wait for a wake-up or a short timeout).
        """
        marker = self.load_marker()
        if marker is not None:
            with self.lock:
                self.resume(marker)
            return True
        names = self.inbox.pending()
        self.waiting = bool(names)
        if not names:
            return False
        try:
            msg = self.inbox.read(names[0])
        except CorruptMessage as e:
            self.inbox.quarantine(names[0], str(e))
            append_event(self.home, "dead-letter", agent=self.agent.name, file=names[0], reason=str(e))
            return True
        if msg is None:
            return True
        if msg.expired(self.clock()):
            self.fail(msg, f"its ttl of {msg.ttl:g} s ran out before {self.agent.name} was ready")
            return True
        if not prepare(msg.body).strip():
            self.fail(msg, "nothing to type: the body is empty once control characters are removed")
            return True
        pane = self.pane()
        if pane is None or pane.dead or not self.ready(pane):
            return False
        attempts = int(msg.extra.get("attempts", 0)) + 1
        if attempts > MAX_ATTEMPTS:
            self.fail(msg, f"typed {MAX_ATTEMPTS} times, but the agent restarted before each was submitted")
            return True
        with self.lock:
            self.type_message(msg, pane, attempts)
        return True

    def live(self, pane: Pane) -> tuple[bool, bool]:
        """(alive, in copy mode) for ``pane`` as tmux sees it now: the controller's
        pane map can be up to PANE_REFRESH old, and a dead pane's screen still shows
        an empty prompt. The pane must hold the same process as ``pane.pid``."""
        out = self.chan.run("display-message", "-p", "-t", pane.pane_id, "#{pane_dead} #{pane_pid} #{pane_in_mode}")
        dead, pid, mode = (out[0].split() + ["", "", ""])[:3] if out else ("1", "", "")
        return dead != "1" and pid == str(pane.pid), mode == "1"

    def ready(self, pane: Pane) -> bool:
        """Alive, and ready by the profile on two reads ``ready_settle`` seconds apart."""
        if not self.live(pane)[0]:
            return False
        if not self.profile.ready_pattern and not self.profile.busy_pattern and not self.profile.composer_pattern:
            return True
        if not looks_ready(self.profile, self.screen(pane.pane_id)):
            return False
        if self.profile.ready_settle > 0:
            self.sleep(self.profile.ready_settle)
            return looks_ready(self.profile, self.screen(pane.pane_id)) and self.live(pane)[0]
        return True

    def screen(self, pane_id: str) -> list[str]:
        return self.chan.run("capture-pane", "-p", "-t", pane_id)

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    # -- typing

    def type_message(self, msg: Message, pane: Pane, attempts: int) -> None:
        marker = Marker(msg.id, msg.filename, "typing", pane.pane_id, pane.pid, self.log_size(), attempts)
        self.save_marker(marker)
        self.event("typing", msg, pane=pane.pane_id, attempt=attempts)
        try:
            alive, in_mode = self.live(pane)
        except TmuxError as e:
            alive, in_mode = False, False
            self.event("type-error", msg, error=str(e))
        if not alive:
            self.retry_later(msg, marker, typed=False)
            return
        try:
            if in_mode:
                self.chan.run("send-keys", "-X", "-t", pane.pane_id, "cancel", check=False)
            self.type_text(msg, pane.pane_id)
        except TmuxError as e:
            # The text may or may not have reached the pane: keep the journal at
            # "typing", and let resume() look before anything is typed again.
            self.event("type-error", msg, error=str(e))
            return
        marker.stage = "typed"
        self.save_marker(marker)
        self.submit(msg, marker)

    def type_text(self, msg: Message, pane_id: str) -> None:
        text = prepare(msg.body)
        if "\n" not in text and len(text.encode()) <= SHORT_TEXT:
            self.chan.run("send-keys", "-t", pane_id, "-l", "--", text)
            return
        buf = f"miyabi-{msg.id}"
        self.chan.run("set-buffer", "-b", buf, "--", text)
        paste = ["paste-buffer", "-d", "-r", "-b", buf, "-t", pane_id]
        if self.profile.bracketed_paste:
            paste.insert(1, "-p")
        self.chan.run(*paste)

    def press_submit(self, marker: Marker) -> None:
        marker.enters += 1
        marker.stage = "entering"
        self.save_marker(marker)
        self.chan.run("send-keys", "-t", marker.pane, self.profile.submit_key)

    def submit(self, msg: Message, marker: Marker) -> None:
        if self.profile.submit_delay > 0:
            self.sleep(self.profile.submit_delay)
        try:
            self.press_submit(marker)
        except TmuxError as e:
            self.event("type-error", msg, error=str(e))
            self.retry_later(msg, marker)
            return
        self.verify(msg, marker)

    def verify(self, msg: Message, marker: Marker) -> None:
        """Wait for evidence of submission; press the key again while the text sits in
        the input box (at most MAX_ENTERS presses in all)."""
        p = self.profile
        if not p.busy_pattern and not p.composer_pattern:
            self.finish(msg, marker, "submitted")
            return
        start = last_enter = time.monotonic()
        while True:
            pane = self.pane()
            try:
                alive = pane is not None and pane.pane_id == marker.pane and self.live(
                    Pane(**{**asdict(pane), "pid": marker.pid})
                )[0]
            except TmuxError:
                alive = False
            if not alive:
                self.event("agent-restarted", msg, stage=marker.stage)
                self.retry_later(msg, marker)
                return
            try:
                lines = self.screen(marker.pane)
            except TmuxError as e:
                self.event("type-error", msg, error=str(e))
                self.retry_later(msg, marker)
                return
            if is_busy(p, lines):
                self.finish(msg, marker, "agent busy")
                return
            box = composer_text(p, lines)
            if box == "":
                self.finish(msg, marker, "input box emptied")
                return
            now = time.monotonic()
            if box is None and now - start > ENTER_RETRY:
                self.finish(msg, marker, "unverified: input box not visible")
                return
            if box and now - last_enter >= ENTER_RETRY:
                if marker.enters >= MAX_ENTERS:
                    self.fail(msg, f"typed, but still in the input box after {MAX_ENTERS} presses of {p.submit_key}", marker)
                    return
                self.event("enter-again", msg, enters=marker.enters + 1)
                self.press_submit(marker)
                last_enter = now
            if now - start > VERIFY_TIMEOUT + ENTER_RETRY * MAX_ENTERS:
                self.finish(msg, marker, "unverified: no sign of submission")
                return
            self.sleep(0.01)

    # -- outcomes

    def finish(self, msg: Message, marker: Marker, evidence: str) -> None:
        marker.stage = "submitted"
        self.save_marker(marker)
        self.inbox.move(msg, "pending", "delivered", delivered=now_rfc3339(), attempts=marker.attempts, enters=marker.enters)
        self.clear_marker()
        self.last_delivered = time.monotonic()
        self.event("delivered", msg, pane=marker.pane, evidence=evidence, enters=marker.enters)
        if self.on_delivered is not None:
            self.on_delivered(msg)

    def fail(self, msg: Message, reason: str, marker: Marker | None = None) -> None:
        self.inbox.move(msg, "pending", "failed", failed=now_rfc3339(), reason=reason)
        self.clear_marker()
        self.event("dead-letter", msg, reason=reason)
        if self.on_dead_letter is not None:
            self.on_dead_letter(msg, reason)

    def retry_later(self, msg: Message, marker: Marker, typed: bool = True) -> None:
        """The attempt did not reach a live agent: keep the message pending, to be typed
        again when the agent is ready. ``typed``: whether it counts as an attempt."""
        current = self.inbox.read(msg.filename)
        if current is not None:
            self.inbox.move(current, "pending", "pending", attempts=marker.attempts if typed else marker.attempts - 1)
        self.clear_marker()

    # -- recovery

    def resume(self, marker: Marker) -> None:
        """Continue a delivery a previous controller left in the journal."""
        msg = self.inbox.read(marker.name)
        if msg is None:  # already moved on
            self.clear_marker()
            return
        self.event("resume", msg, stage=marker.stage)
        if marker.stage == "submitted":
            self.finish(msg, marker, "journal")
            return
        pane = self.pane()
        if pane is None or pane.pane_id != marker.pane or not self.live(Pane(**{**asdict(pane), "pid": marker.pid}))[0]:
            self.event("agent-restarted", msg, stage=marker.stage)
            self.retry_later(msg, marker)
            return
        if marker.stage == "typing":
            lines = self.screen(marker.pane)
            box = composer_text(self.profile, lines)
            typed = bool(box) if box is not None else text_on_screen(prepare(msg.body), lines)
            if not typed:
                # It never reached the agent: the next step types it again once the
                # agent is ready (the same attempt).
                self.retry_later(msg, marker, typed=False)
                return
            marker.stage = "typed"
            self.save_marker(marker)
        if marker.stage == "typed":
            self.submit(msg, marker)
        else:  # entering: the key may have been pressed
            self.verify(msg, marker)

    def run(self, stop: threading.Event, idle: float = 0.2) -> None:
        """Deliver until ``stop`` is set; between messages wait for a wake-up (a new
        file, pane output, the controller's rescan) or at most ``idle`` seconds. An
        error never ends the thread: it is logged and the step tried again."""
        while not stop.is_set():
            try:
                busy = self.step()
            except TmuxError as e:
                self.event("tmux-error", error=str(e))
                busy = False
            except Exception as e:  # noqa: BLE001 - the thread must live on
                log.exception("deliverer %s", self.agent.name)
                self.event("deliverer-error", error=f"{type(e).__name__}: {e}")
                stop.wait(1.0)
                busy = False
            if not busy:
                self.wake.wait(idle)
                self.wake.clear()
