"""Wall time of `miyabi status` as a user runs it: a fresh process each time, against a
running ensemble of 16 `cat` agents with its controller, on a private tmux socket.

Three forms, --runs times each, interleaved: on a terminal (a pseudo-terminal of 120
columns, so the rich table is drawn), piped (the plain table) and `--json`. Also the
floor: the interpreter starting and exiting (`python -c pass`). The commands run with
bytecode caching on, as after an install (PYTHONDONTWRITEBYTECODE is dropped, and one
untimed run of each form comes first). The ensemble is brought down with `miyabi down`
at the end, and nothing of it may be left running.

Run:  .venv/bin/python benchmarks/bench_status.py [--runs 30] [--agents 16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from _ensemble import MIYABI, brought_down
from _stats import pct, progress, progress_done

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import on_terminal as run_on_terminal

COLUMNS = 120


def user_env() -> dict[str, str]:
    """The environment a user's shell gives: bytecode caching on, no forced width."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "COLUMNS", "LINES")}


def cpu_of_children() -> float:
    """CPU seconds (user and system) of the children this process has waited for."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def on_terminal(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run ``argv`` with its output on a pseudo-terminal COLUMNS wide; (seconds, output)."""
    dt, code, out = run_on_terminal(argv, COLUMNS, env)
    if code != 0:
        sys.exit(f"bench_status: {' '.join(argv)} exited {code}: {out.strip()}")
    return dt, out


def piped(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    dt = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"bench_status: {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return dt, done.stdout


def wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(f"bench_status: {path} did not appear within {timeout:.0f} s")
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--agents", type=int, default=16)
    args = ap.parse_args()
    env = user_env()
    socket = f"bench_s_{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        d = Path(tmp)
        home = d / "home"
        layout = d / "status.yaml"
        agents = "".join(f"  - {{name: a{i:02d}, profile: shell, command: cat}}\n" for i in range(args.agents))
        layout.write_text(f"session: status\nper_window: 4\nagents:\n{agents}")
        base = ["--socket", socket, "--home", str(home)]
        with brought_down(home, socket):
            subprocess.run([MIYABI, "up", str(layout), "-d", *base], check=True, capture_output=True, env=env)
            wait_for_file(home / "logs" / "events.jsonl", 30)
            deadline = time.monotonic() + 30
            while '"controller-ready"' not in (home / "logs" / "events.jsonl").read_text():
                if time.monotonic() > deadline:
                    sys.exit("bench_status: the controller did not get ready within 30 s")
                time.sleep(0.05)
            time.sleep(3)  # the controller's first figures (CPU samples) are in
            forms: dict[str, Callable[[], tuple[float, str]]] = {
                "miyabi status (terminal, 120 columns)": lambda: on_terminal([MIYABI, "status", *base], env),
                "miyabi status | cat (piped)": lambda: piped([MIYABI, "status", *base], env),
                "miyabi status --json": lambda: piped([MIYABI, "status", "--json", *base], env),
                "python -c pass (the floor)": lambda: piped([sys.executable, "-c", "pass"], env),
            }
            times: dict[str, list[float]] = {k: [] for k in forms}
            cpu: dict[str, list[float]] = {k: [] for k in forms}
            for run in forms.values():  # untimed: bytecode caches written, files in the page cache
                run()
            for i in range(args.runs):
                progress(f"run {i + 1}/{args.runs}")
                for name, run in forms.items():
                    before = cpu_of_children()
                    dt, out = run()
                    cpu[name].append(cpu_of_children() - before)
                    times[name].append(dt)
                    if name.endswith("--json") and len(json.loads(out)["agents"]) != args.agents:
                        sys.exit(f"bench_status: --json listed {len(json.loads(out)['agents'])} agents")
            progress_done()
    load = os.getloadavg()[0]
    print(
        f"bench_status: {args.agents} agents (`cat`, controller running), {args.runs} runs of each form, "
        f"a fresh process each (load average {load:.1f} on {os.cpu_count()} cores: wall times grow with the "
        "load, CPU times much less)"
    )
    for name, xs in times.items():
        ms = [x * 1000 for x in xs]
        used = statistics.median(cpu[name]) * 1000
        print(
            f"  {name:<40} wall p50 {statistics.median(ms):6.1f} ms  p99 {pct(ms, 99):6.1f} ms  "
            f"min {min(ms):6.1f} ms   CPU p50 {used:6.1f} ms"
        )


if __name__ == "__main__":
    main()
