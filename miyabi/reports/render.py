"""A :class:`~miyabi.reports.kpis.Report` as text for people: table rows (the command
line prints them with its own tables), Markdown (a GitHub comment), a self-contained
HTML page, and charts as SVG (inline in the page; the dashboard serves them too).

Charts are drawn by matplotlib (imported on first use: it takes about half a second)
through its object-oriented ``Figure`` API on the non-interactive Agg backend, never
pyplot's global figures, one chart at a time (a lock: matplotlib's text caches are
shared). Agent names and references come from files other processes write: they are
escaped in HTML (``html.escape``), shown as code in Markdown (no markup, link or
mention can come of them), and kept from matplotlib's mathtext (``$``) in charts,
whose text is drawn as paths. The HTML page loads nothing and runs no script (its
Content-Security-Policy forbids both).
"""

from __future__ import annotations

import html
import io
import math
import re
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from miyabi.errors import MiyabiError
from miyabi.reports.kpis import Report, Spread

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


class ReportError(MiyabiError):
    """A report cannot be made or posted as asked (an unknown chart, no ``github:``
    section to post through)."""


CHARTS: dict[str, str] = {
    "availability": "Availability per agent",
    "restarts": "Restarts by reason",
    "mttr": "Time to recover (MTTR), p50 and p99",
    "delivery": "Delivery latency, p50 and p99",
    "tasks": "Tasks done and failed per day (UTC)",
    "utilization": "Utilization per agent (working time / observed time)",
}
"""Chart name → its title, in the order the HTML page shows them."""

DEFINITIONS: tuple[tuple[str, str], ...] = (
    (
        "availability",
        (
            "the share of its observed time an agent's process was up (down from its death, or from "
            "a hung agent's kill, to its restart)"
        ),
    ),
    ("utilization", "the share of its observed time an agent was busy or waiting for approval"),
    ("MTTR", "seconds from a death (or a hung agent's kill) to the restart"),
    ("delivery latency", "seconds from a message enqueued to its delivery"),
    ("cycle time", "seconds from a task's creation to done"),
    ("percentiles", "nearest rank: each is a time that was measured"),
)
"""What the figures mean, in one line each (the page's and the comment's footnote)."""

AGENT_HEADERS = (
    "agent",
    "availability",
    "utilization",
    "restarts",
    "gave up",
    "MTTR p50",
    "MTTR p99",
    "delivery p50",
    "delivery p99",
    "deliveries",
)
SUMMARY_HEADERS = ("figure", "value")
RESTART_HEADERS = ("reason", "restarts")
DAY_HEADERS = ("day (UTC)", "done", "failed")


# ---------------------------------------------------------------- plain text


def seconds_text(s: float | None) -> str:
    """A duration for people: ``350 ms``, ``2.5 s``, ``3m05s``, ``2h10m``, ``1d02h``; None → ``-``."""
    if s is None:
        return "-"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    n = int(s)
    if n < 3600:
        return f"{n // 60}m{n % 60:02d}s"
    if n < 86400:
        return f"{n // 3600}h{(n % 3600) // 60:02d}m"
    return f"{n // 86400}d{(n % 86400) // 3600:02d}h"


def percent_text(x: float | None) -> str:
    """A fraction as a percentage with two decimals, rounded down so that only a whole
    1 shows as ``100.00%`` (``0.99995`` → ``99.99%``); None → ``-``."""
    return "-" if x is None else f"{math.floor(x * 10000 + 1e-9) / 100:.2f}%"


def window_text(seconds: float) -> str:
    """A window's length as ``--since`` takes it: ``7d``, ``24h``, ``90m``, ``45s``."""
    n = round(seconds)
    if n >= 2 * 86400 and n % 86400 == 0:
        return f"{n // 86400}d"
    if n >= 3600 and n % 3600 == 0:
        return f"{n // 3600}h"
    if n >= 60 and n % 60 == 0:
        return f"{n // 60}m"
    return f"{n}s"


