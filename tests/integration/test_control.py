"""The control-mode channel against a real tmux server: commands one per line, answers
in order, a chain written in one go whose failing command is named and does not stop
the others."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from miyabi.errors import TmuxError
from miyabi.tmux.control import SessionChannel
from miyabi.tmux.runner import Tmux


@pytest.fixture
def channel(tmux: Tmux) -> Iterator[SessionChannel]:
    tmux.run("new-session", "-d", "-s", "ctl", "-x", "80", "-y", "24", "cat")
    ch = SessionChannel(tmux, "ctl")
    yield ch
    ch.close()


def test_a_chain_runs_every_line_and_names_the_one_tmux_refused(channel: SessionChannel, tmux: Tmux) -> None:
    with pytest.raises(TmuxError) as refused:
        channel.run_chain(
            [
                ["set-option", "-t", "ctl", "@first", "1"],
                ["select-pane", "-t", "%999"],
                ["set-option", "-t", "ctl", "@third", "3"],
            ]
        )
    assert refused.value.command == "select-pane" and "%999" in str(refused.value)
    # the line after the refused one ran too: each line is a command of its own
    assert channel.run("show-options", "-v", "-t", "ctl", "@first") == ["1"]
    assert tmux.run("show-options", "-v", "-t", "ctl", "@third") == ["3"]
    # unchecked: every answer's lines, in order
    assert channel.run_chain(
        [["display-message", "-p", "a"], ["select-pane", "-t", "%999"], ["display-message", "-p", "b"]], check=False
    ) == ["a", "can't find pane: %999", "b"]


def test_a_closed_channel_names_the_command_it_could_not_run(channel: SessionChannel, tmux: Tmux) -> None:
    assert channel.run("display-message", "-p", "#{session_name}") == ["ctl"]
    client = channel.client()
    client.close()
    with pytest.raises(TmuxError) as closed:
        client.run_chain([["respawn-pane", "-k", "-t", "%0"], ["pipe-pane", "-t", "%0"]])
    assert closed.value.command == "respawn-pane" and "closed" in str(closed.value)
