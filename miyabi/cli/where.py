"""Which home a command acts on, wherever it is run from.

A message or a task written into a directory that no controller serves is never
delivered, so a command never guesses: the home is ``--home``, else ``$MIYABI_HOME``;
else the home whose ensemble runs on the tmux socket the command was given
(``--socket`` or ``$MIYABI_SOCKET``: miyabi tags each session it builds with its home);
else the current directory, when ``miyabi up`` ran there; else the home whose ensemble
runs on miyabi's default socket. When none of these names exactly one home that
``miyabi up`` ran in, the command fails and says which home it would have used.

Light on purpose (no typer, rich or YAML): ``miyabi send`` resolves its home here.
"""

from __future__ import annotations

import os
from pathlib import Path

from miyabi import defaults
from miyabi.errors import EXIT_TMUX, MiyabiError
from miyabi.home import STATE_FILE, Home


class NoEnsemble(MiyabiError):
    """No ensemble can be found for a command, or several could be meant (exit 4, as
    for a server that does not run: the message says to run ``miyabi up``)."""

    exit_code = EXIT_TMUX


def is_ensemble_home(root: Path) -> bool:
    """Whether ``miyabi up`` ran in ``root`` (it wrote ``run/up.json`` there)."""
    return (root / "run" / STATE_FILE).is_file()


def _recorded_socket(root: Path) -> str | None:
    socket = Home(root).load_state().get("socket")
    return socket if isinstance(socket, str) else None


def _homes_on(socket: str) -> list[Path]:
    """The distinct homes of the sessions miyabi built on ``socket`` ([] without a server).

    Raises:
        TmuxUnavailable: tmux is not installed (exit 4).
    """
    from miyabi.tmux.panes import homes_on
    from miyabi.tmux.runner import Tmux

    return sorted({Path(h) for h in homes_on(Tmux(socket)).values()})


def _one(homes: list[Path], socket: str, cwd: Path) -> Home | None:
    if not homes:
        return None
    if len(homes) == 1:
        return Home(homes[0])
    if cwd in homes:
        return Home(cwd)
    raise NoEnsemble(
        f"socket {socket!r} runs the ensembles of {len(homes)} homes ({', '.join(map(str, homes))}); "
        "give --home DIR (or set MIYABI_HOME) to say which"
    )


def locate_home(
    given: str | os.PathLike[str] | None, socket: str | None, *, strict: bool = True, cwd: Path | None = None
) -> Home:
    """The home a command acts on (see the module's docstring for the order; a named
    home that no ensemble ran in yields to the one the given socket runs, if any).

    Args:
        given: ``--home`` (None when not given; ``$MIYABI_HOME`` is read here).
        socket: ``--socket`` or ``$MIYABI_SOCKET`` as given (None: not given; miyabi's
            default socket is then asked only when the current directory is no home).
        strict: False for commands that only read a home's files or write outside it
            (``report``, ``service``, ``controller``): a named home is taken as it is,
            and the current directory when nothing else is found.
        cwd: the current directory (default: the process's).

    Raises:
        NoEnsemble: the home named by ``given`` or ``$MIYABI_HOME`` was never brought up;
            nothing runs on the socket and the current directory is no home; or several
            homes could be meant.
        UsageError: the socket name is refused (``default``, a path).
        TmuxUnavailable: tmux, needed to ask the socket, is not installed.
    """
    here = (cwd or Path.cwd()).resolve()
    named = given if given not in (None, "") else os.environ.get("MIYABI_HOME") or None
    if named is not None:
        home = Home(Path(os.path.expanduser(str(named))).resolve())
        if strict and not is_ensemble_home(home.root):
            if socket is not None and (found := _one(_homes_on(socket), socket, home.root)) is not None:
                return found  # the ensemble the socket names
            env = os.environ.get("MIYABI_HOME")
            origin = "MIYABI_HOME" if env and str(named) == env else "--home"  # typer fills --home from it too
            raise NoEnsemble(
                f"{origin} {home.root} holds no ensemble (`miyabi up` never ran there: no run/{STATE_FILE}); "
                "run `miyabi up` there first, or give the home an ensemble runs in"
            )
        return home
    if is_ensemble_home(here) and (socket is None or _recorded_socket(here) in (None, socket)):
        return Home(here)
    asked = socket or defaults.SOCKET
    from miyabi.tmux.runner import check_socket_name

    check_socket_name(asked)
    found = _one(_homes_on(asked), asked, here)
    if found is not None:
        return found
    if is_ensemble_home(here) or not strict:
        return Home(here)
    raise NoEnsemble(
        f"no ensemble here: {here} is no miyabi home (`miyabi up` never ran in it) and no ensemble runs on "
        f"socket {asked!r}; run the command in the ensemble's home, or give --home DIR (or set MIYABI_HOME)"
    )
