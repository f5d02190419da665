"""miyabi's own time to deploy a commit and to bring a killed service back, on a real tmux
server (a private socket), real git and a tiny HTTP app (the standard library's server):

- deploy: ``Deployer.deploy`` of a new commit (the checkout moved, no ``deploy:`` commands,
  the ``serve:`` pane respawned, ``health:`` polled until it answers 200), less the app's
  own start (the same app started alone until it answers, measured apart);
- restart: the served process killed (SIGKILL) → the monitor (ticking as the controller's
  thread does) has it answering again, less the app's own start.

Run:  .venv/bin/python benchmarks/bench_deploy.py [--n 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket as sockets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from _stats import pct, progress, progress_done

from miyabi import defaults
from miyabi.config.settings import WatchdogSettings
from miyabi.pipeline.deploy import Deployer
from miyabi.pipeline.monitoring import Monitor
from miyabi.tmux.runner import Tmux
from miyabi.tmux.service import find_service
from miyabi.work.store import Store

APP = """import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@x", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def free_port() -> int:
    with sockets.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def until(fn: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    """Seconds until ``fn()`` is true (polled every 5 ms).

    Raises:
        SystemExit: not within ``timeout`` seconds (naming ``what``).
    """
    start = time.perf_counter()
    while not fn():
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"bench_deploy: {what}: not within {timeout:g} s")
        time.sleep(0.005)
    return time.perf_counter() - start


def app_alone(app: Path, port: int) -> float:
    """The app's own start: launched → answering 200."""
    start = time.perf_counter()
    p = subprocess.Popen([sys.executable, str(app), str(port)])
    try:
        until(lambda: answers(f"http://127.0.0.1:{port}/"), "the app alone answering")
        return time.perf_counter() - start
    finally:
        p.kill()
        p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    args = ap.parse_args()
    socket = f"miyabi_bench_{uuid.uuid4().hex[:8]}"
    tmux = Tmux(socket)
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp_:
        tmp = Path(tmp_)
        home, repo = tmp / "home", tmp / "app"
        home.mkdir()
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        port = free_port()
        (repo / "app.py").write_text(APP)
        (repo / ".miyabi.yml").write_text(
            f"serve: '{sys.executable} app.py {port}'\nhealth: {{url: 'http://127.0.0.1:{port}/'}}\n"
        )
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "app")
        tmux.run("new-session", "-d", "-s", "bench", "-x", "120", "-y", "40")
        try:
            alone, deploys, restarts = [], [], []
            d = Deployer(home, tmux, "bench")
            assert d.deploy(repo, "main").ok
            name = d.name_of(repo)
            for i in range(args.n):
                progress(f"deploy {i + 1}/{args.n}")
                pane = find_service(tmux, "bench", name)
                assert pane is not None
                os.killpg(pane.pid, signal.SIGKILL)
                until(lambda: not answers(f"http://127.0.0.1:{port}/"), "the killed service gone")
                alone.append(app_alone(repo / "app.py", port))
                (repo / "n.txt").write_text(str(i))
                git(repo, "add", "-A")
                git(repo, "commit", "-qm", f"c{i}")
                start = time.perf_counter()
                r = d.deploy(repo, "main")
                deploys.append(time.perf_counter() - start)
                assert r.ok, r.evidence
            store = Store.of_home(home)
            m = Monitor(d, store, watchdog=WatchdogSettings(min_uptime=0.0, max_restarts=10_000))
            stop = threading.Event()
            t = threading.Thread(target=m.run, args=(stop,), daemon=True)
            t.start()
            time.sleep(1.0)  # the monitor has seen the service
            for i in range(args.n):
                progress(f"restart {i + 1}/{args.n}")
                pane = find_service(tmux, "bench", name)
                assert pane is not None
                start = time.perf_counter()
                os.killpg(pane.pid, signal.SIGKILL)
                until(lambda: not answers(f"http://127.0.0.1:{port}/"), "the killed service gone")
                until(lambda: answers(f"http://127.0.0.1:{port}/"), "the service answering again")
                restarts.append(time.perf_counter() - start)
                time.sleep(0.2)
            stop.set()
            t.join(5)
            store.close()
        finally:
            pane = find_service(tmux, "bench", d.name_of(repo))
            if pane is not None and pane.pid:
                try:
                    os.killpg(pane.pid, signal.SIGKILL)
                except OSError:
                    pass
            tmux.run("kill-server", check=False)
    progress_done()
    own = pct(alone, 50)
    print(f"app alone (its own start): p50 {own * 1000:.0f} ms")
    print(
        f"deploy: p50 {pct(deploys, 50) * 1000:.0f} ms, p99 {pct(deploys, 99) * 1000:.0f} ms; "
        f"miyabi's own p50 {(pct(deploys, 50) - own) * 1000:.0f} ms (n={args.n})"
    )
    print(
        f"killed → answering again: p50 {pct(restarts, 50) * 1000:.0f} ms, p99 {pct(restarts, 99) * 1000:.0f} ms "
        f"(the app's start included; the monitor looks every {defaults.MONITOR_TICK:g} s)"
    )


if __name__ == "__main__":
    main()
