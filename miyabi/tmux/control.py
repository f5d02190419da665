"""A long-lived control-mode client (``tmux -C``): miyabi's channel to its server.

One ``tmux -L SOCKET -C attach-session -t =SESSION:`` process stays open; commands are
written to its stdin one per line and answered in order inside ``%begin``/``%end``
(or ``%error``) blocks, and ``%output %PANE DATA`` notifications say when each pane
printed. A command costs about 0.08 ms this way against 2.9 ms for a new tmux process
(../shared/TMUX.md), and the output stream tells when a pane last printed without
polling. Protocol: tmux(1), "CONTROL MODE". An attached control client that never
set a size does not change the session's window sizes (measured on 3.3a).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from miyabi import defaults
from miyabi.errors import TmuxError
from miyabi.tmux.panes import exact, session_exists
from miyabi.tmux.runner import Tmux, tmux_env


def quote(word: str) -> str:
    """Quote ``word`` for a tmux command line (the config-file syntax control mode
    reads): double quotes, with ``\\``, ``"`` and ``$`` escaped and newline, tab and
    carriage return written as ``\\n``, ``\\t``, ``\\r``. Inside double quotes tmux
    expands neither ``~`` nor ``#``, and ``;`` does not end the command (measured)."""
    out = (
        word.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("$", "\\$")
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
    )
    return f'"{out}"'


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)
    error: bool = False


