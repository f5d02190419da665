"""Settings types a layout holds besides its agents: the watchdog, routes, GitHub, tasks.

Plain frozen data, validated by :mod:`miyabi.config.sections` and
:mod:`miyabi.config.members`; the services that act on them (the supervisor, the
scheduler, GitHub intake) import them from here, never the other way round.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from functools import lru_cache
from typing import Any

from miyabi import defaults

WATCHDOG_KEYS = (
    "silence_timeout",
    "silence_grace",
    "min_uptime",
    "stable_after",
    "max_restarts",
    "restart_window",
    "nudge",
)
"""Keys of ``watchdog:`` in a layout, ensemble-wide and per agent."""

PARK_KEYS = ("probe_after", "probe_max", "handoff_after", "to")
"""Keys of ``park:`` in a layout, ensemble-wide and per agent or pool."""

BUDGET_KEYS = ("tokens", "cost_usd", "per")
"""Keys of ``budget:`` in a layout: the whole ensemble's, an agent's, a pool's."""

SANDBOX_KEYS = ("engine", "network", "image", "env", "binds")
"""Keys of ``sandbox:`` in a layout: the whole ensemble's, an agent's, a pool's."""

DEFAULT_NUDGE = (
    "miyabi watchdog: you have printed nothing for a while and do not look ready for input. "
    "If you are stuck, stop and say what blocks you; if you are working, print a short progress line."
)
"""The nudge a hung agent gets through its inbox (layout ``watchdog.nudge``)."""


@dataclass(frozen=True)
class WatchdogSettings:
    """Watchdog settings for one agent (layout ``watchdog:``, then the agent's own).
    Times in seconds; defaults in :mod:`miyabi.defaults`.

    Attributes:
        silence_timeout: not ready and silent this long → hung (nudged).
        silence_grace: still silent this long after the nudge → restarted.
        min_uptime: a death after at least this long restarts at once.
        stable_after: running this long resets the backoff.
        max_restarts: restarts allowed within ``restart_window`` before the breaker trips.
        restart_window: the window the breaker counts restarts in.
        backoff_initial, backoff_max: first and largest backoff delay.
        nudge: the message a hung agent gets before it is restarted.
    """

    silence_timeout: float = defaults.WATCHDOG_SILENCE_TIMEOUT
    silence_grace: float = defaults.WATCHDOG_SILENCE_GRACE
    min_uptime: float = defaults.WATCHDOG_MIN_UPTIME
    stable_after: float = defaults.WATCHDOG_STABLE_AFTER
    max_restarts: int = defaults.WATCHDOG_MAX_RESTARTS
    restart_window: float = defaults.WATCHDOG_RESTART_WINDOW
    backoff_initial: float = defaults.WATCHDOG_BACKOFF_INITIAL
    backoff_max: float = defaults.WATCHDOG_BACKOFF_MAX
    nudge: str = DEFAULT_NUDGE

    def merged(self, overrides: dict[str, Any]) -> WatchdogSettings:
        """A copy with the layout's values for some keys."""
        return replace(self, **overrides)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass(frozen=True)
class ParkSettings:
    """What happens to an agent parked at its provider's usage limit (layout ``park:``,
    then the agent's or pool's own). Times in seconds.

    Attributes:
        probe_after: the wait before it is told to go on when its CLI printed no
            reset time (doubled per park in a row).
        probe_max: the longest such wait.
        handoff_after: parked this long, its tasks go to the first of ``to`` that can
            take them; None: never handed off.
        to: agents or pools (by name) that take over its tasks, in order.
    """

    probe_after: float = defaults.PARK_PROBE_AFTER
    probe_max: float = defaults.PARK_PROBE_MAX
    handoff_after: float | None = None
    to: tuple[str, ...] = ()

    def merged(self, overrides: dict[str, Any]) -> ParkSettings:
        """A copy with the layout's values for some keys."""
        return replace(self, **overrides)


class BudgetPer(StrEnum):
    """The period a budget counts over (``budget.per``)."""

    DAY = "day"
    """The machine's local day: the period turns at local midnight."""
    TASK = "task"
    """One task: what the agents a budget covers used on the task they hold."""


