"""Answering an agent's permission question: ``miyabi approve`` / ``miyabi deny``.

An agent is waiting for approval when its hooks said so (Claude Code's
PermissionRequest and ``permission_prompt`` notification) or its screen shows the
profile's approval pattern near the cursor. The answer is the profile's keys
(``approve_keys`` / ``deny_keys``), pressed only while the question is on screen for
a profile that can see it (on two reads, since a dialog still being drawn eats keys)
and into the process that asked, so a stale state never types a stray "1" or "y"
into an input box; they are pressed again, at most three times, while the same
question stays. Each answer is an ``approval`` event (who, when, what was asked, the
answer and its reason), and a line in the agent's hook log that tells the deliverer
the question is gone. A denial's reason goes to the agent as a message, typed once
it is ready again.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from miyabi.agents.hooks import Activity
from miyabi.agents.profiles import Profile
from miyabi.agents.screen import approval_question
from miyabi.config.model import Agent, Layout
from miyabi.config.settings import auto_answer
from miyabi.errors import MiyabiError
from miyabi.events import EventKind, append_event
from miyabi.files import private_dir
from miyabi.home import Home
from miyabi.messaging.activity import hook_log, read_seen
from miyabi.messaging.mailbox import enqueue, make
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import Pane, Runner, list_panes

QUESTION_WAIT = 3.0
"""Seconds to wait for a question the agent's hook announced to show on screen."""
SETTLE = 0.2
"""Seconds the question must stay on screen before keys are pressed."""
ANSWER_WAIT = 1.5
"""Seconds for an answered question to leave the screen before the keys are pressed again."""
MAX_PRESSES = 3
"""Answers pressed in all while the same question stays on screen."""


class NotWaiting(MiyabiError):
    """The agent is not waiting for approval (or its question is not on screen)."""


@dataclass(frozen=True)
class Answer:
    """What ``approve`` / ``deny`` did.

    Attributes:
        agent: the agent answered.
        answer: ``approve`` or ``deny``.
        question: what it asked.
        keys: the keys pressed.
        reason: the reason sent with a denial, if any.
        message: the id of the message carrying the reason, if one was sent.
    """

    agent: str
    answer: str
    question: str
    keys: tuple[str, ...]
    reason: str | None = None
    message: str | None = None


