"""A small GitHub REST client for the calls miyabi makes, on httpx.

It lists issues with conditional requests (``If-None-Match`` with the last ``ETag``;
a 304 does not count against the rate limit), follows ``link`` pagination, honours
``retry-after``, waits for ``x-ratelimit-reset`` when no requests remain, and backs
off on 5xx; it never spins. The token is sent in the ``Authorization`` header only:
it is never printed, logged or put in an event; a missing one, a 401 and a network
failure are each one line (naming the environment variable, or the URL and the
reason). Label changes use add/remove calls, never the replace-all ``PUT``. Shapes
follow GitHub's REST documentation ("Issues", "Labels", "Rate limits", "Conditional
requests").
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from miyabi import defaults
from miyabi.backoff import Backoff
from miyabi.config.settings import GitHubSettings
from miyabi.errors import MiyabiError
from miyabi.files import write_atomic

_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')
_MEMORY_VERSION = 2
"""The layout of ``state/github-etags.json`` (1, a flat map of per-page ETags, is not read)."""


def stamp(when: datetime) -> str:
    """A time as GitHub writes it and takes it in ``since``: ``2026-11-22T09:30:00Z`` (UTC, whole seconds)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(text: object) -> datetime | None:
    """A time GitHub wrote (``updated_at``), or None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _stamp_of_date(header: str) -> str | None:
    """An HTTP ``Date`` header (RFC 9110, ``Sun, 22 Nov 2026 09:30:00 GMT``) as :func:`stamp` writes it."""
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    return stamp(when if when.tzinfo else when.replace(tzinfo=UTC))


class GitHubError(MiyabiError):
    """GitHub refused or failed a request; the message never holds the token."""


@dataclass
class Listing:
    """One listing of a repository's issues, every page of it.

    Attributes:
        issues: the issues, without pull requests, in GitHub's order.
        newest: the newest ``updated_at`` of anything listed (pull requests too), as
            GitHub writes it (``2026-11-22T09:30:00Z``); None when nothing was listed.
        date: GitHub's clock when it answered the first page (its ``Date`` header), as
            ``newest`` is written; None when it did not say.
        requests: the requests it took (one per page).
    """

    issues: list[dict[str, Any]]
    newest: str | None
    date: str | None
    requests: int


@dataclass
class Stats:
    """What the client did: requests sent, 304 answers, waits."""

    requests: int = 0
    not_modified: int = 0
    waited: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    rate_remaining: int | None = None
    """What GitHub last said is left of the rate limit (``x-ratelimit-remaining``)."""


class GitHub:
    """One repository on a GitHub-compatible API.

    Args:
        repo: ``owner/name``.
        token: the API token (from ``token_env``), or None for anonymous access.
        token_env: the environment variable the token came from (named in errors).
        api_url: the API root (GitHub Enterprise: ``https://HOST/api/v3``).
        sleep, clock: injectable.
    """

    def __init__(
        self,
        repo: str,
        token: str | None,
        token_env: str = defaults.GITHUB_TOKEN_ENV,
        api_url: str = defaults.GITHUB_API,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        timeout: float = defaults.GITHUB_TIMEOUT,
        etag_file: Path | None = None,
        stats_file: Path | None = None,
    ) -> None:
        self.repo = repo
        self.token_env = token_env
        self.sleep = sleep
        self.clock = clock
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "miyabi",
        }
        self.token_missing = "not set" if token is None else "empty" if not token.strip() else None
        """Why there is no token: ``not set`` (the variable is not in the environment),
        ``empty``, or None when there is one."""
        token = (token or "").strip() or None
        if token is not None and (not token.isascii() or not token.isprintable() or " " in token):
            raise GitHubError(
                f"the token in ${token_env} has characters a token cannot have; set it again, without quotes or spaces"
            )
        self.has_token = token is not None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=timeout)
        self.etag_file = etag_file
        self.memory: dict[str, Any] = {}
        """What polls remember between processes (saved in ``etag_file`` by :meth:`commit`):
        the ETag of each conditional listing (``etag:KEY``: [URL, ETag]) and what the
        caller keeps with :meth:`remember`."""
        if etag_file is not None:
            try:
                saved = json.loads(etag_file.read_text())
                if isinstance(saved, dict) and saved.get("version") == _MEMORY_VERSION:
                    self.memory = dict(saved.get("memory") or {})
            except (OSError, ValueError, AttributeError):
                self.memory = {}
        self._uncommitted: dict[str, Any] = {}
        self.stats = Stats()
        self.stats_file = stats_file
        """Where :attr:`stats` are saved (at most once a second) for the dashboard's metrics."""
        self._stats_saved = 0.0

    def close(self) -> None:
        self._stats_saved = float("-inf")  # the last counts of a burst, whatever the throttle said
        self._save_stats()
        self.http.close()

    # -- the one place requests are made

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """Send a request, waiting out rate limits and retrying 5xx with backoff.

        Raises:
            GitHubError: 401 (naming the token's variable), a network error, or
                still failing after ``defaults.GITHUB_MAX_TRIES``.
            Stopped: the injected ``sleep`` was interrupted (the controller stops).
        """
        retry = Backoff(defaults.GITHUB_BACKOFF_INITIAL, defaults.GITHUB_BACKOFF_MAX)
        for attempt in range(defaults.GITHUB_MAX_TRIES):
            try:
                resp = self.http.request(method, url, **kw)
            except httpx.HTTPError as e:
                if attempt == defaults.GITHUB_MAX_TRIES - 1:
                    raise GitHubError(self._unreachable(method, url, e)) from None
                self._wait(retry.next())
                continue
            self.stats.requests += 1
            self.stats.statuses[resp.status_code] = self.stats.statuses.get(resp.status_code, 0) + 1
            left = resp.headers.get("x-ratelimit-remaining", "")
            if left.isdigit():
                self.stats.rate_remaining = int(left)
            self._save_stats()
            if resp.status_code == 401:
                if not self.has_token:
                    raise GitHubError(
                        f"GitHub answered 401 and ${self.token_env} is not set; set a token in {self.token_env}"
                    )
                raise GitHubError(
                    f"GitHub rejected the token in ${self.token_env} (401 Bad credentials); set a valid token in "
                    f"{self.token_env}"
                )
            wait = self._rate_limit_wait(resp)
            if wait is not None:
                self._wait(wait)
                continue
            if resp.status_code >= 500:
                self._wait(retry.next())
                continue
            return resp
        raise GitHubError(
            f"GitHub kept failing {method} {url} ({resp.status_code}) after {defaults.GITHUB_MAX_TRIES} tries"
        )

    def require_token(self, where: str = "") -> None:
        """Refuse to go on without a token: miyabi claims issues, which takes one.

        Args:
            where: the layout file, named first in the message.

        Raises:
            GitHubError: one line naming the variable and what to do.
        """
        if self.token_missing is None:
            return
        prefix = f"{where}: " if where else ""
        raise GitHubError(
            f"{prefix}github.token_env says {self.token_env}, which is {self.token_missing}; export {self.token_env}="
            "<a token that may edit this repository's issues>, or set github.token_env to the variable that holds one"
        )

    def _unreachable(self, method: str, url: str, e: httpx.HTTPError) -> str:
        """One line for a request that never got an answer: the URL (without its query)
        and the reason (``Connection refused``, ``timed out``, …)."""
        try:
            where = str(e.request.url.copy_with(query=None))
        except RuntimeError:  # an error raised before the request was built
            where = f"{self.http.base_url}{url}"
        reason = " ".join(str(e).split()) or type(e).__name__
        return (
            f"cannot reach GitHub: {method} {where} failed after {defaults.GITHUB_MAX_TRIES} tries: {reason} "
            f"({type(e).__name__}); check github.api_url and the network"
        )

    def _save_stats(self) -> None:
        """Save the request counts for ``/metrics`` (at most once a second; never fatal)."""
        now = self.clock()
        if self.stats_file is None or now - self._stats_saved < 1.0:
            return
        self._stats_saved = now
        try:
            write_atomic(
                self.stats_file,
                json.dumps(
                    {
                        "requests": self.stats.requests,
                        "statuses": self.stats.statuses,
                        "rate_remaining": self.stats.rate_remaining,
                        "time": now,
                    }
                )
                + "\n",
            )
        except OSError:
            pass

    def _rate_limit_wait(self, resp: httpx.Response) -> float | None:
        if resp.status_code not in (403, 429):
            return None
        after = resp.headers.get("retry-after")
        if after is not None:
            try:
                return min(defaults.GITHUB_MAX_WAIT, max(0.0, float(after)))
            except ValueError:
                return 60.0
        if resp.headers.get("x-ratelimit-remaining") == "0":
            reset = float(resp.headers.get("x-ratelimit-reset", "0") or 0)
            return min(defaults.GITHUB_MAX_WAIT, max(1.0, reset - self.clock() + 1))
        return None  # a 403 that is not a rate limit: the caller sees it

    def _wait(self, seconds: float) -> None:
        self.stats.waited += seconds
        self.sleep(seconds)

    def _check(self, resp: httpx.Response, what: str) -> None:
        if resp.status_code >= 400:
            try:
                msg = resp.json().get("message", "")
            except ValueError:
                msg = resp.text[:200]
            raise GitHubError(f"GitHub refused {what} ({resp.status_code}): {msg}")

    # -- calls

    def issues(
        self, state: str = "open", labels: str | None = None, since: str | None = None, key: str | None = None
    ) -> Listing | None:
        """The repository's issues, every page, the most recently updated first.

        Args:
            state: ``open``, ``closed`` or ``all``.
            labels: only issues with all these labels (comma-separated).
            since: only issues updated at or after this time (GitHub's ``since``,
                ``2026-11-22T09:30:00Z``).
            key: make it conditional: the first page is asked with the ETag that the
                last committed listing under ``key`` got, if it had the same URL.

        Returns:
            the listing, or None when the first page answered 304 (nothing in it
            changed; GitHub does not count it against the rate limit). Sorted by
            ``updated_at``, newest first, any change to an issue puts it on the first
            page, so a first page that did not change means no issue did.

        Raises:
            GitHubError: GitHub refused the listing or failed.
        """
        params: dict[str, str] = {"state": state, "sort": "updated", "direction": "desc", "per_page": "100"}
        if labels:
            params["labels"] = labels
        if since:
            params["since"] = since
        url: str | None = f"/repos/{self.repo}/issues"
        first = str(self.http.build_request("GET", f"/repos/{self.repo}/issues", params=params).url)
        headers: dict[str, str] = {}
        known = self.memory.get(f"etag:{key}") if key else None
        if known and known[0] == first:
            headers["If-None-Match"] = known[1]
        items: list[dict[str, Any]] = []
        newest: datetime | None = None
        date: str | None = None
        requests = 0
        while url:
            resp = self.request("GET", url, params=params if requests == 0 else None, headers=headers)
            requests += 1
            if requests == 1:
                if resp.status_code == 304:
                    self.stats.not_modified += 1
                    return None
                if key and resp.headers.get("etag"):
                    self._uncommitted[f"etag:{key}"] = [first, resp.headers["etag"]]
                date = _stamp_of_date(resp.headers.get("date", ""))
                headers = {}
            self._check(resp, "listing issues")
            page = resp.json()
            for item in page:
                when = _time(item.get("updated_at"))
                if when is not None and (newest is None or when > newest):
                    newest = when
            items += page
            nxt = _NEXT.search(resp.headers.get("link", ""))
            url = nxt.group(1) if nxt else None
        return Listing(
            issues=[i for i in items if "pull_request" not in i],
            newest=stamp(newest) if newest is not None else None,
            date=date,
            requests=requests,
        )

    def recall(self, key: str) -> Any:
        """What the last :meth:`commit` kept under ``key`` (None: nothing)."""
        return self.memory.get(f"kept:{key}")

    def remember(self, key: str, value: Any) -> None:
        """Keep ``value`` (JSON) under ``key`` at the next :meth:`commit`."""
        self._uncommitted[f"kept:{key}"] = value

    def discard(self) -> None:
        """Forget the ETags and :meth:`remember` values since the last :meth:`commit` (a
        sync that failed part way: the next one lists the same changes again)."""
        self._uncommitted.clear()

    def commit(self) -> None:
        """Keep the ETags of the listings fetched, and what was given to :meth:`remember`,
        since the last commit: call it once their issues were all processed, so that an
        interrupted sync is not hidden by a later 304."""
        self.memory.update(self._uncommitted)
        self._uncommitted.clear()
        self._save_etags()

    def _save_etags(self) -> None:
        if self.etag_file is not None:
            write_atomic(self.etag_file, json.dumps({"version": _MEMORY_VERSION, "memory": self.memory}))

    def remove_label(self, number: int, label: str) -> bool:
        """Remove one label; False when the issue did not have it (404)."""
        resp = self.request("DELETE", f"/repos/{self.repo}/issues/{number}/labels/{quote(label, safe='')}")
        if resp.status_code == 404:
            return False
        self._check(resp, f"removing label {label!r} from #{number}")
        return True

    def comments(self, number: int) -> list[str]:
        """The bodies of an issue's comments, all pages."""
        return [str(c.get("body") or "") for c in self.issue_comments(number)]

    def add_labels(self, number: int, labels: list[str]) -> None:
        resp = self.request("POST", f"/repos/{self.repo}/issues/{number}/labels", json={"labels": labels})
        self._check(resp, f"adding labels to #{number}")

    def comment(self, number: int, body: str) -> None:
        resp = self.request("POST", f"/repos/{self.repo}/issues/{number}/comments", json={"body": body})
        self._check(resp, f"commenting on #{number}")

    def _all(self, url: str, what: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every item of a paginated list."""
        resp = self.request("GET", url, params={"per_page": "100", **(params or {})})
        self._check(resp, what)
        items: list[dict[str, Any]] = list(resp.json())
        nxt = _NEXT.search(resp.headers.get("link", ""))
        while nxt:
            page = self.request("GET", nxt.group(1))
            self._check(page, what)
            items += page.json()
            nxt = _NEXT.search(page.headers.get("link", ""))
        return items

    def issue_comments(self, number: int) -> list[dict[str, Any]]:
        """An issue's (or pull request's) comments: ``id``, ``body``, ``user`` {``login``,
        ``type``}, ``author_association``, ``html_url``."""
        return self._all(f"/repos/{self.repo}/issues/{number}/comments", f"reading comments of #{number}")

    def review_comments(self, number: int) -> list[dict[str, Any]]:
        """A pull request's review comments (on lines of its diff), shaped as issue comments plus ``path``."""
        return self._all(f"/repos/{self.repo}/pulls/{number}/comments", f"reading review comments of #{number}")

    def check_runs(self, sha: str) -> list[dict[str, Any]]:
        """The check runs of a commit ("Checks" API): ``id``, ``name``, ``status``,
        ``conclusion``, ``output`` {``title``, ``summary``}."""
        resp = self.request("GET", f"/repos/{self.repo}/commits/{sha}/check-runs", params={"per_page": "100"})
        self._check(resp, f"reading the check runs of {sha[:12]}")
        runs: list[dict[str, Any]] = resp.json().get("check_runs", [])
        return runs

    def me(self) -> str | None:
        """The login the token belongs to (None: anonymous, or GitHub would not say)."""
        if not self.has_token:
            return None
        resp = self.request("GET", "/user")
        if resp.status_code != 200:
            return None
        login = resp.json().get("login")
        return str(login) if login else None

    def create_issue(self, title: str, body: str, labels: list[str]) -> dict[str, Any]:
        """Open an issue; returns it (``number``, ``html_url``)."""
        resp = self.request("POST", f"/repos/{self.repo}/issues", json={"title": title, "body": body, "labels": labels})
        self._check(resp, "opening an issue")
        issue: dict[str, Any] = resp.json()
        return issue

    # -- pull requests ("Pulls" in GitHub's REST documentation)

    def pull(self, number: int) -> dict[str, Any]:
        """One pull request: ``state`` (open/closed), ``merged``, ``head`` {``ref``, ``sha``}."""
        resp = self.request("GET", f"/repos/{self.repo}/pulls/{number}")
        self._check(resp, f"reading pull request #{number}")
        pull: dict[str, Any] = resp.json()
        return pull

    def find_pull(self, branch: str) -> dict[str, Any] | None:
        """The open pull request whose head is ``branch`` of this repository, if any."""
        owner = self.repo.split("/")[0]
        resp = self.request("GET", f"/repos/{self.repo}/pulls", params={"head": f"{owner}:{branch}", "state": "open"})
        self._check(resp, f"looking for a pull request from {branch}")
        found = resp.json()
        return found[0] if isinstance(found, list) and found else None

    def create_pull(self, title: str, branch: str, base: str, body: str) -> dict[str, Any]:
        """Open a pull request from ``branch`` into ``base``; returns it (``number``, ``html_url``)."""
        resp = self.request(
            "POST", f"/repos/{self.repo}/pulls", json={"title": title, "head": branch, "base": base, "body": body}
        )
        self._check(resp, f"opening a pull request from {branch}")
        pull: dict[str, Any] = resp.json()
        return pull


def client_for(
    settings: GitHubSettings,
    home_root: Path | None = None,
    sleep: Callable[[float], None] = time.sleep,
    stats: bool = False,
) -> GitHub:
    """A client for the layout's ``github:`` section, with the token from its
    ``token_env`` (anonymous if unset or empty: :meth:`GitHub.require_token` says so),
    keeping ETags and the intake's place under ``state/`` of the home so that polls by
    later processes are conditional too.

    Raises:
        GitHubError: the token has characters a token cannot have.
    """
    etags = home_root / "state" / "github-etags.json" if home_root else None
    # only the controller's client keeps the counts /metrics shows: a command's own few would
    # make the counter go backwards
    stats_file = home_root / "run" / "github-stats.json" if home_root and stats else None
    return GitHub(
        settings.repo,
        os.environ.get(settings.token_env),
        settings.token_env,
        settings.api_url,
        sleep=sleep,
        etag_file=etags,
        stats_file=stats_file,
    )
