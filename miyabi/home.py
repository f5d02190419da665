"""miyabi's home directory: where its state lives.

The home is ``--home``, else ``$MIYABI_HOME``, else the current directory. It holds
``queue/`` (inboxes), ``logs/`` (pane output, transcripts, events) and ``run/``
(pidfiles and what ``miyabi up`` last did), each created with mode 0700.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miyabi import defaults

STATE_FILE = "up.json"
"""File under ``run/`` recording the layout, session and socket ``miyabi up`` last used."""


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

    def ensure(self) -> None:
        """Create ``queue/``, ``logs/`` and ``run/`` with mode 0700 (tightening the mode of
        ones that exist: they hold messages and agent output).

        Raises:
            OSError: a directory cannot be created.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        for d in (self.queue, self.logs, self.run):
            d.mkdir(mode=defaults.DIR_MODE, exist_ok=True)
            if d.stat().st_mode & 0o777 != defaults.DIR_MODE:
                d.chmod(defaults.DIR_MODE)

    def pane_log(self, agent: str) -> Path:
        """Where the agent's pane output is appended (``logs/<agent>.log``)."""
        return self.logs / f"{agent}.log"

    def transcript(self, agent: str) -> Path:
        """Where the worker agent records the messages it received."""
        return self.logs / f"{agent}.transcript.jsonl"

    def save_state(self, **state: Any) -> None:
        """Record what ``miyabi up`` did (layout path, session, socket) atomically."""
        self.run.mkdir(mode=defaults.DIR_MODE, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.run, prefix=".up.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2)
            f.write("\n")
        os.replace(tmp, self.run / STATE_FILE)

    def load_state(self) -> dict[str, Any]:
        """What ``miyabi up`` last recorded here ({} if nothing or unreadable)."""
        try:
            data = json.loads((self.run / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}
