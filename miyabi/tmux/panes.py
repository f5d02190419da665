"""Reading what runs in miyabi's tmux session: panes, their tags and their state, and
the agent → pane map that the controller's threads share."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from miyabi.tmux.runner import Tmux


class Runner(Protocol):
    """Anything that runs tmux commands and returns their output lines: a
    :class:`~miyabi.tmux.runner.Tmux` (a process per command) or a control channel."""

    def run(self, *args: str, check: bool = True) -> list[str]: ...

    def run_chain(self, commands: Sequence[Sequence[str]], *, check: bool = True) -> list[str]:
        """Run several commands back to back (tmux reads no pane output in between)."""
        ...


TAG = "@miyabi_agent"
"""Pane option naming the agent that runs in a pane; agents are found by it, never by index."""

HOME_TAG = "@miyabi_home"
"""Session option holding the miyabi home that built the session."""

LAYOUT_TAG = "@miyabi_layout"
"""Session option holding the layout file the session was built from."""

FAILED_TAG = "@miyabi_failed"
"""Pane option holding why the watchdog gave up on the agent (shown in the border)."""

_SEP = "\x1f"
_FIELDS = (
    "pane_id",
    TAG,
    "session_name",
    "window_id",
    "window_index",
    "window_name",
    "pane_pid",
    "pane_dead",
    "pane_dead_status",
    "pane_dead_signal",
    "pane_current_command",
    "pane_width",
    "pane_height",
    "pane_in_mode",
    "window_active",
    "pane_active",
    "pane_title",  # last: a program may put anything in its title
)
FORMAT = _SEP.join("#{" + f + "}" for f in _FIELDS)


@dataclass(frozen=True)
class Pane:
    """One pane as tmux reports it.

    Attributes:
        pane_id: tmux's pane id (``%12``), stable for the pane's life.
        agent: the ``@miyabi_agent`` tag, or "" for a pane miyabi did not make.
        session: session name.
        window_id: tmux's window id (``@3``).
        window_index: the window's index in its session.
        window_name: the window's name.
        pid: pid of the pane's program (0 if tmux reports none).
        dead: True when the program exited and the pane remains (remain-on-exit).
        dead_status: exit status of a dead pane's program, if it exited normally.
        dead_signal: signal number that ended it, if a signal did.
        current_command: name of the pane's foreground program.
        width, height: size in cells.
        in_mode: True while the pane is in copy mode or another mode.
        window_active: True for the session's current window.
        pane_active: True for its window's active pane.
        title: the pane title.
    """

    pane_id: str
    agent: str
    session: str
    window_id: str
    window_index: int
    window_name: str
    pid: int
    dead: bool
    dead_status: int | None
    dead_signal: int | None
    current_command: str
    width: int
    height: int
    in_mode: bool
    window_active: bool
    pane_active: bool
    title: str

    @classmethod
    def parse(cls, line: str) -> Pane:
        """Parse one line printed with :data:`FORMAT`."""
        v = line.split(_SEP, len(_FIELDS) - 1)
        v += [""] * (len(_FIELDS) - len(v))
        return cls(
            pane_id=v[0],
            agent=v[1],
            session=v[2],
            window_id=v[3],
            window_index=_int(v[4]) or 0,
            window_name=v[5],
            pid=_int(v[6]) or 0,
            dead=v[7] == "1",
            dead_status=_int(v[8]),
            dead_signal=_int(v[9]),
            current_command=v[10],
            width=_int(v[11]) or 0,
            height=_int(v[12]) or 0,
            in_mode=v[13] == "1",
            window_active=v[14] == "1",
            pane_active=v[15] == "1",
            title=v[16],
        )

    def exit_description(self) -> str:
        """How a dead pane's program ended, in words (``exit status 1``, ``signal 9``)."""
        return exit_words(self.dead_status, self.dead_signal)


def exit_words(status: int | None, signal: int | None) -> str:
    """``killed by signal 9``, ``exit status 1``, or ``exited`` when tmux tells neither."""
    if signal is not None:
        return f"killed by signal {signal}"
    if status is not None:
        return f"exit status {status}"
    return "exited"


