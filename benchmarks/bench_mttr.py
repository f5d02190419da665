"""Watchdog figures, in one run, against a real tmux server on a private socket:

1. time from `kill -9` of an agent's process to its replacement running in the same
   pane (p50, p99 over --kills kills), with the controller in the background;
2. the floor: a bare `respawn-pane -k` from one tmux process, timed to the new pid;
3. the controller's CPU use with 16 idle agents over --idle seconds.

"Replacement running" is polled every 0.5 ms through `display-message` on a
control-mode client (0.1 ms per read), so it adds under a millisecond.
Run:  .venv/bin/python benchmarks/bench_mttr.py [--kills 100] [--idle 60]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from _ensemble import down
from _stats import pct, progress, progress_done

from miyabi.controller import running_pid
from miyabi.home import Home
from miyabi.tmux.control import ControlClient
from miyabi.tmux.runner import Tmux


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--idle", type=float, default=60.0)
    args = ap.parse_args()
    miyabi = Path(sys.executable).parent / "miyabi"
    socket = f"bench_m_{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        home = d / "home"
        layout = d / "mttr.yaml"
        agents = "".join(f"  - {{name: a{i:02d}, profile: shell, command: cat}}\n" for i in range(16))
        layout.write_text(
            "session: mttr\nwatchdog: {min_uptime: 0, max_restarts: 100000, restart_window: 60}\nagents:\n" + agents
        )
        tmux = Tmux(socket)
        try:
            subprocess.run(
                [str(miyabi), "up", str(layout), "-d", "--socket", socket, "--home", str(home)],
                check=True,
                capture_output=True,
            )
            chan = ControlClient(tmux, "mttr").start()
            pane = chan.run("list-panes", "-t", "=mttr:", "-F", "#{pane_id}")[0]

            def pid_now() -> tuple[int, bool]:
                out = chan.run("display-message", "-p", "-t", pane, "#{pane_pid} #{pane_dead}")[0].split()
                return int(out[0]), out[1] == "1"

            time.sleep(1.0)  # let the controller settle
            mttr: list[float] = []
            for i in range(args.kills):
                progress(f"kill {i + 1}/{args.kills}")
                old, _ = pid_now()
                t0 = time.perf_counter()
                os.kill(old, signal.SIGKILL)
                while True:
                    pid, dead = pid_now()
                    if pid != old and not dead:
                        break
                    if time.perf_counter() - t0 > 10:
                        sys.exit(f"bench_mttr: no replacement after 10 s (kill {i + 1})")
                    time.sleep(0.0005)
                mttr.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.02)

            # the floor: respawn-pane -k from a fresh tmux process, on a pane of its own
            floor: list[float] = []
            tmux.run("new-window", "-d", "-t", "=mttr:", "-n", "floor", "cat")
            fpane = tmux.run("list-panes", "-t", "=mttr:=floor", "-F", "#{pane_id}")[0]
            for _ in range(args.kills):
                old = int(tmux.run("display-message", "-p", "-t", fpane, "#{pane_pid}")[0])
                t0 = time.perf_counter()
                subprocess.run(["tmux", "-L", socket, "respawn-pane", "-k", "-t", fpane, "cat"], check=True)
                while int(chan.run("display-message", "-p", "-t", fpane, "#{pane_pid}")[0]) == old:
                    time.sleep(0.0005)
                floor.append((time.perf_counter() - t0) * 1000)
            chan.close()

            # idle CPU of the controller with 16 agents
            progress(f"idle {args.idle:.0f} s...")
            cpid = running_pid(Home(home))
            assert cpid
            proc = psutil.Process(cpid)
            kids = proc.children(recursive=True)
            t_before = sum(sum(p.cpu_times()[:2]) for p in [proc, *kids])
            time.sleep(args.idle)
            t_after = sum(sum(p.cpu_times()[:2]) for p in [proc, *kids] if p.is_running())
            idle_pct = (t_after - t_before) / args.idle * 100
        finally:
            down(home, socket)
        progress_done()

    print(f"bench_mttr: {args.kills} kills of a `cat` agent (16 agents, socket {socket})")
    print(
        f"  kill -9 → replacement running (miyabi)   p50 {pct(mttr, 50):7.1f} ms   p99 {pct(mttr, 99):7.1f} ms   max "
        f"{max(mttr):7.1f} ms"
    )
    print(f"  respawn-pane -k from a tmux process      p50 {pct(floor, 50):7.1f} ms   p99 {pct(floor, 99):7.1f} ms")
    print(
        f"  controller CPU, 16 idle agents, {args.idle:.0f} s    {idle_pct:.2f} % of one core (controller and its "
        "tmux client)"
    )


if __name__ == "__main__":
    main()
