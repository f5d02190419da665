"""The layout's members: its agents (``agents:``), its pools (``pools:``), and the
profile fields either may override (also a layout profile's, under ``profiles:``).
Each validator records every defect it finds in the
:class:`~miyabi.config.document.Document`; a member with a defect of its own is left
out, and defects elsewhere never drop it."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.agents.profiles import BUILTIN, OVERRIDABLE, Profile
from miyabi.config.document import Document, Key, check_env, check_keys, env_str, unknown
from miyabi.config.model import Agent, PipelineMode, Pool, frozen_map
from miyabi.config.sections import validate_budget, validate_hold, validate_park, validate_sandbox, validate_watchdog
from miyabi.config.settings import NAME_RE, SandboxSettings

AGENT_KEYS = (
    "name",
    "profile",
    "cwd",
    "env",
    "title",
    "watchdog",
    "wip",
    "human_hold",
    "park",
    "budget",
    "sandbox",
    *OVERRIDABLE,
)
"""Keys of an agent's mapping under ``agents:``."""
POOL_KEYS = (
    "name",
    "profile",
    "max",
    "repo",
    "base_branch",
    "remote",
    "pipeline",
    "env",
    "watchdog",
    "park",
    "budget",
    "approve",
    "sandbox",
    *OVERRIDABLE,
)
PROFILE_KEYS = ("extends", "description", *OVERRIDABLE)

ANSWER_KEY_RE = re.compile(r"^(?:.|Enter|Escape|Tab|Space|BSpace|Up|Down|Left|Right|[CM]-[a-zA-Z])$")
"""Keys ``approve_keys`` / ``deny_keys`` may name: one character, or a tmux key name."""
SUBMIT_KEY_RE = re.compile(r"^(Enter|Tab|KPEnter|Space|M-Enter|C-M-[a-z]|[CM]-[a-zA-Z])$")


def _shell_command(profile: Profile) -> str:
    """The profile's command, else the user's shell."""
    return profile.command if profile.command is not None else (os.environ.get("SHELL") or "/bin/sh")


def _path(doc: Document, raw: str) -> Path:
    """``raw`` with ``~`` and variables expanded, relative to the layout file's directory."""
    path = Path(os.path.expandvars(os.path.expanduser(raw)))
    return path if path.is_absolute() else doc.path.resolve().parent / path


# ---------------------------------------------------------------- pools


