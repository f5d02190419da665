"""``GET /api/v1/agents/{name}/logs``: an agent's pane output as plain lines, searched
across its rotated files, as ``miyabi logs`` prints it (:mod:`miyabi.supervision.logs`)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from miyabi import defaults
from miyabi.errors import UsageError
from miyabi.supervision.logs import LogLine, compile_grep, log_files, parse_since, search
from miyabi.web.api import BadInput, site_of
from miyabi.web.models import errors
from miyabi.web.site import Site

router = APIRouter(prefix="/api/v1", responses=errors(401, 403))

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class LogLineOut(BaseModel):
    """One line of an agent's pane log."""

    agent: str
    file: str = Field(description="The file the line starts in, under the home's logs/ (kaede.log, kaede.log.1 …).")
    line: int = Field(description="The line's number in that file, from 1.")
    text: str = Field(description="The line, escape sequences removed.")


OWN_LOGS = frozenset({"controller", "watchdog", "web", "keepalive"})
"""Logs of miyabi's own programs under ``logs/`` (they name paths and URLs with tokens):
never served as an agent's unless the layout has an agent of that name."""


@router.get(
    "/agents/{name}/logs",
    response_model=list[LogLineOut],
    responses=errors(400, 404, 422),
    summary="The newest lines of the agent's pane logs (rotated files included), oldest first, filtered",
)
def agent_logs(
    name: str,
    request: Request,
    grep: Annotated[
        str | None, Query(max_length=500, description="A regular expression (Python, case-sensitive) lines must match.")
    ] = None,
    since: Annotated[
        str | None, Query(max_length=32, description="Only files written to within this long (90s, 30m, 1h, 2d).")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=10_000, description="Most lines returned (the newest).")
    ] = defaults.WEB_LOGS_LIMIT,
) -> list[dict[str, object]]:
    """Lines as ``{"agent", "file", "line", "text"}``; 400 for a ``grep`` that is not a
    regular expression or a ``since`` that is not a duration, 404 for an agent that is
    neither in the ensemble nor has a log."""
    site = site_of(request)
    known = {a.name for a in site.agents()}
    if name not in known and (
        name in OWN_LOGS
        or not _NAME.match(name)
        or not (site.home.queue / name).is_dir()
        or not log_files(site.home.logs, name)
    ):
        # only agents: the ensemble's, or one that ran here (it has an inbox), never miyabi's own logs
        site.agent(name)  # AgentNotFound (404)
    return [line.to_json() for line in log_lines(site, name, grep, since, limit)]


def log_lines(site: Site, name: str, grep: str | None, since: str | None, limit: int) -> list[LogLine]:
    """The newest ``limit`` lines of ``name``'s pane logs (not checked: an agent with no
    log has none), oldest first, that match ``grep``, in files written to within ``since``.

    Raises:
        BadInput: ``grep`` is not a regular expression, or ``since`` not a duration.
    """
    try:
        rx = compile_grep(grep or None)
        seconds = parse_since(since or None)
    except UsageError as e:
        raise BadInput(str(e)) from None
    return list(search(site.home, name, rx, seconds, last=limit))
