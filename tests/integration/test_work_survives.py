"""Work survives its agent: task leases, jobs run again as a new attempt, time limits,
a running controller that follows its layout, and a controller that comes back by
itself. Real tmux, real worker agents, real processes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from helpers import wait_for, write_layout
from integration.conftest import Cli
from integration.test_delivery import transcript

from miyabi.controller import keepalive, running_pid
from miyabi.home import Home
from miyabi.work.store import Store

# --hold-tasks: tasks stay held (in progress) until the test ends them
FAST_WORKER = {"profile": "worker", "command": "miyabi worker --hold-tasks", "submit_delay": 0.05, "ready_settle": 0.05}


def write(path: Path, agents: list[str], **sections: object) -> Path:
    """Session ``survive``: quick-restarting held-task workers named ``agents``."""
    return write_layout(
        path,
        [{"name": a, **FAST_WORKER} for a in agents],
        session="survive",
        watchdog={"min_uptime": 0, "max_restarts": 100, "restart_window": 600},
        **sections,
    )


def task(home: Path, tid: int):  # type: ignore[no-untyped-def]
    store = Store.of_home(home)
    try:
        return store.get(tid)
    finally:
        store.close()


def history(home: Path, tid: int) -> list[str]:
    store = Store.of_home(home)
    try:
        return [e["reason"] for e in store.history(tid)]
    finally:
        store.close()


def alive_pid(panes, name: str, not_pid: int = 0) -> int:  # type: ignore[no-untyped-def]
    return wait_for(
        lambda: (p := panes("survive").get(name)) and not p.dead and p.pid != not_pid and p.pid, what=f"{name} alive"
    )


def test_a_worker_killed_mid_job_runs_it_again_and_the_queue_behind_it_moves(
    cli: Cli, home: Path, tmp_path: Path, panes
) -> None:
    lay = write(tmp_path / "l.yaml", ["w"])
    assert cli("up", str(lay), "-d").exit_code == 0
    work = tmp_path / "work"
    work.mkdir()
    # The first attempt leaves a mark and then hangs until it is killed; the second finds the mark.
    first = {
        "id": "slow",
        "kind": "run_shell",
        "workdir": str(work),
        "dod": "exit_code == 0",
        "report_path": "slow.json",
        "script": [
            "echo one >> steps",
            "if [ -e mark ]; then echo again; else touch mark; sleep 600; fi",
            "echo three >> steps",
        ],
    }
    (tmp_path / "slow.json").write_text(json.dumps(first))
    assert cli("job", "submit", str(tmp_path / "slow.json"), "--agent", "w").exit_code == 0
    for i in range(3):  # queued behind it: w's wip is 1
        (tmp_path / f"q{i}.json").write_text(
            json.dumps(
                {
                    "id": f"q{i}",
                    "kind": "run_shell",
                    "workdir": str(work),
                    "script": ["true"],
                    "dod": "exit_code == 0",
                    "report_path": f"q{i}.json",
                }
            )
        )
        assert cli("job", "submit", str(tmp_path / f"q{i}.json"), "--agent", "w").exit_code == 0
    wait_for(lambda: (work / "mark").exists(), timeout=30, what="the first attempt to start its second step")
    old = alive_pid(panes, "w")
    sleeper = [p for p in _children(old) if "sleep" in p[1]]
    assert sleeper, "the job's step runs under the worker"
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: task(home, 1).state == "done", timeout=60, what="the job to end done on its second attempt")
    wait_for(lambda: all(task(home, i).state == "done" for i in (2, 3, 4)), timeout=60, what="the jobs behind it")
    report = json.loads((work / "slow.json").read_text())
    assert report["passed"] and report["attempt"] == 2
    assert [(a["attempt"], a["outcome"]) for a in report["attempts"]] == [(1, "interrupted"), (2, "passed")]
    assert report["attempts"][0]["commands"][1]["exit_code"] is None
    assert (work / "steps").read_text().split() == ["one", "one", "three"]  # step 1 again in attempt 2, step 3 once
    assert not any(_alive(pid) for pid, _ in sleeper), "the old attempt's step was ended with its worker"
    assert task(home, 1).attempts == 2
    assert any("ended while it held the task" in r for r in history(home, 1))


def _children(pid: int) -> list[tuple[int, str]]:
    import psutil

    return [(c.pid, " ".join(c.cmdline())) for c in psutil.Process(pid).children(recursive=True)]


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it."""
    from miyabi.supervision.processes import proc_stat

    st = proc_stat(pid)
    return st is not None and st.state not in ("Z", "X")


