"""A repository's conventions: ``.miyabi.yml`` read and checked, or detected from its files."""

from __future__ import annotations

import json

import pytest

from miyabi.pipeline import convention as conv
from miyabi.pipeline.instances import branch_for, instance_name, slug
from miyabi.work.model import Task, TaskState


def reader(files: dict[str, str]) -> conv.Reader:
    return files.get


def test_the_file_gives_stages_timeouts_rounds_and_protected_paths() -> None:
    c = conv.load(
        reader(
            {
                ".miyabi.yml": (
                    "setup: npm ci\nbuild: [npm run build]\nlint: {run: [npm run lint, tsc --noEmit], timeout: 5m}\n"
                    "test: [npm test]\ntimeout: 20m\nbase_branch: develop\nmax_rounds: 5\nprotected: [migrations/**, "
                    "LICENSE]\n"
                )
            }
        )
    )
    assert [(s.stage, s.command, s.timeout) for s in c.steps] == [
        ("setup", "npm ci", 1200.0),
        ("build", "npm run build", 1200.0),
        ("lint", "npm run lint", 300.0),
        ("lint", "tsc --noEmit", 300.0),
        ("test", "npm test", 1200.0),
    ]
    assert [s.command for s in c.checks] == ["npm run build", "npm run lint", "tsc --noEmit", "npm test"]
    assert (c.base_branch, c.max_rounds, c.source, c.chosen) == ("develop", 5, ".miyabi.yml", ())
    assert c.violations(
        ["src/a.ts", "migrations/001.sql", "migrations/x/y.sql", "LICENSE", ".miyabi.yml", "LICENSE.md"]
    ) == ["migrations/001.sql", "migrations/x/y.sql", "LICENSE", ".miyabi.yml"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("test: [pytest\n", ".miyabi.yml: line 2 is not valid YAML"),
        (
            "- a\n",
            ".miyabi.yml: must be a mapping of setup, build, lint, test, timeout, base_branch, max_rounds, protected",
        ),
        ("tests: [pytest]\n", ".miyabi.yml: unknown key 'tests'; the keys are setup, build"),
        (
            "test: {run: [pytest], timeout: soon}\n",
            ".miyabi.yml: test.timeout 'soon' must be a duration such as 90s, 10m or 1h",
        ),
        ("test: {cmd: pytest}\n", ".miyabi.yml: test: unknown key 'cmd'; a stage has run: [commands] and timeout:"),
        ("lint: [1, 2]\n", ".miyabi.yml: lint must be a list of shell commands"),
        ("max_rounds: 0\n", ".miyabi.yml: max_rounds 0 must be a whole number from 1 to 20"),
        ("base_branch: --force\n", ".miyabi.yml: base_branch '--force' must be a branch name such as main"),
        ("protected: migrations\n", ".miyabi.yml: protected must be a list of paths or globs"),
        ("timeout: -1\n", ".miyabi.yml: timeout -1 must be a duration"),
    ],
)
def test_a_malformed_file_is_one_line_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(conv.ConventionError) as e:
        conv.load(reader({".miyabi.yml": text}))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_detection_says_what_it_chose() -> None:
    py = conv.load(
        reader({"pyproject.toml": "[project]\nname='x'\n[tool.ruff]\nline-length=100\n[tool.pytest.ini_options]\n"})
    )
    assert [(s.stage, s.command) for s in py.steps] == [("lint", "ruff check ."), ("test", "python -m pytest -q")]
    assert py.source == "detected" and py.chosen == (
        "no .miyabi.yml; chose lint: ruff check . (from ruff in pyproject.toml)",
        "no .miyabi.yml; chose test: python -m pytest -q (from pytest in pyproject.toml)",
        "no .miyabi.yml; chose build: none found",
    )
    node = conv.load(
        reader(
            {
                "package.json": json.dumps({"scripts": {"build": "tsc", "test": "vitest"}}),
                "package-lock.json": "{}",
                "Makefile": "lint:\n\teslint .\nX := 1\n",
            }
        )
    )
    assert [(s.stage, s.command) for s in node.steps] == [
        ("setup", "npm ci"),
        ("build", "npm run build"),
        ("lint", "make lint"),
        ("test", "npm test"),
    ]
    go = conv.load(reader({"go.mod": "module x\n"}))
    assert [s.command for s in go.checks] == ["go build ./...", "go vet ./...", "go test ./..."]
    rust = conv.load(reader({"Cargo.toml": "[package]\n"}))
    assert [s.command for s in rust.checks] == ["cargo build", "cargo clippy -- -D warnings", "cargo test"]
    none = conv.load(reader({}))
    assert none.steps == () and "no .miyabi.yml; chose test: none found" in none.chosen


