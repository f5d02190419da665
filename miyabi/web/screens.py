"""Live pane screens for the dashboard: a control-mode channel of the web server's own
tells when a watched pane printed, and the screen is read then (never on a timer).

The channel is open only while somebody watches a screen, and closed
``defaults.WEB_SCREEN_LINGER`` seconds after the last one left: an attached control
client receives every pane's output, which costs CPU to read even when nobody looks.
A control client that never set a size does not change the session's window sizes
(:mod:`miyabi.tmux.control`).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ansi2html import Ansi2HTMLConverter

from miyabi import defaults
from miyabi.agents.screen import Screen
from miyabi.tmux.control import SessionChannel
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.runner import Tmux


@dataclass(frozen=True)
class Frame:
    """One screen as the browser gets it.

    Attributes:
        pane: the pane id (``%3``).
        html: the rows as HTML, one per line, colours as inline styles (escaped text).
        cursor: ``[x, y]`` of the cursor, in cells from the top left.
        time: Unix time at which the screen was read.
    """

    pane: str
    html: str
    cursor: tuple[int, int]
    time: float

    def to_json(self) -> dict[str, object]:
        return {"pane": self.pane, "html": self.html, "cursor": list(self.cursor), "time": self.time}


_NOT_SGR = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[PX^_][^\x1b]*(?:\x1b\\)?")
"""OSC, DCS, SOS, PM and APC strings: hyperlinks and titles are not drawn (ansi2html
would turn an OSC 8 link into an ``href``)."""


def to_html(screen: Screen) -> str:
    """The screen's rows (with SGR escapes) as HTML: text escaped, colours and bold as
    inline ``<span style>`` (ansi2html's ``inline`` mode), rows joined by newlines;
    every escape string but colours is dropped first."""
    conv = Ansi2HTMLConverter(inline=True, dark_bg=True, line_wrap=False, linkify=False)
    return conv.convert(_NOT_SGR.sub("", "\n".join(screen.lines)), full=False)


class ScreenHub:
    """Watches panes for the dashboard.

    Args:
        tmux: miyabi's tmux server.
        session: the session.
        clock: monotonic seconds (injectable).
    """

    def __init__(self, tmux: Tmux, session: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.tmux = tmux
        self.session = session
        self.clock = clock
        self._lock = threading.Lock()
        self._watchers: dict[str, dict[int, Callable[[], None]]] = {}
        self._next = 0
        self._idle_since: float | None = None
        self.channel = SessionChannel(tmux, session, on_output=self._on_output)
        self.driver = PaneDriver(self.channel)

    def _on_output(self, pane_id: str) -> None:
        """A pane printed (in the channel's reader thread): poke its watchers."""
        for poke in list(self._watchers.get(pane_id, {}).values()):
            poke()

    def watch(self, pane_id: str, poke: Callable[[], None]) -> Callable[[], None]:
        """Call ``poke`` (from another thread; keep it short) each time the pane prints;
        returns the function that stops it."""
        with self._lock:
            self._next += 1
            key = self._next
            self._watchers = {**self._watchers, pane_id: {**self._watchers.get(pane_id, {}), key: poke}}
            self._idle_since = None

        def unwatch() -> None:
            with self._lock:
                left = {k: v for k, v in self._watchers.get(pane_id, {}).items() if k != key}
                self._watchers = {
                    **{p: w for p, w in self._watchers.items() if p != pane_id},
                    **({pane_id: left} if left else {}),
                }
                if not self._watchers:
                    self._idle_since = self.clock()

        return unwatch

    def frame(self, pane_id: str) -> Frame:
        """The pane's screen now, as HTML.

        Raises:
            TmuxError: the pane or the session is gone.
        """
        with self._lock:
            if not self._watchers and self._idle_since is None:
                self._idle_since = self.clock()  # a one-off read: the channel closes after the linger
        screen = self.driver.styled(pane_id)
        return Frame(pane_id, to_html(screen), (screen.cursor_x, screen.cursor_y), time.time())

    def close_if_idle(self) -> bool:
        """Close the channel when nobody watched a screen for
        ``defaults.WEB_SCREEN_LINGER`` seconds; returns whether it is closed."""
        with self._lock:  # held while closing: a watcher that comes now waits, then opens the channel again
            idle = self._idle_since is not None and self.clock() - self._idle_since >= defaults.WEB_SCREEN_LINGER
            if idle:
                self._idle_since = None
                self.channel.close()
        return idle

    def close(self) -> None:
        self.channel.close()
