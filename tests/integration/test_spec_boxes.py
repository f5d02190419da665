"""A spec-kit list imported and worked through the pipeline: with a pool (local mode),
each box is ticked in the commit that lands on the base branch, side by side with its
siblings' (no merge conflict between tasks of one list); with pull requests, on the
task's branch; without a pool, or for a list the repository does not track, in place
once the work is done. And a task spec's tests in its verify gate."""

from __future__ import annotations

from pathlib import Path

from fakegithub import FakeGitHub
from helpers import wait_for
from integration.conftest import Cli
from integration.test_pipeline import CONVENTION, fake, git, heard, layout, make_repo, plan, task_state

__all__ = ["fake"]  # the fixture, shared with the pipeline's tests

LIST = """# Tasks: Blog

## Phase 1: Setup

- [ ] T001 [P] Write the page in page.html
- [ ] T002 [P] Write the style in style.css

## Phase 2: Serving

- [ ] T003 Serve both (depends on T001, T002)
"""


def test_a_pool_task_s_box_lands_ticked_on_the_base_branch(cli: Cli, home: Path, tmp_path: Path) -> None:
    _, repo = make_repo(tmp_path, {"check.sh": "true\n", ".miyabi.yml": CONVENTION})
    (repo / "specs" / "001-blog").mkdir(parents=True)
    (repo / "specs" / "001-blog" / "tasks.md").write_text(LIST)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "the plan")
    p, log = plan(tmp_path, [[{"run": 'echo "$MIYABI_TASK" > "work-$MIYABI_TASK.txt"'}, {"done": "made it"}]])
    assert cli("up", str(layout(tmp_path, repo, p, log)), "-d").exit_code == 0
    r = cli("spec", "import", str(repo / "specs" / "001-blog" / "tasks.md"))
    assert r.exit_code == 0, r.output
    assert "3 added" in r.output
    for ref in ("001-blog#T001", "001-blog#T002", "001-blog#T003"):
        wait_for(lambda ref=ref: task_state(home, ref) == "done", timeout=120, what=f"{ref} done")  # type: ignore[misc]
    shown = git(repo, "show", "main:specs/001-blog/tasks.md")
    assert shown == LIST.replace("- [ ]", "- [x]").rstrip("\n")
    assert (repo / "specs" / "001-blog" / "tasks.md").read_text() == LIST.replace("- [ ]", "- [x]")
    assert git(repo, "status", "--porcelain") == ""
    ticks = git(repo, "log", "--format=%s", "main").splitlines()
    assert "001-blog#T003: done (T003 ticked in specs/001-blog/tasks.md)" in ticks
    # T003 was sent only once T001 and T002 had landed
    texts = [h["text"] for h in heard(log)]
    assert len(texts) == 3 and "001-blog#T003" in texts[-1]


def test_a_task_without_a_pool_ticks_its_box_in_place(cli: Cli, home: Path, tmp_path: Path) -> None:
    _, repo = make_repo(tmp_path, {"check.sh": "true\n", ".miyabi.yml": CONVENTION})
    p, log = plan(tmp_path, [])
    assert cli("up", str(layout(tmp_path, repo, p, log)), "-d").exit_code == 0
    path = tmp_path / "plans" / "002-notes" / "tasks.md"
    path.parent.mkdir(parents=True)
    path.write_text(LIST)
    assert cli("spec", "import", str(path), "--to", "lead").exit_code == 0
    wait_for(lambda: task_state(home, "002-notes#T001") in ("assigned", "in_progress"), what="T001 sent to lead")
    assert cli("task", "done", "002-notes#T001", "--note", "by hand").exit_code == 0
    assert path.read_text() == LIST.replace("- [ ] T001", "- [x] T001")


