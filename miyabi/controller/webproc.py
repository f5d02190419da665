"""The dashboard as the controller's child: with a ``web:`` section in the layout, the
controller runs ``miyabi web`` for its home and starts it again when it dies (after a
backoff when it keeps dying young: a taken port, say), and stops it when it stops.

A process of its own, not a thread: the dashboard's work (reading screens, rendering,
serving browsers) never takes the controller's GIL from delivery and supervision, and
a crash of one never ends the other. Its output goes to ``logs/web.log``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.backoff import Backoff
from miyabi.config.settings import WebSettings
from miyabi.events import EventKind, append_event
from miyabi.files import open_private
from miyabi.home import Home

log = logging.getLogger("miyabi.controller")

LOGFILE = "web.log"
"""The dashboard's output, under ``logs/``."""

DASHBOARDS = "dashboards"
"""Under ``run/``: one file per running dashboard, ``PID.json``: ``pid``, ``started``
(RFC 3339), ``base``, ``url`` (with the token), ``view_url``, ``read_only`` (written by
``miyabi web`` once it listens, removed when it ends). One file each, so that a second
dashboard (``miyabi web --port …`` beside the controller's) neither hides the first nor
takes its record away when it ends."""


def is_dashboard(pid: int, home: Home | None = None) -> bool:
    """Whether ``pid`` runs ``miyabi web`` (for ``home``, when given: its ``--home``
    names it), not a process that took a dead dashboard's pid."""
    import psutil

    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    if "web" not in argv or not any("miyabi" in a for a in argv[:3]):
        return False
    if home is None:
        return True
    return (
        "--home" in argv and argv.index("--home") + 1 < len(argv) and Path(argv[argv.index("--home") + 1]) == home.root
    )


def dashboards(home: Home) -> list[dict[str, Any]]:
    """The dashboards serving ``home`` now, as each published itself under
    ``run/dashboards/``, the longest running first; a record whose pid no longer runs
    ``miyabi web`` (it was killed) is left out."""
    out = []
    for f in sorted((home.run / DASHBOARDS).glob("*.json")):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        pid = data.get("pid") if isinstance(data, dict) else None
        if isinstance(pid, int) and pid > 0 and f.stem == str(pid) and is_dashboard(pid):
            out.append(data)
    return sorted(out, key=lambda d: (str(d.get("started", "")), d["pid"]))


def children_left(home: Home) -> list[int]:
    """Dashboards an earlier controller of ``home`` started (``--child``) that still run
    (their controller was SIGKILLed): found by their command line, whatever port."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        argv = p.info.get("cmdline") or []
        if "--child" in argv and p.pid != os.getpid() and is_dashboard(p.pid, home):
            out.append(p.pid)
    return out


def stop_dashboard(home: Home, wait: float = defaults.WEB_STOP_WAIT) -> list[int]:
    """End the controller's dashboards of ``home`` (its ``web:`` child, and any an
    earlier controller left); returns their pids. A dashboard started by hand
    (``miyabi web``) is not the controller's, and is left running."""
    from miyabi.controller.process import end_processes

    pids = sorted(children_left(home))
    if pids:
        end_processes(pids, wait)
    return pids


def web_argv(home: Home, socket: str, web: WebSettings) -> list[str]:
    """The command that serves ``home``'s dashboard as ``web`` says."""
    argv = [
        sys.executable,
        "-m",
        "miyabi",
        "web",
        "--home",
        str(home.root),
        "--socket",
        socket,
        "--host",
        web.host,
        "--port",
        str(web.port),
        "--child",
    ]
    return [*argv, "--read-only"] if web.read_only else argv


class WebProcess:
    """Keeps ``miyabi web`` running for a home while :meth:`run` runs.

    Args:
        home: the home.
        socket: miyabi's tmux socket.
        web: the layout's ``web:`` section.
    """

    def __init__(self, home: Home, socket: str, web: WebSettings) -> None:
        self.home = home
        self.socket = socket
        self.web = web
        self.proc: subprocess.Popen[bytes] | None = None
        self._changed = threading.Event()
        self._retired = threading.Event()

    def retire(self) -> None:
        """Stop serving for good (the layout lost its ``web:`` section)."""
        self._retired.set()
        self._changed.set()

    def adopt(self, web: WebSettings) -> None:
        """Serve as ``web`` says from now on (the child is restarted if it changed)."""
        if web != self.web:
            self.web = web
            self._changed.set()

    def _spawn(self) -> subprocess.Popen[bytes]:
        fd = open_private(self.home.logs / LOGFILE, os.O_WRONLY | os.O_APPEND)
        try:
            env = {k: v for k, v in os.environ.items() if k not in ("MIYABI_AGENT", "TMUX", "TMUX_PANE")}
            return subprocess.Popen(
                web_argv(self.home, self.socket, self.web),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env=env,
                cwd=str(self.home.root),
                start_new_session=True,
            )
        finally:
            os.close(fd)

    def run(self, stop: threading.Event) -> None:
        """Run the dashboard until ``stop`` is set; then end it (SIGTERM, then SIGKILL)."""
        from miyabi.controller.process import end_processes

        left = children_left(self.home)  # ones an earlier controller (SIGKILLed) left serving
        if left:
            end_processes(left, defaults.WEB_STOP_WAIT)
            log.info("ended the dashboards %s an earlier controller left running", left)
        restarts = Backoff(defaults.WEB_RESTART_MIN, defaults.WEB_RESTART_MAX)
        while not stop.is_set() and not self._retired.is_set():
            started = time.monotonic()
            self._changed.clear()
            try:
                self.proc = proc = self._spawn()
            except OSError as e:
                wait = restarts.next()
                log.warning("could not start the dashboard: %s; trying again in %.0f s", e, wait)
                stop.wait(wait)
                continue
            append_event(self.home.root, EventKind.WEB_STARTED, pid=proc.pid, host=self.web.host, port=self.web.port)
            while proc.poll() is None and not stop.is_set() and not self._changed.is_set():
                stop.wait(0.5)
            if stop.is_set() or self._changed.is_set():
                self._end(proc)
                continue
            ran = time.monotonic() - started
            why = _last_line(self.home.logs / LOGFILE)
            append_event(
                self.home.root, EventKind.WEB_EXITED, pid=proc.pid, code=proc.returncode, ran=round(ran, 3), reason=why
            )
            if ran >= defaults.WEB_STABLE_AFTER:
                restarts.reset()
            wait = restarts.next()
            log.warning(
                "the dashboard exited (code %s) after %.1f s: %s; starting it again in %.0f s",
                proc.returncode,
                ran,
                why,
                wait,
            )
            until = time.monotonic() + wait
            while not stop.is_set() and not self._changed.is_set() and time.monotonic() < until:
                stop.wait(0.5)  # a changed or removed web: section need not wait out the backoff
        if self.proc is not None:
            self._end(self.proc)

    @staticmethod
    def _end(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=defaults.WEB_STOP_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _last_line(path: Path) -> str:
    """The last non-blank line of a log (its error, when a server exits), or ""."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
