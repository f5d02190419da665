"""What one dashboard serves: the ensemble of one home, read through the same views as
the command line (:mod:`miyabi.controller.view`), with a short cache so that many
browsers cost what one does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from miyabi import defaults
from miyabi.config.model import Agent, Layout
from miyabi.controller.view import EnsembleView, Target, ensemble, layout_agents, running_layout
from miyabi.errors import AgentNotFound, MiyabiError
from miyabi.home import Home
from miyabi.supervision.status import AgentState
from miyabi.tmux.runner import Tmux
from miyabi.web.auth import Access
from miyabi.web.screens import ScreenHub
from miyabi.work.model import Task, TaskState
from miyabi.work.store import Store

ACTIVE = (TaskState.ASSIGNED, TaskState.IN_PROGRESS, TaskState.VERIFYING)
"""Task states in which a task is an agent's current work."""


class NotFound(MiyabiError):
    """A thing the request names does not exist (404)."""


class Site:
    """The dashboard's view of one home.

    Args:
        target: the home, socket, session and layout.
        access: the tokens and whether the server is read-only.
        clock: Unix time (injectable).
    """

    def __init__(
        self, target: Target, access: Access, clock: Callable[[], float] = time.time, follow: bool = False
    ) -> None:
        self.target = target
        self.follow = follow
        """Follow ``run/up.json``: a later ``miyabi up`` of another layout in this home is served."""
        self.access = access
        self.clock = clock
        self.home: Home = target.home
        self._up_stamp = self._up_mtime()
        self.tmux = Tmux(target.socket)
        self.store = Store.of_home(self.home.root)
        self.screens = ScreenHub(self.tmux, target.session)
        self._cpu: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._view: tuple[float, EnsembleView] | None = None
        self._layout: tuple[tuple[int, int] | None, Layout | None] | None = None
        self._layout_lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._linger, name="web-screens", daemon=True).start()

    def _linger(self) -> None:
        """Close the screens' control channel once nobody watched one for a while."""
        while not self._closed.wait(defaults.WEB_SCREEN_LINGER / 2):
            self.screens.close_if_idle()

    def close(self) -> None:
        self._closed.set()
        self.screens.close()
        self.store.close()

    def _up_mtime(self) -> int | None:
        from miyabi.home import STATE_FILE

        try:
            return (self.home.run / STATE_FILE).stat().st_mtime_ns
        except OSError:
            return None

    def _follow_up(self) -> None:
        """Serve the session and layout ``miyabi up`` last recorded, when it changed."""
        if not self.follow:
            return
        stamp = self._up_mtime()
        if stamp == self._up_stamp:
            return
        self._up_stamp = stamp
        from miyabi.controller.view import resolve_target

        try:
            new = resolve_target(self.home.root, self.target.socket, None)
        except MiyabiError:
            return
        if (new.session, new.layout_path) == (self.target.session, self.target.layout_path):
            return
        old = self.screens
        self.target = new
        if new.session != old.session:
            self.screens = ScreenHub(self.tmux, new.session)
            old.close()
        with self._lock:
            self._view = None

    def layout(self) -> Layout | None:
        """The layout the home runs now (None: unknown, or it does not load); loaded
        again only when its file changed (size or modification time)."""
        self._follow_up()
        path = self.target.layout_path
        try:
            st = path.stat() if path is not None else None
        except OSError:
            st = None
        stamp = (st.st_mtime_ns, st.st_size) if st is not None else None
        with self._layout_lock:
            if self._layout is not None and self._layout[0] == stamp and stamp is not None:
                return self._layout[1]
            lay = running_layout(self.target)
            self._layout = (stamp, lay)
            return lay

    def agents(self) -> list[Agent]:
        """The layout's agents and the pools' running instances."""
        return layout_agents(self.home, self.layout(), self.store)

    def agent(self, name: str) -> Agent:
        """One agent of the ensemble.

        Raises:
            AgentNotFound: the layout names no such agent (nor a running instance).
        """
        agents = self.agents()
        for a in agents:
            if a.name == name:
                return a
        raise AgentNotFound(name, [a.name for a in agents])

    def view(self, max_age: float = 1.0) -> EnsembleView:
        """The ensemble, read at most ``max_age`` seconds ago (CPU is measured since the
        previous reading).

        Raises:
            TmuxError: the session cannot be listed (SessionNotFound when it is not running).
        """
        lay = self.layout()
        with self._lock:
            if self._view is not None and self.clock() - self._view[0] < max_age:
                return self._view[1]
            view = ensemble(self.target, self.tmux, interval=0, cpu_cache=self._cpu, layout=lay, store=self.store)
            self._view = (self.clock(), view)
            return view

    def current_tasks(self) -> dict[str, Task]:
        """Agent → the task it works on (the oldest of its active ones)."""
        out: dict[str, Task] = {}
        for state in ACTIVE:
            for t in self.store.query(str(state)):
                if t.agent and (t.agent not in out or t.updated < out[t.agent].updated):
                    out[t.agent] = t
        return out

    def agents_json(self, max_age: float = 1.0) -> dict[str, Any]:
        """``{"session", "controller", "agents": [...]}``: each agent as ``miyabi status
        --json`` prints it, plus ``current_task`` (``{id, ref, title, state}`` or null)."""
        view = self.view(max_age)
        tasks = self.current_tasks()
        running = bool(view.controller.get("running"))
        rows = []
        for r in view.agents:
            row = r.to_json()
            t = tasks.get(r.name)
            row["current_task"] = (
                {"id": t.id, "ref": t.ref, "title": t.title, "state": str(t.state), "url": t.url} if t else None
            )
            row["notice"] = notice_of(row, running)
            rows.append(row)
        return {
            "session": self.target.session,
            "socket": self.target.socket,
            "home": str(view.home.root),
            "controller": view.controller,
            "agents": rows,
        }

    def agent_json(self, name: str) -> dict[str, Any]:
        """One agent's row of :meth:`agents_json`.

        Raises:
            AgentNotFound: no such agent; NotFound: the session has no row for it.
        """
        self.agent(name)
        row: dict[str, Any] | None = next((a for a in self.agents_json()["agents"] if a["name"] == name), None)
        if row is None:
            raise NotFound(f"agent {name} has no row; is the session running? (`miyabi up`)")
        return row


def notice_of(row: dict[str, Any], controller_running: bool) -> str | None:
    """What the dashboard says of an agent that does not run (``failed``, ``dead``,
    ``missing``): that it does not, why, and the command that brings it back; None
    while it runs (or the watchdog is about to restart it)."""
    name, state = row["name"], row["state"]
    why = row.get("last_reason") or row.get("exit")
    because = f" ({why})" if why else ""
    if state == AgentState.MISSING:
        return f"{name} has no pane; `miyabi up` creates one"
    if state not in (AgentState.FAILED, AgentState.DEAD):
        return None
    fix = f"`miyabi restart {name}`" if controller_running else "`miyabi up` (the controller is not running)"
    what = "failed: the watchdog gave up restarting it" if state == AgentState.FAILED else "is dead"
    return f"{name} {what}{because}; bring it back with {fix}"
