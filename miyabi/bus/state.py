"""What the controller last wrote of the bus (``run/bus.json``): its settings, for the
commands that do not load the layout (``miyabi send NAME@HOST``), and whether it is up.
Light on purpose: ``miyabi send`` reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.config.settings import BusSettings

STATE_FILE = "bus.json"


def state_path(home_root: Path) -> Path:
    return home_root / "run" / STATE_FILE


def read_state(home_root: Path) -> dict[str, Any] | None:
    """What the controller last wrote of the bus (``run/bus.json``), or None."""
    try:
        data = json.loads(state_path(home_root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def settings_of(state: dict[str, Any]) -> BusSettings | None:
    """The bus settings recorded in ``run/bus.json`` (for commands that do not load the layout)."""
    s = state.get("settings")
    if not isinstance(s, dict) or not isinstance(s.get("url"), str) or not isinstance(s.get("host"), str):
        return None
    return BusSettings(
        url=s["url"],
        host=s["host"],
        password_env=s.get("password_env"),
        lease=float(s.get("lease", defaults.BUS_LEASE)),
        namespace=str(s.get("namespace", defaults.BUS_NAMESPACE)),
    )