def _int(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        return None


class PaneMap:
    """The agents' panes as last listed: agent → :class:`Pane`.

    Refreshed by the controller every ``defaults.PANE_REFRESH`` seconds and read by
    the deliverers and the watchdog; a respawn done in between is recorded at once
    (:meth:`respawned`). Safe to share between threads: every change replaces the map.

    Args:
        runner: how to reach tmux (the control channel).
        session: the session to list.
    """

    def __init__(self, runner: Runner, session: str) -> None:
        self.runner = runner
        self.session = session
        self._by_agent: dict[str, Pane] = {}
        self._by_pane: dict[str, str] = {}
        self._lock = threading.Lock()

    def refresh(self) -> dict[str, Pane]:
        """List the session's tagged panes again; returns the new map.

        Raises:
            TmuxError: the session cannot be listed.
        """
        panes: dict[str, Pane] = {}
        for p in list_panes(self.runner, self.session):
            if p.agent and p.agent not in panes:
                panes[p.agent] = p
        with self._lock:
            self._by_agent = panes
            self._by_pane = {p.pane_id: name for name, p in panes.items()}
        return dict(panes)

    def get(self, agent: str) -> Pane | None:
        """The agent's pane, or None when it has none."""
        return self._by_agent.get(agent)

    def all(self) -> dict[str, Pane]:
        """A copy of the whole map."""
        return dict(self._by_agent)

    def agent_of(self, pane_id: str) -> str | None:
        """The agent whose pane is ``pane_id``."""
        return self._by_pane.get(pane_id)

    def respawned(self, agent: str, pid: int) -> None:
        """Record that ``agent``'s pane now runs a new live process ``pid``."""
        with self._lock:
            pane = self._by_agent.get(agent)
            if pane is not None:
                self._by_agent = {**self._by_agent, agent: replace(pane, pid=pid, dead=False)}


def session_exists(tmux: Tmux, session: str) -> bool:
    """True when ``session`` exists on the server (exact name match)."""
    return session in tmux.sessions()


def list_panes(tmux: Runner, session: str) -> list[Pane]:
    """Every pane of ``session`` (all windows), tagged or not, in window/pane order.

    Raises:
        TmuxError: the session does not exist or tmux failed.
    """
    lines = tmux.run("list-panes", "-s", "-t", exact(session), "-F", FORMAT)
    return [Pane.parse(line) for line in lines if line]


def read_session(tmux: Tmux, session: str) -> tuple[tuple[int, int], str, list[Pane]]:
    """tmux's version, the session's home tag (``@miyabi_home``, "" when unset) and
    every pane of the session, from one tmux process (``miyabi status`` asks once).

    Raises:
        TmuxError: no such session, no server, or tmux failed.
    """
    from miyabi.tmux.runner import parse_version

    lines = tmux.run_chain(
        [
            ["display-message", "-p", "-t", exact(session), "#{version}" + _SEP + "#{" + HOME_TAG + "}"],
            ["list-panes", "-s", "-t", exact(session), "-F", FORMAT],
        ]
    )
    version, _, home = (lines[0] if lines else "").partition(_SEP)
    return parse_version(version), home, [Pane.parse(line) for line in lines[1:] if line]


def session_option(tmux: Runner, session: str, name: str) -> str:
    """The value of a session user option (``@name``), or "" if unset."""
    out = tmux.run("show-options", "-qv", "-t", exact(session), name, check=False)
    return out[0] if out else ""


def homes_on(tmux: Tmux) -> dict[str, str]:
    """Session → the miyabi home that built it (its ``@miyabi_home`` tag), for every
    session miyabi tagged on this server; {} when no server answers. One tmux process."""
    lines = tmux.run("list-sessions", "-F", "#{session_name}\t#{" + HOME_TAG + "}", check=False)
    out: dict[str, str] = {}
    for line in lines:
        name, _, home = line.partition("\t")
        if home:
            out[name] = home
    return out


def exact(session: str) -> str:
    """A target that matches ``session`` by exact name, never by prefix (``=name:``)."""
    return f"={session}:"


def select(tmux: Runner, pane: Pane) -> None:
    """Make ``pane`` the current pane of its session (its window first)."""
    tmux.run("select-window", "-t", pane.window_id)
    tmux.run("select-pane", "-t", pane.pane_id)


def attach_command(socket: str, session: str, pane: Pane | None = None) -> str:
    """The shell command a person runs to attach to ``session`` (with ``pane`` selected)."""
    import shlex

    cmd = f"tmux -L {shlex.quote(socket)} attach -t {shlex.quote(session)}"
    if pane is not None:
        cmd += f" \\; select-window -t {pane.window_id} \\; select-pane -t {pane.pane_id}"
    return cmd
