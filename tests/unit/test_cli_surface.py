"""What a user of the command line meets first (issue 21): usage errors, help texts,
the command list, and text from elsewhere printed safely. Commands run as a user's
shell runs them (``python -m miyabi``, output piped), unless a test says otherwise."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import write_layout
from typer.testing import CliRunner

from miyabi.cli import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("in_empty_dir")


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("MIYABI_HOME", "MIYABI_AGENT", "TMUX")}
    e["MIYABI_SOCKET"] = "miyabi_unit_never_started"
    return e


def miyabi(*args: str, stdin: bytes = b"", home: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """``python -m miyabi ARGS`` (in ``home``: ``$MIYABI_HOME``), output piped; stdout
    and stderr as bytes."""
    return subprocess.run(
        [sys.executable, "-m", "miyabi", *args],
        input=stdin,
        capture_output=True,
        env={**env(), **({"MIYABI_HOME": str(home)} if home else {})},
        timeout=60,
        check=False,
    )


def on_a_terminal(*args: str, cwd: Path) -> bytes:
    """``python -m miyabi ARGS`` with its standard output on a terminal (rich output):
    everything it wrote there, as bytes."""
    leader, follower = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "miyabi", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
        env={**env(), "COLUMNS": "200", "TERM": "xterm"},
        cwd=cwd,
    )
    os.close(follower)
    got = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the program closed the terminal
            break
        if not chunk:
            break
        got += chunk
    os.close(leader)
    assert p.wait(timeout=60) == 0, p.stderr.read() if p.stderr else b""
    return got


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home that ran `miyabi up` (as run/up.json says) with agents kaede and sakura."""
    h = tmp_path / "home"
    (h / "run").mkdir(parents=True)
    lay = write_layout(tmp_path / "l.yaml", [("kaede", "shell", "cat"), "sakura"], session="s")
    (h / "run" / "up.json").write_text(json.dumps({"session": "s", "layout": str(lay), "agents": ["kaede", "sakura"]}))
    return h


# ---------------------------------------------------------------- 1. usage errors: exit 2, one line


USAGE_ERRORS = [
    (["send", "kaede"], "send: missing argument 'TEXT'; see `miyabi send --help`"),
    (
        ["send", "--ttl", "-5", "kaede", "hi"],
        "send: invalid value for '--ttl': '-5' is not a positive number of seconds; see `miyabi send --help`",
    ),
    (
        ["send", "kaede", "hi", "--ttl", "0"],
        "send: invalid value for '--ttl': '0' is not a positive number of seconds; see `miyabi send --help`",
    ),
    (
        ["send", "kaede", "hi", "--priority", "urgent"],
        "send: invalid value for '--priority': 'urgent' is not a priority; use high or normal",
    ),
    (
        ["send", "kaede", "hi", "--task", "abc"],
        "send: invalid value for '--task': 'abc' is not a task id; give its number (12 or #12)",
    ),
    (
        ["send", "kaede", "\x1b\x07"],
        (
            "send: invalid value for 'TEXT': '\\x1b\\x07' has no text (control characters are removed before "
            "delivery); see `miyabi send --help`"
        ),
    ),
    (["broadcast"], "broadcast: missing argument 'TEXT'; see `miyabi broadcast --help`"),
    (
        ["broadcast", "hi", "--ttl", "soon"],
        (
            "broadcast: invalid value for '--ttl': 'soon' is not a positive number of seconds; "
            "see `miyabi broadcast --help`"
        ),
    ),
    (
        ["task", "ls", "--state", "bogus"],
        (
            "task ls: invalid value for '--state': 'bogus' is not a task state; use queued, blocked, assigned, "
            "in_progress, verifying, shared, done, failed, cancelled, verified or deployed; see `miyabi task ls --help`"
        ),
    ),
    (
        ["task", "add", "x", "--priority", "urgent"],
        (
            "task add: invalid value for '--priority': 'urgent' is not a priority; use high, normal or low; "
            "see `miyabi task add --help`"
        ),
    ),
    (
        ["task", "show", "abc"],
        (
            "task show: invalid value for 'ID': 'abc' is not a task id; give its number (12 or #12), its issue "
            "(owner/name#3) or its spec (001-feature#T012, spec:ID); see `miyabi task show --help`"
        ),
    ),
    (
        ["task", "done", "12abc"],
        (
            "task done: invalid value for 'ID': '12abc' is not a task id; give its number (12 or #12), its issue "
            "(owner/name#3) or its spec (001-feature#T012, spec:ID); see `miyabi task done --help`"
        ),
    ),
    (["task", "add", "  "], "task add: invalid value for 'TITLE': '  ' is blank; give the task a title"),
    (
        ["task", "add", "x", "--timeout", "soon"],
        (
            "task add: invalid value for '--timeout': 'soon' is not a duration; give one such as 90s, 30m, 2h, 7d or a "
            "number of seconds; see `miyabi task add --help`"
        ),
    ),
    (["task", "add", "x", "--max-attempts", "0"], "task add: invalid value for '--max-attempts': '0' is too small"),
    (["task", "add", "x", "--depends-on", "first"], "task add: invalid value for '--depends-on': 'first' is not a"),
    (["task", "fail", "3", "--reason", ""], "task fail: invalid value for '--reason': '' is blank; give the reason"),
    (["retry", "zz"], "retry: invalid value for 'ID': 'zz' is not a message id"),
    (["drop", "not-an-id"], "drop: invalid value for 'ID': 'not-an-id' is not a message id"),
    (["logs", "kaede", "--lines", "none"], "logs: invalid value for '--lines' / '-n': 'none' is not a whole number"),
    (["logs", "kaede", "--since", "0"], "logs: invalid value for '--since': '0' is not a duration"),
    (["report", "--post-issue", "-1"], "report: invalid value for '--post-issue': '-1' is too small; give 1 or more"),
    (["web", "--port", "99999"], "web: invalid value for '--port': '99999' is not a TCP port"),
    (["worker", "--think", "-1"], "worker: invalid value for '--think': '-1' is not a number of seconds, 0 or more"),
]


