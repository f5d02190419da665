"""The event log: ``logs/events.jsonl`` under the miyabi home, one JSON object a line.

Every module that does something a user may later ask about (a message typed, an
agent restarted, a task assigned) appends one line here: ``{"time", "event", ...}``
with the time in RFC 3339. Writers in several processes share the file; each line is
one ``O_APPEND`` write, so lines never interleave.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

from miyabi.files import append_line
from miyabi.times import now_rfc3339

FILE = "events.jsonl"
"""The event log's name under ``logs/``."""

READ_CHUNK = 4 << 20
"""Bytes :func:`events_after` reads at most in one call (a long log is read a chunk at a time)."""


class EventKind(StrEnum):
    """What a line of the event log says happened (its ``event`` field): the type of
    :func:`append_event`'s argument, so that every writer and every reader (reports,
    notices, metrics, the dashboard's feed) names an event through this one list.
    Each member's docstring gives the fields its lines carry besides ``time`` and
    ``event``; ``agent`` is the agent concerned where there is one. The idea is rq's
    typed job statuses, applied to a log (rq/rq ``JobStatus``)."""

    # -- messages and delivery (miyabi/messaging)
    ENQUEUED = "enqueued"
    """A message entered an inbox: ``id``, ``from``, ``bytes``, ``priority``, ``task``
    (if it belongs to one), ``via`` (``bus`` for one from another host)."""
    TYPING = "typing"
    """A message is being typed into its agent's pane: ``id``, ``from``, ``pane``, ``attempt``."""
    ENTER_AGAIN = "enter-again"
    """The submit key was pressed again, the text still in the input box: ``id``, ``enters``."""
    DELIVERED = "delivered"
    """A message reached its agent, on evidence: ``id``, ``from``, ``pane``, ``evidence``, ``enters``."""
    NO_RECEIPT = "no-receipt"
    """A submission the agent's hooks never confirmed, recorded as delivered: ``id``, ``after``."""
    DEAD_LETTER = "dead-letter"
    """A message could not be delivered and went to ``failed/``: ``id``, ``reason``, ``file``."""
    RESUME = "resume"
    """A delivery a killed controller left half done is taken up again: ``id``, ``stage``."""
    AGENT_RESTARTED = "agent-restarted"
    """The agent's process changed during a delivery; the message is typed again: ``id``, ``stage``."""
    RETRY = "retry"
    """A dead letter was put back in its inbox (``miyabi retry``): ``id``, ``ttl``."""
    DROPPED = "dropped"
    """A pending message was discarded (``miyabi drop``): ``id``."""
    INTRO = "intro"
    """An agent's first message (its name, its peers) was queued: ``id``, ``pid``."""
    TYPE_ERROR = "type-error"
    """Typing or reading the pane failed; the delivery is tried again: ``id``, ``error``."""
    TMUX_ERROR = "tmux-error"
    """tmux did not answer a deliverer: ``error``."""
    DELIVERER_ERROR = "deliverer-error"
    """A deliverer's pass failed unexpectedly (it goes on): ``error``."""
    STATE = "state"
    """An agent's state changed: ``state``, ``via`` (``hook``, ``screen``, ``delivery``),
    ``pid``, ``question`` (waiting for approval)."""
    AGENT_PARKED = "agent-parked"
    """An agent was parked: its provider refuses it, or its budget is spent: ``reason``
    (``limit``, ``budget``), ``detail`` (the screen row, or the budget), ``until`` (Unix
    time it resets, when known), ``probe_at`` (Unix time it is told to go on; null:
    when its budget allows), ``strikes`` (parks in a row)."""
    AGENT_UNPARKED = "agent-unparked"
    """A park ended: ``reason``, ``why`` (``went on``, ``recovered``, ``raised``, …),
    ``parked_s`` (seconds since it began)."""
    USAGE = "usage"
    """An agent's process reported tokens: ``pid``, ``input_tokens``, ``output_tokens``
    (the process's totals), ``turn_input_tokens``, ``turn_output_tokens`` (the turn's),
    ``cost_usd`` (the process's total in US dollars) and ``turn_cost_usd`` (the turn's),
    where the CLI reports a cost, ``task`` (the task of the last message it got),
    ``pool`` (a pool instance's pool)."""
    BUDGET_WARNING = "budget-warning"
    """A budget (layout ``budget:``) reached 80 % in its period, once per budget and
    period: ``scope`` (``layout``, a pool's or an agent's name), ``used``, ``limit`` and
    ``unit`` (``tokens`` or ``usd``) of the unit nearest its limit, ``per`` (``day``,
    ``task``), ``period`` (the local date, or the task's id)."""

    # -- the watchdog (miyabi/supervision)
    AGENT_DIED = "agent-died"
    """An agent's process ended: ``pid``, ``cause``, ``uptime``, ``seen_by``, ``decision``,
    ``delay``, ``evidence`` (the crash evidence file)."""
    RESTARTED = "restarted"
    """An agent was started again in its pane: ``pid``, ``pane``, ``reason``."""
    RESUMED = "resumed"
    """The agent's next process resumes its own last conversation: ``session`` (the
    conversation's id as its hooks reported it; null for a CLI that needs none), and for
    a pool instance that takes up an earlier one's work, ``continues`` (that instance)."""
    STARTED_FRESH = "started-fresh"
    """The agent's next process starts a new conversation although its profile can
    resume one: ``reason``."""
    RESTART_DROPPED = "restart-dropped"
    """A planned restart was not made (the pane went, or already runs a new process): ``reason``."""
    RESTART_ERROR = "restart-error"
    """A restart failed (tried again): ``error``."""
    GAVE_UP = "gave-up"
    """The watchdog stopped restarting an agent (a crash loop) until ``miyabi restart``: ``reason``."""
    NUDGED = "nudged"
    """A silent agent was sent the layout's nudge: ``id``, ``signal``, ``detail``."""
    HUNG_RESTART = "hung-restart"
    """An agent still silent after its nudge was restarted: ``signal``, ``detail``, ``evidence``."""
    SILENT_BUT_WORKING = "silent-but-working"
    """A silent agent uses CPU, so it is left alone: ``signal``, ``detail``."""
    APPROVAL = "approval"
    """A permission question was answered: ``answer``, ``by``, ``question``, ``reason``, ``id``."""
    APPROVAL_ERROR = "approval-error"
    """A layout rule's answer could not be given: ``question``, ``error``."""
    PANE_RECREATED = "pane-recreated"
    """Agents whose pane was closed got a new one: ``agents``."""
    SESSION_REBUILT = "session-rebuilt"
    """The session was built again after its tmux server died: ``session``, ``agents``."""

    # -- the controller and its dashboard (miyabi/controller)
    CONTROLLER_START = "controller-start"
    """A controller started for the home: ``pid``, ``session``."""
    CONTROLLER_READY = "controller-ready"
    """Its threads run (delivery, watchdog): ``pid``, ``agents``."""
    CONTROLLER_STOP = "controller-stop"
    """It stopped: ``pid``, ``threads_left``."""
    LAYOUT_RELOADED = "layout-reloaded"
    """The running controller adopted a layout (``miyabi reload``, ``up``): ``path``,
    ``added``, ``removed``, ``changed``."""
    INSTANCES_CHANGED = "instances-changed"
    """Pool instances started or ended: the same fields as ``layout-reloaded``."""
    WEB_STARTED = "web-started"
    """The controller's dashboard started: ``pid``, ``host``, ``port``."""
    WEB_EXITED = "web-exited"
    """The controller's dashboard ended: ``pid``, ``code``, ``ran``, ``reason``."""

    # -- tasks and GitHub (miyabi/work)
    TASK_ASSIGNED = "task-assigned"
    """A task was routed to an agent and its message queued: ``task``, ``ref``, ``id``."""
    TASK_HANDED_BACK = "task-handed-back"
    """The process that held a task ended, or its time ran out: ``task``, ``ref``, ``to``, ``reason``."""
    TASK_HANDED_OFF = "task-handed-off"
    """A parked agent's task went to the first agent or pool of its ``park.to`` that
    could take it: ``task``, ``ref``, ``agent`` (the parked one), ``to``, ``reason``."""
    TASK_CANCELLED = "task-cancelled"
    """A task was cancelled because its issue was closed: ``task``, ``ref``, ``reason``."""
    CLAIM_LOST = "claim-lost"
    """Another poller claimed the issue first; this copy was cancelled: ``task``, ``ref``."""
    CLAIM_ERROR = "claim-error"
    """The claim of an issue failed (tried again later): ``task``, ``ref``, ``error``."""
    GITHUB_SYNC = "github-sync"
    """A GitHub poll stored tasks: ``added``, ``triaged``."""
    GITHUB_ERROR = "github-error"
    """A call to GitHub failed: ``error``, ``part``, ``number``."""
    GITHUB_NOTICE_ERROR = "github-notice-error"
    """Telling an issue what its task became failed (tried again): ``task``, ``ref``, ``error``, ``tries``."""

    # -- pools (miyabi/pipeline)
    INSTANCE_PREPARING = "instance-preparing"
    """A pool instance's worktree is being made: ``task``, ``ref``, ``pool``, ``branch``."""
    WORKTREE_READY = "worktree-ready"
    """Its worktree is set up: ``task``, ``path``, ``branch``, ``base``, ``fresh``,
    ``convention``, ``chosen`` (what was detected without a ``.miyabi.yml``)."""
    INSTANCE_READY = "instance-ready"
    """The instance's agent starts: ``task``, ``pool``, ``branch``."""
    INSTANCE_FAILED = "instance-failed"
    """An instance could not be prepared; its task failed: ``task``, ``ref``, ``reason``."""
    INSTANCE_ENDED = "instance-ended"
    """An instance ended, its task no longer its own: ``task``, ``pool``, ``reason``."""
    VERIFY_PASSED = "verify-passed"
    """The checks passed on a task's commit: ``task``, ``ref``, ``round``, ``commit``,
    ``checks_seconds``, ``log``."""
    VERIFY_FAILED = "verify-failed"
    """A check failed: ``task``, ``ref``, ``round``, ``of``, ``command``, ``exit_code``, ``log``, ``state``."""
    VERIFY_AGAIN = "verify-again"
    """The agent committed while its checks ran; they run again: ``task``, ``times``, ``reason``."""
    MERGED = "merged"
    """A task's branch landed on its base branch behind the checks: ``task``, ``ref``,
    ``branch``, ``base``, ``merge``, ``results``."""
    MERGE_ROLLED_BACK = "merge-rolled-back"
    """A merge that failed its checks or conflicted never landed: ``task``, ``ref``,
    ``base``, ``merge``, ``reason``, ``log``."""
    APPROVAL_NEEDED = "approval-needed"
    """A checked merge of a pool with ``approve: required`` waits for a person: ``task``,
    ``ref``, ``branch``, ``base``, ``commit``, ``merge``."""
    MERGE_APPROVED = "merge-approved"
    """A person approved a waiting merge: ``task``, ``commit``, ``by``."""
    MERGE_REJECTED = "merge-rejected"
    """A person rejected a waiting merge (back to the agent as a round): ``task``, ``commit``, ``by``, ``reason``."""
    SELF_UPGRADE = "self-upgrade"
    """A merge into miyabi's own checkout (``self:``) landed; the controller restarts on
    it: ``task``, ``repo``, ``base``, ``before``, ``after``."""
    SELF_UPGRADED = "self-upgraded"
    """The controller runs the merged code and passed its health probe: ``task``,
    ``before``, ``after``, ``seconds``, ``evidence``."""
    SELF_ROLLED_BACK = "self-rolled-back"
    """The merged code failed its health probe: the base branch went back and the old
    code runs again: ``task``, ``before``, ``after``, ``evidence``, ``moved_back``, ``fix``."""
    PULL_REQUEST_OPENED = "pull-request-opened"
    """A pull request was opened for a task: ``task``, ``ref``, ``number``, ``url``, ``branch``."""
    PULL_REQUEST_MERGED = "pull-request-merged"
    """A pull request miyabi opened was merged: ``number``, ``branch``."""
    PULL_REQUEST_CLOSED = "pull-request-closed"
    """A pull request miyabi opened was closed unmerged: ``number``, ``branch``."""
    FOLLOW_UP = "follow-up"
    """A review comment or failing check became a follow-up task: ``task``, ``parent``,
    ``number``, ``cause``, ``what``."""
    FOLLOW_UP_REFUSED = "follow-up-refused"
    """A follow-up asked by an author who may not: ``number``, ``author``, ``comment``."""
    FIX_FILED = "fix-filed"
    """Monitoring filed a fix task: ``cause``, ``task``, ``issue``, ``title``."""
    FIX_ALREADY_FILED = "fix-already-filed"
    """A fix task for that cause is still open: ``cause``, ``task``, ``issue``."""
    DEPLOYED = "deployed"
    """A commit was deployed and passed its health check (or had none): ``name`` (the
    deploy's), ``repo``, ``commit``, ``story``, ``log``, ``evidence``."""
    DEPLOY_FAILED = "deploy-failed"
    """A deploy failed (a command, the service's start, its health check): ``name``,
    ``repo``, ``commit``, ``story``, ``log``, ``evidence``."""
    HEALTH_FAILED = "health-failed"
    """The monitor's health check of a deployed service failed: ``name``, ``repo``,
    ``commit``, ``story``, ``check``, ``evidence``, ``failures`` (in a row)."""
    SERVICE_RESTARTED = "service-restarted"
    """A deployed service's process had died and was started again: ``name``, ``pid``,
    ``pane``, ``reason``, ``delay`` (seconds waited, the watchdog's backoff)."""
    SERVICE_GAVE_UP = "service-gave-up"
    """A deployed service kept dying: it is not started again until the next deploy:
    ``name``, ``reason``."""
    WORKTREE_REMOVED = "worktree-removed"
    """A worktree whose work landed (or whose pull request closed) was removed: ``path``, ``branch``."""
    PIPELINE_ERROR = "pipeline-error"
    """A pipeline step failed unexpectedly (tried again): ``job``, ``error``, ``tries``."""

    # -- stories (miyabi/work/stories, miyabi/pipeline/story)
    STORY_CREATED = "story-created"
    """A story was made (``miyabi story``, an issue labelled story): ``story``, ``title``,
    ``task`` (its planning task), ``manager``, ``source``."""
    STORY_PLANNED = "story-planned"
    """Its planning task is done and its tasks were imported: ``story``, ``tasks``."""
    STORY_DEPLOYED = "story-deployed"
    """Every task of it landed and its deploy ran: ``story``, ``commit``, ``round``,
    ``seconds`` (since the story was made), ``log``."""
    STORY_DONE = "story-done"
    """Its health and acceptance checks passed: ``story``, ``commit``, ``seconds``."""
    STORY_FAILED = "story-failed"
    """A deploy or check of it failed: ``story``, ``round``, ``of``, ``evidence``, ``fix``
    (the fix task, None when ``final``), ``final`` (its rounds ran out: it failed)."""

    # -- notices and reports (miyabi/notify, miyabi/reports)
    NOTICE_SENT = "notice-sent"
    """A notice reached a receiver: ``receiver``, ``kind``, ``key``, ``attempts``."""
    NOTICE_FAILED = "notice-failed"
    """A notice was given up after its tries: ``receiver``, ``kind``, ``key``, ``attempts``, ``reason``."""
    REPORT_POSTED = "report-posted"
    """The scheduled report was posted to its issue: ``issue``, ``since``, ``until``, ``to``."""
    REPORT_ERROR = "report-error"
    """Posting it failed (tried again in 10 minutes): ``issue``, ``error``."""

    # -- several hosts (miyabi/bus)
    BUS_UP = "bus-up"
    """Redis answers again: ``host``."""
    BUS_DOWN = "bus-down"
    """Redis stopped answering: ``host``, ``error``."""
    BUS_INTAKE = "bus-intake"
    """Which host polls GitHub changed: ``host``, ``leader``."""
    BUS_PUBLISHED = "bus-published"
    """A task was published on the bus: ``task``, ``ref``, ``id``, ``target``."""
    BUS_CLAIMED = "bus-claimed"
    """This host claimed a published task: ``task``, ``id``, ``agent``, ``origin``, ``attempt``."""
    BUS_LEASE_LOST = "bus-lease-lost"
    """This host's lease of a claimed task ran out: ``task``, ``id``, ``reason``."""
    BUS_RESULT = "bus-result"
    """A published task's result came back: ``task``, ``id``, ``state``, ``agent``, ``host``."""
    BUS_SENT = "bus-sent"
    """A message went to another host's agent: ``id``, ``host``, ``spooled``."""
    BUS_UNDELIVERABLE = "bus-undeliverable"
    """A message from another host names no agent of this one: ``id``, ``reason``."""


