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

import os
import re
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from miyabi import defaults
from miyabi.agents.profiles import BUILTIN, OVERRIDABLE, Profile
from miyabi.config.document import Document, Key, check_env, check_keys, key_path, unknown
from miyabi.config.members import (
    AGENT_KEYS,
    PROFILE_KEYS,
    check_profile_fields,
    validate_agent,
    validate_pools,
    validate_self,
)
from miyabi.config.model import Agent, Layout, Pool, frozen_map
from miyabi.config.sections import (
    check_park_targets,
    validate_approvals,
    validate_budget,
    validate_bus,
    validate_delivery,
    validate_github,
    validate_hold,
    validate_logs,
    validate_notify,
    validate_park,
    validate_report,
    validate_roles,
    validate_routes,
    validate_sandbox,
    validate_tasks,
    validate_watchdog,
    validate_web,
)
from miyabi.config.settings import NAME_RE, ParkSettings, SandboxSettings, WatchdogSettings
from miyabi.errors import LayoutError, Problem

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
    "park",
    "budget",
    "sandbox",
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
    "roles",
    "self",
)
SESSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


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
        check_keys(doc, key, spec, PROFILE_KEYS)
        base_name = spec.get("extends", name if name in BUILTIN else "shell")
        base = BUILTIN.get(base_name) if isinstance(base_name, str) else None
        if base is None:
            doc.problem((*key, "extends"), unknown("profile", base_name, BUILTIN))
            out[name] = None
            continue
        fields = {k: v for k, v in spec.items() if k in OVERRIDABLE or k == "description"}
        checked = check_profile_fields(doc, key, fields)
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
    check_keys(doc, (), data, TOP_KEYS)
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
        doc.problem(("profile",), unknown("profile", profile_default, profiles))
    if "env" in data and not check_env(doc, ("env",), data["env"]):
        data["env"] = {}
    if "cwd" in data and not isinstance(data["cwd"], str):
        doc.problem(("cwd",), "must be a directory path")

    max_body = validate_delivery(doc, data.get("delivery", {}))
    doc.watchdog = WatchdogSettings().merged(validate_watchdog(doc, ("watchdog",), data.get("watchdog", {})))
    doc.logs = validate_logs(doc, data.get("logs", {}))
    doc.human_hold = validate_hold(doc, ("human_hold",), data.get("human_hold", defaults.HUMAN_HOLD))
    doc.park = ParkSettings().merged(validate_park(doc, ("park",), data.get("park", {})))
    doc.sandbox = validate_sandbox(doc, ("sandbox",), data.get("sandbox"), None)
    agents_raw = data.get("agents")
    agents = _validate_agents(doc, profiles)
    # Routes may name any agent the file declares: one whose own fields are wrong is
    # reported there, not a second time as unknown here.
    declared = (
        [a["name"] for a in agents_raw if isinstance(a, dict) and isinstance(a.get("name"), str)]
        if isinstance(agents_raw, list)
        else []
    )
    github = validate_github(doc, data["github"]) if "github" in data else None
    pools = validate_pools(doc, data.get("pools", []), profiles, declared, github is not None)
    pools_raw = data.get("pools") if isinstance(data.get("pools"), list) else []
    declared_pools = [p["name"] for p in pools_raw if isinstance(p, dict) and isinstance(p.get("name"), str)]
    bus = validate_bus(doc, data["bus"]) if data.get("bus") not in (None, False) else None
    routes = validate_routes(
        doc, data.get("routes", []), [*declared, *declared_pools], shared=bus is not None or "bus" in data
    )
    tasks = validate_tasks(doc, data.get("tasks", {}))
    auto = validate_approvals(doc, data.get("approvals", {}), declared)
    report = validate_report(doc, data["report"], github is not None) if "report" in data else None
    web = validate_web(doc, data["web"]) if data.get("web") not in (None, False) else None
    notify = validate_notify(doc, data.get("notify", []))
    budget = validate_budget(doc, ("budget",), data.get("budget"))
    if budget is not None and "layout" in [*declared, *declared_pools]:
        doc.problem(
            ("budget",),
            "an agent or pool named layout hides the ensemble's budget from `miyabi budget raise layout`; rename it",
        )
    _check_handoffs(doc, agents, pools, [*declared, *declared_pools])
    roles = validate_roles(doc, data["roles"], declared, declared_pools) if "roles" in data else None
    self_pool = validate_self(doc, data["self"], declared_pools) if data.get("self") is not None else None
    secrets = Layout(path=doc.path, session=session, agents=(), github=github, bus=bus, notify=tuple(notify)).secret_env
    agents = _check_sandboxes(doc, agents, pools, secrets)
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
        budget=budget,
        roles=roles,
        self_pool=self_pool,
        profiles=frozen_map({k: v for k, v in profiles.items() if v is not None}),
    )


def _check_handoffs(doc: Document, agents: list[Agent], pools: list[Pool], names: list[str]) -> None:
    """Every ``park.to`` names an agent or pool of the layout, and never the member itself."""
    check_park_targets(doc, ("park",), doc.park.to, names)
    raw_agents = doc.data.get("agents") if isinstance(doc.data.get("agents"), list) else []
    raw_pools = doc.data.get("pools") if isinstance(doc.data.get("pools"), list) else []
    for kind, members, raws in (("agents", agents, raw_agents), ("pools", pools, raw_pools)):
        for member in members:
            i = next((j for j, r in enumerate(raws) if isinstance(r, dict) and r.get("name") == member.name), None)
            if i is None or "park" not in raws[i]:
                continue
            key: Key = (kind, i, "park")
            check_park_targets(doc, key, member.park.to, names)
            if member.name in member.park.to:
                doc.problem((*key, "to"), f"{member.name} cannot take over its own tasks; name another agent or pool")


def _check_sandboxes(doc: Document, agents: list[Agent], pools: list[Pool], secrets: frozenset[str]) -> list[Agent]:
    """No sandbox passes one of the layout's secrets in (``sandbox.env``); each
    sandboxed agent hides the other agents' working directories (``sandbox.hide``).
    Returns the agents, so completed."""
    boxes: list[tuple[Key, SandboxSettings | None]] = [(("sandbox",), doc.sandbox)]
    boxes += [(("agents", a.index, "sandbox"), a.sandbox) for a in agents]
    boxes += [(("pools", i, "sandbox"), p.sandbox) for i, p in enumerate(pools)]
    for a in agents:
        if a.sandbox is not None and a.command.split()[:2] == ["miyabi", "worker"]:
            doc.problem(
                ("agents", a.index, "sandbox"),
                "the built-in worker runs miyabi's own code on the home, which a sandbox hides; "
                "give it `sandbox: false`",
            )
    for key, box in boxes:
        for name in sorted(set(box.env) & secrets) if box is not None else ():
            doc.problem(
                (*key, "env"), f"{name} holds one of the layout's secrets, which never reach an agent; take it out"
            )
    out = []
    for a in agents:
        if a.sandbox is not None:
            own = a.cwd
            others = sorted(
                {
                    str(b.cwd)
                    for b in agents
                    if b.cwd is not None and b.cwd != own and (own is None or b.cwd not in own.parents)
                }
            )
            a = replace(a, sandbox=replace(a.sandbox, hide=tuple(others)))
        out.append(a)
    return out


def _validate_agents(doc: Document, profiles: dict[str, Profile | None]) -> list[Agent]:
    """``agents:``, a non-empty list: each agent without a defect of its own."""
    data = doc.data
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
            agent = validate_agent(doc, i, raw, profiles, seen)
            if agent is not None:
                agents.append(agent)
    return agents


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
