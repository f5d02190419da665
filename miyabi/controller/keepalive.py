"""The controller's keep-alive: a small process that runs the controller as its child
and starts it again when it dies, so an ensemble without systemd needs no person when
its controller is SIGKILLed or crashes.

``miyabi up`` starts it (``python -m miyabi.controller.keepalive``) instead of the
controller itself. It holds ``run/keepalive.lock`` (one per home) and watches the
controller's lock: whenever no controller holds it (ours died, or one we adopted from
an earlier run did), it starts one at once (it holds a pidfd of the controller), or
after a backoff when the controller keeps dying young (``defaults.KEEPALIVE_BACKOFF_*``).
It stops for good, with its child, on SIGTERM (``miyabi down``), when ``miyabi down``
left ``run/stopped``, when the home is removed (its lock file is gone, or is another
file: the home was made anew), or when the controller exits 0
(stopped on purpose). What it did is in ``run/keepalive.json``: its pid and start,
and the controller's restarts (time and why), which ``miyabi status`` shows.

This is a service manager's job done small (systemd's ``Restart=always``; runit's
``runsv``), for machines where none is set up; under systemd (``miyabi service``) the
unit runs the controller directly and this is not used. It imports only the standard
library (its lock is :func:`~miyabi.controller.locks.hold`'s), and waits in
``select(2)`` on the controller's pidfd, so it costs a few megabytes and next to no
CPU while the controller runs, and starts in a few tens of milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from miyabi import defaults
from miyabi.backoff import backoff
from miyabi.controller.locks import HeldLock, controller_pid, hold, lock_holder

LOCKFILE = "keepalive.lock"
"""File under ``run/`` the keep-alive holds a lock on."""

STATE_FILE = "keepalive.json"
"""Under ``run/``: ``pid``, ``started`` (Unix time), ``restarts`` (``time``, ``reason``)."""

STOPPED = "stopped"
"""``run/stopped``, left by ``miyabi down`` (see :mod:`miyabi.supervision.keeper`)."""

UPGRADE_EXIT = 75
"""The controller's exit status when a merge into miyabi's own checkout landed
(``self:``): the keep-alive starts it again at once, on the new code, and probes it
(see :mod:`miyabi.controller.upgrade`)."""


def read_state(run: Path) -> dict[str, Any]:
    """What the keep-alive recorded ({} when nothing or unreadable)."""
    try:
        data = json.loads((run / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def running_pid(run: Path) -> int | None:
    """The pid of the keep-alive of the home whose ``run/`` this is, or None."""

    def pid() -> int | None:
        value = read_state(run).get("pid")
        if not isinstance(value, int):
            return None
        try:  # the file may still name an earlier keep-alive (whose pid was reused) for an instant
            with open(f"/proc/{value}/cmdline", "rb") as f:
                return value if b"miyabi.controller.keepalive" in f.read() else None
        except OSError:
            return None

    return lock_holder(run / LOCKFILE, pid)


def backoff_delay(young: int) -> float:
    """Seconds to wait before starting the controller again after ``young`` deaths in
    a row of controllers that ran less than ``defaults.KEEPALIVE_STABLE``: none for
    the first, then doubling from ``KEEPALIVE_BACKOFF_INITIAL`` to ``KEEPALIVE_BACKOFF_MAX``."""
    if young <= 1:
        return 0.0
    return backoff(young - 1, defaults.KEEPALIVE_BACKOFF_INITIAL, defaults.KEEPALIVE_BACKOFF_MAX)


class KeepAlive:
    """Runs the controller for one home and starts it again when it dies.

    Args:
        home: the home's root.
        argv: the controller's command line.
        log: the controller's log file (its output goes there).
    """

    def __init__(self, home: Path, argv: list[str], log: Path, first: list[str] | None = None) -> None:
        self.home = home
        self.run_dir = home / "run"
        self.argv = argv
        self.first = first
        """The command line of the first controller, when it differs (``--layout``)."""
        self.log = log
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.restarts: list[dict[str, Any]] = []
        self.started = time.time()
        self.lock: HeldLock | None = None
        """Its lock on ``run/keepalive.lock``, once it holds it."""

    def _save(self) -> None:
        from miyabi.files import write_atomic

        data = {"pid": os.getpid(), "started": self.started, "restarts": self.restarts[-defaults.KEEPALIVE_HISTORY :]}
        write_atomic(self.run_dir / STATE_FILE, json.dumps(data))

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        # A flag only: a lock taken here could be one the interrupted code holds
        # (Popen.poll's). The wake-up fd ends the main loop's select at once.
        self.stopping = True

    def _spawn(self) -> None:
        from miyabi.files import open_private

        fd = open_private(self.log, os.O_WRONLY | os.O_APPEND)
        try:
            argv, self.first = self.first or self.argv, None
            self.child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, cwd=str(self.home))
        finally:
            os.close(fd)

    def _gone(self) -> bool:
        """Whether to stop: told to, ``miyabi down`` left ``run/stopped``, or the home is
        gone: its lock file is no longer the one this keep-alive holds (the home was
        removed, or removed and made anew: a new ``miyabi up`` there starts its own)."""
        return (
            self.stopping
            or (self.run_dir / STOPPED).exists()
            or (not self.lock.still_ours() if self.lock is not None else not self.run_dir.is_dir())
        )

    def run(self) -> int:
        """Keep the controller running until told to stop; return the exit code.

        It sleeps in ``select(2)`` on a pidfd of the running controller (its child,
        or one it adopted), so it wakes the instant that process ends, on a signal
        (``signal.set_wakeup_fd``), and every ``defaults.KEEPALIVE_CHECK`` seconds
        to look for ``run/stopped``.

        Raises:
            OSError: the home cannot be written.
        """
        lock = hold(self.run_dir / LOCKFILE)
        if lock is None:
            return 0  # another keep-alive runs for this home
        self.lock = lock
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_term)
        watched: tuple[int, int] | None = None  # (pid, its pidfd)
        try:
            self._save()
            young = 0  # deaths in a row of controllers that ran less than KEEPALIVE_STABLE
            born = 0.0
            adopted = False  # a controller we did not start ran since we last looked
            while not self._gone():
                child = self.child
                if child is not None and child.poll() is not None:
                    self.child = None
                    if child.returncode == 0 or self._gone():
                        break  # stopped on purpose
                    if child.returncode == UPGRADE_EXIT:
                        self._upgrade_safely(wake_r)
                        born, young = time.monotonic(), 0
                        continue
                    lived = time.monotonic() - born
                    young = young + 1 if lived < defaults.KEEPALIVE_STABLE else 0
                    self._record_death(child, lived)
                    self._pause(backoff_delay(young), wake_r)
                    continue
                pid = child.pid if child is not None else controller_pid(self.run_dir)
                if pid is None and self._gone():  # never a controller for a home that is gone
                    break
                if pid is None:
                    if adopted:
                        self.restarts.append(
                            {"time": time.time(), "reason": "controller ended (one this keep-alive did not start)"}
                        )
                        adopted = False
                    self._spawn()
                    born = time.monotonic()
                    self._save()
                    continue
                adopted = child is None
                watched = _watch(pid, watched)
                if watched is None:  # gone already, or no pidfd here: look again shortly
                    self._pause(defaults.KEEPALIVE_POLL, wake_r)
                    continue
                self._pause(defaults.KEEPALIVE_CHECK, wake_r, watched[1])
        finally:
            if watched is not None:
                os.close(watched[1])
            self._stop_child()
            lock.release()
        return 0

    def _upgrade_safely(self, wake_r: int) -> None:
        """:meth:`_upgrade`, whatever goes wrong in it: said on standard error (the
        controller's log), and a controller runs afterwards."""
        try:
            self._upgrade(wake_r)
        except Exception:  # the keep-alive outlives any failure of an upgrade
            import logging  # no handler set up here: Python's last resort writes it to stderr, the log

            logging.getLogger("miyabi.keepalive").exception("keep-alive: the upgrade failed")
            if self.child is None or self.child.poll() is not None:
                self._spawn()
                self._save()

    def _upgrade(self, wake_r: int) -> None:
        """The controller exited to run miyabi's merged code: start it (the new code),
        probe it, and on a failed probe stop it, roll the merge back and start it again
        on the old code (see :mod:`miyabi.controller.upgrade`)."""
        from miyabi.controller import upgrade
        from miyabi.events import EventKind, append_event

        up = upgrade.read_upgrade(self.run_dir)
        self.restarts.append({"time": time.time(), "reason": f"upgrade to {str(up.get('after'))[:12]}"})
        self._spawn()
        self._save()
        child = self.child
        if up.get("state") != "pending" or child is None:
            return
        began = time.monotonic()
        ok, evidence = upgrade.probe(self.home, child, str(up["after"]), lambda s: self._pause(s, wake_r), self._gone)
        if self._gone():
            return
        fields = {k: up.get(k) for k in ("task", "before", "after")}
        if ok:
            upgrade.write_upgrade(self.run_dir, {**up, "state": "upgraded", "evidence": evidence})
            append_event(
                self.home,
                EventKind.SELF_UPGRADED,
                **fields,
                seconds=round(time.monotonic() - began, 3),
                evidence=evidence,
            )
            return
        self._stop_child()
        self.child = None
        moved, said = upgrade.roll_back(self.home, up, evidence)
        upgrade.write_upgrade(self.run_dir, {**up, "state": "rolled-back", "evidence": evidence, "rollback": said})
        append_event(self.home, EventKind.SELF_ROLLED_BACK, **fields, evidence=evidence, moved_back=moved, fix=said)
        self.restarts.append({"time": time.time(), "reason": f"rolled back: {evidence}"})
        self._spawn()
        self._save()

    def _record_death(self, child: subprocess.Popen[bytes], lived: float) -> None:
        """Note a controller of ours that died after ``lived`` seconds."""
        status = child.returncode
        why = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        self.restarts.append({"time": time.time(), "reason": f"controller {child.pid} {why} after {lived:.1f} s"})

    def _pause(self, seconds: float, wake_r: int, pidfd: int | None = None) -> None:
        """Wait up to ``seconds``: less when ``pidfd``'s process ends or a signal comes."""
        import select

        if self._gone():
            return
        fds = [wake_r] + ([pidfd] if pidfd is not None else [])
        try:
            ready, _, _ = select.select(fds, [], [], seconds)
        except (OSError, ValueError):
            return
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass

    def _stop_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(defaults.CONTROLLER_STOP_WAIT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(defaults.CONTROLLER_STOP_WAIT)


def _watch(pid: int, watched: tuple[int, int] | None) -> tuple[int, int] | None:
    """``(pid, a pidfd of it)``: ``watched`` when it is that pid's already, else a new one
    (closing the old); None when ``pid`` is gone or pidfds are not available."""
    if watched is not None and watched[0] == pid:
        return watched
    if watched is not None:
        os.close(watched[1])
    try:
        return (pid, os.pidfd_open(pid))
    except OSError:
        return None


def main(args: list[str] | None = None) -> int:
    """``python -m miyabi.controller.keepalive --home H --socket S [--layout L]``. The
    first controller it starts runs ``L`` when given (``miyabi up`` starts the
    keep-alive while it builds the session, before it records the layout); every
    controller after it reads the layout the home runs then (``run/up.json``), so one
    started again after a ``miyabi reload`` runs the reloaded layout. Only ``miyabi``
    runs this, so its command line is read without argparse (whose import would slow
    the controller's start). Exit 2 on a command line it does not know."""
    words = sys.argv[1:] if args is None else args
    given = dict(zip(words[::2], words[1::2], strict=False))
    if len(words) % 2 or not {"--home", "--socket"} <= set(given) <= {"--home", "--socket", "--layout"}:
        sys.stderr.write("usage: python -m miyabi.controller.keepalive --home H --socket S [--layout L]\n")
        return 2
    home = Path(given["--home"])
    argv = [sys.executable, "-m", "miyabi", "controller", "--home", str(home), "--socket", given["--socket"]]
    first = [*argv, "--layout", given["--layout"]] if "--layout" in given else None
    return KeepAlive(home, argv, home / "logs" / "controller.log", first).run()


if __name__ == "__main__":
    sys.exit(main())
