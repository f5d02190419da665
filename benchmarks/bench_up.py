"""Wall time of `miyabi up --detach` for 16 `shell` agents running `cat`, next to a
tmuxp load of the equivalent workspace (4 windows of 4 tiled panes) in the same run.

Both are timed as whole commands (process start to exit), each on a fresh private
tmux socket, alternating; `miyabi up` in a fresh home each time, its controller
started under its keep-alive as a user gets it. Each miyabi ensemble is brought down
with `miyabi down` right after it is timed, and nothing of its home may be left
running; tmuxp's server is killed. Also prints `miyabi up --no-controller` (the
session alone), the time miyabi's builder itself takes in-process (no Python
start-up) and how many tmux invocations it used. The commands run with bytecode
caching on, as after an install (one untimed run of each first).

Run:  .venv/bin/pip install -e '.[bench]'  &&  .venv/bin/python benchmarks/bench_up.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _ensemble import MIYABI, down, kill_all
from _stats import progress, progress_done

AGENTS = 16
PER_WINDOW = 4


def write_files(d: Path) -> tuple[Path, Path]:
    layout = d / "bench.yaml"
    lines = ["session: bench", f"per_window: {PER_WINDOW}", "agents:"]
    lines += [f"  - {{name: a{i:02d}, profile: shell, command: cat}}" for i in range(AGENTS)]
    layout.write_text("\n".join(lines) + "\n")
    tmuxp = d / "tmuxp.yaml"
    wl = ["session_name: bench", "windows:"]
    for w in range(AGENTS // PER_WINDOW):
        wl += [f"  - window_name: agents-{w + 1}", "    layout: tiled", "    panes:"]
        wl += ["      - shell_command: [cat]" for _ in range(PER_WINDOW)]
    tmuxp.write_text("\n".join(wl) + "\n")
    return layout, tmuxp


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"bench_up: {' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return dt


def count_panes(socket: str) -> int:
    out = subprocess.run(["tmux", "-L", socket, "list-panes", "-a"], capture_output=True, text=True, check=False).stdout
    return len(out.splitlines())


def end_server(socket: str, home: Path) -> None:
    """A server without a controller: ``kill-server``, then whatever of it is left."""
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
    kill_all(home, socket)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    tmuxp = shutil.which("tmuxp", path=str(bindir)) or shutil.which("tmuxp")
    if not Path(MIYABI).exists():
        sys.exit(f"bench_up: {MIYABI} not found; run scripts/miyabi once to create .venv")
    if not tmuxp:
        sys.exit("bench_up: tmuxp not found; install it: .venv/bin/pip install -e '.[bench]'")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    from miyabi.config import load
    from miyabi.home import Home
    from miyabi.tmux.builder import up as build_up
    from miyabi.tmux.runner import Tmux

    with tempfile.TemporaryDirectory(prefix="bench-up-") as tmp:
        d = Path(tmp)
        layout, tmuxp_cfg = write_files(d)
        times: dict[str, list[float]] = {"up": [], "session": [], "tmuxp": [], "core": []}
        invocations = 0

        def miyabi_up(i: int, *extra: str) -> float:
            s, home = f"bench_m_{uuid.uuid4().hex[:6]}", d / f"home-{i}{''.join(extra)}"
            try:
                dt = timed([MIYABI, "up", str(layout), "--detach", *extra, "--socket", s, "--home", str(home)], env)
                if count_panes(s) != AGENTS:
                    sys.exit(f"bench_up: miyabi up made {count_panes(s)} panes, not {AGENTS}")
                return dt
            finally:
                down(home, s, env)

        def tmuxp_load() -> float:
            s = f"bench_t_{uuid.uuid4().hex[:6]}"
            try:
                dt = timed([tmuxp, "load", "-d", "-y", "-L", s, str(tmuxp_cfg)], env)
                if count_panes(s) != AGENTS:
                    sys.exit(f"bench_up: tmuxp made {count_panes(s)} panes, not {AGENTS}")
                return dt
            finally:
                end_server(s, d / "no-home")

        miyabi_up(-1)  # untimed: bytecode caches written
        tmuxp_load()
        for i in range(args.runs):
            progress(f"run {i + 1}/{args.runs}")
            times["up"].append(miyabi_up(i))
            times["tmuxp"].append(tmuxp_load())
            times["session"].append(miyabi_up(i, "--no-controller"))
            s = f"bench_c_{uuid.uuid4().hex[:6]}"
            tm = Tmux(s)
            lay = load(layout)
            try:
                t0 = time.perf_counter()
                rep = build_up(lay, tm, Home(d / "home-core"))
                times["core"].append(time.perf_counter() - t0)
                invocations = rep.tmux_invocations
            finally:
                end_server(s, d / "home-core")
        progress_done()

    def fmt(xs: list[float]) -> str:
        return f"median {statistics.median(xs) * 1000:7.1f} ms   min {min(xs) * 1000:7.1f} ms"

    m, t = statistics.median(times["up"]), statistics.median(times["tmuxp"])
    print(
        f"bench_up: {AGENTS} agents ({PER_WINDOW} per window, `cat`), {args.runs} runs each, tmux "
        f"{subprocess.run(['tmux', '-V'], capture_output=True, text=True, check=False).stdout.strip()}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"  miyabi up --detach (whole command, controller started) {fmt(times['up'])}")
    print(f"  miyabi up --detach --no-controller (session only)      {fmt(times['session'])}")
    print(f"  tmuxp load -d      (whole command)                     {fmt(times['tmuxp'])}")
    print(f"  ratio miyabi up / tmuxp (medians)                      {m / t:.2f}")
    print(
        f"  miyabi builder in-process                              {fmt(times['core'])}   "
        f"tmux invocations: {invocations}"
    )


if __name__ == "__main__":
    main()
