"""`miyabi up`, `down` and `status` against a real tmux server on a private socket."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path

from helpers import brought_up, wait_for, write_layout
from integration.conftest import Cli, capture, environ_of, pid_alive
from libtmux.server import Server

from miyabi.config import load
from miyabi.config.shipped import layouts_dir
from miyabi.home import Home
from miyabi.tmux.builder import up as build_up
from miyabi.tmux.panes import session_exists
from miyabi.tmux.runner import Tmux

DEFAULT = str(layouts_dir() / "default.yaml")
WORKERS = ["kaede", "sakura", "tsubaki", "botan"]


def test_up_builds_one_tagged_pane_per_agent(cli: Cli, tmux: Tmux, panes, home: Path, socket: str) -> None:
    r = cli("up", DEFAULT, "--detach")
    assert r.exit_code == 0, r.output
    assert f"attach with: tmux -L {socket} attach -t miyabi" in r.output
    got = panes("miyabi")
    assert sorted(got) == sorted(WORKERS)
    for name, pane in got.items():
        assert pane.pane_id.startswith("%")
        start = tmux.run("display-message", "-p", "-t", pane.pane_id, "#{pane_start_command}")[0]
        assert "miyabi worker" in start
        opts = tmux.run("show-options", "-w", "-t", pane.pane_id, "remain-on-exit")[0]
        assert opts.endswith("on")
        assert pane.title == name
        # The worker itself runs as the pane's process, with miyabi's environment.
        wait_for(lambda p=pane: "worker>" in capture(tmux, p.pane_id), what=f"{name}'s prompt")
        env = environ_of(pane.pid)
        assert env["MIYABI_AGENT"] == name
        assert env["MIYABI_SOCKET"] == socket
        assert env["MIYABI_HOME"] == str(home)
        # pipe-pane appends the pane's output to logs/<agent>.log
        log = home / "logs" / f"{name}.log"
        wait_for(lambda log=log: log.exists() and "worker>" in log.read_text(errors="replace"), what=f"{log}")
    for d in ("queue", "logs", "run"):
        assert stat.S_IMODE((home / d).stat().st_mode) == 0o700
    assert json.loads((home / "run" / "up.json").read_text())["socket"] == socket


def test_up_twice_creates_nothing(cli: Cli, panes) -> None:
    assert cli("up", DEFAULT, "-d").exit_code == 0
    before = {n: (p.pane_id, p.pid) for n, p in panes("miyabi").items()}
    r = cli("up", DEFAULT, "-d")
    assert r.exit_code == 0, r.output
    assert "nothing to do" in r.output
    assert {n: (p.pane_id, p.pid) for n, p in panes("miyabi").items()} == before


def test_up_recreates_only_the_killed_pane(cli: Cli, tmux: Tmux, panes) -> None:
    assert cli("up", DEFAULT, "-d", "--no-controller").exit_code == 0
    before = panes("miyabi")
    tmux.run("kill-pane", "-t", before["tsubaki"].pane_id)
    r = cli("up", DEFAULT, "-d", "--no-controller")
    assert r.exit_code == 0, r.output
    assert "created tsubaki" in r.output
    after = panes("miyabi")
    assert sorted(after) == sorted(WORKERS)
    assert after["tsubaki"].pane_id != before["tsubaki"].pane_id
    for n in ("kaede", "sakura", "botan"):
        assert (after[n].pane_id, after[n].pid) == (before[n].pane_id, before[n].pid)


def test_up_respawns_a_dead_agent_in_its_own_pane(cli: Cli, tmux: Tmux, panes, tmp_path: Path) -> None:
    lay = write_layout(tmp_path / "l.yaml", [("a", "shell", "cat"), ("b", "shell", "cat")], session="deadone")
    assert cli("up", str(lay), "-d", "--no-controller").exit_code == 0
    a = panes("deadone")["a"]
    os.kill(a.pid, signal.SIGKILL)
    wait_for(lambda: panes("deadone")["a"].dead, what="pane a to be dead")
    r = cli("up", str(lay), "-d", "--no-controller")
    assert "respawned a" in r.output, r.output
    again = panes("deadone")["a"]
    assert again.pane_id == a.pane_id and not again.dead and again.pid != a.pid


def test_up_respawns_a_dead_agent_on_its_last_conversation(cli: Cli, panes, home: Path, tmp_path: Path) -> None:
    """A dead pane that `miyabi up` respawns resumes the conversation recorded with its
    agent's state, as the watchdog's respawn does; the event log says so. The agent is
    a stand-in named `claude` that records its argv."""
    argv = tmp_path / "argv.log"
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {argv}\nexec cat\n')
    fake.chmod(0o755)
    lay = write_layout(tmp_path / "l.yaml", [("a", "claude", str(fake))], session="resumes")
    assert cli("up", str(lay), "-d", "--no-controller").exit_code == 0
    wait_for(lambda: argv.exists() and argv.read_text().count("\n") == 1, what="the first start's argv")
    assert "--resume" not in argv.read_text()  # a new session starts fresh
    state = {"state": "ready", "via": "hook", "since": 1.0, "pid": 1, "session": "conv-1"}
    (home / "run" / "activity").mkdir(parents=True, exist_ok=True)
    (home / "run" / "activity" / "a.json").write_text(json.dumps(state))
    os.kill(panes("resumes")["a"].pid, signal.SIGKILL)
    wait_for(lambda: panes("resumes")["a"].dead, what="pane a to be dead")
    r = cli("up", str(lay), "-d", "--no-controller")
    assert "respawned a" in r.output, r.output
    wait_for(lambda: argv.read_text().count("\n") == 2, what="the respawned process's argv")
    assert argv.read_text().splitlines()[1].startswith("--resume conv-1 --settings ")
    events = [json.loads(line) for line in (home / "logs" / "events.jsonl").read_text().splitlines()]
    assert [(e["agent"], e["session"]) for e in events if e["event"] == "resumed"] == [("a", "conv-1")]


def test_down_leaves_other_sessions_alone(cli: Cli, server: Server, tmux: Tmux) -> None:
    server.new_session(session_name="mine")
    assert cli("up", DEFAULT, "-d").exit_code == 0
    r = cli("down")
    assert r.exit_code == 0, r.output
    assert not session_exists(tmux, "miyabi")
    assert session_exists(tmux, "mine")
    assert "other sessions on the socket left running" in r.output


def test_down_stops_the_server_when_it_is_alone(cli: Cli, tmux: Tmux) -> None:
    assert cli("up", DEFAULT, "-d").exit_code == 0
    r = cli("down")
    assert "and its tmux server" in r.output, r.output
    assert not tmux.has_server()
    r = cli("down")
    assert r.exit_code == 0 and "nothing to stop" in r.output


def test_a_session_miyabi_did_not_make_is_left_alone(cli: Cli, server: Server, tmux: Tmux, home: Path) -> None:
    server.new_session(session_name="miyabi")
    r = cli("up", DEFAULT, "-d")
    assert r.exit_code == 1
    assert "was not made by miyabi" in r.output
    assert len(server.sessions[0].panes) == 1  # untouched
    brought_up(home, session="miyabi")  # a home whose session of that name someone else replaced
    r = cli("down")
    assert r.exit_code == 1 and "was not made by miyabi" in r.output
    assert session_exists(tmux, "miyabi")


def test_status_reports_a_killed_agent_as_dead(cli: Cli, panes) -> None:
    assert cli("up", DEFAULT, "-d", "--no-controller").exit_code == 0
    victim = panes("miyabi")["sakura"]
    os.kill(victim.pid, signal.SIGKILL)

    def sakura_if_dead() -> dict | None:
        data = json.loads(cli("status", "--json").output)
        row = next(a for a in data["agents"] if a["name"] == "sakura")
        return None if row["alive"] else row

    row = wait_for(sakura_if_dead, what="sakura reported dead")
    assert row["state"] == "dead" and row["uptime"] is None
    data = json.loads(cli("status", "--json").output)
    assert data["session"] == "miyabi"
    others = [a for a in data["agents"] if a["name"] != "sakura"]
    assert all(a["alive"] and a["pid"] > 0 and a["rss"] > 0 and a["uptime"] is not None for a in others)
    # the command the layout gives, not what runs in the pane (python, env, sh)
    assert {a["command"] for a in data["agents"]} == {"miyabi worker"}
    assert {a["pane_id"] for a in data["agents"]} == {p.pane_id for p in panes("miyabi").values()}


def test_status_shows_missing_agents_and_plain_table(cli: Cli, tmux: Tmux, panes) -> None:
    assert cli("up", DEFAULT, "-d", "--no-controller").exit_code == 0
    tmux.run("kill-pane", "-t", panes("miyabi")["botan"].pane_id)
    r = cli("status")
    assert r.exit_code == 0
    lines = r.output.splitlines()
    # the controller first: not running here, in one line with the command that starts it
    assert lines[0].startswith("controller: not running") and "miyabi up" in lines[0] and "--home" in lines[0]
    assert lines[2].split()[:3] == ["agent", "window", "pane"]
    assert "\x1b[" not in r.output  # plain when piped
    botan = next(line for line in lines if line.startswith("botan"))
    assert "missing" in botan and "miyabi worker" in botan


def test_commands_that_need_the_server_exit_4(cli: Cli) -> None:
    for cmd in (["status"], ["attach"]):
        r = cli(*cmd, "--layout", DEFAULT)
        assert r.exit_code == 4, r.output
        assert "run `miyabi up`" in r.output


def test_the_worker_acks_a_line_typed_into_it(cli: Cli, tmux: Tmux, panes, home: Path) -> None:
    assert cli("up", DEFAULT, "-d").exit_code == 0
    kaede = panes("miyabi")["kaede"]
    wait_for(lambda: "worker>" in capture(tmux, kaede.pane_id), what="kaede's prompt")
    tmux.run_chain(
        [["send-keys", "-t", kaede.pane_id, "-l", "hello from the test"], ["send-keys", "-t", kaede.pane_id, "Enter"]]
    )
    wait_for(lambda: "ack hello from the test" in capture(tmux, kaede.pane_id), what="the ack")
    transcript = home / "logs" / "kaede.transcript.jsonl"
    rec = json.loads(
        wait_for(lambda: transcript.exists() and transcript.read_text(), what="transcript").splitlines()[0]
    )
    assert rec["text"] == "hello from the test" and rec["agent"] == "kaede"


def test_32_agents_in_one_tmux_invocation(tmux: Tmux, tmp_path: Path, panes) -> None:
    lay = load(
        write_layout(
            tmp_path / "big.yaml", [(f"a{i:02d}", "shell", "cat") for i in range(32)], session="big", per_window=4
        )
    )
    report = build_up(lay, tmux, Home(tmp_path / "h"))
    # one query for sessions, then the chained build, cut under tmux's ~16 KiB
    # command limit into two or three invocations
    assert 2 <= report.tmux_invocations <= 4
    got = panes("big")
    assert len(got) == 32 and not any(p.dead for p in got.values())
    windows = {p.window_id for p in got.values()}
    assert len(windows) == 8
    for w in windows:
        assert sum(1 for p in got.values() if p.window_id == w) == 4
    for p in got.values():
        assert p.width >= 80 and p.height >= 20, p


def test_up_after_the_layout_grew_fills_windows_then_opens_new_ones(tmux: Tmux, tmp_path: Path, panes) -> None:
    h = Home(tmp_path / "h")
    small = load(
        write_layout(tmp_path / "l.yaml", [(f"a{i}", "shell", "cat") for i in range(3)], session="grow", per_window=4)
    )
    build_up(small, tmux, h)
    big = load(
        write_layout(tmp_path / "l.yaml", [(f"a{i}", "shell", "cat") for i in range(9)], session="grow", per_window=4)
    )
    report = build_up(big, tmux, h)
    assert report.created == [f"a{i}" for i in range(3, 9)]
    assert report.running == ["a0", "a1", "a2"]
    got = panes("grow")
    assert len(got) == 9
    counts = sorted(sum(1 for p in got.values() if p.window_id == w) for w in {p.window_id for p in got.values()})
    assert counts == [1, 4, 4]


def test_a_layout_with_a_missing_command_creates_nothing(cli: Cli, tmux: Tmux, tmp_path: Path) -> None:
    lay = write_layout(
        tmp_path / "l.yaml", [("a", "shell", "cat"), ("b", "shell", "miyabi-no-such-cmd")], session="nope"
    )
    r = cli("up", str(lay), "-d")
    assert r.exit_code == 3
    assert "miyabi-no-such-cmd" in r.output and "agents[1].command" in r.output
    assert not tmux.has_server()


def test_16_agents_are_built_by_one_tmux_invocation(tmux: Tmux, tmp_path: Path, panes) -> None:
    lay = load(write_layout(tmp_path / "l.yaml", [(f"a{i:02d}", "shell", "cat") for i in range(16)], session="sixteen"))
    report = build_up(lay, tmux, Home(tmp_path / "h"))
    assert report.tmux_invocations == 2  # list-sessions, then the one chained build
    assert len(panes("sixteen")) == 16


def test_status_from_another_directory_reads_the_sessions_own_home(
    cli: Cli, socket: str, home: Path, tmp_path: Path
) -> None:
    assert cli("up", DEFAULT, "-d").exit_code == 0
    wait_for(
        lambda: (home / "logs" / "kaede.log").exists() and (home / "logs" / "kaede.log").stat().st_size > 0,
        what="kaede's log",
    )
    other = tmp_path / "elsewhere"
    other.mkdir()
    from typer.testing import CliRunner

    from miyabi.cli import app

    r = CliRunner().invoke(app, ["status", "--json", "--socket", socket, "--home", str(other), "--layout", DEFAULT])
    data = json.loads(r.output)
    assert data["home"] == str(home)
    kaede = next(a for a in data["agents"] if a["name"] == "kaede")
    assert kaede["last_output"] is not None


def test_one_agents_env_does_not_leak_into_others_or_the_session(tmux: Tmux, tmp_path: Path, panes) -> None:
    f = write_layout(
        tmp_path / "l.yaml",
        [{"name": "a", "profile": "shell", "command": "cat", "env": {"SECRET": "only-a"}}, ("b", "shell", "cat")],
        session="leak",
    )
    build_up(load(f), tmux, Home(tmp_path / "h"))
    got = panes("leak")
    assert environ_of(got["a"].pid)["SECRET"] == "only-a"
    assert "SECRET" not in environ_of(got["b"].pid)
    session_env = "\n".join(tmux.run("show-environment", "-t", "=leak:"))
    assert "SECRET" not in session_env and "MIYABI_AGENT" not in session_env


def test_a_respawned_agent_is_still_logged(cli: Cli, tmux: Tmux, panes, home: Path, tmp_path: Path) -> None:
    f = write_layout(tmp_path / "l.yaml", [("a", "shell", "cat")], session="relog")
    assert cli("up", str(f), "-d", "--no-controller").exit_code == 0
    os.kill(panes("relog")["a"].pid, signal.SIGKILL)
    wait_for(lambda: panes("relog")["a"].dead, what="dead")
    assert cli("up", str(f), "-d", "--no-controller").exit_code == 0
    pane = panes("relog")["a"]
    assert tmux.run("display-message", "-p", "-t", pane.pane_id, "#{pane_pipe}") == ["1"]
    tmux.run("send-keys", "-t", pane.pane_id, "-l", "after-respawn")
    log = home / "logs" / "a.log"
    wait_for(lambda: "after-respawn" in log.read_text(errors="replace"), what="output logged after respawn")


def test_reconcile_never_puts_agents_in_the_users_own_window(tmux: Tmux, tmp_path: Path, panes) -> None:
    h = Home(tmp_path / "h")
    f = write_layout(tmp_path / "l.yaml", [("a", "shell", "cat")], session="mine", per_window=4)
    build_up(load(f), tmux, h)
    tmux.run("new-window", "-d", "-t", "=mine:", "-n", "users")
    tmux.run("kill-pane", "-t", panes("mine")["a"].pane_id)  # miyabi's window is gone now
    build_up(
        load(write_layout(tmp_path / "l.yaml", [("a", "shell", "cat"), ("b", "shell", "cat")], session="mine")), tmux, h
    )
    users = tmux.run("list-panes", "-t", "=mine:=users", "-F", "#{@miyabi_agent}")
    assert users == [""]
    assert set(panes("mine")) == {"a", "b"}


def test_attach_without_a_terminal_says_how_to_attach_with_the_agents_pane_selected(
    cli: Cli, panes, socket: str
) -> None:
    assert cli("up", DEFAULT, "-d", "--no-controller").exit_code == 0
    sakura = panes("miyabi")["sakura"]
    r = cli("attach", "sakura")  # the test runner's stdin is no terminal
    assert r.exit_code == 1
    assert (
        f"attach needs a terminal; from one, run: tmux -L {socket} attach -t miyabi "
        f"\\; select-window -t {sakura.window_id} \\; select-pane -t {sakura.pane_id}"
    ) in r.output
    r = cli("attach", "nobody")
    assert r.exit_code == 1 and "unknown agent 'nobody'" in r.output


def test_a_session_made_right_after_the_server_was_killed_is_made(tmux: Tmux) -> None:
    # A server killed a moment ago still holds its socket: a new session that reaches it is
    # dropped ("server exited unexpectedly", about one time in three here); the runner tries
    # again instead of failing `miyabi up`.
    for i in range(20):
        tmux.run("new-session", "-d", "-s", f"s{i}", "sleep 100")
        subprocess.run(tmux.argv(["kill-server"]), capture_output=True, check=False)
        tmux.run("new-session", "-d", "-s", f"t{i}", "sleep 100")
        subprocess.run(tmux.argv(["kill-server"]), capture_output=True, check=False)


def test_up_refuses_while_another_build_of_the_home_is_under_way(
    cli: Cli, tmux: Tmux, home: Path, tmp_path: Path, monkeypatch
) -> None:
    from miyabi import defaults
    from miyabi.controller import running_pid
    from miyabi.files import hold
    from miyabi.home import BUILD_LOCK

    monkeypatch.setattr(defaults, "BUILD_WAIT", 0.3)
    Home(home).ensure()
    build = hold(home / "run" / BUILD_LOCK)  # another `miyabi up` (or the controller) building
    assert build is not None
    try:
        r = cli("up", str(write_layout(tmp_path / "l.yaml", [("a", "shell", "cat")], session="busy")), "-d")
    finally:
        build.release()
    assert r.exit_code == 1 and "is building the session" in r.output, r.output
    assert not tmux.has_server() and running_pid(Home(home)) is None  # nothing built, no controller started


def test_down_ends_what_the_agents_left_running(cli: Cli, home: Path, tmp_path: Path) -> None:
    """A child in a session of its own that ignores SIGHUP outlives its closed pane (as
    Gemini CLI's relaunched node process does): `down` ends it too."""
    pidfile = tmp_path / "child.pid"
    agent = tmp_path / "agent.sh"
    agent.write_text(f"setsid sh -c 'trap \"\" HUP; echo $$ > {pidfile}; exec sleep 1000' &\nexec cat\n")
    lay = tmp_path / "l.yaml"
    lay.write_text(f"session: leftovers\nagents:\n  - {{name: a, profile: shell, command: sh {agent}}}\n")
    assert cli("up", str(lay), "-d").exit_code == 0
    child = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the child's pid"))
    assert pid_alive(child)
    r = cli("down")
    assert r.exit_code == 0 and f"ended 1 process(es) its agents left running (pid {child})" in r.output, r.output
    wait_for(lambda: not pid_alive(child), what="the child ended")
