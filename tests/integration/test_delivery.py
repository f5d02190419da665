"""miyabi send → controller → pane, against a real tmux server and real worker and
`cat` agents. Counts come from what the agents themselves received: the worker's
transcript, or the file `cat` writes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import stays, wait_for, write_layout
from integration.conftest import Cli, capture

from miyabi.cli.send import main as send_main
from miyabi.controller import read_pid, running_pid
from miyabi.home import Home
from miyabi.messaging.mailbox import inbox
from miyabi.times import parse_rfc3339

FAST_WORKER = {"submit_delay": 0.03, "ready_settle": 0.03}


def worker(name: str, args: str = "", fast: bool = True, **more: object) -> dict[str, object]:
    """A worker agent's layout entry: ``args`` to ``miyabi worker``, ``fast`` short submit
    and settle delays, ``more`` other keys of the agent."""
    cmd = {"command": f"miyabi worker {args}"} if args else {}
    return {"name": name, "profile": "worker", **cmd, **(FAST_WORKER if fast else {}), **more}


def send(home: Path, *args: str) -> str:
    """Send through the real `miyabi send` code path, in-process; return the id."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = send_main("send", [*args, "--home", str(home)])
    assert rc == 0, f"miyabi send {args} exited {rc}"
    return out.getvalue().strip()


def transcript(home: Path, agent: str) -> list[str]:
    f = home / "logs" / f"{agent}.transcript.jsonl"
    if not f.exists():
        return []
    return [json.loads(line)["text"] for line in f.read_text().splitlines()]


def state_of(home: Path, agent: str, msg_id: str) -> str | None:
    hit = inbox(home, agent).find(msg_id)
    return hit[0] if hit else None


def test_a_message_reaches_the_worker_and_shows_delivered(cli: Cli, home: Path, tmp_path: Path, panes, tmux) -> None:
    lay = write_layout(tmp_path / "one.yaml", [worker("sakura", fast=False)], session="one")
    assert cli("up", str(lay), "-d").exit_code == 0
    mid = send(home, "sakura", "hello")
    wait_for(lambda: transcript(home, "sakura") == ["hello"], what="hello in the transcript")
    wait_for(lambda: state_of(home, "sakura", mid) == "delivered", what="delivered state")
    r = cli("inbox", "sakura", "--all", "--json")
    (item,) = json.loads(r.output)
    assert item["id"] == mid and item["state"] == "delivered" and item["delivered"]
    assert "ack hello" in capture(tmux, panes("one")["sakura"].pane_id)

    def kinds() -> list[str]:
        """The message's events, once the last is written (after its state turned delivered)."""
        events = [json.loads(x) for x in (home / "logs" / "events.jsonl").read_text().splitlines()]
        said = [e["event"] for e in events if e.get("id") == mid]
        return said if "delivered" in said else []

    assert wait_for(kinds, what="the delivered event") == ["enqueued", "typing", "delivered"]


