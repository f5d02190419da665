"""The shape of the package, read from its own source: imports point one way (the
layers in docs/architecture.md, "The package map"), no module cycle, tmux command words only in
``miyabi/tmux/``, typer and rich only in ``miyabi/cli/``, SQLite connections and
``CREATE TABLE`` only in ``miyabi/database.py``."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "miyabi"

LAYERS: list[list[str]] = [
    ["miyabi.__main__"],
    ["miyabi.cli"],
    ["miyabi.web"],
    ["miyabi.controller", "miyabi.worker"],
    ["miyabi.pipeline", "miyabi.reports", "miyabi.notify", "miyabi.bus"],
    ["miyabi.supervision", "miyabi.work"],
    ["miyabi.messaging"],
    ["miyabi.tmux"],
    ["miyabi.config"],
    ["miyabi.agents"],
    [
        "miyabi.home",
        "miyabi.events",
        "miyabi.database",
        "miyabi.files",
        "miyabi.times",
        "miyabi.backoff",
        "miyabi.stopping",
        "miyabi.errors",
        "miyabi.defaults",
        "miyabi",
    ],
]
"""Top to bottom, as the package map in docs/architecture.md lists them. A module may import
its own unit (its package; the base modules count as one unit) and any unit of a
lower layer; never a peer unit of its own layer, never a higher one."""

BASE = set(LAYERS[-1])

TMUX_WORDS = {
    "attach-session",
    "capture-pane",
    "copy-mode",
    "display-message",
    "has-session",
    "kill-pane",
    "kill-server",
    "kill-session",
    "list-panes",
    "list-sessions",
    "list-windows",
    "load-buffer",
    "new-session",
    "new-window",
    "paste-buffer",
    "pipe-pane",
    "resize-pane",
    "respawn-pane",
    "select-layout",
    "select-pane",
    "select-window",
    "send-keys",
    "set-buffer",
    "set-option",
    "show-environment",
    "show-options",
    "split-window",
}
"""tmux command names: as a string of their own (an argument word), only ``miyabi/tmux/`` may write them."""


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: Iterable[str]) -> set[str]:
    """miyabi modules ``path`` imports, at any depth (lazy imports inside functions count)."""
    known = set(known)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "miyabi"}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.split(".")[0] == "miyabi"
        ):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return {m for m in out if m in known}


def unit_of(module: str) -> tuple[int, str]:
    """(layer index, unit) of a module: its package's place in LAYERS."""
    for i, layer in enumerate(LAYERS):
        for unit in sorted(layer, key=len, reverse=True):
            if module == unit or module.startswith(unit + "."):
                return i, ("base" if unit in BASE else unit)
    raise AssertionError(f"{module} is in no layer; add its package to LAYERS and to docs/architecture.md")


def layer_violations(graph: Mapping[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(graph.items()):
        (li, ui) = unit_of(src)
        for dst in sorted(targets):
            (lj, uj) = unit_of(dst)
            if ui != uj and lj <= li:
                bad.append(f"{src} imports {dst} ({'a peer' if lj == li else 'a higher layer'})")
    return bad


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, mods) - {name} for name, path in mods.items()}


def test_the_checker_catches_a_cycle_and_an_upward_import() -> None:
    fake = {"miyabi.tmux.a": {"miyabi.messaging.b"}, "miyabi.messaging.b": {"miyabi.tmux.a"}, "miyabi.config.c": set()}
    assert cycles(fake) == [["miyabi.messaging.b", "miyabi.tmux.a"]]
    assert layer_violations(fake) == ["miyabi.tmux.a imports miyabi.messaging.b (a higher layer)"]
    assert layer_violations({"miyabi.work.x": {"miyabi.supervision.y"}}) == [
        "miyabi.work.x imports miyabi.supervision.y (a peer)"
    ]


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_imports_point_down_the_documented_layers() -> None:
    assert layer_violations(graph()) == []


def test_the_package_map_documents_every_layer() -> None:
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = page.split("\n## The package map\n", 1)[1].split("\n## ", 1)[0]
    for layer in LAYERS:
        for unit in layer:
            if unit not in ("miyabi", "miyabi.__main__"):
                assert f"{unit.removeprefix('miyabi.')}" in section, f"{unit} missing from docs/architecture.md"


def _strings(tree: ast.AST) -> Iterable[ast.Constant]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node


@pytest.mark.parametrize("name", sorted(modules()))
def test_only_the_tmux_package_speaks_tmux(name: str) -> None:
    if name.startswith("miyabi.tmux"):
        return
    tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
    words = sorted({n.value for n in _strings(tree) if n.value in TMUX_WORDS})
    assert words == [], f"{name} writes tmux commands {words}: give miyabi/tmux/ a verb for it"


@pytest.mark.parametrize("name", sorted(modules()))
def test_only_the_cli_imports_typer_and_rich(name: str) -> None:
    if name.startswith("miyabi.cli"):
        return
    tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    assert not found & {"typer", "rich", "click"}, f"{name} imports {sorted(found & {'typer', 'rich', 'click'})}"


def test_every_default_is_defined_once() -> None:
    """A second assignment of a name in defaults.py silently replaces the first one's
    value for every module that uses it (a pipeline timeout once did so to delivery's)."""
    tree = ast.parse((PACKAGE / "defaults.py").read_text(encoding="utf-8"))
    names = [
        t.id
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    ]
    assert sorted({n for n in names if names.count(n) > 1}) == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_messages_enter_an_inbox_only_through_enqueue(name: str) -> None:
    """``enqueue`` logs the ``enqueued`` event the report and ``/metrics`` count
    deliveries from; an ``inbox(...).put(...)`` elsewhere would go uncounted."""
    if name == "miyabi.messaging.mailbox":
        return
    tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
    puts = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "put"
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "inbox"
    ]
    assert puts == [], f"{name} puts messages in an inbox at lines {puts}: use miyabi.messaging.mailbox.enqueue"


