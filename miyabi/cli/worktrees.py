"""``miyabi worktrees`` and ``miyabi gc``: the git worktrees pool tasks work in."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from miyabi.cli import output
from miyabi.cli.root import HomeOpt, JsonOpt, LayoutOpt, SocketOpt, app, handles_errors, resolve_target


def _records(home: Any) -> Any:
    from miyabi.pipeline.records import Records
    from miyabi.work.store import Store

    return Records(Store.of_home(home.root))


@app.command("worktrees")
@handles_errors
def worktrees(
    json_out: JsonOpt = False, home: HomeOpt = None, socket: SocketOpt = None, layout: LayoutOpt = None
) -> None:
    """List the worktrees of pool tasks and who works in each."""
    t = resolve_target(home, socket, layout)
    records = _records(t.home)
    live = {i.path: i for i in records.instances("preparing", "ready")}
    rows = [{**w.to_json(), "instance": live[w.path].name if w.path in live else None} for w in records.worktrees()]
    if json_out:
        output.emit_json(rows)
        return
    output.table(
        [
            [r["branch"], r["state"], f"#{r['pr_number']}" if r["pr_number"] else "-", r["instance"] or "-", r["path"]]
            for r in rows
        ],
        ["branch", "state", "pull request", "instance", "path"],
    )


@app.command("gc")
@handles_errors
def gc(
    json_out: JsonOpt = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="Do not ask GitHub which pull requests were merged or closed.")
    ] = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Remove the worktrees of merged or closed work.

    It asks GitHub about open pull requests first (the layout's github: section);
    a worktree an instance still works in is kept. The controller does the same by itself.
    """
    from miyabi.errors import MiyabiError
    from miyabi.pipeline.cleanup import remove_merged
    from miyabi.pipeline.followups import closed_pulls

    t = resolve_target(home, socket, layout)
    records = _records(t.home)
    said: list[str] = []
    lay = t.layout() if t.layout_path is not None else None
    if not offline and lay is not None and lay.github is not None and records.worktrees("review"):
        from miyabi.work.github import client_for

        gh = client_for(lay.github, t.home.root)
        try:
            said = closed_pulls(records, gh, t.home.root)
        except MiyabiError as e:
            output.warn(f"could not ask GitHub about the pull requests ({e}); removing what is known merged")
        finally:
            gh.close()
    removed = remove_merged(records, t.home.root)
    if json_out:
        output.emit_json({"pull_requests": said, "removed": removed})
        return
    for line in said:
        output.say(line)
    for path in removed:
        output.say(f"removed worktree {path}")
    if not removed:
        output.say("no worktree to remove")
