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

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.agents.hooks import Activity, has_receipts, reports_ready
from miyabi.agents.screen import (
    Screen,
    approval_question,
    composer_text,
    is_busy,
    looks_ready,
    reads_screen,
    text_at_cursor,
    text_on_screen,
)
from miyabi.config.model import Agent
from miyabi.errors import TmuxError
from miyabi.events import EventKind, append_event
from miyabi.files import private_dir, write_atomic
from miyabi.messaging.activity import ActivityTracker, StateRecorder, UsageMeter, hook_log
from miyabi.messaging.keyboard import Keyboard
from miyabi.messaging.mailbox import CorruptMessage, Inbox, Message, MessageState, sanitize
from miyabi.stopping import Stopped
from miyabi.times import how_often, now_rfc3339
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import Pane

log = logging.getLogger("miyabi.delivery")

QUESTION_DRAW = 3.0
"""Seconds a hook's permission question holds before the CLI shows it on screen."""

OBSERVE_EVERY = 0.05
"""Seconds between screen reads made only to record an agent's state as it prints."""


class Stage(StrEnum):
    """How far the delivery in an agent's journal got."""

    TYPING = "typing"
    """About to type, or typing: the text may or may not have reached the pane."""
    TYPED = "typed"
    """The whole text reached the pane; the submit key was not pressed yet."""
    ENTERING = "entering"
    """The submit key was (maybe) pressed; the submission is being verified."""
    SUBMITTED = "submitted"
    """Verified; only moving the file to ``cur/`` is left."""


