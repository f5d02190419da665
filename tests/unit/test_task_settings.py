"""Durations, task time limits and the keep-alive's backoff: pure functions."""

from __future__ import annotations

import pytest

from miyabi.config.settings import TaskSettings, parse_duration
from miyabi.controller.keepalive import backoff_delay


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("30m", 1800.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        (45, 45.0),
        ("12", 12.0),
        (" 3 m ", 180.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["soon", "-5m", -1, True, None, "2 hours", "h"])
def test_what_is_not_a_duration(bad: object) -> None:
    assert parse_duration(bad) is None


def test_a_tasks_own_limit_wins_then_the_shortest_label_then_the_default() -> None:
    s = TaskSettings(timeout=7200.0, label_timeouts=(("bug", 1800.0), ("urgent", 600.0)))
    assert s.timeout_for(["bug", "urgent"]) == 600.0
    assert s.timeout_for(["bug"]) == 1800.0
    assert s.timeout_for(["docs"]) == 7200.0
    assert s.timeout_for(["bug"], own=60.0) == 60.0
    assert TaskSettings().timeout_for(["bug"]) is None


def test_the_keepalive_restarts_the_first_young_death_at_once_then_backs_off() -> None:
    assert [backoff_delay(n) for n in range(10)] == [0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
