"""``miyabi spec import`` and ``miyabi spec add``: tasks from a spec-kit task list or a
task spec. A file that does not parse or breaks the schema is one line per defect
(``FILE:LINE: …``), exit 1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from miyabi.cli import output, params
from miyabi.cli.root import HomeOpt, JsonOpt, LayoutOpt, SocketOpt, checked, group, handles_errors, resolve_target
from miyabi.cli.tasks import LabelOpt, PriorityOpt

spec_app = group("spec", "Plans as tasks: spec-kit lists, task specs.")

StoryOpt = Annotated[
    int | None,
    typer.Option(
        "--story",
        metavar="N",
        parser=checked(params.count(1)),
        show_default=False,
        help="Put the new tasks in story N (default: the story whose planning task the calling agent holds).",
    ),
]


def _owners(target: Any) -> list[str] | None:
    """The layout's agents and pools (None: no layout is known for the home)."""
    if target.layout_path is None:
        return None
    lay = target.layout()
    return [*lay.names, *(p.name for p in lay.pools)]


def _story(store: Any, story: int | None, task_ids: list[int]) -> int | None:
    from miyabi.work.specs import attach_story

    return attach_story(store, story, task_ids, os.environ.get("MIYABI_AGENT") or None)


def _warn_unrouted(home: Any, store: Any, task_ids: list[int]) -> None:
    """Warn when new tasks wait because no route matches them (as `task add` does)."""
    from miyabi.controller.view import waiting

    why = waiting(home, store, [store.get(i) for i in task_ids])
    lost = [i for i in task_ids if (why.get(i) or "").startswith("no route")]
    if lost:
        output.warn(f"{len(lost)} new task(s) wait in the queue: {why[lost[0]]}; or import with --to AGENT")


@spec_app.command("import")
@handles_errors
def spec_import(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A spec-kit task list (specs/NNN-feature/tasks.md).")],
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="AGENT",
            show_default=False,
            help="The agent or pool the new tasks go to (a label agent:NAME; default: the layout's routes).",
        ),
    ] = None,
    label: LabelOpt = None,
    priority: PriorityOpt = "normal",
    story: StoryOpt = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Import a spec-kit tasks.md: each line a task (ref NNN-feature#T012), with its
    dependencies.

    Phases run in order (user-story phases side by side), tasks without [P] in order,
    [P] ones in parallel; "(depends on T010, T011)" adds edges; [USn] becomes a label;
    a ticked line is done. Importing again adds only new lines and says which
    disappeared. When a task's work lands, its box is ticked in the file.
    """
    from miyabi.errors import UsageError
    from miyabi.work.specs import import_list
    from miyabi.work.store import Store

    target = resolve_target(home, socket, layout)
    if to is not None:
        owners = _owners(target)
        if owners is not None and to not in owners:
            raise UsageError(f"--to {to}: no agent or pool {to!r} in the layout ({', '.join(sorted(owners))})")
    store = Store.of_home(target.home.root)
    labels = [*(label or []), *([f"agent:{to}"] if to else [])]
    report = import_list(store, file, labels, priority)
    chosen = _story(store, story, [tid for _, tid in report.added])
    if json_out:
        output.emit_json({**report.to_json(), "story": chosen})
        return
    in_story = f" (story {chosen})" if chosen is not None else ""
    output.say(f"imported {report.feature}: {len(report.added)} added, {len(report.unchanged)} unchanged{in_story}")
    for ref, tid in report.added:
        output.say(f"  added task {tid}: {ref}")
    _warn_unrouted(target.home, store, [tid for _, tid in report.added])
    for ref, tid in report.disappeared:
        output.warn(f"{ref} (task {tid}) is no longer in {file}; the task stays as it is (cancel it if it should go)")


@spec_app.command("add")
@handles_errors
def spec_add(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A task spec (YAML).")],
    story: StoryOpt = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Add the task of a task spec (id, title, owner, priority, inputs, outputs,
    constraints, tests, acceptance, artifacts), checked against miyabi's JSON Schema.

    owner routes it (an agent or pool of the layout); tests run in its verify gate
    after the repository's checks; acceptance is checked after deploy; artifacts get a
    folder artifacts/ID/ under the home.
    """
    from miyabi.work.specs import add_spec
    from miyabi.work.store import Store
    from miyabi.work.taskspec import read, task_acceptance, task_tests

    spec = read(file)
    target = resolve_target(home, socket, layout)
    store = Store.of_home(target.home.root)
    t = add_spec(store, spec, target.home.root, _owners(target) if spec.owner else None)
    chosen = _story(store, story, [t.id])
    if json_out:
        output.emit_json({**store.get(t.id).to_json(), "story": chosen})
        return
    in_story = f" in story {chosen}" if chosen is not None else ""
    output.say(f"added task {t.id} ({t.ref}){in_story}: {t.title}")
    tests, acceptance = task_tests(t), task_acceptance(t)
    if tests or acceptance:
        output.say(f"  {len(tests)} test(s) in its verify gate, {len(acceptance)} acceptance check(s) after deploy")
