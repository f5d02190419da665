"""The dashboard's ASGI application (FastAPI): the API, the pages, ``/metrics`` and the
static files, behind the token check; every error a one-line JSON message.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from miyabi import __version__
from miyabi.errors import AgentNotFound, MiyabiError, TmuxError, TmuxUnavailable
from miyabi.messaging.mailbox import MessageError
from miyabi.supervision.approvals import NotWaiting
from miyabi.web import api, kpis, logs, pages
from miyabi.web.auth import TokenMiddleware
from miyabi.web.metrics import MiyabiCollector
from miyabi.web.site import NotFound, Site
from miyabi.work.model import TaskError

log = logging.getLogger("miyabi.web")


def status_of(e: MiyabiError) -> int:
    """The HTTP status of a miyabi error: 404 for what does not exist, 409 for a state
    that does not allow the change, 400 for bad values, 503 when tmux or the session
    is not there."""
    text = str(e)
    if isinstance(e, (AgentNotFound, NotFound)):
        return 404
    if isinstance(e, (TmuxUnavailable, TmuxError)):
        return 503
    if isinstance(e, NotWaiting):
        return 409
    if isinstance(e, (MessageError, TaskError)):
        if text.startswith("no ") or "no such task" in text:
            return 404
        state_words = ("cannot become", "not a dead letter", "only pending", "not verifying", "already")
        return 409 if any(w in text for w in state_words) else 400
    if isinstance(e, api.BadInput):
        return 400
    if any(w in text for w in ("no controller runs", "did not answer", "could not restart", "no layout is known")):
        return 503
    return 409


ROUTERS = (api.router, kpis.router, logs.router, pages.router)
"""The routers of the app, in the order they are tried."""


def wants_html(request: Request) -> bool:
    """Whether an error is answered with a page: a browser (``Accept: text/html``) asked
    for a page, not the API, ``/metrics`` or a static file."""
    path = request.url.path
    if path.startswith(("/api/", "/static/")) or path == "/metrics":
        return False
    return "text/html" in request.headers.get("accept", "")


def error_response(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error: ``{"error": "one line"}``, or for a browser on a page, a page of the
    dashboard that says it (:func:`wants_html`)."""
    if wants_html(request):
        page = pages.error_page(request, status, message)
        page.headers.update(headers or {})
        return page
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """The methods the routes of ``scope``'s path take (sorted), for a 405's ``Allow``:
    Starlette names only the first matching route's."""
    found: set[str] = set()
    for route in [*app.routes, *(r for router in ROUTERS for r in router.routes)]:
        methods = getattr(route, "methods", None)
        if methods and route.matches(scope)[0] != Match.NONE:
            found |= set(methods)
    return sorted(found)


def create_app(site: Site) -> FastAPI:
    """The dashboard for ``site``."""
    app = FastAPI(
        title="miyabi",
        version=__version__,
        description="The ensemble's agents, tasks, messages and events.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.site = site
    app.add_middleware(TokenMiddleware, access=site.access)

    @app.exception_handler(MiyabiError)
    async def miyabi_error(request: Request, e: MiyabiError) -> Response:
        return error_response(request, status_of(e), str(e))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> Response:
        first: dict[str, Any] = e.errors()[0] if e.errors() else {}
        where = (
            ".".join(str(p) for p in first.get("loc", ()) if p != "body" and not isinstance(p, int))
            or "the request body"
        )
        return error_response(request, 422, f"{where}: {first.get('msg', 'not valid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> Response:
        what = "no such page or endpoint" if e.status_code == 404 else str(e.detail)
        headers = {k: v for k, v in (e.headers or {}).items() if k.lower() != "allow"}
        if e.status_code == 405:  # every method of the path, not only the first route's (RFC 9110 15.5.6)
            headers["allow"] = ", ".join(allowed_methods(request.app, request.scope))
        return error_response(request, e.status_code, f"{what}: {request.method} {request.url.path}", headers)

    @app.exception_handler(sqlite3.Error)
    async def store_error(request: Request, e: sqlite3.Error) -> Response:
        return error_response(request, 503, f"the task store failed: {e}; try again")

    @app.exception_handler(OSError)
    async def os_error(request: Request, e: OSError) -> Response:
        return error_response(request, 500, f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}")

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(request, 500, f"internal error ({type(e).__name__}); see the dashboard's log")

    registry = CollectorRegistry()
    registry.register(MiyabiCollector(site))

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    return app
