"""The bottom of miyabi's service layers: the layout file, its typed form, the settings
types it holds, and what it needs of this machine (preflight)."""

from __future__ import annotations

from miyabi.config.loader import load
from miyabi.config.model import Agent, Layout
from miyabi.config.preflight import preflight

__all__ = ["Agent", "Layout", "load", "preflight"]
