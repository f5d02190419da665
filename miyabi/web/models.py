"""The web API's schema: a pydantic model for every answer of ``/api/v1``, and the
error statuses each operation declares in its OpenAPI document.

Times are RFC 3339 strings (``2026-11-22T04:05:06.789Z``), durations seconds, sizes
bytes. The handlers answer what the views of :mod:`miyabi.controller.view` give (the
rows ``miyabi status --json`` and ``miyabi inbox --json`` print); FastAPI checks each
answer against its model and keeps only the model's fields.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Error(BaseModel):
    """Every error: one line, never a stack trace."""

    error: str = Field(description="What went wrong and what to do, in one line.")


ERRORS: dict[int, str] = {
    400: "A value that cannot be used (a task id that is not one, a pattern that does not compile, a message "
    "with no text).",
    401: "No token, or a wrong one.",
    403: "A change with the view token, on a read-only server, or with the token only in the cookie; or a "
    "server without a token asked under another name than 127.0.0.1, localhost or [::1].",
    404: "The agent, task, message, file or chart does not exist.",
    409: "The state does not allow the change (not waiting for approval, already cancelled, not a dead letter).",
    422: "A parameter or body does not match the schema.",
    503: "The session, the controller or the task store is not there; start it (`miyabi up`) or try again.",
}
"""What each error status means, for the OpenAPI document."""


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for an operation that answers ``codes`` as :class:`Error`."""
    return {code: {"model": Error, "description": ERRORS[code]} for code in codes}


class CurrentTask(BaseModel):
    id: int
    ref: str = Field(description="#12, or owner/name#3 for a GitHub issue.")
    title: str
    state: str
    url: str | None


class Controller(BaseModel):
    """The controller as ``miyabi status`` shows it."""

    running: bool
    pid: int | None
    uptime: float | None = Field(description="Seconds.")
    kept_alive: bool
    keepalive_pid: int | None
    restarts: int = Field(description="Restarts by its keep-alive.")
    last_restart: str | None
    last_reason: str | None
    fix: str | None = Field(description="The command that starts it, when it does not run.")


class BudgetUse(BaseModel):
    """The budget (layout ``budget:``) that covers an agent nearest its limit, as the
    controller last saw it."""

    scope: str = Field(description="layout, a pool's name or an agent's.")
    per: str = Field(description="day or task.")
    period: str | None = Field(description="The local date, or the task's id.")
    share: float = Field(description="The largest share of a limit used (1.0: spent, its agents parked).")
    unit: str = Field(description="The unit nearest its limit: tokens or usd.")
    used_tokens: int
    limit_tokens: int | None = Field(description="This period's allowance (raises included); null: not counted.")
    used_cost_usd: float = Field(description="US dollars.")
    limit_cost_usd: float | None = Field(description="US dollars; null: not counted.")


class AgentRow(BaseModel):
    """One agent as ``miyabi status --json`` prints it, with its current task and what
    the dashboard says when it does not run."""

    name: str
    window: str
    pane_id: str = Field(description='The pane id (%3); "" when it has no pane.')
    pid: int = Field(description="Its program's pid; 0 when none.")
    command: str
    alive: bool
    state: str = Field(
        description="starting, ready, busy, waiting-approval, human (a person is typing in its pane), parked (at its "
        "provider's usage limit, or its budget spent), hung, backoff, failed, dead, missing or alive."
    )
    exit: str | None
    exit_status: int | None
    exit_signal: int | None
    uptime: float | None = Field(description="Seconds.")
    cpu_percent: float | None = Field(description="Percent of one core, its process tree.")
    rss: int | None = Field(description="Bytes, its process tree.")
    last_output: float | None = Field(description="Seconds since its pane last printed.")
    restarts_last_hour: int
    last_reason: str | None
    question: str | None
    via: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    pool: str | None
    task: int | None
    parked_reason: str | None = Field(description="While parked: limit or budget.")
    parked_since: str | None = Field(description="While parked: when the park began (RFC 3339).")
    parked_until: str | None = Field(
        description="While parked: when it may go on (RFC 3339); null when its budget must be raised."
    )
    budget: BudgetUse | None = Field(description="The budget that covers it nearest its limit; null: none.")
    current_task: CurrentTask | None
    notice: str | None = Field(
        description="For an agent that does not run (failed, dead, missing): that it does not, why, and the command "
        "that brings it back."
    )


class Agents(BaseModel):
    session: str
    socket: str
    home: str
    controller: Controller
    agents: list[AgentRow]


class BusState(BaseModel):
    """The bus as this host last saw it (``run/bus.json``)."""

    url: str | None = Field(description="Without its password.")
    host: str | None
    state: str | None = Field(description="up or down.")
    since: str | None
    error: str | None
    leader: bool | None = Field(description="Whether this host polls GitHub (holds the intake lock).")
    hosts: int | None = Field(description="Hosts up.")


class Hosts(BaseModel):
    bus: BusState | None = Field(description="None without a bus.")
    hosts: list[dict[str, Any]] | None = Field(
        description="Every host on the bus: its presence record (host, up, agents, …), or host, up false, last_seen."
    )
    error: str | None = Field(description="Why the hosts could not be read (the bus is down).")


class Frame(BaseModel):
    """An agent's pane as it looks."""

    pane: str
    html: str = Field(description="The rows as HTML, one per line, colours as inline styles, text escaped.")
    cursor: list[int] = Field(description="[x, y] in cells from the top left.")
    time: float = Field(description="Unix time it was read.")


