"""spec-kit task lists (the parser, its graph, the import into a real SQLite store, the
box ticked in place) and task specs (the JSON Schema, its errors with their lines)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import brought_up, write_layout

from miyabi.config.settings import Route
from miyabi.pipeline import convention as conv
from miyabi.pipeline.gate import checks_of
from miyabi.work import speckit
from miyabi.work.model import TaskError
from miyabi.work.scheduler import schedule
from miyabi.work.specs import add_spec, import_list
from miyabi.work.store import Store
from miyabi.work.taskspec import SpecError, read, speckit_line, task_acceptance, task_tests

# spec-kit's tasks template (templates/tasks-template.md) filled in for a small blog,
# in its own shape: front matter, prose, the format note, phases with their purpose,
# sub-headings, checkpoints, a polish phase, then the sections after the phases, with a
# fenced example that names tasks but is not a list.
TEMPLATE = """\
---
description: "Task list for the blog"
---

# Tasks: Blog

**Input**: Design documents from `/specs/001-blog/`
**Prerequisites**: plan.md, spec.md

## Format: `[ID] [P?] [Story] Description`

- **[P]**: Can run in parallel (different files, no dependencies)
- **[Story]**: Which user story this task belongs to (e.g., US1, US2)

## Phase 1: Setup (Shared Infrastructure)

**Purpose**: Project initialization

- [ ] T001 Create the project layout in src/ and tests/
- [ ] T002 Initialize a Python project with Flask
- [ ] T003 [P] Configure ruff in pyproject.toml

---

## Phase 2: Foundational (Blocking Prerequisites)

**⚠️ CRITICAL**: No user story work can begin until this phase is complete

- [ ] T004 Set up the SQLite schema in src/db.py
- [ ] T005 [P] Add the app factory in src/app.py
- [ ] T006 [P] Add logging in src/log.py
- [ ] T007 Create the base model in src/models/base.py

**Checkpoint**: Foundation ready - user story implementation can now begin in parallel

---

## Phase 3: User Story 1 - Write a post (Priority: P1) 🎯 MVP

**Goal**: An author writes a post

### Tests for User Story 1

- [ ] T008 [P] [US1] Contract test for POST /posts in tests/contract/test_posts.py
- [ ] T009 [P] [US1] Integration test for writing in tests/integration/test_write.py

### Implementation for User Story 1

- [ ] T010 [P] [US1] Create the Post model in src/models/post.py
- [x] T011 [P] [US1] Create the Author model in src/models/author.py
- [ ] T012 [US1] Implement PostService in src/services/posts.py (depends on T010, T011)
- [ ] T013 [US1] Implement POST /posts in src/api/posts.py

**Checkpoint**: User Story 1 works on its own

---

## Phase 4: User Story 2 - Comment (Priority: P2)

- [ ] T014 [P] [US2] Create the Comment model in src/models/comment.py
- [ ] T015 [US2] Implement POST /comments in src/api/comments.py

---

## Phase 5: Polish & Cross-Cutting Concerns

- [ ] T016 [P] Documentation updates in docs/
- [ ] T017 Run quickstart.md validation

---

## Dependencies & Execution Order

- **Setup (Phase 1)**: No dependencies - can start immediately

## Parallel Example: User Story 1

```bash
- [ ] T099 not a task: an example in a code block
Task: "Contract test for POST /posts in tests/contract/test_posts.py"
```

## Notes

