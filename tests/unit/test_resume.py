"""Resuming an agent's conversation: the rule (pure), the words each CLI takes, the
launch line, the layout's `resume: never`, and the id read from the hook log."""

from __future__ import annotations

from pathlib import Path

from helpers import write_layout

from miyabi.agents.profiles import BUILTIN, resume_words
from miyabi.config import load
from miyabi.config.model import Agent
from miyabi.events import read_events
from miyabi.home import Home
from miyabi.messaging.activity import ActivityTracker, hook_log
from miyabi.supervision.policy import resumes
from miyabi.supervision.resume import Resumption
from miyabi.tmux.builder import launch_line


def test_two_resumed_processes_in_a_row_that_die_young_make_the_next_start_fresh() -> None:
    assert resumes(resumed_last=False, died_young=True, young_resumes=0) == (True, 0)
    assert resumes(True, True, 0) == (True, 1)  # one resumed process died young: try once more
    assert resumes(True, True, 1) == (False, 0)  # the second in a row: fresh
    assert resumes(True, False, 1) == (True, 0)  # it lived: the count starts over
    assert resumes(False, True, 1) == (True, 0)  # a fresh one that died young does not count


def test_each_cli_gets_its_own_resume_options_and_none_without_an_id_it_needs() -> None:
    assert resume_words(BUILTIN["claude"], "abc") == ["--resume", "abc"]
    assert resume_words(BUILTIN["codex"], "019a") == ["resume", "019a"]
    assert resume_words(BUILTIN["aider"], "") == ["--restore-chat-history"]
    assert resume_words(BUILTIN["claude"], "") == []  # no id reported: a fresh start
    assert resume_words(BUILTIN["gemini"], "x") == [] and resume_words(BUILTIN["shell"], "x") == []


def test_the_resume_options_go_right_after_the_program_before_the_hooks(tmp_path: Path) -> None:
    agent = Agent(name="a", profile=BUILTIN["codex"], command="codex --no-daemon")
    fresh = launch_line(agent, Home(tmp_path))
    line = launch_line(agent, Home(tmp_path), "0199-id")
    assert line.startswith("codex resume 0199-id -c ") and line.endswith(" --no-daemon")
    assert fresh.startswith("codex -c ") and " resume " not in fresh
    wrapped = Agent(name="a", profile=BUILTIN["claude"], command="npx claude-wrapper")
    assert launch_line(wrapped, Home(tmp_path), "abc") == "npx claude-wrapper"  # not its program: as written


def test_a_layout_turns_resume_off_per_agent(tmp_path: Path) -> None:
    lay = load(
        write_layout(
            tmp_path / "r.yaml", [("a", "claude", None), {"name": "b", "profile": "claude", "resume": "never"}]
        )
    )
    assert [a.profile.resume for a in lay.agents] == ["--resume {session}", None]


def test_the_conversation_id_is_the_main_threads_and_outlives_the_process(tmp_path: Path) -> None:
    """Claude Code's hooks all carry its session id; Codex notifies for its title-writing
    side thread too, whose thread is not the conversation: the one whose turn ended
    for the text miyabi submitted is. A new process keeps the id until it reports one."""
    log = hook_log(tmp_path, "a")
    log.parent.mkdir(parents=True)
    t = ActivityTracker(log)
    t.expecting("do the thing")
    recs = [
        {"t": 1.0, "event": "notify", "kind": "agent-turn-complete", "prompt": "Generate a title", "session": "side"},
        {"t": 2.0, "event": "notify", "kind": "agent-turn-complete", "prompt": "do the thing", "session": "main"},
        {"t": 3.0, "event": "notify", "kind": "agent-turn-complete", "prompt": "Generate a title", "session": "side2"},
    ]
    for r in recs:
        t.feed(r)
    assert t.session == "main"
    t.feed({"t": 4.0, "event": "SessionStart", "session": "claude-1"})
    assert t.session == "claude-1"


