"""The dashboard's API against a running ensemble and a real `miyabi web` process:
every endpoint with and without the token, bad input, what each change does to the
inboxes, tasks and panes, the live feeds (Server-Sent Events), /metrics parsed with
the Prometheus client's own parser, and the controller serving it (`web:`)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import wait_for, write_layout
from integration.conftest import Cli
from integration.test_delivery import transcript
from integration.webkit import Web, browse, start_web, stop
from prometheus_client.parser import text_string_to_metric_families

from miyabi.home import Home
from miyabi.messaging.mailbox import MessageState, inbox, post
from miyabi.tmux.runner import Tmux
from miyabi.work.model import TaskState
from miyabi.work.store import Store

READS = [
    "/api/v1/agents",
    "/api/v1/agents/w1",
    "/api/v1/agents/sh/screen",
    "/api/v1/agents/w1/messages",
    "/api/v1/agents/w1/crashes",
    "/api/v1/approvals",
    "/api/v1/merges",
    "/api/v1/messages",
    "/api/v1/tasks",
    "/api/v1/events",
    "/api/v1/agents/w1/logs",
    "/api/v1/kpis",
    "/api/v1/kpis/charts/availability.svg",
    "/api/v1/openapi.json",
    "/metrics",
]
CHANGES: list[tuple[str, dict[str, Any] | None]] = [
    ("/api/v1/agents/w1/messages", {"text": "hello"}),
    ("/api/v1/agents/w1/restart", None),
    ("/api/v1/agents/ask/approve", None),
    ("/api/v1/agents/ask/deny", {"reason": "no"}),
    ("/api/v1/tasks", {"title": "t"}),
    ("/api/v1/tasks/1/cancel", None),
    ("/api/v1/tasks/1/retry", None),
    ("/api/v1/messages/x/retry", None),
    ("/api/v1/messages/x/drop", None),
    ("/api/v1/merges/1/approve", None),
    ("/api/v1/merges/1/reject", {"reason": "no"}),
]


def error_of(r: httpx.Response) -> str:
    """The one-line error of a refused request (and never a traceback)."""
    data = r.json()
    assert set(data) == {"error"} and "\n" not in data["error"] and "Traceback" not in data["error"], data
    return str(data["error"])


def test_every_endpoint_needs_a_token_and_changes_need_the_full_one_in_a_header(web: Web) -> None:
    with web.client(token=None) as anon, web.client("view") as viewer, web.client("wrong-token") as wrong:
        for path in READS:
            assert "no token" in error_of(anon.get(path)), path
            assert anon.get(path).status_code == 401
            assert wrong.get(path).status_code == 401 and "wrong token" in error_of(wrong.get(path))
            assert viewer.get(path).status_code == 200, path
        for path, body in CHANGES:
            assert anon.post(path, json=body).status_code == 401, path
            r = viewer.post(path, json=body)
            assert r.status_code == 403 and "view token only reads" in error_of(r), path
    # the token in the cookie alone (what a cross-site form would send) changes nothing
    with httpx.Client(base_url=web.base, cookies={"miyabi_token": web.token}) as cookie_only:
        assert cookie_only.get("/api/v1/agents").status_code == 200
        for path, body in CHANGES:
            r = cookie_only.post(path, json=body)
            assert r.status_code == 403 and "header" in error_of(r), path
    assert inbox(web.home, "w1").pending() == []
    # the live feeds too: refused at once without a token, streamed with the view token
    for path in ("/api/v1/agents/stream", "/api/v1/agents/sh/screen/stream", "/api/v1/events/stream"):
        with web.client(token=None) as anon:
            assert anon.get(path).status_code == 401, path
        with web.client("view") as viewer, viewer.stream("GET", path) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), path
    # ?token= on a page sets the cookie and drops the token from the URL
    with httpx.Client(base_url=web.base) as browser:
        r = browser.get(f"/?token={web.token}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert (
            "HttpOnly" in r.headers["set-cookie"]
            and "SameSite=Lax" in r.headers["set-cookie"]
            and "Max-Age=" in r.headers["set-cookie"]
        )
        assert browser.get("/", follow_redirects=False).status_code == 200
        assert browser.get("/?token=nope", follow_redirects=False).status_code == 401
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    import http.client

    conn = http.client.HTTPConnection(web.base.removeprefix("http://"), timeout=30)
    conn.request("GET", f"//evil.example/?token={web.token}")  # a path that a browser would take for another host
    raw = conn.getresponse()
    assert raw.status == 303 and raw.getheader("location") == "/evil.example/"
    conn.close()
    # an empty header beside the cookie is no header
    with httpx.Client(base_url=web.base, cookies={"miyabi_token": web.token}, headers={"X-Miyabi-Token": ""}) as c:
        assert c.post("/api/v1/agents/w1/messages", json={"text": "x"}).status_code == 403
    # miyabi's own logs are nobody's pane log (they hold paths and, for a dashboard, its URL)
    (web.home / "logs" / "web.log").write_text("open: http://127.0.0.1/?token=secret\n")
    with web.client("view") as viewer:
        for own in ("web", "controller", "watchdog"):
            assert viewer.get(f"/api/v1/agents/{own}/logs").status_code == 404, own


def test_agents_screen_and_openapi(web: Web) -> None:
    with web.client() as c:
        data = c.get("/api/v1/agents").json()
        rows = {a["name"]: a for a in data["agents"]}
        assert set(rows) == {"w1", "sh", "ask"} and data["controller"]["running"] is True
        assert rows["w1"]["state"] == "ready" and rows["w1"]["pid"] > 0 and rows["w1"]["current_task"] is None
        Tmux(web.socket).run("send-keys", "-t", rows["sh"]["pane_id"], "-l", "screen <b>text</b>")
        wait_for(
            lambda: "screen &lt;b&gt;text&lt;/b&gt;" in c.get("/api/v1/agents/sh/screen").json()["html"],
            what="the typed text on the screen, escaped",
        )
        assert c.get("/api/v1/agents/nobody").status_code == 404
        assert "unknown agent 'nobody'" in error_of(c.get("/api/v1/agents/nobody/screen"))
        paths = c.get("/api/v1/openapi.json").json()["paths"]
        for p in (
            "/api/v1/agents",
            "/api/v1/agents/{name}/messages",
            "/api/v1/agents/{name}/approve",
            "/api/v1/tasks/{ref}/cancel",
            "/api/v1/events/stream",
            "/api/v1/messages/{msg_id}/retry",
        ):
            assert p in paths, p


def test_send_puts_one_message_in_the_inbox_and_the_worker_gets_it_once(web: Web) -> None:
    with web.client() as c:
        r = c.post("/api/v1/agents/w1/messages", json={"text": "from the dashboard ☃", "priority": "high"})
        assert r.status_code == 201, r.text
        sent = r.json()
        assert (
            sent["to"] == "w1"
            and sent["from"] == "human"
            and sent["state"] == "pending"
            and sent["created"].endswith("Z")
        )
    wait_for(lambda: transcript(web.home, "w1").count("from the dashboard ☃") == 1, timeout=30, what="delivered once")
    assert transcript(web.home, "w1").count("from the dashboard ☃") == 1


@pytest.mark.parametrize(
    ("path", "body", "status", "said"),
    [
        ("/api/v1/agents/w1/messages", {"text": ""}, 422, "text: String should have at least 1 character"),
        ("/api/v1/agents/w1/messages", {"text": "\x01\x02"}, 400, "the message has no text"),
        ("/api/v1/agents/w1/messages", {"text": "x", "priority": "urgent"}, 422, "priority"),
        ("/api/v1/agents/w1/messages", {"text": "x", "ttl": -1}, 422, "ttl"),
        ("/api/v1/agents/w1/messages", {"txt": "x"}, 422, "text: Field required"),
        ("/api/v1/agents/nobody/messages", {"text": "x"}, 404, "unknown agent 'nobody'"),
        ("/api/v1/agents/w1/approve", None, 409, "w1 is not waiting for approval"),
        ("/api/v1/tasks", {"title": ""}, 422, "title"),
        ("/api/v1/tasks", {"title": "x", "priority": "asap"}, 422, "priority"),
        ("/api/v1/tasks/999/cancel", None, 404, "no task 999"),
        ("/api/v1/tasks/abc/cancel", None, 400, "is not a task id"),
        ("/api/v1/messages/0000/retry", None, 404, "no message with id '0000'"),
    ],
)
def test_bad_input_is_a_4xx_with_one_line(
    web: Web, path: str, body: dict[str, Any] | None, status: int, said: str
) -> None:
    with web.client() as c:
        r = c.post(path, json=body)
        assert r.status_code == status, r.text
        assert said in error_of(r)
    assert inbox(web.home, "w1").pending() == []


def test_bad_reads_and_garbage(web: Web) -> None:
    with web.client() as c:
        assert "state 'bogus' is not a task state" in error_of(c.get("/api/v1/tasks?state=bogus"))
        assert c.get("/api/v1/events?grep=(").status_code == 400 and "not a regular expression" in error_of(
            c.get("/api/v1/events?grep=(")
        )
        assert c.get("/api/v1/events?limit=0").status_code == 422
        assert c.get("/api/v1/nothing").status_code == 404 and "no such page or endpoint" in error_of(
            c.get("/api/v1/nothing")
        )
        r = c.post("/api/v1/agents/w1/messages", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "JSON" in error_of(r)
        r = c.post("/api/v1/agents/w1/messages", content=b"\xff\xfe", headers={"content-type": "application/json"})
        assert r.status_code == 422
        assert c.get("/api/v1/agents/w1/crashes/..%2F..%2Frun%2Fweb.json").status_code == 404
        r = c.put("/api/v1/tasks")  # RFC 9110 15.5.6: a 405 says which methods the resource takes
        assert r.status_code == 405 and set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
        assert "Method Not Allowed" in error_of(r)


def test_tasks_cancel_retry_and_their_history(web: Web) -> None:
    with web.client() as c:
        r = c.post("/api/v1/tasks", json={"title": "from the web", "labels": ["docs"]})
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        assert r.json()["waiting"] and "no route" in r.json()["waiting"]
        listed = c.get("/api/v1/tasks", params={"label": "docs", "source": "local"}).json()
        assert [t["id"] for t in listed] == [tid]
        assert c.get("/api/v1/tasks", params={"label": "nope"}).json() == []
        assert c.post(f"/api/v1/tasks/{tid}/cancel").json()["state"] == "cancelled"
        assert c.post(f"/api/v1/tasks/{tid}/cancel").status_code == 409
        assert c.post(f"/api/v1/tasks/{tid}/retry").json()["state"] == "queued"
        shown = c.get(f"/api/v1/tasks/%23{tid}").json()
        states = [h["state"] for h in shown["history"]]
        assert states[-2:] == ["cancelled", "queued"] and "web:127.0.0.1" in shown["history"][-2]["reason"]
    store = Store.of_home(web.home)
    assert store.get(tid).state == "queued"


def test_dead_letters_retry_and_pending_drop(web: Web) -> None:
    box = inbox(web.home, "sh")
    dead = post(web.home, "sh", "a dead letter", sender="test", ttl=0.001)  # too old before the controller sees it
    wait_for(
        lambda: (found := box.find(dead.id)) is not None and found[0] == MessageState.FAILED,
        timeout=30,
        what="a dead letter",
    )
    with web.client() as c:
        listed = c.get("/api/v1/messages").json()
        assert [m["id"] for m in listed] == [dead.id] and "ttl" in listed[0]["reason"]
        assert c.post(f"/api/v1/messages/{dead.id}/drop").status_code == 409  # only pending ones are dropped
        again = c.post(f"/api/v1/messages/{dead.id}/retry").json()
        assert again["state"] == "pending" and again["retried"]
        # its ttl counts from the retry, and is as short as before: it dies again, and may be retried again
        wait_for(
            lambda: (found := box.find(dead.id)) is not None and found[0] == MessageState.FAILED,
            timeout=30,
            what="dead again",
        )
        assert c.post(f"/api/v1/messages/{dead.id}/retry").status_code == 200
        r = c.post(f"/api/v1/messages/{dead.id[:12]}/drop")  # a prefix names it too (pending or dead by now)
        assert (r.status_code == 200 and r.json()["id"] == dead.id) or dead.id in error_of(r)
    events = [json.loads(line) for line in (web.home / "logs" / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e.get("id") == dead.id].count("retry") == 2


def test_restart_and_crash_evidence_from_the_api(web: Web) -> None:
    with web.client() as c:
        before = c.get("/api/v1/agents/sh").json()["pid"]
        r = c.post("/api/v1/agents/sh/restart")
        assert r.status_code == 200 and r.json() == {"ok": True, "detail": "restarted sh"}
        pid = wait_for(
            lambda: (p := c.get("/api/v1/agents/sh").json()["pid"]) not in (0, before) and p,
            timeout=30,
            what="a new process",
        )
        os.kill(pid, signal.SIGKILL)  # a crash: the watchdog keeps its evidence
        crashes = wait_for(lambda: c.get("/api/v1/agents/sh/crashes").json(), timeout=30, what="crash evidence")
        assert crashes[0]["file"].startswith("sh-") and crashes[0]["time"].endswith("Z") and crashes[0]["bytes"] > 0
        text = c.get(f"/api/v1/agents/sh/crashes/{crashes[0]['file']}").text
        assert "agent: sh" in text and "killed by signal 9" in text
        assert c.get("/api/v1/agents/w1/crashes").json() == []
        assert c.get(f"/api/v1/agents/w1/crashes/{crashes[0]['file']}").status_code == 404  # another agent's file


def test_approve_and_deny_reach_the_pane_and_are_audited(web: Web, home: Path) -> None:
    from integration.test_delivery import send

    with web.client() as c:
        send(home, "ask", "please run the tool")
        wait_for(
            lambda: c.get("/api/v1/agents/ask").json()["state"] == "waiting-approval",
            timeout=30,
            what="waiting-approval",
        )
        waiting = c.get("/api/v1/approvals").json()["waiting"]
        assert [w["agent"] for w in waiting] == ["ask"] and "Allow running the tool?" in waiting[0]["question"]
        r = c.post("/api/v1/agents/ask/approve")
        assert r.status_code == 200, r.text
        assert r.json()["answer"] == "approve" and r.json()["keys"] == ["y", "Enter"]
        wait_for(
            lambda: web.answers.exists() and web.answers.read_text().splitlines() == ["yes"],
            what="the yes in the agent",
        )
        wait_for(lambda: c.get("/api/v1/agents/ask").json()["state"] == "ready", timeout=30, what="ready again")
        send(home, "ask", "the tool again")
        wait_for(
            lambda: c.get("/api/v1/agents/ask").json()["state"] == "waiting-approval", timeout=30, what="asked again"
        )
        r = c.post("/api/v1/agents/ask/deny", json={"reason": "not now"})
        assert r.status_code == 200 and r.json()["message"], r.text
        wait_for(lambda: web.answers.read_text().splitlines() == ["yes", "no"], what="the no in the agent")
        answers = c.get("/api/v1/approvals").json()["answers"]
        assert [(a["answer"], a["by"]) for a in answers[:2]] == [
            ("deny", "web:127.0.0.1"),
            ("approve", "web:127.0.0.1"),
        ]
        assert answers[0]["reason"] == "not now"


def sse(c: httpx.Client, path: str, want: int, found: list[dict[str, Any]], ready: threading.Event) -> None:
    """Read Server-Sent Events from ``path`` into ``found`` until ``want`` data events
    came, or the test closed the client."""
    try:
        with c.stream("GET", path) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            ready.set()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    found.append(json.loads(line[6:]))
                    if len(found) >= want:
                        return
    except httpx.HTTPError:  # the client closed under the reader: the test has what it wanted
        return


def test_the_event_feed_streams_what_is_logged_filtered(web: Web, home: Path) -> None:
    from integration.test_delivery import send

    found: list[dict[str, Any]] = []
    ready = threading.Event()
    with web.client() as c:
        t = threading.Thread(
            target=sse, args=(c, "/api/v1/events/stream?event=enqueued&agent=w1", 2, found, ready), daemon=True
        )
        t.start()
        assert ready.wait(30)
        ids = [send(home, "sh", "not for the feed"), send(home, "w1", "first"), send(home, "w1", "second")]
        t.join(30)
    assert [(e["event"], e["agent"], e["id"]) for e in found] == [
        ("enqueued", "w1", ids[1]),
        ("enqueued", "w1", ids[2]),
    ]
    with web.client() as c:
        past = c.get("/api/v1/events", params={"event": "enqueued", "agent": "w1", "limit": 1}).json()
        assert [e["id"] for e in past] == [ids[2]]


def test_a_screen_stream_sends_a_frame_when_the_pane_prints(web: Web) -> None:
    found: list[dict[str, Any]] = []
    ready = threading.Event()
    with web.client() as c:
        pane = c.get("/api/v1/agents/sh").json()["pane_id"]
        t = threading.Thread(target=sse, args=(c, "/api/v1/agents/sh/screen/stream", 100, found, ready), daemon=True)
        t.start()
        wait_for(lambda: len(found) >= 1, timeout=30, what="the first frame")
        assert "streamed words" not in found[0]["html"]
        Tmux(web.socket).run("send-keys", "-t", pane, "-l", "streamed words")
        last = wait_for(
            lambda: next((f for f in found if "streamed words" in f["html"]), None),
            timeout=30,
            what="a frame with the words",
        )
    assert last["pane"] == pane and len(last["cursor"]) == 2
    with web.client() as c:  # a stream for what cannot be streamed is refused before it starts
        assert c.get("/api/v1/agents/nobody/screen/stream").status_code == 404
        assert c.get("/api/v1/events/stream", params={"grep": "("}).status_code == 400


def test_metrics_parse_with_the_prometheus_client(web: Web, home: Path) -> None:
    from integration.test_delivery import send

    send(home, "w1", "counted")
    wait_for(lambda: "counted" in transcript(home, "w1"), timeout=30, what="delivered")
    Store.of_home(home).add("queued one", "", [], "normal", [])

    def families() -> dict[str, Any]:
        with web.client() as c:
            r = c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        return {f.name: f for f in text_string_to_metric_families(r.text)}

    fams = wait_for(
        lambda: (
            (f := families())
            and any(s.value >= 1 for s in f["miyabi_delivery_latency_seconds"].samples if s.name.endswith("_count"))
            and f
        ),
        timeout=30,
        what="delivery counted",
    )
    up = {s.labels["agent"]: s.value for s in fams["miyabi_agent_up"].samples}
    assert up == {"w1": 1.0, "sh": 1.0, "ask": 1.0}
    ready = {
        s.labels["agent"] for s in fams["miyabi_agent_state"].samples if s.labels["state"] == "ready" and s.value == 1
    }
    assert ready == {"w1", "sh", "ask"}
    tasks = {s.labels["state"]: s.value for s in fams["miyabi_tasks"].samples}
    assert tasks["queued"] == 1 and tasks["done"] == 0
    pending = {(s.labels["agent"], s.labels["state"]): s.value for s in fams["miyabi_messages"].samples}
    assert pending[("w1", "pending")] == 0 and pending[("w1", "failed")] == 0
    assert fams["miyabi_controller_up"].samples[0].value == 1
    assert "miyabi_task_cycle_seconds" in fams and "miyabi_agent_restarts" in fams


def test_read_only_server_and_refused_hosts(cli: Cli, home: Path, socket: str, web: Web) -> None:
    proc, said = start_web(home, socket, "--read-only")
    try:
        base, _, token = said["open"].partition("/?token=")
        assert "view" not in said
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
            assert c.get("/api/v1/agents").status_code == 200
            r = c.post("/api/v1/agents/w1/messages", json={"text": "x"})
            assert r.status_code == 403 and "read-only" in error_of(r)
    finally:
        stop(proc)
    r = miyabi_web(home, socket, "--host", "0.0.0.0", "--no-token", "--port", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--no-token is refused on 0.0.0.0" in r.stderr
    taken = web.base.rsplit(":", 1)[1]
    r = miyabi_web(home, socket, "--port", taken)
    assert r.returncode == 1 and f"cannot listen on 127.0.0.1:{taken}" in r.stderr and r.stderr.count("\n") == 1
    assert f"this home's dashboard, pid {web.proc.pid}, already serves there" in r.stderr


def miyabi_web(home: Path, socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`miyabi web ARGS` for the home, run to its end (one that cannot serve)."""
    argv = [sys.executable, "-m", "miyabi", "web", *args, "--home", str(home), "--socket", socket]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_without_a_token_only_loopback_names_are_served(home: Path, socket: str, web: Web) -> None:
    proc, said = start_web(home, socket, "--no-token")
    try:
        base = said["open"].rstrip("/")
        with httpx.Client(base_url=base) as c:
            assert c.get("/api/v1/agents").status_code == 200
            assert (
                c.post("/api/v1/agents/w1/messages", json={"text": "x"}).status_code == 403
            )  # no header: a cross-site form
            assert c.get("/api/v1/agents", headers={"host": "evil.example:80"}).status_code == 403  # DNS rebinding
            r = c.post("/api/v1/agents/w1/messages", json={"text": "x"}, headers={"X-Miyabi-Token": "-"})
            assert r.status_code == 201
    finally:
        stop(proc)


