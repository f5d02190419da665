"""The task store (real SQLite) and the scheduler."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import brought_up, write_layout

from miyabi.config.settings import Route
from miyabi.work.model import TaskError
from miyabi.work.scheduler import rank, route, schedule
from miyabi.work.store import Store

ROUTES = [Route("kaede", label="bug"), Route("sakura", title="(?i)review"), Route("sakura", default=True)]
AGENTS = ["kaede", "sakura", "tsubaki"]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "miyabi.db")


def test_states_and_events(store: Store) -> None:
    t = store.add("fix it", labels=["bug"])
    assert (t.state, t.ref) == ("queued", f"#{t.id}")
    store.set_state(t.id, "assigned", "routed", agent="kaede")
    store.set_state(t.id, "in_progress", "delivered")
    done = store.set_state(t.id, "done", "agent said so")
    assert (done.state, done.agent, done.attempts) == ("done", "kaede", 1)
    assert [e["state"] for e in store.history(t.id)] == ["queued", "assigned", "in_progress", "done"]
    with pytest.raises(TaskError, match="is done; it cannot become queued"):
        store.set_state(t.id, "queued", "again")
    assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ids_and_refs(store: Store) -> None:
    t = store.add("from github", source="github", repo="acme/widgets", number=3)
    assert store.get("acme/widgets#3").id == t.id == store.get(f"#{t.id}").id == store.get(str(t.id)).id
    assert t.ref == "acme/widgets#3"
    with pytest.raises(TaskError, match="no task"):
        store.get("99")


def test_routing_first_match_and_agent_label(store: Store) -> None:
    bug = store.add("crash on start", labels=["bug"])
    review = store.add("Review the PR")
    other = store.add("write docs")
    pinned = store.add("whatever", labels=["bug", "agent:tsubaki"])
    assert [route(t, ROUTES, AGENTS) for t in (bug, review, other, pinned)] == ["kaede", "sakura", "sakura", "tsubaki"]
    assert route(other, ROUTES[:2], AGENTS) is None


def test_priority_then_age_and_the_wip_limit(store: Store) -> None:
    low = store.add("a", labels=["priority:low"])
    normal = store.add("b")
    high = store.add("c", labels=["priority:high"])
    assert sorted([low, normal, high], key=rank) == [high, normal, low]
    sent: list[tuple[int, str]] = []
    got = schedule(store, [Route("kaede", default=True)], {"kaede": 1}, lambda t, a: sent.append((t.id, a)))
    assert got == sent == [(high.id, "kaede")]
    assert schedule(store, [Route("kaede", default=True)], {"kaede": 1}, lambda t, a: None) == []  # WIP 1 reached
    store.set_state(high.id, "done", "finished")
    assert schedule(store, [Route("kaede", default=True)], {"kaede": 1}, lambda t, a: None) == [(normal.id, "kaede")]


def test_dependencies_hold_a_task_and_a_cycle_is_reported(store: Store) -> None:
    first = store.add("first")
    second = store.add("second", depends_on=[first.id])
    schedule(store, [Route("kaede", default=True)], {"kaede": 5}, lambda t, a: None)
    assert store.get(second.id).state == "blocked"
    assert "waits for" in store.history(second.id)[-1]["reason"]
    store.set_state(first.id, "done", "ok")
    schedule(store, [Route("kaede", default=True)], {"kaede": 5}, lambda t, a: None)
    assert store.get(second.id).state == "assigned"
    a = store.add("a")
    b = store.add("b", depends_on=[a.id])
    store.connection.execute("INSERT INTO deps (task, depends_on) VALUES (?, ?)", (a.id, b.id))  # a cycle
    schedule(store, [Route("kaede", default=True)], {"kaede": 5}, lambda t, a_: None)
    assert store.get(a.id).state == "blocked" and "dependency cycle" in store.history(a.id)[-1]["reason"]


def test_tasks_of_a_failed_agent_go_back_to_the_queue(store: Store) -> None:
    t = store.add("x")
    schedule(store, [Route("kaede", default=True)], {"kaede": 1, "sakura": 1}, lambda t_, a: None)
    assert store.get(t.id).agent == "kaede"
    schedule(
        store, [Route("kaede", default=True)], {"kaede": 1, "sakura": 1}, lambda t_, a: None, failed_agents=["kaede"]
    )
    assert store.get(t.id).state == "queued"


def test_a_worker_runs_only_an_open_job_assigned_to_it(store: Store, tmp_path: Path) -> None:
    import json

    from miyabi.work.jobs import JobError, run_assigned, submit

    marker = tmp_path / "ran"
    f = tmp_path / "j.json"
    f.write_text(
        json.dumps(
            {
                "id": "j",
                "kind": "run_shell",
                "workdir": str(tmp_path),
                "script": [f"touch {marker}"],
                "dod": "exit_code == 0",
                "report_path": "r.json",
            }
        )
    )
    tid, _ = submit(store, f, "kaede")
    plain = store.add("not a job")
    with pytest.raises(JobError, match="not an open job assigned to sakura"):
        run_assigned(store, tid, "sakura")  # queued, and someone else's
    store.set_state(tid, "assigned", "test", agent="kaede")
    with pytest.raises(JobError):
        run_assigned(store, tid, "sakura")
    with pytest.raises(JobError):
        run_assigned(store, plain.id, "kaede")
    assert not marker.exists()
    ok, report = run_assigned(store, tid, "kaede")
    assert ok and marker.exists() and report == tmp_path / "r.json"
    with pytest.raises(JobError):  # done now: never twice
        run_assigned(store, tid, "kaede")


def test_a_job_started_once_in_an_assignment_is_not_started_again(store: Store, tmp_path: Path) -> None:
    import json

    from miyabi.work.jobs import JobError, start, submit

    f = tmp_path / "j.json"
    f.write_text(
        json.dumps(
            {
                "id": "j",
                "kind": "run_shell",
                "workdir": ".",
                "script": ["true"],
                "dod": "exit_code == 0",
                "report_path": "r.json",
            }
        )
    )
    tid, job = submit(store, f, "kaede")
    assert job.workdir == str(tmp_path)  # relative to the job file
    store.set_state(tid, "assigned", "test", agent="kaede")
    assert start(store, tid, "kaede")[0].id == "j"
    assert store.get(tid).job_started == store.get(tid).attempts == 1
    with pytest.raises(JobError, match="already started in this assignment"):
        start(store, tid, "kaede")
    # handed back and assigned again: a new assignment may start it
    store.set_state(tid, "queued", "agent died")
    store.set_state(tid, "assigned", "again", agent="kaede")
    assert start(store, tid, "kaede")[0].id == "j"


def test_a_job_with_a_missing_workdir_or_a_used_id_is_refused_at_submit(store: Store, tmp_path: Path) -> None:
    import json

    from miyabi.work.jobs import JobError, submit

    def job(id_: str, workdir: str) -> Path:
        f = tmp_path / f"{id_}.json"
        f.write_text(
            json.dumps(
                {
                    "id": id_,
                    "kind": "run_shell",
                    "workdir": workdir,
                    "script": ["true"],
                    "dod": "exit_code == 0",
                    "report_path": "r.json",
                }
            )
        )
        return f

    with pytest.raises(JobError, match=r"workdir: 'nowhere' is not a directory"):
        submit(store, job("a", "nowhere"), "kaede")
    assert store.query() == []
    tid, _ = submit(store, job("b", str(tmp_path)), "kaede")
    with pytest.raises(
        JobError, match=rf"job id 'b' was submitted already, as task {tid} \(queued\); give it a new id"
    ):
        submit(store, job("b", str(tmp_path)), "kaede")
    assert [t.id for t in store.query()] == [tid]


def test_one_store_shared_by_many_threads(store: Store) -> None:
    import threading

    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(25):
                t = store.add(f"t{k}-{i}")
                store.set_state(t.id, "assigned", "x", agent="kaede")
                store.query(state="assigned")
        except BaseException as e:  # noqa: BLE001 - collected for the assert
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.query(state="assigned")) == 200


def test_why_a_task_waits(store: Store) -> None:
    from miyabi.work.scheduler import why_waiting

    routes = [Route("kaede", label="bug")]
    wip = {"kaede": 1, "sakura": 1}
    plain = store.add("plain")
    bug = store.add("crash", labels=["bug"])
    assert (
        why_waiting(plain, routes, wip, {}, {})
        == "no route matches it (labels: none); add a route, or a label agent:NAME"
    )
    assert why_waiting(bug, routes, wip, {}, {}) is None  # the next pass assigns it
    assert why_waiting(bug, routes, wip, {"kaede": 1}, {}) == "agent kaede is at its wip limit (1)"
    assert why_waiting(bug, routes, wip, {}, {"kaede": "crash loop"}) == (
        "agent kaede failed (crash loop); `miyabi restart kaede` brings it back"
    )
    assert why_waiting(bug, routes, wip, {}, {}, waiting_for=[7]) == "blocked by #7"
    sent = store.add("sent", labels=["agent:sakura"])
    assert why_waiting(store.set_state(sent.id, "assigned", "x", agent="sakura"), routes, wip, {}, {}) is None


def test_a_database_from_before_the_job_started_column_keeps_started_jobs_started(tmp_path: Path) -> None:
    """The previous version recorded a job's start only as an event; opening its database
    adds the column and carries that over, so the job is not run again."""
    import json
    import sqlite3

    from miyabi.work.jobs import JobError, start

    db = tmp_path / "state" / "miyabi.db"
    db.parent.mkdir()
    old = sqlite3.connect(db)
    old.executescript("""
