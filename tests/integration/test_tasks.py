"""Local tasks routed by the controller to real worker agents."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from helpers import brought_up, wait_for, write_layout
from integration.conftest import Cli
from integration.test_delivery import transcript

from miyabi.controller import running_pid
from miyabi.events import read_events
from miyabi.home import Home
from miyabi.work.store import Store

HELD = {"profile": "worker", "command": "miyabi worker --hold-tasks", "submit_delay": 0.05, "ready_settle": 0.05}


def layout(path: Path, **sections: object) -> Path:
    """kaede and sakura, workers that hold their tasks, and routes: bugs to kaede, reviews and
    the rest to sakura."""
    return write_layout(
        path,
        [{"name": "kaede", **HELD}, {"name": "sakura", **HELD}],
        session="tasks",
        routes=[
            {"label": "bug", "agent": "kaede"},
            {"title": "(?i)review", "agent": "sakura"},
            {"default": True, "agent": "sakura"},
        ],
        **sections,
    )


def state(home: Path, tid: int) -> str:
    return Store.of_home(home).get(tid).state


def test_tasks_are_routed_held_by_the_wip_limit_and_never_assigned_twice(cli: Cli, home: Path, tmp_path: Path) -> None:
    lay = layout(tmp_path / "l.yaml")
    assert cli("up", str(lay), "-d").exit_code == 0
    assert cli("task", "add", "Crash on start", "--label", "bug").exit_code == 0
    assert cli("task", "add", "Another bug", "--label", "bug").exit_code == 0
    assert cli("task", "add", "Review the PR").exit_code == 0
    wait_for(
        lambda: state(home, 1) == "in_progress" and state(home, 3) == "in_progress", what="tasks 1 and 3 delivered"
    )
    assert state(home, 2) == "queued"  # kaede's WIP limit is 1
    assert transcript(home, "kaede")[0].startswith("Task #1: Crash on start")
    assert transcript(home, "sakura")[0].startswith("Task #3: Review the PR")
    # a restarted controller assigns nothing twice
    pid = running_pid(Home(home))
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: running_pid(Home(home)) not in (None, pid), what="a new controller (from the keep-alive)")
    assert cli("up", str(lay), "-d").exit_code == 0
    assert cli("task", "done", "1", "--note", "fixed it").exit_code == 0
    wait_for(lambda: state(home, 2) == "in_progress", what="task 2 after task 1 is done")
    assert [t.split(":")[0] for t in transcript(home, "kaede")] == ["Task #1", "Task #2"]
    assert len(transcript(home, "sakura")) == 1
    r = cli("task", "cancel", "3")
    assert r.exit_code == 0
    wait_for(lambda: len(transcript(home, "sakura")) == 2, what="sakura told about the cancel")
    assert "was cancelled" in transcript(home, "sakura")[1]
    data = json.loads(cli("task", "ls", "--json").output)
    assert [(t["id"], t["state"], t["agent"], t["ref"]) for t in data] == [
        (1, "done", "kaede", "#1"),
        (2, "in_progress", "kaede", "#2"),
        (3, "cancelled", "sakura", "#3"),
    ]


def test_jobs_a_passing_and_a_failing_one_with_their_reports(cli: Cli, home: Path, tmp_path: Path) -> None:
    lay = layout(tmp_path / "l.yaml")
    assert cli("up", str(lay), "-d").exit_code == 0
    work = tmp_path / "work"
    work.mkdir()
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "id": "build-1",
                "kind": "run_shell",
                "workdir": str(work),
                "script": ["echo hello > out.txt", "cat out.txt"],
                "dod": "exit_code == 0",
                "report_path": "reports/good.json",
            }
        )
    )
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "id": "build-2",
                "kind": "run_shell",
                "workdir": str(work),
                "script": ["true", "exit 3", "echo never"],
                "dod": "exit_code == 0",
                "report_path": "reports/bad.json",
            }
        )
    )
    r = cli("job", "submit", str(good), "--json")
    assert r.exit_code == 0, r.output
    good_id = json.loads(r.output)["task"]
    bad_id = json.loads(cli("job", "submit", str(bad), "--json").output)["task"]
    wait_for(lambda: state(home, good_id) == "done", timeout=20, what="the passing job done")
    wait_for(lambda: state(home, bad_id) == "failed", timeout=20, what="the failing job failed")
    g = json.loads((work / "reports" / "good.json").read_text())
    assert g["passed"] and [c["exit_code"] for c in g["commands"]] == [0, 0] and g["commands"][1]["output"] == "hello\n"
    b = json.loads((work / "reports" / "bad.json").read_text())
    assert not b["passed"] and [c["exit_code"] for c in b["commands"]] == [0, 3]  # stopped at the failure
    assert "exited 3" in Store.of_home(home).history(bad_id)[-1]["reason"]
    # only what the controller assigned runs: typing "/job N" for a finished job does nothing
    assert all(t.startswith("/job ") for t in transcript(home, "kaede"))


def test_a_bad_job_file_is_one_clear_line(cli: Cli, home: Path, tmp_path: Path) -> None:
    brought_up(home)
    lay = layout(tmp_path / "l.yaml")
    f = tmp_path / "j.json"
    f.write_text(
        json.dumps(
            {"id": "x", "kind": "run_shell", "workdir": ".", "script": [], "dod": "exit_code == 0", "report_path": "r"}
        )
    )
    r = cli("job", "submit", str(f), "--layout", str(lay))
    assert (
        r.exit_code == 1
        and r.output == f'miyabi: {f}: script: must be a non-empty list of commands (text), such as ["make test"]\n'
    )


def test_up_with_a_github_layout_routes_issues_to_agents(cli: Cli, home: Path, tmp_path: Path, monkeypatch) -> None:
    from fakegithub import FakeGitHub

    with FakeGitHub() as fake:
        fake.add_issue(7, "Crash when saving", ["status:todo", "bug"], body="stack trace here")
        fake.add_issue(8, "Review the API", ["status:todo"])
        lay = layout(tmp_path / "l.yaml", github=fake.section(poll_interval=1))
        monkeypatch.setenv("FAKE_GH_TOKEN", "t")
        assert cli("up", str(lay), "-d").exit_code == 0
        wait_for(
            lambda: transcript(home, "kaede") and transcript(home, "sakura"), timeout=20, what="both issues delivered"
        )
        assert transcript(home, "kaede")[0].startswith("Task acme/widgets#7: Crash when saving\n\nstack trace here")
        assert transcript(home, "sakura")[0].startswith("Task acme/widgets#8: Review the API")
        assert fake.labels(7) == ["bug", "status:in-progress", "assigned:kaede"]
        assert cli("task", "done", "acme/widgets#7", "--note", "fixed").exit_code == 0
        wait_for(lambda: "status:done" in fake.labels(7), timeout=10, what="status:done on the issue")
        # the comment follows the labels: wait for it too
        wait_for(lambda: len(fake.comments[7]) >= 2, timeout=10, what="the done comment")
        assert (
            fake.comments[7][0].startswith("assigned to kaede by miyabi [")
            and fake.comments[7][1] == "done (kaede): fixed"
        )


def test_the_controller_stops_at_once_while_github_asks_it_to_wait(
    cli: Cli, home: Path, tmp_path: Path, monkeypatch
) -> None:
    from fakegithub import FakeGitHub

    from miyabi.events import read_events

    with FakeGitHub() as fake:
        fake.faults.extend([(429, {"retry-after": "600"})] * 50)  # every poll is told to wait ten minutes
        lay = layout(tmp_path / "l.yaml", github=fake.section(poll_interval=1))
        monkeypatch.setenv("FAKE_GH_TOKEN", "t")
        assert cli("up", str(lay), "-d").exit_code == 0
        wait_for(lambda: fake.requests, what="the first poll (now waiting)")
        assert cli("down").exit_code == 0
    stops = [e for e in read_events(home) if e["event"] == "controller-stop"]
    assert len(stops) == 1 and stops[0]["threads_left"] == []  # every thread, the github one included, ended


def test_the_controller_stops_cleanly_while_a_claim_waits_for_github(
    cli: Cli, home: Path, tmp_path: Path, monkeypatch
) -> None:
    """The claim runs on the controller's main thread: a stop during its wait ends the
    wait there too, and the controller still shuts down in order."""
    from fakegithub import FakeGitHub

    from miyabi.events import read_events

    with FakeGitHub() as fake:
        fake.add_issue(7, "Crash", ["status:todo", "bug"])
        fake.delete_faults.extend([(429, {"retry-after": "600"})] * 5)  # the claim is told to wait ten minutes
        lay = layout(tmp_path / "l.yaml", github=fake.section(poll_interval=1))
        monkeypatch.setenv("FAKE_GH_TOKEN", "t")
        assert cli("up", str(lay), "-d").exit_code == 0
        wait_for(lambda: any(method == "DELETE" for method, _ in fake.requests), what="the claim (now waiting)")
        assert cli("down").exit_code == 0
    stops = [e for e in read_events(home) if e["event"] == "controller-stop"]
    assert len(stops) == 1 and stops[0]["threads_left"] == []
    assert "Traceback" not in (home / "logs" / "controller.log").read_text()


def test_the_default_ensemble_takes_a_task_to_done_and_logs_every_message_it_sends(cli: Cli, home: Path) -> None:
    """`miyabi up` with no layout (the shipped default: four workers), then `task add`:
    done with no other step. Every message delivered, the task's included, was logged
    `enqueued` first, so the report counts each delivery."""
    r = cli("up", "-d")
    assert r.exit_code == 0 and "default.yaml" in r.output, r.output
    r = cli("task", "add", "x")
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    wait_for(lambda: state(home, 1) == "done", timeout=30, what="task 1 done")
    assert cli("send", "sakura", "hello").exit_code == 0
    wait_for(lambda: transcript(home, "sakura") == ["hello"], timeout=30, what="sakura's message")

    def sakura_delivered() -> list[dict[str, Any]]:
        """The event log, once it says sakura's message was delivered (the deliverer
        writes that after the message reached the pane, so after the transcript)."""
        events = list(read_events(home))
        return events if any(e["event"] == "delivered" and e.get("agent") == "sakura" for e in events) else []

    events = wait_for(sakura_delivered, timeout=30, what="the delivered event of sakura's message")
    delivered = [e for e in events if e["event"] == "delivered"]
    enqueued = {e["id"]: e for e in events if e["event"] == "enqueued"}
    assert len(delivered) >= 2 and all(e["id"] in enqueued for e in delivered), (delivered, enqueued)
    assert any(e.get("task") == "1" for e in enqueued.values())
    report = json.loads(cli("report", "--json").output)
    per_agent = {a["agent"]: a["delivery"]["n"] for a in report["agents"]}
    assert per_agent["kaede"] == len([e for e in delivered if e["agent"] == "kaede"])
    assert per_agent["sakura"] == 1
