"""``miyabi status``: the controller, the dashboard, the bus, then one row per agent.

It imports neither typer nor anything the command does not need, so that the light
path (:mod:`miyabi.cli.light`) answers without Typer's start-up; ``miyabi status``
through the Typer app (``--help``, tests) runs the same :func:`show`.

The table is drawn for where it goes. On a terminal each agent is one line: the
columns that fit the terminal's width are shown (window and command left out, tokens
only when an agent reports some), and long cells (state, last reason) are cut with an
ellipsis (``…``). Piped, every column is printed and no cell is cut, one line per
agent, for grep and awk. ``--json`` has everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from miyabi.cli import output
from miyabi.supervision.status import AgentStatus
from miyabi.times import how_often

HEADERS = [
    "agent",
    "window",
    "pane",
    "pid",
    "command",
    "state",
    "uptime",
    "cpu%",
    "rss",
    "last output",
    "tokens in/out",
    "restarts/h",
    "last reason",
]
"""Columns of the piped table, each printed whole."""

TERMINAL = {
    "agent": "agent",
    "pane": "pane",
    "pid": "pid",
    "state": "state",
    "uptime": "uptime",
    "cpu%": "cpu%",
    "rss": "rss",
    "last output": "last out",
    "restarts/h": "restarts",
    "tokens in/out": "tokens",
    "last reason": "last reason",
}
"""Columns of the table on a terminal (the piped table's names → shorter headers):
window and command left out, tokens only when an agent reports some."""

CUT = ["last reason", "state", "agent"]
"""Columns cut (the widest first) when a row is wider than the terminal."""


def show(json_out: bool, socket: str | None, home: Path | None, layout: str | None, all_hosts: bool) -> None:
    """Print the status of the ensemble that ``--home``/``--socket``/``--layout`` name.

    Raises:
        TmuxUnavailable: tmux missing or too old, or the session is not running (exit 4).
        MiyabiError: ``all_hosts`` without a bus, or the bus cannot be reached.
    """
    from miyabi.cli.where import locate_home
    from miyabi.controller.view import bus_view, ensemble, look, resolve_target
    from miyabi.controller.webproc import DASHBOARDS

    t = resolve_target(locate_home(home, socket).root, socket, layout)
    tmux, owner, panes = look(t)
    view = ensemble(t, tmux, seen=(owner, panes))
    h, ctl, rows = view.home, view.controller, view.agents
    web = None
    if any((h.run / DASHBOARDS).glob("*.json")):  # a dashboard published itself (else the web package is not loaded)
        from miyabi.web.server import published

        web = published(h)
    seen = bus_view(h, all_hosts)
    bus, hosts = seen["bus"], seen.get("hosts")
    if json_out:
        out = {
            "session": t.session,
            "socket": t.socket,
            "home": str(h.root),
            "controller": ctl,
            "web": {k: web[k] for k in ("pid", "started", "base", "url", "read_only")} if web else None,
            "bus": bus,
            "agents": [r.to_json() for r in rows],
        }
        if all_hosts:
            out["hosts"] = hosts
        output.emit_json(out)
        return
    output.say(*controller_line(ctl))
    if web is not None:  # its token is not printed here (screens are shared): `miyabi up` and --json have it
        output.say(
            f"dashboard: {web['base']}"
            + (" (read-only)" if web.get("read_only") else "")
            + "; the URL with its token: `miyabi status --json`"
        )
    if bus is not None:
        output.say(*bus_line(bus))
    terminal = output.is_terminal()
    groups: dict[str | None, list[AgentStatus]] = {None: []}
    for pool in view.pools:
        groups[pool] = []
    for r in rows:
        groups.setdefault(r.pool, []).append(r)
    headers = columns(rows, terminal)
    named = groups.pop(None)
    draw(named, headers, terminal, f"session {t.session} (socket {t.socket})")
    if groups:
        _draw_pools(groups, view.pools, h.root, headers, terminal)
    if all_hosts:
        _draw_hosts(hosts or [])


def bus_line(bus: dict[str, Any]) -> tuple[str, str]:
    """The bus's line of ``status`` and its colour."""
    if bus["state"] == "up":
        return (
            f"bus: up at {bus['url']} as host {bus['host']}, {bus['hosts']} host(s) up"
            + ("; this host polls GitHub" if bus.get("leader") else ""),
            "green",
        )
    down = f"bus: down since {bus['since']} ({bus.get('error') or 'not reached yet'}); local work goes on, "
    return down + "messages for other hosts wait in the outbox", "red"


def _draw_pools(
    groups: dict[str | None, list[AgentStatus]],
    most: Mapping[str, int],
    home_root: Path,
    headers: list[str],
    terminal: bool,
) -> None:
    """One table per pool: its running instances, and the ones being prepared in its title."""
    from miyabi.pipeline.records import InstanceState, Records
    from miyabi.work.store import Store

    for pool_name, members in groups.items():
        limit = most.get(pool_name) if pool_name is not None else None
        preparing = [
            i.name for i in Records(Store.of_home(home_root)).instances(InstanceState.PREPARING, pool=pool_name)
        ]
        title = f"pool {pool_name}: {len(members)} running" + (f" of at most {limit}" if limit is not None else "")
        if preparing:
            title += f"; preparing {', '.join(preparing)}"
        if members:
            draw(members, headers, terminal, title)
        else:
            output.say(title + (" (tasks routed to it start instances)" if not preparing else ""))


def _draw_hosts(hosts: list[dict[str, Any]]) -> None:
    """``--all-hosts``: one table per host of the bus, with its agents."""
    for host in hosts:
        title = f"host {host['host']}: " + ("up" if host.get("up") else f"down (last seen {host.get('last_seen')})")
        if host.get("leader"):
            title += ", polls GitHub"
        table = [
            [
                a.get("name", "-"),
                a.get("state", "-"),
                str(a.get("pid") or "-"),
                output.human_seconds(a.get("uptime")),
                str(a.get("restarts_last_hour", 0)),
            ]
            for a in host.get("agents", [])
        ]
        if table:
            output.table(table, ["agent", "state", "pid", "uptime", "restarts/h"], title=title)
        else:
            output.say(title)


def controller_line(ctl: dict[str, Any]) -> tuple[str, str]:
    """The controller's line of ``status`` and its colour."""
    if not ctl["running"]:
        return f"controller: not running; messages and tasks wait; start it with `{ctl['fix']}`", "red"
    kept = (
        "kept alive"
        if ctl["kept_alive"]
        else (
            "no keep-alive: started outside `miyabi up` (systemd, or by hand), or its keep-alive was killed; "
            "`miyabi down`, then `miyabi up`, puts one back"
        )
    )
    line = f"controller: running, pid {ctl['pid']}, up {output.human_seconds(ctl['uptime'])}, {kept}"
    if ctl["restarts"]:
        line += f"; restarted {how_often(ctl['restarts'])}, last {ctl['last_restart']} ({ctl['last_reason']})"
    return line, "green" if ctl["kept_alive"] else "yellow"


def columns(rows: list[AgentStatus], terminal: bool) -> list[str]:
    """The columns to show, by their piped names: all of them when piped; on a
    terminal, those of :data:`TERMINAL`, tokens only when an agent reports some."""
    if not terminal:
        return HEADERS
    tokens = any(r.input_tokens is not None or r.cost_usd is not None or r.budget for r in rows)
    return [c for c in TERMINAL if c != "tokens in/out" or tokens]


def cells(r: AgentStatus) -> dict[str, str]:
    """One agent's row, every cell whole, by column."""
    state = f"{r.state} ({r.exit})" if r.exit else str(r.state)
    if r.question:
        state += f": {r.question}"
    if r.parked_reason:
        state += f" ({r.parked_reason}, until {r.parked_until})" if r.parked_until else f" ({r.parked_reason})"
    tokens = "-" if r.input_tokens is None else f"{_count(r.input_tokens)}/{_count(r.output_tokens or 0)}"
    if r.cost_usd is not None:
        tokens += f" ${r.cost_usd:.2f}"
    if r.budget:
        tokens += f", budget {float(r.budget['share'] or 0):.0%} of {r.budget['scope']}'s"
    return {
        "agent": r.name if r.task is None else f"{r.name} (task {r.task})",
        "window": r.window or "-",
        "pane": r.pane_id or "-",
        "pid": str(r.pid) if r.pid else "-",
        "command": r.command or "-",
        "state": state,
        "uptime": output.human_seconds(r.uptime),
        "cpu%": "-" if r.cpu_percent is None else f"{r.cpu_percent:.1f}",
        "rss": output.human_bytes(r.rss),
        "last output": output.human_seconds(r.last_output),
        "tokens in/out": tokens,
        "restarts/h": str(r.restarts_last_hour),
        "last reason": r.last_reason or "-",
    }


def draw(rows: list[AgentStatus], headers: list[str], terminal: bool, title: str) -> None:
    """Print ``rows`` in the columns ``headers``: fitted to the terminal's width, one
    line per agent, or whole when piped."""
    table = [[c[h] for h in headers] for c in map(cells, rows)]
    if not terminal:
        output.table(table, headers, title=title)
        return
    output.table(table, [TERMINAL[h] for h in headers], title=title, cut=[TERMINAL[c] for c in CUT])


def _count(n: int) -> str:
    return f"{n / 1_000_000:.1f}M" if n >= 1_000_000 else f"{n / 1000:.1f}k" if n >= 1000 else str(n)
