"""Notifications without a network: the ``notify:`` and ``web:`` sections of a layout,
which happenings become notices, each receiver's format, and the queue's promises
(once per receiver and happening; never resent after a crash mid-POST)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import write_layout

from miyabi.config import load
from miyabi.config.settings import Receiver, ReceiverKind, WebSettings
from miyabi.errors import LayoutError
from miyabi.events import EventKind, NoticeKind, append_event
from miyabi.notify.notifier import Notifier, request_of, where
from miyabi.notify.outbox import NoticeState, Outbox
from miyabi.notify.rules import from_event, from_task_event
from miyabi.work.model import TaskState
from miyabi.work.store import Store


def layout(tmp_path: Path, sections: str) -> Path:
    """Agent ``a`` and ``sections``, YAML as a person writes it (what these tests load)."""
    return write_layout(tmp_path / "n.yaml", ["a"], session="s", extra=sections)


def test_receivers_load_with_shorthands_and_defaults(tmp_path: Path) -> None:
    lay = load(
        layout(
            tmp_path,
            "notify:\n  - {slack: 'https://hooks.slack.com/services/T/B/X'}\n"
            "  - {kind: webhook, url_env: HOOK_URL, events: [task-done], rate: 5, max_attempts: 2}\n"
            "web: {port: 9000, read_only: true}\n",
        )
    )
    slack, hook = lay.notify
    assert (slack.kind, slack.url, slack.events, slack.wants("agent-hung")) == (
        ReceiverKind.SLACK,
        "https://hooks.slack.com/services/T/B/X",
        (),
        True,
    )
    assert (hook.kind, hook.url, hook.url_env, hook.rate, hook.max_attempts) == (
        ReceiverKind.WEBHOOK,
        None,
        "HOOK_URL",
        5,
        2,
    )
    assert hook.wants("task-done") and not hook.wants("agent-hung")
    assert "hooks.slack.com" not in slack.key and slack.key.startswith("slack:")
    assert lay.web == WebSettings(host="127.0.0.1", port=9000, read_only=True)
    assert load(layout(tmp_path, "web: true\n")).web == WebSettings()


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ("notify: {slack: x}\n", "notify: must be a list of receivers"),
        ("notify:\n  - {slack: 'ftp://x'}\n", "notify[0].slack: must be an http:// or https:// URL"),
        ("notify:\n  - {slack: 'https://a', discord: 'https://b'}\n", "notify[0]: names more than one kind"),
        ("notify:\n  - {kind: pager, url: 'https://a'}\n", "notify[0].kind: 'pager' is not a receiver kind"),
        ("notify:\n  - {kind: webhook}\n", "notify[0]: needs a URL"),
        ("notify:\n  - {webhook: 'https://a', events: [task-dun]}\n", "notify[0].events: 'task-dun' not known"),
        ("notify:\n  - {webhook: 'https://a', rate: 0}\n", "notify[0].rate: 0 must be a number from 0.1 to 6000"),
        (
            "notify:\n  - {webhook: 'https://a', urll: 'https://b'}\n",
            "notify[0].urll: unknown key 'urll'; did you mean 'url'?",
        ),
        ("web: {port: 99999}\n", "web.port: 99999 must be a TCP port from 1 to 65535"),
        ("web: {read_only: yes please}\n", "web.read_only: 'yes please' must be true or false"),
        ("web: [8765]\n", "web: must be a mapping"),
    ],
)
def test_a_bad_section_is_one_line_naming_its_key(tmp_path: Path, section: str, said: str) -> None:
    with pytest.raises(LayoutError) as e:
        load(layout(tmp_path, section))
    assert len(e.value.lines()) == 1 and said in str(e.value), str(e.value)
    assert str(tmp_path / "n.yaml") in str(e.value)


def test_which_happenings_become_notices() -> None:
    gave = from_event("k", {"event": "gave-up", "agent": "kaede", "reason": "exit status 3 5 times"})
    assert gave is not None and gave.kind == NoticeKind.AGENT_FAILED and "exit status 3 5 times" in gave.text
    asked = from_event("k", {"event": "state", "agent": "a", "state": "waiting-approval", "question": "Run rm?"})
    assert asked is not None and asked.kind == NoticeKind.WAITING_APPROVAL and "Run rm?" in asked.text
    assert from_event("k", {"event": "state", "agent": "a", "state": "busy"}) is None
    assert from_event("k", {"event": "delivered", "agent": "a"}) is None
    pr = from_event("k", {"event": "pull-request-opened", "ref": "o/r#3", "number": 9, "url": "https://x/pull/9"})
    assert pr is not None and pr.kind == NoticeKind.PR_OPENED and pr.url == "https://x/pull/9"
    waits = from_event("k", {"event": "approval-needed", "task": 4, "ref": "#4", "base": "main"})
    assert waits is not None and waits.kind == NoticeKind.MERGE_WAITING and "miyabi approve-merge 4" in waits.text
    back = from_event("k", {"event": "self-rolled-back", "task": 5, "evidence": "it ended", "fix": "fix task 6"})
    assert back is not None and back.kind == NoticeKind.SELF_ROLLED_BACK and "it ended" in back.text
    hung = from_event("k", {"event": "hung-restart", "agent": "a", "detail": "silent 600 s"})
    assert hung is not None and hung.kind == NoticeKind.AGENT_HUNG
    task = {"id": 4, "ref": "#4", "title": "t", "url": None, "agent": "a"}
    assert from_task_event(7, task, "in_progress", "") is None
    failed = from_task_event(7, task, "failed", "needs a person: 3 rounds")
    assert failed is not None and failed.key == "task-event:7" and failed.kind == NoticeKind.TASK_FAILED


def test_each_receiver_gets_its_own_format() -> None:
    n = from_event("log:1", {"event": "gave-up", "agent": "kaede", "reason": "r"})
    assert n is not None
    assert request_of(Receiver(ReceiverKind.SLACK, "https://h"), n, "s", 0) == {
        "json": {"text": f"[miyabi s] {n.title}: {n.text}"}
    }
    assert set(request_of(Receiver(ReceiverKind.DISCORD, "https://h"), n, "s", 0)["json"]) == {"content"}
    ntfy = request_of(Receiver(ReceiverKind.NTFY, "https://h"), n, "s", 0)
    assert ntfy["content"] == n.text.encode() and ntfy["headers"]["Title"] == "miyabi s: agent kaede failed"
    hook = request_of(Receiver(ReceiverKind.WEBHOOK, "https://h"), n, "s", 0)["json"]
    assert (
        hook["kind"] == "agent-failed"
        and hook["time"] == "1970-01-01T00:00:00.000Z"
        and hook["event"]["agent"] == "kaede"
    )
    assert (
        where(Receiver(ReceiverKind.SLACK, "https://hooks.slack.com/services/SECRET"))
        == "slack receiver at hooks.slack.com"
    )


def test_the_queue_holds_a_notice_once_and_never_resends_one_in_flight(tmp_path: Path) -> None:
    home = tmp_path
    (home / "logs").mkdir()
    store = Store.of_home(home)
    hook = Receiver(ReceiverKind.WEBHOOK, "https://h")
    append_event(home, EventKind.GAVE_UP, agent="old", reason="before the notifier ever ran")
    n = Notifier(home, store, (hook,), "s", clock=lambda: 100.0)
    assert n.produce() == 0  # the first run starts now: history is not news
    append_event(home, EventKind.GAVE_UP, agent="a", reason="r")
    t = store.add("t", "", [], "normal", [])
    store.set_state(t.id, TaskState.ASSIGNED, "routed", agent="a")
    store.set_state(t.id, TaskState.DONE, "done")
    assert n.produce() == 2
    assert n.produce() == 0
    outbox = Outbox(home)
    outbox.enqueue({}, [(hook.key, from_event("log:again", {"event": "gave-up", "agent": "a"}))], 100.0)  # type: ignore[list-item]
    rows = outbox.all()
    assert [r["kind"] for r in rows] == ["agent-failed", "task-done", "agent-failed"]
    first = outbox.next_due(hook.key, 100.0)
    assert first is not None and outbox.sending(first.id)
    assert not outbox.sending(first.id)  # one sender at a time
    # the controller dies mid-POST: the next one never sends it again
    again = Notifier(home, store, (hook,), "s", clock=lambda: 101.0)
    states = {r["id"]: r["state"] for r in Outbox(home).all()}
    assert states[first.id] == NoticeState.UNCERTAIN
    nxt = again.outbox.next_due(hook.key, 101.0)
    assert nxt is not None and nxt.id != first.id
    assert json.loads(rows[1]["fields"])["ref"] == f"#{t.id}"


def test_a_restart_is_news_only_after_a_controller_that_did_not_stop(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    store = Store.of_home(tmp_path)
    hook = Receiver(ReceiverKind.WEBHOOK, "https://h", events=("controller-restarted",))
    append_event(tmp_path, EventKind.CONTROLLER_START, pid=1)
    n = Notifier(tmp_path, store, (hook,), "s")
    append_event(tmp_path, EventKind.CONTROLLER_STOP, pid=1)  # `miyabi down`
    append_event(tmp_path, EventKind.CONTROLLER_START, pid=2)  # `miyabi up`: no news
    assert n.produce() == 0
    append_event(tmp_path, EventKind.CONTROLLER_START, pid=3)  # pid 2 was SIGKILLed
    assert Notifier(tmp_path, store, (hook,), "s").outbox.all()[-1]["kind"] == "controller-restarted"
    assert len(Outbox(tmp_path).all()) == 1


def test_deploys_and_failing_services_are_told_once_per_streak() -> None:
    done = from_event("k", {"event": "deployed", "name": "blog-1a2b3c", "commit": "0123456789abcdef", "story": 4})
    assert done is not None and done.kind == NoticeKind.DEPLOYED
    assert done.text == "blog-1a2b3c at 0123456789ab (story 4) is deployed"
    failing = {"event": "health-failed", "name": "blog", "commit": "ab", "check": "GET http://h/ → 200"}
    first = from_event("k", {**failing, "evidence": "GET http://h/ answered 500, expected 200", "failures": 1})
    assert first is not None and first.kind == NoticeKind.HEALTH_FAILED
    assert first.text == "blog at ab fails GET http://h/ → 200: GET http://h/ answered 500, expected 200"
    assert from_event("k", {**failing, "failures": 2}) is None  # the same streak: told already
    gave = from_event("k", {"event": "service-gave-up", "name": "blog", "reason": "exit status 3; 5 restarts"})
    assert gave is not None and gave.kind == NoticeKind.HEALTH_FAILED and "exit status 3; 5 restarts" in gave.text
    bad = from_event(
        "k", {"event": "deploy-failed", "name": "blog", "commit": "ab", "evidence": "deploy: make exited 2"}
    )
    assert (
        bad is not None and bad.kind == NoticeKind.HEALTH_FAILED and bad.text.endswith("failed: deploy: make exited 2")
    )


def test_a_story_is_told_when_it_is_done_and_when_its_rounds_ran_out() -> None:
    done = from_event("log:1", {"event": "story-done", "story": 3, "commit": "abcdef0123456789"})
    assert done is not None and done.kind == NoticeKind.STORY_DONE
    assert done.text == "story 3 is deployed (abcdef012345) and passed its checks"
    assert from_event("log:2", {"event": "story-failed", "story": 3, "round": 1, "of": 3, "final": False}) is None
    failed = from_event(
        "log:3", {"event": "story-failed", "story": 3, "round": 3, "of": 3, "final": True, "evidence": "HTTP 500"}
    )
    assert failed is not None and failed.kind == NoticeKind.STORY_FAILED
    assert failed.text == "story 3 failed after 3 of 3 rounds: HTTP 500"
