"""The typed, frozen form of a layout: what the rest of miyabi works with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from miyabi import defaults
from miyabi.agents.profiles import Profile
from miyabi.config.settings import (
    AutoAnswer,
    BudgetSettings,
    BusSettings,
    GitHubSettings,
    LogSettings,
    ParkSettings,
    Receiver,
    ReportSettings,
    RolesSettings,
    Route,
    SandboxSettings,
    TaskSettings,
    WatchdogSettings,
    WebSettings,
)
from miyabi.errors import AgentNotFound

V = TypeVar("V")


def frozen_map(data: Mapping[str, V] | None = None) -> Mapping[str, V]:
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True)
class Agent:
    """One named agent: a pane running one program.

    Attributes:
        name: unique name, ``[a-z0-9][a-z0-9_-]*``; also the pane tag ``@miyabi_agent``.
        profile: the agent's profile with the agent's own overrides applied.
        command: the shell command line that launches it (never empty).
        cwd: working directory (absolute), or None for the directory ``miyabi up`` runs in.
        env: extra environment variables for the agent's process.
        title: pane title shown in the border.
        index: position in the layout's ``agents:`` list (0-based).
        watchdog: restart and hang settings (layout ``watchdog:``, then the agent's own).
        wip: how many tasks it may have assigned or in progress at once.
        logs: when its pane log rotates (the layout's ``logs:``).
        human_hold: seconds after a person's last key in its pane before miyabi types
            into it again (``human_hold``, the agent's or the layout's).
        park: what happens when it is parked at a usage limit (``park``, the layout's
            then its own; a pool's instance has its pool's).
        budget: its own budget (``budget``); None: none (a pool's instance counts
            towards its pool's, :attr:`Pool.budget`).
    """

    name: str
    profile: Profile
    command: str
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=frozen_map)
    title: str = ""
    index: int = 0
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    wip: int = defaults.TASK_WIP
    pool: str | None = None
    """For a pool's instance: the pool's name (None: a named agent)."""
    window: str | None = None
    """The window its pane goes in (None: the ``agents-N`` windows, by layout order)."""
    task: int | None = None
    """For a pool's instance: the task it was started for."""
    continues: str | None = None
    """For a pool's instance that takes up the work an earlier instance of its pool did
    on the same branch (a follow-up, a task back from failed): that instance's name. Its
    first process resumes that one's last conversation, where the profile can."""
    logs: LogSettings = field(default_factory=LogSettings)
    human_hold: float = defaults.HUMAN_HOLD
    park: ParkSettings = field(default_factory=ParkSettings)
    budget: BudgetSettings | None = None
    sandbox: SandboxSettings | None = None
    """How it is enclosed (``sandbox:``, the layout's then its own; None: not at all)."""


class PipelineMode(StrEnum):
    """Where a pool's verified work goes (``pools[].pipeline``)."""

    GITHUB = "github"
    """The branch is pushed and a pull request opened that closes the issue."""
    LOCAL = "local"
    """The branch is merged into the base branch locally, behind the checks."""


@dataclass(frozen=True)
class Pool:
    """A pool of agents (``pools:``): each task routed to it gets an instance of its
    own, started in a fresh git worktree of ``repo``.

    Attributes:
        name: the pool's name (routes name it like an agent; instances are
            ``<name>-<issue or task id>``).
        profile: the profile its instances run (with the pool's overrides).
        command: the command line that starts an instance.
        repo: the git repository (absolute) whose worktrees instances work in.
        max: instances that may run at once; more tasks wait in the queue.
        base_branch: the branch work starts from and merges into (None: the repo's
            ``.miyabi.yml``, else its current branch).
        remote: the remote branches are pushed to.
        pipeline: where verified work goes (:class:`PipelineMode`).
        env: extra environment variables for its instances.
        watchdog: restart and hang settings of its instances.
        park: what happens when an instance is parked at a usage limit.
        budget: the budget of all its instances together (``budget``); None: none.
        approve: its merges wait for a person (``approve: required``; ``miyabi
            approve-merge TASK`` or the dashboard's Approvals page) once the checks pass.
    """

    name: str
    profile: Profile
    command: str
    repo: Path
    max: int = defaults.POOL_MAX
    base_branch: str | None = None
    remote: str = "origin"
    pipeline: PipelineMode = PipelineMode.LOCAL
    env: Mapping[str, str] = field(default_factory=frozen_map)
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    park: ParkSettings = field(default_factory=ParkSettings)
    budget: BudgetSettings | None = None
    approve: bool = False
    sandbox: SandboxSettings | None = None
    """How its instances are enclosed (``sandbox:``; None: not at all)."""


@dataclass(frozen=True)
class Layout:
    """A whole ensemble as read from one layout file.

    Attributes:
        path: the file it was read from (absolute).
        session: tmux session name.
        description: free text, shown by ``miyabi layouts``.
        per_window: agents per window before a new window is opened.
        pane_size: (columns, rows) each pane gets in a detached session.
        agents: the agents, in layout order.
        profiles: every profile the layout can use (built-in and its own), by name.
        max_body: largest message body accepted, in bytes (``delivery.max_body``).
        routes: task routing rules (``routes:``), first match wins.
        github: where issues come from (``github:``), if anywhere.
        tasks: what happens to tasks whose agent dies or takes too long (``tasks:``).
        auto_answers: permission questions answered without a person
            (``approvals: {auto: [...]}``), first match wins; empty: off.
        pools: pools of agents started per task in git worktrees (``pools:``).
        logs: when pane logs rotate (``logs:``); every agent carries it too.
        web: the dashboard the controller serves (``web:``), if any.
        report: the KPI report the controller posts to a GitHub issue (``report:``), if any.
        bus: the Redis several hosts share (``bus:``); None: this machine alone.
        human_hold: seconds after a person's last key in a pane before miyabi types
            into it again (``human_hold``; pool instances have it, named agents may
            set their own).
        budget: the whole ensemble's budget (``budget:``), every agent's use
            together; None: none.
        roles: who carries a story (``roles:``); None: no stories.
        self_pool: the pool whose repository is miyabi's own checkout (``self: {pool:
            NAME}``): a merge of its upgrades the controller, behind a health probe.
    """

    path: Path
    session: str
    agents: tuple[Agent, ...]
    description: str = ""
    per_window: int = defaults.PER_WINDOW
    pane_size: tuple[int, int] = (defaults.PANE_WIDTH, defaults.PANE_HEIGHT)
    profiles: Mapping[str, Profile] = field(default_factory=lambda: MappingProxyType({}))
    max_body: int = defaults.MAX_BODY
    routes: tuple[Route, ...] = ()
    github: GitHubSettings | None = None
    tasks: TaskSettings = field(default_factory=TaskSettings)
    auto_answers: tuple[AutoAnswer, ...] = ()
    pools: tuple[Pool, ...] = ()
    logs: LogSettings = field(default_factory=LogSettings)
    web: WebSettings | None = None
    notify: tuple[Receiver, ...] = ()
    report: ReportSettings | None = None
    bus: BusSettings | None = None
    human_hold: float = defaults.HUMAN_HOLD
    budget: BudgetSettings | None = None
    roles: RolesSettings | None = None
    self_pool: str | None = None

    @property
    def secret_env(self) -> frozenset[str]:
        """Names of the environment variables that hold the user's secrets: the GitHub
        token's (``github.token_env``, and always ``GITHUB_TOKEN`` and ``GH_TOKEN``), the
        bus password's (``bus.password_env``) and the notification URLs'
        (``notify[].url_env``). They never reach an agent, a check or the tmux server."""
        names = set(defaults.SECRET_ENV)
        if self.github is not None:
            names.add(self.github.token_env)
        if self.bus is not None and self.bus.password_env:
            names.add(self.bus.password_env)
        names.update(r.url_env for r in self.notify if r.url_env)
        return frozenset(names)

    @property
    def names(self) -> list[str]:
        """Agent names in layout order (pool instances included, after the named agents)."""
        return [a.name for a in self.agents]

    @property
    def named(self) -> tuple[Agent, ...]:
        """The layout's own agents (not pool instances)."""
        return tuple(a for a in self.agents if a.pool is None)

    def pool(self, name: str) -> Pool | None:
        """The pool called ``name``, if there is one."""
        return next((p for p in self.pools if p.name == name), None)

    def with_instances(self, instances: tuple[Agent, ...]) -> Layout:
        """This layout with ``instances`` (pool instances) as its agents after the named ones."""
        return replace(self, agents=(*self.named, *instances))

    @property
    def wip(self) -> dict[str, int]:
        """Agent → how many tasks it may hold at once."""
        return {a.name: a.wip for a in self.agents}

    def agent(self, name: str) -> Agent:
        """The agent called ``name``.

        Raises:
            AgentNotFound: no such agent (the message lists the agents and the closest name).
        """
        for a in self.agents:
            if a.name == name:
                return a
        raise AgentNotFound(name, self.names)


@dataclass(frozen=True)
class LayoutChange:
    """What changes when a running controller adopts another layout (see
    :func:`layout_change`).

    Attributes:
        added: agents the new layout has and the old one did not (by name, new order).
        removed: agents the old layout had and the new one does not.
        changed: agents in both whose settings differ (profile, command, watchdog, …).
        github: the ``github:`` section differs (it applies when the controller restarts).
        notify: the ``notify:`` receivers differ (same).
        bus: the bus's identity (url, host, namespace) differs (same).
    """

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    github: bool
    notify: bool
    bus: bool

    def describe(self) -> str:
        """The change in one line (``added b; removed a``; ``agents unchanged``)."""
        restart = "apply when the controller restarts (`miyabi down`, then `miyabi up`)"
        parts = [
            f"added {', '.join(self.added)}" if self.added else "",
            f"removed {', '.join(self.removed)}" if self.removed else "",
            f"changed {', '.join(self.changed)}" if self.changed else "",
            f"github: changes {restart}" if self.github else "",
            f"notify: changes {restart}" if self.notify else "",
            f"bus: url, host and namespace {restart}" if self.bus else "",
        ]
        return "; ".join(p for p in parts if p) or "agents unchanged"


def layout_change(old: Layout, new: Layout) -> LayoutChange:
    """What adopting ``new`` in place of ``old`` changes (a pure function of the two)."""
    before = {a.name: a for a in old.agents}
    after = {a.name: a for a in new.agents}
    return LayoutChange(
        added=tuple(n for n in after if n not in before),
        removed=tuple(n for n in before if n not in after),
        changed=tuple(n for n in after if n in before and after[n] != before[n]),
        github=new.github != old.github,
        notify=new.notify != old.notify,
        bus=_bus_identity(new.bus) != _bus_identity(old.bus),
    )


def _bus_identity(bus: BusSettings | None) -> tuple[str, str, str] | None:
    """What of a ``bus:`` section takes a controller restart to change."""
    return None if bus is None else (bus.url, bus.host, bus.namespace)