@pytest.mark.parametrize(("args", "line"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_a_bad_value_is_a_usage_error_naming_it(home: Path, args: list[str], line: str) -> None:
    r = miyabi(*args, home=home)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"miyabi: {line}"), lines
    assert lines[0].endswith(f"; see `miyabi {' '.join(a for a in args[:2] if a in COMMANDS)} --help`")
    assert r.stdout == b""


COMMANDS = {"send", "broadcast", "task", "ls", "add", "show", "done", "fail", "retry", "drop", "logs", "report"}
COMMANDS |= {"web", "worker"}


def test_a_usage_error_sends_and_stores_nothing(home: Path) -> None:
    miyabi("send", "kaede", "hi", "--ttl", "-5", "--home", str(home))
    miyabi("task", "add", "x", "--priority", "urgent", "--home", str(home))
    assert not (home / "queue").exists() and not (home / "state").exists()


def test_an_unknown_agent_or_task_is_still_an_error_of_its_own(home: Path) -> None:
    r = miyabi("send", "kaeed", "hi", "--home", str(home))
    assert r.returncode == 1 and r.stderr.decode().startswith("miyabi: unknown agent 'kaeed'")
    r = miyabi("task", "show", "#99", "--home", str(home))
    assert r.returncode == 1 and r.stderr == b"miyabi: no task #99; list them with `miyabi task ls`\n"


def test_the_light_path_still_sends(home: Path) -> None:
    r = miyabi("send", "--json", "kaede", "hi there", "--ttl", "30", "--task", "#4", "--home", str(home))
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)
    stored = json.loads(next((home / "queue" / "kaede" / "new").iterdir()).read_text())
    assert stored["id"] == sent["id"] and stored["ttl"] == 30 and stored["task"] == "4"
    r = miyabi("broadcast", "all", "--except", "kaede", "--from", "boss", "--home", str(home))
    assert r.returncode == 0 and r.stdout.decode().split()[0] == "sakura"


# ---------------------------------------------------------------- 2, 3. help: one style, values named


def commands() -> Iterator[tuple[list[str], Any, Any]]:
    """Every command and group of the app, as its words, its click command and a
    context to read its parameters in (as its help does)."""
    import typer

    def walk(words: list[str], cmd: Any, ctx: Any) -> Iterator[tuple[list[str], Any, Any]]:
        yield words, cmd, ctx
        for name in getattr(cmd, "commands", {}):
            sub = cmd.get_command(ctx, name)
            yield from walk([*words, name], sub, sub.make_context(name, [], parent=ctx, resilient_parsing=True))

    root = typer.main.get_command(app)
    yield from walk([], root, root.make_context("miyabi", [], resilient_parsing=True))


ALL = [words for words, _, _ in commands()]
TYPE_NAMES = re.compile(r"<[^>\s]*>|\{[a-z_]+\}|\b(?:list|int|str|float|path|bool)\[")
"""A Python type where a value's name belongs (<list[str]>, <path>, <bool>, {title})."""


