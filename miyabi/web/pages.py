"""The dashboard's pages, rendered on the server with what is true when they are asked
for: the agents, the tasks, the task, the messages, the events, the figures. A page
reads nothing the API does not read (the same functions of :mod:`miyabi.web.api`),
and its templates (``templates/``, Jinja2) escape every value: task titles, screens'
text and message bodies are shown, never run.

One hand-written script, ``static/app.js``, keeps each page live: it follows the live
feeds (Server-Sent Events) and fetches a part of the page again, by itself, when it
may have changed: ``GET PAGE?part=NAME`` answers the HTML of the element
``id=NAME`` alone (a block of the page's template). Every change goes through
``/api/v1``, with the token in a header. Without the script a page still shows its
state, and its filters and searches are plain forms.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from miyabi import defaults
from miyabi.controller.view import messages
from miyabi.errors import MiyabiError
from miyabi.messaging.mailbox import MessageState
from miyabi.reports.render import seconds_text
from miyabi.web.api import (
    BadInput,
    approvals_of,
    crashes_of,
    events_of,
    hosts_of,
    matcher,
    merges_of,
    messages_of,
    pane_of,
    stories_of,
    story_of,
    task_of,
    tasks_of,
)
from miyabi.web.auth import Role
from miyabi.web.kpis import WINDOWS, kpis_of
from miyabi.web.logs import log_lines
from miyabi.web.site import Site
from miyabi.work.model import FINISHED, LANDED, OPEN, TaskState

STATIC = Path(__file__).parent / "static"
"""The script and style sheet (served under ``/static/``)."""

TEMPLATES = Path(__file__).parent / "templates"
"""The pages' templates (Jinja2)."""

NAV = (
    ("/", "Ensemble", "ensemble"),
    ("/tasks", "Tasks", "tasks"),
    ("/stories", "Stories", "stories"),
    ("/inbox", "Inbox", "inbox"),
    ("/approvals", "Approvals", "approvals"),
    ("/events", "Events", "events"),
    ("/kpis", "KPIs", "kpis"),
)

HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'",
}
"""Every page's headers: never cached (it shows live state and carries the token), never
framed, and no script but the dashboard's own."""


@dataclass(frozen=True)
class Column:
    """A column of the task board: its name and the task states it holds."""

    name: str
    states: tuple[TaskState, ...]


BOARD = (
    Column("queued", (TaskState.QUEUED, TaskState.BLOCKED)),
    Column("working", (TaskState.ASSIGNED, TaskState.IN_PROGRESS, TaskState.VERIFYING)),
    Column("shared", (TaskState.SHARED,)),
    Column("landed", LANDED),
    Column("finished", FINISHED),
)
"""The task board: what waits, what is worked on, what went to the bus (shown only with
a ``bus:``, or while a task is there), what landed and waits for its story's deploy
(shown while a task is there), what is over; each card names its exact state."""

CANCELLABLE = OPEN
"""Task states a task can be cancelled from (the task page's Cancel)."""

RETRIABLE = (TaskState.FAILED, TaskState.CANCELLED)
"""Task states a task can be queued again from (the task page's Retry)."""


def size(n: float | None) -> str:
    """Bytes as ``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1.0 GiB``; ``-`` for None."""
    if n is None:
        return "-"
    units = ("B", "KiB", "MiB", "GiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.1f} {units[i]}" if i else f"{n:.0f} {units[i]}"


def rest_json(event: dict[str, Any]) -> str:
    """An event's fields but its time, name and agent, as compact JSON (as the script writes them)."""
    rest = {k: v for k, v in event.items() if k not in ("time", "event", "agent")}
    return json.dumps(rest, ensure_ascii=False, separators=(",", ":"))


env = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
)
env.filters.update(
    ago=seconds_text,
    size=size,
    rest_json=rest_json,
    cpu=lambda v: "-" if v is None else f"{v:.1f}%",
    dash=lambda v: "-" if v is None else v,
    http=lambda u: isinstance(u, str) and u.lower().startswith(("http://", "https://")),
)
env.globals["m"] = env.get_template("macros.html").module


