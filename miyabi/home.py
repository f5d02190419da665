"""miyabi's home directory: where its state lives.

The home is ``--home``, else ``$MIYABI_HOME``, else the current directory. It holds
``queue/`` (inboxes), ``logs/`` (pane output, transcripts, events), ``run/``
(pidfiles, journals and what ``miyabi up`` last did) and ``state/`` (the task
database), each created with mode 0700; miyabi's files in them are 0600.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miyabi.files import private_dir, write_atomic

STATE_FILE = "up.json"
"""File under ``run/`` recording the layout, session and socket ``miyabi up`` last used."""

BUILD_LOCK = "build.lock"
"""File under ``run/`` locked while the session is built or reconciled (by ``miyabi up``,
or the controller's keeper), so that two never build it at once: ``miyabi up`` starts
the controller while it builds, and the controller waits for that build."""


@dataclass(frozen=True)
class Home:
    """A miyabi home directory.

    Attributes:
        root: the directory (absolute).
    """

    root: Path

    @classmethod
    def resolve(cls, given: str | os.PathLike[str] | None = None) -> Home:
        """The home from ``given``, else ``$MIYABI_HOME``, else the current directory."""
        raw = given if given not in (None, "") else os.environ.get("MIYABI_HOME") or os.getcwd()
        return cls(Path(os.path.expanduser(str(raw))).resolve())

    @property
    def queue(self) -> Path:
        return self.root / "queue"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def ensure(self) -> None:
        """Create ``queue/``, ``logs/``, ``run/`` and ``state/`` with mode 0700
        (tightening the mode of ones that exist: they hold messages and agent output).

        Raises:
            OSError: a directory cannot be created.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        for d in (self.queue, self.logs, self.run, self.state):
            private_dir(d)

    def pane_log(self, agent: str) -> Path:
        """Where the agent's pane output is appended (``logs/<agent>.log``)."""
        return self.logs / f"{agent}.log"

    def transcript(self, agent: str) -> Path:
        """Where the worker agent records the messages it received."""
        return self.logs / f"{agent}.transcript.jsonl"

    def save_state(self, **state: Any) -> None:
        """Record what ``miyabi up`` did (layout path, session, socket) atomically."""
        write_atomic(self.run / STATE_FILE, json.dumps(state, indent=2) + "\n", fsync=True)

    def load_state(self) -> dict[str, Any]:
        """What ``miyabi up`` last recorded here ({} if nothing or unreadable)."""
        try:
            data = json.loads((self.run / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}
