"""The ``miyabi`` command line. ``send`` and ``broadcast`` take a light path that
does not import typer (see ``miyabi.cli.send``); everything else goes through the
Typer app in ``miyabi.cli.commands``."""

from __future__ import annotations

import sys
from typing import Any

FAST = ("send", "broadcast")


def main() -> None:
    """Console entry point."""
    argv = sys.argv[1:]
    if argv and argv[0] in FAST:
        from miyabi.cli.send import main as fast

        sys.exit(fast(argv[0], argv[1:]))
    from miyabi.cli.commands import app

    app()


def __getattr__(name: str) -> Any:
    if name == "app":
        from miyabi.cli.commands import app

        return app
    raise AttributeError(name)


__all__ = ["app", "main"]
