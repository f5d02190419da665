"""The deploy stage: a repository's commit checked out, deployed, served and checked.

:meth:`Deployer.deploy` does what ``.miyabi.yml`` (read at the commit deployed, which has
landed on the base branch: an agent's branch cannot change it) says::

    deploy: {run: [npm ci, npm run build], timeout: 10m}
    serve: "node server.js --port 8080"
    health: {url: "http://127.0.0.1:8080/", status: 200, timeout: 30s}
    rollback: true

1. the commit is checked out, detached, in the deploy checkout ``deploy/<name>/`` under the
   home (a git worktree of the repository; ignored files such as ``node_modules/`` are kept
   from one deploy to the next, everything else is exactly the commit);
2. the ``deploy:`` commands run there like the verify gate's checks (a process group each,
   a timeout, no secrets in their environment, output to ``logs/deploy/<name>-<time>.log``);
3. ``serve:`` is (re)started in tmux window ``serve-<name>`` (:mod:`miyabi.tmux.service`),
   its output appended to ``logs/serve-<name>.log``;
4. ``health:`` is checked until it passes, or its ``timeout`` runs out, or the service dies.

What was deployed is recorded in ``run/deploy/<name>.json`` (:class:`Deployment`), with the
last commit that passed its health check, for the monitor (:mod:`miyabi.pipeline.monitoring`)
and for ``rollback: true``. Events: ``deployed``, ``deploy-failed``.

:func:`run_check` runs one check (``health:``, or a task spec's ``acceptance``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from miyabi import defaults
from miyabi.errors import MiyabiError, TmuxError
from miyabi.events import EventKind, append_event
from miyabi.files import private_dir, write_atomic
from miyabi.pipeline import convention as conv
from miyabi.pipeline.convention import ConventionError, Health, Step
from miyabi.pipeline.git import GitError, Repository
from miyabi.pipeline.instances import slug
from miyabi.pipeline.locks import RepoLocks
from miyabi.pipeline.verify import StepResult, clean_env, run_steps
from miyabi.supervision.processes import alive, zombie_exit
from miyabi.tmux.panes import Runner
from miyabi.tmux.service import ServicePane, find_service, service_screen, start_service, stop_service

log = logging.getLogger("miyabi.pipeline.deploy")

__all__ = ["CheckResult", "DeployError", "DeployResult", "Deployer", "Deployment", "Health", "run_check"]


class DeployError(MiyabiError):
    """A deploy cannot do what ``.miyabi.yml`` asks (``serve:`` without a tmux session)."""


# -- one check


@dataclass(frozen=True)
class CheckResult:
    """How one check went.

    Attributes:
        ok: it passed.
        evidence: one line: what was checked and what came back (the status or exit code,
            and the output's last line).
        output: the last lines of its output (an HTTP body, a command's output).
    """

    ok: bool
    evidence: str
    output: tuple[str, ...] = ()


def as_check(check: Health | Mapping[str, Any], where: str = "check") -> Health:
    """A :class:`Health` from itself or from its mapping form (``{url, status}``, ``{run}``).

    Raises:
        ConventionError: a malformed mapping.
    """
    return check if isinstance(check, Health) else Health.parse(dict(check), where)


def run_check(
    check: Health | Mapping[str, Any],
    cwd: Path,
    timeout: float = defaults.HEALTH_REQUEST_TIMEOUT,
    hide: Iterable[str] = defaults.SECRET_ENV,
) -> CheckResult:
    """Run one check: ``{url, status}`` is an HTTP GET (redirects not followed) that must
    answer ``status`` (default 200) within ``timeout`` seconds; ``{run: cmd}`` is a shell
    command run in ``cwd`` (a process group, ``hide``'s variables removed from its
    environment) that must exit 0 within ``timeout`` seconds. Never raises for a failing
    check: a refused connection or a malformed check is a failed result that says so."""
    try:
        c = as_check(check)
    except ConventionError as e:
        return CheckResult(False, str(e))
    if c.url is not None:
        return _get(c, timeout)
    assert c.run is not None
    with tempfile.TemporaryDirectory(prefix="miyabi-check-") as tmp:
        run = run_steps([Step("check", c.run, timeout)], cwd, Path(tmp) / "check.log", clean_env(hide))
    result = run.results[0]
    tail = output_of(result)
    said = f": {tail[-1][:200]}" if tail else ""
    if result.passed:
        return CheckResult(True, f"run: {c.run} exited 0{said}", tail)
    how = (
        f"ran past {timeout:g} s"
        if result.timed_out
        else f"exited {result.exit_code}"
        if result.exit_code is not None
        else "was stopped"
    )
    return CheckResult(False, f"run: {c.run} {how}{said}", tail)


def output_of(result: StepResult) -> tuple[str, ...]:
    """A command's last non-blank output lines (at most ``defaults.HEALTH_EVIDENCE_LINES``),
    without the line :func:`~miyabi.pipeline.verify.run_steps` writes after it."""
    mark = f"# {result.describe()}"
    return tuple(line for line in result.tail if line.strip() and line != mark)[-defaults.HEALTH_EVIDENCE_LINES :]


def _get(c: Health, timeout: float) -> CheckResult:
    assert c.url is not None
    try:
        r = httpx.get(c.url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as e:
        return CheckResult(False, f"GET {c.url} failed: {type(e).__name__}: {e or 'no answer'}")
    lines = tuple(line for line in r.text[-8192:].splitlines() if line.strip())[-defaults.HEALTH_EVIDENCE_LINES :]
    ok = r.status_code == c.status
    said = f"GET {c.url} answered {r.status_code}" + ("" if ok else f", expected {c.status}")
    return CheckResult(ok, said + (f": {lines[-1][:200]}" if lines and not ok else ""), lines)


# -- what was deployed


@dataclass(frozen=True)
class Deployment:
    """What a repository's deploy checkout holds and serves (``run/deploy/<name>.json``).

    Attributes:
        name: the deploy's name (the repository's, see :meth:`Deployer.name_of`).
        repo: the repository's path.
        commit: the commit deployed last (whether or not it passed).
        ok: the last deploy passed (its commands, its service's start, its health check).
        time: when it was deployed (Unix time).
        story: the story it was deployed for, or None.
        good: the commits that passed their health check, oldest first (each once, the
            last ``defaults.DEPLOY_GOOD_KEPT``).
        serve: the service's command, or None.
        health: the health check as a mapping, or None.
        rollback: ``rollback: true`` in its ``.miyabi.yml``.
    """

    name: str
    repo: str
    commit: str
    ok: bool
    time: float
    story: int | None = None
    good: tuple[str, ...] = ()
    serve: str | None = None
    health: dict[str, Any] | None = None
    rollback: bool = False

    @property
    def last_good(self) -> str | None:
        """The last commit that passed its health check (None: none yet)."""
        return self.good[-1] if self.good else None

    @property
    def rollback_to(self) -> str | None:
        """The last commit other than the one deployed that passed (what ``rollback: true``
        deploys when this one keeps failing), or None."""
        return next((c for c in reversed(self.good) if c != self.commit), None)

    def passing(self, commit: str) -> Deployment:
        """This record with ``commit`` the last that passed."""
        good = (*(c for c in self.good if c != commit), commit)[-defaults.DEPLOY_GOOD_KEPT :]
        return replace(self, good=good)

    @property
    def check(self) -> Health | None:
        return Health(**self.health) if self.health is not None else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["good"] = tuple(known.get("good") or ())
        return cls(**known)


@dataclass(frozen=True)
class DeployResult:
    """How one deploy went.

    Attributes:
        ok: the commands passed, the service started and its health check passed.
        commit: the commit deployed (its full sha when it could be resolved).
        evidence: one line: what passed, or what failed and how.
        log: the deploy's log (the commands' output, the checks), or None when it did not
            get that far.
        checkout: the deploy checkout (where acceptance ``run:`` checks run), or None.
    """

    ok: bool
    commit: str
    evidence: str
    log: Path | None = None
    checkout: Path | None = None


class Deployer:
    """Deploys a repository's commits into checkouts under the home and serves them.

    Thread-safe: one deploy per repository at a time (others wait); the monitor takes the
    same lock (:meth:`busy`) to restart a service.

    Args:
        home: the miyabi home.
        tmux: miyabi's tmux server (a :class:`~miyabi.tmux.runner.Tmux`), for ``serve:``;
            None: a ``serve:`` deploy fails, saying so.
        session: miyabi's tmux session (where the ``serve-<name>`` windows go).
        hide: the layout's secret variables (``Layout.secret_env``): no command or service
            gets them.
        stop: set when the controller stops (a running command is ended; the deploy fails).
        locks: the repositories' locks (share the pipeline's), held while git runs.
        clock: the Unix time.
    """

    def __init__(
        self,
        home: Path,
        tmux: Runner | None = None,
        session: str | None = None,
        hide: Iterable[str] = defaults.SECRET_ENV,
        stop: threading.Event | None = None,
        locks: RepoLocks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.home = home
        self.tmux = tmux
        self.session = session
        self.hide = frozenset(hide)
        self.stop = stop or threading.Event()
        self.locks = locks or RepoLocks(home)
        self.clock = clock
        self.track = home / "run" / "checks"
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()

    # -- names and places

    @staticmethod
    def name_of(repo: Path) -> str:
        """``<repo-dir-slug>-<6 hex of its path>``: a window and file name, unique per repository."""
        path = str(repo.resolve())
        return f"{slug(repo.resolve().name, 24)}-{hashlib.sha1(path.encode()).hexdigest()[:6]}"

    def checkout(self, repo: Path) -> Path:
        """The repository's deploy checkout: ``deploy/<name>/`` under the home."""
        return self.home / defaults.DEPLOY_DIR / self.name_of(repo)

    def record_path(self, name: str) -> Path:
        return self.home / "run" / "deploy" / f"{name}.json"

    def service_log(self, name: str) -> Path:
        """``logs/serve-<name>.log``: the service's output."""
        return self.home / "logs" / f"serve-{name}.log"

    def lock(self, name: str) -> threading.RLock:
        """The lock a deploy (and a restart by the monitor) of ``name`` holds."""
        with self._guard:
            return self._locks.setdefault(name, threading.RLock())

    # -- records

    def deployments(self) -> list[Deployment]:
        """What was deployed, one per repository (unreadable records are skipped)."""
        out: list[Deployment] = []
        folder = self.home / "run" / "deploy"
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                out.append(Deployment.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                log.warning("deploy record %s is unreadable; skipped", path)
        return out

    def deployment(self, name: str) -> Deployment | None:
        try:
            return Deployment.from_json(json.loads(self.record_path(name).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _save(self, d: Deployment) -> None:
        private_dir(self.record_path(d.name).parent)
        write_atomic(self.record_path(d.name), json.dumps(asdict(d), indent=1) + "\n")

    def passed(self, name: str, commit: str) -> None:
        """Record that ``commit`` of ``name`` passed its health check (the monitor's
        checks count): it is the commit ``rollback: true`` goes back to."""
        with self.lock(name):
            d = self.deployment(name)
            if d is not None and d.commit == commit and d.last_good != commit:
                self._save(d.passing(commit))

    # -- the service

    def service(self, name: str) -> ServicePane | None:
        """The service's pane, or None (no session, no pane, no tmux).

        Raises:
            TmuxError: tmux did not answer.
        """
        if self.tmux is None or self.session is None:
            return None
        return find_service(self.tmux, self.session, name)

    def restart(self, d: Deployment) -> ServicePane:
        """Start ``d``'s service again in its pane (in place), from its checkout.

        Raises:
            TmuxError: tmux refused.
            DeployError: there is no tmux session.
        """
        if self.tmux is None or self.session is None or d.serve is None:
            raise DeployError(f"service {d.name} has no tmux session to run in")
        with self.lock(d.name):
            return start_service(
                self.tmux,
                self.session,
                d.name,
                d.serve,
                self.checkout(Path(d.repo)),
                self.service_log(d.name),
                self.hide,
            )

    def ended(self, name: str) -> tuple[ServicePane | None, str | None]:
        """The service's pane and how its process ended (None: it runs; see
        :func:`how_ended`). A process reaped before its status could be read is asked
        of tmux again for up to ``defaults.EXIT_STATUS_WAIT`` seconds, until tmux
        records its exit status or signal.

        Raises:
            TmuxError: tmux did not answer.
        """
        deadline = time.monotonic() + defaults.EXIT_STATUS_WAIT
        while True:
            pane = self.service(name)
            how = how_ended(pane)
            if how != "exited" or time.monotonic() >= deadline:
                return pane, how
            time.sleep(0.02)

    def last_lines(self, name: str, lines: int = defaults.HEALTH_EVIDENCE_LINES) -> list[str]:
        """The service's last output lines: its pane's (a dead pane keeps its last
        screen), else its log's."""
        try:
            pane = self.service(name)
        except TmuxError:
            pane = None
        if pane is not None:
            shown = service_screen(self.tmux, pane, lines) if self.tmux is not None else []
            if shown:
                return shown
        try:
            with open(self.service_log(name), "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 65536))
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]

    # -- a deploy

    def deploy(self, repo: Path, commit: str, story: int | None = None, rollback: bool = True) -> DeployResult:
        """Deploy ``commit`` of ``repo`` (see the module's docstring): check it out in the
        deploy checkout, run ``deploy:``, (re)start ``serve:``, wait for ``health:``.
        When that fails and its ``.miyabi.yml`` says ``rollback: true`` (and ``rollback``
        is left True), the last other commit that passed is deployed again at once, so the
        service runs while the failure is fixed; the result stays the failure, its evidence
        saying how the rollback went. Blocks (run it on a worker thread) for as long as the
        commands and the health check's ``timeout`` take; one deploy of a repository at a
        time.

        Returns:
            the result; a failure's ``evidence`` says what failed in one line (a bad
            ``.miyabi.yml``, git, a command, the service's exit, the health check).
        """
        name = self.name_of(repo)
        with self.lock(name):
            result = self._told(repo, name, story, self._deploy(repo, name, commit, story))
            d = self.deployment(name) if not result.ok and rollback else None
            if d is not None and d.rollback and d.commit == result.commit and d.rollback_to is not None:
                back = self._told(repo, name, story, self._deploy(repo, name, d.rollback_to, story))
                how = "it passes" if back.ok else f"that failed too: {back.evidence}"
                result = replace(result, evidence=f"{result.evidence}; rolled back to {back.commit[:12]}: {how}")
        return result

    def _told(self, repo: Path, name: str, story: int | None, result: DeployResult) -> DeployResult:
        """``result``, told in the event log (``deployed`` or ``deploy-failed``) and the log."""
        fields = {"name": name, "repo": str(repo), "commit": result.commit, "story": story, "log": result.log}
        if result.ok:
            append_event(self.home, EventKind.DEPLOYED, **fields, evidence=result.evidence)
            log.info("deployed %s at %s: %s", name, result.commit[:12], result.evidence)
        else:
            append_event(self.home, EventKind.DEPLOY_FAILED, **fields, evidence=result.evidence)
            log.warning("deploy of %s at %s failed: %s", name, result.commit[:12], result.evidence)
        return result

    def _deploy(self, repo: Path, name: str, commit: str, story: int | None) -> DeployResult:
        path = self.checkout(repo)
        try:
            with self.locks.repo(repo):
                g = Repository(repo, self.hide)
                sha = g.sha(commit)
                found = conv.load(lambda rel: g.read_at(sha, rel))
                self._check_out(g, path, sha)
        except (GitError, ConventionError) as e:
            return DeployResult(False, commit, str(e))
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock()))
        logfile = self.home / "logs" / "deploy" / f"{name}-{stamp}-{sha[:8]}.log"
        header = [f"deploy of {repo} at {sha}" + (f" for story {story}" if story is not None else ""), f"in {path}"]
        run = run_steps(found.stage(conv.DEPLOY), path, logfile, clean_env(self.hide), header, self.stop, self.track)
        earlier = self.deployment(name)
        record = Deployment(
            name,
            str(repo),
            sha,
            False,
            self.clock(),
            story,
            earlier.good if earlier is not None else (),
            found.serve,
            asdict(found.health) if found.health is not None else None,
            found.rollback,
        )

        def failed(why: str) -> DeployResult:
            self._save(record)
            _note(logfile, why)
            return DeployResult(False, sha, why, logfile, path)

        if run.stopped:
            return failed("the deploy was stopped (the controller stops)")
        if not run.passed:
            bad = run.failed
            assert bad is not None
            tail = output_of(bad)
            return failed(f"{bad.describe()}" + (f": {tail[-1][:200]}" if tail else "") + f" (log: {logfile})")
        try:
            pane = self._serve(found.serve, name, path, logfile)
        except (TmuxError, DeployError) as e:
            return failed(f"could not start serve: {found.serve}: {e}")
        check = self._wait_healthy(found, name, path)
        if check is not None:
            _note(logfile, ("passed: " if check.ok else "failed: ") + check.evidence, check.output)
            if not check.ok:
                return failed(check.evidence + f" (log: {logfile})")
        record = replace(record, ok=True).passing(sha)
        self._save(record)
        if not found.deploys:
            return DeployResult(
                True, sha, f"nothing to deploy: no deploy:, serve: or health: in {conv.FILE}", logfile, path
            )
        what = [f"{len(run.results)} deploy command(s) passed"]
        if pane is not None:
            what.append(f"serving in pane {pane.pane_id}")
        if check is not None:
            what.append(check.evidence)
        return DeployResult(True, sha, "; ".join(what), logfile, path)

    def _serve(self, serve: str | None, name: str, path: Path, logfile: Path) -> ServicePane | None:
        """(Re)start ``serve`` as service ``name`` in ``path``; without one, stop the
        service an earlier deploy started.

        Raises:
            TmuxError: tmux refused.
            DeployError: there is no tmux session to serve in.
        """
        if serve is None:
            if self.tmux is not None and self.session is not None and stop_service(self.tmux, self.session, name):
                _note(logfile, "serve: is gone from .miyabi.yml: the service that ran was stopped")
            return None
        if self.tmux is None or self.session is None:
            raise DeployError("no tmux session to serve in; deploy from the controller (miyabi up)")
        pane = start_service(self.tmux, self.session, name, serve, path, self.service_log(name), self.hide)
        _note(logfile, f"serving: {serve} (pane {pane.pane_id}, pid {pane.pid})")
        return pane

    def _check_out(self, g: Repository, path: Path, sha: str) -> None:
        """``path`` a detached worktree of ``g`` at ``sha``: made when missing, else moved
        there (changes and untracked files thrown away, ignored ones kept)."""
        known = path.is_dir() and (path / ".git").exists()
        if known:
            try:
                Repository(path, self.hide).reset_detached(sha, keep_ignored=True)
                return
            except GitError:
                g.remove_worktree(path)  # not a worktree of this repository any more: made again
        elif path.exists():
            g.remove_worktree(path)
        private_dir(path.parent)
        g.add_detached(path, sha)

    def _wait_healthy(self, found: conv.Convention, name: str, path: Path) -> CheckResult | None:
        """Check ``health:`` every ``defaults.HEALTH_POLL`` s until it passes, its timeout
        runs out or the service dies (None: no ``health:`` and no ``serve:``)."""
        health = found.health
        if health is None:
            if found.serve is None:
                return None
            dead = self._dead(name)
            return CheckResult(dead is None, dead or "the service runs (no health: to check)")
        deadline = time.monotonic() + health.timeout
        while True:
            left = deadline - time.monotonic()
            result = run_check(health, path, max(0.5, min(defaults.HEALTH_REQUEST_TIMEOUT, left)), self.hide)
            if result.ok:
                return result
            if found.serve is not None:
                dead = self._dead(name)
                if dead is not None:
                    return CheckResult(False, f"{dead} before {health.describe()} passed", result.output)
            if time.monotonic() >= deadline:
                return CheckResult(False, f"{result.evidence} ({health.timeout:g} s after the deploy)", result.output)
            if self.stop.wait(min(defaults.HEALTH_POLL, max(0.0, deadline - time.monotonic()))):
                return CheckResult(False, "the deploy was stopped (the controller stops)")

    def _dead(self, name: str) -> str | None:
        """How the service ended, with its last line, when its pane is dead (None: it runs)."""
        try:
            _, how = self.ended(name)
        except TmuxError as e:
            return f"tmux did not answer: {e}"
        if how is None:
            return None
        lines = self.last_lines(name)
        return f"the service ended ({how})" + (f": {lines[-1][:200]}" if lines else "")


def how_ended(pane: ServicePane | None) -> str | None:
    """How a service's process ended (``exit status 3``, ``killed by signal 9``, ``its
    pane is gone``), or None while it runs. A process tmux has not reaped yet (see
    ../shared/TMUX.md on ``pane-died``) is read from the kernel
    (:func:`~miyabi.supervision.processes.zombie_exit`)."""
    if pane is None:
        return "its pane is gone"
    if not pane.dead and pane.pid and alive(pane.pid):
        return None
    if pane.dead_signal is None and pane.dead_status is None:
        return zombie_exit(pane.pid, None) or pane.exit_description()
    return pane.exit_description()


def _note(logfile: Path, line: str, more: Iterable[str] = ()) -> None:
    """Append ``# line`` (and ``more``, indented) to a deploy's log."""
    private_dir(logfile.parent)
    with open(logfile, "a", encoding="utf-8") as f:
        f.write(f"# {line}\n")
        f.writelines(f"    {m}\n" for m in more)
