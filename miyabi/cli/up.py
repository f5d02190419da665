"""``miyabi up``: build the session from a layout (or reconcile a running one), start
the controller under its keep-alive, and attach; and ``miyabi controller``, which that
keep-alive runs.

It imports neither typer nor anything the command does not need, so that the light
path (:mod:`miyabi.cli.light`) runs it without Typer's start-up; ``miyabi up`` through
the Typer app runs the same :func:`bring_up`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miyabi import defaults
from miyabi.cli import output
from miyabi.errors import MiyabiError

if TYPE_CHECKING:
    import subprocess

    from miyabi.config.model import Layout
    from miyabi.home import Home
    from miyabi.tmux.builder import UpReport


def bring_up(layout: str | None, detach: bool, controller: bool, socket: str | None, home: Path | None) -> None:
    """Build or reconcile the session of ``layout`` (a file or a shipped layout's name;
    default: the layout this home runs, else ``./miyabi.yaml``, else the default
    layout), record it in the home, start
    the controller (with ``controller``), say what was done, and attach unless
    ``detach`` or not on a terminal.

    Raises:
        LayoutError: the layout does not load (exit 3).
        TmuxUnavailable: tmux missing or too old (exit 4).
        MiyabiError: the session is not miyabi's, a command is missing, the controller
            did not start.
    """
    from miyabi.config import load, shipped
    from miyabi.config.preflight import preflight
    from miyabi.controller.process import launch, running_pid, stop_background
    from miyabi.home import BUILD_LOCK, Home
    from miyabi.supervision.keeper import STOPPED, building, clear_stopped, mark_stopped
    from miyabi.supervision.resume import Resumption
    from miyabi.tmux.builder import up as build_up
    from miyabi.tmux.panes import attach_command
    from miyabi.tmux.runner import Tmux

    h = Home.resolve(home)
    path = shipped.for_command(layout, h)  # bare: the layout this home runs (a reload's included)
    lay = load(path)
    preflight(lay)
    sock = socket or h.load_state().get("socket") or defaults.SOCKET
    tmux = Tmux(sock)
    h.ensure()
    was_stopped = (h.run / STOPPED).exists()
    clear_stopped(h)
    launched = None
    with building(h) as held:
        if not held:
            raise MiyabiError(
                f"another `miyabi up`, or this home's controller, is building the session ({h.run / BUILD_LOCK}); "
                "try again when it is done"
            )
        try:
            if controller and running_pid(h) is None:
                # Started now, it comes up while the session is built: it runs this layout
                # and waits for this build (run/build.lock) before it looks at the session.
                launched = launch(h, sock, lay.path)
            # a dead pane respawned resumes its conversation, as the watchdog's respawn does
            report = build_up(lay, tmux, h, starts=Resumption(h.root).on_start)
        except BaseException:
            if launched is not None:
                stop_background(h)
            if was_stopped:
                mark_stopped(h)
            raise
    h.save_state(
        layout=str(lay.path), session=lay.session, socket=sock, agents=lay.names, max_body=lay.max_body, cwd=os.getcwd()
    )

    _say_built(report, lay.session, path, sock)
    if controller:
        _say_controller(h, lay, sock, launched)

    if detach or not (sys.stdin.isatty() and sys.stdout.isatty()):
        output.say(f"attach with: {attach_command(sock, lay.session)}")
        return
    exec_attach(tmux, lay.session)


def _say_built(report: UpReport, session: str, path: Path, sock: str) -> None:
    """Say what building the session did."""
    if report.created_session:
        output.say(
            f"created session {session!r} from {path} on socket {sock!r} with {len(report.created)} agents: "
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
            output.say(f"session {session!r} already matches {path}; nothing to do")
    for name, pane in report.extra:
        output.say(
            f"note: pane {pane} runs agent {name!r}, which {path} does not name; left running "
            f"(kill it with `tmux -L {sock} kill-pane -t {pane}`)",
            "yellow",
        )


def _say_controller(h: Home, lay: Layout, sock: str, launched: subprocess.Popen[bytes] | None) -> None:
    """Start the controller unless one runs (or await the one ``launched``), and say so."""
    from miyabi.controller.process import await_controller, launch, running_pid

    if launched is None and (pid := running_pid(h)) is not None:
        started = False
    else:
        pid, started = await_controller(h, launched if launched is not None else launch(h, sock))
    output.say(f"controller {'started' if started else 'running'} (pid {pid}); log: {h.logs / 'controller.log'}")
    if not started:
        _reload_running(h)
    if lay.web is not None:
        _say_dashboard(h, lay.web.port)


def run_controller(socket: str | None, home: Path | None, layout: str | None) -> None:
    """``miyabi controller``: take the home's controller lock first of all (``miyabi up``
    waits for it: see :func:`~miyabi.controller.process.take_lock`), then load the
    layout and run until stopped, logging to standard error.

    Raises:
        HomeGone: the home does not exist.
        ControllerRunning: another controller runs for the home.
        LayoutError: the layout does not load (exit 3).
    """
    import logging

    from miyabi.controller.process import release_lock, take_lock
    from miyabi.home import Home

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    h = Home.resolve(home)
    # Which layout, before the lock: `miyabi up` returns once the lock is held, and a
    # `miyabi reload` right after it must find a controller that runs the layout `up`
    # recorded, to adopt the reloaded one.
    recorded = h.load_state().get("layout")
    chosen = layout if layout is not None else recorded if isinstance(recorded, str) else None
    lock = take_lock(h)
    try:
        from miyabi.files import hold_waiting
        from miyabi.home import BUILD_LOCK

        # `miyabi up` starts this while it builds the session: wait for that build before
        # the heavy part of the start, which would slow it down
        if (built := hold_waiting(h.run / BUILD_LOCK, defaults.BUILD_WAIT)) is not None:
            built.release()
        from miyabi.controller.core import Controller
        from miyabi.controller.view import resolve_target

        t = resolve_target(home, socket, chosen)
        controller = Controller(t.home, t.socket, t.layout())
    except BaseException:
        release_lock(h, lock)
        raise
    controller.run(lock)
    if controller.upgrading:  # the keep-alive starts it again, on miyabi's merged code
        from miyabi.controller.keepalive import UPGRADE_EXIT

        raise SystemExit(UPGRADE_EXIT)


def _say_dashboard(h: Any, port: int, wait: float = defaults.WEB_UP_WAIT) -> None:
    """Print where the controller's dashboard answers on ``port`` (waiting a moment for it
    to start)."""
    import time

    from miyabi.controller.webproc import dashboards

    def ours() -> dict[str, Any] | None:
        return next((d for d in dashboards(h) if str(d.get("base", "")).endswith(f":{port}")), None)

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


def exec_attach(tmux: Any, session: str) -> None:
    """Replace this process with a tmux client attached to ``session`` (outside any
    tmux the user is in: a nested client of miyabi's own server)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    argv = tmux.attach_argv(session)
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)
