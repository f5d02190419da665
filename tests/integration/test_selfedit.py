"""Merges behind a person (``approve: required``) and miyabi editing itself (``self:``),
end to end: a real tmux server, real git, the scripted agent (tests/scripted_agent.py),
and, for the self pool, a controller that runs from a scratch clone of this repository."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for, write_layout
from integration.conftest import Cli
from integration.test_pipeline import AGENT, CHECK, CONVENTION, git, heard, make_repo, plan, task_state
from integration.webkit import browse, serve, stop

from miyabi.events import read_events
from miyabi.work.store import Store


def coder(repo: Path, plan_file: Path, log: Path, **extra: Any) -> dict[str, Any]:
    """A pool ``coder`` of scripted agents on ``repo`` following ``plan_file``."""
    return {
        "name": "coder",
        "profile": "worker",
        "command": f"{sys.executable} {AGENT}",
        "repo": str(repo),
        "max": 1,
        "submit_delay": 0.05,
        "ready_settle": 0.05,
        "env": {"PLAN": str(plan_file), "PLAN_LOG": str(log)},
        **extra,
    }


def history(home: Path, task: int) -> list[str]:
    return [str(h["reason"]) for h in Store.of_home(home).history(task)]


def events(home: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_events(home) if e.get("event") == kind]


def approving(tmp_path: Path, session: str, rounds: list[Any]) -> tuple[Path, Path, Path]:
    """A repository, and a layout whose pool (``approve: required``) works on it
    following ``rounds``: (the repository, the agent's log, the layout)."""
    _, repo = make_repo(tmp_path, {"check.sh": CHECK, ".miyabi.yml": CONVENTION, "feature.txt": "broken\n"})
    p, log = plan(tmp_path, rounds)
    lay = write_layout(
        tmp_path / "l.yaml",
        [("lead", "shell", "cat")],
        session=session,
        pools=[coder(repo, p, log, approve="required")],
        routes=[{"default": True, "agent": "coder"}],
    )
    return repo, log, lay


def merge_waits(cli: Cli, home: Path) -> None:
    """Add task 1; return once its checked merge waits for a person."""
    assert cli("task", "add", "Fix feature").exit_code == 0
    wait_for(lambda: events(home, "approval-needed"), timeout=60, what="the merge waiting for approval")


FIX = [[{"write": "feature.txt", "text": "fixed\n"}, {"commit": "fix"}, {"done": "fixed"}]]


def test_a_merge_of_a_pool_with_approve_required_waits_until_approved(cli: Cli, home: Path, tmp_path: Path) -> None:
    repo, _, lay = approving(tmp_path, "approve", FIX)
    before = git(repo, "rev-parse", "main")
    assert cli("up", str(lay), "-d").exit_code == 0
    merge_waits(cli, home)
    # it waits: verifying, said so in its history, the base branch where it was
    assert task_state(home, 1) == "verifying"
    assert any(r.startswith("waiting for approval") for r in history(home, 1))
    assert git(repo, "rev-parse", "main") == before and (repo / "feature.txt").read_text() == "broken\n"
    listed = cli("approve-merge", "--list", "--json")
    assert listed.exit_code == 0 and '"task": 1' in listed.stdout and "passed" in listed.stdout
    # a task that does not wait: one line, exit 1
    assert cli("task", "add", "Other").exit_code == 0
    refused = cli("approve-merge", "2")
    assert refused.exit_code == 1 and "task 2 is not waiting for approval" in refused.output
    assert cli("approve-merge", "1").exit_code == 0
    wait_for(lambda: task_state(home, 1) == "done", timeout=60, what="the approved merge landed")
    assert (repo / "feature.txt").read_text() == "fixed\n"
    assert "Merge miyabi/1-fix-feature" in git(repo, "log", "-1", "--format=%s", "main")
    assert events(home, "merge-approved")[0]["task"] == 1
    again = cli("approve-merge", "1")
    assert again.exit_code == 1 and "not waiting for approval" in again.output


def test_a_rejected_merge_goes_back_to_its_agent_as_a_failed_round(cli: Cli, home: Path, tmp_path: Path) -> None:
    rounds = [
        *FIX,
        [{"write": "feature.txt", "text": "fixed\nwith a test\n"}, {"commit": "test"}, {"done": "tested"}],
    ]
    repo, log, lay = approving(tmp_path, "reject", rounds)
    assert cli("up", str(lay), "-d").exit_code == 0
    merge_waits(cli, home)
    usage = cli("approve-merge", "1", "--reason", "why")
    assert usage.exit_code == 2 and "--reason goes with --reject" in usage.output
    assert cli("approve-merge", "1", "--reject", "--reason", "it needs a test").exit_code == 0
    told = wait_for(lambda: [m for m in heard(log) if "rejected the merge" in m["text"]], timeout=60, what="feedback")
    assert "it needs a test" in told[0]["text"] and "round 1 of 3" in told[0]["text"]
    named = Path(told[0]["text"].rsplit("Full log: ", 1)[1].strip())
    assert named.name == "1-1-rejected.log" and "it needs a test" in named.read_text()  # the log the message names
    assert "sh check.sh" in (home / "logs" / "verify" / "1-1.log").read_text()  # the checks' log is kept
    # the second round's commit waits anew, and lands once approved
    wait_for(lambda: len(events(home, "approval-needed")) == 2, timeout=60, what="the new commit waiting")
    assert git(repo, "show", "main:feature.txt") == "broken"
    assert cli("approve-merge", "1").exit_code == 0
    wait_for(lambda: task_state(home, 1) == "done", timeout=60, what="the approved merge landed")
    assert (repo / "feature.txt").read_text() == "fixed\nwith a test\n"


BREAK = (
    'printf \'\\n\\ndef _broken(self, lock=None):\\n    raise SystemExit("broken on purpose")\\n\\n\\n'
    "Controller.run = _broken\\n' >> miyabi/controller/core.py"
)
"""A change that passes the self pool's checks (miyabi still imports) but makes the
controller exit at its start: the probe fails."""


def scratch_copy(tmp: Path) -> Path:
    """A scratch repository holding the miyabi package under test (its files as they are
    now) on ``main``, with checks small enough for a test."""
    import shutil

    import miyabi

    repo = tmp / "miyabi-self"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    shutil.copytree(Path(miyabi.__file__).parent, repo / "miyabi", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".gitignore").write_text("__pycache__/\n")
    (repo / ".miyabi.yml").write_text(
        f"test: [\"{sys.executable} -c 'import miyabi'\"]\nbase_branch: main\nmax_rounds: 1\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "miyabi as it is")
    return repo


def code(cli: Cli) -> dict[str, Any]:
    import json

    out = cli("status", "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)["controller"]["code"] or {}


def test_a_self_edit_upgrades_the_controller_and_one_failing_the_probe_is_rolled_back(
    cli: Cli, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = scratch_copy(tmp_path)
    first = git(repo, "rev-parse", "main")
    monkeypatch.setenv("PYTHONPATH", str(repo))  # the controller runs the scratch copy's code
    p, log = plan(
        tmp_path,
        {
            "coder-1": {"rounds": [[{"write": "NOTES.md", "text": "a note\n"}, {"commit": "note"}, {"done": "1"}]]},
            "coder-2": {"rounds": [[{"run": BREAK}, {"commit": "break"}, {"done": "2"}]]},
        },
    )
    lay = write_layout(
        tmp_path / "l.yaml",
        [("lead", "shell", "cat")],
        session="self",
        pools=[coder(repo, p, log)],
        routes=[{"default": True, "agent": "coder"}],
        self={"pool": "coder"},
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    started = wait_for(lambda: code(cli), timeout=30, what="the controller's code recorded")
    assert started == {"pid": started["pid"], "path": str(repo / "miyabi"), "checkout": str(repo), "commit": first}
    old_pid = started["pid"]
    # a change that passes its checks and the probe: the running controller's code is the new commit
    assert cli("task", "add", "Add a note").exit_code == 0
    (up,) = wait_for(lambda: events(home, "self-upgraded"), timeout=120, what="the upgrade probed")
    (asked,) = events(home, "self-upgrade")
    assert asked["task"] == 1 and asked["restart"] is True and asked["time"].endswith("Z")  # RFC 3339, as every event
    second = git(repo, "rev-parse", "main")
    assert second != first and up["after"] == second and up["before"] == first
    assert (repo / "NOTES.md").read_text() == "a note\n"
    now = code(cli)
    assert now["commit"] == second and now["pid"] != old_pid and "supervised and delivering: " in up["evidence"]
    # one that passes its checks but fails the probe: rolled back, the old code runs, a fix task exists
    assert cli("task", "add", "Break it").exit_code == 0
    (back,) = wait_for(lambda: events(home, "self-rolled-back"), timeout=120, what="the upgrade rolled back")
    assert back["before"] == second and back["after"] != second and back["moved_back"] is True
    assert "ended (exit status 1)" in back["evidence"]
    assert git(repo, "rev-parse", "main") == second and "broken" not in (repo / "miyabi/controller/core.py").read_text()
    wait_for(lambda: code(cli).get("commit") == second, timeout=60, what="the old code running again")
    fixes = [t for t in Store.of_home(home).query() if t.title.startswith("Fix: miyabi's upgrade")]
    assert len(fixes) == 1 and "broken on purpose" in fixes[0].body and back["after"][:12] in fixes[0].title
    assert task_state(home, 2) == "done"  # its work landed, checked; the probe is what refused it


def test_the_approvals_page_shows_a_waiting_merge_s_diff_and_checks_and_approves_it(
    cli: Cli, home: Path, socket: str, tmp_path: Path
) -> None:
    repo, _, lay = approving(tmp_path, "pages", FIX)
    w = serve(cli, home, socket, lay, tmp_path / "answers.txt")
    try:
        merge_waits(cli, home)
        with w.client() as c:
            (merge,) = c.get("/api/v1/merges").json()
            assert merge["task"] == 1 and merge["state"] == "waiting" and merge["base"] == "main"
            assert "-broken\n+fixed" in merge["diff"] and any("sh check.sh" in r for r in merge["results"])
            assert any("task #1 round 1" in text for text in merge["checks"].values())
            assert any("merged into main" in text for text in merge["checks"].values())
        with browse(w) as b:
            page = b.get("/approvals").text
            assert "task 1</a>: miyabi/1-fix-feature into main" in page and "+fixed" in page
            assert 'data-post="/merges/1/approve"' in page
        with w.client() as c:
            r = c.post("/api/v1/merges/2/approve")
            assert r.status_code in (404, 409) and "2" in r.json()["error"]
            assert c.post("/api/v1/merges/1/approve").status_code == 200
        wait_for(lambda: task_state(home, 1) == "done", timeout=60, what="the approved merge landed")
        assert (repo / "feature.txt").read_text() == "fixed\n"
        assert events(home, "merge-approved")[0]["by"].startswith("web:")
        with w.client() as c:
            assert c.get("/api/v1/merges").json() == []
    finally:
        stop(w.proc)
