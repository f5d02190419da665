"""Delivery: typing one message at a time into an agent's pane, at least once and
never twice.

For each agent a :class:`Deliverer` takes the head of its inbox and, when the agent is
ready by its profile (busy pattern absent and ready pattern shown, on two reads
``ready_settle`` apart, and its input box empty where miyabi can see it), types it:

1. it records the message in the agent's journal (``run/delivery/<agent>.json``,
   stage ``typing``) before anything reaches tmux;
2. leaves copy mode; types the body with control characters stripped (a short single
   line literally, anything else through a tmux buffer as a paste); stage ``typed``;
3. waits the profile's submit delay, records stage ``entering`` and presses the submit
   key; then verifies: the agent turned busy or its input box emptied. If the text
   still sits in the input box it presses the key again, at most
   ``defaults.MAX_ENTERS`` times in all. It never types the text a second time;
4. moves the file to ``cur/`` with the delivery time and clears the journal.

A controller killed at any instant resumes from the journal: ``typing`` → looks
whether the text reached the input box (or, where the box cannot be seen, the bottom
of the screen) and types it only if not; ``typed`` → presses the key; ``entering`` →
verifies (pressing again only if the text still sits there); ``submitted`` →
finishes. A message whose agent restarted mid-delivery is typed again in the new
process (at-least-once); ids let the receiver discard repeats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.agents.hooks import Activity, has_receipts, reports_ready
from miyabi.agents.screen import (
    Screen,
    approval_question,
    composer_text,
    is_busy,
    reads_screen,
    text_at_cursor,
    text_on_screen,
)
from miyabi.config.model import Agent
from miyabi.errors import TmuxError
from miyabi.events import EventKind, append_event
from miyabi.messaging.intro import go_on_text
from miyabi.messaging.journal import Journal, Marker, Stage
from miyabi.messaging.keyboard import Keyboard
from miyabi.messaging.mailbox import CorruptMessage, Inbox, Message, MessageState, enqueue, make, sanitize
from miyabi.messaging.parking import Parked
from miyabi.messaging.readiness import Readiness
from miyabi.stopping import Stopped
from miyabi.times import how_often, now_rfc3339
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import Pane

log = logging.getLogger("miyabi.delivery")


def _rest(screen: Screen) -> tuple[str, ...]:
    """The screen without the cursor's row: what changes when an agent takes a
    message (its history, its status), not the input box itself."""
    return tuple(ln.rstrip() for i, ln in enumerate(screen.lines) if i != screen.cursor_y)


def prepare(body: str) -> str:
    """The text typed for ``body``: control characters stripped, trailing newlines
    removed (inside a bracketed paste a final newline would stay as text)."""
    return sanitize(body).rstrip("\n")


class Deliverer:
    """Delivers one agent's inbox into its pane.

    Args:
        agent: the agent (its profile says how to read and type into it).
        inbox: its inbox.
        driver: verbs on panes (over the controller's control channel).
        home_root: the miyabi home (journal under ``run/delivery``, events).
        pane: returns the agent's current pane, or None when it has none.
        sleep: waits (the controller's raises :class:`~miyabi.stopping.Stopped` on stop).
        clock: Unix time, for TTLs.
        on_delivered: called with each delivered message and the pid of the process it
            was typed into.
        on_dead_letter: called with each message that became a dead letter, and why.
        on_question: called with each new permission question the agent asks (for
            the layout's auto-answers).
        keyboard: where a person types (the controller's, shared); None: never
            looked at.
    """

    def __init__(
        self,
        agent: Agent,
        inbox: Inbox,
        driver: PaneDriver,
        home_root: Path,
        pane: Callable[[], Pane | None],
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        on_delivered: Callable[[Message, int], None] | None = None,
        on_dead_letter: Callable[[Message, str], None] | None = None,
        on_question: Callable[[str], None] | None = None,
        keyboard: Keyboard | None = None,
    ) -> None:
        self.agent = agent
        self.profile = agent.profile
        self.inbox = inbox
        self.driver = driver
        self.home = home_root
        self.pane = pane
        self.sleep = sleep
        self.clock = clock
        self.journal = Journal(home_root, agent.name)
        self.wake = threading.Event()
        self.on_delivered = on_delivered
        self.on_dead_letter = on_dead_letter
        self.lock = threading.Lock()
        """Held from the live-pane check through typing and verification; the watchdog
        takes it before respawning the pane, so no keystroke reaches a new process."""
        self.last_delivered: float | None = None
        """time.monotonic() of the last delivery (for the watchdog's silence rule)."""
        self.waiting = False
        """True while mail waits for the agent to be ready (the controller's rescan
        then wakes this deliverer every ``defaults.INBOX_RESCAN`` seconds to look again)."""
        self.readiness = Readiness(agent, driver, home_root, self.event, sleep, on_question, keyboard, self.go_on)
        """What the agent is doing, and whether it is ready for a message."""
        self.activity = self.readiness.activity
        """What the agent's hooks say (empty for a profile without hooks)."""
        self._entered: tuple[str, float] = ("", 0.0)
        """(message id, Unix time) of the first press of the submit key for it."""
        self._before: tuple[str, tuple[str, ...]] = ("", ())
        """(message id, the screen outside the cursor's row) just before the submit key."""
        self._jumped = False
        """A park's probe queued its message while this step chose another."""

    def event(self, event: EventKind, msg: Message | None = None, **fields: Any) -> None:
        extra = {"id": msg.id, "from": msg.sender} if msg else {}
        append_event(self.home, event, agent=self.agent.name, **extra, **fields)

    def go_on(self, parked: Parked) -> None:
        """Queue the message that tells the agent, parked at a usage limit, to go on
        (at the head of its inbox; typing it is the probe)."""
        text = go_on_text(self.agent.name, parked, self.readiness.last_task)
        enqueue(self.home, make(self.agent.name, text, sender="miyabi", priority="high"), why="go-on")
        self._jumped = True
        self.wake.set()

    def state(self, pane: Pane) -> tuple[Activity, str, str | None, Screen | None]:
        """What the watchdog asks of a deliverer: :meth:`Readiness.state`."""
        return self.readiness.state(pane)

    # -- one step

    def step(self) -> bool:
        """Deliver (or resume delivering) the head of the inbox if the agent is ready.

        Returns:
            True when it did something (call again at once), False when there is
            nothing to do now (wait for a wake-up or a short timeout).

        Raises:
            Stopped: the controller is stopping (the journal keeps the stage).
            TmuxError: tmux failed outside a delivery in progress.
        """
        marker = self.journal.load()
        if marker is not None:
            with self.lock:
                self.resume(marker)
            return True
        self._jumped = False  # before the inbox is read: a probe queued after it makes this step choose again
        names = self.inbox.pending()
        self.waiting = bool(names)
        if not names:
            return False
        try:
            msg = self.inbox.read(names[0])
        except CorruptMessage as e:
            self.inbox.quarantine(names[0], str(e))
            append_event(self.home, EventKind.DEAD_LETTER, agent=self.agent.name, file=names[0], reason=str(e))
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
        if pane is None or pane.dead or not self.readiness.ready(pane):
            return False
        if self._jumped:  # a park's probe just queued its message ahead of this one
            return True
        attempts = int(msg.extra.get("attempts", 0)) + 1
        if attempts > defaults.DELIVERY_ATTEMPTS:
            self.fail(
                msg, f"typed {how_often(defaults.DELIVERY_ATTEMPTS)}, but the agent restarted before each was submitted"
            )
            return True
        with self.lock:
            self.type_message(msg, pane, attempts)
        return True

    # -- typing

    def type_message(self, msg: Message, pane: Pane, attempts: int) -> None:
        marker = Marker(msg.id, msg.filename, Stage.TYPING, pane.pane_id, pane.pid, 0, attempts)
        self.journal.save(marker)
        self.event(EventKind.TYPING, msg, pane=pane.pane_id, attempt=attempts)
        self.readiness.recorder.record(Activity.BUSY, "delivery", pane.pid)  # no longer free for another message
        try:
            alive, in_mode = self.readiness.live(pane)
        except TmuxError as e:
            alive, in_mode = False, False
            self.event(EventKind.TYPE_ERROR, msg, error=str(e))
        if not alive:
            self.retry_later(msg, marker, typed=False)
            return
        try:
            if in_mode:
                self.driver.leave_mode(pane.pane_id)
            self.type_text(msg, pane.pane_id)
        except TmuxError as e:
            # The text may or may not have reached the pane: keep the journal at
            # "typing", and let resume() look before anything is typed again.
            self.event(EventKind.TYPE_ERROR, msg, error=str(e))
            return
        marker.stage = Stage.TYPED
        self.journal.save(marker)
        self.submit(msg, marker)

    def type_text(self, msg: Message, pane_id: str) -> None:
        text = prepare(msg.body)
        limit = self.profile.typed_limit if self.profile.bracketed_paste else defaults.SHORT_TEXT
        if "\n" not in text and "\t" not in text and len(text.encode()) <= limit:
            self.driver.type_text(pane_id, text)
        else:
            self.driver.paste(pane_id, text, f"miyabi-{msg.id}", self.profile.bracketed_paste)

    def press_submit(self, marker: Marker, text: str | None = None) -> None:
        if marker.enters == 0 or self._entered[0] != marker.id:
            self._entered = (marker.id, time.time())
            if text is not None:
                self.activity.expecting(text)
                self.readiness.typed(text)
        marker.enters += 1
        marker.stage = Stage.ENTERING
        self.journal.save(marker)
        self.driver.press(marker.pane, self.profile.submit_key)

    def submit(self, msg: Message, marker: Marker) -> None:
        if self.profile.submit_delay > 0:
            self.sleep(self.profile.submit_delay)
        try:
            if reads_screen(self.profile):
                self._before = (marker.id, _rest(self.driver.screen(marker.pane)))
            self.press_submit(marker, prepare(msg.body))
        except TmuxError as e:
            self.event(EventKind.TYPE_ERROR, msg, error=str(e))
            self.retry_later(msg, marker)
            return
        self.verify(msg, marker)

    def verify(self, msg: Message, marker: Marker) -> None:
        """Wait for evidence that the agent took the message: its hook's receipt of the
        prompt, a turn it reported ending, or the input box emptied while the agent
        turned busy. While the text sits in the input box the key is pressed again (at
        most ``defaults.MAX_ENTERS`` presses in all); nothing counts as delivered
        without evidence, except for a profile that shows nothing to read."""
        p = self.profile
        if not reads_screen(p) and not p.hooks:
            self.finish(msg, marker, "submitted")
            return
        text = prepare(msg.body)
        receipts = has_receipts(p) and self.activity.pid == marker.pid
        turn_ends = reports_ready(p) and self.activity.pid == marker.pid
        start = last_enter = time.monotonic()
        # hooks stamp wall-clock time: evidence must come after the first press (a
        # resumed delivery, whose presses another controller made, looks back 5 s)
        since = self._entered[1] - 0.05 if self._entered[0] == marker.id else time.time() - 5.0
        emptied: float | None = None
        while True:
            if not self._still_there(marker):
                self.event(EventKind.AGENT_RESTARTED, msg, stage=marker.stage)
                self.retry_later(msg, marker)
                return
            self.activity.refresh()
            if receipts and self.activity.receipt(text, since):
                self.finish(msg, marker, "receipt: the agent reported the prompt")
                return
            try:
                screen = self.driver.screen(marker.pane)
            except TmuxError as e:
                self.event(EventKind.TYPE_ERROR, msg, error=str(e))
                self.retry_later(msg, marker)
                return
            now = time.monotonic()
            box, busy = self._input_box(text, screen)
            evidence: str | None = None
            if box:  # still in the input box: press again
                emptied = None
                if now - last_enter >= defaults.ENTER_RETRY:
                    if not self._press_again(msg, marker):
                        return
                    last_enter = now
            elif not receipts:
                emptied = now if emptied is None else emptied
                evidence = self._taken(marker, box, busy, screen, turn_ends, since, now - emptied)
            elif now - start > defaults.RECEIPT_TIMEOUT:
                self.event(EventKind.NO_RECEIPT, msg, after=defaults.RECEIPT_TIMEOUT)
                evidence = (
                    "input box emptied; no receipt from the hook"
                    if box == ""
                    else "unverified: no receipt from the hook, input box not in view"
                )
            if evidence is not None:
                self.finish(msg, marker, evidence)
                return
            self.sleep(defaults.VERIFY_POLL)

    def _press_again(self, msg: Message, marker: Marker) -> bool:
        """Press the submit key again for text still in the input box; after
        ``defaults.MAX_ENTERS`` presses the message becomes a dead letter instead
        (returns False)."""
        if marker.enters >= defaults.MAX_ENTERS:
            self.fail(
                msg,
                f"typed, but still in the input box after {defaults.MAX_ENTERS} presses of {self.profile.submit_key}",
                marker,
            )
            return False
        self.event(EventKind.ENTER_AGAIN, msg, enters=marker.enters + 1)
        self.press_submit(marker)
        return True

    def _still_there(self, marker: Marker) -> bool:
        """Whether the pane the message was typed into still holds the process it was typed for."""
        pane = self.pane()
        try:
            return (
                pane is not None
                and pane.pane_id == marker.pane
                and self.readiness.live(replace(pane, pid=marker.pid))[0]
            )
        except TmuxError:
            return False

    def _input_box(self, text: str, screen: Screen) -> tuple[str | None, bool]:
        """(what the input box holds: None where it cannot be seen, or while the agent
        asks a question; whether the agent shows itself busy or asking)."""
        p = self.profile
        asking = approval_question(p, screen) is not None
        box = None if asking else composer_text(p, screen)
        if box is None and not asking and text_at_cursor(text, screen):
            box = text  # the text still sits where it was typed
        return box, asking or is_busy(p, screen)

    def _taken(
        self, marker: Marker, box: str | None, busy: bool, screen: Screen, turn_ends: bool, since: float, waited: float
    ) -> str | None:
        """With the text out of the input box (for ``waited`` seconds) and no receipt to
        wait for: the evidence that the agent took the message, or None (not yet)."""
        if busy:
            return "agent busy"
        if box is None and self.profile.composer_pattern:
            return "input box left for the answer"
        if turn_ends and self.activity.turn_ended(since):
            return "input box emptied, turn ended"
        if box == "" and self._before[0] == marker.id and _rest(screen) != self._before[1]:
            return "input box emptied, the agent answered"
        if waited > defaults.VERIFY_TIMEOUT:
            return "input box emptied" if box == "" else "unverified: input box not visible"
        return None

    # -- outcomes

    def finish(self, msg: Message, marker: Marker, evidence: str) -> None:
        marker.stage = Stage.SUBMITTED
        self.journal.save(marker)
        self.inbox.move(
            msg,
            MessageState.PENDING,
            MessageState.DELIVERED,
            delivered=now_rfc3339(),
            attempts=marker.attempts,
            enters=marker.enters,
        )
        self.journal.clear()
        self.last_delivered = time.monotonic()
        self.readiness.last_task = msg.task
        if not self.profile.hooks and self.profile.answer_grace > 0:
            self.readiness.held = self.last_delivered + self.profile.answer_grace
        if reports_ready(self.profile) and self.activity.pid == marker.pid:
            entered = self._entered[1] if self._entered[0] == marker.id else time.time()
            self.activity.submitted(prepare(msg.body), entered)
        self.event(EventKind.DELIVERED, msg, pane=marker.pane, evidence=evidence, enters=marker.enters)
        if self.on_delivered is not None:
            self.on_delivered(msg, marker.pid)

    def fail(self, msg: Message, reason: str, marker: Marker | None = None) -> None:
        self.inbox.move(msg, MessageState.PENDING, MessageState.FAILED, failed=now_rfc3339(), reason=reason)
        self.journal.clear()
        self.event(EventKind.DEAD_LETTER, msg, reason=reason)
        if self.on_dead_letter is not None:
            self.on_dead_letter(msg, reason)

    def retry_later(self, msg: Message, marker: Marker, typed: bool = True) -> None:
        """The attempt did not reach a live agent: keep the message pending, to be typed
        again when the agent is ready. ``typed``: whether it counts as an attempt."""
        current = self.inbox.read(msg.filename)
        if current is not None:
            self.inbox.move(
                current,
                MessageState.PENDING,
                MessageState.PENDING,
                attempts=marker.attempts if typed else marker.attempts - 1,
            )
        self.journal.clear()

    # -- recovery

    def resume(self, marker: Marker) -> None:
        """Continue a delivery a previous controller left in the journal."""
        msg = self.inbox.read(marker.name)
        if msg is None:  # already moved on
            self.journal.clear()
            return
        self.event(EventKind.RESUME, msg, stage=marker.stage)
        if marker.stage == Stage.SUBMITTED:
            self.finish(msg, marker, "journal")
            return
        pane = self.pane()
        if pane is None or pane.pane_id != marker.pane or not self.readiness.live(replace(pane, pid=marker.pid))[0]:
            self.event(EventKind.AGENT_RESTARTED, msg, stage=marker.stage)
            self.retry_later(msg, marker)
            return
        if marker.stage == Stage.TYPING:
            screen = self.driver.screen(marker.pane)
            box = composer_text(self.profile, screen)
            typed = bool(box) if box is not None else text_on_screen(prepare(msg.body), screen)
            if not typed:
                # It never reached the agent: the next step types it again once the
                # agent is ready (the same attempt).
                self.retry_later(msg, marker, typed=False)
                return
            marker.stage = Stage.TYPED
            self.journal.save(marker)
        if marker.stage == Stage.TYPED:
            self.submit(msg, marker)
        else:  # entering: the key may have been pressed
            self.verify(msg, marker)

    def run(self, stop: threading.Event, idle: float = defaults.DELIVERER_IDLE) -> None:
        """Deliver until ``stop`` is set; between messages wait for a wake-up (a new
        file, pane output, the controller's rescan) or at most ``idle`` seconds. An
        error never ends the thread: it is logged and the step tried again."""
        while not stop.is_set():
            try:
                busy = self.step()
            except Stopped:
                return
            except TmuxError as e:
                self.event(EventKind.TMUX_ERROR, error=str(e))
                busy = False
            except Exception as e:
                log.exception("deliverer %s", self.agent.name)
                self.event(EventKind.DELIVERER_ERROR, error=f"{type(e).__name__}: {e}")
                stop.wait(defaults.DELIVERER_ERROR_PAUSE)
                busy = False
            if not busy:
                self._idle(idle)

    def _idle(self, idle: float) -> None:
        """Record the agent's state, then wait for a wake-up or at most ``idle`` seconds
        (less when a read of the screen was put off)."""
        due: float | None = None
        try:
            due = self.readiness.observe(self.pane())
        except TmuxError:
            pass
        except Exception as e:
            log.exception("deliverer %s", self.agent.name)
            self.event(EventKind.DELIVERER_ERROR, error=f"{type(e).__name__}: {e}")
        self.wake.wait(idle if due is None else min(idle, due))
        self.wake.clear()
