"""Simulated mechanical stage: a closed lot's cells, shredded and sorted into weighed fractions.

The split of a cell's mass into fractions follows typical Li-ion cell make-ups
(docs/reference/product-standards.md §3; docs/reference/xrf-and-process.md §2.2): cathode
active material 35 % + Cu foil 10 % + Al foil 5 % stay together as black mass for the leach
(the shares plant/lots.py estimates the lot's metals with), graphite 15-16 %, electrolyte 12 %,
separator and other plastics 4 %, the can 15-16 % (nickel-plated steel for cylindrical NMC,
NCA and LCO cells; aluminium for the prismatic LFP and LMO cells), tabs 1 % each of Al and Cu.
Half the electrolyte is recovered by condensation [U]; the rest leaves with the combustibles to
energy recovery. A quarter of the graphite ends in the fines, with the binder, as residue [U].
A small share of the mass (dust, moisture) is lost unweighed, and each weighing has the
weighbridge's noise, so the balance does not close exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# Share of the cell mass in each weighed fraction, %, per can material (sums to 100).
STEEL_CAN = {
    "black_mass": 50.0,
    "graphite": 12.0,
    "electrolyte": 6.0,
    "energy_recovery": 6.0,
    "plastics": 4.0,
    "steel": 15.0,
    "aluminium": 1.0,
    "copper": 1.0,
    "residue": 5.0,
}
ALUMINIUM_CAN = {**STEEL_CAN, "graphite": 11.0, "steel": 1.0, "aluminium": 16.0}
ALUMINIUM_CANS = frozenset({"LFP", "LMO"})
UNWEIGHED_LOSS_PCT = 0.3  # dust and moisture leaving with the off-gas [U]
WEIGHBRIDGE_REL_SD = 0.005  # 1 sigma of one weighing [U]


def split_pct(chemistry: str | None) -> dict[str, float]:
    """The fraction split of one chemistry's cells, % of the cell mass."""
    return ALUMINIUM_CAN if chemistry in ALUMINIUM_CANS else STEEL_CAN


class SimMechanicalStage:
    """Shreds lots into fractions with seeded weighbridge noise."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def fractions_kg(self, cells_kg: Mapping[str | None, float]) -> dict[str, float]:
        """Weighed kg of each fraction from a lot's cell mass per chemistry."""
        kept = 1.0 - UNWEIGHED_LOSS_PCT / 100.0
        out: dict[str, float] = {}
        for chemistry, kg in cells_kg.items():
            for fraction, pct in split_pct(chemistry).items():
                out[fraction] = out.get(fraction, 0.0) + kg * pct / 100.0 * kept
        return {
            f: round(kg * float(self.rng.normal(1.0, WEIGHBRIDGE_REL_SD)), 3)
            for f, kg in out.items()
            if kg > 0
        }
