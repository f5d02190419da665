"""Commands on the ensemble as a whole: up, down, attach, status, restart, approve, deny, controller,
and the listings of shipped layouts and profiles, init and the worker agent."""

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
            help="Layout file or shipped layout name (default: ./miyabi.yaml, else the default layout).",
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
    """Build the session from a layout, or reconcile a running one.

    Agents that run are left alone, a dead agent is respawned in its pane, a missing
    one gets a new pane. Starts the controller in the background (unless one runs)
    and attaches when run on a terminal.
    """
    from miyabi.config import load, shipped
    from miyabi.config.preflight import preflight
    from miyabi.controller import start_background
    from miyabi.home import Home
    from miyabi.supervision.keeper import clear_stopped
    from miyabi.tmux.builder import up as build_up
    from miyabi.tmux.panes import attach_command

    h = Home.resolve(home)
    path = shipped.for_command(layout, h)  # bare: the layout this home runs (a reload's included)
    lay = load(path)
    preflight(lay)
    sock = socket or h.load_state().get("socket") or defaults.SOCKET
    tmux = tmux_for(sock)
    report = build_up(lay, tmux, h)
    h.save_state(
        layout=str(lay.path), session=lay.session, socket=sock, agents=lay.names, max_body=lay.max_body, cwd=os.getcwd()
    )

    if report.created_session:
        output.say(
            f"created session {lay.session!r} from {path} on socket {sock!r} with {len(report.created)} agents: "
            f"{', '.join(report.created)}",
            "green",
        )
    else:
        for name in report.created:
            output.say(f"created {name} (it had no pane)", "green")
        for name, how in report.respawned:
            output.say(f"respawned {name} ({how})", "yellow")
        if report.running:
            output.say(f"running, left alone: {', '.join(report.running)}")
        if not report.created and not report.respawned:
            output.say(f"session {lay.session!r} already matches {path}; nothing to do")
    for name, pane in report.extra:
        output.say(
            f"note: pane {pane} runs agent {name!r}, which {path} does not name; left running "
            f"(kill it with `tmux -L {sock} kill-pane -t {pane}`)",
            "yellow",
        )

    clear_stopped(h)
    if controller:
        pid, started = start_background(h, sock)
        output.say(f"controller {'started' if started else 'running'} (pid {pid}); log: {h.logs / 'controller.log'}")
        if not started:
            _reload_running(h)
        if lay.web is not None:
            _say_dashboard(h, lay.web.port)

    if detach or not (sys.stdin.isatty() and sys.stdout.isatty()):
        output.say(f"attach with: {attach_command(sock, lay.session)}")
        return
    _exec_attach(tmux, lay.session, None)


