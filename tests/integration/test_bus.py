"""Several hosts, one ensemble: each "host" is a miyabi home with its own controller
and its own tmux server (a private socket), and they share a private redis-server on
127.0.0.1. Real worker agents run real jobs; hosts are killed with SIGKILL and Redis
is killed and started again."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakegithub import FakeGitHub
from helpers import wait_for, write_layout
from integration.conftest import kill_all
from integration.test_delivery import transcript
from integration.test_work_survives import task
from integration.webkit import start_web, stop
from redisserver import RedisServer
from typer.testing import CliRunner, Result

from miyabi.cli import app
from miyabi.cli.send import main as send_main
from miyabi.controller import stop_background
from miyabi.home import Home
from miyabi.work.store import Store

WORKER = {"profile": "worker", "submit_delay": 0.05, "ready_settle": 0.05}


class Host:
    """One machine of the ensemble: a home, a tmux server of its own, a layout with ``bus:``.

    Args:
        agents: names of its agents, each ``spec`` (a worker by default).
        bus: more keys of its ``bus:`` section.
        sections: other top-level keys of its layout.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        url: str,
        agents: tuple[str, ...] = ("w",),
        bus: dict[str, object] | None = None,
        spec: dict[str, object] = WORKER,
        **sections: object,
    ) -> None:
        self.name = name
        self.home = root / name
        self.home.mkdir(parents=True)
        self.socket = f"miyabi_test_bus_{uuid.uuid4().hex[:8]}"
        self.layout = write_layout(
            root / f"{name}.yaml",
            [{"name": a, **spec} for a in agents],
            session=f"bus-{name}",
            bus={"url": url, "host": name, "lease": "2s", **(bus or {})},
            watchdog={"min_uptime": 0, "max_restarts": 100, "restart_window": 600},
            **sections,
        )

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(
            app, [*args, "--socket", self.socket, "--home", str(self.home)], catch_exceptions=False
        )

    def up(self) -> None:
        r = self.cli("up", str(self.layout), "-d")
        assert r.exit_code == 0, r.output

    def send(self, *args: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = send_main("send", [*args, "--home", str(self.home)])
        return rc, out.getvalue().strip()

    def tasks(self) -> list[dict]:
        r = self.cli("task", "ls", "--json")
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    def kill(self) -> None:
        """The machine dies: every process of this host at once, by SIGKILL (keep-alive,
        controller, its tmux server and clients, its agents)."""
        kill_all(self.home, self.socket)

    def close(self) -> None:
        stop_background(Home(self.home))
        kill_all(self.home, self.socket)  # its tmux server and whatever outlived it


@pytest.fixture
def hosts(tmp_path: Path, redis_server: RedisServer) -> Iterator[list[Host]]:
    made: list[Host] = []
    yield made
    for h in made:
        h.close()


def job(tmp_path: Path, name: str, script: list[str]) -> Path:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    f = tmp_path / f"{name}.json"
    f.write_text(
        json.dumps(
            {
                "id": name,
                "kind": "run_shell",
                "workdir": str(work),
                "script": script,
                "dod": "exit_code == 0",
                "report_path": f"{name}.report.json",
            }
        )
    )
    return f


def submit(host: Host, path: Path, agent: str = "w") -> int:
    r = host.cli("job", "submit", str(path), "--agent", agent, "--json")
    assert r.exit_code == 0, r.output
    return int(json.loads(r.output)["task"])


def copies(home: Path) -> list[dict]:
    """The copies of bus tasks this host claimed: bus id, local task id, its state and attempt."""
    store = Store.of_home(home)
    try:
        return [
            dict(r)
            for r in store.rows(
                "SELECT b.bus_id, b.task, b.deliveries, t.state FROM bus_tasks b JOIN tasks t"
                " ON t.id = b.task WHERE b.role='copy' ORDER BY b.rowid"
            )
        ]
    except Exception:  # noqa: BLE001 - no table yet: no copies
        return []
    finally:
        store.close()


def done_lines(tmp_path: Path) -> list[str]:
    f = tmp_path / "work" / "done.txt"
    return f.read_text().split() if f.exists() else []


def bus_seen(host: Host) -> dict[str, Any]:
    """The ``bus`` of ``host``'s `status --json` ({} until its controller has seen the bus)."""
    return json.loads(host.cli("status", "--json").output)["bus"] or {}


def test_tasks_spread_over_hosts_by_route_and_their_results_come_home(
    tmp_path: Path, redis_server: RedisServer, hosts: list[Host]
) -> None:
    a = Host("a", tmp_path, redis_server.url)
    b = Host("b", tmp_path, redis_server.url)
    hosts += [a, b]
    a.up()
    b.up()
    ids = [submit(a, job(tmp_path, f"j{i}", ["sleep 1", f"echo j{i} >> done.txt"])) for i in range(6)]
    pinned = submit(a, job(tmp_path, "pinned", ["echo pinned >> done.txt"]), agent="w@b")
    wait_for(lambda: all(task(a.home, t).state == "done" for t in [*ids, pinned]), timeout=60, what="every job done")
    ran_by = {task(a.home, t).agent for t in ids}
    assert ran_by == {"w@a", "w@b"}, f"both hosts ran some: {ran_by}"
    assert task(a.home, pinned).agent == "w@b"
    assert sorted(done_lines(tmp_path)) == sorted([f"j{i}" for i in range(6)] + ["pinned"])  # each once
    claimed = [c["bus_id"] for h in (a, b) for c in copies(h.home)]
    assert len(claimed) == len(set(claimed)) == 7
    history = [e["reason"] for e in json.loads(a.cli("task", "show", str(ids[0]), "--json").output)["history"]]
    assert any("published on the bus" in r for r in history) and history[-1].startswith("done on host")
    r = b.cli("bus", "status", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert {h["host"] for h in info["hosts"] if h["up"]} == {"a", "b"}
    assert info["intake"] in ("a", "b")
    tasks_w = next(s for s in info["streams"] if s["name"] == "tasks:w")
    assert tasks_w["groups"][0]["pending"] == 0 and tasks_w["groups"][0]["lag"] == 0
    st = json.loads(a.cli("status", "--all-hosts", "--json").output)
    assert st["bus"]["state"] == "up" and st["bus"]["host"] == "a"
    assert {h["host"]: [x["name"] for x in h["agents"]] for h in st["hosts"]} == {"a": ["w"], "b": ["w"]}
    # the dashboard shows every host too
    proc, said = start_web(a.home, a.socket)
    try:
        base, _, token = said["open"].partition("/?token=")
        got = httpx.get(base + "/api/v1/hosts", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        assert got["bus"]["state"] == "up" and {h["host"] for h in got["hosts"] if h["up"]} == {"a", "b"}
        assert all(x["state"] for h in got["hosts"] for x in h["agents"])
    finally:
        stop(proc)


def test_a_message_to_an_agent_on_another_host_arrives_exactly_once(
    tmp_path: Path, redis_server: RedisServer, hosts: list[Host]
) -> None:
    a = Host("a", tmp_path, redis_server.url)
    b = Host("b", tmp_path, redis_server.url, agents=("w", "v"))
    hosts += [a, b]
    a.up()
    b.up()
    rc, msg_id = a.send("w@b", "hello from a")
    assert rc == 0
    wait_for(lambda: transcript(b.home, "w").count("hello from a") == 1, timeout=30, what="the text in b's pane")
    # by name alone once presence says which host runs it (only b runs v)
    wait_for(lambda: a.send("v", "to v, wherever it runs")[0] == 0, timeout=30, what="presence to show v on b")
    wait_for(lambda: transcript(b.home, "v").count("to v, wherever it runs") == 1, timeout=30, what="v's text")
    # the same entry written twice (a sender that retried after a lost answer) is one message
    r = redis_server.client()
    entry = {
        "host": "b",
        "message": json.dumps(
            {
                "id": "01900000-0000-7000-8000-000000000001",
                "from": "human@a",
                "to": "w",
                "created": "2026-12-04T00:00:00Z",
                "body": "twice written",
            }
        ),
    }
    r.xadd("miyabi:inbox:b", entry)
    r.xadd("miyabi:inbox:b", entry)
    wait_for(lambda: transcript(b.home, "w").count("twice written") == 1, timeout=30, what="the duplicated message")
    r.xadd(
        "miyabi:inbox:b",
        {
            "host": "b",
            "message": json.dumps(
                {
                    "id": "01900000-0000-7000-8000-000000000002",
                    "from": "x",
                    "to": "w",
                    "created": "2026-12-04T00:00:00Z",
                    "body": "last",
                }
            ),
        },
    )
    wait_for(lambda: transcript(b.home, "w").count("last") == 1, timeout=30, what="a later message")
    assert transcript(b.home, "w").count("twice written") == 1
    assert transcript(b.home, "w").count("hello from a") == 1
    # a name this host runs stays here; one two other hosts run needs its host; one nobody runs is refused, in one line
    assert a.send("w", "stays on a")[0] == 0
    wait_for(lambda: transcript(a.home, "w").count("stays on a") == 1, timeout=30, what="the local message")
    c = Host("c", tmp_path, redis_server.url, agents=("x",))
    hosts.append(c)
    c.up()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert c.send("w", "ambiguous")[0] != 0
        assert c.send("nobody", "x")[0] != 0
    lines = err.getvalue().splitlines()
    assert "runs on hosts a, b; say which: w@a" in lines[0] and "no host on the bus runs an agent 'nobody'" in lines[1]
    assert transcript(b.home, "w").count("stays on a") == 0 and msg_id


def test_a_killed_host_loses_its_task_to_another_after_the_lease_and_it_ends_done_once(
    tmp_path: Path, redis_server: RedisServer, hosts: list[Host]
) -> None:
    a = Host("a", tmp_path, redis_server.url)
    b = Host("b", tmp_path, redis_server.url)
    hosts += [a, b]
    b.up()
    wait_for(
        lambda: (
            b.cli("bus", "status", "--json").exit_code == 0
            and "w"
            in [x["name"] for h in json.loads(b.cli("bus", "status", "--json").output)["hosts"] for x in h["agents"]]
        ),
        timeout=30,
        what="b on the bus",
    )
    a.up()
    # b claims it (a's worker is kept busy first), starts it, and dies mid-step
    busy = submit(a, job(tmp_path, "busy", ["sleep 3", "echo busy >> done.txt"]), agent="w@a")
    wait_for(
        lambda: task(a.home, busy).state == "shared" and any(c["state"] == "in_progress" for c in copies(a.home)),
        timeout=30,
        what="a's worker busy",
    )
    tid = submit(a, job(tmp_path, "long", ["echo started >> started.txt", "sleep 4", "echo long >> done.txt"]))
    wait_for(lambda: (tmp_path / "work" / "started.txt").exists(), timeout=30, what="the job to start on b")
    assert [c["state"] for c in copies(b.home)] == ["in_progress"]
    b.kill()
    wait_for(lambda: task(a.home, tid).state == "done", timeout=60, what="a to take the task over and finish it")
    t = task(a.home, tid)
    assert t.agent == "w@a"
    mine = [c for c in copies(a.home) if c["bus_id"].startswith(f"a:{tid}:")]
    assert len(mine) == 1 and mine[0]["deliveries"] == 2, mine  # the attempt counted
    # b comes back: its copy is given up, never finished a second time
    b.up()
    wait_for(
        lambda: [c["state"] for c in copies(b.home)] == ["cancelled"], timeout=60, what="b to give up its stale copy"
    )
    assert done_lines(tmp_path).count("long") == 1
    assert (tmp_path / "work" / "started.txt").read_text().split() == ["started", "started"]


def test_redis_restarted_and_down_for_a_while_loses_nothing_and_doubles_nothing(
    tmp_path: Path, redis_server: RedisServer, hosts: list[Host]
) -> None:
    a = Host("a", tmp_path, redis_server.url)
    b = Host("b", tmp_path, redis_server.url)
    hosts += [a, b]
    a.up()
    b.up()
    ids = [submit(a, job(tmp_path, f"r{i}", ["sleep 0.5", f"echo r{i} >> done.txt"])) for i in range(4)]
    wait_for(lambda: any(task(a.home, t).state == "done" for t in ids), timeout=60, what="a first job done")
    redis_server.restart()  # mid-run, killed
    ids += [submit(a, job(tmp_path, f"s{i}", ["sleep 0.5", f"echo s{i} >> done.txt"])) for i in range(2)]
    wait_for(
        lambda: all(task(a.home, t).state == "done" for t in ids), timeout=90, what="every job done after the restart"
    )
    # down for a while: both hosts see it, a message for the other host waits in the outbox
    redis_server.stop()
    wait_for(
        lambda: bus_seen(a).get("state") == "down",
        timeout=30,
        what="a to see the bus down",
    )
    st = a.cli("status")
    assert "bus: down since" in st.output and "wait in the outbox" in st.output
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc, _ = a.send("w@b", "sent while the bus was down")
    assert rc == 0 and "the bus is down; the message waits in" in err.getvalue()
    local = submit(a, job(tmp_path, "while-down", ["echo while-down >> done.txt"]))
    assert task(a.home, local).state == "queued"  # it waits to be published
    redis_server.start()
    wait_for(
        lambda: transcript(b.home, "w").count("sent while the bus was down") == 1,
        timeout=60,
        what="the spooled message",
    )
    wait_for(lambda: task(a.home, local).state == "done", timeout=60, what="the job submitted while the bus was down")
    wait_for(lambda: bus_seen(a).get("state") == "up", timeout=30, what="a to see it up")
    lines = done_lines(tmp_path)
    assert sorted(lines) == sorted([f"r{i}" for i in range(4)] + ["s0", "s1", "while-down"]), lines
    assert not list((a.home / "state" / "bus-outbox").glob("*.json"))
    events = [json.loads(x)["event"] for x in (a.home / "logs" / "events.jsonl").read_text().splitlines()]
    assert "bus-down" in events and events.index("bus-up", events.index("bus-down")) > 0


def test_a_password_protected_redis_works_and_the_password_is_never_printed(
    tmp_path: Path, hosts: list[Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-" + uuid.uuid4().hex[:8]
    server = RedisServer(tmp_path / "redis-pw", password=secret)
    server.start()
    try:
        monkeypatch.setenv("MIYABI_TEST_BUS_PW", secret)
        a = Host("a", tmp_path, server.url, bus={"password_env": "MIYABI_TEST_BUS_PW"})
        b = Host("b", tmp_path, server.url, bus={"password_env": "MIYABI_TEST_BUS_PW"})
        inline = Host("c", tmp_path, f"redis://:{secret}@127.0.0.1:{server.port}/0")
        wrong = Host("d", tmp_path, f"redis://:not-{secret}@127.0.0.1:{server.port}/0")
        hosts += [a, b, inline, wrong]
        for h in (a, b, inline, wrong):
            h.up()
        rc, _ = a.send("w@c", "through a password")
        assert rc == 0
        wait_for(lambda: transcript(inline.home, "w").count("through a password") == 1, timeout=30, what="the message")
        wait_for(
            lambda: bus_seen(wrong).get("state") == "down",
            timeout=30,
            what="the wrong password to show as down",
        )
        out = wrong.cli("status").output
        assert "refused the password" in out
        for h in (a, inline, wrong):
            for args in (("status", "--all-hosts"), ("bus", "status"), ("status", "--json")):
                r = h.cli(*args)
                assert secret not in r.output, args
            for f in [*(h.home / "logs").glob("*.log"), h.home / "logs" / "events.jsonl"]:
                assert secret not in f.read_text(errors="replace"), f
        assert "redis://:***@127.0.0.1" in inline.cli("bus", "status").output
    finally:
        server.stop()


def test_two_hosts_polling_one_github_repository_never_claim_an_issue_twice(
    tmp_path: Path, redis_server: RedisServer, hosts: list[Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GH_TOKEN", "t0ken")
    with FakeGitHub() as fake:
        for n in range(1, 9):
            fake.add_issue(n, f"issue {n}", ["status:todo"])
        a, b = (
            Host(
                name,
                tmp_path,
                redis_server.url,
                agents=("kaede",),
                spec={"profile": "shell", "command": "cat", "wip": 3},
                github=fake.section(poll_interval=1),
                routes=[{"default": True, "agent": "kaede"}],
            )
            for name in ("a", "b")
        )
        hosts += [a, b]
        a.up()
        b.up()
        wait_for(
            lambda: sum(len(copies(h.home)) for h in (a, b)) == 6, timeout=60, what="six issues claimed (3 per host)"
        )
        intake = [h for h in (a, b) if any(t["source"] == "github" for t in h.tasks())]
        assert len(intake) == 1, "one host polls GitHub and publishes its issues"
        leader, other = intake[0], next(h for h in (a, b) if h is not intake[0])
        assert {len(copies(a.home)), len(copies(b.home))} == {3}  # each host's agent took as many as its wip
        for n in range(1, 9):
            assert len(fake.comments.get(n, [])) <= 1, (n, fake.comments.get(n))
        # the ensemble claims an issue once, when it publishes it (two wait on the bus for room)
        assert all("status:todo" not in fake.labels(n) and len(fake.comments[n]) == 1 for n in range(1, 9))
        # the polling host dies: the other takes the intake over and claims the rest once
        leader.kill()
        wait_for(
            lambda: bus_seen(other).get("leader"),
            timeout=60,
            what="the other host to take the intake over",
        )
        fake.add_issue(9, "issue 9", ["status:todo"])
        wait_for(
            lambda: any(t["source"] == "github" and t["ref"] == "acme/widgets#9" for t in other.tasks()),
            timeout=60,
            what="the new issue taken in by the other host",
        )
        for n in range(1, 10):
            assert len(fake.comments.get(n, [])) <= 1, (n, fake.comments.get(n))


def test_hosts_talk_over_tls(tmp_path: Path, hosts: list[Host]) -> None:
    server = RedisServer(tmp_path / "redis-tls", tls=True)
    server.start()
    try:
        a = Host("a", tmp_path, server.url)
        b = Host("b", tmp_path, server.url)
        hosts += [a, b]
        a.up()
        b.up()
        assert a.send("w@b", "over TLS")[0] == 0
        wait_for(lambda: transcript(b.home, "w").count("over TLS") == 1, timeout=30, what="the message over TLS")
        tid = submit(b, job(tmp_path, "tls-job", ["echo tls >> done.txt"]), agent="w@a")
        wait_for(lambda: task(b.home, tid).state == "done", timeout=60, what="the job run by a over TLS")
        assert json.loads(a.cli("status", "--json").output)["bus"]["url"].startswith("rediss://127.0.0.1:")
    finally:
        server.stop()