def test_the_controller_serves_the_dashboard_from_the_layout_and_restarts_it(
    cli: Cli, home: Path, tmp_path: Path
) -> None:
    import socket as sockets

    with sockets.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lay = write_layout(tmp_path / "served.yaml", ["w"], session="served", web={"port": port})
    r = cli("up", str(lay), "-d")
    assert r.exit_code == 0 and f"dashboard: http://127.0.0.1:{port}/?token=" in r.output, r.output
    url = r.output.split("dashboard: ")[1].split()[0]
    token = url.split("token=")[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}) as c:
        assert [a["name"] for a in c.get("/api/v1/agents").json()["agents"]] == ["w"]
        st = json.loads(cli("status", "--json").output)
        assert st["web"]["url"] == url
        first = st["web"]["pid"]
        os.kill(first, signal.SIGKILL)

        def served_again() -> bool:
            try:
                web = json.loads(cli("status", "--json").output)["web"]
                return web is not None and web["pid"] != first and c.get("/api/v1/agents").status_code == 200
            except (ValueError, httpx.HTTPError):
                return False

        wait_for(served_again, timeout=60, what="the dashboard started again")
    again = json.loads(cli("status", "--json").output)["web"]["pid"]
    r = cli("down")
    assert r.exit_code == 0
    wait_for(lambda: not _alive(again), timeout=30, what="the dashboard stopped with the controller")
    events = [json.loads(line)["event"] for line in (home / "logs" / "events.jsonl").read_text().splitlines()]
    assert events.count("web-started") >= 2 and "web-exited" in events
    assert Home(home).run.joinpath("web.json").stat().st_mode & 0o077 == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == 0
    except ChildProcessError:
        return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_kpis_and_their_charts(web: Web, home: Path) -> None:
    from integration.test_delivery import send

    send(home, "w1", "for the figures")
    wait_for(lambda: "for the figures" in transcript(home, "w1"), timeout=30, what="delivered")
    with web.client() as c:
        for since in ("24h", "7d"):
            d = c.get("/api/v1/kpis", params={"since": since}).json()
            assert [ch["name"] for ch in d["charts"]] == [
                "availability",
                "restarts",
                "mttr",
                "delivery",
                "tasks",
                "utilization",
            ]
            assert {r[0] for r in d["agents"]["rows"]} == {"w1", "sh", "ask"}
            assert d["report"]["since"].endswith("Z") and d["summary"][0][0] == "window"
            for ch in d["charts"]:
                r = c.get(f"/api/v1/kpis/charts/{ch['name']}.svg", params={"since": since})
                assert (
                    r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml") and "<svg" in r.text
                )
        assert c.get("/api/v1/kpis", params={"since": "1y"}).status_code == 422
        assert "no chart 'pie'" in error_of(c.get("/api/v1/kpis/charts/pie.svg"))
        lines = c.get("/api/v1/agents/w1/logs", params={"grep": "for the figures"}).json()
        assert lines and all("for the figures" in ln["text"] for ln in lines) and "\x1b" not in json.dumps(lines)
        assert c.get("/api/v1/agents/w1/logs", params={"grep": "("}).status_code == 400


