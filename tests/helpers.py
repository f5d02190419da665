"""Shared test helpers: polling with a deadline (never a fixed sleep before an assert),
checking that something stays true, and writing a layout for a test."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

FIXTURES = Path(__file__).parent / "fixtures"
"""Layout files named for the behaviour they pin (``three_agents.yaml``, ``bad_regex.yaml``)."""

AgentSpec = str | tuple[str, str] | tuple[str, str, str | None] | Mapping[str, Any]
"""One agent of a test's layout: a bare name (``"kaede"``, the default profile), a tuple
``(name, profile)`` or ``(name, profile, command)`` (a command of None: the profile's own),
or a mapping of the agent's keys as the layout spells them
(``{"name": "w", "profile": "worker", "submit_delay": 0.05}``)."""


def brought_up(home: Path, agents: list[str] | None = None, **state: Any) -> Path:
    """Make ``home`` look like a home ``miyabi up`` ran in (its ``run/up.json``), for
    tests of commands that need one but no running ensemble; returns ``home``."""
    from miyabi.home import Home

    Home(home).ensure()
    Home(home).save_state(agents=agents or ["kaede"], **state)
    return home


def wait_for(fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> T:
    """Call ``fn`` until it returns a truthy value; return that value.

    Raises:
        AssertionError: ``fn`` stayed falsy for ``timeout`` seconds (the message names ``what``
        and the last value).
    """
    deadline = time.monotonic() + timeout
    last: T = fn()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)
        last = fn()
    return last


def on_terminal(argv: list[str], columns: int = 120, env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run ``argv`` with its output on a pseudo-terminal ``columns`` wide, as a user
    runs a command in a terminal; (seconds from start to exit, exit status, output).
    ``COLUMNS`` and ``LINES`` are left out of the environment: the terminal's size
    tells."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    base = os.environ if env is None else env
    env = {k: v for k, v in base.items() if k not in ("COLUMNS", "LINES")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    code = proc.wait()
    seconds = time.perf_counter() - t0
    os.close(master)
    return seconds, code, b"".join(chunks).decode(errors="replace")


def stays(fn: Callable[[], T], seconds: float, interval: float = 0.1, what: str = "condition") -> T:
    """Check that ``fn`` keeps returning a truthy value for ``seconds``; return its last value.

    The check of "remains true for N s" (a failed agent is not restarted, a message keeps
    waiting). ``fn`` is called at once, every ``interval`` seconds, and once more at or
    after the deadline, so it runs at least twice however slow the machine is (a slow one
    gets fewer calls in between, never none): the helper cannot pass without having
    looked at the end of the window. It fails the moment ``fn`` turns falsy.

    Whether anything had the chance to break the condition inside the window is the
    caller's to make sure of: wait first for a positive sign that it ran (an event, a pass
    of the scheduler, a later message delivered), or the check may pass vacuously.

    Raises:
        AssertionError: ``fn`` returned a falsy value (the message names ``what``, the value,
            and how far into the window it turned).
        ValueError: ``seconds`` or ``interval`` is not positive.
    """
    if seconds <= 0 or interval <= 0:
        raise ValueError(f"stays: seconds ({seconds!r}) and interval ({interval!r}) must be positive")
    start = time.monotonic()
    deadline = start + seconds
    calls = 0
    while True:
        at = time.monotonic()
        value = fn()
        calls += 1
        if not value:
            raise AssertionError(
                f"{what} stopped holding {at - start:.2f}s into {seconds:.1f}s (check {calls}); value: {value!r}"
            )
        if at >= deadline and calls >= 2:
            return value
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


def layout_text(
    agents: Sequence[AgentSpec],
    *,
    session: str | None = None,
    per_window: int | None = None,
    extra: str = "",
    **sections: Any,
) -> str:
    """The YAML of a test's layout (see :func:`write_layout`)."""
    doc: dict[str, Any] = {}
    if session is not None:
        doc["session"] = session
    if per_window is not None:
        doc["per_window"] = per_window
    doc.update(sections)
    doc["agents"] = [_agent(a) for a in agents]
    text = yaml.safe_dump(doc, default_flow_style=None, sort_keys=False, allow_unicode=True, width=1 << 20)
    if extra and not extra.endswith("\n"):
        extra += "\n"
    return text + extra


def write_layout(
    path: Path,
    agents: Sequence[AgentSpec],
    *,
    session: str | None = None,
    per_window: int | None = None,
    extra: str = "",
    **sections: Any,
) -> Path:
    """Write a layout file for a test; return ``path``.

    Args:
        path: the file to write (its directory must exist).
        agents: the agents, each an :data:`AgentSpec`.
        session, per_window: those top-level keys; left out when None (the loader's defaults).
        extra: YAML text added at the end as it is: top-level keys a test spells out itself
            (a section whose exact spelling is what the test is about).
        sections: other top-level keys as Python values, written as YAML
            (``routes=[{"default": True, "agent": "w"}]``, ``watchdog={"max_restarts": 0}``).
    """
    path.write_text(layout_text(agents, session=session, per_window=per_window, extra=extra, **sections))
    return path


def _agent(spec: AgentSpec) -> str | dict[str, Any]:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, tuple):
        name, profile, *rest = spec
        out: dict[str, Any] = {"name": name, "profile": profile}
        if rest and rest[0] is not None:
            out["command"] = rest[0]
        return out
    return dict(spec)
