"""The SX circuits' pH against product impurities, from the simulator's process model.

Usage: python bench/sx_ph_sweep.py

One campaign of 100 cells of a typical NMC/NCA feed (200 g each; NMC622, NMC811, NMC532, NCA,
NMC111 in turn) through `run_campaign` with the default model and the impurity removal at pH
4.0, once per pH of each circuit (the other at its setpoint). Prints the tables of
docs/purity.md, "Solvent extraction"; JSON on the last line.
"""

from __future__ import annotations

import json

import numpy as np

from drivers.sim.hydromet import run_campaign
from plant.lots import estimate_metals

CHEMISTRIES = ("NMC622", "NMC811", "NMC532", "NCA", "NMC111")


def feed() -> tuple[dict[str, float], float]:
    grams: dict[str, float] = {}
    for i in range(100):
        for el, g in estimate_metals(CHEMISTRIES[i % len(CHEMISTRIES)], 200.0).items():
            grams[el] = grams.get(el, 0.0) + g
    return grams, 100 * 200.0


def ppm(tag: str, ph: float) -> dict[str, float]:
    grams, mass = feed()
    res = run_campaign(grams, mass, 4.0, 0.03, np.random.default_rng(1), sx_ph={tag: ph})
    got = {p.product: p.impurities_ppm for p in res.products}
    return {
        "Co in NiSO4": got["NiSO4·6H2O"].get("Co", 0.0),
        "Ni in CoSO4": got["CoSO4·7H2O"].get("Ni", 0.0),
        "Mn in CoSO4": got["CoSO4·7H2O"].get("Mn", 0.0),
        "Co in MnSO4": got["MnSO4·H2O"].get("Co", 0.0),
    }


def main() -> None:
    out = {
        "sx_co.ph": {ph: ppm("sx_co.ph", ph) for ph in (4.3, 4.5, 4.7, 5.0, 6.0)},
        "sx_mn.ph": {ph: ppm("sx_mn.ph", ph) for ph in (2.0, 2.2, 2.5, 2.8, 3.0)},
    }
    for tag, rows in out.items():
        print(tag)
        for ph, values in rows.items():
            print(f"  {ph:4.1f}  " + "  ".join(f"{k} {v:g}" for k, v in values.items()))
    print(json.dumps({tag: {str(ph): v for ph, v in rows.items()} for tag, rows in out.items()}))


if __name__ == "__main__":
    main()
