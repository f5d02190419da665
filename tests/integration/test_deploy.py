"""The deploy stage and the monitor, for real: a git repository on disk, a tiny HTTP app
served on a free port in a pane of a real tmux server (private socket), real health
checks, a real task store. The app (``app.py`` below) reads a control file at its start
and at each request: a number is the status it answers, ``crash`` makes it exit at once."""

from __future__ import annotations

import json
import os
import signal
import socket as sockets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_for, write_layout
from integration.conftest import Cli, environ_of
from integration.test_pipeline import git

from miyabi import defaults
from miyabi.config.settings import WatchdogSettings
from miyabi.events import read_events
from miyabi.pipeline.deploy import Deployer, run_check
from miyabi.pipeline.monitoring import Monitor
from miyabi.tmux.runner import Tmux
from miyabi.tmux.service import SESSION_GONE, find_service
from miyabi.work.model import TaskState
from miyabi.work.store import Store

SESSION = "deploytest"

APP = """import http.server, pathlib, sys
port, control = int(sys.argv[1]), pathlib.Path(sys.argv[2])
if control.read_text().strip() == "crash":
    print("app: refusing to start: the control file says crash", flush=True)
    sys.exit(3)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        said = control.read_text().strip()
        code = int(said) if said.isdigit() else 200
        body = f"app answers {code}\\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        print("app:", self.requestline, flush=True)

print(f"app: serving on {port}", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def free_port() -> int:
    with sockets.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def convention(port: int, control: Path, rollback: bool = False) -> str:
    return (
        "deploy: [\"python3 -c \\\"open('built.txt', 'w').write('built')\\\"\"]\n"
        f'serve: "{sys.executable} app.py {port} {control}"\n'
        f"health: {{url: 'http://127.0.0.1:{port}/', status: 200, timeout: 20s}}\n"
        f"rollback: {'true' if rollback else 'false'}\n"
    )


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def session(tmux: Tmux, tmp_path: Path) -> Iterator[str]:
    tmux.run("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40", "-c", str(tmp_path))
    yield SESSION
    # the served processes lead process groups of their own: ended with them
    for line in tmux.run("list-panes", "-s", "-t", f"={SESSION}:", "-F", "#{pane_pid}", check=False):
        if line.isdigit():
            try:
                os.killpg(int(line), signal.SIGKILL)
            except OSError:
                pass


def make(tmp_path: Path, rollback: bool = False) -> tuple[Path, Path, int, str]:
    repo = tmp_path / "blog"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    control = tmp_path / "control"
    control.write_text("200")
    port = free_port()
    sha = commit(repo, {"app.py": APP, ".miyabi.yml": convention(port, control, rollback)}, "the app")
    return repo, control, port, sha


def events(home: Path, kind: str) -> list[dict[str, object]]:
    return [e for e in read_events(home) if e.get("event") == kind]


def test_a_deploy_checks_out_runs_serves_in_its_window_and_passes_its_health_check(
    tmux: Tmux, session: str, home: Path, tmp_path: Path
) -> None:
    repo, _control, port, sha = make(tmp_path)
    tmux.run("set-environment", "-g", "GITHUB_TOKEN", "sekrit")  # as if the server had it
    d = Deployer(home, tmux, session)
    result = d.deploy(repo, "main", story=7)
    assert result.ok, result.evidence
    assert result.commit == sha
    assert result.checkout == home / "deploy" / d.name_of(repo)
    assert (result.checkout / "built.txt").read_text() == "built"  # deploy: ran in the checkout
    assert f"GET http://127.0.0.1:{port}/ answered 200" in result.evidence
    pane = find_service(tmux, session, d.name_of(repo))
    assert pane is not None and not pane.dead
    assert "GITHUB_TOKEN" not in environ_of(pane.pid)  # no secret reaches the service
    windows = tmux.run("list-windows", "-t", f"={session}:", "-F", "#{window_name}")
    assert f"serve-{d.name_of(repo)}" in windows
    record = d.deployment(d.name_of(repo))
    assert record is not None and (record.commit, record.ok, record.last_good, record.story) == (sha, True, sha, 7)
    [e] = events(home, "deployed")
    assert (e["commit"], e["story"]) == (sha, 7)
    # its output goes to its log
    wait_for(lambda: "app: serving on" in d.service_log(d.name_of(repo)).read_text(), what="the service's log")
    # an acceptance check of either kind, in the checkout
    assert run_check({"run": "test -e built.txt"}, result.checkout).ok
    bad = run_check({"url": f"http://127.0.0.1:{port}/", "status": 201}, result.checkout)
    assert not bad.ok and bad.evidence.endswith("answered 200, expected 201: app answers 200")

    # a second deploy respawns the same pane with the new commit
    sha2 = commit(repo, {"README": "v2\n"}, "v2")
    again = d.deploy(repo, sha2)
    assert again.ok, again.evidence
    pane2 = find_service(tmux, session, d.name_of(repo))
    assert pane2 is not None and pane2.pane_id == pane.pane_id and pane2.pid != pane.pid
    assert (again.checkout / "README").read_text() == "v2\n"


def test_a_deploy_whose_service_fails_its_health_check_fails_with_the_evidence(
    tmux: Tmux, session: str, home: Path, tmp_path: Path
) -> None:
    repo, control, port, sha = make(tmp_path)
    control.write_text("crash")
    d = Deployer(home, tmux, session)
    result = d.deploy(repo, sha)
    assert not result.ok
    assert "the service ended (exit status 3)" in result.evidence
    assert "refusing to start" in result.evidence
    assert result.log is not None and "failed: the service ended" in result.log.read_text()
    control.write_text("500")
    result = d.deploy(repo, sha)
    assert not result.ok
    assert f"GET http://127.0.0.1:{port}/ answered 500, expected 200: app answers 500" in result.evidence
    assert [e["commit"] for e in events(home, "deploy-failed")] == [sha, sha]
    # a deploy command that fails: its exit and its output's last line, and no service started
    broke = commit(repo, {".miyabi.yml": "deploy: [\"echo compiling; echo 'error: no main' >&2; exit 2\"]\n"}, "broke")
    result = d.deploy(repo, broke)
    assert not result.ok
    assert result.evidence.startswith("deploy: echo compiling; echo 'error: no main' >&2; exit 2 exited 2 after")
    assert ": error: no main (log: " in result.evidence
    # a repository that says nothing of deploying: nothing to do, and the service that ran is stopped
    quiet = commit(repo, {".miyabi.yml": "test: [pytest]\n"}, "quiet")
    control.write_text("200")
    assert d.deploy(repo, sha).ok  # serving again
    result = d.deploy(repo, quiet)
    assert result.ok and result.evidence == "nothing to deploy: no deploy:, serve: or health: in .miyabi.yml"
    assert find_service(tmux, session, d.name_of(repo)) is None
    # a malformed .miyabi.yml is one line naming the key
    bad = commit(repo, {".miyabi.yml": "serve: [a, b]\n"}, "bad")
    result = d.deploy(repo, bad)
    assert not result.ok and result.evidence.startswith(".miyabi.yml: serve must be one shell command")


def monitor_of(d: Deployer, home: Path, interval: float) -> tuple[Monitor, Store]:
    store = Store.of_home(home)
    # quick deaths are those under 1 s here (the app starts in ~0.1 s, and the test waits longer)
    policy = WatchdogSettings(min_uptime=1.0, backoff_initial=0.2, backoff_max=1.0, max_restarts=3)
    return Monitor(d, store, interval=interval, watchdog=policy), store


def running(m: Monitor) -> tuple[threading.Event, threading.Thread]:
    """The monitor on a thread of its own, as the controller runs it."""
    stop = threading.Event()
    t = threading.Thread(target=m.run, args=(stop,), daemon=True)
    t.start()
    return stop, t


def test_the_monitor_brings_a_killed_service_back_within_an_interval_and_files_no_fix(
    tmux: Tmux, session: str, home: Path, tmp_path: Path
) -> None:
    repo, _control, _port, sha = make(tmp_path)
    d = Deployer(home, tmux, session)
    assert d.deploy(repo, sha).ok
    name = d.name_of(repo)
    interval = 5.0
    m, store = monitor_of(d, home, interval)
    stop, t = running(m)
    try:
        first = find_service(tmux, session, name)
        assert first is not None
        wait_for(lambda: len(events(home, "deployed")) == 1, what="the deploy")
        os.killpg(first.pid, signal.SIGKILL)
        back = wait_for(
            lambda: (p := find_service(tmux, session, name)) is not None and not p.dead and p.pid != first.pid and p,
            timeout=interval,
            what="the service started again within one interval",
        )
        assert back and back.pane_id == first.pane_id
        [e] = wait_for(lambda: events(home, "service-restarted"), what="the restart's event")
        assert "killed by signal 9" in str(e["reason"])
        # health is checked again after the restart, and passes
        restarted = m.clock()
        wait_for(
            lambda: m.health[name].next_check > restarted + interval and m.health[name].failures == 0,
            timeout=4 * interval,
            what="a passing check after the restart",
        )
    finally:
        stop.set()
        t.join(10)
    assert store.query() == []  # no fix task: it did not keep failing
    assert len(events(home, "health-failed")) < defaults.MONITOR_FIX_AFTER


def test_a_service_that_keeps_failing_gets_one_fix_task_with_its_evidence(
    tmux: Tmux, session: str, home: Path, tmp_path: Path
) -> None:
    repo, control, port, sha = make(tmp_path)
    d = Deployer(home, tmux, session)
    assert d.deploy(repo, sha, story=4).ok
    name = d.name_of(repo)
    # checks 2 s apart: the fix (the 3rd failure in a row) comes after the restarts that crash
    m, store = monitor_of(d, home, 2.0)
    attached: list[tuple[int, list[int]]] = []
    m.attach = lambda _store, story, ids: attached.append((story, ids))
    stop, t = running(m)
    try:
        control.write_text("crash")  # every start from now on exits at once
        first = find_service(tmux, session, name)
        assert first is not None
        os.killpg(first.pid, signal.SIGKILL)
        fix = wait_for(lambda: store.query(), timeout=30, what="a fix task")
        wait_for(lambda: events(home, "service-gave-up"), timeout=30, what="the crash-loop breaker")
        assert len(events(home, "health-failed")) >= defaults.MONITOR_FIX_AFTER
    finally:
        stop.set()
        t.join(10)
    [task] = fix
    assert task.state == TaskState.QUEUED and task.priority == "high"
    assert task.title.startswith(f"Deployed blog fails its health check: GET http://127.0.0.1:{port}/ failed")
    assert f"at commit {sha} (story 4)" in task.body
    assert "app: refusing to start: the control file says crash" in task.body  # the service's last lines
    assert "The monitor restarted the service" in task.body and "exit status 3" in task.body
    assert attached == [(4, [task.id])]
    # still failing: still one task for that cause
    assert len(store.query()) == 1
    assert [e["event"] for e in read_events(home) if e.get("event") == "fix-filed"] == ["fix-filed"]


def test_rollback_deploys_the_last_commit_that_passed_before_the_fix_is_filed(
    tmux: Tmux, session: str, home: Path, tmp_path: Path
) -> None:
    repo, _control, port, good = make(tmp_path, rollback=True)
    d = Deployer(home, tmux, session)
    assert d.deploy(repo, good).ok
    control_b = tmp_path / "control-b"
    control_b.write_text("200")
    bad = commit(repo, {".miyabi.yml": convention(port, control_b, rollback=True)}, "b")
    assert d.deploy(repo, bad).ok
    name = d.name_of(repo)
    m, store = monitor_of(d, home, 0.5)
    stop, t = running(m)
    try:
        control_b.write_text("500")  # commit b's service starts failing
        fix = wait_for(lambda: store.query(), timeout=30, what="a fix task")
        record = d.deployment(name)
        assert record is not None and record.commit == good and record.ok
    finally:
        stop.set()
        t.join(10)
    [task] = fix
    assert f"rolled the service back to {good}" in task.body and "it passes again" in task.body
    assert "answered 500, expected 200" in task.title
    assert [e["commit"] for e in events(home, "deployed")] == [good, bad, good]
    assert json.loads(d.record_path(name).read_text())["good"] == [bad, good]


def test_the_controller_s_monitor_restarts_a_service_deployed_in_its_session(
    cli: Cli, home: Path, tmp_path: Path, tmux: Tmux
) -> None:
    """The wiring: a controller started by ``miyabi up`` runs the monitor on a thread of its
    own; a service deployed into its session (the record under ``run/deploy/``) that is
    killed is started again in its pane."""
    lay = write_layout(tmp_path / "lay.yaml", [("a", "shell", "cat")], session="served")
    assert cli("up", str(lay), "-d").exit_code == 0
    wait_for(lambda: events(home, "controller-ready"), timeout=30, what="the controller up")
    repo, _control, port, sha = make(tmp_path)
    d = Deployer(home, tmux, "served")
    assert d.deploy(repo, sha).ok
    first = find_service(tmux, "served", d.name_of(repo))
    assert first is not None
    os.killpg(first.pid, signal.SIGKILL)
    wait_for(lambda: events(home, "service-restarted"), timeout=15, what="the controller's monitor restarting it")
    wait_for(lambda: run_check({"url": f"http://127.0.0.1:{port}/"}, tmp_path).ok, what="the service answering")
    back = find_service(tmux, "served", d.name_of(repo))
    assert back is not None and back.pane_id == first.pane_id and back.pid != first.pid
    assert cli("down").exit_code == 0
    stops = wait_for(lambda: events(home, "controller-stop"), timeout=30, what="the controller stopped")
    assert stops[0]["threads_left"] == []  # the monitor's thread ended with it


def test_a_failed_deploy_with_rollback_serves_the_last_commit_that_passed_again(
    tmux: Tmux, session: str, home: Path, tmp_path: Path
) -> None:
    repo, _control, port, good = make(tmp_path, rollback=True)
    d = Deployer(home, tmux, session)
    assert d.deploy(repo, good).ok
    broken = tmp_path / "control-broken"
    broken.write_text("crash")
    bad = commit(repo, {".miyabi.yml": convention(port, broken, rollback=True)}, "broken")
    result = d.deploy(repo, bad, story=2)
    assert not result.ok and result.commit == bad
    assert "the service ended (exit status 3)" in result.evidence
    assert result.evidence.endswith(f"; rolled back to {good[:12]}: it passes")
    assert run_check({"url": f"http://127.0.0.1:{port}/"}, tmp_path).ok  # the good commit serves again
    record = d.deployment(d.name_of(repo))
    assert record is not None and (record.commit, record.ok) == (good, True)
    assert [e["commit"] for e in events(home, "deploy-failed")] == [bad]
    assert [e["commit"] for e in events(home, "deployed")] == [good, good]
    # without rollback: true, a failed deploy is left as it is
    plain = commit(repo, {".miyabi.yml": convention(port, broken)}, "plain")
    result = d.deploy(repo, plain)
    assert not result.ok and "rolled back" not in result.evidence


def test_a_service_whose_session_went_is_started_again_once_the_session_is_back(
    tmux: Tmux, session: str, home: Path, tmp_path: Path
) -> None:
    repo, _control, port, sha = make(tmp_path)
    d = Deployer(home, tmux, session)
    assert d.deploy(repo, sha).ok
    name = d.name_of(repo)
    m, _store = monitor_of(d, home, 30.0)
    assert m.tick() == []  # running: nothing to do
    first = find_service(tmux, session, name)
    assert first is not None
    tmux.run("kill-session", "-t", f"={session}")  # as when tmux's server went (the controller rebuilds it)
    os.killpg(first.pid, signal.SIGKILL)
    said = wait_for(lambda: m.tick(), what="the monitor's look")
    assert said == [f"{name}: could not restart: {said[0].split(': could not restart: ', 1)[1]}"]
    assert any(s in said[0] for s in SESSION_GONE), said
    tmux.run("new-session", "-d", "-s", session, "-x", "120", "-y", "40")
    wait_for(lambda: m.tick(), timeout=10, what="the restart once the session is back")
    wait_for(lambda: run_check({"url": f"http://127.0.0.1:{port}/"}, tmp_path).ok, what="the service answering")
    back = find_service(tmux, session, name)
    assert back is not None and not back.dead
