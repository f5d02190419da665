"""Notifications against local receivers (real HTTP servers on 127.0.0.1): one that
answers, one that is down, one that is slow, one that answers 500 before it works.
Every notice reaches the good receivers exactly once, in their own format, across a
controller SIGKILLed and started again; a bad receiver never delays delivery."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from helpers import wait_for, write_layout
from integration.conftest import Cli
from integration.test_delivery import send, transcript
from localserver import LocalServer

from miyabi.controller import running_pid
from miyabi.home import Home
from miyabi.notify.outbox import Outbox
from miyabi.work.store import Store


class Recorder:
    """What the receivers were sent, by path."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.fail_first = 2
        self.release = threading.Event()
        self.slow_started = threading.Event()

    def of(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [g for g in self.got if g["path"] == path]


def receivers(rec: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path == "/slow":
                rec.slow_started.set()
                rec.release.wait(60)
            if self.path == "/flaky":
                with rec.lock:
                    rec.fail_first -= 1
                    failing = rec.fail_first >= 0
                if failing:
                    self.send_response(500)
                    self.end_headers()
                    return
            with rec.lock:
                rec.got.append({"path": self.path, "headers": dict(self.headers), "body": body.decode()})
            self.send_response(200)
            self.end_headers()

    return Handler


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_notices_reach_each_receiver_once_in_its_format_and_bad_ones_slow_nothing(
    cli: Cli, home: Path, tmp_path: Path
) -> None:
    rec = Recorder()
    with LocalServer(receivers(rec)) as srv:
        down = f"http://127.0.0.1:{closed_port()}/down"
        lay = write_layout(
            tmp_path / "notify.yaml",
            [
                {
                    "name": "w",
                    "profile": "worker",
                    "command": "miyabi worker --hold-tasks",
                    "submit_delay": 0.03,
                    "ready_settle": 0.03,
                },
                {
                    "name": "crash",
                    "profile": "shell",
                    "command": "sh -c 'exit 3'",
                    "watchdog": {"max_restarts": 1, "min_uptime": 30, "restart_window": 600},
                },
            ],
            session="notify",
            routes=[{"default": True, "agent": "w"}],
            notify=[  # the receivers' shorthands, and the long form
                {"webhook": f"{srv.url}/hook"},
                {"slack": f"{srv.url}/slack", "events": ["task-done", "task-failed"]},
                {"discord": f"{srv.url}/discord", "events": ["agent-failed"]},
                {"ntfy": f"{srv.url}/ntfy", "events": ["task-done"]},
                {"kind": "webhook", "url_env": "MIYABI_TEST_HOOK", "events": ["task-done"]},
                {"webhook": f"{srv.url}/flaky", "events": ["task-done"], "retry_after": 0.05},
                {"webhook": down, "events": ["task-done"], "retry_after": 0.05, "max_attempts": 2},
                {"webhook": f"{srv.url}/slow", "events": ["task-done", "task-failed"], "timeout": 60},
            ],
        )
        os.environ["MIYABI_TEST_HOOK"] = f"{srv.url}/from-env"
        try:
            r = cli("up", str(lay), "-d")
            assert r.exit_code == 0, r.output
            wait_for(
                lambda: running_pid(Home(home)) is not None and (home / "state" / "miyabi.db").exists(),
                timeout=30,
                what="the controller",
            )
            store = Store.of_home(home)
            # the outbox reads from its first start on: wait until it has
            wait_for(lambda: Outbox(home).cursor("task-events") is not None, timeout=30, what="the notifier started")
            assert cli("task", "add", "write the docs").exit_code == 0
            wait_for(lambda: store.get(1).state in ("assigned", "in_progress"), timeout=30, what="task 1 assigned")
            assert cli("task", "done", "1", "--note", "written").exit_code == 0
            assert cli("task", "add", "impossible").exit_code == 0
            wait_for(lambda: store.get(2).state in ("assigned", "in_progress"), timeout=30, what="task 2 assigned")
            assert cli("task", "fail", "2", "--reason", "cannot be done").exit_code == 0

            # the slow receiver holds its own queue, and nothing else: delivery goes on meanwhile
            assert rec.slow_started.wait(30), "the slow receiver was never called"
            send(home, "w", "delivered while a receiver hangs")
            wait_for(
                lambda: "delivered while a receiver hangs" in transcript(home, "w"),
                timeout=30,
                what="delivery not held up",
            )
            wait_for(lambda: len(rec.of("/slack")) == 2, timeout=30, what="slack told of done and failed")

            hooks = wait_for(
                lambda: (
                    (h := rec.of("/hook"))
                    and {json.loads(x["body"])["kind"] for x in h} >= {"task-done", "task-failed", "agent-failed"}
                    and h
                ),
                timeout=60,
                what="the webhook told of everything",
            )
            kinds = [json.loads(x["body"])["kind"] for x in hooks]
            assert (
                kinds.count("task-done") == 1 and kinds.count("task-failed") == 1 and kinds.count("agent-failed") == 1
            )
            done = next(json.loads(x["body"]) for x in hooks if json.loads(x["body"])["kind"] == "task-done")
            assert done["session"] == "notify" and done["time"].endswith("Z") and done["event"]["ref"] == "#1"
            slack = [json.loads(x["body"]) for x in rec.of("/slack")]
            assert (
                set(slack[0]) == {"text"}
                and "task #1 done" in slack[0]["text"]
                and "task #2 failed" in slack[1]["text"]
            )
            discord = [json.loads(x["body"]) for x in rec.of("/discord")]
            assert (
                len(discord) == 1 and set(discord[0]) == {"content"} and "agent crash failed" in discord[0]["content"]
            )
            ntfy = wait_for(lambda: rec.of("/ntfy"), what="ntfy")
            assert (
                len(ntfy) == 1
                and ntfy[0]["headers"]["Title"] == "miyabi notify: task #1 done"
                and "written" in ntfy[0]["body"]
            )
            wait_for(lambda: len(rec.of("/from-env")) == 1, what="the receiver whose URL is in the environment")
            wait_for(lambda: len(rec.of("/flaky")) == 1, what="the flaky receiver after its two 500s")

            failed = wait_for(
                lambda: [e for e in _events(home) if e["event"] == "notice-failed"],
                timeout=30,
                what="the dead receiver given up",
            )
            assert (
                failed[0]["attempts"] == 2
                and "cannot reach it" in failed[0]["reason"]
                and down not in json.dumps(failed)
            )

            # a controller SIGKILLed and started again by its keep-alive tells of that, once, and nothing twice
            before = running_pid(Home(home))
            assert before is not None
            os.kill(before, signal.SIGKILL)
            wait_for(
                lambda: (p := running_pid(Home(home))) is not None and p != before,
                timeout=60,
                what="the controller back",
            )
            wait_for(
                lambda: any(json.loads(x["body"])["kind"] == "controller-restarted" for x in rec.of("/hook")),
                timeout=60,
                what="told of the restart",
            )
            rec.release.set()
            wait_for(lambda: len(rec.of("/slow")) >= 1, timeout=60, what="the slow receiver answered")
            hooks = rec.of("/hook")
            keys = [json.loads(x["body"])["key"] for x in hooks]
            assert len(keys) == len(set(keys)), keys
            assert [json.loads(x["body"])["kind"] for x in hooks].count("controller-restarted") == 1
            assert len(rec.of("/slack")) == 2 and len(rec.of("/ntfy")) == 1 and len(rec.of("/flaky")) == 1
        finally:
            rec.release.set()
            os.environ.pop("MIYABI_TEST_HOOK", None)
            cli("down")


def _events(home: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (home / "logs" / "events.jsonl").read_text().splitlines()]
