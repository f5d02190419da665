"""Jobs: machine-readable work that a ``worker`` agent runs.

``miyabi job submit FILE.json`` stores a job as a task (source ``job``) routed to a
worker agent. A job is JSON: ``id`` (unique: a second job with the same id is
refused), ``kind`` (``run_shell``), ``workdir`` (an existing directory; a relative
one is relative to the job file's directory), ``script`` (a list of shell commands),
``dod`` (the definition of done, such as ``exit_code == 0``) and ``report_path`` (a
relative one is relative to ``workdir``); optionally ``retries`` (attempts after the
first, instead of the layout's ``tasks.max_attempts``) and ``timeout`` (a duration
such as ``10m``). The controller tells the worker only
``/job <task id>``; the worker loads the job from the task store and runs it only if
that task is a job assigned to this very worker and still open, so text typed into
a worker can never run a command of its own. The worker writes the report (each
command, its exit code and output) to ``report_path`` and marks the task done or
failed by the ``dod``.

Jobs are at-least-once: each step is recorded in the task store as it starts and
ends (``job_runs``). When the worker dies mid-job, the task is handed back and the job
runs again, as the next attempt, from its first step; the report lists every attempt.
An attempt whose last step completed is final: a new attempt finishes the task from
its record and runs nothing again. A step's shell keeps its exit code in the home
(``state/job-steps/TASK-ATTEMPT-STEP``) the moment its command ends, so a step that
ended after its worker died (killed while the command ran: the command runs on to its
end until the watchdog ends what is left) counts as ended, and a last step that did
is not run again. An attempt runs a step only while it owns the job (checked in the
transaction that records the step), so two attempts never run at once.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.config.settings import parse_duration
from miyabi.files import private_dir
from miyabi.times import rfc3339
from miyabi.work.model import Source, TaskError, TaskState
from miyabi.work.store import Store

KINDS = ("run_shell",)
STEP_STATUS = ("job-steps",)
"""Where, beside the task database, each step's shell keeps its command's exit code."""
KEEP_STATUS = '/bin/sh -c "$1"; s=$?; umask 077; printf %s "$s" > "$2"; exit $s'
"""The shell around each step: runs the command as ``/bin/sh -c`` would, then writes its
exit code to the file ``$2`` (0600) at once, whether or not the worker still waits for it."""
KEPT = "the worker's process ended before it recorded this step; its shell kept the exit code"
"""The output shown for a step whose end was taken from its shell's record."""
DOD_RE = re.compile(r"^\s*exit_code\s*(==|!=)\s*(-?\d+)\s*$")


class JobError(TaskError):
    """A job file is invalid, or a job cannot run.

    Attributes:
        problems: one line per problem (a job file's are all found at once, each
            naming the file and the field).
    """

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def lines(self) -> list[str]:
        return self.problems


FIELDS = {
    "id": "text that names the job (unique: a second job with the same id is refused)",
    "kind": "run_shell",
    "workdir": "the directory the commands run in",
    "script": "a list of shell commands",
    "dod": "exit_code == 0 (or != N)",
    "report_path": "where the report goes (relative: to workdir)",
}
"""A job's required fields, and what each holds."""
OPTIONAL = ("retries", "timeout")


def _problems(data: Any, origin: str, base: Path | None) -> list[str]:
    """Every problem of the job ``data`` from ``origin``, one line each as ``FILE: FIELD:
    what is wrong; what to do``. ``base``: the directory a relative ``workdir`` is
    relative to (None: do not look at the file system)."""
    if not isinstance(data, dict):
        return [f"{origin}: a job must be a JSON object with {', '.join(FIELDS)}"]
    out = _names(data, origin) + _values(data, origin)
    workdir = data.get("workdir")
    if base is not None and isinstance(workdir, str) and workdir.strip():
        where = _workdir(workdir, base)
        if not where.is_dir():
            out.append(f"{origin}: workdir: {workdir!r} is not a directory ({where}); create it or fix workdir")
    return out


