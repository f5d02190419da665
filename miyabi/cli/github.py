"""``miyabi github``: the GitHub source of tasks (the layout's ``github:`` section)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from miyabi.cli import output
from miyabi.cli.root import HomeOpt, JsonOpt, LayoutOpt, SocketOpt, group, handles_errors, resolve_target
from miyabi.errors import MiyabiError

github_app = group("github", "The GitHub source of tasks (the layout's github: section).")


@github_app.command("sync")
@handles_errors
def github_sync(
    once: Annotated[bool, typer.Option("--once", help="Poll once, assign, print what was done, and exit.")] = True,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Poll the repository once and print what was done.

    New issues with the todo label become tasks, what the routes allow is assigned
    (claiming each issue), and outcomes agents reported are told to GitHub.
    """
    from miyabi.work.engine import WorkEngine
    from miyabi.work.github import client_for
    from miyabi.work.store import Store

    t = resolve_target(home, socket, layout)
    lay = t.layout()
    if lay.github is None:
        raise MiyabiError(f"{lay.path} has no github: section; add `github: {{repo: owner/name}}`")
    store = Store.of_home(t.home.root)
    gh = client_for(lay.github, t.home.root)
    try:
        done = WorkEngine(store, lay, t.home.root, gh).github_pass(assign=True)
    finally:
        gh.close()
    assigned: list[dict[str, Any]] = []
    for tid, agent in done.assigned:
        task = store.get(tid)
        assigned.append(
            {
                "task": tid,
                "ref": task.ref,
                "agent": agent,
                "state": str(task.state),
                "reason": store.history(tid)[-1]["reason"],
            }
        )
    data: dict[str, Any] = {
        "unchanged": done.sync.unchanged,
        "added": done.sync.added,
        "needs_triage": done.sync.triaged,
        "assigned": [{k: v for k, v in a.items() if k != "reason"} for a in assigned],
        "reported": done.reported,
        "requests": gh.stats.requests,
        "not_modified": gh.stats.not_modified,
    }
    if json_out:
        output.emit_json(data)
        return
    if done.sync.unchanged:
        output.say(f"{lay.github.repo}: no change since the last poll (304)")
    for ref in done.sync.added:
        output.say(f"new task from {ref}")
    for ref in done.sync.triaged:
        output.say(f"{ref}: author not trusted; labelled status:needs-triage, not routed")
    for a in assigned:
        what = f"assigned to {a['agent']}" if a["state"] == "assigned" else f"{a['state']} ({a['reason']})"
        output.say(f"{a['ref']}: {what}")
    for line in done.reported:
        output.say(line)
    output.say(f"{gh.stats.requests} request(s) to GitHub")
