"""The ``miyabi`` command line (the only package that imports typer)."""

from __future__ import annotations

from miyabi.cli.app import app, main

__all__ = ["app", "main"]
