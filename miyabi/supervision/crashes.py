"""How an agent's process ended, and the evidence kept of it: ``logs/crashes/<agent>-<time>.log``
(how it ended, how long it ran, the last lines of its pane)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from miyabi import defaults
from miyabi.errors import TmuxError
from miyabi.files import open_private, private_dir
from miyabi.home import Home
from miyabi.supervision.processes import zombie_exit
from miyabi.times import file_tag
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import Pane


def exit_cause(
    driver: PaneDriver, pane: Pane | None, pid: int, start_ticks: int | None, sleep: Callable[[float], None]
) -> str:
    """How process ``pid`` ended (``killed by signal 9``, ``exit status 1``, ``exited``):
    from the kernel while it is an unreaped zombie, else from tmux once it reaped it
    (waiting up to ``defaults.EXIT_STATUS_WAIT`` seconds for tmux to record it)."""
    seen = zombie_exit(pid, start_ticks)
    if seen:
        return seen
    if pane is None:
        return "exited"
    deadline = time.monotonic() + defaults.EXIT_STATUS_WAIT
    while True:
        try:
            st = driver.exit_state(pane.pane_id)
        except TmuxError:
            return "exited"
        if st.signal is not None:
            return f"killed by signal {st.signal}"
        if st.dead and st.status is not None:
            return f"exit status {st.status}"
        seen = zombie_exit(pid, start_ticks)
        if seen:
            return seen
        if st.dead or time.monotonic() > deadline:
            return "exited"
        sleep(0.02)


def save_evidence(home: Home, driver: PaneDriver, name: str, pane: Pane | None, cause: str, uptime: float) -> Path:
    """Write ``logs/crashes/<agent>-<time>.log`` (0600): how agent ``name`` ended, how
    long it ran (``uptime``, seconds), and the last lines of its pane. Returns its path."""
    crashes = private_dir(home.logs / "crashes", parents=False)
    path = crashes / f"{name}-{file_tag()}.log"
    lines: list[str] = []
    if pane is not None:
        try:
            lines = driver.capture(pane.pane_id, history=defaults.SCROLLBACK_LINES)
        except TmuxError:
            lines = []
    head = [
        f"agent: {name}",
        f"ended: {cause}",
        f"ran: {uptime:.3f} s",
        f"pane: {pane.pane_id if pane else '-'}",
        "",
        "--- last lines of the pane ---",
    ]
    fd = open_private(path, os.O_WRONLY | os.O_EXCL)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(head + lines[-defaults.SCROLLBACK_LINES :]) + "\n")
    return path
