"""GitHub issues to tasks, claims and routing, against a local server on 127.0.0.1
(no tmux needed: messages wait in the inboxes; one test runs a real controller)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from fakegithub import FakeGitHub
from helpers import brought_up, wait_for, write_layout
from integration.conftest import Cli
from typer.testing import CliRunner

from miyabi import defaults
from miyabi.cli import app
from miyabi.config.settings import GitHubSettings
from miyabi.messaging.mailbox import inbox
from miyabi.work import stories
from miyabi.work.dispatch import Dispatcher
from miyabi.work.github import GitHub, GitHubError, client_for
from miyabi.work.intake import report
from miyabi.work.intake import sync as sync_issues
from miyabi.work.scheduler import schedule
from miyabi.work.store import Store


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    monkeypatch.setenv("FAKE_GH_TOKEN", "t0ken")  # the stand-in takes any token; miyabi needs one
    with FakeGitHub() as f:
        yield f


def layout(tmp_path: Path, fake: FakeGitHub, **more: object) -> Path:
    """kaede takes bugs, sakura (wip 5) the rest, of the stand-in's repository; ``more``:
    keys for both agents."""
    cat = {"profile": "shell", "command": "cat", **more}
    return write_layout(
        tmp_path / "l.yaml",
        [{"name": "kaede", **cat}, {"name": "sakura", **cat, "wip": 5}],
        session="gh",
        routes=[{"label": "bug", "agent": "kaede"}, {"default": True, "agent": "sakura"}],
        github=fake.section(allowed_authors=["friend"]),
    )


def sync(lay: Path, home: Path) -> dict:
    """`github sync --once` in ``home``, which is made a home `miyabi up` ran in (the
    command refuses to claim issues for a directory no ensemble serves)."""
    if not (home / "run" / "up.json").exists():
        brought_up(home)
    r = CliRunner().invoke(app, ["github", "sync", "--once", "--json", "--layout", str(lay), "--home", str(home)])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_issues_become_tasks_are_claimed_and_routed(
    fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GH_TOKEN", "t0ken")
    fake.add_issue(1, "Crash on start", ["status:todo", "bug"], body="it crashes")
    fake.add_issue(2, "Write docs", ["status:todo"])
    fake.add_issue(3, "A pull request", ["status:todo"], pr=True)
    fake.add_issue(4, "From a stranger", ["status:todo"], association="NONE", login="mallory")
    fake.add_issue(5, "From a friend", ["status:todo"], association="NONE", login="friend")
    fake.add_issue(6, "After docs", ["status:todo"], body="depends on #2")
    home = tmp_path / "home"
    out = sync(layout(tmp_path, fake), home)
    assert out["added"] == ["acme/widgets#1", "acme/widgets#2", "acme/widgets#5", "acme/widgets#6"]
    assert out["needs_triage"] == ["acme/widgets#4"]
    assert {a["ref"]: a["agent"] for a in out["assigned"]} == {
        "acme/widgets#1": "kaede",
        "acme/widgets#2": "sakura",
        "acme/widgets#5": "sakura",
    }
    assert fake.labels(1) == ["bug", "status:in-progress", "assigned:kaede"]
    assert len(fake.comments[1]) == 1 and fake.comments[1][0].startswith("assigned to kaede by miyabi [")
    assert "status:needs-triage" in fake.labels(4) and "status:todo" in fake.labels(4)
    store = Store.of_home(home)
    assert store.get("acme/widgets#6").state == "blocked"  # waits for #2
    msgs = [m for _, m in inbox(home, "kaede").list()]
    assert msgs[0].body.startswith("Task acme/widgets#1: Crash on start") and msgs[0].task == str(
        store.get("acme/widgets#1").id
    )
    # the claims changed the todo list; the next poll sees the rest (nothing new), and
    # the one after costs one request answered 304
    again = sync(layout(tmp_path, fake), home)
    assert again["added"] == [] and again["assigned"] == []
    third = sync(layout(tmp_path, fake), home)
    assert third["unchanged"] and third["requests"] == third["not_modified"] == 1  # one listing: since, 304
    assert len(fake.comments[1]) == 1


def test_two_controllers_polling_one_repository_never_both_claim(fake: FakeGitHub, tmp_path: Path) -> None:
    for n in range(1, 11):
        fake.add_issue(n, f"task {n}", ["status:todo"])
    lay = layout(tmp_path, fake)
    a, b = tmp_path / "a", tmp_path / "b"
    out_a = sync(lay, a)
    out_b = sync(lay, b)
    won_a = {x["ref"] for x in out_a["assigned"] if x["state"] == "assigned"}
    won_b = {x["ref"] for x in out_b["assigned"] if x["state"] == "assigned"}
    assert won_a and not (won_a & won_b)
    for n in range(1, 11):
        assert len(fake.comments.get(n, [])) <= 1
    lost = [x for x in out_b["assigned"] if x["state"] == "cancelled"]
    assert {x["ref"] for x in lost} <= won_a


def test_a_401_is_one_line_naming_the_variable(
    fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GH_TOKEN", "very-secret")
    fake.faults.append((401, {}))
    r = CliRunner().invoke(
        app,
        [
            "github",
            "sync",
            "--once",
            "--layout",
            str(layout(tmp_path, fake)),
            "--home",
            str(brought_up(tmp_path / "h")),
        ],
    )
    assert r.exit_code == 1
    assert "$FAKE_GH_TOKEN" in r.output and "very-secret" not in r.output
    assert len([line for line in r.output.splitlines() if line]) == 1


def test_done_and_fail_move_labels_and_a_closed_issue_cancels_its_task(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.add_issue(1, "one", ["status:todo"])
    fake.add_issue(2, "two", ["status:todo"])
    fake.add_issue(3, "three", ["status:todo"])
    lay = layout(tmp_path, fake)
    home = tmp_path / "home"
    sync(lay, home)  # all three go to sakura (wip 5)
    store = Store.of_home(home)
    run = CliRunner().invoke
    assert run(app, ["task", "done", "acme/widgets#1", "--note", "fixed the thing", "--home", str(home)]).exit_code == 0
    assert (
        run(app, ["task", "fail", "acme/widgets#2", "--reason", "cannot reproduce", "--home", str(home)]).exit_code == 0
    )
    fake.edit(3, state="closed")
    out = sync(lay, home)
    assert "acme/widgets#1: labelled status:done" in out["reported"]
    assert fake.labels(1) == ["assigned:sakura", "status:done"]
    assert fake.comments[1][-1] == "done (sakura): fixed the thing"
    assert fake.labels(2) == ["assigned:sakura", "status:failed"] and "cannot reproduce" in fake.comments[2][-1]
    assert store.get("acme/widgets#3").state == "cancelled"
    told = [m.body for _, m in inbox(home, "sakura").list()]
    assert any("was closed on GitHub" in b for b in told)
    again = sync(lay, home)  # told once only
    assert again["reported"] == [] and len(fake.comments[1]) == 2


def test_a_failed_claim_is_retried_later_and_never_skipped(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.add_issue(1, "one", ["status:todo"])
    lay = layout(tmp_path, fake)
    home = tmp_path / "home"
    fake.delete_faults.append((403, {}))  # the claim's DELETE is refused (not a rate limit)
    out = sync(lay, home)
    assert out["assigned"][0]["state"] == "queued"  # put back, held for a while
    store = Store.of_home(home)
    assert store.get("acme/widgets#1").claim == "claiming"
    # another controller claims it meanwhile; ours must not then skip the claim
    other = sync(lay, tmp_path / "other")
    assert [a["state"] for a in other["assigned"]] == ["assigned"]
    cfg = GitHubSettings(repo="acme/widgets", api_url=fake.url, token_env="FAKE_GH_TOKEN")
    d = Dispatcher(store, home, cfg, client_for(cfg, home))
    t = store.set_state(store.get("acme/widgets#1").id, "assigned", "retry", agent="sakura", expect=("queued",))
    d(t, "sakura")
    assert store.get("acme/widgets#1").state == "cancelled"  # lost to the other one's comment
    assert len(fake.comments[1]) == 1


def test_a_crash_between_claim_and_message_keeps_the_claim(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.add_issue(1, "one", ["status:todo"])
    home = tmp_path / "home"
    store = Store.of_home(home)
    t = store.add("one", source="github", repo="acme/widgets", number=1)
    store.set_claim(t.id, "claiming")
    fake.edit(1, remove_labels=["status:todo"])  # our DELETE went through, then the controller died
    cfg = GitHubSettings(repo="acme/widgets", api_url=fake.url, token_env="FAKE_GH_TOKEN")
    d = Dispatcher(store, home, cfg, client_for(cfg, home))
    t = store.set_state(t.id, "assigned", "routed", agent="kaede")
    d(t, "kaede")
    assert store.get(t.id).state == "assigned" and store.get(t.id).claim == "claimed"
    assert fake.comments[1][0].startswith("assigned to kaede by miyabi [")
    assert [m.task for _, m in inbox(home, "kaede").list()] == [str(t.id)]


def test_dependencies_newest_first_closed_while_queued_todo_again_and_a_refused_notice(
    fake: FakeGitHub, tmp_path: Path
) -> None:

    # GitHub lists the most recently updated first: #6 ("depends on #2") comes before #2
    t0 = fake.clock() - 100
    fake.add_issue(2, "docs", ["status:todo"], at=t0)
    fake.add_issue(9, "to be closed", ["status:todo", "agent:nobody"], at=t0 + 1)  # routed to no agent: stays queued
    fake.add_issue(6, "after docs", ["status:todo"], body="depends on #2", at=t0 + 2)
    home = tmp_path / "home"
    store = Store.of_home(home)
    cfg = GitHubSettings(repo="acme/widgets", api_url=fake.url, token_env="FAKE_GH_TOKEN")
    gh = client_for(cfg, home)
    sync_issues(store, gh, cfg, home)
    six, two = store.find("acme/widgets", 6), store.find("acme/widgets", 2)
    assert six is not None and two is not None and store.depends_on(six.id) == [two.id]
    # closed while still queued: cancelled, never claimed
    fake.edit(9, state="closed")
    sync_issues(store, gh, cfg, home)
    assert store.get("acme/widgets#9").state == "cancelled"
    # failed, then labelled todo again: queued afresh, claimable again
    d = Dispatcher(store, home, cfg, gh)
    schedule(store, [], {"kaede": 5}, d)  # #2 has no route here; assign by hand
    t = store.set_state(two.id, "assigned", "test", agent="kaede")
    d(t, "kaede")
    assert store.get(two.id).claim == "claimed"
    store.set_state(two.id, "failed", "could not")
    fake.delete_faults.extend([(410, {})] * 5)  # the notice keeps being refused...
    fake.faults.clear()
    for _ in range(5):
        lines = report(store, gh, cfg, home)
    assert any("gave up telling GitHub" in line for line in lines)  # ...and is given up, not blocking
    fake.edit(2, add_labels=["status:todo"])
    sync_issues(store, gh, cfg, home)
    again = store.get(two.id)
    assert again.state == "queued" and again.claim == ""


# -- polling with `since`: what changed, and nothing missed


def direct(
    fake: FakeGitHub, tmp_path: Path, allowed: tuple[str, ...] = ()
) -> tuple[Store, GitHub, GitHubSettings, Path]:
    """The store, client and settings ``miyabi github sync`` would use, for calling sync() directly."""
    home = tmp_path / "home"
    cfg = GitHubSettings(repo="acme/widgets", api_url=fake.url, token_env="FAKE_GH_TOKEN", allowed_authors=allowed)
    return Store.of_home(home), client_for(cfg, home), cfg, home


def listed(fake: FakeGitHub, since: int = 0) -> list[tuple[dict[str, str], int]]:
    """The issue listings the stand-in answered from ``fake.answers[since:]``: (query, status)."""
    return [
        ({k: v[0] for k, v in parse_qs(urlparse(path).query).items()}, code)
        for _, method, path, code in fake.answers[since:]
        if method == "GET" and urlparse(path).path == "/repos/acme/widgets/issues"
    ]


def test_a_poll_with_nothing_changed_is_one_request_answered_304(fake: FakeGitHub, tmp_path: Path) -> None:
    t0 = fake.clock() - 3600
    for n in range(1, 251):  # three pages
        fake.add_issue(n, f"issue {n}", ["status:todo"], at=t0 + n)
    store, gh, cfg, home = direct(fake, tmp_path)
    first = sync_issues(store, gh, cfg, home)
    assert first.full and len(first.added) == 250
    for _ in range(3):
        mark, before = len(fake.answers), gh.stats.requests
        again = sync_issues(store, gh, cfg, home)
        assert again.unchanged and not again.added and gh.stats.requests - before == 1
        ((query, status),) = listed(fake, mark)
        # everything updated since the newest updated_at seen (#250's), less the overlap
        newest = datetime.fromisoformat(fake.issues[250]["updated_at"])
        assert status == 304 and query["state"] == "all" and "labels" not in query
        assert datetime.fromisoformat(query["since"]) == newest - timedelta(seconds=defaults.GITHUB_SINCE_OVERLAP)
    # another process of the same home (the next `miyabi github sync`) asks the same way
    gh2 = client_for(cfg, home)
    assert sync_issues(store, gh2, cfg, home).unchanged and gh2.stats.requests == 1


def test_a_poll_after_a_change_reads_every_page_of_what_changed(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.add_issue(1, "old", ["status:todo"], at=fake.clock() - 3600)
    store, gh, cfg, home = direct(fake, tmp_path)
    sync_issues(store, gh, cfg, home)
    for n in range(2, 152):  # 150 new issues: two pages of changes
        fake.add_issue(n, f"new {n}", ["status:todo"])
    mark = len(fake.answers)
    got = sync_issues(store, gh, cfg, home)
    assert got.added == [f"acme/widgets#{n}" for n in range(2, 152)] and not got.full
    pages = [q.get("page", "1") for q, status in listed(fake, mark) if status == 200]
    assert "2" in pages and all("since" in q for q, _ in listed(fake, mark))
    assert [t.number for t in store.query()] == list(range(1, 152))  # each once, oldest first
    assert sync_issues(store, gh, cfg, home).unchanged


def test_an_issue_that_gains_the_todo_label_after_the_first_poll_becomes_a_task(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    fake.add_issue(1, "not yet", ["bug"], at=fake.clock() - 3600)
    fake.add_issue(2, "todo", ["status:todo"], at=fake.clock() - 3500)
    store, gh, cfg, home = direct(fake, tmp_path)
    assert sync_issues(store, gh, cfg, home).added == ["acme/widgets#2"]
    fake.edit(1, add_labels=["status:todo"])
    got = sync_issues(store, gh, cfg, home)
    assert got.added == ["acme/widgets#1"] and not got.full
    assert store.get("acme/widgets#1").state == "queued"
    assert store.get("acme/widgets#1").labels == ("bug", "status:todo")


def test_an_issue_that_loses_the_todo_label_is_left_to_its_claim_as_before(fake: FakeGitHub, tmp_path: Path) -> None:
    """As with the full scan: losing the label changes nothing at the poll; the claim
    then finds the label gone and cancels the task (taken elsewhere)."""
    fake.add_issue(1, "one", ["status:todo"], at=fake.clock() - 3600)
    store, gh, cfg, home = direct(fake, tmp_path)
    sync_issues(store, gh, cfg, home)
    fake.edit(1, remove_labels=["status:todo"])
    got = sync_issues(store, gh, cfg, home)
    assert not got.unchanged and not got.added and not got.cancelled
    t = store.get("acme/widgets#1")
    assert t.state == "queued"
    t = store.set_state(t.id, "assigned", "routed", agent="kaede", expect=("queued",))
    Dispatcher(store, home, cfg, gh)(t, "kaede")
    assert store.get(t.id).state == "cancelled" and "claimed elsewhere" in store.history(t.id)[-1]["reason"]


def test_an_issue_edited_after_being_stored_is_not_stored_again(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.add_issue(1, "one", ["status:todo"], body="first words", at=fake.clock() - 3600)
    store, gh, cfg, home = direct(fake, tmp_path)
    sync_issues(store, gh, cfg, home)
    fake.edit(1, title="one, renamed", body="other words, depends on #1")
    got = sync_issues(store, gh, cfg, home)
    assert not got.unchanged and got.added == [] and got.skipped == ["acme/widgets#1"]
    assert [(t.title, t.body) for t in store.query()] == [("one", "first words")]  # as the full scan left it


def test_a_closed_issue_cancels_its_task_and_its_agent_is_told(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.add_issue(1, "held", ["status:todo"], at=fake.clock() - 3600)
    fake.add_issue(2, "done already", ["status:todo"], at=fake.clock() - 3500)
    fake.add_issue(3, "not ours", ["bug"], at=fake.clock() - 3400)
    store, gh, cfg, home = direct(fake, tmp_path)
    sync_issues(store, gh, cfg, home)
    one = store.get("acme/widgets#1")
    one = store.set_state(one.id, "assigned", "routed", agent="kaede")
    Dispatcher(store, home, cfg, gh)(one, "kaede")  # claimed: status:in-progress
    two = store.get("acme/widgets#2")
    store.set_state(two.id, "cancelled", "by hand")
    for n in (1, 2, 3):
        fake.edit(n, state="closed")
    got = sync_issues(store, gh, cfg, home)
    assert got.cancelled == ["acme/widgets#1: closed on GitHub, task cancelled"]
    assert store.get(one.id).state == "cancelled" and store.get(two.id).state == "cancelled"
    told = [m.body for _, m in inbox(home, "kaede").list()]
    assert any("was closed on GitHub; stop working on it" in b for b in told)
    assert sync_issues(store, gh, cfg, home).cancelled == []  # once


def test_equal_timestamps_and_late_changes_within_the_overlap_are_neither_missed_nor_doubled(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    """GitHub's clock ticks in whole seconds: a change in the second already seen is
    listed again (``since`` includes it); a change that shows in the listing late, with
    an updated_at older than the newest seen, is within the overlap. What comes again is
    recognised: no task twice."""
    now = fake.clock()
    fake.clock = lambda: now  # GitHub's clock stands still: every change in one second
    fake.add_issue(1, "first", ["status:todo"])
    store, gh, cfg, home = direct(fake, tmp_path)
    assert sync_issues(store, gh, cfg, home).added == ["acme/widgets#1"]
    fake.add_issue(2, "same second", ["status:todo"])
    assert sync_issues(store, gh, cfg, home).added == ["acme/widgets#2"]
    late = now - 30  # updated before #2, listed only now
    assert defaults.GITHUB_SINCE_OVERLAP > 30
    fake.add_issue(3, "shown late", ["status:todo"], at=late)
    assert sync_issues(store, gh, cfg, home).added == ["acme/widgets#3"]
    assert sync_issues(store, gh, cfg, home).unchanged
    assert sorted(t.number for t in store.query() if t.number is not None) == [1, 2, 3]


def test_an_interrupted_poll_is_listed_again(fake: FakeGitHub, tmp_path: Path) -> None:
    """A poll that fails half way remembers nothing: the next one lists the same changes."""
    fake.add_issue(1, "old", ["status:todo"], at=fake.clock() - 3600)
    store, gh, cfg, home = direct(fake, tmp_path)
    sync_issues(store, gh, cfg, home)
    # two changes more than the overlap apart: the poll that fails must not move past the older one
    fake.add_issue(2, "from a stranger", ["status:todo"], association="NONE", login="mallory", at=fake.clock() - 600)
    fake.add_issue(3, "new", ["status:todo"])
    fake.post_faults.append((403, {}))  # the triage label is refused (not a rate limit)
    with pytest.raises(GitHubError):
        sync_issues(store, gh, cfg, home)
    got = sync_issues(store, gh, cfg, home)
    assert got.triaged == ["acme/widgets#2"] and "status:needs-triage" in fake.labels(2)
    assert store.find("acme/widgets", 3) is not None and store.find("acme/widgets", 2) is None


def test_a_host_that_takes_issues_in_again_lists_every_todo_issue(fake: FakeGitHub, tmp_path: Path) -> None:
    """With a bus, a host without the intake lock polls only to cancel tasks of closed
    issues; when it takes the intake over, what it skipped meanwhile is listed again."""
    store, gh, cfg, home = direct(fake, tmp_path)
    sync_issues(store, gh, cfg, home, intake=False)
    fake.add_issue(1, "while another host took issues in", ["status:todo"])
    assert sync_issues(store, gh, cfg, home, intake=False).added == []
    fake.clock = lambda: time.time() + 2 * defaults.GITHUB_SINCE_OVERLAP  # long after: beyond the overlap
    fake.add_issue(2, "unrelated", ["bug"])
    sync_issues(store, gh, cfg, home, intake=False)
    got = sync_issues(store, gh, cfg, home, intake=True)
    assert got.full and got.added == ["acme/widgets#1"]


def test_a_changed_allowed_authors_lists_every_todo_issue_again(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.add_issue(1, "from a friend", ["status:todo"], association="NONE", login="friend", at=fake.clock() - 3600)
    store, gh, cfg, home = direct(fake, tmp_path)
    assert sync_issues(store, gh, cfg, home).triaged == ["acme/widgets#1"]
    assert sync_issues(store, gh, cfg, home).unchanged
    store, gh, cfg, home = direct(fake, tmp_path, allowed=("friend",))  # the layout now trusts the author
    got = sync_issues(store, gh, cfg, home)
    assert got.full and got.added == ["acme/widgets#1"]


def test_new_issues_are_stored_in_few_transactions_and_found_through_an_index(fake: FakeGitHub, tmp_path: Path) -> None:
    """One commit per ``defaults.GITHUB_INTAKE_BATCH`` issues, not one per issue (each
    commit wakes the controller for a scheduling pass), and the task of an issue is
    looked up through an index, not by reading every task."""
    n = defaults.GITHUB_INTAKE_BATCH * 2 + 10
    t0 = fake.clock() - n
    for i in range(1, n + 1):
        fake.add_issue(i, f"issue {i}", ["status:todo"], body=f"depends on #{i - 1}" if i > 1 else "", at=t0 + i)
    store, gh, cfg, home = direct(fake, tmp_path)
    before = store.version()[1]
    assert len(sync_issues(store, gh, cfg, home).added) == n
    assert store.version()[1] - before <= 3 + 1  # three batches, then the dependencies
    assert store.depends_on(store.get(f"acme/widgets#{n}").id) == [store.get(f"acme/widgets#{n - 1}").id]
    plan = " ".join(
        str(r[-1])
        for r in store.rows("EXPLAIN QUERY PLAN SELECT * FROM tasks WHERE repo=? AND number=?", ("acme/widgets", 1))
    )
    assert "USING INDEX tasks_issue" in plan, plan


def test_one_failing_change_does_not_undo_the_rest_of_its_batch(tmp_path: Path) -> None:
    store = Store.of_home(tmp_path / "home")
    store.add("there", source="github", repo="acme/widgets", number=1)
    before = store.version()[1]
    with store.tx():
        store.add("a", source="github", repo="acme/widgets", number=2)
        with pytest.raises(sqlite3.IntegrityError):  # stored meanwhile by another process
            store.add("again", source="github", repo="acme/widgets", number=1)
        store.add("b", source="github", repo="acme/widgets", number=3)
    assert store.version()[1] - before == 1
    assert [(t.number, t.title) for t in store.query()] == [(1, "there"), (2, "a"), (3, "b")]


# -- a missing token, an unreachable GitHub


@pytest.mark.parametrize("value", [None, "", "  "])
def test_a_missing_or_empty_token_is_one_line_naming_the_variable(
    fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("FAKE_GH_TOKEN")
    else:
        monkeypatch.setenv("FAKE_GH_TOKEN", value)
    lay = layout(tmp_path, fake)
    r = CliRunner().invoke(
        app, ["github", "sync", "--once", "--layout", str(lay), "--home", str(brought_up(tmp_path / "h"))]
    )
    lines = [line for line in r.output.splitlines() if line]
    assert r.exit_code == 1 and len(lines) == 1, r.output
    said = "not set" if value is None else "empty"
    assert f"github.token_env says FAKE_GH_TOKEN, which is {said}; export FAKE_GH_TOKEN=" in lines[0]
    assert str(lay) in lines[0] and "cannot reach" not in lines[0]
    assert fake.requests == []  # nothing was asked of GitHub


def test_the_controller_says_once_that_the_token_is_missing(
    fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The controller's GitHub thread (WorkEngine.run_github): one line in its log and a
    github-error event, then no polling (its environment cannot change until it restarts)."""
    from miyabi.config import load
    from miyabi.events import read_events
    from miyabi.work.engine import WorkEngine

    monkeypatch.delenv("FAKE_GH_TOKEN")
    lay = load(layout(tmp_path, fake))
    assert lay.github is not None
    home = tmp_path / "home"
    store = Store.of_home(home)
    engine = WorkEngine(store, lay, home, client_for(lay.github, home))
    stop = threading.Event()
    thread = threading.Thread(target=engine.run_github, args=(stop,))
    with caplog.at_level(logging.INFO, logger="miyabi.work"):
        thread.start()
        thread.join(timeout=30)
    stop.set()
    assert not thread.is_alive()
    said = [r.getMessage() for r in caplog.records if "FAKE_GH_TOKEN" in r.getMessage()]
    assert len(said) == 1 and "github.token_env says FAKE_GH_TOKEN, which is not set" in said[0]
    errors = [e["error"] for e in read_events(home) if e["event"] == "github-error"]
    assert len(errors) == 1 and "which is not set; export FAKE_GH_TOKEN=" in errors[0] and "\n" not in errors[0]
    assert fake.requests == []


