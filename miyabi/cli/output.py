"""Printing for the command line: rich on a terminal, plain text when piped, JSON on request.

Everything a command prints goes through this module, and every piece of text is
shown by :func:`visible` on its way out: task titles and bodies, message bodies and
reasons, agent names, permission questions, GitHub text and whatever else came from
agents, the dashboard, files or other processes may hold control characters, and none
of them reaches the terminal as one. JSON (:func:`dumps`) keeps the data exact, with
those characters as ``\\uXXXX`` escapes.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""What a terminal must never get raw: C0 controls (ESC included), DEL, C1 controls
(U+0080-U+009F, such as the 8-bit CSI U+009B), and lone surrogates (bytes of a
command line that were not UTF-8)."""
_CONTROL_BUT_LAYOUT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_JSON_RAW = re.compile(r"[\x7f-\x9f\ud800-\udfff]")
"""What ``json.dumps(..., ensure_ascii=False)`` leaves raw but a terminal must not get."""
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _shown(m: re.Match[str]) -> str:
    ch = m.group()
    code = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object, lines: bool = False) -> str:
    """``text`` safe to print on a terminal: every control character shown as a Python
    escape, so that it is seen and never acts. ESC is ``\\x1b``, NUL ``\\x00``, BEL
    ``\\x07``, DEL ``\\x7f``, the C1 CSI ``\\x9b``; newline, tab and carriage return are
    ``\\n``, ``\\t`` and ``\\r``, except that with ``lines`` newline and tab are kept (text
    printed as a block of lines). A byte of the command line that was not UTF-8 shows as
    ``\\xNN``. Printable text, non-ASCII included, is left as it is."""
    return (_CONTROL_BUT_LAYOUT if lines else _CONTROL).sub(_shown, str(text))


def dumps(data: Any, indent: int | None = None) -> str:
    """``data`` as JSON text (UTF-8 kept readable) that is safe on a terminal: what
    ``json.dumps`` escapes (C0 controls) plus DEL, the C1 controls and lone surrogates as
    ``\\uXXXX``, so a reader decodes exactly the data."""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(data, indent=indent, ensure_ascii=False))


