"""The README and the pages in ``docs/`` stay true to the command line and to each other:
the tour's commands and options exist, every command (and every option it takes) is on
the commands page, every layout key is in the layout reference, every page is linked
from the README, and every relative link (its ``#anchor`` included) resolves."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
SHARED = {"--socket", "--home", "--layout", "--help"}
"""Options every command that acts on an ensemble takes: the commands page says so once."""


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def section(markdown: str, heading: str) -> str:
    """The body of the ``## heading`` section (up to the next ``## `` outside a fenced
    code block: a tour's file may hold Markdown headings of its own)."""
    parts = markdown.split(f"\n## {heading}\n", 1)
    assert len(parts) == 2, f"no section '## {heading}'"
    body = parts[1]
    blanked = FENCED.sub(lambda m: re.sub(r"[^\n]", " ", m[0]), body)  # same offsets, no headings
    end = blanked.find("\n## ")
    return body if end < 0 else body[:end]


FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
"""A fenced code block."""


def code_blocks(markdown: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", markdown, re.DOTALL | re.MULTILINE)


def cli() -> Any:
    """The click command tree behind ``miyabi``."""
    import miyabi.cli

    return typer.main.get_command(miyabi.cli._load_app())


def leaves(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, command) for every command that runs (``("task", "add")``), hidden ones left out."""
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        if getattr(sub, "hidden", False):
            continue
        if hasattr(sub, "commands"):
            yield from leaves(sub, (*path, name))
        else:
            yield (*path, name), sub


def is_option(param: Any) -> bool:
    return type(param).__name__.endswith("Option")


# -- the tour ------------------------------------------------------------------------


@dataclass(frozen=True)
class Heredoc:
    file: str
    body: str


def tour() -> tuple[list[list[str]], list[Heredoc]]:
    """The README tour's shell commands (each a list of words) and the files its here
    documents write."""
    script = "\n".join(code_blocks(section(text(README), "A tour"), "sh"))
    commands: list[list[str]] = []
    heredocs: list[Heredoc] = []
    lines = iter(script.splitlines())
    for line in lines:
        doc = re.search(r"cat > (\S+) <<'(\w+)'", line)
        if doc:
            body = []
            for inner in lines:
                if inner == doc[2]:
                    break
                body.append(inner)
            else:
                raise AssertionError(f"here document {doc[1]} is not closed by {doc[2]}")
            heredocs.append(Heredoc(doc[1], "\n".join(body) + "\n"))
            line = line[: doc.start()] + "true"
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lex.whitespace_split = True
        lex.commenters = "#"
        words: list[str] = []
        for word in [*lex, ";"]:
            if word in (";", "&&", "||", "|", "&"):
                if words:
                    commands.append(words)
                words = []
            else:
                words.append(word)
    return commands, heredocs


def check_invocation(root: Any, argv: list[str]) -> list[str]:
    """What is wrong with ``miyabi ARGV``: an unknown command, option or extra argument."""
    cmd, path = root, ["miyabi"]
    args = list(argv)
    from miyabi.cli.stories import StoryGroup

    while hasattr(cmd, "commands"):
        if isinstance(cmd, StoryGroup) and args and args[0] not in cmd.commands and not args[0].startswith("-"):
            args.insert(0, "new")  # `miyabi story TEXT` is `miyabi story new TEXT`
        if not args or args[0] not in cmd.commands:
            return [f"{' '.join(path)}: no command {args[0] if args else '(none)'!r}"]
        name = args.pop(0)
        cmd, path = cmd.commands[name], [*path, name]
    options = {o: p for p in cmd.params if is_option(p) for o in (*p.opts, *p.secondary_opts)}
    arguments = [p for p in cmd.params if not is_option(p)]
    problems, positional = [], 0
    while args:
        word = args.pop(0)
        if word.startswith("-") and word != "-":
            name = word.split("=", 1)[0]
            if name not in options:
                problems.append(f"{' '.join(path)}: no option {name}")
            elif not options[name].is_flag and "=" not in word:
                args.pop(0) if args else problems.append(f"{' '.join(path)}: {name} needs a value")
        else:
            positional += 1
    if positional > len(arguments) and not any(a.nargs == -1 for a in arguments):
        problems.append(f"{' '.join(path)}: {positional} arguments, it takes {len(arguments)}")
    return problems


def test_the_readme_starts_with_the_two_set_up_commands() -> None:
    first = code_blocks(text(README), "sh")[0]
    assert text(README).startswith("# miyabi\n\n```sh\n")
    assert first.splitlines()[0].startswith("scripts/miyabi up ")
    assert first.splitlines()[1].startswith("scripts/test ")


def test_every_miyabi_command_of_the_tour_exists_with_its_options() -> None:
    commands, _ = tour()
    root = cli()
    used = [c[1:] for c in commands if c[0] == "miyabi"]
    problems = [p for argv in used for p in check_invocation(root, argv)]
    assert problems == []
    shown = {" ".join(argv[:2]) if argv[0] in ("task", "job") else argv[0] for argv in used}
    wanted = {"up", "status", "send", "inbox", "task add", "task ls", "job submit", "story", "logs", "down"}
    assert wanted <= shown, f"the tour no longer runs {sorted(wanted - shown)}"


def test_the_checker_catches_what_does_not_exist() -> None:
    root = cli()
    assert check_invocation(root, ["task", "add", "x", "--label", "bug"]) == []
    assert check_invocation(root, ["up", "-d", "tour.yaml"]) == []
    assert check_invocation(root, ["task", "frobnicate"]) == ["miyabi task: no command 'frobnicate'"]
    assert check_invocation(root, ["status", "--colour"]) == ["miyabi status: no option --colour"]
    assert check_invocation(root, ["down", "extra"]) == ["miyabi down: 1 arguments, it takes 0"]


def test_the_files_the_tour_writes_load(tmp_path: Path) -> None:
    """The tour's layout loads, its pool with ``pipeline: local``; its job file passes
    ``miyabi job submit``'s checks."""
    from miyabi.config import load
    from miyabi.config.model import PipelineMode
    from miyabi.pipeline.convention import parse
    from miyabi.work import jobs, speckit

    _, heredocs = tour()
    files = {h.file: h.body for h in heredocs}
    assert {"tour.yaml", "job.json", "blog/.miyabi.yml", "manager.sh", "team.yaml"} <= set(files)
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body, encoding="utf-8")
    (tmp_path / "demo").mkdir()
    layout = load(tmp_path / "tour.yaml")
    assert [p.pipeline for p in layout.pools] == [PipelineMode.LOCAL]
    assert layout.web is not None
    job = jobs.load(tmp_path / "job.json")
    assert Path(job.workdir) == tmp_path
    # the story's part: its layout names the roles, its repository says how to deploy and
    # serve, and the manager's list parses into three tasks, the last after the other two
    team = load(tmp_path / "team.yaml")
    assert team.roles is not None and (team.roles.manager, team.roles.coder) == ("lead", "builder")
    blog = parse(files["blog/.miyabi.yml"], "blog/.miyabi.yml")
    assert blog.serve and blog.health is not None
    listed = files["manager.sh"].split("<<'LIST'\n", 1)[1].split("\nLIST\n", 1)[0]
    items = speckit.parse(listed, "001-site").items
    assert [(it.id, it.after) for it in items] == [("T001", ()), ("T002", ()), ("T003", ("T001", "T002"))]


