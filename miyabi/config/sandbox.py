"""What encloses a sandboxed agent (layout ``sandbox:``): the command line that runs the
agent's own command inside bubblewrap, Docker or Podman.

:func:`plan` reads the agent and the machine (which directories exist, where a
worktree's git directory is) into a :class:`Box`; :func:`box_line` is a pure function
of the box and the agent's command line, tested on the command lines it builds
(tests/unit/test_sandbox.py). The tmux builder puts the line in front of the agent's
command (:func:`miyabi.tmux.builder.spawn_args`); the controller serves the box's
channel (:mod:`miyabi.controller.channels`). What a box lets an agent reach is in
docs/security.md.

The bubblewrap contract (its options: bwrap(1)): the root read-only; the working
directory (and a worktree's git directory) writable; a private ``/tmp``; the user's
home replaced by a private one (``sandbox/<agent>/home`` of the miyabi home, holding
the profile's own configuration); the miyabi home, the tmux socket directory and the
other agents' working directories hidden; its own pid and IPC namespaces (and network
namespace with ``network: none``); an environment of exactly what the layout gives,
what the profile's CLI needs (its API key) and ``sandbox.env``; the channel socket's
directory read-only at :data:`CHANNEL_DIR`.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from miyabi.config.model import Agent
from miyabi.config.settings import SandboxEngine, SandboxNetwork, SandboxSettings
from miyabi.files import private_dir

CHANNEL_DIR = "/tmp/.miyabi"
"""Where an agent's channel directory is bound inside its sandbox (read-only: the agent
can neither remove nor replace the socket). Under the sandbox's private ``/tmp``, the one
place bubblewrap can make a mount point in a read-only root."""

CHANNEL_SOCKET = "channel.sock"
"""The channel socket's name in its directory, inside and outside the sandbox."""

CHANNEL = f"{CHANNEL_DIR}/{CHANNEL_SOCKET}"
"""``MIYABI_CHANNEL`` inside a sandbox: the socket its ``miyabi`` commands use."""

PASS_ENV = ("TERM", "COLORTERM", "LANG", "LC_ALL", "LC_CTYPE")
"""Variables every sandbox takes from the pane's environment when they are set: the
terminal and the locale a CLI draws with."""


@dataclass(frozen=True)
class Needs:
    """What one agent CLI needs inside a sandbox.

    Attributes:
        env: the variables it reads its API key, endpoint and provider from.
        config: files under the user's home it keeps its settings and login in;
            copied into the private home when that has none (:func:`prepare`): the
            agent gets its CLI's login, never the user's other conversations.
    """

    env: tuple[str, ...] = ()
    config: tuple[str, ...] = ()


NEEDS: Mapping[str, Needs] = {
    # code.claude.com/docs/en/settings (environment variables), /en/iam (credentials)
    "claude": Needs(
        (
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "ANTHROPIC_BASE_URL",
            "ANTHROPIC_MODEL",
            "CLAUDE_CODE_OAUTH_TOKEN",
            "CLAUDE_CODE_USE_BEDROCK",
            "CLAUDE_CODE_USE_VERTEX",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
            "DISABLE_AUTOUPDATER",
        ),
        (".claude.json", ".claude/.credentials.json", ".claude/settings.json"),
    ),
    # developers.openai.com/codex/config-advanced
    "codex": Needs(("OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_HOME"), (".codex/auth.json", ".codex/config.toml")),
    # github.com/google-gemini/gemini-cli docs/get-started/authentication.md
    "gemini": Needs(
        ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"),
        (".gemini/settings.json", ".gemini/oauth_creds.json"),
    ),
    # aider.chat/docs/config/api-keys.html
    "aider": Needs(
        ("OPENAI_API_KEY", "OPENAI_API_BASE", "ANTHROPIC_API_KEY", "OPENROUTER_API_KEY"),
        (".aider.conf.yml",),
    ),
    # opencode.ai/docs/config
    "opencode": Needs(
        ("OPENCODE_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"),
        (".config/opencode/opencode.json", ".local/share/opencode/auth.json"),
    ),
}
"""Per profile program (``Profile.program``), what its CLI needs in a sandbox."""


