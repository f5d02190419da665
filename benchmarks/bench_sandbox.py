"""What a sandbox (layout ``sandbox:``, bubblewrap) costs an agent:

1. an agent's start: the line its pane's ``/bin/sh -c`` runs (as
   :func:`miyabi.tmux.builder.spawn_args` builds it) → the agent's program writing
   its first byte, in a sandbox next to without (target: under 50 ms more);
2. ``miyabi task done N`` as an agent runs it (the console command, a process each
   time): through its channel (``MIYABI_CHANNEL``, served by the controller's
   :class:`~miyabi.controller.channels.Channels`) next to direct on the task store.

No tmux is needed: the start line runs under ``/bin/sh`` as tmux would run it, and the
channel is served in this process. Needs bubblewrap (``apt-get install bubblewrap``).
Run:  .venv/bin/python benchmarks/bench_sandbox.py [--n 30]
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _stats import pct, progress, progress_done

from miyabi.agents.profiles import BUILTIN
from miyabi.config.model import Agent
from miyabi.config.preflight import exec_line
from miyabi.config.sandbox import CHANNEL_SOCKET, channel_dir
from miyabi.config.settings import SandboxSettings
from miyabi.controller.channels import Channels
from miyabi.home import Home
from miyabi.tmux.builder import agent_env, sandboxed
from miyabi.work.model import TaskState
from miyabi.work.store import Store

MIYABI = str(Path(sys.executable).parent / "miyabi")
PROGRAM = "printf started; exec sleep 30"
"""The agent: writes its first byte, then waits (killed once the byte is read)."""


def first_byte(line: str, env: dict[str, str], cwd: Path) -> float:
    """Seconds from starting ``/bin/sh -c line`` to the first byte on its standard output."""
    t0 = time.perf_counter()
    p = subprocess.Popen(["/bin/sh", "-c", line], stdout=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True)
    assert p.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    if not sel.select(timeout=10) or not p.stdout.read(1):
        sys.exit(f"bench_sandbox: the agent wrote nothing: {line[:200]}")
    took = time.perf_counter() - t0
    os.killpg(p.pid, 9)
    p.wait()
    return took


def starts(root: Path, n: int) -> tuple[list[float], list[float]]:
    """(without, with a sandbox) start times, alternating so that load falls on both."""
    home = Home(root / "home")
    home.ensure()
    work = root / "work"
    work.mkdir()
    agent = Agent(name="a", profile=BUILTIN["shell"], command=PROGRAM, cwd=work, sandbox=SandboxSettings())
    env = {**os.environ, **agent_env(agent, home, "bench")}
    plain = exec_line(PROGRAM)
    boxed = sandboxed(agent, SandboxSettings(), agent_env(agent, home, "bench"), home, work, plain)
    out: tuple[list[float], list[float]] = ([], [])
    for i in range(n):
        progress(f"start {i + 1}/{n}")
        out[0].append(first_byte(plain, env, work))
        out[1].append(first_byte(boxed, env, work))
    return out


def dones(root: Path, n: int) -> tuple[list[float], list[float]]:
    """(direct, through the channel) wall times of one ``miyabi task done`` process."""
    home_root = root / "home2"
    Home(home_root).ensure()
    Home(home_root).save_state(agents=["a"])  # as `miyabi up` leaves it (run/up.json)
    store = Store.of_home(home_root)
    channels = Channels(home_root, store, lambda: ["a"], lambda: 1 << 20, lambda name: None)
    channels.sync([Agent(name="a", profile=BUILTIN["shell"], command="sh", sandbox=SandboxSettings())])
    stop = threading.Event()
    server = threading.Thread(target=channels.serve, args=(stop,), daemon=True)
    server.start()
    base = {k: v for k, v in os.environ.items() if not k.startswith("MIYABI_")}
    direct_env = {**base, "MIYABI_AGENT": "a", "MIYABI_HOME": str(home_root)}
    channel_env = {**base, "MIYABI_AGENT": "a", "MIYABI_CHANNEL": str(channel_dir(home_root, "a") / CHANNEL_SOCKET)}
    out: tuple[list[float], list[float]] = ([], [])
    try:
        for i in range(n):
            progress(f"task done {i + 1}/{n}")
            for times, env in zip(out, (direct_env, channel_env), strict=True):
                t = store.add(f"bench {i}")
                store.set_state(t.id, TaskState.ASSIGNED, "bench", agent="a")
                t0 = time.perf_counter()
                subprocess.run([MIYABI, "task", "done", str(t.id)], env=env, check=True, capture_output=True)
                times.append(time.perf_counter() - t0)
                if store.get(t.id).state != TaskState.DONE:
                    sys.exit(f"bench_sandbox: task {t.id} is not done")
    finally:
        stop.set()
        server.join(5)
        channels.close()
        store.close()
    return out


def row(what: str, xs: list[float]) -> str:
    return f"{what:<44} p50 {pct(xs, 50) * 1000:7.1f} ms   p99 {pct(xs, 99) * 1000:7.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="runs of each")
    args = ap.parse_args()
    if shutil.which("bwrap") is None:
        sys.exit("bench_sandbox: bubblewrap is not installed (apt-get install bubblewrap)")
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        plain, boxed = starts(Path(tmp), args.n)
        direct, channel = dones(Path(tmp), args.n)
    progress_done()
    print(f"agent start → its first byte (n={args.n})")
    print(row("  without a sandbox", plain))
    print(row("  in a sandbox (bwrap)", boxed))
    print(f"  the sandbox adds {(pct(boxed, 50) - pct(plain, 50)) * 1000:.1f} ms at p50 (target: under 50 ms)")
    print(f"miyabi task done N, one process (n={args.n})")
    print(row("  direct (the task store)", direct))
    print(row("  through the agent's channel", channel))


if __name__ == "__main__":
    main()
