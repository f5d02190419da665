"""Monitoring creates work: one fix task per agent the watchdog gave up on, filed again
only after it ran again and failed anew (real SQLite, no GitHub)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from miyabi.home import Home
from miyabi.pipeline.monitoring import FixFiler, failed_agent_fix
from miyabi.work.store import Store


def test_a_failed_agent_gets_one_fix_task_until_it_runs_again(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.ensure()
    (home.run / "watchdog.json").write_text(
        json.dumps({"agents": {"kaede": {"history": {"failed": "exit status 3, 6 times in 900 s", "restarts": [1e9]}}}})
    )
    store = Store.of_home(home.root)
    started: list[str] = []

    def start(target: Callable[[], None], name: str) -> None:  # the controller's threads, run at once here
        started.append(name)
        target()

    filer = FixFiler(home, store, None, lambda: None, start)
    filer.tick(["kaede"])
    filer.tick(["kaede"])  # still failed: nothing new
    tasks = store.query()
    assert [t.title for t in tasks] == ["Agent kaede keeps failing: exit status 3, 6 times in 900 s"]
    assert "`miyabi restart kaede`" in tasks[0].body and str(home.logs / "crashes") in tasks[0].body
    assert started == ["file-fix-kaede"]
    filer.tick([])  # it runs again
    filer.tick(["kaede"])  # a new failure, while the first fix is open: not filed twice
    assert len(store.query()) == 1 and started == ["file-fix-kaede", "file-fix-kaede"]


def test_the_fix_text_names_the_reason_and_the_time() -> None:
    cause, title, body = failed_agent_fix("x", {"history": {"failed": "hung", "restarts": [0.0]}}, Path("/h/crashes"))
    assert cause == "the watchdog gave up on agent x" and title == "Agent x keeps failing: hung"
    assert "at 1970-01-01T00:00:00.000Z: hung" in body
