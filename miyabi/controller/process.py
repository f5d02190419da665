"""The controller as a process: one per home (a lock under ``run/``), started in the
background by ``miyabi up`` under its keep-alive (:mod:`miyabi.controller.keepalive`),
which starts it again when it dies, and stopped with it by ``miyabi down``.

The lock decides whether a controller runs, never the pidfile alone: a pidfile left
by a killed controller may name a pid that was reused since.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.controller.locks import LOCKFILE, PIDFILE, HeldLock, controller_pid, hold, read_pidfile
from miyabi.errors import HomeGone, MiyabiError
from miyabi.files import open_private
from miyabi.home import Home

__all__ = [
    "LOCKFILE",
    "PIDFILE",
    "ControllerRunning",
    "await_controller",
    "launch",
    "read_pid",
    "release_lock",
    "running_pid",
    "start_background",
    "status",
    "stop_background",
    "take_lock",
]

LOGFILE = "controller.log"
"""The controller's own log, under ``logs/``."""


class ControllerRunning(MiyabiError):
    """Another controller already runs for this home."""


def take_lock(home: Home) -> HeldLock:
    """Make this process the home's controller: take ``run/controller.lock`` and write
    ``run/controller.pid``. ``miyabi controller`` does this first of all, so that
    ``miyabi up`` sees its controller running within a moment of starting it (the rest
    of its start takes the better part of a second).

    Raises:
        HomeGone: the home does not exist (it is never made here: a keep-alive may
            start a controller a moment after its home was removed).
        ControllerRunning: another controller holds the lock.
        OSError: the home cannot be written.
    """
    from miyabi.files import write_atomic

    if not home.root.is_dir():
        raise HomeGone(home.root)
    home.ensure()
    lock = hold(home.run / LOCKFILE)
    if lock is None:
        pid = read_pid(home)
        raise ControllerRunning(
            f"a controller already runs for {home.root}"
            + (f" (pid {pid})" if pid else "")
            + "; stop it with `miyabi down`, or use it"
        )
    write_atomic(home.run / PIDFILE, f"{os.getpid()}\n")
    return lock


def release_lock(home: Home, lock: HeldLock) -> None:
    """Stop being the home's controller: remove ``run/controller.pid`` if it names this
    process, then let go of the lock."""
    if read_pid(home) == os.getpid():
        (home.run / PIDFILE).unlink(missing_ok=True)
    lock.release()


def read_pid(home: Home) -> int | None:
    """The pid in ``run/controller.pid``, if the file holds one."""
    return read_pidfile(home.run / PIDFILE)


def running_pid(home: Home) -> int | None:
    """The pid of this home's running controller, or None."""
    return controller_pid(home.run)


def start_background(home: Home, socket: str, wait: float = defaults.CONTROLLER_START_WAIT) -> tuple[int, bool]:
    """Make sure this home's controller runs; return (its pid, whether this call
    started it). One is started under a keep-alive (:func:`launch`), which runs the
    layout recorded in ``run/up.json``. A controller that already runs is left as it
    is, with or without a keep-alive: one run by systemd or by hand is theirs to restart.

    Raises:
        MiyabiError: it did not come up within ``wait`` seconds (see logs/controller.log).
    """
    pid = running_pid(home)
    if pid is not None:
        return pid, False
    return await_controller(home, launch(home, socket), wait)


def launch(home: Home, socket: str, layout: Path | None = None) -> subprocess.Popen[bytes] | None:
    """Start this home's keep-alive (:mod:`miyabi.controller.keepalive`), which starts
    the controller (running ``layout`` the first time, when given; else, and after each
    restart, the layout ``run/up.json`` records), unless a keep-alive runs already.
    Returns at once, with the keep-alive's process (None when none was started): see
    :func:`await_controller`.

    Raises:
        OSError: the home cannot be written.
    """
    from miyabi.controller import keepalive

    home.ensure()
    if keepalive.running_pid(home.run) is not None:
        return None
    logfd = open_private(home.logs / LOGFILE, os.O_WRONLY | os.O_APPEND)
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("MIYABI_AGENT", "TMUX", "TMUX_PANE")}
        argv = [sys.executable, "-m", "miyabi.controller.keepalive", "--home", str(home.root), "--socket", socket]
        return subprocess.Popen(
            [*argv, *(["--layout", str(layout)] if layout is not None else [])],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logfd,
            stderr=logfd,
            start_new_session=True,
            cwd=str(home.root),
        )
    finally:
        os.close(logfd)


