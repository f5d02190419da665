"""Inboxes as Maildirs, message checks, and what may reach a pane (no tmux needed)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from miyabi.agents.profiles import BUILTIN
from miyabi.agents.screen import Screen, composer_text, is_busy, looks_ready
from miyabi.messaging.delivery import prepare
from miyabi.messaging.mailbox import Inbox, MessageError, decode_body, make, sanitize
from miyabi.tmux.control import quote


def test_put_uses_tmp_then_new_with_private_modes(tmp_path: Path) -> None:
    box = Inbox(tmp_path / "kaede")
    path = box.put(make("kaede", "hi"))
    assert path.parent.name == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for d in ("tmp", "new", "cur", "failed"):
        assert stat.S_IMODE((box.root / d).stat().st_mode) == 0o700
    assert os.listdir(box.root / "tmp") == []


def test_delivery_order_is_high_priority_then_enqueue_order(tmp_path: Path) -> None:
    box = Inbox(tmp_path / "kaede")
    ids = [box.put(make("kaede", f"n{i}")).name for i in range(50)]
    high = box.put(make("kaede", "h", priority="high")).name
    assert box.pending() == [high, *ids]


def test_move_leaves_exactly_one_copy_and_records_fields(tmp_path: Path) -> None:
    box = Inbox(tmp_path / "kaede")
    msg = make("kaede", "x")
    box.put(msg)
    box.move(msg, "pending", "delivered", delivered="now")
    assert box.pending() == []
    assert os.listdir(box.dir("delivered")) == [msg.filename]
    assert os.listdir(box.root / "tmp") == []
    state, got = box.find(msg.id[:12]) or ("", None)
    assert state == "delivered" and got is not None and got.extra["delivered"] == "now"
    box.move(got, "delivered", "pending")  # and back (a retry)
    assert box.pending() == [msg.filename] and os.listdir(box.dir("delivered")) == []


def test_an_update_does_not_resurrect_a_dropped_message(tmp_path: Path) -> None:
    box = Inbox(tmp_path / "kaede")
    msg = make("kaede", "x")
    box.put(msg)
    os.unlink(box.dir("pending") / msg.filename)  # `miyabi drop`
    box.move(msg, "pending", "pending", attempts=2)
    assert box.pending() == []


def test_a_corrupt_file_is_reported_and_can_be_quarantined(tmp_path: Path) -> None:
    from miyabi.messaging.mailbox import CorruptMessage

    box = Inbox(tmp_path / "kaede")
    box.ensure()
    bad = "n-01a20000-0000-7000-8000-000000000000.json"
    (box.dir("pending") / bad).write_text('{"id": "trunc')
    with pytest.raises(CorruptMessage, match="not a readable message"):
        box.read(bad)
    assert box.list() == []  # listing skips it
    box.quarantine(bad, "unreadable")
    assert box.pending() == [] and bad in os.listdir(box.dir("failed"))


def test_update_in_place_keeps_the_message(tmp_path: Path) -> None:
    box = Inbox(tmp_path / "kaede")
    msg = make("kaede", "x")
    box.put(msg)
    box.move(msg, "pending", "pending", attempts=2)
    (name,) = box.pending()
    got = box.read(name)
    assert got is not None and got.extra["attempts"] == 2


def test_message_checks() -> None:
    with pytest.raises(MessageError, match="over the limit of 10"):
        make("k", "x" * 11, max_body=10)
    with pytest.raises(MessageError, match="priority"):
        make("k", "x", priority="urgent")
    with pytest.raises(MessageError, match="not valid UTF-8"):
        decode_body(b"\xff")
    m = make("k", "x", ttl=5)
    assert not m.expired(0) and m.expired(4e9)


def test_sanitize_strips_c0_del_and_esc_but_keeps_newline_and_tab() -> None:
    assert sanitize("a\x03b\rc\x1b[201~d\x7fe\tf\ng") == "abc[201~de\tf\ng"
    assert sanitize("x\u009b31my") == "x31my"  # C1 CSI too
    assert prepare("text\n\n") == "text"


def test_quote_for_control_mode() -> None:
    assert quote('a"b') == '"a\\"b"'
    assert quote("$HOME") == '"\\$HOME"'
    assert quote("x\ny\tz\\") == '"x\\ny\\tz\\\\"'
    assert quote("~ # ;") == '"~ # ;"'


def test_screen_reading_for_the_worker() -> None:
    w = BUILTIN["worker"]
    idle = ["miyabi worker 'k' ready", "worker> hi", "ack hi", "worker>"]
    typed = ["worker> hi", "ack hi", "worker> next message"]
    busy = ["worker> hi", "ack hi", "⠿ thinking… (esc to interrupt)"]
    assert looks_ready(w, Screen.of(idle)) and composer_text(w, Screen.of(idle)) == ""
    assert not looks_ready(w, Screen.of(typed)) and composer_text(w, Screen.of(typed)) == "next message"
    assert not looks_ready(w, Screen.of(busy)) and is_busy(w, Screen.of(busy))


def test_shell_profile_is_always_ready() -> None:
    s = BUILTIN["shell"]
    assert looks_ready(s, Screen.of([])) and composer_text(s, Screen.of(["$ x"])) is None


def test_a_retried_dead_letter_gets_its_whole_ttl_again(tmp_path: Path) -> None:
    import time
    from dataclasses import replace

    from miyabi.messaging.mailbox import MessageState, retry
    from miyabi.times import rfc3339

    box = Inbox(tmp_path / "queue" / "a")
    old = replace(make("a", "late", ttl=5), created=rfc3339(time.time() - 60))
    box.put(old)
    box.move(old, MessageState.PENDING, MessageState.FAILED, reason="its ttl of 5 s ran out")
    assert old.expired(time.time())
    _, again = retry(tmp_path, old.id[:12])
    assert box.find(old.id)[0] == MessageState.PENDING
    now = time.time()
    assert not again.expired(now) and again.expired(now + 6)
    assert "reason" not in again.extra and again.extra["retried"]
    stored = box.read(again.filename)
    assert stored is not None and not stored.expired(now)


def test_an_id_prefix_must_be_unique_even_within_one_inbox(tmp_path: Path) -> None:
    from miyabi.messaging.mailbox import drop, find_message

    box = Inbox(tmp_path / "queue" / "a")
    first, second = make("a", "one"), make("a", "two")
    box.put(first)
    box.put(second)
    shared = next(i for i in range(len(first.id), 0, -1) if second.id.startswith(first.id[:i]))
    with pytest.raises(MessageError, match="matches more than one message"):
        drop(tmp_path, first.id[:shared])
    assert len(box.pending()) == 2  # nothing dropped on a guess
    assert find_message(tmp_path, first.id[: shared + 1])[2].id == first.id
    assert drop(tmp_path, second.id)[1].id == second.id


def test_files_miyabi_writes_never_change_a_directory_it_does_not_own(tmp_path: Path) -> None:
    from miyabi.files import append_line, write_atomic

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    theirs.chmod(0o755)  # a user's directory, such as where a --transcript file goes
    append_line(theirs / "t.jsonl", "{}")
    write_atomic(theirs / "w.json", "{}")
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o755
    assert stat.S_IMODE((theirs / "t.jsonl").stat().st_mode) == 0o600
    append_line(tmp_path / "new" / "t.jsonl", "{}")  # a missing directory is made, private
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    with pytest.raises(FileNotFoundError):  # but not its parents: a removed home stays removed
        append_line(tmp_path / "gone" / "logs" / "events.jsonl", "{}")
    assert not (tmp_path / "gone").exists()
