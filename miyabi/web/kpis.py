"""The KPI page's API: the report of the last 24 hours or 7 days
(:mod:`miyabi.reports`), as JSON with its table rows, and each chart as SVG. A report
is computed at most once per window every ``defaults.WEB_KPI_TTL`` seconds, however
many charts and browsers ask.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from miyabi import defaults
from miyabi.reports import CHARTS, Report, build, chart_svg
from miyabi.reports import render as report_render
from miyabi.web.api import site_of
from miyabi.web.models import Kpis, errors
from miyabi.web.site import NotFound, Site

router = APIRouter(prefix="/api/v1", responses=errors(401, 403))

WINDOWS = {"24h": 86400.0, "7d": 7 * 86400.0}
"""The windows the page offers, in seconds."""

Window = Annotated[Literal["24h", "7d"], Query(description="the window: the last 24 hours or 7 days")]

_lock = threading.Lock()
_cache: dict[tuple[int, str], tuple[float, Report]] = {}


def report_of(site: Site, since: str) -> Report:
    """The report of the window ``since``, computed at most every ``WEB_KPI_TTL`` s."""
    key = (id(site), since)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < defaults.WEB_KPI_TTL:
            return hit[1]
        now = time.time()
        report = build(site.home.root, now - WINDOWS[since], now, [a.name for a in site.agents()])
        _cache[key] = (time.monotonic(), report)
        return report


@router.get(
    "/kpis",
    response_model=Kpis,
    responses=errors(422),
    summary="Key figures of the last 24 h or 7 days: JSON, with the rows the page shows",
)
def kpis(request: Request, since: Window = "24h") -> dict[str, Any]:
    return kpis_of(site_of(request), since)


def kpis_of(site: Site, since: str) -> dict[str, Any]:
    """The KPI page's figures of the window ``since`` (``24h`` or ``7d``): ``report``,
    ``charts`` (name, title), ``summary`` rows, ``agents`` and ``days`` tables,
    ``definitions``."""
    report = report_of(site, since)
    return {
        "report": report.to_json(),
        "charts": [{"name": n, "title": t} for n, t in CHARTS.items()],
        "summary": report_render.summary_rows(report),
        "agents": {"headers": list(report_render.AGENT_HEADERS), "rows": report_render.agent_rows(report)},
        "days": {"headers": list(report_render.DAY_HEADERS), "rows": report_render.day_rows(report)},
        "definitions": [list(d) for d in report_render.DEFINITIONS],
    }


@router.get(
    "/kpis/charts/{name}.svg",
    summary="One KPI chart as SVG",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}}}, **errors(404, 422)},
)
def chart(name: str, request: Request, since: Window = "24h") -> Response:
    if name not in CHARTS:
        raise NotFound(f"no chart {name!r}; the charts are {', '.join(CHARTS)}")
    svg = chart_svg(report_of(site_of(request), since), name)
    return Response(svg, media_type="image/svg+xml", headers={"cache-control": "no-store"})
