"""Posting the report on the layout's schedule (``report: {every, issue, since}``).

When the next post is due is a pure function of what was recorded and the settings
(:func:`next_due`); the record lives in ``run/report.json`` under the home, so a
controller that restarts neither posts again nor forgets the schedule. A post is
recorded *before* it is sent: a controller killed while posting loses that one report
rather than posting it twice (at most once, like a claim). A post that failed is
tried again after ``defaults.REPORT_RETRY`` seconds. The controller runs
:func:`run_schedule` in a thread of its own.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from miyabi import defaults
from miyabi.config.model import Layout
from miyabi.config.settings import GitHubSettings, ReportSettings
from miyabi.errors import MiyabiError
from miyabi.events import EventKind, append_event
from miyabi.files import write_atomic
from miyabi.reports.post import post
from miyabi.reports.sources import build
from miyabi.stopping import Stopped, sleeper
from miyabi.times import rfc3339
from miyabi.work.github import GitHub, client_for

log = logging.getLogger("miyabi.reports")

STATE_FILE = "report.json"
"""The schedule's record, under ``run/``."""


@dataclass(frozen=True)
class Posted:
    """What ``run/report.json`` records (Unix seconds).

    Attributes:
        started: when a controller first saw the ``report:`` section (the first post
            is due ``every`` after it).
        last: when the last post was sent (or claimed), if ever.
        retry_at: after a failed post, not before this.
        error: why the last post failed, if it did.
    """

    started: float
    last: float | None = None
    retry_at: float | None = None
    error: str | None = None


def next_due(posted: Posted, settings: ReportSettings) -> float:
    """Unix time the next post is due: ``every`` after the last post (or after the
    schedule started), and not before a failed post's ``retry_at``."""
    due = (posted.last if posted.last is not None else posted.started) + settings.every
    return max(due, posted.retry_at) if posted.retry_at is not None else due


class ReportSchedule:
    """The schedule's record for one home.

    Args:
        home_root: the miyabi home (the record is ``run/report.json``).
        clock: Unix time (injectable).
    """

    def __init__(self, home_root: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = home_root / "run" / STATE_FILE
        self.clock = clock

    def load(self) -> Posted:
        """The record; a missing or unreadable one starts the schedule now (and is saved).

        Raises:
            OSError: it cannot be written.
        """
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return Posted(
                started=float(raw["started"]),
                last=_num(raw.get("last")),
                retry_at=_num(raw.get("retry_at")),
                error=str(raw["error"]) if raw.get("error") else None,
            )
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            fresh = Posted(started=self.clock())
            self.save(fresh)
            return fresh

    def save(self, posted: Posted) -> None:
        """Replace the record (atomically; times also as RFC 3339 for people).

        Raises:
            OSError: it cannot be written.
        """
        data: dict[str, object] = dict(asdict(posted))
        data["times"] = {k: rfc3339(v) for k, v in asdict(posted).items() if isinstance(v, float)}
        write_atomic(self.path, json.dumps(data, indent=1))


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def post_if_due(
    home_root: Path,
    layout: Layout,
    schedule: ReportSchedule,
    client: Callable[[GitHubSettings], GitHub] | None = None,
) -> float:
    """Post the report if the layout's ``report:`` is due: the window is ``since``
    seconds back from now, the layout's named agents are always reported. Records the
    post before sending it; a failure is recorded (retried after
    ``defaults.REPORT_RETRY``) and logged as a ``report-error`` event, a post as
    ``report-posted`` (``{"issue", "since", "until"}``).

    Returns:
        Seconds until this should be called again.

    Raises:
        Stopped: the client's wait was ended by the controller's stop (nothing was
            recorded as posted).
        OSError: the schedule's record cannot be written.
    """
    settings = layout.report
    if settings is None:
        return defaults.REPORT_CHECK
    posted = schedule.load()
    now = schedule.clock()
    due = next_due(posted, settings)
    if now < due:
        return due - now
    schedule.save(replace(posted, last=now, retry_at=None, error=None))  # claimed: never posted twice
    since = now - settings.since
    try:
        report = build(home_root, since, now, [a.name for a in layout.named])
        where = post(report, layout.github, settings.issue, layout.path, client)
    except Stopped:
        schedule.save(posted)
        raise
    except (MiyabiError, OSError, sqlite3.Error, ValueError) as e:
        schedule.save(replace(posted, retry_at=now + defaults.REPORT_RETRY, error=str(e)))
        append_event(home_root, EventKind.REPORT_ERROR, issue=settings.issue, error=str(e))
        log.warning("report to issue %d: %s; trying again in %.0f s", settings.issue, e, defaults.REPORT_RETRY)
        return defaults.REPORT_RETRY
    append_event(
        home_root, EventKind.REPORT_POSTED, issue=settings.issue, to=where, since=rfc3339(since), until=rfc3339(now)
    )
    log.info("posted the report to %s", where)
    return settings.every


def run_schedule(
    stop: threading.Event,
    home_root: Path,
    layout: Callable[[], Layout],
    client: Callable[[GitHubSettings], GitHub] | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """The controller's report thread, until ``stop`` is set: posts the report
    whenever the current layout's ``report:`` is due (:func:`post_if_due`), looking
    at least every ``defaults.REPORT_CHECK`` seconds (a reloaded layout's ``report:``
    applies from the next look). Never raises: a failure is logged and tried again.

    Args:
        stop: ends the thread (its wait ends at once).
        layout: the controller's current layout (read at each look).
        client: makes the GitHub client (default: ``client_for`` with no home, whose
            waits for GitHub end at once when ``stop`` is set).
    """
    schedule = ReportSchedule(home_root, clock)
    pause = sleeper(stop)

    def stoppable(settings: GitHubSettings) -> GitHub:
        return client_for(settings, None, sleep=pause)

    while not stop.is_set():
        wait = defaults.REPORT_CHECK
        try:
            lay = layout()
            if lay.report is not None:
                wait = post_if_due(home_root, lay, schedule, client or stoppable)
        except Stopped:
            return
        except Exception as e:  # the thread must live on (an unwritable run/, a bug)
            log.warning("report schedule: %s: %s", type(e).__name__, e, exc_info=True)
        stop.wait(max(1.0, min(wait, defaults.REPORT_CHECK)))
