"""miyabi: run an ensemble of CLI coding agents in tmux, one pane per named agent."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
