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
from miyabi.web.site import Site
from miyabi.work.tasks import TaskError

log = logging.getLogger("miyabi.web")


def status_of(e: MiyabiError) -> int:
    """The HTTP status of a miyabi error: 404 for what does not exist, 409 for a state
    that does not allow the change, 400 for bad values, 503 when tmux or the session
    is not there."""
    text = str(e)
    if isinstance(e, (AgentNotFound, api.NotFound)):
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
    async def miyabi_error(request: Request, e: MiyabiError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=status_of(e))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = e.errors()[0] if e.errors() else {}
        where = (
            ".".join(str(p) for p in first.get("loc", ()) if p != "body" and not isinstance(p, int))
            or "the request body"
        )
        return JSONResponse({"error": f"{where}: {first.get('msg', 'not valid')}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        what = "no such page or endpoint" if e.status_code == 404 else str(e.detail)
        headers = dict(e.headers or {})
        if e.status_code == 405:  # every method of the path, not only the first route's (RFC 9110 15.5.6)
            headers["allow"] = ", ".join(allowed_methods(request.app, request.scope))
        return JSONResponse(
            {"error": f"{what}: {request.method} {request.url.path}"}, status_code=e.status_code, headers=headers
        )

    @app.exception_handler(sqlite3.Error)
    async def store_error(request: Request, e: sqlite3.Error) -> JSONResponse:
        return JSONResponse({"error": f"the task store failed: {e}; try again"}, status_code=503)

    @app.exception_handler(OSError)
    async def os_error(request: Request, e: OSError) -> JSONResponse:
        return JSONResponse({"error": f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}"}, status_code=500)

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(e).__name__}); see the dashboard's log"}, status_code=500)

    registry = CollectorRegistry()
    registry.register(MiyabiCollector(site))

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    return app
