"""The watchdog against real tmux and real processes: crashes, leftovers, crash loops,
and a controller killed while agents crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import stays, wait_for, write_layout
from integration.conftest import Cli, pid_alive

FAST = {"min_uptime": 0, "max_restarts": 1000, "restart_window": 60}
"""Watchdog settings that restart at once, whatever the uptime."""


def events(home: Path, kind: str, agent: str | None = None) -> list[dict]:
    f = home / "logs" / "events.jsonl"
    if not f.exists():
        return []
    out = [json.loads(x) for x in f.read_text().splitlines()]
    return [e for e in out if e["event"] == kind and (agent is None or e.get("agent") == agent)]


def test_kill_9_fifty_times_a_new_process_runs_in_the_same_pane_each_time(
    cli: Cli, home: Path, tmp_path: Path, panes
) -> None:
    lay = write_layout(tmp_path / "mttr.yaml", [("a", "shell", "cat")], session="mttr", watchdog=FAST)
    assert cli("up", str(lay), "-d").exit_code == 0
    first = wait_for(lambda: panes("mttr").get("a"), what="pane")
    pid = first.pid
    for i in range(50):
        os.kill(pid, signal.SIGKILL)

        def replaced(old: int = pid) -> int | None:
            p = panes("mttr")["a"]
            return p.pid if (p.pid != old and not p.dead) else None

        pid = wait_for(replaced, timeout=5, interval=0.005, what=f"replacement #{i + 1}")
        assert panes("mttr")["a"].pane_id == first.pane_id
    wait_for(lambda: len(events(home, "restarted", "a")) == 50, what="50 restart events")  # logged just after
    causes = [e["cause"] for e in events(home, "agent-died", "a")]
    assert causes == ["killed by signal 9"] * 50, causes  # never a bare "exited"
    evidence = sorted((home / "logs" / "crashes").glob("a-*.log"))
    assert len(evidence) == 50 and all("ended: killed by signal 9" in f.read_text() for f in evidence)
    tags = panes("mttr")
    assert list(tags) == ["a"]  # still one pane, same tag


def test_nothing_of_the_old_agent_survives_a_restart(cli: Cli, home: Path, tmp_path: Path, panes) -> None:
    script = tmp_path / "stubborn.sh"
    script.write_text("#!/bin/sh\ntrap '' HUP\nsetsid sh -c 'trap \"\" HUP; exec sleep 4242' &\nexec sleep 4243\n")
    script.chmod(0o755)
    lay = write_layout(tmp_path / "stub.yaml", [("s", "shell", str(script))], session="stub", watchdog=FAST)
    assert cli("up", str(lay), "-d").exit_code == 0

    def family() -> list[int]:
        out = []
        for e in os.listdir("/proc"):
            if e.isdigit():
                try:
                    if Path(f"/proc/{e}/cmdline").read_bytes().startswith(b"sleep\x00424"):
                        env = Path(f"/proc/{e}/environ").read_bytes()
                        if f"MIYABI_HOME={home}\0".encode() in env:
                            out.append(int(e))
                except OSError:
                    pass
        return out

    old = wait_for(lambda: len(family()) == 2 and family(), what="agent and its setsid child")
    main = panes("stub")["s"].pid
    child = next(p for p in old if p != main)
    assert os.getsid(child) != os.getsid(main)  # really in its own session
    os.kill(main, signal.SIGKILL)
    wait_for(lambda: not pid_alive(child), what="the setsid child to be ended")
    new = wait_for(lambda: len(family()) == 2 and family(), what="the new agent and child")
    assert not set(new) & set(old)
    # and through `miyabi restart` (SIGTERM, then SIGKILL for what ignores it)
    r = cli("restart", "s")
    assert r.exit_code == 0, r.output
    wait_for(lambda: not any(pid_alive(p) for p in new), what="the restarted agent's old processes to end")


def test_a_crash_loop_backs_off_then_fails_and_stays_failed(cli: Cli, home: Path, tmp_path: Path, panes, tmux) -> None:
    lay = write_layout(
        tmp_path / "loop.yaml",
        [("x", "shell", "sh -c 'exit 3'"), ("y", "shell", "cat")],  # y: to see the watchdog go round
        session="loop",
        watchdog={"min_uptime": 5, "max_restarts": 3, "restart_window": 120},
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    wait_for(lambda: events(home, "gave-up", "x"), timeout=30, what="the breaker")
    died = events(home, "agent-died", "x")
    assert [e["delay"] for e in died] == [1.0, 2.0, 4.0, 0.0]
    assert [e["decision"] for e in died] == ["restart"] * 3 + ["fail"]
    assert died[0]["cause"] == "exit status 3"
    assert len(events(home, "restarted", "x")) == 3
    pane = panes("loop")["x"]
    reason = tmux.run("show-options", "-pqv", "-t", pane.pane_id, "@miyabi_failed")
    assert reason and "3 restarts within 120 s" in reason[0]
    border = tmux.run("display-message", "-p", "-t", pane.pane_id, "#{T:pane-border-format}")[0]
    assert "FAILED: exit status 3" in border  # the pane shows why
    data = json.loads(cli("status", "--json").output)
    (row,) = [r for r in data["agents"] if r["name"] == "x"]
    assert row["state"] == "failed" and row["restarts_last_hour"] == 3
    # The watchdog goes round after it gave up: y, killed twice, is restarted twice. Its
    # second restart is handled on a later turn of the watch loop than the one that gave
    # up on x, and every turn starts by looking at x's dead pane again.
    for n in (1, 2):
        pid = wait_for(lambda: (p := panes("loop")["y"]) and not p.dead and p.pid, what="y alive")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda n=n: len(events(home, "restarted", "y")) == n, timeout=15, what=f"y restarted ({n})")

    def still_failed() -> bool:
        rec = json.loads((home / "run" / "watchdog.json").read_text())["agents"]["x"]
        pending = rec["restart_at"] is not None or rec["pending"] is not None  # a restart decided, not yet due
        return len(events(home, "restarted", "x")) == 3 and bool(rec["history"]["failed"]) and not pending

    stays(still_failed, seconds=3, interval=0.2, what="x failed, with no restart done or pending")
    assert len(list((home / "logs" / "crashes").glob("x-*.log"))) == 4
    r = cli("restart", "x")
    assert r.exit_code == 0, r.output
    assert len(events(home, "restarted", "x")) == 4


def test_counters_survive_a_controller_killed_while_agents_crash(
    cli: Cli, home: Path, tmp_path: Path, panes, socket: str
) -> None:
    lay = write_layout(
        tmp_path / "survive.yaml",
        [("a", "shell", "cat"), ("b", "shell", "cat")],
        session="survive",
        watchdog={"min_uptime": 0, "max_restarts": 1000, "restart_window": 600},
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    from miyabi.controller import running_pid
    from miyabi.home import Home

    for round_ in range(3):
        for name in ("a", "b"):
            p = wait_for(lambda n=name: (q := panes("survive")[n]) and not q.dead and q, what="alive")
            os.kill(p.pid, signal.SIGKILL)
        wait_for(lambda r=round_: len(events(home, "restarted")) >= 2 * (r + 1), what="restarts")
        pid = running_pid(Home(home))
        assert pid
        os.kill(pid, signal.SIGKILL)
        # its keep-alive starts a new one; `up` finds it running
        wait_for(lambda p=pid: running_pid(Home(home)) not in (None, p), what="a new controller")
        assert cli("up", str(lay), "-d").exit_code == 0
    state = json.loads((home / "run" / "watchdog.json").read_text())["agents"]
    assert len(state["a"]["history"]["restarts"]) == 3 and len(state["b"]["history"]["restarts"]) == 3
    assert sorted(panes("survive")) == ["a", "b"]  # none lost or doubled
    data = json.loads(cli("status", "--json").output)
    assert {r["name"]: r["restarts_last_hour"] for r in data["agents"]} == {"a": 3, "b": 3}


def test_a_silent_busy_worker_is_nudged_then_restarted_and_an_idle_one_is_left_alone(
    cli: Cli, home: Path, tmp_path: Path, panes
) -> None:
    busy = {
        "name": "busy",
        "profile": "worker",
        "command": "miyabi worker --think 60",
        "submit_delay": 0.05,
        "ready_settle": 0.05,
    }
    lay = write_layout(
        tmp_path / "hang.yaml",
        [busy, ("idle", "worker")],
        session="hang",
        watchdog={
            "silence_timeout": 1.5,
            "silence_grace": 1.5,
            "min_uptime": 0,
            "max_restarts": 10,
            "restart_window": 60,
        },
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    idle_pid = wait_for(lambda: panes("hang").get("idle"), what="idle pane").pid
    busy_pid = wait_for(lambda: panes("hang").get("busy"), what="busy pane").pid
    from integration.test_delivery import send, transcript

    send(home, "busy", "think about it")
    wait_for(lambda: transcript(home, "busy") == ["think about it"], what="the busy worker got its message")
    nudged = wait_for(lambda: events(home, "nudged", "busy"), timeout=15, what="a nudge")[0]
    assert nudged["signal"] == "silence"
    hung = wait_for(lambda: events(home, "hung-restart", "busy"), timeout=15, what="the restart")[0]
    assert "after the nudge" in hung["detail"] and Path(hung["evidence"]).exists()
    wait_for(lambda: panes("hang")["busy"].pid != busy_pid and not panes("hang")["busy"].dead, what="a new busy worker")
    # the idle worker sat at its prompt through several timeouts: untouched
    assert panes("hang")["idle"].pid == idle_pid
    assert not events(home, "nudged", "idle") and not events(home, "hung-restart", "idle")
    # the nudge never reached the hung agent, nor its replacement
    assert all("watchdog" not in t for t in transcript(home, "busy"))


def test_an_agent_burning_cpu_without_printing_is_working_not_hung(cli: Cli, home: Path, tmp_path: Path) -> None:
    """The burner is left alone through the hang checks that nudge, then restart, a
    silent agent beside it that uses no CPU (so those checks did run)."""
    thinker = {
        "name": "thinker",
        "profile": "worker",
        "command": "miyabi worker --think 600",
        "submit_delay": 0.05,
        "ready_settle": 0.05,
    }
    lay = write_layout(
        tmp_path / "burn.yaml",
        [("burner", "shell", "sh -c 'read line; while :; do :; done'"), thinker],
        session="burn",
        watchdog={"silence_timeout": 1, "silence_grace": 1},
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    from integration.test_delivery import send

    send(home, "burner", "go")  # after a delivered message, silence counts
    ev = wait_for(lambda: events(home, "silent-but-working", "burner"), timeout=15, what="the CPU signal")[0]
    assert ev["signal"] == "cpu"
    send(home, "thinker", "think")  # silent from now on, and idle: the checks nudge it, then restart it
    wait_for(lambda: events(home, "hung-restart", "thinker"), timeout=30, what="the silent thinker restarted")
    assert events(home, "nudged", "thinker")
    stays(
        lambda: not events(home, "nudged", "burner") and not events(home, "hung-restart", "burner"),
        seconds=3,  # several timeouts more
        interval=0.2,
        what="the burner never nudged, never restarted",
    )


def test_a_closed_pane_is_recreated_and_a_dead_server_is_rebuilt_with_pending_messages(
    cli: Cli, home: Path, tmp_path: Path, panes, tmux
) -> None:
    lay = write_layout(
        tmp_path / "phoenix.yaml",
        [
            {"name": "kaede", "profile": "worker", "submit_delay": 0.05, "ready_settle": 0.05},
            ("sakura", "shell", "cat"),
        ],
        session="phoenix",
        watchdog=FAST,
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    old = wait_for(lambda: panes("phoenix").get("sakura"), what="sakura").pane_id
    tmux.run("kill-pane", "-t", old)
    wait_for(lambda: (p := panes("phoenix").get("sakura")) and p.pane_id != old, what="sakura's pane recreated")
    wait_for(lambda: events(home, "pane-recreated"), what="the pane-recreated event")  # logged just after
    from integration.test_delivery import send, transcript

    tmux.run("kill-server")
    send(home, "kaede", "sent while the server was down")
    wait_for(lambda: events(home, "session-rebuilt"), timeout=15, what="the session rebuilt")
    assert sorted(wait_for(lambda: len(panes("phoenix")) == 2 and panes("phoenix"), what="both agents back")) == [
        "kaede",
        "sakura",
    ]
    wait_for(
        lambda: transcript(home, "kaede") == ["sent while the server was down"], timeout=15, what="the pending message"
    )


def test_a_pending_restart_never_kills_a_pane_the_controller_recreated(
    cli: Cli, home: Path, tmp_path: Path, panes, tmux
) -> None:
    lay = write_layout(
        tmp_path / "nokill.yaml",
        [("a", "shell", "cat"), ("b", "shell", "cat")],  # b keeps the session
        session="nokill",
        watchdog={"min_uptime": 100, "max_restarts": 10, "restart_window": 60},  # a quick death waits 1 s
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    first = wait_for(lambda: panes("nokill").get("a"), what="pane")
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: events(home, "agent-died", "a"), what="the death")
    tmux.run("kill-pane", "-t", first.pane_id)  # while the restart waits out its backoff
    fresh = wait_for(
        lambda: (p := panes("nokill").get("a")) and p.pane_id != first.pane_id and not p.dead and p,
        what="a recreated pane",
    )
    wait_for(lambda: events(home, "restart-dropped", "a"), timeout=5, what="the stale restart dropped")
    assert pid_alive(fresh.pid) and panes("nokill")["a"].pid == fresh.pid
    assert not events(home, "restarted", "a")


def test_a_stale_pidfile_does_not_count_as_a_running_controller(home: Path) -> None:
    from miyabi.controller import running_pid
    from miyabi.home import Home

    h = Home(home)
    h.ensure()
    (h.run / "controller.pid").write_text(f"{os.getpid()}\n")  # a live pid, but no lock held
    (h.run / "controller.lock").write_text("")
    assert running_pid(h) is None


def test_down_is_not_undone_by_a_controller_that_a_service_manager_restarts(
    cli: Cli, home: Path, tmp_path: Path, socket: str, tmux
) -> None:
    lay = write_layout(tmp_path / "stopped.yaml", [("a", "shell", "cat")], session="stopped", watchdog=FAST)
    assert cli("up", str(lay), "-d").exit_code == 0
    assert cli("down").exit_code == 0
    argv = [sys.executable, "-m", "miyabi", "controller", "--home", str(home), "--socket", socket, "--layout", str(lay)]
    log = tmp_path / "controller.err"
    with log.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    try:
        from miyabi.controller import running_pid
        from miyabi.home import Home

        wait_for(lambda: running_pid(Home(home)) == proc.pid, what="the controller up")
        # Each "tmux not reachable" line follows a look for the session that declined to
        # rebuild it: two of them, and the main loop has been round since it started.
        wait_for(
            lambda: log.read_text().count("tmux not reachable") >= 2, timeout=30, what="the controller to look twice"
        )
        stays(lambda: "stopped" not in tmux.sessions(), seconds=2.5, what="the session not rebuilt")
        assert cli("up", str(lay), "-d").exit_code == 0  # up clears the mark
        assert "stopped" in tmux.sessions()
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_controller_whose_home_was_removed_stops_instead_of_rebuilding(
    cli: Cli, home: Path, tmp_path: Path, socket: str, tmux
) -> None:
    import shutil

    from miyabi.controller import read_pid
    from miyabi.home import Home

    lay = write_layout(tmp_path / "orphan.yaml", [("a", "shell", "cat")], session="orphan", watchdog=FAST)
    assert cli("up", str(lay), "-d").exit_code == 0
    pid = read_pid(Home(home))
    assert pid and pid_alive(pid)
    wait_for(lambda: events(home, "controller-ready"), what="the controller up")  # not racing its start-up
    shutil.rmtree(home)
    tmux.run("kill-server")
    from miyabi.supervision.processes import alive  # a zombie (our own unreaped child) counts as gone

    wait_for(lambda: not alive(pid), timeout=10, what="the controller to stop")
    assert "orphan" not in tmux.sessions()
    assert not home.exists()  # no late write brought the removed home back


def ensemble_pids(home: Path) -> tuple[int, int]:
    """The home's controller and keep-alive pids (both running)."""
    from miyabi.controller import keepalive, running_pid
    from miyabi.home import Home

    ctl, keeper = running_pid(Home(home)), keepalive.running_pid(Home(home).run)
    assert ctl and keeper
    return ctl, keeper


