"""GitHub intake figures against the tests' GitHub stand-in on 127.0.0.1 (never the real
GitHub), with --issues open todo issues (default 10,000):

1. a backlog: the issues are there before the first poll, one updated every --spread
   seconds up to now (default 60: a backlog that grew by an issue a minute; 0: all in
   the same second, as a bulk import leaves them). One GitHub pass (what the
   controller's GitHub thread does each poll) runs in this process: the first, which
   stores every issue as a task, then --polls more with nothing changed: requests,
   answers 304, rate-limit points, and the CPU time of the thread that ran them (the
   stand-in serves from other threads, not counted);
2. new issues: a real controller (``miyabi up -d``, one agent running ``cat``,
   ``poll_interval`` --poll-interval, default 5 s) is idle when the issues appear, all
   created (so updated) at that moment: its CPU (the controller process and its
   children, from /proc through psutil) from then until every issue is a task and it
   is idle again (under 2 % of a core over 2 s), and the requests of each of the
   --controller-polls polls after that.

Runs against whatever ``miyabi`` is importable, so the same script measures an older
checkout (PYTHONPATH=that checkout).
Run:  .venv/bin/python benchmarks/bench_github.py [--issues 10000] [--spread 60] [--polls 10] [--no-controller]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _ensemble import down, up
from _stats import cpu_of, progress, progress_done
from fakegithub import FakeGitHub

from miyabi.config import load
from miyabi.work.engine import WorkEngine
from miyabi.work.github import client_for
from miyabi.work.store import Store

TOKEN_ENV = "BENCH_GH_TOKEN"
"""The stand-in takes any token; miyabi is given one, as it would be for GitHub."""


def fill(fake: FakeGitHub, issues: int, spread: float) -> None:
    """``issues`` open todo issues, the newest updated now and each older one ``spread`` s before."""
    now = time.time()
    with fake.lock:
        for n in range(1, issues + 1):
            fake.add_issue(n, f"issue {n}", ["status:todo"], body=f"body of {n}", at=now - (issues - n) * spread)


def layout(d: Path, fake: FakeGitHub, poll_interval: float = 60.0) -> Path:
    f = d / "gh.yaml"
    f.write_text(
        "session: ghbench\nagents:\n  - {name: kaede, profile: shell, command: cat}\n"
        f"github: {{repo: acme/widgets, api_url: '{fake.url}', token_env: {TOKEN_ENV}, "
        f"poll_interval: {poll_interval:g}}}\n"
    )
    return f


def in_process(args: argparse.Namespace) -> None:
    with FakeGitHub() as fake, tempfile.TemporaryDirectory() as tmp:
        fill(fake, args.issues, args.spread)
        home = Path(tmp) / "home"
        lay = load(layout(Path(tmp), fake))
        assert lay.github is not None
        store = Store.of_home(home)
        gh = client_for(lay.github, home)
        engine = WorkEngine(store, lay, home, gh)
        progress("first sync")
        c0, t0 = time.thread_time(), time.perf_counter()
        first = engine.github_pass()
        cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
        first_requests = gh.stats.requests
        per_poll: list[int] = []
        not_modified: list[int] = []
        spent: list[int] = []
        for i in range(args.polls):
            progress(f"poll {i + 1}/{args.polls}")
            r0, n0 = gh.stats.requests, gh.stats.statuses.get(304, 0)
            engine.github_pass()
            per_poll.append(gh.stats.requests - r0)
            not_modified.append(gh.stats.statuses.get(304, 0) - n0)
            spent.append(per_poll[-1] - not_modified[-1])
        tasks = len(store.rows("SELECT id FROM tasks"))
        gh.close()
        store.close()
    progress_done()
    print(f"    first GitHub pass (this process): {len(first.sync.added)} tasks ({tasks} stored),")
    print(f"      {first_requests} requests,", end="")
    print(f" {cpu:.2f} s CPU (the thread that ran it), {wall:.2f} s wall")
    print(
        f"    each of {args.polls} passes with nothing changed: {statistics.mean(per_poll):g} request(s), "
        f"{statistics.mean(not_modified):g} answered 304, {statistics.mean(spent):g} rate-limit point(s)"
    )


def wait(what: str, cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            sys.exit(f"bench_github: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.1)


def controller(args: argparse.Namespace) -> None:
    socket = f"bench_g_{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE", "MIYABI_AGENT")}
    env[TOKEN_ENV] = "bench-token"
    with FakeGitHub() as fake, tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        lay = layout(Path(tmp), fake, args.poll_interval)
        progress("starting the controller")
        up(lay, socket, home, env)
        store: Store | None = None
        try:
            pid = int((home / "run" / "controller.pid").read_text().strip())
            wait("the first poll", lambda: any(m == "GET" for _, m, _, _ in fake.answers), 30)
            time.sleep(3.0)  # settle: first passes, the pane, intros
            store = Store.of_home(home)
            progress(f"{args.issues} issues appear")
            c0, t0 = cpu_of(pid), time.monotonic()
            fill(fake, args.issues, 0.0)  # new issues: GitHub stamps them now
            count = store.rows  # the store the controller fills

            def stored() -> bool:
                return bool(int(count("SELECT COUNT(*) FROM tasks")[0][0]) >= args.issues)

            wait(f"{args.issues} tasks", stored, 600)
            samples = [(time.monotonic(), cpu_of(pid))]
            while True:  # idle again: under 2 % of a core over the last 2 s
                time.sleep(0.5)
                samples.append((time.monotonic(), cpu_of(pid)))
                old = [s for s in samples if s[0] <= samples[-1][0] - 2.0]
                if old and (samples[-1][1] - old[-1][1]) / (samples[-1][0] - old[-1][0]) < 0.02:
                    quiet_at, cpu_at = old[-1]
                    break
                if time.monotonic() - t0 > 900:
                    sys.exit("bench_github: the controller never became idle")
            cpu, wall = cpu_at - c0, quiet_at - t0
            progress("polls with nothing changed")
            mark = len(fake.answers)
            wait(
                f"{args.controller_polls} polls",
                lambda: len(polls(fake.answers[mark:], args.poll_interval / 2)) > args.controller_polls + 1,
                (args.controller_polls + 2) * (args.poll_interval + 10),
            )
            # the first may be cut by the mark
            seen = polls(fake.answers[mark:], args.poll_interval / 2)[1 : args.controller_polls + 1]
        finally:
            if store is not None:
                store.close()
            down(home, socket, env)
    progress_done()
    print(
        f"  {args.issues} new issues appear while a controller idles "
        f"(miyabi up, poll_interval {args.poll_interval:g} s):"
    )
    print(f"    intake: {cpu:.2f} s CPU of the controller and its children, {wall:.1f} s wall until idle again")
    print(
        f"    each of {len(seen)} polls with nothing changed: {statistics.mean(len(p) for p in seen):g} request(s), "
        f"{statistics.mean(sum(1 for a in p if a[3] == 304) for p in seen):g} answered 304"
    )


def polls(answers: list[tuple[float, str, str, int]], gap: float) -> list[list[tuple[float, str, str, int]]]:
    """The stand-in's answers to issue listings, grouped into polls (a pause of ``gap`` s or
    more between two answers starts another: the controller waits ``poll_interval`` between polls)."""
    out: list[list[tuple[float, str, str, int]]] = []
    for a in answers:
        if a[1] != "GET" or "/issues?" not in a[2]:
            continue
        if not out or a[0] - out[-1][-1][0] >= gap:
            out.append([])
        out[-1].append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--issues", type=int, default=10_000)
    ap.add_argument("--spread", type=float, default=60.0, help="seconds between two issues' updated_at")
    ap.add_argument("--polls", type=int, default=10)
    ap.add_argument("--controller-polls", type=int, default=5)
    ap.add_argument("--poll-interval", type=float, default=5.0, help="the controller's github.poll_interval")
    ap.add_argument("--no-controller", action="store_true", help="skip the real controller's figures")
    args = ap.parse_args()
    os.environ[TOKEN_ENV] = "bench-token"
    print(f"bench_github: {args.issues} open todo issues on a local GitHub stand-in")
    print(f"  a backlog, one issue updated every {args.spread:g} s:")
    in_process(args)
    if not args.no_controller:
        controller(args)


if __name__ == "__main__":
    main()