def task(number: int | None, title: str, id_: int = 12) -> Task:
    return Task(
        id=id_,
        source="github" if number else "local",
        repo="acme/w" if number else None,
        number=number,
        url=None,
        title=title,
        body="",
        labels=(),
        priority="normal",
        state=TaskState.QUEUED,
        agent=None,
        attempts=0,
        created=0.0,
        updated=0.0,
    )


def test_branches_and_instance_names() -> None:
    assert slug("Fix the crash on start (again!)") == "fix-the-crash-on-start-again"
    assert slug("日本語") == "task"
    assert branch_for(task(42, "Fix the crash")) == "miyabi/42-fix-the-crash"
    assert branch_for(task(None, "Local thing")) == "miyabi/12-local-thing"
    assert instance_name("coder", task(42, "x"), set()) == "coder-42"
    assert instance_name("coder", task(42, "x"), {"coder-42", "coder-42-2"}) == "coder-42-3"


# -- deploy:, serve:, health:, rollback:


def test_the_deploy_keys_give_commands_a_service_its_health_check_and_rollback() -> None:
    c = conv.parse(
        "test: [pytest]\ntimeout: 2m\ndeploy: {run: [make build, make install], timeout: 10m}\n"
        'serve: "python -m http.server 8080"\n'
        "health: {url: 'http://127.0.0.1:8080/', status: 204, timeout: 45s}\nrollback: true\n",
        ".miyabi.yml",
    )
    assert [(s.stage, s.command, s.timeout) for s in c.stage(conv.DEPLOY)] == [
        ("deploy", "make build", 600.0),
        ("deploy", "make install", 600.0),
    ]
    assert [s.command for s in c.checks] == ["pytest"]  # the verify gate never runs the deploy
    assert c.serve == "python -m http.server 8080"
    assert c.health == conv.Health(url="http://127.0.0.1:8080/", status=204, timeout=45.0)
    assert c.health.describe() == "GET http://127.0.0.1:8080/ → 204"
    assert c.rollback is True and c.deploys


def test_a_health_command_and_the_defaults() -> None:
    c = conv.parse("deploy: ./deploy.sh\nhealth: {run: curl -fsS localhost:9/}\n", ".miyabi.yml")
    assert [s.timeout for s in c.stage("deploy")] == [conv.defaults.CHECK_TIMEOUT]
    assert c.health == conv.Health(run="curl -fsS localhost:9/", timeout=conv.defaults.HEALTH_START_TIMEOUT)
    assert (c.serve, c.rollback) == (None, False)
    assert not conv.parse("test: [pytest]\n", ".miyabi.yml").deploys
    assert conv.Health.parse("http://x/", "acceptance[0]") == conv.Health(url="http://x/")
    assert conv.Health.parse("make smoke", "acceptance[0]") == conv.Health(run="make smoke")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("serve: [a, b]\n", ".miyabi.yml: serve must be one shell command"),
        ("serve: ''\n", ".miyabi.yml: serve must be one shell command"),
        ("rollback: yes please\n", ".miyabi.yml: rollback 'yes please' must be true or false"),
        ("health: {url: ftp://x/}\n", ".miyabi.yml: health.url 'ftp://x/' must be an http:// or https:// URL"),
        ("health: {url: 'http://x/', run: ls}\n", ".miyabi.yml: health needs exactly one of url:"),
        ("health: {status: 200}\n", ".miyabi.yml: health needs exactly one of url:"),
        ("health: {url: 'http://x/', status: 999}\n", ".miyabi.yml: health.status 999 must be an HTTP status"),
        ("health: {run: ls, status: 200}\n", ".miyabi.yml: health.status goes with url:"),
        ("health: {url: 'http://x/', every: 5s}\n", ".miyabi.yml: health: unknown key 'every'"),
        ("health: {url: 'http://x/', timeout: soon}\n", ".miyabi.yml: health.timeout 'soon' must be a duration"),
        ("health: [1]\n", ".miyabi.yml: health must be {url: http://…, status: 200} or {run: command}"),
        ("deploy: {run: [a], when: always}\n", ".miyabi.yml: deploy: unknown key 'when'"),
    ],
)
def test_a_malformed_deploy_key_is_one_line_naming_it(text: str, says: str) -> None:
    with pytest.raises(conv.ConventionError) as e:
        conv.parse(text, ".miyabi.yml")
    assert str(e.value).startswith(says), str(e.value)
    assert "\n" not in str(e.value)
