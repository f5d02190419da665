"""What the supervisor knows of each agent (:class:`Watch`), what it needs of each
agent's deliverer (:class:`Typist`), and the watches' saved form in
``run/watchdog.json`` (read back by :mod:`miyabi.supervision.saved`), so that a
restarted controller keeps its counters and backoff."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from miyabi.agents.hooks import Activity
from miyabi.agents.screen import Screen
from miyabi.files import write_atomic
from miyabi.home import Home
from miyabi.supervision.policy import DeathAction, Decision, History
from miyabi.supervision.saved import load_records
from miyabi.tmux.panes import Pane

log = logging.getLogger("miyabi.watchdog")


class Typist(Protocol):
    """What the watchdog needs of an agent's deliverer."""

    lock: threading.Lock
    """Held while typing; the watchdog takes it before it respawns the pane."""
    last_delivered: float | None
    """``time.monotonic()`` of the last delivery, or None."""

    def state(self, pane: Pane) -> tuple[Activity, str, str | None, Screen | None]:
        """(state, who told, permission question, screen read) of the agent in ``pane``."""
        ...


@dataclass
class Watch:
    """What the supervisor knows of one agent right now."""

    pid: int = 0
    started: float = 0.0
    start_ticks: int | None = None
    fd: int | None = None
    handled_pid: int = 0
    restart_at: float | None = None
    pending: Decision | None = None
    history: History = field(default_factory=History)
    cpu_base: tuple[float, float] | None = None
    nudged_at: float | None = None
    nudge_id: str | None = None
    hung: bool = False
    working_logged: bool = False


def load_watches(home: Home, watches: Mapping[str, Watch]) -> None:
    """Fill ``watches`` (agent → its watch) from the saved state of ``home``: history,
    the pid already handled, a pending restart. An unreadable record is logged and
    left out."""
    for name, rec in load_records(home).items():
        w = watches.get(name)
        if w is None:
            continue
        try:
            w.history = History(**rec.get("history", {}))
            w.handled_pid = int(rec.get("handled_pid", 0))
            if rec.get("restart_at"):
                w.restart_at = float(rec["restart_at"])
                p = rec.get("pending")
                w.pending = Decision(**{**p, "action": DeathAction(p["action"])}) if p else None
        except (TypeError, ValueError, KeyError):
            log.warning("ignoring unreadable watchdog state for %s", name)


def save_watches(path: Path, watches: Mapping[str, Watch]) -> None:
    """Write ``watches`` to ``path`` (``run/watchdog.json``) atomically."""
    data = {
        "agents": {
            n: {
                "history": asdict(w.history),
                "handled_pid": w.handled_pid,
                "restart_at": w.restart_at,
                "pending": asdict(w.pending) if w.pending else None,
                "pid": w.pid,
                "hung": w.hung,
            }
            for n, w in watches.items()
        }
    }
    write_atomic(path, json.dumps(data, indent=1))
