"""Hooks: installing them on an agent's command line, ``miyabi hook`` recording an
event (a real process, as a CLI runs it), and folding the hook log into a state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from miyabi.agents.hooks import Activity, hook_options, interpret, unwrap_paste, with_options
from miyabi.agents.profiles import BUILTIN
from miyabi.messaging.activity import ActivityTracker, same_text
from miyabi.tmux.builder import hook_command

OPTS = ["--settings", "/h/run/hooks/a/claude-settings.json"]


@pytest.mark.parametrize(
    ("command", "want"),
    [
        ("claude", "claude --settings /h/run/hooks/a/claude-settings.json"),
        ("claude --model opus", "claude --settings /h/run/hooks/a/claude-settings.json --model opus"),
        (
            "/opt/bin/claude --model 'opus 4'",
            "/opt/bin/claude --settings /h/run/hooks/a/claude-settings.json --model 'opus 4'",
        ),
        ("cd ~/src && claude -c", "cd ~/src && claude --settings /h/run/hooks/a/claude-settings.json -c"),
        ("npx @anthropic-ai/claude-code", None),
        ("my-claude-wrapper --x", None),
    ],
)
def test_hook_options_go_right_after_the_programs_word(command: str, want: str | None) -> None:
    assert with_options(command, "claude", OPTS) == want


def test_each_adapter_installs_through_the_command_line_only(tmp_path: Path) -> None:
    hook = ["/venv/bin/miyabi", "hook"]
    opts = hook_options(BUILTIN["claude"], "a", tmp_path, hook)
    settings = json.loads(Path(opts[1]).read_text())
    assert opts[0] == "--settings" and Path(opts[1]).parent == tmp_path / "hooks" / "a"
    assert settings["hooks"]["UserPromptSubmit"][0]["hooks"][0]["command"] == "/venv/bin/miyabi hook UserPromptSubmit"
    assert set(settings) == {"hooks"}  # nothing else of the user's configuration is overridden
    codex = hook_options(BUILTIN["codex"], "a", tmp_path, hook)
    assert codex[:2] == ["-c", 'notify=["/venv/bin/miyabi", "hook", "notify"]']
    assert hook_options(BUILTIN["aider"], "a", tmp_path, hook) == [
        "--notifications",
        "--notifications-command",
        "/venv/bin/miyabi hook ready",
    ]
    assert hook_options(BUILTIN["worker"], "a", tmp_path, hook) == []


def test_what_each_event_says() -> None:
    assert interpret({"event": "SessionStart"}).activity is Activity.READY
    assert interpret({"event": "Stop"}).activity is Activity.READY
    r = interpret(
        {
            "event": "UserPromptSubmit",
            "prompt": '\n\n<pasted_content id="ab1">\nhi\n  there\n</pasted_content id="ab1">\n',
        }
    )
    assert r.activity is Activity.BUSY and r.prompt == "hi\n  there"
    q = interpret({"event": "PermissionRequest", "tool": "Bash", "input": "touch x"})
    assert q.activity is Activity.WAITING_APPROVAL and q.question == "Bash: touch x"
    assert interpret({"event": "Notification", "kind": "idle_prompt"}).activity is Activity.READY
    assert interpret({"event": "Notification", "kind": "auth_success"}).activity is None
    assert interpret({"event": "notify", "kind": "agent-turn-complete"}).activity is Activity.READY
    assert unwrap_paste("plain") == "plain"
    assert same_text("a\tb  c\n", "a    b c") and not same_text("a b", "a c")


def run_hook(
    home: Path, event: str, stdin: bytes | None, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[bytes]:
    """Run the hook as miyabi installs it (``python -I -S …/cli/hook.py EVENT``)."""
    e = {**os.environ, "MIYABI_HOME": str(home), "MIYABI_AGENT": "a", **(env or {})}
    return subprocess.run(
        [*hook_command(), event, *args], input=stdin, env=e, capture_output=True, timeout=30, check=False
    )


def test_miyabi_hook_records_the_event_prints_nothing_and_exits_0(tmp_path: Path) -> None:
    payload = {
        "hook_event_name": "UserPromptSubmit",
        "session_id": "s1",
        "prompt": "héllo\nthere",
        "transcript_path": "/t.jsonl",
        "cwd": "/w",
    }
    r = run_hook(tmp_path, "UserPromptSubmit", json.dumps(payload).encode())
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    r = run_hook(
        tmp_path,
        "notify",
        None,
        args=(json.dumps({"type": "agent-turn-complete", "thread-id": "t", "input-messages": ["hi"]}),),
    )
    assert (r.returncode, r.stdout) == (0, b"")
    log = tmp_path / "run" / "hooks" / "a.jsonl"
    first, second = (json.loads(x) for x in log.read_text().splitlines())
    assert (
        first["event"] == "UserPromptSubmit" and first["prompt"] == "héllo\nthere" and first["transcript"] == "/t.jsonl"
    )
    assert second == {**second, "event": "notify", "kind": "agent-turn-complete", "prompt": "hi", "session": "t"}
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    # the same through the command line
    e = {**os.environ, "MIYABI_HOME": str(tmp_path), "MIYABI_AGENT": "a"}
    r = subprocess.run(
        [sys.executable, "-m", "miyabi", "hook", "Stop"],
        input=b'{"session_id": "s2"}',
        env=e,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert (r.returncode, r.stdout) == (0, b"") and json.loads(log.read_text().splitlines()[-1])["session"] == "s2"


def test_miyabi_hook_never_fails_or_blocks_the_agent(tmp_path: Path) -> None:
    assert run_hook(tmp_path, "Stop", b"not json{").returncode == 0
    blocked = tmp_path / "file"
    blocked.write_text("")  # a home where run/ cannot be made
    r = run_hook(blocked, "Stop", b"{}")
    assert r.returncode == 0 and r.stdout == b"" and b"miyabi hook:" in r.stderr
    assert run_hook(tmp_path, "Stop", b"{}", env={"MIYABI_AGENT": ""}).returncode == 0
    # stdin left open with nothing on it (a CLI that never closes it): gives up after 0.5 s
    e = {**os.environ, "MIYABI_HOME": str(tmp_path), "MIYABI_AGENT": "a"}
    p = subprocess.Popen([*hook_command(), "ready"], stdin=subprocess.PIPE, env=e)
    try:
        assert p.wait(timeout=30) == 0
    finally:
        p.stdin.close()  # type: ignore[union-attr]


def test_the_tracker_folds_this_processes_events(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    t = ActivityTracker(log)
    t.follow(os.getpid())
    now = time.time()

    def add(**rec: object) -> None:
        with log.open("a") as f:
            f.write(json.dumps({"t": now, **rec}) + "\n")

    add(event="Stop", t=now - 10**6)  # before this process started: ignored
    t.refresh()
    assert t.state is None
    add(event="SessionStart")
    add(event="UserPromptSubmit", prompt="do it")
    t.refresh()
    assert t.state is Activity.BUSY and t.receipt("do it", now - 1) and not t.receipt("other", now - 1)
    add(event="PermissionRequest", tool="Bash", input="ls")
    t.refresh()
    assert t.hook_state() is Activity.WAITING_APPROVAL and t.question == "Bash: ls"
    add(event="answered", answer="approve")
    t.refresh()
    assert t.state is None and t.question is None
    t.submitted("task two", now + 0.5)
    add(event="notify", kind="agent-turn-complete", prompt="Generate a concise title", t=now + 1)
    t.refresh()
    assert t.state is Activity.BUSY  # a side thread's turn ended, not the agent's
    add(event="notify", kind="agent-turn-complete", prompt="task two", t=now + 2)
    t.refresh()
    assert t.state is Activity.READY and t.turn_ended(now + 0.5)
