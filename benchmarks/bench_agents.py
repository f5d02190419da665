"""The real agent CLIs under miyabi, each talking to the model stand-in
(tests/fakemodel.py) on 127.0.0.1, idle between messages:

1. per CLI, ``miyabi send`` (the in-process send path) → the model receiving the
   prompt, p50/p99, next to the profile's submit delay (target: within the delay +
   100 ms);
2. per CLI, miyabi's own decision time: the message enqueued → its typing starting,
   for an agent whose hook (or screen) says it is ready (target with a hook: < 20 ms);
3. one hook run with a Claude-sized payload, p50/p99, as installed (``python -I -S
   miyabi/cli/hook.py Stop``) and as the ``miyabi hook Stop`` console command (the
   cost a hook adds to each agent event; target: well under 50 ms).

The CLIs are the ones scripts/test installs (``$MIYABI_AGENT_CLIS``).
Run:  .venv/bin/python benchmarks/bench_agents.py [--n 20] [--cli claude codex aider gemini opencode]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _ensemble import MIYABI, down
from _stats import pct, progress, progress_done

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakemodel import FakeModel
from integration.real_agents import setup

from miyabi.agents.profiles import BUILTIN
from miyabi.cli.send import main as send_main
from miyabi.messaging.activity import read_seen
from miyabi.times import parse_rfc3339
from miyabi.tmux.builder import hook_command


def wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            sys.exit(f"bench_agents: timed out waiting for {what}")
        time.sleep(0.01)


def events(home: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (home / "logs" / "events.jsonl").read_text().splitlines()]


def one_cli(name: str, n: int) -> tuple[list[float], list[float], str]:
    """(send → model seconds, enqueue → typing seconds, who told "ready") for ``n``
    messages to an idle agent of CLI ``name``."""
    with tempfile.TemporaryDirectory(prefix="bench-agents-") as d, FakeModel(delay=0.05) as model:
        tmp = Path(d)
        s = setup(name, tmp, model.url)
        lay = tmp / "bench.yaml"
        lay.write_text("session: bench\nagents:\n" + s.block("a"))
        home = tmp / "home"
        home.mkdir()
        sock = f"bench_agents_{uuid.uuid4().hex[:8]}"
        base = ["--socket", sock, "--home", str(home)]
        try:
            subprocess.run([MIYABI, "up", str(lay), "-d", *base], check=True, capture_output=True)
            wait(
                lambda: (read_seen(home, "a") or None) is not None and read_seen(home, "a").state == "ready",  # type: ignore[union-attr]
                120,
                f"{name} ready",
            )
            to_model: list[float] = []
            via = ""
            for i in range(n):
                progress(f"{name} {i + 1}/{n}")
                wait(lambda: (seen := read_seen(home, "a")) is not None and seen.state == "ready", 60, "ready")
                time.sleep(0.5)  # idle: the agent is waiting, nothing in flight
                seen = read_seen(home, "a")
                via = seen.via if seen else ""
                tag = uuid.uuid4().hex[:10]
                before = len(model.prompts())
                t0 = time.time()
                with contextlib.redirect_stdout(io.StringIO()):
                    send_main("send", ["a", f"bench {tag}", "--home", str(home)])
                wait(
                    lambda b=before, t=tag: len(model.prompts()) > b and t in model.prompts()[-1].prompt,
                    60,
                    "the prompt",
                )
                to_model.append(model.prompts()[-1].started - t0)
            evs = events(home)
            enq = {e["id"]: parse_rfc3339(str(e["time"])) for e in evs if e["event"] == "enqueued"}
            decide = [
                parse_rfc3339(str(e["time"])) - enq[e["id"]] for e in evs if e["event"] == "typing" and e["id"] in enq
            ]
            return to_model, decide, via
        finally:
            down(home, sock)


def hook_runs(n: int, argv: list[str]) -> list[float]:
    payload = json.dumps(
        {
            "session_id": "s" * 36,
            "transcript_path": "/tmp/" + "t" * 90,
            "cwd": "/tmp",
            "hook_event_name": "Stop",
            "stop_hook_active": False,
            "last_assistant_message": "x" * 2000,
        }
    )
    out: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-hook-") as d:
        env = dict(os.environ, MIYABI_HOME=d, MIYABI_AGENT="a")
        for i in range(n):
            progress(f"hook {i + 1}/{n}")
            t0 = time.perf_counter()
            subprocess.run(argv, input=payload.encode(), env=env, check=True)
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="messages per CLI")
    ap.add_argument("--cli", nargs="*", default=["claude", "codex", "aider", "gemini", "opencode"])
    args = ap.parse_args()
    rows = []
    for name in args.cli:
        to_model, decide, via = one_cli(name, args.n)
        rows.append((name, to_model, decide, via))
    installed = hook_runs(max(30, args.n), [*hook_command(), "Stop"])
    console = hook_runs(max(30, args.n), [MIYABI, "hook", "Stop"])
    progress_done()
    print(
        f"{'cli':<8} {'send→model p50':>15} {'p99':>8} {'submit delay':>13} {'decision p50':>13} {'p99':>8}  ready "
        "told by"
    )
    for name, to_model, decide, via in rows:
        print(
            f"{name:<8} {statistics.median(to_model) * 1000:>12.0f} ms {pct(to_model, 99) * 1000:>5.0f} ms "
            f"{BUILTIN[name].submit_delay * 1000:>10.0f} ms {statistics.median(decide) * 1000:>10.1f} ms "
            f"{pct(decide, 99) * 1000:>5.1f} ms  {via}"
        )
    for label, runs in (("hook as installed", installed), ("miyabi hook (console)", console)):
        print(
            f"{label}: p50 {statistics.median(runs) * 1000:.1f} ms, p99 {pct(runs, 99) * 1000:.1f} ms ({len(runs)} "
            "runs)"
        )


if __name__ == "__main__":
    main()
