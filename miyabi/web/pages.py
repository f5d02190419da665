"""The dashboard's pages: a small server-rendered shell per page (navigation, the
page's name, the token its script sends with changes) and one hand-written script,
``static/app.js``, that draws each page from the same ``/api/v1`` everyone uses.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from miyabi.web.auth import Role
from miyabi.web.site import Site

_READ_ONLY = '<span class="ro">read-only</span>'

STATIC = Path(__file__).parent / "static"
"""The script and style sheet (served under ``/static/``)."""

NAV = (
    ("/", "Ensemble", "ensemble"),
    ("/tasks", "Tasks", "tasks"),
    ("/inbox", "Inbox", "inbox"),
    ("/approvals", "Approvals", "approvals"),
    ("/events", "Events", "events"),
    ("/kpis", "KPIs", "kpis"),
)

router = APIRouter(include_in_schema=False)


def shell(
    request: Request, title: str, page: str, status: int = 200, notice: str | None = None, **data: str
) -> HTMLResponse:
    """The HTML of one page: the navigation, an empty ``<main>`` the script fills, and
    ``data-*`` attributes telling it what to draw (all escaped)."""
    site: Site = request.app.state.site
    state = request.scope.get("state", {})
    role = state.get("role", Role.VIEWER)
    token = state.get("token", "")
    can_act = role == Role.ADMIN and not site.access.read_only
    nav = "".join(f'<a href="{href}"{" class=on" if key == page else ""}>{label}</a>' for href, label, key in NAV)
    attrs = "".join(f' data-{escape(k)}="{escape(v)}"' for k, v in data.items())
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="miyabi-token" content="{escape(token or "-") if can_act else ""}">
<title>{escape(title)} · miyabi {escape(site.target.session)}</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body data-page="{escape(page)}" data-can-act="{"1" if can_act else "0"}"{attrs}>
<header><span class="brand">miyabi</span><span class="session">{escape(site.target.session)}</span><nav>{nav}</nav>
<span id="conn" class="conn" title="live connection">●</span>{"" if can_act else _READ_ONLY}</header>
<main id="main">{f'<p class="bad">{escape(notice)}</p>' if notice else '<p class="muted">loading…</p>'}</main>
<script src="/static/app.js"></script></body></html>"""
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "cache-control": "no-store",
            "x-frame-options": "DENY",
            "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; frame-ancestors 'none'",
        },
    )


FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1e2128"/>'
    '<circle cx="8" cy="8" r="4" fill="#3fb950"/></svg>'
)


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(FAVICON, media_type="image/svg+xml", headers={"cache-control": "max-age=86400"})


@router.get("/", response_class=HTMLResponse)
def ensemble_page(request: Request) -> HTMLResponse:
    return shell(request, "Ensemble", "ensemble")


@router.get("/agents/{name}", response_class=HTMLResponse)
def agent_page(name: str, request: Request) -> HTMLResponse:
    from miyabi.errors import AgentNotFound

    site: Site = request.app.state.site
    try:
        site.agent(name)
    except AgentNotFound as e:
        return shell(request, "no such agent", "missing", status=404, notice=str(e))
    return shell(request, name, "agent", agent=name)


@router.get("/tasks", response_class=HTMLResponse)
def tasks_page(request: Request) -> HTMLResponse:
    return shell(request, "Tasks", "tasks")


@router.get("/tasks/{ref}", response_class=HTMLResponse)
def task_page(ref: str, request: Request) -> HTMLResponse:
    return shell(request, f"Task {ref}", "task", task=ref)


@router.get("/inbox", response_class=HTMLResponse)
def inbox_page(request: Request) -> HTMLResponse:
    return shell(request, "Inbox", "inbox")


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(request: Request) -> HTMLResponse:
    return shell(request, "Approvals", "approvals")


@router.get("/events", response_class=HTMLResponse)
def events_page(request: Request) -> HTMLResponse:
    return shell(request, "Events", "events")


@router.get("/kpis", response_class=HTMLResponse)
def kpis_page(request: Request) -> HTMLResponse:
    return shell(request, "KPIs", "kpis")