def test_killed_mid_task_with_resend_the_new_process_gets_it_again(cli: Cli, home: Path, tmp_path: Path, panes) -> None:
    lay = write(tmp_path / "l.yaml", ["w"], routes=[{"default": True, "agent": "w"}])
    assert cli("up", str(lay), "-d").exit_code == 0
    assert cli("task", "add", "Fix the build").exit_code == 0
    wait_for(lambda: task(home, 1).state == "in_progress" and task(home, 1).holder, what="the task leased to w")
    old = alive_pid(panes, "w")
    assert task(home, 1).holder.startswith(f"{old}:")
    os.kill(old, signal.SIGKILL)
    got = wait_for(lambda: [t for t in transcript(home, "w") if "again" in t], timeout=30, what="the task sent again")
    assert (
        "was restarted" not in got[0]
        and "ended while it held the task" in got[0]
        and "Task #1: Fix the build" in got[0]
    )
    assert "attempt 2 of 3" in got[0]
    new = alive_pid(panes, "w", not_pid=old)
    wait_for(
        lambda: (t := task(home, 1)).state == "in_progress" and t.holder and t.holder.startswith(f"{new}:"),
        what="the task held by the new process",
    )
    assert task(home, 1).attempts == 2
    # wip counts what w really holds: one task, so a second one waits
    assert cli("task", "add", "Second").exit_code == 0
    r = json.loads(cli("task", "show", "2", "--json").output)
    assert r["state"] == "queued" and "wip limit" in (r["waiting"] or "")
    assert cli("task", "done", "1").exit_code == 0
    wait_for(lambda: task(home, 2).state == "in_progress", what="the second task once the first is done")


