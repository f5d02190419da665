"""A scripted coding agent the pipeline tests own: it reads each message from its pane
like any agent (miyabi's worker screen: prompt, echo, bracketed paste), and for each
message that names a task (``miyabi task done N``) it plays the next round of its
plan: write files in its working directory (the task's worktree), maybe commit, then
say ``miyabi task done N``.

The plan is JSON in the file ``$PLAN``: ``{"rounds": [[action, ...], ...]}`` with
actions ``{"write": PATH, "text": TEXT}``, ``{"commit": MESSAGE}``, ``{"run": SHELL}``, ``{"done": NOTE}``.
Every message is appended to ``$PLAN_LOG`` (JSON lines: text, cwd, task) for the test.
A plan may be keyed by ``MIYABI_AGENT`` instead: ``{"coder-7": {"rounds": …}}``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from miyabi import worker


class Scripted(worker.Worker):
    def __init__(self) -> None:
        super().__init__(os.environ.get("MIYABI_AGENT", "scripted"), None)
        plan = json.loads(Path(os.environ["PLAN"]).read_text())
        me = os.environ.get("MIYABI_AGENT", "")
        if me in plan:
            plan = plan[me]
        self.rounds: list[list[dict[str, str]]] = plan.get("rounds", [])
        self.played = 0

    def receive(self, text: str) -> None:
        super().receive(text)
        m = re.search(r"miyabi task done (\d+)", text)
        with open(os.environ["PLAN_LOG"], "a") as f:
            f.write(
                json.dumps(
                    {"text": text, "cwd": os.getcwd(), "task": os.environ.get("MIYABI_TASK"), "agent": self.name}
                )
                + "\n"
            )
        if m is None or self.played >= len(self.rounds):
            return
        actions = self.rounds[self.played]
        self.played += 1
        for a in actions:
            if "write" in a:
                p = Path(a["write"])
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(a["text"])
            elif "run" in a:
                subprocess.run(a["run"], shell=True, check=True, capture_output=True)
            elif "commit" in a:
                subprocess.run(["git", "add", "-A"], check=True)
                subprocess.run(
                    [
                        "git",
                        "-c",
                        "user.name=agent",
                        "-c",
                        "user.email=agent@example.com",
                        "commit",
                        "-qm",
                        a["commit"],
                    ],
                    check=True,
                )
            elif "done" in a:
                out = subprocess.run(
                    ["miyabi", "task", "done", m.group(1), "--note", a["done"]],
                    check=False,
                    capture_output=True,
                    text=True,
                )
                self.write((out.stdout + out.stderr).replace("\n", "\r\n"))


def main() -> int:
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    agent = Scripted()
    try:
        agent.start()
        while True:
            data = os.read(fd, 65536)
            if not data or not agent.handle(data):
                break
    finally:
        agent.stop()
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
