"""The simulated hardware `plant sim` serves: one line's PLC, XRF heads and code reader and the
lab's SciAps analyser on loopback ports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from drivers.sim.cells import CellStream
from drivers.sim.codereader import SimCodeReader
from drivers.sim.dp5 import ConveyorLanes, SimDp5Station
from drivers.sim.plc import Buffer, SimPlc
from drivers.sim.sciaps import Pellet, SimSciaps, black_mass_pellet
from drivers.sim.xrf import SimStation, SimXrfStation
from plant.commands.sim_cells import cell_stream
from plant.config import PlantConfig
from plant.rig import tag_map
from plant.store import CellRow, Store


@dataclass
class SimHardware:
    """The simulated PLC, XRF heads (of `[xrf] kind`), code reader and lot analyser of one
    line, on the configured ports."""

    plc: SimPlc
    xrf: SimStation[Any] | None
    analyser: SimSciaps | None = None
    pellets: TrueSamples | None = None
    reader: SimCodeReader | None = None

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
        batch: str = "",
        **plc_options: Any,
    ) -> SimHardware:
        """`batch`: the delivery whose passports the labels carry (`plant run --simulate`
        stores them under this name)."""
        stream = cell_stream(cfg, batch)
        plc = SimPlc(
            tag_map(config_dir),
            host=cfg.sim.host,
            port=cfg.sim.plc_port + port_offset if cfg.sim.plc_port else 0,
            seed=cfg.sim.seed,
            rate_cells_s=rate,
            max_cells=max_cells,
            cells=stream,
            buffers={
                r.value: Buffer(b.capacity, b.drain_cells_s) for r, b in cfg.sim.buffers.items()
            },
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
        reader = None
        if cfg.sim.code_reader_port:  # it reads the cells in the order the conveyor brings them
            at_reader = ConveyorLanes(plc, 1)
            reader = SimCodeReader(
                stream,
                lambda: at_reader.take(0),
                host=cfg.sim.host,
                port=cfg.sim.code_reader_port + port_offset,
            )
        if not cfg.sim.assay_analyser_port:
            return cls(plc, xrf, reader=reader)
        pellets = TrueSamples(cfg.database.url, stream)
        analyser = SimSciaps(
            cfg.sim.host,
            cfg.sim.assay_analyser_port + port_offset,
            seed=cfg.sim.seed,
            press=pellets,
        )
        return cls(plc, xrf, analyser, pellets, reader)

    async def start(self) -> None:
        """The analyser, the code reader and the heads first: once the PLC's port answers,
        everything does (UDP heads cannot be probed with a connect)."""
        if self.analyser is not None:
            await self.analyser.start()
        if self.reader is not None:
            await self.reader.start()
        if self.xrf is not None:
            await self.xrf.start()
        await self.plc.start()

    async def stop(self) -> None:
        if self.reader is not None:
            await self.reader.stop()
        if self.xrf is not None:
            await self.xrf.stop()
        await self.plc.stop()
        if self.analyser is not None:
            await self.analyser.stop()
        if self.pellets is not None:
            self.pellets.close()


class TrueSamples:
    """Samples as the simulated plant made them, from the true cells (the simulated line's
    truth): a lot's black mass pressed into a pellet, or one cell's electrodes."""

    def __init__(self, database_url: str, stream: CellStream) -> None:
        self.database_url = database_url
        self.stream = stream
        self._store: Store | None = None

    def __call__(self, kind: str, ident: str) -> Pellet | None:
        if self._store is None:
            self._store = Store(self.database_url)
        if kind == "lot_id":
            where = CellRow.lot_id == ident
        elif ident.isdigit():
            where = CellRow.id == int(ident)
        else:
            return None
        with self._store.session() as s:
            seqs = list(s.scalars(select(CellRow.seq).where(where)))
        return black_mass_pellet(f"{kind} {ident}", (self.stream.truth(q) for q in seqs))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