def test_a_port_held_by_another_program_is_named_with_its_holder(home: Path, socket: str, web: Web) -> None:
    # a program that is not miyabi listens on a port, while this home's dashboard serves on another one
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import socket, sys, time\n"
                "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
                "print(s.getsockname()[1], flush=True); time.sleep(600)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        r = miyabi_web(home, socket, "--port", str(port))
    finally:
        holder.kill()
        holder.wait()
    ours = web.base.rsplit(":", 1)[1]
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert f"pid {holder.pid}" in r.stderr and "python" in r.stderr, r.stderr
    assert ours not in r.stderr.replace(str(port), ""), r.stderr  # the other dashboard's port is not named


def test_down_leaves_a_dashboard_started_by_hand_and_says_where_it_serves(cli: Cli, web: Web) -> None:
    r = cli("down")
    assert r.exit_code == 0, r.output
    line = f"the dashboard started by hand still serves at {web.base} (pid {web.proc.pid})"
    assert line in r.output and f"kill {web.proc.pid}" in r.output, r.output
    assert "stopped the dashboard" not in r.output
    assert web.proc.poll() is None  # still serving
    with web.client() as c:
        assert c.get("/api/v1/tasks").status_code == 200


def test_the_web_package_says_what_it_is() -> None:
    import miyabi.web

    assert miyabi.web.__file__ is not None and miyabi.web.__file__.endswith("__init__.py")
    assert miyabi.web.__doc__ and "dashboard" in miyabi.web.__doc__


