"""The dashboard's REST API, ``/api/v1``: everything its pages do, for scripts too.

Reading is GET; every change is POST with the token in a header (see
:mod:`miyabi.web.auth`). Errors are ``{"error": "one line"}`` with a 4xx status for
bad input or a state that does not allow the change, 503 when the ensemble is not
running; never a stack trace. Live feeds (a pane's screen, the agents, the event
log) are Server-Sent Events. The OpenAPI document is ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from miyabi import defaults
from miyabi.backoff import backoff
from miyabi.bus.state import read_state
from miyabi.controller.view import bus_view, cancel_task, message_json, messages, retry_task, waiting
from miyabi.errors import MiyabiError, TmuxError
from miyabi.events import EventKind, events_after, path_of
from miyabi.messaging.mailbox import MessageState, drop, post, retry
from miyabi.web.models import (
    AgentRow,
    Agents,
    Answer,
    Approvals,
    Crash,
    Done,
    Dropped,
    Event,
    Frame,
    Hosts,
    Merge,
    Message,
    Sent,
    Story,
    StoryDetail,
    Task,
    TaskDetail,
    errors,
)
from miyabi.web.site import NotFound, Site
from miyabi.work.model import Task as StoredTask

router = APIRouter(prefix="/api/v1", responses=errors(401, 403))
"""Every operation answers 401 without a valid token and 403 for what the token or
server does not allow (:class:`miyabi.web.auth.TokenMiddleware`)."""


def site_of(request: Request) -> Site:
    site: Site = request.app.state.site
    return site


def who(request: Request) -> str:
    """Who acts, for the audit trail: ``web:ADDRESS`` of the client."""
    client = request.client
    return f"web:{client.host if client else '?'}"


# -- models (the API's schema)


class SendBody(BaseModel):
    text: str = Field(min_length=1, max_length=defaults.MAX_BODY, description="The message (UTF-8 text).")
    priority: Literal["high", "normal"] = "normal"
    ttl: float | None = Field(default=None, gt=0, description="Seconds it may wait before it is a dead letter.")
    sender: str = Field(default="human", alias="from", pattern=r"^[A-Za-z0-9_.@:-]{1,64}$", description="Who sends it.")


class DenyBody(BaseModel):
    reason: str | None = Field(
        default=None, max_length=10_000, description="Why: delivered to the agent as its next message."
    )


class TaskBody(BaseModel):
    title: str = Field(min_length=1, max_length=500)
    body: str = Field(default="", max_length=defaults.MAX_BODY)
    labels: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list, max_length=50)
    priority: Literal["high", "normal", "low"] = "normal"


# -- agents


@router.get(
    "/agents",
    response_model=Agents,
    responses=errors(503),
    summary="Every agent: state, current task, uptime, restarts, CPU, memory, tokens",
)
def list_agents(request: Request) -> dict[str, Any]:
    return site_of(request).agents_json()


@router.get(
    "/agents/stream",
    response_class=EventSourceResponse,
    responses=errors(),
    summary="The agents, again each time they change (SSE)",
)
async def stream_agents(request: Request) -> AsyncIterator[ServerSentEvent]:
    site = site_of(request)
    last = None
    while True:
        try:
            data = await anyio.to_thread.run_sync(lambda: site.agents_json(max_age=defaults.WEB_AGENTS_INTERVAL / 2))
        except MiyabiError as e:
            data = {"error": str(e)}
        if data != last:
            yield ServerSentEvent(data=data, event="agents")
            last = data
        else:
            yield ServerSentEvent(comment="unchanged")
        await asyncio.sleep(defaults.WEB_AGENTS_INTERVAL)


@router.get(
    "/hosts", response_model=Hosts, summary="With a bus: whether it is up, and every host on it with its agents' states"
)
def list_hosts(request: Request) -> dict[str, Any]:
    return hosts_of(site_of(request))


def hosts_of(site: Site) -> dict[str, Any]:
    """The bus and its hosts (``{"bus", "hosts", "error"}``; ``bus`` None without one)."""
    home = site.home
    try:
        return {"hosts": None, "error": None, **bus_view(home, all_hosts=read_state(home.root) is not None)}
    except MiyabiError as e:  # the bus down: what this host last knew, and why not more
        return {**bus_view(home, all_hosts=False), "hosts": None, "error": str(e)}


@router.get("/agents/{name}", response_model=AgentRow, responses=errors(404, 503), summary="One agent's row")
def get_agent(name: str, request: Request) -> dict[str, Any]:
    return site_of(request).agent_json(name)


def _pane_of(site: Site, name: str) -> str:
    site.agent(name)
    from miyabi.tmux.panes import list_panes

    pane = next((p for p in list_panes(site.tmux, site.target.session) if p.agent == name), None)
    if pane is None:
        raise NotFound(f"agent {name} has no pane; `miyabi up` creates one")
    return pane.pane_id


@router.get(
    "/agents/{name}/screen",
    response_model=Frame,
    responses=errors(404, 503),
    summary="The agent's pane as it looks now (HTML rows, colours kept)",
)
def get_screen(name: str, request: Request) -> dict[str, object]:
    site = site_of(request)
    return site.screens.frame(_pane_of(site, name)).to_json()


def pane_of(name: str, request: Request) -> str:
    """The agent's pane id, checked before a stream starts (404/503 then, not a broken stream)."""
    return _pane_of(site_of(request), name)


