"""The layout loader: one fixture file per defect, each with its expected message."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from helpers import FIXTURES

from miyabi.config import load
from miyabi.config.document import key_path
from miyabi.config.loader import expand, fill_defaults, read
from miyabi.config.preflight import preflight, program_of
from miyabi.errors import LayoutError

BAD = sorted(p for p in FIXTURES.glob("*.yaml") if p.read_text().startswith("# expect:"))


def expectations(path: Path) -> tuple[list[tuple[int | None, str]], bool]:
    """The leading ``# expect: LINE: TEXT`` lines (LINE ``-`` when no line applies), and
    whether a ``# exactly`` line says no other problem may be reported."""
    found: list[tuple[int | None, str]] = []
    exactly = False
    for line in path.read_text().splitlines():
        m = re.match(r"# expect: (\d+|-): (.*)", line)
        if m:
            found.append(((None if m.group(1) == "-" else int(m.group(1))), m.group(2)))
        elif line.strip() == "# exactly":
            exactly = True
        else:
            break
    assert found, f"{path.name} has no '# expect: LINE: TEXT' first line"
    return found, exactly


def test_there_is_a_fixture_per_defect() -> None:
    assert len(BAD) >= 15


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_invalid_layout_gives_its_message(path: Path) -> None:
    expected, exactly = expectations(path)
    with pytest.raises(LayoutError) as info:
        load(path)
    problems = info.value.problems
    rendered = [str(p) for p in problems]
    for line, text in expected:
        assert any(text in r for r in rendered), rendered
        hit = next(p for p in problems if text in str(p))
        assert hit.line == line, rendered
        assert hit.file == path
    if exactly:  # one defect neither hides nor invents another
        assert len(problems) == len(expected), rendered
    assert info.value.exit_code == 3
    # Each problem is one line naming the file.
    for r in rendered:
        assert "\n" not in r and path.name in r


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    f = tmp_path / "many.yaml"
    f.write_text("sesion: x\nagents:\n  - name: A\n  - name: b\n    profile: nope\n")
    with pytest.raises(LayoutError) as info:
        load(f)
    paths = [p.path for p in info.value.problems]
    assert paths == ["sesion", "agents[0].name", "agents[1].profile"]


def test_shorthands_and_defaults() -> None:
    lay = load(FIXTURES / "three_agents.yaml")
    assert lay.session == "trio"
    assert lay.per_window == 2
    kaede, sakura, tsubaki = lay.agents
    assert (kaede.name, kaede.profile.name, kaede.command) == ("kaede", "worker", "miyabi worker")
    assert (sakura.name, sakura.profile.name) == ("sakura", "shell")
    assert sakura.command == (os.environ.get("SHELL") or "/bin/sh")
    assert tsubaki.command == "cat -u"
    assert dict(tsubaki.env) == {"TEAM": "red", "LEVEL": "3"}
    assert dict(kaede.env) == {"TEAM": "blue"}
    assert tsubaki.profile.submit_delay == 0.4
    assert kaede.title == "kaede"
    assert [a.index for a in lay.agents] == [0, 1, 2]


def test_layout_is_frozen() -> None:
    lay = load(FIXTURES / "three_agents.yaml")
    with pytest.raises(AttributeError):
        lay.session = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        lay.agents[0].env["X"] = "1"  # type: ignore[index]


def test_own_profile_extends_a_builtin_and_agents_override_it() -> None:
    lay = load(FIXTURES / "own_profile.yaml")
    kaede, sakura = lay.agents
    assert kaede.profile.name == "slowclaude"
    assert kaede.profile.submit_delay == 2.0
    assert kaede.command == "claude --model opus"
    assert kaede.profile.busy_pattern and "esc to interrupt" in kaede.profile.busy_pattern
    assert sakura.profile.busy_pattern == "working"


def test_pipeline_stages_are_separate(tmp_path: Path) -> None:
    f = tmp_path / "l.yaml"
    f.write_text("agents:\n  - kaede\n  - {sakura: shell}\n")
    doc = read(f)
    assert doc.data == {"agents": ["kaede", {"sakura": "shell"}]}
    expand(doc)
    assert doc.data["agents"] == [{"name": "kaede"}, {"name": "sakura", "profile": "shell"}]
    fill_defaults(doc)
    assert doc.data["agents"][0]["profile"] == "worker"
    assert doc.lines[("agents", 1, "name")] == 3


