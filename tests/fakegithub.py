"""A local HTTP server on 127.0.0.1 that speaks the subset of GitHub's REST API miyabi
uses, with bodies shaped like GitHub's documented examples (issue: number, title,
body, state, labels [{name}], user {login}, author_association, html_url,
created_at, updated_at, and pull_request on PRs). Faults can be queued: the next
requests get those answers.

Listing a repository's issues follows GitHub's REST documentation ("List repository
issues"): ``state`` (open, closed, all; default open), ``labels`` (all of them),
``sort`` (created, updated; default created), ``direction`` (asc, desc; default desc),
``since`` (only issues updated at or after that time, ISO 8601; anything else is 422),
``per_page`` and ``page``, with a ``Link`` header to the next page and an ``ETag`` a
matching ``If-None-Match`` gets 304 for. As on GitHub, every change to an issue made
through the API (labels, comments, a new issue) moves its ``updated_at`` to now; tests
that change an issue themselves use :meth:`FakeGitHub.edit`, which does the same."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlparse

from localserver import LocalServer


class FakeGitHub(LocalServer):
    def __init__(self, repo: str = "acme/widgets") -> None:
        self.repo = repo
        self.issues: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[str]] = {}
        self.faults: deque[tuple[int, dict[str, str]]] = deque()
        self.delete_faults: deque[tuple[int, dict[str, str]]] = deque()
        self.post_faults: deque[tuple[int, dict[str, str]]] = deque()
        """Answers for the next POSTs only (``faults`` answer the next requests of any kind)."""
        self.requests: list[tuple[str, str]] = []
        self.answers: list[tuple[float, str, str, int]] = []
        """Every answer sent: (time.monotonic(), method, path with query, status)."""
        self.clock: Callable[[], float] = time.time
        """GitHub's clock: what ``created_at`` and ``updated_at`` are stamped with (whole seconds)."""
        self.pulls: dict[int, dict[str, Any]] = {}
        self.comment_objects: dict[int, list[dict[str, Any]]] = {}
        """Issue or PR number → its comments as GitHub shows them (``comments`` holds their bodies)."""
        self.review: dict[int, list[dict[str, Any]]] = {}
        self.check_runs: dict[str, list[dict[str, Any]]] = {}
        """Commit sha → its check runs."""
        self.login = "miyabi-bot"
        """The login of the token's user (``GET /user``); comments sent with a token are by it."""
        self._ids = 1000
        self.remote: str | None = None
        """A bare git repository standing for GitHub's copy: pull requests' ``head.sha`` is read from it."""
        LocalServer.__init__(self, self._handler())

    def section(self, **more: Any) -> dict[str, Any]:
        """A layout's ``github:`` section for this stand-in (its repository and address, the
        token in ``FAKE_GH_TOKEN``) with ``more`` keys, for ``helpers.write_layout(github=...)``."""
        return {"repo": self.repo, "api_url": self.url, "token_env": "FAKE_GH_TOKEN", **more}

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def add_comment(
        self,
        number: int,
        body: str,
        login: str = "alice",
        association: str = "MEMBER",
        kind: str = "User",
        review: bool = False,
        id_: int | None = None,
    ) -> dict[str, Any]:
        """A comment by someone else (``review``: a review comment on the diff)."""
        c = {
            "id": id_ or self.next_id(),
            "body": body,
            "user": {"login": login, "type": kind},
            "author_association": association,
            "html_url": f"https://github.example/{self.repo}/pull/{number}#c",
        }
        with self.lock:
            if review:
                self.review.setdefault(number, []).append({**c, "path": "feature.txt"})
            else:
                self.comment_objects.setdefault(number, []).append(c)
                self.comments.setdefault(number, []).append(body)
        return c

    def add_check_run(self, sha: str, name: str, conclusion: str, summary: str) -> None:
        with self.lock:
            self.check_runs.setdefault(sha, []).append(
                {
                    "id": self.next_id(),
                    "name": name,
                    "status": "completed",
                    "conclusion": conclusion,
                    "output": {"title": name, "summary": summary},
                }
            )

    def merge(self, number: int) -> None:
        with self.lock:
            self.pulls[number].update(state="closed", merged=True)

    def next_number(self) -> int:
        return max([0, *self.issues, *self.pulls]) + 1

    def add_pull(self, title: str, head: str, base: str, body: str) -> dict[str, Any]:
        """A pull request, numbered with the issues (as GitHub does); also an issue entry, for labels and comments."""
        n = self.next_number()
        pull = {
            "number": n,
            "title": title,
            "head": {"ref": head, "label": f"{self.repo.split('/')[0]}:{head}"},
            "base": {"ref": base},
            "body": body,
            "state": "open",
            "merged": False,
            "html_url": f"https://github.example/{self.repo}/pull/{n}",
        }
        self.pulls[n] = pull
        self.add_issue(n, title, [], body=body, pr=True)
        return pull

    def add_issue(
        self,
        number: int,
        title: str,
        labels: list[str],
        body: str = "",
        association: str = "MEMBER",
        login: str = "alice",
        pr: bool = False,
        state: str = "open",
        at: float | None = None,
    ) -> None:
        """An issue (or, with ``pr``, a pull request's issue entry) created now, or at ``at`` (Unix time)."""
        issue = {
            "number": number,
            "title": title,
            "body": body,
            "state": state,
            "labels": [{"name": n} for n in labels],
            "user": {"login": login},
            "author_association": association,
            "html_url": f"https://github.example/{self.repo}/issues/{number}",
            "created_at": self.stamp(at),
            "updated_at": self.stamp(at),
        }
        if pr:
            issue["pull_request"] = {"url": "x"}
        self.issues[number] = issue

    def labels(self, number: int) -> list[str]:
        return [label["name"] for label in self.issues[number]["labels"]]

    def stamp(self, at: float | None = None) -> str:
        """A time as GitHub writes it (``2026-11-22T09:30:00Z``): ``at``, or now by :attr:`clock`."""
        return datetime.fromtimestamp(int(self.clock() if at is None else at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def touch(self, number: int, at: float | None = None) -> None:
        """Move an issue's ``updated_at`` to now (or ``at``), as any change on GitHub does."""
        self.issues[number]["updated_at"] = self.stamp(at)

    def edit(
        self,
        number: int,
        *,
        add_labels: Sequence[str] = (),
        remove_labels: Sequence[str] = (),
        at: float | None = None,
        **fields: Any,
    ) -> None:
        """Change an issue as someone on GitHub would (``state="closed"``, ``title=…``,
        labels added or removed); its ``updated_at`` moves to now (or ``at``)."""
        with self.lock:
            issue = self.issues[number]
            issue.update(fields)
            names = [lb["name"] for lb in issue["labels"] if lb["name"] not in remove_labels]
            names += [n for n in add_labels if n not in names]
            issue["labels"] = [{"name": n} for n in names]
            self.touch(number, at)

    def _listing(self, q: dict[str, str]) -> tuple[int, Any]:
        """``GET /repos/{repo}/issues``: (status, every matching issue in order, or an error body)."""
        want = [x for x in q.get("labels", "").split(",") if x]
        state = q.get("state", "open")
        sort, direction = q.get("sort", "created"), q.get("direction", "desc")
        valid = state in ("open", "closed", "all") and sort in ("created", "updated") and direction in ("asc", "desc")
        if not valid:
            return 422, {"message": "Validation Failed"}
        since = ""  # stamps written alike compare as text
        if "since" in q:
            try:
                when = datetime.fromisoformat(q["since"])  # 3.11 reads the Z
            except ValueError:
                return 422, {"message": "Validation Failed", "errors": [{"field": "since", "code": "invalid"}]}
            since = self.stamp(math.ceil((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()))
        with self.lock:
            items = [
                i
                for i in self.issues.values()
                if (state == "all" or i["state"] == state)
                and i["updated_at"] >= since
                and all(w in [lb["name"] for lb in i["labels"]] for w in want)
            ]
        items.sort(key=lambda i: (i[f"{sort}_at"], i["number"]), reverse=direction == "desc")
        return 200, items

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                # no lock: some answers are sent while fake.lock is held (list.append is atomic)
                fake.answers.append((time.monotonic(), self.command, self.path, code))
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _fault(self) -> bool:
                with fake.lock:
                    fake.requests.append((self.command, self.path))
                    if not fake.faults:
                        return False
                    code, headers = fake.faults.popleft()
                self._send(code, {"message": "fault"}, headers)
                return True

            def do_GET(self) -> None:
                if self._fault():
                    return
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                parts = u.path.split("/")
                if u.path == "/user":
                    return self._send(200, {"login": fake.login})
                if u.path.endswith("/comments") and parts[4] == "pulls":
                    with fake.lock:
                        return self._send(200, list(fake.review.get(int(parts[5]), [])))
                if u.path.endswith("/comments"):
                    n = int(parts[5])
                    with fake.lock:
                        return self._send(200, list(fake.comment_objects.get(n, [])))
                if u.path.endswith("/check-runs"):
                    with fake.lock:
                        runs = list(fake.check_runs.get(parts[5], []))
                    return self._send(200, {"total_count": len(runs), "check_runs": runs})
                if parts[4] == "pulls" and len(parts) == 6:
                    with fake.lock:
                        pull = fake.pulls.get(int(parts[5]))
                    if pull is None:
                        return self._send(404, {"message": "Not Found"})
                    if fake.remote:
                        head = subprocess.run(
                            ["git", "rev-parse", f"refs/heads/{pull['head']['ref']}"],
                            cwd=fake.remote,
                            capture_output=True,
                            text=True,
                            check=False,
                        ).stdout.strip()
                        pull = {**pull, "head": {**pull["head"], "sha": head}}
                    return self._send(200, pull)
                if u.path == f"/repos/{fake.repo}/pulls":
                    with fake.lock:
                        found = [
                            p
                            for p in fake.pulls.values()
                            if p["state"] == q.get("state", "open")
                            and ("head" not in q or p["head"]["label"] == q["head"])
                        ]
                    return self._send(200, found)
                if u.path != f"/repos/{fake.repo}/issues":
                    return self._send(404, {"message": "Not Found"})
                code, items = fake._listing(q)
                if code != 200:
                    return self._send(code, items)
                page, per = int(q.get("page", "1")), int(q.get("per_page", "30"))
                with fake.lock:  # a copy: the issues change under other requests
                    chunk = json.loads(json.dumps(items[(page - 1) * per : page * per]))
                more = page * per < len(items)
                etag = '"' + hashlib.sha1(json.dumps([chunk, more], sort_keys=True).encode()).hexdigest() + '"'
                if self.headers.get("If-None-Match") == etag:
                    return self._send(304)
                headers = {"ETag": etag}
                if page * per < len(items):
                    nq = dict(q, page=str(page + 1))
                    headers["Link"] = f'<{fake.url}{u.path}?{urlencode(nq)}>; rel="next"'
                self._send(200, chunk, headers)

            def do_DELETE(self) -> None:
                if self._fault():
                    return
                with fake.lock:
                    fault = fake.delete_faults.popleft() if fake.delete_faults else None
                if fault is not None:
                    return self._send(fault[0], {"message": "fault"}, fault[1])
                parts = urlparse(self.path).path.split("/")  # /repos/o/r/issues/N/labels/NAME
                n, name = int(parts[5]), unquote(parts[7])
                with fake.lock:
                    issue = fake.issues.get(n)
                    if issue is None or name not in [lb["name"] for lb in issue["labels"]]:
                        return self._send(404, {"message": "Label does not exist"})
                    issue["labels"] = [lb for lb in issue["labels"] if lb["name"] != name]
                    fake.touch(n)
                    labels = issue["labels"]
                self._send(200, labels)

            def do_POST(self) -> None:
                if self._fault():
                    return
                parts = urlparse(self.path).path.split("/")
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                with fake.lock:
                    fault = fake.post_faults.popleft() if fake.post_faults else None
                if fault is not None:
                    return self._send(fault[0], {"message": "fault"}, fault[1])
                if parts[4] == "pulls" and len(parts) == 5:
                    with fake.lock:
                        if any(p["head"]["ref"] == body["head"] and p["state"] == "open" for p in fake.pulls.values()):
                            return self._send(422, {"message": "Validation Failed: a pull request already exists"})
                        pull = fake.add_pull(body["title"], body["head"], body["base"], body.get("body", ""))
                    return self._send(201, pull)
                if parts[4] == "issues" and len(parts) == 5:
                    with fake.lock:
                        n = fake.next_number()
                        fake.add_issue(
                            n,
                            body["title"],
                            body.get("labels", []),
                            body=body.get("body", ""),
                            association="OWNER",
                            login=fake.login,
                        )
                    return self._send(201, fake.issues[n])
                n = int(parts[5])
                with fake.lock:
                    issue = fake.issues[n]
                    if parts[6] == "labels":
                        for name in body["labels"]:
                            if name not in [lb["name"] for lb in issue["labels"]]:
                                issue["labels"].append({"name": name})
                        fake.touch(n)
                        return self._send(200, issue["labels"])
                    fake.comments.setdefault(n, []).append(body["body"])
                    fake.touch(n)
                    c = {
                        "id": fake.next_id(),
                        "body": body["body"],
                        "user": {"login": fake.login, "type": "User"},
                        "author_association": "OWNER",
                    }
                    fake.comment_objects.setdefault(n, []).append(c)
                self._send(201, c)

        return Handler
