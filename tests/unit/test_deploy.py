"""The deploy stage's parts that need no tmux: checks (a real HTTP server on a free
port, real commands), the deploy record, and the monitor's policy (an injected clock)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from miyabi import defaults
from miyabi.pipeline.convention import Health
from miyabi.pipeline.deploy import Deployer, Deployment, run_check
from miyabi.pipeline.monitoring import HealthWatch, Verdict, health_fix, on_check


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = int(self.path.strip("/") or 200)
        body = f"line one\nanswering {code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_http_check_passes_on_its_status_and_fails_with_the_status_and_the_body(url: str, tmp_path: Path) -> None:
    assert run_check({"url": f"{url}/"}, tmp_path) == run_check(Health(url=f"{url}/"), tmp_path)
    ok = run_check({"url": f"{url}/204", "status": 204}, tmp_path)
    assert ok.ok and ok.evidence == f"GET {url}/204 answered 204"
    bad = run_check({"url": f"{url}/500"}, tmp_path)
    assert not bad.ok
    assert bad.evidence == f"GET {url}/500 answered 500, expected 200: answering 500"
    assert bad.output == ("line one", "answering 500")


def test_an_http_check_of_nothing_listening_says_so(tmp_path: Path) -> None:
    r = run_check({"url": "http://127.0.0.1:9/"}, tmp_path, timeout=2)
    assert not r.ok and r.evidence.startswith("GET http://127.0.0.1:9/ failed: ConnectError")


def test_a_command_check_runs_in_its_directory_without_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "sekrit")
    (tmp_path / "built.txt").write_text("ok")
    assert run_check({"run": "test -e built.txt"}, tmp_path).ok
    r = run_check({"run": 'echo "token=${GITHUB_TOKEN:-none}"; exit 4'}, tmp_path)
    assert (r.ok, r.evidence, r.output) == (
        False,
        'run: echo "token=${GITHUB_TOKEN:-none}"; exit 4 exited 4: token=none',
        ("token=none",),
    )
    slow = run_check({"run": "sleep 30"}, tmp_path, timeout=0.3)
    assert not slow.ok and slow.evidence == "run: sleep 30 ran past 0.3 s"


def test_a_malformed_check_is_a_failed_result_naming_what_is_wrong(tmp_path: Path) -> None:
    r = run_check({"url": "ftp://x/"}, tmp_path)
    assert not r.ok and r.evidence == "check.url 'ftp://x/' must be an http:// or https:// URL"


def test_the_deploy_record_keeps_the_commits_that_passed_for_rollback() -> None:
    d = Deployment("blog-1", "/r/blog", "a", True, 1.0)
    assert (d.last_good, d.rollback_to) == (None, None)
    d = d.passing("a")
    assert (d.last_good, d.rollback_to) == ("a", None)  # nothing else to go back to
    d = Deployment(**{**d.__dict__, "commit": "b"}).passing("b")
    assert (d.good, d.rollback_to) == (("a", "b"), "a")
    d = d.passing("a")  # each commit once, the latest last
    assert d.good == ("b", "a")
    many = Deployment("n", "/r", "x", True, 1.0)
    for i in range(defaults.DEPLOY_GOOD_KEPT + 5):
        many = many.passing(str(i))
    assert len(many.good) == defaults.DEPLOY_GOOD_KEPT and many.last_good == str(defaults.DEPLOY_GOOD_KEPT + 4)
    assert Deployment.from_json({**d.__dict__, "good": ["a", "b"], "later": 1}).good == ("a", "b")


def test_a_deploy_is_named_after_its_repository_uniquely(tmp_path: Path) -> None:
    a, b = tmp_path / "one" / "My Blog", tmp_path / "two" / "My Blog"
    assert Deployer.name_of(a).startswith("my-blog-") and Deployer.name_of(a) != Deployer.name_of(b)
    assert Deployer(tmp_path).checkout(a) == tmp_path / "deploy" / Deployer.name_of(a)


def test_the_monitor_checks_every_interval_and_files_after_failures_in_a_row() -> None:
    w = HealthWatch(deployed=1.0, next_check=100.0)
    w, v = on_check(w, False, 100.0, 30.0, fix_after=3)
    assert (v, w.failures, w.next_check) == (Verdict.FAILING, 1, 130.0)
    w, v = on_check(w, True, 130.0, 30.0, fix_after=3)  # back (a restart): the streak ends
    assert (v, w.failures, w.filed) == (Verdict.HEALTHY, 0, False)
    verdicts = []
    for n in range(5):
        w, v = on_check(w, False, 160.0 + 30 * n, 30.0, fix_after=3)
        verdicts.append(v)
    assert verdicts == [Verdict.FAILING, Verdict.FAILING, Verdict.FIX, Verdict.FAILING, Verdict.FAILING]
    assert w.failures == 5 and w.filed  # one fix per streak
    w, v = on_check(w, True, 400.0, 30.0, fix_after=3)
    w, v = on_check(w, False, 430.0, 30.0, fix_after=1)
    assert v == Verdict.FIX  # a new streak is a new cause


def test_the_fix_task_says_the_check_its_output_and_the_service_s_last_lines() -> None:
    d = Deployment("blog-1", "/r/blog", "c0ffee", True, 1.0, story=4, serve="./serve", health={"url": "http://h/"})
    from miyabi.pipeline.deploy import CheckResult

    cause, title, body = health_fix(
        d, CheckResult(False, "GET http://h/ answered 500, expected 200: boom", ("boom",)), ["last line"], "rolled back"
    )
    assert cause == "deployed service blog-1: GET http://h/ → 200"
    assert title == "Deployed blog fails its health check: GET http://h/ answered 500, expected 200: boom"
    assert "at commit c0ffee (story 4)" in body and "boom" in body and "last line" in body
    assert body.endswith("rolled back")
