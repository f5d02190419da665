"""``miyabi logs``: an agent's pane output as plain lines (see :mod:`miyabi.supervision.logs`)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from miyabi.cli import output, params
from miyabi.cli.root import HomeOpt, LayoutOpt, SocketOpt, app, checked, handles_errors, home_of


@app.command()
@handles_errors
def logs(
    agent: Annotated[str, typer.Argument(metavar="AGENT", help="The agent whose pane output to show.")],
    grep: Annotated[
        str | None,
        typer.Option(
            "--grep",
            "-g",
            metavar="RE",
            parser=checked(params.regex),
            show_default=False,
            help="Only lines this regular expression matches (Python syntax, case-sensitive; (?i) ignores case).",
        ),
    ] = None,
    since: Annotated[
        float | None,
        typer.Option(
            "--since",
            metavar="DURATION",
            parser=checked(params.duration),
            show_default=False,
            help="Only log files written to within this long (90s, 30m, 1h, 2d); lines carry no time of their own, "
            "so a file written to since is shown whole.",
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Keep printing lines as the agent prints them, through rotations, until Ctrl-C."),
    ] = False,
    lines: Annotated[
        int | None,
        typer.Option(
            "--lines",
            "-n",
            metavar="N",
            parser=checked(params.count(1)),
            show_default=False,
            help="Only the last N matching lines (with --follow: before following).",
        ),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print JSON: a list of {"agent", "file", "line", "text"}; with --follow, one object per line.',
        ),
    ] = False,
    home: HomeOpt = None,
    layout: LayoutOpt = None,
    socket: SocketOpt = None,
) -> None:
    """Print or search an agent's pane output as plain lines.

    Escape sequences (colours, cursor moves, titles) are removed and carriage-return
    redraws show as their last state. The logs are logs/AGENT.log and its rotated
    files (logs.max_bytes and logs.keep in the layout), read oldest first.
    """
    from miyabi.errors import AgentNotFound
    from miyabi.supervision.logs import compile_grep, log_files, search
    from miyabi.supervision.logs import follow as follow_log

    rx = compile_grep(grep)
    h = home_of(home, socket)
    if not log_files(h.logs, agent):
        from miyabi.cli.send import known_agents

        names, _ = known_agents(h.root, layout)
        if agent not in names:
            raise AgentNotFound(agent, names)
    if follow:
        for line in follow_log(h, agent, rx, since, last=lines):
            if json_out:
                output.json_line(line.to_json())
            else:
                output.line(line.text)
            sys.stdout.flush()
        return
    found = search(h, agent, rx, since, last=lines)
    if json_out:
        output.emit_json([line.to_json() for line in found])
        return
    for line in found:
        output.line(line.text)
