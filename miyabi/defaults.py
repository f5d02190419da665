"""Defaults for every tunable constant, each with its unit and where its value comes from.

Layout keys override the ones that a layout can set (see docs/layout.md);
the rest are fixed here, in one place, so that a maintainer finds every timing and
size of miyabi without reading the modules that use them.
"""

from __future__ import annotations

# ---------------------------------------------------------------- ensemble and tmux

SOCKET = "miyabi"
"""tmux socket name (``tmux -L``) when neither ``--socket`` nor ``MIYABI_SOCKET`` is given."""

SECRET_ENV = ("GITHUB_TOKEN", "GH_TOKEN")
"""Environment variables that hold a secret whatever the layout says (the GitHub CLI's
tokens); a layout adds its ``token_env``, ``password_env`` and ``url_env`` names (see
``Layout.secret_env``). None of them reaches an agent, a check or miyabi's tmux server."""

PER_WINDOW = 4
"""Agents per tmux window before miyabi opens the next window (layout key ``per_window``)."""

PANE_WIDTH = 100
"""Columns each pane gets when miyabi sizes a detached session (layout key ``pane_size``)."""

PANE_HEIGHT = 30
"""Rows each pane gets when miyabi sizes a detached session (layout key ``pane_size``)."""

PROFILE = "worker"
"""Profile of an agent whose layout entry names none (layout key ``profile``)."""

LAYOUT_FILE = "miyabi.yaml"
"""Layout file ``miyabi up`` looks for in the current directory before the default layout."""

TMUX_MIN_VERSION = (3, 2)
"""Oldest tmux miyabi runs on: ``new-session -e`` (3.2), ``-e`` on new-window and
split-window and ``set -p`` pane options (3.0). Developed and tested on 3.3a."""

TMUX_TIMEOUT = 30.0
"""Seconds a single tmux process may take before miyabi gives up on it."""

TMUX_COMMAND_BYTES = 15_000
"""Most bytes of arguments miyabi puts in one tmux invocation. tmux refuses a command
line over about 16 KiB ("command too long", measured on 3.3a: 16,300 bytes passed,
16,500 failed), so longer chains are cut into several invocations."""

CONTROL_RESPONSE_TIMEOUT = 10.0
"""Seconds to wait for tmux to answer one command on the control-mode channel."""

DIR_MODE = 0o700
"""Mode of every directory miyabi creates under its home (``queue/``, ``logs/``,
``run/``, ``state/`` and everything below them)."""

FILE_MODE = 0o600
"""Mode of every file miyabi creates under its home: messages, logs, journals, the
task database. They hold what agents were told and printed."""

DB_BUSY_TIMEOUT = 10.0
"""Seconds a connection to one of the home's SQLite databases waits for another
process's write transaction to end before it fails with "database is locked"
(SQLite's busy timeout). Writers hold the lock for milliseconds; this covers a busy machine."""

# ---------------------------------------------------------------- pane logs

LOG_MAX_BYTES = 10 * 1024 * 1024
"""Bytes at which a pane log (``logs/<agent>.log``) is renamed ``.log.1`` and a fresh
one started (layout key ``logs.max_bytes``; 0: never). 10 MiB holds hours of a busy
agent's output, and ``miyabi logs`` reads the whole of it in about a second."""

LOG_KEEP = 5
"""Rotated pane logs kept per agent (``.log.1`` newest … ``.log.5`` oldest; layout key
``logs.keep``): with ``LOG_MAX_BYTES``, at most 60 MiB of output per agent."""

LOG_LINE_MAX = 65_536
"""Characters after which ``miyabi logs`` ends a line that has no end: a full-screen
program can print megabytes without a newline, and a line is held in memory whole."""

LOG_READ_CHUNK = 1 << 20
"""Bytes ``miyabi logs`` reads from a pane log at a time."""

LOG_FOLLOW_POLL = 0.2
"""Seconds between two looks at a pane log for new output under ``miyabi logs --follow``."""

