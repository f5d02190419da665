"""What miyabi ships: ``miyabi layouts`` and ``miyabi profiles`` list the shipped layouts
and the built-in profiles, ``miyabi init`` writes a layout for the agent CLIs on PATH."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from miyabi import defaults
from miyabi.cli import output
from miyabi.cli.root import JsonOpt, app, handles_errors


@app.command()
@handles_errors
def layouts(json_out: JsonOpt = False) -> None:
    """List the shipped layouts."""
    from miyabi.config import load, shipped
    from miyabi.errors import LayoutError

    items: list[dict[str, Any]] = []
    for path in shipped.shipped():
        try:
            lay = load(path)
            items.append(
                {
                    "name": path.stem,
                    "path": str(path),
                    "session": lay.session,
                    "agents": lay.names,
                    "profiles": sorted({a.profile.name for a in lay.agents}),
                    "description": lay.description,
                }
            )
        except LayoutError as e:
            items.append({"name": path.stem, "path": str(path), "error": e.lines()[0]})
    if json_out:
        output.emit_json(items)
        return
    rows: list[list[str]] = [
        [
            i["name"],
            ", ".join(i.get("agents", [])) or "-",
            ", ".join(i.get("profiles", [])) or "-",
            i.get("description") or i.get("error", ""),
        ]
        for i in items
    ]
    output.table(rows, ["layout", "agents", "profiles", "description"])


@app.command()
@handles_errors
def profiles(json_out: JsonOpt = False) -> None:
    """List the built-in profiles (agent CLIs miyabi can drive)."""
    import dataclasses

    from miyabi.agents.profiles import BUILTIN

    if json_out:
        output.emit_json([dataclasses.asdict(p) for p in BUILTIN.values()])
        return
    rows = [
        [
            p.name,
            p.command or "$SHELL",
            p.ready_pattern or "-",
            p.busy_pattern or "-",
            f"{p.submit_key} +{p.submit_delay:g}s",
            "yes" if p.bracketed_paste else "no",
        ]
        for p in BUILTIN.values()
    ]
    output.table(rows, ["profile", "command", "ready pattern", "busy pattern", "submit", "paste"])


@app.command()
@handles_errors
def init(force: Annotated[bool, typer.Option("--force", help="Overwrite an existing miyabi.yaml.")] = False) -> None:
    """Write ./miyabi.yaml for the agent CLIs found on PATH.

    One agent per agent CLI found (claude, codex, gemini, aider, opencode), or four
    built-in workers when none is.
    """
    from miyabi.config import shipped

    path = Path.cwd() / defaults.LAYOUT_FILE
    shipped.write_init(path, force=force)
    output.say(f"wrote {path}; start it with `miyabi up`", "green")