def test_preflight_lists_every_missing_command_and_directory() -> None:
    lay = load(FIXTURES / "missing_commands.yaml")
    with pytest.raises(LayoutError) as info:
        preflight(lay)
    msgs = info.value.lines()
    assert len(msgs) == 3, msgs
    assert "miyabi-no-such-program-1" in msgs[0] and "agents[0].command" in msgs[0]
    assert "miyabi-no-such-program-2" in msgs[1]
    assert "/nonexistent/miyabi-dir" in msgs[2] and "agents[3].cwd" in msgs[2]


def test_relative_cwd_is_relative_to_the_layout(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    f = tmp_path / "l.yaml"
    f.write_text("agents:\n  - name: a\n    profile: shell\n    command: cat\n    cwd: work\n")
    lay = load(f)
    assert lay.agents[0].cwd == (tmp_path / "work").resolve()
    preflight(lay)


def test_key_path_and_program_of() -> None:
    assert key_path(("agents", 2, "name")) == "agents[2].name"
    assert key_path(()) == ""
    assert program_of("FOO=1 env BAR=2 claude --x") == "claude"
    assert program_of("'unbalanced") is None


def test_preflight_skips_compound_commands_and_builtins(tmp_path: Path) -> None:
    f = tmp_path / "l.yaml"
    f.write_text(
        "agents:\n"
        "  - {name: a, profile: shell, command: 'cd /tmp && cat'}\n"
        "  - {name: b, profile: shell, command: '. /dev/null && cat'}\n"
        "  - {name: c, profile: shell, command: 'env -u FOO cat'}\n"
        "  - name: d\n    profile: shell\n    command: |\n      echo one\n      exec cat\n"
    )
    preflight(load(f))
    assert program_of("env -u FOO -i BAR=1 claude") == "claude"
    assert program_of("cd x && y") == ""


def test_watchdog_settings_merge_ensemble_then_agent(tmp_path: Path) -> None:
    f = tmp_path / "l.yaml"
    f.write_text(
        "watchdog: {min_uptime: 2, max_restarts: 3}\nagents:\n  - kaede\n  - name: sakura\n    watchdog: "
        "{max_restarts: 9, silence_timeout: 30}\n"
    )
    kaede, sakura = load(f).agents
    assert (kaede.watchdog.min_uptime, kaede.watchdog.max_restarts, kaede.watchdog.silence_timeout) == (2, 3, 600)
    assert (sakura.watchdog.min_uptime, sakura.watchdog.max_restarts, sakura.watchdog.silence_timeout) == (2, 9, 30)


def test_preflight_checks_each_pools_program_and_repository(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    f = tmp_path / "l.yaml"
    f.write_text(
        "agents: [kaede]\npools:\n"
        "  - {name: a, profile: shell, command: no-such-program-xyz, repo: repo}\n"
        "  - {name: b, profile: shell, command: cat, repo: plain}\n"
        "  - {name: c, profile: shell, command: cat, repo: missing}\n"
        "  - {name: d, profile: shell, command: cat, repo: repo}\n"
    )
    with pytest.raises(LayoutError) as e:
        preflight(load(f))
    assert [line.split(": ", 1)[1] for line in e.value.lines()] == [
        (
            "pools[0].command: pool 'a': command 'no-such-program-xyz' not found on PATH; install it, "
            "or set `command:` to its full path"
        ),
        f"pools[1].repo: pool 'b': '{tmp_path / 'plain'}' is not a git repository; fix `repo:`",
        f"pools[2].repo: pool 'c': '{tmp_path / 'missing'}' does not exist; clone the repository there or fix `repo:`",
    ]


def test_report_section_defaults_its_window_to_its_interval(tmp_path: Path) -> None:
    from miyabi.config.settings import ReportSettings

    f = tmp_path / "l.yaml"
    f.write_text("agents: [kaede]\ngithub: {repo: acme/widgets}\nreport: {every: 24h, issue: 12}\n")
    assert load(f).report == ReportSettings(every=86400.0, issue=12, since=86400.0)
    f.write_text("agents: [kaede]\ngithub: {repo: acme/widgets}\nreport: {every: 1d, issue: 3, since: 7d}\n")
    assert load(f).report == ReportSettings(every=86400.0, issue=3, since=604800.0)
    f.write_text("agents: [kaede]\n")
    assert load(f).report is None


def test_a_pool_s_approve_and_the_self_pool_load(tmp_path: Path) -> None:
    path = tmp_path / "l.yaml"
    path.write_text(
        "agents: [kaede]\npools:\n  - {name: coder, repo: /tmp}\n"
        "  - {name: miyabi, repo: /tmp, approve: required}\nself: {pool: miyabi}\n"
    )
    layout = load(path)
    assert [p.approve for p in layout.pools] == [False, True] and layout.self_pool == "miyabi"