- [ ] Verify tests fail before implementing
"""


def parsed() -> speckit.TaskList:
    return speckit.parse(TEMPLATE, "001-blog", "specs/001-blog/tasks.md")


def test_the_template_parses_into_phases_and_tasks() -> None:
    tl = parsed()
    assert [(p.number, p.story) for p in tl.phases] == [(1, False), (2, False), (3, True), (4, True), (5, False)]
    assert [it.id for it in tl.items] == [f"T{i:03}" for i in range(1, 18)]
    t012 = tl.items[11]
    assert (t012.id, t012.story, t012.parallel, t012.after, t012.line, t012.phase) == (
        "T012",
        "US1",
        False,
        ("T010", "T011"),
        51,
        2,
    )
    assert t012.text == "Implement PostService in src/services/posts.py (depends on T010, T011)"
    assert t012.title == "Implement PostService in src/services/posts.py"  # the clause is the graph's, not the title's
    assert [it.id for it in tl.items if it.done] == ["T011"]
    assert tl.ref(t012) == "001-blog#T012"
    assert tl.phases[2].title == "User Story 1 - Write a post (Priority: P1) 🎯 MVP"


def test_the_graph_follows_phases_parallel_marks_and_depends_on() -> None:
    deps = speckit.dependencies(parsed())
    assert deps["T001"] == () and deps["T003"] == ()  # the first phase waits for nothing; [P] runs beside
    assert deps["T002"] == ("T001",)  # without [P]: in order
    assert deps["T004"] == ("T002", "T003")  # phase 2 waits for phase 1's last tasks
    assert deps["T005"] == deps["T006"] == ("T002", "T003")
    assert deps["T007"] == ("T004", "T005", "T006")  # a serial task after [P] ones waits for them
    # both user stories wait for Foundational only: they run side by side
    assert deps["T008"] == deps["T009"] == deps["T010"] == deps["T011"] == ("T007",)
    assert deps["T014"] == ("T007",)
    assert deps["T012"] == ("T008", "T009", "T010", "T011")  # its explicit T010, T011 are among them
    assert deps["T013"] == ("T012",)
    assert deps["T015"] == ("T014",)
    # the polish phase waits for every story
    assert deps["T016"] == ("T013", "T015")
    assert deps["T017"] == ("T016",)
    assert speckit.find_cycle(deps) is None


def test_depends_on_adds_an_edge_across_phases() -> None:
    text = "## Phase 1: A\n- [ ] T001 [P] one\n- [ ] T002 [P] two (depends on T001)\n"
    assert speckit.dependencies(speckit.parse(text, "f"))["T002"] == ("T001",)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("# Tasks\n\nnothing here\n", r"^tasks.md: no tasks found; expected lines such as `- \[ \] T001"),
        ("- [ ] T001 before any phase\n", r"^tasks.md:1: task T001 is not under a `## Phase N: Title` heading"),
        ("## Phase 1: A\n- [ ] TXXX [P] placeholder\n", r"^tasks.md:2: expected a task id such as T001 .*'TXXX'"),
        ("## Phase 1: A\n- [-] T001 half\n", r"^tasks.md:2: expected `\[ \]` or `\[x\]` before T001, found \[-\]"),
        (
            "## Phase 1: A\n- [ ] T001 one\n- [ ] T001 again\n",
            r"^tasks.md:3: task T001 is listed twice \(also on line 2\)",
        ),
        ("## Phase 1: A\n- [ ] T001 [P] [US1]\n", r"^tasks.md:2: expected a description after T001"),
        ("## Phase N: Polish\n- [ ] T001 one\n", r"^tasks.md:1: expected the phase's number .*'N'"),
        ("## Phase one\n- [ ] T001 one\n", r"^tasks.md:1: expected a phase heading `## Phase N: Title`"),
        ("## Phase 1: A\n- [ ] T001 x (depends on T009)\n", r"^tasks.md:2: task T001 depends on T009, which the file"),
        ("## Phase 1: A\n- [ ] T001 x (depends on T001)\n", r"^tasks.md:2: task T001 depends on itself"),
        (
            "## Phase 1: A\n- [ ] T001 [P] x (depends on T002)\n- [ ] T002 [P] y (depends on T001)\n",
            r"^tasks.md:2: the dependencies go round in a cycle: T001 → T002 → T001",
        ),
    ],
)
def test_a_malformed_list_names_the_line_and_what_was_expected(text: str, error: str) -> None:
    with pytest.raises(speckit.SpecKitError, match=error):
        speckit.parse(text, "f")


def test_tick_changes_only_that_box() -> None:
    ticked = speckit.tick(TEMPLATE, "T012")
    assert "- [x] T012 [US1] Implement PostService" in ticked
    assert ticked.replace("- [x] T012", "- [ ] T012") == TEMPLATE
    assert speckit.tick(ticked, "T012") == ticked  # again: nothing to do
    assert speckit.tick(TEMPLATE, "T099") == TEMPLATE  # only in a code block: not a task
    assert speckit.tick(TEMPLATE, "T01") == TEMPLATE  # an id's prefix is not the id


# -- the import into the store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "miyabi.db")


def tasks_md(tmp_path: Path, text: str = TEMPLATE) -> Path:
    path = tmp_path / "specs" / "001-blog" / "tasks.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_import_stores_the_graph_refs_labels_and_states(store: Store, tmp_path: Path) -> None:
    report = import_list(store, tasks_md(tmp_path), ["agent:coders"])
    assert [r for r, _ in report.added] == [f"001-blog#T{i:03}" for i in range(1, 18)]
    ids = dict(report.added)
    t12 = store.get("001-blog#T012")
    assert (t12.id, t12.ref, t12.labels, t12.state) == (
        ids["001-blog#T012"],
        "001-blog#T012",
        ("US1", "agent:coders"),
        "blocked",
    )
    assert t12.title == "Implement PostService in src/services/posts.py"
    assert store.depends_on(t12.id) == sorted(ids[f"001-blog#{d}"] for d in ("T008", "T009", "T010", "T011"))
    assert store.get("001-blog#T011").state == "done"  # ticked in the file already
    assert store.get("001-blog#T001").state == "queued" and store.get("001-blog#T003").state == "queued"
    assert store.get("001-blog#T002").state == "blocked"
    assert t12.to_json()["spec"]["path"] is None and t12.to_json()["spec"]["line"] == 51
    # the scheduler runs them in the graph's order: only T001 and T003 go out first
    sent: list[int] = []
    schedule(store, [Route("coders", default=True)], {"coders": 10}, lambda t, a: sent.append(t.id))
    assert sorted(sent) == sorted([ids["001-blog#T001"], ids["001-blog#T003"]])


def test_importing_again_changes_nothing_adds_new_lines_and_reports_gone_ones(store: Store, tmp_path: Path) -> None:
    path = tasks_md(tmp_path)
    first = import_list(store, path)
    store.set_state(store.get("001-blog#T001").id, "cancelled", "not wanted")
    again = import_list(store, path)
    assert (again.added, again.unchanged, again.disappeared) == ([], first.added, [])
    assert store.get("001-blog#T001").state == "cancelled"  # unchanged by the import
    edited = TEMPLATE.replace("- [ ] T016 [P] Documentation updates in docs/\n", "").replace(
        "- [ ] T017 Run quickstart.md validation\n",
        "- [ ] T017 Run quickstart.md validation\n- [ ] T018 Tag a release (depends on T013)\n",
    )
    path.write_text(edited, encoding="utf-8")
    third = import_list(store, path)
    ids = dict(first.added)
    assert [r for r, _ in third.added] == ["001-blog#T018"]
    assert third.disappeared == [("001-blog#T016", ids["001-blog#T016"])]
    t18 = store.get("001-blog#T018")
    assert store.depends_on(t18.id) == sorted([ids["001-blog#T013"], ids["001-blog#T017"]])
    assert third.to_json()["disappeared"] == [{"ref": "001-blog#T016", "id": ids["001-blog#T016"]}]


def test_a_list_that_does_not_parse_stores_nothing(store: Store, tmp_path: Path) -> None:
    with pytest.raises(speckit.SpecKitError, match=r"tasks.md:2: expected a description after T002"):
        import_list(store, tasks_md(tmp_path, "## Phase 1: A\n- [ ] T002\n"))
    with pytest.raises(speckit.SpecKitError, match="no such file"):
        import_list(store, tmp_path / "nope" / "tasks.md")
    assert store.query() == []


def test_a_done_task_without_a_pool_ticks_its_box_in_place(store: Store, tmp_path: Path) -> None:
    path = tasks_md(tmp_path)
    import_list(store, path)
    t = store.get("001-blog#T001")
    store.set_state(t.id, "assigned", "routed", agent="kaede")
    assert speckit_line(t) is not None
    store.done(t.id, "made it")
    assert "- [x] T001 Create the project layout" in path.read_text(encoding="utf-8")
    assert path.read_text(encoding="utf-8").count("- [x]") == 2  # T011 was ticked before


def test_a_list_in_a_repository_remembers_its_path_there(store: Store, tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    import_list(store, tasks_md(tmp_path))
    box = speckit_line(store.get("001-blog#T004"))
    assert box is not None
    assert (box.id, box.repo, box.path) == ("T004", tmp_path.resolve(), "specs/001-blog/tasks.md")


# -- task specs


SPEC = """\
id: blog-api
title: Serve the posts over HTTP
owner: coders
priority: high
inputs: [specs/001-blog/spec.md]
outputs: [src/api/posts.py]
constraints: [no new dependencies]
tests:
  - pytest -q tests/test_api.py