def test_a_task_spec_s_tests_run_in_its_verify_gate_after_the_repository_s(
    cli: Cli, home: Path, tmp_path: Path
) -> None:
    _, repo = make_repo(tmp_path, {"check.sh": "true\n", ".miyabi.yml": CONVENTION})
    p, log = plan(
        tmp_path,
        [[{"write": "page.html", "text": "hi\n"}, {"done": "1"}], [{"write": "ok.txt", "text": ""}, {"done": "2"}]],
    )
    assert cli("up", str(layout(tmp_path, repo, p, log)), "-d").exit_code == 0
    spec = tmp_path / "page.yaml"
    spec.write_text("id: page\ntitle: Write the page\nowner: coder\ntests: ['test -e ok.txt']\n")
    r = cli("spec", "add", str(spec))
    assert r.exit_code == 0, r.output
    wait_for(lambda: len(heard(log)) >= 2, timeout=60, what="feedback on the task's own test")
    assert "task: test -e ok.txt exited 1" in heard(log)[1]["text"]
    wait_for(lambda: task_state(home, "spec:page") == "done", timeout=60, what="the task done")
    assert (repo / "ok.txt").exists() and (repo / "page.html").exists()


def test_a_list_not_tracked_in_the_pool_s_repository_is_ticked_in_place_once_the_work_lands(
    cli: Cli, home: Path, tmp_path: Path
) -> None:
    _, repo = make_repo(tmp_path, {"check.sh": "test -e good.txt\n", ".miyabi.yml": CONVENTION})
    path = repo / "specs" / "003-draft" / "tasks.md"  # written by a manager, never committed
    path.parent.mkdir(parents=True)
    path.write_text("## Phase 1: One\n\n- [ ] T001 Make good.txt\n")
    seen = tmp_path / "seen.txt"  # the list as the agent sees it when its failed round comes back
    p, log = plan(
        tmp_path,
        [
            [{"write": "bad.txt", "text": ""}, {"done": "1"}],
            [{"run": f"cp {path} {seen}"}, {"write": "good.txt", "text": ""}, {"done": "2"}],
        ],
    )
    assert cli("up", str(layout(tmp_path, repo, p, log)), "-d").exit_code == 0
    assert cli("spec", "import", str(path)).exit_code == 0
    wait_for(lambda: task_state(home, "003-draft#T001") == "done", timeout=60, what="the task done")
    assert seen.read_text() == "## Phase 1: One\n\n- [ ] T001 Make good.txt\n"  # a failed round ticks nothing
    assert path.read_text() == "## Phase 1: One\n\n- [x] T001 Make good.txt\n"
    assert "tasks.md" not in git(repo, "log", "--stat", "main")  # nothing about it was committed


def test_with_pull_requests_the_box_is_ticked_on_the_task_s_branch(
    cli: Cli, home: Path, tmp_path: Path, fake: FakeGitHub
) -> None:
    remote, repo = make_repo(tmp_path, {"check.sh": "true\n", ".miyabi.yml": CONVENTION})
    (repo / "specs" / "004-pr").mkdir(parents=True)
    (repo / "specs" / "004-pr" / "tasks.md").write_text("## Phase 1: One\n\n- [ ] T001 Make it\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "the plan")
    git(repo, "push", "-q", "origin", "main")
    p, log = plan(tmp_path, [[{"write": "it.txt", "text": "it\n"}, {"done": "made it"}]])
    assert cli("up", str(layout(tmp_path, repo, p, log, fake=fake)), "-d").exit_code == 0
    assert cli("spec", "import", str(repo / "specs" / "004-pr" / "tasks.md")).exit_code == 0
    wait_for(lambda: fake.pulls, timeout=60, what="a pull request")
    (pull,) = fake.pulls.values()
    branch = pull["head"]["ref"]
    assert git(remote, "show", f"{branch}:specs/004-pr/tasks.md") == "## Phase 1: One\n\n- [x] T001 Make it"
    assert git(remote, "show", f"{branch}:it.txt") == "it"
    assert git(remote, "show", "main:specs/004-pr/tasks.md").endswith("- [ ] T001 Make it")  # nothing merged yet
