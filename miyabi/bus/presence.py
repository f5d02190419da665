"""Presence and the intake lock: which hosts are on the bus, what their agents do, and
which host polls GitHub now.

A host's presence is ``NS:host:HOST`` (JSON), rewritten every
``defaults.BUS_HEARTBEAT`` seconds and expiring ``defaults.BUS_PRESENCE_TTL`` seconds
after the last write; ``NS:hosts`` remembers when each host was last seen, so a host
that stopped is shown down rather than forgotten.

The intake lock is Redis's single-instance lock: ``SET NX PX`` with this host's name,
extended only by its holder (a script compares, then extends), so when the holder dies
another host takes over within one expiry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, cast

from miyabi import defaults
from miyabi.bus.client import Bus
from miyabi.times import rfc3339

EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def heartbeat(
    bus: Bus,
    agents: Sequence[dict[str, Any]],
    extra: dict[str, Any] | None = None,
    ttl: float = defaults.BUS_PRESENCE_TTL,
    now: float | None = None,
) -> None:
    """Publish this host's presence: its agents (``name``, ``state``, ``task``) and ``extra``.

    Raises:
        redis.RedisError, OSError: the bus failed.
    """
    t = time.time() if now is None else now
    record = {"host": bus.host, "time": rfc3339(t), "agents": list(agents), **(extra or {})}
    pipe = bus.redis.pipeline()
    pipe.set(bus.key("host", bus.host), json.dumps(record), px=int(ttl * 1000))
    pipe.hset(bus.key("hosts"), bus.host, t)
    pipe.execute()


def leave(bus: Bus) -> None:
    """Remove this host's presence (a clean stop): it shows down from now on.

    Raises:
        redis.RedisError, OSError: the bus failed (the record then expires by itself).
    """
    bus.redis.delete(bus.key("host", bus.host))


def hosts(bus: Bus, now: float | None = None) -> list[dict[str, Any]]:
    """Every host ever seen on the bus, by name: its presence record with ``up`` True,
    or ``{"host", "up": False, "last_seen"}`` for one whose heartbeat stopped.

    Raises:
        redis.RedisError, OSError: the bus failed.
    """
    seen = cast(dict[str, str], bus.redis.hgetall(bus.key("hosts")))
    names = sorted(seen)
    records = bus.redis.mget([bus.key("host", h) for h in names]) if names else []
    out = []
    for name, raw in zip(names, records, strict=True):
        try:
            record = json.loads(raw) if raw else None
            last = rfc3339(float(seen[name]))
        except (ValueError, TypeError):  # not written by miyabi: shown, never fatal
            record, last = None, "unknown"
        if isinstance(record, dict):
            out.append({**record, "host": name, "up": True})
        else:
            out.append({"host": name, "up": False, "last_seen": last, "agents": []})
    return out


def hold_lock(bus: Bus, name: str, ttl: float) -> bool:
    """Take or extend the lock ``name`` for this host for ``ttl`` seconds; True while
    this host holds it.

    Raises:
        redis.RedisError, OSError: the bus failed.
    """
    key = bus.key("lock", name)
    ms = int(ttl * 1000)
    if bus.redis.set(key, bus.host, nx=True, px=ms):
        return True
    return bool(bus.script("extend", EXTEND)(keys=[key], args=[bus.host, ms]))


RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def release_lock(bus: Bus, name: str) -> None:
    """Give up lock ``name`` if this host holds it.

    Raises:
        redis.RedisError, OSError: the bus failed (the lock then expires by itself).
    """
    bus.script("release", RELEASE)(keys=[bus.key("lock", name)], args=[bus.host])


def lock_holder(bus: Bus, name: str) -> str | None:
    """The host that holds lock ``name`` now, if any."""
    got = bus.redis.get(bus.key("lock", name))
    return str(got) if got else None