def _event_name_problems(tree: ast.AST) -> list[str]:
    """Where ``tree`` names an event of the event log by a string: the kind given to
    ``append_event`` or a writer's ``event(...)``, a string that is a hyphenated event
    name (``"agent-died"``), or a string compared with an event's ``event`` field."""
    from miyabi.events import EventKind

    names = {str(k) for k in EventKind}
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }

    def event_field(node: ast.AST) -> bool:
        text = ast.unparse(node)
        return text.endswith(('.get("event")', "['event']", '["event"]', ".get('event')")) or text in ("kind", "event")

    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            at = 1 if called == "append_event" else 0 if called == "event" else None
            if at is not None and len(node.args) > at and isinstance(node.args[at], (ast.Constant, ast.JoinedStr)):
                out.append(f"line {node.lineno}: {called}({ast.unparse(node.args[at])}, …)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if "-" in node.value and node.value in names:
                out.append(f"line {node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(event_field(s) for s in sides):
                for s in sides:
                    elts = s.elts if isinstance(s, (ast.Tuple, ast.List, ast.Set)) else [s]
                    out += [
                        f"line {node.lineno}: compared with {e.value!r}"
                        for e in elts
                        if isinstance(e, ast.Constant) and isinstance(e.value, str) and e.value in names
                    ]
    return sorted(set(out))


def test_the_event_name_check_catches_strings() -> None:
    tree = ast.parse(
        'append_event(home, "agent-died", pid=1)\n'
        'self.event(f"pull-request-{state}")\n'
        'SEEN = {"gave-up"}\n'
        'if e.get("event") == "state": pass\n'
        'if kind in ("usage", EventKind.TYPING): pass\n'
        "append_event(home, EventKind.AGENT_DIED)\n"
        'x = state == "delivered"\n'
    )
    lines = sorted({p.split(":")[0] for p in _event_name_problems(tree)})
    assert lines == ["line 1", "line 2", "line 3", "line 4", "line 5"]


@pytest.mark.parametrize("name", sorted(modules()))
def test_events_are_named_by_their_enum(name: str) -> None:
    """Every event is written and read as a member of ``miyabi.events.EventKind``, so a
    renamed or misspelt event fails the type check instead of going unnoticed."""
    if name == "miyabi.events":
        return
    problems = _event_name_problems(ast.parse(modules()[name].read_text(encoding="utf-8")))
    assert problems == [], f"{name} names events by string: {problems}; use miyabi.events.EventKind"


CREATE_TABLE = re.compile(r"\bCREATE\s+(TEMP\s+|TEMPORARY\s+)?TABLE\b", re.IGNORECASE)


def database_calls(source: str) -> list[str]:
    """Where ``source`` opens a SQLite connection (``sqlite3.connect``, ``connect``
    imported from sqlite3) or executes ``CREATE TABLE`` (a ``execute``,
    ``executemany`` or ``executescript`` of SQL that holds it, given as text or as a
    name bound to such text): ``LINE: what`` each. Tables are declared as a
    ``miyabi.database.Schema``'s steps, which only the database module runs."""
    tree = ast.parse(source)
    sql_names = {
        t.id
        for node in ast.walk(tree)
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and CREATE_TABLE.search(node.value.value)
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    connects = {
        a.asname or a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "sqlite3"
        for a in node.names
        if a.name == "connect"
    }

    def creates(arg: ast.expr) -> bool:
        if isinstance(arg, ast.Name):
            return arg.id in sql_names
        if isinstance(arg, ast.Attribute):
            return arg.attr in sql_names
        return any(
            isinstance(n, ast.Constant) and isinstance(n.value, str) and bool(CREATE_TABLE.search(n.value))
            for n in ast.walk(arg)
        )

    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (
            isinstance(f, ast.Attribute)
            and f.attr == "connect"
            and isinstance(f.value, ast.Name)
            and f.value.id == "sqlite3"
        ) or (isinstance(f, ast.Name) and f.id in connects):
            out.append(f"{node.lineno}: sqlite3.connect")
        elif (
            isinstance(f, ast.Attribute)
            and f.attr in ("execute", "executemany", "executescript")
            and node.args
            and creates(node.args[0])
        ):
            out.append(f"{node.lineno}: {f.attr} CREATE TABLE")
    return sorted(out, key=lambda s: int(s.split(":")[0]))


def test_the_database_checker_catches_a_connection_and_a_create_table() -> None:
    source = """
import sqlite3
from sqlite3 import connect as c
SCHEMA = "CREATE TABLE IF NOT EXISTS t (a)"
DECLARED = "create table u (b)"
def f(store):
    db = sqlite3.connect("x.db")
    c("y.db")
    store.db.executescript(SCHEMA)
    db.execute(f"CREATE TEMP TABLE v (c)")
    db.execute("SELECT 1 FROM t")
"""
    assert database_calls(source) == [
        "7: sqlite3.connect",
        "8: sqlite3.connect",
        "9: executescript CREATE TABLE",
        "10: execute CREATE TABLE",
    ]


@pytest.mark.parametrize("name", sorted(modules()))
def test_only_the_database_module_connects_and_creates_tables(name: str) -> None:
    """One module owns the databases' connections (private files, WAL, transactions)
    and runs each domain's migration steps, once; a domain declares its tables as a
    ``miyabi.database.Schema`` and never runs ``CREATE TABLE`` itself."""
    if name == "miyabi.database":
        return
    found = database_calls(modules()[name].read_text(encoding="utf-8"))
    assert found == [], f"{name}: {found}: open miyabi.database.Database and declare tables as a Schema"
