"""Monitoring creates work: an agent the watchdog gave up on gets a fix task.

When the watchdog stops restarting an agent (a crash loop), a task says what failed
and where its evidence is: with a ``github:`` section an issue labelled todo (the
intake makes it a task), without one a local task; never twice for one failure while
the first fix is open (:func:`~miyabi.pipeline.followups.file_fix` keeps the causes).
An agent that runs again and fails later is a new cause.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from miyabi.config.settings import GitHubSettings
from miyabi.home import Home
from miyabi.pipeline.followups import file_fix
from miyabi.stopping import Stopped
from miyabi.supervision.saved import load_records
from miyabi.times import rfc3339
from miyabi.work.github import GitHub
from miyabi.work.store import Store

log = logging.getLogger("miyabi.pipeline.monitoring")


def failed_agent_fix(name: str, record: dict[str, Any], crashes: Path) -> tuple[str, str, str]:
    """The fix task for agent ``name``, whose watchdog record is ``record`` (its
    ``history``: ``failed`` reason, ``restarts`` times): ``(cause, title, body)``."""
    hist = record.get("history", {})
    reason = str(hist.get("failed") or "it kept failing")
    restarts = hist.get("restarts") or [time.time()]
    cause = f"the watchdog gave up on agent {name}"
    title = f"Agent {name} keeps failing: {reason}"[:200]
    body = (
        f"miyabi's watchdog gave up on agent {name} at {rfc3339(float(restarts[-1]))}: {reason}.\n"
        f"Its crash evidence is under {crashes}; `miyabi status {name}` shows it, and "
        f"`miyabi restart {name}` brings it back once the cause is fixed."
    )
    return cause, title, body


class FixFiler:
    """Files a fix task for each agent the watchdog gave up on, once per failure.

    Args:
        home: the miyabi home (the watchdog's records and crash evidence are there).
        store: the task store.
        gh: the GitHub client (None: local tasks).
        github: the layout's ``github:`` section, read when a fix is filed.
        start: runs a callable on a thread of the controller's, named: filing may wait
            for GitHub (a rate limit), never the controller's main loop.
    """

    def __init__(
        self,
        home: Home,
        store: Store,
        gh: GitHub | None,
        github: Callable[[], GitHubSettings | None],
        start: Callable[[Callable[[], None], str], None],
    ) -> None:
        self.home = home
        self.store = store
        self.gh = gh
        self.github = github
        self.start = start
        self._filed: set[str] = set()
        self._lock = threading.Lock()

    def tick(self, failed: Sequence[str]) -> None:
        """Called at each scheduling pass with the agents the watchdog gives up on now."""
        with self._lock:
            self._filed &= set(failed)  # running again: a later failure is a new cause
            due = [n for n in failed if n not in self._filed]
            self._filed |= set(due)
        if not due:
            return
        records = load_records(self.home)
        for name in due:
            cause, title, body = failed_agent_fix(name, records.get(name, {}), self.home.logs / "crashes")
            self.start(functools.partial(self._file, name, cause, title, body), f"file-fix-{name}")

    def _file(self, name: str, cause: str, title: str, body: str) -> None:
        try:
            file_fix(self.store, self.gh, self.github(), self.home.root, cause, title, body)
        except Stopped:  # the controller is stopping; the next one files it
            with self._lock:
                self._filed.discard(name)
        except Exception as e:
            log.warning(
                "could not file the fix task for %s: %s: %s; trying again at the next pass",
                name,
                type(e).__name__,
                e,
                exc_info=True,
            )
            with self._lock:
                self._filed.discard(name)
