"""Merges behind a person (``approve: required``) and miyabi editing itself (``self:``),
end to end: a real tmux server, real git, the scripted agent (tests/scripted_agent.py),
and, for the self pool, a controller that runs from a scratch clone of this repository."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from helpers import wait_for, write_layout
from integration.conftest import Cli
from integration.test_pipeline import AGENT, CHECK, CONVENTION, git, heard, make_repo, plan, task_state

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


def test_a_merge_of_a_pool_with_approve_required_waits_until_approved(cli: Cli, home: Path, tmp_path: Path) -> None:
    _, repo = make_repo(tmp_path, {"check.sh": CHECK, ".miyabi.yml": CONVENTION, "feature.txt": "broken\n"})
    before = git(repo, "rev-parse", "main")
    p, log = plan(tmp_path, [[{"write": "feature.txt", "text": "fixed\n"}, {"commit": "fix"}, {"done": "fixed"}]])
    lay = write_layout(
        tmp_path / "l.yaml",
        [("lead", "shell", "cat")],
        session="approve",
        pools=[coder(repo, p, log, approve="required")],
        routes=[{"default": True, "agent": "coder"}],
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    assert cli("task", "add", "Fix feature").exit_code == 0
    wait_for(lambda: events(home, "approval-needed"), timeout=60, what="the merge waiting for approval")
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
    _, repo = make_repo(tmp_path, {"check.sh": CHECK, ".miyabi.yml": CONVENTION, "feature.txt": "broken\n"})
    p, log = plan(
        tmp_path,
        [
            [{"write": "feature.txt", "text": "fixed\n"}, {"commit": "fix"}, {"done": "fixed"}],
            [{"write": "feature.txt", "text": "fixed\nwith a test\n"}, {"commit": "test"}, {"done": "tested"}],
        ],
    )
    lay = write_layout(
        tmp_path / "l.yaml",
        [("lead", "shell", "cat")],
        session="reject",
        pools=[coder(repo, p, log, approve="required")],
        routes=[{"default": True, "agent": "coder"}],
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    assert cli("task", "add", "Fix feature").exit_code == 0
    wait_for(lambda: events(home, "approval-needed"), timeout=60, what="the merge waiting for approval")
    usage = cli("approve-merge", "1", "--reason", "why")
    assert usage.exit_code == 2 and "--reason goes with --reject" in usage.output
    assert cli("approve-merge", "1", "--reject", "--reason", "it needs a test").exit_code == 0
    told = wait_for(lambda: [m for m in heard(log) if "rejected the merge" in m["text"]], timeout=60, what="feedback")
    assert "it needs a test" in told[0]["text"] and "round 1 of 3" in told[0]["text"]
    # the second round's commit waits anew, and lands once approved
    wait_for(lambda: len(events(home, "approval-needed")) == 2, timeout=60, what="the new commit waiting")
    assert git(repo, "show", "main:feature.txt") == "broken"
    assert cli("approve-merge", "1").exit_code == 0
    wait_for(lambda: task_state(home, 1) == "done", timeout=60, what="the approved merge landed")
    assert (repo / "feature.txt").read_text() == "fixed\nwith a test\n"
