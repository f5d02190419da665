"""The home's databases (real SQLite files, real processes): private files, the
transactions, and each domain's migrations, on fresh files and on files older
versions of miyabi wrote."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for

from miyabi.bus import tasks as bus_tasks
from miyabi.database import LAYOUT, AddColumn, Database, Schema, statements
from miyabi.notify.outbox import Outbox
from miyabi.pipeline import followups, records
from miyabi.pipeline.records import Records, WorktreeState
from miyabi.work.store import Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

DOMAINS = {"work", "pipeline", "follow-ups", "bus"}
"""The domains that keep tables in ``miyabi.db``."""


def runs(db: Database) -> list[str]:
    return [r[0] for r in db.rows("SELECT what FROM runs ORDER BY rowid")]


def counted(what: str) -> Any:
    """A step that records that it ran."""

    def step(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS runs (what TEXT)")
        db.execute("INSERT INTO runs VALUES (?)", (what,))

    return step


def layout(path: Path) -> dict[str, Any]:
    """Every table's columns (by name: type, not null, default, primary key) and indexes
    (name → unique, partial, columns) of the file at ``path``, but the database module's own."""
    c = sqlite3.connect(path)
    try:
        out: dict[str, Any] = {}
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for t in tables:
            if t.startswith("sqlite_") or t == "schema_versions":
                continue
            cols = {r[1]: (r[2], r[3], r[4], r[5]) for r in c.execute(f"PRAGMA table_info({t})")}
            idx = {
                r[1]: (r[2], r[4], [x[2] for x in c.execute(f"PRAGMA index_info('{r[1]}')")])
                for r in c.execute(f"PRAGMA index_list({t})")
            }
            out[t] = (cols, idx)
        return out
    finally:
        c.close()


def load(sql: Path, path: Path) -> None:
    """Make the file an older miyabi wrote, from its dump."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c = sqlite3.connect(path)
    c.executescript(sql.read_text(encoding="utf-8"))
    c.execute("PRAGMA journal_mode=WAL")
    c.close()


def every_domain(store: Store) -> None:
    for schema in (records.SCHEMA, followups.SCHEMA, bus_tasks.SCHEMA):
        store.migrate(schema)


@pytest.fixture
def umask0() -> Iterator[None]:
    """No umask: a file is as open as its creator asks (SQLite asks 0644)."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_database_gets_every_step_once_and_records_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "x.db"
    schema = Schema("d", (counted("one"), "CREATE TABLE t (a INTEGER); CREATE INDEX t_a ON t(a)", counted("two")))
    db = Database(path, schema)
    assert (runs(db), db.versions()) == (["one", "two"], {"d": 3})
    assert db.rows("PRAGMA user_version")[0][0] == LAYOUT
    assert db.rows("PRAGMA journal_mode")[0][0] == "wal"
    assert db.rows("PRAGMA foreign_keys")[0][0] == 1
    db.migrate(schema)
    db.close()
    again = Database(path, schema)  # another connection, later
    assert (runs(again), again.versions()) == (["one", "two"], {"d": 3})


def test_a_domain_migrates_once_per_connection(tmp_path: Path) -> None:
    """After its first use, a domain's migration runs no SQL (fix tasks and records
    ask for their tables on every call)."""
    store = Store(tmp_path / "miyabi.db")
    Records(store)
    seen: list[str] = []
    store.connection.set_trace_callback(seen.append)
    Records(store)
    store.migrate(followups.SCHEMA)
    first = len(seen)
    store.migrate(followups.SCHEMA)
    followups.file_fix(store, None, None, tmp_path, "cause", "fix it", "why")
    followups.file_fix(store, None, None, tmp_path, "cause", "fix it", "why")
    assert first > 0  # the follow-ups' tables were made on this connection's first ask
    assert [s for s in seen[first:] if "schema_versions" in s or "CREATE" in s] == []
    assert [s for s in seen[:first] if "CREATE" in s and "instances" in s] == []  # pipeline: done already


def test_a_step_that_fails_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        Database(path, Schema("d", (counted("one"), "INSERT INTO nowhere VALUES (1)")))
    db = Database(path)
    assert db.versions() == {}
    assert db.rows("SELECT name FROM sqlite_master WHERE name='runs'") == []


def test_a_domain_added_later_to_an_existing_file_gets_only_its_own_steps(tmp_path: Path) -> None:
    path = tmp_path / "state" / "miyabi.db"
    store = Store(path)
    t = store.add("before the pipeline")
    work = store.versions()["work"]
    Records(store).add_worktree(Path("/repo"), "b", tmp_path / "wt", "main", t.id)
    assert store.versions() == {"work": work, "pipeline": records.SCHEMA.version}
    store.close()
    # a later miyabi adds a step to one domain and a new domain: only those run
    grown = Schema("pipeline", (*records.SCHEMA.steps, counted("pipeline 3")))
    db = Database(path, grown, Schema("new", (counted("new 1"),)))
    assert runs(db) == ["pipeline 3", "new 1"]
    assert db.versions() == {"work": work, "pipeline": records.SCHEMA.version + 1, "new": 1}
    assert Records(Store(path)).worktree(Path("/repo"), "b") is not None