def title_of(page: str, session: str) -> str:
    """The window title: the page, the session, miyabi (the session only when it is not
    named ``miyabi`` itself)."""
    return f"{page} · miyabi" if session == "miyabi" else f"{page} · {session} · miyabi"


def render(
    request: Request,
    template: str,
    title: str,
    page: str,
    status: int = 200,
    data: dict[str, str] | None = None,
    **ctx: Any,
) -> HTMLResponse:
    """The page ``template`` with ``ctx``, or with ``?part=NAME`` only the HTML inside its
    element ``id=NAME`` (the template's block NAME); ``data`` become the body's ``data-*``
    attributes (the script reads them)."""
    site: Site = request.app.state.site
    state = request.scope.get("state", {})
    can_act = state.get("role", Role.VIEWER) == Role.ADMIN and not site.access.read_only
    token = state.get("token", "")
    context = {
        "full_title": title_of(title, site.target.session),
        "session": site.target.session,
        "show_session": site.target.session != "miyabi",
        "nav": NAV,
        "page": page,
        "can_act": can_act,
        "token": (token or "-") if can_act else "",
        "data": data or {},
        **ctx,
    }
    t = env.get_template(template)
    part = request.query_params.get("part")
    if part is not None and part in t.blocks:
        html = "".join(t.blocks[part](t.new_context(context)))
    else:
        html = t.render(context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """A page that says what went wrong (``status``, its reason and one line), for browsers."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "error"
    return render(
        request, "error.html", f"{status} {reason}", "error", status, code=status, reason=reason, message=message
    )


def site_of(request: Request) -> Site:
    site: Site = request.app.state.site
    return site


router = APIRouter(include_in_schema=False)

FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1e2128"/>'
    '<circle cx="8" cy="8" r="4" fill="#3fb950"/></svg>'
)


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(FAVICON, media_type="image/svg+xml", headers={"cache-control": "max-age=86400"})


@router.get("/", response_class=HTMLResponse)
def ensemble_page(request: Request) -> HTMLResponse:
    site = site_of(request)
    part = request.query_params.get("part")
    data: dict[str, Any] = {"agents": [], "controller": None}
    error = None
    if part != "hosts":
        try:
            data = site.agents_json()
        except MiyabiError as e:  # the session is not running: the page says so
            error = str(e)
    named: list[dict[str, Any]] = []
    pools: dict[str, list[dict[str, Any]]] = {}
    for a in data["agents"]:
        (pools.setdefault(a["pool"], []) if a["pool"] else named).append(a)
    return render(
        request,
        "ensemble.html",
        "Ensemble",
        "ensemble",
        named=named,
        pools=pools,
        controller=data["controller"],
        error=error,
        hosts=hosts_of(site) if part in (None, "hosts") else {"bus": None},
    )


@router.get("/agents/{name}", response_class=HTMLResponse)
def agent_page(name: str, request: Request) -> HTMLResponse:
    site = site_of(request)
    site.agent(name)  # AgentNotFound: 404
    part = request.query_params.get("part")
    try:
        agent: dict[str, Any] | None = site.agent_json(name)
        error = None
    except MiyabiError as e:
        agent, error = None, str(e)
    alive = bool(agent and agent["alive"])
    frame, tail = "", []
    if part in (None, "display"):
        if alive:
            try:
                frame = site.screens.frame(pane_of(name, request)).html
            except MiyabiError:  # gone meanwhile: the script draws it when it is back
                frame = ""
        else:
            tail = [ln.text for ln in log_lines(site, name, None, None, defaults.WEB_DOWN_TAIL)]
    grep, since = request.query_params.get("grep") or None, request.query_params.get("since") or None
    found: list[str] | None = None
    if grep or since:
        try:
            found = [ln.text for ln in log_lines(site, name, grep, since, defaults.WEB_LOGS_LIMIT)]
        except BadInput as e:
            found = [str(e)]
    return render(
        request,
        "agent.html",
        name,
        "agent",
        data={"agent": name},
        name=name,
        agent=agent,
        error=error,
        alive=alive,
        frame=frame,
        tail=tail,
        messages=messages(site.home.root, name, (MessageState.PENDING, MessageState.FAILED)) if part != "info" else [],
        crashes=crashes_of(site, name) if part in (None, "side") else [],
        grep=grep,
        since=since,
        found=found,
    )


@router.get("/tasks", response_class=HTMLResponse)
def tasks_page(request: Request) -> HTMLResponse:
    site = site_of(request)
    q = request.query_params
    agent, label, source = q.get("agent") or None, q.get("label") or None, q.get("source") or None
    if source not in (None, "local", "github", "job"):
        source = None
    tasks = tasks_of(site, None, agent, label, source)
    lay = site.layout()
    columns = []
    for col in BOARD:
        here = [t for t in tasks if t["state"] in col.states]
        if col.name == "shared" and not here and (lay is None or lay.bus is None):
            continue
        if col.name == "landed" and not here:
            continue
        if col.name == "finished":
            here.sort(key=lambda t: str(t["updated"]), reverse=True)
        columns.append({"name": col.name, "states": [str(s) for s in col.states], "tasks": here})
    return render(
        request, "tasks.html", "Tasks", "tasks", columns=columns, agent=agent, label=label, source=source, error=None
    )


@router.get("/tasks/{ref}", response_class=HTMLResponse)
def task_page(ref: str, request: Request) -> HTMLResponse:
    t = task_of(site_of(request), ref)  # TaskError: 404 or 400
    return render(
        request,
        "task.html",
        f"Task {t['ref']}",
        "task",
        data={"task": str(t["id"])},
        t=t,
        cancellable=[str(s) for s in CANCELLABLE],
        retriable=[str(s) for s in RETRIABLE],
    )


@router.get("/stories", response_class=HTMLResponse)
def stories_page(request: Request) -> HTMLResponse:
    return render(request, "stories.html", "Stories", "stories", stories=stories_of(site_of(request)))


@router.get("/stories/{story_id}", response_class=HTMLResponse)
def story_page(story_id: str, request: Request) -> HTMLResponse:
    s = story_of(site_of(request), story_id)  # StoryError: 404 or 400
    return render(request, "story.html", f"Story {s['id']}", "story", data={"story": str(s["id"])}, s=s)


@router.get("/inbox", response_class=HTMLResponse)
def inbox_page(request: Request) -> HTMLResponse:
    msgs = messages_of(site_of(request), (MessageState.PENDING, MessageState.FAILED))
    return render(request, "inbox.html", "Inbox", "inbox", messages=msgs)


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(request: Request) -> HTMLResponse:
    site = site_of(request)
    return render(
        request, "approvals.html", "Approvals", "approvals", approvals=approvals_of(site), merges=merges_of(site)
    )


@router.get("/events", response_class=HTMLResponse)
def events_page(request: Request) -> HTMLResponse:
    q = request.query_params
    event, agent, grep = q.get("event") or None, q.get("agent") or None, q.get("grep") or None
    try:
        events, after = events_of(site_of(request), matcher(event, agent, grep), defaults.WEB_PAGE_EVENTS)
        error = None
    except BadInput as e:
        events, after, error = [], 0, str(e)
    return render(
        request,
        "events.html",
        "Events",
        "events",
        events=list(reversed(events)),
        after=after,
        event=event,
        agent=agent,
        grep=grep,
        error=error,
    )


@router.get("/kpis", response_class=HTMLResponse)
def kpis_page(request: Request) -> HTMLResponse:
    since = request.query_params.get("since")
    since = since if since in WINDOWS else "24h"
    return render(
        request, "kpis.html", "KPIs", "kpis", kpis=kpis_of(site_of(request), since), since=since, windows=list(WINDOWS)
    )