def remove(path: Path) -> None:
    """``rm -rf``, run again while a last write of a stopping process races it."""
    import shutil

    wait_for(lambda: not shutil.rmtree(path, ignore_errors=True) and not path.exists(), what=f"{path} removed")


def test_a_removed_home_stops_its_controller_and_its_keep_alive_and_leaves_its_session(
    cli: Cli, home: Path, tmp_path: Path, panes
) -> None:
    from miyabi.supervision.processes import alive  # a zombie (our own unreaped child) counts as gone

    lay = write_layout(tmp_path / "homeless.yaml", [("a", "shell", "cat")], session="homeless", watchdog=FAST)
    assert cli("up", str(lay), "-d").exit_code == 0
    wait_for(lambda: events(home, "controller-ready"), what="the controller up")
    ctl, keeper = ensemble_pids(home)
    pane = panes("homeless")["a"].pane_id
    remove(home)
    wait_for(lambda: not alive(ctl) and not alive(keeper), what="the controller and its keep-alive to stop")
    assert panes("homeless")["a"].pane_id == pane  # its session left as it was, not rebuilt
    assert not home.exists()  # no late write brought the removed home back


def test_a_home_removed_while_its_session_is_rebuilt_gets_no_session_and_stops_its_controller(
    cli: Cli, home: Path, tmp_path: Path, tmux
) -> None:
    """The tmux server is killed, and the home removed while the controller rebuilds
    the session (16 agents: the build takes a while): the build must not make the home
    again, the session built for it is ended, and controller and keep-alive stop."""
    from miyabi.supervision.processes import alive

    agents = [(f"a{i:02d}", "shell", "cat") for i in range(16)]
    lay = write_layout(tmp_path / "serverless.yaml", agents, session="serverless", watchdog=FAST)
    assert cli("up", str(lay), "-d").exit_code == 0
    wait_for(lambda: events(home, "controller-ready"), what="the controller up")
    ctl, keeper = ensemble_pids(home)
    tmux.run("kill-server")
    remove(home)
    wait_for(lambda: not alive(ctl) and not alive(keeper), what="the controller and its keep-alive to stop")
    assert "serverless" not in tmux.sessions()  # nothing runs for the removed home
    assert not home.exists()


