"""Everything that talks to tmux. No other package runs tmux."""

from __future__ import annotations

from miyabi.tmux.runner import Tmux

__all__ = ["Tmux"]
