"""Delivery figures, in one run, against a real tmux server on a private socket:

1. latency from enqueue to the text appearing in an idle `cat` agent's pane (p50,
   p99), with the controller running in the background (the `shell` profile has no
   submit delay, so none is included);
2. the same for a bare `tmux send-keys` process, the floor;
3. throughput of 8 concurrent sender processes into one `cat` agent;
4. the wall time of one `miyabi send` command.

"Text in the pane" is seen on a separate control-mode client's `%output` stream.
Run:  .venv/bin/python benchmarks/bench_delivery.py [--n 200]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _ensemble import down
from _stats import pct, progress, progress_done

from miyabi.messaging.mailbox import inbox, make
from miyabi.tmux.control import ControlClient
from miyabi.tmux.runner import Tmux


class Watch:
    """Waits for a marker to show up in a pane's output."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seen: set[str] = set()
        self.wanted: str | None = None

    def on_output(self, pane: str, data: str) -> None:
        with self.cond:
            if self.wanted and self.wanted in data:
                self.seen.add(self.wanted)
                self.cond.notify_all()

    def expect(self, marker: str) -> None:
        with self.cond:
            self.wanted = marker

    def wait(self, marker: str, timeout: float = 5.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: marker in self.seen, timeout):
                sys.exit(f"bench_delivery: {marker} never showed up")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="messages per latency figure")
    ap.add_argument("--tail", action="store_true", help="also print the slowest latencies")
    args = ap.parse_args()
    miyabi = Path(sys.executable).parent / "miyabi"
    socket = f"bench_d_{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        out = d / "sink.out"
        layout = d / "bench.yaml"
        layout.write_text(
            "session: bench\nagents:\n"
            "  - {name: echo, profile: shell, command: cat}\n"
            f"  - name: sink\n    profile: shell\n    command: sh -c 'stty -echo; exec cat > {out}'\n"
        )
        home = d / "home"
        tmux = Tmux(socket)
        try:
            subprocess.run(
                [str(miyabi), "up", str(layout), "-d", "--socket", socket, "--home", str(home)],
                check=True,
                capture_output=True,
            )
            panes = dict(
                line.split()
                for line in tmux.run("list-panes", "-s", "-t", "=bench:", "-F", "#{@miyabi_agent} #{pane_id}")
            )
            watch = Watch()
            chan = ControlClient(tmux, "bench", on_output=watch.on_output).start()
            box = inbox(home, "echo")

            def via_miyabi(marker: str) -> None:
                box.put(make("echo", marker))

            def via_tmux(marker: str) -> None:
                subprocess.run(["tmux", "-L", socket, "send-keys", "-t", panes["echo"], "-l", marker], check=True)

            # Warm up: the controller has just started (its deliverers begin after the
            # first pane listing); measure the steady state.
            for _ in range(5):
                marker = f"W{uuid.uuid4().hex[:10]}"
                watch.expect(marker)
                via_miyabi(marker)
                watch.wait(marker)
            results = {}
            for label, fn in (("miyabi", via_miyabi), ("floor", via_tmux)):
                lat = []
                for i in range(args.n):
                    progress(f"{label} {i + 1}/{args.n}")
                    marker = f"M{uuid.uuid4().hex[:10]}"
                    watch.expect(marker)
                    t0 = time.perf_counter()
                    fn(marker)
                    watch.wait(marker)
                    lat.append((time.perf_counter() - t0) * 1000)
                    time.sleep(0.01)
                results[label] = lat
            chan.close()

            # throughput: 8 sender processes x 100 messages into the sink
            per = 100
            script = (
                "import sys; from miyabi.cli.send import main\n"
                "s, home, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
                "for i in range(n):\n"
                "    assert main('send', ['sink', f'{s}-{i}', '--from', s, '--home', home]) == 0\n"
            )
            progress("throughput...")
            t0 = time.perf_counter()
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", script, f"s{k}", str(home), str(per)], stdout=subprocess.DEVNULL
                )
                for k in range(8)
            ]
            for p in procs:
                p.wait()
            t_sent = time.perf_counter() - t0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if out.exists() and len(out.read_text().splitlines()) >= 8 * per:
                    break
                time.sleep(0.01)
            t_all = time.perf_counter() - t0
            got = len(out.read_text().splitlines()) if out.exists() else 0

            # wall time of one `miyabi send`
            walls = []
            for _ in range(20):
                t0 = time.perf_counter()
                subprocess.run(
                    [str(miyabi), "send", "sink", "wall", "--home", str(home)], check=True, capture_output=True
                )
                walls.append((time.perf_counter() - t0) * 1000)
        finally:
            down(home, socket)
        progress_done()

    m, f = results["miyabi"], results["floor"]
    if "--tail" in sys.argv:
        print("slowest miyabi:", [round(x, 1) for x in sorted(m)[-12:]])
    print(f"bench_delivery: {args.n} messages each, one idle `cat` agent, socket {socket}")
    print(f"  enqueue → text in pane (miyabi)      p50 {pct(m, 50):6.2f} ms   p99 {pct(m, 99):6.2f} ms")
    print(f"  tmux send-keys process (floor)       p50 {pct(f, 50):6.2f} ms   p99 {pct(f, 99):6.2f} ms")
    print(f"  miyabi p50 above the floor           {pct(m, 50) - pct(f, 50):6.2f} ms")
    print(
        f"  8 senders x {per}: {got}/{8 * per} delivered in {t_all:.2f} s ({got / t_all:.0f} msg/s; enqueueing took "
        f"{t_sent:.2f} s)"
    )
    print(
        f"  one `miyabi send` command (wall)     median {statistics.median(walls):6.1f} ms   min {min(walls):6.1f} ms"
    )


if __name__ == "__main__":
    main()
