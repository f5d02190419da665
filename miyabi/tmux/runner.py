"""The one place that runs tmux.

Every tmux command miyabi issues goes through :class:`Tmux`, which adds the socket
flag (``-L NAME``) so that miyabi only ever talks to its own server, never the user's
default socket. The idea (one function runs every command and adds the socket
flags) is libtmux's ``Server.cmd``; miyabi keeps its own because it chains many
commands into one invocation (tmux parses ``;`` between commands), which cuts the
cost of building 16 panes from 16 forks to one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence

from miyabi import defaults
from miyabi.errors import TmuxError, TmuxUnavailable, UsageError

Command = Sequence[str]
"""One tmux command as words, e.g. ``["set-option", "-p", "-t", "%3", "@x", "1"]``."""


def escape_arg(word: str) -> str:
    """Escape a word so tmux does not read a trailing ``;`` as a command separator.

    tmux (3.3a, measured) treats an argument ending in ``;`` as the end of a command
    and strips one backslash before a final ``;``: ``a;`` → ``a\\;``.
    """
    if word.endswith(";"):
        return word[:-1] + "\\;"
    return word


def escape_format(text: str) -> str:
    """Double every ``#`` in a value that tmux format-expands (``-c`` directories,
    ``pipe-pane`` commands), so that it is taken literally."""
    return text.replace("#", "##")


def chain(commands: Iterable[Command]) -> list[str]:
    """Join commands into one argument list separated by ``;`` words."""
    out: list[str] = []
    for cmd in commands:
        if out:
            out.append(";")
        out.extend(escape_arg(w) for w in cmd)
    return out


class Tmux:
    """A tmux server reached through a named socket.

    Args:
        socket: the socket name given to ``tmux -L``.
        executable: the tmux binary; default ``tmux`` found on PATH.

    Raises:
        TmuxUnavailable: tmux is not installed (from the constructor).
    """

    def __init__(self, socket: str, executable: str | None = None) -> None:
        check_socket_name(socket)
        self.socket = socket
        exe = executable or shutil.which("tmux")
        if exe is None:
            raise TmuxUnavailable(
                "tmux is not installed (not found on PATH); install it: `apt-get install tmux` "
                "(Debian/Ubuntu), `dnf install tmux` (Fedora) or `brew install tmux` (macOS)"
            )
        self.executable = exe
        self.invocations = 0
        """How many tmux processes this object started (for tests and benchmarks)."""

    def argv(self, args: Sequence[str]) -> list[str]:
        """The full command line for ``args`` on this server."""
        return [self.executable, "-L", self.socket, *args]

    def attach_argv(self, session: str) -> list[str]:
        """The command line that attaches a terminal to ``session`` (exact name)."""
        return self.argv(["attach-session", "-t", f"={session}:"])

    def run(self, *args: str, input: str | None = None, check: bool = True) -> list[str]:
        """Run one tmux command; return its stdout lines.

        Raises:
            TmuxError: tmux exited non-zero (when ``check``), naming the subcommand.
        """
        return self.run_chain([list(args)], input=input, check=check)

    def run_chain(
        self, commands: Sequence[Command], *, input: str | None = None, check: bool = True, hide: Iterable[str] = ()
    ) -> list[str]:
        """Run several commands in one tmux process; return all their stdout lines.

        tmux stops at the first command that fails; the error names that one. ``hide``:
        environment variables the tmux process does not get (a server it starts keeps
        its client's environment as its global one, which every pane inherits).

        Raises:
            TmuxError: tmux exited non-zero (when ``check``).
        """
        if not commands:
            return []
        args = chain(commands)
        for attempt in range(defaults.TMUX_DYING_RETRIES + 1):
            self.invocations += 1
            try:
                proc = subprocess.run(
                    self.argv(args),
                    input=input,
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=defaults.TMUX_TIMEOUT,
                    env=tmux_env(hide),
                )
            except subprocess.TimeoutExpired:
                raise TmuxError(
                    _describe(commands), f"no answer within {defaults.TMUX_TIMEOUT:.0f} s", socket=self.socket
                ) from None
            # A server that was just killed still holds its socket for a moment: a new
            # session reaches it and is dropped. Nothing was made, so it is tried again.
            if (
                proc.returncode == 0
                or commands[0][0] != "new-session"
                or "server exited unexpectedly" not in proc.stderr
                or attempt == defaults.TMUX_DYING_RETRIES
            ):
                break
            time.sleep(defaults.TMUX_DYING_WAIT * (attempt + 1))
        if check and proc.returncode != 0:
            raise TmuxError(_describe(commands), proc.stderr or proc.stdout, socket=self.socket)
        return proc.stdout.splitlines()

    def run_units(
        self, units: Sequence[Sequence[Command]], limit: int = defaults.TMUX_COMMAND_BYTES, hide: Iterable[str] = ()
    ) -> list[str]:
        """Run groups of commands in as few invocations as fit under ``limit`` bytes of
        arguments each. A group is never cut, so each group must start with a command
        that names its target (the commands after it may rely on tmux's current target).
        ``hide`` as for :meth:`run_chain`.

        Raises:
            TmuxError: a command failed; groups after it were not run.
        """
        out: list[str] = []
        batch: list[Command] = []
        size = 0
        for unit in units:
            usize = sum(len(w.encode()) + 1 for cmd in unit for w in cmd) + 2 * len(unit)
            if batch and size + usize > limit:
                out += self.run_chain(batch, hide=hide)
                batch, size = [], 0
            batch += list(unit)
            size += usize
        if batch:
            out += self.run_chain(batch, hide=hide)
        return out

    def has_server(self) -> bool:
        """True when a tmux server answers on this socket."""
        return self._list_sessions().returncode == 0

    def sessions(self) -> list[str]:
        """Names of the sessions on this server ([] when no server runs)."""
        proc = self._list_sessions()
        return proc.stdout.splitlines() if proc.returncode == 0 else []

    def _list_sessions(self) -> subprocess.CompletedProcess[str]:
        self.invocations += 1
        argv = self.argv(["list-sessions", "-F", "#{session_name}"])
        try:
            return subprocess.run(
                argv, check=False, capture_output=True, text=True, env=tmux_env(), timeout=defaults.TMUX_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 1, "", f"no answer within {defaults.TMUX_TIMEOUT:.0f} s")

    def version(self) -> tuple[int, int]:
        """tmux's version as (major, minor); ``next-3.5`` or ``3.3a`` → (3, 5) / (3, 3).

        Raises:
            TmuxUnavailable: the version cannot be read.
        """
        proc = subprocess.run([self.executable, "-V"], capture_output=True, text=True, check=False)
        return parse_version(proc.stdout.strip())

    def require_version(
        self, minimum: tuple[int, int] = defaults.TMUX_MIN_VERSION, known: tuple[int, int] | None = None
    ) -> tuple[int, int]:
        """Return the version (``known``, when the caller read it already), or raise if
        it is older than ``minimum``.

        Raises:
            TmuxUnavailable: tmux is older than ``minimum`` (exit code 4).
        """
        v = self.version() if known is None else known
        if v < minimum:
            need = ".".join(map(str, minimum))
            raise TmuxUnavailable(
                f"tmux {v[0]}.{v[1]} at {self.executable} is too old; miyabi needs tmux {need} or newer "
                "(Debian 12 and Ubuntu 22.04 ship it: `apt-get install tmux`; macOS: `brew install tmux`)"
            )
        return v


def check_socket_name(socket: str) -> None:
    """Refuse socket names that would reach another server than miyabi's own.

    Raises:
        UsageError: the name is empty, ``default`` (the user's own server), or holds
            a ``/`` (a path, not a name); exit code 2.
    """
    if not socket or socket == "default" or "/" in socket:
        raise UsageError(
            f"tmux socket name {socket!r} is not allowed: miyabi runs its own server and never the "
            "user's default one; give a plain name such as `miyabi` with --socket or MIYABI_SOCKET"
        )


def parse_version(text: str) -> tuple[int, int]:
    """Parse ``tmux -V`` output (``tmux 3.3a``, ``tmux next-3.5``, ``tmux master``).

    Raises:
        TmuxUnavailable: no version number in ``text``.
    """
    if "master" in text:
        return (99, 0)
    m = re.search(r"(\d+)\.(\d+)", text)
    if not m:
        raise TmuxUnavailable(f"cannot read tmux's version from {text!r}; is tmux installed correctly?")
    return (int(m.group(1)), int(m.group(2)))


def tmux_env(hide: Iterable[str] = ()) -> dict[str, str]:
    """Our environment without ``TMUX``, so that a command run from inside the user's
    own tmux never falls back to the user's server, without ``MIYABI_AGENT``, and
    without the variables named in ``hide`` (secrets)."""
    env = dict(os.environ)
    for name in hide:
        env.pop(name, None)
    env.pop("TMUX", None)
    env.pop("TMUX_PANE", None)
    # Run from an agent's pane, we must not pass that agent's identity on to the tmux
    # server: the watchdog ends processes that carry it.
    env.pop("MIYABI_AGENT", None)
    return env


def _describe(commands: Sequence[Command]) -> str:
    names = [c[0] for c in commands if c]
    if len(names) == 1:
        return names[0]
    return f"chain of {len(names)} commands ({', '.join(dict.fromkeys(names))})"