class NoticeKind(StrEnum):
    """What a notification receiver can ask to be told of (``notify[].events`` in the
    layout; see ``miyabi.notify.rules``): happenings read from the event log and the
    task store, each named once here for the layout's loader and the notifier."""

    AGENT_FAILED = "agent-failed"
    """The watchdog gave up on an agent (crash loop) until ``miyabi restart``."""
    AGENT_HUNG = "agent-hung"
    """An agent was silent too long: nudged, then restarted."""
    WAITING_APPROVAL = "waiting-approval"
    """An agent asks for permission."""
    AGENT_PARKED = "agent-parked"
    """An agent was parked at its provider's usage limit or its budget."""
    BUDGET_WARNING = "budget-warning"
    """A budget reached 80 % of its limit in its period."""
    TASK_DONE = "task-done"
    TASK_FAILED = "task-failed"
    """A task failed or needs a person (its attempts or verify rounds ran out)."""
    PR_OPENED = "pr-opened"
    STORY_DONE = "story-done"
    """A story was deployed and passed its health and acceptance checks."""
    STORY_FAILED = "story-failed"
    """A story failed after its rounds of fixes ran out."""
    CONTROLLER_RESTARTED = "controller-restarted"
    """A controller started after an earlier one had run (a crash, a reboot, a restart)."""
    DEPLOYED = "deployed"
    """A commit was deployed and passed its health check."""
    HEALTH_FAILED = "health-failed"
    """A deploy failed, or a deployed service began failing its health check (the first
    failure of a streak), or kept dying."""
    MERGE_WAITING = "merge-waiting"
    """A checked merge waits for a person (a pool with ``approve: required``)."""
    SELF_ROLLED_BACK = "self-rolled-back"
    """miyabi's merged code failed its health probe and was rolled back (``self:``)."""


