"""What adopting another layout changes: a pure function of the two layouts."""

from __future__ import annotations

from pathlib import Path

from miyabi.config import load
from miyabi.config.model import layout_change


def write(tmp_path: Path, name: str, text: str) -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


def test_added_removed_changed_and_what_waits_for_a_restart(tmp_path: Path) -> None:
    old = load(
        write(
            tmp_path,
            "a.yaml",
            "session: s\nagents:\n  - {name: a, profile: shell, command: cat}\n"
            "  - {name: b, profile: shell, command: cat}\n",
        )
    )
    new = load(
        write(
            tmp_path,
            "b.yaml",
            "session: s\nagents:\n  - {name: b, profile: shell, command: 'cat -u'}\n"
            "  - {name: c, profile: shell, command: cat}\n"
            "github: {repo: acme/w, token_env: T}\nnotify:\n  - {webhook: 'http://127.0.0.1:9/x'}\n",
        )
    )
    change = layout_change(old, new)
    assert (change.added, change.removed, change.changed) == (("c",), ("a",), ("b",))
    assert change.github and change.notify and not change.bus
    said = change.describe()
    assert said.startswith("added c; removed a; changed b; github: changes apply when the controller restarts")
    assert "notify: changes apply when the controller restarts" in said
    assert layout_change(new, new).describe() == "agents unchanged"