def test_every_page_shows_its_state_without_a_script(web: Web) -> None:
    """What `chromium --dump-dom` or a slow phone sees before any script runs: each page
    as the server rendered it, with the real agents, tasks, messages and events in it,
    and every untrusted text escaped."""
    store = Store.of_home(web.home)
    store.add("<script>alert('title')</script> fix the <b>build</b>", "the <i>body</i>", ["docs"], "normal", [])
    dead = post(web.home, "sh", "<img src=x onerror=alert(1)> dead letter", sender="test", ttl=0.001)
    wait_for(
        lambda: (found := inbox(web.home, "sh").find(dead.id)) is not None and found[0] == MessageState.FAILED,
        timeout=30,
        what="a dead letter",
    )
    with web.client() as api:
        pane = api.get("/api/v1/agents/sh").json()["pane_id"]
    Tmux(web.socket).run("send-keys", "-t", pane, "-l", "on the <u>screen</u>")
    with browse(web) as c:

        def page(path: str) -> str:
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), (path, r.text)
            assert "loading…" not in r.text and "<script>alert" not in r.text and "<img src=x" not in r.text, path
            assert ">null<" not in r.text and " null " not in r.text, path
            return r.text

        html = page("/")
        assert all(f'data-agent="{n}"' in html for n in ("w1", "sh", "ask")) and "controller running" in html
        assert html.count('<span class="state s-ready">ready</span>') == 3
        html = wait_for(
            lambda: (h := page("/agents/sh")) and "on the &lt;u&gt;screen&lt;/u&gt;" in h and h, what="screen"
        )
        assert "<h2>sh</h2>" in html and "dead letter" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
        html = page("/tasks")
        assert "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt; fix the &lt;b&gt;build&lt;/b&gt;" in html
        html = page("/tasks/1")
        assert "fix the &lt;b&gt;build&lt;/b&gt;" in html and "the &lt;i&gt;body&lt;/i&gt;" in html
        assert "added from local" in html and "no route matches it" in html
        html = page("/inbox")
        assert dead.id[:13] in html and "&lt;img src=x onerror=alert(1)&gt; dead letter" in html
        assert "ttl" in html  # why it is a dead letter
        html = page("/approvals")
        assert "nobody is waiting" in html
        html = page("/events")
        assert dead.id in html and "enqueued" in html and 'data-after="' in html
        html = page("/kpis")
        assert "availability" in html and all(f"<td>{n}</td>" in html for n in ("w1", "sh", "ask"))
        assert "<title>Ensemble · web · miyabi</title>" in page("/")  # the session, then miyabi
        # a part of a page alone, as the script fetches it to keep the page live
        part = c.get("/?part=agents").text
        assert part.lstrip().startswith("<p") and 'data-agent="w1"' in part and "<html" not in part


