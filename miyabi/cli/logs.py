"""``miyabi logs``: an agent's pane output as plain lines (see :mod:`miyabi.supervision.logs`)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from miyabi.cli import output
from miyabi.cli.root import HomeOpt, LayoutOpt, SocketOpt, app, handles_errors, home_of


@app.command()
@handles_errors
def logs(
    agent: Annotated[str, typer.Argument(help="The agent whose pane output to show.")],
    grep: Annotated[
        str | None,
        typer.Option(
            "--grep",
            "-g",
            metavar="RE",
            show_default=False,
            help="Only lines this regular expression matches (Python syntax, case-sensitive; (?i) ignores case).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DURATION",
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
            min=1,
            metavar="N",
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
    from miyabi.supervision.logs import compile_grep, log_files, parse_since, search
    from miyabi.supervision.logs import follow as follow_log

    rx = compile_grep(grep)
    seconds = parse_since(since)
    h = home_of(home, socket)
    if not log_files(h.logs, agent):
        from miyabi.cli.send import known_agents

        names, _ = known_agents(h.root, layout)
        if agent not in names:
            raise AgentNotFound(agent, names)
    if follow:
        for line in follow_log(h, agent, rx, seconds, last=lines):
            sys.stdout.write((json.dumps(line.to_json(), ensure_ascii=False) if json_out else line.text) + "\n")
            sys.stdout.flush()
        return
    found = search(h, agent, rx, seconds, last=lines)
    if json_out:
        output.emit_json([line.to_json() for line in found])
        return
    write = sys.stdout.write
    for line in found:
        write(line.text + "\n")
