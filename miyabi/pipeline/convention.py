"""A repository's own conventions: how to set up a worktree and check a change.

They come from ``.miyabi.yml`` at the repository's root, read from the base branch
(so an agent cannot weaken the checks its own change is judged by)::

    setup: [npm ci]                  # run in a fresh worktree before the agent starts
    build: [npm run build]
    lint:  {run: [npm run lint], timeout: 5m}
    test:  {run: [npm test], timeout: 20m}
    timeout: 30m                     # for lists without their own
    base_branch: main
    max_rounds: 3
    protected: [migrations/**, .github/**]   # paths the agent must not change
    deploy: {run: [npm ci, npm run build], timeout: 10m}   # after a story's tasks landed
    serve: "node server.js --port 8080"                    # kept running in tmux window serve-<repo>
    health: {url: "http://127.0.0.1:8080/", status: 200, timeout: 30s}   # or {run: "curl -f …"}
    rollback: true                   # a failing service: deploy the last commit that passed first

Without the file they are detected from what the repository holds (pyproject.toml
with pytest or ruff, package.json scripts, Makefile targets, go.mod, Cargo.toml), and
:attr:`Convention.chosen` says what was chosen and why. The idea of a per-repository
file that tells automation how to build and test is that of CI configuration files
(``.gitlab-ci.yml``, GitHub Actions workflows), reduced to four stages.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from miyabi import defaults
from miyabi.config.settings import parse_duration
from miyabi.errors import MiyabiError

FILE = ".miyabi.yml"
STAGES = ("setup", "build", "lint", "test")
CHECKS = ("build", "lint", "test")
"""The stages the verify gate runs, in order (``setup`` runs once, in a new worktree)."""
DEPLOY = "deploy"
"""The stage a story's deploy runs (:mod:`miyabi.pipeline.deploy`), after its tasks landed."""
KEYS = (*STAGES, "timeout", "base_branch", "max_rounds", "protected", DEPLOY, "serve", "health", "rollback")
STAGE_KEYS = ("run", "timeout")
CHECK_KEYS = ("url", "status", "run", "timeout")


class ConventionError(MiyabiError):
    """``.miyabi.yml`` is malformed: one line naming the file, the key and the fix."""


@dataclass(frozen=True)
class Step:
    """One command of a stage.

    Attributes:
        stage: ``setup``, ``build``, ``lint`` or ``test``.
        command: a shell command line, run in the worktree.
        timeout: seconds it may run before its process group is killed.
    """

    stage: str
    command: str
    timeout: float


@dataclass(frozen=True)
class Health:
    """One check of a running service: an HTTP GET of ``url`` that must answer
    ``status``, or a shell command ``run`` that must exit 0 (in the deploy checkout).
    ``.miyabi.yml``'s ``health:`` is one; a task spec's ``acceptance`` is a list of them.

    Attributes:
        url: the URL to GET (``http://`` or ``https://``), or None for a command.
        status: the HTTP status expected (default 200).
        run: the shell command, or None for a URL.
        timeout: seconds the service may take to pass after it (re)started (a deploy
            waits that long; ``health: {timeout: 30s}``).
    """

    url: str | None = None
    status: int = 200
    run: str | None = None
    timeout: float = defaults.HEALTH_START_TIMEOUT

    def describe(self) -> str:
        """``GET http://127.0.0.1:8080/ → 200`` or ``run: curl -f …``."""
        return f"GET {self.url} → {self.status}" if self.url is not None else f"run: {self.run}"

    @classmethod
    def parse(cls, spec: Any, where: str) -> Health:
        """A check from ``{url, status, timeout}`` or ``{run, timeout}`` (a bare string is
        a URL when it starts with ``http``, else a command).

        Raises:
            ConventionError: anything else (the message names ``where`` and the fix).
        """
        if isinstance(spec, str):
            spec = {"url": spec} if spec.startswith(("http://", "https://")) else {"run": spec}
        if not isinstance(spec, dict):
            raise ConventionError(f"{where} must be {{url: http://…, status: 200}} or {{run: command}}")
        unknown = [str(k) for k in spec if k not in CHECK_KEYS]
        if unknown:
            raise ConventionError(f"{where}: unknown key {unknown[0]!r}; a check has {', '.join(CHECK_KEYS)}")
        url, run = spec.get("url"), spec.get("run")
        if (url is None) == (run is None):
            raise ConventionError(f"{where} needs exactly one of url: (an HTTP check) or run: (a command)")
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise ConventionError(f"{where}.url {url!r} must be an http:// or https:// URL")
        if run is not None and (not isinstance(run, str) or not run.strip()):
            raise ConventionError(f"{where}.run must be a shell command")
        status = spec.get("status", 200)
        if type(status) is not int or not 100 <= status <= 599:
            raise ConventionError(f"{where}.status {status!r} must be an HTTP status such as 200")
        if run is not None and "status" in spec:
            raise ConventionError(f"{where}.status goes with url:; a run: check passes when it exits 0")
        timeout = _duration(spec["timeout"], f"{where}.timeout") if "timeout" in spec else defaults.HEALTH_START_TIMEOUT
        return cls(url, status, run.strip() if isinstance(run, str) else None, timeout)


