"""The channel server's requests, checked per agent: it sends as itself only, ends only
the tasks it holds, reads only its own inbox (a real socket and a real store)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from miyabi.agents.profiles import BUILTIN
from miyabi.cli.channel import ChannelError, request
from miyabi.config.model import Agent
from miyabi.config.sandbox import CHANNEL_SOCKET, channel_dir
from miyabi.config.settings import SandboxSettings
from miyabi.controller.channels import Channels
from miyabi.messaging.mailbox import inbox
from miyabi.work.model import TaskState
from miyabi.work.store import Store


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Store]]:
    # a home under a long path: the socket is bound through its directory's descriptor
    home = tmp_path / ("x" * 90) / "home"
    home.mkdir(parents=True)
    store = Store.of_home(home)
    ch = Channels(home, store, lambda: ["a", "b"], lambda: 1000, lambda name: None)
    boxed = SandboxSettings()
    ch.sync(
        [
            Agent(name="a", profile=BUILTIN["shell"], command="sh", sandbox=boxed),
            Agent(name="b", profile=BUILTIN["shell"], command="sh"),
        ]
    )
    stop = threading.Event()
    t = threading.Thread(target=ch.serve, args=(stop,), daemon=True)
    t.start()
    yield home, store
    stop.set()
    t.join(5)
    ch.close()
    store.close()


def test_only_sandboxed_agents_get_a_channel(served: tuple[Path, Store]) -> None:
    home, _ = served
    assert (channel_dir(home, "a") / CHANNEL_SOCKET).exists()
    assert not (channel_dir(home, "b") / CHANNEL_SOCKET).exists()


def test_an_agent_ends_only_the_tasks_it_holds(served: tuple[Path, Store]) -> None:
    home, store = served
    path = str(channel_dir(home, "a") / CHANNEL_SOCKET)
    mine, theirs = store.add("mine"), store.add("theirs")
    store.set_state(mine.id, TaskState.ASSIGNED, "given", agent="a")
    store.set_state(theirs.id, TaskState.ASSIGNED, "given", agent="b")
    with pytest.raises(ChannelError, match=f"task {theirs.id} is not held by a"):
        request(path, {"op": "done", "task": str(theirs.id)})
    with pytest.raises(ChannelError, match=f"task {theirs.id} is not held by a"):
        request(path, {"op": "fail", "task": str(theirs.id), "reason": "no"})
    assert store.get(theirs.id).state == TaskState.ASSIGNED
    assert request(path, {"op": "fail", "task": f"#{mine.id}", "reason": "cannot"})["state"] == "failed"


def test_an_agent_sends_as_itself_to_known_agents_only(served: tuple[Path, Store]) -> None:
    home, _ = served
    path = str(channel_dir(home, "a") / CHANNEL_SOCKET)
    reply = request(path, {"op": "send", "to": "b", "text": "hi", "from": "b"})
    [(_, msg)] = inbox(home, "b").list()
    assert reply["sent"][0]["id"] == msg.id and msg.sender == "a" and reply["sent"][0]["from"] == "a"
    with pytest.raises(ChannelError, match="no agent 'zed'"):
        request(path, {"op": "send", "to": "zed", "text": "hi"})
    with pytest.raises(ChannelError, match="over the limit of 1,000"):
        request(path, {"op": "send", "to": "b", "text": "x" * 2000})
    with pytest.raises(ChannelError, match="not a request the channel takes"):
        request(path, {"op": "approve"})
    assert request(path, {"op": "inbox"})["messages"] == []
    [m] = request(path, {"op": "broadcast", "text": "all"})["sent"]
    assert m["to"] == "b"
    request(path, {"op": "hook", "record": {"event": "Stop", "t": 1}})
    assert '"event": "Stop"' in (home / "run" / "hooks" / "a.jsonl").read_text()


def test_a_process_outside_the_agents_pane_is_refused(tmp_path: Path) -> None:
    import os
    import subprocess

    store = Store.of_home(tmp_path)
    other = subprocess.Popen(["sleep", "30"])
    pane = {"a": other.pid}
    ch = Channels(tmp_path, store, lambda: ["a"], lambda: 1000, pane.get)
    ch.sync([Agent(name="a", profile=BUILTIN["shell"], command="sh", sandbox=SandboxSettings())])
    stop = threading.Event()
    t = threading.Thread(target=ch.serve, args=(stop,), daemon=True)
    t.start()
    path = str(channel_dir(tmp_path, "a") / CHANNEL_SOCKET)
    try:
        with pytest.raises(ChannelError, match="not a's"):
            request(path, {"op": "inbox"})
        pane["a"] = os.getpid()  # this process is the pane's now: in its tree
        assert request(path, {"op": "inbox"})["messages"] == []
    finally:
        other.kill()
        other.wait()
        stop.set()
        t.join(5)
        ch.close()
        store.close()