@router.get(
    "/agents/{name}/screen/stream",
    response_class=EventSourceResponse,
    responses=errors(404, 503),
    summary="The agent's pane, a frame each time it prints (SSE)",
)
async def stream_screen(
    name: str, request: Request, pane: Annotated[str, Depends(pane_of)]
) -> AsyncIterator[ServerSentEvent]:
    site = site_of(request)
    failures = 0
    loop = asyncio.get_running_loop()
    printed = asyncio.Event()

    def poke() -> None:
        loop.call_soon_threadsafe(printed.set)

    unwatch = site.screens.watch(pane, poke)
    last = None
    try:
        while True:
            printed.clear()
            try:
                frame = await anyio.to_thread.run_sync(site.screens.frame, pane)
                failures = 0
            except TmuxError as e:
                failures += 1
                if failures > defaults.WEB_SCREEN_RETRIES:
                    yield ServerSentEvent(data={"error": f"{name}'s pane cannot be read: {e}"}, event="gone")
                    return
                await asyncio.sleep(backoff(failures, defaults.WEB_SCREEN_RETRY_INITIAL, defaults.WEB_SCREEN_RETRY_MAX))
                try:  # recreated: follow its new pane
                    pane = await anyio.to_thread.run_sync(_pane_of, site, name)
                except MiyabiError:
                    continue
                unwatch()
                unwatch = site.screens.watch(pane, poke)
                continue
            data = frame.to_json()
            if last is None or (data["html"], data["cursor"]) != last:
                yield ServerSentEvent(data=data, event="screen")
                last = (data["html"], data["cursor"])
            else:
                yield ServerSentEvent(comment="unchanged")
            try:
                await asyncio.wait_for(printed.wait(), defaults.WEB_HEARTBEAT)
            except TimeoutError:
                pass
            await asyncio.sleep(defaults.WEB_SCREEN_GAP)
    finally:
        unwatch()


@router.post(
    "/agents/{name}/messages",
    status_code=201,
    response_model=Sent,
    response_model_by_alias=True,
    responses=errors(400, 404, 422),
    summary="Put a message in the agent's inbox",
)
def send_message(name: str, body: SendBody, request: Request) -> Sent:
    site = site_of(request)
    site.agent(name)
    lay = site.layout()
    msg = post(
        site.home.root,
        name,
        body.text,
        sender=body.sender,
        priority=body.priority,
        ttl=body.ttl,
        max_body=lay.max_body if lay is not None else defaults.MAX_BODY,
    )
    return Sent(id=msg.id, to=msg.to, sender=msg.sender, created=msg.created, state="pending")


