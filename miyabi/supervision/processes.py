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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from miyabi import defaults
from miyabi.stopping import Stopped

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
"""Clock ticks per second, the unit of times in ``/proc/PID/stat``."""

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
"""Bytes per page, the unit of ``rss`` in ``/proc/PID/stat``."""


@dataclass(frozen=True)
class ProcStat:
    """What ``/proc/PID/stat`` says of a process (proc(5)).

    Attributes:
        state: one letter (``R``, ``S``, ``Z`` for a zombie, …).
        start_ticks: its start time, in clock ticks after boot (tells a reused pid apart).
        exit_code: its wait status once it exited (only meaningful for a zombie).
        ppid: its parent's pid.
        cpu_ticks: CPU time it used, user and system, in clock ticks (:data:`CLOCK_TICKS`).
        rss_pages: its resident memory, in pages (:data:`PAGE_SIZE`).
    """

    state: str
    start_ticks: int
    exit_code: int | None
    ppid: int = 0
    cpu_ticks: int = 0
    rss_pages: int = 0


def proc_stat(pid: int) -> ProcStat | None:
    """``/proc/PID/stat`` of ``pid``, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return _parse_stat(f.read())
    except OSError:
        return None


def _parse_stat(raw: bytes) -> ProcStat | None:
    fields = raw.decode("ascii", "replace").rsplit(")", 1)[-1].split()  # after "pid (comm)": field 3 onward
    try:
        return ProcStat(
            state=fields[0],
            start_ticks=int(fields[19]),  # field 22
            exit_code=int(fields[49]) if len(fields) >= 50 else None,  # field 52
            ppid=int(fields[1]),  # field 4
            cpu_ticks=int(fields[11]) + int(fields[12]),  # fields 14 and 15: utime, stime
            rss_pages=int(fields[21]),  # field 24
        )
    except (IndexError, ValueError):
        return None


def process_table() -> dict[int, ProcStat]:
    """Every process (pid → its ``/proc/PID/stat``), in one pass over ``/proc``; one that
    ends meanwhile is left out. About 15 µs a process (the system's whole table is read:
    a process tree is found from its members' parents)."""
    out: dict[int, ProcStat] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                st = _parse_stat(f.read())
        except OSError:
            continue
        if st is not None:
            out[int(entry)] = st
    return out


_boot: float | None = None


def boot_time() -> float:
    """When the system booted, in Unix seconds (``btime`` in ``/proc/stat``), the origin
    of :attr:`ProcStat.start_ticks`."""
    global _boot
    if _boot is None:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    _boot = float(line.split()[1])
                    break
            else:
                raise OSError("/proc/stat has no btime line")
    return _boot


def started_at(st: ProcStat) -> float:
    """When the process started, in Unix seconds (to the clock tick)."""
    return boot_time() + st.start_ticks / CLOCK_TICKS


def lease_identity(pid: int) -> str | None:
    """``PID:START`` of a live process (its start in clock ticks after boot, so a
    reused pid is another identity): what a task's lease names as its holder. None
    when there is no such process."""
    st = proc_stat(pid)
    if st is None or st.state in ("Z", "X"):
        return None
    return f"{pid}:{st.start_ticks}"


def holder_alive(holder: str) -> bool:
    """Whether the process a lease names (``PID:START``, see :func:`lease_identity`)
    still runs: the same pid, started at the same time."""
    pid, _, _ = holder.partition(":")
    return pid.isdigit() and int(pid) > 0 and lease_identity(int(pid)) == holder


def holders(agents: Iterable[str], pids: Mapping[str, int | None]) -> dict[str, str | None]:
    """Agent → the lease identity of its live process (``pids``: each agent's live
    process, None or missing when it is dead or has no pane); None where it has none."""
    out: dict[str, str | None] = {}
    for name in agents:
        pid = pids.get(name)
        out[name] = lease_identity(pid) if pid else None
    return out


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


def marked(home_root: Path, socket: str | None, agent: str | None = None) -> set[int]:
    """The processes whose environment marks them as agent ``agent`` (None: any agent)
    of the ensemble of ``home_root`` on tmux socket ``socket`` (None: any socket): they
    carry ``MIYABI_AGENT``, ``MIYABI_HOME`` and ``MIYABI_SOCKET``, which miyabi gives
    each agent's process and its children inherit. Never a tmux process, this process
    or its parent."""
    marks = [
        f"\0MIYABI_AGENT={agent}\0".encode() if agent is not None else b"\0MIYABI_AGENT=",
        f"\0MIYABI_HOME={home_root}\0".encode(),
    ]
    if socket is not None:
        marks.append(f"\0MIYABI_SOCKET={socket}\0".encode())
    found: set[int] = set()
    spared = {os.getpid(), os.getppid()}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in spared or int(entry) <= 1:
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as f:
                if f.read().startswith(b"tmux"):  # never the server or a client
                    continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = b"\0" + f.read() + b"\0"
        except OSError:
            continue
        if all(m in env for m in marks):
            found.add(int(entry))
    return found


def _signal_all(
    victims: set[int], pgid: int | None, graceful: bool, sleep: Callable[[float], None] = time.sleep
) -> None:
    """SIGKILL ``victims`` (and the process group ``pgid``); with ``graceful``, SIGTERM
    first and SIGKILL after ``defaults.KILL_GRACE`` seconds to what is left (at once
    when ``sleep`` raises: the controller stops)."""
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


def end_agent(
    name: str,
    home_root: Path,
    socket: str,
    pid: int,
    graceful: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> list[int]:
    """Kill everything left of agent ``name``: every process whose environment marks it
    as this agent of this ensemble (see :func:`marked`), and, when ``pid`` is alive and
    carries those marks itself, its process group (what dropped the marks with it). A
    dead ``pid`` is never used as a group id: it may belong to another process by now.
    With ``graceful``, SIGTERM first and SIGKILL after ``defaults.KILL_GRACE`` seconds
    (or as soon as ``sleep`` raises, when the controller stops: SIGKILL follows at once).

    Returns:
        the pids signalled.
    """
    victims = marked(home_root, socket, name)
    pgid: int | None = None
    if pid > 1 and pid in victims and alive(pid):
        try:
            pgid = os.getpgid(pid) if os.getpgid(pid) == pid else None
        except OSError:
            pgid = None
    _signal_all(victims, pgid, graceful, sleep)
    return sorted(victims)


def end_agents(home_root: Path, socket: str | None) -> list[int]:
    """End every process an agent of the ensemble of ``home_root`` on ``socket`` left
    behind (None: on any socket), SIGTERM first and SIGKILL after
    ``defaults.KILL_GRACE`` seconds: ``miyabi down`` runs it once the session is gone,
    for what a closed terminal does not end (a child in a session of its own, a
    program that ignores SIGHUP: Gemini CLI's relaunched node process, measured).

    Returns:
        the pids signalled.
    """
    victims = marked(home_root, socket)
    if victims:
        _signal_all(victims, None, graceful=True)
    return sorted(victims)
