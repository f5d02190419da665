"""The built-in worker agent: a small interactive program that behaves like an agent CLI.

It shows a prompt, turns on bracketed paste, and reads one message at a time: typed
text up to Enter, or a bracketed paste followed by Enter (a paste with newlines in
it is one message, as in the real agent CLIs). It appends each message to its
transcript (JSON lines: ``time``, ``agent``, ``text``), answers ``ack <first 60
characters>``, and with ``--think S`` shows a busy line and no prompt for S seconds
after each message, as an agent at work does. With ``--quota N`` it rehearses a
provider's usage limit: after every N messages it answers the next ones ``usage limit
reached · resets in Ss`` for ``--quota-reset`` seconds without taking them, as an
agent CLI refused by its provider does, and takes them (in order) with the first
message after the reset, as a CLI told to go on resumes its turn. It exits on EOF (Ctrl-D on an empty
line) or ``/quit``. It is the reference target for miyabi's delivery and watchdog
tests, and lets an ensemble run on a machine with no agent CLI installed.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import BinaryIO

from miyabi import defaults
from miyabi.files import append_line, private_dir
from miyabi.times import now_rfc3339

PASTE_START = b"\x1b[200~"
PASTE_END = b"\x1b[201~"
BRACKETED_PASTE_ON = "\x1b[?2004h"
BRACKETED_PASTE_OFF = "\x1b[?2004l"


@dataclass(frozen=True)
class Event:
    """What the composer made of some input.

    kind: ``echo`` (text to show), ``erase`` (delete one shown character), ``submit``
    (a whole message in ``text``), ``interrupt`` (Ctrl-C: the line was discarded),
    ``eof`` (Ctrl-D on an empty line).
    """

    kind: str
    text: str = ""


class Composer:
    """Turns raw terminal input into messages, like an agent CLI's input box.

    Feed it bytes as they arrive; it returns events. Bracketed paste is understood
    (``ESC[200~`` … ``ESC[201~``): inside it every character, newline and CR
    included, is text; outside it Enter (CR or LF) submits the line, Backspace
    deletes, Ctrl-U clears, Ctrl-C discards the line, Ctrl-D on an empty line is
    EOF, and other escape sequences (arrow keys) are ignored.
    """

    def __init__(self) -> None:
        self.buffer: list[str] = []
        self._pending = b""
        self._in_paste = False
        self._paste_raw: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @property
    def text(self) -> str:
        """What sits in the composer now."""
        return "".join(self.buffer)

    def feed(self, data: bytes) -> list[Event]:
        """Consume ``data``; return the events it caused, in order."""
        events: list[Event] = []
        buf = self._pending + data
        self._pending = b""
        i: int | None = 0
        while i is not None and i < len(buf):
            if self._in_paste:
                i = self._paste_from(buf, i, events)
            elif buf[i] == 0x1B:
                i = self._escape_from(buf, i)
            else:
                self._key(buf[i], events)
                i += 1
        return events

    def _paste_from(self, buf: bytes, i: int, events: list[Event]) -> int | None:
        """Take pasted text from ``buf[i]``: the index after the paste's end marker, or
        None when ``buf`` ended inside the paste (a tail that may begin the end marker
        is kept for the next :meth:`feed`)."""
        end = buf.find(PASTE_END, i)
        if end < 0:
            keep = _partial_suffix(buf[i:], PASTE_END)
            self._paste_text(buf[i : len(buf) - keep], events)
            self._pending = buf[len(buf) - keep :]
            return None
        self._paste_text(buf[i:end], events)
        self._paste_text(b"", events, final=True)
        self._in_paste = False
        return end + len(PASTE_END)

    def _escape_from(self, buf: bytes, i: int) -> int | None:
        """Skip the escape sequence at ``buf[i]`` (a paste's start begins the paste): the
        index after it, or None when it is not complete yet (kept for the next :meth:`feed`)."""
        seq_len = _escape_length(buf, i)
        if seq_len == 0:
            self._pending = buf[i:]
            return None
        if buf[i : i + seq_len] == PASTE_START:
            self._in_paste = True
            self._paste_raw = []
        return i + seq_len

    def _key(self, b: int, events: list[Event]) -> None:
        """One byte typed outside a paste."""
        if b in (0x0D, 0x0A):
            text = self.text
            self.buffer.clear()
            events.append(Event("submit", text))
        elif b in (0x7F, 0x08):
            if self.buffer:
                self.buffer.pop()
                events.append(Event("erase"))
        elif b == 0x15:
            for _ in self.buffer:
                events.append(Event("erase"))
            self.buffer.clear()
        elif b == 0x03:
            self.buffer.clear()
            events.append(Event("interrupt"))
        elif b == 0x04:
            if not self.buffer:
                events.append(Event("eof"))
        elif b == 0x09 or b >= 0x20:
            ch = self._decoder.decode(bytes([b]))
            if ch:
                self.buffer.append(ch)
                events.append(Event("echo", ch))

    def _paste_text(self, raw: bytes, events: list[Event], final: bool = False) -> None:
        text = self._decoder.decode(raw, final=False)
        if text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            self.buffer.extend(text)  # by character, so Backspace removes one
            self._paste_raw.append(text)
        if final:
            pasted = "".join(self._paste_raw)
            if "\n" in pasted or len(pasted) > defaults.WORKER_PASTE_ECHO:
                lines = pasted.count("\n") + 1
                events.append(Event("echo", f"[pasted {lines} lines, {len(pasted)} chars]"))
            else:
                events.append(Event("echo", pasted))


def _partial_suffix(data: bytes, marker: bytes) -> int:
    """Length of the longest suffix of ``data`` that is a proper prefix of ``marker``."""
    for n in range(min(len(marker) - 1, len(data)), 0, -1):
        if marker.startswith(data[-n:]):
            return n
    return 0


def _escape_length(buf: bytes, i: int) -> int:
    """Length of the escape sequence at ``buf[i]``, or 0 if it is not complete yet.

    CSI (``ESC [`` … final byte 0x40–0x7E) and SS3 (``ESC O x``) are recognised;
    ESC followed by anything else is a lone ESC of length 1."""
    if i + 1 >= len(buf):
        return 0
    nxt = buf[i + 1]
    if nxt == ord("["):
        j = i + 2
        while j < len(buf):
            if 0x40 <= buf[j] <= 0x7E:
                return j - i + 1
            j += 1
        return 0
    if nxt == ord("O"):
        return 3 if i + 2 < len(buf) else 0
    return 1


def ack_line(text: str) -> str:
    """The worker's answer to ``text``: ``ack`` and its first 60 characters on one line
    (newlines shown as ``⏎``)."""
    head = text[: defaults.ACK_CHARS].replace("\n", "⏎").replace("\t", " ")
    return f"ack {head}"


class Worker:
    """The worker's loop, with its input, output and clock injectable for tests.

    Args:
        name: agent name (for the transcript).
        transcript: JSONL file to append each message to, or None.
        think: seconds of simulated work after each message.
        out: where to write the screen (text).
        sleep: function that waits (``time.sleep``).
        run_job: runs the job task of a ``/job N`` message; returns a line to show.
        finish_task: reports the task a task message hands over done (see
            :func:`~miyabi.work.scheduler.task_named`), after the thinking; returns a
            line to show.
        quota: messages it takes before its rehearsed usage limit (0: none).
        quota_reset: seconds the limit lasts.
        clock: monotonic seconds (the limit's clock).
    """

    def __init__(
        self,
        name: str,
        transcript: Path | None,
        think: float = 0.0,
        out: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        run_job: Callable[[int], str] | None = None,
        finish_task: Callable[[int], str] | None = None,
        quota: int = 0,
        quota_reset: float = defaults.WORKER_QUOTA_RESET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.quota, self.quota_reset, self.clock = quota, quota_reset, clock
        self.taken = 0
        """Messages taken since the last reset of its rehearsed limit."""
        self.limited_until: float | None = None
        self.refused: list[str] = []
        """Messages its rehearsed limit refused, taken after the reset."""
        self.transcript = transcript
        self.think = think
        self._out = out or _stdout_write
        self._sleep = sleep
        self.composer = Composer()
        self.received = 0
        self.run_job = run_job
        self.finish_task = finish_task

    def write(self, s: str) -> None:
        self._out(s)

    def start(self) -> None:
        """Turn on bracketed paste and show the first prompt."""
        self.write(BRACKETED_PASTE_ON)
        self.write(f"miyabi worker {self.name!r} ready; type a message, /quit to leave\r\n")
        self.prompt()

    def prompt(self) -> None:
        self.write(defaults.WORKER_PROMPT)

    def handle(self, data: bytes) -> bool:
        """Process input; return False when the worker should exit."""
        for ev in self.composer.feed(data):
            if ev.kind == "echo":
                self.write(ev.text.replace("\n", "\r\n"))
            elif ev.kind == "erase":
                self.write("\b \b")
            elif ev.kind == "interrupt":
                self.write("^C\r\n")
                self.prompt()
            elif ev.kind == "eof":
                self.write("\r\n")
                return False
            elif ev.kind == "submit":
                self.write("\r\n")
                if ev.text.strip() == "/quit":
                    return False
                if ev.text.strip():
                    self.receive(ev.text)
                self.prompt()
        return True

    def receive(self, text: str) -> None:
        """Record ``text`` in the transcript (what the agent received) and take it (see
        :meth:`take`), unless its rehearsed usage limit refuses it for now."""
        self.received += 1
        if self.transcript is not None:
            append_line(
                self.transcript,
                json.dumps({"time": now_rfc3339(), "agent": self.name, "text": text}, ensure_ascii=False),
            )
        if self.quota > 0:
            now = self.clock()
            if self.limited_until is not None and now >= self.limited_until:
                self.limited_until, self.taken = None, 0
                refused, self.refused = self.refused, []
                for earlier in refused:
                    self.take(earlier)
            if self.limited_until is None and self.taken >= self.quota:
                self.limited_until = now + self.quota_reset
            if self.limited_until is not None:
                self.refused.append(text)
                left = max(1, round(self.limited_until - now))
                self.write(f"usage limit reached · resets in {left}s\r\n")
                return
            self.taken += 1
        self.take(text)

    def take(self, text: str) -> None:
        """Acknowledge ``text`` and simulate the work."""
        self.write(ack_line(text) + "\r\n")
        m = re.match(r"^/job (\d+)$", text.strip())
        if m and self.run_job is not None:
            self.write(defaults.WORKER_BUSY.replace("thinking", "running job") + "\r\n")
            self.write(self.run_job(int(m.group(1))).replace("\n", "\r\n") + "\r\n")
        if self.think > 0:
            started = time.monotonic()
            self.write(defaults.WORKER_BUSY)
            self._sleep(self.think)
            # Erase the busy line, as an agent CLI redraws its status line.
            self.write(f"\r\x1b[2Kdone in {time.monotonic() - started:.1f}s\r\n")
        if self.finish_task is not None and (task := _task_named(text)) is not None:
            self.write(self.finish_task(task).replace("\n", "\r\n") + "\r\n")

    def stop(self) -> None:
        self.write(BRACKETED_PASTE_OFF)


def _stdout_write(s: str) -> None:
    sys.stdout.write(s)
    sys.stdout.flush()


def default_transcript(name: str) -> Path | None:
    """``$MIYABI_HOME/logs/<name>.transcript.jsonl``, or None outside an ensemble."""
    home = os.environ.get("MIYABI_HOME")
    if not home:
        return None
    return private_dir(Path(home) / "logs", parents=False) / f"{name}.transcript.jsonl"


def _job_runner(agent: str) -> Callable[[int], str] | None:
    """Runs job tasks assigned to this worker (``/job N``), inside an ensemble only."""
    home = os.environ.get("MIYABI_HOME")
    if not home:
        return None

    def run_job(task_id: int) -> str:
        from miyabi.supervision.processes import lease_identity
        from miyabi.work.jobs import JobError, run_assigned
        from miyabi.work.store import Store

        try:
            store = Store.of_home(Path(home))
        except Exception as e:  # noqa: BLE001 - the worker must live on
            return f"cannot open the task store: {e}"
        try:
            ok, report = run_assigned(store, task_id, agent, lease_identity(os.getpid()))
        except JobError as e:
            return f"refused: {e}"
        except Exception as e:  # noqa: BLE001 - the worker must live on
            return f"job task {task_id} could not run: {type(e).__name__}: {e}"
        finally:
            store.close()
        return f"job task {task_id} {'passed' if ok else 'failed'}; report: {report}"

    return run_job


def _task_named(text: str) -> int | None:
    from miyabi.work.scheduler import task_named  # on first use: the worker starts light

    return task_named(text)


def _task_finisher(agent: str) -> Callable[[int], str] | None:
    """Reports the tasks handed to this worker done, inside an ensemble only. Only a
    task this worker holds is touched (checked in the store's transaction), so text
    typed into it cannot end another agent's task."""
    home = os.environ.get("MIYABI_HOME")
    if not home:
        return None

    def finish(task_id: int) -> str:
        from miyabi.work.model import TaskError
        from miyabi.work.store import Store

        try:
            store = Store.of_home(Path(home))
        except Exception as e:  # noqa: BLE001 - the worker must live on
            return f"cannot open the task store: {e}"
        try:
            t = store.done(
                task_id, f"acknowledged by the built-in worker {agent} (it runs jobs; nothing else)", by=agent
            )
        except TaskError as e:
            return f"task {task_id} left as it is: {e}"
        except Exception as e:  # noqa: BLE001 - the worker must live on
            return f"task {task_id} could not be reported: {type(e).__name__}: {e}"
        finally:
            store.close()
        return f"task {task_id} {t.state}"

    return finish


def run(
    name: str,
    transcript: Path | None,
    think: float,
    stdin: BinaryIO | None = None,
    finish_tasks: bool = True,
    quota: int = 0,
    quota_reset: float = defaults.WORKER_QUOTA_RESET,
) -> int:
    """Run the worker on the terminal until EOF or ``/quit``; return the exit code.
    ``finish_tasks``: report the tasks it is handed done (else they stay in progress);
    ``quota``, ``quota_reset``: its rehearsed usage limit (see :class:`Worker`)."""
    import termios
    import tty

    stream = stdin or sys.stdin.buffer
    try:
        fd: int | None = stream.fileno()
    except (OSError, io.UnsupportedOperation):
        fd = None  # an in-memory stream (tests)
    if fd is not None:
        read: Callable[[], bytes] = lambda: os.read(fd, 65536)
    else:
        read = lambda: stream.read1(65536)  # type: ignore[union-attr]
    worker = Worker(
        name,
        transcript,
        think,
        run_job=_job_runner(name),
        finish_task=_task_finisher(name) if finish_tasks else None,
        quota=quota,
        quota_reset=quota_reset,
    )
    saved = None
    if fd is not None and os.isatty(fd):
        saved = termios.tcgetattr(fd)
        tty.setraw(fd)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        worker.start()
        while True:
            data = read()
            if not data:
                break
            if not worker.handle(data):
                break
    finally:
        worker.stop()
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)  # type: ignore[arg-type]
    return 0
