"""The `plant` command: one entry point for operators, engineers and test rigs."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from plant.config import ConfigError, PlantConfig, config_dir, load_plant
from plant.store import Store, StoreError, upgrade

err = Console(stderr=True)

app = typer.Typer(
    help="Process control and sorting for a lithium-ion battery recycling plant.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema and maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@dataclass
class Ctx:
    """What every command gets: where its configuration lives."""

    config_dir: Path

    def plant(self) -> PlantConfig:
        return load_plant(self.config_dir)

    def store(self) -> Store:
        return Store(self.plant().database.url)


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Configuration directory (default ./config, or $PLANT_CONFIG_DIR).",
        show_default=False,
    ),
]


@app.callback()
def _root(ctx: typer.Context, config: ConfigOpt = None) -> None:
    ctx.obj = Ctx(config_dir(config))


def ctx_of(ctx: typer.Context) -> Ctx:
    obj = ctx.find_root().obj
    assert isinstance(obj, Ctx)
    return obj


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Bring the database schema up to date (safe to run again)."""
    cfg = ctx_of(ctx).plant()
    store = Store(cfg.database.url)
    upgrade(cfg.database.url)
    err.print(f"database {store.safe_url} is up to date")
    store.close()


@app.command()
def run(
    ctx: typer.Context,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Start the simulated PLC, XRF heads and camera too.")
    ] = False,
    host: Annotated[str | None, typer.Option(help="HMI bind address (default from plant.toml).")] = None,
    port: Annotated[int | None, typer.Option(help="HMI port (default from plant.toml).")] = None,
) -> None:
    """Run the line controller and the HMI web view."""
    c = ctx_of(ctx)
    cfg = c.plant()
    store = Store(cfg.database.url)
    store.require_current_schema()
    store.close()
    import uvicorn

    from hmi.app import create_app

    bind_host = host or cfg.hmi.host
    bind_port = port or cfg.hmi.port
    err.print(f"HMI on http://{bind_host}:{bind_port}  (Ctrl-C stops)")
    uvicorn.run(create_app(c.config_dir), host=bind_host, port=bind_port, log_level="warning")


def main() -> None:
    """Console entry point: expected failures print one line, never a traceback."""
    try:
        app(standalone_mode=False)
    except (ConfigError, StoreError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
