"""The worker's input handling, byte by byte, and its transcript."""

from __future__ import annotations

import json
from pathlib import Path

from miyabi.worker import Composer, Worker, ack_line


def submits(data: bytes, chunk: int | None = None) -> list[str]:
    c = Composer()
    out = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        out += [e.text for e in c.feed(piece) if e.kind == "submit"]
    return out


def test_typed_line_is_one_message() -> None:
    assert submits(b"hello world\r") == ["hello world"]


def test_bracketed_paste_with_newlines_is_one_message_until_enter() -> None:
    data = b"\x1b[200~line one\nline two\rline three\x1b[201~\r"
    assert submits(data) == ["line one\nline two\nline three"]


def test_split_at_every_byte_gives_the_same_result() -> None:
    data = "\x1b[200~ünï 日本 🎉\nsecond\x1b[201~\rnext\r".encode()
    assert submits(data, chunk=1) == ["ünï 日本 🎉\nsecond", "next"]


def test_control_keys() -> None:
    assert submits(b"abc\x7f\x7fX\r") == ["aX"]
    assert submits(b"junk\x15ok\r") == ["ok"]
    assert submits(b"drop\x03kept\r") == ["kept"]
    assert submits(b"a\x1b[Db\x1bOAc\r") == ["abc"]  # arrow keys ignored


def test_ctrl_d_on_empty_line_is_eof() -> None:
    c = Composer()
    assert [e.kind for e in c.feed(b"x\x04")] == ["echo"]
    assert [e.kind for e in c.feed(b"\x7f\x04")] == ["erase", "eof"]


def test_long_paste_is_echoed_as_a_summary() -> None:
    c = Composer()
    events = c.feed(b"\x1b[200~" + b"x\n" * 1000 + b"\x1b[201~")
    echoes = [e.text for e in events if e.kind == "echo"]
    assert echoes == ["[pasted 1001 lines, 2000 chars]"]


def test_worker_records_acks_and_thinks(tmp_path: Path) -> None:
    screen: list[str] = []
    slept: list[float] = []
    t = tmp_path / "t.jsonl"
    w = Worker("kaede", t, think=2.5, out=screen.append, sleep=slept.append)
    w.start()
    assert w.handle(b"first\r")
    assert w.handle(b"\x1b[200~a\nb\x1b[201~\r")
    assert not w.handle(b"/quit\r")
    recs = [json.loads(x) for x in t.read_text().splitlines()]
    assert [r["text"] for r in recs] == ["first", "a\nb"]
    assert all(r["agent"] == "kaede" and r["time"].endswith("Z") for r in recs)
    text = "".join(screen)
    assert "ack first" in text and "ack a⏎b" in text
    assert slept == [2.5, 2.5]
    assert "\x1b[?2004h" in text  # bracketed paste on


def test_ack_line_is_one_line_of_60_chars() -> None:
    assert ack_line("x" * 100) == "ack " + "x" * 60
    assert "\n" not in ack_line("a\nb")


def test_backspace_after_a_paste_removes_one_character() -> None:
    assert submits(b"\x1b[200~hello\x1b[201~\x7f\r") == ["hell"]
