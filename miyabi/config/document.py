"""A layout file as data (:class:`Document`): the parsed YAML with the line of every
key, the problems found so far, and the checks every section of the loader shares
(unknown keys, unknown names, ``env:`` mappings)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.agents.profiles import Profile
from miyabi.config.settings import LogSettings, ParkSettings, SandboxSettings, WatchdogSettings
from miyabi.errors import LayoutError, Problem

Key = tuple[str | int, ...]

ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
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
    park: ParkSettings = field(default_factory=ParkSettings)
    sandbox: SandboxSettings | None = None
    """The layout's ``sandbox:`` (None: none), which agents and pools inherit."""

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


def check_env(doc: Document, key: Key, env: Any) -> bool:
    """Check an ``env:`` mapping at ``key`` (names, values, none miyabi sets itself);
    whether it is valid."""
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


def env_str(v: Any) -> str:
    """An environment value as text (``true`` → ``1``, ``false`` → ``0``)."""
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def check_keys(doc: Document, key: Key, data: Mapping[Any, Any], valid: tuple[str, ...]) -> None:
    """Record each key of ``data`` (at ``key``) that is not in ``valid``, with the
    closest valid one."""
    for k in data:
        if k not in valid:
            close = difflib.get_close_matches(str(k), valid, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f" (valid keys: {', '.join(valid)})"
            doc.problem((*key, str(k)), f"unknown key {k!r}{hint}")


def unknown(what: str, value: Any, known: Mapping[str, Any]) -> str:
    """The message for an unknown ``what`` (profile, agent) named ``value``: the closest
    known name, and all of them."""
    names = sorted(known)
    close = difflib.get_close_matches(str(value), names, n=1) if value is not None else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {value!r}{hint} (known: {', '.join(names)})"