class ControlClient:
    """A control-mode client attached to one session.

    Args:
        tmux: the server (its socket and binary).
        session: the session to attach to.
        on_output: called with the pane id and the printed data (still octal-escaped
            as tmux sends it) each time a pane prints; runs in the reader thread, so
            keep it short.

    Attributes:
        last_output: pane id → ``time.monotonic()`` of its last ``%output``.
    """

    def __init__(
        self,
        tmux: Tmux,
        session: str,
        on_output: Callable[[str, str], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.tmux = tmux
        self.socket = tmux.socket
        self.session = session
        self.on_output = on_output
        self.on_close = on_close
        self.last_output: dict[str, float] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._waiting: deque[_Pending] = deque()
        self._closed = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self) -> ControlClient:
        """Start the client and wait until tmux has attached it.

        Raises:
            TmuxError: tmux refused (no such session, no server).
        """
        self._proc = subprocess.Popen(
            self.tmux.argv(["-C", "attach-session", "-t", exact(self.session)]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=tmux_env(),
            bufsize=0,
        )
        self._reader = threading.Thread(target=self._read, name="tmux-control", daemon=True)
        self._reader.start()
        # The first answered command proves the client is attached.
        try:
            self.run("display-message", "-p", "ok")
        except TmuxError:
            self.close()
            raise
        return self

    @property
    def alive(self) -> bool:
        return self._proc is not None and not self._closed.is_set() and self._proc.poll() is None

    def run(self, *args: str, check: bool = True) -> list[str]:
        """Run one tmux command through the channel; return its output lines.

        Raises:
            TmuxError: tmux answered ``%error`` (when ``check``), or the channel closed,
                or no answer came within ``defaults.CONTROL_RESPONSE_TIMEOUT``.
        """
        return self.run_chain([args], check=check)

    def run_chain(self, commands: Sequence[Sequence[str]], *, check: bool = True) -> list[str]:
        """Run several commands, one line each, written in one go; return all their
        output lines.

        tmux reads the lines together and runs them back to back, before it reads a
        pane's output again: a pane the first command respawns is set up (its log's
        pipe opened) before its program's first bytes are read. Each line is a command
        of its own: one that fails does not stop the others.

        Raises:
            TmuxError: tmux answered ``%error`` to a command (when ``check``; the first
                such is named), or the channel closed, or no answer came within
                ``defaults.CONTROL_RESPONSE_TIMEOUT``.
        """
        if not commands:
            return []
        first = commands[0][0] if commands[0] else "?"
        text = "".join(" ".join(quote(a) for a in cmd) + "\n" for cmd in commands)
        pending = [_Pending() for _ in commands]
        with self._lock:
            if not self.alive or self._proc is None or self._proc.stdin is None:
                raise TmuxError(first, "control channel is closed", socket=self.socket)
            self._waiting.extend(pending)
            try:
                self._proc.stdin.write(text.encode("utf-8"))
            except (BrokenPipeError, OSError):
                for p in pending:
                    self._waiting.remove(p)
                raise TmuxError(first, "control channel is closed", socket=self.socket) from None
        deadline = time.monotonic() + defaults.CONTROL_RESPONSE_TIMEOUT
        out: list[str] = []
        for cmd, p in zip(commands, pending, strict=True):
            if not p.done.wait(max(0.0, deadline - time.monotonic())):
                raise TmuxError(
                    cmd[0], f"no answer within {defaults.CONTROL_RESPONSE_TIMEOUT:.0f} s", socket=self.socket
                )
            if p.error and check:
                raise TmuxError(cmd[0], "\n".join(p.lines) or "failed", socket=self.socket)
            out += p.lines
        return out

    def close(self) -> None:
        """Detach and stop the client process."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._closed.set()
        self._fail_waiting()

    def _fail_waiting(self) -> None:
        with self._lock:
            while self._waiting:
                p = self._waiting.popleft()
                p.error = True
                p.lines = ["control channel closed"]
                p.done.set()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        current: list[str] | None = None
        ours = False
        buf = b""
        while True:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if current is not None:
                    if line.startswith(("%end ", "%error ")) and _same_block(line, current):
                        if ours:
                            self._answer(current[1:], error=line.startswith("%error"))
                        current = None
                    else:
                        current.append(line)
                    continue
                if line.startswith("%begin "):
                    current = [line]
                    ours = line.rsplit(" ", 1)[-1] == "1"  # flags 1: a command from this client
                elif line.startswith("%output "):
                    self._output(line)
                elif line.startswith("%exit"):
                    break
        self._closed.set()
        self._fail_waiting()
        if self.on_close is not None:
            self.on_close()

    def _answer(self, lines: list[str], error: bool) -> None:
        """The oldest command waiting gets its answer (the lines of its block)."""
        with self._lock:
            p = self._waiting.popleft() if self._waiting else None
        if p is not None:
            p.lines = lines
            p.error = error
            p.done.set()

    def _output(self, line: str) -> None:
        """``%output %PANE DATA``: the pane printed."""
        parts = line.split(" ", 2)
        if len(parts) >= 2:
            self.last_output[parts[1]] = time.monotonic()
            if self.on_output is not None:
                self.on_output(parts[1], parts[2] if len(parts) > 2 else "")


def _same_block(end_line: str, block: list[str]) -> bool:
    """``%end TIME NUMBER FLAGS`` closes the ``%begin`` with the same TIME and NUMBER."""
    b = block[0].split(" ")
    e = end_line.split(" ")
    return len(b) >= 3 and len(e) >= 3 and b[1:3] == e[1:3]


class SessionChannel:
    """The controller's channel to its session: a :class:`ControlClient` that is opened
    on first use and opened again whenever it closed (the tmux server restarted, the
    client died). Any :class:`~miyabi.tmux.panes.Runner` user can take it.

    Args:
        tmux: the server.
        session: the session to attach to.
        on_output: called with the pane id each time a pane prints (in the reader
            thread: keep it short).
        on_close: called when an open client closed (the session or server went
            away, or the client died), in the reader thread.
    """

    def __init__(
        self,
        tmux: Tmux,
        session: str,
        on_output: Callable[[str], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.tmux = tmux
        self.session = session
        self.on_output = on_output
        self.on_close = on_close
        self._client: ControlClient | None = None
        self._lock = threading.Lock()
        self._last_output: dict[str, float] = {}
        self.opened = 0
        """How many times a client was opened (for the log)."""

    def _output(self, pane_id: str, data: str) -> None:
        self._last_output[pane_id] = time.monotonic()
        if self.on_output is not None:
            self.on_output(pane_id)

    def client(self) -> ControlClient:
        """The open client, opening one if needed.

        Raises:
            TmuxError: the session is not running (or tmux refused the client).
        """
        with self._lock:
            if self._client is not None and self._client.alive:
                return self._client
            if not session_exists(self.tmux, self.session):
                raise TmuxError("attach-session", f"session {self.session!r} is not running", socket=self.tmux.socket)
            self._client = ControlClient(
                self.tmux, self.session, on_output=self._output, on_close=self.on_close
            ).start()
            self.opened += 1
            return self._client

    def run(self, *args: str, check: bool = True) -> list[str]:
        """Run one tmux command through the channel.

        Raises:
            TmuxError: tmux refused the command, or the session is not running.
        """
        return self.client().run(*args, check=check)

    def run_chain(self, commands: Sequence[Sequence[str]], *, check: bool = True) -> list[str]:
        """Run several commands through the channel at once (see
        :meth:`ControlClient.run_chain`).

        Raises:
            TmuxError: tmux refused a command, or the session is not running.
        """
        return self.client().run_chain(commands, check=check)

    def last_output(self, pane_id: str) -> float:
        """``time.monotonic()`` of the pane's last ``%output`` (0.0 when none was seen)."""
        return self._last_output.get(pane_id, 0.0)

    def close(self) -> None:
        """Detach the client, if one is open."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
