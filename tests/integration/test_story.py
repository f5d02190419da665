"""A story end to end, with scripted agents (no model): a manager writes a spec-kit
``tasks.md`` of three tasks in two phases (two ``[P]``, one depending on both) and
imports it into the story; coders write a tiny web site in worktrees; the checks pass
and each merges (``verified``); miyabi deploys the whole, serves it on a free port in a
tmux window, its health check passes, and the story is ``done`` with the file's boxes
``[x]``. Then the served process is killed: the monitor has it back, and files a fix
task for the story only when the service keeps failing."""

from __future__ import annotations

import json
import os
import signal
import socket as sockets
import sys
import urllib.error
import urllib.request
from pathlib import Path

from helpers import wait_for, write_layout
from integration.conftest import Cli
from integration.test_pipeline import git, make_repo

from miyabi.pipeline.deploy import Deployer
from miyabi.tmux.runner import Tmux
from miyabi.work import stories
from miyabi.work.store import Store

AGENT = Path(__file__).resolve().parents[1] / "scripted_agent.py"

TASKS_MD = """# Tasks: a tiny site

## Phase 1: Pages

- [ ] T001 [P] Write the home page in site/index.html
- [ ] T002 [P] Write the about page in site/about.html

## Phase 2: Links

- [ ] T003 Link the pages together in site/links.html (depends on T001, T002)
"""

CHECK = 'for f in site/*.html; do [ -e "$f" ] || continue; grep -q "<html>" "$f" || exit 1; done\n'


def free_port() -> int:
    with sockets.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), ""
    except OSError:
        return 0, ""


def convention(port: int) -> str:
    return (
        "test: ['sh check.sh']\nbase_branch: main\nmax_rounds: 3\n"
        "deploy: ['test -e site/index.html']\n"
        f"serve: '{sys.executable} -m http.server {port} --bind 127.0.0.1 --directory site'\n"
        f"health: {{url: 'http://127.0.0.1:{port}/index.html', status: 200, timeout: 30s}}\n"
    )


def page(name: str, text: str) -> dict[str, str]:
    return {"write": f"site/{name}", "text": f"<html>{text}</html>\n"}


def test_a_story_goes_from_a_sentence_to_a_served_page_and_its_service_is_kept(
    cli: Cli, home: Path, tmp_path: Path, socket: str
) -> None:
    port = free_port()
    _, repo = make_repo(tmp_path, {"check.sh": CHECK, ".miyabi.yml": convention(port)})
    log = tmp_path / "plan.log"
    log.touch()
    # task 1 is the story's planning task; the imported lines become tasks 2, 3 and 4
    plans = {
        "lead": {
            "rounds": [
                [
                    {"write": "specs/001-site/tasks.md", "text": TASKS_MD},
                    {"commit": "plan the site"},
                    {"run": "miyabi spec import specs/001-site/tasks.md --story 1"},
                    {"done": "planned"},
                ]
            ]
        },
        "coder-2": {"rounds": [[page("index.html", "home"), {"done": "home"}]]},
        "coder-3": {"rounds": [[page("about.html", "about"), {"done": "about"}]]},
        "coder-4": {
            "rounds": [
                [page("links.html", '<a href="index.html">home</a> <a href="about.html">about</a>'), {"done": "links"}]
            ]
        },
    }
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(plans))
    env = {"PLAN": str(plan), "PLAN_LOG": str(log)}
    agent = f"{sys.executable} {AGENT}"
    lay = write_layout(
        tmp_path / "l.yaml",
        [{"name": "lead", "profile": "worker", "command": agent, "cwd": str(repo), "env": env}],
        session="story",
        pools=[
            {
                "name": "coder",
                "profile": "worker",
                "command": agent,
                "repo": str(repo),
                "max": 2,
                "pipeline": "local",
                "submit_delay": 0.05,
                "ready_settle": 0.05,
                "env": env,
            }
        ],
        roles={"manager": "lead", "coder": "coder", "deployer": "none", "monitor": {"interval": "1s"}},
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    made = cli("story", "A tiny site: a home page and an about page, linked", "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["planning_task"]["id"] == 1

    store = Store.of_home(home)
    wait_for(lambda: stories.get(store, 1).state == "done", timeout=180, what="the story done")
    kids = stories.children(store, 1)
    assert [k.ref for k in kids] == ["001-site#T001", "001-site#T002", "001-site#T003"]
    assert all(k.state == "done" for k in kids)
    assert store.depends_on(kids[2].id) == [kids[0].id, kids[1].id]
    # each child went verifying → verified (merged) → deployed → done
    for k in kids:
        states = [h["state"] for h in store.history(k.id)]
        assert states[-3:] == ["verified", "deployed", "done"], states
    # the site is served on its port, with every page, from the deploy checkout
    status, text = get(f"http://127.0.0.1:{port}/links.html")
    assert status == 200 and 'href="about.html"' in text
    assert get(f"http://127.0.0.1:{port}/about.html")[0] == 200
    # the boxes were ticked in the file, with the work, on main
    assert (repo / "specs/001-site/tasks.md").read_text().count("- [x] T00") == 3
    assert git(repo, "status", "--porcelain") == ""
    shown = json.loads(cli("story", "show", "1", "--json").output)
    assert shown["state"] == "done" and shown["seconds_to_deployed"] > 0 and len(shown["tasks"]) == 3
    assert [h["state"] for h in shown["history"]] == ["planning", "building", "deploying", "checking", "done"]
    events = [json.loads(x)["event"] for x in (home / "logs" / "events.jsonl").read_text().splitlines()]
    for kind in ("story-created", "story-planned", "deployed", "story-deployed", "story-done"):
        assert kind in events, kind
    listed = json.loads(cli("story", "ls", "--json").output)
    assert [(s["id"], s["state"], s["landed"], s["tasks"]) for s in listed] == [(1, "done", 3, 3)]

    # the served process is killed: the monitor has it back, and files no fix for one death
    deployer = Deployer(home, Tmux(socket), "story")
    name = Deployer.name_of(repo)
    pane = deployer.service(name)
    assert pane is not None and pane.pid > 0
    os.kill(pane.pid, signal.SIGKILL)

    def restarted() -> bool:
        now = deployer.service(name)
        return now is not None and not now.dead and now.pid != pane.pid

    wait_for(restarted, timeout=30, what="the service's process started again")
    wait_for(lambda: get(f"http://127.0.0.1:{port}/index.html")[0] == 200, timeout=30, what="the service back")
    tasks_before = len(store.query())
    # it keeps failing (its page is gone from the deploy checkout): one fix task, in the story
    (deployer.checkout(repo) / "site" / "index.html").unlink()
    fixes = wait_for(
        lambda: [t for t in store.query() if t.id > tasks_before and t.story == 1],
        timeout=60,
        what="a fix task for the failing service",
    )
    assert len(fixes) == 1 and "index.html" in fixes[0].body and "agent:coder" in fixes[0].labels
    assert tasks_before == 4  # nothing was filed while the service came back on its own
    # the story is building again: the fix, once merged, is deployed like its other tasks
    wait_for(lambda: stories.get(store, 1).state == "building", what="the story reopened for its fix")