def _minute(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def title_text(report: Report) -> str:
    """``2026-11-21 04:05 UTC → 2026-11-22 04:05 UTC (24h)``."""
    return f"{_minute(report.since)} → {_minute(report.until)} ({window_text(report.seconds)})"


def _pair(s: Spread) -> str:
    return f"{seconds_text(s.p50)} / {seconds_text(s.p99)} (n={s.n})" if s.n else "-"


def summary_rows(report: Report) -> list[list[str]]:
    """Rows of (figure, value) for the whole ensemble (:data:`SUMMARY_HEADERS`)."""
    by_reason = ", ".join(f"{r} {n}" for r, n in report.restarts if n)
    return [
        ["window", title_text(report)],
        ["availability", percent_text(report.availability)],
        ["utilization", percent_text(report.utilization)],
        ["restarts", f"{report.restart_total} ({by_reason})" if by_reason else "0"],
        ["MTTR p50 / p99", _pair(report.mttr)],
        ["delivery latency p50 / p99", _pair(report.delivery)],
        ["tasks done / failed", f"{report.done} / {report.failed}"],
        ["median cycle time", seconds_text(report.cycle_time.p50)],
        ["GitHub issues closed", str(len(report.issues_closed))],
        ["pull requests opened", str(report.pull_requests_opened)],
        ["stories done", str(report.stories_done)],
        ["median story to deployed", seconds_text(report.story_to_deployed.p50)],
    ]


def agent_rows(report: Report) -> list[list[str]]:
    """One row per agent (:data:`AGENT_HEADERS`); the agent's name as it came (escape it
    for the output at hand)."""
    return [
        [
            a.agent,
            percent_text(a.availability),
            percent_text(a.utilization),
            str(a.restarts),
            str(a.gave_up),
            seconds_text(a.mttr.p50),
            seconds_text(a.mttr.p99),
            seconds_text(a.delivery.p50),
            seconds_text(a.delivery.p99),
            str(a.delivery.n),
        ]
        for a in report.agents
    ]


def restart_rows(report: Report) -> list[list[str]]:
    """(reason, restarts) for every reason label (:data:`RESTART_HEADERS`)."""
    return [[r, str(n)] for r, n in report.restarts]


def day_rows(report: Report) -> list[list[str]]:
    """(day, done, failed) for every UTC day of the window (:data:`DAY_HEADERS`)."""
    return [[d.day, str(d.done), str(d.failed)] for d in report.days]


# ---------------------------------------------------------------- Markdown

_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """``text`` on one line: control and bidirectional-override characters become spaces."""
    return " ".join(_INVISIBLE.sub(" ", str(text)).split())


def md_code(text: object, in_table: bool = True) -> str:
    """Untrusted ``text`` as a Markdown code span: shown literally, never markup, a
    link or a mention. In a table, ``|`` is escaped (GFM reads ``\\|`` in a code span
    in a cell as ``|``)."""
    t = printable(text)
    if in_table:
        t = t.replace("|", "\\|")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", t)), default=0) + 1)
    pad = " " if not t or t.startswith("`") or t.endswith("`") else ""
    return f"{fence}{pad}{t}{pad}{fence}"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], code_first: bool = False) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for r in rows:
        cells = [md_code(c) if code_first and i == 0 else c for i, c in enumerate(r)]
        out.append("| " + " | ".join(cells) + " |")
    return out