@dataclass(frozen=True)
class Convention:
    """How one repository is set up and checked.

    Attributes:
        steps: every command, stage by stage (:data:`STAGES` order).
        base_branch: the branch work starts from (None: the pool's, else the repo's current).
        max_rounds: verify rounds a task gets before it needs a person.
        protected: glob patterns (``fnmatch``, ``**`` for any depth) of paths the agent
            must not change; ``.miyabi.yml`` itself is always protected.
        chosen: one line per choice made without the file (empty when read from it).
        source: ``.miyabi.yml`` or ``detected``.
        serve: the long-running command a deploy starts (and the monitor keeps running),
            or None.
        health: the check of the deployed service, or None.
        rollback: a service failing its health check is first deployed again at the
            last commit that passed it.
    """

    steps: tuple[Step, ...] = ()
    base_branch: str | None = None
    max_rounds: int = defaults.VERIFY_MAX_ROUNDS
    protected: tuple[str, ...] = ()
    chosen: tuple[str, ...] = field(default=())
    source: str = FILE
    serve: str | None = None
    health: Health | None = None
    rollback: bool = False

    @property
    def deploys(self) -> bool:
        """Whether the file says anything about deploying (``deploy:``, ``serve:`` or ``health:``)."""
        return bool(self.stage(DEPLOY)) or self.serve is not None or self.health is not None

    def stage(self, name: str) -> list[Step]:
        return [s for s in self.steps if s.stage == name]

    @property
    def checks(self) -> list[Step]:
        """The verify gate's commands: build, lint, test."""
        return [s for s in self.steps if s.stage in CHECKS]

    def violations(self, changed: Sequence[str]) -> list[str]:
        """The paths of ``changed`` (relative, ``/``-separated) the agent must not touch."""
        pats = (FILE, *self.protected)
        return [p for p in changed if any(_glob(p, pat) for pat in pats)]

    def describe(self) -> list[str]:
        """One line per stage: ``test: pytest -q (timeout 30m)``, then the choices."""
        lines = [f"{s.stage}: {s.command} (timeout {s.timeout:g}s)" for s in self.steps]
        return lines + list(self.chosen)


def _glob(path: str, pattern: str) -> bool:
    """fnmatch with ``dir/**`` matching everything under ``dir``."""
    if pattern.endswith("/**"):
        base = pattern[:-3]
        return path == base or path.startswith(base + "/") or fnmatch.fnmatchcase(path, pattern[:-1] + "*")
    return fnmatch.fnmatchcase(path, pattern)


def parse(text: str, origin: str) -> Convention:
    """A convention from the text of ``.miyabi.yml``.

    Raises:
        ConventionError: YAML that does not parse, an unknown key, or a bad value
            (the message names ``origin``, the key and what to write).
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConventionError(
            f"{origin}:{where} is not valid YAML ({getattr(e, 'problem', None) or e}); fix it"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConventionError(f"{origin}: must be a mapping of {', '.join(KEYS)}")
    unknown = [str(k) for k in data if k not in KEYS]
    if unknown:
        raise ConventionError(f"{origin}: unknown key {unknown[0]!r}; the keys are {', '.join(KEYS)}")
    timeout = defaults.CHECK_TIMEOUT
    if "timeout" in data:
        timeout = _duration(data["timeout"], f"{origin}: timeout")
    steps: list[Step] = []
    for stage in STAGES:
        if stage in data:
            steps += _stage(stage, data[stage], timeout, origin)
    base = data.get("base_branch")
    if base is not None and (not isinstance(base, str) or not base.strip() or base.startswith("-")):
        raise ConventionError(f"{origin}: base_branch {base!r} must be a branch name such as main")
    rounds = data.get("max_rounds", defaults.VERIFY_MAX_ROUNDS)
    if type(rounds) is not int or not 1 <= rounds <= 20:
        raise ConventionError(f"{origin}: max_rounds {rounds!r} must be a whole number from 1 to 20")
    protected = data.get("protected", [])
    if not isinstance(protected, list) or not all(isinstance(p, str) and p.strip() for p in protected):
        raise ConventionError(f"{origin}: protected must be a list of paths or globs such as migrations/**")
    found = Convention(
        tuple(steps), base, rounds, tuple(p.strip().strip("/") if not p.endswith("/**") else p for p in protected)
    )
    return _with_deploy(found, data, timeout, origin)


def _with_deploy(found: Convention, data: dict[Any, Any], timeout: float, origin: str) -> Convention:
    """``found`` with the file's ``deploy:``, ``serve:``, ``health:`` and ``rollback:``."""
    steps = found.steps + tuple(_stage(DEPLOY, data[DEPLOY], timeout, origin) if DEPLOY in data else ())
    serve = data.get("serve")
    if serve is not None and (not isinstance(serve, str) or not serve.strip()):
        raise ConventionError(f"{origin}: serve must be one shell command that keeps running, such as ./server")
    health = Health.parse(data["health"], f"{origin}: health") if data.get("health") is not None else None
    rollback = data.get("rollback", False)
    if not isinstance(rollback, bool):
        raise ConventionError(f"{origin}: rollback {rollback!r} must be true or false")
    return replace(
        found, steps=steps, serve=serve.strip() if serve is not None else None, health=health, rollback=rollback
    )


