"""Li2CO3 precipitation in the process model (drivers/sim/hydromet.py): the Li yield follows from
Li2CO3's solubility at the carbonation temperature, the carbonate excess, the Li concentration
and the mother-liquor bleed, and every gram of Li stays accounted for through the recycle."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.hydromet import (
    CampaignResult,
    Carbonation,
    HydrometModel,
    Tank,
    li2co3_solubility_g_per_l,
    li_in_mother_liquor_g_per_l,
    precipitate_li2co3,
    run_campaign,
)
from plant.lots import estimate_metals

MODEL = HydrometModel()


def _feed(n: int = 100) -> tuple[dict[str, float], float]:
    grams: dict[str, float] = {}
    for _ in range(n):
        for el, g in estimate_metals("NMC622", 200.0).items():
            grams[el] = grams.get(el, 0.0) + g
    return grams, 200.0 * n


def test_li2co3_is_less_soluble_hot_as_seidell_tabulates() -> None:
    assert li2co3_solubility_g_per_l(25.0) == pytest.approx(12.7)
    assert li2co3_solubility_g_per_l(100.0) == pytest.approx(7.2)
    temps = [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
    sol = [li2co3_solubility_g_per_l(t) for t in temps]
    assert sol == sorted(sol, reverse=True)
    # No excess carbonate: the mother liquor holds Li at the pure-water solubility.
    assert li_in_mother_liquor_g_per_l(25.0, 0.0) == pytest.approx(12.7 * 2 * 6.941 / 73.89)
    # Excess carbonate pushes it down (common ion).
    assert li_in_mother_liquor_g_per_l(90.0, 0.2) < 0.7 * li_in_mother_liquor_g_per_l(90.0, 0.0)


def _li_yield(cond: Carbonation, li_g: float = 500.0, liquor_l: float = 110.0) -> float:
    return precipitate_li2co3(li_g, liquor_l, cond, MODEL).precipitated_g / li_g


def test_one_pass_yield_follows_temperature_excess_and_concentration() -> None:
    hot, cold = Carbonation(temp_c=95.0), Carbonation(temp_c=30.0)
    assert _li_yield(cold) < _li_yield(hot) - 0.03
    assert _li_yield(Carbonation(na2co3_excess_pct=0.0)) < _li_yield(
        Carbonation(na2co3_excess_pct=30.0)
    )
    # A weaker Li liquor (less evaporated) leaves a larger share in the mother liquor.
    assert _li_yield(Carbonation(evaporation_factor=2.0)) < _li_yield(Carbonation()) - 0.05
    # Below saturation nothing comes down.
    p = precipitate_li2co3(10.0, 110.0, Carbonation(evaporation_factor=1.0), MODEL)
    assert p.precipitated_g == 0.0 and p.bled_g + p.recycled_g == pytest.approx(10.0)


def _run(cond: Carbonation, campaigns: int = 10) -> tuple[float, CampaignResult]:
    """Li recovered in Li2CO3 over the last half of `campaigns`, as a share of the Li fed."""
    feed, mass = _feed()
    tank = Tank(holdup_l=100.0)
    made = fed = 0.0
    res = None
    for k in range(campaigns):
        res = run_campaign(feed, mass, 4.0, 0.03, np.random.default_rng(k), tank=tank,
                           carbonation=cond)  # fmt: skip
        tank = Tank(tank.holdup_l, res.tank_g)
        li = next(p for p in res.products if p.product == "Li2CO3")
        held = res.residues_g.get("tank hold-up", {})
        # in = products + residues + what the hold-ups gained, the recycled Li included
        out = sum(stream.get("Li", 0.0) for stream in res.residues_g.values())
        assert li.mass_kg * 1000 * li.main_pct / 100 + out == pytest.approx(feed["Li"], rel=0.02)
        if k >= campaigns // 2:
            made += li.mass_kg * 1000 * li.main_pct / 100
            fed += feed["Li"] - held.get("Li", 0.0)
    assert res is not None
    return made / fed, res


def test_a_colder_carbonation_or_a_larger_bleed_loses_more_li_to_the_raffinate() -> None:
    base, res = _run(Carbonation())
    cold, _ = _run(Carbonation(temp_c=40.0))
    bled, _ = _run(Carbonation(bleed_pct=100.0))
    assert 0.85 < base < 0.99
    assert cold < base - 0.01 and bled < base - 0.03
    c = res.carbonation
    assert c is not None and 10 < c.li_feed_g_per_l < 40 and 0.5 < c.li_mother_liquor_g_per_l < 3
