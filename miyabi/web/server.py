"""Serving the dashboard: checks the address, makes the tokens, prints the URLs, and
runs the ASGI server (uvicorn) until stopped."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from miyabi.controller.view import Target
from miyabi.errors import MiyabiError, UsageError
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
            raise UsageError(f"--no-token is refused on {host}: without a token, anyone who reaches that address could "
                             "drive the agents; keep the token, or bind to 127.0.0.1")
        return Access(None, None, read_only)
    token, view = load_tokens(target.home)
    return Access(token, view, read_only)


def urls(host: str, port: int, access: Access) -> Urls:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    base = f"http://{shown}:{port}"
    if access.token is None:
        return Urls(base, base + "/", None)
    return Urls(base, f"{base}/?token={access.token}", f"{base}/?token={access.view_token}")


def serve(target: Target, host: str, port: int, read_only: bool = False, no_token: bool = False,
          on_ready: Callable[[Urls], None] | None = None) -> None:
    """Serve the dashboard of ``target`` on ``host:port`` until SIGINT or SIGTERM.

    Raises:
        UsageError: ``no_token`` on an address other than loopback.
        MiyabiError: the address is taken or cannot be bound.
    """
    import uvicorn

    from miyabi.web.app import create_app
    from miyabi.web.site import Site

    access = access_for(target, host, read_only, no_token)
    try:  # bind first, so that a taken port is one clear line and the URL printed is true
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        raise MiyabiError(f"cannot listen on {host}:{port}: {e.strerror or e}; pick another with --port") from None
    port = sock.getsockname()[1]
    site = Site(target, access)
    app = create_app(site)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1, lifespan="off")
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready(urls(host, port, access))
    try:
        server.run(sockets=[sock])
    finally:
        site.close()
        sock.close()
