"""The clients attached to miyabi's session, and where each sends its keys.

A person's keys reach a pane through an attached client: tmux moves the client's
``client_activity`` (Unix seconds) on each key it reads from the client's terminal and
never on ``send-keys`` from another process (measured on 3.3a, ../shared/TMUX.md), and a
client's ``pane_id`` is the active pane of its current window, where its keys go.
Control-mode clients (miyabi's own channel) and read-only clients send no keys to panes.
"""

from __future__ import annotations

from dataclasses import dataclass

from miyabi.tmux.panes import Runner, exact

_SEP = "\x1f"
_FIELDS = (
    "client_name",
    "client_pid",
    "client_created",
    "client_activity",
    "client_control_mode",
    "client_readonly",
    "pane_id",
)
FORMAT = _SEP.join("#{" + f + "}" for f in _FIELDS)


@dataclass(frozen=True)
class Client:
    """One client attached to the session.

    Attributes:
        name: the client's name (its terminal, ``/dev/pts/3``).
        pid: the client process's pid.
        created: Unix time (whole seconds) it attached.
        activity: Unix time (whole seconds) of its last key, mouse event or attach.
        pane_id: the pane its keys go to (the active pane of its current window).
        types: whether its keys can reach a pane (not a control-mode client, not
            read-only).
    """

    name: str
    pid: int
    created: int
    activity: int
    pane_id: str
    types: bool

    @classmethod
    def parse(cls, line: str) -> Client:
        """One line of :data:`FORMAT`.

        Raises:
            ValueError: the line does not have the format's fields.
        """
        name, pid, created, activity, control, readonly, pane_id = line.split(_SEP)
        return cls(
            name=name,
            pid=int(pid or 0),
            created=int(created or 0),
            activity=int(activity or 0),
            pane_id=pane_id,
            types=control != "1" and readonly != "1",
        )


def attached_clients(tmux: Runner, session: str) -> list[Client]:
    """Every client attached to ``session``, miyabi's own control client included
    (its ``types`` is False).

    Raises:
        TmuxError: no such session, or tmux failed.
    """
    lines = tmux.run("list-clients", "-t", exact(session), "-F", FORMAT)
    return [Client.parse(line) for line in lines if line]