@dataclass
class Marker:
    """The journal entry of the message being delivered to one agent.

    Attributes:
        id: the message id.
        name: its file name in ``new/``.
        stage: how far it got.
        pane: the pane it is being typed into.
        pid: the agent process it is for (another process there means a restart).
        log_offset: unused since resume reads the screen; kept so journals written by
            earlier versions still load.
        attempts: which typing of this message this is (1-based).
        enters: submit key presses so far.
    """

    id: str
    name: str
    stage: Stage
    pane: str
    pid: int
    log_offset: int
    attempts: int
    enters: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Marker:
        return cls(**{**data, "stage": Stage(data["stage"])})


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
        self.keyboard = keyboard
        self.profile = agent.profile
        self.inbox = inbox
        self.driver = driver
        self.home = home_root
        self.pane = pane
        self.sleep = sleep
        self.clock = clock
        self.journal = home_root / "run" / "delivery" / f"{agent.name}.json"
        private_dir(self.journal.parent)
        self.wake = threading.Event()
        self.on_delivered = on_delivered
        self.on_dead_letter = on_dead_letter
        self.on_question = on_question
        self.lock = threading.Lock()
        """Held from the live-pane check through typing and verification; the watchdog
        takes it before respawning the pane, so no keystroke reaches a new process."""
        self._has_marker: bool | None = None  # None: not read from disk yet
        self.last_delivered: float | None = None
        """time.monotonic() of the last delivery (for the watchdog's silence rule)."""
        self.waiting = False
        """True while mail waits for the agent to be ready (the controller's rescan
        then wakes this deliverer every ``defaults.INBOX_RESCAN`` seconds to look again)."""
        self.activity = ActivityTracker(hook_log(home_root, agent.name))
        """What the agent's hooks say (empty for a profile without hooks)."""
        self.recorder = StateRecorder(home_root, agent.name, lambda ev, **f: self.event(ev, **f))
        self._observed = 0.0
        self.meter = UsageMeter()
        self._offered: set[str] = set()
        self._held = 0.0
        """time.monotonic() until which a ready-looking screen counts as busy (see
        the profile's ``answer_grace``)."""
        self.last_task: str | None = None
        """The task of the last message delivered (usage is counted towards it)."""
        self._entered: tuple[str, float] = ("", 0.0)
        self._before: tuple[str, tuple[str, ...]] = ("", ())
        """(message id, the screen outside the cursor's row) just before the submit key."""
        """(message id, Unix time) of the first press of the submit key for it."""

    # -- journal

    def load_marker(self) -> Marker | None:
        if self._has_marker is False:  # we clear it ourselves; no need to look
            return None
        try:
            m = Marker.from_json(json.loads(self.journal.read_text(encoding="utf-8")))
            self._has_marker = True
            return m
        except FileNotFoundError:
            self._has_marker = False
            return None
        except (ValueError, TypeError, KeyError):
            self.journal.unlink(missing_ok=True)
            return None

    def save_marker(self, m: Marker) -> None:
        write_atomic(self.journal, json.dumps(asdict(m)))
        self._has_marker = True

    def clear_marker(self) -> None:
        self.journal.unlink(missing_ok=True)
        self._has_marker = False

    def event(self, event: EventKind, msg: Message | None = None, **fields: Any) -> None:
        extra = {"id": msg.id, "from": msg.sender} if msg else {}
        append_event(self.home, event, agent=self.agent.name, **extra, **fields)

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
        if pane is None or pane.dead or not self.ready(pane):
            return False
        attempts = int(msg.extra.get("attempts", 0)) + 1
        if attempts > defaults.DELIVERY_ATTEMPTS:
            self.fail(
                msg, f"typed {how_often(defaults.DELIVERY_ATTEMPTS)}, but the agent restarted before each was submitted"
            )
            return True
        with self.lock:
            self.type_message(msg, pane, attempts)
        return True

    def live(self, pane: Pane) -> tuple[bool, bool]:
        """(alive, in copy mode) for ``pane`` as tmux sees it now: the controller's
        pane map can be up to ``defaults.PANE_REFRESH`` old, and a dead pane's screen
        still shows an empty prompt. The pane must hold the same process as ``pane.pid``."""
        state = self.driver.live(pane.pane_id)
        return (not state.dead and state.pid == pane.pid), state.in_mode

    def screen(self, pane_id: str) -> Screen:
        return self.driver.screen(pane_id)

    def state(self, pane: Pane, look: bool = False) -> tuple[Activity, str, str | None, Screen | None]:
        """(state, who told: ``keyboard``, ``hook`` or ``screen``, permission question,
        the screen read) of the agent in ``pane``. A person typing in the pane outranks
        all (:mod:`miyabi.messaging.keyboard`); a hook's busy or waiting-approval
        outranks the screen; a hook's ready still needs the screen to show an empty
        input box. ``look``: look at the attached clients at once (before typing)."""
        state, via, question, screen = self._agent_state(pane)
        if self._person(pane, screen, look):
            return Activity.HUMAN, "keyboard", question, screen
        return state, via, question, screen

    def _agent_state(self, pane: Pane) -> tuple[Activity, str, str | None, Screen | None]:
        self.activity.follow(pane.pid)
        self.activity.refresh()
        told = self.activity.hook_state()
        if told is Activity.ENDED:
            told = None  # the session ended; what follows shows on screen
        if told is Activity.WAITING_APPROVAL and not self.profile.approval_pattern:
            return told, "hook", self.activity.question, None
        if not reads_screen(self.profile):
            return told or Activity.READY, "hook" if told else "screen", None, None
        screen = self.screen(pane.pane_id)
        question = approval_question(self.profile, screen)
        if told is Activity.WAITING_APPROVAL:
            # The hook's question holds while it shows, or while the CLI may still be
            # drawing it; answered by hand or interrupted, it reports nothing more.
            if question is not None or time.time() - self.activity.since < QUESTION_DRAW:
                return told, "hook", self.activity.question or question, screen
            self.activity.question_gone()
            told = None
        if question is not None:  # a CLI without a permission hook asks on screen
            return Activity.WAITING_APPROVAL, "screen", question, screen
        if told is Activity.BUSY:
            return told, "hook", None, screen
        if time.monotonic() < self._held and looks_ready(self.profile, screen):
            # its busy sign may not show yet, or flicker (opencode's does, measured)
            return Activity.BUSY, "delivery", None, screen
        if looks_ready(self.profile, screen):
            return Activity.READY, "hook" if told is Activity.READY else "screen", None, screen
        return Activity.BUSY, "screen", None, screen

    def observe(self, pane: Pane | None) -> float | None:
        """Record the agent's state if it changed, reading the screen at most every
        ``OBSERVE_EVERY`` seconds of output. Returns the seconds until the read it put
        off is due, or None."""
        if pane is None or pane.dead:
            return None
        now = time.monotonic()
        wait = OBSERVE_EVERY - (now - self._observed)
        if wait > 0 and not self.activity.refresh():
            return wait
        self._observed = now
        self._record(pane, *self.state(pane))
        return None

    def _usage(self, pane: Pane, screen: Screen | None) -> None:
        """Read the agent's usage when a turn ended (Claude Code's transcript, aider's
        ``Tokens:`` line over its prompt) and record it as a ``usage`` event."""
        self.meter.follow(pane.pid)
        if not self.activity.usage_due:
            return
        before = self.meter.usage
        if self.activity.transcript:
            self.activity.usage_due = False
            self.meter.from_transcript(self.activity.transcript)
        elif self.profile.hooks == "codex" and self.activity.thread:
            self.activity.usage_due = False
            self.meter.from_codex(self._codex_home(), self.activity.thread)
        elif self.profile.hooks == "aider" and screen is not None:
            self.activity.usage_due = False
            self.meter.from_screen(screen.rows(12, 0))
        else:
            return
        u = self.meter.usage
        if u is not None and u != before:
            fields: dict[str, Any] = {
                "pid": pane.pid,
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "turn_input_tokens": u.input_tokens - (before.input_tokens if before else 0),
                "turn_output_tokens": u.output_tokens - (before.output_tokens if before else 0),
            }
            if u.cost_usd is not None:
                fields["cost_usd"] = u.cost_usd
            if self.last_task:
                fields["task"] = self.last_task
            self.event(EventKind.USAGE, None, **fields)

    def _codex_home(self) -> Path:
        """Where the agent's Codex keeps its sessions: its ``CODEX_HOME``, else ~/.codex."""
        env = self.agent.env
        if env.get("CODEX_HOME"):
            return Path(env["CODEX_HOME"])
        return Path(env.get("HOME") or os.environ.get("HOME") or "~").expanduser() / ".codex"

    def _record(
        self, pane: Pane, state: Activity, via: str, question: str | None, screen: Screen | None = None
    ) -> None:
        if state is Activity.READY:
            self._usage(pane, screen)
        self.recorder.record(state, via, pane.pid, question, self.meter.usage if self.meter.pid == pane.pid else None)
        if state is not Activity.WAITING_APPROVAL:
            self._offered.clear()
        elif question and question not in self._offered and self.on_question is not None:
            # each wording of a question (the screen's, the hook's) is offered to the
            # auto-answers once while the agent waits: never answered twice
            self._offered.add(question)
            self.on_question(question)

    def ready(self, pane: Pane) -> bool:
        """Alive, and ready: by its hooks (then one read of the screen confirms an
        empty input box) or by the screen on two reads ``ready_settle`` seconds apart."""
        if not self.live(pane)[0]:
            return False
        state, via, question, screen = self.state(pane, look=True)
        self._record(pane, state, via, question, screen)
        if state is not Activity.READY:
            return False
        if via == "hook" or not reads_screen(self.profile):
            return True
        if self.profile.ready_settle > 0:
            self.sleep(self.profile.ready_settle)
            screen = self.screen(pane.pane_id)
            if not looks_ready(self.profile, screen) or self._person(pane, screen, look=True):
                return False
            return self.live(pane)[0]
        return True

    def _person(self, pane: Pane, screen: Screen | None, look: bool = False) -> bool:
        """Whether a person holds ``pane`` (see :mod:`miyabi.messaging.keyboard`),
        looking at the clients at once with ``look``."""
        if self.keyboard is None:
            return False
        if look:
            self.keyboard.look(force=True)
        box = composer_text(self.profile, screen) if screen is not None else None
        return self.keyboard.holds(pane.pane_id, self.agent.human_hold, box)

    # -- typing

    def type_message(self, msg: Message, pane: Pane, attempts: int) -> None:
        marker = Marker(msg.id, msg.filename, Stage.TYPING, pane.pane_id, pane.pid, 0, attempts)
        self.save_marker(marker)
        self.event(EventKind.TYPING, msg, pane=pane.pane_id, attempt=attempts)
        self.recorder.record(Activity.BUSY, "delivery", pane.pid)  # no longer free for another message
        try:
            alive, in_mode = self.live(pane)
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
        self.save_marker(marker)
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
        marker.enters += 1
        marker.stage = Stage.ENTERING
        self.save_marker(marker)
        self.driver.press(marker.pane, self.profile.submit_key)

    def submit(self, msg: Message, marker: Marker) -> None:
        if self.profile.submit_delay > 0:
            self.sleep(self.profile.submit_delay)
        try:
            if reads_screen(self.profile):
                self._before = (marker.id, _rest(self.screen(marker.pane)))
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
            pane = self.pane()
            try:
                alive = pane is not None and pane.pane_id == marker.pane and self.live(replace(pane, pid=marker.pid))[0]
            except TmuxError:
                alive = False
            if not alive:
                self.event(EventKind.AGENT_RESTARTED, msg, stage=marker.stage)
                self.retry_later(msg, marker)
                return
            self.activity.refresh()
            if receipts and self.activity.receipt(text, since):
                self.finish(msg, marker, "receipt: the agent reported the prompt")
                return
            try:
                screen = self.screen(marker.pane)
            except TmuxError as e:
                self.event(EventKind.TYPE_ERROR, msg, error=str(e))
                self.retry_later(msg, marker)
                return
            now = time.monotonic()
            asking = approval_question(p, screen) is not None
            box = None if asking else composer_text(p, screen)
            if box is None and not asking and text_at_cursor(text, screen):
                box = text  # the text still sits where it was typed
            busy = asking or is_busy(p, screen)
            if box:  # still in the input box: press again
                emptied = None
                if now - last_enter >= defaults.ENTER_RETRY:
                    if marker.enters >= defaults.MAX_ENTERS:
                        self.fail(
                            msg,
                            f"typed, but still in the input box after {defaults.MAX_ENTERS} presses of {p.submit_key}",
                            marker,
                        )
                        return
                    self.event(EventKind.ENTER_AGAIN, msg, enters=marker.enters + 1)
                    self.press_submit(marker)
                    last_enter = now
            elif not receipts:
                if busy:
                    self.finish(msg, marker, "agent busy")
                    return
                if box is None and p.composer_pattern:
                    self.finish(msg, marker, "input box left for the answer")
                    return
                if turn_ends and self.activity.turn_ended(since):
                    self.finish(msg, marker, "input box emptied, turn ended")
                    return
                if box == "" and self._before[0] == marker.id and _rest(screen) != self._before[1]:
                    self.finish(msg, marker, "input box emptied, the agent answered")
                    return
                emptied = now if emptied is None else emptied
                if now - emptied > defaults.VERIFY_TIMEOUT:
                    self.finish(msg, marker, "input box emptied" if box == "" else "unverified: input box not visible")
                    return
            elif now - start > defaults.RECEIPT_TIMEOUT:
                self.event(EventKind.NO_RECEIPT, msg, after=defaults.RECEIPT_TIMEOUT)
                self.finish(
                    msg,
                    marker,
                    "input box emptied; no receipt from the hook"
                    if box == ""
                    else "unverified: no receipt from the hook, input box not in view",
                )
                return
            self.sleep(defaults.VERIFY_POLL)

    # -- outcomes

    def finish(self, msg: Message, marker: Marker, evidence: str) -> None:
        marker.stage = Stage.SUBMITTED
        self.save_marker(marker)
        self.inbox.move(
            msg,
            MessageState.PENDING,
            MessageState.DELIVERED,
            delivered=now_rfc3339(),
            attempts=marker.attempts,
            enters=marker.enters,
        )
        self.clear_marker()
        self.last_delivered = time.monotonic()
        self.last_task = msg.task
        if not self.profile.hooks and self.profile.answer_grace > 0:
            self._held = self.last_delivered + self.profile.answer_grace
        if reports_ready(self.profile) and self.activity.pid == marker.pid:
            entered = self._entered[1] if self._entered[0] == marker.id else time.time()
            self.activity.submitted(prepare(msg.body), entered)
        self.event(EventKind.DELIVERED, msg, pane=marker.pane, evidence=evidence, enters=marker.enters)
        if self.on_delivered is not None:
            self.on_delivered(msg, marker.pid)

    def fail(self, msg: Message, reason: str, marker: Marker | None = None) -> None:
        self.inbox.move(msg, MessageState.PENDING, MessageState.FAILED, failed=now_rfc3339(), reason=reason)
        self.clear_marker()
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
        self.clear_marker()

    # -- recovery

    def resume(self, marker: Marker) -> None:
        """Continue a delivery a previous controller left in the journal."""
        msg = self.inbox.read(marker.name)
        if msg is None:  # already moved on
            self.clear_marker()
            return
        self.event(EventKind.RESUME, msg, stage=marker.stage)
        if marker.stage == Stage.SUBMITTED:
            self.finish(msg, marker, "journal")
            return
        pane = self.pane()
        if pane is None or pane.pane_id != marker.pane or not self.live(replace(pane, pid=marker.pid))[0]:
            self.event(EventKind.AGENT_RESTARTED, msg, stage=marker.stage)
            self.retry_later(msg, marker)
            return
        if marker.stage == Stage.TYPING:
            screen = self.screen(marker.pane)
            box = composer_text(self.profile, screen)
            typed = bool(box) if box is not None else text_on_screen(prepare(msg.body), screen)
            if not typed:
                # It never reached the agent: the next step types it again once the
                # agent is ready (the same attempt).
                self.retry_later(msg, marker, typed=False)
                return
            marker.stage = Stage.TYPED
            self.save_marker(marker)
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
                due: float | None = None
                try:
                    due = self.observe(self.pane())
                except TmuxError:
                    pass
                except Exception as e:
                    log.exception("deliverer %s", self.agent.name)
                    self.event(EventKind.DELIVERER_ERROR, error=f"{type(e).__name__}: {e}")
                self.wake.wait(idle if due is None else min(idle, due))
                self.wake.clear()
