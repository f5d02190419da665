"""Catch-all handlers: a loop or a thread that catches every ``Exception`` logs the
traceback (a bug must leave more than one line behind), and a :class:`~miyabi.stopping.Stopped`
is never taken for an error."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

from helpers import wait_for, write_layout

from miyabi.config.loader import load
from miyabi.events import read_events
from miyabi.pipeline.runner import Pipeline
from miyabi.stopping import Stopped
from miyabi.work.dispatch import Dispatcher
from miyabi.work.store import Store

ROOT = Path(__file__).resolve().parents[2] / "miyabi"

QUIET = {
    ("bus/info.py", "overview"): "a probe of optional server facts (CONFIG may be refused): unknown is an answer",
    ("web/auth.py", "cookie_token"): "garbage in a Cookie header is no token, not a fault",
    ("cli/hook.py", "main"): "a hook must never fail the agent; the one line goes to the hook's stderr",
    ("worker.py", "run_job"): "the line is the built-in worker's answer in its own pane, its only output",
    ("worker.py", "finish"): "the line is the built-in worker's answer in its own pane, its only output",
}
"""(module under miyabi/, function) → why its catch-all answers with a line and no traceback."""


def _catches_all(handler: ast.ExceptHandler) -> bool:
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return handler.type is None or any(
        isinstance(t, ast.Name) and t.id in ("Exception", "BaseException") for t in types
    )


def _keeps_the_traceback(handler: ast.ExceptHandler) -> bool:
    """Re-raises (``raise`` alone), or logs with ``log.exception`` or ``exc_info=True``."""
    for node in ast.walk(ast.Module(body=handler.body, type_ignores=[])):
        if isinstance(node, ast.Raise) and node.exc is None:
            return True
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr == "exception":
                return True
            if any(k.arg == "exc_info" and isinstance(k.value, ast.Constant) and k.value.value for k in node.keywords):
                return True
    return False


def silent_catch_alls(source: str) -> list[tuple[str, int]]:
    """(function, line) of each catch-all handler in ``source`` that neither re-raises nor
    logs the traceback."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(child, ast.ExceptHandler) and _catches_all(child) and not _keeps_the_traceback(child):
                found.append((function, child.lineno))
            visit(child, name)

    visit(ast.parse(source), "<module>")
    return found


def test_the_checker_finds_a_silent_catch_all_and_passes_a_logged_one() -> None:
    source = (
        "def quiet():\n"
        "    try:\n        f()\n    except Exception as e:\n        log.warning('%s', e)\n"
        "def loud():\n"
        "    try:\n        f()\n    except Exception:\n        log.warning('x', exc_info=True)\n"
        "    try:\n        f()\n    except (OSError, Exception):\n        log.exception('x')\n"
        "    try:\n        f()\n    except BaseException:\n        undo()\n        raise\n"
        "    try:\n        f()\n    except OSError as e:\n        log.warning('%s', e)\n"
    )
    assert silent_catch_alls(source) == [("quiet", 4)]


def test_every_catch_all_logs_the_traceback_or_re_raises() -> None:
    silent = []
    used = set()
    for path in sorted(ROOT.rglob("*.py")):
        module = path.relative_to(ROOT).as_posix()
        for function, line in silent_catch_alls(path.read_text(encoding="utf-8")):
            if (module, function) in QUIET:
                used.add((module, function))
            else:
                silent.append(f"miyabi/{module}:{line} ({function})")
    assert silent == [], "log with exc_info=True or log.exception, or re-raise; a reasoned exception goes in QUIET"
    assert used == set(QUIET), f"QUIET names handlers that are gone: {set(QUIET) - used}"


def test_a_pipeline_job_ended_by_the_stop_is_no_failure(tmp_path: Path) -> None:
    """A job waiting on GitHub when the controller stops raises Stopped: that is neither a
    failed try (no ``pipeline-error`` event, no count toward giving up) nor logged as one."""
    home = tmp_path / "home"
    (home / "state").mkdir(parents=True)
    layout = load(write_layout(tmp_path / "layout.yaml", ["w"]))
    store = Store(home / "state" / "miyabi.db")
    done = threading.Event()
    pipeline = Pipeline(store, layout, home, dispatch=Dispatcher(store, home), changed=done.set)
    try:

        def stopped(_: object) -> None:
            raise Stopped()

        pipeline._submit("prepare:w", stopped, None)
        wait_for(done.is_set, what="the job ended")
        assert pipeline.failures == {}
        assert pipeline.not_before == {}
        assert [e for e in read_events(home) if e.get("event") == "pipeline-error"] == []
    finally:
        pipeline.executor.shutdown(wait=True)
        store.close()
