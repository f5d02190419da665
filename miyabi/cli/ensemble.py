"""Commands that run the ensemble as a whole: up, reload, down, attach, status, restart,
controller, and the worker agent."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from miyabi import defaults
from miyabi.cli import output, params
from miyabi.cli.root import (
    HomeOpt,
    JsonOpt,
    LayoutOpt,
    SocketOpt,
    app,
    checked,
    handles_errors,
    home_of,
    resolve_target,
    running,
    tmux_for,
)
from miyabi.errors import MiyabiError


@app.command()
@handles_errors
def up(
    layout: Annotated[
        str | None,
        typer.Argument(
            show_default=False,
            help=(
                "Layout file or shipped layout name (default: the layout this home runs, else ./miyabi.yaml, "
                "else the default layout)."
            ),
        ),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Do not attach; print the command that attaches instead.")
    ] = False,
    controller: Annotated[
        bool,
        typer.Option(
            "--controller/--no-controller", help="Start the controller, which delivers messages and watches the agents."
        ),
    ] = True,
    socket: SocketOpt = None,
    home: HomeOpt = None,
) -> None:
    """Build a session from a layout, or reconcile a running one.

    Agents that run are left alone, a dead agent is respawned in its pane, a missing
    one gets a new pane. Starts the controller in the background (unless one runs)
    and attaches when run on a terminal.
    """
    from miyabi.cli.up import bring_up

    bring_up(layout, detach, controller, socket, home)


@app.command()
@handles_errors
def reload(
    layout: Annotated[
        str | None,
        typer.Argument(
            show_default=False, help="Layout file or shipped layout name (default: the one `miyabi up` last used here)."
        ),
    ] = None,
    socket: SocketOpt = None,
    home: HomeOpt = None,
) -> None:
    """Make the running controller adopt the layout now.

    Added agents get a pane, delivery and supervision; removed ones stop being
    supervised (their pane is left running) and their tasks go back to the queue;
    changed routes, limits and watchdog settings apply. A layout that does not load
    leaves the running one in place (exit 3, every problem listed).
    """
    from miyabi.config import load, shipped
    from miyabi.config.preflight import preflight
    from miyabi.controller.requests import request_reload

    h = home_of(home, socket)
    state = h.load_state()
    recorded = state.get("layout")
    path = shipped.for_up(layout) if layout is not None else Path(recorded) if isinstance(recorded, str) else None
    if path is None:
        raise MiyabiError(f"no layout is known for {h.root}; run `miyabi up` first, or name one")
    lay = load(path)
    preflight(lay)
    if isinstance(state.get("session"), str) and lay.session != state["session"]:
        raise MiyabiError(
            f"{path}: session {lay.session!r} is not the running {state['session']!r}; "
            "run `miyabi down`, then `miyabi up`, to change it"
        )
    h.save_state(
        **{
            **state,
            "layout": str(lay.path),
            "agents": lay.names,
            "max_body": lay.max_body,
            **({"socket": socket} if socket else {}),
        }
    )
    output.say(request_reload(h), "green")


@app.command()
@handles_errors
def down(socket: SocketOpt = None, home: HomeOpt = None, layout: LayoutOpt = None) -> None:
    """Stop the controller and end miyabi's session.

    The tmux server stops too when no other session runs on it. Pending messages stay
    in the inboxes.
    """
    from miyabi.controller import stop_background
    from miyabi.controller.webproc import dashboards, stop_dashboard
    from miyabi.errors import SessionNotFound
    from miyabi.supervision.keeper import mark_stopped
    from miyabi.supervision.processes import end_agents
    from miyabi.tmux.builder import down as build_down

    t = resolve_target(home, socket, layout)
    mark_stopped(t.home)  # a controller restarted by systemd must not rebuild the session
    pid = stop_background(t.home)
    if pid is not None:
        output.say(f"stopped the controller (pid {pid})")
    if web := stop_dashboard(t.home):
        output.say(f"stopped the dashboard (pid {', '.join(map(str, web))})")
    for kept in dashboards(t.home):  # started by hand (`miyabi web`): not ours to stop
        output.say(
            f"the dashboard started by hand still serves at {kept['base']} (pid {kept['pid']}); "
            f"stop it with Ctrl-C where it runs, or `kill {kept['pid']}`"
        )
    tmux = tmux_for(t.socket)
    try:
        server_gone = build_down(tmux, t.session, t.home)
    except SessionNotFound:
        output.say(f"no session {t.session!r} on socket {t.socket!r}; nothing to stop")
    else:
        tail = " and its tmux server" if server_gone else " (other sessions on the socket left running)"
        output.say(f"stopped session {t.session!r}{tail}")
    # what closing the panes did not end (a child in a session of its own, a program that ignores SIGHUP)
    if left := end_agents(t.home.root, t.socket):
        output.say(f"ended {len(left)} process(es) its agents left running (pid {', '.join(map(str, left))})")


@app.command()
@handles_errors
def attach(
    agent: Annotated[str | None, typer.Argument(show_default=False, help="Agent whose pane to select.")] = None,
    socket: SocketOpt = None,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Attach to miyabi's session, with AGENT's pane selected."""
    from miyabi.cli.up import exec_attach
    from miyabi.tmux.panes import attach_command, select

    t, tmux = running(home, socket, layout)
    pane = _agent_pane(tmux, t.session, agent) if agent else None
    if not sys.stdin.isatty():
        raise MiyabiError(f"attach needs a terminal; from one, run: {attach_command(t.socket, t.session, pane)}")
    if pane is not None:
        select(tmux, pane)
    exec_attach(tmux, t.session)


