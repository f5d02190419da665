"""The task side of the bus without agents: hosts are SharedTasks over stores of their
own and one private redis-server, so leases, take-overs, first results, cancels and
attempt limits are seen step by step (real Redis, real SQLite, real time for the
lease: Redis counts an entry's idle time itself)."""

from __future__ import annotations

from pathlib import Path

from helpers import wait_for
from redisserver import RedisServer

from miyabi.bus.client import GROUP, Bus
from miyabi.bus.tasks import SharedTasks
from miyabi.config.settings import BusSettings
from miyabi.work.model import TaskError, TaskState
from miyabi.work.store import Store

LEASE = 1.0


def host(tmp_path: Path, r: RedisServer, name: str) -> SharedTasks:
    (tmp_path / name).mkdir()
    return SharedTasks(
        Bus(BusSettings(url=r.url, host=name)), Store(tmp_path / name / "miyabi.db"), tmp_path / name, lease=LEASE
    )


def finish(h: SharedTasks, tid: int) -> None:
    """What the local scheduler and the agent do with a copy: assign it, then done."""
    h.store.set_state(tid, TaskState.ASSIGNED, "routed", agent="w")
    h.store.done(tid, "did it")


def test_a_lease_not_renewed_moves_the_task_and_the_first_result_wins(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    o, a, b = (host(tmp_path, redis_server, n) for n in ("o", "a", "b"))
    t1 = o.store.add("one", labels=["agent:w"])
    assert o.publish_due([], [], 3) == [(t1.id, "w")]
    assert o.store.get(t1.id).state == TaskState.SHARED
    assert o.publish_due([], [], 3) == []  # published once
    [c] = a.claim_due({"w": 1})
    assert (c.deliveries, a.store.get(c.task).labels) == (1, ("agent:w",))
    assert b.claim_due({"w": 1}) == []  # a holds it, within its lease
    assert a.renew() == []
    got = wait_for(lambda: b.claim_due({"w": 1}), timeout=30, what="b to take the task over after the lease")
    assert got[0].deliveries == 2 and got[0].bus_id == c.bus_id
    # a wakes up: its copy is given up, never run on
    gave = a.renew()
    assert gave and "another host took it over" in gave[0][1]
    assert a.store.get(c.task).state == TaskState.CANCELLED
    finish(b, got[0].task)
    assert b.settle() == 1 and a.settle() == 0  # a's copy was settled when given up: no result of its own
    assert o.apply_results() == 1
    t = o.store.get(t1.id)
    assert (t.state, t.agent) == (TaskState.DONE, "w@b")
    # a second task: the host that lost it finishes first; its result is the task's, the other gives up
    t2 = o.store.add("two", labels=["agent:w"])
    o.publish_due([], [], 3)
    [c2] = a.claim_due({"w": 1})
    got2 = wait_for(lambda: b.claim_due({"w": 1}), timeout=30, what="b to take the second task over")
    finish(a, c2.task)
    assert a.settle() == 1
    assert b.renew()[0][1] == "another host finished it"
    assert b.store.get(got2[0].task).state == TaskState.CANCELLED
    assert b.settle() == 0
    assert o.apply_results() == 1 and o.apply_results() == 0  # one result, once
    assert (o.store.get(t2.id).state, o.store.get(t2.id).agent) == (TaskState.DONE, "w@a")


def test_cancels_attempt_limits_and_bad_entries(tmp_path: Path, redis_server: RedisServer) -> None:
    o, a, b = (host(tmp_path, redis_server, n) for n in ("o", "a", "b"))
    # cancelled where it was published: the host holding it is told
    t1 = o.store.add("cancel me", labels=["agent:w"])
    o.publish_due([], [], 3)
    [c] = a.claim_due({"w": 1})
    o.store.set_state(t1.id, TaskState.CANCELLED, "cancelled by test")
    assert o.publish_cancels() == 1
    assert a.renew()[0][1] == "it was cancelled where it was published"
    assert a.store.get(c.task).state == TaskState.CANCELLED
    # one not yet claimed is withdrawn: nobody claims it
    t2 = o.store.add("withdrawn", labels=["agent:w@a"])
    o.publish_due([], [], 3)
    o.store.set_state(t2.id, TaskState.CANCELLED, "cancelled by test")
    o.publish_cancels()
    assert a.claim_due({"w": 5}) == []
    # past its max_attempts it fails at the origin, saying why
    t3 = o.store.add("fragile", labels=["agent:w"], max_attempts=1)
    o.publish_due([], [], 3)
    a.claim_due({"w": 5})
    wait_for(lambda: b.claim_due({"w": 5}) == [] and o.apply_results(), timeout=30, what="the attempt limit to fail it")
    t = o.store.get(t3.id)
    assert t.state == TaskState.FAILED and "claimed 2 times" in o.store.history(t3.id)[-1]["reason"]
    # an entry that is not a task is acknowledged and left, not claimed by every host in turn
    r = redis_server.client()
    r.xadd("miyabi:tasks:w", {"id": "x:1:1", "task": "not json"})
    assert b.claim_due({"w": 5}) == []
    assert r.xpending("miyabi:tasks:w", GROUP)["pending"] == 0


def test_a_restart_counts_no_attempt_and_a_republished_task_runs_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    o, a = host(tmp_path, redis_server, "o"), host(tmp_path, redis_server, "a")
    t1 = o.store.add("one", labels=["agent:w"])
    o.publish_due([], [], 3)
    [c] = a.claim_due({"w": 1})
    for _ in range(5):  # five reconnections or restarts
        assert a.recover(["w"]) == 0
    r = redis_server.client()
    [p] = r.xpending_range("miyabi:tasks:w", GROUP, min="-", max="+", count=10)
    assert p["times_delivered"] == 1 and a.renew(["w"]) == []
    # a claim whose record a crash lost: the restart makes its copy, as attempt 1
    t2 = o.store.add("two", labels=["agent:w"])
    o.publish_due([], [], 3)
    r.xreadgroup(GROUP, "a", {"miyabi:tasks:w": ">"}, count=1)
    assert a.recover(["w"]) == 1
    second = o.store.rows("SELECT bus_id FROM bus_tasks WHERE task=?", (t2.id,))[0][0]
    assert sorted((x["bus_id"], x["deliveries"]) for x in a.held_copies()) == sorted([(c.bus_id, 1), (second, 1)])
    # a shared task is not retried in place; cancelled and retried, it is published anew and runs once
    try:
        o.store.set_state(t1.id, TaskState.QUEUED, "retried")
        raise AssertionError("a shared task moved back to the queue")
    except TaskError:
        pass
    t3 = o.store.add("three", labels=["agent:v"])
    o.publish_due([], [], 3)
    o.store.set_state(t3.id, TaskState.CANCELLED, "cancelled")
    o.store.set_state(t3.id, TaskState.QUEUED, "retried")
    assert o.publish_cancels() == 1
    o.publish_due([], [], 3)
    got = a.claim_due({"v": 5})
    assert [g.bus_id.split(":")[2] for g in got] == ["2"]  # only the second publication
