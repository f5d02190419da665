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

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from miyabi.cli import output
from miyabi.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PIPE, MiyabiError

VALUED: dict[str, dict[str, str]] = {
    "status": {"--socket": "socket", "-L": "socket", "--home": "home", "--layout": "layout", "-f": "layout"},
    "up": {"--socket": "socket", "-L": "socket", "--home": "home"},
    "controller": {"--socket": "socket", "-L": "socket", "--home": "home", "--layout": "layout", "-f": "layout"},
}
"""Per command, each option that takes a value → its name (as ``miyabi.cli.ensemble``
declares them; help texts live there only)."""

FLAGS: dict[str, dict[str, tuple[str, bool]]] = {
    "status": {"--json": ("json", True), "--all-hosts": ("all_hosts", True)},
    "up": {
        "--detach": ("detach", True),
        "-d": ("detach", True),
        "--controller": ("controller", True),
        "--no-controller": ("controller", False),
    },
    "controller": {},
}
"""Per command, each flag → (its name, the value it sets)."""

DEFAULTS: dict[str, dict[str, bool]] = {
    "status": {"json": False, "all_hosts": False},
    "up": {"detach": False, "controller": True},
    "controller": {},
}


def parse(command: str, argv: list[str]) -> dict[str, Any] | None:
    """The options and argument of ``miyabi COMMAND ARGV`` by name, or None when the
    command line is not one this path reads whole (help, an unknown option, an option
    without its value, a value that looks like an option, extra arguments).

    A few lines instead of argparse, whose import alone costs ``status`` a tenth of its
    time. Options go anywhere; ``--name=value``, ``-Lvalue`` and ``--`` work as in
    Typer."""
    valued, flags = VALUED[command], FLAGS[command]
    out: dict[str, Any] = {"socket": None, "home": None, "layout": None, **DEFAULTS[command]}
    words: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            words += argv[i:]
            break
        if not arg.startswith("-") or arg == "-":
            words.append(arg)
            continue
        if arg in flags:
            name, value = flags[arg]
            out[name] = value
            continue
        option, eq, given = arg.partition("=")
        if not eq and not arg.startswith("--") and len(arg) > 2:  # -Lname
            option, eq, given = arg[:2], "=", arg[2:]
        if option not in valued:
            return None
        if not eq:
            if i >= len(argv) or argv[i].startswith("-"):
                return None
            given = argv[i]
            i += 1
        if not given:
            return None
        out[valued[option]] = given
    if command == "up" and len(words) <= 1:
        out["layout"] = words[0] if words else None
    elif words:
        return None
    return out


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
