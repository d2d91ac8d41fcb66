"""Simulated XRF spectra: what an XRF person would check first (line positions, ratios,
resolution, what a steel can hides and what it lets through, count statistics)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from drivers.sim import xrfphysics
from drivers.sim.cells import CellFormat, CellStream, CellTruth
from drivers.sim.xrfphysics import (
    HELDOUT_PROFILES,
    PROFILES,
    TRAIN_PROFILES,
    InstrumentProfile,
    Presentation,
    _sf_kernel,
    line_energy,
    render_cell,
    simulate_cell,
    simulate_material,
)
from drivers.spectra import Spectrum

STILL = Presentation(
    casing_fraction=0.0, intensity=1.0, traces=(), gain_error=0.0, stoichiometry_sigma=0.0
)
BENCH = PROFILES["bench_sdd_2048"]  # 50 kV SDD


def _cell(chem: str, fmt: CellFormat = CellFormat.opened) -> CellTruth:
    return CellTruth.bare(chem, fmt, seq=1)


def _measure(
    chem: str,
    fmt: CellFormat = CellFormat.opened,
    profile: InstrumentProfile = BENCH,
    live: float = 10.0,
    seed: int = 0,
) -> Spectrum:
    return render_cell(_cell(chem, fmt), STILL, profile, live, np.random.default_rng(seed))


def _window(s: Spectrum, kev: float, half: float = 0.07) -> float:
    return s.counts_between(kev - half, kev + half)


def _per_channel(s: Spectrum, lo: float, hi: float) -> float:
    e = s.energies()
    return float(s.counts[(e >= lo) & (e <= hi)].mean())


def _peak_kev(s: Spectrum, lo: float, hi: float) -> float:
    """Peak position by a parabola through the top three channels (log counts)."""
    e = s.energies()
    idx = np.flatnonzero((e >= lo) & (e <= hi))
    i = int(idx[np.argmax(s.counts[idx])])
    y0, y1, y2 = np.log(s.counts[i - 1 : i + 2])
    shift = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    return float(e[i] + shift * s.kev_per_channel)


def _fwhm_kev(s: Spectrum, centre: float) -> float:
    e = s.energies()
    background = _per_channel(s, centre - 0.9, centre - 0.6)
    idx = np.flatnonzero((e > centre - 0.4) & (e < centre + 0.4))
    y = s.counts[idx] - background
    half = y.max() / 2
    top = int(np.argmax(y))
    left = top - int(np.argmax(y[top::-1] < half))
    right = top + int(np.argmax(y[top:] < half))
    el = np.interp(half, [y[left], y[left + 1]], [e[idx][left], e[idx][left + 1]])
    er = np.interp(half, [y[right], y[right - 1]], [e[idx][right], e[idx][right - 1]])
    return float(er - el)


def test_profiles_differ_and_are_split_into_train_and_heldout() -> None:
    assert len(PROFILES) >= 5
    assert set(TRAIN_PROFILES).isdisjoint(HELDOUT_PROFILES)
    assert set(TRAIN_PROFILES) | set(HELDOUT_PROFILES) == set(PROFILES)
    profiles = PROFILES.values()
    assert {p.n_channels for p in profiles} >= {1024, 2048, 4096}
    assert any(p.offset_kev < 0 for p in profiles)
    assert {p.tube_kv for p in profiles} >= {40.0, 50.0}


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_ni_ka_peak_at_true_energy_in_every_profile(name: str) -> None:
    profile = replace(PROFILES[name], gain_drift=0.0)
    s = _measure("NMC811", profile=profile, live=20.0)
    ni_ka = line_energy("Ni", "KA1")
    assert ni_ka == pytest.approx(7.478, abs=0.002)
    assert abs(_peak_kev(s, 7.3, 7.6) - ni_ka) <= profile.kev_per_channel


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_fwhm_at_mn_ka_matches_profile(name: str) -> None:
    profile = replace(PROFILES[name], gain_drift=0.0)
    s = simulate_material(
        {"Mn": 63.2, "O": 36.8}, profile, 30.0, np.random.default_rng(2), source="MnO2 pellet"
    )
    fwhm_ev = 1000 * _fwhm_kev(s, line_energy("Mn", "KA1"))
    # a peak read off channels is the line convolved with the channel box (variance w²/12):
    # 40 eV channels widen a 128 eV line by 3 % before the half-maximum interpolation's own bias
    box_ev = 2.3548 * 1000 * profile.kev_per_channel / math.sqrt(12)
    assert fwhm_ev == pytest.approx(math.hypot(profile.fwhm_mn_ka_ev, box_ev), rel=0.10)


def test_gain_drift_moves_peaks_by_at_most_the_drift() -> None:
    profile = PROFILES["sipin_1024"]
    for seed in range(5):
        s = simulate_cell(_cell("NMC811"), profile, 10.0, np.random.default_rng(seed))
        allowed = profile.gain_drift * 7.478 + profile.kev_per_channel
        assert abs(_peak_kev(s, 7.3, 7.6) - 7.478) <= allowed


def test_nmc811_has_higher_ni_to_co_ratio_than_nmc111() -> None:
    ratios = {}
    for chem in ("NMC111", "NMC811"):
        s = _measure(chem)
        ratios[chem] = _window(s, 7.478) / _window(s, 6.930)
    assert ratios["NMC811"] > 3 * ratios["NMC111"]


def test_lfp_shows_fe_and_p_but_no_ni_or_co() -> None:
    s = _measure("LFP")
    background = _per_channel(s, 10.0, 12.0)
    assert _per_channel(s, 6.36, 6.44) > 1000 * background  # Fe Kα
    assert _per_channel(s, 1.98, 2.04) > 5 * _per_channel(s, 2.3, 2.5)  # P Kα above continuum
    assert _per_channel(s, 7.44, 7.52) < 3 * background  # no Ni Kα
    assert _per_channel(s, 7.62, 7.68) < 3 * background  # no Co Kβ
    nmc = _measure("NMC111")
    assert _per_channel(nmc, 7.62, 7.68) > 30 * _per_channel(nmc, 10.0, 12.0)


def test_fe_kbeta_to_kalpha_ratio_is_physical() -> None:
    s = _measure("LFP", live=30.0)
    ratio = _window(s, line_energy("Fe", "KB1")) / _window(s, line_energy("Fe", "KA1"))
    assert 0.08 < ratio < 0.2


def test_steel_can_hides_the_li_ion_cathode() -> None:
    nmc = _measure("NMC622", CellFormat.steel_can, seed=1)
    lfp = _measure("LFP", CellFormat.steel_can, seed=2)
    lines = {e: _window(nmc, e) for e in (5.899, 6.404, 6.930, 7.478)}
    assert sorted(lines, key=lines.__getitem__)[-2:] in ([6.404, 7.478], [7.478, 6.404])
    for kev in (5.899, 6.930, 7.649):  # Mn Kα, Co Kα, Co Kβ: same as an LFP cell in a can
        a, b = _window(nmc, kev), _window(lfp, kev)
        assert abs(a - b) < 5 * np.sqrt(a + b)


def test_steel_can_nicd_shows_cd_ka_at_50kv() -> None:
    nicd = _measure("NiCd", CellFormat.steel_can, live=30.0, seed=3)
    other = _measure("NMC811", CellFormat.steel_can, live=30.0, seed=4)
    cd_ka = line_energy("Cd", "KA1")
    assert cd_ka == pytest.approx(23.17, abs=0.01)
    excess = _window(nicd, cd_ka, 0.12) - _window(other, cd_ka, 0.12)
    assert excess > 5 * np.sqrt(_window(other, cd_ka, 0.12) + 1)


def test_steel_can_nimh_shows_la_only_above_the_la_k_edge() -> None:
    la_ka = line_energy("La", "KA1")
    excess = {}
    for name in ("bench_sdd_2048", "handheld_sdd_40kv"):
        profile = PROFILES[name]
        nimh = _measure("NiMH", CellFormat.steel_can, profile=profile, live=60.0, seed=5)
        other = _measure("NMC811", CellFormat.steel_can, profile=profile, live=60.0, seed=6)
        noise = np.sqrt(_window(other, la_ka, 0.15) + 1)
        excess[name] = (_window(nimh, la_ka, 0.15) - _window(other, la_ka, 0.15)) / noise
    assert excess["bench_sdd_2048"] > 5  # 50 kV: La K lines get through the can
    assert excess["handheld_sdd_40kv"] < 3  # 40 kV: barely above the 38.9 keV edge


def test_opened_casing_adds_fe_and_ni_plating() -> None:
    lfp_truth = _cell("LCO")
    bare = render_cell(lfp_truth, STILL, BENCH, 10.0, np.random.default_rng(1))
    cased = render_cell(
        lfp_truth, replace(STILL, casing_fraction=0.4), BENCH, 10.0, np.random.default_rng(1)
    )
    assert _window(cased, 6.404) > 20 * _window(bare, 6.404)
    assert _window(cased, 7.478) > 5 * _window(bare, 7.478)


def test_counts_scale_with_live_time() -> None:
    short = _measure("NMC622", live=1.0, seed=1).total_counts()
    long = _measure("NMC622", live=4.0, seed=2).total_counts()
    assert long / short == pytest.approx(4.0, rel=0.02)


def test_si_escape_peak_below_fe_ka() -> None:
    s = _measure("LFP", live=30.0)
    escape = _window(s, 6.404 - 1.740) - 2 * 0.07 / s.kev_per_channel * _per_channel(s, 4.9, 5.3)
    assert 0.001 < escape / _window(s, 6.404) < 0.012


def test_pileup_sum_peak_grows_with_count_rate() -> None:
    share = {}
    for rate in (20_000, 400_000):
        profile = replace(BENCH, count_rate_cps=rate, gain_drift=0.0)
        s = _measure("LFP", profile=profile, live=200_000 / rate * 10)
        sum_peak = _window(s, 2 * 6.404, 0.1) - 0.2 / s.kev_per_channel * _per_channel(s, 11, 12)
        share[rate] = sum_peak / _window(s, 6.404)
    assert share[400_000] > 5 * share[20_000]


def test_short_measurements_have_few_counts_and_stream_cells_all_simulate() -> None:
    stream = CellStream(11)
    rng = np.random.default_rng(0)
    for seq in range(40):
        s = simulate_cell(stream.truth(seq), PROFILES["sipin_1024"], 0.05, rng)
        assert 100 < s.total_counts() < 5000
        assert s.tube_kv == 50.0


def test_simulate_material_rejects_bad_composition() -> None:
    with pytest.raises(ValueError, match=r"pellet: element wt% add up to 120\.0"):
        simulate_material(
            {"Ni": 60, "Co": 60}, BENCH, 1.0, np.random.default_rng(), source="pellet"
        )
    with pytest.raises(ValueError, match="bad element"):
        simulate_material({"Xx": 1}, BENCH, 1.0, np.random.default_rng(), source="pellet")


def test_secondary_fluorescence_kernel_is_shermans_for_a_thick_layer() -> None:
    # Shiraiwa & Fujino / Sherman, thick: [ln(1+mu0/mui)/mu0 + ln(1+mu2/mui)/mu2] / 2(mu0+mu2)
    mu0 = np.array([5.0, 50.0, 300.0, 2000.0])
    mu2, mu_i = np.array([80.0]), np.array([120.0])
    closed = (np.log1p(mu0 / mu_i) / mu0 + np.log1p(mu2 / mu_i) / mu2) / (2 * (mu0 + mu2))
    assert np.allclose(_sf_kernel(mu0, mu2, mu_i, math.inf)[0], closed, rtol=1e-6)
    # a layer 20 absorption lengths thick is thick; a thin one gives less
    assert np.allclose(_sf_kernel(mu0, mu2, mu_i, 10.0)[0], closed, rtol=1e-6)
    thin = _sf_kernel(mu0, mu2, mu_i, 0.001)[0]
    assert np.all(thin < closed) and thin[0] < 0.2 * closed[0]


def test_ni_k_lines_excite_mn_in_nmc_but_not_in_lmo(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ni K (7.48, 8.26 keV) lies above the Mn K edge (6.54 keV): in an NMC cathode Mn K is
    # enhanced (fisx: x1.65-1.9 for NMC622 under 12-30 keV photons), Ni itself is not; LMO has
    # nothing above its own edge to excite it (its Mn against the Rh Kα Compton peak, which
    # secondary fluorescence does not touch).
    def mn_to_ni(chem: str) -> tuple[float, float]:
        s = _measure(chem, live=30.0)
        compton = s.counts_between(18.6, 19.8)
        return _window(s, line_energy("Mn")) / compton, _window(s, line_energy("Ni")) / compton

    with_sf = {c: mn_to_ni(c) for c in ("NMC622", "LMO")}
    monkeypatch.setattr(xrfphysics, "_secondary", lambda *args: None)
    xrfphysics._cell_template.cache_clear()
    xrfphysics._rate_scale.cache_clear()
    try:
        primary = {c: mn_to_ni(c) for c in ("NMC622", "LMO")}
    finally:
        monkeypatch.undo()
        xrfphysics._cell_template.cache_clear()
        xrfphysics._rate_scale.cache_clear()
    mn_gain = (with_sf["NMC622"][0] / with_sf["NMC622"][1]) / (
        primary["NMC622"][0] / primary["NMC622"][1]
    )
    assert 1.25 < mn_gain < 1.6
    assert with_sf["LMO"][0] == pytest.approx(primary["LMO"][0], rel=0.02)
