"""miyabi upgrading itself (``self: {pool: NAME}``), behind a health probe, with rollback.

The self pool's ``repo`` is miyabi's own checkout: the one the running controller's code
comes from. Its tasks go through the local pipeline as any other (their checks run in
a staging worktree; only a merge that passed them moves the base branch, and the
checkout with it). Once such a merge landed:

1. the controller records the upgrade in ``run/upgrade.json`` (the task, the repository,
   the base branch, the commits before and after), logs the event ``self-upgrade``
   and exits with :data:`~miyabi.controller.keepalive.UPGRADE_EXIT`;
2. the keep-alive starts a controller at once: a new process, so it runs the code the
   checkout now holds;
3. the keep-alive probes it (:func:`probe`) for up to ``defaults.SELF_PROBE_TIMEOUT``
   seconds: the controller is running and runs the merged commit (it records the commit
   of its code in ``run/code.json`` at start: :func:`record_code`); it answers a
   request sent through ``run/requests/`` (the round trip a ``miyabi restart`` makes:
   written by one process, seen by the controller's inotify watch, answered by its main
   loop), and its answer says that every agent of the layout is supervised (the
   watchdog's thread runs and knows it) and has its deliverer's thread running;
4. a pass: the event ``self-upgraded``. A failure (the controller exited, or no healthy
   answer in time): the keep-alive stops it, moves the base branch back to the commit
   before the merge (:meth:`~miyabi.pipeline.git.Repository.retreat`: a
   compare-and-swap; where the branch is checked out, ``git reset --keep``, refused
   when that checkout has local changes), starts the controller again (the old code),
   files a fix task with the probe's evidence (:func:`~miyabi.pipeline.followups.file_fix`)
   and logs ``self-rolled-back``.

Under systemd (``miyabi service``) there is no keep-alive: the unit starts the
controller again on the merged code, without a probe.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from miyabi import defaults

CODE_FILE = "code.json"
"""Under ``run/``: the running controller's ``pid`` and where its code comes from
(``path``, the package's directory; ``checkout`` and ``commit`` when it is a git checkout)."""

UPGRADE_FILE = "upgrade.json"
"""Under ``run/``: the last upgrade (``task``, ``repo``, ``base``, ``before``, ``after``,
``state``: pending, upgraded, rolled-back; ``evidence``)."""

PROBE = "probe-"
"""Prefix of the probe's requests under ``run/requests/`` (the answer: ``done-probe-…``)."""


def code_origin() -> dict[str, Any]:
    """Where this process's miyabi code comes from: ``path`` (the package's directory),
    and ``checkout`` and ``commit`` (``git rev-parse HEAD``) when its parent directory
    is a git checkout (None otherwise)."""
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent
    commit: str | None = None
    if (checkout / ".git").exists():
        try:
            done = subprocess.run(
                ["git", "-C", str(checkout), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=defaults.GIT_TIMEOUT,
                check=False,
            )
            commit = done.stdout.strip() or None if done.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            commit = None
    return {"path": str(package), "checkout": str(checkout) if commit else None, "commit": commit}


def record_code(run: Path, pid: int) -> dict[str, Any]:
    """Record where the code of controller ``pid`` comes from (:func:`code_origin`) in
    ``run/code.json``; return it.

    Raises:
        OSError: the file cannot be written.
    """
    from miyabi.files import write_atomic

    data = {"pid": pid, **code_origin()}
    write_atomic(run / CODE_FILE, json.dumps(data))
    return data


def read_code(run: Path, pid: int | None = None) -> dict[str, Any] | None:
    """What :func:`record_code` wrote (for controller ``pid`` when given), or None."""
    try:
        data = json.loads((run / CODE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or (pid is not None and data.get("pid") != pid):
        return None
    return data


def read_upgrade(run: Path) -> dict[str, Any]:
    """The last upgrade as recorded ({} when none)."""
    try:
        data = json.loads((run / UPGRADE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_upgrade(run: Path, data: dict[str, Any]) -> None:
    """Record the upgrade ``data`` (see :data:`UPGRADE_FILE`).

    Raises:
        OSError: the file cannot be written.
    """
    from miyabi.files import write_atomic

    write_atomic(run / UPGRADE_FILE, json.dumps(data))


def probe_answer(commit: str | None, agents: dict[str, dict[str, bool]]) -> str:
    """The controller's answer to a probe: its pid, the commit of its code, and per
    agent whether it is ``supervised`` and ``delivering`` (see :func:`judge`)."""
    return json.dumps({"pid": os.getpid(), "commit": commit, "agents": agents})


def judge(answer: dict[str, Any], expected: str) -> str | None:
    """What is wrong with a probe's ``answer`` for a controller that must run commit
    ``expected`` (None: healthy)."""
    if answer.get("commit") != expected:
        return f"the controller runs commit {answer.get('commit')!r}, not the merged {expected[:12]}"
    agents = answer.get("agents")
    if not isinstance(agents, dict):
        return "the controller's answer names no agents"
    unsupervised = sorted(n for n, a in agents.items() if not (isinstance(a, dict) and a.get("supervised")))
    if unsupervised:
        return f"not supervised: {', '.join(unsupervised)}"
    silent = sorted(n for n, a in agents.items() if not a.get("delivering"))
    if silent:
        return f"no delivery to: {', '.join(silent)}"
    return None


def log_tail(home: Path, lines: int = defaults.SELF_PROBE_LOG_LINES) -> str:
    """The last ``lines`` lines of ``logs/controller.log`` ('' when unreadable)."""
    try:
        with open(home / "logs" / "controller.log", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def probe(
    home: Path,
    child: subprocess.Popen[bytes],
    expected: str,
    pause: Callable[[float], None],
    gone: Callable[[], bool],
    timeout: float = defaults.SELF_PROBE_TIMEOUT,
) -> tuple[bool, str]:
    """Probe the controller ``child`` (started on the merged code, commit ``expected``)
    until it is healthy or ``timeout`` seconds passed: (ok, one line of evidence).

    ``pause(seconds)`` waits (the keep-alive's wait, which a signal ends); ``gone()``
    says the keep-alive is told to stop (then the probe ends, not ok)."""
    requests = home / "run" / "requests"
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last = "it did not answer"
    name = ""
    try:
        while time.monotonic() < deadline and not gone():
            status = child.poll()
            if status is not None:
                how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
                return (
                    False,
                    f"the controller on the merged code ended ({how}) after {time.monotonic() - started:.1f} s",
                )
            if not name:
                from miyabi.files import private_dir, write_atomic

                name = f"{PROBE}{uuid.uuid4().hex[:12]}"
                write_atomic(private_dir(requests) / name, "probe\n")
            done = requests / f"done-{name}"
            if done.exists():
                try:
                    answer = json.loads(done.read_text(encoding="utf-8"))
                except (OSError, ValueError) as e:
                    answer = {"error": str(e)}
                done.unlink(missing_ok=True)
                name = ""  # the next look asks again
                wrong = judge(answer if isinstance(answer, dict) else {}, expected)
                if wrong is None:
                    agents = sorted(answer.get("agents", {}))
                    return True, (
                        f"controller {answer.get('pid')} runs {expected[:12]}, answered in "
                        f"{time.monotonic() - started:.1f} s; supervised and delivering: {', '.join(agents) or 'none'}"
                    )
                last = wrong
            pause(defaults.SELF_PROBE_POLL)
        return False, f"no healthy answer within {timeout:.0f} s: {last}"
    finally:
        if name:
            (requests / name).unlink(missing_ok=True)


def roll_back(home: Path, up: dict[str, Any], evidence: str) -> tuple[bool, str]:
    """After a failed probe: move the base branch back to the commit before the merge
    and file a fix task with the probe's ``evidence``. Returns (whether the branch
    moved back, one line saying what was done)."""
    from miyabi.pipeline.followups import file_fix
    from miyabi.pipeline.git import GitError, Repository
    from miyabi.work.store import Store

    repo, base, before, after = Path(up["repo"]), str(up["base"]), str(up["before"]), str(up["after"])
    try:
        Repository(repo).retreat(base, before, after)
        moved, said = True, f"{base} moved back to {before[:12]}"
    except GitError as e:
        moved, said = False, f"{base} not moved back: {e}"
    tail = log_tail(home)
    body = (
        f"Task {up.get('task')}'s merge into {base} ({after[:12]}) passed its checks, but the controller on it "
        f"failed the health probe: {evidence}.\n{said}.\n\n"
        f"The controller's log ended with:\n```\n{tail}\n```"
    )
    store = Store.of_home(home)
    try:
        filed = file_fix(
            store,
            None,
            None,
            home,
            f"self-upgrade to {after} failed its probe",
            f"Fix: miyabi's upgrade to {after[:12]} failed its health probe",
            body,
        )
    finally:
        store.close()
    return moved, f"{said}; fix {filed or 'filed before'}"
