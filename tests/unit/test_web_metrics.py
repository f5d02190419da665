"""The dashboard's metrics folded from a recorded event log, with known answers, and
the token rules without a server."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import write_layout

from miyabi.web.auth import Access, Role, _loopback_host, cookie_token, header_token
from miyabi.web.metrics import LATENCY_BUCKETS, EventFold, Histogram

LOG = [
    {"time": "2026-12-01T00:00:00.000Z", "event": "agent-died", "agent": "a", "cause": "killed by signal 9"},
    {
        "time": "2026-12-01T00:00:00.250Z",
        "event": "restarted",
        "agent": "a",
        "reason": "killed by signal 9 after 3.0 s; restarting at once",
    },
    {"time": "2026-12-01T00:01:00.000Z", "event": "agent-died", "agent": "a", "cause": "exit status 1"},
    {
        "time": "2026-12-01T00:01:02.000Z",
        "event": "restarted",
        "agent": "a",
        "reason": "exit status 1 after 60.0 s; backoff 2 s",
    },
    {
        "time": "2026-12-01T00:02:00.000Z",
        "event": "restarted",
        "agent": "b",
        "reason": "restart requested by `miyabi restart`",
    },
    {"time": "2026-12-01T00:03:00.000Z", "event": "enqueued", "agent": "b", "id": "m1"},
    {"time": "2026-12-01T00:03:00.040Z", "event": "enter-again", "agent": "b", "id": "m1"},
    {"time": "2026-12-01T00:03:00.080Z", "event": "delivered", "agent": "b", "id": "m1"},
    {"time": "2026-12-01T00:03:01.000Z", "event": "enqueued", "agent": "b", "id": "m2"},
    {"time": "2026-12-01T00:03:31.000Z", "event": "dead-letter", "agent": "b", "id": "m2"},
    {"time": "2026-12-01T00:03:32.000Z", "event": "delivered", "agent": "b", "id": "m2"},
]


def test_the_fold_counts_restarts_recovery_and_delivery(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in LOG[:5]) + "not json\n")
    fold = EventFold()
    fold.read(log)
    assert dict(fold.restarts) == {("a", "signal"): 1, ("a", "exit"): 1, ("b", "requested"): 1}
    assert fold.recovery["a"].n == 2 and abs(fold.recovery["a"].total - 2.25) < 1e-6
    with log.open("a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in LOG[5:]))
        f.write('{"time": "2026-12-01T00:04:00.000Z", "event": "enqueued", "agent": "b", "id": "half')  # no newline yet
    fold.read(log)
    d = fold.delivery["b"]
    assert d.n == 1 and abs(d.total - 0.08) < 1e-6  # m2 became a dead letter: its late "delivered" is not a latency
    assert fold.enters["b"] == 1 and fold.dead_letters["b"] == 1
    exported = dict(d.export())
    assert exported["0.1"] == 1 and exported["0.05"] == 0 and exported["+Inf"] == 1
    log.write_text(json.dumps(LOG[0]) + "\n")  # replaced by a shorter file: folded again from its start
    fold.read(log)
    assert dict(fold.restarts) == {} and fold.offset == log.stat().st_size


def test_histogram_buckets_are_cumulative() -> None:
    h = Histogram(LATENCY_BUCKETS)
    for v in (0.005, 0.03, 0.03, 400.0):
        h.observe(v)
    out = dict(h.export())
    assert out["0.01"] == 1 and out["0.05"] == 3 and out["300.0"] == 3 and out["+Inf"] == 4


def test_tokens_roles_and_hosts() -> None:
    a = Access("full", "view")
    assert (
        a.role_of("full") == Role.ADMIN
        and a.role_of("view") == Role.VIEWER
        and a.role_of("x") is None
        and a.role_of(None) is None
    )
    assert Access("full", "view", read_only=True).role_of("full") == Role.VIEWER
    assert Access(None, None).role_of(None) == Role.ADMIN
    assert header_token({"authorization": "Bearer abc"}) == "abc" and header_token({"x-miyabi-token": "t"}) == "t"
    assert header_token({"authorization": "Basic abc"}) is None
    assert (
        cookie_token({"cookie": "a=1; miyabi_token=tok"}) == "tok"
        and cookie_token({"cookie": "\x00garbage=;;"}) is None
    )
    assert all(_loopback_host(h) for h in ("127.0.0.1:8765", "localhost", "[::1]:80", "LOCALHOST:1"))
    assert not any(_loopback_host(h) for h in ("evil.example", "127.0.0.1.evil.example:80", "10.0.0.1:8765", ""))


def test_the_dashboard_follows_a_later_up_in_its_home(tmp_path: Path) -> None:
    import os
    import time

    from miyabi.controller.view import resolve_target
    from miyabi.home import Home
    from miyabi.web.site import Site

    home = Home(tmp_path)
    home.ensure()
    for name in ("first", "second"):
        write_layout(tmp_path / f"{name}.yaml", [f"a-{name}"], session=name)
    home.save_state(layout=str(tmp_path / "first.yaml"), session="first", socket="s")
    site = Site(resolve_target(tmp_path, "s", None), Access("t", "v"), follow=True)
    try:
        assert site.target.session == "first" and [a.name for a in site.agents()] == ["a-first"]
        home.save_state(layout=str(tmp_path / "second.yaml"), session="second", socket="s")
        later = time.time() + 5
        os.utime(home.run / "up.json", (later, later))  # a new modification time, however coarse the clock
        assert [a.name for a in site.agents()] == ["a-second"]
        assert site.target.session == "second" and site.screens.session == "second"
    finally:
        site.close()


def test_errors_map_to_http_statuses() -> None:
    from miyabi.errors import AgentNotFound, MiyabiError, SessionNotFound
    from miyabi.messaging.mailbox import MessageError
    from miyabi.supervision.approvals import NotWaiting
    from miyabi.web.api import BadInput, NotFound
    from miyabi.web.app import status_of
    from miyabi.work.model import TaskError

    cases = [
        (AgentNotFound("x", ["a"]), 404),
        (NotFound("no such"), 404),
        (SessionNotFound("s", "sock"), 503),
        (NotWaiting("a is not waiting for approval"), 409),
        (TaskError("no task 9; list them"), 404),
        (TaskError("task 3 is done; it cannot become queued"), 409),
        (TaskError("'x' is not a task id (12)"), 400),
        (MessageError("message m is delivered; only pending messages can be dropped"), 409),
        (MessageError("id 'a' matches more than one message; give more of it"), 400),
        (BadInput("grep"), 400),
        (MiyabiError("no controller runs for /h; start it"), 503),
        (MiyabiError("the controller could not restart a"), 503),
    ]
    assert [status_of(e) for e, _ in cases] == [want for _, want in cases]