WEB_LOGS_LIMIT = 500
"""Log lines ``GET /api/v1/agents/NAME/logs`` returns at most (the newest), unless asked for fewer."""

WEB_DOWN_TAIL = 40
"""Lines of its pane log an agent's page shows, in place of its screen, while the agent does not
run (failed, dead, missing): about one screen of what it printed last."""

WEB_PAGE_EVENTS = 200
"""Events the events page shows when it opens (the newest); the live feed adds to them."""

# ---------------------------------------------------------------- profiles and screens

SUBMIT_KEY = "Enter"
"""tmux key name pressed to submit a message typed into an agent."""

SUBMIT_DELAY = 0.15
"""Seconds between typing a message and pressing the submit key. 150 ms clears the
paste-burst window of Codex CLI (about 120 ms, openai/codex ``paste_burst.rs``)."""

READY_SETTLE = 0.2
"""Seconds between the two screen reads that must both show an agent ready before a
message is typed (gastown's rule: two reads about 200 ms apart)."""

COMPOSER_LINES = 5
"""Lines from the bottom of the screen searched for an agent's input box."""

WORKER_PROMPT = "worker> "
"""Prompt the built-in worker agent shows when it is ready for a message."""

WORKER_QUOTA_RESET = 60.0
"""Seconds the built-in worker's rehearsed usage limit lasts (``miyabi worker --quota-reset``)."""

WORKER_BUSY = "⠿ thinking… (esc to interrupt)"
"""Line the built-in worker agent shows while it simulates work (``--think``)."""

WORKER_PASTE_ECHO = 200
"""A paste into the worker longer than this many characters, or with a newline, is
echoed as a summary (``[pasted N lines, M chars]``)."""

ACK_CHARS = 60
"""How many characters of a message the worker repeats in its ``ack`` line."""

# ---------------------------------------------------------------- messages and delivery

MAX_BODY = 1024 * 1024
"""Largest message body accepted, in bytes of UTF-8 (layout key ``delivery.max_body``)."""

SHORT_TEXT = 2048
"""Longest single line, in bytes, typed with ``send-keys -l``; longer text is pasted."""

MAX_ENTERS = 3
"""Most times the submit key is pressed for one message."""

ENTER_RETRY = 0.5
"""Seconds after a submit key press before pressing it again if the text still sits in
the input box."""

TYPED_TEXT = 200
"""Longest single line typed key by key into a profile that takes bracketed paste;
anything longer goes in as one paste, so no CLI takes fast typing for a paste of its
own (Codex does, and then does not submit on Enter)."""

RECEIPT_TIMEOUT = 10.0
"""Seconds to wait for a hook's receipt of a submitted prompt once the input box
emptied, before counting it delivered on the empty box alone."""

VERIFY_TIMEOUT = 3.0
"""Seconds to wait for evidence that a message was submitted."""

VERIFY_POLL = 0.01
"""Seconds between screen reads while verifying a submission."""

DELIVERY_ATTEMPTS = 3
"""Times a message may be typed (each in a new agent process) before it is a dead letter."""

INBOX_RESCAN = 0.2
"""Seconds between rescans of the inboxes in case an inotify event is missed (the
fallback poll; one thread stat()s them all and wakes deliverers with mail waiting)."""

DELIVERER_IDLE = 5.0
"""Longest a deliverer sleeps without any wake-up, in seconds."""

HUMAN_HOLD = 30.0
"""Seconds after a person's last key in a pane (through a client attached to miyabi's
session) before miyabi types into it again (layout key ``human_hold``)."""

PARK_PROBE_AFTER = 300.0
"""Seconds a parked agent waits, when its CLI printed no reset time, before miyabi tells
it to go on (layout ``park.probe_after``); doubled for each park in a row."""

PARK_PROBE_MAX = 3600.0
"""Longest wait, in seconds, before a parked agent is told to go on (``park.probe_max``)."""

BUDGET_WARN = 0.8
"""Share of a budget (layout ``budget:``) at which miyabi warns once per period (the
event and notice ``budget-warning``); at 1.0 it parks the agents the budget covers."""

