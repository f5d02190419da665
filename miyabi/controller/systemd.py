"""The systemd unit that keeps a home's controller running (``miyabi service install`` writes it).

The unit restarts the controller whenever it exits (``Restart=always``) and uses
``KillMode=process``, so that stopping or restarting the unit ends the controller
alone and never the tmux server it talks to: the agents keep running (a unit with the
default ``KillMode=control-group`` killed users' tmux servers in agent-deck#2219). If the
session is missing when the controller starts, it builds it from the layout.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from miyabi.errors import MiyabiError


def unit_name(session: str) -> str:
    """``miyabi-<session>.service``."""
    return f"miyabi-{session}.service"


def unit_dir(user: bool) -> Path:
    """Where systemd reads units: ``$XDG_CONFIG_HOME/systemd/user`` (default
    ``~/.config``) with ``--user``, else ``/etc/systemd/system``."""
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user"
    return Path("/etc/systemd/system")


def render(home: Path, socket: str, layout: Path, session: str, user: bool, python: str | None = None) -> str:
    """The unit file's text."""
    exe = python or sys.executable
    cmd = shlex.join(
        [exe, "-m", "miyabi", "controller", "--home", str(home), "--socket", socket, "--layout", str(layout)]
    )
    path = os.environ.get("PATH", os.defpath)
    return "\n".join(
        [
            "# Written by `miyabi service install`; remove with `miyabi service uninstall`.",
            "[Unit]",
            f"Description=miyabi controller for {home} (session {session}, tmux socket {socket})",
            "After=network.target" if not user else "After=default.target",
            "",
            "[Service]",
            "Type=simple",
            f"ExecStart={cmd}",
            f"WorkingDirectory={home}",
            f"Environment={shlex.quote('PATH=' + path)}",
            "Restart=always",
            "RestartSec=2",
            "# Stop the controller only: never the tmux server and the agents in it.",
            "KillMode=process",
            "",
            "[Install]",
            f"WantedBy={'default.target' if user else 'multi-user.target'}",
            "",
        ]
    )


def install(home: Path, socket: str, layout: Path, session: str, user: bool) -> Path:
    """Write the unit; return its path.

    Raises:
        MiyabiError: the directory cannot be written (system units need root).
    """
    d = unit_dir(user)
    path = d / unit_name(session)
    try:
        d.mkdir(parents=True, exist_ok=True)
        path.write_text(render(home, socket, layout, session, user), encoding="utf-8")
    except PermissionError:
        raise MiyabiError(f"cannot write {path}: system units need root; run as root, or use --user") from None
    return path


def uninstall(session: str, user: bool) -> Path:
    """Remove the unit; return its path.

    Raises:
        MiyabiError: there is no such unit.
    """
    path = unit_dir(user) / unit_name(session)
    if not path.exists():
        raise MiyabiError(f"no unit {path}; nothing to remove")
    path.unlink()
    return path
