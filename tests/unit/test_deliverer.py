"""The deliverer's crash windows, driven exactly with a scripted tmux channel (the
integration tests cover the same code against real tmux)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from miyabi.agents.profiles import BUILTIN
from miyabi.config.model import Agent
from miyabi.errors import TmuxError
from miyabi.messaging.delivery import Deliverer
from miyabi.messaging.journal import Marker, Stage
from miyabi.messaging.mailbox import Inbox, make
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import Pane

PANE = Pane("%1", "a", "s", "@1", 0, "w", 0, 4242, False, None, None, None, "cat", 80, 24, False, True, True, "a")


class FakeTmux:
    """Answers display-message with a live pane, capture-pane with ``screen``; records
    keystrokes; can fail the next send-keys -l once."""

    def __init__(self) -> None:
        self.screen: list[str] = []
        self.typed: list[str] = []
        self.enters = 0
        self.fail_next_type = False

    def run(self, *args: str, check: bool = True) -> list[str]:
        if args[0] == "display-message" and "cursor_x" in args[-1]:
            last = len(self.screen) - 1
            return [f"{len(self.screen[last]) if last >= 0 else 0} {max(last, 0)}"]
        if args[0] == "display-message":
            return [f"0 {PANE.pid} 0"]
        if args[0] == "capture-pane":
            return list(self.screen)
        if args[0] == "send-keys" and "-l" in args:
            text = args[-1]
            self.typed.append(text)
            self.screen.append(text)  # the terminal echoes it
            if self.fail_next_type:
                self.fail_next_type = False
                raise TmuxError("send-keys", "no answer within 10 s")
            return []
        if args[0] == "send-keys":
            self.enters += 1
            return []
        return []


def deliverer(tmp_path: Path, tmux: FakeTmux) -> tuple[Deliverer, Inbox]:
    agent = Agent(name="a", profile=BUILTIN["shell"], command="cat")
    box = Inbox(tmp_path / "queue" / "a")
    d = Deliverer(agent, box, PaneDriver(tmux), tmp_path, pane=lambda: PANE, sleep=lambda s: None)
    return d, box


def test_a_tmux_error_while_typing_never_leads_to_typing_twice(tmp_path: Path) -> None:
    tmux = FakeTmux()
    tmux.fail_next_type = True  # the text reached the pane, the answer did not
    d, box = deliverer(tmp_path, tmux)
    msg = make("a", "hello once")
    box.put(msg)
    d.step()
    assert d.journal.load() is not None and d.journal.load().stage == "typing"  # kept, not cleared
    d.step()  # resume: sees the text on screen, presses Enter
    assert tmux.typed == ["hello once"] and tmux.enters == 1
    assert box.find(msg.id)[0] == "delivered"


def test_resume_at_typing_without_the_text_on_screen_types_it_then(tmp_path: Path) -> None:
    tmux = FakeTmux()
    tmux.screen = ["unrelated output that appeared meanwhile"]
    d, box = deliverer(tmp_path, tmux)
    msg = make("a", "never typed")
    box.put(msg)
    d.journal.save(Marker(msg.id, msg.filename, Stage.TYPING, PANE.pane_id, PANE.pid, 0, 1))
    d.journal.known = None
    d.step()  # resume: not on screen → not delivered, journal cleared
    assert box.find(msg.id)[0] == "pending" and tmux.enters == 0
    d.step()  # now typed, once
    assert tmux.typed == ["never typed"] and box.find(msg.id)[0] == "delivered"


def test_an_unreadable_inbox_file_becomes_a_dead_letter_and_delivery_goes_on(tmp_path: Path) -> None:
    tmux = FakeTmux()
    d, box = deliverer(tmp_path, tmux)
    box.ensure()
    bad = "h-00000000-0000-7000-8000-000000000000.json"  # sorts first
    (box.dir("pending") / bad).write_text('{"id": "trunc')
    msg = make("a", "after the bad one")
    box.put(msg)
    while d.step():
        pass
    assert tmux.typed == ["after the bad one"]
    assert bad in [p.name for p in box.dir("failed").iterdir()]
    events = [json.loads(x) for x in (tmp_path / "logs" / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "dead-letter" and e.get("file") == bad for e in events)


def test_a_dead_pane_gets_no_keystrokes(tmp_path: Path) -> None:
    class Dead(FakeTmux):
        def run(self, *args: str, check: bool = True) -> list[str]:
            if args[0] == "display-message":
                return [f"1 {PANE.pid} 0"]
            return super().run(*args, check=check)

    tmux = Dead()
    d, box = deliverer(tmp_path, tmux)
    box.put(make("a", "wait for me"))
    assert d.step() is False
    assert tmux.typed == [] and len(box.pending()) == 1
    assert replace(PANE, dead=True).dead
