"""A soak run of the whole ensemble under fire, against real tmux servers.

One host (``--hosts 1``, the default): --workers ``worker`` agents run --jobs jobs
(each sleeps 1-4 s, then appends its id to a completions file as its last step) while
messages are sent to random agents, an agent is SIGKILLed at random (mid-job, mostly)
every --agent-kill seconds, the controller is SIGKILLed every --controller-kill
seconds (its keep-alive brings it back) and the tmux server is killed once, half way
(the controller builds the session again). Kills come at random intervals, from half to
one and a half times their mean, so that they fall on each other only by chance.

Several hosts (``--hosts 3``): as many homes, each with its own controller and tmux
server (a private socket) and the same --workers agents, joined by the bus through a
private redis-server on 127.0.0.1 (append-only file, fsync always) that this script
starts. Jobs are submitted at the hosts in turn for an agent by name (any host), so
they are published on the bus and any host may claim them; every message goes from one
host to an agent of another (``NAME@HOST``). Each host has an agent SIGKILLed every
--agent-kill seconds and its controller every --controller-kill seconds (the hosts
take turns); the last host's tmux server is killed at a third of the run, and Redis is
SIGKILLed half way and started again --redis-down seconds later on the same port and
files (meanwhile messages wait in the senders' bus outboxes).

Jobs are submitted evenly over the first 80 % of --minutes (default: 40 a minute per
host); the run then waits for the last ones and the last messages.

It prints: jobs done (and failed), jobs completed twice (an id twice in the completions
file) and, on the bus, results written twice for one job; messages delivered exactly
once / lost / doubled (by the agents' transcripts); agent availability (the share of
0.1 s samples in which an agent's pane held a live process); time to recover, p50/p99:
an agent after kill -9 (a new live pid in its pane), a controller (a new pid; and
ready again: its ``controller-ready`` event, when it watches the agents again), a
session after kill-server (every agent live again), every host's bus after Redis came
back (``run/bus.json`` up again); and hand-offs after usage limits, with ``--limits``:
each host's first worker rehearses a provider's usage limit (``miyabi worker
--quota``: after every 15 messages it refuses the next ones for 60 s), so miyabi parks
it, hands its tasks to the other workers after 20 s, and tells it to go on at the
reset (:func:`hand_offs` counts parks, hand-offs and parks ended). A job that
completed twice is explained: each
host's task for it, its recorded steps, and the kills near them. ``--raw FILE`` writes
every time to recover with its kind, place and moment.

Run:  .venv/bin/python benchmarks/soak.py [--minutes 10] [--hosts 1] [--workers 4] [--jobs N]
      .venv/bin/python benchmarks/soak.py --hosts 3 --minutes 60
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from _ensemble import down, up
from _hosts import Host, Redis
from _stats import pct, progress, progress_done

from miyabi.bus.client import Bus
from miyabi.bus.messages import post_remote
from miyabi.bus.state import read_state
from miyabi.cli.send import main as send_main
from miyabi.config.settings import BusSettings
from miyabi.controller import running_pid
from miyabi.home import Home
from miyabi.messaging.mailbox import MessageState, inbox
from miyabi.work.jobs import submit
from miyabi.work.store import Store

JOBS_PER_MINUTE = 40
"""Jobs submitted per minute and host when --jobs is not given (400 in 10 minutes on one host)."""
WATCHDOG = "{min_uptime: 0, max_restarts: 100000, restart_window: 60}"
TASKS = "tasks: {max_attempts: 10}"
QUOTA, QUOTA_RESET, HANDOFF_AFTER = 15, 60, 20
"""With --limits: the first worker of each host takes 15 messages, then its rehearsed
usage limit refuses the next ones for 60 s (``miyabi worker --quota``); parked 20 s, its
tasks go to the other workers (``park: {handoff_after: 20s, to: [...]}``)."""
HANDOFFS = "hand-offs: not measured (run with --limits)"
"""What the hand-offs line says without --limits."""
ENDED = ("done", "failed", "cancelled")


class Panes:
    """Reads a session's panes from a tmux process each time (it survives kill-server)."""

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