def _names(data: dict[str, Any], origin: str) -> list[str]:
    """The fields missing and the fields unknown (with the nearest known name)."""
    out = [f"{origin}: {k}: missing; give {what}" for k, what in FIELDS.items() if k not in data]
    for k in sorted(set(data) - set(FIELDS) - set(OPTIONAL)):
        near = difflib.get_close_matches(k, [*FIELDS, *OPTIONAL], n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"a job has {', '.join([*FIELDS, *OPTIONAL])}"
        out.append(f"{origin}: {k}: unknown field; {hint}")
    return out


def _values(data: dict[str, Any], origin: str) -> list[str]:
    """The fields whose values are wrong (the file system not looked at)."""
    out: list[str] = []
    for k in ("id", "workdir", "report_path"):
        if k in data and (not isinstance(data[k], str) or not data[k].strip()):
            out.append(f"{origin}: {k}: {data[k]!r} is not text, or is empty; give {FIELDS[k]}")
    if "kind" in data and data["kind"] not in KINDS:
        out.append(f"{origin}: kind: {data['kind']!r} is not supported; use {' or '.join(KINDS)}")
    script = data.get("script")
    if "script" in data and (
        not isinstance(script, list) or not script or not all(isinstance(c, str) and c.strip() for c in script)
    ):
        out.append(f'{origin}: script: must be a non-empty list of commands (text), such as ["make test"]')
    if "dod" in data and (not isinstance(data["dod"], str) or not DOD_RE.match(data["dod"])):
        out.append(f"{origin}: dod: {data['dod']!r} is not understood; use exit_code == 0 (or != N)")
    retries = data.get("retries")
    if retries is not None and (type(retries) is not int or retries < 0):
        out.append(f"{origin}: retries: {retries!r} must be a whole number, 0 or more")
    if data.get("timeout") is not None:
        timeout = parse_duration(data["timeout"])
        if timeout is None or timeout <= 0:
            out.append(f"{origin}: timeout: {data['timeout']!r} must be a duration such as 90s, 10m or 2h")
    return out


def _workdir(workdir: str, base: Path) -> Path:
    p = Path(workdir).expanduser()
    return p if p.is_absolute() else base / p


@dataclass(frozen=True)
class Job:
    """A job as submitted.

    Attributes:
        id: the submitter's id for it.
        kind: ``run_shell``.
        workdir: directory the commands run in.
        script: shell commands, run in order (each one's exit code is recorded).
        dod: ``exit_code == N`` or ``exit_code != N``: every command must satisfy it.
        report_path: where the report (JSON) is written.
        retries: attempts allowed after the first (None: the layout's ``tasks.max_attempts``).
        timeout: seconds it may run in all, per attempt (None: the layout's).
    """

    id: str
    kind: str
    workdir: str
    script: tuple[str, ...]
    dod: str
    report_path: str
    retries: int | None = None
    timeout: float | None = None

    @classmethod
    def parse(cls, data: Any, origin: str, base: Path | None = None) -> Job:
        """Check a job's fields (and with ``base``, that its ``workdir``, relative to
        ``base`` unless absolute, is a directory).

        Raises:
            JobError: every problem at once, one line each naming the file and field.
        """
        problems = _problems(data, origin, base)
        if problems:
            raise JobError(*problems)
        timeout = parse_duration(data["timeout"]) if data.get("timeout") is not None else None
        return cls(
            str(data["id"]),
            data["kind"],
            data["workdir"],
            tuple(data["script"]),
            data["dod"],
            data["report_path"],
            data.get("retries"),
            timeout,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "workdir": self.workdir,
            "script": list(self.script),
            "dod": self.dod,
            "report_path": self.report_path,
        }
        if self.retries is not None:
            out["retries"] = self.retries
        if self.timeout is not None:
            out["timeout"] = self.timeout
        return out

    @property
    def report_file(self) -> Path:
        """Where the report goes: ``report_path``, relative to ``workdir`` unless absolute."""
        p = Path(self.report_path).expanduser()
        return p if p.is_absolute() else Path(self.workdir) / p


def passes(dod: str, exit_code: int) -> bool:
    """Whether one command's ``exit_code`` satisfies ``dod``."""
    m = DOD_RE.match(dod)
    if not m:
        return False
    want = int(m.group(2))
    return exit_code == want if m.group(1) == "==" else exit_code != want


def load(path: Path) -> Job:
    """Read and check the job in ``path``; its ``workdir`` is made absolute (relative
    to the file's directory) and must be an existing directory.

    Raises:
        JobError: the file does not exist or cannot be read, is not JSON, or holds an
            invalid job (every problem at once, one line each).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobError(f"{path}: no such job file; check the path") from None
    except IsADirectoryError:
        raise JobError(f"{path}: is a directory, not a job file; give the job's JSON file") from None
    except UnicodeDecodeError as e:
        raise JobError(f"{path}: not UTF-8 text (byte {e.start}); a job file is JSON") from None
    except OSError as e:
        raise JobError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise JobError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno}); fix the file") from None
    base = path.resolve().parent
    job = Job.parse(data, str(path), base)
    return replace(job, workdir=str(_workdir(job.workdir, base)))


def submit(store: Store, path: Path, agent: str) -> tuple[int, Job]:
    """Store the job in ``path`` as a task for ``agent``; return the task id and the job.

    Raises:
        JobError: unreadable or invalid file, a missing workdir, or an id that an
            earlier job has.
    """
    job = load(path)
    try:
        t = store.add(
            f"job {job.id}",
            json.dumps(job.to_json()),
            ["job", f"agent:{agent}"],
            source=Source.JOB,
            key=job.id,
            timeout=job.timeout,
            max_attempts=None if job.retries is None else job.retries + 1,
        )
    except TaskError as e:
        raise JobError(f"{path}: {e}") from None
    return t.id, job


def run_assigned(store: Store, task_id: int, agent: str, holder: str | None = None) -> tuple[bool, Path]:
    """Run job task ``task_id`` as its current attempt if it is a job assigned to
    ``agent`` and open; write its report (every attempt) and mark the task done or
    failed. An earlier attempt that completed its last step decides instead, and
    nothing runs. Returns (passed, report path).

    Args:
        holder: the worker's lease identity (``PID:START``), recorded on the task.

    Raises:
        JobError: the task is not an open job of this agent.
    """
    job, attempt = start(store, task_id, agent, holder)
    _ended_unrecorded(store, task_id)
    final = _final_attempt(job, store.job_steps(task_id))
    if final is None:
        if not _run_steps(store, job, task_id, attempt, agent):
            raise JobError(
                f"job task {task_id}: attempt {attempt} stopped; the task was handed back, cancelled or "
                "finished while it ran (the next attempt, if any, writes the report)"
            )
        final = attempt
    steps = store.job_steps(task_id)
    report, ok = _report(job, task_id, agent, final, steps)
    path = job.report_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for kept in _status_dir(store).glob(f"{task_id}-*"):
        kept.unlink(missing_ok=True)
    last = report["commands"][-1] if report["commands"] else {"command": "-", "exit_code": None}
    again = f" (attempt {final}'s last step had completed; nothing ran again)" if final != attempt else ""
    try:
        if ok:
            store.set_state(
                task_id,
                TaskState.DONE,
                f"job {job.id} passed ({job.dod}){again}; report {path}",
                expect=(TaskState.IN_PROGRESS,),
            )
        else:
            store.set_state(
                task_id,
                TaskState.FAILED,
                f"job {job.id} failed: `{last['command']}` exited {last['exit_code']}{again}; report {path}",
                expect=(TaskState.IN_PROGRESS,),
            )
    except TaskError:
        pass  # cancelled or handed back while it ran: the report says so
    return ok, path


def _run_steps(store: Store, job: Job, task_id: int, attempt: int, agent: str) -> bool:
    """Run the script in order as ``attempt``, recording each step, until a step fails
    the ``dod``; return False when this attempt lost the job before a step (handed
    back, cancelled), so it must not report."""
    for i, cmd in enumerate(job.script):
        status = _status_file(store, task_id, attempt, i)
        status.unlink(missing_ok=True)  # one left by an earlier run of this task (a retry counts attempts anew)
        if not store.job_step_started(task_id, attempt, i, cmd, agent):
            return False
        t0 = time.time()
        code, out = _run_command(cmd, job.workdir, status)
        store.job_step_ended(task_id, attempt, i, code, round(time.time() - t0, 3), out)
        status.unlink(missing_ok=True)
        if not passes(job.dod, code):
            return True
    return True


def _run_command(cmd: str, workdir: str, status: Path) -> tuple[int, str]:
    """Run one step's command in ``workdir`` through :data:`KEEP_STATUS`; return its exit
    code and output (stdout then stderr); -1 when it could not start or ran past
    ``defaults.JOB_STEP_TIMEOUT`` seconds (then the command, its shells and every process
    under them are killed: before, the shell alone was, and the command ran on)."""
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", KEEP_STATUS, "sh", cmd, str(status)],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as e:
        return -1, f"could not run: {e}"
    with proc:
        try:
            out, err = proc.communicate(timeout=defaults.JOB_STEP_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            import psutil  # here: only a step past its time limit needs it

            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(proc.pid).children(recursive=True):  # the command and what it started
                    with contextlib.suppress(psutil.Error):
                        child.kill()
            proc.kill()
            proc.wait()
            partial = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return -1, f"timed out after {defaults.JOB_STEP_TIMEOUT:.0f} s\n{partial}"
    return proc.returncode, out + err


def _status_dir(store: Store) -> Path:
    return store.path.parent.joinpath(*STEP_STATUS)


def _status_file(store: Store, task_id: int, attempt: int, step: int) -> Path:
    """Where the shell of step ``step`` of ``attempt`` keeps its exit code (the directory made here)."""
    return private_dir(_status_dir(store)) / f"{task_id}-{attempt}-{step}"


def _ended_unrecorded(store: Store, task_id: int) -> None:
    """Record the end of every step of the job that its shell saw end but its worker did
    not record (the worker died while the command ran), from the shell's record."""
    for s in store.job_steps(task_id):
        if s["exit_code"] is not None:
            continue
        kept = _status_dir(store) / f"{task_id}-{s['attempt']}-{s['step']}"
        try:
            code = int(kept.read_text(encoding="utf-8"))
            ended = kept.stat().st_mtime
        except (OSError, ValueError):
            continue  # it never ended (killed with its worker), or it runs still
        store.job_step_ended(task_id, s["attempt"], s["step"], code, round(max(0.0, ended - s["started"]), 3), KEPT)


def _attempts(job: Job, steps: list[dict[str, Any]]) -> list[tuple[int, list[dict[str, Any]], str]]:
    """The recorded steps by attempt, in order, each with its outcome: ``passed`` (every
    command ran and met the ``dod``), ``failed`` (one did not meet it) or
    ``interrupted`` (the worker's process ended first)."""
    by_attempt: dict[int, list[dict[str, Any]]] = {}
    for s in steps:
        by_attempt.setdefault(s["attempt"], []).append(s)
    out = []
    for attempt, rows in sorted(by_attempt.items()):
        finished = [r for r in rows if r["exit_code"] is not None]
        if any(not passes(job.dod, r["exit_code"]) for r in finished):
            outcome = "failed"
        elif len(finished) == len(job.script):
            outcome = "passed"
        else:
            outcome = "interrupted"
        out.append((attempt, rows, outcome))
    return out


def _final_attempt(job: Job, steps: list[dict[str, Any]]) -> int | None:
    """The attempt that completed the job (its last step ran to the end, or a step
    failed the ``dod``), if one did."""
    return next((a for a, _, outcome in _attempts(job, steps) if outcome != "interrupted"), None)


def _report(job: Job, task_id: int, agent: str, final: int, steps: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The report: the final attempt's commands at the top (as before attempts were
    counted) and ``attempts``, one entry per attempt up to the final one, with its
    outcome and commands."""
    attempts: list[dict[str, Any]] = []
    result: tuple[list[dict[str, Any]], bool, float] = ([], False, 0.0)
    for attempt, rows, outcome in _attempts(job, steps):
        if attempt > final:
            continue
        cmds = [
            {
                "command": r["command"],
                "exit_code": r["exit_code"],
                "seconds": r["seconds"],
                "output": r["output"]
                if r["exit_code"] is not None
                else "interrupted: the worker's process ended during this step",
            }
            for r in rows
        ]
        attempts.append(
            {
                "attempt": attempt,
                "agent": rows[0]["agent"],
                "started": rfc3339(rows[0]["started"]),
                "outcome": outcome,
                "commands": cmds,
            }
        )
        if attempt == final:
            result = (cmds, outcome == "passed", rows[0]["started"])
    cmds, ok, started = result
    seconds = sum(c["seconds"] or 0 for c in cmds)
    report = {
        "job": job.id,
        "task": task_id,
        "agent": agent,
        "dod": job.dod,
        "passed": ok,
        "attempt": final,
        "started": rfc3339(started or time.time()),
        "seconds": round(seconds, 3),
        "commands": cmds,
        "attempts": attempts,
    }
    return report, ok


def start(store: Store, task_id: int, agent: str, holder: str | None = None) -> tuple[Job, int]:
    """Mark job task ``task_id`` started by ``agent`` and return the job and the
    attempt it runs as; it runs only once per attempt
    (:meth:`~miyabi.work.job_runs.JobRuns.start_job`).

    Raises:
        JobError: the task is not an open job of this agent, or already started.
    """
    try:
        task = store.start_job(task_id, agent, holder)
    except TaskError as e:
        raise JobError(str(e)) from None
    try:
        return Job.parse(json.loads(task.body), f"task {task_id}"), task.attempts
    except ValueError as e:
        raise JobError(f"task {task_id}: the stored job is not valid JSON ({e})") from None
