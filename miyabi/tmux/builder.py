"""Build and reconcile miyabi's tmux session from a layout, in one tmux invocation.

:func:`up` creates the session when it is missing, or reconciles a running one:
agents that run are left alone, a dead agent's pane is respawned in place, a missing
agent gets a new pane (in a window with room, else a new window), and panes tagged
with agents the layout no longer has are reported, not killed. Everything one call
does goes to tmux as a single chained command line.

Measured on tmux 3.3a, and relied on here: in a chained invocation, a command with
no ``-t`` acts on the pane or window that the previous ``new-session``,
``new-window`` or ``split-window`` created (not when those ran with ``-d``), and the
first failing command ends the chain.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from miyabi import defaults
from miyabi.agents.hooks import hook_options, with_options
from miyabi.agents.profiles import resume_words
from miyabi.config import sandbox
from miyabi.config.model import Agent, Layout
from miyabi.config.preflight import agent_path, exec_line
from miyabi.config.settings import SandboxSettings
from miyabi.errors import HomeGone, SessionConflict, SessionNotFound, TmuxError
from miyabi.files import private_file
from miyabi.home import Home
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import (
    FAILED_TAG,
    HOME_TAG,
    LAYOUT_TAG,
    TAG,
    Pane,
    Runner,
    exact,
    list_panes,
    session_exists,
    session_option,
)
from miyabi.tmux.runner import Command, Tmux, escape_format

WINDOW_PREFIX = "agents"
"""Windows are named ``agents-1``, ``agents-2``, …"""

BORDER_FORMAT = (
    " #{?pane_active,#[reverse],}#{" + TAG + "}#[default]"
    " #{?pane_dead,#[fg=red]dead#[default] ,}#{pane_current_command}"
    "#{?#{" + FAILED_TAG + "}, #[fg=red]FAILED: #{" + FAILED_TAG + "}#[default],} "
)
"""Pane border label: the agent's tag (not the title, which programs can change), and
why the watchdog gave up on it, if it did."""


Starts = Callable[[Agent, bool], str | None]
"""How :func:`up` starts an agent's process: (the agent, True when its dead pane is
respawned, False when it gets a new pane) → the conversation it resumes (for
:func:`launch_line`), or None for a fresh start."""


def _fresh(agent: Agent, respawn: bool) -> str | None:
    return None


@dataclass
class UpReport:
    """What :func:`up` did.

    Attributes:
        session: the session name.
        created_session: True when the session did not exist before.
        created: agents that got a new pane.
        respawned: (agent, how its program had ended) for dead panes respawned.
        running: agents left alone because they run.
        extra: (agent, pane id) for tagged panes that the layout does not name.
        panes: agent → pane id after the call.
        tmux_invocations: tmux processes started for the build itself.
    """

    session: str
    created_session: bool = False
    created: list[str] = field(default_factory=list)
    respawned: list[tuple[str, str]] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)
    panes: dict[str, str] = field(default_factory=dict)
    tmux_invocations: int = 0


def agent_env(agent: Agent, home: Home, socket: str) -> dict[str, str]:
    """The environment miyabi adds for an agent's process: the layout's ``env``, PATH
    with the ``miyabi`` command on it, and ``MIYABI_AGENT``, ``MIYABI_HOME``,
    ``MIYABI_SOCKET`` so that the agent's own ``miyabi`` commands reach this ensemble."""
    env = dict(agent.env)
    env["PATH"] = agent_path(agent)
    env["MIYABI_AGENT"] = agent.name
    env["MIYABI_HOME"] = str(home.root)
    env["MIYABI_SOCKET"] = socket
    return env


HOOK_SCRIPT = Path(__file__).resolve().parent.parent / "cli" / "hook.py"
"""``miyabi hook``'s code, which needs the standard library only."""


def hook_command() -> list[str]:
    """The words that run ``miyabi hook``: this interpreter on the hook's own file, by
    absolute paths (an agent's PATH cannot hide them), isolated (``-I``) and without
    site-packages (``-S``), which halves its start-up against the console script."""
    return [sys.executable, "-I", "-S", str(HOOK_SCRIPT)]