def to_markdown(report: Report, title: str = "miyabi report") -> str:
    """The report as GitHub-flavoured Markdown: a heading with the window, the summary,
    the agents, restarts by reason, tasks per day and the issues closed, as tables.
    Agent names and references are code spans (:func:`md_code`)."""
    lines = [f"### {title}: {title_text(report)}", ""]
    lines += _md_table(SUMMARY_HEADERS, summary_rows(report))
    lines += ["", "#### Agents", ""]
    lines += (
        _md_table(AGENT_HEADERS, agent_rows(report), code_first=True) if report.agents else ["No agent was observed."]
    )
    lines += ["", "#### Restarts by reason", ""]
    lines += _md_table(RESTART_HEADERS, restart_rows(report))
    lines += ["", "#### Tasks per day", ""]
    lines += _md_table(DAY_HEADERS, day_rows(report))
    lines += ["", "#### GitHub issues closed", ""]
    lines += [", ".join(md_code(r, in_table=False) for r in report.issues_closed) if report.issues_closed else "None."]
    lines += ["", "<sub>" + "; ".join(f"{k}: {v}" for k, v in DEFINITIONS) + ".</sub>", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- charts

_LOCK = threading.Lock()
"""One chart drawn at a time (matplotlib's font and text caches are process-wide)."""

_COLORS = {"p50": "#4c78a8", "p99": "#f58518", "done": "#54a24b", "failed": "#e45756", "bar": "#4c78a8"}


def _label(text: object, limit: int = 32) -> str:
    """An untrusted name as a chart label: one line, at most ``limit`` characters, and
    ``$`` escaped (matplotlib would read ``$…$`` as mathtext)."""
    t = printable(text)
    if len(t) > limit:
        t = t[: limit - 1] + "…"
    return t.replace("$", r"\$")


def _figure(rows: int) -> Figure:
    import matplotlib

    matplotlib.use("Agg")  # never a window, whatever MPLBACKEND says
    from matplotlib.figure import Figure

    return Figure(figsize=(7.0, max(2.4, 1.1 + 0.38 * rows)), layout="constrained")


def _empty(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)


def _fractions(ax: Axes, report: Report, value: Callable[[Any], float | None], empty: str) -> None:
    agents = list(report.agents)
    if not agents:
        _empty(ax, empty)
        return
    names = [_label(a.agent) for a in agents]
    fractions = [value(a) for a in agents]
    values = [(f or 0.0) * 100 for f in fractions]
    ys = list(range(len(agents)))
    ax.barh(ys, values, color=_COLORS["bar"])
    ax.set_yticks(ys, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 115)
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_xlabel("% of observed time")
    for y, v, f in zip(ys, values, fractions, strict=True):
        ax.text(min(v, 100) + 0.5, y, percent_text(f), va="center", fontsize=8)


def _spreads(ax: Axes, rows: list[tuple[str, Spread]], empty: str) -> None:
    rows = [(n, s) for n, s in rows if s.n]
    if not rows:
        _empty(ax, empty)
        return
    ys = list(range(len(rows)))
    h = 0.38
    ax.barh([y - h / 2 for y in ys], [s.p50 or 0.0 for _, s in rows], height=h, label="p50", color=_COLORS["p50"])
    ax.barh([y + h / 2 for y in ys], [s.p99 or 0.0 for _, s in rows], height=h, label="p99", color=_COLORS["p99"])
    ax.set_yticks(ys, [_label(n) for n, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)


def _draw_availability(ax: Axes, report: Report) -> None:
    _fractions(ax, report, lambda a: a.availability, "no agent observed")


def _draw_utilization(ax: Axes, report: Report) -> None:
    _fractions(ax, report, lambda a: a.utilization, "no agent observed")


def _draw_restarts(ax: Axes, report: Report) -> None:
    from matplotlib.ticker import MaxNLocator

    labels = [r for r, _ in report.restarts]
    counts = [n for _, n in report.restarts]
    ax.bar(labels, counts, color=_COLORS["bar"])
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max([*counts, 1]) * 1.15)
    ax.set_ylabel("restarts")


def _draw_mttr(ax: Axes, report: Report) -> None:
    _spreads(ax, [("all agents", report.mttr), *((a.agent, a.mttr) for a in report.agents)], "no restart after a death")


def _draw_delivery(ax: Axes, report: Report) -> None:
    _spreads(ax, [("all agents", report.delivery), *((a.agent, a.delivery) for a in report.agents)], "no delivery")


def _draw_tasks(ax: Axes, report: Report) -> None:
    from matplotlib.ticker import MaxNLocator

    days = list(report.days)
    xs = list(range(len(days)))
    w = 0.4
    ax.bar([x - w / 2 for x in xs], [d.done for d in days], width=w, label="done", color=_COLORS["done"])
    ax.bar([x + w / 2 for x in xs], [d.failed for d in days], width=w, label="failed", color=_COLORS["failed"])
    ax.set_xticks(xs, [d.day[5:] for d in days], rotation=45 if len(days) > 8 else 0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max([1, *(d.done for d in days), *(d.failed for d in days)]) * 1.15)
    ax.set_ylabel("tasks")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)