@router.get(
    "/agents/{name}/messages",
    response_model=list[Message],
    responses=errors(404, 422),
    summary="The agent's messages (pending by default)",
)
def list_messages(
    name: str,
    request: Request,
    state: Annotated[list[MessageState] | None, Query(description="pending, delivered, failed")] = None,
) -> list[dict[str, Any]]:
    site = site_of(request)
    site.agent(name)
    return messages(site.home.root, name, tuple(state) if state else (MessageState.PENDING,))


@router.post(
    "/agents/{name}/restart",
    response_model=Done,
    responses=errors(404, 409, 503),
    summary="Restart the agent now, clearing its backoff",
)
def restart_agent(name: str, request: Request) -> Done:
    from miyabi.controller.requests import request_restart

    site = site_of(request)
    site.agent(name)
    request_restart(site.home, name)
    return Done(detail=f"restarted {name}")


def _answer(name: str, approve: bool, reason: str | None, request: Request) -> dict[str, Any]:
    from miyabi.supervision.approvals import answer

    site = site_of(request)
    agent = site.agent(name)
    a = answer(site.home, site.tmux, site.target.session, agent, approve, reason, by=who(request))
    return {
        "agent": a.agent,
        "answer": a.answer,
        "question": a.question,
        "keys": list(a.keys),
        "reason": a.reason,
        "message": a.message,
    }


@router.post(
    "/agents/{name}/approve",
    response_model=Answer,
    responses=errors(404, 409, 503),
    summary="Answer the agent's permission question with yes",
)
def approve(name: str, request: Request) -> dict[str, Any]:
    return _answer(name, True, None, request)


@router.post(
    "/agents/{name}/deny",
    response_model=Answer,
    responses=errors(400, 404, 409, 422, 503),
    summary="Answer the agent's permission question with no",
)
def deny(name: str, request: Request, body: DenyBody | None = None) -> dict[str, Any]:
    return _answer(name, False, body.reason if body else None, request)


_EVIDENCE = re.compile(r"^[a-z0-9][a-z0-9_-]*-[0-9TZ._:-]+\.log$")


@router.get(
    "/agents/{name}/crashes",
    response_model=list[Crash],
    responses=errors(404),
    summary="The agent's crash evidence files, newest first",
)
def list_crashes(name: str, request: Request) -> list[dict[str, Any]]:
    return crashes_of(site_of(request), name)


def crashes_of(site: Site, name: str) -> list[dict[str, Any]]:
    """The agent's crash evidence files, newest first: ``{"file", "time", "bytes"}``.

    Raises:
        AgentNotFound: no such agent.
    """
    from miyabi.times import rfc3339

    site.agent(name)
    d = site.home.logs / "crashes"
    out = []
    for p in sorted(d.glob(f"{name}-*.log"), key=lambda p: p.stat().st_mtime, reverse=True) if d.is_dir() else []:
        if p.name[len(name) + 1 :][:1].isdigit():  # agent "a" must not list agent "a-b"'s files
            st = p.stat()
            out.append({"file": p.name, "time": rfc3339(st.st_mtime), "bytes": st.st_size})
    return out


