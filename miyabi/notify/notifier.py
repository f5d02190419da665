"""Notifications: what happened (the event log, task transitions) told to Slack,
Discord, ntfy and generic JSON webhooks, as the layout's ``notify:`` says.

One thread reads new happenings every ``defaults.NOTIFY_POLL`` seconds and queues a
notice per receiver that wants it (:mod:`miyabi.notify.outbox`); one thread per
receiver sends its queue in order, at most ``rate`` a minute, each POST under its
``timeout``, a failure tried again after ``retry_after`` seconds, doubling, until
``max_attempts``. A receiver that is down or slow holds only its own queue: delivery
and supervision run on other threads and never wait for a notice.

Formats: Slack incoming webhooks (``{"text"}``, docs.slack.dev "Sending messages
using incoming webhooks"), Discord webhooks (``{"content"}``, at most 2,000
characters; discord.com/developers "Execute Webhook"), ntfy (the message as the body,
``Title`` and ``Tags`` headers; docs.ntfy.sh "Publishing"), and a generic JSON body.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from miyabi import defaults
from miyabi.config.settings import Receiver, ReceiverKind
from miyabi.events import EventKind, append_event, events_after, path_of
from miyabi.notify.outbox import NoticeState, Outbox
from miyabi.notify.rules import Notice, from_event, from_task_event, restarted
from miyabi.times import rfc3339
from miyabi.work.model import TaskError
from miyabi.work.store import Store

log = logging.getLogger("miyabi.notify")

RETRY_MAX = 600.0
"""Longest wait, in seconds, between two tries of one notice."""


class SendError(Exception):
    """A POST that did not work: ``retry`` says whether trying again may help."""

    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


def where(receiver: Receiver) -> str:
    """A receiver as logs name it: its kind and host, never its URL (a secret)."""
    url = receiver.url or os.environ.get(receiver.url_env or "", "")
    host = urlsplit(url).hostname or (f"${receiver.url_env}" if receiver.url_env else "?")
    return f"{receiver.kind} receiver at {host}"


def request_of(receiver: Receiver, notice: Notice, session: str, now: float) -> dict[str, Any]:
    """The keyword arguments of the POST that tells ``notice`` to ``receiver``
    (``json=`` or ``content=`` and ``headers=``)."""
    line = f"{notice.title}: {notice.text}"
    if receiver.kind == ReceiverKind.SLACK:
        return {"json": {"text": f"[miyabi {session}] {line}"}}
    if receiver.kind == ReceiverKind.DISCORD:
        return {"json": {"content": f"[miyabi {session}] {line}"[:2000]}}
    if receiver.kind == ReceiverKind.NTFY:
        headers = {
            "Title": f"miyabi {session}: {notice.title}".encode("ascii", "replace").decode(),
            "Tags": str(notice.kind),
        }
        if notice.url:
            headers["Click"] = notice.url
        return {"content": notice.text.encode(), "headers": headers}
    return {
        "json": {
            "kind": str(notice.kind),
            "title": notice.title,
            "text": notice.text,
            "url": notice.url,
            "time": rfc3339(now),
            "session": session,
            "key": notice.key,
            "event": notice.fields,
        }
    }


def post(client: httpx.Client, receiver: Receiver, notice: Notice, session: str, now: float) -> None:
    """POST one notice.

    Raises:
        SendError: no URL, a network error or timeout, or an answer that is not 2xx
            (429 and 5xx may be retried; other 4xx are final).
    """
    url = receiver.url or os.environ.get(receiver.url_env or "")
    if not url:
        raise SendError(f"${receiver.url_env} is not set; set it to the receiver's URL", retry=True)
    try:
        r = client.post(url, timeout=receiver.timeout, **request_of(receiver, notice, session, now))
    except httpx.TimeoutException:
        raise SendError(f"no answer within {receiver.timeout:g} s", retry=True) from None
    except httpx.HTTPError as e:
        raise SendError(f"{type(e).__name__}: cannot reach it", retry=True) from None
    if 200 <= r.status_code < 300:
        return
    retry = r.status_code == 429 or r.status_code >= 500
    raise SendError(f"it answered {r.status_code} {r.reason_phrase}", retry=retry)


class Notifier:
    """Queues and sends the notices of one home.

    Args:
        home_root: the home.
        store: its task store, read for task transitions (shared; thread-safe). The
            notices are queued in ``state/notify.db`` (:class:`~miyabi.notify.outbox.Outbox`).
        receivers: the layout's ``notify:`` entries.
        session: the session's name (said in every notice).
        clock: Unix time (injectable).
    """

    def __init__(
        self,
        home_root: Path,
        store: Store,
        receivers: tuple[Receiver, ...],
        session: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.home_root = home_root
        self.store = store
        self.outbox = Outbox(home_root)
        self.receivers = receivers
        self.session = session
        self.clock = clock
        clean = self.outbox.cursor("clean-stop")
        # on a first run the log's last controller is this one (it started before us): running, not stopped
        self._clean = bool(clean) if clean is not None else False
        """Whether the last controller seen in the log stopped cleanly (``controller-stop``)."""
        self._wake = {r.key: threading.Event() for r in receivers}
        """Receiver → set when notices were queued for it: wakes its sender."""
        left = self.outbox.uncertain()
        if left:
            log.warning("%d notices were in flight when the last controller stopped; they are not sent again", left)
        gone = self.outbox.orphans([r.key for r in receivers])
        if gone:
            log.warning("%d queued notices were for receivers the layout no longer has; given up", gone)
        self.produce()  # the first run starts here: what happened before is history, what happens next is news

    # -- queuing

    def produce(self) -> int:
        """Queue the notices of what happened since the last call; returns how many."""
        pairs: list[tuple[str, Notice]] = []
        cursors: dict[str, int] = {}
        log_pos, from_log = self._from_log()
        cursors["log"] = log_pos
        task_pos, from_tasks = self._from_tasks()
        cursors["task-events"] = task_pos
        cursors["clean-stop"] = int(self._clean)
        for n in [*from_log, *from_tasks]:
            pairs += [(r.key, n) for r in self.receivers if r.wants(str(n.kind))]
        new = self.outbox.enqueue(cursors, pairs, self.clock())
        if new:
            for receiver, _ in pairs:
                self._wake[receiver].set()
        return new

    def _from_log(self) -> tuple[int, list[Notice]]:
        path = path_of(self.home_root)
        pos = self.outbox.cursor("log")
        if pos is None:  # the first run starts now: history is not news
            try:
                return path.stat().st_size, []
            except FileNotFoundError:
                return 0, []
        records, at, _ = events_after(path, pos)
        out = []
        for start, _, e in records:
            key = f"log:{e.get('time')}:{start}"
            kind = e.get("event")
            if kind == EventKind.CONTROLLER_STOP:
                self._clean = True
                continue
            if kind == EventKind.CONTROLLER_START:
                n = None if self._clean else restarted(key, e)  # `miyabi down` then `up` is no news
                self._clean = False
            else:
                n = from_event(key, e)
            if n is not None:
                out.append(n)
        return at, out

    def _from_tasks(self) -> tuple[int, list[Notice]]:
        pos = self.outbox.cursor("task-events")
        if pos is None:
            rows = self.store.rows("SELECT COALESCE(MAX(id), 0) AS m FROM events")
            return int(rows[0]["m"]), []
        out = []
        for r in self.store.rows(
            "SELECT id, task, state, reason FROM events WHERE id > ? ORDER BY id LIMIT 1000", (pos,)
        ):
            pos = int(r["id"])
            try:
                task = self.store.get(int(r["task"])).to_json()
            except TaskError:
                continue
            n = from_task_event(pos, task, str(r["state"]), str(r["reason"]))
            if n is not None:
                out.append(n)
        return pos, out

    def run_producer(self, stop: threading.Event) -> None:
        """Queue new notices every ``defaults.NOTIFY_POLL`` seconds until ``stop``."""
        while not stop.wait(defaults.NOTIFY_POLL):
            try:
                self.produce()
            except Exception as e:  # noqa: BLE001 - sqlite3.Error, OSError: tried again at the next poll, never fatal
                log.warning("notifications: %s: %s; trying again", type(e).__name__, e)

    # -- sending

    def send_one(self, receiver: Receiver, client: httpx.Client) -> bool:
        """Send the receiver's next due notice, if any; returns whether one was tried."""
        now = self.clock()
        q = self.outbox.next_due(receiver.key, now)
        if q is None or not self.outbox.sending(q.id):
            return False
        try:
            post(client, receiver, q.notice, self.session, now)
        except Exception as e:  # noqa: BLE001 - SendError, or a URL httpx refuses, a header that is not ASCII: never stuck "sending"
            if not isinstance(e, SendError):
                e = SendError(f"{type(e).__name__}: {e}", retry=False)
            attempts = q.attempts + 1
            if not e.retry or attempts >= receiver.max_attempts:
                self.outbox.finished(q.id, NoticeState.FAILED, str(e))
                append_event(
                    self.home_root,
                    EventKind.NOTICE_FAILED,
                    receiver=where(receiver),
                    kind=str(q.notice.kind),
                    key=q.notice.key,
                    attempts=attempts,
                    reason=str(e),
                )
            else:
                wait = min(RETRY_MAX, receiver.retry_after * 2 ** (attempts - 1))
                self.outbox.again(q.id, self.clock() + wait, str(e))
                log.info("notice %s to %s: %s; trying again in %.0f s", q.notice.key, where(receiver), e, wait)
            return True
        self.outbox.finished(q.id, NoticeState.SENT)
        append_event(
            self.home_root,
            EventKind.NOTICE_SENT,
            receiver=where(receiver),
            kind=str(q.notice.kind),
            key=q.notice.key,
            attempts=q.attempts + 1,
        )
        return True

    def run_sender(self, receiver: Receiver, stop: threading.Event) -> None:
        """Send the receiver's notices until ``stop``: in order, at most ``rate`` a minute."""
        gap = 60.0 / receiver.rate
        last = float("-inf")
        with httpx.Client(follow_redirects=False) as client:
            while not stop.is_set():
                pause = last + gap - time.monotonic()
                if pause > 0:
                    stop.wait(pause)
                    continue
                try:
                    tried = self.send_one(receiver, client)
                except Exception as e:  # noqa: BLE001 - sqlite3.Error and the like: tried again, never fatal
                    log.warning("notifications to %s: %s: %s; trying again", where(receiver), type(e).__name__, e)
                    stop.wait(defaults.NOTIFY_POLL)
                    continue
                if tried:
                    last = time.monotonic()
                    continue
                due = self.outbox.wait_of(receiver.key, self.clock())
                wake = self._wake[receiver.key]
                wake.wait(min(due if due is not None else defaults.NOTIFY_POLL, defaults.NOTIFY_POLL))
                wake.clear()

    def start(self, stop: threading.Event, start_thread: Callable[[Callable[[], None], str], None]) -> None:
        """Start the producer and one sender per receiver with ``start_thread(target, name)``."""
        start_thread(lambda: self.run_producer(stop), "notify")
        for i, r in enumerate(self.receivers):
            start_thread(lambda r=r: self.run_sender(r, stop), f"notify-{i}")  # type: ignore[misc]
