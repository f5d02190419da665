"""The home's SQLite databases: connections, transactions, and each domain's tables.

A home keeps two database files under ``state/``: ``miyabi.db`` (the tasks, and the
records other services keep beside them: pool instances, worktrees, follow-ups, the
bus's tasks) and ``notify.db`` (the notices' queue, apart so that its writes do not
look like task changes). Every connection to them is a :class:`Database`, and no other
module opens one or creates a table.

**A connection** is shared by one process's threads (serialised by its lock). The file
is created 0600 before SQLite opens it, and SQLite gives its ``-wal`` and ``-shm``
files the database's mode; an existing file (and its ``-wal`` and ``-shm``) looser
than that is only ``chmod``-ed, never opened: closing any descriptor of a database
file drops every POSIX lock this process holds on it (other connections of this
process included), and another process closing its connection then believes it is
the last, checkpoints and deletes the WAL under our feet
(sqlite.org/howtocorrupt.html, 2.2). The database is in WAL mode (readers run beside
the one writer), enforces foreign keys, and waits ``defaults.DB_BUSY_TIMEOUT`` for
another process's write. Each change is one :meth:`Database.tx` (``BEGIN
IMMEDIATE``); :meth:`Database.version` tells whether anyone committed since.

**Each domain's tables** are a :class:`Schema`: the domain's name and the ordered
steps (SQL, or a function of the connection) that build its tables from nothing. A
released step never changes: a new column or index is a new step at the end, and steps
only add (so a file a newer miyabi migrated still works with an older one).
:meth:`Database.migrate` applies the steps a file has not had yet, once per connection
(then it costs a set lookup): it reads the domain's version, and when steps are
missing takes the write lock (``BEGIN IMMEDIATE``), reads the version again (another
process may have migrated meanwhile: two processes opening an old file at once run
each step once), runs the missing steps and records the new version, all in that one
transaction (a failing step leaves the file as it was).

**Where the versions are kept.** SQLite keeps one number per file for this,
``PRAGMA user_version``. But several domains share ``miyabi.db``, from different layers
(``work`` below ``pipeline`` and ``bus``, which it must not know), and a domain may
arrive years later in an existing file (the bus's tables appear when a home first
joins a bus): one number would need one order of every domain's steps, known to the
lowest layer. So each domain's version is a row of the ``schema_versions`` table
(domain → how many of its steps the file has had: the idea of Django's per-app
``django_migrations`` records), and ``user_version`` is the version of this module's
own layout (1: ``schema_versions`` exists). A file miyabi wrote before versions were
recorded has ``user_version`` 0 and tables but no versions: each domain then runs all
its steps, so the steps written before this module (each domain's first ones) are
idempotent: ``CREATE … IF NOT EXISTS``, and :class:`AddColumn`, which skips a column
the table already has.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.files import private_dir

LAYOUT = 1
"""This module's own layout of a database file (its ``PRAGMA user_version``): 1 is the
``schema_versions`` table."""

VERSIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_versions (
  domain TEXT PRIMARY KEY,
  version INTEGER NOT NULL
)
"""

Step = str | Callable[[sqlite3.Connection], None]
"""One migration step: SQL (one or more statements), or a function run with the
connection inside the migration's transaction."""


@dataclass(frozen=True)
class Schema:
    """One domain's tables in a database file.

    Attributes:
        domain: its name in ``schema_versions`` (``work``, ``pipeline``, …): unique
            among the domains sharing a file, and never renamed.
        steps: the ordered migration steps that build its tables from nothing; a
            file's version for the domain is how many of them it has had.
    """

    domain: str
    steps: tuple[Step, ...]

    @property
    def version(self) -> int:
        """The version a file has once every step ran."""
        return len(self.steps)


@dataclass(frozen=True)
class AddColumn:
    """A step that adds ``column`` to ``table`` with the SQL ``declaration``
    (``INTEGER NOT NULL DEFAULT 0``), then runs ``backfill`` (SQL filling it in for
    the rows already there); a table that has the column already (a file written
    before versions were recorded) is left as it is, backfill included."""

    table: str
    column: str
    declaration: str
    backfill: str = ""

    def __call__(self, db: sqlite3.Connection) -> None:
        if self.column in {r[1] for r in db.execute(f"PRAGMA table_info({self.table})")}:
            return
        db.execute(f"ALTER TABLE {self.table} ADD COLUMN {self.column} {self.declaration}")
        for sql in statements(self.backfill):
            db.execute(sql)


def statements(script: str) -> list[str]:
    """The SQL statements of ``script``, one string each (``sqlite3.complete_statement``
    decides where one ends, so a ``;`` inside a string or a trigger does not cut).
    ``executescript`` cannot serve: it commits the open transaction first."""
    out: list[str] = []
    text = ""
    *pieces, last = script.split(";")
    for piece in pieces:
        text += piece + ";"
        if sqlite3.complete_statement(text):
            if text.strip(" \t\r\n;"):
                out.append(text.strip())
            text = ""
    if (text + last).strip():
        out.append((text + last).strip())
    return out


