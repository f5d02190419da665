"""miyabi's own time from a story to its deploy, end to end on a real controller, tmux
and git, with the scripted agents of the tests: ``miyabi story`` → the manager (a
scripted agent) writes a spec-kit ``tasks.md`` of ``--tasks`` tasks (default 20: one
set-up task, then all but one side by side, then one that needs them all) and imports
it → a pool of coders (``--max`` at once) writes one file each in its worktree → the
checks pass and each merges behind them → miyabi deploys the base branch, serves it on
a free port and its health check passes (``story-deployed``).

miyabi's own time is the story's wall time (``story-created`` → ``story-deployed``)
less the time some agent or check was busy, which miyabi only waits for:

- an agent's own work: its task typed into its pane (``delivered``) → it says done
  (the task ``verifying``, or the planning task ``done``);
- an agent's start-up: its pane made → the agent ready on screen;
- the repository's checks and the deploy's commands: their run time, from the verify
  logs' and the deploy log's figures (``checks_seconds``; the deploy's own commands).

What is left is the time when nothing but miyabi was in progress: routing, worktrees,
instances, delivery, the verify gate's and merges' git work, the keeper's passes, the
deploy's checkout and the wait for the health check. Two parts of it are the story's
own and are printed apart: the story to its planning task typed into the manager's pane,
and the last merge to the deploy's health check passed.

Target: under 5 s for 20 tasks. Run:  .venv/bin/python benchmarks/bench_story.py [--tasks 20] [--max 4]
"""

from __future__ import annotations

import argparse
import json
import os
import socket as sockets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _ensemble import MIYABI, down
from _stats import progress, progress_done

from miyabi.times import parse_rfc3339
from miyabi.work import stories
from miyabi.work.store import Store

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "tests" / "scripted_agent.py"


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@x", *args], cwd=cwd, check=True, capture_output=True
    )


def free_port() -> int:
    with sockets.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tasks_md(n: int) -> str:
    """A spec-kit list of ``n`` tasks: one set-up task, ``n - 2`` side by side, one last."""
    lines = ["# Tasks: bench", "", "## Phase 1: Setup", "", "- [ ] T001 Set up in site/t001.html", ""]
    lines += ["## Phase 2: Pages", ""]
    lines += [f"- [ ] T{i:03d} [P] Page {i} in site/t{i:03d}.html" for i in range(2, n)]
    lines += ["", "## Phase 3: Index", "", f"- [ ] T{n:03d} Index of the pages in site/index.html", ""]
    return "\n".join(lines)


def repo_of(tmp: Path, port: int) -> Path:
    repo = tmp / "app"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "site").mkdir()
    (repo / "site" / "index.html").write_text("<html>soon</html>\n")
    (repo / ".miyabi.yml").write_text(
        "test: ['true']\nbase_branch: main\n"
        "deploy: ['true']\n"
        f"serve: '{sys.executable} -m http.server {port} --bind 127.0.0.1 --directory site'\n"
        f"health: {{url: 'http://127.0.0.1:{port}/index.html', status: 200, timeout: 60s}}\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")
    return repo


def plans(n: int) -> dict[str, object]:
    """The manager plans (task 1 is the story's planning task); coder-K writes task K's page."""
    out: dict[str, object] = {
        "lead": {
            "rounds": [
                [
                    {"write": "specs/001-bench/tasks.md", "text": tasks_md(n)},
                    {"commit": "plan"},
                    {"run": "miyabi spec import specs/001-bench/tasks.md --story 1"},
                    {"done": "planned"},
                ]
            ]
        }
    }
    for k in range(2, n + 2):
        page = "index" if k == n + 1 else f"t{k - 1:03d}"
        out[f"coder-{k}"] = {
            "rounds": [[{"write": f"site/{page}.html", "text": f"<html>{k}</html>\n"}, {"done": "ok"}]]
        }
    return out