BUDGET_TICK = 1.0
"""Seconds between the controller's looks at the event log's token use against the
budgets (and so the longest an agent runs on after its budget is spent, besides the
turn that spent it)."""

PARK_HANDOFF_AFTER = 600.0
"""Seconds an agent stays parked before its tasks go to ``park.to`` when the layout
names targets but no ``park.handoff_after``."""

PARK_CLEAR = 60.0
"""Seconds without a new limit sign after a parked agent was told to go on before its
park ends (a sign within them parks it again, with a longer wait)."""

KEYBOARD_LOOK = 0.25
"""Seconds between two looks at the attached clients (one ``list-clients`` on the
control channel), shared by every deliverer and the watchdog."""

DELIVERER_ERROR_PAUSE = 1.0
"""Seconds a deliverer waits after an unexpected error before trying again."""

TMP_MAX_AGE = 3600.0
"""Seconds after which a leftover file in an inbox's ``tmp/`` (a write a crash
interrupted before its rename) is removed."""

# ---------------------------------------------------------------- the controller

PANE_REFRESH = 0.5
"""Seconds between refreshes of the agent → pane map (and scheduling passes)."""

TMUX_DYING_RETRIES = 8
"""Times a chain that starts a session is tried again when the tmux server it reached was
exiting (``server exited unexpectedly``: a server killed a moment before still held its
socket)."""

TMUX_DYING_WAIT = 0.1
"""Seconds before the first such retry; each next one waits that much longer (3.6 s in
all: a busy machine takes over a second to end a server with many panes)."""

RECONNECT_MIN = 0.1
"""First wait, in seconds, before asking an unreachable tmux again; it doubles up to
``RECONNECT_MAX``."""

RECONNECT_MAX = 2.0
"""Longest wait, in seconds, between attempts to reopen the control channel."""

THREAD_JOIN = 5.0
"""Seconds the stopping controller waits for each of its threads to finish."""

BUILD_WAIT = 30.0
"""Seconds a build of the session (``miyabi up``, the controller's rebuild) waits for
another one in the same home to end (``run/build.lock``) before it gives up."""

CONTROLLER_START_WAIT = 5.0
"""Seconds ``miyabi up`` waits for a background controller to take its lock."""

CONTROLLER_STOP_WAIT = 5.0
"""Seconds ``miyabi down`` waits after SIGTERM before it SIGKILLs the controller."""

KEEPALIVE_POLL = 0.1
"""Seconds the keep-alive waits before it looks again at a controller it could not
open a pidfd for (it was just ending)."""

KEEPALIVE_CHECK = 1.0
"""Seconds between the keep-alive's looks for ``run/stopped`` (it wakes at once when
the controller ends or a signal comes)."""

KEEPALIVE_STABLE = 10.0
"""A controller that ran this long (seconds) before it died is started again at once."""

KEEPALIVE_BACKOFF_INITIAL = 0.5
KEEPALIVE_BACKOFF_MAX = 30.0
"""Seconds the keep-alive waits before starting again a controller that keeps dying
young: doubling from the first to the largest."""

KEEPALIVE_HISTORY = 50
"""Controller restarts the keep-alive keeps in ``run/keepalive.json``."""

REQUEST_WAIT = 10.0
"""Seconds a command such as ``miyabi restart`` waits for the controller's answer."""

REQUEST_POLL = 0.05
"""Seconds between looks for the controller's answer to a request."""

# ---------------------------------------------------------------- the watchdog

WATCHDOG_SILENCE_TIMEOUT = 600.0
"""Seconds an agent may be not ready and silent before it counts as hung and is
nudged (layout ``watchdog.silence_timeout``)."""

WATCHDOG_SILENCE_GRACE = 120.0
"""Seconds a nudged agent may stay silent before it is restarted (``silence_grace``)."""

WATCHDOG_MIN_UPTIME = 10.0
"""An agent that dies after running at least this many seconds is restarted at once;
sooner, after a backoff (``min_uptime``; supervisord's ``startsecs``)."""

