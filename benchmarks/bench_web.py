"""The dashboard's figures, against a real tmux server on a private socket, a real
controller, a real `miyabi web` and Debian's headless Chromium:

1. pane output → browser: text typed into a `cat` agent's pane (tmux send-keys) until
   the agent's page shows it (a MutationObserver notes the time in the page; the page
   and this script read the same clock), p50/p99 over --n tries;
2. `GET /api/v1/agents` with 64 agents, p50/p99: each request reads the ensemble anew
   (requests are spaced past the dashboard's 1 s cache), and p50 of cached answers;
3. CPU with the dashboard open: the controller's and the dashboard's, in percent of
   one core, over --idle seconds with the ensemble page and an agent page open in the
   browser, against the controller alone before the dashboard started;
4. the ensemble page opened → its 64 agent cards on screen (ms after the navigation
   started, in the page's own clock: a script installed before each load notes when the
   64th card is in the document), p50/p99, and ``GET /`` (the page's HTML) p50/p99.

Run:  .venv/bin/python benchmarks/bench_web.py [--n 50] [--idle 30]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil
from _ensemble import down
from _stats import pct, progress, progress_done
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from miyabi.controller import running_pid
from miyabi.home import Home
from miyabi.tmux.runner import Tmux


def cpu_percent(pid: int, seconds: float) -> float:
    """CPU use of ``pid`` (and its children) over ``seconds``, in percent of one core."""
    p = psutil.Process(pid)

    def total() -> float:
        t = p.cpu_times()
        out = t.user + t.system
        for c in p.children(recursive=True):
            try:
                ct = c.cpu_times()
                out += ct.user + ct.system
            except psutil.Error:
                pass
        return out

    before = total()
    time.sleep(seconds)
    return (total() - before) / seconds * 100


def page_value(b: webdriver.Chrome, expr: str, timeout: float, fail: str) -> float:
    """The number ``expr`` (a page's variable) gives once it is set (polled every 2 ms);
    exits saying ``fail`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = b.execute_script(f"return {expr}")
        if value is not None:
            return float(value)
        time.sleep(0.002)
    sys.exit(f"bench_web: {fail}")


def browser(user_data: Path) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={user_data}",
    ):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--idle", type=float, default=30.0)
    args = ap.parse_args()
    miyabi = Path(sys.executable).parent / "miyabi"
    socket = f"bench_w_{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        home = d / "home"
        layout = d / "webbench.yaml"
        agents = "".join(f"  - {{name: a{i:02d}, profile: shell, command: cat}}\n" for i in range(64))
        layout.write_text("session: webbench\nper_window: 8\nagents:\n" + agents)
        progress("bringing up 64 agents")
        tmux = Tmux(socket)
        web: subprocess.Popen[str] | None = None
        b = None
        try:
            subprocess.run(
                [str(miyabi), "up", str(layout), "-d", "--socket", socket, "--home", str(home)],
                check=True,
                capture_output=True,
            )
            ctl = running_pid(Home(home))
            assert ctl is not None
            time.sleep(2.0)  # let the controller settle
            progress("controller alone")
            alone = cpu_percent(ctl, args.idle)
            web = subprocess.Popen(
                [str(miyabi), "web", "--port", "0", "--home", str(home), "--socket", socket],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert web.stdout is not None
            url = ""
            while not url:
                line = web.stdout.readline()
                if not line:
                    sys.exit(f"bench_web: miyabi web did not start (exit {web.poll()})")
                if m := re.search(r"open: (\S+)", line):
                    url = m.group(1)
            base, _, token = url.partition("/?token=")
            client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)

            # 2. GET /api/v1/agents with 64 agents
            cold: list[float] = []
            for i in range(max(10, args.n // 2)):
                progress(f"GET agents (fresh) {i + 1}")
                time.sleep(1.05)
                t0 = time.perf_counter()
                r = client.get("/api/v1/agents")
                cold.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200 and len(r.json()["agents"]) == 64
            warm: list[float] = []
            for _ in range(args.n):
                t0 = time.perf_counter()
                client.get("/api/v1/agents")
                warm.append((time.perf_counter() - t0) * 1000)

            # 1. pane output → browser
            b = browser(d / "chromium")
            b.get(url.replace("/?token=", "/agents/a00?token="))
            pane = client.get("/api/v1/agents/a00").json()["pane_id"]
            deadline = time.monotonic() + 30
            while not b.execute_script(
                "return Number((document.getElementById('screen') || {dataset: {}}).dataset.frames || 0)"
            ):
                if time.monotonic() > deadline:
                    sys.exit("bench_web: the agent page showed no screen")
                time.sleep(0.05)
            lat: list[float] = []
            for i in range(args.n):
                progress(f"pane → browser {i + 1}/{args.n}")
                mark = f"m{i:04d}x{uuid.uuid4().hex[:6]}"
                b.execute_script(
                    """const mark = arguments[0]; window.seenAt = null;
                    const s = document.getElementById('screen');
                    const o = new MutationObserver(() => {
                        if (s.textContent.includes(mark)) { window.seenAt = Date.now(); o.disconnect(); } });
                    o.observe(s, {childList: true, subtree: true, characterData: true});""",
                    mark,
                )
                typed = time.time()
                tmux.run("send-keys", "-t", pane, "-l", mark)
                seen = page_value(b, "window.seenAt", 10, f"{mark} never reached the browser")
                lat.append(seen - typed * 1000)
                tmux.run("send-keys", "-t", pane, "C-u")  # an empty line for the next mark: a wrapped one is not found
                time.sleep(0.05)

            # 4. the ensemble page opened → its agents shown
            b.execute_cdp_cmd(
                "Page.addScriptToEvaluateOnNewDocument",
                {
                    "source": """window.cardsAt = null;
                    new MutationObserver((_, o) => {
                        if (document.querySelectorAll('.card').length >= 64) {
                            window.cardsAt = performance.now(); o.disconnect(); } })
                    .observe(document, {childList: true, subtree: true});"""
                },
            )
            shown: list[float] = []
            for i in range(max(10, args.n // 2)):
                progress(f"page → agents shown {i + 1}")
                b.get(base + "/")
                shown.append(page_value(b, "window.cardsAt", 30, "the ensemble page never showed 64 agents"))
            page: list[float] = []
            for _ in range(max(10, args.n // 2)):
                t0 = time.perf_counter()
                r = client.get("/", headers={"Accept": "text/html"})
                page.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200

            # 3. CPU with the dashboard open (ensemble page in a second tab, the agent page in the first)
            b.switch_to.new_window("tab")
            b.get(url)
            progress("CPU with the dashboard open")
            t_ctl = psutil.Process(ctl)
            t_web = psutil.Process(web.pid)
            c0 = sum(t_ctl.cpu_times()[:2])
            w0 = sum(t_web.cpu_times()[:2])
            time.sleep(args.idle)
            with_ctl = (sum(t_ctl.cpu_times()[:2]) - c0) / args.idle * 100
            with_web = (sum(t_web.cpu_times()[:2]) - w0) / args.idle * 100
            progress_done()
            print(
                f"pane output → browser:        p50 {pct(lat, 50):7.1f} ms   p99 {pct(lat, 99):7.1f} ms   "
                f"(n={len(lat)}; target p50 < 100 ms)"
            )
            print(
                f"GET /api/v1/agents, 64 agents: p50 {pct(cold, 50):7.1f} ms   p99 {pct(cold, 99):7.1f} ms   fresh "
                f"reading (n={len(cold)});"
                f" cached p50 {pct(warm, 50):.1f} ms"
            )
            print(
                f"ensemble page → 64 agents:    p50 {pct(shown, 50):7.1f} ms   p99 {pct(shown, 99):7.1f} ms   "
                f"after navigation start (n={len(shown)}); GET / p50 {pct(page, 50):.1f} ms, p99 {pct(page, 99):.1f} ms"
            )
            print(
                f"controller CPU:               {alone:5.2f} % of a core alone, {with_ctl:5.2f} % with the dashboard "
                "open "
                f"(extra {with_ctl - alone:+.2f} %; target < 2 %)"
            )
            print(
                f"dashboard process CPU:        {with_web:5.2f} % of a core (two pages open: the ensemble and a live "
                "screen)"
            )
        finally:
            if b is not None:
                b.quit()
            if web is not None:
                web.terminate()
                web.wait(10)
            down(home, socket)


if __name__ == "__main__":
    main()
