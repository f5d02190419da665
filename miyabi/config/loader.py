"""Load a layout file: read → expand shorthands → fill defaults → validate.

Each stage is a small function that can be tested alone (the pipeline shape follows
tmuxp's workspace loader). :func:`load` runs them all and returns a frozen
:class:`~miyabi.config.model.Layout`, or raises :class:`~miyabi.errors.LayoutError`
with every problem found, each naming the file, line and key path. What the layout
needs of this machine (commands on PATH, directories) is checked separately, before
anything is created (:mod:`miyabi.config.preflight`).

One defect never hides another, nor invents one: each agent and each route is
checked field by field whatever else is wrong, and a route that names an agent with
a defect of its own is not reported as naming an unknown agent.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from miyabi import defaults
from miyabi.agents.profiles import BUILTIN, OVERRIDABLE, Profile
from miyabi.config.model import Agent, Layout, PipelineMode, Pool, frozen_map
from miyabi.config.settings import (
    HOST_RE,
    NAME_RE,
    WATCHDOG_KEYS,
    AutoAnswer,
    BusSettings,
    GitHubSettings,
    LogSettings,
    OnRestart,
    Receiver,
    ReceiverKind,
    ReportSettings,
    Route,
    TaskSettings,
    WatchdogSettings,
    WebSettings,
    parse_duration,
    parse_size,
    redact,
)
from miyabi.errors import LayoutError, Problem
from miyabi.events import NoticeKind

Key = tuple[str | int, ...]

TOP_KEYS = (
    "session",
    "description",
    "per_window",
    "pane_size",
    "profile",
    "cwd",
    "env",
    "profiles",
    "agents",
    "delivery",
    "watchdog",
    "routes",
    "github",
    "tasks",
    "approvals",
    "pools",
    "report",
    "logs",
    "web",
    "notify",
    "bus",
    "human_hold",
)
APPROVALS_KEYS = ("auto",)
AUTO_KEYS = ("answer", "agents", "tool", "match")
TASKS_KEYS = ("on_agent_restart", "max_attempts", "timeout", "label_timeouts")
GITHUB_KEYS = ("repo", "api_url", "token_env", "todo_label", "poll_interval", "allowed_authors", "fix_trigger")
DELIVERY_KEYS = ("max_body",)
REPORT_KEYS = ("every", "issue", "since")
LOGS_KEYS = ("max_bytes", "keep")
WEB_KEYS = ("host", "port", "read_only")
BUS_KEYS = ("url", "host", "password_env", "lease", "namespace")
NOTIFY_KEYS = (
    "kind",
    "url",
    "url_env",
    "events",
    "rate",
    "max_attempts",
    "retry_after",
    "timeout",
    *(k.value for k in ReceiverKind),
)
NOTICE_KINDS = tuple(str(k) for k in NoticeKind)
AGENT_KEYS = ("name", "profile", "cwd", "env", "title", "watchdog", "wip", "human_hold", *OVERRIDABLE)
ROUTE_KEYS = ("label", "title", "default", "agent")
POOL_KEYS = ("name", "profile", "max", "repo", "base_branch", "remote", "pipeline", "env", "watchdog", *OVERRIDABLE)
PROFILE_KEYS = ("extends", "description", *OVERRIDABLE)

SESSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ANSWER_KEY_RE = re.compile(r"^(?:.|Enter|Escape|Tab|Space|BSpace|Up|Down|Left|Right|[CM]-[a-zA-Z])$")
"""Keys ``approve_keys`` / ``deny_keys`` may name: one character, or a tmux key name."""
SUBMIT_KEY_RE = re.compile(r"^(Enter|Tab|KPEnter|Space|M-Enter|C-M-[a-z]|[CM]-[a-zA-Z])$")
RESERVED_ENV = ("MIYABI_AGENT", "MIYABI_HOME", "MIYABI_SOCKET", "MIYABI_TASK")


def key_path(key: Key) -> str:
    """Render a key tuple as a path: ``("agents", 2, "name")`` → ``agents[2].name``."""
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Document:
    """A layout file as plain data, with the line of every key and item.

    Attributes:
        path: the file.
        data: the parsed YAML (dicts, lists, scalars).
        lines: 1-based line for each key path, as tuples (``("agents", 0, "name")``).
        problems: defects found so far; stages append to it.
        profiles: every profile by name, once resolved (None: failed to resolve).
        agent_env: agent index → its environment with the layout's ``env`` merged in.
        written: agent index → the keys it had in the file, before defaults.
    """

    path: Path
    data: Any
    lines: dict[Key, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    profiles: dict[str, Profile | None] = field(default_factory=dict)
    agent_env: dict[int, dict[str, Any]] = field(default_factory=dict)
    written: dict[int, set[Any]] = field(default_factory=dict)
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    logs: LogSettings = field(default_factory=LogSettings)
    human_hold: float = defaults.HUMAN_HOLD

    def line(self, key: Key) -> int | None:
        """The line of ``key``, else of its nearest parent that has one."""
        k = tuple(key)
        while k:
            if k in self.lines:
                return self.lines[k]
            k = k[:-1]
        return self.lines.get((), None)

    def problem(self, key: Key, message: str) -> None:
        """Record a defect at ``key``."""
        self.problems.append(Problem(self.path, self.line(key), key_path(key), message))

    def fail_if_problems(self) -> None:
        """Raise LayoutError if any defect was recorded."""
        if self.problems:
            raise LayoutError(self.problems)


# ---------------------------------------------------------------- stage 1: read


def read(path: Path) -> Document:
    """Parse ``path`` as YAML, remembering the line of each key.

    Raises:
        LayoutError: the file is missing or unreadable, is not valid YAML, has a
            duplicate key, or is not a mapping.
    """
    path = Path(path)
    shown = path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LayoutError(
            [
                Problem(
                    shown,
                    None,
                    "",
                    "no such file; give the path of a layout, or run `miyabi layouts` to list the shipped ones",
                )
            ]
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise LayoutError([Problem(shown, None, "", f"cannot read the file: {reason}")]) from None
    doc = Document(path=shown, data=None)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.data = _construct(loader, node, (), doc)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = e.problem or e.context or "invalid YAML"
        col = f", column {mark.column + 1}" if mark else ""
        raise LayoutError(
            [Problem(shown, line, "", f"YAML syntax error: {what}{col}; fix the syntax at this line")]
        ) from None
    except yaml.YAMLError as e:
        raise LayoutError([Problem(shown, None, "", f"YAML error: {e}")]) from None
    except RecursionError:
        raise LayoutError(
            [Problem(shown, None, "", "an alias refers to its own anchor (*x inside &x); remove the loop")]
        ) from None
    finally:
        loader.dispose()
    if doc.data is None:
        doc.problem(
            (), "the file is empty; a layout needs at least `agents:` (see `miyabi init` or layouts/default.yaml)"
        )
    elif not isinstance(doc.data, dict):
        kind = type(doc.data).__name__
        doc.problem((), f"a layout must be a mapping with keys such as `session:` and `agents:`, not a {kind}")
    doc.fail_if_problems()
    return doc


def _construct(loader: yaml.SafeLoader, node: yaml.Node, key: Key, doc: Document) -> Any:
    doc.lines.setdefault(key, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            k = loader.construct_object(knode, deep=True)
            if not isinstance(k, (str, int, float, bool)) or k is None:
                doc.problems.append(
                    Problem(doc.path, knode.start_mark.line + 1, key_path(key), "keys must be plain words")
                )
                continue
            sub = (*key, str(k))
            if k in out:
                doc.problems.append(
                    Problem(
                        doc.path,
                        knode.start_mark.line + 1,
                        key_path(sub),
                        "duplicate key; each key may appear once (YAML keeps only the last, so remove one)",
                    )
                )
            doc.lines[sub] = knode.start_mark.line + 1
            out[k] = _construct(loader, vnode, sub, doc)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, (*key, i), doc) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


# ---------------------------------------------------------------- stage 2: expand


def expand(doc: Document) -> Document:
    """Expand shorthands in place.

    - an agent given as a bare string is ``{name: <string>}``;
    - an agent given as ``{kaede: claude}`` (one key that is not a field) is
      ``{name: kaede, profile: claude}``;
    - a ``command`` given as a list of words is one command line (quoted with
      ``shlex.join``), in agents and profiles alike.
    """
    data = doc.data
    agents = data.get("agents")
    if isinstance(agents, list):
        for i, item in enumerate(agents):
            if isinstance(item, str):
                agents[i] = {"name": item}
                doc.lines[("agents", i, "name")] = doc.line(("agents", i)) or 0
            elif isinstance(item, dict) and len(item) == 1:
                ((k, v),) = item.items()
                if isinstance(k, str) and k not in AGENT_KEYS and (isinstance(v, str) or v is None):
                    agents[i] = {"name": str(k), "profile": v} if v else {"name": str(k)}
                    doc.lines[("agents", i, "name")] = doc.line(("agents", i, str(k))) or 0
                    doc.lines[("agents", i, "profile")] = doc.line(("agents", i, str(k))) or 0
            if isinstance(agents[i], dict):
                _join_command(agents[i], ("agents", i), doc)
    profiles = data.get("profiles")
    if isinstance(profiles, dict):
        for name, spec in profiles.items():
            if isinstance(spec, dict):
                _join_command(spec, ("profiles", str(name)), doc)
    return doc


def _join_command(entry: dict[str, Any], key: Key, doc: Document) -> None:
    cmd = entry.get("command")
    if isinstance(cmd, list):
        if cmd and all(isinstance(w, (str, int, float)) for w in cmd):
            entry["command"] = shlex.join(str(w) for w in cmd)
        else:
            doc.problem((*key, "command"), "a command list must hold at least one word, each a string")
            entry.pop("command")


# ---------------------------------------------------------------- stage 3: defaults


def fill_defaults(doc: Document) -> Document:
    """Resolve profiles and give every agent every field.

    Layout ``profiles:`` entries extend a built-in (``extends:``, default: the
    built-in of the same name). Each agent gets its profile's fields, then its own
    overrides; ``profile`` defaults to the layout's ``profile:``, else ``worker``;
    ``env`` merges the layout's ``env:`` under the agent's; ``cwd`` falls back to the
    layout's ``cwd:``; ``title`` to the name. Unknown names are left for
    :func:`validate` to report.
    """
    data = doc.data
    doc.profiles = _resolve_profiles(doc)
    default_profile = data.get("profile", defaults.PROFILE)
    agents = data.get("agents")
    if not isinstance(agents, list):
        return doc
    top_env = data.get("env") if isinstance(data.get("env"), dict) else {}
    for i, a in enumerate(agents):
        if not isinstance(a, dict):
            continue
        doc.written[i] = set(a)
        a.setdefault("profile", default_profile)
        if "cwd" not in a and "cwd" in data:
            a["cwd"] = data["cwd"]
            doc.lines[("agents", i, "cwd")] = doc.line(("cwd",)) or 0
        own_env = a.get("env", {})
        doc.agent_env[i] = {**top_env, **own_env} if isinstance(own_env, dict) else {}
        if isinstance(a.get("name"), str):
            a.setdefault("title", a["name"])
    return doc


def _resolve_profiles(doc: Document) -> dict[str, Profile | None]:
    """Built-in profiles plus the layout's own; None marks one that failed to resolve."""
    out: dict[str, Profile | None] = dict(BUILTIN)
    own = doc.data.get("profiles")
    if own is None:
        return out
    if not isinstance(own, dict):
        doc.problem(("profiles",), "must be a mapping of profile name to its fields")
        return out
    for name, spec in own.items():
        key: Key = ("profiles", str(name))
        if not isinstance(name, str) or not NAME_RE.match(name):
            doc.problem(key, f"{name!r} is not a valid profile name; use lowercase letters, digits, '-' and '_'")
            continue
        if not isinstance(spec, dict):
            doc.problem(key, "must be a mapping of profile fields (for example `extends: claude`)")
            out[name] = None
            continue
        _check_keys(doc, key, spec, PROFILE_KEYS)
        base_name = spec.get("extends", name if name in BUILTIN else "shell")
        base = BUILTIN.get(base_name) if isinstance(base_name, str) else None
        if base is None:
            doc.problem((*key, "extends"), _unknown("profile", base_name, BUILTIN))
            out[name] = None
            continue
        fields = {k: v for k, v in spec.items() if k in OVERRIDABLE or k == "description"}
        checked = _check_profile_fields(doc, key, fields)
        out[name] = base.replace(name=name, **checked)
    return out


