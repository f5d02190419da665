"""Scheduling figures with a big queue, against a real controller and tmux server:

1. the controller's CPU use while nothing changes, with --tasks queued tasks and
   --agents agents each at its WIP limit (the queue cannot move), over --idle seconds
   (the controller process and its tmux control client);
2. ``task add`` → the task's message in the inbox: a task for one more, free agent is
   stored (the store write ``miyabi task add`` makes, timed from its commit) and the
   time until its message file lands in that agent's inbox is measured, --adds times.

The agents run ``cat`` (profile shell). Runs against whatever ``miyabi`` is importable,
so the same script measures an older checkout (PYTHONPATH=that checkout).
Run:  .venv/bin/python benchmarks/bench_schedule.py [--tasks 10000] [--agents 64] [--idle 30] [--adds 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from _ensemble import down, up
from _stats import cpu_of, pct, progress, progress_done

from miyabi.work.model import TaskState
from miyabi.work.store import Store


def controller_pid(home: Path) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid = int((home / "run" / "controller.pid").read_text().strip())
            if psutil.pid_exists(pid):
                return pid
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    sys.exit("bench_schedule: the controller did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--agents", type=int, default=64)
    ap.add_argument("--idle", type=float, default=30.0)
    ap.add_argument("--adds", type=int, default=50)
    args = ap.parse_args()
    socket = f"bench_s_{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        home = d / "home"
        names = [f"a{i:02d}" for i in range(args.agents)]
        layout = d / "sched.yaml"
        agents = "".join(f"  - {{name: {n}, profile: shell, command: cat}}\n" for n in [*names, "free"])
        layout.write_text(f"session: sched\nper_window: 16\npane_size: [40, 8]\nagents:\n{agents}")
        home.mkdir()
        store = Store.of_home(home)
        progress("filling the store")
        for n in names:  # each agent holds one task: at its wip limit
            t = store.add(f"held by {n}", labels=[f"agent:{n}"])
            store.set_state(t.id, TaskState.ASSIGNED, "bench", agent=n)
            store.set_state(t.id, TaskState.IN_PROGRESS, "bench")
        for i in range(args.tasks):
            store.add(f"queued {i}", labels=[f"agent:{names[i % len(names)]}"])
            if i % 500 == 0:
                progress(f"filling the store {i}/{args.tasks}")
        progress("starting the controller")
        env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE", "MIYABI_AGENT")}
        try:
            up(layout, socket, home, env)
            pid = controller_pid(home)
            time.sleep(3.0)  # let it settle: first passes, panes, intros
            progress(f"idle for {args.idle:.0f} s")
            c0, t0 = cpu_of(pid), time.monotonic()
            time.sleep(args.idle)
            idle = (cpu_of(pid) - c0) / (time.monotonic() - t0) * 100
            new = home / "queue" / "free" / "new"
            cur = home / "queue" / "free" / "cur"
            lat: list[float] = []
            for i in range(args.adds):
                progress(f"add {i + 1}/{args.adds}")
                before = set(os.listdir(new)) | set(os.listdir(cur)) if cur.exists() else set(os.listdir(new))
                t = store.add(f"for free {i}", labels=["agent:free"])
                start = time.perf_counter()
                while True:
                    now = set(os.listdir(new)) | (set(os.listdir(cur)) if cur.exists() else set())
                    if now - before:
                        break
                    if time.perf_counter() - start > 30:
                        sys.exit(f"bench_schedule: no message for task {t.id} after 30 s")
                    time.sleep(0.0005)
                lat.append((time.perf_counter() - start) * 1000)
                deadline = time.monotonic() + 30  # wait until it is assigned, then finish it so free has room again
                while store.get(t.id).state not in ("assigned", "in_progress") and time.monotonic() < deadline:
                    time.sleep(0.005)
                store.set_state(t.id, TaskState.DONE, "bench")
                time.sleep(0.05)
            progress_done()
            print(
                f"bench_schedule: {args.tasks} queued tasks, {args.agents} agents at their wip limit, socket {socket}"
            )
            print(
                f"  idle controller CPU over {args.idle:.0f} s       {idle:6.2f} % of one core (controller and its "
                "tmux client)"
            )
            print(
                f"  task add → message in the inbox    p50 {pct(lat, 50):7.1f} ms   p99 {pct(lat, 99):7.1f} ms   "
                f"({args.adds} adds)"
            )
        finally:
            store.close()
            down(home, socket, env)


if __name__ == "__main__":
    main()