def union(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of ``intervals``."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def gaps(intervals: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    """The stretches of ``[lo, hi]`` no interval covers, longest first."""
    out, end = [], lo
    for a, b in sorted(intervals):
        if a > end:
            out.append((end, a))
        end = max(end, b)
    if hi > end:
        out.append((end, hi))
    return sorted(out, key=lambda g: g[0] - g[1])


def clip(intervals: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20, help="tasks in the story's list (3 or more)")
    ap.add_argument("--max", type=int, default=4, help="coder instances at once")
    ap.add_argument("--gaps", action="store_true", help="also print where miyabi's own time went (its longest gaps)")
    ap.add_argument("--events", type=Path, help="copy the run's event log to this file")
    args = ap.parse_args()
    n = max(3, args.tasks)
    socket = f"miyabi_bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        repo = repo_of(tmp, port)
        home = tmp / "home"
        plan, log = tmp / "plan.json", tmp / "plan.log"
        plan.write_text(json.dumps(plans(n)))
        agent = f"{sys.executable} {AGENT}"
        env_of = f"{{PLAN: '{plan}', PLAN_LOG: '{log}'}}"
        lay = tmp / "l.yaml"
        lay.write_text(
            "session: bench\n"
            f"agents:\n  - {{name: lead, profile: worker, command: '{agent}', cwd: '{repo}', env: {env_of}}}\n"
            f"pools:\n  - {{name: coder, profile: worker, command: '{agent}', repo: '{repo}', max: {args.max},"
            f" pipeline: local, submit_delay: 0.05, ready_settle: 0.05, env: {env_of}}}\n"
            "roles: {manager: lead, coder: coder, deployer: none, monitor: {interval: 30s}}\n"
        )
        env = {**os.environ, "MIYABI_SOCKET": socket}
        try:
            subprocess.run(
                [MIYABI, "up", str(lay), "-d", "--home", str(home), "--socket", socket],
                check=True,
                env=env,
                capture_output=True,
            )
            store = Store.of_home(home)
            deadline = time.monotonic() + 120
            while not any(
                e.get("event") == "state" and e.get("agent") == "lead" and e.get("state") == "ready"
                for e in events(home)
            ):
                if time.monotonic() > deadline:
                    sys.exit("bench_story: the manager never became ready")
                time.sleep(0.05)
            subprocess.run(
                [MIYABI, "story", "A site of pages", "--home", str(home)], check=True, env=env, capture_output=True
            )
            deadline = time.monotonic() + 600
            while True:
                s = stories.get(store, 1)
                landed = sum(1 for k in stories.children(store, 1) if k.state in ("verified", "deployed", "done"))
                progress(f"story {s.state}: {landed}/{n} landed")
                if s.state in ("done", "failed"):
                    break
                if time.monotonic() > deadline:
                    sys.exit(f"bench_story: the story is still {s.state} after 600 s")
                time.sleep(0.1)
            if s.state != "done":
                sys.exit(f"bench_story: the story failed: {s.evidence}")
        finally:
            progress_done()
            down(home, socket, env)
        ev = events(home)
        if args.events is not None:
            args.events.write_text("".join(json.dumps(e) + "\n" for e in ev))
        created = at(next(e for e in ev if e["event"] == "story-created"))
        deployed = at(next(e for e in ev if e["event"] == "story-deployed"))
        busy: list[tuple[float, float]] = []
        # the agents' own work: typed in → said done
        for t in [store.get(1), *stories.children(store, 1)]:
            typed = [at(e) for e in ev if e["event"] == "delivered" and e.get("agent") == t.agent]
            said = [parse_rfc3339(h["time"]) for h in store.history(t.id) if h["state"] in ("verifying", "done")]
            if typed and said:
                busy.append((min(typed), min(said)))
        # the agents' start-up: pane made → ready on screen
        for e in ev:
            if e["event"] == "pane-recreated":
                for name in e.get("agents", []):
                    ready = [
                        at(r)
                        for r in ev
                        if r["event"] == "state" and r.get("agent") == name and r.get("state") == "ready"
                    ]
                    if ready:
                        busy.append((at(e), min(ready)))
        # the checks: each verify-passed says how long they ran, just before it
        for e in ev:
            if e["event"] == "verify-passed":
                busy.append((at(e) - float(e.get("checks_seconds") or 0.0), at(e)))
        total = deployed - created
        waited = union(clip(busy, created, deployed))
        own = total - waited
        kids = stories.children(store, 1)
        print(f"bench_story: a story of {len(kids)} tasks, {args.max} coders at once, pipeline: local, a served site")
        print(f"story → deployed (wall)            {total:7.2f} s")
        print(f"  agents and checks busy (union)   {waited:7.2f} s")
        print(f"  miyabi's own time                {own:7.2f} s")
        last_merge = max(at(e) for e in ev if e["event"] == "merged")
        delivered = min(at(e) for e in ev if e["event"] == "delivered" and e.get("agent") == "lead")
        print(f"  of which: story → its planning task typed   {delivered - created:5.2f} s")
        print(f"            last merge → deployed (keeper, deploy, health)   {deployed - last_merge:5.2f} s")
        print(f"target: miyabi's own time < 5 s for {n} tasks: {'met' if own < 5.0 else 'NOT met'}")
        if args.gaps:
            for a, b in gaps(clip(busy, created, deployed), created, deployed)[:15]:
                before = [e for e in ev if at(e) <= a + 0.001][-1]
                after = next((e for e in ev if at(e) >= b - 0.001), before)
                print(
                    f"  gap {b - a:5.2f} s after {before['event']} {before.get('task') or before.get('agent') or ''}"
                    f" until {after['event']} {after.get('task') or after.get('agent') or ''}"
                )


def events(home: Path) -> list[dict[str, Any]]:
    try:
        text = (home / "logs" / "events.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def at(e: dict[str, Any]) -> float:
    return parse_rfc3339(str(e["time"]))


if __name__ == "__main__":
    main()
