"""Monitoring creates work: an agent the watchdog gave up on, or a deployed service that
keeps failing its health check, gets a fix task.

When the watchdog stops restarting an agent (a crash loop), a task says what failed
and where its evidence is: with a ``github:`` section an issue labelled todo (the
intake makes it a task), without one a local task; never twice for one failure while
the first fix is open (:func:`~miyabi.pipeline.followups.file_fix` keeps the causes).
An agent that runs again and fails later is a new cause.

:class:`Monitor` watches what :class:`~miyabi.pipeline.deploy.Deployer` deployed: a
served process that died is started again in its pane (the watchdog's policy:
at once after a long run, with backoff after a quick death, not at all once its
crash-loop breaker trips); ``health:`` is checked every ``interval``; a check that fails
``defaults.MONITOR_FIX_AFTER`` times in a row files one fix task for that cause (the
check, its output, the service's last lines), after a rollback to the last commit that
passed when ``rollback: true``. Events: ``health-failed``, ``service-restarted``,
``service-gave-up``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.config.settings import GitHubSettings, WatchdogSettings
from miyabi.errors import TmuxError
from miyabi.events import EventKind, append_event
from miyabi.home import Home
from miyabi.pipeline.deploy import CheckResult, Deployer, DeployError, Deployment, how_ended, run_check
from miyabi.pipeline.followups import file_fix
from miyabi.stopping import Stopped
from miyabi.supervision.policy import DeathAction, History, on_death
from miyabi.supervision.saved import load_records
from miyabi.times import how_often, rfc3339
from miyabi.work.github import GitHub
from miyabi.work.store import Store

log = logging.getLogger("miyabi.pipeline.monitoring")


def failed_agent_fix(name: str, record: dict[str, Any], crashes: Path) -> tuple[str, str, str]:
    """The fix task for agent ``name``, whose watchdog record is ``record`` (its
    ``history``: ``failed`` reason, ``restarts`` times): ``(cause, title, body)``."""
    hist = record.get("history", {})
    reason = str(hist.get("failed") or "it kept failing")
    restarts = hist.get("restarts") or [time.time()]
    cause = f"the watchdog gave up on agent {name}"
    title = f"Agent {name} keeps failing: {reason}"[:200]
    body = (
        f"miyabi's watchdog gave up on agent {name} at {rfc3339(float(restarts[-1]))}: {reason}.\n"
        f"Its crash evidence is under {crashes}; `miyabi status {name}` shows it, and "
        f"`miyabi restart {name}` brings it back once the cause is fixed."
    )
    return cause, title, body


class FixFiler:
    """Files a fix task for each agent the watchdog gave up on, once per failure.

    Args:
        home: the miyabi home (the watchdog's records and crash evidence are there).
        store: the task store.
        gh: the GitHub client (None: local tasks).
        github: the layout's ``github:`` section, read when a fix is filed.
        start: runs a callable on a thread of the controller's, named: filing may wait
            for GitHub (a rate limit), never the controller's main loop.
    """

    def __init__(
        self,
        home: Home,
        store: Store,
        gh: GitHub | None,
        github: Callable[[], GitHubSettings | None],
        start: Callable[[Callable[[], None], str], None],
    ) -> None:
        self.home = home
        self.store = store
        self.gh = gh
        self.github = github
        self.start = start
        self._filed: set[str] = set()
        self._lock = threading.Lock()

    def tick(self, failed: Sequence[str]) -> None:
        """Called at each scheduling pass with the agents the watchdog gives up on now."""
        with self._lock:
            self._filed &= set(failed)  # running again: a later failure is a new cause
            due = [n for n in failed if n not in self._filed]
            self._filed |= set(due)
        if not due:
            return
        records = load_records(self.home)
        for name in due:
            cause, title, body = failed_agent_fix(name, records.get(name, {}), self.home.logs / "crashes")
            self.start(functools.partial(self._file, name, cause, title, body), f"file-fix-{name}")

    def _file(self, name: str, cause: str, title: str, body: str) -> None:
        try:
            file_fix(self.store, self.gh, self.github(), self.home.root, cause, title, body)
        except Stopped:  # the controller is stopping; the next one files it
            with self._lock:
                self._filed.discard(name)
        except Exception as e:
            log.warning(
                "could not file the fix task for %s: %s: %s; trying again at the next pass",
                name,
                type(e).__name__,
                e,
                exc_info=True,
            )
            with self._lock:
                self._filed.discard(name)


# -- deployed services (.miyabi.yml's serve: and health:)


class Verdict(StrEnum):
    """What a health check of a deployed service means."""

    HEALTHY = "healthy"
    FAILING = "failing"
    """It failed, not yet often enough in a row to be a cause."""
    FIX = "fix"
    """It failed ``fix_after`` times in a row: file the fix (once per streak)."""


@dataclass(frozen=True)
class HealthWatch:
    """What the monitor remembers of one deployment's health checks.

    Attributes:
        deployed: the deploy's time (a new deploy starts a new watch).
        next_check: when the next check is due (Unix time).
        failures: checks failed in a row.
        filed: the fix of this streak of failures was filed.
    """

    deployed: float = 0.0
    next_check: float = 0.0
    failures: int = 0
    filed: bool = False


def on_check(
    w: HealthWatch, ok: bool, now: float, interval: float, fix_after: int = defaults.MONITOR_FIX_AFTER
) -> tuple[HealthWatch, Verdict]:
    """The watch after a health check that passed (``ok``) or failed at ``now``, the next
    due ``interval`` seconds later, and what it means: a pass ends a streak of failures;
    the ``fix_after``-th failure in a row is a cause to fix (once per streak). The rule
    is Kubernetes' probe ``failureThreshold``, with a fix task where it restarts."""
    if ok:
        return HealthWatch(w.deployed, now + interval), Verdict.HEALTHY
    failures = w.failures + 1
    if failures >= fix_after and not w.filed:
        return HealthWatch(w.deployed, now + interval, failures, True), Verdict.FIX
    return HealthWatch(w.deployed, now + interval, failures, w.filed), Verdict.FAILING


@dataclass
class ServiceWatch:
    """What the monitor remembers of one deployment's served process.

    Attributes:
        deployed: the deploy's time (a new deploy starts a new watch).
        pid: the process last seen running.
        started: when it started (or was first seen), Unix time.
        history: its restarts, for the watchdog's policy (backoff, crash-loop breaker).
        respawn_at: when a dead process is started again (None: not dead, or not decided).
        delay: the backoff of that restart, in seconds.
        gave_up: why the breaker tripped (None: it did not).
    """

    deployed: float
    pid: int = 0
    started: float = 0.0
    history: History = field(default_factory=History)
    respawn_at: float | None = None
    delay: float = 0.0
    gave_up: str | None = None


def health_fix(d: Deployment, result: CheckResult, lines: Sequence[str], note: str) -> tuple[str, str, str]:
    """The fix task for deployment ``d`` failing its health check with ``result``
    (``lines``: the service's last output lines; ``note``: what the monitor did, e.g.
    the rollback): ``(cause, title, body)``."""
    check = d.check
    what = check.describe() if check is not None else "its service keeps dying"
    cause = f"deployed service {d.name}: {what}"
    title = f"Deployed {Path(d.repo).name} fails its health check: {result.evidence}"[:200]
    body = [
        f"The service deployed from {d.repo} at commit {d.commit}"
        + (f" (story {d.story})" if d.story is not None else "")
        + f" fails its health check ({what}) {defaults.MONITOR_FIX_AFTER} times in a row.",
        "",
        f"Check: {what}",
        f"Result: {result.evidence}",
    ]
    if result.output:
        body += ["", "Its output:", "```", *result.output, "```"]
    if d.serve is not None:
        body += ["", f"Service: `{d.serve}`; its last lines:", "```", *(lines or ["(no output)"]), "```"]
    if note:
        body += ["", note]
    return cause, title, "\n".join(body)


class Monitor:
    """Watches the deployed services: restarts one whose process died (with the
    watchdog's backoff and crash-loop breaker), checks ``health:`` every ``interval``
    seconds, and when a check keeps failing files one fix task per cause (through
    :func:`~miyabi.pipeline.followups.file_fix`), first deploying the last commit that
    passed when the deploy says ``rollback: true``.

    Args:
        deployer: what was deployed, and how to restart and roll back.
        store: the task store (fix tasks).
        gh: the GitHub client (None: local fix tasks).
        github: the layout's ``github:`` section, read when a fix is filed.
        interval: seconds between health checks (layout ``roles.monitor.interval``), or a
            callable that reads it (a reload counts).
        watchdog: the restart policy's settings (the layout's ``watchdog:``).
        attach: ``attach(store, story, task_ids)``: puts a fix task in the story its
            deploy came from (None: not done).
        clock: the Unix time.
    """

    def __init__(
        self,
        deployer: Deployer,
        store: Store,
        gh: GitHub | None = None,
        github: Callable[[], GitHubSettings | None] = lambda: None,
        interval: float | Callable[[], float] = defaults.MONITOR_INTERVAL,
        watchdog: WatchdogSettings | None = None,
        attach: Callable[[Store, int, list[int]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.deployer = deployer
        self.store = store
        self.gh = gh
        self.github = github
        self.interval = interval if callable(interval) else (lambda: float(interval))
        self.watchdog = watchdog or WatchdogSettings()
        self.attach = attach
        self.clock = clock
        self.health: dict[str, HealthWatch] = {}
        self.services: dict[str, ServiceWatch] = {}

    def run(self, stop: threading.Event) -> None:
        """Tick every ``defaults.MONITOR_TICK`` seconds until ``stop`` is set (a
        thread of the controller's)."""
        while not stop.wait(defaults.MONITOR_TICK):
            try:
                self.tick()
            except Stopped:
                return
            except Exception as e:  # the monitor's trouble is logged, never fatal to the controller
                log.warning("monitor: %s: %s; trying again", type(e).__name__, e, exc_info=True)

    def tick(self) -> list[str]:
        """Look at each deployment that passed once: restart its dead service when due,
        check its health when due, file a fix when due. A deployment being deployed is
        skipped. Returns one line per thing done.

        Raises:
            TmuxError, OSError, sqlite3.Error: tmux, the home or the store failed.
        """
        done: list[str] = []
        for d in self.deployer.deployments():
            if not d.ok:
                continue  # a failed deploy is its story's to fix
            lock = self.deployer.lock(d.name)
            if not lock.acquire(blocking=False):
                continue  # a deploy runs
            try:
                done += self._look(d)
            finally:
                lock.release()
        return done

    def _look(self, d: Deployment) -> list[str]:
        now = self.clock()
        done: list[str] = []
        sw = self.services.get(d.name)
        if sw is None or sw.deployed != d.time:
            sw = self.services[d.name] = ServiceWatch(d.time, started=d.time)
        w = self.health.get(d.name)
        if w is None or w.deployed != d.time:
            w = self.health[d.name] = HealthWatch(d.time, now + self.interval())
        if d.serve is not None:
            done += self._keep_serving(d, sw, now)
        check = d.check
        if check is None:
            if sw.gave_up is not None and not w.filed:
                self.health[d.name] = HealthWatch(d.time, now, 0, True)
                done += self._fix(d, CheckResult(False, f"the service keeps dying: {sw.gave_up}"))
            return done
        if now < w.next_check:
            return done
        result = run_check(check, self.deployer.checkout(Path(d.repo)), hide=self.deployer.hide)
        w, verdict = on_check(w, result.ok, self.clock(), self.interval())
        self.health[d.name] = w
        if result.ok:
            if d.last_good != d.commit:
                self.deployer.passed(d.name, d.commit)
            return done
        append_event(
            self.deployer.home,
            EventKind.HEALTH_FAILED,
            name=d.name,
            repo=d.repo,
            commit=d.commit,
            story=d.story,
            check=check.describe(),
            evidence=result.evidence,
            failures=w.failures,
        )
        done.append(f"{d.name}: health failed ({w.failures} in a row): {result.evidence}")
        if verdict == Verdict.FIX:
            done += self._fix(d, result)
        return done

    def _keep_serving(self, d: Deployment, sw: ServiceWatch, now: float) -> list[str]:
        """Restart ``d``'s service when its process died, as the watchdog's policy says."""
        pane = self.deployer.service(d.name)
        how = how_ended(pane)
        if how is None:
            assert pane is not None
            if pane.pid != sw.pid:
                sw.pid, sw.started = pane.pid, (now if sw.pid else sw.started)
            return []
        if sw.gave_up is not None:
            return []
        if sw.respawn_at is None:
            _, how = self.deployer.ended(d.name)  # its exit status, once tmux recorded it
            decision = on_death(self.watchdog, sw.history, now - sw.started, now, f"the service ended ({how})")
            sw.history.last_reason = decision.reason
            if decision.action == DeathAction.FAIL:
                sw.gave_up = decision.reason
                append_event(self.deployer.home, EventKind.SERVICE_GAVE_UP, name=d.name, reason=decision.reason)
                return [f"{d.name}: gave up: {decision.reason}"]
            sw.history.backoff = decision.backoff
            sw.respawn_at, sw.delay = now + decision.delay, decision.delay
        if now < sw.respawn_at:
            return []
        try:
            pane = self.deployer.restart(d)
        except (TmuxError, DeployError) as e:  # the session is being rebuilt, say: tried again
            sw.respawn_at = now + max(sw.delay, defaults.SERVICE_RETRY)
            log.warning("monitor: could not restart %s: %s; trying again", d.name, e)
            return [f"{d.name}: could not restart: {e}"]
        sw.history.restarts.append(now)
        sw.pid, sw.started, sw.respawn_at = pane.pid, now, None
        append_event(
            self.deployer.home,
            EventKind.SERVICE_RESTARTED,
            name=d.name,
            pid=pane.pid,
            pane=pane.pane_id,
            reason=sw.history.last_reason,
            delay=sw.delay,
        )
        return [f"{d.name}: restarted (pid {pane.pid}): {sw.history.last_reason}"]

    def _fix(self, d: Deployment, result: CheckResult) -> list[str]:
        """Roll back first when the deploy says so, then file the fix (with the
        check, its output and the service's last lines)."""
        lines = self.deployer.last_lines(d.name)
        notes = []
        sw = self.services.get(d.name)
        if d.serve is not None and sw is not None and sw.history.last_reason:
            restarts = len(sw.history.restarts)
            notes.append(
                f"The monitor restarted the service {how_often(restarts)} since the deploy; last: "
                f"{sw.history.last_reason}" + (" It is left down until the next deploy." if sw.gave_up else "")
            )
        if d.rollback and d.rollback_to is not None:
            back = self.deployer.deploy(Path(d.repo), d.rollback_to, d.story, rollback=False)
            notes.append(
                f"miyabi rolled the service back to {d.rollback_to}, the last commit that passed: "
                + ("it passes again." if back.ok else f"that failed too: {back.evidence}")
            )
        note = "\n\n".join(notes)
        cause, title, body = health_fix(d, result, lines, note)
        try:
            filed = file_fix(self.store, self.gh, self.github(), self.deployer.home, cause, title, body)
        except Stopped:
            raise
        except Exception as e:  # GitHub refused: filed at the next failing check
            log.warning("could not file the fix for %s: %s: %s", d.name, type(e).__name__, e, exc_info=True)
            w = self.health.get(d.name)
            if w is not None:
                self.health[d.name] = HealthWatch(w.deployed, w.next_check, w.failures, False)
            return []
        if filed is not None and d.story is not None and self.attach is not None:
            rows = self.store.rows("SELECT task FROM causes WHERE cause=?", (cause,))
            if rows and rows[0]["task"] is not None:
                self.attach(self.store, d.story, [int(rows[0]["task"])])
        return [f"{d.name}: fix filed ({filed or 'already open'})" + (f"; {note}" if note else "")]
