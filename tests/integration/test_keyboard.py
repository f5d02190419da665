"""A person at the keyboard, against real tmux: a real tmux client, attached to miyabi's
session from a pane of a second tmux server, is where the person's keys come from.
miyabi types nothing into the pane they typed in until they have been idle for
``human_hold`` and its input box is empty, and `status` says `human` meanwhile."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import stays, wait_for, write_layout
from integration.conftest import Cli
from integration.test_delivery import send, state_of

from miyabi.events import EventKind, read_events
from miyabi.tmux.clients import attached_clients
from miyabi.tmux.runner import Tmux

PROMPT = {"extends": "shell", "ready_pattern": "agent> $", "composer_pattern": r"agent> (?P<text>.*)"}
"""A program with a prompt and an input box on its row (``sh``'s ``read``)."""


def agent_line(out: Path) -> str:
    script = f'while printf "agent> "; IFS= read -r line; do printf "%s\\n" "$line" >> {out}; done'
    return f"sh -c {shlex.quote(script)}"


@dataclass
class Person:
    """A person's terminal: a pane of their own tmux server running a client attached
    to miyabi's session."""

    outer: Tmux
    pane: str

    def types(self, *keys: str, literal: bool = True) -> None:
        for k in keys:
            self.outer.run("send-keys", "-t", self.pane, *(["-l"] if literal else []), k)


@pytest.fixture
def person(socket: str) -> Iterator[Callable[[str], Person]]:
    outers: list[Tmux] = []

    def attach(session: str) -> Person:
        outer = Tmux(f"miyabi_person_{uuid.uuid4().hex[:8]}")
        outers.append(outer)
        attach_line = f"env -u TMUX tmux -L {shlex.quote(socket)} attach -t ={session}:"
        outer.run("new-session", "-d", "-s", "desk", "-x", "120", "-y", "40", attach_line)
        pane = outer.run("list-panes", "-t", "desk", "-F", "#{pane_id}")[0]
        wait_for(
            lambda: any(c.types for c in attached_clients(Tmux(socket), session)),
            timeout=20,
            what="the person attached",
        )
        return Person(outer, pane)

    yield attach
    for o in outers:
        subprocess.run(o.argv(["kill-server"]), capture_output=True, check=False)


def state(cli: Cli, agent: str) -> str:
    rows = json.loads(cli("status", "--json").output)["agents"]
    return next(r["state"] for r in rows if r["name"] == agent)


def held(home: Path, agent: str) -> bool:
    """Whether the controller recorded ``agent`` as held by a person (its state event)."""
    return any(
        e["event"] == EventKind.STATE and e.get("agent") == agent and e.get("state") == "human"
        for e in read_events(home)
    )


def delivered_at(home: Path, msg_id: str) -> float:
    from datetime import datetime

    # the event is written after the message's state turns delivered: wait for it
    ev = wait_for(
        lambda: next(
            (e for e in read_events(home) if e["event"] == EventKind.DELIVERED and e.get("id") == msg_id), None
        ),
        timeout=30,
        what=f"the delivered event of {msg_id}",
    )
    return datetime.fromisoformat(str(ev["time"])).timestamp()


def at_the_desk(
    cli: Cli, tmp_path: Path, person: Callable[[str], Person], session: str, human_hold: float
) -> tuple[Path, Person]:
    """`miyabi up` of one agent `w` (a prompt program that appends each line it reads to
    the file returned), ready, with a person attached to its session."""
    out = tmp_path / "got.txt"
    lay = write_layout(
        tmp_path / f"{session}.yaml",
        [("w", "prompt", agent_line(out))],
        session=session,
        profiles={"prompt": PROMPT},
        human_hold=human_hold,
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    wait_for(lambda: state(cli, "w") == "ready", timeout=30, what="w ready")
    return out, person(session)


def test_a_person_typing_holds_delivery_until_idle_for_human_hold(
    cli: Cli, home: Path, tmp_path: Path, person: Callable[[str], Person]
) -> None:
    out, someone = at_the_desk(cli, tmp_path, person, "desk", human_hold=10)
    typed = time.time()
    someone.types("mine")
    someone.types("Enter", literal=False)
    wait_for(lambda: out.exists() and out.read_text() == "mine\n", timeout=20, what="the person's own line")
    mid = send(home, "w", "from miyabi")
    wait_for(lambda: held(home, "w"), timeout=30, what="the state human recorded")
    wait_for(lambda: state_of(home, "w", mid) == "delivered", timeout=60, what="delivered after the hold")
    assert out.read_text() == "mine\nfrom miyabi\n"
    # the key came at `typed` or later, and the hold runs human_hold from the key
    assert delivered_at(home, mid) >= typed + 10
    wait_for(lambda: state(cli, "w") == "ready", timeout=20, what="ready again")


def test_text_a_person_left_in_the_input_box_holds_delivery_until_it_is_gone(
    cli: Cli, home: Path, tmp_path: Path, person: Callable[[str], Person]
) -> None:
    out, someone = at_the_desk(cli, tmp_path, person, "box", human_hold=1)
    typed = time.time()
    someone.types("half")
    mid = send(home, "w", "from miyabi")
    wait_for(lambda: state(cli, "w") == "human", timeout=20, what="status says human")
    wait_for(lambda: time.time() > typed + 3, timeout=10, what="the hold of 1 s long over")
    stays(
        lambda: state_of(home, "w", mid) != "delivered" and state(cli, "w") == "human",
        3,
        what="the message held while the person's text is in the box",
    )
    assert not out.exists()
    someone.types(*["BSpace"] * 4, literal=False)
    wait_for(lambda: state_of(home, "w", mid) == "delivered", timeout=60, what="delivered once the box is empty")
    assert out.read_text() == "from miyabi\n"
