"""Every shipped layout loads, and the default one runs without any agent CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_layout

from miyabi.config import load
from miyabi.config.preflight import preflight
from miyabi.config.shipped import find, init_text, layouts_dir, shipped, write_init
from miyabi.errors import LayoutError, MiyabiError

SHIPPED = shipped()


def test_the_four_layouts_are_shipped() -> None:
    assert {p.stem for p in SHIPPED} >= {"default", "claude", "codex", "mixed"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_layout_loads(path: Path) -> None:
    lay = load(path)
    assert lay.agents
    assert lay.description


def test_default_layout_is_four_workers_that_need_no_agent_cli() -> None:
    lay = load(layouts_dir() / "default.yaml")
    assert lay.names == ["kaede", "sakura", "tsubaki", "botan"]
    assert {a.profile.name for a in lay.agents} == {"worker"}
    preflight(lay)  # only needs `miyabi` itself


def test_find_by_name_or_path(tmp_path: Path) -> None:
    assert find("claude") == layouts_dir() / "claude.yaml"
    assert find("codex.yaml") == layouts_dir() / "codex.yaml"
    f = write_layout(tmp_path / "x.yaml", ["a"])
    assert find(str(f)) == f
    with pytest.raises(LayoutError, match="shipped layouts: claude"):
        find("nope")


def test_init_uses_agent_clis_found_on_path(tmp_path: Path) -> None:
    found = {"claude": "/usr/bin/claude", "aider": "/usr/bin/aider"}
    text = init_text(found.get)
    f = tmp_path / "miyabi.yaml"
    f.write_text(text)
    lay = load(f)
    assert [(a.name, a.profile.name) for a in lay.agents] == [("kaede", "claude"), ("sakura", "aider")]


def test_init_falls_back_to_workers_and_refuses_to_overwrite(tmp_path: Path) -> None:
    f = tmp_path / "miyabi.yaml"
    write_init(f, which=lambda _: None)
    lay = load(f)
    assert [a.profile.name for a in lay.agents] == ["worker"] * 4
    with pytest.raises(MiyabiError, match="already exists"):
        write_init(f, which=lambda _: None)
    write_init(f, force=True, which=lambda _: "/bin/x")
    assert load(f).agents[0].profile.name == "claude"