CREATE TABLE tasks (id INTEGER PRIMARY KEY, source TEXT NOT NULL, repo TEXT, number INTEGER, url TEXT,
  title TEXT NOT NULL,
  body TEXT NOT NULL DEFAULT '', labels TEXT NOT NULL DEFAULT '[]', priority TEXT NOT NULL DEFAULT 'normal',
  state TEXT NOT NULL DEFAULT 'queued', agent TEXT, attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
  updated REAL NOT NULL, claim TEXT NOT NULL DEFAULT '', UNIQUE (source, repo, number));
CREATE TABLE events (id INTEGER PRIMARY KEY, task INTEGER NOT NULL, time REAL NOT NULL, state TEXT NOT NULL, agent TEXT,
  reason TEXT NOT NULL);
""")
    body = json.dumps(
        {
            "id": "j",
            "kind": "run_shell",
            "workdir": str(tmp_path),
            "script": ["true"],
            "dod": "exit_code == 0",
            "report_path": "r.json",
        }
    )
    for tid, started in ((1, True), (2, False)):
        old.execute(
            "INSERT INTO tasks (id, source, title, body, labels, state, agent, attempts, created, updated) "
            "VALUES (?, 'job', 'job j', ?, '[\"job\"]', 'in_progress', 'kaede', 1, 0, 0)",
            (tid, body),
        )
        old.execute(
            "INSERT INTO events (task, time, state, agent, reason) VALUES (?, 0, 'assigned', 'kaede', 'routed')", (tid,)
        )
        if started:
            old.execute(
                "INSERT INTO events (task, time, state, agent, reason) VALUES (?, 0, 'in_progress', 'kaede', 'job "
                "started by kaede')",
                (tid,),
            )
    old.commit()
    old.close()
    store = Store(db)
    assert [store.get(1).job_started, store.get(2).job_started] == [1, 0]
    with pytest.raises(JobError, match="already started"):
        start(store, 1, "kaede")
    assert start(store, 2, "kaede")[0].id == "j"


def test_a_lease_is_taken_once_and_handed_back_by_policy_until_the_last_attempt(store: Store) -> None:
    from miyabi.work.model import Handback

    t = store.add("lease me", max_attempts=2)
    store.set_state(t.id, "assigned", "routed", agent="kaede")
    assert store.take_lease(t.id, "kaede", "100:7", 60.0, "delivered")
    assert not store.take_lease(t.id, "kaede", "200:9", 60.0, "delivered again")  # held already
    assert not store.take_lease(t.id, "sakura", "300:1", None, "not hers")
    held = store.get(t.id)
    assert (held.state, held.holder, held.deadline) == (
        "in_progress",
        "100:7",
        pytest.approx(store.clock() + 60, abs=5),
    )
    assert store.hand_back(t.id, "999:1", "another process", True, 3) == Handback.GONE  # not its holder
    assert store.hand_back(t.id, "100:7", "agent kaede's process 100 ended", True, 3) == Handback.RESENT
    again = store.get(t.id)
    assert (again.state, again.agent, again.attempts, again.holder) == ("assigned", "kaede", 2, None)
    store.take_lease(t.id, "kaede", "200:9", None, "delivered")
    assert store.hand_back(t.id, "200:9", "ended again", False, 3) == Handback.FAILED  # its own limit is 2
    done = store.get(t.id)
    assert done.state == "failed" and "attempt 2 of 2" in store.history(t.id)[-1]["reason"]
    other = store.add("requeue me")
    store.set_state(other.id, "assigned", "routed", agent="kaede")
    store.take_lease(other.id, "kaede", "100:7", None, "delivered")
    assert store.hand_back(other.id, None, "ended", False, 3) == Handback.REQUEUED
    assert (store.get(other.id).state, store.get(other.id).agent) == ("queued", None)


def test_a_github_task_that_used_its_last_attempt_tells_github_it_needs_a_person(store: Store) -> None:
    t = store.add("issue", source="github", repo="acme/widgets", number=7)
    store.set_state(t.id, "assigned", "routed", agent="kaede")
    store.take_lease(t.id, "kaede", "1:1", None, "delivered")
    store.hand_back(t.id, "1:1", "its process ended", True, 1)
    assert [(a, "needs a person" in text) for _, _, a, text in store.outbox()] == [("needs-human", True)]


def test_a_pass_over_ten_thousand_queued_tasks_fills_every_free_agent_in_priority_order(store: Store) -> None:
    agents = [f"a{i}" for i in range(64)]
    for n in range(10_000):
        store.add(f"t{n}", labels=[f"agent:a{n % 64}"], priority="low" if n < 64 else "normal")
    urgent = store.add("urgent", labels=["agent:a5", "priority:high"])
    sent: list[tuple[int, str]] = []
    got = schedule(store, [], dict.fromkeys(agents, 1), lambda t, a: sent.append((t.id, a)))
    assert len(got) == 64 and sorted(a for _, a in got) == sorted(agents)
    by_agent = {a: tid for tid, a in got}
    assert by_agent["a5"] == urgent.id  # high priority first
    assert by_agent["a0"] == 65  # then normal, oldest first: t64 is task 65; the low ones wait
    assert schedule(store, [], dict.fromkeys(agents, 1), lambda t, a: sent.append((t.id, a))) == []  # all at wip
    assert store.held_counts() == dict.fromkeys(agents, 1)
    assert len(list(store.queued())) == 10_001 - 64


def test_a_job_whose_last_step_completed_never_runs_again(store: Store, tmp_path: Path) -> None:
    import json

    from miyabi.work.jobs import run_assigned, submit

    f = tmp_path / "j.json"
    f.write_text(
        json.dumps(
            {
                "id": "once",
                "kind": "run_shell",
                "workdir": ".",
                "script": ["echo x >> ran", "echo y >> ran"],
                "dod": "exit_code == 0",
                "report_path": "r.json",
                "retries": 4,
            }
        )
    )
    tid, _ = submit(store, f, "kaede")
    assert store.get(tid).max_attempts == 5
    store.set_state(tid, "assigned", "routed", agent="kaede")
    # attempt 1 ran both steps, then its worker died before it marked the task done
    store.start_job(tid, "kaede", "10:1")
    for i, cmd in enumerate(["echo x >> ran", "echo y >> ran"]):
        assert store.job_step_started(tid, 1, i, cmd, "kaede")
        store.job_step_ended(tid, 1, i, 0, 0.01, "")
    store.hand_back(tid, "10:1", "its process ended", True, 3)
    assert not store.job_step_started(tid, 1, 0, "echo x >> ran", "kaede")  # attempt 1 no longer owns it
    ok, path = run_assigned(store, tid, "kaede", "11:1")
    assert ok and not (tmp_path / "ran").exists()  # nothing ran again
    report = json.loads(path.read_text())
    assert report["attempt"] == 1 and [a["outcome"] for a in report["attempts"]] == ["passed"]
    t = store.get(tid)
    assert t.state == "done" and "nothing ran again" in store.history(tid)[-1]["reason"]


def _assigned_job(store: Store, tmp_path: Path, name: str, script: list[str]) -> int:
    """A job ``name`` running ``script`` in ``tmp_path``, submitted and assigned to kaede: its task id."""
    import json

    from miyabi.work.jobs import submit

    f = tmp_path / "j.json"
    f.write_text(
        json.dumps(
            {
                "id": name,
                "kind": "run_shell",
                "workdir": ".",
                "script": script,
                "dod": "exit_code == 0",
                "report_path": "r.json",
            }
        )
    )
    tid, _ = submit(store, f, "kaede")
    store.set_state(tid, "assigned", "routed", agent="kaede")
    return tid


def test_a_last_step_that_ended_after_its_worker_died_is_not_run_again(store: Store, tmp_path: Path) -> None:
    """The worker is SIGKILLed while its last step runs; the step's command still runs to
    its end (as an orphan, before the watchdog ends what is left). The next attempt takes
    that end from the record the step's shell kept, and runs nothing again (found by
    benchmarks/soak.py: a job completed twice)."""
    import json
    import os
    import subprocess
    import sys

    from helpers import wait_for

    from miyabi.work.jobs import run_assigned

    last = "echo x >> ran; [ -e killed ] || { touch killed; kill -9 $(cat worker.pid); }"
    tid = _assigned_job(store, tmp_path, "cut", ["true", last])
    worker = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from miyabi.work.jobs import run_assigned\n"
        "from miyabi.work.store import Store\n"
        "Path(sys.argv[2]).write_text(str(os.getpid()))\n"
        "run_assigned(Store(Path(sys.argv[1])), int(sys.argv[3]), 'kaede', '10:1')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", worker, str(store.path), str(tmp_path / "worker.pid"), str(tid)], start_new_session=True
    )
    assert proc.wait(timeout=60) == -9  # killed by its own last step, after that step's echo

    def group_ended() -> bool:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(group_ended, timeout=30, what="the orphaned step to end")
    assert [s["exit_code"] for s in store.job_steps(tid)] == [0, None]
    store.hand_back(tid, "10:1", "its process ended", True, 3)
    ok, path = run_assigned(store, tid, "kaede", "11:1")
    assert ok and (tmp_path / "ran").read_text().split() == ["x"]  # the last step ran once
    report = json.loads(path.read_text())
    assert report["attempt"] == 1 and [a["outcome"] for a in report["attempts"]] == ["passed"]
    assert "nothing ran again" in store.history(tid)[-1]["reason"]


def test_a_step_past_its_time_limit_is_killed_with_its_shell(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import psutil
    from helpers import wait_for

    from miyabi import defaults
    from miyabi.work.jobs import run_assigned

    monkeypatch.setattr(defaults, "JOB_STEP_TIMEOUT", 0.5)
    tid = _assigned_job(store, tmp_path, "slow", ["sleep 30.25"])
    ok, path = run_assigned(store, tid, "kaede")
    assert not ok and json.loads(path.read_text())["commands"][0]["exit_code"] == -1

    def sleeping() -> list[int]:
        out = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            if proc.info["cmdline"] == ["sleep", "30.25"] and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        return out

    wait_for(lambda: not sleeping(), timeout=10, what="the timed-out command to be killed")


def test_a_retried_task_starts_afresh_and_is_routed_anew(store: Store, tmp_path: Path) -> None:
    import json

    from miyabi.work.jobs import run_assigned, submit

    t = store.add("write docs", labels=["docs"])
    writer = [Route("writer", label="docs")]
    schedule(store, writer, {"writer": 1}, lambda t, a: None)
    assert store.get(t.id).agent == "writer"
    store.set_state(t.id, "cancelled", "not now")
    store.set_state(t.id, "queued", "retried")
    again = store.get(t.id)
    assert again.attempts == 0
    # the routes changed meanwhile (a reload): the task is routed by the new ones
    got = schedule(store, [Route("editor", label="docs")], {"editor": 1}, lambda t, a: None)
    assert got == [(t.id, "editor")]
    # a job that failed and is retried runs again: its old attempt is not final
    f = tmp_path / "j.json"
    f.write_text(
        json.dumps(
            {
                "id": "j",
                "kind": "run_shell",
                "workdir": ".",
                "script": ["test -e ok"],
                "dod": "exit_code == 0",
                "report_path": "r.json",
            }
        )
    )
    tid, _ = submit(store, f, "kaede")
    store.set_state(tid, "assigned", "routed", agent="kaede")
    assert run_assigned(store, tid, "kaede")[0] is False
    (tmp_path / "ok").write_text("")
    store.set_state(tid, "queued", "retried")
    store.set_state(tid, "assigned", "routed", agent="kaede")
    assert run_assigned(store, tid, "kaede")[0] is True
    assert store.get(tid).state == "done"


def test_an_assignment_that_never_reached_its_agent_costs_no_attempt(store: Store) -> None:
    t = store.add("x")
    store.set_state(t.id, "assigned", "routed", agent="kaede")
    store.set_state(t.id, "queued", "claim failed")
    assert store.get(t.id).attempts == 0


def test_only_the_current_message_leases_a_task_and_a_late_lease_gets_its_deadline(store: Store) -> None:
    t = store.add("x")
    store.set_state(t.id, "assigned", "routed", agent="kaede")
    store.set_message(t.id, "m-2")
    assert not store.take_lease(t.id, "kaede", "1:1", None, "a notice", message="m-notice")
    assert store.get(t.id).state == "assigned"
    # leased already (as when a worker started its job first): a later report sets the deadline
    assert store.take_lease(t.id, "kaede", "1:1", None, "delivered", message="m-2")
    assert store.get(t.id).deadline is None
    store.take_lease(t.id, "kaede", "1:1", 60.0, "delivered again", message="m-2")
    assert store.get(t.id).deadline is not None


def test_an_old_attempt_cannot_run_a_step_once_the_job_was_handed_back(store: Store, tmp_path: Path) -> None:
    import json

    from miyabi.work.jobs import submit

    f = tmp_path / "j.json"
    f.write_text(
        json.dumps(
            {
                "id": "j",
                "kind": "run_shell",
                "workdir": ".",
                "script": ["true", "true"],
                "dod": "exit_code == 0",
                "report_path": "r.json",
            }
        )
    )
    tid, _ = submit(store, f, "kaede")
    store.set_state(tid, "assigned", "routed", agent="kaede")
    store.start_job(tid, "kaede", "5:5")
    assert store.job_step_started(tid, 1, 0, "true", "kaede")
    store.hand_back(tid, "5:5", "ran past its time limit", True, 3)  # resent to the same worker process
    store.take_lease(tid, "kaede", "5:5", None, "delivered")
    assert store.get(tid).state == "in_progress"
    assert not store.job_step_started(tid, 1, 1, "true", "kaede")  # attempt 1 owns nothing now


def test_a_pool_task_said_done_is_verified_first_and_fails_after_its_rounds(store: Store) -> None:
    plain = store.add("plain")
    store.set_state(plain.id, "assigned", "routed", agent="kaede")
    assert store.done(plain.id, "did it").state == "done"
    t = store.add("pooled", source="github", repo="acme/w", number=3, pool="coder", branch="miyabi/3-pooled")
    store.set_state(t.id, "assigned", "ready", agent="coder-3")
    store.take_lease(t.id, "coder-3", "1:1", None, "delivered")
    assert store.done(t.id, "first").state == "verifying"
    assert store.done(t.id, "again").state == "verifying"  # said twice: one verify
    back = store.round_failed(t.id, "test: pytest exited 1", 2)
    assert (back.state, back.rounds, back.agent) == ("in_progress", 1, "coder-3")
    with pytest.raises(TaskError, match="is not verifying"):
        store.round_failed(t.id, "x", 2)
    store.done(t.id, "second")
    failed = store.round_failed(t.id, "test: pytest exited 1", 2, text="the tail")
    assert (failed.state, failed.rounds) == ("failed", 2)
    assert store.outbox()[-1][2:] == ("needs-human", "the tail")
    assert [e["state"] for e in store.history(t.id)][-4:] == ["verifying", "in_progress", "verifying", "failed"]


def test_a_second_store_in_one_process_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    """Opening a Store must not open and close a descriptor of an existing database:
    that drops the process's POSIX locks, and another process closing its connection
    then deletes the WAL under the first connection, whose commits vanish."""
    import subprocess
    import sys

    path = tmp_path / "state" / "miyabi.db"
    first = Store(path)
    t = first.add("one")
    Store(path).close()  # a second connection (as a thread of the controller opens)
    other = (
        "import sys; from pathlib import Path; from miyabi.work.store import Store; "
        "s = Store(Path(sys.argv[1])); s.add('two'); s.close()"
    )
    subprocess.run([sys.executable, "-c", other, str(path)], check=True)
    first.set_state(t.id, "cancelled", "after the other process left")
    seen = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("
                "'select state from tasks where id=1').fetchone()[0])"
            ),
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert seen == "cancelled"


def test_a_job_file_has_every_problem_reported_at_once_one_line_each(store: Store, tmp_path: Path) -> None:
    import json

    from miyabi.work.jobs import JobError, submit

    f = tmp_path / "bad.json"
    f.write_text(
        json.dumps(
            {
                "id": 7,
                "kind": "bash",
                "workdir": "nowhere",
                "scirpt": ["true"],
                "dod": "done",
                "report_path": "",
                "retries": -1,
                "timeout": "soon",
            }
        )
    )
    with pytest.raises(JobError) as e:
        submit(store, f, "kaede")
    assert e.value.lines() == [
        f"{f}: script: missing; give a list of shell commands",
        f"{f}: scirpt: unknown field; did you mean 'script'?",
        (
            f"{f}: id: 7 is not text, or is empty; give text that names the job (unique: a second job with the same id "
            "is refused)"
        ),
        f"{f}: report_path: '' is not text, or is empty; give where the report goes (relative: to workdir)",
        f"{f}: kind: 'bash' is not supported; use run_shell",
        f"{f}: dod: 'done' is not understood; use exit_code == 0 (or != N)",
        f"{f}: retries: -1 must be a whole number, 0 or more",
        f"{f}: timeout: 'soon' must be a duration such as 90s, 10m or 2h",
        f"{f}: workdir: 'nowhere' is not a directory ({tmp_path / 'nowhere'}); create it or fix workdir",
    ]
    assert store.query() == []


def test_a_job_file_that_is_missing_or_not_json_says_which(store: Store, tmp_path: Path) -> None:
    from miyabi.work.jobs import JobError, submit

    with pytest.raises(JobError) as e:
        submit(store, tmp_path / "nope.json", "kaede")
    assert e.value.lines() == [f"{tmp_path / 'nope.json'}: no such job file; check the path"]
    with pytest.raises(JobError) as e:
        submit(store, tmp_path, "kaede")
    assert e.value.lines() == [f"{tmp_path}: is a directory, not a job file; give the job's JSON file"]
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "id": "a",\n  "kind": run_shell\n}\n')
    with pytest.raises(JobError) as e:
        submit(store, broken, "kaede")
    assert e.value.lines() == [f"{broken}:3: not valid JSON (Expecting value at column 11); fix the file"]


def test_job_submit_prints_each_problem_on_a_line_of_its_own(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from miyabi.cli import app

    lay = write_layout(tmp_path / "l.yaml", [("w", "worker")], session="s")
    f = tmp_path / "j.json"
    f.write_text(json.dumps({"id": "j", "kind": "run_shell", "workdir": "."}))
    brought_up(tmp_path)
    r = CliRunner().invoke(app, ["job", "submit", str(f), "--layout", str(lay), "--home", str(tmp_path)])
    assert r.exit_code == 1
    assert r.output.splitlines() == [
        f"miyabi: {f}: script: missing; give a list of shell commands",
        f"miyabi: {f}: dod: missing; give exit_code == 0 (or != N)",
        f"miyabi: {f}: report_path: missing; give where the report goes (relative: to workdir)",
    ]
