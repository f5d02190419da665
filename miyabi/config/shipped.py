"""Shipped layouts, finding the layout a command should use, and ``miyabi init``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from miyabi import defaults
from miyabi.errors import LayoutError, MiyabiError, Problem
from miyabi.home import Home

DEFAULT_LAYOUT = "default"
"""Shipped layout used when no layout is given and ``./miyabi.yaml`` does not exist."""

AGENT_NAMES = ("kaede", "sakura", "tsubaki", "botan", "ayame", "kikyo", "yuri", "suzuran")
"""Names ``miyabi init`` hands out, in order."""

CLI_PROFILES = ("claude", "codex", "gemini", "aider", "opencode")
"""Agent CLIs ``miyabi init`` looks for on PATH, in order of preference."""


def layouts_dir() -> Path:
    """Directory of the shipped layouts: ``layouts/`` of a source checkout, else the copy
    installed inside the package."""
    here = Path(__file__).resolve().parent.parent  # miyabi/
    checkout = here.parent / "layouts"
    if checkout.is_dir():
        return checkout
    return here / "_layouts"


def shipped() -> list[Path]:
    """Every shipped layout file, sorted by name."""
    d = layouts_dir()
    return sorted(d.glob("*.yaml")) if d.is_dir() else []


def find(name_or_path: str) -> Path:
    """A layout by path, or by the name of a shipped layout (``claude`` or ``claude.yaml``).

    Raises:
        LayoutError: neither a file nor a shipped layout.
    """
    p = Path(os.path.expanduser(name_or_path))
    if p.is_file():
        return p
    stem = name_or_path.removesuffix(".yaml")
    if "/" not in name_or_path:
        cand = layouts_dir() / f"{stem}.yaml"
        if cand.is_file():
            return cand
    names = ", ".join(x.stem for x in shipped())
    raise LayoutError(
        [Problem(p, None, "", f"no such layout file; give a path, or one of the shipped layouts: {names}")]
    )


def for_up(given: str | None, cwd: Path | None = None) -> Path:
    """The layout ``miyabi up`` uses: ``given``, else ``./miyabi.yaml``, else the default."""
    if given:
        return find(given)
    local = (cwd or Path.cwd()) / defaults.LAYOUT_FILE
    if local.is_file():
        return local
    return layouts_dir() / f"{DEFAULT_LAYOUT}.yaml"


def for_command(given: str | None, home: Home, cwd: Path | None = None) -> Path:
    """The layout other commands use: ``given``, else the one ``miyabi up`` last used in
    ``home``, else ``./miyabi.yaml``, else the default."""
    if given:
        return find(given)
    last = home.load_state().get("layout")
    if isinstance(last, str) and Path(last).is_file():
        return Path(last)
    return for_up(None, cwd)


def init_text(which: Callable[[str], str | None] = shutil.which) -> str:
    """The ``miyabi.yaml`` that ``miyabi init`` writes: one agent per agent CLI found on
    PATH (``which``), or four workers when none is found."""
    found = [p for p in CLI_PROFILES if which(p)]
    lines = [
        "# miyabi layout, written by `miyabi init`. Reference: docs/layout.md.",
        "session: miyabi",
        f"per_window: {defaults.PER_WINDOW}",
        "agents:",
    ]
    if found:
        for name, profile in zip(AGENT_NAMES, found, strict=False):
            lines += [f"  - name: {name}", f"    profile: {profile}"]
    else:
        lines.insert(1, "# No agent CLI (claude, codex, gemini, aider, opencode) was found on PATH: built-in workers.")
        for name in AGENT_NAMES[:4]:
            lines += [f"  - name: {name}", "    profile: worker"]
    return "\n".join(lines) + "\n"


def write_init(path: Path, force: bool = False, which: Callable[[str], str | None] = shutil.which) -> str:
    """Write :func:`init_text` to ``path``; return the text.

    Raises:
        MiyabiError: ``path`` exists and ``force`` is False.
    """
    if path.exists() and not force:
        raise MiyabiError(f"{path} already exists; edit it, or run `miyabi init --force` to overwrite it")
    text = init_text(which)
    path.write_text(text, encoding="utf-8")
    return text
