"""The simulated hardware `plant sim` serves: one line's PLC and XRF heads on loopback ports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.sim.cells import CellStream
from drivers.sim.plc import SimPlc
from drivers.sim.xrf import SimXrfStation
from plant.config import PlantConfig
from plant.rig import tag_map


@dataclass
class SimHardware:
    """The simulated PLC and XRF heads of one line, on the configured loopback ports."""

    plc: SimPlc
    xrf: SimXrfStation | None

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
        xrf = (
            SimXrfStation(
                cfg.sim.xrf_heads,
                host=cfg.sim.host,
                base_port=cfg.sim.xrf_port + port_offset,
                seed=cfg.sim.seed,
                dwell_scale=dwell_scale,
                warm_mixtures=warm_mixtures,
                stream=stream,  # one truth per cell, drawn once for the PLC and the heads
            )
            if cfg.sim.xrf_heads
            else None
        )
        return cls(plc, xrf)

    async def start(self) -> None:
        await self.plc.start()
        if self.xrf is not None:
            await self.xrf.start()

    async def stop(self) -> None:
        if self.xrf is not None:
            await self.xrf.stop()
        await self.plc.stop()
