"""`plant db`: schema migrations and maintenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from plant.commands import ctx_of, err
from plant.store import Store, upgrade

app = typer.Typer(help="Database schema and maintenance.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the database schema to the newest version (safe to run again)."""
    url = ctx_of(ctx).plant().database.url
    upgrade(url)
    store = Store(url)
    err.print(f"database {store.safe_url} is up to date")
    store.close()


@app.command("maintain")
def db_maintain(
    ctx: typer.Context,
    database: Annotated[
        str | None, typer.Option(help="Database URL (default: the database url in plant.toml).")
    ] = None,
    months_ahead: Annotated[
        int, typer.Option(min=0, max=36, help="Create the month partitions this far ahead.")
    ] = 3,
    archive_before: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Move the spectra of months that ended more than DAYS ago to Parquet files "
            "(default: archive nothing).",
            metavar="DAYS",
        ),
    ] = None,
    archive_dir: Annotated[
        Path | None,
        typer.Option(help="Where the Parquet files go (default: spectra archive_dir)."),
    ] = None,
) -> None:
    """Create month partitions ahead and archive old spectra; safe while lines write.

    Prints what it did as one JSON line (partitions created, months and spectra archived,
    files, seconds per step)."""
    from plant.partitions import MaintainError, maintain

    cfg = ctx_of(ctx).plant()
    store = Store(database or cfg.database.url)
    try:
        store.require_current_schema()
        report = maintain(
            store,
            months_ahead=months_ahead,
            archive_before_days=archive_before,
            archive_dir=archive_dir or cfg.spectra_archive_dir(),
        )
    except MaintainError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    print(json.dumps(report.json()))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="db")
