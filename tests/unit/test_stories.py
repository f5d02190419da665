"""Stories: what the store keeps of them (real SQLite) and the story keeper that carries
one from its plan to done or failed (a real git repository; the deploy stage and the
acceptance checks are stand-ins that record their calls and answer as told)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for, write_layout

from miyabi.config import load
from miyabi.config.model import Layout
from miyabi.pipeline.deploy import CheckResult, DeployResult
from miyabi.pipeline.gate import landed_state
from miyabi.pipeline.story import StoryKeeper
from miyabi.work import stories
from miyabi.work.model import Source, TaskState
from miyabi.work.store import Store
from miyabi.work.stories import StoryError, StoryState


def repo_at(tmp: Path, max_rounds: int = 3) -> Path:
    repo = tmp / "app"
    repo.mkdir()
    (repo / ".miyabi.yml").write_text(f"test: ['true']\nbase_branch: main\nmax_rounds: {max_rounds}\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "initial"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@x", *args], cwd=repo, check=True)
    return repo


def layout_of(tmp: Path, repo: Path, deployer: str = "none") -> Layout:
    return load(
        write_layout(
            tmp / "l.yaml",
            [("lead", "shell", "cat"), ("ops", "shell", "cat")],
            pools=[{"name": "coder", "profile": "shell", "command": "cat", "repo": str(repo), "pipeline": "local"}],
            roles={"manager": "lead", "coder": "coder", "deployer": deployer},
        )
    )


@dataclass
class Stage:
    """The deploy stage and the acceptance checks, as told: ``deploys`` and ``checks``
    are the answers (ok, evidence) given in turn, the last one again when they run out."""

    deploys: list[tuple[bool, str]] = field(default_factory=lambda: [(True, "healthy")])
    checks: list[tuple[bool, str]] = field(default_factory=lambda: [(True, "HTTP 200")])
    deployed: list[tuple[Path, str, int]] = field(default_factory=list)
    checked: list[dict[str, Any]] = field(default_factory=list)

    def deploy(self, repo: Path, commit: str, story: int) -> DeployResult:
        self.deployed.append((repo, commit, story))
        ok, why = self.deploys[min(len(self.deployed), len(self.deploys)) - 1]
        return DeployResult(ok, commit, why, checkout=repo)

    def check(self, check: dict[str, Any], cwd: Path) -> CheckResult:
        self.checked.append(check)
        ok, why = self.checks[min(len(self.checked), len(self.checks)) - 1]
        return CheckResult(ok, why)


def keeper_of(tmp: Path, store: Store, stage: Stage, deployer: str = "none", max_rounds: int = 3) -> StoryKeeper:
    lay = layout_of(tmp, repo_at(tmp, max_rounds), deployer)
    return StoryKeeper(
        store,
        lambda: lay,
        tmp,
        stage.deploy,
        stage.check,
        acceptance=lambda t: [{"url": f"http://x/{t.id}", "status": 200}],
    )


def settle(keeper: StoryKeeper, store: Store, story_id: int, *states: StoryState) -> stories.Story:
    """Tick until the story is in one of ``states`` (its deploy runs on the keeper's thread)."""

    def reached() -> stories.Story | None:
        keeper.tick()
        s = stories.get(store, story_id)
        return s if s.state in states and not keeper.running else None

    found = wait_for(reached, what=f"story {story_id} {'/'.join(states)}")
    assert found is not None
    return found


def planned(store: Store, n: int = 2) -> tuple[stories.Story, list[int]]:
    """A story whose manager imported ``n`` tasks and finished planning."""
    story, plan = stories.create(store, "A blog", "posts and comments", "lead", "coder")
    kids = [store.add(f"part {i}").id for i in range(n)]
    stories.attach(store, story.id, kids)
    store.set_state(plan.id, TaskState.ASSIGNED, "routed", agent="lead")
    store.set_state(plan.id, TaskState.DONE, "planned")
    return story, kids


def land(store: Store, *task_ids: int) -> None:
    """What the gate does to a story's child whose checks passed and that merged."""
    for tid in task_ids:
        store.set_state(tid, TaskState.ASSIGNED, "routed", agent="coder-1")
        store.set_state(tid, TaskState.VERIFYING, "says done")
        store.set_state(tid, landed_state(store.get(tid)), "verified and merged")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "miyabi.db")