WATCHDOG_STABLE_AFTER = 600.0
"""Seconds of running that reset the backoff (``stable_after``)."""

WATCHDOG_MAX_RESTARTS = 5
"""Restarts allowed within ``restart_window`` before the breaker marks the agent failed
(``max_restarts``; systemd's ``StartLimitBurst``)."""

WATCHDOG_RESTART_WINDOW = 900.0
"""Seconds over which the breaker counts restarts (``restart_window``)."""

WATCHDOG_BACKOFF_INITIAL = 1.0
"""First backoff delay after a quick death, in seconds; it doubles each time."""

WATCHDOG_BACKOFF_MAX = 300.0
"""Largest backoff delay, in seconds."""

HANG_CHECK = 1.0
"""Seconds between hang checks."""

ECHO_GRACE = 1.0
"""Seconds after a delivery during which the pane's output counts as the echo of the
message itself, not as an answer."""

CPU_BUSY = 0.02
"""CPU seconds per second of wall time above which a silent agent counts as working
(sampled between two hang checks)."""

KILL_GRACE = 2.0
"""Seconds an agent gets between SIGTERM and SIGKILL when it is restarted on purpose."""

EXIT_STATUS_WAIT = 1.0
"""Seconds the watchdog waits for tmux to record how a dead agent ended (its exit
status or signal), when the process was reaped before miyabi could read it."""

SCROLLBACK_LINES = 2000
"""Lines of the pane saved with a crash."""

CPU_RECORD = 2.0
"""Seconds between the controller's measures of each agent's CPU use (``run/cpu.json``),
which ``miyabi status`` shows instead of sampling for a while itself: each figure is
the use over about this long."""

CPU_RECORD_STALE = 10.0
"""Seconds after which a recorded CPU measure is too old to show (the controller stopped
measuring): ``miyabi status`` then shows the use over the process's life."""

STATUS_STARTING = 2.0
"""Seconds after its start an agent shows as ``starting`` in ``miyabi status``."""

RESTART_HISTORY = 86400.0
"""Seconds of restart times kept in the watchdog's history."""

# ---------------------------------------------------------------- tasks and GitHub

TASK_WIP = 1
"""Tasks an agent may have assigned or in progress at once (layout ``agents[].wip``)."""

TASK_MAX_ATTEMPTS = 3
"""Assignments a task gets before it fails for good (layout ``tasks.max_attempts``)."""

SCHEDULE_IDLE = 10.0
"""Seconds between scheduling passes when nothing changed (passes are driven by
changes: a commit to the task store, an agent's process, a failed agent, a reload)."""

LEASE_RECONCILE = 30.0
"""Seconds an assigned task may wait before a pass looks where its message is (a
delivery or dead letter whose report never reached the store is then settled)."""

SCHEDULE_ERROR_PAUSE = 1.0
"""Seconds before a scheduling pass that failed (the store refused) is tried again."""

SCHEDULE_KICK_DEBOUNCE = 0.005
"""Seconds the main loop waits after a change wakes it, so one burst of commits
makes one scheduling pass."""

GITHUB_API = "https://api.github.com"
"""GitHub's REST API root (layout ``github.api_url``; Enterprise: ``https://HOST/api/v3``)."""

GITHUB_TOKEN_ENV = "GITHUB_TOKEN"
"""Environment variable the GitHub token is read from (layout ``github.token_env``)."""

GITHUB_TODO_LABEL = "status:todo"
"""Issues with this label become tasks (layout ``github.todo_label``)."""

GITHUB_POLL_INTERVAL = 60.0
"""Seconds between polls of the repository (layout ``github.poll_interval``)."""

GITHUB_TIMEOUT = 30.0
"""Seconds one HTTP request to GitHub may take."""

GITHUB_MAX_TRIES = 6
"""Attempts of one GitHub request before giving up (rate limits, 5xx, network errors)."""

