"""Pane logs: the rotator run as tmux runs it (a real subprocess fed through a pipe), the
terminal-text cleaner, search and follow across rotated files, the ``logs:`` layout
section, ``miyabi logs`` through Typer's runner and its API endpoint through FastAPI's
TestClient."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import wait_for, write_layout
from typer.testing import CliRunner

from miyabi import defaults
from miyabi.cli import app
from miyabi.config import load
from miyabi.config.settings import LogSettings, parse_size
from miyabi.errors import UsageError
from miyabi.home import Home
from miyabi.supervision.logs import LineCleaner, LogLine, clean, compile_grep, follow, log_files, parse_since, search
from miyabi.tmux import logpipe
from miyabi.tmux.builder import LOGPIPE_SCRIPT, LOGPIPE_START, log_command, pane_setup
from miyabi.tmux.runner import escape_format

# ---------------------------------------------------------------- the rotator


def start_pipe(log: Path, max_bytes: int, keep: int) -> subprocess.Popen[bytes]:
    """The rotator as ``pipe-pane`` starts it, its input a pipe this test writes."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", str(LOGPIPE_SCRIPT), "--max-bytes", str(max_bytes), "--keep", str(keep), str(log)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_pipe(log: Path, data: bytes, max_bytes: int, keep: int, chunk: int = 997) -> None:
    """Feed ``data`` in ``chunk``-byte writes, close the input, and see the rotator exit 0."""
    p = start_pipe(log, max_bytes, keep)
    assert p.stdin is not None
    for i in range(0, len(data), chunk):
        p.stdin.write(data[i : i + chunk])
        p.stdin.flush()
    p.stdin.close()
    assert p.wait(timeout=60) == 0, p.stderr.read() if p.stderr else ""


def joined(log: Path) -> bytes:
    """Every file of the log, oldest first, as one byte string."""
    return b"".join(p.read_bytes() for p in log_files(log.parent, log.name.removesuffix(".log")))