def await_controller(
    home: Home, launched: subprocess.Popen[bytes] | None, wait: float = defaults.CONTROLLER_START_WAIT
) -> tuple[int, bool]:
    """Wait until this home's controller holds its lock (it takes it first of all: see
    :func:`take_lock`); return (its pid, whether ``launched``, the keep-alive
    :func:`launch` started, started it).

    Raises:
        MiyabiError: it did not come up within ``wait`` seconds (see logs/controller.log).
    """
    from miyabi.controller import keepalive

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pid = running_pid(home)
        if pid is not None:
            return pid, launched is not None
        if launched is not None and launched.poll() is not None and keepalive.running_pid(home.run) is None:
            break
        time.sleep(0.02)
    code = launched.poll() if launched is not None else None
    raise MiyabiError(
        f"the controller did not start{f' (exit {code})' if code is not None else ''}; see {home.logs / LOGFILE}"
    )


def stop_background(home: Home, wait: float = defaults.CONTROLLER_STOP_WAIT) -> int | None:
    """Stop this home's keep-alive and controller (SIGTERM, then SIGKILL after ``wait``
    s); return the controller's pid (None when none ran).

    The keep-alive goes first, so nothing starts the controller again. A process
    counts as stopped once it exited, zombie or not: an exited process holds no lock,
    and reaping an orphan is its new parent's business (some init processes take
    seconds to)."""
    from miyabi.controller import keepalive

    pid = running_pid(home)
    keeper = keepalive.running_pid(home.run)
    # Both at once: the keep-alive, told first, starts nothing again (a controller
    # that stops on SIGTERM exits 0, which ends it too).
    end_processes([p for p in (keeper, pid) if p is not None], wait)
    late = running_pid(home)  # one the keep-alive started just before it was told
    if late is not None and late != pid:
        end_processes([late], wait)
    return pid or late


def end_processes(pids: list[int], wait: float) -> None:
    """SIGTERM ``pids``, then SIGKILL those still running after ``wait`` seconds."""
    import signal

    from miyabi.supervision.processes import alive

    left = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in list(left):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                left.remove(pid)
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            for pid in list(left):
                try:  # reap it if it is our own child (started by this process)
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        left.remove(pid)
                        continue
                except ChildProcessError:
                    pass
                if not alive(pid):
                    left.remove(pid)
            time.sleep(0.01)
        if not left:
            return


def status(home: Home, now: float | None = None) -> dict[str, Any]:
    """The controller as ``miyabi status`` shows it: ``running``, ``pid``, ``uptime``
    (seconds), ``kept_alive`` (a keep-alive watches it), ``restarts`` (how many the
    keep-alive made), ``last_restart`` (RFC 3339) and ``last_reason``; ``fix``, the
    command that starts it, when it does not run; ``code``, where its code comes from
    (``path``, ``checkout``, ``commit``: see :func:`~miyabi.controller.upgrade.record_code`)."""
    from miyabi.controller import keepalive
    from miyabi.controller.upgrade import read_code
    from miyabi.supervision.processes import proc_stat, started_at
    from miyabi.times import rfc3339

    now = time.time() if now is None else now
    pid = running_pid(home)
    st = proc_stat(pid) if pid is not None else None
    uptime = max(0.0, now - started_at(st)) if st is not None else None
    kept = keepalive.running_pid(home.run)
    restarts = keepalive.read_state(home.run).get("restarts") or []
    last = restarts[-1] if restarts and isinstance(restarts[-1], dict) else {}
    return {
        "running": pid is not None,
        "pid": pid,
        "uptime": uptime,
        "kept_alive": kept is not None,
        "keepalive_pid": kept,
        "restarts": len(restarts),
        "last_restart": rfc3339(last["time"]) if isinstance(last.get("time"), (int, float)) else None,
        "last_reason": last.get("reason"),
        "fix": None if pid is not None else _up_command(home),
        "code": read_code(home.run, pid) if pid is not None else None,
    }


def _up_command(home: Home) -> str:
    """The command that brings this home's ensemble (and its controller) up again."""
    import shlex

    layout = home.load_state().get("layout")
    words = ["miyabi", "up", *([layout] if isinstance(layout, str) else []), "-d", "--home", str(home.root)]
    return shlex.join(words)
