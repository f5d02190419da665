"""The suite and its tools: the ``integration`` marker selects exactly the tests under
tests/integration/, and benchmarks show progress only on a terminal."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def _integration_test_count() -> int:
    """Test items under tests/integration/, as pytest collects them (parametrized ones
    count once per case), checked against the test functions written there."""
    functions = 0
    for f in (TESTS / "integration").glob("test_*.py"):
        tree = ast.parse(f.read_text())
        functions += sum(1 for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"))
    items = _selected(None, TESTS / "integration")
    assert items >= functions > 0
    return items


def _selected(marker: str | None, where: Path = TESTS) -> int:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(where),
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            *(["-m", marker] if marker else []),
        ],
        capture_output=True,
        text=True,
        cwd=TESTS.parent,
        timeout=120,
        check=False,
    )
    if re.search(r"no tests collected", r.stdout):
        return 0
    m = re.search(r"(\d+)(?:/\d+)? tests? collected", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr[-2000:]
    return int(m.group(1))


def test_the_integration_marker_selects_the_integration_tests_and_only_them() -> None:
    want = _integration_test_count()
    assert want > 0
    assert _selected("integration") == want
    assert _selected("not integration") > 0


def test_benchmarks_show_progress_only_on_a_terminal() -> None:
    """Progress lines (``\\r``) go to a terminal only: piped, a benchmark prints its figures
    and nothing else. Checked on every benchmark's source and on the helper itself."""
    backslash_r = "\\" + "r"  # the two characters, as they stand in a source file
    for f in (TESTS.parent / "benchmarks").glob("bench_*.py"):
        assert backslash_r not in f.read_text(), f"{f.name} writes a progress line itself; use _stats.progress"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from _stats import progress, progress_done; progress('run 1/2'); progress_done(); print('figure 1')",
        ],
        capture_output=True,
        text=True,
        cwd=TESTS.parent,
        env={**os.environ, "PYTHONPATH": str(TESTS.parent / "benchmarks")},
        timeout=60,
        check=False,
    )
    assert r.stdout == "figure 1\n" and r.stderr == ""


def test_no_test_edits_sys_path() -> None:
    """pytest's ``pythonpath`` setting (pyproject.toml) puts tests/ on the path; a test
    module that edits ``sys.path`` itself makes imports depend on which file ran first."""
    edits = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*[+]?=")
    found = [
        f"{f.relative_to(TESTS.parent)}:{n}"
        for f in sorted(TESTS.rglob("*.py"))
        for n, line in enumerate(f.read_text().splitlines(), 1)
        if edits.search(line) and f != Path(__file__).resolve()
    ]
    assert found == []
