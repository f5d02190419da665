"""``miyabi report``: the ensemble's key figures over a window (see ``miyabi.reports``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from miyabi import defaults
from miyabi.cli import output, params
from miyabi.cli.root import HomeOpt, JsonOpt, LayoutOpt, SocketOpt, app, checked, handles_errors, resolve_target


@app.command("report")
@handles_errors
def report(
    since: Annotated[
        float | None,
        typer.Option(
            "--since",
            metavar="DURATION",
            parser=checked(params.duration),
            show_default=False,
            help="How far back it looks: 24h, 7d, 90m or seconds (default: 24h).",
        ),
    ] = None,
    html_file: Annotated[
        Path | None,
        typer.Option(
            "--html", metavar="FILE", show_default=False, help="Also write it as an HTML page with charts to FILE."
        ),
    ] = None,
    post_issue: Annotated[
        int | None,
        typer.Option(
            "--post-issue",
            metavar="N",
            parser=checked(params.count(1)),
            show_default=False,
            help="Also post it as a comment on issue N of the layout's GitHub repository.",
        ),
    ] = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Print KPIs: availability, restarts, MTTR, latency, tasks.

    Availability and utilization per agent, restarts by reason, time to recover (MTTR)
    and delivery latency (p50 and p99), tasks done and failed per day, the median cycle
    time and the GitHub issues closed, from logs/events.jsonl and the task store.
    docs/reports.md says what each figure means.
    """
    from miyabi.controller.view import running_layout
    from miyabi.files import write_atomic
    from miyabi.reports import build, post, to_html
    from miyabi.reports.render import (
        AGENT_HEADERS,
        DAY_HEADERS,
        RESTART_HEADERS,
        SUMMARY_HEADERS,
        agent_rows,
        day_rows,
        printable,
        restart_rows,
        summary_rows,
        title_text,
    )

    seconds = defaults.REPORT_SINCE if since is None else since
    t = resolve_target(home, socket, layout, strict=False)  # reads logs/ and state/ only
    lay = t.layout() if post_issue is not None else running_layout(t)
    until = time.time()
    rep = build(t.home.root, until - seconds, until, [a.name for a in lay.named] if lay is not None else [])
    if html_file is not None:
        write_atomic(html_file, to_html(rep))
    posted = post(rep, lay.github, post_issue, lay.path) if post_issue is not None and lay is not None else None
    if json_out:
        output.emit_json({**rep.to_json(), "html": str(html_file) if html_file is not None else None, "posted": posted})
        return
    output.table(summary_rows(rep), SUMMARY_HEADERS, title=f"miyabi report: {title_text(rep)}")
    if rep.agents:
        output.table([[printable(c) for c in r] for r in agent_rows(rep)], AGENT_HEADERS, title="agents")
    else:
        output.say("no agent was observed in this window")
    output.table(restart_rows(rep), RESTART_HEADERS, title="restarts by reason")
    output.table(day_rows(rep), DAY_HEADERS, title="tasks per day")
    if rep.issues_closed:
        output.say("GitHub issues closed: " + ", ".join(printable(r) for r in rep.issues_closed))
    if html_file is not None:
        output.say(f"wrote {html_file}")
    if posted is not None:
        output.say(f"posted the report to {posted}")