LOGPIPE_SCRIPT = Path(__file__).resolve().parent / "logpipe.py"
"""The program ``pipe-pane`` runs to append a pane's output to its log and rotate it
(:mod:`miyabi.tmux.logpipe`; standard library only)."""


LOGPIPE_START = f"import sys;sys.path+=[{str(LOGPIPE_SCRIPT.parent)!r}];import logpipe"
"""What the interpreter runs to start :mod:`~miyabi.tmux.logpipe`, which runs its pipe
when imported under the name ``logpipe``. The module is imported rather than run as a
script, whose code Python compiles anew at each start (it caches the bytecode of
imported modules only). Each pane's pipe starts once per ``miyabi up`` and respawn, 16
at once for 16 agents: with this and its light imports it costs 36 M instructions to
start, not 65 M (measured with callgrind). Short, because it is in every pane's set-up
in the one tmux command line that builds the session."""


def log_command(agent: Agent, home: Home) -> str:
    """The shell command ``pipe-pane`` runs for ``agent``'s pane: :mod:`miyabi.tmux.logpipe`
    on this interpreter, isolated and without site-packages (as :func:`hook_command`),
    appending to ``logs/<agent>.log`` and rotating it as the layout's ``logs:`` says.
    Every word is shell-quoted; tmux format-expands the command, so the caller doubles
    its ``#`` (:func:`~miyabi.tmux.runner.escape_format`). Limits equal to the
    defaults are left out (the pipe's defaults are the same): every byte counts in the
    one command line that builds the session."""
    return logpipe_command(home.pane_log(agent.name), agent.logs.max_bytes, agent.logs.keep)


def logpipe_command(path: Path, max_bytes: int = defaults.LOG_MAX_BYTES, keep: int = defaults.LOG_KEEP) -> str:
    """The shell command that appends a pane's output to ``path``, rotated at
    ``max_bytes`` with ``keep`` old files (see :func:`log_command`)."""
    limits = []
    if max_bytes != defaults.LOG_MAX_BYTES:
        limits += ["--max-bytes", str(max_bytes)]
    if keep != defaults.LOG_KEEP:
        limits += ["--keep", str(keep)]
    words = [sys.executable, "-I", "-S", "-c", LOGPIPE_START, *limits, str(path)]
    return f"umask 077; exec {shlex.join(words)}"


def launch_line(agent: Agent, home: Home, resume: str | None = None) -> str:
    """The agent's command line with its profile's hooks installed (see
    :mod:`miyabi.agents.hooks`): the hook options go right after the program's word,
    so a layout's ``command: claude --model opus`` keeps them. A command that does not
    run the profile's program is left as it is (the screen alone tells its state).
    ``resume``: None for a fresh start, else resume the conversation with that id ("":
    none known; only a profile that needs no id resumes then; see
    :func:`~miyabi.agents.profiles.resume_words`)."""
    p = agent.profile
    if not p.program:
        return agent.command
    words = resume_words(p, resume) if resume is not None else []
    if p.hooks:
        words += hook_options(p, agent.name, home.run, hook_command())
    line = with_options(agent.command, p.program, words)
    return agent.command if line is None else line


def spawn_args(
    agent: Agent,
    home: Home,
    socket: str,
    cwd: Path,
    hide: Iterable[str] = defaults.SECRET_ENV,
    resume: str | None = None,
) -> list[str]:
    """Options and command shared by new-session, new-window, split-window and
    respawn-pane: ``-c DIR env -u SECRET … K=V … /bin/sh -c LINE`` (``hide``: the
    layout's secret variables, see ``Layout.secret_env``; ``resume`` as for
    :func:`launch_line`).

    The environment goes through env(1), never tmux's ``-e``: ``new-session -e`` also
    writes the variables into the session's environment, where every later pane (and
    any window the user opens) would inherit one agent's values, and tmux 3.3a
    replaces a PATH given with ``-e`` by the client's (both measured). env(1) execs
    the shell, which execs the agent: one pid throughout."""
    given = agent_env(agent, home, socket)
    env = [f"{k}={v}" for k, v in given.items()]
    # Secrets the controller uses never reach an agent (should the tmux server hold them).
    unset = [w for var in sorted(hide) for w in ("-u", var)]
    workdir = agent.cwd or cwd
    line = exec_line(launch_line(agent, home, resume))
    if agent.sandbox is not None:
        line = sandboxed(agent, agent.sandbox, given, home, workdir, line)
    return ["-c", escape_format(str(workdir)), "env", *unset, *env, "/bin/sh", "-c", line]


