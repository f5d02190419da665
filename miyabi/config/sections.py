"""The layout's settings sections, one validator each: ``delivery:``, ``watchdog:``,
``logs:``, ``web:``, ``bus:``, ``notify:``, ``github:``, ``approvals:``, ``tasks:``,
``report:``, ``routes:`` and ``roles:``. Each records every defect it finds in the
:class:`~miyabi.config.document.Document` and returns the valid settings (or the
defaults), so that one defect never hides another."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Sequence
from typing import Any

from miyabi import defaults
from miyabi.config.document import ENV_KEY_RE, Document, Key, check_keys, unknown
from miyabi.config.settings import (
    BUDGET_KEYS,
    HOST_RE,
    NAME_RE,
    PARK_KEYS,
    SANDBOX_KEYS,
    WATCHDOG_KEYS,
    AutoAnswer,
    BudgetPer,
    BudgetSettings,
    BusSettings,
    GitHubSettings,
    LogSettings,
    OnRestart,
    Receiver,
    ReceiverKind,
    ReportSettings,
    RolesSettings,
    Route,
    SandboxEngine,
    SandboxNetwork,
    SandboxSettings,
    TaskSettings,
    WebSettings,
    parse_duration,
    parse_size,
    redact,
)
from miyabi.events import NoticeKind

APPROVALS_KEYS = ("auto",)
AUTO_KEYS = ("answer", "agents", "tool", "match")
TASKS_KEYS = ("on_agent_restart", "max_attempts", "timeout", "label_timeouts")
GITHUB_KEYS = ("repo", "api_url", "token_env", "todo_label", "poll_interval", "allowed_authors", "fix_trigger")
DELIVERY_KEYS = ("max_body",)
REPORT_KEYS = ("every", "issue", "since")
LOGS_KEYS = ("max_bytes", "keep")
WEB_KEYS = ("host", "port", "read_only")
BUS_KEYS = ("url", "host", "password_env", "lease", "namespace")
NOTIFY_KEYS = (
    "kind",
    "url",
    "url_env",
    "events",
    "rate",
    "max_attempts",
    "retry_after",
    "timeout",
    *(k.value for k in ReceiverKind),
)
NOTICE_KINDS = tuple(str(k) for k in NoticeKind)
ROUTE_KEYS = ("label", "title", "default", "agent")
ROLES_KEYS = ("manager", "coder", "deployer", "monitor")
MONITOR_KEYS = ("interval",)


def validate_delivery(doc: Document, spec: Any) -> int:
    """The ``delivery:`` section: ``max_body`` (bytes, default 1 MiB)."""
    MAX_BODY = defaults.MAX_BODY

    if not isinstance(spec, dict):
        doc.problem(("delivery",), "must be a mapping (for example `delivery: {max_body: 1048576}`)")
        return MAX_BODY
    check_keys(doc, ("delivery",), spec, DELIVERY_KEYS)
    value = spec.get("max_body", MAX_BODY)
    if type(value) is not int or not 1 <= value <= 64 * 1024 * 1024:
        doc.problem(("delivery", "max_body"), f"{value!r} must be a whole number of bytes from 1 to 67108864")
        return MAX_BODY
    return value


def validate_hold(doc: Document, key: Key, value: Any) -> float:
    """``human_hold``: how long after a person's last key in a pane miyabi waits before
    typing into it (a duration from 0, never, to 1d); the default when wrong."""
    seconds = parse_duration(value)
    if seconds is None or seconds > 86400:
        doc.problem(key, f"{value!r} must be a duration from 0s to 1d (such as 30s or 2m; 0 turns it off)")
        return defaults.HUMAN_HOLD
    return seconds


def validate_logs(doc: Document, spec: Any) -> LogSettings:
    """``logs:``: ``max_bytes`` (a size such as ``10M``, or bytes; 0: never rotate) and
    ``keep`` (rotated files kept, 0 to 100)."""
    key: Key = ("logs",)
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping (for example `logs: {max_bytes: 10M, keep: 5}`)")
        return LogSettings()
    check_keys(doc, key, spec, LOGS_KEYS)
    kw: dict[str, Any] = {}
    if "max_bytes" in spec:
        size = parse_size(spec["max_bytes"])
        if size is not None and (size == 0 or size >= 1024):
            kw["max_bytes"] = size
        else:
            doc.problem(
                (*key, "max_bytes"),
                f"{spec['max_bytes']!r} must be a size of at least 1K, such as 10M, "
                "512K or 1048576 (bytes), or 0 to never rotate",
            )
    if "keep" in spec:
        keep = spec["keep"]
        if type(keep) is int and 0 <= keep <= 100:
            kw["keep"] = keep
        else:
            doc.problem((*key, "keep"), f"{keep!r} must be a whole number of rotated files from 0 to 100")
    return LogSettings(**kw)


def validate_web(doc: Document, spec: Any) -> WebSettings | None:
    """``web:``: the dashboard the controller serves; ``{}`` or ``true`` for the defaults,
    ``false`` (or nothing) for none."""
    key: Key = ("web",)
    if spec is True:
        return WebSettings()
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping (for example `web: {port: 8765}`), or true for the defaults")
        return None
    check_keys(doc, key, spec, WEB_KEYS)
    host = spec.get("host", defaults.WEB_HOST)
    if not isinstance(host, str) or not re.match(r"^[A-Za-z0-9.:\[\]-]+$", host):
        doc.problem((*key, "host"), f"{host!r} must be an address or host name (for example 127.0.0.1)")
    port = spec.get("port", defaults.WEB_PORT)
    if type(port) is not int or not 1 <= port <= 65535:
        doc.problem((*key, "port"), f"{port!r} must be a TCP port from 1 to 65535")
    read_only = spec.get("read_only", False)
    if type(read_only) is not bool:
        doc.problem((*key, "read_only"), f"{read_only!r} must be true or false")
    if not isinstance(host, str) or type(port) is not int or type(read_only) is not bool:
        return None
    return WebSettings(host=host, port=port, read_only=read_only)


def validate_bus(doc: Document, spec: Any) -> BusSettings | None:
    """``bus:``: the Redis that several hosts share (``{url, host, password_env, lease,
    namespace}``); ``host`` defaults to this machine's name."""
    key: Key = ("bus",)
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping such as `bus: {url: redis://HOST:6379/0}`")
        return None
    check_keys(doc, key, spec, BUS_KEYS)
    url = spec.get("url")
    ok = True
    if not isinstance(url, str) or not re.match(r"^(redis|rediss|unix)://\S+$", url):
        doc.problem(
            (*key, "url"),
            f"{redact(str(url)) if url is not None else 'nothing'} must be a Redis URL: "
            "redis://HOST:PORT/DB, rediss://… for TLS, or unix:///path/to/redis.sock",
        )
        ok = False
    host = spec.get("host", socket.gethostname().split(".")[0])
    if not isinstance(host, str) or not HOST_RE.match(host):
        doc.problem(
            (*key, "host"), f"{host!r} must be this machine's name on the bus: letters, digits, '.', '_' or '-'"
        )
        ok = False
    env = spec.get("password_env")
    if env is not None and (not isinstance(env, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", env)):
        doc.problem(
            (*key, "password_env"), f"{env!r} must be the name of an environment variable (such as MIYABI_BUS_PASSWORD)"
        )
        ok = False
    lease = parse_duration(spec.get("lease", defaults.BUS_LEASE))
    if lease is None or not 1 <= lease <= 86400:
        doc.problem((*key, "lease"), f"{spec.get('lease')!r} must be a duration from 1s to 1d (such as 30s)")
        ok = False
    namespace = spec.get("namespace", defaults.BUS_NAMESPACE)
    if not isinstance(namespace, str) or not HOST_RE.match(namespace):
        doc.problem((*key, "namespace"), f"{namespace!r} must be letters, digits, '.', '_' or '-'")
        ok = False
    if not ok:
        return None
    assert isinstance(url, str) and isinstance(host, str) and lease is not None and isinstance(namespace, str)
    return BusSettings(url=url, host=host, password_env=env, lease=lease, namespace=namespace)


def validate_notify(doc: Document, spec: Any) -> list[Receiver]:
    """``notify:``: a list of receivers, each ``{slack|discord|ntfy|webhook: URL}`` or
    ``{kind: K, url: URL}`` / ``{kind: K, url_env: VAR}``, with optional ``events``,
    ``rate`` (per minute), ``max_attempts``, ``retry_after`` and ``timeout`` (seconds)."""
    if not isinstance(spec, list):
        doc.problem(
            ("notify",), "must be a list of receivers (for example `notify: [{slack: https://hooks.slack.com/…}]`)"
        )
        return []
    out: list[Receiver] = []
    for i, raw in enumerate(spec):
        key: Key = ("notify", i)
        receiver = _receiver(doc, key, raw)
        if receiver is None:
            continue
        if any(r.key == receiver.key for r in out):
            doc.problem(key, "the same receiver as an earlier entry; give it once, with every event it wants")
            continue
        out.append(receiver)
    return out


def _receiver(doc: Document, key: Key, raw: Any) -> Receiver | None:
    """The receiver at ``notify[i]`` (``key``), or None when it has a defect (recorded)."""
    if not isinstance(raw, dict):
        doc.problem(key, "must be a mapping such as {slack: URL} or {kind: webhook, url_env: HOOK_URL}")
        return None
    check_keys(doc, key, raw, NOTIFY_KEYS)
    given = [k.value for k in ReceiverKind if k.value in raw]
    if len(given) > 1 or (given and "kind" in raw):
        doc.problem(
            key, f"names more than one kind ({', '.join(given + (['kind'] if 'kind' in raw else []))}); give one"
        )
        return None
    kind = given[0] if given else raw.get("kind")
    if kind not in [k.value for k in ReceiverKind]:
        doc.problem(
            (*key, "kind"),
            f"{kind!r} is not a receiver kind; use one of {', '.join(k.value for k in ReceiverKind)}",
        )
        return None
    url = raw[kind] if given else raw.get("url")
    url_env = raw.get("url_env")
    if (url is None) == (url_env is None):
        doc.problem(key, "needs a URL (or `url_env: VAR` naming the variable that holds it), and only one of them")
        return None
    if url is not None and not (isinstance(url, str) and re.match(r"^https?://[^\s/]+", url)):
        doc.problem((*key, kind if given else "url"), "must be an http:// or https:// URL")
        return None
    if url_env is not None and not (isinstance(url_env, str) and ENV_KEY_RE.match(url_env)):
        doc.problem((*key, "url_env"), f"{url_env!r} must be an environment variable name")
        return None
    events = raw.get("events", [])
    if events == "all":
        events = []
    if not isinstance(events, list) or any(e not in NOTICE_KINDS for e in events):
        bad = [e for e in events if e not in NOTICE_KINDS] if isinstance(events, list) else [events]
        doc.problem(
            (*key, "events"),
            f"{', '.join(map(repr, bad))} not known; use all, or a list of {', '.join(NOTICE_KINDS)}",
        )
        return None
    return Receiver(
        ReceiverKind(kind), url=url, url_env=url_env, events=tuple(events), **_receiver_limits(doc, key, raw)
    )


def _receiver_limits(doc: Document, key: Key, raw: dict[str, Any]) -> dict[str, Any]:
    """The valid ``rate``, ``max_attempts``, ``retry_after`` and ``timeout`` of a receiver."""
    kw: dict[str, Any] = {}
    for k, low, high in (
        ("rate", 0.1, 6000),
        ("max_attempts", 1, 100),
        ("retry_after", 0.01, 3600),
        ("timeout", 0.1, 120),
    ):
        if k in raw:
            v = raw[k]
            if type(v) not in (int, float) or not low <= v <= high or (k == "max_attempts" and type(v) is not int):
                doc.problem((*key, k), f"{v!r} must be a number from {low:g} to {high:g}")
                continue
            kw[k] = v
    return kw


def validate_github(doc: Document, spec: Any) -> GitHubSettings | None:
    """``github:``: ``repo`` (owner/name) and optional settings."""
    key: Key = ("github",)
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping with at least `repo: owner/name`")
        return None
    check_keys(doc, key, spec, GITHUB_KEYS)
    repo = spec.get("repo")
    if not isinstance(repo, str) or not re.match(r"^[\w.-]+/[\w.-]+$", repo):
        doc.problem((*key, "repo"), f"{repo!r} must be owner/name (for example acme/widgets)")
        return None
    kw: dict[str, Any] = {}
    for k in ("api_url", "token_env", "todo_label", "fix_trigger"):
        if k in spec:
            if isinstance(spec[k], str) and spec[k].strip():
                kw[k] = spec[k]
            else:
                doc.problem((*key, k), "must be text")
    if "poll_interval" in spec:
        v = spec["poll_interval"]
        if type(v) in (int, float) and v >= 1:
            kw["poll_interval"] = float(v)
        else:
            doc.problem((*key, "poll_interval"), f"{v!r} must be seconds, 1 or more")
    if "allowed_authors" in spec:
        v = spec["allowed_authors"]
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            kw["allowed_authors"] = tuple(v)
        else:
            doc.problem((*key, "allowed_authors"), "must be a list of GitHub logins")
    return GitHubSettings(repo=repo, **kw)


def validate_approvals(doc: Document, spec: Any, agents: Sequence[str]) -> list[AutoAnswer]:
    """``approvals: {auto: [{answer, agents, tool, match}, ...]}``: permission questions
    answered without a person, first matching rule wins (none: off)."""
    key: Key = ("approvals",)
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping (for example `approvals: {auto: [{tool: Read, answer: approve}]}`)")
        return []
    check_keys(doc, key, spec, APPROVALS_KEYS)
    rules = spec.get("auto", [])
    if not isinstance(rules, list):
        doc.problem(
            (*key, "auto"),
            "must be a list of rules such as `{tool: Bash, match: '^Bash: git status$', answer: approve}`",
        )
        return []
    out = []
    for i, r in enumerate(rules):
        rule = _auto_rule(doc, (*key, "auto", i), r, agents)
        if rule is not None:
            out.append(rule)
    return out


def _auto_rule(doc: Document, at: Key, r: Any, agents: Sequence[str]) -> AutoAnswer | None:
    """The rule at ``approvals.auto[i]`` (``at``), or None when it has a defect (recorded)."""
    if not isinstance(r, dict):
        doc.problem(at, "must be a mapping with answer (approve or deny) and tool, match or agents")
        return None
    check_keys(doc, at, r, AUTO_KEYS)
    answer = r.get("answer")
    ok = True
    if "answer" not in r:
        ok = False
        if all(k in AUTO_KEYS for k in r):  # a misspelt key was reported already
            doc.problem(at, "needs answer: approve or deny")
    elif answer not in ("approve", "deny"):
        doc.problem((*at, "answer"), f"{answer!r} must be approve or deny")
        ok = False
    who = _rule_agents(doc, at, r.get("agents", []), agents)
    ok = who is not None and ok
    tool, match = r.get("tool"), r.get("match")
    if tool is not None and not isinstance(tool, str):
        doc.problem((*at, "tool"), "must be a tool name such as Bash, Edit or Read")
        ok = False
    if match is not None:
        ok = _rule_match(doc, at, match) and ok
    if tool is None and match is None and ok:
        doc.problem(at, "answers every question; give a tool or a match (answering all is the CLI's own flag)")
        ok = False
    if not ok or who is None:
        return None
    return AutoAnswer(str(answer), tuple(who), tool, match)


def _rule_agents(doc: Document, at: Key, who: Any, agents: Sequence[str]) -> list[str] | None:
    """A rule's ``agents`` as a list, or None when it is not valid (each defect recorded)."""
    if isinstance(who, str):
        who = [who]
    if not isinstance(who, list) or not all(isinstance(a, str) for a in who):
        doc.problem((*at, "agents"), "must be an agent name or a list of them")
        return None
    ok = True
    for a in who:
        if a not in agents:
            doc.problem((*at, "agents"), unknown("agent", a, {n: None for n in agents}))
            ok = False
    return who if ok else None


def _rule_match(doc: Document, at: Key, match: Any) -> bool:
    """Whether a rule's ``match`` is a regular expression that compiles (defects recorded)."""
    ok = True
    try:
        re.compile(str(match)) if isinstance(match, str) else None
    except re.error as e:
        doc.problem((*at, "match"), f"invalid regular expression: {e}; fix or quote it")
        ok = False
    if not isinstance(match, str):
        doc.problem((*at, "match"), "must be a regular expression (text)")
        ok = False
    return ok


def validate_tasks(doc: Document, spec: Any) -> TaskSettings:
    """``tasks:``: ``on_agent_restart`` (resend or requeue), ``max_attempts`` (1 or
    more), ``timeout`` (a duration such as ``2h``) and ``label_timeouts`` (label →
    duration)."""
    key: Key = ("tasks",)
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping (for example `tasks: {on_agent_restart: requeue, timeout: 2h}`)")
        return TaskSettings()
    check_keys(doc, key, spec, TASKS_KEYS)
    kw: dict[str, Any] = {}
    if "on_agent_restart" in spec:
        v = spec["on_agent_restart"]
        if v in tuple(OnRestart):
            kw["on_agent_restart"] = OnRestart(v)
        else:
            doc.problem((*key, "on_agent_restart"), f"{v!r} is not a policy; use resend or requeue")
    if "max_attempts" in spec:
        v = spec["max_attempts"]
        if type(v) is int and v >= 1:
            kw["max_attempts"] = v
        else:
            doc.problem((*key, "max_attempts"), f"{v!r} must be a whole number of attempts, 1 or more")
    if "timeout" in spec:
        t = parse_duration(spec["timeout"])
        if t is not None and t > 0:
            kw["timeout"] = t
        else:
            doc.problem((*key, "timeout"), f"{spec['timeout']!r} must be a duration such as 90s, 30m or 2h")
    if "label_timeouts" in spec:
        v = spec["label_timeouts"]
        if not isinstance(v, dict):
            doc.problem((*key, "label_timeouts"), "must map labels to durations (for example `{bug: 30m}`)")
        else:
            pairs = []
            for label, dur in v.items():
                t = parse_duration(dur)
                if not isinstance(label, str) or t is None or t <= 0:
                    doc.problem(
                        (*key, "label_timeouts", str(label)), f"{dur!r} must be a duration such as 90s, 30m or 2h"
                    )
                else:
                    pairs.append((label, t))
            kw["label_timeouts"] = tuple(pairs)
    return TaskSettings(**kw)


def validate_report(doc: Document, spec: Any, has_github: bool) -> ReportSettings | None:
    """``report:``: post the KPI report to a GitHub issue ``every`` (a duration, at least
    ``defaults.REPORT_MIN_EVERY``), covering ``since`` (a duration; default ``every``);
    ``issue`` is the issue's number in ``github.repo``, so a ``github:`` section is needed."""
    key: Key = ("report",)
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping (for example `report: {every: 24h, issue: 12}`)")
        return None
    check_keys(doc, key, spec, REPORT_KEYS)
    ok = True
    every = parse_duration(spec.get("every"))
    if "every" not in spec:
        doc.problem(key, "needs every: how often to post (for example `every: 24h`)")
        ok = False
    elif every is None or every < defaults.REPORT_MIN_EVERY:
        doc.problem(
            (*key, "every"),
            f"{spec['every']!r} must be a duration of at least "
            f"{defaults.REPORT_MIN_EVERY / 3600:g}h (for example 24h or 7d)",
        )
        ok = False
    issue = spec.get("issue")
    if "issue" not in spec:
        doc.problem(key, "needs issue: the number of the GitHub issue to post to (for example `issue: 12`)")
        ok = False
    elif type(issue) is not int or issue < 1:
        doc.problem((*key, "issue"), f"{issue!r} must be an issue number, 1 or more")
        ok = False
    since = every
    if "since" in spec:
        since = parse_duration(spec["since"])
        if since is None or since <= 0:
            doc.problem((*key, "since"), f"{spec['since']!r} must be a duration such as 24h or 7d")
            ok = False
    if not has_github:
        doc.problem(
            key, "posts to a GitHub issue, but the layout has no github: section; add `github: {repo: owner/name}`"
        )
        ok = False
    if not ok or every is None or since is None or type(issue) is not int:
        return None
    return ReportSettings(every=every, issue=issue, since=since)


def validate_routes(doc: Document, spec: Any, names: list[str], shared: bool = False) -> list[Route]:
    """``routes:``: a list of ``{label|title|default, agent}``, first match wins. With a
    ``bus:`` (``shared``) a route may name an agent of another host: ``NAME`` (any host
    that runs one) or ``NAME@HOST`` (that host's)."""
    if not isinstance(spec, list):
        doc.problem(("routes",), "must be a list such as `- {label: bug, agent: kaede}`")
        return []
    out: list[Route] = []
    for i, r in enumerate(spec):
        route = _route(doc, ("routes", i), r, names, shared)
        if route is not None:
            out.append(route)
    return out


def _route(doc: Document, key: Key, r: Any, names: list[str], shared: bool) -> Route | None:
    """The route at ``routes[i]`` (``key``), or None when it has a defect (recorded)."""
    if not isinstance(r, dict):
        doc.problem(key, "each route must be a mapping such as `{label: bug, agent: kaede}`")
        return None
    check_keys(doc, key, r, ROUTE_KEYS)
    agent = r.get("agent")
    ok = _route_agent(doc, key, agent, names, shared)
    kinds = [k for k in ("label", "title", "default") if k in r]
    if len(kinds) != 1:
        doc.problem(key, "give exactly one of label:, title: or default: true")
        ok = False
    if "title" in r:
        try:
            re.compile(str(r["title"]))
        except re.error as e:
            doc.problem((*key, "title"), f"invalid regular expression: {e}; fix or quote it")
            ok = False
    if "default" in r and r["default"] is not True:
        doc.problem((*key, "default"), "must be true")
        ok = False
    if not ok:
        return None
    if "title" in r:
        return Route(agent=str(agent), title=str(r["title"]))
    if "label" in r:
        return Route(agent=str(agent), label=str(r["label"]))
    return Route(agent=str(agent), default=True)


def _route_agent(doc: Document, key: Key, agent: Any, names: list[str], shared: bool) -> bool:
    """Whether a route's ``agent`` is one of ``names`` (or, ``shared``, another host's)."""
    if shared and isinstance(agent, str) and agent not in names:
        name, _, host = agent.partition("@")
        if not NAME_RE.match(name) or ("@" in agent and not HOST_RE.match(host)):
            doc.problem((*key, "agent"), f"{agent!r} must be an agent name, or NAME@HOST for another host's agent")
            return False
    elif agent not in names:
        doc.problem((*key, "agent"), unknown("agent", agent, {n: 1 for n in names}))
        return False
    return True


def validate_park(doc: Document, key: Key, spec: Any) -> dict[str, Any]:
    """Valid values of a ``park:`` mapping: ``probe_after``, ``probe_max`` and
    ``handoff_after`` durations (``handoff_after: never`` turns hand-offs off), ``to`` a
    list of agent or pool names (checked against the layout's by :func:`check_park_targets`)."""
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping (for example `park: {handoff_after: 10m, to: [codex-pool]}`)")
        return {}
    check_keys(doc, key, spec, PARK_KEYS)
    out: dict[str, Any] = {}
    for k in ("probe_after", "probe_max", "handoff_after"):
        if k not in spec:
            continue
        v = spec[k]
        if k == "handoff_after" and v in (None, "never"):
            out[k] = None
            continue
        seconds = parse_duration(v)
        if seconds is None or seconds > 7 * 86400 or (k != "handoff_after" and seconds <= 0):
            doc.problem((*key, k), f"{v!r} must be a duration such as 30s, 10m or 2h (at most 7d)")
        else:
            out[k] = seconds
    if "to" in spec:
        to = spec["to"]
        to = [to] if isinstance(to, str) else to
        if isinstance(to, list) and to and all(isinstance(t, str) and t for t in to):
            out["to"] = tuple(to)
        else:
            doc.problem((*key, "to"), "must be a list of the agents or pools that take over, in order")
    if "to" in out and "handoff_after" not in spec and "handoff_after" not in out:
        out.setdefault("handoff_after", defaults.PARK_HANDOFF_AFTER)
    return out


def validate_budget(doc: Document, key: Key, spec: Any) -> BudgetSettings | None:
    """A ``budget:`` mapping at ``key``: ``tokens`` (a whole number above 0),
    ``cost_usd`` (US dollars above 0), at least one of them, and ``per`` (``day``, the
    default, or ``task``). None when it has a defect (recorded) or is null."""
    if spec is None:
        return None
    example = "for example `budget: {tokens: 2000000, per: day}`"
    if not isinstance(spec, dict):
        doc.problem(key, f"must be a mapping ({example})")
        return None
    before = len(doc.problems)
    check_keys(doc, key, spec, BUDGET_KEYS)
    tokens, cost, per = spec.get("tokens"), spec.get("cost_usd"), spec.get("per", BudgetPer.DAY.value)
    if "tokens" not in spec and "cost_usd" not in spec:
        doc.problem(key, f"needs tokens, cost_usd or both ({example})")
    if tokens is not None and (type(tokens) is not int or tokens < 1):
        doc.problem((*key, "tokens"), f"{tokens!r} must be a whole number of tokens (input + output), 1 or more")
    if cost is not None and (type(cost) not in (int, float) or not 0 < cost < float("inf")):
        doc.problem((*key, "cost_usd"), f"{cost!r} must be a number of US dollars above 0 (such as 2.5)")
    if per not in tuple(BudgetPer):
        doc.problem((*key, "per"), f"{per!r} must be day (the local day) or task (one task)")
    if len(doc.problems) > before:
        return None
    return BudgetSettings(tokens=tokens, cost_usd=float(cost) if cost is not None else None, per=BudgetPer(per))


def check_park_targets(doc: Document, key: Key, to: tuple[str, ...], names: list[str]) -> None:
    """Every ``park.to`` target at ``key`` is an agent or pool of the layout (``names``)."""
    for i, target in enumerate(to):
        if target not in names:
            doc.problem((*key, "to", i), unknown("agent or pool", target, {n: 1 for n in names}))


def validate_watchdog(doc: Document, key: Key, spec: Any) -> dict[str, Any]:
    """Valid values of a ``watchdog:`` mapping (seconds; ``max_restarts`` a count)."""
    if not isinstance(spec, dict):
        doc.problem(key, f"must be a mapping of {', '.join(WATCHDOG_KEYS)}")
        return {}
    check_keys(doc, key, spec, WATCHDOG_KEYS)
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if k not in WATCHDOG_KEYS:
            continue
        if k == "max_restarts":
            if type(v) is int and v >= 0:
                out[k] = v
            else:
                doc.problem((*key, k), f"{v!r} must be a whole number of restarts (0 or more)")
        elif k == "nudge":
            if isinstance(v, str) and v.strip():
                out[k] = v
            else:
                doc.problem((*key, k), "must be the text of the message a hung agent gets")
        elif type(v) in (int, float) and v >= 0:
            out[k] = float(v)
        else:
            doc.problem((*key, k), f"{v!r} must be a number of seconds (0 or more)")
    return out


def validate_roles(doc: Document, spec: Any, agents: Sequence[str], pools: Sequence[str]) -> RolesSettings | None:
    """``roles:``: ``manager`` (an agent), ``coder`` (a pool or an agent), ``deployer``
    (an agent, or ``none``) and ``monitor: {interval: 30s}``; None when absent or wrong."""
    key: Key = ("roles",)
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping (for example `roles: {manager: lead, coder: coders, deployer: none}`)")
        return None
    check_keys(doc, key, spec, ROLES_KEYS)
    members = {n: None for n in agents}
    found: dict[str, str | None] = {}
    for role, allowed in (
        ("manager", members),
        ("coder", {**members, **{p: None for p in pools}}),
        ("deployer", members),
    ):
        value = spec.get(role)
        if value is None or (role == "deployer" and value == "none"):
            found[role] = None
        elif not isinstance(value, str) or value not in allowed:
            what = "agent or pool" if role == "coder" else "agent"
            doc.problem((*key, role), unknown(what, value, allowed) + ("; or none" if role == "deployer" else ""))
            found[role] = None
        else:
            found[role] = value
    interval = defaults.MONITOR_INTERVAL
    monitor = spec.get("monitor", {})
    if not isinstance(monitor, dict):
        doc.problem((*key, "monitor"), "must be a mapping (for example `monitor: {interval: 30s}`)")
    else:
        check_keys(doc, (*key, "monitor"), monitor, MONITOR_KEYS)
        if "interval" in monitor:
            seconds = parse_duration(monitor["interval"])
            if seconds is None or not 1 <= seconds <= 86400:
                doc.problem((*key, "monitor", "interval"), f"{monitor['interval']!r} must be a duration from 1s to 1d")
            else:
                interval = seconds
    return RolesSettings(found["manager"], found["coder"], found["deployer"], interval)


def validate_sandbox(doc: Document, key: Key, spec: Any, base: SandboxSettings | None) -> SandboxSettings | None:
    """A ``sandbox:`` value at ``key`` over ``base`` (the layout's, for an agent or a
    pool; None: none): a mapping of ``engine`` (bwrap, docker, podman), ``network``
    (host, none), ``image`` (needed by docker and podman), ``env`` (variable names) and
    ``binds`` (absolute paths, read-only); ``true`` for ``base`` or the defaults;
    ``false`` or null for no sandbox. Defects are recorded; None then."""
    if spec is None or spec is False:
        return None
    start = base if base is not None else SandboxSettings()
    if spec is True:
        return start
    if not isinstance(spec, dict):
        doc.problem(key, "must be a mapping (for example `sandbox: {engine: bwrap, network: host}`), or false")
        return None
    before = len(doc.problems)
    check_keys(doc, key, spec, SANDBOX_KEYS)
    out = {k: v for k in spec if k in SANDBOX_KEYS and (v := _sandbox_value(doc, (*key, k), k, spec[k])) is not None}
    result = start.merged(out)
    if result.engine != SandboxEngine.BWRAP and result.image is None:
        doc.problem((*key, "image"), f"engine {result.engine} needs `image:`, the image agents run in")
    return None if len(doc.problems) > before else result


SANDBOX_HINTS = {
    "engine": "must be bwrap (bubblewrap), docker or podman",
    "network": "must be host (the host's network) or none",
    "image": "must be a container image name such as `miyabi-agent:latest`",
    "env": "must be a list of environment variable names such as [OPENAI_API_KEY]",
    "binds": "must be a list of absolute paths (bound read-only), such as [/opt/tools]",
}
"""What each ``sandbox:`` key takes, said when its value is wrong."""


def _sandbox_value(doc: Document, key: Key, name: str, value: Any) -> Any:
    """The valid value of ``sandbox.<name>``, or None (the defect recorded)."""
    out: Any = None
    if name == "engine" and value in tuple(SandboxEngine):
        out = SandboxEngine(value)
    elif name == "network" and value in tuple(SandboxNetwork):
        out = SandboxNetwork(value)
    elif name == "image" and isinstance(value, str) and value.strip() and not value.startswith("-"):
        out = value.strip()
    elif name == "env" and isinstance(value, list) and all(isinstance(n, str) and ENV_KEY_RE.match(n) for n in value):
        out = tuple(value)
    elif name == "binds" and isinstance(value, list):
        paths = [_abs_path(b) for b in value]
        out = tuple(p for p in paths if p is not None) if all(paths) else None
    if out is None:
        doc.problem(key, f"{value!r} {SANDBOX_HINTS[name]}")
    return out


def _abs_path(raw: Any) -> str | None:
    """``raw`` with ``~`` and variables expanded, if that is an absolute path; else None."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    path = os.path.expandvars(os.path.expanduser(raw.strip()))
    return os.path.normpath(path) if os.path.isabs(path) else None
