"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import sys

import psutil


def pct(xs: list[float], p: float) -> float:
    """The ``p``-th percentile of ``xs`` (nearest rank)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def progress(text: str) -> None:
    """Show ``text`` as a progress line on stderr, over the previous one, when stderr is
    a terminal; nothing at all when it is piped or redirected (the figures stay clean)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r" + text.ljust(30))
        sys.stderr.flush()


def progress_done() -> None:
    """Clear the progress line (on a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r" + " " * 30 + "\r")
        sys.stderr.flush()


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its children (a controller's
    tmux control client), from /proc through psutil."""
    proc = psutil.Process(pid)
    total = sum(proc.cpu_times()[:2])
    for c in proc.children(recursive=True):
        try:
            total += sum(c.cpu_times()[:2])
        except psutil.Error:
            pass
    return total