def test_a_file_a_newer_miyabi_migrated_is_used_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    Database(path, Schema("d", (counted("one"), counted("two")))).close()
    older = Database(path, Schema("d", (counted("one"),)))
    assert (runs(older), older.versions()) == (["one", "two"], {"d": 2})


def test_a_database_miyabi_wrote_before_schema_versions_is_adopted(tmp_path: Path) -> None:
    """The dump of every table the previous miyabi made: opened, it keeps its rows,
    gets its versions recorded, and has the very layout of a fresh one."""
    old = tmp_path / "old" / "state" / "miyabi.db"
    load(FIXTURES / "miyabi_db_before_schema_versions.sql", old)
    store = Store(old)
    every_domain(store)
    assert set(store.versions()) == DOMAINS
    assert [t.title for t in store.query()] == ["fix the crash", "write docs", "issue three", "job j", "pool task"]
    job = store.get(4)
    assert (job.state, job.job_started, store.job_steps(4)[0]["command"]) == ("in_progress", 1, "true")
    assert store.get(1).labels == ("bug", "priority:high") and store.depends_on(2) == [1]
    assert store.outbox() == [(1, 3, "done", "fixed")]
    assert [w.state for w in Records(store).worktrees()] == [WorktreeState.REVIEW]
    assert store.rows("SELECT value FROM bus_meta WHERE key='nonce'")[0][0] == "cafe0123"
    t = store.add("after the upgrade", labels=["priority:low"])
    assert (t.id, store.get(t.id).state) == (6, "queued")
    store.close()
    assert mode(old) == 0o600  # it was 0644 (sqlite3's own default): tightened

    fresh = tmp_path / "fresh" / "miyabi.db"
    new = Store(fresh)
    every_domain(new)
    new.close()
    assert layout(old) == layout(fresh)


def test_a_notify_database_miyabi_wrote_before_schema_versions_is_adopted(tmp_path: Path) -> None:
    old = tmp_path / "old"
    load(FIXTURES / "notify_db_before_schema_versions.sql", old / "state" / "notify.db")
    outbox = Outbox(old)
    assert (outbox.cursor("events"), [n["key"] for n in outbox.all()]) == (42, ["task-done:3"])
    assert outbox.db.versions() == {"notify": 1}
    outbox.close()
    Outbox(tmp_path / "fresh").close()
    assert layout(old / "state" / "notify.db") == layout(tmp_path / "fresh" / "state" / "notify.db")


def test_a_database_from_before_the_later_columns_gets_them_with_their_backfill(tmp_path: Path) -> None:
    path = tmp_path / "miyabi.db"
    c = sqlite3.connect(path)
    c.executescript("""
CREATE TABLE tasks (id INTEGER PRIMARY KEY, source TEXT NOT NULL, repo TEXT, number INTEGER, url TEXT,
  title TEXT NOT NULL, body TEXT NOT NULL DEFAULT '', labels TEXT NOT NULL DEFAULT '[]',
  priority TEXT NOT NULL DEFAULT 'normal', state TEXT NOT NULL DEFAULT 'queued', agent TEXT,
  attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL,
  claim TEXT NOT NULL DEFAULT '', UNIQUE (source, repo, number));
INSERT INTO tasks (title, source, labels, priority, created, updated) VALUES
  ('a', 'local', '["priority:low"]', 'normal', 1, 1), ('b', 'local', '[]', 'high', 2, 2);
""")
    c.close()
    store = Store(path)
    assert [t.title for t in store.queued()] == ["b", "a"]  # the rank was filled in
    store.close()
    fresh = tmp_path / "fresh.db"
    Store(fresh).close()
    assert layout(path) == layout(fresh)


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from miyabi.database import Database, Schema

    path, role, flags = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

    def wait(name):
        deadline = time.monotonic() + 60
        while not (flags / name).exists():
            if time.monotonic() > deadline:
                sys.exit(f"{role}: no {name} within 60 s")
            time.sleep(0.01)

    def step(db):
        db.execute("CREATE TABLE IF NOT EXISTS runs (what TEXT)")
        db.execute("INSERT INTO runs VALUES (?)", (role,))
        if role == "A":
            (flags / "a-migrating").touch()
            wait("go")

    db = Database(path)
    if role == "B":
        def traced(sql):
            if sql.startswith("BEGIN IMMEDIATE"):
                (flags / "b-waits").touch()
        db.connection.set_trace_callback(traced)
    db.migrate(Schema("race", (step,)))
    print(db.versions()["race"], [r[0] for r in db.rows("SELECT what FROM runs")])
