"""Exceptions raised by miyabi's core.

Every error miyabi raises derives from :class:`MiyabiError` and carries the exit
code the command line maps it to (the table is in docs/commands.md, "Exit codes"). ``str(err)`` is
the one line a user reads: it names the file, key, agent or tmux command involved
and says what to do. The pattern (one base class, subclasses that carry their
context and say it in ``__str__``) follows libtmux's ``exc`` module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_LAYOUT = 3
EXIT_TMUX = 4
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141
"""Standard output was closed early (``miyabi task ls | head``): what a program killed
by SIGPIPE reports to its shell (128 + 13)."""


class MiyabiError(Exception):
    """Base class of every error miyabi raises on purpose.

    Attributes:
        exit_code: the process exit code the CLI uses for this error (1 here).
    """

    exit_code: int = EXIT_ERROR

    def lines(self) -> list[str]:
        """The error as one or more lines, each complete on its own."""
        return [str(self)]


@dataclass(frozen=True)
class Problem:
    """One defect found in a layout file.

    Attributes:
        file: the layout file.
        line: 1-based line of the offending key or value, or None when unknown.
        path: the key path, such as ``agents[2].name`` ("" for the whole file).
        message: what is wrong and what to do about it.
    """

    file: Path
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        shown = display_path(self.file)
        where = f"{shown}:{self.line}" if self.line else f"{shown}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


def display_path(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it, else as is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


class UsageError(MiyabiError):
    """A command was given a value it cannot use (a bad option value, a refused name);
    exit code 2, as for any other usage error."""

    exit_code = EXIT_USAGE


class LayoutError(MiyabiError):
    """A layout file could not be read or is invalid; exit code 3.

    Holds every problem found in one pass, so that a user fixes them all at once.
    """

    exit_code = EXIT_LAYOUT

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class TmuxError(MiyabiError):
    """A tmux command failed.

    Attributes:
        command: the tmux subcommand (or chained commands) that failed.
        stderr: what tmux said.
    """

    def __init__(self, command: str, stderr: str, *, socket: str | None = None) -> None:
        self.command = command
        self.stderr = stderr.strip()
        self.socket = socket
        super().__init__(command, stderr)

    def __str__(self) -> str:
        where = f" (socket {self.socket})" if self.socket else ""
        said = self.stderr.splitlines()[0] if self.stderr else "no message"
        return f"tmux {self.command} failed{where}: {said}"


class TmuxUnavailable(MiyabiError):
    """tmux is not installed, is too old, or miyabi's server is not running; exit code 4."""

    exit_code = EXIT_TMUX


class SessionNotFound(TmuxUnavailable):
    """miyabi's tmux server or session is not running (exit code 4)."""

    def __init__(self, session: str, socket: str) -> None:
        self.session = session
        self.socket = socket
        super().__init__(f"no miyabi session {session!r} on tmux socket {socket!r}; run `miyabi up` first")


class AgentNotFound(MiyabiError):
    """An agent name that the layout or the session does not know."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        import difflib

        self.name = name
        self.known = list(known)
        close = difflib.get_close_matches(name, self.known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listed = ", ".join(self.known) if self.known else "none"
        super().__init__(f"unknown agent {name!r}{hint} (agents: {listed})")


class HomeGone(MiyabiError):
    """The miyabi home was removed (or made anew) under a running process; nothing is
    built or started for it."""

    def __init__(self, root: object) -> None:
        self.root = root
        super().__init__(f"the miyabi home {root} is gone; nothing is built or started for it")


class SessionConflict(MiyabiError):
    """A tmux session with the layout's name exists but was not made by miyabi."""
