"""``miyabi logs``: an agent's pane log as plain lines, searched across its rotated files.

A pane log (``logs/<agent>.log``, appended and rotated by :mod:`miyabi.tmux.logpipe`)
holds the raw bytes the agent printed: colours, cursor moves, carriage-return redraws.
:class:`LineCleaner` turns them into the lines a reader would have seen, one line of the
terminal at a time (no screen is emulated); :func:`search` reads an agent's files
oldest first (``<agent>.log.<keep>`` … ``<agent>.log.1``, then ``<agent>.log``) as one
stream, so that neither a line nor an escape sequence that a rotation split is lost;
:func:`follow` then goes on reading what the agent prints, through rotations.

Lines carry no time of their own, so ``since`` works on whole files: a file last written
before the cut-off is skipped, and every line of a file written since is kept (a file
spans at most ``logs.max_bytes`` of output, so the cut-off is as sharp as the
rotation size).
"""

from __future__ import annotations

import codecs
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from miyabi import defaults
from miyabi.config.settings import parse_duration
from miyabi.errors import UsageError
from miyabi.home import Home
from miyabi.tmux.logpipe import START

# ---------------------------------------------------------------- terminal text → lines

_SPECIAL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
"""Characters other than the newline that need more than splitting into lines."""

_SGR = re.compile(r"\x1b\[[0-9;:]*m")
"""Colours and text attributes, most of what a log's escape sequences are: removed in one pass."""
_PLAIN = re.compile(r"[^\x00-\x1f\x7f-\x9f]+")
_CSI = re.compile(r"\x1b\[([0-?]*)[ -/]*([@-~])")
"""Control sequence (ECMA-48 5.4): parameters, intermediates, final byte."""
_STRING = re.compile(r"\x1b[\]PX^_].*?(?:\x07|\x1b\\)", re.DOTALL)
"""OSC (titles, hyperlinks, clipboard), DCS, SOS, PM, APC: up to ST or BEL."""
_ESC = re.compile(r"\x1b(?:[ -/]+[0-~]|[0-OQ-WYZ\\`-~])")
"""Other escape sequences: charset selects (``ESC ( B``), ``ESC 7``, ``ESC =``, ``ESC M`` …"""
_PARTIAL = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|[\]PX^_].*|[ -/]*)?", re.DOTALL)
"""The start of an escape sequence that the next read may complete."""

_PROCESS_START = START.decode()
"""What :mod:`miyabi.tmux.logpipe` writes where a new process's output begins."""

_ROW_MOVES = frozenset("ABEFHfdJ")
"""CSI finals that leave the cursor's row (or clear the screen): the line ends there."""
_COLUMN_MAX = 1000
"""Largest column a cursor move may reach (a ``CSI 99999 G`` must not pad a line with spaces)."""


