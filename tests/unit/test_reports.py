"""KPI reports: figures computed from a recorded event log (tests/fixtures/events_report.jsonl)
and a task store driven through a fake clock, with known answers; their Markdown, HTML and
charts; the posting schedule; ``miyabi report``."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakegithub import FakeGitHub
from helpers import FIXTURES, write_layout
from typer.testing import CliRunner

from miyabi import defaults
from miyabi.cli import app
from miyabi.config import load
from miyabi.config.settings import GitHubSettings, ReportSettings
from miyabi.events import read_events
from miyabi.reports import (
    CHARTS,
    Posted,
    Report,
    ReportError,
    ReportSchedule,
    Spread,
    build,
    chart_svg,
    compute,
    next_due,
    percentile,
    post_if_due,
    reason_label,
    run_schedule,
    to_html,
    to_markdown,
)
from miyabi.reports.post import fit
from miyabi.reports.render import md_code, seconds_text, window_text
from miyabi.stopping import Stopped
from miyabi.times import parse_rfc3339, rfc3339
from miyabi.work.github import GitHub, client_for
from miyabi.work.model import Source, TaskState
from miyabi.work.store import Store

S = parse_rfc3339("2026-01-01T12:00:00Z")
"""The recorded window starts here (Unix 1767268800) and lasts a day."""
DAY = 86400.0
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("in_empty_dir")


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub() as f:
        yield f


def recorded_home(root: Path) -> Path:
    """A home with the recorded event log and a task store whose history has known times
    (seconds from S): A done in the window, B (GitHub issue acme/widgets#3) and F done on
    the second day, C failed on both days, D done before the window, E (acme/widgets#5)
    done after it."""
    (root / "logs").mkdir(parents=True)
    shutil.copy(FIXTURES / "events_report.jsonl", root / "logs" / "events.jsonl")
    now = [S]
    store = Store(root / "state" / "miyabi.db", clock=lambda: now[0])

    def task(created: float, steps: list[tuple[float, TaskState]], **kw: object) -> None:
        now[0] = S + created
        tid = store.add(f"task created at {created:g}", **kw).id
        for t, state in steps:
            now[0] = S + t
            store.set_state(tid, state, "test", agent="kaede" if state == TaskState.ASSIGNED else None)

    def through(done_at: float, start: float, end: TaskState = TaskState.DONE) -> list[tuple[float, TaskState]]:
        return [(start, TaskState.ASSIGNED), (start + 100, TaskState.IN_PROGRESS), (done_at, end)]

    task(-7200, through(3600, -7000))  # A
    task(1000, through(50000, 1100), source=Source.GITHUB, repo="acme/widgets", number=3)  # B
    task(
        2000,
        [*through(5000, 2100, TaskState.FAILED), (6000, TaskState.QUEUED), *through(50000, 6100, TaskState.FAILED)],
    )  # C
    task(-90000, through(-100, -89000))  # D
    task(60000, through(90000, 61000), source=Source.GITHUB, repo="acme/widgets", number=5)  # E
    task(1000, through(70000, 1100))  # F
    store.close()
    return root


# ---------------------------------------------------------------- the figures


def test_percentiles_are_nearest_rank_and_reasons_have_fixed_labels() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0  # rank ceil(2) = 2
    assert percentile([1.0, 2.0, 5.0, 10.5, 120.0], 50) == 5.0  # rank ceil(2.5) = 3
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([float(i) for i in range(1, 11)], 99) == 10.0
    assert reason_label("killed by signal 9 after 3.0 s; restarting at once") == "signal"
    assert reason_label("exit status 1 after 0.5 s (under min_uptime 10 s); restarting in 1 s") == "exit"
    assert reason_label("exited after 12.0 s; restarting at once") == "exit"
    assert reason_label("hung: silent 720 s and 120 s after the nudge, no CPU use") == "hung"
    assert reason_label("restarted by `miyabi restart`") == "requested"
    assert reason_label(None) == "other" and reason_label("something new") == "other"


def test_the_recorded_log_and_store_give_known_answers(tmp_path: Path) -> None:
    r = build(recorded_home(tmp_path), S, S + DAY)
    assert (r.since, r.until, r.seconds) == (S, S + DAY, DAY)
    by = {a.agent: a for a in r.agents}
    # tsubaki's last word came before the window and the layout is not known: not reported.
    assert sorted(by) == ["coder-7", "kaede", "sakura"]

    # no controller ran from 04:40:00 to 04:56:40: 1,000 s nobody observed
    seen = DAY - 1000
    kaede = by["kaede"]
    # down 10 s (exit status 1) and 30 s (hung, killed and restarted); stale states of the
    # dead processes (pid 100 after its death, 101 after the hung kill) change nothing
    assert (kaede.observed, kaede.up) == (seen, seen - 40)
    assert kaede.availability == (seen - 40) / seen
    # busy 13:00-14:00, waiting-approval then busy 17:33:20-18:33:20, busy 23:06:40-00:00
    assert kaede.working == 3600 + 3600 + 3200
    assert kaede.utilization == 10400 / seen
    assert (kaede.restarts, kaede.gave_up) == (3, 0)  # exit, hung, and `miyabi restart` (no downtime)
    assert kaede.mttr == Spread(2, 10.0, 30.0)
    # m1 enqueued before the window, delivered in it (120 s); m2 10.5 s; m4 delivered after the window
    assert kaede.delivery == Spread(2, 10.5, 120.0)

    sakura = by["sakura"]
    # down from 11:50 (before the window) to its restart at 12:10: 600 s of the window;
    # given up on at 04:33:20 and back (a new pid) at 07:20: 10,000 s, less the 1,000 s
    # without a controller
    assert (sakura.observed, sakura.up) == (seen, seen - 600 - 9000)
    assert (sakura.restarts, sakura.gave_up) == (1, 1)
    assert sakura.mttr == Spread(1, 1200.0, 1200.0)
    assert sakura.working == 2000  # its death ends the second busy stretch
    assert sakura.delivery == Spread(2, 2.0, 5.0)  # m5 counted from its retry, m3

    coder = by["coder-7"]  # a pool instance: from instance-ready to instance-ended
    assert (coder.observed, coder.up, coder.working) == (2000, 2000, 1000)
    assert (coder.availability, coder.utilization) == (1.0, 0.5)
    assert coder.delivery == Spread(1, 1.0, 1.0)

    assert r.availability == (seen - 40 + seen - 9600 + 2000) / (2 * seen + 2000)
    assert r.utilization == (10400 + 2000 + 1000) / (2 * seen + 2000)
    assert dict(r.restarts) == {"signal": 1, "exit": 1, "hung": 1, "requested": 1, "other": 0}
    assert r.mttr == Spread(3, 30.0, 1200.0)
    assert r.delivery == Spread(5, 5.0, 120.0)
    assert r.pull_requests_opened == 1

    assert [(d.day, d.done, d.failed) for d in r.days] == [("2026-01-01", 1, 1), ("2026-01-02", 2, 1)]
    assert (r.done, r.failed) == (3, 1)
    assert r.cycle_time == Spread(3, 49000.0, 69000.0)  # A 10,800 s, B 49,000 s, F 69,000 s
    assert r.issues_closed == ("acme/widgets#3",)


def test_the_layouts_agents_are_reported_even_when_idle(tmp_path: Path) -> None:
    events = list(read_events(recorded_home(tmp_path)))
    r = compute(events, [], S, S + DAY, agents=["tsubaki", "nobody"])
    tsubaki = next(a for a in r.agents if a.agent == "tsubaki")
    assert (tsubaki.observed, tsubaki.availability, tsubaki.utilization) == (DAY - 1000, 1.0, 0.0)
    assert "nobody" not in [a.agent for a in r.agents]  # never seen: nothing known of it


def test_time_without_a_controller_or_after_an_instance_ended_is_not_observed() -> None:
    def ev(at: float, kind: str, **fields: object) -> dict[str, object]:
        return {"time": rfc3339(S + at), "event": kind, **fields}

    events = [
        ev(-100, "state", agent="kaede", state="busy", pid=1),
        ev(100, "instance-ready", agent="coder-1"),
        ev(200, "state", agent="coder-1", state="busy", pid=5),
        ev(300, "instance-ended", agent="coder-1"),
        ev(310, "agent-died", agent="coder-1", pid=5, cause="killed by signal 15"),  # its pane closed: not downtime
        ev(1000, "controller-stop", pid=9),  # `miyabi down`: nothing runs, nobody watches, until the window ends
    ]
    r = compute(events, [], S, S + 3600, agents=["kaede"])
    by = {a.agent: a for a in r.agents}
    assert (by["kaede"].observed, by["kaede"].availability, by["kaede"].working) == (1000.0, 1.0, 1000.0)
    assert (by["coder-1"].observed, by["coder-1"].availability, by["coder-1"].working) == (200.0, 1.0, 100.0)


def test_stories_done_and_the_time_from_story_to_deployed() -> None:
    def ev(at: float, kind: str, **fields: object) -> dict[str, object]:
        return {"time": rfc3339(S + at), "event": kind, **fields}

    events = [
        ev(-50, "story-deployed", story=1, seconds=40.0),  # before the window: not this window's figure
        ev(-10, "story-done", story=1),
        ev(100, "story-deployed", story=2, seconds=90.0),
        ev(150, "story-failed", story=2, round=1, of=3, final=False),
        ev(300, "story-deployed", story=2, seconds=290.0),  # a later round's deploy: the first one counts
        ev(310, "story-done", story=2),
        ev(400, "story-deployed", story=3, seconds=30.0),
        ev(4000, "story-done", story=3),  # after the window
    ]
    r = compute(events, [], S, S + 3600)
    assert (r.stories_done, r.story_to_deployed.n, r.story_to_deployed.p50) == (1, 2, 30.0)
    assert r.to_json()["stories"] == {"done": 1, "to_deployed": r.story_to_deployed.to_json()}
    assert "| stories done | 1 |" in to_markdown(r) and "median story to deployed" in to_markdown(r)


def test_order_of_lines_does_not_matter(tmp_path: Path) -> None:
    events = list(read_events(recorded_home(tmp_path)))
    assert compute(events, [], S, S + DAY) == compute(list(reversed(events)), [], S, S + DAY)


def test_an_empty_window_has_no_figures_and_says_so() -> None:
    r = compute([], [], S, S + 3600)
    assert r.agents == () and r.availability is None and r.utilization is None
    assert r.mttr == Spread() and r.delivery == Spread() and r.cycle_time == Spread()
    assert [(d.day, d.done, d.failed) for d in r.days] == [("2026-01-01", 0, 0)]
    j = r.to_json()
    assert j["availability"] is None and j["mttr"] == {"n": 0, "p50": None, "p99": None}
    md = to_markdown(r)
    assert "No agent was observed." in md and "| availability | - |" in md and "| median cycle time | - |" in md
    page = to_html(r)
    assert page.count("<svg") == len(CHARTS)
    with pytest.raises(ValueError, match="must end after it starts"):
        compute([], [], S, S)


def test_json_has_rfc3339_times_and_seconds(tmp_path: Path) -> None:
    j = build(recorded_home(tmp_path), S, S + DAY).to_json()
    assert (j["since"], j["until"], j["seconds"]) == ("2026-01-01T12:00:00.000Z", "2026-01-02T12:00:00.000Z", DAY)
    assert set(j) == {
        "since",
        "until",
        "seconds",
        "availability",
        "utilization",
        "agents",
        "restarts",
        "mttr",
        "delivery",
        "tasks",
        "github",
        "stories",
    }
    assert j["tasks"]["per_day"][1] == {"day": "2026-01-02", "done": 2, "failed": 1}
    assert j["github"] == {"issues_closed": ["acme/widgets#3"], "pull_requests_opened": 1}
    json.dumps(j)  # plain JSON through and through


# ---------------------------------------------------------------- rendering

HOSTILE = "<script>alert(1)</script>"


def hostile_report() -> Report:
    events = [
        {"time": rfc3339(S - 10), "event": "state", "agent": HOSTILE, "state": "busy", "pid": 1},
        {"time": rfc3339(S + 10), "event": "state", "agent": "cost $5 $x$ a|b`c", "state": "ready", "pid": 2},
        {"time": rfc3339(S + 20), "event": "agent-died", "agent": HOSTILE, "pid": 1, "cause": "exit status 1"},
        {
            "time": rfc3339(S + 25),
            "event": "restarted",
            "agent": HOSTILE,
            "pid": 3,
            "reason": "exit status 1 after 30 s",
        },
    ]
    return compute(events, [], S, S + 3600)


def test_markdown_shows_names_as_code_and_tables() -> None:
    md = to_markdown(hostile_report())
    assert md.startswith("### miyabi report: 2026-01-01 12:00 UTC → 2026-01-01 13:00 UTC (1h)\n")
    assert "| figure | value |" in md and "| restarts | 1 (exit 1) |" in md
    assert f"| `{HOSTILE}` | 99.86% |" in md
    assert "| ``cost $5 $x$ a\\|b`c`` |" in md
    assert md_code("`x`", in_table=False) == "`` `x` ``"
    assert md_code("a\nb\x1b[31m") == "`a b [31m`"


def test_html_is_self_contained_with_a_chart_each_and_escaped(tmp_path: Path) -> None:
    page = to_html(hostile_report())
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") == len(CHARTS) and page.count("</svg>") == len(CHARTS)
    for name in CHARTS:
        assert f'<figure id="chart-{name}"><svg' in page
    assert HOSTILE not in page and "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert (
        "<?xml" not in page and "<!DOCTYPE svg" not in page and "http://" not in page.replace("http://www.w3.org/", "")
    )  # nothing is fetched
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # charts inline side by side never share an id
    assert "default-src 'none'" in page


def test_each_chart_is_an_svg_element() -> None:
    r = hostile_report()
    for name in CHARTS:
        svg = chart_svg(r, name)
        assert svg.startswith("<svg ") and svg.endswith("</svg>") and f'id="{name}-' in svg
    with pytest.raises(ReportError, match="no chart 'pie'; the charts are availability, restarts"):
        chart_svg(r, "pie")


def test_text_helpers() -> None:
    assert [seconds_text(s) for s in (None, 0.35, 2.5, 185, 7800, 93600)] == [
        "-",
        "350 ms",
        "2.5 s",
        "3m05s",
        "2h10m",
        "1d02h",
    ]
    assert [window_text(s) for s in (DAY, 7 * DAY, 5400, 45)] == ["24h", "7d", "90m", "45s"]
    long = "\n".join(f"| row {i} |" for i in range(1000))
    cut = fit(long, 200)
    assert len(cut) <= 200 and cut.endswith("prints the whole report.*\n") and "| row 1 |\n" in cut
    assert fit("short") == "short"


# ---------------------------------------------------------------- the schedule


def layout_file(root: Path, github_url: str | None, report: str = "{every: 24h, issue: 5}") -> Path:
    """Three agents; with ``github_url``, a ``github:`` section and ``report:`` (YAML text)."""
    sections = {} if github_url is None else {"github": {"repo": "acme/widgets", "api_url": github_url}}
    extra = "" if github_url is None else f"report: {report}\n"
    return write_layout(root / "l.yaml", ["kaede", "sakura", "tsubaki"], session="trio", extra=extra, **sections)


def test_next_due_is_every_after_the_last_post_and_not_before_a_retry() -> None:
    every = ReportSettings(every=100.0, issue=1, since=100.0)
    assert next_due(Posted(started=1000.0), every) == 1100.0
    assert next_due(Posted(started=1000.0, last=1500.0), every) == 1600.0
    assert next_due(Posted(started=1000.0, last=1000.0, retry_at=1700.0), every) == 1700.0


def test_posts_when_due_once_even_across_a_restart_and_retries_a_failure(tmp_path: Path, fake: FakeGitHub) -> None:
    home = recorded_home(tmp_path / "home")
    lay = load(layout_file(tmp_path, fake.url))
    fake.add_issue(5, "KPIs", [])
    clock = [S]
    schedule = ReportSchedule(home, clock=lambda: clock[0])

    assert post_if_due(home, lay, schedule) == DAY  # the schedule starts now: first post in a day
    assert json.loads((home / "run" / "report.json").read_text())["started"] == S
    clock[0] = S + DAY - 1
    assert post_if_due(home, lay, schedule) == 1.0
    assert 5 not in fake.comments
    clock[0] = S + DAY
    assert post_if_due(home, lay, schedule) == DAY
    assert len(fake.comments[5]) == 1
    body = fake.comments[5][0]
    assert body.startswith("### miyabi report: 2026-01-01 12:00 UTC → 2026-01-02 12:00 UTC (24h)")  # the recorded day
    assert "| `kaede` | 99.95% |" in body and "| `tsubaki` | 100.00% |" in body  # the layout's idle agent too
    assert post_if_due(home, lay, schedule) == DAY

    clock[0] = S + DAY + 5  # a restarted controller: a new schedule object, the same record
    assert post_if_due(home, lay, ReportSchedule(home, clock=lambda: clock[0])) == DAY - 5
    assert len(fake.comments[5]) == 1

    clock[0] = S + 2 * DAY
    fake.faults.append((422, {}))
    assert post_if_due(home, lay, schedule) == defaults.REPORT_RETRY
    assert len(fake.comments[5]) == 1
    record = json.loads((home / "run" / "report.json").read_text())
    assert record["last"] == S + DAY and record["retry_at"] == S + 2 * DAY + defaults.REPORT_RETRY
    assert "GitHub refused commenting on #5 (422)" in record["error"]
    clock[0] += defaults.REPORT_RETRY - 1
    assert post_if_due(home, lay, schedule) == 1.0
    clock[0] += 1
    assert post_if_due(home, lay, schedule) == DAY
    assert len(fake.comments[5]) == 2
    kinds = [(e["event"], e.get("issue")) for e in read_events(home) if str(e["event"]).startswith("report-")]
    assert kinds == [("report-posted", 5), ("report-error", 5), ("report-posted", 5)]


def test_a_post_cut_short_by_the_stop_is_not_recorded_as_posted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    lay = load(layout_file(tmp_path, "http://127.0.0.1:9"))
    clock = [S]
    schedule = ReportSchedule(home, clock=lambda: clock[0])
    schedule.save(Posted(started=S - DAY))

    def stopped(settings: GitHubSettings) -> GitHub:
        raise Stopped()

    with pytest.raises(Stopped):
        post_if_due(home, lay, schedule, stopped)
    assert schedule.load() == Posted(started=S - DAY)  # due again for the next controller
    assert [e["event"] for e in read_events(home)] == []


def test_the_controller_thread_posts_what_is_due_and_ends_on_stop(tmp_path: Path, fake: FakeGitHub) -> None:
    home = recorded_home(tmp_path / "home")
    lay = load(layout_file(tmp_path, fake.url, "{every: 2h, issue: 5, since: 7d}"))
    fake.add_issue(5, "KPIs", [])
    now = time.time()
    ReportSchedule(home).save(Posted(started=now - 7201))
    stop = threading.Event()

    def client(settings: GitHubSettings) -> GitHub:
        stop.set()  # the post goes on; the thread ends at its next wait
        return client_for(settings)

    run_schedule(stop, home, lambda: lay, client=client)
    assert len(fake.comments[5]) == 1 and "(7d)" in fake.comments[5][0].splitlines()[0]
    stop.clear()
    bare = load(layout_file(tmp_path / "home", None))
    t = threading.Thread(target=run_schedule, args=(stop, tmp_path / "other", lambda: bare))
    t.start()
    stop.set()
    t.join(timeout=10)
    assert not t.is_alive() and not (tmp_path / "other" / "run").exists()  # no report: section, nothing written


# ---------------------------------------------------------------- miyabi report


def live_home(root: Path) -> Path:
    """A home whose log holds an hour just past: kaede busy for 30 minutes, one message;
    tsubaki seen before that, sakura never."""
    now = time.time()
    lines = [
        {"time": rfc3339(now - 10000), "event": "state", "agent": "tsubaki", "state": "ready", "pid": 2},
        {"time": rfc3339(now - 3600), "event": "state", "agent": "kaede", "state": "ready", "pid": 1},
        {"time": rfc3339(now - 3000), "event": "enqueued", "agent": "kaede", "id": "m1"},
        {"time": rfc3339(now - 2998), "event": "delivered", "agent": "kaede", "id": "m1"},
        {"time": rfc3339(now - 2998), "event": "state", "agent": "kaede", "state": "busy", "pid": 1},
        {"time": rfc3339(now - 1198), "event": "state", "agent": "kaede", "state": "ready", "pid": 1},
    ]
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    return root


def test_report_json_and_html(tmp_path: Path) -> None:
    home = live_home(tmp_path / "home")
    lay = layout_file(tmp_path, None)
    page = tmp_path / "out" / "kpis.html"
    (tmp_path / "out").mkdir()
    r = runner.invoke(
        app, ["report", "--json", "--since", "2h", "--html", str(page), "--home", str(home), "--layout", str(lay)]
    )
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    assert RFC3339.match(j["since"]) and RFC3339.match(j["until"]) and j["seconds"] == 7200.0
    assert parse_rfc3339(j["until"]) - parse_rfc3339(j["since"]) == pytest.approx(7200.0, abs=0.002)
    kaede = next(a for a in j["agents"] if a["agent"] == "kaede")
    assert kaede["utilization"] == pytest.approx(1800 / 3600, abs=0.01) and kaede["delivery"]["p50"] == pytest.approx(
        2.0
    )
    assert [a["agent"] for a in j["agents"]] == ["kaede", "tsubaki"]  # the layout's idle agent too (sakura: never seen)
    assert j["html"] == str(page) and j["posted"] is None
    assert page.read_text().count("<svg") == len(CHARTS)


def test_report_plain_table(tmp_path: Path) -> None:
    home = live_home(tmp_path / "home")
    r = runner.invoke(app, ["report", "--home", str(home), "--layout", str(layout_file(tmp_path, None))])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("miyabi report: ") and "(24h)" in r.output.splitlines()[0]
    assert r.output.splitlines()[1].split() == ["figure", "value"]
    assert re.search(r"^kaede\s+100\.00%\s+(49\.99|50\.00)%\s", r.output, re.MULTILINE) and "\x1b[" not in r.output


def test_report_refuses_a_bad_since_naming_it(tmp_path: Path) -> None:
    for bad in ("yesterday", "0", "-5m"):
        r = runner.invoke(app, ["report", "--since", bad, "--home", str(tmp_path)])
        assert r.exit_code == 2, r.output
        assert r.output == (
            f"miyabi: report: invalid value for '--since': '{bad}' is not a duration; give one such as 90s, 30m, 2h, "
            "7d or a number of seconds; see `miyabi report --help`\n"
        )
    r = runner.invoke(app, ["report", "--post-issue", "0", "--home", str(tmp_path)])
    assert r.exit_code == 2


def test_report_posts_to_an_issue(tmp_path: Path, fake: FakeGitHub) -> None:
    home = live_home(tmp_path / "home")
    fake.add_issue(7, "KPIs", [])
    lay = layout_file(tmp_path, fake.url)
    r = runner.invoke(app, ["report", "--post-issue", "7", "--since", "1h", "--home", str(home), "--layout", str(lay)])
    assert r.exit_code == 0, r.output
    assert "posted the report to acme/widgets#7" in r.output
    (body,) = fake.comments[7]
    assert body.startswith("### miyabi report: ") and "(1h)" in body.splitlines()[0] and "| `kaede` |" in body
    assert ("POST", "/repos/acme/widgets/issues/7/comments") in fake.requests


def test_report_post_needs_a_github_section(tmp_path: Path) -> None:
    lay = layout_file(tmp_path, None)
    r = runner.invoke(app, ["report", "--post-issue", "7", "--home", str(tmp_path), "--layout", str(lay)])
    assert r.exit_code == 1
    assert r.output.strip() == (
        f"miyabi: {lay.resolve()} has no github: section to post the report through; "
        "add `github: {repo: owner/name}` to it"
    )
