"""``miyabi web``: the dashboard and its API."""

from __future__ import annotations

from typing import Annotated

import typer

from miyabi import defaults
from miyabi.cli import output, params
from miyabi.cli.root import HomeOpt, LayoutOpt, SocketOpt, app, checked, handles_errors, resolve_target


@app.command()
@handles_errors
def web(
    host: Annotated[
        str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on (loopback unless you say otherwise).")
    ] = defaults.WEB_HOST,
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", parser=checked(params.port), help="TCP port (0: any free one).")
    ] = defaults.WEB_PORT,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Nothing can be changed through this server (for sharing).")
    ] = False,
    no_token: Annotated[bool, typer.Option("--no-token", help="Ask no token (loopback only).")] = False,
    child: Annotated[
        bool, typer.Option("--child", hidden=True, help="Run as the controller's dashboard (print no token).")
    ] = False,
    socket: SocketOpt = None,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Serve the web dashboard, its REST API and /metrics.

    Prints the URL with its access token (and a read-only one for sharing); every
    request needs the token. Pages: the ensemble, each agent's live screen, tasks,
    inboxes, approvals, events; /metrics for Prometheus.
    """
    from miyabi.web.server import Urls, serve

    def ready(u: Urls) -> None:
        output.say(f"miyabi web: serving {resolve_target(home, socket, layout).session} at {u.base}", "green")
        if (
            child
        ):  # its output goes to logs/web.log: no token there (`miyabi status --json` and run/dashboards/ have it)
            return
        output.say(f"  open: {u.full}")
        if u.view is not None and not read_only:
            output.say(f"  read-only (to share): {u.view}")
        output.say(f"  API: {u.base}/api/v1 (token in Authorization: Bearer), metrics: {u.base}/metrics")

    serve(
        resolve_target(home, socket, layout),
        host,
        port,
        read_only=read_only,
        no_token=no_token,
        on_ready=ready,
        follow=layout is None,
    )
