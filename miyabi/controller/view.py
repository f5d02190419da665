"""What the ensemble looks like right now, for the front ends (the command line and
the web dashboard): where a command acts (:class:`Target`), the agents' rows (pool
instances included), why waiting tasks wait, an inbox's messages, and the verbs both
front ends offer on tasks and messages. It reads; the controller acts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miyabi import defaults
from miyabi.config.model import Agent, Layout
from miyabi.errors import LayoutError, MiyabiError, SessionNotFound, TmuxError
from miyabi.files import identity, write_atomic
from miyabi.home import Home
from miyabi.messaging.mailbox import Message, MessageState, enqueue, inbox, make
from miyabi.supervision.status import AgentStatus, collect
from miyabi.tmux.panes import HOME_TAG, Pane, Runner, read_session, session_exists, session_option
from miyabi.tmux.runner import Tmux

if TYPE_CHECKING:  # the task store is imported where it is used: `miyabi status` seldom needs it
    from miyabi.work.model import Task
    from miyabi.work.store import Store
    from miyabi.work.stories import Story


@dataclass
class Target:
    """Where a command acts: the home, the tmux socket, the session and its layout.

    Attributes:
        home: the miyabi home.
        socket: tmux socket name of miyabi's server.
        session: the session's name.
        layout_path: the layout file (None when none is known for the home).
    """

    home: Home
    socket: str
    session: str
    layout_path: Path | None

    def layout(self) -> Layout:
        """The layout this home runs (loaded now).

        Raises:
            MiyabiError: no layout is known for this home.
            LayoutError: it no longer loads.
        """
        from miyabi.config import load

        if self.layout_path is None:
            raise MiyabiError(f"no layout is known for {self.home.root}; run `miyabi up` first, or give --layout")
        return load(self.layout_path)


def resolve_target(home: Path | None, socket: str | None, layout: str | None) -> Target:
    """Home from ``home`` (else ``$MIYABI_HOME``, else the current directory); socket
    from ``socket``, else what ``miyabi up`` recorded there, else ``miyabi``; session
    from ``layout``, else the recorded one.

    Raises:
        LayoutError: the named (or default) layout does not load.
    """
    h = Home.resolve(home)
    state = h.load_state()
    sock = socket or state.get("socket") or defaults.SOCKET
    if layout is None and isinstance(state.get("session"), str):
        lp = state.get("layout")
        return Target(h, sock, state["session"], Path(lp) if isinstance(lp, str) else None)
    from miyabi.config import load, shipped  # here: the layout loader is not free to import

    path = shipped.for_command(layout, h)
    return Target(h, sock, load(path).session, path)


def require_session(target: Target) -> Tmux:
    """A runner for the target's tmux server, whose session must be running.

    Raises:
        TmuxUnavailable: tmux missing or too old (exit 4).
        SessionNotFound: the session is not running (exit 4).
    """
    tmux = Tmux(target.socket)
    tmux.require_version()
    if not session_exists(tmux, target.session):
        raise SessionNotFound(target.session, target.socket)
    return tmux


def look(target: Target) -> tuple[Tmux, str, list[Pane]]:
    """A runner for the target's tmux server, the session's home tag and its panes, from
    one tmux process (what ``miyabi status`` needs of tmux; :func:`require_session`
    and :func:`ensemble` take three).

    Raises:
        TmuxUnavailable: tmux missing or too old.
        SessionNotFound: the session is not running.
        TmuxError: tmux failed otherwise.
    """
    tmux = Tmux(target.socket)
    try:
        version, owner, panes = read_session(tmux, target.session)
    except TmuxError:
        if not session_exists(tmux, target.session):
            raise SessionNotFound(target.session, target.socket) from None
        raise
    tmux.require_version(known=version)
    return tmux, owner, panes


def running_layout(target: Target) -> Layout | None:
    """The target's layout, or None when none is known or it no longer loads."""
    if target.layout_path is None:
        return None
    try:
        return target.layout()
    except LayoutError:
        return None


def layout_agents(home: Home, lay: Layout | None, store: Store | None = None) -> list[Agent]:
    """The layout's agents and its pools' running instances (read through ``store``,
    when the caller keeps one open)."""
    if lay is None:
        return []
    agents = list(lay.agents)
    if lay.pools:
        from miyabi.pipeline.instances import instance_agents
        from miyabi.pipeline.records import Records
        from miyabi.work.store import Store

        agents += instance_agents(Records(store if store is not None else Store.of_home(home.root)), lay)
    return agents


RUNNING_FILE = "running.json"
"""Under ``run/``: the layout the controller runs, as ``miyabi status`` shows it (see
:func:`record_running`)."""