@dataclass
class Site:
    """One host of the soak: its home, tmux server and session, and (on the bus) a
    connection to send from it."""

    name: str
    home: Path
    socket: str
    panes: Panes
    bus: Bus | None = None
    store: Store | None = None
    jobs: list[tuple[str, int]] = field(default_factory=list)
    """(job id, task id in this home) of the jobs submitted here."""

    def open(self) -> Store:
        if self.store is None:
            self.store = Store.of_home(self.home)
        return self.store

    def ended(self) -> int:
        """How many of the jobs submitted here ended (done, failed, cancelled)."""
        if not self.jobs:
            return 0
        rows = self.open().rows(
            f"SELECT COUNT(*) FROM tasks WHERE id IN ({','.join('?' * len(self.jobs))}) AND state IN "
            "('done', 'failed', 'cancelled')",
            tuple(t for _, t in self.jobs),
        )
        return int(rows[0][0])


class Recovery:
    """Times to recover, by kind, each measured on a thread of its own from the blow to
    ``back()`` turning true (polled every 5 ms); one not back within ``timeout`` is
    counted as never."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self.never: collections.Counter[str] = collections.Counter()
        self.busy: set[str] = set()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.raw: list[dict[str, object]] = []
        """Each measure: kind, what, when (Unix time of the blow), seconds (None: never back)."""

    def watching(self, what: str) -> bool:
        with self.lock:
            return what in self.busy

    def watch(self, kind: str, what: str, back: Callable[[], bool], timeout: float, t0: float | None = None) -> None:
        start = time.perf_counter() if t0 is None else t0
        when = time.time() - (time.perf_counter() - start)
        with self.lock:
            self.busy.add(what)

        def run() -> None:
            try:
                while time.perf_counter() - start < timeout:
                    if back():
                        took = time.perf_counter() - start
                        with self.lock:
                            self.times[kind].append(took)
                            self.raw.append({"kind": kind, "what": what, "when": when, "seconds": took})
                        return
                    time.sleep(0.005)
                with self.lock:
                    self.never[kind] += 1
                    self.raw.append({"kind": kind, "what": what, "when": when, "seconds": None})
            finally:
                with self.lock:
                    self.busy.discard(what)

        t = threading.Thread(target=run, daemon=True)
        self.threads.append(t)
        t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join()

    def line(self, kind: str, label: str, unit: float, suffix: str) -> str | None:
        """``    LABEL p50 … p99 … (N)`` for ``kind`` (times × ``unit`` in ``suffix``), or None
        when nothing of that kind was measured."""
        xs, never = self.times.get(kind, []), self.never.get(kind, 0)
        if not xs and not never:
            return None
        left = f", {never} never back" if never else ""
        if not xs:
            return f"    {label:<27}never back ({never})"
        digits = 1 if suffix == "ms" else 2
        p50, p99 = pct(xs, 50) * unit, pct(xs, 99) * unit
        return f"    {label:<27}p50 {p50:7.{digits}f} {suffix:<2}  p99 {p99:7.{digits}f} {suffix:<2}  ({len(xs)}{left})"


def hand_offs(args: argparse.Namespace, sites: list[Site]) -> str:
    """The hand-offs line (``--limits``): parks at the rehearsed usage limit, the tasks
    handed off to another worker, and the parks that ended, from every host's event log."""
    if not args.limits:
        return HANDOFFS
    kinds: collections.Counter[str] = collections.Counter()
    for s in sites:
        for line in (s.home / "logs" / "events.jsonl").read_text().splitlines():
            e = json.loads(line)
            if e.get("event") == "agent-parked" and e.get("reason") == "limit":
                kinds["parked"] += 1
            elif e.get("event") == "task-handed-off":
                kinds["handed"] += 1
            elif e.get("event") == "agent-unparked":
                kinds["unparked"] += 1
    return (
        f"hand-offs                  {kinds['handed']} tasks handed off; {kinds['parked']} parks at a usage "
        f"limit, {kinds['unparked']} ended (w0 of each host: --quota {QUOTA}, reset {QUOTA_RESET} s)"
    )