def validate_pools(
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
    for i, raw in enumerate(spec):
        pool = _pool(doc, ("pools", i), raw, profiles, [*agents, *seen], has_github)
        if pool is not None:
            seen.add(pool.name)
            out.append(pool)
    return out


def _pool(
    doc: Document, key: Key, raw: Any, profiles: Mapping[str, Profile | None], taken: Sequence[str], has_github: bool
) -> Pool | None:
    """The pool at ``pools[i]`` (``key``), or None when it has a defect (recorded);
    ``taken``: the names of agents and earlier pools."""
    before = len(doc.problems)
    if not isinstance(raw, dict):
        doc.problem(key, "each pool must be a mapping such as `{name: coder, profile: claude, repo: ~/src/app}`")
        return None
    check_keys(doc, key, raw, POOL_KEYS)
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 30:
        doc.problem(
            (*key, "name"), f"{name!r} is not a valid pool name; use 1-30 lowercase letters, digits, '-' and '_'"
        )
    elif name in taken:
        doc.problem(
            (*key, "name"), f"{name!r} is taken by an agent or another pool; pool and agent names must be unique"
        )
    pname = raw.get("profile", doc.data.get("profile", defaults.PROFILE))
    base = profiles.get(pname) if isinstance(pname, str) else None
    if base is None:
        doc.problem((*key, "profile"), unknown("profile", pname, profiles))
        base = BUILTIN["shell"]
    overrides = check_profile_fields(doc, key, {k: v for k, v in raw.items() if k in OVERRIDABLE})
    profile = base.replace(**overrides) if overrides else base
    repo_raw = raw.get("repo")
    repo = Path(".")
    if not isinstance(repo_raw, str) or not repo_raw.strip():
        doc.problem((*key, "repo"), "the pool needs `repo:`, the path of the git repository its instances work on")
    else:
        repo = _path(doc, repo_raw)
    size = raw.get("max", defaults.POOL_MAX)
    if type(size) is not int or not 1 <= size <= 64:
        doc.problem((*key, "max"), f"{size!r} must be a whole number of instances from 1 to 64")
    kw = _pool_git(doc, key, raw)
    mode = _pool_mode(doc, key, raw.get("pipeline", "github" if has_github else "local"), has_github)
    top_env = doc.data.get("env") if isinstance(doc.data.get("env"), dict) else {}
    env: dict[str, Any] = dict(top_env)
    if "env" in raw and check_env(doc, (*key, "env"), raw["env"]):
        env.update(raw["env"])
    watchdog = doc.watchdog.merged(validate_watchdog(doc, (*key, "watchdog"), raw.get("watchdog", {})))
    park = doc.park.merged(validate_park(doc, (*key, "park"), raw.get("park", {})))
    budget = validate_budget(doc, (*key, "budget"), raw.get("budget"))
    approve = _pool_approve(doc, key, raw.get("approve", "none"))
    if approve and mode == PipelineMode.GITHUB:
        doc.problem(
            (*key, "approve"),
            "required applies to pipeline: local; with pipeline: github the pull request waits for review",
        )
    sandbox = _sandbox(doc, key, raw)
    if len(doc.problems) > before or not isinstance(name, str):
        return None
    return Pool(
        name=name,
        profile=profile,
        command=_shell_command(profile),
        repo=repo,
        max=size,
        pipeline=PipelineMode(mode),
        env=frozen_map({str(k): env_str(v) for k, v in env.items()}),
        watchdog=watchdog,
        park=park,
        budget=budget,
        approve=approve,
        sandbox=sandbox,
        **kw,
    )


def _pool_git(doc: Document, key: Key, raw: dict[str, Any]) -> dict[str, Any]:
    """A pool's valid ``base_branch`` and ``remote``."""
    kw: dict[str, Any] = {}
    for k in ("base_branch", "remote"):
        if k in raw:
            if isinstance(raw[k], str) and raw[k].strip() and not raw[k].startswith("-"):
                kw[k] = raw[k].strip()
            else:
                doc.problem((*key, k), "must be a git branch or remote name")
    return kw


def _pool_mode(doc: Document, key: Key, mode: Any, has_github: bool) -> Any:
    """A pool's ``pipeline`` (a defect recorded), as given."""
    if mode not in tuple(PipelineMode):
        doc.problem(
            (*key, "pipeline"), f"{mode!r} must be github (push and open a pull request) or local (merge locally)"
        )
    elif mode == PipelineMode.GITHUB and not has_github:
        doc.problem(
            (*key, "pipeline"),
            "github needs the layout's `github: {repo: owner/name}` section; add it, or use pipeline: local",
        )
    return mode


def _pool_approve(doc: Document, key: Key, raw: Any) -> bool:
    """A pool's ``approve``: ``required`` (its merges wait for ``miyabi approve-merge``)
    or ``none`` (the default); a defect recorded otherwise."""
    if raw in ("required", "none"):
        return bool(raw == "required")
    doc.problem(
        (*key, "approve"),
        f"{raw!r} must be required (merges wait for `miyabi approve-merge TASK`) or none (they land once checked)",
    )
    return False


def validate_self(doc: Document, raw: Any, pools: Sequence[str]) -> str | None:
    """``self: {pool: NAME}``: the pool whose ``repo`` is miyabi's own checkout (its
    merges upgrade the running controller, behind a health probe); the pool's name, or
    None with a defect recorded."""
    if not isinstance(raw, dict):
        doc.problem(("self",), "must be a mapping such as `{pool: miyabi}` naming the pool that edits miyabi")
        return None
    check_keys(doc, ("self",), raw, ("pool",))
    name = raw.get("pool")
    if not isinstance(name, str) or name not in pools:
        doc.problem(("self", "pool"), unknown("pool", name, {p: None for p in pools}))
        return None
    return name


# ---------------------------------------------------------------- agents


def validate_agent(
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
    check_keys(doc, key, raw, AGENT_KEYS)
    name = raw.get("name")
    ok = _agent_name(doc, key, name, i, seen)
    pname = raw.get("profile")
    base = profiles.get(pname) if isinstance(pname, str) else None
    if base is None:
        # A None entry was reported under profiles:, and a bad layout-wide default
        # under profile:; an unknown profile the agent names is reported here.
        if "profile" in doc.written.get(i, set()) and not (isinstance(pname, str) and pname in profiles):
            doc.problem((*key, "profile"), unknown("profile", pname, profiles))
        ok = False
        base = BUILTIN["shell"]  # keep checking the rest of this agent
    overrides = check_profile_fields(doc, key, {k: v for k, v in raw.items() if k in OVERRIDABLE})
    profile = base.replace(**overrides) if overrides else base
    command = _shell_command(profile)
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
            cwd_path = _path(doc, cwd)
    if "env" in raw:
        ok = check_env(doc, (*key, "env"), raw["env"]) and ok
    env = doc.agent_env.get(i, {})
    title = raw.get("title", name if isinstance(name, str) else "")
    if not isinstance(title, str) or len(title) > 64:
        doc.problem((*key, "title"), "must be text of at most 64 characters")
        ok = False
    watchdog = doc.watchdog.merged(validate_watchdog(doc, (*key, "watchdog"), raw.get("watchdog", {})))
    human_hold = validate_hold(doc, (*key, "human_hold"), raw.get("human_hold", doc.human_hold))
    park = doc.park.merged(validate_park(doc, (*key, "park"), raw.get("park", {})))
    budget = validate_budget(doc, (*key, "budget"), raw.get("budget"))
    sandbox = _sandbox(doc, key, raw)
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
        env=frozen_map({str(k): env_str(v) for k, v in env.items()}),
        title=str(title),
        index=i,
        watchdog=watchdog,
        wip=wip,
        logs=doc.logs,
        human_hold=human_hold,
        park=park,
        budget=budget,
        sandbox=sandbox,
    )


def _sandbox(doc: Document, key: Key, raw: dict[str, Any]) -> SandboxSettings | None:
    """A member's ``sandbox:`` over the layout's (absent: the layout's as it is)."""
    if "sandbox" not in raw:
        return doc.sandbox
    return validate_sandbox(doc, (*key, "sandbox"), raw["sandbox"], doc.sandbox)


def _agent_name(doc: Document, key: Key, name: Any, i: int, seen: dict[str, int]) -> bool:
    """Whether ``name`` is a valid agent name not taken by an earlier agent (``seen``:
    name → index, to which it is added)."""
    if name is None:
        doc.problem(key, "the agent has no `name:`; give it one such as `kaede`")
        return False
    if not isinstance(name, str):
        doc.problem(
            (*key, "name"), f"YAML read the name as a {type(name).__name__} ({name!r}); names are text: quote it"
        )
        return False
    if not NAME_RE.match(name):
        fixed = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:40]
        hint = f" (for example {fixed!r})" if fixed and NAME_RE.match(fixed) else ""
        doc.problem(
            (*key, "name"),
            f"{name!r} is not a valid agent name; use 1-40 lowercase letters, digits, '-' and '_', starting with a "
            f"letter or digit{hint}",
        )
        return False
    if name in seen:
        doc.problem(
            (*key, "name"), f"duplicate agent name {name!r} (also agents[{seen[name]}]); agent names must be unique"
        )
        return False
    seen[name] = i
    return True