def sandboxed(
    agent: Agent, settings: SandboxSettings, env: dict[str, str], home: Home, workdir: Path, line: str
) -> str:
    """``line`` (what ``/bin/sh -c`` runs for the agent) run in the agent's sandbox
    (see :mod:`miyabi.config.sandbox`), whose directories are made first.

    Raises:
        OSError: the sandbox's directories cannot be made.
    """
    hooks = home.run / "hooks" / agent.name if agent.profile.hooks == "claude" else None
    box = sandbox.plan(agent, settings, env, home.root, workdir, hooks)
    sandbox.prepare(box)
    return sandbox.box_line(box, line)


def pane_setup(agent: Agent, home: Home, target: Sequence[str] = ()) -> list[Command]:
    """Commands that tag a new (or respawned) pane, title it and log its output.

    ``target`` is ``("-t", "%ID")`` for a known pane, or empty for the pane the
    previous command in the chain created. The log is appended, and rotated at the
    layout's ``logs.max_bytes``, by :func:`log_command`, which makes a new log file
    private (0600) like everything in the home."""
    t = list(target)
    return [
        ["set-option", "-p", *t, TAG, agent.name],
        ["select-pane", *t, "-T", escape_format(agent.title)],
        # Not -o: that toggles, and would close the pipe a respawned pane still has.
        ["pipe-pane", *t, escape_format(log_command(agent, home))],
    ]


def respawn_agent(
    runner: Runner,
    agent: Agent,
    pane_id: str,
    home: Home,
    socket: str,
    cwd: Path,
    hide: Iterable[str] = defaults.SECRET_ENV,
    resume: str | None = None,
) -> int:
    """Run ``agent``'s own command again in its pane, in place (``respawn-pane -k``: same
    pane id, position and tag; ``resume``: resume that conversation, as for
    :func:`launch_line`), then set the pane up again and clear a failure mark, in
    one chain: the log's new pipe is open before the new program's first bytes are read,
    so its output starts after a restart mark, never joined to the dead program's last
    line. The set-up is best effort: a program that exits at once leaves a dead pane,
    where ``pipe-pane`` fails.

    Returns:
        the new process's pid (0 when tmux does not tell).

    Raises:
        TmuxError: the respawn itself failed.
    """
    respawn = ["respawn-pane", "-k", "-t", pane_id, *spawn_args(agent, home, socket, cwd, hide, resume)]
    setup = [*pane_setup(agent, home, ("-t", pane_id)), ["set-option", "-p", "-u", "-t", pane_id, FAILED_TAG]]
    try:
        runner.run_chain([respawn, *setup])
    except TmuxError as e:
        if e.command == "respawn-pane":
            raise
    try:
        return PaneDriver(runner).pane_pid(pane_id)
    except TmuxError:  # the respawn happened; what follows is best effort (a closed channel, a vanished pane)
        return 0


def window_setup(version: tuple[int, int] = (3, 3)) -> list[Command]:
    """Window options for the window the previous command created. On tmux 3.4 and
    newer, ``allow-set-title off`` also stops programs from retitling their panes."""
    cmds: list[Command] = [
        ["set-option", "-w", "remain-on-exit", "on"],
        ["set-option", "-w", "allow-rename", "off"],
        ["set-option", "-w", "automatic-rename", "off"],
        ["set-option", "-w", "pane-border-status", "top"],
        ["set-option", "-w", "pane-border-format", BORDER_FORMAT],
    ]
    if version >= (3, 4):
        cmds.append(["set-option", "-w", "allow-set-title", "off"])
    return cmds


