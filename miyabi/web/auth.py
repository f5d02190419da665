"""Who may use the dashboard: access tokens, and the ASGI middleware that checks them.

Each home has two tokens in ``run/web.json`` (0600), made on first use and kept, so a
bookmarked URL works after a restart: the *token* reads and acts, the *view token*
only reads (for sharing). A request carries one as ``Authorization: Bearer T`` (or the
``X-Miyabi-Token`` header), as the ``miyabi_token`` cookie, or as ``?token=T`` on a page
(answered by a redirect that sets the cookie and drops the token from the URL).

State-changing requests (every method but GET and HEAD) must carry the token in a
header, never only in the cookie: a form or script on another site can make a browser
send the cookie, but cannot set a header without CORS, which the dashboard never
allows (OWASP Cross-Site Request Forgery Prevention Cheat Sheet, "Custom Request
Headers"). The cookie is also ``SameSite=Lax`` and ``HttpOnly``.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from enum import StrEnum
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from miyabi.errors import MiyabiError
from miyabi.files import private_dir, write_atomic
from miyabi.home import Home

TOKENS_FILE = "web.json"
"""Under ``run/``: the dashboard's tokens."""

COOKIE = "miyabi_token"
"""The cookie that carries the token after the first visit."""

HEADER = "x-miyabi-token"
"""A header that carries the token (besides ``Authorization: Bearer``)."""

COOKIE_AGE = 90 * 86400
"""Seconds the cookie is kept (90 days): a bookmark of the dashboard survives browser restarts."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Role(StrEnum):
    """What a request may do."""

    ADMIN = "admin"
    """Read and act (send, restart, approve, cancel, …)."""
    VIEWER = "viewer"
    """Read only."""


def load_tokens(home: Home) -> tuple[str, str]:
    """This home's (token, view token), made and saved the first time.

    Raises:
        OSError: ``run/web.json`` cannot be written.
    """
    path = home.run / TOKENS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("token"), str) and isinstance(data.get("view_token"), str):
            return data["token"], data["view_token"]
    except (OSError, ValueError):
        pass
    token, view = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    private_dir(home.run)
    tmp = path.with_name(f".{TOKENS_FILE}.{os.getpid()}")
    write_atomic(tmp, json.dumps({"token": token, "view_token": view}) + "\n")
    try:
        os.link(tmp, path)  # only if none exists: two first starts at once agree on one pair
    except FileExistsError:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return str(data["token"]), str(data["view_token"])
        except (OSError, ValueError, KeyError, TypeError):
            raise MiyabiError(
                f"{path} is not miyabi's token file; delete it (new tokens are made at the next start)"
            ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return token, view


@dataclass(frozen=True)
class Access:
    """The dashboard's access rules.

    Attributes:
        token: grants everything (None: no token needed; loopback only).
        view_token: grants reading.
        read_only: nothing changes through this server, whatever the token.
    """

    token: str | None
    view_token: str | None
    read_only: bool = False

    def role_of(self, given: str | None) -> Role | None:
        """The role a token grants (None: none)."""
        if self.token is None:  # no token: loopback only (the server refuses other hosts)
            return Role.VIEWER if self.read_only else Role.ADMIN
        if given is None:
            return None
        if hmac.compare_digest(given.encode(), self.token.encode()):
            return Role.VIEWER if self.read_only else Role.ADMIN
        if self.view_token is not None and hmac.compare_digest(given.encode(), self.view_token.encode()):
            return Role.VIEWER
        return None


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def header_token(headers: dict[str, str]) -> str | None:
    """The token in ``Authorization: Bearer`` or ``X-Miyabi-Token``, if any."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get(HEADER, "").strip() or None


def cookie_token(headers: dict[str, str]) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # noqa: BLE001 - http.cookies raises CookieError and others on garbage; garbage is no token
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


