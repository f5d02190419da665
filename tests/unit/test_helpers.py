"""The suite's own helpers: ``stays`` cannot pass without having looked, and the layout
builder writes what the loader reads back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from helpers import stays, write_layout

from miyabi.config import load


def test_stays_fails_the_moment_the_condition_turns_false_naming_what_and_the_value() -> None:
    values = iter([3, 2, 0, 5, 5])
    calls: list[int] = []

    def fn() -> int:
        calls.append(1)
        return next(values)

    t0 = time.monotonic()
    with pytest.raises(AssertionError, match=r"the count stopped holding .* \(check 3\); value: 0$"):
        stays(fn, seconds=60, interval=0.01, what="the count")
    assert len(calls) == 3 and time.monotonic() - t0 < 60  # at the third call, not at the deadline


def test_stays_checks_at_the_deadline_however_long_the_interval() -> None:
    """A condition that breaks only at the end of the window is caught: the last check runs
    at or after the deadline even when the interval is longer than the window."""
    t0 = time.monotonic()
    seen: list[float] = []

    def still_true() -> bool:
        seen.append(time.monotonic())
        return True

    assert stays(still_true, seconds=0.3, interval=60) is True
    assert len(seen) >= 2 and seen[0] - t0 < 0.3 <= seen[-1] - t0

    def false_from_the_deadline() -> bool:
        return time.monotonic() < t1 + 0.3

    t1 = time.monotonic()
    with pytest.raises(AssertionError, match="stopped holding"):
        stays(false_from_the_deadline, seconds=0.3, interval=60, what="the window")


def test_stays_looks_twice_even_when_one_look_outlasts_the_window() -> None:
    seen: list[float] = []

    def slow() -> bool:
        seen.append(time.monotonic())
        time.sleep(0.3)
        return True

    stays(slow, seconds=0.1, interval=0.01)
    assert len(seen) == 2


def test_stays_refuses_a_window_it_could_not_watch() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        stays(lambda: True, seconds=0, interval=0.1)
    with pytest.raises(ValueError, match="must be positive"):
        stays(lambda: True, seconds=1, interval=0)


def test_the_layout_builder_writes_what_the_loader_reads(tmp_path: Path) -> None:
    f = write_layout(
        tmp_path / "l.yaml",
        [
            "plain",
            ("c", "shell", "cat"),
            ("own", "shell", None),
            {"name": "x", "profile": "shell", "command": "sh -c 'exit 3' # not a comment", "env": {"A": "true"}},
        ],
        session="s1",
        per_window=2,
        routes=[{"default": True, "agent": "c"}],
        watchdog={"max_restarts": 0},
        extra="logs: {max_bytes: 4K, keep: 2}\n",
    )
    data = yaml.safe_load(f.read_text())
    assert data == {
        "session": "s1",
        "per_window": 2,
        "routes": [{"default": True, "agent": "c"}],
        "watchdog": {"max_restarts": 0},
        "agents": [
            "plain",
            {"name": "c", "profile": "shell", "command": "cat"},
            {"name": "own", "profile": "shell"},
            {"name": "x", "profile": "shell", "command": "sh -c 'exit 3' # not a comment", "env": {"A": "true"}},
        ],
        "logs": {"max_bytes": "4K", "keep": 2},
    }
    lay = load(f)
    assert (lay.session, lay.per_window, [a.name for a in lay.agents]) == ("s1", 2, ["plain", "c", "own", "x"])
    assert lay.agents[3].command == "sh -c 'exit 3' # not a comment" and lay.agents[3].env["A"] == "true"