_DRAW: dict[str, tuple[Callable[[Axes, Report], None], Callable[[Report], int]]] = {
    "availability": (_draw_availability, lambda r: len(r.agents)),
    "restarts": (_draw_restarts, lambda r: 4),
    "mttr": (_draw_mttr, lambda r: 1 + len(r.agents)),
    "delivery": (_draw_delivery, lambda r: 1 + len(r.agents)),
    "tasks": (_draw_tasks, lambda r: 5),
    "utilization": (_draw_utilization, lambda r: len(r.agents)),
}

_REF = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')


def _own_ids(svg: str, prefix: str) -> str:
    """Prefix every ``id`` of ``svg`` and every reference to one, so that several charts
    inline in one page never share an id (matplotlib numbers them from 1 in each)."""
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    return _REF.sub(lambda m: m.group(1) + (prefix + m.group(2) if m.group(2) in ids else m.group(2)), svg)


def chart_svg(report: Report, name: str) -> str:
    """Chart ``name`` (one of :data:`CHARTS`) of ``report`` as an ``<svg>`` element to
    put inline in HTML (no XML declaration, doctype, metadata or comments; ids prefixed
    ``<name>-``; text drawn as paths). A chart without data says so in its middle.

    Raises:
        ReportError: ``name`` is not a chart.
    """
    if name not in _DRAW:
        raise ReportError(f"no chart {name!r}; the charts are {', '.join(CHARTS)}")
    draw, rows = _DRAW[name]
    import matplotlib

    with _LOCK, matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": f"miyabi-{name}", "font.size": 9}):
        fig = _figure(rows(report))
        ax = fig.add_subplot()
        draw(ax, report)
        ax.set_title(CHARTS[name], loc="left", fontsize=10)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.DOTALL)
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.DOTALL)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(CHARTS[name])}" ', 1)
    return _own_ids(svg, f"{name}-").strip()


# ---------------------------------------------------------------- HTML

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em; padding: 0 1em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .8em; text-align: left; }
td { font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; } svg { max-width: 100%; height: auto; }
.note { color: #555; font-size: .9em; } .wide { overflow-x: auto; }
"""


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(report: Report, title: str = "miyabi report") -> str:
    """The report as one self-contained HTML page: the tables of :func:`to_markdown`
    and every chart of :data:`CHARTS` as inline SVG; it loads nothing and runs no
    script. Every text from the report is escaped."""
    e = html.escape
    charts = "\n".join(f'<figure id="chart-{n}">{chart_svg(report, n)}</figure>' for n in CHARTS)
    issues = ", ".join(f"<code>{e(r)}</code>" for r in report.issues_closed) or "None."
    notes = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in DEFINITIONS)
    agents = (
        f'<div class="wide">{_html_table(AGENT_HEADERS, agent_rows(report))}</div>'
        if report.agents
        else "<p>No agent was observed.</p>"
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}: {e(title_text(report))}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{e(title)}</h1>
<p>{e(title_text(report))}</p>
<h2>Summary</h2>
{_html_table(SUMMARY_HEADERS, summary_rows(report))}
<h2>Charts</h2>
{charts}
<h2>Agents</h2>
{agents}
<h2>Restarts by reason</h2>
{_html_table(RESTART_HEADERS, restart_rows(report))}
<h2>Tasks per day</h2>
{_html_table(DAY_HEADERS, day_rows(report))}
<h2>GitHub issues closed</h2>
<p>{issues}</p>
<ul class="note">{notes}</ul>
</body>
</html>
"""
