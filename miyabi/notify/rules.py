"""Which happenings become notices, and what a notice says: pure functions of one
event-log line or one task transition.

A notice has a kind (:class:`~miyabi.events.NoticeKind`), one line of text for people, and a key that is
unique to the happening it comes from (the event's place in the log, or the task
transition's row id), so that it is queued once per receiver however often the log is
read again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from miyabi.events import EventKind, NoticeKind
from miyabi.times import rfc3339


@dataclass(frozen=True)
class Notice:
    """One thing to tell.

    Attributes:
        key: unique to the happening (``log:<offset>`` or ``task-event:<id>``).
        kind: what it is.
        title: a few words (``agent kaede failed``).
        text: one line with the details.
        url: a link where there is one (a pull request, an issue), else None.
        fields: the happening itself (the event's fields), for the generic webhook.
    """

    key: str
    kind: NoticeKind
    title: str
    text: str
    url: str | None
    fields: dict[str, Any]


def parked_text(agent: str, e: dict[str, Any]) -> str:
    """One line on a park: why, and until when."""
    if e.get("reason") == "budget":
        text = f"{agent} spent its budget ({e.get('detail')})"
        until = e.get("until")
        scope = e.get("scope") or agent
        return text + (f" until {rfc3339(float(until))}" if until else f"; `miyabi budget raise {scope}` lets it go on")
    text = f"{agent} is at its provider's usage limit: {str(e.get('detail') or '')[:200]}"
    if e.get("until"):
        return f"{text}; resets {rfc3339(float(e['until']))}"
    return f"{text}; told to go on at {rfc3339(float(e['probe_at']))}" if e.get("probe_at") else text


def warning_text(e: dict[str, Any]) -> str:
    """One line on a budget at 80 %: how much of what, and what happens at 100 %."""
    scope, unit = str(e.get("scope") or "?"), e.get("unit")
    used, limit = e.get("used"), e.get("limit")
    amount = f"${used} of ${limit}" if unit == "usd" else f"{used} of {limit} tokens"
    per = "today" if e.get("per") == "day" else f"on task {e.get('period')}"
    return (
        f"the budget of {scope} is at {amount} {per}; at its limit its agents are parked "
        f"(`miyabi budget raise {scope}` gives more)"
    )


def from_event(key: str, e: dict[str, Any]) -> Notice | None:
    """The notice an event-log line makes, if any (``key``: where the line is)."""
    kind, agent = e.get("event"), str(e.get("agent") or "?")
    if kind == EventKind.GAVE_UP:
        return Notice(
            key,
            NoticeKind.AGENT_FAILED,
            f"agent {agent} failed",
            f"the watchdog gave up on {agent}: {e.get('reason') or 'it kept dying'}; `miyabi restart {agent}` once "
            "fixed",
            None,
            e,
        )
    if kind == EventKind.NUDGED:
        return Notice(
            key,
            NoticeKind.AGENT_HUNG,
            f"agent {agent} is hung",
            f"{agent} was silent too long ({e.get('detail') or 'no output'}); nudged",
            None,
            e,
        )
    if kind == EventKind.HUNG_RESTART:
        return Notice(
            key,
            NoticeKind.AGENT_HUNG,
            f"agent {agent} restarted (hung)",
            f"{agent} stayed silent after the nudge ({e.get('detail') or 'no output'}); restarted",
            None,
            e,
        )
    if kind == EventKind.AGENT_PARKED:
        return Notice(key, NoticeKind.AGENT_PARKED, f"agent {agent} parked", parked_text(agent, e), None, e)
    if kind == EventKind.BUDGET_WARNING:
        scope = str(e.get("scope") or "?")
        return Notice(key, NoticeKind.BUDGET_WARNING, f"budget {scope} at 80 %", warning_text(e), None, e)
    if kind == EventKind.STATE and e.get("state") == "waiting-approval":
        question = str(e.get("question") or "permission requested")
        return Notice(
            key,
            NoticeKind.WAITING_APPROVAL,
            f"agent {agent} asks for approval",
            f"{agent} asks: {question[:300]}; answer with `miyabi approve {agent}` or `miyabi deny {agent}`",
            None,
            e,
        )
    if kind in (EventKind.DEPLOYED, EventKind.DEPLOY_FAILED, EventKind.HEALTH_FAILED, EventKind.SERVICE_GAVE_UP):
        return deploy_notice(key, e)
    if kind == EventKind.APPROVAL_NEEDED:
        return Notice(
            key,
            NoticeKind.MERGE_WAITING,
            f"merge of {e.get('ref') or 'a task'} waits for approval",
            f"task {e.get('ref') or e.get('task')} passed its checks; its merge into {e.get('base')} waits: "
            f"`miyabi approve-merge {e.get('task')}` or the dashboard's Approvals page",
            None,
            e,
        )
    if kind == EventKind.SELF_ROLLED_BACK:
        return Notice(
            key,
            NoticeKind.SELF_ROLLED_BACK,
            "miyabi's upgrade rolled back",
            f"the merge of task {e.get('task')} failed the health probe: {str(e.get('evidence') or '')[:300]}; "
            f"{e.get('fix') or 'no fix task'}",
            None,
            e,
        )
    if kind == EventKind.PULL_REQUEST_OPENED:
        return Notice(
            key,
            NoticeKind.PR_OPENED,
            f"pull request opened for {e.get('ref') or 'a task'}",
            f"task {e.get('ref') or e.get('task')}: pull request #{e.get('number')} {e.get('url') or ''}".rstrip(),
            str(e["url"]) if e.get("url") else None,
            e,
        )
    if kind in (EventKind.STORY_DONE, EventKind.STORY_FAILED) and (kind == EventKind.STORY_DONE or e.get("final")):
        return story_notice(key, e)
    return None


def deploy_notice(key: str, e: dict[str, Any]) -> Notice | None:
    """The notice of a deploy, or of a deployed service in trouble: a failing health
    check is told once per streak (its first failure), not at every check."""
    kind, name = e.get("event"), str(e.get("name") or "?")
    commit = str(e.get("commit") or "")[:12]
    story = f" (story {e['story']})" if e.get("story") is not None else ""
    if kind == EventKind.DEPLOYED:
        return Notice(key, NoticeKind.DEPLOYED, f"{name} deployed", f"{name} at {commit}{story} is deployed", None, e)
    if kind == EventKind.DEPLOY_FAILED:
        text = f"the deploy of {name} at {commit}{story} failed: {str(e.get('evidence') or '')[:300]}"
        return Notice(key, NoticeKind.HEALTH_FAILED, f"deploy of {name} failed", text, None, e)
    if kind == EventKind.SERVICE_GAVE_UP:
        text = f"the service of {name} keeps dying; not restarted until the next deploy: {e.get('reason') or ''}"
        return Notice(key, NoticeKind.HEALTH_FAILED, f"service {name} failed", text.rstrip(": "), None, e)
    if e.get("failures") != 1:
        return None
    text = f"{name} at {commit}{story} fails {e.get('check')}: {str(e.get('evidence') or '')[:300]}"
    return Notice(key, NoticeKind.HEALTH_FAILED, f"{name} fails its health check", text, None, e)


def story_notice(key: str, e: dict[str, Any]) -> Notice:
    """The notice of a story that ended: done (deployed, its checks passed) or failed."""
    story = e.get("story")
    if e.get("event") == EventKind.STORY_DONE:
        return Notice(
            key,
            NoticeKind.STORY_DONE,
            f"story {story} done",
            f"story {story} is deployed ({str(e.get('commit') or '')[:12]}) and passed its checks",
            None,
            e,
        )
    return Notice(
        key,
        NoticeKind.STORY_FAILED,
        f"story {story} failed",
        f"story {story} failed after {e.get('round')} of {e.get('of')} rounds: {str(e.get('evidence') or '')[:300]}",
        None,
        e,
    )


def restarted(key: str, e: dict[str, Any]) -> Notice:
    """The notice of a controller that started after another had run."""
    return Notice(
        key,
        NoticeKind.CONTROLLER_RESTARTED,
        "controller restarted",
        f"miyabi's controller started again (pid {e.get('pid')}, session {e.get('session')})",
        None,
        e,
    )


def from_task_event(row_id: int, task: dict[str, Any], state: str, reason: str) -> Notice | None:
    """The notice a task's move to ``state`` makes, if any (``task``: its
    ``to_json()``)."""
    ref, title = task.get("ref") or f"#{task.get('id')}", str(task.get("title") or "")[:200]
    fields = {
        "task": task.get("id"),
        "ref": ref,
        "title": title,
        "state": state,
        "reason": reason,
        "agent": task.get("agent"),
    }
    if state == "done":
        return Notice(
            f"task-event:{row_id}",
            NoticeKind.TASK_DONE,
            f"task {ref} done",
            f"{ref} {title}: done ({reason[:300]})",
            task.get("url"),
            fields,
        )
    if state == "failed":
        return Notice(
            f"task-event:{row_id}",
            NoticeKind.TASK_FAILED,
            f"task {ref} failed",
            f"{ref} {title}: failed, needs a person ({reason[:300]})",
            task.get("url"),
            fields,
        )
    return None
