"""`miyabi status` as a user runs it (a process of its own, on a terminal or piped)
against a real ensemble: one line per agent on a 120-column terminal, nothing cut when
piped, CPU figures from the controller, the running layout as the controller records
it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from helpers import on_terminal as run_on_terminal
from helpers import wait_for
from integration.conftest import Cli

REASON = (
    "exit status 70 after the agent printed: error: the model endpoint https://models.example.com/v1 "
    "refused the request (quota exhausted for the day); retrying later"
)


def miyabi(*args: str, home: Path, socket: str) -> list[str]:
    return [sys.executable, "-m", "miyabi", *args, "--home", str(home), "--socket", socket]


def on_terminal(argv: list[str]) -> str:
    """What ``argv`` prints on a terminal 120 columns wide."""
    _, code, out = run_on_terminal(argv)
    assert code == 0, out
    return out


def sixteen(tmp_path: Path) -> Path:
    f = tmp_path / "wide.yaml"
    agents = "".join(f"  - {{name: a{i:02d}, profile: shell, command: cat}}\n" for i in range(16))
    f.write_text(f"session: wide\nagents:\n{agents}")
    return f


def give_a_long_reason(home: Path) -> None:
    """What the watchdog records of an agent it restarted (no controller runs to rewrite it)."""
    record = {"agents": {"a00": {"history": {"restarts": [], "last_reason": REASON}}}}
    (home / "run" / "watchdog.json").write_text(json.dumps(record))


def test_on_a_120_column_terminal_each_agent_is_one_line(cli: Cli, home: Path, socket: str, tmp_path: Path) -> None:
    assert cli("up", str(sixteen(tmp_path)), "-d", "--no-controller").exit_code == 0
    give_a_long_reason(home)
    out = re.sub(r"\x1b\[[0-9;]*m", "", on_terminal(miyabi("status", home=home, socket=socket)))
    lines = [line for line in out.replace("\r\n", "\n").split("\n") if line.strip()]
    table = lines[lines.index(next(line for line in lines if line.startswith("agent"))) :]
    rows = [line for line in table if re.match(r"a\d\d ", line)]
    assert len(rows) == 16 and len(table) == 2 + 16, out  # header, its rule, one line per agent: none wrapped
    assert all(len(line.rstrip()) <= 120 for line in table), out
    first = next(line for line in rows if line.startswith("a00")).rstrip()
    assert "exit status 70" in first and first.endswith("…"), first  # the reason, cut where it had to be


def test_piped_nothing_is_cut(cli: Cli, home: Path, socket: str, tmp_path: Path) -> None:
    assert cli("up", str(sixteen(tmp_path)), "-d", "--no-controller").exit_code == 0
    give_a_long_reason(home)
    done = subprocess.run(miyabi("status", home=home, socket=socket), capture_output=True, text=True, check=True)
    rows = [line for line in done.stdout.splitlines() if re.match(r"a\d\d ", line)]
    assert len(rows) == 16 and "…" not in done.stdout
    assert rows[0].startswith("a00") and rows[0].endswith(REASON)  # whole, for grep


def test_status_shows_the_cpu_use_the_controller_measured(cli: Cli, home: Path, tmp_path: Path) -> None:
    f = tmp_path / "busy.yaml"
    f.write_text(
        "session: busy\nagents:\n"
        "  - {name: spin, profile: shell, command: \"sh -c 'while :; do :; done'\"}\n"
        "  - {name: calm, profile: shell, command: cat}\n"
    )
    assert cli("up", str(f), "-d").exit_code == 0
    record = home / "run" / "cpu.json"

    def agreed() -> dict[str, float] | None:
        """Status's figures, when the controller's record did not change meanwhile."""
        try:
            before = json.loads(record.read_text())
        except (OSError, ValueError):
            return None
        rows = {a["name"]: a for a in json.loads(cli("status", "--json").output)["agents"]}
        after = json.loads(record.read_text())
        if before != after or set(after["agents"]) != {"spin", "calm"}:
            return None
        for name, row in rows.items():
            assert row["cpu_percent"] == after["agents"][name]["cpu_percent"], (name, row, after)
        return {name: row["cpu_percent"] for name, row in rows.items()}

    figures = wait_for(lambda: (got := agreed()) is not None and got["spin"] > got["calm"] and got, what="spin busy")
    assert figures["spin"] > 0


def test_without_a_controller_cpu_is_the_use_over_the_process_life(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "busy.yaml"
    f.write_text("session: busy\nagents:\n  - {name: spin, profile: shell, command: \"sh -c 'while :; do :; done'\"}\n")
    assert cli("up", str(f), "-d", "--no-controller").exit_code == 0

    def spin() -> float:
        return float(json.loads(cli("status", "--json").output)["agents"][0]["cpu_percent"] or 0)

    wait_for(lambda: spin() > 0, what="spin's CPU use shown")


def test_status_follows_a_layout_edited_after_the_controller_recorded_it(cli: Cli, home: Path, tmp_path: Path) -> None:
    f = tmp_path / "l.yaml"
    f.write_text("session: edited\nagents:\n  - {name: a, profile: shell, command: cat}\n")
    assert cli("up", str(f), "-d").exit_code == 0
    wait_for(lambda: (home / "run" / "running.json").exists(), what="the controller's record")
    shown = json.loads(cli("status", "--json").output)["agents"]
    assert [(a["name"], a["command"]) for a in shown] == [("a", "cat")]
    f.write_text(
        "session: edited\nagents:\n  - {name: a, profile: shell, command: cat -u}\n"
        "  - {name: b, profile: shell, command: cat}\n"
    )
    shown = json.loads(cli("status", "--json").output)["agents"]
    assert [(a["name"], a["command"]) for a in shown] == [("a", "cat -u"), ("b", "cat")]  # the file, as it is now
    assert shown[1]["state"] == "missing"


def test_up_and_status_as_commands_of_their_own(home: Path, socket: str, tmp_path: Path) -> None:
    f = tmp_path / "l.yaml"
    f.write_text("session: own\nagents:\n  - {name: a, profile: shell, command: cat}\n")
    try:
        up = subprocess.run(
            miyabi("up", str(f), "-d", home=home, socket=socket), capture_output=True, text=True, check=False
        )
        assert up.returncode == 0, up.stderr
        assert "created session 'own'" in up.stdout and "controller started (pid" in up.stdout
        st = subprocess.run(
            miyabi("status", "--json", home=home, socket=socket), capture_output=True, text=True, check=False
        )
        assert st.returncode == 0 and json.loads(st.stdout)["controller"]["running"]
    finally:
        subprocess.run(miyabi("down", home=home, socket=socket), capture_output=True, check=False)