@dataclass(frozen=True)
class BudgetSettings:
    """A budget of tokens and/or US dollars per period (layout ``budget:``, at the top
    for the whole ensemble, and per agent or pool; a pool's is the total of its
    instances). At 80 % of either limit miyabi warns once a period; at 100 % it parks
    the agents the budget covers until the period turns or ``miyabi budget raise``.

    Attributes:
        tokens: input + output tokens allowed per period; None: not counted.
        cost_usd: US dollars allowed per period (where the CLI reports a cost);
            None: not counted.
        per: the period (:class:`BudgetPer`).
    """

    tokens: int | None = None
    cost_usd: float | None = None
    per: BudgetPer = BudgetPer.DAY


@dataclass(frozen=True)
class Route:
    """One rule of ``routes:``: match by ``label``, by ``title`` regex, or ``default``.

    Attributes:
        agent: the agent that gets matching tasks.
        label: a task label that must be present.
        title: a regular expression searched in the task's title.
        default: matches every task.
    """

    agent: str
    label: str | None = None
    title: str | None = None
    default: bool = False

    def matches(self, title: str, labels: Sequence[str]) -> bool:
        """Whether a task with ``title`` and ``labels`` matches this rule."""
        if self.label is not None:
            return self.label in labels
        if self.title is not None:
            return _regex(self.title).search(title) is not None
        return self.default

    def describe(self) -> str:
        """The rule as the layout wrote it (``label: bug``)."""
        if self.label is not None:
            return f"label: {self.label}"
        if self.title is not None:
            return f"title: {self.title}"
        return "default: true"


@dataclass(frozen=True)
class GitHubSettings:
    """The layout's ``github:`` section.

    Attributes:
        repo: ``owner/name``.
        api_url: API root (GitHub Enterprise: change it).
        token_env: environment variable holding the token.
        todo_label: issues with this label are picked up.
        poll_interval: seconds between polls.
        allowed_authors: logins routed even without OWNER/MEMBER/COLLABORATOR (issues,
            and follow-up comments on pull requests).
        fix_trigger: a comment on a pull request the pipeline opened that starts with
            this asks for a follow-up on its branch.
    """

    repo: str
    api_url: str = defaults.GITHUB_API
    token_env: str = defaults.GITHUB_TOKEN_ENV
    todo_label: str = defaults.GITHUB_TODO_LABEL
    poll_interval: float = defaults.GITHUB_POLL_INTERVAL
    allowed_authors: tuple[str, ...] = ()
    fix_trigger: str = defaults.FIX_TRIGGER


@dataclass(frozen=True)
class WebSettings:
    """The layout's ``web:`` section: the controller serves the dashboard (``miyabi web``).

    Attributes:
        host: address to listen on (loopback unless the layout names another).
        port: TCP port.
        read_only: nothing can be changed through the dashboard.
    """

    host: str = defaults.WEB_HOST
    port: int = defaults.WEB_PORT
    read_only: bool = False


@dataclass(frozen=True)
class RolesSettings:
    """The layout's ``roles:`` section: who carries a story (:mod:`miyabi.work.stories`).

    Attributes:
        manager: the agent that plans a story into tasks (None: stories cannot be made).
        coder: the pool or agent the story's tasks go to (None: the routes decide).
        deployer: the agent told when a story's deploy or checks fail (None: ``none``;
            miyabi runs ``.miyabi.yml``'s deploy itself either way).
        monitor_interval: seconds between health checks of a deployed service
            (``monitor: {interval: 30s}``).
    """

    manager: str | None = None
    coder: str | None = None
    deployer: str | None = None
    monitor_interval: float = defaults.MONITOR_INTERVAL


NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
"""An agent's name: what files and tmux options are named after."""

HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
"""A host's name on the bus (and a bus namespace)."""


@dataclass(frozen=True)
class BusSettings:
    """The layout's ``bus:`` section: several machines share one ensemble through Redis
    (``miyabi/bus/``). Without it miyabi is a single-machine tool and needs no Redis.

    Attributes:
        url: ``redis://[:PASSWORD@]HOST:PORT/DB`` or ``rediss://…`` (TLS); the password,
            if any, is never printed (:func:`redact`).
        host: this machine's name on the bus (``[A-Za-z0-9._-]``, unique per machine).
        password_env: an environment variable holding the password (instead of the URL).
        lease: seconds a host holds a task it claimed without renewing it; after that
            another host may claim it again (the dead host's work moves to the living).
        namespace: the prefix of every key (several ensembles can share one Redis).
    """

    url: str
    host: str
    password_env: str | None = None
    lease: float = defaults.BUS_LEASE
    namespace: str = defaults.BUS_NAMESPACE