# ---------------------------------------------------------------- profile fields

Check = Callable[[str, Any], tuple[Any, str | None]]
"""A profile field's check: (field name, value) → (the value to keep, None) or (None, the problem)."""


def _rows(name: str, value: Any) -> tuple[Any, str | None]:
    if isinstance(value, list) and len(value) == 2 and all(type(n) is int and 0 <= n <= 200 for n in value):
        return (value[0], value[1]), None
    return None, f"{value!r} must be [rows above, rows below] the cursor, for example [0, 3]"


def _composer_rows(name: str, value: Any) -> tuple[Any, str | None]:
    if type(value) is int and 0 <= value <= 50:
        return value, None
    return None, f"{value!r} must be a number of rows from 0 to 50"


def _answer_keys(name: str, value: Any) -> tuple[Any, str | None]:
    keys = [value] if isinstance(value, str) else value
    if isinstance(keys, list) and keys and all(isinstance(k, str) and ANSWER_KEY_RE.match(k) for k in keys):
        return tuple(keys), None
    return None, f"{value!r} must be tmux key names or single characters, for example [y, Enter]"


def _pattern(name: str, value: Any) -> tuple[Any, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, str):
        return None, "must be a regular expression (text) or null"
    try:
        compiled = re.compile(value)
    except re.error as e:
        return None, f"invalid regular expression: {e}; fix or quote it"
    if name == "composer_pattern" and "text" not in compiled.groupindex:
        return None, "needs a named group (?P<text>...) around the typed input"
    return value, None


