"""``miyabi service``: a systemd unit that keeps this home's controller running."""

from __future__ import annotations

from typing import Annotated

import typer

from miyabi.cli import output
from miyabi.cli.root import HomeOpt, LayoutOpt, SocketOpt, group, handles_errors, resolve_target
from miyabi.errors import MiyabiError

service_app = group("service", "Install or remove a systemd unit for the controller.")
UserOpt = Annotated[bool, typer.Option("--user", help="A user unit (~/.config/systemd/user) instead of a system one.")]


@service_app.command("install")
@handles_errors
def service_install(
    user: UserOpt = False, socket: SocketOpt = None, home: HomeOpt = None, layout: LayoutOpt = None
) -> None:
    """Write a systemd unit that keeps this home's controller running.

    Restart=always, and KillMode=process so that stopping it never kills the tmux
    server and the agents.
    """
    from miyabi.controller import systemd

    t = resolve_target(home, socket, layout, strict=False)
    if t.layout_path is None:
        raise MiyabiError("no layout known for this home; run `miyabi up` first or give --layout")
    path = systemd.install(t.home.root, t.socket, t.layout_path, t.session, user)
    ctl = "systemctl --user" if user else "systemctl"
    output.say(f"wrote {path}", "green")
    output.say(f"enable it with: {ctl} daemon-reload && {ctl} enable --now {path.name}")
    if user:
        output.say("to keep it running after you log out: loginctl enable-linger $USER")


@service_app.command("uninstall")
@handles_errors
def service_uninstall(
    user: UserOpt = False, socket: SocketOpt = None, home: HomeOpt = None, layout: LayoutOpt = None
) -> None:
    """Remove the systemd unit written by `miyabi service install`."""
    from miyabi.controller import systemd

    t = resolve_target(home, socket, layout, strict=False)
    ctl = "systemctl --user" if user else "systemctl"
    name = systemd.unit_name(t.session)
    path = systemd.uninstall(t.session, user)
    output.say(f"removed {path}; stop it first if it runs: {ctl} disable --now {name} && {ctl} daemon-reload")