GITHUB_MAX_WAIT = 900.0
"""Longest single wait, in seconds, for a GitHub rate limit to reset."""

GITHUB_BACKOFF_INITIAL = 1.0
"""First backoff, in seconds, before retrying a failing GitHub request; it doubles up to
``GITHUB_BACKOFF_MAX``."""

GITHUB_BACKOFF_MAX = 60.0
"""Longest backoff, in seconds, between retries of a failing GitHub request."""

GITHUB_SINCE_OVERLAP = 60.0
"""Seconds a poll's ``since`` reaches back before the newest ``updated_at`` already
seen. GitHub stamps ``updated_at`` with its own clock (so ours does not matter), but a
change may show in its listing a moment after a later one (another server's clock a
little behind, a replica behind the primary), and several changes share one second;
what the overlap lists again is recognised as already handled. A minute is far more
than either and costs a re-read of that minute's changes only after something changed."""

GITHUB_INTAKE_BATCH = 500
"""Issues stored per transaction by one poll: 10,000 new issues are 20 commits (so the
controller runs about 20 scheduling passes, not 10,000), each holding the store's write
lock for a few milliseconds only."""

NOTICE_TRIES = 5
"""Attempts at telling GitHub a task's outcome before giving up (with an event)."""

CLAIM_RETRY = 60.0
"""Seconds a task whose claim failed (a GitHub error) waits before it is tried again."""

JOB_STEP_TIMEOUT = 3600.0
"""Longest one command of a job may run, in seconds."""

# ---------------------------------------------------------------- pools and the pipeline

POOL_MAX = 2
"""Instances of a pool that may run at once (layout ``pools[].max``)."""

CHECK_TIMEOUT = 1800.0
"""Seconds one set-up, build, lint or test command may run (``.miyabi.yml``'s ``timeout``)."""

VERIFY_MAX_ROUNDS = 3
"""Verify rounds a task gets before it fails and needs a person (``.miyabi.yml``'s ``max_rounds``)."""

VERIFY_TAIL_LINES = 80
"""Lines of a failing command's output sent back to the agent."""

VERIFY_KILL_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL to a check's process group past its timeout."""

GIT_TIMEOUT = 300.0
"""Seconds one git command of the pipeline may run (a push, a worktree of a big repository)."""

PIPELINE_TRIES = 3
"""Times a pipeline step that fails for a reason of its own (git refused, GitHub failed) is
tried, a minute apart, before its task fails and needs a person."""

CHECK_FOLLOW_UPS = 3
"""Follow-ups a pull request gets for its failing check runs before a person is asked."""

PIPELINE_WORKERS = 2
"""Threads that prepare worktrees and run checks, beside the controller's own."""

BRANCH_PREFIX = "miyabi/"
"""Branches of pool tasks are ``miyabi/<issue or task id>-<slug>``."""

FIX_TRIGGER = "@ai-fix"
"""A pull request comment starting with this asks for a follow-up (layout ``github.fix_trigger``)."""

MARKER = "<!-- miyabi -->"
"""Ends every comment the pipeline writes, so that miyabi never acts on its own words."""

REVIEW_LABEL = "status:review"
"""Label on a pull request the pipeline opened (and on its issue)."""

# -- the web dashboard (miyabi web)

WEB_HOST = "127.0.0.1"
"""Address the dashboard binds to: loopback, unless the user names another."""

WEB_PORT = 8765
"""TCP port of the dashboard."""

WEB_SCREEN_LINGER = 10.0
"""Seconds the dashboard's control channel stays open after the last live screen closed."""

WEB_SCREEN_GAP = 0.02
"""Least seconds between two frames of one live screen (at most 50 a second, however fast
the pane prints; measured: a frame costs about 1 ms to read and convert)."""

WEB_HEARTBEAT = 5.0
"""Seconds between two frames of a live stream (screen, agents) when nothing changed: proves
the connection lives, and picks up a pane that was recreated."""

WEB_AGENTS_INTERVAL = 2.0
"""Seconds between two readings of the agents for the dashboard's live cards (CPU is measured
over this interval)."""