def test_a_home_made_anew_is_left_to_its_new_controller(cli: Cli, home: Path, tmp_path: Path, socket: str) -> None:
    """A home removed and made again by a new `miyabi up` while the old controller and
    keep-alive were not looking (stopped): they stop when they run again, and only the
    new ones serve it (two controllers would deliver every message twice)."""
    from miyabi.supervision.processes import alive

    lay = write_layout(tmp_path / "anew.yaml", [("a", "shell", "cat")], session="anew", watchdog=FAST)
    assert cli("up", str(lay), "-d").exit_code == 0
    wait_for(lambda: events(home, "controller-ready"), what="the controller up")
    old = ensemble_pids(home)
    for pid in old:
        os.kill(pid, signal.SIGSTOP)
    try:
        remove(home)
        home.mkdir()
        assert cli("up", str(lay), "-d").exit_code == 0
        new = ensemble_pids(home)
        assert not set(new) & set(old)
    finally:
        for pid in old:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: not any(alive(p) for p in old), what="the old controller and keep-alive to stop")
    assert ensemble_pids(home) == new and all(alive(p) for p in new)


def test_a_controller_is_never_started_for_a_home_that_does_not_exist(tmp_path: Path, socket: str) -> None:
    lay = write_layout(tmp_path / "nowhere.yaml", [("a", "shell", "cat")], session="nowhere", watchdog=FAST)
    gone = tmp_path / "removed-home"
    argv = [sys.executable, "-m", "miyabi", "controller", "--home", str(gone), "--socket", socket, "--layout", str(lay)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    finally:
        from miyabi.controller import stop_background
        from miyabi.home import Home

        if gone.exists():  # without the fix: a controller runs for the made-up home
            stop_background(Home(gone))
    assert done.returncode == 1, done.stderr
    assert f"the miyabi home {gone} is gone" in done.stderr
    assert not gone.exists()


def test_a_home_removed_right_after_the_keepers_look_is_not_made_again_nor_given_a_session(
    home: Path, tmp_path: Path, tmux
) -> None:
    import shutil

    from miyabi.config import load
    from miyabi.home import Home
    from miyabi.supervision.keeper import SessionKeeper

    lay = load(write_layout(tmp_path / "late.yaml", [("a", "shell", "cat")], session="late", watchdog=FAST))
    Home(home).ensure()

    def intact_then_removed() -> bool:  # the home is there when asked, and removed a moment after
        shutil.rmtree(home, ignore_errors=True)
        return True

    keeper = SessionKeeper(lay, tmux, Home(home), tmp_path, home_intact=intact_then_removed)
    assert keeper.rebuild_if_gone() is False
    assert not home.exists()
    assert "late" not in tmux.sessions()


def test_a_session_rebuilt_while_its_home_was_removed_is_ended_again(home: Path, tmp_path: Path, tmux) -> None:
    import shutil

    from miyabi.config import load
    from miyabi.home import Home
    from miyabi.supervision.keeper import SessionKeeper

    lay = load(write_layout(tmp_path / "during.yaml", [("a", "shell", "cat")], session="during", watchdog=FAST))
    Home(home).ensure()
    looks: list[bool] = []

    def removed_during_the_build() -> bool:  # there before the build, gone after it
        if looks:
            # a pane's log pipe, just started, may make logs/ again while rmtree runs
            wait_for(lambda: not (shutil.rmtree(home, ignore_errors=True) or home.exists()), what="the home removed")
        looks.append(True)
        return home.exists()

    keeper = SessionKeeper(lay, tmux, Home(home), tmp_path, home_intact=removed_during_the_build)
    assert keeper.rebuild_if_gone() is False
    assert len(looks) == 2  # asked again after the build
    assert "during" not in tmux.sessions()


def test_the_keeper_waits_for_a_build_under_way_and_builds_nothing_beside_it(home: Path, tmp_path: Path, tmux) -> None:
    """`miyabi up` starts the controller while it builds the session: the controller's
    keeper, finding no session, waits for that build (run/build.lock) instead of
    building a second session beside it."""
    from miyabi.config import load
    from miyabi.files import hold
    from miyabi.home import BUILD_LOCK, Home
    from miyabi.supervision.keeper import SessionKeeper

    lay = load(write_layout(tmp_path / "queued.yaml", [("a", "shell", "cat")], session="queued", watchdog=FAST))
    Home(home).ensure()
    keeper = SessionKeeper(lay, tmux, Home(home), tmp_path, build_wait=0.3)
    build = hold(home / "run" / BUILD_LOCK)  # a build under way
    assert build is not None
    assert keeper.rebuild_if_gone() is False
    assert "queued" not in tmux.sessions()
    build.release()
    assert keeper.rebuild_if_gone() is True
    assert "queued" in tmux.sessions()
