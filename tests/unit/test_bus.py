"""The bus's pure parts: its section of the layout, passwords kept out of output, and
where a task goes on the bus (the Redis side is tested in tests/integration/test_bus.py)."""

from __future__ import annotations

import socket
from pathlib import Path

from helpers import write_layout

from miyabi import defaults
from miyabi.bus.tasks import route_shared, valid_target
from miyabi.config import load
from miyabi.config.settings import Route, redact
from miyabi.work.model import Source, Task, TaskState


def test_the_bus_section_defaults_its_host_lease_and_namespace(tmp_path: Path) -> None:
    lay = load(
        write_layout(
            tmp_path / "l.yaml",
            [("kaede", "shell", "cat")],
            bus={"url": "rediss://:pw@redis.example:6380/2"},
            routes=[{"label": "x", "agent": "w@b"}, {"label": "y", "agent": "sakura"}],
        )
    )
    assert lay.bus is not None
    assert lay.bus.host == socket.gethostname().split(".")[0]
    assert (lay.bus.lease, lay.bus.namespace, lay.bus.password_env) == (defaults.BUS_LEASE, "miyabi", None)
    assert [r.agent for r in lay.routes] == ["w@b", "sakura"]  # agents of other hosts
    assert (
        load(write_layout(tmp_path / "single.yaml", [("kaede", "shell", "cat")])).bus is None
    )  # single-host: no bus, nothing to install


def test_passwords_never_reach_output() -> None:
    assert redact("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("rediss://user:s3cret@h/1") == "rediss://user:***@h/1"
    assert redact("redis://s3cret@h/1") == "redis://***@h/1"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"
    assert redact("unix:///run/redis.sock") == "unix:///run/redis.sock"
    assert redact("redis://:p@ss@h:1/0") == "redis://:***@h:1/0"  # an @ in the password
    assert redact("redis://h:1/0?password=s3cret&x=1") == "redis://h:1/0?password=***&x=1"
    assert redact("rediss://:pw@h/0?ssl_ca_certs=/a@b.pem") == "rediss://:***@h/0?ssl_ca_certs=/a@b.pem"


def _task(title: str, labels: tuple[str, ...] = (), source: str = Source.LOCAL, key: str | None = None) -> Task:
    return Task(
        id=1,
        source=source,
        repo=None,
        number=None,
        url=None,
        title=title,
        body="",
        labels=labels,
        priority="normal",
        state=TaskState.QUEUED,
        agent=None,
        attempts=0,
        created=0.0,
        updated=0.0,
        key=key,
    )


def test_where_a_task_goes_on_the_bus() -> None:
    routes = [Route(agent="w@b", label="pinned"), Route(agent="w", title="^fix"), Route(agent="kaede", default=True)]
    assert route_shared(_task("fix the build"), routes) == "w"
    assert route_shared(_task("x", ("pinned",)), routes) == "w@b"
    assert route_shared(_task("x"), routes) == "kaede"
    assert route_shared(_task("x", ("agent:v@c",)), routes) == "v@c"  # a label wins, whatever host runs it
    assert route_shared(_task("x", ("agent:not valid",)), []) is None
    assert [valid_target(t) for t in ("w", "w@b", "w@host.example", "@b", "w@", "W", "w@b c")] == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    assert _task("x", source=Source.BUS).from_bus and _task("x", source=Source.JOB, key="bus:a:1:1").from_bus
    assert not _task("x", source=Source.JOB, key="j1").from_bus
