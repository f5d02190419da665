"""What ``miyabi bus status`` shows: the hosts, the intake lock, and every stream with
its consumer groups, their lag and the entries each host holds."""

from __future__ import annotations

from typing import Any, cast

from miyabi.bus import presence
from miyabi.bus.bridge import INTAKE_LOCK
from miyabi.bus.client import Bus


def overview(bus: Bus) -> dict[str, Any]:
    """The bus now: ``url`` (no password), ``namespace``, ``hosts`` (see
    :func:`miyabi.bus.presence.hosts`), ``intake`` (the host polling GitHub, or None),
    ``persistence`` (Redis's ``appendonly``: without it a restart of Redis loses the
    queue) and ``streams``: each with ``name``, ``kind`` (tasks, inbox, results),
    ``length`` and ``groups`` (``name``, ``lag``: entries not read yet, ``pending``:
    read and not acknowledged, ``holders``: host → pending entries).

    Raises:
        redis.RedisError, OSError: the bus failed.
    """
    r = bus.redis
    streams = []
    for kind in ("tasks", "inbox", "results"):
        for name in sorted(cast(list[str], list(r.scan_iter(match=bus.key(kind, "*"), count=500, _type="stream")))):
            groups = []
            for g in r.xinfo_groups(name):
                summary = r.xpending(name, g["name"])
                holders = {str(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []}
                groups.append(
                    {"name": g["name"], "lag": g.get("lag"), "pending": int(g.get("pending") or 0), "holders": holders}
                )
            streams.append(
                {"name": name[len(bus.ns) + 1 :], "kind": kind, "length": int(r.xlen(name)), "groups": groups}
            )
    try:
        aof = cast(dict[str, str], r.config_get("appendonly")).get("appendonly")
    except Exception:  # noqa: BLE001 - CONFIG may be renamed or refused (managed Redis): unknown, not an error
        aof = None
    return {
        "url": bus.where,
        "namespace": bus.ns,
        "host": bus.host,
        "hosts": presence.hosts(bus),
        "intake": presence.lock_holder(bus, INTAKE_LOCK),
        "persistence": aof,
        "streams": streams,
    }
