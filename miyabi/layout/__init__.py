"""Layouts: the YAML file that names a session and its agents, and its typed form."""

from __future__ import annotations

from miyabi.layout.loader import load, preflight
from miyabi.layout.model import Agent, Layout

__all__ = ["Agent", "Layout", "load", "preflight"]
