"""Tube scatter is fitted, not read as an element; the training physics spans anodes and make-ups
(issue 20; docs/classifier.md, "From a spectrum to features")."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from drivers.sim.cells import CellFormat, CellTruth
from drivers.sim.profiles import (
    ANODES,
    PROFILES,
    TRAIN_PROFILES,
    WIDE_PROFILES,
    InstrumentProfile,
)
from drivers.sim.xrfphysics import Presentation, make_up, render_cell
from drivers.spectra import Spectrum, read_msa, write_msa
from models.classifier import Rules, out_of_domain
from models.features import CD, extract_with_fit, fit_lines, tube_anode, tube_columns


def _profile(anode: str, kv: float = 50.0) -> InstrumentProfile:
    """A wide training profile with this anode, at high count rate and a long dwell."""
    base = next(p for p in WIDE_PROFILES if p.anode == anode)
    return replace(base, name=f"test_{anode}", tube_kv=kv, count_rate_cps=200_000.0)


def _spectrum(
    chemistry: str, fmt: CellFormat, anode: str, seed: int = 1, kv: float = 50.0
) -> Spectrum:
    pres = Presentation(0.0, 1.0, (), 0.0)
    rng = np.random.default_rng(seed)
    return render_cell(CellTruth.bare(chemistry, fmt), pres, _profile(anode, kv), 5.0, rng)


def _peak(e: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    """Unit-area Gaussian per keV."""
    return np.exp(-0.5 * ((e - centre) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


def test_rh_tube_kbeta_and_its_compton_peak_are_not_cd() -> None:
    # Rh Kβ2 (23.17 keV) sits on Cd Kα; the Compton peak of Rh Kβ lies just below.
    assert {name for name, _, _ in tube_columns(CD, "Rh")} >= {
        "tube_Kb_rayleigh",
        "tube_Kb_compton0",
    }
    cells = [
        _spectrum(chem, CellFormat.pouch, "Rh", seed)
        for seed, chem in enumerate(("LFP", "NMC622", "LCO"))
    ]
    # A light matrix scattering much more: a strong, wide Compton peak of Rh Kβ.
    rng = np.random.default_rng(7)
    for s in cells:
        e = s.energies()
        extra = 8000 * _peak(e, 21.76, 0.28)
        s.counts = s.counts + rng.poisson(extra * s.kev_per_channel)
    fit = fit_lines(cells)
    assert np.all(fit.area["Cd"] / fit.sigma["Cd"] < 3.0)
    nicd = fit_lines([_spectrum("NiCd", CellFormat.pouch, "Rh")])
    assert float(nicd.area["Cd"][0] / nicd.sigma["Cd"][0]) > 20.0


@pytest.mark.parametrize("anode", ["W", "Au"])
def test_l_line_anode_scatter_is_not_a_foreign_element(anode: str) -> None:
    spectra = [_spectrum("NMC811", CellFormat.opened, anode, seed) for seed in range(3)]
    x, fit = extract_with_fit(spectra)
    assert np.all(fit.area[f"{anode}_L"] == 0.0)  # the tube's own lines: scatter
    assert out_of_domain(x, fit, [s.tube_kv for s in spectra], Rules()) == ["", "", ""]


def test_anode_read_from_the_file(tmp_path: Path) -> None:
    spectrum = _spectrum("LFP", CellFormat.opened, "W")
    back = read_msa(write_msa(spectrum, tmp_path / "w.msa"))
    assert tube_anode(back) == "W"
    assert tube_anode(replace(back, metadata={})) == "Rh"  # not stated: the usual anode


def test_training_profiles_span_anodes_and_cell_make_ups() -> None:
    assert {PROFILES[p].anode for p in TRAIN_PROFILES} == set(ANODES)
    kvs = {PROFILES[p].tube_kv for p in TRAIN_PROFILES}
    assert min(kvs) <= 40.0 and max(kvs) >= 55.0
    wide = WIDE_PROFILES[0]
    a, b = (make_up(wide, "NMC622", CellFormat.pouch, v) for v in (1, 2))
    assert a != b and a.laminate_al_um != b.laminate_al_um
    ni = 28
    assert dict(a.metal_spread)[ni] != dict(b.metal_spread)[ni]  # composition around nominal
