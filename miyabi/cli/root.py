"""The Typer application and what every command shares: options, finding the home,
socket, session and layout, and turning errors into one line and an exit code.

The command modules (``ensemble``, ``messages``, ``tasks``, ``github``, ``service``)
only wire: they parse options, call the core, and print. The core never prints or
exits; a :class:`~miyabi.errors.MiyabiError` becomes one line per problem on stderr
and its exit code, and a usage error (a missing argument, an unknown option) one line
naming the command and how to get its help, exit 2. Help is rich on a terminal and
plain when piped.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from miyabi import __version__
from miyabi.cli import output
from miyabi.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PIPE, EXIT_USAGE, MiyabiError, UsageError

# Typer vendors click (0.29+) or depends on it (older); reach click's classes through
# a public Typer exception either way.
_CLICK_EXCEPTION: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_USAGE_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class PipeClosed(Exception):
    """Standard output was closed by its reader; raised past Typer, which would turn a
    broken pipe into exit 1."""


def _silence_stdout() -> None:
    """After a broken pipe: send what is left to /dev/null, so that the flush at exit
    prints no second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class Group(TyperGroup):
    """Typer's group, with usage errors as one line (``miyabi: task show: missing
    argument 'ID'; see `miyabi task show --help```, exit 2) and a broken pipe as a quiet
    exit (141)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except _USAGE_ERROR as e:
            ctx = getattr(e, "ctx", None)
            output.usage_error(ctx.command_path if ctx is not None else "miyabi", e.format_message())  # type: ignore[attr-defined]
            sys.exit(EXIT_USAGE)
        except _CLICK_EXCEPTION as e:
            output.error(e.format_message())  # type: ignore[attr-defined]
            sys.exit(getattr(e, "exit_code", EXIT_ERROR))
        except typer.Abort:
            output.error("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except (BrokenPipeError, PipeClosed):
            _silence_stdout()
            sys.exit(EXIT_PIPE)
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(EXIT_PIPE)
        sys.exit(rv if isinstance(rv, int) else 0)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _tidy(command.get_params(ctx))
        return command

    def get_params(self, ctx: Any) -> Any:
        params = super().get_params(ctx)
        _tidy(params)
        return params


def _tidy(params: Sequence[Any]) -> None:
    """Help that names values, not Python types: a flag takes no value, so it shows no
    type (Typer's rich help would show ``<bool>``); an argument or option given no
    metavar shows its name in capitals (never ``<str>`` or ``<list[str]>``); an
    argument's help names its value, so no type follows its name."""
    for p in params:
        if p.metavar is None:
            flag = getattr(p, "is_flag", False) or getattr(p, "count", False)
            p.metavar = "" if flag else (p.name or "value").upper()
        if getattr(p, "param_type_name", "") == "argument" and hasattr(p, "display_type_rich"):
            p.display_type_rich = lambda ctx: None


def checked(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A checker of :mod:`miyabi.cli.params` as a Typer parser: its :class:`ValueError`
    becomes a usage error naming the option (``invalid value for '--priority': 'urgent'
    is not a priority; use high, normal or low``). A default that is not text passes."""

    def parser(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse(value)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None

    return parser


def _version(value: bool) -> None:
    if value:
        typer.echo(f"miyabi {__version__}")
        raise typer.Exit(0)


def _help_when_bare(ctx: typer.Context) -> None:
    """A group run with no command prints its help and exits 0."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


app = typer.Typer(
    name="miyabi",
    cls=Group,
    help="Run an ensemble of CLI coding agents in tmux, one pane per named agent.",
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich" if sys.stdout.isatty() else None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", "-V", is_eager=True, callback=_version, help="Print miyabi's version and exit.")
    ] = False,
) -> None:
    """Run an ensemble of CLI coding agents in tmux, one pane per named agent.

    Start with `miyabi up`; `miyabi COMMAND --help` tells more of each command.
    """
    _help_when_bare(ctx)


def group(name: str, help_text: str) -> typer.Typer:
    """A command group (``miyabi task …``) that prints its help when run bare."""
    sub = typer.Typer(help=help_text, cls=Group)

    @sub.callback(invoke_without_command=True)
    def _bare(ctx: typer.Context) -> None:
        _help_when_bare(ctx)

    _bare.__doc__ = help_text
    app.add_typer(sub, name=name)
    return sub


SocketOpt = Annotated[
    str | None,
    typer.Option(
        "--socket",
        "-L",
        envvar="MIYABI_SOCKET",
        metavar="NAME",
        show_default=False,
        help="tmux socket of miyabi's own server (default: the one miyabi last used in this home, else miyabi).",
    ),
]
HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="MIYABI_HOME",
        metavar="DIR",
        show_default=False,
        help=(
            "Directory holding queue/, logs/, run/ and state/ (default: the home of the ensemble on --socket, "
            "else the current directory if `miyabi up` ran there, else the home of the ensemble on socket miyabi)."
        ),
    ),
]
LayoutOpt = Annotated[
    str | None,
    typer.Option(
        "--layout",
        "-f",
        metavar="LAYOUT",
        show_default=False,
        help="Layout file or shipped layout name (default: the one `miyabi up` last used here).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(fn: F) -> F:
    """Map miyabi's errors to one stderr line per problem and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UsageError as e:  # a value the command cannot use: as click's own usage errors
            raise _USAGE_ERROR(str(e)) from None
        except MiyabiError as e:
            for line in e.lines():
                output.error(line)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            output.error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except sqlite3.Error as e:
            output.error(f"the task store failed: {e}; try again (another miyabi may hold it)")
            raise typer.Exit(EXIT_ERROR) from None
        except BrokenPipeError:
            raise PipeClosed() from None
        except OSError as e:
            where = f": {e.filename}" if e.filename else ""
            output.error(f"{e.strerror or e}{where}")
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


def home_of(home: Path | None, socket: str | None, strict: bool = True) -> Any:
    """The home a command acts on (a :class:`miyabi.home.Home`; see
    :func:`miyabi.cli.where.locate_home`, and its ``strict``).

    Raises:
        NoEnsemble: no ensemble's home can be told, or several could be meant.
    """
    from miyabi.cli.where import locate_home

    return locate_home(home, socket, strict=strict)


def resolve_target(home: Path | None, socket: str | None, layout: str | None, strict: bool = True) -> Any:
    """Where a command acts (a :class:`miyabi.controller.view.Target`): the home from
    :func:`home_of`; the socket from ``--socket``, else what ``miyabi up`` recorded
    there, else ``miyabi``; the session from ``--layout``, else the recorded one."""
    from miyabi.controller.view import resolve_target as resolve

    return resolve(home_of(home, socket, strict).root, socket, layout)


def tmux_for(socket: str) -> Any:
    """A runner for miyabi's tmux server on ``socket``."""
    from miyabi.tmux.runner import Tmux

    return Tmux(socket)


def running(home: Path | None, socket: str | None, layout: str | None) -> tuple[Any, Any]:
    """The target and its tmux server, whose session must be running.

    Raises:
        TmuxUnavailable: tmux missing or too old, or the session is not running (exit 4).
    """
    from miyabi.controller.view import require_session

    t = resolve_target(home, socket, layout)
    return t, require_session(t)
