"""A stand-in for the model APIs the agent CLIs talk to, on 127.0.0.1: Anthropic
Messages (Claude Code), OpenAI Responses (Codex CLI), OpenAI Chat Completions
(aider, through litellm) and Gemini's generateContent (Gemini CLI), all streamed as
server-sent events the way the providers document them. It logs every request with its
arrival and end times, so tests know exactly which prompts reached "the model" and when a request was in flight.

A prompt steers the answer with directives in double brackets:

- ``[[delay 3]]``: answer after 3 s (default: the server's ``delay``);
- ``[[tool]]``: answer with a tool call that needs the user's permission (a shell
  command that creates a file named ``miyabi-tool-<n>``); the request that carries its
  result is answered with plain text. ``[[tool CMD]]``: the shell command is ``CMD``.

A plain answer echoes the first line of the prompt (so that whatever phrases it held show on
the agent's screen) and reports token usage.

An answer is given whole or the test hears of it: a client that goes away before or
during its answer (a CLI that timed out, or was killed), a request body cut short, or a
request the stand-in cannot answer (answered 500, which the CLI reports) is recorded on
its :class:`Request` (``error``), and :meth:`FakeModel.check` raises for it, as do the
waiting helpers; a test that cuts a client short on purpose says so with
:meth:`FakeModel.forgive_cut`. Waiting for prompts that do not come fails, never returns
the part that came.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from localserver import LocalServer

DIRECTIVE = re.compile(r"\[\[(\w+)(?: ([^\]]*))?\]\]")


@dataclass
class Request:
    """One model request.

    Attributes:
        api: ``messages``, ``responses`` or ``chat``.
        model: the model the client asked for.
        prompt: the text of the last user turn ("" when the turn carries a tool result).
        tool_result: the last user turn carries a tool's result (the same turn goes on).
        main: the request belongs to the conversation (it offers tools, or it is a chat
            request); side requests such as Claude Code's title generation are not.
        started: time.time() when the request arrived.
        ended: time.time() when the stand-in was done with it: its answer complete, or
            given up (see ``error``); None while in flight.
        answer: the text answered ("" for a tool call, and for an answer not given whole).
        error: why the answer was not given whole (None: it was).
        cut: the client went away (before or during its answer, or mid-body), rather
            than the stand-in failing.
    """

    api: str
    model: str
    prompt: str
    tool_result: bool
    main: bool
    started: float
    ended: float | None = None
    answer: str = ""
    tool_call: bool = False
    tools: list[str] = field(default_factory=list)
    error: str | None = None
    cut: bool = False
    command: str | None = None
    """The shell command its tool call runs (``[[tool CMD]]``)."""
    limited: bool = False
    """Answered with the provider's rate-limit error (see :meth:`FakeModel.limit`)."""
    history: str = ""
    """Every text of the conversation the request carries before its last turn,
    joined (what a resumed CLI sends again of its earlier turns)."""


def _text_of(content: Any, kinds: tuple[str, ...] = ("text", "input_text")) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") in kinds:
            text = str(block.get("text", ""))
            if not text.lstrip().startswith("<system-reminder>"):
                parts.append(text)
    return "\n".join(parts)


