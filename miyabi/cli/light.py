"""The light path of ``miyabi status``, ``miyabi up`` and ``miyabi controller``: their
usual command lines read here, so that they run without importing Typer.

Typer (0.29) costs a run about 200 ms before a command starts: its own import, then
pydantic's, then a pydantic adapter built for each option (measured with ``python -X
importtime`` and cProfile on ``miyabi status``). ``status`` is run often, ``up`` is
measured against tmuxp (``benchmarks/bench_status.py``, ``bench_up.py``), and ``up``
waits for the controller its keep-alive starts to hold its lock.

Only a command line :func:`parse` reads whole is run here; ``--help``, and anything it
does not know or refuses, goes to the Typer app instead, which prints the help or the
usage error as every other command does. Both paths run the same functions
(:func:`miyabi.cli.status.show`, :func:`miyabi.cli.up.bring_up`,
:func:`miyabi.cli.up.run_controller`), and errors end the same way
(:func:`exit_code_for`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from miyabi.cli import output
from miyabi.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PIPE, MiyabiError


class NotLight(Exception):
    """A command line the light path does not read whole: the Typer app runs it."""


class QuietParser(argparse.ArgumentParser):
    """The light paths' parser (this one's, and ``miyabi send``'s): argparse, without
    its own help and abbreviations, that never prints or exits: what it cannot read
    raises :class:`NotLight`, so that the Typer command, which has the help texts,
    prints the help or the usage error as every other command does."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog=f"miyabi {prog}", add_help=False, allow_abbrev=False)

    def error(self, message: str) -> NoReturn:
        raise NotLight(message)


def _parser(command: str) -> QuietParser:
    """The options of ``miyabi COMMAND`` as :mod:`miyabi.cli.ensemble` declares them
    (help texts live there only)."""
    ap = QuietParser(command)
    ap.add_argument("--socket", "-L", default=None)
    ap.add_argument("--home", default=None)
    if command == "up":
        ap.add_argument("layout", nargs="?", default=None)
        ap.add_argument("--detach", "-d", action="store_true")
        ap.add_argument("--controller", action=argparse.BooleanOptionalAction, default=True)
    else:
        ap.add_argument("--layout", "-f", default=None)
    if command == "status":
        ap.add_argument("--json", action="store_true")
        ap.add_argument("--all-hosts", action="store_true")
    return ap


def parse(command: str, argv: list[str]) -> dict[str, Any] | None:
    """The options and argument of ``miyabi COMMAND ARGV`` by name, or None when the
    command line is not one this path reads whole (help, an unknown option, an option
    without its value, a value that looks like an option, an empty value, extra
    arguments). Options go anywhere; ``--name=value``, ``-Lvalue`` and ``--`` work as
    in Typer."""
    try:
        ns = vars(_parser(command).parse_args(argv))
    except NotLight:
        return None
    if any(v == "" for v in ns.values()):
        return None
    return ns


def main(command: str, argv: list[str]) -> int | None:
    """Run ``miyabi COMMAND ARGV``; return its exit code, or None when the Typer app
    must run it (help, an option this path does not know, a usage error)."""
    if "-h" in argv or "--help" in argv:
        return None
    ns = parse(command, argv)
    if ns is None:
        return None
    socket = ns["socket"] or os.environ.get("MIYABI_SOCKET") or None  # the options' envvars, as Typer reads them
    given = ns["home"] or os.environ.get("MIYABI_HOME")
    home = Path(given) if given else None

    def run() -> None:
        if command == "status":
            from miyabi.cli.status import show

            show(ns["json"], socket, home, ns["layout"], ns["all_hosts"])
        elif command == "up":
            from miyabi.cli.up import bring_up

            bring_up(ns["layout"], ns["detach"], ns["controller"], socket, home)
        else:
            from miyabi.cli.up import run_controller

            run_controller(socket, home, ns["layout"])

    return guarded(run)


def guarded(fn: Callable[[], None]) -> int:
    """Run ``fn``; return the exit code, an error printed as one line (see
    :func:`exit_code_for`), a closed standard output a quiet 141."""
    try:
        fn()
        sys.stdout.flush()
        return 0
    except BrokenPipeError:
        try:  # what is left goes nowhere, and the flush at exit prints no second error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_PIPE
    except Exception as e:
        code = exit_code_for(e)
        if code is None:
            raise
        return code
    except KeyboardInterrupt:
        output.error("interrupted")
        return EXIT_INTERRUPTED


def exit_code_for(e: Exception) -> int | None:
    """Print a miyabi error, a task store failure or an OS error as one line per
    problem on stderr and return its exit code; None for anything else (a bug: its
    traceback is shown)."""
    import sqlite3

    if isinstance(e, MiyabiError):
        for line in e.lines():
            output.error(line)
        return e.exit_code
    if isinstance(e, sqlite3.Error):
        output.error(f"the task store failed: {e}; try again (another miyabi may hold it)")
        return EXIT_ERROR
    if isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        output.error(f"{e.strerror or e}{where}")
        return EXIT_ERROR
    return None
