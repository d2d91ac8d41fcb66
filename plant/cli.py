"""The `plant` command: one entry point for operators, engineers and test rigs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import typer.main
from rich.markup import escape
from sqlalchemy.exc import OperationalError

# typer (>= 0.29) carries its own copy of click: its usage errors are these, not click's.
from typer._click.core import Command
from typer._click.exceptions import UsageError

from plant.commands import (
    Ctx,
    bench,
    calibrate,
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
    weighings,
)
from plant.config import ConfigError, config_dir
from plant.store import StoreError, db_error_line

app = typer.Typer(
    help="Process control and sorting for a lithium-ion battery recycling plant.",
    add_completion=False,
    pretty_exceptions_enable=False,
)

CONFIG_HELP = "Configuration directory (default ./config, or $PLANT_CONFIG_DIR)."


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", help=CONFIG_HELP, show_default=False),
    ] = None,
) -> None:
    ctx.obj = Ctx(config_dir(config))


# Command groups, one module each under plant/commands/.
for _module in (
    db, run, sim, passports, plc, spectra, purity, users, classify, calibrate, bench, weighings
):  # fmt: skip
    _module.register(app)


def _config_after_subcommand(ctx: typer.Context, value: Path | None) -> None:
    """`plant run --config DIR` means the same as `plant --config DIR run`."""
    if value is not None:
        ctx.find_root().obj = Ctx(config_dir(value))


def _prepared(command: Command) -> Command:
    """Give every subcommand (groups included) its own `--config` that sets the root's, and
    make a group without its command a one-line usage error ("Missing command."), not a help
    page printed before the error (typer's `no_args_is_help`)."""
    command.no_args_is_help = False
    for sub in getattr(command, "commands", {}).values():
        option = typer.main._get_param(
            typer.main.ParamMeta(
                name="config",
                annotation=Path | None,
                default=typer.Option(
                    None,
                    "--config",
                    help=CONFIG_HELP,
                    show_default=False,
                    expose_value=False,
                    callback=_config_after_subcommand,
                ),
            )
        )
        sub.params.append(option)
        _prepared(sub)
    return command


def _usage_line(exc: UsageError) -> str:
    """A usage error in one line, with where to look for the right usage."""
    path = exc.ctx.command_path if exc.ctx is not None else "plant"
    message = " ".join(exc.format_message().split())
    return f"{message} (see `{path} --help`)"


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def main() -> None:
    """Console entry point: expected failures print one `error:` line, never a traceback."""
    command = _prepared(typer.main.get_command(app))
    try:
        code = command.main(prog_name="plant", standalone_mode=False)  # typer.Exit -> its code
    except UsageError as exc:
        _fail(_usage_line(exc), 2)
    except (ConfigError, StoreError) as exc:
        _fail(str(exc), 2)
    except OperationalError as exc:  # a database lost or refused after the command checked it
        _fail(f"database: {db_error_line(exc)}", 2)
    except typer.TyperException as exc:  # the other errors of typer's click (e.g. FileError)
        _fail(" ".join(exc.format_message().split()), 1)
    except typer.Abort:
        _fail("aborted", 1)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
