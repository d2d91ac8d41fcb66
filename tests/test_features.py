"""Spectrum features: energy space, overlaps resolved, count level and calibration drop out."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from drivers.spectra import Spectrum
from models import features as F


def synthetic(
    areas: Mapping[str, float],
    *,
    n: int = 2048,
    gain: float = 0.02,
    offset: float = -0.02,
    fwhm_mn: float = 0.14,
    scale: float = 1.0,
    shift: float = 0.0,
    seed: int | None = 0,
    metadata: dict[str, str] | None = None,
) -> Spectrum:
    """Gaussian K-line groups (xraylib ratios) on a smooth continuum, Poisson noise."""
    e = offset + gain * np.arange(n)
    mu = 30.0 * np.exp(-(((e - 12.0) / 8.0) ** 2)) + 5.0
    for el, area in areas.items():
        lines = F._k_group(el)
        total = sum(w for _, w in lines)
        for energy, w in lines:
            s = float(F.fwhm_at(energy, fwhm_mn)) / 2.3548
            g = np.exp(-0.5 * ((e - energy - shift) / s) ** 2) / (s * np.sqrt(2 * np.pi))
            mu = mu + area * w / total * gain * g
    mu = mu * scale
    counts = np.random.default_rng(seed).poisson(mu) if seed is not None else mu
    return Spectrum(
        counts=np.asarray(counts, dtype=float),
        offset_kev=offset,
        kev_per_channel=gain,
        live_time_s=scale,
        metadata=metadata or {},
    )


NMC622 = {"Ni": 40_000, "Co": 13_000, "Mn": 11_000, "Fe": 600}


def test_fitted_areas_match_the_lines_put_in() -> None:
    fit = F.fit_lines([synthetic(NMC622, seed=None)])
    for el, area in NMC622.items():
        assert fit.area[el][0] == pytest.approx(area, rel=0.12), el
    for el in ("Cu", "Zn", "Cr", "Ti"):
        assert abs(fit.area[el][0]) < 4 * fit.sigma[el][0], el


@pytest.mark.parametrize(
    ("parent", "neighbour"), [("Mn", "Fe"), ("Fe", "Co"), ("Co", "Ni"), ("Ni", "Cu")]
)
def test_kbeta_of_one_element_is_not_read_as_kalpha_of_the_next(
    parent: str, neighbour: str
) -> None:
    fit = F.fit_lines([synthetic({parent: 50_000}, fwhm_mn=0.18)])
    assert fit.area[parent][0] == pytest.approx(50_000, rel=0.05)
    # Kβ is ~13 % of the group: a window sum would report thousands of counts here.
    assert abs(fit.area[neighbour][0]) < 0.01 * 50_000


def test_features_do_not_depend_on_calibration_or_count_level() -> None:
    a = F.extract(synthetic(NMC622, seed=None))
    b = F.extract(synthetic(NMC622, n=4096, gain=0.0125, offset=-0.1, seed=None))
    c = F.extract(synthetic(NMC622, scale=10.0, seed=None))
    ratios = [F.INDEX[k] for k in F.FEATURE_NAMES if k.startswith(("frac_", "lr_"))]
    np.testing.assert_allclose(a[ratios], b[ratios], atol=0.02)
    np.testing.assert_allclose(a[ratios], c[ratios], atol=0.02)


def test_resolution_is_estimated_or_taken_from_the_file() -> None:
    for fwhm in (0.125, 0.175, 0.23):
        fit = F.fit_lines([synthetic(NMC622, fwhm_mn=fwhm)])
        assert fit.fwhm_mn_kev[0] == pytest.approx(fwhm, rel=0.1)
    stated = synthetic(NMC622, fwhm_mn=0.175, metadata={"fwhmmnka": "175"})
    assert F.fit_lines([stated]).fwhm_mn_kev[0] == pytest.approx(0.175, rel=0.05)


def test_gain_drift_is_corrected() -> None:
    shifted = F.fit_lines([synthetic(NMC622, shift=0.02, fwhm_mn=0.175)])
    assert shifted.shift[0, 0] + shifted.shift[0, 1] * 7.0 == pytest.approx(0.02, abs=0.01)
    assert shifted.area["Fe"][0] < 2_000  # uncorrected, Mn and Co leak thousands into Fe


def test_heavy_k_lines_seen_where_the_instrument_reaches() -> None:
    fit = F.fit_lines([synthetic({"Ni": 20_000, "Cd": 800})])
    assert fit.area["Cd"][0] == pytest.approx(800, rel=0.2)
    short = synthetic({"Ni": 20_000}, n=1024, gain=0.02)  # ends at 20 keV: no Cd, no La window
    x = F.extract(short)
    assert x[F.INDEX["cd_region_seen"]] == 0.0 and x[F.INDEX["ree_region_seen"]] == 0.0
    assert np.all(np.isfinite(x))


def test_batch_equals_single_and_mixes_calibrations() -> None:
    spectra = [
        synthetic(NMC622, seed=1),
        synthetic({"Fe": 30_000, "P": 500}, n=4096, gain=0.01, offset=0.0, seed=2),
        synthetic({"Co": 40_000}, seed=3),
    ]
    batch = F.extract_batch(spectra)
    assert batch.shape == (3, F.N_FEATURES)
    for i, s in enumerate(spectra):
        np.testing.assert_allclose(batch[i], F.extract(s), rtol=1e-9, atol=1e-9)
    assert F.extract_batch([]).shape == (0, F.N_FEATURES)
    assert isinstance(F.FEATURE_VERSION, str) and F.FEATURE_VERSION
