"""First messages: an agent whose profile has ``intro: true`` is told, after each start
of its process, its name, its peers and how to message them.

Which process got its intro is kept in ``run/intro.json`` (agent → pid), so a
restarted controller does not introduce a running agent twice. A parked agent's
message to go on is written here too (:func:`go_on_text`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from miyabi.config.model import Agent, Layout
from miyabi.events import EventKind, append_event
from miyabi.files import write_atomic
from miyabi.home import Home
from miyabi.messaging.mailbox import enqueue, make
from miyabi.messaging.parking import Parked
from miyabi.tmux.panes import Pane


def intro_text(agent: Agent, layout: Layout) -> str:
    """The first message ``agent`` gets after it starts."""
    peers = [a.name for a in layout.agents if a.name != agent.name]
    return (
        f"You are {agent.name}, one of the agents of the miyabi ensemble {layout.session!r}. "
        f"The other agents are: {', '.join(peers) or 'none'}. "
        f'To message one, run: miyabi send NAME "TEXT" (or pipe text into: miyabi send NAME -). '
        f"To see messages waiting for you: miyabi inbox {agent.name}. "
        "Messages from others are typed into this pane when you are idle."
    )


class Intros:
    """Sends each agent process its first message once.

    Args:
        home: the miyabi home.
        layout: the ensemble.
    """

    def __init__(self, home: Home, layout: Layout) -> None:
        self.home = home
        self.layout = layout
        self.file = home.run / "intro.json"
        self._sent: dict[str, int] | None = None

    def _load(self) -> dict[str, int]:
        if self._sent is None:
            try:
                self._sent = {str(k): int(v) for k, v in json.loads(self.file.read_text()).items()}
            except (OSError, ValueError, AttributeError):
                self._sent = {}
        return self._sent

    def send_due(self, panes: Mapping[str, Pane]) -> list[str]:
        """Enqueue an intro for every ``intro`` agent whose live process has had none;
        returns the agents introduced."""
        sent = self._load()
        done: list[str] = []
        for agent in self.layout.agents:
            pane = panes.get(agent.name)
            if not agent.profile.intro or pane is None or pane.dead or sent.get(agent.name) == pane.pid:
                continue
            msg = make(agent.name, intro_text(agent, self.layout), sender="miyabi", priority="high")
            enqueue(self.home.root, msg)
            append_event(self.home.root, EventKind.INTRO, agent=agent.name, id=msg.id, pid=pane.pid)
            sent[agent.name] = pane.pid
            done.append(agent.name)
        if done:
            write_atomic(self.file, json.dumps(sent))
        return done


def go_on_text(agent: str, parked: Parked, task: str | None) -> str:
    """The message that tells ``agent``, parked at its provider's usage limit since
    ``parked.since``, to go on with its work (``task``: the task of its last message)."""
    since = time.strftime("%H:%M", time.localtime(parked.since))
    work = f"task {task}" if task else "what you were doing"
    return (
        f"miyabi: {agent}, your provider's usage limit stopped you at {since}; it should have passed. "
        f"Go on with {work} where you left off."
    )