async def _reply(
    send: Send, status: int, body: bytes, content_type: str, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _deny(scope: Scope, send: Send, status: int, message: str) -> None:
    path = str(scope.get("path", ""))
    if path.startswith("/api/") or path == "/metrics" or scope.get("method") not in ("GET", "HEAD"):
        await _reply(send, status, json.dumps({"error": message}).encode(), "application/json")
        return
    from html import escape

    page = (
        f"<!doctype html><meta charset=utf-8><title>miyabi: {status}</title>"
        "<body "
        f"style='font-family:sans-serif;background:#111;color:#ddd;padding:2em'><h1>miyabi</h1><p>{escape(message)}</p>"
    )
    await _reply(send, status, page.encode(), "text/html; charset=utf-8")


def _hardened(send: Send) -> Send:
    """``send`` that adds ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy:
    no-referrer`` to every response (a crash log or an SVG is never sniffed as HTML; no
    URL of the dashboard leaks to a site it links to)."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                *message.get("headers", []),
                (b"x-content-type-options", b"nosniff"),
                (b"referrer-policy", b"no-referrer"),
            ]
        await send(message)

    return wrapped


def _loopback_host(host: str) -> bool:
    """Whether a Host header names a loopback address (with or without a port)."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.strip("[]").lower() in ("127.0.0.1", "localhost", "::1")


class TokenMiddleware:
    """Lets a request through only with a token that allows it; puts its role in
    ``scope["state"]["role"]`` and the token it used in ``scope["state"]["token"]``.

    Answers (JSON under ``/api/`` and for ``/metrics``, else a short page): 401 without
    a valid token, 403 for a change through the view token, a read-only server, or
    with the token only in the cookie.
    """

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # none is served: refused rather than let past the token check
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _hardened(send)
        headers = _headers(scope)
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        method = scope.get("method", "GET")
        reading = method in ("GET", "HEAD")
        if self.access.token is None and not _loopback_host(headers.get("host", "")):
            # without a token only the name the server was opened by counts (DNS rebinding)
            await _deny(
                scope, send, 403, "this dashboard has no token and answers only to 127.0.0.1, localhost or [::1]"
            )
            return
        path = str(scope.get("path", ""))
        if reading and "token" in query and not path.startswith("/api/") and path != "/metrics":
            await self._set_cookie(scope, send, query)
            return
        from_header = header_token(headers)
        given = from_header or cookie_token(headers) or (query.get("token") if reading else None)
        role = self.access.role_of(given)
        if role is None:
            why = "a wrong token" if given else "no token"
            await _deny(
                scope,
                send,
                401,
                f"{why}: open the URL `miyabi web` printed (it carries the token), "
                "or send the header Authorization: Bearer TOKEN",
            )
            return
        if not reading:
            if self.access.read_only:
                await _deny(
                    scope,
                    send,
                    403,
                    "this dashboard is read-only (started with --read-only); nothing can be changed through it",
                )
                return
            if role != Role.ADMIN:
                await _deny(scope, send, 403, "the view token only reads; changes need the dashboard's full token")
                return
            if from_header is None or self.access.role_of(from_header) != Role.ADMIN:
                await _deny(
                    scope,
                    send,
                    403,
                    "a change needs the token in the Authorization (or X-Miyabi-Token) header, "
                    "not only in the cookie (protection against cross-site requests)",
                )
                return
        scope.setdefault("state", {})
        scope["state"]["role"] = role
        scope["state"]["token"] = given or ""
        await self.app(scope, receive, send)

    async def _set_cookie(self, scope: Scope, send: Send, query: dict[str, str]) -> None:
        """``?token=T`` on a page: set the cookie and redirect to the URL without it."""
        given = query.pop("token")
        location = (
            "/" + str(scope.get("path", "/")).lstrip("/") + (f"?{urlencode(query)}" if query else "")
        )  # never //host
        if self.access.token is None:  # nothing to remember
            await _reply(send, 303, b"", "text/plain", ((b"location", location.encode()),))
            return
        if self.access.role_of(given) is None:
            await _deny(scope, send, 401, "a wrong token in the URL: open the URL `miyabi web` printed")
            return
        # Lax, not Strict: a link from chat opens the page; changes need the header anyway
        cookie = f"{COOKIE}={given}; Path=/; HttpOnly; SameSite=Lax; Max-Age={COOKIE_AGE}"
        await _reply(send, 303, b"", "text/plain", ((b"location", location.encode()), (b"set-cookie", cookie.encode())))