def who() -> str:
    """``user@host`` of the person answering."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def answer(
    home: Home,
    tmux: Runner,
    session: str,
    agent: Agent,
    approve: bool,
    reason: str | None = None,
    by: str | None = None,
) -> Answer:
    """Answer ``agent``'s permission question (``by``: who answers; default the user
    running this, ``user@host``).

    Raises:
        NotWaiting: it has no pane, is not waiting for approval, or (for a profile that
            can see the question) the question is not on screen.
        MiyabiError: its profile has no keys for the answer.
        TmuxError: tmux failed.
    """
    verb = "approve" if approve else "deny"
    pane = next((p for p in list_panes(tmux, session) if p.agent == agent.name and not p.dead), None)
    if pane is None:
        raise NotWaiting(f"{agent.name} has no running pane; nothing to {verb}")
    p = agent.profile
    driver = PaneDriver(tmux)
    seen = read_seen(home.root, agent.name)
    hooked = seen is not None and seen.pid == pane.pid and seen.state == Activity.WAITING_APPROVAL
    on_screen = approval_question(p, driver.screen(pane.pane_id))
    deadline = time.monotonic() + QUESTION_WAIT
    # Busy counts too: a redraw that hid the question a moment may have been recorded as busy.
    waiting = seen is not None and seen.pid == pane.pid and seen.state in (Activity.WAITING_APPROVAL, Activity.BUSY)
    while waiting and p.approval_pattern and on_screen is None and time.monotonic() < deadline:
        time.sleep(0.05)  # a hook can come before the CLI draws its question; a redraw can hide it a moment
        on_screen = approval_question(p, driver.screen(pane.pane_id))
    if p.approval_pattern and on_screen is None:
        state = f"it is {seen.state}" if seen is not None and seen.pid == pane.pid else "no question on its screen"
        raise NotWaiting(f"{agent.name} is not waiting for approval ({state}); nothing to {verb}")
    if not p.approval_pattern and not hooked:
        raise NotWaiting(f"{agent.name} is not waiting for approval; nothing to {verb}")
    keys = p.approve_keys if approve else p.deny_keys
    if not keys:
        raise MiyabiError(f"profile {p.name!r} has no keys to {verb} with; set {verb}_keys in the layout")
    question = (
        (seen.question if hooked and seen is not None and seen.question else None)
        or on_screen
        or "permission requested"
    )
    if p.approval_pattern:
        # The question must hold still on two reads: a dialog still being drawn eats keys.
        time.sleep(max(p.ready_settle, SETTLE))
        on_screen = approval_question(p, driver.screen(pane.pane_id))
        if on_screen is None:
            raise NotWaiting(f"{agent.name}'s question went away before it was answered; nothing to {verb}")
    _press(driver, agent, pane, keys, on_screen, verb)
    _note(home, agent.name, verb)
    mid = None
    if not approve and reason:
        msg = make(agent.name, reason, sender="miyabi-deny")
        enqueue(home.root, msg)
        mid = msg.id
    append_event(
        home.root,
        EventKind.APPROVAL,
        agent=agent.name,
        answer=verb,
        by=by or who(),
        question=question,
        **({"reason": reason} if reason else {}),
        **({"id": mid} if mid else {}),
    )
    return Answer(agent.name, verb, question, tuple(keys), reason, mid)


def _press(driver: PaneDriver, agent: Agent, pane: Pane, keys: Sequence[str], question: str | None, verb: str) -> None:
    """Press the answer's ``keys`` until ``question`` leaves the screen (once, for a
    profile that cannot see it), at most ``MAX_PRESSES`` times.

    Raises:
        NotWaiting: the agent's process changed (never a key into a new one).
        MiyabiError: the question stayed on screen.
    """
    p = agent.profile
    for _ in range(MAX_PRESSES):
        if driver.live(pane.pane_id).pid != pane.pid:  # never a key into a new process
            raise NotWaiting(f"{agent.name} restarted before its question was answered; nothing to {verb}")
        for key in keys:
            driver.press(pane.pane_id, key)
        if not p.approval_pattern or _gone(driver, p, pane.pane_id, question):
            return
    raise MiyabiError(
        f"{agent.name}'s question stayed on screen after {MAX_PRESSES} answers ({' '.join(keys)}); "
        f"see `miyabi attach {agent.name}`"
    )


def _gone(driver: PaneDriver, profile: Profile, pane_id: str, question: str | None) -> bool:
    """Whether ``question`` left the screen (answered) within ``ANSWER_WAIT`` seconds."""
    deadline = time.monotonic() + ANSWER_WAIT
    while time.monotonic() < deadline:
        if approval_question(profile, driver.screen(pane_id)) != question:
            return True
        time.sleep(0.05)
    return False


def _note(home: Home, agent: str, verb: str) -> None:
    """Tell the agent's deliverer (through its hook log) that the question is answered."""
    path = hook_log(home.root, agent)
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps({"t": round(time.time(), 6), "event": "answered", "answer": verb}) + "\n").encode())
    finally:
        os.close(fd)


class AutoApprover:
    """Answers the permission questions a rule of the layout's ``approvals: {auto: …}``
    matches (the first matching rule wins; a question no rule matches waits for a
    person), as ``miyabi approve``/``deny`` would, recorded as ``approval`` events by
    ``miyabi (approvals.auto[N])``. A deliverer calls it when its agent asks.

    Args:
        home: the miyabi home.
        runner: tmux (the controller's control channel).
        layout: the running layout, read at each question (a reload counts).
        lock_of: the agent's delivery lock, or None when it has no deliverer: the
            watchdog respawns a pane only under that lock, so no key reaches a new process.
    """

    def __init__(
        self,
        home: Home,
        runner: Runner,
        layout: Callable[[], Layout],
        lock_of: Callable[[str], AbstractContextManager[object] | None],
    ) -> None:
        self.home = home
        self.runner = runner
        self.layout = layout
        self.lock_of = lock_of

    def __call__(self, name: str, question: str) -> None:
        lay = self.layout()
        rules = lay.auto_answers
        rule = auto_answer(rules, name, question) if rules else None
        if rule is None:
            return
        lock = self.lock_of(name)
        if lock is None:
            return
        try:
            agent = lay.agent(name)
            with lock:
                answer(
                    self.home,
                    self.runner,
                    lay.session,
                    agent,
                    rule.answer == "approve",
                    by=f"miyabi (approvals.auto[{rules.index(rule)}])",
                )
        except MiyabiError as e:
            append_event(self.home.root, EventKind.APPROVAL_ERROR, agent=name, question=question, error=str(e))