def redact(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for every output and log)."""
    url = re.sub(r"([?&]password=)[^&]*", r"\1***", url)
    return re.sub(
        r"^(\w+://)([^?]*)@(?=[^@?]*(?:\?|$))",
        lambda m: m[1] + (m[2].split(":")[0] + ":***" if ":" in m[2] else "***") + "@",
        url,
    )


@dataclass(frozen=True)
class ReportSettings:
    """The layout's ``report:`` section: the controller posts the KPI report
    (``miyabi report``) as a comment on a GitHub issue on a schedule.

    Attributes:
        every: seconds between two posts.
        issue: the number of the issue (in ``github.repo``) the report is posted to.
        since: the window each report covers, in seconds back from its posting (the
            layout's default: ``every``, so that the reports cover the time without gaps).
    """

    every: float
    issue: int
    since: float


class ReceiverKind(StrEnum):
    """Where a notice goes (``notify[].kind``)."""

    SLACK = "slack"
    """A Slack incoming webhook: ``{"text": …}``."""
    DISCORD = "discord"
    """A Discord webhook: ``{"content": …}``."""
    NTFY = "ntfy"
    """An ntfy topic URL: the text as the body, the title in the ``Title`` header."""
    WEBHOOK = "webhook"
    """Any URL that takes JSON: ``{"kind", "title", "text", "url", "time", "session", "event"}``."""


@dataclass(frozen=True)
class Receiver:
    """One entry of the layout's ``notify:`` list.

    Attributes:
        kind: the receiver's format.
        url: where notices are POSTed (None: read from ``url_env`` when sending).
        url_env: environment variable holding the URL (webhook URLs are secrets).
        events: the notice kinds it wants (see :class:`miyabi.events.NoticeKind`); empty: all.
        rate: notices per minute it gets at most (the rest wait their turn).
        max_attempts: tries of one notice before it is given up (logged as ``notice-failed``).
        retry_after: seconds before the second try; each later wait doubles, up to 10 minutes.
        timeout: seconds one POST may take.
    """

    kind: ReceiverKind
    url: str | None = None
    url_env: str | None = None
    events: tuple[str, ...] = ()
    rate: float = defaults.NOTIFY_RATE
    max_attempts: int = defaults.NOTIFY_MAX_ATTEMPTS
    retry_after: float = defaults.NOTIFY_RETRY_AFTER
    timeout: float = defaults.NOTIFY_TIMEOUT

    @property
    def key(self) -> str:
        """A name for it that stays the same across restarts and reorderings:
        ``kind:`` and a digest of its URL (or variable name); never the URL itself."""
        import hashlib

        return f"{self.kind}:{hashlib.sha256((self.url or f'${self.url_env}').encode()).hexdigest()[:12]}"

    def wants(self, kind: str) -> bool:
        return not self.events or kind in self.events


class OnRestart(StrEnum):
    """What happens to the tasks an agent's process held when it ends (``tasks.on_agent_restart``)."""

    RESEND = "resend"
    """The agent's next process gets them again, told it was restarted while working on them."""
    REQUEUE = "requeue"
    """They go back to the queue, for whichever agent the routes pick."""


DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float | None:
    """Seconds in ``value``: a number (seconds) or text such as ``90s``, ``30m``, ``2h``,
    ``1d``, ``500ms``; None when it is neither (or negative)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        m = DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _UNIT[m.group(2) or "s"]
    return None


SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:([KMGkmg])(?:i?B)?|B)?\s*$")
_SIZE_UNIT = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(value: Any) -> int | None:
    """Bytes in ``value``: a whole number (bytes) or text such as ``512K``, ``10M``,
    ``1G`` (also ``10MiB``, ``10MB``; every unit is a power of 1024); None when it is
    neither (or negative)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        m = SIZE_RE.match(value)
        if m:
            return int(m.group(1)) * (_SIZE_UNIT[m.group(2).lower()] if m.group(2) else 1)
    return None


@dataclass(frozen=True)
class LogSettings:
    """The layout's ``logs:`` section: when the pane logs (``logs/<agent>.log``) rotate.

    Attributes:
        max_bytes: size in bytes at which a pane log is renamed ``<agent>.log.1`` (the
            older ones shifting to ``.2``, ``.3`` …) and a fresh one is started; 0: never.
        keep: rotated files kept per agent (0: none; the oldest beyond it is deleted).
    """

    max_bytes: int = defaults.LOG_MAX_BYTES
    keep: int = defaults.LOG_KEEP


@dataclass(frozen=True)
class TaskSettings:
    """The layout's ``tasks:`` section: what happens to work whose agent dies or takes too long.

    Attributes:
        on_agent_restart: where the tasks of an agent process that ended go (:class:`OnRestart`).
        max_attempts: assignments a task gets in all; the one after the last fails it
            (GitHub: ``status:needs-human`` and a comment). A task or job may set its own.
        timeout: seconds a task may stay in progress before its agent is told and it is
            handed back (None: no limit). A task may set its own.
        label_timeouts: label → timeout in seconds, for tasks carrying that label (the
            shortest of the matching labels wins over ``timeout``).
    """

    on_agent_restart: OnRestart = OnRestart.RESEND
    max_attempts: int = defaults.TASK_MAX_ATTEMPTS
    timeout: float | None = None
    label_timeouts: tuple[tuple[str, float], ...] = field(default=())

    def timeout_for(self, labels: Sequence[str], own: float | None = None) -> float | None:
        """The in-progress limit of a task with ``labels`` (its ``own`` limit wins)."""
        if own is not None:
            return own
        by_label = [t for lb, t in self.label_timeouts if lb in labels]
        return min(by_label) if by_label else self.timeout


@dataclass(frozen=True)
class AutoAnswer:
    """One rule of the layout's ``approvals: {auto: [...]}``: answer a permission
    question without a person.

    Attributes:
        answer: ``approve`` or ``deny``.
        agents: the agents it applies to (empty: every agent).
        tool: the tool the question is about (Claude Code's tool name, such as
            ``Bash``), or None for any.
        match: a regex searched in the question text, or None for any.
    """

    answer: str
    agents: tuple[str, ...] = ()
    tool: str | None = None
    match: str | None = None

    def applies(self, agent: str, question: str) -> bool:
        """Whether this rule answers ``agent``'s ``question`` (``"Tool: input"`` from a
        hook, or the question's text on screen)."""
        if self.agents and agent not in self.agents:
            return False
        if self.tool is not None and not question.startswith(self.tool + ":"):
            return False
        return self.match is None or re.search(self.match, question) is not None


def auto_answer(rules: Sequence[AutoAnswer], agent: str, question: str) -> AutoAnswer | None:
    """The first rule that answers ``agent``'s ``question``, or None (a person must)."""
    return next((r for r in rules if r.applies(agent, question)), None)


# ---------------------------------------------------------------- sandbox


class SandboxEngine(StrEnum):
    """What encloses a sandboxed agent (``sandbox.engine``)."""

    BWRAP = "bwrap"
    """Bubblewrap (Debian's ``bubblewrap``): namespaces, no daemon; the default."""
    DOCKER = "docker"
    """A Docker container of ``sandbox.image``, the same binds through ``-v``."""
    PODMAN = "podman"
    """A Podman container of ``sandbox.image``, as Docker."""


class SandboxNetwork(StrEnum):
    """What network a sandboxed agent sees (``sandbox.network``)."""

    HOST = "host"
    """The host's network (its model provider is reachable)."""
    NONE = "none"
    """A network namespace of its own with loopback only."""


@dataclass(frozen=True)
class SandboxSettings:
    """How an agent is enclosed (layout ``sandbox:``, then the pool's, then the agent's
    own; see docs/security.md).

    Attributes:
        engine: bwrap (the default), docker or podman.
        network: host or none.
        image: the container image (docker and podman only).
        env: names of variables passed in from the pane's environment when set, on
            top of the layout's ``env`` and those the profile's CLI needs (its API key).
        binds: absolute paths bound read-only into the sandbox (a CLI installed under
            a hidden home, a shared cache).
        hide: the working directories of the layout's other agents (filled by the
            loader): they are hidden from this one.
    """

    engine: SandboxEngine = SandboxEngine.BWRAP
    network: SandboxNetwork = SandboxNetwork.HOST
    image: str | None = None
    env: tuple[str, ...] = ()
    binds: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()

    def merged(self, overrides: dict[str, Any]) -> SandboxSettings:
        """A copy with a member's own values for some keys."""
        return replace(self, **overrides)