def test_the_task_board_has_a_column_per_stage_and_shared_only_with_a_bus(web: Web) -> None:
    store = Store.of_home(web.home)
    for title in ("queued one", "cancelled one", "failed one"):
        store.add(title, "", [], "normal", [])
    with web.client() as api:
        assert api.post("/api/v1/tasks/2/cancel").status_code == 200
    store.set_state(3, TaskState.FAILED, reason="tried", expect=[TaskState.QUEUED])  # as if it ran and failed
    with browse(web) as c:
        html = c.get("/tasks").text
    columns = re.findall(r'data-column="([a-z]+)"', html)
    assert columns == ["queued", "working", "finished"], columns  # no bus: no shared column
    finished = html[html.index('data-column="finished"') :]
    assert "cancelled one" in finished and "failed one" in finished and "queued one" not in finished
    assert '<span class="state s-failed">failed</span>' in finished  # each card says its own state


def test_a_browser_gets_an_error_page_and_the_api_json(web: Web) -> None:
    with browse(web) as c:
        for path, said in (
            ("/nothing/here", "no such page or endpoint: GET /nothing/here"),
            ("/tasks/999", "no task 999"),
            ("/agents/nobody", "unknown agent &#39;nobody&#39;"),
        ):
            r = c.get(path)
            assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), (path, r.text)
            assert said in r.text and '<link rel="stylesheet" href="/static/style.css">' in r.text, r.text
            assert '<a href="/tasks">Tasks</a>' in r.text  # the dashboard's own page, with its navigation
        r = c.get("/api/v1/nothing")  # the API answers JSON, whatever the client accepts
        assert r.status_code == 404 and r.headers["content-type"] == "application/json" and error_of(r)
        r = c.put("/tasks", headers={"X-Miyabi-Token": web.token})
        assert r.status_code == 405 and r.headers["allow"] == "GET" and "text/html" in r.headers["content-type"]
    with web.client() as c:  # a script gets JSON everywhere
        r = c.get("/nothing/here")
        assert r.status_code == 404 and "no such page or endpoint" in error_of(r)


