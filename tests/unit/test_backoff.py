"""The one backoff computation (miyabi/backoff.py): first value, doubling, cap, reset."""

from __future__ import annotations

import pytest

from miyabi.backoff import Backoff, backoff


def test_the_first_failure_waits_the_initial_delay() -> None:
    assert backoff(1, 0.5, 30.0) == 0.5
    assert backoff(0, 0.5, 30.0) == 0.5  # no failure yet: still the first delay, never less


def test_each_failure_doubles_the_wait_up_to_the_cap() -> None:
    assert [backoff(n, 0.5, 3.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_the_factor_is_a_parameter() -> None:
    assert [backoff(n, 1.0, 100.0, factor=3.0) for n in (1, 2, 3, 4, 5)] == [1.0, 3.0, 9.0, 27.0, 81.0]


def test_an_initial_delay_over_the_cap_is_cut_to_the_cap() -> None:
    assert backoff(1, 10.0, 2.0) == 2.0
    assert Backoff(10.0, 2.0).next() == 2.0


def test_a_long_outage_stays_at_the_cap_without_overflowing() -> None:
    """A float power overflows near 2 ** 1024: an agent down for days must not crash the retry loop."""
    assert backoff(5000, 0.1, 2.0) == 2.0


def test_the_stateful_backoff_grows_with_each_failure_and_resets_after_a_success() -> None:
    b = Backoff(0.1, 0.5)
    assert [b.next() for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    b.reset()
    assert b.delay == 0.1
    assert b.next() == 0.1
    assert b.delay == pytest.approx(0.2)


def test_a_backoff_resumes_from_a_kept_delay() -> None:
    """The watchdog keeps each agent's backoff in ``watchdog.json``; 0 means none yet."""
    assert Backoff(1.0, 300.0, delay=8.0).next() == 8.0
    resumed = Backoff(1.0, 300.0, delay=8.0)
    resumed.next()
    assert resumed.delay == 16.0
    assert Backoff(1.0, 300.0, delay=0.0).next() == 1.0