def record_running(home: Home, layout: Layout, pid: int) -> None:
    """Record the layout controller ``pid`` runs (pool instances included) in
    ``run/running.json``, as much of it as ``miyabi status`` shows: the file and its
    identity, each agent's name, command, profile, pool, task and window, and each
    pool's name and size. ``status`` takes it from there instead of loading the layout
    (importing the YAML parser and parsing cost it a quarter of its time). Nothing more
    of the layout is written: ``status`` shows agents all of this already.

    Raises:
        OSError: the file cannot be written.
    """
    agents = [
        {
            "name": a.name,
            "command": a.command,
            "profile": asdict(a.profile),
            "pool": a.pool,
            "task": a.task,
            "window": a.window,
            "index": a.index,
        }
        for a in layout.agents
    ]
    data = {
        "pid": pid,
        "layout": str(layout.path),
        "identity": identity(layout.path),
        "agents": agents,
        "pools": {p.name: p.max for p in layout.pools},
    }
    write_atomic(home.run / RUNNING_FILE, json.dumps(data))


def recorded_running(home: Home, layout_path: Path | None, pid: int) -> tuple[list[Agent], dict[str, int]] | None:
    """The agents and pools (name → most instances) of the layout controller ``pid``
    records running (:func:`record_running`); None unless that controller wrote it and
    the layout file is still the one it recorded (an edited file is loaded anew)."""
    from miyabi.agents.profiles import Profile

    try:
        data = json.loads((home.run / RUNNING_FILE).read_text(encoding="utf-8"))
        path = Path(data["layout"])
        if data["pid"] != pid or (layout_path is not None and path != layout_path):
            return None
        if data["identity"] is None or data["identity"] != identity(path):
            return None
        agents = [
            Agent(
                name=a["name"],
                command=a["command"],
                profile=Profile(**_profile_fields(a["profile"])),
                pool=a["pool"],
                task=a["task"],
                window=a["window"],
                index=a["index"],
            )
            for a in data["agents"]
        ]
        return agents, {str(k): int(v) for k, v in data["pools"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _profile_fields(recorded: dict[str, Any]) -> dict[str, Any]:
    """A profile's fields as JSON gave them back: its tuples came back as lists."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()}


@dataclass(frozen=True)
class EnsembleView:
    """The ensemble as ``miyabi status`` and the dashboard show it.

    Attributes:
        home: the home that built the session (its logs are there).
        layout: the running layout (None when unknown, when it does not load, or when
            the controller's record of it served: see :func:`recorded_running`).
        controller: the controller's status (see :func:`miyabi.controller.process.status`).
        agents: one row per agent, layout order, then pool instances.
        pools: each pool's name and the most instances it runs at once.
    """

    home: Home
    layout: Layout | None
    controller: dict[str, Any]
    agents: list[AgentStatus]
    pools: Mapping[str, int] = field(default_factory=dict)


def ensemble(
    target: Target,
    runner: Runner,
    interval: float = 0.0,
    cpu_cache: dict[int, Any] | None = None,
    layout: Layout | None = None,
    store: Store | None = None,
    seen: tuple[str, Sequence[Pane]] | None = None,
) -> EnsembleView:
    """Collect the ensemble's rows now (``interval``: seconds of CPU sampling; 0 shows the
    controller's last measure, or, with a ``cpu_cache`` that persists between calls,
    measures since the previous call (see :func:`~miyabi.supervision.status.collect`);
    ``layout``: the running layout, when the caller has it loaded; ``seen``: the
    session's home tag and panes, when the caller read them (:func:`look`)).

    Raises:
        TmuxError: the session cannot be listed.
    """
    from miyabi.controller.process import status as controller_status

    owner = session_option(runner, target.session, HOME_TAG) if seen is None else seen[0]
    h = Home(Path(owner)) if owner else target.home
    ctl = controller_status(h)
    recorded = None
    if layout is None and ctl["running"]:
        recorded = recorded_running(h, target.layout_path, ctl["pid"])
    if recorded is not None:
        lay, (agents, pools) = None, recorded
    else:
        lay = layout if layout is not None else running_layout(target)
        agents, pools = layout_agents(h, lay, store), {p.name: p.max for p in lay.pools} if lay is not None else {}
    rows = collect(
        runner,
        target.session,
        h,
        agents,
        recorded=bool(ctl["running"]),
        interval=interval,
        cpu_cache=cpu_cache,
        panes=None if seen is None else seen[1],
    )
    return EnsembleView(h, lay, ctl, rows, pools)


def waiting(home: Home, store: Store, tasks: Sequence[Task]) -> dict[int, str]:
    """Why each waiting task waits, by the layout this home runs ({} without one)."""
    from miyabi.config import load
    from miyabi.supervision.saved import failed_agents
    from miyabi.work.scheduler import waiting_reasons

    recorded = home.load_state().get("layout")
    if not isinstance(recorded, str):
        return {}
    try:
        lay = load(Path(recorded))
    except LayoutError:
        return {}
    pools = None
    if lay.pools:
        from miyabi.pipeline.records import InstanceState, Records

        live = Records(store).instances(InstanceState.PREPARING, InstanceState.READY)
        pools = {p.name: (sum(1 for i in live if i.pool == p.name), p.max) for p in lay.pools}
    out = waiting_reasons(store, list(tasks), lay.routes, lay.wip, failed_agents(home), pools)
    if lay.bus is not None:
        out.update(shared_waiting(home, lay, tasks))
    return out


def shared_waiting(home: Home, lay: Layout, tasks: Sequence[Task]) -> dict[int, str]:
    """With a ``bus:``: why queued tasks for named agents wait (they go through the bus),
    and where shared ones are."""
    from miyabi.bus.state import read_state
    from miyabi.bus.tasks import route_shared
    from miyabi.work.model import TaskState

    state = read_state(home.root) or {}
    up = state.get("state") == "up"
    pools = {p.name for p in lay.pools}
    out: dict[int, str] = {}
    for t in tasks:
        if t.state == TaskState.SHARED:
            out[t.id] = "on the bus: a host that runs its agent runs it; its result comes back here"
        elif t.state == TaskState.QUEUED and not t.from_bus:
            target = route_shared(t, lay.routes)
            if target is None or target in pools:
                continue
            out[t.id] = (
                f"to be published on the bus for {target}"
                if up
                else f"waits for the bus to publish it for {target} (the bus is down since {state.get('since', '?')})"
            )
    return out


def bus_view(home: Home, all_hosts: bool) -> dict[str, Any]:
    """The bus as ``status`` and the dashboard show it: ``bus`` (what ``run/bus.json``
    says: ``url`` without its password, ``host``, ``state`` up or down, ``since``,
    ``error``, ``leader``, ``hosts`` up; None without a bus) and, with ``all_hosts``,
    ``hosts``: every host's presence read from the bus now (see
    :func:`miyabi.bus.presence.hosts`).

    Raises:
        MiyabiError: ``all_hosts`` without a bus; BusDown (a MiyabiError): the bus cannot be reached.
    """
    from miyabi.bus.state import read_state, settings_of

    state = read_state(home.root)
    bus = {k: state.get(k) for k in ("url", "host", "state", "since", "error", "leader", "hosts")} if state else None
    out: dict[str, Any] = {"bus": bus}
    if not all_hosts:
        return out
    settings = settings_of(state) if state else None
    if settings is None:
        raise MiyabiError(
            "--all-hosts: this home is on no bus; add `bus: {url: redis://…}` to the layout and run `miyabi up`"
        )
    from miyabi.bus import presence
    from miyabi.bus.client import Bus

    client = Bus(settings)
    try:
        out["hosts"] = client.call(presence.hosts, client)
    finally:
        client.close()
    return out


def tell(home: Home, task: Task, text: str) -> None:
    """Tell the task's agent something about it, through its inbox (no agent: nobody)."""
    if task.agent:
        enqueue(home.root, make(task.agent, text, sender="miyabi", task=str(task.id)))


def cancel_task(home: Home, store: Store, ref: str | int, by: str) -> Task:
    """Cancel a task; its agent, if it has one, is told.

    Raises:
        TaskError: no such task, or it cannot be cancelled from its state.
    """
    from miyabi.work.model import TaskState

    t = store.set_state(store.get(ref).id, TaskState.CANCELLED, f"cancelled by {by}")
    tell(home, t, f"Task {t.ref} ({t.title}) was cancelled; stop working on it.")
    return t


def retry_task(store: Store, ref: str | int, by: str) -> Task:
    """Put a failed or cancelled task back in the queue.

    Raises:
        TaskError: no such task, or it cannot be retried from its state.
    """
    from miyabi.work.model import TaskState

    return store.set_state(store.get(ref).id, TaskState.QUEUED, f"retried by {by}")


def message_json(state: MessageState, m: Message) -> dict[str, Any]:
    """A message as ``miyabi inbox --json`` and the API show it (times in RFC 3339)."""
    return {
        "id": m.id,
        "state": str(state),
        "from": m.sender,
        "to": m.to,
        "priority": m.priority,
        "created": m.created,
        "delivered": m.extra.get("delivered"),
        "failed": m.extra.get("failed"),
        "retried": m.extra.get("retried"),
        "reason": m.extra.get("reason"),
        "attempts": m.extra.get("attempts", 0),
        "body": m.body,
    }


def messages(
    home_root: Path, agent: str, states: Sequence[MessageState] = (MessageState.PENDING,)
) -> list[dict[str, Any]]:
    """An agent's messages in ``states``, each state in delivery order."""
    return [message_json(state, m) for state, m in inbox(home_root, agent).list(tuple(states))]


def new_story(home: Home, store: Store, title: str, body: str = "") -> tuple[Story, Task]:
    """``miyabi story TEXT``: a story for the roles of the layout this home runs (its
    ``roles:``), its planning task routed to the manager.

    Raises:
        MiyabiError: no layout runs here, it does not load, or it names no ``roles.manager``.
    """
    from miyabi.config import load
    from miyabi.work.stories import create

    recorded = home.load_state().get("layout")
    if not isinstance(recorded, str):
        raise MiyabiError(f"no ensemble ran in {home.root}; run `miyabi up LAYOUT` with a roles: section first")
    try:
        lay = load(Path(recorded))
    except LayoutError as e:
        raise MiyabiError(f"{e.lines()[0]}; fix the layout, then try again") from None
    if lay.roles is None or lay.roles.manager is None:
        raise MiyabiError(
            f"{recorded}: roles.manager is not set; name the agent that plans stories (roles: {{manager: NAME}})"
        )
    return create(store, title, body, lay.roles.manager, lay.roles.coder, home_root=home.root)
