"""Task specs (``miyabi spec add FILE.yaml``) and what a task keeps of its spec.

A task spec is a YAML mapping (``id, title, description, owner, priority, inputs,
outputs, constraints, tests, acceptance, artifacts``) checked against the JSON Schema
miyabi ships (``task-spec.schema.json`` beside this module) by ``jsonschema``; each
defect is one line ``FILE:LINE: key: what is wrong``, the line being the YAML node's
(PyYAML's composed nodes carry their marks).

What a task keeps of where it came from is its ``spec`` column, JSON (:func:`facts`):
``{"kind": "speckit", "ref", "feature", "id", "file", "repo", "path", "line", …}``
for a spec-kit line, ``{"kind": "task", "ref", "file", …the spec's keys…}`` for a
task spec. The readers other parts use: :func:`task_acceptance` (checks after
deploy), :func:`task_tests` (extra verify-gate commands) and :func:`speckit_line`
(where a task's checkbox is).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from miyabi.errors import MiyabiError, display_path
from miyabi.work.model import Task

if TYPE_CHECKING:
    import jsonschema

SCHEMA_FILE = "task-spec.schema.json"
"""The JSON Schema of a task spec, shipped in this package."""

KIND_SPECKIT = "speckit"
KIND_TASK = "task"


class SpecError(MiyabiError):
    """A task spec (or its file) is not valid: one line per defect, each
    ``FILE:LINE: key: what is wrong`` (exit code 1)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def lines(self) -> list[str]:
        return list(self.problems)


@cache
def schema() -> dict[str, Any]:
    """The shipped JSON Schema (read once)."""
    text = resources.files("miyabi.work").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _line_of(node: yaml.Node | None, path: Sequence[str | int]) -> int:
    """The line (1-based) of the node at ``path`` in a composed YAML document: a
    mapping's key line for a key, an item's line for an item; where the path ends
    early (a key that is missing), the line of the deepest node found."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if str(k.value) == str(part)), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _key(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(the file)"


def _message(err: jsonschema.ValidationError) -> tuple[list[str | int], str]:
    """Where an error is (its key path) and what to say, in miyabi's words where
    jsonschema's would puzzle."""
    path: list[str | int] = list(err.absolute_path)
    props = schema()["properties"]
    if err.validator == "additionalProperties" and isinstance(err.instance, dict) and not path:
        extra = sorted(str(k) for k in err.instance if k not in props)
        return [extra[0]] if extra else path, f"is not a task spec key; use {', '.join(props)}"
    if err.validator == "required" and isinstance(err.validator_value, list) and isinstance(err.instance, dict):
        missing = [k for k in err.validator_value if k not in err.instance]
        return path, f"{', '.join(missing)} is required"
    if err.validator == "oneOf" and path and path[0] == "acceptance":
        return path, 'expected {url: http://…, status: 200} or {run: "a command"}'
    if err.validator == "pattern" and path and path[0] == "id":
        return path, f"{err.instance!r} is not a valid id; use letters, digits, '.', '_' and '-' (up to 100)"
    return path, err.message


@dataclass(frozen=True)
class TaskSpec:
    """A valid task spec.

    Attributes:
        file: where it was read.
        data: its keys, as the schema allows them.
    """

    file: Path
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def title(self) -> str:
        return str(self.data["title"]).strip()

    @property
    def owner(self) -> str | None:
        owner = self.data.get("owner")
        return str(owner) if owner else None

    @property
    def priority(self) -> str:
        return str(self.data.get("priority", "normal"))

    def items(self, key: str) -> list[str]:
        return [str(v) for v in self.data.get(key, [])]

    def body(self, artifacts: Path | None) -> str:
        """The task's text for its agent: the description, then a section per key."""
        parts: list[str] = []
        if str(self.data.get("description", "")).strip():
            parts += [str(self.data["description"]).strip(), ""]
        for key, head in (("inputs", "Inputs"), ("outputs", "Outputs"), ("constraints", "Constraints")):
            if self.items(key):
                parts += [f"{head}:", *(f"- {v}" for v in self.items(key)), ""]
        if self.items("tests"):
            parts += [
                "Tests (the verify gate runs them after the repository's checks):",
                *(f"- `{v}`" for v in self.items("tests")),
                "",
            ]
        if self.data.get("acceptance"):
            parts += ["Acceptance (checked after deploy):", *(f"- {_check_text(c)}" for c in self.data["acceptance"])]
            parts += [""]
        if artifacts is not None:
            wanted = ", ".join(self.items("artifacts"))
            parts += [f"Artifacts: put {wanted} in {artifacts}", ""]
        parts.append(f"(task spec {self.id}, from {self.file})")
        return "\n".join(parts)


