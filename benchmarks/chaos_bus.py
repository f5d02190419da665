"""The bus under chaos: 3 hosts × 4 worker agents share a private redis-server; host a
publishes --jobs jobs for w1..w4 (any host) while messages go between hosts. At 30 %
done host c dies (keep-alive, controller, tmux server: SIGKILL) and comes back --down
seconds later; at 60 % Redis is killed and started again on its append-only file.

It prints whether every job ended done, whether any ended twice (one result per
task at the origin), how many jobs ran to their end more than once (jobs are
at-least-once: one killed between its last step and its report runs again), and
whether any message was lost or doubled (each is looked for in its agent's transcript).

Run:  .venv/bin/python benchmarks/chaos_bus.py [--jobs 300] [--messages 100] [--down 10]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import threading
import time
from pathlib import Path

from _hosts import Host, Redis
from _stats import progress, progress_done

from miyabi.bus.client import Bus
from miyabi.bus.messages import post_remote
from miyabi.config.settings import BusSettings
from miyabi.work.jobs import submit
from miyabi.work.store import Store

AGENTS = ["w1", "w2", "w3", "w4"]


def transcript(home: Path, agent: str) -> list[str]:
    f = home / "logs" / f"{agent}.transcript.jsonl"
    return [json.loads(line)["text"] for line in f.read_text().splitlines()] if f.exists() else []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--down", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        r = Redis(root / "redis")
        r.start()
        hosts = {n: Host(root, n, r.url, AGENTS) for n in ("a", "b", "c")}
        work = root / "work"
        work.mkdir()
        try:
            for h in hosts.values():
                h.up()
            time.sleep(3)
            started = time.monotonic()
            store = Store.of_home(hosts["a"].home)
            ids = []
            for i in range(args.jobs):
                f = root / f"j{i}.json"
                f.write_text(
                    json.dumps(
                        {
                            "id": f"j{i}",
                            "kind": "run_shell",
                            "workdir": str(work),
                            "script": ["sleep 0.2", f"echo j{i} >> done.txt"],
                            "dod": "exit_code == 0",
                            "report_path": f"j{i}.report.json",
                        }
                    )
                )
                ids.append(submit(store, f, AGENTS[i % len(AGENTS)])[0])
            sent: list[tuple[str, str, str]] = []  # (host, agent, text)

            def talk() -> None:
                buses = {n: Bus(BusSettings(url=r.url, host=n)) for n in ("a", "b")}
                for k in range(args.messages):
                    src = "a" if k % 2 == 0 else "b"
                    dst = ("b", "c", "a")[k % 3] if src == "a" else ("c", "a", "b")[k % 3]
                    agent = AGENTS[k % len(AGENTS)]
                    text = f"chaos message {k} from {src}"
                    post_remote(hosts[src].home, buses[src], dst, agent, text)
                    sent.append((dst, agent, text))
                    time.sleep(0.3)

            talker = threading.Thread(target=talk)
            talker.start()
            killed = restarted = False
            back_at = None
            while True:
                rows = store.rows(
                    "SELECT state, COUNT(*) FROM tasks WHERE source='job' AND key NOT LIKE 'bus:%' GROUP BY state"
                )
                by = {s: int(n) for s, n in rows}
                ended = by.get("done", 0) + by.get("failed", 0) + by.get("cancelled", 0)
                progress(f"{ended}/{args.jobs} ended")
                if not killed and ended >= 0.3 * args.jobs:
                    hosts["c"].kill()
                    killed, back_at = True, time.monotonic() + args.down
                    print(f"{time.monotonic() - started:6.1f} s: host c killed at {ended} ended")
                if back_at is not None and time.monotonic() >= back_at:
                    hosts["c"].up()
                    back_at = None
                    print(f"{time.monotonic() - started:6.1f} s: host c back")
                if not restarted and ended >= 0.6 * args.jobs:
                    r.restart()
                    restarted = True
                    print(f"{time.monotonic() - started:6.1f} s: Redis killed and started again at {ended} ended")
                if ended >= args.jobs and not talker.is_alive() and back_at is None:
                    break
                if time.monotonic() - started > args.timeout:
                    print(f"gave up after {args.timeout:g} s: {by}")
                    break
                time.sleep(0.5)
            talker.join()
            progress_done()
            took = time.monotonic() - started
            by_state = collections.Counter(str(store.get(t).state) for t in ids)
            results: collections.Counter[int] = collections.Counter()
            for line in (hosts["a"].home / "logs" / "events.jsonl").read_text().splitlines():
                e = json.loads(line)
                if e.get("event") == "bus-result":
                    results[e["task"]] += 1
            twice = [t for t, n in results.items() if n > 1]
            lines = collections.Counter((work / "done.txt").read_text().split())
            reran = [j for j, n in lines.items() if n > 1]
            deadline = time.monotonic() + 60
            while True:  # messages still on their way (to the host that came back) get a minute
                seen = {(h, a): collections.Counter(transcript(hosts[h].home, a)) for h in hosts for a in AGENTS}
                lost = [m for m in sent if seen[(m[0], m[1])][m[2]] == 0]
                if not lost or time.monotonic() > deadline:
                    break
                time.sleep(1)
            doubled = [m for m in sent if seen[(m[0], m[1])][m[2]] > 1]
            ran_on = collections.Counter(str(store.get(t).agent).split("@")[-1] for t in ids)
            print(
                f"{args.jobs} jobs on 3 hosts × {len(AGENTS)} workers in {took:.1f} s: "
                f"{by_state.get('done', 0)} done ({100 * by_state.get('done', 0) / args.jobs:.0f} %), states "
                f"{dict(by_state)}; "
                f"ran on {dict(ran_on)}"
            )
            print(
                f"ended twice: {len(twice)}; ran to their end more than once (at-least-once jobs): {len(reran)} "
                f"{reran[:5]}"
            )
            print(f"messages: {len(sent)} sent, {len(lost)} lost, {len(doubled)} doubled")
            for j in reran[:5]:  # where each ran: the hosts' copies of it and how they ended
                for n, h in hosts.items():
                    db = Store.of_home(h.home)
                    for row in db.rows("SELECT id, state FROM tasks WHERE title=? AND key LIKE 'bus:%'", (f"job {j}",)):
                        last = db.history(row["id"])[-1]["reason"]
                        print(f"  {j} on {n}: task {row['id']} {row['state']}: {last[:120]}")
                    db.close()
        finally:
            for h in hosts.values():
                h.close()
            r.stop()


if __name__ == "__main__":
    main()