# -- every command on the commands page ------------------------------------------------


def rows_for(page: str, path: tuple[str, ...]) -> list[str]:
    """The commands table's rows whose first cell names the command (`` `miyabi task add``
    or `` `task add``)."""
    name = re.escape(" ".join(path))
    cell = re.compile(rf"`(?:miyabi )?{name}(?=[ `])")
    return [row for row in page.splitlines() if row.startswith("| ") and cell.search(row.split(" | ")[0])]


@pytest.mark.parametrize("path", [p for p, _ in leaves(cli())], ids=" ".join)
def test_every_command_and_option_is_on_the_commands_page(path: tuple[str, ...]) -> None:
    page = text(DOCS / "commands.md")
    rows = rows_for(page, path)
    assert rows, f"`miyabi {' '.join(path)}` has no row in docs/commands.md"
    command = dict(leaves(cli()))[path]
    missing = [
        p.opts[0]
        for p in command.params
        if is_option(p)
        and not p.hidden
        and p.opts[0] not in SHARED
        and not any(o in row for row in rows for o in (*p.opts, *p.secondary_opts) if o.startswith("--"))
    ]
    assert missing == [], f"docs/commands.md does not give `miyabi {' '.join(path)}` its {missing}"


def test_the_top_level_help_lists_only_documented_commands() -> None:
    root = cli()
    listed = {name for name, sub in root.commands.items() if not getattr(sub, "hidden", False)}
    page = text(DOCS / "commands.md")
    assert {n for n in listed if not re.search(rf"`miyabi {n}\b", page)} == set()


# -- layout keys on the layout page ----------------------------------------------------