def window_size(layout: Layout) -> tuple[int, int]:
    """Columns and rows for windows of the session: room for ``per_window`` panes of
    ``pane_size`` each, tiled as tmux's ``tiled`` layout arranges them (rows first),
    plus borders and the border status line."""
    n = max(1, min(layout.per_window, max([len(layout.named), *(p.max for p in layout.pools)])))
    rows = cols = 1
    while rows * cols < n:  # tmux layout-set.c: layout_set_tiled
        rows += 1
        if rows * cols < n:
            cols += 1
    w, h = layout.pane_size
    return cols * w + (cols - 1), rows * (h + 1)


def _chunks(agents: Sequence[Agent], size: int) -> list[list[Agent]]:
    return [list(agents[i : i + size]) for i in range(0, len(agents), size)]


def window_target(session: str, window: str) -> str:
    """A target that names a window of a session exactly (``=s:=agents-1``)."""
    return f"={session}:={window}"


def build_commands(
    layout: Layout, home: Home, socket: str, cwd: Path, version: tuple[int, int] = (3, 3)
) -> list[list[Command]]:
    """The commands that create the session with every agent, as groups (one per pane,
    plus a last one) that each start with an explicitly targeted command, so that
    :meth:`Tmux.run_units` may cut between any two groups."""
    width, height = window_size(layout)
    units: list[list[Command]] = []
    for w, group in enumerate(_chunks([a for a in layout.agents if a.window is None], layout.per_window)):
        name = f"{WINDOW_PREFIX}-{w + 1}"
        for p, agent in enumerate(group):
            spawn = spawn_args(agent, home, socket, cwd, layout.secret_env)
            unit: list[Command]
            if w == 0 and p == 0:
                unit = [
                    ["new-session", "-d", "-s", layout.session, "-x", str(width), "-y", str(height), "-n", name, *spawn]
                ]
                unit += session_setup(layout, home, width, height)
                unit += window_setup(version)
            elif p == 0:
                unit = [["new-window", "-t", exact(layout.session), "-n", name, *spawn], *window_setup(version)]
            else:
                unit = [["split-window", "-t", window_target(layout.session, name), *spawn], ["select-layout", "tiled"]]
            units.append(unit + pane_setup(agent, home))
    first = window_target(layout.session, f"{WINDOW_PREFIX}-1")
    units.append([["select-window", "-t", first], ["select-pane", "-t", first + ".{top-left}"]])
    return units


def session_setup(layout: Layout, home: Home, width: int, height: int) -> list[Command]:
    """Session options: ownership tags, and the size later windows get while detached;
    and the layout's secrets out of the server's global environment (see
    :func:`forget_secrets`)."""
    s = ["-t", exact(layout.session)]
    return [
        ["set-option", *s, HOME_TAG, str(home.root)],
        ["set-option", *s, LAYOUT_TAG, str(layout.path)],
        ["set-option", *s, "default-size", f"{width}x{height}"],
        *forget_secrets(layout),
    ]


def forget_secrets(layout: Layout) -> list[Command]:
    """Commands that remove the layout's secret variables from the tmux server's global
    environment, which every pane inherits and ``show-environment -g`` prints to anyone
    on the socket: a server another client started may hold them."""
    return [["set-environment", "-g", "-u", var] for var in sorted(layout.secret_env)]


def check_owner(tmux: Tmux, session: str, home: Home | None) -> None:
    """Refuse to touch a session that miyabi did not build (or built for another
    home; ``home`` None skips that test).

    Raises:
        SessionConflict: the session has no miyabi tag, or another home's.
    """
    owner = session_option(tmux, session, HOME_TAG)
    if not owner:
        raise SessionConflict(
            f"tmux session {session!r} on socket {tmux.socket!r} was not made by miyabi; "
            "leaving it alone: set another `session:` in the layout or use --socket"
        )
    if home is not None and owner != str(home.root):
        raise SessionConflict(
            f"tmux session {session!r} on socket {tmux.socket!r} belongs to the miyabi home {owner}; "
            f"run miyabi there, or use --home {owner}"
        )


