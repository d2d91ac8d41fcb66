"""The simulated cells of a config: one truth for the controller's passport import and for the
simulators of `plant sim` (which must label the cells with the passports the import stored)."""

from __future__ import annotations

from drivers.sim.cells import CellStream, StreamMix
from plant.config import PlantConfig


def cell_stream(cfg: PlantConfig, batch: str = "") -> CellStream:
    """The cells of `[sim]`; `batch` names a delivery (its own passport ids, the same physics)."""
    return CellStream(
        cfg.sim.seed, StreamMix(copied_label_share=cfg.sim.copied_label_share), batch=batch
    )
