"""A deployed service's pane: one long-running command (``.miyabi.yml``'s ``serve:``) in a
window of its own in miyabi's session, found by its tag, never taken for an agent.

The pane is tagged ``@miyabi_service`` (not ``@miyabi_agent``: the delivery, the watchdog
and the session builder never see it), its window is ``serve-<name>`` with
``remain-on-exit on`` (a service that died leaves its pane, its last screen and its exit
status), and its output is appended to a log by the same pipe as an agent's
(:func:`~miyabi.tmux.builder.logpipe_command`). Starting it again respawns the pane in
place (``respawn-pane -k``) after its process group was ended: ``respawn-pane -k`` alone
only sends SIGHUP, which a server may ignore (see ../shared/TMUX.md).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from miyabi import defaults
from miyabi.errors import TmuxError
from miyabi.tmux.builder import logpipe_command
from miyabi.tmux.panes import Runner, exact, exit_words
from miyabi.tmux.runner import Command, escape_format

SERVICE_TAG = "@miyabi_service"
"""Pane option naming the service that runs in a pane (services are found by it)."""

WINDOW_PREFIX = "serve"
"""A service's window is ``serve-<name>``."""

DEAD_LINE = re.compile(r"^Pane is dead( \(|$)")
"""The line tmux writes into a dead pane (``remain-on-exit on``), not the service's output."""

_SEP = "\x1f"
_FIELDS = ("pane_id", SERVICE_TAG, "pane_pid", "pane_dead", "pane_dead_status", "pane_dead_signal")
FORMAT = _SEP.join("#{" + f + "}" for f in _FIELDS)


@dataclass(frozen=True)
class ServicePane:
    """A service's pane as tmux reports it.

    Attributes:
        pane_id: tmux's pane id (``%12``).
        name: the service's name (its tag).
        pid: the pane's process (0 when tmux reports none).
        dead: its process ended (the pane remains).
        dead_status: the exit status of a dead pane's process, if it exited.
        dead_signal: the signal that ended it, if one did.
    """

    pane_id: str
    name: str
    pid: int
    dead: bool
    dead_status: int | None = None
    dead_signal: int | None = None

    def exit_description(self) -> str:
        """``exit status 1``, ``killed by signal 9`` or ``exited``."""
        return exit_words(self.dead_status, self.dead_signal)


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def window_name(name: str) -> str:
    """``serve-<name>``."""
    return f"{WINDOW_PREFIX}-{name}"


SESSION_GONE = ("can't find", "no server", "error connecting", "no current target", "server exited", "lost server")
"""What tmux says when the session (or its whole server) is gone. A server whose last
session just went answers ``no current target`` while it exits (measured on tmux 3.3a:
half of 30 tries); a client whose server exits under it says ``server exited
unexpectedly`` or ``lost server``."""


def session_gone(e: TmuxError) -> bool:
    """Whether ``e`` says that the session or its server is gone (not another failure)."""
    return any(s in e.stderr for s in SESSION_GONE)


def find_service(runner: Runner, session: str, name: str) -> ServicePane | None:
    """The pane tagged with service ``name`` in ``session``, or None (no such pane, or
    no such session).

    Raises:
        TmuxError: tmux did not answer.
    """
    try:
        lines = runner.run("list-panes", "-s", "-t", exact(session), "-F", FORMAT)
    except TmuxError as e:
        if session_gone(e):
            return None
        raise
    for line in lines:
        v = line.split(_SEP)
        v += [""] * (len(_FIELDS) - len(v))
        if v[1] == name:
            return ServicePane(v[0], v[1], _int(v[2]) or 0, v[3] == "1", _int(v[4]), _int(v[5]))
    return None


def _spawn(command: str, cwd: Path, hide: Iterable[str]) -> list[str]:
    unset = [w for var in sorted(hide) for w in ("-u", var)]
    return ["-c", escape_format(str(cwd)), "env", *unset, "/bin/sh", "-c", command]


def start_service(
    runner: Runner,
    session: str,
    name: str,
    command: str,
    cwd: Path,
    log: Path,
    hide: Iterable[str] = defaults.SECRET_ENV,
) -> ServicePane:
    """Run ``command`` (a shell command line) in ``cwd`` as service ``name``: in its pane,
    respawned in place when it has one (the running process group is ended first),
    else in a new window ``serve-<name>`` (not selected: the user's view stays). Its
    output is appended to ``log`` from its first byte (the pipe is set up in the same
    tmux command as the process). ``hide``: variables the process never gets.

    Returns:
        the pane (``pid`` 0 when the process ended at once).

    Raises:
        TmuxError: tmux refused (no such session, …).
    """
    pipe = ["pipe-pane"]
    existing = find_service(runner, session, name)
    if existing is not None:
        end_group(existing.pid)
        target = ["-t", existing.pane_id]
        runner.run_chain(
            [
                ["respawn-pane", "-k", *target, *_spawn(command, cwd, hide)],
                [*pipe, *target, escape_format(logpipe_command(log))],
            ]
        )
    else:
        window = f"{exact(session)}={window_name(name)}"
        target = ["-t", window]
        cmds: list[Command] = [
            ["new-window", "-d", "-t", exact(session), "-n", window_name(name), *_spawn(command, cwd, hide)],
            ["set-option", "-w", *target, "remain-on-exit", "on"],
            ["set-option", "-w", *target, "automatic-rename", "off"],
            ["set-option", "-p", *target, SERVICE_TAG, name],
            [*pipe, *target, escape_format(logpipe_command(log))],
        ]
        runner.run_chain(cmds)
    found = find_service(runner, session, name)
    if found is None:
        raise TmuxError("new-window", f"the pane of service {name} is gone right after its start")
    return found


def stop_service(runner: Runner, session: str, name: str) -> bool:
    """End service ``name``'s process group and close its pane; False when it has none."""
    pane = find_service(runner, session, name)
    if pane is None:
        return False
    end_group(pane.pid)
    runner.run("kill-pane", "-t", pane.pane_id, check=False)
    return True


def service_screen(runner: Runner, pane: ServicePane, lines: int = defaults.HEALTH_EVIDENCE_LINES) -> list[str]:
    """The last ``lines`` non-blank lines of the service's pane (its screen and
    scroll-back; a dead pane keeps its last screen, less tmux's own "Pane is dead" line),
    or [] when tmux cannot tell."""
    try:
        out = runner.run("capture-pane", "-p", "-J", "-S", f"-{max(lines, 1) * 4}", "-t", pane.pane_id)
    except TmuxError:
        return []
    return [line for line in out if line.strip() and not DEAD_LINE.match(line)][-lines:]


def end_group(pid: int, grace: float = defaults.VERIFY_KILL_GRACE) -> None:
    """SIGTERM process group ``pid`` (a pane's process leads its own), SIGKILL what is
    left after ``grace`` seconds. A pid that is gone (or 0) is nothing to do."""
    if pid <= 0:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