def test_a_story_is_made_with_a_planning_task_for_its_manager(store: Store, tmp_path: Path) -> None:
    story, plan = stories.create(store, "A blog", "with comments", "lead", "coder", home_root=tmp_path)
    assert story.state == StoryState.PLANNING and story.task == plan.id and plan.story == story.id
    assert plan.labels == ("story", "agent:lead") and plan.priority == "high"
    assert f"miyabi spec import specs/NNN-feature/tasks.md --story {story.id}" in plan.body
    assert "A blog" in plan.body and "with comments" in plan.body
    kinds = [json.loads(x)["event"] for x in (tmp_path / "logs" / "events.jsonl").read_text().splitlines()]
    assert kinds == ["story-created"]
    with pytest.raises(StoryError, match="a story needs a title"):
        stories.create(store, "  ")


def test_imported_tasks_join_the_story_routed_to_the_coder(store: Store) -> None:
    story, plan = stories.create(store, "A blog", manager="lead", coder="coder")
    own = store.add("named", labels=["agent:lead"])
    other = store.add("plain")
    stories.attach(store, story.id, [own.id, other.id])
    assert store.get(other.id).labels == ("agent:coder",) and store.get(other.id).story == story.id
    assert store.get(own.id).labels == ("agent:lead",)  # an agent it names wins
    assert [k.id for k in stories.children(store, story.id)] == [own.id, other.id]  # the planning task is not one
    # the story of the agent that holds its planning task (spec import's default --story)
    assert stories.story_of_agent(store, "lead") is None
    store.set_state(plan.id, TaskState.ASSIGNED, "routed", agent="lead")
    assert stories.story_of_agent(store, "lead") == story.id
    with pytest.raises(StoryError, match="no task 999"):
        stories.attach(store, story.id, [999])


def test_a_task_may_start_once_what_it_depends_on_is_verified(store: Store) -> None:
    story, _ = stories.create(store, "A blog", manager="lead", coder="coder")
    first = store.add("first")
    then = store.add("then", depends_on=[first.id])
    stories.attach(store, story.id, [first.id, then.id])
    assert store.open_deps(then.id) == [first.id]
    land(store, first.id)
    assert store.get(first.id).state == TaskState.VERIFIED  # a story's child stops there
    assert store.open_deps(then.id) == []
    loose = store.add("not in a story")
    land(store, loose.id)
    assert store.get(loose.id).state == TaskState.DONE


def test_a_story_goes_from_planned_to_done_through_its_deploy_and_checks(store: Store, tmp_path: Path) -> None:
    stage = Stage()
    keeper = keeper_of(tmp_path, store, stage)
    story, kids = planned(store)
    keeper.tick()
    assert stories.get(store, story.id).state == StoryState.BUILDING
    land(store, kids[0])
    keeper.tick()
    assert stories.get(store, story.id).state == StoryState.BUILDING and stage.deployed == []  # one still building
    land(store, kids[1])
    done = settle(keeper, store, story.id, StoryState.DONE)
    head = subprocess.run(
        ["git", "rev-parse", "main"], cwd=tmp_path / "app", capture_output=True, text=True, check=True
    ).stdout
    assert stage.deployed == [(tmp_path / "app", head.strip(), story.id)]
    assert stage.checked == [{"url": f"http://x/{k}", "status": 200} for k in kids]
    assert done.commit == head.strip() and done.deployed is not None and done.finished is not None
    for k in kids:
        assert [h["state"] for h in store.history(k)][-3:] == ["verified", "deployed", "done"]
    assert [h["state"] for h in stories.history(store, story.id)] == [
        "planning",
        "building",
        "deploying",
        "checking",
        "done",
    ]
    kinds = [json.loads(x)["event"] for x in (tmp_path / "logs" / "events.jsonl").read_text().splitlines()]
    assert [k for k in kinds if k.startswith("story-")] == ["story-planned", "story-deployed", "story-done"]
    keeper.close()


def test_a_failed_deploy_files_a_fix_and_after_max_rounds_the_story_fails(store: Store, tmp_path: Path) -> None:
    stage = Stage(deploys=[(False, "deploy `make` exited 2: no rule")])
    keeper = keeper_of(tmp_path, store, stage, deployer="ops", max_rounds=2)
    story, kids = planned(store, 1)
    keeper.tick()
    land(store, kids[0])
    again = settle(keeper, store, story.id, StoryState.BUILDING)
    assert again.rounds == 1 and "exited 2: no rule" in again.evidence
    (fix,) = [k for k in stories.children(store, story.id) if k.id not in kids]
    assert fix.labels == ("agent:coder",) and fix.priority == "high" and "exited 2: no rule" in fix.body
    assert "round 1 of 2" in fix.body
    told = [p.read_text() for p in (tmp_path / "queue" / "ops").rglob("*") if p.is_file()]
    assert any("round 1 of 2 failed; fix task" in m and "no rule" in m for m in told)  # the deployer agent hears
    land(store, fix.id)  # the fix lands: deployed again, and it fails again: round 2 of 2
    failed = settle(keeper, store, story.id, StoryState.FAILED)
    assert failed.rounds == 2 and "exited 2: no rule" in failed.evidence and len(stage.deployed) == 2
    assert {store.get(k).state for k in (*kids, fix.id)} == {TaskState.FAILED}
    final = [
        e
        for e in map(json.loads, (tmp_path / "logs" / "events.jsonl").read_text().splitlines())
        if e["event"] == "story-failed"
    ]
    assert [(e["round"], e["final"]) for e in final] == [(1, False), (2, True)]
    keeper.close()


