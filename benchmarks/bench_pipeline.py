"""miyabi's own overhead per pool task, end to end on a real controller, tmux, git
(a bare repository on disk as the remote) and the local GitHub stand-in, with a
repository of ``--files`` files (default 1,000) and the scripted agent of the tests:

- worktree: the instance recorded → its worktree made (``git worktree add``, and
  ``.miyabi.yml`` read at the base branch);
- instance start: the worktree ready → the instance's pane made (layout adopted,
  deliverer and watchdog started), and the agent ready on screen → its task typed and
  delivered (the agent's own start-up in between is the agent's time, not counted);
- verify orchestration: ``miyabi task done`` → the checks passed, less the checks'
  own run time;
- publish: the checks passed → the branch committed, pushed and its pull request open.

Target: their sum under 1 s p50. Run:  .venv/bin/python benchmarks/bench_pipeline.py [--n 10] [--files 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _ensemble import MIYABI, down
from _stats import pct, progress, progress_done

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakegithub import FakeGitHub

from miyabi.times import parse_rfc3339
from miyabi.work.store import Store

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "tests" / "scripted_agent.py"


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@x", *args], cwd=cwd, check=True, capture_output=True
    )


def repo_of(tmp: Path, files: int) -> Path:
    remote, repo = tmp / "remote.git", tmp / "app"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    subprocess.run(["git", "clone", "-q", str(remote), str(repo)], check=True, capture_output=True)
    git(repo, "checkout", "-q", "-b", "main")
    for i in range(files):
        d = repo / f"pkg{i % 20}"
        d.mkdir(exist_ok=True)
        (d / f"mod{i}.py").write_text(f"VALUE = {i}\n")
    (repo / ".miyabi.yml").write_text("test: ['true']\nbase_branch: main\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")
    git(repo, "push", "-q", "origin", "main")
    return repo


def wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            sys.exit(f"bench_pipeline: timed out waiting for {what}")
        time.sleep(0.01)


def events(home: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (home / "logs" / "events.jsonl").read_text().splitlines()]


def at(e: dict[str, object]) -> float:
    return parse_rfc3339(str(e["time"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="tasks (issues), one after the other")
    ap.add_argument("--files", type=int, default=1000, help="files in the repository")
    args = ap.parse_args()
    socket = f"miyabi_bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as d, FakeGitHub() as fake:
        tmp = Path(d)
        repo = repo_of(tmp, args.files)
        home = tmp / "home"
        plan, log = tmp / "plan.json", tmp / "plan.log"
        plan.write_text(json.dumps({"rounds": [[{"write": "done.txt", "text": "x\n"}, {"done": "bench"}]]}))
        lay = tmp / "l.yaml"
        lay.write_text(
            "session: bench\nagents:\n  - {name: lead, profile: shell, command: cat}\n"
            f"pools:\n  - {{name: coder, profile: worker, command: '{sys.executable} {AGENT}', repo: '{repo}', max: 1,"
            f" submit_delay: 0.05, ready_settle: 0.05, env: {{PLAN: '{plan}', PLAN_LOG: '{log}'}}}}\n"
            "routes:\n  - {default: true, agent: coder}\n"
            f"github: {{repo: acme/widgets, api_url: '{fake.url}', token_env: BENCH_GH_TOKEN, poll_interval: 1}}\n"
        )
        env = {**os.environ, "BENCH_GH_TOKEN": "t0ken", "MIYABI_SOCKET": socket}
        try:
            subprocess.run(
                [MIYABI, "up", str(lay), "-d", "--home", str(home), "--socket", socket],
                check=True,
                env=env,
                capture_output=True,
            )
            for i in range(1, args.n + 1):
                progress(f"task {i}/{args.n}")
                fake.add_issue(i, f"Bench task {i}", ["status:todo"])
                wait(lambda n=i: len(fake.pulls) >= n, 120, f"pull request {i}")
            wait(lambda: all(t.state == "done" for t in Store.of_home(home).query()), 60, "every task done")
        finally:
            progress_done()
            down(home, socket, env)
        ev = events(home)
        store = Store.of_home(home)
        parts: dict[str, list[float]] = {
            "worktree": [],
            "instance start": [],
            "verify orchestration": [],
            "publish": [],
            "total": [],
        }
        for t in store.query():
            name = f"coder-{t.number}"
            mine = [e for e in ev if e.get("agent") == name or e.get("task") == t.id]

            def first(kind: str, mine: list[dict[str, object]] = mine, **match: object) -> dict[str, object]:
                return next(e for e in mine if e["event"] == kind and all(e.get(k) == v for k, v in match.items()))

            preparing, ready = first("instance-preparing"), first("instance-ready")
            pane = next(e for e in ev if e["event"] == "pane-recreated" and name in e.get("agents", []))  # type: ignore[operator]
            agent_ready = first("state", agent=name, state="ready")
            delivered = first("delivered", agent=name)
            said_done = next(parse_rfc3339(h["time"]) for h in store.history(t.id) if h["state"] == "verifying")
            passed, opened = first("verify-passed"), first("pull-request-opened")
            worktree = at(ready) - at(preparing)
            start = (at(pane) - at(ready)) + max(0.0, at(delivered) - at(agent_ready))
            verify = at(passed) - said_done - float(passed["checks_seconds"])  # type: ignore[arg-type]
            publish = at(opened) - at(passed)
            for k, v in (
                ("worktree", worktree),
                ("instance start", start),
                ("verify orchestration", verify),
                ("publish", publish),
                ("total", worktree + start + verify + publish),
            ):
                parts[k].append(v)
        print(f"bench_pipeline: {args.n} tasks, repository of {args.files} files, pipeline: github (local stand-in)")
        print(f"{'part':<22} {'p50':>8} {'p99':>8}")
        for k, xs in parts.items():
            print(f"{k:<22} {pct(xs, 50) * 1000:>6.0f}ms {pct(xs, 99) * 1000:>6.0f}ms")
        print(f"target: total < 1000 ms p50: {'met' if pct(parts['total'], 50) < 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
