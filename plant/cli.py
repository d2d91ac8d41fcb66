"""The `plant` command: one entry point for operators, engineers and test rigs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from plant.commands import (
    Ctx,
    bench,
    classify,
    db,
    err,
    passports,
    plc,
    purity,
    run,
    sim,
    spectra,
    users,
)
from plant.config import ConfigError, config_dir
from plant.store import StoreError

app = typer.Typer(
    help="Process control and sorting for a lithium-ion battery recycling plant.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Configuration directory (default ./config, or $PLANT_CONFIG_DIR).",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.obj = Ctx(config_dir(config))


# Command groups, one module each under plant/commands/.
for _module in (db, run, sim, passports, plc, spectra, purity, users, classify, bench):
    _module.register(app)


def main() -> None:
    """Console entry point: expected failures print one line, never a traceback."""
    try:
        code = app(standalone_mode=False)  # returns typer.Exit's code instead of raising
    except (ConfigError, StoreError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (click.exceptions.Abort, typer.Abort):  # typer 0.29 vendors its own click
        err.print("aborted")
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
