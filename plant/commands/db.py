"""`plant db`: schema migrations."""

from __future__ import annotations

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


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="db")
