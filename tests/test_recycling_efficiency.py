"""Recycling efficiency and material recovery by the method of Delegated Regulation (EU) 2025/606:
a hand-computed example, and the figures from a store the hydromet runner filled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hydromet_feed import add_lot, nmc_mix

from drivers.sim.mechanical import SimMechanicalStage
from plant.alarms import Alarms
from plant.commands.hydromet_child import MechanicalThenHydromet, simulated_plant
from plant.hydromet import HydrometConfig, HydrometRunner, TanksSection, load_hydromet
from plant.purity import load_products
from plant.purity_report import (
    annual_documentation,
    build_report,
    eu_figures,
    render_documentation,
)
from plant.recycling import Fraction, material_recovery, recycling_efficiency
from plant.store import AuditRow, Store
from plant.weighings import FRACTIONS, WeighingError, record_weighing

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
POINT_IN, POINT_OUT = "lot weighed", "product released"


def test_hand_computed_example_of_the_2025_606_method() -> None:
    # Two input lots, 600 kg + 400 kg of cells: Ni 100 kg, Co 50 kg, Li 30 kg, Cu 80 kg in all.
    inputs = [
        Fraction(
            "lot A", POINT_IN, 600.0, {"Ni": 60_000, "Co": 30_000, "Li": 18_000, "Cu": 48_000}
        ),
        Fraction(
            "lot B", POINT_IN, 400.0, {"Ni": 40_000, "Co": 20_000, "Li": 12_000, "Cu": 32_000}
        ),
    ]
    # Outputs count the battery-derived metal: Ni 95 kg, Co 46 kg, Li 25 kg, Cu 76 kg ...
    hydromet = [
        Fraction("NiSO4 batch", POINT_OUT, 95.0, {"Ni": 95_000}),
        Fraction("CoSO4 batch", POINT_OUT, 46.0, {"Co": 46_000}),
        Fraction("Li2CO3 batch", POINT_OUT, 25.0, {"Li": 25_000}),
        Fraction("foil concentrate", "by-product shipped", 76.0, {"Cu": 76_000}),
    ]
    # ... and the mechanical stage's recycled fractions as weighed leaving the plant: 450 kg.
    # Its residue (10 kg), combustibles to energy recovery (30 kg) and the black mass to the
    # leach (500 kg, counted at the hydromet outputs above) are not output fractions.
    mechanical = [
        Fraction("steel", FRACTIONS["steel"].calculation_point, 140.0),
        Fraction("aluminium", FRACTIONS["aluminium"].calculation_point, 10.0),
        Fraction("copper", FRACTIONS["copper"].calculation_point, 10.0),
        Fraction("plastics", FRACTIONS["plastics"].calculation_point, 40.0),
        Fraction("graphite", FRACTIONS["graphite"].calculation_point, 160.0),
        Fraction("electrolyte", FRACTIONS["electrolyte"].calculation_point, 90.0),
    ]
    outputs = hydromet + mechanical
    re_ = recycling_efficiency(inputs, outputs, {"end-2025": 65, "end-2030": 70})
    # (95 + 46 + 25 + 76 + 140 + 10 + 10 + 40 + 160 + 90) / (600 + 400) = 692 / 1000 = 69.2 %
    assert re_["rate_pct"] == 69.2
    assert re_["input_kg"] == 1000.0 and re_["output_kg"] == 692.0
    assert re_["meets"] == {"end-2025": True, "end-2030": False}
    # The hydromet outputs alone: 242 / 1000 = 24.2 %, short of both targets.
    alone = recycling_efficiency(inputs, hydromet, {"end-2025": 65, "end-2030": 70})
    assert alone["rate_pct"] == 24.2 and alone["meets"] == {"end-2025": False, "end-2030": False}
    assert re_["calculation_points"]["output"] == sorted(
        {"by-product shipped", POINT_OUT} | {f.calculation_point for f in mechanical}
    )
    assert not any(k.counted for n, k in FRACTIONS.items() if n in {"residue", "energy_recovery"})
    assert FRACTIONS["black_mass"].intermediate and not FRACTIONS["black_mass"].counted
    rm = material_recovery(inputs, outputs, {"end-2027": {"Ni": 90, "Co": 90, "Cu": 90, "Li": 50}})
    # Ni 95/100, Co 46/50, Li 25/30, Cu 76/80: the mechanical fractions carry no assayed metal
    assert {m: r["rate_pct"] for m, r in rm.items()} == {
        "Co": 92.0,
        "Cu": 95.0,
        "Li": 83.33,
        "Ni": 95.0,
    }
    assert rm["Co"]["meets"] == {"end-2027": True}
    assert rm["Cu"]["calculation_points"] == {"input": [POINT_IN], "output": ["by-product shipped"]}


def test_nothing_fed_gives_no_rate_rather_than_a_division_error() -> None:
    assert recycling_efficiency([], [], {"end-2025": 65})["rate_pct"] is None
    assert material_recovery([], [], {})["Ni"]["rate_pct"] is None


def _config() -> HydrometConfig:
    """The plant's config without the hold-up tank: a short run's figures are then its lots'
    alone, not less the liquor the tank still holds at the end."""
    return load_hydromet(REPO / "config").model_copy(update={"tanks": TanksSection(pls_holdup_l=0)})


def _run(store: Store, lots: int, **leach: float) -> None:
    cfg = _config()
    runner = HydrometRunner(
        store, cfg, load_products(REPO / "config"), Alarms(store, "L1"),
        plant=simulated_plant(cfg, 1), line="L1",
    )  # fmt: skip
    for i in range(lots):
        now = T0 + timedelta(minutes=10 * i)
        add_lot(store, f"L1-HM-{i:03d}", nmc_mix(100), closed_at=now, seq0=1000 * i)
        runner.step(now, ph=4.0, process=leach)


def test_report_carries_the_eu_figures_and_a_starved_leach_lowers_them(store: Store) -> None:
    products = load_products(REPO / "config")
    cfg = _config()
    _run(store, 3)
    good = build_report(store, products, cfg)
    assert good["recycling_efficiency"]["rate_pct"] > 0
    assert set(good["material_recovery"]) == {"Co", "Cu", "Li", "Ni"}
    assert good["material_recovery"]["Ni"]["rate_pct"] > 90
    # Acid-starved leach (pH 2.0 instead of 1.5): less metal dissolves, the batches go off spec
    # (insolubles) and stay on hold, so they are not output: the figures fall.
    runner = HydrometRunner(
        store, cfg, products, Alarms(store, "L1"), plant=simulated_plant(cfg, 2), line="L1"
    )
    for i in range(3):
        now = T0 + timedelta(days=1, minutes=10 * i)
        add_lot(store, f"L1-HS-{i:03d}", nmc_mix(100), closed_at=now, seq0=50_000 + 1000 * i)
        runner.step(now, ph=4.0, process={"leach.ph": 2.0, "leach.temp_c": 70.0})
    starved = eu_figures(store, products, cfg, start=T0 + timedelta(hours=12))
    assert starved["material_recovery"]["Ni"]["rate_pct"] < 70
    assert starved["recycling_efficiency"]["rate_pct"] < good["recycling_efficiency"]["rate_pct"]


def test_annual_documentation_holds_the_year_only(store: Store) -> None:
    _run(store, 2)
    products, cfg = load_products(REPO / "config"), load_hydromet(REPO / "config")
    doc = annual_documentation(store, products, cfg, 2026, site="Test site")
    assert doc["year"] == 2026 and len(doc["fractions"]["input"]) == 2
    assert doc["recycling_efficiency"]["rate_pct"] > 0
    html = render_documentation(doc)
    assert "Recycling efficiency" in html and "<script" not in html and "http" not in html
    assert annual_documentation(store, products, cfg, 2025, site="x")["fractions"]["input"] == []


def test_weighed_fractions_count_and_the_balance_is_reconciled(store: Store) -> None:
    cfg, products = load_hydromet(REPO / "config"), load_products(REPO / "config")
    runner = MechanicalThenHydromet(
        store, cfg, products, plant=simulated_plant(cfg, 3), line="L1",
        mechanical=SimMechanicalStage(3),
    )  # fmt: skip
    for i in range(3):
        now = T0 + timedelta(minutes=10 * i)
        add_lot(store, f"L1-HM-{i:03d}", nmc_mix(100), closed_at=now, seq0=1000 * i)
        runner.step(now, ph=4.0)
    rep = build_report(store, products, cfg)
    names = {f["name"].split(" (")[0] for f in rep["fractions"]["output"]}
    assert {"steel", "graphite", "electrolyte", "plastics"} <= names
    assert {f["name"].split(" (")[0] for f in rep["fractions"]["not_counted"]} == {
        "black_mass", "energy_recovery", "residue"
    }  # fmt: skip
    assert rep["fractions"]["lots_weighed"] == 3
    # 3 lots of 20 kg of NMC/NCA cells: steel cans, graphite, plastics, tabs and recovered
    # electrolyte (39 % of the mass) plus the hydromet's metals and foils (about 35 %).
    assert 55 < rep["recycling_efficiency"]["rate_pct"] < 80
    rec = rep["reconciliation"]
    assert set(rec["nodes"]) == {"mechanical stage", "Co", "Cu", "Li", "Ni"}
    # Every fraction of the 60 kg weighed: unaccounted are only the 0.3 % lost unweighed (dust,
    # moisture) and the weighbridge noise; a fraction left unweighed would be >= 0.6 kg.
    assert abs(rec["nodes"]["mechanical stage"]["unaccounted"]) < 0.5
    assert rec["warnings"] == []
    # A skip of steel weighed at 900 kg by mistake (9 kg meant): a gross error, named.
    record_weighing(store, "steel", 900.0, user="erin", source="engineer",
                    at=T0 + timedelta(minutes=5))  # fmt: skip
    bad = build_report(store, products, cfg)["reconciliation"]
    assert any("steel" in w and "gross error" in w for w in bad["warnings"])
    with store.session() as s:
        assert (
            s.query(AuditRow)
            .filter(AuditRow.action == "weighing.add", AuditRow.user == "erin")
            .count()
            == 1
        )


def test_a_bad_weighing_is_refused_naming_the_field(store: Store) -> None:
    add_lot(store, "L1-HM-X", nmc_mix(5), closed_at=T0, seq0=1)
    for fraction, kg, lot, field in (
        ("gold", 1.0, None, "fraction"),
        ("steel", -3.0, None, "kg"),
        ("steel", float("nan"), None, "kg"),
        ("steel", 3.0, "L1-HM-NOPE", "lot"),
    ):
        try:
            record_weighing(store, fraction, kg, user="erin", source="engineer", lot=lot)
        except WeighingError as exc:
            assert exc.field == field and str(exc).startswith(f"{field}: ")
        else:
            raise AssertionError(f"{fraction} {kg} {lot} was accepted")
    got = record_weighing(store, "steel", 3.0, user="erin", source="engineer", lot="L1-HM-X")
    assert got["lot_id"] == "L1-HM-X" and got["calculation_point"].startswith("steel scrap")