def test_the_event_log_says_whether_a_start_resumed_or_started_fresh(tmp_path: Path) -> None:
    sessions = {"a": "s1"}
    r = Resumption(tmp_path, sessions.get)
    claude = Agent(name="a", profile=BUILTIN["claude"], command="claude")
    assert r.next_start(claude, died_young=True) == "s1"
    assert r.next_start(claude, died_young=True) == "s1"
    assert r.next_start(claude, died_young=True) is None  # two resumed in a row died young
    assert r.next_start(claude, died_young=True) == "s1"
    nobody = Agent(name="b", profile=BUILTIN["claude"], command="claude")
    assert r.next_start(nobody, died_young=False) is None  # no id reported yet
    kinds = [(e["event"], e["agent"], e.get("session") or e.get("reason", "")[:9]) for e in read_events(tmp_path)]
    assert kinds == [
        ("resumed", "a", "s1"),
        ("resumed", "a", "s1"),
        ("started-fresh", "a", "two resum"),
        ("resumed", "a", "s1"),
        ("started-fresh", "b", "no conver"),
    ]


def test_up_resumes_a_respawned_pane_and_only_a_continuing_instance_in_a_new_one(tmp_path: Path) -> None:
    sessions = {"a": "s1", "coder-7": "c7", "coder-9-2": "own"}
    r = Resumption(tmp_path, sessions.get)
    a = Agent(name="a", profile=BUILTIN["claude"], command="claude")
    assert r.on_start(a, respawn=True) == "s1"  # `miyabi up` respawns its dead pane
    assert r.on_start(a, respawn=False) is None  # a named agent's new pane starts fresh, unlogged
    follow = Agent(name="coder-7-2", profile=BUILTIN["claude"], command="claude", pool="coder", continues="coder-7")
    assert r.on_start(follow, respawn=False) == "c7"  # the earlier instance's conversation
    own = Agent(name="coder-9-2", profile=BUILTIN["claude"], command="claude", pool="coder", continues="coder-9")
    assert r.on_start(own, respawn=False) == "own"  # its pane was closed: its own conversation
    lost = Agent(name="coder-8-2", profile=BUILTIN["claude"], command="claude", pool="coder", continues="coder-8")
    assert r.on_start(lost, respawn=False) is None  # the earlier one reported no id
    aider = Agent(name="coder-8-3", profile=BUILTIN["aider"], command="aider", pool="coder", continues="coder-8")
    assert r.on_start(aider, respawn=False) == ""  # its history file in the same worktree: no id needed
    got = [(e["event"], e["agent"], e.get("session"), e.get("continues")) for e in read_events(tmp_path)]
    assert got == [
        ("resumed", "a", "s1", None),
        ("resumed", "coder-7-2", "c7", "coder-7"),
        ("resumed", "coder-9-2", "own", "coder-9"),
        ("started-fresh", "coder-8-2", None, None),
        ("resumed", "coder-8-3", None, "coder-8"),
    ]
    # a continuing instance's resumed process that dies young twice makes the next start fresh
    assert r.next_start(follow, died_young=True) == "c7"
    assert r.next_start(follow, died_young=True) is None


def test_gemini_and_opencode_resume_when_a_layout_says_how(tmp_path: Path) -> None:
    """Neither ships `resume` (no id is ever reported to miyabi), but a layout's resume
    options go after their program's word like the others'."""
    lay = load(
        write_layout(
            tmp_path / "g.yaml",
            [
                {"name": "g", "profile": "gemini", "resume": "--resume latest"},
                {"name": "o", "profile": "opencode", "resume": "--continue"},
            ],
        )
    )
    g, o = lay.agents
    assert BUILTIN["gemini"].resume is None and BUILTIN["opencode"].resume is None
    assert launch_line(g, Home(tmp_path), "") == "gemini --resume latest"
    assert launch_line(o, Home(tmp_path), "") == "opencode --continue"
    assert launch_line(g, Home(tmp_path)) == "gemini"
