"""The work domain's tables in ``state/miyabi.db``, as migration steps
(:mod:`miyabi.database`): the tasks, their dependencies, their append-only history
(``events``), the commands of jobs (``job_runs``) and what GitHub must be told
(``outbox``).

The steps are history: never change one, add a step at the end. The first ones are
what versions before recorded schema versions did on every start (create what is
missing, add the columns later versions added, with their backfill, then the
indexes), so each is idempotent: a database they wrote has some of it already.
"""

from __future__ import annotations

from miyabi.database import AddColumn, Schema

TABLES = """
CREATE TABLE IF NOT EXISTS tasks (
  id INTEGER PRIMARY KEY,
  source TEXT NOT NULL,
  repo TEXT,
  number INTEGER,
  url TEXT,
  title TEXT NOT NULL,
  body TEXT NOT NULL DEFAULT '',
  labels TEXT NOT NULL DEFAULT '[]',
  priority TEXT NOT NULL DEFAULT 'normal',
  state TEXT NOT NULL DEFAULT 'queued',
  agent TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  created REAL NOT NULL,
  updated REAL NOT NULL,
  claim TEXT NOT NULL DEFAULT '',
  UNIQUE (source, repo, number)
);
CREATE TABLE IF NOT EXISTS deps (
  task INTEGER NOT NULL REFERENCES tasks(id),
  depends_on INTEGER NOT NULL REFERENCES tasks(id),
  PRIMARY KEY (task, depends_on)
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  task INTEGER NOT NULL REFERENCES tasks(id),
  time REAL NOT NULL,
  state TEXT NOT NULL,
  agent TEXT,
  reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE TABLE IF NOT EXISTS job_runs (
  task INTEGER NOT NULL REFERENCES tasks(id),
  attempt INTEGER NOT NULL,
  step INTEGER NOT NULL,
  command TEXT NOT NULL,
  agent TEXT NOT NULL,
  started REAL NOT NULL,
  seconds REAL,
  exit_code INTEGER,
  output TEXT,
  PRIMARY KEY (task, attempt, step)
);
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY,
  task INTEGER NOT NULL REFERENCES tasks(id),
  action TEXT NOT NULL,
  text TEXT NOT NULL DEFAULT '',
  tries INTEGER NOT NULL DEFAULT 0,
  sent REAL
);
"""
"""The tables, created when missing (the columns ``tasks`` gained since are the steps after)."""

JOB_STARTED = """
UPDATE tasks SET job_started = attempts WHERE source = 'job' AND EXISTS (
  SELECT 1 FROM events e WHERE e.task = tasks.id AND e.reason LIKE 'job started%'
  AND e.id > COALESCE((SELECT MAX(a.id) FROM events a WHERE a.task = tasks.id AND a.state = 'assigned'), 0))
"""
"""Versions before the ``job_started`` column recorded a job's start as an event ("job
started by …" after the last assignment): carried over when the column is added."""

RANK = """
UPDATE tasks SET rank = CASE
  WHEN labels LIKE '%"priority:high"%' THEN 0 WHEN labels LIKE '%"priority:low"%' THEN 2
  WHEN priority = 'high' THEN 0 WHEN priority = 'low' THEN 2 ELSE 1 END
"""
"""Each task's place in the queue (:func:`miyabi.work.model.rank_of`), for the tasks
stored before the ``rank`` column."""

INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS tasks_key ON tasks(source, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_order ON tasks(state, rank, created, id);
CREATE INDEX IF NOT EXISTS tasks_route ON tasks(state, route, rank, created, id);
CREATE INDEX IF NOT EXISTS tasks_agent ON tasks(agent, state);
CREATE INDEX IF NOT EXISTS deps_depends_on ON deps(depends_on);
CREATE INDEX IF NOT EXISTS tasks_issue ON tasks(repo, number);
"""
"""Indexes the scheduler's queries use: queued tasks in priority order (all, or those
routed to some agents), the tasks an agent holds, and the tasks waiting for one; and
the task of an issue (``repo``, ``number``: the UNIQUE constraint starts with
``source``, so it does not serve a lookup by issue)."""

STORIES = """
CREATE TABLE IF NOT EXISTS stories (
  id INTEGER PRIMARY KEY,
  title TEXT NOT NULL,
  body TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  task INTEGER REFERENCES tasks(id),
  manager TEXT,
  coder TEXT,
  source TEXT NOT NULL DEFAULT 'local',
  repo TEXT,
  number INTEGER,
  url TEXT,
  rounds INTEGER NOT NULL DEFAULT 0,
  deployed_commit TEXT,
  evidence TEXT NOT NULL DEFAULT '',
  created REAL NOT NULL,
  updated REAL NOT NULL,
  deployed REAL,
  finished REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS stories_issue ON stories(repo, number) WHERE number IS NOT NULL;
CREATE TABLE IF NOT EXISTS story_events (
  id INTEGER PRIMARY KEY,
  story INTEGER NOT NULL REFERENCES stories(id),
  time REAL NOT NULL,
  state TEXT NOT NULL,
  reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_story ON tasks(story);
"""
"""Stories (:mod:`miyabi.work.stories`): a story, its planning task, the fix rounds its
deploy took, and its history (``story_events``)."""

SCHEMA = Schema(
    "work",
    (
        TABLES,
        AddColumn("tasks", "job_started", "INTEGER NOT NULL DEFAULT 0", JOB_STARTED),
        AddColumn("tasks", "key", "TEXT"),
        AddColumn("tasks", "holder", "TEXT"),
        AddColumn("tasks", "deadline", "REAL"),
        AddColumn("tasks", "timeout", "REAL"),
        AddColumn("tasks", "max_attempts", "INTEGER"),
        AddColumn("tasks", "rank", "INTEGER NOT NULL DEFAULT 1", RANK),
        AddColumn("tasks", "route", "TEXT"),
        AddColumn("tasks", "message", "TEXT"),
        AddColumn("tasks", "pool", "TEXT"),
        AddColumn("tasks", "branch", "TEXT"),
        AddColumn("tasks", "rounds", "INTEGER NOT NULL DEFAULT 0"),
        AddColumn("tasks", "parent", "INTEGER"),
        AddColumn("tasks", "handoff", "TEXT"),
        AddColumn("tasks", "handoff_note", "TEXT"),
        INDEXES,
        AddColumn("tasks", "spec", "TEXT"),
        # -- story (issue 23): the story a task belongs to, and the stories
        AddColumn("tasks", "story", "INTEGER"),
        STORIES,
    ),
)
"""The work domain (``schema_versions``: ``work``)."""