def _check_text(check: dict[str, Any]) -> str:
    if "url" in check:
        return f"GET {check['url']} answers {check.get('status', 200)}"
    return f"`{check['run']}` exits 0"


def read(path: Path) -> TaskSpec:
    """Read and check a task spec file.

    Raises:
        SpecError: the file cannot be read, is not YAML, or breaks the schema (every
            defect, each ``FILE:LINE: key: what is wrong``).
    """
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{shown}: no such file; give the path of a task spec (YAML)"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError([f"{shown}: cannot read the file: {getattr(e, 'strerror', None) or e}"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{shown}:{mark.line + 1}" if mark else shown
        raise SpecError([f"{where}: YAML syntax error: {e.problem or e.context or 'invalid YAML'}"]) from None
    except yaml.YAMLError as e:
        raise SpecError([f"{shown}: YAML error: {e}"]) from None
    if not isinstance(data, dict):
        raise SpecError([f"{shown}:1: (the file): a task spec is a mapping with at least id: and title:"])
    import jsonschema  # here: only `spec add` needs it, not every reader of the store

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (_line_of(node, list(e.absolute_path)), e.message))
    problems = []
    for err in errors:
        at, message = _message(err)
        problems.append(f"{shown}:{_line_of(node, at)}: {_key(at)}: {message}")
    if problems:
        raise SpecError(problems)
    return TaskSpec(path.resolve(), data)


# -- what a task keeps of its spec


def facts(task: Task) -> dict[str, Any] | None:
    """The task's ``spec`` column, parsed (None: it has none, or it is not JSON)."""
    if not task.spec:
        return None
    try:
        data = json.loads(task.spec)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def task_acceptance(task: Task) -> list[dict[str, Any]]:
    """The checks after deploy a task spec asks for: each ``{"url": …, "status": N}``
    (status 200 when the spec gave none) or ``{"run": "command"}``; [] for any other
    task."""
    data = facts(task)
    if data is None or data.get("kind") != KIND_TASK:
        return []
    out: list[dict[str, Any]] = []
    for c in data.get("acceptance", []):
        if isinstance(c, dict) and "url" in c:
            out.append({"url": str(c["url"]), "status": int(c.get("status", 200))})
        elif isinstance(c, dict) and "run" in c:
            out.append({"run": str(c["run"])})
    return out


def task_tests(task: Task) -> list[str]:
    """The shell commands a task spec adds to its verify gate ([] for any other task)."""
    data = facts(task)
    if data is None or data.get("kind") != KIND_TASK:
        return []
    return [str(c) for c in data.get("tests", [])]


@dataclass(frozen=True)
class Checkbox:
    """Where a spec-kit task's box is.

    Attributes:
        id: the task's id in the file (``T012``).
        file: the file's absolute path.
        repo: the git repository the file was in when it was imported (None: none).
        path: the file's path inside ``repo`` (None: not in one).
    """

    id: str
    file: Path
    repo: Path | None
    path: str | None


def speckit_line(task: Task) -> Checkbox | None:
    """Where the task's checkbox is, for a task imported from a spec-kit list."""
    data = facts(task)
    if data is None or data.get("kind") != KIND_SPECKIT:
        return None
    repo = data.get("repo")
    return Checkbox(str(data["id"]), Path(data["file"]), Path(repo) if repo else None, data.get("path"))
