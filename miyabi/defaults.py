"""Defaults for every tunable constant, each with its unit.

Layout keys override the ones that a layout can set (see README, "Layout reference").
"""

from __future__ import annotations

SOCKET = "miyabi"
"""tmux socket name (``tmux -L``) when neither ``--socket`` nor ``MIYABI_SOCKET`` is given."""

PER_WINDOW = 4
"""Agents per tmux window before miyabi opens the next window (layout key ``per_window``)."""

PANE_WIDTH = 100
"""Columns each pane gets when miyabi sizes a detached session (layout key ``pane_size``)."""

PANE_HEIGHT = 30
"""Rows each pane gets when miyabi sizes a detached session (layout key ``pane_size``)."""

PROFILE = "worker"
"""Profile of an agent whose layout entry names none (layout key ``profile``)."""

SUBMIT_KEY = "Enter"
"""tmux key name pressed to submit a message typed into an agent."""

SUBMIT_DELAY = 0.15
"""Seconds between typing a message and pressing the submit key. 150 ms clears the
paste-burst window of Codex CLI (about 120 ms, openai/codex ``paste_burst.rs``)."""

TMUX_MIN_VERSION = (3, 2)
"""Oldest tmux miyabi runs on: ``new-session -e`` (3.2), ``-e`` on new-window and
split-window and ``set -p`` pane options (3.0). Developed and tested on 3.3a."""

TMUX_TIMEOUT = 30.0
"""Seconds a single tmux invocation may take before miyabi gives up on it."""

TMUX_COMMAND_BYTES = 15_000
"""Most bytes of arguments miyabi puts in one tmux invocation. tmux refuses a command
line over about 16 KiB ("command too long", measured on 3.3a: 16,300 bytes passed,
16,500 failed), so longer chains are cut into several invocations."""

STATUS_CPU_SAMPLE = 0.2
"""Seconds over which ``miyabi status`` samples CPU use of each pane's process tree."""

WORKER_PROMPT = "worker> "
"""Prompt the built-in worker agent shows when it is ready for a message."""

WORKER_BUSY = "⠿ thinking… (esc to interrupt)"
"""Line the built-in worker agent shows while it simulates work (``--think``)."""

ACK_CHARS = 60
"""How many characters of a message the worker repeats in its ``ack`` line."""

LAYOUT_FILE = "miyabi.yaml"
"""Layout file ``miyabi up`` looks for in the current directory before the default layout."""

DIR_MODE = 0o700
"""Mode of the directories miyabi creates under its home (``queue/``, ``logs/``, ``run/``)."""