WEB_EVENTS_POLL = 0.25
"""Seconds between two looks at ``logs/events.jsonl`` while a live event feed is open."""

WEB_EVENTS_LIMIT = 500
"""Events ``GET /api/v1/events`` returns at most (the newest), unless asked for fewer."""

WEB_RESTART_MIN = 1.0
"""Seconds before the controller starts its dashboard again after it died."""

WEB_RESTART_MAX = 60.0
"""Longest wait, in seconds, between two starts of a dashboard that keeps dying young (a
taken port): the wait doubles from ``WEB_RESTART_MIN`` up to this."""

WEB_STABLE_AFTER = 30.0
"""Seconds a dashboard must run for its restart wait to start again from ``WEB_RESTART_MIN``."""

WEB_STOP_WAIT = 3.0
"""Seconds the controller gives its dashboard to stop on SIGTERM before SIGKILL."""

WEB_UP_WAIT = 5.0
"""Seconds ``miyabi up`` waits for the controller's dashboard to answer before it prints its URL."""

# ---------------------------------------------------------------- reports

REPORT_SINCE = 86400.0
"""Seconds back from now that ``miyabi report`` covers without ``--since`` (24 h)."""

REPORT_MIN_EVERY = 3600.0
"""Shortest interval, in seconds, the layout's ``report.every`` may set (a report an
hour is already more than an issue's readers follow)."""

REPORT_RETRY = 600.0
"""Seconds the controller waits before posting a scheduled report again after a post failed."""

REPORT_CHECK = 60.0
"""Seconds between two looks of the controller's report thread at its schedule (and
at a reloaded layout's ``report:``)."""

GITHUB_COMMENT_MAX = 65536
"""Most characters GitHub takes in an issue comment's body (a longer one is refused
with 422 "body is too long (maximum is 65536 characters)"); a longer report is cut."""

# -- notifications (notify: in the layout)

NOTIFY_RATE = 20.0
"""Notices per minute one receiver gets at most (Slack's incoming webhooks allow about one a
second; 20 a minute keeps a burst of failures readable)."""

NOTIFY_MAX_ATTEMPTS = 6
"""Tries of one notice before it is given up: with ``NOTIFY_RETRY_AFTER`` doubling, about 10
minutes of a receiver being down."""

NOTIFY_RETRY_AFTER = 10.0
"""Seconds before a failed notice is tried again; each later wait doubles (up to 600 s)."""

NOTIFY_TIMEOUT = 5.0
"""Seconds one POST to a receiver may take: a slow receiver holds only its own queue."""

NOTIFY_POLL = 1.0
"""Seconds between two looks at the event log and the task store for new happenings."""

WEB_KPI_TTL = 30.0
"""Seconds the dashboard reuses a computed KPI report (a report reads the whole event log)."""

WEB_SCREEN_RETRIES = 5
"""Times in a row a live screen may fail to be read (its pane being recreated, tmux
restarting) before its stream ends with a ``gone`` event; the waits between grow from
``WEB_SCREEN_RETRY_INITIAL`` to ``WEB_SCREEN_RETRY_MAX``."""

WEB_SCREEN_RETRY_INITIAL = 0.4
"""Seconds a live screen waits after its first failed read; it doubles with each next one."""

WEB_SCREEN_RETRY_MAX = 5.0
"""Longest wait, in seconds, between failed reads of a live screen."""

WEB_EVENTS_SPAN = 16 << 20
"""Bytes at the end of ``logs/events.jsonl`` the dashboard reads for its lists of recent events
(the events page, the approvals audit): what an hour of a busy ensemble logs, and never the
whole log of an old home."""

# ---------------------------------------------------------------- the bus (several hosts, one Redis)

BUS_LEASE = 30.0
"""Seconds a host holds a task it claimed from the bus without renewing it (it renews every
third of that): past it, another host claims the task again, its attempt counted."""