@dataclass(frozen=True)
class Box:
    """One agent's sandbox (absolute paths throughout).

    Attributes:
        name: the agent's name.
        settings: its ``sandbox:`` settings.
        workdir: its working directory (bound read-write; where it starts).
        home: ``HOME`` inside.
        home_source: the directory bound read-write at ``home``.
        hidden: directories replaced by an empty one (the user's home, the miyabi
            home, the tmux socket directory, the other agents' working directories).
        writable: more paths bound read-write at the same place (a worktree's git
            directory).
        readonly: paths bound read-only at the same place, in case a hidden
            directory holds them (this Python and miyabi, ``sandbox.binds``, the hook
            settings miyabi writes).
        channel_dir: the directory of the agent's channel socket, bound read-only at
            :data:`CHANNEL_DIR`.
        env: the variables set as given (the layout's, miyabi's own).
        pass_env: names taken from the pane's environment when set.
    """

    name: str
    settings: SandboxSettings
    workdir: Path
    home: Path
    home_source: Path
    channel_dir: Path
    hidden: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    readonly: tuple[Path, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    pass_env: tuple[str, ...] = ()
    config: tuple[str, ...] = ()
    """The profile's configuration files (:attr:`Needs.config`), for :func:`prepare`."""
    tag: str = "0"
    """Tells the miyabi home apart in container names (a hash of its path)."""


def box_dir(home_root: Path, agent: str) -> Path:
    """``sandbox/<agent>`` of the miyabi home: the agent's private home (``home/``)."""
    return home_root / "sandbox" / agent


def channel_dir(home_root: Path, agent: str) -> Path:
    """The directory of ``agent``'s channel socket (``run/channels/<agent>``)."""
    return home_root / "run" / "channels" / agent


def git_common_dir(workdir: Path) -> Path | None:
    """The git directory a worktree's ``.git`` file points to, up to the repository's
    own ``.git`` (commits write there); None for a plain checkout or none."""
    try:
        text = (workdir / ".git").read_text(encoding="utf-8")
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    gitdir = Path(text.partition(":")[2].strip())
    gitdir = gitdir if gitdir.is_absolute() else (workdir / gitdir).resolve()
    # <repo>/.git/worktrees/<name>: the common directory is two levels up
    return gitdir.parent.parent if gitdir.parent.name == "worktrees" else gitdir


def plan(
    agent: Agent,
    settings: SandboxSettings,
    env: Mapping[str, str],
    home_root: Path,
    workdir: Path,
    hooks_dir: Path | None = None,
    user_home: Path | None = None,
) -> Box:
    """The box for ``agent`` (its settings ``settings``), as this machine has it.

    Args:
        env: the environment miyabi gives the agent (the layout's ``env``,
            ``MIYABI_*``, PATH); a ``HOME`` in it is the agent's home, bound as it is.
        home_root: the miyabi home (hidden).
        workdir: the agent's working directory.
        hooks_dir: the directory of the hook settings miyabi writes for it, if any.
        user_home: the user's home (default: ``$HOME``), hidden.
    """
    user = user_home or Path(os.path.expanduser("~"))
    private = box_dir(home_root, agent.name) / "home"
    given_home = env.get("HOME")
    home, home_source = (Path(given_home), Path(given_home)) if given_home else (user, private)
    hidden = [Path("/tmp"), user, home_root]
    tmux_dir = os.environ.get("TMUX_TMPDIR")
    if tmux_dir:
        hidden.append(Path(tmux_dir))
    hidden += [Path(p) for p in settings.hide]
    needs = NEEDS.get(agent.profile.program or "", Needs())
    writable = [p for p in (git_common_dir(workdir),) if p is not None]
    tools = {Path(sys.prefix), Path(sys.base_prefix), Path(__file__).resolve().parent.parent.parent}
    # a read-only bind never shows a hidden home again (one that holds it is left out)
    secret = [home_root, user, *(Path(p) for p in settings.hide)]
    readonly = [p for p in [*sorted(tools), *(Path(b) for b in settings.binds)] if not _under_any(secret, p)]
    if hooks_dir is not None:
        readonly.append(hooks_dir)
    return Box(
        name=agent.name,
        settings=settings,
        workdir=workdir,
        home=home,
        home_source=home_source,
        channel_dir=channel_dir(home_root, agent.name),
        hidden=tuple(p for p in hidden if p.is_dir()),
        writable=tuple(writable),
        readonly=tuple(p for p in readonly if p.exists()),
        env={**env, "HOME": str(home), "MIYABI_CHANNEL": CHANNEL},
        pass_env=tuple(n for n in dict.fromkeys([*PASS_ENV, *needs.env, *settings.env]) if n not in env),
        config=() if given_home else needs.config,
        tag=hashlib.sha256(str(home_root).encode()).hexdigest()[:8],
    )


def prepare(box: Box, user_home: Path | None = None) -> None:
    """Make the directories ``box`` binds (private, 0700): the private home with a copy
    of each of the profile's configuration files it lacks, from ``user_home`` (default
    ``$HOME``), and the channel's directory.

    Raises:
        OSError: a directory cannot be made.
    """
    user = user_home or Path(os.path.expanduser("~"))
    private_dir(box.channel_dir)
    if not box.home_source.exists():  # a home the layout names is left as it is
        private_dir(box.home_source)
    for rel in box.config:
        src, dest = user / rel, box.home_source / rel
        if src.is_file() and not dest.exists():
            private_dir(dest.parent)
            shutil.copy2(src, dest)
            dest.chmod(0o600)


def _under(path: Path, dirs: Sequence[Path]) -> bool:
    """Whether ``path`` is one of ``dirs`` or inside one."""
    return any(path == d or d in path.parents for d in dirs)


def _under_any(paths: Sequence[Path], d: Path) -> bool:
    """Whether one of ``paths`` is ``d`` or inside it."""
    return any(_under(p, [d]) for p in paths)


def bwrap_words(box: Box) -> list[str]:
    """bubblewrap's options for ``box`` (up to, not including, ``--`` and the command;
    the variables of ``box.pass_env`` are added by :func:`box_line`). Mounts go in
    order: what is hidden first, then what shows through it."""
    words = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    done: list[Path] = []
    for d in box.hidden:
        if _under(d, done):
            continue  # an empty directory already hides it
        if d == box.home:
            words += ["--bind", str(box.home_source), str(d)]
        else:
            words += ["--tmpfs", str(d)]
        done.append(d)
    if box.home not in done:
        words += ["--bind", str(box.home_source), str(box.home)]
    words += ["--bind", str(box.workdir), str(box.workdir)]
    for p in box.writable:
        words += ["--bind", str(p), str(p)]
    for p in box.readonly:
        words += ["--ro-bind", str(p), str(p)]
    words += ["--ro-bind", str(box.channel_dir), CHANNEL_DIR]
    words += ["--unshare-pid", "--unshare-ipc", "--die-with-parent"]
    if box.settings.network == SandboxNetwork.NONE:
        words.append("--unshare-net")
    words += ["--chdir", str(box.workdir), "--clearenv"]
    for k, v in sorted(box.env.items()):
        words += ["--setenv", k, v]
    return words


def container_name(box: Box) -> str:
    """The container's name: one per agent of a miyabi home, so that a respawn removes
    the container the last process left (``docker rm -f``)."""
    return f"miyabi-{box.tag}-{box.name}"


def container_words(box: Box) -> list[str]:
    """``docker run`` (or ``podman run``) for ``box``, up to the command: the same
    contract through bind mounts, in ``sandbox.image``; variables of ``pass_env``
    pass as ``-e NAME`` (taken from the client's environment when set)."""
    engine = str(box.settings.engine)
    words = [engine, "run", "--rm", "-i", "-t", "--init", "--name", container_name(box)]
    words += ["--network", "none" if box.settings.network == SandboxNetwork.NONE else "host"]
    words += ["--user", f"{os.getuid()}:{os.getgid()}", "--tmpfs", "/tmp"]
    if box.settings.engine == SandboxEngine.PODMAN:
        words += ["--userns", "keep-id"]
    words += ["-v", f"{box.home_source}:{box.home}", "-v", f"{box.workdir}:{box.workdir}"]
    for p in box.writable:
        words += ["-v", f"{p}:{p}"]
    for p in box.readonly:
        words += ["-v", f"{p}:{p}:ro"]
    words += ["-v", f"{box.channel_dir}:{CHANNEL_DIR}:ro", "-w", str(box.workdir)]
    for k, v in sorted(box.env.items()):
        words += ["-e", f"{k}={v}"]
    for name in box.pass_env:
        words += ["-e", name]
    assert box.settings.image is not None  # the loader requires it for these engines
    return [*words, box.settings.image]


def box_line(box: Box, line: str) -> str:
    """The shell line (for ``/bin/sh -c``) that runs the shell command line ``line``
    inside ``box``; the sandbox's process replaces the shell (``exec``).

    For bubblewrap, the shell first collects ``--setenv NAME VALUE`` for each variable
    of ``box.pass_env`` that the pane's environment has (names are checked
    identifiers, so ``eval`` sees no data)."""
    inner = ["/bin/sh", "-c", line]
    if box.settings.engine == SandboxEngine.BWRAP:
        names = " ".join(box.pass_env)
        collect = (
            f'set --; for n in {names}; do eval "[ -n \\"\\${{$n+x}}\\" ]" && '
            f'eval "set -- \\"\\$@\\" --setenv $n \\"\\${{$n}}\\""; done; '
            if names
            else "set --; "
        )
        return f'{collect}exec {shlex.join(bwrap_words(box))} "$@" -- {shlex.join(inner)}'
    name = shlex.quote(container_name(box))
    engine = str(box.settings.engine)
    return f"{engine} rm -f {name} >/dev/null 2>&1; exec {shlex.join(container_words(box))} {shlex.join(inner)}"
