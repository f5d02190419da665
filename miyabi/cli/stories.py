"""Commands on stories: ``miyabi story TEXT`` (``story new``), ``story ls``, ``story show``."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from miyabi.cli import output, params
from miyabi.cli.root import Group, HomeOpt, JsonOpt, SocketOpt, app, checked, handles_errors, home_of
from miyabi.cli.tasks import BodyOpt


class StoryGroup(Group):
    """``miyabi story TEXT`` is ``miyabi story new TEXT``: a first argument that is not
    one of the group's commands (nor an option) is the story's text."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["new", *args]
        return super().parse_args(ctx, args)


story_app = typer.Typer(help="Stories: make one, list and show them.", cls=StoryGroup)


@story_app.callback(invoke_without_command=True)
def _bare(ctx: typer.Context) -> None:
    """Stories: make one, list and show them.

    A story is what a user wants; a manager agent plans it into tasks, coders build them and miyabi deploys.

    `miyabi story "TEXT"` makes one; `story ls` lists them; `story show N` shows one.
    """
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


app.add_typer(story_app, name="story")


def _store(home: Any) -> Any:
    from miyabi.work.store import Store

    return Store.of_home(home.root)


@story_app.command("new")
@handles_errors
def story_new(
    text: Annotated[
        str,
        typer.Argument(metavar="TEXT", parser=checked(params.text("the story a text")), help="What the user wants."),
    ],
    body: BodyOpt = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """Make a story for the layout's manager to plan.

    Its planning task goes to roles.manager, who writes its tasks and imports them.
    """
    from miyabi.controller.view import new_story
    from miyabi.messaging.mailbox import decode_body

    details = decode_body(sys.stdin.buffer.read()) if body == "-" else (body or "")
    story, task = new_story(home_of(home, socket), _store(home_of(home, socket)), text, details)
    if json_out:
        output.emit_json({**story.to_json(), "planning_task": task.to_json()})
    else:
        output.say(f"story {story.id}: {story.title}; planning task {task.id} goes to {story.manager}")


@story_app.command("ls")
@handles_errors
def story_ls(json_out: JsonOpt = False, home: HomeOpt = None, socket: SocketOpt = None) -> None:
    """List stories and how far each got."""
    from miyabi.work.stories import children, landed, stories

    store = _store(home_of(home, socket))
    rows, data = [], []
    for s in stories(store):
        kids = children(store, s.id)
        done = landed(kids)
        data.append({**s.to_json(), "tasks": len(kids), "landed": done})
        to_deployed = f"{s.deployed - s.created:.1f}s" if s.deployed is not None else "-"
        rows.append([str(s.id), str(s.state), f"{done}/{len(kids)}", str(s.rounds), to_deployed, s.title[:50]])
    if json_out:
        output.emit_json(data)
        return
    output.table(rows, ["id", "state", "tasks landed", "rounds", "to deployed", "title"])


@story_app.command("show")
@handles_errors
def story_show(
    story_id: Annotated[str, typer.Argument(metavar="ID", help="Story id (3 or #3).")],
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """Show a story, its tasks and its history."""
    from miyabi.work.stories import children, get, history

    store = _store(home_of(home, socket))
    s = get(store, story_id)
    kids = children(store, s.id)
    data = {
        **s.to_json(),
        "tasks": [{**k.to_json(), "depends_on": store.depends_on(k.id)} for k in kids],
        "history": history(store, s.id),
    }
    if json_out:
        output.emit_json(data)
        return
    output.say(f"story {s.id} [{s.state}] {s.title}")
    output.say(
        f"  planning task: {s.task}  manager: {s.manager or '-'}  coder: {s.coder or '-'}  rounds: {s.rounds}  "
        f"deployed: {s.commit[:12] if s.commit else '-'}"
    )
    if s.evidence:
        output.say("  evidence: " + s.evidence.replace("\n", "\n  "), lines=True)
    rows = [
        [
            str(k.id),
            str(k.state),
            k.agent or "-",
            str(k.rounds),
            ",".join(map(str, store.depends_on(k.id))) or "-",
            k.title[:50],
        ]
        for k in kids
    ]
    output.table(rows, ["task", "state", "agent", "verify rounds", "depends on", "title"])
    for e in data["history"]:
        output.say(f"  {e['time']}  {e['state']:<10} {e['reason']}")
