"""Keeping the session itself: a pane that was closed gets a new one, and a session
(or tmux server) that vanished is built again from the layout, so pending messages
are delivered once the agents are up.

Not after ``miyabi down``: it leaves ``run/stopped``, which ``miyabi up`` removes, so
that a controller restarted by a service manager does not undo a ``down``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from miyabi import defaults
from miyabi.config.model import Layout
from miyabi.errors import HomeGone, MiyabiError
from miyabi.events import EventKind, append_event
from miyabi.files import hold_waiting, write_atomic
from miyabi.home import BUILD_LOCK, Home
from miyabi.tmux.builder import Starts
from miyabi.tmux.builder import down as build_down
from miyabi.tmux.builder import up as build_up
from miyabi.tmux.panes import Pane, session_exists
from miyabi.tmux.runner import Tmux

STOPPED = "stopped"
"""File under ``run/`` that ``miyabi down`` leaves and ``miyabi up`` removes."""


log = logging.getLogger("miyabi.keeper")


@contextmanager
def building(home: Home, wait: float | None = None) -> Iterator[bool]:
    """Hold ``run/build.lock`` for the body, waiting up to ``wait`` seconds (default
    ``defaults.BUILD_WAIT``) for a build under way; yields whether it holds it (False:
    it waited in vain, or the home is gone).

    Raises:
        OSError: the lock file cannot be opened for another reason than a missing home.
    """
    try:
        lock = hold_waiting(home.run / BUILD_LOCK, defaults.BUILD_WAIT if wait is None else wait)
    except FileNotFoundError:
        lock = None
    try:
        yield lock is not None
    finally:
        if lock is not None:
            lock.release()


def mark_stopped(home: Home) -> None:
    """Record that ``miyabi down`` stopped this home's session on purpose."""
    if home.run.is_dir():
        write_atomic(home.run / STOPPED, "stopped by `miyabi down`; `miyabi up` clears this\n")


def clear_stopped(home: Home) -> None:
    """``miyabi up``: the session may be rebuilt again."""
    (home.run / STOPPED).unlink(missing_ok=True)


class SessionKeeper:
    """Rebuilds ``layout``'s session when it is gone, recreates missing panes.

    Args:
        layout: the ensemble.
        tmux: its server.
        home: the miyabi home.
        cwd: directory for agents whose layout entry sets none.
        home_intact: whether the home is still there to serve (asked right before a
            rebuild: a session rebuilt for a removed home would run forever, orphaned).
        build_wait: seconds to wait for a build under way (``miyabi up``'s).
        starts: which processes it starts resume a conversation (a pool instance
            that continues an earlier one's work: see
            :meth:`~miyabi.supervision.resume.Resumption.on_start`); default: none.
    """

    def __init__(
        self,
        layout: Layout,
        tmux: Tmux,
        home: Home,
        cwd: Path,
        home_intact: Callable[[], bool] = lambda: True,
        build_wait: float = defaults.BUILD_WAIT,
        starts: Starts | None = None,
    ) -> None:
        self.layout = layout
        self.tmux = tmux
        self.home = home
        self.cwd = cwd
        self.home_intact = home_intact
        self.build_wait = build_wait
        self.starts: Starts = starts or (lambda agent, respawn: None)

    def rebuild_if_gone(self) -> bool:
        """Build the session again if it (or the whole tmux server) is gone, unless
        ``miyabi down`` stopped it or the home was removed (before the build, or
        during it: then the new session is ended again). A build under way (``miyabi
        up``'s) is waited for. Returns True when it rebuilt the session."""
        if (self.home.run / STOPPED).exists() or not self.home_intact():
            return False
        with building(self.home, self.build_wait) as held:
            if not held:
                log.warning(
                    "session %s is gone, and another build held %s; trying again", self.layout.session, BUILD_LOCK
                )
                return False
            try:
                if session_exists(self.tmux, self.layout.session):
                    return False  # `miyabi up` built it meanwhile
                report = build_up(self.layout, self.tmux, self.home, self.cwd, make_home=False, starts=self.starts)
            except MiyabiError as e:
                log.warning("could not rebuild session %s: %s", self.layout.session, e)
                return False
        if not self.home_intact():  # removed while the session was being built: it serves no one
            log.warning(
                "home %s was removed while session %s was rebuilt; ending it", self.home.root, self.layout.session
            )
            try:
                build_down(self.tmux, self.layout.session, self.home)
            except MiyabiError as e:
                log.warning("could not end session %s: %s", self.layout.session, e)
            return False
        append_event(self.home.root, EventKind.SESSION_REBUILT, session=self.layout.session, agents=report.created)
        log.info("session %s was gone; rebuilt it with %s", self.layout.session, ", ".join(report.created))
        return True

    def recreate_missing(self, panes: Mapping[str, Pane]) -> list[str]:
        """Give a new pane to each agent that has none (dead panes are the watchdog's),
        unless the home was removed. Returns the agents that got one.

        Raises:
            TmuxError: tmux refused.
        """
        if all(a.name in panes for a in self.layout.agents) or not self.home_intact():
            return []
        with building(self.home, self.build_wait) as held:
            if not held:
                return []  # a build is under way: the next refresh looks again
            try:
                report = build_up(
                    self.layout,
                    self.tmux,
                    self.home,
                    self.cwd,
                    respawn_dead=False,
                    make_home=False,
                    starts=self.starts,
                )
            except HomeGone:
                return []
        if report.created:
            append_event(self.home.root, EventKind.PANE_RECREATED, agents=report.created)
            log.info("recreated panes for %s", ", ".join(report.created))
        return report.created
