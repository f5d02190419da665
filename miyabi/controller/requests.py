"""Asking the running controller to act: files under ``run/requests/``.

A command writes ``restart-<agent>`` (or ``reload``, or ``budget-<id>`` for ``miyabi
budget raise``); the controller carries it out on its next pass and answers in
``done-<agent>`` (``done-reload``, ``done-budget-<id>``): ``ok`` or ``failed``, then a
line saying what happened, which the command reads and removes.
Files, not a socket: a request made while the controller restarts waits for the next one.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from miyabi import defaults
from miyabi.controller.process import running_pid
from miyabi.errors import MiyabiError
from miyabi.files import private_dir, write_atomic
from miyabi.home import Home

log = logging.getLogger("miyabi.controller")

RESTART = "restart-"
RELOAD = "reload"
RAISE = "budget-"
PROBE = "probe-"
DONE = "done-"


def requests_dir(home: Home) -> Path:
    return home.run / "requests"


def pending(home: Home) -> bool:
    """Whether a request waits for the controller."""
    d = requests_dir(home)
    return d.is_dir() and any(p.name.startswith((RESTART, RAISE, PROBE)) or p.name == RELOAD for p in d.iterdir())


def request_restart(home: Home, agent: str, wait: float = defaults.REQUEST_WAIT) -> None:
    """Ask the controller to restart ``agent`` now and wait for its answer.

    Raises:
        MiyabiError: no controller runs, it could not restart the agent, or it did not
            answer within ``wait`` seconds.
    """
    if running_pid(home) is None:
        raise MiyabiError(f"no controller runs for {home.root}; start it with `miyabi up` (it restarts agents)")
    d = private_dir(requests_dir(home))
    done = d / f"{DONE}{agent}"
    done.unlink(missing_ok=True)
    write_atomic(d / f"{RESTART}{agent}", "restart\n")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if done.exists():
            ok = done.read_text().strip() == "ok"
            done.unlink(missing_ok=True)
            if not ok:
                raise MiyabiError(f"the controller could not restart {agent}; see {home.logs / 'watchdog.log'}")
            return
        time.sleep(defaults.REQUEST_POLL)
    raise MiyabiError(f"the controller did not answer within {wait:.0f} s; see {home.logs / 'controller.log'}")


def request_reload(home: Home, wait: float = defaults.REQUEST_WAIT) -> str:
    """Ask the running controller to adopt the layout this home runs (``run/up.json``)
    and wait for its answer; return what it did, in one line.

    Raises:
        MiyabiError: no controller runs, the layout did not load (the running one
            stays in place; the message says why), or no answer within ``wait`` s.
    """
    if running_pid(home) is None:
        raise MiyabiError(f"no controller runs for {home.root}; start it with `miyabi up`")
    d = private_dir(requests_dir(home))
    done = d / f"{DONE}{RELOAD}"
    done.unlink(missing_ok=True)
    write_atomic(d / RELOAD, "reload\n")
    return _answer(home, done, wait, "the controller kept its layout: ")


def _answer(home: Home, done: Path, wait: float, refused: str = "") -> str:
    """The controller's answer in ``done`` (removed once read): its line after ``ok``.

    Raises:
        MiyabiError: it answered ``failed`` (``refused`` then its line), or did not
            answer within ``wait`` seconds.
    """
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if done.exists():
            status, _, detail = done.read_text().partition("\n")
            done.unlink(missing_ok=True)
            if status.strip() != "ok":
                raise MiyabiError(f"{refused}{detail.strip()}")
            return detail.strip()
        time.sleep(defaults.REQUEST_POLL)
    raise MiyabiError(f"the controller did not answer within {wait:.0f} s; see {home.logs / 'controller.log'}")


def request_raise(
    home: Home, scope: str, tokens: int | None, cost_usd: float | None, wait: float = defaults.REQUEST_WAIT
) -> str:
    """Ask the running controller to add ``tokens`` and/or ``cost_usd`` to the budget
    ``scope``'s current period (``miyabi budget raise``) and wait for its answer;
    return what it did, in one line.

    Raises:
        MiyabiError: no controller runs, it refused (the message says why), or no
            answer within ``wait`` seconds.
    """
    if running_pid(home) is None:
        raise MiyabiError(f"no controller runs for {home.root}; start it with `miyabi up` (it keeps the budgets)")
    d = private_dir(requests_dir(home))
    name = f"{RAISE}{uuid.uuid4().hex[:12]}"
    done = d / f"{DONE}{name}"
    write_atomic(d / name, json.dumps({"scope": scope, "tokens": tokens, "cost_usd": cost_usd}))
    try:
        return _answer(home, done, wait)
    finally:
        (d / name).unlink(missing_ok=True)  # unanswered: not raised later by surprise


def _serve_raise(home: Home, req: Path, raise_budget: Callable[[str, int | None, float | None], str]) -> None:
    """Answer one ``budget-<id>`` request: ``ok`` and what was raised, or ``failed`` and why."""
    try:
        data = json.loads(req.read_text(encoding="utf-8"))
        answer = "ok\n" + raise_budget(str(data["scope"]), data.get("tokens"), data.get("cost_usd"))
    except MiyabiError as e:
        answer = f"failed\n{e}"
    except (OSError, ValueError, KeyError, TypeError) as e:
        answer = f"failed\nthe request could not be read: {e}"
    except Exception as e:  # answered, never retried by the next controller
        log.warning("budget raise: %s: %s", type(e).__name__, e, exc_info=True)
        answer = f"failed\n{type(e).__name__}: {e}; see {home.logs / 'controller.log'}"
    write_atomic(req.parent / f"{DONE}{req.name}", answer + "\n")
    req.unlink(missing_ok=True)


def serve(
    home: Home,
    restart: Callable[[str], bool],
    reload: Callable[[], str] | None = None,
    raise_budget: Callable[[str, int | None, float | None], str] | None = None,
    probe: Callable[[], str | None] | None = None,
) -> None:
    """Carry out the waiting requests (the controller's side). ``restart(agent)``
    returns whether it worked (False for an agent it does not know); ``reload()``
    returns what it did, or raises MiyabiError saying why it did not; so does
    ``raise_budget(scope, tokens, cost_usd)``; ``probe()`` returns the answer to an
    upgrade's health probe (``probe-<id>``, from the keep-alive: see
    :mod:`miyabi.controller.upgrade`), or None when it cannot answer yet (the request
    waits)."""
    d = requests_dir(home)
    if not d.is_dir():
        return
    for req in sorted(d.iterdir()):
        if req.name.startswith(PROBE) and probe is not None:
            answer = probe()
            if answer is not None:
                write_atomic(d / f"{DONE}{req.name}", answer)
                req.unlink(missing_ok=True)
            continue
        if req.name.startswith(RAISE) and raise_budget is not None:
            _serve_raise(home, req, raise_budget)
            continue
        if req.name == RELOAD and reload is not None:
            try:
                answer = "ok\n" + reload()
            except MiyabiError as e:
                answer = f"failed\n{e}"
            except Exception as e:  # answered, never retried by the next controller
                log.warning("reload: %s: %s", type(e).__name__, e, exc_info=True)  # the traceback the answer points to
                answer = f"failed\n{type(e).__name__}: {e}; see {home.logs / 'controller.log'}"
            write_atomic(d / f"{DONE}{RELOAD}", answer + "\n")
            req.unlink(missing_ok=True)
            continue
        if not req.name.startswith(RESTART):
            continue
        agent = req.name[len(RESTART) :]
        ok = restart(agent)
        write_atomic(d / f"{DONE}{agent}", "ok\n" if ok else "failed\n")
        req.unlink(missing_ok=True)
