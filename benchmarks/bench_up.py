"""Wall time of `miyabi up --detach` for 16 `shell` agents running `cat`, next to a
tmuxp load of the equivalent workspace (4 windows of 4 tiled panes) in the same run.

Both are timed as whole commands (process start to exit), each on a fresh private
tmux socket, alternating, and the server is killed between runs. Also prints the
time miyabi's builder itself takes in-process (no Python start-up) and how many tmux
invocations it used.

Run:  .venv/bin/pip install -e '.[bench]'  &&  .venv/bin/python benchmarks/bench_up.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

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


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"bench_up: {' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return dt


def kill(socket: str) -> None:
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


def count_panes(socket: str) -> int:
    out = subprocess.run(["tmux", "-L", socket, "list-panes", "-a"], capture_output=True, text=True, check=False).stdout
    return len(out.splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    miyabi = bindir / "miyabi"
    tmuxp = shutil.which("tmuxp", path=str(bindir)) or shutil.which("tmuxp")
    if not miyabi.exists():
        sys.exit(f"bench_up: {miyabi} not found; run scripts/miyabi once to create .venv")
    if not tmuxp:
        sys.exit("bench_up: tmuxp not found; install it: .venv/bin/pip install -e '.[bench]'")

    from miyabi.config import load
    from miyabi.home import Home
    from miyabi.tmux.builder import up as build_up
    from miyabi.tmux.runner import Tmux

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        layout, tmuxp_cfg = write_files(d)
        m_times: list[float] = []
        t_times: list[float] = []
        core_times: list[float] = []
        invocations = 0
        for i in range(args.runs):
            progress(f"run {i + 1}/{args.runs}")
            s = f"bench_m_{uuid.uuid4().hex[:6]}"
            m_times.append(
                timed([str(miyabi), "up", str(layout), "--detach", "--socket", s, "--home", str(d / "home")])
            )
            assert count_panes(s) == AGENTS
            kill(s)
            s = f"bench_t_{uuid.uuid4().hex[:6]}"
            t_times.append(timed([tmuxp, "load", "-d", "-y", "-L", s, str(tmuxp_cfg)]))
            assert count_panes(s) == AGENTS
            kill(s)
            s = f"bench_c_{uuid.uuid4().hex[:6]}"
            tm = Tmux(s)
            lay = load(layout)
            t0 = time.perf_counter()
            rep = build_up(lay, tm, Home(d / "home2"))
            core_times.append(time.perf_counter() - t0)
            invocations = rep.tmux_invocations
            kill(s)
        progress_done()

    def fmt(xs: list[float]) -> str:
        return f"median {statistics.median(xs) * 1000:7.1f} ms   min {min(xs) * 1000:7.1f} ms"

    m, t = statistics.median(m_times), statistics.median(t_times)
    print(
        f"bench_up: {AGENTS} agents ({PER_WINDOW} per window, `cat`), {args.runs} runs each, tmux "
        f"{subprocess.run(['tmux', '-V'], capture_output=True, text=True, check=False).stdout.strip()}"
    )
    print(f"  miyabi up --detach (whole command) {fmt(m_times)}")
    print(f"  tmuxp load -d      (whole command) {fmt(t_times)}")
    print(f"  ratio miyabi/tmuxp (medians)       {m / t:.2f}")
    print(f"  miyabi builder in-process          {fmt(core_times)}   tmux invocations: {invocations}")


if __name__ == "__main__":
    main()
