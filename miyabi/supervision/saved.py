"""The watchdog's saved state, ``run/watchdog.json``, read without loading the
supervisor (``miyabi status`` reads it on every run)."""

from __future__ import annotations

import json
from typing import Any

from miyabi.home import Home

STATE_FILE = "watchdog.json"
"""The supervisor's state under ``run/``: per agent, its history and pending restart."""


def load_records(home: Home) -> dict[str, dict[str, Any]]:
    """The supervisor's saved state per agent (``run/watchdog.json``): ``history``
    (``restarts``, ``backoff``, ``failed``, ``last_reason``), ``restart_at``, ``hung``,
    ``pid``. Empty when there is none."""
    try:
        data = json.loads((home.run / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    agents = data.get("agents", {}) if isinstance(data, dict) else {}
    return {str(k): v for k, v in agents.items() if isinstance(v, dict)} if isinstance(agents, dict) else {}


def failed_agents(home: Home) -> dict[str, str]:
    """Agents the watchdog gave up on, with why (from the saved state)."""
    out: dict[str, str] = {}
    for name, rec in load_records(home).items():
        hist = rec.get("history")
        if isinstance(hist, dict) and hist.get("failed"):
            out[name] = str(hist["failed"])
    return out