class Message(BaseModel):
    """A message as ``miyabi inbox --json`` prints it."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    state: str = Field(description="pending, delivered or failed.")
    sender: str = Field(alias="from")
    to: str
    priority: str
    created: str
    delivered: str | None
    failed: str | None
    retried: str | None
    reason: str | None = Field(description="Why it failed (a dead letter).")
    attempts: int
    body: str


class Sent(BaseModel):
    id: str
    to: str
    sender: str = Field(serialization_alias="from")
    created: str
    state: str


class Dropped(BaseModel):
    id: str
    to: str
    dropped: bool


class Done(BaseModel):
    ok: bool = True
    detail: str


class Answer(BaseModel):
    """An answer to a permission question."""

    agent: str
    answer: str = Field(description="approve or deny.")
    question: str | None
    keys: list[str] = Field(description="The keys typed into the pane.")
    reason: str | None
    message: str | None = Field(description="The id of the message that told the agent why (deny with a reason).")


class Crash(BaseModel):
    file: str
    time: str
    bytes: int


class Waiting(BaseModel):
    agent: str
    question: str | None
    via: str | None


class Event(BaseModel):
    """A line of ``logs/events.jsonl``: its time and name, and fields of its own."""

    model_config = ConfigDict(extra="allow")

    time: str | None = None
    event: str | None = None
    agent: str | None = None


class Merge(BaseModel):
    """A checked merge waiting for a person (a pool with ``approve: required``)."""

    task: int
    repo: str
    branch: str
    base: str
    commit: str = Field(description="The checked commit of the branch the decision is about.")
    merge: str = Field(description="The checked merge commit (made in a staging worktree).")
    logs: list[str] = Field(description="The verify logs: the checks on the branch, then on the merge.")
    results: list[str] = Field(description="One line per check of the branch.")
    state: str
    asked: str
    decided: str | None = None
    by: str | None = None
    reason: str = ""
    diff: str = Field(description="`git diff base...commit` (its start, up to 256 KiB).")
    checks: dict[str, str] = Field(description="Each verify log's end (up to 32 KiB), by its path.")


class Approvals(BaseModel):
    waiting: list[Waiting]
    answers: list[Event] = Field(description="The newest 100 answers (approval events), newest first.")


class Task(BaseModel):
    """A task as ``miyabi task ls --json`` prints it."""

    id: int
    source: str = Field(description="local, github or job.")
    ref: str
    title: str
    state: str
    agent: str | None
    priority: str
    labels: list[str]
    url: str | None
    attempts: int
    created: str
    updated: str
    deadline: str | None
    timeout: float | None = Field(description="Seconds.")
    max_attempts: int | None
    body: str
    pool: str | None
    branch: str | None
    rounds: int
    parent: int | None
    waiting: str | None = Field(description="Why it has no agent yet, if it waits.")
    spec: dict[str, Any] | None = Field(
        default=None,
        description="Where it came from: a spec-kit line (kind speckit: ref, file, path, line, …) or a task spec "
        "(kind task: its keys); null for any other task.",
    )


class Change(BaseModel):
    time: str
    state: str
    agent: str | None
    reason: str | None


class PullRequest(BaseModel):
    number: int | None
    url: str | None


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int


class TaskDetail(Task):
    depends_on: list[int]
    history: list[Change]
    pull_request: PullRequest | None
    usage: Usage | None


class Chart(BaseModel):
    name: str
    title: str


class Table(BaseModel):
    headers: list[str]
    rows: list[list[str]]


class Kpis(BaseModel):
    report: dict[str, Any] = Field(description="The report as `miyabi report --json` prints it.")
    charts: list[Chart]
    summary: list[list[str]] = Field(description="(figure, value) rows.")
    agents: Table
    days: Table
    definitions: list[list[str]] = Field(description="(figure, how it is computed) rows.")


class Story(BaseModel):
    """A story as ``miyabi story ls --json`` prints it."""

    id: int
    ref: str
    title: str
    state: str = Field(description="planning, building, deploying, checking, done or failed.")
    task: int | None = Field(description="Its planning task.")
    manager: str | None
    coder: str | None
    source: str
    url: str | None
    rounds: int = Field(description="Fix rounds its deploy and checks took so far.")
    commit: str | None = Field(description="The commit deployed last.")
    evidence: str = Field(description="Why its last deploy or check failed (empty: none did).")
    created: str
    updated: str
    deployed: str | None
    finished: str | None
    seconds_to_deployed: float | None = Field(description="Seconds from the story to its first deploy.")
    tasks: int
    landed: int = Field(description="Tasks whose work landed (verified, deployed or done).")


class StoryTask(BaseModel):
    """One of a story's tasks, and how far its work got."""

    id: int
    ref: str
    title: str
    state: str
    agent: str | None
    rounds: int = Field(description="Verify rounds it failed.")
    depends_on: list[int]
    merged: bool = Field(description="Its work was checked and merged.")


class StoryChange(BaseModel):
    time: str
    state: str
    reason: str


class StoryDeploy(BaseModel):
    """What the story's deploy runs (``run/deploy/NAME.json``)."""

    name: str
    commit: str
    ok: bool = Field(description="The last deploy passed (commands, service start, health).")
    time: str
    healthy: bool = Field(description="Its health check passed on the commit deployed.")
    serve: str | None
    health: str | None = Field(description="The health check, described.")


class StoryDetail(Story):
    children: list[StoryTask]
    history: list[StoryChange]
    deploy: StoryDeploy | None
