"""The start-up cost of the commands agents run most, as a shell runs them: the wall time
of one ``miyabi send AGENT TEXT`` process (controller down, so nothing but the command
itself is measured), of ``miyabi broadcast``, and of ``miyabi send --help`` (which
renders the same help as every other command).

No tmux is needed: sending only writes into the inbox. With ``--against DIR`` (another
checkout's root, such as ``git archive main | tar -x -C DIR``), each command runs as
``python -m miyabi`` from this checkout and from DIR in turn, so that the machine's load
falls on both alike, and both are printed.
Run:  .venv/bin/python benchmarks/bench_send.py [--n 30] [--against DIR]
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
from pathlib import Path

from _stats import pct, progress, progress_done

HERE = Path(__file__).resolve().parent.parent
COMMANDS = {
    "miyabi send kaede TEXT": ["send", "kaede", "hello"],
    "miyabi broadcast TEXT": ["broadcast", "hello", "--from", "kaede"],
    "miyabi send --help": ["send", "--help"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="runs of each command")
    ap.add_argument("--against", type=Path, default=None, help="another checkout's root to compare with")
    args = ap.parse_args()
    trees = {"this checkout": HERE, str(args.against): args.against} if args.against else {"": None}
    times: dict[tuple[str, str], list[float]] = {(t, c): [] for t in trees for c in COMMANDS}
    cpu: dict[tuple[str, str], list[float]] = {(t, c): [] for t in trees for c in COMMANDS}
    with tempfile.TemporaryDirectory(prefix="bench-send-") as home:
        (Path(home) / "run").mkdir()
        (Path(home) / "run" / "up.json").write_text(json.dumps({"session": "s", "agents": ["kaede", "sakura"]}))
        base = {k: v for k, v in os.environ.items() if k not in ("MIYABI_AGENT", "MIYABI_SOCKET", "PYTHONPATH")}
        base["MIYABI_HOME"] = home
        # run in the home, not here: `python -m` would find this checkout's package first
        for i in range(args.n):
            progress(f"run {i + 1}/{args.n}")
            for tree, root in trees.items():
                env = {**base, "PYTHONPATH": str(root)} if root else base
                prefix = [sys.executable, "-m", "miyabi"] if root else [str(Path(sys.executable).parent / "miyabi")]
                for name, argv in COMMANDS.items():
                    t0, c0 = time.perf_counter(), _children_cpu()
                    subprocess.run([*prefix, *argv], env=env, cwd=home, check=True, capture_output=True)
                    times[(tree, name)].append((time.perf_counter() - t0) * 1000)
                    cpu[(tree, name)].append((_children_cpu() - c0) * 1000)
    progress_done()
    print(f"bench_send: {args.n} runs each; wall time of one process, and the CPU time it used (user + system)")
    for (tree, name), runs in times.items():
        p50, p99, c50 = statistics.median(runs), pct(runs, 99), statistics.median(cpu[(tree, name)])
        label = f"{name} ({tree})" if tree else name
        print(
            f"  {label:<44} wall p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  min {min(runs):6.1f} ms   CPU p50 {c50:6.1f} ms"
        )


def _children_cpu() -> float:
    """Seconds of CPU time the finished children used, user and system."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


if __name__ == "__main__":
    main()