def limited(names: list[str]) -> dict[str, str]:
    """With --limits, the first worker's keys: its rehearsed usage limit and its hand-offs."""
    to = ", ".join(names[1:])
    return {
        names[0]: f"profile: worker, command: 'miyabi worker --quota {QUOTA} --quota-reset {QUOTA_RESET}', "
        f"park: {{handoff_after: {HANDOFF_AFTER}s, to: [{to}]}}"
    }


def whereabouts(sites: list[Site], host: str, agent: str, body: str) -> str:
    """Where a message that never reached its agent's transcript is: its inbox state
    (and a dead letter's reason), or not in the inbox at all."""
    site = next((s for s in sites if s.name == host), sites[0])
    states = (MessageState.PENDING, MessageState.DELIVERED, MessageState.FAILED)
    for state, msg in inbox(site.home, agent).list(states):
        if msg.body == body:
            return f"{state} ({msg.extra.get('reason', '')})" if state == MessageState.FAILED else str(state)
    return "not in its inbox"


def explain(sites: list[Site], jid: str, rec: Recovery) -> None:
    """Print, for a job that completed twice, each host's task for it: its changes, its
    recorded steps, and the blows (kills) near them."""
    times: list[float] = []
    for s in sites:
        store = s.open()
        for row in store.rows("SELECT id, state FROM tasks WHERE title=?", (f"job {jid}",)):
            print(f"    {jid} on {s.name}: task {row['id']} {row['state']}")
            for h in store.history(row["id"]):
                print(f"      {h['time']} {h['state']:<11} {h['agent'] or '-':<6} {str(h['reason'])[:110]}")
            for st in store.job_steps(row["id"]):
                times.append(float(st["started"]))
                ended = "running or cut" if st["exit_code"] is None else f"exit {st['exit_code']}"
                print(
                    f"      step {st['attempt']}.{st['step']} by {st['agent']} at {st['started']:.3f}"
                    f" ({st['seconds']} s): {ended}: {st['command']}"
                )
    for m in rec.raw:
        if times and min(times) - 5 <= float(str(m["when"])) <= max(times) + 10:
            print(f"      blow at {float(str(m['when'])):.3f}: {m['kind']} {m['what']} back after {m['seconds']}")


def ready_pids(home: Path) -> set[int]:
    """The pids of the controllers that said ``controller-ready`` near the end of the
    home's event log (its last 64 KiB: the log grows for the whole run)."""
    try:
        with (home / "logs" / "events.jsonl").open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            tail = f.read().decode(errors="replace")
    except OSError:
        return set()
    out = set()
    for line in tail.splitlines():
        if '"controller-ready"' in line:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                out.add(int(json.loads(line)["pid"]))
    return out


def bus_up_since(home: Path, t: float) -> bool:
    """Whether the home's controller says its bus is up, since Unix time ``t`` or later."""
    state = read_state(home)
    if not state or state.get("state") != "up":
        return False
    try:
        return datetime.fromisoformat(str(state["since"])).timestamp() >= t
    except (KeyError, ValueError):
        return False


def transcripts(sites: list[Site], names: list[str]) -> collections.Counter[tuple[str, str, str]]:
    """(host, agent, text) → how often the agent's transcript holds it (soak messages only)."""
    got: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for s in sites:
        for n in names:
            path = s.home / "logs" / f"{n}.transcript.jsonl"
            if path.exists():
                for line in path.read_text().splitlines():
                    text = json.loads(line)["text"]
                    if text.startswith("soak-msg-"):
                        got[(s.name, n, text)] += 1
    return got