def _agent_pane(tmux: Any, session: str, agent: str) -> Any:
    from miyabi.errors import AgentNotFound
    from miyabi.tmux.panes import list_panes

    panes = [p for p in list_panes(tmux, session) if p.agent]
    pane = next((p for p in panes if p.agent == agent), None)
    if pane is None:
        raise AgentNotFound(agent, [p.agent for p in panes])
    return pane


@app.command()
@handles_errors
def status(
    json_out: JsonOpt = False,
    socket: SocketOpt = None,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
    all_hosts: Annotated[
        bool, typer.Option("--all-hosts", help="Also every other host on the bus (bus:) and its agents.")
    ] = False,
) -> None:
    """One row per agent: state, pid, uptime, CPU, RSS, restarts.

    Also its window and pane, its command, seconds since its last output and why it
    last died or was restarted. On a terminal each agent is one line, long cells cut
    with an ellipsis; piped, nothing is cut. With a ``bus:``, whether the bus is up; with
    --all-hosts, every host on it.
    """
    from miyabi.cli.status import show

    show(json_out, socket, home, layout, all_hosts)


@app.command()
@handles_errors
def restart(
    agent: Annotated[str, typer.Argument(help="The agent to restart.")],
    socket: SocketOpt = None,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Restart an agent now, clearing its crash-loop breaker.

    The agent gets SIGTERM, then SIGKILL for what ignores it, and runs again in its own
    pane; its backoff is forgotten. Needs the controller.
    """
    from miyabi.controller.requests import request_restart
    from miyabi.errors import AgentNotFound

    t = resolve_target(home, socket, layout)
    names = t.layout().names if t.layout_path else []
    if agent not in names:
        raise AgentNotFound(agent, names)
    request_restart(t.home, agent)
    output.say(f"restarted {agent}", "green")


@app.command()
@handles_errors
def controller(socket: SocketOpt = None, home: HomeOpt = None, layout: LayoutOpt = None) -> None:
    """Run the controller in the foreground (systemd, debugging).

    Only one controller runs per home; a second one exits 1 naming the first one's pid.
    """
    from miyabi.cli.up import run_controller

    run_controller(socket, home, layout)


@app.command()
def worker(
    name: Annotated[
        str | None,
        typer.Option(
            "--name", metavar="NAME", show_default=False, help="Agent name (default: $MIYABI_AGENT, else worker)."
        ),
    ] = None,
    think: Annotated[
        float,
        typer.Option(
            "--think",
            metavar="SECONDS",
            parser=checked(params.seconds(zero=True)),
            help="Seconds of simulated work after each message.",
        ),
    ] = 0.0,
    transcript: Annotated[
        Path | None,
        typer.Option(
            "--transcript",
            metavar="FILE",
            show_default=False,
            help="JSONL file of received messages (default: $MIYABI_HOME/logs/NAME.transcript.jsonl).",
        ),
    ] = None,
    hold_tasks: Annotated[
        bool,
        typer.Option(
            "--hold-tasks",
            help="Keep the tasks it is handed in progress instead of reporting them done (tests, demos).",
        ),
    ] = False,
    quota: Annotated[
        int,
        typer.Option(
            "--quota",
            metavar="N",
            parser=checked(params.count(0)),
            help="Rehearse a usage limit: after every N messages, refuse the next ones until the reset (0: never).",
        ),
    ] = 0,
    quota_reset: Annotated[
        float,
        typer.Option(
            "--quota-reset",
            metavar="SECONDS",
            parser=checked(params.seconds()),
            help="Seconds the rehearsed usage limit lasts.",
        ),
    ] = defaults.WORKER_QUOTA_RESET,
) -> None:
    """Run the built-in worker agent (it acks each message).

    It runs the jobs it is given and reports the tasks it is given done. For tests and
    demos, and for machines without an agent CLI.
    """
    from miyabi import worker as w

    agent = name or os.environ.get("MIYABI_AGENT") or "worker"
    raise typer.Exit(
        w.run(
            agent,
            transcript or w.default_transcript(agent),
            think,
            finish_tasks=not hold_tasks,
            quota=quota,
            quota_reset=quota_reset,
        )
    )