@pytest.mark.parametrize("rich", [False, True], ids=["plain", "rich"])
@pytest.mark.parametrize("words", ALL, ids=[" ".join(w) or "miyabi" for w in ALL])
def test_every_help_names_values_not_types(words: list[str], rich: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if rich:
        monkeypatch.setattr(app, "rich_markup_mode", "rich")
        monkeypatch.setenv("COLUMNS", "200")
    r = runner.invoke(app, [*words, "--help"])
    assert r.exit_code == 0, r.output
    assert not TYPE_NAMES.search(r.output), r.output
    # no internal notes, no docstring markup (status's ``bus:`` is left to the change that speeds status up)
    assert "light path" not in r.output and "``" not in r.output.replace("``bus:``", ""), r.output


def test_every_value_has_a_metavar_in_capitals() -> None:
    for words, cmd, ctx in commands():
        for p in cmd.get_params(ctx):
            if getattr(p, "is_flag", False) or p.hidden:
                assert p.metavar in ("", None), (words, p.name, p.metavar)
                continue
            assert p.metavar and re.fullmatch(r"[A-Z][A-Z0-9_]*(\.json)?", p.metavar), (words, p.name, p.metavar)


def test_send_and_broadcast_help_is_the_house_style() -> None:
    for prog in ("send", "broadcast"):
        out = miyabi(prog, "--help").stdout.decode()
        assert out.startswith(f"Usage: miyabi {prog} [OPTIONS]"), out
        assert "light path" not in out and "usage:" not in out and "positional arguments" not in out
        flat = " ".join(out.split())
        assert "--ttl SECONDS How long it may wait in the inbox" in flat
        assert "--priority PRIORITY high or normal" in flat and "--from NAME Who it is from" in flat
        assert "TEXT The message, or - to read it from standard input." in flat
        assert miyabi(prog, "-h").stdout.decode() == out
    flat = " ".join(miyabi("send", "--help").stdout.decode().split())
    assert "--reply-to ID Id of the message this one answers." in flat and "--task ID Id of the task" in flat
    flat = " ".join(miyabi("broadcast", "-h").stdout.decode().split())
    assert "--except NAME An agent to leave out (repeat for more)." in flat


def test_the_light_path_takes_the_options_the_help_shows() -> None:
    """The argparse parser of the light path and the Typer command that documents it
    accept the same options."""
    from miyabi.cli.send import _parser

    for words, cmd, ctx in commands():
        if words in (["send"], ["broadcast"]):
            documented = {o for p in cmd.get_params(ctx) for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
            light = set(_parser(words[0])._option_string_actions)
            assert documented == light, words


# ---------------------------------------------------------------- 4. hook is listed


def test_hook_is_listed_and_has_help_but_stays_silent_when_run(tmp_path: Path) -> None:
    listing = miyabi("--help").stdout.decode()
    assert re.search(r"^  hook\s+Record an agent CLI's hook event", listing, re.MULTILINE), listing
    out = miyabi("hook", "--help")
    assert out.returncode == 0 and out.stdout.decode().startswith("Usage: miyabi hook [OPTIONS]")
    e = {**env(), "MIYABI_HOME": str(tmp_path), "MIYABI_AGENT": "kaede"}
    r = subprocess.run(
        [sys.executable, "-m", "miyabi", "hook", "Stop"], env=e, capture_output=True, timeout=60, check=False
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    assert json.loads((tmp_path / "run" / "hooks" / "kaede.jsonl").read_text())["event"] == "Stop"


# ---------------------------------------------------------------- 6. untrusted text is shown, never obeyed

EVIL_TITLE = "evil \x1b]0;pwned\x07 \x9b31m red \x7f"
EVIL_BODY = "line one \x00 nul\n\tline two \x1b[2J\x9b\x07"
RAW = [b"\x1b", b"\x07", b"\x00", b"\xc2\x9b", b"\x7f"]
"""ESC, BEL, NUL, the C1 CSI (U+009B in UTF-8) and DEL, as bytes on the terminal."""


def assert_safe(out: bytes, allow_escape_codes: bool = False) -> None:
    text = re.sub(rb"\x1b\[[0-9;]*m", b"", out) if allow_escape_codes else out  # rich's own colours
    for raw in RAW:
        assert raw not in text, (raw, out)


@pytest.fixture
def evil(home: Path) -> Path:
    """A home with a task and a message whose text carries control bytes, as the
    dashboard, GitHub or an agent could have written them."""
    from miyabi.messaging.mailbox import MessageState, inbox, post
    from miyabi.work.store import Store

    Store.of_home(home).add(EVIL_TITLE, EVIL_BODY, ["bug\x1b[5m"])
    msg = post(home, "kaede", EVIL_BODY, sender="x\x9by")
    box = inbox(home, "kaede")
    box.move(msg, MessageState.PENDING, MessageState.FAILED, reason="died \x1b]0;owned\x07 here")
    return home


def test_task_add_prints_a_title_with_control_bytes_safely(home: Path) -> None:
    r = miyabi("task", "add", EVIL_TITLE, "--body", "-", "--home", str(home), stdin=EVIL_BODY.encode())
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"added task 1: evil \\x1b]0;pwned\\x07 \\x9b31m red \\x7f\n"
    assert_safe(r.stdout + r.stderr)
    from miyabi.work.store import Store

    assert Store.of_home(home).get(1).body == EVIL_BODY  # stored exactly; shown safely


def test_task_ls_and_show_print_control_bytes_visibly(evil: Path) -> None:
    h = ["--home", str(evil)]
    ls = miyabi("task", "ls", *h).stdout
    assert b"evil \\x1b]0;pwned\\x07 \\x9b31m red \\x7f" in ls
    show = miyabi("task", "show", "1", *h).stdout
    assert b"task 1 (#1) [queued] evil \\x1b]0;pwned\\x07 \\x9b31m red \\x7f\n" in show
    assert b"labels: bug\\x1b[5m" in show
    assert b"  line one \\x00 nul\n  \tline two \\x1b[2J\\x9b\\x07\n" in show  # the body keeps its lines and tab
    for out in (ls, show):
        assert_safe(out)


def test_json_keeps_the_data_and_escapes_what_a_terminal_would_obey(evil: Path) -> None:
    h = ["--home", str(evil)]
    for args in (["task", "ls", "--json"], ["task", "show", "1", "--json"], ["inbox", "kaede", "--all", "--json"]):
        r = miyabi(*args, *h)
        assert r.returncode == 0, r.stderr
        assert_safe(r.stdout)
        data = json.loads(r.stdout)
        first = data[0] if isinstance(data, list) else data
        if args[0] == "task":
            assert first["title"] == EVIL_TITLE and first["body"] == EVIL_BODY
        else:
            assert first["body"] == EVIL_BODY and first["reason"] == "died \x1b]0;owned\x07 here"
    assert b"\\u009b31m red \\u007f" in miyabi("task", "ls", "--json", *h).stdout


def test_inbox_all_prints_bodies_reasons_and_senders_safely(evil: Path) -> None:
    out = miyabi("inbox", "kaede", "--all", "--home", str(evil)).stdout
    assert_safe(out)
    assert b"x\\x9by" in out and b"died \\x1b]0;owned\\x07 here" in out


def test_on_a_terminal_the_rich_tables_show_control_bytes_too(evil: Path) -> None:
    for args in (["task", "ls"], ["task", "show", "1"], ["inbox", "kaede", "--all"]):
        out = on_a_terminal(*args, "--home", str(evil), cwd=evil)
        assert_safe(out, allow_escape_codes=True)
        assert b"\\x1b]0;" in out, out


def test_rich_markup_in_text_is_shown_not_obeyed(home: Path) -> None:
    from miyabi.work.store import Store

    Store.of_home(home).add("[red]not red[/red] [link=https://x.example]click[/link]")
    out = on_a_terminal("task", "ls", "--home", str(home), cwd=home)
    assert b"[red]not" in out and b"]8;" not in out  # the markup is text; no hyperlink was made


def test_one_function_shows_every_control_character() -> None:
    from miyabi.cli.output import dumps, visible

    every = "".join(chr(c) for c in range(0x20)) + "\x7f" + "".join(chr(c) for c in range(0x80, 0xA0))
    shown = visible(every)
    assert shown.isprintable() and shown.isascii()
    assert visible("a\tb\nc", lines=True) == "a\tb\nc" and visible("a\tb\nc") == "a\\tb\\nc"
    assert visible("héllo ✓ 雅") == "héllo ✓ 雅"  # printable text is left alone
    assert visible("bad \udcff byte") == "bad \\xff byte"  # a command-line byte that was not UTF-8
    assert json.loads(dumps(every)) == every and dumps(every).isascii()


def test_errors_show_control_bytes_too(home: Path) -> None:
    r = miyabi("send", "k\x1b]0;x\x07", "hi", "--home", str(home))
    assert r.returncode == 1 and b"k\\x1b]0;x\\x07" in r.stderr
    assert_safe(r.stderr)
    r = miyabi("job", "submit", str(home / "job \x1b]0;x\x07\x9b.json"), home=home)
    assert r.returncode == 1 and r.stderr.endswith(b"job \\x1b]0;x\\x07\\x9b.json: no such job file; check the path\n")
    assert_safe(r.stderr)