def _parse(api: str, body: dict[str, Any]) -> tuple[str, bool, list[str]]:
    """(prompt, tool_result, tool names) of a request body."""
    tools = [str(t.get("name") or t.get("function", {}).get("name") or t.get("type")) for t in body.get("tools") or []]
    if api == "responses":
        items = body.get("input") or []
        if isinstance(items, str):
            return items, False, tools
        last = items[-1] if items else {}
        if last.get("type") in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
            return "", True, tools
        return _text_of(last.get("content")), False, tools
    if api == "gemini":
        decl = [d.get("name") for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
        contents = body.get("contents") or []
        last = contents[-1] if contents else {}
        parts = last.get("parts") or []
        if any("functionResponse" in p for p in parts):
            return "", True, [str(d) for d in decl]
        texts = [str(p["text"]) for p in parts if "text" in p and not str(p["text"]).startswith("<session_context>")]
        return (texts[-1] if texts else ""), False, [str(d) for d in decl]
    messages = body.get("messages") or []
    if messages and messages[-1].get("role") == "tool":
        return "", True, tools
    users = [m for m in messages if m.get("role") in ("user", "tool")]
    last = users[-1] if users else {}
    if last.get("role") == "tool":
        return "", True, tools
    content = last.get("content")
    text = _text_of(content)
    if (
        not text.strip()
        and isinstance(content, list)
        and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    ):
        return "", True, tools
    return text, False, tools


def _history(api: str, body: dict[str, Any]) -> str:
    """The texts of a request's conversation before its last item, joined."""
    if api == "responses":
        given = body.get("input")
        items: list[Any] = given if isinstance(given, list) else []
        earlier = [
            _text_of(i.get("content"), ("text", "input_text", "output_text")) for i in items[:-1] if isinstance(i, dict)
        ]
    elif api == "gemini":
        earlier = [str(p.get("text", "")) for c in (body.get("contents") or [])[:-1] for p in c.get("parts") or []]
    else:
        earlier = [_text_of(m.get("content")) for m in (body.get("messages") or [])[:-1] if isinstance(m, dict)]
    return "\n".join(t for t in earlier if t)


def _fill(schema: dict[str, Any]) -> Any:
    """A value of JSON ``schema`` (the first of an enum, empty or zero otherwise)."""
    kind = str(schema.get("type", "object")).lower()
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object":
        return {k: _fill(v) for k, v in (schema.get("properties") or {}).items()}
    return {"array": [], "string": "ok", "boolean": False, "integer": 0, "number": 0}.get(kind)


class FakeModel(LocalServer):
    """The server. Use as a context manager; ``url`` is its base address.

    Args:
        delay: seconds before each answer starts, unless a prompt says otherwise.
    """

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self.requests: list[Request] = []
        self.tool_calls = 0
        self._forgiven_before = 0.0
        self.limited: dict[str, float] = {}
        """API → the seconds its rate-limit answers tell the client to wait: every
        request to it is answered 429 the way its provider answers one over its limit
        (see :meth:`limit`)."""
        LocalServer.__init__(self, self._handler())

    def limit(self, api: str, retry_after: float | None = 60.0) -> None:
        """Answer every request to ``api`` (``messages``, ``responses``, ``chat``,
        ``gemini``) with its provider's rate-limit error (HTTP 429, ``retry-after``
        seconds) until :meth:`unlimit`; ``retry_after`` None: no such header."""
        with self.lock:
            self.limited[api] = -1.0 if retry_after is None else retry_after

    def unlimit(self, api: str) -> None:
        """Answer ``api`` normally again."""
        with self.lock:
            self.limited.pop(api, None)

    def limited_requests(self, api: str) -> int:
        """How many requests to ``api`` were answered with a rate-limit error."""
        with self.lock:
            return sum(1 for r in self.requests if r.api == api and r.limited)

    # -- what tests read

    def prompts(self) -> list[Request]:
        """The conversation's new user turns, in arrival order."""
        with self.lock:
            return [r for r in self.requests if r.main and not r.tool_result]

    def failures(self) -> list[Request]:
        """Requests whose answer was not given whole and that no :meth:`forgive_cut` covers."""
        with self.lock:
            return [
                r for r in self.requests if r.error is not None and not (r.cut and r.started < self._forgiven_before)
            ]

    def forgive_cut(self, before: float) -> None:
        """Clients of requests that arrived before ``before`` (``time.time()``) may go away
        without their answer: a test that kills a CLI mid-turn calls this once the CLI
        is back (its new process's requests arrive later and stay checked)."""
        with self.lock:
            self._forgiven_before = max(self._forgiven_before, before)

    def check(self) -> None:
        """Fail for every answer not given whole (see :meth:`failures`).

        Raises:
            AssertionError: one line per such request: its API, prompt and what happened.
        """
        bad = self.failures()
        if bad:
            raise AssertionError(
                "the model stand-in did not give every answer whole:\n"
                + "\n".join(f"  {r.api} {'' if r.main else '(side) '}{r.prompt[:60]!r}: {r.error}" for r in bad)
            )

    def wait_prompts(self, n: int, timeout: float) -> list[Request]:
        """The conversation's prompts once there are at least ``n`` (see :meth:`prompts`).

        Raises:
            AssertionError: fewer than ``n`` came within ``timeout`` seconds (the message
                says how many did), or an answer was not given whole meanwhile.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            got = self.prompts()
            if len(got) >= n:
                return got
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the model got {len(got)} of {n} prompts within {timeout:.0f}s: {[r.prompt[:40] for r in got]}"
                )
            time.sleep(0.05)

    def wait_answered(self, timeout: float) -> list[Request]:
        """Every conversation request, once none is in flight and each was answered whole.

        Raises:
            AssertionError: one was still in flight after ``timeout`` seconds, or an answer
                was not given whole.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            with self.lock:
                mine = [r for r in self.requests if r.main]
            open_ = [r for r in mine if r.ended is None]
            if not open_:
                return mine
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{len(open_)} model request(s) still in flight after {timeout:.0f}s: "
                    f"{[r.prompt[:40] for r in open_]}"
                )
            time.sleep(0.05)

    def _failed(self, req: Request, error: str, cut: bool) -> None:
        with self.lock:
            req.error, req.cut = error, cut

    # -- answering

    def _answer(self, req: Request, body: dict[str, Any]) -> tuple[float, str, bool]:
        """(delay, text, tool call?) for a request."""
        # directives steer the conversation; a CLI's side calls (titles) answer at once
        directives = {m.group(1): m.group(2) or "" for m in DIRECTIVE.finditer(req.prompt)} if req.main else {}
        delay = float(directives["delay"]) if "delay" in directives else self.delay
        if "tool" in directives and req.main:
            req.command = directives["tool"] or None
            return delay, "", True
        if req.tool_result:
            return self.delay, "The command ran.", False
        head = req.prompt.strip().splitlines()[0][:120] if req.prompt.strip() else ""
        return delay, f"Answer: {head}", False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            sent = 0
            """Bytes of the current answer written so far (1 once its status line is out)."""

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, data: Any) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.sent = 1  # the status line is out: no other answer can follow
                self.wfile.write(raw)
                self.sent += len(raw)

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                if path.endswith("/models"):
                    self._json(
                        200,
                        {
                            "object": "list",
                            "data": [
                                {
                                    "id": "fake-model",
                                    "object": "model",
                                    "created": 0,
                                    "owned_by": "miyabi-tests",
                                    "type": "model",
                                    "display_name": "Fake",
                                    "created_at": "2026-01-01T00:00:00Z",
                                }
                            ],
                        },
                    )
                else:
                    self._json(404, {"error": {"type": "not_found_error", "message": f"no {path} here"}})

            def do_POST(self) -> None:
                self.sent = 0
                path = self.path.split("?")[0].rstrip("/")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if len(raw) < length:
                    self._unanswered(path, f"the client went away {len(raw)} of {length} bytes into its request", True)
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._unanswered(path, "the request is not JSON (answered 400)", False)
                    self._json(400, {"error": {"type": "invalid_request_error", "message": "not JSON"}})
                    return
                try:
                    self._serve_post(path, raw, body)
                except Exception as e:  # noqa: BLE001 - any failure of the stand-in: the test and the CLI hear of it
                    self._unanswered(path, f"the stand-in failed: {type(e).__name__}: {e}", False)
                    if not self.sent:
                        self._json(500, {"error": {"type": "api_error", "message": f"stand-in: {e}"}})

            def _unanswered(self, path: str, error: str, cut: bool) -> None:
                """Record a request that got no whole answer before it was parsed."""
                req = Request(path, "", "", False, False, time.time(), ended=time.time())
                with model.lock:
                    model.requests.append(req)
                model._failed(req, error, cut)

            def _client_gone(self, wait: float) -> bool:
                """Wait ``wait`` seconds (the answer's delay), or less: True as soon as the
                client closes its connection (it timed out, or was killed)."""
                readable, _, _ = select.select([self.connection], [], [], max(0.0, wait))
                if not readable:
                    return False
                try:
                    waiting = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    waiting = b"?"
                except OSError:  # reset
                    return True
                if not waiting:  # end of stream: closed
                    return True
                time.sleep(max(0.0, wait))  # bytes of a next request: the client is there
                return False

            def _serve_post(self, path: str, raw: bytes, body: dict[str, Any]) -> None:
                if path.endswith("/count_tokens"):
                    self._json(200, {"input_tokens": max(1, len(raw) // 4)})
                    return
                if ":generateContent" in path or ":streamGenerateContent" in path:
                    api = "gemini"
                    body.setdefault("model", path.rsplit("/", 1)[-1].split(":")[0])
                    body["stream"] = ":streamGenerateContent" in path
                elif path.endswith(":countTokens"):
                    self._json(200, {"totalTokens": max(1, len(raw) // 4)})
                    return
                elif path.endswith("/messages"):
                    api = "messages"
                elif path.endswith("/responses"):
                    api = "responses"
                elif path.endswith("/chat/completions"):
                    api = "chat"
                else:
                    self._json(404, {"error": {"type": "not_found_error", "message": f"no {path} here"}})
                    return
                prompt, tool_result, tools = _parse(api, body)
                # aider offers no tools; a model called "*-small" does a CLI's side work (titles)
                main = (bool(tools) or api == "chat") and not str(body.get("model", "")).endswith("-small")
                if api == "gemini" and not body.get("stream"):
                    main = False  # Gemini CLI's side calls (next speaker, loop checks) are not streamed
                req = Request(
                    api,
                    str(body.get("model", "")),
                    prompt,
                    tool_result,
                    main,
                    time.time(),
                    tools=tools,
                    history=_history(api, body),
                )
                with model.lock:
                    model.requests.append(req)
                    wait = model.limited.get(api)
                if wait is not None:
                    req.limited, req.ended = True, time.time()
                    self._rate_limited(api, wait)
                    return
                try:
                    self._reply(req, raw, body, api, tools)
                except Exception as e:  # noqa: BLE001 - recorded for the test, answered 500 if nothing was sent
                    model._failed(req, f"the stand-in failed: {type(e).__name__}: {e}", False)
                    if not self.sent:
                        self._json(500, {"error": {"type": "api_error", "message": f"stand-in: {e}"}})
                finally:
                    req.ended = time.time()

            def _rate_limited(self, api: str, wait: float) -> None:
                """HTTP 429 with the provider's own error body for a request over its limit."""
                if api == "messages":
                    data: Any = {
                        "type": "error",
                        "error": {
                            "type": "rate_limit_error",
                            "message": "This request would exceed the rate limit for your organization.",
                        },
                    }
                elif api == "gemini":
                    data = {
                        "error": {
                            "code": 429,
                            "message": "Resource has been exhausted (e.g. check quota).",
                            "status": "RESOURCE_EXHAUSTED",
                        }
                    }
                else:
                    data = {
                        "error": {
                            "message": "Rate limit reached for fake-model on requests per min (RPM).",
                            "type": "requests",
                            "param": None,
                            "code": "rate_limit_exceeded",
                        }
                    }
                raw = json.dumps(data).encode()
                self.send_response(429)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                if wait >= 0:
                    self.send_header("retry-after", f"{wait:g}")
                self.end_headers()
                self.sent = 1
                self.wfile.write(raw)
                self.sent += len(raw)

            def _reply(self, req: Request, raw: bytes, body: dict[str, Any], api: str, tools: list[str]) -> None:
                delay, text, tool = model._answer(req, body)
                schema = (body.get("generationConfig") or {}).get("responseJsonSchema") or (
                    body.get("generationConfig") or {}
                ).get("responseSchema")
                if api == "gemini" and schema:  # a side call that wants JSON of this shape
                    text, tool, delay = json.dumps(_fill(schema)), False, 0.0
                if self._client_gone(delay):
                    model._failed(
                        req, f"the client went away before the answer ({time.time() - req.started:.1f}s)", True
                    )
                    return
                usage_in = max(1, len(raw) // 4)
                usage_out = max(1, len(text) // 4)
                try:
                    if tool:
                        with model.lock:
                            model.tool_calls += 1
                            n = model.tool_calls
                        req.tool_call = True
                        getattr(self, f"_{api}_tool")(req, tools, n, usage_in)
                    else:
                        stream = bool(body.get("stream", api in ("responses", "gemini")))
                        getattr(self, f"_{api}")(req, text, usage_in, usage_out, stream)
                except OSError as e:  # BrokenPipeError, ConnectionResetError
                    model._failed(
                        req, f"the client went away after {self.sent} bytes of the answer ({type(e).__name__})", True
                    )
                    return
                req.answer = text

            # -- server-sent events

            def _start_stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.sent = 1
                self.close_connection = True

            def _sse(self, data: Any, event: str | None = None) -> None:
                out = (
                    f"event: {event}\n" if event else ""
                ) + f"data: {json.dumps(data) if not isinstance(data, str) else data}\n\n"
                self.wfile.write(out.encode())
                self.wfile.flush()
                self.sent += len(out.encode())

            @staticmethod
            def _chunks(text: str) -> list[str]:
                return [text[i : i + 16] for i in range(0, len(text), 16)] or [""]

            # Anthropic Messages
            def _message_start(self, req: Request, usage_in: int) -> None:
                self._sse(
                    {
                        "type": "message_start",
                        "message": {
                            "id": f"msg_{id(req)}",
                            "type": "message",
                            "role": "assistant",
                            "model": req.model,
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": {
                                "input_tokens": usage_in,
                                "output_tokens": 1,
                                "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 0,
                            },
                        },
                    },
                    "message_start",
                )

            def _message_end(self, stop: str, usage_out: int) -> None:
                self._sse(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop, "stop_sequence": None},
                        "usage": {"output_tokens": usage_out},
                    },
                    "message_delta",
                )
                self._sse({"type": "message_stop"}, "message_stop")

            def _messages(self, req: Request, text: str, usage_in: int, usage_out: int, stream: bool) -> None:
                if not stream:
                    self._json(
                        200,
                        {
                            "id": f"msg_{id(req)}",
                            "type": "message",
                            "role": "assistant",
                            "model": req.model,
                            "content": [{"type": "text", "text": text}],
                            "stop_reason": "end_turn",
                            "stop_sequence": None,
                            "usage": {"input_tokens": usage_in, "output_tokens": usage_out},
                        },
                    )
                    return
                self._start_stream()
                self._message_start(req, usage_in)
                self._sse(
                    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                    "content_block_start",
                )
                for chunk in self._chunks(text):
                    self._sse(
                        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": chunk}},
                        "content_block_delta",
                    )
                self._sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
                self._message_end("end_turn", usage_out)

            def _messages_tool(self, req: Request, tools: list[str], n: int, usage_in: int) -> None:
                self._start_stream()
                self._message_start(req, usage_in)
                args = json.dumps(
                    {"command": req.command or f"touch miyabi-tool-{n}", "description": f"Create miyabi-tool-{n}"}
                )
                self._sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "tool_use", "id": f"toolu_{n:04d}", "name": "Bash", "input": {}},
                    },
                    "content_block_start",
                )
                self._sse(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": args},
                    },
                    "content_block_delta",
                )
                self._sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
                self._message_end("tool_use", 20)

            # OpenAI Responses
            def _resp_events(
                self, req: Request, item: dict[str, Any], deltas: list[str], usage_in: int, usage_out: int
            ) -> None:
                rid = f"resp_{id(req)}"
                self._start_stream()
                self._sse(
                    {
                        "type": "response.created",
                        "response": {"id": rid, "object": "response", "status": "in_progress", "model": req.model},
                    },
                    "response.created",
                )
                added = dict(item, content=[]) if item["type"] == "message" else dict(item, arguments="")
                self._sse(
                    {"type": "response.output_item.added", "output_index": 0, "item": added},
                    "response.output_item.added",
                )
                for d in deltas:
                    self._sse(
                        {
                            "type": "response.output_text.delta",
                            "item_id": item["id"],
                            "output_index": 0,
                            "content_index": 0,
                            "delta": d,
                        },
                        "response.output_text.delta",
                    )
                self._sse(
                    {"type": "response.output_item.done", "output_index": 0, "item": item}, "response.output_item.done"
                )
                self._sse(
                    {
                        "type": "response.completed",
                        "response": {
                            "id": rid,
                            "object": "response",
                            "status": "completed",
                            "model": req.model,
                            "output": [item],
                            "usage": {
                                "input_tokens": usage_in,
                                "input_tokens_details": {"cached_tokens": 0},
                                "output_tokens": usage_out,
                                "output_tokens_details": {"reasoning_tokens": 0},
                                "total_tokens": usage_in + usage_out,
                            },
                        },
                    },
                    "response.completed",
                )

            def _responses(self, req: Request, text: str, usage_in: int, usage_out: int, stream: bool) -> None:
                item = {
                    "type": "message",
                    "id": f"msg_{id(req)}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
                self._resp_events(req, item, self._chunks(text), usage_in, usage_out)

            def _responses_tool(self, req: Request, tools: list[str], n: int, usage_in: int) -> None:
                name = next((t for t in ("shell_command", "exec_command", "shell") if t in tools), "shell")
                cmd = req.command or f"touch miyabi-tool-{n}"
                if name == "shell":
                    args: dict[str, Any] = {"command": ["bash", "-lc", cmd]}
                elif name == "exec_command":
                    args = {"cmd": cmd}
                else:
                    args = {"command": cmd}
                args["sandbox_permissions"] = "require_escalated"
                args["justification"] = f"Create miyabi-tool-{n}"
                item = {
                    "type": "function_call",
                    "id": f"fc_{n:04d}",
                    "call_id": f"call_{n:04d}",
                    "name": name,
                    "arguments": json.dumps(args),
                    "status": "completed",
                }
                self._resp_events(req, item, [], usage_in, 20)

            # Gemini generateContent
            def _gemini(self, req: Request, text: str, usage_in: int, usage_out: int, stream: bool) -> None:
                self._gemini_parts(req, [{"text": c} for c in self._chunks(text)], usage_in, usage_out, stream)

            def _gemini_parts(
                self, req: Request, parts: list[dict[str, Any]], usage_in: int, usage_out: int, stream: bool
            ) -> None:
                usage = {
                    "promptTokenCount": usage_in,
                    "candidatesTokenCount": usage_out,
                    "totalTokenCount": usage_in + usage_out,
                }

                def chunk(ps: list[dict[str, Any]], last: bool) -> dict[str, Any]:
                    cand: dict[str, Any] = {"content": {"role": "model", "parts": ps}, "index": 0}
                    if last:
                        cand["finishReason"] = "STOP"
                    return {"candidates": [cand], "usageMetadata": usage, "modelVersion": req.model}

                if not stream:
                    self._json(200, chunk(parts, True))
                    return
                self._start_stream()
                for i, part in enumerate(parts):
                    self._sse(chunk([part], i == len(parts) - 1))

            def _gemini_tool(self, req: Request, tools: list[str], n: int, usage_in: int) -> None:
                name = next((t for t in ("run_shell_command", "shell") if t in tools), "run_shell_command")
                call = {
                    "functionCall": {
                        "name": name,
                        "args": {
                            "command": req.command or f"touch miyabi-tool-{n}",
                            "description": f"Create miyabi-tool-{n}",
                        },
                    }
                }
                self._gemini_parts(req, [call], usage_in, 20, True)

            # OpenAI Chat Completions
            def _chat(self, req: Request, text: str, usage_in: int, usage_out: int, stream: bool) -> None:
                usage = {
                    "prompt_tokens": usage_in,
                    "completion_tokens": usage_out,
                    "total_tokens": usage_in + usage_out,
                }
                if not stream:
                    self._json(
                        200,
                        {
                            "id": f"chatcmpl-{id(req)}",
                            "object": "chat.completion",
                            "created": int(time.time()),
                            "model": req.model,
                            "choices": [
                                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                            ],
                            "usage": usage,
                        },
                    )
                    return
                self._start_stream()
                base = {
                    "id": f"chatcmpl-{id(req)}",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": req.model,
                }
                for i, chunk in enumerate(self._chunks(text)):
                    delta = {"role": "assistant", "content": chunk} if i == 0 else {"content": chunk}
                    self._sse(dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": None}]))
                self._sse(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
                self._sse(dict(base, choices=[], usage=usage))
                self._sse("[DONE]")

            def _chat_tool(self, req: Request, tools: list[str], n: int, usage_in: int) -> None:
                if not tools:
                    # aider has no tools: it asks before running a shell command the answer suggests.
                    text = f"Run this:\n\n```bash\n{req.command or f'touch miyabi-tool-{n}'}\n```\n"
                    self._chat(req, text, usage_in, 20, True)
                    return
                name = next((t for t in ("bash", "shell", "run_shell_command") if t in tools), tools[0])
                args = json.dumps(
                    {"command": req.command or f"touch miyabi-tool-{n}", "description": f"Create miyabi-tool-{n}"}
                )
                self._start_stream()
                base = {
                    "id": f"chatcmpl-{id(req)}",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": req.model,
                }
                call = {
                    "index": 0,
                    "id": f"call_{n:04d}",
                    "type": "function",
                    "function": {"name": name, "arguments": args},
                }
                self._sse(
                    dict(
                        base,
                        choices=[
                            {"index": 0, "delta": {"role": "assistant", "tool_calls": [call]}, "finish_reason": None}
                        ],
                    )
                )
                self._sse(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]))
                self._sse(
                    dict(
                        base,
                        choices=[],
                        usage={"prompt_tokens": usage_in, "completion_tokens": 20, "total_tokens": usage_in + 20},
                    )
                )
                self._sse("[DONE]")

        return Handler
