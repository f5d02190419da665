"""GitHub issues to tasks, claims and routing, against a local server on 127.0.0.1
(no tmux needed: messages wait in the inboxes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakegithub import FakeGitHub
from typer.testing import CliRunner

from miyabi.cli import app
from miyabi.config.settings import GitHubSettings
from miyabi.messaging.mailbox import inbox
from miyabi.work.dispatch import Dispatcher
from miyabi.work.github import client_for
from miyabi.work.intake import report
from miyabi.work.intake import sync as sync_issues
from miyabi.work.scheduler import schedule
from miyabi.work.tasks import Store


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    monkeypatch.setenv("FAKE_GH_TOKEN", "t0ken")  # the stand-in takes any token; miyabi needs one
    with FakeGitHub() as f:
        yield f


def layout(tmp_path: Path, fake: FakeGitHub, name: str = "l.yaml") -> Path:
    f = tmp_path / name
    f.write_text(
        "session: gh\nagents:\n  - {name: kaede, profile: shell, command: cat}\n  - "
        "{name: sakura, profile: shell, command: cat, wip: 5}\n"
        "routes:\n  - {label: bug, agent: kaede}\n  - {default: true, agent: sakura}\n"
        f"github: {{repo: acme/widgets, api_url: '{fake.url}', token_env: FAKE_GH_TOKEN, allowed_authors: [friend]}}\n"
    )
    return f


def sync(lay: Path, home: Path) -> dict:
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
        app, ["github", "sync", "--once", "--layout", str(layout(tmp_path, fake)), "--home", str(tmp_path / "h")]
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