def test_every_layout_key_is_in_the_layout_reference() -> None:
    from miyabi.agents.profiles import OVERRIDABLE
    from miyabi.config import loader, members, sections
    from miyabi.config.settings import WATCHDOG_KEYS

    reference = code_blocks(text(DOCS / "layout.md"), "yaml")[0]
    groups = {
        name: keys
        for module in (loader, members, sections)
        for name, keys in vars(module).items()
        if name.endswith("_KEYS") and isinstance(keys, tuple) and name != "NOTIFY_KEYS"
    }
    groups["WATCHDOG_KEYS"] = WATCHDOG_KEYS
    assert len(groups) >= 12, sorted(groups)
    missing = sorted({k for keys in groups.values() for k in keys if k not in OVERRIDABLE} - set(yaml_keys(reference)))
    assert missing == [], f"docs/layout.md's reference lacks {missing}"
    notify = {k for k in sections.NOTIFY_KEYS} - set(yaml_keys(reference)) - set(re.findall(r"(\w+):", reference))
    assert notify == set()
    profiles = text(DOCS / "profiles.md")
    assert [f for f in OVERRIDABLE if f"`{f}" not in profiles] == []


def yaml_keys(block: str) -> Iterator[str]:
    """Keys written in a YAML block (``key:`` at a line's start or in a flow mapping)."""
    for line in block.splitlines():
        code = line.split(" #", 1)[0]
        yield from re.findall(r"(?:^\s*-?\s*|[{,]\s*)(\w+):", code)


# -- pages and links ------------------------------------------------------------------


def test_every_page_is_linked_from_the_readme() -> None:
    linked = {target.split("#")[0] for _, target in links(text(README))}
    assert PAGES and [p.name for p in PAGES if f"docs/{p.name}" not in linked] == []


def prose(markdown: str) -> str:
    """``markdown`` without its code blocks and code spans (no links live there)."""
    return re.sub(r"`[^`\n]*`", "", FENCED.sub("", markdown))


def links(markdown: str) -> list[tuple[str, str]]:
    return re.findall(r"\[([^\]]+)\]\(([^)\s]+)\)", prose(markdown))


def anchors(markdown: str) -> set[str]:
    """The ``#anchor`` of every heading, as GitHub makes them: lower case, punctuation
    dropped, spaces as ``-``, a repeated one numbered."""
    seen: dict[str, int] = {}
    out = set()
    for title in re.findall(r"^#{1,6} (.+?)\s*$", FENCED.sub("", markdown), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_the_anchor_maker_agrees_with_github() -> None:
    assert anchors("# A tour\n## `status --json`\n## Leases: no task outlives its agent's process\n## A tour\n") == {
        "a-tour",
        "status---json",
        "leases-no-task-outlives-its-agents-process",
        "a-tour-1",
    }


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for label, target in links(text(page)):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"[{label}]({target}): no file {dest.relative_to(ROOT)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(text(dest)):
            broken.append(f"[{label}]({target}): no heading #{anchor} in {dest.name}")
    assert broken == []


# -- the dashboard's API and metrics on its page ---------------------------------------


def test_every_api_path_is_on_the_dashboard_page() -> None:
    from miyabi.web import api, kpis, logs

    page = " ".join(text(DOCS / "dashboard.md").split())
    missing = []
    for route in [*api.router.routes, *kpis.router.routes, *logs.router.routes]:
        path = getattr(route, "path", "").removeprefix("/api/v1/")
        parts = [
            r"(?:/[A-Z]+|\[/[A-Z]+\])" if re.fullmatch(r"/\{\w+\}", p) else re.escape(p)
            for p in re.split(r"(/\{\w+\})", path)
            if p
        ]
        if not re.search(r"(?<![\w/])" + "".join(parts) + r"(?![\w/])", page):
            missing.append(path)
    assert missing == []


def test_every_metric_is_on_the_dashboard_page() -> None:
    import ast

    from miyabi.web import metrics

    tree = ast.parse(Path(metrics.__file__).read_text(encoding="utf-8"))
    names = {
        node.args[0].value + ("_total" if node.func.id == "CounterMetricFamily" else "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id.endswith("MetricFamily")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }
    assert len(names) >= 10
    page = text(DOCS / "dashboard.md")
    assert sorted(n for n in names if f"`{n}" not in page) == []


def test_every_benchmark_is_on_the_development_page() -> None:
    scripts = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
    page = text(DOCS / "development.md")
    assert scripts and [s for s in scripts if f"benchmarks/{s}" not in page] == []
