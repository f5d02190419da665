"""Agents in a sandbox (layout ``sandbox:``, bubblewrap): a scripted agent tries each
thing a sandbox keeps from it (the user's secrets in its environment, on the tmux
socket, in the controller's ``/proc``; the dashboard's tokens; the home; another
agent's worktree, the user's home; another agent's task and inbox; sending as another)
and records what it got: nothing succeeds, while its own ``miyabi send``, ``inbox`` and
``task done`` go through its own channel."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakemodel import FakeModel
from helpers import wait_for, write_layout
from integration.conftest import Cli, capture
from integration.real_agents import clis, setup
from integration.test_delivery import send
from integration.test_real_agents import STARTUP, state

from miyabi.controller import running_pid
from miyabi.home import Home
from miyabi.tmux.runner import Tmux
from miyabi.work.store import Store

PROBE = Path(__file__).resolve().parent.parent / "fixtures" / "sandbox_probe.py"

SECRETS = {"T_GH_TOKEN": "ghp_sandbox_secret_0001", "T_HOOK_URL": "https://hooks.example/sandbox-0002"}


def probed(work: Path) -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads((work / "probe.json").read_text())
    return data


def test_a_sandboxed_agent_reaches_nothing_but_its_own_work_and_channel(
    cli: Cli, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is missing: scripts/test installs it (apt-get install bubblewrap)")
    user_home = tmp_path / "user-home"
    user_home.mkdir()
    (user_home / "secret.txt").write_text("the user's own")
    monkeypatch.setenv("HOME", str(user_home))
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    a_work, b_work = tmp_path / "a-work", tmp_path / "b-work"
    a_work.mkdir()
    b_work.mkdir()
    (b_work / "notes.txt").write_text("b's work")
    shutil.copy(PROBE, a_work / "probe.py")
    probe = {
        "name": "a",
        "profile": "shell",
        "command": f"{sys.executable} probe.py",
        "cwd": str(a_work),
        "ready_pattern": "^probe> ",
        "submit_delay": 0.05,
        "ready_settle": 0.05,
        "intro": False,
        "sandbox": {"network": "none"},
    }
    lay = write_layout(
        tmp_path / "box.yaml",
        [probe, {"name": "b", "profile": "shell", "command": "cat", "cwd": str(b_work), "intro": False}],
        session="box",
        github={
            "repo": "acme/widgets",
            "api_url": "http://127.0.0.1:9",
            "token_env": "T_GH_TOKEN",
            "poll_interval": 3600,
        },
        notify=[{"kind": "webhook", "url_env": "T_HOOK_URL"}],
        routes=[{"label": "probe", "agent": "a"}, {"label": "other", "agent": "b"}],
    )
    (home / "run").mkdir(parents=True, exist_ok=True)
    (home / "run" / "web.json").write_text('{"token": "web-secret-0003"}')
    assert cli("up", str(lay), "-d").exit_code == 0
    assert cli("task", "add", "Not yours", "--label", "other").exit_code == 0
    wait_for(lambda: Store.of_home(home).get(1).state == "in_progress", what="b holds task 1")
    pid = wait_for(lambda: running_pid(Home(home)), what="the controller's pid")
    facts = {
        "secrets": [*SECRETS.values(), "web-secret-0003"],
        "controller": pid,
        "home": str(home),
        "other_work": str(b_work),
        "other_task": "1",
        "user_home": str(user_home),
        "user_file": "secret.txt",
    }
    assert cli("task", "add", "Probe", "--label", "probe", "--body", json.dumps(facts)).exit_code == 0
    wait_for(lambda: (a_work / "probe.json").exists(), timeout=60, what="the probe's record")
    got = probed(a_work)
    reached = {k: v for k, v in got.items() if k not in ("task",) and not k.startswith("own") and v["ok"]}
    assert reached == {}, reached
    assert "not held by a" in str(got["other's task done"]["got"])
    assert "sends as itself" in str(got["send as another"]["got"])
    assert "own inbox only" in str(got["other's inbox"]["got"])
    assert "not available inside a sandbox" in str(got["status"]["got"])
    for own in ("own send", "own inbox", "own write", "own task done"):
        assert got[own]["ok"], (own, got[own])
    assert (a_work / "mine.txt").read_text() == "mine"
    assert not (b_work / "mine.txt").exists()
    assert Store.of_home(home).get(2).state == "done"
    assert Store.of_home(home).get(1).state == "in_progress"
    to_b = [(m["from"], m["body"]) for m in json.loads(cli("inbox", "b", "--all", "--json").output)]
    assert ("a", "hello from a") in to_b
    assert not [m for m in to_b if "forged" in m[1]]


@pytest.fixture
def model() -> Iterator[FakeModel]:
    """The model stand-in (tests/fakemodel.py); an answer it did not give whole fails the test."""
    with FakeModel(delay=0.3) as m:
        yield m
        m.check()


def claude_in_a_box(cli: Cli, tmp_path: Path, model_url: str, network: str) -> Path:
    """Claude Code (the real CLI) as agent ``a`` in a sandbox, its throwaway HOME and the
    CLI cache bound in; returns its working directory."""
    s = setup("claude", tmp_path, model_url)
    agent = {**s.agent("a"), "sandbox": {"network": network, "binds": [str(clis())]}}
    lay = write_layout(tmp_path / "real.yaml", [agent], session="realbox", routes=[{"default": True, "agent": "a"}])
    r = cli("up", str(lay), "-d")
    assert r.exit_code == 0, r.output
    return s.work


def test_claude_code_in_a_sandbox_reaches_the_model_and_ends_its_task_through_its_channel(
    cli: Cli, home: Path, tmp_path: Path, model: FakeModel
) -> None:
    work = claude_in_a_box(cli, tmp_path, model.url, "host")
    # its hooks reach the controller through the channel: that is how miyabi sees it ready
    wait_for(lambda: state(home) == "ready", timeout=STARTUP, what="claude ready in its sandbox")
    assert cli("task", "add", "Finish", "--body", "[[tool miyabi task done 1 --note boxed]]").exit_code == 0
    wait_for(lambda: state(home) == "waiting-approval", timeout=60, what="the tool call's question")
    assert cli("approve", "a").exit_code == 0
    wait_for(lambda: Store.of_home(home).get(1).state == "done", timeout=60, what="task 1 done from the sandbox")
    assert any("Task #1: Finish" in r.prompt for r in model.prompts())
    hooks = home / "run" / "hooks" / "a.jsonl"
    wait_for(
        lambda: hooks.exists() and '"UserPromptSubmit"' in hooks.read_text(), what="its hooks, through the channel"
    )
    assert not (work / "miyabi-tool-1").exists()  # the command was miyabi's, not the default file


def test_claude_code_in_a_sandbox_without_network_says_it_cannot_connect(
    cli: Cli, home: Path, tmp_path: Path, model: FakeModel, tmux: Tmux, panes
) -> None:
    claude_in_a_box(cli, tmp_path, model.url, "none")
    wait_for(lambda: state(home) == "ready", timeout=STARTUP, what="claude ready in its sandbox")
    sent_id = send(home, "a", "hello from outside")
    assert sent_id
    pane = panes("realbox")["a"].pane_id
    wait_for(
        lambda: re.search(
            r"(?i)connection refused|unable to connect|connection error|ECONNREFUSED", capture(tmux, pane)
        ),
        timeout=120,
        what="the CLI saying it cannot connect",
    )
    assert model.requests == []


def test_a_sandboxed_pool_instance_commits_in_its_worktree_and_its_work_merges(
    cli: Cli, home: Path, tmp_path: Path
) -> None:
    from integration.test_pipeline import AGENT, CHECK, CONVENTION, git, make_repo, plan

    _, repo = make_repo(tmp_path, {"check.sh": CHECK, ".miyabi.yml": CONVENTION, "feature.txt": "broken\n"})
    plans = tmp_path / "plans"
    plans.mkdir()
    p, _ = plan(plans, [[{"write": "feature.txt", "text": "fixed\n"}, {"commit": "fix it"}, {"done": "fixed"}]])
    coder = {
        "name": "coder",
        "profile": "worker",
        "command": f"{sys.executable} {AGENT}",
        "repo": str(repo),
        "submit_delay": 0.05,
        "ready_settle": 0.05,
        # the plan is under the sandbox's hidden /tmp: bound in, read-only
        "env": {"PLAN": str(p), "PLAN_LOG": "/dev/null"},
        "sandbox": {"network": "none", "binds": [str(plans)]},
    }
    lay = write_layout(
        tmp_path / "pool.yaml",
        [("lead", "shell", "cat")],
        session="boxpool",
        pools=[coder],
        routes=[{"default": True, "agent": "coder"}],
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    assert cli("task", "add", "Fix feature").exit_code == 0
    wait_for(lambda: Store.of_home(home).get(1).state == "done", timeout=90, what="the task verified and merged")
    assert (repo / "feature.txt").read_text() == "fixed\n"
    assert "fix it" in git(repo, "log", "--format=%s", "main")  # committed inside the sandbox