BUS_NAMESPACE = "miyabi"
"""Prefix of every key miyabi writes in Redis."""

BUS_HEARTBEAT = 2.0
"""Seconds between two presence records of a host (its agents and their states)."""

BUS_PRESENCE_TTL = 10.0
"""Seconds a host's presence record lives without a new heartbeat: then it is shown down."""

BUS_TIMEOUT = 2.0
"""Seconds a call to Redis may take (connect, read) before the bus counts as down."""

BUS_RECONNECT_MIN = 0.2
"""First wait, in seconds, before miyabi tries Redis again after it failed."""

BUS_RECONNECT_MAX = 5.0
"""Longest wait, in seconds, between two attempts to reach Redis (the wait doubles up to it)."""

BUS_BLOCK = 1.0
"""Seconds a read of a host's message stream blocks waiting for a new entry (then it reads
again: a stop is seen within this)."""

BUS_TICK = 0.5
"""Seconds between two passes of the bus's task side (claims, renewals, results)."""

# ---------------------------------------------------------------- deploy and monitoring (deploy:, serve:, health:)

DEPLOY_DIR = "deploy"
"""Directory under the home holding one deploy checkout per repository (``deploy/<slug>/``)."""

DEPLOY_GOOD_KEPT = 10
"""Commits that passed their health check a deploy record keeps (``rollback: true`` goes
back to the last of them that is not the failing one)."""

HEALTH_START_TIMEOUT = 30.0
"""Seconds a deploy waits for ``health:`` to pass after the service (re)started
(``health: {timeout: …}``)."""

HEALTH_REQUEST_TIMEOUT = 10.0
"""Seconds one health or acceptance check may take (an HTTP GET, or a ``run:`` command)."""

HEALTH_POLL = 0.1
"""Seconds between two health checks while a deploy waits for the service to pass."""

HEALTH_EVIDENCE_LINES = 20
"""Lines of a check's output, and of the service's log, that a failure's evidence keeps."""

MONITOR_INTERVAL = 30.0
"""Seconds between two health checks of a deployed service (layout ``roles: {monitor:
{interval: 30s}}``)."""

MONITOR_FIX_AFTER = 3
"""Health checks that must fail in a row before the monitor files a fix task (one
failure right after a restart is not yet a cause)."""

MONITOR_TICK = 0.5
"""Seconds between two looks of the monitor at the served processes (a dead one is
respawned, with the watchdog's backoff, within about this)."""

SERVICE_RETRY = 2.0
"""Seconds before the monitor tries again to start a service tmux refused to start (its
session being rebuilt, say)."""

# -- stories (issue 23: roles and stories)

STORY_EVIDENCE_CHARS = 4000
"""Characters of a failed deploy's or check's evidence a story keeps (and a fix task quotes)."""

# ---------------------------------------------------------------- self-edits (self: {pool})

SELF_PROBE_TIMEOUT = 60.0
"""Seconds the controller started on miyabi's merged code has to pass its health probe
(running, every agent supervised, a request answered); then the merge is rolled back."""

SELF_PROBE_POLL = 0.2
"""Seconds between two looks of the keep-alive at the probe's answer."""

SELF_PROBE_LOG_LINES = 20
"""Lines of ``logs/controller.log`` the probe's evidence ends with when it fails."""

WEB_MERGE_DIFF_BYTES = 262144
"""Bytes of a waiting merge's diff the dashboard's Approvals page shows (the start of it)."""

WEB_MERGE_LOG_BYTES = 32768
"""Bytes of each verify log of a waiting merge the Approvals page shows (the end of it)."""

# ---------------------------------------------------------------- sandboxes (sandbox:)

CHANNEL_POLL = 0.5
"""Seconds the thread serving sandboxed agents' channels waits for a connection before it
looks whether the controller stops (the channels, :mod:`miyabi.controller.channels`)."""

CHANNEL_TIMEOUT = 10.0
"""Seconds a channel connection may take to send its request and read the answer; a
``miyabi`` command in a sandbox waits as long for the controller's answer."""
