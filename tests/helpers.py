"""Shared test helpers: polling with a deadline (never a fixed sleep before an assert)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def brought_up(home: Path, agents: list[str] | None = None, **state: Any) -> Path:
    """Make ``home`` look like a home ``miyabi up`` ran in (its ``run/up.json``), for
    tests of commands that need one but no running ensemble; returns ``home``."""
    from miyabi.home import Home

    Home(home).ensure()
    Home(home).save_state(agents=agents or ["kaede"], **state)
    return home


def wait_for(fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> T:
    """Call ``fn`` until it returns a truthy value; return that value.

    Raises:
        AssertionError: ``fn`` stayed falsy for ``timeout`` seconds (the message names ``what``
        and the last value).
    """
    deadline = time.monotonic() + timeout
    last: T = fn()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)
        last = fn()
    return last
