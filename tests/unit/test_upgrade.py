"""miyabi upgrading itself: what the health probe accepts, the controller's answer to
it through ``run/requests/``, and where the running code comes from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from miyabi.controller import requests, upgrade
from miyabi.home import Home

SHA = "a" * 40


def test_judge_wants_the_merged_commit_and_every_agent_supervised_and_delivering() -> None:
    good = {"supervised": True, "delivering": True}
    assert upgrade.judge({"commit": SHA, "agents": {"a": good, "b": good}}, SHA) is None
    assert "runs commit 'bbb', not the merged aaaaaaaaaaaa" in str(upgrade.judge({"commit": "bbb", "agents": {}}, SHA))
    assert upgrade.judge({"commit": SHA}, SHA) == "the controller's answer names no agents"
    lost = {"a": good, "b": {"supervised": False, "delivering": True}, "c": {"delivering": True}}
    assert upgrade.judge({"commit": SHA, "agents": lost}, SHA) == "not supervised: b, c"
    silent = {"a": good, "b": {"supervised": True, "delivering": False}}
    assert upgrade.judge({"commit": SHA, "agents": silent}, SHA) == "no delivery to: b"


def test_a_probe_request_waits_until_the_controller_can_answer(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.ensure()
    d = requests.requests_dir(home)
    d.mkdir(parents=True, exist_ok=True)
    (d / "probe-1").write_text("probe\n")
    assert requests.pending(home)
    requests.serve(home, lambda _: True, probe=lambda: None)  # not ready: it waits
    assert (d / "probe-1").exists() and not (d / "done-probe-1").exists()
    answer = upgrade.probe_answer(SHA, {"a": {"supervised": True, "delivering": True}})
    requests.serve(home, lambda _: True, probe=lambda: answer)
    assert not (d / "probe-1").exists() and json.loads((d / "done-probe-1").read_text())["commit"] == SHA
    assert not requests.pending(home)


def origin_from(path: Path) -> dict[str, object]:
    """What a process importing miyabi from ``path`` says of its code's origin."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from miyabi.controller import upgrade; print(json.dumps(upgrade.code_origin()))",
        ],
        cwd=path.parent,
        env={"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found: dict[str, object] = json.loads(out)
    return found


def test_the_code_s_origin_is_its_checkout_and_commit(tmp_path: Path) -> None:
    """A process that imports miyabi from a git checkout records that checkout's HEAD."""
    import shutil

    import miyabi

    copy = tmp_path / "copy"
    shutil.copytree(Path(miyabi.__file__).parent, copy / "miyabi", ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@x"]
    subprocess.run(["git", "init", "-q", str(copy)], check=True)
    subprocess.run([*git, "add", "-A"], cwd=copy, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=copy, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=copy, check=True, capture_output=True, text=True).stdout
    assert origin_from(copy) == {"path": str(copy / "miyabi"), "checkout": str(copy), "commit": head.strip()}
    plain = tmp_path / "plain"
    shutil.copytree(copy / "miyabi", plain / "miyabi")
    assert origin_from(plain) == {"path": str(plain / "miyabi"), "checkout": None, "commit": None}


def test_an_approval_waits_once_per_commit_and_only_while_its_task_verifies(tmp_path: Path) -> None:
    import pytest

    from miyabi.pipeline.approvals import Approval, Approvals, ApprovalState, MergeNotWaiting
    from miyabi.work.model import TaskState
    from miyabi.work.store import Store

    store = Store(tmp_path / "state" / "miyabi.db")
    approvals = Approvals(store)
    t = store.add("fix it")
    for state in (TaskState.ASSIGNED, TaskState.VERIFYING):
        store.set_state(t.id, state, "on its way")
    asked = Approval(
        t.id, tmp_path, "b", "main", SHA, "m" * 40, ("l1",), ("- test `x`: passed",), ApprovalState.WAITING, 1.0
    )
    assert approvals.ask(asked) is True and approvals.ask(asked) is False  # once per commit
    assert [a.task for a in approvals.waiting()] == [t.id]
    assert [h["reason"] for h in store.history(t.id)].count(
        f"waiting for approval (miyabi approve-merge {t.id}; checked aaaaaaaaaaaa)"
    ) == 1
    decided = approvals.decide(t.id, False, "ann", "needs a test")
    assert decided.state == ApprovalState.REJECTED and decided.by == "ann" and approvals.waiting() == []
    with pytest.raises(MergeNotWaiting, match=f"task {t.id} is not waiting for approval \\(its merge was rejected"):
        approvals.decide(t.id, True, "ann")
    assert approvals.ask(asked) is True  # asked anew
    store.set_state(t.id, TaskState.CANCELLED, "not wanted")
    assert approvals.waiting() == []  # a cancelled task's merge waits for nobody
    with pytest.raises(MergeNotWaiting, match="the task is cancelled"):
        approvals.decide(t.id, True, "ann")