def test_a_failed_acceptance_check_is_a_round_with_its_evidence(store: Store, tmp_path: Path) -> None:
    stage = Stage(checks=[(False, "HTTP 404 from http://x/2"), (True, "HTTP 200")])
    keeper = keeper_of(tmp_path, store, stage)
    story, kids = planned(store, 1)
    keeper.tick()
    land(store, kids[0])
    again = settle(keeper, store, story.id, StoryState.BUILDING)
    assert "acceptance of task #2 failed: HTTP 404" in again.evidence
    assert store.get(kids[0]).state == TaskState.DEPLOYED  # deployed, not done: its story's checks failed
    (fix,) = [k for k in stories.children(store, story.id) if k.id not in kids]
    land(store, fix.id)
    settle(keeper, store, story.id, StoryState.DONE)
    assert store.get(kids[0]).state == TaskState.DONE and store.get(fix.id).state == TaskState.DONE
    keeper.close()


def test_planning_that_imports_nothing_fails_the_story(store: Store, tmp_path: Path) -> None:
    keeper = keeper_of(tmp_path, store, Stage())
    story, plan = stories.create(store, "A blog", manager="lead", coder="coder")
    keeper.tick()
    assert stories.get(store, story.id).state == StoryState.PLANNING  # its manager is at it
    store.set_state(plan.id, TaskState.ASSIGNED, "routed", agent="lead")
    store.set_state(plan.id, TaskState.DONE, "nothing to do")
    keeper.tick()
    failed = stories.get(store, story.id)
    assert failed.state == StoryState.FAILED and "no task was imported" in failed.evidence
    keeper.close()


def test_an_issue_labelled_story_becomes_a_story_for_the_manager(store: Store, tmp_path: Path) -> None:
    issue = store.add(
        "Run a blog", "posts", ["status:todo", "story"], source=Source.GITHUB, repo="acme/w", number=5, url="u"
    )
    plain = store.add("A bug", "", ["status:todo"], source=Source.GITHUB, repo="acme/w", number=6)
    assert [s.id for s in stories.adopt_issues(store, "lead", "coder", tmp_path)] == [1]
    assert stories.adopt_issues(store, "lead", "coder", tmp_path) == []  # once only
    (story,) = stories.stories(store)
    assert (story.task, story.ref, story.manager, story.title) == (issue.id, "acme/w#5", "lead", "Run a blog")
    planning = store.get(issue.id)
    assert planning.story == story.id and "agent:lead" in planning.labels
    assert planning.body.startswith(f"You manage story {story.id}") and "posts" in planning.body
    assert store.get(plain.id).story is None


def test_a_done_story_takes_a_fix_task_and_builds_again(store: Store, tmp_path: Path) -> None:
    keeper = keeper_of(tmp_path, store, Stage())
    story, kids = planned(store, 1)
    keeper.tick()
    land(store, kids[0])
    settle(keeper, store, story.id, StoryState.DONE)
    fix = store.add("The service keeps dying")
    stories.attach(store, story.id, [fix.id])  # what the monitor does with its fix task
    assert stories.get(store, story.id).state == StoryState.BUILDING
    land(store, fix.id)
    settle(keeper, store, story.id, StoryState.DONE)
    assert store.get(fix.id).state == TaskState.DONE
    keeper.close()


def test_a_layout_without_roles_leaves_its_stories_be(store: Store, tmp_path: Path) -> None:
    lay = load(write_layout(tmp_path / "l.yaml", [("lead", "shell", "cat")]))
    keeper = StoryKeeper(store, lambda: lay, tmp_path, Stage().deploy, Stage().check)
    story, kids = planned(store, 1)
    land(store, kids[0])
    for _ in range(3):
        keeper.tick()
    assert stories.get(store, story.id).state == StoryState.PLANNING and not keeper.running
    keeper.close()
