"""A soak run of the whole ensemble under fire, against a real tmux server:

--workers ``worker`` agents run --jobs jobs (each sleeps 1-4 s, then appends its id
to a completions file as its last step) while messages are sent to random agents,
agents are SIGKILLed at random (mid-job, mostly) every --agent-kill seconds, the
controller is SIGKILLed every --controller-kill seconds (its keep-alive brings it
back) and the tmux server is killed once, half way (the controller builds the
session again). Jobs are submitted evenly over the first 80 % of --minutes; the run
then waits for the last ones.

It prints: jobs done (and failed), jobs completed twice (an id twice in the
completions file), messages delivered exactly once / lost / doubled (by the workers'
transcripts), agent availability (the share of 0.1 s samples in which an agent's
pane held a live process), agent restart latency p50/p99 (kill -9 → a new live pid
in the pane), and how long the controller and the session took to come back.
Run:  .venv/bin/python benchmarks/soak.py [--minutes 10] [--workers 4] [--jobs 400]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _ensemble import down
from _stats import pct, progress, progress_done

from miyabi.cli.send import main as send_main
from miyabi.controller import running_pid
from miyabi.home import Home
from miyabi.work.jobs import submit
from miyabi.work.store import Store


class Panes:
    """Reads the session's panes from a tmux process each time (it survives kill-server)."""

    def __init__(self, socket: str, session: str) -> None:
        self.socket, self.session = socket, session

    def live(self) -> dict[str, int] | None:
        """Agent → pid of its live process; None when the server does not answer."""
        r = subprocess.run(
            [
                "tmux",
                "-L",
                self.socket,
                "list-panes",
                "-s",
                "-t",
                f"={self.session}",
                "-F",
                "#{@miyabi_agent} #{pane_pid} #{pane_dead}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            return None
        out: dict[str, int] = {}
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] and parts[2] == "0":
                out[parts[0]] = int(parts[1])
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=400)
    ap.add_argument("--agent-kill", type=float, default=12.0, help="seconds between agent kills")
    ap.add_argument("--controller-kill", type=float, default=60.0, help="seconds between controller kills")
    ap.add_argument("--message-every", type=float, default=1.0, help="seconds between messages")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    socket = f"soak_{uuid.uuid4().hex[:6]}"
    names = [f"w{i}" for i in range(args.workers)]
    duration = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        home = d / "home"
        work = d / "work"
        work.mkdir()
        layout = d / "soak.yaml"
        agents = "".join(f"  - {{name: {n}, profile: worker}}\n" for n in names)
        layout.write_text(
            "session: soak\nwatchdog: {min_uptime: 0, max_restarts: 100000, restart_window: 60}\n"
            "tasks: {max_attempts: 10}\nagents:\n" + agents
        )
        env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE", "MIYABI_AGENT")}
        subprocess.run(
            [sys.executable, "-m", "miyabi", "up", str(layout), "-d", "--socket", socket, "--home", str(home)],
            check=True,
            capture_output=True,
            env=env,
        )
        h = Home(home)
        panes = Panes(socket, "soak")
        stop = threading.Event()
        samples: collections.Counter[str] = collections.Counter()  # "up", "down"
        restart_ms: list[float] = []
        controller_back: list[float] = []
        server_back: list[float] = []
        kill_lock = threading.Lock()
        sent: list[str] = []

        def sample() -> None:
            while not stop.wait(0.1):
                live = panes.live() or {}
                for n in names:
                    samples["up" if n in live else "down"] += 1

        threading.Thread(target=sample, daemon=True).start()
        store = Store.of_home(home)
        start = time.monotonic()
        next_job = next_msg = next_agent_kill = next_ctl_kill = start + 2.0
        killed_server = False
        submitted = 0
        try:
            while True:
                now = time.monotonic()
                elapsed = now - start
                if submitted < args.jobs and now >= next_job:
                    jid = f"job-{submitted:04d}"
                    spec = {
                        "id": jid,
                        "kind": "run_shell",
                        "workdir": str(work),
                        "dod": "exit_code == 0",
                        "report_path": f"reports/{jid}.json",
                        "script": [f"sleep {rng.uniform(1, 4):.2f}", f"echo {jid} >> completions"],
                    }
                    f = d / f"{jid}.json"
                    f.write_text(json.dumps(spec))
                    submit(store, f, names[submitted % len(names)])
                    submitted += 1
                    next_job = start + 2.0 + submitted * (duration * 0.8) / args.jobs
                if elapsed < duration and now >= next_msg:
                    body = f"soak-msg-{len(sent):05d}"
                    with contextlib.redirect_stdout(io.StringIO()):  # the id it prints
                        ok = send_main("send", [rng.choice(names), body, "--from", "soak", "--home", str(home)]) == 0
                    if ok:
                        sent.append(body)
                    next_msg = now + args.message_every
                if elapsed < duration and now >= next_agent_kill:
                    next_agent_kill = now + args.agent_kill
                    live = panes.live() or {}
                    victim = rng.choice(names)
                    if victim in live:
                        with kill_lock:
                            old = live[victim]
                            t0 = time.perf_counter()
                            try:
                                os.kill(old, signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                            while time.perf_counter() - t0 < 30:
                                pid = (panes.live() or {}).get(victim)
                                if pid is not None and pid != old:
                                    restart_ms.append((time.perf_counter() - t0) * 1000)
                                    break
                                time.sleep(0.002)
                if elapsed < duration and now >= next_ctl_kill:
                    next_ctl_kill = now + args.controller_kill
                    pid = running_pid(h)
                    if pid:
                        t0 = time.perf_counter()
                        os.kill(pid, signal.SIGKILL)
                        while time.perf_counter() - t0 < 30:
                            p = running_pid(h)
                            if p is not None and p != pid:
                                controller_back.append(time.perf_counter() - t0)
                                break
                            time.sleep(0.01)
                if not killed_server and elapsed >= duration / 2:
                    killed_server = True
                    t0 = time.perf_counter()
                    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
                    while time.perf_counter() - t0 < 60:
                        if len(panes.live() or {}) == len(names):
                            server_back.append(time.perf_counter() - t0)
                            break
                        time.sleep(0.01)
                finished = store.query()
                open_jobs = [t for t in finished if t.state not in ("done", "failed", "cancelled")]
                progress(f"{elapsed:5.0f} s  jobs {submitted - len(open_jobs)}/{args.jobs}  msgs {len(sent)}")
                if submitted >= args.jobs and not open_jobs and elapsed >= duration:
                    break
                if elapsed > duration + 600:
                    print("soak: gave up waiting for the last jobs after 10 more minutes", file=sys.stderr)
                    break
                time.sleep(0.05)
            # the last messages
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(
                (home / "queue" / n / "new").exists() and os.listdir(home / "queue" / n / "new") for n in names
            ):
                time.sleep(0.1)
            stop.set()
            progress_done()
            tasks = store.query()
            done = sum(t.state == "done" for t in tasks)
            failed = sum(t.state == "failed" for t in tasks)
            attempts = collections.Counter(t.attempts for t in tasks)
            comp = (work / "completions").read_text().split() if (work / "completions").exists() else []
            twice = sum(1 for c in collections.Counter(comp).values() if c > 1)
            got: collections.Counter[str] = collections.Counter()
            for n in names:
                path = home / "logs" / f"{n}.transcript.jsonl"
                if path.exists():
                    for line in path.read_text().splitlines():
                        text = json.loads(line)["text"]
                        if text.startswith("soak-msg-"):
                            got[text] += 1
            once = sum(1 for b in sent if got[b] == 1)
            lost = sum(1 for b in sent if got[b] == 0)
            doubled = sum(1 for b in sent if got[b] > 1)
            total = samples["up"] + samples["down"]
            print(f"soak: {args.minutes:g} min, {args.workers} workers, socket {socket}")
            print(
                f"  jobs done                  {done}/{args.jobs} ({failed} failed); attempts per job "
                f"{dict(sorted(attempts.items()))}"
            )
            print(f"  jobs completed twice       {twice}")
            print(f"  messages exactly once      {once}/{len(sent)} (lost {lost}, doubled {doubled})")
            print(f"  agent availability         {100 * samples['up'] / max(total, 1):.3f} % of {total} samples")
            if restart_ms:
                print(
                    f"  agent restart (kill -9)    p50 {pct(restart_ms, 50):6.1f} ms   p99 {pct(restart_ms, 99):6.1f} "
                    f"ms   ({len(restart_ms)} kills)"
                )
            if controller_back:
                print(
                    f"  controller back after kill p50 {pct(controller_back, 50):6.2f} s    max "
                    f"{max(controller_back):6.2f} s    ({len(controller_back)} kills)"
                )
            if server_back:
                print(f"  session rebuilt after tmux kill-server in {server_back[0]:.2f} s")
        finally:
            stop.set()
            store.close()
            down(home, socket, env)


if __name__ == "__main__":
    main()