def test_a_controller_without_the_token_says_so_once_in_its_log_and_events(
    fake: FakeGitHub, tmp_path: Path, cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real controller (``miyabi up``): one line naming the variable in
    ``logs/controller.log`` and one ``github-error`` event, and no request to GitHub
    (before, it polled anonymously and said "cannot reach GitHub … ConnectError" when
    GitHub could not be reached)."""
    from miyabi.events import read_events

    monkeypatch.delenv("FAKE_GH_TOKEN")
    lay = layout(tmp_path, fake, intro=False)
    assert cli("up", str(lay), "-d").exit_code == 0
    errors = wait_for(
        lambda: [e["error"] for e in read_events(home) if e["event"] == "github-error"], what="the github-error event"
    )
    assert len(errors) == 1 and "github.token_env says FAKE_GH_TOKEN, which is not set" in errors[0]
    assert cli("down").exit_code == 0
    said = [line for line in (home / "logs" / "controller.log").read_text().splitlines() if "FAKE_GH_TOKEN" in line]
    assert len(said) == 1 and said[0].endswith(errors[0]), said
    assert fake.requests == []


def test_an_issue_labelled_story_goes_to_the_manager_as_a_story(
    fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GH_TOKEN", "t0ken")
    fake.add_issue(1, "Run a blog", ["status:todo", "story"], body="posts and comments")
    fake.add_issue(2, "Write docs", ["status:todo"])
    cat = {"profile": "shell", "command": "cat", "wip": 5}
    lay = write_layout(
        tmp_path / "l.yaml",
        [{"name": "kaede", **cat}, {"name": "sakura", **cat}],
        session="gh",
        routes=[{"default": True, "agent": "sakura"}],  # a story's issue goes to the manager all the same
        github=fake.section(),
        roles={"manager": "kaede", "coder": "sakura"},
    )
    home = tmp_path / "home"
    out = sync(lay, home)
    assert {a["ref"]: a["agent"] for a in out["assigned"]} == {"acme/widgets#1": "kaede", "acme/widgets#2": "sakura"}
    store = Store.of_home(home)
    (story,) = stories.stories(store)
    assert (story.ref, story.task, story.state) == ("acme/widgets#1", store.get("acme/widgets#1").id, "planning")
    (msg,) = [m for _, m in inbox(home, "kaede").list()]
    assert msg.body.startswith("Task acme/widgets#1: Run a blog") and "You manage story 1:" in msg.body
    assert "miyabi spec import specs/NNN-feature/tasks.md --story 1" in msg.body
    assert fake.labels(1)[-1] == "assigned:kaede"
