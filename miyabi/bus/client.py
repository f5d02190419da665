"""The connection to the bus's Redis, and the names of its keys.

Every key starts with the layout's ``bus.namespace`` (``miyabi`` by default):

- ``NS:tasks:NAME`` — a stream of tasks for agent ``NAME`` on any host that runs one;
  ``NS:tasks:NAME@HOST`` — for that host's. Each has one consumer group, ``hosts``,
  whose consumers are the hosts: a host reads (claims) an entry for its own agents,
  renews its claim while it works on it (the lease) and acknowledges it when the task
  ends; an entry not renewed for ``bus.lease`` seconds is claimed again by another
  host (``XAUTOCLAIM``), its delivery count being the attempt.
- ``NS:task:ID`` — a hash per published task: its origin host, stream, entry, state
  (``open``, ``done``, ``failed``, ``cancelled``) and who ended it. A task ends once.
- ``NS:results:HOST`` — a stream of the results of tasks HOST published.
- ``NS:inbox:HOST`` — a stream of messages for HOST's agents.
- ``NS:host:HOST`` — a host's presence (JSON: its agents and their states), expiring
  ``defaults.BUS_PRESENCE_TTL`` seconds after its last heartbeat; ``NS:hosts`` — a
  hash of every host ever seen → the Unix time it was last seen.
- ``NS:lock:intake`` — the host that polls GitHub now (a lock with an expiry).

The design is Redis's own: consumer groups, pending entries and ``XAUTOCLAIM``
(redis.io/docs/latest/develop/data-types/streams), and the single-instance lock of
redis.io/docs/latest/develop/use/patterns/distributed-locks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from miyabi import defaults
from miyabi.config.settings import BusSettings, redact
from miyabi.errors import MiyabiError

Entry = tuple[str, str, dict[str, str]]
"""A stream entry read: (stream, entry id, fields)."""

MIN_VERSION = (6, 2)
"""The oldest Redis the bus works with (``XAUTOCLAIM`` came in 6.2)."""

GROUP = "hosts"
"""The consumer group on every task stream (its consumers are the hosts)."""
INBOX_GROUP = "inbox"
RESULTS_GROUP = "origin"

ERRORS = (redis.ConnectionError, redis.TimeoutError)
"""What Redis being unreachable (or going away mid-call) raises (redis-py wraps the
socket's errors in these; an OSError of the disk is not the bus's)."""


class BusDown(MiyabiError):
    """Redis cannot be reached (or refused us): the message names the URL without its
    password and the cause."""


class Bus:
    """A connection to the bus of one layout.

    Args:
        settings: the layout's ``bus:`` section.
        timeout: seconds a call may take before it fails (connect and read).

    Redis errors surface as :class:`BusDown` from :meth:`call`; the raw client
    (:attr:`redis`) raises redis-py's own.
    """

    def __init__(self, settings: BusSettings, timeout: float = defaults.BUS_TIMEOUT) -> None:
        self.settings = settings
        self.host = settings.host
        self.ns = settings.namespace
        kwargs: dict[str, Any] = {}
        if settings.password_env:
            password = os.environ.get(settings.password_env)
            if password:
                kwargs["password"] = password
        self.redis: redis.Redis = redis.Redis.from_url(
            settings.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
            **kwargs,
        )
        self.where = redact(settings.url)
        self._scripts: dict[str, Any] = {}

    def close(self) -> None:
        self.redis.close()

    # -- key names

    def key(self, *parts: str) -> str:
        return ":".join((self.ns, *parts))

    def task_stream(self, target: str) -> str:
        """The stream of tasks for ``target`` (``NAME`` or ``NAME@HOST``)."""
        return self.key("tasks", target)

    def inbox_stream(self, host: str) -> str:
        return self.key("inbox", host)

    def results_stream(self, host: str) -> str:
        return self.key("results", host)

    def task_key(self, bus_id: str) -> str:
        return self.key("task", bus_id)

    # -- calling

    def script(self, name: str, source: str) -> Any:
        """A Lua script registered once per connection (run with EVALSHA)."""
        s = self._scripts.get(name)
        if s is None:
            s = self._scripts[name] = self.redis.register_script(source)
        return s

    def read(self, group: str, streams: dict[str, str], count: int, block_ms: int | None = None) -> list[Entry]:
        """``XREADGROUP`` as this host's consumer: (stream, entry id, fields) in order;
        the fields of an entry deleted while pending are empty."""
        got = cast(Any, self.redis.xreadgroup(group, self.host, cast(Any, streams), count=count, block=block_ms))
        return [
            (str(stream), str(entry), dict(fields or {})) for stream, entries in got or [] for entry, fields in entries
        ]

    def consume(
        self,
        group: str,
        stream: str,
        start: str,
        handle: Callable[[dict[str, str]], None],
        count: int = 100,
        block_ms: int | None = None,
    ) -> int:
        """Read entries of ``stream`` as this host's consumer in ``group`` (``start``:
        ``>`` new ones, waiting up to ``block_ms``; ``0`` those read before and not
        acknowledged), ``handle`` each one's fields (an entry deleted meanwhile has
        none), then acknowledge and delete it. Returns how many were read.

        Raises:
            redis.RedisError: the bus failed; whatever ``handle`` raises (the entry then
                stays pending, and is read again from ``0``).
        """
        n = 0
        for _, entry, fields in self.read(group, {stream: start}, count, block_ms if start == ">" else None):
            if fields:
                handle(fields)
            self.redis.xack(stream, group, entry)
            self.redis.xdel(stream, entry)
            n += 1
        return n

    def autoclaim(self, stream: str, group: str, min_idle_ms: int, count: int) -> list[Entry]:
        """``XAUTOCLAIM``: entries of ``stream`` idle for ``min_idle_ms`` or more, now this host's."""
        out: list[Entry] = []
        cursor = "0-0"
        for _ in range(100):  # each call looks at up to 10 × count pending entries: follow the cursor
            got = cast(
                Any, self.redis.xautoclaim(stream, group, self.host, min_idle_ms, cursor, count=count - len(out))
            )
            out += [(stream, str(entry), dict(fields or {})) for entry, fields in got[1] if fields is not None]
            cursor = str(got[0])
            if cursor == "0-0" or len(out) >= count:
                break
        return out

    def check_version(self) -> None:
        """Check that Redis is recent enough for the bus (``XAUTOCLAIM``: 6.2).

        Raises:
            BusDown: it is older, or does not answer.
        """
        info = cast(dict[str, Any], self.call(self.redis.info, "server"))
        version = str(info.get("redis_version", "0"))
        parts = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
        if parts < MIN_VERSION:
            raise BusDown(
                f"the bus at {self.where} runs Redis {version}; miyabi needs {'.'.join(map(str, MIN_VERSION))} or "
                "newer "
                "(XAUTOCLAIM)"
            )

    def ping(self) -> None:
        """Check that Redis answers.

        Raises:
            BusDown: it does not (or refuses our password).
        """
        self.call(self.redis.ping)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, with Redis's failures as :class:`BusDown`."""
        try:
            return fn(*args, **kwargs)
        except redis.AuthenticationError as e:
            raise BusDown(f"the bus at {self.where}: {describe(e)}") from None
        except ERRORS as e:
            raise BusDown(f"the bus at {self.where} is unreachable: {describe(e)}") from None
        except redis.ResponseError as e:
            raise BusDown(f"the bus at {self.where} answered an error: {e}") from None


def describe(e: BaseException) -> str:
    """One line about a Redis failure, never with a password in it."""
    if isinstance(e, redis.AuthenticationError):
        why = str(e).strip() or "authentication failed"
        return f"Redis refused the password ({why}); check bus.password_env's variable or the URL"
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text.replace("\n", " ")[:200]


def ensure_group(r: redis.Redis, stream: str, group: str) -> None:
    """Create ``group`` on ``stream`` (and the stream) reading from its start, unless it
    exists."""
    try:
        r.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
