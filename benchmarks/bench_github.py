"""GitHub polling figures against a local GitHub-compatible server on 127.0.0.1
(the tests' fake; never the real GitHub):

1. requests and wall time for a first sync of 1,000 open todo issues;
2. rate-limit points spent by ten more polls with nothing changed (GitHub does not
   count 304 answers against the limit; goal: none, all answered 304).

Run:  .venv/bin/python benchmarks/bench_github.py [--issues 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakegithub import FakeGitHub

from miyabi.config.settings import GitHubSettings
from miyabi.work.github import client_for
from miyabi.work.intake import sync
from miyabi.work.tasks import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--issues", type=int, default=1000)
    args = ap.parse_args()
    with FakeGitHub() as fake, tempfile.TemporaryDirectory() as tmp:
        for n in range(1, args.issues + 1):
            fake.add_issue(n, f"issue {n}", ["status:todo"], body=f"body of {n}")
        cfg = GitHubSettings(repo="acme/widgets", api_url=fake.url, token_env="BENCH_NO_TOKEN")
        store = Store.of_home(Path(tmp))
        gh = client_for(cfg, Path(tmp))
        t0 = time.perf_counter()
        report = sync(store, gh, cfg)
        first = time.perf_counter() - t0
        first_requests = gh.stats.requests
        before = dict(gh.stats.statuses)
        t0 = time.perf_counter()
        for _ in range(10):
            assert sync(store, gh, cfg).unchanged
        polls = time.perf_counter() - t0
        counted = sum(n for code, n in gh.stats.statuses.items() if code != 304) - sum(
            n for code, n in before.items() if code != 304
        )
        gh.close()
    print(f"bench_github: {args.issues} open todo issues on a local server")
    print(f"  first sync: {len(report.added)} tasks, {first_requests} requests, {first * 1000:.0f} ms wall")
    conditional = gh.stats.statuses.get(304, 0) - before.get(304, 0)
    print(
        f"  10 polls with nothing changed: {gh.stats.not_modified} unchanged, {conditional} conditional requests "
        "answered 304"
        f" (one per page), {counted} rate-limit points spent, {polls * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
