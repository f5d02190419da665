"""A terminal agent that asks for permission, for the approval tests: it prompts
``> ``, and for each line that mentions ``tool`` asks ``Allow running the tool?
(y/n)`` and appends the answer (``yes`` / ``no``) to the file ``$ANSWERS``."""

from __future__ import annotations

import os
import sys


def main() -> None:
    answers = os.environ["ANSWERS"]
    while True:
        sys.stdout.write("> ")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            return
        if "tool" not in line:
            continue
        sys.stdout.write("Allow running the tool? (y/n) ")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        with open(answers, "a") as f:
            f.write(("yes" if answer.startswith("y") else "no") + "\n")
        sys.stdout.write("ran the tool\n" if answer.startswith("y") else "did not run it\n")


if __name__ == "__main__":
    main()