class LineCleaner:
    """Terminal output in, the text of its lines out, one line of the terminal at a time.

    Kept: printable text. Carriage return, backspace, tab and the horizontal cursor
    moves (``CSI n G/C/D``) move a cursor within the line, and text overwrites what is
    under it, as on a terminal (``"50%\\r100%"`` → ``100%``); ``CSI K`` erases in the
    line. A newline ends the line (blank lines included); a vertical move (``CSI A/B/H``
    …, ``ESC M``, a form feed), a screen clear, or the mark
    :mod:`~miyabi.tmux.logpipe` writes where a new process's output begins (the
    previous process's unfinished prompt stays a line of its own) ends a line that has
    text. Removed:
    every other control character and escape sequence (colours, modes, charset
    selects, OSC titles and hyperlinks, DCS). Trailing spaces are dropped, and a line
    that reaches ``line_max`` characters is ended there.

    Feed text in pieces of any size (:meth:`feed`); a sequence split between two pieces
    is completed by the next one; :meth:`end` returns the unfinished last line.
    """

    def __init__(self, line_max: int = defaults.LOG_LINE_MAX) -> None:
        self.line_max = line_max
        self._pieces: list[str] = []
        self._length = 0
        self._cursor = 0
        self._pending = ""
        self._cut = False

    @property
    def partial(self) -> bool:
        """Whether an unfinished line (or sequence) is held."""
        return bool(self._pieces) or bool(self._pending)

    def feed(self, text: str) -> list[str]:
        """The lines ``text`` finishes (with what earlier pieces left unfinished)."""
        if self._pending:
            text = self._pending + text
            self._pending = ""
        text = _SGR.sub("", text.replace("\r\n", "\n"))
        out: list[str] = []
        if _SPECIAL.search(text) is None:
            self._plain(text, out)
        else:
            self._terminal(text, out, final=False)
        return out

    def end(self) -> list[str]:
        """The unfinished last line, if it has text (an unfinished sequence is dropped)."""
        out: list[str] = []
        if self._pending:
            text, self._pending = self._pending, ""
            self._terminal(text, out, final=True)
        if self._pieces:
            self._emit(out, always=False)
        return out

    def _plain(self, text: str, out: list[str]) -> None:
        """Text with no control character but newlines."""
        parts = text.split("\n")
        self._put(parts[0], out)
        if len(parts) == 1:
            return
        self._emit(out)
        for line in parts[1:-1]:
            if len(line) < self.line_max:
                out.append(line.rstrip())
            else:
                self._put(line, out)
                self._emit(out)
        self._put(parts[-1], out)

    def _terminal(self, text: str, out: list[str], final: bool) -> None:
        pos, n = 0, len(text)
        while pos < n:
            m = _PLAIN.match(text, pos)
            if m:
                self._put(m.group(), out)
                pos = m.end()
                continue
            ch = text[pos]
            if ch != "\x1b":
                self._control(ch, out)
                pos += 1
                continue
            m = _CSI.match(text, pos)
            if m:
                self._csi(m.group(1), m.group(2), out)
                pos = m.end()
                continue
            m = _STRING.match(text, pos) or _ESC.match(text, pos)
            if m:
                # index, next line, reverse index, reset; a new process's output starts
                if m.group()[1] in "DEMc" or m.group() == _PROCESS_START:
                    self._break(out)
                pos = m.end()
                continue
            if not final and n - pos <= self.line_max and _PARTIAL.fullmatch(text, pos):
                self._pending = text[pos:]
                return
            pos += 1  # a broken sequence: drop its ESC, keep what follows as text

    def _control(self, ch: str, out: list[str]) -> None:
        if ch == "\n":
            self._emit(out)
        elif ch == "\r":
            self._cursor = 0
        elif ch == "\b":
            self._cursor = max(0, self._cursor - 1)
        elif ch == "\t":
            self._cursor = min(_COLUMN_MAX, (self._cursor // 8 + 1) * 8)
        elif ch in "\x0b\x0c":
            self._break(out)

    def _csi(self, params: str, final: str, out: list[str]) -> None:
        if params[:1] in ("?", ">", "<", "="):  # private modes (cursor keys, bracketed paste …)
            return
        first = params.split(";", 1)[0]
        num = int(first) if first.isdigit() else 0
        if final in _ROW_MOVES:
            self._break(out)
        elif final in "G`":
            self._cursor = min(_COLUMN_MAX, max(num, 1) - 1)
        elif final in "Ca":
            self._cursor = min(_COLUMN_MAX, self._cursor + max(num, 1))
        elif final == "D":
            self._cursor = max(0, self._cursor - max(num, 1))
        elif final == "K":
            line = self._line()
            if num == 0:
                line = line[: self._cursor]
            elif num == 1:
                line = " " * min(len(line), self._cursor + 1) + line[self._cursor + 1 :]
            else:
                line = ""
            self._set(line)

    def _line(self) -> str:
        if len(self._pieces) > 1:
            self._pieces = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    def _set(self, line: str) -> None:
        self._pieces = [line] if line else []
        self._length = len(line)

    def _put(self, run: str, out: list[str]) -> None:
        """Write ``run`` (printable) at the cursor; a line reaching ``line_max`` ends there."""
        while run:
            if self._cursor >= self.line_max:
                self._emit(out, cut=True)
            room = self.line_max - self._cursor
            head, run = run[:room], run[room:]
            if self._cursor == self._length:
                self._pieces.append(head)
                self._length += len(head)
            else:
                line = self._line()
                if self._cursor > len(line):
                    line += " " * (self._cursor - len(line))
                self._set(line[: self._cursor] + head + line[self._cursor + len(head) :])
            self._cursor += len(head)
            self._cut = False
            if self._length >= self.line_max:
                self._emit(out, cut=True)

    def _emit(self, out: list[str], always: bool = True, cut: bool = False) -> None:
        """End the line: append its text to ``out`` (a blank one only when ``always``, and
        not for the newline right after a line ``line_max`` ended)."""
        text = "".join(self._pieces).rstrip()
        if text or (always and not (self._cut and not self._pieces)):
            out.append(text)
        self._pieces = []
        self._length = self._cursor = 0
        self._cut = cut

    def _break(self, out: list[str]) -> None:
        """The cursor left the row: the line ends if it has text."""
        self._emit(out, always=False)


def clean(text: str) -> list[str]:
    """Every line of terminal output ``text``, as :class:`LineCleaner` reads it."""
    c = LineCleaner()
    return c.feed(text) + c.end()


# ---------------------------------------------------------------- an agent's files


@dataclass(frozen=True)
class LogLine:
    """One line of an agent's pane log.

    Attributes:
        agent: the agent.
        file: the name of the file the line starts in (``kaede.log``, ``kaede.log.2``),
            under the home's ``logs/``, as it was called when it was read.
        line: the line's number in that file, from 1 (lines as :class:`LineCleaner`
            counts them, which may be fewer than the file's newlines).
        text: the line, escape sequences removed.
    """

    agent: str
    file: str
    line: int
    text: str

    def to_json(self) -> dict[str, object]:
        """``{"agent", "file", "line", "text"}``."""
        return {"agent": self.agent, "file": self.file, "line": self.line, "text": self.text}


def log_files(logs: Path, agent: str) -> list[Path]:
    """``agent``'s pane log files under ``logs``, oldest first: the rotated ones
    (``<agent>.log.N``, highest N first), then ``<agent>.log``; only those that exist."""
    rotated = re.compile(rf"^{re.escape(agent)}\.log\.([0-9]+)$")
    found: list[tuple[int, Path]] = []
    live: Path | None = None
    try:
        with os.scandir(logs) as it:
            for entry in it:
                if entry.name == f"{agent}.log":
                    live = Path(entry.path)
                else:
                    m = rotated.match(entry.name)
                    if m:
                        found.append((int(m.group(1)), Path(entry.path)))
    except FileNotFoundError:
        return []
    out = [p for _, p in sorted(found, reverse=True)]
    return [*out, live] if live is not None else out


def _same(path: Path, f: BinaryIO) -> bool:
    try:
        a, b = os.stat(path), os.fstat(f.fileno())
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _open_files(logs: Path, agent: str, tries: int = 10) -> list[tuple[Path, BinaryIO]]:
    """The agent's files, opened, oldest first. A rotation renames every file, so the
    list is taken again until the names found are still the files opened."""
    opened: list[tuple[Path, BinaryIO]] = []
    for _ in range(tries):
        for _, f in opened:
            f.close()
        opened = []
        paths = log_files(logs, agent)
        try:
            for p in paths:
                opened.append((p, p.open("rb")))
        except FileNotFoundError:
            continue
        if log_files(logs, agent) == paths and all(_same(p, f) for p, f in opened):
            break
    return opened


def compile_grep(pattern: str | None) -> re.Pattern[str] | None:
    """``pattern`` compiled (a Python regular expression, case-sensitive; None: none).

    Raises:
        UsageError: it is not a regular expression.
    """
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        raise UsageError(
            f"grep pattern {pattern!r} is not a regular expression: {e}; fix it "
            "(Python syntax: a literal ( [ * + ? needs a backslash before it)"
        ) from None


def parse_since(value: str | None) -> float | None:
    """Seconds in a ``since`` value (``90s``, ``30m``, ``1h``, ``2d``; None: none).

    Raises:
        UsageError: it is not a duration.
    """
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is None:
        raise UsageError(f"since {value!r} is not a duration; use one such as 90s, 30m, 1h or 2d")
    return seconds


@dataclass
class _Reader:
    """The agent's files as one stream of lines, each numbered within the file it starts in."""

    agent: str
    grep: re.Pattern[str] | None
    cleaner: LineCleaner = field(default_factory=LineCleaner)
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    origin: str | None = None
    numbers: dict[str, int] = field(default_factory=dict)

    def feed(self, name: str, data: bytes, final: bool = False) -> list[LogLine]:
        first = self.origin if self.origin is not None and self.cleaner.partial else name
        lines = self.cleaner.feed(self.decoder.decode(data, final))
        if final:
            lines += self.cleaner.end()
        out: list[LogLine] = []
        for i, text in enumerate(lines):
            origin = first if i == 0 else name
            n = self.numbers[origin] = self.numbers.get(origin, 0) + 1
            if self.grep is None or self.grep.search(text):
                out.append(LogLine(self.agent, origin, n, text))
        self.origin = (name if lines else first) if self.cleaner.partial else None
        return out

    def read(self, name: str, f: BinaryIO) -> Iterator[LogLine]:
        """What ``f`` holds from where it is to its end."""
        while True:
            data = f.read(defaults.LOG_READ_CHUNK)
            if not data:
                return
            yield from self.feed(name, data)


def _older(f: BinaryIO, cutoff: float | None) -> bool:
    return cutoff is not None and os.fstat(f.fileno()).st_mtime < cutoff


def search(
    home: Home,
    agent: str,
    grep: re.Pattern[str] | None = None,
    since: float | None = None,
    last: int | None = None,
    clock: Callable[[], float] = time.time,
) -> Iterator[LogLine]:
    """The lines of ``agent``'s pane logs, oldest first, escape sequences removed.

    Args:
        home: the miyabi home (its ``logs/``).
        agent: the agent's name (not checked: an agent with no log has no lines).
        grep: only lines it matches (``search``, anywhere in the line).
        since: seconds; files last written longer ago are skipped whole (see the
            module's docstring: lines carry no time).
        last: only the newest ``last`` matching lines (None: all).
        clock: Unix time (injectable).
    """
    cutoff = clock() - since if since is not None else None
    files = _open_files(home.logs, agent)
    try:
        reader = _Reader(agent, grep)
        lines: Iterator[LogLine] = _read_all(reader, files, cutoff, final=True)
        if last is not None:
            lines = iter(deque(lines, maxlen=last))
        yield from lines
    finally:
        for _, f in files:
            f.close()


def _read_all(
    reader: _Reader, files: list[tuple[Path, BinaryIO]], cutoff: float | None, final: bool
) -> Iterator[LogLine]:
    kept = [(p, f) for p, f in files if not _older(f, cutoff)]
    for p, f in kept:
        yield from reader.read(p.name, f)
    if final and kept:
        yield from reader.feed(kept[-1][0].name, b"", final=True)


def follow(
    home: Home,
    agent: str,
    grep: re.Pattern[str] | None = None,
    since: float | None = None,
    last: int | None = None,
    stop: Callable[[], bool] = lambda: False,
    poll: float = defaults.LOG_FOLLOW_POLL,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> Iterator[LogLine]:
    """What :func:`search` yields (but an unfinished last line), then each line the agent
    finishes from then on, as it is written, until ``stop()`` is true (checked every
    ``poll`` seconds while nothing is written) or the caller stops iterating. Follows
    the log through rotations: the file it read is read to its end, then every file
    newer than it, even when several rotations happened between two looks. A file
    that rotated out of ``keep`` before it was read is lost to it, as to anyone.
    ``file`` names a file as it was called when it was opened."""
    live = home.pane_log(agent)
    cutoff = clock() - since if since is not None else None
    reader = _Reader(agent, grep)
    files = _open_files(home.logs, agent)
    current: tuple[Path, BinaryIO] | None = None
    anchor: tuple[int, int] | None = _inode(files[-1][1]) if files else None
    """The newest file read so far; the files after it are new."""
    if files and files[-1][0] == live:
        current = files.pop()
        if _older(current[1], cutoff):  # nothing it holds is recent: follow it from its end
            current[1].seek(0, os.SEEK_END)
    try:
        yield from _backlog(reader, files, current, cutoff, last)
        for _, f in files:
            f.close()
        files = []
        while not stop():
            if current is not None:
                got = list(reader.read(current[0].name, current[1]))
                if got:
                    yield from got
                    continue
            if (current is not None and _same(live, current[1])) or not live.exists():
                sleep(poll)
                continue
            # LOG is another file now: finish ours, then read every file newer than it.
            if current is not None:
                yield from reader.read(current[0].name, current[1])
                current[1].close()
                current = None
            files, anchor, current = _newer(home.logs, agent, anchor, live)
            for p, f in files:
                yield from reader.read(p.name, f)
                f.close()
            files = []
    finally:
        for _, f in files:
            f.close()
        if current is not None:
            current[1].close()


def _backlog(
    reader: _Reader,
    files: list[tuple[Path, BinaryIO]],
    current: tuple[Path, BinaryIO] | None,
    cutoff: float | None,
    last: int | None,
) -> Iterator[LogLine]:
    """What :func:`follow` shows first: the lines of ``files`` and then of ``current``
    (an unfinished last line left for later), only the ``last`` ones when given."""
    first: Iterator[LogLine] = _read_all(reader, files, cutoff, final=False)
    if current is not None:
        first = _chain(first, reader.read(current[0].name, current[1]))
    if last is not None:
        first = iter(deque(first, maxlen=last))
    return first


def _newer(
    logs: Path, agent: str, anchor: tuple[int, int] | None, live: Path
) -> tuple[list[tuple[Path, BinaryIO]], tuple[int, int] | None, tuple[Path, BinaryIO] | None]:
    """The agent's log files newer than the one ``anchor`` names (all of them when it is
    gone), opened, oldest first; the newest of them as the next anchor; and the live
    file, taken out of that list, when it is among them."""
    files = _open_files(logs, agent)
    at = next((i for i, (_, f) in enumerate(files) if _inode(f) == anchor), -1)
    for _, f in files[: at + 1]:
        f.close()
    files = files[at + 1 :]
    if files:
        anchor = _inode(files[-1][1])
    current = files.pop() if files and files[-1][0] == live else None
    return files, anchor, current


def _inode(f: BinaryIO) -> tuple[int, int]:
    st = os.fstat(f.fileno())
    return st.st_dev, st.st_ino


def _chain(*parts: Iterator[LogLine]) -> Iterator[LogLine]:
    for part in parts:
        yield from part
