"""The set-up the README gives (``scripts/miyabi``) leaves the user a working ``miyabi``
command, or says in one line how to get one (issue 21). Run on a copy of the checkout
whose ``.venv`` is this one (so nothing is installed), with a HOME and PATH of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("bash", "env", "flock", "cksum", "cut", "cat", "readlink", "mkdir", "ln", "dirname", "id", "tmux")
"""What the scripts run (tmux present, so that they never try to install it)."""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the checkout's scripts whose .venv is set up: its python and miyabi are
    this environment's, its stamp says it is current."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "scripts", root / "scripts")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    bindir = root / ".venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").symlink_to(sys.executable)
    (bindir / "miyabi").symlink_to(Path(sys.executable).parent / "miyabi")
    stamp = subprocess.run(
        ["sh", "-c", "cat pyproject.toml | cksum | cut -d' ' -f1"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    (root / ".venv" / ".miyabi-stamp").write_text(f"{stamp}-\n")
    return root


def base_path() -> str:
    dirs = []
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed"
        if str(Path(found).parent) not in dirs:
            dirs.append(str(Path(found).parent))
    path = os.pathsep.join(dirs)
    assert shutil.which("miyabi", path=path) is None, "a miyabi on the system PATH would hide what is tested"
    return path


def run(cmd: list[str], home: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "PATH": path, "MIYABI_SOCKET": "miyabi_unit_never_started"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_set_up_links_miyabi_into_local_bin_when_that_is_on_path(checkout: Path, tmp_path: Path) -> None:
    from miyabi import __version__

    home = tmp_path / "home"
    home.mkdir()
    local = home / ".local" / "bin"
    path = f"{local}{os.pathsep}{base_path()}"
    r = run([str(checkout / "scripts" / "miyabi"), "--version"], home, path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"miyabi {__version__}\n"
    venv_miyabi = checkout / ".venv" / "bin" / "miyabi"
    assert r.stderr == f"miyabi: linked {local}/miyabi to {venv_miyabi}: `miyabi` now works in any directory\n"
    assert os.readlink(local / "miyabi") == str(venv_miyabi)
    r = run(["miyabi", "--version"], home, path)  # what every example in the README types
    assert r.returncode == 0 and r.stdout == f"miyabi {__version__}\n", r.stderr
    r = run([str(checkout / "scripts" / "miyabi"), "--version"], home, path)
    assert r.returncode == 0 and r.stderr == ""  # told once


def test_set_up_says_in_one_line_how_to_put_miyabi_on_path(checkout: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    path = base_path()  # no ~/.local/bin on it
    r = run([str(checkout / "scripts" / "miyabi"), "--version"], home, path)
    assert r.returncode == 0, r.stderr
    venv_bin = checkout / ".venv" / "bin"
    assert r.stderr == (
        f'miyabi: to type `miyabi` in any directory: export PATH="{venv_bin}:$PATH" (add it to ~/.bashrc to keep it)\n'
    )
    assert not (home / ".local").exists()
    r = run(["bash", "-c", f'export PATH="{venv_bin}:$PATH"; miyabi --version'], home, path)  # the line, as said
    assert r.returncode == 0 and r.stdout.startswith("miyabi "), r.stderr
    assert run([str(checkout / "scripts" / "miyabi"), "--version"], home, path).stderr == ""


def test_set_up_never_replaces_a_miyabi_that_is_there(checkout: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    local = home / ".local" / "bin"
    local.mkdir(parents=True)
    theirs = local / "miyabi"
    theirs.write_text("#!/bin/sh\necho theirs\n")
    theirs.chmod(0o755)
    r = run([str(checkout / "scripts" / "miyabi"), "--version"], home, f"{local}{os.pathsep}{base_path()}")
    assert r.returncode == 0, r.stderr
    venv_bin = checkout / ".venv" / "bin"
    assert r.stderr == (
        f"miyabi: `miyabi` on your PATH is {theirs}, not this checkout's; to use this one: "
        f'export PATH="{venv_bin}:$PATH"\n'
    )
    assert theirs.read_text() == "#!/bin/sh\necho theirs\n"
