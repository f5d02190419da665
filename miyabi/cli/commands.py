"""The ``miyabi`` command line. It only wires: it parses options, calls the core, and
turns a :class:`~miyabi.errors.MiyabiError` into one line on stderr and its exit code."""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from miyabi import defaults
from miyabi.cli import output
from miyabi.errors import EXIT_ERROR, EXIT_INTERRUPTED, MiyabiError

app = typer.Typer(
    name="miyabi",
    help="Run an ensemble of CLI coding agents in tmux, one pane per named agent.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SocketOpt = Annotated[
    str | None,
    typer.Option("--socket", "-L", envvar="MIYABI_SOCKET", help="tmux socket name of miyabi's own server [default: the one miyabi last used in this home, else 'miyabi']"),
]
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", envvar="MIYABI_HOME", help="directory holding queue/, logs/ and run/ [default: current directory]"),
]
LayoutOpt = Annotated[
    str | None,
    typer.Option("--layout", "-f", help="layout file or shipped layout name [default: the one `miyabi up` last used here]"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(fn: F) -> F:
    """Map miyabi's errors to one stderr line per problem and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MiyabiError as e:
            for line in e.lines():
                output.error(line)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            output.error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except sqlite3.Error as e:
            output.error(f"the task store failed: {e}; try again (another miyabi may hold it)")
            raise typer.Exit(EXIT_ERROR) from None
        except OSError as e:
            where = f": {e.filename}" if e.filename else ""
            output.error(f"{e.strerror or e}{where}")
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


@dataclass
class Target:
    """Where a command acts: the home, the tmux socket and the session."""

    home: Any
    socket: str
    session: str
    layout_path: Path | None


def resolve_target(home: Path | None, socket: str | None, layout: str | None) -> Target:
    """Home from ``--home``; socket from ``--socket``, else what ``miyabi up`` recorded
    here, else ``miyabi``; session from ``--layout``, else the recorded one."""
    from miyabi.home import Home
    from miyabi.layout import load
    from miyabi.layout import shipped as shipped_layouts

    h = Home.resolve(home)
    state = h.load_state()
    sock = socket or state.get("socket") or defaults.SOCKET
    if layout is None and isinstance(state.get("session"), str):
        lp = state.get("layout")
        return Target(h, sock, state["session"], Path(lp) if isinstance(lp, str) else None)
    path = shipped_layouts.for_command(layout, h)
    return Target(h, sock, load(path).session, path)


def _tmux(socket: str) -> Any:
    from miyabi.tmux.runner import Tmux

    return Tmux(socket)


def _running(home: Path | None, socket: str | None, layout: str | None) -> tuple[Target, Any]:
    """The target and its tmux server, whose session must be running.

    Raises:
        TmuxUnavailable: tmux missing or too old, or the session is not running (exit 4).
    """
    from miyabi.errors import SessionNotFound
    from miyabi.tmux.panes import session_exists

    t = resolve_target(home, socket, layout)
    tmux = _tmux(t.socket)
    tmux.require_version()
    if not session_exists(tmux, t.session):
        raise SessionNotFound(t.session, t.socket)
    return t, tmux


@app.command()
@handles_errors
def up(
    layout: Annotated[str | None, typer.Argument(help="layout file or shipped layout name [default: ./miyabi.yaml, else 'default']")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="do not attach; print how to")] = False,
    controller: Annotated[bool, typer.Option("--controller/--no-controller", help="start the controller that delivers messages")] = True,
    socket: SocketOpt = None,
    home: HomeOpt = None,
) -> None:
    """Build the agents' tmux session from a layout (or bring a running one in line
    with it) and start the controller in the background."""
    from miyabi.home import Home
    from miyabi.layout import load, preflight
    from miyabi.layout import shipped as shipped_layouts
    from miyabi.tmux.builder import up as build_up

    h = Home.resolve(home)
    path = shipped_layouts.for_up(layout)
    lay = load(path)
    preflight(lay)
    sock = socket or h.load_state().get("socket") or defaults.SOCKET
    tmux = _tmux(sock)
    report = build_up(lay, tmux, h)
    h.save_state(layout=str(lay.path), session=lay.session, socket=sock, agents=lay.names, max_body=lay.max_body, cwd=os.getcwd())

    if report.created_session:
        output.say(f"created session {lay.session!r} on socket {sock!r} with {len(report.created)} agents: {', '.join(report.created)}", "green")
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
        output.say(f"note: pane {pane} runs agent {name!r}, which {path} does not name; left running (kill it with `tmux -L {sock} kill-pane -t {pane}`)", "yellow")

    (h.run / "stopped").unlink(missing_ok=True)
    if controller:
        from miyabi.controller import start_background

        pid, started = start_background(h, sock, lay.path)
        output.say(f"controller {'started' if started else 'running'} (pid {pid}); log: {h.logs / 'controller.log'}")

    import shlex

    attach_cmd = f"tmux -L {shlex.quote(sock)} attach -t {shlex.quote(lay.session)}"
    if detach or not (sys.stdin.isatty() and sys.stdout.isatty()):
        output.say(f"attach with: {attach_cmd}")
        return
    _exec_attach(tmux, lay.session, None)


@app.command()
@handles_errors
def down(socket: SocketOpt = None, home: HomeOpt = None, layout: LayoutOpt = None) -> None:
    """Stop the controller and end miyabi's session (and its tmux server if nothing
    else runs on it)."""
    from miyabi.controller import stop_background
    from miyabi.errors import SessionNotFound
    from miyabi.tmux.builder import down as build_down

    t = resolve_target(home, socket, layout)
    if t.home.run.is_dir():  # a controller restarted by systemd must not rebuild the session
        (t.home.run / "stopped").write_text("stopped by `miyabi down`; `miyabi up` clears this\n")
    pid = stop_background(t.home)
    if pid is not None:
        output.say(f"stopped the controller (pid {pid})")
    tmux = _tmux(t.socket)
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
    agent: Annotated[str | None, typer.Argument(help="agent whose pane to select")] = None,
    socket: SocketOpt = None,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Attach to miyabi's session, with AGENT's pane selected."""
    t, tmux = _running(home, socket, layout)
    if not sys.stdin.isatty():
        raise MiyabiError(f"attach needs a terminal; from one, run: tmux -L {t.socket} attach -t {t.session}")
    _exec_attach(tmux, t.session, agent)