# ---------------------------------------------------------------- stage 4: validate


def validate(doc: Document) -> Layout:
    """Check every value and build the frozen Layout.

    Raises:
        LayoutError: with every problem found (unknown or misspelt key, bad or
            duplicate agent name, unknown profile, empty agent list, bad types,
            regexes that do not compile, ...).
    """
    data = doc.data
    _check_keys(doc, (), data, TOP_KEYS)
    session = data.get("session", doc.path.stem if SESSION_RE.match(doc.path.stem) else "miyabi")
    if not isinstance(session, str) or not SESSION_RE.match(session):
        doc.problem(
            ("session",),
            f"{session!r} is not a valid tmux session name; use letters, digits, '-' and '_' (no '.' or ':')",
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        doc.problem(("description",), "must be text")
    per_window = data.get("per_window", defaults.PER_WINDOW)
    if type(per_window) is not int or not 1 <= per_window <= 64:
        doc.problem(("per_window",), f"{per_window!r} must be a whole number from 1 to 64")
    pane_size = data.get("pane_size", [defaults.PANE_WIDTH, defaults.PANE_HEIGHT])
    if not (
        isinstance(pane_size, list)
        and len(pane_size) == 2
        and all(type(n) is int for n in pane_size)
        and pane_size[0] >= 20
        and pane_size[1] >= 5
    ):
        doc.problem(("pane_size",), f"{pane_size!r} must be [columns, rows] with at least [20, 5]")
    profile_default = data.get("profile", defaults.PROFILE)
    profiles = doc.profiles
    if not isinstance(profile_default, str) or profile_default not in profiles:
        doc.problem(("profile",), _unknown("profile", profile_default, profiles))
    if "env" in data and not _check_env(doc, ("env",), data["env"]):
        data["env"] = {}
    if "cwd" in data and not isinstance(data["cwd"], str):
        doc.problem(("cwd",), "must be a directory path")

    max_body = _validate_delivery(doc, data.get("delivery", {}))
    doc.watchdog = WatchdogSettings().merged(_validate_watchdog(doc, ("watchdog",), data.get("watchdog", {})))
    doc.logs = _validate_logs(doc, data.get("logs", {}))
    doc.human_hold = _validate_hold(doc, ("human_hold",), data.get("human_hold", defaults.HUMAN_HOLD))
    agents_raw = data.get("agents")
    agents: list[Agent] = []
    if "agents" not in data:
        doc.problem((), "no `agents:` list; a layout needs at least one agent (for example `agents: [kaede]`)")
    elif not isinstance(agents_raw, list):
        doc.problem(("agents",), "must be a list of agents (each a name or a mapping with `name:`)")
    elif not agents_raw:
        doc.problem(("agents",), "the agent list is empty; add at least one agent (for example `- name: kaede`)")
    else:
        seen: dict[str, int] = {}
        for i, raw in enumerate(agents_raw):
            agent = _validate_agent(doc, i, raw, profiles, seen)
            if agent is not None:
                agents.append(agent)
    # Routes may name any agent the file declares: one whose own fields are wrong is
    # reported there, not a second time as unknown here.
    declared = (
        [a["name"] for a in agents_raw if isinstance(a, dict) and isinstance(a.get("name"), str)]
        if isinstance(agents_raw, list)
        else []
    )
    github = _validate_github(doc, data["github"]) if "github" in data else None
    pools = _validate_pools(doc, data.get("pools", []), profiles, declared, github is not None)
    pools_raw = data.get("pools") if isinstance(data.get("pools"), list) else []
    declared_pools = [p["name"] for p in pools_raw if isinstance(p, dict) and isinstance(p.get("name"), str)]
    bus = _validate_bus(doc, data["bus"]) if data.get("bus") not in (None, False) else None
    routes = _validate_routes(
        doc, data.get("routes", []), [*declared, *declared_pools], shared=bus is not None or "bus" in data
    )
    tasks = _validate_tasks(doc, data.get("tasks", {}))
    auto = _validate_approvals(doc, data.get("approvals", {}), declared)
    report = _validate_report(doc, data["report"], github is not None) if "report" in data else None
    web = _validate_web(doc, data["web"]) if data.get("web") not in (None, False) else None
    notify = _validate_notify(doc, data.get("notify", []))
    doc.fail_if_problems()
    return Layout(
        path=doc.path.resolve(),
        session=session,
        description=description,
        per_window=per_window,
        pane_size=(pane_size[0], pane_size[1]),
        agents=tuple(agents),
        max_body=max_body,
        routes=tuple(routes),
        github=github,
        tasks=tasks,
        auto_answers=tuple(auto),
        pools=tuple(pools),
        report=report,
        logs=doc.logs,
        web=web,
        notify=tuple(notify),
        bus=bus,
        human_hold=doc.human_hold,
        profiles=frozen_map({k: v for k, v in profiles.items() if v is not None}),
    )


def _validate_pools(
    doc: Document, spec: Any, profiles: Mapping[str, Profile | None], agents: Sequence[str], has_github: bool
) -> list[Pool]:
    """``pools:``: a list of ``{name, profile, repo, max, base_branch, remote, pipeline,
    env, watchdog}`` (and the profile fields an agent may override). ``pipeline``
    defaults to ``github`` when the layout has a ``github:`` section, else ``local``."""
    if not isinstance(spec, list):
        doc.problem(("pools",), "must be a list such as `- {name: coder, profile: claude, repo: ~/src/app, max: 4}`")
        return []
    out: list[Pool] = []
    seen: set[str] = set()
    top_env = doc.data.get("env") if isinstance(doc.data.get("env"), dict) else {}
    for i, raw in enumerate(spec):
        key: Key = ("pools", i)
        before = len(doc.problems)
        if not isinstance(raw, dict):
            doc.problem(key, "each pool must be a mapping such as `{name: coder, profile: claude, repo: ~/src/app}`")
            continue
        _check_keys(doc, key, raw, POOL_KEYS)
        name = raw.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 30:
            doc.problem(
                (*key, "name"), f"{name!r} is not a valid pool name; use 1-30 lowercase letters, digits, '-' and '_'"
            )
        elif name in agents or name in seen:
            doc.problem(
                (*key, "name"), f"{name!r} is taken by an agent or another pool; pool and agent names must be unique"
            )
        pname = raw.get("profile", doc.data.get("profile", defaults.PROFILE))
        base = profiles.get(pname) if isinstance(pname, str) else None
        if base is None:
            doc.problem((*key, "profile"), _unknown("profile", pname, profiles))
            base = BUILTIN["shell"]
        overrides = _check_profile_fields(doc, key, {k: v for k, v in raw.items() if k in OVERRIDABLE})
        profile = base.replace(**overrides) if overrides else base
        command = profile.command if profile.command is not None else (os.environ.get("SHELL") or "/bin/sh")
        repo_raw = raw.get("repo")
        repo = Path(".")
        if not isinstance(repo_raw, str) or not repo_raw.strip():
            doc.problem((*key, "repo"), "the pool needs `repo:`, the path of the git repository its instances work on")
        else:
            repo = Path(os.path.expandvars(os.path.expanduser(repo_raw)))
            if not repo.is_absolute():
                repo = doc.path.resolve().parent / repo
        size = raw.get("max", defaults.POOL_MAX)
        if type(size) is not int or not 1 <= size <= 64:
            doc.problem((*key, "max"), f"{size!r} must be a whole number of instances from 1 to 64")
        kw: dict[str, Any] = {}
        for k in ("base_branch", "remote"):
            if k in raw:
                if isinstance(raw[k], str) and raw[k].strip() and not raw[k].startswith("-"):
                    kw[k] = raw[k].strip()
                else:
                    doc.problem((*key, k), "must be a git branch or remote name")
        mode = raw.get("pipeline", "github" if has_github else "local")
        if mode not in tuple(PipelineMode):
            doc.problem(
                (*key, "pipeline"), f"{mode!r} must be github (push and open a pull request) or local (merge locally)"
            )
        elif mode == PipelineMode.GITHUB and not has_github:
            doc.problem(
                (*key, "pipeline"),
                "github needs the layout's `github: {repo: owner/name}` section; add it, or use pipeline: local",
            )
        env: dict[str, Any] = dict(top_env)
        if "env" in raw and _check_env(doc, (*key, "env"), raw["env"]):
            env.update(raw["env"])
        watchdog = doc.watchdog.merged(_validate_watchdog(doc, (*key, "watchdog"), raw.get("watchdog", {})))
        if len(doc.problems) > before or not isinstance(name, str):
            continue
        seen.add(name)
        out.append(
            Pool(
                name=name,
                profile=profile,
                command=command,
                repo=repo,
                max=size,
                pipeline=PipelineMode(mode),
                env=frozen_map({str(k): _env_str(v) for k, v in env.items()}),
                watchdog=watchdog,
                **kw,
            )
        )
    return out


def _validate_delivery(doc: Document, spec: Any) -> int:
    """The ``delivery:`` section: ``max_body`` (bytes, default 1 MiB)."""
    MAX_BODY = defaults.MAX_BODY

    if not isinstance(spec, dict):
        doc.problem(("delivery",), "must be a mapping (for example `delivery: {max_body: 1048576}`)")
        return MAX_BODY
    _check_keys(doc, ("delivery",), spec, DELIVERY_KEYS)
    value = spec.get("max_body", MAX_BODY)
    if type(value) is not int or not 1 <= value <= 64 * 1024 * 1024:
        doc.problem(("delivery", "max_body"), f"{value!r} must be a whole number of bytes from 1 to 67108864")
        return MAX_BODY
    return value


def _validate_logs(doc: Document, spec: Any) -> LogSettings:
    """``logs:``: ``max_bytes`` (a size such as ``10M``, or bytes; 0: never rotate) and
    ``keep`` (rotated files kept, 0 to 100)."""
    key: Key = ("logs",)
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping (for example `logs: {max_bytes: 10M, keep: 5}`)")
        return LogSettings()
    _check_keys(doc, key, spec, LOGS_KEYS)
    kw: dict[str, Any] = {}
    if "max_bytes" in spec:
        size = parse_size(spec["max_bytes"])
        if size is not None and (size == 0 or size >= 1024):
            kw["max_bytes"] = size
        else:
            doc.problem(
                (*key, "max_bytes"),
                f"{spec['max_bytes']!r} must be a size of at least 1K, such as 10M, "
                "512K or 1048576 (bytes), or 0 to never rotate",
            )
    if "keep" in spec:
        keep = spec["keep"]
        if type(keep) is int and 0 <= keep <= 100:
            kw["keep"] = keep
        else:
            doc.problem((*key, "keep"), f"{keep!r} must be a whole number of rotated files from 0 to 100")
    return LogSettings(**kw)


def _validate_web(doc: Document, spec: Any) -> WebSettings | None:
    """``web:``: the dashboard the controller serves; ``{}`` or ``true`` for the defaults,
    ``false`` (or nothing) for none."""
    key: Key = ("web",)
    if spec is True:
        return WebSettings()
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping (for example `web: {port: 8765}`), or true for the defaults")
        return None
    _check_keys(doc, key, spec, WEB_KEYS)
    host = spec.get("host", defaults.WEB_HOST)
    if not isinstance(host, str) or not re.match(r"^[A-Za-z0-9.:\[\]-]+$", host):
        doc.problem((*key, "host"), f"{host!r} must be an address or host name (for example 127.0.0.1)")
    port = spec.get("port", defaults.WEB_PORT)
    if type(port) is not int or not 1 <= port <= 65535:
        doc.problem((*key, "port"), f"{port!r} must be a TCP port from 1 to 65535")
    read_only = spec.get("read_only", False)
    if type(read_only) is not bool:
        doc.problem((*key, "read_only"), f"{read_only!r} must be true or false")
    if not isinstance(host, str) or type(port) is not int or type(read_only) is not bool:
        return None
    return WebSettings(host=host, port=port, read_only=read_only)


def _validate_bus(doc: Document, spec: Any) -> BusSettings | None:
    """``bus:``: the Redis that several hosts share (``{url, host, password_env, lease,
    namespace}``); ``host`` defaults to this machine's name."""
    key: Key = ("bus",)
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping such as `bus: {url: redis://HOST:6379/0}`")
        return None
    _check_keys(doc, key, spec, BUS_KEYS)
    url = spec.get("url")
    ok = True
    if not isinstance(url, str) or not re.match(r"^(redis|rediss|unix)://\S+$", url):
        doc.problem(
            (*key, "url"),
            f"{redact(str(url)) if url is not None else 'nothing'} must be a Redis URL: "
            "redis://HOST:PORT/DB, rediss://… for TLS, or unix:///path/to/redis.sock",
        )
        ok = False
    host = spec.get("host", socket.gethostname().split(".")[0])
    if not isinstance(host, str) or not HOST_RE.match(host):
        doc.problem(
            (*key, "host"), f"{host!r} must be this machine's name on the bus: letters, digits, '.', '_' or '-'"
        )
        ok = False
    env = spec.get("password_env")
    if env is not None and (not isinstance(env, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", env)):
        doc.problem(
            (*key, "password_env"), f"{env!r} must be the name of an environment variable (such as MIYABI_BUS_PASSWORD)"
        )
        ok = False
    lease = parse_duration(spec.get("lease", defaults.BUS_LEASE))
    if lease is None or not 1 <= lease <= 86400:
        doc.problem((*key, "lease"), f"{spec.get('lease')!r} must be a duration from 1s to 1d (such as 30s)")
        ok = False
    namespace = spec.get("namespace", defaults.BUS_NAMESPACE)
    if not isinstance(namespace, str) or not HOST_RE.match(namespace):
        doc.problem((*key, "namespace"), f"{namespace!r} must be letters, digits, '.', '_' or '-'")
        ok = False
    if not ok:
        return None
    assert isinstance(url, str) and isinstance(host, str) and lease is not None and isinstance(namespace, str)
    return BusSettings(url=url, host=host, password_env=env, lease=lease, namespace=namespace)


def _validate_notify(doc: Document, spec: Any) -> list[Receiver]:
    """``notify:``: a list of receivers, each ``{slack|discord|ntfy|webhook: URL}`` or
    ``{kind: K, url: URL}`` / ``{kind: K, url_env: VAR}``, with optional ``events``,
    ``rate`` (per minute), ``max_attempts``, ``retry_after`` and ``timeout`` (seconds)."""
    if not isinstance(spec, list):
        doc.problem(
            ("notify",), "must be a list of receivers (for example `notify: [{slack: https://hooks.slack.com/…}]`)"
        )
        return []
    out: list[Receiver] = []
    for i, raw in enumerate(spec):
        key: Key = ("notify", i)
        if not isinstance(raw, dict):
            doc.problem(key, "must be a mapping such as {slack: URL} or {kind: webhook, url_env: HOOK_URL}")
            continue
        _check_keys(doc, key, raw, NOTIFY_KEYS)
        given = [k.value for k in ReceiverKind if k.value in raw]
        if len(given) > 1 or (given and "kind" in raw):
            doc.problem(
                key, f"names more than one kind ({', '.join(given + (['kind'] if 'kind' in raw else []))}); give one"
            )
            continue
        kind = given[0] if given else raw.get("kind")
        if kind not in [k.value for k in ReceiverKind]:
            doc.problem(
                (*key, "kind"),
                f"{kind!r} is not a receiver kind; use one of {', '.join(k.value for k in ReceiverKind)}",
            )
            continue
        url = raw[kind] if given else raw.get("url")
        url_env = raw.get("url_env")
        if (url is None) == (url_env is None):
            doc.problem(key, "needs a URL (or `url_env: VAR` naming the variable that holds it), and only one of them")
            continue
        if url is not None and not (isinstance(url, str) and re.match(r"^https?://[^\s/]+", url)):
            doc.problem((*key, kind if given else "url"), "must be an http:// or https:// URL")
            continue
        if url_env is not None and not (isinstance(url_env, str) and ENV_KEY_RE.match(url_env)):
            doc.problem((*key, "url_env"), f"{url_env!r} must be an environment variable name")
            continue
        events = raw.get("events", [])
        if events == "all":
            events = []
        if not isinstance(events, list) or any(e not in NOTICE_KINDS for e in events):
            bad = [e for e in events if e not in NOTICE_KINDS] if isinstance(events, list) else [events]
            doc.problem(
                (*key, "events"),
                f"{', '.join(map(repr, bad))} not known; use all, or a list of {', '.join(NOTICE_KINDS)}",
            )
            continue
        kw: dict[str, Any] = {}
        for k, low, high in (
            ("rate", 0.1, 6000),
            ("max_attempts", 1, 100),
            ("retry_after", 0.01, 3600),
            ("timeout", 0.1, 120),
        ):
            if k in raw:
                v = raw[k]
                if type(v) not in (int, float) or not low <= v <= high or (k == "max_attempts" and type(v) is not int):
                    doc.problem((*key, k), f"{v!r} must be a number from {low:g} to {high:g}")
                    continue
                kw[k] = v
        receiver = Receiver(ReceiverKind(kind), url=url, url_env=url_env, events=tuple(events), **kw)
        if any(r.key == receiver.key for r in out):
            doc.problem(key, "the same receiver as an earlier entry; give it once, with every event it wants")
            continue
        out.append(receiver)
    return out


def _validate_github(doc: Document, spec: Any) -> GitHubSettings | None:
    """``github:``: ``repo`` (owner/name) and optional settings."""
    key: Key = ("github",)
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping with at least `repo: owner/name`")
        return None
    _check_keys(doc, key, spec, GITHUB_KEYS)
    repo = spec.get("repo")
    if not isinstance(repo, str) or not re.match(r"^[\w.-]+/[\w.-]+$", repo):
        doc.problem((*key, "repo"), f"{repo!r} must be owner/name (for example acme/widgets)")
        return None
    kw: dict[str, Any] = {}
    for k in ("api_url", "token_env", "todo_label", "fix_trigger"):
        if k in spec:
            if isinstance(spec[k], str) and spec[k].strip():
                kw[k] = spec[k]
            else:
                doc.problem((*key, k), "must be text")
    if "poll_interval" in spec:
        v = spec["poll_interval"]
        if type(v) in (int, float) and v >= 1:
            kw["poll_interval"] = float(v)
        else:
            doc.problem((*key, "poll_interval"), f"{v!r} must be seconds, 1 or more")
    if "allowed_authors" in spec:
        v = spec["allowed_authors"]
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            kw["allowed_authors"] = tuple(v)
        else:
            doc.problem((*key, "allowed_authors"), "must be a list of GitHub logins")
    return GitHubSettings(repo=repo, **kw)


def _validate_approvals(doc: Document, spec: Any, agents: Sequence[str]) -> list[AutoAnswer]:
    """``approvals: {auto: [{answer, agents, tool, match}, ...]}``: permission questions
    answered without a person, first matching rule wins (none: off)."""
    key: Key = ("approvals",)
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping (for example `approvals: {auto: [{tool: Read, answer: approve}]}`)")
        return []
    _check_keys(doc, key, spec, APPROVALS_KEYS)
    rules = spec.get("auto", [])
    if not isinstance(rules, list):
        doc.problem(
            (*key, "auto"),
            "must be a list of rules such as `{tool: Bash, match: '^Bash: git status$', answer: approve}`",
        )
        return []
    out = []
    for i, r in enumerate(rules):
        at: Key = (*key, "auto", i)
        if not isinstance(r, dict):
            doc.problem(at, "must be a mapping with answer (approve or deny) and tool, match or agents")
            continue
        _check_keys(doc, at, r, AUTO_KEYS)
        answer = r.get("answer")
        ok = True
        if "answer" not in r:
            ok = False
            if all(k in AUTO_KEYS for k in r):  # a misspelt key was reported already
                doc.problem(at, "needs answer: approve or deny")
        elif answer not in ("approve", "deny"):
            doc.problem((*at, "answer"), f"{answer!r} must be approve or deny")
            ok = False
        who = r.get("agents", [])
        if isinstance(who, str):
            who = [who]
        if not isinstance(who, list) or not all(isinstance(a, str) for a in who):
            doc.problem((*at, "agents"), "must be an agent name or a list of them")
            ok, who = False, []
        for a in who:
            if a not in agents:
                doc.problem((*at, "agents"), _unknown("agent", a, {n: None for n in agents}))
                ok = False
        tool, match = r.get("tool"), r.get("match")
        if tool is not None and not isinstance(tool, str):
            doc.problem((*at, "tool"), "must be a tool name such as Bash, Edit or Read")
            ok = False
        if match is not None:
            try:
                re.compile(str(match)) if isinstance(match, str) else None
            except re.error as e:
                doc.problem((*at, "match"), f"invalid regular expression: {e}; fix or quote it")
                ok = False
            if not isinstance(match, str):
                doc.problem((*at, "match"), "must be a regular expression (text)")
                ok = False
        if tool is None and match is None and ok:
            doc.problem(at, "answers every question; give a tool or a match (answering all is the CLI's own flag)")
            ok = False
        if ok:
            out.append(AutoAnswer(str(answer), tuple(who), tool, match))
    return out


def _validate_tasks(doc: Document, spec: Any) -> TaskSettings:
    """``tasks:``: ``on_agent_restart`` (resend or requeue), ``max_attempts`` (1 or
    more), ``timeout`` (a duration such as ``2h``) and ``label_timeouts`` (label →
    duration)."""
    key: Key = ("tasks",)
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping (for example `tasks: {on_agent_restart: requeue, timeout: 2h}`)")
        return TaskSettings()
    _check_keys(doc, key, spec, TASKS_KEYS)
    kw: dict[str, Any] = {}
    if "on_agent_restart" in spec:
        v = spec["on_agent_restart"]
        if v in tuple(OnRestart):
            kw["on_agent_restart"] = OnRestart(v)
        else:
            doc.problem((*key, "on_agent_restart"), f"{v!r} is not a policy; use resend or requeue")
    if "max_attempts" in spec:
        v = spec["max_attempts"]
        if type(v) is int and v >= 1:
            kw["max_attempts"] = v
        else:
            doc.problem((*key, "max_attempts"), f"{v!r} must be a whole number of attempts, 1 or more")
    if "timeout" in spec:
        t = parse_duration(spec["timeout"])
        if t is not None and t > 0:
            kw["timeout"] = t
        else:
            doc.problem((*key, "timeout"), f"{spec['timeout']!r} must be a duration such as 90s, 30m or 2h")
    if "label_timeouts" in spec:
        v = spec["label_timeouts"]
        if not isinstance(v, dict):
            doc.problem((*key, "label_timeouts"), "must map labels to durations (for example `{bug: 30m}`)")
        else:
            pairs = []
            for label, dur in v.items():
                t = parse_duration(dur)
                if not isinstance(label, str) or t is None or t <= 0:
                    doc.problem(
                        (*key, "label_timeouts", str(label)), f"{dur!r} must be a duration such as 90s, 30m or 2h"
                    )
                else:
                    pairs.append((label, t))
            kw["label_timeouts"] = tuple(pairs)
    return TaskSettings(**kw)


def _validate_report(doc: Document, spec: Any, has_github: bool) -> ReportSettings | None:
    """``report:``: post the KPI report to a GitHub issue ``every`` (a duration, at least
    ``defaults.REPORT_MIN_EVERY``), covering ``since`` (a duration; default ``every``);
    ``issue`` is the issue's number in ``github.repo``, so a ``github:`` section is needed."""
    key: Key = ("report",)
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping (for example `report: {every: 24h, issue: 12}`)")
        return None
    _check_keys(doc, key, spec, REPORT_KEYS)
    ok = True
    every = parse_duration(spec.get("every"))
    if "every" not in spec:
        doc.problem(key, "needs every: how often to post (for example `every: 24h`)")
        ok = False
    elif every is None or every < defaults.REPORT_MIN_EVERY:
        doc.problem(
            (*key, "every"),
            f"{spec['every']!r} must be a duration of at least "
            f"{defaults.REPORT_MIN_EVERY / 3600:g}h (for example 24h or 7d)",
        )
        ok = False
    issue = spec.get("issue")
    if "issue" not in spec:
        doc.problem(key, "needs issue: the number of the GitHub issue to post to (for example `issue: 12`)")
        ok = False
    elif type(issue) is not int or issue < 1:
        doc.problem((*key, "issue"), f"{issue!r} must be an issue number, 1 or more")
        ok = False
    since = every
    if "since" in spec:
        since = parse_duration(spec["since"])
        if since is None or since <= 0:
            doc.problem((*key, "since"), f"{spec['since']!r} must be a duration such as 24h or 7d")
            ok = False
    if not has_github:
        doc.problem(
            key, "posts to a GitHub issue, but the layout has no github: section; add `github: {repo: owner/name}`"
        )
        ok = False
    if not ok or every is None or since is None or type(issue) is not int:
        return None
    return ReportSettings(every=every, issue=issue, since=since)


def _validate_routes(doc: Document, spec: Any, names: list[str], shared: bool = False) -> list[Route]:
    """``routes:``: a list of ``{label|title|default, agent}``, first match wins. With a
    ``bus:`` (``shared``) a route may name an agent of another host: ``NAME`` (any host
    that runs one) or ``NAME@HOST`` (that host's)."""
    if not isinstance(spec, list):
        doc.problem(("routes",), "must be a list such as `- {label: bug, agent: kaede}`")
        return []
    out: list[Route] = []
    for i, r in enumerate(spec):
        key: Key = ("routes", i)
        if not isinstance(r, dict):
            doc.problem(key, "each route must be a mapping such as `{label: bug, agent: kaede}`")
            continue
        _check_keys(doc, key, r, ROUTE_KEYS)
        agent = r.get("agent")
        ok = True
        if shared and isinstance(agent, str) and agent not in names:
            name, _, host = agent.partition("@")
            if not NAME_RE.match(name) or ("@" in agent and not HOST_RE.match(host)):
                doc.problem((*key, "agent"), f"{agent!r} must be an agent name, or NAME@HOST for another host's agent")
                ok = False
        elif agent not in names:
            doc.problem((*key, "agent"), _unknown("agent", agent, {n: 1 for n in names}))
            ok = False
        kinds = [k for k in ("label", "title", "default") if k in r]
        if len(kinds) != 1:
            doc.problem(key, "give exactly one of label:, title: or default: true")
            ok = False
        if "title" in r:
            try:
                re.compile(str(r["title"]))
            except re.error as e:
                doc.problem((*key, "title"), f"invalid regular expression: {e}; fix or quote it")
                ok = False
        if "default" in r and r["default"] is not True:
            doc.problem((*key, "default"), "must be true")
            ok = False
        if not ok:
            continue
        if "title" in r:
            out.append(Route(agent=str(agent), title=str(r["title"])))
        elif "label" in r:
            out.append(Route(agent=str(agent), label=str(r["label"])))
        else:
            out.append(Route(agent=str(agent), default=True))
    return out


def _validate_watchdog(doc: Document, key: Key, spec: Any) -> dict[str, Any]:
    """Valid values of a ``watchdog:`` mapping (seconds; ``max_restarts`` a count)."""
    if not isinstance(spec, dict):
        doc.problem(key, f"must be a mapping of {', '.join(WATCHDOG_KEYS)}")
        return {}
    _check_keys(doc, key, spec, WATCHDOG_KEYS)
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if k not in WATCHDOG_KEYS:
            continue
        if k == "max_restarts":
            if type(v) is int and v >= 0:
                out[k] = v
            else:
                doc.problem((*key, k), f"{v!r} must be a whole number of restarts (0 or more)")
        elif k == "nudge":
            if isinstance(v, str) and v.strip():
                out[k] = v
            else:
                doc.problem((*key, k), "must be the text of the message a hung agent gets")
        elif type(v) in (int, float) and v >= 0:
            out[k] = float(v)
        else:
            doc.problem((*key, k), f"{v!r} must be a number of seconds (0 or more)")
    return out


def _validate_agent(
    doc: Document, i: int, raw: Any, profiles: Mapping[str, Profile | None], seen: dict[str, int]
) -> Agent | None:
    """The agent at ``agents[i]``, or None when it has a defect of its own (each one
    recorded). Defects elsewhere in the file do not drop it."""
    key: Key = ("agents", i)
    problems_before = len(doc.problems)
    if not isinstance(raw, dict):
        hint = (
            f"; YAML read {raw!r} as a {type(raw).__name__}: quote it to make it a name"
            if isinstance(raw, (int, float, bool))
            else ""
        )
        doc.problem(key, f"each agent must be a name or a mapping with `name:` and `profile:`{hint}")
        return None
    _check_keys(doc, key, raw, AGENT_KEYS)
    name = raw.get("name")
    ok = True
    if name is None:
        doc.problem(key, "the agent has no `name:`; give it one such as `kaede`")
        ok = False
    elif not isinstance(name, str):
        doc.problem(
            (*key, "name"), f"YAML read the name as a {type(name).__name__} ({name!r}); names are text: quote it"
        )
        ok = False
    elif not NAME_RE.match(name):
        fixed = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:40]
        hint = f" (for example {fixed!r})" if fixed and NAME_RE.match(fixed) else ""
        doc.problem(
            (*key, "name"),
            f"{name!r} is not a valid agent name; use 1-40 lowercase letters, digits, '-' and '_', starting with a "
            f"letter or digit{hint}",
        )
        ok = False
    elif name in seen:
        doc.problem(
            (*key, "name"), f"duplicate agent name {name!r} (also agents[{seen[name]}]); agent names must be unique"
        )
        ok = False
    else:
        seen[name] = i
    pname = raw.get("profile")
    base = profiles.get(pname) if isinstance(pname, str) else None
    if base is None:
        # A None entry was reported under profiles:, and a bad layout-wide default
        # under profile:; an unknown profile the agent names is reported here.
        if "profile" in doc.written.get(i, set()) and not (isinstance(pname, str) and pname in profiles):
            doc.problem((*key, "profile"), _unknown("profile", pname, profiles))
        ok = False
        base = BUILTIN["shell"]  # keep checking the rest of this agent
    overrides = _check_profile_fields(doc, key, {k: v for k, v in raw.items() if k in OVERRIDABLE})
    profile = base.replace(**overrides) if overrides else base
    command = profile.command if profile.command is not None else (os.environ.get("SHELL") or "/bin/sh")
    if not command.strip():
        doc.problem((*key, "command"), "the command is empty; give the program to run")
        ok = False
    cwd = raw.get("cwd")
    cwd_path: Path | None = None
    if cwd is not None:
        if not isinstance(cwd, str) or not cwd.strip():
            doc.problem((*key, "cwd"), "must be a directory path")
            ok = False
        else:
            cwd_path = Path(os.path.expandvars(os.path.expanduser(cwd)))
            if not cwd_path.is_absolute():
                cwd_path = doc.path.resolve().parent / cwd_path
    if "env" in raw:
        ok = _check_env(doc, (*key, "env"), raw["env"]) and ok
    env = doc.agent_env.get(i, {})
    title = raw.get("title", name if isinstance(name, str) else "")
    if not isinstance(title, str) or len(title) > 64:
        doc.problem((*key, "title"), "must be text of at most 64 characters")
        ok = False
    watchdog = doc.watchdog.merged(_validate_watchdog(doc, (*key, "watchdog"), raw.get("watchdog", {})))
    human_hold = _validate_hold(doc, (*key, "human_hold"), raw.get("human_hold", doc.human_hold))
    wip = raw.get("wip", 1)
    if type(wip) is not int or wip < 1:
        doc.problem((*key, "wip"), f"{wip!r} must be a whole number of tasks, 1 or more")
        wip = 1
    if not ok or len(doc.problems) > problems_before:
        return None
    return Agent(
        name=str(name),
        profile=profile,
        command=command,
        cwd=cwd_path,
        env=frozen_map({str(k): _env_str(v) for k, v in env.items()}),
        title=str(title),
        index=i,
        watchdog=watchdog,
        wip=wip,
        logs=doc.logs,
        human_hold=human_hold,
    )


def _validate_hold(doc: Document, key: Key, value: Any) -> float:
    """``human_hold``: how long after a person's last key in a pane miyabi waits before
    typing into it (a duration from 0, never, to 1d); the default when wrong."""
    seconds = parse_duration(value)
    if seconds is None or seconds > 86400:
        doc.problem(key, f"{value!r} must be a duration from 0s to 1d (such as 30s or 2m; 0 turns it off)")
        return defaults.HUMAN_HOLD
    return seconds


def _check_profile_fields(doc: Document, key: Key, fields: dict[str, Any]) -> dict[str, Any]:
    """Check profile fields found at ``key``; return the valid ones."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        at = (*key, name)
        if name in ("ready_rows", "busy_rows", "approval_rows"):
            if isinstance(value, list) and len(value) == 2 and all(type(n) is int and 0 <= n <= 200 for n in value):
                out[name] = (value[0], value[1])
            else:
                doc.problem(at, f"{value!r} must be [rows above, rows below] the cursor, for example [0, 3]")
        elif name == "composer_rows":
            if type(value) is int and 0 <= value <= 50:
                out[name] = value
            else:
                doc.problem(at, f"{value!r} must be a number of rows from 0 to 50")
        elif name in ("approve_keys", "deny_keys"):
            keys = [value] if isinstance(value, str) else value
            if isinstance(keys, list) and keys and all(isinstance(k, str) and ANSWER_KEY_RE.match(k) for k in keys):
                out[name] = tuple(keys)
            else:
                doc.problem(at, f"{value!r} must be tmux key names or single characters, for example [y, Enter]")
        elif name in ("ready_pattern", "busy_pattern", "composer_pattern", "approval_pattern"):
            if value is None:
                out[name] = None
            elif not isinstance(value, str):
                doc.problem(at, "must be a regular expression (text) or null")
            else:
                try:
                    compiled = re.compile(value)
                except re.error as e:
                    doc.problem(at, f"invalid regular expression: {e}; fix or quote it")
                    continue
                if name == "composer_pattern" and "text" not in compiled.groupindex:
                    doc.problem(at, "needs a named group (?P<text>...) around the typed input")
                    continue
                out[name] = value
        elif name == "submit_key":
            if isinstance(value, str) and SUBMIT_KEY_RE.match(value):
                out[name] = value
            else:
                doc.problem(
                    at,
                    f"{value!r} is not a key miyabi can submit with; use a tmux key name such as Enter, C-m, C-j, "
                    "M-Enter or Tab",
                )
        elif name in ("submit_delay", "ready_settle", "answer_grace"):
            if type(value) in (int, float) and 0 <= value <= 10:
                out[name] = float(value)
            else:
                doc.problem(at, f"{value!r} must be seconds from 0 to 10 (for example 0.15)")
        elif name == "typed_limit":
            if type(value) is int and 0 <= value <= defaults.SHORT_TEXT:
                out[name] = value
            else:
                doc.problem(at, f"{value!r} must be a number of bytes from 0 to {defaults.SHORT_TEXT}")
        elif name in ("bracketed_paste", "intro"):
            if isinstance(value, bool):
                out[name] = value
            else:
                doc.problem(at, f"{value!r} must be true or false")
        elif name == "command":
            if isinstance(value, str):
                out[name] = value
            else:
                doc.problem(at, "must be a command line (text) or a list of words")
        elif name == "description":
            if isinstance(value, str):
                out[name] = value
            else:
                doc.problem(at, "must be text")
    return out


def _check_env(doc: Document, key: Key, env: Any) -> bool:
    if not isinstance(env, dict):
        doc.problem(key, "must be a mapping of variable names to values")
        return False
    ok = True
    for k, v in env.items():
        if isinstance(k, bool):
            doc.problem((*key, str(k)), f'YAML read this key as {k}; quote it (for example "ON": 1)')
            ok = False
        elif not isinstance(k, str) or not ENV_KEY_RE.match(k):
            doc.problem((*key, str(k)), f"{k!r} is not a valid environment variable name")
            ok = False
        elif k in RESERVED_ENV:
            doc.problem((*key, k), f"{k} is set by miyabi for each agent; remove it from the layout")
            ok = False
        elif not isinstance(v, (str, int, float, bool)):
            doc.problem((*key, k), "must be a single value (text or number)")
            ok = False
    return ok


def _env_str(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def _check_keys(doc: Document, key: Key, data: Mapping[Any, Any], valid: tuple[str, ...]) -> None:
    for k in data:
        if k not in valid:
            close = difflib.get_close_matches(str(k), valid, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f" (valid keys: {', '.join(valid)})"
            doc.problem((*key, str(k)), f"unknown key {k!r}{hint}")


def _unknown(what: str, value: Any, known: Mapping[str, Any]) -> str:
    names = sorted(known)
    close = difflib.get_close_matches(str(value), names, n=1) if value is not None else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {value!r}{hint} (known: {', '.join(names)})"


# ---------------------------------------------------------------- whole pipeline


def load(path: str | os.PathLike[str]) -> Layout:
    """Read, expand, fill defaults and validate the layout at ``path``.

    Raises:
        LayoutError: every problem found, each with file, line and key path.
    """
    doc = read(Path(path))
    doc = expand(doc)
    doc = fill_defaults(doc)
    return validate(doc)