""")


def test_two_processes_migrating_one_file_at_once_run_each_step_once(tmp_path: Path) -> None:
    """A reads version 0 and migrates; B reads version 0 too (A has not committed)
    and waits for the write lock; A commits: B reads the version again under the lock
    and runs nothing."""
    path, flags = tmp_path / "x.db", tmp_path / "flags"
    flags.mkdir()
    Database(path).close()

    def child(role: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), role, str(flags)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    a = child("A")
    b = None
    try:
        wait_for(lambda: (flags / "a-migrating").exists(), timeout=60, what="A migrating")
        b = child("B")
        wait_for(lambda: (flags / "b-waits").exists(), timeout=60, what="B waiting for the write lock")
        (flags / "go").touch()
        outs = [p.communicate(timeout=60) for p in (a, b)]
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
    assert [(p.returncode, err) for p, (_, err) in zip((a, b), outs, strict=True)] == [(0, ""), (0, "")]
    assert [out.strip() for out, _ in outs] == ["1 ['A']", "1 ['A']"]


OPENER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from miyabi.bus import tasks as bus_tasks
    from miyabi.pipeline import followups, records
    from miyabi.work.store import Store

    path, go = Path(sys.argv[1]), Path(sys.argv[2])
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit("no go within 60 s")
        time.sleep(0.005)
    store = Store(path)
    for schema in (records.SCHEMA, followups.SCHEMA, bus_tasks.SCHEMA):
        store.migrate(schema)
    store.add("from " + sys.argv[3])
    print(sorted(store.versions().items()))
""")


def test_processes_opening_an_old_database_at_once_all_upgrade_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "miyabi.db"
    load(FIXTURES / "miyabi_db_before_schema_versions.sql", path)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, str(path), str(go), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [(p.returncode, err) for p, (_, err) in zip(procs, outs, strict=True)] == [(0, "")] * 4
    store = Store(path)
    assert {out.strip() for out, _ in outs} == {str(sorted(store.versions().items()))}
    assert sorted(t.title for t in store.query() if t.title.startswith("from ")) == [f"from {i}" for i in range(4)]


def test_the_database_and_its_wal_and_shm_are_private_whatever_the_umask(tmp_path: Path, umask0: None) -> None:
    store = Store(tmp_path / "state" / "miyabi.db")
    store.add("a task")
    outbox = Outbox(tmp_path)
    outbox.enqueue({"events": 1}, [], 0.0)
    for name in ("miyabi.db", "notify.db"):
        files = [tmp_path / "state" / f"{name}{end}" for end in ("", "-wal", "-shm")]
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    assert mode(tmp_path / "state") == 0o700


def test_a_looser_database_is_tightened_without_being_opened(tmp_path: Path, umask0: None) -> None:
    """The -wal and -shm of a database in use too: only chmod-ed, so the connection
    already open keeps its locks and its commits."""
    path = tmp_path / "miyabi.db"
    first = Store(path)
    t = first.add("one")
    files = [path, tmp_path / "miyabi.db-wal", tmp_path / "miyabi.db-shm"]
    for f in files:
        f.chmod(0o644)
    second = Store(path)
    assert [mode(f) for f in files] == [0o600] * 3
    first.set_state(t.id, "cancelled", "after the second opened")
    second.close()
    assert Store(path).get(t.id).state == "cancelled"


def test_a_nested_transaction_is_a_savepoint_of_the_outer_one(tmp_path: Path) -> None:
    db = Database(tmp_path / "x.db", Schema("d", ("CREATE TABLE t (a INTEGER)",)))
    before = db.version()[1]
    with db.tx() as c:
        c.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(ValueError), db.tx() as inner:
            inner.execute("INSERT INTO t VALUES (2)")
            raise ValueError("undo only this one")
        with db.tx() as inner:
            inner.execute("INSERT INTO t VALUES (3)")
    assert [r[0] for r in db.rows("SELECT a FROM t ORDER BY a")] == [1, 3]
    assert db.version()[1] == before + 1  # one commit


def test_a_commit_by_another_connection_changes_the_version(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    schema = Schema("d", ("CREATE TABLE t (a INTEGER)",))
    one, two = Database(path, schema), Database(path, schema)
    seen = one.version()
    assert one.version() == seen
    with two.tx() as c:
        c.execute("INSERT INTO t VALUES (1)")
    assert one.version() != seen


def test_add_column_skips_a_column_the_table_has(tmp_path: Path) -> None:
    db = Database(
        tmp_path / "x.db", Schema("d", ("CREATE TABLE t (a INTEGER, b TEXT); INSERT INTO t VALUES (1, 'x')",))
    )
    with db.tx() as c:
        AddColumn("t", "b", "TEXT", "UPDATE t SET b = 'backfilled'")(c)
        AddColumn("t", "c", "INTEGER NOT NULL DEFAULT 0", "UPDATE t SET c = a + 1")(c)
    assert [tuple(r) for r in db.rows("SELECT a, b, c FROM t")] == [(1, "x", 2)]


def test_statements_are_cut_where_sqlite_ends_them() -> None:
    script = """
CREATE TABLE t (a TEXT DEFAULT 'x;y');
CREATE TRIGGER t_a AFTER INSERT ON t BEGIN UPDATE t SET a = 'z;'; END;
INSERT INTO t VALUES ('1')
"""
    assert statements(script) == [
        "CREATE TABLE t (a TEXT DEFAULT 'x;y');",
        "CREATE TRIGGER t_a AFTER INSERT ON t BEGIN UPDATE t SET a = 'z;'; END;",
        "INSERT INTO t VALUES ('1')",
    ]
    assert statements("  ;\n") == []
