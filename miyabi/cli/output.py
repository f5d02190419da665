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


def table(rows: Sequence[Sequence[str]], headers: Sequence[str], title: str | None = None) -> None:
    """Print rows under headers: a rich table on a terminal, aligned columns otherwise."""
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