@router.get(
    "/agents/{name}/crashes/{file}",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **errors(404)},
    summary="One crash evidence file",
)
def get_crash(name: str, file: str, request: Request) -> Response:
    site = site_of(request)
    site.agent(name)
    if not _EVIDENCE.match(file) or not file.startswith(f"{name}-") or os.sep in file:
        raise NotFound(f"no crash evidence {file!r} for {name}; list them at /api/v1/agents/{name}/crashes")
    path = site.home.logs / "crashes" / file
    try:
        return PlainTextResponse(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        raise NotFound(f"no crash evidence {file!r} for {name}; list them at /api/v1/agents/{name}/crashes") from None


# -- approvals


@router.get(
    "/approvals",
    response_model=Approvals,
    responses=errors(503),
    summary="Agents waiting for permission, and the latest answers (the audit)",
)
def approvals(request: Request) -> dict[str, Any]:
    return approvals_of(site_of(request))


def approvals_of(site: Site) -> dict[str, Any]:
    """``{"waiting": [{"agent", "question", "via"}], "answers": [the newest 100 approval events, newest first]}``."""
    data = site.agents_json()
    waiting_ = [
        {"agent": a["name"], "question": a["question"], "via": a["via"]}
        for a in data["agents"]
        if a["state"] == "waiting-approval"
    ]
    answers: deque[dict[str, Any]] = deque(maxlen=100)
    for e in recent_events(path_of(site.home.root))[0]:
        if e.get("event") == EventKind.APPROVAL:
            answers.append(e)
    return {"waiting": waiting_, "answers": list(reversed(answers))}


# -- merges waiting for a person (approve: required)


@router.get(
    "/merges",
    response_model=list[Merge],
    responses=errors(503),
    summary="Checked merges waiting for a person, with their diff and check results",
)
def merges(request: Request) -> list[dict[str, Any]]:
    return merges_of(site_of(request))


def merges_of(site: Site) -> list[dict[str, Any]]:
    """The merges waiting for a person, oldest first: each approval's fields (see
    :meth:`~miyabi.pipeline.approvals.Approval.to_json`), its ``diff`` (its first
    ``defaults.WEB_MERGE_DIFF_BYTES``) and ``checks`` (each verify log's last
    ``defaults.WEB_MERGE_LOG_BYTES``, by path)."""
    from miyabi.pipeline.approvals import waiting

    out = []
    for a in waiting(site.home.root):
        checks = {}
        for log in a.logs:
            try:
                with open(log, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - defaults.WEB_MERGE_LOG_BYTES))
                    checks[log] = f.read().decode(errors="replace")
            except OSError as e:
                checks[log] = f"(unreadable: {e.strerror or e})"
        out.append({**a.to_json(), "diff": a.diff()[: defaults.WEB_MERGE_DIFF_BYTES], "checks": checks})
    return out


def _decide(task: int, approve: bool, reason: str | None, request: Request) -> Done:
    from miyabi.pipeline.approvals import decide

    a = decide(site_of(request).home.root, task, approve, who(request), reason or "")
    if approve:
        return Done(detail=f"approved the merge of task {task} ({a.sha[:12]}); it lands once checked on {a.base}")
    return Done(detail=f"rejected the merge of task {task}; it goes back to its agent")


@router.post(
    "/merges/{task}/approve",
    response_model=Done,
    responses=errors(404, 409, 422),
    summary="Let a waiting merge land (it is checked again on the base branch first)",
)
def approve_merge(task: int, request: Request) -> Done:
    return _decide(task, True, None, request)


@router.post(
    "/merges/{task}/reject",
    response_model=Done,
    responses=errors(400, 404, 409, 422),
    summary="Send a waiting merge back to its agent as a failed round",
)
def reject_merge(task: int, request: Request, body: DenyBody | None = None) -> Done:
    return _decide(task, False, body.reason if body else None, request)


# -- messages

MessageId = Annotated[
    str,
    PathParam(
        pattern=r"^[0-9a-f-]{1,36}$", description="A message's id, or a prefix of it that names one message only."
    ),
]


@router.get(
    "/messages",
    response_model=list[Message],
    responses=errors(422),
    summary="Messages of every agent in the given states (dead letters by default)",
)
def all_messages(
    request: Request,
    state: Annotated[list[MessageState] | None, Query(description="pending, delivered, failed")] = None,
) -> list[dict[str, Any]]:
    return messages_of(site_of(request), tuple(state) if state else (MessageState.FAILED,))


def messages_of(site: Site, states: tuple[MessageState, ...]) -> list[dict[str, Any]]:
    """Every agent's messages in ``states`` (as :func:`miyabi.controller.view.message_json`)."""
    out: list[dict[str, Any]] = []
    for a in site.agents():
        out += messages(site.home.root, a.name, states)
    return out


