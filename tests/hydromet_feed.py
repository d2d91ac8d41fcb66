"""Test helper: closed lots of cells written straight into the store (no line engine needed)."""

from __future__ import annotations

from datetime import datetime

from plant.lots import estimate_metals
from plant.store import LotRow, Store


def add_lot(
    store: Store,
    lot_id: str,
    cells: list[tuple[str, float]],
    *,
    route: str = "hydromet",
    closed_at: datetime,
    seq0: int,
    line: str = "L1",
) -> list[str]:
    """A closed lot of (chemistry, mass_g) cells with passports; returns their passport ids."""
    metals: dict[str, float] = {}
    for chem, mass in cells:
        for el, g in estimate_metals(chem, mass).items():
            metals[el] = metals.get(el, 0.0) + g
    with store.begin() as s:
        s.add(
            LotRow(
                id=lot_id,
                line=line,
                route=route,
                state="closed",
                mass_g=sum(m for _, m in cells),
                cell_count=len(cells),
                metals_g=metals,
                opened_at=closed_at,
                closed_at=closed_at,
            )
        )
    pids = [f"urn:uuid:test-{lot_id}-{i}" for i in range(len(cells))]
    store.add_cells(
        {
            "line": line,
            "seq": seq0 + i,
            "passport_id": pids[i],
            "mass_g": mass,
            "chemistry": chem,
            "route": route,
            "state": "confirmed",
            "lot_id": lot_id,
            "created_at": closed_at,
            "updated_at": closed_at,
        }
        for i, (chem, mass) in enumerate(cells)
    )
    return pids


def nmc_mix(n: int, lfp: int = 0, mass: float = 200.0) -> list[tuple[str, float]]:
    """n cells of a typical hydromet feed, the first `lfp` of them misrouted LFP."""
    chems = ["NMC622", "NMC811", "NMC532", "NCA", "NMC111"]
    return [("LFP" if i < lfp else chems[i % len(chems)], mass) for i in range(n)]
