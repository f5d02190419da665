"""Running a repository's commands (set-up and checks) in a worktree.

Each command runs under ``/bin/sh -c`` in a process group of its own (so a timeout
or a stop ends everything it started), with no terminal input, its output appended
to one log file per round, and the controller's secrets removed from its
environment. Commands run in order; the first that fails ends the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from miyabi import defaults
from miyabi.files import private_dir, write_atomic
from miyabi.pipeline.convention import Step
from miyabi.times import rfc3339


@dataclass(frozen=True)
class StepResult:
    """How one command ended.

    Attributes:
        step: the command.
        exit_code: its exit status (negative: the signal that ended it; None: it was
            killed at its timeout or by a stop).
        seconds: how long it ran.
        timed_out: it ran past its timeout.
        tail: the last lines of its output (at most ``defaults.VERIFY_TAIL_LINES``).
    """

    step: Step
    exit_code: int | None
    seconds: float
    timed_out: bool = False
    tail: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        """``test: pytest -q exited 1 after 2.3 s`` (or ``… ran past its timeout of 600 s``)."""
        what = f"{self.step.stage}: {self.step.command}"
        if self.timed_out:
            return f"{what} ran past its timeout of {self.step.timeout:g} s and was stopped"
        if self.exit_code is None:
            return f"{what} was stopped"
        return f"{what} exited {self.exit_code} after {self.seconds:.1f} s"


@dataclass
class Run:
    """The results of one run of commands.

    Attributes:
        results: one per command that ran, in order.
        log: the log file they wrote to.
        stopped: the run was interrupted (the controller stops); it proves nothing.
    """

    results: list[StepResult] = field(default_factory=list)
    log: Path | None = None
    stopped: bool = False

    @property
    def passed(self) -> bool:
        return not self.stopped and all(r.passed for r in self.results)

    @property
    def failed(self) -> StepResult | None:
        return next((r for r in self.results if not r.passed), None)


def clean_env(secrets: Iterable[str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The controller's environment without ``secrets`` (and without miyabi's own
    per-agent variables), plus ``extra``."""
    drop = {*secrets, "MIYABI_AGENT", "MIYABI_TASK", "TMUX", "TMUX_PANE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra or {})
    return env


def run_steps(
    steps: Sequence[Step],
    cwd: Path,
    log: Path,
    env: Mapping[str, str],
    header: Sequence[str] = (),
    stop: threading.Event | None = None,
    track: Path | None = None,
) -> Run:
    """Run ``steps`` in ``cwd`` one after the other until one fails, appending their
    output to ``log`` (created private, with ``header`` lines first). With ``track``
    (a directory), each running command's process group is recorded there while it
    runs, so that :func:`end_orphans` can end it after a crash of this process.

    Returns:
        the results; :attr:`Run.stopped` when ``stop`` was set meanwhile.
    """
    private_dir(log.parent)
    run = Run(log=log)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, defaults.FILE_MODE)
    with os.fdopen(fd, "ab") as out:
        for line in header:
            out.write(f"# {line}\n".encode())
        for step in steps:
            out.write(
                f"\n$ {step.command}    # {step.stage}, {rfc3339(time.time())}, timeout {step.timeout:g}s\n".encode()
            )
            out.flush()
            start_at = out.tell()
            result = _run_one(step, cwd, out, env, stop, track)
            out.write(f"# {result.describe()}\n".encode())
            out.flush()
            tail = _tail(log, start_at, defaults.VERIFY_TAIL_LINES)
            result = StepResult(result.step, result.exit_code, result.seconds, result.timed_out, tail)
            run.results.append(result)
            if stop is not None and stop.is_set():
                run.stopped = True
                break
            if not result.passed:
                break
    return run


def _run_one(
    step: Step, cwd: Path, out: object, env: Mapping[str, str], stop: threading.Event | None, track: Path | None
) -> StepResult:
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", step.command],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,  # type: ignore[call-overload]
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as e:
        return StepResult(step, 127, 0.0, tail=(f"could not start: {e}",))
    mark = _track(track, proc.pid)
    try:
        return _wait(step, proc, started, stop)
    finally:
        if mark is not None:
            mark.unlink(missing_ok=True)


def _track(track: Path | None, pid: int) -> Path | None:
    """Record process group ``pid`` (with its start time, so a reused pid is never taken for it)."""
    if track is None:
        return None
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return None
    mark = private_dir(track) / str(pid)
    write_atomic(mark, f"{started}\n")
    return mark


def end_orphans(track: Path) -> list[int]:
    """End the process groups of checks that a crashed controller left running (their
    records in ``track``); returns their pids."""
    ended: list[int] = []
    if not track.is_dir():
        return ended
    for mark in track.iterdir():
        try:
            pid, started = int(mark.name), float(mark.read_text().strip())
            if abs(psutil.Process(pid).create_time() - started) < 0.01:
                os.killpg(pid, signal.SIGKILL)
                ended.append(pid)
        except (ValueError, OSError, psutil.Error):
            pass
        mark.unlink(missing_ok=True)
    return ended


def _wait(step: Step, proc: subprocess.Popen[bytes], started: float, stop: threading.Event | None) -> StepResult:
    deadline = started + step.timeout
    timed_out = False
    code: int | None
    while True:
        try:
            code = proc.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            timed_out = time.monotonic() >= deadline
            _kill_group(proc)
            code = None
            break
    return StepResult(step, code, time.monotonic() - started, timed_out)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the command's process group, SIGKILL it after the grace."""
    for sig, wait in ((signal.SIGTERM, defaults.VERIFY_KILL_GRACE), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # what it left behind in its group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(log: Path, offset: int, lines: int) -> tuple[str, ...]:
    """The last ``lines`` lines written to ``log`` after ``offset`` (at most 256 KiB read)."""
    with open(log, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        start = max(offset, end - 256 * 1024)
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    return tuple(text.splitlines()[-lines:])
