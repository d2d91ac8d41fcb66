"""Pure purity functions: spec verdicts, SPC rules, mass balance, recovery, black-mass value."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from drivers.sim.hydromet import run_campaign
from plant.config import ConfigError
from plant.hydromet import load_hydromet
from plant.lots import estimate_metals
from plant.purity import (
    Penalty,
    ProductSpec,
    Valuation,
    assess,
    individuals_limits,
    load_products,
    mass_balance,
    nelson_trend,
    recovery,
    spc_chart,
    value_black_mass,
    western_electric,
)

REPO = Path(__file__).resolve().parent.parent
COSO4 = ProductSpec(
    standard="test: Co sulfate with a content minimum",
    min_purity_pct=99.5,
    metal="Co",
    metal_theory_pct=20.96,
    main_min_pct=20.5,
    impurity_limits_ppm={"Ni": 10, "Cu": 10, "Fe": 10, "Zn": 10},
)


def test_verdict_reasons_name_the_analyte_the_value_and_the_limit() -> None:
    ok = assess(COSO4, 99.8, 20.8, {"Ni": 2, "Cu": 3, "Fe": 1, "Zn": 2})
    assert ok.in_spec and ok.reasons == []
    bad = assess(COSO4, 99.4, 20.3, {"Ni": 2, "Cu": 3, "Fe": 42, "Zn": 2})
    assert not bad.in_spec
    assert bad.reasons == ["purity 99.4 % < 99.5 %", "Co 20.3 % < 20.5 %", "Fe 42 ppm > 10 ppm"]
    missing = assess(COSO4, 99.8, 20.8, {"Ni": 2, "Cu": 3, "Fe": 1})
    assert missing.reasons == ["Zn not assayed (limit 10 ppm)"]


def test_shipped_specs_carry_the_reference_limits() -> None:
    specs = load_products(REPO / "config").products
    assert specs["NiSO4·6H2O"].main_min_pct == 22.0 and specs["NiSO4·6H2O"].main_max_pct == 22.3
    assert specs["NiSO4·6H2O"].impurity_limits_ppm == {"Co": 50}
    assert specs["Li2CO3"].impurity_limits_ppm == {"Na": 250, "Ca": 50, "Mg": 80}
    # Only the Li2CO3 standard sets a compound content; the sulfates' set the metal content.
    assert {n: s.min_purity_pct for n, s in specs.items() if s.min_purity_pct} == {"Li2CO3": 99.5}
    assert specs["MnSO4·H2O"].main_min_pct == 32.0
    assert specs["CoSO4·7H2O"].standard.startswith("HG/T 4822")
    assert specs["Li2CO3"].magnetic_max_ppb == 300
    assert specs["MnSO4·H2O"].insolubles_max_pct == 0.01


def test_config_typo_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    text = (REPO / "config" / "hydromet.toml").read_text().replace("ph_setpoint", "ph_setpiont")
    (tmp_path / "hydromet.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"hydromet.toml: process.ph_setpiont: unknown key"):
        load_hydromet(tmp_path)


BASE = [10.0, 10.2, 9.9, 10.1, 9.8, 10.0, 10.1, 9.9]  # MR-bar 0.2 -> sigma 0.177


def test_individuals_limits_from_moving_range() -> None:
    lim = individuals_limits(BASE)
    assert lim.center == pytest.approx(10.0)
    mr_bar = sum(abs(b - a) for a, b in itertools.pairwise(BASE)) / 7
    assert lim.sigma == pytest.approx(mr_bar / 1.128)
    assert lim.ucl == pytest.approx(lim.center + 3 * lim.sigma)
    assert individuals_limits([5.0, 5.0, 5.0], min_sigma=0.1).sigma == 0.1


@pytest.mark.parametrize(
    ("tail", "rule", "index"),
    [
        ([10.0, 10.7], "WE1", 9),  # beyond 3 sigma (0.53)
        ([10.4, 10.0, 10.4], "WE2", 10),  # 2 of 3 beyond 2 sigma, same side
        ([10.2, 10.25, 10.0, 10.2, 10.22], "WE3", 12),  # 4 of 5 beyond 1 sigma
        ([10.05, 10.1, 10.02, 10.08, 10.05, 10.1, 10.03, 10.06], "WE4", 15),  # 8 above centre
    ],
)
def test_western_electric_rules_fire_where_the_pattern_completes(
    tail: list[float], rule: str, index: int
) -> None:
    vals = BASE + tail
    lim = individuals_limits(BASE)
    hits = [v for v in western_electric(vals, lim) if v.rule == rule and v.index >= len(BASE)]
    assert hits and hits[0].index == index and hits[0].side == 1
    # One point short of the pattern: silent.
    assert not [v for v in western_electric(vals[:index], lim) if v.rule == rule and v.index >= 8]


def test_nelson_trend_and_spc_chart_skip_the_baseline() -> None:
    rising = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    assert [v.index for v in nelson_trend(rising)] == [5]
    assert nelson_trend(rising[:5]) == []
    chart = spc_chart("Fe", [*BASE, 10.0, 11.0], baseline_n=8)
    assert chart.limits is not None
    assert {(v.rule, v.index) for v in chart.violations} >= {("WE1", 9)}
    assert all(v.index >= 8 for v in chart.violations)
    assert spc_chart("Fe", BASE[:4], baseline_n=8).limits is None  # too few points to chart


def _feed(lfp_share: float, mass: float = 20_000.0) -> dict[str, float]:
    out: dict[str, float] = {}
    for chem, share in (("NMC622", 1 - lfp_share), ("LFP", lfp_share)):
        for el, g in estimate_metals(chem, mass * share).items():
            out[el] = out.get(el, 0.0) + g
    return out


def test_mass_balance_closes_and_recovery_moves_with_feed_and_ph() -> None:
    targets = load_products(REPO / "config").recovery_targets
    saleable = ["foil concentrate", "Cu cement"]

    def rec(lfp: float, ph: float) -> dict[str, float]:
        feed = _feed(lfp)
        res = run_campaign(feed, 20_000.0, ph, 0.03, np.random.default_rng(3))
        made = [(p.main_element, p.mass_kg * 10 * p.main_pct) for p in res.products]
        bal = mass_balance([feed], made, [res.residues_g], saleable)
        for m in ("Ni", "Co", "Li", "Cu"):
            assert abs(bal[m].unaccounted_g) < 0.02 * bal[m].in_g  # closes within assay noise
        r = recovery(bal, targets)
        assert r["Ni"]["targets"] == {"end-2027": 90.0, "end-2031": 95.0}
        return {m: r[m]["achieved_pct"] for m in ("Ni", "Co", "Li", "Cu")}

    clean, dirty, high_ph = rec(0.0, 4.0), rec(0.2, 4.0), rec(0.0, 4.6)
    for m in ("Ni", "Co", "Li"):
        assert dirty[m] < clean[m] - 1.0, m  # Fe/P cake co-precipitates payable metals
        assert high_ph[m] < clean[m], m  # over-neutralising loses them too
    assert clean["Ni"] > 90 and clean["Li"] > 50


def test_black_mass_value_is_payable_times_price_times_content() -> None:
    val = Valuation(
        price_per_t={"Ni": 16000.0, "Co": 33000.0},
        li2co3_price_per_t=10000.0,
        payable_pct={"Ni": 75.0, "Co": 70.0, "Li": 50.0},
    )
    v = value_black_mass(1000.0, {"Ni": 20.0, "Co": 10.0, "Li": 3.0, "Fe": 1.0},
                         {"Ni": 0.4, "Co": 0.3, "Li": 0.6}, val)  # fmt: skip
    assert v.per_metal["Ni"] == pytest.approx(0.75 * 16000 * 0.20)
    assert v.per_metal["Co"] == pytest.approx(0.70 * 33000 * 0.10)
    assert v.per_metal["Li"] == pytest.approx(0.50 * 10000 * 5.323 * 0.03)
    assert "Fe" not in v.per_metal
    assert v.total == pytest.approx(sum(v.per_metal.values()))
    expected = ((0.75 * 16000 * 0.004) ** 2 + (0.7 * 33000 * 0.003) ** 2
                + (0.5 * 10000 * 5.323 * 0.006) ** 2) ** 0.5  # fmt: skip
    assert v.uncertainty == pytest.approx(expected)


def test_black_mass_is_valued_by_chemistry_on_dry_mass_with_deductions() -> None:
    val = Valuation(
        price_per_t={"Ni": 16000.0, "Co": 33000.0},
        li2co3_price_per_t=10000.0,
        payable_pct={"Ni": 75.0, "Co": 70.0, "Li": 50.0},
        lfp_price_per_li_pct_per_t=400.0,
        moisture_pct=5.0,
        treatment_charge_per_t=150.0,
        penalties={"Cu": Penalty(free_pct=3.0, per_pct_per_t=40.0)},
    )
    # LFP black mass (Fe > Ni + Co): lithium units only; Ni/Co payables do not apply.
    lfp = value_black_mass(1000.0, {"Fe": 19.0, "Li": 2.4, "Ni": 0.1, "Cu": 4.0},
                           {"Li": 0.5}, val)  # fmt: skip
    assert lfp.basis.startswith("lithium units")
    assert lfp.per_metal == {"Li": pytest.approx(400.0 * 2.4 * 0.95)}
    assert lfp.deductions == {
        "treatment charge": pytest.approx(-150.0 * 0.95),
        "Cu penalty": pytest.approx(-40.0 * 1.0 * 0.95),
    }
    assert lfp.total == pytest.approx(0.95 * (400 * 2.4 - 150 - 40))
    nmc = value_black_mass(1000.0, {"Ni": 20.0, "Co": 10.0, "Li": 3.0, "Fe": 1.0, "Cu": 2.0},
                           {}, val)  # fmt: skip
    assert nmc.basis.startswith("payables")
    assert nmc.per_metal["Ni"] == pytest.approx(0.75 * 16000 * 0.20 * 0.95)
    assert "Cu penalty" not in nmc.deductions  # under its free 3 %