def text_lines(n: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    return b"".join(f"line {i} {'x' * rnd.randrange(0, 120)}\r\n".encode() for i in range(n))


def test_the_rotator_loses_and_doubles_nothing_and_cuts_at_line_ends(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "a.log"
    log.parent.mkdir(mode=0o700)
    data = text_lines(3000)
    run_pipe(log, data, max_bytes=8192, keep=1000)
    files = log_files(log.parent, "a")
    assert len(files) > 10 and files[-1] == log
    assert joined(log) == logpipe.START + data  # what it read, after the mark where the process's output starts
    for f in files:
        body = f.read_bytes()
        assert 0 < len(body) <= 8192
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    for f in files[:-1]:
        assert f.read_bytes().endswith(b"\r\n"), f  # a rotation never splits a line shorter than the limit


def test_the_rotator_keeps_only_keep_rotated_files(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    data = text_lines(3000, seed=2)
    run_pipe(log, data, max_bytes=4096, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log", "a.log.1", "a.log.2", "a.log.3"]
    kept = joined(log)
    assert data.endswith(kept) and len(kept) > 3 * 3000
    # keep 0: the log starts over; only the newest output is left
    log0 = tmp_path / "b.log"
    run_pipe(log0, data, max_bytes=4096, keep=0)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("b.")) == ["b.log"]
    assert data.endswith(log0.read_bytes()) and 0 < log0.stat().st_size <= 4096


def test_a_line_longer_than_the_limit_is_cut_at_the_limit(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    data = b"short\n" + b"y" * 10_000 + b"\nend\n"
    run_pipe(log, data, max_bytes=4096, keep=10, chunk=65536)
    assert joined(log) == logpipe.START + data
    assert all(p.stat().st_size <= 4096 for p in log_files(tmp_path, "a"))


def test_max_bytes_0_never_rotates_and_an_oversized_old_log_rotates_first(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    run_pipe(log, b"z" * 50_000 + b"\n", max_bytes=0, keep=5)
    size = 50_001 + len(logpipe.START)
    assert log_files(tmp_path, "a") == [log] and log.stat().st_size == size
    run_pipe(log, b"new\n", max_bytes=4096, keep=5)  # a log bigger than the limit, from before
    assert log.read_bytes() == logpipe.START + b"new\n" and (tmp_path / "a.log.1").stat().st_size == size


def test_a_smaller_keep_removes_the_files_a_larger_one_left(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    run_pipe(log, text_lines(2000), max_bytes=2048, keep=8)
    assert len(log_files(tmp_path, "a")) == 9
    run_pipe(log, text_lines(40), max_bytes=2048, keep=2)
    assert [p.name for p in log_files(tmp_path, "a")] == ["a.log.2", "a.log.1", "a.log"]


def test_the_rotator_writes_each_read_at_once_and_exits_when_its_input_closes(tmp_path: Path) -> None:
    log = tmp_path / "gone" / "a.log"  # its directory is missing: made 0700
    p = start_pipe(log, 1 << 20, 5)
    assert p.stdin is not None
    try:
        p.stdin.write(b"first part, no newline")
        p.stdin.flush()
        want = logpipe.START + b"first part, no newline"
        wait_for(lambda: log.exists() and log.read_bytes() == want, what="the bytes in the log")
        assert p.poll() is None
        assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700 and stat.S_IMODE(log.stat().st_mode) == 0o600
    finally:
        p.stdin.close()
    assert p.wait(timeout=30) == 0


def test_the_rotator_writes_what_it_holds_before_it_stops_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    p = start_pipe(log, 1 << 20, 5)
    assert p.stdin is not None
    p.stdin.write(b"before the signal\n")
    p.stdin.flush()
    wait_for(lambda: log.exists() and log.stat().st_size > 0, what="the rotator running")
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0
    assert log.read_bytes() == logpipe.START + b"before the signal\n"
    p.stdin.close()


def test_two_writers_on_one_log_lose_nothing(tmp_path: Path) -> None:
    """A respawned pane's new pipe and the old one's last bytes share the log for a moment."""
    log = tmp_path / "a.log"
    procs = [start_pipe(log, 3000, 10_000) for _ in range(2)]
    sent = [[f"writer {w} line {i} {'.' * (i % 50)}\n".encode() for i in range(3000)] for w in range(2)]
    for i in range(0, 3000, 7):  # whole lines per write, so that lines stay whole in the shared file
        for p, s in zip(procs, sent, strict=True):
            assert p.stdin is not None
            p.stdin.write(b"".join(s[i : i + 7]))
            p.stdin.flush()
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
        assert p.wait(timeout=60) == 0
    whole = joined(log)
    assert whole.count(logpipe.START) == 2  # one mark per writer, each before its own first bytes
    got = whole.replace(logpipe.START, b"").splitlines(keepends=True)
    want = [line for s in sent for line in s]
    assert sorted(got) == sorted(want)


def test_the_rotator_refuses_bad_arguments(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-I", "-S", str(LOGPIPE_SCRIPT), "--max-bytes", "ten", str(tmp_path / "a.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--max-bytes needs a whole number" in r.stderr


def test_the_rotator_uses_the_homes_modes_and_the_layouts_default_limits() -> None:
    assert (logpipe.FILE_MODE, logpipe.DIR_MODE) == (defaults.FILE_MODE, defaults.DIR_MODE)
    assert (logpipe.MAX_BYTES, logpipe.KEEP) == (defaults.LOG_MAX_BYTES, defaults.LOG_KEEP)
    assert logpipe.parse(["x.log"]) == (defaults.LOG_MAX_BYTES, defaults.LOG_KEEP, "x.log")


def test_the_pipe_command_leaves_out_the_default_limits(tmp_path: Path) -> None:
    f = tmp_path / "l.yaml"
    f.write_text("agents:\n  - {name: a, profile: shell, command: cat}\n")
    line = log_command(load(f).agents[0], Home(tmp_path))
    assert "--max-bytes" not in line and "--keep" not in line and line.endswith("a.log")


def test_the_pipe_command_quotes_every_word(tmp_path: Path) -> None:
    home = Home(tmp_path / "it's a #1 home")
    f = write_layout(tmp_path / "l.yaml", [("a", "shell", "cat")], logs={"max_bytes": "2M", "keep": 3})
    agent = load(f).agents[0]
    line = log_command(agent, home)
    assert line.startswith("umask 077; exec ")
    import shlex

    words = shlex.split(line.removeprefix("umask 077; exec "))
    assert words == [
        sys.executable,
        "-I",
        "-S",
        "-c",
        LOGPIPE_START,
        "--max-bytes",
        str(2 << 20),
        "--keep",
        "3",
        str(home.pane_log("a")),
    ]
    pipe = next(c for c in pane_setup(agent, home) if c[0] == "pipe-pane")
    assert pipe[-1] == escape_format(line) and "##1" in pipe[-1]


# ---------------------------------------------------------------- terminal text


@pytest.mark.parametrize(
    ("raw", "lines"),
    [
        ("hello\r\nworld\r\n", ["hello", "world"]),
        ("\x1b[1;31mred\x1b[0m and \x1b[38;2;1;2;3mtrue colour\x1b[39m\r\n", ["red and true colour"]),
        ("50%\r75%\r100%\r\n", ["100%"]),
        ("abcdef\rXY\r\n", ["XYcdef"]),  # what a terminal shows: the overwrite covers only its own width
        ("spinning |\r\x1b[Kdone\r\n", ["done"]),
        ("typo\b\b\bext\r\n", ["text"]),
        ("\x1b]0;window title\x07shown\r\n", ["shown"]),
        ("\x1b]8;;https://example.com\x1b\\a link\x1b]8;;\x1b\\\r\n", ["a link"]),
        ("\x1b(0lqk\x1b(B box\r\n", ["lqk box"]),
        ("\x1b7saved\x1b8\x1b=\x1b>\r\n", ["saved"]),
        ("\x1bP1$r0m\x1b\\dcs gone\r\n", ["dcs gone"]),
        ("top\x1b[2Amiddle\x1b[5;1Hbottom\r\n", ["top", "middle", "bottom"]),
        ("\x1b[2J\x1b[Hcleared\r\n", ["cleared"]),
        ("a\tb\r\n", ["a       b"]),
        ("one\r\n\r\nthree   \r\n", ["one", "", "three"]),
        ("abcdef\x1b[3D\x1b[K!\r\n", ["abc!"]),
        ("col\x1b[10Gx\r\n", ["col      x"]),
        ("\x1b[?2004h\x1b[?25lworker> ", ["worker>"]),  # an unfinished last line counts at the end
        ("bell\x07 and \x00nul\r\n", ["bell and nul"]),
        ("broken \x1b\x01escape\r\n", ["broken escape"]),
    ],
)
def test_terminal_text_becomes_the_lines_a_reader_saw(raw: str, lines: list[str]) -> None:
    assert clean(raw) == lines


def test_sequences_split_between_reads_are_completed() -> None:
    raw = "\x1b[32mgreen\x1b[0m\r\n\x1b]0;a title\x07text\r\nmore\x1b[1A\r\n"
    for cut in range(1, len(raw)):
        c = LineCleaner()
        assert c.feed(raw[:cut]) + c.feed(raw[cut:]) + c.end() == ["green", "text", "more", ""], cut


def test_a_line_without_end_is_cut_at_line_max() -> None:
    c = LineCleaner(line_max=100)
    out = c.feed("x" * 250 + "\n")
    assert [len(x) for x in out] == [100, 100, 50]


# ---------------------------------------------------------------- search and follow


def write_logs(home: Home, agent: str, parts: list[bytes]) -> list[Path]:
    """``parts`` as the agent's files, oldest first (the last is the live log)."""
    home.logs.mkdir(parents=True, exist_ok=True)
    paths = [home.logs / f"{agent}.log.{n}" for n in range(len(parts) - 1, 0, -1)] + [home.pane_log(agent)]
    for p, data in zip(paths, parts, strict=True):
        p.write_bytes(data)
    return paths


def texts(lines: Iterator[LogLine] | list[LogLine]) -> list[str]:
    return [x.text for x in lines]


def test_search_reads_rotated_files_oldest_first_as_one_stream(tmp_path: Path) -> None:
    home = Home(tmp_path)
    # a line and an escape sequence split by a rotation; a file with a double-digit number
    parts = [b"ancient\r\n", b"old \x1b[3", b"1mred\x1b[0m one\r\nsec", b"ond\r\nthird\r\n"]
    paths = write_logs(home, "a", parts)
    assert log_files(home.logs, "a") == paths
    got = list(search(home, "a"))
    assert texts(got) == ["ancient", "old red one", "second", "third"]
    assert [(x.file, x.line) for x in got] == [("a.log.3", 1), ("a.log.2", 1), ("a.log.1", 1), ("a.log", 1)]
    assert got[0].to_json() == {"agent": "a", "file": "a.log.3", "line": 1, "text": "ancient"}
    (home.logs / "a.log.10").write_bytes(b"oldest\r\n")
    (home.logs / "ab.log.1").write_bytes(b"another agent\r\n")
    assert texts(search(home, "a"))[:2] == ["oldest", "ancient"]
    assert texts(search(home, "a", compile_grep("^(old|th)"))) == ["oldest", "old red one", "third"]
    assert texts(search(home, "a", last=2)) == ["second", "third"]
    assert list(search(home, "nobody")) == []


def test_since_skips_files_last_written_before_the_cut_off(tmp_path: Path) -> None:
    home = Home(tmp_path)
    paths = write_logs(home, "a", [b"two days old\r\n", b"two hours old\r\n", b"now\r\n"])
    now = 1_000_000_000.0
    for p, age in zip(paths, [2 * 86400, 2 * 3600, 5], strict=True):
        os.utime(p, (now - age, now - age))
    assert texts(search(home, "a", since=3 * 3600, clock=lambda: now)) == ["two hours old", "now"]
    assert texts(search(home, "a", since=60, clock=lambda: now)) == ["now"]
    assert texts(search(home, "a", since=parse_since("1d"), clock=lambda: now)) == ["two hours old", "now"]


def test_bad_grep_and_since_are_one_line_usage_errors() -> None:
    with pytest.raises(UsageError) as e:
        compile_grep("(unclosed")
    assert "grep pattern '(unclosed' is not a regular expression" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UsageError, match="since 'yesterday' is not a duration; use one such as 90s"):
        parse_since("yesterday")
    assert compile_grep(None) is None and parse_since(None) is None and parse_since("90s") == 90


def test_follow_goes_on_through_rotations(tmp_path: Path) -> None:
    """Driven without threads: each "sleep" of follow's poll does the next thing the
    agent and its rotator would."""
    home = Home(tmp_path)
    write_logs(home, "a", [b"old\r\n", b"current\r\npart"])
    log = home.pane_log("a")

    def append(data: bytes) -> Callable[[], None]:
        def go() -> None:
            with log.open("ab") as f:
                f.write(data)

        return go

    def rotate(times: int, tail: bytes) -> Callable[[], None]:
        def go() -> None:
            for i in range(times):
                for n in sorted((int(p.name.rsplit(".", 1)[1]) for p in home.logs.glob("a.log.*")), reverse=True):
                    os.replace(home.logs / f"a.log.{n}", home.logs / f"a.log.{n + 1}")
                with log.open("ab") as f:
                    f.write(tail if i == 0 else f"between {i}\r\n".encode())
                os.replace(log, home.logs / "a.log.1")
            log.write_bytes(b"fresh\r\n")

        return go

    steps = [
        append(b"ial\r\n"),
        rotate(1, b"last words\r\n"),
        append(b"after\r\nhalf"),
        rotate(3, b" end\r\n"),
        append(b""),
    ]

    def sleep(_: float) -> None:
        steps.pop(0)()

    got = list(follow(home, "a", stop=lambda: not steps, sleep=sleep))
    assert texts(got) == [
        "old",
        "current",
        "partial",
        "last words",
        "fresh",
        "after",
        "half end",
        "between 1",
        "between 2",
        "fresh",
    ]
    assert texts(follow(home, "a", compile_grep("fresh|after"), last=1, stop=lambda: True)) == ["fresh"]


# ---------------------------------------------------------------- layout


def test_the_logs_section_sets_every_agents_rotation(tmp_path: Path) -> None:
    f = write_layout(tmp_path / "l.yaml", ["a", "b"], logs={"max_bytes": "512K", "keep": 2})
    lay = load(f)
    assert lay.logs == LogSettings(max_bytes=512 * 1024, keep=2)
    assert all(a.logs == lay.logs for a in lay.agents)
    write_layout(f, ["a"])
    assert load(f).agents[0].logs == LogSettings(defaults.LOG_MAX_BYTES, defaults.LOG_KEEP)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (4096, 4096),
        ("10M", 10 << 20),
        ("10MiB", 10 << 20),
        ("10 MB", 10 << 20),
        ("512k", 512 << 10),
        ("1G", 1 << 30),
        ("2048", 2048),
        ("100B", 100),
        (0, 0),
        (-1, None),
        ("1.5M", None),
        ("ten", None),
        (True, None),
        (1.5, None),
    ],
)
def test_parse_size(value: object, size: int | None) -> None:
    assert parse_size(value) == size


# ---------------------------------------------------------------- the command and the API

runner = CliRunner()


@pytest.fixture
def logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIYABI_SOCKET", "miyabi_unit_never_started")
    monkeypatch.delenv("MIYABI_HOME", raising=False)
    home = Home(tmp_path / "home")
    home.ensure()
    home.save_state(
        layout=str(tmp_path / "l.yaml"), session="s", socket="miyabi_unit_never_started", agents=["kaede", "quiet"]
    )
    write_logs(home, "kaede", [b"\x1b[1mbuild\x1b[0m started\r\n", b"build ok\r\nidle\r\n"])
    return home


def test_logs_prints_plain_lines_and_json(logged: Home) -> None:
    h = ["--home", str(logged.root)]
    r = runner.invoke(app, ["logs", "kaede", *h])
    assert r.exit_code == 0, r.output
    assert r.output == "build started\nbuild ok\nidle\n"
    r = runner.invoke(app, ["logs", "kaede", "--grep", "^build", "--json", *h])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == [
        {"agent": "kaede", "file": "kaede.log.1", "line": 1, "text": "build started"},
        {"agent": "kaede", "file": "kaede.log", "line": 1, "text": "build ok"},
    ]
    r = runner.invoke(app, ["logs", "kaede", "-n", "1", *h])
    assert r.output == "idle\n"
    r = runner.invoke(app, ["logs", "quiet", *h])  # in the ensemble, printed nothing yet
    assert r.exit_code == 0 and r.output == ""


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (
            ["logs", "kaede", "--grep", "(x"],
            2,
            "miyabi: logs: invalid value for '--grep' / '-g': '(x' is not a regular expression",
        ),
        (
            ["logs", "kaede", "--since", "soon"],
            2,
            "miyabi: logs: invalid value for '--since': 'soon' is not a duration",
        ),
        (["logs", "kaeed"], 1, "miyabi: unknown agent 'kaeed'; did you mean 'kaede'?"),
    ],
)
def test_logs_errors_are_one_line(logged: Home, args: list[str], code: int, text: str) -> None:
    r = runner.invoke(app, [*args, "--home", str(logged.root)])
    assert r.exit_code == code, r.output
    assert r.output.count("\n") == 1 and r.output.startswith(text), r.output


def test_the_logs_endpoint(logged: Home, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from miyabi.controller.view import Target
    from miyabi.web.app import create_app
    from miyabi.web.auth import Access
    from miyabi.web.site import Site

    layout = write_layout(tmp_path / "l.yaml", ["kaede", "quiet"], session="s")
    site = Site(Target(logged, "miyabi_unit_never_started", "s", layout), Access(token="t", view_token=None))
    try:
        client = TestClient(create_app(site), headers={"Authorization": "Bearer t"})
        r = client.get("/api/v1/agents/kaede/logs")
        assert r.status_code == 200 and texts([LogLine(**x) for x in r.json()]) == ["build started", "build ok", "idle"]
        r = client.get("/api/v1/agents/kaede/logs", params={"grep": "build", "limit": 1})
        assert r.json() == [{"agent": "kaede", "file": "kaede.log", "line": 1, "text": "build ok"}]
        assert client.get("/api/v1/agents/quiet/logs").json() == []
        r = client.get("/api/v1/agents/kaede/logs", params={"grep": "("})
        assert r.status_code == 400 and "is not a regular expression" in r.json()["error"]
        r = client.get("/api/v1/agents/kaede/logs", params={"since": "later"})
        assert r.status_code == 400 and "is not a duration" in r.json()["error"]
        assert client.get("/api/v1/agents/nobody/logs").status_code == 404
        assert client.get("/api/v1/agents/kaede/logs", params={"limit": 0}).status_code == 422
        assert TestClient(create_app(site)).get("/api/v1/agents/kaede/logs").status_code == 401
    finally:
        site.close()
