"""The ``miyabi`` command line. ``send`` and ``broadcast`` take a light path that
does not import typer (see ``miyabi.cli.send``), ``hook`` a lighter one still
(``miyabi.cli.hook``), and ``status``, ``up`` and ``controller`` one for their usual
command lines (``miyabi.cli.light``); everything else goes through the Typer app
(``miyabi.cli.root``), whose commands live one module per group. Inside a sandbox
(``$MIYABI_CHANNEL`` set) the commands an agent has there go over its own channel
(``miyabi.cli.channel``). The Typer app also
has ``send``, ``broadcast`` and ``hook``: for their help, their usage errors and the
listing in ``miyabi --help``."""

from __future__ import annotations

import os
import sys
from typing import Any

FAST = ("send", "broadcast")
LIGHT = ("status", "up", "controller")


def _load_app() -> Any:
    import miyabi.cli.ensemble  # noqa: F401 - registered first: its commands lead `miyabi --help`
    from miyabi.cli import (  # noqa: F401 - they register their commands
        approvals,
        budget,
        bus,
        catalog,
        github,
        logs,
        messages,
        report,
        service,
        spec,
        stories,
        tasks,
        web,
        worktrees,
    )
    from miyabi.cli.root import app

    return app


def main() -> None:
    """Console entry point."""
    argv = sys.argv[1:]
    channel = os.environ.get("MIYABI_CHANNEL")
    if channel and argv[:1] != ["hook"]:  # in a sandbox: through the agent's own channel
        from miyabi.cli.channel import main as via_channel

        rc = via_channel(argv, channel)
        if rc is not None:
            sys.exit(rc)
    if argv[:1] == ["hook"] and argv[1:2] not in (["-h"], ["--help"]):
        from miyabi.cli.hook import main as hook

        sys.exit(hook(argv[1:]))
    if argv and argv[0] in FAST:
        from miyabi.cli.send import main as fast

        rc = fast(argv[0], argv[1:])
        if rc is not None:
            sys.exit(rc)
        # --help, or arguments the light path does not take: the Typer command says why
    if argv and argv[0] in LIGHT:
        from miyabi.cli.light import main as light

        code = light(argv[0], argv[1:])
        if code is not None:
            sys.exit(code)
    _load_app()(prog_name="miyabi")


def __getattr__(name: str) -> Any:
    if name == "app":
        return _load_app()
    raise AttributeError(name)


__all__ = ["app", "main"]