def _run(db: sqlite3.Connection, step: Step) -> None:
    if isinstance(step, str):
        for sql in statements(step):
            db.execute(sql)
    else:
        step(db)


def _private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it is missing; else tighten it, and its
    ``-wal`` and ``-shm``, without opening them (see the module's docstring)."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, defaults.FILE_MODE)
    except FileExistsError:
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            try:
                if os.stat(p).st_mode & 0o077:
                    os.chmod(p, defaults.FILE_MODE)
            except FileNotFoundError:
                pass
        return
    try:  # whatever the umask: the WAL and shared memory take this mode from it
        if stat.S_IMODE(os.fstat(fd).st_mode) != defaults.FILE_MODE:
            os.fchmod(fd, defaults.FILE_MODE)
    finally:
        os.close(fd)  # no connection can hold a lock on a file that did not exist


class Database:
    """One connection to a SQLite database file of the home, with the tables of the
    given domains (see the module's docstring).

    Args:
        path: the file (created 0600, in a 0700 directory, when missing).
        schemas: domains whose tables the file must have (:meth:`migrate` each).

    Raises:
        sqlite3.Error: the file cannot be opened or migrated (not a database, a disk
            full, locked past the busy timeout).
        OSError: the file or its directory cannot be created.
    """

    def __init__(self, path: Path, *schemas: Schema) -> None:
        _private(path)
        self.path = path
        self.lock = threading.RLock()
        """Serialises this connection's use: the controller's threads share it."""
        self.connection = sqlite3.connect(
            str(path), timeout=defaults.DB_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        self.connection.row_factory = sqlite3.Row
        self._commits = 0
        """Commits made through this connection (``PRAGMA data_version`` counts the others')."""
        self._depth = 0
        """How many :meth:`tx` blocks are open on this connection (the outer one and its savepoints)."""
        self._migrated: dict[str, int] = {}
        """Domain → the version this connection made sure of."""
        try:
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA foreign_keys=ON")
            self._layout()
            for schema in schemas:
                self.migrate(schema)
        except BaseException:
            self.connection.close()
            raise

    def _layout(self) -> None:
        """Give the file this module's own layout (the ``schema_versions`` table)."""
        if self._user_version() >= LAYOUT:
            return
        with self.tx() as db:
            if self._user_version() < LAYOUT:  # not another process first
                db.execute(VERSIONS_TABLE)
                db.execute(f"PRAGMA user_version = {LAYOUT}")

    def _user_version(self) -> int:
        return int(self.connection.execute("PRAGMA user_version").fetchone()[0])

    def _version_of(self, domain: str) -> int:
        row = self.connection.execute("SELECT version FROM schema_versions WHERE domain=?", (domain,)).fetchone()
        return int(row[0]) if row else 0

    def migrate(self, schema: Schema) -> None:
        """Make sure the file has ``schema``'s tables at their latest version: run the
        steps it has not had, and record that it had them, in one transaction (see the
        module's docstring). Once per connection and domain; a domain may be added to
        a file at any time.

        Raises:
            sqlite3.Error: a step failed (nothing of the migration is kept).
        """
        with self.lock:
            if self._migrated.get(schema.domain, -1) >= schema.version:
                return
            if self._version_of(schema.domain) < schema.version:
                with self.tx() as db:
                    done = self._version_of(schema.domain)  # again, under the write lock
                    for step in schema.steps[done:]:
                        _run(db, step)
                    if done < schema.version:
                        db.execute(
                            "INSERT INTO schema_versions (domain, version) VALUES (?, ?)"
                            " ON CONFLICT(domain) DO UPDATE SET version=excluded.version",
                            (schema.domain, schema.version),
                        )
            self._migrated[schema.domain] = schema.version

    def versions(self) -> dict[str, int]:
        """Domain → how many of its steps the file has had."""
        return {str(r[0]): int(r[1]) for r in self.rows("SELECT domain, version FROM schema_versions")}

    def close(self) -> None:
        self.connection.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: one writer at a time, across
        processes by SQLite's lock and across this process's threads by ours). Inside
        another ``tx()`` of the same thread it is a savepoint of that one: its changes
        commit with it, and an error undoes only its own (so a batch of changes is one
        commit, and one that fails does not undo the rest)."""
        with self.lock:
            db = self.connection
            if self._depth:
                name = f"s{self._depth}"
                db.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield db
                    db.execute(f"RELEASE {name}")
                except BaseException:
                    db.execute(f"ROLLBACK TO {name}")
                    db.execute(f"RELEASE {name}")
                    raise
                finally:
                    self._depth -= 1
                return
            db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield db
                db.execute("COMMIT")
                self._commits += 1
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0

    def version(self) -> tuple[int, int]:
        """A token that changes whenever any connection (any process) committed to the
        database: compare two to know whether anything changed between them (cheap: no
        table is read)."""
        with self.lock:
            return (int(self.connection.execute("PRAGMA data_version").fetchone()[0]), self._commits)

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one query."""
        with self.lock:
            return list(self.connection.execute(sql, args))
