"""The builder's pure parts: command lines, sizes and the one-invocation chain."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers import FIXTURES, write_layout

from miyabi.agents.profiles import BUILTIN
from miyabi.config import load
from miyabi.config.model import Layout
from miyabi.config.preflight import exec_line as shell_line
from miyabi.home import Home
from miyabi.tmux.builder import build_commands, window_size


@pytest.mark.parametrize(
    ("cmd", "line"),
    [
        ("claude --model sonnet", "exec claude --model sonnet"),
        ("cat", "exec cat"),
        ("FOO=1 claude", "FOO=1 claude"),
        ("a && b", "a && b"),
        ("a | b", "a | b"),
        ("if true; then cat; fi", "if true; then cat; fi"),
        ("echo 'a;b'", "exec echo 'a;b'"),
    ],
)
def test_shell_line(cmd: str, line: str) -> None:
    assert shell_line(cmd) == line


def _layout(tmp_path: Path, n: int, per_window: int) -> Layout:
    """``n`` shell agents a0, a1, … ``per_window`` to a window."""
    agents = [(f"a{i}", "shell", "cat") for i in range(n)]
    return load(write_layout(tmp_path / "l.yaml", agents, session="s", per_window=per_window))


def test_window_size_fits_the_tiled_grid(tmp_path: Path) -> None:
    # tiled puts 4 panes in 2x2, 3 in 2 rows x 2 columns, 2 in 2 rows x 1 column.
    assert window_size(_layout(tmp_path, 4, 4)) == (2 * 100 + 1, 2 * 31)
    assert window_size(_layout(tmp_path, 2, 4)) == (100, 2 * 31)
    assert window_size(_layout(tmp_path, 16, 16)) == (4 * 100 + 3, 4 * 31)


def test_chain_spreads_agents_over_windows(tmp_path: Path) -> None:
    lay = _layout(tmp_path, 10, 4)
    units = build_commands(lay, Home(tmp_path), "sock", tmp_path)
    assert len(units) == 11  # one per pane, and the final selection
    for u in units:  # every group may start a new tmux invocation: its first command is targeted
        assert "-t" in u[0] or u[0][0] == "new-session"
    cmds = [c for u in units for c in u]
    heads = [c[0] for c in cmds]
    assert heads.count("new-session") == 1
    assert heads.count("new-window") == 2  # 4 + 4 + 2
    assert heads.count("split-window") == 7
    tags = [c[-1] for c in cmds if c[:2] == ["set-option", "-p"]]
    assert tags == [f"a{i}" for i in range(10)]
    # every pane gets remain-on-exit through its window, and its output logged
    assert sum(1 for c in cmds if c[-2:] == ["remain-on-exit", "on"]) == 3
    assert sum(1 for c in cmds if c[0] == "pipe-pane") == 10


def test_every_pane_runs_with_miyabi_env(tmp_path: Path) -> None:
    lay = load(FIXTURES / "three_agents.yaml")
    spawn = build_commands(lay, Home(tmp_path), "sock", tmp_path)[0][0]
    assert "MIYABI_AGENT=kaede" in spawn and "MIYABI_SOCKET=sock" in spawn
    assert f"MIYABI_HOME={tmp_path}" in spawn and "TEAM=blue" in spawn
    assert spawn[-3:] == ["/bin/sh", "-c", "exec miyabi worker"]
    assert any(w.startswith("PATH=") for w in spawn)


def test_allow_set_title_only_where_tmux_has_it(tmp_path: Path) -> None:
    lay = _layout(tmp_path, 2, 4)
    old = [c for u in build_commands(lay, Home(tmp_path), "s", tmp_path, (3, 3)) for c in u]
    new = [c for u in build_commands(lay, Home(tmp_path), "s", tmp_path, (3, 4)) for c in u]
    assert not any("allow-set-title" in c for c in old)
    assert any(c[-2:] == ["allow-set-title", "off"] for c in new)


def test_multi_line_commands_run_every_line() -> None:
    assert shell_line("echo one\nsleep 1") == "echo one\nsleep 1"


def test_pane_title_is_not_format_expanded(tmp_path: Path) -> None:
    from miyabi.tmux.builder import pane_setup

    f = write_layout(tmp_path / "l.yaml", [{"name": "a", "profile": "shell", "command": "cat", "title": "T #S"}])
    cmds = pane_setup(load(f).agents[0], Home(tmp_path))
    assert ["select-pane", "-T", "T ##S"] in cmds
    assert not any("-o" in c for c in cmds if c[0] == "pipe-pane")


def test_a_respawn_that_happened_counts_even_if_the_set_up_after_it_fails(tmp_path: Path) -> None:
    """``respawn_agent`` raises only when the respawn itself was refused; a channel that
    closes during the set-up after it is best effort (the watchdog counts the restart)."""
    from miyabi.config.model import Agent
    from miyabi.errors import TmuxError
    from miyabi.home import Home
    from miyabi.tmux.builder import respawn_agent

    class ClosesAfterRespawn:
        """A control channel that runs the respawn, then closes."""

        def __init__(self) -> None:
            self.calls: list[str] = []

        def run(self, *args: str, check: bool = True) -> list[str]:
            return self.run_chain([args], check=check)

        def run_chain(self, commands: Sequence[Sequence[str]], *, check: bool = True) -> list[str]:
            self.calls += [c[0] for c in commands]
            failed = [c[0] for c in commands if c[0] != "respawn-pane"]
            if failed:
                raise TmuxError(failed[0], "control channel is closed")
            return []

    agent = Agent(name="a", profile=BUILTIN["shell"], command="cat")
    runner = ClosesAfterRespawn()
    assert respawn_agent(runner, agent, "%1", Home(tmp_path), "s", tmp_path) == 0
    assert runner.calls[0] == "respawn-pane"

    class Refuses(ClosesAfterRespawn):
        def run_chain(self, commands: Sequence[Sequence[str]], *, check: bool = True) -> list[str]:
            raise TmuxError(commands[0][0], "can't find pane: %1")

    with pytest.raises(TmuxError):
        respawn_agent(Refuses(), agent, "%1", Home(tmp_path), "s", tmp_path)