@contextlib.contextmanager
def ensemble(args: argparse.Namespace, d: Path, names: list[str]) -> Iterator[tuple[list[Site], Redis | None]]:
    """The hosts, up; brought down (and Redis stopped) at the end."""
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE", "MIYABI_AGENT")}
    if args.hosts == 1:
        socket = f"soak_{os.urandom(3).hex()}"
        home = d / "home"
        layout = d / "soak.yaml"
        specs = limited(names) if args.limits else {}
        agents = "".join(f"  - {{name: {n}, {specs.get(n, 'profile: worker')}}}\n" for n in names)
        layout.write_text(f"session: soak\nwatchdog: {WATCHDOG}\n{TASKS}\nagents:\n" + agents)
        try:
            up(layout, socket, home, env)
            yield [Site("local", home, socket, Panes(socket, "soak"))], None
        finally:
            down(home, socket, env)
        return
    r = Redis(d / "redis")
    r.start()
    hosts = [
        Host(
            d,
            chr(ord("a") + i),
            r.url,
            names,
            lease=args.lease,
            watchdog=WATCHDOG,
            extra=[TASKS],
            specs=limited(names) if args.limits else None,
        )
        for i in range(args.hosts)
    ]
    try:
        for h in hosts:
            h.up()
        sites = [
            Site(h.name, h.home, h.socket, Panes(h.socket, h.session), Bus(BusSettings(url=r.url, host=h.name)))
            for h in hosts
        ]
        deadline = time.monotonic() + 60  # every host on the bus before the first job
        while not all(bus_up_since(s.home, 0) for s in sites):
            if time.monotonic() > deadline:
                raise SystemExit("soak: a host's bus did not come up within 60 s")
            time.sleep(0.1)
        yield sites, r
        for s in sites:
            if s.bus is not None:
                s.bus.close()
    finally:
        try:
            for h in hosts:
                h.close()
        finally:
            r.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--hosts", type=int, default=1, help="homes on one machine; more than 1 joins them by a bus")
    ap.add_argument("--workers", type=int, default=4, help="worker agents per host")
    ap.add_argument("--jobs", type=int, default=None, help=f"default: {JOBS_PER_MINUTE} a minute per host")
    ap.add_argument("--agent-kill", type=float, default=12.0, help="seconds between agent kills on each host")
    ap.add_argument("--controller-kill", type=float, default=60.0, help="seconds between controller kills per host")
    ap.add_argument("--message-every", type=float, default=1.0, help="seconds between messages")
    ap.add_argument("--redis-down", type=float, default=10.0, help="seconds Redis stays down half way (--hosts > 1)")
    ap.add_argument("--lease", type=float, default=30.0, help="bus.lease in seconds (--hosts > 1)")
    ap.add_argument(
        "--limits", action="store_true", help="each host's first worker hits a rehearsed usage limit and hands off"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--raw", type=Path, help="write every time to recover measured to this JSON file")
    args = ap.parse_args()
    if args.hosts < 1:
        ap.error("--hosts must be 1 or more")
    jobs = args.jobs if args.jobs is not None else round(JOBS_PER_MINUTE * args.minutes * args.hosts)
    rng = random.Random(args.seed)
    names = [f"w{i}" for i in range(args.workers)]
    duration = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        work = d / "work"
        work.mkdir()
        with ensemble(args, d, names) as (sites, redis_server):
            soak(args, rng, sites, redis_server, names, jobs, duration, d, work)


def soak(
    args: argparse.Namespace,
    rng: random.Random,
    sites: list[Site],
    redis_server: Redis | None,
    names: list[str],
    jobs: int,
    duration: float,
    d: Path,
    work: Path,
) -> None:
    on_bus = redis_server is not None
    stop = threading.Event()
    samples: collections.Counter[str] = collections.Counter()  # "up", "down"
    rec = Recovery()
    sent: list[tuple[str, str, str]] = []  # (host, agent, text)
    spooled = 0

    def sample() -> None:
        while not stop.wait(0.1):
            for s in sites:
                live = s.panes.live() or {}
                for n in names:
                    samples["up" if n in live else "down"] += 1

    threading.Thread(target=sample, daemon=True).start()
    start = time.monotonic()
    next_job = next_msg = next_agent_kill = start + 2.0
    next_ctl_kill = start + 2.0 + rng.uniform(0.5, 1.5) * args.controller_kill / len(sites)
    kills = ctl_kills = 0
    server_at = duration / 3 if on_bus else duration / 2
    killed_server = False
    redis_at: float | None = duration / 2
    redis_back_at: float | None = None
    submitted = 0
    ended, next_count = 0, 0.0
    while True:
        now = time.monotonic()
        elapsed = now - start
        if submitted < jobs and now >= next_job:
            jid = f"job-{submitted:05d}"
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
            origin = sites[submitted % len(sites)]
            tid, _ = submit(origin.open(), f, names[(submitted // len(sites)) % len(names)])
            origin.jobs.append((jid, tid))
            submitted += 1
            next_job = start + 2.0 + submitted * (duration * 0.8) / jobs
        if elapsed < duration and now >= next_msg:
            body = f"soak-msg-{len(sent):05d}"
            agent = rng.choice(names)
            if on_bus:
                src, dst = rng.sample(sites, 2)
                assert src.bus is not None
                _, went = post_remote(src.home, src.bus, dst.name, agent, body, sender="soak")
                spooled += not went
                sent.append((dst.name, agent, body))
            else:
                with contextlib.redirect_stdout(io.StringIO()):  # the id it prints
                    argv = [agent, body, "--from", "soak", "--home", str(sites[0].home)]
                    if send_main("send", argv) == 0:
                        sent.append((sites[0].name, agent, body))
            next_msg = now + args.message_every
        if elapsed < duration and now >= next_agent_kill:
            site = sites[kills % len(sites)]
            kills += 1
            next_agent_kill = now + rng.uniform(0.5, 1.5) * args.agent_kill / len(sites)
            victim = rng.choice(names)
            old = (site.panes.live() or {}).get(victim)
            if old is not None and not rec.watching(f"{site.name}/{victim}"):
                t0 = time.perf_counter()
                with contextlib.suppress(ProcessLookupError):
                    os.kill(old, signal.SIGKILL)

                def agent_back(site: Site = site, victim: str = victim, old: int = old) -> bool:
                    pid = (site.panes.live() or {}).get(victim)
                    return pid is not None and pid != old

                rec.watch("agent", f"{site.name}/{victim}", agent_back, 30, t0)
        if elapsed < duration and now >= next_ctl_kill:
            site = sites[ctl_kills % len(sites)]
            ctl_kills += 1
            next_ctl_kill = now + rng.uniform(0.5, 1.5) * args.controller_kill / len(sites)
            h = Home(site.home)
            pid = running_pid(h)
            if pid and not rec.watching(f"{site.name}/controller"):
                t0 = time.perf_counter()
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

                def controller_back(h: Home = h, pid: int = pid) -> bool:
                    p = running_pid(h)
                    return p is not None and p != pid

                def controller_ready(h: Home = h, pid: int = pid) -> bool:
                    p = running_pid(h)
                    return p is not None and p != pid and p in ready_pids(h.root)

                rec.watch("controller", f"{site.name}/controller", controller_back, 60, t0)
                rec.watch("ready", f"{site.name}/ready", controller_ready, 60, t0)
        if not killed_server and elapsed >= server_at:
            killed_server = True
            site = sites[-1]
            t0 = time.perf_counter()
            subprocess.run(["tmux", "-L", site.socket, "kill-server"], capture_output=True, check=False)

            def session_back(site: Site = site) -> bool:
                return len(site.panes.live() or {}) == len(names)

            rec.watch("session", f"{site.name}/session", session_back, 120, t0)
        if redis_server is not None and redis_at is not None and elapsed >= redis_at:
            redis_at = None
            redis_server.stop()
            redis_back_at = now + args.redis_down
        if redis_server is not None and redis_back_at is not None and now >= redis_back_at:
            redis_back_at = None
            redis_server.start()
            t0, wall = time.perf_counter(), time.time()

            def bus_back(wall: float = wall) -> bool:
                return all(bus_up_since(s.home, wall) for s in sites)

            rec.watch("bus", "bus", bus_back, 120, t0)
        if now >= next_count:
            ended = sum(s.ended() for s in sites)
            next_count = now + 1.0
            progress(f"{elapsed:5.0f} s  jobs {ended}/{jobs}  msgs {len(sent)}")
        if submitted >= jobs and ended >= jobs and elapsed >= duration and redis_back_at is None:
            break
        if elapsed > duration + 600:
            print("soak: gave up waiting for the last jobs after 10 more minutes", file=sys.stderr)
            break
        time.sleep(0.05)
    # the last messages (those that waited in an outbox, or for a host's session, or for
    # a worker parked at its rehearsed usage limit: a few of its resets with --limits)
    deadline = time.monotonic() + 120 + (5 * QUOTA_RESET if args.limits else 0)
    while True:
        got = transcripts(sites, names)
        if all(got[m] for m in sent) or time.monotonic() > deadline:
            break
        time.sleep(1)
    stop.set()
    rec.join()
    progress_done()
    report(args, sites, names, jobs, work, sent, got, samples, rec, spooled, on_bus)


def report(
    args: argparse.Namespace,
    sites: list[Site],
    names: list[str],
    jobs: int,
    work: Path,
    sent: list[tuple[str, str, str]],
    got: collections.Counter[tuple[str, str, str]],
    samples: collections.Counter[str],
    rec: Recovery,
    spooled: int,
    on_bus: bool,
) -> None:
    states: collections.Counter[str] = collections.Counter()
    ran_on: collections.Counter[str] = collections.Counter()
    attempts: collections.Counter[int] = collections.Counter()
    for s in sites:
        store = s.open()
        for _, tid in s.jobs:
            t = store.get(tid)
            states[str(t.state)] += 1
            attempts[t.attempts] += 1
            if t.agent:
                ran_on[str(t.agent).partition("@")[2] or s.name] += 1
    comp = (work / "completions").read_text().split() if (work / "completions").exists() else []
    twice = sum(1 for c in collections.Counter(comp).values() if c > 1)
    once = sum(1 for m in sent if got[m] == 1)
    lost = sum(1 for m in sent if got[m] == 0)
    doubled = sum(1 for m in sent if got[m] > 1)
    total = samples["up"] + samples["down"]
    where = f"{len(sites)} hosts on one Redis" if on_bus else f"socket {sites[0].socket}"
    print(f"soak: {args.minutes:g} min, {len(sites)} × {len(names)} workers, {where}")
    other = {k: v for k, v in states.items() if k not in ("done", "failed")}
    print(
        f"  jobs done                  {states['done']}/{jobs} ({states['failed']} failed"
        + (f", {other} not done" if other else "")
        + ")"
        + ("" if on_bus else f"; attempts per job {dict(sorted(attempts.items()))}")
    )
    if on_bus:
        results: collections.Counter[str] = collections.Counter()
        claims: collections.Counter[str] = collections.Counter()
        for s in sites:
            for line in (s.home / "logs" / "events.jsonl").read_text().splitlines():
                e = json.loads(line)
                if e.get("event") == "bus-result":
                    results[f"{s.name}:{e['task']}"] += 1
            for row in s.open().rows("SELECT bus_id FROM bus_tasks WHERE role='copy'"):
                claims[str(row[0]).rsplit(":", 2)[0]] += 1  # HOST:TASK of HOST:TASK:N:NONCE
        per_job = collections.Counter(claims.values())
        print(
            f"  ran on hosts               {dict(sorted(ran_on.items()))}; "
            f"hosts' copies per job {dict(sorted(per_job.items()))}"
        )
    print(f"  jobs completed twice       {twice}")
    for jid in [j for j, n in collections.Counter(comp).items() if n > 1][:5]:
        explain(sites, jid, rec)
    if on_bus:
        print(f"  jobs ended twice (results) {sum(1 for n in results.values() if n > 1)}")
    went = f"; {spooled} waited in an outbox" if on_bus else ""
    print(f"  messages exactly once      {once}/{len(sent)} (lost {lost}, doubled {doubled}{went})")
    for host, agent, body in [m for m in sent if got[m] == 0][:5]:
        print(f"    lost: {agent} on {host}, {body[:40]!r}: {whereabouts(sites, host, agent, body)}")
    print(f"  agent availability         {100 * samples['up'] / max(total, 1):.3f} % of {total} samples")
    print("  time to recover")
    for kind, label, unit, suffix in (
        ("agent", "agent (kill -9)", 1000.0, "ms"),
        ("controller", "controller (kill -9)", 1.0, "s"),
        ("ready", "  … and ready again", 1.0, "s"),
        ("session", "session (kill-server)", 1.0, "s"),
        ("bus", "bus on every host (Redis)", 1.0, "s"),
    ):
        figures = rec.line(kind, label, unit, suffix)
        if figures is not None:
            print(figures)
    print(f"  {hand_offs(args, sites)}")
    if args.raw:
        args.raw.write_text(json.dumps(sorted(rec.raw, key=lambda m: float(str(m["when"]))), indent=1))


if __name__ == "__main__":
    main()
