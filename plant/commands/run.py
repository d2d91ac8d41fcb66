"""`plant run`: the line controller and the HMI."""

from __future__ import annotations

from typing import Annotated

import typer

from plant.commands import ctx_of


def run(
    ctx: typer.Context,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Start the simulated PLC and XRF heads too.")
    ] = False,
    cells: Annotated[
        int | None,
        typer.Option(help="Stop after this many cells are final and print a JSON summary."),
    ] = None,
    rate: Annotated[float, typer.Option(help="With --simulate: infeed cells per second.")] = 20.0,
    dwell_scale: Annotated[
        float, typer.Option(help="With --simulate: XRF dwell = live time x this.")
    ] = 1.0,
    line: Annotated[str | None, typer.Option(help="Line id (default: plant.toml).")] = None,
    hmi: Annotated[bool, typer.Option("--hmi/--no-hmi", help="Serve the HMI too.")] = True,
    host: Annotated[
        str | None, typer.Option(help="HMI bind address (default: plant.toml).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="HMI port (default: plant.toml).")] = None,
) -> None:
    """Run the line controller (and the HMI web view) until Ctrl-C or --cells are done."""
    c = ctx_of(ctx)
    cfg = c.plant()
    c.store().close()  # refuse an outdated schema before anything starts

    from plant.commands.wiring import run_parts  # heavy: drivers, models, simulators
    from plant.runner import RunOptions, run_command

    opts = RunOptions(
        simulate=simulate,
        cells=cells,
        rate=rate,
        dwell_scale=dwell_scale,
        line=line,
        hmi=hmi,
        host=host,
        port=port,
    )
    run_command(cfg, c.config_dir, opts, run_parts(cfg, c.config_dir, opts))


def register(root: typer.Typer) -> None:
    root.command()(run)