def _exec_attach(tmux: Any, session: str, agent: str | None) -> None:
    from miyabi.errors import AgentNotFound
    from miyabi.tmux.panes import exact, list_panes

    if agent:
        panes = [p for p in list_panes(tmux, session) if p.agent]
        pane = next((p for p in panes if p.agent == agent), None)
        if pane is None:
            raise AgentNotFound(agent, [p.agent for p in panes])
        tmux.run_chain([["select-window", "-t", pane.window_id], ["select-pane", "-t", pane.pane_id]])
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    argv = tmux.argv(["attach-session", "-t", exact(session)])
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)


@app.command()
@handles_errors
def status(
    json_out: JsonOpt = False,
    socket: SocketOpt = None,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """One row per agent: pane, pid, alive or dead, uptime, CPU and memory, last output."""
    from miyabi.errors import LayoutError
    from miyabi.home import Home
    from miyabi.layout import load
    from miyabi.status import collect
    from miyabi.tmux.panes import HOME_TAG, session_option

    t, tmux = _running(home, socket, layout)
    expected: list[str] = []
    profiles = {}
    if t.layout_path is not None:
        try:
            lay = load(t.layout_path)
            expected = lay.names
            profiles = {a.name: a.profile for a in lay.agents}
        except LayoutError:
            expected = []
    # The session knows the home that built it; its logs are there.
    owner = session_option(tmux, t.session, HOME_TAG)
    rows = collect(tmux, t.session, Home(Path(owner)) if owner else t.home, expected, profiles=profiles)
    if json_out:
        output.emit_json({"session": t.session, "socket": t.socket, "home": owner or str(t.home.root), "agents": [r.to_json() for r in rows]})
        return
    table_rows = []
    for r in rows:
        state = f"{r.state} ({r.exit})" if r.exit else r.state
        table_rows.append(
            [
                r.name,
                r.window or "-",
                r.pane_id or "-",
                str(r.pid) if r.pid else "-",
                r.command or "-",
                state,
                output.human_seconds(r.uptime),
                "-" if r.cpu_percent is None else f"{r.cpu_percent:.1f}",
                output.human_bytes(r.rss),
                output.human_seconds(r.last_output),
                str(r.restarts_last_hour),
                (r.last_reason or "-")[:60],
            ]
        )
    headers = ["agent", "window", "pane", "pid", "command", "state", "uptime", "cpu%", "rss", "last output", "restarts/h", "last reason"]
    output.table(table_rows, headers, title=f"session {t.session} (socket {t.socket})")


@app.command()
@handles_errors
def layouts(json_out: JsonOpt = False) -> None:
    """List the shipped layouts."""
    from miyabi.errors import LayoutError
    from miyabi.layout import load
    from miyabi.layout import shipped as shipped_layouts

    items: list[dict[str, Any]] = []
    for path in shipped_layouts.shipped():
        try:
            lay = load(path)
            items.append({"name": path.stem, "path": str(path), "session": lay.session, "agents": lay.names,
                          "profiles": sorted({a.profile.name for a in lay.agents}), "description": lay.description})
        except LayoutError as e:
            items.append({"name": path.stem, "path": str(path), "error": e.lines()[0]})
    if json_out:
        output.emit_json(items)
        return
    rows: list[list[str]] = [
        [i["name"], ", ".join(i.get("agents", [])) or "-", ", ".join(i.get("profiles", [])) or "-", i.get("description") or i.get("error", "")]
        for i in items
    ]
    output.table(rows, ["layout", "agents", "profiles", "description"])


@app.command()
@handles_errors
def profiles(json_out: JsonOpt = False) -> None:
    """List the built-in profiles (agent CLIs miyabi knows how to drive)."""
    import dataclasses

    from miyabi.profiles import BUILTIN

    if json_out:
        output.emit_json([dataclasses.asdict(p) for p in BUILTIN.values()])
        return
    rows = [
        [p.name, p.command or "$SHELL", p.ready_pattern or "-", p.busy_pattern or "-", f"{p.submit_key} +{p.submit_delay:g}s", "yes" if p.bracketed_paste else "no"]
        for p in BUILTIN.values()
    ]
    output.table(rows, ["profile", "command", "ready pattern", "busy pattern", "submit", "paste"])


@app.command()
@handles_errors
def init(force: Annotated[bool, typer.Option("--force", help="overwrite an existing miyabi.yaml")] = False) -> None:
    """Write ./miyabi.yaml with one agent per agent CLI found on PATH (workers if none)."""
    from miyabi.layout import shipped as shipped_layouts

    path = Path.cwd() / defaults.LAYOUT_FILE
    shipped_layouts.write_init(path, force=force)
    output.say(f"wrote {path}; start it with `miyabi up`", "green")


@app.command()
def worker(
    name: Annotated[str | None, typer.Option("--name", help="agent name [default: $MIYABI_AGENT, else 'worker']")] = None,
    think: Annotated[float, typer.Option("--think", min=0, help="seconds of simulated work after each message")] = 0.0,
    transcript: Annotated[Path | None, typer.Option("--transcript", help="JSONL file of received messages [default: $MIYABI_HOME/logs/NAME.transcript.jsonl]")] = None,
) -> None:
    """Run the built-in worker agent: acks each message it receives (for tests and demos)."""
    from miyabi import worker as w

    agent = name or os.environ.get("MIYABI_AGENT") or "worker"
    raise typer.Exit(w.run(agent, transcript or w.default_transcript(agent), think))




@app.command()
@handles_errors
def controller(socket: SocketOpt = None, home: HomeOpt = None, layout: LayoutOpt = None) -> None:
    """Run the controller in the foreground (for systemd and debugging): it delivers
    each agent's inbox into its pane. Only one runs per home."""
    import logging

    from miyabi.controller import Controller
    from miyabi.layout import load

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    t = resolve_target(home, socket, layout)
    path = t.layout_path or Path(layout or "")
    Controller(t.home, t.socket, load(path)).run()


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def send(ctx: typer.Context) -> None:
    """Put a message in an agent's inbox: miyabi send AGENT [TEXT | -] [--from NAME]
    [--priority high] [--ttl S] [--json]. The controller types it into the agent's pane
    when the agent is ready; it waits in the inbox while the controller is down."""
    from miyabi.cli.send import main as fast

    raise typer.Exit(fast("send", list(ctx.args)))


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def broadcast(ctx: typer.Context) -> None:
    """Send a message to every agent but the sender: miyabi broadcast [TEXT | -]
    [--except NAME ...] [--json]."""
    from miyabi.cli.send import main as fast

    raise typer.Exit(fast("broadcast", list(ctx.args)))


@app.command()
@handles_errors
def inbox(
    agent: Annotated[str, typer.Argument(help="the agent whose inbox to show")],
    all_: Annotated[bool, typer.Option("--all", help="include delivered and failed messages")] = False,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
    socket: SocketOpt = None,
) -> None:
    """List the messages of AGENT's inbox: pending ones, or all with --all."""
    from miyabi.cli.send import _known_agents
    from miyabi.errors import AgentNotFound
    from miyabi.home import Home
    from miyabi.mailbox import inbox as inbox_of

    h = Home.resolve(home)
    agents, _ = _known_agents(h.root, layout)
    if agent not in agents:
        raise AgentNotFound(agent, agents)
    states = ("pending", "delivered", "failed") if all_ else ("pending",)
    items = []
    for state, m in inbox_of(h.root, agent).list(states):
        items.append({
            "id": m.id, "state": state, "from": m.sender, "to": m.to, "priority": m.priority,
            "created": m.created, "delivered": m.extra.get("delivered"), "failed": m.extra.get("failed"),
            "reason": m.extra.get("reason"), "attempts": m.extra.get("attempts", 0), "body": m.body,
        })
    if json_out:
        output.emit_json(items)
        return
    rows = []
    for i in items:
        when = i["delivered"] or i["failed"] or i["created"]
        first = i["body"].splitlines()[0] if i["body"] else ""
        preview = first[:50] + ("…" if len(first) > 50 or "\n" in i["body"] else "")
        rows.append([i["id"], i["state"], i["from"], when, (i["reason"] or preview)])
    output.table(rows, ["id", "state", "from", "time", "text / reason"], title=f"inbox of {agent}: {len(items)} message(s)")


def _find_message(h: Any, msg_id: str) -> tuple[Any, str, Any]:
    from miyabi.mailbox import Inbox, MessageError

    found = []
    if h.queue.is_dir():
        for d in sorted(h.queue.iterdir()):
            if d.is_dir():
                box = Inbox(d)
                hit = box.find(msg_id)
                if hit:
                    found.append((box, *hit))
    if not found:
        raise MessageError(f"no message with id {msg_id!r} in {h.queue}; list them with `miyabi inbox AGENT --all`")
    if len(found) > 1:
        raise MessageError(f"id {msg_id!r} matches {len(found)} messages; give more of it")
    return found[0]


def _message_in(home: Path | None, msg_id: str, wanted: str, refusal: str) -> tuple[Any, Any, Any]:
    """(home, inbox, message) for ``msg_id``, which must be in state ``wanted``.

    Raises:
        MessageError: no such message, or it is in another state (``refusal`` says why).
    """
    from miyabi.home import Home
    from miyabi.mailbox import MessageError

    h = Home.resolve(home)
    box, state, msg = _find_message(h, msg_id)
    if state != wanted:
        raise MessageError(f"message {msg.id} is {state}; {refusal}")
    return h, box, msg


@app.command()
@handles_errors
def retry(
    msg_id: Annotated[str, typer.Argument(metavar="ID", help="id (or a unique prefix) of a dead letter")],
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """Put a dead letter back in its inbox, to be delivered again."""
    from dataclasses import replace

    from miyabi.mailbox import append_event

    h, box, msg = _message_in(home, msg_id, "failed", "it is not a dead letter: only failed messages can be retried")
    extra = {k: v for k, v in msg.extra.items() if k not in ("failed", "reason", "attempts", "enters")}
    box.move(replace(msg, extra=extra), "failed", "pending")
    append_event(h.root, "retry", agent=box.agent, id=msg.id)
    output.say(f"{msg.id} is pending again in {box.agent}'s inbox")


@app.command()
@handles_errors
def drop(
    msg_id: Annotated[str, typer.Argument(metavar="ID", help="id (or a unique prefix) of a pending message")],
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """Discard a pending message."""
    from miyabi.mailbox import append_event

    h, box, msg = _message_in(home, msg_id, "pending", "only pending messages can be dropped")
    (box.dir("pending") / msg.filename).unlink(missing_ok=True)
    append_event(h.root, "dropped", agent=box.agent, id=msg.id)
    output.say(f"dropped {msg.id} from {box.agent}'s inbox")


@app.command()
@handles_errors
def restart(
    agent: Annotated[str, typer.Argument(help="the agent to restart")],
    socket: SocketOpt = None,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Restart AGENT now in its own pane, clearing a tripped crash-loop breaker and its backoff."""
    import time as _time

    from miyabi.controller import running_pid
    from miyabi.errors import AgentNotFound

    t = resolve_target(home, socket, layout)
    from miyabi.layout import load

    lay = load(t.layout_path) if t.layout_path else None
    names = lay.names if lay else []
    if agent not in names:
        raise AgentNotFound(agent, names)
    if running_pid(t.home) is None:
        raise MiyabiError(f"no controller runs for {t.home.root}; start it with `miyabi up` (it restarts agents)")
    req = t.home.run / "requests"
    req.mkdir(mode=0o700, parents=True, exist_ok=True)
    done = req / f"done-{agent}"
    done.unlink(missing_ok=True)
    (req / f"restart-{agent}").write_text("restart\n")
    deadline = _time.monotonic() + 10
    while _time.monotonic() < deadline:
        if done.exists():
            ok = done.read_text().strip() == "ok"
            done.unlink(missing_ok=True)
            if not ok:
                raise MiyabiError(f"the controller could not restart {agent}; see {t.home.logs / 'watchdog.log'}")
            output.say(f"restarted {agent}", "green")
            return
        _time.sleep(0.05)
    raise MiyabiError(f"the controller did not answer within 10 s; see {t.home.logs / 'controller.log'}")


service_app = typer.Typer(help="Install or remove a systemd unit that keeps the controller running.", no_args_is_help=True)
app.add_typer(service_app, name="service")
UserOpt = Annotated[bool, typer.Option("--user", help="a user unit (~/.config/systemd/user) instead of a system one")]


@service_app.command("install")
@handles_errors
def service_install(user: UserOpt = False, socket: SocketOpt = None, home: HomeOpt = None, layout: LayoutOpt = None) -> None:
    """Write a systemd unit for this home's controller (Restart=always, KillMode=process)."""
    from miyabi import service

    t = resolve_target(home, socket, layout)
    if t.layout_path is None:
        raise MiyabiError("no layout known for this home; run `miyabi up` first or give --layout")
    path = service.install(t.home.root, t.socket, t.layout_path, t.session, user)
    ctl = "systemctl --user" if user else "systemctl"
    output.say(f"wrote {path}", "green")
    output.say(f"enable it with: {ctl} daemon-reload && {ctl} enable --now {path.name}")
    if user:
        output.say("to keep it running after you log out: loginctl enable-linger $USER")


@service_app.command("uninstall")
@handles_errors
def service_uninstall(user: UserOpt = False, socket: SocketOpt = None, home: HomeOpt = None, layout: LayoutOpt = None) -> None:
    """Remove the systemd unit written by `miyabi service install`."""
    from miyabi import service

    t = resolve_target(home, socket, layout)
    ctl = "systemctl --user" if user else "systemctl"
    name = service.unit_name(t.session)
    path = service.uninstall(t.session, user)
    output.say(f"removed {path}; stop it first if it runs: {ctl} disable --now {name} && {ctl} daemon-reload")


task_app = typer.Typer(help="Tasks: add local ones, list them, and report on them (agents run done/fail).", no_args_is_help=True)
app.add_typer(task_app, name="task")
TaskId = Annotated[str, typer.Argument(metavar="ID", help="task id (12) or reference (owner/name#3)")]


def _store(home: Path | None) -> Any:
    from miyabi.home import Home
    from miyabi.tasks import Store

    return Store.of_home(Home.resolve(home).root)


def _tell(home: Path | None, task: Any, text: str) -> None:
    """Tell the task's agent something about it, through its inbox."""
    from miyabi.home import Home
    from miyabi.mailbox import inbox as inbox_of
    from miyabi.mailbox import make

    if task.agent:
        inbox_of(Home.resolve(home).root, task.agent).put(make(task.agent, text, sender="miyabi", task=str(task.id)))


@task_app.command("add")
@handles_errors
def task_add(
    title: Annotated[str, typer.Argument(help="what to do")],
    body: Annotated[str | None, typer.Option("--body", help="details, or - to read them from standard input")] = None,
    label: Annotated[list[str], typer.Option("--label", help="a label (repeat for more)")] = [],  # noqa: B006
    priority: Annotated[str, typer.Option("--priority", help="high, normal or low")] = "normal",
    depends_on: Annotated[list[int], typer.Option("--depends-on", help="id of a task that must be done first (repeat)")] = [],  # noqa: B006
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """Add a local task; the controller routes it to an agent by the layout's routes."""
    from miyabi.mailbox import decode_body
    from miyabi.tasks import TaskError

    text = decode_body(sys.stdin.buffer.read()) if body == "-" else (body or "")
    store = _store(home)
    t = store.add(title, text, label, priority, depends_on)
    cycle = store.cycle_from(t.id)
    if cycle:
        raise TaskError(f"task {t.id} would close a dependency cycle: {' → '.join(f'#{i}' for i in cycle)}")
    if json_out:
        output.emit_json(t.to_json())
    else:
        output.say(f"added task {t.id}: {t.title}")


@task_app.command("ls")
@handles_errors
def task_ls(
    state: Annotated[str | None, typer.Option("--state", help="only tasks in this state")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="only tasks of this agent")] = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """List tasks."""
    tasks = _store(home).query(state, agent)
    if json_out:
        output.emit_json([t.to_json() for t in tasks])
        return
    rows = [[str(t.id), t.source, t.ref, t.state, t.agent or "-", t.priority, t.title[:60]] for t in tasks]
    output.table(rows, ["id", "source", "ref", "state", "agent", "priority", "title"])


@task_app.command("show")
@handles_errors
def task_show(task_id: TaskId, json_out: JsonOpt = False, home: HomeOpt = None, socket: SocketOpt = None) -> None:
    """Show a task, its dependencies and its history."""
    store = _store(home)
    t = store.get(task_id)
    data = {**t.to_json(), "depends_on": store.depends_on(t.id), "history": store.history(t.id)}
    if json_out:
        output.emit_json(data)
        return
    output.say(f"task {t.id} ({t.ref}) [{t.state}] {t.title}")
    output.say(f"  agent: {t.agent or '-'}  priority: {t.priority}  labels: {', '.join(t.labels) or '-'}  depends on: {', '.join(map(str, data['depends_on'])) or '-'}")
    if t.body:
        output.say("  " + t.body.replace("\n", "\n  "))
    for e in data["history"]:
        output.say(f"  {e['state']:<11} {e['agent'] or '':<10} {e['reason']}")


def _finish(task_id: str, state: str, reason: str, home: Path | None) -> Any:
    store = _store(home)
    return store.set_state(store.get(task_id).id, state, reason)


@task_app.command("done")
@handles_errors
def task_done(task_id: TaskId, note: Annotated[str, typer.Option("--note", help="what was done")] = "", home: HomeOpt = None, socket: SocketOpt = None) -> None:
    """Mark a task done (agents run this from their pane)."""
    t = _finish(task_id, "done", note or "done", home)
    output.say(f"task {t.id} done")


@task_app.command("fail")
@handles_errors
def task_fail(task_id: TaskId, reason: Annotated[str, typer.Option("--reason", help="why it could not be done")], home: HomeOpt = None, socket: SocketOpt = None) -> None:
    """Mark a task failed, with the reason."""
    t = _finish(task_id, "failed", reason, home)
    output.say(f"task {t.id} failed: {reason}")


@task_app.command("cancel")
@handles_errors
def task_cancel(task_id: TaskId, home: HomeOpt = None, socket: SocketOpt = None) -> None:
    """Cancel a task; its agent, if it has one, is told."""
    t = _finish(task_id, "cancelled", "cancelled by `miyabi task cancel`", home)
    _tell(home, t, f"Task {t.ref} ({t.title}) was cancelled; stop working on it.")
    output.say(f"task {t.id} cancelled")


@task_app.command("retry")
@handles_errors
def task_retry(task_id: TaskId, home: HomeOpt = None, socket: SocketOpt = None) -> None:
    """Put a failed or cancelled task back in the queue."""
    t = _finish(task_id, "queued", "retried by `miyabi task retry`", home)
    output.say(f"task {t.id} is queued again")


github_app = typer.Typer(help="The GitHub source of tasks (the layout's github: section).", no_args_is_help=True)
app.add_typer(github_app, name="github")


@github_app.command("sync")
@handles_errors
def github_sync(
    once: Annotated[bool, typer.Option("--once", help="poll once, assign, print what was done, and exit")] = True,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Poll the repository once for issues with the todo label, store them as tasks,
    assign what the routes allow (claiming each issue), and print what was done."""
    from miyabi.errors import LayoutError
    from miyabi.intake import Dispatcher, sync
    from miyabi.intake import report as report_to_github
    from miyabi.layout import load
    from miyabi.scheduler import schedule
    from miyabi.tasks import Store

    t = resolve_target(home, socket, layout)
    lay = load(t.layout_path) if t.layout_path else None
    if lay is None or lay.github is None:
        raise LayoutError([]) if lay is None else MiyabiError(f"{lay.path} has no github: section; add `github: {{repo: owner/name}}`")
    store = Store.of_home(t.home.root)
    gh = lay.github.client(t.home.root)
    try:
        report = sync(store, gh, lay.github)
        dispatch = Dispatcher(store, t.home.root, lay.github, gh)
        assigned = schedule(store, lay.routes, {a.name: a.wip for a in lay.agents}, dispatch, hold=dispatch.hold)
        reported = report_to_github(store, gh, lay.github, t.home.root)
    finally:
        gh.close()
    data: dict[str, Any] = {
        "unchanged": report.unchanged, "added": report.added, "needs_triage": report.triaged,
        "assigned": [{"task": tid, "ref": store.get(tid).ref, "agent": a, "state": store.get(tid).state} for tid, a in assigned],
        "reported": reported, "requests": gh.stats.requests, "not_modified": gh.stats.not_modified,
    }
    if json_out:
        output.emit_json(data)
        return
    if report.unchanged:
        output.say(f"{lay.github.repo}: no change since the last poll (304)")
    for ref in report.added:
        output.say(f"new task from {ref}")
    for ref in report.triaged:
        output.say(f"{ref}: author not trusted; labelled status:needs-triage, not routed")
    for a in data["assigned"]:
        what = "assigned to " + a["agent"] if a["state"] == "assigned" else a["state"] + " (" + store.history(a["task"])[-1]["reason"] + ")"
        output.say(f"{a['ref']}: {what}")
    for line in reported:
        output.say(line)
    output.say(f"{gh.stats.requests} request(s) to GitHub")


job_app = typer.Typer(help="Jobs: machine-readable work that a worker agent runs and reports on.", no_args_is_help=True)
app.add_typer(job_app, name="job")


@job_app.command("submit")
@handles_errors
def job_submit(
    file: Annotated[Path, typer.Argument(metavar="FILE.json", help="the job: id, kind, workdir, script, dod, report_path")],
    agent: Annotated[str | None, typer.Option("--agent", help="worker agent to run it [default: the layout's first worker]")] = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Store a job as a task for a worker agent; the controller hands it over."""
    from miyabi.errors import AgentNotFound
    from miyabi.jobs import submit
    from miyabi.layout import load
    from miyabi.tasks import Store

    t = resolve_target(home, socket, layout)
    lay = load(t.layout_path) if t.layout_path else None
    workers = [a.name for a in lay.agents if a.profile.name == "worker"] if lay else []
    name = agent or (workers[0] if workers else None)
    if name is None:
        raise MiyabiError("no worker agent in the layout to run jobs; add one (profile: worker) or give --agent")
    if lay is not None and name not in lay.names:
        raise AgentNotFound(name, lay.names)
    tid = submit(Store.of_home(t.home.root), file, name)
    if json_out:
        output.emit_json({"task": tid, "agent": name})
    else:
        output.say(f"job stored as task {tid} for {name}")
