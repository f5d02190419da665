"""Whether an agent is ready for a message, and what it is doing: its hooks first,
its screen second. Each change of state is recorded (with the usage of a turn that
just ended), and each new permission question offered to the layout's auto-answers
once. A person typing in the pane outranks all (:mod:`miyabi.messaging.keyboard`). The
deliverer asks before it types (:mod:`miyabi.messaging.delivery`); the watchdog asks
before it calls a silent agent hung."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from miyabi.agents.hooks import Activity
from miyabi.agents.limits import LimitSign, limit_shown
from miyabi.agents.screen import Screen, approval_question, composer_text, looks_ready, reads_screen
from miyabi.config.model import Agent
from miyabi.events import EventKind
from miyabi.messaging.activity import ActivityTracker, StateRecorder, hook_log
from miyabi.messaging.keyboard import Keyboard
from miyabi.messaging.parking import Parked, Parking
from miyabi.messaging.usage import UsageMeter, read_turn, usage_fields
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import Pane

QUESTION_DRAW = 3.0
"""Seconds a hook's permission question holds before the CLI shows it on screen."""

OBSERVE_EVERY = 0.05
"""Seconds between screen reads made only to record an agent's state as it prints."""


class Readiness:
    """What one agent is doing, read from its hook log and its pane.

    Args:
        agent: the agent (its profile says how to read it).
        driver: verbs on panes.
        home_root: the miyabi home (the hook log, the activity file).
        event: ``event(kind, msg, **fields)`` appends an event for the agent.
        sleep: waits (the controller's raises :class:`~miyabi.stopping.Stopped` on stop).
        on_question: called with each new permission question the agent asks.
        keyboard: where a person types (the controller's, shared); None: never
            looked at.
        on_probe: called with a park when the agent is to be told to go on.
    """

    def __init__(
        self,
        agent: Agent,
        driver: PaneDriver,
        home_root: Path,
        event: Callable[..., None],
        sleep: Callable[[float], None] = time.sleep,
        on_question: Callable[[str], None] | None = None,
        keyboard: Keyboard | None = None,
        on_probe: Callable[[Parked], None] | None = None,
    ) -> None:
        self.agent = agent
        self.keyboard = keyboard
        self.profile = agent.profile
        self.driver = driver
        self.event = event
        self.sleep = sleep
        self.on_question = on_question
        self.activity = ActivityTracker(hook_log(home_root, agent.name))
        """What the agent's hooks say (empty for a profile without hooks)."""
        self.recorder = StateRecorder(home_root, agent.name, lambda ev, **f: event(ev, **f))
        self.meter = UsageMeter()
        self._observed = 0.0
        self._offered: set[str] = set()
        self.held = 0.0
        """time.monotonic() until which a ready-looking screen counts as busy (see
        the profile's ``answer_grace``)."""
        self.last_task: str | None = None
        """The task of the last message delivered (usage is counted towards it)."""
        self.last_typed: str | None = None
        """The text of the last message typed (a limit sign above its echo is old)."""
        self.parking = Parking(home_root, agent.name, agent.park, lambda ev, **f: event(ev, None, **f), on_probe)
        """The agent's park at a usage limit or its budget."""

    def live(self, pane: Pane) -> tuple[bool, bool]:
        """(alive, in copy mode) for ``pane`` as tmux sees it now: the controller's
        pane map can be up to ``defaults.PANE_REFRESH`` old, and a dead pane's screen
        still shows an empty prompt. The pane must hold the same process as ``pane.pid``."""
        state = self.driver.live(pane.pane_id)
        return (not state.dead and state.pid == pane.pid), state.in_mode

    def state(self, pane: Pane, look: bool = False) -> tuple[Activity, str, str | None, Screen | None]:
        """(state, who told: ``keyboard``, ``hook`` or ``screen``, permission question,
        the screen read) of the agent in ``pane``. A person typing in the pane outranks
        all; a hook's busy or waiting-approval outranks the screen; a hook's ready still
        needs the screen to show an empty input box; an agent parked at a usage limit
        or its budget (``via``: the reason) outranks the agent. ``look``: look at the
        attached clients at once (before typing)."""
        state, via, question, screen = self._agent_state(pane)
        if self._person(pane, screen, look):
            return Activity.HUMAN, "keyboard", question, screen
        if screen is None and self.profile.limit_pattern:  # a profile read by its hooks alone
            screen = self.driver.screen(pane.pane_id)
        sign = limit_shown(self.profile, screen, self.last_typed) if screen is not None else None
        if sign is None and self.activity.limit is not None:  # told by its hook (Claude Code's StopFailure)
            sign = LimitSign(self.activity.limit[:300], None)
        parked = self.parking.check(sign)
        if parked is not None:
            return Activity.PARKED, parked.reason, None, screen
        return state, via, question, screen

    def adopt(self, agent: Agent) -> None:
        """Read the agent by its changed settings (a reloaded layout)."""
        self.agent, self.profile = agent, agent.profile
        self.parking.settings = agent.park

    def typed(self, text: str) -> None:
        """A message's ``text`` was typed into the pane (the deliverer tells)."""
        self.last_typed = text
        self.parking.typed(text)

    def _person(self, pane: Pane, screen: Screen | None, look: bool = False) -> bool:
        """Whether a person holds ``pane`` (see :mod:`miyabi.messaging.keyboard`),
        looking at the clients at once with ``look``."""
        if self.keyboard is None:
            return False
        if look:
            self.keyboard.look(force=True)
        box = composer_text(self.profile, screen) if screen is not None else None
        return self.keyboard.holds(pane.pane_id, self.agent.human_hold, box)

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
        screen = self.driver.screen(pane.pane_id)
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
        if time.monotonic() < self.held and looks_ready(self.profile, screen):
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
        self.record(pane, *self.state(pane))
        return None

    def _usage(self, pane: Pane, screen: Screen | None) -> None:
        """Read the agent's usage when a turn ended and record it as a ``usage`` event."""
        self.meter.follow(pane.pid)
        before = self.meter.usage
        if not read_turn(self.meter, self.activity, self.agent, screen):
            return
        fields = usage_fields(before, self.meter.usage, pane.pid, self.last_task, self.agent.pool)
        if fields is not None:
            self.event(EventKind.USAGE, None, **fields)
            if before is not None and fields["turn_output_tokens"] > 0:  # the model answered (not a first read)
                sign = limit_shown(self.profile, screen, self.last_typed) if screen is not None else None
                self.parking.answered(sign.line if sign is not None else None)

    def record(self, pane: Pane, state: Activity, via: str, question: str | None, screen: Screen | None = None) -> None:
        """Record ``state`` (told by ``via``) of the agent in ``pane`` if it changed, and
        offer a new ``question`` to the auto-answers."""
        if state in (Activity.READY, Activity.PARKED):  # a CLI's own retry may get through while parked
            self._usage(pane, screen)
        usage = self.meter.usage if self.meter.pid == pane.pid else None
        self.recorder.record(state, via, pane.pid, question, usage, self.activity.session)
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
        self.record(pane, state, via, question, screen)
        if state is not Activity.READY:
            return False
        if via == "hook" or not reads_screen(self.profile):
            return True
        if self.profile.ready_settle > 0:
            self.sleep(self.profile.ready_settle)
            screen = self.driver.screen(pane.pane_id)
            if not looks_ready(self.profile, screen) or self._person(pane, screen, look=True):
                return False
            return self.live(pane)[0]
        return True
