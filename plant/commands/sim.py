"""`plant sim`: the simulated line hardware on loopback ports, until Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from plant import eventloop
from plant.commands import ctx_of, err

if TYPE_CHECKING:
    from drivers.sim.plc import SimPlc


def sim(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(help="Cells per second the infeed delivers.")] = 20.0,
    cells: Annotated[
        int | None, typer.Option(help="Stop the feeder after this many cells (default: never).")
    ] = None,
    dwell_scale: Annotated[
        float,
        typer.Option(help="XRF dwell = live time x this (0: answer at once, for benchmarks)."),
    ] = 1.0,
    warm_mixtures: Annotated[
        bool,
        typer.Option(
            help="Precompute the XRF spectra of 70/30 mixtures too before listening (~5 s): "
            "steady XRF response times for benchmarks."
        ),
    ] = False,
    batch: Annotated[
        str,
        typer.Option(
            help="The delivery whose passport ids the labels carry (`plant run --simulate` "
            "sets it to the passports it stores)."
        ),
    ] = "",
) -> None:
    """Start the simulated PLC (Modbus TCP), XRF heads (DP5 or SCPI, as plant.toml says), code
    reader (TCP) and lot analyser (SciAps HTTP) on the ports in plant.toml."""
    from threadpoolctl import threadpool_limits

    from plant.commands.sim_hardware import SimHardware  # heavy: simulators, xraylib

    threadpool_limits(1)  # small arrays: idle BLAS threads would only spin (plant/runner.py)

    c = ctx_of(ctx)
    cfg = c.plant()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    hw = SimHardware.from_config(
        cfg,
        c.config_dir,
        rate=rate,
        max_cells=cells,
        dwell_scale=dwell_scale,
        warm_mixtures=warm_mixtures,
        batch=batch,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # Commissioning faults (docs/plc.md, "Simulator"): SIGUSR1 restarts the PLC (numbering
        # starts again), SIGUSR2 stops or resumes its program scan (the heartbeat freezes).
        loop.add_signal_handler(signal.SIGUSR1, hw.plc.restart)
        loop.add_signal_handler(signal.SIGUSR2, _toggle_scan, hw.plc)
        await hw.start()
        heads = cfg.sim.xrf_heads
        err.print(
            f"simulated PLC on {cfg.sim.host}:{hw.plc.port} (Modbus TCP); "
            f"{heads} XRF heads on {cfg.sim.host}:{cfg.sim.xrf_port}-{cfg.sim.xrf_port + heads - 1}"
            f" ({'DP5, UDP' if cfg.xrf.kind == 'dp5' else 'SCPI, TCP'}); feeder {rate} cells/s"
            + (
                f"; SciAps analyser on http://{cfg.sim.host}:{hw.analyser.port}"
                if hw.analyser is not None
                else ""
            )
            + (
                f"; code reader on {cfg.sim.host}:{hw.reader.port} (TCP)"
                if hw.reader is not None
                else ""
            )
            + (f", {cells} cells" if cells else "")
            + "  (Ctrl-C stops)"
        )
        await stop.wait()
        await hw.stop()
        err.print("simulated hardware stopped")

    eventloop.run(main())


def _toggle_scan(plc: SimPlc) -> None:
    plc.faults.scan_stopped = not plc.faults.scan_stopped
    err.print("simulated PLC program " + ("stopped" if plc.faults.scan_stopped else "running"))


def register(root: typer.Typer) -> None:
    root.command()(sim)