def test_killed_mid_task_with_requeue_it_goes_back_to_the_queue_and_fails_after_max_attempts(
    cli: Cli, home: Path, tmp_path: Path, panes
) -> None:
    lay = write(
        tmp_path / "l.yaml",
        ["w"],
        routes=[{"default": True, "agent": "w"}],
        tasks={"on_agent_restart": "requeue", "max_attempts": 2},
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    assert cli("task", "add", "Flaky").exit_code == 0
    for attempt in (1, 2):
        wait_for(
            lambda a=attempt: (t := task(home, 1)).state == "in_progress" and t.holder and t.attempts == a,
            timeout=30,
            what=f"attempt {attempt} in progress",
        )
        os.kill(alive_pid(panes, "w"), signal.SIGKILL)
        if attempt == 1:
            wait_for(lambda: any("back to the queue" in r for r in history(home, 1)), timeout=30, what="requeued")
    wait_for(lambda: task(home, 1).state == "failed", timeout=30, what="failed after its last attempt")
    last = history(home, 1)[-1]
    assert "attempt 2 of 2" in last and "needs a person" in last
    h = history(home, 1)
    assert sum(r == "routed to w" for r in h) == 2  # from the queue each time, by the routes
    assert not any("sent again" in r for r in h)


def test_a_task_past_its_time_limit_is_told_and_handed_back(cli: Cli, home: Path, tmp_path: Path) -> None:
    lay = write(tmp_path / "l.yaml", ["w"], routes=[{"default": True, "agent": "w"}])
    assert cli("up", str(lay), "-d").exit_code == 0
    r = cli("task", "add", "Slow one", "--timeout", "1s", "--max-attempts", "2")
    assert r.exit_code == 0, r.output
    wait_for(lambda: task(home, 1).state == "failed", timeout=30, what="the task to fail after two timed-out attempts")
    h = history(home, 1)
    assert any("time limit of 1s" in x and "sent again" in x for x in h)
    assert "time limit of 1s" in h[-1] and "needs a person" in h[-1]
    said = transcript(home, "w")
    assert any("time limit of 1s" in t and "again" in t for t in said)  # the resend says why
    wait_for(lambda: any("It failed" in t for t in transcript(home, "w")), what="the agent told it failed")
    r = cli("task", "add", "x", "--timeout", "soon")
    assert r.exit_code == 2 and "--timeout" in r.output and "'soon'" in r.output


def test_the_running_controller_adopts_added_and_removed_agents_and_keeps_a_broken_layout_out(
    cli: Cli, home: Path, tmp_path: Path, panes
) -> None:
    lay = write(tmp_path / "l.yaml", ["a"], routes=[{"label": "x", "agent": "a"}])
    r = cli("up", str(lay), "-d")
    assert r.exit_code == 0, r.output
    pid = running_pid(Home(home))
    assert cli("task", "add", "For a", "--label", "x").exit_code == 0
    wait_for(lambda: task(home, 1).state == "in_progress", what="a holds task 1")
    # add b: `up` on the changed layout
    write(lay, ["a", "b"], routes=[{"label": "x", "agent": "a"}, {"default": True, "agent": "b"}])
    r = cli("up", str(lay), "-d")
    assert r.exit_code == 0 and "controller reloaded the layout: added b" in r.output, r.output
    assert running_pid(Home(home)) == pid  # not restarted
    assert cli("send", "b", "hello b").exit_code == 0
    wait_for(lambda: transcript(home, "b") == ["hello b"], what="b gets its message")
    old = alive_pid(panes, "b")
    os.kill(old, signal.SIGKILL)
    alive_pid(panes, "b", not_pid=old)  # b is supervised
    # remove a: its task goes back to the queue, and the routes now give it to b
    write(lay, ["b"], routes=[{"default": True, "agent": "b"}])
    r = cli("reload")
    assert r.exit_code == 0 and "removed a" in r.output, r.output
    wait_for(lambda: task(home, 1).agent == "b" and task(home, 1).state == "in_progress", what="task 1 moved to b")
    assert any("not in the layout any more" in x for x in history(home, 1))
    a = panes("survive")["a"]
    os.kill(a.pid, signal.SIGKILL)  # no longer supervised: left dead
    wait_for(lambda: panes("survive")["a"].dead, what="a's pane dead")
    # a broken layout: the running one stays
    write_layout(lay, [("b", "nope")], session="survive")
    r = cli("reload")
    assert r.exit_code == 3 and "nope" in r.output
    assert cli("send", "b", "still here").exit_code == 0
    wait_for(lambda: "still here" in transcript(home, "b"), what="b still served")
    assert panes("survive")["a"].dead  # still not supervised
    log = (home / "logs" / "controller.log").read_text()
    assert "already exists" not in log and "Traceback" not in log


def test_a_sigkilled_controller_comes_back_by_itself_and_down_stops_it_for_good(
    cli: Cli, home: Path, tmp_path: Path
) -> None:
    lay = write(tmp_path / "l.yaml", ["w"])
    assert cli("up", str(lay), "-d").exit_code == 0
    h = Home(home)
    first = running_pid(h)
    assert first and keepalive.running_pid(h.run)
    os.kill(first, signal.SIGKILL)
    assert cli("send", "w", "sent while it was dead").exit_code == 0
    second = wait_for(lambda: (p := running_pid(h)) not in (None, first) and p, timeout=10, what="a new controller")
    wait_for(lambda: transcript(home, "w") == ["sent while it was dead"], what="the pending message delivered")
    data = json.loads(cli("status", "--json").output)["controller"]
    assert data["running"] and data["pid"] == second and data["kept_alive"] and data["restarts"] == 1
    assert "killed by signal 9" in data["last_reason"] and data["last_restart"].endswith("Z")
    out = cli("status").output.splitlines()[0]
    assert out.startswith(f"controller: running, pid {second}") and "restarted once" in out
    assert cli("down").exit_code == 0
    assert running_pid(h) is None and keepalive.running_pid(h.run) is None
    r = cli("status", "--json")
    assert r.exit_code == 4  # the session is down too


def test_up_leaves_a_controller_it_did_not_start_to_whoever_started_it(
    cli: Cli, home: Path, tmp_path: Path, socket: str
) -> None:
    """A controller run by systemd or by hand is theirs to restart: `up` adds no
    keep-alive beside it, and status says so."""
    import subprocess
    import sys

    lay = write(tmp_path / "l.yaml", ["w"])
    assert cli("up", str(lay), "-d", "--no-controller").exit_code == 0
    argv = [sys.executable, "-m", "miyabi", "controller", "--home", str(home), "--socket", socket, "--layout", str(lay)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    h = Home(home)
    try:
        wait_for(lambda: running_pid(h) == proc.pid, what="the foreground controller")
        r = cli("up", str(lay), "-d")
        assert r.exit_code == 0 and f"controller running (pid {proc.pid})" in r.output
        assert keepalive.running_pid(h.run) is None
        line = cli("status").output.splitlines()[0]
        assert line.startswith(f"controller: running, pid {proc.pid}") and "no keep-alive" in line
        assert json.loads(cli("status", "--json").output)["controller"]["kept_alive"] is False
    finally:
        proc.terminate()
        proc.wait(10)
    assert running_pid(h) is None  # nothing started another one


def test_a_controller_started_again_runs_the_layout_the_home_runs_now(
    cli: Cli, home: Path, tmp_path: Path, panes
) -> None:
    lay = write(tmp_path / "l.yaml", ["a"])
    assert cli("up", str(lay), "-d").exit_code == 0
    other = write(tmp_path / "other.yaml", ["a", "b"])
    r = cli("reload", str(other))
    assert r.exit_code == 0 and "added b" in r.output, r.output
    h = Home(home)
    first = running_pid(h)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: running_pid(h) not in (None, first), timeout=10, what="a new controller")
    assert cli("send", "b", "to b after the restart").exit_code == 0
    wait_for(lambda: transcript(home, "b") == ["to b after the restart"], what="b still served")


def test_a_bare_up_keeps_the_layout_a_reload_adopted(cli: Cli, home: Path, tmp_path: Path, panes) -> None:
    lay = write(tmp_path / "l.yaml", ["a"])
    assert cli("up", str(lay), "-d").exit_code == 0
    other = write(tmp_path / "other.yaml", ["a", "b"], routes=[{"default": True, "agent": "b"}])
    assert cli("reload", str(other)).exit_code == 0
    wait_for(lambda: "b" in panes("survive"), what="b's pane")
    r = cli("up", "-d")
    assert r.exit_code == 0, r.output
    assert "l.yaml" not in r.output and "removed" not in r.output, r.output
    assert json.loads((home / "run" / "up.json").read_text())["layout"] == str(other)
    assert cli("task", "add", "routed by the adopted layout").exit_code == 0
    wait_for(lambda: task(home, 1).agent == "b", what="the adopted layout's route")
    assert "routed by the adopted layout" in wait_for(lambda: " ".join(transcript(home, "b")), what="b's message")