def reconcile_commands(
    layout: Layout,
    home: Home,
    socket: str,
    cwd: Path,
    panes: Sequence[Pane],
    report: UpReport,
    version: tuple[int, int] = (3, 3),
    respawn_dead: bool = True,
    starts: Starts = _fresh,
) -> list[list[Command]]:
    """The command groups that bring a running session in line with the layout (fills
    ``report``); each group starts with an explicitly targeted command. With
    ``respawn_dead`` False, dead panes are left to the watchdog; ``starts`` says which
    processes resume a conversation."""
    by_agent: dict[str, Pane] = {}
    for p in panes:
        if p.agent and p.agent not in by_agent:
            by_agent[p.agent] = p
    wanted = set(layout.names)
    report.extra = [(p.agent, p.pane_id) for p in panes if p.agent and p.agent not in wanted]

    units, missing = _respawns(layout, home, socket, cwd, by_agent, report, respawn_dead, starts)
    if not missing:
        return units
    return units + _new_panes(layout, home, socket, cwd, panes, missing, report, version, starts)


def _respawns(
    layout: Layout,
    home: Home,
    socket: str,
    cwd: Path,
    by_agent: dict[str, Pane],
    report: UpReport,
    respawn_dead: bool,
    starts: Starts,
) -> tuple[list[list[Command]], list[Agent]]:
    """The command groups that respawn the layout's dead agents in place (with
    ``respawn_dead``), and the agents that have no pane."""
    units: list[list[Command]] = []
    missing: list[Agent] = []
    for agent in layout.agents:
        pane = by_agent.get(agent.name)
        if pane is None:
            missing.append(agent)
        elif pane.dead and not respawn_dead:
            report.running.append(agent.name)
        elif pane.dead:
            report.respawned.append((agent.name, pane.exit_description()))
            units.append(
                [
                    [
                        "respawn-pane",
                        "-k",
                        "-t",
                        pane.pane_id,
                        *spawn_args(agent, home, socket, cwd, layout.secret_env, starts(agent, True)),
                    ],
                    *pane_setup(agent, home, ("-t", pane.pane_id)),
                ]
            )
        else:
            report.running.append(agent.name)
    return units, missing


def _new_panes(
    layout: Layout,
    home: Home,
    socket: str,
    cwd: Path,
    panes: Sequence[Pane],
    missing: list[Agent],
    report: UpReport,
    version: tuple[int, int],
    starts: Starts,
) -> list[list[Command]]:
    """The command groups that give each of ``missing`` a pane: split into its
    windows' room, else in a new window."""
    units: list[list[Command]] = []
    # Room left in miyabi's windows (those holding a tagged pane; never a window the
    # user opened), in index order.
    count: dict[str, int] = {}
    order: dict[str, int] = {}
    for p in panes:
        if p.agent:
            count[p.window_id] = count.get(p.window_id, 0) + 1
            order[p.window_id] = p.window_index
    windows = sorted(count, key=lambda w: order[w])
    names = {p.window_name for p in panes}
    name_of = {p.window_id: p.window_name for p in panes}
    next_n: dict[str, int] = {}
    for agent in missing:
        spawn = spawn_args(agent, home, socket, cwd, layout.secret_env, starts(agent, False))
        prefix = agent.window or WINDOW_PREFIX
        # a pool's instances share its windows (``coder``, ``coder-2``, …); named agents share ``agents-N``
        mine = [w for w in windows if _window_family(name_of.get(w, w), prefix, agent.window is not None)]
        room = next((w for w in mine if count[w] < layout.per_window), None)
        unit: list[Command]
        if room is not None:
            unit = [["split-window", "-t", room, *spawn], ["select-layout", "tiled"]]
            count[room] += 1
        else:
            n = next_n.get(prefix, 1)
            while _window_name(prefix, n, agent.window is not None) in names:
                n += 1
            next_n[prefix] = n
            name = _window_name(prefix, n, agent.window is not None)
            names.add(name)
            unit = [["new-window", "-t", exact(layout.session), "-n", name, *spawn], *window_setup(version)]
            # The new window's id is unknown inside the chain; later agents that fit
            # in it are split from it by name.
            wid = window_target(layout.session, name)
            name_of[wid] = name
            windows.append(wid)
            count[wid] = 1
            order[wid] = 1 << 30
        units.append(unit + pane_setup(agent, home))
        report.created.append(agent.name)
    return units


