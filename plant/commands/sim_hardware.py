"""The simulated hardware `plant sim` serves: one line's PLC and XRF heads on loopback ports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.sim.cells import CellStream
from drivers.sim.dp5 import ConveyorLanes, SimDp5Station
from drivers.sim.plc import SimPlc
from drivers.sim.xrf import SimStation, SimXrfStation
from plant.config import PlantConfig
from plant.rig import tag_map


@dataclass
class SimHardware:
    """The simulated PLC and XRF heads (of `[xrf] kind`) of one line, on the configured
    loopback ports."""

    plc: SimPlc
    xrf: SimStation[Any] | None

    @classmethod
    def from_config(
        cls,
        cfg: PlantConfig,
        config_dir: Path,
        *,
        rate: float = 20.0,
        max_cells: int | None = None,
        dwell_scale: float = 1.0,
        warm_mixtures: bool = False,
        port_offset: int = 0,
        **plc_options: Any,
    ) -> SimHardware:
        stream = CellStream(cfg.sim.seed)
        plc = SimPlc(
            tag_map(config_dir),
            host=cfg.sim.host,
            port=cfg.sim.plc_port + port_offset if cfg.sim.plc_port else 0,
            seed=cfg.sim.seed,
            rate_cells_s=rate,
            max_cells=max_cells,
            cells=stream,
            **plc_options,
        )
        heads = cfg.sim.xrf_heads
        options: dict[str, Any] = {
            "host": cfg.sim.host,
            "base_port": cfg.sim.xrf_port + port_offset,
            "seed": cfg.sim.seed,
            "dwell_scale": dwell_scale,
            "warm_mixtures": warm_mixtures,
            "stream": stream,  # one truth per cell, drawn once for the PLC and the heads
        }
        xrf: SimStation[Any] | None = None
        if heads and cfg.xrf.kind == "dp5":  # the conveyor decides what each head sees
            xrf = SimDp5Station(heads, lanes=ConveyorLanes(plc, heads), **options)
        elif heads:
            xrf = SimXrfStation(heads, **options)
        return cls(plc, xrf)

    async def start(self) -> None:
        """The heads first: once the PLC's port answers, everything does (UDP heads cannot
        be probed with a connect)."""
        if self.xrf is not None:
            await self.xrf.start()
        await self.plc.start()

    async def stop(self) -> None:
        if self.xrf is not None:
            await self.xrf.stop()
        await self.plc.stop()
