"""Jobs: machine-readable work that a ``worker`` agent runs.

``miyabi job submit FILE.json`` stores a job as a task (source ``job``) routed to a
worker agent. A job is JSON: ``id``, ``kind`` (``run_shell``), ``workdir``,
``script`` (a list of shell commands), ``dod`` (the definition of done, such as
``exit_code == 0``) and ``report_path``. The controller tells the worker only
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miyabi.tasks import Store, TaskError

KINDS = ("run_shell",)
DOD_RE = re.compile(r"^\s*exit_code\s*(==|!=)\s*(-?\d+)\s*$")
JOB_COMMAND = re.compile(r"^/job (\d+)$")
STEP_TIMEOUT = 3600.0
"""Longest one command of a job may run, in seconds."""


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


def passes(dod: str, exit_code: int) -> bool:
    """Whether one command's ``exit_code`` satisfies ``dod``."""
    m = DOD_RE.match(dod)
    if not m:
        return False
    want = int(m.group(2))
    return exit_code == want if m.group(1) == "==" else exit_code != want


def submit(store: Store, path: Path, agent: str) -> int:
    """Store the job in ``path`` as a task for ``agent``; return the task id.

    Raises:
        JobError: unreadable or invalid file.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise JobError(f"{path}: not readable JSON ({e})") from None
    job = Job.parse(data, str(path))
    t = store.add(f"job {job.id}", json.dumps(job.to_json()), ["job", f"agent:{agent}"], source="job")
    return t.id


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
        if now.state != "in_progress" or now.agent != agent:
            steps.append({"command": cmd, "exit_code": None, "seconds": 0, "output": f"not run: the task became {now.state}"})
            ok = False
            break
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, shell=True, cwd=job.workdir, capture_output=True, text=True, timeout=STEP_TIMEOUT)
            code, out = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            partial = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            code, out = -1, f"timed out after {STEP_TIMEOUT:.0f} s\n{partial}"
        except OSError as e:
            code, out = -1, f"could not run: {e}"
        steps.append({"command": cmd, "exit_code": code, "seconds": round(time.time() - t0, 3), "output": out})
        if not passes(job.dod, code):
            ok = False
            break
    report = {"job": job.id, "task": task_id, "agent": agent, "dod": job.dod, "passed": ok,
              "started": started, "seconds": round(time.time() - started, 3), "commands": steps}
    path = Path(job.workdir, job.report_path) if not Path(job.report_path).is_absolute() else Path(job.report_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    last = steps[-1]
    try:
        if ok:
            store.set_state(task_id, "done", f"job {job.id} passed ({job.dod}); report {path}", expect=("in_progress",))
        else:
            store.set_state(task_id, "failed", f"job {job.id} failed: `{last['command']}` exited {last['exit_code']}; report {path}", expect=("in_progress",))
    except TaskError:
        pass  # cancelled while it ran: the report says so
    return ok, path


def start(store: Store, task_id: int, agent: str) -> Job:
    """Mark job task ``task_id`` started by ``agent``, in one transaction with the
    checks: a job of source ``job``, assigned to ``agent``, and not started yet in
    this assignment (so it never runs twice).

    Raises:
        JobError: the task is not an open job of this agent, or already started.
    """
    with store.tx() as db:
        row = db.execute("SELECT source, agent, state, body FROM tasks WHERE id=?", (task_id,)).fetchone()
        if row is None or row["source"] != "job" or row["agent"] != agent or row["state"] not in ("assigned", "in_progress"):
            raise JobError(f"task {task_id} is not an open job assigned to {agent}; nothing was run")
        last_assigned = db.execute("SELECT MAX(id) FROM events WHERE task=? AND state='assigned'", (task_id,)).fetchone()[0] or 0
        started = db.execute(
            "SELECT 1 FROM events WHERE task=? AND id>? AND reason LIKE 'job started%'", (task_id, last_assigned)
        ).fetchone()
        if started:
            raise JobError(f"job task {task_id} was already started in this assignment; nothing was run")
        db.execute("UPDATE tasks SET state='in_progress', updated=? WHERE id=?", (store.clock(), task_id))
        db.execute("INSERT INTO events (task, time, state, agent, reason) VALUES (?,?,?,?,?)",
                   (task_id, store.clock(), "in_progress", agent, f"job started by {agent}"))
        body = row["body"]
    try:
        return Job.parse(json.loads(body), f"task {task_id}")
    except ValueError as e:
        raise JobError(f"task {task_id}: the stored job is not valid JSON ({e})") from None
