"""The process model's solvent extraction and hold-up tank (drivers/sim/hydromet.py): the Kremser
stages, pH-dependent Co/Ni separation with its scrub, and lots blending in the tank with every
gram accounted for."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.hydromet import (
    RECYCLED_LI,
    TRACKED,
    CampaignResult,
    HydrometModel,
    ProductAssay,
    Tank,
    kremser,
    run_campaign,
    sx_to_strip,
)
from plant.lots import estimate_metals

MODEL = HydrometModel()


def _feed(lfp: int = 0, n: int = 100) -> tuple[dict[str, float], float]:
    grams: dict[str, float] = {}
    for i in range(n):
        for el, g in estimate_metals("LFP" if i < lfp else "NMC622", 200.0).items():
            grams[el] = grams.get(el, 0.0) + g
    return grams, 200.0 * n


def test_kremser_stages() -> None:
    assert kremser(1.0, 4) == pytest.approx(1 / 5)
    assert kremser(10.0, 1) == pytest.approx(9 / 99)  # one stage: 1 / (1 + E)
    assert kremser(0.1, 3) == pytest.approx(0.9 / (1 - 1e-4))
    assert kremser(1e12, 4) == pytest.approx(0.0, abs=1e-40)  # no overflow
    assert kremser(5.0, 4) < kremser(5.0, 2)  # more stages, less left


def test_cyanex_ph_separates_co_from_ni_and_the_scrub_keeps_ni_out() -> None:
    co = {ph: sx_to_strip(MODEL.sx_co, "Co", ph) for ph in (4.1, 4.5, 5.0)}
    ni = {ph: sx_to_strip(MODEL.sx_co, "Ni", ph) for ph in (5.0, 6.0)}
    assert co[4.1] < co[4.5] < co[5.0] and co[5.0] > 0.9999
    assert ni[5.0] < 1e-5 and ni[6.0] < 1e-5  # the scrub at pH 4 strips co-extracted Ni
    assert sx_to_strip(MODEL.sx_co, "P", 5.0) == MODEL.sx_co.entrainment  # not extracted


def _products(result: CampaignResult) -> dict[str, ProductAssay]:
    return {p.product: p for p in result.products}


def test_an_acid_cyanex_circuit_puts_co_into_niso4() -> None:
    feed, mass = _feed()
    ppm = {
        ph: _products(
            run_campaign(feed, mass, 4.0, 0.03, np.random.default_rng(1), sx_ph={"sx_co.ph": ph})
        )["NiSO4·6H2O"].impurities_ppm.get("Co", 0.0)
        for ph in (4.3, 5.0)
    }
    assert ppm[5.0] < 5 < 50 < ppm[4.3]


def _metal_out(result: CampaignResult, el: str) -> float:
    made = sum(p.mass_kg * 1000 * p.main_pct / 100 for p in result.products if p.main_element == el)
    return made + sum(stream.get(el, 0.0) for stream in result.residues_g.values())


def test_the_tank_blends_a_bad_lot_into_the_next_batches_and_loses_nothing() -> None:
    clean, mass = _feed()
    bad, _ = _feed(lfp=30)
    tank = Tank(holdup_l=100.0)
    fe: list[float] = []
    for k, feed in enumerate([clean, clean, bad, clean, clean, clean]):
        res = run_campaign(feed, mass, 4.0, 0.03, np.random.default_rng(k), tank=tank)
        for el in ("Ni", "Co", "Li"):  # in = products + residues + what the tank gained
            assert _metal_out(res, el) == pytest.approx(feed[el], rel=0.01), el
        tank = Tank(tank.holdup_l, res.tank_g)
        fe.append(_products(res)["MnSO4·H2O"].impurities_ppm["Fe"])
    no_tank = run_campaign(bad, mass, 4.0, 0.03, np.random.default_rng(2))
    undiluted = _products(no_tank)["MnSO4·H2O"].impurities_ppm["Fe"]
    # The bad lot's own batch carries only part of its Fe; the clean ones after it the rest.
    assert fe[1] < fe[2] < undiluted
    assert fe[3] > fe[4] > fe[5] > fe[1]
    assert set(res.tank_g) == {*TRACKED, "insolubles", RECYCLED_LI}