def _window_name(prefix: str, n: int, own: bool) -> str:
    """``agents-1``, ``agents-2`` …; a pool's: ``coder``, ``coder-2`` …"""
    return prefix if own and n == 1 else f"{prefix}-{n}"


def _window_family(name: str, prefix: str, own: bool) -> bool:
    """Whether window ``name`` is one of ``prefix``'s (see :func:`_window_name`)."""
    if own and name == prefix:
        return True
    head, _, n = name.rpartition("-")
    return head == prefix and n.isdigit()


def up(
    layout: Layout,
    tmux: Tmux,
    home: Home,
    cwd: Path | None = None,
    respawn_dead: bool = True,
    make_home: bool = True,
    starts: Starts = _fresh,
) -> UpReport:
    """Create or reconcile ``layout``'s session on ``tmux``'s server.

    Args:
        layout: the ensemble (already preflight-checked).
        tmux: miyabi's server.
        home: where logs go; created if missing (with ``make_home``).
        cwd: directory for agents without ``cwd`` (default: the current directory).
        respawn_dead: respawn agents whose program died (the controller leaves that
            to its watchdog, which keeps backoff and the crash-loop breaker).
        make_home: create the home when it is missing; False (the controller) builds
            nothing for a home that was removed.
        starts: which of the processes it starts in a running session (a dead pane
            respawned, a new pane) resume a conversation (default: none); the named
            agents of a session it creates start fresh.

    Raises:
        TmuxUnavailable: tmux missing or too old.
        SessionConflict: a session of that name exists and is not miyabi's here.
        TmuxError: tmux refused a command.
        HomeGone: the home was removed (without ``make_home``).
    """
    version = tmux.require_version()
    if make_home:
        home.ensure()
    elif not home.run.is_dir():
        raise HomeGone(home.root)
    for agent in layout.agents:  # an existing log from an older miyabi may be 0644
        private_file(home.pane_log(agent.name))
    cwd = cwd or Path(os.getcwd())
    report = UpReport(session=layout.session)
    before = tmux.invocations
    if not session_exists(tmux, layout.session):
        report.created_session = True
        report.created = [a.name for a in layout.agents if a.window is None]
        # the server this may start inherits the environment of its first client: no secrets
        tmux.run_units(build_commands(layout, home, tmux.socket, cwd, version), hide=layout.secret_env)
        if len(report.created) < len(layout.agents):  # agents of their own windows (pool instances)
            more = UpReport(session=layout.session)
            units = reconcile_commands(
                layout, home, tmux.socket, cwd, list_panes(tmux, layout.session), more, version, starts=starts
            )
            tmux.run_units(units)
            report.created += more.created
    else:
        check_owner(tmux, layout.session, home)
        panes = list_panes(tmux, layout.session)
        units = reconcile_commands(layout, home, tmux.socket, cwd, panes, report, version, respawn_dead, starts)
        if units:
            # Put the user's view back where it was: new windows and panes take focus.
            restore: list[Command] = [["select-pane", "-t", p.pane_id] for p in panes if p.pane_active]
            restore += [["select-window", "-t", p.window_id] for p in panes if p.window_active][:1]
            restore.append(["set-option", "-t", exact(layout.session), LAYOUT_TAG, str(layout.path)])
            tmux.run_units([*units, restore + forget_secrets(layout)])
        else:
            tmux.run_chain(forget_secrets(layout))
    report.tmux_invocations = tmux.invocations - before
    report.panes = {p.agent: p.pane_id for p in list_panes(tmux, layout.session) if p.agent}
    return report


def down(tmux: Tmux, session: str, home: Home | None = None) -> bool:
    """Kill miyabi's session, and the server if no other session is left on it.

    Returns:
        True when the server was stopped as well.

    Raises:
        SessionNotFound: no such session (or no server).
        SessionConflict: the session was not made by miyabi (or by another home).
    """
    if not session_exists(tmux, session):
        raise SessionNotFound(session, tmux.socket)
    check_owner(tmux, session, home)
    tmux.run("kill-session", "-t", exact(session))
    if tmux.sessions():
        return False
    tmux.run("kill-server", check=False)
    return True