def path_of(home_root: Path) -> Path:
    """``logs/events.jsonl`` under the home."""
    return home_root / "logs" / FILE


def append_event(home_root: Path, event: EventKind, **fields: Any) -> None:
    """Append ``{"time", "event", **fields}`` to the home's event log (``event``: one of
    :class:`EventKind`, written as its value).

    Raises:
        OSError: the log cannot be written.
    """
    rec = {"time": now_rfc3339(), "event": str(event), **fields}
    append_line(path_of(home_root), json.dumps(rec, ensure_ascii=False, default=str))


def read_events(home_root: Path) -> Iterator[dict[str, Any]]:
    """The events logged so far, oldest first (lines that are not JSON are skipped)."""
    try:
        f = path_of(home_root).open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec


def events_after(
    path: Path, offset: int, limit: int = READ_CHUNK
) -> tuple[list[tuple[int, int, dict[str, Any]]], int, bool]:
    """The events written to the log ``path`` past byte ``offset``, for readers that follow
    it (the dashboard's feed and metrics, notifications): whole lines only, from at most
    ``limit`` bytes.

    Returns:
        ``(start, end, event)`` for each line that is a JSON object (``start`` and ``end``:
        its byte offsets, the newline included in it), the offset after the last whole
        line read, and whether the log was replaced (shorter than ``offset``: it is read
        from its start). A missing log has no events, and offset 0.
    """
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return [], 0, offset > 0
    with f:
        size = f.seek(0, 2)
        replaced = size < offset
        if replaced:
            offset = 0
        f.seek(offset)
        data = f.read(min(size - offset, limit))
    out = []
    at = offset
    for raw in data.split(b"\n")[:-1]:
        start, at = at, at + len(raw) + 1
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append((start, at, rec))
    return out, at, replaced
