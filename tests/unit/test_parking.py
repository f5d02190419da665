"""Usage limits: the signs each shipped profile reads (screens captured from the real
CLIs against the model stand-in's HTTP 429), the reset times CLIs print, and a park's
course (probe, park again, end) on an injected clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from miyabi.agents.limits import LimitSign, limit_shown, reset_time
from miyabi.agents.profiles import BUILTIN
from miyabi.agents.screen import Screen
from miyabi.config.loader import load
from miyabi.config.settings import ParkSettings
from miyabi.errors import LayoutError
from miyabi.messaging.parking import Parking, ParkReason, probe_time, read_parked

# Rows as tmux captured them (tests' model stand-in answering 429; see docs/profiles.md).
CLAUDE_RETRYING = [
    " ▐▛███▛█   Claude Code v2.1.332",
    "❯ Write hello to the screen please",
    "✻ 429 This request would exceed the rate limit for your organization. · retrying in 15s · attempt 7/10",
    "─" * 40,
    "❯ ",
    "─" * 40,
    "  ⏸ manual mode on · esc to interrupt",
]
CODEX_GAVE_UP = [
    "  >_ OpenAI Codex (v0.171.0)",
    "› Write hello to the screen please",
    "■ exceeded retry limit, last status: 429 Too Many Requests",
    "› Ask Codex to do anything",
    "  fake-model default · /tmp/w · Write hello to the screen please",
]
AIDER_RETRYING = [
    "diff> Write hello to the screen please",
    "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached for fake-model",
    "The API provider has rate limited you. Try again later or check your quotas.",
    "Retrying in 8.0 seconds...",
]
PROMPT = "Write hello to the screen please"


@pytest.mark.parametrize(
    ("profile", "rows", "row"),
    [("claude", CLAUDE_RETRYING, 2), ("codex", CODEX_GAVE_UP, 2), ("aider", AIDER_RETRYING, 2)],
)
def test_each_cli_s_limit_sign_below_the_last_prompt_counts(profile: str, rows: list[str], row: int) -> None:
    sign = limit_shown(BUILTIN[profile], Screen.of(rows), PROMPT)
    assert sign is not None and sign.line == rows[row].strip()
    # Codex's footer repeats the last prompt under the sign: a status line, not its echo
    assert limit_shown(BUILTIN[profile], Screen.of(rows), None) == sign


@pytest.mark.parametrize(
    ("profile", "rows", "echo"),
    [
        ("claude", CLAUDE_RETRYING, "❯ miyabi: kaede, go on with task 3"),
        ("codex", CODEX_GAVE_UP, "› miyabi: kaede, go on with task 3"),
        ("aider", AIDER_RETRYING, "diff> miyabi: kaede, go on with task 3"),
    ],
)
def test_a_sign_above_the_echo_of_what_miyabi_typed_since_is_old(profile: str, rows: list[str], echo: str) -> None:
    later = [*rows, echo, "Answer: miyabi: kaede, go on"]
    assert limit_shown(BUILTIN[profile], Screen.of(later), "miyabi: kaede, go on with task 3") is None
    again = [*later, rows[2]]  # the same sign again, below the echo: current
    assert limit_shown(BUILTIN[profile], Screen.of(again), "miyabi: kaede, go on with task 3") is not None


def test_profiles_without_a_limit_pattern_see_none() -> None:
    assert limit_shown(BUILTIN["gemini"], Screen.of(CLAUDE_RETRYING), None) is None


@pytest.mark.parametrize(
    ("profile", "line", "reset"),
    [
        (
            "claude",
            "Claude usage limit reached. Your limit will reset at 3pm (America/New_York).",
            "3pm (America/New_York)",
        ),
        ("claude", "5-hour limit reached ∙ resets 2:30am", "2:30am"),
        ("claude", 'API Error: 429 {"type":"error"}', None),
        (
            "codex",
            "■ You've hit your usage limit. Upgrade to Pro, or try again in 2 hours 5 minutes.",
            "in 2 hours 5 minutes",
        ),
        ("codex", "■ You've hit your usage limit. Try again at 9:41 PM.", "at 9:41 PM"),
    ],
)
def test_plans_usage_limits_carry_their_reset_time(profile: str, line: str, reset: str | None) -> None:
    sign = limit_shown(BUILTIN[profile], Screen.of(["› go", line, "› "]), "go")
    assert sign == LimitSign(line.strip(), reset)


NOW = datetime(2026, 12, 6, 14, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("in 2 hours 5 minutes", NOW + 7500),
        ("4h30m", NOW + 16200),
        ("45s", NOW + 45),
        ("2 days", NOW + 172800),
        ("3pm", datetime(2026, 12, 6, 15, 0, tzinfo=UTC).timestamp()),
        ("12:30 PM", datetime(2026, 12, 7, 12, 30, tzinfo=UTC).timestamp()),  # passed long ago: tomorrow's
        ("2pm", None),  # passed just now: a late reset (the caller backs off), not tomorrow's
        ("17:00", datetime(2026, 12, 6, 17, 0, tzinfo=UTC).timestamp()),
        ("at 9:41 PM", datetime(2026, 12, 6, 21, 41, tzinfo=UTC).timestamp()),
        ("3pm (Asia/Tokyo)", datetime(2026, 12, 7, 15, 0, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp()),
        ("2026-12-06T18:00:00Z", datetime(2026, 12, 6, 18, 0, tzinfo=UTC).timestamp()),
        ("1796000000", 1796000000.0),
        ("soon", None),
        ("15", None),
        ("13pm", None),
    ],
)
def test_reset_times_as_clis_print_them(text: str, expected: float | None) -> None:
    assert reset_time(text, NOW, UTC) == expected


def test_a_probe_waits_for_the_reset_time_else_backs_off() -> None:
    s = ParkSettings(probe_after=60, probe_max=300)
    assert probe_time(100.0, 5000.0, 1, s) == 5000.0
    assert probe_time(100.0, 50.0, 1, s) == 160.0  # a reset already past: the back-off
    assert [probe_time(0.0, None, n, s) for n in (1, 2, 3, 4)] == [60, 120, 240, 300]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


SIGN = LimitSign("■ exceeded retry limit, last status: 429 Too Many Requests", None)


def parking(tmp_path: Path, clock: Clock) -> tuple[Parking, list[tuple[str, dict[str, Any]]], list[Any]]:
    events: list[tuple[str, dict[str, Any]]] = []
    probes: list[Any] = []
    p = Parking(
        tmp_path,
        "kaede",
        ParkSettings(probe_after=60, probe_max=600),
        lambda ev, **f: events.append((str(ev), f)),
        probes.append,
        clock,
    )
    return p, events, probes


def test_a_park_is_probed_parked_again_with_a_longer_wait_then_ends(tmp_path: Path) -> None:
    clock = Clock()
    p, events, probes = parking(tmp_path, clock)
    parked = p.check(SIGN)
    assert parked is not None and parked.reason == ParkReason.LIMIT and parked.probe_at == 1060.0
    assert events[-1][0] == "agent-parked" and events[-1][1]["strikes"] == 1
    assert read_parked(tmp_path, "kaede") == parked  # kept for status and a restarted controller
    clock.t = 1059.0
    assert p.check(SIGN) == parked
    clock.t = 1060.0
    assert p.check(SIGN) is None and len(probes) == 1  # told to go on (queued)
    assert p.check(SIGN) is None and len(probes) == 1  # the old sign until it is typed
    fresh, _, _ = parking(tmp_path, clock)  # a controller started since: the probe is still on
    assert fresh.current is not None and fresh.current.probing
    p.typed("miyabi: go on")  # the first text typed while a probe is queued is the probe
    assert p.current is not None and p.current.probed == 1060.0 and not p.current.probing
    assert p.check(None) is None  # it works on
    clock.t = 1065.0
    again = p.check(SIGN)  # the limit again
    assert again is not None and again.strikes == 2 and again.since == 1000.0 and again.probe_at == 1185.0
    clock.t = 1185.0
    assert p.check(None) is None and len(probes) == 2
    p.typed("miyabi: go on")
    clock.t = 1200.0
    assert p.check(None) is None and p.current is not None
    clock.t = 1185.0 + 61
    assert p.check(None) is None and p.current is None  # a minute without a sign: over
    assert events[-1][0] == "agent-unparked" and events[-1][1]["why"] == "went on"
    assert not (tmp_path / "run" / "parked" / "kaede.json").exists()


def test_a_turn_the_provider_answered_ends_the_park_a_sign_gone_does_not(tmp_path: Path) -> None:
    clock = Clock()
    p, events, _ = parking(tmp_path, clock)
    assert p.check(SIGN) is not None
    assert p.check(None) is not None  # scrolled away, or a respawn cleared the screen: still parked
    p.answered()
    assert p.check(None) is None and p.current is None
    assert events[-1][1]["why"] == "answered"


def test_a_printed_reset_time_sets_the_probe(tmp_path: Path) -> None:
    clock = Clock()
    p, _, _ = parking(tmp_path, clock)
    parked = p.check(LimitSign("usage limit reached", "in 2 hours"))
    assert parked is not None and parked.until == 1000.0 + 7200 and parked.probe_at == parked.until


def test_a_budget_park_holds_until_released(tmp_path: Path) -> None:
    clock = Clock()
    p, events, probes = parking(tmp_path, clock)
    p.park_budget("tokens 1,000 of 1,000 per day", None)
    clock.t += 10**6
    assert p.check(None) is not None and probes == []
    p.release(ParkReason.LIMIT, "wrong reason")
    assert p.current is not None
    p.release(ParkReason.BUDGET, "raised")
    assert p.current is None and events[-1][1]["why"] == "raised"


def test_a_park_survives_a_new_controller(tmp_path: Path) -> None:
    clock = Clock()
    p, _, _ = parking(tmp_path, clock)
    parked = p.check(SIGN)
    again, _, _ = parking(tmp_path, clock)
    assert again.current == parked
    raw = json.loads((tmp_path / "run" / "parked" / "kaede.json").read_text())
    assert raw["reason"] == "limit"


def test_park_keys_load_and_bad_ones_are_named(tmp_path: Path) -> None:
    f = tmp_path / "l.yaml"
    f.write_text(
        "park: {probe_after: 2m, handoff_after: 10m, to: [b]}\n"
        "agents:\n  - {name: a, profile: claude, park: {probe_max: 30m}}\n  - {name: b, profile: codex}\n"
    )
    layout = load(f)
    a = layout.agents[0]
    assert (a.park.probe_after, a.park.probe_max, a.park.handoff_after, a.park.to) == (120, 1800, 600, ("b",))
    f.write_text(
        "agents:\n  - {name: a, profile: claude, park: {to: [nobody]}}\n  - {name: b, park: {probe_after: soon}}\n"
    )
    with pytest.raises(LayoutError) as e:
        load(f)
    text = str(e.value)
    assert "agents[0].park.to[0]" in text and "nobody" in text
    assert "agents[1].park.probe_after" in text and "'soon'" in text
    f.write_text("agents:\n  - {name: a, park: {to: [a]}}\n")
    with pytest.raises(LayoutError, match="cannot take over its own tasks"):
        load(f)


def test_the_echo_of_a_message_that_quotes_a_limit_is_no_sign() -> None:
    note = "miyabi: this task comes from a, stopped at: last status: 429 Too Many Requests; go on"
    rows = ["❯ " + note, "⏺ Working on it", "❯ "]
    assert limit_shown(BUILTIN["claude"], Screen.of(rows), note) is None
    assert limit_shown(BUILTIN["claude"], Screen.of([*rows[:2], "API Error: 429", "❯ "]), note) is not None


def test_claude_code_s_stop_failure_hook_tells_a_rate_limit() -> None:
    from miyabi.agents.hooks import Activity, interpret
    from miyabi.cli.hook import record

    said = "API Error: Request rejected (429) · This request would exceed the rate limit for your organization."
    rec = record(
        "StopFailure", {"hook_event_name": "StopFailure", "error": "rate_limit", "last_assistant_message": said}
    )
    report = interpret(rec)
    assert report.activity is Activity.READY and report.limit == said
    assert interpret({"event": "StopFailure", "error": "overloaded"}).limit is None
    # and its screen says so too (measured with CLAUDE_CODE_MAX_RETRIES=1)
    rows = ["❯ Write hello to the screen please", f"● {said}", "─" * 40, "❯ Resend your message to try again"]
    assert limit_shown(BUILTIN["claude"], Screen.of(rows, (2, 3)), PROMPT) is not None


def test_the_worker_rehearses_a_usage_limit_its_profile_reads() -> None:
    from miyabi.worker import Worker

    now = [0.0]
    shown: list[str] = []
    taken: list[str] = []
    w = Worker("w", None, out=shown.append, quota=2, quota_reset=30, clock=lambda: now[0])
    w.take = taken.append  # type: ignore[method-assign]
    for text in ("one", "two", "three", "four"):
        w.receive(text)
        now[0] += 10
    assert taken == ["one", "two"]
    assert shown == ["usage limit reached · resets in 30s\r\n", "usage limit reached · resets in 20s\r\n"]
    sign = limit_shown(BUILTIN["worker"], Screen.of(["worker> three", shown[1].strip(), "worker> "]), "three")
    assert sign is not None and reset_time(sign.reset or "", 0.0) == 20.0
    now[0] = 50.0  # the reset: the refused ones first, in order
    w.receive("go on")
    assert taken == ["one", "two", "three", "four", "go on"]


def test_a_reset_in_so_long_counts_from_the_sign_not_from_each_read(tmp_path: Path) -> None:
    clock = Clock()
    p, _, probes = parking(tmp_path, clock)
    sign = LimitSign("usage limit reached · resets in 20s", "in 20s")
    assert p.check(sign) is not None
    clock.t += 15  # the same sign, still on screen
    parked = p.check(sign)
    assert parked is not None and parked.probe_at == 1020.0
    clock.t = 1020.0
    assert p.check(sign) is None and len(probes) == 1


def test_a_turn_answered_while_the_sign_still_shows_ends_the_park_for_good(tmp_path: Path) -> None:
    clock = Clock()
    p, _, _ = parking(tmp_path, clock)
    assert p.check(SIGN) is not None
    p.answered(SIGN.line)  # the CLI's own retry got through; its old sign is still on screen
    assert p.check(SIGN) is None and p.current is None
    p.typed("next message")
    assert p.check(SIGN) is not None  # after new text, the same sign is news again


def test_hand_offs_go_to_a_target_that_can_do_the_task_and_wake_no_busy_loop(tmp_path: Path) -> None:
    from miyabi.messaging.parking import Parked
    from miyabi.work.engine import WorkEngine
    from miyabi.work.model import Source, TaskState
    from miyabi.work.store import Store

    f = tmp_path / "l.yaml"
    f.write_text(
        "agents:\n"
        "  - {name: a, profile: shell, park: {handoff_after: 10s, to: [coders, c, b]}}\n"
        "  - {name: b, profile: worker}\n"
        "  - {name: c, profile: shell}\n"
        "pools:\n  - {name: coders, profile: shell, repo: .}\n"
    )
    (tmp_path / ".git").mkdir()
    layout = load(f)
    clock = Clock()
    store = Store(tmp_path / "state" / "miyabi.db", clock=clock)
    engine = WorkEngine(store, layout, tmp_path, clock=clock)
    work = store.add("write the notes", "", ["agent:a"])
    job = store.add("job j1", "{}", ["agent:a"], source=Source.JOB, key="j1")
    for t in (work, job):
        store.set_state(t.id, TaskState.ASSIGNED, "routed", agent="a")
    parked = {"a": Parked("limit", 1000.0, None, 1300.0, 1, "usage limit reached")}
    assert engine.handoff_due(parked) == 1010.0
    assert engine.hand_off(parked, lambda name: True) == []  # not yet
    clock.t = 1010.0
    assert engine.handoff_due(parked) is None  # past: no pass is due for it again (no busy loop)
    went = dict(engine.hand_off(parked, lambda name: name != "c"))
    assert went == {work.id: "coders", job.id: "b"}  # a job only to an agent that runs jobs
    assert store.get(job.id).handoff == "b" and store.get(work.id).pool == "coders"
