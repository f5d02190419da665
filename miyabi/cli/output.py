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
    table fits the terminal's width (see :func:`fit`). Piped, no cell is ever cut."""
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        console = Console(highlight=False)
        if cut:
            from rich import box
            from rich.cells import cell_len

            natural = [max([cell_len(h), *(cell_len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
            widths = fit(natural, console.width, [headers.index(c) for c in cut if c in headers], headers)
            t = Table(
                title=title,
                title_justify="left",
                header_style="bold",
                box=box.SIMPLE_HEAD,
                show_edge=False,
                pad_edge=False,
                collapse_padding=True,  # GAP columns between cells
            )
            for h, w in zip(headers, widths, strict=True):
                t.add_column(h, width=w, no_wrap=True, overflow="ellipsis")
        else:
            t = Table(title=title, title_justify="left", header_style="bold")
            for h in headers:
                t.add_column(h)
        for r in rows:
            t.add_row(*r)
        console.print(t)
        return
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=False)]
    if title:
        print(title)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip())
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip())


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
    """Print one line, styled on a terminal."""
    if style and is_terminal():
        from rich.console import Console

        Console(highlight=False).print(text, style=style, markup=False)
    else:
        print(text)


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
