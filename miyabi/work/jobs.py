"""Jobs: machine-readable work that a ``worker`` agent runs.

``miyabi job submit FILE.json`` stores a job as a task (source ``job``) routed to a
worker agent. A job is JSON: ``id`` (unique: a second job with the same id is
refused), ``kind`` (``run_shell``), ``workdir`` (an existing directory; a relative
one is relative to the job file's directory), ``script`` (a list of shell commands),
``dod`` (the definition of done, such as ``exit_code == 0``) and ``report_path`` (a
relative one is relative to ``workdir``). The controller tells the worker only
``/job <task id>``; the worker loads the job from the task store and runs it only if
that task is a job assigned to this very worker and still open, so text typed into
a worker can never run a command of its own. The worker writes the report (each
command, its exit code and output) to ``report_path`` and marks the task done or
failed by the ``dod``.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.times import rfc3339
from miyabi.work.tasks import Source, Store, TaskError, TaskState

KINDS = ("run_shell",)
DOD_RE = re.compile(r"^\s*exit_code\s*(==|!=)\s*(-?\d+)\s*$")
JOB_COMMAND = re.compile(r"^/job (\d+)$")


class JobError(TaskError):
    """A job file is invalid, or a job cannot run."""


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
    """

    id: str
    kind: str
    workdir: str
    script: tuple[str, ...]
    dod: str
    report_path: str

    @classmethod
    def parse(cls, data: Any, origin: str) -> Job:
        """Check a job's fields.

        Raises:
            JobError: one line naming the file and field and what to fix.
        """
        if not isinstance(data, dict):
            raise JobError(f"{origin}: a job must be a JSON object")
        need = ("id", "kind", "workdir", "script", "dod", "report_path")
        missing = [k for k in need if k not in data]
        if missing:
            raise JobError(f"{origin}: missing field(s) {', '.join(missing)}")
        extra = sorted(set(data) - set(need))
        if extra:
            raise JobError(f"{origin}: unknown field(s) {', '.join(extra)}; a job has {', '.join(need)}")
        if data["kind"] not in KINDS:
            raise JobError(f"{origin}: kind {data['kind']!r} is not supported; use run_shell")
        script = data["script"]
        if not isinstance(script, list) or not script or not all(isinstance(c, str) and c.strip() for c in script):
            raise JobError(f"{origin}: script must be a non-empty list of commands (text)")
        if not isinstance(data["dod"], str) or not DOD_RE.match(data["dod"]):
            raise JobError(f"{origin}: dod {data['dod']!r} is not understood; use exit_code == 0 (or != N)")
        for k in ("id", "workdir", "report_path"):
            if not isinstance(data[k], str) or not data[k].strip():
                raise JobError(f"{origin}: {k} must be text")
        return cls(str(data["id"]), data["kind"], data["workdir"], tuple(script), data["dod"], data["report_path"])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "workdir": self.workdir, "script": list(self.script),
                "dod": self.dod, "report_path": self.report_path}

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
        JobError: unreadable or invalid file, or a missing workdir.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise JobError(f"{path}: not readable JSON ({e})") from None
    job = Job.parse(data, str(path))
    workdir = Path(job.workdir).expanduser()
    if not workdir.is_absolute():
        workdir = path.resolve().parent / workdir
    if not workdir.is_dir():
        raise JobError(f"{path}: workdir {job.workdir!r} is not a directory ({workdir}); create it or fix workdir")
    return replace(job, workdir=str(workdir))


def submit(store: Store, path: Path, agent: str) -> tuple[int, Job]:
    """Store the job in ``path`` as a task for ``agent``; return the task id and the job.

    Raises:
        JobError: unreadable or invalid file, a missing workdir, or an id that an
            earlier job has.
    """
    job = load(path)
    try:
        t = store.add(f"job {job.id}", json.dumps(job.to_json()), ["job", f"agent:{agent}"], source=Source.JOB, key=job.id)
    except TaskError as e:
        raise JobError(f"{path}: {e}") from None
    return t.id, job


def run_assigned(store: Store, task_id: int, agent: str) -> tuple[bool, Path]:
    """Run job task ``task_id`` if it is a job assigned to ``agent`` and open; write its
    report and mark the task done or failed. Returns (passed, report path).

    Raises:
        JobError: the task is not an open job of this agent.
    """
    job = start(store, task_id, agent)
    steps: list[dict[str, Any]] = []
    ok = True
    started = time.time()
    for cmd in job.script:
        now = store.get(task_id)
        if now.state != TaskState.IN_PROGRESS or now.agent != agent:
            steps.append({"command": cmd, "exit_code": None, "seconds": 0, "output": f"not run: the task became {now.state}"})
            ok = False
            break
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, shell=True, cwd=job.workdir, capture_output=True, text=True,
                                  timeout=defaults.JOB_STEP_TIMEOUT, check=False)
            code, out = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            partial = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            code, out = -1, f"timed out after {defaults.JOB_STEP_TIMEOUT:.0f} s\n{partial}"
        except OSError as e:
            code, out = -1, f"could not run: {e}"
        steps.append({"command": cmd, "exit_code": code, "seconds": round(time.time() - t0, 3), "output": out})
        if not passes(job.dod, code):
            ok = False
            break
    report = {"job": job.id, "task": task_id, "agent": agent, "dod": job.dod, "passed": ok,
              "started": rfc3339(started), "seconds": round(time.time() - started, 3), "commands": steps}
    path = job.report_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    last = steps[-1]
    try:
        if ok:
            store.set_state(task_id, TaskState.DONE, f"job {job.id} passed ({job.dod}); report {path}", expect=(TaskState.IN_PROGRESS,))
        else:
            store.set_state(task_id, TaskState.FAILED, f"job {job.id} failed: `{last['command']}` exited {last['exit_code']}; report {path}",
                            expect=(TaskState.IN_PROGRESS,))
    except TaskError:
        pass  # cancelled while it ran: the report says so
    return ok, path


def start(store: Store, task_id: int, agent: str) -> Job:
    """Mark job task ``task_id`` started by ``agent`` and return the job; it runs only
    once per assignment (:meth:`~miyabi.work.tasks.Store.start_job`).

    Raises:
        JobError: the task is not an open job of this agent, or already started.
    """
    try:
        task = store.start_job(task_id, agent)
    except TaskError as e:
        raise JobError(str(e)) from None
    try:
        return Job.parse(json.loads(task.body), f"task {task_id}")
    except ValueError as e:
        raise JobError(f"task {task_id}: the stored job is not valid JSON ({e})") from None