def _submit_key(name: str, value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str) and SUBMIT_KEY_RE.match(value):
        return value, None
    return None, (
        f"{value!r} is not a key miyabi can submit with; use a tmux key name such as Enter, C-m, C-j, M-Enter or Tab"
    )


def _seconds(name: str, value: Any) -> tuple[Any, str | None]:
    if type(value) in (int, float) and 0 <= value <= 10:
        return float(value), None
    return None, f"{value!r} must be seconds from 0 to 10 (for example 0.15)"


def _typed_limit(name: str, value: Any) -> tuple[Any, str | None]:
    if type(value) is int and 0 <= value <= defaults.SHORT_TEXT:
        return value, None
    return None, f"{value!r} must be a number of bytes from 0 to {defaults.SHORT_TEXT}"


def _flag(name: str, value: Any) -> tuple[Any, str | None]:
    if isinstance(value, bool):
        return value, None
    return None, f"{value!r} must be true or false"


def _command(name: str, value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str):
        return value, None
    return None, "must be a command line (text) or a list of words"


def _text(name: str, value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str):
        return value, None
    return None, "must be text"


def _resume(name: str, value: Any) -> tuple[Any, str | None]:
    if value is None or value == "never":
        return None, None
    if isinstance(value, str) and value.strip():
        try:
            shlex.split(value)
        except ValueError as e:
            return None, f"{value!r} is not a line of options ({e}); or `never`"
        return value, None
    return None, "must be the options that resume the program's conversation ({session}: its id), or `never`"


PROFILE_CHECKS: dict[str, Check] = {
    "ready_rows": _rows,
    "busy_rows": _rows,
    "approval_rows": _rows,
    "composer_rows": _composer_rows,
    "approve_keys": _answer_keys,
    "deny_keys": _answer_keys,
    "ready_pattern": _pattern,
    "busy_pattern": _pattern,
    "composer_pattern": _pattern,
    "approval_pattern": _pattern,
    "limit_pattern": _pattern,
    "submit_key": _submit_key,
    "submit_delay": _seconds,
    "ready_settle": _seconds,
    "answer_grace": _seconds,
    "typed_limit": _typed_limit,
    "bracketed_paste": _flag,
    "intro": _flag,
    "command": _command,
    "description": _text,
    "resume": _resume,
}
"""The check of each profile field a layout may set; other fields are left out unchecked."""


def check_profile_fields(doc: Document, key: Key, fields: dict[str, Any]) -> dict[str, Any]:
    """Check profile fields found at ``key``; return the valid ones."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        check = PROFILE_CHECKS.get(name)
        if check is None:
            continue
        kept, problem = check(name, value)
        if problem is not None:
            doc.problem((*key, name), problem)
        else:
            out[name] = kept
    return out
