"""What a layout needs of this machine, checked before anything is created: every
agent's program on the PATH it will see, every ``cwd`` an existing directory.

Also the one place that splits a command line into words (``shlex``), for
:func:`program_of` here and for the line tmux runs (``tmux/builder.py``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from miyabi.config.document import Document, Key
from miyabi.config.loader import read
from miyabi.config.model import Agent, Layout
from miyabi.errors import LayoutError

ENV_ASSIGN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
"""A leading ``NAME=value`` word of a command line."""

SHELL_BUILTINS = frozenset(
    [
        ".",
        ":",
        "[",
        "alias",
        "bg",
        "cd",
        "command",
        "eval",
        "exec",
        "exit",
        "export",
        "false",
        "fg",
        "getopts",
        "hash",
        "jobs",
        "kill",
        "pwd",
        "read",
        "readonly",
        "return",
        "set",
        "shift",
        "source",
        "test",
        "times",
        "trap",
        "true",
        "type",
        "ulimit",
        "umask",
        "unalias",
        "unset",
        "wait",
        "if",
        "for",
        "while",
        "until",
        "case",
        "{",
    ]
)
"""Words a shell runs itself: nothing to find on PATH."""

SHELL_KEYWORDS = frozenset(["if", "for", "while", "until", "case", "{", "!", "(", "exec", "[[", "function", "select"])
"""First words after which ``exec`` cannot be put in front of a command line."""

_OPERATOR = set("();<>|&")


def split_command(command: str) -> list[str] | None:
    """The words of a shell command line, with shell operators (``&&``, ``|``, ``;``,
    ``(``) as words of their own; None when it cannot be split (unbalanced quotes)."""
    try:
        lex = shlex.shlex(command, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        return list(lex)
    except ValueError:
        return None


def is_compound(command: str, words: list[str]) -> bool:
    """Whether a command line is more than one simple command (several lines, pipes,
    ``&&``, ``;``, subshells, redirections)."""
    return "\n" in command.strip() or any(w and set(w) <= _OPERATOR for w in words)


def exec_line(command: str) -> str:
    """The line ``/bin/sh -c`` runs for an agent: ``exec`` in front of a simple command,
    so that the pane's pid is the agent's own (what status and the watchdog watch);
    a compound command (``a && b``, pipes, ``if``…) is left as written."""
    words = split_command(command)
    if not words or is_compound(command, words):
        return command
    if words[0] in SHELL_KEYWORDS or ENV_ASSIGN_RE.match(words[0]):
        return command
    return "exec " + command


def program_of(command: str) -> str | None:
    """The program a command line runs (``FOO=1 env -u X claude -p`` → ``claude``);
    "" when there is nothing to look up on PATH (a compound command such as
    ``cd x && aider``, or a shell builtin), None when the line cannot be split into
    words (unbalanced quotes)."""
    words = split_command(command)
    if words is None:
        return None
    if is_compound(command, words):
        return ""
    while words and ENV_ASSIGN_RE.match(words[0]):
        words = words[1:]
    while words and words[0] in ("env", "exec", "command", "nohup"):
        wrapper, words = words[0], words[1:]
        while words and (words[0].startswith("-") or (wrapper == "env" and ENV_ASSIGN_RE.match(words[0]))):
            opt, words = words[0], words[1:]
            if wrapper == "env" and opt in ("-u", "-C", "-S", "--unset", "--chdir", "--split-string") and words:
                words = words[1:]
    if not words or words[0] in SHELL_BUILTINS:
        return ""
    return words[0]


def miyabi_bindir() -> str | None:
    """The directory of the running ``miyabi`` console script, if there is one."""
    d = Path(sys.executable).parent
    return str(d) if (d / "miyabi").exists() else None


def agent_path(agent: Agent, base_path: str | None = None) -> str:
    """The PATH an agent's process will see: its own ``env`` PATH if the layout sets
    one, else ``base_path`` (default: this process's PATH) with the directory holding
    the ``miyabi`` command in front, so that agents can run ``miyabi send``."""
    if "PATH" in agent.env:
        return agent.env["PATH"]
    base = base_path if base_path is not None else os.environ.get("PATH", os.defpath)
    bindir = miyabi_bindir()
    if bindir and bindir not in base.split(os.pathsep):
        return bindir + os.pathsep + base
    return base


def preflight(layout: Layout, base_path: str | None = None) -> None:
    """Check what the layout needs of this machine, before anything is created.

    Every agent's (and pool's) program must be found on the PATH the agent will see
    (or be an executable path), every ``cwd`` must be an existing directory, and every
    pool's ``repo`` a git repository.

    Raises:
        LayoutError: listing every missing command and directory at once.
    """
    doc = _read_lines_only(layout.path)
    for agent in layout.agents:
        key: Key = ("agents", agent.index)
        prog = program_of(agent.command)
        cwd = agent.cwd or Path.cwd()
        if prog is None:
            doc.problem((*key, "command"), f"cannot split {agent.command!r} into words (unbalanced quotes?)")
        elif prog:
            if "/" in prog:
                p = Path(os.path.expanduser(prog))
                p = p if p.is_absolute() else cwd / p
                found = p.is_file() and os.access(p, os.X_OK)
            else:
                found = shutil.which(prog, path=agent_path(agent, base_path)) is not None
            if not found:
                doc.problem(
                    (*key, "command"),
                    f"agent {agent.name!r}: command {prog!r} not found on PATH; install it, or set `command:` to its "
                    "full path",
                )
        if agent.cwd is not None and not agent.cwd.is_dir():
            doc.problem(
                (*key, "cwd"),
                f"agent {agent.name!r}: directory {str(agent.cwd)!r} does not exist; create it or fix `cwd:`",
            )
    for i, pool in enumerate(layout.pools):
        key = ("pools", i)
        prog = program_of(pool.command)
        if prog and "/" not in prog:
            path = pool.env.get("PATH") or agent_path(
                Agent(name=pool.name, profile=pool.profile, command=pool.command), base_path
            )
            if shutil.which(prog, path=path) is None:
                doc.problem(
                    (*key, "command"),
                    f"pool {pool.name!r}: command {prog!r} not found on PATH; install it, or set `command:` to its "
                    "full path",
                )
        if not pool.repo.is_dir():
            doc.problem(
                (*key, "repo"),
                f"pool {pool.name!r}: {str(pool.repo)!r} does not exist; clone the repository there or fix `repo:`",
            )
        elif not ((pool.repo / ".git").exists() or (pool.repo / "HEAD").is_file()):
            doc.problem((*key, "repo"), f"pool {pool.name!r}: {str(pool.repo)!r} is not a git repository; fix `repo:`")
    _check_engines(doc, layout)
    doc.fail_if_problems()


ENGINE_PACKAGES = {"bwrap": "bubblewrap", "docker": "docker.io", "podman": "podman"}
"""The Debian package of each sandbox engine's program, named when it is missing."""


def _check_engines(doc: Document, layout: Layout) -> None:
    """Each sandbox's engine (``bwrap``, ``docker``, ``podman``) is on this PATH."""
    members: list[tuple[Key, Any]] = [(("agents", a.index), a.sandbox) for a in layout.agents]
    members += [(("pools", i), p.sandbox) for i, p in enumerate(layout.pools)]
    for key, box in members:
        if box is not None and shutil.which(str(box.engine)) is None:
            doc.problem(
                (*key, "sandbox", "engine"),
                f"{box.engine} is not installed; install it (apt-get install {ENGINE_PACKAGES[str(box.engine)]}) "
                "or choose another engine",
            )


def _read_lines_only(path: Path) -> Document:
    """A Document for ``path`` with its key lines, for reporting later problems."""
    try:
        return read(path)
    except LayoutError:
        return Document(path=path, data={})
