"""Labelled reference spectra of 'another site' for calibration tests: the simulator's physics
through an instrument no training profile has (other gain, offset, resolution, tube, air)."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np

from drivers.sim.cells import CellFormat, CellTruth
from drivers.sim.profiles import PROFILES
from drivers.sim.xrfphysics import draw_presentation, render_cell
from drivers.spectra import write_msa
from models.classifier import CLASSES

# A Si-PIN head at 45 kV with its own calibration: 2048 channels of 21.5 eV from +0.04 keV.
SITE_PROFILE = replace(
    PROFILES["sipin_2048_45kv"],
    name="site_b_sipin",
    kev_per_channel=0.0215,
    offset_kev=0.04,
    fwhm_mn_ka_ev=168.0,
    gain_drift=0.004,
    air_path_cm=1.2,
)


def write_reference_set(
    out: Path, per_class: int = 10, seed: int = 7, classes: tuple[str, ...] = CLASSES
) -> Path:
    """Write `per_class` .msa spectra of every class (opened and pouch cells, 1-3 s) and
    labels.csv (file, chemistry) into `out`; returns `out`."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, chem in enumerate(classes):
        for i in range(per_class):
            rng = np.random.default_rng([seed, k, i])
            fmt = CellFormat.opened if i % 2 else CellFormat.pouch
            truth = CellTruth.bare(chem, fmt, seq=k * per_class + i)
            pres = draw_presentation(truth, SITE_PROFILE, rng)
            spectrum = render_cell(truth, pres, SITE_PROFILE, float(rng.uniform(1, 3)), rng)
            name = f"{chem}_{i:02d}.msa"
            write_msa(spectrum, out / name)
            rows.append((name, chem))
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("file", "chemistry"))
        writer.writerows(rows)
    return out
