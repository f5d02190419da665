"""``miyabi bus``: the Redis that several hosts share (the layout's ``bus:``)."""

from __future__ import annotations

from typing import Any

from miyabi.cli import output
from miyabi.cli.root import HomeOpt, JsonOpt, LayoutOpt, SocketOpt, group, handles_errors, resolve_target
from miyabi.errors import MiyabiError

bus_app = group("bus", "The bus hosts share: streams, consumer groups, hosts.")


@bus_app.command("status")
@handles_errors
def bus_status(
    json_out: JsonOpt = False, socket: SocketOpt = None, home: HomeOpt = None, layout: LayoutOpt = None
) -> None:
    """Hosts, the host polling GitHub, and each stream: its length, consumer groups,
    lag (entries nobody read yet) and the entries each host holds."""
    from miyabi.bus.client import Bus
    from miyabi.bus.info import overview
    from miyabi.bus.state import read_state, settings_of

    t = resolve_target(home, socket, layout)
    state = read_state(t.home.root)
    settings = settings_of(state) if state else None
    if settings is None:
        from miyabi.config import load, shipped

        lay = load(shipped.for_command(layout, t.home))
        settings = lay.bus
    if settings is None:
        raise MiyabiError(
            "this home is on no bus; add `bus: {url: redis://HOST:6379/0}` to the layout and run `miyabi up`"
        )
    client = Bus(settings)
    try:
        info: dict[str, Any] = client.call(overview, client)
    finally:
        client.close()
    if json_out:
        output.emit_json(info)
        return
    output.say(
        f"bus {info['url']} (namespace {info['namespace']}), this host: {info['host']}; "
        f"GitHub intake: {info['intake'] or 'no host'}"
    )
    if info["persistence"] == "no":
        output.say(
            "Redis keeps no append-only file (appendonly no): a restart of Redis loses the queue; "
            "set `appendonly yes` on the server",
            "yellow",
        )
    output.table(
        [
            [
                h["host"],
                "up" if h.get("up") else f"down (last seen {h.get('last_seen')})",
                str(len(h.get("agents", []))),
                h.get("time") or "-",
            ]
            for h in info["hosts"]
        ],
        ["host", "state", "agents", "heartbeat"],
        title="hosts",
    )
    rows = []
    for s in info["streams"]:
        for g in s["groups"] or [{"name": "-", "lag": None, "pending": 0, "holders": {}}]:
            holders = ", ".join(f"{k}: {v}" for k, v in sorted(g["holders"].items())) or "-"
            rows.append(
                [
                    s["name"],
                    s["kind"],
                    str(s["length"]),
                    g["name"],
                    "-" if g["lag"] is None else str(g["lag"]),
                    str(g["pending"]),
                    holders,
                ]
            )
    output.table(rows, ["stream", "kind", "length", "group", "lag", "pending", "held by"], title="streams")