def test_the_cookie_is_what_the_readme_says() -> None:
    """The SameSite docs/dashboard.md gives is the one the server sends."""
    import asyncio

    from miyabi.web.auth import Access, TokenMiddleware

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not reached: ?token= is answered by the middleware")

    mw = TokenMiddleware(app, Access("t0ken", "v1ew"))
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"token=t0ken", "headers": []}
    asyncio.run(mw(scope, None, send))  # type: ignore[arg-type]
    cookie = dict(sent[0]["headers"])[b"set-cookie"].decode()
    readme = (Path(__file__).resolve().parents[2] / "docs" / "dashboard.md").read_text()
    said = re.findall(r"SameSite=(\w+)", readme)
    assert said and set(said) == {re.search(r"SameSite=(\w+)", cookie)[1]}, (said, cookie)  # type: ignore[index]
    assert "HttpOnly" in cookie and "HttpOnly" in readme


def test_the_api_answers_as_its_openapi_document_says(web: Web, tmp_path: Path) -> None:
    """Schemathesis, a property-based API tester, sends a thousand generated requests to
    the real server (every operation but the endless live feeds, valid and invalid
    input, methods no route takes): no 5xx, every status and content type the document
    declares, every answer valid against its schema, every 405 with its Allow header."""
    checks = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "unsupported_method",
        "allow_header_conformance",
    ]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{web.base}/api/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {web.token}",
            "--checks",
            ",".join(checks),
            "--exclude-path-regex",
            "/stream$",  # Server-Sent Events never end: tested above
            "--seed",
            "21",
            "--max-examples",
            "15",
            "--workers",
            "1",
            "--output-sanitize",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-12000:] + r.stderr[-2000:]
    summary = r.stdout[r.stdout.rfind("SUMMARY") :]
    tested = re.search(r"Selected: (\d+)/\d+\s+Tested: (\d+)", summary)
    cases = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert tested and cases, summary
    assert int(tested[2]) == int(tested[1]) >= 20 and int(cases[1]) == int(cases[2]) >= 500, summary


