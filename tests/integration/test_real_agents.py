"""miyabi against the real agent CLIs (Claude Code, Codex CLI, aider), each talking to
the model stand-in on 127.0.0.1: what reaches "the model" is the ground truth.

Each CLI gets a burst of messages while it is busy (multi-line with indentation and a
blank line, 2,000 and 3,000 characters, non-ASCII, its own busy and ready phrases):
each must reach the model exactly once, unaltered and in order, and miyabi's
recorded states must follow the requests (never ready while one is in flight for
more than 100 ms, never busy for more than 1 s once a turn is over). A permission
question is answered by ``miyabi approve`` and one by ``deny``; a CLI killed mid-turn
comes back and gets the next message once.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakemodel import FakeModel, Request
from helpers import wait_for, write_layout
from integration.conftest import Cli
from integration.real_agents import setup

from miyabi.agents.hooks import unwrap_paste
from miyabi.home import Home
from miyabi.messaging.activity import read_seen
from miyabi.times import parse_rfc3339

CLIS = ["claude", "codex", "aider", "gemini", "opencode"]
STARTUP = 90.0
"""Seconds a CLI may take to start on a busy machine."""


@pytest.fixture
def model(tmp_path: Path) -> Iterator[FakeModel]:
    """The model stand-in; at teardown, an answer it did not give whole fails the test."""
    with FakeModel(delay=0.3) as m:
        try:
            yield m
        finally:
            with (tmp_path / "requests.jsonl").open("w") as f:  # for a failure's post-mortem
                for r in m.requests:
                    f.write(
                        json.dumps(
                            {
                                "api": r.api,
                                "main": r.main,
                                "tool_result": r.tool_result,
                                "tool_call": r.tool_call,
                                "started": r.started,
                                "ended": r.ended,
                                "error": r.error,
                                "limited": r.limited,
                                "prompt": r.prompt[:200],
                            }
                        )
                        + "\n"
                    )
        m.check()


def events(home: Path) -> list[dict[str, object]]:
    f = home / "logs" / "events.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def start(cli: Cli, tmp_path: Path, model: FakeModel, name: str) -> Path:
    s = setup(name, tmp_path, model.url)
    lay = write_layout(tmp_path / "real.yaml", [s.agent("a")], session="real")
    r = cli("up", str(lay), "-d")
    assert r.exit_code == 0, r.output
    return s.work


def state(home: Path) -> str | None:
    seen = read_seen(home, "a")
    return seen.state if seen else None


def sent(home: Path, text: str) -> str:
    from integration.test_delivery import send

    return send(home, "a", text)


def matches(name: str, sent_text: str, got: Request) -> bool:
    """Whether the model got ``sent_text`` as the user turn, unaltered by miyabi. The
    CLIs change a prompt in their own ways (measured): aider appends reminders, Claude
    Code wraps a paste in ``<pasted_content>`` marks and turns its tabs into four
    spaces, Codex and Gemini CLI trim the whitespace at its end, opencode ends a paste
    with a space."""
    if got.prompt == sent_text:
        return True
    if name == "aider":
        return got.prompt.startswith(sent_text + "\n")
    if name in ("codex", "gemini", "opencode"):
        return got.prompt.rstrip() == sent_text.rstrip()
    return unwrap_paste(got.prompt) == sent_text.replace("\t", "    ")


def burst(tag: str) -> list[str]:
    long_2000 = f"two thousand {tag} " + "".join(f"{i:04d} " for i in range(400))[: 2000 - 20 - len(tag)] + "end"
    long_3000 = f"three thousand {tag} " + "".join(f"w{i:05d} " for i in range(500))[: 3000 - 22 - len(tag)] + "end"
    return [
        f"m1 {tag} plain",
        f"m2 {tag} multi-line\n  indented two\n\n    after a blank line",
        long_2000,
        long_3000,
        f"m5 {tag} 日本語のメッセージ — émoji 🌸 ümlaut",
        f"m6 {tag} esc to interrupt (12s • esc to interrupt) Waiting for reviewers",
        f"m7 {tag} ready phrases\n❯ \n› Ask Codex to do anything\n> \ndiff> ",
        f"m8 {tag} ? for shortcuts · ctrl+c to interrupt",
        f"m9 {tag} tabs\tand  double  spaces",
        f"m10 {tag} quotes 'single' \"double\" `back` $HOME \\n",
        f"m11 {tag} last",
    ]


def timeline(home: Path, model: FakeModel) -> list[str]:
    """Where miyabi's recorded states disagree with the requests the model saw: ready
    while one was in flight for more than 100 ms, or not ready 1 s after a turn was
    over. A turn is over when its last answer ended and the CLI said so itself (its
    turn-end hook ran; a loaded machine slows the CLI, which is not miyabi's to judge);
    for a CLI without hooks only the first rule can be checked."""
    states = [(parse_rfc3339(str(e["time"])), str(e["state"])) for e in events(home) if e.get("event") == "state"]
    typed = [parse_rfc3339(str(e["time"])) for e in events(home) if e.get("event") == "typing"]
    hooks = home / "run" / "hooks" / "a.jsonl"
    told = sorted(
        float(r["t"])
        for r in (json.loads(x) for x in (hooks.read_text().splitlines() if hooks.exists() else []))
        if r.get("event") in ("Stop", "ready", "notify")
    )
    with model.lock:
        reqs = [r for r in model.requests if r.main and r.ended is not None]

    def at(t: float) -> str | None:
        now = None
        for when, s in states:
            if when > t:
                break
            now = s
        return now

    problems = []
    for r in reqs:
        assert r.ended is not None
        if r.ended - r.started > 0.1:
            bad = [s for when, s in states if r.started + 0.1 <= when <= r.ended and s == "ready"]
            if bad or at(r.started + 0.1) == "ready":
                problems.append(f"ready while a request was in flight ({r.prompt[:30]!r})")
        if not r.tool_call:
            if not told:
                # A CLI without hooks (Gemini CLI, opencode) tells only its screen, which
                # is what miyabi reads: nothing independent says when its turn is over
                # (opencode keeps "esc interrupt" up for seconds after an answer on a
                # loaded machine), so only the in-flight rule holds for it.
                continue
            over = min([t for t in told if t >= r.ended] + [r.ended + 30.0])
            nxt = min([t for t in typed if t > r.ended] + [time.time()])
            if nxt - over > 1.0 and at(over + 1.0) != "ready":
                problems.append(f"not ready 1 s after the turn ended ({r.prompt[:30]!r}: {at(over + 1.0)})")
    return problems


@pytest.mark.parametrize("name", CLIS)
def test_a_burst_reaches_the_model_once_each_unaltered_and_in_order(
    name: str, cli: Cli, home: Path, tmp_path: Path, model: FakeModel
) -> None:
    start(cli, tmp_path, model, name)
    wait_for(lambda: state(home) == "ready", timeout=STARTUP, what=f"{name} ready")
    tag = uuid.uuid4().hex[:8]
    first = f"m0 {tag} [[delay 3]] keep busy"
    sent(home, first)
    wait_for(lambda: any(matches(name, first, r) for r in model.prompts()), timeout=60, what="the first prompt")
    texts = burst(tag)
    for t in texts:
        sent(home, t)
    expected = [first, *texts]
    got = model.wait_prompts(len(expected), timeout=240)
    model.wait_answered(timeout=30)
    ours = [r for r in got if tag in r.prompt]
    assert len(ours) == len(expected), [r.prompt[:40] for r in ours]
    print("\n".join(repr(r.prompt[:100]) for r in ours))
    for want, r in zip(expected, ours, strict=True):
        assert matches(name, want, r), f"sent {want[:60]!r}, the model got {r.prompt[:200]!r}"
    delivered = wait_for(
        lambda: len(d := [e for e in events(home) if e.get("event") == "delivered"]) >= len(expected) and d,
        timeout=30,
        what="every delivery recorded",
    )
    assert len(delivered) == len(expected) and not [e for e in events(home) if e.get("event") == "dead-letter"]
    assert not any(str(e.get("evidence", "")).startswith("unverified") for e in delivered)
    wait_for(lambda: state(home) == "ready", timeout=10, what="ready after the burst")
    assert timeline(home, model) == []
    assert not [e for e in events(home) if e.get("event") in ("nudge", "hung", "agent-restarted")]
    if name in ("gemini", "opencode"):  # without hooks miyabi reads no usage from them (docs/profiles.md, "Usage")
        return
    # usage, as each CLI reports it
    (row,) = wait_for(
        lambda: [
            r
            for r in json.loads(cli("status", "--json").output)["agents"]
            if (r["input_tokens"] or 0) > 0 and (r["output_tokens"] or 0) > 0
        ],
        timeout=30,
        what="tokens in status",
    )
    used = [e for e in events(home) if e.get("event") == "usage"]
    assert used and used[-1]["input_tokens"] == row["input_tokens"] and used[-1]["pid"] == row["pid"]
    assert not [e for e in events(home) if e.get("event") in ("nudge", "hung", "agent-restarted")]


@pytest.mark.parametrize("name", CLIS)
def test_permission_questions_are_answered_by_approve_and_deny(
    name: str, cli: Cli, home: Path, tmp_path: Path, model: FakeModel
) -> None:
    work = start(cli, tmp_path, model, name)
    wait_for(lambda: state(home) == "ready", timeout=STARTUP, what=f"{name} ready")
    sent(home, "first [[tool]] please")
    wait_for(lambda: state(home) == "waiting-approval", timeout=60, what="waiting-approval")
    r = cli("status", "--json")
    (row,) = json.loads(r.output)["agents"]
    assert row["state"] == "waiting-approval" and row["question"]
    r = cli("approve", "a")
    assert r.exit_code == 0, r.output
    wait_for(lambda: (work / "miyabi-tool-1").exists(), timeout=30, what="the approved command's file")
    wait_for(lambda: state(home) == "ready", timeout=30, what="ready after the approved turn")
    r = cli("approve", "a")
    assert r.exit_code == 1 and "not waiting for approval" in r.output

    sent(home, "second [[tool]] please")
    wait_for(lambda: state(home) == "waiting-approval", timeout=60, what="waiting-approval again")
    r = cli("deny", "a", "--reason", "denied: do not create files")
    assert r.exit_code == 0, r.output
    wait_for(
        lambda: any("denied: do not create files" in p.prompt for p in model.prompts()),
        timeout=60,
        what="the reason as the next prompt",
    )
    assert not (work / "miyabi-tool-2").exists()
    answers = [e for e in events(home) if e.get("event") == "approval"]
    assert [e["answer"] for e in answers] == ["approve", "deny"]
    assert all(e["by"] and e["question"] for e in answers) and answers[1]["reason"] == "denied: do not create files"


@pytest.mark.parametrize("name", CLIS)
def test_a_cli_killed_mid_turn_comes_back_and_gets_the_next_message_once(
    name: str, cli: Cli, home: Path, tmp_path: Path, model: FakeModel, panes
) -> None:
    start(cli, tmp_path, model, name)
    wait_for(lambda: state(home) == "ready", timeout=STARTUP, what=f"{name} ready")
    sent(home, "long turn [[delay 8]]")
    wait_for(lambda: any("long turn" in r.prompt for r in model.prompts()), timeout=60, what="the long prompt")
    pid = panes("real")["a"].pid
    os.killpg(os.getpgid(pid), signal.SIGKILL) if name == "aider" else os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: (p := panes("real").get("a")) is not None and not p.dead and p.pid != pid,
        timeout=30,
        what="the agent respawned",
    )
    model.forgive_cut(before=time.time())  # the killed process's requests went with it
    wait_for(
        lambda: (
            state(home) == "ready" and (read_seen(home, "a") or None) is not None and read_seen(home, "a").pid != pid
        ),  # type: ignore[union-attr]
        timeout=STARTUP,
        what="the new process ready",
    )
    tag = uuid.uuid4().hex[:8]
    sent(home, f"after the restart {tag}")
    wait_for(lambda: any(tag in r.prompt for r in model.prompts()), timeout=60, what="the next prompt")
    wait_for(lambda: state(home) == "ready", timeout=30, what="ready")
    assert len([r for r in model.prompts() if tag in r.prompt]) == 1
    assert Home(home).root == home


@pytest.mark.parametrize("name", CLIS)
def test_a_layout_rule_answers_a_matching_question_without_a_person(
    name: str, cli: Cli, home: Path, tmp_path: Path, model: FakeModel
) -> None:
    s = setup(name, tmp_path, model.url)
    lay = write_layout(
        tmp_path / "auto.yaml",
        [s.agent("a")],
        session="real",
        approvals={"auto": [{"match": "miyabi-tool-1", "answer": "approve"}]},
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    wait_for(lambda: state(home) == "ready", timeout=STARTUP, what=f"{name} ready")
    sent(home, "first [[tool]] please")
    wait_for(lambda: (s.work / "miyabi-tool-1").exists(), timeout=60, what="the auto-approved command's file")
    (answer,) = wait_for(lambda: [e for e in events(home) if e.get("event") == "approval"], what="the approval event")
    assert answer["answer"] == "approve" and answer["by"] == "miyabi (approvals.auto[0])"
    sent(home, "second [[tool]] please")  # miyabi-tool-2: no rule, a person must answer
    wait_for(lambda: state(home) == "waiting-approval", timeout=60, what="a question the rule does not answer")
    assert len([e for e in events(home) if e.get("event") == "approval"]) == 1


@pytest.mark.parametrize("name", ["claude", "codex", "aider"])
def test_a_cli_the_watchdog_restarts_resumes_its_conversation(
    name: str, cli: Cli, home: Path, tmp_path: Path, model: FakeModel, panes
) -> None:
    """Killed after a turn, the CLI is started again on its own conversation: the model
    gets the next prompt with the earlier turn in the same request, and the event log
    says the process resumed."""
    start(cli, tmp_path, model, name)
    wait_for(lambda: state(home) == "ready", timeout=STARTUP, what=f"{name} ready")
    first = f"remember the word {uuid.uuid4().hex[:8]}"
    sent(home, first)
    wait_for(lambda: any(first in r.prompt and r.ended for r in model.prompts()), timeout=60, what="the first turn")
    wait_for(lambda: state(home) == "ready", timeout=60, what="the first turn over")
    pid = panes("real")["a"].pid
    os.killpg(os.getpgid(pid), signal.SIGKILL) if name == "aider" else os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: (p := panes("real").get("a")) is not None and not p.dead and p.pid != pid,
        timeout=30,
        what="the agent respawned",
    )
    model.forgive_cut(before=time.time())  # the killed process's requests (a title, say) went with it
    wait_for(
        lambda: (seen := read_seen(home, "a")) is not None and seen.pid != pid and seen.state == "ready",
        timeout=STARTUP,
        what="the new process ready",
    )
    resumed = [e for e in events(home) if e.get("event") == "resumed"]
    assert len(resumed) == 1 and (name == "aider" or resumed[0]["session"]), resumed
    tag = uuid.uuid4().hex[:8]
    sent(home, f"after the restart {tag}")
    got = wait_for(lambda: [r for r in model.prompts() if tag in r.prompt], timeout=60, what="the next prompt")
    assert first in got[0].history, got[0].history[-500:]


def test_a_cli_at_its_usage_limit_is_parked_left_alone_and_its_task_finishes_elsewhere(
    cli: Cli, home: Path, tmp_path: Path, model: FakeModel
) -> None:
    """Codex answered HTTP 429 is parked: no message is typed into it and the watchdog
    leaves it alone well past its silence timeout; after ``park.handoff_after`` its task
    goes to Claude Code, whose first message says where the work is, and Claude Code
    finishes it (``miyabi task done``, through a Bash call a layout rule approves)."""
    codex, claude = setup("codex", tmp_path, model.url), setup("claude", tmp_path, model.url)
    a = {**codex.agent("a"), "park": {"handoff_after": "12s", "to": ["b"]}}
    lay = write_layout(
        tmp_path / "limit.yaml",
        [a, claude.agent("b")],
        session="real",
        watchdog={"silence_timeout": 3, "silence_grace": 2},
        approvals={"auto": [{"tool": "Bash", "answer": "approve"}]},
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    wait_for(
        lambda: all((s := read_seen(home, n)) is not None and s.state == "ready" for n in "ab"),
        timeout=STARTUP,
        what="both CLIs ready",
    )
    model.limit("responses")
    r = cli("task", "add", "finish the report [[tool miyabi task done 1 --note finished-by-b]]", "--label", "agent:a")
    assert r.exit_code == 0, r.output
    wait_for(lambda: state(home) == "parked", timeout=60, what="codex parked")
    parked_at = time.time()
    (park,) = [e for e in events(home) if e.get("event") == "agent-parked"]
    assert park["agent"] == "a" and park["reason"] == "limit" and "429" in str(park["detail"]), park
    status = json.loads(cli("status", "--json").output)
    row = next(x for x in status["agents"] if x["name"] == "a")
    assert row["state"] == "parked" and row["parked_reason"] == "limit" and row["parked_until"], row
    done = wait_for(
        lambda: [e for e in events(home) if e.get("event") == "task-done" or (e.get("event") == "task-handed-off")],
        timeout=60,
        what="the hand-off",
    )
    assert done[0]["event"] == "task-handed-off" and done[0]["to"] == "b", done
    assert time.time() - parked_at >= 5  # parked longer than silence_timeout + silence_grace
    shown = json.loads(wait_for(lambda: _done(cli), timeout=120, what="task 1 done"))
    assert shown["agent"] == "b" and shown["handoff"] == "b", shown
    history = " ".join(str(h.get("reason")) for h in shown["history"])
    assert "handed off to b" in history and "finished-by-b" in history, history
    first = next(r for r in model.prompts() if r.api == "messages" and "finish the report" in r.prompt)
    assert "comes to you from a (codex)" in first.prompt and str(codex.work) in first.prompt, first.prompt
    bad = [
        e for e in events(home) if e.get("agent") == "a" and e.get("event") in ("nudged", "hung-restart", "restarted")
    ]
    assert bad == []


def _done(cli: Cli) -> str | None:
    r = cli("task", "show", "1", "--json")
    return r.output if r.exit_code == 0 and json.loads(r.output).get("state") == "done" else None


@pytest.mark.parametrize("name", ["codex", "claude"])
def test_a_parked_cli_is_told_to_go_on_once_the_limit_has_passed(
    name: str, cli: Cli, home: Path, tmp_path: Path, model: FakeModel
) -> None:
    """No reset time shown: after ``park.probe_after`` the agent is told to go on, ahead
    of the message held meanwhile; refused again, it is parked again with a longer
    wait; once the limit has passed the go-on and the held message reach the model,
    the held one once."""
    s = setup(name, tmp_path, model.url)
    # Claude Code tries a refused request 10 times over minutes before its StopFailure hook; once here
    agent = {**s.agent("a"), "env": {**s.env, "CLAUDE_CODE_MAX_RETRIES": "1"}}
    lay = write_layout(tmp_path / "probe.yaml", [agent], session="real", park={"probe_after": "8s"})
    assert cli("up", str(lay), "-d").exit_code == 0
    wait_for(lambda: state(home) == "ready", timeout=STARTUP, what=f"{name} ready")
    api = "messages" if name == "claude" else "responses"
    model.limit(api, retry_after=1)  # Claude Code waits what retry-after says before its one retry
    sent(home, "first turn, refused")
    wait_for(lambda: state(home) == "parked", timeout=60, what=f"{name} parked")
    held = f"held while parked {uuid.uuid4().hex[:6]}"
    sent(home, held)
    go_on = "miyabi: a, your provider's usage limit stopped you"
    # Claude Code sends a refused turn again with the next one: the go-on is in the prompt, not at its start
    wait_for(lambda: any(go_on in r.prompt for r in model.prompts() if r.limited), timeout=90, what="the probe")
    model.unlimit(api)  # the probe met the limit: parked again; the next probe (or Codex's own retry) gets through
    wait_for(
        lambda: any(go_on in r.prompt and not r.limited and r.ended for r in model.prompts()),
        timeout=120,
        what="the go-on answered",
    )
    wait_for(lambda: any(held in r.prompt and not r.limited for r in model.prompts()), timeout=60, what="the held one")
    model.wait_answered(timeout=60)
    assert len([r for r in model.prompts() if held in r.prompt and not r.limited]) == 1
    order = [r.prompt for r in model.prompts()]
    assert order.index(next(p for p in order if go_on in p)) < order.index(next(p for p in order if held in p))
    parks = [e for e in events(home) if e.get("event") == "agent-parked"]
    assert [e["strikes"] for e in parks][:2] == [1, 2], parks
    assert {e["why"] for e in events(home) if e.get("event") == "agent-unparked"} <= {"went on", "answered"}


def test_a_cli_whose_budget_is_spent_is_parked_and_its_messages_wait_for_a_raise(
    cli: Cli, home: Path, tmp_path: Path, model: FakeModel
) -> None:
    """Codex with a budget of 1,000 tokens a day (one turn against the stand-in uses
    more): its first turn warns (80 %) and parks it (100 %, reason budget) until local
    midnight; a message sent meanwhile is held, never typed, until ``miyabi budget
    raise``, then reaches the model once."""
    s = setup("codex", tmp_path, model.url)
    lay = write_layout(tmp_path / "budget.yaml", [{**s.agent("a"), "budget": {"tokens": 1000}}], session="real")
    assert cli("up", str(lay), "-d").exit_code == 0
    wait_for(lambda: state(home) == "ready", timeout=STARTUP, what="codex ready")
    sent(home, "a first turn spends the budget")
    wait_for(lambda: state(home) == "parked", timeout=60, what="codex parked for its budget")
    (warning,) = [e for e in events(home) if e.get("event") == "budget-warning"]
    assert warning["scope"] == "a" and warning["unit"] == "tokens" and warning["limit"] == 1000, warning
    (park,) = [e for e in events(home) if e.get("event") == "agent-parked"]
    assert park["reason"] == "budget" and park["scope"] == "a" and park["probe_at"] is None, park
    row = wait_for(
        lambda: (
            r
            if (r := next(x for x in json.loads(cli("status", "--json").output)["agents"] if x["name"] == "a"))[
                "budget"
            ]
            and r["budget"]["share"] >= 1
            else None
        ),
        timeout=10,
        what="the budget in status",
    )
    assert row["state"] == "parked" and row["parked_reason"] == "budget" and row["parked_until"], row
    (listed,) = json.loads(cli("budget", "--json").output)
    assert listed["scope"] == "a" and listed["parked"] == ["a"] and listed["used_tokens"] >= 1000, listed
    held = f"held while over budget {uuid.uuid4().hex[:6]}"
    msg = sent(home, held)
    assert not any(held in r.prompt for r in model.prompts())
    r = cli("budget", "raise", "a", "--tokens", "10000000")
    assert r.exit_code == 0 and "raised budget of agent a" in r.output, r.output
    wait_for(lambda: any(held in r.prompt for r in model.prompts()), timeout=60, what="the held message")
    model.wait_answered(timeout=60)
    assert len([r for r in model.prompts() if held in r.prompt]) == 1
    typed = [e for e in events(home) if e.get("event") == "typing" and e.get("id") == msg]
    unparked = [e for e in events(home) if e.get("event") == "agent-unparked"]
    assert unparked and unparked[0]["why"] == "raised" and unparked[0]["reason"] == "budget", unparked
    assert typed and min(str(e["time"]) for e in typed) > str(unparked[0]["time"]), (typed, unparked)
