"""Serving the dashboard: checks the address, makes the tokens, prints the URLs, and
runs the ASGI server (uvicorn) until stopped."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from miyabi.controller.view import Target
from miyabi.controller.webproc import DASHBOARDS, dashboards, is_dashboard
from miyabi.errors import MiyabiError, UsageError
from miyabi.files import private_dir, write_atomic
from miyabi.home import Home
from miyabi.times import rfc3339
from miyabi.web.auth import Access, load_tokens

log = logging.getLogger("miyabi.web")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Urls:
    """Where the dashboard answers.

    Attributes:
        base: ``http://HOST:PORT``.
        full: the URL that reads and acts (carries the token).
        view: the URL that only reads (carries the view token), None without tokens.
    """

    base: str
    full: str
    view: str | None


def access_for(target: Target, host: str, read_only: bool, no_token: bool) -> Access:
    """The access rules for a server on ``host``.

    Raises:
        UsageError: no token asked for on an address other than loopback.
        OSError: the tokens cannot be saved.
    """
    if no_token:
        if not is_loopback(host):
            raise UsageError(
                f"--no-token is refused on {host}: without a token, anyone who reaches that address could "
                "drive the agents; keep the token, or bind to 127.0.0.1"
            )
        return Access(None, None, read_only)
    token, view = load_tokens(target.home)
    return Access(token, view, read_only)


def urls(host: str, port: int, access: Access) -> Urls:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    base = f"http://{shown}:{port}"
    if access.token is None:
        return Urls(base, base + "/", None)
    return Urls(base, f"{base}/?token={access.token}", f"{base}/?token={access.view_token}")


def serve(
    target: Target,
    host: str,
    port: int,
    read_only: bool = False,
    no_token: bool = False,
    on_ready: Callable[[Urls], None] | None = None,
    follow: bool = True,
) -> None:
    """Serve the dashboard of ``target`` on ``host:port`` until SIGINT or SIGTERM
    (``follow``: serve what a later ``miyabi up`` in the home runs).

    Raises:
        UsageError: ``no_token`` on an address other than loopback.
        MiyabiError: the address is taken or cannot be bound.
    """
    import uvicorn

    from miyabi.web.app import create_app
    from miyabi.web.site import Site

    access = access_for(target, host, read_only, no_token)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise MiyabiError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    try:  # bind first, so that a taken port is one clear line and the URL printed is true
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)  # connections wait in the backlog from now on, before the URL is printed
    except OSError as e:
        sock.close()
        why = f"{e.strerror or e}{held_by(target.home, port)}" if e.errno == errno.EADDRINUSE else e.strerror or str(e)
        raise MiyabiError(f"cannot listen on {host}:{port}: {why}; pick another port with --port") from None
    port = sock.getsockname()[1]
    site = Site(target, access, follow=follow)
    app = create_app(site)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1, lifespan="off")
    server = uvicorn.Server(config)
    where = urls(host, port, access)
    path = target.home.run / DASHBOARDS / f"{os.getpid()}.json"
    record = {
        "pid": os.getpid(),
        "started": rfc3339(time.time()),
        "base": where.base,
        "url": where.full,
        "view_url": where.view,
        "read_only": read_only,
    }
    private_dir(path.parent)
    write_atomic(path, json.dumps(record) + "\n")
    if on_ready is not None:
        on_ready(where)
    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down gracefully on SIGTERM, then raises it again under the handler
        # it found: this one ends the process through the ``finally`` below (its record
        # removed), where the default action would kill it first.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run(sockets=[sock])
    finally:
        site.close()
        sock.close()
        path.unlink(missing_ok=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def held_by(home: Home, port: int) -> str:
    """Who listens on TCP ``port`` of this machine, as the tail of an error message:
    ``" (this home's dashboard, pid N, already serves there: URL)"``, ``" (held by
    another home's miyabi dashboard, pid N)"``, ``" (held by NAME, pid N)"``, or ""
    when it cannot be told (another user's socket, no permission)."""
    import psutil

    try:
        pids = {
            c.pid
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr[1] == port
        }
    except (psutil.Error, OSError):
        return ""
    pid = min((p for p in pids if p is not None), default=None)
    if pid is None:
        return ""
    if is_dashboard(pid, home):
        mine = next((d for d in dashboards(home) if d["pid"] == pid), None)
        where = f": {mine['base']}" if mine is not None else ""
        return f" (this home's dashboard, pid {pid}, already serves there{where})"
    if is_dashboard(pid):
        return f" (held by another home's miyabi dashboard, pid {pid})"
    try:
        return f" (held by {psutil.Process(pid).name()}, pid {pid})"
    except psutil.Error:
        return f" (held by pid {pid})"


def published(home: Home) -> dict[str, Any] | None:
    """The dashboard that serves ``home`` now, the longest running when several do, as
    it published itself under ``run/dashboards/`` (``pid``, ``started``, ``base``,
    ``url`` with the token, ``view_url``, ``read_only``), or None when none runs."""
    found = dashboards(home)
    return found[0] if found else None