def _say_dashboard(h: Any, port: int, wait: float = defaults.WEB_UP_WAIT) -> None:
    """Print where the controller's dashboard answers on ``port`` (waiting a moment for it
    to start)."""
    import time

    from miyabi.web.server import published

    def ours() -> dict[str, Any] | None:
        web = published(h)
        return web if web is not None and str(web.get("base", "")).endswith(f":{port}") else None

    deadline = time.monotonic() + wait
    while (web := ours()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if web is None:
        output.warn(f"the dashboard did not start yet; see {h.logs / 'web.log'}")
        return
    output.say(f"dashboard: {web['url']}", "green")


def _reload_running(h: Any) -> None:
    """Have the running controller adopt the layout just recorded; say what it did."""
    from miyabi.controller.requests import request_reload

    try:
        output.say(f"controller reloaded the layout: {request_reload(h)}", "green")
    except MiyabiError as e:
        output.warn(str(e))


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
    from miyabi.controller.webproc import stop_dashboard
    from miyabi.errors import SessionNotFound
    from miyabi.supervision.keeper import mark_stopped
    from miyabi.tmux.builder import down as build_down
    from miyabi.web.server import published

    t = resolve_target(home, socket, layout)
    mark_stopped(t.home)  # a controller restarted by systemd must not rebuild the session
    pid = stop_background(t.home)
    if pid is not None:
        output.say(f"stopped the controller (pid {pid})")
    if web := stop_dashboard(t.home):
        output.say(f"stopped the dashboard (pid {', '.join(map(str, web))})")
    if (kept := published(t.home)) is not None:  # started by hand (`miyabi web`): not ours to stop
        output.say(
            f"the dashboard started by hand still serves at {kept['base']} (pid {kept['pid']}); "
            f"stop it with Ctrl-C where it runs, or `kill {kept['pid']}`"
        )
    tmux = tmux_for(t.socket)
    try:
        server_gone = build_down(tmux, t.session, t.home)
    except SessionNotFound:
        output.say(f"no session {t.session!r} on socket {t.socket!r}; nothing to stop")
        return
    tail = " and its tmux server" if server_gone else " (other sessions on the socket left running)"
    output.say(f"stopped session {t.session!r}{tail}")


@app.command()
@handles_errors
def attach(
    agent: Annotated[str | None, typer.Argument(show_default=False, help="Agent whose pane to select.")] = None,
    socket: SocketOpt = None,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Attach to miyabi's session, with AGENT's pane selected."""
    from miyabi.tmux.panes import attach_command

    t, tmux = running(home, socket, layout)
    pane = _agent_pane(tmux, t.session, agent) if agent else None
    if not sys.stdin.isatty():
        raise MiyabiError(f"attach needs a terminal; from one, run: {attach_command(t.socket, t.session, pane)}")
    _exec_attach(tmux, t.session, agent)


def _agent_pane(tmux: Any, session: str, agent: str) -> Any:
    from miyabi.errors import AgentNotFound
    from miyabi.tmux.panes import list_panes

    panes = [p for p in list_panes(tmux, session) if p.agent]
    pane = next((p for p in panes if p.agent == agent), None)
    if pane is None:
        raise AgentNotFound(agent, [p.agent for p in panes])
    return pane


def _exec_attach(tmux: Any, session: str, agent: str | None) -> None:
    from miyabi.tmux.panes import select

    if agent:
        select(tmux, _agent_pane(tmux, session, agent))
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    argv = tmux.attach_argv(session)
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)


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
    """One row per agent: state, pid, uptime, CPU, memory, restarts.

    Also its window and pane, its command, seconds since its last output and why it
    last died or was restarted. With a ``bus:``, whether the bus is up; with
    --all-hosts, every host on it.
    """
    from miyabi.controller.view import ensemble

    t, tmux = running(home, socket, layout)
    view = ensemble(t, tmux)
    h, lay, ctl, rows = view.home, view.layout, view.controller, view.agents
    owner = str(h.root)
    from miyabi.web.server import published

    web = published(h)
    from miyabi.controller.view import bus_view

    seen = bus_view(h, all_hosts)
    bus, hosts = seen["bus"], seen.get("hosts")
    if json_out:
        out = {
            "session": t.session,
            "socket": t.socket,
            "home": owner,
            "controller": ctl,
            "web": {"base": web["base"], "url": web["url"], "read_only": web["read_only"]} if web else None,
            "bus": bus,
            "agents": [r.to_json() for r in rows],
        }
        if all_hosts:
            out["hosts"] = hosts
        output.emit_json(out)
        return
    if ctl["running"]:
        kept = (
            "kept alive"
            if ctl["kept_alive"]
            else (
                "no keep-alive: started outside `miyabi up` (systemd, or by hand), or its keep-alive was killed; "
                "`miyabi down`, then `miyabi up`, puts one back"
            )
        )
        line = f"controller: running, pid {ctl['pid']}, up {output.human_seconds(ctl['uptime'])}, {kept}"
        if ctl["restarts"]:
            line += f"; restarted {ctl['restarts']} times, last {ctl['last_restart']} ({ctl['last_reason']})"
        output.say(line, "green" if ctl["kept_alive"] else "yellow")
    else:
        output.say(f"controller: not running; messages and tasks wait; start it with `{ctl['fix']}`", "red")
    if web is not None:  # its token is not printed here (screens are shared): `miyabi up` and --json have it
        output.say(
            f"dashboard: {web['base']}"
            + (" (read-only)" if web.get("read_only") else "")
            + "; the URL with its token: `miyabi status --json`"
        )
    if bus is not None:
        if bus["state"] == "up":
            output.say(
                f"bus: up at {bus['url']} as host {bus['host']}, {bus['hosts']} host(s) up"
                + ("; this host polls GitHub" if bus.get("leader") else ""),
                "green",
            )
        else:
            output.say(
                f"bus: down since {bus['since']} ({bus.get('error') or 'not reached yet'}); local work goes on, "
                "messages for other hosts wait in the outbox",
                "red",
            )
    groups: dict[str | None, list[list[str]]] = {None: []}
    for p in lay.pools if lay is not None else ():
        groups[p.name] = []
    for r in rows:
        state = f"{r.state} ({r.exit})" if r.exit else str(r.state)
        if r.question:
            state += f": {r.question[:60]}"
        tokens = "-" if r.input_tokens is None else f"{_count(r.input_tokens)}/{_count(r.output_tokens or 0)}"
        if r.cost_usd is not None:
            tokens += f" ${r.cost_usd:.2f}"
        groups.setdefault(r.pool, []).append(
            [
                r.name if r.task is None else f"{r.name} (task {r.task})",
                r.window or "-",
                r.pane_id or "-",
                str(r.pid) if r.pid else "-",
                r.command or "-",
                state,
                output.human_seconds(r.uptime),
                "-" if r.cpu_percent is None else f"{r.cpu_percent:.1f}",
                output.human_bytes(r.rss),
                output.human_seconds(r.last_output),
                tokens,
                str(r.restarts_last_hour),
                (r.last_reason or "-")[:60],
            ]
        )
    headers = [
        "agent",
        "window",
        "pane",
        "pid",
        "command",
        "state",
        "uptime",
        "cpu%",
        "rss",
        "last output",
        "tokens in/out",
        "restarts/h",
        "last reason",
    ]
    output.table(groups.pop(None), headers, title=f"session {t.session} (socket {t.socket})")
    from miyabi.pipeline.records import InstanceState, Records
    from miyabi.work.store import Store

    for name, table_rows in groups.items():
        pool = lay.pool(name) if lay is not None and name is not None else None
        preparing = [i.name for i in Records(Store.of_home(h.root)).instances(InstanceState.PREPARING, pool=name)]
        title = f"pool {name}: {len(table_rows)} running" + (f" of at most {pool.max}" if pool else "")
        if preparing:
            title += f"; preparing {', '.join(preparing)}"
        if table_rows:
            output.table(table_rows, headers, title=title)
        else:
            output.say(title + (" (tasks routed to it start instances)" if not preparing else ""))
    if all_hosts:
        for host in hosts or []:
            title = f"host {host['host']}: " + ("up" if host.get("up") else f"down (last seen {host.get('last_seen')})")
            if host.get("leader"):
                title += ", polls GitHub"
            table = [
                [
                    a.get("name", "-"),
                    a.get("state", "-"),
                    str(a.get("pid") or "-"),
                    output.human_seconds(a.get("uptime")),
                    str(a.get("restarts_last_hour", 0)),
                ]
                for a in host.get("agents", [])
            ]
            if table:
                output.table(table, ["agent", "state", "pid", "uptime", "restarts/h"], title=title)
            else:
                output.say(title)


def _count(n: int) -> str:
    return f"{n / 1_000_000:.1f}M" if n >= 1_000_000 else f"{n / 1000:.1f}k" if n >= 1000 else str(n)


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


def _answer(
    agent: str,
    approve: bool,
    reason: str | None,
    json_out: bool,
    socket: str | None,
    home: Path | None,
    layout: str | None,
) -> None:
    from miyabi.supervision.approvals import answer

    t, tmux = running(home, socket, layout)
    a = answer(t.home, tmux, t.session, t.layout().agent(agent), approve, reason)
    if json_out:
        output.emit_json(
            {
                "agent": a.agent,
                "answer": a.answer,
                "question": a.question,
                "keys": list(a.keys),
                "reason": a.reason,
                "message": a.message,
            }
        )
        return
    said = f"{'approved' if approve else 'denied'} {a.agent}: {a.question}"
    output.say(said + (f" (reason sent as message {a.message})" if a.message else ""), "green" if approve else "yellow")


@app.command()
@handles_errors
def approve(
    agent: Annotated[str, typer.Argument(help="The agent waiting for approval.")],
    json_out: JsonOpt = False,
    socket: SocketOpt = None,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Answer an agent's permission question with yes.

    The agent must be waiting-approval (see `miyabi status`); the profile's approve keys
    are pressed while the question is on screen. The answer is recorded as an event.
    """
    _answer(agent, True, None, json_out, socket, home, layout)


@app.command()
@handles_errors
def deny(
    agent: Annotated[str, typer.Argument(help="The agent waiting for approval.")],
    reason: Annotated[
        str | None, typer.Option("--reason", metavar="TEXT", help="Why: sent to the agent as its next message.")
    ] = None,
    json_out: JsonOpt = False,
    socket: SocketOpt = None,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Answer an agent's permission question with no.

    The profile's deny keys are pressed while the question is on screen; a --reason
    is delivered to the agent as a message once it is ready. Recorded as an event.
    """
    _answer(agent, False, reason, json_out, socket, home, layout)


@app.command()
@handles_errors
def controller(socket: SocketOpt = None, home: HomeOpt = None, layout: LayoutOpt = None) -> None:
    """Run the controller in the foreground (systemd, debugging).

    Only one controller runs per home; a second one exits 1 naming the first one's pid.
    """
    import logging

    from miyabi.controller.core import Controller

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    t = resolve_target(home, socket, layout, strict=False)  # systemd runs it with --home
    Controller(t.home, t.socket, t.layout()).run()


@app.command()
@handles_errors
def layouts(json_out: JsonOpt = False) -> None:
    """List the shipped layouts."""
    from miyabi.config import load, shipped
    from miyabi.errors import LayoutError

    items: list[dict[str, Any]] = []
    for path in shipped.shipped():
        try:
            lay = load(path)
            items.append(
                {
                    "name": path.stem,
                    "path": str(path),
                    "session": lay.session,
                    "agents": lay.names,
                    "profiles": sorted({a.profile.name for a in lay.agents}),
                    "description": lay.description,
                }
            )
        except LayoutError as e:
            items.append({"name": path.stem, "path": str(path), "error": e.lines()[0]})
    if json_out:
        output.emit_json(items)
        return
    rows: list[list[str]] = [
        [
            i["name"],
            ", ".join(i.get("agents", [])) or "-",
            ", ".join(i.get("profiles", [])) or "-",
            i.get("description") or i.get("error", ""),
        ]
        for i in items
    ]
    output.table(rows, ["layout", "agents", "profiles", "description"])


@app.command()
@handles_errors
def profiles(json_out: JsonOpt = False) -> None:
    """List the built-in profiles (agent CLIs miyabi can drive)."""
    import dataclasses

    from miyabi.agents.profiles import BUILTIN

    if json_out:
        output.emit_json([dataclasses.asdict(p) for p in BUILTIN.values()])
        return
    rows = [
        [
            p.name,
            p.command or "$SHELL",
            p.ready_pattern or "-",
            p.busy_pattern or "-",
            f"{p.submit_key} +{p.submit_delay:g}s",
            "yes" if p.bracketed_paste else "no",
        ]
        for p in BUILTIN.values()
    ]
    output.table(rows, ["profile", "command", "ready pattern", "busy pattern", "submit", "paste"])


@app.command()
@handles_errors
def init(force: Annotated[bool, typer.Option("--force", help="Overwrite an existing miyabi.yaml.")] = False) -> None:
    """Write ./miyabi.yaml for the agent CLIs found on PATH.

    One agent per agent CLI found (claude, codex, gemini, aider, opencode), or four
    built-in workers when none is.
    """
    from miyabi.config import shipped

    path = Path.cwd() / defaults.LAYOUT_FILE
    shipped.write_init(path, force=force)
    output.say(f"wrote {path}; start it with `miyabi up`", "green")


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
) -> None:
    """Run the built-in worker agent (it acks each message).

    It runs the jobs it is given and reports the tasks it is given done. For tests and
    demos, and for machines without an agent CLI.
    """
    from miyabi import worker as w

    agent = name or os.environ.get("MIYABI_AGENT") or "worker"
    raise typer.Exit(w.run(agent, transcript or w.default_transcript(agent), think, finish_tasks=not hold_tasks))