acceptance:
  - {url: "http://127.0.0.1:8000/posts", status: 200}
  - run: curl -fsS http://127.0.0.1:8000/health
artifacts: [coverage.xml]
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_task_spec_becomes_a_routed_task_with_its_checks(store: Store, tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = read(write(tmp_path, SPEC))
    t = add_spec(store, spec, home, ["kaede", "coders"])
    assert (t.ref, t.title, t.priority, t.labels) == (
        "spec:blog-api",
        "Serve the posts over HTTP",
        "high",
        ("agent:coders",),
    )
    assert store.get("spec:blog-api").id == t.id
    assert task_tests(t) == ["pytest -q tests/test_api.py"]
    assert task_acceptance(t) == [
        {"url": "http://127.0.0.1:8000/posts", "status": 200},
        {"run": "curl -fsS http://127.0.0.1:8000/health"},
    ]
    folder = home / "artifacts" / "blog-api"
    assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700
    assert (home / "artifacts").stat().st_mode & 0o777 == 0o700
    assert f"put coverage.xml in {folder}" in t.body and "- no new dependencies" in t.body
    with pytest.raises(TaskError, match="task spec 'blog-api' was added already, as task"):
        add_spec(store, spec, home, ["coders"])


def test_a_task_specs_tests_run_after_the_repositorys_checks(store: Store, tmp_path: Path) -> None:
    t = add_spec(store, read(write(tmp_path, SPEC)), tmp_path / "home", ["coders"])
    found = conv.Convention(steps=(conv.Step("lint", "ruff check", 60.0), conv.Step("test", "pytest -q", 120.0)))
    assert [(s.stage, s.command, s.timeout) for s in checks_of(found, t)] == [
        ("lint", "ruff check", 60.0),
        ("test", "pytest -q", 120.0),
        ("task", "pytest -q tests/test_api.py", 120.0),
    ]
    plain = store.add("no spec")
    assert checks_of(found, plain) == found.checks
    assert task_acceptance(plain) == [] and task_tests(plain) == []


def test_an_unknown_owner_is_one_line(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path, SPEC)
    with pytest.raises(SpecError) as e:
        add_spec(store, read(path), tmp_path / "home", ["kaede"])
    assert e.value.lines() == [f"{path}: owner: no agent or pool 'coders' in the layout (kaede)"]
    with pytest.raises(
        SpecError, match="owner: no agent or pool 'coders' in the layout \\(none known: run `miyabi up`"
    ):
        add_spec(store, read(path), tmp_path / "home", None)
    assert store.query() == []


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        (
            SPEC.replace("priority: high", "priority: urgent"),
            ["{f}:4: priority: 'urgent' is not one of ['high', 'normal', 'low']"],
        ),
        (
            SPEC.replace('  - {url: "http://127.0.0.1:8000/posts", status: 200}', '  - {url: "http://x", status: ok}'),
            ['{f}:11: acceptance[0]: expected {url: http://…, status: 200} or {run: "a command"}'],
        ),
        (SPEC.replace("title: Serve the posts over HTTP\n", ""), ["{f}:1: (the file): title is required"]),
        (
            SPEC + "deadline: tomorrow\n",
            [
                (
                    "{f}:14: deadline: is not a task spec key; use id, title, description, owner, priority, inputs, "
                    "outputs, constraints, tests, acceptance, artifacts"
                )
            ],
        ),
        (
            SPEC.replace("id: blog-api", "id: ../etc"),
            ["{f}:1: id: '../etc' is not a valid id; use letters, digits, '.', '_' and '-' (up to 100)"],
        ),
        (
            SPEC.replace("tests:\n  - pytest -q tests/test_api.py", "tests:\n  - pytest\n  - 3"),
            ["{f}:10: tests[1]: 3 is not of type 'string'"],
        ),
        ("id: [unclosed\n", ["{f}:2: YAML syntax error: expected ',' or ']', but got '<stream end>'"]),
        ("- a list\n", ["{f}:1: (the file): a task spec is a mapping with at least id: and title:"]),
    ],
)
def test_a_schema_error_names_the_file_its_line_and_key(tmp_path: Path, text: str, lines: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as e:
        read(path)
    assert e.value.lines() == [line.replace("{f}", str(path)) for line in lines]


def test_the_schema_is_shipped_in_the_package() -> None:
    from importlib import resources

    data = json.loads(resources.files("miyabi.work").joinpath("task-spec.schema.json").read_text(encoding="utf-8"))
    assert data["required"] == ["id", "title"]


# -- the commands, as an agent runs them in its pane (MIYABI_HOME, MIYABI_AGENT set)


def run(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX",)}
    env.update(MIYABI_HOME=str(home), MIYABI_AGENT="manager", MIYABI_SOCKET="miyabi_unit_never_started")
    return subprocess.run(
        [sys.executable, "-m", "miyabi", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    lay = write_layout(tmp_path / "layout.yaml", ["manager", "kaede"], session="specs")
    return brought_up(tmp_path / "home", ["manager", "kaede"], session="specs", layout=str(lay))


def test_spec_import_from_an_agents_pane(home: Path, tmp_path: Path) -> None:
    path = tasks_md(tmp_path)
    r = run(home, "spec", "import", str(path), "--to", "kaede", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["feature"], len(out["added"]), out["unchanged"], out["disappeared"]) == ("001-blog", 17, [], [])
    again = json.loads(run(home, "spec", "import", str(path), "--json").stdout)
    assert (again["added"], len(again["unchanged"])) == ([], 17)
    shown = json.loads(run(home, "task", "show", "001-blog#T012", "--json").stdout)
    assert (shown["ref"], shown["labels"], shown["state"]) == ("001-blog#T012", ["US1", "agent:kaede"], "blocked")
    assert len(shown["depends_on"]) == 4
    listed = run(home, "task", "ls")
    assert "001-blog#T001" in listed.stdout
    text = run(home, "spec", "import", str(path))
    assert text.stdout.startswith("imported 001-blog: 0 added, 17 unchanged"), text.stdout
    other = tmp_path / "specs" / "002-notes" / "tasks.md"
    other.parent.mkdir(parents=True)
    other.write_text("## Phase 1: A\n- [ ] T001 one\n", encoding="utf-8")
    unrouted = run(home, "spec", "import", str(other))
    assert unrouted.returncode == 0 and "1 new task(s) wait in the queue: no route matches it" in unrouted.stderr


def test_spec_import_of_a_bad_list_is_one_line_exit_1(home: Path, tmp_path: Path) -> None:
    path = tasks_md(tmp_path, "## Phase 1: Setup\n- [ ] T001 [P]\n")
    r = run(home, "spec", "import", str(path))
    assert (r.returncode, r.stderr) == (1, f"miyabi: {path}:2: expected a description after T001\n")
    r = run(home, "spec", "import", str(tasks_md(tmp_path)), "--to", "nobody")
    assert r.returncode == 2 and "--to nobody: no agent or pool 'nobody' in the layout (kaede, manager)" in r.stderr


def test_spec_add_checks_the_schema_and_the_owner(home: Path, tmp_path: Path) -> None:
    bad = write(tmp_path, SPEC.replace("priority: high", "priority: soon"), "bad.yaml")
    r = run(home, "spec", "add", str(bad))
    assert (r.returncode, r.stderr) == (
        1,
        f"miyabi: {bad}:4: priority: 'soon' is not one of ['high', 'normal', 'low']\n",
    )
    r = run(home, "spec", "add", str(write(tmp_path, SPEC)))
    assert r.returncode == 1 and r.stderr.endswith("owner: no agent or pool 'coders' in the layout (kaede, manager)\n")
    good = write(tmp_path, SPEC.replace("owner: coders", "owner: kaede"), "good.yaml")
    r = run(home, "spec", "add", str(good), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["ref"], out["labels"], out["story"]) == ("spec:blog-api", ["agent:kaede"], None)
    assert out["spec"]["acceptance"][1] == {"run": "curl -fsS http://127.0.0.1:8000/health"}
    assert (home / "artifacts" / "blog-api").is_dir()


def test_boxes_ticked_at_once_by_many_processes_are_all_kept(tmp_path: Path) -> None:
    ids = [f"T{i:03}" for i in range(1, 25)]
    path = tasks_md(tmp_path, "## Phase 1: A\n" + "".join(f"- [ ] {t} [P] task {t}\n" for t in ids))
    code = (
        "import sys; from pathlib import Path; from miyabi.work.speckit import tick_file; "
        "tick_file(Path(sys.argv[1]), sys.argv[2])"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), t]) for t in ids]
    assert [p.wait(timeout=60) for p in procs] == [0] * len(ids)
    assert path.read_text(encoding="utf-8").count("- [x]") == len(ids)
    assert speckit.tick_file(tmp_path / "gone" / "tasks.md", "T001") is False
