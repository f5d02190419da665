"""tmux command building: escaping, chaining, version parsing (no tmux needed)."""

from __future__ import annotations

import pytest

from miyabi.errors import TmuxUnavailable, UsageError
from miyabi.tmux.runner import Tmux, chain, escape_arg, escape_format, parse_version


def test_trailing_semicolon_is_escaped() -> None:
    assert escape_arg("a;") == "a\\;"
    assert escape_arg("a\\;") == "a\\\\;"
    assert escape_arg("a ; b") == "a ; b"
    assert chain([["set", "x", "v;"], ["kill-server"]]) == ["set", "x", "v\\;", ";", "kill-server"]


def test_format_escape() -> None:
    assert escape_format("/tmp/a#b") == "/tmp/a##b"


@pytest.mark.parametrize(
    ("text", "want"), [("tmux 3.3a", (3, 3)), ("tmux next-3.5", (3, 5)), ("tmux 2.9", (2, 9)), ("tmux master", (99, 0))]
)
def test_parse_version(text: str, want: tuple[int, int]) -> None:
    assert parse_version(text) == want


def test_unparseable_version() -> None:
    with pytest.raises(TmuxUnavailable):
        parse_version("what")


def test_missing_tmux_is_exit_4(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TmuxUnavailable) as info:
        Tmux("x")
    assert info.value.exit_code == 4
    assert "apt-get install tmux" in str(info.value)


def test_socket_flag_is_always_added() -> None:
    t = Tmux("sock", executable="/usr/bin/tmux")
    assert t.argv(["list-sessions"]) == ["/usr/bin/tmux", "-L", "sock", "list-sessions"]


def test_run_units_packs_groups_under_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    t = Tmux("sock", executable="/bin/true")
    calls: list[list[list[str]]] = []
    monkeypatch.setattr(t, "run_chain", lambda cmds, **kw: calls.append([list(c) for c in cmds]) or [])
    unit = [["split-window", "-t", "x", "a" * 40], ["select-layout", "tiled"]]
    t.run_units([unit] * 10, limit=200)
    assert sum(len(c) for c in calls) == 20  # nothing lost
    assert all(len(c) % 2 == 0 for c in calls)  # never cut inside a group
    assert len(calls) == 5
    calls.clear()
    t.run_units([unit] * 10, limit=100_000)
    assert len(calls) == 1


@pytest.mark.parametrize("name", ["default", "", "/tmp/x", "a/b"])
def test_socket_names_that_reach_other_servers_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="not allowed") as info:
        Tmux(name, executable="/usr/bin/tmux")
    assert info.value.exit_code == 2  # a bad value given by the user, not "tmux missing" (4)
