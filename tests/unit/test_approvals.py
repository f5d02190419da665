"""Auto-answers for permission questions (``approvals: {auto: [...]}``): what the
loader accepts, and which rule answers which question."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_layout

from miyabi.config.loader import load
from miyabi.config.settings import AutoAnswer, auto_answer
from miyabi.errors import LayoutError

AGENTS = [("a", "claude"), ("b", "codex")]


def layout(tmp_path: Path, approvals: str) -> Path:
    """Agents a and b, and an ``approvals:`` section of YAML text (what these tests load)."""
    return write_layout(tmp_path / "l.yaml", AGENTS, session="s", extra=f"approvals:\n{approvals}")


def test_rules_load_in_order_and_the_first_match_answers(tmp_path: Path) -> None:
    lay = load(
        layout(
            tmp_path,
            "  auto:\n    - {tool: Bash, match: 'rm -rf', answer: deny}\n"
            "    - {tool: Bash, match: '^Bash: (git status|ls)$', answer: approve}\n"
            "    - {match: 'miyabi-tool', agents: b, answer: approve}\n",
        )
    )
    rules = lay.auto_answers
    assert rules == (
        AutoAnswer("deny", (), "Bash", "rm -rf"),
        AutoAnswer("approve", (), "Bash", r"^Bash: (git status|ls)$"),
        AutoAnswer("approve", ("b",), None, "miyabi-tool"),
    )
    assert auto_answer(rules, "a", "Bash: rm -rf /") == rules[0]
    assert auto_answer(rules, "a", "Bash: git status") == rules[1]
    assert auto_answer(rules, "a", "Bash: ls; cat ~/.ssh/id_rsa") is None  # anchored: what follows is not approved
    assert auto_answer(rules, "a", "Edit: src/x.py") is None
    assert auto_answer(rules, "a", "Would you like to run: touch miyabi-tool-1?") is None  # b only
    assert auto_answer(rules, "b", "Would you like to run: touch miyabi-tool-1?") == rules[2]


def test_without_approvals_nothing_is_answered(tmp_path: Path) -> None:
    assert load(write_layout(tmp_path / "l.yaml", AGENTS, session="s")).auto_answers == ()


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        ("{tool: Bash, answer: maybe}", "approvals.auto[0].answer: 'maybe' must be approve or deny"),
        ("{tool: Bash}", "approvals.auto[0]: needs answer: approve or deny"),
        ("{answer: approve}", "approvals.auto[0]: answers every question; give a tool or a match"),
        ("{match: '(', answer: approve}", "approvals.auto[0].match: invalid regular expression"),
        ("{match: x, agents: [zz], answer: deny}", "approvals.auto[0].agents: unknown agent 'zz'"),
        ("{tool: Bash, answr: approve}", "approvals.auto[0].answr: unknown key 'answr'; did you mean 'answer'?"),
    ],
)
def test_a_bad_rule_is_one_line_naming_its_key(tmp_path: Path, rule: str, said: str) -> None:
    with pytest.raises(LayoutError) as e:
        load(layout(tmp_path, f"  auto:\n    - {rule}\n"))
    assert said in str(e.value) and len(e.value.lines()) == 1, str(e.value)


def test_profile_fields_for_answers_and_rows_are_checked(tmp_path: Path) -> None:
    a = {"name": "a", "profile": "aider"}
    f = write_layout(
        tmp_path / "p.yaml",
        [
            {
                **a,
                "approve_keys": ["y", "Enter"],
                "deny_keys": "Escape",
                "busy_rows": [2, 1],
                "composer_rows": 2,
                "typed_limit": 0,
                "approval_pattern": r"Proceed\?",
            }
        ],
        session="s",
    )
    p = load(f).agents[0].profile
    assert (p.approve_keys, p.deny_keys, p.busy_rows, p.composer_rows, p.typed_limit, p.approval_pattern) == (
        ("y", "Enter"),
        ("Escape",),
        (2, 1),
        2,
        0,
        "Proceed\\?",
    )
    write_layout(f, [{**a, "busy_rows": 3}], session="s")
    with pytest.raises(LayoutError) as e:
        load(f)
    assert "agents[0].busy_rows: 3 must be [rows above, rows below] the cursor" in str(e.value)