def test_8_senders_x_200_messages_to_cat_arrive_once_and_in_order(cli: Cli, home: Path, tmp_path: Path) -> None:
    out = tmp_path / "cat.out"
    lay = write_layout(
        tmp_path / "many.yaml", [("sink", "shell", f"sh -c 'stty -echo; exec cat > {out}'")], session="many"
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    script = (
        "import sys; from miyabi.cli.send import main\n"
        "s, home = sys.argv[1], sys.argv[2]\n"
        "for i in range(200):\n"
        "    assert main('send', ['sink', f'{s}-{i:03d}', '--from', s, '--home', home]) == 0\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, f"s{k}", str(home)], stdout=subprocess.DEVNULL)
        for k in range(8)
    ]
    assert all(p.wait(120) == 0 for p in procs)

    def lines() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []

    wait_for(lambda: len(lines()) >= 1600, timeout=120, what="1600 lines from cat")
    got = lines()
    assert len(got) == 1600 and len(set(got)) == 1600, "every message once"
    for k in range(8):
        mine = [x for x in got if x.startswith(f"s{k}-")]
        assert mine == [f"s{k}-{i:03d}" for i in range(200)], f"sender s{k} out of order"
    # The text reaches cat before its file moves to cur/: wait for the last move.
    wait_for(lambda: not inbox(home, "sink").pending(), timeout=10, what="an empty inbox")


HOSTILE = {
    "words": "Enter C-c Escape C-d",
    "etx": "before\x03after",
    "cr": "one\rtwo",
    "esc": "\x1b[31mred\x1b[0m plain",
    "paste-end": "a\x1b[201~b\x1b[200~c",
    "long-line": "L" * 100_000,
    "thousand-lines": "\n".join(f"line {i}" for i in range(1000)),
    "emoji-cjk": "日本語のテキスト 🎉🚀 émoji ✓",
    "quotes-and-dollars": 'it\'s "$HOME" ~ #{pane_id} ; \\ `x`',
    "leading-dash": "-l --help",
}


def test_hostile_bodies_arrive_as_text_and_act_as_nothing_else(cli: Cli, home: Path, tmp_path: Path, panes) -> None:
    lay = write_layout(tmp_path / "hostile.yaml", [worker("kaede")], session="hostile")
    assert cli("up", str(lay), "-d").exit_code == 0
    for body in HOSTILE.values():
        send(home, "kaede", body)
    from miyabi.messaging.delivery import prepare

    want = [prepare(b) for b in HOSTILE.values()]
    wait_for(lambda: len(transcript(home, "kaede")) >= len(want), timeout=60, what="all hostile bodies")
    assert transcript(home, "kaede") == want
    assert want[1] == "beforeafter" and want[4] == "a[201~b[200~c"
    pane = panes("hostile")["kaede"]
    assert not pane.dead  # C-c / \x03 did not kill it


def test_non_utf8_stdin_and_oversized_bodies_are_refused(home: Path, tmp_path: Path) -> None:
    (home / "run").mkdir()
    (home / "run" / "up.json").write_text(json.dumps({"agents": ["kaede"], "max_body": 1000}))
    env = {**os.environ, "MIYABI_HOME": str(home)}
    cmd = [sys.executable, "-m", "miyabi", "send", "kaede", "-"]
    r = subprocess.run(cmd, input=b"ok \xff\xfe", capture_output=True, env=env, check=False)
    assert r.returncode == 1 and b"not valid UTF-8" in r.stderr
    r = subprocess.run(cmd, input=b"x" * 1001, capture_output=True, env=env, check=False)
    assert r.returncode == 1 and b"over the limit of 1,000" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "miyabi", "send", "kaedee", "hi"], capture_output=True, env=env, check=False
    )
    assert r.returncode == 1 and b"did you mean 'kaede'?" in r.stderr
    assert not inbox(home, "kaede").pending()


def test_a_message_for_a_busy_worker_waits_until_it_is_idle(cli: Cli, home: Path, tmp_path: Path) -> None:
    lay = write_layout(tmp_path / "busy.yaml", [worker("tsubaki", "--think 2")], session="busy")
    assert cli("up", str(lay), "-d").exit_code == 0
    send(home, "tsubaki", "first")
    wait_for(lambda: transcript(home, "tsubaki") == ["first"], what="first message")
    second = send(home, "tsubaki", "second")
    wait_for(lambda: transcript(home, "tsubaki") == ["first", "second"], timeout=10, what="second message")
    # typed once the worker was done thinking (2 s from when it got the first; times in ms)
    got_first = parse_rfc3339(json.loads((home / "logs" / "tsubaki.transcript.jsonl").open().readline())["time"])
    events = [json.loads(x) for x in (home / "logs" / "events.jsonl").read_text().splitlines()]
    typed = min(parse_rfc3339(e["time"]) for e in events if e.get("id") == second and e["event"] == "typing")
    assert typed - got_first >= 1.99, "typed into a busy agent"
    assert state_of(home, "tsubaki", second) == "delivered" or wait_for(
        lambda: state_of(home, "tsubaki", second) == "delivered"
    )


def test_a_pane_in_copy_mode_still_gets_its_message(cli: Cli, home: Path, tmp_path: Path, panes, tmux) -> None:
    lay = write_layout(tmp_path / "copy.yaml", [worker("botan")], session="copy")
    assert cli("up", str(lay), "-d").exit_code == 0
    pane = panes("copy")["botan"]
    wait_for(lambda: "worker>" in capture(tmux, pane.pane_id), what="prompt")
    tmux.run("copy-mode", "-t", pane.pane_id)
    assert panes("copy")["botan"].in_mode
    send(home, "botan", "through copy mode")
    wait_for(lambda: transcript(home, "botan") == ["through copy mode"], what="message")
    assert not panes("copy")["botan"].in_mode


