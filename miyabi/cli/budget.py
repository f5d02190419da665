"""``miyabi budget`` and ``miyabi budget raise``: the layout's budgets, their use in
the current period, and more allowance for one."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from miyabi.cli import output
from miyabi.cli.root import Group, HomeOpt, JsonOpt, LayoutOpt, SocketOpt, app, handles_errors, resolve_target

budget_app = typer.Typer(cls=Group, help="The layout's budgets and their use; raise one.")
app.add_typer(budget_app, name="budget")


def _amount(st: dict[str, Any]) -> tuple[str, str]:
    """(tokens, dollars) used against the limit, as the table shows them."""
    tokens = f"{st['used_tokens']} / {st['limit_tokens']}" if st["limit_tokens"] is not None else "-"
    usd = f"${st['used_cost_usd']:.2f} / ${st['limit_cost_usd']:.2f}" if st["limit_cost_usd"] is not None else "-"
    return tokens, usd


@budget_app.callback(invoke_without_command=True)
@handles_errors
def budget(
    ctx: typer.Context,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """List the layout's budgets: each one's use against its limit in its period.

    A budget covers the whole ensemble (layout), a pool's instances or one agent,
    per local day or per task (one row for each task its agents hold). At 80 % of
    a limit miyabi warns once; at 100 % it parks the agents the budget covers until
    the period turns or `miyabi budget raise`.
    """
    if ctx.invoked_subcommand is not None:
        return
    from miyabi.controller.view import layout_agents
    from miyabi.messaging.parking import ParkReason, read_parked
    from miyabi.supervision.budgets import survey
    from miyabi.work.store import Store

    t = resolve_target(home, socket, layout)
    store = Store.of_home(t.home.root)
    lay = t.layout()
    lay = lay.with_instances(tuple(a for a in layout_agents(t.home, lay, store) if a.pool is not None))
    parked = [a.name for a in lay.agents if (p := read_parked(t.home.root, a.name)) and p.reason == ParkReason.BUDGET]
    held = store.held_tasks()
    rows = [st.to_json(parked) for st in survey(t.home.root, lay, held)]
    if json_out:
        output.emit_json(rows)
        return
    if not rows:
        output.say("the layout has no budget (see `budget:` in docs/layout.md)")
        return
    output.table(
        [
            [
                r["scope"],
                r["per"] + (f" {r['period']}" if r["per"] == "task" and r["period"] else ""),
                *_amount(r),
                f"{r['share']:.0%}",
                ", ".join(r["parked"]) or "-",
            ]
            for r in rows
        ],
        ["scope", "per", "tokens", "dollars", "used", "parked"],
    )


@budget_app.command("raise")
@handles_errors
def raise_(
    scope: Annotated[str, typer.Argument(metavar="SCOPE", help="The budget: an agent's or pool's name, or layout.")],
    tokens: Annotated[
        int | None,
        typer.Option(
            "--tokens", metavar="N", min=1, show_default=False, help="Tokens to add to this period's allowance."
        ),
    ] = None,
    cost_usd: Annotated[
        float | None,
        typer.Option(
            "--cost-usd", metavar="X", min=0.0, show_default=False, help="US dollars to add to this period's allowance."
        ),
    ] = None,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    layout: LayoutOpt = None,
) -> None:
    """Add to a budget's allowance in its current period.

    Today's for a per-day budget; for a per-task one, the task each of its agents
    holds. The running controller lets the agents it parked go on within a second or two.
    """
    from miyabi.controller.requests import request_raise

    t = resolve_target(home, socket, layout)
    output.say(request_raise(t.home, scope, tokens, cost_usd))
