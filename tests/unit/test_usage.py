"""Usage as each CLI reports it: Claude Code's transcript, Codex's session file,
aider's Tokens line (shapes measured on the pinned versions)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import brought_up

from miyabi.agents.usage import Usage, aider_line, claude_transcript, codex_rollout


def test_claude_transcript_counts_each_message_once_cache_included() -> None:
    def line(mid: str, inp: int, out: int, cache: int = 0) -> str:
        return json.dumps(
            {
                "type": "assistant",
                "message": {
                    "id": mid,
                    "usage": {
                        "input_tokens": inp,
                        "cache_read_input_tokens": cache,
                        "cache_creation_input_tokens": 0,
                        "output_tokens": out,
                    },
                },
            }
        )

    lines = [
        json.dumps({"type": "user", "message": {"content": "hi"}}),
        line("m1", 100, 5),
        line("m1", 100, 5),
        line("m2", 10, 7, cache=90),
        "not json",
    ]
    seen: set[str] = set()
    assert claude_transcript(lines[:3], seen) == Usage(100, 5, None)
    assert claude_transcript(lines[3:], seen) == Usage(100, 7, None)  # read on: m1 not counted again


def test_codex_session_file_gives_the_running_total() -> None:
    def tc(inp: int, out: int) -> str:
        return json.dumps(
            {
                "type": "event_msg",
                "payload": {
                    "type": "token_count",
                    "info": {"total_token_usage": {"input_tokens": inp, "output_tokens": out}},
                },
            }
        )

    assert codex_rollout(
        [tc(10, 1), json.dumps({"type": "event_msg", "payload": {"type": "token_count", "info": None}}), tc(25, 3)]
    ) == Usage(25, 3, None)
    assert codex_rollout(['{"type": "turn_context"}']) is None


def test_aider_tokens_line() -> None:
    assert aider_line(["> hi", "Tokens: 596 sent, 6 received.", "> "]) == (596, 6, None)
    assert aider_line(["Tokens: 2.3k sent, 1.2k cache hit, 16 received. Cost: $0.01 message, $0.02 session."]) == (
        2300,
        16,
        0.02,
    )
    assert aider_line(["Tokens: 1.5m sent, 12k received. Cost: $1.20 message, $3.45 session."]) == (
        1_500_000,
        12_000,
        3.45,
    )
    assert aider_line(["nothing here"]) is None


def test_a_tasks_usage_sums_the_turns_that_name_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from miyabi.agents.usage import task_usage
    from miyabi.cli import app
    from miyabi.events import EventKind, append_event

    events = [
        {"event": "usage", "task": "1", "turn_input_tokens": 100, "turn_output_tokens": 5},
        {"event": "usage", "task": "2", "turn_input_tokens": 7, "turn_output_tokens": 7},
        {"event": "usage", "task": "1", "turn_input_tokens": 20, "turn_output_tokens": 1},
        {"event": "state", "task": "1"},
    ]
    assert task_usage(events, "1") == Usage(120, 6, None)
    assert task_usage(events, "3") is None
    runner = CliRunner()
    brought_up(tmp_path)
    r = runner.invoke(app, ["task", "add", "write the docs", "--home", str(tmp_path)])
    assert r.exit_code == 0, r.output
    for e in events[:3]:
        append_event(tmp_path, EventKind.USAGE, agent="a", pid=1, **{k: v for k, v in e.items() if k != "event"})
    r = runner.invoke(app, ["task", "show", "1", "--json", "--home", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["usage"] == {"input_tokens": 120, "output_tokens": 6}
    r = runner.invoke(app, ["task", "show", "1", "--home", str(tmp_path)])
    assert "usage: 120 tokens in, 6 out" in r.output
