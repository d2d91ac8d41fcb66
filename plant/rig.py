"""Assemble a line's hardware from config: the real drivers, or the simulators serving them.

`plant sim` runs `SimHardware` (simulated PLC + XRF heads, real servers on loopback);
`plant run` opens a `Rig` of clients to whatever listens at the configured addresses, so the
same controller code drives a plant floor and a CI test rig.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.camera import DirectoryCamera, LabelCamera, decode_label, passport_id_from_payload
from drivers.plc import PlcClient, TagMap, TagMapError, load_tag_map
from drivers.sim.camera import SimCamera, SimCodeReader
from drivers.sim.cells import CellStream
from drivers.sim.plc import SimPlc
from drivers.sim.xrf import SimXrfStation
from drivers.xrf import XrfClient, XrfStation
from plant.config import ConfigError, PlantConfig


def tag_map(config_dir: Path) -> TagMap:
    """config/plc.toml, validated; errors as one-line ConfigErrors."""
    try:
        return load_tag_map(config_dir / "plc.toml")
    except TagMapError as exc:
        raise ConfigError(str(exc)) from None


class CameraLabels:
    """Camera + QR decoder: the passport id on a cell's label, or why there is none."""

    def __init__(self, camera: LabelCamera) -> None:
        self.camera = camera

    async def read_label(self, seq: int) -> tuple[str | None, str | None]:
        image = await self.camera.capture(seq)
        read = await asyncio.to_thread(decode_label, image)
        if read.payload is None:
            return None, f"label unreadable: {read.error}"
        try:
            return passport_id_from_payload(read.payload), None
        except ValueError as exc:
            return None, f"label QR is not a passport reference: {exc}"


@dataclass
class Rig:
    """Clients to one line's PLC, XRF heads and label camera."""

    plc: PlcClient
    station: XrfStation | None
    labels: CameraLabels | SimCodeReader | None
    heads: list[XrfClient] = field(default_factory=list)

    async def close(self) -> None:
        for head in self.heads:
            with contextlib.suppress(Exception):
                await head.close()
        with contextlib.suppress(Exception):
            await self.plc.close()


def open_rig(cfg: PlantConfig, config_dir: Path, stream: CellStream | None = None) -> Rig:
    """Clients for the configured addresses (connections open lazily, with backoff).

    `stream`: the simulated cells' truth, shared with whatever else in this process simulates
    them (the passport import draws each cell's truth before the cell arrives: the simulated
    code reader then finds it drawn)."""
    plc = PlcClient(cfg.plc.host, cfg.plc.port, tag_map(config_dir), timeout_s=cfg.plc.timeout_s)
    heads = [
        XrfClient(cfg.xrf.host, cfg.xrf.port + k, timeout_s=cfg.xrf.timeout_s, name=f"xrf{k + 1}")
        for k in range(cfg.xrf.heads)
    ]
    camera: LabelCamera | None
    if cfg.camera.kind == "sim_reader":
        reader = SimCodeReader(cfg.sim.seed, stream)
        return Rig(plc, XrfStation(heads) if heads else None, reader, heads)
    if cfg.camera.kind == "sim":
        camera = SimCamera(cfg.sim.seed)
    elif cfg.camera.kind == "directory":
        if cfg.camera.directory is None:
            raise ConfigError(
                "plant.toml: camera.directory: required when camera.kind is 'directory'"
            )
        camera = DirectoryCamera(cfg.camera.directory)
    else:
        camera = None
    return Rig(
        plc=plc,
        station=XrfStation(heads) if heads else None,
        labels=CameraLabels(camera) if camera is not None else None,
        heads=heads,
    )


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
