"""The delivery journal: how far the delivery of one agent's current message got
(``run/delivery/<agent>.json``), written before each step so that a controller killed
at any instant resumes where it was (see :mod:`miyabi.messaging.delivery`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from miyabi.files import private_dir, write_atomic


class Stage(StrEnum):
    """How far the delivery in an agent's journal got."""

    TYPING = "typing"
    """About to type, or typing: the text may or may not have reached the pane."""
    TYPED = "typed"
    """The whole text reached the pane; the submit key was not pressed yet."""
    ENTERING = "entering"
    """The submit key was (maybe) pressed; the submission is being verified."""
    SUBMITTED = "submitted"
    """Verified; only moving the file to ``cur/`` is left."""


@dataclass
class Marker:
    """The journal entry of the message being delivered to one agent.

    Attributes:
        id: the message id.
        name: its file name in ``new/``.
        stage: how far it got.
        pane: the pane it is being typed into.
        pid: the agent process it is for (another process there means a restart).
        log_offset: unused since resume reads the screen; kept so journals written by
            earlier versions still load.
        attempts: which typing of this message this is (1-based).
        enters: submit key presses so far.
    """

    id: str
    name: str
    stage: Stage
    pane: str
    pid: int
    log_offset: int
    attempts: int
    enters: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Marker:
        return cls(**{**data, "stage": Stage(data["stage"])})


class Journal:
    """One agent's delivery journal, ``run/delivery/<agent>.json`` under ``home_root``
    (its directory is created 0700). It remembers whether it cleared the file itself,
    so that an empty journal costs no read of the disk."""

    def __init__(self, home_root: Path, agent: str) -> None:
        self.path = home_root / "run" / "delivery" / f"{agent}.json"
        private_dir(self.path.parent)
        self.known: bool | None = None
        """Whether the file holds a marker (None: not read from disk yet)."""

    def load(self) -> Marker | None:
        """The marker in the journal, or None (an unreadable one is removed)."""
        if self.known is False:  # we clear it ourselves; no need to look
            return None
        try:
            m = Marker.from_json(json.loads(self.path.read_text(encoding="utf-8")))
            self.known = True
            return m
        except FileNotFoundError:
            self.known = False
            return None
        except (ValueError, TypeError, KeyError):
            self.path.unlink(missing_ok=True)
            return None

    def save(self, m: Marker) -> None:
        """Write ``m`` atomically."""
        write_atomic(self.path, json.dumps(asdict(m)))
        self.known = True

    def clear(self) -> None:
        """Remove the marker: no delivery is in progress."""
        self.path.unlink(missing_ok=True)
        self.known = False
