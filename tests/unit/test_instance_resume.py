"""A pool instance that takes up an earlier one's work on its branch continues it (its
process resumes that conversation); a new task's instance starts fresh; `up` passes
the resume words to the processes it starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import write_layout

from miyabi.config import load
from miyabi.home import Home
from miyabi.pipeline.instances import instance_agents
from miyabi.pipeline.records import InstanceState, Records
from miyabi.tmux.builder import UpReport, reconcile_commands
from miyabi.tmux.panes import _SEP, Pane
from miyabi.work.store import Store


def _pool_layout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    coder = {"name": "coder", "profile": "claude", "repo": str(repo)}
    return write_layout(tmp_path / "l.yaml", [("lead", "shell", "cat")], pools=[coder])


def test_an_instance_on_a_branch_an_earlier_one_worked_on_continues_it(tmp_path: Path) -> None:
    lay = load(_pool_layout(tmp_path))
    store = Store(tmp_path / "tasks.db")
    records = Records(store)
    wt = tmp_path / "worktrees" / "coder" / "7-fix"
    first = store.add("fix the crash")
    records.add_instance("coder-7", "coder", first.id, "miyabi/7-fix", wt)
    records.set_instance("coder-7", InstanceState.ENDED, "its task is verifying")
    follow = store.add("@ai-fix also the docs", parent=first.id, pool="coder", branch="miyabi/7-fix")
    records.add_instance("coder-7-2", "coder", follow.id, "miyabi/7-fix", wt)
    other = store.add("something else")
    records.add_instance("coder-8", "coder", other.id, "miyabi/8-else", tmp_path / "worktrees" / "coder" / "8-else")
    for name in ("coder-7-2", "coder-8"):
        records.set_instance(name, InstanceState.READY)
    got = {a.name: a.continues for a in instance_agents(records, lay)}
    assert got == {"coder-7-2": "coder-7", "coder-8": None}  # a new task's branch is its own: fresh
    # the same on every pass: the running layout does not see the instance change
    assert [a.continues for a in instance_agents(records, lay)] == ["coder-7", None]


def test_up_starts_respawned_and_new_panes_as_told(tmp_path: Path) -> None:
    lay = load(write_layout(tmp_path / "l.yaml", [("a", "claude", None), ("b", "claude", None)], session="s"))
    fields = ["%1", "a", "s", "@1", "0", "agents-1", "0", "1", "1", "", "claude"]
    dead = Pane.parse(_SEP.join(fields))
    assert dead.dead and dead.agent == "a"
    asked: list[tuple[str, bool]] = []

    def starts(agent: object, respawn: bool) -> str | None:
        name = getattr(agent, "name", "")
        asked.append((name, respawn))
        return "conv-a" if respawn else None

    units = reconcile_commands(lay, Home(tmp_path), "sock", tmp_path, [dead], UpReport("s"), starts=starts)
    respawn = next(c for u in units for c in u if c[0] == "respawn-pane")
    new = next(c for u in units for c in u if c[0] in ("split-window", "new-window"))
    assert "exec claude --resume conv-a --settings " in respawn[-1]
    assert " --resume " not in new[-1]
    assert asked == [("a", True), ("b", False)]
