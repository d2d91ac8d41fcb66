"""`plant run`: the line controller and the HMI."""

from __future__ import annotations

from typing import Annotated

import typer

from plant.commands import ctx_of, err


def run(
    ctx: typer.Context,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Start the simulated PLC, XRF heads and camera too.")
    ] = False,
    host: Annotated[
        str | None, typer.Option(help="HMI bind address (default: plant.toml).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="HMI port (default: plant.toml).")] = None,
) -> None:
    """Run the line controller and the HMI web view."""
    c = ctx_of(ctx)
    cfg = c.plant()
    c.store().close()  # refuses an outdated schema before anything starts
    import uvicorn

    from hmi.app import create_app

    bind_host = host or cfg.hmi.host
    bind_port = port or cfg.hmi.port
    err.print(f"HMI on http://{bind_host}:{bind_port}  (Ctrl-C stops)")
    uvicorn.run(create_app(c.config_dir), host=bind_host, port=bind_port, log_level="warning")


def register(root: typer.Typer) -> None:
    root.command()(run)