def _duration(value: Any, where: str) -> float:
    seconds = parse_duration(value)
    if seconds is None or seconds <= 0:
        raise ConventionError(f"{where} {value!r} must be a duration such as 90s, 10m or 1h")
    return seconds


def _stage(stage: str, spec: Any, timeout: float, origin: str) -> list[Step]:
    """``[cmd, …]``, one command as text, or ``{run: [cmd, …], timeout: 10m}``."""
    where = f"{origin}: {stage}"
    if isinstance(spec, dict):
        unknown = [str(k) for k in spec if k not in STAGE_KEYS]
        if unknown:
            raise ConventionError(f"{where}: unknown key {unknown[0]!r}; a stage has run: [commands] and timeout:")
        if "timeout" in spec:
            timeout = _duration(spec["timeout"], f"{where}.timeout")
        spec = spec.get("run", [])
    if isinstance(spec, str):
        spec = [spec]
    if not isinstance(spec, list) or not all(isinstance(c, str) and c.strip() for c in spec):
        raise ConventionError(f"{where} must be a list of shell commands (or {{run: [...], timeout: 10m}})")
    return [Step(stage, c.strip(), timeout) for c in spec]


Reader = Callable[[str], str | None]
"""Reads a file of the repository at the base branch by its relative path (None: absent)."""

MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", re.MULTILINE)


Choose = Callable[[str, str, str], None]
"""``choose(stage, command, why)``: take ``command`` for ``stage`` unless one was taken."""

BUILT_IN = (
    ("go.mod", (("build", "go build ./..."), ("lint", "go vet ./..."), ("test", "go test ./..."))),
    ("Cargo.toml", (("build", "cargo build"), ("lint", "cargo clippy -- -D warnings"), ("test", "cargo test"))),
)
"""A file whose presence alone says how to build, lint and test."""


def detect(read: Reader) -> Convention:
    """The conventions of a repository without ``.miyabi.yml``, from its files (first
    match per stage: package.json scripts, a Makefile's targets, pyproject.toml, go.mod,
    Cargo.toml). Every choice is one line in :attr:`Convention.chosen`; a stage
    nothing provides is left out, and said so."""
    t = defaults.CHECK_TIMEOUT
    chosen: dict[str, tuple[str, str]] = {}

    def choose(stage: str, command: str, why: str) -> None:
        chosen.setdefault(stage, (command, why))

    _from_package_json(read, choose)
    _from_makefile(read, choose)
    _from_pyproject(read, choose)
    for name, commands in BUILT_IN:
        if read(name) is not None:
            for stage, command in commands:
                choose(stage, command, name)
    steps = tuple(Step(s, chosen[s][0], t) for s in STAGES if s in chosen)
    lines = [f"{s}: {chosen[s][0]} (from {chosen[s][1]})" for s in STAGES if s in chosen]
    lines += [f"{s}: none found" for s in CHECKS if s not in chosen]
    return Convention(steps, chosen=tuple(f"no {FILE}; chose " + line for line in lines), source="detected")


def _from_package_json(read: Reader, choose: Choose) -> None:
    pkg = read("package.json")
    if pkg is None:
        return
    try:
        scripts = json.loads(pkg).get("scripts") or {}
    except (ValueError, AttributeError):
        scripts = {}
    lock = read("package-lock.json") is not None
    choose("setup", "npm ci" if lock else "npm install", "package.json" + (" and package-lock.json" if lock else ""))
    for stage in CHECKS:
        if isinstance(scripts, dict) and stage in scripts:
            choose(stage, f"npm run {stage}" if stage != "test" else "npm test", f"package.json's {stage} script")


def _from_makefile(read: Reader, choose: Choose) -> None:
    make = read("Makefile")
    if make is None:
        return
    targets = set(MAKE_TARGET.findall(make))
    for stage in CHECKS:
        if stage in targets:
            choose(stage, f"make {stage}", f"the Makefile's {stage} target")


def _from_pyproject(read: Reader, choose: Choose) -> None:
    py = read("pyproject.toml")
    if py is None:
        return
    try:
        doc = tomllib.loads(py)
    except tomllib.TOMLDecodeError:
        doc = {}
    tool = doc.get("tool", {}) if isinstance(doc.get("tool"), dict) else {}
    text = py.lower()
    if "ruff" in tool or "ruff" in text:
        choose("lint", "ruff check .", "ruff in pyproject.toml")
    if "pytest" in tool or "pytest" in text:
        choose("test", "python -m pytest -q", "pytest in pyproject.toml")


def load(read: Reader) -> Convention:
    """``.miyabi.yml`` when the repository has one at its base branch, else :func:`detect`.

    Raises:
        ConventionError: the file is malformed.
    """
    text = read(FILE)
    return parse(text, FILE) if text is not None else detect(read)
