"""Fixtures shared by the unit tests of the command line."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run as a user runs them in an empty directory: the current directory is
    the test's own, no home or agent is set in the environment, no GitHub token is there,
    and the socket is one no server runs on (so no command reaches a real tmux server)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIYABI_SOCKET", "miyabi_unit_never_started")
    for var in ("MIYABI_HOME", "MIYABI_AGENT", "GITHUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
