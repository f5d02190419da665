"""Printing for the command line: rich on a terminal, plain text when piped, JSON on request."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def is_terminal() -> bool:
    return sys.stdout.isatty()


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON (one document, UTF-8, indented)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def table(
    rows: Sequence[Sequence[str]], headers: Sequence[str], title: str | None = None, cut: Sequence[str] = ()
) -> None:
    """Print rows under headers: a rich table on a terminal, aligned columns otherwise.

    With ``cut`` (headers of columns that may be cut), each row is one line on a
    terminal: the widest of those columns are cut with an ellipsis (``…``) until the
    table fits the terminal's width (see :func:`fit`), drawn without rich (its import
    costs ``miyabi status`` a third of its time). Piped, no cell is ever cut."""
    if is_terminal() and cut:
        _fitted(rows, headers, title, cut)
        return
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, title_justify="left", header_style="bold")
        for h in headers:
            t.add_column(h)
        for r in rows:
            t.add_row(*r)
        Console(highlight=False).print(t)
        return
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=False)]
    if title:
        print(title)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip())
    for r in rows:
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


def say(text: str, style: str | None = None) -> None:
    """Print one line, in ``style`` (see :data:`SGR`) on a terminal that takes colours."""
    print(paint(text, style) if style and colours() else text)


def error(line: str) -> None:
    """Print one error line on stderr (red on a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\x1b[31mmiyabi: {line}\x1b[0m\n")
    else:
        sys.stderr.write(f"miyabi: {line}\n")


def warn(line: str) -> None:
    """Print one warning line on stderr (yellow on a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\x1b[33mmiyabi: warning: {line}\x1b[0m\n")
    else:
        sys.stderr.write(f"miyabi: warning: {line}\n")


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
