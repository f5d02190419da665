"""Bus figures, against a private redis-server on 127.0.0.1 and real hosts (homes with
their own controllers and tmux servers on this machine):

1. cross-host send: from the call on host a to the text showing in the pane of b's
   agent, `cat` (p50, p99 over --messages, each sent when the agent is ready), seen
   through %output on a control-mode client of b's tmux server; beside it the same for
   a local send on b (the floor), and for the `miyabi send w@b` command (a new Python process each time);
2. claim throughput: tasks published, then claimed, run (marked done) and settled by
   two claimers through one Redis (tasks/s), without agents;
3. failover: the host holding a task is killed (keep-alive, controller and tmux server,
   SIGKILL); the time until the task runs on the other host, against --lease.

Run:  .venv/bin/python benchmarks/bench_bus.py [--messages 200] [--tasks 1000] [--failovers 3] [--lease 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from _ensemble import MIYABI
from _hosts import Host, Redis
from _stats import pct, progress, progress_done

from miyabi.bus.client import Bus
from miyabi.bus.messages import post_remote
from miyabi.bus.tasks import SharedTasks
from miyabi.config.settings import BusSettings
from miyabi.messaging.mailbox import post
from miyabi.tmux.control import ControlClient
from miyabi.tmux.runner import Tmux
from miyabi.work.model import TaskState
from miyabi.work.store import Store

CAT = "profile: shell, command: cat"
"""The agent of the send figures: `cat` shows what is typed at once (as in bench_delivery)."""


class PaneWatch:
    """Waits for a text in the output of a host's pane, through %output."""

    def __init__(self, host: Host) -> None:
        self.seen = ""
        self.lock = threading.Lock()
        self.changed = threading.Event()
        self.chan = ControlClient(Tmux(host.socket), host.session, on_output=self._on).start()

    def _on(self, pane: str, data: str) -> None:
        with self.lock:
            self.seen = (self.seen + data)[-20000:]
        self.changed.set()

    def wait(self, token: str, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if token in self.seen:
                    return time.perf_counter()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{token} never showed in the pane")
            self.changed.wait(0.05)
            self.changed.clear()


def sends(root: Path, r: Redis, n: int) -> None:
    root.mkdir(parents=True)
    a = Host(root, "a", r.url, ["w"], spec=CAT)
    b = Host(root, "b", r.url, ["w"], spec=CAT)
    try:
        a.up()
        b.up()
        time.sleep(3)  # both on the bus, presence written
        watch = PaneWatch(b)
        bus = Bus(BusSettings(url=r.url, host="a"))
        figures: dict[str, list[float]] = {
            "cross-host send (library)": [],
            "local send on b (floor)": [],
            "`miyabi send w@b` (new process)": [],
            "`miyabi send w` on b (new process, local)": [],
        }
        for i in range(n):
            progress(f"send {i + 1}/{n}")
            token = f"x{i}-{time.monotonic_ns()}"
            t0 = time.perf_counter()
            post_remote(a.home, bus, "b", "w", token)
            figures["cross-host send (library)"].append(watch.wait(token) - t0)
            time.sleep(0.2)  # the agent ready again (its screen settled)
            token = f"l{i}-{time.monotonic_ns()}"
            t0 = time.perf_counter()
            post(b.home, "w", token)
            figures["local send on b (floor)"].append(watch.wait(token) - t0)
            time.sleep(0.2)
            if i % 10 == 0:
                token = f"c{i}-{time.monotonic_ns()}"
                t0 = time.perf_counter()
                subprocess.run([MIYABI, "send", "w@b", token, "--home", str(a.home)], check=True, capture_output=True)
                figures["`miyabi send w@b` (new process)"].append(watch.wait(token) - t0)
                time.sleep(0.2)
                token = f"d{i}-{time.monotonic_ns()}"
                t0 = time.perf_counter()
                subprocess.run([MIYABI, "send", "w", token, "--home", str(b.home)], check=True, capture_output=True)
                figures["`miyabi send w` on b (new process, local)"].append(watch.wait(token) - t0)
                time.sleep(0.2)
        progress_done()
        bus.close()
        for what, xs in figures.items():
            print(f"{what}: p50 {pct(xs, 50) * 1000:.1f} ms, p99 {pct(xs, 99) * 1000:.1f} ms (n={len(xs)})")
    finally:
        a.close()
        b.close()


def throughput(root: Path, r: Redis, n: int) -> None:
    for d in ("origin", "claimer0", "claimer1"):
        (root / d).mkdir(parents=True)
    origin_store = Store(root / "origin" / "miyabi.db")
    origin = SharedTasks(Bus(BusSettings(url=r.url, host="origin")), origin_store, root / "origin", lease=30)
    ids = [origin_store.add(f"task {i}", labels=["agent:w"]).id for i in range(n)]
    t0 = time.perf_counter()
    for i, tid in enumerate(ids):
        if i % 100 == 0:
            progress(f"publish {i}/{n}")
        origin.publish(origin_store.get(tid), "w", 3)
    published = time.perf_counter() - t0
    progress_done()
    done = [0, 0]

    def claimer(k: int) -> None:
        store = Store(root / f"claimer{k}" / "miyabi.db")
        shared = SharedTasks(Bus(BusSettings(url=r.url, host=f"claimer{k}")), store, root / f"claimer{k}", lease=30)
        idle = 0
        while idle < 3:
            got = shared.claim_due({"w": 50})
            for c in got:  # what the scheduler and the agent would do
                store.set_state(c.task, TaskState.ASSIGNED, "routed", agent="w")
                store.done(c.task, "done")
            shared.settle()
            done[k] += len(got)
            idle = idle + 1 if not got else 0

    t0 = time.perf_counter()
    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ran = time.perf_counter() - t0
    t0 = time.perf_counter()
    while origin.apply_results():
        pass
    applied = time.perf_counter() - t0
    ended = sum(1 for t in origin_store.query(state="done"))
    print(
        f"publish: {n / published:.0f} tasks/s; claim + done + settle by 2 hosts: {n / ran:.0f} tasks/s "
        f"({done[0]} and {done[1]}); results applied at the origin: {n / applied:.0f} tasks/s; origin done: {ended}/{n}"
    )


def failover(root: Path, r: Redis, runs: int, lease: float) -> None:
    root.mkdir(parents=True)
    a = Host(root, "fa", r.url, ["w"], lease=lease)
    (root / "work").mkdir()
    times = []
    try:
        a.up()
        for k in range(runs):
            progress(f"failover {k + 1}/{runs}")
            b = Host(root, f"fb{k}", r.url, ["w"], lease=lease)
            b.up()
            time.sleep(3)
            busy = _job(root, f"busy{k}", ["sleep 3"])
            a.run("job", "submit", str(busy), "--agent", "w@fa")
            long = _job(root, f"long{k}", [f"sleep {lease + 3:g}"])
            time.sleep(0.5)
            a.run("job", "submit", str(long), "--agent", "w")
            bus_id = None
            while bus_id is None:
                rows = Store.of_home(b.home).rows(
                    "SELECT bus_id FROM bus_tasks b JOIN tasks t ON t.id=b.task"
                    " WHERE b.role='copy' AND t.state='in_progress'"
                )
                bus_id = rows[0][0] if rows else None
                time.sleep(0.05)
            b.kill()
            t0 = time.perf_counter()
            store = Store.of_home(a.home)
            while not store.rows(
                "SELECT 1 FROM bus_tasks b JOIN tasks t ON t.id=b.task WHERE b.role='copy' AND b.bus_id=?"
                " AND t.state='in_progress'",
                (bus_id,),
            ):
                time.sleep(0.02)
            times.append(time.perf_counter() - t0)
            store.close()
            b.close()
        progress_done()
        print(
            f"failover (host killed → its task running on another host), lease {lease:g} s: "
            + ", ".join(f"{t:.2f} s" for t in times)
            + f"; mean {sum(times) / len(times):.2f} s"
        )
    finally:
        a.close()


def _job(root: Path, name: str, script: list[str]) -> Path:
    f = root / f"{name}.json"
    f.write_text(
        json.dumps(
            {
                "id": name,
                "kind": "run_shell",
                "workdir": str(root / "work"),
                "script": script,
                "dod": "exit_code == 0",
                "report_path": f"{name}.report.json",
            }
        )
    )
    return f


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--failovers", type=int, default=3)
    ap.add_argument("--lease", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        r = Redis(root / "redis")
        r.start()
        try:
            sends(root / "sends", r, args.messages)
            throughput(root / "claims", r, args.tasks)
            failover(root / "failover", r, args.failovers, args.lease)
        finally:
            r.stop()


if __name__ == "__main__":
    main()
