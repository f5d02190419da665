"""Usage as each CLI reports it: Claude Code's transcript, Codex's session file,
aider's Tokens line (shapes measured on the pinned versions)."""

from __future__ import annotations

import json

from miyabi.agents.usage import Usage, aider_line, claude_transcript, codex_rollout


def test_claude_transcript_counts_each_message_once_cache_included() -> None:
    def line(mid: str, inp: int, out: int, cache: int = 0) -> str:
        return json.dumps({"type": "assistant", "message": {"id": mid, "usage": {
            "input_tokens": inp, "cache_read_input_tokens": cache, "cache_creation_input_tokens": 0, "output_tokens": out}}})

    lines = [json.dumps({"type": "user", "message": {"content": "hi"}}), line("m1", 100, 5), line("m1", 100, 5),
             line("m2", 10, 7, cache=90), "not json"]
    seen: set[str] = set()
    assert claude_transcript(lines[:3], seen) == Usage(100, 5, None)
    assert claude_transcript(lines[3:], seen) == Usage(100, 7, None)  # read on: m1 not counted again


def test_codex_session_file_gives_the_running_total() -> None:
    def tc(inp: int, out: int) -> str:
        return json.dumps({"type": "event_msg", "payload": {"type": "token_count", "info": {
            "total_token_usage": {"input_tokens": inp, "output_tokens": out}}}})

    assert codex_rollout([tc(10, 1), json.dumps({"type": "event_msg", "payload": {"type": "token_count", "info": None}}),
                          tc(25, 3)]) == Usage(25, 3, None)
    assert codex_rollout(['{"type": "turn_context"}']) is None


def test_aider_tokens_line() -> None:
    assert aider_line(["> hi", "Tokens: 596 sent, 6 received.", "> "]) == (596, 6, None)
    assert aider_line(["Tokens: 2.3k sent, 1.2k cache hit, 16 received. Cost: $0.01 message, $0.02 session."]) == (
        2300, 16, 0.02)
    assert aider_line(["Tokens: 1.5m sent, 12k received. Cost: $1.20 message, $3.45 session."]) == (1_500_000, 12_000, 3.45)
    assert aider_line(["nothing here"]) is None
