"""Hydromet runner on a real store: misrouted LFP -> SPC alarm -> off-spec -> traced to cells."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hydromet_feed import add_lot, nmc_mix
from sqlalchemy import select

from plant.alarms import Alarms
from plant.commands.hydromet_child import simulated_plant
from plant.genealogy import trace_batch, trace_cell, trace_passport
from plant.hydromet import HydrometRunner, load_hydromet
from plant.purity import load_products
from plant.purity_report import build_report
from plant.store import AlarmRow, AssayRow, CellRow, LotRow, Store

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)


def _runner(store: Store, **process: float) -> HydrometRunner:
    cfg = load_hydromet(REPO / "config")
    if process:
        cfg = cfg.model_copy(update={"process": cfg.process.model_copy(update=process)})
    return HydrometRunner(
        store,
        cfg,
        load_products(REPO / "config"),
        Alarms(store, "L1"),
        plant=simulated_plant(cfg, 1),
        line="L1",
    )


def test_misrouted_lfp_raises_spc_alarm_before_off_spec_and_traces_to_cells(store: Store) -> None:
    runner = _runner(store)
    # 6 clean lots set the SPC baseline, then misrouted LFP creeps in: 0, 1, 2, 3 ... of 100.
    lfp_counts = [0] * 6 + [0, 1, 2, 3, 4, 6, 8, 10, 12, 15]
    lfp_pids: dict[str, list[str]] = {}
    first_spc: int | None = None
    first_off: int | None = None
    off_batch = ""
    for i, lfp in enumerate(lfp_counts):
        now = T0 + timedelta(minutes=10 * i)
        pids = add_lot(store, f"L1-HM-{i:03d}", nmc_mix(100, lfp), closed_at=now, seq0=1000 * i)
        lfp_pids[f"L1-HM-{i:03d}"] = pids[:lfp]
        rep = runner.step(now, ph=4.0)
        assert len(rep.campaigns) == 1
        if first_spc is None and rep.spc:
            first_spc = i
        off = [b for b in rep.batches if not b.in_spec]
        if first_off is None and off:
            first_off, off_batch = i, off[0].id
            assert any(r.startswith("Fe ") and "ppm >" in r for r in off[0].reasons), off[0]
    assert first_spc is not None and first_off is not None
    assert first_spc < first_off, (first_spc, first_off)
    assert lfp_counts[first_spc] > 0  # no false alarm on the clean feed

    # The SPC alarm and the off-spec alarm are in the store, for the HMI.
    with store.session() as s:
        spc = list(s.scalars(select(AlarmRow).where(AlarmRow.source == "spc")))
        purity = list(s.scalars(select(AlarmRow).where(AlarmRow.source == "purity")))
    assert any("Fe" in a.code for a in spc)
    assert any(off_batch in a.message for a in purity)

    # Genealogy: the off-spec batch -> its lot -> the LFP cells and their passports.
    trace = trace_batch(store, off_batch)
    lot_id = f"L1-HM-{first_off:03d}"
    assert [lot["id"] for lot in trace.lots] == [lot_id]
    suspects = trace.suspects(["Fe", "P"])
    assert {c.chemistry for c in suspects} == {"LFP"}
    assert sorted((c.passport_id for c in suspects), key=str) == sorted(lfp_pids[lot_id])
    assert set(lfp_pids[lot_id]) <= set(trace.passport_ids)
    assert len(trace.passport_ids) == 100

    # And forward: one offending passport -> its batches (one per product).
    fwd = trace_passport(store, lfp_pids[lot_id][0])
    assert off_batch in fwd[0].batch_ids and len(fwd[0].batch_ids) == 4
    with store.session() as s:
        cell_id = s.scalar(select(CellRow.id).where(CellRow.passport_id == lfp_pids[lot_id][0]))
    assert cell_id is not None
    assert trace_cell(store, cell_id).lot_id == lot_id


def test_clean_feed_and_stable_ph_make_battery_grade(store: Store) -> None:
    runner = _runner(store)
    outcomes = []
    for i in range(8):
        now = T0 + timedelta(minutes=10 * i)
        add_lot(store, f"L1-HM-{i:03d}", nmc_mix(100), closed_at=now, seq0=1000 * i)
        for k in range(5):  # the simulated pH loop is sampled into the historian
            outcomes += runner.step(now + timedelta(seconds=k)).batches
    assert len(outcomes) == 8 * 4
    assert all(b.in_spec for b in outcomes), [b for b in outcomes if not b.in_spec]
    products = load_products(REPO / "config")
    report = build_report(store, products, load_hydromet(REPO / "config"))
    assert {b["product"] for b in report["batches"]} == set(products.products)
    assert all(b["in_spec"] for b in report["batches"])
    li = [b for b in report["batches"] if b["product"] == "Li2CO3"]
    assert li and all(b["purity_pct"] >= 99.5 for b in li)
    with store.session() as s:
        assert s.scalars(select(AlarmRow).where(AlarmRow.source == "purity")).first() is None
        assert {lot.state for lot in s.scalars(select(LotRow))} == {"consumed"}


def test_low_impurity_removal_ph_threatens_purity(store: Store) -> None:
    runner = _runner(store)
    fe = {}
    for i, ph in enumerate((4.0, 3.3)):
        now = T0 + timedelta(minutes=10 * i)
        add_lot(store, f"L1-HM-{i:03d}", nmc_mix(100), closed_at=now, seq0=1000 * i)
        rep = runner.step(now, ph=ph)
        mn = next(b for b in rep.batches if b.product == "MnSO4·H2O")
        fe[ph] = (mn.in_spec, mn.reasons)
    assert fe[4.0][0] is True
    assert fe[3.3][0] is False and any(r.startswith("Fe ") for r in fe[3.3][1])


def test_recovery_follows_the_feed_not_constants(store: Store) -> None:
    runner = _runner(store)
    products = load_products(REPO / "config")
    cfg = load_hydromet(REPO / "config")
    add_lot(store, "L1-HM-000", nmc_mix(100), closed_at=T0, seq0=0)
    runner.step(T0, ph=4.0)
    clean = build_report(store, products, cfg)["recovery"]
    # A lot with a lot of LFP: its Fe/P cake drags Ni, Co and Li down with it.
    t1 = T0 + timedelta(hours=1)
    add_lot(store, "L1-HM-001", nmc_mix(100, lfp=40), closed_at=t1, seq0=1000)
    runner.step(t1, ph=4.0)
    dirty = build_report(store, products, cfg, since=t1)
    rec = dirty["recovery"]
    for metal in ("Ni", "Co", "Li"):
        assert rec[metal]["achieved_pct"] < clean[metal]["achieved_pct"] - 1.0, metal
    assert clean["Ni"]["targets"] == {"end-2027": 90.0, "end-2031": 95.0}
    assert clean["Li"]["meets"]["end-2027"] is True
    bal = dirty["mass_balance"]["Ni"]
    assert bal["in_g"] == pytest.approx(
        sum(g for c, m in nmc_mix(100, lfp=40) for g in [_ni(c, m)]), rel=1e-3
    )
    # In = recovered + residues, up to the assays' noise.
    assert abs(bal["unaccounted_g"]) < 0.02 * bal["in_g"]


def _ni(chem: str, mass: float) -> float:
    from plant.lots import estimate_metals

    return estimate_metals(chem, mass).get("Ni", 0.0)


def test_black_mass_lots_are_assayed_and_valued(store: Store) -> None:
    runner = _runner(store)
    add_lot(store, "L1-BM-000", [("LFP", 200.0)] * 80 + [("LMO", 200.0)] * 20,
            route="black_mass", closed_at=T0, seq0=0)  # fmt: skip
    add_lot(store, "L1-BM-001", nmc_mix(100), route="black_mass", closed_at=T0, seq0=1000)
    rep = runner.step(T0, ph=4.0)
    assert sorted(rep.lots_valued) == ["L1-BM-000", "L1-BM-001"]
    assert runner.step(T0 + timedelta(seconds=1), ph=4.0).lots_valued == []  # valued once
    with store.session() as s:
        assays = {a.lot_id: a.composition for a in s.scalars(select(AssayRow))}
    lfp, nmc = assays["L1-BM-000"], assays["L1-BM-001"]
    assert lfp["wt_pct"]["Fe"] > 10 and lfp["wt_pct"]["Ni"] < 0.5
    assert nmc["wt_pct"]["Ni"] > 15 and set(nmc["unc_pct"]) >= {"Ni", "Co", "Mn", "Cu", "Al", "Fe"}
    assert nmc["value"]["total"] > 3 * lfp["value"]["total"] > 0
    assert 0 < nmc["value"]["uncertainty"] < 0.1 * nmc["value"]["total"]
    lots = build_report(store, load_products(REPO / "config"), load_hydromet(REPO / "config"))
    assert {lot["id"]: lot["value"]["currency"] for lot in lots["lots"]} == {
        "L1-BM-000": "USD",
        "L1-BM-001": "USD",
    }