def is_terminal() -> bool:
    return sys.stdout.isatty()


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON (one document, indented; see :func:`dumps`)."""
    sys.stdout.write(dumps(data, indent=2) + "\n")


def json_line(data: Any) -> None:
    """Print ``data`` as JSON on one line (a stream of objects; see :func:`dumps`)."""
    sys.stdout.write(dumps(data) + "\n")


def line(text: str) -> None:
    """Print one line of text as it is (see :func:`visible`), unstyled."""
    sys.stdout.write(visible(text) + "\n")


def table(
    rows: Sequence[Sequence[str]], headers: Sequence[str], title: str | None = None, cut: Sequence[str] = ()
) -> None:
    """Print rows under headers: a rich table on a terminal, aligned columns otherwise.
    Each cell is one line (see :func:`visible`); rich markup in a cell is shown, never
    interpreted.

    With ``cut`` (headers of columns that may be cut), each row is one line on a
    terminal: the widest of those columns are cut with an ellipsis (``…``) until the
    table fits the terminal's width (see :func:`fit`), drawn without rich (its import
    costs ``miyabi status`` a third of its time). Piped, no cell is ever cut."""
    cells = [[visible(c) for c in r] for r in rows]
    shown_title = visible(title) if title else None
    if is_terminal() and cut:
        _fitted(cells, headers, shown_title, cut)
        return
    if is_terminal():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        t = Table(title=Text(shown_title) if shown_title else None, title_justify="left", header_style="bold")
        for h in headers:
            t.add_column(h)
        for r in cells:
            t.add_row(*(Text(c) for c in r))
        Console(highlight=False).print(t)
        return
    widths = [len(h) for h in headers]
    for r in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=False)]
    if shown_title:
        print(shown_title)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip())
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip())


def _fitted(rows: Sequence[Sequence[str]], headers: Sequence[str], title: str | None, cut: Sequence[str]) -> None:
    """The table of :func:`table` with ``cut``, on a terminal: one line a row, a bold
    header and a rule under it."""
    natural = [max([cells(h), *(cells(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    widths = fit(natural, terminal_width(), [headers.index(c) for c in cut if c in headers], headers)
    gap = " " * GAP

    def line(words: Sequence[str]) -> str:
        return gap.join(fitted(w, n) for w, n in zip(words, widths, strict=True)).rstrip()

    if title:
        print(title)
    print(paint(line(headers), "bold") if colours() else line(headers))
    print("─" * (sum(widths) + GAP * (len(widths) - 1)))
    for r in rows:
        print(line(r))


def terminal_width() -> int:
    """Columns of the terminal standard output goes to (``$COLUMNS`` first, as
    :func:`shutil.get_terminal_size` reads it; 80 when neither tells)."""
    import os

    try:
        return max(1, int(os.environ["COLUMNS"]))
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns or 80
    except (OSError, ValueError):
        return 80


def cells(text: str) -> int:
    """Terminal columns ``text`` takes: two for each wide (East Asian) character, none
    for a combining one."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def fitted(text: str, width: int) -> str:
    """``text`` in exactly ``width`` terminal columns: padded with spaces, or cut with an
    ellipsis (``…``) when it is wider."""
    taken = cells(text)
    if taken <= width:
        return text + " " * (width - taken)
    out, used = [], 0
    for ch in text:
        w = cells(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…" + " " * (width - 1 - used)


SGR = {"bold": "1", "red": "31", "green": "32", "yellow": "33"}
"""ANSI SGR codes of the styles miyabi prints in."""


def colours() -> bool:
    """Whether standard output takes colours: a terminal, without ``NO_COLOR`` set
    (no-color.org) and not ``TERM=dumb``."""
    import os

    return is_terminal() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def paint(text: str, style: str) -> str:
    """``text`` in ``style`` (words of :data:`SGR`, ``bold red``) as ANSI codes."""
    codes = ";".join(SGR[w] for w in style.split() if w in SGR)
    return f"\x1b[{codes}m{text}\x1b[0m" if codes else text


GAP = 2
"""Columns between two cells of a table fitted to the terminal (:func:`table` with ``cut``)."""

NARROWEST = 10
"""Fewest columns a cut cell keeps (its header's width if that is more)."""


def fit(natural: Sequence[int], width: int, cut: Sequence[int], headers: Sequence[str]) -> list[int]:
    """Column widths for a table of ``natural`` widths (the widest cell of each, in
    terminal cells) to fit ``width`` terminal columns with :data:`GAP` between cells:
    of the columns at the indexes ``cut``, the widest gives up a column at a time (the
    first of ``cut`` among equals), none below :data:`NARROWEST` (or its header's
    width). A table that does not fit even then keeps what is left over."""
    widths = list(natural)
    floors = {i: min(widths[i], max(NARROWEST, len(headers[i]))) for i in cut}
    excess = sum(widths) + GAP * (len(widths) - 1) - width
    while excess > 0:
        room = [i for i in cut if widths[i] > floors[i]]
        if not room:
            break
        widest = max(room, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def say(text: str, style: str | None = None, lines: bool = False) -> None:
    """Print ``text``: one line, or with ``lines`` a block of lines (see :func:`visible`),
    in ``style`` (see :data:`SGR`) on a terminal that takes colours."""
    shown = visible(text, lines=lines)
    print(paint(shown, style) if style and colours() else shown)


def error(line: str) -> None:
    """Print one error line on stderr (red on a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\x1b[31mmiyabi: {visible(line)}\x1b[0m\n")
    else:
        sys.stderr.write(f"miyabi: {visible(line)}\n")


def usage_error(command: str, message: str) -> None:
    """Print a usage error as one line on stderr: ``miyabi: task show: missing argument
    'ID'; see `miyabi task show --help```. ``command`` is the command's path
    (``miyabi task show``)."""
    where = command.removeprefix("miyabi").strip()
    message = message.rstrip(".")
    if message[1:2].islower():  # click's "Missing argument …"; not "TEXT …"
        message = message[:1].lower() + message[1:]
    error(f"{where + ': ' if where else ''}{message}; see `{command} --help`")


def warn(line: str) -> None:
    """Print one warning line on stderr (yellow on a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\x1b[33mmiyabi: warning: {visible(line)}\x1b[0m\n")
    else:
        sys.stderr.write(f"miyabi: warning: {visible(line)}\n")


def human_seconds(s: float | None) -> str:
    """``75`` → ``1m15s``; None → ``-``."""
    if s is None:
        return "-"
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def human_bytes(n: int | None) -> str:
    """``1536000`` → ``1.5M``; None → ``-``."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}G"