@router.post(
    "/messages/{msg_id}/retry",
    response_model=Message,
    responses=errors(400, 404, 409),
    summary="Put a dead letter back in its inbox, with a fresh ttl",
)
def retry_message(msg_id: MessageId, request: Request) -> dict[str, Any]:
    _, msg = retry(site_of(request).home.root, msg_id)
    return message_json(MessageState.PENDING, msg)


@router.post(
    "/messages/{msg_id}/drop",
    response_model=Dropped,
    responses=errors(400, 404, 409),
    summary="Discard a pending message",
)
def drop_message(msg_id: MessageId, request: Request) -> dict[str, Any]:
    box, msg = drop(site_of(request).home.root, msg_id)
    return {"id": msg.id, "to": box.agent, "dropped": True}


# -- tasks


@router.get(
    "/tasks",
    response_model=list[Task],
    responses=errors(400, 422, 503),
    summary="Tasks, newest first, filtered by state, agent, label and source",
)
def list_tasks(
    request: Request,
    state: str | None = None,
    agent: str | None = None,
    label: str | None = None,
    source: Literal["local", "github", "job"] | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    return tasks_of(site_of(request), state, agent, label, source, limit)


def tasks_of(
    site: Site,
    state: str | None = None,
    agent: str | None = None,
    label: str | None = None,
    source: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Tasks, newest first, each with ``waiting`` (why it waits, or None).

    Raises:
        BadInput: ``state`` is not a task state.
    """
    from miyabi.work.model import TaskState

    if state is not None and state not in TaskState.__members__.values():
        raise BadInput(f"state {state!r} is not a task state; use one of {', '.join(s.value for s in TaskState)}")
    tasks = [
        t
        for t in site.store.query(state, agent)
        if (label is None or label in t.labels) and (source is None or t.source == source)
    ]
    tasks = sorted(tasks, key=lambda t: t.id, reverse=True)[:limit]
    why = waiting(site.home, site.store, tasks)
    return [{**t.to_json(), "waiting": why.get(t.id)} for t in tasks]


@router.post(
    "/tasks",
    status_code=201,
    response_model=Task,
    responses=errors(400, 422, 503),
    summary="Add a local task; the controller routes it",
)
def add_task(body: TaskBody, request: Request) -> dict[str, Any]:
    site = site_of(request)
    return task_json(site, site.store.add(body.title, body.body, body.labels, body.priority, []))


def task_json(site: Site, t: StoredTask) -> dict[str, Any]:
    """A task as ``miyabi task ls --json`` prints it, with ``waiting``."""
    return {**t.to_json(), "waiting": waiting(site.home, site.store, [t]).get(t.id)}


@router.get(
    "/tasks/{ref}",
    response_model=TaskDetail,
    responses=errors(400, 404, 503),
    summary="One task with its history, dependencies and usage",
)
def get_task(ref: str, request: Request) -> dict[str, Any]:
    return task_of(site_of(request), ref)


# -- stories


@router.get("/stories", response_model=list[Story], responses=errors(503), summary="Stories, newest first")
def list_stories(request: Request) -> list[dict[str, Any]]:
    return stories_of(site_of(request))


def stories_of(site: Site) -> list[dict[str, Any]]:
    """Stories, newest first, each with how many tasks it has and how many landed."""
    from miyabi.work.stories import children, landed, stories

    out = []
    for s in reversed(stories(site.store)):
        kids = children(site.store, s.id)
        out.append({**s.to_json(), "tasks": len(kids), "landed": landed(kids)})
    return out


@router.get(
    "/stories/{story_id}",
    response_model=StoryDetail,
    responses=errors(400, 404, 503),
    summary="One story: its tasks and how far each got, its history, its deploy",
)
def get_story(story_id: str, request: Request) -> dict[str, Any]:
    return story_of(site_of(request), story_id)


def story_of(site: Site, story_id: str) -> dict[str, Any]:
    """One story with its ``children`` (state, verify rounds, merged), ``history`` and
    ``deploy`` (what its last deploy runs, and whether its health check passed).

    Raises:
        StoryError: no such story, or ``story_id`` is not a story id.
    """
    from miyabi.pipeline.deploy import Deployer
    from miyabi.times import rfc3339
    from miyabi.work.stories import LANDED_CHILD, children, get, history, landed

    s = get(site.store, story_id)
    kids = children(site.store, s.id)
    mine = [d for d in Deployer(site.home.root).deployments() if d.story == s.id]
    d = max(mine, key=lambda x: x.time) if mine else None
    deploy = (
        {
            "name": d.name,
            "commit": d.commit,
            "ok": d.ok,
            "time": rfc3339(d.time),
            "healthy": d.ok and d.last_good == d.commit,
            "serve": d.serve,
            "health": d.check.describe() if d.check is not None else None,
        }
        if d is not None
        else None
    )
    return {
        **s.to_json(),
        "tasks": len(kids),
        "landed": landed(kids),
        "children": [
            {
                "id": k.id,
                "ref": k.ref,
                "title": k.title,
                "state": str(k.state),
                "agent": k.agent,
                "rounds": k.rounds,
                "depends_on": site.store.depends_on(k.id),
                "merged": k.state in LANDED_CHILD and k.branch is not None,
            }
            for k in kids
        ],
        "history": history(site.store, s.id),
        "deploy": deploy,
    }


def task_of(site: Site, ref: str) -> dict[str, Any]:
    """One task with ``waiting``, ``depends_on``, ``history``, ``pull_request`` and ``usage``.

    Raises:
        TaskError: no such task, or ``ref`` is not a task id.
    """
    from miyabi.agents.usage import task_usage
    from miyabi.events import read_events

    t = site.store.get(ref)
    used = task_usage(read_events(site.home.root), str(t.id))
    pr = None
    if t.branch:
        from miyabi.pipeline.records import Records

        tree = next((w for w in Records(site.store).worktrees() if w.branch == t.branch and w.pr_url), None)
        pr = {"number": tree.pr_number, "url": tree.pr_url} if tree is not None else None
    return {
        **t.to_json(),
        "waiting": waiting(site.home, site.store, [t]).get(t.id),
        "depends_on": site.store.depends_on(t.id),
        "history": site.store.history(t.id),
        "pull_request": pr,
        "usage": {"input_tokens": used.input_tokens, "output_tokens": used.output_tokens} if used else None,
    }


@router.post(
    "/tasks/{ref}/cancel",
    response_model=Task,
    responses=errors(400, 404, 409, 503),
    summary="Cancel a task; its agent is told",
)
def cancel(ref: str, request: Request) -> dict[str, Any]:
    site = site_of(request)
    return task_json(site, cancel_task(site.home, site.store, ref, f"the dashboard ({who(request)})"))


@router.post(
    "/tasks/{ref}/retry",
    response_model=Task,
    responses=errors(400, 404, 409, 503),
    summary="Queue a failed or cancelled task again",
)
def retry_(ref: str, request: Request) -> dict[str, Any]:
    site = site_of(request)
    return task_json(site, retry_task(site.store, ref, f"the dashboard ({who(request)})"))


# -- events


class BadInput(MiyabiError):
    """The request's values are not usable (400)."""


def matcher(event: str | None, agent: str | None, grep: str | None) -> Callable[[dict[str, Any]], bool]:
    """The test of an event: its name is one of ``event`` (comma-separated), its agent
    ``agent``, and its JSON matches the regular expression ``grep`` (each when given).

    Raises:
        BadInput: ``grep`` is not a regular expression.
    """
    try:
        rx = re.compile(grep) if grep else None
    except re.error as e:
        raise BadInput(f"grep {grep!r} is not a regular expression: {e}") from None
    kinds = set(event.split(",")) if event else None

    def ok(e: dict[str, Any]) -> bool:
        if kinds is not None and e.get("event") not in kinds:
            return False
        if agent is not None and e.get("agent") != agent:
            return False
        return rx is None or rx.search(json.dumps(e, ensure_ascii=False)) is not None

    return ok


def event_filter(
    event: Annotated[str | None, Query(description="event names, comma-separated")] = None,
    agent: str | None = None,
    grep: Annotated[str | None, Query(max_length=500)] = None,
) -> Callable[[dict[str, Any]], bool]:
    """The events a request asks for, checked before its stream starts (400 for a bad ``grep``)."""
    return matcher(event, agent, grep)


def recent_events(path: Path, span: int = defaults.WEB_EVENTS_SPAN) -> tuple[list[dict[str, Any]], int]:
    """The events in the last ``span`` bytes of the log (whole lines), oldest first, and
    the log's size when read (where a stream of what comes next starts)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - span)
            f.seek(start)
            data = f.read(size - start)
    except FileNotFoundError:
        return [], 0
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first one is cut
    out = []
    for raw in lines:
        try:
            e = json.loads(raw)
        except ValueError:
            continue
        if isinstance(e, dict):
            out.append(e)
    return out, size


@router.get(
    "/events",
    response_model=list[Event],
    responses=errors(400, 422),
    summary="The newest events of logs/events.jsonl (its last 16 MiB), oldest first, filtered; "
    "the X-Events-Offset header says where /events/stream?after= goes on",
)
def list_events(
    request: Request,
    response: Response,
    ok: Annotated[Callable[[dict[str, Any]], bool], Depends(event_filter)],
    limit: Annotated[int, Query(ge=1, le=10_000)] = defaults.WEB_EVENTS_LIMIT,
) -> list[dict[str, Any]]:
    out, size = events_of(site_of(request), ok, limit)
    response.headers["x-events-offset"] = str(size)
    return out


def events_of(site: Site, ok: Callable[[dict[str, Any]], bool], limit: int) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` events ``ok`` takes, oldest first, and the log's size (where a
    stream of what comes next starts)."""
    events, size = recent_events(path_of(site.home.root))
    out: deque[dict[str, Any]] = deque(maxlen=limit)
    for e in events:
        if ok(e):
            out.append(e)
    return list(out), size


@router.get(
    "/events/stream",
    response_class=EventSourceResponse,
    responses=errors(400, 422),
    summary="Events as they are logged (SSE); the id of each is its end offset in the log, for Last-Event-ID",
)
async def stream_events(
    request: Request,
    ok: Annotated[Callable[[dict[str, Any]], bool], Depends(event_filter)],
    after: Annotated[
        int | None, Query(ge=0, description="start after this offset of the log (X-Events-Offset)")
    ] = None,
) -> AsyncIterator[ServerSentEvent]:
    path = path_of(site_of(request).home.root)
    last_id = request.headers.get("last-event-id", "")
    try:
        offset = int(last_id) if last_id.isdigit() else after if after is not None else path.stat().st_size
    except FileNotFoundError:
        offset = 0
    quiet = 0.0

    def read(at: int) -> tuple[list[tuple[int, dict[str, Any]]], int, bool]:
        """New matching events (off the event loop: a user's pattern may be slow)."""
        records, end, _ = events_after(path, at)
        return [(pos, rec) for _, pos, rec in records if ok(rec)], end, end != at

    while True:
        found, offset, lines = await anyio.to_thread.run_sync(read, offset)
        for end, rec in found:
            yield ServerSentEvent(data=rec, event="event", id=str(end))
        quiet = 0.0 if lines else quiet + defaults.WEB_EVENTS_POLL
        if quiet >= defaults.WEB_HEARTBEAT:
            quiet = 0.0
            yield ServerSentEvent(comment="alive")
        await asyncio.sleep(defaults.WEB_EVENTS_POLL)