def test_a_message_for_a_dead_agent_waits_and_arrives_after_it_is_back(
    cli: Cli, home: Path, tmp_path: Path, panes
) -> None:
    # max_restarts 0: the watchdog gives up at once, so the agent stays dead until
    # `miyabi restart` brings it back.
    lay = write_layout(tmp_path / "dead.yaml", [worker("ayame")], session="dead", watchdog={"max_restarts": 0})
    assert cli("up", str(lay), "-d").exit_code == 0
    pane = panes("dead")["ayame"]
    os.kill(pane.pid, signal.SIGKILL)
    wait_for(lambda: panes("dead")["ayame"].dead, what="dead pane")
    mid = send(home, "ayame", "after the restart")
    # A probe ahead of it (high priority) with a short ttl: only the deliverer fails an
    # expired message, and only when it reads the head of the inbox, so its failure shows
    # the deliverer looking while the agent is dead (it looks at the message next).
    probe = send(home, "ayame", "a probe", "--priority", "high", "--ttl", "0.5")
    wait_for(lambda: state_of(home, "ayame", probe) == "failed", what="the deliverer to fail the probe")
    stays(
        lambda: state_of(home, "ayame", mid) == "pending", seconds=1.0, what="the message waiting while ayame is dead"
    )
    r = cli("restart", "ayame")
    assert r.exit_code == 0, r.output
    wait_for(lambda: transcript(home, "ayame") == ["after the restart"], what="delivery after the restart")


def test_messages_wait_while_the_controller_is_down_high_priority_first(cli: Cli, home: Path, tmp_path: Path) -> None:
    lay = write_layout(tmp_path / "order.yaml", [worker("kaede")], session="order")
    assert cli("up", str(lay), "-d", "--no-controller").exit_code == 0
    send(home, "kaede", "normal-1")
    send(home, "kaede", "normal-2")
    send(home, "kaede", "urgent", "--priority", "high")
    assert len(inbox(home, "kaede").pending()) == 3
    r = cli("inbox", "kaede")
    assert r.output.count("pending") == 3
    assert cli("up", str(lay), "-d").exit_code == 0  # starts the controller
    wait_for(lambda: len(transcript(home, "kaede")) == 3, what="three messages")
    assert transcript(home, "kaede") == ["urgent", "normal-1", "normal-2"]


def test_only_one_controller_per_home(cli: Cli, home: Path, tmp_path: Path, socket: str) -> None:
    lay = write_layout(tmp_path / "single.yaml", [worker("kaede")], session="single")
    assert cli("up", str(lay), "-d").exit_code == 0
    pid = running_pid(Home(home))
    assert pid
    r = subprocess.run(
        [sys.executable, "-m", "miyabi", "controller", "--home", str(home), "--socket", socket, "--layout", str(lay)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 1
    assert f"a controller already runs for {home}" in r.stderr and str(pid) in r.stderr
    assert read_pid(Home(home)) == pid


def test_controller_killed_at_random_moments_loses_and_doubles_nothing(
    home: Path, tmp_path: Path, socket: str, cli: Cli
) -> None:
    """Eight controllers are SIGKILLed mid-stream, each at a random moment after it
    delivered at least one more message (positions in the stream, not wall-clock
    times, so a fast machine cannot finish the stream before the kills)."""
    lay = write_layout(tmp_path / "chaos.yaml", [worker("kaede")], session="chaos")
    assert cli("up", str(lay), "-d", "--no-controller").exit_code == 0
    n, kills = 60, 8
    for i in range(n):
        send(home, "kaede", f"msg-{i:03d}")
    argv = [sys.executable, "-m", "miyabi", "controller", "--home", str(home), "--socket", socket, "--layout", str(lay)]
    rng = random.Random(7)
    marks = sorted(rng.sample(range(1, n - 10), kills))  # kill once the transcript reaches each mark
    for mark in marks:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda m=mark: len(transcript(home, "kaede")) >= m, timeout=60, what=f"{mark} messages delivered")
        time.sleep(rng.uniform(0, 0.15))  # a random moment inside the next delivery
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(transcript(home, "kaede")) >= n, timeout=60, what="the rest of the stream")
        # the worker writes its transcript as a message arrives; the controller marks it
        # delivered just after: stopping it in between would leave the last one to the next
        wait_for(lambda: not inbox(home, "kaede").pending(), timeout=60, what="every message marked delivered")
    finally:
        proc.terminate()
        proc.wait(10)
    got = transcript(home, "kaede")
    assert sorted(got) == [f"msg-{i:03d}" for i in range(n)], "lost or doubled"
    assert got == sorted(got), "out of order"
    assert not inbox(home, "kaede").pending()


def test_intro_message_for_profiles_that_ask_for_it(cli: Cli, home: Path, tmp_path: Path) -> None:
    lay = write_layout(tmp_path / "intro.yaml", [worker("kaede", intro=True), worker("sakura")], session="intro")
    assert cli("up", str(lay), "-d").exit_code == 0
    first = wait_for(lambda: transcript(home, "kaede"), what="intro")[0]
    assert first.startswith("You are kaede") and "sakura" in first and "miyabi send" in first
    send(home, "sakura", "ping")
    wait_for(lambda: transcript(home, "sakura") == ["ping"], what="sakura gets no intro")


