"""Whether an agent's next process resumes its own last conversation.

When miyabi starts an agent's process again (a crash, a hang, ``miyabi restart``, a
dead pane that ``miyabi up`` respawns), a CLI whose profile says how (``resume``) is
started on the conversation it had: the id
its hooks last reported and the controller recorded with the agent's state (Claude
Code's ``session_id``, the ``thread-id`` of Codex's main thread, not its title-writing
side thread's), or its own history file (aider). After two resumed processes in a row that died within
``min_uptime`` the next one starts fresh (the conversation may be what kills it). A
pool instance that takes up the work an earlier instance did on its branch
(``Agent.continues``) starts on that instance's last conversation. The event log says
which it was (``resumed`` or ``started-fresh``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from miyabi.agents.profiles import resume_words
from miyabi.config.model import Agent
from miyabi.events import EventKind, append_event
from miyabi.messaging.activity import read_seen
from miyabi.supervision.policy import resumes


class Resumption:
    """Per agent, how its next process starts.

    Args:
        home_root: the miyabi home (the hook logs, the event log).
        session_of: agent name → the id of its last conversation, or None
            (default: the one recorded with its state, :func:`read_seen`).
    """

    def __init__(self, home_root: Path, session_of: Callable[[str], str | None] | None = None) -> None:
        self.home = home_root
        self.session_of = session_of or (lambda name: getattr(read_seen(home_root, name), "session", None))
        self._lock = threading.Lock()
        self._state: dict[str, tuple[bool, int]] = {}
        """agent → (its last process resumed a conversation, resumed processes in a
        row that died young)."""

    def next_start(self, agent: Agent, died_young: bool) -> str | None:
        """The conversation ``agent``'s next process resumes (for
        :func:`~miyabi.tmux.builder.launch_line`: an id, or "" for a CLI that needs
        none), or None for a fresh start; logs which.

        Args:
            agent: the agent started again.
            died_young: its last process ran less than ``min_uptime``.
        """
        if not agent.profile.resume:
            return None
        with self._lock:
            resumed_last, young = self._state.get(agent.name, (False, 0))
            again, young = resumes(resumed_last, died_young, young)
            if not again:
                self._state[agent.name] = (False, 0)
                self._event(
                    EventKind.STARTED_FRESH, agent, reason="two resumed processes in a row died within min_uptime"
                )
                return None
            session = self._session(agent)
            if not resume_words(agent.profile, session):
                self._state[agent.name] = (False, 0)
                self._event(EventKind.STARTED_FRESH, agent, reason="no conversation id was reported by its hooks yet")
                return None
            self._state[agent.name] = (True, young)
            self._event(EventKind.RESUMED, agent, session=session or None)
            return session

    def on_start(self, agent: Agent, respawn: bool) -> str | None:
        """For :func:`~miyabi.tmux.builder.up`: the conversation the process it starts
        for ``agent`` resumes, as :meth:`next_start` says, or None for a fresh start.

        Args:
            agent: the agent ``up`` starts.
            respawn: its dead pane is respawned (a person's ``miyabi up``, which, like
                ``miyabi restart``, counts as no early death); False: it gets a new
                pane, which resumes only a pool instance that continues an earlier
                one's work (:meth:`first_start`).
        """
        return self.next_start(agent, died_young=False) if respawn else self.first_start(agent)

    def first_start(self, agent: Agent) -> str | None:
        """The conversation a new pane's process for ``agent`` resumes: for a pool
        instance that continues an earlier instance's work (``agent.continues``), its
        own last conversation if it had one (its pane was closed), else that
        instance's; None for a fresh start (logged only for such an instance)."""
        if agent.continues is None or not agent.profile.resume:
            return None
        with self._lock:
            session = self._session(agent)
            if not resume_words(agent.profile, session):
                self._state[agent.name] = (False, 0)
                self._event(
                    EventKind.STARTED_FRESH,
                    agent,
                    reason=f"the hooks of {agent.continues}, whose work it continues, reported no conversation id",
                )
                return None
            self._state[agent.name] = (True, 0)
            self._event(EventKind.RESUMED, agent, session=session or None, continues=agent.continues)
            return session

    def _session(self, agent: Agent) -> str:
        """The id of ``agent``'s last conversation: its own, else (a pool instance that
        continues an earlier one's work, before its own hooks reported one) that
        instance's; "" when none was reported."""
        own = self.session_of(agent.name)
        if own or agent.continues is None:
            return own or ""
        return self.session_of(agent.continues) or ""

    def _event(self, kind: EventKind, agent: Agent, **fields: object) -> None:
        append_event(self.home, kind, agent=agent.name, **fields)
