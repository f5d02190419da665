"""Agent processes as the kernel sees them: whether one lives, how one ended, and
ending everything that is left of an agent.

How an agent ended is read from the kernel when it can be: a process that exited but
was not reaped yet (a zombie child of the tmux server) still shows its wait status in
``/proc/PID/stat`` (field 52, ``exit_code``, Linux 3.5+; proc(5)). Once tmux reaped it,
tmux's ``pane_dead_status``/``pane_dead_signal`` say the same.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from miyabi import defaults
from miyabi.stopping import Stopped


@dataclass(frozen=True)
class ProcStat:
    """What ``/proc/PID/stat`` says of a process.

    Attributes:
        state: one letter (``R``, ``S``, ``Z`` for a zombie, …).
        start_ticks: its start time, in clock ticks after boot (tells a reused pid apart).
        exit_code: its wait status once it exited (only meaningful for a zombie).
    """

    state: str
    start_ticks: int
    exit_code: int | None


def proc_stat(pid: int) -> ProcStat | None:
    """``/proc/PID/stat`` of ``pid``, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[-1].split()  # after "pid (comm)": field 3 onward
    try:
        start = int(fields[19])  # field 22
        code = int(fields[49]) if len(fields) >= 50 else None  # field 52
    except (IndexError, ValueError):
        return None
    return ProcStat(state=fields[0], start_ticks=start, exit_code=code)


def lease_identity(pid: int) -> str | None:
    """``PID:START`` of a live process (its start in clock ticks after boot, so a
    reused pid is another identity): what a task's lease names as its holder. None
    when there is no such process."""
    st = proc_stat(pid)
    if st is None or st.state in ("Z", "X"):
        return None
    return f"{pid}:{st.start_ticks}"


def describe_wait_status(code: int) -> str:
    """A wait status in words: ``killed by signal 9`` or ``exit status 3``."""
    if os.WIFSIGNALED(code):
        return f"killed by signal {os.WTERMSIG(code)}"
    if os.WIFEXITED(code):
        return f"exit status {os.WEXITSTATUS(code)}"
    return "exited"


def zombie_exit(pid: int, start_ticks: int | None) -> str | None:
    """How ``pid`` ended, if it is an unreaped zombie (and, when ``start_ticks`` is
    given, the same process that was watched); else None."""
    st = proc_stat(pid)
    if st is None or st.state != "Z" or st.exit_code is None:
        return None
    if start_ticks is not None and st.start_ticks != start_ticks:
        return None
    return describe_wait_status(st.exit_code)


def alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    st = proc_stat(pid)
    return st is not None and st.state != "Z"


def end_agent(
    name: str,
    home_root: Path,
    socket: str,
    pid: int,
    graceful: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> list[int]:
    """Kill everything left of agent ``name``: every process whose environment marks it
    as this agent of this ensemble, and, when ``pid`` is alive and carries those
    marks itself, its process group (what dropped the marks with it). A dead ``pid`` is
    never used as a group id: it may belong to another process by now. With
    ``graceful``, SIGTERM first and SIGKILL after ``defaults.KILL_GRACE`` seconds (or
    as soon as ``sleep`` raises, when the controller stops: SIGKILL follows at once).

    Returns:
        the pids signalled.
    """
    marks = (
        f"MIYABI_AGENT={name}\0".encode(),
        f"MIYABI_HOME={home_root}\0".encode(),
        f"MIYABI_SOCKET={socket}\0".encode(),
    )
    victims: set[int] = set()
    spared = {os.getpid(), os.getppid()}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in spared:
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as f:
                if f.read().startswith(b"tmux"):  # never the server or a client
                    continue
        except OSError:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read() + b"\0"
        except OSError:
            continue
        if all(m in env for m in marks):
            victims.add(int(entry))
    victims = {p for p in victims if p > 1}
    pgid: int | None = None
    if pid > 1 and pid in victims and alive(pid):
        try:
            pgid = os.getpgid(pid) if os.getpgid(pid) == pid else None
        except OSError:
            pgid = None
    sigs = (signal.SIGTERM, signal.SIGKILL) if graceful else (signal.SIGKILL,)
    for i, sig in enumerate(sigs):
        if i:
            deadline = time.monotonic() + defaults.KILL_GRACE
            try:
                while time.monotonic() < deadline and any(alive(p) for p in victims):
                    sleep(0.05)
            except Stopped:  # SIGKILL now: never leave a half-ended agent behind
                pass
        if pgid is not None:
            try:
                os.killpg(pgid, sig)
            except OSError:
                pass
        for p in victims:
            try:
                os.kill(p, sig)
            except OSError:
                pass
    return sorted(victims)
