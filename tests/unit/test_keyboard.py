"""Where a person types: the hold rule (pure) and the fold of looks at the clients."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_layout

from miyabi.config import load
from miyabi.errors import LayoutError
from miyabi.messaging.keyboard import Keyboard, holds
from miyabi.tmux.clients import Client


def client(name: str, activity: int, pane: str, types: bool = True) -> Client:
    return Client(name=name, pid=1, created=100, activity=activity, pane_id=pane, types=types)


def test_the_hold_runs_human_hold_from_the_end_of_the_keys_second_then_while_the_box_has_text() -> None:
    assert not holds(None, 1000.0, 30, "text")  # nobody typed: the box's text is the agent's
    assert holds(1000.0, 1030.9, 30, "")  # the key may have come at 1000.99
    assert not holds(1000.0, 1031.0, 30, "")
    assert not holds(1000.0, 1031.0, 30, None)
    assert holds(1000.0, 5000.0, 30, "half a sentence")
    assert not holds(1000.0, 1001.0, 0, "")  # human_hold 0: only the text left holds


def test_keys_are_read_from_the_clients_activity_and_go_to_their_active_pane() -> None:
    now = [[client("/dev/pts/1", 100, "%1"), client("ctl", 100, "%0", types=False)]]
    kb = Keyboard(lambda: now[0], every=0)
    assert kb.last_key("%1") == 100.0  # first seen: its activity (the attach, or a key) counts
    assert kb.last_key("%0") is None  # a control client's (miyabi's own) never does
    now[0] = [client("/dev/pts/1", 105, "%2")]  # switched to %2 and typed there
    assert kb.last_key("%2") == 105.0 and kb.last_key("%1") == 100.0
    now[0] = [client("/dev/pts/1", 105, "%1")]  # back to %1 (a key would have moved the time)
    assert kb.last_key("%1") == 100.0


def test_a_released_pane_is_held_again_only_by_a_new_key() -> None:
    seen = [[client("/dev/pts/1", 100, "%1")]]
    now = [105.0]
    kb = Keyboard(lambda: seen[0], clock=lambda: now[0], every=0)
    assert kb.holds("%1", 30, "")
    now[0] = 200.0
    assert not kb.holds("%1", 30, "")  # over: released
    assert not kb.holds("%1", 30, "agent's own text")  # text the agent shows later is not the person's
    seen[0] = [client("/dev/pts/1", 190, "%1")]
    assert kb.holds("%1", 30, "")  # a key at 190


def test_human_hold_is_a_duration_for_the_layout_and_each_agent(tmp_path: Path) -> None:
    lay = load(write_layout(tmp_path / "h.yaml", ["a", {"name": "b", "human_hold": "2m"}], human_hold="10s"))
    assert lay.human_hold == 10.0 and [a.human_hold for a in lay.agents] == [10.0, 120.0]
    assert load(write_layout(tmp_path / "d.yaml", ["a"])).agents[0].human_hold == 30.0
    with pytest.raises(LayoutError) as bad:
        load(write_layout(tmp_path / "bad.yaml", ["a"], human_hold="soon"))
    assert "human_hold" in str(bad.value) and "'soon' must be a duration" in str(bad.value)
