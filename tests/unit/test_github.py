"""The GitHub client against a local server on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fakegithub import FakeGitHub

from miyabi.work.github import GitHub, GitHubError, Listing, stamp


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub() as f:
        yield f


def client(fake: FakeGitHub, slept: list[float] | None = None) -> GitHub:
    return GitHub(
        "acme/widgets",
        "s3cret-token",
        "MY_TOKEN",
        api_url=fake.url,
        sleep=(slept.append if slept is not None else lambda s: None),
    )


def test_250_issues_over_three_pages_without_pull_requests_then_304(fake: FakeGitHub) -> None:
    t0 = fake.clock() - 1000
    for n in range(1, 251):
        fake.add_issue(n, f"issue {n}", ["status:todo"], at=t0 + n)
    fake.add_issue(251, "a PR", ["status:todo"], pr=True, at=t0 + 251)
    fake.add_issue(252, "not todo", ["bug"], at=t0 + 252)
    gh = client(fake)
    got = gh.issues(labels="status:todo", key="todo")
    assert got is not None and [i["number"] for i in got.issues] == list(range(250, 0, -1))  # newest first
    assert got.requests == gh.stats.requests == 3
    assert got.newest == fake.issues[251]["updated_at"]  # the pull request counts as seen too
    assert gh.issues(labels="status:todo", key="todo") is not None  # not committed yet: asked afresh
    gh.commit()
    before = gh.stats.requests
    assert gh.issues(labels="status:todo", key="todo") is None  # the first page answered 304
    assert gh.stats.requests - before == 1 and gh.stats.statuses[304] == 1
    fake.edit(1, title="changed on the last page")  # a change makes it the newest: the first page tells
    again = gh.issues(labels="status:todo", key="todo")
    assert again is not None and again.issues[0]["title"] == "changed on the last page" and len(again.issues) == 250


def test_rate_limits_and_server_errors_are_waited_out(fake: FakeGitHub) -> None:
    fake.add_issue(1, "x", ["status:todo"])
    slept: list[float] = []
    gh = client(fake, slept)
    fake.faults.extend([(403, {"retry-after": "7"}), (500, {}), (503, {})])
    got = gh.issues(labels="status:todo")
    assert got is not None and len(got.issues) == 1
    assert slept == [7.0, 1.0, 2.0]
    fake.faults.append((403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(gh.clock()) + 30)}))
    gh.issues(labels="status:todo")
    assert 29 <= slept[-1] <= 32


def test_401_names_the_variable_and_never_the_token(fake: FakeGitHub) -> None:
    fake.faults.append((401, {}))
    with pytest.raises(GitHubError) as info:
        client(fake).issues()
    assert "$MY_TOKEN" in str(info.value) and "s3cret" not in str(info.value)
    assert "\n" not in str(info.value)


def test_removing_a_label_is_a_claim_only_one_can_win(fake: FakeGitHub) -> None:
    fake.add_issue(3, "x", ["status:todo"])
    a, b = client(fake), client(fake)
    assert a.remove_label(3, "status:todo") is True
    assert b.remove_label(3, "status:todo") is False
    a.add_labels(3, ["status:in-progress", "assigned:kaede"])
    a.comment(3, "assigned to kaede by miyabi")
    assert fake.labels(3) == ["status:in-progress", "assigned:kaede"]
    assert fake.comments[3] == ["assigned to kaede by miyabi"]


def test_a_wait_for_github_ends_at_once_when_the_controller_stops(fake: FakeGitHub) -> None:
    """GitHub asks for a 10-minute wait; the controller stops a moment later: the wait
    ends then, with Stopped (a time.sleep would hold the thread for ten minutes, and
    pytest-timeout would fail the test)."""
    import threading

    from miyabi.stopping import Stopped, sleeper

    stop = threading.Event()
    gh = GitHub("acme/widgets", "t", "MY_TOKEN", api_url=fake.url, sleep=sleeper(stop))
    fake.faults.append((429, {"retry-after": "600"}))
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(Stopped):
        gh.issues(labels="status:todo")
    assert gh.stats.waited == 600 and stop.is_set()


def test_the_stand_in_lists_issues_since_a_time_as_github_documents(fake: FakeGitHub) -> None:
    """``since``: issues updated at or after the time; ``sort``/``direction``; a ``since``
    that is not a time is 422 (GitHub's "Validation Failed")."""
    t0 = int(fake.clock()) - 1000
    fake.add_issue(1, "old", ["status:todo"], at=t0)
    fake.add_issue(2, "at the time", ["bug"], at=t0 + 60)
    fake.add_issue(3, "after", ["status:todo"], state="closed", at=t0 + 61)
    gh = client(fake)
    since = stamp(datetime.fromtimestamp(t0 + 60, UTC))
    got = gh.issues(state="all", since=since)
    assert got is not None and [i["number"] for i in got.issues] == [3, 2]  # at or after, newest first
    assert got.newest == stamp(datetime.fromtimestamp(t0 + 61, UTC))
    assert [i["number"] for i in (gh.issues(state="open", since=since) or Listing([], None, None, 0)).issues] == [2]
    asc = gh.http.get("/repos/acme/widgets/issues", params={"state": "all", "sort": "created", "direction": "asc"})
    assert [i["number"] for i in asc.json()] == [1, 2, 3]
    assert gh.http.get("/repos/acme/widgets/issues", params={"since": "yesterday"}).status_code == 422
    fake.edit(1, title="edited")  # any change moves updated_at to now
    again = gh.issues(state="all", since=since)
    assert again is not None and [i["number"] for i in again.issues] == [1, 3, 2]


def test_a_network_failure_is_one_line_with_the_url_and_the_reason() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gh = GitHub("acme/widgets", "t", "MY_TOKEN", api_url=f"http://127.0.0.1:{port}", sleep=lambda s: None)
    with pytest.raises(GitHubError) as info:
        gh.issues(labels="status:todo")
    said = str(info.value)
    assert f"http://127.0.0.1:{port}/repos/acme/widgets/issues" in said and "Connection refused" in said
    assert "\n" not in said and "?" not in said  # the URL without its query


def test_a_listing_whose_issues_were_not_handled_leaves_no_etag(fake: FakeGitHub) -> None:
    """A sync that fails part way discards what it fetched: a later commit does not keep
    that listing's ETag, so the same listing is never answered 304 unhandled."""
    fake.add_issue(1, "x", ["status:todo"])
    gh = client(fake)
    assert gh.issues(labels="status:todo", key="todo") is not None
    gh.discard()
    gh.commit()
    assert gh.issues(labels="status:todo", key="todo") is not None and gh.stats.statuses.get(304, 0) == 0
