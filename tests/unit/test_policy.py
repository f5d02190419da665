"""The restart policy, as a pure function of history and a clock."""

from __future__ import annotations

from miyabi.config.settings import WatchdogSettings as Policy
from miyabi.supervision.policy import History, on_death, record_restart

P = Policy(min_uptime=10, stable_after=600, max_restarts=5, restart_window=900, backoff_initial=1, backoff_max=300)


def test_a_death_after_min_uptime_restarts_at_once() -> None:
    d = on_death(P, History(), uptime=30, now=1000)
    assert (d.action, d.delay) == ("restart", 0.0)


def test_quick_deaths_back_off_doubling_up_to_the_maximum() -> None:
    h = History()
    delays = []
    now = 0.0
    for _ in range(12):
        d = on_death(Policy(max_restarts=100, backoff_max=300), h, uptime=0.1, now=now)
        delays.append(d.delay)
        h = record_restart(h, d, now)
        now += 10_000  # outside the window: the breaker never trips here
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]


def test_running_stable_after_resets_the_backoff() -> None:
    h = History(backoff=64)
    assert on_death(P, h, uptime=5, now=0).delay == 64
    d = on_death(P, h, uptime=700, now=0)
    assert (d.delay, d.backoff) == (0.0, 0.0)
    assert on_death(P, History(backoff=d.backoff), uptime=1, now=0).delay == 1


def test_breaker_trips_after_max_restarts_within_the_window() -> None:
    h = History()
    now = 0.0
    actions = []
    for _ in range(7):
        d = on_death(P, h, uptime=0.5, now=now)
        actions.append(d.action)
        if d.action == "restart":
            h = record_restart(h, d, now)
        now += 20
    assert actions == ["restart"] * 5 + ["fail", "fail"]
    assert "5 restarts within 900 s" in on_death(P, h, 0.5, now).reason


def test_restarts_outside_the_window_do_not_count() -> None:
    h = History(restarts=[0, 1, 2, 3, 4])
    assert on_death(P, h, uptime=0.5, now=1000).action == "restart"
    assert on_death(P, h, uptime=0.5, now=500).action == "fail"


def test_silence_escalates_nudge_then_restart() -> None:
    from miyabi.supervision.policy import Silence, on_silence

    p = Policy(silence_timeout=60, silence_grace=30)
    assert on_silence(p, Silence(100, True, None, False, None))[0] == "ok"  # idle at its prompt
    assert on_silence(p, Silence(10, False, None, False, None))[0] == "ok"  # printed recently
    assert on_silence(p, Silence(100, False, None, True, None))[0] == "working"  # burning CPU
    assert on_silence(p, Silence(100, False, None, False, None))[0] == "nudge"
    assert on_silence(p, Silence(100, False, None, False, 10))[0] == "wait"
    action, why = on_silence(p, Silence(130, False, None, False, 30))
    assert action == "restart" and "after the nudge" in why


def test_without_a_ready_pattern_only_an_unanswered_message_counts() -> None:
    from miyabi.supervision.policy import Silence, on_silence

    p = Policy(silence_timeout=60, silence_grace=30)
    assert on_silence(p, Silence(10_000, None, None, False, None))[0] == "ok"
    assert on_silence(p, Silence(10_000, None, 20, False, None))[0] == "ok"
    assert on_silence(p, Silence(10_000, None, 61, False, None))[0] == "nudge"
