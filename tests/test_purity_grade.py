"""Product grade as the standards define it: the assay decides, and off spec is reachable when
the feed (LFP) or the process (a starved leach, a low impurity-removal pH) goes wrong."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hydromet_feed import add_lot, nmc_mix
from sqlalchemy import select

from drivers.sim.hydromet import HydrometModel, LeachConditions, leach_extraction, run_campaign
from plant.alarms import Alarms
from plant.commands.hydromet_child import simulated_plant
from plant.hydromet import HydrometRunner, load_hydromet
from plant.lots import estimate_metals
from plant.purity import (
    assess,
    capability,
    individuals_limits,
    load_products,
    spc_chart,
    western_electric,
)
from plant.purity_report import build_report
from plant.store import AlarmRow, Store

REPO = Path(__file__).resolve().parent.parent
SPECS = load_products(REPO / "config").products
MODEL = HydrometModel()
T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


def _feed(lfp_share: float, n: int = 400) -> tuple[dict[str, float], float]:
    feed: dict[str, float] = {}
    for i in range(n):
        for el, g in estimate_metals("LFP" if i < lfp_share * n else "NMC622", 46.0).items():
            feed[el] = feed.get(el, 0.0) + g
    return feed, 46.0 * n


def _verdicts(lfp: float, ph: float = 4.0, leach: LeachConditions | None = None) -> dict:
    feed, mass = _feed(lfp)
    res = run_campaign(feed, mass, ph, 0.03, np.random.default_rng(1), leach=leach)
    return {
        p.product: (p, assess(SPECS[p.product], p.purity_pct, p.main_pct, p.impurities_ppm,
                              p.physical))
        for p in res.products
    }  # fmt: skip


def test_every_product_names_its_standard_and_a_clean_campaign_is_in_spec() -> None:
    assert SPECS["CoSO4·7H2O"].standard.startswith("HG/T 4822")
    assert SPECS["NiSO4·6H2O"].standard.startswith("GB/T 26524")
    assert SPECS["MnSO4·H2O"].standard.startswith("HG/T 4823")
    assert SPECS["Li2CO3"].standard.startswith("YS/T 582")
    got = _verdicts(0.0)
    assert all(v.in_spec for _, v in got.values()), {k: v.reasons for k, (_, v) in got.items()}


def test_lfp_in_the_hydromet_feed_puts_fe_over_the_caps() -> None:
    got = _verdicts(0.26)
    _, co = got["CoSO4·7H2O"]
    assert not co.in_spec and any(r.startswith("Fe ") and "> 10 ppm" in r for r in co.reasons)
    assert not got["MnSO4·H2O"][1].in_spec


def test_lfp_with_a_low_impurity_removal_ph_drops_li2co3_content_below_99_5() -> None:
    p, v = _verdicts(0.26, ph=3.2)["Li2CO3"]
    assert p.purity_pct < 99.5  # Li3PO4 co-precipitated with the carbonate
    assert f"purity {p.purity_pct:.4g} % < 99.5 %" in v.reasons
    # ... and it is not 100 minus the impurities: the content falls much faster than the ppm sum
    assert 100.0 - p.purity_pct > 2 * sum(p.impurities_ppm.values()) / 1e4


def test_a_starved_leach_leaves_solids_that_put_insolubles_over_the_cap() -> None:
    got = _verdicts(0.0, leach=LeachConditions(ph=2.0))
    p, v = got["CoSO4·7H2O"]
    assert p.physical["insolubles_pct"] > 0.01
    assert any(r.startswith("insolubles ") for r in v.reasons)
    normal = _verdicts(0.0)["CoSO4·7H2O"][0]
    assert p.mass_kg < 0.8 * normal.mass_kg  # less cobalt leached, less product


@pytest.mark.parametrize(
    ("field", "worse"),
    [
        ("ph", 2.0),  # less free acid
        ("temp_c", 50.0),  # colder
        ("orp_mv", 700.0),  # reductant (H2O2) short
        ("solid_liquid_g_per_l", 250.0),  # denser pulp
        ("residence_min", 45.0),  # shorter leach
    ],
)
def test_leach_extraction_responds_to_each_condition(field: str, worse: float) -> None:
    ref = LeachConditions()
    bad = replace(ref, **{field: worse})
    for el in ("Ni", "Co") if field == "orp_mv" else ("Ni", "Co", "Mn", "Li"):
        assert leach_extraction(el, bad, MODEL) < leach_extraction(el, ref, MODEL) - 0.01, el
    assert leach_extraction("Ni", ref, MODEL) == pytest.approx(MODEL.leach["Ni"], abs=1e-9)


def test_magnetic_and_insolubles_not_assayed_fail_where_the_standard_limits_them() -> None:
    li = SPECS["Li2CO3"]
    v = assess(li, 99.8, 18.7, {"Na": 100, "Ca": 10, "Mg": 10})
    assert v.reasons == ["magnetic impurities not assayed (limit 300 ppb)"]
    v = assess(li, 99.8, 18.7, {"Na": 100, "Ca": 10, "Mg": 10}, {"magnetic_ppb": 450})
    assert v.reasons == ["magnetic impurities 450 ppb > 300 ppb"]


def test_ewma_catches_a_slow_drift_before_the_shewhart_rules() -> None:
    base = [5.0, 5.3, 4.8, 5.1, 4.9, 5.2]
    drift = [5.0 + 0.12 * k for k in range(1, 15)]  # +0.12 ppm per batch, about 0.5 sigma
    chart = spc_chart("Fe", base + drift, len(base), trend_run=99)  # no trend rule here
    first_ewma = min(v.index for v in chart.violations if v.rule == "EWMA")
    lim = individuals_limits(base)
    first_we = min(
        (v.index for v in western_electric(base + drift, lim) if v.index >= 6), default=99
    )
    assert first_ewma < first_we


def test_capability_per_spec_limit() -> None:
    lim = individuals_limits([5.0, 5.3, 4.8, 5.1, 4.9, 5.2])
    cap = capability(lim, None, 10.0)
    assert cap["cpk_lower"] is None
    upper = cap["cpk_upper"]
    assert upper is not None and upper > 1.33
    assert upper == pytest.approx((10.0 - lim.center) / (3 * lim.sigma))


def _runner(store: Store) -> HydrometRunner:
    cfg = load_hydromet(REPO / "config")
    return HydrometRunner(
        store, cfg, load_products(REPO / "config"), Alarms(store, "L1"),
        plant=simulated_plant(cfg, 1), line="L1",
    )  # fmt: skip


def test_acid_starving_drift_raises_spc_alarm_before_the_first_off_spec_batch(
    store: Store,
) -> None:
    runner = _runner(store)
    # 8 campaigns at the reference leach pH 1.5, then the acid dosing falls behind: +0.03 pH
    # per campaign.
    leach_ph = [1.5] * 8 + [1.5 + 0.03 * k for k in range(1, 20)]
    first_spc = first_off = None
    for i, ph in enumerate(leach_ph):
        now = T0 + timedelta(minutes=10 * i)
        add_lot(store, f"L1-HM-{i:03d}", nmc_mix(100), closed_at=now, seq0=1000 * i)
        rep = runner.step(now, ph=4.0, process={"leach.ph": ph, "leach.temp_c": 70.0})
        if first_spc is None and any(s.variable == "insolubles_pct" for s in rep.spc):
            first_spc = i
        if first_off is None and any(not b.in_spec for b in rep.batches):
            first_off = i
    assert first_spc is not None and first_off is not None
    assert 8 <= first_spc < first_off, (first_spc, first_off)
    with store.session() as s:
        codes = {a.code for a in s.scalars(select(AlarmRow).where(AlarmRow.source == "spc"))}
    assert any(c.endswith("/insolubles_pct") for c in codes)


def test_spc_baseline_is_the_first_in_spec_batches_not_a_bad_start(store: Store) -> None:
    runner = _runner(store)
    # A bad start (30 % LFP) puts CoSO4 off spec; the limits must come from the clean batches.
    for i, lfp in enumerate([30, 30, 30] + [0] * 7):
        now = T0 + timedelta(minutes=10 * i)
        add_lot(store, f"L1-HM-{i:03d}", nmc_mix(100, lfp), closed_at=now, seq0=1000 * i)
        runner.step(now, ph=4.0)
    spc = build_report(store, runner.products, runner.config)["spc"]["CoSO4·7H2O"]["Fe"]
    assert spc["ucl"] < 10.0  # a baseline with the LFP batches would put it far above the cap
    assert spc["cpk_upper"] is not None and spc["cpk_upper"] > 1.0