def test_retry_and_drop(cli: Cli, home: Path, tmp_path: Path) -> None:
    lay = write_layout(tmp_path / "rd.yaml", [worker("kaede")], session="rd")
    assert cli("up", str(lay), "-d", "--no-controller").exit_code == 0
    keep = send(home, "kaede", "keep me")
    gone = send(home, "kaede", "drop me")
    expired = send(home, "kaede", "too late", "--ttl", "2")
    r = cli("drop", gone)
    assert r.exit_code == 0 and "dropped" in r.output
    from miyabi.messaging.mailbox import inbox as inbox_of

    wait_for(
        lambda: all(m.expired(time.time()) for s_, m in inbox_of(home, "kaede").list() if m.id == expired),
        what="the ttl to run out",
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    wait_for(lambda: state_of(home, "kaede", expired) == "failed", what="expired message to fail")
    items = {i["id"]: i for i in json.loads(cli("inbox", "kaede", "--all", "--json").output)}
    assert "ttl" in items[expired]["reason"] and gone not in items
    wait_for(lambda: transcript(home, "kaede") == ["keep me"], what="keep me")
    r = cli("retry", keep)
    assert r.exit_code == 1 and "not a dead letter" in r.output
    r = cli("retry", expired)
    assert r.exit_code == 0 and "with a fresh ttl of 2 s" in r.output
    # its ttl counts again from the retry: delivered this time, not dead again
    wait_for(lambda: transcript(home, "kaede") == ["keep me", "too late"], what="the retried message delivered")
    assert state_of(home, "kaede", expired) == "delivered"


def test_a_prompt_pattern_ending_in_a_blank_is_seen_and_the_agent_gets_its_message(
    cli: Cli, home: Path, tmp_path: Path
) -> None:
    """A program that prints ``agent> `` and a profile whose ``ready_pattern`` is
    ``'agent> $'``: tmux drops the trailing blank from the captured row, the cursor
    still sits after it."""
    out = tmp_path / "got.txt"
    script = f'while printf "agent> "; IFS= read -r line; do printf "%s\\n" "$line" >> {out}; done'
    lay = write_layout(
        tmp_path / "prompty.yaml",
        [("p", "prompty", f"sh -c '{script}'")],
        session="prompty",
        profiles={
            "prompty": {"extends": "shell", "ready_pattern": "agent> $", "submit_delay": 0.05, "ready_settle": 0.05}
        },
    )
    assert cli("up", str(lay), "-d").exit_code == 0
    mid = send(home, "p", "hello prompt")
    wait_for(lambda: out.exists() and out.read_text() == "hello prompt\n", timeout=20, what="the line delivered")
    wait_for(lambda: state_of(home, "p", mid) == "delivered", timeout=20, what="delivered")


def test_a_dead_letter_retried_while_its_agent_is_busy_waits_its_whole_ttl_again(
    cli: Cli, home: Path, tmp_path: Path
) -> None:
    """Issue 21: a retried dead letter whose ttl ran out must not fail again at once; it
    waits, a whole ttl from the retry, for its agent to be ready (here: busy 8 s after
    its first message; the second, with a ttl of 5 s, dies of old age meanwhile)."""
    lay = write_layout(tmp_path / "ttl.yaml", [worker("kaede", "--think 8")], session="ttl")
    assert cli("up", str(lay), "-d").exit_code == 0
    send(home, "kaede", "first")
    wait_for(lambda: transcript(home, "kaede") == ["first"], what="the first message")
    late = send(home, "kaede", "late", "--ttl", "5")
    wait_for(lambda: state_of(home, "kaede", late) == "failed", timeout=15, what="the ttl to run out")
    assert transcript(home, "kaede") == ["first"]
    r = cli("retry", late[:13])
    assert r.exit_code == 0 and r.output == f"{late} is pending again in kaede's inbox with a fresh ttl of 5 s\n"
    wait_for(lambda: transcript(home, "kaede") == ["first", "late"], timeout=20, what="the retried message delivered")
    wait_for(lambda: state_of(home, "kaede", late) == "delivered", what="the retried message marked delivered")
    events = [json.loads(x) for x in (home / "logs" / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e.get("id") == late and e["event"] in ("dead-letter", "retry")] == [
        "dead-letter",
        "retry",
    ]
