"""KPI reports: what the ensemble did over a window (availability, restarts, MTTR,
utilization, delivery latency, tasks, GitHub issues), computed from the event log and
the task store (:mod:`~miyabi.reports.kpis`, pure), read from a home
(:mod:`~miyabi.reports.sources`), rendered as table rows, Markdown, HTML and SVG charts
(:mod:`~miyabi.reports.render`), posted to a GitHub issue (:mod:`~miyabi.reports.post`)
and on the layout's schedule (:mod:`~miyabi.reports.schedule`). ``miyabi report`` and
the dashboard's KPI page are its front ends.

The charts need matplotlib, which :mod:`~miyabi.reports.render` imports only when a
chart is drawn; importing this package does not.
"""

from __future__ import annotations

from miyabi.reports.kpis import (
    REASONS,
    AgentKPI,
    DayCount,
    Report,
    Spread,
    TaskChange,
    compute,
    percentile,
    reason_label,
)
from miyabi.reports.post import post
from miyabi.reports.render import CHARTS, ReportError, chart_svg, to_html, to_markdown
from miyabi.reports.schedule import Posted, ReportSchedule, next_due, post_if_due, run_schedule
from miyabi.reports.sources import build, task_changes

__all__ = [
    "CHARTS",
    "REASONS",
    "AgentKPI",
    "DayCount",
    "Posted",
    "Report",
    "ReportError",
    "ReportSchedule",
    "Spread",
    "TaskChange",
    "build",
    "chart_svg",
    "compute",
    "next_due",
    "percentile",
    "post",
    "post_if_due",
    "reason_label",
    "run_schedule",
    "task_changes",
    "to_html",
    "to_markdown",
]
