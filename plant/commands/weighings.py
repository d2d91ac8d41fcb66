"""`plant weighings`: weighbridge records of the mechanical stage's output fractions."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from plant.commands import ctx_of, err, time_option
from plant.weighings import FRACTIONS, WeighingError, record_weighing

weighings_app = typer.Typer(
    help="Weighbridge records of the mechanical stage's fractions.", no_args_is_help=True
)


@weighings_app.command("add")
def add_cmd(
    ctx: typer.Context,
    fraction: Annotated[str, typer.Argument(help=f"One of: {', '.join(FRACTIONS)}.")],
    kg: Annotated[float, typer.Option("--kg", help="Weighed mass, kg.")],
    lot: Annotated[str | None, typer.Option(help="The closed lot it came from.")] = None,
    at: Annotated[
        str | None, typer.Option(help="When it was weighed, ISO (UTC without a zone); default now.")
    ] = None,
) -> None:
    """Record one weighed fraction (audited); it counts in the EU figures at its calculation
    point (docs/purity.md)."""
    c = ctx_of(ctx)
    when = time_option(at, "--at")
    store = c.store()
    try:
        got = record_weighing(store, fraction, kg, user="cli", source="engineer", lot=lot, at=when)
    except WeighingError as exc:
        option = "FRACTION" if exc.field == "fraction" else f"--{exc.field}"
        err.print(f"error: {option}: {exc.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        store.close()
    print(json.dumps(got, ensure_ascii=False))


def register(root: typer.Typer) -> None:
    root.add_typer(weighings_app, name="weighings")
