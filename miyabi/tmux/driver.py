"""Verbs on one pane: read its state and screen, type and paste text, press keys,
set options, respawn. The rest of miyabi drives panes through these; no tmux command
word is written outside ``miyabi/tmux/``.

Measured on tmux 3.3a (../shared/TMUX.md): ``send-keys -l`` takes text literally
(without ``-l`` a word such as ``Enter`` or ``C-c`` is a key); a tmux buffer set on the
control channel took 1 MiB in one line; ``paste-buffer -p`` wraps the text in
bracketed-paste marks when the program asked for them, and ``-r`` keeps a line feed
from becoming a carriage return (which would submit each line).
"""

from __future__ import annotations

from dataclasses import dataclass

from miyabi.agents.screen import Screen
from miyabi.tmux.panes import Runner


@dataclass(frozen=True)
class LiveState:
    """A pane as tmux sees it right now.

    Attributes:
        dead: the program exited (the pane remains).
        pid: the pane's program (0 when tmux reports none).
        in_mode: copy mode or another mode is on (typed text would go to it).
    """

    dead: bool
    pid: int
    in_mode: bool


@dataclass(frozen=True)
class ExitState:
    """How a pane's program ended, as tmux recorded it.

    Attributes:
        dead: tmux has marked the pane dead.
        status: the exit status, if the program exited.
        signal: the signal number that ended it, if one did.
    """

    dead: bool
    status: int | None
    signal: int | None


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


class PaneDriver:
    """Verbs on panes through ``runner`` (the controller's control channel, or a tmux
    process per command).

    Every method raises :class:`~miyabi.errors.TmuxError` when tmux refuses or does not
    answer (a pane that vanished, a dead server), unless it says otherwise.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def live(self, pane_id: str) -> LiveState:
        """Whether the pane's program runs, its pid, and whether a mode is on. A pane
        tmux does not answer for counts as dead."""
        out = self.runner.run("display-message", "-p", "-t", pane_id, "#{pane_dead} #{pane_pid} #{pane_in_mode}")
        dead, pid, mode = ((out[0].split() if out else []) + ["1", "", ""])[:3]
        return LiveState(dead=dead == "1", pid=_int(pid) or 0, in_mode=mode == "1")

    def exit_state(self, pane_id: str) -> ExitState:
        """How the pane's program ended (``pane_dead_status``/``pane_dead_signal``)."""
        out = self.runner.run(
            "display-message", "-p", "-t", pane_id, "#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}"
        )
        dead, status, sig = ((out[0].split(":") if out else []) + ["", "", ""])[:3]
        return ExitState(dead=dead == "1", status=_int(status), signal=_int(sig))

    def capture(self, pane_id: str, history: int = 0) -> list[str]:
        """The visible screen's lines, with ``history`` lines of scrollback before them
        (wrapped lines joined when ``history`` is given)."""
        if history:
            return self.runner.run("capture-pane", "-p", "-J", "-S", f"-{history}", "-t", pane_id)
        return self.runner.run("capture-pane", "-p", "-t", pane_id)

    def screen(self, pane_id: str) -> Screen:
        """The visible screen with the cursor position (``#{cursor_x}``/``#{cursor_y}``),
        read in one round trip where the runner can chain commands."""
        chain = [
            ["display-message", "-p", "-t", pane_id, "#{cursor_x} #{cursor_y}"],
            ["capture-pane", "-p", "-t", pane_id],
        ]
        run_chain = getattr(self.runner, "run_chain", None)
        if run_chain is not None:
            out = run_chain(chain)
        else:
            out = self.runner.run(*chain[0]) + self.runner.run(*chain[1])
        head = (out[0].split() if out else []) + ["0", "0"]
        return Screen.captured(out[1:], _int(head[0]) or 0, _int(head[1]) or 0)

    def styled(self, pane_id: str) -> Screen:
        """The visible screen with its colours and attributes kept (SGR escape
        sequences in the lines, ``capture-pane -e``) and the cursor position, for people
        to look at (the dashboard); screen reading uses :meth:`screen`."""
        chain = [
            ["display-message", "-p", "-t", pane_id, "#{cursor_x} #{cursor_y}"],
            ["capture-pane", "-p", "-e", "-t", pane_id],
        ]
        run_chain = getattr(self.runner, "run_chain", None)
        out = run_chain(chain) if run_chain is not None else self.runner.run(*chain[0]) + self.runner.run(*chain[1])
        head = (out[0].split() if out else []) + ["0", "0"]
        return Screen(tuple(out[1:]), _int(head[0]) or 0, _int(head[1]) or 0)

    def leave_mode(self, pane_id: str) -> None:
        """Leave copy mode (or any mode), so typed text reaches the program."""
        self.runner.run("send-keys", "-X", "-t", pane_id, "cancel", check=False)

    def type_text(self, pane_id: str, text: str) -> None:
        """Type ``text`` literally (no key names; one line of at most about 16 KB)."""
        self.runner.run("send-keys", "-t", pane_id, "-l", "--", text)

    def paste(self, pane_id: str, text: str, buffer: str, bracketed: bool) -> None:
        """Paste ``text`` through the tmux buffer ``buffer`` (deleted after), as a
        bracketed paste when ``bracketed`` and the program asked for one."""
        self.runner.run("set-buffer", "-b", buffer, "--", text)
        paste = ["paste-buffer", "-d", "-r", "-b", buffer, "-t", pane_id]
        if bracketed:
            paste.insert(1, "-p")
        self.runner.run(*paste)

    def press(self, pane_id: str, key: str) -> None:
        """Press one key by its tmux name (``Enter``, ``C-m``)."""
        self.runner.run("send-keys", "-t", pane_id, key)

    def kill(self, pane_id: str) -> None:
        """Close a pane and end its program (``kill-pane``: SIGHUP to its process group)."""
        self.runner.run("kill-pane", "-t", pane_id, check=False)

    def pane_pid(self, pane_id: str) -> int:
        """The pane's program's pid (0 when tmux reports none)."""
        out = self.runner.run("display-message", "-p", "-t", pane_id, "#{pane_pid}")
        return (_int(out[0]) if out else None) or 0

    def set_option(self, pane_id: str, name: str, value: str) -> None:
        """Set the pane option ``name`` (a user option such as ``@miyabi_failed``)."""
        self.runner.run("set-option", "-p", "-t", pane_id, name, value)