def test_a_second_dashboard_neither_hides_the_first_nor_takes_its_record_when_it_ends(
    cli: Cli, home: Path, socket: str, tmp_path: Path
) -> None:
    """The controller's dashboard, then one started by hand beside it: `status` names the
    first throughout, `down` names the one left running, and when the hand-started one
    ends the first is still published."""
    import socket as sockets

    with sockets.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lay = write_layout(tmp_path / "two.yaml", ["w"], session="two", web={"port": port})
    assert cli("up", str(lay), "-d").exit_code == 0
    first = wait_for(lambda: json.loads(cli("status", "--json").output)["web"], timeout=60, what="the dashboard")
    proc, said = start_web(home, socket)
    try:
        assert said["open"].partition("/?token=")[0] != first["base"]
        st = json.loads(cli("status", "--json").output)
        assert st["web"] == first and set(os.listdir(home / "run" / "dashboards")) == {
            f"{first['pid']}.json",
            f"{proc.pid}.json",
        }
    finally:
        stop(proc)
    assert json.loads(cli("status", "--json").output)["web"] == first
    assert not (home / "run" / "dashboards" / f"{proc.pid}.json").exists()
    token = first["url"].split("token=")[1]
    with httpx.Client(base_url=first["base"], headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get("/api/v1/agents").is_success
